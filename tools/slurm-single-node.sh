#!/usr/bin/env bash
# A single-node Slurm on this machine, to try the suite's Slurm launcher (and for CI's Slurm tests):
# Debian's slurmctld, slurmd and munge packages, one node with this machine's CPUs and memory, one
# partition "debug". Needs root; takes under a minute once the packages are installed.
#
#   sudo tools/slurm-single-node.sh          # install (apt-get), configure, start; idempotent
#   sudo tools/slurm-single-node.sh stop     # stop the daemons
#
# Then: sinfo; python -m suite run --profile smoke --launcher slurm --results-dir my-results
#
# The settings are the lightest that run jobs in a container: no cgroups (proctrack/linuxproc,
# task/none), no accounting; jobs run as the user who submits them. A job that is requeued waits
# cred_expire seconds before it may start again (Slurm's default is 120; 30 here, so the requeue test is
# short). Not a configuration for a shared cluster.
set -euo pipefail

conf=/etc/slurm/slurm.conf
if [ "${1:-start}" = stop ]; then
    pkill -x slurmd || true
    pkill -x slurmctld || true
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "error: $0 must run as root (it installs packages and starts daemons)" >&2
    exit 2
fi
if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    apt-get update -q
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q slurmctld slurmd slurm-client munge >/dev/null
fi

host="$(hostname -s)"
cpus="$(nproc)"
memory_mb="$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))"
mkdir -p /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/munge
cat > "$conf" <<EOF
ClusterName=suite
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
AuthInfo=cred_expire=30
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobRequeue=1
EnforcePartLimits=ALL
KillWait=10
MinJobAge=600
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
chown munge:munge /run/munge
[ -s /etc/munge/munge.key ] || { mungekey --create 2>/dev/null || create-munge-key -f; }
pgrep -x munged >/dev/null || runuser -u munge -- /usr/sbin/munged
pgrep -x slurmctld >/dev/null || slurmctld
pgrep -x slurmd >/dev/null || slurmd
for _ in $(seq 60); do
    if sinfo -h -o %t 2>/dev/null | grep -qx idle; then
        scontrol show config | grep -q 'ProctrackType *= proctrack/linuxproc'
        echo "slurm: node $host idle ($cpus CPUs, ${memory_mb} MB), partition debug"
        exit 0
    fi
    sleep 1
done
echo "error: slurm did not come up within 60 s; see /var/log/slurm/slurmctld.log and slurmd.log" >&2
exit 1
