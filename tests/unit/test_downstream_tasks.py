"""Each downstream adapter: collation on hand-made examples, and a tiny UNITER that overfits them.

Overfitting a fixed handful of examples is the cheapest proof that a task's loss reads the right head
output and the right targets; the metric on those examples must then be perfect.
"""

from __future__ import annotations

import zlib

import pytest
import torch
from tiny import TINY

from lottery.data.examples import TaskExample
from lottery.models.uniter import UniterForPretraining
from lottery.tasks.downstream.common import TaskContext, pack_pairs
from lottery.tasks.downstream.model import HEAD_LAYOUT, UniterForTask
from lottery.tasks.downstream.regions import best_overlap
from lottery.tasks.downstream.registry import adapter

ANSWERS = ("0", "1", "2", "yes", "no")
WORDS = ("apple", "ball", "cat", "dog", "egg", "fish", "goat", "hat")


def tokenize(text: str) -> list[int]:
    return [1, *(5 + zlib.crc32(w.encode()) % 95 for w in text.split()), 2]


def features(count: int = 8) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    out = {}
    for i in range(count):
        regions = 3 + i % 3
        corner = torch.rand(regions, 2, generator=gen) * 0.5
        box = torch.cat([corner, corner + 0.3, torch.full((regions, 3), 0.3)], dim=1)
        out[f"img{i}"] = (torch.randn(regions, 16, generator=gen), box)
    return out


def examples(task: str) -> list[TaskExample]:
    e = []
    for i in range(6):
        image = (f"img{i}",)
        if task == "vqa":
            e.append(
                TaskExample(
                    task,
                    f"q{i}",
                    image,
                    f"how many things {i}",
                    {"answers": {ANSWERS[i % 5]: 1.0, "no": 1 / 3}},
                )
            )
        elif task == "gqa":
            e.append(
                TaskExample(task, f"q{i}", image, f"what is left of {i}", {"answer": ANSWERS[(i * 2) % 5]})
            )
        elif task == "snli-ve":
            label = ("entailment", "neutral", "contradiction")[i % 3]
            e.append(TaskExample(task, f"h{i}", image, f"hypothesis number {i}", {"label": label}))
        elif task == "vcr":
            # the right choice repeats the question's word, as a right VCR answer refers to the question
            right_answer, right_reason = i % 4, (i + 1) % 4
            words = [WORDS[(i + 1 + k) % len(WORDS)] for k in range(4)]
            answers = [WORDS[i] if j == right_answer else words[j] for j in range(4)]
            reasons = [f"because {WORDS[i] if j == right_reason else words[j]}" for j in range(4)]
            fields = {
                "answer_choices": answers,
                "answer_label": right_answer,
                "rationale_choices": reasons,
                "rationale_label": right_reason,
            }
            e.append(TaskExample(task, f"v{i}", image, f"which object {WORDS[i]}", fields))
        elif task == "retrieval":
            e.append(
                TaskExample(task, f"c{i}", (f"img{i % 4}",), f"a caption of image {i}", {"caption_index": 0})
            )
        elif task == "refcoco+":
            e.append(TaskExample(task, f"r{i}", image, f"the object number {i}", {"region": i % 3}))
        elif task == "nlvr2":
            pair = (f"img{i}", f"img{(i + 1) % 8}")
            e.append(TaskExample(task, f"n{i}", pair, f"statement {i}", {"label": i % 2 == 0}))
    return e


@pytest.mark.parametrize("task", ["vqa", "gqa", "snli-ve", "vcr", "retrieval", "refcoco+", "nlvr2"])
def test_each_task_overfits_a_handful_of_examples(task):
    torch.manual_seed(0)
    ctx = TaskContext(tokenize, features(), answers=ANSWERS, negatives=2)
    task_adapter = adapter(task)
    batch = task_adapter.collate(examples(task), ctx, torch.Generator().manual_seed(0))
    model = UniterForTask(TINY, task, num_outputs=len(ANSWERS))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, stats = model(batch, task_adapter)
        assert torch.isfinite(loss) and stats["count"] > 0
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()
    with torch.no_grad():
        final, _ = model(batch, task_adapter)
    assert float(final) < 0.5 * first, (first, float(final))
    if task != "retrieval":
        with torch.no_grad():
            predictions = task_adapter.predict(model, batch, ctx)
        scores = task_adapter.metric(predictions, examples(task))
        # VQA's soft targets also pull towards the 1/3 answers: every prediction must be an annotated one
        floor = 1 / 3 if task == "vqa" else 1.0
        assert all(value >= floor - 1e-6 for value in scores.values()), scores
        assert max(scores.values()) > 0.8


