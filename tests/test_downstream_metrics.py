"""The benchmarks' metrics on hand-made cases whose answers are known."""

from __future__ import annotations

import pytest
import torch

from lottery.tasks.downstream.metrics import accuracy, retrieval_recalls, vcr_accuracies, vqa_score


def test_vqa_score_is_the_soft_score_of_the_predicted_answer():
    answers = [{"2": 1.0, "3": 1 / 3}, {"red": 2 / 3}, {"yes": 1.0}]
    assert vqa_score(["2", "red", "no"], answers) == pytest.approx((1.0 + 2 / 3 + 0.0) / 3)
    assert vqa_score(["3", "blue", "yes"], answers) == pytest.approx((1 / 3 + 0 + 1) / 3)
    with pytest.raises(ValueError, match="2 predictions for 3 questions"):
        vqa_score(["2", "red"], answers)


def test_vcr_reports_q_a_qa_r_and_q_ar():
    result = vcr_accuracies([0, 1, 2, 3], [0, 1, 0, 3], [1, 1, 1, 0], [1, 0, 1, 0])
    assert result == {"q->a": 0.75, "qa->r": 0.75, "q->ar": 0.5}
    assert accuracy(["a", "b"], ["a", "a"]) == 0.5


def test_recall_at_k_on_a_known_score_matrix():
    # 4 captions, 2 images; captions 0, 1 describe image 0 and captions 2, 3 image 1
    scores = torch.tensor(
        [
            [0.9, 0.1],  # right image first
            [0.2, 0.8],  # right image second
            [0.3, 0.7],  # right image first
            [0.6, 0.5],  # right image second
        ]
    )
    recalls = retrieval_recalls(scores, [0, 0, 1, 1], ks=(1, 2))
    assert recalls["txt2img_r1"] == 0.5 and recalls["txt2img_r2"] == 1.0
    # image 0: best caption is 0 (0.9), its own: rank 0. image 1: caption 1 (0.8) is not its own,
    # its best own caption 2 (0.7) comes second
    assert recalls["img2txt_r1"] == 0.5 and recalls["img2txt_r2"] == 1.0
    assert recalls["mean_recall"] == pytest.approx(0.75)


def test_a_perfect_scorer_recalls_everything_at_one():
    truth = [0, 0, 1, 1, 2, 2]
    scores = torch.nn.functional.one_hot(torch.tensor(truth), 3).float()
    assert retrieval_recalls(scores, truth)["mean_recall"] == 1.0
