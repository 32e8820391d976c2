//! A priority policy: quality of service first, then the longest wait. Gantry asks it
//! once per scheduling cycle for one priority per waiting job; the highest starts first.
//!
//! Edit `prioritize` (and `fields`, if it reads other columns), test with `cargo test`,
//! build the component with `cargo build --release --target wasm32-unknown-unknown`.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{
    log, Level, Policy, PolicyInfo, Priority, PriorityBatch, PriorityFactor, PriorityFields, Time,
};

/// What the policy keeps between calls. It lives as long as one loaded instance: it
/// starts afresh (`Default`, then `init`) on every load, re-instantiation and restart.
pub struct SitePriority {
    /// Priority points per second waited.
    age_weight: i64,
}

impl Default for SitePriority {
    fn default() -> Self {
        Self { age_weight: 1 }
    }
}

impl Policy for SitePriority {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: env!("CARGO_PKG_NAME").to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// The configuration text given at load (`gantry policy load --config FILE`, or
    /// `gantry sim --policy-config priority=FILE`): `key = value` lines, `#` comments.
    fn init(&mut self, config: &str) -> Result<(), String> {
        *self = Self::default();
        for line in gantry_sdk::config_lines(config) {
            match line? {
                (n, "age_weight", value) => {
                    self.age_weight = value
                        .parse()
                        .ok()
                        .filter(|w: &i64| (0..=1_000_000).contains(w))
                        .ok_or_else(|| format!("line {n}: age_weight must be 0 to 1000000"))?
                }
                (n, other, _) => return Err(format!("line {n}: unknown key '{other}'")),
            }
        }
        log(
            Level::Info,
            &format!("ready: age weight {}", self.age_weight),
        );
        Ok(())
    }
}

impl Priority for SitePriority {
    /// Only the columns named here cross into the component each cycle.
    fn fields(&self) -> PriorityFields {
        PriorityFields::QOS_PRIORITY | PriorityFields::AGE
    }

    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        jobs.iter()
            .map(|j| {
                let (qos, age) = self.parts(j.qos_priority, j.age);
                qos.saturating_add(age)
            })
            .collect()
    }

    /// What `sprio` shows beside each job's priority (asked only by `sprio`).
    fn explain(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<PriorityFactor> {
        let (qos, age): (Vec<f64>, Vec<f64>) = jobs
            .iter()
            .map(|j| {
                let (q, a) = self.parts(j.qos_priority, j.age);
                (q as f64, a as f64)
            })
            .unzip();
        [("QOS", qos), ("AGE", age)]
            .into_iter()
            .map(|(name, values)| PriorityFactor {
                name: name.to_string(),
                weight: 1.0,
                values,
            })
            .collect()
    }
}

impl SitePriority {
    /// A job's QOS part (far above any age) and its age part.
    fn parts(&self, qos_priority: u32, age: Time) -> (i64, i64) {
        (
            i64::from(qos_priority).saturating_mul(1 << 40),
            age.max(0).saturating_mul(self.age_weight),
        )
    }
}

gantry_sdk::export_priority!(SitePriority);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::{job, queue_order};
    use gantry_sdk::PriorityInput;

    #[test]
    fn qos_first_then_the_longest_wait() {
        let mut p = SitePriority::default();
        p.init("age_weight = 2").unwrap();
        let now = 1000;
        let old = job(1, 0, now);
        let new = job(2, 900, now);
        let urgent = PriorityInput {
            qos_priority: 10,
            ..job(3, 990, now)
        };
        assert_eq!(
            queue_order(&mut p, now, &[old, new, urgent]).unwrap(),
            vec![3, 1, 2]
        );
    }

    #[test]
    fn bad_configuration_is_refused_with_its_line() {
        let mut p = SitePriority::default();
        assert!(p.init("age_weight = -1").unwrap_err().contains("line 1"));
        assert!(p.init("\nspeed = 3").unwrap_err().contains("line 2"));
    }
}
