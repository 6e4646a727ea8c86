"""Attribute-swap ITM negatives: false of their own scene by construction, and binding-hard when they can be."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lottery.data.captions import COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS, WORDS, make_caption
from lottery.data.world import SceneConfig, generate_scene
from lottery.tasks.binding import AttributeVocab, swap_attribute
from lottery.tasks.masking import TextVocab
from lottery.tasks.pretrain import TASKS, CollateContext

WORD_IDS = {word: 10 + i for i, word in enumerate(sorted(WORDS))}
TOKENIZER = SimpleNamespace(
    unk_token_id=0, convert_tokens_to_ids=lambda words: [WORD_IDS.get(w, 0) for w in words]
)
ATTRIBUTES = AttributeVocab.from_tokenizer(TOKENIZER, COLOUR_WORDS, SHAPE_WORDS, SIZE_WORDS)
VOCAB = TextVocab(size=10 + len(WORD_IDS), pad_id=0, cls_id=1, sep_id=2, mask_id=3, first_word_id=10)


def _ids(text: str) -> torch.Tensor:
    return torch.tensor([VOCAB.cls_id, *(WORD_IDS[w] for w in text.split()), VOCAB.sep_id])


def _phrases(tokens: list[int]) -> list[tuple[str | None, str, str]]:
    """(size or None, colour, shape) of every mention, read back from the ids."""
    words = {i: w for w, i in WORD_IDS.items()}
    said = [words.get(t) for t in tokens]
    return [
        (said[i - 1] if said[i - 1] in SIZE_WORDS else None, said[i], said[i + 1])
        for i in range(1, len(said) - 1)
        if said[i] in COLOUR_WORDS and said[i + 1] in SHAPE_WORDS
    ]


def _fits(phrase, objects) -> bool:
    size, colour, shape = phrase
    return any(o.colour == colour and o.shape == shape and size in (None, o.size) for o in objects)


def _scenes(count: int, mentions: int):
    rng = np.random.default_rng(0)
    for _ in range(count):
        scene = generate_scene(rng, SceneConfig(3, 10))
        yield scene, make_caption(scene, rng, mentions)


@pytest.mark.parametrize("mentions", [1, 2])
def test_a_swapped_caption_names_an_object_its_scene_does_not_have(mentions):
    generator = torch.Generator().manual_seed(0)
    swapped_count = in_scene = 0
    for scene, caption in _scenes(300, mentions):
        ids = _ids(caption.text)
        swapped = swap_attribute(ids, scene.to_json(), ATTRIBUTES, generator)
        assert swapped is not None  # 8 colours and 8 shapes always leave a value no object has
        changed = (swapped != ids).nonzero().flatten().tolist()
        assert len(changed) == 1  # one attribute word of one mention
        before, after = _phrases(ids.tolist()), _phrases(swapped.tolist())
        assert all(_fits(p, scene.objects) for p in before)  # the true caption fits its scene
        differing = [p for p, q in zip(after, before, strict=True) if p != q]
        assert len(differing) == 1 and not _fits(differing[0], scene.objects)
        new_word = next(w for w, i in WORD_IDS.items() if i == int(swapped[changed[0]]))
        kind = "colour" if new_word in COLOUR_WORDS else "shape"
        in_scene += any(getattr(o, kind) == new_word for o in scene.objects)
        swapped_count += 1
    assert in_scene / swapped_count > 0.9  # crowded scenes nearly always offer a binding-hard value


def test_a_caption_without_a_mention_cannot_be_swapped():
    ids = torch.tensor([VOCAB.cls_id, WORD_IDS["there"], WORD_IDS["is"], VOCAB.sep_id])
    scene, _ = next(_scenes(1, 1))
    assert swap_attribute(ids, scene.to_json(), ATTRIBUTES, torch.Generator()) is None


def test_attribute_negatives_keep_the_captions_own_image():
    examples = []
    for scene, caption in _scenes(12, 2):
        feat = torch.randn(len(scene.objects), 8)
        examples.append(
            SimpleNamespace(
                input_ids=_ids(caption.text).tolist(),
                feat=feat,
                box=torch.rand(len(scene.objects), 7),
                soft=None,
                meta={"scene": scene.to_json()},
            )
        )
    ctx = CollateContext(VOCAB, itm_neg_prob=1.0, itm_attribute_neg_prob=1.0, attributes=ATTRIBUTES)
    batch = TASKS["itm"].collate(examples, ctx, torch.Generator().manual_seed(1))
    assert not batch["itm_targets"].any()
    for i, ex in enumerate(examples):
        text = batch["input_ids"][i, : len(ex.input_ids)].tolist()
        assert sum(a != b for a, b in zip(text, ex.input_ids, strict=True)) == 1
        assert torch.equal(batch["img_feat"][i, : len(ex.feat)], ex.feat)


def test_attribute_negatives_are_refused_without_the_vocab_and_beyond_one_with_relations():
    with pytest.raises(ValueError, match="attribute words"):
        CollateContext(VOCAB, itm_attribute_neg_prob=0.5)
    with pytest.raises(ValueError, match="at most 1"):
        CollateContext(
            VOCAB,
            itm_relation_neg_prob=0.6,
            reversals={1: 2},
            itm_attribute_neg_prob=0.6,
            attributes=ATTRIBUTES,
        )


def test_the_vocab_refuses_a_word_the_tokenizer_splits():
    with pytest.raises(ValueError, match="colour words \\['red'\\]"):
        AttributeVocab.from_tokenizer(
            SimpleNamespace(
                unk_token_id=0, convert_tokens_to_ids=lambda ws: [0 if w == "red" else 5 for w in ws]
            ),
            ("red",),
            ("circle",),
            ("small",),
        )
