//! One scheduling cycle: fairshare and priority (one batched call each), a walk of the
//! queue in priority order that starts what fits and reserves for blocked jobs
//! (EASY or conservative backfill), batched placement, then a preemption step.
//!
//! Placement batches: jobs that can start are gathered into a batch, ranked by the
//! placement policy in one call, and committed in priority order. A batch ends at the
//! first blocked job, so every reservation is computed against committed state. If a
//! commit fails because an earlier job of the batch took the nodes, the walk resumes at
//! that job: no job is ever started out of priority order by a stale candidate list.
//!
//! Invariant: a job started by backfill never overlaps, on any node, the time window of a
//! reservation held by a job ahead of it, nor an advance reservation it is not in. A job
//! in an advance reservation starts only while it is open, only on its nodes, and is
//! planned as ending at the latest when the reservation ends.
//!
//! Within one walk, free resources only shrink (jobs start, reservations are added;
//! nothing is released before the preemption step). So a request that found no nodes
//! finds none later in the same walk: the walk remembers each failed (partition, shape,
//! end) and answers the same request again without searching. This is what lets EASY
//! backfill consider every pending job of a 100,000-job queue.

use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};
use std::cmp::Reverse;

use rustc_hash::FxHashSet;

use crate::alloc::{give_back_into, node_units};
use crate::cluster::{Cluster, NodeFree, NodeId, PartitionId, PreemptMode, QosId, UserId};
use crate::job::{Hold, Job, JobId, NodeAllocation, PendingReason};
use crate::policy::{
    first_fit, ClassicFairshare, FairsharePolicy, FifoPriority, PlacementBatch,
    PreemptionCandidate, PreemptionQuery, PriorityBatch, PriorityInput, PriorityPolicy, ShareNode,
    ShareTree, KERNEL_PRIORITY_FIELDS,
};
use crate::reservation::ResvId;
use crate::scheduler::{CycleOutcome, Reservation, Scheduler};
use crate::units::Time;

/// What the walk reads of a pending job, gathered in job order while the priority batch
/// is built. The walk visits jobs in priority order; reading these few fields from a
/// compact list instead of the job table keeps a 100,000-job walk in cache.
#[derive(Clone, Copy)]
struct PendingJob {
    id: JobId,
    partition: PartitionId,
    qos: QosId,
    user: UserId,
    /// Jobs with equal shapes share a class (see `Scheduler::shape_class`).
    shape_class: u32,
    time_limit: Option<Time>,
    array_job: Option<JobId>,
    has_dependencies: bool,
    /// Held, or before its begin time: waits whatever is free.
    blocked: Option<PendingReason>,
    /// `--nice`, subtracted from its priority.
    nice: i32,
    /// `--reservation`, open now (a job whose reservation is not is `blocked`).
    resv: Option<ResvId>,
}

/// Who holds a reserved window on a node: a blocked job of this cycle, or an advance
/// reservation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Holder {
    Job(JobId),
    Advance(ResvId),
}

/// Where a job of the placement batch stands in the walk; the job itself (its id and
/// candidates) is the same entry of `Walk::placement`.
struct Batched {
    /// Its position in the walk order (where a conflict resumes the walk).
    pos: usize,
    /// Its index in the pending list (where its reason goes).
    at: usize,
}

/// Reservations, tentative counts and scratch space of the walk in progress.
#[derive(Default)]
struct Walk {
    /// Reservations the backfill mode allows per cycle (0: none, the walk stops at the
    /// first blocked job).
    depth: usize,
    reservations: Vec<Reservation>,
    /// Reserved windows per node index: (start, end, holder).
    reserved: Vec<Vec<(Time, Time, Holder)>>,
    /// Reserved windows by start and by end, sorted, for the reservation search's event
    /// stream. Sorted vectors: a reservation adds all its nodes at one start and one
    /// end, and a cycle makes few reservations but may read them many times.
    reserved_starts: Vec<(Time, NodeId)>,
    reserved_ends: Vec<(Time, NodeId)>,
    /// Expected ends of running jobs (including those started by this walk), sorted.
    /// Built by the first reservation search of the cycle (`releases_built`); cycles
    /// without a blocked job never sort the running jobs.
    releases: Vec<(Time, JobId)>,
    releases_built: bool,
    /// Jobs that can start, waiting for the placement batch, and the batch itself (the
    /// columns the placement policy reads).
    batch: Vec<Batched>,
    placement: PlacementBatch,
    /// Cores and GPUs the batch will take once committed.
    batch_cores: u64,
    batch_gpus: u64,
    batch_user_qos: HashMap<(UserId, QosId), u32>,
    batch_array: HashMap<JobId, u32>,
    /// Blocked jobs with their positions in the order.
    blocked: Vec<(usize, JobId)>,
    /// Requests that found no nodes this walk: (partition, shape, end of its window,
    /// advance reservation).
    no_room: FxHashSet<(PartitionId, u32, Time, Option<ResvId>)>,
    /// Per partition: no node of it is up (checked once per walk, not once per job).
    partition_down: Vec<bool>,
    /// Why each pending job waits, by its index in the pending list.
    reasons: Vec<PendingReason>,
    /// The reservation search's working memory, kept from search to search.
    search: SearchScratch,
}

/// Working memory of one reservation search (see [`reserve`]).
#[derive(Default)]
struct SearchScratch {
    /// Per node index: units the node could give the job being reserved.
    units: Vec<u32>,
    future: FutureNodes,
    /// Nodes whose units change at the event time being applied.
    touched: Vec<NodeId>,
}

/// Nodes' free states at a time in the future, as running jobs end: a node not yet
/// touched reads as it is now. The slots keep their allocations between searches.
#[derive(Default)]
struct FutureNodes {
    free: Vec<NodeFree>,
    /// Per node index: whether `free` holds that node's future state.
    known: Vec<bool>,
    /// The nodes marked in `known`, to unmark when the search ends.
    marked: Vec<NodeId>,
}

