#!/usr/bin/env bash
# Runs Gantry's whole test suite: unit, property and integration tests of every crate,
# policy components built and loaded for real, the CLI tests against the real binary,
# and one smoke pass of each benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

QUIET=1 scripts/setup.sh
# The sandbox, equivalence and CLI tests load real components.
QUIET=1 scripts/build-policies.sh
cargo test --workspace --all-targets --locked
