//! The allocator: finds nodes that can hold a job, chooses cores and GPUs inside each
//! node, and takes or returns resources all-or-nothing.
//!
//! Invariants (property-tested): a node never gives out more than it has; `release`
//! returns exactly what `allocate` took; a failed `allocate` changes nothing; a
//! candidate describes exactly what `plan_node` would give on that node.
//! Candidate search walks a partition's free index (ordered by free cores) from the
//! smallest node that could fit, so full nodes are never looked at.

use crate::cluster::{Cluster, Node, NodeFree, NodeId, NodeState, PartitionId};
use crate::job::{Allocation, JobShape, MemoryRequest, NodeAllocation};

pub use gantry_abi::Candidate;

impl JobShape {
    /// Tasks per node for a fixed node count (the larger share when uneven).
    fn tasks_per_node(&self) -> u32 {
        match self.nodes {
            Some(n) => self.tasks.div_ceil(n.max(1)),
            None => self.tasks,
        }
    }

    /// Units the whole job needs: nodes for a fixed count, tasks otherwise.
    pub fn units_needed(&self) -> u32 {
        self.nodes.unwrap_or(self.tasks)
    }

    /// Fewest free cores a node must have to be worth looking at.
    fn min_node_cores(&self) -> u32 {
        match self.nodes {
            Some(_) => self.tasks_per_node() * self.cpus_per_task,
            None => self.cpus_per_task,
        }
    }

    fn memory_for(&self, node: &Node, tasks: u32) -> u64 {
        match self.memory {
            MemoryRequest::None => 0,
            MemoryRequest::PerNode(m) => m,
            MemoryRequest::PerCpu(m) => m * (tasks * self.cpus_per_task) as u64,
            MemoryRequest::WholeNode => node.topology.memory_mb(),
        }
    }
}

/// Units (see [`Candidate::units`]) a node with free state `free` offers `shape`.
pub fn node_units(node: &Node, free: &NodeFree, shape: &JobShape) -> u32 {
    if node.features & shape.features != shape.features || !shape.may_use(node.id) {
        return 0;
    }
    if shape
        .gres
        .iter()
        .any(|&(g, n)| free.gres.get(g.index()).copied().unwrap_or(0) < n)
    {
        return 0;
    }
    if shape.exclusive
        && (free.core_count != node.topology.core_count() || free.gpus != node.topology.all_gpus())
    {
        return 0;
    }
    if (free.gpus.count_ones()) < shape.gpus_per_node {
        return 0;
    }
    let cpt = shape.cpus_per_task.max(1);
    match shape.nodes {
        Some(_) => {
            let tpn = shape.tasks_per_node();
            let ok = free.core_count >= tpn * cpt && free.memory_mb >= shape.memory_for(node, tpn);
            ok as u32
        }
        None => {
            let by_cores = free.core_count / cpt;
            let by_mem = match shape.memory {
                MemoryRequest::None => u32::MAX,
                MemoryRequest::PerNode(_) | MemoryRequest::WholeNode => {
                    if free.memory_mb >= shape.memory_for(node, 0) {
                        u32::MAX
                    } else {
                        0
                    }
                }
                MemoryRequest::PerCpu(m) => {
                    u32::try_from(free.memory_mb / (m * cpt as u64).max(1)).unwrap_or(u32::MAX)
                }
            };
            by_cores.min(by_mem).min(shape.tasks)
        }
    }
}

/// Plans what `node` gives `shape` for `tasks` tasks without changing anything.
pub fn plan_node(
    node: &Node,
    free: &NodeFree,
    shape: &JobShape,
    tasks: u32,
) -> Option<NodeAllocation> {
    let topo = &node.topology;
    if shape.exclusive {
        if node_units(node, free, shape) == 0 {
            return None;
        }
        return Some(NodeAllocation {
            node: node.id,
            tasks,
            cores: free.cores.clone(),
            memory_mb: free.memory_mb,
            gpus: free.gpus,
            gres: shape.gres.clone(),
        });
    }
    let gpus = topo.choose_gpus(free.gpus, shape.gpus_per_node)?;
    let cores = topo.choose_cores(&free.cores, tasks * shape.cpus_per_task, gpus.numa_mask)?;
    if !memory_and_gres_fit(node, free, shape, tasks) {
        return None;
    }
    Some(NodeAllocation {
        node: node.id,
        tasks,
        cores,
        memory_mb: shape.memory_for(node, tasks),
        gpus: gpus.gpus,
        gres: shape.gres.clone(),
    })
}

