//! The scheduling cycle end to end: backfill guarantees, arrays, dependencies, limits,
//! preemption, node failure, and rejection of bad requests.

mod common;

use rustc_hash::FxHashMap as HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use common::*;
use gantry_kernel::cluster::NodeState;
use gantry_kernel::job::{
    parse_dependencies, ArraySpec, GpuRequest, JobState, MemoryRequest, PendingReason, SubmitError,
};
use gantry_kernel::policy::{
    FairsharePolicy, PlacementBatch, PlacementPolicy, PlacementRanking, PolicyError, PolicySet,
    PreemptionPolicy, PreemptionQuery, PriorityBatch, PriorityFields, PriorityPolicy, ShareTree,
    Victim, KERNEL_PRIORITY_FIELDS,
};
use gantry_kernel::{
    Backfill, Cluster, JobId, JobSpec, ResourceRequest, Scheduler, SchedulerConfig, Time,
};
use proptest::prelude::*;

fn cpu_job(user: &str, tasks: u32, limit: Time) -> JobSpec {
    let mut s = JobSpec::new(
        "job",
        user,
        ResourceRequest {
            tasks,
            ..ResourceRequest::default()
        },
    );
    s.time_limit = Some(limit);
    s
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// EASY: the top blocked job starts no later than the first reservation it was given,
    /// whatever was backfilled around it. Run times never exceed limits here, and limits
    /// are honest upper bounds, as the guarantee assumes.
    #[test]
    fn backfill_never_delays_the_reservation(jobs in proptest::collection::vec((1u32..17, 1i64..500, 0i64..400, 0i64..50), 2..40)) {
        let mut s = scheduler(Cluster::homogeneous(4, 4, 16_000), SchedulerConfig { backfill: Backfill::Easy, ..SchedulerConfig::default() });
        let mut run = HashMap::default();
        let mut t = 0;
        let mut arrivals = Vec::new();
        for (tasks, limit, run_part, gap) in jobs {
            t += gap;
            arrivals.push((t, tasks, limit, (run_part % limit).max(1)));
        }
        // Submit everything at its arrival, cycling at every arrival and end.
        let mut first_reservation: HashMap<JobId, Time> = HashMap::default();
        let mut now = 0;
        let mut pending_arrivals = arrivals.into_iter().peekable();
        let mut ends: Vec<(Time, JobId)> = Vec::new();
        loop {
            while let Some(&(at, tasks, limit, r)) = pending_arrivals.peek() {
                if at != now { break; }
                pending_arrivals.next();
                let id = s.submit(cpu_job("u", tasks, limit), now).unwrap()[0];
                run.insert(id, r);
            }
            let out = s.cycle(now);
            for &w in s.waiting() {
                prop_assert_ne!(s.job(w).unwrap().reason, PendingReason::None, "job {} waits without a reason", w);
            }
            for r in &out.reservations {
                first_reservation.entry(r.job).or_insert(r.start);
            }
            for &id in &out.started {
                ends.push((now + run[&id], id));
                if let Some(&promised) = first_reservation.get(&id) {
                    prop_assert!(now <= promised, "job {} promised {} started {}", id, promised, now);
                }
            }
            ends.sort();
            let next_end = ends.first().map(|e| e.0);
            let next_arrival = pending_arrivals.peek().map(|a| a.0);
            now = match (next_end, next_arrival) {
                (None, None) => break,
                (Some(e), None) => e,
                (None, Some(a)) => a,
                (Some(e), Some(a)) => e.min(a),
            };
            while ends.first().is_some_and(|e| e.0 == now) {
                let (_, id) = ends.remove(0);
                s.job_ended(id, now, gantry_kernel::job::JobOutcome::Exited(0)).unwrap();
            }
        }
        prop_assert!(s.waiting().is_empty());
        prop_assert!(s.jobs().iter().all(|j| j.state == JobState::Completed));
    }
}

#[test]
fn easy_backfills_a_short_job_but_not_a_long_one() {
    let mut s = scheduler(Cluster::homogeneous(4, 1, 1000), SchedulerConfig::default());
    let running = s.submit(cpu_job("u", 3, 100), 0).unwrap()[0];
    s.cycle(0);
    let big = s.submit(cpu_job("u", 4, 100), 1).unwrap()[0];
    let long = s.submit(cpu_job("u", 1, 500), 2).unwrap()[0];
    let short = s.submit(cpu_job("u", 1, 50), 3).unwrap()[0];
    let out = s.cycle(3);
    assert_eq!(
        out.started,
        vec![short],
        "only the job that ends before the reservation backfills"
    );
    assert_eq!(out.reservations.len(), 1);
    assert_eq!(
        (out.reservations[0].job, out.reservations[0].start),
        (big, 100)
    );
    assert_eq!(s.job(big).unwrap().reason, PendingReason::Resources);
    assert_eq!(s.job(long).unwrap().reason, PendingReason::Priority);
    assert_eq!(s.job(running).unwrap().state, JobState::Running);

    let mut none = scheduler(
        Cluster::homogeneous(4, 1, 1000),
        SchedulerConfig {
            backfill: Backfill::None,
            ..SchedulerConfig::default()
        },
    );
    none.submit(cpu_job("u", 3, 100), 0).unwrap();
    none.cycle(0);
    none.submit(cpu_job("u", 4, 100), 1).unwrap();
    none.submit(cpu_job("u", 1, 50), 3).unwrap();
    assert!(
        none.cycle(3).started.is_empty(),
        "no backfill: nothing passes the blocked job"
    );
}

/// Two jobs batched together fit the partition's free cores in sum but not node by
/// node: once the first is placed, the second no longer fits. The single EASY
/// reservation is already taken, so it waits, with a reason.
#[test]
fn a_batched_job_that_no_longer_fits_waits_with_a_reason() {
    let mut s = scheduler(Cluster::homogeneous(3, 4, 1000), SchedulerConfig::default());
    let running = s.submit(cpu_job("u", 4, 100), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![running]);
    let nodes = |n: u32, tasks: u32, limit: Time| {
        let mut spec = cpu_job("u", tasks, limit);
        spec.request.nodes = Some(n);
        spec
    };
    // Needs all three nodes: blocked until `running` ends, and it takes the reservation.
    let wide = s.submit(nodes(3, 12, 100), 1).unwrap()[0];
    // Both short enough to end before that reservation; 3 + 4 cores of the 8 free.
    let three = s.submit(nodes(1, 3, 10), 2).unwrap()[0];
    let pair = s.submit(nodes(2, 4, 10), 3).unwrap()[0];
    let out = s.cycle(3);
    assert_eq!(out.reservations.len(), 1);
    assert_eq!(out.reservations[0].job, wide);
    assert_eq!(out.placement_batches, 1, "both went into one batch");
    assert_eq!(out.started, vec![three]);
    let p = s.job(pair).unwrap();
    assert_eq!(p.state, JobState::Pending);
    assert_eq!(p.reason, PendingReason::Priority);
    assert_eq!(s.job(wide).unwrap().reason, PendingReason::Resources);
}

