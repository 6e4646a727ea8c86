"""VILLA-style adversarial training: finite, differentiable, it changes the loss, and its perturbation ascends."""

from __future__ import annotations

import torch
from test_downstream_tasks import ANSWERS, examples, features, tokenize
from tiny import TINY

from lottery.config import AdversarialConfig
from lottery.tasks.downstream.adversarial import AdversarialLoss, _ascend, symmetric_kl
from lottery.tasks.downstream.common import TaskContext
from lottery.tasks.downstream.model import UniterForTask
from lottery.tasks.downstream.registry import adapter


def _setup(task: str):
    torch.manual_seed(0)
    ctx = TaskContext(tokenize, features(), answers=ANSWERS, negatives=2)
    task_adapter = adapter(task)
    batch = task_adapter.collate(examples(task), ctx, torch.Generator().manual_seed(0))
    return UniterForTask(TINY, task, num_outputs=len(ANSWERS)).eval(), task_adapter, batch


def test_the_adversarial_loss_is_the_clean_loss_plus_finite_adversarial_terms():
    for task in ("vqa", "vcr", "refcoco+", "nlvr2", "retrieval"):
        model, task_adapter, batch = _setup(task)
        clean, _ = model(batch, task_adapter)
        adversarial, stats = model(
            batch, AdversarialLoss(task_adapter, AdversarialConfig(enabled=True, step_size=0.5))
        )
        assert torch.isfinite(adversarial) and float(adversarial) > float(clean), task
        assert abs(stats["clean_loss_sum"] / stats["count"] - float(clean)) < 1e-4
        adversarial.backward()
        assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("head."))


def test_larger_steps_find_a_worse_perturbation():
    model, task_adapter, batch = _setup("nlvr2")
    losses = []
    for step_size in (0.0, 1.0):
        config = AdversarialConfig(enabled=True, steps=3, step_size=step_size, kl_weight=0.0)
        loss, stats = model(batch, AdversarialLoss(task_adapter, config))
        losses.append(float(loss) - stats["clean_loss_sum"] / stats["count"])
    assert losses[1] > losses[0]  # the mean adversarial term rose with the ascent


def test_steps_are_l2_normalised_and_projected_into_the_ball():
    delta = torch.zeros(2, 3, 4)
    grad = torch.randn(2, 3, 4)
    moved = _ascend(delta, grad, 0.1, 0.0)
    assert torch.allclose(moved.reshape(2, -1).norm(dim=1), torch.full((2,), 0.1))
    bounded = _ascend(delta, grad, 5.0, 1.0)
    assert torch.allclose(bounded.reshape(2, -1).norm(dim=1), torch.ones(2))
    same = torch.randn(3, 5)
    assert float(symmetric_kl(same, same)) < 1e-6 and float(symmetric_kl(same, -same)) > 0
