//! `gantry policy new KIND DIR [--lang rust|c]`: a policy project that builds as a
//! component outside Gantry's tree with one command. What it is built against — the
//! Rust SDK, its ABI crate and the WIT, or the C library, its build rules and the
//! bindings of the WIT — is copied in from this binary, so the project needs nothing of
//! Gantry's source, and a component it builds matches the WIT of the `gantry` that
//! made it.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::ValueEnum;

/// Expands to a world's bindings, as `wit-bindgen c` made them: source, header, and the
/// object that carries the component type.
macro_rules! c_bindings {
    ($world:literal) => {
        [
            (
                concat!("gantry/bindings/", $world, ".c"),
                include_bytes!(concat!("../sdk/c/bindings/", $world, ".c")).as_slice(),
            ),
            (
                concat!("gantry/bindings/", $world, ".h"),
                include_bytes!(concat!("../sdk/c/bindings/", $world, ".h")).as_slice(),
            ),
            (
                concat!("gantry/bindings/", $world, "_component_type.o"),
                include_bytes!(concat!("../sdk/c/bindings/", $world, "_component_type.o"))
                    .as_slice(),
            ),
        ]
    };
}

#[derive(clap::Args, Debug)]
pub struct NewArgs {
    /// The policy slot the component will fill.
    #[arg(value_enum)]
    kind: Kind,
    /// The directory to create (it must not exist, or be empty).
    dir: PathBuf,
    /// The language of the project.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// The package name (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Priority,
    Fairshare,
    Preemption,
    Placement,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Priority => "priority",
            Kind::Fairshare => "fairshare",
            Kind::Preemption => "preemption",
            Kind::Placement => "placement",
        }
    }

    /// The world's bindings for a C project.
    fn c_bindings(self) -> [(&'static str, &'static [u8]); 3] {
        match self {
            Kind::Priority => c_bindings!("priority"),
            Kind::Fairshare => c_bindings!("fairshare"),
            Kind::Preemption => c_bindings!("preemption"),
            Kind::Placement => c_bindings!("placement"),
        }
    }

    fn c_template(self) -> &'static str {
        match self {
            Kind::Priority => include_str!("scaffold/c/priority.c"),
            Kind::Fairshare => include_str!("scaffold/c/fairshare.c"),
            Kind::Preemption => include_str!("scaffold/c/preemption.c"),
            Kind::Placement => include_str!("scaffold/c/placement.c"),
        }
    }

    fn rust_template(self) -> &'static str {
        match self {
            Kind::Priority => include_str!("scaffold/rust/priority.rs"),
            Kind::Fairshare => include_str!("scaffold/rust/fairshare.rs"),
            Kind::Preemption => include_str!("scaffold/rust/preemption.rs"),
            Kind::Placement => include_str!("scaffold/rust/placement.rs"),
        }
    }
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Lang {
    /// A crate on gantry-sdk; built with cargo and Rust's wasm32 target.
    Rust,
    /// C on Gantry's C library (gantry.h); built with make, clang's wasm32 target and
    /// wasi-libc.
    C,
}

/// The SDK and what it is built from, as this binary was built.
const VENDORED_RUST: [(&str, &str); 6] = [
    ("gantry/abi/src/lib.rs", include_str!("../abi/src/lib.rs")),
    ("gantry/sdk/src/lib.rs", include_str!("../sdk/src/lib.rs")),
    (
        "gantry/sdk/src/harness.rs",
        include_str!("../sdk/src/harness.rs"),
    ),
    ("gantry/sdk/src/wasm.rs", include_str!("../sdk/src/wasm.rs")),
    ("gantry/wit/policy.wit", include_str!("../wit/policy.wit")),
    ("gantry/README.md", VENDORED_README),
];

/// The C library and its build rules.
const VENDORED_C: [(&str, &[u8]); 5] = [
    ("gantry/gantry.h", include_bytes!("../sdk/c/gantry.h")),
    ("gantry/gantry.c", include_bytes!("../sdk/c/gantry.c")),
    ("gantry/wasi_none.c", include_bytes!("../sdk/c/wasi_none.c")),
    ("gantry/policy.mk", include_bytes!("../sdk/c/policy.mk")),
    ("gantry/wit/policy.wit", include_bytes!("../wit/policy.wit")),
];

const VENDORED_README: &str = "\
Gantry's policy SDK (`gantry-sdk`), its ABI crate (`gantry-abi`) and the WIT they are
built against, copied in by `gantry policy new`. Components built with them load into a
Gantry of the same policy WIT package (`gantry:policy`); to move to a newer Gantry, make
a new project with its `gantry policy new` and copy your `src/lib.rs` across.
";