#[test]
fn conservative_protects_every_reserved_job() {
    // 4 one-core nodes; 2 busy until t=100. Job A needs 4 (reserved at 100), job B needs
    // 3 (reserved after A, at 200). A 150 s single-core job would fit now on the 2 free
    // nodes but would delay A: EASY and conservative both refuse it. A 90 s job is fine.
    let mut s = scheduler(
        Cluster::homogeneous(4, 1, 1000),
        SchedulerConfig {
            backfill: Backfill::Conservative { depth: 4 },
            ..SchedulerConfig::default()
        },
    );
    s.submit(cpu_job("u", 2, 100), 0).unwrap();
    s.cycle(0);
    let a = s.submit(cpu_job("u", 4, 100), 1).unwrap()[0];
    let b = s.submit(cpu_job("u", 3, 100), 1).unwrap()[0];
    let c = s.submit(cpu_job("u", 1, 150), 1).unwrap()[0];
    let d = s.submit(cpu_job("u", 1, 90), 1).unwrap()[0];
    let out = s.cycle(1);
    let starts: HashMap<JobId, Time> = out.reservations.iter().map(|r| (r.job, r.start)).collect();
    assert_eq!(starts.get(&a), Some(&100));
    assert_eq!(starts.get(&b), Some(&200));
    assert!(!out.started.contains(&c));
    assert!(out.started.contains(&d));
}

#[test]
fn array_throttle_limits_concurrency_and_all_tasks_finish() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let mut spec = cpu_job("alice", 1, 600);
    spec.array = Some(ArraySpec::parse("0-9%2").unwrap());
    let ids = s.submit(spec, 0).unwrap();
    assert_eq!(ids.len(), 10);
    let first = ids[0];
    for (k, id) in ids.iter().enumerate() {
        let t = s.job(*id).unwrap().array.unwrap();
        assert_eq!((t.array_job, t.index), (first, k as u32));
    }
    let mut peak = 0;
    drive(
        &mut s,
        0,
        &HashMap::default(),
        &HashMap::default(),
        |s, _, _| {
            let running = ids
                .iter()
                .filter(|id| s.job(**id).unwrap().state == JobState::Running)
                .count();
            peak = peak.max(running);
            for id in &ids {
                let j = s.job(*id).unwrap();
                if j.state == JobState::Pending {
                    assert_eq!(j.reason, PendingReason::JobArrayTaskLimit);
                }
            }
        },
    );
    assert_eq!(peak, 2);
    assert!(ids
        .iter()
        .all(|id| s.job(*id).unwrap().state == JobState::Completed));
}

#[test]
fn dependencies_resolve_in_order_and_impossible_ones_are_cancelled() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let dep = |s: &str| parse_dependencies(s).unwrap();
    let a = s.submit(cpu_job("alice", 1, 600), 0).unwrap()[0];
    let mut spec = cpu_job("alice", 1, 600);
    spec.dependencies = dep(&format!("afterok:{a}"));
    let b = s.submit(spec, 0).unwrap()[0];
    let mut spec = cpu_job("alice", 1, 600);
    spec.dependencies = dep(&format!("afternotok:{a}"));
    let skipped = s.submit(spec, 0).unwrap()[0];
    let mut spec = cpu_job("alice", 1, 600);
    spec.dependencies = dep(&format!("afterany:{b},after:{a}"));
    let c = s.submit(spec, 0).unwrap()[0];
    // `fails` exits 1, so `rescue` (afternotok) runs and `never` (afterok) is cancelled.
    let fails = s.submit(cpu_job("alice", 1, 600), 0).unwrap()[0];
    let mut spec = cpu_job("alice", 1, 600);
    spec.dependencies = dep(&format!("afternotok:{fails}"));
    let rescue = s.submit(spec, 0).unwrap()[0];
    let mut spec = cpu_job("alice", 1, 600);
    spec.dependencies = dep(&format!("afterok:{fails}"));
    let never = s.submit(spec, 0).unwrap()[0];

    let run: HashMap<JobId, Time> = [(a, 10), (b, 20), (c, 5), (fails, 3)].into_iter().collect();
    let exit: HashMap<JobId, i32> = [(fails, 1)].into_iter().collect();
    drive(&mut s, 0, &run, &exit, |s, now, out| {
        if now == 0 {
            assert_eq!(out.started, vec![a, fails]);
            assert_eq!(s.job(b).unwrap().reason, PendingReason::Dependency);
        }
    });
    let job = |id: JobId| s.job(id).unwrap().clone();
    assert_eq!(job(a).state, JobState::Completed);
    assert_eq!(job(b).state, JobState::Completed);
    assert!(job(b).start_time.unwrap() >= job(a).end_time.unwrap());
    assert!(job(c).start_time.unwrap() >= job(b).end_time.unwrap());
    assert_eq!(job(skipped).state, JobState::Cancelled);
    assert_eq!(job(skipped).reason, PendingReason::DependencyNeverSatisfied);
    assert_eq!(job(fails).state, JobState::Failed);
    assert_eq!(job(rescue).state, JobState::Completed);
    assert_eq!(job(never).state, JobState::Cancelled);
}

#[test]
fn singleton_runs_one_job_of_a_name_at_a_time() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut spec = cpu_job("bob", 1, 600);
        spec.dependencies = parse_dependencies("singleton").unwrap();
        ids.push(s.submit(spec, 0).unwrap()[0]);
    }
    drive(
        &mut s,
        0,
        &HashMap::default(),
        &HashMap::default(),
        |s, _, _| {
            assert!(
                ids.iter()
                    .filter(|id| s.job(**id).unwrap().state == JobState::Running)
                    .count()
                    <= 1
            );
        },
    );
    let starts: Vec<Time> = ids
        .iter()
        .map(|id| s.job(*id).unwrap().start_time.unwrap())
        .collect();
    assert_eq!(starts, vec![0, 60, 120]);
}

#[test]
fn limits_give_pending_reasons() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let mut spec = cpu_job("alice", 1, 3 * 86_400);
    spec.partition = Some("cpu".into());
    let too_long = s.submit(spec, 0).unwrap()[0];
    let mut ids = Vec::new();
    for _ in 0..10 {
        let mut spec = cpu_job("dave", 1, 600);
        spec.qos = Some("high".into());
        ids.extend(s.submit(spec, 0).unwrap());
    }
    let out = s.cycle(0);
    assert_eq!(
        s.job(too_long).unwrap().reason,
        PendingReason::PartitionTimeLimit
    );
    assert_eq!(
        out.started.len(),
        8,
        "qos high allows eight running jobs per user"
    );
    assert_eq!(
        s.job(ids[9]).unwrap().reason,
        PendingReason::QosMaxJobsPerUser
    );
}

