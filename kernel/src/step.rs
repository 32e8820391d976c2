//! Job steps: where a step's tasks go inside its job's allocation.
//!
//! A job is an allocation; a step (one `srun` inside it) runs some tasks on some of its
//! nodes. [`place_step`] decides which nodes, how many tasks on each, which task ids
//! (block or cyclic), and each task's own cores and GPUs — GPUs NVLink-near each other
//! and cores NUMA-near the task's GPUs, by the same topology choices the allocator
//! makes. It is a pure function of the allocation, the node topologies, what other
//! steps hold, and the request: the daemon records its answer and has the agents
//! start the tasks.
//!
//! Slurm's rules, as its `srun` documents them: by default a step takes the tasks
//! laid out as the job's (`SLURM_TASKS_PER_NODE`) on all its nodes; `-N`, `-n`,
//! `--ntasks-per-node`, `-w`, `-x` narrow that. A step holds every core and GPU of its
//! job on its nodes (so a second step waits), its tasks bound to equal shares of them,
//! unless `--exact` (or `-c`) asks for only what its tasks use; an `--overlap` step
//! holds nothing and may share with any step.

use fixedbitset::FixedBitSet;

use crate::cluster::NodeId;
use crate::job::Allocation;
use crate::topology::{ones, NodeTopology};

/// How task ids are laid over the nodes (`--distribution`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Distribution {
    /// Consecutive task ids share a node.
    #[default]
    Block,
    /// Task ids go round the nodes.
    Cyclic,
}

/// Which GPUs a task sees (`--gpu-bind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GpuBind {
    /// Its own GPUs with `--gpus-per-task`, else every GPU of the step on its node.
    #[default]
    Default,
    /// Every GPU of the step on its node, even with `--gpus-per-task`.
    None,
    /// Its own GPUs with `--gpus-per-task`, else the step's GPUs on its node that share
    /// a NUMA domain with its cores (all of them when none does).
    Closest,
}

/// What a step asks for (`srun`'s layout options, resolved to node ids).
#[derive(Debug, Clone, Default)]
pub struct StepRequest {
    /// `-N`: how many of the allocation's nodes.
    pub nodes: Option<u32>,
    /// `-n`: how many tasks.
    pub tasks: Option<u32>,
    /// `--ntasks-per-node`.
    pub tasks_per_node: Option<u32>,
    /// `-c` (at least one core per task is used).
    pub cpus_per_task: u32,
    /// `--gpus-per-task`: each task gets its own; 0: every task sees the node's GPUs.
    pub gpus_per_task: u32,
    /// `-w`: exactly these nodes (each must be in the allocation).
    pub only_nodes: Vec<NodeId>,
    /// `-x`.
    pub excluded_nodes: Vec<NodeId>,
    /// `--exact`/`--exclusive` (Slurm implies it with `-c`): hold only the tasks' cores
    /// and GPUs.
    pub exact: bool,
    /// `--overlap`: hold nothing, ignore what other steps hold.
    pub overlap: bool,
    pub distribution: Distribution,
    pub gpu_bind: GpuBind,
}

/// One task: its id in the step and what it is bound to.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPlacement {
    /// The task's rank in the step (`SLURM_PROCID`).
    pub task: u32,
    pub cores: FixedBitSet,
    /// The GPUs it sees, a mask of the node's GPU indices; 0: every GPU of the step on
    /// its node ([`StepNode::gpus`]).
    pub gpus: u64,
}

/// The step's part of one node.
#[derive(Debug, Clone, PartialEq)]
pub struct StepNode {
    pub node: NodeId,
    /// In local order (`SLURM_LOCALID` is the index here).
    pub tasks: Vec<TaskPlacement>,
    /// What the step holds on the node (nothing for an overlapping step).
    pub held_cores: FixedBitSet,
    pub held_gpus: u64,
    /// The GPUs the node's tasks may see when they have none of their own.
    pub gpus: u64,
}

/// Where a step runs.
#[derive(Debug, Clone, PartialEq)]
pub struct StepLayout {
    /// In allocation order (`SLURM_NODEID` is the index here).
    pub nodes: Vec<StepNode>,
    pub tasks: u32,
}

impl StepLayout {
    /// What the step holds, node by node: what [`place_step`] must keep other steps of
    /// the job from while it runs.
    pub fn held(&self) -> Vec<Held> {
        self.nodes
            .iter()
            .map(|n| Held {
                node: n.node,
                cores: n.held_cores.clone(),
                gpus: n.held_gpus,
            })
            .collect()
    }
}

