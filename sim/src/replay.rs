//! Trace replay: a virtual clock drives the kernel's [`Scheduler`] through the same entry
//! points the daemon uses — submit on arrival, a cycle at every event time, `job_ended`
//! when a started job's run time (or its time limit) has passed.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

use gantry_kernel::job::{GpuRequest, JobOutcome, MemoryRequest, ResourceRequest};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{Cluster, JobId, JobSpec, JobState, Scheduler, SchedulerConfig, Time};
use serde::Serialize;
use thiserror::Error;

use crate::swf::{SwfHeader, SwfJob, SwfTrace};

#[derive(Debug, Error)]
pub enum SimError {
    #[error(
        "the trace header gives neither MaxProcs nor MaxNodes; pass a cluster file (--cluster)"
    )]
    NoClusterSize,
    #[error("the trace holds no job that can be replayed")]
    NoJobs,
    #[error("partition '{0}' does not exist in the cluster")]
    UnknownPartition(String),
    #[error("synthetic scenario: {0}")]
    Synthetic(String),
    #[error("{0}")]
    TooLarge(String),
}

/// The most nodes a trace's header may size a cluster to.
pub const MAX_HEADER_NODES: u64 = 1_000_000;

/// How a trace becomes a workload.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    pub scheduler: SchedulerConfig,
    /// Partition to submit to; the cluster's default when `None`.
    pub partition: Option<String>,
}

/// What the replay found, per job and overall.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub backfill: String,
    /// Seconds between two computations of the fairshare factors (0: every cycle).
    pub fairshare_interval_s: Time,
    pub cluster_cores: u64,
    pub jobs_in_trace: usize,
    /// Jobs replayed (started and finished).
    pub jobs: usize,
    /// Records without a usable run time or size.
    pub skipped: usize,
    /// Jobs the kernel refused at submission (e.g. larger than the cluster).
    pub rejected: usize,
    /// Jobs without a requested time, given their run time as the estimate.
    pub estimated_from_runtime: usize,
    /// Jobs killed at their time limit (run time in the trace exceeded the request).
    pub timeouts: usize,
    /// Jobs still waiting when events ran out (should be 0).
    pub unfinished: usize,
    pub utilization: f64,
    pub mean_wait_s: f64,
    pub median_wait_s: f64,
    pub p95_wait_s: f64,
    pub mean_bounded_slowdown: f64,
    /// First submission to last completion.
    pub makespan_s: i64,
    pub cycles: u64,
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// Every finished job: (kernel job id, start, end, first node), for comparing schedules.
    #[serde(skip)]
    pub schedule: Vec<(u64, Time, Time, u32)>,
    /// Every finished job by its number in the trace, for comparing two replays of it.
    #[serde(skip)]
    pub jobs_run: Vec<RunJob>,
}

/// One finished job of a replay.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RunJob {
    /// Its number in the trace.
    pub trace_id: u64,
    pub submit: Time,
    pub start: Time,
    pub end: Time,
    pub cores: u64,
}

/// The cluster after one cycle, for plots.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    pub time: Time,
    pub queued: u32,
    pub busy_cores: u64,
}

/// Replay progress: jobs finished so far out of the jobs submitted in total.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub finished: usize,
    pub total: usize,
}

/// What the trace says a submitted job will do once started.
struct Replayed {
    run: Time,
    exit: i32,
    trace_id: u64,
}

/// Builds the homogeneous cluster a trace's header describes.
pub fn cluster_from_header(trace: &SwfTrace, cores_per_node: u32) -> Result<Cluster, SimError> {
    let procs = trace
        .header
        .max_procs
        .or(trace.header.max_nodes)
        .ok_or(SimError::NoClusterSize)?;
    let cpn = cores_per_node.max(1) as u64;
    let nodes = procs.div_ceil(cpn);
    if nodes > MAX_HEADER_NODES {
        return Err(SimError::TooLarge(format!(
            "the header asks for {nodes} nodes; at most {MAX_HEADER_NODES} are built from a header (pass a cluster file, --cluster, for more)"
        )));
    }
    Ok(Cluster::homogeneous(nodes as u32, cpn as u32, cpn * 4096))
}

