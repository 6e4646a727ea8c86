"""Pack text tokens and image regions into one sequence per sample, without padding between them.

UNITER's layout: the text embeddings (B, Lt, H) and region embeddings (B, N, H) are concatenated and
then gathered so that sample i reads ``[its t_i tokens][its n_i regions][padding]``. The gather index
for a region slot points past the padded text block (``Lt + j``), which is what makes "no padding
between them" possible with ordinary dense tensors.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence


def gather_index(txt_lens: list[int], num_regions: list[int], max_txt_len: int) -> Tensor:
    """(B, L) indices into ``cat([text (Lt), regions (N)])`` with L = max(t_i + n_i)."""
    out_len = max(t + n for t, n in zip(txt_lens, num_regions, strict=True))
    index = torch.arange(out_len, dtype=torch.long).unsqueeze(0).repeat(len(txt_lens), 1)
    for i, (t, n) in enumerate(zip(txt_lens, num_regions, strict=True)):
        index[i, t : t + n] = torch.arange(max_txt_len, max_txt_len + n)
    return index


def pack(input_ids: list[Tensor], feats: list[Tensor], boxes: list[Tensor]) -> dict[str, Tensor]:
    """Model inputs for a batch: padded text and regions, the attention mask and the gather index.

    Returns ``input_ids`` (B, Lt), ``position_ids`` (1, Lt), ``img_feat`` (B, N, D),
    ``img_pos_feat`` (B, N, 7), ``attn_masks`` (B, L) and ``gather_index`` (B, L).
    """
    txt_lens = [len(ids) for ids in input_ids]
    num_regions = [len(f) for f in feats]
    padded_ids = pad_sequence(input_ids, batch_first=True, padding_value=0)
    max_txt_len = padded_ids.size(1)
    out_len = max(t + n for t, n in zip(txt_lens, num_regions, strict=True))
    attn_masks = torch.zeros(len(input_ids), out_len, dtype=torch.long)
    for i, (t, n) in enumerate(zip(txt_lens, num_regions, strict=True)):
        attn_masks[i, : t + n] = 1
    return {
        "input_ids": padded_ids,
        "position_ids": torch.arange(max_txt_len, dtype=torch.long).unsqueeze(0),
        "img_feat": pad_sequence(feats, batch_first=True, padding_value=0.0),
        "img_pos_feat": pad_sequence(boxes, batch_first=True, padding_value=0.0),
        "attn_masks": attn_masks,
        "gather_index": gather_index(txt_lens, num_regions, max_txt_len),
    }


def region_positions(txt_lens: list[int], region_masks: list[Tensor], out_len: int) -> Tensor:
    """(B, L) bool: True at the packed positions of the masked regions (where MRM reads its outputs)."""
    target = torch.zeros(len(txt_lens), out_len, dtype=torch.bool)
    for i, (t, mask) in enumerate(zip(txt_lens, region_masks, strict=True)):
        target[i, t : t + len(mask)] = mask
    return target


def unpack_outputs(
    sequence: Tensor, txt_lens: Tensor, num_regions: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Split packed outputs (B, L, H) into words (B, Lt, H), regions (B, N, H) and their validity masks."""
    positions = torch.arange(sequence.size(1), device=sequence.device)
    max_txt, max_regions = int(txt_lens.max()), int(num_regions.max())
    words = sequence[:, :max_txt]
    word_mask = positions[:max_txt].unsqueeze(0) < txt_lens.unsqueeze(1)
    slots = positions[:max_regions].unsqueeze(0)
    region_mask = slots < num_regions.unsqueeze(1)
    index = (txt_lens.unsqueeze(1) + slots).clamp(max=sequence.size(1) - 1)
    regions = sequence.gather(1, index.unsqueeze(2).expand(-1, -1, sequence.size(2)))
    return words, regions, word_mask, region_mask
