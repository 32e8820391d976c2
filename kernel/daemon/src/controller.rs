//! The controller's state and everything that changes it: submissions, cancellations,
//! scheduling cycles, agent registrations, heartbeats and job reports, admin actions.
//! Every change is written to the [`Store`] before it is acknowledged or acted on, and
//! [`Controller::open`] rebuilds the same state from that log after a restart.
//!
//! This module has no network code: the gRPC services (`service.rs`) call it under a
//! lock and turn its errors into status codes; agents receive their commands through
//! channels it holds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use gantry_api as api;
use gantry_kernel::cluster::NodeId;
use gantry_kernel::cluster::NodeState;
use gantry_kernel::job::{
    parse_dependencies, ArraySpec, GpuRequest, Job, JobOutcome, JobSpec, JobState, MemoryRequest,
};
use gantry_kernel::units::compress_hostlist;
use gantry_kernel::{JobId, ResourceRequest, Scheduler, Time};
use gantry_wasm_host::{PolicyKind, WasmSlots};
use tokio::sync::{broadcast, mpsc};

use crate::store::{Entry, History, Journal, Launch, LogReader, Store, StoreError, Ticket, Usage};

mod reservations;
mod snapshots;
mod steps;
mod updates;
pub use snapshots::SnapshotWork;
pub use steps::{check_step_bounds, NodePart, Relay, Relays, Step};
pub use updates::{JobUpdate, MAX_COMMENT_BYTES};

/// Who is calling, as authentication established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub admin: bool,
}

/// Why a request was refused; each maps to one gRPC status code.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Denied(String),
    #[error("{0}")]
    Conflict(String),
    /// The state database failed: the controller stops, nothing was acknowledged.
    #[error("the controller cannot write its state: {0}")]
    Storage(#[from] StoreError),
}

/// Settings the controller acts on (from the daemon's configuration).
#[derive(Debug, Clone)]
pub struct Settings {
    pub admins: Vec<String>,
    /// `SLURM_CLUSTER_NAME` in every job.
    pub cluster_name: String,
    pub default_account: Option<String>,
    pub heartbeat_s: u32,
    pub node_timeout_s: u32,
    pub kill_grace_s: u32,
    /// Seconds a finished job stays in memory before a snapshot may forget it.
    pub finished_retention_s: u32,
    pub limits: Limits,
}

/// Bounds on what one request may carry, checked before anything is built or stored.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A batch script, and separately a submission's environment and command line.
    pub max_script_bytes: usize,
    /// Job ids named in one job's dependencies.
    pub max_dependencies: usize,
}

/// The most job and step usage entries one node's heartbeat may leave for `sstat`.
const MAX_USAGE_PER_NODE: usize = 4096;

/// How many waiting jobs a plan (`squeue --start`, `sbatch --test-only`) reserves, in
/// priority order; later ones show no time. Each reservation searches the ones before
/// it, under the controller's lock.
pub const PLAN_DEPTH: usize = 1_000;

/// The longest name (job, account, partition, QOS, feature, GRES) a submission may use.
pub const MAX_NAME_BYTES: usize = 1024;
/// The longest path or file pattern a submission may use (Linux's PATH_MAX).
pub const MAX_PATH_BYTES: usize = 4096;
/// The most nodes `--nodelist` or `--exclude` may name.
pub const MAX_NODELIST_NAMES: usize = 65_536;
/// The most features or generic resources one submission may ask for.
pub const MAX_LIST_ITEMS: usize = 64;

/// What the controller knows about a node besides the kernel's resource view.
#[derive(Debug, Default)]
struct NodeLive {
    /// When its agent was last heard from; `None` while it has not (re)registered.
    last_seen: Option<Time>,
    /// Drained by an admin (running jobs go on, nothing new starts).
    drained: bool,
    reason: String,
    /// The agent's command stream, while attached.
    commands: Option<mpsc::UnboundedSender<api::AgentCommand>>,
    /// Commands waiting for the agent to attach.
    queued: Vec<api::AgentCommand>,
    /// What its part of each running job and step used at its last heartbeat (sstat).
    usage: Vec<api::NodeUsage>,
}

pub struct Controller {
    sched: Scheduler,
    journal: Journal,
    settings: Settings,
    /// Per unfinished job: where its submission is in the log, and the few launch fields
    /// views show. The script and environment stay on disk until the launch: a pending
    /// job costs memory for what is scheduled, not for what it will run.
    submissions: HashMap<JobId, Arc<Submission>>,
    reader: LogReader,
    usage: HashMap<JobId, Usage>,
    /// Why finished jobs ended, where their agent said (a failed launch).
    end_messages: HashMap<JobId, String>,
    nodes: Vec<NodeLive>,
    /// Launch commands sent and not yet confirmed by the agent (heartbeat or report),
    /// and when each was last sent.
    unconfirmed: HashMap<JobId, Time>,
    events: broadcast::Sender<api::Event>,
    slots: Option<WasmSlots>,
    /// Job steps (srun inside allocations), per job, running and ended.
    steps: HashMap<JobId, steps::JobSteps>,
    /// Jobs with a running step: what the step sweeps look at (not every job that
    /// ever ran one).
    with_running_steps: std::collections::BTreeSet<JobId>,
    /// Where running steps' output goes (shared with the service).
    relays: Arc<Relays>,
    /// Running jobs whose `--signal` warning is still to be sent, with their run.
    warnings: std::collections::BTreeMap<JobId, u32>,
    /// Comments changed by `scontrol update` (else the submission's).
    comments: HashMap<JobId, String>,
    /// Dependency texts changed by `scontrol update` (else the submission's).
    dependency_texts: HashMap<JobId, String>,
    /// What the last cycle decided (for `sdiag`).
    last_cycle: CycleSummary,
    /// Snapshots and the accounting table.
    archive: snapshots::Archive,
}

/// How much the last scheduling cycle decided.
#[derive(Debug, Default, Clone, Copy)]
pub struct CycleSummary {
    pub started: u32,
    pub reservations: u32,
    pub placement_batches: u32,
}

/// What the controller keeps in memory of a submission (shared by an array's tasks).
#[derive(Debug, Default)]
struct Submission {
    /// Sequence number of its `Submitted` log entry, which holds the whole [`Launch`].
    seq: i64,
    workdir: String,
    output: String,
    error: String,
    dependency: String,
    /// An allocation for srun/salloc steps: no batch script.
    allocation_only: bool,
    comment: String,
    wckey: String,
    warn_signal: Option<crate::store::WarnSignal>,
    uid: u32,
    gid: u32,
}

impl Submission {
    fn new(seq: i64, l: &Launch) -> Arc<Self> {
        Arc::new(Self {
            seq,
            workdir: l.workdir.clone(),
            output: l.output.clone(),
            error: l.error.clone(),
            dependency: l.dependency.clone(),
            allocation_only: l.allocation_only,
            comment: l.comment.clone(),
            wckey: l.wckey.clone(),
            warn_signal: l.warn_signal,
            uid: l.uid,
            gid: l.gid,
        })
    }
}

/// Nodes as one Slurm host list (`cpu[01-02]`).
fn host_list(cluster: &gantry_kernel::Cluster, nodes: &[NodeId]) -> String {
    let names: Vec<&str> = nodes
        .iter()
        .map(|&n| cluster.node(n).name.as_str())
        .collect();
    compress_hostlist(&names)
}

/// The umask of a job whose submission carried none.
pub const DEFAULT_UMASK: u32 = 0o022;

/// The longest reason an agent may give for a job's end, in bytes.
const MAX_END_MESSAGE: usize = 1024;

/// `text` cut to at most `max` bytes (at a character boundary).
fn bounded(text: &str, max: usize) -> String {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

/// A user-given name as an error may quote it: at most 64 bytes, control characters
/// escaped.
fn quoted(name: &str) -> String {
    bounded(name, 64).escape_debug().to_string()
}

/// The run of `job` that is (or was last) sent to an agent.
fn job_run(job: &Job) -> api::JobRun {
    api::JobRun {
        job_id: job.id.0,
        run: job.requeue_count,
    }
}

fn invalid(e: impl std::fmt::Display) -> Refusal {
    Refusal::Invalid(e.to_string())
}

/// Expands a batch script's output file pattern (Slurm's): `%j` job id, `%J` the same
/// (the batch step has no step number), `%x` name, `%A` array job id, `%a` array task id,
/// `%u` user, `%N` first node, `%s` `batch`, `%t` and `%n` 0 (one task, the first node),
/// `%%` a percent sign; relative to `workdir`.
pub fn output_path(pattern: &str, job: &Job, user: &str, node: &str, workdir: &str) -> String {
    use gantry_kernel::units::{expand_file_pattern, PatternField};
    let array_job = job.array.map_or(job.id.0, |a| a.array_job.0);
    let out = expand_file_pattern(pattern, |c| {
        Some(match c {
            'j' | 'J' => PatternField::Number(job.id.0),
            'x' => PatternField::Text(job.name.clone()),
            'A' => PatternField::Number(array_job),
            'a' => PatternField::Number(job.array.map_or(4_294_967_294, |a| u64::from(a.index))),
            'u' => PatternField::Text(user.to_string()),
            'N' => PatternField::Text(node.to_string()),
            's' => PatternField::Text("batch".into()),
            't' | 'n' => PatternField::Number(0),
            _ => return None,
        })
    });
    if out.starts_with('/') || workdir.is_empty() {
        out
    } else {
        format!("{}/{out}", workdir.trim_end_matches('/'))
    }
}

fn default_output(job: &Job) -> &'static str {
    if job.array.is_some() {
        "slurm-%A_%a.out"
    } else {
        "slurm-%j.out"
    }
}

