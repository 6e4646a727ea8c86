"""ViLT: its prunable scope, vilt-mini from MiniLM, directories, patches in the region slots, its tasks."""

from __future__ import annotations

import io
import json
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file
from test_lxmert_model import fit_one_batch
from transformers import ViltConfig, ViltForMaskedLM

from lottery.data.patches import PatchGrid
from lottery.data.schema import ShardError
from lottery.models.uniter import ModelDirError
from lottery.models.uniter.from_bert import resolve_bert_dir
from lottery.models.vilt import (
    VILT_SCOPE,
    ViltForLotteryPretraining,
    from_pretrained,
    init_from_bert,
    save_pretrained,
)
from lottery.models.vilt.from_bert import vilt_key
from lottery.sparsity.scope import DEFAULT_SCOPE
from lottery.tasks.masking import TextVocab
from lottery.tasks.packing import pack
from lottery.tasks.pretrain import CollateContext
from lottery.tasks.vilt_pretrain import VILT_TASKS

VOCAB = TextVocab(size=100, pad_id=0, cls_id=1, sep_id=2, mask_id=3, first_word_id=5)
GRID = PatchGrid(image_size=16, patch_size=4)


def tiny_config(**extra) -> ViltConfig:
    sizes = dict(
        vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64, num_hidden_layers=2,
        max_position_embeddings=40, image_size=GRID.image_size, patch_size=GRID.patch_size, name="vilt-tiny",
    )  # fmt: skip
    return ViltConfig(**{**sizes, **extra})


def test_scope_selects_the_attention_and_ffn_weights_of_every_layer_and_the_pooler():
    model = ViltForLotteryPretraining(tiny_config())
    names = model.prunable()
    assert len(names) == 2 * 6 + 1
    assert all(name.endswith(".weight") and "layernorm" not in name for name in names)
    assert not [n for n in names if "embeddings" in n or n.startswith(("mlm_score", "itm_score"))]
    assert "vilt.encoder.layer.1.attention.attention.value.weight" in names
    assert names[-1] == "vilt.pooler.dense.weight"
    assert model.fingerprint() == model.fingerprint(VILT_SCOPE)
    # UNITER's scope names other modules: a UNITER ticket cannot fingerprint a ViLT as its own
    assert model.fingerprint(DEFAULT_SCOPE) != model.fingerprint()


@pytest.fixture(scope="module")
def vilt_mini():
    return init_from_bert("minilm", image_size=32, patch_size=8)


def test_vilt_mini_takes_minilm_layers_and_places_each_layernorm_on_the_stream_it_normalised(vilt_mini):
    model, report = vilt_mini
    assert model.config.name == "vilt-mini" and len(model.prunable()) == 6 * 6 + 1
    bert = load_file(resolve_bert_dir("minilm") / "model.safetensors")
    params = dict(model.named_parameters())
    pairs = {
        "vilt.encoder.layer.2.attention.attention.query.weight": "encoder.layer.2.attention.self.query.weight",
        "vilt.encoder.layer.5.output.dense.weight": "encoder.layer.5.output.dense.weight",
        "vilt.encoder.layer.3.layernorm_after.weight": "encoder.layer.3.attention.output.LayerNorm.weight",
        "vilt.encoder.layer.4.layernorm_before.bias": "encoder.layer.3.output.LayerNorm.bias",
        "vilt.layernorm.weight": "encoder.layer.5.output.LayerNorm.weight",
        "vilt.embeddings.text_embeddings.word_embeddings.weight": "embeddings.word_embeddings.weight",
        "vilt.embeddings.text_embeddings.LayerNorm.weight": "embeddings.LayerNorm.weight",
    }
    for ours, theirs in pairs.items():
        assert torch.equal(params[ours], bert[theirs]), ours
    assert model.mlm_score.decoder.weight is model.vilt.embeddings.text_embeddings.word_embeddings.weight
    # the patch side is drawn, not left at the constructor's zeros
    assert float(model.vilt.embeddings.position_embeddings.detach().abs().mean()) > 1e-3
    assert report.scaled == ("vilt.pooler.dense.weight",)
    assert report.grid == PatchGrid(32, 8)


def test_key_mapping_and_the_same_folder_builds_the_same_model():
    assert vilt_key("bert.encoder.layer.0.output.LayerNorm.weight", 6) == (
        "vilt.encoder.layer.1.layernorm_before.weight"
    )
    assert vilt_key("encoder.layer.5.output.LayerNorm.bias", 6) == "vilt.layernorm.bias"
    assert vilt_key("cls.predictions.bias", 6) is None
    first, _ = init_from_bert("minilm", image_size=16, patch_size=8)
    second, _ = init_from_bert("minilm", image_size=16, patch_size=8)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_directory_round_trip_and_stock_transformers_open_it(tmp_path, vilt_mini):
    from transformers import AutoModel, ViltModel

    model, _ = vilt_mini
    out = save_pretrained(model, tmp_path / "vilt-mini")
    loaded = from_pretrained(out)
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    stock = ViltForMaskedLM.from_pretrained(str(out))
    assert torch.equal(stock.vilt.pooler.dense.weight, model.vilt.pooler.dense.weight)
    backbone = AutoModel.from_pretrained(str(out))
    assert type(backbone) is ViltModel


