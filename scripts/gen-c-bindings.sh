#!/usr/bin/env bash
# Regenerates the C bindings of the policy WIT (sdk/c/bindings/) with `wit-bindgen c`,
# after a change to wit/policy.wit. They are kept in the tree so that building a C
# policy needs only clang and wasi-libc; sdk/c/bindings/policy.wit.sha256 records the
# WIT they were made from, and a test fails when it no longer matches.
#   cargo install wit-bindgen-cli --version 0.63.0 --locked
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wit-bindgen >/dev/null || {
    echo "gen-c-bindings: wit-bindgen not found: cargo install wit-bindgen-cli --version 0.63.0 --locked" >&2
    exit 1
}
out=sdk/c/bindings
mkdir -p "$out"
for world in priority fairshare preemption placement; do
    wit-bindgen c --world "$world" wit --out-dir "$out" >/dev/null
done
sha256sum wit/policy.wit | cut -d' ' -f1 > "$out/policy.wit.sha256"
echo "gen-c-bindings: $(wit-bindgen --version) -> $out"
