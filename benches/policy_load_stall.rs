//! What a policy load costs everyone else: one client submits jobs back to back to a
//! real `gantryd` (Wasm built-in policies, loopback TCP) and times each acknowledgement,
//! first with nothing else going on, then while an admin loads a large priority
//! component (about 4 MB of code, `tests/large-policy` built with its `large` feature).
//! The controller compiles a component before it takes its lock, so submissions should
//! not wait for the compile; the figures say whether they do.
//!
//! `GANTRYD_BEFORE=path` measures a second build of the daemon in the same run, rounds
//! taken in turn, so both see the same machine. Each round starts a fresh daemon with an
//! empty compiled-code cache, so every load compiles.
//!
//! `GANTRY_LARGE_POLICY=1 scripts/build-policies.sh`, `cargo build --release -p
//! gantry-daemon`, then `cargo bench --bench policy_load_stall [-- --rounds N] [-- --json]`.
//! Under `cargo test` it runs one round with the small `xfactor-priority` component, as
//! a smoke pass of the whole path.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::submit::{admin_client, gantryd, job, start_with, Client};
use gantry_api::{PolicyLoadRequest, SubmitRequest};

const USAGE: &str = "\
Times job submissions to a live gantryd while a large policy component loads, against
submissions with nothing else going on.

usage: cargo bench --bench policy_load_stall [-- [--rounds N] [--json]]
  --rounds N  fresh daemons per build measured (default 5)
  --json      one JSON object per build instead of the table
environment: GANTRYD         the daemon to measure (default: beside this bench)
             GANTRYD_BEFORE  a second daemon, measured in turn with the first
             GANTRY_LARGE_COMPONENT  the component to load
                             (default target/policies/large-priority.wasm)";

/// Latencies of one phase, in milliseconds.
#[derive(Default)]
struct Phase(Vec<f64>);

impl Phase {
    fn quantile(&self, q: f64) -> f64 {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => f64::NAN,
            n => v[((n - 1) as f64 * q).round() as usize],
        }
    }
    fn max(&self) -> f64 {
        self.0.iter().copied().fold(f64::NAN, f64::max)
    }
}

/// One build's figures over all its rounds.
#[derive(Default)]
struct Build {
    idle: Phase,
    loading: Phase,
    load_s: Vec<f64>,
}

async fn submit_once(client: &mut Client, i: usize) -> f64 {
    let t = Instant::now();
    client
        .submit(SubmitRequest { job: Some(job(i)) })
        .await
        .expect("submission acknowledged");
    t.elapsed().as_secs_f64() * 1e3
}

/// One fresh daemon: idle submissions, then submissions during the load.
async fn round(gantryd: &std::path::Path, component: &[u8], into: &mut Build) {
    let dir = tempfile::tempdir().unwrap();
    let daemon = start_with(
        gantryd,
        dir.path(),
        &format!("policy_dir = \"{}\"\n", common::policy_dir().display()),
    );
    let mut client = common::submit::clients(&daemon)
        .await
        .into_iter()
        .next()
        .unwrap();
    let mut admin = admin_client(&daemon).await;
    let mut i = 0;
    // Warm up: connections, the database, the first cycles.
    for _ in 0..200 {
        submit_once(&mut client, i).await;
        i += 1;
    }
    let idle_until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < idle_until {
        into.idle.0.push(submit_once(&mut client, i).await);
        i += 1;
    }
    let request = PolicyLoadRequest {
        kind: "priority".into(),
        component: component.to_vec(),
        config: String::new(),
        no_activate: false,
    };
    let load = tokio::spawn(async move {
        let t = Instant::now();
        admin
            .policy_load(request)
            .await
            .expect("the component loads");
        t.elapsed().as_secs_f64()
    });
    while !load.is_finished() {
        into.loading.0.push(submit_once(&mut client, i).await);
        i += 1;
    }
    into.load_s.push(load.await.unwrap());
}

fn main() {
    let o = common::args::options("policy_load_stall", USAGE, 5, 1);
    let after = gantryd();
    let mut builds: Vec<(String, PathBuf)> = vec![("this build".into(), after)];
    if let Some(before) = std::env::var_os("GANTRYD_BEFORE") {
        builds.insert(0, ("GANTRYD_BEFORE".into(), PathBuf::from(before)));
    }
    let component_path = match std::env::var_os("GANTRY_LARGE_COMPONENT") {
        Some(p) => PathBuf::from(p),
        None if o.benching => common::component_path("large-priority"),
        // The smoke pass: the whole path, with a small component.
        None => common::component_path("xfactor-priority"),
    };
    let component = std::fs::read(&component_path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build it with GANTRY_LARGE_POLICY=1 scripts/build-policies.sh",
            component_path.display()
        )
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut results: Vec<Build> = builds.iter().map(|_| Build::default()).collect();
    for r in 0..o.rounds {
        for ((_, path), into) in builds.iter().zip(&mut results) {
            rt.block_on(round(path, &component, into));
        }
        if !o.json {
            eprintln!("round {}/{} done", r + 1, o.rounds);
        }
    }
    let mb = component.len() as f64 / 1e6;
    if o.json {
        for ((name, path), b) in builds.iter().zip(&results) {
            println!(
                "{}",
                serde_json::json!({
                    "build": name,
                    "gantryd": path.display().to_string(),
                    "component_mb": mb,
                    "rounds": o.rounds,
                    "idle": {"n": b.idle.0.len(), "p50_ms": b.idle.quantile(0.5), "p99_ms": b.idle.quantile(0.99), "max_ms": b.idle.max()},
                    "during_load": {"n": b.loading.0.len(), "p50_ms": b.loading.quantile(0.5), "p99_ms": b.loading.quantile(0.99), "max_ms": b.loading.max()},
                    "load_s": b.load_s,
                })
            );
        }
        return;
    }
    println!(
        "sbatch latency while a {mb:.2} MB priority component loads ({} rounds per build)",
        o.rounds
    );
    println!(
        "{:<16} {:>8} {:>9} {:>9} {:>9} | {:>8} {:>9} {:>9} {:>9} | {:>7}",
        "build",
        "idle n",
        "p50 ms",
        "p99 ms",
        "max ms",
        "load n",
        "p50 ms",
        "p99 ms",
        "max ms",
        "load s"
    );
    for ((name, _), b) in builds.iter().zip(&results) {
        let load = b.load_s.iter().sum::<f64>() / b.load_s.len().max(1) as f64;
        println!(
            "{:<16} {:>8} {:>9.2} {:>9.2} {:>9.2} | {:>8} {:>9.2} {:>9.2} {:>9.2} | {:>7.2}",
            name,
            b.idle.0.len(),
            b.idle.quantile(0.5),
            b.idle.quantile(0.99),
            b.idle.max(),
            b.loading.0.len(),
            b.loading.quantile(0.5),
            b.loading.quantile(0.99),
            b.loading.max(),
            load
        );
    }
    for ((name, _), b) in builds.iter().zip(&results) {
        println!(
            "{name}: the slowest submission during a load took {:.1}× the idle median",
            b.loading.max() / b.idle.quantile(0.5)
        );
    }
}
