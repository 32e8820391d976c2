//! The inside of one node: sockets → NUMA domains → cores, GPUs with their NUMA affinity
//! and an NVLink link-count matrix, and the in-node choice of GPUs and cores.
//!
//! Invariant: a topology is immutable once built; nodes of the same type share one
//! `Arc<NodeTopology>`. Free/used state lives in [`crate::cluster::NodeFree`], never here.
//! What is derived from the hardware (core counts, the GPU choice table) is computed by
//! [`NodeTopology::new`], so the GPUs and their links are set only through it.

use fixedbitset::FixedBitSet;

/// Most GPUs one node may have: GPU sets are `u64` masks.
pub const MAX_GPUS_PER_NODE: usize = 64;
/// Most NUMA domains one node may have: sets of domains are `u64` masks.
pub const MAX_NUMA_DOMAINS_PER_NODE: usize = 64;
/// Most cores one node may have (Slurm's limit on CPUs per node is the same order):
/// core indices are `u32`, and every core set is a bitset this wide.
pub const MAX_CORES_PER_NODE: usize = 65_536;

/// Topologies with at most this many GPUs answer [`NodeTopology::choose_gpus`] from a
/// table of every answer, built once with the topology: the GPU search was a quarter of
/// the largest scheduling cycle, asked again for every candidate node of every job,
/// while a node type has only `2^n × (n + 1)` distinct questions. Eight covers the
/// common 4- and 8-GPU boards at 2,304 entries (74 KiB per node type); wider nodes
/// search each time.
const GPU_TABLE_MAX_GPUS: usize = 8;

/// Above this many candidate subsets the GPU choice switches from exhaustive search to a
/// greedy one, so the allocator's cost stays bounded on very wide nodes.
const EXHAUSTIVE_GPU_SUBSETS: u64 = 20_000;

/// One NUMA domain: the cores it holds and its local memory.
#[derive(Debug, Clone, PartialEq)]
pub struct NumaDomain {
    /// Socket (package) index this domain belongs to.
    pub socket: u16,
    /// Core indices (node-local numbering) in this domain.
    pub cores: FixedBitSet,
    /// Memory attached to this domain, in MiB.
    pub memory_mb: u64,
}

/// One GPU and where it sits.
#[derive(Debug, Clone, PartialEq)]
pub struct Gpu {
    /// NUMA domain the GPU's PCIe root is attached to.
    pub numa: u16,
    /// Model name, for display (`"H100"`); never used on the hot path.
    pub model: String,
}

/// The hardware shape of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeTopology {
    pub sockets: u16,
    pub numa: Vec<NumaDomain>,
    gpus: Vec<Gpu>,
    /// NVLink link count between GPU `i` and GPU `j`, row-major `gpus.len()²`, symmetric,
    /// zero on the diagonal and between GPUs that only share PCIe.
    nvlink: Vec<u8>,
    core_count: u32,
    core_numa: Vec<u16>,
    memory_mb: u64,
    /// Every answer of the GPU search, for nodes of at most [`GPU_TABLE_MAX_GPUS`] GPUs.
    gpu_choices: Option<GpuChoiceTable>,
}

/// [`NodeTopology::choose_gpus`]'s answer for every free set and count: entry
/// `free × (n + 1) + k` for a node of `n` GPUs.
#[derive(Clone, PartialEq)]
struct GpuChoiceTable(Box<[Option<GpuChoice>]>);

impl std::fmt::Debug for GpuChoiceTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GpuChoiceTable({} entries)", self.0.len())
    }
}

/// What [`NodeTopology::choose_gpus`] found: the set and the figures placement uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GpuChoice {
    pub gpus: u64,
    /// Sum of NVLink links over all pairs inside the set.
    pub links: u32,
    /// Bit `d` set when NUMA domain `d` holds one of the chosen GPUs.
    pub numa_mask: u64,
}

