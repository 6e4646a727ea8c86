"""Every bad input a user can hand the `lottery` command is refused the same way (issue 24): exit code 2,
one line on stderr naming the file (or key) and the problem, and nothing written: the output directory
or file is absent (or unchanged) and no temporary file is left. Each test runs the real command in
process on the session's small shapes world and uniter-mini, or on a tiny model of tests/tiny.py.

Nothing the commands read is unpickled: tickets, model directories and shards are safetensors or
``np.load(allow_pickle=False)``; original UNITER checkpoints go through ``torch.load(weights_only=True)``;
and DeepSpeed's resume, whose own loader passes ``weights_only=False``, loads through
`lottery.train.weights_only`, which the last test proves with a planted pickle that would create a file.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import tarfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from conftest import quick_overrides, run
from tiny import TINY, save_tiny

from lottery.models.uniter import TIED_WEIGHTS, UniterForPretraining, preset


def one_line_exit_2(capsys, *argv: object) -> str:
    """The command's one stderr line, after checking it is one line, no traceback, exit code 2."""
    code, _, err = run_cli(capsys, *map(str, argv))
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, err)
    assert "Traceback" not in err
    return lines[0]


def files_under(root: Path) -> dict[str, int]:
    """relative path -> size of every file under `root`: what a refused command must leave unchanged."""
    return {str(p.relative_to(root)): p.stat().st_size for p in sorted(root.rglob("*")) if p.is_file()}


# --- shards -----------------------------------------------------------------------------------------


def copy_world(shapes_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(shapes_dir, tmp_path / "shapes"))


def edit_first_val_sample(data_dir: Path, change: Callable[[dict[str, bytes]], None]) -> Path:
    """Rewrite val-000000.tar with its first sample's fields (field -> encoded bytes) changed by `change`."""
    shard = data_dir / "val-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    key = members[0][0].split(".")[0]
    first = {name.split(".", 1)[1]: data for name, data in members if name.startswith(f"{key}.")}
    change(first)
    rest = [(name, data) for name, data in members if not name.startswith(f"{key}.")]
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [(f"{key}.{field}", data) for field, data in sorted(first.items())] + rest:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return shard


def npy(array: np.ndarray) -> bytes:
    stream = io.BytesIO()
    np.lib.format.write_array(stream, array, allow_pickle=False)
    return stream.getvalue()


def features(fields: dict[str, bytes]) -> np.ndarray:
    return np.load(io.BytesIO(fields["feat.npy"]), allow_pickle=False)


def pretrain_argv(run_dir: Path, data_dir: Path, model_dir: Path, **extra: object) -> list[str]:
    """A 2-step pretrain that stops after step 1 and checkpoints it: the smallest run that resumes."""
    values = {
        "train.steps": 2,
        "train.stop_after_steps": 1,
        "train.batch_size": 2,
        "train.val_batches": 1,
        "train.val_every": 0,
        "train.ckpt_every": 1,
        **extra,
    }
    return ["pretrain", *quick_overrides(run_dir, data_dir, model_dir, **values)]


