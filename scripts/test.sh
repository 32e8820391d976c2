#!/usr/bin/env bash
# Runs Gantry's whole test suite: unit, property and integration tests of every crate,
# policy components built and loaded for real, the CLI tests against the real binary,
# end-to-end tests of a live cluster (gantryd and agents as real processes on loopback),
# and one smoke pass of each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

QUIET=1 scripts/setup.sh
# The sandbox, equivalence and CLI tests load real components.
QUIET=1 scripts/build-policies.sh
# The end-to-end tests (tests/cluster) start the real gantryd and gantry-agent.
cargo build --workspace --bins --locked
cargo test --workspace --all-targets --locked
