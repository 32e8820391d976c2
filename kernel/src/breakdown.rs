//! The priorities of the waiting jobs broken into the priority policy's weighted factors
//! (what `sprio` shows), computed on demand from the batch the cycle would build now.
//!
//! Invariant: a breakdown is only shown once checked ([`check_factors`]): bounded names
//! and counts, one finite value per job. A policy's display can never put unbounded or
//! unprintable text in front of a user.

use crate::cycle::{priorities, priority_input, refresh_fairshare};
use crate::job::JobId;
use crate::policy::{
    PolicyError, PriorityBatch, PriorityFactor, ShareTree, KERNEL_PRIORITY_FIELDS,
};
use crate::scheduler::Scheduler;
use crate::units::Time;

/// Most factors a breakdown may have.
pub const MAX_FACTORS: usize = 16;
/// Longest factor name, in bytes.
pub const MAX_FACTOR_NAME: usize = 24;

/// The waiting jobs, in job order, with their priorities and factors at `at`.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityBreakdown {
    pub at: Time,
    pub jobs: Vec<JobId>,
    /// What the policy answers now, less each job's nice: the order the next cycle uses
    /// (after the partition tier).
    pub priority: Vec<i64>,
    pub nice: Vec<i32>,
    /// The policy's factors, checked; empty when it does not explain itself. An error
    /// says why the breakdown was refused; the priorities stand.
    pub factors: Result<Vec<PriorityFactor>, PolicyError>,
}

impl Scheduler {
    /// Builds the priority batch of the waiting jobs at `now`, as the cycle does, and
    /// asks the priority policy for its answer and for its breakdown. Changes nothing
    /// but what a cycle at `now` would also change (fairshare factors computed again
    /// when stale, a fallback when the policy fails).
    pub fn priority_breakdown(&mut self, now: Time) -> PriorityBreakdown {
        refresh_fairshare(self, now, &mut ShareTree::default());
        let mut batch = PriorityBatch::default();
        batch.reset(self.parts().policies.priority.fields() | KERNEL_PRIORITY_FIELDS);
        let factors = &self.fairshare.as_ref().expect("refreshed above").factors();
        let (mut jobs, mut nice) = (Vec::new(), Vec::new());
        for &id in self.waiting() {
            let j = self.job(id).expect("waiting jobs exist");
            batch.push(priority_input(self, factors, j, now));
            jobs.push(id);
            nice.push(j.nice);
        }
        let mut priority = priorities(self, now, &batch);
        for (p, &n) in priority.iter_mut().zip(&nice) {
            *p = p.saturating_sub(i64::from(n));
        }
        let factors = self
            .parts()
            .policies
            .priority
            .explain(now, &batch)
            .and_then(|f| check_factors(batch.len(), f));
        PriorityBreakdown {
            at: now,
            jobs,
            priority,
            nice,
            factors,
        }
    }
}

/// A breakdown is shown only if it has at most [`MAX_FACTORS`] factors with distinct
/// names of 1 to [`MAX_FACTOR_NAME`] ASCII letters, digits and `_` (upper-cased
/// here), finite weights, and one finite value per job.
pub fn check_factors(
    jobs: usize,
    mut factors: Vec<PriorityFactor>,
) -> Result<Vec<PriorityFactor>, PolicyError> {
    let invalid = |why: String| Err(PolicyError::Invalid(why));
    if factors.len() > MAX_FACTORS {
        return invalid(format!(
            "{} factors; at most {MAX_FACTORS} are shown",
            factors.len()
        ));
    }
    for (i, f) in factors.iter_mut().enumerate() {
        let good_name = (1..=MAX_FACTOR_NAME).contains(&f.name.len())
            && f.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !good_name {
            return invalid(format!(
                "factor {} has a name that is not 1 to {MAX_FACTOR_NAME} letters, digits or _",
                i + 1
            ));
        }
        f.name.make_ascii_uppercase();
        if f.values.len() != jobs {
            return invalid(format!(
                "factor {} has {} values for {jobs} jobs",
                f.name,
                f.values.len()
            ));
        }
        if !f.weight.is_finite() || !f.values.iter().all(|v| v.is_finite()) {
            return invalid(format!("factor {} is not a finite number", f.name));
        }
    }
    for (i, f) in factors.iter().enumerate() {
        if factors[..i].iter().any(|g| g.name == f.name) {
            return invalid(format!("factor {} is named twice", f.name));
        }
    }
    Ok(factors)
}
