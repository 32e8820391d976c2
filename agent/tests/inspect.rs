//! `--discover` and `--describe-node` look at the hardware with no configuration, key or
//! controller, and report at least the memory the kernel says the machine has.

use std::process::Command;

fn agent(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gantry-agent"))
        .args(args)
        .env("GANTRY_LOG", "warn")
        .output()
        .expect("gantry-agent runs")
}

fn mem_total_mb() -> u64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").expect("/proc/meminfo");
    let line = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .expect("MemTotal line");
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        >> 10
}

#[test]
fn discover_needs_no_configuration() {
    let out = agent(&["--discover"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let found: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(found["sockets"].as_u64().unwrap() >= 1);
    assert!(found["cores_per_numa"].as_u64().unwrap() >= 1);
    assert!(
        found["memory_mb"].as_u64().unwrap() >= mem_total_mb(),
        "reported {} MiB, MemTotal {} MiB",
        found["memory_mb"],
        mem_total_mb()
    );
}

#[test]
fn describe_node_needs_no_configuration() {
    let out = agent(&["--describe-node", "--node", "probe1"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("[[node_type]]\nname = \"probe1\""), "{text}");
    assert!(text.contains("names = \"probe1\""), "{text}");
}

#[test]
fn a_named_configuration_that_is_missing_is_an_error() {
    let out = agent(&["--discover", "--config", "/nonexistent/agent.toml"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("/nonexistent/agent.toml"), "{err}");
}
