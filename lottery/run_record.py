"""What a run directory says about its run: which run it is, the config it ran, and that it finished.

Every job names (theta0, IMP, fine-tune) or checks (``lottery pretrain``'s user-named ``run_dir``)
its directory by the same rule: the digest of its config's *identity view*, the config with every
field marked `lottery.config.placement` (where the run lives, how often it logs or checkpoints, where
it publishes) set to a neutral value. So moving a run or logging it more often finds the same run,
and changing anything that changes results makes another one.

Every job writes the same two records, each whole or not at all (temp file, fsync, rename):
``config.yaml``, the resolved config it ran, and ``DONE``, written last, holding the identity digest.
A directory without ``DONE`` is unfinished, whatever else it holds; tools that plan work (a sweep,
``slurm/universal.sh --missing``) ask `is_done` and nothing else.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from pathlib import Path
from typing import Any

from lottery.config import NOT_IDENTITY, digest, to_yaml
from lottery.files import write_text_atomic

DONE = "DONE"
RECORD = "config.yaml"


def identity_view(config: Any) -> Any:
    """`config` with every `placement` field, at any depth, replaced by its neutral value."""
    changes = {}
    for item in fields(config):
        value = getattr(config, item.name)
        if NOT_IDENTITY in item.metadata:
            changes[item.name] = item.metadata[NOT_IDENTITY]
        elif is_dataclass(value):
            changes[item.name] = identity_view(value)
    return replace(config, **changes)


def run_digest(config: Any) -> str:
    """The identity digest of a config: `digest` of its `identity_view`."""
    return digest(identity_view(config))


def write_record(directory: Path, config: Any, *, note: str = "") -> None:
    """``config.yaml``: the resolved config the job runs (and `note` as a trailing comment line)."""
    Path(directory).mkdir(parents=True, exist_ok=True)
    text = to_yaml(config) + (f"# {note}\n" if note else "")
    write_text_atomic(Path(directory) / RECORD, text)


def mark_done(directory: Path, identity: str) -> None:
    """Write ``DONE`` (the run's identity digest): the job's last write, once every output is whole."""
    write_text_atomic(Path(directory) / DONE, identity + "\n")


def is_done(directory: Path, *, legacy: tuple[str, ...] = ()) -> bool:
    """Whether the run in `directory` finished: its ``DONE``, or (runs written before ``DONE`` existed)
    one of the `legacy` files that such a job wrote last."""
    directory = Path(directory)
    return (directory / DONE).is_file() or any((directory / name).is_file() for name in legacy)
