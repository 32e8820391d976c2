//! Allocator invariants and the topology-aware choice on the example cluster's GPU nodes.

mod common;

use common::*;
use gantry_kernel::alloc::{node_units, plan_node};
use gantry_kernel::cluster::NodeId;
use gantry_kernel::job::{Allocation, GpuRequest, JobShape, MemoryRequest, ResourceRequest};
use gantry_kernel::topology::ones;
use gantry_kernel::{Cluster, JobSpec, SchedulerConfig};
use proptest::prelude::*;

/// Checks that every node's free state plus what `held` allocations took equals the
/// node when idle, with no core or GPU given twice, and partition totals agree.
fn assert_accounting(c: &Cluster, held: &[Allocation]) {
    for node in &c.nodes {
        let idle = node.idle_free();
        let mut cores = node.free.cores.clone();
        let mut gpus = node.free.gpus;
        let mut mem = node.free.memory_mb;
        for a in held
            .iter()
            .flat_map(|a| &a.nodes)
            .filter(|a| a.node == node.id)
        {
            assert_eq!(
                cores.intersection_count(&a.cores),
                0,
                "core handed out twice on {}",
                node.name
            );
            assert_eq!(gpus & a.gpus, 0, "GPU handed out twice on {}", node.name);
            cores.union_with(&a.cores);
            gpus |= a.gpus;
            mem += a.memory_mb;
        }
        assert_eq!(cores, idle.cores, "cores on {}", node.name);
        assert_eq!(gpus, idle.gpus, "gpus on {}", node.name);
        assert_eq!(mem, idle.memory_mb, "memory on {}", node.name);
        assert_eq!(
            node.free.core_count as usize,
            node.free.cores.count_ones(..)
        );
    }
    for p in &c.partitions {
        let sum: u64 = p
            .nodes
            .iter()
            .map(|&n| c.node(n))
            .filter(|n| n.schedulable())
            .map(|n| n.free.core_count as u64)
            .sum();
        assert_eq!(
            p.free_cores(),
            sum,
            "free-core total of partition {}",
            p.name
        );
    }
}

fn shape_strategy() -> impl Strategy<Value = JobShape> {
    (
        proptest::option::of(1u32..4),
        1u32..40,
        1u32..9,
        0u32..5,
        any::<bool>(),
        0u64..64_000,
        0u8..10,
        proptest::collection::vec(0u32..40, 0..4),
        any::<bool>(),
    )
        .prop_map(
            |(nodes, tasks, cpt, gpus, per_cpu, mem, excl, named, only)| JobShape {
                nodes: if gpus > 0 {
                    Some(nodes.unwrap_or(1))
                } else {
                    nodes
                },
                // Submission normalises tasks to at least one per node; shapes here do the same.
                tasks: tasks.max(nodes.unwrap_or(1)),
                cpus_per_task: cpt,
                memory: if mem < 1000 {
                    MemoryRequest::None
                } else if mem % 7 == 0 {
                    MemoryRequest::WholeNode
                } else if per_cpu {
                    MemoryRequest::PerCpu(mem / 16)
                } else {
                    MemoryRequest::PerNode(mem)
                },
                gpus_per_node: gpus,
                gres: Vec::new(),
                exclusive: excl == 0,
                features: 0,
                // Some node ids, as -w (the only ones allowed) or -x (never used).
                only_nodes: if only { sorted_ids(&named) } else { Vec::new() },
                excluded_nodes: if only { Vec::new() } else { sorted_ids(&named) },
            },
        )
}

fn sorted_ids(ids: &[u32]) -> Vec<NodeId> {
    let mut v: Vec<NodeId> = ids.iter().map(|&i| NodeId(i)).collect();
    v.sort_unstable();
    v.dedup();
    v
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Any sequence of allocations and releases keeps exact accounting, and releasing
    /// everything gives back the idle cluster.
    #[test]
    fn allocation_never_overcommits_and_release_is_exact(ops in proptest::collection::vec((shape_strategy(), 0usize..3, any::<bool>()), 1..60)) {
        let mut c = example_cluster();
        let parts: Vec<_> = c.partitions.iter().map(|p| p.id).collect();
        let idle: Vec<_> = c.nodes.iter().map(|n| n.free.clone()).collect();
        let mut held: Vec<Allocation> = Vec::new();
        for (shape, part, release_first) in ops {
            if release_first && !held.is_empty() {
                let a = held.remove(0);
                c.release(&a);
            }
            let part = parts[part % parts.len()];
            let before: Vec<_> = c.nodes.iter().map(|n| n.free.clone()).collect();
            let cands = c.candidates(part, &shape, &|_| true, 2);
            // A candidate describes exactly what planning the node would give.
            for cand in cands.iter().flatten() {
                let node = c.node(NodeId(cand.node));
                let tasks = match shape.nodes {
                    Some(n) => shape.tasks.div_ceil(n),
                    None => cand.units,
                };
                let plan = plan_node(node, &node.free, &shape, tasks);
                prop_assert!(plan.is_some(), "candidate {} cannot be planned", node.name);
                let plan = plan.unwrap();
                let t = &node.topology;
                prop_assert_eq!(cand.gpu_links, t.set_links(plan.gpus));
                prop_assert_eq!(
                    cand.numa_domains,
                    (t.core_numa_mask(&plan.cores) | t.gpu_numa_mask(plan.gpus)).count_ones()
                );
                prop_assert_eq!(
                    cand.free_cores_after,
                    node.free.core_count - plan.cores.count_ones(..) as u32
                );
                prop_assert_eq!(cand.free_gpus_after, (node.free.gpus & !plan.gpus).count_ones());
            }
            let order: Vec<NodeId> = cands.iter().flatten().map(|c| NodeId(c.node)).collect();
            match c.allocate(&shape, &order, &|_| true) {
                Some(a) => {
                    prop_assert!(cands.is_some(), "allocated although no candidates were found");
                    prop_assert_eq!(a.nodes.iter().map(|n| n.tasks).sum::<u32>(), shape.tasks);
                    if let Some(n) = shape.nodes { prop_assert_eq!(a.nodes.len() as u32, n); }
                    for na in &a.nodes {
                        prop_assert!(shape.may_use(na.node), "allocated on {:?}, which -w/-x rules out", na.node);
                        prop_assert!(na.cores.count_ones(..) as u32 >= na.tasks * shape.cpus_per_task);
                        prop_assert!(na.gpus.count_ones() >= shape.gpus_per_node);
                    }
                    held.push(a);
                }
                None => {
                    let after: Vec<_> = c.nodes.iter().map(|n| n.free.clone()).collect();
                    prop_assert_eq!(before, after, "a failed allocation changed state");
                }
            }
            assert_accounting(&c, &held);
        }
        for a in held.drain(..) {
            c.release(&a);
        }
        let now: Vec<_> = c.nodes.iter().map(|n| n.free.clone()).collect();
        prop_assert_eq!(now, idle);
    }
}

