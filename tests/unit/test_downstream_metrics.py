"""The benchmarks' metrics on hand-made cases whose answers are known, ties scored at their expectation."""

from __future__ import annotations

import pickle
from fractions import Fraction
from itertools import combinations
from math import comb

import pytest
import torch

from lottery.evaluation.metrics import (
    accuracy,
    retrieval_recalls,
    top_k_chance,
    vcr_accuracies,
    vqa_score,
)
from lottery.evaluation.ties import Tied, tied_argmax


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


# -- ties: a constant model scores chance, not the first label's share or a perfect recall --------------


def test_tied_argmax_keeps_every_index_equal_to_the_maximum():
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.0], [2.0, 2.0, 2.0, 2.0], [0.0, 1.0, 0.5, 0.9]])
    assert tied_argmax(scores) == [Tied((1, 2)), Tied((0, 1, 2, 3)), Tied((1,))]
    assert tied_argmax(scores, "abcd") == [Tied(("b", "c")), Tied(("a", "b", "c", "d")), Tied(("b",))]


def test_a_nan_scores_below_everything_so_a_nan_row_ties_on_all():
    nan = float("nan")
    assert tied_argmax(torch.tensor([[nan, 1.0, 0.0], [nan, nan, nan]])) == [Tied((1,)), Tied((0, 1, 2))]


def test_a_tied_prediction_survives_the_pickling_of_gather_objects():
    prediction = (Tied((0, 2)), Tied((1,)))
    assert pickle.loads(pickle.dumps(prediction)) == prediction
    with pytest.raises(ValueError, match="at least one label"):
        Tied(())


@pytest.mark.parametrize("classes", [2, 3, 5])
def test_a_constant_classifier_scores_one_over_the_classes(classes):
    labels = [f"l{i}" for i in range(classes)]
    predictions = tied_argmax(torch.zeros(7, classes), labels)
    gold = [labels[i % classes] for i in range(7)]
    assert accuracy(predictions, gold) == 1 / classes
    # argmax alone answered l0 everywhere: its score was the share of l0 in the gold labels
    assert accuracy([labels[0]] * 7, gold) == sum(g == "l0" for g in gold) / 7


def test_untied_predictions_score_as_plain_labels():
    assert accuracy([Tied(("a",)), Tied(("b",)), Tied(("c",))], ["a", "a", "c"]) == 2 / 3
    assert accuracy(["a", "b", "c"], ["a", "a", "c"]) == 2 / 3


def test_a_partial_tie_scores_one_over_its_size_when_gold_is_in_it():
    predictions = [Tied(("a", "b")), Tied(("a", "b", "c")), "a", Tied(("b", "c"))]
    # 1/2 + 1/3 + 1 + 0 = 11/6 over 4 examples
    assert accuracy(predictions, ["a", "c", "a", "a"]) == 11 / 24


def test_nlvr2_constant_prediction_is_a_coin_flip():
    assert accuracy(tied_argmax(torch.zeros(5, 2), (False, True)), [True, True, True, False, True]) == 0.5


def test_refcoco_hit_flags_of_tied_regions_score_one_over_the_regions():
    # hit flags of the regions tied for the best score: 4 regions with the target among them, then 3
    predictions = [Tied((False, True, False, False)), Tied((False, False, True))]
    assert accuracy(predictions, [True, True]) == 7 / 24  # (1/4 + 1/3) / 2


def test_vqa_constant_prediction_scores_the_mean_soft_score_over_the_vocabulary():
    vocabulary = ("2", "3", "red", "yes")
    answers = [{"2": 1.0, "3": 1 / 3}, {"red": 2 / 3}, {"yes": 1.0, "no": 1.0}]
    predictions = tied_argmax(torch.zeros(3, 4), vocabulary)
    expected = ((1 + 1 / 3) / 4 + (2 / 3) / 4 + 1 / 4) / 3  # "no" is not in the vocabulary
    assert vqa_score(predictions, answers) == pytest.approx(expected, abs=1e-15)
    # a partial tie: the mean over the tied answers
    partial = [Tied(("2", "3")), Tied(("red", "yes")), "yes"]
    assert vqa_score(partial, answers) == pytest.approx(((1 + 1 / 3) / 2 + (2 / 3) / 2 + 1) / 3, abs=1e-15)


def test_vcr_constant_prediction_scores_a_quarter_a_quarter_and_a_sixteenth():
    answers, rationales = tied_argmax(torch.zeros(3, 4)), tied_argmax(torch.zeros(3, 4))
    result = vcr_accuracies(answers, [0, 3, 1], rationales, [2, 2, 0])
    assert result == {"q->a": 0.25, "qa->r": 0.25, "q->ar": 0.0625}


