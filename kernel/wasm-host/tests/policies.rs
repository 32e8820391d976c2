//! The built-ins as components: identical to their native builds, hot-swappable mid-replay
//! with effects only after the swap, shadow runs, rollback and the swap history.

mod common;

use common::*;
use gantry_abi::{
    Candidate, Fairshare, Placement, PlacementBatch, PlacementQuery, Policy, PreemptMode,
    Preemption, PreemptionCandidate, PreemptionQuery, Priority, PriorityBatch, PriorityInput,
    ShareNode, ShareTree, ASSOCIATION_IDS,
};
use gantry_kernel::policy::{Native, PolicySet};
use gantry_kernel::{Backfill, SchedulerConfig, Time};
use gantry_policy_fairtree::FairTree;
use gantry_policy_multifactor::Multifactor;
use gantry_policy_qos_preemption::QosPreemption;
use gantry_policy_topology_placement::TopologyPlacement;
use gantry_sim::{cluster_from_header, replay, replay_with, ReplayOptions, Report};
use gantry_wasm_host::{
    policy_set, FairshareWorld, PlacementWorld, PolicySlot, PreemptionWorld, PriorityWorld,
};
use proptest::prelude::*;

fn native_builtins() -> PolicySet {
    PolicySet {
        priority: Box::new(
            Native::new(Multifactor::default(), &default_config("multifactor")).unwrap(),
        ),
        fairshare: Box::new(Native::new(FairTree::default(), &default_config("fairtree")).unwrap()),
        preemption: Box::new(
            Native::new(QosPreemption::default(), &default_config("qos-preemption")).unwrap(),
        ),
        placement: Box::new(
            Native::new(
                TopologyPlacement::default(),
                &default_config("topology-placement"),
            )
            .unwrap(),
        ),
    }
}

fn opts() -> ReplayOptions {
    ReplayOptions {
        scheduler: SchedulerConfig {
            backfill: Backfill::Easy,
            ..SchedulerConfig::default()
        },
        partition: None,
    }
}

fn run(trace: &gantry_sim::SwfTrace, policies: PolicySet) -> Report {
    replay(
        trace,
        cluster_from_header(trace, 1).unwrap(),
        policies,
        &opts(),
        &mut |_| {},
    )
    .unwrap()
}

fn equivalent_on(name: &str) {
    let t = trace(name);
    let native = run(&t, native_builtins());
    let (wasm_set, slots) = policy_set(&host(), &builtins(), "test", 0).unwrap();
    let wasm = run(&t, wasm_set);
    assert_eq!(native.schedule.len(), wasm.schedule.len());
    let first_difference = native
        .schedule
        .iter()
        .zip(&wasm.schedule)
        .position(|(a, b)| a != b);
    assert_eq!(
        first_difference, None,
        "{name}: native and Wasm schedules differ"
    );
    assert!(slots.priority.lock().unwrap().failures().is_empty());
    assert_eq!(
        slots.priority.lock().unwrap().native_answers(),
        0,
        "every answer came from the component"
    );
    assert_eq!(native.mean_bounded_slowdown, wasm.mean_bounded_slowdown);
}

#[test]
fn native_and_wasm_builtins_schedule_kth_sp2_identically() {
    equivalent_on("KTH-SP2-1996-2.1-cln.swf.gz");
}

