"""BERT/UNITER masking of text tokens and image regions, driven by an explicit generator.

Every random choice takes a ``torch.Generator`` so that a step's batch is a pure function of
(seed, rank, step): a resumed run then draws exactly the masks an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

IGNORE = -1


@dataclass(frozen=True)
class TextVocab:
    """The token ids masking needs, read once from the model's tokenizer."""

    size: int
    pad_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    first_word_id: int = 999  # BERT WordPiece vocabularies keep [unused*] and specials below this id

    @classmethod
    def from_tokenizer(cls, tokenizer) -> TextVocab:
        return cls(
            size=len(tokenizer),
            pad_id=tokenizer.pad_token_id,
            cls_id=tokenizer.cls_token_id,
            sep_id=tokenizer.sep_token_id,
            mask_id=tokenizer.mask_token_id,
            first_word_id=min(999, len(tokenizer) - 1),
        )


def mask_tokens(
    ids: Tensor, prob: float, vocab: TextVocab, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """BERT's 80/10/10 rule on the tokens between [CLS] and [SEP]; at least one token is masked.

    Returns (masked ids, labels) where labels hold the original id at masked positions and -1 elsewhere.
    """
    inner = torch.arange(len(ids))
    candidates = (inner > 0) & (inner < len(ids) - 1)
    chosen = (torch.rand(len(ids), generator=generator) < prob) & candidates
    if not chosen.any():
        positions = candidates.nonzero().flatten()
        pick = positions[torch.randint(len(positions), (1,), generator=generator)]
        chosen[pick] = True
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE))
    roll = torch.rand(len(ids), generator=generator)
    random_ids = torch.randint(vocab.first_word_id, vocab.size, (len(ids),), generator=generator)
    masked = ids.clone()
    masked[chosen & (roll < 0.8)] = vocab.mask_id
    swap = chosen & (roll >= 0.8) & (roll < 0.9)
    masked[swap] = random_ids[swap]
    return masked, labels


def mask_regions(num_regions: int, prob: float, generator: torch.Generator) -> Tensor:
    """(N,) bool: which regions MRM hides; at least one, never all of a multi-region image."""
    chosen = torch.rand(num_regions, generator=generator) < prob
    if not chosen.any():
        chosen[torch.randint(num_regions, (1,), generator=generator)] = True
    if chosen.all() and num_regions > 1:
        chosen[torch.randint(num_regions, (1,), generator=generator)] = False
    return chosen
