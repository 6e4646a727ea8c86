#!/usr/bin/env bash
# A real, local SLURM cluster for tests: munged + slurmctld + one or two slurmd on this one machine.
#
#   bash slurm/dev/cluster-up.sh [--nodes 1|2]     # default 1
#   source "${SLURM_DEV_DIR:-/tmp/vl-lottery-slurm}/env"   # then sbatch/srun/squeue/scontrol talk to it
#   bash slurm/dev/cluster-up.sh --status          # prints what is up; exit 0 if up, 1 if not
#
# --nodes 1: node n1 (CPUs=2).  --nodes 2: emulated nodes n1 and n2 (CPUs=2 each), two slurmd processes
# (`slurmd -N n1`, `slurmd -N n2`) on distinct ports, so `srun` in a 2-node job really starts one task
# through each slurmd. Partitions: `debug` (default) and `urgent`, which preempts `debug` jobs by requeue.
#
# Every file (config, munge key and socket, state, spool, logs, pid files) lives under $SLURM_DEV_DIR
# (default /tmp/vl-lottery-slurm); outside it the script only installs Debian packages with apt and, if
# n1/n2 do not resolve, appends one line to /etc/hosts. It needs root: the daemons run as root.
# Idempotent: exits 0 when already up in the asked mode, restarts when up in the other mode.
# Success prints one line; a failure prints one line naming the step (details in the log it names).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DIR=${SLURM_DEV_DIR:-/tmp/vl-lottery-slurm}
# slurmctld on BASE, slurmd of node i on BASE+i; away from the stock 6817/6818 so a system slurm can coexist
PORT_BASE=${SLURM_DEV_PORT:-16817}
CONF=$DIR/etc/slurm.conf
LOG=$DIR/log/cluster-up.log
# Every daemon we start carries this variable; cluster-down.sh finds them (and their slurmstepd children,
# which inherit slurmd's environment) by it, never by process name alone.
MARK="SLURM_DEV_DAEMON_OF=$DIR"

NODES=1
STATUS_ONLY=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --nodes) NODES=${2:-}; shift 2 || { echo "cluster-up: --nodes needs 1 or 2" >&2; exit 2; } ;;
    --nodes=*) NODES=${1#--nodes=}; shift ;;
    --status) STATUS_ONLY=1; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) echo "cluster-up: unknown argument '$1' (use --nodes 1|2)" >&2; exit 2 ;;
  esac
done
[[ $NODES == 1 || $NODES == 2 ]] || { echo "cluster-up: --nodes must be 1 or 2, not '$NODES'" >&2; exit 2; }

STEP="setup"
STARTED=0
# a half-started cluster is stopped again (its logs stay for the post-mortem)
cleanup() { [[ $STARTED == 0 ]] || SLURM_DEV_LOCK_HELD=1 bash "$HERE/cluster-down.sh" >>"$LOG" 2>&1 || true; }
fail() {
  echo "cluster-up: failed at step '$STEP': $* (log: $LOG)" >&2
  cleanup
  exit 1
}
# A command that fails without going through fail() still gets its one line naming the step.
trap 'echo "cluster-up: failed at step '"'"'$STEP'"'"' (log: $LOG)" >&2; cleanup' ERR

node_names() { if [[ $1 == 2 ]]; then echo n1 n2; else echo n1; fi; }
export SLURM_CONF=$CONF
# the env of a caller who sourced another cluster's env, or who runs inside a job, must not leak in
unset SLURM_JOB_ID SLURM_JOBID SLURM_STEP_ID SLURM_NODELIST SLURM_JOB_NODELIST || true

# pid file holds a live process of that command name (guards against a recycled pid)
alive() {
  local pid
  [[ -s $1 ]] || return 1
  pid=$(<"$1")
  [[ -r /proc/$pid/comm && $(</proc/"$pid"/comm) == "$2" ]]
}

