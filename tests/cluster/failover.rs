//! Two controllers over one real PostgreSQL state (a server started by the test binary,
//! `initdb` in a temporary directory, a loopback port): one active, one standing by.
//! Killing or pausing the active one hands the cluster to the standby with nothing lost,
//! nothing run twice, and the old one fenced out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_api::client::{connect, WithToken};
use gantry_api::controller_client::ControllerClient;
use gantry_api::{JobSubmission, SubmitRequest};
use serde_json::Value;

use crate::harness::{postgres_database, Cluster, Options};

fn two_controllers(db: &str) -> Cluster {
    Cluster::start(Options {
        postgres: Some(postgres_database(db)),
        standby: true,
        ..Options::default()
    })
}

/// A job that appends its id to `runs` in the work directory: a job that ran twice shows
/// twice.
fn recorded(i: usize, c: &Cluster) -> JobSubmission {
    JobSubmission {
        name: format!("r{i}"),
        script: "#!/bin/sh\necho $SLURM_JOB_ID >> runs\n".into(),
        workdir: c.work().display().to_string(),
        output: "/dev/null".into(),
        tasks: 1,
        cpus_per_task: 1,
        time_limit_s: 300,
        partition: if i % 2 == 0 { "cpu" } else { "gpu" }.into(),
        ..Default::default()
    }
}

/// Ids of the jobs `file` (in the work directory) records, and how often each.
fn runs(c: &Cluster, file: &str) -> HashMap<u64, usize> {
    let mut n = HashMap::new();
    for line in c.read(file).lines() {
        if let Ok(id) = line.trim().parse() {
            *n.entry(id).or_default() += 1;
        }
    }
    n
}

/// The PostgreSQL URL the controllers keep their state at.
fn state_url(c: &Cluster) -> String {
    let config = std::fs::read_to_string(c.root().join("gantryd.toml")).unwrap();
    config
        .lines()
        .find_map(|l| l.strip_prefix("state = \""))
        .and_then(|l| l.strip_suffix('"'))
        .unwrap()
        .to_string()
}

fn acct(c: &Cluster) -> Vec<Value> {
    let v: Value = serde_json::from_str(&c.cli_ok(&["acct", "--json"])).unwrap();
    v["jobs"].as_array().cloned().unwrap_or_default()
}