fn gpu_job(gpus: u32, features: &[&str]) -> JobSpec {
    let req = ResourceRequest {
        tasks: 1,
        cpus_per_task: 4,
        gpus: GpuRequest::PerNode(gpus),
        features: features.iter().map(|s| s.to_string()).collect(),
        ..ResourceRequest::default()
    };
    let mut spec = JobSpec::new("gpu", "alice", req);
    spec.partition = Some("gpu".into());
    spec
}

/// Starts one job now and returns its allocation on its single node.
fn place(s: &mut gantry_kernel::Scheduler, spec: JobSpec) -> gantry_kernel::job::NodeAllocation {
    let id = s.submit(spec, 0).unwrap()[0];
    let out = s.cycle(0);
    assert!(out.started.contains(&id), "job {id} did not start");
    s.job(id).unwrap().allocation.clone().unwrap().nodes[0].clone()
}

#[test]
fn nvswitch_node_takes_gpus_from_fewest_numa_domains_with_local_cpus() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let a = place(&mut s, gpu_job(4, &["h100"]));
    let node = s.cluster().node(a.node).clone();
    assert!(node.name.starts_with("dgx"));
    assert_eq!(a.gpus, 0b0000_1111, "four GPUs on NUMA domains 0 and 1");
    assert_eq!(node.topology.set_links(a.gpus), 6 * 18);
    assert_eq!(
        node.topology.core_numa_mask(&a.cores) & !node.topology.gpu_numa_mask(a.gpus),
        0,
        "CPUs local to the GPUs"
    );

    // Now GPUs 0-3 are busy on that node; two more land on one NUMA domain (4,5).
    let b = place(&mut s, gpu_job(2, &["h100"]));
    assert_eq!(b.node, a.node, "tightest node first: the partly used DGX");
    assert_eq!(b.gpus, 0b0011_0000);
    let numa: Vec<usize> = ones(node.topology.core_numa_mask(&b.cores)).collect();
    assert_eq!(numa, vec![2], "cores from the GPUs' NUMA domain");
}

#[test]
fn bridged_node_takes_an_nvlink_pair_not_a_pcie_pair() {
    let mut s = scheduler(example_cluster(), SchedulerConfig::default());
    let one = place(&mut s, gpu_job(1, &["a6000"]));
    assert_eq!(one.gpus, 0b0001);
    let pair = place(&mut s, gpu_job(2, &["a6000"]));
    let node = s.cluster().node(pair.node);
    if pair.node == one.node {
        assert_eq!(
            pair.gpus, 0b1100,
            "GPU 0 is taken, so the bridged pair 2-3, not 1-2"
        );
    } else {
        assert_eq!(pair.gpus, 0b0011);
    }
    assert_eq!(node.topology.set_links(pair.gpus), 4);
    assert_eq!(
        node.topology.core_numa_mask(&pair.cores),
        node.topology.gpu_numa_mask(pair.gpus)
    );
}

#[test]
fn units_reflect_every_resource_kind() {
    let c = example_cluster();
    let dgx = c.node(c.node_by_name("dgx01").unwrap());
    let mut shape = JobShape {
        nodes: Some(1),
        tasks: 1,
        cpus_per_task: 1,
        memory: MemoryRequest::None,
        gpus_per_node: 9,
        gres: Vec::new(),
        exclusive: false,
        features: 0,
        only_nodes: Vec::new(),
        excluded_nodes: Vec::new(),
    };
    assert_eq!(
        node_units(dgx, &dgx.free, &shape),
        0,
        "nine GPUs do not fit an eight-GPU node"
    );
    shape.gpus_per_node = 8;
    assert_eq!(node_units(dgx, &dgx.free, &shape), 1);
    shape.gres = vec![(c.gres_id("nvme").unwrap(), 9)];
    assert_eq!(
        node_units(dgx, &dgx.free, &shape),
        0,
        "only eight nvme on the node"
    );
    let cpu = c.node(c.node_by_name("cpu001").unwrap());
    let flex = JobShape {
        nodes: None,
        tasks: 100,
        cpus_per_task: 2,
        memory: MemoryRequest::PerCpu(1024),
        gpus_per_node: 0,
        gres: Vec::new(),
        exclusive: false,
        features: 0,
        only_nodes: Vec::new(),
        excluded_nodes: Vec::new(),
    };
    assert_eq!(
        node_units(cpu, &cpu.free, &flex),
        32,
        "64 cores / 2 per task"
    );
}
