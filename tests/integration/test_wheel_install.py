"""A plain (non-editable) install works: the wheel carries its configs and DeepSpeed layouts.

The editable install of the repository hides a missing package-data entry or a lookup relative to the
repository, since the source tree is right there. So this test builds the wheel from a copy of the
package, installs it into a fresh venv and runs it from a directory far from the repository. The
venv reuses this environment's dependencies through a .pth file holding the site-packages path as a
plain line: such a line only extends sys.path, it does not run that directory's own .pth files, so
the repository's editable-install finder stays inactive and `lottery` can only come from the wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.distributed

# a 2-step pre-training on a tiny shapes world that the installed package builds under the cwd
TINY_PRETRAIN = [
    "run_dir=runs/wheel",
    "data.train_samples=64",
    "data.val_samples=16",
    "data.samples_per_shard=32",
    "data.feat_dim=256",
    "data.curriculum=[]",
    "data.num_workers=0",
    "train.steps=2",
    "train.batch_size=4",
    "train.val_batches=1",
    "train.val_every=2",
    "train.ckpt_every=2",
    "train.log_every=1",
    "optim.warmup_steps=1",
]


def _run(cmd: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "OMP_NUM_THREADS")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(cmd)} exited {proc.returncode}\n{proc.stdout[-4000:]}\n{proc.stderr[-6000:]}"
        )
    return proc


def _build_wheel(tmp: Path) -> Path:
    """The wheel of a copy of the sources, so the build leaves no build/ or egg-info in the repository."""
    source = tmp / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "lottery", source / "lottery", ignore=shutil.ignore_patterns("__pycache__"))
    pip = [sys.executable, "-m", "pip"]
    _run(
        [*pip, "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp / "wheel"), str(source)], tmp
    )
    (wheel,) = (tmp / "wheel").glob("vl_lottery-*.whl")
    return wheel


def _fresh_venv(tmp: Path, wheel: Path) -> Path:
    """A venv holding only the wheel, seeing this environment's dependencies through a plain .pth line.

    The wheel goes in before the .pth exists, so pip cannot take this environment's editable
    vl-lottery for an installed one; this environment's pip installs it (`--python`), which saves
    the ~15 s of seeding the venv with a pip of its own.
    """
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp)
    python = venv / "bin" / "python"
    _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "-q",
            "--no-deps",
            "--no-index",
            str(wheel),
        ],
        tmp,
    )
    here = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    there = _run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp)
    (Path(there.stdout.strip()) / "main-venv-deps.pth").write_text("".join(f"{path}\n" for path in here))
    return python


def test_the_wheel_installed_in_a_fresh_venv_shows_configs_and_pretrains_from_another_directory(
    tmp_path: Path,
) -> None:
    python = _fresh_venv(tmp_path, _build_wheel(tmp_path))
    work = tmp_path / "work"
    work.mkdir()

    where = _run(
        [
            str(python),
            "-c",
            "import lottery; from lottery.resources import shipped_file; "
            "print(lottery.__file__); print(shipped_file('ds_configs', 'zero3_offload', '.json'))",
        ],
        work,
    )
    package, layout = (Path(line) for line in where.stdout.split())
    venv = python.parent.parent
    assert package.is_relative_to(venv) and not package.is_relative_to(REPO), package
    assert layout.is_relative_to(venv) and layout.is_file(), layout

    shown = _run([str(python), "-m", "lottery", "config", "show", "--config", "pretrain-uniter-mini"], work)
    assert "# pretrain config pretrain-uniter-mini, digest " in shown.stdout
    assert "run_dir: runs/pretrain-uniter-mini" in shown.stdout

    trained = _run(
        [str(python), "-m", "lottery", "pretrain", "--config", "pretrain-uniter-mini", *TINY_PRETRAIN], work
    )
    assert "ZeRO-0" in trained.stdout, trained.stdout[-2000:]
    assert (work / "runs" / "wheel" / "model" / "model.safetensors").is_file()
    assert (work / "data" / "shapes" / "meta.json").is_file() and (work / "models" / "uniter-mini").is_dir()