pub fn run(a: NewArgs) -> Result<u8> {
    let name = match &a.name {
        Some(n) => n.clone(),
        None => a
            .dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    if a.dir.exists() {
        let empty = std::fs::read_dir(&a.dir)
            .with_context(|| format!("cannot read {}", a.dir.display()))?
            .next()
            .is_none();
        if !empty {
            bail!(
                "{} exists and is not empty: name a new directory",
                a.dir.display()
            );
        }
    }
    check_name(&name)?;
    let files = match a.lang {
        Lang::Rust => rust_project(&name, a.kind),
        Lang::C => c_project(&name, a.kind),
    };
    for (path, bytes) in &files {
        write(&a.dir.join(path), bytes)?;
    }
    println!(
        "made {} policy `{name}` in {}",
        a.kind.as_str(),
        a.dir.display()
    );
    match a.lang {
        Lang::Rust => {
            println!("  test:  cargo test");
            println!("  build: cargo build --release --target wasm32-unknown-unknown");
            println!(
                "  check: gantry policy test target/wasm32-unknown-unknown/release/{}.wasm --kind {}",
                name.replace('-', "_"),
                a.kind.as_str()
            );
            if !wasm_target_installed() {
                println!(
                    "note: the Rust target wasm32-unknown-unknown is not installed: rustup target add wasm32-unknown-unknown"
                );
            }
        }
        Lang::C => {
            println!("  build: make");
            println!(
                "  check: gantry policy test {name}.wasm --kind {}",
                a.kind.as_str()
            );
        }
    }
    Ok(0)
}

fn rust_project(name: &str, kind: Kind) -> Vec<(String, Vec<u8>)> {
    let version = env!("CARGO_PKG_VERSION");
    let mut files: Vec<(String, Vec<u8>)> = VENDORED_RUST
        .iter()
        .map(|(p, text)| (p.to_string(), text.as_bytes().to_vec()))
        .collect();
    files.extend(
        [
            ("Cargo.toml", cargo_toml(name, kind)),
            (".cargo/config.toml", CARGO_CONFIG.into()),
            (".gitignore", "/target\n".into()),
            ("src/lib.rs", kind.rust_template().into()),
            ("README.md", readme(name, kind)),
            ("gantry/abi/Cargo.toml", abi_toml(version)),
            ("gantry/sdk/Cargo.toml", sdk_toml(version)),
        ]
        .map(|(p, text)| (p.to_string(), text.into_bytes())),
    );
    files
}

fn c_project(name: &str, kind: Kind) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<(String, Vec<u8>)> = VENDORED_C
        .iter()
        .chain(kind.c_bindings().iter())
        .map(|(p, bytes)| (p.to_string(), bytes.to_vec()))
        .collect();
    let makefile = format!(
        "# `make` builds the component {name}.wasm; `make clean` removes it.\n\
         GANTRY := gantry\n\
         WORLD := {kind}\n\
         SOURCES := policy.c\n\
         OUT ?= {name}.wasm\n\
         include $(GANTRY)/policy.mk\n",
        kind = kind.as_str()
    );
    files.extend(
        [
            ("Makefile", makefile),
            ("policy.c", kind.c_template().replace("__NAME__", name)),
            (".gitignore", "*.wasm\n*.wasm.obj/\n".into()),
            ("README.md", c_readme(name, kind)),
        ]
        .map(|(p, text)| (p.to_string(), text.into_bytes())),
    );
    files
}

/// A Cargo package name: letters, digits, `-` and `_`, starting with a letter.
fn check_name(name: &str) -> Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !ok {
        bail!(
            "{:?} is not a package name: use up to 64 letters, digits, '-' and '_', starting with a letter (--name NAME)",
            name
        );
    }
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn wasm_target_installed() -> bool {
    std::process::Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| {
            Path::new(String::from_utf8_lossy(&o.stdout).trim())
                .join("lib/rustlib/wasm32-unknown-unknown")
                .is_dir()
        })
        .unwrap_or(true)
}

/// rustc finds `wasm-component-ld` by name in its own toolchain's tool directory, so the
/// setting holds for whichever toolchain builds the project.
const CARGO_CONFIG: &str = r#"# The component linker: the wasm32 build links a WebAssembly component (not a core
# module, which Gantry refuses). rustc finds it in its own toolchain.
[target.wasm32-unknown-unknown]
linker = "wasm-component-ld"
# LLVM's loop strength reduction turns a loop over several columns into several
# pointers stepped side by side, which Wasm's compiler then spills: off, policy loops
# run faster under Gantry.
rustflags = ["-C", "llvm-args=-disable-lsr"]
"#;

