//! The four named decision points — priority, fairshare, preemption, placement — each a
//! narrow, batched trait: one call per scheduling cycle with everything the policy needs,
//! as numbers and ids. Native defaults live here; Wasm components implement the same traits.
//!
//! Invariant: the kernel validates every answer (length, indices, who may be preempted)
//! and falls back to the native safe default on any error, so a policy can never stop a
//! cycle or break an allocation invariant.

use thiserror::Error;

pub use gantry_abi::{
    Candidate, PlacementBatch, PlacementColumns, PlacementQuery, PlacementRanking, PolicyInfo,
    PreemptMode, PreemptionCandidate, PreemptionQuery, PriorityBatch, PriorityColumns,
    PriorityFactor, PriorityFields, PriorityInput, ShareNode, ShareTree, Victim,
};

use crate::units::Time;

#[derive(Debug, Error, Clone, PartialEq)]
pub enum PolicyError {
    #[error("policy answered {got} entries for a batch of {expected}")]
    WrongLength { expected: usize, got: usize },
    #[error("policy answer is invalid: {0}")]
    Invalid(String),
    #[error("policy failed: {0}")]
    Failed(String),
}

/// Orders the queue: higher numbers start first (after the partition tier).
pub trait PriorityPolicy: Send {
    fn name(&self) -> &str;
    /// The batch columns `prioritize` reads; the cycle builds only these (and the ones
    /// it needs itself, [`KERNEL_PRIORITY_FIELDS`]).
    fn fields(&self) -> PriorityFields {
        PriorityFields::ALL
    }
    /// One priority per job of the batch, in the same order.
    fn prioritize(&mut self, now: Time, jobs: &PriorityBatch) -> Result<Vec<i64>, PolicyError>;
    /// The priorities of `jobs` broken into weighted factors, for `sprio`; asked on
    /// demand, never by the cycle. Empty when the policy does not explain itself (FIFO).
    fn explain(
        &mut self,
        now: Time,
        jobs: &PriorityBatch,
    ) -> Result<Vec<PriorityFactor>, PolicyError> {
        let _ = (now, jobs);
        Ok(Vec::new())
    }
}

/// Turns shares and usage into a factor per tree node (1 = under-served, 0 = over-served).
pub trait FairsharePolicy: Send {
    fn name(&self) -> &str;
    fn factors(&mut self, now: Time, tree: &ShareTree) -> Result<Vec<f64>, PolicyError>;
    /// Changes whenever a different policy starts answering (a hot swap or a rollback).
    /// The kernel keeps factors between computations (`SchedulerConfig::fairshare_interval`)
    /// and computes them again at once when this changes. A policy that never changes
    /// keeps the default.
    fn revision(&self) -> u64 {
        0
    }
}

/// Chooses victims. An empty list for a query means "do not preempt for this job".
pub trait PreemptionPolicy: Send {
    fn name(&self) -> &str;
    fn select(
        &mut self,
        now: Time,
        batch: &[PreemptionQuery],
    ) -> Result<Vec<Vec<Victim>>, PolicyError>;
}

/// Ranks candidates: for each job of the batch, indices into its own candidates, best
/// first. Indices left out are tried after the ranked ones, in the kernel's order.
pub trait PlacementPolicy: Send {
    fn name(&self) -> &str;
    fn rank(&mut self, batch: &PlacementBatch) -> Result<PlacementRanking, PolicyError>;
}

/// Columns the cycle reads from every priority batch: it orders by partition tier, then
/// priority, then submission, and its FIFO fallback needs submission times.
pub const KERNEL_PRIORITY_FIELDS: PriorityFields =
    PriorityFields::SUBMIT_TIME.union(PriorityFields::PARTITION_TIER);

/// Safe default: first come, first served (older jobs first).
#[derive(Debug, Default, Clone)]
pub struct FifoPriority;

impl PriorityPolicy for FifoPriority {
    fn name(&self) -> &str {
        "fifo"
    }
    fn fields(&self) -> PriorityFields {
        PriorityFields::SUBMIT_TIME
    }
    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Result<Vec<i64>, PolicyError> {
        Ok(jobs.submit_time().iter().map(|t| -t).collect())
    }
}

/// Classic fairshare: `F = 2^(-U/S)` with `S` the node's normalised share along its path
/// and `U` its fraction of all usage. No decay: decaying usage is a policy's choice.
#[derive(Debug, Default, Clone)]
pub struct ClassicFairshare;

