#!/usr/bin/env bash
# Stop the cluster started by .ci/slurm_up.sh, by pid file: SLURM_DIR=... bash .ci/slurm_down.sh
set -uo pipefail
SLURM_DIR=${SLURM_DIR:?set SLURM_DIR to the folder given to slurm_up.sh}
for f in slurmd slurmctld slurmdbd mariadb; do
  pidfile="$SLURM_DIR/$f.pid"
  if [ -s "$pidfile" ]; then
    pid=$(cat "$pidfile")
    kill "$pid" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  fi
done
if [ -f "$SLURM_DIR/munged.ours" ] && [ -s /run/munge/munged.pid ]; then
  kill "$(cat /run/munge/munged.pid)" 2>/dev/null
fi
exit 0
