"""The accelerate configs of launch/ are ones `accelerate launch` takes, each says its own command, and the
README's "## Launchers" section names every launcher file. Nothing is launched."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ACCELERATE_DIR = REPO / "launch" / "accelerate"
CONFIGS = sorted(ACCELERATE_DIR.glob("*.yaml"))
HOSTFILE = REPO / "launch" / "hostfile.example"
# what accelerate's LOCAL_MACHINE config (ClusterConfig) needs to lay the processes out
REQUIRED = ("compute_environment", "distributed_type", "num_machines", "num_processes", "machine_rank")
REQUIRED += ("mixed_precision",)
# distributed_type values accelerate starts through torchrun (commands/launch.py) and its single process
TORCHRUN_TYPES = {"MULTI_GPU"}
SINGLE_PROCESS_TYPES = {"NO"}


def _relative(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _leading_comments(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return lines


def _launchers_section() -> str:
    text = (REPO / "README.md").read_text()
    start = text.find("\n## Launchers\n")
    assert start >= 0, 'README.md has no "## Launchers" section'
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def test_there_are_accelerate_configs():
    assert CONFIGS, f"no accelerate config in {ACCELERATE_DIR}"


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_has_a_sane_local_machine_layout(path):
    config = yaml.safe_load(path.read_text())
    assert isinstance(config, dict), f"{_relative(path)} is not a YAML mapping"
    missing = [key for key in REQUIRED if key not in config]
    assert not missing, f"{_relative(path)} lacks {missing}"
    assert "deepspeed_config" not in config, (
        f"{_relative(path)}: the ZeRO stage is the run override train.zero_stage, not accelerate's DeepSpeed plugin"
    )
    assert config["compute_environment"] == "LOCAL_MACHINE"
    # an unquoted NO is YAML's false, which accelerate refuses as a distributed_type
    kind = config["distributed_type"]
    assert kind in TORCHRUN_TYPES | SINGLE_PROCESS_TYPES, f"{_relative(path)}: distributed_type {kind!r}"
    machines, processes, rank = config["num_machines"], config["num_processes"], config["machine_rank"]
    assert all(isinstance(value, int) for value in (machines, processes, rank))
    assert machines >= 1 and processes >= 1
    assert processes % machines == 0, f"{_relative(path)}: {processes} processes over {machines} machines"
    assert 0 <= rank < machines
    if kind in SINGLE_PROCESS_TYPES:
        assert processes == 1 and machines == 1, f"{_relative(path)}: {kind} runs one process"
    assert config["mixed_precision"] in ("no", "fp16", "bf16", "fp8")
    if machines > 1:
        assert config.get("main_process_port"), (
            f"{_relative(path)}: several machines need a main_process_port"
        )


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_takes_the_config(path):
    """accelerate's own loader refuses unknown keys and bad enum values."""
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file

    config = load_config_from_file(str(path))
    assert isinstance(config, ClusterConfig)
    assert config.deepspeed_config == {}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_accelerate_config_starts_with_its_own_command(path):
    command = f"accelerate launch --config_file {_relative(path)}"
    comments = _leading_comments(path)
    assert comments, f"{_relative(path)} does not start with comment lines"
    assert any(command in line for line in comments), f"{_relative(path)}'s first comments lack `{command}`"


@pytest.mark.parametrize("path", [*CONFIGS, HOSTFILE], ids=lambda p: p.name)
def test_readme_launchers_section_names_the_file(path):
    assert path.is_file()
    assert _relative(path) in _launchers_section(), (
        f'README.md "## Launchers" does not name {_relative(path)}'
    )
