//! Forgetting finished jobs: only those no waiting job depends on, whose runs are over,
//! and arrays only whole; what is left behaves as before, and the next id and
//! fairshare usage carry over to a scheduler rebuilt from the live jobs alone.

mod common;

use common::*;
use gantry_kernel::job::{parse_dependencies, ArraySpec, JobOutcome, JobState};
use gantry_kernel::{Cluster, JobId, JobSpec, ResourceRequest, SchedulerConfig};

fn one_core(user: &str) -> JobSpec {
    JobSpec::new("j", user, ResourceRequest::default())
}

#[test]
fn only_finished_jobs_nothing_waits_on_are_forgotten_and_arrays_whole() {
    let mut s = scheduler(
        Cluster::homogeneous(1, 8, 16_000),
        SchedulerConfig::default(),
    );
    let done: Vec<JobId> = (0..4)
        .map(|_| s.submit(one_core("alice"), 0).unwrap()[0])
        .collect();
    let mut array = one_core("bob");
    array.array = Some(ArraySpec::parse("0-1").unwrap());
    let tasks = s.submit(array, 0).unwrap();
    s.cycle(0);
    for &id in &done {
        s.job_ended(id, 10, JobOutcome::Exited(0)).unwrap();
    }
    s.job_ended(tasks[0], 10, JobOutcome::Exited(0)).unwrap();
    let long = s.submit(one_core("carol"), 11).unwrap()[0];
    s.cycle(11);
    // Waits on a finished job and a running one: the finished one stays.
    let mut waiting = one_core("alice");
    waiting.dependencies = parse_dependencies(&format!("afterok:{}:{long}", done[0])).unwrap();
    let waiting = s.submit(waiting, 12).unwrap()[0];

    assert!(s.forgettable(9).is_empty(), "none ended by then");
    let forgettable = s.forgettable(10);
    assert_eq!(
        forgettable,
        done[1..].to_vec(),
        "not the one depended on, not half an array"
    );
    let gone = s.forget(&forgettable);
    assert_eq!(gone.len(), 3);
    assert_eq!(s.jobs().len(), 5);
    assert!(s.job(done[1]).is_none() && s.job(done[0]).is_some());
    // The array goes whole once its last task ends.
    s.job_ended(tasks[1], 20, JobOutcome::Exited(0)).unwrap();
    assert_eq!(s.forgettable(20), tasks);
    s.forget(&tasks);
    let ids: Vec<JobId> = s.jobs_from(0).map(|(_, j)| j.id).collect();
    assert_eq!(ids, vec![done[0], long, waiting], "in id order");
    // A running job and a waiting one are never forgotten.
    assert!(s.forget(&[long, waiting]).is_empty());
    // A dependency on a job no longer in memory cannot be given.
    let mut late = one_core("alice");
    late.dependencies = parse_dependencies(&format!("afterany:{}", done[2])).unwrap();
    assert!(s.submit(late, 21).is_err());
    // The rest goes on as before.
    s.job_ended(long, 30, JobOutcome::Exited(0)).unwrap();
    s.cycle(30);
    assert_eq!(s.job(waiting).unwrap().state, JobState::Running);
    assert_eq!(s.next_job_id(), JobId(waiting.0 + 1));
}

#[test]
fn a_rebuilt_scheduler_carries_the_next_id_and_the_usage_of_forgotten_work() {
    let mut s = scheduler(
        Cluster::homogeneous(1, 8, 16_000),
        SchedulerConfig::default(),
    );
    let a = s.submit(one_core("alice"), 0).unwrap()[0];
    let b = s.submit(one_core("bob"), 0).unwrap()[0];
    s.cycle(0);
    s.job_ended(a, 100, JobOutcome::Exited(0)).unwrap();
    let usage = s.usage_by_association();
    assert!(
        usage.iter().any(|(_, u, c)| u == "alice" && *c == 100.0),
        "{usage:?}"
    );

    // Rebuilt from the live job alone (b, submitted as job 2), then the snapshot.
    let mut r = scheduler(
        Cluster::homogeneous(1, 8, 16_000),
        SchedulerConfig::default(),
    );
    assert_eq!(r.restore_submit(b, one_core("bob"), 0).unwrap(), vec![b]);
    assert!(
        r.restore_submit(JobId(1), one_core("x"), 0).is_err(),
        "ids never go back"
    );
    r.skip_ids_to(s.next_job_id()).unwrap();
    r.restore_usage(&usage);
    assert_eq!(r.usage_by_association(), usage);
    assert_eq!(
        r.submit(one_core("carol"), 1).unwrap(),
        s.submit(one_core("carol"), 1).unwrap()
    );
}
