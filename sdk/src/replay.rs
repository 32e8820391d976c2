//! Trace replay for policy authors (feature `replay`, native only): run a policy through
//! the real scheduling kernel on a workload trace (SWF, plain or gzip), exactly as
//! `gantry sim` would with the component, but natively — for tests and quick what-ifs.
//!
//! ```ignore
//! let report = gantry_sdk::replay::TraceReplay::open("testdata/traces/lublin_256.swf")?
//!     .take(1000)
//!     .priority(MyPolicy::default(), "")?
//!     .run()?;
//! assert_eq!(report.unfinished, 0);
//! ```

use std::path::Path;

use gantry_kernel::policy::{Native, PolicySet};
pub use gantry_kernel::Backfill;
use gantry_kernel::SchedulerConfig;
pub use gantry_sim::Report;
use gantry_sim::{cluster_from_header, read_swf, replay, ReplayOptions, SwfTrace};

use crate::{Fairshare, Placement, Preemption, Priority};

/// A replay being set up: the trace, the policies, the backfill mode.
pub struct TraceReplay {
    trace: SwfTrace,
    policies: PolicySet,
    backfill: Backfill,
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl TraceReplay {
    /// Reads a trace; every slot starts with the kernel's safe default.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, String> {
        let path = path.as_ref();
        let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let trace = read_swf(file).map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(Self {
            trace,
            policies: PolicySet::default(),
            backfill: Backfill::Easy,
        })
    }

    /// Keeps only the first `n` jobs of the trace.
    pub fn take(mut self, n: usize) -> Self {
        self.trace.jobs.truncate(n);
        self
    }

    pub fn backfill(mut self, backfill: Backfill) -> Self {
        self.backfill = backfill;
        self
    }

    /// Runs `policy` (after `init(config)`) as the priority policy.
    pub fn priority<P: Priority + Send + 'static>(
        mut self,
        policy: P,
        config: &str,
    ) -> Result<Self, String> {
        self.policies.priority = Box::new(Native::new(policy, config).map_err(err)?);
        Ok(self)
    }
    pub fn fairshare<P: Fairshare + Send + 'static>(
        mut self,
        policy: P,
        config: &str,
    ) -> Result<Self, String> {
        self.policies.fairshare = Box::new(Native::new(policy, config).map_err(err)?);
        Ok(self)
    }
    pub fn preemption<P: Preemption + Send + 'static>(
        mut self,
        policy: P,
        config: &str,
    ) -> Result<Self, String> {
        self.policies.preemption = Box::new(Native::new(policy, config).map_err(err)?);
        Ok(self)
    }
    pub fn placement<P: Placement + Send + 'static>(
        mut self,
        policy: P,
        config: &str,
    ) -> Result<Self, String> {
        self.policies.placement = Box::new(Native::new(policy, config).map_err(err)?);
        Ok(self)
    }

    /// Replays on the homogeneous cluster the trace's header describes.
    pub fn run(self) -> Result<Report, String> {
        let cluster = cluster_from_header(&self.trace, 1).map_err(err)?;
        let opts = ReplayOptions {
            scheduler: SchedulerConfig {
                backfill: self.backfill,
                ..SchedulerConfig::default()
            },
            partition: None,
        };
        replay(&self.trace, cluster, self.policies, &opts, &mut |_| {}).map_err(err)
    }
}