#[test]
fn the_standby_takes_over_from_a_killed_active_controller_and_loses_nothing() {
    // 4,000 jobs on two cores: alone, so that no other test's agents starve.
    let mut c = Cluster::start(Options {
        postgres: Some(postgres_database("takeover")),
        standby: true,
        alone: true,
        ..Options::default()
    });
    let (first_pid, _) = c.controller_pids();
    // A standby answers with where the active one is.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["queue"])
        .env("GANTRY_CONTROLLER", c.standby_socket())
        .current_dir(c.work())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{err}");
    assert!(
        err.contains("standby") && err.contains(&c.tcp().split(',').next().unwrap().to_string()),
        "{err}"
    );

    // Jobs running on every node when the active controller dies keep running.
    let long: Vec<u64> = ["cpu", "cpu", "gpu"]
        .iter()
        .map(|p| c.sbatch(&["-p", p, "--wrap", "echo $SLURM_JOB_ID >> long; sleep 6"]))
        .collect();
    let started: Vec<Value> = long.iter().map(|&id| c.wait_state(id, "RUNNING")).collect();

    // Eight clients submit 4,000 jobs over TCP, each given both controllers.
    const CLIENTS: usize = 8;
    const JOBS: usize = 4000;
    let token = c.token("alice", false);
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (done, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|k| {
            let (list, trust, token) = (c.tcp(), c.trust(), token.clone());
            let jobs: Vec<JobSubmission> = (0..JOBS / CLIENTS)
                .map(|i| recorded(k * JOBS / CLIENTS + i, &c))
                .collect();
            let (acknowledged, done, failed) = (acknowledged.clone(), done.clone(), failed.clone());
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let mut client = None;
                    for job in jobs {
                        if client.is_none() {
                            match connect(&list, &trust).await {
                                Ok(ch) => {
                                    client = Some(ControllerClient::with_interceptor(
                                        ch,
                                        WithToken::new(Some(&token)).unwrap(),
                                    ))
                                }
                                Err(e) => {
                                    panic!("the clients never found an active controller: {e}")
                                }
                            }
                        }
                        let cl = client.as_mut().unwrap();
                        let asked = tokio::time::timeout(
                            Duration::from_secs(15),
                            cl.submit(SubmitRequest { job: Some(job) }),
                        )
                        .await;
                        match asked {
                            Ok(Ok(r)) => acknowledged.lock().unwrap().push(r.into_inner().job_id),
                            // Cut off with the controller: not acknowledged (it may or may
                            // not have been committed). Find the active one again.
                            _ => {
                                failed.fetch_add(1, Ordering::Relaxed);
                                client = None;
                            }
                        }
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
        })
        .collect();
    while done.load(Ordering::Relaxed) < JOBS / 2 {
        std::thread::sleep(Duration::from_millis(5));
    }
    c.kill_controller(); // SIGKILL
    let killed = Instant::now();
    for t in clients {
        t.join().expect("a client thread");
    }
    c.wait_log("gantryd-2.log", "active: serving");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let failed = failed.load(Ordering::Relaxed);
    assert!(
        acknowledged.len() + failed == JOBS && failed <= CLIENTS,
        "{} acknowledged, {failed} cut off",
        acknowledged.len()
    );
    eprintln!(
        "takeover: {} of {JOBS} acknowledged ({failed} cut off by the kill); all submitted {:.1} s after it",
        acknowledged.len(),
        killed.elapsed().as_secs_f64()
    );

    // Every acknowledged job is there and ends COMPLETED, having run exactly once.
    let mut all = acknowledged.clone();
    all.extend(&long);
    let finished = c.wait_all_done(&all);
    let bad: Vec<&Value> = finished
        .iter()
        .filter(|j| j["state"] != "COMPLETED")
        .collect();
    assert!(
        bad.is_empty(),
        "{} jobs did not complete: {:?}",
        bad.len(),
        &bad[..bad.len().min(5)]
    );
    let ran = runs(&c, "runs");
    let twice: Vec<_> = ran.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "jobs that ran twice: {twice:?}");
    let missing: Vec<_> = acknowledged
        .iter()
        .filter(|id| !ran.contains_key(id))
        .collect();
    assert!(
        missing.is_empty(),
        "acknowledged jobs that never ran: {missing:?}"
    );

    // The long jobs kept their first run: started once, before the kill, never requeued.
    let long_runs = runs(&c, "long");
    for (id, before) in long.iter().zip(&started) {
        assert_eq!(
            long_runs.get(id),
            Some(&1),
            "job {id} ran {:?} times",
            long_runs.get(id)
        );
        let after = finished.iter().find(|j| j["job_id"] == *id).unwrap();
        assert_eq!(after["state"], "COMPLETED", "{after}");
        assert_eq!(after["requeue_count"].as_u64().unwrap_or(0), 0, "{after}");
        assert_eq!(after["start_time"], before["start_time"], "{after}");
    }
    // The agents follow: every node answers the new active controller.
    for node in ["cpu01", "cpu02", "gpu01"] {
        c.wait_node_state(node, "IDLE");
    }
    assert!(first_pid.is_some());
}

