"""LXMERT (Tan & Bansal, 2019) as transformers' `LxmertForPreTraining`, fed from our packed batches.

The model keeps transformers' parameter names, so a local `save_pretrained` directory of
`unc-nlp/lxmert-base-uncased` loads as it is and our directories open with stock transformers
(`AutoModelForPreTraining`). What this class adds is the bridge from the project's batches, which are
packed in UNITER's single-stream layout (`lottery.tasks.packing`), to LXMERT's two streams: `encode`
unpacks the text and region masks from `attn_masks` and `gather_index`, hands LXMERT its 4-d
normalised boxes (the first four of our 7-d `[x1, y1, x2, y2, w, h, area]`), and returns the language
and vision outputs and the pooled [CLS]. Losses stay in the task code (`lottery.tasks.lxmert_pretrain`):
``forward(batch, task)`` hands the model to ``task.loss``, so every head is called as a module, which
ZeRO-3 needs to gather its parameters.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from transformers import LxmertForPreTraining

from lottery.sparsity.scope import ScopedPruning

# The prunable scope, as the issue and the paper define it for LXMERT: attention Q/K/V and output, FFN in
# and out of the language (`layer`), object-relationship (`r_layers`) and cross-modality (`x_layers`)
# encoders, and the pooler. Embeddings, the visual feature encoder, biases, LayerNorms and heads stay dense.
LXMERT_SCOPE: tuple[str, ...] = (
    r".*encoder\.(layer|r_layers)\.\d+\.attention\.self\.(query|key|value)\.weight",
    r".*encoder\.(layer|r_layers)\.\d+\.attention\.output\.dense\.weight",
    r".*encoder\.(layer|r_layers)\.\d+\.(intermediate|output)\.dense\.weight",
    r".*encoder\.x_layers\.\d+\.visual_attention\.att\.(query|key|value)\.weight",
    r".*encoder\.x_layers\.\d+\.visual_attention\.output\.dense\.weight",
    r".*encoder\.x_layers\.\d+\.(lang|visn)_self_att\.self\.(query|key|value)\.weight",
    r".*encoder\.x_layers\.\d+\.(lang|visn)_self_att\.output\.dense\.weight",
    r".*encoder\.x_layers\.\d+\.(lang|visn)_(inter|output)\.dense\.weight",
    r".*pooler\.dense\.weight",
)

BOX_DIMS = 4  # LXMERT's visual_pos: x1, y1, x2, y2 normalised by the image size


@dataclass(frozen=True)
class Streams:
    """LXMERT's outputs for a packed batch: words (B, Lt, H), regions (B, N, H), pooled [CLS] (B, H)."""

    language: Tensor
    vision: Tensor
    pooled: Tensor


def stream_masks(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
    """(text mask (B, Lt), region mask (B, N)) of a packed batch, as LXMERT's two attention masks.

    In the packed layout a text slot j < t_i reads its own position (gather index j, attention 1); a
    region slot reads past the padded text block (index >= Lt), so it never equals its own position
    below Lt. Sample i has t_i + n_i attended slots, which gives n_i.
    """
    max_text = batch["input_ids"].size(1)
    max_regions = batch["img_feat"].size(1)
    attended = batch["attn_masks"].bool()
    width = min(max_text, attended.size(1))
    positions = torch.arange(width, device=attended.device)
    text = torch.zeros(attended.size(0), max_text, dtype=torch.bool, device=attended.device)
    text[:, :width] = attended[:, :width] & (batch["gather_index"][:, :width] == positions)
    num_regions = attended.sum(1) - text.sum(1)
    slots = torch.arange(max_regions, device=attended.device)
    return text, slots.unsqueeze(0) < num_regions.unsqueeze(1)


def encode_streams(lxmert: nn.Module, batch: dict[str, Tensor]) -> Streams:
    """Run the backbone (`LxmertModel`) on a packed batch: its masks unpacked, its boxes cut to 4-d."""
    text_mask, region_mask = stream_masks(batch)
    output = lxmert(
        input_ids=batch["input_ids"],
        visual_feats=batch["img_feat"],
        visual_pos=batch["img_pos_feat"][..., :BOX_DIMS],
        attention_mask=text_mask.long(),
        visual_attention_mask=region_mask.long(),
        return_dict=True,
    )
    return Streams(output.language_output, output.vision_output, output.pooled_output)


class LxmertForLotteryPretraining(ScopedPruning, LxmertForPreTraining):
    """`LxmertForPreTraining` whose forward is ``task.loss(self, batch)``; its parts are called by the tasks.

    MLM: `cls.predictions(streams.language)`; matching: `cls.seq_relationship(streams.pooled)`; masked
    object prediction: `obj_predict_head(streams.vision)["feat" | "obj"]`, where `streams = encode(batch)`.
    The config carries the project's `name` (e.g. "lxmert-mini") beside transformers' fields.
    """

    PRUNABLE_SCOPE = LXMERT_SCOPE

    def forward(self, batch: dict[str, Tensor], task: Any) -> tuple[Tensor, dict[str, float]]:
        """``task.loss(self, batch) -> (loss, stats)``: the task, not the model, knows its loss."""
        return task.loss(self, batch)

    def encode(self, batch: dict[str, Tensor]) -> Streams:
        return encode_streams(self.lxmert, batch)
