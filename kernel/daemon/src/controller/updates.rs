//! Changes users and admins make to their jobs after submission (`scontrol hold`,
//! `release`, `update`), signals (`scancel --signal`) and the `--signal` warnings sent
//! before a time limit.

use gantry_api as api;
use gantry_kernel::job::{Hold, JobState};
use gantry_kernel::{JobId, Time};

use super::{invalid, job_run, Caller, Controller, Refusal};
use crate::store::{Entry, TimeLimit};

/// The longest comment a job may carry, in bytes (Slurm's own limit is larger; a comment
/// is shown in every `scontrol show job` and `sacct` line that asks for it).
pub const MAX_COMMENT_BYTES: usize = 1024;

/// What `scontrol update` may change.
#[derive(Debug, Default, Clone)]
pub struct JobUpdate {
    pub time_limit: Option<TimeLimit>,
    pub comment: Option<String>,
    pub nice: Option<i32>,
    pub qos: Option<String>,
    /// Slurm's dependency text; empty removes them.
    pub dependency: Option<String>,
    pub partition: Option<String>,
    /// `NumNodes`.
    pub nodes: Option<u32>,
}

impl Controller {
    /// The jobs `ids` name (an array's id: all its tasks) that `who` may act on.
    pub(super) fn owned_targets(&self, who: &Caller, ids: &[u64]) -> Result<Vec<JobId>, Refusal> {
        let mut targets = Vec::new();
        for &raw in ids {
            let id = JobId(raw);
            self.owned(who, id)?;
            match self.sched.array_tasks(id) {
                Some(tasks) => targets.extend_from_slice(tasks),
                None => targets.push(id),
            }
        }
        targets.sort_unstable();
        targets.dedup();
        Ok(targets)
    }

    /// Holds (`hold`) or releases waiting jobs. A user's hold is the user's to release;
    /// an admin's hold (any hold an admin places) only an admin's. Tasks of an array
    /// that already started are left alone, as Slurm does.
    pub fn hold_or_release(
        &mut self,
        who: &Caller,
        ids: &[u64],
        hold: bool,
        now: Time,
    ) -> Result<Vec<JobId>, Refusal> {
        let by = if who.admin { Hold::Admin } else { Hold::User };
        let targets = self.owned_targets(who, ids)?;
        let waiting: Vec<JobId> = targets
            .iter()
            .copied()
            .filter(|&id| self.sched.job(id).is_some_and(|j| j.state.is_waiting()))
            .collect();
        if waiting.is_empty() {
            let id = ids.first().copied().unwrap_or_default();
            return Err(Refusal::Conflict(format!(
                "Job is no longer pending execution for job {id}"
            )));
        }
        if !hold && !who.admin {
            if let Some(&id) = waiting.iter().find(|&&id| {
                self.sched
                    .job(id)
                    .is_some_and(|j| j.hold == Some(Hold::Admin))
            }) {
                return Err(Refusal::Denied(format!(
                    "Access/permission denied for job {}: an administrator holds it",
                    id.0
                )));
            }
        }
        let entries: Vec<Entry> = waiting
            .iter()
            .map(|&job| {
                if hold {
                    Entry::Held { job, by: by.into() }
                } else {
                    Entry::Released { job, by: by.into() }
                }
            })
            .collect();
        self.log(now, &entries)?;
        for &id in &waiting {
            if hold {
                self.sched.hold(id, by).map_err(invalid)?;
            } else {
                self.sched.release(id, by).map_err(invalid)?;
            }
            self.publish_job(id, now);
        }
        Ok(waiting)
    }

