"""Figure 4: the threshold and its enforcement give the same masks on 8 gloo ranks as on 1 (target: identical).

The same job runs under torchrun twice, on 1 rank and on 8 (8 processes sharing 2 cores), and writes
its masks; they must be equal bit for bit:

1. **tie-heavy synthetic scores**: scores quantised to 16 levels (so the threshold falls inside a run of
   thousands of equal values and the tie rule decides), laid out over the ranks as ZeRO-3 partitions
   parameters, cut at 60% by `prune_pieces` (magnitude: its scores are the levels themselves), whose
   `lottery.sparsity.threshold.select_smallest` applies the tie rule;
2. **a magnitude and a random cut of a ZeRO-3 engine**: a small UNITER (2 layers x 30 hidden, so that
   no parameter divides by 8 and ZeRO-3 pads every partition), cut at 60% by the library's path
   (`engine_pieces` -> `prune_pieces` -> `gather_masks`);
3. **enforcement**: that mask installed with `MaskEnforcer`, a few AdamW steps on synthetic MLM batches,
   `verify_pruned`, and the mask read back from the weights (kept = weight != 0) and gathered: it must
   be the mask that was cut, on both world sizes.

A cut of the *trained* weights is not compared: 8 ranks average 8 gradients where 1 rank averages one,
so the trained weights differ in their last bits, as in any data-parallel job.

Usage, from the repo root:  python benchmarks/threshold_world_size.py [--quick] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path

import torch
from gloo_ranks import torchrun
from rows import Row, add_output_flags, emit
from scope_masks import rank_slice, tiny_shapes
from synthetic_steps import engine as build_engine
from synthetic_steps import mlm_batches, train_step

from lottery.tasks.masking import TextVocab

WORLD = 8
VOCAB = TextVocab(size=1000, pad_id=0, cls_id=101, sep_id=102, mask_id=103)
FEAT_DIM = 24


def _tiny_uniter():
    from lottery.models.uniter import UniterConfig, UniterForPretraining

    config = UniterConfig(
        name="uniter-w8",
        vocab_size=VOCAB.size,
        hidden_size=30,
        num_hidden_layers=2,
        num_attention_heads=3,
        intermediate_size=70,
        img_dim=FEAT_DIM,
        num_region_classes=8,
    )
    torch.manual_seed(0)
    return UniterForPretraining(config)


def _tie_pieces(shapes: dict[str, tuple[int, ...]]) -> list:
    """This rank's ZeRO-3-style `Piece` of each parameter, its "weights" 16 levels in [0, 1)."""
    from lottery import dist
    from lottery.sparsity.criteria import Piece

    world, rank = dist.world_size(), dist.rank()
    pieces = []
    for index, (name, shape) in enumerate(shapes.items()):
        numel = math.prod(shape)
        start, length = rank_slice(numel, world, rank)
        generator = torch.Generator().manual_seed(index)
        levels = torch.randint(0, 16, (numel,), generator=generator).float() / 16
        kept = torch.ones(length, dtype=torch.bool)
        pieces.append(Piece(index, name, shape, start, levels[start : start + length].clone(), kept))
    return pieces


def worker(steps: int, out: Path) -> None:
    """One rank of the job (see the module docstring); rank 0 saves every mask to `out`."""
    from lottery import dist
    from lottery.sparsity.criteria import prune_pieces
    from lottery.sparsity.enforce import MaskEnforcer, verify_pruned
    from lottery.sparsity.maskset import MaskSet
    from lottery.sparsity.partition import engine_pieces, gather_masks
    from lottery.sparsity.scope import parameter_shape

    dist.init()
    shapes = tiny_shapes(layers=3, hidden=40)
    tie_pieces = _tie_pieces(shapes)
    # magnitude scores are |w|: the quantised levels themselves, ties and all
    ties = gather_masks(tie_pieces, prune_pieces(tie_pieces, "magnitude", 0.6), MaskSet.dense(shapes))

    model = _tiny_uniter()
    ds_engine = build_engine(model, stage=3, batch_size=2)
    params = dict(ds_engine.module.named_parameters())
    dense = MaskSet.dense({n: parameter_shape(params[n]) for n in model.prunable()})
    pieces = engine_pieces(ds_engine, dense)
    magnitude = gather_masks(pieces, prune_pieces(pieces, "magnitude", 0.6), dense)
    random = gather_masks(pieces, prune_pieces(pieces, "random", 0.6, seed=3), dense)
    enforcer = MaskEnforcer(ds_engine, magnitude)
    task, batches = mlm_batches(steps, batch_size=2, feat_dim=FEAT_DIM, vocab=VOCAB, seed=1 + dist.rank())
    for batch in batches:
        train_step(ds_engine, task, batch, enforcer)
    verify_pruned(ds_engine, magnitude, "after the timed steps")
    trained = engine_pieces(ds_engine, magnitude)
    read_back = gather_masks(trained, [p.weights != 0 for p in trained], magnitude)
    if dist.is_main():
        torch.save(
            {
                "ties": dict(ties.masks),
                "magnitude": dict(magnitude.masks),
                "random": dict(random.masks),
                "enforced": dict(read_back.masks),
            },
            out,
        )
    dist.shutdown()


def _differing(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> int:
    return sum(int((a[n] != b[n]).sum()) for n in a)


def measure(steps: int) -> list[Row]:
    """Figure 4's row: identical yes/no, with the bits that differ for each check in the note."""
    with tempfile.TemporaryDirectory() as tmp:
        results = {}
        for world in (1, WORLD):
            out = Path(tmp) / f"world{world}.pt"
            torchrun(__file__, world, ["--worker", str(steps), str(out)])
            results[world] = torch.load(out, weights_only=True)
    one, many = results[1], results[WORLD]
    checks = {
        "tie-heavy select": _differing(one["ties"], many["ties"]),
        "magnitude cut": _differing(one["magnitude"], many["magnitude"]),
        "random cut": _differing(one["random"], many["random"]),
        f"enforced after {steps} steps, {WORLD} ranks": _differing(many["enforced"], many["magnitude"]),
        f"enforced after {steps} steps, 1 rank": _differing(one["enforced"], one["magnitude"]),
    }
    same = all(v == 0 for v in checks.values())
    return [
        Row(
            figure=f"4. masks on {WORLD} gloo ranks == on 1 (threshold + ZeRO-3 enforcement)",
            measured="yes" if same else "no",
            target="identical",
            note="bits differing: " + ", ".join(f"{k} {v}" for k, v in checks.items()),
        )
    ]


def main() -> None:
    if "--worker" in sys.argv:
        steps, out = sys.argv[sys.argv.index("--worker") + 1 :][:2]
        worker(int(steps), Path(out))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_output_flags(parser)
    args = parser.parse_args()
    emit(measure(steps=2 if args.quick else 4), args.json)


if __name__ == "__main__":
    main()