impl Controller {
    /// Builds the controller from its log: the same jobs, decisions and node states as
    /// before the restart. Nodes with jobs on them get one node timeout for their agents
    /// to come back; the others are DOWN until their agents register.
    pub fn open(
        sched: Scheduler,
        mut store: Store,
        settings: Settings,
        slots: Option<WasmSlots>,
        now: Time,
    ) -> Result<Self, anyhow::Error> {
        let mut history = History::default();
        history.follow(&mut store)?;
        Self::restore(sched, store, history, settings, slots, now)
    }

    /// Rebuilds the controller from `history` (the whole log as read so far: a standby
    /// has followed it) and what `store` holds after it, then writes through `store`.
    pub fn restore(
        sched: Scheduler,
        mut store: Store,
        mut history: History,
        settings: Settings,
        slots: Option<WasmSlots>,
        now: Time,
    ) -> Result<Self, anyhow::Error> {
        let nodes = (0..sched.cluster().nodes.len())
            .map(|_| NodeLive::default())
            .collect();
        let (events, _) = broadcast::channel(1024);
        history.follow(&mut store)?;
        let History {
            snapshot,
            entries,
            components,
            ..
        } = history;
        let reader = store.reader()?;
        let archive = snapshots::Archive::open(&store)?;
        let journal = Journal::start(store)?;
        let mut c = Self {
            sched,
            journal,
            settings,
            submissions: HashMap::new(),
            reader,
            usage: HashMap::new(),
            end_messages: HashMap::new(),
            nodes,
            unconfirmed: HashMap::new(),
            events,
            slots,
            steps: HashMap::new(),
            with_running_steps: Default::default(),
            relays: Arc::default(),
            warnings: Default::default(),
            comments: HashMap::new(),
            dependency_texts: HashMap::new(),
            last_cycle: Default::default(),
            archive,
        };
        let restored = entries.len();
        // The snapshot applies after the entries it keeps, before those after it.
        let mut snapshot = snapshot;
        for (seq, time, entry) in entries {
            if let Some(s) = snapshot.take_if(|s| seq > s.upto) {
                c.apply_snapshot(&s);
            }
            if let Err(e) = c.apply(seq, time, &entry, &components) {
                tracing::error!(seq, error = %e, "log entry could not be applied; continuing");
            }
        }
        if let Some(s) = snapshot {
            c.apply_snapshot(&s);
        }
        // Nodes holding jobs keep them: their agents have a node timeout to return.
        let busy: HashSet<NodeId> = c
            .sched
            .running()
            .iter()
            .chain(c.sched.suspended())
            .filter_map(|&id| c.sched.job(id)?.allocation.as_ref())
            .flat_map(|a| a.nodes.iter().map(|n| n.node))
            .collect();
        for i in 0..c.nodes.len() {
            let id = NodeId(i as u32);
            if busy.contains(&id) {
                c.nodes[i].last_seen = Some(now);
            }
            c.sync_node_state(id);
        }
        // Launches of running jobs may not have reached their agents before the restart:
        // the agents' heartbeats say which they have; the rest are sent again.
        c.unconfirmed = c.sched.running().iter().map(|&id| (id, now)).collect();
        let running: Vec<JobId> = c.sched.running().iter().copied().collect();
        for id in running {
            c.arm_warning(id, now);
        }
        c.end_steps_after_restart(now)?;
        tracing::info!(
            entries = restored,
            jobs = c.sched.jobs().len(),
            running = c.sched.running().len(),
            waiting = c.sched.waiting().len(),
            "state restored"
        );
        Ok(c)
    }

    fn node_id(&self, name: &str) -> Result<NodeId, Refusal> {
        self.sched
            .cluster()
            .node_by_name(name)
            .ok_or_else(|| Refusal::NotFound(format!("no node named '{name}' in the cluster")))
    }

    /// Applies one logged entry (restore path; decisions go through `restore_*`).
    fn apply(
        &mut self,
        seq: i64,
        time: Time,
        entry: &Entry,
        components: &HashMap<String, Vec<u8>>,
    ) -> Result<(), anyhow::Error> {
        match entry {
            Entry::Submitted {
                first,
                count,
                spec,
                launch,
            } => {
                self.associate_if_needed(&spec.user, spec.account.as_deref());
                let ids = self
                    .sched
                    .restore_submit(*first, (**spec).clone().into(), time)?;
                if ids.first() != Some(first) || ids.len() != *count as usize {
                    anyhow::bail!(
                        "submission restored as jobs {ids:?}, logged as {count} from {first}"
                    );
                }
                let sub = Submission::new(seq, launch);
                for id in ids {
                    self.submissions.insert(id, sub.clone());
                }
            }
            Entry::Started { job, allocation } => {
                self.sched.restore_start(*job, time, allocation.into())?
            }
            Entry::Ended {
                job,
                outcome,
                usage,
                message,
            } => {
                self.usage.insert(*job, *usage);
                if !message.is_empty() {
                    self.end_messages.insert(*job, message.clone());
                }
                self.sched.job_ended(*job, time, (*outcome).into())?;
            }
            Entry::Cancelled { job } => {
                self.sched.cancel(*job, time)?;
            }
            Entry::TimedOut { job } => self.sched.time_limit_reached(*job, time)?,
            Entry::ProcessesGone { job, run } => {
                self.sched.processes_gone(*job, *run);
            }
            Entry::DependencyNeverSatisfied { job } => {
                self.sched.restore_dependency_cancel(*job, time)?
            }
            Entry::Preempted { job, mode } => {
                self.sched.restore_preempt(*job, time, (*mode).into())?
            }
            Entry::Resumed { job } => self.sched.restore_resume(*job, time)?,
            Entry::NodeFailed { node } => {
                let id = self.node_id(node)?;
                self.sched.node_failed(id, time);
            }
            Entry::NodeState {
                node,
                state,
                reason,
            } => {
                let id = self.node_id(node)?;
                let live = &mut self.nodes[id.index()];
                live.drained = state == "drain";
                live.reason = reason.clone();
            }
            Entry::PolicyLoaded {
                kind,
                sha256,
                config,
                ..
            } => {
                let (Some(slots), Some(bytes)) = (&self.slots, components.get(sha256)) else {
                    anyhow::bail!("policy component {sha256} is not available");
                };
                let kind: PolicyKind = kind.parse().map_err(anyhow::Error::msg)?;
                slots.load(kind, bytes, config)?;
            }
            Entry::PolicyActivated { kind, version, who } => {
                if let Some(slots) = &self.slots {
                    let kind: PolicyKind = kind.parse().map_err(anyhow::Error::msg)?;
                    slots.activate(kind, gantry_wasm_host::VersionId(*version), who, time)?;
                }
            }
            Entry::PolicyRolledBack { kind, to, who } => {
                if let Some(slots) = &self.slots {
                    let kind: PolicyKind = kind.parse().map_err(anyhow::Error::msg)?;
                    slots.rollback(kind, to.map(gantry_wasm_host::VersionId), who, time)?;
                }
            }
            Entry::StepStarted {
                job,
                step,
                name,
                nodes,
                tasks,
            } => self.restore_step_start(*job, *step, name, nodes, *tasks, time),
            Entry::StepEnded {
                job,
                step,
                state,
                exit_code,
                cpu_s,
            } => self.restore_step_end(*job, *step, *state, *exit_code, *cpu_s, time),
            Entry::Held { job, by } => self.sched.hold(*job, (*by).into())?,
            Entry::Requeued { job } => self.sched.requeue_job(*job, time)?,
            Entry::PastDeadline { job } => self.sched.restore_past_deadline(*job, time)?,
            Entry::SuspendedByAdmin { job } => self.sched.suspend_job(*job, time)?,
            Entry::ResumedByAdmin { job } => {
                self.sched.resume_job(*job, time)?;
            }
            Entry::Released { job, by } => self.sched.release(*job, (*by).into())?,
            Entry::ReservationSet(r) => {
                let r = self.reservation_from_record(r)?;
                self.sched.set_reservation(r);
            }
            Entry::ReservationDeleted { name } => self.sched.delete_reservation(name)?,
            Entry::Updated {
                job,
                time_limit,
                comment,
                nice,
                qos,
                dependency,
                partition,
                nodes,
            } => self.apply_update(
                *job,
                &JobUpdate {
                    time_limit: *time_limit,
                    comment: comment.clone(),
                    nice: *nice,
                    qos: qos.clone(),
                    dependency: dependency.clone(),
                    partition: partition.clone(),
                    nodes: *nodes,
                },
            )?,
        }
        Ok(())
    }

