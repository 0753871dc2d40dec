#!/usr/bin/env bash
# A real one-node Slurm cluster on localhost for tests: munged + slurmctld + slurmd,
# started directly (no systemd), all state under one directory.
# Usage: tests/slurm/slurm-fixture.sh start|stop|status|env
#   start   install missing packages (root), start daemons, wait until the node is idle
#   stop    kill what start started, remove the state dir and the /etc/slurm link
#   status  exit 0 and print sinfo when the cluster answers, exit 1 otherwise
# Environment: OSHPC_SLURM_DIR (state dir, default /tmp/oshpc-slurm),
#   OSHPC_SLURM_CPUS (CPUs the node claims, default 8; more than the host has, so that
#   4-8 tasks fit on a 2-core runner), OSHPC_SLURM_WAIT (seconds to wait, default 60).
set -euo pipefail

readonly state_dir=${OSHPC_SLURM_DIR:-/tmp/oshpc-slurm}
readonly conf=$state_dir/etc/slurm.conf
readonly system_conf=/etc/slurm/slurm.conf
readonly claimed_cpus=${OSHPC_SLURM_CPUS:-8}
readonly wait_s=${OSHPC_SLURM_WAIT:-60}
readonly test_user=oshpc
readonly node=$(hostname -s)

die() { echo "slurm-fixture: error: $*" >&2; exit 1; }
note() { echo "slurm-fixture: $*" >&2; }

# Debian's slurm pmix plugin dlopens pmix2/lib/libpmix.so, the unversioned name that only
# libpmix-dev ships; without it `srun --mpi=pmix` fails with "Cannot find libpmix".
readonly packages=(slurm-wlm slurm-client munge libpmix-dev openmpi-bin libopenmpi-dev)

install_packages() {
  local missing=() pkg
  for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
      || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  [[ $(id -u) -eq 0 ]] || die "missing packages ${missing[*]}; as root: apt-get install -y ${missing[*]}"
  note "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

munge_works() { munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; }

# munged refuses to start unless its key is 0400 and its dirs belong to the munge user.
start_munge() {
  if munge_works; then return 0; fi
  install -d -o munge -g munge -m 0700 /etc/munge /var/lib/munge /var/log/munge
  install -d -o munge -g munge -m 0755 /run/munge
  if [[ ! -s /etc/munge/munge.key ]]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  fi
  chown munge:munge /etc/munge/munge.key
  chmod 0400 /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  touch "$state_dir/run/munged.ours"
  local i
  for ((i = 0; i < 50; i++)); do munge_works && return 0; sleep 0.1; done
  die "munged does not answer; see /var/log/munge/munged.log: $(tail -n 5 /var/log/munge/munged.log 2>/dev/null)"
}

real_memory_mb() { awk '/^MemTotal:/ { printf "%d", $2 / 1024 * 0.9 }' /proc/meminfo; }

write_conf() {
  mkdir -p "$state_dir"/{etc,state,spool,log,run}
  cat >"$conf" <<CONF
# Written by tests/slurm/slurm-fixture.sh; removed by its 'stop'.
ClusterName=oshpc-test
SlurmctldHost=$node
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$state_dir/state
SlurmdSpoolDir=$state_dir/spool
SlurmctldPidFile=$state_dir/run/slurmctld.pid
SlurmdPidFile=$state_dir/run/slurmd.pid
SlurmctldLogFile=$state_dir/log/slurmctld.log
SlurmdLogFile=$state_dir/log/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# Keep it simple on cgroup v1/hybrid hosts and in containers: no cgroup plugins at all.
ProctrackType=${OSHPC_SLURM_PROCTRACK:-proctrack/linuxproc}
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
# scancel: SIGCONT+SIGTERM to every task, SIGKILL KillWait seconds later.
KillWait=5
MinJobAge=60
# Claim more CPUs than the host has so that 4-8 tasks fit on a small CI runner.
SlurmdParameters=config_overrides
NodeName=$node NodeAddr=127.0.0.1 CPUs=$claimed_cpus RealMemory=$(real_memory_mb) State=UNKNOWN
PartitionName=debug Nodes=$node Default=YES MaxTime=INFINITE State=UP OverSubscribe=YES
CONF
}

# Clients of every user read /etc/slurm/slurm.conf; point it at ours, never over a real one.
link_system_conf() {
  if [[ -e $system_conf && ! -L $system_conf ]]; then
    die "$system_conf exists and is not the fixture's link; is this a real Slurm host?"
  fi
  mkdir -p "$(dirname "$system_conf")"
  ln -sfn "$conf" "$system_conf"
}

pid_alive() { [[ -s $1 ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

node_idle() {
  [[ $(sinfo -h -n "$node" -o %t 2>/dev/null) =~ ^idle ]]
}

dump_logs() {
  local f
  for f in "$state_dir"/log/*.log; do
    [[ -f $f ]] || continue
    echo "---- tail $f" >&2
    tail -n 20 "$f" >&2
  done
}

ensure_test_user() {
  id -u "$test_user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$test_user"
}

cmd_start() {
  # Running means both daemons alive and the controller answering; the node may be busy.
  if pid_alive "$state_dir/run/slurmctld.pid" && pid_alive "$state_dir/run/slurmd.pid" \
      && sinfo -h >/dev/null 2>&1; then
    note "already running"
    return 0
  fi
  [[ $(id -u) -eq 0 ]] || die "start needs root (it installs packages and runs slurmd)"
  install_packages
  ensure_test_user
  mkdir -p "$state_dir/run"
  start_munge
  write_conf
  link_system_conf

  pid_alive "$state_dir/run/slurmctld.pid" || /usr/sbin/slurmctld -f "$conf"
  pid_alive "$state_dir/run/slurmd.pid" || /usr/sbin/slurmd -f "$conf"

  local deadline=$((SECONDS + wait_s))
  until node_idle; do
    if ((SECONDS >= deadline)); then
      sinfo >&2 || true
      dump_logs
      die "node $node not idle after ${wait_s}s (logs above, state in $state_dir)"
    fi
    sleep 0.5
  done
  note "running: node $node idle, $claimed_cpus CPUs, state in $state_dir"
}

stop_pidfile() {
  local pidfile=$1 pid i
  [[ -s $pidfile ]] || return 0
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || return 0
  for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$pid" 2>/dev/null || true
}

cmd_stop() {
  [[ $(id -u) -eq 0 ]] || die "stop needs root"
  # Cancel jobs first so their steps get the normal SIGTERM/SIGKILL sequence.
  if pid_alive "$state_dir/run/slurmctld.pid"; then
    scancel --full --quiet --partition=debug 2>/dev/null || true
  fi
  stop_pidfile "$state_dir/run/slurmd.pid"
  stop_pidfile "$state_dir/run/slurmctld.pid"
  # slurmstepd outlives slurmd. start refuses a host with a real slurm.conf, so every
  # slurmstepd here belongs to the fixture's cluster.
  local pid
  for pid in $(pgrep -x slurmstepd 2>/dev/null || true); do
    kill -KILL "$pid" 2>/dev/null || true
  done
  if [[ -e $state_dir/run/munged.ours ]]; then
    stop_pidfile /run/munge/munged.pid
  fi
  if [[ -L $system_conf && $(readlink "$system_conf") == "$conf" ]]; then
    rm -f "$system_conf"
  fi
  rm -rf "$state_dir"
  note "stopped"
}

cmd_status() {
  if pid_alive "$state_dir/run/slurmctld.pid" && pid_alive "$state_dir/run/slurmd.pid"; then
    sinfo
    return 0
  fi
  echo "slurm-fixture: not running" >&2
  return 1
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