#[test]
fn native_and_wasm_builtins_schedule_lublin_identically() {
    equivalent_on("lublin_256.swf");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// Beyond the traces (which never preempt): every built-in answers random batches
    /// exactly as its native build does, including fairshare's decay state over time.
    #[test]
    fn every_builtin_answers_like_its_native_build(
        prio in proptest::collection::vec((0i64..100_000, 1u64..512, 0u64..9, 0u32..3, 0u32..1000, 0.0f64..=1.0), 0..200),
        usage in proptest::collection::vec((0.0f64..1e7, 1u32..100), 1..30),
        victims in proptest::collection::vec((0u32..300, 0u32..3, 0i64..10_000, 1u64..128, 0u64..8), 0..40),
        cands in proptest::collection::vec((0u32..40, 0u32..4, 0u32..256, 0u32..8), 1..40),
    ) {
        let now = 200_000;
        let jobs: PriorityBatch = prio.iter().enumerate().map(|(i, &(submit, cores, gpus, tier, qos, fs))| PriorityInput {
            job: i as u64 + 1, submit_time: submit, age: now - submit, cores, nodes: 1, gpus, time_limit: Some(3600), partition_tier: tier, qos: 0, qos_priority: qos, fairshare: fs, user: i as u32 % 7, account: 0,
        }).collect();
        let mut native = Multifactor::default();
        native.init(&default_config("multifactor")).unwrap();
        let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
        let v = slot.load(&component("multifactor"), &default_config("multifactor")).unwrap();
        slot.activate(v, "t", 0).unwrap();
        prop_assert_eq!(slot.decide(now, &jobs), Some(native.prioritize(now, &jobs)));

        // root, two accounts, users spread over them.
        let mut tree = vec![ShareNode { id: 0, parent: None, shares: 1, usage: 0.0 }, ShareNode { id: 1, parent: Some(0), shares: 70, usage: 0.0 }, ShareNode { id: 2, parent: Some(0), shares: 30, usage: 0.0 }];
        tree.extend(usage.iter().enumerate().map(|(i, &(u, s))| ShareNode { id: ASSOCIATION_IDS | i as u32, parent: Some(1 + i as u32 % 2), shares: s, usage: u }));
        let mut native = FairTree::default();
        native.init(&default_config("fairtree")).unwrap();
        let mut slot = PolicySlot::<FairshareWorld>::new(host()).unwrap();
        let v = slot.load(&component("fairtree"), &default_config("fairtree")).unwrap();
        slot.activate(v, "t", 0).unwrap();
        for (k, t) in [0i64, 3_600, 86_400].into_iter().enumerate() {
            for n in tree.iter_mut().skip(3) { n.usage *= 1.0 + k as f64; }
            let tree = ShareTree::from(&tree[..]);
            prop_assert_eq!(slot.decide(t, &tree), Some(native.factors(t, &tree)));
        }

        let query = PreemptionQuery { job: 999, qos_priority: 2, partition_tier: 1, cores: 64, gpus: 2, candidates: victims.iter().enumerate().map(|(i, &(_, q, start, cores, gpus))| PreemptionCandidate {
            job: i as u64 + 1, qos_priority: q, partition_tier: q % 2, start_time: start, cores, gpus, mode: [PreemptMode::Requeue, PreemptMode::Cancel, PreemptMode::Suspend][i % 3],
        }).collect() };
        let mut native = QosPreemption::default();
        native.init(&default_config("qos-preemption")).unwrap();
        let mut slot = PolicySlot::<PreemptionWorld>::new(host()).unwrap();
        let v = slot.load(&component("qos-preemption"), &default_config("qos-preemption")).unwrap();
        slot.activate(v, "t", 0).unwrap();
        let batch = vec![query];
        prop_assert_eq!(slot.decide(now, &batch), Some(native.select(now, &batch)));

        let q = PlacementQuery { job: 7, units_needed: 1, gpus_per_node: 2, candidates: cands.iter().enumerate().map(|(i, &(links, numa, cores, gpus))| Candidate {
            node: i as u32, units: 1, gpu_links: links, numa_domains: numa, free_cores_after: cores, free_gpus_after: gpus,
        }).collect() };
        for config in [default_config("topology-placement"), "strategy = \"spread\"".to_string()] {
            let mut native = TopologyPlacement::default();
            native.init(&config).unwrap();
            let mut slot = PolicySlot::<PlacementWorld>::new(host()).unwrap();
            let v = slot.load(&component("topology-placement"), &config).unwrap();
            slot.activate(v, "t", 0).unwrap();
            // Three jobs: the candidates, none, and the candidates in reverse.
            let batch: PlacementBatch = [
                q.clone(),
                PlacementQuery { job: 8, candidates: vec![], ..q.clone() },
                PlacementQuery { job: 9, candidates: q.candidates.iter().rev().copied().collect(), ..q.clone() },
            ].into_iter().collect();
            prop_assert_eq!(slot.decide(now, &batch), Some(native.rank(&batch)));
        }
    }
}

#[test]
fn a_fairshare_swap_or_rollback_changes_the_revision_the_kernel_watches() {
    let (set, slots) = policy_set(&host(), &builtins(), "test", 0).unwrap();
    let start = set.fairshare.revision();
    let faster = slots
        .fairshare
        .lock()
        .unwrap()
        .load(&component("fairtree"), "half_life_s = 3600")
        .unwrap();
    assert_eq!(
        set.fairshare.revision(),
        start,
        "loading alone changes nothing"
    );
    slots
        .fairshare
        .lock()
        .unwrap()
        .activate(faster, "admin", 10)
        .unwrap();
    let swapped = set.fairshare.revision();
    assert_ne!(swapped, start);
    slots
        .fairshare
        .lock()
        .unwrap()
        .rollback(None, "admin", 20)
        .unwrap();
    assert_ne!(set.fairshare.revision(), swapped);
}

