"""VILLA-style adversarial training in the embedding space, around any downstream adapter.

Used in place of the adapter in the model's forward (``model(batch, AdversarialLoss(adapter, cfg))``),
so under DeepSpeed everything stays one module call. The returned loss is the clean task loss plus
the mean over the ascent steps of (task loss on perturbed embeddings + kl_weight x symmetric KL
between the perturbed and the clean predictions). A ticket's mask is untouched by any of this: the
perturbations are inputs, and the engine's gradient masking runs on the one backward of that loss.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from lottery.config import AdversarialConfig
from lottery.tasks.downstream.common import Adapter, Batch, stats


def symmetric_kl(adversarial: Tensor, clean: Tensor) -> Tensor:
    """KL(p_adv || p_clean) + KL(p_clean || p_adv) over the last dimension, averaged over the rest."""
    log_adv = F.log_softmax(adversarial.float(), dim=-1)
    log_clean = F.log_softmax(clean.float(), dim=-1)
    rows = log_adv.reshape(-1, log_adv.size(-1))
    ref = log_clean.reshape(-1, log_clean.size(-1))
    return F.kl_div(rows, ref, log_target=True, reduction="batchmean") + F.kl_div(
        ref, rows, log_target=True, reduction="batchmean"
    )


def _ascend(delta: Tensor, grad: Tensor, step_size: float, bound: float) -> Tensor:
    """One step along the per-example L2-normalised gradient, then back into the L2 ball."""
    norms = grad.reshape(len(grad), -1).norm(dim=1).clamp(min=1e-12).view(-1, *[1] * (grad.dim() - 1))
    moved = delta + step_size * grad / norms
    if bound > 0:
        sizes = moved.reshape(len(moved), -1).norm(dim=1).view(-1, *[1] * (moved.dim() - 1))
        moved = moved * (bound / sizes.clamp(min=bound))
    return moved.detach()


@dataclass(frozen=True)
class AdversarialLoss:
    adapter: Adapter
    config: AdversarialConfig

    @property
    def name(self) -> str:
        return self.adapter.name

    def loss(self, model: nn.Module, batch: Batch) -> tuple[Tensor, dict[str, float]]:
        clean = self.adapter.outputs(model, batch)
        clean_loss = self.adapter.loss_from(clean, batch)
        hidden = model.config.hidden_size
        batch_size, words = batch["input_ids"].shape
        regions = batch["img_feat"].shape[1]
        dtype, device = clean.dtype, clean.device
        txt = torch.zeros(batch_size, words, hidden, dtype=dtype, device=device)
        img = torch.zeros(batch_size, regions, hidden, dtype=dtype, device=device)
        adversarial_total = clean_loss.new_zeros(())
        steps = self.config.steps
        for step in range(steps):
            txt.requires_grad_(True)
            img.requires_grad_(True)
            perturbed = {**batch, "txt_delta": txt, "img_delta": img}
            outputs = self.adapter.outputs(model, perturbed)
            adversarial = self.adapter.loss_from(outputs, perturbed)
            adversarial = adversarial + self.config.kl_weight * symmetric_kl(outputs, clean.detach())
            adversarial_total = adversarial_total + adversarial / steps
            if step < steps - 1:
                grad_txt, grad_img = torch.autograd.grad(adversarial, [txt, img], retain_graph=True)
                txt = _ascend(txt, grad_txt, self.config.step_size, self.config.norm_bound)
                img = _ascend(img, grad_img, self.config.step_size, self.config.norm_bound)
        loss = clean_loss + adversarial_total
        result = stats(loss, len(clean))
        result["clean_loss_sum"] = float(clean_loss.detach()) * len(clean)
        return loss, result