/// What other steps of the job hold on one node.
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    pub node: NodeId,
    pub cores: FixedBitSet,
    pub gpus: u64,
}

/// Why a step cannot be placed. [`StepError::Busy`] passes once other steps end; the
/// others never will (Slurm answers them at once).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("Requested node configuration is not available: {0}")]
    NodeConfiguration(String),
    #[error("More processors requested than permitted: {0}")]
    TooManyProcessors(String),
    #[error("Requested nodes are busy")]
    Busy,
}

/// Places a step in `alloc`. `topology` gives each node's topology; `held` what the
/// job's other (non-overlapping) steps hold now.
pub fn place_step<'t>(
    alloc: &Allocation,
    topology: impl Fn(NodeId) -> &'t NodeTopology,
    held: &[Held],
    req: &StepRequest,
) -> Result<StepLayout, StepError> {
    use StepError::*;
    let cpt = req.cpus_per_task.max(1);
    let exact = req.exact;
    for n in &req.only_nodes {
        if !alloc.nodes.iter().any(|a| a.node == *n) {
            return Err(NodeConfiguration(
                "a node named by --nodelist is not in the job's allocation".into(),
            ));
        }
        if req.excluded_nodes.contains(n) {
            return Err(NodeConfiguration(
                "a node is both in --nodelist and --exclude".into(),
            ));
        }
    }
    let eligible: Vec<usize> = (0..alloc.nodes.len())
        .filter(|&i| !req.excluded_nodes.contains(&alloc.nodes[i].node))
        .collect();
    let have = eligible.len() as u32;
    if matches!(req.nodes, Some(0)) || matches!(req.tasks, Some(0)) {
        return Err(NodeConfiguration(
            "a step needs at least one node and one task".into(),
        ));
    }
    if matches!(req.tasks_per_node, Some(0)) {
        return Err(NodeConfiguration(
            "--ntasks-per-node must be at least 1".into(),
        ));
    }
    let wanted_nodes = match (req.nodes, req.only_nodes.len() as u32, req.tasks) {
        (Some(n), w, _) if n < w => {
            return Err(NodeConfiguration(format!(
                "--nodelist names {w} nodes but -N asks for {n}"
            )))
        }
        (Some(n), _, _) => n,
        (None, w, _) if w > 0 => w,
        // -n alone: as many nodes as it can use, one task each at least.
        (None, _, Some(t)) if req.tasks_per_node.is_none() => t.min(have),
        (None, _, Some(t)) => t.div_ceil(req.tasks_per_node.unwrap_or(1)).min(have),
        (None, _, None) => have,
    };
    if wanted_nodes > have {
        return Err(NodeConfiguration(format!(
            "{wanted_nodes} nodes asked, the job's allocation has {have}{}",
            if req.excluded_nodes.is_empty() {
                ""
            } else {
                " not excluded"
            }
        )));
    }
    // The -w nodes first, then the rest in allocation order; kept in allocation order.
    let mut chosen: Vec<usize> = eligible
        .iter()
        .copied()
        .filter(|&i| req.only_nodes.contains(&alloc.nodes[i].node))
        .collect();
    for &i in &eligible {
        if chosen.len() as u32 >= wanted_nodes {
            break;
        }
        if !chosen.contains(&i) {
            chosen.push(i);
        }
    }
    chosen.sort_unstable();

    // What each chosen node can give this step.
    let mut free: Vec<(FixedBitSet, u64)> = Vec::with_capacity(chosen.len());
    for &i in &chosen {
        let a = &alloc.nodes[i];
        let mut cores = a.cores.clone();
        let mut gpus = a.gpus;
        if !req.overlap {
            for h in held.iter().filter(|h| h.node == a.node) {
                let mut c = h.cores.clone();
                c.grow(cores.len());
                cores.difference_with(&c);
                gpus &= !h.gpus;
            }
        }
        free.push((cores, gpus));
    }
    // How many tasks `cores` and `gpus` hold (GPUs count only with --gpus-per-task).
    let tasks_in = |cores: &FixedBitSet, gpus: u64| -> u32 {
        let by_cores = cores.count_ones(..) as u32 / cpt;
        let by_gpus = gpus
            .count_ones()
            .checked_div(req.gpus_per_task)
            .unwrap_or(u32::MAX);
        by_cores.min(by_gpus)
    };
    let capacity = |pool: &(FixedBitSet, u64)| tasks_in(&pool.0, pool.1);
    let whole = |k: usize| {
        let a = &alloc.nodes[chosen[k]];
        tasks_in(&a.cores, a.gpus)
    };

    // Tasks per node.
    let n = chosen.len();
    let counts: Vec<u32> = match (req.tasks, req.tasks_per_node) {
        (None, Some(per)) => vec![per; n],
        (Some(t), per) => {
            if t < n as u32 {
                return Err(NodeConfiguration(format!(
                    "{t} tasks cannot run on {n} nodes: each node runs at least one"
                )));
            }
            spread(t, n, |k| per.unwrap_or(u32::MAX).min(whole(k))).ok_or_else(|| {
                TooManyProcessors(format!(
                    "{t} tasks of {cpt} CPUs{} do not fit in the job's allocation on {n} nodes",
                    gpus_text(req.gpus_per_task)
                ))
            })?
        }
        // The job's own layout on those nodes, or one task per node for -N alone.
        (None, None) if req.nodes.is_some() || !req.only_nodes.is_empty() => vec![1; n],
        (None, None) => chosen
            .iter()
            .map(|&i| alloc.nodes[i].tasks.max(1))
            .collect(),
    };
    for (k, &c) in counts.iter().enumerate() {
        if c > whole(k) {
            return Err(TooManyProcessors(format!(
                "{c} tasks of {cpt} CPUs{} on one node; the job has {} CPUs{} there",
                gpus_text(req.gpus_per_task),
                alloc.nodes[chosen[k]].cores.count_ones(..),
                if req.gpus_per_task > 0 {
                    format!(" and {} GPUs", alloc.nodes[chosen[k]].gpus.count_ones())
                } else {
                    String::new()
                }
            )));
        }
        if c > capacity(&free[k]) {
            return Err(Busy);
        }
    }
    let total: u32 = counts.iter().sum();

    // Task ids.
    let mut ids: Vec<Vec<u32>> = counts
        .iter()
        .map(|&c| Vec::with_capacity(c as usize))
        .collect();
    match req.distribution {
        Distribution::Block => {
            let mut next = 0;
            for (k, &c) in counts.iter().enumerate() {
                ids[k].extend(next..next + c);
                next += c;
            }
        }
        Distribution::Cyclic => {
            let mut next = 0;
            while next < total {
                for (k, &c) in counts.iter().enumerate() {
                    if (ids[k].len() as u32) < c {
                        ids[k].push(next);
                        next += 1;
                    }
                }
            }
        }
    }

    // Each task's cores and GPUs.
    let mut nodes = Vec::with_capacity(n);
    for (k, &i) in chosen.iter().enumerate() {
        let a = &alloc.nodes[i];
        let topo = topology(a.node);
        let (mut cores, mut gpus) = free[k].clone();
        cores.grow(topo.core_width());
        let mut tasks = Vec::with_capacity(ids[k].len());
        let mut used_cores = FixedBitSet::with_capacity(cores.len());
        let mut used_gpus = 0u64;
        for &task in &ids[k] {
            let (task_gpus, near) = if req.gpus_per_task > 0 {
                let g = topo.choose_gpus(gpus, req.gpus_per_task).ok_or(Busy)?;
                (g.gpus, g.numa_mask)
            } else {
                (0, 0)
            };
            let task_cores = topo.choose_cores(&cores, cpt, near).ok_or(Busy)?;
            cores.difference_with(&task_cores);
            gpus &= !task_gpus;
            used_cores.union_with(&task_cores);
            used_gpus |= task_gpus;
            tasks.push(TaskPlacement {
                task,
                cores: task_cores,
                gpus: task_gpus,
            });
        }
        // A step that holds its nodes' cores spreads those its tasks did not take
        // among them, as Slurm binds (one task on a node of eight cores runs on all
        // eight: an MPI daemon starts its ranks within them).
        if !exact && !req.overlap && !tasks.is_empty() {
            let extra = cores.count_ones(..) as u32 / tasks.len() as u32;
            if extra > 0 {
                for t in &mut tasks {
                    let near = topo.core_numa_mask(&t.cores);
                    if let Some(more) = topo.choose_cores(&cores, extra, near) {
                        cores.difference_with(&more);
                        t.cores.union_with(&more);
                    }
                }
            }
        }
        // What each task sees, now that what the step holds is known.
        for t in &mut tasks {
            t.gpus = match req.gpu_bind {
                GpuBind::None => 0,
                GpuBind::Default => t.gpus,
                GpuBind::Closest if t.gpus != 0 => t.gpus,
                GpuBind::Closest => {
                    let near = topo.core_numa_mask(&t.cores);
                    ones(a.gpus)
                        .filter(|&g| topo.gpu_numa_mask(1u64 << g) & near != 0)
                        .fold(0u64, |m, g| m | 1u64 << g)
                }
            };
        }
        let (held_cores, held_gpus) = if req.overlap {
            (FixedBitSet::new(), 0)
        } else if exact {
            (used_cores, used_gpus)
        } else {
            (free[k].0.clone(), free[k].1)
        };
        nodes.push(StepNode {
            node: a.node,
            tasks,
            held_cores,
            held_gpus,
            gpus: if req.gpus_per_task > 0 {
                used_gpus
            } else {
                a.gpus
            },
        });
    }
    Ok(StepLayout {
        nodes,
        tasks: total,
    })
}