#[test]
fn a_swap_mid_replay_changes_decisions_only_after_the_swap_point() {
    let mut t = trace("lublin_256.swf");
    t.jobs.truncate(1500);
    let swap_at: Time = t.jobs[700].submit;
    let (set, _) = policy_set(&host(), &builtins(), "test", 0).unwrap();
    let before = run(&t, set);

    let (set, slots) = policy_set(&host(), &builtins(), "test", 0).unwrap();
    let xfactor = slots
        .priority
        .lock()
        .unwrap()
        .load(&component("xfactor-priority"), "")
        .unwrap();
    let mut swapped = false;
    let after = replay_with(
        &t,
        cluster_from_header(&t, 1).unwrap(),
        set,
        &opts(),
        &mut |_| {},
        &mut |now| {
            if !swapped && now >= swap_at {
                slots
                    .priority
                    .lock()
                    .unwrap()
                    .activate(xfactor, "admin", now)
                    .unwrap();
                swapped = true;
            }
        },
    )
    .unwrap();
    assert!(swapped);
    let early = |r: &Report| {
        r.schedule
            .iter()
            .filter(|s| s.1 < swap_at)
            .copied()
            .collect::<Vec<_>>()
    };
    assert!(!early(&before).is_empty());
    assert_eq!(
        early(&before),
        early(&after),
        "nothing before the swap point may change"
    );
    assert_ne!(
        before.schedule, after.schedule,
        "the new policy changes later decisions"
    );
    let history = slots.priority.lock().unwrap().history().to_vec();
    assert_eq!(history.len(), 2);
    assert_eq!(
        (
            history[1].at >= swap_at,
            history[1].who.as_str(),
            history[1].action
        ),
        (true, "admin", "activate")
    );
}

#[test]
fn shadow_reports_what_would_change_and_rollback_restores() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let v1 = slot
        .load(&component("multifactor"), &default_config("multifactor"))
        .unwrap();
    slot.activate(v1, "admin", 0).unwrap();
    let v2 = slot.load(&component("xfactor-priority"), "").unwrap();
    slot.record_batches(true);
    let noop = |_: Time, b: &PriorityBatch| vec![0; b.len()];
    assert!(slot.shadow(v2, noop).is_err(), "no batch seen yet");
    // Short jobs that waited a little against long jobs that waited long.
    let jobs: PriorityBatch = (0..20)
        .map(|i| PriorityInput {
            job: i + 1,
            submit_time: i as i64 * 100,
            age: 5000 - i as i64 * 100,
            cores: 1,
            nodes: 1,
            gpus: 0,
            time_limit: Some(if i % 2 == 0 { 86_400 } else { 300 }),
            partition_tier: 0,
            qos: 0,
            qos_priority: 0,
            fairshare: 0.5,
            user: 0,
            account: 0,
        })
        .collect();
    slot.decide(5000, &jobs).unwrap();
    let report = slot.shadow(v2, noop).unwrap();
    assert_eq!(report.batch, 20);
    assert!(
        report.changed > 0 && !report.examples.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        slot.shadow(v1, noop).unwrap().changed,
        0,
        "the active version against itself"
    );
    assert_eq!(slot.active(), Some(v1), "shadow never activates");

    slot.activate(v2, "admin", 10).unwrap();
    assert_eq!(slot.rollback(None, "admin", 20).unwrap(), v1);
    assert_eq!(slot.active(), Some(v1));
    let h = slot.history();
    assert_eq!(
        h.iter().map(|r| r.action).collect::<Vec<_>>(),
        vec!["activate", "activate", "rollback"]
    );
    assert!(h
        .iter()
        .all(|r| r.sha256.as_ref().is_some_and(|s| s.len() == 64)));
    assert_ne!(h[0].sha256, h[1].sha256);
    assert!(
        slot.rollback(None, "admin", 30).is_err(),
        "nothing earlier than v1"
    );
    let listed = slot.versions();
    assert_eq!(
        (
            listed[0].name.as_str(),
            listed[0].active,
            listed[1].name.as_str()
        ),
        ("multifactor", true, "xfactor")
    );
}

