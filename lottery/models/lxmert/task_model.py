"""LXMERT with one downstream head, read by the same task adapters as UNITER (`tasks/downstream/`).

The adapters call `encode_packed(batch)`, `pooled(sequence)` and `head(...)`. LXMERT's two output
streams are packed back into the single-stream layout the batch came in (`gather_index`: the words of
a sample, then its regions), so an adapter that reads the pooled output, a pair of them (NLVR2) or
each region's output works for LXMERT as it is. `pooled` is LXMERT's own pooler on the [CLS] word.
The backbone keeps the pre-training names (`lxmert.*`), so a ticket cut from the pre-training model
has the same fingerprint here; heads stay dense, as in the paper.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LxmertConfig
from transformers.models.lxmert.modeling_lxmert import LxmertModel

from lottery.models.families import FAMILIES
from lottery.models.lxmert.modeling import LXMERT_SCOPE, encode_streams
from lottery.models.uniter.modeling import init_weights
from lottery.sparsity.scope import model_fingerprint, prunable_parameters

# the downstream tasks the paper fine-tunes LXMERT on
LXMERT_TASKS = FAMILIES["lxmert"].finetune_tasks


def repack(language: Tensor, vision: Tensor, gather_index: Tensor) -> Tensor:
    """(B, L, H) in the packed layout from the words (B, Lt, H) and regions (B, N, H)."""
    joined = torch.cat([language, vision], dim=1)
    return joined.gather(1, gather_index.unsqueeze(-1).expand(-1, -1, joined.size(-1)))


class LxmertForTask(nn.Module):
    """``forward(batch, adapter)`` hands itself to the task adapter, as UNITER's task model does."""

    base_model_prefix = "lxmert"

    def __init__(self, config: LxmertConfig, task: str, num_outputs: int | None = None) -> None:
        from lottery.tasks.downstream.model import build_task_head

        if task not in LXMERT_TASKS:
            raise ValueError(
                f"LXMERT fine-tunes on {', '.join(LXMERT_TASKS)} (the paper's tasks), not {task!r}"
            )
        super().__init__()
        self.config, self.task = config, task
        self.lxmert = LxmertModel(config)
        self.head = build_task_head(task, config, num_outputs)
        self.head.apply(lambda m: init_weights(m, config.initializer_range))

    def forward(self, batch: dict[str, Tensor], adapter: Any) -> tuple[Tensor, dict[str, float]]:
        return adapter.loss(self, batch)

    def encode_packed(self, batch: dict[str, Tensor]) -> Tensor:
        if "txt_delta" in batch or "img_delta" in batch:
            raise ValueError(
                "adversarial (VILLA) fine-tuning perturbs UNITER's embeddings; LXMERT has no such path"
            )
        streams = encode_streams(self.lxmert, batch)
        return repack(streams.language, streams.vision, batch["gather_index"])

    def pooled(self, sequence: Tensor) -> Tensor:
        return self.lxmert.pooler(sequence)

    def prunable(self, scope: Sequence[str] = LXMERT_SCOPE) -> list[str]:
        return list(prunable_parameters(self, scope))

    def fingerprint(self, scope: Sequence[str] = LXMERT_SCOPE) -> str:
        return model_fingerprint(self, scope)
