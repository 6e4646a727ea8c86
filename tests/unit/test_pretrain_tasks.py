"""Each pre-training task gives a finite loss on a real model and can drive it down on one fixed batch.

Overfitting one batch is the cheapest proof that a loss is wired to the right head and the right
targets: a loss on shuffled or detached targets would not fall to a fraction of its start.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from tiny import TINY

from lottery.models.uniter import UniterForPretraining
from lottery.tasks.masking import TextVocab
from lottery.tasks.pretrain import TASKS, CollateContext, summarise

VOCAB = TextVocab(size=100, pad_id=0, cls_id=1, sep_id=2, mask_id=3, first_word_id=5)


def _examples(count: int, seed: int = 0) -> list[SimpleNamespace]:
    """Random examples of varied text and region counts, shaped like `lottery.data.pipeline.Example`."""
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        words = int(torch.randint(4, 9, (1,), generator=gen))
        regions = int(torch.randint(3, 7, (1,), generator=gen))
        ids = [VOCAB.cls_id, *torch.randint(5, VOCAB.size, (words,), generator=gen).tolist(), VOCAB.sep_id]
        box = torch.rand(regions, 7, generator=gen)
        soft = torch.softmax(3 * torch.randn(regions, 5, generator=gen), dim=-1)
        examples.append(
            SimpleNamespace(input_ids=ids, feat=torch.randn(regions, 16, generator=gen), box=box, soft=soft)
        )
    return examples


def _fixed_batch(task_name: str) -> dict:
    ctx = CollateContext(VOCAB, mask_prob=0.3, itm_neg_prob=0.5)
    return TASKS[task_name].collate(_examples(8), ctx, torch.Generator().manual_seed(1))


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_loss_is_finite_and_its_stats_count_the_targets(task_name):
    torch.manual_seed(0)
    model = UniterForPretraining(TINY)
    batch = _fixed_batch(task_name)
    loss, stats = TASKS[task_name].loss(model, batch)
    assert loss.dim() == 0 and math.isfinite(float(loss))
    assert set(stats) == set(TASKS[task_name].stat_keys())
    assert stats[f"{task_name}_count"] > 0
    if task_name != "itm":  # ITM's loss adds WRA to the reported classifier loss (tested below)
        assert stats[f"{task_name}_loss_sum"] == pytest.approx(float(loss) * stats[f"{task_name}_count"])


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_overfits_one_batch(task_name):
    torch.manual_seed(0)
    model = UniterForPretraining(TINY)
    model.train()
    for module in model.modules():  # dropout would make the fixed batch a moving target
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    batch = _fixed_batch(task_name)
    task = TASKS[task_name]
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    first, _ = task.loss(model, batch)
    for _ in range(80):
        optimizer.zero_grad()
        loss, stats = task.loss(model, batch)
        loss.backward()
        optimizer.step()
    last, stats = task.loss(model, batch)
    assert float(last) < 0.2 * float(first), (float(first), float(last))
    if f"{task_name}_correct_sum" in stats:
        assert stats[f"{task_name}_correct_sum"] == stats[f"{task_name}_count"]


def test_summary_reports_accuracy_only_for_classification_tasks():
    sums = {key: 2.0 for task in TASKS.values() for key in task.stat_keys()}
    metrics = summarise(sums)
    assert metrics["mlm_acc"] == 1.0 and metrics["itm_acc"] == 1.0
    assert "mrfr_acc" not in metrics and "mrckl_acc" not in metrics
    assert metrics["loss"] == 1.0


def test_itm_loss_adds_the_weighted_word_region_alignment():
    torch.manual_seed(0)
    model = UniterForPretraining(TINY).eval()
    losses = {}
    for weight in (0.0, 1.0):
        ctx = CollateContext(VOCAB, mask_prob=0.3, itm_neg_prob=0.5, wra_weight=weight)
        batch = TASKS["itm"].collate(_examples(8), ctx, torch.Generator().manual_seed(1))
        loss, stats = TASKS["itm"].loss(model, batch)
        losses[weight] = float(loss)
    wra = stats["wra_pos_sum"] / stats["wra_pos_count"] - stats["wra_neg_sum"] / stats["wra_neg_count"]
    assert losses[1.0] - losses[0.0] == pytest.approx(wra, abs=1e-5)
    assert losses[0.0] == pytest.approx(stats["itm_loss_sum"] / stats["itm_count"], abs=1e-6)


# token ids 10/11 stand for "left"/"right", 12/13 for "above"/"below" in the tiny vocabulary
REVERSALS = {10: 11, 11: 10, 12: 13, 13: 12}


def _relation_examples(count: int) -> list[SimpleNamespace]:
    """Examples whose captions hold one relation word each (the even ones) or none (the odd ones)."""
    examples = _examples(count)
    for i, ex in enumerate(examples):
        words = [t for t in ex.input_ids[1:-1] if t not in REVERSALS]
        if i % 2 == 0:
            words[len(words) // 2] = 10 + i % 4
        ex.input_ids = [VOCAB.cls_id, *words, VOCAB.sep_id]
    return examples


def test_relation_negatives_reverse_the_relation_beside_the_captions_own_image():
    examples = _relation_examples(16)
    ctx = CollateContext(VOCAB, itm_neg_prob=1.0, itm_relation_neg_prob=1.0, reversals=REVERSALS)
    batch = TASKS["itm"].collate(examples, ctx, torch.Generator().manual_seed(3))
    assert not batch["itm_targets"].any()  # every pair is mismatched
    for i, ex in enumerate(examples):
        text = batch["input_ids"][i, : len(ex.input_ids)].tolist()
        features = batch["img_feat"][i, : len(ex.feat)]
        if i % 2 == 0:  # reversed, with its own image
            assert text == [REVERSALS.get(t, t) for t in ex.input_ids] and text != ex.input_ids
            assert batch["num_regions"][i] == len(ex.feat) and torch.equal(features, ex.feat)
        else:  # no relation to reverse: its caption kept, another example's image
            regions = int(batch["num_regions"][i])
            assert text == ex.input_ids
            assert regions != len(ex.feat) or not torch.equal(batch["img_feat"][i, :regions], ex.feat)


def test_without_relation_negatives_itm_draws_the_batches_it_always_drew():
    examples = _relation_examples(8)
    plain = TASKS["itm"].collate(examples, CollateContext(VOCAB), torch.Generator().manual_seed(5))
    off = CollateContext(VOCAB, itm_relation_neg_prob=0.0, reversals=REVERSALS)
    same = TASKS["itm"].collate(examples, off, torch.Generator().manual_seed(5))
    assert plain.keys() == same.keys()
    assert all(torch.equal(plain[k], same[k]) for k in plain)


def test_relation_reversals_refuse_a_word_the_tokenizer_splits():
    from lottery.tasks.pretrain import relation_reversals

    tokenizer = SimpleNamespace(
        unk_token_id=0, convert_tokens_to_ids=lambda words: [5 if w == "left" else 0 for w in words]
    )
    with pytest.raises(ValueError, match="not single tokens"):
        relation_reversals(tokenizer, {"left": "leftwards"})


def test_relation_negatives_without_reversals_are_refused_when_the_context_is_built():
    with pytest.raises(ValueError, match="needs the relation words' reversals"):
        CollateContext(VOCAB, itm_relation_neg_prob=0.5)