/// What [`plan_node`] would give, as placement ranks it: the GPUs and the NVLink links
/// among them, how many cores, and the NUMA domains both span. Builds no core set: it is
/// asked for every candidate node of every job considered, and only the allocation
/// finally made needs one.
struct PlanSummary {
    gpus: u64,
    gpu_links: u32,
    cores: u32,
    numa_mask: u64,
}

/// [`plan_node`]'s choice, summed up; `None` exactly when `plan_node` answers `None`.
fn plan_summary(node: &Node, free: &NodeFree, shape: &JobShape, tasks: u32) -> Option<PlanSummary> {
    let topo = &node.topology;
    if shape.exclusive {
        if node_units(node, free, shape) == 0 {
            return None;
        }
        return Some(PlanSummary {
            gpus: free.gpus,
            gpu_links: topo.set_links(free.gpus),
            cores: free.core_count,
            numa_mask: topo.core_numa_mask(&free.cores) | topo.gpu_numa_mask(free.gpus),
        });
    }
    // The GPU choice already carries its links and domains: not counted again here.
    let gpus = topo.choose_gpus(free.gpus, shape.gpus_per_node)?;
    let cores = tasks * shape.cpus_per_task;
    let core_numa = topo.chosen_cores_numa_mask(&free.cores, cores, gpus.numa_mask)?;
    memory_and_gres_fit(node, free, shape, tasks).then_some(PlanSummary {
        gpus: gpus.gpus,
        gpu_links: gpus.links,
        cores,
        numa_mask: core_numa | gpus.numa_mask,
    })
}

/// Whether `free` has the memory and generic resources `tasks` tasks of `shape` need.
fn memory_and_gres_fit(node: &Node, free: &NodeFree, shape: &JobShape, tasks: u32) -> bool {
    shape.memory_for(node, tasks) <= free.memory_mb
        && shape
            .gres
            .iter()
            .all(|&(g, n)| free.gres.get(g.index()).copied().unwrap_or(0) >= n)
}

/// Takes `a` out of `f` in place.
pub fn take_into(f: &mut NodeFree, a: &NodeAllocation) {
    f.cores.difference_with(&a.cores);
    f.core_count = f.cores.count_ones(..) as u32;
    f.memory_mb -= a.memory_mb;
    f.gpus &= !a.gpus;
    for &(g, n) in &a.gres {
        f.gres[g.index()] -= n;
    }
}

/// Gives `a` back to `f` in place.
pub fn give_back_into(f: &mut NodeFree, a: &NodeAllocation) {
    f.cores.union_with(&a.cores);
    f.core_count = f.cores.count_ones(..) as u32;
    f.memory_mb += a.memory_mb;
    f.gpus |= a.gpus;
    for &(g, n) in &a.gres {
        f.gres[g.index()] += n;
    }
}

impl Cluster {
    /// True when the partition's free totals alone rule the job out right now.
    fn surely_too_big(&self, part: PartitionId, shape: &JobShape) -> bool {
        let p = self.partition(part);
        let cores = match shape.nodes {
            Some(n) => n as u64 * (shape.tasks_per_node() * shape.cpus_per_task) as u64,
            None => shape.cores(),
        };
        cores > p.free_cores
            || shape.gpus_per_node as u64 * shape.nodes.unwrap_or(1) as u64 > p.free_gpus
    }

