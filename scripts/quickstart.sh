#!/usr/bin/env bash
# Sets everything up, builds Gantry, and runs its main job: a replay of the real KTH SP2
# workload (28,476 jobs, 1996-97) through the scheduling kernel with EASY backfill and
# the built-in policies running as sandboxed WebAssembly components.
# Writes target/quickstart/{kth.json,kth.svg}.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh
echo "quickstart: building the built-in policies as WebAssembly components"
scripts/build-policies.sh
echo "quickstart: building (release; the first build takes a few minutes)"
cargo build --release --locked -q
mkdir -p target/quickstart
echo "quickstart: replaying testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz"
target/release/gantry sim \
    --trace testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz \
    --backfill easy \
    --json target/quickstart/kth.json \
    --plot target/quickstart/kth.svg
echo
echo "quickstart: report in target/quickstart/kth.json, plot in target/quickstart/kth.svg"
echo "quickstart: try 'target/release/gantry sim --help' for more"