fn cargo_toml(name: &str, kind: Kind) -> String {
    format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2021"
publish = false

[lib]
# cdylib: the component; rlib: the native tests.
crate-type = ["cdylib", "rlib"]

[dependencies]
gantry-sdk = {{ path = "gantry/sdk", features = ["{kind}"] }}

# A workspace of its own, wherever it is put.
[workspace]

# Components: small, fast, and a panic is a trap the host reports (with its message).
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"
"#,
        kind = kind.as_str()
    )
}

fn abi_toml(version: &str) -> String {
    format!(
        r#"[package]
name = "gantry-abi"
description = "The Rust mirror of Gantry's policy WIT: records and the four policy traits, no_std"
version = "{version}"
edition = "2021"
license = "Apache-2.0"
publish = false

[dependencies]
serde = {{ version = "1", default-features = false, features = ["derive"], optional = true }}
"#
    )
}

fn sdk_toml(version: &str) -> String {
    format!(
        r#"[package]
name = "gantry-sdk"
description = "Write Gantry scheduling policies: ABI types, Wasm export macros, and a native test harness"
version = "{version}"
edition = "2021"
license = "Apache-2.0"
publish = false

[features]
# The world a policy component exports. A policy crate enables exactly one.
priority = []
fairshare = []
preemption = []
placement = []

[dependencies]
gantry-abi = {{ path = "../abi" }}

[target.'cfg(target_arch = "wasm32")'.dependencies]
wit-bindgen = {{ version = "0.63", default-features = false, features = ["macros", "realloc"] }}
dlmalloc = {{ version = "0.2", features = ["global"] }}

[lints.rust]
# Trace replay through Gantry's kernel is for policies inside Gantry's own tree.
unexpected_cfgs = {{ level = "warn", check-cfg = ['cfg(feature, values("replay"))'] }}
"#
    )
}

fn readme(name: &str, kind: Kind) -> String {
    let file = name.replace('-', "_");
    let kind = kind.as_str();
    format!(
        r#"# {name}: a Gantry {kind} policy

Made by `gantry policy new {kind}`. The policy is `src/lib.rs`; `gantry/` holds the SDK
it is built with (docs/POLICIES.md in Gantry's documentation is the reference of every
input).

```sh
cargo test                                                  # natively, with the SDK's harness
cargo build --release --target wasm32-unknown-unknown       # the component
gantry policy test target/wasm32-unknown-unknown/release/{file}.wasm --kind {kind}
```

The build needs Rust's `wasm32-unknown-unknown` target (`rustup target add
wasm32-unknown-unknown`); `.cargo/config.toml` links a component with the toolchain's
`wasm-component-ld`.

Try it on a workload, then on the live cluster:

```sh
gantry sim --trace WORKLOAD.swf --policy {kind}=target/wasm32-unknown-unknown/release/{file}.wasm --strict
gantry policy load {kind} target/wasm32-unknown-unknown/release/{file}.wasm --no-activate
gantry policy shadow {kind} VERSION --cycles 100    # beside the active version, then `gantry policy list`
gantry policy activate {kind} VERSION
```
"#
    )
}

fn c_readme(name: &str, kind: Kind) -> String {
    let kind = kind.as_str();
    format!(
        r#"# {name}: a Gantry {kind} policy in C

Made by `gantry policy new {kind} --lang c`. The policy is `policy.c`; `gantry/` holds
Gantry's C library (`gantry.h` says what each column holds and what a policy may use),
the bindings `wit-bindgen c` made of Gantry's policy WIT, and the build rules.

```sh
make                                          # the component: {name}.wasm
gantry policy test {name}.wasm --kind {kind}  # well formed, deterministic, within the deadline
```

It needs clang with its wasm32 target and wasi-libc (Debian: `clang lld wasi-libc
libclang-rt-14-dev-wasm32`) and the component linker `wasm-component-ld` that comes
with Rust's toolchain (or `make WASM_COMPONENT_LD=PATH`).

A policy has no files, clock, environment or randomness: `gantry/wasi_none.c` answers
wasi-libc's few system calls inside the component (output to stdout or stderr goes to
Gantry's log, the clock reads 0, random bytes come from a fixed seed), so the component
imports nothing but Gantry's log; anything else libc would reach stays an import, and
Gantry refuses the component at load, naming it.

Try it on a workload, then on the live cluster:

```sh
gantry sim --trace WORKLOAD.swf --policy {kind}={name}.wasm --strict
gantry policy load {kind} {name}.wasm --no-activate
gantry policy shadow {kind} VERSION --cycles 100    # then `gantry policy list`
gantry policy activate {kind} VERSION
```
"#
    )
}
