//! Snapshots through the controller alone (no network, no agents): finished jobs leave
//! memory for the accounting table, the log keeps only what concerns live work, and a
//! restore from the snapshot and the kept entries gives the same live state — the same
//! jobs, the same fairshare usage, the same next job id — as the controller had.

use gantry_api as api;
use gantry_daemon::controller::{Caller, Controller, Limits, Settings};
use gantry_daemon::store::{AccountingFilter, Store};
use gantry_kernel::{ClusterDescription, JobId, Scheduler, SchedulerConfig};

const CLUSTER: &str = r#"
[[node_type]]
name = "cpu"
sockets = 1
numa_per_socket = 1
cores_per_numa = 4
memory = "8G"

[[nodes]]
names = "n[1-2]"
type = "cpu"

[[partition]]
name = "p"
nodes = ["n[1-2]"]
default = true
"#;

fn controller(state: &std::path::Path, now: i64) -> Controller {
    let cluster = ClusterDescription::from_toml(CLUSTER)
        .and_then(|d| d.build())
        .unwrap();
    let sched = Scheduler::new(cluster, SchedulerConfig::default(), Default::default());
    let settings = Settings {
        cluster_name: "test".into(),
        admins: Vec::new(),
        default_account: Some("default".into()),
        heartbeat_s: 5,
        node_timeout_s: 30,
        kill_grace_s: 10,
        finished_retention_s: 300,
        limits: Limits {
            max_script_bytes: 1 << 20,
            max_dependencies: 10,
        },
    };
    Controller::open(sched, Store::open(state).unwrap(), settings, None, now).unwrap()
}

fn user(name: &str) -> Caller {
    Caller {
        user: name.into(),
        uid: 1000,
        gid: 1000,
        admin: false,
    }
}

fn submit(c: &mut Controller, who: &str, extra: api::JobSubmission, now: i64) -> Vec<JobId> {
    let (ids, ticket) = c
        .submit(
            &user(who),
            api::JobSubmission {
                name: "j".into(),
                script: "#!/bin/bash\nsleep 100\n".into(),
                workdir: "/tmp".into(),
                tasks: 1,
                cpus_per_task: 1,
                ..extra
            },
            now,
        )
        .unwrap();
    c.journal().wait(ticket).unwrap();
    ids
}

fn end(c: &mut Controller, job: JobId, exit_code: i32, now: i64) {
    let node = c
        .job_info(c.scheduler().job(job).unwrap())
        .node_list
        .clone();
    c.report(
        &api::JobReport {
            node,
            job_id: job.0,
            run: 0,
            state: if exit_code == 0 {
                "COMPLETED"
            } else {
                "FAILED"
            }
            .into(),
            exit_code: Some(exit_code),
            user_cpu_s: 1.5,
            ..Default::default()
        },
        now,
    )
    .unwrap();
}

fn heartbeats(c: &mut Controller, nodes: &[&str], now: i64) {
    for node in nodes {
        let req = api::HeartbeatRequest {
            node: node.to_string(),
            ..Default::default()
        };
        c.heartbeat(&req, now).unwrap();
    }
}

/// What a restore must give back: every job in memory as `scontrol show job` shows it,
/// the fairshare usage, and the next id.
type LiveState = (Vec<api::JobInfo>, Vec<(String, Option<String>, u64)>, JobId);

fn live_state(c: &Controller, now: i64) -> LiveState {
    let s = c.scheduler();
    // Priorities and pending reasons are a cycle's output, not the log's.
    let jobs = s
        .jobs_from(0)
        .map(|(_, j)| api::JobInfo {
            priority: 0,
            reason: String::new(),
            ..c.job_info(j)
        })
        .collect();
    let usage = s
        .share_rows(now)
        .into_iter()
        .map(|r| (r.account, r.user, r.raw_usage.round() as u64))
        .collect();
    (jobs, usage, s.next_job_id())
}

