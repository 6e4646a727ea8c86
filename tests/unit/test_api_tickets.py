"""The public ticket API on a plain torch loop: load_ticket, apply_ticket and its handle, the lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from bert_ticket import (
    ENCODER_SCOPE,
    META,
    RENAME,
    batch,
    bert_weights,
    kept_changed_fraction,
    pruned_nonzero,
    tiny_bert,
    uniter_ticket,
)

from lottery.api import TicketMismatch, apply_ticket, load_ticket
from lottery.sparsity.enforce import MaskViolation
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import TicketError, TicketStore, ticket_bytes


def train(model: torch.nn.Module, optimizer: torch.optim.Optimizer, steps: int, first_seed: int = 0) -> None:
    for step in range(steps):
        model(**batch(first_seed + step)).loss.backward()
        optimizer.step()
        optimizer.zero_grad()


class Drift(torch.optim.Optimizer):
    """An optimizer that moves every weight by +lr each step, whatever its gradient: the worst case."""

    def __init__(self, params, lr: float = 0.1) -> None:
        super().__init__(params, {"lr": lr})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for param in group["params"]:
                param.add_(group["lr"])


# --- load_ticket ---


def test_load_ticket_finds_the_same_ticket_by_alias_id_prefix_and_file(tmp_path):
    masks = uniter_ticket(tiny_bert())
    store = TicketStore(tmp_path / "store")
    stored = store.put(masks, META, alias="uniter-tiny/s60")
    path = tmp_path / "ticket.safetensors"
    path.write_bytes(ticket_bytes(masks, META))

    by_alias = load_ticket("uniter-tiny/s60", store=store)
    by_prefix = load_ticket(stored[:8], store=tmp_path / "store")
    by_file = load_ticket(path)
    by_file_name = load_ticket(str(path))

    assert {by_alias.id, by_prefix.id, by_file.id, by_file_name.id} == {stored}
    assert by_alias.masks == masks and by_file.masks == masks
    assert by_alias.sparsity == pytest.approx(0.6, abs=1e-4)


def test_load_ticket_uses_the_default_store_from_the_environment(tmp_path, monkeypatch):
    stored = TicketStore(tmp_path).put(uniter_ticket(tiny_bert()), META, alias="s60")
    monkeypatch.setenv("LOTTERY_TICKET_STORE", str(tmp_path))

    assert load_ticket("s60").id == stored


def test_load_ticket_names_a_missing_file_and_an_unknown_alias(tmp_path):
    with pytest.raises(TicketError, match=r"missing\.safetensors: no such ticket file"):
        load_ticket(str(tmp_path / "missing.safetensors"))
    with pytest.raises(TicketError, match=r"no ticket 'uniter-tiny/s90'"):
        load_ticket("uniter-tiny/s90", store=tmp_path)


# --- apply_ticket ---


def test_apply_ticket_zeroes_exactly_the_pruned_weights():
    model = tiny_bert()
    masks = uniter_ticket(model)
    before = bert_weights(model, masks)

    handle = apply_ticket(model, masks, rename=RENAME)

    after = bert_weights(model, masks)
    assert pruned_nonzero(model, masks) == 0
    assert all(torch.equal(after[n][m], before[n][m]) for n, m in masks.masks.items())
    assert handle.sparsity == pytest.approx(0.6, abs=1e-4)
    assert set(handle.masks.masks) == {n.replace("uniter.", "bert.", 1) for n in masks.masks}


@pytest.mark.parametrize(
    "make_optimizer",
    [
        lambda params: torch.optim.AdamW(params, lr=1e-2, weight_decay=0.1),
        lambda params: torch.optim.SGD(params, lr=0.1, momentum=0.9),
        lambda params: Drift(params),
    ],
    ids=["adamw-weight-decay", "sgd-momentum", "drift"],
)
def test_pruned_weights_stay_zero_under_state_carried_from_before_the_ticket(make_optimizer):
    model = tiny_bert()
    optimizer = make_optimizer(model.parameters())
    train(model, optimizer, steps=3)  # dense: moments / momentum are non-zero everywhere
    masks = uniter_ticket(model)
    handle = apply_ticket(model, masks, rename=RENAME, optimizer=optimizer)
    before = bert_weights(model, masks)

    train(model, optimizer, steps=4, first_seed=10)

    assert pruned_nonzero(model, masks) == 0
    assert handle.verify() == 0  # weights and every weight-shaped optimizer state
    assert kept_changed_fraction(before, bert_weights(model, masks), masks) > 0.9


def test_without_the_optimizer_carried_moments_revive_pruned_weights():
    """The control of the test above: gradient masking alone lets AdamW's old moments move the zeros."""
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    train(model, optimizer, steps=3)
    masks = uniter_ticket(model)
    apply_ticket(model, masks, rename=RENAME)  # no optimizer: no step hook, moments kept

    train(model, optimizer, steps=2, first_seed=10)

    assert pruned_nonzero(model, masks) > 0.9 * (masks.total - masks.kept)


