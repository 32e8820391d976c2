//! Running jobs on this node: a batch script (or a command) as its own process group and
//! session, bound to the allocated CPUs, with the allocated GPUs in
//! `CUDA_VISIBLE_DEVICES`, Slurm's environment variables, output files, a time limit
//! (SIGTERM, grace, SIGKILL → TIMEOUT), cancellation, suspension, and the exit status
//! and resource use when it ends.
//!
//! Everything is kept per run (job id and requeue count, [`RunKey`]): a command about
//! one run never touches another run of the same job.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gantry_api as api;
use tokio::sync::mpsc;

use crate::launch::{self, groups_of, ChildSetup, Identity};
pub use crate::spool::RunKey;
use crate::spool::Spool;

/// How a job ended, for the controller.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub job_id: u64,
    /// The run that ended.
    pub run: u32,
    /// EXITED, TIMEOUT, CANCELLED or LAUNCH_FAILED; or [`ENDING_AT_TIME_LIMIT`], which
    /// is not an end but the notice that the run passed its limit and is being ended.
    pub state: &'static str,
    pub exit_code: Option<i32>,
    pub message: String,
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    pub max_rss_mb: u64,
}

/// The state of the notice sent when a run passes its time limit and its processes are
/// told to stop: the controller shows the job COMPLETING until the run's end follows.
pub const ENDING_AT_TIME_LIMIT: &str = "TIMEOUT_ENDING";

#[derive(Debug)]
struct Running {
    pgid: i32,
    /// When the job's time limit runs out, excluding time suspended; `None`: unlimited.
    deadline: Option<Instant>,
    suspended_at: Option<Instant>,
    /// Set once the agent started ending it (so the end is reported as such).
    ending: Option<&'static str>,
    grace: Duration,
}

/// The jobs this agent runs, and those that ended but are not yet settled with the
/// controller.
#[derive(Clone)]
pub struct Jobs {
    inner: Arc<Mutex<Inner>>,
    ended_tx: mpsc::UnboundedSender<Ended>,
    node: String,
    spool: Spool,
    /// CPUs this machine has online: binding is limited to them (a declared topology
    /// may describe more cores than the machine has).
    online_cpus: Vec<usize>,
    /// The operating system's CPU for each of the kernel's core indices.
    core_cpus: Arc<Vec<u32>>,
}

#[derive(Default)]
struct Inner {
    running: HashMap<RunKey, Running>,
    /// Ended, not yet acknowledged by the controller.
    unsettled: HashMap<RunKey, Ended>,
    /// Runs ended and settled lately, newest last: a launch of one of them that was
    /// resent while the run went on (it crossed a heartbeat sent before the first
    /// arrived) must not start it a second time.
    settled: std::collections::VecDeque<RunKey>,
    settled_set: std::collections::HashSet<RunKey>,
}

/// How many settled runs an agent remembers, to refuse their repeated launches: far
/// more than can end between two heartbeats.
const REMEMBERED_SETTLED: usize = 65_536;

fn online_cpus() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the zeroed set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

pub(crate) fn signal_group(pgid: i32, sig: i32) {
    // SAFETY: kill(2) with a negative pid signals the process group; no memory involved.
    unsafe {
        libc::kill(-pgid, sig);
    }
}