# Up = munged, slurmctld and every slurmd of mode $1 alive, slurmctld answering, every node responding.
healthy() {
  local mode=$1 n states
  alive "$DIR/run/munged.pid" munged || return 1
  alive "$DIR/run/slurmctld.pid" slurmctld || return 1
  for n in $(node_names "$mode"); do alive "$DIR/run/slurmd-$n.pid" slurmd || return 1; done
  timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP' || return 1
  states=$(timeout 5 sinfo -h -N -o '%N %t' 2>/dev/null | sort -u) || return 1
  for n in $(node_names "$mode"); do
    # usable states; not down/drain, and no '*' (not responding) or power-saving suffix
    grep -Eq "^$n (idle|mix|alloc|comp|plnd)-?$" <<<"$states" || return 1
  done
}

summary() {
  local nodes
  nodes=$(node_names "$1")
  echo "slurm dev cluster $2: $1 node(s) (${nodes// /, }), partition debug (default) + urgent," \
    "SLURM_CONF=$CONF; use: source $DIR/env"
}

current_mode() { [[ -s $DIR/mode ]] && cat "$DIR/mode" || echo none; }

if [[ $STATUS_ONLY == 1 ]]; then
  mode=$(current_mode)
  if [[ $mode != none ]] && healthy "$mode"; then summary "$mode" up; exit 0; fi
  echo "slurm dev cluster is not up (dir $DIR)"; exit 1
fi

if [[ $(id -u) != 0 ]]; then
  echo "cluster-up: failed at step 'setup': must run as root (the daemons run as root; apt installs)" >&2
  exit 1
fi
mkdir -p "$DIR/log"
# concurrent callers (parallel test sessions) queue up instead of racing on the same daemons
# daemons started below get 9>&- so they do not inherit (and hold) this lock
exec 9>"$DIR/lock"
flock -w 120 9 || { STEP=lock; fail "another cluster-up/down holds $DIR/lock"; }
: >"$LOG"

# ---------------------------------------------------------------------------------------------------------
STEP="check-running"
mode=$(current_mode)
if [[ $mode == "$NODES" ]] && healthy "$NODES"; then summary "$NODES" "already up"; exit 0; fi
# up in the other mode, or half up (a daemon died), or down: stop whatever is left and start from a clean slate
STEP="stop-previous"
SLURM_DEV_LOCK_HELD=1 bash "$HERE/cluster-down.sh" >>"$LOG" 2>&1 || fail "cluster-down.sh failed"