    /// Puts a user with no association into the default account, when one is set.
    fn associate_if_needed(&mut self, user: &str, account: Option<&str>) {
        let Some(default) = self.settings.default_account.clone() else {
            return;
        };
        let cluster = self.sched.cluster();
        if cluster.open_accounts || account.is_some() {
            return;
        }
        let known = cluster
            .users
            .iter()
            .position(|u| u == user)
            .is_some_and(|u| cluster.associations.iter().any(|a| a.user.0 as usize == u));
        if !known {
            self.sched.register_user(&default, user);
        }
    }

    /// Logs entries and waits until they are on disk (with everything queued before).
    fn log(&mut self, time: Time, entries: &[Entry]) -> Result<(), Refusal> {
        let ticket = self.journal.queue(time, entries)?;
        self.journal.wait(ticket).map_err(Refusal::Storage)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The log's writer, for waiting on a ticket without holding the controller.
    pub fn journal(&self) -> Journal {
        self.journal.clone()
    }

    // ----- users ------------------------------------------------------------------------

    /// Validates and queues a submission and its log entry; returns the job ids and the
    /// ticket to wait on before acknowledging. Until the ticket is durable nothing the
    /// jobs cause reaches an agent: every later log write waits for it too.
    pub fn submit(
        &mut self,
        who: &Caller,
        sub: api::JobSubmission,
        now: Time,
    ) -> Result<(Vec<JobId>, Ticket), Refusal> {
        let (spec, launch) = spec_from(who, sub, &self.settings.limits)?;
        self.associate_if_needed(&spec.user, spec.account.as_deref());
        let logged = Box::new((&spec).into());
        let ids = self.sched.submit(spec, now).map_err(invalid)?;
        let entry = Entry::Submitted {
            first: ids[0],
            count: ids.len() as u32,
            spec: logged,
            launch: Box::new(launch.clone()),
        };
        let ticket = self.journal.queue(now, &[entry])?;
        let sub = Submission::new(ticket as i64, &launch);
        for &id in &ids {
            self.submissions.insert(id, sub.clone());
            self.publish_job(id, now);
        }
        tracing::debug!(user = %who.user, first = ids[0].0, count = ids.len(), "submitted");
        Ok((ids, ticket))
    }

    /// The job, if `who` may act on it (its owner or an admin).
    fn owned(&self, who: &Caller, id: JobId) -> Result<&Job, Refusal> {
        let job = self
            .sched
            .job(id)
            .ok_or_else(|| Refusal::NotFound(format!("Invalid job id specified: {}", id.0)))?;
        let owner = &self.sched.cluster().users[job.user.index()];
        if !who.admin && *owner != who.user {
            tracing::warn!(caller = %who.user, job = id.0, owner = %owner, "refused: not the owner");
            return Err(Refusal::Denied(format!(
                "Access/permission denied: job {} belongs to {owner}",
                id.0
            )));
        }
        Ok(job)
    }

    /// Cancels jobs (every task of an array given by its array id, or the tasks named in
    /// `tasks`). Returns those ended. Every cancellation is written to the log in one
    /// commit, so cancelling a large array costs one wait for the disk, not one per task.
    pub fn cancel(
        &mut self,
        who: &Caller,
        ids: &[u64],
        tasks: &[api::ArrayTasks],
        now: Time,
    ) -> Result<Vec<JobId>, Refusal> {
        let mut targets = self.owned_targets(who, ids)?;
        for t in tasks {
            targets.extend(self.array_members(who, t)?);
        }
        targets.retain(|&id| self.sched.job(id).is_some_and(|j| !j.state.is_terminal()));
        targets.sort_unstable();
        targets.dedup();
        let named = ids.len() + tasks.len();
        if named == 1 && targets.is_empty() {
            let what = match (ids.first(), tasks.first()) {
                (Some(id), _) => id.to_string(),
                (None, Some(t)) => format!("{}_{}", t.array_job_id, t.tasks),
                (None, None) => String::new(),
            };
            return Err(Refusal::Conflict(format!(
                "Job/step already completing or completed: {what}"
            )));
        }
        let entries: Vec<Entry> = targets
            .iter()
            .map(|&job| Entry::Cancelled { job })
            .collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        self.log(now, &entries)?;
        for &id in &targets {
            let first_node = self.first_node(id);
            let Some(run) = self.sched.job(id).map(job_run) else {
                continue;
            };
            let was = self.sched.cancel(id, now).map_err(invalid)?;
            if matches!(was, JobState::Running | JobState::Suspended) {
                if let Some(node) = first_node {
                    self.send(node, api::agent_command::What::Cancel(run));
                }
            }
            self.publish_job(id, now);
        }
        self.stop_steps_of_ended_jobs();
        Ok(targets)
    }

    /// The tasks of an array that `t` names (`12_3`, `12_[1-3]`), if `who` owns it.
    fn array_members(&self, who: &Caller, t: &api::ArrayTasks) -> Result<Vec<JobId>, Refusal> {
        let array = JobId(t.array_job_id);
        let spec = ArraySpec::parse(&t.tasks).map_err(invalid)?;
        let not_found = || {
            Refusal::NotFound(format!(
                "Invalid job id specified: {}_{}",
                t.array_job_id, t.tasks
            ))
        };
        let members = self.sched.array_tasks(array).ok_or_else(not_found)?;
        self.owned(who, array)?;
        let hit: Vec<JobId> = members
            .iter()
            .copied()
            .filter(|&m| {
                self.sched
                    .job(m)
                    .and_then(|j| j.array)
                    .is_some_and(|a| spec.indices.binary_search(&a.index).is_ok())
            })
            .collect();
        if hit.is_empty() {
            return Err(not_found());
        }
        Ok(hit)
    }

    // ----- the scheduling cycle -----------------------------------------------------------

    /// Declares nodes whose agents went silent DOWN, runs one cycle, logs its decisions,
    /// and sends the launches, suspensions and resumptions to the agents.
    pub fn cycle(&mut self, now: Time) -> Result<(), Refusal> {
        self.check_heartbeats(now)?;
        self.send_warnings(now);
        self.end_reservations(now)?;
        let out = self.sched.cycle(now);
        self.last_cycle = CycleSummary {
            started: out.started.len() as u32,
            reservations: out.reservations.len() as u32,
            placement_batches: out.placement_batches,
        };
        let mut entries = Vec::new();
        entries.extend(
            out.cancelled
                .iter()
                .map(|&job| Entry::DependencyNeverSatisfied { job }),
        );
        entries.extend(
            out.past_deadline
                .iter()
                .map(|&job| Entry::PastDeadline { job }),
        );
        entries.extend(out.resumed.iter().map(|&job| Entry::Resumed { job }));
        let victims = [
            (&out.preempted, gantry_abi::PreemptMode::Cancel),
            (&out.requeued, gantry_abi::PreemptMode::Requeue),
            (&out.suspended, gantry_abi::PreemptMode::Suspend),
        ];
        for (jobs, mode) in victims {
            entries.extend(jobs.iter().map(|&job| Entry::Preempted {
                job,
                mode: mode.into(),
            }));
        }
        for &job in &out.started {
            let allocation = self
                .sched
                .job(job)
                .and_then(|j| j.allocation.as_ref())
                .map(Into::into)
                .unwrap_or_default();
            entries.push(Entry::Started { job, allocation });
        }
        if entries.is_empty() {
            return Ok(());
        }
        // Logged before any agent hears of it: a restart knows everything that was sent.
        self.log(now, &entries)?;
        use api::agent_command::What;
        // A requeued job's allocation is gone from the kernel's view, and its count has
        // moved on to the next run: the run to end is the one before. The agent that
        // has it, wherever it is, ends it.
        let ended_runs: Vec<api::JobRun> = out
            .preempted
            .iter()
            .filter_map(|&id| self.sched.job(id).map(job_run))
            .chain(out.requeued.iter().filter_map(|&id| {
                self.sched.job(id).map(|j| api::JobRun {
                    job_id: id.0,
                    run: j.requeue_count.saturating_sub(1),
                })
            }))
            .collect();
        for run in ended_runs {
            self.broadcast_to_agents(What::Cancel(run));
        }
        for &id in &out.suspended {
            if let (Some(n), Some(j)) = (self.first_node(id), self.sched.job(id)) {
                let run = job_run(j);
                self.send(n, What::Suspend(run));
            }
            // Its steps' tasks stop with it, on every node.
            self.signal_steps_of(id, libc::SIGSTOP);
        }
        for &id in &out.resumed {
            if let (Some(n), Some(j)) = (self.first_node(id), self.sched.job(id)) {
                let run = job_run(j);
                self.send(n, What::Resume(run));
            }
            self.signal_steps_of(id, libc::SIGCONT);
        }
        let read = self.prefetch_launches(&out.started);
        for &id in &out.started {
            self.send_launch_from(id, now, &read);
            self.arm_warning(id, now);
        }
        let changed = out
            .cancelled
            .iter()
            .chain(&out.past_deadline)
            .chain(&out.resumed)
            .chain(&out.preempted)
            .chain(&out.requeued)
            .chain(&out.suspended)
            .chain(&out.started)
            .copied()
            .collect::<Vec<_>>();
        for id in changed {
            self.publish_job(id, now);
        }
        self.stop_steps_of_ended_jobs();
        Ok(())
    }

    fn check_heartbeats(&mut self, now: Time) -> Result<(), Refusal> {
        let timeout = self.settings.node_timeout_s as Time;
        for i in 0..self.nodes.len() {
            let Some(seen) = self.nodes[i].last_seen else {
                continue;
            };
            if now - seen <= timeout {
                continue;
            }
            let id = NodeId(i as u32);
            let name = self.sched.cluster().node(id).name.clone();
            tracing::warn!(node = %name, silent_s = now - seen, "agent silent; node DOWN");
            self.log(now, &[Entry::NodeFailed { node: name }])?;
            let hit = self.sched.node_failed(id, now);
            let live = &mut self.nodes[i];
            live.last_seen = None;
            live.reason = "Not responding".into();
            live.commands = None;
            live.queued.clear();
            for job in hit {
                self.unconfirmed.remove(&job);
                self.publish_job(job, now);
            }
            self.steps_node_failed(id, now)?;
            self.stop_steps_of_ended_jobs();
            self.sync_node_state(id);
            self.publish_node(id, now);
        }
        Ok(())
    }

    /// Sets the kernel's view of a node from what the controller knows.
    fn sync_node_state(&mut self, id: NodeId) {
        let live = &self.nodes[id.index()];
        let want = match (live.last_seen, live.drained) {
            (None, _) => NodeState::Down,
            (Some(_), true) => NodeState::Drained,
            (Some(_), false) => NodeState::Up,
        };
        if self.sched.cluster().node(id).state != want {
            self.sched.set_node_state(id, want);
        }
    }

    // ----- agents ---------------------------------------------------------------------------

    /// The node a job's batch script runs on (the first of its allocation).
    fn first_node(&self, id: JobId) -> Option<NodeId> {
        let alloc = self.sched.job(id)?.allocation.as_ref()?;
        alloc.nodes.first().map(|n| n.node)
    }

    /// Whether `run` of job `id` is the job's current run, running (or suspended) with
    /// its batch script on `node`: the only run that node may speak about.
    fn is_current_run(&self, id: JobId, run: u32, node: NodeId) -> bool {
        self.sched.job(id).is_some_and(|j| {
            j.requeue_count == run && matches!(j.state, JobState::Running | JobState::Suspended)
        }) && self.first_node(id) == Some(node)
    }

    fn send(&mut self, node: NodeId, what: api::agent_command::What) {
        let cmd = api::AgentCommand { what: Some(what) };
        let live = &mut self.nodes[node.index()];
        match &live.commands {
            Some(tx) if tx.send(cmd.clone()).is_ok() => {}
            _ => {
                live.commands = None;
                live.queued.push(cmd);
            }
        }
    }

    pub(super) fn broadcast_to_agents(&mut self, what: api::agent_command::What) {
        for i in 0..self.nodes.len() {
            if self.nodes[i].commands.is_some() {
                self.send(NodeId(i as u32), what.clone());
            }
        }
    }

    /// What job `id` runs, read back from its submission's log entry.
    fn launch(&self, id: JobId) -> Result<Launch, String> {
        let seq = self
            .submissions
            .get(&id)
            .map(|s| s.seq)
            .ok_or("the job has no logged submission")?;
        match self.reader.entry(seq).map_err(|e| e.to_string())? {
            Some(Entry::Submitted { launch, .. }) => Ok(*launch),
            Some(_) => Err(format!("log entry {seq} is not a submission")),
            None => Err(format!("log entry {seq} is missing")),
        }
    }

    /// What the jobs `ids` run, read together (one query for a cycle's starts, and
    /// one entry for all the tasks of an array), by their entries' sequence numbers. A
    /// failed read gives none: each launch then reads its own, and reports its error.
    fn prefetch_launches(&self, ids: &[JobId]) -> HashMap<i64, Launch> {
        let seqs: Vec<i64> = ids
            .iter()
            .filter_map(|id| self.submissions.get(id).map(|s| s.seq))
            .collect();
        if seqs.len() < 2 {
            return HashMap::new();
        }
        match self.reader.entries_at(&seqs) {
            Ok(entries) => entries
                .into_iter()
                .filter_map(|(seq, e)| match e {
                    Entry::Submitted { launch, .. } => Some((seq, *launch)),
                    _ => None,
                })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read a cycle's launches together; reading each");
                HashMap::new()
            }
        }
    }

