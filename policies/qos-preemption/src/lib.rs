//! QOS / partition-tier preemption. For each blocked job, victims are taken from the
//! running jobs the kernel offers (only those whose QOS names the blocked job's QOS in
//! `preemptable_by`: a protected job is never offered) that rank below it — lower QOS
//! priority or lower partition tier — lowest QOS first, then lowest tier, then youngest,
//! until the freed cores and GPUs cover the job. If they cannot, nothing is preempted.
//! Each victim is cancelled, requeued or suspended as its QOS says (`mode = "qos"`), or
//! as `mode` forces.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Policy, PolicyInfo, PreemptMode, Preemption, PreemptionQuery, Time, Victim};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// What each victim's QOS says.
    #[default]
    Qos,
    Cancel,
    Requeue,
    Suspend,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub mode: Mode,
    /// Take the youngest victims first (least work lost); otherwise the oldest.
    pub youngest_first: bool,
    /// Also let a higher partition tier preempt an equal QOS priority.
    pub by_partition_tier: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Qos,
            youngest_first: true,
            by_partition_tier: true,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct QosPreemption {
    pub config: Config,
}

impl Policy for QosPreemption {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "qos-preemption".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
    fn init(&mut self, config: &str) -> Result<(), String> {
        self.config = toml::from_str(config).map_err(|e| format!("qos-preemption config: {e}"))?;
        Ok(())
    }
}

impl Preemption for QosPreemption {
    fn select(&mut self, _now: Time, batch: &[PreemptionQuery]) -> Vec<Vec<Victim>> {
        let c = &self.config;
        batch
            .iter()
            .map(|q| {
                let mut offered: Vec<_> = q
                    .candidates
                    .iter()
                    .filter(|v| {
                        v.qos_priority < q.qos_priority
                            || (c.by_partition_tier && v.partition_tier < q.partition_tier)
                    })
                    .collect();
                offered.sort_by_key(|v| {
                    (
                        v.qos_priority,
                        v.partition_tier,
                        if c.youngest_first {
                            -v.start_time
                        } else {
                            v.start_time
                        },
                        v.job,
                    )
                });
                let (mut cores, mut gpus) = (0u64, 0u64);
                let mut out = Vec::new();
                for v in offered {
                    if cores >= q.cores && gpus >= q.gpus {
                        break;
                    }
                    cores += v.cores;
                    gpus += v.gpus;
                    let mode = match c.mode {
                        Mode::Qos => v.mode,
                        Mode::Cancel => PreemptMode::Cancel,
                        Mode::Requeue => PreemptMode::Requeue,
                        Mode::Suspend => PreemptMode::Suspend,
                    };
                    out.push(Victim { job: v.job, mode });
                }
                if cores >= q.cores && gpus >= q.gpus {
                    out
                } else {
                    Vec::new()
                }
            })
            .collect()
    }
}

gantry_sdk::export_preemption!(QosPreemption);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::check_select;
    use gantry_sdk::PreemptionCandidate;

    fn cand(job: u64, qos_priority: u32, start: Time, cores: u64) -> PreemptionCandidate {
        PreemptionCandidate {
            job,
            qos_priority,
            partition_tier: 0,
            start_time: start,
            cores,
            gpus: 0,
            mode: PreemptMode::Requeue,
        }
    }

    #[test]
    fn lowest_qos_then_youngest_until_covered() {
        let mut p = QosPreemption::default();
        p.init("").unwrap();
        let q = PreemptionQuery {
            job: 9,
            qos_priority: 100,
            partition_tier: 0,
            cores: 8,
            gpus: 0,
            candidates: vec![
                cand(1, 0, 10, 4),
                cand(2, 0, 20, 4),
                cand(3, 50, 30, 8),
                cand(4, 100, 40, 64),
            ],
        };
        let a = check_select(&mut p, 0, std::slice::from_ref(&q)).unwrap();
        assert_eq!(a[0].iter().map(|v| v.job).collect::<Vec<_>>(), vec![2, 1]);
        assert!(a[0].iter().all(|v| v.mode == PreemptMode::Requeue));
        // Job 4 has the same QOS priority: never taken, so 64 cores cannot be freed.
        let big = PreemptionQuery { cores: 70, ..q };
        assert!(check_select(&mut p, 0, &[big]).unwrap()[0].is_empty());
    }

    #[test]
    fn mode_override() {
        let mut p = QosPreemption::default();
        p.init("mode = \"cancel\"").unwrap();
        let q = PreemptionQuery {
            job: 9,
            qos_priority: 1,
            partition_tier: 0,
            cores: 1,
            gpus: 0,
            candidates: vec![cand(1, 0, 0, 1)],
        };
        assert_eq!(
            p.select(0, core::slice::from_ref(&q))[0][0].mode,
            PreemptMode::Cancel
        );
        p.init("mode = \"suspend\"").unwrap();
        assert_eq!(p.select(0, &[q])[0][0].mode, PreemptMode::Suspend);
        assert!(p.init("mode = \"hibernate\"").is_err());
    }
}
