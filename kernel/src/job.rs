//! Jobs: what a user asks for ([`JobSpec`]), what the kernel keeps ([`Job`]), their states
//! and pending reasons, arrays and dependencies.

use fixedbitset::FixedBitSet;
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::{AccountId, AssocId, GresId, NodeId, PartitionId, QosId, UserId};
use crate::units::Time;

/// Job identifier, unique for the lifetime of a controller. Array tasks have their own ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub u64);

impl std::fmt::Display for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Memory request, as `--mem` or `--mem-per-cpu`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum MemoryRequest {
    #[default]
    None,
    PerNode(u64),
    PerCpu(u64),
    /// `--mem=0`: all of each node's memory (the node's memory must all be free).
    WholeNode,
}

/// GPU request, as `--gpus-per-node` or `--gpus`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum GpuRequest {
    #[default]
    None,
    PerNode(u32),
    /// Spread over the job's nodes as evenly as possible; without a node count the job
    /// takes one node.
    PerJob(u32),
}

/// The resources of a job, in the user's terms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// Exact node count; `None` lets the kernel spread tasks over as few or many nodes as fit.
    pub nodes: Option<u32>,
    pub tasks: u32,
    pub cpus_per_task: u32,
    pub memory: MemoryRequest,
    pub gpus: GpuRequest,
    /// Generic resources per node, by name.
    pub gres: Vec<(String, u64)>,
    /// Whole nodes, shared with no other job.
    pub exclusive: bool,
    /// Node features that must all be present.
    pub features: Vec<String>,
    /// `-w/--nodelist`: the job runs on exactly these nodes (its node count is theirs).
    #[serde(default)]
    pub nodelist: Vec<String>,
    /// `-x/--exclude`: nodes the job must not run on.
    #[serde(default)]
    pub exclude: Vec<String>,
}

impl Default for ResourceRequest {
    fn default() -> Self {
        Self {
            nodes: None,
            tasks: 1,
            cpus_per_task: 1,
            memory: MemoryRequest::None,
            gpus: GpuRequest::None,
            gres: Vec::new(),
            exclusive: false,
            features: Vec::new(),
            nodelist: Vec::new(),
            exclude: Vec::new(),
        }
    }
}

/// A job array: indices and an optional limit on how many run at once (`0-9%2`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArraySpec {
    pub indices: Vec<u32>,
    pub throttle: Option<u32>,
}

impl ArraySpec {
    /// Parses Slurm's `--array` syntax: `0-15`, `1,3,5`, `0-20:4` (step), `0-9%2`.
    pub fn parse(text: &str) -> Result<Self, JobSpecError> {
        let bad = |why: &str| JobSpecError::Array(text.to_string(), why.to_string());
        let (list, throttle) = match text.split_once('%') {
            Some((l, t)) => (
                l,
                Some(
                    t.parse::<u32>()
                        .ok()
                        .filter(|&t| t > 0)
                        .ok_or_else(|| bad("the limit after % must be a positive number"))?,
                ),
            ),
            None => (text, None),
        };
        if text.len() > MAX_ARRAY_TEXT {
            return Err(bad(&format!("longer than {MAX_ARRAY_TEXT} characters")));
        }
        // Counted before anything is built: `0-4294967295` is refused, not allocated.
        let mut indices = Vec::new();
        let mut total: u64 = 0;
        for part in list.split(',') {
            let (range, step) = match part.split_once(':') {
                Some((r, s)) => (
                    r,
                    s.parse::<u32>()
                        .ok()
                        .filter(|&s| s > 0)
                        .ok_or_else(|| bad("step must be a positive number"))?,
                ),
                None => (part, 1),
            };
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            let lo: u32 = lo
                .trim()
                .parse()
                .map_err(|_| bad("indices must be non-negative numbers"))?;
            let hi: u32 = hi
                .trim()
                .parse()
                .map_err(|_| bad("indices must be non-negative numbers"))?;
            if hi < lo {
                return Err(bad("a range runs backwards"));
            }
            total += u64::from((hi - lo) / step) + 1;
            if total > MAX_ARRAY_SIZE as u64 {
                return Err(bad(&format!("more than {MAX_ARRAY_SIZE} tasks")));
            }
            indices.extend((lo..=hi).step_by(step as usize));
        }
        indices.sort_unstable();
        indices.dedup();
        Ok(Self { indices, throttle })
    }
}