impl FutureNodes {
    fn resize(&mut self, nodes: usize) {
        self.free.resize_with(nodes, NodeFree::default);
        self.known.resize(nodes, false);
    }

    /// Node `n`'s future state, or `now` when no release touched it yet.
    fn get<'a>(&'a self, n: NodeId, now: &'a NodeFree) -> &'a NodeFree {
        if self.known[n.index()] {
            &self.free[n.index()]
        } else {
            now
        }
    }

    /// Gives `a` back to node `a.node`, whose present state is `now`.
    fn release(&mut self, a: &NodeAllocation, now: &NodeFree) {
        let k = a.node.index();
        if !self.known[k] {
            self.free[k].clone_from(now);
            self.known[k] = true;
            self.marked.push(a.node);
        }
        give_back_into(&mut self.free[k], a);
    }

    /// Forgets every future state (for the next search).
    fn forget(&mut self) {
        for n in self.marked.drain(..) {
            self.known[n.index()] = false;
        }
    }
}

impl Walk {
    /// Ready for a new walk over `pending` jobs. Buffers keep their capacity: a cycle
    /// runs on every event, and allocating them afresh was a fifth of a trace replay.
    fn reset(&mut self, s: &Scheduler, pending: usize, now: Time) {
        let cluster = s.cluster();
        self.depth = s.config().backfill.reservation_depth();
        self.reasons.clear();
        self.reasons.resize(pending, PendingReason::None);
        // Only reserved nodes have windows to forget.
        for &(_, n) in &self.reserved_starts {
            if let Some(w) = self.reserved.get_mut(n.index()) {
                w.clear();
            }
        }
        self.reserved.resize_with(cluster.nodes.len(), Vec::new);
        self.reserved_starts.clear();
        self.reserved_ends.clear();
        self.reservations.clear();
        self.releases.clear();
        self.releases_built = false;
        self.batch.clear();
        self.placement.clear();
        self.batch_cores = 0;
        self.batch_gpus = 0;
        self.batch_user_qos.clear();
        self.batch_array.clear();
        self.blocked.clear();
        self.no_room.clear();
        self.partition_down.clear();
        self.partition_down.extend(
            cluster
                .partitions
                .iter()
                .map(|p| p.nodes.iter().all(|&n| !cluster.node(n).schedulable())),
        );
        // Straight from the table: `Scheduler::reservations` sorts for display.
        for (i, r) in s.reservations.iter().enumerate() {
            if let Some(r) = r.as_ref().filter(|r| r.end > now) {
                let holder = Holder::Advance(ResvId(i as u32));
                self.hold_window(r.start.max(now), r.end, &r.nodes, holder);
            }
        }
    }

    /// Expected ends of running jobs, sorted; built on first use, then kept up to date.
    fn build_releases(&mut self, s: &Scheduler, now: Time) {
        if !self.releases_built {
            self.releases.extend(
                s.running()
                    .iter()
                    .filter_map(|&r| Some((s.job(r)?.expected_end()?.max(now), r))),
            );
            self.releases.sort_unstable();
            self.releases_built = true;
        }
    }

    /// True when `node` is free over `[from, to)` of windows held by other jobs and by
    /// advance reservations other than `resv` (the job's own).
    fn free_over(
        &self,
        node: NodeId,
        from: Time,
        to: Time,
        owner: JobId,
        resv: Option<ResvId>,
    ) -> bool {
        self.reserved[node.index()].iter().all(|&(s, e, h)| {
            to <= s
                || from >= e
                || match h {
                    Holder::Job(j) => j == owner,
                    Holder::Advance(r) => Some(r) == resv,
                }
        })
    }

    /// Whether job `owner` may use `node` over `[from, to)`: free of others' windows,
    /// and, when it has an advance reservation, one of its nodes (those that carry its
    /// window; `reset` gives every reservation not yet ended one).
    fn may_use(
        &self,
        node: NodeId,
        from: Time,
        to: Time,
        owner: JobId,
        resv: Option<ResvId>,
    ) -> bool {
        resv.is_none_or(|r| {
            self.reserved[node.index()]
                .iter()
                .any(|&(_, _, h)| h == Holder::Advance(r))
        }) && self.free_over(node, from, to, owner, resv)
    }

    /// Whether a job blocked now would reserve or stop the walk. Both are decided
    /// against committed state, so the placement batch must be committed first; a job
    /// that would only wait needs nothing committed.
    fn next_block_reserves_or_stops(&self) -> bool {
        self.depth == 0 || self.reservations.len() < self.depth
    }

    /// Where the walk goes on after a batch conflict at order position `pos`: there, and
    /// the jobs after it are looked at again, so they are no longer counted as blocked.
    fn resume_at(&mut self, pos: usize) -> usize {
        self.blocked.retain(|&(at, _)| at < pos);
        pos
    }

    fn reserve(&mut self, r: Reservation) {
        self.hold_window(r.start, r.end, &r.nodes, Holder::Job(r.job));
        self.reservations.push(r);
    }

    fn hold_window(&mut self, start: Time, end: Time, nodes: &[NodeId], holder: Holder) {
        for &n in nodes {
            self.reserved[n.index()].push((start, end, holder));
        }
        fn add(sorted: &mut Vec<(Time, NodeId)>, at: Time, nodes: &[NodeId]) {
            sorted.extend(nodes.iter().map(|&n| (at, n)));
            sorted.sort_unstable();
            sorted.dedup();
        }
        add(&mut self.reserved_starts, start, nodes);
        add(&mut self.reserved_ends, end, nodes);
    }

