//! Job steps in the controller: starting one inside a running job's allocation (the
//! kernel's [`place_step`] decides where), telling each node's agent its tasks,
//! following the nodes' ends, and ending steps whose job ended.
//!
//! A step's tasks' output does not pass through here: agents stream it to the service,
//! which hands it to the `srun` that started the step through the step's [`Relay`],
//! outside the controller's lock. The controller only registers and retires relays, and
//! answers the few questions that need its state (is this node in that step; which of
//! its tasks may it speak for).

use std::collections::HashMap;
use std::sync::Mutex;

use gantry_api as api;
use gantry_kernel::cluster::NodeId;
use gantry_kernel::job::JobState;
use gantry_kernel::step::{
    place_step, Distribution, GpuBind, Held, StepError, StepLayout, StepRequest,
};
use gantry_kernel::units::{compress_counts, compress_hostlist, expand_hostlist_at_most};
use gantry_kernel::{JobId, Time};
use tokio::sync::{mpsc, oneshot};

use super::{
    bounded, invalid, job_run, Caller, Controller, Refusal, DEFAULT_UMASK, MAX_NAME_BYTES,
    MAX_NODELIST_NAMES, MAX_PATH_BYTES,
};
use crate::store::{Entry, StepState};

/// The most steps one job may start (Slurm's `MaxStepCount` default is 40,000).
pub const MAX_STEPS_PER_JOB: u32 = 40_000;

/// A step of a job, running or ended.
#[derive(Debug)]
pub struct Step {
    pub id: u32,
    pub name: String,
    pub state: StepState,
    pub start: Time,
    pub end: Option<Time>,
    /// In step order (`SLURM_NODEID`).
    pub nodes: Vec<NodeId>,
    pub tasks: u32,
    pub exit_code: Option<i32>,
    pub cpu_s: f64,
    /// While it runs: what each node's part is, for checking what a node says.
    running: Option<Box<RunningStep>>,
}

#[derive(Debug)]
struct RunningStep {
    /// Task ids per node, as [`Step::nodes`].
    tasks_on: Vec<Vec<u32>>,
    /// What it holds (nothing for an overlapping step).
    held: Vec<Held>,
    /// Nodes whose tasks have not all ended.
    waiting_on: Vec<NodeId>,
    /// The highest task exit code so far.
    worst: i32,
    cancelled: bool,
    node_failed: bool,
    kill_on_bad_exit: bool,
    /// The node of task 0, which reads standard input.
    stdin_node: Option<NodeId>,
}

/// A job's steps.
#[derive(Debug, Default)]
pub struct JobSteps {
    next: u32,
    pub steps: Vec<Step>,
}

/// Where a running step's events go: the `srun` that started it.
pub struct Relay {
    pub events: mpsc::Sender<api::StepEvent>,
    /// The step's end, sent after every node's output.
    pub end: oneshot::Sender<api::StepEnded>,
}

/// The relays of running steps, shared with the service (which reads them without the
/// controller's lock).
#[derive(Default)]
pub struct Relays(Mutex<HashMap<(JobId, u32), Relay>>);

impl Relays {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(JobId, u32), Relay>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where a node's stream for the step sends its events, while the step runs.
    pub fn events(&self, job: JobId, step: u32) -> Option<mpsc::Sender<api::StepEvent>> {
        self.lock().get(&(job, step)).map(|r| r.events.clone())
    }

    fn insert(&self, job: JobId, step: u32, relay: Relay) {
        self.lock().insert((job, step), relay);
    }

    fn finish(&self, job: JobId, step: u32, ended: api::StepEnded) {
        if let Some(r) = self.lock().remove(&(job, step)) {
            // The srun may be gone already; nothing waits then.
            let _ = r.end.send(ended);
        }
    }
}

/// What a node may say about a step: which of its tasks are its own.
pub struct NodePart {
    pub tasks: Vec<u32>,
}

