"""Which pre-training task a micro-step trains on.

The draw depends only on (seed, micro-step), never on the rank: every rank must run the same task at
the same time, because under ZeRO-3 a head that one rank skips would leave the others waiting for its
parameters' gradients.
"""

from __future__ import annotations

import numpy as np


class TaskMixer:
    def __init__(self, mix: dict[str, float], seed: int, known: set[str]):
        unknown = sorted(set(mix) - known)
        if unknown:
            raise ValueError(f"tasks.mix names unknown task(s) {unknown}; known: {sorted(known)}")
        weights = {name: float(w) for name, w in mix.items() if w > 0}
        if not weights:
            raise ValueError(f"tasks.mix {mix} gives no task a positive ratio")
        self.names = sorted(weights)
        total = sum(weights.values())
        self.probs = np.array([weights[n] / total for n in self.names])
        self.seed = seed

    def task_for(self, micro_step: int) -> str:
        rng = np.random.default_rng([self.seed, micro_step])
        return self.names[int(rng.choice(len(self.names), p=self.probs))]
