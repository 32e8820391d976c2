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

fn json_of(args: &[&str]) -> serde_json::Value {
    let out = gantry()
        .args(args)
        .arg("--trace")
        .arg(repo("testdata/traces/lublin_256.swf"))
        .args(["-q", "--json", "-"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn wasm_builtins_run_by_default_and_match_their_native_builds() {
    let wasm = json_of(&["sim", "--take", "2000"]);
    let native = json_of(&["sim", "--take", "2000", "--native-policies"]);
    let slots = &wasm["policies"];
    for (kind, name) in [
        ("priority", "multifactor"),
        ("fairshare", "fair-tree"),
        ("preemption", "qos-preemption"),
        ("placement", "topology-placement"),
    ] {
        assert_eq!(slots[kind]["versions"][0]["name"], name);
        assert_eq!(
            slots[kind]["versions"][0]["sha256"].as_str().unwrap().len(),
            64
        );
        assert_eq!(slots[kind]["failures"].as_array().unwrap().len(), 0);
    }
    for figure in [
        "mean_wait_s",
        "p95_wait_s",
        "mean_bounded_slowdown",
        "utilization",
        "makespan_s",
    ] {
        assert_eq!(wasm[figure], native[figure], "{figure}");
    }
    let fifo = json_of(&["sim", "--take", "2000", "--safe-defaults"]);
    assert_ne!(
        fifo["mean_wait_s"], wasm["mean_wait_s"],
        "the built-ins do change the schedule"
    );
}

#[test]
fn the_fairshare_interval_is_reported_and_either_way_wasm_matches_native() {
    let default = json_of(&["sim", "--take", "2000"]);
    assert_eq!(default["fairshare_interval_s"], 300);
    let every = ["sim", "--take", "2000", "--fairshare-interval", "0"];
    let wasm = json_of(&every);
    let native = json_of(&[&every[..], &["--native-policies"]].concat());
    assert_eq!(wasm["fairshare_interval_s"], 0);
    for figure in ["mean_wait_s", "mean_bounded_slowdown", "makespan_s"] {
        assert_eq!(wasm[figure], native[figure], "{figure}");
    }
}

#[test]
fn a_policy_swapped_mid_replay_is_recorded() {
    let xfactor = repo("target/policies/xfactor-priority.wasm");
    let arg = format!("priority={}", xfactor.display());
    let report = json_of(&[
        "sim",
        "--take",
        "1500",
        "--policy",
        &arg,
        "--swap-at",
        "500000",
    ]);
    let swaps = report["policies"]["priority"]["swaps"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(swaps.len(), 2);
    assert_eq!(swaps[1]["who"], "gantry sim --swap-at");
    assert!(swaps[1]["at"].as_i64().unwrap() >= 500_000);
    assert_eq!(
        report["policies"]["priority"]["versions"][1]["name"],
        "xfactor"
    );
    assert_eq!(report["unfinished"], 0);
}

/// What a policy logs while it loads reaches the person loading it at the default log
/// level (no GANTRY_LOG needed).
#[test]
fn a_policys_own_lines_at_load_show_by_default() {
    let xfactor = repo("target/policies/xfactor-priority.wasm");
    let out = gantry()
        .env_remove("GANTRY_LOG")
        .args(["sim", "-q", "--take", "50", "--policy"])
        .arg(format!("priority={}", xfactor.display()))
        .arg("--trace")
        .arg(repo("testdata/traces/lublin_256.swf"))
        .output()
        .unwrap();
    assert!(out.status.success());
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("xfactor ready: unlimited jobs count as"),
        "{err}"
    );
}

#[test]
fn policy_flags_are_checked() {
    let err = |args: &[&str]| {
        let out = gantry()
            .args(args)
            .arg("--trace")
            .arg(repo("testdata/traces/lublin_256.swf"))
            .arg("-q")
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted {args:?}");
        String::from_utf8(out.stderr).unwrap()
    };
    assert!(err(&["sim", "--policy", "speed=x.wasm"]).contains("unknown policy kind 'speed'"));
    assert!(err(&["sim", "--policy", "priority"]).contains("must be KIND=PATH"));
    let fairtree = format!(
        "priority={}",
        repo("target/policies/fairtree.wasm").display()
    );
    assert!(
        err(&["sim", "--policy", &fairtree]).contains("does not implement the 'priority' world")
    );
    assert!(err(&["sim", "--swap-at", "10"]).contains("--policy"));
    let bad = scratch("bad-weights.toml");
    std::fs::write(&bad, "weight_age = -1\n").unwrap();
    let cfg = format!("priority={}", bad.display());
    assert!(err(&["sim", "--policy-config", &cfg]).contains("refused its configuration"));
    let out = gantry()
        .args(["sim", "-q", "--trace"])
        .arg(repo("testdata/traces/lublin_256.swf"))
        .env("GANTRY_POLICY_DIR", "/nonexistent")
        .output()
        .unwrap();
    assert!(String::from_utf8(out.stderr)
        .unwrap()
        .contains("cannot read built-in policy"));
}

/// A policy that fails mid-replay: the report says so, and `--strict` exits 3 so that a
/// script never takes the fallback's figures for the policy's own.
#[test]
fn strict_fails_a_replay_whose_policy_failed() {
    let panic = format!(
        "priority={}",
        repo("target/policies/hostile-panic.wasm").display()
    );
    let run = |strict: bool| {
        let mut cmd = gantry();
        cmd.args(["sim", "-q", "--take", "300", "--policy", &panic])
            .arg("--trace")
            .arg(repo("testdata/traces/lublin_256.swf"));
        if strict {
            cmd.arg("--strict");
        }
        cmd.output().unwrap()
    };
    let lenient = run(false);
    assert!(lenient.status.success());
    let table = String::from_utf8(lenient.stdout).unwrap();
    assert!(table.contains("failures"), "{table}");
    let strict = run(true);
    assert_eq!(strict.status.code(), Some(3));
    let err = String::from_utf8(strict.stderr).unwrap();
    assert!(
        err.contains("--strict: a policy failed") && err.contains("hostile policy panics"),
        "{err}"
    );
    assert!(String::from_utf8(strict.stdout)
        .unwrap()
        .contains("failures"));
}

/// `--policy-limits` gives a slot its own deadline; bad limits are refused with the
/// reason.
#[test]
fn policy_limits_bound_a_slot() {
    let looping = format!(
        "priority={}",
        repo("target/policies/hostile-infinite-loop.wasm").display()
    );
    let report = json_of(&[
        "sim",
        "--take",
        "50",
        "--policy",
        &looping,
        "--policy-limits",
        "priority=deadline_ms=30",
    ]);
    let reason = report["policies"]["priority"]["failures"][0]["reason"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(reason.contains("timed out after 30 ms"), "{reason}");
    for (bad, says) in [
        ("priority=deadline_ms=0", "must be between"),
        ("priority=speed=3", "unknown limit 'speed'"),
        ("priority=memory_mb=lots", "not a whole number"),
    ] {
        let out = gantry()
            .args(["sim", "-q", "--policy-limits", bad, "--trace"])
            .arg(repo("testdata/traces/lublin_256.swf"))
            .output()
            .unwrap();
        assert!(!out.status.success(), "accepted {bad}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(err.contains(says), "{bad}: {err}");
    }
}