impl NodeTopology {
    /// Builds a topology; `nvlink` must be `gpus.len()²` long and there may be at most
    /// [`MAX_NUMA_DOMAINS_PER_NODE`] domains, numbered sockets below that too (sets of
    /// sockets are `u64` masks as well; the config loader builds them so).
    pub fn new(sockets: u16, numa: Vec<NumaDomain>, gpus: Vec<Gpu>, nvlink: Vec<u8>) -> Self {
        assert!(
            numa.len() <= MAX_NUMA_DOMAINS_PER_NODE,
            "{} NUMA domains; at most {MAX_NUMA_DOMAINS_PER_NODE}",
            numa.len()
        );
        assert!(
            numa.iter()
                .all(|d| usize::from(d.socket) < MAX_NUMA_DOMAINS_PER_NODE),
            "a socket numbered {MAX_NUMA_DOMAINS_PER_NODE} or more"
        );
        let core_count = numa.iter().map(|d| d.cores.count_ones(..) as u32).sum();
        let width = numa.iter().map(|d| d.cores.len()).max().unwrap_or(0);
        let mut core_numa = vec![0u16; width];
        for (i, d) in numa.iter().enumerate() {
            for c in d.cores.ones() {
                core_numa[c] = i as u16;
            }
        }
        let memory_mb = numa.iter().map(|d| d.memory_mb).sum();
        let mut topology = Self {
            sockets,
            numa,
            gpus,
            nvlink,
            core_count,
            core_numa,
            memory_mb,
            gpu_choices: None,
        };
        let n = topology.gpus.len();
        if (1..=GPU_TABLE_MAX_GPUS).contains(&n) {
            let table = (0..1u64 << n)
                .flat_map(|free| (0..=n as u32).map(move |k| (free, k)))
                .map(|(free, k)| topology.search_gpus(free, k))
                .collect();
            topology.gpu_choices = Some(GpuChoiceTable(table));
        }
        topology
    }

    /// This topology with `gpus` attached and `nvlink` between them (see [`Self::new`]).
    pub fn with_gpus(self, gpus: Vec<Gpu>, nvlink: Vec<u8>) -> Self {
        Self::new(self.sockets, self.numa, gpus, nvlink)
    }

    /// A regular node: `sockets × numa_per_socket` domains of `cores_per_numa` cores each,
    /// memory split evenly, and no GPUs.
    pub fn uniform(
        sockets: u16,
        numa_per_socket: u16,
        cores_per_numa: u32,
        memory_mb: u64,
    ) -> Self {
        let domains = sockets as u32 * numa_per_socket as u32;
        let width = (domains * cores_per_numa) as usize;
        let per_domain_mem = memory_mb / domains.max(1) as u64;
        let numa = (0..domains)
            .map(|d| {
                let mut cores = FixedBitSet::with_capacity(width);
                cores.insert_range(
                    (d * cores_per_numa) as usize..((d + 1) * cores_per_numa) as usize,
                );
                NumaDomain {
                    socket: (d / numa_per_socket as u32) as u16,
                    cores,
                    memory_mb: per_domain_mem,
                }
            })
            .collect();
        Self::new(sockets, numa, Vec::new(), Vec::new())
    }

    pub fn core_count(&self) -> u32 {
        self.core_count
    }

    /// Width of core bitsets for this node (highest core index + 1).
    pub fn core_width(&self) -> usize {
        self.core_numa.len()
    }

    pub fn memory_mb(&self) -> u64 {
        self.memory_mb
    }

    pub fn gpu_count(&self) -> u32 {
        self.gpus.len() as u32
    }

    /// Mask with one bit per GPU of this node.
    pub fn all_gpus(&self) -> u64 {
        match self.gpus.len() {
            0 => 0,
            64 => u64::MAX,
            n => (1u64 << n) - 1,
        }
    }

    pub fn links(&self, a: usize, b: usize) -> u8 {
        self.nvlink[a * self.gpus.len() + b]
    }