#[test]
fn bad_requests_are_rejected_with_reasons() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let mut submit = |f: &dyn Fn(&mut JobSpec)| {
        let mut spec = cpu_job("alice", 1, 60);
        f(&mut spec);
        s.submit(spec, 0).unwrap_err()
    };
    assert_eq!(
        submit(&|j| j.partition = Some("nope".into())),
        SubmitError::UnknownPartition("nope".into())
    );
    assert_eq!(
        submit(&|j| j.qos = Some("gold".into())),
        SubmitError::UnknownQos("gold".into())
    );
    assert!(matches!(
        submit(&|j| j.request.tasks = 0),
        SubmitError::Invalid(_)
    ));
    let e = submit(&|j| {
        j.partition = Some("gpu".into());
        j.request.gpus = GpuRequest::PerNode(16);
    });
    assert!(
        e.to_string().contains("can never run in partition 'gpu'"),
        "{e}"
    );
    assert!(e.to_string().contains("16 GPUs"), "{e}");
    let e = submit(&|j| j.request.nodes = Some(9));
    assert!(e.to_string().contains("at most 8 per job"), "{e}");
    let e = submit(&|j| j.request.tasks = 1000);
    assert!(e.to_string().contains("at most 512 such tasks"), "{e}");
    let e = submit(&|j| j.request.memory = MemoryRequest::PerNode(10 << 20));
    assert!(matches!(e, SubmitError::NeverFits { .. }), "{e}");
    assert_eq!(
        submit(&|j| j.request.features = vec!["quantum".into()]),
        SubmitError::UnknownFeature("quantum".into())
    );
    assert_eq!(
        submit(&|j| j.dependencies = parse_dependencies("afterok:999").unwrap()),
        SubmitError::UnknownDependency(JobId(999))
    );
    assert!(submit(&|j| {
        j.request.nodes = Some(2);
        j.request.gpus = GpuRequest::PerJob(3);
        j.partition = Some("gpu".into());
    })
    .to_string()
    .contains("multiple of --nodes"));
    assert_eq!(
        submit(&|j| j.account = Some("chemistry".into())),
        SubmitError::UnknownAccount("chemistry".into())
    );
    assert!(matches!(
        submit(&|j| j.account = Some("biology".into())),
        SubmitError::NotInAccount { .. }
    ));
    assert!(matches!(
        submit(&|j| j.user = "mallory".into()),
        SubmitError::NotInAccount { .. }
    ));
}

/// Names offered victims in the order given until the job's cores are covered: whatever
/// it asks, the kernel offers only jobs the requester's QOS may preempt.
struct Greedy;
impl PreemptionPolicy for Greedy {
    fn name(&self) -> &str {
        "greedy"
    }
    fn select(
        &mut self,
        _now: Time,
        batch: &[PreemptionQuery],
    ) -> Result<Vec<Vec<Victim>>, PolicyError> {
        Ok(batch
            .iter()
            .map(|q| {
                let mut cores = 0;
                q.candidates
                    .iter()
                    .take_while(|c| {
                        let more = cores < q.cores;
                        cores += c.cores;
                        more
                    })
                    .map(|c| Victim {
                        job: c.job,
                        mode: c.mode,
                    })
                    .collect()
            })
            .collect())
    }
}

