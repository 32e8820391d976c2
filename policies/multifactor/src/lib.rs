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

use gantry_sdk::{
    Policy, PolicyInfo, Priority, PriorityBatch, PriorityFactor, PriorityFields, Time,
};
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

    /// Reads only the five columns it weighs: three passes for the largest values, then
    /// one that scores every job.
    fn prioritize(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<i64> {
        let c = &self.config;
        let (age, cores, tier, qos, fairshare) = columns(jobs);
        let n = age.len();
        let (cores, tier, qos, fairshare) = (&cores[..n], &tier[..n], &qos[..n], &fairshare[..n]);
        let scale = Scale::of(c, cores, tier, qos);
        // `JOBS_PER_ITERATION` jobs per loop iteration, written into spare capacity, as
        // `push` would check the capacity for each.
        let per = JOBS_PER_ITERATION;
        let mut out = Vec::with_capacity(n);
        let spare = &mut out.spare_capacity_mut()[..n];
        let mut o = spare.chunks_exact_mut(per);
        let groups = (age.chunks_exact(per).zip(cores.chunks_exact(per)))
            .zip(tier.chunks_exact(per).zip(qos.chunks_exact(per)))
            .zip(fairshare.chunks_exact(per));
        for (o, (((a, co), (t, q)), f)) in (&mut o).zip(groups) {
            for k in 0..per {
                o[k].write(score(c, &scale, a[k], co[k], t[k], q[k], f[k]));
            }
        }
        let rest = o.into_remainder();
        let done = n - rest.len();
        for (k, slot) in rest.iter_mut().enumerate() {
            let j = done + k;
            slot.write(score(
                c,
                &scale,
                age[j],
                cores[j],
                tier[j],
                qos[j],
                fairshare[j],
            ));
        }
        // SAFETY: the loops above wrote all `n` elements.
        unsafe { out.set_len(n) };
        out
    }

    /// The five factors `prioritize` weighs, each job's in `[0, 1]`, with their weights:
    /// a job's priority is their weighted sum, truncated.
    fn explain(&mut self, _now: Time, jobs: &PriorityBatch) -> Vec<PriorityFactor> {
        let c = &self.config;
        let (age, cores, tier, qos, fairshare) = columns(jobs);
        let scale = Scale::of(c, cores, tier, qos);
        let weights = [
            ("AGE", c.weight_age),
            ("FAIRSHARE", c.weight_fairshare),
            ("JOBSIZE", c.weight_job_size),
            ("PARTITION", c.weight_partition),
            ("QOS", c.weight_qos),
        ];
        let mut out: Vec<PriorityFactor> = weights
            .iter()
            .map(|&(name, weight)| PriorityFactor {
                name: name.to_string(),
                weight,
                values: Vec::with_capacity(age.len()),
            })
            .collect();
        for j in 0..age.len() {
            let f = factors(c, &scale, age[j], cores[j], tier[j], qos[j], fairshare[j]);
            for (column, value) in out.iter_mut().zip(f) {
                column.values.push(value);
            }
        }
        out
    }
}

/// The five columns multifactor weighs: age, cores, partition tier, QOS priority,
/// fairshare.
type Columns<'a> = (&'a [Time], &'a [u64], &'a [u32], &'a [u32], &'a [f64]);

fn columns(jobs: &PriorityBatch) -> Columns<'_> {
    (
        jobs.age(),
        jobs.cores(),
        jobs.partition_tier(),
        jobs.qos_priority(),
        jobs.fairshare(),
    )
}

/// How many jobs `prioritize` scores per loop iteration. In Wasm, every iteration checks
/// the call's deadline, and around that check the compiled loop stores and reloads the
/// weights and scales it would otherwise keep in registers; four jobs per iteration pay
/// that once per four (docs/PERFORMANCE.md, "Hot loops"). Natively, LLVM vectorizes the
/// loop in pairs, and four per iteration made it 10–15 % slower. The answers are the
/// same either way.
const JOBS_PER_ITERATION: usize = if cfg!(target_arch = "wasm32") { 4 } else { 2 };

/// The largest entry of each column (0 for none), in one pass. Three maxima kept side
/// by side are three independent chains of compares: one pass per column would make
/// each compare wait for the one before it, and in Wasm, where these loops are not
/// vectorized, that wait was a large part of the call.
fn largest(cores: &[u64], tier: &[u32], qos: &[u32]) -> (u64, u32, u32) {
    let n = cores.len();
    let (tier, qos) = (&tier[..n], &qos[..n]);
    let (mut c, mut t, mut q) = (0, 0, 0);
    for j in 0..n {
        c = c.max(cores[j]);
        t = t.max(tier[j]);
        q = q.max(qos[j]);
    }
    (c, t, q)
}

