//! Scale benchmarks on the seeded synthetic scenarios of `gantry_sim::synthetic` (the
//! same ones `gantry sim --synthetic` builds): one full scheduling cycle (Wasm built-in
//! policies, EASY backfill over every pending job) from a half-busy cluster, and placing
//! one job on 10,000 nodes with the allocator alone. Needs `scripts/build-policies.sh`.
//! Run with `cargo bench --bench scale`; figures go to docs/PERFORMANCE.md.

mod common;

use common::scale::{scenario, Builtins};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gantry_kernel::cluster::NodeId;
use gantry_kernel::job::{JobShape, MemoryRequest};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::SchedulerConfig;
use gantry_sim::SyntheticSpec;

fn full_cycle(c: &mut Criterion) {
    let builtins = Builtins::new();
    for (nodes, pending) in [(1_000, 10_000), (10_000, 100_000)] {
        let mut g = c.benchmark_group(format!(
            "full cycle, {nodes} nodes × {pending} pending, half busy, EASY over all"
        ));
        g.sample_size(10);
        g.bench_function("wasm built-ins", |b| {
            b.iter_batched(
                || scenario(nodes, pending, builtins.set()),
                |mut s| {
                    let out = s.scheduler.cycle(s.now);
                    assert!(!out.started.is_empty());
                    // Dropped outside the timing by returning it.
                    (s, out)
                },
                BatchSize::PerIteration,
            )
        });
        g.bench_function("native safe defaults", |b| {
            b.iter_batched(
                || scenario(nodes, pending, PolicySet::default()),
                |mut s| {
                    let out = s.scheduler.cycle(s.now);
                    (s, out)
                },
                BatchSize::PerIteration,
            )
        });
        g.finish();
    }
}

fn place_one(c: &mut Criterion) {
    let state = SyntheticSpec {
        nodes: 10_000,
        pending: 1,
        ..SyntheticSpec::default()
    }
    .start_running(
        PolicySet::default(),
        SchedulerConfig::default(),
        &mut |_| {},
    )
    .unwrap();
    let cluster = state.scheduler.cluster().clone();
    let part = cluster.partitions[0].id;
    let shape = JobShape {
        nodes: Some(1),
        tasks: 4,
        cpus_per_task: 16,
        memory: MemoryRequest::PerNode(256 * 1024),
        gpus_per_node: 4,
        gres: Vec::new(),
        exclusive: false,
        features: 0,
        only_nodes: Vec::new(),
        excluded_nodes: Vec::new(),
    };
    c.bench_function("place a 4-GPU job on 10,000 nodes (half busy)", |b| {
        b.iter_batched_ref(
            || cluster.clone(),
            |cl| {
                let cands = cl.candidates(part, &shape, &|_| true, 4).unwrap();
                let nodes: Vec<NodeId> = cands.iter().map(|c| NodeId(c.node)).collect();
                cl.allocate(&shape, &nodes, &|_| true).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
}

criterion_group!(benches, place_one, full_cycle);
criterion_main!(benches);