#[test]
fn preemption_requeues_scavenger_jobs_but_never_protected_ones() {
    let policies = PolicySet {
        preemption: Box::new(Greedy),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(example_cluster(), SchedulerConfig::default(), policies);
    // Fill every CPU node: half with protected normal jobs, half with scavengers.
    let mut protected = Vec::new();
    let mut scav = Vec::new();
    for i in 0..8 {
        let mut spec = cpu_job("carol", 64, 3600);
        spec.request.nodes = Some(1);
        if i % 2 == 0 {
            spec.partition = Some("cpu".into());
            protected.extend(s.submit(spec, 0).unwrap());
        } else {
            spec.partition = Some("scavenger".into());
            spec.request.features = vec!["avx512".into()];
            scav.extend(s.submit(spec, 0).unwrap());
        }
    }
    let out = s.cycle(0);
    assert_eq!(out.started.len(), 8);
    let mut urgent = cpu_job("alice", 128, 600);
    urgent.partition = Some("cpu".into());
    urgent.request.nodes = Some(2);
    let u = s.submit(urgent, 10).unwrap()[0];
    let out = s.cycle(10);
    assert!(
        out.started.contains(&u),
        "the blocked job started by preemption"
    );
    assert_eq!(out.requeued.len(), 2, "two scavenger nodes freed");
    assert!(out.requeued.iter().all(|v| scav.contains(v)));
    for v in &out.requeued {
        let j = s.job(*v).unwrap();
        assert_eq!((j.state, j.requeue_count), (JobState::Requeued, 1));
    }
    assert!(protected
        .iter()
        .all(|p| s.job(*p).unwrap().state == JobState::Running));
}

fn holding() -> SchedulerConfig {
    SchedulerConfig {
        hold_until_processes_end: true,
        ..SchedulerConfig::default()
    }
}

#[test]
fn nodelist_and_exclude_decide_where_a_job_may_run() {
    let mut s = scheduler(
        Cluster::homogeneous(4, 4, 16_000),
        SchedulerConfig::default(),
    );
    let names: Vec<String> = s.cluster().nodes.iter().map(|n| n.name.clone()).collect();
    let on = |s: &Scheduler, id| -> Vec<String> {
        let a = s.job(id).unwrap().allocation.clone().unwrap();
        a.nodes
            .iter()
            .map(|n| s.cluster().node(n.node).name.clone())
            .collect()
    };
    let mut w = cpu_job("u", 2, 600);
    w.request.nodelist = vec![names[2].clone(), names[3].clone()];
    let w = s.submit(w, 0).unwrap()[0];
    assert_eq!(
        s.job(w).unwrap().shape.nodes,
        Some(2),
        "the node count is the list's"
    );
    let mut x = cpu_job("u", 4, 600);
    x.request.exclude = vec![names[0].clone()];
    let x = s.submit(x, 0).unwrap()[0];
    s.cycle(0);
    assert_eq!(on(&s, w), [names[2].clone(), names[3].clone()]);
    assert_ne!(on(&s, x), [names[0].clone()]);
    // Errors a user can act on.
    let mut bad = cpu_job("u", 1, 600);
    bad.request.nodelist = vec!["nosuch".into()];
    let e = s.submit(bad, 0).unwrap_err().to_string();
    assert!(e.contains("invalid node name specified: nosuch"), "{e}");
    let mut both = cpu_job("u", 1, 600);
    both.request.nodelist = vec![names[1].clone()];
    both.request.exclude = vec![names[1].clone()];
    assert!(s.submit(both, 0).unwrap_err().to_string().contains("both"));
    let mut more = cpu_job("u", 4, 600);
    more.request.nodes = Some(3);
    more.request.nodelist = vec![names[1].clone()];
    assert!(s
        .submit(more, 0)
        .unwrap_err()
        .to_string()
        .contains("exactly the nodes listed"));
}

/// A one-node, four-core cluster under `config` with two jobs that each fill it: the
/// first started at 0, the second waiting behind it.
fn one_node_two_jobs(config: SchedulerConfig, limit: Time) -> (Scheduler, JobId, JobId) {
    let mut s = scheduler(Cluster::homogeneous(1, 4, 16_000), config);
    let a = s.submit(cpu_job("u", 4, limit), 0).unwrap()[0];
    let b = s.submit(cpu_job("u", 4, limit), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![a]);
    (s, a, b)
}

#[test]
fn a_cancelled_runs_resources_wait_for_its_processes_to_end() {
    let (mut s, a, b) = one_node_two_jobs(holding(), 600);
    assert_eq!(s.cancel(a, 5).unwrap(), JobState::Running);
    assert_eq!(s.job(a).unwrap().state, JobState::Cancelled);
    assert!(s.is_completing(a), "still ending");
    assert!(
        s.cycle(6).started.is_empty(),
        "b waits while a's processes end"
    );
    assert!(
        !s.processes_gone(a, 1),
        "another run of a is not completing"
    );
    assert!(s.processes_gone(a, 0));
    assert!(!s.is_completing(a));
    assert_eq!(s.cycle(7).started, vec![b]);
    // Without the setting (the simulator), the resources come back at once.
    let (mut s, a, b) = one_node_two_jobs(SchedulerConfig::default(), 600);
    s.cancel(a, 5).unwrap();
    assert!(!s.is_completing(a));
    assert_eq!(s.cycle(6).started, vec![b]);
}

#[test]
fn a_timed_out_run_holds_its_resources_until_its_processes_end() {
    let (mut s, a, b) = one_node_two_jobs(holding(), 10);
    s.time_limit_reached(a, 10).unwrap();
    assert_eq!(s.job(a).unwrap().state, JobState::Timeout);
    assert!(s.is_completing(a));
    assert!(s.cycle(11).started.is_empty());
    assert!(
        s.time_limit_reached(a, 11).is_err(),
        "it is no longer running"
    );
    s.processes_gone(a, 0);
    assert_eq!(s.cycle(12).started, vec![b]);
}

#[test]
fn a_preemptor_waits_for_its_victims_processes_and_takes_no_more_victims_meanwhile() {
    let policies = PolicySet {
        preemption: Box::new(Greedy),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(example_cluster(), holding(), policies);
    let mut scav = Vec::new();
    for _ in 0..8 {
        let mut spec = cpu_job("carol", 64, 3600);
        spec.request.nodes = Some(1);
        spec.partition = Some("scavenger".into());
        spec.request.features = vec!["avx512".into()];
        scav.extend(s.submit(spec, 0).unwrap());
    }
    let started = s.cycle(0).started.len();
    let mut urgent = cpu_job("alice", 128, 600);
    urgent.partition = Some("cpu".into());
    urgent.request.nodes = Some(2);
    let u = s.submit(urgent, 10).unwrap()[0];
    let out = s.cycle(10);
    assert!(
        !out.started.contains(&u),
        "the victims still hold their nodes"
    );
    assert_eq!(out.requeued.len(), 2, "{out:?}");
    let victims = out.requeued.clone();
    for v in &victims {
        assert_eq!(s.job(*v).unwrap().state, JobState::Requeued);
        assert!(s.is_completing(*v), "the requeued run is still ending");
    }
    let out = s.cycle(11);
    assert!(
        out.requeued.is_empty() && out.preempted.is_empty() && out.started.is_empty(),
        "nothing more is stopped while the victims end: {out:?}"
    );
    for v in &victims {
        assert!(s.processes_gone(*v, 0));
    }
    let out = s.cycle(12);
    assert!(out.started.contains(&u), "{out:?}");
    assert_eq!(
        s.running().len(),
        started - 2 + 1,
        "the victims wait in the queue"
    );
}

#[test]
fn a_failed_node_releases_what_its_completing_runs_held() {
    let mut s = scheduler(Cluster::homogeneous(2, 4, 16_000), holding());
    let a = s.submit(cpu_job("u", 4, 600), 0).unwrap()[0];
    s.cycle(0);
    let node = s.job(a).unwrap().allocation.as_ref().unwrap().nodes[0].node;
    s.cancel(a, 1).unwrap();
    assert!(s.is_completing(a));
    s.node_failed(node, 2);
    assert!(
        !s.is_completing(a),
        "a down node's processes are gone with it"
    );
    assert!(s.completing().is_empty());
}

#[test]
fn a_restored_start_on_a_completing_runs_nodes_proves_that_run_ended() {
    // A log from before ends of completing runs were logged: job a was cancelled, then
    // b started on its cores. Replaying it must not find those cores still held.
    let (mut s, a, b) = one_node_two_jobs(holding(), 600);
    let alloc = s.job(a).unwrap().allocation.clone().unwrap();
    s.cancel(a, 5).unwrap();
    assert!(s.is_completing(a));
    s.restore_start(b, 9, alloc).unwrap();
    assert!(!s.is_completing(a));
    assert_eq!(s.job(b).unwrap().state, JobState::Running);
}

#[test]
fn node_failure_requeues_or_fails_jobs_as_configured() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let mut g = cpu_job("dave", 1, 600);
    g.partition = Some("gpu".into());
    g.request.gpus = GpuRequest::PerNode(8);
    let gpu_job = s.submit(g, 0).unwrap()[0];
    let mut c = cpu_job("alice", 64, 600);
    c.request.nodes = Some(1);
    let cpu_job_id = s.submit(c, 0).unwrap()[0];
    s.cycle(0);
    let gpu_node = s.job(gpu_job).unwrap().allocation.as_ref().unwrap().nodes[0].node;
    let cpu_node = s
        .job(cpu_job_id)
        .unwrap()
        .allocation
        .as_ref()
        .unwrap()
        .nodes[0]
        .node;
    assert_eq!(s.node_failed(gpu_node, 5), vec![gpu_job]);
    assert_eq!(
        s.job(gpu_job).unwrap().state,
        JobState::Requeued,
        "gpu partition requeues on node failure"
    );
    assert_eq!(s.node_failed(cpu_node, 5), vec![cpu_job_id]);
    assert_eq!(s.job(cpu_job_id).unwrap().state, JobState::NodeFail);
    let out = s.cycle(6);
    assert!(
        out.started.contains(&gpu_job),
        "requeued job restarts on another node"
    );
    assert_ne!(
        s.job(gpu_job).unwrap().allocation.as_ref().unwrap().nodes[0].node,
        gpu_node
    );
    s.set_node_state(gpu_node, NodeState::Up);
    assert!(s.cluster().node(gpu_node).is_idle());
}

#[test]
fn cancel_releases_resources_and_unknown_ids_are_errors() {
    let mut s = scheduler(Cluster::homogeneous(1, 4, 1000), SchedulerConfig::default());
    let a = s.submit(cpu_job("u", 4, 60), 0).unwrap()[0];
    let b = s.submit(cpu_job("u", 4, 60), 0).unwrap()[0];
    s.cycle(0);
    assert_eq!(s.cancel(a, 1), Ok(JobState::Running));
    assert!(s.cycle(1).started.contains(&b));
    assert!(s.cancel(a, 2).is_err());
    assert_eq!(
        s.cancel(JobId(42), 2).unwrap_err().to_string(),
        "Invalid job id specified: 42"
    );
}

/// A placement policy that answers nonsense: the kernel must fall back and still start jobs.
struct Broken;
impl PlacementPolicy for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn rank(&mut self, batch: &PlacementBatch) -> Result<PlacementRanking, PolicyError> {
        let mut r = PlacementRanking::new();
        for _ in 0..batch.len() {
            r.push([9999]);
        }
        Ok(r)
    }
}

