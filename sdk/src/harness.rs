//! A native test harness: run a policy against scenarios without Wasm, and check its
//! answers the way the host will (one answer per batch entry, indices in range, factors
//! in [0, 1]), so a policy's logic is unit-tested with plain `cargo test`.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use crate::{
    Fairshare, Placement, PlacementBatch, PlacementRanking, Preemption, PreemptionQuery, Priority,
    PriorityBatch, PriorityInput, ShareTree, Time, Victim,
};

/// A waiting job with plausible defaults; change fields with struct update syntax.
pub fn job(id: u64, submit_time: Time, now: Time) -> PriorityInput {
    PriorityInput {
        job: id,
        submit_time,
        age: (now - submit_time).max(0),
        cores: 1,
        nodes: 1,
        gpus: 0,
        time_limit: Some(3600),
        partition_tier: 0,
        qos: 0,
        qos_priority: 0,
        fairshare: 0.5,
        user: 0,
        account: 0,
    }
}

/// Runs `prioritize` on `jobs` (as one batch) and checks the answer's shape. Returns job ids, highest first
/// (ties by submission, as the kernel orders them).
pub fn queue_order<P: Priority>(
    p: &mut P,
    now: Time,
    jobs: &[PriorityInput],
) -> Result<Vec<u64>, String> {
    // The batch holds only the columns the policy declares, as in a component.
    let mut batch = PriorityBatch::with_fields(p.fields());
    jobs.iter().for_each(|&j| batch.push(j));
    let prios = p.prioritize(now, &batch);
    if prios.len() != jobs.len() {
        return Err(format!(
            "prioritize answered {} priorities for {} jobs",
            prios.len(),
            jobs.len()
        ));
    }
    let mut order: Vec<(i64, Time, u64)> = jobs
        .iter()
        .zip(&prios)
        .map(|(j, &p)| (p, j.submit_time, j.job))
        .collect();
    order.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    Ok(order.into_iter().map(|o| o.2).collect())
}

/// Runs `factors` and checks one factor per node, each in [0, 1].
pub fn check_factors<P: Fairshare>(
    p: &mut P,
    now: Time,
    tree: &ShareTree,
) -> Result<Vec<f64>, String> {
    let f = p.factors(now, tree);
    if f.len() != tree.len() {
        return Err(format!(
            "factors answered {} values for {} tree nodes",
            f.len(),
            tree.len()
        ));
    }
    if let Some((i, x)) = f
        .iter()
        .enumerate()
        .find(|(_, x)| !(0.0..=1.0).contains(*x))
    {
        return Err(format!("factor {x} of node {i} is outside [0, 1]"));
    }
    Ok(f)
}

/// Runs `select` and checks one answer per query, naming only offered candidates.
pub fn check_select<P: Preemption>(
    p: &mut P,
    now: Time,
    batch: &[PreemptionQuery],
) -> Result<Vec<Vec<Victim>>, String> {
    let a = p.select(now, batch);
    if a.len() != batch.len() {
        return Err(format!(
            "select answered {} lists for {} queries",
            a.len(),
            batch.len()
        ));
    }
    for (q, vs) in batch.iter().zip(&a) {
        if let Some(v) = vs
            .iter()
            .find(|v| !q.candidates.iter().any(|c| c.job == v.job))
        {
            return Err(format!(
                "victim {} was not offered for job {}",
                v.job, q.job
            ));
        }
    }
    Ok(a)
}

/// Runs `rank` and checks one ranking per job with indices in range.
pub fn check_rank<P: Placement>(
    p: &mut P,
    batch: &PlacementBatch,
) -> Result<PlacementRanking, String> {
    let r = p.rank(batch);
    r.check(batch)
        .map_err(|e| format!("rank's answer does not fit the batch: {e}"))?;
    Ok(r)
}