# ---------------------------------------------------------------------------------------------------------
STEP="install"
install_t0=$(date +%s%3N)
# the daemons live in /usr/sbin, which a non-login root shell may not have on its PATH
case ":$PATH:" in *:/usr/sbin:*) ;; *) export PATH=$PATH:/usr/sbin ;; esac
missing=()
for pair in slurmctld:slurmctld slurmd:slurmd munged:munge mungekey:munge sbatch:slurm-client; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [[ ${#missing[@]} -gt 0 ]]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  command -v apt-get >/dev/null || fail "need ${missing[*]} but there is no apt-get"
  echo "apt-get install ${missing[*]}" >>"$LOG"
  # Debian's postinst would start the stock services where no policy-rc.d forbids it; they use /etc/slurm
  # and the stock ports, which this cluster does not touch, so that is harmless.
  apt_install() { DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}"; }
  if ! apt_install >>"$LOG" 2>&1; then
    # a fresh machine has no package lists yet
    apt-get update >>"$LOG" 2>&1 || fail "apt-get update failed (is the Debian mirror reachable?)"
    apt_install >>"$LOG" 2>&1 || fail "apt-get install ${missing[*]} failed"
  fi
  echo "install took $(($(date +%s%3N) - install_t0)) ms" >>"$LOG"
fi

# ---------------------------------------------------------------------------------------------------------
STEP="hosts"
# slurmd -N n1 and tools like `scontrol show hostnames` + a rank connecting to MASTER_ADDR=n1 need the node
# names to resolve; both emulated nodes are this machine
short=$(hostname -s)
for n in "$short" $(node_names "$NODES"); do
  getent hosts "$n" >/dev/null || echo "127.0.0.1 $n  # added by vl-lottery slurm/dev/cluster-up.sh" >>/etc/hosts
  getent hosts "$n" >/dev/null || fail "host name $n does not resolve and could not be added to /etc/hosts"
done

# ---------------------------------------------------------------------------------------------------------
STEP="ports"
# a daemon that cannot bind dies in the background after daemonizing, and the clients would then talk to
# whatever holds the port: check first (bash's /dev/tcp connects only if something listens)
for port in $(seq "$PORT_BASE" $((PORT_BASE + NODES))); do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    fail "port $port is in use (another slurm?); pick other ports with SLURM_DEV_PORT=<base>"
  fi
done

# ---------------------------------------------------------------------------------------------------------
STEP="directories"
# a fresh start gets fresh state: old jobs and node records from the other mode must not come back
rm -rf "${DIR:?}/state" "${DIR:?}/spool" "${DIR:?}/run" "${DIR:?}/munge" "${DIR:?}/etc" "${DIR:?}/mode"
find "$DIR/log" -mindepth 1 ! -name cluster-up.log -delete
mkdir -p "$DIR/etc" "$DIR/state" "$DIR/run" "$DIR/log" "$DIR/munge"
for n in $(node_names "$NODES"); do mkdir -p "$DIR/spool/$n"; done
# munged refuses a socket directory that others can write to; clients must be able to reach the socket
chmod 755 "$DIR" "$DIR/munge"

# ---------------------------------------------------------------------------------------------------------
STEP="munge"
# Our own munged (own key, own socket), so the machine's /etc/munge and any running munged stay untouched.
# It runs as root with --force (munged otherwise insists on its own user); the key is root's, mode 400.
if command -v mungekey >/dev/null; then
  mungekey --create --keyfile="$DIR/munge/munge.key" >>"$LOG" 2>&1 || fail "mungekey --create failed"
else
  dd if=/dev/urandom of="$DIR/munge/munge.key" bs=1024 count=1 status=none
fi
chmod 400 "$DIR/munge/munge.key"
STARTED=1
env "$MARK" munged --force 9>&- \
  --key-file="$DIR/munge/munge.key" --socket="$DIR/munge/munge.socket" \
  --pid-file="$DIR/run/munged.pid" --log-file="$DIR/log/munged.log" --seed-file="$DIR/munge/munged.seed" \
  >>"$LOG" 2>&1 || fail "munged did not start (see $DIR/log/munged.log)"
for _ in $(seq 50); do [[ -S $DIR/munge/munge.socket ]] && break; sleep 0.1; done
munge -n --socket="$DIR/munge/munge.socket" | unmunge --socket="$DIR/munge/munge.socket" >>"$LOG" 2>&1 ||
  fail "munge round trip through $DIR/munge/munge.socket failed"

# ---------------------------------------------------------------------------------------------------------
STEP="slurm.conf"
node_lines=""
i=0
for n in $(node_names "$NODES"); do
  i=$((i + 1))
  # NodeHostname is this machine for every node; NodeAddr is where slurmctld/srun reach that node's slurmd.
  # CPUs=2 per node: --nodes=2 --ntasks-per-node=1 and --nodes=1 --ntasks=2 both fit (in 2-node mode the
  # 2 real cores are oversubscribed, which is what an emulated cluster is for).
  node_lines+="NodeName=$n NodeHostname=$short NodeAddr=127.0.0.1 Port=$((PORT_BASE + i)) CPUs=2"
  node_lines+=" RealMemory=10000 State=UNKNOWN"$'\n'
done
cat >"$CONF" <<EOF
# written by slurm/dev/cluster-up.sh --nodes $NODES; rewritten on every fresh start
ClusterName=vl-lottery-dev
# slurmctld checks that this is its own short host name
SlurmctldHost=$short(127.0.0.1)
SlurmctldPort=$PORT_BASE
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire: a requeued job may not start again before its old credential expires (default 120 s, so a
# requeue round trip took > 2 min); 5 is the least Slurm accepts, and plenty for RPCs over loopback
AuthInfo=socket=$DIR/munge/munge.socket,cred_expire=${SLURM_DEV_CRED_EXPIRE:-5}
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool/%n
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd-%n.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
# no cgroups in containers/VMs without systemd: track processes by parentage, no task binding
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
MpiDefault=none
SwitchType=switch/none
MailProg=/bin/true
# the node record's CPUs/RealMemory count, not what each emulated slurmd detects
SlurmdParameters=config_overrides
ReturnToService=2
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# scheduling passes every second, so a requeued job starts soon after its credential expired
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1,bf_interval=1
# requeue: allowed by default; finished jobs stay in 'scontrol show job' for an hour (there is no slurmdbd,
# so sacct does not work; the job completion log below is the record of older jobs)
JobRequeue=1
MinJobAge=3600
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$DIR/log/jobcomp.txt
# preemption: a job in partition urgent requeues debug jobs it needs room from; the victim first gets its
# --signal (e.g. B:USR1) and GraceTime seconds to save before it is killed
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
SlurmctldParameters=preempt_send_user_signal
KillWait=5
InactiveLimit=0
$node_lines
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE GraceTime=10
PartitionName=urgent Nodes=ALL MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF

# ---------------------------------------------------------------------------------------------------------
# the first fatal/error line in a daemon's logs (its own, and cluster-up's, which has what the daemon printed
# before it opened its own) that is not start-up noise of a fresh state directory or of the PMIx plugin
# Debian ships without its library: usually the cause, for the one-line failure message
why() {
  local f files=()
  for f in "$@"; do [[ -f $f ]] && files+=("$f"); done
  [[ ${#files[@]} -gt 0 ]] || return 0
  grep -hE 'fatal|error' "${files[@]}" | grep -Ev 'state file|NOTE: Trying|pmix|PMIx|MPI' |
    head -n 1 | sed 's/^\[[^]]*\] //' || true
}

STEP="slurmctld"
start_t0=$(date +%s%3N)
env "$MARK" slurmctld -f "$CONF" 9>&- >>"$LOG" 2>&1 ||
  fail "slurmctld exited: $(why "$DIR/log/slurmctld.log" "$LOG") (see $DIR/log/slurmctld.log)"
up=0
for i in $(seq 150); do
  if timeout 5 scontrol ping 2>/dev/null | grep -q 'is UP'; then up=1; break; fi
  # gone after daemonizing (pid file written, process dead): no point waiting the full 15 s
  if ((i > 10)) && ! alive "$DIR/run/slurmctld.pid" slurmctld; then break; fi
  sleep 0.1
done
[[ $up == 1 ]] ||
  fail "slurmctld not up: $(why "$DIR/log/slurmctld.log" "$LOG") (see $DIR/log/slurmctld.log)"

# ---------------------------------------------------------------------------------------------------------
for n in $(node_names "$NODES"); do
  STEP="slurmd-$n"
  env "$MARK" slurmd -f "$CONF" -N "$n" 9>&- >>"$LOG" 2>&1 ||
    fail "slurmd -N $n exited: $(why "$DIR/log/slurmd-$n.log" "$LOG") (see $DIR/log/slurmd-$n.log)"
done
STEP="nodes-idle"
ready=0
for _ in $(seq 150); do
  if healthy "$NODES"; then ready=1; break; fi
  sleep 0.1
done
if [[ $ready != 1 ]]; then
  reasons=""
  for n in $(node_names "$NODES"); do reasons+="$n: $(why "$DIR/log/slurmd-$n.log"); "; done
  fail "nodes not idle after 15 s: $(sinfo -h -N -o '%N=%t' 2>&1 | sort -u | tr '\n' ' ')${reasons}(see $DIR/log)"
fi
echo "$NODES" >"$DIR/mode"
echo "start took $(($(date +%s%3N) - start_t0)) ms" >>"$LOG"

STEP="env"
cat >"$DIR/env" <<EOF
# source this file: sbatch/srun/squeue/scontrol then talk to the vl-lottery dev cluster
export SLURM_CONF=$CONF
export SLURM_DEV_DIR=$DIR
case ":\$PATH:" in *:/usr/sbin:*) ;; *) export PATH=\$PATH:/usr/sbin ;; esac
EOF
summary "$NODES" up
