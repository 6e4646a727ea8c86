"""`train.log_every` / `val_every` / `ckpt_every` = 0 mean "never, except at the end", as in finetune.

A real pre-training with all three at 0 is in tests/integration/test_pretrain_every.py.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from lottery.config import ConfigError, TrainConfig
from lottery.train.step import check_schedule, due


def test_an_interval_marks_its_multiples_and_the_last_step():
    assert [s for s in range(1, 13) if due(s, 5, 12)] == [5, 10, 12]
    assert [s for s in range(1, 13) if due(s, 1, 12)] == list(range(1, 13))


def test_zero_means_only_the_last_step():
    assert [s for s in range(1, 13) if due(s, 0, 12)] == [12]
    assert [s for s in range(1, 6) if due(s, 0, 5)] == [5]  # an invocation stopped early at step 5


@pytest.mark.parametrize("key", ["log_every", "val_every", "ckpt_every"])
def test_zero_is_accepted_and_a_negative_interval_is_refused_naming_its_key(key):
    check_schedule(replace(TrainConfig(), **{key: 0}))
    with pytest.raises(ConfigError, match=f"train.{key}=-1"):
        check_schedule(replace(TrainConfig(), **{key: -1}))