def test_vcr_partial_ties_multiply_per_example():
    answers = [Tied((0, 1)), Tied((2,)), Tied((0, 1, 2))]
    rationales = [Tied((1, 2, 3)), Tied((0, 3)), Tied((3,))]
    result = vcr_accuracies(answers, [0, 2, 3], rationales, [1, 3, 3])
    # answer: 1/2, 1, 0; rationale: 1/3, 1/2, 1; both: 1/6, 1/2, 0
    assert result == {"q->a": 0.5, "qa->r": 11 / 18, "q->ar": 2 / 9}


@pytest.mark.parametrize("n", [10, 20])
def test_an_all_equal_score_matrix_recalls_k_over_n_both_ways(n):
    recalls = retrieval_recalls(torch.full((n, n), 0.3), list(range(n)))
    for k in (1, 5, 10):
        assert recalls[f"txt2img_r{k}"] == k / n
        assert recalls[f"img2txt_r{k}"] == k / n
    assert recalls["mean_recall"] == (1 + 5 + 10) / (3 * n)  # the strict rank gave 1.0


def test_an_all_equal_matrix_with_several_captions_per_image_is_a_random_ranking():
    # 12 captions, 4 images with 3 captions each: an image's captions are 3 of 12 in random order
    truth = [i % 4 for i in range(12)]
    recalls = retrieval_recalls(torch.zeros(12, 4), truth, ks=(1, 2, 5, 9))
    assert [recalls[f"txt2img_r{k}"] for k in (1, 2, 5, 9)] == [0.25, 0.5, 1.0, 1.0]
    # 1 - C(12 - k, 3) / C(12, 3): the top k holds none of the image's 3 captions
    expected = [1 - comb(12 - k, 3) / comb(12, 3) for k in (1, 2, 5, 9)]
    assert [recalls[f"img2txt_r{k}"] for k in (1, 2, 5, 9)] == pytest.approx(expected, abs=1e-15)
    # R@1: 3 of 12 captions; R@9: only the order with all three last (1 of C(12, 3) = 220) misses
    assert recalls["img2txt_r1"] == 0.25 and recalls["img2txt_r9"] == 219 / 220


def test_a_nan_score_matrix_is_chance_not_a_perfect_recall():
    recalls = retrieval_recalls(torch.full((10, 10), float("nan")), list(range(10)))
    assert recalls["txt2img_r1"] == 0.1 and recalls["img2txt_r5"] == 0.5


def test_recall_with_partial_ties_written_out():
    scores = torch.tensor(
        [
            [0.5, 0.5, 0.1],  # caption 0 (image 0): one other image ties it: R@1 1/2, R@2 1
            [0.5, 0.9, 0.2],  # caption 1 (image 0): one image above: R@1 0, R@2 1
            [0.5, 0.3, 0.3],  # caption 2 (image 1): one above, one tied: R@1 0, R@2 1/2
            [0.0, 0.0, 0.7],  # caption 3 (image 2): first: 1, 1
        ]
    )
    recalls = retrieval_recalls(scores, [0, 0, 1, 2], ks=(1, 2))
    assert recalls["txt2img_r1"] == 3 / 8 and recalls["txt2img_r2"] == 7 / 8
    # image 0: its captions 0 and 1 tie at 0.5 with caption 2 (image 1): an own caption comes first
    # with probability 2/3 (not 1/2: both own captions are chances), R@2 1. image 1: its caption 2
    # (0.3) is third: 0, 0. image 2: its caption 3 is first: 1, 1
    assert recalls["img2txt_r1"] == 5 / 9 and recalls["img2txt_r2"] == 2 / 3
    assert recalls["mean_recall"] == 89 / 144


@pytest.mark.parametrize("own", [1, 2, 3])
@pytest.mark.parametrize("others", [0, 1, 2, 4])
def test_top_k_chance_counts_every_order_of_the_tie_group(own, others):
    group = own + others
    for higher in range(3):
        for k in range(1, 9):
            orders = list(combinations(range(group), own))  # the places the own items take
            hits = sum(higher + min(places) < k for places in orders)
            assert top_k_chance(higher, others, own, k) == Fraction(hits, len(orders))


def test_pretraining_accuracies_count_a_constant_answer_as_a_coin_flip():
    """MLM/ITM accuracies and the grounding criteria sum `expected_correct`: ties split the hit."""
    from lottery.evaluation.ties import expected_correct

    assert expected_correct(torch.zeros(4, 2), torch.tensor([0, 1, 1, 1])) == 2.0
    assert expected_correct(torch.zeros(3, 5), torch.tensor([0, 1, 4])) == pytest.approx(0.6)
    assert expected_correct(torch.tensor([[2.0, 1.0], [0.0, 1.0]]), torch.tensor([0, 0])) == 1.0
    assert expected_correct(torch.tensor([[float("nan"), 1.0]]), torch.tensor([1])) == 1.0
