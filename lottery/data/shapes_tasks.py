"""The seven downstream tasks generated on shapes-world scenes, the same scenes pre-training reads.

Every example is a function of (scene, key, rng) and names its scene's shard key, so a task dataset is
a list of examples beside the scenes' shards. The questions are chosen to need the image and, for most
tasks, relations or counts (docs/design.md, "Facts that shaped the design": a single-attribute question
separated nothing): counting and existence in VQA, relations in GQA, VCR, RefCOCO+ and NLVR2.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

from lottery.data.captions import describe, make_caption, unique_objects
from lottery.data.examples import TaskExample
from lottery.data.world import COLOURS, OPPOSITE_RELATIONS, RELATIONS, SHAPES, Obj, Scene, relations

ANNOTATORS = 10  # VQA: answers per question
ANNOTATOR_ACCURACY = 0.8
NEUTRAL_PROPERTIES = ("heavy", "new", "wooden", "moving", "expensive", "old")  # not visible in a scene


def _pick(rng: np.random.Generator, items: Sequence):
    return items[int(rng.integers(len(items)))]


def _plural(shape: str) -> str:
    return f"{shape}es" if shape.endswith("s") else f"{shape}s"


def _the(scene: Scene, index: int, rng: np.random.Generator) -> str:
    return f"the {describe(scene, index, rng)}"


def _only_related(scene: Scene, anchor: int, relation: str) -> int | None:
    """The one object standing in `relation` to the anchor ("X is <relation> the anchor"), if exactly one."""
    found = [
        i
        for i, o in enumerate(scene.objects)
        if i != anchor and relation in relations(o, scene.objects[anchor])
    ]
    return found[0] if len(found) == 1 else None


# -- VQA: counting, existence and attribute questions answered by 10 noisy annotators ------------------


def _noisy_answers(truth: str, confusions: Sequence[str], rng: np.random.Generator) -> dict[str, float]:
    given = Counter(
        truth if rng.random() < ANNOTATOR_ACCURACY else str(_pick(rng, confusions)) for _ in range(ANNOTATORS)
    )
    return {answer: min(1.0, count / 3) for answer, count in sorted(given.items())}


def _count_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str, Sequence[str]]:
    objects = scene.objects
    if rng.random() < 0.5:
        colour = str(_pick(rng, [o.colour for o in objects] if rng.random() < 0.7 else COLOURS))
        count, question = sum(o.colour == colour for o in objects), f"how many {colour} objects are there?"
    else:
        shape = str(_pick(rng, [o.shape for o in objects] if rng.random() < 0.7 else SHAPES))
        count, question = sum(o.shape == shape for o in objects), f"how many {_plural(shape)} are there?"
    return question, str(count), [str(max(0, count - 1)), str(count + 1)]


def _exists_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str, Sequence[str]]:
    if rng.random() < 0.5:
        obj = _pick(rng, scene.objects)
        colour, shape = obj.colour, obj.shape
    else:
        colour, shape = str(_pick(rng, COLOURS)), str(_pick(rng, SHAPES))
    present = any(o.colour == colour and o.shape == shape for o in scene.objects)
    return f"is there a {colour} {shape}?", "yes" if present else "no", ["no" if present else "yes"]


def _colour_question(scene: Scene, rng: np.random.Generator) -> tuple[str, str, Sequence[str]] | None:
    """ "what colour is the [size] <shape>?" for an object that phrase names alone."""
    shapes = Counter(o.shape for o in scene.objects)
    sized = Counter((o.size, o.shape) for o in scene.objects)
    named = [(o, o.shape) for o in scene.objects if shapes[o.shape] == 1]
    named += [(o, f"{o.size} {o.shape}") for o in scene.objects if sized[o.size, o.shape] == 1]
    if not named:
        return None
    obj, noun = named[int(rng.integers(len(named)))]
    return f"what colour is the {noun}?", obj.colour, COLOURS


def vqa(scene: Scene, key: str, rng: np.random.Generator, per_scene: int = 2) -> list[TaskExample]:
    examples = []
    for n in range(per_scene):
        kind = int(rng.integers(3))
        asked = (_count_question, _exists_question, _colour_question)[kind](scene, rng)
        question, truth, confusions = asked or _count_question(scene, rng)
        fields = {"answers": _noisy_answers(truth, confusions, rng), "truth": truth}
        examples.append(TaskExample("vqa", f"{key}-q{n}", (key,), question, fields))
    return examples


# -- GQA: compositional questions over relations ---------------------------------------------------------


def gqa(scene: Scene, key: str, rng: np.random.Generator, per_scene: int = 2) -> list[TaskExample]:
    """ "what shape is <rel> the <anchor>?", "what colour is the object <rel> the <anchor>?", "is A <rel> B?"."""
    unique = unique_objects(scene)
    examples: list[TaskExample] = []
    for attempt in range(20 * per_scene):
        if len(examples) == per_scene or len(unique) < 2:
            break
        anchor, relation = int(_pick(rng, unique)), str(_pick(rng, RELATIONS))
        kind = int(rng.integers(3))
        if kind < 2:
            target = _only_related(scene, anchor, relation)
            if target is None:
                continue
            obj = scene.objects[target]
            if kind == 0:
                question, answer = f"what shape is {relation} {_the(scene, anchor, rng)}?", obj.shape
            else:
                question = f"what colour is the object {relation} {_the(scene, anchor, rng)}?"
                answer = obj.colour
        else:
            other = int(_pick(rng, [i for i in unique if i != anchor]))
            holds = relation in relations(scene.objects[other], scene.objects[anchor])
            question = f"is {_the(scene, other, rng)} {relation} {_the(scene, anchor, rng)}?"
            answer = "yes" if holds else "no"
        examples.append(TaskExample("gqa", f"{key}-q{attempt}", (key,), question, {"answer": answer}))
    return examples


# -- VCR: which object (Q->A) and why (QA->R), four choices each --------------------------------------


def vcr(scene: Scene, key: str, rng: np.random.Generator) -> list[TaskExample]:
    unique = unique_objects(scene)
    for _ in range(20):
        if len(unique) < 2:
            return []
        anchor, relation = int(_pick(rng, unique)), str(_pick(rng, RELATIONS))
        target = _only_related(scene, anchor, relation)
        if target is None or target not in unique:
            continue
        anchor_phrase = _the(scene, anchor, rng)
        answer = describe(scene, target, rng)
        others = [describe(scene, i, rng) for i in unique if i not in (target, anchor)]
        while len(others) < 3:  # made-up objects, distinct from the answer and each other
            made_up = f"{_pick(rng, COLOURS)} {_pick(rng, SHAPES)}"
            if made_up not in others and made_up not in answer:
                others.append(made_up)
        answers = [answer, *[str(a) for a in rng.permutation(others)[:3]]]
        held = relations(scene.objects[target], scene.objects[anchor])
        false = [r for r in RELATIONS if r not in held]
        reasons = [f"the {answer} is {relation} {anchor_phrase}"]
        reasons += [f"the {answer} is {r} {anchor_phrase}" for r in false[:2]]
        reasons.append(f"{anchor_phrase} is {relation} the {answer}")  # the relation reversed: false
        answer_order, reason_order = rng.permutation(4), rng.permutation(4)
        fields = {
            "answer_choices": [answers[i] for i in answer_order],
            "answer_label": int(np.argmin(answer_order)),
            "rationale_choices": [reasons[i] for i in reason_order],
            "rationale_label": int(np.argmin(reason_order)),
        }
        question = f"which object is {relation} {anchor_phrase}?"
        return [TaskExample("vcr", f"{key}-q0", (key,), question, fields)]
    return []


# -- SNLI-VE: one hypothesis per label -----------------------------------------------------------------


def contradiction(scene: Scene, rng: np.random.Generator) -> str:
    """A statement the scene makes false: a relation reversed, or an object that is not there."""
    caption = make_caption(scene, rng, 2)
    if caption.relation is not None:
        return caption.text.replace(f" {caption.relation} ", f" {OPPOSITE_RELATIONS[caption.relation]} ", 1)
    present = {(o.colour, o.shape) for o in scene.objects}
    absent = [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]
    colour, shape = _pick(rng, absent)
    return f"there is {'an' if colour[0] in 'aeiou' else 'a'} {colour} {shape}"


def snli_ve(scene: Scene, key: str, rng: np.random.Generator) -> list[TaskExample]:
    neutral_object = describe(scene, int(rng.integers(len(scene.objects))), rng)
    hypotheses = {
        "entailment": make_caption(scene, rng, 2).text,
        "contradiction": contradiction(scene, rng),
        "neutral": f"the {neutral_object} is {_pick(rng, NEUTRAL_PROPERTIES)}",
    }
    return [
        TaskExample("snli-ve", f"{key}-{label}", (key,), text, {"label": label})
        for label, text in hypotheses.items()
    ]


# -- RefCOCO+: an expression naming one object by attributes and relations, no absolute positions -------


def refcoco(scene: Scene, key: str, rng: np.random.Generator, per_scene: int = 2) -> list[TaskExample]:
    unique = unique_objects(scene)
    examples: list[TaskExample] = []
    for attempt in range(20 * per_scene):
        if len(examples) == per_scene:
            break
        target = int(rng.integers(len(scene.objects)))
        anchors = [a for a in unique if a != target]
        expression = None
        if anchors and rng.random() < 0.6:  # relational even when the attributes would do
            anchor, relation = int(_pick(rng, anchors)), str(_pick(rng, RELATIONS))
            if _only_related(scene, anchor, relation) == target:
                noun = " ".join(describe(scene, target, rng).split()[-2:])
                expression = f"the {noun} {relation} {_the(scene, anchor, rng)}"
        elif target in unique:
            expression = _the(scene, target, rng)
        if expression is not None:
            examples.append(
                TaskExample("refcoco+", f"{key}-r{attempt}", (key,), expression, {"region": target})
            )
    return examples


# -- Image-text retrieval: five captions per scene -------------------------------------------------------


def retrieval(scene: Scene, key: str, rng: np.random.Generator, captions: int = 5) -> list[TaskExample]:
    texts: list[str] = []
    for _ in range(10 * captions):
        if len(texts) == captions:
            break
        text = make_caption(scene, rng, 1 + int(rng.random() < 0.6)).text
        if text not in texts:
            texts.append(text)
    return [
        TaskExample("retrieval", f"{key}-c{i}", (key,), text, {"caption_index": i})
        for i, text in enumerate(texts)
    ]


# -- NLVR2: a statement about two scenes, true or false --------------------------------------------------


def _has(objects: Sequence[Obj], colour: str | None, shape: str | None) -> int:
    return sum(
        (colour is None or o.colour == colour) and (shape is None or o.shape == shape) for o in objects
    )


def _pair_statement(left: Scene, right: Scene, rng: np.random.Generator) -> tuple[str, bool]:
    colour, shape = str(_pick(rng, COLOURS)), str(_pick(rng, SHAPES))
    kind = int(rng.integers(3))
    if kind == 0:
        text = f"there are more {colour} objects in the left image than in the right image"
        return text, _has(left.objects, colour, None) > _has(right.objects, colour, None)
    if kind == 1:
        text = f"both images contain a {shape}"
        return text, bool(_has(left.objects, None, shape) and _has(right.objects, None, shape))
    text = f"exactly one image contains a {colour} {shape}"
    return text, bool(_has(left.objects, colour, shape)) != bool(_has(right.objects, colour, shape))


def nlvr2(left: Scene, right: Scene, keys: tuple[str, str], rng: np.random.Generator) -> list[TaskExample]:
    """One statement, true or false with equal probability (redrawn until it has the label wanted)."""
    wanted = bool(rng.random() < 0.5)
    for _ in range(50):
        text, label = _pair_statement(left, right, rng)
        if label == wanted:
            break
    return [TaskExample("nlvr2", f"{keys[0]}-{keys[1]}", keys, text, {"label": label})]