def test_a_truncated_shard_is_refused_by_pretrain_before_its_run_directory_exists(
    capsys, tmp_path, shapes_dir, mini_model_dir
):
    data = copy_world(shapes_dir, tmp_path)
    shard = data / "train-000002.tar"
    shard.write_bytes(shard.read_bytes()[:300_000])
    run_dir = tmp_path / "run"
    line = one_line_exit_2(capsys, *pretrain_argv(run_dir, data, mini_model_dir))
    assert line.startswith(
        f"lottery: data refused: shard {shard}: truncated: 300000 bytes, no end-of-archive"
    )
    assert not run_dir.exists()


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (
            lambda s: s.pop("box.npy"),
            "missing field(s) ['box.npy'] (present: ['feat.npy', 'json', 'soft.npy']); a sample needs regions, "
            "an image or both",
        ),
        (
            lambda s: s.update({"feat.npy": npy(features(s)[:, :100])}),
            "feat.npy has shape (7, 100); expected (N, 256): meta.json's feat_dim",
        ),
        (
            lambda s: s.update({"feat.npy": npy(features(s).astype(np.float32))}),
            "feat.npy has dtype float32; expected float16",
        ),
        (
            lambda s: s.update({"feat.npy": npy(np.full_like(features(s), np.nan))}),
            "feat.npy has 1792 non-finite values",
        ),
    ],
    ids=["missing-field", "wrong-shape", "wrong-dtype", "nan"],
)
def test_a_bad_sample_is_refused_naming_its_shard_its_key_and_the_problem(
    capsys, tmp_path, shapes_dir, mini_model_dir, change, problem
):
    """`lottery eval` reads the val shards through the training reader; it writes nothing."""
    data = copy_world(shapes_dir, tmp_path)
    shard = edit_first_val_sample(data, change)
    before = files_under(tmp_path)
    line = one_line_exit_2(capsys, "eval", "--model", mini_model_dir, "--data", data, "--samples", 8)
    assert line.startswith(f"lottery: data refused: shard {shard}, sample 'val-00000000': {problem}; rebuild")
    assert files_under(tmp_path) == before


# --- tickets ----------------------------------------------------------------------------------------


@pytest.fixture
def tiny_store(capsys, tmp_path) -> tuple[Path, Path, Path]:
    """(store, tiny model dir, the path of ticket tiny/s50 in the store): a magnitude ticket at 50%."""
    model = save_tiny(tmp_path / "tiny")
    store = tmp_path / "store"
    code, out, err = run_cli(
        capsys, "ticket", "cut", "--model", str(model), "--store", str(store), "--method", "magnitude",
        "--sparsity", "0.5", "--alias", "tiny/s50",
    )  # fmt: skip
    assert code == 0, err
    return store, model, store / "objects" / f"{out.strip()}.safetensors"


def apply_refused(capsys, store: Path, ref: str, model: Path, out: Path) -> str:
    """The one line of a refused `lottery ticket apply`, after checking it wrote nothing."""
    line = one_line_exit_2(capsys, "ticket", "apply", ref, "--model", model, "--out", out, "--store", store)
    assert not out.exists() and not list(out.parent.glob(f".{out.name}*"))  # no output, no partial dir
    assert not any((store / "tmp").iterdir())
    return line


def test_a_ticket_with_a_flipped_byte_fails_its_hash_check(capsys, tmp_path, tiny_store):
    store, model, ticket = tiny_store
    data = bytearray(ticket.read_bytes())
    data[-3] ^= 0xFF
    ticket.write_bytes(bytes(data))
    line = apply_refused(capsys, store, "tiny/s50", model, tmp_path / "out")
    assert line.startswith(f"lottery ticket apply: error: {ticket}: hash check failed: content sha256 ")
    assert "(file corrupted or edited)" in line


def test_a_truncated_ticket_fails_its_hash_check_saying_it_is_cut_short(capsys, tmp_path, tiny_store):
    store, model, ticket = tiny_store
    ticket.write_bytes(ticket.read_bytes()[:200])
    line = apply_refused(capsys, store, "tiny/s50", model, tmp_path / "out")
    assert line.startswith(f"lottery ticket apply: error: {ticket}: hash check failed")
    assert "file truncated/unreadable safetensors" in line


