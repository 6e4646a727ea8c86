"""A fine-tuned model directory (models/uniter/finetuned.py) loads back: config, task head and weights.

Defect 11: the fine-tune wrote ``task`` and ``num_outputs`` into config.json, which `UniterConfig.from_dict`
refuses, so no loader in the repo could read its own output. The end-to-end check (2 fine-tune steps,
then load) is tests/integration/test_finetune_records.py.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import TINY

from lottery.models.uniter import (
    TaskHead,
    from_finetuned,
    from_pretrained,
    load_config,
    save_finetuned,
    task_head,
)
from lottery.tasks.downstream.model import UniterForTask


def _task_model(task: str = "vqa", outputs: int | None = 5) -> UniterForTask:
    torch.manual_seed(0)
    return UniterForTask(TINY, task, num_outputs=outputs)


def _save(model: UniterForTask, out: Path, answers: tuple[str, ...] = ()) -> Path:
    out.mkdir()
    head = TaskHead(model.task, model.head[-1].out_features, answers)
    return save_finetuned(model.state_dict(), model.config, head, out)


def test_config_json_is_a_uniter_config_and_the_head_is_described_beside_it(tmp_path):
    model_dir = _save(_task_model(), tmp_path / "model", answers=("a", "b", "c", "d", "e"))
    assert json.loads((model_dir / "config.json").read_text()) == {
        "model_type": "uniter",  # for transformers' Auto classes (tests/unit/test_uniter_automodel.py)
        "architectures": ["UniterWithTaskHead"],
        **TINY.to_dict(),
        "task": "vqa",
        "num_outputs": 5,
    }
    assert load_config(model_dir) == TINY
    assert task_head(model_dir) == TaskHead("vqa", 5, ("a", "b", "c", "d", "e"))


@pytest.mark.parametrize(("task", "outputs"), [("vqa", 5), ("nlvr2", None), ("refcoco+", None)])
def test_from_finetuned_gives_back_the_same_weights_and_head(tmp_path, task, outputs):
    model = _task_model(task, outputs)
    loaded = from_finetuned(_save(model, tmp_path / "model"))
    assert loaded.task == task and loaded.head[-1].out_features == model.head[-1].out_features
    want = model.state_dict()
    assert set(loaded.state_dict()) == set(want)
    assert all(torch.equal(v, want[k]) for k, v in loaded.state_dict().items())


def test_a_directory_written_before_task_json_still_loads(tmp_path):
    """The old layout: task and num_outputs inside config.json, no task.json."""
    model_dir = _save(_task_model(), tmp_path / "model")
    (model_dir / "task.json").unlink()
    legacy = {**TINY.to_dict(), "task": "vqa", "num_outputs": 5}
    (model_dir / "config.json").write_text(json.dumps(legacy))
    assert load_config(model_dir) == TINY
    assert task_head(model_dir) == TaskHead("vqa", 5)
    assert from_finetuned(model_dir).head[-1].out_features == 5


def test_from_pretrained_refuses_a_finetuned_directory_in_one_line_naming_the_loader(tmp_path):
    model_dir = _save(_task_model(), tmp_path / "model")
    with pytest.raises(ValueError) as caught:
        from_pretrained(model_dir)
    message = str(caught.value)
    assert "\n" not in message and str(model_dir) in message
    assert "fine-tuned vqa model" in message and "from_finetuned" in message


def test_weights_of_another_head_are_named(tmp_path):
    model_dir = _save(_task_model(), tmp_path / "model")
    (model_dir / "task.json").write_text(json.dumps({"task": "vqa", "num_outputs": 7}))
    with pytest.raises(
        ValueError,
        match=r"does not fit a vqa model of 'tiny': head\.3\.bias: expected 7, got 5; head\.3\.weight: expected 7x64",
    ):
        from_finetuned(model_dir)


def test_a_pretraining_directory_is_not_taken_for_a_finetuned_one(tmp_path):
    from tiny import save_tiny

    model_dir = save_tiny(tmp_path / "pre")
    assert task_head(model_dir) is None
    with pytest.raises(ValueError, match="not a fine-tuned model directory"):
        from_finetuned(model_dir)


def test_lottery_eval_of_a_fine_tuned_directory_is_one_line_naming_it_and_exit_2(tmp_path, capsys):
    """The grounding criteria need the pre-training heads; a fine-tuned directory has none."""
    from lottery.cli import main

    model_dir = _save(_task_model(), tmp_path / "model")
    with pytest.raises(SystemExit) as exit_:
        main(["eval", "--model", str(model_dir), "--data", str(tmp_path / "no-data")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1
    assert err[0].startswith(f"lottery: model refused: {model_dir} is a fine-tuned vqa model")
