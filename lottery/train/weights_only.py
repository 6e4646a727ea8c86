"""DeepSpeed checkpoints read as data only: the files of a resumed tag are unpickled with
``torch.load(weights_only=True)``, so loading one can build tensors and plain containers, never run code.

DeepSpeed's own ``TorchCheckpointEngine.load`` passes ``weights_only=False`` (torch's safe default is
overridden there), so any ``.pt`` planted in a run's ``checkpoints/`` (a shared scratch disk, a copied
run directory) would execute whatever its ``__reduce__`` names on the next resume, on every rank.
`install` swaps in an engine that loads with the restricted unpickler; the few DeepSpeed classes its
own checkpoints hold (loss scalers, the ZeRO stage, fragment addresses) are allowed by name, and they
are rebuilt from their fields, not by calling anything. A file that needs anything else is refused
with `CheckpointRefused`, which the command prints as one line (exit 2).
"""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import torch
from deepspeed.runtime.checkpoint_engine.torch_checkpoint_engine import TorchCheckpointEngine
from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
from deepspeed.runtime.zero.config import ZeroStageEnum
from deepspeed.utils.tensor_fragment import fragment_address

# what DeepSpeed 0.19 writes besides tensors and builtins (ZeRO-1/2/3 optimizer states, fp16 scaling)
DEEPSPEED_GLOBALS = (LossScaler, DynamicLossScaler, ZeroStageEnum, fragment_address)
_GLOBAL = re.compile(r"Unsupported global: GLOBAL ([\w.]+)")


class CheckpointRefused(ValueError):
    """A checkpoint file that could only be loaded by running code it names; the message names the file."""


class WeightsOnlyCheckpointEngine(TorchCheckpointEngine):
    """DeepSpeed's torch checkpoint engine, saving as it does, loading with ``weights_only=True``."""

    def load(self, path: str, map_location=None):
        try:
            with torch.serialization.safe_globals(list(DEEPSPEED_GLOBALS)):
                return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            found = _GLOBAL.search(str(err))
            named = f"it calls {found.group(1)}" if found else str(err).splitlines()[0]
            raise CheckpointRefused(
                f"{path}: not a checkpoint of tensors ({named}), so it was not loaded; this run never wrote "
                f"it: delete {Path(path).parent} to resume from the checkpoint before, or use a new run_dir"
            ) from None


def install(engine) -> None:
    """Make `engine` (a DeepSpeed engine) load checkpoints weights-only. Another checkpoint engine
    (Nebula, DeepSpeed's decoupled one) is left as it is: no layout shipped in lottery/ds_configs asks for one."""
    if type(engine.checkpoint_engine) is TorchCheckpointEngine:
        engine.checkpoint_engine = WeightsOnlyCheckpointEngine(engine._config)