    /// Sends job `id`'s launch to its first node, taking what it runs from `read` when
    /// it is there, else from the log.
    fn send_launch_from(&mut self, id: JobId, now: Time, read: &HashMap<i64, Launch>) {
        // Only a running job is launched: one that stopped (cancelled, timed out,
        // requeued, its node failed) must not start again on a late resend.
        let Some(job) = self.sched.job(id).filter(|j| j.state == JobState::Running) else {
            self.unconfirmed.remove(&id);
            return;
        };
        let Some(alloc) = job.allocation.as_ref() else {
            return;
        };
        let Some(here) = alloc.nodes.first() else {
            return;
        };
        let node = here.node;
        let known = self
            .submissions
            .get(&id)
            .and_then(|s| read.get(&s.seq))
            .cloned();
        let launch = match known.map_or_else(|| self.launch(id), Ok) {
            Ok(l) => l,
            Err(e) => {
                // Unconfirmed: the next heartbeat from the node finds it missing and the
                // launch is tried again.
                tracing::error!(job = id.0, error = %e, "cannot read the job's launch from the log");
                self.unconfirmed.insert(id, now);
                return;
            }
        };
        let mut info = self.job_info(job);
        // Its limit from its start, or its reservation's end when that comes first.
        if let (Some(end), Some(start)) = (self.sched.run_end(job), job.start_time) {
            info.time_limit_s = (end - start).max(1);
        }
        let run = job.requeue_count;
        let mut env: HashMap<String, String> = launch.env.iter().cloned().collect();
        env.insert(
            "SLURM_CLUSTER_NAME".into(),
            self.settings.cluster_name.clone(),
        );
        if let Some(r) = job.reservation.and_then(|r| self.sched.reservation(r)) {
            env.insert("SLURM_JOB_RESERVATION".into(), r.name.clone());
        }
        // The whole array's indices, as Slurm gives every task.
        if let Some(a) = job
            .array
            .and_then(|a| self.sched.array_indices(a.array_job))
        {
            env.insert("SLURM_ARRAY_TASK_COUNT".into(), a.count.to_string());
            env.insert("SLURM_ARRAY_TASK_MIN".into(), a.min.to_string());
            env.insert("SLURM_ARRAY_TASK_MAX".into(), a.max.to_string());
            env.insert("SLURM_ARRAY_TASK_STEP".into(), a.step.to_string());
        }
        let cmd = api::LaunchJob {
            here: Some(self.node_allocation(here)),
            job: Some(info),
            script: launch.script.clone(),
            argv: launch.argv.clone(),
            env,
            uid: launch.uid,
            gid: launch.gid,
            kill_grace_s: self.settings.kill_grace_s,
            run,
            umask: launch.umask.unwrap_or(DEFAULT_UMASK),
            allocation_only: launch.allocation_only,
            append_output: launch.append_output,
        };
        self.unconfirmed.insert(id, now);
        self.send(node, api::agent_command::What::Launch(cmd));
    }

    /// An agent (re)registers its node: it is up (unless drained) and gets its queue.
    pub fn register(&mut self, req: &api::RegisterRequest, now: Time) -> Result<u32, Refusal> {
        let id = self.node_id(&req.node)?;
        let node = self.sched.cluster().node(id);
        if let Some(t) = &req.topology {
            let cores = t.sockets * t.numa_per_socket * t.cores_per_numa;
            let (want_cores, want_gpus) = (node.topology.core_count(), node.topology.gpu_count());
            if cores < want_cores || (t.gpu_numa.len() as u32) < want_gpus {
                let reason = format!(
                    "agent found {cores} cores and {} GPUs; the cluster description says {want_cores} and {want_gpus}",
                    t.gpu_numa.len()
                );
                tracing::warn!(node = %req.node, %reason, "node drained");
                self.nodes[id.index()].drained = true;
                self.nodes[id.index()].reason = reason.clone();
                self.log(
                    now,
                    &[Entry::NodeState {
                        node: req.node.clone(),
                        state: "drain".into(),
                        reason,
                    }],
                )?;
            }
        }
        let live = &mut self.nodes[id.index()];
        let was_down = live.last_seen.is_none();
        live.last_seen = Some(now);
        if !live.drained {
            live.reason.clear();
        }
        self.sync_node_state(id);
        if was_down {
            tracing::info!(node = %req.node, "agent registered; node up");
        }
        self.publish_node(id, now);
        Ok(self.settings.heartbeat_s)
    }