fn distribution(d: i32) -> Distribution {
    match api::Distribution::try_from(d) {
        Ok(api::Distribution::Cyclic) => Distribution::Cyclic,
        _ => Distribution::Block,
    }
}

impl Controller {
    /// The most bytes a request's command line or environment may hold.
    pub fn max_request_bytes(&self) -> usize {
        self.settings.limits.max_script_bytes
    }

    /// The relays of running steps (the service hands output through them).
    pub fn relays(&self) -> std::sync::Arc<Relays> {
        self.relays.clone()
    }

    /// A job's steps, in id order.
    pub fn steps_of(&self, job: JobId) -> &[Step] {
        self.steps.get(&job).map_or(&[], |s| &s.steps)
    }

    fn node_names(&self, list: &str, what: &str) -> Result<Vec<NodeId>, Refusal> {
        if list.trim().is_empty() {
            return Ok(Vec::new());
        }
        let names = expand_hostlist_at_most(list.trim(), MAX_NODELIST_NAMES)
            .map_err(|e| invalid(format!("--{what}: {e}")))?;
        names.iter().map(|n| self.node_id(n)).collect()
    }

    /// Starts a step of a running job. `Ok(None)`: other steps hold what it needs (it
    /// may be asked again once they end). The step is logged before any agent hears of
    /// it, and its relay registered before its tasks can speak.
    pub fn start_step(
        &mut self,
        who: &Caller,
        req: &api::StepRequest,
        relay: &mut Option<Relay>,
        now: Time,
    ) -> Result<Option<api::StepStarted>, Refusal> {
        let id = JobId(req.job_id);
        let job = self.owned(who, id)?;
        if job.state != JobState::Running {
            return Err(Refusal::Conflict(format!(
                "Job {} is not running (it is {}): no step can start in it",
                id.0,
                self.shown_state(job)
            )));
        }
        if req.argv.is_empty() {
            return Err(invalid("a step needs a command"));
        }
        if !req.workdir.starts_with('/') {
            return Err(invalid(format!(
                "the working directory must be an absolute path, not '{}'",
                req.workdir
            )));
        }
        // Without -c a task gets the job's CPUs per task, and the step is not exact.
        let cpus_per_task = match req.cpus_per_task {
            0 => job.shape.cpus_per_task.max(1),
            n => n,
        };
        let request = StepRequest {
            nodes: req.nodes,
            tasks: req.tasks,
            tasks_per_node: req.tasks_per_node,
            cpus_per_task,
            gpus_per_task: req.gpus_per_task,
            only_nodes: self.node_names(&req.nodelist, "nodelist")?,
            excluded_nodes: self.node_names(&req.exclude, "exclude")?,
            exact: req.exact || req.cpus_per_task > 0,
            overlap: req.overlap,
            distribution: distribution(req.distribution),
            gpu_bind: match api::GpuBind::try_from(req.gpu_bind) {
                Ok(api::GpuBind::None) => GpuBind::None,
                Ok(api::GpuBind::Closest) => GpuBind::Closest,
                _ => GpuBind::Default,
            },
        };
        let Some(alloc) = job.allocation.clone() else {
            return Err(Refusal::Conflict(format!("job {} holds nothing", id.0)));
        };
        let held: Vec<Held> = self
            .steps_of(id)
            .iter()
            .filter_map(|s| s.running.as_ref())
            .flat_map(|r| r.held.iter().cloned())
            .collect();
        let cluster = self.sched.cluster();
        let layout = match place_step(
            &alloc,
            |n| cluster.node(n).topology.as_ref(),
            &held,
            &request,
        ) {
            Ok(l) => l,
            Err(StepError::Busy) => return Ok(None),
            Err(e) => {
                return Err(Refusal::Conflict(format!(
                    "Unable to create step for job {}: {e}",
                    id.0
                )))
            }
        };
        let steps = self.steps.entry(id).or_default();
        if steps.next >= MAX_STEPS_PER_JOB {
            return Err(Refusal::Conflict(format!(
                "Unable to create step for job {}: it started {MAX_STEPS_PER_JOB} steps already",
                id.0
            )));
        }
        let step_id = steps.next;
        let name = if req.name.trim().is_empty() {
            req.argv[0].rsplit('/').next().unwrap_or("step").to_string()
        } else {
            req.name.trim().to_string()
        };
        let name = bounded(&name, MAX_NAME_BYTES);
        let names: Vec<String> = layout
            .nodes
            .iter()
            .map(|n| cluster.node(n.node).name.clone())
            .collect();
        // Everything that may fail comes before the log: a logged step is a started one.
        let launches = self.step_launches(id, step_id, req, cpus_per_task, &layout, &names)?;
        self.log(
            now,
            &[Entry::StepStarted {
                job: id,
                step: step_id,
                name: name.clone(),
                nodes: names.clone(),
                tasks: layout.tasks,
            }],
        )?;
        if let Some(relay) = relay.take() {
            self.relays.insert(id, step_id, relay);
        }
        let stdin_node = layout
            .nodes
            .iter()
            .find(|n| n.tasks.iter().any(|t| t.task == 0))
            .map(|n| n.node);
        self.with_running_steps.insert(id);
        let steps = self.steps.entry(id).or_default();
        steps.next = step_id + 1;
        steps.steps.push(Step {
            id: step_id,
            name,
            state: StepState::Running,
            start: now,
            end: None,
            nodes: layout.nodes.iter().map(|n| n.node).collect(),
            tasks: layout.tasks,
            exit_code: None,
            cpu_s: 0.0,
            running: Some(Box::new(RunningStep {
                tasks_on: layout
                    .nodes
                    .iter()
                    .map(|n| n.tasks.iter().map(|t| t.task).collect())
                    .collect(),
                held: layout.held(),
                waiting_on: layout.nodes.iter().map(|n| n.node).collect(),
                worst: 0,
                cancelled: false,
                node_failed: false,
                kill_on_bad_exit: req.kill_on_bad_exit,
                stdin_node,
            })),
        });
        for (node, launch) in launches {
            self.send(node, api::agent_command::What::LaunchStep(launch));
        }
        tracing::info!(job = id.0, step = step_id, tasks = layout.tasks, nodes = %compress_hostlist(&names), "step started");
        Ok(Some(api::StepStarted {
            step_id,
            node_list: compress_hostlist(&names),
            nodes: layout
                .nodes
                .iter()
                .zip(&names)
                .map(|(n, name)| api::StepNodeInfo {
                    node: name.clone(),
                    tasks: n.tasks.iter().map(|t| t.task).collect(),
                })
                .collect(),
            tasks: layout.tasks,
        }))
    }

