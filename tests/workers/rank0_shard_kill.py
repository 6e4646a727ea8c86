"""A pre-training job whose rank 1 is killed while it writes its ZeRO shard of one checkpoint tag.

Run by tests/integration/test_checkpoint_latest.py through torchrun: ``rank0_shard_kill.py TAG
override...``. Rank 1's write of its optimizer shard of TAG first takes `SLOW_S` (a large shard on a
slow file system), then the rank dies with SIGKILL, as a preempted or OOM-killed rank does. Rank 0
meanwhile has written its own files of TAG; whether it also names TAG in ``latest`` is what the test
looks at.
"""

from __future__ import annotations

import os
import signal
import sys
import time

from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine

from lottery.cli import main as lottery_main

SLOW_S = 3.0


def main(tag: str, overrides: list[str]) -> None:
    original = TorchCheckpointEngine.save

    def save(self, state_dict, path: str) -> None:
        if os.environ.get("RANK") == "1" and f"/{tag}/" in path and "optim_states" in path:
            time.sleep(SLOW_S)
            os.kill(os.getpid(), signal.SIGKILL)
        original(self, state_dict, path)

    TorchCheckpointEngine.save = save
    lottery_main(["pretrain", *overrides])  # as `python -m lottery pretrain` runs, shipped config and all


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
