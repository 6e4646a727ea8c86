"""ViLT (Kim et al., 2021) as transformers' ViLT classes, fed from our packed batches.

ViLT reads image patches, not detector regions. Our batches carry a patch model's image as its patch
grid in the region slots (`lottery.data.patches`), so every collate step and task adapter works as for
the region families; `encode` folds the patches back into pixels and runs the stock `ViltModel` on
them, with the text mask unpacked from the packed layout as LXMERT's is. ViLT's sequence is
`[words, image [CLS], patches]`; the pooled output is its pooler on the word [CLS].

`ViltForLotteryPretraining` is transformers' `ViltForMaskedLM` (so a local `save_pretrained` directory of
`dandelin/vilt-b32-mlm` loads with its names) plus ViLT's image-text matching head `itm_score`, which
that converted checkpoint does not ship. ``forward(batch, task)`` hands the model to ``task.loss``, so
every head is called as a module, which ZeRO-3 needs to gather its parameters.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from transformers import ViltConfig, ViltForMaskedLM

from lottery.data.patches import PatchGrid
from lottery.models.lxmert.modeling import Streams, stream_masks
from lottery.sparsity.scope import ScopedPruning

# The prunable scope: attention Q/K/V and output, FFN in and out of every encoder layer, and the
# pooler, as for the other families. Embeddings (words, patches, positions), LayerNorms, biases and
# heads stay dense.
VILT_SCOPE: tuple[str, ...] = (
    r".*encoder\.layer\.\d+\.attention\.attention\.(query|key|value)\.weight",
    r".*encoder\.layer\.\d+\.attention\.output\.dense\.weight",
    r".*encoder\.layer\.\d+\.(intermediate|output)\.dense\.weight",
    r".*pooler\.dense\.weight",
)


def patch_grid(config: ViltConfig) -> PatchGrid:
    """How this model cuts an image: the grid the data pipeline must deliver."""
    return PatchGrid(int(config.image_size), int(config.patch_size))


def encode_joint(vilt: nn.Module, batch: dict[str, Tensor], grid: PatchGrid) -> Streams:
    """Run `ViltModel` on a packed batch: words (B, Lt, H), patches (B, side², H), pooled [CLS] (B, H)."""
    text_mask, _ = stream_masks(batch)
    pixels = grid.to_pixels(batch["img_feat"][:, : grid.side**2])
    output = vilt(
        input_ids=batch["input_ids"],
        attention_mask=text_mask.long(),
        token_type_ids=torch.zeros_like(batch["input_ids"]),
        pixel_values=pixels,
        pixel_mask=torch.ones(
            pixels.size(0), grid.image_size, grid.image_size, dtype=torch.long, device=pixels.device
        ),
        return_dict=True,
    )
    words = batch["input_ids"].size(1)
    sequence = output.last_hidden_state
    return Streams(sequence[:, :words], sequence[:, words + 1 :], output.pooler_output)


class ViltITMHead(nn.Module):
    """ViLT's image-text matching head: one linear layer over the pooled output, two classes."""

    def __init__(self, config: ViltConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(config.hidden_size, 2)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.fc(pooled)


class ViltForLotteryPretraining(ScopedPruning, ViltForMaskedLM):
    """`ViltForMaskedLM` + `itm_score`, whose forward is ``task.loss(self, batch)``.

    MLM: `mlm_score(streams.language)`; matching: `itm_score(streams.pooled)`, where
    `streams = encode(batch)`. The config carries the project's `name` (e.g. "vilt-mini").
    """

    PRUNABLE_SCOPE = VILT_SCOPE

    def __init__(self, config: ViltConfig) -> None:
        super().__init__(config)
        self.itm_score = ViltITMHead(config)
        self.post_init()

    def forward(self, batch: dict[str, Tensor], task: Any) -> tuple[Tensor, dict[str, float]]:
        """``task.loss(self, batch) -> (loss, stats)``: the task, not the model, knows its loss."""
        return task.loss(self, batch)

    def encode(self, batch: dict[str, Tensor]) -> Streams:
        return encode_joint(self.vilt, batch, patch_grid(self.config))