def test_a_ticket_whose_header_claims_a_huge_shape_is_refused_before_allocating_it(
    capsys, tmp_path, tiny_store
):
    """A crafted ticket stored under its own hash (so the hash check passes) claims a 2**40-weight
    mask: refused from the byte count alone (unpacking would need 1 TB)."""
    store, model, ticket = tiny_store
    good = ticket.read_bytes()
    length = int.from_bytes(good[:8], "little")
    header = json.loads(good[8 : 8 + length])
    shapes = json.loads(header["__metadata__"]["shapes"])
    name = next(iter(shapes))
    shapes[name] = [1 << 20, 1 << 20]
    header["__metadata__"]["shapes"] = json.dumps(shapes, separators=(",", ":"))
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    crafted = len(text).to_bytes(8, "little") + text + good[8 + length :]
    crafted_id = hashlib.sha256(crafted).hexdigest()
    (store / "objects" / f"{crafted_id}.safetensors").write_bytes(crafted)
    line = apply_refused(capsys, store, crafted_id, model, tmp_path / "out")
    assert f"layout check failed: mask {name}: 128 bytes cannot hold 1099511627776 bits" in line


def test_a_ticket_of_another_model_size_fails_the_fingerprint_check_naming_both(capsys, tmp_path, tiny_store):
    store, _, ticket = tiny_store
    small = save_tiny(
        tmp_path / "small", replace(TINY, name="tiny-small", hidden_size=16, intermediate_size=32)
    )
    line = apply_refused(capsys, store, "tiny/s50", small, tmp_path / "out")
    assert f"{ticket}: fingerprint check failed: fingerprint " in line
    assert "(cut from uniter tiny) does not match model tiny-small" in line


def test_a_ticket_of_another_family_fails_the_fingerprint_check_naming_its_family(
    capsys, tmp_path, tiny_store
):
    from transformers import LxmertConfig

    from lottery.models.lxmert import LxmertForLotteryPretraining
    from lottery.models.lxmert import save_pretrained as save_lxmert

    store, model, _ = tiny_store
    config = LxmertConfig(
        vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64, l_layers=2, x_layers=1,
        r_layers=1, visual_feat_dim=16, num_object_labels=5, task_qa=False, visual_attr_loss=False,
        name="lxmert-tiny",
    )  # fmt: skip
    lxmert = save_lxmert(LxmertForLotteryPretraining(config), tmp_path / "lxmert")
    code, _, err = run_cli(
        capsys, "ticket", "cut", "--model", str(lxmert), "--store", str(store), "--method", "magnitude",
        "--sparsity", "0.5", "--alias", "lxmert/s50",
    )  # fmt: skip
    assert code == 0, err
    line = apply_refused(capsys, store, "lxmert/s50", model, tmp_path / "out")
    assert "fingerprint check failed" in line and "(cut from lxmert lxmert-tiny) does not match model" in line


def test_a_ticket_of_another_scope_is_refused_by_pretrain_before_its_run_directory_exists(
    capsys, tmp_path, tiny_store, shapes_dir, mini_model_dir
):
    store, _, ticket = tiny_store
    run_dir = tmp_path / "run"
    argv = pretrain_argv(
        run_dir, shapes_dir, mini_model_dir,
        **{"sparsity.ticket": "tiny/s50", "sparsity.store": store, "sparsity.scope": r"['uniter\.encoder\..*']"},
    )  # fmt: skip
    line = one_line_exit_2(capsys, *argv)
    assert line.startswith(f"lottery: ticket refused: sparsity.ticket=tiny/s50: {ticket}: scope check failed")
    assert not run_dir.exists()


def test_an_alias_that_does_not_exist_is_refused_with_the_closest_ones(capsys, tmp_path, tiny_store):
    store, model, _ = tiny_store
    line = apply_refused(capsys, store, "tiny/s5O", model, tmp_path / "out")
    assert line == (
        f"lottery ticket apply: error: {store}: no ticket 'tiny/s5O' (not an id, unique id prefix or alias); "
        "close matches: tiny/s50"
    )