    /// The agent's command stream; queued commands go first.
    pub fn attach(
        &mut self,
        node: &str,
    ) -> Result<mpsc::UnboundedReceiver<api::AgentCommand>, Refusal> {
        let id = self.node_id(node)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let live = &mut self.nodes[id.index()];
        for cmd in live.queued.drain(..) {
            let _ = tx.send(cmd);
        }
        live.commands = Some(tx);
        Ok(rx)
    }

    /// A heartbeat: the node is alive; its list of jobs is reconciled with the kernel's.
    /// Returns whether resources came back (runs that were completing ended), so a
    /// cycle may start something on them.
    pub fn heartbeat(&mut self, req: &api::HeartbeatRequest, now: Time) -> Result<bool, Refusal> {
        let id = self.node_id(&req.node)?;
        if self.nodes[id.index()].last_seen.is_none() {
            return Err(Refusal::Conflict(format!(
                "node {} is not registered (it was declared DOWN); register again",
                req.node
            )));
        }
        self.nodes[id.index()].last_seen = Some(now);
        // What it says its own parts of running jobs use: kept for sstat, bounded, and
        // only for jobs that run here.
        // Bounded before it is looked at: a node sends one entry per part of a job it
        // runs, so more than the bound is not a node speaking for itself.
        let usage: Vec<api::NodeUsage> = req
            .usage
            .iter()
            .take(MAX_USAGE_PER_NODE)
            .filter(|u| {
                self.sched.job(JobId(u.job_id)).is_some_and(|j| {
                    j.state == JobState::Running
                        && j.allocation
                            .as_ref()
                            .is_some_and(|a| a.nodes.iter().any(|n| n.node == id))
                })
            })
            .cloned()
            .collect();
        self.nodes[id.index()].usage = usage;
        let mut reported = HashSet::new();
        let mut freed = false;
        for j in &req.jobs {
            let job = JobId(j.job_id);
            if !self.is_current_run(job, j.run, id) {
                if j.alive {
                    // Cancelled, requeued or moved while the agent was away (or never
                    // sent here): stop that run there. Another run of the job, here or
                    // elsewhere, is not touched.
                    tracing::info!(job = job.0, run = j.run, node = %req.node, "ending a run that is not the job's current run here");
                    self.send(
                        id,
                        api::agent_command::What::Cancel(api::JobRun {
                            job_id: job.0,
                            run: j.run,
                        }),
                    );
                } else if self.end_completing(job, j.run, id, now)? {
                    freed = true;
                } else {
                    tracing::debug!(job = job.0, run = j.run, node = %req.node, "end of a past run; nothing to settle");
                }
                continue;
            }
            reported.insert(job);
            self.unconfirmed.remove(&job);
            if j.alive && j.timed_out {
                // Past its limit and being ended; the notice may have been lost.
                self.time_limit_reached(job, now)?;
            } else if !j.alive {
                // Ended while nobody listened: settle it now.
                let state = match (j.launch_failed, j.timed_out, j.exit_code) {
                    (true, _, _) => "LAUNCH_FAILED",
                    (false, true, _) => "TIMEOUT",
                    (false, false, Some(_)) => "EXITED",
                    // No exit status: the agent lost the job (it restarted).
                    (false, false, None) => "LOST",
                };
                let report = api::JobReport {
                    node: req.node.clone(),
                    job_id: j.job_id,
                    run: j.run,
                    state: state.into(),
                    exit_code: j.exit_code,
                    message: j.message.clone(),
                    ..Default::default()
                };
                self.report(&report, now)?;
            }
        }
        // Running here per the kernel, but the agent never got it: launch it again (the
        // agent ignores a launch of a run it has or had; `send_launch_from` drops one that
        // stopped meanwhile). Not before two heartbeats: a heartbeat sent before the
        // launch arrived crosses it and does not list the job.
        let crossing = Time::from(self.settings.heartbeat_s).saturating_mul(2);
        let missing: Vec<JobId> = self
            .unconfirmed
            .iter()
            .filter(|(j, &sent)| !reported.contains(*j) && now - sent >= crossing)
            .map(|(&j, _)| j)
            .filter(|&j| self.first_node(j) == Some(id))
            .collect();
        let read = self.prefetch_launches(&missing);
        for j in missing {
            self.send_launch_from(j, now, &read);
        }
        // Completing runs this node no longer has at all (it never got the launch, or
        // settled the end already): their processes are gone. A run told to stop less
        // than two heartbeats ago may be in a command the node has not read yet.
        let settle = Time::from(self.settings.heartbeat_s).saturating_mul(2);
        let listed: HashSet<(u64, u32)> = req.jobs.iter().map(|j| (j.job_id, j.run)).collect();
        let absent: Vec<(JobId, u32)> = self
            .sched
            .completing()
            .iter()
            .filter(|(_, c)| c.held.nodes.first().map(|n| n.node) == Some(id))
            .filter(|(_, c)| now - c.since >= settle)
            .map(|(&k, _)| k)
            .filter(|&(job, run)| !listed.contains(&(job.0, run)))
            .collect();
        for (job, run) in absent {
            freed |= self.end_completing(job, run, id, now)?;
        }
        Ok(freed)
    }

    /// The current run of job `id` passed its time limit; its agent is ending it.
    fn time_limit_reached(&mut self, id: JobId, now: Time) -> Result<(), Refusal> {
        self.log(now, &[Entry::TimedOut { job: id }])?;
        self.sched.time_limit_reached(id, now).map_err(invalid)?;
        tracing::info!(job = id.0, "time limit reached; ending");
        self.publish_job(id, now);
        self.stop_steps_of_ended_jobs();
        Ok(())
    }

    /// Ends `run` of job `id` if it is completing with its processes on `node`: logs it,
    /// gives its resources back. Returns whether it did.
    fn end_completing(
        &mut self,
        id: JobId,
        run: u32,
        node: NodeId,
        now: Time,
    ) -> Result<bool, Refusal> {
        let here = self
            .sched
            .completing()
            .get(&(id, run))
            .and_then(|c| c.held.nodes.first())
            .is_some_and(|n| n.node == node);
        if !here {
            return Ok(false);
        }
        self.log(now, &[Entry::ProcessesGone { job: id, run }])?;
        self.sched.processes_gone(id, run);
        tracing::info!(job = id.0, run, "processes gone; resources released");
        self.publish_job(id, now);
        Ok(true)
    }

    /// A job's run changed state on its node. Only the node running the job's current
    /// run may report it; a report about any other run (a node that was declared down
    /// and came back, a requeued job's earlier run, another node's job) is logged and
    /// ignored, so it can never end the run that is alive now.
    pub fn report(&mut self, r: &api::JobReport, now: Time) -> Result<(), Refusal> {
        let id = JobId(r.job_id);
        let node = self.node_id(&r.node)?;
        let Some(job) = self.sched.job(id) else {
            tracing::warn!(job = r.job_id, node = %r.node, "report about an unknown job ignored");
            return Ok(());
        };
        let usage = Usage {
            user_cpu_s: r.user_cpu_s,
            system_cpu_s: r.system_cpu_s,
            max_rss_mb: r.max_rss_mb,
        };
        // Not ends: that a run is alive, or is being ended at its time limit.
        let notice = matches!(r.state.as_str(), "RUNNING" | "TIMEOUT_ENDING");
        if !self.is_current_run(id, r.run, node) {
            if notice {
                // About a run that ended here already (cancelled meanwhile): its end
                // report, with what it used, is still to come.
                tracing::debug!(job = id.0, run = r.run, state = %r.state, "notice about a past run ignored");
                return Ok(());
            }
            let (requeue_count, state) = (job.requeue_count, job.state);
            let ran_here = requeue_count == r.run && self.first_node(id) == Some(node);
            let terminal = state.is_terminal();
            let gone = self.end_completing(id, r.run, node, now)?;
            if terminal && ran_here {
                // Already ended here (cancelled, node failed): keep what it used.
                self.usage.entry(id).or_insert(usage);
            } else if !gone {
                tracing::warn!(
                    job = id.0,
                    run = r.run,
                    current_run = requeue_count,
                    node = %r.node,
                    state = %r.state,
                    "report about a run that is not the job's current run on this node; ignored"
                );
            }
            return Ok(());
        }
        self.unconfirmed.remove(&id);
        let outcome = match r.state.as_str() {
            "RUNNING" => return Ok(()),
            "TIMEOUT_ENDING" => return self.time_limit_reached(id, now),
            "TIMEOUT" => JobOutcome::Timeout,
            "LOST" => {
                tracing::warn!(job = id.0, node = %r.node, "job lost by its agent");
                JobOutcome::NodeFail
            }
            "LAUNCH_FAILED" => {
                tracing::warn!(job = id.0, node = %r.node, message = %r.message, "launch failed");
                JobOutcome::Exited(r.exit_code.unwrap_or(1))
            }
            _ => JobOutcome::Exited(r.exit_code.unwrap_or(0)),
        };
        let message = bounded(&r.message, MAX_END_MESSAGE);
        self.log(
            now,
            &[Entry::Ended {
                job: id,
                outcome: outcome.into(),
                usage,
                message: message.clone(),
            }],
        )?;
        self.usage.insert(id, usage);
        if !message.is_empty() {
            self.end_messages.insert(id, message);
        }
        self.sched.job_ended(id, now, outcome).map_err(invalid)?;
        self.publish_job(id, now);
        self.stop_steps_of_ended_jobs();
        Ok(())
    }

