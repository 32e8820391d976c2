//! A preemption policy: a blocked job may end (or requeue, or suspend) running jobs of a
//! lower quality of service, the youngest first, until it would fit. Gantry asks it
//! once per cycle for the jobs that cannot start, each with the running jobs it could
//! displace; an empty answer for a job means "none".
//!
//! Edit `select`, test with `cargo test`, build the component with
//! `cargo build --release --target wasm32-unknown-unknown`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Policy, PolicyInfo, Preemption, PreemptionQuery, Time, Victim};

/// What the policy keeps between calls. It lives as long as one loaded instance: it
/// starts afresh (`Default`, then `init`) on every load, re-instantiation and restart.
#[derive(Default)]
pub struct SitePreemption {
    /// Only preempt jobs whose QOS priority is at least this much lower.
    min_gap: u32,
}

impl Policy for SitePreemption {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// `key = value` lines, `#` comments: `min_gap` (a QOS priority difference).
    fn init(&mut self, config: &str) -> Result<(), String> {
        *self = Self::default();
        for line in gantry_sdk::config_lines(config) {
            match line? {
                (n, "min_gap", value) => {
                    self.min_gap = value
                        .parse()
                        .map_err(|_| format!("line {n}: min_gap must be a whole number >= 0"))?
                }
                (n, other, _) => return Err(format!("line {n}: unknown key '{other}'")),
            }
        }
        Ok(())
    }
}

impl Preemption for SitePreemption {
    fn select(&mut self, _now: Time, batch: &[PreemptionQuery]) -> Vec<Vec<Victim>> {
        batch
            .iter()
            .map(|q| {
                let mut lower: Vec<_> = q
                    .candidates
                    .iter()
                    .filter(|c| c.qos_priority.saturating_add(self.min_gap) < q.qos_priority)
                    .collect();
                // The youngest first: they lose the least work.
                lower.sort_by_key(|c| (c.qos_priority, -c.start_time, c.job));
                let (mut cores, mut gpus) = (0u64, 0u64);
                let mut victims = Vec::new();
                for c in lower {
                    if cores >= q.cores && gpus >= q.gpus {
                        break;
                    }
                    cores += c.cores;
                    gpus += c.gpus;
                    // Each candidate comes with its QOS's preempt mode.
                    victims.push(Victim {
                        job: c.job,
                        mode: c.mode,
                    });
                }
                victims
            })
            .collect()
    }
}

gantry_sdk::export_preemption!(SitePreemption);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_select;
    use gantry_sdk::{PreemptMode, PreemptionCandidate};

    fn running(job: u64, qos_priority: u32, start_time: Time) -> PreemptionCandidate {
        PreemptionCandidate {
            job,
            qos_priority,
            partition_tier: 0,
            start_time,
            cores: 4,
            gpus: 0,
            mode: PreemptMode::Requeue,
        }
    }

    #[test]
    fn the_youngest_lower_qos_job_makes_room() {
        let mut p = SitePreemption::default();
        p.init("").unwrap();
        let q = PreemptionQuery {
            job: 9,
            qos_priority: 10,
            partition_tier: 0,
            cores: 4,
            gpus: 0,
            candidates: alloc::vec![running(1, 0, 100), running(2, 0, 500), running(3, 10, 900)],
        };
        let answer = check_select(&mut p, 1000, &[q]).unwrap();
        assert_eq!(answer[0].iter().map(|v| v.job).collect::<Vec<_>>(), [2]);
    }
}