    /// Each node's launch command: the step-wide environment (the caller's, with Slurm's
    /// variables for the job and the step) and that node's tasks.
    fn step_launches(
        &self,
        id: JobId,
        step_id: u32,
        req: &api::StepRequest,
        cpus_per_task: u32,
        layout: &StepLayout,
        names: &[String],
    ) -> Result<Vec<(NodeId, api::LaunchStep)>, Refusal> {
        let job = self
            .sched
            .job(id)
            .ok_or_else(|| Refusal::NotFound(format!("no job {}", id.0)))?;
        let info = self.job_info(job);
        let launch = self.launch(id).map_err(Refusal::Conflict)?;
        let mut env: HashMap<String, String> = req.env.clone();
        // What a task must not inherit from the caller: the batch step's own values.
        env.retain(|k, _| !k.starts_with("SLURM_STEP") && k != "CUDA_VISIBLE_DEVICES");
        let per_node: Vec<u32> = layout.nodes.iter().map(|n| n.tasks.len() as u32).collect();
        let job_per_node: Vec<u32> = info
            .allocation
            .iter()
            .map(|n| n.cores.len() as u32)
            .collect();
        let job_tasks: Vec<u32> = info.allocation.iter().map(|n| n.tasks).collect();
        let step_nodes = compress_hostlist(names);
        let mut set = |k: &str, v: String| {
            env.insert(k.to_string(), v);
        };
        set("SLURM_JOB_ID", id.0.to_string());
        set("SLURM_JOBID", id.0.to_string());
        set("GANTRY_JOB_ID", id.0.to_string());
        set("SLURM_STEP_ID", step_id.to_string());
        set("SLURM_STEPID", step_id.to_string());
        set("SLURM_JOB_NAME", info.name.clone());
        set("SLURM_JOB_USER", info.user.clone());
        set("SLURM_JOB_UID", launch.uid.to_string());
        set("SLURM_JOB_GID", launch.gid.to_string());
        set("SLURM_JOB_ACCOUNT", info.account.clone());
        set("SLURM_JOB_PARTITION", info.partition.clone());
        set("SLURM_JOB_QOS", info.qos.clone());
        set("SLURM_JOB_NODELIST", info.node_list.clone());
        set("SLURM_JOB_NUM_NODES", info.nodes.to_string());
        set("SLURM_JOB_CPUS_PER_NODE", compress_counts(&job_per_node));
        set("SLURM_SUBMIT_DIR", info.workdir.clone());
        if job.array.is_some() {
            set("SLURM_ARRAY_JOB_ID", info.array_job_id.to_string());
            set("SLURM_ARRAY_TASK_ID", info.array_task_id.to_string());
        }
        set("SLURM_NODELIST", step_nodes.clone());
        set("SLURM_STEP_NODELIST", step_nodes);
        set("SLURM_NNODES", layout.nodes.len().to_string());
        set("SLURM_STEP_NUM_NODES", layout.nodes.len().to_string());
        set("SLURM_NTASKS", layout.tasks.to_string());
        set("SLURM_NPROCS", layout.tasks.to_string());
        set("SLURM_STEP_NUM_TASKS", layout.tasks.to_string());
        set("SLURM_STEP_TASKS_PER_NODE", compress_counts(&per_node));
        set("SLURM_TASKS_PER_NODE", compress_counts(&per_node));
        set("SLURM_CPUS_PER_TASK", cpus_per_task.to_string());
        if let Some(k) = req.tasks_per_node {
            set("SLURM_NTASKS_PER_NODE", k.to_string());
        } else if job_tasks.windows(2).all(|w| w[0] == w[1]) && !job_tasks.is_empty() {
            // Uniform jobs tell their steps the job's figure (torchrun reads it).
            env.entry("SLURM_NTASKS_PER_NODE".into())
                .or_insert_with(|| job_tasks[0].to_string());
        }
        if req.gpus_per_task > 0 {
            env.insert("SLURM_GPUS_PER_TASK".into(), req.gpus_per_task.to_string());
        }
        env.insert(
            "SLURM_DISTRIBUTION".into(),
            match distribution(req.distribution) {
                Distribution::Block => "block",
                Distribution::Cyclic => "cyclic",
            }
            .into(),
        );
        env.insert(
            "SLURM_UMASK".into(),
            format!("{:04o}", req.umask.unwrap_or(DEFAULT_UMASK) & 0o777),
        );
        let has_stdin_node = layout
            .nodes
            .iter()
            .position(|n| n.tasks.iter().any(|t| t.task == 0));
        let mut out = Vec::with_capacity(layout.nodes.len());
        for (k, n) in layout.nodes.iter().enumerate() {
            let job_cores = job
                .allocation
                .as_ref()
                .and_then(|a| a.nodes.iter().find(|x| x.node == n.node))
                .map(|a| a.cores.ones().map(|c| c as u32).collect())
                .unwrap_or_default();
            out.push((
                n.node,
                api::LaunchStep {
                    job_id: id.0,
                    step_id,
                    argv: req.argv.clone(),
                    env: env.clone(),
                    workdir: req.workdir.clone(),
                    uid: launch.uid,
                    gid: launch.gid,
                    umask: req.umask.unwrap_or(DEFAULT_UMASK) & 0o777,
                    node_index: k as u32,
                    tasks: n
                        .tasks
                        .iter()
                        .map(|t| api::StepTaskPlacement {
                            task: t.task,
                            cores: t.cores.ones().map(|c| c as u32).collect(),
                            gpus: gantry_kernel::topology::ones(t.gpus)
                                .map(|g| g as u32)
                                .collect(),
                        })
                        .collect(),
                    node_gpus: gantry_kernel::topology::ones(n.gpus)
                        .map(|g| g as u32)
                        .collect(),
                    no_cpu_bind: req.no_cpu_bind,
                    kill_grace_s: self.settings.kill_grace_s,
                    unbuffered: req.unbuffered,
                    has_stdin: has_stdin_node == Some(k),
                    node_cores: job_cores,
                    pty: req.pty,
                    pty_rows: req.pty_rows,
                    pty_cols: req.pty_cols,
                },
            ));
        }
        Ok(out)
    }