    /// Sum of NVLink links over every pair inside `set`.
    pub fn set_links(&self, set: u64) -> u32 {
        let mut total = 0u32;
        let mut rest = set;
        while rest != 0 {
            let a = rest.trailing_zeros() as usize;
            rest &= rest - 1;
            let mut others = rest;
            while others != 0 {
                let b = others.trailing_zeros() as usize;
                others &= others - 1;
                total += self.links(a, b) as u32;
            }
        }
        total
    }

    /// NUMA domains (as a mask) that hold GPUs of `set`.
    pub fn gpu_numa_mask(&self, set: u64) -> u64 {
        ones(set).fold(0u64, |m, g| m | 1u64 << self.gpus[g].numa)
    }

    /// Chooses `k` GPUs among `free`: the set with the most NVLink links among its members;
    /// ties go to the set spanning the fewest NUMA domains, then to the lowest GPU indices.
    pub fn choose_gpus(&self, free: u64, k: u32) -> Option<GpuChoice> {
        let n = self.gpus.len();
        match &self.gpu_choices {
            // `n` is at most GPU_TABLE_MAX_GPUS here, so the shift cannot overflow.
            Some(table) if free >> n == 0 && k as usize <= n => {
                table.0[free as usize * (n + 1) + k as usize]
            }
            _ => self.search_gpus(free, k),
        }
    }

    /// [`Self::choose_gpus`] worked out: exhaustive while the subsets are few, greedy
    /// beyond.
    fn search_gpus(&self, free: u64, k: u32) -> Option<GpuChoice> {
        if k == 0 {
            return Some(GpuChoice {
                gpus: 0,
                links: 0,
                numa_mask: 0,
            });
        }
        let n = free.count_ones();
        if n < k {
            return None;
        }
        if binomial(n as u64, k as u64) <= EXHAUSTIVE_GPU_SUBSETS {
            // Asked for every candidate node of every job considered: the free GPUs
            // live on the stack, and each subset's links and domains are summed as it
            // grows rather than recounted at its end.
            let mut avail = [0u8; MAX_GPUS_PER_NODE];
            for (slot, g) in avail.iter_mut().zip(ones(free)) {
                *slot = g as u8;
            }
            let mut best = None;
            let empty = GpuChoice {
                gpus: 0,
                links: 0,
                numa_mask: 0,
            };
            self.search_gpu_sets(&avail[..n as usize], k as usize, empty, &mut best);
            best
        } else {
            let avail: Vec<usize> = ones(free).collect();
            let set = self.greedy_gpu_set(&avail, k as usize);
            Some(GpuChoice {
                gpus: set,
                links: self.set_links(set),
                numa_mask: self.gpu_numa_mask(set),
            })
        }
    }

    /// Every way of adding `k` GPUs of `avail` (ascending, all above those in `chosen`)
    /// to `chosen`; keeps the best set seen in `best`.
    fn search_gpu_sets(
        &self,
        avail: &[u8],
        k: usize,
        chosen: GpuChoice,
        best: &mut Option<GpuChoice>,
    ) {
        if k == 0 {
            // Most links, then fewest domains, then lowest indices.
            let order = |c: &GpuChoice| {
                (
                    c.links,
                    std::cmp::Reverse(c.numa_mask.count_ones()),
                    std::cmp::Reverse(c.gpus),
                )
            };
            if best.as_ref().is_none_or(|b| order(&chosen) > order(b)) {
                *best = Some(chosen);
            }
            return;
        }
        for i in 0..=avail.len() - k {
            let g = avail[i] as usize;
            // As `set_links` counts them: each pair once, lower GPU first.
            let added: u32 = ones(chosen.gpus).map(|m| self.links(m, g) as u32).sum();
            let grown = GpuChoice {
                gpus: chosen.gpus | 1u64 << g,
                links: chosen.links + added,
                numa_mask: chosen.numa_mask | 1u64 << self.gpus[g].numa,
            };
            self.search_gpu_sets(&avail[i + 1..], k - 1, grown, best);
        }
    }

