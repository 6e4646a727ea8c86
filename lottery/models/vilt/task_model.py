"""ViLT with one downstream head, read by the same task adapters as UNITER (`tasks/downstream/`).

ViLT's word and patch outputs are packed back into the single-stream layout the batch came in
(`lxmert.task_model.repack`), so the VQA adapter (pooled output) and NLVR2's (the pooled outputs of
the statement with each image, joined: what transformers' `ViltForImagesAndTextClassification` does
too) work for ViLT as they are (`lottery.models.hf_task_model`).
"""

from __future__ import annotations

from torch import Tensor
from transformers import ViltModel

from lottery.models.families import FAMILIES
from lottery.models.hf_task_model import BackboneWithHead
from lottery.models.lxmert.task_model import repack
from lottery.models.vilt.modeling import VILT_SCOPE, encode_joint, patch_grid

# the downstream tasks the paper fine-tunes ViLT on
VILT_TASKS = FAMILIES["vilt"].finetune_tasks


class ViltForTask(BackboneWithHead):
    """``forward(batch, adapter)`` hands itself to the task adapter, as UNITER's task model does."""

    base_model_prefix = "vilt"
    BACKBONE = ViltModel
    TASKS = VILT_TASKS
    LABEL = "ViLT"
    PRUNABLE_SCOPE = VILT_SCOPE

    def encode_packed(self, batch: dict[str, Tensor]) -> Tensor:
        self.refuse_perturbations(batch)
        streams = encode_joint(self.vilt, batch, patch_grid(self.config))
        return repack(streams.language, streams.vision, batch["gather_index"])


def task_model(model_dir, task: str, num_outputs: int | None = None) -> ViltForTask:
    """A fresh ViLT task model shaped by the model directory's config (its weights are loaded after)."""
    from lottery.models.vilt.checkpoint import load_config

    return ViltForTask(load_config(model_dir), task, num_outputs=num_outputs)