/// A placement answer may leave the kernel's order unsaid (topology-placement answers
/// nothing for a job whose candidates already come in its order), so a shadow run
/// compares the node each job would try first, not the answers' first entries.
#[test]
fn a_placement_shadow_compares_first_choices_not_answers() {
    let cand = |node, free_cores_after| Candidate {
        node,
        units: 1,
        gpu_links: 0,
        numa_domains: 1,
        free_cores_after,
        free_gpus_after: 0,
    };
    let query = |job, candidates| PlacementQuery {
        job,
        units_needed: 1,
        gpus_per_node: 0,
        candidates,
    };
    // Job 1's candidates come tightest first (pack's order); job 2's do not.
    let batch: PlacementBatch = [
        query(1, vec![cand(10, 1), cand(11, 5), cand(12, 9)]),
        query(2, vec![cand(20, 9), cand(21, 1)]),
    ]
    .into_iter()
    .collect();
    let mut slot = PolicySlot::<PlacementWorld>::new(host()).unwrap();
    let pack = slot.load(&component("topology-placement"), "").unwrap();
    let spread = slot
        .load(&component("topology-placement"), "strategy = \"spread\"")
        .unwrap();
    // Nothing active: against a native answer that spells out every index.
    let spelled_out = |_: Time, b: &PlacementBatch| {
        let mut r = gantry_abi::PlacementRanking::new();
        for q in 0..b.len() {
            r.push(0..b.candidates(q).len() as u32);
        }
        r
    };
    let report = slot.shadow_on(pack, 0, &batch, spelled_out).unwrap();
    assert_eq!((report.batch, report.changed), (2, 1), "{report:?}");
    assert_eq!(
        report.examples,
        [(2, "node 20".to_string(), "node 21".to_string())]
    );
    slot.activate(pack, "admin", 0).unwrap();
    let report = slot.shadow_on(spread, 0, &batch, spelled_out).unwrap();
    assert_eq!(report.changed, 2, "{report:?}");
    assert_eq!(
        report.examples[0],
        (1, "node 10".to_string(), "node 12".to_string())
    );
}

/// A version receives only the columns it declares (the job ids are one); the slot asks
/// for the union of its active and fallback versions' columns; a batch without them is
/// refused and counted.
#[test]
fn a_priority_version_gets_only_the_columns_it_reads() {
    use gantry_abi::PriorityFields as F;
    let now = 10_000;
    let jobs: Vec<PriorityInput> = (0..50)
        .map(|i| PriorityInput {
            job: i + 1,
            submit_time: i as i64 * 37,
            age: now - i as i64 * 37,
            cores: 1 + i % 16,
            nodes: 1,
            gpus: i % 3,
            time_limit: Some(600 + i as i64 * 60),
            partition_tier: (i % 2) as u32,
            qos: 0,
            qos_priority: (i % 4) as u32 * 10,
            fairshare: (i % 10) as f64 / 10.0,
            user: 0,
            account: 0,
        })
        .collect();
    let full: PriorityBatch = jobs.iter().copied().collect();
    let mut native = Multifactor::default();
    native.init(&default_config("multifactor")).unwrap();

    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    assert_eq!(slot.fields(), F::NONE, "nothing active, nothing read");
    let v1 = slot
        .load(&component("multifactor"), &default_config("multifactor"))
        .unwrap();
    slot.activate(v1, "t", 0).unwrap();
    assert_eq!(slot.fields(), native.fields());
    assert_eq!(
        native.fields(),
        F::AGE | F::CORES | F::PARTITION_TIER | F::QOS_PRIORITY | F::FAIRSHARE
    );

    // Exactly its columns: the same answer as the native build on the full batch.
    let mut narrow = PriorityBatch::with_fields(native.fields());
    jobs.iter().for_each(|&j| narrow.push(j));
    assert_eq!(
        slot.decide(now, &narrow),
        Some(native.prioritize(now, &full))
    );

    // A fallback that reads other columns widens what the slot asks for.
    let v2 = slot.load(&component("xfactor-priority"), "").unwrap();
    slot.activate(v2, "t", 1).unwrap();
    assert_eq!(
        slot.fields(),
        native.fields() | F::TIME_LIMIT | F::GPUS,
        "xfactor active, multifactor its fallback"
    );
    slot.record_batches(true);
    assert_eq!(
        slot.fields(),
        F::ALL,
        "a recorded batch may be shadowed by anyone"
    );
    slot.record_batches(false);

    // A batch lacking xfactor's columns: refused before the call, multifactor answers.
    assert_eq!(
        slot.decide(now, &narrow),
        Some(native.prioritize(now, &full))
    );
    assert_eq!(slot.active(), Some(v1), "fell back");
    let failure = &slot.failures()[0];
    assert_eq!(failure.version, v2);
    assert!(failure.reason.contains("lacks columns"), "{failure:?}");

    // The job ids are such a column: a version that names them gets them, and a batch
    // built without them is refused.
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let by_id = slot.load(&component("fifo-by-job-id"), "").unwrap();
    slot.activate(by_id, "t", 0).unwrap();
    assert_eq!(slot.fields(), F::JOB);
    let mut ids_only = PriorityBatch::with_fields(F::JOB);
    jobs.iter().for_each(|&j| ids_only.push(j));
    let oldest_first: Vec<i64> = jobs.iter().map(|j| -(j.job as i64)).collect();
    assert_eq!(slot.decide(now, &ids_only), Some(oldest_first));
    assert!(narrow.job().is_empty() && narrow.len() == jobs.len());
    assert_eq!(
        slot.decide(now, &narrow),
        None,
        "no good version to fall back to"
    );
    assert!(slot.failures()[0].reason.contains("lacks columns"));
}