/// What one unit of each factor is worth: 1 / its largest value in this batch (the
/// configured maximum, for age), which scales the factor to `[0, 1]`.
///
/// Scores multiply by these rather than divide by the maximum. Four divisions per job
/// were the scoring loop's largest cost in Wasm, where each is a scalar division of its
/// own (the native build divides two jobs' at once). `x * (1 / m)` can differ from
/// `x / m` in the last bit, which can move a priority by 1 where it falls on an integer;
/// both builds compute the same.
struct Scale {
    per_core: f64,
    per_tier: f64,
    per_qos: f64,
    per_second: f64,
}

impl Scale {
    fn of(c: &Config, cores: &[u64], tier: &[u32], qos: &[u32]) -> Self {
        let (largest_cores, max_tier, max_qos) = largest(cores, tier, qos);
        let max_cores = if c.cluster_cores > 0 {
            c.cluster_cores
        } else {
            largest_cores
        };
        Self {
            per_core: 1.0 / max_cores.max(1) as f64,
            per_tier: 1.0 / max_tier.max(1) as f64,
            per_qos: 1.0 / max_qos.max(1) as f64,
            per_second: 1.0 / c.max_age_s as f64,
        }
    }
}

/// One job's priority: the weighted sum of its factors, each in `[0, 1]`. Always inlined,
/// so that the loop in `prioritize` holds four copies rather than four calls.
#[inline(always)]
fn score(c: &Config, s: &Scale, age: i64, cores: u64, tier: u32, qos: u32, fairshare: f64) -> i64 {
    let [age, fairshare, size, tier, qos] = factors(c, s, age, cores, tier, qos, fairshare);
    let sum = c.weight_age * age
        + c.weight_fairshare * fairshare
        + c.weight_job_size * size
        + c.weight_partition * tier
        + c.weight_qos * qos;
    sum as i64
}

/// One job's factors, each in `[0, 1]`: age, fairshare, job size, partition, QOS.
#[inline(always)]
fn factors(
    c: &Config,
    s: &Scale,
    age: i64,
    cores: u64,
    tier: u32,
    qos: u32,
    fairshare: f64,
) -> [f64; 5] {
    let age = at_most_one(not_below_zero(age as f64 * s.per_second));
    let size = at_most_one(from_unsigned(cores) * s.per_core);
    let size = if c.favor_small { 1.0 - size } else { size };
    [
        age,
        fairshare.clamp(0.0, 1.0),
        size,
        tier as f64 * s.per_tier,
        qos as f64 * s.per_qos,
    ]
}

/// `x.max(0.0)` for the non-NaN `x` used here, written as a comparison (see
/// [`at_most_one`]). Age is clamped after it is scaled, not as an integer: of an integer
/// known not to be negative, LLVM emits Wasm's unsigned conversion, which Cranelift
/// compiles to a test and two paths (and a clamp right after the conversion, LLVM turns
/// back into one before it).
#[inline]
fn not_below_zero(x: f64) -> f64 {
    if x > 0.0 {
        x
    } else {
        0.0
    }
}

