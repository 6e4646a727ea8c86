"""Where an IMP run keeps its progress: the run directory's layout, identity and ``state.json``.

Layout of ``<runs_dir>/<method>-<digest12>/``::

    config.yaml        the resolved IMP config, and theta0's digest
    state.json         rounds done, the round in flight and its world size, early stops
    masks/             a ticket store; alias ``round_NN`` = the mask round NN trains under (NN >= 1)
    rounds/round_NN/   the round's training run: metrics.jsonl and round.json are kept, checkpoints
                       are removed once the round is done
    rewind/            with ``imp.rewind_step`` k: the weights at step k of round 0, and rewind.json
                       (that step, round 0's world size); removed when round 0 is redone

The state never depends on the world size except for the round in flight, whose checkpoint may
(docs/design.md, "Contracts": runs resume), and the rewind point, which is a step of the round 0
the masks came from. Only rank 0 writes (through ``dist.on_main``, so its failure reaches every
rank); every write is a temp file renamed into place.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from lottery.config import ImpConfig, canonical_tree, digest, load_config
from lottery.files import write_json_atomic
from lottery.run_record import identity_view


def round_alias(index: int) -> str:
    return f"round_{index:02d}"


def run_identity(config: ImpConfig, theta0_digest: str) -> str:
    """sha256 of what decides the masks: the config's `identity_view` and the digest of its theta0.

    theta0 enters by its digest, not by the name of its config (``theta0``, ``theta0_overrides`` are
    placement fields here), so two spellings of one theta0 make one run. The spaced JSON form is the
    one run directories were first named with (see `digest`).
    """
    return digest({"imp": canonical_tree(identity_view(config)), "theta0": theta0_digest}, spaced=True)


def run_dir_for(config: ImpConfig, theta0_digest: str) -> Path:
    return Path(config.runs_dir) / f"{config.imp.method}-{run_identity(config, theta0_digest)[:12]}"


def planned_run_dir(config: ImpConfig) -> Path:
    """The run directory of `config`, found without building theta0 (its digest needs only its config)."""
    from lottery.train.theta0 import identity

    theta0_config = load_config(config.theta0, list(config.theta0_overrides))
    return run_dir_for(config, digest(identity(theta0_config)))


@dataclass
class ImpState:
    """Progress of a run. ``rounds_done`` rounds are finished (their masks and metrics are final)."""

    theta0: str
    rounds_done: int = 0
    in_flight: int | None = None  # the round being trained
    in_flight_world_size: int | None = None
    early_stops: dict[str, int] = field(default_factory=dict)  # round -> step it ended at

    @classmethod
    def load(cls, run_dir: Path, theta0: str) -> ImpState:
        path = Path(run_dir) / "state.json"
        if not path.is_file():
            return cls(theta0=theta0)
        try:
            state = cls(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError) as err:
            raise RuntimeError(f"{path}: not an IMP state file ({err}); move it away to start over") from None
        if state.theta0 != theta0:
            raise RuntimeError(
                f"{path}: the run was made from theta0 {state.theta0[:16]}, this config gives {theta0[:16]}"
            )
        return state

    def save(self, run_dir: Path) -> None:
        write_json_atomic(Path(run_dir) / "state.json", asdict(self))
