//! `gantry policy test` as a policy author runs it: the real binary on real components
//! (the built-ins, the example, the hostile test components), no controller.

use std::path::{Path, PathBuf};
use std::process::Command;

fn component(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/policies")
        .join(format!("{name}.wasm"))
}

/// `gantry policy test NAME ARGS --json`: its exit code and report.
fn test(name: &str, args: &[&str]) -> (i32, serde_json::Value, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test"])
        .arg(component(name))
        .args(["--jobs", "20000", "--calls", "3", "--json"])
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code().unwrap_or(-1), report, stderr)
}

#[test]
fn a_good_component_passes_each_check_and_its_world_is_found() {
    let (code, r, err) = test("xfactor-priority", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["kind"], "priority");
    assert_eq!(r["name"], "xfactor");
    assert_eq!(r["batch"], 20000);
    assert_eq!(r["calls"], 3);
    for check in ["well_formed", "deterministic", "within_deadline"] {
        assert_eq!(r[check], true, "{check}: {r}");
    }
    assert!(r["bytes"].as_u64().unwrap() > 1000);
    assert!(r["compile_ms"].as_f64().unwrap() > 0.0);
    let (code, r, err) = test("fairtree", &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["kind"], "fairshare", "found without --kind");
    let (code, r, _) = test("topology-placement", &["--kind", "placement"]);
    assert_eq!((code, r["kind"].as_str()), (0, Some("placement")));
}

#[test]
fn a_bad_component_fails_the_check_it_breaks() {
    let (code, r, _) = test("hostile-wrong-length", &[]);
    assert_eq!(code, 1);
    assert_eq!(r["well_formed"], false, "{r}");
    assert!(r["failure"]
        .as_str()
        .unwrap()
        .contains("priorities for 20000 jobs"));
    let (code, r, _) = test("hostile-infinite-loop", &["--deadline-ms", "100"]);
    assert_eq!(code, 1);
    assert_eq!(r["within_deadline"], false, "{r}");
    let (code, r, _) = test("hostile-panic", &[]);
    assert_eq!(code, 1);
    assert!(
        r["failure"]
            .as_str()
            .unwrap()
            .contains("hostile policy panics"),
        "{r}"
    );
    // Not a component of the world asked for; not a component at all.
    let (code, _, err) = test("fairtree", &["--kind", "priority"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("does not implement the 'priority' world"),
        "{err}"
    );
    let junk = std::env::temp_dir().join(format!("junk-{}.wasm", std::process::id()));
    std::fs::write(&junk, b"not wasm").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["policy", "test"])
        .arg(&junk)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is refused"));
}