    /// Nodes of `part` that can hold `shape` now and pass `usable`, enough to run it, plus
    /// up to `slack` more from each end of the free index so placement has a choice.
    /// `None` when the job cannot start now.
    pub fn candidates(
        &self,
        part: PartitionId,
        shape: &JobShape,
        usable: &dyn Fn(NodeId) -> bool,
        slack: usize,
    ) -> Option<Vec<Candidate>> {
        if self.surely_too_big(part, shape) {
            return None;
        }
        let p = self.partition(part);
        let needed = shape.units_needed();
        let mut found = Vec::new();
        let mut have = 0u32;
        let mut extra = 0usize;
        let mut last_low = None;
        for &(_, id) in p.free_index.range((shape.min_node_cores(), NodeId(0))..) {
            if have >= needed && extra >= slack {
                break;
            }
            last_low = Some(id);
            if let Some(c) = self.candidate(id, shape, usable) {
                if have >= needed {
                    extra += 1;
                }
                have = have.saturating_add(c.units);
                found.push(c);
            }
        }
        if have < needed {
            return None;
        }
        if let Some(last) = last_low {
            let hi: Vec<Candidate> = p
                .free_index
                .iter()
                .rev()
                .take_while(|&&(_, id)| id != last)
                .filter_map(|&(_, id)| self.candidate(id, shape, usable))
                .take(slack)
                .collect();
            found.extend(hi.into_iter().rev());
        }
        Some(found)
    }

    fn candidate(
        &self,
        id: NodeId,
        shape: &JobShape,
        usable: &dyn Fn(NodeId) -> bool,
    ) -> Option<Candidate> {
        let node = self.node(id);
        let units = node_units(node, &node.free, shape);
        if units == 0 || !usable(id) {
            return None;
        }
        let tasks = match shape.nodes {
            Some(_) => shape.tasks_per_node(),
            None => units,
        };
        let plan = plan_summary(node, &node.free, shape, tasks)?;
        Some(Candidate {
            node: id.0,
            units,
            gpu_links: plan.gpu_links,
            numa_domains: plan.numa_mask.count_ones(),
            free_cores_after: node.free.core_count - plan.cores,
            free_gpus_after: (node.free.gpus & !plan.gpus).count_ones(),
        })
    }

    /// Allocates `shape` on nodes taken in the order of `ranked`, skipping any that no
    /// longer fit or fail `usable`. All-or-nothing: on `None` nothing has changed.
    pub fn allocate(
        &mut self,
        shape: &JobShape,
        ranked: &[NodeId],
        usable: &dyn Fn(NodeId) -> bool,
    ) -> Option<Allocation> {
        let needed = shape.units_needed();
        let mut nodes: Vec<NodeAllocation> = Vec::new();
        let mut placed = 0u32;
        for &id in ranked {
            if placed >= needed {
                break;
            }
            if nodes.iter().any(|a| a.node == id) || !usable(id) {
                continue;
            }
            let node = self.node(id);
            if !node.schedulable() {
                continue;
            }
            let units = node_units(node, &node.free, shape);
            if units == 0 {
                continue;
            }
            let tasks = match shape.nodes {
                // Spread tasks evenly: the first `tasks % n` nodes take one more.
                Some(n) => shape.tasks / n + u32::from(placed < shape.tasks % n),
                None => units.min(needed - placed),
            };
            if let Some(plan) = plan_node(node, &node.free, shape, tasks) {
                placed += if shape.nodes.is_some() { 1 } else { tasks };
                nodes.push(plan);
            }
        }
        if placed < needed {
            return None;
        }
        for a in &nodes {
            self.update_free(a.node, |free| take_into(free, a));
        }
        Some(Allocation { nodes })
    }

    /// Returns everything `alloc` took.
    /// Takes exactly `alloc` (the same cores and GPUs on the same nodes) if all of it is
    /// free on nodes that are not down; otherwise takes nothing and answers false.
    pub fn take_exact(&mut self, alloc: &Allocation) -> bool {
        let fits = alloc.nodes.iter().all(|a| {
            let node = self.node(a.node);
            let f = &node.free;
            node.state != NodeState::Down
                && a.cores.is_subset(&f.cores)
                && a.gpus & f.gpus == a.gpus
                && a.memory_mb <= f.memory_mb
                && a.gres.iter().all(|&(g, n)| f.gres[g.index()] >= n)
        });
        if fits {
            for a in &alloc.nodes {
                self.update_free(a.node, |free| take_into(free, a));
            }
        }
        fits
    }

    pub fn release(&mut self, alloc: &Allocation) {
        for a in &alloc.nodes {
            self.update_free(a.node, |free| give_back_into(free, a));
        }
    }
}
