"""theta0: the pre-trained model every ticket is cut from and rewound to, built once and reused.

A theta0 lives in a cache directory keyed by the digest of the pre-training config that makes it
(`~/.cache/vl-lottery/theta0/<digest>/` unless `theta0_cache` or `$LOTTERY_THETA0_CACHE` says
otherwise): the pre-training run itself (checkpoints, metrics.jsonl, model/), then its criteria
(`criteria.json`), its verdict (`verdict.json`: passed or not, and which criteria failed), its learning
curves (`curves.png`) and, written last, `DONE`. Without `DONE` a theta0 is unfinished: the next job
resumes the run from its latest checkpoint, and never uses it as is.

A theta0 that failed its criteria is still a theta0 (a short budget may be all there is), but no job
may use it unremarked: every job that calls `ensure_theta0` prints one line saying so, records
`theta0_passed: false`, and refuses it outright under `theta0.require_criteria=true`.

The criteria are UNITER's (`lottery.evaluation.grounding` probes UNITER's modules): a theta0 of another
family has neither criteria.json nor verdict.json, says so in one line, and is refused under
`theta0.require_criteria=true`, since it cannot have passed criteria nobody measured.

Rank 0 alone reads the cache and decides, through ``dist.on_main``, so every rank takes the same
branch and a failure on rank 0 reaches every rank at once: whether the theta0 is finished (site
``theta0.done``), whether the build wrote its model (``theta0.model_written``), its criteria, verdict,
curves and DONE (``theta0.record``), and the verdict every job reads to warn or refuse
(``theta0.verdict``).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass, fields, make_dataclass, replace
from pathlib import Path

from lottery import dist, run_record
from lottery.config import ConfigError, PretrainConfig, SparsityConfig, Theta0Options, digest
from lottery.files import write_json_atomic
from lottery.run_record import identity_view

log = logging.getLogger("lottery.train.theta0")

CACHE_ENV = "LOTTERY_THETA0_CACHE"
VERDICT = "verdict.json"
MEASURED_FAMILY = "uniter"  # the family the grounding criteria probe

# Sections of a PretrainConfig that say how jobs treat theta0, not what it is. They are left out of the
# identity, so adding one never moves an existing theta0 to another cache directory (nor changes the
# digest IMP runs and their tickets record).
NOT_IDENTITY = ("theta0",)
Theta0Identity = make_dataclass(
    "Theta0Identity",
    [(f.name, f.type) for f in fields(PretrainConfig) if f.name not in NOT_IDENTITY],
    frozen=True,
)


class Theta0Refused(ConfigError):
    """A job asked for a theta0 that passed its criteria (``theta0.require_criteria``) and got one that did not."""


@dataclass(frozen=True)
class Theta0Verdict:
    """Whether a theta0 passed every criterion, and the names of those it failed."""

    passed: bool
    failed: tuple[str, ...]
    directory: str

    def warning(self) -> str:
        return (
            f"theta0 {self.directory} FAILED its criteria ({', '.join(self.failed)}): used anyway, and "
            "recorded as theta0_passed: false (theta0.require_criteria=true refuses it)"
        )

    def refusal(self) -> str:
        return (
            f"theta0 {self.directory} failed its criteria ({', '.join(self.failed)}) and "
            "theta0.require_criteria is true: pre-train it longer (another train.steps builds another "
            "theta0) or set theta0.require_criteria=false to use it anyway"
        )


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "vl-lottery" / "theta0")


def identity(config: PretrainConfig) -> Theta0Identity:
    """What decides the weights: the config without where it runs, how often it logs, or `NOT_IDENTITY`."""
    # theta0 is dense: no sparsity setting, not even a placement one, enters its identity
    cleared = replace(identity_view(config), sparsity=SparsityConfig())
    return Theta0Identity(**{f.name: getattr(cleared, f.name) for f in fields(Theta0Identity)})


def theta0_dir(config: PretrainConfig, root: Path | None = None) -> Path:
    return (root or cache_root()) / digest(identity(config))[:16]


def is_done(directory: Path) -> bool:
    return run_record.is_done(directory) and (directory / "model" / "config.json").is_file()


def verdict_of(rows: list, directory: Path) -> Theta0Verdict:
    """The verdict of a criteria table (`grounding.Criterion` rows, or their dicts)."""
    rows = [r if isinstance(r, dict) else asdict(r) for r in rows]
    failed = tuple(r["name"] for r in rows if not r["passed"])
    return Theta0Verdict(passed=not failed, failed=failed, directory=str(directory))


def write_verdict(directory: Path, verdict: Theta0Verdict) -> Path:
    return write_json_atomic(
        Path(directory) / VERDICT, {"passed": verdict.passed, "failed": list(verdict.failed)}
    )


def read_verdict(directory: Path) -> Theta0Verdict:
    """The verdict of the theta0 in `directory` (its cache directory: the parent of its `model/`).

    A theta0 finished before verdicts were recorded has none: it is read from its criteria.json.
    """
    directory = Path(directory)
    path = directory / VERDICT
    if path.is_file():
        try:
            stored = json.loads(path.read_text())
            return Theta0Verdict(bool(stored["passed"]), tuple(stored["failed"]), str(directory))
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(
                f"{path}: not a theta0 verdict ({err}); delete it to read criteria.json"
            ) from None
    criteria = directory / "criteria.json"
    if not criteria.is_file():
        raise FileNotFoundError(f"{directory} has neither {VERDICT} nor criteria.json: not a finished theta0")
    return verdict_of(json.loads(criteria.read_text())["criteria"], directory)


def ensure_theta0(config: PretrainConfig, root: Path | None = None, samples: int = 512) -> Path | None:
    """The theta0 model directory for `config`, pre-training it first when not built yet (collective).

    Prints its criteria table either way, and one line more when it failed them, so every job shows
    whether its theta0 has learned; with ``theta0.require_criteria`` a failed theta0 raises
    `Theta0Refused` on every rank. Returns None when the build stopped early
    (`train.stop_after_steps`): the next call resumes it.
    """
    if config.sparsity.ticket:
        raise ValueError("theta0 is the dense pre-trained model: run it without sparsity.ticket")
    dist.init()  # every rank is in the group before rank 0 decides for them
    directory = theta0_dir(config, root)
    done = dist.on_main(lambda: is_done(directory), what="theta0.done")
    if not done and not _build(config, directory, samples):
        return None
    family = config.model.family
    verdict = dist.on_main(lambda: _announce(directory, family), what="theta0.verdict")
    if verdict is None and config.theta0.require_criteria:
        raise Theta0Refused(
            f"theta0 {directory} is {family}, and grounding criteria are measured for UNITER only, so "
            "theta0.require_criteria=true cannot be met: set theta0.require_criteria=false to use it"
        )
    if verdict is not None and not verdict.passed and config.theta0.require_criteria:
        raise Theta0Refused(verdict.refusal())
    return directory / "model"


def _build(config: PretrainConfig, directory: Path, samples: int) -> bool:
    """Pre-train (or resume) theta0 in `directory`, then record its criteria, verdict, curves and DONE.

    False when the run stopped before its last step. `Theta0Options` are reset for the run itself: how
    jobs treat theta0 must not make its directory look like another run's.
    """
    from lottery.train.pretrain import pretrain
    from lottery.train.step import RunHooks

    if dist.is_main():
        log.info(f"theta0: building {directory} (resumes if a previous build was stopped)")
    build = replace(config, run_dir=str(directory), theta0=Theta0Options())
    pretrain(build, keep_process_group=True, hooks=RunHooks(mark_done=False))  # DONE once criteria are in
    written = dist.on_main(
        lambda: (directory / "model" / "config.json").is_file(), what="theta0.model_written"
    )
    if not written:
        return False
    dist.on_main(lambda: _record(config, directory, samples), what="theta0.record")
    return True


def _record(config: PretrainConfig, directory: Path, samples: int) -> None:
    """Rank 0: the built theta0's criteria, verdict and learning curves, then DONE, written last.

    A family the criteria do not probe gets no criteria.json and no verdict (an empty table would
    read as passed): `_announce` says so instead.
    """
    from lottery.evaluation.grounding import evaluate_model_dir
    from lottery.train.curves import plot_learning_curves

    if config.model.family == MEASURED_FAMILY:
        metrics, rows = evaluate_model_dir(directory / "model", config.data.dir, samples=samples)
        write_json_atomic(
            directory / "criteria.json", {"metrics": metrics, "criteria": [asdict(r) for r in rows]}
        )
        write_verdict(directory, verdict_of(rows, directory))
    plot_learning_curves(directory / "metrics.jsonl", directory / "curves.png", f"theta0 {directory.name}")
    run_record.mark_done(directory, digest(identity(config)))


def _announce(directory: Path, family: str = MEASURED_FAMILY) -> Theta0Verdict | None:
    """Print the criteria table (and the failure line), recording the verdict of an older theta0 (rank 0).

    None for a theta0 of a family the criteria do not probe: it has no table, and no verdict.
    """
    from lottery.evaluation.grounding import Criterion, format_criteria

    if family != MEASURED_FAMILY:
        log.info(
            f"theta0 {directory}: grounding criteria are measured for UNITER only; this {family} theta0 has none"
        )
        return None
    stored = json.loads((directory / "criteria.json").read_text())
    rows = [Criterion(**row) for row in stored["criteria"]]
    log.info(f"theta0 {directory}:\n{format_criteria(rows)}")
    if not (directory / VERDICT).is_file():
        write_verdict(directory, verdict_of(rows, directory))
    verdict = read_verdict(directory)
    if not verdict.passed:
        log.warning(verdict.warning())
    return verdict


def seed_summary(directories: list[Path]) -> str:
    """Mean and spread (min..max) of each criterion over theta0 builds that differ only in seed."""
    import statistics

    tables = [json.loads((d / "criteria.json").read_text())["criteria"] for d in directories]
    lines = [f"{'criterion':<24} {'mean':>8} {'min..max':>17} {'baseline mean':>14}  passed"]
    for rows in zip(*tables, strict=True):
        values = [r["value"] for r in rows]
        baselines = [r["baseline"] for r in rows]
        passed = sum(r["passed"] for r in rows)
        lines.append(
            f"{rows[0]['name']:<24} {statistics.mean(values):8.4f} {min(values):8.4f}..{max(values):<8.4f}"
            f" {statistics.mean(baselines):14.4f}  {passed}/{len(rows)}"
        )
    return "\n".join(lines)
