"""Has a pre-trained model learned the shapes world? The theta0 criteria, measured on the val split.

Each criterion is a number beside a baseline that shows what "not learned" looks like:
- ITM accuracy on balanced matched / mismatched pairs (chance 0.50);
- image-grounded MLM: every colour, shape or relation word of a caption masked at once, predicted
  with the image and with the image removed (text only); the caption alone cannot tell which colour
  or which relation, so the text-only accuracy stays near chance and the gap is what the image gives;
- MRFR loss beside predicting the mean region feature, MRC-kl beside predicting the class prior;
- WRA: optimal-transport cost of matched pairs beside mismatched ones.
Runs in one process (no engine): the model is small and the numbers must not depend on the world size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lottery.data.captions import COLOUR_WORDS, RELATION_WORDS, SHAPE_WORDS
from lottery.evaluation.ties import expected_correct
from lottery.tasks.masking import mask_regions
from lottery.tasks.packing import pack, region_positions, unpack_outputs
from lottery.tasks.wra import ot_distance

WORD_KINDS: dict[str, tuple[str, ...]] = {
    "colour": COLOUR_WORDS,
    "shape": SHAPE_WORDS,
    "relation": RELATION_WORDS,
}
ITM_MIN = 0.90
GROUNDED_MIN = 0.80


@dataclass(frozen=True)
class Criterion:
    name: str
    value: float
    baseline: float
    baseline_name: str
    passed: bool
    rule: str
    # the best any model can score on these samples (a perfect perceiver's, `evaluation.ceiling`);
    # grounded MLM only, None elsewhere and in criteria recorded before it was measured
    ceiling: float | None = None


def _ids(example) -> Tensor:
    return torch.as_tensor(example.input_ids, dtype=torch.long)


def _kind_ids(tokenizer) -> dict[str, set[int]]:
    return {kind: set(tokenizer.convert_tokens_to_ids(list(words))) for kind, words in WORD_KINDS.items()}


@torch.no_grad()
def grounded_mlm(model: nn.Module, batches: Sequence[list], tokenizer) -> dict[str, float]:
    """Accuracy on masked colour/shape/relation words, with the image and text only."""
    mask_id = tokenizer.mask_token_id
    correct = {f"{k}_{v}": 0 for k in WORD_KINDS for v in ("image", "text")}
    counts = dict.fromkeys(WORD_KINDS, 0)
    kinds = _kind_ids(tokenizer)
    for batch in batches:
        for kind, ids in kinds.items():
            chosen = [ex for ex in batch if any(t in ids for t in ex.input_ids)]
            if not chosen:
                continue
            originals = [_ids(ex) for ex in chosen]
            targets = [torch.tensor([t in ids for t in o.tolist()]) for o in originals]
            masked = [o.masked_fill(t, mask_id) for o, t in zip(originals, targets, strict=True)]
            packed = pack(masked, [ex.feat for ex in chosen], [ex.box for ex in chosen])
            with_image = _encode(model, packed)[:, : packed["input_ids"].size(1)]
            text_ids = packed["input_ids"]
            text_mask = (
                torch.arange(text_ids.size(1)) < torch.tensor([len(m) for m in masked]).unsqueeze(1)
            ).long()
            text_only = model.uniter(text_ids, packed["position_ids"], None, None, text_mask)
            selected = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True)
            labels = torch.nn.utils.rnn.pad_sequence(originals, batch_first=True)[selected]
            for variant, hidden in (("image", with_image), ("text", text_only)):
                correct[f"{kind}_{variant}"] += expected_correct(model.cls(hidden[selected]), labels)
            counts[kind] += int(selected.sum())
    return {f"mlm_{key}_acc": correct[key] / max(1, counts[key.split("_")[0]]) for key in correct}


def _encode(model: nn.Module, packed: dict[str, Tensor]) -> Tensor:
    return model.uniter(**packed)


@torch.no_grad()
def itm_and_wra(model: nn.Module, batches: Sequence[list]) -> dict[str, float]:
    """ITM accuracy over every example with its own image and with the next example's, and WRA costs."""
    correct, total = 0.0, 0
    distances: dict[bool, list[Tensor]] = {True: [], False: []}
    for batch in batches:
        if len(batch) < 2:
            continue
        for matched in (True, False):
            images = batch if matched else batch[1:] + batch[:1]
            packed = pack([_ids(ex) for ex in batch], [ex.feat for ex in images], [ex.box for ex in images])
            sequence = _encode(model, packed)
            logits = model.itm_output(model.uniter.pooler(sequence))
            correct += expected_correct(logits, torch.full((len(batch),), int(matched)))
            total += len(batch)
            txt_lens = torch.tensor([len(ex.input_ids) for ex in batch])
            num_regions = torch.tensor([len(ex.feat) for ex in images])
            distances[matched].append(ot_distance(*unpack_outputs(sequence, txt_lens, num_regions)))
    return {
        "itm_acc": correct / max(1, total),
        "wra_pos": float(torch.cat(distances[True]).mean()),
        "wra_neg": float(torch.cat(distances[False]).mean()),
    }


