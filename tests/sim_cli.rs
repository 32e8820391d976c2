//! `gantry sim` as a user runs it: the real binary on bundled traces, its table, JSON
//! and plot, and its errors on bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

fn gantry() -> Command {
    Command::new(env!("CARGO_BIN_EXE_gantry"))
}

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("gantry-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn replays_a_trace_with_table_json_and_plot() {
    let json = scratch("report.json");
    let svg = scratch("plot.svg");
    let out = gantry()
        .args(["sim", "--trace"])
        .arg(repo("testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz"))
        .args(["--backfill", "easy", "--json"])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    for row in [
        "utilization",
        "mean wait",
        "median wait",
        "p95 wait",
        "mean bounded slowdown",
        "makespan",
    ] {
        assert!(table.contains(row), "table lacks '{row}':\n{table}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["jobs"], 28_475);
    assert_eq!(report["backfill"], "easy");
    assert!(report["mean_bounded_slowdown"].as_f64().unwrap() >= 1.0);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.matches("<polyline").count() == 2);
}

#[test]
fn runs_on_a_cluster_file_and_json_to_stdout() {
    let out = gantry()
        .args([
            "sim",
            "-q",
            "--json",
            "-",
            "--partition",
            "cpu",
            "--cluster",
        ])
        .arg(repo("examples/cluster.toml"))
        .arg("--trace")
        .arg(repo("testdata/traces/lublin_256.swf"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["cluster_cores"], 8 * 64 + 2 * 112 + 2 * 32);
    assert_eq!(report["unfinished"], 0);
    // Lublin jobs up to 256 processors fit the 512-core cpu partition: none rejected.
    assert_eq!(report["rejected"], 0);
}

#[test]
fn bad_input_gets_clear_errors() {
    let bad = scratch("bad.swf");
    std::fs::write(&bad, "; MaxProcs: 4\n1 0 -1 10 1 -1 -1 1 60 -1 1 1 1 -1 -1 -1 -1 -1\n2 5 -1 ten 1 -1 -1 1 60 -1 1 1 1 -1 -1 -1 -1 -1\n").unwrap();
    let err = |args: &[&str], path: &Path| {
        let out = gantry().args(args).arg(path).output().unwrap();
        assert!(!out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let e = err(&["sim", "--trace"], &bad);
    assert!(
        e.contains("line 3: field 4 (run time) is not a number: 'ten'"),
        "{e}"
    );
    let e = err(&["sim", "--trace"], Path::new("/nonexistent/trace.swf"));
    assert!(e.contains("cannot open trace"), "{e}");
    let e = err(
        &["sim", "--partition", "nope", "--trace"],
        &repo("testdata/traces/lublin_256.swf"),
    );
    assert!(e.contains("partition 'nope' does not exist"), "{e}");
    let toml = scratch("bad.toml");
    std::fs::write(&toml, "[[node_type]]\nname='c'\ncores_per_numa=4\nmemory='8G'\n[[nodes]]\nnames='a[1-2]'\ntype='gpu'\n").unwrap();
    let out = gantry()
        .args(["sim", "--trace"])
        .arg(repo("testdata/traces/lublin_256.swf"))
        .arg("--cluster")
        .arg(&toml)
        .output()
        .unwrap();
    let e = String::from_utf8(out.stderr).unwrap();
    assert!(e.contains("unknown node type 'gpu'"), "{e}");
    let help = gantry().args(["sim", "--help"]).output().unwrap();
    assert!(String::from_utf8(help.stdout)
        .unwrap()
        .contains("--backfill"));
}
