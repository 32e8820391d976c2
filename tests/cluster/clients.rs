//! Real Slurm client libraries from PyPI (`tests/clients/requirements.txt`, installed by
//! `scripts/setup.sh` into `target/client-libs`), run unchanged against a live cluster:
//! they find `sbatch`, `srun`, `sacct` and `scancel` on their PATH and parse what those
//! print, exactly as they do on a Slurm cluster.

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

use crate::harness::{Cluster, Options};

/// The virtual environment's Python. Missing is a failure, not a skip: the setup script
/// installs it.
fn python() -> PathBuf {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/client-libs/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup.sh (it installs tests/clients/requirements.txt)",
        p.display()
    );
    p
}

/// Runs `tests/clients/PROGRAM` with the cluster's Slurm commands first on the PATH and
/// returns the JSON object it prints last.
fn run_client(c: &Cluster, program: &str, folder: &str) -> Value {
    let dir = c.work().join(folder);
    std::fs::create_dir_all(&dir).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/clients")
        .join(program);
    let path = format!(
        "{}:{}",
        c.slurm_bin().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new(python())
        .arg(&script)
        .arg(&dir)
        .current_dir(c.work())
        .env("PATH", path)
        .env("GANTRY_CONTROLLER", c.socket())
        .env_remove("GANTRY_TOKEN")
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} failed:\n{}\n{stdout}\ncontroller log:\n{}",
        String::from_utf8_lossy(&out.stderr),
        c.controller_log()
    );
    let last = stdout.lines().last().unwrap_or_default();
    serde_json::from_str(last).unwrap_or_else(|e| panic!("{program} printed {stdout}: {e}"))
}

/// submitit writes `#SBATCH --signal=USR2@90`, `--wckey=submitit`, `--open-mode=append`,
/// launches through `srun --unbuffered --output ... --error ...`, and polls
/// `sacct -o JobID,State,NodeList --parsable2 -j A -j B`.
#[test]
fn submitit_submits_maps_an_array_and_cancels() {
    let c = Cluster::start(Options::default());
    let out = run_client(&c, "submitit_roundtrip.py", "submitit");
    assert_eq!(out["executor"], "slurm", "{out}");
    assert_eq!(out["result"], 5, "{out}");
    assert_eq!(
        out["array_results"],
        serde_json::json!([11, 22, 33]),
        "{out}"
    );
    assert_eq!(
        out["array_states"],
        serde_json::json!(["COMPLETED", "COMPLETED", "COMPLETED"]),
        "{out}"
    );
    assert_eq!(out["cancelled_state"], "CANCELLED", "{out}");
    // What it asked for is what the job carries.
    let id: u64 = out["job_id"].as_str().unwrap().parse().unwrap();
    let shown = c.cli_ok(&["scontrol", "show", "job", &id.to_string()]);
    assert!(shown.contains("WCKey=submitit"), "{shown}");
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &id.to_string(),
        "-X",
        "-P",
        "-o",
        "JobID,WCKey",
    ]);
    assert_eq!(acct, format!("JobID|WCKey\n{id}|submitit\n"));
}

/// dask-jobqueue's SLURMCluster: two workers as batch jobs, their output files named by
/// `%J` as it asked, and a sum computed on them.
#[test]
fn dask_jobqueue_scales_to_two_workers_and_computes() {
    let c = Cluster::start(Options::default());
    let out = run_client(&c, "dask_sum.py", "dask");
    assert_eq!(out["workers"], 2, "{out}");
    assert_eq!(out["sum"], 10, "{out}");
    let ids: Vec<u64> = out["job_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "{out}");
    let want_logs: Vec<String> = ids.iter().map(|i| format!("dask-worker-{i}.err")).collect();
    let want_outs: Vec<String> = ids.iter().map(|i| format!("dask-worker-{i}.out")).collect();
    assert_eq!(out["logs"], serde_json::json!(want_logs), "{out}");
    assert_eq!(out["outputs"], serde_json::json!(want_outs), "{out}");
}
