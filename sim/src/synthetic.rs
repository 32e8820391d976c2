//! Synthetic scale scenarios: a seeded cluster of identical GPU nodes, half of it busy
//! with running jobs, and a large queue of pending jobs of mixed sizes. What the scale
//! benchmarks and `gantry sim --synthetic` measure one scheduling cycle on.
//!
//! The same seed gives the same cluster, the same running jobs (on the same cores) and
//! the same queue, so figures from two builds compare like with like.

use gantry_kernel::job::{GpuRequest, MemoryRequest};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{
    ClusterDescription, JobSpec, ResourceRequest, Scheduler, SchedulerConfig, Time,
};

use crate::replay::SimError;

/// The shape of every node and how big the scenario is.
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub nodes: u32,
    pub sockets: u32,
    /// Cores per node (split evenly over the sockets, one NUMA domain per socket).
    pub cores: u32,
    /// GPUs per node, all NVLink-connected (NVSwitch); half on each socket's NUMA domain.
    pub gpus: u32,
    pub memory_gb: u64,
    /// Pending jobs in the queue when the measured cycle starts.
    pub pending: u32,
    /// Fraction of the cluster's cores busy with running jobs before the measured cycle.
    pub busy: f64,
    pub seed: u64,
}

impl Default for SyntheticSpec {
    /// The large case: 10,000 nodes of 2 sockets, 128 cores, 8 NVLink GPUs each,
    /// 100,000 pending jobs, half the cluster busy.
    fn default() -> Self {
        Self {
            nodes: 10_000,
            sockets: 2,
            cores: 128,
            gpus: 8,
            memory_gb: 1024,
            pending: 100_000,
            busy: 0.5,
            seed: 1,
        }
    }
}

/// A scheduler set up as the spec says, and the time its measured cycle should run at.
pub struct SyntheticState {
    pub scheduler: Scheduler,
    pub now: Time,
    /// Running jobs before the measured cycle.
    pub running: usize,
    /// Cores those jobs hold.
    pub busy_cores: u64,
    /// Where the generator's draw stands, so the queue follows the running jobs.
    seed_state: u64,
}

/// splitmix64: small, seedable and good enough to draw job sizes from.
struct Draw(u64);

impl Draw {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<T: Copy>(&mut self, from: &[T]) -> T {
        from[self.below(from.len() as u64) as usize]
    }
}

const HOUR: Time = 3600;
/// Scheduling time of the measured cycle: two weeks into the scenario's clock, so
/// pending jobs have ages of up to a week and running jobs started up to a day ago.
const NOW: Time = 14 * 24 * HOUR;

impl SyntheticSpec {
    pub fn validate(&self) -> Result<(), SimError> {
        let bad = |m: &str| Err(SimError::Synthetic(m.to_string()));
        if self.nodes == 0 || self.pending == 0 {
            return bad("--nodes and --jobs must be at least 1");
        }
        if self.sockets == 0 || self.cores == 0 || self.cores % self.sockets != 0 {
            return bad("--cores must be a positive multiple of --sockets");
        }
        if self.gpus > 64 || (self.gpus > 0 && self.gpus % self.sockets != 0) {
            return bad("--gpus must be at most 64 and a multiple of --sockets");
        }
        if !(0.0..=0.95).contains(&self.busy) {
            return bad("--busy must be between 0 and 0.95");
        }
        if self.memory_gb == 0 {
            return bad("--memory-gb must be at least 1");
        }
        Ok(())
    }

    fn cluster_toml(&self) -> String {
        let per_socket = self.gpus / self.sockets;
        let numa: Vec<String> = (0..self.sockets)
            .flat_map(|s| (0..per_socket).map(move |_| s.to_string()))
            .collect();
        let gpus = if self.gpus == 0 {
            String::new()
        } else {
            format!(
                "gpus={{numa=[{}],nvlink={{all_to_all=18}}}}\n",
                numa.join(",")
            )
        };
        format!(
            "[[node_type]]\nname='g'\nsockets={}\nnuma_per_socket=1\ncores_per_numa={}\nmemory='{}G'\n{gpus}\
             [[nodes]]\nnames='n[1-{}]'\ntype='g'\n",
            self.sockets,
            self.cores / self.sockets,
            self.memory_gb,
            self.nodes
        )
    }