    fn started(&mut self, end: Option<Time>, id: JobId) {
        if let Some(end) = end {
            if self.releases_built {
                let at = self.releases.partition_point(|&x| x < (end, id));
                self.releases.insert(at, (end, id));
            }
        }
    }
}

/// What one cycle leaves to the next: buffers only, never decisions (every cycle
/// recomputes everything from the scheduler's state).
#[derive(Default)]
pub(crate) struct CycleBuffers {
    walk: Walk,
    tree: ShareTree,
    pending: Vec<PendingJob>,
    /// The policy's answer, by index into `pending`; written into the jobs at the end of
    /// the cycle with their pending reasons, in one pass over the job table.
    priorities: Vec<i64>,
    ordered: Vec<PendingJob>,
    keyed: Vec<(Reverse<u32>, Reverse<i64>, Time, u32)>,
    order: Vec<u32>,
}

/// Fairshare factors kept between cycles: one per share-tree node (accounts, then
/// associations), computed at `at` by the policy revision `revision`.
pub(crate) struct FairshareFactors {
    factors: Vec<f64>,
    at: Time,
    revision: u64,
}

impl FairshareFactors {
    /// One factor per node of the share tree, in its order.
    pub(crate) fn factors(&self) -> &[f64] {
        &self.factors
    }

    /// Whether they must be computed again: the interval has passed (or the clock went
    /// back), the tree changed shape, or another policy answers now.
    fn stale(&self, now: Time, interval: Time, tree_len: usize, revision: u64) -> bool {
        self.factors.len() != tree_len
            || now < self.at
            || now - self.at >= interval
            || revision != self.revision
    }
}

/// Most jobs in one placement batch: bounds how stale a batch's candidate lists get.
const MAX_BATCH: usize = 512;

fn end_of(limit: Option<Time>, now: Time) -> Time {
    limit.map_or(Time::MAX, |l| now.saturating_add(l))
}

/// The end of a run started at `now`: its time limit, or its advance reservation's end
/// when that comes first (the run is ended there).
fn run_end(s: &Scheduler, limit: Option<Time>, resv: Option<ResvId>, now: Time) -> Time {
    s.end_within_reservation(resv, Some(end_of(limit, now)))
        .unwrap_or(Time::MAX)
}

pub(crate) fn run(s: &mut Scheduler, now: Time) -> CycleOutcome {
    let mut out = CycleOutcome {
        past_deadline: s.remove_past_deadline(now),
        ..CycleOutcome::default()
    };
    // Cancel what can never run; repeat, since one cancellation can doom a dependent job.
    loop {
        let doomed: Vec<JobId> = s
            .waiting_with_dependencies()
            .iter()
            .copied()
            .filter(|&id| s.is_waiting_on_dependency(id).is_none())
            .collect();
        if doomed.is_empty() {
            break;
        }
        for id in doomed {
            s.cancel_never_satisfied(id, now);
            out.cancelled.push(id);
        }
    }

    // Suspended jobs come back first, longest suspended first, as soon as the cores and
    // GPUs they held are free: they were started once and keep their memory.
    if !s.suspended().is_empty() {
        let mut suspended: Vec<(Time, JobId)> = s
            .suspended()
            .iter()
            .filter_map(|&id| {
                let j = s.job(id)?;
                // An admin's suspension ends only by `resume`.
                (!j.suspended_by_admin).then_some((j.suspended_at?, id))
            })
            .collect();
        suspended.sort_unstable();
        for (_, id) in suspended {
            if s.try_resume(id, now) {
                out.resumed.push(id);
            }
        }
    }

    // Jobs that stopped others by preemption come next, once their victims' processes
    // are gone: what the victims held is theirs before anything they outrank takes it
    // (the requeued victims themselves among them).
    for id in s.take_ready_preemptors() {
        let Some(job) = s.job(id).filter(|j| j.state.is_waiting()) else {
            continue;
        };
        let (part, shape) = (job.partition, job.shape.clone());
        let anywhere = |_: NodeId| true;
        let cluster = &mut *s.parts().cluster;
        let alloc = cluster
            .candidates(part, &shape, &anywhere, 0)
            .and_then(|c| {
                let nodes: Vec<NodeId> = c.iter().map(|c| NodeId(c.node)).collect();
                cluster.allocate(&shape, &nodes, &anywhere)
            });
        if let Some(a) = alloc {
            s.start_job(id, now, a);
            out.started.push(id);
        }
    }

    // Nothing waits: no priorities to compute and nothing to place or reserve for.
    if s.waiting().is_empty() {
        return out;
    }
    let mut buffers = std::mem::take(&mut s.cycle_buffers);
    prioritize(s, now, &mut buffers);
    let CycleBuffers {
        walk,
        pending,
        priorities,
        ordered,
        order,
        ..
    } = &mut buffers;
    // Gathered once into walk order: independent loads, where reading `pending` through
    // `order` inside the walk would wait on each cache miss in turn.
    ordered.clear();
    ordered.extend(order.iter().map(|&k| pending[k as usize]));
    let slack = s.config().placement_slack;
    walk.reset(s, pending.len(), now);
    let mut stopped = false;
    let mut i = 0;
    'walk: loop {
        while i < order.len() {
            let at = order[i] as usize;
            let p = ordered[i];
            let id = p.id;
            if stopped {
                walk.reasons[at] = PendingReason::Priority;
                i += 1;
                continue;
            }
            if let Err(reason) = eligible(s, &p, walk) {
                walk.reasons[at] = reason;
                i += 1;
                continue;
            }
            let end = run_end(s, p.time_limit, p.resv, now);
            let request = (p.partition, p.shape_class, end, p.resv);
            let found = if walk.no_room.contains(&request) {
                None
            } else {
                let job = s.job(id).expect("ids in the order are known jobs");
                let (cores, gpus) = (job.shape.cores(), job.shape.gpus());
                // Candidates are found against committed state. Once the batch would
                // take what is free in the partition, commit it first: later jobs would
                // be judged on resources the batch is about to use.
                let free = s.cluster().partition(p.partition);
                if !walk.batch.is_empty()
                    && (walk.batch_cores + cores > free.free_cores()
                        || walk.batch_gpus + gpus > free.free_gpus()
                        || walk.batch.len() >= MAX_BATCH)
                {
                    if let Some(resume) = flush(s, walk, now, &mut out) {
                        i = walk.resume_at(resume);
                    }
                    continue;
                }
                let usable = |n: NodeId| walk.may_use(n, now, end, id, p.resv);
                let (units, gpus_per_node) = (job.shape.units_needed(), job.shape.gpus_per_node);
                s.cluster()
                    .candidates(p.partition, &job.shape, &usable, slack)
                    .map(|c| (c, cores, gpus, units, gpus_per_node))
            };
            if let Some((c, cores, gpus, units, gpus_per_node)) = found {
                walk.batch_cores += cores;
                walk.batch_gpus += gpus;
                walk.batch.push(Batched { pos: i, at });
                walk.placement.push(id.0, units, gpus_per_node, c);
                *walk.batch_user_qos.entry((p.user, p.qos)).or_default() += 1;
                if let Some(a) = p.array_job {
                    *walk.batch_array.entry(a).or_default() += 1;
                }
                i += 1;
                continue;
            }
            walk.no_room.insert(request);
            if walk.next_block_reserves_or_stops() {
                if let Some(resume) = flush(s, walk, now, &mut out) {
                    i = walk.resume_at(resume);
                    continue;
                }
            }
            walk.blocked.push((i, id));
            if walk.reservations.len() < walk.depth {
                match reserve(s, id, now, walk) {
                    Some(r) => walk.reserve(r),
                    None => tracing::debug!(
                        job = id.0,
                        "no reservation possible (unlimited time or nodes down)"
                    ),
                }
                walk.reasons[at] = PendingReason::Resources;
            } else if walk.depth == 0 {
                walk.reasons[at] = PendingReason::Resources;
                stopped = true;
            } else {
                walk.reasons[at] = PendingReason::Priority;
            }
            i += 1;
        }
        // The last batch; a conflict in it resumes the walk at that job, and the jobs
        // after it are looked at again.
        match flush(s, walk, now, &mut out) {
            Some(resume) => i = walk.resume_at(resume),
            None => break 'walk,
        }
    }
    // Priorities and reasons are written together, in job order: one pass over the job
    // table, which at 100,000 waiting jobs is far larger than the caches.
    for ((p, &r), &priority) in pending.iter().zip(&walk.reasons).zip(priorities.iter()) {
        s.set_priority_and_reason(p.id, priority, r);
    }
    preempt(s, walk, now, &mut out);
    out.reservations = std::mem::take(&mut walk.reservations);
    s.cycle_buffers = buffers;
    out
}

