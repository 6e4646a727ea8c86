"""LXMERT's task model: the UNITER task adapters read it as they are, it learns, its directory round-trips."""

from __future__ import annotations

import torch
from test_lxmert_model import fit_one_batch, tiny_config

from lottery.data.examples import TaskExample
from lottery.models.lxmert import LxmertForLotteryPretraining
from lottery.models.lxmert.finetuned import from_finetuned, save_finetuned
from lottery.models.lxmert.task_model import LxmertForTask, repack
from lottery.models.uniter.finetuned import TaskHead
from lottery.tasks.downstream.common import TaskContext
from lottery.tasks.downstream.registry import adapter
from lottery.tasks.packing import pack

ANSWERS = ("red", "blue", "two")


def _context(images: int = 6) -> TaskContext:
    gen = torch.Generator().manual_seed(0)
    features = {
        f"img{i}": (torch.randn(3 + i % 3, 16, generator=gen), torch.rand(3 + i % 3, 7, generator=gen))
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


def test_repack_puts_each_samples_words_then_regions_where_the_packed_layout_has_them():
    ids = [torch.tensor([1, 7, 2]), torch.tensor([1, 8, 9, 10, 2])]
    feats = [torch.randn(2, 4), torch.randn(3, 4)]
    batch = pack(ids, feats, [torch.rand(2, 7), torch.rand(3, 7)])
    language = torch.arange(2 * 5).float().reshape(2, 5, 1)
    vision = 100 + torch.arange(2 * 3).float().reshape(2, 3, 1)
    packed = repack(language, vision, batch["gather_index"])[..., 0]
    assert packed[0, :5].tolist() == [0, 1, 2, 100, 101]
    assert packed[1, :8].tolist() == [5, 6, 7, 8, 9, 103, 104, 105]


def test_a_pre_training_model_s_backbone_and_ticket_scope_fit_the_task_model():
    torch.manual_seed(0)
    pretraining = LxmertForLotteryPretraining(tiny_config())
    task_model = LxmertForTask(tiny_config(), "vqa", num_outputs=len(ANSWERS))
    backbone = {k: v for k, v in pretraining.state_dict().items() if k.startswith("lxmert.")}
    missing, unexpected = task_model.load_state_dict(backbone, strict=False)
    assert not unexpected and all(name.startswith("head.") for name in missing)
    assert task_model.fingerprint() == pretraining.fingerprint()


def test_vqa_and_nlvr2_train_through_the_shared_adapters():
    for task in ("vqa", "nlvr2"):
        torch.manual_seed(0)
        config = tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        model = LxmertForTask(config, task, num_outputs=len(ANSWERS) if task == "vqa" else None)
        ctx, task_adapter = _context(), adapter(task)
        batch = task_adapter.collate(_examples(task), ctx, torch.Generator().manual_seed(0))
        first, _ = model(batch, task_adapter)
        last = fit_one_batch(model, batch, task_adapter, steps=40)
        assert last < 0.3 * float(first), (task, float(first), last)
        predictions = task_adapter.predict(model, batch, ctx)
        assert len(predictions) == len(_examples(task))


def test_lxmert_refuses_the_tasks_the_paper_does_not_fine_tune_it_on():
    import pytest

    with pytest.raises(ValueError, match="LXMERT fine-tunes on vqa, gqa, nlvr2"):
        LxmertForTask(tiny_config(), "refcoco+")


def test_fine_tuned_directory_round_trip(tmp_path):
    torch.manual_seed(0)
    model = LxmertForTask(tiny_config(), "vqa", num_outputs=3)
    partial = tmp_path / "model"
    partial.mkdir()
    save_finetuned(model.state_dict(), model.config, TaskHead("vqa", 3, ANSWERS), partial)
    loaded = from_finetuned(partial)
    assert loaded.task == "vqa" and loaded.config.name == "lxmert-tiny"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
