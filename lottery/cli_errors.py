"""How the ``lottery`` command ends on an expected failure: one line on stderr and an exit code.

A user's mistake (a config key, a ticket, a path, a YAML file) is never a traceback; a genuine bug
still is. The error classes are named by module, and a class counts only once its module has been
imported (no error of it can have been raised before), so catching them imports nothing: a command
that fails in its argument checks never pays for torch.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

# exit codes: 2 = bad input (config, ticket, model directory, a path), 3 = a run that failed its own proof
# (a revived mask), 4 = the run directory is held by another live job, 5 = stopped on a signal at a step
# boundary (SLURM preemption / time limit), checkpointed: the batch script requeues on it; 6 = the loss
# stopped being finite (nothing of that step saved: a rerun with other settings resumes before it); 7 = a
# checkpoint could not be written (disk full, quota): the previous one stands, rerun once there is room
EXIT_BAD_INPUT, EXIT_MASK_VIOLATED, EXIT_RUN_BUSY, EXIT_PREEMPTED = 2, 3, 4, 5
EXIT_DIVERGED, EXIT_WRITE_FAILED = 6, 7

# (module, class, prefix of the line, exit code), most specific first
EXPECTED = (
    ("lottery.config_loader", "ConfigError", "config error: ", EXIT_BAD_INPUT),
    ("lottery.preflight", "InputError", "", EXIT_BAD_INPUT),
    ("lottery.tickets.format", "TicketError", "ticket refused: ", EXIT_BAD_INPUT),
    ("lottery.models.uniter.checkpoint", "ModelDirError", "model refused: ", EXIT_BAD_INPUT),
    ("lottery.data.schema", "ShardError", "data refused: ", EXIT_BAD_INPUT),
    ("lottery.train.weights_only", "CheckpointRefused", "checkpoint refused: ", EXIT_BAD_INPUT),
    ("lottery.sparsity.enforce", "MaskViolation", "", EXIT_MASK_VIOLATED),
    ("lottery.run_lock", "RunBusy", "", EXIT_RUN_BUSY),
    ("lottery.train.step", "Preempted", "", EXIT_PREEMPTED),
    ("lottery.train.divergence", "NonFiniteLoss", "training diverged: ", EXIT_DIVERGED),
    ("lottery.train.checkpoint", "CheckpointWriteError", "checkpoint not written: ", EXIT_WRITE_FAILED),
)


def classify(err: BaseException) -> tuple[str, int] | None:
    """(prefix, exit code) if `err` is an expected failure, else None (a bug: let it show its traceback)."""
    for module, name, prefix, code in EXPECTED:
        kind = getattr(sys.modules.get(module), name, None)
        if kind is not None and isinstance(err, kind):
            return prefix, code
    return None


def one_line(err: BaseException) -> str:
    return " ".join(part.strip() for part in str(err).splitlines() if part.strip())


@contextmanager
def exit_on_expected_failure() -> Iterator[None]:
    """Run the command; an expected failure prints ``lottery: <prefix><error>`` and exits with its code."""
    try:
        yield
    except Exception as err:
        found = classify(err)
        if found is None:
            raise
        prefix, code = found
        print(f"lottery: {prefix}{one_line(err)}", file=sys.stderr)
        raise SystemExit(code) from None