@pytest.mark.parametrize("name", ["../outside", "tiny/../../outside", "/tmp/outside"])
def test_an_alias_with_dots_or_a_leading_slash_is_refused_and_nothing_is_written(
    capsys, tmp_path, tiny_store, name
):
    store, _, _ = tiny_store
    before = files_under(tmp_path)
    line = one_line_exit_2(capsys, "ticket", "alias", name, "tiny/s50", "--store", store)
    assert line.startswith(f"lottery ticket alias: error: alias {name!r}: must be a relative path")
    assert files_under(tmp_path) == before and not (tmp_path / "outside").exists()


# --- configs ----------------------------------------------------------------------------------------


def test_a_ds_json_with_an_unknown_key_is_refused_naming_the_file_and_the_key(capsys, tmp_path):
    layout = tmp_path / "mine.json"
    layout.write_text('{"zero_optimization": {"stage": 2}, "gradient_clippng": 1.0}')
    run_dir = tmp_path / "run"
    line = one_line_exit_2(
        capsys, "pretrain", f"train.ds_config={layout}", "train.zero_stage=2", f"run_dir={run_dir}"
    )
    assert line == (
        f"lottery: config error: {layout}: 'gradient_clippng' is not a DeepSpeed config key (did you mean "
        "'gradient_clipping'?); DeepSpeed would ignore it without a word, so fix or remove it"
    )
    assert not run_dir.exists()


def test_a_run_config_value_of_the_wrong_type_is_refused_naming_the_key(capsys, tmp_path):
    run_dir = tmp_path / "run"
    line = one_line_exit_2(capsys, "pretrain", "train.steps=abc", f"run_dir={run_dir}")
    assert line == "lottery: config error: pretrain-uniter-mini: train.steps: expected int, got 'abc'"
    config = tmp_path / "list.yaml"
    config.write_text(f"run_dir: {run_dir}\ntrain:\n  steps: [1, 2]\n")
    line = one_line_exit_2(capsys, "pretrain", "--config", config)
    assert line == f"lottery: config error: {config}: train.steps: expected int, got [1, 2]"
    assert not run_dir.exists()


# --- model weights ----------------------------------------------------------------------------------


def cut_exit_2(capsys, model: Path, store: Path) -> str:
    """`lottery ticket cut` of a 50% magnitude ticket from `model` into `store`, expected to fail (exit 2)."""
    argv = ("ticket", "cut", "--model", model, "--store", store, "--method", "magnitude", "--sparsity", 0.5)
    return one_line_exit_2(capsys, *argv)


def test_ticket_cut_of_another_models_weights_under_a_config_is_refused(capsys, tmp_path):
    """A model directory whose model.safetensors is another size's: the cut would record a ticket of
    shapes the config's model does not have."""
    model = save_tiny(tmp_path / "tiny")
    other = save_tiny(tmp_path / "small", replace(TINY, hidden_size=16, intermediate_size=32))
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    store = tmp_path / "store"
    line = cut_exit_2(capsys, model, store)
    assert line.startswith(
        f"lottery ticket cut: error: {model / 'model.safetensors'}: weights of another model than "
        f"{model / 'config.json'} describes (13 prunable tensors differ, e.g. "
    )
    assert not store.exists()


def test_eval_of_another_models_weights_names_the_file_and_the_first_mismatches(capsys, tmp_path, shapes_dir):
    model = save_tiny(tmp_path / "tiny")
    other = save_tiny(tmp_path / "small", replace(TINY, hidden_size=16, intermediate_size=32))
    shutil.copy(other / "model.safetensors", model / "model.safetensors")
    line = one_line_exit_2(capsys, "eval", "--model", model, "--data", shapes_dir)
    assert line.startswith(
        f"lottery: model refused: {model / 'model.safetensors'} does not match its config 'tiny'"
    )
    assert line.endswith(" more") and line.count(": expected ") == 5


def original_uniter_base(path: Path, rename: tuple[str, str] | None = None) -> Path:
    """An original UNITER-base state dict on the meta device: every key and shape, no weights (22 KB)."""
    with torch.device("meta"):
        state = {k: v for k, v in UniterForPretraining(preset("uniter-base")).state_dict().items()}
    for alias in TIED_WEIGHTS:  # the original holds the tied pair or either one
        state.pop(alias)
    if rename is not None:
        state[rename[1]] = state.pop(rename[0])
    torch.save(state, path)
    return path