    /// `scontrol requeue` (and `requeuehold`): running or suspended jobs back in the
    /// queue, their runs told to stop; the owner's or an admin's to do.
    pub fn requeue(
        &mut self,
        who: &Caller,
        ids: &[u64],
        then_hold: bool,
        now: Time,
    ) -> Result<Vec<JobId>, Refusal> {
        let targets: Vec<JobId> = self
            .owned_targets(who, ids)?
            .into_iter()
            .filter(|&id| {
                self.sched
                    .job(id)
                    .is_some_and(|j| matches!(j.state, JobState::Running | JobState::Suspended))
            })
            .collect();
        if targets.is_empty() {
            let id = ids.first().copied().unwrap_or_default();
            return Err(Refusal::Conflict(format!(
                "Job is not running or suspended, so it cannot be requeued: {id}"
            )));
        }
        let by = if who.admin { Hold::Admin } else { Hold::User };
        let mut entries: Vec<Entry> = targets.iter().map(|&job| Entry::Requeued { job }).collect();
        if then_hold {
            entries.extend(
                targets
                    .iter()
                    .map(|&job| Entry::Held { job, by: by.into() }),
            );
        }
        self.log(now, &entries)?;
        for &id in &targets {
            let Some(run) = self.sched.job(id).map(job_run) else {
                continue;
            };
            self.sched.requeue_job(id, now).map_err(invalid)?;
            if then_hold {
                self.sched.hold(id, by).map_err(invalid)?;
            }
            // The run that was, wherever it is, ends; the job starts a new run later.
            self.broadcast_to_agents(api::agent_command::What::Cancel(run));
            tracing::info!(job = id.0, by = %who.user, "requeued");
            self.publish_job(id, now);
        }
        self.stop_steps_of_ended_jobs();
        Ok(targets)
    }

    /// `scontrol suspend` and `resume` (admins only): a running job stops (SIGSTOP to
    /// its batch script and steps), its cores and GPUs free for others, its memory kept;
    /// resumed, it runs again (SIGCONT) at once if those very cores are free, else as
    /// soon as a cycle finds them.
    pub fn suspend_or_resume(
        &mut self,
        who: &Caller,
        ids: &[u64],
        suspend: bool,
        now: Time,
    ) -> Result<Vec<JobId>, Refusal> {
        if !who.admin {
            return Err(Refusal::Denied(
                "Access/permission denied: only an administrator may suspend or resume jobs".into(),
            ));
        }
        let targets: Vec<JobId> = self
            .owned_targets(who, ids)?
            .into_iter()
            .filter(|&id| {
                self.sched.job(id).is_some_and(|j| {
                    if suspend {
                        j.state == JobState::Running
                    } else {
                        j.state == JobState::Suspended && j.suspended_by_admin
                    }
                })
            })
            .collect();
        if targets.is_empty() {
            let id = ids.first().copied().unwrap_or_default();
            return Err(Refusal::Conflict(if suspend {
                format!("Job {id} is not running, so it cannot be suspended")
            } else {
                format!("Job {id} was not suspended by an administrator")
            }));
        }
        let entries: Vec<Entry> = targets
            .iter()
            .map(|&job| {
                if suspend {
                    Entry::SuspendedByAdmin { job }
                } else {
                    Entry::ResumedByAdmin { job }
                }
            })
            .collect();
        self.log(now, &entries)?;
        use api::agent_command::What;
        for &id in &targets {
            if suspend {
                self.sched.suspend_job(id, now).map_err(invalid)?;
            } else if !self.sched.resume_job(id, now).map_err(invalid)? {
                // Its cores are taken: a cycle resumes it (and tells its node) later.
                self.publish_job(id, now);
                continue;
            }
            if let (Some(node), Some(j)) = (self.first_node(id), self.sched.job(id)) {
                let run = job_run(j);
                self.send(
                    node,
                    if suspend {
                        What::Suspend(run)
                    } else {
                        What::Resume(run)
                    },
                );
            }
            self.signal_steps_of(
                id,
                if suspend {
                    libc::SIGSTOP
                } else {
                    libc::SIGCONT
                },
            );
            tracing::info!(job = id.0, by = %who.user, suspend, "suspended or resumed by an admin");
            self.publish_job(id, now);
        }
        Ok(targets)
    }