    fn running_step(&self, job: JobId, step: u32) -> Option<(&Step, &RunningStep)> {
        let s = self.steps.get(&job)?.steps.iter().find(|s| s.id == step)?;
        Some((s, s.running.as_deref()?))
    }

    fn running_step_mut(&mut self, job: JobId, step: u32) -> Option<&mut Step> {
        self.steps
            .get_mut(&job)?
            .steps
            .iter_mut()
            .find(|s| s.id == step && s.running.is_some())
    }

    /// Which tasks of a running step `node` runs: the only ones it may speak about.
    pub fn step_part(&self, node: &str, job: JobId, step: u32) -> Result<NodePart, Refusal> {
        let id = self.node_id(node)?;
        let (s, r) = self
            .running_step(job, step)
            .ok_or_else(|| Refusal::NotFound(format!("step {}.{step} is not running", job.0)))?;
        let k = s.nodes.iter().position(|&n| n == id).ok_or_else(|| {
            Refusal::Denied(format!("node {node} has no part in step {}.{step}", job.0))
        })?;
        Ok(NodePart {
            tasks: r.tasks_on[k].clone(),
        })
    }

    /// A task of a step ended; with `--kill-on-bad-exit`, a failure ends its siblings.
    pub fn step_task_ended(&mut self, job: JobId, step: u32, ended: &api::TaskEnded) {
        let Some(s) = self.running_step_mut(job, step) else {
            return;
        };
        s.cpu_s += ended.cpu_s.max(0.0);
        let Some(r) = s.running.as_mut() else { return };
        r.worst = r.worst.max(ended.exit_code);
        if ended.exit_code != 0 && r.kill_on_bad_exit && !r.cancelled {
            tracing::info!(
                job = job.0,
                step,
                task = ended.task,
                code = ended.exit_code,
                "a task failed; ending the step (--kill-on-bad-exit)"
            );
            self.stop_step(job, step, false);
        }
    }