def test_an_original_uniter_checkpoint_with_a_renamed_key_is_refused_naming_both_keys(capsys, tmp_path):
    query = "uniter.encoder.layer.0.attention.self.query.weight"
    original = original_uniter_base(
        tmp_path / "uniter.pt", (query, "uniter.encoder.layer.0.attention.self.q.weight")
    )
    out = tmp_path / "converted"
    line = one_line_exit_2(
        capsys, "model", "convert", "--from-original", original, "--config", "uniter-base", "--out", out
    )
    assert line == (
        f"lottery: --from-original {original} does not convert to UNITER 'uniter-base': "
        f"unexpected keys ['uniter.encoder.layer.0.attention.self.q.weight']; missing keys ['{query}']"
    )
    assert not out.exists()


class Planted:
    """A pickle that creates `marker` when it is unpickled: what loading untrusted code would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_given_as_an_original_checkpoint_is_refused_without_running_it(capsys, tmp_path):
    marker = tmp_path / "ran"
    planted = tmp_path / "uniter.pt"
    torch.save({"uniter.pooler.dense.weight": Planted(marker)}, planted)
    out = tmp_path / "converted"
    line = one_line_exit_2(
        capsys, "model", "convert", "--from-original", planted, "--config", "uniter-base", "--out", out
    )
    assert line == (
        f"lottery: --from-original {planted}: not a weights-only torch checkpoint "
        "(it calls io.open, so it was not unpickled)"
    )
    assert not marker.exists() and not out.exists()


def test_a_pickle_in_place_of_model_safetensors_is_refused_by_eval_and_by_cut(capsys, tmp_path, shapes_dir):
    marker = tmp_path / "ran"
    model = save_tiny(tmp_path / "tiny")
    torch.save({"uniter.pooler.dense.weight": Planted(marker)}, model / "model.safetensors")
    weights = model / "model.safetensors"
    line = one_line_exit_2(capsys, "eval", "--model", model, "--data", shapes_dir)
    assert line.startswith(f"lottery: model refused: {weights}: not a readable safetensors file: ")
    store = tmp_path / "store"
    line = cut_exit_2(capsys, model, store)
    assert line.startswith(f"lottery ticket cut: error: {weights}: not a readable safetensors file: ")
    assert not marker.exists() and not store.exists()


def test_a_pickle_planted_in_a_deepspeed_checkpoint_is_not_run_on_resume(
    capsys, tmp_path, shapes_dir, mini_model_dir
):
    """DeepSpeed's own loader unpickles with weights_only=False; the run's engine loads weights-only,
    so the planted file is refused, one line naming it, and the run directory is left as it was."""
    run_dir = tmp_path / "run"
    argv = pretrain_argv(run_dir, shapes_dir, mini_model_dir)
    code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    states = run_dir / "checkpoints" / "step_000001" / "mp_rank_00_model_states.pt"
    marker = tmp_path / "ran"
    torch.save({"module": Planted(marker), "step": 1}, states)
    before = files_under(run_dir)
    # a second engine in one process trips DeepSpeed's cached process groups: the resume is its own
    # process (conftest.run gives it a rendezvous of its own)
    resumed = run([sys.executable, "-m", "lottery", *argv], timeout=300, check=False)
    assert resumed.returncode == 2 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    assert resumed.stderr.strip().splitlines()[-1] == (
        f"lottery: checkpoint refused: {states}: not a checkpoint of tensors (it calls io.open), so it "
        f"was not loaded; this run never wrote it: delete {states.parent} to resume from the checkpoint before, "
        "or use a new run_dir"
    )
    assert not marker.exists()
    assert files_under(run_dir) == before
