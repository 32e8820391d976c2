//! # gantry-sim
//!
//! Replays workload traces (SWF) through the kernel's [`gantry_kernel::Scheduler`] with a
//! virtual clock, and measures the schedule: utilization, waits, bounded slowdown,
//! makespan, plus an SVG of queue length and utilization over time. It also builds
//! seeded synthetic scenarios (a large cluster, half busy, a long queue) for measuring
//! one scheduling cycle at scale.
//!
//! ## What it must not depend on
//!
//! No files, no wall clock, no terminal: inputs arrive as readers and values, output leaves
//! as values and strings. The `gantry sim` command owns files and progress display. The
//! simulator must drive the kernel only through the entry points the daemon uses, so
//! what it predicts is what production does.

pub mod plot;
pub mod replay;
pub mod swf;
pub mod synthetic;

pub use replay::{
    cluster_from_header, replay, replay_with, Progress, ReplayOptions, Report, RunJob, SimError,
};
pub use swf::{parse_swf, read_swf, JobRequest, SwfError, SwfTrace};
pub use synthetic::{SyntheticSpec, SyntheticState};
