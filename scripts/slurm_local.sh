#!/usr/bin/env bash
# A one-node SLURM on this machine, for the `slurm` tests and for trying the cluster path:
#
#   scripts/slurm_local.sh up       # install (Debian packages) if missing, configure, start
#   scripts/slurm_local.sh status   # the daemons and the node's state
#   scripts/slurm_local.sh down     # stop every daemon this script started
#
# Partition `debug` holds this host with its CPUs and memory; JobRequeue=1, so jobs can be
# requeued (pre-emption, time limits). Accounting is real, as on lab clusters: slurmdbd on a
# MariaDB server of its own, so `sacct` (which submitit polls) answers. Everything the daemons
# write (config, state, logs, the database, pid files) is under $GENLAB_SLURM_DIR
# (default /tmp/genlab-slurm). The client commands (sbatch, squeue, ...) find the config through
# /etc/slurm/slurm.conf, a link this script makes when it may, or through SLURM_CONF, which it
# prints otherwise. Needs root for apt-get and the daemons (as in CI). docs/cluster.md.
set -euo pipefail

DIR="${GENLAB_SLURM_DIR:-/tmp/genlab-slurm}"
DB_PORT="${GENLAB_SLURM_DB_PORT:-3307}"
NODE="$(hostname -s)"
CLUSTER=genlab
export SLURM_CONF="$DIR/etc/slurm.conf"

say() { echo "slurm_local: $*"; }

install_packages() {
  local missing=()
  command -v slurmctld >/dev/null || missing+=(slurm-wlm)
  command -v munged >/dev/null || missing+=(munge)
  command -v slurmdbd >/dev/null || missing+=(slurmdbd)
  command -v mariadbd >/dev/null || missing+=(mariadb-server)
  [ ${#missing[@]} -eq 0 ] && return
  say "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

write_config() {
  mkdir -p "$DIR"/{etc,state,spool,log,run,db}
  local cpus mem_mb
  cpus="$(nproc)"
  # Leave 1 GiB to the system, as slurmd refuses a node that claims more memory than it has.
  mem_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 - 1024 ))
  cat >"$DIR/etc/slurm.conf" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster for tests.
ClusterName=$CLUSTER
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/run/slurmctld.pid
SlurmdPidFile=$DIR/run/slurmd.pid
SlurmctldLogFile=$DIR/log/slurmctld.log
SlurmdLogFile=$DIR/log/slurmd.log
# No cgroups: containers and CI machines often lack a writable cgroup tree.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
# How long a signalled job has between SIGTERM and SIGKILL (cancel, requeue, time limit).
KillWait=30
MinJobAge=300
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=127.0.0.1
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$NODE Default=YES MaxTime=INFINITE State=UP
EOF
  cat >"$DIR/etc/slurmdbd.conf" <<EOF
DbdHost=localhost
DbdAddr=127.0.0.1
SlurmUser=root
AuthType=auth/munge
PidFile=$DIR/run/slurmdbd.pid
LogFile=$DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db
EOF
  chmod 600 "$DIR/etc/slurmdbd.conf"  # slurmdbd refuses a readable password file
  if [ -w /etc/slurm ] || mkdir -p /etc/slurm 2>/dev/null; then
    ln -sfn "$DIR/etc/slurm.conf" /etc/slurm/slurm.conf
    ln -sfn "$DIR/etc/slurmdbd.conf" /etc/slurm/slurmdbd.conf
  fi
}

wait_for() {  # wait_for <seconds> <what> <command...>
  local seconds=$1 what=$2
  shift 2
  for _ in $(seq "$seconds"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 1
  done
  say "$what did not come up in ${seconds} s; logs in $DIR/log" >&2
  return 1
}

start_database() {
  local sock="$DIR/run/mysqld.sock"
  if [ ! -d "$DIR/db/mysql" ]; then
    mysql_install_db --user=root --datadir="$DIR/db" --auth-root-authentication-method=socket \
      >"$DIR/log/mysql_install.log" 2>&1
  fi
  mariadbd --user=root --datadir="$DIR/db" --socket="$sock" --bind-address=127.0.0.1 \
    --port="$DB_PORT" --pid-file="$DIR/run/mariadb.pid" --log-error="$DIR/log/mariadb.log" &
  wait_for 60 "MariaDB" mariadb -S "$sock" -e "SELECT 1"
  mariadb -S "$sock" -e "CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1'; FLUSH PRIVILEGES;"
}

up() {
  if status >/dev/null 2>&1; then
    say "already up"
    return 0
  fi
  install_packages
  down >/dev/null 2>&1 || true
  write_config
  mkdir -p /run/munge
  chown munge:munge /run/munge 2>/dev/null || true
  [ -f /etc/munge/munge.key ] || mungekey --create
  pgrep -x munged >/dev/null || runuser -u munge -- munged
  start_database
  slurmdbd
  wait_for 60 "slurmdbd" sacctmgr -n list cluster
  sacctmgr -i -Q add cluster "$CLUSTER" >/dev/null 2>&1 || true
  slurmctld
  slurmd -N "$NODE"
  wait_for 90 "the node" sh -c "sinfo -h -n $NODE -o %t | grep -qx idle"
  [ -L /etc/slurm/slurm.conf ] || say "export SLURM_CONF=$SLURM_CONF"
  say "up: partition debug, node $NODE ($(sinfo -h -o '%c CPUs, %m MB'))"
}

stop_pid() {  # stop_pid <pid file>
  [ -f "$1" ] || return 0
  local pid
  pid="$(cat "$1")"
  if kill "$pid" 2>/dev/null; then
    for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$1"
}

down() {
  scancel --quiet --full -u "$(id -un)" 2>/dev/null || true
  stop_pid "$DIR/run/slurmd.pid"
  stop_pid "$DIR/run/slurmctld.pid"
  stop_pid "$DIR/run/slurmdbd.pid"
  stop_pid "$DIR/run/mariadb.pid"
  say "down"
}

status() {
  local ok=0
  for daemon in slurmctld slurmd slurmdbd mariadb; do
    if [ -f "$DIR/run/$daemon.pid" ] && kill -0 "$(cat "$DIR/run/$daemon.pid")" 2>/dev/null; then
      echo "$daemon: running (pid $(cat "$DIR/run/$daemon.pid"))"
    else
      echo "$daemon: stopped"
      ok=1
    fi
  done
  [ $ok -eq 0 ] && sinfo
  return $ok
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
