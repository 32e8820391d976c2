#!/usr/bin/env bash
# Builds every policy component: the four built-ins, the example site policy (in Rust
# and in C), and the test components (hostile ones for the sandbox tests, and one that
# reads only the job ids). Output: target/policies/<name>.wasm
#
# Route A (first choice): rustup's wasm32-unknown-unknown target, linked by the
# toolchain's wasm-component-ld. Route B (fallback, when the target cannot be fetched):
# Debian's Rust packages (rustc-web 1.96) with core/alloc rebuilt for the target; its
# components pass the same test suite. Components are built at opt-level 3 (profile
# `policy`): a policy's loops over batch columns are its hot path.
#
# LLVM's loop strength reduction is off for the guests (docs/POLICIES.md, "Hot loops"):
# it turns a loop over five columns into five pointers stepped side by side, and
# Cranelift, which keeps few values in registers across a deadline check, then stores
# and reloads them at every iteration. Off, placement's call took 13 % less time.
set -euo pipefail
cd "$(dirname "$0")/.."
say() { [ "${QUIET:-0}" = 1 ] || echo "build-policies: $*"; }
guest_flags="-C llvm-args=-disable-lsr"

out=target/policies
mkdir -p "$out"

# GANTRY_POLICY_ROUTE=b forces the Debian route (to test it on a machine that has both).
route="${GANTRY_POLICY_ROUTE:-a}"
if [ "$route" = a ] && ! rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown; then
    say "adding the rustup target wasm32-unknown-unknown"
    if ! rustup target add wasm32-unknown-unknown >/dev/null 2>&1; then
        say "rustup target unavailable; falling back to Debian's Rust packages"
        route=b
    fi
fi

if [ "$route" = a ]; then
    linker="$(rustc --print sysroot)/lib/rustlib/$(rustc -vV | sed -n 's/^host: //p')/bin/wasm-component-ld"
    [ -x "$linker" ] || { echo "build-policies: $linker not found (rustup component rust-std?)" >&2; exit 1; }
    build() { # crate, features
        CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER="$linker" \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$guest_flags" \
            cargo build -q --locked --profile policy --target wasm32-unknown-unknown -p "$1" ${2:+--features "$2"}
    }
    artifacts=target/wasm32-unknown-unknown/policy
    c_linker="$linker"
else
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
        rustc-web cargo-web rust-web-src rust-web-llvm lld-22
    build() {
        env PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_LINKER=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld \
            CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUSTFLAGS="$guest_flags -C link-arg=--wasm-ld-path=/usr/bin/wasm-ld-22" \
            CARGO_TARGET_DIR=target/debian \
            /usr/bin/cargo build -q --profile policy --target wasm32-unknown-unknown \
            -Z build-std=core,alloc -p "$1" ${2:+--features "$2"}
    }
    artifacts=target/debian/wasm32-unknown-unknown/policy
    c_linker=/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld
fi

# Each component is built on its own so that only its world's bindings are linked in.
component() { # output name, crate, features
    say "$1"
    build "$2" "${3:-}"
    cp "$artifacts/$(echo "$2" | tr - _).wasm" "$out/$1.wasm"
}
for p in multifactor fairtree qos-preemption topology-placement; do
    component "$p" "gantry-policy-$p"
    cp "policies/$p/default.toml" "$out/$p.toml"
done
component xfactor-priority gantry-example-xfactor-priority
for f in infinite-loop memory-bomb panic wrong-length; do
    component "hostile-$f" gantry-test-hostile-policy "$f"
done
component fifo-by-job-id gantry-test-hostile-policy job-ids
# The C example: clang's wasm32 target and wasi-libc (scripts/setup.sh installs them),
# linked into a component by the same wasm-component-ld.
say xfactor-priority-c
make -s -C examples/xfactor-priority-c OUT="$PWD/$out/xfactor-priority-c.wasm" \
    WASM_COMPONENT_LD="$c_linker" >/dev/null
# The same without the SDK's virtual WASI: a component that imports WASI, which the
# host must refuse at load.
say hostile-wasi
make -s -C examples/xfactor-priority-c OUT="$PWD/$out/hostile-wasi.wasm" \
    WASM_COMPONENT_LD="$c_linker" LIBRARY="../../sdk/c/gantry.c ../../sdk/c/bindings/priority.c" >/dev/null
rm -rf "$out"/*.wasm.obj
# About 4 MB of code, for benches/policy_load_stall.rs only (half a minute to build).
if [ "${GANTRY_LARGE_POLICY:-0}" = 1 ]; then
    component large-priority gantry-test-large-policy large
fi
say "components in $out"