    /// Tells every node of a running step to end its tasks. `cancelled`: the step ends
    /// CANCELLED whatever its tasks' exit codes.
    fn stop_step(&mut self, job: JobId, step: u32, cancelled: bool) {
        let Some(s) = self.running_step_mut(job, step) else {
            return;
        };
        let Some(r) = s.running.as_mut() else { return };
        r.cancelled |= cancelled;
        let nodes = r.waiting_on.clone();
        for n in nodes {
            self.send(
                n,
                api::agent_command::What::CancelStep(api::StepRef {
                    job_id: job.0,
                    step_id: step,
                }),
            );
        }
    }

    /// `scancel JOB.STEP` (or a signal for its tasks), by the job's owner or an admin.
    pub fn cancel_steps(
        &mut self,
        who: &Caller,
        steps: &[api::StepRef],
        signal: i32,
    ) -> Result<(), Refusal> {
        for s in steps {
            let job = JobId(s.job_id);
            self.owned(who, job)?;
            if self.running_step(job, s.step_id).is_none() {
                return Err(Refusal::Conflict(format!(
                    "Job/step already completing or completed: {}.{}",
                    s.job_id, s.step_id
                )));
            }
        }
        for s in steps {
            if signal == 0 {
                self.stop_step(JobId(s.job_id), s.step_id, true);
            } else {
                self.signal_step(JobId(s.job_id), s.step_id, signal);
            }
        }
        Ok(())
    }