/// Why a job in an advance reservation cannot start now because of the reservation:
/// not open yet, or gone.
fn reservation_closed(s: &Scheduler, j: &crate::job::Job, now: Time) -> Option<PendingReason> {
    let r = j.reservation?;
    match s.reservation(r) {
        None => Some(PendingReason::ReservationDeleted),
        Some(r) if r.end <= now => Some(PendingReason::ReservationDeleted),
        Some(r) if now < r.start => Some(PendingReason::Reservation),
        Some(_) => None,
    }
}

/// Why a waiting job may not start regardless of free resources, if anything.
fn eligible(s: &Scheduler, p: &PendingJob, walk: &Walk) -> Result<(), PendingReason> {
    if let Some(r) = p.blocked {
        return Err(r);
    }
    if p.has_dependencies && s.is_waiting_on_dependency(p.id) != Some(false) {
        return Err(PendingReason::Dependency);
    }
    let cluster = s.cluster();
    let part = cluster.partition(p.partition);
    if let Some(max) = part.max_time {
        if p.time_limit.is_none_or(|l| l > max) {
            return Err(PendingReason::PartitionTimeLimit);
        }
    }
    if let Some(max) = cluster.qos[p.qos.index()].max_running_per_user {
        let tentative = walk
            .batch_user_qos
            .get(&(p.user, p.qos))
            .copied()
            .unwrap_or(0);
        if s.running_count(p.user, p.qos) + tentative >= max {
            return Err(PendingReason::QosMaxJobsPerUser);
        }
    }
    if let Some(a) = p.array_job {
        if let Some(room) = s.array_room(a) {
            if walk.batch_array.get(&a).copied().unwrap_or(0) >= room {
                return Err(PendingReason::JobArrayTaskLimit);
            }
        }
    }
    if walk.partition_down[p.partition.index()] {
        return Err(PendingReason::PartitionNodesDown);
    }
    Ok(())
}

