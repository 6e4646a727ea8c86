"""UNITER: original key names, tied weights, model directories, conversion, BERT init, packed forward."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tiny import TINY
from torch import nn

from lottery.models.uniter import (
    TIED_WEIGHTS,
    ModelDirError,
    UniterForPretraining,
    convert_original,
    from_pretrained,
    init_from_bert,
    preset,
    save_pretrained,
    tokenizer_files,
)
from lottery.models.uniter.from_bert import resolve_bert_dir

FIXTURES = Path(__file__).parent / "fixtures"
HEAD_PREFIXES = ("cls.", "feat_regress.", "region_classifier.", "itm_output.", "uniter.pooler.")


def tiny_model(seed: int = 0) -> UniterForPretraining:
    torch.manual_seed(seed)
    return UniterForPretraining(TINY)


def reference_shapes() -> dict[str, str]:
    shapes = {}
    for line in (FIXTURES / "uniter-base.keys.tsv").read_text().splitlines():
        if line and not line.startswith("#"):
            key, shape = line.split("\t")
            shapes[key] = shape
    return shapes


def test_uniter_base_preset_has_exactly_the_original_keys_and_shapes() -> None:
    with torch.device("meta"):
        model = UniterForPretraining(preset("uniter-base"))
    ours = {key: "x".join(map(str, value.shape)) for key, value in model.state_dict().items()}
    reference = reference_shapes()
    assert len(reference) == 230
    assert sorted(set(ours) - set(reference)) == []
    assert sorted(set(reference) - set(ours)) == []
    assert {key: ours[key] for key in reference if ours[key] != reference[key]} == {}


def test_unknown_preset_error_lists_the_known_presets() -> None:
    with pytest.raises(ValueError, match="'uniter-huge'.*uniter-base, uniter-large"):
        preset("uniter-huge")


def assert_tied(model: UniterForPretraining) -> None:
    assert model.cls.predictions.decoder.weight is model.uniter.embeddings.word_embeddings.weight
    assert model.feat_regress.weight is model.uniter.img_embeddings.img_linear.weight


def test_tied_weights_are_one_parameter_after_construction_and_after_reload(tmp_path: Path) -> None:
    model = tiny_model()
    assert_tied(model)

    save_pretrained(model, tmp_path / "model")
    with safe_open(tmp_path / "model" / "model.safetensors", "pt") as f:
        stored = set(f.keys())
    assert stored == set(model.state_dict()) - set(TIED_WEIGHTS)
    assert set(TIED_WEIGHTS.values()) <= stored

    reloaded = from_pretrained(tmp_path / "model")
    assert_tied(reloaded)
    assert reloaded.config.to_uniter_config() == TINY  # model.config is the transformers UniterHFConfig
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key


def test_save_pretrained_copies_extra_files_and_leaves_no_temporary_directory(tmp_path: Path) -> None:
    out = save_pretrained(tiny_model(), tmp_path / "model", extra_files=tokenizer_files("minilm"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in out.iterdir()) == [
        "config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.txt",
    ]
    assert json.loads((out / "config.json").read_text())["name"] == "tiny"
    with pytest.raises(FileExistsError, match="model already exists"):
        save_pretrained(tiny_model(), out)


def test_init_from_minilm_copies_every_bert_weight_and_ties_the_decoder() -> None:
    model, report = init_from_bert("minilm")
    bert = load_file(resolve_bert_dir("minilm") / "model.safetensors")
    ours = model.state_dict()

    assert model.config.name == "uniter-mini"
    assert (model.config.hidden_size, model.config.num_hidden_layers, model.config.vocab_size) == (
        384,
        6,
        30522,
    )
    assert report.skipped == ("embeddings.position_ids",)
    weights = {key: value for key, value in bert.items() if key != "embeddings.position_ids"}
    assert len(weights) == 103
    for key, value in weights.items():
        if key != "pooler.dense.weight":
            assert torch.equal(ours["uniter." + key], value), key
    # MiniLM's untrained pooler is scaled onto the encoder's footing, its directions kept
    torch.testing.assert_close(
        ours["uniter.pooler.dense.weight"],
        weights["pooler.dense.weight"] * report.pooler_scale,
        rtol=1e-6,
        atol=0,
    )
    assert model.cls.predictions.decoder.weight is model.uniter.embeddings.word_embeddings.weight
    assert "cls.predictions.transform.dense.weight" in report.initialised
    assert "cls.predictions.decoder.weight" in report.copied


def test_an_untrained_pooler_is_brought_to_the_encoders_median_magnitude() -> None:
    """MiniLM's pooler (median |w| ~6x below the encoder's) would be the first tensor a global cut removes."""
    from lottery.sparsity.scope import prunable_parameters

    model, report = init_from_bert("minilm")
    encoder = torch.cat(
        [p.detach().abs().reshape(-1) for n, p in prunable_parameters(model).items() if ".encoder." in n]
    )
    pooler = model.uniter.pooler.dense.weight.detach().abs()
    assert 5.0 < report.pooler_scale < 6.5
    assert float(pooler.median()) == pytest.approx(float(encoder.median()), rel=0.02)
    assert "pooler weight scaled" in report.summary()


def as_original_checkpoint(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with LayerNorm weight/bias spelt gamma/beta, as pytorch-pretrained-bert saved."""
    layer_norms = {name for name, module in model.named_modules() if isinstance(module, nn.LayerNorm)}
    renamed = {}
    for key, value in state.items():
        module_name, _, param = key.rpartition(".")
        if module_name in layer_norms:
            param = {"weight": "gamma", "bias": "beta"}[param]
        renamed[f"{module_name}.{param}"] = value
    return renamed


