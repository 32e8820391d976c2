//! Job steps on this node: a step's tasks here, each its own process (and process
//! group) as the job's user, bound to its own cores, with its own GPUs in
//! `CUDA_VISIBLE_DEVICES` and Slurm's per-task variables; their output read from pipes
//! and streamed to the controller (`StepIo`) with each task's end.
//!
//! The stream ends when every task here has ended and its output is read; it is the
//! step's only channel, so when it breaks (the controller went away) the tasks are
//! killed: nobody could see their output or their end any more.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gantry_api as api;
use gantry_api::agent_link_client::AgentLinkClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::jobs::signal_group;
use crate::jobs::Jobs;
use crate::launch::{self, groups_of, ChildSetup, Identity, Output};
use crate::link::NodeCredential;
use crate::spool::Spool;

pub type Client = AgentLinkClient<InterceptedService<Channel, NodeCredential>>;

/// A job's step: (job id, step id).
pub type StepKey = (u64, u32);

/// Output chunks read ahead of the controller, per step on this node.
const STREAM_DEPTH: usize = 64;
/// The most bytes one output message carries; a longer line goes in pieces.
const CHUNK: usize = 64 * 1024;

#[derive(Default)]
struct StepHere {
    /// Process groups of the tasks still running (each task leads its own).
    groups: Vec<i32>,
    /// Standard input of the step's task 0, when it runs here.
    stdin: Option<StdinWriter>,
    /// Input that came before task 0 started (its tasks start off the command loop),
    /// and whether its end came too.
    early_input: Vec<Vec<u8>>,
    early_end: bool,
    ending: bool,
    /// Between SIGTERM and SIGKILL when the step is ended.
    grace: Duration,
}

/// The steps this agent runs.
#[derive(Clone)]
pub struct Steps {
    inner: Arc<Mutex<HashMap<StepKey, StepHere>>>,
    node: String,
    jobs: Jobs,
    /// Where each task's process group is recorded, so a restarted agent ends them.
    spool: Spool,
}

impl Steps {
    pub fn new(node: String, jobs: Jobs, spool: Spool) -> Self {
        Self {
            inner: Arc::default(),
            node,
            jobs,
            spool,
        }
    }