/// Ranks and commits the pending placement batch. Returns the order position to resume
/// the walk at when a job of the batch could not be placed after all and would have
/// reserved (or, without backfill, stopped the walk): the jobs after it were judged
/// without that reservation. A job that would only have waited waits, and the rest of
/// the batch goes on in order.
fn flush(s: &mut Scheduler, walk: &mut Walk, now: Time, out: &mut CycleOutcome) -> Option<usize> {
    if walk.batch.is_empty() {
        return None;
    }
    let mut batch = std::mem::take(&mut walk.batch);
    let mut placement = std::mem::take(&mut walk.placement);
    walk.batch_cores = 0;
    walk.batch_gpus = 0;
    walk.batch_user_qos.clear();
    walk.batch_array.clear();
    out.placement_batches += 1;
    let ranking = {
        let p = s.parts();
        let answer = p.policies.placement.rank(&placement);
        match answer.map_err(|e| e.to_string()).and_then(|r| {
            r.check(&placement)?;
            Ok(r)
        }) {
            Ok(r) => r,
            Err(e) => {
                p.fallbacks.placement += 1;
                tracing::warn!(policy = p.policies.placement.name(), answer = %e, "placement answer rejected; using first fit");
                first_fit(&placement)
            }
        }
    };
    let mut resume = None;
    for (q, b) in batch.iter().enumerate() {
        let id = JobId(placement.job()[q]);
        let cands = &placement.node()[placement.candidates(q)];
        // The ranked candidates, then the rest in the kernel's order, each once (the
        // order's length is unknown to `collect`, so the room is made first).
        let mut nodes = Vec::with_capacity(cands.len());
        nodes.extend(
            ranking
                .order(q, cands.len())
                .map(|i| NodeId(cands[i as usize])),
        );
        let job = s.job(id).expect("batched jobs exist");
        let (part, shape, resv) = (job.partition, job.shape.clone(), job.reservation);
        let end = run_end(s, job.time_limit, resv, now);
        let usable = |n: NodeId| walk.may_use(n, now, end, id, resv);
        let cluster = s.parts().cluster;
        let alloc = cluster.allocate(&shape, &nodes, &usable).or_else(|| {
            let fresh: Vec<NodeId> = cluster
                .candidates(part, &shape, &usable, 0)?
                .iter()
                .map(|c| NodeId(c.node))
                .collect();
            cluster.allocate(&shape, &fresh, &usable)
        });
        match alloc {
            Some(a) => {
                s.start_job(id, now, a);
                walk.started(s.job(id).and_then(|j| j.expected_end()), id);
                out.started.push(id);
            }
            None => {
                if walk.next_block_reserves_or_stops() {
                    resume = Some(b.pos);
                    break;
                }
                walk.no_room.insert((part, s.shape_class(id), end, resv));
                walk.blocked.push((b.pos, id));
                walk.reasons[b.at] = PendingReason::Priority;
            }
        }
    }
    // The buffers go back for the next batch.
    batch.clear();
    placement.clear();
    walk.batch = batch;
    walk.placement = placement;
    resume
}

/// Fairshare (when stale, see [`FairshareFactors::stale`]) then priority, each one
/// batched call. Fills `b.pending` with the waiting jobs in job order, `b.priorities`
/// with their priorities, and `b.order` with the order the walk considers them in
/// (indices into the first): partition tier, then priority, then submission.
fn prioritize(s: &mut Scheduler, now: Time, b: &mut CycleBuffers) {
    refresh_fairshare(s, now, &mut b.tree);
    let mut batch = std::mem::take(&mut s.priority_batch);
    batch.reset(s.parts().policies.priority.fields() | KERNEL_PRIORITY_FIELDS);
    let factors = &s.fairshare.as_ref().expect("computed above").factors;
    let pending = &mut b.pending;
    pending.clear();
    for &id in s.waiting() {
        let j = s.job(id).expect("waiting jobs exist");
        pending.push(PendingJob {
            id,
            partition: j.partition,
            qos: j.qos,
            user: j.user,
            shape_class: s.shape_class(id),
            time_limit: j.time_limit,
            array_job: j.array.map(|a| a.array_job),
            has_dependencies: !j.dependencies.is_empty(),
            blocked: match (j.hold, j.begin_time) {
                (Some(Hold::Admin), _) => Some(PendingReason::JobHeldAdmin),
                (Some(Hold::User), _) => Some(PendingReason::JobHeldUser),
                (None, Some(b)) if b > now => Some(PendingReason::BeginTime),
                _ => reservation_closed(s, j, now),
            },
            nice: j.nice,
            resv: j.reservation,
        });
        batch.push(priority_input(s, factors, j, now));
    }
    let mut prios = priorities(s, now, &batch);
    // A job's nice is the user's own adjustment, whatever policy answers.
    for (p, prio) in b.pending.iter().zip(prios.iter_mut()) {
        *prio = prio.saturating_sub(i64::from(p.nice));
    }
    // The index breaks ties as the job id would: both follow job order.
    let keyed = &mut b.keyed;
    keyed.clear();
    keyed.extend((0..batch.len()).map(|i| {
        (
            Reverse(batch.partition_tier()[i]),
            Reverse(prios[i]),
            batch.submit_time()[i],
            i as u32,
        )
    }));
    s.priority_batch = batch;
    b.priorities = prios;
    keyed.sort_unstable();
    b.order.clear();
    b.order.extend(keyed.iter().map(|k| k.3));
}

/// Computes the fairshare factors again when they are stale (see
/// [`FairshareFactors::stale`]); `s.fairshare` is then `Some`.
pub(crate) fn refresh_fairshare(s: &mut Scheduler, now: Time, tree: &mut ShareTree) {
    let tree_len = s.cluster().accounts.len() + s.cluster().associations.len();
    let revision = s.parts().policies.fairshare.revision();
    let interval = s.config().fairshare_interval;
    if s.fairshare
        .as_ref()
        .is_none_or(|f| f.stale(now, interval, tree_len, revision))
    {
        s.fairshare = Some(FairshareFactors {
            factors: fairshare(s, now, tree),
            at: now,
            revision,
        });
    }
}