    // ----- admins ---------------------------------------------------------------------------

    pub fn set_node_state(
        &mut self,
        who: &Caller,
        node: &str,
        state: &str,
        reason: &str,
        now: Time,
    ) -> Result<api::NodeInfo, Refusal> {
        if !who.admin {
            tracing::warn!(caller = %who.user, node, state, "refused: not an admin");
            return Err(Refusal::Denied(format!(
                "{} may not change node states: that needs an admin",
                who.user
            )));
        }
        let id = self.node_id(node)?;
        let drain = match state {
            "drain" => true,
            "resume" | "up" => false,
            other => {
                return Err(Refusal::Invalid(format!(
                    "unknown node state '{other}' (use drain or resume)"
                )))
            }
        };
        if drain && reason.trim().is_empty() {
            return Err(Refusal::Invalid("a drain needs a reason".into()));
        }
        self.log(
            now,
            &[Entry::NodeState {
                node: node.to_string(),
                state: if drain { "drain" } else { "resume" }.into(),
                reason: reason.to_string(),
            }],
        )?;
        let live = &mut self.nodes[id.index()];
        live.drained = drain;
        live.reason = if drain {
            reason.to_string()
        } else {
            String::new()
        };
        self.sync_node_state(id);
        self.publish_node(id, now);
        Ok(self.node_info(id, now))
    }

    pub fn slots(&self) -> Option<&WasmSlots> {
        self.slots.as_ref()
    }

    /// Logs a policy action; the caller has done it on the slots already.
    pub fn log_policy(
        &mut self,
        now: Time,
        entry: Entry,
        bytes: Option<(&str, &[u8])>,
    ) -> Result<(), Refusal> {
        if let Some((sha, b)) = bytes {
            self.journal.queue_component(sha, b)?;
        }
        self.log(now, &[entry])
    }

    // ----- views ------------------------------------------------------------------------------

    /// The plan `squeue --start` shows: waiting jobs' expected starts.
    pub fn plan(&self, now: Time) -> Vec<api::PlannedStart> {
        let cluster = self.sched.cluster();
        self.sched
            .planned_starts(now, PLAN_DEPTH)
            .into_iter()
            .map(|r| api::PlannedStart {
                job_id: r.job.0,
                start: r.start,
                nodes: host_list(cluster, &r.nodes),
            })
            .collect()
    }

    /// `sprio`: the waiting jobs' priorities and the policy's factors, computed now. Runs
    /// the priority policy once on the whole queue, as a cycle does.
    pub fn priority_factors(&mut self, now: Time) -> api::PriorityFactorsReply {
        let b = self.sched.priority_breakdown(now);
        let (factors, error) = match b.factors {
            Ok(f) => (f, String::new()),
            Err(e) => {
                tracing::warn!(error = %e, "priority breakdown refused");
                (Vec::new(), e.to_string())
            }
        };
        let cluster = self.sched.cluster();
        let jobs = b
            .jobs
            .iter()
            .enumerate()
            .filter_map(|(i, &id)| {
                let job = self.sched.job(id)?;
                Some(api::JobPriority {
                    job_id: id.0,
                    array_job_id: job.array.map_or(0, |a| a.array_job.0),
                    array_task_id: job.array.map_or(0, |a| a.index),
                    user: cluster.users[job.user.index()].clone(),
                    account: cluster.accounts[job.account.index()].name.clone(),
                    partition: cluster.partition(job.partition).name.clone(),
                    qos: cluster.qos[job.qos.index()].name.clone(),
                    priority: b.priority[i],
                    nice: b.nice[i],
                    factors: factors.iter().map(|f| f.values[i]).collect(),
                    uid: self.submissions.get(&id).map_or(0, |l| l.uid),
                })
            })
            .collect();
        api::PriorityFactorsReply {
            factors: factors
                .into_iter()
                .map(|f| api::PriorityFactor {
                    name: f.name,
                    weight: f.weight,
                })
                .collect(),
            jobs,
            error,
            at: now,
        }
    }

    /// `sbatch --test-only`: the submission checked as `submit` checks it, and when and
    /// where it would start after every waiting job. Nothing is stored.
    pub fn test_only(
        &self,
        who: &Caller,
        sub: api::JobSubmission,
        now: Time,
    ) -> Result<api::TestOnlyReply, Refusal> {
        let (spec, _) = spec_from(who, sub, &self.settings.limits)?;
        let cluster = self.sched.cluster();
        let cpus = u64::from(spec.request.tasks) * u64::from(spec.request.cpus_per_task);
        let (partition, planned) = self
            .sched
            .test_only(&spec, now, PLAN_DEPTH)
            .map_err(invalid)?;
        let partition = cluster.partition(partition).name.clone();
        Ok(match planned {
            Some(r) => api::TestOnlyReply {
                start: r.start,
                nodes: host_list(cluster, &r.nodes),
                partition,
                cpus,
            },
            None => api::TestOnlyReply {
                partition,
                cpus,
                ..Default::default()
            },
        })
    }

    /// `sstat`: what a running job's batch script and steps use now, summed over the
    /// nodes' last heartbeats.
    pub fn job_stats(&self, who: &Caller, id: JobId) -> Result<Vec<api::StepStats>, Refusal> {
        let job = self.owned(who, id)?;
        if job.state != JobState::Running {
            return Err(Refusal::Conflict(format!(
                "job {} is not running: sstat shows running jobs (sacct, finished ones)",
                id.0
            )));
        }
        let cluster = self.sched.cluster();
        let mut by_step: std::collections::BTreeMap<Option<u32>, api::StepStats> =
            Default::default();
        for n in job.allocation.iter().flat_map(|a| &a.nodes) {
            let name = &cluster.node(n.node).name;
            for u in self.nodes[n.node.index()]
                .usage
                .iter()
                .filter(|u| u.job_id == id.0)
            {
                let s = by_step.entry(u.step_id).or_insert_with(|| api::StepStats {
                    step_id: u.step_id,
                    ..Default::default()
                });
                s.cpu_s += u.cpu_s;
                s.total_rss_mb += u.rss_mb;
                s.tasks += u.tasks;
                s.nodes += 1;
                if u.rss_mb >= s.max_rss_mb {
                    s.max_rss_mb = u.rss_mb;
                    s.max_rss_node = name.clone();
                }
            }
        }
        Ok(by_step.into_values().collect())
    }

    /// The cluster's name (`cluster_name`).
    pub fn cluster_name(&self) -> &str {
        &self.settings.cluster_name
    }

    /// What the last cycle decided.
    pub fn last_cycle(&self) -> CycleSummary {
        self.last_cycle
    }

    pub fn scheduler(&self) -> &Scheduler {
        &self.sched
    }

    pub fn subscribe(&self) -> broadcast::Receiver<api::Event> {
        self.events.subscribe()
    }

    /// Sends an event to every watcher. Built only when someone watches: a send to no
    /// one drops it, and a submission storm publishes one per job.
    fn publish(&self, now: Time, what: impl FnOnce() -> Option<api::event::What>) {
        if self.events.receiver_count() == 0 {
            return;
        }
        if let Some(what) = what() {
            let _ = self.events.send(api::Event {
                time: now,
                what: Some(what),
            });
        }
    }

    fn publish_job(&self, id: JobId, now: Time) {
        self.publish(now, || {
            let job = self.sched.job(id)?;
            Some(api::event::What::Job(self.job_info(job)))
        });
    }

    fn publish_node(&self, id: NodeId, now: Time) {
        self.publish(now, || {
            Some(api::event::What::Node(self.node_info(id, now)))
        });
    }