    /// `scontrol update job`: a waiting job's time limit (its owner may only lower it),
    /// nice (its owner may only raise it), QOS (admins) and dependencies; any
    /// unfinished job's comment. Every change is checked before any is logged.
    pub fn update_jobs(
        &mut self,
        who: &Caller,
        ids: &[u64],
        change: JobUpdate,
        now: Time,
    ) -> Result<Vec<JobId>, Refusal> {
        if let Some(c) = &change.comment {
            if c.len() > MAX_COMMENT_BYTES || c.contains('\0') {
                return Err(invalid(format!(
                    "a comment is at most {MAX_COMMENT_BYTES} bytes, without NUL bytes"
                )));
            }
        }
        if let Some(TimeLimit::Seconds(s)) = change.time_limit {
            if !(1..=gantry_kernel::units::MAX_DURATION).contains(&s) {
                return Err(invalid(
                    "the time limit must be positive and at most a century",
                ));
            }
        }
        if change.qos.is_some() && !who.admin {
            return Err(Refusal::Denied(
                "Access/permission denied: only an administrator may change a job's QOS".into(),
            ));
        }
        if let Some(d) = &change.dependency {
            if d.len() > super::MAX_PATH_BYTES {
                return Err(invalid("the dependency text is too long"));
            }
            if !d.trim().is_empty() {
                gantry_kernel::job::parse_dependencies(d).map_err(invalid)?;
            }
        }
        if let Some(q) = &change.qos {
            if self.sched.cluster().qos_by_name(q).is_none() {
                return Err(invalid(format!("unknown qos '{q}'")));
            }
        }
        if let Some(p) = &change.partition {
            if self.sched.cluster().partition_by_name(p).is_none() {
                return Err(invalid(format!(
                    "invalid partition name specified: {}",
                    super::quoted(p)
                )));
            }
        }
        let targets = self.owned_targets(who, ids)?;
        let pending_only = change.nice.is_some()
            || change.qos.is_some()
            || change.dependency.is_some()
            || change.partition.is_some()
            || change.nodes.is_some();
        for &id in &targets {
            let Some(job) = self.sched.job(id) else {
                continue;
            };
            if pending_only && !job.state.is_waiting() {
                return Err(Refusal::Conflict(format!(
                    "Job is no longer pending execution for job {}: only a pending job's Nice, QOS, Dependency, Partition and NumNodes change",
                    id.0
                )));
            }
            if change.time_limit.is_some()
                && !job.state.is_waiting()
                && !matches!(job.state, JobState::Running | JobState::Suspended)
            {
                return Err(Refusal::Conflict(format!(
                    "Job/step already completing or completed: {}",
                    id.0
                )));
            }
            if let Some(limit) = change.time_limit {
                let raises = match (limit.seconds(), job.time_limit) {
                    (None, Some(_)) => true,
                    (Some(new), Some(old)) => new > old,
                    (_, None) => false,
                };
                if raises && !who.admin {
                    return Err(Refusal::Denied(format!(
                        "Access/permission denied: only an administrator may raise the time limit of job {}",
                        id.0
                    )));
                }
            }
            if let Some(n) = change.nice {
                if n < job.nice && !who.admin {
                    return Err(Refusal::Denied(format!(
                        "Access/permission denied: only an administrator may lower the nice of job {} (raise its priority)",
                        id.0
                    )));
                }
            }
            if change.comment.is_some() && job.state.is_terminal() {
                return Err(Refusal::Conflict(format!(
                    "Job/step already completing or completed: {}",
                    id.0
                )));
            }
            if let Some(Ok(deps)) = change
                .dependency
                .as_deref()
                .filter(|d| !d.trim().is_empty())
                .map(gantry_kernel::job::parse_dependencies)
            {
                for dep in deps {
                    if let gantry_kernel::job::Dependency::On(_, on) = dep {
                        if let Some(bad) =
                            on.iter().find(|&&d| self.sched.job(d).is_none() || d == id)
                        {
                            return Err(invalid(format!("dependency on unknown job {bad}")));
                        }
                    }
                }
            }
        }
        let entries: Vec<Entry> = targets
            .iter()
            .map(|&job| Entry::Updated {
                job,
                time_limit: change.time_limit,
                comment: change.comment.clone(),
                nice: change.nice,
                qos: change.qos.clone(),
                dependency: change.dependency.clone(),
                partition: change.partition.clone(),
                nodes: change.nodes,
            })
            .collect();
        // Checked by the kernel before anything is logged: an update the kernel would
        // refuse (a shape that can never run) must not reach the log.
        for &id in &targets {
            self.check_update(id, &change)?;
        }
        self.log(now, &entries)?;
        for &id in &targets {
            self.apply_update(id, &change)?;
            if change.time_limit.is_some() {
                self.send_time_limit(id, now);
            }
            self.publish_job(id, now);
        }
        Ok(targets)
    }

