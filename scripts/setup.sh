#!/usr/bin/env bash
# Prepares a fresh Debian machine with Rust (rustup) to build and test Gantry.
# Safe to run again: it only installs what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { [ "${QUIET:-0}" = 1 ] || echo "setup: $*"; }

if ! command -v cargo >/dev/null 2>&1; then
    echo "setup: cargo not found. Install Rust first: https://rustup.rs (then open a new shell)" >&2
    exit 1
fi

# The Rust release of rust-toolchain.toml, with clippy, rustfmt and the wasm32 target
# (rustup fetches it once; about 10 s here).
if command -v rustup >/dev/null 2>&1; then
    channel=$(sed -n 's/^channel *= *"\(.*\)"/\1/p' rust-toolchain.toml)
    if ! rustup toolchain list | grep -q "^$channel-"; then
        say "installing Rust $channel (rust-toolchain.toml)"
    fi
    rustup toolchain install "$channel" --profile minimal \
        --component clippy --component rustfmt --target wasm32-unknown-unknown >/dev/null 2>&1 ||
        { echo "setup: cannot install Rust $channel with rustup (rust-toolchain.toml)" >&2; exit 1; }
fi

# Rust 1.85 or newer (edition 2021 features and let-else chains used across the workspace).
version=$(rustc --version | awk '{print $2}')
major=${version%%.*}; rest=${version#*.}; minor=${rest%%.*}
if [ "$major" -lt 1 ] || { [ "$major" -eq 1 ] && [ "$minor" -lt 85 ]; }; then
    echo "setup: rustc $version is too old; Gantry needs 1.85 or newer (rustup update stable)" >&2
    exit 1
fi
say "rustc $version ok"

# Debian packages the build needs: a C compiler (for -sys crates; SQLite is compiled
# in), and hwloc for the agent's topology discovery. The tests also run Open MPI
# (mpirun through srun, a program built with mpicc) and a Python rendezvous program.
missing=()
command -v cc >/dev/null 2>&1 || missing+=(build-essential)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
pkg-config --exists hwloc 2>/dev/null || missing+=(libhwloc-dev)
pkg-config --exists libudev 2>/dev/null || missing+=(libudev-dev)
command -v mpirun >/dev/null 2>&1 || missing+=(openmpi-bin)
command -v mpicc >/dev/null 2>&1 || missing+=(libopenmpi-dev)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
# The PostgreSQL backend's tests start a throwaway server of their own (initdb in a
# temporary directory): the server binaries, not a running service.
compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || missing+=(postgresql)
# Policies in C (sdk/c, examples/xfactor-priority-c): clang's wasm32 target, its
# runtime library for wasm32, and wasi-libc.
command -v clang >/dev/null 2>&1 || missing+=(clang)
compgen -G '/usr/bin/wasm-ld*' >/dev/null || missing+=(lld)
[ -f /usr/lib/wasm32-wasi/libc.a ] || missing+=(wasi-libc)
compgen -G '/usr/lib/llvm-*/lib/clang/*/lib/wasi/libclang_rt.builtins-wasm32.a' >/dev/null ||
    missing+=(libclang-rt-14-dev-wasm32)
# The client-library tests run submitit and dask-jobqueue from a virtual environment.
python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
if [ ${#missing[@]} -gt 0 ]; then
    say "installing ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then SUDO=; else SUDO=sudo; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

say "fetching crates"
cargo fetch --locked -q

# Slurm client libraries from PyPI (tests/clients/requirements.txt), for the tests that
# run them unchanged against a live cluster. Reinstalled when the pins change.
venv=target/client-libs
if ! cmp -s tests/clients/requirements.txt "$venv/requirements.txt" 2>/dev/null; then
    say "installing the Slurm client libraries (submitit, dask-jobqueue) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check -r tests/clients/requirements.txt
    cp tests/clients/requirements.txt "$venv/requirements.txt"
fi
say "ready"
