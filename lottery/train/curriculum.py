"""The scene-complexity schedule: which shards each training step reads.

`data.curriculum` lists phases of easier scenes that come before the main scenes of `data`; each phase
is its own shapes dataset (built once, like the main one), and the main scenes take every step after
the last phase. The schedule is a pure function of the config, so a resumed run finds the same phase
for every step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from lottery.config import DataConfig, ScenePhase


@dataclass(frozen=True)
class Stage:
    first_step: int  # 1-based, inclusive
    last_step: int | None  # inclusive; None = to the end of training
    data: DataConfig  # the dataset this stage reads

    def holds(self, step: int) -> bool:
        return step >= self.first_step and (self.last_step is None or step <= self.last_step)


def phase_data(data: DataConfig, index: int, phase: ScenePhase) -> DataConfig:
    """The dataset of one phase: the main data's settings with the phase's scenes, in its own directory."""
    if phase.steps < 1:
        raise ValueError(f"data.curriculum[{index}].steps must be >= 1, got {phase.steps}")
    name = f"{data.dir.rstrip('/')}-phase{index}-o{phase.min_objects}-{phase.max_objects}-m{phase.mentions_per_caption}"
    return replace(
        data,
        dir=name,
        min_objects=phase.min_objects,
        max_objects=phase.max_objects,
        mentions_per_caption=phase.mentions_per_caption,
        train_samples=phase.train_samples,
        # small phases still get enough shards to feed up to 32 ranks
        samples_per_shard=max(1, min(data.samples_per_shard, math.ceil(phase.train_samples / 32))),
        val_samples=min(data.val_samples, 200),
        curriculum=(),
    )


def schedule(data: DataConfig) -> list[Stage]:
    """Phases in order, then the main scenes of `data` to the end."""
    stages, first = [], 1
    for index, phase in enumerate(data.curriculum):
        stages.append(Stage(first, first + phase.steps - 1, phase_data(data, index, phase)))
        first += phase.steps
    stages.append(Stage(first, None, replace(data, curriculum=())))
    return stages


def stage_at(stages: list[Stage], step: int) -> Stage:
    return next(s for s in stages if s.holds(step))
