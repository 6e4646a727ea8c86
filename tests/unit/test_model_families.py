"""Model families: a directory says its family, jobs build and check by family, tickets do not cross them."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from lottery.config import ConfigError, ModelConfig, load_config
from lottery.models.families import FAMILIES, family_of
from lottery.models.uniter import ModelDirError


@pytest.fixture(scope="module")
def lxmert_dir(tmp_path_factory, shapes_dir):
    from lottery.train.assets import ensure_model

    out = tmp_path_factory.mktemp("models") / "lxmert-mini"
    return ensure_model(ModelConfig(dir=str(out), family="lxmert"), shapes_dir)


def test_a_built_lxmert_directory_fits_the_data_and_says_its_family(lxmert_dir, shapes_dir):
    from lottery.train.assets import data_meta

    meta = data_meta(shapes_dir)
    assert family_of(lxmert_dir).name == "lxmert"
    assert FAMILIES["lxmert"].input_sizes(lxmert_dir) == (int(meta["feat_dim"]), len(meta["class_names"]))
    assert (lxmert_dir / "vocab.txt").is_file()  # the tokenizer travels with the model
    model = FAMILIES["lxmert"].load(lxmert_dir)
    assert model.config.name == "lxmert-mini" and len(model.prunable()) == 69


def test_uniter_directories_old_and_new_are_uniter(mini_model_dir, tmp_path):
    assert family_of(mini_model_dir).name == "uniter"
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    config = json.loads((mini_model_dir / "config.json").read_text())
    (legacy / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in ("model_type", "architectures")})
    )
    assert family_of(legacy).name == "uniter"


def test_a_directory_of_no_family_is_refused_naming_its_file(tmp_path):
    with pytest.raises(ModelDirError, match="config.json is missing"):
        family_of(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "clip"}))
    with pytest.raises(ModelDirError, match=r"config.json: model_type 'clip' is none of the families"):
        family_of(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ModelDirError, match="config.json: not valid JSON"):
        family_of(tmp_path)


def test_a_job_of_one_family_refuses_a_model_directory_of_another(mini_model_dir, lxmert_dir, shapes_dir):
    from lottery.train.assets import ensure_model

    with pytest.raises(ConfigError, match=r"is a uniter model but model.family is lxmert"):
        ensure_model(ModelConfig(dir=str(mini_model_dir), family="lxmert"), shapes_dir)
    with pytest.raises(ConfigError, match=r"is a lxmert model but model.family is uniter"):
        ensure_model(ModelConfig(dir=str(lxmert_dir)), shapes_dir)


def test_a_task_mix_may_only_name_the_familys_tasks():
    with pytest.raises(ConfigError, match=r"lxmert has no task\(s\) \['mrckl'\]; its pre-training tasks are"):
        load_config("pretrain-lxmert-mini", ["tasks.mix={itm: 1, mrckl: 1}"])
    with pytest.raises(ConfigError, match=r"uniter has no task\(s\) \['obj'\]"):
        load_config("pretrain-uniter-mini", ["tasks.mix={itm: 1, obj: 1}"])
    assert load_config("pretrain-lxmert-mini", []).model.family == "lxmert"


def test_a_uniter_ticket_is_refused_by_an_lxmert_model_naming_both(
    tmp_path, mini_model_dir, lxmert_dir, capsys
):
    from lottery.cli import main
    from lottery.tickets.distributed import load_broadcast
    from lottery.tickets.format import TicketError

    assert main(
        [
            "ticket",
            "cut",
            "--model",
            str(mini_model_dir),
            "--store",
            str(tmp_path),
            "--method",
            "random",
            "--sparsity",
            "0.5",
        ]
    ) in (0, None)
    ticket_id = capsys.readouterr().out.strip().splitlines()[-1]
    model = FAMILIES["lxmert"].load(lxmert_dir)
    with pytest.raises(TicketError, match=r"cut from uniter uniter-mini\) does not match model lxmert-mini"):
        load_broadcast(
            tmp_path,
            ticket_id,
            expect_fingerprint=model.fingerprint,
            expect_scope=None,
            model_name="lxmert-mini",
        )


def test_model_init_builds_either_family_from_the_command_line(tmp_path, shapes_dir):
    out = tmp_path / "lx"
    done = subprocess.run(
        [sys.executable, "-m", "lottery", "model", "init", "--family", "lxmert", "--out", str(out), "--data", str(shapes_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "lxmert initialised from minilm" in done.stdout and family_of(out).name == "lxmert"
    refused = subprocess.run(
        [sys.executable, "-m", "lottery", "model", "init", "--family", "clip", "--out", str(tmp_path / "c")],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert refused.returncode == 2 and "invalid choice: 'clip'" in refused.stderr
    no_images = subprocess.run(
        [sys.executable, "-m", "lottery", "model", "init", "--family", "vilt", "--out", str(tmp_path / "v"), "--data", str(shapes_dir)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert no_images.returncode == 2 and "a patch model (vilt) needs images but" in no_images.stderr
    assert len(no_images.stderr.strip().splitlines()) == 1 and not (tmp_path / "v").exists()


def test_a_vilt_ticket_is_refused_by_a_uniter_model_naming_both(
    tmp_path, mini_model_dir, vilt_model_dir, capsys
):
    from lottery.cli import main
    from lottery.tickets.distributed import load_broadcast
    from lottery.tickets.format import TicketError

    cut = ["ticket", "cut", "--model", str(vilt_model_dir), "--store", str(tmp_path), "--method", "random"]
    assert main([*cut, "--sparsity", "0.3"]) in (0, None)
    ticket_id = capsys.readouterr().out.strip().splitlines()[-1]
    model = FAMILIES["uniter"].load(mini_model_dir)
    with pytest.raises(TicketError, match=r"cut from vilt vilt-mini\) does not match model uniter-mini"):
        load_broadcast(
            tmp_path,
            ticket_id,
            expect_fingerprint=model.fingerprint,
            expect_scope=None,
            model_name="uniter-mini",
        )
    # `ticket apply` writes a pruned directory of the model's own family
    out = tmp_path / "vilt-s30"
    apply = [
        "ticket",
        "apply",
        ticket_id,
        "--store",
        str(tmp_path),
        "--model",
        str(vilt_model_dir),
        "--out",
        str(out),
    ]
    assert main(apply) in (0, None)
    assert family_of(out).name == "vilt"
    pruned = FAMILIES["vilt"].load(out)
    params = dict(pruned.named_parameters())
    zeros = sum(int((params[name] == 0).sum()) for name in pruned.prunable())
    assert zeros / sum(params[name].numel() for name in pruned.prunable()) == pytest.approx(0.3, abs=0.01)


def test_a_patch_model_and_a_region_model_each_refuse_data_that_lacks_their_input(
    vilt_model_dir, rendered_shapes_dir, shapes_dir, mini_model_dir
):
    from lottery.train.assets import ensure_model

    assert family_of(vilt_model_dir).name == "vilt"
    assert FAMILIES["vilt"].patch_grid(vilt_model_dir).image_size == 32
    # the rendered world keeps its region features: a region model reads it as well
    ensure_model(ModelConfig(dir=str(mini_model_dir)), rendered_shapes_dir)
    ensure_model(ModelConfig(dir=str(vilt_model_dir), family="vilt"), rendered_shapes_dir)
    with pytest.raises(
        ConfigError, match=r"is a patch model \(vilt\) but .* has no images; build the shapes"
    ):
        ensure_model(ModelConfig(dir=str(vilt_model_dir), family="vilt"), shapes_dir)


def test_one_reading_of_the_data_answers_both_the_build_and_the_fit_check(tmp_path):
    from lottery.train.assets import build_model_from_bert, data_inputs

    (tmp_path / "meta.json").write_text('{"image_field": "image.png", "image_size": 32}')
    inputs = data_inputs(tmp_path)
    assert inputs.images("a patch model") == 32 and inputs.feat_dim is None
    with pytest.raises(ConfigError, match=r"a uniter model reads region features but .* holds images only"):
        build_model_from_bert("minilm", tmp_path / "m", data_dir=tmp_path)
    assert not (tmp_path / "m").exists()
