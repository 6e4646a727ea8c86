"""LXMERT with one downstream head, read by the same task adapters as UNITER (`tasks/downstream/`).

LXMERT's two output streams are packed back into the single-stream layout the batch came in
(`gather_index`: the words of a sample, then its regions), so an adapter that reads the pooled
output, a pair of them (NLVR2) or each region's output works for LXMERT as it is. `pooled` is
LXMERT's own pooler on the [CLS] word (`lottery.models.hf_task_model`).
"""

from __future__ import annotations

import torch
from torch import Tensor
from transformers.models.lxmert.modeling_lxmert import LxmertModel

from lottery.models.families import FAMILIES
from lottery.models.hf_task_model import BackboneWithHead
from lottery.models.lxmert.modeling import LXMERT_SCOPE, encode_streams

# the downstream tasks the paper fine-tunes LXMERT on
LXMERT_TASKS = FAMILIES["lxmert"].finetune_tasks


def repack(language: Tensor, vision: Tensor, gather_index: Tensor) -> Tensor:
    """(B, L, H) in the packed layout from the words (B, Lt, H) and regions (B, N, H)."""
    joined = torch.cat([language, vision], dim=1)
    return joined.gather(1, gather_index.unsqueeze(-1).expand(-1, -1, joined.size(-1)))


class LxmertForTask(BackboneWithHead):
    """``forward(batch, adapter)`` hands itself to the task adapter, as UNITER's task model does."""

    base_model_prefix = "lxmert"
    BACKBONE = LxmertModel
    TASKS = LXMERT_TASKS
    LABEL = "LXMERT"
    PRUNABLE_SCOPE = LXMERT_SCOPE

    def encode_packed(self, batch: dict[str, Tensor]) -> Tensor:
        self.refuse_perturbations(batch)
        streams = encode_streams(self.lxmert, batch)
        return repack(streams.language, streams.vision, batch["gather_index"])


def task_model(model_dir, task: str, num_outputs: int | None = None) -> LxmertForTask:
    """A fresh LXMERT task model shaped by the model directory's config (its weights are loaded after)."""
    from lottery.models.lxmert.checkpoint import load_config

    return LxmertForTask(load_config(model_dir), task, num_outputs=num_outputs)
