#!/usr/bin/env bash
# The main job on the embedded default: build the shapes world and uniter-mini (first run only), then
# build theta0, the pre-trained uniter-mini, on 2 ranks under DeepSpeed (once per config: a second run
# reuses it from ~/.cache/vl-lottery/theta0/), and print its criteria table.
# Extra arguments are config overrides, e.g.
#   bash launch/main.sh train.steps=1000 train.zero_stage=3
# NPROC sets the number of ranks (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec deepspeed --num_gpus "${NPROC:-2}" --module lottery theta0 --config pretrain-uniter-mini "$@"