    /// Grows a set one GPU at a time, each time adding the GPU with the most links into it.
    fn greedy_gpu_set(&self, avail: &[usize], k: usize) -> u64 {
        let mut set = 0u64;
        let mut rest: Vec<usize> = avail.to_vec();
        for _ in 0..k {
            let (pos, _) = rest
                .iter()
                .enumerate()
                .max_by_key(|(_, &g)| {
                    let into: u32 = ones(set).map(|m| self.links(g, m) as u32).sum();
                    let same_numa = ones(set).any(|m| self.gpus[m].numa == self.gpus[g].numa);
                    (into, same_numa, std::cmp::Reverse(g))
                })
                .expect("k <= avail.len() checked by caller");
            set |= 1u64 << rest.remove(pos);
        }
        set
    }

    /// Chooses `n` cores among `free`. With `near` (a NUMA mask, e.g. of the chosen GPUs)
    /// cores come from those domains first, then from their sockets, then anywhere.
    /// Without it, the fewest domains are used: a domain that fits all `n` (the tightest),
    /// otherwise the domains with the most free cores.
    pub fn choose_cores(&self, free: &FixedBitSet, n: u32, near: u64) -> Option<FixedBitSet> {
        let mut picked = FixedBitSet::with_capacity(self.core_width());
        let found = self.pick_cores(free, n, near, |d, mut count| {
            for c in self.numa[d].cores.ones() {
                if count == 0 {
                    break;
                }
                if free.contains(c) {
                    picked.insert(c);
                    count -= 1;
                }
            }
        });
        found.then_some(picked)
    }

    /// The NUMA domains of the cores [`Self::choose_cores`] would choose, as a mask,
    /// without building the set; `None` exactly when it answers `None`.
    pub fn chosen_cores_numa_mask(&self, free: &FixedBitSet, n: u32, near: u64) -> Option<u64> {
        let mut mask = 0u64;
        self.pick_cores(free, n, near, |d, _| mask |= 1u64 << d)
            .then_some(mask)
    }

    /// Makes [`Self::choose_cores`]'s choice domain by domain: `take(d, count)` means
    /// "the lowest `count` free cores of domain `d`". Whether `n` cores were found; when
    /// not, some domains may have been handed over already.
    fn pick_cores(
        &self,
        free: &FixedBitSet,
        n: u32,
        near: u64,
        mut take: impl FnMut(usize, u32),
    ) -> bool {
        if n == 0 {
            return true;
        }
        // This runs for every candidate node of every job considered, so what it keeps
        // per domain (free cores, the order cores are taken in) lives on the stack, and
        // each domain's free cores are counted once.
        let domains = self.numa.len();
        let mut free_count = [0u32; MAX_NUMA_DOMAINS_PER_NODE];
        let free_in = &mut free_count[..domains];
        for (count, d) in free_in.iter_mut().zip(&self.numa) {
            *count = free.intersection_count(&d.cores) as u32;
        }
        // Every core belongs to one domain, so this is the node's free core count.
        if free_in.iter().sum::<u32>() < n {
            return false;
        }
        let mut on_stack = [0u8; MAX_NUMA_DOMAINS_PER_NODE];
        let order = &mut on_stack[..domains];
        for (d, slot) in order.iter_mut().enumerate() {
            *slot = d as u8;
        }
        let order: &[u8] = if near != 0 {
            // The sockets of the near domains, once, as a mask: a socket index is below
            // the domain count, so below 64.
            let near_sockets = ones(near)
                .filter_map(|g| self.numa.get(g))
                .fold(0u64, |m, x| m | 1u64 << x.socket);
            // (rank, d) is unique, so an unstable sort gives the one order.
            order.sort_unstable_by_key(|&d| {
                let d = usize::from(d);
                let rank = if near & (1u64 << d) != 0 {
                    0
                } else if near_sockets & (1u64 << self.numa[d].socket) != 0 {
                    1
                } else {
                    2
                };
                (rank, d)
            });
            order
        } else if let Some(tight) = (0..domains)
            .filter(|&d| free_in[d] >= n)
            .min_by_key(|&d| (free_in[d], d))
        {
            order[0] = tight as u8;
            &order[..1]
        } else {
            order.sort_unstable_by_key(|&d| (std::cmp::Reverse(free_in[usize::from(d)]), d));
            order
        };
        let mut left = n;
        for &d in order {
            if left == 0 {
                break;
            }
            let d = usize::from(d);
            let count = free_in[d].min(left);
            if count > 0 {
                take(d, count);
                left -= count;
            }
        }
        left == 0
    }

