"""LXMERT: its prunable scope, lxmert-mini from MiniLM, directories, and the two-stream bridge."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import LxmertConfig, LxmertForPreTraining

from lottery.models.lxmert import (
    LXMERT_SCOPE,
    LxmertForLotteryPretraining,
    from_pretrained,
    init_from_bert,
    save_pretrained,
    stream_masks,
)
from lottery.models.lxmert.from_bert import LayerPlan, lxmert_key
from lottery.models.uniter import ModelDirError
from lottery.models.uniter.from_bert import resolve_bert_dir
from lottery.sparsity.scope import prunable_names
from lottery.tasks.lxmert_pretrain import LXMERT_TASKS
from lottery.tasks.masking import TextVocab
from lottery.tasks.packing import pack
from lottery.tasks.pretrain import CollateContext, summarise

VOCAB = TextVocab(size=100, pad_id=0, cls_id=1, sep_id=2, mask_id=3, first_word_id=5)


def tiny_config(**extra) -> LxmertConfig:
    sizes = dict(
        vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64,
        l_layers=2, x_layers=1, r_layers=1, visual_feat_dim=16, num_object_labels=5,
        task_qa=False, visual_attr_loss=False, name="lxmert-tiny",
    )  # fmt: skip
    return LxmertConfig(**{**sizes, **extra})


def test_scope_selects_the_attention_and_ffn_weights_of_every_encoder_and_the_pooler():
    """Language layers: 6 each; relation layers: 6 each; a cross layer: cross-attention 4 + two self-
    attentions 8 + two FFNs 4 = 16; the pooler 1. Nothing else: no bias, LayerNorm, embedding or head."""
    model = LxmertForLotteryPretraining(tiny_config())
    names = model.prunable()
    assert len(names) == 2 * 6 + 1 * 6 + 1 * 16 + 1
    assert all(name.endswith(".weight") and "LayerNorm" not in name for name in names)
    assert not [n for n in names if n.startswith(("cls.", "obj_predict_head.")) or "embeddings" in n]
    assert not [n for n in names if "visn_fc" in n]
    assert "lxmert.encoder.x_layers.0.visual_attention.att.query.weight" in names
    assert "lxmert.encoder.x_layers.0.visn_output.dense.weight" in names
    assert "lxmert.encoder.r_layers.0.output.dense.weight" in names
    assert names[-1] == "lxmert.pooler.dense.weight"
    # the scope is the model's default: the fingerprint under it equals the one spelled out
    assert model.fingerprint() == model.fingerprint(LXMERT_SCOPE)


def test_a_uniter_ticket_scope_does_not_fingerprint_an_lxmert_model_as_its_own():
    """UNITER's scope also matches LXMERT's language layers, but not its cross or relation layers, and the
    names differ: the fingerprints of the two scopes on the same model differ, so the ticket is refused."""
    from lottery.sparsity.scope import DEFAULT_SCOPE

    model = LxmertForLotteryPretraining(tiny_config())
    assert len(prunable_names(dict(model.named_parameters()), DEFAULT_SCOPE)) < len(model.prunable())
    assert model.fingerprint(DEFAULT_SCOPE) != model.fingerprint()


@pytest.fixture(scope="module")
def lxmert_mini():
    return init_from_bert("minilm", img_dim=24, num_region_classes=7)


def test_lxmert_mini_takes_minilm_layers_for_its_language_side(lxmert_mini):
    model, report = lxmert_mini
    assert (report.plan.language, report.plan.cross, report.plan.relation) == (4, 2, 2)
    assert model.config.name == "lxmert-mini" and len(model.prunable()) == 4 * 6 + 2 * 16 + 2 * 6 + 1
    bert = load_file(resolve_bert_dir("minilm") / "model.safetensors")
    params = dict(model.named_parameters())
    assert torch.equal(
        params["lxmert.encoder.layer.3.output.dense.weight"], bert["encoder.layer.3.output.dense.weight"]
    )
    # MiniLM's layers 4 and 5 are the language half of the two cross-modality layers
    assert torch.equal(
        params["lxmert.encoder.x_layers.1.lang_self_att.self.key.weight"],
        bert["encoder.layer.5.attention.self.key.weight"],
    )
    assert torch.equal(
        params["lxmert.encoder.x_layers.0.lang_inter.dense.bias"],
        bert["encoder.layer.4.intermediate.dense.bias"],
    )
    assert torch.equal(
        params["lxmert.embeddings.word_embeddings.weight"], bert["embeddings.word_embeddings.weight"]
    )
    assert model.cls.predictions.decoder.weight is model.lxmert.embeddings.word_embeddings.weight
    assert "embeddings.position_ids" in report.skipped


def test_drawn_and_untrained_prunable_weights_are_brought_to_the_copied_encoders_scale(lxmert_mini):
    """A global magnitude cut must not remove the drawn vision side first just because N(0, 0.02) is small."""
    model, report = lxmert_mini
    params = {name: p.detach() for name, p in model.named_parameters()}
    copied_names = [
        n
        for n in model.prunable()
        if ".encoder.layer." in n or "_layers.0.lang_" in n or "_layers.1.lang_" in n
    ]
    copied = [params[name].abs().reshape(-1) for name in copied_names]
    reference = float(torch.cat(copied).median())
    assert "lxmert.pooler.dense.weight" in report.scaled
    assert len([name for name in report.scaled if "r_layers" in name]) == 2 * 6
    assert all(".encoder.layer." not in name and "lang_" not in name for name in report.scaled)
    for name in report.scaled:
        assert float(params[name].abs().median()) == pytest.approx(reference, rel=1e-3), name


def test_the_same_folder_builds_the_same_model():
    first, _ = init_from_bert("minilm", img_dim=24, num_region_classes=7)
    second, _ = init_from_bert("minilm", img_dim=24, num_region_classes=7)
    assert all(
        torch.equal(a, b)
        for a, b in zip(first.state_dict().values(), second.state_dict().values(), strict=True)
    )


def test_layer_plan_and_key_mapping():
    assert LayerPlan.for_bert(12) == LayerPlan(8, 4, 4)
    plan = LayerPlan.for_bert(6)
    assert lxmert_key("bert.encoder.layer.4.output.LayerNorm.weight", plan) == (
        "lxmert.encoder.x_layers.0.lang_output.LayerNorm.weight"
    )
    assert lxmert_key("encoder.layer.5.attention.output.dense.weight", plan) == (
        "lxmert.encoder.x_layers.1.lang_self_att.output.dense.weight"
    )
    assert lxmert_key("cls.predictions.bias", plan) is None
    with pytest.raises(ValueError, match="1 layer"):
        LayerPlan.for_bert(1)


def test_directory_round_trip_and_stock_transformers_open_it(tmp_path, lxmert_mini):
    from transformers import AutoModelForPreTraining

    model, _ = lxmert_mini
    out = save_pretrained(model, tmp_path / "lxmert-mini")
    loaded = from_pretrained(out)
    assert loaded.config.name == "lxmert-mini"
    for (name, a), b in zip(model.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    stock = AutoModelForPreTraining.from_pretrained(str(out))
    assert type(stock) is LxmertForPreTraining
    with pytest.raises(FileExistsError):
        save_pretrained(model, out)


def test_a_transformers_saved_lxmert_with_qa_and_attribute_heads_loads(tmp_path):
    """What a downloaded unc-nlp/lxmert-base-uncased is: LxmertForPreTraining.save_pretrained, with every head."""
    torch.manual_seed(0)
    original = LxmertForPreTraining(tiny_config(task_qa=True, visual_attr_loss=True, num_qa_labels=6))
    original.config.name = None
    original.save_pretrained(tmp_path / "downloaded")
    loaded = from_pretrained(tmp_path / "downloaded")
    assert loaded.config.name == "lxmert-downloaded"
    for (name, a), b in zip(original.state_dict().items(), loaded.state_dict().values(), strict=True):
        assert torch.equal(a, b), name


def test_a_directory_that_does_not_fit_is_refused_by_name(tmp_path, lxmert_mini):
    model, _ = lxmert_mini
    out = save_pretrained(model, tmp_path / "m")
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "r_layers": 3}))
    with pytest.raises(ModelDirError, match=r"missing tensors \['lxmert.encoder.r_layers.2"):
        from_pretrained(out)
    (out / "config.json").write_text(json.dumps({**config, "model_type": "uniter"}))
    with pytest.raises(ModelDirError, match="not an LXMERT model"):
        from_pretrained(out)
    (out / "model.safetensors").unlink()
    (out / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelDirError, match="model.safetensors is missing"):
        from_pretrained(out)


def _examples(count: int, seed: int = 0) -> list[SimpleNamespace]:
    gen = torch.Generator().manual_seed(seed)
    examples = []
    for _ in range(count):
        words, regions = (
            int(torch.randint(3, 9, (1,), generator=gen)),
            int(torch.randint(2, 7, (1,), generator=gen)),
        )
        ids = [VOCAB.cls_id, *torch.randint(5, VOCAB.size, (words,), generator=gen).tolist(), VOCAB.sep_id]
        soft = torch.softmax(3 * torch.randn(regions, 5, generator=gen), dim=-1)
        feat, box = torch.randn(regions, 16, generator=gen), torch.rand(regions, 7, generator=gen)
        examples.append(SimpleNamespace(input_ids=ids, feat=feat, box=box, soft=soft, meta={}))
    return examples


def test_stream_masks_recover_each_samples_words_and_regions_from_the_packed_layout():
    examples = _examples(6)
    batch = pack(
        [torch.tensor(ex.input_ids) for ex in examples],
        [ex.feat for ex in examples],
        [ex.box for ex in examples],
    )
    text, regions = stream_masks(batch)
    assert text.sum(1).tolist() == [len(ex.input_ids) for ex in examples]
    assert regions.sum(1).tolist() == [len(ex.feat) for ex in examples]
    assert torch.equal(text, batch["input_ids"] != 0)  # no padding token inside a caption here


def test_encode_is_blind_to_padding():
    """A sample's outputs do not change when a longer neighbour pads its text and regions."""
    torch.manual_seed(0)
    model = LxmertForLotteryPretraining(tiny_config()).eval()
    short, long = _examples(2, seed=3)
    long.input_ids = long.input_ids + [7] * 6
    long.feat, long.box = torch.randn(9, 16), torch.rand(9, 7)

    def streams(examples):
        ids = [torch.tensor(ex.input_ids) for ex in examples]
        return model.encode(pack(ids, [ex.feat for ex in examples], [ex.box for ex in examples]))

    alone, padded = streams([short]), streams([short, long])
    words, boxes = len(short.input_ids), len(short.feat)
    assert torch.allclose(alone.language[0, :words], padded.language[0, :words], atol=1e-5)
    assert torch.allclose(alone.vision[0, :boxes], padded.vision[0, :boxes], atol=1e-5)
    assert torch.allclose(alone.pooled[0], padded.pooled[0], atol=1e-5)


