"""`lottery ticket ...` on a tiny UNITER model directory, in process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from ticket_fixtures import run_ticket_cli as run
from tiny import TINY, save_tiny

from lottery.models.uniter import UniterConfig, UniterForPretraining, from_pretrained, save_pretrained
from lottery.sparsity.scope import DEFAULT_SCOPE, model_fingerprint, prunable_parameters
from lottery.tickets import STORE_ENV, TicketStore
from lottery.tickets.jobs import print_table

# 2 layers x (4 x 32x32 + 2 x 32x64) + the 32x32 pooler
PRUNABLE_WEIGHTS = 2 * (4 * 32 * 32 + 2 * 32 * 64) + 32 * 32


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    out = save_tiny(tmp_path_factory.mktemp("models") / "tiny")
    (out / "vocab.txt").write_text("[PAD]\n")  # stands for the tokenizer files apply must carry along
    return out


def cut(capsys, store: Path, model_dir: Path, *extra: str) -> str:
    code, out, err = run(capsys, "cut", "--model", str(model_dir), "--store", str(store), *extra)
    assert code == 0, err
    return out.strip()


def test_cut_prints_the_id_of_a_ticket_at_the_asked_sparsity_that_fits_the_model(
    capsys, tmp_path, model_dir
) -> None:
    ticket_id = cut(
        capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6", "--alias", "tiny/s60"
    )
    ticket = TicketStore(tmp_path).load("tiny/s60")
    assert ticket.id == ticket_id
    assert ticket.masks.total == PRUNABLE_WEIGHTS == 17408
    assert ticket.masks.total - ticket.masks.kept == round(0.6 * 17408) == 10445
    model = from_pretrained(model_dir)
    assert ticket.masks.fingerprint == model_fingerprint(model, DEFAULT_SCOPE)
    assert list(ticket.masks.masks) == list(prunable_parameters(model))
    assert (ticket.meta.family, ticket.meta.model, ticket.meta.method) == ("uniter", "tiny", "magnitude")
    assert len(ticket.meta.config_digest) == 64


def test_cut_twice_gives_the_same_id_and_another_seed_another_ticket(capsys, tmp_path, model_dir) -> None:
    first = cut(capsys, tmp_path, model_dir, "--method", "random", "--sparsity", "0.5", "--seed", "1")
    again = cut(capsys, tmp_path, model_dir, "--method", "random", "--sparsity", "0.5", "--seed", "1")
    other = cut(capsys, tmp_path, model_dir, "--method", "random", "--sparsity", "0.5", "--seed", "2")
    assert first == again != other
    assert TicketStore(tmp_path).ids() == sorted({first, other})


def test_nm_cut_keeps_2_of_every_4(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "nm", "--n", "2", "--m", "4")
    masks = TicketStore(tmp_path).load(ticket_id).masks
    assert masks.sparsity == 0.5
    for mask in masks.masks.values():
        assert (mask.reshape(-1, 4).sum(dim=1) == 2).all()


def test_cut_without_sparsity_or_with_an_unknown_method_is_a_one_line_error(
    capsys, tmp_path, model_dir
) -> None:
    code, _, err = run(
        capsys, "cut", "--model", str(model_dir), "--store", str(tmp_path), "--method", "magnitude"
    )
    assert code == 2
    assert err == "lottery ticket cut: error: --sparsity is required for method 'magnitude'\n"
    code, _, err = run(
        capsys, "cut", "--model", str(model_dir), "--store", str(tmp_path), "--method", "bogus"
    )
    assert code == 2
    assert err == (
        "lottery ticket cut: error: unknown pruning method 'bogus'; "
        "choose one of magnitude, magnitude-layerwise, random, nm\n"
    )


def test_the_store_defaults_to_the_environment_then_to_tickets_in_cwd(
    capsys, tmp_path, model_dir, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(STORE_ENV, raising=False)
    code, out, _ = run(capsys, "cut", "--model", str(model_dir), "--method", "magnitude", "--sparsity", "0.3")
    assert code == 0 and TicketStore(tmp_path / "tickets").ids() == [out.strip()]
    monkeypatch.setenv(STORE_ENV, str(tmp_path / "shared"))
    code, out, _ = run(capsys, "cut", "--model", str(model_dir), "--method", "magnitude", "--sparsity", "0.4")
    assert code == 0 and TicketStore(tmp_path / "shared").ids() == [out.strip()]


def test_show_prints_metadata_and_per_layer_sparsity(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(
        capsys, tmp_path, model_dir, "--method", "magnitude-layerwise", "--sparsity", "0.25", "--alias", "t/a"
    )
    code, out, _ = run(capsys, "show", "t/a", "--store", str(tmp_path))
    assert code == 0
    assert f"ticket         {ticket_id}" in out
    assert "aliases        t/a" in out
    assert "model          uniter tiny" in out
    assert "sparsity       25.00% (4352 of 17408 pruned)" in out
    # layer-wise: every layer at the target, the first one is the max on the tie
    assert "max tensor     25.00% (uniter.encoder.layer.0.attention.self.query.weight)" in out
    for name, param in prunable_parameters(from_pretrained(model_dir)).items():
        row = next(line for line in out.splitlines() if line.startswith(name))
        shape, total = "x".join(map(str, param.shape)), param.numel()
        assert row.split() == [name, shape, str(total * 3 // 4), str(total), "25.00%"]  # no mark
    assert "!! wiped out" not in out and "WARNING" not in out


def test_show_flags_a_tensor_global_magnitude_pruning_wiped_out(capsys, tmp_path) -> None:
    """The measured failure in small: a pooler on a 20x smaller scale than the encoder goes first."""
    torch.manual_seed(0)
    model = UniterForPretraining(TINY)
    with torch.no_grad():
        model.uniter.pooler.dense.weight.mul_(0.05)
    small_pooler = save_pretrained(model, tmp_path / "small-pooler")
    ticket_id = cut(capsys, tmp_path / "store", small_pooler, "--method", "magnitude", "--sparsity", "0.6")
    code, out, _ = run(capsys, "show", ticket_id[:8], "--store", str(tmp_path / "store"))
    assert code == 0
    lines = out.splitlines()
    assert "sparsity       60.00% (10445 of 17408 pruned)" in lines
    assert "max tensor     100.00% (uniter.pooler.dense.weight)" in lines
    pooler = next(line for line in lines if line.startswith("uniter.pooler.dense.weight"))
    assert pooler.split() == [
        "uniter.pooler.dense.weight",
        "32x32",
        "0",
        "1024",
        "100.00%",
        "!!",
        "wiped",
        "out",
    ]
    assert sum("!! wiped out" in line for line in lines) == 1
    header = next(line for line in lines if line.startswith("parameter"))
    assert pooler.index("100.00%") + len("100.00%") == header.index("sparsity") + len("sparsity")  # aligned
    assert lines[-1] == (
        f"WARNING: ticket {ticket_id[:12]} wipes out 1 prunable tensor (>= 99% of its weights pruned): "
        "uniter.pooler.dense.weight 100.00%; such a tensor passes on (nearly) its bias alone (a wiped-out "
        "pooler makes the pooled output, and every answer from it, a constant)"
    )


def test_show_of_a_damaged_ticket_names_the_file_and_the_problem(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    path = TicketStore(tmp_path).object_path(ticket_id)
    path.write_bytes(path.read_bytes()[:-9])
    code, out, err = run(capsys, "show", ticket_id, "--store", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.startswith(f"lottery ticket show: error: {path}: hash check failed")
    assert "file truncated/unreadable safetensors" in err and err.count("\n") == 1


def test_list_shows_short_ids_aliases_and_sparsity(capsys, tmp_path, model_dir) -> None:
    code, out, _ = run(capsys, "list", "--store", str(tmp_path))
    assert (code, out) == (0, f"no tickets in {tmp_path}\n")
    ticket_id = cut(
        capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6", "--alias", "tiny/s60"
    )
    code, out, _ = run(capsys, "list", "--store", str(tmp_path))
    row = next(line for line in out.splitlines() if ticket_id[:12] in line)
    for cell in ("tiny/s60", "tiny", "magnitude", "60.00%"):
        assert cell in row


def test_list_of_a_store_that_does_not_exist_is_one_line_on_stderr_with_exit_2(capsys, tmp_path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    code, out, err = run(capsys, "list", "--store", str(missing))
    assert (code, out) == (2, "")
    assert err == (
        f"lottery ticket list: error: {missing}: no ticket store there, the directory does not exist; "
        "give the store's directory with --store or $LOTTERY_TICKET_STORE\n"
    )
    assert not missing.exists()


def test_list_of_a_directory_of_other_files_is_refused_as_not_a_ticket_store(capsys, tmp_path) -> None:
    (tmp_path / "config.json").write_text("{}")
    code, out, err = run(capsys, "list", "--store", str(tmp_path))
    assert (code, out) == (2, "")
    assert err == (
        f"lottery ticket list: error: {tmp_path}: not a ticket store, it holds none of objects/, refs/, tmp/, "
        "log.jsonl; give the store's directory with --store or $LOTTERY_TICKET_STORE\n"
    )


def test_verify_names_the_checks_that_passed(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    code, out, _ = run(capsys, "verify", ticket_id[:8], "--store", str(tmp_path), "--model", str(model_dir))
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == f"OK {ticket_id[:8]}"
    assert lines[1].startswith("  hash: content sha256 matches id")
    assert lines[2].startswith("  format: vl-lottery-ticket v1, 13 masks")
    assert lines[3].startswith("  fingerprint:") and "matches model tiny" in lines[3]


def test_verify_against_another_model_fails_the_fingerprint_check_with_exit_1(
    capsys, tmp_path, model_dir
) -> None:
    other = save_tiny(
        tmp_path / "wide", UniterConfig(**{**TINY.__dict__, "name": "wide", "intermediate_size": 128})
    )
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    code, out, err = run(capsys, "verify", ticket_id, "--store", str(tmp_path), "--model", str(other))
    assert (code, out) == (1, "")
    assert err.startswith(f"FAILED {TicketStore(tmp_path).object_path(ticket_id)}: fingerprint check failed")
    assert "does not match model wide" in err


def test_verify_with_another_scope_fails_the_scope_check(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    argv = [
        "verify",
        ticket_id,
        "--store",
        str(tmp_path),
        "--model",
        str(model_dir),
        "--scope",
        r".*pooler\.dense\.weight",
    ]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "scope check failed: scope differs" in err


def test_verify_of_a_corrupted_object_fails_the_hash_check(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    path = TicketStore(tmp_path).object_path(ticket_id)
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))
    code, _, err = run(capsys, "verify", ticket_id, "--store", str(tmp_path), "--model", str(model_dir))
    assert code == 1 and err.startswith(f"FAILED {path}: hash check failed")


def test_a_cut_with_its_own_scope_verifies_with_that_scope(capsys, tmp_path, model_dir) -> None:
    scope = r".*intermediate\.dense\.weight"
    ticket_id = cut(
        capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.5", "--scope", scope
    )
    assert list(TicketStore(tmp_path).load(ticket_id).masks.masks) == [
        "uniter.encoder.layer.0.intermediate.dense.weight",
        "uniter.encoder.layer.1.intermediate.dense.weight",
    ]
    argv = ["verify", ticket_id, "--store", str(tmp_path), "--model", str(model_dir), "--scope", scope]
    code, out, _ = run(capsys, *argv)
    assert code == 0 and "  scope: equal to the given scope (1 patterns)" in out


def test_alias_points_a_name_at_a_ticket_and_refuses_bad_names(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    code, out, _ = run(capsys, "alias", "tiny/pretrain/s60", ticket_id[:10], "--store", str(tmp_path))
    assert (code, out) == (0, f"tiny/pretrain/s60 -> {ticket_id}\n")
    assert TicketStore(tmp_path).resolve("tiny/pretrain/s60") == ticket_id
    code, _, err = run(capsys, "alias", "../outside", ticket_id, "--store", str(tmp_path))
    assert code == 2 and err.startswith(
        "lottery ticket alias: error: alias '../outside': must be a relative path"
    )


def test_an_unknown_ticket_is_one_line_on_stderr_with_exit_2(capsys, tmp_path) -> None:
    code, out, err = run(capsys, "show", "nope/s60", "--store", str(tmp_path))
    assert (code, out) == (2, "")
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"lottery ticket show: error: {tmp_path}: no ticket 'nope/s60'")


def test_apply_writes_a_model_dir_with_exactly_the_pruned_weights_zeroed(capsys, tmp_path, model_dir) -> None:
    ticket_id = cut(
        capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6", "--alias", "tiny/s60"
    )
    out_dir = tmp_path / "tiny-s60"
    code, _, err = run(
        capsys,
        "apply",
        "tiny/s60",
        "--store",
        str(tmp_path),
        "--model",
        str(model_dir),
        "--out",
        str(out_dir),
    )
    assert code == 0, err
    dense, pruned = from_pretrained(model_dir), from_pretrained(out_dir)
    masks = TicketStore(tmp_path).load(ticket_id).masks.masks
    for name, value in pruned.state_dict().items():
        if name in masks:
            assert torch.equal(value, dense.get_parameter(name) * masks[name])
            assert int((value == 0).sum()) >= int((~masks[name]).sum())
        else:
            assert torch.equal(value, dense.state_dict()[name])
    assert (out_dir / "vocab.txt").read_text() == "[PAD]\n"
    code, _, err = run(
        capsys,
        "apply",
        "tiny/s60",
        "--store",
        str(tmp_path),
        "--model",
        str(model_dir),
        "--out",
        str(out_dir),
    )
    assert code == 2 and "already exists" in err


def test_apply_to_a_fine_tuned_directory_zeroes_the_backbone_and_keeps_the_head(capsys, tmp_path, model_dir):
    from lottery.models.uniter import TaskHead, from_finetuned, save_finetuned, task_head
    from lottery.tasks.downstream.model import UniterForTask

    torch.manual_seed(0)
    task_model = UniterForTask(TINY, "vqa", num_outputs=5)
    finetuned = tmp_path / "vqa-model"
    finetuned.mkdir()
    save_finetuned(task_model.state_dict(), TINY, TaskHead("vqa", 5, tuple("abcde")), finetuned)
    (finetuned / "vocab.txt").write_text("[PAD]\n")
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    out_dir = tmp_path / "vqa-s60"
    code, _, err = run(
        capsys, "apply", ticket_id, "--store", str(tmp_path), "--model", str(finetuned), "--out", str(out_dir)
    )
    assert code == 0, err
    pruned, masks = from_finetuned(out_dir), TicketStore(tmp_path).load(ticket_id).masks.masks
    assert task_head(out_dir) == TaskHead("vqa", 5, tuple("abcde"))
    for name, value in pruned.state_dict().items():
        want = task_model.state_dict()[name]
        assert torch.equal(value, want * masks[name] if name in masks else want), name
    assert (out_dir / "vocab.txt").read_text() == "[PAD]\n"


def test_apply_to_another_model_is_refused_before_writing_anything(capsys, tmp_path, model_dir) -> None:
    other = save_tiny(
        tmp_path / "wide", UniterConfig(**{**TINY.__dict__, "name": "wide", "intermediate_size": 128})
    )
    ticket_id = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6")
    out_dir = tmp_path / "out"
    code, _, err = run(
        capsys, "apply", ticket_id, "--store", str(tmp_path), "--model", str(other), "--out", str(out_dir)
    )
    assert code == 2 and "fingerprint check failed" in err and "does not match model wide" in err
    assert not out_dir.exists()


def test_tables_fall_back_to_plain_aligned_text_without_rich(capsys, monkeypatch) -> None:
    for module in ("rich", "rich.console", "rich.table"):
        monkeypatch.setitem(sys.modules, module, None)
    print_table(["parameter", "sparsity"], [["a.weight", "60.00%"], ["longer.name.weight", "5.00%"]])
    assert capsys.readouterr().out.splitlines() == [
        "parameter           sparsity",
        "------------------  --------",
        "a.weight            60.00%",
        "longer.name.weight  5.00%",
    ]


def test_resolve_prints_full_ids_in_order_and_a_missing_alias_is_one_line_naming_it(
    capsys, tmp_path, model_dir
) -> None:
    """What slurm/universal.sh plans a fine-tuning array with: ids, not aliases that may move."""
    first = cut(capsys, tmp_path, model_dir, "--method", "magnitude", "--sparsity", "0.6", "--alias", "t/s60")
    plan = tmp_path / "plan" / "tickets.txt"
    plan.parent.mkdir()
    code, out, _ = run(
        capsys, "resolve", "--store", str(tmp_path), "--out", str(plan), "dense", "t/s60", first[:8]
    )
    assert code == 0 and out.split() == ["dense", first, first] == plan.read_text().split()
    code, out, err = run(capsys, "resolve", "--store", str(tmp_path), "--out", str(plan), "t/s60", "t/s70")
    assert code == 2 and out == "" and len(err.strip().splitlines()) == 1 and "'t/s70'" in err
    assert plan.read_text().split() == ["dense", first, first], "a failed plan replaced the last good one"