/// Largest array one submission may create.
pub const MAX_ARRAY_SIZE: usize = 100_000;

/// Longest `--array` text accepted.
pub const MAX_ARRAY_TEXT: usize = 4096;

/// Kinds of dependency, as in Slurm's `--dependency`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DependencyKind {
    /// The targets have started (or ended).
    After,
    /// The targets have ended, in any state.
    AfterAny,
    /// The targets completed successfully.
    AfterOk,
    /// The targets ended unsuccessfully.
    AfterNotOk,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Dependency {
    On(DependencyKind, Vec<JobId>),
    /// No other earlier job of the same name and user may be unfinished.
    Singleton,
}

/// Parses `afterok:12:13,afterany:14,singleton`. All listed conditions must hold.
pub fn parse_dependencies(text: &str) -> Result<Vec<Dependency>, JobSpecError> {
    let bad = |why: &str| JobSpecError::Dependency(text.to_string(), why.to_string());
    if text.contains('?') {
        return Err(bad(
            "'?' (any-of) dependencies are not supported; list conditions with ','",
        ));
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if part == "singleton" {
            out.push(Dependency::Singleton);
            continue;
        }
        let mut fields = part.split(':');
        let kind = match fields.next().unwrap_or_default() {
            "after" => DependencyKind::After,
            "afterany" => DependencyKind::AfterAny,
            "afterok" => DependencyKind::AfterOk,
            "afternotok" => DependencyKind::AfterNotOk,
            other => return Err(bad(&format!("unknown dependency type '{other}' (use after, afterany, afterok, afternotok or singleton)"))),
        };
        let ids = fields
            .map(|f| {
                // `after:ID+MINUTES` is Slurm's delay syntax; Gantry does not take it.
                f.parse::<u64>()
                    .map(JobId)
                    .map_err(|_| bad(&format!("'{f}' is not a job id")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if ids.is_empty() {
            return Err(bad(&format!("'{part}' names no job")));
        }
        out.push(Dependency::On(kind, ids));
    }
    if out.is_empty() {
        return Err(bad("empty"));
    }
    Ok(out)
}

/// A submission as the user states it; names are resolved by the scheduler at submit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub name: String,
    pub user: String,
    pub account: Option<String>,
    pub partition: Option<String>,
    pub qos: Option<String>,
    pub request: ResourceRequest,
    /// Seconds; `None` takes the partition's default.
    pub time_limit: Option<Time>,
    /// `--time=UNLIMITED`: the partition's maximum, or no limit if it has none
    /// (`time_limit` is then `None`).
    #[serde(default)]
    pub time_unlimited: bool,
    pub array: Option<ArraySpec>,
    pub dependencies: Vec<Dependency>,
    /// Requeue (instead of NODE_FAIL) when a node fails; `None` follows the partition.
    pub requeue: Option<bool>,
    /// `--hold`: submitted held by its user (`scontrol release` lets it run).
    #[serde(default)]
    pub hold: bool,
    /// `--begin`: not eligible before this time.
    #[serde(default)]
    pub begin: Option<Time>,
    /// `--nice`: subtracted from the priority the policy gives (negative raises it).
    #[serde(default)]
    pub nice: i32,
    /// `--deadline`: a job that can no longer end by then (its start + time limit) is
    /// removed, as DEADLINE.
    #[serde(default)]
    pub deadline: Option<Time>,
    /// `--reservation`: runs only inside this advance reservation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation: Option<String>,
}

impl JobSpec {
    pub fn new(name: impl Into<String>, user: impl Into<String>, request: ResourceRequest) -> Self {
        Self {
            name: name.into(),
            user: user.into(),
            account: None,
            partition: None,
            qos: None,
            request,
            time_limit: None,
            time_unlimited: false,
            array: None,
            dependencies: Vec::new(),
            requeue: None,
            hold: false,
            begin: None,
            nice: 0,
            deadline: None,
            reservation: None,
        }
    }
}

/// Who holds a waiting job back (`scontrol hold`, `sbatch --hold`). A user's hold the
/// user may release; an admin's only an admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    User,
    Admin,
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum JobSpecError {
    #[error("invalid array '{0}': {1}")]
    Array(String, String),
    #[error("invalid dependency '{0}': {1}")]
    Dependency(String, String),
}

/// Why a job is rejected at submission. Each message says what to change.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("unknown partition '{0}'")]
    UnknownPartition(String),
    #[error("no partition given and the cluster has no default partition")]
    NoPartition,
    #[error("unknown qos '{0}'")]
    UnknownQos(String),
    #[error("unknown account '{0}'")]
    UnknownAccount(String),
    #[error("user '{user}' is not a member of account '{account}'")]
    NotInAccount { user: String, account: String },
    #[error("invalid request: {0}")]
    Invalid(String),
    #[error("unknown feature '{0}': no node in the cluster has it")]
    UnknownFeature(String),
    #[error("unknown generic resource '{0}'")]
    UnknownGres(String),
    #[error("request can never run in partition '{partition}': {why}")]
    NeverFits { partition: String, why: String },
    #[error("dependency on unknown job {0}")]
    UnknownDependency(JobId),
    #[error("{0}")]
    Spec(#[from] JobSpecError),
    #[error("Requested reservation is invalid: '{0}' does not exist")]
    UnknownReservation(String),
    #[error("Access denied to requested reservation '{0}'")]
    ReservationAccess(String),
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobState {
    Pending,
    Running,
    Completed,
    Failed,
    Cancelled,
    Timeout,
    NodeFail,
    Preempted,
    /// Back in the queue after preemption or node failure; scheduled like PENDING.
    Requeued,
    /// Stopped by preemption: holds its memory, not its cores or GPUs; resumes when
    /// they are free again.
    Suspended,
    /// Removed while waiting: it could no longer end by its `--deadline`.
    Deadline,
}

impl JobState {
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            Self::Pending | Self::Running | Self::Requeued | Self::Suspended
        )
    }
    pub fn is_waiting(self) -> bool {
        matches!(self, Self::Pending | Self::Requeued)
    }
    /// The name Slurm tools print.
    pub fn slurm_name(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::Timeout => "TIMEOUT",
            Self::NodeFail => "NODE_FAIL",
            Self::Preempted => "PREEMPTED",
            Self::Requeued => "REQUEUED",
            Self::Suspended => "SUSPENDED",
            Self::Deadline => "DEADLINE",
        }
    }
}

/// Why a waiting job is not running, in Slurm's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PendingReason {
    /// Not looked at by a cycle yet.
    None,
    /// Higher-priority jobs are ahead of it.
    Priority,
    /// It is the job the resources are being gathered for.
    Resources,
    Dependency,
    DependencyNeverSatisfied,
    #[serde(rename = "QOSMaxJobsPerUserLimit")]
    QosMaxJobsPerUser,
    PartitionTimeLimit,
    JobArrayTaskLimit,
    /// No node of its partition is up.
    PartitionNodesDown,
    /// Held by its user (`--hold`, `scontrol hold`).
    JobHeldUser,
    /// Held by an admin.
    JobHeldAdmin,
    /// Its `--begin` time has not come.
    BeginTime,
    /// Its advance reservation has not started yet.
    Reservation,
    /// Its advance reservation was deleted or has ended.
    ReservationDeleted,
}

