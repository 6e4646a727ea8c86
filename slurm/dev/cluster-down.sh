#!/usr/bin/env bash
# Stops what slurm/dev/cluster-up.sh started under $SLURM_DEV_DIR (default /tmp/vl-lottery-slurm): its jobs,
# slurmd(s), slurmctld and munged, and leaves none of their processes behind. Exit 0 when nothing runs.
# It only touches processes that carry cluster-up's marker variable (or are named in its pid files), so a
# system slurm/munge or another dev cluster (other $SLURM_DEV_DIR) keeps running.
# Logs and state stay in $SLURM_DEV_DIR/log for a post-mortem; the next cluster-up starts afresh.
set -euo pipefail

DIR=${SLURM_DEV_DIR:-/tmp/vl-lottery-slurm}
MARK="SLURM_DEV_DAEMON_OF=$DIR"
export SLURM_CONF=$DIR/etc/slurm.conf
export PATH=$PATH:/usr/sbin
unset SLURM_JOB_ID SLURM_JOBID || true

if [[ ! -d $DIR ]]; then echo "slurm dev cluster down: nothing to stop ($DIR does not exist)"; exit 0; fi
# cluster-up holds the lock while it calls us; anyone else waits for a running cluster-up to finish
if [[ -z ${SLURM_DEV_LOCK_HELD:-} ]]; then
  exec 9>"$DIR/lock"
  flock -w 120 9 || { echo "cluster-down: failed: another cluster-up/down holds $DIR/lock" >&2; exit 1; }
fi

# pid $1 exists and is not a zombie (here PID 1 may be slow to reap an exited daemon; a zombie is gone)
running() {
  local stat
  { read -r stat <"/proc/$1/stat"; } 2>/dev/null || return 1
  stat=${stat##*) }
  [[ ${stat%% *} != Z ]]
}

# pids of our daemons and of the slurmstepd they forked (slurmstepd inherits slurmd's environment)
ours() {
  local p comm pid
  for p in /proc/[0-9]*; do
    pid=${p#/proc/}
    # read, not $(cat): this loop visits every process and runs inside wait loops
    { read -r comm <"$p/comm"; } 2>/dev/null || continue
    case $comm in slurmctld | slurmscriptd | slurmd | slurmstepd | munged) ;; *) continue ;; esac
    running "$pid" || continue
    if { tr '\0' '\n' <"$p/environ"; } 2>/dev/null | grep -qxF "$MARK"; then echo "$pid"; continue; fi
    # daemons started before the marker existed: trust the pid files, but only for the right command name
    for f in "$DIR"/run/*.pid; do
      [[ -s $f && $(<"$f") == "$pid" ]] && echo "$pid" && break
    done
  done
}

# pids of ours whose command is one of "$@"
ours_named() {
  local pid want comm
  for pid in $(ours); do
    for want in "$@"; do
      { read -r comm <"/proc/$pid/comm"; } 2>/dev/null && [[ $comm == "$want" ]] && echo "$pid"
    done
  done
}

# send TERM, wait up to $1 seconds for the processes to go, then KILL what is left
stop() {
  local secs=$1 pid left
  shift
  [[ $# -gt 0 ]] || return 0
  kill -TERM "$@" 2>/dev/null || true
  for _ in $(seq $((secs * 10))); do
    left=0
    for pid in "$@"; do running "$pid" && left=1; done
    [[ $left == 0 ]] && return 0
    sleep 0.1
  done
  kill -KILL "$@" 2>/dev/null || true
  sleep 0.2
}

before=$(ours | wc -l)
if [[ $before == 0 ]]; then
  rm -f "$DIR"/run/*.pid "$DIR/mode"
  echo "slurm dev cluster down: nothing was running"
  exit 0
fi

# Cancel the jobs first, so their steps end the normal way (tasks killed, output flushed) while slurmd still
# runs; KillWait in slurm.conf is 5 s.
if [[ -n $(ours_named slurmctld) ]] && jobs=$(timeout 10 squeue -h -o %A 2>/dev/null) && [[ -n $jobs ]]; then
  # shellcheck disable=SC2086  # one word per job id
  timeout 10 scancel $jobs 2>/dev/null || true
  for _ in $(seq 150); do
    [[ -z $(ours_named slurmstepd) ]] && break
    sleep 0.1
  done
fi

# shellcheck disable=SC2046  # one word per pid
stop 10 $(ours_named slurmd slurmstepd)
# shellcheck disable=SC2046
stop 10 $(ours_named slurmctld)
# shellcheck disable=SC2046
stop 5 $(ours_named munged)
# anything still there (should be nothing)
# shellcheck disable=SC2046
stop 1 $(ours)

left=$(ours | tr '\n' ' ')
rm -f "$DIR"/run/*.pid "$DIR/mode" "$DIR/munge/munge.socket"
if [[ -n $left ]]; then
  echo "cluster-down: failed: processes still running: $left" >&2
  exit 1
fi
echo "slurm dev cluster down: stopped $before process(es) under $DIR"
