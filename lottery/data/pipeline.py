"""Read shards as batches of `Example`s: node split -> worker split -> read -> decode and validate -> batch -> tokenise.

Training reads an infinite stream, so every rank can run the same number of steps however unevenly the
shards divide, and the stream is a function of (urls, seed, rank, world_size) alone, so a resumed run
that skips the batches it already consumed sees the same data as an uninterrupted one. Evaluation
reads one ordered pass over all shards on every rank.
"""

from __future__ import annotations

import functools
import itertools
import json
import signal
import tarfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webdataset as wds
from transformers import AutoTokenizer

from lottery.data.patches import PatchGrid
from lottery.data.schema import META_NAME, decode_sample, listed_shards, shard_error, validate_sample


@dataclass(frozen=True)
class Example:
    """One decoded sample, ready for a model adapter; float tensors are float32."""

    key: str
    input_ids: list[int]  # texts[0] as [CLS] ... [SEP], at most max_text_len ids
    feat: torch.Tensor  # (N, D): region features, or a patch model's patches (lottery.data.patches)
    box: torch.Tensor  # (N, 7)
    soft: torch.Tensor | None  # (N, C), when the shard has detector scores
    meta: dict[str, Any]  # the sample's json: texts, scene, task fields


def shard_urls(data_dir: Path, split: str) -> list[str]:
    """The shard files of `split`, sorted, as listed by the dataset's meta.json.

    meta.json is written last, so its absence means the dataset is unfinished (or not a dataset).
    """
    data_dir = Path(data_dir)
    meta_path = data_dir / META_NAME
    names = listed_shards(data_dir).get(split)
    if names is None:
        raise ValueError(f"{meta_path}: lists no shards for split {split!r}")
    if not names:
        raise ValueError(f"{meta_path}: the split {split!r} has no shards")
    missing = [n for n in names if not (data_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(
            f"{data_dir}: shards listed in {META_NAME} are missing: {missing}; rebuild the dataset"
        )
    return sorted(str(data_dir / n) for n in names)


def rank_shards(urls: list[str], rank: int, world_size: int) -> list[str]:
    """The shards rank `rank` reads: every `world_size`-th, starting at its rank (disjoint, covering)."""
    if not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is outside world size {world_size}")
    if world_size > len(urls):
        raise ValueError(
            f"{len(urls)} shard(s) cannot feed {world_size} ranks (first: {urls[0] if urls else 'none'}); "
            "write the dataset with fewer samples per shard or run on fewer ranks"
        )
    return urls[rank::world_size]


def example_stream(
    urls: list[str],
    *,
    rank: int,
    world_size: int,
    tokenizer_dir: Path,
    batch_size: int,
    max_text_len: int = 60,
    seed: int = 0,
    num_workers: int = 0,
    patches: PatchGrid | None = None,
) -> Iterable[list[Example]]:
    """An infinite stream of training batches for this rank; each iteration starts it afresh.

    Shards go to ranks by `rank_shards`; each epoch the rank's shards are permuted by (seed, epoch),
    and with `num_workers` > 0 (capped at the rank's shard count) each worker reads every
    `num_workers`-th shard of that sequence, and the loader interleaves the workers' batches in a
    fixed order. A bad sample or unreadable shard raises `ShardError` naming the shard and key.
    With `patches`, an example's regions are its image's patches (a patch model's input).
    """
    mine = rank_shards(urls, rank, world_size)
    pipeline = wds.DataPipeline(
        partial(_epochs, mine, seed),
        wds.split_by_worker,
        _read_shards,
        wds.map(_checked),
        wds.batched(batch_size, collation_fn=None, partial=False),
        partial(_examples, tokenizer_dir=tokenizer_dir, max_text_len=max_text_len, patches=patches),
    )
    workers = min(num_workers, len(mine))
    if workers == 0:
        return pipeline
    return wds.WebLoader(pipeline, batch_size=None, num_workers=workers, worker_init_fn=_ignore_stop_signal)


def _ignore_stop_signal(worker_id: int) -> None:
    """SLURM signals every process of a task (``scancel --signal=USR1``), loader workers included: a
    worker must not die of it while the trainer finishes its step and checkpoints (step.StopRequest)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def eval_batches(
    urls: list[str],
    *,
    tokenizer_dir: Path,
    max_text_len: int,
    batch_size: int,
    limit: int | None = None,
    patches: PatchGrid | None = None,
) -> Iterable[list[Example]]:
    """One pass over `urls` in order, in one process and not split by rank, so every rank sees the
    same samples; `limit` stops after that many samples. The last batch may be short."""
    stages: list[Any] = [partial(_once, urls), _read_shards, wds.map(_checked)]
    if limit is not None:
        stages.append(wds.slice(limit))
    stages += [
        wds.batched(batch_size, collation_fn=None, partial=True),
        partial(_examples, tokenizer_dir=tokenizer_dir, max_text_len=max_text_len, patches=patches),
    ]
    return wds.DataPipeline(*stages)


def _once(urls: list[str]) -> Iterator[dict[str, str]]:
    for url in urls:
        yield {"url": url}


def _epochs(urls: list[str], seed: int) -> Iterator[dict[str, str]]:
    for epoch in itertools.count():
        for i in np.random.default_rng([seed, epoch]).permutation(len(urls)):
            yield {"url": urls[i]}


def _read_shards(sources: Iterable[dict[str, str]]) -> Iterator[dict[str, Any]]:
    """Raw samples of each shard; a tar that cannot be read becomes a ShardError naming it."""
    for source in sources:
        url = source["url"]
        try:
            yield from wds.tarfile_samples([{"url": url}])
        except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
            # webdataset re-raises with args (message @ stream, stream, url): keep the message
            reason = str(exc.args[0] if exc.args else exc).split(" @ ")[0]
            raise shard_error(url, None, f"cannot read the tar ({reason})") from exc


def _checked(raw: dict[str, Any]) -> dict[str, Any]:
    shard = raw["__url__"]
    sample = decode_sample(raw, shard)
    validate_sample(sample, shard, _feat_dim(Path(shard).parent / META_NAME))
    return sample


def _feat_dim(meta_path: Path) -> int | None:
    """The region feature size D that a dataset's meta.json records (the size its model was built for),
    None when it records none (images only) or cannot be read (`shard_urls` names that)."""
    try:
        return _recorded_feat_dim(str(meta_path), meta_path.stat().st_mtime_ns)
    except OSError:
        return None


@functools.lru_cache(maxsize=64)
def _recorded_feat_dim(meta_path: str, mtime_ns: int) -> int | None:
    """Read once per meta.json version (`mtime_ns`): a dataset rebuilt in place is read again."""
    try:
        feat_dim = json.loads(Path(meta_path).read_text()).get("feat_dim")
    except (OSError, ValueError, AttributeError):
        return None
    return feat_dim if isinstance(feat_dim, int) else None


def _examples(
    batches: Iterable[list[dict[str, Any]]],
    *,
    tokenizer_dir: Path,
    max_text_len: int,
    patches: PatchGrid | None = None,
) -> Iterator[list[Example]]:
    """Tokenise texts[0] of each sample; the tokenizer loads once per worker, on its first batch."""
    tokenizer = None
    for batch in batches:
        if tokenizer is None:
            tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        ids = tokenizer([s["json"]["texts"][0] for s in batch], truncation=True, max_length=max_text_len)[
            "input_ids"
        ]
        yield [_example(sample, input_ids, patches) for sample, input_ids in zip(batch, ids, strict=True)]


def _example(sample: dict[str, Any], input_ids: list[int], patches: PatchGrid | None) -> Example:
    """The sample as a model reads it: its region features, or with `patches` its image's patches."""
    if patches is not None:
        feat, box = patches.patches(sample, sample.get("__url__", "?"))
        return Example(sample["__key__"], input_ids, feat, box, None, sample["json"])
    if "feat.npy" not in sample:
        raise shard_error(
            sample.get("__url__", "?"),
            sample["__key__"],
            "no region features (feat.npy): this dataset holds images only, which a patch model (ViLT) reads",
        )
    soft = sample.get("soft.npy")
    return Example(
        key=sample["__key__"],
        input_ids=input_ids,
        feat=torch.from_numpy(sample["feat.npy"].astype(np.float32)),
        box=torch.from_numpy(sample["box.npy"].astype(np.float32)),  # a copy: np.load gave a read-only view
        soft=None if soft is None else torch.from_numpy(soft.astype(np.float32)),
        meta=sample["json"],
    )