impl PendingReason {
    pub fn slurm_name(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::Priority => "Priority",
            Self::Resources => "Resources",
            Self::Dependency => "Dependency",
            Self::DependencyNeverSatisfied => "DependencyNeverSatisfied",
            Self::QosMaxJobsPerUser => "QOSMaxJobsPerUserLimit",
            Self::PartitionTimeLimit => "PartitionTimeLimit",
            Self::JobArrayTaskLimit => "JobArrayTaskLimit",
            Self::PartitionNodesDown => "PartitionNodesDown",
            Self::JobHeldUser => "JobHeldUser",
            Self::JobHeldAdmin => "JobHeldAdmin",
            Self::BeginTime => "BeginTime",
            Self::Reservation => "Reservation",
            Self::ReservationDeleted => "ReservationDeleted",
        }
    }
}

/// A request normalised against the cluster: ids instead of names, per-node needs.
/// Invariant (set by submission): `tasks >= nodes` when a node count is given, and a job
/// with GPUs has a node count.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobShape {
    pub nodes: Option<u32>,
    pub tasks: u32,
    pub cpus_per_task: u32,
    pub memory: MemoryRequest,
    /// GPUs on each node (per-job requests are converted at submit).
    pub gpus_per_node: u32,
    pub gres: Vec<(GresId, u64)>,
    pub exclusive: bool,
    pub features: u64,
    /// When not empty, the only nodes the job may run on (sorted).
    pub only_nodes: Vec<NodeId>,
    /// Nodes the job may not run on (sorted).
    pub excluded_nodes: Vec<NodeId>,
}