impl Jobs {
    pub fn new(
        node: String,
        spool: Spool,
        core_cpus: Vec<u32>,
    ) -> (Self, mpsc::UnboundedReceiver<Ended>) {
        let (ended_tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                inner: Arc::default(),
                ended_tx,
                node,
                spool,
                online_cpus: online_cpus(),
                core_cpus: Arc::new(core_cpus),
            },
            rx,
        )
    }

    /// The operating system CPUs of kernel core indices, those online only.
    pub fn cpus_of(&self, cores: &[u32]) -> Vec<usize> {
        cores
            .iter()
            .filter_map(|&c| self.core_cpus.get(c as usize))
            .map(|&c| c as usize)
            .filter(|c| self.online_cpus.contains(c))
            .collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a heartbeat reports: every job running here, and every ended one not settled.
    pub fn snapshot(&self) -> Vec<api::RunningJob> {
        let inner = self.lock();
        let mut out: Vec<api::RunningJob> = inner
            .running
            .iter()
            .map(|(&(job_id, run), r)| api::RunningJob {
                job_id,
                alive: true,
                exit_code: None,
                // Alive past its limit: being ended.
                timed_out: r.ending == Some("TIMEOUT"),
                run,
                message: String::new(),
                launch_failed: false,
            })
            .collect();
        out.extend(inner.unsettled.values().map(|e| api::RunningJob {
            job_id: e.job_id,
            alive: false,
            exit_code: e.exit_code,
            timed_out: e.state == "TIMEOUT",
            run: e.run,
            message: e.message.clone(),
            launch_failed: e.state == "LAUNCH_FAILED",
        }));
        out.sort_by_key(|j| (j.job_id, j.run));
        out
    }

    /// The process group of each running batch script, by job.
    pub fn groups(&self) -> Vec<(u64, i32)> {
        self.lock()
            .running
            .iter()
            .map(|(&(job, _), r)| (job, r.pgid))
            .collect()
    }

    /// The controller has these ends (reported, or seen in a heartbeat).
    pub fn settled(&self, runs: &[RunKey]) {
        let mut inner = self.lock();
        for run in runs {
            if inner.unsettled.remove(run).is_some() && inner.settled_set.insert(*run) {
                inner.settled.push_back(*run);
                if inner.settled.len() > REMEMBERED_SETTLED {
                    if let Some(old) = inner.settled.pop_front() {
                        inner.settled_set.remove(&old);
                    }
                }
            }
        }
    }

    pub fn unsettled(&self) -> Vec<Ended> {
        self.lock().unsettled.values().cloned().collect()
    }

    /// After a restart: runs the previous agent started are out of reach (their exit
    /// status went with it). Kills what is left of each — only a process group the
    /// record still describes (see `GroupRecord::still_ours`) — and reports them lost.
    pub fn recover(&self) {
        for ((job_id, run), record) in self.spool.recorded() {
            match record {
                Some(g) if g.still_ours() => signal_group(g.pgid, libc::SIGKILL),
                Some(g) => {
                    tracing::warn!(
                        job = job_id,
                        run,
                        pgid = g.pgid,
                        "recorded process group is no longer the job's; not signalled"
                    )
                }
                None => tracing::warn!(job = job_id, run, "unreadable process group record"),
            }
            tracing::warn!(job = job_id, run, "job lost in an agent restart");
            self.finish(Ended {
                job_id,
                run,
                state: "LOST",
                exit_code: None,
                message: "the node's agent restarted while the job ran".into(),
                user_cpu_s: 0.0,
                system_cpu_s: 0.0,
                max_rss_mb: 0,
            });
        }
    }

    fn finish(&self, e: Ended) {
        let key = (e.job_id, e.run);
        self.spool.forget(key);
        let mut inner = self.lock();
        inner.running.remove(&key);
        inner.unsettled.insert(key, e.clone());
        drop(inner);
        let _ = self.ended_tx.send(e);
    }

    /// Starts a job, unless this agent already has it (a repeated launch).
    pub fn launch(&self, l: api::LaunchJob) {
        let Some(job) = l.job.clone() else { return };
        let key = (job.job_id, l.run);
        {
            let inner = self.lock();
            if inner.running.contains_key(&key)
                || inner.unsettled.contains_key(&key)
                || inner.settled_set.contains(&key)
            {
                tracing::debug!(
                    job = job.job_id,
                    "launch repeated; already have it or had it"
                );
                return;
            }
        }
        match self.spawn(&l, &job) {
            Ok(()) => {}
            Err(message) => {
                tracing::warn!(job = job.job_id, %message, "launch failed");
                self.finish(Ended {
                    job_id: job.job_id,
                    run: l.run,
                    state: "LAUNCH_FAILED",
                    exit_code: Some(1),
                    message,
                    user_cpu_s: 0.0,
                    system_cpu_s: 0.0,
                    max_rss_mb: 0,
                });
            }
        }
    }

    fn environment(&self, l: &api::LaunchJob, job: &api::JobInfo) -> Vec<(String, String)> {
        let here = l.here.clone().unwrap_or_default();
        let mut env: Vec<(String, String)> =
            l.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let id = job.job_id.to_string();
        let cpus: Vec<String> = here.cores.iter().map(|c| c.to_string()).collect();
        let gpus: Vec<String> = here.gpus.iter().map(|g| g.to_string()).collect();
        let mut set = |k: &str, v: String| env.push((k.to_string(), v));
        set("SLURM_JOB_ID", id.clone());
        set("SLURM_JOBID", id.clone());
        set("GANTRY_JOB_ID", id);
        if job.array_job_id != 0 {
            set("SLURM_ARRAY_JOB_ID", job.array_job_id.to_string());
            set("SLURM_ARRAY_TASK_ID", job.array_task_id.to_string());
        }
        set("SLURM_JOB_NAME", job.name.clone());
        set("SLURM_JOB_USER", job.user.clone());
        set("SLURM_JOB_UID", l.uid.to_string());
        set("SLURM_JOB_GID", l.gid.to_string());
        set("SLURM_JOB_ACCOUNT", job.account.clone());
        set("SLURM_JOB_PARTITION", job.partition.clone());
        set("SLURM_JOB_QOS", job.qos.clone());
        set("SLURM_NTASKS", job.tasks.to_string());
        set("SLURM_NPROCS", job.tasks.to_string());
        set("SLURM_CPUS_PER_TASK", job.cpus_per_task.to_string());
        set("SLURM_JOB_NODELIST", job.node_list.clone());
        set("SLURM_NODELIST", job.node_list.clone());
        set("SLURM_JOB_NUM_NODES", job.nodes.to_string());
        set("SLURM_NNODES", job.nodes.to_string());
        set("SLURM_SUBMIT_DIR", job.workdir.clone());
        set("SLURM_CPUS_ON_NODE", here.cores.len().to_string());
        // Job-wide, node by node, in Slurm's `N(xM),K` form.
        let per_node = |f: fn(&api::NodeAllocation) -> u64| {
            let values: Vec<u64> = job.allocation.iter().map(f).collect();
            if values.is_empty() {
                // A view without the allocation: this node's part.
                f(&here).to_string()
            } else {
                slurm_counts(&values)
            }
        };
        set("SLURM_TASKS_PER_NODE", per_node(|n| n.tasks as u64));
        set(
            "SLURM_JOB_CPUS_PER_NODE",
            per_node(|n| n.cores.len() as u64),
        );
        // The batch script is the job's `batch` step: task 0 on the first node.
        set("SLURM_PROCID", "0".into());
        set("SLURM_LOCALID", "0".into());
        set("SLURM_NODEID", "0".into());
        set("SLURM_GTIDS", "0".into());
        set("SLURM_MEM_PER_NODE", here.memory_mb.to_string());
        set("SLURMD_NODENAME", self.node.clone());
        set("GANTRY_NODE", self.node.clone());
        set("GANTRY_JOB_CPUS", cpus.join(","));
        set("SLURM_UMASK", format!("{:04o}", l.umask & 0o777));
        if job.time_limit_s > 0 {
            set("SLURM_JOB_TIME_LIMIT", job.time_limit_s.to_string());
        }
        // Set once a job runs again (requeued after a node failure, a preemption or
        // `scontrol requeue`), as Slurm does.
        if job.requeue_count > 0 {
            set("SLURM_RESTART_COUNT", job.requeue_count.to_string());
        }
        if !gpus.is_empty() {
            set("CUDA_VISIBLE_DEVICES", gpus.join(","));
            set("SLURM_JOB_GPUS", gpus.join(","));
            set("SLURM_GPUS_ON_NODE", gpus.len().to_string());
            set("GPU_DEVICE_ORDINAL", gpus.join(","));
        }
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), "/usr/local/bin:/usr/bin:/bin".into()));
        }
        env
    }

    fn spawn(&self, l: &api::LaunchJob, job: &api::JobInfo) -> Result<(), String> {
        let key = (job.job_id, l.run);
        let (uid, gid) = (l.uid, l.gid);
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let identity = (as_root && uid != 0).then(|| Identity {
            uid,
            gid,
            groups: groups_of(uid, gid),
        });
        let mut cmd = if l.allocation_only {
            // Holds the allocation for srun/salloc steps until the controller ends it:
            // a process like any job's, so limits, cancellation and suspension apply.
            let mut c = std::process::Command::new("sleep");
            c.arg("infinity");
            c
        } else if !l.script.is_empty() {
            let owner = identity.as_ref().map(|i| (i.uid, i.gid));
            let path = self
                .spool
                .write_script(key, &l.script, owner)
                .map_err(|e| e.to_string())?;
            let mut c = std::process::Command::new("/bin/bash");
            c.arg(path);
            c
        } else {
            let Some((program, args)) = l.argv.split_first() else {
                return Err("the launch carries neither a script nor a command".into());
            };
            let mut c = std::process::Command::new(program);
            c.args(args);
            c
        };
        cmd.env_clear().envs(self.environment(l, job));
        let cpus: Vec<usize> = l
            .here
            .as_ref()
            .map(|h| self.cpus_of(&h.cores))
            .unwrap_or_default();
        let setup = ChildSetup {
            cpus,
            identity,
            umask: l.umask & 0o777,
            workdir: job.workdir.clone(),
            output: launch::Output::Files {
                stdout: job.stdout_path.clone(),
                stderr: (job.stderr_path != job.stdout_path).then(|| job.stderr_path.clone()),
                append: l.append_output,
            },
            controlling_tty: false,
        };
        let child = launch::spawn(cmd, &setup)?;
        let pid = child.id() as i32;
        // So a restarted agent can end what this one started.
        if let Err(e) = self.spool.record_group(key, pid) {
            tracing::warn!(job = job.job_id, error = %e, "cannot record the job's process group");
        }
        let deadline = (job.time_limit_s > 0)
            .then(|| Instant::now() + Duration::from_secs(job.time_limit_s as u64));
        self.lock().running.insert(
            key,
            Running {
                pgid: pid,
                deadline,
                suspended_at: None,
                ending: None,
                grace: Duration::from_secs(l.kill_grace_s as u64),
            },
        );
        tracing::info!(job = job.job_id, run = l.run, pid, cpus = ?setup.cpus, "job started");
        // The child is waited for on a thread of its own: wait4 gives its resource use.
        let jobs = self.clone();
        std::thread::spawn(move || {
            drop(child);
            let mut status = 0;
            // SAFETY: rusage is plain data; wait4 fills it for our own child `pid`.
            let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
            let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
            let ending = jobs.lock().running.get(&key).and_then(|r| r.ending);
            let exit_code = if rc < 0 {
                None
            } else if libc::WIFEXITED(status) {
                Some(libc::WEXITSTATUS(status))
            } else if libc::WIFSIGNALED(status) {
                Some(128 + libc::WTERMSIG(status))
            } else {
                None
            };
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            let ended = Ended {
                job_id: key.0,
                run: key.1,
                state: ending.unwrap_or("EXITED"),
                exit_code,
                message: String::new(),
                user_cpu_s: tv(usage.ru_utime),
                system_cpu_s: tv(usage.ru_stime),
                max_rss_mb: (usage.ru_maxrss as u64) / 1024,
            };
            tracing::info!(job = key.0, run = key.1, state = ended.state, exit_code = ?ended.exit_code, "job ended");
            // Whatever the script left behind in its group goes too.
            signal_group(pid, libc::SIGKILL);
            jobs.finish(ended);
        });
        Ok(())
    }

    /// Ends a run: SIGTERM to its group, then SIGKILL after the grace period.
    pub fn end(&self, key: RunKey, why: &'static str) {
        let (pgid, grace, was_stopped) = {
            let mut inner = self.lock();
            let Some(r) = inner.running.get_mut(&key) else {
                return;
            };
            if r.ending.is_some() {
                return;
            }
            r.ending = Some(why);
            (r.pgid, r.grace, r.suspended_at.is_some())
        };
        tracing::info!(job = key.0, run = key.1, why, "ending job");
        if why == "TIMEOUT" {
            let _ = self.ended_tx.send(Ended {
                job_id: key.0,
                run: key.1,
                state: ENDING_AT_TIME_LIMIT,
                exit_code: None,
                message: String::new(),
                user_cpu_s: 0.0,
                system_cpu_s: 0.0,
                max_rss_mb: 0,
            });
        }
        signal_group(pgid, libc::SIGTERM);
        if was_stopped {
            signal_group(pgid, libc::SIGCONT);
        }
        let jobs = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            if jobs.lock().running.contains_key(&key) {
                signal_group(pgid, libc::SIGKILL);
            }
        });
    }

    /// Signals a run's process group, or with `shell_only` its batch shell alone (the
    /// group's leader).
    pub fn signal(&self, key: RunKey, sig: i32, shell_only: bool) {
        if let Some(r) = self.lock().running.get(&key) {
            if shell_only {
                // SAFETY: kill(2) on the run's own leader; no memory involved.
                unsafe {
                    libc::kill(r.pgid, sig);
                }
            } else {
                signal_group(r.pgid, sig);
            }
        }
    }

    /// Stops the run's processes; its time limit pauses.
    pub fn suspend(&self, key: RunKey) {
        let mut inner = self.lock();
        if let Some(r) = inner.running.get_mut(&key) {
            if r.suspended_at.is_none() {
                signal_group(r.pgid, libc::SIGSTOP);
                r.suspended_at = Some(Instant::now());
            }
        }
    }

    pub fn resume(&self, key: RunKey) {
        let mut inner = self.lock();
        if let Some(r) = inner.running.get_mut(&key) {
            if let Some(at) = r.suspended_at.take() {
                if let Some(d) = &mut r.deadline {
                    *d += at.elapsed();
                }
                signal_group(r.pgid, libc::SIGCONT);
            }
        }
    }

    /// A run's new time limit: `remaining` seconds from now (`None`: no limit). A run
    /// past it is ended by the next `enforce_limits`.
    pub fn set_time_limit(&self, key: RunKey, remaining: Option<u64>) {
        let mut inner = self.lock();
        if let Some(r) = inner.running.get_mut(&key) {
            r.deadline = remaining.map(|s| Instant::now() + Duration::from_secs(s));
            tracing::info!(job = key.0, run = key.1, ?remaining, "time limit changed");
        }
    }

    /// Ends runs past their time limit; called every second.
    pub fn enforce_limits(&self) {
        let now = Instant::now();
        let late: Vec<RunKey> = self
            .lock()
            .running
            .iter()
            .filter(|(_, r)| r.ending.is_none() && r.suspended_at.is_none())
            .filter(|(_, r)| r.deadline.is_some_and(|d| d <= now))
            .map(|(&key, _)| key)
            .collect();
        for key in late {
            self.end(key, "TIMEOUT");
        }
    }
}