/// What the priority batch holds of waiting job `j`; `factors` are the fairshare
/// factors of the share tree.
pub(crate) fn priority_input(s: &Scheduler, factors: &[f64], j: &Job, now: Time) -> PriorityInput {
    let cluster = s.cluster();
    PriorityInput {
        job: j.id.0,
        submit_time: j.submit_time,
        age: (now - j.submit_time).max(0),
        cores: j.shape.cores(),
        nodes: j.shape.nodes.unwrap_or(1),
        gpus: j.shape.gpus(),
        time_limit: j.time_limit,
        partition_tier: cluster.partition(j.partition).priority_tier,
        qos: j.qos.0 as u32,
        qos_priority: cluster.qos[j.qos.index()].priority,
        fairshare: factors[cluster.accounts.len() + j.assoc.index()].clamp(0.0, 1.0),
        user: j.user.0,
        account: j.account.0,
    }
}

/// The priority policy's answer for `batch`, or FIFO's when it is refused (counted as a
/// fallback). Before nice.
pub(crate) fn priorities(s: &mut Scheduler, now: Time, batch: &PriorityBatch) -> Vec<i64> {
    let p = s.parts();
    match p.policies.priority.prioritize(now, batch) {
        Ok(v) if v.len() == batch.len() => v,
        other => {
            p.fallbacks.priority += 1;
            tracing::warn!(policy = p.policies.priority.name(), answer = ?other.err(), "priority answer rejected; using FIFO");
            FifoPriority.prioritize(now, batch).unwrap_or_default()
        }
    }
}

/// The share tree at `now` (usage of finished work plus running jobs so far, rolled up to
/// the accounts), built in `tree`, and the fairshare policy's factors for it: one batched
/// call, or classic fairshare when the answer is refused.
fn fairshare(s: &mut Scheduler, now: Time, tree: &mut ShareTree) -> Vec<f64> {
    build_share_tree(s, now, tree);
    let p = s.parts();
    match p.policies.fairshare.factors(now, tree) {
        Ok(f) if f.len() == tree.len() && f.iter().all(|x| x.is_finite()) => f,
        other => {
            p.fallbacks.fairshare += 1;
            tracing::warn!(policy = p.policies.fairshare.name(), answer = ?other.err(), "fairshare answer rejected; using classic");
            ClassicFairshare
                .factors(now, tree)
                .unwrap_or_else(|_| vec![1.0; tree.len()])
        }
    }
}

/// The share tree at `now`: the accounts, then the user associations (ids with
/// `ASSOCIATION_IDS` set), with usage of finished work plus running jobs so far, rolled
/// up to the accounts.
pub(crate) fn build_share_tree(s: &Scheduler, now: Time, tree: &mut ShareTree) {
    let cluster = s.cluster();
    let n_accounts = cluster.accounts.len();
    tree.clear();
    for a in &cluster.accounts {
        tree.push(ShareNode {
            id: a.id.0,
            parent: a.parent.map(|p| p.0),
            shares: a.shares,
            usage: 0.0,
        });
    }
    for a in &cluster.associations {
        tree.push(ShareNode {
            id: gantry_abi::ASSOCIATION_IDS | a.id.0,
            parent: Some(a.account.0),
            shares: a.shares,
            usage: s.usage_of(a.id),
        });
    }
    let usage = tree.usage_mut();
    for &r in s.running() {
        let j = s.job(r).expect("running jobs exist");
        let cores = j.allocation.as_ref().map_or(0, |a| a.core_count());
        usage[n_accounts + j.assoc.index()] +=
            cores as f64 * (now - j.running_since.unwrap_or(now)).max(0) as f64;
    }
    tree.roll_usage_up();
}

/// The earliest time the blocked job `id` can start without touching other reservations,
/// assuming running jobs end at their time limits, and the nodes it would get.
fn reserve(s: &Scheduler, id: JobId, now: Time, walk: &mut Walk) -> Option<Reservation> {
    let job = s.job(id)?;
    let target = Target {
        id,
        partition: job.partition,
        resv: job.reservation,
    };
    reserve_shape(s, target, &job.shape, job.time_limit?, now, walk)
}

/// Whom a reservation search is for: the job (or a job not submitted), where it may go.
#[derive(Clone, Copy)]
struct Target {
    id: JobId,
    partition: PartitionId,
    resv: Option<ResvId>,
}

