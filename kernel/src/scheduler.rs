//! The scheduler state machine: jobs and the cluster, changed only through its entry
//! points (`submit`, `cancel`, `job_ended`, `node_failed`, `set_node_state`, `cycle`).
//!
//! Invariant: deterministic and free of I/O. The same sequence of calls with the same
//! `now` values gives the same decisions, in the daemon and in the simulator alike.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::alloc::node_units;
use crate::cluster::{
    AssocId, Cluster, NodeId, NodeState, PartitionId, PreemptMode, QosId, UserId, ROOT_ACCOUNT,
};
use crate::job::*;
use crate::policy::{PolicyFallbacks, PolicySet, ShareTree};
use crate::units::Time;

/// How the cycle fills the machine around blocked jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backfill {
    /// Strict priority order: nothing starts behind the first job that cannot.
    None,
    /// EASY: one reservation for the top blocked job; later jobs may start if they do not
    /// delay it.
    Easy,
    /// Conservative: reservations for the first `depth` blocked jobs; later jobs may start
    /// only if they delay none of them.
    Conservative { depth: usize },
}

impl Backfill {
    pub fn reservation_depth(self) -> usize {
        match self {
            Self::None => 0,
            Self::Easy => 1,
            Self::Conservative { depth } => depth,
        }
    }
}

/// Settings of the scheduling cycle, validated at construction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchedulerConfig {
    pub backfill: Backfill,
    /// Extra candidate nodes offered to placement beyond those needed, from each end of
    /// the free index.
    pub placement_slack: usize,
    /// How many of the top blocked jobs a cycle tries to start by preemption.
    pub preemption_depth: usize,
    /// Seconds between two computations of the fairshare factors (Slurm's
    /// `PriorityCalcPeriod`); cycles in between reuse the last factors. The factors are
    /// computed at once when the share tree changes (an account or user appears) or the
    /// fairshare policy is swapped (`FairsharePolicy::revision`). 0 computes them every
    /// cycle.
    #[serde(default = "default_fairshare_interval")]
    pub fairshare_interval: Time,
    /// A run told to stop (cancelled, preempted to cancel or requeue) keeps what it held
    /// until the driver calls [`Scheduler::processes_gone`] (or its node fails), and its
    /// job shows COMPLETING meanwhile, as Slurm's does: processes in their grace period
    /// never share cores with the next job. Off (the simulator, which has no
    /// processes), a stopped run's resources return at once.
    #[serde(default)]
    pub hold_until_processes_end: bool,
}

/// The default [`SchedulerConfig::fairshare_interval`], Slurm's `PriorityCalcPeriod`.
/// In [`Scheduler`]'s id table: the job is no longer in memory.
const FORGOTTEN: u32 = u32::MAX;

pub const DEFAULT_FAIRSHARE_INTERVAL: Time = 300;

fn default_fairshare_interval() -> Time {
    DEFAULT_FAIRSHARE_INTERVAL
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            backfill: Backfill::Easy,
            placement_slack: 4,
            preemption_depth: 4,
            fairshare_interval: default_fairshare_interval(),
            hold_until_processes_end: false,
        }
    }
}

/// A promise that a blocked job starts no later than `start` on `nodes`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Reservation {
    pub job: JobId,
    pub start: Time,
    pub end: Time,
    pub nodes: Vec<NodeId>,
}

/// One line of `sshare`: an account, or a user's association in it.
#[derive(Debug, Clone, PartialEq)]
pub struct ShareRow {
    pub account: String,
    /// `None` for the account itself.
    pub user: Option<String>,
    /// Depth in the tree (the root's children are 0).
    pub depth: u32,
    pub raw_shares: u32,
    /// Its shares over its siblings' and its own.
    pub norm_shares: f64,
    /// Core-seconds, rolled up to accounts.
    pub raw_usage: f64,
    /// Its usage over the whole cluster's.
    pub effective_usage: f64,
    pub fairshare: Option<f64>,
}

/// What one cycle decided.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CycleOutcome {
    pub started: Vec<JobId>,
    pub preempted: Vec<JobId>,
    pub requeued: Vec<JobId>,
    /// Jobs suspended by preemption this cycle.
    pub suspended: Vec<JobId>,
    /// Waiting jobs removed because they could no longer end by their `--deadline`.
    pub past_deadline: Vec<JobId>,
    /// Suspended jobs that resumed this cycle (before anything new started).
    pub resumed: Vec<JobId>,
    /// Jobs cancelled because a dependency can never be satisfied.
    pub cancelled: Vec<JobId>,
    pub reservations: Vec<Reservation>,
    /// Batches handed to the placement policy.
    pub placement_batches: u32,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JobError {
    #[error("Invalid job id specified: {0}")]
    UnknownJob(JobId),
    #[error("job {0} has already finished")]
    AlreadyFinished(JobId),
    #[error("job {0} is not running")]
    NotRunning(JobId),
    #[error("job {0} cannot be restored: {1}")]
    NotRestorable(JobId, &'static str),
    #[error("Job is no longer pending execution for job {0}")]
    NotPending(JobId),
    #[error("job {0} was not suspended by an administrator")]
    NotSuspended(JobId),
    #[error("Access/permission denied for job {0}: an administrator holds it")]
    HeldByAdmin(JobId),
}

#[derive(Debug, Clone, Default)]
struct ArrayGroup {
    throttle: Option<u32>,
    running: u32,
    tasks: Vec<JobId>,
    indices: ArrayIndices,
}

/// An array's task indices in summary, as every task's environment gives them
/// (`SLURM_ARRAY_TASK_COUNT`, `_MIN`, `_MAX`, `_STEP`): kept at submission, so a
/// launch does not walk a 100,000-task array.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArrayIndices {
    pub count: u32,
    pub min: u32,
    pub max: u32,
    /// The distance between consecutive indices when it is always the same, else 1.
    pub step: u32,
}

impl ArrayIndices {
    fn of(indices: &[u32]) -> Self {
        let mut gaps = indices.windows(2).map(|w| w[1].abs_diff(w[0]));
        let step = match gaps.next() {
            Some(first) if gaps.all(|g| g == first) => first,
            _ => 1,
        };
        Self {
            count: indices.len() as u32,
            min: indices.iter().copied().min().unwrap_or(0),
            max: indices.iter().copied().max().unwrap_or(0),
            step,
        }
    }
}

enum DependencyStatus {
    Satisfied,
    Waiting,
    Never,
}

