"""keep_ticket: a hand-written accelerate loop (Accelerator(cpu=True)) fine-tuning a plain HF BERT under a ticket."""

from __future__ import annotations

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState, GradientState
from bert_ticket import (
    META,
    RENAME,
    batch,
    bert_weights,
    kept_changed_fraction,
    pruned_nonzero,
    tiny_bert,
    uniter_ticket,
)

from lottery.api import keep_ticket, load_ticket
from lottery.tickets import ticket_bytes

MICRO_BATCHES = 8  # 4 optimizer steps at 2 micro-batches each


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """Accelerator state is a process-wide singleton; leave none behind for other tests."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def fine_tune(model, ticket=None) -> None:
    """The accelerate loop of the docs, with gradient accumulation; `ticket` kept when given."""
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    loader = torch.utils.data.DataLoader(
        [
            {k: v[i] for k, v in batch(seed=0, size=4 * MICRO_BATCHES).items()}
            for i in range(4 * MICRO_BATCHES)
        ],
        batch_size=4,
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if ticket is not None:
        keep_ticket(model, optimizer, ticket, rename=RENAME)
    model.train()
    for inputs in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(**inputs).loss)
            optimizer.step()
            optimizer.zero_grad()


def test_accelerate_loop_with_keep_ticket_keeps_exactly_the_tickets_zeros(tmp_path):
    model = tiny_bert()
    path = tmp_path / "s60.safetensors"
    path.write_bytes(ticket_bytes(uniter_ticket(model), META))
    ticket = load_ticket(path)
    before = bert_weights(model, ticket.masks)

    fine_tune(model, ticket)

    after = bert_weights(model, ticket.masks)
    assert all(torch.all(after[n][~m] == 0.0) for n, m in ticket.masks.masks.items())
    assert pruned_nonzero(model, ticket.masks) == 0
    assert kept_changed_fraction(before, after, ticket.masks) > 0.9


def test_accelerate_loop_without_keep_ticket_moves_the_zeros():
    """The control: the same loop on a model zeroed once moves the pruned weights."""
    model = tiny_bert()
    masks = uniter_ticket(model)
    with torch.no_grad():
        for name, weight in dict(model.named_parameters()).items():
            key = name.replace("bert.", "uniter.", 1)
            if key in masks.masks:
                weight.mul_(masks.masks[key])
    assert pruned_nonzero(model, masks) == 0

    fine_tune(model)

    assert pruned_nonzero(model, masks) > 0.9 * (masks.total - masks.kept)


def test_keep_ticket_hooks_the_torch_optimizer_inside_the_accelerated_one():
    model = tiny_bert()
    accelerator = Accelerator(cpu=True)
    inner = torch.optim.AdamW(model.parameters(), lr=1e-2)
    prepared_model, prepared_optimizer = accelerator.prepare(model, inner)

    handle = keep_ticket(prepared_model, prepared_optimizer, uniter_ticket(model), rename=RENAME)

    assert prepared_optimizer is not inner and handle.optimizer is inner