/// Per-node counts in Slurm's compressed form: runs of equal values as `N(xM)`, joined
/// by commas (`[2, 2, 1]` → `2(x2),1`), as in `SLURM_TASKS_PER_NODE`. The kernel's
/// `units::compress_counts` writes the same for steps; the agent does not depend on the
/// kernel, so it keeps this copy.
fn slurm_counts(values: &[u64]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let run = values[i..].iter().take_while(|&&v| v == values[i]).count();
        parts.push(if run > 1 {
            format!("{}(x{run})", values[i])
        } else {
            values[i].to_string()
        });
        i += run;
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A launch repeated after its run ended and was settled (the controller resent it:
    /// a heartbeat crossed the first) is ignored: the run happened once.
    #[test]
    fn a_launch_repeated_after_its_run_was_settled_starts_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let spool_dir = dir.path().join("spool");
        std::fs::create_dir(&spool_dir).unwrap();
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&spool_dir, std::fs::Permissions::from_mode(0o711)).unwrap();
        }
        let (jobs, mut ended) =
            Jobs::new("n1".into(), Spool::open(&spool_dir).unwrap(), Vec::new());
        let marks = dir.path().join("runs");
        // SAFETY: getuid and getgid have no preconditions.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let launch = api::LaunchJob {
            job: Some(api::JobInfo {
                job_id: 7,
                workdir: dir.path().display().to_string(),
                stdout_path: "/dev/null".into(),
                stderr_path: "/dev/null".into(),
                ..Default::default()
            }),
            script: format!("#!/bin/bash\necho ran >> {}\n", marks.display()),
            uid,
            gid,
            umask: 0o022,
            ..Default::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _in_runtime = rt.enter();
        let next_end = |ended: &mut mpsc::UnboundedReceiver<Ended>| {
            rt.block_on(tokio::time::timeout(
                std::time::Duration::from_secs(10),
                ended.recv(),
            ))
        };
        jobs.launch(launch.clone());
        let first = next_end(&mut ended).expect("the run ends").unwrap();
        assert_eq!((first.job_id, first.run, first.exit_code), (7, 0, Some(0)));
        // Repeated while its end is not yet settled: nothing new either.
        jobs.launch(launch.clone());
        jobs.settled(&[(7, 0)]);
        jobs.launch(launch.clone());
        let none = rt.block_on(tokio::time::timeout(
            std::time::Duration::from_millis(500),
            ended.recv(),
        ));
        assert!(none.is_err(), "a second run ended: {none:?}");
        assert_eq!(std::fs::read_to_string(&marks).unwrap(), "ran\n");
    }

    #[test]
    fn per_node_counts_are_written_as_slurm_writes_them() {
        assert_eq!(slurm_counts(&[2, 2]), "2(x2)");
        assert_eq!(slurm_counts(&[8; 8]), "8(x8)");
        assert_eq!(slurm_counts(&[2, 2, 1]), "2(x2),1");
        assert_eq!(slurm_counts(&[1, 2, 1]), "1,2,1");
        assert_eq!(slurm_counts(&[4]), "4");
        assert_eq!(slurm_counts(&[]), "");
    }
}
