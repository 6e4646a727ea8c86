"""`lottery ticket export`: pickle-free safetensors masks that load back, and install with torch.nn.utils.prune."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import safetensors.numpy
import safetensors.torch
import torch
from safetensors import safe_open
from ticket_fixtures import ODD_SHAPES
from ticket_fixtures import TICKET_META as META
from ticket_fixtures import run_ticket_cli as run
from tiny import save_tiny
from torch.nn.utils import prune
from transformers import BertConfig, BertForPreTraining

from lottery.models.uniter import from_pretrained
from lottery.sparsity.maskset import MaskSet
from lottery.tickets import Ticket, TicketStore
from lottery.tickets.jobs import cut_ticket

TINY_PRUNED, TINY_TOTAL = 10445, 17408  # magnitude 0.6 of the tiny UNITER's 17408 prunable weights


def try_export(capsys, store: TicketStore, ref: str, out: Path, *options: str) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `lottery ticket export ref --out out options` on `store`."""
    return run(capsys, "export", ref, "--store", str(store.root), "--out", str(out), *options)


def export(capsys, store: TicketStore, ref: str, out: Path, *options: str) -> Path:
    code, _, err = try_export(capsys, store, ref, out, *options)
    assert code == 0, err
    return out


@pytest.fixture
def odd(tmp_path) -> tuple[TicketStore, Ticket]:
    """A store holding one ticket of odd-sized masks (37 of 91, 22 of 55, 4 of 9 kept)."""
    masks = MaskSet(
        {
            name: (torch.arange(int(np.prod(shape))) * 7 % 5 < 2).reshape(shape)
            for name, shape in ODD_SHAPES.items()
        }
    )
    store = TicketStore(tmp_path / "store")
    return store, store.load(store.put(masks, META, alias="odd/s60"))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> tuple[Path, TicketStore, Ticket]:
    """A tiny UNITER model directory and a store with its magnitude-0.6 ticket."""
    root = tmp_path_factory.mktemp("tiny")
    model_dir = save_tiny(root / "model")
    store = TicketStore(root / "store")
    ticket_id = cut_ticket(model_dir, "magnitude", 0.6, store, alias="tiny/s60")
    return model_dir, store, store.load(ticket_id)


def install(model: torch.nn.Module, path: Path) -> None:
    """The README recipe, verbatim."""
    masks = safetensors.torch.load_file(path)
    for key, mask in masks.items():
        module, name = key.removesuffix("_mask").rsplit(".", 1)
        prune.custom_from_mask(model.get_submodule(module), name, mask)


def test_safetensors_export_holds_the_bool_masks_under_the_parameter_names(capsys, tmp_path, odd) -> None:
    store, ticket = odd
    path = export(capsys, store, "odd/s60", tmp_path / "masks.safetensors", "--format", "safetensors")
    loaded = safetensors.torch.load_file(path)
    assert sorted(loaded) == sorted(ODD_SHAPES)
    for name, mask in ticket.masks.masks.items():
        assert loaded[name].dtype == torch.bool and torch.equal(loaded[name], mask)
    assert [int(m.sum()) for m in loaded.values()] == [37, 22, 4]


def test_packed_export_unpacks_with_numpy_alone_to_the_ticket_masks(capsys, tmp_path, odd) -> None:
    store, ticket = odd
    path = export(
        capsys, store, "odd/s60", tmp_path / "packed.safetensors", "--format", "safetensors", "--packed"
    )
    with safe_open(path, framework="np") as handle:
        metadata = handle.metadata()
    packed = safetensors.numpy.load_file(path)
    shapes = json.loads(metadata["shapes"])
    assert metadata["packing"] == "packbits"
    assert shapes == {name: list(shape) for name, shape in ODD_SHAPES.items()}
    assert {name: bits.dtype for name, bits in packed.items()} == dict.fromkeys(ODD_SHAPES, np.uint8)
    assert {name: bits.size for name, bits in packed.items()} == {  # ceil(numel / 8) bytes
        "uniter.encoder.layer.0.attention.self.query.weight": 12,
        "uniter.encoder.layer.0.output.dense.weight": 7,
        "uniter.pooler.dense.weight": 2,
    }
    for name, shape in shapes.items():
        bits = np.unpackbits(packed[name], count=int(np.prod(shape)), bitorder="big").reshape(shape)
        assert torch.equal(torch.from_numpy(bits.astype(bool)), ticket.masks.masks[name])