class ConstantModel(torch.nn.Module):
    """Every head output equal: what a collapsed fine-tune gives; its metric must be chance, not more."""

    def __init__(self, outputs: int) -> None:
        super().__init__()
        self.outputs = outputs

    def encode_packed(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.zeros(*batch["attn_masks"].shape, 4)

    def pooled(self, sequence: torch.Tensor) -> torch.Tensor:
        return sequence[:, 0]

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        return torch.full((*hidden.shape[:-1], self.outputs), 0.7)


# (examples used, chance metric): so many that always taking index 0, the untied argmax, is not chance
CHANCE = {
    "vqa": (4, {"vqa_score": (1 + 1 / 3) / 5}),  # each question: one answer at 1.0, "no" at 1/3, of 5
    "gqa": (4, {"accuracy": 1 / 5}),
    "snli-ve": (4, {"accuracy": 1 / 3}),
    "vcr": (4, {"q->a": 0.25, "qa->r": 0.25, "q->ar": 0.0625}),
    "refcoco+": (4, {"accuracy": (1 / 3 + 1 / 4 + 1 / 5 + 1 / 3) / 4}),  # images of 3, 4, 5, 3 regions
    "nlvr2": (5, {"accuracy": 0.5}),
}


@pytest.mark.parametrize("task", sorted(CHANCE))
def test_a_constant_model_scores_chance(task):
    ctx = TaskContext(tokenize, features(), answers=ANSWERS, negatives=2)
    task_adapter = adapter(task)
    count, chance = CHANCE[task]
    chosen = examples(task)[:count]
    batch = task_adapter.collate(chosen, ctx, torch.Generator().manual_seed(0))
    predictions = task_adapter.predict(ConstantModel(HEAD_LAYOUT[task][1] or len(ANSWERS)), batch, ctx)
    assert task_adapter.metric(predictions, chosen) == pytest.approx(chance, abs=1e-12)


def test_a_constant_model_retrieves_at_chance():
    ctx = TaskContext(tokenize, features())
    task_adapter = adapter("retrieval")
    images, grid, caption_image = task_adapter.pairs(examples("retrieval"))
    captions = examples("retrieval")
    batch = pack_pairs(ctx, [ctx.ids(captions[c].text) for c, _ in grid], [images[i] for _, i in grid])
    scores = torch.tensor(task_adapter.predict(ConstantModel(1), batch, ctx)).view(len(captions), len(images))
    recalls = task_adapter.metric_from_scores(scores, caption_image)
    # 6 captions of 4 images (two with 2 captions, two with 1). Text->image: 1 of 4 images. Image->text
    # R@1: 2/6 or 1/6 of the captions are the image's; R@5: an image with 1 caption misses if it is last
    expected = {"txt2img_r1": 1 / 4, "txt2img_r5": 1.0, "txt2img_r10": 1.0}
    expected |= {"img2txt_r1": 1 / 4, "img2txt_r5": 11 / 12, "img2txt_r10": 1.0, "mean_recall": 53 / 72}
    assert recalls == expected


def test_task_models_have_the_pretraining_prunable_set():
    assert UniterForTask(TINY, "nlvr2").fingerprint() == UniterForPretraining(TINY).fingerprint()
    assert all(name.startswith("uniter.") for name in UniterForTask(TINY, "vqa", 5).prunable())


def test_vcr_collates_eight_candidates_per_question():
    ctx = TaskContext(tokenize, features())
    batch = adapter("vcr").collate(examples("vcr")[:2], ctx, torch.Generator())
    assert batch["input_ids"].shape[0] == 16 and batch["answer_label"].tolist() == [0, 1]


def test_vqa_targets_are_the_soft_scores_and_unknown_answers_are_dropped():
    ctx = TaskContext(tokenize, features(), answers=ANSWERS)
    e = TaskExample("vqa", "q", ("img0",), "how many", {"answers": {"2": 1.0, "yes": 1 / 3, "seven": 2 / 3}})
    targets = adapter("vqa").collate([e], ctx, torch.Generator())["targets"]
    assert targets.tolist() == [[0.0, 0.0, 1.0, pytest.approx(1 / 3), 0.0]]


def test_a_box_target_is_the_region_it_overlaps_most():
    boxes = torch.tensor([[0.0, 0.0, 0.5, 0.5], [0.5, 0.5, 1.0, 1.0], [0.4, 0.4, 0.6, 0.6]])
    assert best_overlap([300, 300, 200, 200], [600, 600], boxes) == 1  # pixels (300..500) / 600
    assert best_overlap([0, 0, 250, 250], [500, 500], boxes) == 0