    /// One job of the mix. Sizes follow what GPU clusters see: many small CPU jobs,
    /// whole-node and fractional GPU jobs, a few wide multi-node ones.
    fn job(&self, d: &mut Draw, name: &str) -> JobSpec {
        let cores = self.cores;
        let gpus = self.gpus;
        let mem_per_core = (self.memory_gb * 1024 / cores as u64).max(1);
        let roll = d.below(100);
        let mut req = ResourceRequest::default();
        match roll {
            // Small CPU jobs: a few tasks anywhere.
            0..=44 => {
                req.tasks = d.pick(&[1, 1, 2, 4, 8, 16]);
                req.memory = MemoryRequest::PerCpu(mem_per_core / 2);
            }
            // One-node CPU jobs of a quarter to a whole node.
            45..=64 => {
                req.nodes = Some(1);
                req.tasks = d.pick(&[cores / 4, cores / 2, cores]).max(1);
                req.memory = MemoryRequest::PerNode(self.memory_gb * 1024 / 4);
            }
            // Single-node GPU jobs: 1, 2, 4 or 8 GPUs with their share of cores.
            65..=91 if gpus > 0 => {
                let g = d.pick(&[1, 1, 2, 4, gpus]).min(gpus);
                req.nodes = Some(1);
                req.tasks = g;
                req.cpus_per_task = (cores / gpus).max(1);
                req.gpus = GpuRequest::PerNode(g);
                req.memory =
                    MemoryRequest::PerNode(self.memory_gb * 1024 * g as u64 / gpus as u64 / 2);
            }
            // Multi-node GPU training: 2 to 16 whole GPU nodes.
            92..=97 if gpus > 0 => {
                let n = d.pick(&[2, 4, 8, 16]).min(self.nodes);
                req.nodes = Some(n);
                req.tasks = n * gpus;
                req.cpus_per_task = (cores / gpus).max(1);
                req.gpus = GpuRequest::PerNode(gpus);
            }
            // Wide CPU jobs: 4 to 32 full nodes.
            _ => {
                let n = d.pick(&[4, 8, 16, 32]).min(self.nodes);
                req.nodes = Some(n);
                req.tasks = n * cores;
            }
        }
        let mut spec = JobSpec::new(name, format!("u{}", d.below(400)), req);
        spec.time_limit = Some(d.pick(&[1, 2, 4, 8, 12, 24, 48]) * HOUR);
        spec
    }