impl JobShape {
    /// Whether `node` is one the job may run on at all.
    pub fn may_use(&self, node: NodeId) -> bool {
        (self.only_nodes.is_empty() || self.only_nodes.binary_search(&node).is_ok())
            && self.excluded_nodes.binary_search(&node).is_err()
    }

    /// Cores the whole job holds (exclusive jobs may hold more: whole nodes).
    pub fn cores(&self) -> u64 {
        self.tasks as u64 * self.cpus_per_task as u64
    }
    pub fn gpus(&self) -> u64 {
        self.gpus_per_node as u64 * self.nodes.unwrap_or(1) as u64
    }
}

/// What one node gives a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeAllocation {
    pub node: NodeId,
    pub tasks: u32,
    #[serde(with = "core_set")]
    pub cores: FixedBitSet,
    pub memory_mb: u64,
    pub gpus: u64,
    pub gres: Vec<(GresId, u64)>,
}

/// A core set as `{"width": n, "cores": [i, ...]}`: readable in a log, and independent
/// of how the bit set lays out its words.
mod core_set {
    use fixedbitset::FixedBitSet;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Cores {
        width: usize,
        cores: Vec<usize>,
    }

    pub fn serialize<S: Serializer>(set: &FixedBitSet, s: S) -> Result<S::Ok, S::Error> {
        Cores {
            width: set.len(),
            cores: set.ones().collect(),
        }
        .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<FixedBitSet, D::Error> {
        let c = Cores::deserialize(d)?;
        let width = c
            .cores
            .iter()
            .map(|&i| i + 1)
            .max()
            .unwrap_or(0)
            .max(c.width);
        let mut set = FixedBitSet::with_capacity(width);
        for i in c.cores {
            set.insert(i);
        }
        Ok(set)
    }
}

/// Everything a running job holds; released exactly as taken.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Allocation {
    pub nodes: Vec<NodeAllocation>,
}

impl Allocation {
    /// The cores, GPUs and GRES of this allocation, without its memory: what a suspended
    /// job gives up.
    pub fn compute(&self) -> Allocation {
        Allocation {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeAllocation {
                    memory_mb: 0,
                    ..n.clone()
                })
                .collect(),
        }
    }
    /// Only the memory of this allocation: what a suspended job keeps.
    pub fn memory(&self) -> Allocation {
        Allocation {
            nodes: self
                .nodes
                .iter()
                .map(|n| NodeAllocation {
                    node: n.node,
                    tasks: n.tasks,
                    cores: FixedBitSet::with_capacity(n.cores.len()),
                    memory_mb: n.memory_mb,
                    gpus: 0,
                    gres: Vec::new(),
                })
                .collect(),
        }
    }
    pub fn core_count(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.cores.count_ones(..) as u64)
            .sum()
    }
    pub fn gpu_count(&self) -> u64 {
        self.nodes.iter().map(|n| n.gpus.count_ones() as u64).sum()
    }
}

