"""TicketCallback: a HF Trainer fine-tuning a plain BertForSequenceClassification under a 60% ticket."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
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
from transformers import Trainer, TrainingArguments

from lottery.api import TicketCallback, TicketMismatch, apply_ticket, load_ticket
from lottery.tickets import TicketStore

STEPS = 4


class Examples(torch.utils.data.Dataset):
    """32 labelled token sequences, one dict per example as the default collator wants them."""

    def __init__(self) -> None:
        whole = batch(seed=0, size=32)
        self.rows = [{k: v[i] for k, v in whole.items()} for i in range(32)]

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.rows[index]


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """The Trainer's Accelerator is a process-wide singleton; leave none behind for other tests."""
    yield
    AcceleratorState._reset_state(reset_partial_state=True)
    GradientState._reset_state()


def trainer(model, out: Path, callbacks=()) -> Trainer:
    args = TrainingArguments(
        output_dir=str(out),
        use_cpu=True,
        report_to=[],
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        max_steps=STEPS,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        learning_rate=1e-2,
        weight_decay=0.1,
        warmup_steps=0,
        seed=0,
    )
    return Trainer(model=model, args=args, train_dataset=Examples(), callbacks=list(callbacks))


def stored_ticket(tmp_path: Path, model) -> tuple[str, TicketStore]:
    store = TicketStore(tmp_path / "store")
    return store.put(uniter_ticket(model), META, alias="uniter-tiny/s60"), store


def test_trainer_with_the_callback_keeps_exactly_the_tickets_zeros(tmp_path):
    model = tiny_bert()
    _, store = stored_ticket(tmp_path, model)
    ticket = load_ticket("uniter-tiny/s60", store=store)
    masks = ticket.masks
    before = bert_weights(model, masks)
    callback = TicketCallback(ticket, rename=RENAME)

    run = trainer(model, tmp_path / "out", [callback])
    run.train()

    assert run.state.global_step == STEPS
    assert callback.handle is not None and callback.handle.sparsity == pytest.approx(0.6, abs=1e-4)
    after = bert_weights(model, masks)
    assert all(torch.all(after[n][~m] == 0.0) for n, m in masks.masks.items())
    assert pruned_nonzero(model, masks) == 0
    assert kept_changed_fraction(before, after, masks) > 0.9


def test_trainer_without_the_callback_moves_the_zeros(tmp_path):
    """The control: zeroed once before training, AdamW with weight decay revives the pruned weights."""
    model = tiny_bert()
    masks = uniter_ticket(model)
    apply_ticket(model, masks, rename=RENAME).remove()
    assert pruned_nonzero(model, masks) == 0

    trainer(model, tmp_path / "out").train()

    assert pruned_nonzero(model, masks) > 0.9 * (masks.total - masks.kept)


def test_trainer_with_a_wrong_rename_stops_before_the_first_step(tmp_path):
    model = tiny_bert()
    ticket_id, store = stored_ticket(tmp_path, model)
    callback = TicketCallback(load_ticket(ticket_id[:8], store=store), rename={"uniter.": "encoder."})
    run = trainer(model, tmp_path / "out", [callback])

    with pytest.raises(TicketMismatch, match=r"12 of 12 masked parameters .*encoder\.encoder\.layer\.0"):
        run.train()
    assert run.state.global_step == 0
