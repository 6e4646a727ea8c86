"""The rendered shapes world: images that patch models (ViLT) can read, deterministic, beside unchanged regions."""

from __future__ import annotations

import io
import itertools
import json
import subprocess
import sys
import tarfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lottery.cli import main
from lottery.config import MIN_RENDER_SIZE, ConfigError, DataConfig, PretrainConfig, digest, load_config
from lottery.data import render
from lottery.data.render import BACKGROUND, RGB, render_scene
from lottery.data.shards import ShapesConfig, config_changes, write_shapes_shards
from lottery.data.world import COLOURS, SHAPES, Obj, Scene, SceneConfig, generate_scene
from lottery.train.assets import shapes_config

TINY = ShapesConfig(train_samples=12, val_samples=4, samples_per_shard=6, feat_dim=8)


def _scene(index: int) -> Scene:
    return generate_scene(np.random.default_rng([0, 0, index]), SceneConfig())


def _pixels(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)))


def _alone(shape: str, box: tuple[float, float, float, float], size: int) -> np.ndarray:
    """Coverage in [0, 1] of one white `shape` at `box`: the silhouette, anti-aliased edges included."""
    pixels = _pixels(render_scene(Scene((Obj(shape, "white", "large", box),)), size)).astype(float)
    white, dark = np.array(RGB["white"], float), np.array(BACKGROUND, float)
    return ((pixels - dark) / (white - dark)).mean(axis=-1)


def _touches(box: tuple[float, float, float, float], x: int, y: int, size: int) -> bool:
    """Whether `box` reaches pixel (x, y) of a `size`-px image."""
    x1, y1, x2, y2 = (v * size for v in box)
    return x1 <= x + 1 and x <= x2 and y1 <= y + 1 and y <= y2


def _members(directory: Path) -> dict[str, bytes]:
    out = {}
    for path in sorted(directory.glob("*.tar")):
        with tarfile.open(path) as tar:
            for info in tar:
                out[info.name] = tar.extractfile(info).read()
    return out


# --- the image ---------------------------------------------------------------------------------


def test_every_colour_and_shape_of_the_world_can_be_drawn():
    assert set(RGB) == set(COLOURS)
    assert set(render.OUTLINES) | {"circle"} == set(SHAPES)


def test_the_same_scene_gives_the_same_bytes_in_this_and_another_process():
    scene = _scene(3)
    png = render_scene(scene, 64)
    assert render_scene(scene, 64) == png
    code = (
        "import json, sys\n"
        "from lottery.data.render import render_scene\n"
        "from lottery.data.world import Scene\n"
        "sys.stdout.buffer.write(render_scene(Scene.from_json(json.loads(sys.argv[1])), 64))\n"
    )
    other = subprocess.run(
        [sys.executable, "-c", code, json.dumps(scene.to_json())], capture_output=True, check=True
    ).stdout
    assert other == png


def test_the_image_is_rgb_of_the_asked_size():
    for size in (16, 64, 97):
        image = Image.open(io.BytesIO(render_scene(_scene(0), size)))
        assert image.format == "PNG" and image.mode == "RGB" and image.size == (size, size)


def test_each_object_shows_its_colour_at_its_centre_and_the_rest_is_background():
    size = 64
    for index in range(20):
        scene = _scene(index)
        pixels = _pixels(render_scene(scene, size)).astype(int)
        covered = np.zeros((size, size), bool)
        for i, obj in enumerate(scene.objects):
            x1, y1, x2, y2 = obj.box
            covered[int(y1 * size) : int(np.ceil(y2 * size)), int(x1 * size) : int(np.ceil(x2 * size))] = True
            cx, cy = (int(v * size) for v in obj.centre)
            # drawn over by a later object? (the world's overlap rule forbids it; the test need not trust it)
            hidden = any(_touches(o.box, cx, cy, size) for o in scene.objects[i + 1 :])
            if obj.size == "large" and not hidden:
                assert np.abs(pixels[cy, cx] - RGB[obj.colour]).max() <= 2, (index, i, obj)
        assert (pixels[~covered] == BACKGROUND).all(), index


def test_colours_differ_from_each_other_and_from_the_background():
    values = [BACKGROUND, *RGB.values()]
    for a, b in itertools.combinations(values, 2):
        assert np.abs(np.subtract(a, b)).max() >= 60, (a, b)


