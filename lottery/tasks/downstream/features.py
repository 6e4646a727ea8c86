"""Region features of the images a task's examples name, read once from the scenes' shards."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from torch import Tensor

from lottery.data.pipeline import eval_batches, shard_urls


def load_features(
    shards_dir: Path, split: str, keys: Iterable[str], tokenizer_dir: Path
) -> dict[str, tuple[Tensor, Tensor]]:
    """key -> (feat (N, D) float16, box (N, 7)) for every wanted key of `split`; names any key missing."""
    wanted = set(keys)
    found: dict[str, tuple[Tensor, Tensor]] = {}
    for batch in eval_batches(
        shard_urls(Path(shards_dir), split), tokenizer_dir=tokenizer_dir, max_text_len=8, batch_size=64
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