def test_convert_loads_an_original_checkpoint_with_gamma_beta_names(tmp_path: Path) -> None:
    source = tiny_model(seed=1)
    original = as_original_checkpoint(source.state_dict(), source)
    assert "uniter.embeddings.LayerNorm.gamma" in original
    torch.save(original, tmp_path / "uniter.pt")

    model, report = convert_original(tmp_path / "uniter.pt", TINY)

    for key, value in source.state_dict().items():
        assert torch.equal(model.state_dict()[key], value), key
    assert_tied(model)
    assert report.initialised == ()
    assert ("uniter.embeddings.LayerNorm.gamma", "uniter.embeddings.LayerNorm.weight") in report.renamed


def test_convert_strips_a_data_parallel_module_prefix(tmp_path: Path) -> None:
    source = tiny_model(seed=1)
    torch.save({"module." + k: v for k, v in source.state_dict().items()}, tmp_path / "uniter.pt")
    model, _ = convert_original(tmp_path / "uniter.pt", TINY)
    assert torch.equal(model.itm_output.weight, source.itm_output.weight)


def test_convert_rejects_an_unexpected_key_and_names_it(tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    state["vqa_output.weight"] = torch.zeros(3, 32)
    torch.save(state, tmp_path / "uniter.pt")
    with pytest.raises(ValueError, match=r"unexpected keys \['vqa_output.weight'\]"):
        convert_original(tmp_path / "uniter.pt", TINY)


def test_convert_rejects_a_missing_encoder_key_and_names_it(tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    del state["uniter.encoder.layer.1.attention.self.key.weight"]
    torch.save(state, tmp_path / "uniter.pt")
    with pytest.raises(
        ValueError, match=r"missing keys \['uniter.encoder.layer.1.attention.self.key.weight'\]"
    ):
        convert_original(tmp_path / "uniter.pt", TINY)


def test_convert_names_key_and_shapes_of_a_mismatch(tmp_path: Path) -> None:
    state = tiny_model().state_dict()
    state["itm_output.weight"] = torch.zeros(3, 32)
    torch.save(state, tmp_path / "uniter.pt")
    with pytest.raises(ValueError, match="itm_output.weight: expected 2x32, got 3x32"):
        convert_original(tmp_path / "uniter.pt", TINY)


def test_convert_reports_missing_heads_and_leaves_them_initialised(tmp_path: Path) -> None:
    source = tiny_model(seed=1)
    body = {k: v for k, v in source.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    torch.save(body, tmp_path / "uniter.pt")

    model, report = convert_original(tmp_path / "uniter.pt", TINY)

    heads = [k for k in source.state_dict() if k.startswith(HEAD_PREFIXES) and k not in TIED_WEIGHTS]
    assert sorted(report.initialised) == sorted(heads)
    assert len(heads) == 20
    for key, value in body.items():
        assert torch.equal(model.state_dict()[key], value), key
    assert not torch.equal(model.itm_output.weight, source.itm_output.weight)


def pack(txt_lens: list[int], num_regions: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """attn_masks and gather_index as UNITER's data loader builds them (text, then regions, then padding)."""
    max_txt = max(txt_lens)
    out_size = max(t + n for t, n in zip(txt_lens, num_regions, strict=True))
    gather_index = torch.arange(out_size).repeat(len(txt_lens), 1)
    attn_masks = torch.zeros(len(txt_lens), out_size, dtype=torch.long)
    for i, (t, n) in enumerate(zip(txt_lens, num_regions, strict=True)):
        gather_index[i, t : t + n] = torch.arange(max_txt, max_txt + n)
        attn_masks[i, : t + n] = 1
    return attn_masks, gather_index


def test_packed_forward_ignores_padding_of_a_longer_sample() -> None:
    model = tiny_model().eval()
    torch.manual_seed(2)
    ids = torch.randint(1, 100, (2, 5))
    feat, box = torch.randn(2, 4, 16), torch.rand(2, 4, 7)
    ids[0, 3:] = 0
    feat[0, 2:], box[0, 2:] = 0.0, 0.0
    attn_masks, gather_index = pack([3, 5], [2, 4])
    positions = torch.arange(5).unsqueeze(0)

    with torch.no_grad():
        batch = model.uniter(ids, positions, feat, box, attn_masks, gather_index)
        a_mask, a_index = pack([3], [2])
        alone = model.uniter(ids[:1, :3], positions[:, :3], feat[:1, :2], box[:1, :2], a_mask, a_index)

    assert batch.shape == (2, 9, 32)
    assert torch.isfinite(batch).all()
    assert alone.shape == (1, 5, 32)
    torch.testing.assert_close(batch[0, :5], alone[0], rtol=0, atol=1e-5)


def test_text_only_and_image_only_forward_give_one_state_per_token() -> None:
    model = tiny_model().eval()
    ids = torch.randint(1, 100, (2, 6))
    feat, box = torch.randn(2, 3, 16), torch.rand(2, 3, 7)
    with torch.no_grad():
        text = model.uniter(ids, None, None, None, torch.ones(2, 6))
        image = model.uniter(None, None, feat, box, torch.ones(2, 3))
    assert text.shape == (2, 6, 32)
    assert image.shape == (2, 3, 32)


def test_unmasked_regions_ignore_row_zero_of_the_mask_embedding() -> None:
    model = tiny_model().eval()
    feat, box = torch.randn(1, 3, 16), torch.rand(1, 3, 7)
    with torch.no_grad():
        model.uniter.img_embeddings.mask_embedding.weight[0].fill_(5.0)
        plain = model.uniter(None, None, feat, box, torch.ones(1, 3))
        unmasked = model.uniter(None, None, feat, box, torch.ones(1, 3), img_masks=torch.zeros(1, 3))
        masked = model.uniter(None, None, feat, box, torch.ones(1, 3), img_masks=torch.tensor([[0, 1, 0]]))
    torch.testing.assert_close(unmasked, plain, rtol=0, atol=0)
    assert not torch.allclose(masked[0, 1], plain[0, 1])


def test_heads_give_logits_of_the_task_sizes() -> None:
    model = tiny_model().eval()
    with torch.no_grad():
        seq = model.uniter(torch.randint(1, 100, (2, 4)), None, None, None, torch.ones(2, 4))
        assert model.cls(seq).shape == (2, 4, 100)
        assert model.feat_regress(seq).shape == (2, 4, 16)
        assert model.region_classifier(seq).shape == (2, 4, 5)
        assert model.itm_output(model.uniter.pooler(seq)).shape == (2, 2)


def rewrite_weights(model_dir: Path, edit) -> None:
    path = model_dir / "model.safetensors"
    tensors = load_file(path)
    edit(tensors)
    save_file(tensors, path)


def test_from_pretrained_names_the_file_and_a_missing_key(tmp_path: Path) -> None:
    save_pretrained(tiny_model(), tmp_path / "model")
    rewrite_weights(tmp_path / "model", lambda t: t.pop("itm_output.bias"))
    with pytest.raises(ValueError, match=r"model/model.safetensors.*missing tensors \['itm_output.bias'\]"):
        from_pretrained(tmp_path / "model")


def test_from_pretrained_names_the_file_and_an_unexpected_key(tmp_path: Path) -> None:
    save_pretrained(tiny_model(), tmp_path / "model")
    rewrite_weights(tmp_path / "model", lambda t: t.update({"extra.weight": torch.zeros(2)}))
    with pytest.raises(ValueError, match=r"model/model.safetensors.*unexpected tensors \['extra.weight'\]"):
        from_pretrained(tmp_path / "model")


def test_from_pretrained_names_a_missing_config(tmp_path: Path) -> None:
    save_pretrained(tiny_model(), tmp_path / "model")
    (tmp_path / "model" / "config.json").unlink()
    with pytest.raises(ModelDirError, match="model/config.json is missing"):
        from_pretrained(tmp_path / "model")


def test_init_from_a_bert_for_pretraining_folder_copies_prefixed_keys_and_the_mlm_head(
    tmp_path: Path,
) -> None:
    from transformers import BertConfig, BertForPreTraining

    torch.manual_seed(3)
    bert = BertForPreTraining(
        BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64
        )
    )
    bert.save_pretrained(tmp_path / "bert")

    model, report = init_from_bert(tmp_path / "bert", img_dim=16, num_region_classes=5)

    assert model.config.name == "uniter-bert"
    torch.testing.assert_close(model.cls.predictions.bias, bert.cls.predictions.bias, rtol=0, atol=0)
    torch.testing.assert_close(
        model.cls.predictions.transform.dense.weight,
        bert.cls.predictions.transform.dense.weight,
        rtol=0,
        atol=0,
    )
    torch.testing.assert_close(
        model.uniter.encoder.layer[1].output.dense.weight,
        bert.bert.encoder.layer[1].output.dense.weight,
        rtol=0,
        atol=0,
    )
    assert "cls.seq_relationship.weight" in report.skipped
    assert report.pooler_scale == 1.0  # a BERT whose pooler has the encoder's scale keeps it as it is
    assert not any(
        key.startswith(("uniter.embeddings.", "uniter.encoder.", "cls.")) for key in report.initialised
    )


def test_the_parts_bert_does_not_give_are_the_same_on_every_build_and_leave_the_callers_rng_alone() -> None:
    """Two machines building uniter-mini get one model (before: 8 weights drawn from the global RNG)."""
    torch.manual_seed(123)
    first, _ = init_from_bert("minilm")
    after_first = torch.rand(1)
    torch.manual_seed(456)  # another caller's stream
    second, _ = init_from_bert("minilm")
    torch.manual_seed(123)
    assert torch.equal(torch.rand(1), after_first)  # building drew nothing from the caller's stream
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[key], b[key]) for key in a)
    other, _ = init_from_bert("minilm", seed=1)
    assert not torch.equal(other.itm_output.weight, first.itm_output.weight)
