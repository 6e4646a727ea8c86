#!/usr/bin/env bash
# The universal-ticket study as a chain of SLURM jobs, each starting when the one before succeeded:
#
#   IMP (slurm/imp.sbatch, publishes the tickets) -> plan (aliases resolved to ticket ids, once)
#     -> fine-tuning array (slurm/finetune.sbatch, one job per grid position) -> report (slurm/report.sbatch)
#
#   bash slurm/universal.sh              # submit the whole chain; prints each job id
#   bash slurm/universal.sh --missing    # submit only what is not done (after a failure or a change)
#
# Settings come from the environment (defaults below); every path must be on a shared file system.
# IMP_OVERRIDES / FINETUNE_OVERRIDES are word lists of key=value overrides; IMP_SBATCH / FINETUNE_SBATCH /
# REPORT_SBATCH extra sbatch arguments of those jobs (e.g. "--nodes 4 --partition gpu"), SBATCH_ARGS of
# every job (account, partition). The plan file names ticket ids, not aliases: an array already planned
# trains the tickets it was planned with, whatever is published later.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

MISSING=0
case ${1:-} in
  --missing) MISSING=1 ;;
  "") ;;
  -h | --help) sed -n '2,14p' "$0"; exit 0 ;;
  *) echo "universal.sh: unknown argument '$1' (use --missing)" >&2; exit 2 ;;
esac

export LOTTERY=${LOTTERY:-lottery}
export IMP_CONFIG=${IMP_CONFIG:-imp-uniter-mini}
export RUNS_DIR_IMP=${RUNS_DIR_IMP:-runs/imp}
export RUNS_DIR_FINETUNE=${RUNS_DIR_FINETUNE:-runs/finetune}
export REPORT_DIR=${REPORT_DIR:-runs/report}
export PLAN_DIR=${PLAN_DIR:-runs/plan}
export LOTTERY_THETA0_CACHE=${LOTTERY_THETA0_CACHE:-$HOME/.cache/vl-lottery/theta0}
export LOTTERY_TICKET_STORE=${LOTTERY_TICKET_STORE:-tickets}
ALIASES=${ALIASES:-uniter-mini/pretrain/s60 uniter-mini/pretrain/s70} # what IMP_CONFIG publishes
TICKETS=${TICKETS:-dense $ALIASES}
TASKS=${TASKS:-vqa gqa vcr snli-ve refcoco+ retrieval nlvr2}
INITS=${INITS:-theta0}
read -r -a imp_overrides <<<"${IMP_OVERRIDES:-}"
read -r -a finetune_overrides <<<"${FINETUNE_OVERRIDES:-}"
read -r -a common <<<"${SBATCH_ARGS:-}"
read -r -a imp_args <<<"${IMP_SBATCH:-}"
read -r -a finetune_args <<<"${FINETUNE_SBATCH:-}"
read -r -a report_args <<<"${REPORT_SBATCH:-}"
read -r -a tickets <<<"$TICKETS"
read -r -a tasks <<<"$TASKS"
read -r -a inits <<<"$INITS"
GRID_SIZE=$((${#tickets[@]} * ${#tasks[@]} * ${#inits[@]}))
PLAN=$PLAN_DIR/tickets.txt
mkdir -p "$PLAN_DIR"

submit() { sbatch --parsable "${common[@]}" "$@" | cut -d';' -f1; }

# 1. IMP: skipped with --missing when its run directory holds DONE (every round, table and ticket in)
imp_dir=$("$LOTTERY" imp --config "$IMP_CONFIG" "runs_dir=$RUNS_DIR_IMP" "${imp_overrides[@]}" --print-run-dir |
  tail -n 1)
after=()
if [[ $MISSING == 1 && -f $imp_dir/DONE ]]; then
  echo "imp: done ($imp_dir)"
else
  imp=$(RUNS_DIR=$RUNS_DIR_IMP CONFIG=$IMP_CONFIG submit "${imp_args[@]}" "$HERE/imp.sbatch" "${imp_overrides[@]}")
  echo "imp: job $imp ($imp_dir)"
  after=(--dependency="afterok:$imp")
fi

# 2. plan: the ticket ids the array will train, resolved once (kept with --missing once IMP is done)
if [[ $MISSING == 1 && ${#after[@]} == 0 && -s $PLAN ]]; then
  echo "plan: done ($PLAN)"
else
  resolve="$(printf '%q ' "$LOTTERY" ticket resolve --out "$PLAN" "${tickets[@]}")"
  plan=$(submit "${after[@]}" --job-name=vl-lottery-plan --ntasks=1 --time=00:10:00 \
    --output="$PLAN_DIR/plan-%j.out" \
    --wrap="$resolve")
  echo "plan: job $plan ($PLAN)"
  after=(--dependency="afterok:$plan")
fi

# 3. the fine-tuning array: every grid position, or with --missing only those not done
positions="0-$((GRID_SIZE - 1))"
if [[ $MISSING == 1 && ${#after[@]} == 0 ]]; then
  read -r -a planned <<<"$(tr '\n' ' ' <"$PLAN")"
  positions=$("$LOTTERY" sweep --tasks "${tasks[@]}" --tickets "${planned[@]}" --inits "${inits[@]}" \
    --no-save --list-missing "runs_dir=$RUNS_DIR_FINETUNE" "${finetune_overrides[@]}" | tail -n 1)
fi
if [[ -z $positions ]]; then
  echo "finetune: done ($GRID_SIZE jobs in $RUNS_DIR_FINETUNE)"
else
  array=$(TASKS=$TASKS INITS=$INITS TICKETS_FILE=$PLAN GRID_SIZE=$GRID_SIZE RUNS_DIR=$RUNS_DIR_FINETUNE \
    submit "${after[@]}" --array="$positions" "${finetune_args[@]}" "$HERE/finetune.sbatch" \
    "${finetune_overrides[@]}")
  echo "finetune: array job $array (positions $positions of $GRID_SIZE)"
  after=(--dependency="afterok:$array")
fi

# 4. the report, once every fine-tune succeeded
if [[ $MISSING == 1 && ${#after[@]} == 0 && -f $REPORT_DIR/report.md ]]; then
  echo "report: done ($REPORT_DIR)"
else
  report=$(RUNS_DIR=$RUNS_DIR_FINETUNE submit "${after[@]}" "${report_args[@]}" "$HERE/report.sbatch")
  echo "report: job $report ($REPORT_DIR)"
fi