    fn node_allocation(&self, n: &gantry_kernel::job::NodeAllocation) -> api::NodeAllocation {
        api::NodeAllocation {
            node: self.sched.cluster().node(n.node).name.clone(),
            tasks: n.tasks,
            cores: n.cores.ones().map(|c| c as u32).collect(),
            memory_mb: n.memory_mb,
            gpus: gantry_kernel::topology::ones(n.gpus)
                .map(|g| g as u32)
                .collect(),
        }
    }

    /// Whether `who` may see the details of job `id`.
    pub fn may_see(&self, who: &Caller, job: &Job) -> bool {
        who.admin || self.sched.cluster().users[job.user.index()] == who.user
    }

    /// The job as `who` may see it: in full for its owner and admins; for anyone else
    /// what `squeue` shows of other users' jobs — no paths, no dependencies, no
    /// allocation details, no reason beyond the scheduler's own words.
    pub fn job_view(&self, who: &Caller, job: &Job) -> api::JobInfo {
        let mut info = self.job_info(job);
        if !self.may_see(who, job) {
            info.workdir.clear();
            info.stdout_path.clear();
            info.stderr_path.clear();
            info.dependency.clear();
            info.allocation.clear();
            info.comment.clear();
            if self.end_messages.contains_key(&job.id) {
                info.reason = reason_text(job);
            }
        }
        info
    }

    /// The state users see: Slurm's COMPLETING for an ended job whose processes are not
    /// yet gone.
    pub fn shown_state(&self, job: &Job) -> &'static str {
        if job.state.is_terminal() && self.sched.is_completing(job.id) {
            "COMPLETING"
        } else {
            job.state.slurm_name()
        }
    }

    pub fn job_info(&self, job: &Job) -> api::JobInfo {
        let cluster = self.sched.cluster();
        let user = cluster.users[job.user.index()].clone();
        let launch = self.submissions.get(&job.id);
        let nodes: Vec<String> = job
            .allocation
            .as_ref()
            .map(|a| {
                a.nodes
                    .iter()
                    .map(|n| cluster.node(n.node).name.clone())
                    .collect()
            })
            .unwrap_or_default();
        let workdir = launch.map(|l| l.workdir.clone()).unwrap_or_default();
        let first = nodes.first().cloned().unwrap_or_default();
        let pattern = |p: Option<&String>| match p {
            Some(p) if !p.is_empty() => p.clone(),
            _ => default_output(job).to_string(),
        };
        let out_pattern = pattern(launch.map(|l| &l.output));
        let err_pattern = match launch.map(|l| &l.error) {
            Some(e) if !e.is_empty() => e.clone(),
            _ => out_pattern.clone(),
        };
        api::JobInfo {
            job_id: job.id.0,
            array_job_id: job.array.map_or(0, |a| a.array_job.0),
            array_task_id: job.array.map_or(0, |a| a.index),
            name: job.name.clone(),
            user: user.clone(),
            account: cluster.accounts[job.account.index()].name.clone(),
            partition: cluster.partition(job.partition).name.clone(),
            qos: cluster.qos[job.qos.index()].name.clone(),
            state: self.shown_state(job).to_string(),
            reason: match self.end_messages.get(&job.id) {
                Some(m) if job.state.is_terminal() => m.clone(),
                _ => reason_text(job),
            },
            priority: job.priority,
            submit_time: job.submit_time,
            start_time: job.start_time.unwrap_or(0),
            end_time: job.end_time.unwrap_or(0),
            time_limit_s: job.time_limit.unwrap_or(0),
            tasks: job.shape.tasks,
            cpus_per_task: job.shape.cpus_per_task,
            nodes: job
                .allocation
                .as_ref()
                .map_or(job.shape.nodes.unwrap_or(1), |a| a.nodes.len() as u32),
            cores: job.shape.cores(),
            gpus: job.shape.gpus(),
            allocation: job
                .allocation
                .as_ref()
                .map(|a| a.nodes.iter().map(|n| self.node_allocation(n)).collect())
                .unwrap_or_default(),
            node_list: compress_hostlist(&nodes),
            exit_code: job.exit_code,
            stdout_path: output_path(&out_pattern, job, &user, &first, &workdir),
            stderr_path: output_path(&err_pattern, job, &user, &first, &workdir),
            workdir,
            dependency: match self.dependency_texts.get(&job.id) {
                Some(d) => d.clone(),
                None => launch.map(|l| l.dependency.clone()).unwrap_or_default(),
            },
            requeue_count: job.requeue_count,
            suspended_s: job.suspended_for,
            steps: self.step_infos(job.id),
            allocation_only: launch.is_some_and(|l| l.allocation_only),
            comment: self.comment(job.id).to_string(),
            wckey: launch.map(|l| l.wckey.clone()).unwrap_or_default(),
            begin_time: job.begin_time.unwrap_or(0),
            uid: launch.map_or(0, |l| l.uid),
            gid: launch.map_or(0, |l| l.gid),
            nice: job.nice,
            reservation: job
                .reservation
                .and_then(|r| self.sched.reservation(r))
                .map(|r| r.name.clone())
                .unwrap_or_default(),
            array_throttle: job
                .array
                .and_then(|a| self.sched.array_throttle(a.array_job))
                .unwrap_or(0),
        }
    }

    /// Every partition, as `sinfo` and `scontrol show partition` show them.
    pub fn partition_infos(&self) -> Vec<api::PartitionInfo> {
        let cluster = self.sched.cluster();
        cluster
            .partitions
            .iter()
            .map(|p| api::PartitionInfo {
                name: p.name.clone(),
                is_default: cluster.default_partition == Some(p.id),
                max_time_s: p.max_time.unwrap_or(0),
                default_time_s: p.default_time.or(p.max_time).unwrap_or(0),
                max_nodes: p.max_nodes.unwrap_or(0),
                priority_tier: p.priority_tier,
                default_qos: cluster.qos[p.default_qos.index()].name.clone(),
                nodes: p
                    .nodes
                    .iter()
                    .map(|&n| cluster.node(n).name.clone())
                    .collect(),
                requeue_on_node_fail: p.requeue_on_node_fail,
            })
            .collect()
    }

    pub fn node_info(&self, id: NodeId, now: Time) -> api::NodeInfo {
        let cluster = self.sched.cluster();
        let node = cluster.node(id);
        let live = &self.nodes[id.index()];
        let t = &node.topology;
        let cores_alloc = t.core_count() - node.free.core_count;
        let gpus_alloc = t.gpu_count() - node.free.gpus.count_ones();
        let busy = cores_alloc > 0 || gpus_alloc > 0;
        let state = match (node.state, busy) {
            (NodeState::Down, _) => "DOWN",
            (NodeState::Drained, true) => "DRAINING",
            (NodeState::Drained, false) => "DRAINED",
            (NodeState::Up, false) => "IDLE",
            (NodeState::Up, true) if cores_alloc == t.core_count() => "ALLOCATED",
            (NodeState::Up, true) => "MIXED",
        };
        let (reservations, maintenance) = self.node_reservations(id, now);
        // Slurm's display: an up node in a maintenance reservation is MAINT; an idle one
        // in any other open reservation RESERVED.
        let state = match (node.state, maintenance, state, reservations.is_empty()) {
            (NodeState::Up, true, _, _) => "MAINT",
            (NodeState::Up, false, "IDLE", false) => "RESERVED",
            _ => state,
        };
        api::NodeInfo {
            reservations,
            maintenance,
            name: node.name.clone(),
            addr: node.addr.clone(),
            state: state.into(),
            reason: live.reason.clone(),
            cores: t.core_count(),
            cores_allocated: cores_alloc,
            memory_mb: t.memory_mb(),
            memory_allocated_mb: t.memory_mb() - node.free.memory_mb,
            gpus: t.gpu_count(),
            gpus_allocated: gpus_alloc,
            partitions: node
                .partitions
                .iter()
                .map(|&p| cluster.partition(p).name.clone())
                .collect(),
            features: cluster
                .feature_names
                .iter()
                .enumerate()
                .filter(|(i, _)| node.features & (1 << i) != 0)
                .map(|(_, f)| f.clone())
                .collect(),
            last_heartbeat_age_s: live.last_seen.map_or(-1, |s| (now - s).max(0)),
        }
    }

    pub fn usage(&self, id: JobId) -> Usage {
        self.usage.get(&id).copied().unwrap_or_default()
    }
}

fn reason_text(job: &Job) -> String {
    if job.state.is_waiting() {
        job.reason.slurm_name().into()
    } else {
        "None".into()
    }
}