    /// NUMA domains touched by a core set, as a mask.
    pub fn core_numa_mask(&self, cores: &FixedBitSet) -> u64 {
        cores
            .ones()
            .fold(0u64, |m, c| m | 1u64 << self.core_numa[c])
    }
}

/// Iterates over the set bits of a mask, lowest first.
pub fn ones(mut mask: u64) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let b = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(b)
    })
}

fn binomial(n: u64, k: u64) -> u64 {
    let k = k.min(n - k.min(n));
    (0..k).fold(1u64, |acc, i| acc.saturating_mul(n - i) / (i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Two sockets, one NUMA domain each with 8 cores, four GPUs: 0,1 on domain 0 and
    /// 2,3 on domain 1, NVLink bridges pairing (0,1) and (2,3).
    fn bridged() -> NodeTopology {
        let gpus = (0..4)
            .map(|g| Gpu {
                numa: (g / 2) as u16,
                model: "A6000".into(),
            })
            .collect();
        let mut m = vec![0u8; 16];
        for (a, b) in [(0, 1), (2, 3)] {
            m[a * 4 + b] = 4;
            m[b * 4 + a] = 4;
        }
        NodeTopology::uniform(2, 1, 8, 64_000).with_gpus(gpus, m)
    }

    #[test]
    fn bridged_pair_is_chosen_over_pcie_pair() {
        let t = bridged();
        let c = t.choose_gpus(0b1110, 2).unwrap();
        assert_eq!(c.gpus, 0b1100);
        assert_eq!(c.links, 4);
    }

    #[test]
    fn cores_follow_gpus_numa() {
        let t = bridged();
        let mut free = FixedBitSet::with_capacity(16);
        free.insert_range(..);
        let cores = t.choose_cores(&free, 4, t.gpu_numa_mask(0b1100)).unwrap();
        assert_eq!(cores.ones().collect::<Vec<_>>(), vec![8, 9, 10, 11]);
    }

    #[test]
    fn cpu_only_request_packs_into_tightest_domain() {
        let t = NodeTopology::uniform(2, 1, 8, 1000);
        let mut free = FixedBitSet::with_capacity(16);
        free.insert_range(..);
        free.set_range(0..5, false); // domain 0 has 3 free, domain 1 has 8
        let cores = t.choose_cores(&free, 3, 0).unwrap();
        assert_eq!(cores.ones().collect::<Vec<_>>(), vec![5, 6, 7]);
        let wide = t.choose_cores(&free, 10, 0).unwrap();
        assert_eq!(wide.count_ones(..), 10);
        assert!(t.choose_cores(&free, 12, 0).is_none());
    }

    /// `n` GPUs over four NUMA domains with uneven (even one-way) links.
    fn uneven(n: usize) -> NodeTopology {
        let gpus = (0..n)
            .map(|g| Gpu {
                numa: (g % 4) as u16,
                model: String::new(),
            })
            .collect();
        let links = (0..n * n)
            .map(|i| ((i * 7 + i / n * 3) % 5) as u8)
            .collect();
        NodeTopology::uniform(2, 2, 4, 1000).with_gpus(gpus, links)
    }

    /// What trying every subset of `free` of size `k` picks.
    fn reference_choice(t: &NodeTopology, free: u64, k: u32) -> u64 {
        (0u64..1 << t.gpu_count())
            .filter(|s| s & !free == 0 && s.count_ones() == k)
            .max_by_key(|&s| {
                let numa = t.gpu_numa_mask(s).count_ones();
                (
                    t.set_links(s),
                    std::cmp::Reverse(numa),
                    std::cmp::Reverse(s),
                )
            })
            .unwrap()
    }

    /// The choice is what trying every subset picks, for every free set and size: on an
    /// eight-GPU node (answered from the table), both from the table and by the search
    /// the table was built with.
    #[test]
    fn gpu_choice_matches_every_subset() {
        let t = uneven(8);
        assert!(t.gpu_choices.is_some());
        for free in 0u64..256 {
            for k in 1..=free.count_ones() {
                let reference = reference_choice(&t, free, k);
                let c = t.choose_gpus(free, k).unwrap();
                assert_eq!(c.gpus, reference, "free {free:#010b}, k {k}");
                assert_eq!(c.links, t.set_links(reference));
                assert_eq!(c.numa_mask, t.gpu_numa_mask(reference));
                assert_eq!(t.search_gpus(free, k), Some(c));
            }
            assert!(t.choose_gpus(free, free.count_ones() + 1).is_none());
        }
    }

    /// A node wider than the table searches each time, with the same answers.
    #[test]
    fn gpu_search_beyond_the_table_matches_every_subset() {
        let t = uneven(GPU_TABLE_MAX_GPUS + 2);
        assert!(t.gpu_choices.is_none());
        for free in (0u64..1 << t.gpu_count()).step_by(37) {
            for k in 1..=free.count_ones() {
                let reference = reference_choice(&t, free, k);
                let c = t.choose_gpus(free, k).unwrap();
                assert_eq!(c.gpus, reference, "free {free:#012b}, k {k}");
                assert_eq!(c.links, t.set_links(reference));
            }
        }
    }

    /// With as many NUMA domains as a node may have, every domain can be chosen.
    #[test]
    fn sixty_four_domains() {
        // 2 sockets of 32 domains with 2 cores each; domain 40 (socket 1) is near.
        let t = NodeTopology::uniform(2, 32, 2, 1000);
        let mut free = FixedBitSet::with_capacity(128);
        free.insert_range(..);
        free.set_range(0..3, false); // domain 0 empty, domain 1 has one core free
        let wide = t.choose_cores(&free, 5, 0).unwrap();
        assert_eq!(wide.ones().collect::<Vec<_>>(), vec![4, 5, 6, 7, 8]);
        let tight = t.choose_cores(&free, 1, 0).unwrap();
        assert_eq!(tight.ones().collect::<Vec<_>>(), vec![3]);
        let near = t.choose_cores(&free, 5, 1 << 40).unwrap();
        assert_eq!(near.ones().collect::<Vec<_>>(), vec![64, 65, 66, 80, 81]);
    }

    #[test]
    fn greedy_choice_matches_links_on_wide_node() {
        // 40 GPUs all-to-all: exhaustive search would be C(40,20); greedy must still pick 20.
        let gpus = (0..40)
            .map(|g| Gpu {
                numa: (g / 20) as u16,
                model: String::new(),
            })
            .collect();
        let links = (0..1600)
            .map(|i| if i / 40 == i % 40 { 0 } else { 2 })
            .collect();
        let t = NodeTopology::uniform(2, 1, 4, 1000).with_gpus(gpus, links);
        let c = t.choose_gpus(t.all_gpus(), 20).unwrap();
        assert_eq!(c.gpus.count_ones(), 20);
        assert_eq!(
            c.numa_mask.count_ones(),
            1,
            "greedy keeps one NUMA domain when it can"
        );
    }
}
