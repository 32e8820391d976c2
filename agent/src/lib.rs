//! # gantry-agent
//!
//! One per node. It tells the controller what the node is ([`topology`]: discovered, or
//! declared in its configuration), keeps it informed (register, heartbeats listing every
//! job it runs), and carries out its commands ([`jobs`]: launch, cancel, signal,
//! suspend, resume), reporting each job's end with its exit status and resource use;
//! and runs its part of job steps ([`steps`]: `srun`'s tasks, their output streamed
//! back to the controller).
//!
//! ## What it must not depend on
//!
//! The kernel or the daemon: it knows the controller only through `gantry-api`, and
//! decides nothing about scheduling.

pub mod config;
pub mod jobs;
pub mod launch;
pub mod link;
pub mod spool;
pub mod steps;
pub mod topology;
pub mod usage;
