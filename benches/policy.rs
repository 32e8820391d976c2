//! Policy-plane benchmarks: the built-in multifactor priority over 100,000 waiting jobs as
//! a Wasm component against the same source built natively, and hot-swap latency (load
//! request to active) for each built-in, and the topology placement policy over one
//! placement batch, and Fair Tree over a share tree the size of the KTH trace's (252
//! accounts, 320 users), Wasm against native. Needs `scripts/build-policies.sh` first.
//! Run with `cargo bench --bench policy`.

use std::path::PathBuf;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion};
use gantry_abi::{
    Fairshare, Placement, PlacementBatch, PlacementQuery, Policy, Priority, PriorityBatch,
    PriorityInput, ShareNode, ShareTree, ASSOCIATION_IDS,
};
use gantry_wasm_host::{
    FairshareWorld, HostLimits, PlacementWorld, PolicyHost, PolicySlot, PreemptionWorld,
    PriorityWorld,
};

fn component(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/policies")
        .join(format!("{name}.wasm"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-policies.sh", path.display()))
}

fn config(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(name)
            .join("default.toml"),
    )
    .unwrap()
}

fn jobs(n: u64, now: i64) -> PriorityBatch {
    (0..n)
        .map(|i| {
            let submit = (i as i64 * 7919) % now;
            PriorityInput {
                job: i + 1,
                submit_time: submit,
                age: now - submit,
                cores: 1 + (i * 31) % 256,
                nodes: 1 + (i % 4) as u32,
                gpus: i % 9,
                time_limit: Some(600 + (i as i64 % 48) * 1800),
                partition_tier: (i % 3) as u32,
                qos: (i % 4) as u32,
                qos_priority: ((i % 4) * 100) as u32,
                fairshare: (i % 1000) as f64 / 1000.0,
                user: (i % 500) as u32,
                account: (i % 40) as u32,
            }
        })
        .collect()
}

fn priority_100k(c: &mut Criterion) {
    let now = 10_000_000;
    let batch = jobs(100_000, now);
    let mut native = gantry_policy_multifactor::Multifactor::default();
    native.init(&config("multifactor")).unwrap();
    let host = PolicyHost::new(HostLimits {
        call_timeout: Duration::from_secs(10),
        ..HostLimits::default()
    })
    .unwrap();
    let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
    let id = slot
        .load(&component("multifactor"), &config("multifactor"))
        .unwrap();
    slot.activate(id, "bench", 0).unwrap();
    assert_eq!(
        slot.decide(now, &batch).unwrap(),
        native.prioritize(now, &batch),
        "same answers"
    );

    let mut g = c.benchmark_group("multifactor priority, 100k waiting jobs");
    g.sample_size(30);
    g.bench_function("native", |b| b.iter(|| native.prioritize(now, &batch)));
    g.bench_function("wasm", |b| b.iter(|| slot.decide(now, &batch).unwrap()));
    g.finish();

    // The fixed cost of a call: a trace replay makes tens of thousands of small ones.
    let one = jobs(1, now);
    let mut g = c.benchmark_group("multifactor priority, 1 waiting job");
    g.bench_function("native", |b| b.iter(|| native.prioritize(now, &one)));
    g.bench_function("wasm", |b| b.iter(|| slot.decide(now, &one).unwrap()));
    g.finish();
}

/// A share tree the shape of the KTH replay's: a root, 252 accounts under it, 320 users
/// spread over them, with uneven usage (`seed` reorders it).
fn share_tree(seed: u64) -> ShareTree {
    let mut tree = vec![ShareNode {
        id: 0,
        parent: None,
        shares: 1,
        usage: 0.0,
    }];
    tree.extend((1..=252).map(|a| ShareNode {
        id: a,
        parent: Some(0),
        shares: 1,
        usage: 0.0,
    }));
    tree.extend((0..320u32).map(|u| ShareNode {
        id: ASSOCIATION_IDS | u,
        parent: Some(1 + (u * 7) % 252),
        shares: 1,
        usage: ((u as u64 * 104_729 + seed * 7_919) % 1_000_003) as f64 * 1e3,
    }));
    for i in (1..tree.len()).rev() {
        if let Some(p) = tree[i].parent {
            tree[p as usize].usage += tree[i].usage;
        }
    }
    tree.into_iter().collect()
}

fn fairshare_kth(c: &mut Criterion) {
    // Two usage patterns taken in turn, so that every call ranks the users anew (an
    // unchanged ranking returns the last answer).
    let trees = [share_tree(0), share_tree(1)];
    let tree = &trees[0];
    let now = 10_000_000;
    let mut native = gantry_policy_fairtree::FairTree::default();
    native.init(&config("fairtree")).unwrap();
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut slot = PolicySlot::<FairshareWorld>::new(host).unwrap();
    let id = slot
        .load(&component("fairtree"), &config("fairtree"))
        .unwrap();
    slot.activate(id, "bench", 0).unwrap();
    assert_eq!(
        slot.decide(now, tree).unwrap(),
        native.factors(now, tree),
        "same answers"
    );
    let mut g = c.benchmark_group("fair-tree fairshare, 573-node share tree");
    g.sample_size(30);
    let mut turn = 0;
    g.bench_function("native", |b| {
        b.iter(|| {
            turn += 1;
            native.factors(now, &trees[turn % 2])
        })
    });
    g.bench_function("wasm", |b| {
        b.iter(|| {
            turn += 1;
            slot.decide(now, &trees[turn % 2]).unwrap()
        })
    });
    g.finish();
}

/// A placement batch as the cycle builds one: 512 pending jobs of the synthetic mix with
/// their candidate nodes on a half-busy 1,000-node GPU cluster.
fn placement_batch() -> PlacementBatch {
    let state = gantry_sim::SyntheticSpec {
        nodes: 1000,
        pending: 4000,
        ..Default::default()
    }
    .build(
        gantry_kernel::policy::PolicySet::default(),
        gantry_kernel::SchedulerConfig::default(),
        &mut |_| {},
    )
    .unwrap();
    let s = &state.scheduler;
    s.waiting()
        .iter()
        .filter_map(|&id| {
            let j = s.job(id)?;
            let candidates = s
                .cluster()
                .candidates(j.partition, &j.shape, &|_| true, 4)?;
            Some(PlacementQuery {
                job: id.0,
                units_needed: j.shape.units_needed(),
                gpus_per_node: j.shape.gpus_per_node,
                candidates,
            })
        })
        .take(512)
        .collect()
}

fn placement_512(c: &mut Criterion) {
    let batch = placement_batch();
    assert_eq!(batch.len(), 512);
    let mut native = gantry_policy_topology_placement::TopologyPlacement::default();
    native.init(&config("topology-placement")).unwrap();
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut slot = PolicySlot::<PlacementWorld>::new(host).unwrap();
    let id = slot
        .load(
            &component("topology-placement"),
            &config("topology-placement"),
        )
        .unwrap();
    slot.activate(id, "bench", 0).unwrap();
    assert_eq!(
        slot.decide(0, &batch).unwrap(),
        native.rank(&batch),
        "same answers"
    );
    let mut g = c.benchmark_group("topology placement, batch of 512 jobs with candidates");
    g.sample_size(30);
    g.bench_function("native", |b| b.iter(|| native.rank(&batch)));
    g.bench_function("wasm", |b| b.iter(|| slot.decide(0, &batch).unwrap()));
    g.finish();
}

fn hot_swap(c: &mut Criterion) {
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut g = c.benchmark_group("hot swap, load to active (compiled once per sha256)");
    g.sample_size(20);
    macro_rules! swap {
        ($world:ty, $name:literal) => {
            let bytes = component($name);
            let cfg = config($name);
            let mut slot = PolicySlot::<$world>::new(host.clone()).unwrap();
            g.bench_function($name, |b| {
                b.iter(|| {
                    let id = slot.load(&bytes, &cfg).unwrap();
                    slot.activate(id, "bench", 0).unwrap();
                })
            });
        };
    }
    swap!(PriorityWorld, "multifactor");
    swap!(FairshareWorld, "fairtree");
    swap!(PreemptionWorld, "qos-preemption");
    swap!(PlacementWorld, "topology-placement");
    g.finish();

    let bytes = component("multifactor");
    let mut g = c.benchmark_group("first load of a new component (compile included)");
    g.sample_size(10);
    let first_load = |host: std::sync::Arc<PolicyHost>| {
        let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
        let id = slot.load(&bytes, "").unwrap();
        slot.activate(id, "bench", 0).unwrap();
    };
    // A fresh host has an empty in-memory cache: it compiles.
    g.bench_function("multifactor", |b| {
        b.iter(|| first_load(PolicyHost::new(HostLimits::default()).unwrap()))
    });
    // A fresh host over a code cache that holds the component, as in a new process.
    let cache = tempfile::tempdir().unwrap();
    first_load(PolicyHost::with_code_cache(HostLimits::default(), cache.path().into()).unwrap());
    g.bench_function("multifactor, from the code cache", |b| {
        b.iter(|| {
            first_load(
                PolicyHost::with_code_cache(HostLimits::default(), cache.path().into()).unwrap(),
            )
        })
    });
    g.finish();
}

criterion_group!(
    benches,
    priority_100k,
    fairshare_kth,
    placement_512,
    hot_swap
);
criterion_main!(benches);
