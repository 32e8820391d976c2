//! Kernel benchmarks: placing one job on a large cluster, and one full scheduling cycle.
//! Run with `cargo bench --bench kernel`; figures go to docs, never into tests.

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use gantry_kernel::job::{GpuRequest, JobShape, MemoryRequest};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{
    Cluster, ClusterDescription, JobSpec, ResourceRequest, Scheduler, SchedulerConfig,
};

/// `nodes` nodes of 2 sockets × 64 cores with 8 NVSwitch GPUs each.
fn gpu_cluster(nodes: u32) -> Cluster {
    let text = format!(
        "[[node_type]]\nname='g'\nsockets=2\nnuma_per_socket=1\ncores_per_numa=64\nmemory='1T'\ngpus={{numa=[0,0,0,0,1,1,1,1],nvlink={{all_to_all=18}}}}\n[[nodes]]\nnames='n[1-{nodes}]'\ntype='g'\n"
    );
    ClusterDescription::from_toml(&text)
        .unwrap()
        .build()
        .unwrap()
}

fn bench_place(c: &mut Criterion) {
    let mut cluster = gpu_cluster(1000);
    // Half the cluster busy: every other node has 6 GPUs and 100 cores taken.
    let busy = JobShape {
        nodes: Some(1),
        tasks: 100,
        cpus_per_task: 1,
        memory: MemoryRequest::None,
        gpus_per_node: 6,
        gres: Vec::new(),
        exclusive: false,
        features: 0,
    };
    let part = cluster.partitions[0].id;
    for i in (0..1000).step_by(2) {
        let id = cluster.nodes[i].id;
        cluster.allocate(&busy, &[id], &|_| true).unwrap();
    }
    let shape = JobShape {
        nodes: Some(1),
        tasks: 1,
        cpus_per_task: 16,
        memory: MemoryRequest::PerNode(64_000),
        gpus_per_node: 4,
        gres: Vec::new(),
        exclusive: false,
        features: 0,
    };
    c.bench_function("place 4-GPU job on 1000 nodes (half busy)", |b| {
        b.iter_batched_ref(
            || cluster.clone(),
            |cl| {
                let cands = cl.candidates(part, &shape, &|_| true, 4).unwrap();
                let nodes: Vec<_> = cands
                    .iter()
                    .map(|c| gantry_kernel::cluster::NodeId(c.node))
                    .collect();
                cl.allocate(&shape, &nodes, &|_| true).unwrap()
            },
            BatchSize::LargeInput,
        )
    });
}

fn bench_cycle(c: &mut Criterion) {
    let mut s = Scheduler::new(
        gpu_cluster(100),
        SchedulerConfig::default(),
        PolicySet::default(),
    );
    for i in 0..2000u32 {
        let req = ResourceRequest {
            tasks: 1 + i % 32,
            gpus: if i % 3 == 0 {
                GpuRequest::PerNode(1 + i % 8)
            } else {
                GpuRequest::None
            },
            ..ResourceRequest::default()
        };
        let mut spec = JobSpec::new("bench", format!("u{}", i % 20), req);
        spec.time_limit = Some(600 + (i as i64 % 7) * 600);
        s.submit(spec, i as i64).unwrap();
    }
    // Fill the cluster once; the measured cycle then walks a full queue.
    s.cycle(2000);
    c.bench_function("cycle: 100 GPU nodes, ~2000 pending, EASY", |b| {
        b.iter(|| s.cycle(2001))
    });
}

criterion_group!(benches, bench_place, bench_cycle);
criterion_main!(benches);
