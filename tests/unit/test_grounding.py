"""The theta0 criteria on hand-made models: what "not grounded" looks like, and the rules themselves."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn
from transformers import AutoTokenizer

from lottery.data.captions import COLOUR_WORDS
from lottery.evaluation.grounding import criteria, grounded_mlm, region_modelling
from lottery.models.uniter.from_bert import resolve_bert_dir

TOKENIZER = AutoTokenizer.from_pretrained(str(resolve_bert_dir("minilm")))
COLOUR_IDS = TOKENIZER.convert_tokens_to_ids(list(COLOUR_WORDS))


class ImageBlindModel(nn.Module):
    """Predicts the same colour word at every position whatever the image: the text-only prior."""

    def __init__(self, colour: str = "red") -> None:
        super().__init__()
        self.colour_id = TOKENIZER.convert_tokens_to_ids(colour)
        self.cls = nn.Identity()

    def uniter(self, input_ids, position_ids, img_feat, img_pos_feat, attn_masks, **_):
        hidden = torch.zeros(*attn_masks.shape, len(TOKENIZER))
        hidden[..., self.colour_id] = 1.0
        return hidden


def _examples(count: int, seed: int = 0) -> list[SimpleNamespace]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for i in range(count):
        colour = COLOUR_WORDS[i % len(COLOUR_WORDS)]
        ids = TOKENIZER(f"a {colour} circle is left of the blue square")["input_ids"]
        out.append(
            SimpleNamespace(
                input_ids=ids,
                feat=torch.randn(3, 8, generator=gen),
                box=torch.rand(3, 7, generator=gen),
                soft=torch.softmax(torch.randn(3, 4, generator=gen), -1),
            )
        )
    return out


def test_a_model_that_ignores_the_image_scores_the_same_with_and_without_it_near_chance():
    examples = _examples(16)
    metrics = grounded_mlm(ImageBlindModel(), [examples[:8], examples[8:]], TOKENIZER)
    assert metrics["mlm_colour_image_acc"] == metrics["mlm_colour_text_acc"]
    # every caption has its own colour plus "blue": "red" is right for 2 of the 32 masked colour words
    assert metrics["mlm_colour_image_acc"] == pytest.approx(2 / 32)
    assert metrics["mlm_shape_image_acc"] == 0.0
    rows = {r.name: r for r in criteria({**_passing(), **metrics})}
    assert not rows["grounded MLM: colour"].passed


class MeanRegionModel(nn.Module):
    """Predicts the mean feature and a uniform class distribution for every region."""

    def __init__(self, mean: torch.Tensor, classes: int) -> None:
        super().__init__()
        self.mean, self.classes = mean, classes

    def uniter(self, input_ids, position_ids, img_feat, img_pos_feat, attn_masks, **_):
        return torch.zeros(*attn_masks.shape, 1)

    def feat_regress(self, hidden):
        return self.mean.expand(hidden.size(0), -1)

    def region_classifier(self, hidden):
        return torch.zeros(hidden.size(0), self.classes)


def test_predicting_the_mean_feature_does_not_beat_the_mean_feature_baseline():
    examples = _examples(16)
    mean = torch.cat([ex.feat for ex in examples]).mean(0)
    metrics = region_modelling(MeanRegionModel(mean, 4), [examples[:8], examples[8:]])
    assert metrics["mrfr_loss"] == pytest.approx(metrics["mrfr_mean_loss"])
    assert metrics["mrckl_loss"] >= metrics["mrckl_prior_loss"]  # uniform is no better than the prior
    rows = {r.name: r for r in criteria({**_passing(), **metrics})}
    assert not rows["MRFR loss"].passed and not rows["MRC-kl loss"].passed


def _passing() -> dict[str, float]:
    metrics = {"itm_acc": 0.95, "wra_pos": 0.3, "wra_neg": 0.5, "mrfr_loss": 0.5, "mrfr_mean_loss": 1.0}
    metrics.update({"mrckl_loss": 0.1, "mrckl_prior_loss": 0.9})
    for kind in ("colour", "shape", "relation"):
        metrics.update({f"mlm_{kind}_image_acc": 0.9, f"mlm_{kind}_text_acc": 0.2})
    return metrics


def test_criteria_pass_on_a_grounded_model_and_each_rule_can_fail():
    assert all(r.passed for r in criteria(_passing()))
    for key, bad in (("itm_acc", 0.89), ("mlm_relation_image_acc", 0.79), ("wra_pos", 0.6)):
        failed = [r.name for r in criteria({**_passing(), key: bad}) if not r.passed]
        assert len(failed) == 1, (key, failed)
