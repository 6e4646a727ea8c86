"""A `transformers.TrainerCallback` that trains a HF model under a ticket: pruned weights stay exactly 0.0.

When the events fire in transformers 5.x (``Trainer._inner_training_loop``): ``on_train_begin`` runs
once the optimizer exists and ``accelerator.prepare`` has run, with ``model`` (the unwrapped model,
whose names carry no ``module.`` prefix) and ``optimizer`` (accelerate's AcceleratedOptimizer) in its
kwargs. Every update is ``optimizer.step()``, then ``on_optimizer_step``, the scheduler,
``model.zero_grad()`` and ``on_step_end``. The handle's step post-hook on the torch optimizer inside
runs within ``optimizer.step()``, so the zeros are restored before any later event or a checkpoint
sees the weights; no per-step event is needed.
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from lottery.api.masking import TicketHandle, apply_ticket
from lottery.api.naming import TicketLike, describe
from lottery.tickets.format import TicketError


class TicketCallback(TrainerCallback):
    """Apply `ticket` when training begins and keep it; verify it when training ends.

    ``Trainer(..., callbacks=[TicketCallback(load_ticket("uniter-mini/pretrain/s60"), rename={"uniter.": "bert."})])``.
    A mismatch between the ticket and the model raises `TicketMismatch` before the first step. At the
    end of training a pruned weight that is not 0.0 raises `MaskViolation`. `handle` is the live
    `TicketHandle` (None before training).
    """

    def __init__(self, ticket: TicketLike, rename: Mapping[str, str] | None = None) -> None:
        self.ticket = ticket
        self.rename = dict(rename or {})
        self.handle: TicketHandle | None = None

    def on_train_begin(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        model: nn.Module | None = None,
        optimizer=None,
        **kwargs,
    ) -> None:
        if args.deepspeed or args.fsdp:
            engine = "DeepSpeed" if args.deepspeed else "FSDP"
            raise TicketError(
                f"{describe(self.ticket)}: TicketCallback keeps a ticket on a plain torch model; under {engine} "
                "the optimizer updates sharded or fp32 copies it cannot reach. For DeepSpeed call "
                "deepspeed.initialize yourself and use lottery.api.keep_ticket_on_engine"
            )
        if model is None or optimizer is None:
            raise TicketError(
                f"{describe(self.ticket)}: on_train_begin got no model or optimizer from the Trainer"
            )
        if self.handle is not None:  # a second train() call (or a batch-size retry) builds a new optimizer
            self.handle.remove()
        self.handle = apply_ticket(model, self.ticket, self.rename, optimizer=optimizer)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs
    ) -> None:
        if self.handle is None:
            return
        self.handle.remove()
        self.handle.verify()