    /// Sends `signal` to every task of a running step (the caller was checked).
    pub fn signal_step(&mut self, job: JobId, step: u32, signal: i32) {
        if !(1..=64).contains(&signal) {
            return;
        }
        if signal == SIGKILL {
            return self.stop_step(job, step, true);
        }
        let Some((_, r)) = self.running_step(job, step) else {
            return;
        };
        for n in r.waiting_on.clone() {
            self.send(
                n,
                api::agent_command::What::SignalStep(api::SignalStep {
                    job_id: job.0,
                    step_id: step,
                    signal,
                }),
            );
        }
    }

    /// Sends `signal` to the tasks of every running step of `job` (SIGSTOP and SIGCONT
    /// when the job is suspended and resumed).
    pub(super) fn signal_steps_of(&mut self, job: JobId, signal: i32) {
        let running: Vec<u32> = self
            .steps_of(job)
            .iter()
            .filter(|s| s.running.is_some())
            .map(|s| s.id)
            .collect();
        for step in running {
            self.signal_step(job, step, signal);
        }
    }

    /// Ends a step whose `srun` went away before it ended.
    pub fn abandon_step(&mut self, job: JobId, step: u32) {
        if self.running_step(job, step).is_some() {
            tracing::info!(
                job = job.0,
                step,
                "the step's srun went away; ending the step"
            );
            self.stop_step(job, step, true);
        }
    }

    /// Standard input for a step's task 0.
    pub fn step_input(&mut self, job: JobId, step: u32, data: Vec<u8>) {
        let Some(node) = self.running_step(job, step).and_then(|(_, r)| r.stdin_node) else {
            return;
        };
        self.send(
            node,
            api::agent_command::What::StepInput(api::StepInputChunk {
                job_id: job.0,
                step_id: step,
                data,
            }),
        );
    }

    /// A node's part of a step is over (its tasks all ended, or its stream broke:
    /// `lost`). When it was the last node, the step ends: logged, its resources free
    /// for other steps, its end sent to its `srun`.
    pub fn step_node_done(
        &mut self,
        job: JobId,
        step: u32,
        node: &str,
        lost: bool,
        now: Time,
    ) -> Result<(), Refusal> {
        let node = self.node_id(node)?;
        let Some(s) = self.running_step_mut(job, step) else {
            return Ok(());
        };
        let Some(r) = s.running.as_mut() else {
            return Ok(());
        };
        r.waiting_on.retain(|&n| n != node);
        if lost {
            r.worst = r.worst.max(1);
        }
        self.finish_step_if_done(job, step, now)
    }

    fn finish_step_if_done(&mut self, job: JobId, step: u32, now: Time) -> Result<(), Refusal> {
        let Some(s) = self.running_step_mut(job, step) else {
            return Ok(());
        };
        let Some(r) = s.running.as_ref() else {
            return Ok(());
        };
        if !r.waiting_on.is_empty() {
            return Ok(());
        }
        let state = if r.node_failed {
            StepState::NodeFail
        } else if r.cancelled {
            StepState::Cancelled
        } else if r.worst == 0 {
            StepState::Completed
        } else {
            StepState::Failed
        };
        let exit_code = r.worst;
        let cpu_s = s.cpu_s;
        self.log(
            now,
            &[Entry::StepEnded {
                job,
                step,
                state,
                exit_code,
                cpu_s,
            }],
        )?;
        if let Some(s) = self.running_step_mut(job, step) {
            s.running = None;
            s.state = state;
            s.end = Some(now);
            s.exit_code = Some(exit_code);
        }
        self.forget_if_no_step_runs(job);
        tracing::info!(
            job = job.0,
            step,
            state = state.slurm_name(),
            exit_code,
            "step ended"
        );
        self.relays.finish(
            job,
            step,
            api::StepEnded {
                state: state.slurm_name().into(),
                exit_code,
                message: String::new(),
            },
        );
        Ok(())
    }