    /// Builds the scenario: [`Self::start_running`], then [`Self::queue_pending`].
    pub fn build(
        &self,
        policies: PolicySet,
        config: SchedulerConfig,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SyntheticState, SimError> {
        let mut state = self.start_running(policies, config, progress)?;
        progress(&format!("queueing {} pending jobs", self.pending));
        self.queue_pending(&mut state)?;
        Ok(state)
    }

    /// The cluster with running jobs on about `busy` of its cores, started at eight times
    /// over the last day so that their ends spread out; nothing pending yet.
    pub fn start_running(
        &self,
        policies: PolicySet,
        config: SchedulerConfig,
        progress: &mut dyn FnMut(&str),
    ) -> Result<SyntheticState, SimError> {
        self.validate()?;
        let cluster = ClusterDescription::from_toml(&self.cluster_toml())
            .and_then(|d| d.build())
            .map_err(|e| SimError::Synthetic(e.to_string()))?;
        let total = cluster.total_cores();
        let mut sched = Scheduler::new(cluster, config, policies);
        let mut d = Draw(self.seed);
        let target = (total as f64 * self.busy) as u64;
        progress(&format!(
            "{} nodes, {} cores: starting jobs on {:.0}% of them",
            self.nodes,
            total,
            self.busy * 100.0
        ));
        let mut busy_cores = 0u64;
        let waves = 8;
        for wave in 0..waves {
            let t = NOW - 24 * HOUR + wave * 3 * HOUR;
            let wave_target = target * (wave as u64 + 1) / waves as u64;
            let mut tries = 0;
            while busy_cores < wave_target && tries < 4 {
                // Submit about what is missing, run a cycle, cancel what did not start.
                let mut want = wave_target - busy_cores;
                while want > 0 {
                    let spec = self.job(&mut d, "running");
                    let c = spec.request.tasks as u64 * spec.request.cpus_per_task as u64;
                    want = want.saturating_sub(c);
                    submit(&mut sched, spec, t)?;
                }
                sched.cycle(t);
                let left: Vec<_> = sched.waiting().iter().copied().collect();
                for id in left {
                    let _ = sched.cancel(id, t);
                }
                busy_cores = running_cores(&sched);
                tries += 1;
            }
        }
        Ok(SyntheticState {
            running: sched.running().len(),
            scheduler: sched,
            now: NOW,
            busy_cores,
            seed_state: d.0,
        })
    }

    /// Submits the pending queue, spread over the week before the measured cycle.
    pub fn queue_pending(&self, state: &mut SyntheticState) -> Result<(), SimError> {
        let mut d = Draw(state.seed_state);
        for i in 0..self.pending {
            let spec = self.job(&mut d, "pending");
            let t = NOW - 7 * 24 * HOUR + (i as i64 * 7 * 24 * HOUR) / self.pending as i64;
            submit(&mut state.scheduler, spec, t)?;
        }
        state.seed_state = d.0;
        Ok(())
    }
}

fn submit(sched: &mut Scheduler, spec: JobSpec, t: Time) -> Result<(), SimError> {
    sched
        .submit(spec, t)
        .map(|_| ())
        .map_err(|e| SimError::Synthetic(format!("a generated job was refused: {e}")))
}

fn running_cores(sched: &Scheduler) -> u64 {
    sched
        .running()
        .iter()
        .filter_map(|&r| sched.job(r)?.allocation.as_ref())
        .map(|a| a.core_count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn small() -> SyntheticSpec {
        SyntheticSpec {
            nodes: 64,
            pending: 2000,
            ..SyntheticSpec::default()
        }
    }

    #[test]
    fn half_the_cluster_runs_and_the_queue_is_as_asked() {
        let s = small()
            .build(
                PolicySet::default(),
                SchedulerConfig::default(),
                &mut |_| {},
            )
            .unwrap();
        let total = s.scheduler.cluster().total_cores();
        let share = s.busy_cores as f64 / total as f64;
        assert!((0.4..0.65).contains(&share), "busy share {share}");
        assert_eq!(s.scheduler.waiting().len(), 2000);
        assert!(s.running > 0);
    }

    #[test]
    fn after_a_cycle_every_waiting_job_says_why_it_waits() {
        // Ten thousand jobs against 1,000 nodes: batches fill the cluster and conflict.
        let mut s = SyntheticSpec {
            nodes: 1000,
            pending: 10_000,
            ..small()
        }
        .build(
            PolicySet::default(),
            SchedulerConfig::default(),
            &mut |_| {},
        )
        .unwrap();
        let out = s.scheduler.cycle(s.now);
        assert!(!out.started.is_empty());
        for &w in s.scheduler.waiting() {
            let reason = s.scheduler.job(w).unwrap().reason;
            assert_ne!(reason, gantry_kernel::job::PendingReason::None, "job {w:?}");
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_scenario_and_another_seed_does_not() {
        let build = |seed| {
            let s = SyntheticSpec { seed, ..small() }
                .build(
                    PolicySet::default(),
                    SchedulerConfig::default(),
                    &mut |_| {},
                )
                .unwrap();
            let jobs: Vec<_> = s
                .scheduler
                .jobs()
                .iter()
                .map(|j| {
                    // FixedBitSet's Debug shows its pointer: compare the cores themselves.
                    let cores: Vec<(u32, Vec<usize>, u64)> = j
                        .allocation
                        .iter()
                        .flat_map(|a| &a.nodes)
                        .map(|n| (n.node.0, n.cores.ones().collect(), n.gpus))
                        .collect();
                    (j.shape.clone(), j.time_limit, j.submit_time, cores)
                })
                .collect();
            format!("{jobs:?}")
        };
        assert_eq!(build(7), build(7));
        assert_ne!(build(7), build(8));
    }

    #[test]
    fn bad_shapes_are_refused_with_the_flag_to_change() {
        let e = SyntheticSpec {
            cores: 127,
            ..small()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--cores"), "{e}");
        let e = SyntheticSpec {
            nodes: 0,
            ..small()
        }
        .validate()
        .unwrap_err()
        .to_string();
        assert!(e.contains("--nodes"), "{e}");
    }
}
