"""UNITER with one downstream head: the backbone keeps the pre-training names, so tickets fit it as is.

The prunable scope (encoder matrices and pooler) only matches `uniter.*`, so a ticket cut from the
pre-training model has the same fingerprint here; heads stay dense, as in the paper. The heads follow
UNITER's fine-tuning code: a 2-layer MLP (Linear, GELU, LayerNorm, Linear) over the pooled output,
over both images' pooled outputs joined for NLVR2, and over each region's output for RefCOCO+.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.modeling import UniterModel, init_weights
from lottery.sparsity.scope import DEFAULT_SCOPE, model_fingerprint, prunable_parameters

# what each task's head reads and how many outputs it has (None: given by the answer vocabulary)
HEAD_LAYOUT: dict[str, tuple[str, int | None]] = {
    "vqa": ("pooled", None),
    "gqa": ("pooled", None),
    "snli-ve": ("pooled", 3),
    "vcr": ("pooled", 1),
    "retrieval": ("pooled", 1),
    "refcoco+": ("regions", 1),
    "nlvr2": ("pair", 2),
}


def mlp_head(in_dim: int, hidden: int, out_dim: int, eps: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.GELU(), nn.LayerNorm(hidden, eps=eps), nn.Linear(hidden, out_dim)
    )


class UniterForTask(nn.Module):
    """``forward(batch, adapter)`` hands itself to the task adapter, which calls `uniter` and `head`.

    As with pre-training, going through ``forward`` keeps every call inside the engine's module call,
    which ZeRO-3 needs to gather parameters.
    """

    def __init__(self, config: UniterConfig, task: str, num_outputs: int | None = None) -> None:
        super().__init__()
        if task not in HEAD_LAYOUT:
            raise ValueError(f"unknown task {task!r}; known: {', '.join(HEAD_LAYOUT)}")
        reads, fixed = HEAD_LAYOUT[task]
        outputs = fixed or num_outputs
        if not outputs:
            raise ValueError(f"task {task!r} needs num_outputs (the size of its answer vocabulary)")
        self.config, self.task = config, task
        self.uniter = UniterModel(config)
        hidden = config.hidden_size
        if reads == "regions":
            self.head = mlp_head(hidden, hidden, 1, config.layer_norm_eps)
        elif reads == "pair":
            self.head = mlp_head(2 * hidden, hidden, outputs, config.layer_norm_eps)
        else:
            self.head = mlp_head(hidden, 2 * hidden, outputs, config.layer_norm_eps)
        self.head.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, batch: dict[str, Tensor], adapter: Any) -> tuple[Tensor, dict[str, float]]:
        return adapter.loss(self, batch)

    def pooled(self, sequence: Tensor) -> Tensor:
        return self.uniter.pooler(sequence)

    def prunable(self, scope: Sequence[str] = DEFAULT_SCOPE) -> list[str]:
        return list(prunable_parameters(self, scope))

    def fingerprint(self, scope: Sequence[str] = DEFAULT_SCOPE) -> str:
        return model_fingerprint(self, scope)
