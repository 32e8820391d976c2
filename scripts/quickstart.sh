#!/usr/bin/env bash
# Sets everything up, builds Gantry, and runs its main job: a local cluster on this
# machine — gantryd with the built-in policies as WebAssembly components, and one
# gantry-agent that discovers this machine — with a demo workload submitted through the
# Slurm-compatible commands and shown while it runs and once it is done.
# Everything lives in target/quickstart/cluster; the daemons stop when the demo ends.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

scripts/setup.sh
echo "quickstart: building the built-in policies as WebAssembly components"
scripts/build-policies.sh
echo "quickstart: building (release; the first build takes a few minutes)"
cargo build --release --locked -q --workspace --bins
bin=$root/target/release

dir=$root/target/quickstart/cluster
rm -rf "$dir"
mkdir -p "$dir/work" "$dir/bin"
cd "$dir"
head -c 48 /dev/urandom > key
chmod 600 key
"$bin/gantry" install-links "$dir/bin" > /dev/null
export PATH="$dir/bin:$PATH"
export GANTRY_CONTROLLER="unix:$dir/gantryd.sock"
export GANTRY_POLICY_DIR="$root/target/policies"

node=$(hostname -s 2>/dev/null || cat /proc/sys/kernel/hostname)
# The agent holds its node's own credential, never the cluster key.
"$bin/gantry" credential "$node" --key key --output credential > /dev/null
cat > agent.toml <<CONF
controller = "unix:$dir/gantryd.sock"
node = "$node"
credential_file = "credential"
spool = "spool"
CONF
echo "quickstart: discovering this machine (hwloc, NVML)"
"$bin/gantry-agent" --config agent.toml --discover 2> /dev/null
{
    "$bin/gantry-agent" --config agent.toml --describe-node 2> /dev/null
    printf '\n[[partition]]\nname = "local"\nnodes = ["%s"]\nmax_time = "1:00:00"\ndefault = true\n' "$node"
} > cluster.toml
cat > gantryd.toml <<CONF
socket = "gantryd.sock"
state = "state.db"
key_file = "key"
cluster_file = "cluster.toml"
heartbeat_s = 2
node_timeout_s = 10
cycle_interval_ms = 500
CONF

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2> /dev/null || true; done; }
trap cleanup EXIT
"$bin/gantryd" --config gantryd.toml 2> gantryd.log &
pids+=($!)
for _ in $(seq 100); do [ -S gantryd.sock ] && break; sleep 0.1; done
"$bin/gantry-agent" --config agent.toml 2> agent.log &
pids+=($!)
for _ in $(seq 100); do sinfo -h 2> /dev/null | grep -qv down && break; sleep 0.2; done
echo
echo "quickstart: the cluster (sinfo)"
sinfo
echo
echo "quickstart: the policies (gantry policy list)"
"$bin/gantry" policy list

cd work
cat > prepare.sh <<'JOB'
#!/bin/bash
#SBATCH --job-name=prepare
#SBATCH --array=1-4%2
#SBATCH --cpus-per-task=1
#SBATCH --time=2:00
#SBATCH --output=prepare-%A_%a.out
echo "task $SLURM_ARRAY_TASK_ID of array $SLURM_ARRAY_JOB_ID on $SLURM_JOB_NODELIST, CPUs $GANTRY_JOB_CPUS"
sleep 2
JOB
cat > report.sh <<'JOB'
#!/bin/bash
#SBATCH --job-name=report
#SBATCH --time=1:00
#SBATCH --output=report-%j.out
echo "report $SLURM_JOB_ID: $(ls prepare-*.out | wc -l) prepared outputs"
JOB
echo
array=$(sbatch --parsable prepare.sh)
echo "quickstart: sbatch prepare.sh -> array job $array (4 tasks, at most 2 at once)"
report=$(sbatch --parsable --dependency=afterok:"$array" report.sh)
echo "quickstart: sbatch --dependency=afterok:$array report.sh -> job $report"
sleep 1
echo
echo "quickstart: while it runs (squeue)"
squeue
echo
echo "quickstart: srun -n2 -l hostname (a foreground step of two tasks, output labelled)"
srun --time=1:00 -n2 -l hostname
for _ in $(seq 300); do
    [ -z "$(squeue -h)" ] && break
    sleep 0.2
done
echo
echo "quickstart: done (sacct)"
sacct -o JobID,JobName,State,ExitCode,Elapsed,NodeList
echo
echo "quickstart: report-$report.out:"
cat "report-$report.out"
echo
echo "quickstart: everything is in $dir (logs: gantryd.log, agent.log; state: state.db)"
echo "quickstart: the trace simulator: target/release/gantry sim --trace testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz"
