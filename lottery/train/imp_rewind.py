"""Where IMP rounds start: the proof that a round starts from the rewind point, and saving that point.

The proof runs on the engine as it is about to train, so it covers what DeepSpeed did to the weights
(partitioning, the ticket's zeroing): a round that does not start from theta0 * mask stops the run.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch

from lottery import dist
from lottery.sparsity.maskset import MaskSet


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
        print(
            f"IMP round {index} starts from {start_model}: largest |weight - start * mask| over the "
            f"prunable weights ({str(working).removeprefix('torch.')} engine) = {worst:.3g}",
            flush=True,
        )
    if worst != 0.0:
        raise RuntimeError(f"IMP round {index} did not start from the rewind point (max diff {worst})")


def save_rewind_point(engine, theta0_model: Path, directory: Path, rewind_step: int) -> None:
    """The weights at step `rewind_step` of round 0 as `directory/rewind`, where later rounds start
    (collective; written whole or not at all)."""
    from lottery.models.uniter import from_pretrained, save_pretrained, tokenizer_files
    from lottery.train.weights import full_state_dict

    target = directory / "rewind"
    state = full_state_dict(engine)
    if dist.is_main() and not (target / "config.json").is_file():
        model = from_pretrained(theta0_model)
        model.load_state_dict(state)
        partial = directory / ".rewind.partial"
        shutil.rmtree(partial, ignore_errors=True)
        save_pretrained(model, partial, extra_files=tokenizer_files(theta0_model))
        partial.rename(target)
        print(f"rewind point: the weights at step {rewind_step} -> {target}", flush=True)
    dist.barrier()
