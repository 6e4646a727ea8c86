"""IMP: rounds of train, prune the smallest surviving weights, rewind; resumable per round.

`run` is `lottery imp`; `state` its progress record, `rewind` the rewind point, `early_bird` the early
mask draws, `report` the per-round table.
"""