    fn forget_if_no_step_runs(&mut self, job: JobId) {
        if !self.steps_of(job).iter().any(|s| s.running.is_some()) {
            self.with_running_steps.remove(&job);
        }
    }

    /// Ends the steps of jobs that no longer run (ended, cancelled, preempted, timed
    /// out): their tasks are told to stop on every node.
    pub(super) fn stop_steps_of_ended_jobs(&mut self) {
        let mut stale = Vec::new();
        for &job in &self.with_running_steps {
            let runs = self
                .sched
                .job(job)
                .is_some_and(|j| matches!(j.state, JobState::Running | JobState::Suspended));
            if runs {
                continue;
            }
            for s in self.steps_of(job) {
                if s.running.as_ref().is_some_and(|r| !r.cancelled) {
                    stale.push((job, s.id));
                }
            }
        }
        for (job, step) in stale {
            self.stop_step(job, step, true);
        }
    }

    /// A node failed: the parts of steps it ran are over, as NODE_FAIL.
    pub(super) fn steps_node_failed(&mut self, node: NodeId, now: Time) -> Result<(), Refusal> {
        let mut hit = Vec::new();
        for &job in &self.with_running_steps {
            let Some(steps) = self.steps.get_mut(&job) else {
                continue;
            };
            for s in &mut steps.steps {
                if let Some(r) = s.running.as_mut() {
                    if r.waiting_on.contains(&node) {
                        r.waiting_on.retain(|&n| n != node);
                        r.node_failed = true;
                        hit.push((job, s.id));
                    }
                }
            }
        }
        for (job, step) in hit {
            self.stop_step(job, step, true);
            self.finish_step_if_done(job, step, now)?;
        }
        Ok(())
    }

    /// Restore: a step logged as started.
    pub(super) fn restore_step_start(
        &mut self,
        job: JobId,
        step: u32,
        name: &str,
        nodes: &[String],
        tasks: u32,
        time: Time,
    ) {
        let ids: Vec<NodeId> = nodes.iter().filter_map(|n| self.node_id(n).ok()).collect();
        self.with_running_steps.insert(job);
        let steps = self.steps.entry(job).or_default();
        steps.next = steps.next.max(step + 1);
        steps.steps.push(Step {
            id: step,
            name: name.to_string(),
            state: StepState::Running,
            start: time,
            end: None,
            nodes: ids.clone(),
            tasks,
            exit_code: None,
            cpu_s: 0.0,
            running: Some(Box::new(RunningStep {
                tasks_on: vec![Vec::new(); ids.len()],
                held: Vec::new(),
                waiting_on: ids,
                worst: 0,
                cancelled: true,
                node_failed: false,
                kill_on_bad_exit: false,
                stdin_node: None,
            })),
        });
    }

    /// Restore: a step logged as ended.
    pub(super) fn restore_step_end(
        &mut self,
        job: JobId,
        step: u32,
        state: StepState,
        exit_code: i32,
        cpu_s: f64,
        time: Time,
    ) {
        if let Some(s) = self
            .steps
            .get_mut(&job)
            .and_then(|j| j.steps.iter_mut().find(|s| s.id == step))
        {
            s.running = None;
            s.state = state;
            s.end = Some(time);
            s.exit_code = Some(exit_code);
            s.cpu_s = cpu_s;
        }
        self.forget_if_no_step_runs(job);
    }