    /// After a restart: step tasks the previous agent started have lost their stream
    /// (their step ended with it); what is left of each is killed — only a process
    /// group its record still describes.
    pub fn recover(&self) {
        for ((job, step, task), record) in self.spool.recorded_tasks() {
            match record {
                Some(g) if g.still_ours() => {
                    tracing::warn!(
                        job,
                        step,
                        task,
                        "ending a step task left by an earlier agent"
                    );
                    signal_group(g.pgid, libc::SIGKILL);
                }
                _ => {}
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<StepKey, StepHere>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts this node's tasks of a step (unless they run already: a repeated launch)
    /// and streams their output and ends to the controller.
    pub fn launch(&self, l: api::LaunchStep, client: Client) {
        let key = (l.job_id, l.step_id);
        {
            let mut inner = self.lock();
            if inner.contains_key(&key) {
                tracing::debug!(job = l.job_id, step = l.step_id, "step launch repeated");
                return;
            }
            inner.insert(
                key,
                StepHere {
                    grace: Duration::from_secs(l.kill_grace_s.into()),
                    ..StepHere::default()
                },
            );
        }
        let (tx, rx) = mpsc::channel(STREAM_DEPTH);
        let header = api::StepIoMessage {
            what: Some(api::step_io_message::What::Header(api::StepIoHeader {
                node: self.node.clone(),
                job_id: l.job_id,
                step_id: l.step_id,
            })),
        };
        // A fresh channel has room for the header.
        let _ = tx.try_send(header);
        let steps = self.clone();
        tokio::spawn(async move {
            let mut client = client;
            let r = client.step_io(ReceiverStream::new(rx)).await;
            if let Err(e) = r {
                tracing::warn!(job = key.0, step = key.1, error = %e, "step stream to the controller failed; killing the step's tasks");
                steps.kill(key);
            }
            steps.lock().remove(&key);
        });
        // Off the command loop: a step of many tasks takes a while to start, and a
        // cancel for it may come meanwhile.
        let steps = self.clone();
        tokio::task::spawn_blocking(move || {
            steps.spawn_tasks(key, &l, &tx);
            tracing::info!(
                job = key.0,
                step = key.1,
                tasks = l.tasks.len(),
                "step tasks started"
            );
            // The tasks' threads hold the only senders now: the stream ends with them.
            drop(tx);
        });
    }

    fn spawn_tasks(
        &self,
        key: StepKey,
        l: &api::LaunchStep,
        tx: &mpsc::Sender<api::StepIoMessage>,
    ) {
        // SAFETY: geteuid has no preconditions.
        let as_root = unsafe { libc::geteuid() } == 0;
        let ctx = TaskContext {
            identity: (as_root && l.uid != 0).then(|| Identity {
                uid: l.uid,
                gid: l.gid,
                groups: groups_of(l.uid, l.gid),
            }),
            gtids: l
                .tasks
                .iter()
                .map(|t| t.task.to_string())
                .collect::<Vec<_>>()
                .join(","),
            node_cpus: self.jobs.cpus_of(&l.node_cores),
        };
        for (local, t) in l.tasks.iter().enumerate() {
            self.spawn_task(key, l, local, t, tx, &ctx);
        }
    }

    /// Starts one task of the step here (its end is told on `tx` if it cannot start).
    fn spawn_task(
        &self,
        key: StepKey,
        l: &api::LaunchStep,
        local: usize,
        t: &api::StepTaskPlacement,
        tx: &mpsc::Sender<api::StepIoMessage>,
        ctx: &TaskContext,
    ) {
        let ended = |message: String| api::StepIoMessage {
            what: Some(api::step_io_message::What::TaskEnded(api::TaskEnded {
                task: t.task,
                exit_code: 2,
                message,
                cpu_s: 0.0,
            })),
        };
        let Some((program, args)) = l.argv.split_first() else {
            send_later(tx, ended("the step carries no command".into()));
            return;
        };
        let mut cmd = std::process::Command::new(program);
        cmd.args(args).env_clear().envs(&l.env);
        let gpus = if t.gpus.is_empty() {
            &l.node_gpus
        } else {
            &t.gpus
        };
        let gpus: Vec<String> = gpus.iter().map(|g| g.to_string()).collect();
        cmd.env("SLURM_PROCID", t.task.to_string())
            .env("SLURM_LOCALID", local.to_string())
            .env("SLURM_NODEID", l.node_index.to_string())
            .env("SLURM_GTIDS", &ctx.gtids)
            .env("SLURMD_NODENAME", &self.node)
            .env("GANTRY_NODE", &self.node)
            .env("SLURM_CPUS_ON_NODE", l.node_cores.len().to_string())
            .env("GANTRY_TASK_CPUS", join(&t.cores))
            .env(
                "SLURM_CPU_BIND",
                if l.no_cpu_bind { "none" } else { "cores" },
            );
        if !gpus.is_empty() {
            cmd.env("CUDA_VISIBLE_DEVICES", gpus.join(","))
                .env("GPU_DEVICE_ORDINAL", gpus.join(","))
                .env("SLURM_STEP_GPUS", gpus.join(","));
        }
        if !l.env.contains_key("PATH") {
            cmd.env("PATH", "/usr/local/bin:/usr/bin:/bin");
        }
        let reads_stdin = l.has_stdin && t.task == 0;
        let in_terminal = l.pty && t.task == 0;
        let mut master = None;
        if in_terminal {
            let owner = ctx.identity.as_ref().map(|i| (i.uid, i.gid));
            match open_terminal(l.pty_rows, l.pty_cols, owner) {
                Ok((m, slave)) => {
                    let (Ok(out), Ok(err)) = (slave.try_clone(), slave.try_clone()) else {
                        send_later(tx, ended("cannot share the task's terminal".into()));
                        return;
                    };
                    cmd.stdin(slave).stdout(out).stderr(err);
                    master = Some(m);
                }
                Err(e) => {
                    send_later(tx, ended(format!("cannot open a terminal: {e}")));
                    return;
                }
            }
        } else {
            cmd.stdin(if reads_stdin {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        }
        let setup = ChildSetup {
            cpus: if l.no_cpu_bind {
                ctx.node_cpus.clone()
            } else {
                self.jobs.cpus_of(&t.cores)
            },
            identity: ctx.identity.clone(),
            umask: l.umask & 0o777,
            workdir: l.workdir.clone(),
            output: Output::AsSet,
            controlling_tty: in_terminal,
        };
        let mut child = match launch::spawn(cmd, &setup) {
            Ok(c) => c,
            Err(message) => {
                tracing::warn!(job = key.0, step = key.1, task = t.task, %message, "task did not start");
                send_later(tx, ended(message));
                return;
            }
        };
        let pid = child.id() as i32;
        let task_key = (key.0, key.1, t.task);
        if let Err(e) = self.spool.record_task(task_key, pid) {
            tracing::warn!(job = key.0, step = key.1, task = t.task, error = %e, "cannot record the task's process group");
        }
        {
            let mut inner = self.lock();
            let here = inner.entry(key).or_default();
            here.groups.push(pid);
            if here.ending {
                // Ended while its tasks were starting: this one goes too.
                signal_group(pid, libc::SIGTERM);
            }
            let input: Option<Box<dyn std::io::Write + Send>> = match (child.stdin.take(), &master)
            {
                (Some(stdin), _) => Some(Box::new(stdin)),
                (None, Some(m)) => match m.try_clone() {
                    Ok(w) => Some(Box::new(w)),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot write to the task's terminal");
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some(input) = input {
                let writer = StdinWriter::start(input);
                let early = std::mem::take(&mut here.early_input);
                let fits = early.into_iter().all(|data| writer.write(data));
                if fits && !here.early_end {
                    here.stdin = Some(writer);
                }
            }
        }
        // A terminal's output is one stream, passed on as read.
        let terminal = master.map(|m| (Box::new(m) as Box<dyn Read + Send>, false));
        let readers: Vec<_> = [
            terminal,
            child
                .stdout
                .take()
                .map(|o| (Box::new(o) as Box<dyn Read + Send>, false)),
            child
                .stderr
                .take()
                .map(|e| (Box::new(e) as Box<dyn Read + Send>, true)),
        ]
        .into_iter()
        .flatten()
        .map(|(pipe, stderr)| {
            let tx = tx.clone();
            let task = t.task;
            let unbuffered = l.unbuffered || in_terminal;
            std::thread::spawn(move || pump(pipe, task, stderr, unbuffered, &tx))
        })
        .collect();
        let tx = tx.clone();
        let steps = self.clone();
        let task = t.task;
        std::thread::spawn(move || {
            drop(child);
            let (exit_code, cpu_s) = wait(pid);
            // What the task left in its group goes too; then its pipes close.
            signal_group(pid, libc::SIGKILL);
            for r in readers {
                let _ = r.join();
            }
            if let Some(here) = steps.lock().get_mut(&key) {
                here.groups.retain(|&g| g != pid);
            }
            steps.spool.forget_task(task_key);
            tracing::debug!(job = key.0, step = key.1, task, exit_code, "task ended");
            let _ = tx.blocking_send(api::StepIoMessage {
                what: Some(api::step_io_message::What::TaskEnded(api::TaskEnded {
                    task,
                    exit_code,
                    message: String::new(),
                    cpu_s,
                })),
            });
        });
    }

    /// Sends `sig` to every task of the step here.
    /// The process groups of the running tasks of every step here.
    pub fn groups(&self) -> Vec<(StepKey, Vec<i32>)> {
        self.lock()
            .iter()
            .map(|(&k, h)| (k, h.groups.clone()))
            .collect()
    }

    pub fn signal(&self, key: StepKey, sig: i32) {
        if let Some(here) = self.lock().get(&key) {
            for &g in &here.groups {
                signal_group(g, sig);
            }
        }
    }

    /// Ends the step's tasks here: SIGTERM, then SIGKILL after the grace period.
    pub fn end(&self, key: StepKey) {
        let grace = {
            let mut inner = self.lock();
            let Some(here) = inner.get_mut(&key) else {
                return;
            };
            if here.ending {
                return;
            }
            here.ending = true;
            here.grace
        };
        tracing::info!(job = key.0, step = key.1, "ending step");
        self.signal(key, libc::SIGTERM);
        self.signal(key, libc::SIGCONT);
        let steps = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            steps.kill(key);
        });
    }

    fn kill(&self, key: StepKey) {
        self.signal(key, libc::SIGKILL);
    }

    /// Standard input for the step's task 0 (an empty chunk closes it).
    pub fn input(&self, key: StepKey, data: Vec<u8>) {
        let mut inner = self.lock();
        let Some(here) = inner.get_mut(&key) else {
            return;
        };
        let Some(w) = &here.stdin else {
            // Task 0 has not started yet: kept for it, within the same bound.
            let held: usize = here.early_input.iter().map(Vec::len).sum();
            if data.is_empty() {
                here.early_end = true;
            } else if held + data.len() <= MAX_STDIN_QUEUED {
                here.early_input.push(data);
            }
            return;
        };
        if data.is_empty() {
            here.stdin = None;
        } else if !w.write(data) {
            tracing::warn!(
                job = key.0,
                step = key.1,
                "task 0 leaves its standard input unread past the bound; closing it"
            );
            here.stdin = None;
        }
    }
}

fn join(v: &[u32]) -> String {
    v.iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// The most bytes of standard input an agent holds for a task that has not read them.
const MAX_STDIN_QUEUED: usize = 16 << 20;

/// A thread that writes what it is given to a task's standard input, so a task that
/// does not read never blocks the agent; dropping it closes the input.
struct StdinWriter {
    tx: std::sync::mpsc::Sender<Vec<u8>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl StdinWriter {
    fn start(mut stdin: Box<dyn std::io::Write + Send>) -> Self {
        use std::sync::atomic::Ordering;
        let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
        let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let left = queued.clone();
        std::thread::spawn(move || {
            use std::io::Write;
            while let Ok(data) = rx.recv() {
                left.fetch_sub(data.len(), Ordering::Relaxed);
                if stdin.write_all(&data).is_err() {
                    break;
                }
            }
        });
        Self { tx, queued }
    }

    /// Queues `data`; false when the task has left too much unread (the input is then
    /// to be closed).
    fn write(&self, data: Vec<u8>) -> bool {
        use std::sync::atomic::Ordering;
        let n = data.len();
        if self.queued.fetch_add(n, Ordering::Relaxed) + n > MAX_STDIN_QUEUED {
            return false;
        }
        self.tx.send(data).is_ok()
    }
}

/// Reads a task's pipe and sends its output: whole lines (a line longer than
/// [`CHUNK`] in pieces), or as read when `unbuffered`.
fn pump(
    mut pipe: Box<dyn Read + Send>,
    task: u32,
    stderr: bool,
    unbuffered: bool,
    tx: &mpsc::Sender<api::StepIoMessage>,
) {
    let send = |data: Vec<u8>| {
        tx.blocking_send(api::StepIoMessage {
            what: Some(api::step_io_message::What::Output(api::TaskOutput {
                task,
                stderr,
                data,
            })),
        })
        .is_ok()
    };
    let mut buf = vec![0u8; CHUNK];
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let n = match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if unbuffered {
            if !send(buf[..n].to_vec()) {
                return;
            }
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        let cut = match pending.iter().rposition(|&b| b == b'\n') {
            Some(i) => i + 1,
            None if pending.len() >= CHUNK => pending.len(),
            None => continue,
        };
        let rest = pending.split_off(cut);
        if !send(std::mem::replace(&mut pending, rest)) {
            return;
        }
    }
    if !pending.is_empty() {
        send(pending);
    }
}

/// Waits for a task: its exit code (128 + N when signal N ended it) and CPU seconds.
fn wait(pid: i32) -> (i32, f64) {
    let mut status = 0;
    // SAFETY: rusage is plain data; wait4 fills it for our own child `pid`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    let code = if rc < 0 {
        1
    } else if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        1
    };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    (code, tv(usage.ru_utime) + tv(usage.ru_stime))
}

/// A pseudo-terminal of `rows` × `cols` (0: the kernel's default): the master for the
/// agent, the slave for the task, owned by the task's user when the agent is root.
/// Both are close-on-exec, so no other child keeps the terminal open.
fn open_terminal(
    rows: u32,
    cols: u32,
    owner: Option<(u32, u32)>,
) -> std::io::Result<(std::fs::File, std::os::fd::OwnedFd)> {
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (-1, -1);
    let size = libc::winsize {
        ws_row: rows.min(u16::MAX.into()) as u16,
        ws_col: cols.min(u16::MAX.into()) as u16,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: openpty fills the two descriptors; the name buffer is not asked for.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &size,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both descriptors were just opened and are owned here alone.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [&master, &slave] {
        use std::os::fd::AsRawFd;
        // SAFETY: fcntl on a descriptor we own.
        if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    if let Some((uid, gid)) = owner {
        // The terminal the agent made, by descriptor: never a path a user named.
        std::os::unix::fs::fchown(&slave, Some(uid), Some(gid))?;
    }
    Ok((std::fs::File::from(master), slave))
}

/// Sends without waiting for room (the stream drains it). Called where tasks start,
/// on a blocking thread of the runtime.
fn send_later(tx: &mpsc::Sender<api::StepIoMessage>, m: api::StepIoMessage) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let _ = tx.send(m).await;
    });
}

/// What every task of a step here shares while they start.
struct TaskContext {
    /// Who the tasks become (`None`: the agent is not root and stays itself).
    identity: Option<Identity>,
    /// `SLURM_GTIDS`: the step's task ids on this node.
    gtids: String,
    /// The job's CPUs here, for `--cpu-bind=none`.
    node_cpus: Vec<usize>,
}
