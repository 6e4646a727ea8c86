"""The grounded-MLM ceiling: what a perfect perceiver can tell from a caption with one kind of word masked."""

from __future__ import annotations

import numpy as np
import pytest

from lottery.data.captions import make_caption
from lottery.data.world import Obj, Scene, SceneConfig, generate_scene
from lottery.evaluation.ceiling import caption_ceiling, grounded_ceilings, parse


def obj(shape: str, colour: str, size: str, x: float, y: float) -> Obj:
    side = 0.1 if size == "small" else 0.2
    return Obj(shape, colour, size, (x, y, x + side, y + side))


def test_a_caption_is_read_into_its_mentions_and_relation():
    mentions, relation = parse("the small red circle is left of a blue square")
    assert [(m.size, m.colour, m.shape) for m in mentions] == [
        ("small", "red", "circle"),
        (None, "blue", "square"),
    ]
    assert relation == "left"


def test_the_only_object_of_a_scene_gives_its_colour_and_shape_for_certain():
    scene = Scene((obj("circle", "red", "small", 0.1, 0.1),))
    assert caption_ceiling(scene, "there is a red circle", "colour") == [1.0]
    assert caption_ceiling(scene, "there is a red circle", "shape") == [1.0]


def test_two_small_circles_of_two_colours_leave_a_masked_colour_to_a_coin_flip():
    scene = Scene((obj("circle", "red", "small", 0.1, 0.1), obj("circle", "blue", "small", 0.6, 0.6)))
    assert caption_ceiling(scene, "a small red circle", "colour") == [0.5]


def test_a_visible_relation_picks_the_referent_of_a_masked_colour():
    scene = Scene(
        (
            obj("circle", "red", "small", 0.05, 0.4),
            obj("circle", "blue", "small", 0.75, 0.4),
            obj("square", "green", "large", 0.4, 0.4),
        )
    )
    # of the two small circles only the red one is left of the square
    assert caption_ceiling(scene, "the small red circle is left of the large green square", "colour") == [
        1.0,
        1.0,
    ]


def test_a_masked_horizontal_relation_is_told_apart_by_its_of_even_on_a_diagonal():
    scene = Scene((obj("circle", "red", "small", 0.1, 0.1), obj("square", "blue", "small", 0.6, 0.6)))
    text = "the red circle is left of the blue square"  # also above: a diagonal pair
    assert caption_ceiling(scene, text, "relation") == [1.0]
    assert caption_ceiling(scene, "there is a red circle", "relation") == []


@pytest.mark.parametrize(("objects", "low", "high"), [((1, 1), 1.0, 1.0), ((3, 10), 0.85, 0.95)])
def test_on_generated_scenes_the_ceiling_is_certain_alone_and_below_one_when_crowded(objects, low, high):
    samples = []
    for index in range(200):
        rng = np.random.default_rng([0, 1, index])
        scene = generate_scene(rng, SceneConfig(*objects))
        samples.append((scene, make_caption(scene, rng, 2 if objects[1] > 1 else 1).text))
    ceilings = grounded_ceilings(samples)
    assert low <= ceilings["colour"] <= high and low <= ceilings["shape"] <= high
    if objects[1] > 1:
        assert ceilings["relation"] == 1.0  # both objects visible and named uniquely: the relation is certain