/// Membership in an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayTask {
    /// The array's id: the id of its first task, as in Slurm.
    pub array_job: JobId,
    pub index: u32,
}

/// How a running job ended, as the driver (agent or simulator) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOutcome {
    Exited(i32),
    Timeout,
    NodeFail,
}

/// A job as the kernel keeps it.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: JobId,
    pub name: String,
    pub user: UserId,
    pub account: AccountId,
    pub assoc: AssocId,
    pub partition: PartitionId,
    pub qos: QosId,
    pub shape: JobShape,
    /// Seconds; `None` is unlimited.
    pub time_limit: Option<Time>,
    pub array: Option<ArrayTask>,
    pub dependencies: Vec<Dependency>,
    pub requeue_on_node_fail: bool,
    pub submit_time: Time,
    pub start_time: Option<Time>,
    pub end_time: Option<Time>,
    pub state: JobState,
    pub reason: PendingReason,
    pub priority: i64,
    pub exit_code: Option<i32>,
    pub requeue_count: u32,
    pub allocation: Option<Allocation>,
    /// When the job was suspended, while it is.
    pub suspended_at: Option<Time>,
    /// Seconds spent suspended since it started; they do not count against its limit.
    pub suspended_for: Time,
    /// Start of the current stretch of running (its start, or its last resume): usage
    /// accrues from here.
    pub running_since: Option<Time>,
    /// Held back while waiting: no cycle starts it or plans for it.
    pub hold: Option<Hold>,
    /// Not eligible before this time (`--begin`).
    pub begin_time: Option<Time>,
    /// Subtracted from the priority policy's answer (`--nice`).
    pub nice: i32,
    /// Suspended by an admin (`scontrol suspend`): resumes only by `scontrol resume`,
    /// never by a cycle.
    pub suspended_by_admin: bool,
    /// `--deadline`: it must end by then.
    pub deadline: Option<Time>,
    /// `--reservation`: the advance reservation it runs in.
    pub reservation: Option<crate::reservation::ResvId>,
}

impl Job {
    /// When a running job will have ended at the latest (for reservations).
    pub fn expected_end(&self) -> Option<Time> {
        Some(self.start_time? + self.time_limit? + self.suspended_for)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_parse_like_slurm() {
        assert_eq!(ArraySpec::parse("0-3").unwrap().indices, vec![0, 1, 2, 3]);
        assert_eq!(ArraySpec::parse("1,5,3").unwrap().indices, vec![1, 3, 5]);
        assert_eq!(ArraySpec::parse("0-10:5").unwrap().indices, vec![0, 5, 10]);
        let t = ArraySpec::parse("0-9%2").unwrap();
        assert_eq!((t.indices.len(), t.throttle), (10, Some(2)));
        assert!(ArraySpec::parse("5-1").is_err());
        assert!(ArraySpec::parse("0-3%0").is_err());
        assert!(ArraySpec::parse("a-b").is_err());
        assert!(ArraySpec::parse("0-200000").is_err());
        // Counted before anything is built: this would be 4 billion indices.
        let err = ArraySpec::parse("0-4294967295").unwrap_err().to_string();
        assert!(err.contains("more than 100000 tasks"), "{err}");
        assert!(ArraySpec::parse("0-60000,60001-120000").is_err());
        assert_eq!(
            ArraySpec::parse("0-199996:2").unwrap().indices.len(),
            99_999,
            "a step counts what it takes"
        );
    }

    #[test]
    fn dependencies_parse_like_slurm() {
        assert_eq!(
            parse_dependencies("afterok:12:13,singleton").unwrap(),
            vec![
                Dependency::On(DependencyKind::AfterOk, vec![JobId(12), JobId(13)]),
                Dependency::Singleton
            ]
        );
        assert!(parse_dependencies("afterfoo:1")
            .unwrap_err()
            .to_string()
            .contains("unknown dependency type"));
        assert!(parse_dependencies("afterok")
            .unwrap_err()
            .to_string()
            .contains("names no job"));
        assert!(parse_dependencies("afterok:x").is_err());
        assert!(parse_dependencies("afterok:1?afterok:2").is_err());
    }
}
