//! Restart: how long `gantryd` takes from its start to serving with N finished jobs in
//! its log (each a submission, a start and an end), the log written with each
//! submission's environment inline (as schema 0 wrote it) or kept once (schema 1), in
//! SQLite; and the same log copied into a real PostgreSQL server on loopback (a
//! throwaway one, started here); and the state's size per finished job. Without a
//! snapshot a restart replays the whole log, so its time grows with history; then the
//! same states after `gantry admin snapshot --retention 0` (every finished job moved to
//! the accounting table, the log compacted), where it grows with live work only, and
//! filtered `sacct` queries over the accounting table.
//!
//! The jobs belong to 100 users (`user0` …); one in a thousand failed; job `i` is
//! submitted, started and ended at second `i` (rounded down to a thousand).
//!
//! `GANTRY_RESTART_JOBS` sets N (default 20,000 under `cargo bench`, 500 for the smoke
//! pass under `cargo test`); `GANTRY_RESTART_SKIP_INLINE=1` leaves out the schema-0 log
//! (about 5 KB per job: 5 GB at a million). Needs the daemon built with the same profile: `cargo build
//! --release -p gantry-daemon`, then `cargo bench --bench restart`.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::submit::{gantryd, start_on, start_with};
use criterion::{criterion_group, criterion_main, Criterion};
use gantry_daemon::logged;
use gantry_daemon::store::{Entry, Launch, Store, Usage};
use gantry_kernel::job::{Allocation, JobOutcome, JobSpec, NodeAllocation};
use gantry_kernel::{JobId, ResourceRequest};

/// A login shell's environment: about 3 KB, as a submission carries.
fn environment() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = (0..60)
        .map(|i| {
            (
                format!("VARIABLE_{i:02}"),
                format!("/opt/site/tool-{i}/bin:{}", "x".repeat(24)),
            )
        })
        .collect();
    env.sort();
    env
}

/// Job `id`'s three entries: submitted, started on one core of a node, ended.
fn job_entries(id: u64, env: &[(String, String)]) -> [Entry; 3] {
    let mut cores = fixedbitset::FixedBitSet::with_capacity(128);
    cores.insert(0);
    let allocation = Allocation {
        nodes: vec![NodeAllocation {
            node: gantry_kernel::cluster::NodeId((id % 64) as u32),
            tasks: 1,
            cores,
            memory_mb: 0,
            gpus: 0,
            gres: Vec::new(),
        }],
    };
    let spec = JobSpec::new(
        "job",
        format!("user{}", id % 100),
        ResourceRequest::default(),
    );
    let exit = i32::from(id % 1000 == 0);
    [
        Entry::Submitted {
            first: JobId(id),
            count: 1,
            spec: Box::new((&spec).into()),
            launch: Box::new(Launch {
                script: "#!/bin/bash\nsrun ./train --epochs 10\n".into(),
                workdir: "/home/bench/project".into(),
                env: env.to_vec(),
                output: "slurm-%j.out".into(),
                uid: 1000,
                gid: 1000,
                ..Launch::default()
            }),
        },
        Entry::Started {
            job: JobId(id),
            allocation: (&allocation).into(),
        },
        Entry::Ended {
            job: JobId(id),
            outcome: logged::Outcome::from(JobOutcome::Exited(exit)),
            usage: Usage::default(),
            message: String::new(),
        },
    ]
}

/// Writes `n` finished jobs to a new state database at `path`: through the store (the
/// environment kept once), or with every entry as schema 0 wrote it (inline).
fn write_state(path: &Path, n: u64, inline: bool) {
    let mut store = Store::open(path).unwrap();
    let env = environment();
    if inline {
        drop(store);
        let mut conn = rusqlite::Connection::open(path).unwrap();
        let tx = conn.transaction().unwrap();
        {
            let mut insert = tx
                .prepare("INSERT INTO log (time, entry) VALUES (?1, ?2)")
                .unwrap();
            for id in 1..=n {
                for e in job_entries(id, &env) {
                    insert
                        .execute(rusqlite::params![
                            id as i64,
                            serde_json::to_string(&e).unwrap()
                        ])
                        .unwrap();
                }
            }
        }
        tx.commit().unwrap();
        return;
    }
    for chunk in (1..=n).collect::<Vec<_>>().chunks(1000) {
        let entries: Vec<Entry> = chunk.iter().flat_map(|&id| job_entries(id, &env)).collect();
        store.append(chunk[0] as i64, &entries).unwrap();
    }
}