/// The kernel's whole mutable state.
pub struct Scheduler {
    cluster: Cluster,
    config: SchedulerConfig,
    policies: PolicySet,
    fallbacks: PolicyFallbacks,
    /// The jobs in memory: unfinished ones and finished ones not yet forgotten, in no
    /// particular order (forgetting one moves the last into its place).
    jobs: Vec<Job>,
    /// Per job id (`id - 1`): its position in `jobs`, or [`FORGOTTEN`]. Four bytes per
    /// job ever submitted, so a lookup stays two array reads.
    positions: Vec<u32>,
    waiting: BTreeSet<JobId>,
    /// The waiting jobs that have dependencies: the only ones a cycle checks for
    /// dependencies that can never be met.
    waiting_with_dependencies: BTreeSet<JobId>,
    /// Waiting jobs with a `--deadline`, by the latest time they may start (deadline
    /// less time limit): a cycle removes those whose time has passed.
    latest_starts: BTreeSet<(Time, JobId)>,
    /// Per job (by its position in `jobs`): its shape's class. Equal shapes share a
    /// class, so a cycle can remember which requests found no room without hashing whole
    /// shapes.
    job_shape_class: Vec<u32>,
    shape_classes: rustc_hash::FxHashMap<JobShape, u32>,
    running: BTreeSet<JobId>,
    /// Suspended by preemption, in no particular order (the cycle resumes the longest
    /// suspended first).
    suspended: BTreeSet<JobId>,
    /// Runs told to stop whose processes may still be alive, with what they still hold
    /// (only with [`SchedulerConfig::hold_until_processes_end`]).
    completing: std::collections::BTreeMap<(JobId, u32), Completing>,
    /// Jobs that stopped others by preemption, with the victims' runs: each starts
    /// first, ahead of the queue, once those runs' processes are gone.
    preemptors: std::collections::BTreeMap<JobId, Vec<(JobId, u32)>>,
    arrays: HashMap<JobId, ArrayGroup>,
    /// Unfinished jobs per (user, name), for `singleton`.
    singletons: HashMap<(UserId, String), BTreeSet<JobId>>,
    running_per_user_qos: HashMap<(UserId, QosId), u32>,
    /// The priority batch's column buffers, kept between cycles so building a
    /// 100,000-job batch allocates nothing.
    pub(crate) priority_batch: crate::policy::PriorityBatch,
    /// The cycle's other buffers, kept for the same reason.
    pub(crate) cycle_buffers: crate::cycle::CycleBuffers,
    /// The last fairshare factors (`None` before the first cycle that computes them).
    pub(crate) fairshare: Option<crate::cycle::FairshareFactors>,
    /// Core-seconds of finished work per association.
    usage: Vec<f64>,
    /// Advance reservations by id; a deleted one leaves its slot empty.
    pub(crate) reservations: Vec<Option<crate::reservation::AdvanceReservation>>,
}

