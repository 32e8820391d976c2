//! Durable submissions to a real `gantryd` over gRPC on loopback TCP, from concurrent
//! clients: each acknowledged job is committed to the state database (group commit) —
//! an SQLite file, and a real PostgreSQL server on loopback (a throwaway one, started
//! here: Debian's binaries, as `scripts/setup.sh` installs them).
//! Also reports the controller's resident memory per pending job, and the CPU time the
//! controller and the clients spent per submission.
//!
//! Needs the daemon built with the same profile: `cargo build --release -p
//! gantry-daemon`, then `cargo bench --bench submit` (`GANTRYD=path` measures another
//! build of the daemon). No agents run, so every job stays pending and the controller's
//! cycles walk a growing queue while it accepts more.

mod common;

use common::submit::{clients, cpu_s, gantryd, resident_kib, start, start_on, submit_all, CLIENTS};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

fn submissions(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let cl = rt.block_on(clients(&daemon));

    let mut g = c.benchmark_group(format!(
        "durable submissions over gRPC (loopback TCP, {CLIENTS} clients)"
    ));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("one job per request, SQLite", |b| {
        b.iter_custom(|iters| rt.block_on(submit_all(&cl, iters)))
    });
    let server = gantry_test_postgres::Server::start().unwrap();
    let url = server.database("submit").unwrap();
    let pg_dir = tempfile::tempdir().unwrap();
    let pg_daemon = start_on(
        &gantryd(),
        pg_dir.path(),
        &format!("state = \"{url}\""),
        "native_policies = true\n",
    );
    let pg_clients = rt.block_on(clients(&pg_daemon));
    g.bench_function("one job per request, PostgreSQL", |b| {
        b.iter_custom(|iters| rt.block_on(submit_all(&pg_clients, iters)))
    });
    g.finish();
    drop(pg_clients);
    drop(pg_daemon);

    // Memory: resident growth over 100,000 more pending jobs.
    let pid = daemon.child.id();
    let before = resident_kib(pid);
    let (daemon_cpu, client_cpu) = (cpu_s(&pid.to_string()), cpu_s("self"));
    let n = 100_000;
    let took = rt.block_on(submit_all(&cl, n));
    let after = resident_kib(pid);
    let per_job_us = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "controller memory: {:.0} bytes per pending job ({} KiB → {} KiB over {n} jobs, submitted at {:.0} jobs/s)",
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
        before,
        after,
        n as f64 / took.as_secs_f64()
    );
    // CPU time per job does not depend on what else shares the machine the way
    // throughput does: it says where the cores went.
    println!(
        "CPU per submission over those jobs: controller {:.0} µs, the {CLIENTS} clients {:.0} µs",
        per_job_us(cpu_s(&pid.to_string()) - daemon_cpu),
        per_job_us(cpu_s("self") - client_cpu),
    );
}

criterion_group!(benches, submissions);
criterion_main!(benches);
