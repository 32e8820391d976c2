//! Largest expansion factor first (LXF): a job's expansion factor is
//! `(age + time_limit) / time_limit` — how much longer than its own length the job will
//! have taken if it started now. Ordering by it lets short jobs overtake long ones after
//! little waiting while long jobs still age forward, without any weights to tune.
//!
//! Jobs without a time limit get `unlimited_as_s` (default one day) as their length.
//! An optional `boost_gpu_jobs` adds a bonus for GPU jobs, to keep accelerators busy.

#![cfg_attr(target_arch = "wasm32", no_std)]

extern crate alloc;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use gantry_sdk::{
    log, Level, Policy, PolicyInfo, Priority, PriorityBatch, PriorityFactor, PriorityFields, Time,
};

pub struct XFactor {
    unlimited_as_s: i64,
    boost_gpu_jobs: f64,
}

impl Default for XFactor {
    fn default() -> Self {
        Self {
            unlimited_as_s: 86_400,
            boost_gpu_jobs: 0.0,
        }
    }
}

impl Policy for XFactor {
    fn info(&self) -> PolicyInfo {
        PolicyInfo {
            name: "xfactor".to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }

    /// Config: `key = value` lines; `#` starts a comment.
    fn init(&mut self, config: &str) -> Result<(), String> {
        *self = Self::default();
        for line in gantry_sdk::config_lines(config) {
            let (n, key, value) = line?;
            match key {
                "unlimited_as_s" => {
                    self.unlimited_as_s =
                        value.parse().ok().filter(|v: &i64| *v > 0).ok_or_else(|| {
                            format!("line {n}: unlimited_as_s must be a positive integer")
                        })?
                }
                "boost_gpu_jobs" => {
                    self.boost_gpu_jobs = value
                        .parse()
                        .ok()
                        .filter(|v: &f64| v.is_finite() && *v >= 0.0)
                        .ok_or_else(|| format!("line {n}: boost_gpu_jobs must be a number >= 0"))?
                }
                other => return Err(format!("line {n}: unknown key '{other}'")),
            }
        }
        log(
            Level::Info,
            &format!(
                "xfactor ready: unlimited jobs count as {} s",
                self.unlimited_as_s
            ),
        );
        Ok(())
    }
}

impl Priority for XFactor {
    /// Only these columns cross into the component.
    fn fields(&self) -> PriorityFields {
        PriorityFields::AGE | PriorityFields::TIME_LIMIT | PriorityFields::GPUS
    }

    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        jobs.iter()
            .map(|j| {
                let (x, boost) = self.factors(j.age, j.time_limit, j.gpus);
                // Three decimals of the expansion factor survive the integer priority.
                ((x + boost) * 1000.0) as i64
            })
            .collect()
    }

    /// For `sprio`: the expansion factor and the GPU boost, each weighted 1000 as
    /// `prioritize` scales their sum.
    fn explain(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<PriorityFactor> {
        let (x, boost): (Vec<f64>, Vec<f64>) = jobs
            .iter()
            .map(|j| self.factors(j.age, j.time_limit, j.gpus))
            .unzip();
        [("XFACTOR", x), ("GPUBOOST", boost)]
            .into_iter()
            .map(|(name, values)| PriorityFactor {
                name: name.to_string(),
                weight: 1000.0,
                values,
            })
            .collect()
    }
}

impl XFactor {
    /// A job's expansion factor, and its GPU boost (0 for a job without GPUs).
    fn factors(&self, age: Time, time_limit: Option<Time>, gpus: u64) -> (f64, f64) {
        let length = time_limit.unwrap_or(self.unlimited_as_s).max(1) as f64;
        let x = (age.max(0) as f64 + length) / length;
        let boost = if gpus > 0 { self.boost_gpu_jobs } else { 0.0 };
        (x, boost)
    }
}

gantry_sdk::export_priority!(XFactor);

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_sdk::harness::{job, queue_order};
    use gantry_sdk::PriorityInput;

    #[test]
    fn a_short_job_overtakes_a_long_one_after_a_short_wait() {
        let mut p = XFactor::default();
        p.init("").unwrap();
        let now = 1000;
        let long = PriorityInput {
            time_limit: Some(86_400),
            ..job(1, 0, now)
        };
        let short = PriorityInput {
            time_limit: Some(600),
            ..job(2, 900, now)
        };
        // The long job waited 1000 s (x ≈ 1.01), the short one 100 s (x ≈ 1.17).
        assert_eq!(
            queue_order(&mut p, now, &[long, short]).unwrap(),
            vec![2, 1]
        );
    }

    /// Against first-come-first-served on a real workload, without Wasm: expansion-factor
    /// ordering must cut the mean bounded slowdown.
    #[test]
    fn beats_fifo_on_a_trace() {
        use gantry_sdk::replay::TraceReplay;
        let trace = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz"
        );
        let fifo = TraceReplay::open(trace).unwrap().take(4000).run().unwrap();
        let lxf = TraceReplay::open(trace)
            .unwrap()
            .take(4000)
            .priority(XFactor::default(), "")
            .unwrap()
            .run()
            .unwrap();
        assert_eq!((fifo.unfinished, lxf.unfinished), (0, 0));
        assert_eq!(lxf.jobs, fifo.jobs);
        assert!(
            lxf.mean_bounded_slowdown < fifo.mean_bounded_slowdown,
            "xfactor {} vs fifo {}",
            lxf.mean_bounded_slowdown,
            fifo.mean_bounded_slowdown
        );
    }

    #[test]
    fn gpu_boost_and_config_errors() {
        let mut p = XFactor::default();
        p.init("boost_gpu_jobs = 5 # keep GPUs busy").unwrap();
        let cpu = job(1, 0, 10);
        let gpu = PriorityInput {
            gpus: 1,
            ..job(2, 5, 10)
        };
        assert_eq!(queue_order(&mut p, 10, &[cpu, gpu]).unwrap(), vec![2, 1]);
        assert!(p
            .init("boost_gpu_jobs = -1")
            .unwrap_err()
            .contains("line 1"));
        assert!(p
            .init("speed = 3")
            .unwrap_err()
            .contains("unknown key 'speed'"));
        assert!(p.init("nonsense").is_err());
    }
}