impl FairsharePolicy for ClassicFairshare {
    fn name(&self) -> &str {
        "classic"
    }
    fn factors(&mut self, _now: Time, tree: &ShareTree) -> Result<Vec<f64>, PolicyError> {
        let n = tree.len();
        let (shares, usage) = (tree.shares(), tree.usage());
        let mut sibling_shares = vec![0f64; n];
        for (i, &share) in shares.iter().enumerate() {
            if let Some(p) = tree.parent_of(i) {
                sibling_shares[p] += share as f64;
            }
        }
        let total_usage = (0..n)
            .filter(|&i| tree.parent_of(i).is_none())
            .map(|i| usage[i])
            .sum::<f64>();
        // Parents come before children (accounts are built top-down, associations last).
        let mut norm = vec![1f64; n];
        for (i, &share) in shares.iter().enumerate() {
            if let Some(p) = tree.parent_of(i) {
                let denom = sibling_shares[p].max(1.0);
                norm[i] = norm[p] * share as f64 / denom;
            }
        }
        Ok(usage
            .iter()
            .zip(&norm)
            .map(|(&used, &s)| {
                let u = if total_usage > 0.0 {
                    used / total_usage
                } else {
                    0.0
                };
                if s > 0.0 {
                    2f64.powf(-u / s)
                } else {
                    0.0
                }
            })
            .collect())
    }
}

/// Safe default: never preempt.
#[derive(Debug, Default, Clone)]
pub struct NoPreemption;

impl PreemptionPolicy for NoPreemption {
    fn name(&self) -> &str {
        "none"
    }
    fn select(
        &mut self,
        _now: Time,
        batch: &[PreemptionQuery],
    ) -> Result<Vec<Vec<Victim>>, PolicyError> {
        Ok(vec![Vec::new(); batch.len()])
    }
}

/// Safe default: take candidates in the kernel's order (tightest fit first).
#[derive(Debug, Default, Clone)]
pub struct FirstFitPlacement;

impl PlacementPolicy for FirstFitPlacement {
    fn name(&self) -> &str {
        "first-fit"
    }
    fn rank(&mut self, batch: &PlacementBatch) -> Result<PlacementRanking, PolicyError> {
        Ok(first_fit(batch))
    }
}

/// Every job's candidates in the kernel's order: an empty ranking for each job.
pub fn first_fit(batch: &PlacementBatch) -> PlacementRanking {
    let mut r = PlacementRanking::with_capacity(batch.len(), 0);
    for _ in 0..batch.len() {
        r.push([]);
    }
    r
}

/// Runs a policy written against the ABI traits (a built-in or a site policy compiled
/// natively) behind the kernel's decision-point traits. Answers are still validated by the
/// cycle like any other policy's.
pub struct Native<P> {
    policy: P,
    name: String,
}

impl<P: gantry_abi::Policy> Native<P> {
    /// Wraps a policy and gives it its configuration, as loading a component would.
    pub fn new(mut policy: P, config: &str) -> Result<Self, PolicyError> {
        policy.init(config).map_err(PolicyError::Failed)?;
        let name = policy.info().name;
        Ok(Self { policy, name })
    }
    pub fn policy(&self) -> &P {
        &self.policy
    }
}

impl<P: gantry_abi::Priority + Send> PriorityPolicy for Native<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn fields(&self) -> PriorityFields {
        self.policy.fields()
    }
    fn prioritize(&mut self, now: Time, jobs: &PriorityBatch) -> Result<Vec<i64>, PolicyError> {
        Ok(self.policy.prioritize(now, jobs))
    }
    fn explain(
        &mut self,
        now: Time,
        jobs: &PriorityBatch,
    ) -> Result<Vec<PriorityFactor>, PolicyError> {
        Ok(self.policy.explain(now, jobs))
    }
}

impl<P: gantry_abi::Fairshare + Send> FairsharePolicy for Native<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn factors(&mut self, now: Time, tree: &ShareTree) -> Result<Vec<f64>, PolicyError> {
        Ok(self.policy.factors(now, tree))
    }
}

impl<P: gantry_abi::Preemption + Send> PreemptionPolicy for Native<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn select(
        &mut self,
        now: Time,
        batch: &[PreemptionQuery],
    ) -> Result<Vec<Vec<Victim>>, PolicyError> {
        Ok(self.policy.select(now, batch))
    }
}

impl<P: gantry_abi::Placement + Send> PlacementPolicy for Native<P> {
    fn name(&self) -> &str {
        &self.name
    }
    fn rank(&mut self, batch: &PlacementBatch) -> Result<PlacementRanking, PolicyError> {
        Ok(self.policy.rank(batch))
    }
}

/// The policies a scheduler runs with.
pub struct PolicySet {
    pub priority: Box<dyn PriorityPolicy>,
    pub fairshare: Box<dyn FairsharePolicy>,
    pub preemption: Box<dyn PreemptionPolicy>,
    pub placement: Box<dyn PlacementPolicy>,
}

impl Default for PolicySet {
    /// The native safe defaults: FIFO, classic fairshare, no preemption, first fit.
    fn default() -> Self {
        Self {
            priority: Box::new(FifoPriority),
            fairshare: Box::new(ClassicFairshare),
            preemption: Box::new(NoPreemption),
            placement: Box::new(FirstFitPlacement),
        }
    }
}

/// How often each decision point fell back to its native safe default.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PolicyFallbacks {
    pub priority: u64,
    pub fairshare: u64,
    pub preemption: u64,
    pub placement: u64,
}