def test_gradients_of_pruned_weights_are_zero_before_the_step():
    model = tiny_bert()
    masks = uniter_ticket(model)
    apply_ticket(model, masks, rename=RENAME)

    model(**batch(0)).loss.backward()

    params = dict(model.named_parameters())
    for name, mask in masks.masks.items():
        grad = params[name.replace("uniter.", "bert.", 1)].grad
        assert int(torch.count_nonzero(grad[~mask])) == 0
        assert int(torch.count_nonzero(grad[mask])) > 0


def test_a_wrong_rename_names_the_missing_parameters_their_count_and_the_fix():
    model = tiny_bert()
    masks = uniter_ticket(model)

    with pytest.raises(TicketMismatch) as raised:
        apply_ticket(model, masks, rename={"uniter.": "roberta."})

    message = str(raised.value)
    assert "12 of 12 masked parameters are not in the model after rename={'uniter.': 'roberta.'}" in message
    assert "roberta.encoder.layer.0.attention.self.query.weight" in message
    assert "(+7 more)" in message
    assert "pass rename={'uniter.': 'bert.'}" in message
    assert pruned_nonzero(model, masks) > 0  # refused before touching a weight


def test_no_rename_suggests_the_prefix_swap():
    with pytest.raises(TicketMismatch, match=r"pass rename=\{'uniter\.': 'bert\.'\}"):
        apply_ticket(tiny_bert(), uniter_ticket(tiny_bert()))


def test_a_ticket_cut_from_another_size_names_each_shape_mismatch():
    masks = uniter_ticket(tiny_bert(intermediate_size=64))

    with pytest.raises(TicketMismatch) as raised:
        apply_ticket(tiny_bert(intermediate_size=48), masks, rename=RENAME)

    message = str(raised.value)
    assert "4 shape mismatches" in message
    assert (
        "bert.encoder.layer.0.intermediate.dense.weight is (48, 32) in the model, (64, 32) in the ticket"
        in message
    )


def test_an_optimizer_of_another_model_is_refused():
    model = tiny_bert()
    other = torch.optim.AdamW(tiny_bert(seed=1).parameters())

    with pytest.raises(ValueError, match="trains none of the ticket's parameters"):
        apply_ticket(model, uniter_ticket(model), rename=RENAME, optimizer=other)


def test_verify_counts_and_names_a_pruned_weight_written_behind_the_handle():
    model = tiny_bert()
    masks = uniter_ticket(model)
    handle = apply_ticket(model, masks, rename=RENAME)
    name = "uniter.encoder.layer.1.output.dense.weight"
    pruned_at = (~masks.masks[name]).nonzero()[:3]
    with torch.no_grad():
        weight = dict(model.named_parameters())["bert.encoder.layer.1.output.dense.weight"]
        weight[pruned_at[:, 0], pruned_at[:, 1]] = 1.0

    assert handle.verify(strict=False) == 3
    with pytest.raises(
        MaskViolation,
        match=r"3 pruned entries .* bert\.encoder\.layer\.1\.output\.dense\.weight: 3 in weight",
    ):
        handle.verify()
    handle.zero_pruned()
    assert handle.verify() == 0


def test_remove_stops_keeping_the_ticket():
    model = tiny_bert()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1)
    masks = uniter_ticket(model)
    handle = apply_ticket(model, masks, rename=RENAME, optimizer=optimizer)
    handle.remove()
    handle.remove()

    train(model, optimizer, steps=1)

    assert pruned_nonzero(model, masks) > 0


def test_a_maskset_under_the_models_own_names_needs_no_rename():
    model = tiny_bert()
    ticket = uniter_ticket(model)
    own_names = MaskSet({n.replace("uniter.", "bert.", 1): m for n, m in ticket.masks.items()}, ENCODER_SCOPE)

    apply_ticket(model, own_names)

    assert pruned_nonzero(model, ticket) == 0


# --- imports ---


def test_import_lottery_loads_neither_torch_nor_transformers():
    code = (
        "import sys, lottery, lottery.api\n"
        "heavy = {'torch', 'transformers', 'accelerate', 'deepspeed'} & set(sys.modules)\n"
        "assert not heavy, heavy\n"
        "assert lottery.load_ticket is lottery.api.loading.load_ticket\n"
        "assert lottery.apply_ticket.__module__ == 'lottery.api.masking'\n"
        "assert not {'transformers', 'deepspeed'} & set(sys.modules)\n"
        "from lottery import dist\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
