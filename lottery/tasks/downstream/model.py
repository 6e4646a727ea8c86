"""UNITER with one downstream head: the backbone keeps the pre-training names, so tickets fit it as is.

The prunable scope (encoder matrices and pooler) only matches `uniter.*`, so a ticket cut from the
pre-training model has the same fingerprint here; heads stay dense, as in the paper. The heads follow
UNITER's fine-tuning code: a 2-layer MLP (Linear, GELU, LayerNorm, Linear) over the pooled output,
over both images' pooled outputs joined for NLVR2, and over each region's output for RefCOCO+.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.finetuned_model import TaskModelCalls
from lottery.models.uniter.modeling import UniterModel, init_weights

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


def build_task_head(task: str, config: Any, num_outputs: int | None = None) -> nn.Sequential:
    """The (undrawn) head of `task`; one place, because fine-tuning's UniterForTask and the transformers
    class of a fine-tuned directory (models/uniter/finetuned_model.py) must build the very same modules.
    `config` is any family's (its `hidden_size`, and `layer_norm_eps` where it has one)."""
    if task not in HEAD_LAYOUT:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(HEAD_LAYOUT)}")
    reads, fixed = HEAD_LAYOUT[task]
    outputs = fixed or num_outputs
    if not outputs:
        raise ValueError(f"task {task!r} needs num_outputs (the size of its answer vocabulary)")
    hidden, eps = config.hidden_size, getattr(config, "layer_norm_eps", 1e-12)  # LXMERT's LayerNorms: 1e-12
    if reads == "regions":
        return mlp_head(hidden, hidden, 1, eps)
    if reads == "pair":
        return mlp_head(2 * hidden, hidden, outputs, eps)
    return mlp_head(hidden, 2 * hidden, outputs, eps)


class UniterForTask(TaskModelCalls, nn.Module):
    """``forward(batch, adapter)`` hands itself to the task adapter, which calls `uniter` and `head`.

    As with pre-training, going through ``forward`` keeps every call inside the engine's module call,
    which ZeRO-3 needs to gather parameters.
    """

    def __init__(self, config: UniterConfig, task: str, num_outputs: int | None = None) -> None:
        super().__init__()
        self.config, self.task = config, task
        self.uniter = UniterModel(config)
        self.head = build_task_head(task, config, num_outputs)  # after the backbone: a seed's draws as before
        self.head.apply(lambda m: init_weights(m, config.initializer_range))


def task_model(model_dir, task: str, num_outputs: int | None = None) -> UniterForTask:
    """A fresh UNITER task model shaped by the model directory's config (its weights are loaded after)."""
    from lottery.models.uniter import load_config

    return UniterForTask(load_config(model_dir), task, num_outputs=num_outputs)
