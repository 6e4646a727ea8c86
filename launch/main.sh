#!/usr/bin/env bash
# The main job on the embedded default: the universal-ticket pipeline (lottery/configs/pipeline-uniter-mini.yaml).
# First run only: the shapes world, uniter-mini and theta0 (the pre-trained uniter-mini, kept in
# ~/.cache/vl-lottery/theta0/). Then IMP on the pre-training tasks on 2 ranks under DeepSpeed, the 60% and
# 70% universal tickets published to the ticket store (./tickets or $LOTTERY_TICKET_STORE), dense / s60 /
# s70 fine-tuned on the seven tasks, and the report (runs/report/). Rerun after a kill: done stages are
# skipped. Extra arguments are overrides of the pipeline config, e.g.
#   bash launch/main.sh 'imp_overrides=[train.steps=125]' 'finetune_overrides=[train.steps=400]' workers=1
# NPROC sets the number of IMP ranks (default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
exec lottery pipeline --config pipeline-uniter-mini ranks="${NPROC:-2}" "$@"