#[test]
fn a_broken_placement_answer_falls_back_to_first_fit() {
    let policies = PolicySet {
        placement: Box::new(Broken),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(
        Cluster::homogeneous(4, 4, 1000),
        SchedulerConfig::default(),
        policies,
    );
    for _ in 0..4 {
        s.submit(cpu_job("u", 4, 60), 0).unwrap();
    }
    let out = s.cycle(0);
    assert_eq!(out.started.len(), 4);
    assert_eq!(
        out.placement_batches, 1,
        "one batched placement call for the whole cycle"
    );
    assert_eq!(s.fallbacks().placement, 1);
}

/// Records which columns the batch held, and orders by most cores first.
struct BiggestFirst {
    seen: std::sync::Arc<std::sync::Mutex<Vec<PriorityFields>>>,
}
impl PriorityPolicy for BiggestFirst {
    fn name(&self) -> &str {
        "biggest-first"
    }
    fn fields(&self) -> PriorityFields {
        PriorityFields::CORES
    }
    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Result<Vec<i64>, PolicyError> {
        self.seen.lock().unwrap().push(jobs.fields());
        assert!(jobs.age().is_empty() && jobs.fairshare().is_empty());
        Ok(jobs.cores().iter().map(|&c| c as i64).collect())
    }
}

#[test]
fn the_priority_batch_holds_the_columns_the_policy_reads_and_the_kernels() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let policies = PolicySet {
        priority: Box::new(BiggestFirst { seen: seen.clone() }),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(
        Cluster::homogeneous(1, 8, 16_000),
        SchedulerConfig::default(),
        policies,
    );
    let running = s.submit(cpu_job("u", 8, 100), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![running]);
    let small = s.submit(cpu_job("u", 2, 100), 1).unwrap()[0];
    let big = s.submit(cpu_job("u", 6, 100), 2).unwrap()[0];
    s.cycle(3);
    assert!(s.job(big).unwrap().priority > s.job(small).unwrap().priority);
    s.job_ended(running, 50, gantry_kernel::job::JobOutcome::Exited(0))
        .unwrap();
    let out = s.cycle(50);
    assert_eq!(out.started, vec![big, small], "biggest first, not FIFO");
    let want = PriorityFields::CORES | KERNEL_PRIORITY_FIELDS;
    assert!(seen.lock().unwrap().iter().all(|&f| f == want));
}

/// Suspension: the victim gives up its cores but keeps its memory, resumes on the same
/// cores once the preemptor ends, and its suspended time does not count against its
/// limit. A suspended job can be cancelled, and fails with its node.
#[test]
fn suspended_jobs_keep_their_memory_and_resume_where_they_were() {
    let toml = EXAMPLE.replace(r#"preempt_mode = "requeue""#, r#"preempt_mode = "suspend""#);
    let cluster = gantry_kernel::ClusterDescription::from_toml(&toml)
        .unwrap()
        .build()
        .unwrap();
    let policies = PolicySet {
        preemption: Box::new(Greedy),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(cluster, SchedulerConfig::default(), policies);
    // One scavenger job with 100 GiB on each CPU node.
    let mut scav = Vec::new();
    for _ in 0..8 {
        let mut spec = cpu_job("carol", 64, 3600);
        spec.request.nodes = Some(1);
        spec.request.memory = MemoryRequest::PerNode(100 * 1024);
        spec.partition = Some("scavenger".into());
        spec.request.features = vec!["avx512".into()];
        scav.extend(s.submit(spec, 0).unwrap());
    }
    assert_eq!(s.cycle(0).started.len(), 8);
    let before: HashMap<JobId, _> = scav
        .iter()
        .map(|&j| (j, s.job(j).unwrap().allocation.clone().unwrap()))
        .collect();

    let mut urgent = cpu_job("alice", 128, 600);
    urgent.partition = Some("cpu".into());
    urgent.request.nodes = Some(2);
    urgent.request.memory = MemoryRequest::PerNode(100 * 1024);
    let u = s.submit(urgent, 100).unwrap()[0];
    let out = s.cycle(100);
    assert!(out.started.contains(&u));
    assert_eq!(out.suspended.len(), 2);
    assert!(out.preempted.is_empty() && out.requeued.is_empty());
    let victim = out.suspended[0];
    let vj = s.job(victim).unwrap();
    assert_eq!(
        (vj.state, vj.suspended_at),
        (JobState::Suspended, Some(100))
    );
    assert_eq!(vj.state.slurm_name(), "SUSPENDED");
    let node = vj.allocation.as_ref().unwrap().nodes[0].node;
    let free = &s.cluster().node(node).free;
    assert_eq!(free.core_count, 0, "the urgent job has every core");
    assert_eq!(
        free.memory_mb,
        256 * 1024 - 200 * 1024,
        "the suspended job's memory is still allocated"
    );
    assert!(s.suspended().contains(&victim) && !s.running().contains(&victim));

    // While the urgent job runs, nothing resumes.
    assert!(s.cycle(200).resumed.is_empty());
    s.job_ended(u, 400, gantry_kernel::job::JobOutcome::Exited(0))
        .unwrap();
    let out = s.cycle(400);
    assert_eq!(out.resumed.len(), 2, "both victims resume at once");
    for &v in &out.resumed {
        let j = s.job(v).unwrap();
        assert_eq!(j.state, JobState::Running);
        assert_eq!(
            j.allocation.as_ref(),
            Some(&before[&v]),
            "same cores, same node"
        );
        assert_eq!(j.suspended_for, 300);
        assert_eq!(j.expected_end(), Some(3600 + 300), "the limit pauses");
    }
    assert!(s.suspended().is_empty());

    // Suspend again, then cancel one victim and fail the other's node.
    let mut urgent = cpu_job("alice", 128, 600);
    urgent.partition = Some("cpu".into());
    urgent.request.nodes = Some(2);
    let u2 = s.submit(urgent, 500).unwrap()[0];
    let out = s.cycle(500);
    assert!(out.started.contains(&u2));
    let (a, b) = (out.suspended[0], out.suspended[1]);
    let a_node = s.job(a).unwrap().allocation.as_ref().unwrap().nodes[0].node;
    let mem_before = s.cluster().node(a_node).free.memory_mb;
    assert_eq!(s.cancel(a, 510), Ok(JobState::Suspended));
    assert_eq!(s.job(a).unwrap().state, JobState::Cancelled);
    assert_eq!(
        s.cluster().node(a_node).free.memory_mb,
        mem_before + 100 * 1024,
        "cancelling a suspended job frees its memory"
    );
    let b_node = s.job(b).unwrap().allocation.as_ref().unwrap().nodes[0].node;
    assert!(s.node_failed(b_node, 520).contains(&b));
    assert!(matches!(
        s.job(b).unwrap().state,
        JobState::NodeFail | JobState::Requeued
    ));
    assert!(s.suspended().is_empty());
}

/// Counts its calls and answers 1 for every node; its revision is set from outside, as
/// a hot swap would change it.
#[derive(Clone, Default)]
struct CountingFairshare {
    calls: Arc<AtomicU64>,
    revision: Arc<AtomicU64>,
}
impl FairsharePolicy for CountingFairshare {
    fn name(&self) -> &str {
        "counting"
    }
    fn factors(&mut self, _now: Time, tree: &ShareTree) -> Result<Vec<f64>, PolicyError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        Ok(vec![1.0; tree.len()])
    }
    fn revision(&self) -> u64 {
        self.revision.load(Ordering::Relaxed)
    }
}

/// A one-node scheduler with two jobs of "ann" waiting (something must wait for a cycle
/// to compute priorities at all), and the counting policy it asks for fairshare.
fn counting_scheduler(fairshare_interval: Time) -> (Scheduler, CountingFairshare) {
    let policy = CountingFairshare::default();
    let policies = PolicySet {
        fairshare: Box::new(policy.clone()),
        ..PolicySet::default()
    };
    let config = SchedulerConfig {
        fairshare_interval,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(Cluster::homogeneous(1, 4, 1000), config, policies);
    s.register_user("physics", "ann");
    for _ in 0..2 {
        s.submit(cpu_job("ann", 4, 3600), 0).unwrap();
    }
    (s, policy)
}

#[test]
fn fairshare_is_computed_once_per_interval_and_at_once_when_the_tree_or_policy_changes() {
    let (mut s, policy) = counting_scheduler(300);
    let count = || policy.calls.load(Ordering::Relaxed);
    s.cycle(0);
    assert_eq!(count(), 1, "the first cycle computes the factors");
    s.cycle(10);
    s.cycle(299);
    assert_eq!(count(), 1, "cycles within the interval reuse them");
    s.cycle(300);
    assert_eq!(count(), 2, "the interval has passed");
    s.register_user("chemistry", "bob");
    s.submit(cpu_job("bob", 4, 3600), 310).unwrap();
    s.cycle(310);
    assert_eq!(count(), 3, "a new account and user change the tree");
    s.cycle(320);
    assert_eq!(count(), 3);
    policy.revision.store(1, Ordering::Relaxed);
    s.cycle(330);
    assert_eq!(count(), 4, "another policy answers now");
    s.cycle(200);
    assert_eq!(count(), 5, "a clock that went back computes them again");
}

#[test]
fn a_zero_fairshare_interval_computes_the_factors_every_cycle() {
    let (mut s, policy) = counting_scheduler(0);
    for t in 0..5 {
        s.cycle(t);
    }
    assert_eq!(policy.calls.load(Ordering::Relaxed), 5);
}

/// `--hold` and `scontrol hold` keep a job waiting whatever is free; `release` lets the
/// next cycle start it. A user may not release an admin's hold.
#[test]
fn held_jobs_wait_until_released_and_an_admin_hold_is_the_admins() {
    use gantry_kernel::job::Hold;
    let mut s = scheduler(Cluster::homogeneous(2, 1, 1000), SchedulerConfig::default());
    let mut spec = cpu_job("u", 1, 100);
    spec.hold = true;
    let held = s.submit(spec, 0).unwrap()[0];
    let other = s.submit(cpu_job("u", 1, 100), 0).unwrap()[0];
    s.hold(other, Hold::Admin).unwrap();
    assert!(s.cycle(0).started.is_empty(), "both held");
    assert_eq!(s.job(held).unwrap().reason, PendingReason::JobHeldUser);
    assert_eq!(s.job(other).unwrap().reason, PendingReason::JobHeldAdmin);
    assert!(
        s.release(other, Hold::User).is_err(),
        "a user cannot release an admin's hold"
    );
    s.release(held, Hold::User).unwrap();
    assert_eq!(s.cycle(1).started, vec![held]);
    assert!(
        s.hold(held, Hold::User).is_err(),
        "a running job is not held"
    );
    s.release(other, Hold::Admin).unwrap();
    assert_eq!(s.cycle(2).started, vec![other]);
}

/// `--begin`: a job waits for its time with reason BeginTime, then starts.
#[test]
fn a_job_waits_for_its_begin_time() {
    let mut s = scheduler(Cluster::homogeneous(1, 1, 1000), SchedulerConfig::default());
    let mut spec = cpu_job("u", 1, 100);
    spec.begin = Some(50);
    let later = s.submit(spec, 0).unwrap()[0];
    assert!(s.cycle(10).started.is_empty());
    assert_eq!(s.job(later).unwrap().reason, PendingReason::BeginTime);
    assert_eq!(s.cycle(50).started, vec![later]);
}

/// `--nice` is subtracted from whatever priority the policy gives: a negative nice
/// goes ahead of an earlier job, a positive one behind a later job.
#[test]
fn nice_moves_a_job_in_the_walk_order() {
    let mut s = scheduler(Cluster::homogeneous(1, 1, 1000), SchedulerConfig::default());
    let running = s.submit(cpu_job("u", 1, 100), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![running]);
    let mut polite = cpu_job("u", 1, 100);
    polite.nice = 1_000_000;
    let polite = s.submit(polite, 1).unwrap()[0];
    let plain = s.submit(cpu_job("u", 1, 100), 2).unwrap()[0];
    s.cycle(3);
    assert!(
        s.job(plain).unwrap().priority > s.job(polite).unwrap().priority,
        "the nice job is behind"
    );
    s.cancel(running, 4).unwrap();
    assert_eq!(s.cycle(4).started, vec![plain]);
}

/// `sshare`'s view: accounts before their users, shares normalised among siblings, usage
/// in core-seconds with running jobs counted to now, and the factor the last cycle used.
#[test]
fn the_share_tree_view_rolls_usage_up() {
    let mut s = scheduler(Cluster::homogeneous(2, 2, 1000), SchedulerConfig::default());
    s.register_user("physics", "alice");
    s.register_user("chemistry", "bob");
    let mut spec = cpu_job("alice", 2, 1000);
    spec.account = Some("physics".into());
    let a = s.submit(spec, 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![a]);
    let rows = s.share_rows(100);
    let find = |acct: &str, user: Option<&str>| {
        rows.iter()
            .find(|r| r.account == acct && r.user.as_deref() == user)
            .unwrap_or_else(|| panic!("{acct} {user:?} in {rows:?}"))
            .clone()
    };
    let root = find("root", None);
    assert_eq!(
        (root.depth, root.raw_usage),
        (0, 200.0),
        "2 cores for 100 s"
    );
    let physics = find("physics", None);
    assert_eq!(physics.depth, 1);
    assert_eq!(physics.raw_usage, 200.0);
    assert!((physics.effective_usage - 1.0).abs() < 1e-9);
    assert!(
        (physics.norm_shares - 0.5).abs() < 1e-9,
        "two accounts of one share"
    );
    let alice = find("physics", Some("alice"));
    assert_eq!((alice.depth, alice.raw_usage), (2, 200.0));
    assert!(alice.fairshare.is_some(), "computed by the cycle");
    assert_eq!(find("chemistry", Some("bob")).raw_usage, 0.0);
    let order: Vec<(String, Option<String>)> = rows
        .iter()
        .map(|r| (r.account.clone(), r.user.clone()))
        .collect();
    let at = |a: &str, u: Option<&str>| {
        order
            .iter()
            .position(|(x, y)| x == a && y.as_deref() == u)
            .unwrap()
    };
    assert!(at("physics", None) < at("physics", Some("alice")));
}

/// `squeue --start` and `sbatch --test-only` answer from one plan, and a replay in which
/// every job runs to its limit starts each job exactly when the plan said — for jobs
/// of whole nodes, as the plan reserves whole nodes; a job that shares a node may start
/// earlier than planned (in a gap the plan does not split), never later.
#[test]
fn planned_starts_are_when_jobs_start_in_a_replay() {
    let config = SchedulerConfig {
        backfill: Backfill::Conservative { depth: 1_000 },
        ..SchedulerConfig::default()
    };
    let mut s = scheduler(Cluster::homogeneous(4, 2, 1000), config);
    let mut now: Time = 0;
    // Busy nodes, and a queue of mixed widths and lengths.
    for (tasks, limit) in [(8, 100), (2, 40)] {
        s.submit(cpu_job("u", tasks, limit), now).unwrap();
    }
    s.cycle(now);
    now = 1;
    let shapes = [(4, 50), (8, 30), (2, 200), (6, 60), (2, 10), (4, 90)];
    let mut queued = Vec::new();
    for (tasks, limit) in shapes {
        queued.push(s.submit(cpu_job("u", tasks, limit), now).unwrap()[0]);
    }
    s.cycle(now);
    queued = s.waiting().iter().copied().collect();
    let sharer = s.submit(cpu_job("u", 1, 10), now).unwrap()[0];
    // The plan orders jobs by the priorities the last cycle gave them.
    s.cycle(now);
    let plan: HashMap<JobId, Time> = s
        .planned_starts(now, 10_000)
        .into_iter()
        .map(|r| (r.job, r.start))
        .collect();
    let probe = s
        .test_only(&cpu_job("u", 8, 20), now, 10_000)
        .unwrap()
        .1
        .expect("a time");
    assert_eq!(
        plan.len(),
        queued.len() + 1,
        "every waiting job is planned: {plan:?}"
    );
    // The probe, submitted for real after the others, starts when test-only said.
    let late = s.submit(cpu_job("u", 8, 20), now).unwrap()[0];
    let mut started: HashMap<JobId, Time> = HashMap::default();
    while started.len() < queued.len() + 2 && now < 10_000 {
        let ending: Vec<JobId> = s
            .running()
            .iter()
            .copied()
            .filter(|&r| s.job(r).and_then(|j| j.expected_end()) == Some(now))
            .collect();
        for r in ending {
            s.job_ended(r, now, gantry_kernel::job::JobOutcome::Exited(0))
                .unwrap();
        }
        for id in s.cycle(now).started {
            started.insert(id, now);
        }
        now += 1;
    }
    for id in &queued {
        assert_eq!(
            started.get(id),
            plan.get(id),
            "job {id}: started vs planned"
        );
    }
    assert_eq!(
        started.get(&late),
        Some(&probe.start),
        "the test-only probe"
    );
    assert!(
        started[&sharer] <= plan[&sharer],
        "a node-sharing job, no later than planned"
    );
}

/// `scontrol suspend`: the job's cores go to others, no cycle resumes it; `resume`
/// brings it back once its own cores are free.
#[test]
fn an_admin_suspension_ends_only_by_resume() {
    let mut s = scheduler(Cluster::homogeneous(1, 2, 1000), SchedulerConfig::default());
    let first = s.submit(cpu_job("u", 2, 100), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![first]);
    s.suspend_job(first, 10).unwrap();
    assert_eq!(s.job(first).unwrap().state, JobState::Suspended);
    let urgent = s.submit(cpu_job("u", 2, 20), 10).unwrap()[0];
    assert_eq!(
        s.cycle(10).started,
        vec![urgent],
        "the suspended job's cores are free"
    );
    s.job_ended(urgent, 30, gantry_kernel::job::JobOutcome::Exited(0))
        .unwrap();
    let out = s.cycle(30);
    assert!(
        out.resumed.is_empty(),
        "no cycle resumes an admin's suspension"
    );
    assert!(
        s.resume_job(first, 40).unwrap(),
        "its cores are free: it runs at once"
    );
    assert_eq!(s.job(first).unwrap().state, JobState::Running);
    assert_eq!(s.job(first).unwrap().suspended_for, 30);
    assert!(s.resume_job(first, 41).is_err(), "running, not suspended");
}

/// `--deadline`: a waiting job that can no longer end by its deadline (its start plus its
/// time limit) is removed as DEADLINE; one that still can waits and runs.
#[test]
fn a_job_past_its_deadline_is_removed() {
    let mut s = scheduler(Cluster::homogeneous(1, 1, 1000), SchedulerConfig::default());
    let busy = s.submit(cpu_job("u", 1, 100), 0).unwrap()[0];
    assert_eq!(s.cycle(0).started, vec![busy]);
    let mut tight = cpu_job("u", 1, 50);
    tight.deadline = Some(120);
    let tight = s.submit(tight, 1).unwrap()[0];
    let mut loose = cpu_job("u", 1, 50);
    loose.deadline = Some(200);
    let loose = s.submit(loose, 1).unwrap()[0];
    assert!(
        s.cycle(70).past_deadline.is_empty(),
        "it may still start at 70"
    );
    assert_eq!(s.cycle(71).past_deadline, vec![tight]);
    assert_eq!(s.job(tight).unwrap().state, JobState::Deadline);
    s.job_ended(busy, 100, gantry_kernel::job::JobOutcome::Exited(0))
        .unwrap();
    assert_eq!(s.cycle(100).started, vec![loose]);
    let mut unlimited = cpu_job("u", 1, 50);
    unlimited.time_limit = None;
    unlimited.deadline = Some(500);
    assert!(
        s.submit(unlimited, 101).is_err(),
        "a deadline needs a time limit"
    );
}

#[test]
fn an_arrays_indices_are_summarised_once_for_every_task() {
    let mut s = scheduler(
        Cluster::homogeneous(1, 4, 16_000),
        SchedulerConfig::default(),
    );
    let mut stepped = cpu_job("u", 1, 60);
    stepped.array = Some(ArraySpec::parse("1-9:4").unwrap());
    let first = s.submit(stepped, 0).unwrap()[0];
    let a = s.array_indices(first).unwrap();
    assert_eq!((a.count, a.min, a.max, a.step), (3, 1, 9, 4));
    let mut uneven = cpu_job("u", 1, 60);
    uneven.array = Some(ArraySpec::parse("1,2,5").unwrap());
    let first = s.submit(uneven, 0).unwrap()[0];
    let a = s.array_indices(first).unwrap();
    assert_eq!((a.count, a.min, a.max, a.step), (3, 1, 5, 1));
    assert_eq!(s.array_indices(JobId(999)), None);
}

/// Priority = 10 × cores + age: a policy that explains itself as two factors, one of
/// them named in lower case; `names` replaces its factor names, to test the checks.
struct BySize {
    names: [&'static str; 2],
}

impl PriorityPolicy for BySize {
    fn name(&self) -> &str {
        "by-size"
    }
    fn fields(&self) -> PriorityFields {
        PriorityFields::CORES | PriorityFields::AGE
    }
    fn prioritize(&mut self, _: Time, jobs: &PriorityBatch) -> Result<Vec<i64>, PolicyError> {
        Ok(jobs
            .cores()
            .iter()
            .zip(jobs.age())
            .map(|(&c, &a)| 10 * c as i64 + a)
            .collect())
    }
    fn explain(
        &mut self,
        _: Time,
        jobs: &PriorityBatch,
    ) -> Result<Vec<gantry_kernel::policy::PriorityFactor>, PolicyError> {
        use gantry_kernel::policy::PriorityFactor;
        Ok(vec![
            PriorityFactor {
                name: self.names[0].into(),
                weight: 10.0,
                values: jobs.cores().iter().map(|&c| c as f64).collect(),
            },
            PriorityFactor {
                name: self.names[1].into(),
                weight: 1.0,
                values: jobs.age().iter().map(|&a| a as f64).collect(),
            },
        ])
    }
}

#[test]
fn a_priority_breakdown_is_the_policys_factors_of_the_waiting_jobs() {
    let policies = PolicySet {
        priority: Box::new(BySize {
            names: ["cores", "AGE"],
        }),
        ..PolicySet::default()
    };
    let mut s = Scheduler::new(example_cluster(), SchedulerConfig::default(), policies);
    let in_cpu = |user, tasks| {
        let mut spec = cpu_job(user, tasks, 600);
        spec.partition = Some("cpu".into());
        spec
    };
    // The whole partition is busy: the two after it wait.
    s.submit(in_cpu("carol", 512), 0).unwrap();
    s.cycle(0);
    let a = s.submit(in_cpu("alice", 64), 10).unwrap()[0];
    let b = s.submit(in_cpu("bob", 2), 40).unwrap()[0];
    s.set_nice(b, 5).unwrap();
    s.cycle(100);
    let running = s.running().len();
    assert_eq!(running, 1);
    let breakdown = s.priority_breakdown(100);
    assert_eq!(s.running().len(), running, "a breakdown starts nothing");
    let waiting: Vec<JobId> = s.waiting().iter().copied().collect();
    assert_eq!(breakdown.jobs, waiting);
    let factors = breakdown.factors.expect("a valid breakdown");
    assert_eq!(factors[0].name, "CORES", "names are shown upper-cased");
    for (i, id) in breakdown.jobs.iter().enumerate() {
        let j = s.job(*id).unwrap();
        let expected = 10 * j.shape.cores() as i64 + (100 - j.submit_time) - i64::from(j.nice);
        assert_eq!(breakdown.priority[i], expected, "job {id:?}");
        assert_eq!(breakdown.nice[i], j.nice);
        let sum: f64 = factors.iter().map(|f| f.weight * f.values[i]).sum();
        assert_eq!(sum as i64 - i64::from(j.nice), expected);
    }
    assert_eq!(breakdown.jobs, [a, b]);

    // A breakdown that names a factor twice, or with a name that is not a word, is
    // refused; the priorities stand.
    for names in [["AGE", "age"], ["AGE", "a\u{1b}[31m"], ["", "AGE"]] {
        let policies = PolicySet {
            priority: Box::new(BySize { names }),
            ..PolicySet::default()
        };
        let mut s = Scheduler::new(example_cluster(), SchedulerConfig::default(), policies);
        s.submit(cpu_job("alice", 2, 600), 0).unwrap();
        let breakdown = s.priority_breakdown(10);
        assert!(
            matches!(breakdown.factors, Err(PolicyError::Invalid(_))),
            "{names:?}: {:?}",
            breakdown.factors
        );
        assert_eq!(breakdown.priority.len(), 1);
    }

    // FIFO explains nothing: priorities only, older first.
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    s.submit(cpu_job("alice", 2, 600), 0).unwrap();
    s.submit(cpu_job("alice", 2, 600), 7).unwrap();
    let breakdown = s.priority_breakdown(10);
    assert_eq!(breakdown.factors, Ok(Vec::new()));
    assert_eq!(breakdown.priority, [0, -7]);
}
