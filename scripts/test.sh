#!/usr/bin/env bash
# Runs Gantry's whole test suite: unit, property and integration tests of every crate,
# the CLI tests against the real binary, and one smoke pass of each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

QUIET=1 scripts/setup.sh
cargo test --workspace --all-targets --locked
