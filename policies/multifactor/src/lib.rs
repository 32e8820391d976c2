//! Slurm-like multifactor priority: a weighted sum of factors in `[0, 1]`:
//! age (saturating at `max_age_s`), fairshare (from the fairshare policy), job size
//! (favouring small or large jobs), partition tier and QOS priority.
//!
//! Builds natively (for tests and as the yardstick) and as a `priority` component.
//! All arithmetic is plain IEEE `f64` add/mul/div, so both builds give identical answers.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{Policy, PolicyInfo, Priority, PriorityBatch, PriorityFields, Time};
use serde::Deserialize;

/// Configuration (TOML). Every key is optional.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub weight_age: f64,
    pub weight_fairshare: f64,
    pub weight_job_size: f64,
    pub weight_partition: f64,
    pub weight_qos: f64,
    /// Age at which the age factor reaches 1, in seconds.
    pub max_age_s: i64,
    /// Small jobs get the larger size factor (Slurm's `PriorityFavorSmall`).
    pub favor_small: bool,
    /// Cores that count as "the whole machine" for the size factor; 0 takes the largest
    /// job of the batch.
    pub cluster_cores: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            weight_age: 1000.0,
            weight_fairshare: 10_000.0,
            weight_job_size: 1000.0,
            weight_partition: 1000.0,
            weight_qos: 2000.0,
            max_age_s: 7 * 86_400,
            favor_small: true,
            cluster_cores: 0,
        }
    }
}

#[derive(Debug, Default, Clone)]
pub struct Multifactor {
    pub config: Config,
}

impl Policy for Multifactor {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "multifactor".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    fn init(&mut self, config: &str) -> Result<(), String> {
        let c: Config = toml::from_str(config).map_err(|e| format!("multifactor config: {e}"))?;
        let weights = [
            c.weight_age,
            c.weight_fairshare,
            c.weight_job_size,
            c.weight_partition,
            c.weight_qos,
        ];
        if weights.iter().any(|w| !w.is_finite() || *w < 0.0) {
            return Err("multifactor config: weights must be finite and not negative".to_string());
        }
        if c.max_age_s <= 0 {
            return Err("multifactor config: max_age_s must be positive".to_string());
        }
        self.config = c;
        Ok(())
    }
}

impl Priority for Multifactor {
    fn fields(&self) -> PriorityFields {
        PriorityFields::AGE
            | PriorityFields::CORES
            | PriorityFields::PARTITION_TIER
            | PriorityFields::QOS_PRIORITY
            | PriorityFields::FAIRSHARE
    }

    /// Reads only the five columns it weighs, so a 100,000-job batch is five linear passes.
    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        let c = &self.config;
        let (age, cores, tier, qos, fairshare) = (
            jobs.age(),
            jobs.cores(),
            jobs.partition_tier(),
            jobs.qos_priority(),
            jobs.fairshare(),
        );
        let max_cores = if c.cluster_cores > 0 {
            c.cluster_cores
        } else {
            cores.iter().copied().max().unwrap_or(1)
        }
        .max(1) as f64;
        let max_tier = tier.iter().copied().max().unwrap_or(0).max(1) as f64;
        let max_qos = qos.iter().copied().max().unwrap_or(0).max(1) as f64;
        let max_age = c.max_age_s as f64;
        age.iter()
            .zip(cores)
            .zip(tier)
            .zip(qos)
            .zip(fairshare)
            .map(|((((&age, &cores), &tier), &qos), &fairshare)| {
                let age = at_most_one(age.max(0) as f64 / max_age);
                let size = at_most_one(cores as f64 / max_cores);
                let size = if c.favor_small { 1.0 - size } else { size };
                let sum = c.weight_age * age
                    + c.weight_fairshare * fairshare.clamp(0.0, 1.0)
                    + c.weight_job_size * size
                    + c.weight_partition * (tier as f64 / max_tier)
                    + c.weight_qos * (qos as f64 / max_qos);
                sum as i64
            })
            .collect()
    }
}

/// `x.min(1.0)` for the non-NaN `x` used here, written as a comparison: in Wasm,
/// `f64::min` is a call into the runtime library (its NaN rules differ from `f64.min`),
/// and this runs once per job per factor.
#[inline]
fn at_most_one(x: f64) -> f64 {
    if x > 1.0 {
        1.0
    } else {
        x
    }
}

gantry_sdk::export_priority!(Multifactor);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::{job, queue_order};
    use gantry_sdk::PriorityInput;

    #[test]
    fn older_then_underserved_then_small_first() {
        let mut p = Multifactor::default();
        p.init("weight_age = 1000\nweight_fairshare = 0\nweight_job_size = 0\nweight_partition = 0\nweight_qos = 0\nmax_age_s = 100").unwrap();
        let now = 1000;
        let jobs = [job(1, 950, now), job(2, 900, now), job(3, 990, now)];
        assert_eq!(queue_order(&mut p, now, &jobs).unwrap(), vec![2, 1, 3]);

        p.init("weight_age = 0\nweight_fairshare = 100").unwrap();
        let jobs = [
            PriorityInput {
                fairshare: 0.1,
                ..job(1, 0, now)
            },
            PriorityInput {
                fairshare: 0.9,
                ..job(2, 10, now)
            },
        ];
        assert_eq!(queue_order(&mut p, now, &jobs).unwrap(), vec![2, 1]);

        p.init("weight_age = 0\nweight_fairshare = 0\nweight_job_size = 100")
            .unwrap();
        let jobs = [
            PriorityInput {
                cores: 64,
                ..job(1, 0, now)
            },
            PriorityInput {
                cores: 2,
                ..job(2, 10, now)
            },
        ];
        assert_eq!(queue_order(&mut p, now, &jobs).unwrap(), vec![2, 1]);
        p.init("weight_age = 0\nweight_fairshare = 0\nweight_job_size = 100\nfavor_small = false")
            .unwrap();
        assert_eq!(queue_order(&mut p, now, &jobs).unwrap(), vec![1, 2]);
    }

    #[test]
    fn qos_and_partition_weigh_in() {
        let mut p = Multifactor::default();
        p.init("weight_age = 0\nweight_fairshare = 0\nweight_job_size = 0\nweight_qos = 10")
            .unwrap();
        let jobs = [
            job(1, 0, 5),
            PriorityInput {
                qos_priority: 1000,
                ..job(2, 1, 5)
            },
        ];
        assert_eq!(queue_order(&mut p, 5, &jobs).unwrap(), vec![2, 1]);
    }

    #[test]
    fn bad_config_is_refused_with_a_reason() {
        let mut p = Multifactor::default();
        assert!(p
            .init("weight_age = -1")
            .unwrap_err()
            .contains("not negative"));
        assert!(p
            .init("weigth_age = 1")
            .unwrap_err()
            .contains("unknown field"));
        assert!(p.init("max_age_s = 0").unwrap_err().contains("positive"));
        assert!(p.init("").is_ok());
    }
}