/// Refuses a submission larger than the limits, before anything is parsed or built.
fn check_bounds(sub: &api::JobSubmission, limits: &Limits) -> Result<(), Refusal> {
    if sub.script.len() > limits.max_script_bytes {
        return Err(invalid(format!(
            "the batch script is {} bytes; this cluster takes scripts of at most {} bytes (max_script_bytes)",
            sub.script.len(),
            limits.max_script_bytes
        )));
    }
    let env_bytes: usize = sub
        .env
        .iter()
        .map(|(k, v)| k.len() + v.len() + 2)
        .sum::<usize>()
        + sub.argv.iter().map(|a| a.len() + 1).sum::<usize>();
    if env_bytes > limits.max_script_bytes {
        return Err(invalid(format!(
            "the job's environment and command line are {env_bytes} bytes; this cluster takes at most {} bytes (max_script_bytes); submit with --export=NONE or fewer variables",
            limits.max_script_bytes
        )));
    }
    // Each reaches the job's environment or a system call, where a NUL cannot go.
    let texts = [
        ("job name", &sub.name, MAX_NAME_BYTES),
        ("account", &sub.account, MAX_NAME_BYTES),
        ("partition", &sub.partition, MAX_NAME_BYTES),
        ("qos", &sub.qos, MAX_NAME_BYTES),
        ("node list", &sub.nodelist, MAX_PATH_BYTES),
        ("excluded node list", &sub.exclude, MAX_PATH_BYTES),
        ("working directory", &sub.workdir, MAX_PATH_BYTES),
        ("output pattern", &sub.output, MAX_PATH_BYTES),
        ("error pattern", &sub.error, MAX_PATH_BYTES),
        ("comment", &sub.comment, MAX_COMMENT_BYTES),
        ("wckey", &sub.wckey, MAX_NAME_BYTES),
    ];
    for (what, text, max) in texts {
        if text.len() > max {
            return Err(invalid(format!(
                "the {what} is {} bytes long; at most {max} are taken",
                text.len()
            )));
        }
        if text.contains('\0') {
            return Err(invalid(format!("the {what} holds a NUL byte")));
        }
    }
    if sub.features.len() > MAX_LIST_ITEMS || sub.gres.len() > MAX_LIST_ITEMS {
        return Err(invalid(format!(
            "at most {MAX_LIST_ITEMS} features and {MAX_LIST_ITEMS} generic resources may be asked for"
        )));
    }
    if sub.features.iter().any(|f| f.len() > MAX_NAME_BYTES)
        || sub.gres.iter().any(|g| g.name.len() > MAX_NAME_BYTES)
    {
        return Err(invalid(format!(
            "a feature or resource name is longer than {MAX_NAME_BYTES} bytes"
        )));
    }
    if sub.array.len() > gantry_kernel::job::MAX_ARRAY_TEXT {
        return Err(invalid(format!(
            "the --array text is longer than {} characters",
            gantry_kernel::job::MAX_ARRAY_TEXT
        )));
    }
    // Count the job ids before parsing them: `afterok:1:2:...` with a million ids is
    // refused without building a million-entry list.
    let named = sub
        .dependency
        .split([',', ':', '?'])
        .filter(|p| p.trim().parse::<u64>().is_ok())
        .count();
    if named > limits.max_dependencies {
        return Err(invalid(format!(
            "the job depends on {named} jobs; at most {} are taken (max_dependencies): depend on an array by its id instead of each task",
            limits.max_dependencies
        )));
    }
    Ok(())
}

/// The kernel's job and the launch details from a submission, checked.
fn spec_from(
    who: &Caller,
    sub: api::JobSubmission,
    limits: &Limits,
) -> Result<(JobSpec, Launch), Refusal> {
    if sub.script.is_empty() && sub.argv.is_empty() && !sub.allocation_only {
        return Err(invalid("a job needs a batch script or a command"));
    }
    if sub.allocation_only && !(sub.script.is_empty() && sub.argv.is_empty()) {
        return Err(invalid(
            "an allocation for steps (srun, salloc) carries no script or command",
        ));
    }
    check_bounds(&sub, limits)?;
    if !sub.workdir.starts_with('/') {
        return Err(invalid(format!(
            "the working directory must be an absolute path, not '{}'",
            sub.workdir
        )));
    }
    let some = |s: String| (!s.trim().is_empty()).then(|| s.trim().to_string());
    let memory = match (sub.mem_per_node_mb, sub.mem_per_cpu_mb) {
        (_, c) if sub.mem_whole_node && c > 0 => {
            return Err(invalid("give --mem=0 or --mem-per-cpu, not both"))
        }
        _ if sub.mem_whole_node => MemoryRequest::WholeNode,
        (0, 0) => MemoryRequest::None,
        (n, 0) => MemoryRequest::PerNode(n),
        (0, c) => MemoryRequest::PerCpu(c),
        _ => return Err(invalid("give memory per node or per CPU, not both")),
    };
    let gpus = match (sub.gpus_per_node, sub.gpus_per_job) {
        (0, 0) => GpuRequest::None,
        (n, 0) => GpuRequest::PerNode(n),
        (0, j) => GpuRequest::PerJob(j),
        _ => return Err(invalid("give GPUs per node or per job, not both")),
    };
    // A host list names at most as many nodes as the cluster has; more is an error
    // before anything is built.
    let hosts = |what: &str, list: &str| -> Result<Vec<String>, Refusal> {
        if list.trim().is_empty() {
            return Ok(Vec::new());
        }
        gantry_kernel::units::expand_hostlist_at_most(list.trim(), MAX_NODELIST_NAMES)
            .map_err(|e| invalid(format!("--{what}: {e}")))
    };
    let request = ResourceRequest {
        nodes: (sub.nodes > 0).then_some(sub.nodes),
        tasks: sub.tasks.max(1),
        cpus_per_task: sub.cpus_per_task.max(1),
        memory,
        gpus,
        gres: sub.gres.iter().map(|g| (g.name.clone(), g.count)).collect(),
        exclusive: sub.exclusive,
        features: sub.features.clone(),
        nodelist: hosts("nodelist", &sub.nodelist)?,
        exclude: hosts("exclude", &sub.exclude)?,
    };
    let name = some(sub.name.clone()).unwrap_or_else(|| {
        sub.argv
            .first()
            .map(|a| a.rsplit('/').next().unwrap_or(a).to_string())
            .unwrap_or_else(|| "sbatch".into())
    });
    let mut spec = JobSpec::new(name, who.user.clone(), request);
    spec.account = some(sub.account);
    spec.partition = some(sub.partition);
    spec.qos = some(sub.qos);
    if sub.time_limit_s < 0 && sub.time_limit_s != api::TIME_UNLIMITED {
        return Err(invalid("the time limit must be positive"));
    }
    spec.time_limit = (sub.time_limit_s > 0).then_some(sub.time_limit_s);
    spec.time_unlimited = sub.time_limit_s == api::TIME_UNLIMITED;
    if let Some(a) = some(sub.array) {
        spec.array = Some(ArraySpec::parse(&a).map_err(invalid)?);
    }
    if let Some(d) = some(sub.dependency.clone()) {
        spec.dependencies = parse_dependencies(&d).map_err(invalid)?;
    }
    spec.requeue = sub.requeue;
    spec.hold = sub.hold;
    if let Some(r) = some(sub.reservation.clone()) {
        if r.len() > gantry_kernel::reservation::MAX_NAME_BYTES || r.chars().any(char::is_control) {
            return Err(invalid("--reservation: not a reservation name"));
        }
        spec.reservation = Some(r);
    }
    // Slurm's bound; a negative nice (a higher priority) is an admin's to give.
    if sub.nice.unsigned_abs() > 2_147_483_645 {
        return Err(invalid("--nice: at most ±2147483645"));
    }
    if sub.nice < 0 && !who.admin {
        return Err(Refusal::Denied(
            "--nice: only an administrator may give a negative adjustment".into(),
        ));
    }
    spec.nice = sub.nice;
    spec.deadline = (sub.deadline > 0).then_some(sub.deadline);
    spec.begin = (sub.begin_time > 0).then_some(sub.begin_time);
    let warn_signal = match sub.warn_signal {
        Some(w) if !(1..=64).contains(&w.signal) => {
            return Err(invalid(format!(
                "--signal: {} is not a signal number",
                w.signal
            )))
        }
        Some(w) if w.seconds > 65_535 => {
            return Err(invalid(
                "--signal: at most 65535 seconds before the time limit",
            ))
        }
        Some(w) => Some(crate::store::WarnSignal {
            signal: w.signal,
            seconds: w.seconds,
            batch_only: w.batch_only,
        }),
        None => None,
    };
    let mut env: Vec<(String, String)> = sub.env.into_iter().collect();
    env.sort();
    let launch = Launch {
        script: sub.script,
        argv: sub.argv,
        workdir: sub.workdir,
        env,
        // The holder of a bare allocation writes nothing: no slurm-%j.out for it.
        output: if sub.allocation_only && sub.output.is_empty() {
            "/dev/null".into()
        } else {
            sub.output
        },
        error: sub.error,
        uid: who.uid,
        gid: who.gid,
        dependency: sub.dependency,
        umask: sub.umask.map(|m| m & 0o777),
        allocation_only: sub.allocation_only,
        comment: sub.comment,
        wckey: sub.wckey,
        warn_signal,
        append_output: sub.append_output,
    };
    Ok((spec, launch))
}