@pytest.mark.parametrize("task_name", sorted(LXMERT_TASKS))
def test_each_task_gives_a_finite_loss_and_can_fit_one_batch(task_name):
    torch.manual_seed(0)
    model = LxmertForLotteryPretraining(
        tiny_config(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    )
    task = LXMERT_TASKS[task_name]
    batch = task.collate(_examples(8), CollateContext(VOCAB, mask_prob=0.3), torch.Generator().manual_seed(1))
    first, stats = model(batch, task)
    assert (
        math.isfinite(float(first))
        and set(stats) == set(task.stat_keys())
        and stats[f"{task_name}_count"] > 0
    )
    last = fit_one_batch(model, batch, task, steps=60)
    assert last < 0.3 * float(first), (float(first), last)


def fit_one_batch(model, batch: dict, task, steps: int) -> float:
    """Train on one fixed batch; the loss after: the cheapest proof a loss is wired to its head and targets."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(steps):
        optimizer.zero_grad()
        loss, _ = model(batch, task)
        loss.backward()
        optimizer.step()
    return float(model(batch, task)[0].detach())


def test_summary_of_lxmert_tasks_reports_object_accuracy():
    sums = {key: 2.0 for task in LXMERT_TASKS.values() for key in task.stat_keys()}
    metrics = summarise(sums, LXMERT_TASKS)
    assert metrics["obj_acc"] == 1.0 and "mrfr_acc" not in metrics and "mrckl_loss" not in metrics


def test_config_task_lists_match_the_task_tables():
    from lottery.config import FAMILY_TASKS
    from lottery.models.families import FAMILIES
    from lottery.tasks.pretrain import TASKS

    assert set(FAMILY_TASKS) == set(FAMILIES)
    assert set(FAMILY_TASKS["uniter"]) == set(TASKS) and set(FAMILY_TASKS["lxmert"]) == set(LXMERT_TASKS)
