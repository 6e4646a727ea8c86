"""Shipped files are found inside the package, from any working directory; a user's own file still wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import lottery
from lottery.config import ConfigError, TrainConfig, config_path, load_config
from lottery.resources import (
    CONFIGS,
    DS_CONFIGS,
    PRESETS,
    NotShipped,
    shipped_dir,
    shipped_file,
    shipped_names,
)
from lottery.train.engine import build_ds_config, ds_config_path

PACKAGE = Path(lottery.__file__).parent
REPO = PACKAGE.parent


def test_every_shipped_folder_is_inside_the_package_and_declared_as_package_data() -> None:
    pyproject = (REPO / "pyproject.toml").read_text()
    for folder, suffix in ((CONFIGS, ".yaml"), (DS_CONFIGS, ".json"), (PRESETS, ".json")):
        assert Path(str(shipped_dir(folder))).is_relative_to(PACKAGE)
        assert shipped_names(folder, suffix), folder
        assert f'"{folder}/*{suffix}"' in pyproject, f"{folder} is not package data in pyproject.toml"
    assert shipped_names(DS_CONFIGS, ".json") == ["zero0", "zero1", "zero2", "zero3", "zero3_offload"]
    assert not (REPO / "ds_configs").exists(), "the layouts moved into lottery/ds_configs/"


def test_a_missing_name_says_what_is_shipped_and_a_path_is_never_joined() -> None:
    with pytest.raises(NotShipped) as err:
        shipped_file(DS_CONFIGS, "zero4", ".json")
    assert "zero3_offload" in err.value.known
    with pytest.raises(NotShipped):
        shipped_file(CONFIGS, "../pyproject", ".toml")


def test_shipped_names_resolve_from_any_working_directory(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert "imp:" in config_path("imp-uniter-mini").read_text()
    assert load_config("pretrain-uniter-mini", ["train.steps=3"]).train.steps == 3
    offload = TrainConfig(zero_stage=3, ds_config="zero3_offload")
    assert json.loads(ds_config_path(offload).read_text())["zero_optimization"]["stage"] == 3
    assert "zero_optimization" in json.loads(ds_config_path(TrainConfig(zero_stage=2)).read_text())


def test_a_users_own_ds_config_file_is_taken_as_given(tmp_path: Path) -> None:
    own = tmp_path / "my_layout.json"
    own.write_text(json.dumps({"zero_optimization": {"stage": 1, "reduce_bucket_size": 123}}))
    train = TrainConfig(zero_stage=1, ds_config=str(own))
    assert ds_config_path(train) == own
    config = load_config("pretrain-uniter-mini", ["train.zero_stage=1", f"train.ds_config={own}"])
    assert (
        build_ds_config(config.train, config.optim, "fp32")["zero_optimization"]["reduce_bucket_size"] == 123
    )


def test_an_unknown_ds_config_names_the_shipped_layouts(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"train.ds_config='zero9'.*zero3_offload"):
        ds_config_path(TrainConfig(ds_config="zero9"))
    with pytest.raises(ConfigError, match="no such file"):
        ds_config_path(TrainConfig(ds_config=str(tmp_path / "missing.json")))


def test_a_local_yaml_file_is_not_shadowed_by_a_shipped_config(tmp_path: Path) -> None:
    own = tmp_path / "imp-uniter-mini.yaml"
    own.write_text("train: {steps: 9}\n")
    assert config_path(str(own)) == own
    with pytest.raises(ConfigError, match="shipped configs"):
        config_path("no-such-config")
