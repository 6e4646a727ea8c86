"""ViLT's task model: the shared task adapters read it as they are (its patches in the region slots), it
learns VQA and NLVR2, a pre-training model's backbone and ticket fit it, its directory round-trips."""

from __future__ import annotations

import pytest
import torch
from test_lxmert_model import fit_one_batch
from test_vilt_model import GRID, tiny_config

from lottery.data.examples import TaskExample
from lottery.models.uniter.finetuned import TaskHead
from lottery.models.vilt import ViltForLotteryPretraining
from lottery.models.vilt.finetuned import from_finetuned, save_finetuned
from lottery.models.vilt.task_model import ViltForTask
from lottery.tasks.downstream.common import TaskContext
from lottery.tasks.downstream.registry import adapter

ANSWERS = ("red", "blue", "two")


def _context(images: int = 6) -> TaskContext:
    """Each image is a patch grid, as `load_features` gives a patch model (`PatchGrid.patches`)."""
    gen = torch.Generator().manual_seed(0)
    boxes = torch.from_numpy(GRID.boxes)
    features = {
        f"img{i}": (torch.rand(GRID.side**2, GRID.feat_dim, generator=gen) * 2 - 1, boxes)
        for i in range(images)
    }
    return TaskContext(lambda text: [1, *[5 + len(w) for w in text.split()], 2], features, answers=ANSWERS)


def _examples(task: str) -> list[TaskExample]:
    if task == "nlvr2":
        return [
            TaskExample("nlvr2", f"u{i}", (f"img{i}", f"img{(i + 1) % 6}"), "a red cube" * (1 + i % 2), {"label": i % 2 == 0})
            for i in range(6)
        ]  # fmt: skip
    return [
        TaskExample("vqa", f"u{i}", (f"img{i}",), "what colour " * (1 + i % 3), {"answers": {ANSWERS[i % 3]: 1.0}})
        for i in range(6)
    ]  # fmt: skip


def test_a_pre_training_model_s_backbone_and_ticket_scope_fit_the_task_model():
    torch.manual_seed(0)
    pretraining = ViltForLotteryPretraining(tiny_config())
    task_model = ViltForTask(tiny_config(), "nlvr2")
    backbone = {k: v for k, v in pretraining.state_dict().items() if k.startswith("vilt.")}
    missing, unexpected = task_model.load_state_dict(backbone, strict=False)
    assert not unexpected and all(name.startswith("head.") for name in missing)
    assert task_model.fingerprint() == pretraining.fingerprint()


@pytest.mark.parametrize("task", ["vqa", "nlvr2"])
def test_vqa_and_nlvr2_train_through_the_shared_adapters(task):
    torch.manual_seed(0)
    config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = ViltForTask(config, task, num_outputs=len(ANSWERS) if task == "vqa" else None)
    ctx, task_adapter = _context(), adapter(task)
    batch = task_adapter.collate(_examples(task), ctx, torch.Generator().manual_seed(0))
    first, _ = model(batch, task_adapter)
    last = fit_one_batch(model, batch, task_adapter, steps=40)
    assert last < 0.3 * float(first), (task, float(first), last)
    assert len(task_adapter.predict(model, batch, ctx)) == len(_examples(task))


def test_vilt_refuses_the_tasks_the_paper_does_not_fine_tune_it_on_and_villa():
    with pytest.raises(ValueError, match="ViLT fine-tunes on vqa, nlvr2"):
        ViltForTask(tiny_config(), "gqa")
    model = ViltForTask(tiny_config(), "vqa", num_outputs=3)
    batch = adapter("vqa").collate(_examples("vqa"), _context(), torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="VILLA"):
        model.encode_packed({**batch, "txt_delta": torch.zeros(1)})


def test_fine_tuned_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = ViltForTask(tiny_config(), "vqa", num_outputs=3)
    partial = tmp_path / "model"
    partial.mkdir()
    save_finetuned(model.state_dict(), model.config, TaskHead("vqa", 3, ANSWERS), partial)
    loaded = from_finetuned(partial)
    assert loaded.task == "vqa" and loaded.config.name == "vilt-tiny"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
