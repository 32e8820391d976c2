//! What the policy benchmarks share: the inputs (a priority batch, a share tree, a
//! placement batch) and each built-in policy set up twice, natively and as a component in
//! a `PolicySlot`, checked to give the same answers before anything is timed.

#![allow(dead_code)] // each benchmark uses part of it

pub mod args;
pub mod ratio;
pub mod scale;
pub mod submit;

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Duration;

use gantry_abi::{
    Fairshare, Placement, PlacementBatch, PlacementQuery, Policy, Priority, PriorityBatch,
    PriorityInput, ShareNode, ShareTree, ASSOCIATION_IDS,
};
use gantry_policy_fairtree::FairTree;
use gantry_policy_multifactor::Multifactor;
use gantry_policy_topology_placement::TopologyPlacement;
use gantry_wasm_host::{
    FairshareWorld, HostLimits, PlacementWorld, PolicyHost, PolicySlot, PriorityWorld,
};

/// Where the built-in components are: `GANTRY_POLICY_DIR` when set (to compare two
/// builds of the policies), else where scripts/build-policies.sh puts them.
pub fn policy_dir() -> PathBuf {
    std::env::var_os("GANTRY_POLICY_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/policies"),
        PathBuf::from,
    )
}

/// Where the built-in component `name` is, in [`policy_dir`].
pub fn component_path(name: &str) -> PathBuf {
    policy_dir().join(format!("{name}.wasm"))
}

/// A built-in component, from [`component_path`].
pub fn component(name: &str) -> Vec<u8> {
    let path = component_path(name);
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/build-policies.sh", path.display()))
}

pub fn config(name: &str) -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("policies")
            .join(name)
            .join("default.toml"),
    )
    .unwrap()
}

pub fn jobs(n: u64, now: i64) -> PriorityBatch {
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

/// A share tree the shape of the KTH replay's: a root, 252 accounts under it, 320 users
/// spread over them, with uneven usage (`seed` reorders it).
pub fn share_tree(seed: u64) -> ShareTree {
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

/// A placement batch as the cycle builds one: 512 pending jobs of the synthetic mix with
/// their candidate nodes on a half-busy 1,000-node GPU cluster.
pub fn placement_batch() -> PlacementBatch {
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

/// A policy set up twice, natively and as a component: one call of either, on the
/// setup's input. The answer goes through `black_box`, so the call is never elided.
pub trait Pairing {
    fn call_native(&mut self);
    fn call_wasm(&mut self);
}

/// `name`'s component loaded into a fresh slot and made active.
fn active_slot<W: gantry_wasm_host::Decision>(
    host: std::sync::Arc<PolicyHost>,
    name: &str,
) -> PolicySlot<W> {
    let mut slot = PolicySlot::<W>::new(host).unwrap();
    let id = slot.load(&component(name), &config(name)).unwrap();
    slot.activate(id, "bench", 0).unwrap();
    slot
}

/// Multifactor priority over `n` waiting jobs, native and as a component.
pub struct PrioritySetup {
    pub now: i64,
    pub batch: PriorityBatch,
    pub native: Multifactor,
    pub slot: PolicySlot<PriorityWorld>,
}

pub fn priority(n: u64) -> PrioritySetup {
    let now = 10_000_000;
    let batch = jobs(n, now);
    let mut native = Multifactor::default();
    native.init(&config("multifactor")).unwrap();
    let host = PolicyHost::new(HostLimits {
        call_timeout: Duration::from_secs(10),
        ..HostLimits::default()
    })
    .unwrap();
    let mut slot = active_slot::<PriorityWorld>(host, "multifactor");
    assert_eq!(
        slot.decide(now, &batch).unwrap(),
        native.prioritize(now, &batch),
        "same answers"
    );
    PrioritySetup {
        now,
        batch,
        native,
        slot,
    }
}

impl Pairing for PrioritySetup {
    fn call_native(&mut self) {
        black_box(self.native.prioritize(self.now, &self.batch));
    }
    fn call_wasm(&mut self) {
        black_box(self.slot.decide(self.now, &self.batch).unwrap());
    }
}

/// Fair Tree over two share trees of the KTH shape, which each build takes in turn so
/// that every call ranks the users anew (an unchanged ranking returns the last answer).
pub struct FairshareSetup {
    pub now: i64,
    pub trees: [ShareTree; 2],
    pub native: FairTree,
    pub slot: PolicySlot<FairshareWorld>,
    /// Calls made by each build, which pick the tree.
    native_calls: usize,
    wasm_calls: usize,
}

pub fn fairshare() -> FairshareSetup {
    let trees = [share_tree(0), share_tree(1)];
    let now = 10_000_000;
    let mut native = FairTree::default();
    native.init(&config("fairtree")).unwrap();
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut slot = active_slot::<FairshareWorld>(host, "fairtree");
    assert_eq!(
        slot.decide(now, &trees[0]).unwrap(),
        native.factors(now, &trees[0]),
        "same answers"
    );
    FairshareSetup {
        now,
        trees,
        native,
        slot,
        native_calls: 0,
        wasm_calls: 0,
    }
}

impl Pairing for FairshareSetup {
    fn call_native(&mut self) {
        self.native_calls += 1;
        let tree = &self.trees[self.native_calls % 2];
        black_box(self.native.factors(self.now, tree));
    }
    fn call_wasm(&mut self) {
        self.wasm_calls += 1;
        let tree = &self.trees[self.wasm_calls % 2];
        black_box(self.slot.decide(self.now, tree).unwrap());
    }
}

/// Topology placement over [`placement_batch`], native and as a component.
pub struct PlacementSetup {
    pub batch: PlacementBatch,
    pub native: TopologyPlacement,
    pub slot: PolicySlot<PlacementWorld>,
}

pub fn placement() -> PlacementSetup {
    let batch = placement_batch();
    assert_eq!(batch.len(), 512);
    let mut native = TopologyPlacement::default();
    native.init(&config("topology-placement")).unwrap();
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut slot = active_slot::<PlacementWorld>(host, "topology-placement");
    assert_eq!(
        slot.decide(0, &batch).unwrap(),
        native.rank(&batch),
        "same answers"
    );
    PlacementSetup {
        batch,
        native,
        slot,
    }
}

impl Pairing for PlacementSetup {
    fn call_native(&mut self) {
        black_box(self.native.rank(&self.batch));
    }
    fn call_wasm(&mut self) {
        black_box(self.slot.decide(0, &self.batch).unwrap());
    }
}