#[test]
fn a_restore_from_a_snapshot_gives_back_the_live_state_and_sacct_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let mut c = controller(&state, 0);
    for node in ["n1", "n2"] {
        c.register(
            &api::RegisterRequest {
                node: node.into(),
                topology: None,
                agent_version: "test".into(),
            },
            0,
        )
        .unwrap();
    }
    let _n1 = c.attach("n1").unwrap();
    let _n2 = c.attach("n2").unwrap();

    // Six jobs run and finish (one fails); a seventh is cancelled waiting.
    let mut finished = Vec::new();
    for i in 0..6 {
        let who = if i % 2 == 0 { "alice" } else { "bob" };
        finished.extend(submit(&mut c, who, Default::default(), 10));
    }
    c.cycle(10).unwrap();
    for (i, &id) in finished.iter().enumerate() {
        end(&mut c, id, i32::from(i == 3), 100 + i as i64);
    }
    let cancelled = submit(
        &mut c,
        "alice",
        api::JobSubmission {
            hold: true,
            ..Default::default()
        },
        110,
    )[0];
    c.cancel(&user("alice"), &[cancelled.0], &[], 111).unwrap();
    // Still live: a long job, a job waiting on it and on a finished one (so that one is
    // kept), and an array with one task left of three.
    let long = submit(&mut c, "bob", Default::default(), 120)[0];
    let waiting = submit(
        &mut c,
        "alice",
        api::JobSubmission {
            dependency: format!("afterok:{}:{long}", finished[0]),
            ..Default::default()
        },
        121,
    )[0];
    let array = submit(
        &mut c,
        "alice",
        api::JobSubmission {
            array: "0-2".into(),
            ..Default::default()
        },
        122,
    );
    heartbeats(&mut c, &["n1", "n2"], 125);
    c.cycle(130).unwrap();
    end(&mut c, array[0], 0, 140);
    end(&mut c, array[1], 0, 141);
    assert!(c.scheduler().job(waiting).unwrap().state.is_waiting());

    let now = 1000;
    let before = live_state(&c, now);
    let work = c.take_snapshot(now, 300).unwrap();
    assert_eq!(
        work.forgotten(),
        6,
        "five finished jobs and the cancelled one"
    );
    let done = work.write().unwrap();
    assert_eq!(done.accounted, 6);
    assert!(done.deleted >= 6 * 2, "{done:?}");
    for id in finished.iter().skip(1).chain([&cancelled]) {
        assert!(c.scheduler().job(*id).is_none(), "job {id} forgotten");
    }
    for id in [finished[0], long, waiting, array[0], array[1], array[2]] {
        assert!(c.scheduler().job(id).is_some(), "job {id} kept");
    }
    // Forgetting changes nothing a restore must give back but what is forgotten.
    let after = live_state(&c, now);
    assert_eq!(after.1, before.1, "fairshare usage unchanged");
    assert_eq!(after.2, before.2, "next job id unchanged");
    drop(c);

    let mut store = Store::open(&state).unwrap();
    let rows = store
        .accounting(&AccountingFilter {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    let ids: Vec<u64> = rows.iter().map(|r| r.0).collect();
    let mut expected: Vec<u64> = finished.iter().skip(1).map(|j| j.0).collect();
    expected.push(cancelled.0);
    assert_eq!(ids, expected);
    let failed = store
        .accounting(&AccountingFilter {
            states: vec!["FAILED".into()],
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(
        failed.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![finished[3].0]
    );
    let record: api::AccountingRecord = prost::Message::decode(&failed[0].1[..]).unwrap();
    let info = record.job.unwrap();
    assert_eq!((info.state.as_str(), info.user.as_str()), ("FAILED", "bob"));
    assert_eq!(record.user_cpu_s, 1.5);
    let bob = store
        .accounting_usage(0, 2000)
        .unwrap()
        .into_iter()
        .find(|u| u.user == "bob")
        .unwrap();
    assert_eq!(bob.jobs, 3, "bob's three finished jobs");
    drop(store);

    // The restore reads the snapshot and the kept entries: the same live state.
    let mut c = controller(&state, now);
    assert_eq!(live_state(&c, now), after);
    // New work goes on from there: the next id, the dependency still waits.
    let next = submit(&mut c, "alice", Default::default(), now + 1)[0];
    assert_eq!(next, after.2);
    heartbeats(&mut c, &["n1"], now + 2);
    end(&mut c, long, 0, now + 2);
    c.cycle(now + 3).unwrap();
    assert!(
        c.scheduler().running().contains(&waiting),
        "its dependencies are met once the long job completes"
    );
}
