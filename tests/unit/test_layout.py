"""The README's layout section and the design's package table name what the tree holds, and the
dependency rules they state hold in the imports."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import lottery

PACKAGE = Path(lottery.__file__).parent
REPO = PACKAGE.parent


def _section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 4)
    return text[start : end if end > 0 else None]


def _subpackages() -> set[str]:
    return {p.parent.name for p in PACKAGE.glob("*/__init__.py")}


def test_the_readme_layout_names_every_package_and_top_level_module():
    layout = _section((REPO / "README.md").read_text(), "Layout")
    named = set(re.findall(r"`(\w+)/`", layout)) | set(re.findall(r"`(\w+)\.py`", layout))
    modules = {p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_")}
    assert _subpackages() | {"configs", "ds_configs"} <= named, "packages missing from the README layout"
    assert modules <= named, "modules missing from the README layout"


def test_the_design_table_has_a_row_per_package():
    rows = set(re.findall(r"\| `lottery/(\w+)/`", (REPO / "docs" / "design.md").read_text()))
    assert rows == _subpackages()


def _imports(package: str) -> set[str]:
    """The lottery packages that the modules of `package` import (at any depth, lazily or not)."""
    found = set()
    for path in (PACKAGE / package).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("lottery."):
                found.add(node.module.split(".")[1])
    return found - {package}


def test_data_imports_nothing_of_tasks_and_the_low_packages_nothing_of_the_jobs():
    assert "tasks" not in _imports("data")
    for low in ("data", "models", "sparsity", "tickets", "evaluation", "tasks"):
        assert not _imports(low) & {"train", "imp", "report"}, low
