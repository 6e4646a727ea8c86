"""UNITER as a transformers PreTrainedModel (issue 22, item 3): `AutoModel.from_pretrained(dir)` opens our
model directories, gives what our loaders give, and nothing tickets depend on (parameter names, a seed's
weights, old directories) moved.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import pytest
import torch
from tiny import TINY, save_tiny
from transformers import AutoConfig, AutoModel, AutoModelForPreTraining, AutoModelForSequenceClassification

from lottery.models.uniter import (
    TIED_WEIGHTS,
    TaskHead,
    UniterConfig,
    UniterForPretraining,
    UniterHFConfig,
    UniterModel,
    UniterWithTaskHead,
    from_finetuned,
    from_pretrained,
    load_config,
    save_finetuned,
)
from lottery.tasks.downstream.model import HEAD_LAYOUT, UniterForTask

ENCODER_LAYER = [
    "attention.self.query.weight",
    "attention.self.query.bias",
    "attention.self.key.weight",
    "attention.self.key.bias",
    "attention.self.value.weight",
    "attention.self.value.bias",
    "attention.output.dense.weight",
    "attention.output.dense.bias",
    "attention.output.LayerNorm.weight",
    "attention.output.LayerNorm.bias",
    "intermediate.dense.weight",
    "intermediate.dense.bias",
    "output.dense.weight",
    "output.dense.bias",
    "output.LayerNorm.weight",
    "output.LayerNorm.bias",
]
# `UniterForPretraining(TINY).named_parameters()` as captured before the models became PreTrainedModels:
# tickets are keyed by these names, in this (registration) order.
PRETRAINING_PARAMETERS = [
    "uniter.embeddings.word_embeddings.weight",
    "uniter.embeddings.position_embeddings.weight",
    "uniter.embeddings.token_type_embeddings.weight",
    "uniter.embeddings.LayerNorm.weight",
    "uniter.embeddings.LayerNorm.bias",
    "uniter.img_embeddings.img_linear.weight",
    "uniter.img_embeddings.img_linear.bias",
    "uniter.img_embeddings.img_layer_norm.weight",
    "uniter.img_embeddings.img_layer_norm.bias",
    "uniter.img_embeddings.pos_layer_norm.weight",
    "uniter.img_embeddings.pos_layer_norm.bias",
    "uniter.img_embeddings.pos_linear.weight",
    "uniter.img_embeddings.pos_linear.bias",
    "uniter.img_embeddings.mask_embedding.weight",
    "uniter.img_embeddings.LayerNorm.weight",
    "uniter.img_embeddings.LayerNorm.bias",
    *[f"uniter.encoder.layer.{i}.{name}" for i in (0, 1) for name in ENCODER_LAYER],
    "uniter.pooler.dense.weight",
    "uniter.pooler.dense.bias",
    "cls.predictions.bias",
    "cls.predictions.transform.dense.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.LayerNorm.bias",
    "feat_regress.bias",
    "feat_regress.net.0.weight",
    "feat_regress.net.0.bias",
    "feat_regress.net.2.weight",
    "feat_regress.net.2.bias",
    "region_classifier.net.0.weight",
    "region_classifier.net.0.bias",
    "region_classifier.net.2.weight",
    "region_classifier.net.2.bias",
    "region_classifier.net.3.weight",
    "region_classifier.net.3.bias",
    "itm_output.weight",
    "itm_output.bias",
]
# sha256 over (name, bytes) of the state dict of `torch.manual_seed(0); Model(TINY)`, captured before the
# change: a theta0 is cached by its config's digest, so the same seed must keep drawing the same weights.
SEED0_DIGESTS = {
    "pretraining": "5dba0477715c48c32b7ed284c90c895fb1b2a6023b2f727c0782247176cc9b46",
    "backbone": "b22315a32d573aa32499772b6e08379629487a6d2beda86f0aeeb38da29e57e0",
}


def digest(model: torch.nn.Module) -> str:
    h = hashlib.sha256()
    for key, value in model.state_dict().items():
        h.update(key.encode())
        h.update(value.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def uniter_inputs(seed: int = 1) -> dict[str, torch.Tensor]:
    """Two samples packed text-then-regions; the first has 3 of 5 tokens and 2 of 4 regions, padded at the end."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, TINY.vocab_size, (2, 5), generator=g)
    ids[0, 3:] = 0
    gather_index = torch.arange(9).repeat(2, 1)
    gather_index[0, 3:5] = torch.tensor([5, 6])
    attn_masks = torch.ones(2, 9, dtype=torch.long)
    attn_masks[0, 5:] = 0
    return {
        "input_ids": ids,
        "position_ids": torch.arange(5).unsqueeze(0),
        "img_feat": torch.randn(2, 4, TINY.img_dim, generator=g),
        "img_pos_feat": torch.rand(2, 4, 7, generator=g),
        "attn_masks": attn_masks,
        "gather_index": gather_index,
        "img_masks": torch.tensor([[0, 1, 0, 0], [1, 0, 0, 1]]),
    }


