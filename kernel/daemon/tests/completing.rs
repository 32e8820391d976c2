//! COMPLETING through the controller alone (no network, no agents): which words from a
//! node end a completing run, which do not, and that the log brings the same back.

use gantry_api as api;
use gantry_daemon::controller::{Caller, Controller, Limits, Settings};
use gantry_daemon::store::Store;
use gantry_kernel::{ClusterDescription, JobId, Scheduler, SchedulerConfig};

const CLUSTER: &str = r#"
[[node_type]]
name = "cpu"
sockets = 1
numa_per_socket = 1
cores_per_numa = 4
memory = "8G"

[[nodes]]
names = "n1"
type = "cpu"

[[partition]]
name = "p"
nodes = ["n1"]
default = true
"#;

const HEARTBEAT_S: u32 = 5;

fn controller(state: &std::path::Path) -> Controller {
    let cluster = ClusterDescription::from_toml(CLUSTER)
        .and_then(|d| d.build())
        .unwrap();
    let config = SchedulerConfig {
        hold_until_processes_end: true,
        ..SchedulerConfig::default()
    };
    let sched = Scheduler::new(cluster, config, Default::default());
    let settings = Settings {
        cluster_name: "test".into(),
        admins: Vec::new(),
        default_account: Some("default".into()),
        heartbeat_s: HEARTBEAT_S,
        node_timeout_s: 30,
        kill_grace_s: 10,
        finished_retention_s: 300,
        limits: Limits {
            max_script_bytes: 1 << 20,
            max_dependencies: 10,
        },
    };
    Controller::open(sched, Store::open(state).unwrap(), settings, None, 0).unwrap()
}

fn alice() -> Caller {
    Caller {
        user: "alice".into(),
        uid: 1000,
        gid: 1000,
        admin: false,
    }
}

/// What the controller sends n1.
type Commands = tokio::sync::mpsc::UnboundedReceiver<api::AgentCommand>;

/// A controller over the log at `state` whose node n1 has registered and listens.
fn with_node(state: &std::path::Path) -> (Controller, Commands) {
    let mut c = controller(state);
    c.register(
        &api::RegisterRequest {
            node: "n1".into(),
            topology: None,
            agent_version: "test".into(),
        },
        0,
    )
    .unwrap();
    let commands = c.attach("n1").unwrap();
    (c, commands)
}

/// A job that fills n1, acknowledged (its log entry committed); its id.
fn submit(c: &mut Controller, now: i64) -> JobId {
    let (ids, ticket) = c
        .submit(
            &alice(),
            api::JobSubmission {
                name: "j".into(),
                script: "#!/bin/bash\nsleep 100\n".into(),
                workdir: "/tmp".into(),
                tasks: 4,
                cpus_per_task: 1,
                ..Default::default()
            },
            now,
        )
        .unwrap();
    c.journal().wait(ticket).unwrap();
    ids[0]
}

/// A job that fills n1, started; its id.
fn running_job(c: &mut Controller, now: i64) -> JobId {
    let id = submit(c, now);
    c.cycle(now).unwrap();
    assert!(c.scheduler().running().contains(&id));
    id
}

fn report(job: JobId, state: &str) -> api::JobReport {
    api::JobReport {
        node: "n1".into(),
        job_id: job.0,
        run: 0,
        state: state.into(),
        ..Default::default()
    }
}

fn shown(c: &Controller, id: JobId) -> &'static str {
    c.shown_state(c.scheduler().job(id).unwrap())
}