/// [`reserve`] for a job given by its shape, which need not be in the scheduler (`id`
/// owns the reservation; `sbatch --test-only` asks for one that is not submitted).
fn reserve_shape(
    s: &Scheduler,
    target: Target,
    shape: &crate::job::JobShape,
    limit: Time,
    now: Time,
    walk: &mut Walk,
) -> Option<Reservation> {
    let Target {
        id,
        partition,
        resv,
    } = target;
    let cluster = s.cluster();
    let part = cluster.partition(partition);
    let needed = shape.units_needed() as u64;
    // A job in an advance reservation looks only at its nodes and is planned as ending
    // when the reservation does, if that comes first.
    let resv_nodes = resv
        .and_then(|r| s.reservation(r))
        .map(|r| r.nodes.as_slice());
    let resv_end = resv.and_then(|r| s.reservation(r)).map(|r| r.end);
    let in_part = |n: NodeId| {
        cluster.node(n).partitions.contains(&partition)
            && resv_nodes.is_none_or(|r| r.binary_search(&n).is_ok())
    };
    let end_from = |t: Time| {
        let e = t.saturating_add(limit);
        resv_end.map_or(e, |r| e.min(r))
    };

    let nodes = cluster.nodes.len();
    walk.build_releases(s, now);
    // Taken out while `walk`'s reservations are read below.
    let mut scratch = std::mem::take(&mut walk.search);
    let SearchScratch {
        units,
        future,
        touched,
    } = &mut scratch;
    units.resize(nodes, 0);
    future.resize(nodes);

    // Events in time order, merged from three sorted streams: a running job releases its
    // nodes; a reserved node stops fitting a window of length `limit` before its
    // reservation (at `start - limit + 1`); a reservation ends.
    let releases = walk.releases.iter().map(|&(t, j)| (t, Event::Release(j)));
    let stops = walk.reserved_starts.iter().map(|&(t, n)| {
        (
            t.saturating_sub(limit).saturating_add(1).max(now),
            Event::Recheck(n),
        )
    });
    let ends = walk
        .reserved_ends
        .iter()
        .map(|&(t, n)| (t, Event::Recheck(n)));
    let mut events = merge(merge(releases, stops), ends).peekable();

    let units_at = |n: NodeId, t: Time, future: &FutureNodes| -> u32 {
        let node = cluster.node(n);
        if !node.schedulable() || !in_part(n) || !walk.free_over(n, t, end_from(t), id, resv) {
            return 0;
        }
        node_units(node, future.get(n, &node.free), shape)
    };
    let mut total = 0u64;
    for &n in &part.nodes {
        let u = units_at(n, now, future);
        units[n.index()] = u;
        total += u as u64;
    }
    let mut t = now;
    let found = loop {
        if total >= needed {
            let mut nodes = Vec::new();
            let mut have = 0u64;
            for &n in &part.nodes {
                if have >= needed {
                    break;
                }
                if units[n.index()] > 0 {
                    nodes.push(n);
                    have += units[n.index()] as u64;
                }
            }
            break Some(Reservation {
                job: id,
                start: t,
                end: end_from(t),
                nodes,
            });
        }
        let Some(&(at, _)) = events.peek() else {
            break None;
        };
        t = at;
        touched.clear();
        while let Some((_, ev)) = events.next_if(|&(x, _)| x == t) {
            match ev {
                Event::Release(r) => {
                    for a in s
                        .job(r)
                        .and_then(|j| j.allocation.as_ref())
                        .iter()
                        .flat_map(|a| &a.nodes)
                    {
                        if in_part(a.node) {
                            future.release(a, &cluster.node(a.node).free);
                            touched.push(a.node);
                        }
                    }
                }
                Event::Recheck(n) => {
                    if in_part(n) {
                        touched.push(n);
                    }
                }
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for &n in touched.iter() {
            let old = units[n.index()];
            let new = units_at(n, t, future);
            units[n.index()] = new;
            total = total - old as u64 + new as u64;
        }
    };
    drop(events);
    future.forget();
    walk.search = scratch;
    found
}

/// When each waiting job would start if nothing else changed, as conservative backfill
/// plans it: the eligible waiting jobs in the last cycle's walk order (partition tier,
/// priority, submission, id), each reserved in turn around the running jobs (ending at
/// their limits) and the reservations before it; then `extra`, a job not submitted
/// (`sbatch --test-only`), last. Jobs held, before their begin time, waiting on a
/// dependency, without a time limit, or past the first `max_jobs` get no entry.
/// Read-only: nothing is decided, no policy is called.
pub(crate) fn plan(
    s: &Scheduler,
    now: Time,
    max_jobs: usize,
    extra: Option<(PartitionId, &crate::job::JobShape, Time)>,
) -> (Vec<Reservation>, Option<Reservation>) {
    let mut walk = Walk::default();
    walk.reset(s, 0, now);
    let cluster = s.cluster();
    let mut order: Vec<(Reverse<u32>, Reverse<i64>, Time, JobId)> = s
        .waiting()
        .iter()
        .filter_map(|&id| {
            let j = s.job(id)?;
            let blocked = j.hold.is_some()
                || j.begin_time.is_some_and(|b| b > now)
                || (!j.dependencies.is_empty() && s.is_waiting_on_dependency(id) != Some(false))
                || reservation_closed(s, j, now).is_some()
                || j.time_limit.is_none();
            (!blocked).then(|| {
                (
                    Reverse(cluster.partition(j.partition).priority_tier),
                    Reverse(j.priority),
                    j.submit_time,
                    id,
                )
            })
        })
        .collect();
    order.sort_unstable();
    let mut out = Vec::new();
    for &(.., id) in order.iter().take(max_jobs) {
        if let Some(r) = reserve(s, id, now, &mut walk) {
            walk.reserve(r.clone());
            out.push(r);
        }
    }
    let extra = extra.and_then(|(partition, shape, limit)| {
        let target = Target {
            id: JobId(u64::MAX),
            partition,
            resv: None,
        };
        reserve_shape(s, target, shape, limit, now, &mut walk)
    });
    (out, extra)
}

/// Merges two iterators sorted by key into one sorted iterator.
fn merge<T: Ord + Copy>(
    a: impl Iterator<Item = T>,
    b: impl Iterator<Item = T>,
) -> impl Iterator<Item = T> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some(x), Some(y)) if x <= y => a.next(),
        (Some(_), Some(_)) => b.next(),
        (Some(_), None) => a.next(),
        (None, _) => b.next(),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Release(JobId),
    Recheck(NodeId),
}

/// Whether blocked job `id` would start if every completing run's resources were back.
/// `after` holds the cluster with those resources back, built on first use and shared
/// by every job one preemption step asks about (it is left as it was found).
fn starts_once_completing_runs_end(
    s: &Scheduler,
    id: JobId,
    walk: &Walk,
    now: Time,
    after: &mut Option<Cluster>,
) -> bool {
    if s.completing().is_empty() {
        return false;
    }
    let Some(job) = s.job(id) else { return false };
    let end = run_end(s, job.time_limit, job.reservation, now);
    let usable = |n: NodeId| walk.may_use(n, now, end, id, job.reservation);
    let trial = after.get_or_insert_with(|| {
        let mut c = s.cluster().clone();
        for run in s.completing().values() {
            c.release(&run.held);
        }
        c
    });
    let fits = trial
        .candidates(job.partition, &job.shape, &usable, 0)
        .and_then(|c| {
            let nodes: Vec<NodeId> = c.iter().map(|c| NodeId(c.node)).collect();
            trial.allocate(&job.shape, &nodes, &usable)
        });
    match fits {
        Some(a) => {
            trial.release(&a);
            true
        }
        None => false,
    }
}