/// The multifactor component breaks its priorities into the factors its native build
/// gives, xfactor into its own; a version without a breakdown gives none; with no
/// version answering, the slot leaves the breakdown to the native default.
#[test]
fn the_multifactor_component_explains_its_priorities_as_its_native_build() {
    let now = 50_000;
    let jobs: PriorityBatch = (0..40u64)
        .map(|i| PriorityInput {
            job: i + 1,
            submit_time: i as i64 * 997,
            age: now - i as i64 * 997,
            cores: 1 + i % 24,
            partition_tier: (i % 3) as u32,
            qos_priority: (i % 5) as u32 * 10,
            fairshare: (i % 7) as f64 / 7.0,
            nodes: 1,
            gpus: 0,
            time_limit: None,
            qos: 0,
            user: 0,
            account: 0,
        })
        .collect();
    let mut native = Multifactor::default();
    native.init(&default_config("multifactor")).unwrap();

    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    assert_eq!(slot.explain(now, &jobs), None, "nothing active");
    let v1 = slot
        .load(&component("multifactor"), &default_config("multifactor"))
        .unwrap();
    slot.activate(v1, "t", 0).unwrap();
    let factors = slot.explain(now, &jobs).unwrap().unwrap();
    assert_eq!(factors, native.explain(now, &jobs));
    assert_eq!(factors.len(), 5);
    assert!(factors.iter().all(|f| f.values.len() == jobs.len()));

    let v2 = slot.load(&component("xfactor-priority"), "").unwrap();
    slot.activate(v2, "t", 1).unwrap();
    let names: Vec<String> = slot
        .explain(now, &jobs)
        .unwrap()
        .unwrap()
        .into_iter()
        .map(|f| f.name)
        .collect();
    assert_eq!(
        names,
        ["XFACTOR", "GPUBOOST"],
        "a site policy's own factors"
    );

    // A version that does not explain itself (the SDK's default) has no breakdown.
    let v3 = slot.load(&component("fifo-by-job-id"), "").unwrap();
    slot.activate(v3, "t", 2).unwrap();
    assert_eq!(
        slot.explain(now, &jobs),
        Some(Ok(Vec::new())),
        "no breakdown"
    );
}

/// A component built before `explain` existed (the plain `priority` world) loads,
/// answers as it always did, and explains nothing.
#[test]
fn a_component_of_the_plain_priority_world_loads_and_explains_nothing() {
    use gantry_abi::PriorityFields as F;
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let v = slot
        .load(&kept_component("priority-world-fifo-by-job-id"), "")
        .unwrap();
    slot.activate(v, "t", 0).unwrap();
    assert_eq!(slot.fields(), F::JOB);
    let mut batch = PriorityBatch::with_fields(F::JOB);
    for id in [5, 3, 9] {
        batch.push(PriorityInput {
            job: id,
            submit_time: 0,
            age: 0,
            cores: 1,
            nodes: 1,
            gpus: 0,
            time_limit: None,
            partition_tier: 0,
            qos: 0,
            qos_priority: 0,
            fairshare: 1.0,
            user: 0,
            account: 0,
        });
    }
    assert_eq!(slot.decide(10, &batch), Some(vec![-5, -3, -9]));
    assert_eq!(slot.explain(10, &batch), Some(Ok(Vec::new())));
}
