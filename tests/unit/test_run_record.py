"""One run identity: placement fields (marked in config.py) never change a run's digest, the rest do."""

from __future__ import annotations

from dataclasses import fields, is_dataclass

import pytest

from lottery.config import NOT_IDENTITY, ConfigError, FinetuneConfig, ImpConfig, PretrainConfig, load_config
from lottery.run_record import DONE, identity_view, is_done, mark_done, run_digest

PLACEMENT_OVERRIDES = [
    "train.log_every=3",
    "train.val_every=7",
    "train.ckpt_every=5",
    "train.stop_after_steps=2",
    "train.report_to=csv",
]


def _marked(cls) -> set[str]:
    found = set()
    for item in fields(cls):
        if NOT_IDENTITY in item.metadata:
            found.add(item.name)
        default = item.default_factory() if callable(item.default_factory) else item.default
        if is_dataclass(default):
            found |= {f"{item.name}.{name}" for name in _marked(type(default))}
    return found


def test_the_placement_fields_are_the_ones_that_only_place_or_pace_a_run():
    train = {f"train.{n}" for n in ("log_every", "val_every", "ckpt_every", "stop_after_steps", "report_to")}
    assert _marked(PretrainConfig) == {"run_dir", "sparsity.verify_every", *train}
    assert _marked(ImpConfig) == {
        "runs_dir",
        "theta0",
        "theta0_overrides",
        "imp.publish",
        "imp.store",
        *train,
    }
    assert _marked(FinetuneConfig) == {"runs_dir", "verify_every", "save_model", *train}


def test_identity_view_replaces_marked_fields_at_any_depth_and_keeps_the_rest():
    config = load_config(None, ["run_dir=/x/y", "train.log_every=3", "train.steps=9"], cls=PretrainConfig)
    view = identity_view(config)
    assert (view.run_dir, view.train.log_every, view.train.val_every) == ("", 1, 1)
    assert view.train.steps == 9 and view.data == config.data


@pytest.mark.parametrize("cls", [PretrainConfig, FinetuneConfig])
def test_a_moved_or_more_often_logged_run_is_the_same_run_and_another_step_count_is_not(cls):
    where = "run_dir=/elsewhere" if cls is PretrainConfig else "runs_dir=/elsewhere"
    base = run_digest(load_config(None, [], cls=cls))
    assert run_digest(load_config(None, [*PLACEMENT_OVERRIDES, where], cls=cls)) == base
    assert run_digest(load_config(None, ["train.steps=301"], cls=cls)) != base
    assert run_digest(load_config(None, ["optim.lr=1e-4"], cls=cls)) != base


def test_a_finetune_logged_more_often_finds_the_same_run_directory(tmp_path):
    from lottery.train.finetune import run_dir_for

    base = [f"runs_dir={tmp_path}"]
    first = run_dir_for(load_config(None, base, cls=FinetuneConfig))
    placed = ["verify_every=1", "save_model=false", *PLACEMENT_OVERRIDES]
    assert run_dir_for(load_config(None, [*base, *placed], cls=FinetuneConfig)) == first
    assert run_dir_for(load_config(None, [*base, "train.steps=3"], cls=FinetuneConfig)) != first


def test_a_pretrain_rerun_may_log_differently_but_not_train_differently(tmp_path):
    from lottery.train.pretrain import _check_run_dir

    config = load_config(None, [f"run_dir={tmp_path}"], cls=PretrainConfig)
    _check_run_dir(tmp_path, config)
    assert load_config(str(tmp_path / "config.yaml"), [], cls=PretrainConfig) == config
    _check_run_dir(tmp_path, load_config(None, [f"run_dir={tmp_path}", *PLACEMENT_OVERRIDES]))
    with pytest.raises(ConfigError, match=r"another config \(differs in \['train.steps'\]\)"):
        _check_run_dir(tmp_path, load_config(None, [f"run_dir={tmp_path}", "train.steps=7"]))


def test_done_is_the_only_completion_marker_except_for_a_legacy_file(tmp_path):
    (tmp_path / "metrics.json").write_text("{}")
    assert not is_done(tmp_path)
    assert is_done(tmp_path, legacy=("metrics.json",))
    mark_done(tmp_path, "abc")
    assert is_done(tmp_path) and (tmp_path / DONE).read_text() == "abc\n"


def test_an_option_added_later_moves_no_run_that_leaves_it_at_its_default():
    """The digest of a config is the one it had before the option existed, until the option is used."""
    import hashlib
    import json

    from lottery.config import canonical_tree, digest, to_dict

    config = load_config(None, [], cls=PretrainConfig)
    before = to_dict(config)
    added = ("itm_relation_neg_prob", "itm_attribute_neg_prob")
    for key in added:
        del before["tasks"][key]  # the tree before the options were added
    del before["train"]["report_to"]
    del before["model"]["family"]
    del before["data"]["render_size"]
    old = hashlib.sha256(json.dumps(before, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    assert digest(config) == old and not set(added) & set(canonical_tree(config)["tasks"])
    for key in added:
        used = load_config(None, [f"tasks.{key}=0.5"], cls=PretrainConfig)
        assert digest(used) != old and canonical_tree(used)["tasks"][key] == 0.5
        assert key in to_dict(config)["tasks"]  # config.yaml still shows it