def test_a_transformers_saved_vilt_mlm_loads_and_draws_only_the_matching_head(tmp_path):
    """What a downloaded dandelin/vilt-b32-mlm is: ViltForMaskedLM.save_pretrained, without `itm_score`."""
    torch.manual_seed(0)
    original = ViltForMaskedLM(tiny_config())
    original.config.name = None
    original.save_pretrained(tmp_path / "downloaded")
    loaded = from_pretrained(tmp_path / "downloaded")
    assert loaded.config.name == "vilt-downloaded"
    theirs = original.state_dict()
    for name, tensor in loaded.state_dict().items():
        if not name.startswith("itm_score."):
            assert torch.equal(tensor, theirs[name]), name
    config = json.loads((tmp_path / "downloaded" / "config.json").read_text())
    (tmp_path / "downloaded" / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 3}))
    with pytest.raises(ModelDirError, match=r"missing tensors \['vilt.encoder.layer.2"):
        from_pretrained(tmp_path / "downloaded")
    (tmp_path / "downloaded" / "config.json").write_text(json.dumps({**config, "model_type": "lxmert"}))
    with pytest.raises(ModelDirError, match="not a ViLT model"):
        from_pretrained(tmp_path / "downloaded")


def _png(pixels: np.ndarray) -> bytes:
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG")
    return stream.getvalue()


def test_patches_cut_an_image_row_by_row_and_fold_back_exactly():
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    feat, box = GRID.patches({"__key__": "k", "png": _png(pixels)}, "s.tar")
    assert feat.shape == (16, 48) and box.shape == (16, 7)
    # patch 5 is row 1, column 1: pixels [4:8, 4:8], channels first
    expected = torch.from_numpy(pixels[4:8, 4:8].astype(np.float32)).permute(2, 0, 1) / 127.5 - 1
    assert torch.allclose(feat[5], expected.reshape(-1))
    assert box[5].tolist()[:4] == [0.25, 0.25, 0.5, 0.5]
    folded = GRID.to_pixels(feat.unsqueeze(0))[0]
    assert torch.allclose(folded, torch.from_numpy(pixels.astype(np.float32)).permute(2, 0, 1) / 127.5 - 1)
    # the fold is what ViLT's stride-p convolution reads: the same as a linear map of each patch
    conv = torch.nn.Conv2d(3, 5, kernel_size=4, stride=4)
    by_conv = conv(folded.unsqueeze(0)).flatten(2).transpose(1, 2)[0]
    by_linear = feat @ conv.weight.reshape(5, -1).T + conv.bias
    assert torch.allclose(by_conv, by_linear, atol=1e-5)


def test_patches_refuse_a_sample_without_an_image_or_with_bytes_that_do_not_decode():
    with pytest.raises(ShardError, match=r"shard s.tar, sample 'k'.*no image.*--render"):
        GRID.patches({"__key__": "k", "feat.npy": np.zeros((1, 4))}, "s.tar")
    with pytest.raises(ShardError, match=r"sample 'k': cannot decode 'png'"):
        GRID.patches({"__key__": "k", "png": b"\x89PNG\r\n\x1a\n broken"}, "s.tar")
    feat, _ = GRID.patches({"__key__": "k", "png": _png(np.zeros((20, 24, 3), np.uint8))}, "s.tar")
    assert feat.shape == (16, 48)  # another size is resized to the grid


def _examples(count: int, seed: int = 0) -> list[SimpleNamespace]:
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        words = int(torch.randint(3, 9, (1,), generator=gen))
        ids = [VOCAB.cls_id, *torch.randint(5, VOCAB.size, (words,), generator=gen).tolist(), VOCAB.sep_id]
        feat = torch.rand(GRID.side**2, GRID.feat_dim, generator=gen) * 2 - 1
        examples.append(
            SimpleNamespace(input_ids=ids, feat=feat, box=torch.from_numpy(GRID.boxes), soft=None, meta={})
        )
    return examples


def test_encode_is_blind_to_text_padding_and_reads_the_patches():
    torch.manual_seed(0)
    model = ViltForLotteryPretraining(tiny_config()).eval()
    short, long = _examples(2, seed=3)
    long.input_ids = long.input_ids + [7] * 6

    def streams(examples):
        ids = [torch.tensor(ex.input_ids) for ex in examples]
        return model.encode(pack(ids, [ex.feat for ex in examples], [ex.box for ex in examples]))

    alone, padded = streams([short]), streams([short, long])
    words = len(short.input_ids)
    assert alone.vision.shape[1] == GRID.side**2
    assert torch.allclose(alone.language[0, :words], padded.language[0, :words], atol=1e-5)
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)
    other = SimpleNamespace(**{**vars(short), "feat": -short.feat})
    assert not torch.allclose(streams([other]).pooled[0], alone.pooled[0], atol=1e-3)


@pytest.mark.parametrize("task_name", sorted(VILT_TASKS))
def test_each_task_gives_a_finite_loss_and_can_fit_one_batch(task_name):
    torch.manual_seed(0)
    model = ViltForLotteryPretraining(tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0))
    task = VILT_TASKS[task_name]
    batch = task.collate(_examples(8), CollateContext(VOCAB, mask_prob=0.3), torch.Generator().manual_seed(1))
    first, stats = model(batch, task)
    assert (
        math.isfinite(float(first))
        and set(stats) == set(task.stat_keys())
        and stats[f"{task_name}_count"] > 0
    )
    last = fit_one_batch(model, batch, task, steps=60)
    assert last < 0.3 * float(first), (float(first), last)


def test_config_task_lists_match_the_task_table():
    from lottery.config import FAMILY_TASKS

    assert set(FAMILY_TASKS["vilt"]) == set(VILT_TASKS)
