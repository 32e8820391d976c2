//! Takeover: how long after `kill -9` of the active `gantryd` the standby serves, over a
//! real PostgreSQL server on loopback (a throwaway one, started here). Each round kills
//! whichever controller is active, times until the other answers as the active one, and
//! starts the killed one again as the new standby. The log holds 2,000 pending jobs, so
//! the time includes a restore of them.
//!
//! `cargo bench --bench takeover` runs five rounds and prints each and the median; the
//! smoke pass under `cargo test` runs one. The lease is gantryd's default (3 s): a
//! standby may take over only once it has run out, so that is most of the time.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::submit::{clients, configure, gantryd, spawn, start_on, submit_all, Daemon};

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let rounds = if benching { 5 } else { 1 };
    let server = gantry_test_postgres::Server::start().unwrap();
    let url = server.database("takeover").unwrap();
    let state = format!("state = \"{url}\"");
    let daemon = gantryd();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let rt = tokio::runtime::Runtime::new().unwrap();

    let mut active: Daemon = start_on(&daemon, dirs[0].path(), &state, "native_policies = true\n");
    let cl = rt.block_on(clients(&active));
    rt.block_on(submit_all(&cl, 2000));
    drop(cl);
    // The second one's configuration (its own port), written by a start that stands by.
    let mut other = Some(start_standby(&daemon, dirs[1].path(), &state));
    let mut times = Vec::new();
    for round in 0..rounds {
        let next = other.take().unwrap();
        // Let the standby follow the log and settle.
        std::thread::sleep(Duration::from_secs(2));
        let _ = active.child.kill(); // SIGKILL
        let killed = Instant::now();
        next.wait_serving(killed + Duration::from_secs(120));
        let took = killed.elapsed();
        println!("takeover {}: {:.2} s", round + 1, took.as_secs_f64());
        times.push(took);
        let _ = active.child.wait();
        // The killed one comes back as the standby, in its own directory.
        let dir = if round % 2 == 0 {
            dirs[0].path()
        } else {
            dirs[1].path()
        };
        other = Some(start_standby(&daemon, dir, &state));
        active = next;
    }
    times.sort();
    println!(
        "takeover after kill -9 of the active controller (lease 3 s, 2,000 jobs in the log): median {:.2} s of {rounds}, min {:.2} s, max {:.2} s",
        times[times.len() / 2].as_secs_f64(),
        times[0].as_secs_f64(),
        times[times.len() - 1].as_secs_f64()
    );
}

/// A standby: a `gantryd` on `state` in `dir` that is not serving yet, as a [`Daemon`]
/// (its address and tokens) whose process stands by.
fn start_standby(daemon: &Path, dir: &Path, state: &str) -> Daemon {
    configure(dir, state, "native_policies = true\n", |dir| {
        spawn(daemon, dir)
    })
}