    /// Whether the kernel takes a partition or node count change (asked before the
    /// change is logged).
    fn check_update(&self, id: JobId, change: &JobUpdate) -> Result<(), Refusal> {
        if change.partition.is_some() || change.nodes.is_some() {
            self.sched
                .check_reshape(id, change.partition.as_deref(), change.nodes)
                .map_err(invalid)?;
        }
        Ok(())
    }

    /// Tells the agent of a running job when its run must now end
    /// ([`gantry_kernel::Scheduler::run_end`]).
    pub(super) fn send_time_limit(&mut self, id: JobId, now: Time) {
        let Some(job) = self.sched.job(id) else {
            return;
        };
        if !matches!(job.state, JobState::Running | JobState::Suspended) {
            return;
        }
        let remaining = self.sched.run_end(job).map(|end| (end - now).max(0));
        let run = job.requeue_count;
        if let Some(node) = self.first_node(id) {
            self.send(
                node,
                api::agent_command::What::TimeLimit(api::RunTimeLimit {
                    job_id: id.0,
                    run,
                    remaining_s: remaining,
                }),
            );
        }
    }

    /// Applies a logged update (live and on restore).
    pub(super) fn apply_update(&mut self, id: JobId, change: &JobUpdate) -> Result<(), Refusal> {
        if let Some(limit) = change.time_limit {
            let waiting = self.sched.job(id).is_some_and(|j| j.state.is_waiting());
            if waiting {
                self.sched.set_time_limit(id, limit.seconds())
            } else {
                self.sched.set_running_time_limit(id, limit.seconds())
            }
            .map_err(invalid)?;
        }
        if change.partition.is_some() || change.nodes.is_some() {
            self.sched
                .reshape(id, change.partition.as_deref(), change.nodes)
                .map_err(invalid)?;
        }
        if let Some(n) = change.nice {
            self.sched.set_nice(id, n).map_err(invalid)?;
        }
        if let Some(q) = &change.qos {
            self.sched.set_qos(id, q).map_err(invalid)?;
        }
        if let Some(d) = &change.dependency {
            let deps = if d.trim().is_empty() {
                Vec::new()
            } else {
                gantry_kernel::job::parse_dependencies(d).map_err(invalid)?
            };
            self.sched.set_dependencies(id, deps).map_err(invalid)?;
            self.dependency_texts.insert(id, d.clone());
        }
        if let Some(c) = &change.comment {
            self.comments.insert(id, c.clone());
        }
        Ok(())
    }

    /// The job's comment: as updated, else as submitted.
    pub fn comment(&self, id: JobId) -> &str {
        match self.comments.get(&id) {
            Some(c) => c,
            None => self.submissions.get(&id).map_or("", |s| s.comment.as_str()),
        }
    }

