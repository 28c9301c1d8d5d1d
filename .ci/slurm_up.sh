#!/usr/bin/env bash
# Bring up a single-node Slurm cluster on this machine, with real accounting (slurmdbd on
# MariaDB, so `sacct`, which submitit polls, works), without systemd. Debian packages only.
#   SLURM_DIR=$(mktemp -d) bash .ci/slurm_up.sh && export SLURM_CONF=$SLURM_DIR/slurm.conf
# Use a fresh SLURM_DIR per CI run: state, database and logs all live under it, so job ids and
# accounting start clean. Exits non-zero if the node never becomes idle. Stop: .ci/slurm_down.sh
set -euo pipefail
SLURM_DIR=${SLURM_DIR:?set SLURM_DIR to a scratch folder, e.g. SLURM_DIR=\$(mktemp -d)}
SLURM_DIR=$(mkdir -p "$SLURM_DIR" && cd "$SLURM_DIR" && pwd)
WAIT_S=${SLURM_UP_WAIT_S:-60}
export DEBIAN_FRONTEND=noninteractive

fail() { echo "slurm_up: $*" >&2; tail -n 20 "$SLURM_DIR"/log/*.log >&2 2>/dev/null || true; exit 1; }
wait_for() {  # wait_for SECONDS DESCRIPTION COMMAND...: poll COMMAND every 0.2 s
  local seconds=$1 what=$2; shift 2
  for _ in $(seq $((seconds * 5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
  fail "$what did not come up within ${seconds}s"
}

[ "$(id -u)" = 0 ] || fail "must run as root (it installs packages and starts daemons)"
if ! command -v slurmctld >/dev/null || ! command -v slurmdbd >/dev/null \
   || ! command -v munged >/dev/null || ! command -v mariadbd >/dev/null; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client slurmdbd munge \
    mariadb-server >/dev/null
fi

# munge (the Debian postinst normally creates the key; make one if it did not)
if [ ! -s /etc/munge/munge.key ]; then
  mkdir -p /etc/munge
  dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
fi
mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for port in 6817 6818 6819; do
  port_busy $port && fail "port $port is in use: another Slurm is running here; stop it" \
    "(SLURM_DIR=<its folder> bash .ci/slurm_down.sh) or use it (export SLURM_CONF=<its slurm.conf>)"
done
mkdir -p "$SLURM_DIR"/{state,spool,log,db}

munge_ok() { munge -n | unmunge; }
if ! munge_ok >/dev/null 2>&1; then
  runuser -u munge -- /usr/sbin/munged
  touch "$SLURM_DIR/munged.ours"   # slurm_down.sh stops munged only if this cluster started it
fi
wait_for 10 munged munge_ok

# MariaDB for slurmdbd: private datadir and socket under SLURM_DIR
SOCK="$SLURM_DIR/mysqld.sock"
DB_PORT=${SLURM_DB_PORT:-}
for port in $(seq 3306 3399); do
  [ -n "$DB_PORT" ] && break
  port_busy "$port" || DB_PORT=$port
done
[ -n "$DB_PORT" ] || fail "no free TCP port in 3306-3399 for MariaDB; set SLURM_DB_PORT"
if [ ! -d "$SLURM_DIR/db/mysql" ]; then
  mariadb-install-db --user=root --datadir="$SLURM_DIR/db" --auth-root-authentication-method=socket \
    >"$SLURM_DIR/log/mariadb-install.log" 2>&1 || fail "mariadb-install-db failed"
fi
mariadbd --user=root --datadir="$SLURM_DIR/db" --socket="$SOCK" --port="$DB_PORT" \
  --bind-address=127.0.0.1 --pid-file="$SLURM_DIR/mariadb.pid" --skip-name-resolve \
  --log-error="$SLURM_DIR/log/mariadb.log" </dev/null >>"$SLURM_DIR/log/mariadb.log" 2>&1 &
wait_for 30 mariadbd mariadb --socket="$SOCK" -uroot -e "SELECT 1"
mariadb --socket="$SOCK" -uroot -e "
  CREATE DATABASE IF NOT EXISTS slurm_acct_db;
  CREATE USER IF NOT EXISTS 'slurm'@'127.0.0.1' IDENTIFIED BY 'slurmpw';
  GRANT ALL ON slurm_acct_db.* TO 'slurm'@'127.0.0.1';"

NODE=$(hostname -s)
CPUS=$(nproc)
MEM=$(( $(awk '/MemTotal/{print int($2/1024)}' /proc/meminfo) - 2048 ))
cat > "$SLURM_DIR/slurmdbd.conf" <<CONF
AuthType=auth/munge
DbdHost=localhost
DbdPort=6819
SlurmUser=root
PidFile=$SLURM_DIR/slurmdbd.pid
LogFile=$SLURM_DIR/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=127.0.0.1
StoragePort=$DB_PORT
StorageLoc=slurm_acct_db
StorageUser=slurm
StoragePass=slurmpw
CONF
chmod 600 "$SLURM_DIR/slurmdbd.conf"

# AuthInfo=cred_expire=10: a requeued job becomes eligible after 11 s instead of 121 s (it is
# read only when slurmctld starts). bf_interval/sched_interval: schedule requeued jobs promptly.
cat > "$SLURM_DIR/slurm.conf" <<CONF
ClusterName=local
SlurmctldHost=${NODE}(127.0.0.1)
AuthType=auth/munge
CredType=cred/munge
AuthInfo=cred_expire=10
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$SLURM_DIR/state
SlurmdSpoolDir=$SLURM_DIR/spool
SlurmctldPidFile=$SLURM_DIR/slurmctld.pid
SlurmdPidFile=$SLURM_DIR/slurmd.pid
SlurmctldLogFile=$SLURM_DIR/log/slurmctld.log
SlurmdLogFile=$SLURM_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1,sched_interval=2
MpiDefault=none
MailProg=/bin/true
ReturnToService=2
MinJobAge=600
JobAcctGatherType=jobacct_gather/linux
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobCompType=jobcomp/none
NodeName=${NODE} NodeAddr=127.0.0.1 CPUs=${CPUS} RealMemory=${MEM} State=UNKNOWN
PartitionName=debug Nodes=${NODE} Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$SLURM_DIR/slurm.conf"

slurmdbd                      # before slurmctld, which registers the cluster with it
wait_for 30 slurmdbd sacctmgr -n -i show cluster
slurmctld
slurmd
node_idle() { sinfo -h -o %t | grep -qx idle; }
wait_for "$WAIT_S" "node $NODE (idle state)" node_idle
wait_for 30 "accounting (sacct)" sacct -n -X -S now
sinfo
echo "export SLURM_CONF=$SLURM_CONF"