    /// After a restart: steps that were running have lost their `srun` (its stream
    /// went with the old process). They are ended: their tasks are told to stop, and
    /// each is logged CANCELLED.
    pub(super) fn end_steps_after_restart(&mut self, now: Time) -> Result<(), Refusal> {
        let mut open = Vec::new();
        for &job in &self.with_running_steps {
            for s in self.steps_of(job) {
                if s.running.is_some() {
                    open.push((job, s.id, s.nodes.clone()));
                }
            }
        }
        for (job, step, nodes) in open {
            for n in nodes {
                self.send(
                    n,
                    api::agent_command::What::CancelStep(api::StepRef {
                        job_id: job.0,
                        step_id: step,
                    }),
                );
            }
            if let Some(r) = self
                .running_step_mut(job, step)
                .and_then(|s| s.running.as_mut())
            {
                r.waiting_on.clear();
            }
            self.finish_step_if_done(job, step, now)?;
        }
        Ok(())
    }

    /// The job's steps as users see them.
    pub(super) fn step_infos(&self, job: JobId) -> Vec<api::StepInfo> {
        let cluster = self.sched.cluster();
        self.steps_of(job)
            .iter()
            .map(|s| {
                let names: Vec<String> = s
                    .nodes
                    .iter()
                    .map(|&n| cluster.node(n).name.clone())
                    .collect();
                api::StepInfo {
                    step_id: s.id,
                    name: s.name.clone(),
                    state: s.state.slurm_name().into(),
                    start_time: s.start,
                    end_time: s.end.unwrap_or(0),
                    node_list: compress_hostlist(&names),
                    nodes: s.nodes.len() as u32,
                    tasks: s.tasks,
                    exit_code: s.exit_code,
                    cpu_s: s.cpu_s,
                }
            })
            .collect()
    }

    /// Ends an allocation made for `srun`/`salloc` with the exit code of what ran in it:
    /// the job ends COMPLETED (0) or FAILED, and its holder on the first node is ended.
    pub fn release(
        &mut self,
        who: &Caller,
        id: JobId,
        exit_code: i32,
        now: Time,
    ) -> Result<(), Refusal> {
        let job = self.owned(who, id)?;
        let allocation_only = self.submissions.get(&id).is_some_and(|s| s.allocation_only);
        if !allocation_only {
            return Err(Refusal::Conflict(format!(
                "job {} runs a batch script; end it with scancel",
                id.0
            )));
        }
        match job.state {
            JobState::Running | JobState::Suspended => {}
            JobState::Pending => return self.cancel(who, &[id.0], &[], now).map(|_| ()),
            _ => return Ok(()),
        }
        let run = job_run(job);
        let first = self.first_node(id);
        let outcome = gantry_kernel::job::JobOutcome::Exited(exit_code);
        let usage = self.usage.get(&id).copied().unwrap_or_default();
        self.log(
            now,
            &[Entry::Ended {
                job: id,
                outcome: outcome.into(),
                usage,
                message: String::new(),
            }],
        )?;
        self.sched.job_ended(id, now, outcome).map_err(invalid)?;
        if let Some(n) = first {
            self.send(n, api::agent_command::What::Cancel(run));
        }
        self.stop_steps_of_ended_jobs();
        self.publish_job(id, now);
        Ok(())
    }
}

/// Signal 9: a step sent it is ended (SIGTERM, grace, SIGKILL), as `scancel` would.
const SIGKILL: i32 = 9;

/// Checks a step request's sizes before anything is built from it.
pub fn check_step_bounds(req: &api::StepRequest, max_bytes: usize) -> Result<(), Refusal> {
    let argv: usize = req.argv.iter().map(|a| a.len() + 1).sum();
    let env: usize = req.env.iter().map(|(k, v)| k.len() + v.len() + 2).sum();
    if argv > max_bytes || env > max_bytes {
        return Err(invalid(format!(
            "the step's command line or environment is over {max_bytes} bytes (max_script_bytes)"
        )));
    }
    if req.workdir.len() > MAX_PATH_BYTES || req.name.len() > MAX_NAME_BYTES {
        return Err(invalid("the step's working directory or name is too long"));
    }
    if req.nodelist.len() > MAX_PATH_BYTES * 16 || req.exclude.len() > MAX_PATH_BYTES * 16 {
        return Err(invalid("the step's --nodelist or --exclude is too long"));
    }
    Ok(())
}
