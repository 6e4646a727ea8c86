"""Region features of the images a task's examples name, read once from the scenes' shards."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from lottery.data.patches import PatchGrid
from lottery.data.pipeline import eval_batches, shard_urls

_SHAPES_KEY = re.compile(r"(train|val)-(\d{8})")


def shards_holding(shards_dir: Path, split: str, keys: set[str]) -> list[str]:
    """The shard files that can hold `keys`: for the shapes world only those their indices fall in
    (sample i of a split is in shard i // samples_per_shard), otherwise every shard of the split."""
    urls = shard_urls(Path(shards_dir), split)
    meta = json.loads((Path(shards_dir) / "meta.json").read_text())
    per_shard = (meta.get("config") or {}).get("samples_per_shard")
    matches = [_SHAPES_KEY.fullmatch(k) for k in keys]
    if meta.get("source") != "shapes" or not per_shard or not all(m and m.group(1) == split for m in matches):
        return urls
    wanted = {int(m.group(2)) // per_shard for m in matches if m}
    return [url for index, url in enumerate(urls) if index in wanted]


def load_features(
    shards_dir: Path, split: str, keys: Iterable[str], tokenizer_dir: Path, patches: PatchGrid | None = None
) -> dict[str, tuple[Tensor, Tensor]]:
    """key -> (feat (N, D) float16, box (N, 7)) for every wanted key of `split`; names any key missing.
    With `patches` (a patch model), an image's "regions" are its patches."""
    wanted = set(keys)
    found: dict[str, tuple[Tensor, Tensor]] = {}
    for batch in eval_batches(
        shards_holding(shards_dir, split, wanted),
        tokenizer_dir=tokenizer_dir,
        max_text_len=8,
        batch_size=64,
        patches=patches,
    ):
        for example in batch:
            if example.key in wanted:
                found[example.key] = (example.feat.half(), example.box)
    missing = sorted(wanted - set(found))
    if missing:
        raise KeyError(
            f"{shards_dir} ({split}) has no sample for {len(missing)} image(s) the task names, e.g. {missing[:3]}"
        )
    return found