/// Asks the preemption policy, in one call, which running jobs to stop for the top
/// blocked jobs, and applies each answer that really lets its job start now (or, when
/// stopped runs hold their resources until their processes are gone, once they are).
fn preempt(s: &mut Scheduler, walk: &Walk, now: Time, out: &mut CycleOutcome) {
    let cluster = s.cluster();
    if walk.blocked.is_empty() || cluster.qos.iter().all(|q| q.preemptable_by.is_empty()) {
        return;
    }
    let depth = s.config().preemption_depth;
    let mut batch = Vec::new();
    let mut after_completing = None;
    for &(_, b) in walk.blocked.iter().take(depth) {
        let Some(job) = s.job(b) else { continue };
        if !job.state.is_waiting() {
            continue;
        }
        if starts_once_completing_runs_end(s, b, walk, now, &mut after_completing) {
            // Earlier victims (or cancelled jobs) are still ending: wait for them rather
            // than stop more.
            continue;
        }
        let candidates: Vec<PreemptionCandidate> = s
            .running()
            .iter()
            .filter_map(|&r| {
                let rj = s.job(r)?;
                let q = &cluster.qos[rj.qos.index()];
                let alloc = rj.allocation.as_ref()?;
                let shares_nodes = alloc
                    .nodes
                    .iter()
                    .any(|n| cluster.node(n.node).partitions.contains(&job.partition));
                (q.preemptable_by.contains(&job.qos) && shares_nodes).then(|| PreemptionCandidate {
                    job: r.0,
                    qos_priority: q.priority,
                    partition_tier: cluster.partition(rj.partition).priority_tier,
                    start_time: rj.start_time.unwrap_or(now),
                    cores: alloc.core_count(),
                    gpus: alloc.gpu_count(),
                    mode: q.preempt_mode,
                })
            })
            .collect();
        if candidates.is_empty() {
            continue;
        }
        batch.push(PreemptionQuery {
            job: b.0,
            qos_priority: cluster.qos[job.qos.index()].priority,
            partition_tier: cluster.partition(job.partition).priority_tier,
            cores: job.shape.cores(),
            gpus: job.shape.gpus(),
            candidates,
        });
    }
    if batch.is_empty() {
        return;
    }
    let answer = {
        let p = s.parts();
        match p.policies.preemption.select(now, &batch) {
            Ok(a) if a.len() == batch.len() => a,
            other => {
                p.fallbacks.preemption += 1;
                tracing::warn!(policy = p.policies.preemption.name(), answer = ?other.err(), "preemption answer rejected; preempting nothing");
                return;
            }
        }
    };
    let mut gone: HashSet<JobId> = HashSet::default();
    for (q, answer) in batch.iter().zip(answer) {
        if answer.is_empty() {
            continue;
        }
        let id = JobId(q.job);
        let victims: Vec<(JobId, PreemptMode)> =
            answer.iter().map(|v| (JobId(v.job), v.mode)).collect();
        let valid = victims.iter().all(|(v, _)| {
            q.candidates.iter().any(|c| c.job == v.0)
                && !gone.contains(v)
                && s.running().contains(v)
        });
        if !valid {
            s.parts().fallbacks.preemption += 1;
            tracing::warn!(
                job = q.job,
                "preemption answer names jobs that may not be preempted; ignored"
            );
            continue;
        }
        let job = s.job(id).expect("queried jobs exist");
        let (part, shape, resv) = (job.partition, job.shape.clone(), job.reservation);
        let end = run_end(s, job.time_limit, resv, now);
        let usable = |n: NodeId| walk.may_use(n, now, end, id, resv);
        // Dry run on a copy: only preempt when it really lets the job start.
        let mut trial = s.cluster().clone();
        for &(v, mode) in &victims {
            if let Some(a) = s.job(v).and_then(|j| j.allocation.as_ref()) {
                match mode {
                    // A suspended job keeps its memory.
                    PreemptMode::Suspend => trial.release(&a.compute()),
                    PreemptMode::Cancel | PreemptMode::Requeue => trial.release(a),
                }
            }
        }
        let Some(plan) = trial.candidates(part, &shape, &usable, 0).and_then(|c| {
            let nodes: Vec<NodeId> = c.iter().map(|c| NodeId(c.node)).collect();
            trial.allocate(&shape, &nodes, &usable)
        }) else {
            continue;
        };
        let runs: Vec<(JobId, u32)> = victims
            .iter()
            .filter(|&&(_, m)| m != PreemptMode::Suspend)
            .filter_map(|&(v, _)| Some((v, s.job(v)?.requeue_count)))
            .collect();
        for &(v, mode) in &victims {
            s.preempt_job(v, now, mode);
            gone.insert(v);
            match mode {
                PreemptMode::Cancel => out.preempted.push(v),
                PreemptMode::Requeue => out.requeued.push(v),
                PreemptMode::Suspend => out.suspended.push(v),
            }
        }
        if s.config().hold_until_processes_end
            && victims.iter().any(|&(_, m)| m != PreemptMode::Suspend)
        {
            // The victims hold their resources until their processes are gone; the job
            // starts in the first cycle after that, ahead of the queue.
            s.await_victims(id, runs);
            continue;
        }
        let nodes: Vec<NodeId> = plan.nodes.iter().map(|n| n.node).collect();
        match s.parts().cluster.allocate(&shape, &nodes, &usable) {
            Some(a) => {
                s.start_job(id, now, a);
                out.started.push(id);
            }
            None => tracing::error!(
                job = q.job,
                "allocation after preemption differed from its dry run"
            ),
        }
    }
}