def pretraining_outputs(model: UniterForPretraining) -> list[torch.Tensor]:
    with torch.no_grad():
        seq = model.uniter(**uniter_inputs())
        return [
            seq,
            model.cls(seq),
            model.feat_regress(seq),
            model.region_classifier(seq),
            model.itm_output(model.uniter.pooler(seq)),
        ]


def head_outputs(model: UniterForTask | UniterWithTaskHead) -> torch.Tensor:
    """What the task's adapter feeds the head: the pooled output, both images' joined, or every region's."""
    with torch.no_grad():
        seq = model.uniter(**uniter_inputs())
        reads, _ = HEAD_LAYOUT[model.task]
        if reads == "regions":
            return model.head(seq)
        pooled = model.pooled(seq)
        return model.head(pooled.reshape(1, -1) if reads == "pair" else pooled)


def auto_loaded(auto_class: type, model_dir: Path) -> torch.nn.Module:
    """`auto_class.from_pretrained(model_dir)` in eval mode, its weights copied into fresh memory.

    Why the copy: transformers memory-maps model.safetensors, whose tensors are then only 8-byte aligned,
    and the CPU matmul kernels round differently on such input (by ~1e-8, 1 / 2 logits of the nlvr2 head).
    Our loader reads the file into fresh, 64-byte aligned tensors. Same weights, same alignment: the same
    bits out.
    """
    model = auto_class.from_pretrained(model_dir).eval()
    for param in model.parameters():  # one Parameter per tied pair, so the ties hold
        param.data = param.data.clone()
    return model


def assert_same_weights(got: torch.nn.Module, want: torch.nn.Module, prefix: str = "") -> None:
    expected = {
        key.removeprefix(prefix): value for key, value in want.state_dict().items() if key.startswith(prefix)
    }
    assert list(got.state_dict()) == list(expected)
    assert all(torch.equal(value, expected[key]) for key, value in got.state_dict().items())