def test_the_metadata_carries_the_ticket_id_sparsity_and_provenance(capsys, tmp_path, odd) -> None:
    store, ticket = odd
    path = export(
        capsys,
        store,
        "odd/s60",
        tmp_path / "m.safetensors",
        "--format",
        "torch-prune",
        "--rename",
        "uniter.=",
    )
    with safe_open(path, framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata == {
        "format": "vl-lottery-masks",
        "format_version": "1",
        "ticket": ticket.id,
        "family": "uniter",
        "model": "tiny",
        "method": "magnitude",
        "tasks": '["itm","mlm"]',
        "imp_round": "2",
        "config_digest": "ab" * 32,
        "code_version": "0.1.0",
        "sparsity": repr(1 - 63 / 155),
        "scope": json.dumps(list(ticket.masks.scope), separators=(",", ":")),
        "fingerprint": ticket.masks.fingerprint,
        "packing": "none",
        "shapes": '{"encoder.layer.0.attention.self.query.weight_mask":[13,7],'
        '"encoder.layer.0.output.dense.weight_mask":[5,11],"pooler.dense.weight_mask":[3,3]}',
        "renames": '[["uniter.",""]]',
    }


@pytest.mark.parametrize("options", [("safetensors",), ("safetensors", "--packed"), ("torch-prune",)])
def test_every_export_is_plain_safetensors_with_no_byte_left_for_a_pickle(
    capsys, tmp_path, odd, options
) -> None:
    store, _ = odd
    path = export(capsys, store, "odd/s60", tmp_path / "out.safetensors", "--format", *options)
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    ends = [info["data_offsets"][1] for key, info in header.items() if key != "__metadata__"]
    assert len(data) == 8 + length + max(ends)  # header + tensor data, nothing else (torch.save: a zip)
    with safe_open(path, framework="pt") as handle:
        assert len(list(handle.keys())) == 3


def test_torch_prune_export_installs_exactly_the_ticket_with_custom_from_mask(capsys, tmp_path, tiny) -> None:
    model_dir, store, ticket = tiny
    path = export(capsys, store, "tiny/s60", tmp_path / "prune.safetensors", "--format", "torch-prune")
    model = from_pretrained(model_dir)
    install(model, path)
    masks = ticket.masks.masks
    with safe_open(path, framework="pt") as handle:
        keys = list(handle.keys())
    assert sorted(keys) == sorted(f"{name}_mask" for name in masks)
    assert set(keys) <= set(model.state_dict())  # the pruned model's own buffer names
    zeros = 0
    for name, mask in masks.items():
        weight = model.get_submodule(name.removesuffix(".weight")).weight
        assert torch.equal(weight == 0, ~mask), name
        zeros += int((weight == 0).sum())
    assert zeros == TINY_PRUNED == 10445
    assert (ticket.masks.total, ticket.masks.total - ticket.masks.kept) == (TINY_TOTAL, TINY_PRUNED)


def test_torch_prune_export_renamed_to_bert_installs_on_a_hugging_face_bert(capsys, tmp_path, tiny) -> None:
    _, store, ticket = tiny
    path = export(
        capsys,
        store,
        "tiny/s60",
        tmp_path / "bert.safetensors",
        "--format",
        "torch-prune",
        "--rename",
        "uniter.=bert.",
    )
    torch.manual_seed(0)
    bert = BertForPreTraining(
        BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
    )
    install(bert, path)
    zeros = 0
    for name, mask in ticket.masks.masks.items():
        weight = bert.get_submodule("bert." + name.removeprefix("uniter.").removesuffix(".weight")).weight
        assert torch.equal(weight == 0, ~mask), name
        zeros += int((weight == 0).sum())
    assert zeros == TINY_PRUNED == 10445


def test_a_rename_that_matches_no_parameter_is_refused_naming_it(capsys, tmp_path, odd) -> None:
    store, _ = odd
    out = tmp_path / "masks.safetensors"
    code, stdout, err = try_export(
        capsys,
        store,
        "odd/s60",
        out,
        "--format",
        "safetensors",
        "--rename",
        "uniter.=bert.",
        "--rename",
        "vit.=bert.",
    )
    assert (code, stdout) == (2, "")
    assert err == (
        "lottery ticket export: error: --rename vit.=bert.: no parameter name of ticket "
        f"{store.resolve('odd/s60')[:12]} starts with 'vit.'; its names start with uniter.\n"
    )
    assert not out.exists()


def test_renames_that_would_give_two_parameters_one_name_are_refused(capsys, tmp_path, odd) -> None:
    store, _ = odd
    code, _, err = try_export(
        capsys,
        store,
        "odd/s60",
        tmp_path / "m.safetensors",
        "--format",
        "safetensors",
        "--rename",
        "uniter.encoder.layer.0.output.dense.=x.",
        "--rename",
        "uniter.pooler.dense.=x.",
    )
    assert code == 2 and err.count("\n") == 1
    assert (
        "maps both uniter.encoder.layer.0.output.dense.weight and uniter.pooler.dense.weight onto x.weight"
        in err
    )


def test_a_rename_without_an_equals_sign_is_a_usage_error(capsys, tmp_path, odd) -> None:
    store, _ = odd
    code, _, err = try_export(
        capsys, store, "odd/s60", tmp_path / "m.safetensors", "--format", "safetensors", "--rename", "uniter."
    )
    assert code == 2
    assert "argument --rename: 'uniter.' is not OLD=NEW (e.g. uniter.=bert.)" in err


def test_an_unknown_format_is_an_argparse_choice_error(capsys, tmp_path, odd) -> None:
    store, _ = odd
    out = tmp_path / "masks.pt"
    code, _, err = try_export(capsys, store, "odd/s60", out, "--format", "torch")
    assert code == 2
    assert "argument --format: invalid choice: 'torch' (choose from" in err and "torch-prune" in err
    assert not out.exists()


def test_packed_torch_prune_is_refused_because_prune_needs_full_shape_masks(capsys, tmp_path, odd) -> None:
    store, _ = odd
    code, _, err = try_export(
        capsys, store, "odd/s60", tmp_path / "m.safetensors", "--format", "torch-prune", "--packed"
    )
    assert code == 2
    assert err == (
        "lottery ticket export: error: --packed is for --format safetensors only: "
        "torch-prune needs masks of the weights' shapes\n"
    )


def test_an_export_replaces_the_old_file_whole_and_a_refused_one_keeps_it(capsys, tmp_path, odd) -> None:
    store, ticket = odd
    out_dir = tmp_path / "exports"
    out_dir.mkdir()
    out = out_dir / "masks.safetensors"
    out.write_bytes(b"old")
    export(capsys, store, "odd/s60", out, "--format", "safetensors")
    assert torch.equal(
        safetensors.torch.load_file(out)["uniter.pooler.dense.weight"],
        ticket.masks.masks["uniter.pooler.dense.weight"],
    )
    assert list(out_dir.iterdir()) == [out]  # no temporary left next to it
    before = out.read_bytes()
    code, _, _ = try_export(
        capsys, store, "odd/s60", out, "--format", "safetensors", "--rename", "nothing.=x."
    )
    assert code == 2 and out.read_bytes() == before and list(out_dir.iterdir()) == [out]
