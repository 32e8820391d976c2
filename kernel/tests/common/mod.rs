//! Helpers shared by the kernel's integration tests: the example cluster and a tiny
//! virtual-clock driver (the simulator's loop, reduced to what the tests need).

#![allow(dead_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap as HashMap;

use gantry_kernel::job::JobOutcome;
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{
    Cluster, ClusterDescription, CycleOutcome, JobId, Scheduler, SchedulerConfig, Time,
};

pub const EXAMPLE: &str = include_str!("../../../examples/cluster.toml");

pub fn example_cluster() -> Cluster {
    ClusterDescription::from_toml(EXAMPLE)
        .expect("example parses")
        .build()
        .expect("example is valid")
}

pub fn scheduler(cluster: Cluster, config: SchedulerConfig) -> Scheduler {
    Scheduler::new(cluster, config, PolicySet::default())
}

/// Runs cycles until nothing is left, ending each started job after `run[id]` seconds
/// (exit code `exit[id]`, default 0). Calls `watch` after every cycle.
pub fn drive(
    s: &mut Scheduler,
    mut now: Time,
    run: &HashMap<JobId, Time>,
    exit: &HashMap<JobId, i32>,
    mut watch: impl FnMut(&Scheduler, Time, &CycleOutcome),
) -> Time {
    let mut ends: BinaryHeap<Reverse<(Time, JobId)>> = BinaryHeap::new();
    loop {
        let out = s.cycle(now);
        watch(s, now, &out);
        for &id in &out.started {
            let limit = s.job(id).unwrap().time_limit.unwrap_or(Time::MAX);
            ends.push(Reverse((
                now + run.get(&id).copied().unwrap_or(60).min(limit),
                id,
            )));
        }
        let Some(Reverse((t, _))) = ends.peek().copied() else {
            assert!(
                s.waiting().is_empty() || out.started.is_empty(),
                "stuck with work but no events"
            );
            return now;
        };
        now = t;
        while let Some(Reverse((t, id))) = ends.peek().copied() {
            if t != now {
                break;
            }
            ends.pop();
            let job = s.job(id).unwrap();
            if job.state != gantry_kernel::JobState::Running {
                continue;
            }
            let outcome =
                if run.get(&id).copied().unwrap_or(60) > job.time_limit.unwrap_or(Time::MAX) {
                    JobOutcome::Timeout
                } else {
                    JobOutcome::Exited(exit.get(&id).copied().unwrap_or(0))
                };
            s.job_ended(id, now, outcome).unwrap();
        }
    }
}