    /// Sends `signal` to running jobs' processes (e.g. SIGUSR1 for a checkpoint); their
    /// state does not change. `target` says which: the job's steps (the batch script
    /// when it has none), the batch script, or both.
    pub fn signal(
        &mut self,
        who: &Caller,
        ids: &[u64],
        signal: i32,
        target: api::SignalTarget,
    ) -> Result<Vec<JobId>, Refusal> {
        if !(1..=64).contains(&signal) {
            return Err(Refusal::Invalid(format!("{signal} is not a signal number")));
        }
        let mut done = Vec::new();
        for &raw in ids {
            let id = JobId(raw);
            let job = self.owned(who, id)?;
            if job.state != JobState::Running {
                return Err(Refusal::Conflict(format!("job {raw} is not running")));
            }
            self.deliver_signal(id, signal, target, false);
            done.push(id);
        }
        Ok(done)
    }

    /// Sends `signal` to a running job's processes, as [`Controller::signal`] says; with
    /// `shell_only`, of the batch script's processes only the shell itself.
    fn deliver_signal(
        &mut self,
        id: JobId,
        signal: i32,
        target: api::SignalTarget,
        shell_only: bool,
    ) {
        use api::SignalTarget::*;
        let has_steps = self.with_running_steps.contains(&id);
        let batch = match target {
            Batch | Full => true,
            Steps => !has_steps,
        };
        if matches!(target, Steps | Full) {
            self.signal_steps_of(id, signal);
        }
        let allocation_only = self.submissions.get(&id).is_some_and(|s| s.allocation_only);
        if batch && !allocation_only {
            if let (Some(node), Some(job)) = (self.first_node(id), self.sched.job(id)) {
                let run = job_run(job);
                self.send(
                    node,
                    api::agent_command::What::Signal(api::SignalJob {
                        job_id: id.0,
                        signal,
                        run: run.run,
                        shell_only,
                    }),
                );
            }
        }
        tracing::info!(job = id.0, signal, ?target, "signal sent");
    }

    /// Arms a started job's `--signal` warning, if it asked for one whose time has not
    /// passed (a restarted controller does not send again what it may have sent).
    pub(super) fn arm_warning(&mut self, id: JobId, now: Time) {
        let Some(w) = self.submissions.get(&id).and_then(|s| s.warn_signal) else {
            return;
        };
        let Some(job) = self.sched.job(id) else {
            return;
        };
        if job
            .expected_end()
            .is_some_and(|end| now < end - Time::from(w.seconds))
        {
            self.warnings.insert(id, job.requeue_count);
        }
    }

    /// Sends the `--signal` warnings that are due; forgets those of runs that ended.
    pub(super) fn send_warnings(&mut self, now: Time) {
        if self.warnings.is_empty() {
            return;
        }
        let mut settled = Vec::new();
        for (&id, &run) in &self.warnings {
            let job = self.sched.job(id);
            let current = job.is_some_and(|j| {
                j.requeue_count == run && matches!(j.state, JobState::Running | JobState::Suspended)
            });
            let warn = self.submissions.get(&id).and_then(|s| s.warn_signal);
            let (Some(job), Some(w), true) = (job, warn, current) else {
                settled.push((id, None));
                continue;
            };
            if job.state != JobState::Running {
                continue; // suspended: its limit waits too
            }
            match job.expected_end() {
                Some(end) if now >= end - Time::from(w.seconds) => settled.push((id, Some(w))),
                Some(_) => {}
                None => settled.push((id, None)),
            }
        }
        for (id, warn) in settled {
            self.warnings.remove(&id);
            if let Some(w) = warn {
                let target = if w.batch_only {
                    api::SignalTarget::Batch
                } else {
                    api::SignalTarget::Steps
                };
                tracing::info!(
                    job = id.0,
                    signal = w.signal,
                    seconds = w.seconds,
                    "time limit warning"
                );
                self.deliver_signal(id, w.signal, target, w.batch_only);
            }
        }
    }
}