/// `x as f64`, through a signed conversion and a correction for `x >= 2^63` (for the
/// reason in [`not_below_zero`]).
#[inline]
fn from_unsigned(x: u64) -> f64 {
    let f = x as i64 as f64;
    if f < 0.0 {
        f + 18_446_744_073_709_551_616.0
    } else {
        f
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

    /// `n` jobs submitted `spacing` seconds apart, each factor varying its own way.
    fn varied_jobs(n: u64, spacing: i64, now: Time) -> Vec<PriorityInput> {
        (0..n)
            .map(|i| PriorityInput {
                cores: 1 + (i * 37) % 64,
                partition_tier: (i % 3) as u32,
                qos_priority: ((i * 7) % 5) as u32,
                fairshare: (i as f64 * 0.13) % 1.0,
                ..job(i + 1, i as i64 * spacing, now)
            })
            .collect()
    }

    /// Jobs are scored several per loop iteration, the rest one by one: a job's
    /// priority must not depend on where in the batch it sits.
    #[test]
    fn a_priority_does_not_depend_on_the_position_in_the_batch() {
        let mut p = Multifactor::default();
        p.init("").unwrap();
        let now = 100_000;
        for n in 0..=11u64 {
            let jobs = varied_jobs(n, 977, now);
            let batch: PriorityBatch = jobs.iter().copied().collect();
            let answer = p.prioritize(now, &batch);
            for shift in 1..n as usize {
                let mut rotated = jobs.clone();
                rotated.rotate_left(shift);
                let batch: PriorityBatch = rotated.iter().copied().collect();
                let mut expected = answer.clone();
                expected.rotate_left(shift);
                assert_eq!(
                    p.prioritize(now, &batch),
                    expected,
                    "{n} jobs, shift {shift}"
                );
            }
        }
    }

    /// The factors' edges: a negative age counts as 0, an age past `max_age_s` as the
    /// maximum, the largest job as the whole machine, whatever the scale's rounding.
    #[test]
    fn factors_stay_within_their_bounds() {
        let mut p = Multifactor::default();
        p.init("weight_age = 1000\nweight_fairshare = 0\nweight_job_size = 0\nweight_partition = 0\nweight_qos = 0\nmax_age_s = 49")
            .unwrap();
        // One job per value, each a default job but for what `set` changes.
        fn batch<T: Copy>(values: &[T], set: fn(&mut PriorityInput, T)) -> PriorityBatch {
            (0..values.len())
                .map(|i| {
                    let mut j = job(i as u64 + 1, 0, 0);
                    set(&mut j, values[i]);
                    j
                })
                .collect()
        }
        let got = p.prioritize(0, &batch(&[-5, 0, 49, 50, i64::MAX], |j, a| j.age = a));
        assert_eq!(got[0], 0, "negative age");
        assert_eq!(got[1], 0, "no age");
        // 49 * (1 / 49) rounds to just below 1: the sum is truncated, as Slurm does.
        assert!(
            (999..=1000).contains(&got[2]),
            "age at the maximum: {}",
            got[2]
        );
        assert_eq!(got[3], 1000, "past the maximum");
        assert_eq!(got[4], 1000, "far past the maximum");

        p.init("weight_age = 0\nweight_fairshare = 0\nweight_job_size = 100\nfavor_small = false")
            .unwrap();
        let got = p.prioritize(0, &batch(&[1, 64, u64::MAX], |j, c| j.cores = c));
        assert_eq!(got[2], 100, "the largest job is the whole machine");
        assert!(got[0] <= got[1] && got[1] <= got[2], "{got:?}");
    }

    #[test]
    fn unsigned_conversion_agrees_with_as() {
        for x in [
            0,
            1,
            (1 << 53) + 1,
            i64::MAX as u64,
            1 << 63,
            (1 << 63) + 1025,
            u64::MAX,
        ] {
            let (ours, direct) = (from_unsigned(x), x as f64);
            assert!(
                (ours - direct).abs() <= direct * f64::EPSILON,
                "{x}: {ours} against {direct}"
            );
            if x <= i64::MAX as u64 {
                assert_eq!(ours, direct, "{x}");
            }
        }
    }

    /// `explain` gives the factors `prioritize` sums: each job's priority is the
    /// weighted sum of its factors, truncated, whatever the weights.
    #[test]
    fn the_explained_factors_add_up_to_the_priority() {
        let mut p = Multifactor::default();
        let now = 500_000;
        let jobs = varied_jobs(9, 40_000, now);
        let batch: PriorityBatch = jobs.iter().copied().collect();
        for config in [
            "",
            "weight_qos = 0\nfavor_small = false\ncluster_cores = 96",
        ] {
            p.init(config).unwrap();
            let priorities = p.prioritize(now, &batch);
            let factors = p.explain(now, &batch);
            let names: Vec<&str> = factors.iter().map(|f| f.name.as_str()).collect();
            assert_eq!(names, ["AGE", "FAIRSHARE", "JOBSIZE", "PARTITION", "QOS"]);
            for (j, &priority) in priorities.iter().enumerate() {
                let sum = factors
                    .iter()
                    .fold(0.0, |sum, f| sum + f.weight * f.values[j]);
                assert_eq!(sum as i64, priority, "job {j} with config {config:?}");
                assert!(factors.iter().all(|f| (0.0..=1.0).contains(&f.values[j])));
            }
        }
        p.init("").unwrap();
        assert_eq!(
            p.explain(now, &batch)[1].weight,
            10_000.0,
            "the default weight"
        );
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
