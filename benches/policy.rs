//! Policy-plane benchmarks: the built-in multifactor priority over 100,000 waiting jobs as
//! a Wasm component against the same source built natively, and hot-swap latency (load
//! request to active) for each built-in, and the topology placement policy over one
//! placement batch, and Fair Tree over a share tree the size of the KTH trace's (252
//! accounts, 320 users), Wasm against native. Needs `scripts/build-policies.sh` first.
//! Run with `cargo bench --bench policy`; `cargo bench --bench policy_ratio` measures the
//! same Wasm/native pairs call by call in turn, for a ratio that holds on a noisy machine.
//! Group `language *`: the xfactor example as written in each language.

mod common;

use std::sync::Arc;

use common::Pairing;
use criterion::{criterion_group, criterion_main, Criterion};
use gantry_abi::Priority;
use gantry_wasm_host::{
    FairshareWorld, HostLimits, PlacementWorld, PolicyHost, PolicySlot, PreemptionWorld,
    PriorityWorld,
};

fn priority_100k(c: &mut Criterion) {
    let mut s = common::priority(100_000);
    let mut g = c.benchmark_group("multifactor priority, 100k waiting jobs");
    g.sample_size(30);
    g.bench_function("native", |b| b.iter(|| s.call_native()));
    g.bench_function("wasm", |b| b.iter(|| s.call_wasm()));
    g.finish();

    // The fixed cost of a call: a trace replay makes tens of thousands of small ones.
    let one = common::jobs(1, s.now);
    let mut g = c.benchmark_group("multifactor priority, 1 waiting job");
    g.bench_function("native", |b| b.iter(|| s.native.prioritize(s.now, &one)));
    g.bench_function("wasm", |b| b.iter(|| s.slot.decide(s.now, &one).unwrap()));
    g.finish();
}

fn fairshare_kth(c: &mut Criterion) {
    let mut s = common::fairshare();
    let mut g = c.benchmark_group("fair-tree fairshare, 573-node share tree");
    g.sample_size(30);
    g.bench_function("native", |b| b.iter(|| s.call_native()));
    g.bench_function("wasm", |b| b.iter(|| s.call_wasm()));
    g.finish();
}

fn placement_512(c: &mut Criterion) {
    let mut s = common::placement();
    let mut g = c.benchmark_group("topology placement, batch of 512 jobs with candidates");
    g.sample_size(30);
    g.bench_function("native", |b| b.iter(|| s.call_native()));
    g.bench_function("wasm", |b| b.iter(|| s.call_wasm()));
    g.finish();
}

fn hot_swap(c: &mut Criterion) {
    let host = PolicyHost::new(HostLimits::default()).unwrap();
    let mut g = c.benchmark_group("hot swap, load to active (compiled once per sha256)");
    g.sample_size(20);
    macro_rules! swap {
        ($world:ty, $name:literal) => {
            let bytes = common::component($name);
            let cfg = common::config($name);
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

    let bytes = common::component("multifactor");
    let mut g = c.benchmark_group("first load of a new component (compile included)");
    g.sample_size(10);
    let first_load = |host: Arc<PolicyHost>| {
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

/// The same policy (xfactor) written in each language: the cost of one call over
/// 100,000 waiting jobs, a hot swap of a component compiled before, and a first load
/// (compile included) — docs/POLICIES.md's table per language.
fn languages(c: &mut Criterion) {
    let jobs = common::jobs(100_000, 1_000_000);
    for (language, name) in [("rust", "xfactor-priority"), ("c", "xfactor-priority-c")] {
        let bytes = common::component(name);
        let mut g = c.benchmark_group(format!("language {language}"));
        g.sample_size(10);
        let host = PolicyHost::new(HostLimits::default()).unwrap();
        let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
        let id = slot.load(&bytes, "").unwrap();
        slot.activate(id, "bench", 0).unwrap();
        g.bench_function("call, 100,000 jobs", |b| {
            b.iter(|| slot.decide(1_000_000, &jobs).unwrap())
        });
        g.bench_function("hot swap", |b| {
            b.iter(|| {
                let id = slot.load(&bytes, "").unwrap();
                slot.activate(id, "bench", 0).unwrap();
            })
        });
        g.bench_function("first load", |b| {
            b.iter(|| {
                let host = PolicyHost::new(HostLimits::default()).unwrap();
                let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
                let id = slot.load(&bytes, "").unwrap();
                slot.activate(id, "bench", 0).unwrap();
            })
        });
        g.finish();
    }
}

criterion_group!(
    benches,
    priority_100k,
    fairshare_kth,
    placement_512,
    hot_swap,
    languages
);
criterion_main!(benches);