def test_the_eight_shapes_have_pairwise_distinct_silhouettes():
    large = {shape: _alone(shape, (0.2, 0.2, 0.8, 0.8), 64) > 0.5 for shape in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        differ = (large[a] != large[b]).sum() / (large[a] | large[b]).sum()
        assert differ > 0.1, (a, b, differ)  # the closest pair, circle and pentagon, differ by 0.17


def test_small_objects_still_carry_their_shape():
    # the world's smallest box, 0.08 of a 64-px image: ~5 px a side, told apart by edge coverage
    small = {shape: _alone(shape, (0.5, 0.5, 0.58, 0.58), 64) for shape in SHAPES}
    for a, b in itertools.combinations(SHAPES, 2):
        assert np.abs(small[a] - small[b]).sum() > 2.0, (a, b)  # closest pair (circle, pentagon): 3.8 px


def test_too_small_an_image_is_refused_naming_the_size():
    with pytest.raises(ValueError, match="size=8"):
        render_scene(_scene(0), 8)


# --- shards ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def plain(tmp_path_factory) -> Path:
    return write_shapes_shards(tmp_path_factory.mktemp("plain"), TINY)


def test_rendering_adds_png_and_leaves_every_other_field_byte_identical(plain, tmp_path):
    rendered = write_shapes_shards(tmp_path, replace(TINY, render_size=32))
    with_png, without = _members(rendered), _members(plain)
    pngs = {name: data for name, data in with_png.items() if name.endswith(".png")}
    assert len(pngs) == TINY.train_samples + TINY.val_samples
    assert not any(name.endswith(".png") for name in without)
    assert {name: data for name, data in with_png.items() if name not in pngs} == without
    assert all(Image.open(io.BytesIO(data)).size == (32, 32) for data in pngs.values())


def test_meta_names_the_image_only_when_there_is_one(plain, tmp_path):
    meta = json.loads((plain / "meta.json").read_text())
    assert "image_field" not in meta and "image_size" not in meta
    assert "render_size" not in meta["config"]  # a build without images writes the meta it always did
    rendered_dir = write_shapes_shards(tmp_path, replace(TINY, render_size=32))
    rendered = json.loads((rendered_dir / "meta.json").read_text())
    assert rendered["image_field"] == "png" and rendered["image_size"] == 32
    assert rendered["config"]["render_size"] == 32


def test_a_build_from_before_images_matches_the_config_without_them(plain, tmp_path):
    old = json.loads((plain / "meta.json").read_text())
    (tmp_path / "meta.json").write_text(json.dumps(old))
    assert config_changes(tmp_path / "meta.json", TINY) == []
    assert config_changes(tmp_path / "meta.json", replace(TINY, render_size=32)) == [("render_size", 0, 32)]


def test_a_render_size_below_the_minimum_is_refused_naming_the_field():
    with pytest.raises(ValueError, match="render_size"):
        ShapesConfig(render_size=8)
    with pytest.raises(ConfigError, match="render_size=8"):
        DataConfig(render_size=8)
    with pytest.raises(ConfigError, match=r"data: render_size=8"):
        load_config("pretrain-uniter-mini", ["data.render_size=8"])
    with pytest.raises(ConfigError, match=r"data\.render_size"):
        load_config("pretrain-uniter-mini", ["data.render_size=-1"])
    assert MIN_RENDER_SIZE == render.MIN_SIZE


def test_a_run_config_passes_render_size_to_the_world_and_keeps_old_digests():
    assert shapes_config(DataConfig(render_size=48)).render_size == 48
    assert digest(replace(PretrainConfig(), data=DataConfig(render_size=0))) == digest(PretrainConfig())
    assert digest(replace(PretrainConfig(), data=DataConfig(render_size=48))) != digest(PretrainConfig())


# --- the command -------------------------------------------------------------------------------


def test_data_shapes_render_writes_images_of_that_size(tmp_path):
    out = tmp_path / "world"
    sizes = ["--train", "6", "--val", "2", "--feat-dim", "8"]
    main(["data", "shapes", "--out", str(out), *sizes, "--render", "24"])
    meta = json.loads((out / "meta.json").read_text())
    assert meta["image_field"] == "png" and meta["image_size"] == 24
    pngs = [data for name, data in _members(out).items() if name.endswith(".png")]
    assert len(pngs) == 8 and all(Image.open(io.BytesIO(data)).size == (24, 24) for data in pngs)


def test_data_shapes_refuses_a_too_small_render_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["data", "shapes", "--out", str(tmp_path / "world"), "--render", "8"])
    assert exit_.value.code == 2
    assert "--render 8" in capsys.readouterr().err
    assert not (tmp_path / "world").exists()
