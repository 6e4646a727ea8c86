"""keep_ticket_on_engine: a user's own ``deepspeed.initialize`` engine (1 rank, gloo, in process) under a ticket.

One process group for the module: DeepSpeed caches its groups per process, so a second
``init_process_group`` in the same process would break ``deepspeed.initialize``.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.distributed as torch_dist
from bert_ticket import RENAME, batch, pruned_nonzero, tiny_bert, uniter_ticket
from conftest import free_port

from lottery.api import TicketMismatch, keep_ticket_on_engine
from lottery.sparsity.maskset import MaskSet
from lottery.tickets.renaming import renamed

STEPS = 3


@pytest.fixture(scope="module")
def one_rank(deepspeed_ops):
    """A 1-rank gloo process group, as ``deepspeed`` would start for one CPU process."""
    if torch_dist.is_initialized():  # another test set one up: use it and leave it
        yield
        return
    env = {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "LOCAL_WORLD_SIZE": "1"}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(free_port()))
    with pytest.MonkeyPatch.context() as patch:
        for key, value in env.items():
            patch.setenv(key, value)
        torch_dist.init_process_group("gloo", rank=0, world_size=1)
        try:
            yield
        finally:
            torch_dist.destroy_process_group()


def engine_for(model, stage: int):
    import deepspeed

    config = {
        "train_micro_batch_size_per_gpu": 4,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": 1.0,
        "zero_optimization": {"stage": stage},
    }
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=config)
    return engine


def train(engine, steps: int, first_seed: int = 0) -> None:
    for step in range(steps):
        engine.backward(engine(**batch(first_seed + step)).loss)
        engine.step()


def full_weights(engine, masks: MaskSet) -> dict[str, torch.Tensor]:
    """The whole weights of `masks` under the ticket's names (gathered under ZeRO-3)."""
    import deepspeed

    params = dict(engine.module.named_parameters())
    chosen = {name: params[renamed(name, RENAME)] for name in masks.masks}
    stage3 = engine.zero_optimization_stage() == 3
    with deepspeed.zero.GatheredParameters(list(chosen.values())) if stage3 else contextlib.nullcontext():
        return {name: param.detach().clone() for name, param in chosen.items()}


def changed_kept(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor], masks: MaskSet) -> float:
    return sum(int((after[n] != before[n])[m].sum()) for n, m in masks.masks.items()) / masks.kept


@pytest.mark.parametrize("stage", [0, 2])
def test_pruned_weights_masters_and_moments_stay_zero_under_zero_0_and_2(one_rank, stage):
    model = tiny_bert()
    masks = uniter_ticket(model)
    engine = engine_for(model, stage)
    handle = keep_ticket_on_engine(engine, masks, rename=RENAME)
    before = full_weights(engine, masks)

    train(engine, STEPS)

    assert handle.verify() == 0  # weight, fp32 master, exp_avg, exp_avg_sq
    assert pruned_nonzero(engine.module, masks) == 0
    assert changed_kept(before, full_weights(engine, masks), masks) > 0.9


def test_zero3_keeps_the_zeros_only_while_the_engine_step_is_wrapped(one_rank):
    """Under ZeRO-3 only `before_step` masks gradients: removing the handle's step wrapper revives the zeros."""
    model = tiny_bert()
    masks = uniter_ticket(model)
    engine = engine_for(model, 3)
    handle = keep_ticket_on_engine(engine, masks, rename=RENAME)
    before = full_weights(engine, masks)

    train(engine, STEPS)

    assert handle.verify() == 0
    after = full_weights(engine, masks)
    assert all(int(torch.count_nonzero(after[n][~m])) == 0 for n, m in masks.masks.items())
    assert changed_kept(before, after, masks) > 0.9

    handle.remove()
    assert "step" not in vars(engine)
    train(engine, 1, first_seed=STEPS)
    assert handle.verify(strict=False) > 0.5 * (masks.total - masks.kept)


def test_a_wrong_rename_on_an_engine_names_the_missing_parameters(one_rank):
    model = tiny_bert()
    engine = engine_for(model, 0)

    with pytest.raises(
        TicketMismatch, match=r"12 of 12 masked parameters .*pass rename=\{'uniter\.': 'bert\.'\}"
    ):
        keep_ticket_on_engine(engine, uniter_ticket(model), rename={"uniter.": "bert.bert."})
    assert "step" not in vars(engine)
