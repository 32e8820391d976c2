//! `gantry policy new` as a site's policy author uses it, outside Gantry's tree: each
//! kind's project passes its own tests natively, builds as a component with the one
//! documented command, and that component passes `gantry policy test`.

use std::path::Path;
use std::process::{Command, Output};

fn gantry(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

/// The Rust release Gantry pins (rust-toolchain.toml), which the setup script installs
/// with the wasm32 target.
fn pinned_toolchain() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("rust-toolchain.toml");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .find_map(|l| l.trim().strip_prefix("channel")?.split('"').nth(1))
        .expect("rust-toolchain.toml names a channel")
        .to_string()
}

/// Cargo as a user runs it in their project: none of this test run's Cargo settings,
/// and a toolchain with the wasm32 target, as the tutorial asks for (the pinned one:
/// a machine's default toolchain may lack the target, and rustup would fetch it).
fn cargo(args: &[&str], dir: &Path, target: &Path) -> Output {
    let mut c = Command::new("cargo");
    let keep = ["CARGO_HOME", "RUSTUP_HOME"];
    for (k, _) in std::env::vars() {
        if (k.starts_with("CARGO_") || k.starts_with("RUST")) && !keep.contains(&k.as_str()) {
            c.env_remove(k);
        }
    }
    c.env("RUSTUP_TOOLCHAIN", pinned_toolchain())
        .args(args)
        .current_dir(dir)
        // One target directory for the four projects: the SDK's dependencies build once.
        .env("CARGO_TARGET_DIR", target)
        .output()
        .unwrap()
}

fn ok(what: &str, o: &Output) -> String {
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr),
    );
    assert!(o.status.success(), "{what} failed:\n{out}\n{err}");
    format!("{out}{err}")
}

#[test]
fn each_kinds_project_builds_out_of_tree_and_its_component_passes_the_checks() {
    let home = tempfile::tempdir().unwrap();
    let target = home.path().join("target");
    for kind in ["priority", "fairshare", "preemption", "placement"] {
        let name = format!("site-{kind}");
        let said = ok(
            "policy new",
            &gantry(&["policy", "new", kind, &name], home.path()),
        );
        assert!(said.contains("cargo build --release --target wasm32-unknown-unknown"));
        let dir = home.path().join(&name);
        let tests = ok("cargo test", &cargo(&["test", "-q"], &dir, &target));
        assert!(tests.contains("test result: ok"), "{tests}");
        ok(
            "the component build",
            &cargo(
                &[
                    "build",
                    "-q",
                    "--release",
                    "--target",
                    "wasm32-unknown-unknown",
                ],
                &dir,
                &target,
            ),
        );
        let wasm = target
            .join("wasm32-unknown-unknown/release")
            .join(format!("site_{kind}.wasm"));
        let bytes = std::fs::read(&wasm).unwrap();
        assert_eq!(
            &bytes[4..8],
            [0x0d, 0, 1, 0],
            "a component, not a core module"
        );
        let o = gantry(
            &[
                "policy",
                "test",
                wasm.to_str().unwrap(),
                "--kind",
                kind,
                "--jobs",
                "20000",
                "--json",
            ],
            home.path(),
        );
        ok("policy test", &o);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["name"], name.as_str(), "{report}");
        for check in ["well_formed", "deterministic", "within_deadline"] {
            assert_eq!(report[check], true, "{kind} {check}: {report}");
        }
    }
}

/// A C policy of each kind: `make` builds the component with clang's wasm32 target and
/// wasi-libc, and it imports nothing Gantry does not offer.
#[test]
fn each_kinds_c_project_builds_with_make_and_its_component_passes_the_checks() {
    let home = tempfile::tempdir().unwrap();
    for kind in ["priority", "fairshare", "preemption", "placement"] {
        let name = format!("c-{kind}");
        let said = ok(
            "policy new --lang c",
            &gantry(&["policy", "new", kind, &name, "--lang", "c"], home.path()),
        );
        assert!(said.contains("make"), "{said}");
        let dir = home.path().join(&name);
        ok(
            "make",
            &Command::new("make").current_dir(&dir).output().unwrap(),
        );
        let wasm = format!("{name}.wasm");
        let o = gantry(
            &[
                "policy", "test", &wasm, "--kind", kind, "--jobs", "20000", "--json",
            ],
            &dir,
        );
        ok("policy test", &o);
        let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(report["name"], name.as_str(), "{report}");
        for check in ["well_formed", "deterministic", "within_deadline"] {
            assert_eq!(report[check], true, "{kind} {check}: {report}");
        }
        // Its configuration is read line by line, comments and blanks skipped.
        std::fs::write(dir.join("bad.conf"), "# a comment\n\n  nonsense = 1\n").unwrap();
        let o = gantry(
            &[
                "policy", "test", &wasm, "--kind", kind, "--config", "bad.conf",
            ],
            &dir,
        );
        assert_eq!(o.status.code(), Some(1), "{kind}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("line 3: expected"), "{kind}: {err}");
    }
}

/// The C bindings in the tree were made from the WIT as it is
/// (`scripts/gen-c-bindings.sh` makes them again after a change).
#[test]
fn the_c_bindings_match_the_wit() {
    use sha2::Digest;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let wit = std::fs::read(root.join("wit/policy.wit")).unwrap();
    let recorded = std::fs::read_to_string(root.join("sdk/c/bindings/policy.wit.sha256")).unwrap();
    let now: String = sha2::Sha256::digest(&wit)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        recorded.trim(),
        now,
        "wit/policy.wit changed: run scripts/gen-c-bindings.sh"
    );
}

#[test]
fn a_taken_directory_a_bad_name_and_an_unknown_language_are_refused() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("notes"), "mine").unwrap();
    let o = gantry(
        &["policy", "new", "priority", home.path().to_str().unwrap()],
        home.path(),
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not empty"));
    assert_eq!(
        std::fs::read_to_string(home.path().join("notes")).unwrap(),
        "mine"
    );
    let o = gantry(&["policy", "new", "priority", "9lives"], home.path());
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a package name"));
    let o = gantry(
        &["policy", "new", "priority", "p", "--lang", "cobol"],
        home.path(),
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(!home.path().join("p").exists());
}
