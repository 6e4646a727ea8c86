"""The model of a fine-tuned directory as transformers builds it: the UNITER backbone and one task head.

`from_finetuned` gives the project's `UniterForTask` (lottery/tasks/downstream/model.py), which fine-tuning
trains; `AutoModelForSequenceClassification.from_pretrained(dir)` gives this class, read from the same
config.json (its `task` and `num_outputs`) and weights. The two have the same modules under the same names
(`uniter.*`, `head.*`), the same forward contract (the task adapter calls `uniter`, `pooled` and `head`),
and, for one seed, the same initial weights.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from lottery.models.uniter.hf_config import UniterHFConfig
from lottery.models.uniter.modeling import UniterModel, UniterPreTrainedModel
from lottery.sparsity.scope import ScopedPruning


class TaskModelCalls(ScopedPruning):
    """What the task adapters call on a model with a task head (`uniter`, `pooled`, `head`) and what
    tickets ask of it; shared by UniterForTask (fine-tuning's) and UniterWithTaskHead (transformers')."""

    uniter: UniterModel

    def forward(self, batch: dict[str, Tensor], adapter: Any) -> tuple[Tensor, dict[str, float]]:
        return adapter.loss(self, batch)

    def encode_packed(self, batch: dict[str, Tensor]) -> Tensor:
        """The backbone's packed outputs, with adversarial training's embedding perturbations if set."""
        from lottery.tasks.downstream.common import MODEL_INPUTS, PERTURBATIONS

        return self.uniter(**{k: batch[k] for k in MODEL_INPUTS + PERTURBATIONS if k in batch})

    def pooled(self, sequence: Tensor) -> Tensor:
        return self.uniter.pooler(sequence)


class UniterWithTaskHead(TaskModelCalls, UniterPreTrainedModel):
    """``forward(batch, adapter)`` hands itself to the task adapter, as `UniterForTask` does."""

    def __init__(self, config: UniterHFConfig) -> None:
        # lazily: lottery.tasks.downstream.model imports this package
        from lottery.tasks.downstream.model import HEAD_LAYOUT, build_task_head

        if config.task not in HEAD_LAYOUT:
            raise ValueError(
                f"UniterWithTaskHead: config task {config.task!r} is not a downstream task ({', '.join(HEAD_LAYOUT)}); "
                "a fine-tuned directory names it in config.json, a pre-training one has none (use AutoModel)"
            )
        super().__init__(config)
        self.task = config.task
        self.uniter = UniterModel(config)
        # UniterForTask's head (tests/unit/test_uniter_automodel.py holds the two to the same weights)
        self.head = build_task_head(config.task, config.to_uniter_config(), config.num_outputs)
        self.post_init()