@torch.no_grad()
def region_modelling(model: nn.Module, batches: Sequence[list], seed: int = 0) -> dict[str, float]:
    """MRFR and MRC-kl losses on 15% masked regions, beside the mean-feature and class-prior predictors."""
    examples = [ex for batch in batches for ex in batch]
    mean_feat = torch.cat([ex.feat for ex in examples]).mean(0)
    prior = torch.cat([ex.soft for ex in examples]).mean(0)
    sums = {"mrfr": 0.0, "mrfr_mean": 0.0, "mrckl": 0.0, "mrckl_prior": 0.0}
    count = 0
    generator = torch.Generator().manual_seed(seed)
    for batch in batches:
        masks = [mask_regions(len(ex.feat), 0.15, generator) for ex in batch]
        feats = [ex.feat.masked_fill(m.unsqueeze(-1), 0.0) for ex, m in zip(batch, masks, strict=True)]
        packed = pack([_ids(ex) for ex in batch], feats, [ex.box for ex in batch])
        packed["img_masks"] = torch.nn.utils.rnn.pad_sequence(masks, batch_first=True)
        hidden = _encode(model, packed)[
            region_positions([len(ex.input_ids) for ex in batch], masks, packed["attn_masks"].size(1))
        ]
        targets = torch.cat([ex.feat[m] for ex, m in zip(batch, masks, strict=True)])
        soft = torch.cat([ex.soft[m] for ex, m in zip(batch, masks, strict=True)])
        n = len(targets)
        sums["mrfr"] += float(F.mse_loss(model.feat_regress(hidden), targets)) * n
        sums["mrfr_mean"] += float(F.mse_loss(mean_feat.expand_as(targets), targets)) * n
        log_probs = F.log_softmax(model.region_classifier(hidden), -1)
        sums["mrckl"] += float(F.kl_div(log_probs, soft, reduction="batchmean")) * n
        log_prior = prior.clamp(min=1e-12).log().expand_as(soft)
        sums["mrckl_prior"] += float(F.kl_div(log_prior, soft, reduction="batchmean")) * n
        count += n
    return {f"{k}_loss": v / count for k, v in sums.items()}


def measure(model: nn.Module, batches: Sequence[list], tokenizer) -> dict[str, float]:
    """Every number the criteria need, on `batches` of val examples (model in eval mode, fp32, CPU)."""
    model.eval()
    metrics = itm_and_wra(model, batches)
    metrics.update(grounded_mlm(model, batches, tokenizer))
    metrics.update(region_modelling(model, batches))
    metrics.update(grounded_ceiling(batches))
    return metrics


def grounded_ceiling(batches: Sequence[list]) -> dict[str, float]:
    """The grounded-MLM ceilings of the captions the criteria read (each example's texts[0]); none for
    data that does not carry its scenes (only the shapes world does)."""
    from lottery.data.world import Scene
    from lottery.evaluation.ceiling import grounded_ceilings

    examples = [ex for batch in batches for ex in batch]
    if not examples or not all("scene" in (ex.meta or {}) for ex in examples):
        return {}
    samples = [(Scene.from_json(ex.meta["scene"]), ex.meta["texts"][0]) for ex in examples]
    return {f"mlm_{kind}_ceiling": value for kind, value in grounded_ceilings(samples).items()}


def criteria(metrics: dict[str, float]) -> list[Criterion]:
    """The theta0 criteria of the measured numbers, each with its baseline and rule."""
    rows = [
        Criterion(
            "ITM accuracy", metrics["itm_acc"], 0.5, "chance", metrics["itm_acc"] >= ITM_MIN, f">= {ITM_MIN}"
        )
    ]
    for kind in WORD_KINDS:
        value, text = metrics[f"mlm_{kind}_image_acc"], metrics[f"mlm_{kind}_text_acc"]
        rows.append(
            Criterion(
                f"grounded MLM: {kind}",
                value,
                text,
                "text only",
                value >= GROUNDED_MIN,
                f">= {GROUNDED_MIN}",
                metrics.get(f"mlm_{kind}_ceiling"),
            )
        )
    rows.append(
        Criterion(
            "MRFR loss",
            metrics["mrfr_loss"],
            metrics["mrfr_mean_loss"],
            "mean feature",
            metrics["mrfr_loss"] < metrics["mrfr_mean_loss"],
            "< baseline",
        )
    )
    rows.append(
        Criterion(
            "MRC-kl loss",
            metrics["mrckl_loss"],
            metrics["mrckl_prior_loss"],
            "class prior",
            metrics["mrckl_loss"] < metrics["mrckl_prior_loss"],
            "< baseline",
        )
    )
    rows.append(
        Criterion(
            "WRA cost, matched",
            metrics["wra_pos"],
            metrics["wra_neg"],
            "mismatched",
            metrics["wra_pos"] < metrics["wra_neg"],
            "< baseline",
        )
    )
    return rows


def format_criteria(rows: Sequence[Criterion]) -> str:
    """The criteria as a table; "best" is the most any model can score there (perfect perception)."""
    lines = [f"{'criterion':<24} {'value':>8} {'baseline':>9}  {'(of)':<13} {'rule':<11} {'best':>6}  ok"]
    for r in rows:
        best = "" if r.ceiling is None else f"{r.ceiling:.3f}"
        lines.append(
            f"{r.name:<24} {r.value:8.4f} {r.baseline:9.4f}  {r.baseline_name:<13} {r.rule:<11} {best:>6}  "
            f"{'yes' if r.passed else 'NO'}"
        )
    return "\n".join(lines)


def evaluate_model_dir(
    model_dir: str | Path,
    data_dir: str | Path,
    *,
    samples: int = 512,
    batch_size: int = 32,
    max_text_len: int = 60,
) -> tuple[dict[str, float], list[Criterion]]:
    """`measure` + `criteria` for a model directory on the first `samples` val examples of `data_dir`."""
    from lottery.data.pipeline import eval_batches, shard_urls
    from lottery.models.uniter import from_pretrained
    from lottery.models.uniter.checkpoint import load_tokenizer

    model = from_pretrained(Path(model_dir)).float()
    batches = list(
        eval_batches(
            shard_urls(Path(data_dir), "val"),
            tokenizer_dir=Path(model_dir),
            max_text_len=max_text_len,
            batch_size=batch_size,
            limit=samples,
        )
    )
    metrics = measure(model, batches, load_tokenizer(Path(model_dir)))
    return metrics, criteria(metrics)
