"""Packing, masking and the task mixer: the pieces every pre-training batch is made of."""

import torch

from lottery.tasks.masking import IGNORE, TextVocab, mask_regions, mask_tokens
from lottery.tasks.mixer import TaskMixer
from lottery.tasks.packing import pack

VOCAB = TextVocab(size=1000, pad_id=0, cls_id=101, sep_id=102, mask_id=103, first_word_id=200)


def test_pack_puts_regions_right_after_each_samples_text():
    ids = [torch.tensor([101, 5, 6, 102]), torch.tensor([101, 7, 102])]
    feats = [torch.randn(2, 3), torch.randn(4, 3)]
    boxes = [torch.randn(2, 7), torch.randn(4, 7)]
    batch = pack(ids, feats, boxes)
    assert batch["input_ids"].shape == (2, 4)
    assert batch["img_feat"].shape == (2, 4, 3)
    assert batch["attn_masks"].tolist() == [[1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1]]
    # text block is 4 wide: region j of sample i is read from index 4 + j, straight after its text
    assert batch["gather_index"][0, :6].tolist() == [0, 1, 2, 3, 4, 5]
    assert batch["gather_index"][1].tolist() == [0, 1, 2, 4, 5, 6, 7]


def test_mask_tokens_never_masks_cls_or_sep_and_labels_only_masked():
    ids = torch.tensor([101] + list(range(300, 340)) + [102])
    masked, labels = mask_tokens(ids, 0.15, VOCAB, torch.Generator().manual_seed(0))
    assert labels[0] == IGNORE and labels[-1] == IGNORE
    chosen = labels != IGNORE
    assert chosen.any()
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(masked[~chosen], ids[~chosen])


def test_mask_tokens_rate_and_80_10_10_rule():
    ids = torch.tensor([101] + [500] * 20000 + [102])
    masked, labels = mask_tokens(ids, 0.15, VOCAB, torch.Generator().manual_seed(1))
    chosen = labels != IGNORE
    assert abs(chosen.float().mean().item() - 0.15) < 0.01
    as_mask = (masked[chosen] == VOCAB.mask_id).float().mean().item()
    kept = (masked[chosen] == 500).float().mean().item()
    assert abs(as_mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.03


def test_mask_tokens_masks_at_least_one_token():
    ids = torch.tensor([101, 300, 102])
    _, labels = mask_tokens(ids, 0.0, VOCAB, torch.Generator().manual_seed(0))
    assert labels.tolist() == [IGNORE, 300, IGNORE]


def test_mask_regions_hides_at_least_one_and_not_all():
    generator = torch.Generator().manual_seed(0)
    assert mask_regions(5, 0.0, generator).sum() == 1
    assert mask_regions(5, 1.0, generator).sum() == 4


def test_mixer_is_the_same_on_every_rank_and_follows_the_ratio():
    mixer = TaskMixer(
        {"itm": 2, "mlm": 2, "mrfr": 1, "mrckl": 1}, seed=0, known={"itm", "mlm", "mrfr", "mrckl"}
    )
    again = TaskMixer(
        {"itm": 2, "mlm": 2, "mrfr": 1, "mrckl": 1}, seed=0, known={"itm", "mlm", "mrfr", "mrckl"}
    )
    draws = [mixer.task_for(i) for i in range(6000)]
    assert draws == [again.task_for(i) for i in range(6000)]
    assert abs(draws.count("itm") / 6000 - 1 / 3) < 0.03
    assert abs(draws.count("mrfr") / 6000 - 1 / 6) < 0.03
