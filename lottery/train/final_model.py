"""The model directory a pre-training run ends with, ``run_dir/model``, in its family's format."""

from __future__ import annotations

import logging
from pathlib import Path

from lottery.files import atomic_directory
from lottery.models.families import Family

log = logging.getLogger("lottery.pretrain")


def save_model(family: Family, state: dict, model_dir: Path, run_dir: Path) -> None:
    """Rank 0: the final weights as a model directory, ``run_dir/model`` (written whole or not at all).

    The starting directory gives the architecture and the tokenizer files, so the final model is the
    starting one with trained weights, whatever the family.
    """
    from lottery.models.uniter import tokenizer_files

    final = family.load(model_dir)
    final.load_state_dict(state)
    # replace=True: a model an earlier attempt wrote (killed before anything used it; this run
    # recomputed the same weights from the same checkpoint) is swapped out in one rename
    with atomic_directory(run_dir / "model", replace=True) as partial:
        family.write(final, partial, tokenizer_files(model_dir))
    log.info(f"pre-trained model written to {run_dir / 'model'}")
