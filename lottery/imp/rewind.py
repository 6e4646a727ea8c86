"""Where IMP rounds start: the proof that a round starts from the rewind point, and that point itself.

The proof runs on the engine as it is about to train, so it covers what DeepSpeed did to the weights
(partitioning, the ticket's zeroing): a round that does not start from theta0 * mask stops the run.

With ``imp.rewind_step`` k the rewind point is ``<run>/rewind``: the weights at step k of round 0,
with ``rewind.json`` naming that step and round 0's world size. Only :func:`save_rewind_point`
writes that file (inside the directory, before it is renamed into place), so a model directory built
anywhere else (e.g. by ``ensure_model`` from BERT, when ``model.dir`` points at a missing directory)
is never taken for the rewind point: :func:`require_rewind_point` refuses it, and a later round with
no rewind point stops instead of rewinding to something round 0 never was.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import torch

from lottery import dist
from lottery.faults import fault_point
from lottery.sparsity.maskset import MaskSet

log = logging.getLogger("lottery.imp.rewind")

MARKER = "rewind.json"


def check_rewind(engine, masks: MaskSet, start_model: Path, index: int) -> None:
    """Prove round `index` starts from `start_model`: kept weights equal it, pruned ones are 0.0.

    Each rank compares the fp32 master slice it owns (the ZeRO-3 partition, or its share of a
    replicated weight) with the same entries of the start model's file, as the engine can hold them:
    a bf16/fp16 engine builds its fp32 master from the low-precision module, so the start is rounded
    to the working dtype first (exact in fp32). The largest difference over ranks decides.
    """
    from safetensors import safe_open

    from lottery.sparsity.partition import engine_pieces

    working = next(engine.module.parameters()).dtype
    worst = 0.0
    with safe_open(str(start_model / "model.safetensors"), framework="pt") as weights:
        for piece in engine_pieces(engine, masks):
            flat = weights.get_tensor(piece.name).reshape(-1)
            held = flat[piece.start : piece.start + piece.weights.numel()].to(working).float()
            expected = held * piece.kept
            if expected.numel():
                worst = max(worst, float((piece.weights.float() - expected).abs().max()))
    worst = float(dist.all_gather_tensor(torch.tensor([worst])).max())
    if dist.is_main():
        log.info(
            f"IMP round {index} starts from {start_model}: largest |weight - start * mask| over the "
            f"prunable weights ({str(working).removeprefix('torch.')} engine) = {worst:.3g}"
        )
    if worst != 0.0:
        raise RuntimeError(f"IMP round {index} did not start from the rewind point (max diff {worst})")


def rewind_record(directory: Path) -> dict | None:
    """What ``<run>/rewind/rewind.json`` says (step, world_size), or None when there is no such file."""
    marker = Path(directory) / "rewind" / MARKER
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text())
    except json.JSONDecodeError as err:
        raise RuntimeError(f"{marker}: not a rewind record ({err})") from None
    return record if isinstance(record, dict) else None


def require_rewind_point(directory: Path, rewind_step: int) -> Path:
    """`directory/rewind` if it is the point save_rewind_point wrote for `rewind_step`, else an error.

    Called before a later round builds its engine, so a missing point is never rebuilt from BERT.
    """
    target = Path(directory) / "rewind"
    record = rewind_record(directory)
    if record is None:
        what = "has no " + MARKER if target.exists() else "is missing"
        raise RuntimeError(
            f"rewind point {target} {what}: it is only written at step {rewind_step} of round 0, which "
            "is done; start the run again in a new runs_dir (or remove its rounds/ and state.json)"
        )
    if record.get("step") != rewind_step:
        raise RuntimeError(
            f"rewind point {target} holds step {record.get('step')}, this run rewinds to step {rewind_step}"
        )
    return target


def remove_rewind_point(directory: Path) -> None:
    """Drop the rewind point (rank 0): round 0 is redone, so its step-k weights will be new."""
    shutil.rmtree(Path(directory) / "rewind", ignore_errors=True)


def _write_rewind_point(state: dict, theta0_model: Path, directory: Path, rewind_step: int) -> None:
    """Rank 0's part of save_rewind_point: the model directory and its record, renamed into place whole.

    The point is theta0's model with other weights, so it is loaded and written by theta0's family.
    """
    from lottery.files import atomic_directory
    from lottery.models.families import family_of
    from lottery.models.uniter import tokenizer_files

    target = directory / "rewind"
    wanted = {"step": rewind_step, "world_size": dist.world_size()}
    if rewind_record(directory) == wanted:
        return  # this round 0 wrote it before a kill, from the same weights
    family = family_of(theta0_model)
    model = family.load(theta0_model)
    model.load_state_dict(state)
    # replace=True: a stale point (another world size, no record) is swapped out in the same rename
    with atomic_directory(target, replace=True) as partial:
        family.write(model, partial, tokenizer_files(theta0_model))
        (partial / MARKER).write_text(json.dumps(wanted, sort_keys=True))
        fault_point("imp.rewind_save")  # written whole, not yet renamed into place
    log.info(f"rewind point: the weights at step {rewind_step} -> {target}")


def save_rewind_point(engine, theta0_model: Path, directory: Path, rewind_step: int) -> None:
    """The weights at step `rewind_step` of round 0 as `directory/rewind`, where later rounds start
    (collective; written whole or not at all; site ``imp.rewind_save``)."""
    from lottery.train.weights import full_state_dict

    state = full_state_dict(engine)
    dist.on_main(
        lambda: _write_rewind_point(state, theta0_model, directory, rewind_step), what="imp.rewind_save"
    )