#[test]
fn a_paused_active_controller_is_fenced_out_and_steps_down() {
    let c = two_controllers("fencing");
    let (old, _) = c.controller_pids();
    let old = old.unwrap() as i32;
    let before = c.sbatch(&["--wrap", "true"]);
    c.wait_done(before);
    // Paused past its lease (2 s): the standby takes over.
    // SAFETY: signalling our own child.
    unsafe { libc::kill(old, libc::SIGSTOP) };
    c.wait_log("gantryd-2.log", "active: serving");
    let during = c.sbatch(&["--wrap", "true"]);
    c.wait_done(during);
    for node in ["cpu01", "cpu02", "gpu01"] {
        c.wait_node_state(node, "IDLE");
    }
    // Resumed, it finds its lease gone or its writes refused, and stands by.
    // SAFETY: as above.
    unsafe { libc::kill(old, libc::SIGCONT) };
    c.wait_log("gantryd.log", "stepping down");
    let since = c.read_log("gantryd.log").rfind("stepping down").unwrap();
    let since_log = Instant::now();
    while !c.read_log("gantryd.log")[since..].contains("standing by") {
        assert!(
            since_log.elapsed() < Duration::from_secs(30),
            "{}\n{}",
            c.read_log("gantryd.log"),
            Cluster::process_state(old as u32)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = c.sbatch(&["--wrap", "true"]);
    c.wait_done(after);
    // `gantry admin controllers` over both: the first stands by, naming the second.
    let token = c.token("root", true);
    let (code, out, err) = c.cli_as(&token, &["admin", "controllers", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let (one, two) = (&v["controllers"][0], &v["controllers"][1]);
    assert_eq!(one["role"], "standby", "{v}");
    assert_eq!(two["role"], "active", "{v}");
    assert_eq!(two["backend"], "postgresql", "{v}");
    assert_eq!(one["active"], two["controller"], "{v}");
    assert!(two["epoch"].as_i64().unwrap() >= 2, "{v}");
    let (_, table, _) = c.cli_as(&token, &["admin", "controllers"]);
    assert!(table.starts_with("CONTROLLER"), "{table}");
    assert!(
        table.contains("standby") && table.contains("active: https://"),
        "{table}"
    );

    // Nothing diverged: the log's epochs never go back, and the state a fresh restore
    // of the log gives is what the active controller shows.
    let url = state_url(&c);
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let epochs: Vec<i64> = db
        .query("SELECT epoch FROM log ORDER BY seq", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(epochs.windows(2).all(|w| w[0] <= w[1]), "{epochs:?}");
    assert!(
        epochs.last() > epochs.first(),
        "a takeover raised the epoch: {epochs:?}"
    );
    let shown: Vec<(Value, Value)> = acct(&c)
        .iter()
        .map(|j| (j["job_id"].clone(), j["state"].clone()))
        .collect();
    assert_eq!(shown.len(), 3, "{shown:?}");
    // Restart whichever is active now: the other takes over, restoring from the log.
    let (_, second) = c.controller_pids();
    // SAFETY: as above.
    unsafe { libc::kill(second.unwrap() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = c.cli(&["acct", "--json"]);
        if code == 0 {
            let v: Value = serde_json::from_str(&out).unwrap();
            let restored: Vec<(Value, Value)> = v["jobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|j| (j["job_id"].clone(), j["state"].clone()))
                .collect();
            if c.read_log("gantryd.log").matches("active: serving").count() >= 2 {
                assert_eq!(restored, shown);
                break;
            }
        }
        assert!(Instant::now() < deadline, "{}", c.read_log("gantryd.log"));
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The active controller's database connections cut (as by a network partition between
/// it and the database): it cannot renew its lease, so it steps down, and the standby —
/// whose own connections were cut just before, and which connected again — takes over;
/// nothing committed is lost.
#[test]
fn the_standby_takes_over_when_the_active_one_loses_its_database() {
    let c = two_controllers("cut");
    let before = c.sbatch(&["--wrap", "true"]);
    c.wait_done(before);
    let (old, standby) = c.controller_pids();
    let url = state_url(&c);
    let mut db = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let mut cut = |pid: Option<u32>| -> i64 {
        db.query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = $1",
            &[&format!("gantryd {}", pid.unwrap())],
        )
        .unwrap()
        .get(0)
    };
    // The standby's first: it connects again, and goes on standing by.
    assert!(cut(standby) >= 2, "the standby's lease and log connections");
    c.wait_log("gantryd-2.log", "connecting again");
    assert!(cut(old) >= 2, "the active one's lease and log connections");
    c.wait_log("gantryd-2.log", "active: serving");
    c.wait_log("gantryd.log", "stepping down");
    let after = c.sbatch(&["--wrap", "true"]);
    assert_eq!(c.wait_done(after)["state"], "COMPLETED");
    let shown: Vec<u64> = acct(&c)
        .iter()
        .filter_map(|j| j["job_id"].as_u64())
        .collect();
    assert_eq!(shown, vec![before, after]);
}

/// A standby acts for nobody: a user's submission, cancellation or node drain sent to it
/// is answered UNAVAILABLE (naming the active controller) and changes nothing; and the
/// active controller says who it is only to an authenticated caller.
#[test]
fn a_standby_acts_for_nobody_and_leadership_needs_a_token() {
    let c = two_controllers("refuses");
    let token = c.token("mallory", false);
    let standby = c.tcp().split(',').nth(1).unwrap().to_string();
    let active = c.tcp().split(',').next().unwrap().to_string();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = gantry_api::client::connect(&standby, &c.trust())
            .await
            .unwrap();
        let mut s =
            ControllerClient::with_interceptor(channel, WithToken::new(Some(&token)).unwrap());
        let refused = [
            s.submit(SubmitRequest {
                job: Some(recorded(0, &c)),
            })
            .await
            .map(|_| ()),
            s.cancel(gantry_api::CancelRequest {
                job_ids: vec![1],
                ..Default::default()
            })
            .await
            .map(|_| ()),
            s.set_node_state(gantry_api::SetNodeStateRequest {
                node: "cpu01".into(),
                state: "drain".into(),
                reason: "taken".into(),
            })
            .await
            .map(|_| ()),
        ];
        for r in refused {
            let err = r.expect_err("a standby acts for nobody");
            assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
            assert_eq!(
                err.metadata()
                    .get("gantry-active")
                    .and_then(|v| v.to_str().ok()),
                Some(active.as_str()),
                "{err:?}"
            );
        }
        let channel = gantry_api::client::connect(&active, &c.trust())
            .await
            .unwrap();
        let err = ControllerClient::new(channel)
            .leadership(gantry_api::LeadershipRequest {})
            .await
            .expect_err("no token over TCP");
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    });
    assert!(acct(&c).is_empty(), "nothing was submitted");
    c.wait_node_state("cpu01", "IDLE");
}
