//! # gantry-abi
//!
//! The records of the policy ABI (`wit/policy.wit`, package `gantry:policy@0.1.0`) as plain
//! Rust types, and the four policy traits a policy implements. The kernel uses these
//! records for its decision points; the SDK maps them onto the generated Wasm bindings;
//! a policy written against these traits builds both natively and as a component.
//!
//! ## What it must not depend on
//!
//! Nothing but `core` and `alloc` (and `serde` derives behind a feature): it is compiled
//! into every policy component, where there is no `std`, no I/O and no clock.

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// Seconds on the scheduler's clock.
pub type Time = i64;
/// A job id, unique in one controller's lifetime.
pub type JobId = u64;

/// Who a policy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
}

/// One waiting job, as the priority policy sees it (see `priority-input` in the WIT).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityInput {
    pub job: JobId,
    pub submit_time: Time,
    pub age: Time,
    pub cores: u64,
    pub nodes: u32,
    pub gpus: u64,
    pub time_limit: Option<Time>,
    pub partition_tier: u32,
    pub qos: u32,
    pub qos_priority: u32,
    /// In `[0, 1]`: 1 under-served, 0 over-served.
    pub fairshare: f64,
    pub user: u32,
    pub account: u32,
}

/// One node of the share tree: accounts first (0 is the root), then associations; a
/// child always comes after its parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareNode {
    /// Stable across cycles: accounts from 0, user associations from [`ASSOCIATION_IDS`].
    pub id: u32,
    /// Index of the parent in the same list.
    pub parent: Option<u32>,
    pub shares: u32,
    /// Undecayed core-seconds of this node and everything below it.
    pub usage: f64,
}

/// First [`ShareNode::id`] of user associations.
pub const ASSOCIATION_IDS: u32 = 1 << 31;

/// What happens to a preempted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PreemptMode {
    /// End the job as PREEMPTED.
    #[default]
    Cancel,
    /// Put it back in the queue as REQUEUED.
    Requeue,
}

/// A running job the blocked job may preempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreemptionCandidate {
    pub job: JobId,
    pub qos_priority: u32,
    pub partition_tier: u32,
    pub start_time: Time,
    pub cores: u64,
    pub gpus: u64,
    pub mode: PreemptMode,
}

/// A blocked job and what it could preempt.
#[derive(Debug, Clone, PartialEq)]
pub struct PreemptionQuery {
    pub job: JobId,
    pub qos_priority: u32,
    pub partition_tier: u32,
    pub cores: u64,
    pub gpus: u64,
    pub candidates: Vec<PreemptionCandidate>,
}

/// A victim chosen by a preemption policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim {
    pub job: JobId,
    pub mode: PreemptMode,
}

/// A node that can hold (part of) a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub node: u32,
    /// Tasks this node can take (1 for jobs with a fixed node count).
    pub units: u32,
    pub gpu_links: u32,
    pub numa_domains: u32,
    pub free_cores_after: u32,
    pub free_gpus_after: u32,
}

/// A job about to start and its candidate nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementQuery {
    pub job: JobId,
    pub units_needed: u32,
    pub gpus_per_node: u32,
    pub candidates: Vec<Candidate>,
}

/// Every policy: a name, and a configuration it may refuse.
pub trait Policy {
    fn info(&self) -> PolicyInfo;
    /// Takes the configuration text (TOML for the built-ins; empty for defaults).
    fn init(&mut self, config: &str) -> Result<(), String>;
}

/// Orders the queue: one priority per job, higher first.
pub trait Priority: Policy {
    fn prioritize(&mut self, now: Time, jobs: &[PriorityInput]) -> Vec<i64>;
}

/// One factor in `[0, 1]` per share-tree node.
pub trait Fairshare: Policy {
    fn factors(&mut self, now: Time, tree: &[ShareNode]) -> Vec<f64>;
}

/// Victims per query; empty means "do not preempt for this job".
pub trait Preemption: Policy {
    fn select(&mut self, now: Time, batch: &[PreemptionQuery]) -> Vec<Vec<Victim>>;
}

/// Candidate indices per query, best first.
pub trait Placement: Policy {
    fn rank(&mut self, batch: &[PlacementQuery]) -> Vec<Vec<u32>>;
}
