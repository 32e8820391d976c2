//! # gantry-kernel
//!
//! The native kernel of the Gantry batch scheduler: the cluster model (nodes → sockets →
//! NUMA domains → cores, GPUs with NVLink links, partitions, QOS, the share tree), the
//! topology-aware allocator, jobs, and the deterministic scheduling cycle with its four
//! named decision points (priority, fairshare, preemption, placement).
//!
//! ## What it must not depend on
//!
//! No I/O of any kind: no clock, no files, no network, no threads, no randomness. Time
//! comes in as a `now` argument and files come in as strings. The daemon and the simulator
//! drive the same [`Scheduler`] through its entry points, so a replay predicts production.
//!
//! ## Map
//!
//! - [`units`]: durations, memory sizes, host lists.
//! - [`topology`]: the inside of a node and the in-node GPU/core choice.
//! - [`cluster`]: nodes, free state and the per-partition free index; partitions, QOS, accounts.
//! - [`config`]: the TOML cluster description.
//! - [`alloc`]: candidate search and all-or-nothing allocation.
//! - [`job`]: requests, jobs, states, arrays, dependencies.
//! - [`policy`]: the batched decision-point traits and their native defaults.
//! - [`breakdown`]: waiting jobs' priorities broken into the policy's factors (sprio).
//! - [`reservation`]: advance reservations (nodes set aside over a window).
//! - [`scheduler`]: the state machine and its entry points; `cycle` (private) is one cycle.
//! - [`step`]: where a job step's tasks go inside the job's allocation.

pub mod alloc;
pub mod breakdown;
pub mod cluster;
pub mod config;
mod cycle;
pub mod job;
pub mod policy;
pub mod reservation;
pub mod scheduler;
pub mod step;
pub mod topology;
pub mod units;

pub use cluster::Cluster;
pub use config::ClusterDescription;
pub use job::{JobId, JobSpec, JobState, ResourceRequest};
pub use scheduler::{
    Backfill, CycleOutcome, Scheduler, SchedulerConfig, DEFAULT_FAIRSHARE_INTERVAL,
};
pub use units::Time;