impl Scheduler {
    pub fn new(cluster: Cluster, config: SchedulerConfig, policies: PolicySet) -> Self {
        Self {
            usage: vec![0.0; cluster.associations.len()],
            cluster,
            config,
            policies,
            fallbacks: PolicyFallbacks::default(),
            jobs: Vec::new(),
            positions: Vec::new(),
            waiting: BTreeSet::new(),
            waiting_with_dependencies: BTreeSet::new(),
            latest_starts: BTreeSet::new(),
            job_shape_class: Vec::new(),
            shape_classes: Default::default(),
            running: BTreeSet::new(),
            arrays: HashMap::default(),
            singletons: HashMap::default(),
            running_per_user_qos: HashMap::default(),
            suspended: BTreeSet::new(),
            completing: Default::default(),
            preemptors: Default::default(),
            priority_batch: Default::default(),
            cycle_buffers: Default::default(),
            fairshare: None,
            reservations: Vec::new(),
        }
    }

    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }
    pub fn config(&self) -> SchedulerConfig {
        self.config
    }
    pub fn fallbacks(&self) -> PolicyFallbacks {
        self.fallbacks
    }
    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(self.position(id)?)
    }
    fn position(&self, id: JobId) -> Option<usize> {
        let p = *self.positions.get((id.0 as usize).checked_sub(1)?)?;
        (p != FORGOTTEN).then_some(p as usize)
    }
    /// The jobs in memory (unfinished, and finished ones not yet forgotten), in no
    /// particular order; [`Scheduler::jobs_from`] gives them by id.
    pub fn jobs(&self) -> &[Job] {
        &self.jobs
    }
    /// The jobs in memory by id, from the `from`-th id issued on, each with the cursor
    /// that resumes after it (for paging a listing between which the kernel changes).
    pub fn jobs_from(&self, from: usize) -> impl Iterator<Item = (usize, &Job)> {
        self.positions
            .iter()
            .enumerate()
            .skip(from)
            .filter(|(_, &p)| p != FORGOTTEN)
            .map(|(i, &p)| (i + 1, &self.jobs[p as usize]))
    }
    /// The id the next submission gets.
    pub fn next_job_id(&self) -> JobId {
        JobId(self.positions.len() as u64 + 1)
    }
    pub fn waiting(&self) -> &BTreeSet<JobId> {
        &self.waiting
    }
    pub fn running(&self) -> &BTreeSet<JobId> {
        &self.running
    }
    /// Jobs suspended by preemption.
    /// Runs told to stop whose processes may still run, by (job, run), with what they
    /// hold.
    pub fn completing(&self) -> &std::collections::BTreeMap<(JobId, u32), Completing> {
        &self.completing
    }
    /// Whether a run of `id` is still ending (its resources not yet back).
    pub fn is_completing(&self, id: JobId) -> bool {
        self.completing
            .range((id, 0)..=(id, u32::MAX))
            .next()
            .is_some()
    }
    pub fn suspended(&self) -> &BTreeSet<JobId> {
        &self.suspended
    }
    /// Ids of an array's tasks, if `id` is an array job id.
    pub fn array_tasks(&self, id: JobId) -> Option<&[JobId]> {
        self.arrays.get(&id).map(|g| g.tasks.as_slice())
    }

    /// How many tasks of the array `id` may run at once (`--array=0-9%2`), if limited.
    pub fn array_throttle(&self, id: JobId) -> Option<u32> {
        self.arrays.get(&id).and_then(|g| g.throttle)
    }

    /// The task indices of the array `id`, in summary.
    pub fn array_indices(&self, id: JobId) -> Option<ArrayIndices> {
        self.arrays.get(&id).map(|g| g.indices)
    }

    /// # Panics
    /// If `id` is not in memory: callers hold an id they found there.
    fn job_mut(&mut self, id: JobId) -> &mut Job {
        let p = self.position(id).expect("a job in memory");
        &mut self.jobs[p]
    }

    /// Makes `user` a member of `account` (created under root if new). Used where users
    /// are not declared, such as trace replay.
    pub fn register_user(&mut self, account: &str, user: &str) {
        let a = self.cluster.ensure_account(account);
        let u = self.cluster.intern_user(user);
        self.cluster.associate(a, u, 1);
        self.usage.resize(self.cluster.associations.len(), 0.0);
    }

    // ----- submission -------------------------------------------------------------------

    /// Validates and queues a job (or every task of an array). Rejects what can never run.
    pub fn submit(&mut self, spec: JobSpec, now: Time) -> Result<Vec<JobId>, SubmitError> {
        let (partition, qos, shape, time_limit) = self.resolve_request(&spec)?;
        self.submit_resolved(spec, now, partition, qos, shape, time_limit)
    }

    /// The partition a job would go to, and where and when it would start if it were
    /// submitted now, after every waiting job (`sbatch --test-only`), validated as
    /// [`Scheduler::submit`] validates it; no time when none can be given (no time
    /// limit, nodes down). Changes nothing.
    pub fn test_only(
        &self,
        spec: &JobSpec,
        now: Time,
        max_jobs: usize,
    ) -> Result<(PartitionId, Option<Reservation>), SubmitError> {
        let (partition, _, shape, time_limit) = self.resolve_request(spec)?;
        let planned = time_limit.and_then(|limit| {
            crate::cycle::plan(self, now, max_jobs, Some((partition, &shape, limit))).1
        });
        Ok((partition, planned))
    }

    /// When each waiting job would start if nothing else changed (`squeue --start`): the
    /// first `max_jobs` eligible waiting jobs in walk order, each reserved in turn as
    /// conservative backfill plans them, running jobs ending at their limits. Jobs held,
    /// before their begin time, on a dependency or without a time limit get none.
    pub fn planned_starts(&self, now: Time, max_jobs: usize) -> Vec<Reservation> {
        crate::cycle::plan(self, now, max_jobs, None).0
    }

    /// A submission's partition, QOS, shape and time limit, checked: what can never run
    /// here is refused.
    fn resolve_request(
        &self,
        spec: &JobSpec,
    ) -> Result<(PartitionId, QosId, JobShape, Option<Time>), SubmitError> {
        let partition = match &spec.partition {
            Some(name) => self
                .cluster
                .partition_by_name(name)
                .ok_or_else(|| SubmitError::UnknownPartition(name.clone()))?,
            None => self
                .cluster
                .default_partition
                .ok_or(SubmitError::NoPartition)?,
        };
        let part = self.cluster.partition(partition);
        let qos = match &spec.qos {
            Some(name) => self
                .cluster
                .qos_by_name(name)
                .ok_or_else(|| SubmitError::UnknownQos(name.clone()))?,
            None => part.default_qos,
        };
        let shape = self.shape_for(&spec.request, partition)?;
        self.check_fits_ever(partition, &shape)?;
        let time_limit = match spec.time_limit {
            Some(t) if t <= 0 => {
                return Err(SubmitError::Invalid("time limit must be positive".into()))
            }
            Some(t) if t > crate::units::MAX_DURATION => {
                return Err(SubmitError::Invalid(format!(
                    "time limit of {t} s is more than {} s (a century)",
                    crate::units::MAX_DURATION
                )))
            }
            Some(t) => Some(t),
            None if spec.time_unlimited => part.max_time,
            None => part.default_time.or(part.max_time),
        };
        if let Some(name) = &spec.reservation {
            if self.reservation_by_name(name).is_none() {
                return Err(SubmitError::UnknownReservation(name.clone()));
            }
        }
        if spec.deadline.is_some() && time_limit.is_none() {
            return Err(SubmitError::Invalid(
                "--deadline needs a time limit (--time, or a partition with one)".into(),
            ));
        }
        Ok((partition, qos, shape, time_limit))
    }

    fn submit_resolved(
        &mut self,
        spec: JobSpec,
        now: Time,
        partition: PartitionId,
        qos: QosId,
        shape: JobShape,
        time_limit: Option<Time>,
    ) -> Result<Vec<JobId>, SubmitError> {
        for dep in &spec.dependencies {
            if let Dependency::On(_, ids) = dep {
                if let Some(&bad) = ids.iter().find(|&&id| self.job(id).is_none()) {
                    return Err(SubmitError::UnknownDependency(bad));
                }
            }
        }
        let requeue_on_node_fail = spec
            .requeue
            .unwrap_or(self.cluster.partition(partition).requeue_on_node_fail);
        let assoc = self.resolve_association(&spec)?;
        let (account, user) = {
            let a = self.cluster.associations[assoc.index()];
            (a.account, a.user)
        };
        let reservation = match &spec.reservation {
            None => None,
            Some(name) => {
                let id = self
                    .reservation_by_name(name)
                    .ok_or_else(|| SubmitError::UnknownReservation(name.clone()))?;
                let r = self.reservation(id).expect("found by name");
                let account_name = &self.cluster.accounts[account.index()].name;
                if !r.admits(&spec.user, account_name) {
                    return Err(SubmitError::ReservationAccess(name.clone()));
                }
                Some(id)
            }
        };

        let indices: Vec<Option<u32>> = match &spec.array {
            Some(a) if a.indices.is_empty() => {
                return Err(SubmitError::Invalid("array has no indices".into()))
            }
            Some(a) => a.indices.iter().map(|&i| Some(i)).collect(),
            None => vec![None],
        };
        let first = self.next_job_id();
        let classes = self.shape_classes.len() as u32;
        let class = *self.shape_classes.entry(shape.clone()).or_insert(classes);
        let mut ids = Vec::with_capacity(indices.len());
        for index in indices {
            let id = self.next_job_id();
            self.positions.push(self.jobs.len() as u32);
            self.job_shape_class.push(class);
            self.jobs.push(Job {
                id,
                name: spec.name.clone(),
                user,
                account,
                assoc,
                partition,
                qos,
                shape: shape.clone(),
                time_limit,
                array: index.map(|index| ArrayTask {
                    array_job: first,
                    index,
                }),
                dependencies: spec.dependencies.clone(),
                requeue_on_node_fail,
                submit_time: now,
                start_time: None,
                end_time: None,
                state: JobState::Pending,
                reason: PendingReason::None,
                priority: 0,
                exit_code: None,
                requeue_count: 0,
                allocation: None,
                suspended_at: None,
                suspended_for: 0,
                running_since: None,
                hold: spec.hold.then_some(Hold::User),
                begin_time: spec.begin.filter(|&b| b > now),
                nice: spec.nice,
                suspended_by_admin: false,
                deadline: spec.deadline,
                reservation,
            });
            self.enqueue(id);
            self.singletons
                .entry((user, spec.name.clone()))
                .or_default()
                .insert(id);
            ids.push(id);
        }
        if let Some(a) = &spec.array {
            self.arrays.insert(
                first,
                ArrayGroup {
                    throttle: a.throttle,
                    running: 0,
                    tasks: ids.clone(),
                    indices: ArrayIndices::of(&a.indices),
                },
            );
        }
        tracing::debug!(first = first.0, count = ids.len(), "submitted");
        Ok(ids)
    }

    fn resolve_association(&mut self, spec: &JobSpec) -> Result<AssocId, SubmitError> {
        let user = self.cluster.intern_user(&spec.user);
        let open = self.cluster.open_accounts;
        let account = match &spec.account {
            Some(name) => self
                .cluster
                .account_by_name(name)
                .ok_or_else(|| SubmitError::UnknownAccount(name.clone()))?,
            None => match self.cluster.default_account(user) {
                Some(a) => a,
                None if open => ROOT_ACCOUNT,
                None => {
                    return Err(SubmitError::NotInAccount {
                        user: spec.user.clone(),
                        account: "any".into(),
                    })
                }
            },
        };
        let assoc = match self.cluster.association(account, user) {
            Some(a) => a,
            None if open => self.cluster.associate(account, user, 1),
            None => {
                return Err(SubmitError::NotInAccount {
                    user: spec.user.clone(),
                    account: self.cluster.accounts[account.index()].name.clone(),
                })
            }
        };
        self.usage.resize(self.cluster.associations.len(), 0.0);
        Ok(assoc)
    }

    fn shape_for(
        &self,
        r: &ResourceRequest,
        partition: PartitionId,
    ) -> Result<JobShape, SubmitError> {
        let invalid = |s: &str| Err(SubmitError::Invalid(s.to_string()));
        let node_ids = |names: &[String]| -> Result<Vec<NodeId>, SubmitError> {
            let mut ids = names
                .iter()
                .map(|n| {
                    self.cluster.node_by_name(n).ok_or_else(|| {
                        SubmitError::Invalid(format!("invalid node name specified: {n}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            ids.dedup();
            Ok(ids)
        };
        let only_nodes = node_ids(&r.nodelist)?;
        let excluded_nodes = node_ids(&r.exclude)?;
        let part = self.cluster.partition(partition);
        if let Some(&n) = only_nodes
            .iter()
            .find(|&&n| !self.cluster.node(n).partitions.contains(&partition))
        {
            return Err(SubmitError::Invalid(format!(
                "node {} is not in partition {}",
                self.cluster.node(n).name,
                part.name
            )));
        }
        if let Some(&n) = only_nodes.iter().find(|n| excluded_nodes.contains(n)) {
            return Err(SubmitError::Invalid(format!(
                "node {} is both required (--nodelist) and excluded (--exclude)",
                self.cluster.node(n).name
            )));
        }
        if r.tasks == 0 {
            return invalid("ntasks must be at least 1");
        }
        if r.cpus_per_task == 0 {
            return invalid("cpus-per-task must be at least 1");
        }
        if r.nodes == Some(0) {
            return invalid("nodes must be at least 1");
        }
        let mut nodes = r.nodes;
        if !only_nodes.is_empty() {
            let listed = only_nodes.len() as u32;
            match nodes {
                Some(n) if n > listed => {
                    return Err(SubmitError::Invalid(format!(
                        "--nodes={n} with {listed} node(s) in --nodelist: a job runs on exactly the nodes listed"
                    )))
                }
                _ => nodes = Some(listed),
            }
        }
        let mut tasks = r.tasks;
        if let Some(n) = nodes {
            tasks = tasks.max(n);
        }
        let gpus_per_node = match r.gpus {
            GpuRequest::None => 0,
            GpuRequest::PerNode(g) => {
                if nodes.is_none() && g > 0 {
                    nodes = Some(1);
                }
                g
            }
            GpuRequest::PerJob(g) => {
                let n = *nodes.get_or_insert(1);
                if g % n != 0 {
                    return Err(SubmitError::Invalid(format!(
                        "--gpus={g} must be a multiple of --nodes={n} (GPUs are spread evenly)"
                    )));
                }
                g / n
            }
        };
        let mut features = 0u64;
        for f in &r.features {
            let i = self
                .cluster
                .feature_id(f)
                .ok_or_else(|| SubmitError::UnknownFeature(f.clone()))?;
            features |= 1u64 << i;
        }
        let gres = r
            .gres
            .iter()
            .map(|(name, n)| {
                self.cluster
                    .gres_id(name)
                    .map(|g| (g, *n))
                    .ok_or_else(|| SubmitError::UnknownGres(name.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(JobShape {
            nodes,
            tasks,
            cpus_per_task: r.cpus_per_task,
            memory: r.memory,
            gpus_per_node,
            gres,
            exclusive: r.exclusive,
            features,
            only_nodes,
            excluded_nodes,
        })
    }

    /// Rejects a shape no idle partition could hold, with the reason.
    fn check_fits_ever(&self, partition: PartitionId, shape: &JobShape) -> Result<(), SubmitError> {
        // Judged on node types (one node stands for each): which nodes a job may use is
        // checked against the names at submission, and by the allocator after.
        let unrestricted;
        let shape = if shape.only_nodes.is_empty() && shape.excluded_nodes.is_empty() {
            shape
        } else {
            unrestricted = JobShape {
                only_nodes: Vec::new(),
                excluded_nodes: Vec::new(),
                ..shape.clone()
            };
            &unrestricted
        };
        let part = self.cluster.partition(partition);
        let never = |why: String| {
            Err(SubmitError::NeverFits {
                partition: part.name.clone(),
                why,
            })
        };
        let total_nodes: u32 = part.type_counts.iter().map(|t| t.1).sum();
        let mut fitting_nodes = 0u64;
        let mut units = 0u64;
        for &(_, count, rep) in &part.type_counts {
            let node = self.cluster.node(rep);
            let u = node_units(node, &node.idle_free(), shape) as u64;
            if u > 0 {
                fitting_nodes += count as u64;
                units += u * count as u64;
            }
        }
        if let Some(n) = shape.nodes {
            if let Some(max) = part.max_nodes {
                if n > max {
                    return never(format!(
                        "asks for {n} nodes; the partition allows at most {max} per job"
                    ));
                }
            }
            if n > total_nodes {
                return never(format!(
                    "asks for {n} nodes; the partition has {total_nodes}"
                ));
            }
            if fitting_nodes < n as u64 {
                let biggest = self.biggest_node(partition);
                return never(format!(
                    "needs {n} node(s) each with {} tasks × {} cpus, {} GPUs{}; only {fitting_nodes} node(s) can hold that (largest: {biggest})",
                    shape.tasks.div_ceil(n),
                    shape.cpus_per_task,
                    shape.gpus_per_node,
                    match shape.memory {
                        MemoryRequest::None => String::new(),
                        MemoryRequest::PerNode(m) => format!(", {m} MiB"),
                        MemoryRequest::PerCpu(m) => format!(", {m} MiB per cpu"),
                        MemoryRequest::WholeNode => ", all its memory".into(),
                    }
                ));
            }
        } else if units < shape.tasks as u64 {
            return never(format!("needs {} tasks × {} cpus; the whole partition holds at most {units} such tasks (largest node: {})", shape.tasks, shape.cpus_per_task, self.biggest_node(partition)));
        }
        Ok(())
    }

    fn biggest_node(&self, partition: PartitionId) -> String {
        let part = self.cluster.partition(partition);
        let t = part
            .type_counts
            .iter()
            .map(|&(_, _, rep)| &self.cluster.node(rep).topology)
            .max_by_key(|t| (t.core_count(), t.gpu_count(), t.memory_mb()));
        match t {
            Some(t) => format!(
                "{} cores, {} MiB, {} GPUs",
                t.core_count(),
                t.memory_mb(),
                t.gpu_count()
            ),
            None => "none".into(),
        }
    }

    // ----- changes asked for by users ---------------------------------------------------

    /// Job `id`, if it is waiting (pending or requeued).
    fn waiting_job(&self, id: JobId) -> Result<&Job, JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if !job.state.is_waiting() {
            return Err(JobError::NotPending(id));
        }
        Ok(job)
    }

    /// Job `id`, if it has a run that was started (running or suspended).
    fn started_job(&self, id: JobId) -> Result<&Job, JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if !matches!(job.state, JobState::Running | JobState::Suspended) {
            return Err(JobError::NotRunning(id));
        }
        Ok(job)
    }

    /// Holds a waiting job back (`scontrol hold`): no cycle starts it until released.
    /// An admin's hold replaces a user's.
    pub fn hold(&mut self, id: JobId, by: Hold) -> Result<(), JobError> {
        self.waiting_job(id)?;
        let job = self.job_mut(id);
        if job.hold != Some(Hold::Admin) {
            job.hold = Some(by);
        }
        job.reason = match job.hold {
            Some(Hold::Admin) => PendingReason::JobHeldAdmin,
            _ => PendingReason::JobHeldUser,
        };
        Ok(())
    }

    /// Releases a held job (`scontrol release`); a user may not release an admin's hold.
    /// Releasing a job that is not held changes nothing.
    pub fn release(&mut self, id: JobId, by: Hold) -> Result<(), JobError> {
        let job = self.waiting_job(id)?;
        if job.hold == Some(Hold::Admin) && by == Hold::User {
            return Err(JobError::HeldByAdmin(id));
        }
        let job = self.job_mut(id);
        job.hold = None;
        job.reason = PendingReason::None;
        Ok(())
    }

    /// Puts a running or suspended job back in the queue (`scontrol requeue`): its run
    /// is told to stop (COMPLETING until its processes are gone) and it waits to run
    /// again, as after a node failure.
    pub fn requeue_job(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        self.started_job(id)?;
        self.requeue(id, now, Stop::ProcessesMayLinger);
        Ok(())
    }

    /// Sets a waiting job's nice (`scontrol update Nice=`); the next cycle orders by it.
    pub fn set_nice(&mut self, id: JobId, nice: i32) -> Result<(), JobError> {
        self.waiting_job(id)?;
        self.job_mut(id).nice = nice;
        Ok(())
    }

    /// What a waiting job would become with another partition and/or node count
    /// (`scontrol update Partition= NumNodes=`): refused when the job is not waiting, the
    /// partition is unknown, the count is outside 1 ..= tasks, or the shape could never
    /// run there. Changes nothing.
    pub fn check_reshape(
        &self,
        id: JobId,
        partition: Option<&str>,
        nodes: Option<u32>,
    ) -> Result<(PartitionId, JobShape), SubmitError> {
        let job = self
            .waiting_job(id)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let p = match partition {
            Some(name) => self
                .cluster
                .partition_by_name(name)
                .ok_or_else(|| SubmitError::UnknownPartition(name.to_string()))?,
            None => job.partition,
        };
        let mut shape = job.shape.clone();
        if let Some(n) = nodes {
            if n == 0 || n > shape.tasks {
                return Err(SubmitError::Invalid(format!(
                    "NumNodes must be between 1 and the job's {} tasks",
                    shape.tasks
                )));
            }
            shape.nodes = Some(n);
        }
        self.check_fits_ever(p, &shape)?;
        Ok((p, shape))
    }

    /// Applies [`Scheduler::check_reshape`]'s answer.
    pub fn reshape(
        &mut self,
        id: JobId,
        partition: Option<&str>,
        nodes: Option<u32>,
    ) -> Result<(), SubmitError> {
        let (p, shape) = self.check_reshape(id, partition, nodes)?;
        let classes = self.shape_classes.len() as u32;
        let class = *self.shape_classes.entry(shape.clone()).or_insert(classes);
        let at = self.position(id).expect("a job in memory");
        self.job_shape_class[at] = class;
        let job = self.job_mut(id);
        job.partition = p;
        job.shape = shape;
        Ok(())
    }

    /// Changes a running job's time limit (`scontrol update TimeLimit=` by an admin, or
    /// lowered by its owner); the daemon tells its agent.
    pub fn set_running_time_limit(
        &mut self,
        id: JobId,
        limit: Option<Time>,
    ) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if !matches!(job.state, JobState::Running | JobState::Suspended) {
            return Err(JobError::NotRunning(id));
        }
        self.job_mut(id).time_limit = limit;
        Ok(())
    }

    /// Moves a waiting job to another QOS (`scontrol update QOS=`).
    pub fn set_qos(&mut self, id: JobId, qos: &str) -> Result<(), SubmitError> {
        self.waiting_job(id)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        let q = self
            .cluster
            .qos_by_name(qos)
            .ok_or_else(|| SubmitError::UnknownQos(qos.to_string()))?;
        self.job_mut(id).qos = q;
        Ok(())
    }

    /// Replaces a waiting job's dependencies (`scontrol update Dependency=`; empty
    /// removes them). Every job named must exist.
    pub fn set_dependencies(
        &mut self,
        id: JobId,
        dependencies: Vec<Dependency>,
    ) -> Result<(), SubmitError> {
        self.waiting_job(id)
            .map_err(|e| SubmitError::Invalid(e.to_string()))?;
        for dep in &dependencies {
            if let Dependency::On(_, ids) = dep {
                if let Some(&bad) = ids.iter().find(|&&d| self.job(d).is_none() || d == id) {
                    return Err(SubmitError::UnknownDependency(bad));
                }
            }
        }
        let empty = dependencies.is_empty();
        let job = self.job_mut(id);
        job.dependencies = dependencies;
        job.reason = PendingReason::None;
        if empty {
            self.waiting_with_dependencies.remove(&id);
        } else {
            self.waiting_with_dependencies.insert(id);
        }
        Ok(())
    }

    /// Suspends a running job by an admin's word (`scontrol suspend`): its cores and GPUs
    /// go back to the pool, its memory stays, and no cycle resumes it.
    pub fn suspend_job(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if job.state != JobState::Running {
            return Err(JobError::NotRunning(id));
        }
        self.suspend(id, now);
        self.job_mut(id).suspended_by_admin = true;
        Ok(())
    }

    /// Ends an admin's suspension (`scontrol resume`): the job runs again at once if
    /// the very cores and GPUs it held are free (returns true), else as soon as a cycle
    /// finds them free.
    pub fn resume_job(&mut self, id: JobId, now: Time) -> Result<bool, JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if job.state != JobState::Suspended || !job.suspended_by_admin {
            return Err(JobError::NotSuspended(id));
        }
        self.job_mut(id).suspended_by_admin = false;
        Ok(self.try_resume(id, now))
    }

    /// Sets a waiting job's time limit (`scontrol update TimeLimit=`); `None` is
    /// unlimited. The next cycle plans with it.
    pub fn set_time_limit(&mut self, id: JobId, limit: Option<Time>) -> Result<(), JobError> {
        self.waiting_job(id)?;
        self.job_mut(id).time_limit = limit;
        self.index_deadline(id);
        Ok(())
    }

    // ----- changes reported by the world ------------------------------------------------

    /// Cancels a waiting or running job. Returns the state it was in.
    pub fn cancel(&mut self, id: JobId, now: Time) -> Result<JobState, JobError> {
        let state = self.job(id).ok_or(JobError::UnknownJob(id))?.state;
        match state {
            s if s.is_terminal() => return Err(JobError::AlreadyFinished(id)),
            JobState::Running | JobState::Suspended => {
                self.stop_running(id, now, Stop::ProcessesMayLinger);
                self.retire(id, now, JobState::Cancelled);
            }
            _ => {
                self.dequeue(id);
                self.retire(id, now, JobState::Cancelled);
            }
        }
        Ok(state)
    }

    /// A running job ended (reported by an agent, or by the simulator's clock).
    pub fn job_ended(&mut self, id: JobId, now: Time, outcome: JobOutcome) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        // A suspended job's processes can still die (a signal, the OOM killer).
        if !matches!(job.state, JobState::Running | JobState::Suspended) {
            return Err(JobError::NotRunning(id));
        }
        let (state, code) = match outcome {
            JobOutcome::Exited(0) => (JobState::Completed, Some(0)),
            JobOutcome::Exited(c) => (JobState::Failed, Some(c)),
            JobOutcome::Timeout => (JobState::Timeout, None),
            JobOutcome::NodeFail => (JobState::NodeFail, None),
        };
        self.finish_running(id, now, state, code);
        Ok(())
    }

    /// A running (or suspended) job passed its time limit and its processes were told
    /// to stop: it ends as TIMEOUT, and what it holds waits for them as a cancelled
    /// job's does (with [`SchedulerConfig::hold_until_processes_end`]).
    pub fn time_limit_reached(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        self.started_job(id)?;
        self.stop_running(id, now, Stop::ProcessesMayLinger);
        self.job_mut(id).exit_code = None;
        self.retire(id, now, JobState::Timeout);
        Ok(())
    }

    /// The processes of `run` of job `id` are gone (its node said so): what the run
    /// still held goes back. False when that run was not completing.
    pub fn processes_gone(&mut self, id: JobId, run: u32) -> bool {
        match self.completing.remove(&(id, run)) {
            Some(c) => {
                self.cluster.release(&c.held);
                true
            }
            None => false,
        }
    }

    /// Marks a node down; its jobs are requeued or end as NODE_FAIL, as each job says,
    /// and runs completing on it give back what they held.
    pub fn node_failed(&mut self, node: NodeId, now: Time) -> Vec<JobId> {
        self.cluster.set_state(node, NodeState::Down);
        let ended: Vec<(JobId, u32)> = self
            .completing
            .iter()
            .filter(|(_, c)| c.held.nodes.iter().any(|n| n.node == node))
            .map(|(&k, _)| k)
            .collect();
        for (id, run) in ended {
            self.processes_gone(id, run);
        }
        let hit: Vec<JobId> = self
            .running
            .iter()
            .chain(&self.suspended)
            .copied()
            .filter(|&id| {
                self.job(id)
                    .and_then(|j| j.allocation.as_ref())
                    .is_some_and(|a| a.nodes.iter().any(|n| n.node == node))
            })
            .collect();
        for &id in &hit {
            if self.job(id).is_some_and(|j| j.requeue_on_node_fail) {
                self.requeue(id, now, Stop::ProcessesGone);
            } else {
                self.finish_running(id, now, JobState::NodeFail, None);
            }
        }
        hit
    }

    /// Brings a node up, or drains it (running jobs go on, nothing new starts).
    pub fn set_node_state(&mut self, node: NodeId, state: NodeState) {
        self.cluster.set_state(node, state);
    }

    /// Gives back what a running or suspended job holds (or, when its processes may
    /// linger and the configuration says so, keeps it held by the completing run) and
    /// stops counting it.
    fn stop_running(&mut self, id: JobId, now: Time, stop: Stop) {
        let job = self.job(id).expect("a running job");
        let alloc = job.allocation.clone().unwrap_or_default();
        let (user, qos, assoc, array, since, suspended, run) = (
            job.user,
            job.qos,
            job.assoc,
            job.array,
            job.running_since.unwrap_or(now),
            job.state == JobState::Suspended,
            job.requeue_count,
        );
        // Its cores and GPUs went back when it was suspended.
        let cores = alloc.core_count() as f64;
        let held = if suspended { alloc.memory() } else { alloc };
        if stop == Stop::ProcessesMayLinger && self.config.hold_until_processes_end {
            self.completing
                .insert((id, run), Completing { held, since: now });
        } else {
            self.cluster.release(&held);
        }
        if suspended {
            self.suspended.remove(&id);
        } else {
            self.running.remove(&id);
            self.usage[assoc.index()] += cores * (now - since).max(0) as f64;
        }
        if let Some(c) = self.running_per_user_qos.get_mut(&(user, qos)) {
            *c = c.saturating_sub(1);
        }
        if let Some(a) = array {
            if let Some(g) = self.arrays.get_mut(&a.array_job) {
                g.running = g.running.saturating_sub(1);
            }
        }
    }

    /// Suspends a running job: its cores and GPUs go back to the pool, its memory stays
    /// allocated. It still counts against per-user and array limits, as it will resume.
    fn suspend(&mut self, id: JobId, now: Time) {
        let job = self.job(id).expect("a running job");
        let alloc = job.allocation.clone().unwrap_or_default();
        let (assoc, since) = (job.assoc, job.running_since.unwrap_or(now));
        self.cluster.release(&alloc.compute());
        self.usage[assoc.index()] += alloc.core_count() as f64 * (now - since).max(0) as f64;
        self.running.remove(&id);
        self.suspended.insert(id);
        let job = self.job_mut(id);
        job.state = JobState::Suspended;
        job.suspended_at = Some(now);
        job.running_since = None;
    }

    /// Resumes a suspended job if the very cores and GPUs it held are free again.
    pub(crate) fn try_resume(&mut self, id: JobId, now: Time) -> bool {
        let Some(alloc) = self.job(id).and_then(|j| j.allocation.as_ref()) else {
            return false;
        };
        if !self.cluster.take_exact(&alloc.compute()) {
            return false;
        }
        self.suspended.remove(&id);
        self.running.insert(id);
        let job = self.job_mut(id);
        job.state = JobState::Running;
        job.suspended_for += (now - job.suspended_at.take().unwrap_or(now)).max(0);
        job.running_since = Some(now);
        true
    }

    fn finish_running(&mut self, id: JobId, now: Time, state: JobState, exit_code: Option<i32>) {
        self.stop_running(id, now, Stop::ProcessesGone);
        self.job_mut(id).exit_code = exit_code;
        self.retire(id, now, state);
    }

    fn retire(&mut self, id: JobId, now: Time, state: JobState) {
        let job = self.job_mut(id);
        job.state = state;
        job.end_time = Some(now);
        let key = (job.user, job.name.clone());
        if let Some(set) = self.singletons.get_mut(&key) {
            set.remove(&id);
            if set.is_empty() {
                self.singletons.remove(&key);
            }
        }
    }

    fn requeue(&mut self, id: JobId, now: Time, stop: Stop) {
        self.stop_running(id, now, stop);
        let job = self.job_mut(id);
        job.state = JobState::Requeued;
        job.suspended_by_admin = false;
        job.reason = PendingReason::None;
        job.start_time = None;
        job.allocation = None;
        job.suspended_at = None;
        job.suspended_for = 0;
        job.running_since = None;
        job.requeue_count += 1;
        self.enqueue(id);
    }

    fn start(&mut self, id: JobId, now: Time, alloc: Allocation) {
        let job = self.job_mut(id);
        job.state = JobState::Running;
        job.reason = PendingReason::None;
        job.start_time = Some(now);
        job.running_since = Some(now);
        job.allocation = Some(alloc);
        let (user, qos, array) = (job.user, job.qos, job.array);
        self.dequeue(id);
        self.running.insert(id);
        *self.running_per_user_qos.entry((user, qos)).or_default() += 1;
        if let Some(a) = array {
            if let Some(g) = self.arrays.get_mut(&a.array_job) {
                g.running += 1;
            }
        }
    }

    fn dependency_status(&self, job: &Job) -> DependencyStatus {
        let mut waiting = false;
        for dep in &job.dependencies {
            match dep {
                Dependency::Singleton => {
                    let first = self
                        .singletons
                        .get(&(job.user, job.name.clone()))
                        .and_then(|s| s.first().copied());
                    if first.is_some_and(|f| f != job.id) {
                        waiting = true;
                    }
                }
                Dependency::On(kind, ids) => {
                    for &target in ids {
                        let targets = self
                            .array_tasks(target)
                            .map(|t| t.to_vec())
                            .unwrap_or_else(|| vec![target]);
                        for t in targets {
                            let Some(tj) = self.job(t) else { continue };
                            let s = tj.state;
                            match kind {
                                DependencyKind::After => {
                                    waiting |= tj.start_time.is_none() && !s.is_terminal()
                                }
                                DependencyKind::AfterAny => waiting |= !s.is_terminal(),
                                DependencyKind::AfterOk
                                    if s.is_terminal() && s != JobState::Completed =>
                                {
                                    return DependencyStatus::Never
                                }
                                DependencyKind::AfterNotOk if s == JobState::Completed => {
                                    return DependencyStatus::Never
                                }
                                DependencyKind::AfterOk | DependencyKind::AfterNotOk => {
                                    waiting |= !s.is_terminal()
                                }
                            }
                        }
                    }
                }
            }
        }
        if waiting {
            DependencyStatus::Waiting
        } else {
            DependencyStatus::Satisfied
        }
    }

    // ----- restoring a controller's state from its log -----------------------------------
    //
    // A controller logs every submission and every decision, and rebuilds its scheduler
    // after a restart by submitting the same jobs (ids are assigned in order, so they
    // come out the same) and applying the same decisions at the same times through these
    // entry points, instead of re-running cycles whose inputs (the clock, the policies)
    // differ now.

    /// Starts waiting job `id` on exactly `alloc`, as a cycle once did.
    pub fn restore_start(
        &mut self,
        id: JobId,
        now: Time,
        alloc: Allocation,
    ) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if !job.state.is_waiting() {
            return Err(JobError::NotRestorable(id, "it is not waiting"));
        }
        if !self.cluster.take_exact(&alloc) {
            // A log written before the ends of completing runs were logged: that this
            // start happened proves the runs on its nodes had ended.
            let ended: Vec<(JobId, u32)> = self
                .completing
                .iter()
                .filter(|(_, c)| {
                    c.held
                        .nodes
                        .iter()
                        .any(|h| alloc.nodes.iter().any(|n| n.node == h.node))
                })
                .map(|(&k, _)| k)
                .collect();
            for (job, run) in ended {
                self.processes_gone(job, run);
            }
            if !self.cluster.take_exact(&alloc) {
                return Err(JobError::NotRestorable(id, "its allocation is not free"));
            }
        }
        self.start(id, now, alloc);
        Ok(())
    }

    /// Preempts running job `id` as a cycle once did.
    pub fn restore_preempt(
        &mut self,
        id: JobId,
        now: Time,
        mode: PreemptMode,
    ) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if job.state != JobState::Running {
            return Err(JobError::NotRunning(id));
        }
        self.preempt_job(id, now, mode);
        Ok(())
    }

    /// Removes waiting job `id` past its deadline, as a cycle once did.
    pub fn restore_past_deadline(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        self.waiting_job(id)?;
        self.dequeue(id);
        self.retire(id, now, JobState::Deadline);
        Ok(())
    }

    /// Resumes suspended job `id` as a cycle once did.
    pub fn restore_resume(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if job.state != JobState::Suspended {
            return Err(JobError::NotRestorable(id, "it is not suspended"));
        }
        if !self.try_resume(id, now) {
            return Err(JobError::NotRestorable(
                id,
                "its cores or GPUs are not free",
            ));
        }
        Ok(())
    }

    /// Submits as [`Scheduler::submit`] does, as jobs `first ..`: a log compacted by a
    /// snapshot keeps only the submissions whose jobs were still in memory, so the ids
    /// between them were issued to jobs since forgotten.
    pub fn restore_submit(
        &mut self,
        first: JobId,
        spec: JobSpec,
        now: Time,
    ) -> Result<Vec<JobId>, SubmitError> {
        self.skip_ids_to(first).map_err(|next| {
            SubmitError::Invalid(format!(
                "restored as job {first}, but ids up to {next} are issued already"
            ))
        })?;
        self.submit(spec, now)
    }

    /// Issues no job the ids before `next` (they went to jobs since forgotten). `Err`
    /// with the next id if ids past `next` are issued already.
    pub fn skip_ids_to(&mut self, next: JobId) -> Result<(), JobId> {
        let issued = self.positions.len() as u64;
        if next.0 <= issued {
            return Err(self.next_job_id());
        }
        self.positions.resize((next.0 - 1) as usize, FORGOTTEN);
        Ok(())
    }

    // ----- forgetting finished jobs -------------------------------------------------------
    //
    // A finished job stays in memory for a while (Slurm's MinJobAge) so `squeue` and
    // `scontrol show job` still show it, then the controller forgets it: its record moves
    // to accounting, and memory, restart and takeover grow with live work, not history.
    // Forgetting never changes a scheduling decision: only finished jobs that no waiting
    // job depends on, whose runs' processes are gone, and (for an array) whose every
    // task is finished are forgotten; a dependency on a job no longer in memory counts as
    // met, as it was (Slurm does the same).

    /// The finished jobs that ended at or before `ended_by` and may be forgotten, by id.
    pub fn forgettable(&self, ended_by: Time) -> Vec<JobId> {
        let mut named: std::collections::HashSet<JobId> = Default::default();
        for &w in &self.waiting_with_dependencies {
            let Some(j) = self.job(w) else { continue };
            for d in &j.dependencies {
                if let Dependency::On(_, ids) = d {
                    named.extend(ids.iter().copied());
                }
            }
        }
        let finished = |j: &Job| {
            j.state.is_terminal()
                && j.end_time.is_some_and(|e| e <= ended_by)
                && !self.is_completing(j.id)
                && !named.contains(&j.id)
        };
        let mut out: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|j| match j.array {
                None => finished(j),
                Some(a) => {
                    a.array_job == j.id
                        && !named.contains(&a.array_job)
                        && self
                            .array_tasks(a.array_job)
                            .unwrap_or_default()
                            .iter()
                            .all(|&t| self.job(t).is_none_or(finished))
                }
            })
            .flat_map(|j| match j.array {
                None => vec![j.id],
                Some(a) => self.array_tasks(a.array_job).unwrap_or_default().to_vec(),
            })
            .collect();
        out.sort_unstable();
        out
    }

    /// Removes finished jobs from memory (as [`Scheduler::forgettable`] chose them) and
    /// returns them. An id not in memory, or of a job that is not finished, is left.
    pub fn forget(&mut self, ids: &[JobId]) -> Vec<Job> {
        let mut gone = Vec::with_capacity(ids.len());
        for &id in ids {
            let Some(p) = self.position(id) else { continue };
            let job = &self.jobs[p];
            if !job.state.is_terminal() || self.is_completing(id) {
                continue;
            }
            if let Some(a) = job.array {
                self.arrays.remove(&a.array_job);
            }
            self.positions[id.0 as usize - 1] = FORGOTTEN;
            let job = self.jobs.swap_remove(p);
            self.job_shape_class.swap_remove(p);
            if let Some(moved) = self.jobs.get(p) {
                self.positions[moved.id.0 as usize - 1] = p as u32;
            }
            gone.push(job);
        }
        gone
    }

    /// Core-seconds of finished work per association, by account and user name (what a
    /// snapshot keeps of fairshare usage).
    pub fn usage_by_association(&self) -> Vec<(String, String, f64)> {
        self.cluster
            .associations
            .iter()
            .enumerate()
            .filter(|(i, _)| self.usage.get(*i).is_some_and(|&u| u != 0.0))
            .map(|(i, a)| {
                (
                    self.cluster.accounts[a.account.index()].name.clone(),
                    self.cluster.users[a.user.index()].clone(),
                    self.usage[i],
                )
            })
            .collect()
    }

    /// Sets the usage of finished work to `rows` (account, user, core-seconds), as
    /// [`Scheduler::usage_by_association`] gave them; an association `rows` names that
    /// does not exist yet is made, as the submission that first made it did.
    pub fn restore_usage(&mut self, rows: &[(String, String, f64)]) {
        self.usage.iter_mut().for_each(|u| *u = 0.0);
        for (account, user, core_s) in rows {
            let a = self.cluster.ensure_account(account);
            let u = self.cluster.intern_user(user);
            let assoc = match self.cluster.association(a, u) {
                Some(x) => x,
                None => self.cluster.associate(a, u, 1),
            };
            self.usage.resize(self.cluster.associations.len(), 0.0);
            self.usage[assoc.index()] = *core_s;
        }
    }

    /// Cancels waiting job `id` because a dependency can never be met, as a cycle once did.
    pub fn restore_dependency_cancel(&mut self, id: JobId, now: Time) -> Result<(), JobError> {
        let job = self.job(id).ok_or(JobError::UnknownJob(id))?;
        if !job.state.is_waiting() {
            return Err(JobError::NotRestorable(id, "it is not waiting"));
        }
        self.cancel_never_satisfied(id, now);
        Ok(())
    }

    // ----- the cycle ----------------------------------------------------------------------

    /// Runs one scheduling cycle at `now` and returns what it decided. The jobs it started
    /// are RUNNING with their allocations when it returns.
    pub fn cycle(&mut self, now: Time) -> CycleOutcome {
        crate::cycle::run(self, now)
    }

    /// The share tree as `sshare` shows it, accounts before their children: shares,
    /// usage (core-seconds, running jobs counted to `now`), and the fairshare factor the
    /// last cycle computed (`None` before the first).
    pub fn share_rows(&self, now: Time) -> Vec<ShareRow> {
        let mut tree = ShareTree::new();
        crate::cycle::build_share_tree(self, now, &mut tree);
        let n = tree.len();
        let factors = self.fairshare.as_ref().map(|f| f.factors());
        let total: f64 = (0..n)
            .filter(|&i| tree.parent_of(i).is_none())
            .map(|i| tree.usage()[i])
            .sum();
        // Siblings' shares, for the normalised shares.
        let mut sibling_shares = vec![0u64; n + 1];
        let slot = |i: usize| tree.parent_of(i).unwrap_or(n);
        for i in 0..n {
            sibling_shares[slot(i)] += u64::from(tree.shares()[i]);
        }
        let mut children: Vec<Vec<usize>> = vec![Vec::new(); n + 1];
        for i in 0..n {
            children[slot(i)].push(i);
        }
        let mut rows = Vec::with_capacity(n);
        let mut stack: Vec<(usize, u32)> = children[n].iter().rev().map(|&i| (i, 0)).collect();
        let n_accounts = self.cluster.accounts.len();
        while let Some((i, depth)) = stack.pop() {
            let (account, user) = if i < n_accounts {
                (self.cluster.accounts[i].name.clone(), None)
            } else {
                let a = self.cluster.associations[i - n_accounts];
                (
                    self.cluster.accounts[a.account.index()].name.clone(),
                    Some(self.cluster.users[a.user.index()].clone()),
                )
            };
            let shares = tree.shares()[i];
            let siblings = sibling_shares[slot(i)].max(1);
            rows.push(ShareRow {
                account,
                user,
                depth,
                raw_shares: shares,
                norm_shares: f64::from(shares) / siblings as f64,
                raw_usage: tree.usage()[i],
                effective_usage: if total > 0.0 {
                    tree.usage()[i] / total
                } else {
                    0.0
                },
                fairshare: factors.and_then(|f| f.get(i).copied()),
            });
            stack.extend(children[i].iter().rev().map(|&c| (c, depth + 1)));
        }
        rows
    }

    // Narrow accessors for `cycle`, which lives in its own module.
    pub(crate) fn parts(&mut self) -> SchedulerParts<'_> {
        SchedulerParts {
            cluster: &mut self.cluster,
            policies: &mut self.policies,
            fallbacks: &mut self.fallbacks,
        }
    }
    pub(crate) fn usage_of(&self, assoc: AssocId) -> f64 {
        self.usage[assoc.index()]
    }
    /// What a cycle found for a job that was waiting at its start: its priority, and,
    /// if it still waits (it was not started), why.
    pub(crate) fn set_priority_and_reason(&mut self, id: JobId, p: i64, r: PendingReason) {
        let job = self.job_mut(id);
        job.priority = p;
        if job.state.is_waiting() {
            job.reason = r;
        }
    }
    pub(crate) fn is_waiting_on_dependency(&self, id: JobId) -> Option<bool> {
        let job = self.job(id)?;
        match self.dependency_status(job) {
            DependencyStatus::Satisfied => Some(false),
            DependencyStatus::Waiting => Some(true),
            DependencyStatus::Never => None,
        }
    }
    fn enqueue(&mut self, id: JobId) {
        self.waiting.insert(id);
        if self.job(id).is_some_and(|j| !j.dependencies.is_empty()) {
            self.waiting_with_dependencies.insert(id);
        }
        self.index_deadline(id);
    }

    /// Files a waiting job with a deadline under the latest time it may start (a stale
    /// entry of another time is skipped when its time comes).
    fn index_deadline(&mut self, id: JobId) {
        if let Some(j) = self.job(id).filter(|j| j.state.is_waiting()) {
            if let (Some(d), Some(l)) = (j.deadline, j.time_limit) {
                self.latest_starts.insert((d.saturating_sub(l), id));
            }
        }
    }

    /// Removes waiting jobs that can no longer end by their deadline (state DEADLINE).
    pub(crate) fn remove_past_deadline(&mut self, now: Time) -> Vec<JobId> {
        let mut gone = Vec::new();
        while let Some(&(latest, id)) = self.latest_starts.first() {
            if latest >= now {
                break;
            }
            self.latest_starts.pop_first();
            let Some(j) = self.job(id).filter(|j| j.state.is_waiting()) else {
                continue;
            };
            let current = match (j.deadline, j.time_limit) {
                (Some(d), Some(l)) => d.saturating_sub(l),
                _ => continue,
            };
            if current != latest {
                continue; // filed again under its current time
            }
            self.dequeue(id);
            self.retire(id, now, JobState::Deadline);
            gone.push(id);
        }
        gone
    }
    fn dequeue(&mut self, id: JobId) {
        self.waiting.remove(&id);
        self.waiting_with_dependencies.remove(&id);
    }
    pub(crate) fn shape_class(&self, id: JobId) -> u32 {
        self.position(id)
            .map_or(u32::MAX, |p| self.job_shape_class[p])
    }
    pub(crate) fn waiting_with_dependencies(&self) -> &BTreeSet<JobId> {
        &self.waiting_with_dependencies
    }
    pub(crate) fn cancel_never_satisfied(&mut self, id: JobId, now: Time) {
        self.dequeue(id);
        self.retire(id, now, JobState::Cancelled);
        self.job_mut(id).reason = PendingReason::DependencyNeverSatisfied;
    }
    pub(crate) fn running_count(&self, user: UserId, qos: QosId) -> u32 {
        self.running_per_user_qos
            .get(&(user, qos))
            .copied()
            .unwrap_or(0)
    }
    pub(crate) fn array_room(&self, array_job: JobId) -> Option<u32> {
        let g = self.arrays.get(&array_job)?;
        g.throttle.map(|t| t.saturating_sub(g.running))
    }
    pub(crate) fn start_job(&mut self, id: JobId, now: Time, alloc: Allocation) {
        self.start(id, now, alloc);
    }
    /// `preemptor` waits for these runs' processes to end, then starts first.
    pub(crate) fn await_victims(&mut self, preemptor: JobId, runs: Vec<(JobId, u32)>) {
        self.preemptors.insert(preemptor, runs);
    }
    /// Preemptors whose victims' processes are all gone (their claims are dropped: each
    /// gets one try ahead of the queue).
    pub(crate) fn take_ready_preemptors(&mut self) -> Vec<JobId> {
        let ready: Vec<JobId> = self
            .preemptors
            .iter()
            .filter(|(_, runs)| runs.iter().all(|r| !self.completing.contains_key(r)))
            .map(|(&id, _)| id)
            .collect();
        for id in &ready {
            self.preemptors.remove(id);
        }
        ready
    }
    pub(crate) fn preempt_job(&mut self, id: JobId, now: Time, mode: PreemptMode) {
        match mode {
            PreemptMode::Cancel => {
                self.stop_running(id, now, Stop::ProcessesMayLinger);
                self.retire(id, now, JobState::Preempted);
            }
            PreemptMode::Requeue => self.requeue(id, now, Stop::ProcessesMayLinger),
            PreemptMode::Suspend => self.suspend(id, now),
        }
    }
}

/// Whether a stopped run's processes are known to be gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// They ended (an agent reported the exit) or their node is down.
    ProcessesGone,
    /// They were told to stop and may still be in their grace period.
    ProcessesMayLinger,
}

/// What a run told to stop still holds, and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct Completing {
    pub held: Allocation,
    pub since: Time,
}

pub(crate) struct SchedulerParts<'a> {
    pub cluster: &'a mut Cluster,
    pub policies: &'a mut PolicySet,
    pub fallbacks: &'a mut PolicyFallbacks,
}