#[test]
fn a_completing_run_ends_with_its_nodes_end_report_and_not_with_a_notice() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let (mut c, _commands) = with_node(&state);
    let a = running_job(&mut c, 1);
    c.cancel(&alice(), &[a.0], &[], 2).unwrap();
    assert_eq!(shown(&c, a), "COMPLETING");
    // A time-limit notice that crossed the cancel on the wire is not an end.
    c.report(&report(a, "TIMEOUT_ENDING"), 3).unwrap();
    assert_eq!(shown(&c, a), "COMPLETING", "a notice released the run");
    // Nor is a heartbeat that still lists it alive.
    let alive = api::HeartbeatRequest {
        node: "n1".into(),
        jobs: vec![api::RunningJob {
            job_id: a.0,
            alive: true,
            run: 0,
            ..Default::default()
        }],
        ..Default::default()
    };
    assert!(!c.heartbeat(&alive, 4).unwrap());
    assert_eq!(shown(&c, a), "COMPLETING");
    // The next job waits for the cores.
    let b = submit(&mut c, 5);
    c.cycle(6).unwrap();
    assert!(!c.scheduler().running().contains(&b));
    // The node's end report ends it; the next job starts.
    c.report(&report(a, "CANCELLED"), 7).unwrap();
    assert_eq!(shown(&c, a), "CANCELLED");
    c.cycle(8).unwrap();
    assert!(c.scheduler().running().contains(&b));
    // The log says the same after a restart.
    drop(c);
    let c = controller(&state);
    assert_eq!(shown(&c, a), "CANCELLED");
    assert!(c.scheduler().completing().is_empty());
    assert!(c.scheduler().running().contains(&b));
}

#[test]
fn a_node_that_stops_listing_a_completing_run_ends_it_after_two_heartbeats() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, _commands) = with_node(&dir.path().join("state.db"));
    let a = running_job(&mut c, 1);
    c.cancel(&alice(), &[a.0], &[], 10).unwrap();
    let silent = api::HeartbeatRequest {
        node: "n1".into(),
        ..Default::default()
    };
    // The cancel may not have reached the node yet: not an end so soon.
    assert!(!c
        .heartbeat(&silent, 10 + 2 * HEARTBEAT_S as i64 - 1)
        .unwrap());
    assert_eq!(shown(&c, a), "COMPLETING");
    assert!(c.heartbeat(&silent, 10 + 2 * HEARTBEAT_S as i64).unwrap());
    assert_eq!(shown(&c, a), "CANCELLED");
}

/// The launches in `commands` so far, by job.
fn launches(commands: &mut Commands) -> Vec<u64> {
    let mut out = Vec::new();
    while let Ok(cmd) = commands.try_recv() {
        if let Some(api::agent_command::What::Launch(l)) = cmd.what {
            out.extend(l.job.map(|j| j.job_id));
        }
    }
    out
}

/// A launch the node has not confirmed yet is sent again when its heartbeat lacks the
/// job two heartbeats after it was sent (a heartbeat sent before the launch arrived
/// crosses it), but only while the job still runs: a job cancelled (or ended otherwise)
/// before its node listed it must never be launched again, or it would run after its
/// end.
#[test]
fn a_job_stopped_before_its_node_confirmed_it_is_never_launched_again() {
    let dir = tempfile::tempdir().unwrap();
    let (mut c, mut commands) = with_node(&dir.path().join("state.db"));
    let a = running_job(&mut c, 1);
    assert_eq!(launches(&mut commands), [a.0]);
    let silent = api::HeartbeatRequest {
        node: "n1".into(),
        ..Default::default()
    };
    // Not listed by a heartbeat that may have crossed the launch: not sent again yet.
    c.heartbeat(&silent, 2).unwrap();
    assert_eq!(launches(&mut commands), Vec::<u64>::new());
    // Still running and not listed two heartbeats on: the launch may have been lost; it
    // is sent again.
    let sent_again = 1 + 2 * HEARTBEAT_S as i64;
    c.heartbeat(&silent, sent_again).unwrap();
    assert_eq!(launches(&mut commands), [a.0]);
    c.cancel(&alice(), &[a.0], &[], sent_again + 1).unwrap();
    for now in [20, 30, 40, 60] {
        c.heartbeat(&silent, now).unwrap();
    }
    assert_eq!(shown(&c, a), "CANCELLED");
    assert_eq!(
        launches(&mut commands),
        Vec::<u64>::new(),
        "a cancelled job launched again"
    );
}