fn restart(c: &mut Criterion) {
    let benching = std::env::args().any(|a| a == "--bench");
    let n: u64 = std::env::var("GANTRY_RESTART_JOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benching { 20_000 } else { 500 });
    let daemon = gantryd();
    let mut g = c.benchmark_group(format!("gantryd restart, {n} finished jobs in the log"));
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(if benching { 20 } else { 1 }));
    let skip_inline = std::env::var_os("GANTRY_RESTART_SKIP_INLINE").is_some();
    for (label, inline) in [
        ("environment inline (schema 0)", true),
        ("environment kept once (schema 1)", false),
    ] {
        if inline && skip_inline {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state.db");
        write_state(&state, n, inline);
        let bytes = std::fs::metadata(&state).unwrap().len();
        println!(
            "{label}: {} bytes per finished job ({:.1} MB for {n})",
            bytes / n,
            bytes as f64 / 1e6
        );
        time_starts(&mut g, label, || start_with(&daemon, dir.path(), CONFIG));
        if inline {
            continue;
        }
        // The same log in PostgreSQL, copied as `gantryd copy-state` copies it.
        let server = gantry_test_postgres::Server::start().unwrap();
        let url = server.database("restart").unwrap();
        let lease = gantry_daemon::store::postgres::Lease::connect(&url).unwrap();
        let epoch = lease
            .try_acquire("bench", "", Duration::from_secs(600))
            .unwrap()
            .unwrap();
        let mut to = Store::open_fenced(&url, epoch).unwrap();
        Store::open(&state)
            .unwrap()
            .copy_to(&mut to, |_| {})
            .unwrap();
        drop(to);
        lease.release(epoch).unwrap();
        let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
        let bytes: i64 = db
            .query_one("SELECT pg_database_size(current_database())", &[])
            .unwrap()
            .get(0);
        println!(
            "PostgreSQL (schema 1): {} bytes per finished job ({:.1} MB for {n}, the whole database)",
            bytes as u64 / n,
            bytes as f64 / 1e6
        );
        let pg_dir = tempfile::tempdir().unwrap();
        let line = format!("state = \"{url}\"");
        time_starts(&mut g, "PostgreSQL, environment kept once", || {
            start_on(&daemon, pg_dir.path(), &line, CONFIG)
        });

        // After a snapshot: every finished job in the accounting table.
        let d = start_with(&daemon, dir.path(), CONFIG);
        snapshot_all(&d, "SQLite");
        sacct_queries(&d, n, "SQLite");
        drop(d);
        let bytes = std::fs::metadata(&state).unwrap().len();
        println!(
            "SQLite after the snapshot: {} bytes per finished job ({:.1} MB; not vacuumed)",
            bytes / n,
            bytes as f64 / 1e6
        );
        time_starts(&mut g, "SQLite after a snapshot", || {
            start_with(&daemon, dir.path(), CONFIG)
        });
        let d = start_on(&daemon, pg_dir.path(), &line, CONFIG);
        snapshot_all(&d, "PostgreSQL");
        sacct_queries(&d, n, "PostgreSQL");
        drop(d);
        let bytes: i64 = db
            .query_one("SELECT pg_database_size(current_database())", &[])
            .unwrap()
            .get(0);
        println!(
            "PostgreSQL after the snapshot: {} bytes per finished job ({:.1} MB, the whole database; not vacuumed)",
            bytes as u64 / n,
            bytes as f64 / 1e6
        );
        time_starts(&mut g, "PostgreSQL after a snapshot", || {
            start_on(&daemon, pg_dir.path(), &line, CONFIG)
        });
    }
    g.finish();
}

/// Times `start` (a gantryd from its start to serving) as the benchmark `label`; each
/// daemon is stopped cleanly before the next starts.
fn time_starts(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    label: &str,
    start: impl Fn() -> common::submit::Daemon,
) {
    g.bench_function(label, |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let d = start();
                took += t.elapsed();
                drop(d);
            }
            took
        })
    });
}

/// The daemon's configuration: native policies, no periodic snapshot (the bench takes
/// them).
const CONFIG: &str = "native_policies = true\nsnapshot_interval_s = 0\n";

/// `gantry admin snapshot --retention 0` until no finished job is left in memory (one
/// snapshot forgets at most 200,000).
fn snapshot_all(d: &common::submit::Daemon, backend: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut c = common::submit::admin_client(d).await;
        let t = Instant::now();
        let mut forgotten = 0;
        loop {
            let r = c
                .snapshot(gantry_api::SnapshotRequest {
                    retention_s: Some(0),
                })
                .await
                .unwrap()
                .into_inner();
            forgotten += r.forgotten;
            if r.forgotten == 0 {
                break;
            }
        }
        println!(
            "{backend}: snapshots forgot {forgotten} finished jobs in {:.2} s",
            t.elapsed().as_secs_f64()
        );
    });
}

/// Filtered `sacct` queries (as the API streams them) over the accounting table.
fn sacct_queries(d: &common::submit::Daemon, n: u64, backend: &str) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let recent = n as i64 - 3_600;
    let queries = [
        (
            "the last hour (-S)",
            gantry_api::AccountingRequest {
                window_start: recent,
                ..Default::default()
            },
        ),
        (
            "one user's jobs, all history (-u)",
            gantry_api::AccountingRequest {
                users: vec!["user7".into()],
                ..Default::default()
            },
        ),
        (
            "failed jobs, all history (-s F)",
            gantry_api::AccountingRequest {
                states: vec!["FAILED".into()],
                ..Default::default()
            },
        ),
        (
            "one user's jobs in the last hour (-u -S)",
            gantry_api::AccountingRequest {
                users: vec!["user7".into()],
                window_start: recent,
                ..Default::default()
            },
        ),
    ];
    rt.block_on(async {
        let mut c = common::submit::admin_client(d).await;
        for (what, q) in queries {
            let t = Instant::now();
            let mut stream = c.accounting(q).await.unwrap().into_inner();
            let mut records = 0;
            while let Some(page) = stream.message().await.unwrap() {
                records += page.records.len();
            }
            println!(
                "{backend}: sacct {what}: {records} jobs in {:.0} ms",
                t.elapsed().as_secs_f64() * 1e3
            );
        }
    });
}

criterion_group!(benches, restart);
criterion_main!(benches);
