#!/usr/bin/env bash
# The main job on the embedded default: build the shapes world and uniter-mini (first run only) and
# theta0, the pre-trained uniter-mini (once per config: a second run reuses it from
# ~/.cache/vl-lottery/theta0/), print its criteria table; then IMP on the pre-training tasks on 2 ranks
# under DeepSpeed (resumable: rerun the same command after a kill), print the per-round table, and
# publish the 60% and 70% universal tickets to the ticket store (./tickets or $LOTTERY_TICKET_STORE).
# Extra arguments are config overrides of imp-uniter-mini, e.g.
#   bash launch/main.sh train.steps=500 train.zero_stage=3 'theta0_overrides=[train.steps=2000]'
# NPROC sets the number of ranks (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec deepspeed --num_gpus "${NPROC:-2}" --module lottery imp --config imp-uniter-mini "$@"