fn gpus_text(per_task: u32) -> String {
    if per_task > 0 {
        format!(" and {per_task} GPUs")
    } else {
        String::new()
    }
}

/// Spreads `total` tasks over `n` nodes as evenly as their caps allow, the first nodes
/// taking the remainder (Slurm's block layout: `-N2 -n3` is 2,1). `None` when the caps
/// sum to less than `total`.
fn spread(total: u32, n: usize, cap: impl Fn(usize) -> u32) -> Option<Vec<u32>> {
    let caps: Vec<u32> = (0..n).map(&cap).collect();
    if caps.iter().map(|&c| c as u64).sum::<u64>() < total as u64 {
        return None;
    }
    let mut counts = vec![0u32; n];
    let mut left = total;
    // Round by round, one more task on each node with room, first nodes first: even,
    // and bounded by `total` rounds of `n` steps at most.
    while left > 0 {
        let mut placed = false;
        for k in 0..n {
            if left == 0 {
                break;
            }
            if counts[k] < caps[k] {
                counts[k] += 1;
                left -= 1;
                placed = true;
            }
        }
        if !placed {
            return None;
        }
    }
    Some(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::NodeAllocation;
    use crate::topology::{Gpu, NodeTopology};

    /// 2 sockets × 1 NUMA domain × 8 cores; 8 GPUs, four per domain, NVLink-paired.
    fn topo() -> NodeTopology {
        let t = NodeTopology::uniform(2, 1, 8, 64_000);
        let gpus = (0..8)
            .map(|g| Gpu {
                numa: (g / 4) as u16,
                model: "H200".into(),
            })
            .collect();
        let mut links = vec![0u8; 64];
        for g in 0..8 {
            let pair = g ^ 1;
            links[g * 8 + pair] = 2;
        }
        t.with_gpus(gpus, links)
    }

    fn alloc(nodes: u32, tasks: u32) -> Allocation {
        let mut cores = FixedBitSet::with_capacity(16);
        cores.insert_range(..);
        Allocation {
            nodes: (0..nodes)
                .map(|i| NodeAllocation {
                    node: NodeId(i),
                    tasks,
                    cores: cores.clone(),
                    memory_mb: 64_000,
                    gpus: 0xff,
                    gres: Vec::new(),
                })
                .collect(),
        }
    }

    fn place(a: &Allocation, held: &[Held], req: &StepRequest) -> Result<StepLayout, StepError> {
        let t = topo();
        place_step(a, |_| &t, held, req)
    }

    #[test]
    fn by_default_a_step_runs_the_jobs_tasks_on_all_its_nodes() {
        let a = alloc(2, 2);
        let l = place(&a, &[], &StepRequest::default()).unwrap();
        assert_eq!(l.tasks, 4);
        let ids: Vec<Vec<u32>> = l
            .nodes
            .iter()
            .map(|n| n.tasks.iter().map(|t| t.task).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 1], vec![2, 3]]);
        // Not exact: the step holds the whole allocation on its nodes, and its two tasks
        // there share it, eight cores each, without overlap.
        assert_eq!(l.nodes[0].held_cores.count_ones(..), 16);
        let (x, y) = (&l.nodes[0].tasks[0].cores, &l.nodes[0].tasks[1].cores);
        assert!(x.is_disjoint(y));
        assert_eq!((x.count_ones(..), y.count_ones(..)), (8, 8));
    }

    #[test]
    fn cyclic_goes_round_the_nodes_and_block_fills_them() {
        let a = alloc(2, 4);
        let req = StepRequest {
            tasks: Some(3),
            distribution: Distribution::Cyclic,
            ..Default::default()
        };
        let l = place(&a, &[], &req).unwrap();
        let ids: Vec<Vec<u32>> = l
            .nodes
            .iter()
            .map(|n| n.tasks.iter().map(|t| t.task).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 2], vec![1]]);
        let req = StepRequest {
            tasks: Some(3),
            ..Default::default()
        };
        let l = place(&a, &[], &req).unwrap();
        let ids: Vec<Vec<u32>> = l
            .nodes
            .iter()
            .map(|n| n.tasks.iter().map(|t| t.task).collect())
            .collect();
        assert_eq!(ids, vec![vec![0, 1], vec![2]]);
    }

    #[test]
    fn gpus_per_task_gives_each_task_its_own_gpu_near_its_cores() {
        let a = alloc(1, 8);
        let req = StepRequest {
            tasks_per_node: Some(8),
            gpus_per_task: 1,
            cpus_per_task: 2,
            ..Default::default()
        };
        let l = place(&a, &[], &req).unwrap();
        let t = topo();
        let mut seen = 0u64;
        let mut cores = FixedBitSet::with_capacity(16);
        for task in &l.nodes[0].tasks {
            assert_eq!(task.gpus.count_ones(), 1);
            assert_eq!(seen & task.gpus, 0, "a GPU given twice");
            seen |= task.gpus;
            assert!(cores.is_disjoint(&task.cores), "CPU sets overlap");
            cores.union_with(&task.cores);
            assert_eq!(
                t.core_numa_mask(&task.cores),
                t.gpu_numa_mask(task.gpus),
                "cores on the GPU's NUMA domain"
            );
        }
        assert_eq!(seen, 0xff);
    }

    #[test]
    fn asking_more_than_the_allocation_fails_at_once_and_a_held_node_is_busy() {
        let a = alloc(2, 1);
        let err = place(
            &a,
            &[],
            &StepRequest {
                nodes: Some(3),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StepError::NodeConfiguration(_)), "{err}");
        let err = place(
            &a,
            &[],
            &StepRequest {
                tasks: Some(40),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StepError::TooManyProcessors(_)), "{err}");

        // A first, non-exact step holds its nodes; a second waits unless it overlaps.
        let first = place(&a, &[], &StepRequest::default()).unwrap();
        let held = first.held();
        assert_eq!(
            place(&a, &held, &StepRequest::default()).unwrap_err(),
            StepError::Busy
        );
        let over = StepRequest {
            overlap: true,
            ..Default::default()
        };
        let l = place(&a, &held, &over).unwrap();
        assert_eq!(l.nodes[0].held_cores.count_ones(..), 0);

        // Exact steps share a node's cores.
        let exact = StepRequest {
            tasks: Some(1),
            nodes: Some(1),
            exact: true,
            ..Default::default()
        };
        let one = place(&a, &[], &exact).unwrap();
        let held = one.held();
        let two = place(&a, &held, &exact).unwrap();
        assert!(one.nodes[0].tasks[0]
            .cores
            .is_disjoint(&two.nodes[0].tasks[0].cores));
    }

    #[test]
    fn gpu_bind_closest_shows_a_task_the_gpus_of_its_numa_domain_and_none_shows_all() {
        let a = alloc(1, 2);
        let req = StepRequest {
            tasks: Some(2),
            cpus_per_task: 8,
            exact: true,
            gpu_bind: GpuBind::Closest,
            ..Default::default()
        };
        let l = place(&a, &[], &req).unwrap();
        let t = topo();
        for task in &l.nodes[0].tasks {
            // Eight cores fill one domain; its four GPUs are the task's.
            assert_eq!(task.gpus.count_ones(), 4, "{task:?}");
            assert_eq!(t.gpu_numa_mask(task.gpus), t.core_numa_mask(&task.cores));
        }
        let none = StepRequest {
            gpus_per_task: 1,
            gpu_bind: GpuBind::None,
            ..req
        };
        let l = place(&a, &[], &none).unwrap();
        assert!(
            l.nodes[0].tasks.iter().all(|t| t.gpus == 0),
            "all of the node's"
        );
        assert_eq!(l.nodes[0].gpus.count_ones(), 2, "the two the tasks hold");
    }

    #[test]
    fn nodelist_and_exclude_pick_the_nodes() {
        let a = alloc(4, 1);
        let l = place(
            &a,
            &[],
            &StepRequest {
                only_nodes: vec![NodeId(2)],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(l.nodes.len(), 1);
        assert_eq!(l.nodes[0].node, NodeId(2));
        let l = place(
            &a,
            &[],
            &StepRequest {
                excluded_nodes: vec![NodeId(0)],
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            l.nodes.iter().map(|n| n.node.0).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let err = place(
            &a,
            &[],
            &StepRequest {
                only_nodes: vec![NodeId(9)],
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(matches!(err, StepError::NodeConfiguration(_)));
    }
}
