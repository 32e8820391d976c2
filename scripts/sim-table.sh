#!/usr/bin/env bash
# Replays both bundled traces with every backfill mode and prints the Markdown table that
# docs/SIMULATOR.md shows, with the native safe defaults (FIFO order), as the published
# reference points use. Needs a release build (cargo build --release).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release/gantry
[ -x "$bin" ] || { echo "build first: cargo build --release" >&2; exit 1; }
echo "| trace | backfill | utilization | mean wait (s) | median wait (s) | p95 wait (s) | mean bounded slowdown | makespan (days) | replay (s) |"
echo "|---|---|---|---|---|---|---|---|---|"
for trace in testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz testdata/traces/lublin_256.swf; do
    for mode in none easy conservative; do
        start=$(date +%s.%N)
        json=$("$bin" sim -q --safe-defaults --trace "$trace" --backfill "$mode" --json -)
        end=$(date +%s.%N)
        python3 - "$trace" "$mode" "$start" "$end" <<PY
import json, sys, os
r = json.loads('''$json''')
trace, mode, t0, t1 = sys.argv[1:]
print(f"| {os.path.basename(trace)} | {r['backfill']} | {100*r['utilization']:.2f} % | {r['mean_wait_s']:.0f} | {r['median_wait_s']:.0f} | {r['p95_wait_s']:.0f} | {r['mean_bounded_slowdown']:.2f} | {r['makespan_s']/86400:.2f} | {float(t1)-float(t0):.2f} |")
PY
    done
done

# The published Lublin figures average 10 sequences of 1,024 jobs, each from an empty
# machine; replay the first ten 1,024-job windows the same way.
echo
echo "| lublin_256.swf, 10 windows of 1,024 jobs | mean bounded slowdown | utilization |"
echo "|---|---|---|"
for mode in none easy conservative; do
    for k in 0 1 2 3 4 5 6 7 8 9; do
        "$bin" sim -q --safe-defaults --trace testdata/traces/lublin_256.swf --backfill "$mode" --skip $((k * 1024)) --take 1024 --json - |
            python3 -c "import json,sys; r=json.load(sys.stdin); print(r['mean_bounded_slowdown'], r['utilization'])"
    done | awk -v m="$mode" '{s+=$1; u+=$2; n++} END {printf "| %s | %.2f | %.1f %% |\n", m, s/n, 100*u/n}'
done