/// Replays `trace` on `cluster`. `progress` is called now and then.
pub fn replay(
    trace: &SwfTrace,
    cluster: Cluster,
    policies: PolicySet,
    opts: &ReplayOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<Report, SimError> {
    replay_with(trace, cluster, policies, opts, progress, &mut |_| {})
}

/// [`replay`], calling `before_cycle(now)` before every cycle: the place to swap policies
/// between two cycles, as the daemon does when an admin loads one.
pub fn replay_with(
    trace: &SwfTrace,
    cluster: Cluster,
    policies: PolicySet,
    opts: &ReplayOptions,
    progress: &mut dyn FnMut(Progress),
    before_cycle: &mut dyn FnMut(Time),
) -> Result<Report, SimError> {
    if let Some(p) = &opts.partition {
        if cluster.partition_by_name(p).is_none() {
            return Err(SimError::UnknownPartition(p.clone()));
        }
    }
    let cluster_cores = cluster.total_cores();
    let mut sched = Scheduler::new(cluster, opts.scheduler, policies);

    let mut arrivals: Vec<usize> = Vec::with_capacity(trace.jobs.len());
    let mut skipped = 0;
    for (i, j) in trace.jobs.iter().enumerate() {
        match (j.run, j.procs()) {
            (Some(_), Some(p)) if p <= u32::MAX as i64 => arrivals.push(i),
            _ => skipped += 1,
        }
    }
    arrivals.sort_by_key(|&i| (trace.jobs[i].submit, i));
    if arrivals.is_empty() {
        return Err(SimError::NoJobs);
    }

    let mut by_kernel_id: HashMap<JobId, Replayed> = HashMap::with_capacity(arrivals.len());
    // (when, job): a job's end event is stale once the job was preempted, requeued or
    // suspended, which `ends_at` detects.
    let mut ends: BinaryHeap<Reverse<(Time, JobId)>> = BinaryHeap::new();
    // When the trace says a running job ends: its start, plus its run time capped by its
    // limit, plus the time it spent suspended.
    let ends_at = |job: &gantry_kernel::job::Job, run: Time| -> Option<Time> {
        let limit = job.time_limit.unwrap_or(Time::MAX);
        Some(
            job.start_time?
                .saturating_add(run.min(limit))
                .saturating_add(job.suspended_for),
        )
    };
    let (mut rejected, mut estimated, mut timeouts, mut cycles) = (0usize, 0usize, 0usize, 0u64);
    let mut samples = Vec::new();
    let mut busy_cores = 0u64;
    let mut finished = 0usize;
    let total = arrivals.len();
    let mut next = 0usize;
    progress(Progress { finished, total });

    loop {
        let t_arrival = arrivals.get(next).map(|&i| trace.jobs[i].submit);
        let t_end = ends.peek().map(|Reverse((t, _))| *t);
        let now = match (t_arrival, t_end) {
            (None, None) => break,
            (Some(a), None) => a,
            (None, Some(e)) => e,
            (Some(a), Some(e)) => a.min(e),
        };
        while let Some(&Reverse((t, id))) = ends.peek() {
            if t != now {
                break;
            }
            ends.pop();
            let job = sched.job(id).expect("ended jobs were submitted");
            let r = &by_kernel_id[&id];
            // A job preempted and restarted, or suspended and resumed, ends later.
            if job.state != JobState::Running || ends_at(job, r.run) != Some(t) {
                continue;
            }
            let limit = job.time_limit.unwrap_or(Time::MAX);
            let outcome = if r.run > limit {
                JobOutcome::Timeout
            } else {
                JobOutcome::Exited(r.exit)
            };
            timeouts += usize::from(outcome == JobOutcome::Timeout);
            busy_cores -= job.allocation.as_ref().map_or(0, |a| a.core_count());
            sched.job_ended(id, now, outcome).expect("job was running");
            finished += 1;
            if finished % 1024 == 0 {
                progress(Progress { finished, total });
            }
        }
        while let Some(&i) = arrivals.get(next) {
            let j = &trace.jobs[i];
            if j.submit != now {
                break;
            }
            next += 1;
            let (mut spec, from_runtime) = spec_for(j, opts);
            apply_header(&mut spec, j, &trace.header, opts, sched.cluster());
            if let Some(account) = &spec.account {
                sched.register_user(account, &spec.user);
            }
            match sched.submit(spec, now) {
                Ok(ids) => {
                    estimated += usize::from(from_runtime);
                    let exit = if j.status == Some(0) { 1 } else { 0 };
                    by_kernel_id.insert(
                        ids[0],
                        Replayed {
                            run: j.run.unwrap_or(0),
                            exit,
                            trace_id: j.id,
                        },
                    );
                }
                Err(e) => {
                    tracing::debug!(job = j.id, error = %e, "rejected");
                    rejected += 1;
                    finished += 1;
                }
            }
        }
        before_cycle(now);
        let out = sched.cycle(now);
        cycles += 1;
        for &id in out.resumed.iter().chain(&out.started) {
            let job = sched.job(id).expect("started jobs exist");
            if let Some(end) = ends_at(job, by_kernel_id[&id].run) {
                ends.push(Reverse((end, id)));
            }
            busy_cores += job.allocation.as_ref().map_or(0, |a| a.core_count());
        }
        // Preempted, requeued and suspended jobs gave their cores back inside the kernel.
        if !out.preempted.is_empty() || !out.requeued.is_empty() || !out.suspended.is_empty() {
            busy_cores = sched
                .running()
                .iter()
                .filter_map(|&id| sched.job(id)?.allocation.as_ref().map(|a| a.core_count()))
                .sum();
            finished += out.preempted.len();
        }
        finished += out.cancelled.len();
        samples.push(Sample {
            time: now,
            queued: sched.waiting().len() as u32,
            busy_cores,
        });
    }
    progress(Progress { finished, total });

    let mut waits = Vec::with_capacity(by_kernel_id.len());
    let mut bsld_sum = 0.0;
    let mut core_seconds = 0f64;
    let (mut first_submit, mut last_end) = (Time::MAX, Time::MIN);
    let mut done = 0usize;
    let mut schedule = Vec::new();
    let mut jobs_run = Vec::new();
    for job in sched.jobs() {
        first_submit = first_submit.min(job.submit_time);
        let (Some(start), Some(end)) = (job.start_time, job.end_time) else {
            continue;
        };
        if !job.state.is_terminal() {
            continue;
        }
        done += 1;
        let first_node = job
            .allocation
            .as_ref()
            .and_then(|a| a.nodes.first())
            .map_or(u32::MAX, |n| n.node.0);
        schedule.push((job.id.0, start, end, first_node));
        if let Some(r) = by_kernel_id.get(&job.id) {
            jobs_run.push(RunJob {
                trace_id: r.trace_id,
                submit: job.submit_time,
                start,
                end,
                cores: job.allocation.as_ref().map_or(0, |a| a.core_count()),
            });
        }
        let wait = start - job.submit_time;
        let run = end - start;
        waits.push(wait);
        bsld_sum += ((wait + run) as f64 / run.max(10) as f64).max(1.0);
        core_seconds += job.allocation.as_ref().map_or(0, |a| a.core_count()) as f64 * run as f64;
        last_end = last_end.max(end);
    }
    waits.sort_unstable();
    // No job ended (a trace none of whose jobs could start): no span to measure.
    let makespan = if done == 0 {
        0
    } else {
        (last_end - first_submit).max(0)
    };
    let mean = |v: &[i64]| {
        if v.is_empty() {
            0.0
        } else {
            v.iter().sum::<i64>() as f64 / v.len() as f64
        }
    };
    Ok(Report {
        backfill: match opts.scheduler.backfill {
            gantry_kernel::Backfill::None => "none".into(),
            gantry_kernel::Backfill::Easy => "easy".into(),
            gantry_kernel::Backfill::Conservative { depth } => {
                format!("conservative (depth {depth})")
            }
        },
        fairshare_interval_s: opts.scheduler.fairshare_interval,
        cluster_cores,
        jobs_in_trace: trace.jobs.len(),
        jobs: done,
        skipped,
        rejected,
        estimated_from_runtime: estimated,
        timeouts,
        unfinished: sched.waiting().len() + sched.running().len(),
        utilization: if makespan > 0 {
            core_seconds / (cluster_cores as f64 * makespan as f64)
        } else {
            0.0
        },
        mean_wait_s: mean(&waits),
        median_wait_s: percentile(&waits, 0.5),
        p95_wait_s: percentile(&waits, 0.95),
        mean_bounded_slowdown: if done > 0 {
            bsld_sum / done as f64
        } else {
            0.0
        },
        makespan_s: makespan,
        cycles,
        samples,
        schedule,
        jobs_run,
    })
}

/// The kernel submission for one SWF record. The second value says whether the time
/// limit had to be taken from the run time because the trace gives no request.
pub fn spec_for(j: &SwfJob, opts: &ReplayOptions) -> (JobSpec, bool) {
    let procs = j.procs().unwrap_or(1).max(1) as u32;
    let request = ResourceRequest {
        tasks: procs,
        ..ResourceRequest::default()
    };
    let mut spec = JobSpec::new(
        format!("swf{}", j.id),
        format!("u{}", j.user.unwrap_or(0)),
        request,
    );
    spec.partition = opts.partition.clone();
    spec.account = Some(format!("g{}", j.group.unwrap_or(0)));
    let (limit, from_runtime) = match j.requested_time.filter(|&t| t > 0) {
        Some(t) => (t, false),
        None => (j.run.unwrap_or(1).max(1), true),
    };
    spec.time_limit = Some(limit);
    (spec, from_runtime)
}

/// What a trace's header says of `j` beyond its record (`sacct --swf` writes it): its
/// request's nodes, tasks, GPUs and memory from its `Job` line, and the user, account
/// and partition names of its numbers, in place of `u<N>`/`g<N>` and the default
/// partition. A partition the cluster lacks is left to the default, as is any when
/// `--partition` names one for every job.
fn apply_header(
    spec: &mut JobSpec,
    j: &SwfJob,
    header: &SwfHeader,
    opts: &ReplayOptions,
    cluster: &Cluster,
) {
    if let Some(r) = header.requests.get(&j.id) {
        let req = &mut spec.request;
        if let (Some(tasks), Some(cpus)) = (r.tasks, r.cpus_per_task) {
            req.tasks = tasks.max(1);
            req.cpus_per_task = cpus.max(1);
        }
        req.nodes = r.nodes.filter(|&n| n > 0);
        if let Some(g) = r.gpus_per_node.filter(|&g| g > 0) {
            req.gpus = GpuRequest::PerNode(g);
        }
        if let Some(m) = r.mem_per_node_mb.filter(|&m| m > 0) {
            req.memory = MemoryRequest::PerNode(m);
        }
    }
    if let Some(name) = j.user.and_then(|u| header.users.get(&u)) {
        spec.user = name.clone();
    }
    if let Some(name) = j.group.and_then(|g| header.groups.get(&g)) {
        spec.account = Some(name.clone());
    }
    if opts.partition.is_none() {
        if let Some(name) = j.partition.and_then(|p| header.partitions.get(&p)) {
            if cluster.partition_by_name(name).is_some() {
                spec.partition = Some(name.clone());
            }
        }
    }
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[i64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1] as f64
}