def assert_same(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    assert len(got) == len(want)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def save_task_model(out: Path, task: str, outputs: int | None = 5) -> Path:
    torch.manual_seed(0)
    model = UniterForTask(TINY, task, num_outputs=outputs)
    out.mkdir()
    return save_finetuned(model.state_dict(), model.config, TaskHead(task, model.head[-1].out_features), out)


def test_automodel_opens_a_model_init_directory_with_the_backbone_our_loader_gives(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    auto = auto_loaded(AutoModel, model_dir)
    ours = from_pretrained(model_dir).eval()
    assert type(auto) is UniterModel
    assert_same_weights(auto, ours, prefix="uniter.")
    with torch.no_grad():
        assert_same([auto(**uniter_inputs())], [ours.uniter(**uniter_inputs())])


def test_automodel_for_pretraining_gives_every_head_output_of_our_loader_with_the_weights_tied(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    auto = auto_loaded(AutoModelForPreTraining, model_dir)
    ours = from_pretrained(model_dir).eval()
    assert type(auto) is UniterForPretraining
    assert_same_weights(auto, ours)
    for alias, owner in TIED_WEIGHTS.items():
        assert auto.get_parameter(alias) is auto.get_parameter(owner)
    assert auto.feat_regress.bias.shape == (TINY.img_dim,)  # transformers' own tying would resize it
    assert_same(pretraining_outputs(auto), pretraining_outputs(ours))


@pytest.mark.parametrize(("task", "outputs"), [("vqa", 5), ("nlvr2", None), ("refcoco+", None)])
def test_auto_classes_open_a_finetuned_directory_with_the_outputs_of_from_finetuned(tmp_path, task, outputs):
    model_dir = save_task_model(tmp_path / "model", task, outputs)
    ours = from_finetuned(model_dir).eval()
    backbone = auto_loaded(AutoModel, model_dir)
    with_head = auto_loaded(AutoModelForSequenceClassification, model_dir)
    assert type(with_head) is UniterWithTaskHead and with_head.task == task
    assert_same_weights(backbone, ours, prefix="uniter.")
    assert_same_weights(with_head, ours)
    with torch.no_grad():
        assert_same([backbone(**uniter_inputs())], [ours.uniter(**uniter_inputs())])
    assert_same([head_outputs(with_head)], [head_outputs(ours)])


def test_autoconfig_reads_model_type_uniter_from_the_config_json_we_write(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    written = json.loads((model_dir / "config.json").read_text())
    assert written == {"model_type": "uniter", "architectures": ["UniterForPretraining"], **TINY.to_dict()}
    config = AutoConfig.from_pretrained(model_dir)
    assert type(config) is UniterHFConfig and config.model_type == "uniter"
    assert config.to_uniter_config() == load_config(model_dir) == TINY


def test_the_transformers_config_has_every_uniter_config_field_with_the_same_default():
    """UniterHFConfig spells the fields out again (transformers' strict dataclass needs them written in
    the class), so a field added to UniterConfig alone must fail here, not in a user's AutoModel."""
    ours = {f.name: f.default for f in dataclasses.fields(UniterConfig)}
    theirs = {f.name: f.default for f in dataclasses.fields(UniterHFConfig)}
    assert set(ours) <= set(theirs)
    assert {name: theirs[name] for name, default in ours.items() if default is not dataclasses.MISSING} == {
        name: default for name, default in ours.items() if default is not dataclasses.MISSING
    }


def test_a_config_json_written_before_model_type_still_loads_with_our_loader(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    before = from_pretrained(model_dir).state_dict()
    (model_dir / "config.json").write_text(json.dumps(TINY.to_dict(), indent=2) + "\n")  # the old format
    assert load_config(model_dir) == TINY
    reloaded = from_pretrained(model_dir).state_dict()
    assert all(torch.equal(value, before[key]) for key, value in reloaded.items())


def test_an_old_config_json_is_still_held_to_exactly_the_uniter_config_keys(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    (model_dir / "config.json").write_text(json.dumps({**TINY.to_dict(), "hidden_sise": 32}))
    with pytest.raises(ValueError, match=r"unknown keys \['hidden_sise'\]"):
        load_config(model_dir)


def test_a_config_json_of_another_model_type_is_refused_naming_it(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    (model_dir / "config.json").write_text(json.dumps({**TINY.to_dict(), "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type is 'bert', not 'uniter'"):
        load_config(model_dir)


def test_invalid_sizes_in_a_model_type_config_are_one_line_naming_the_field(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    data = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**data, "num_attention_heads": 5}))
    with pytest.raises(ValueError) as caught:
        load_config(model_dir)
    assert "\n" not in str(caught.value)
    assert "hidden_size 32 is not a multiple of num_attention_heads 5" in str(caught.value)


def test_a_directory_written_by_transformers_save_pretrained_loads_with_our_loader(tmp_path):
    torch.manual_seed(0)
    model = UniterForPretraining(TINY)
    model.save_pretrained(tmp_path / "hf")
    reloaded = from_pretrained(tmp_path / "hf")
    assert reloaded.config.to_uniter_config() == TINY
    assert_same_weights(reloaded, model)


def test_parameter_names_are_the_ones_tickets_were_cut_with():
    assert len(PRETRAINING_PARAMETERS) == 68
    assert [name for name, _ in UniterForPretraining(TINY).named_parameters()] == PRETRAINING_PARAMETERS
    backbone = [name.removeprefix("uniter.") for name in PRETRAINING_PARAMETERS if name.startswith("uniter.")]
    assert [name for name, _ in UniterModel(TINY).named_parameters()] == backbone


def test_a_seed_draws_the_weights_it_drew_before_the_models_were_pretrained_models():
    torch.manual_seed(0)
    assert digest(UniterForPretraining(TINY)) == SEED0_DIGESTS["pretraining"]
    torch.manual_seed(0)
    assert digest(UniterModel(TINY)) == SEED0_DIGESTS["backbone"]


@pytest.mark.parametrize("task", sorted(HEAD_LAYOUT))
def test_uniter_with_task_head_is_uniter_for_task_name_for_name_and_weight_for_weight(task):
    torch.manual_seed(0)
    ours = UniterForTask(TINY, task, num_outputs=7)
    torch.manual_seed(0)
    config = UniterHFConfig.from_uniter_config(TINY, task=task, num_outputs=7)
    assert_same_weights(UniterWithTaskHead(config), ours)


def test_the_task_head_class_refuses_a_pretraining_directory_naming_automodel(tmp_path):
    model_dir = save_tiny(tmp_path / "model")
    with pytest.raises(ValueError, match=r"task None is not a downstream task.*use AutoModel"):
        AutoModelForSequenceClassification.from_pretrained(model_dir)
