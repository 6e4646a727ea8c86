"""Training steps on synthetic MLM batches, for the figures that time or check a step, not the data.

Random token ids and region features shaped like the shapes world (20 text tokens, 8 regions), collated
by the real MLM task, fed to a DeepSpeed engine built by the project's `build_engine`. Seeded, so every
rank and every run sees the same batches.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from lottery.tasks.masking import TextVocab

BERT_VOCAB = TextVocab(size=30522, pad_id=0, cls_id=101, sep_id=102, mask_id=103)


def mlm_batches(
    count: int, batch_size: int, feat_dim: int, vocab: TextVocab = BERT_VOCAB, regions: int = 8, seed: int = 1
) -> tuple[object, list[dict]]:
    """(the MLM task, `count` collated batches of `batch_size` examples of 18 words and `regions` regions)."""
    from lottery.tasks.pretrain import TASKS, CollateContext

    generator = torch.Generator().manual_seed(seed)
    task = TASKS["mlm"]
    low = min(1000, vocab.size // 2)
    batches = []
    for i in range(count):
        examples = [
            SimpleNamespace(
                input_ids=[
                    vocab.cls_id,
                    *torch.randint(low, vocab.size, (18,), generator=generator).tolist(),
                    vocab.sep_id,
                ],
                feat=torch.randn(regions, feat_dim, generator=generator),
                box=torch.rand(regions, 7, generator=generator),
                soft=None,
            )
            for _ in range(batch_size)
        ]
        batches.append(task.collate(examples, CollateContext(vocab), torch.Generator().manual_seed(i)))
    return task, batches


def engine(model: nn.Module, stage: int, batch_size: int = 8, precision: str = "fp32"):
    """A DeepSpeed engine over `model` at ZeRO `stage` in `precision` (fp32 or bf16: the optimizer
    wrappers a GPU run takes), as the trainers build it; collective."""
    from lottery.config import OptimConfig, TrainConfig
    from lottery.train.engine import build_engine

    train = TrainConfig(steps=10_000, batch_size=batch_size, zero_stage=stage, precision=precision)
    return build_engine(model, train, OptimConfig(warmup_steps=0))[0]


def train_step(engine, task, batch: dict, enforcer=None) -> float:
    """One forward, backward and optimiser step; the loss. `enforcer.before_step` runs where it must.

    The batch is cast to the engine's working dtype the way the trainers cast theirs."""
    from lottery.train.batches import to_device

    batch = to_device(batch, engine.device, next(engine.module.parameters()).dtype)
    loss, _ = engine(batch, task)
    engine.backward(loss)
    if enforcer is not None:
        enforcer.before_step()
    engine.step()
    return float(loss.detach())
