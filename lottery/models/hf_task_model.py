"""A downstream task model of a family built on transformers' classes (LXMERT, ViLT): the backbone under
its pre-training name, so a ticket cut from the pre-training model has the same fingerprint here, and
one dense head (`tasks.downstream.model.build_task_head`), as in the paper.

The task adapters (`tasks/downstream/`) call `encode_packed(batch)` (the family's outputs in the
packed single-stream layout), `pooled(sequence)` and `head(...)`; ``forward(batch, adapter)`` hands the
model to the adapter, so every call happens inside the engine's module call, which ZeRO-3 needs.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lottery.models.uniter.modeling import init_weights
from lottery.sparsity.scope import ScopedPruning


class BackboneWithHead(ScopedPruning, nn.Module):
    """Set `base_model_prefix`, `BACKBONE` (the transformers class), `TASKS` and `LABEL` in a subclass."""

    base_model_prefix: str
    BACKBONE: type
    TASKS: tuple[str, ...]
    LABEL: str

    def __init__(self, config: Any, task: str, num_outputs: int | None = None) -> None:
        from lottery.tasks.downstream.model import build_task_head

        if task not in self.TASKS:
            raise ValueError(
                f"{self.LABEL} fine-tunes on {', '.join(self.TASKS)} (the paper's tasks), not {task!r}"
            )
        super().__init__()
        self.config, self.task = config, task
        setattr(self, self.base_model_prefix, self.BACKBONE(config))  # drawn before the head, as always
        self.head = build_task_head(task, config, num_outputs)
        self.head.apply(lambda m: init_weights(m, config.initializer_range))

    @property
    def backbone(self) -> nn.Module:
        return getattr(self, self.base_model_prefix)

    def forward(self, batch: dict[str, Tensor], adapter: Any) -> tuple[Tensor, dict[str, float]]:
        return adapter.loss(self, batch)

    def refuse_perturbations(self, batch: dict[str, Tensor]) -> None:
        if "txt_delta" in batch or "img_delta" in batch:
            raise ValueError(
                f"adversarial (VILLA) fine-tuning perturbs UNITER's embeddings; {self.LABEL} has no such path"
            )

    def pooled(self, sequence: Tensor) -> Tensor:
        return self.backbone.pooler(sequence)
