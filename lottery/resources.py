"""The files shipped inside the package (run configs, DeepSpeed layouts, model presets), found one way.

They are looked up with importlib.resources, never by a path relative to ``__file__`` or to the
repository: an installed wheel has no repository around it, and a zipped or otherwise relocated
package is only reachable through its loader. Every shipped file lives under ``lottery/`` and is
listed as package data in pyproject.toml, so a plain ``pip install .`` carries it.
"""

from __future__ import annotations

from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PACKAGE = "lottery"
CONFIGS = "configs"  # run configs: <name>.yaml
DS_CONFIGS = "ds_configs"  # DeepSpeed ZeRO layouts: <name>.json
PRESETS = "models/uniter/presets"  # UNITER architecture presets: <name>.json


class NotShipped(LookupError):
    """A name that no shipped file has; `known` lists the names that do exist, for the caller's message."""

    def __init__(self, folder: str, name: str, known: list[str]) -> None:
        super().__init__(f"no shipped {folder} file named {name!r}; shipped: {', '.join(known)}")
        self.folder = folder
        self.name = name
        self.known = known


def shipped_dir(folder: str) -> Traversable:
    """The shipped folder `folder` (one of CONFIGS, DS_CONFIGS, PRESETS), relative to the package."""
    return resources.files(PACKAGE).joinpath(*folder.split("/"))


def shipped_names(folder: str, suffix: str) -> list[str]:
    """The names (file names without `suffix`) of the files ending in `suffix` in `folder`, sorted."""
    directory = shipped_dir(folder)
    if not directory.is_dir():
        return []
    return sorted(p.name.removesuffix(suffix) for p in directory.iterdir() if p.name.endswith(suffix))


def shipped_file(folder: str, name: str, suffix: str) -> Traversable:
    """The shipped file `<folder>/<name><suffix>`, or NotShipped naming the ones there are.

    A name with a path separator is refused rather than joined, so a user's path is never mistaken
    for (or escapes into) the package's files.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise NotShipped(folder, name, shipped_names(folder, suffix))
    found = shipped_dir(folder) / f"{name}{suffix}"
    if not found.is_file():
        raise NotShipped(folder, name, shipped_names(folder, suffix))
    return found
