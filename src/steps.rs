//! `srun` and `salloc`: job steps and interactive allocations.
//!
//! Inside an allocation (`SLURM_JOB_ID` set, or `--jobid`) `srun` starts a step of that
//! job: the controller places its tasks on the job's nodes and the agents start them;
//! their output streams back here (labelled with `-l`, or into `-o`/`-e` files), Ctrl-C
//! reaches the tasks, and `srun` exits with the highest task exit code. Outside one,
//! `srun` first makes an allocation (a job with no batch script), runs its step there,
//! and releases it. `salloc` makes the allocation and runs a command here, on this
//! host, with the allocation's environment.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gantry_api as api;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;

use crate::batch::{distribution, JobOptions};
use crate::client::{client, refused, Client, Conn, Refused};

/// `srun`'s own options, besides the job options an allocation takes.
#[derive(Args, Debug, Default)]
pub struct StepOptions {
    /// Run inside this job's allocation (default: $SLURM_JOB_ID, when set).
    #[arg(long)]
    pub jobid: Option<u64>,
    /// Prefix each output line with its task id.
    #[arg(short = 'l', long)]
    pub label: bool,
    /// Pass output on as it is read, not a line at a time.
    #[arg(short = 'u', long)]
    pub unbuffered: bool,
    /// End the step when a task exits with a non-zero code (-K, --kill-on-bad-exit[=1];
    /// =0 turns it off).
    #[arg(
        short = 'K',
        long = "kill-on-bad-exit",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "1"
    )]
    pub kill_on_bad_exit: Option<u8>,
    /// Share resources with other steps of the job.
    #[arg(long)]
    pub overlap: bool,
    /// Hold only the CPUs the tasks use (other steps may use the rest).
    #[arg(long)]
    pub exact: bool,
    /// CPU binding: cores (default: each task on its own cores) or none.
    #[arg(long = "cpu-bind", alias = "cpu_bind")]
    pub cpu_bind: Option<String>,
    /// Which GPUs each task sees: closest (those near its cores; its own with
    /// --gpus-per-task), none (all of the step's on its node), per_task:N (N of its own).
    #[arg(long = "gpu-bind")]
    pub gpu_bind: Option<String>,
    /// MPI plugin: none (and pmi2/pmix, which are not offered: launch MPI with mpirun).
    #[arg(long)]
    pub mpi: Option<String>,
    /// Accepted for Open MPI's launcher (it runs its daemons as a step).
    #[arg(long = "external-launcher", hide = true)]
    pub external_launcher: bool,
    /// Run task 0 in a pseudo-terminal (an interactive shell: `srun --pty bash`); this
    /// terminal is in raw mode meanwhile, so keys (Ctrl-C too) go to the task.
    #[arg(long)]
    pub pty: bool,
    /// Less chatter from srun itself.
    #[arg(short = 'Q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct SrunArgs {
    #[command(flatten)]
    pub opts: JobOptions,
    #[command(flatten)]
    pub step: StepOptions,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct SallocArgs {
    #[command(flatten)]
    pub opts: JobOptions,
    /// The command to run here with the allocation (default: your $SHELL).
    #[arg(trailing_var_arg = true)]
    pub command: Vec<String>,
}

/// The job `srun` runs in: given, or the one whose allocation we are inside.
fn enclosing_job(step: &StepOptions) -> Result<Option<u64>> {
    if let Some(id) = step.jobid {
        return Ok(Some(id));
    }
    match std::env::var("SLURM_JOB_ID") {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map(Some)
            .map_err(|_| anyhow!("SLURM_JOB_ID is '{v}', not a job id")),
        _ => Ok(None),
    }
}

/// An option given on the command line, else (inside an allocation) the variable the
/// job's own options set, as srun reads `SLURM_GPUS_PER_TASK` and `SLURM_DISTRIBUTION`.
fn or_from_job<T: std::str::FromStr>(given: Option<T>, var: &str) -> Option<T> {
    given.or_else(|| std::env::var(var).ok()?.trim().parse().ok())
}

fn step_request(job_id: u64, a: &SrunArgs) -> Result<api::StepRequest> {
    let o = &a.opts;
    let s = &a.step;
    match s.mpi.as_deref().map(str::trim) {
        None | Some("none") | Some("") => {}
        Some(other) => bail!(
            "--mpi={other}: direct MPI launch (PMI) is not offered; start MPI programs with mpirun inside the allocation"
        ),
    }
    let no_cpu_bind = match s
        .cpu_bind
        .as_deref()
        .map(|b| b.trim_start_matches("verbose,"))
    {
        None | Some("cores") | Some("core") | Some("threads") | Some("verbose") => false,
        Some("none") | Some("no") => true,
        Some(other) => bail!("--cpu-bind={other} is not offered (cores or none)"),
    };
    let mut gpus_per_task = or_from_job(o.gpus_per_task, "SLURM_GPUS_PER_TASK").unwrap_or(0);
    let gpu_bind = match s
        .gpu_bind
        .as_deref()
        .map(|b| b.trim_start_matches("verbose,"))
    {
        None => api::GpuBind::Default,
        Some("closest") => api::GpuBind::Closest,
        Some("none") => api::GpuBind::None,
        Some(b) if b.starts_with("per_task:") => {
            gpus_per_task = b["per_task:".len()..]
                .parse()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| anyhow!("--gpu-bind={b}: per_task takes a positive count"))?;
            api::GpuBind::Default
        }
        Some(other) => {
            bail!("--gpu-bind={other} is not offered (closest, none or per_task:N)")
        }
    };
    let nodes = match &o.nodes {
        None => None,
        Some(n) => Some(
            n.split('-')
                .next()
                .unwrap_or(n)
                .trim()
                .parse::<u32>()
                .map_err(|_| anyhow!("--nodes: '{n}' is not a number"))?,
        ),
    };
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let workdir = match &o.chdir {
        Some(d) if std::path::Path::new(d).is_absolute() => d.clone(),
        Some(d) => cwd.join(d).display().to_string(),
        None => cwd.display().to_string(),
    };
    let env = crate::batch::export_env(o.export.as_deref())?;
    Ok(api::StepRequest {
        job_id,
        argv: a.command.clone(),
        env,
        workdir,
        nodes,
        tasks: o.ntasks,
        tasks_per_node: o.ntasks_per_node,
        cpus_per_task: o.cpus_per_task.unwrap_or(0),
        gpus_per_task,
        nodelist: o.nodelist.clone().unwrap_or_default(),
        exclude: o.exclude.clone().unwrap_or_default(),
        exact: s.exact || o.exclusive,
        overlap: s.overlap,
        distribution: distribution(
            or_from_job(o.distribution.clone(), "SLURM_DISTRIBUTION").as_deref(),
        )? as i32,
        no_cpu_bind,
        kill_on_bad_exit: s.kill_on_bad_exit.is_some_and(|k| k != 0),
        name: o.job_name.clone().unwrap_or_default(),
        unbuffered: s.unbuffered,
        umask: crate::batch::own_umask(),
        pty: s.pty,
        gpu_bind: gpu_bind as i32,
        pty_rows: terminal_size().map_or(0, |(r, _)| r),
        pty_cols: terminal_size().map_or(0, |(_, c)| c),
    })
}

/// `srun`: a step in the enclosing allocation, or an allocation made for it.
pub async fn srun(conn: &Conn, a: SrunArgs) -> Result<u8> {
    if let Some(job) = enclosing_job(&a.step)? {
        let req = step_request(job, &a)?;
        let mut c = client(conn).await?;
        return run_step(&mut c, req, &a).await;
    }
    // No allocation yet: make one for this step, run it, release it.
    let mut c = client(conn).await?;
    let name = a.command[0]
        .rsplit('/')
        .next()
        .unwrap_or("srun")
        .to_string();
    let job = allocate(&mut c, &a.opts, &name, "srun", a.step.quiet).await?;
    let req = step_request(job, &a);
    let code = match req {
        Ok(req) => run_step(&mut c, req, &a).await,
        Err(e) => Err(e),
    };
    let exit = match &code {
        Ok(c) => i32::from(*c),
        Err(_) => 1,
    };
    release(&mut c, job, exit).await;
    code
}

/// Submits an allocation with no batch script and waits until it runs. Ctrl-C while
/// it waits cancels it.
async fn allocate(
    c: &mut Client,
    opts: &JobOptions,
    name: &str,
    tool: &str,
    quiet: bool,
) -> Result<u64> {
    let mut opts = opts.clone();
    // -o/-e are the step's, not the allocation's.
    opts.output = None;
    opts.error = None;
    let mut sub = opts.submission(name, String::new(), Vec::new())?;
    sub.allocation_only = true;
    if !sub.array.is_empty() {
        bail!("--array is for sbatch: an allocation for {tool} is one job");
    }
    let reply = c
        .submit(api::SubmitRequest { job: Some(sub) })
        .await
        .map_err(refused)?
        .into_inner();
    let id = reply.job_id;
    let mut said_waiting = false;
    let mut pause = Duration::from_millis(50);
    loop {
        let info = tokio::select! {
            r = c.show_job(api::ShowJobRequest { job_id: id }) => r.map_err(refused)?.into_inner(),
            _ = tokio::signal::ctrl_c() => {
                let _ = c.cancel(api::CancelRequest { job_ids: vec![id], ..Default::default() }).await;
                eprintln!("{tool}: Job allocation {id} has been revoked.");
                return Err(anyhow::Error::new(Refused { message: format!("{tool}: interrupted while waiting for job {id}"), code: 1 }));
            }
        };
        match info.state.as_str() {
            "RUNNING" => {
                if said_waiting || tool == "salloc" {
                    eprintln!("{tool}: job {id} has been allocated resources");
                }
                return Ok(id);
            }
            "PENDING" | "REQUEUED" => {
                if !said_waiting && pause >= Duration::from_millis(400) && !quiet {
                    eprintln!("{tool}: job {id} queued and waiting for resources");
                    said_waiting = true;
                }
            }
            other => bail!(
                "{tool}: job {id} ended before it could run ({other}: {})",
                info.reason
            ),
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(500));
    }
}

async fn release(c: &mut Client, job: u64, exit_code: i32) {
    if let Err(e) = c
        .release(api::ReleaseRequest {
            job_id: job,
            exit_code,
        })
        .await
    {
        eprintln!("srun: could not release job {job}: {}", e.message());
    }
}

/// Where step output goes: this terminal (optionally labelled) or files by pattern.
struct Sink {
    label_width: Option<usize>,
    out_pattern: Option<String>,
    err_pattern: Option<String>,
    files: HashMap<String, std::fs::File>,
    job: u64,
    step: u32,
    nodes: HashMap<u32, (usize, String)>,
}

impl Sink {
    /// A file pattern's name for one task (Slurm's): %t task, %n node index, %N node
    /// name, %j job, %s step, %J job.step, %u user, %x job name, %A and %a the array job
    /// and task (from the job's environment), %%; a width zero-pads numbers (%3t).
    fn path(&self, pattern: &str, task: u32) -> String {
        use gantry_kernel::units::{expand_file_pattern, PatternField};
        let (index, node) = self.nodes.get(&task).cloned().unwrap_or((0, String::new()));
        let env_number = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        expand_file_pattern(pattern, |c| {
            Some(match c {
                't' => PatternField::Number(u64::from(task)),
                'n' => PatternField::Number(index as u64),
                'N' => PatternField::Text(node.clone()),
                'j' => PatternField::Number(self.job),
                's' => PatternField::Number(u64::from(self.step)),
                'J' => PatternField::Text(format!("{}.{}", self.job, self.step)),
                'u' => PatternField::Text(std::env::var("USER").unwrap_or_default()),
                'x' => PatternField::Text(std::env::var("SLURM_JOB_NAME").unwrap_or_default()),
                'A' => PatternField::Number(env_number("SLURM_ARRAY_JOB_ID").unwrap_or(self.job)),
                'a' => {
                    PatternField::Number(env_number("SLURM_ARRAY_TASK_ID").unwrap_or(4_294_967_294))
                }
                _ => return None,
            })
        })
    }

    fn write(&mut self, o: &api::TaskOutput) -> Result<()> {
        let pattern = if o.stderr {
            self.err_pattern.as_ref().or(self.out_pattern.as_ref())
        } else {
            self.out_pattern.as_ref()
        };
        if let Some(p) = pattern.cloned() {
            let path = self.path(&p, o.task);
            if !self.files.contains_key(&path) {
                let f = std::fs::File::create(&path)
                    .with_context(|| format!("cannot create the output file {path}"))?;
                self.files.insert(path.clone(), f);
            }
            if let Some(f) = self.files.get_mut(&path) {
                f.write_all(&o.data)?;
            }
            return Ok(());
        }
        let text: Vec<u8> = match self.label_width {
            None => o.data.clone(),
            Some(w) => {
                let mut v = Vec::with_capacity(o.data.len() + 8);
                for line in o.data.split_inclusive(|&b| b == b'\n') {
                    v.extend_from_slice(format!("{:>w$}: ", o.task).as_bytes());
                    v.extend_from_slice(line);
                }
                v
            }
        };
        let r = if o.stderr {
            let mut e = std::io::stderr().lock();
            e.write_all(&text).and_then(|()| e.flush())
        } else {
            let mut s = std::io::stdout().lock();
            s.write_all(&text).and_then(|()| s.flush())
        };
        // A closed stdout (srun ... | head) is not srun's failure.
        if let Err(e) = r {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                return Err(e.into());
            }
        }
        Ok(())
    }
}

/// The size of the terminal on standard output, if it is one.
fn terminal_size() -> Option<(u32, u32)> {
    // SAFETY: winsize is plain data that TIOCGWINSZ fills.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl on our own standard output with a pointer to `ws`.
    let rc = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then_some((ws.ws_row.into(), ws.ws_col.into()))
}

/// This terminal in raw mode while it lives (for `--pty`), restored when dropped.
struct RawTerminal(Option<libc::termios>);

impl RawTerminal {
    fn enter() -> Self {
        // SAFETY: isatty, tcgetattr, cfmakeraw and tcsetattr on our own standard input
        // with a termios we own.
        unsafe {
            if libc::isatty(libc::STDIN_FILENO) != 1 {
                return Self(None);
            }
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return Self(None);
            }
            let mut raw = saved;
            libc::cfmakeraw(&mut raw);
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &raw) != 0 {
                return Self(None);
            }
            Self(Some(saved))
        }
    }
}

impl Drop for RawTerminal {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings read in `enter`.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}

/// Runs one step and follows it to its end; returns the highest task exit code.
async fn run_step(c: &mut Client, req: api::StepRequest, a: &SrunArgs) -> Result<u8> {
    let job = req.job_id;
    let _raw = req.pty.then(RawTerminal::enter);
    let (tx, rx) = mpsc::channel::<api::StepInput>(16);
    tx.send(api::StepInput {
        what: Some(api::step_input::What::Start(req)),
    })
    .await
    .map_err(|_| anyhow!("cannot send the step request"))?;
    let mut events = c
        .run_step(ReceiverStream::new(rx))
        .await
        .map_err(refused)?
        .into_inner();
    forward_stdin(tx.clone());
    let mut sink = Sink {
        label_width: None,
        out_pattern: a.opts.output.clone(),
        err_pattern: a.opts.error.clone(),
        files: HashMap::new(),
        job,
        step: 0,
        nodes: HashMap::new(),
    };
    let label = a.step.label;
    let quiet = a.step.quiet;
    let mut worst = 0i32;
    let mut last_interrupt: Option<std::time::Instant> = None;
    loop {
        let ev = tokio::select! {
            ev = events.next() => ev,
            _ = tokio::signal::ctrl_c() => {
                let now = std::time::Instant::now();
                let twice = last_interrupt.is_some_and(|t| now.duration_since(t) < Duration::from_secs(1));
                last_interrupt = Some(now);
                let signal = if twice {
                    eprintln!("srun: forcing job termination");
                    9
                } else {
                    eprintln!("srun: interrupt (one more within 1 sec to abort)");
                    libc::SIGINT
                };
                let _ = tx.send(api::StepInput { what: Some(api::step_input::What::Signal(signal)) }).await;
                continue;
            }
        };
        let ev = match ev {
            Some(Ok(ev)) => ev,
            Some(Err(s)) => return Err(refused(s)),
            None => bail!("the controller ended the step's stream before the step ended"),
        };
        use api::step_event::What;
        match ev.what {
            Some(What::Waiting(why)) if !quiet => {
                eprintln!("srun: Job {job} step creation temporarily disabled, retrying ({why})");
            }
            Some(What::Started(s)) => {
                sink.step = s.step_id;
                for (index, n) in s.nodes.iter().enumerate() {
                    for &t in &n.tasks {
                        sink.nodes.insert(t, (index, n.node.clone()));
                    }
                }
                if label && !a.step.pty {
                    sink.label_width = Some(s.tasks.saturating_sub(1).to_string().len());
                }
            }
            Some(What::Output(o)) => sink.write(&o)?,
            Some(What::TaskEnded(t)) => {
                worst = worst.max(t.exit_code);
                if t.exit_code != 0 {
                    let node = sink
                        .nodes
                        .get(&t.task)
                        .map(|n| n.1.clone())
                        .unwrap_or_default();
                    if t.message.is_empty() {
                        eprintln!(
                            "srun: error: {node}: task {}: Exited with exit code {}",
                            t.task, t.exit_code
                        );
                    } else {
                        eprintln!("srun: error: {node}: task {}: {}", t.task, t.message);
                    }
                }
            }
            Some(What::Ended(e)) => {
                if e.state == "CANCELLED" && !quiet {
                    eprintln!("srun: StepId={job}.{} was cancelled", sink.step);
                }
                if e.state == "NODE_FAIL" {
                    eprintln!("srun: error: StepId={job}.{}: a node failed", sink.step);
                }
                let code = worst.max(e.exit_code);
                return Ok(code.clamp(0, 255) as u8);
            }
            Some(What::Waiting(_)) | None => {}
        }
    }
}

/// Sends srun's standard input to task 0, a chunk at a time, then its end (an empty
/// chunk). The channel is bounded: a task that reads slowly slows the reading here.
fn forward_stdin(tx: mpsc::Sender<api::StepInput>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let data = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => Vec::new(),
                Ok(n) => buf[..n].to_vec(),
            };
            let end = data.is_empty();
            let input = api::StepInput {
                what: Some(api::step_input::What::Stdin(data)),
            };
            if tx.blocking_send(input).is_err() || end {
                return;
            }
        }
    });
}

/// `salloc`: an allocation, a command here with its environment, then the release.
pub async fn salloc(conn: &Conn, a: SallocArgs) -> Result<u8> {
    let mut c = client(conn).await?;
    let job = allocate(&mut c, &a.opts, "interactive", "salloc", false).await?;
    eprintln!("salloc: Granted job allocation {job}");
    let info = c
        .show_job(api::ShowJobRequest { job_id: job })
        .await
        .map_err(refused)?
        .into_inner();
    let command = if a.command.is_empty() {
        vec![std::env::var("SHELL").unwrap_or_else(|_| "/bin/sh".into())]
    } else {
        a.command.clone()
    };
    let mut cmd = tokio::process::Command::new(&command[0]);
    cmd.args(&command[1..]);
    for (k, v) in allocation_env(&info) {
        cmd.env(k, v);
    }
    // Ctrl-C goes to the command (it shares the terminal); salloc waits for it.
    let status = async {
        let mut child = cmd
            .spawn()
            .with_context(|| format!("cannot run {}", command[0]))?;
        loop {
            tokio::select! {
                s = child.wait() => break Ok::<_, anyhow::Error>(s?),
                _ = tokio::signal::ctrl_c() => continue,
            }
        }
    }
    .await;
    let code = match status {
        Ok(s) => s.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            128 + s.signal().unwrap_or(0)
        }),
        Err(e) => {
            eprintln!("salloc: {e:#}");
            1
        }
    };
    eprintln!("salloc: Relinquishing job allocation {job}");
    release(&mut c, job, code).await;
    Ok(code.clamp(0, 255) as u8)
}

/// What salloc's command sees: Slurm's variables for the allocation.
fn allocation_env(info: &api::JobInfo) -> Vec<(String, String)> {
    let per_node = |f: fn(&api::NodeAllocation) -> u32| {
        let v: Vec<u32> = info.allocation.iter().map(f).collect();
        gantry_kernel::units::compress_counts(&v)
    };
    vec![
        ("SLURM_JOB_ID".into(), info.job_id.to_string()),
        ("SLURM_JOBID".into(), info.job_id.to_string()),
        ("GANTRY_JOB_ID".into(), info.job_id.to_string()),
        ("SLURM_JOB_NAME".into(), info.name.clone()),
        ("SLURM_JOB_NODELIST".into(), info.node_list.clone()),
        ("SLURM_NODELIST".into(), info.node_list.clone()),
        ("SLURM_JOB_NUM_NODES".into(), info.nodes.to_string()),
        ("SLURM_NNODES".into(), info.nodes.to_string()),
        ("SLURM_NTASKS".into(), info.tasks.to_string()),
        ("SLURM_NPROCS".into(), info.tasks.to_string()),
        ("SLURM_JOB_PARTITION".into(), info.partition.clone()),
        ("SLURM_JOB_ACCOUNT".into(), info.account.clone()),
        ("SLURM_TASKS_PER_NODE".into(), per_node(|n| n.tasks)),
        (
            "SLURM_JOB_CPUS_PER_NODE".into(),
            per_node(|n| n.cores.len() as u32),
        ),
        ("SLURM_SUBMIT_DIR".into(), info.workdir.clone()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_patterns_name_the_task_node_and_step() {
        let mut nodes = HashMap::new();
        nodes.insert(3, (1, "gpu02".to_string()));
        let sink = Sink {
            label_width: None,
            out_pattern: None,
            err_pattern: None,
            files: HashMap::new(),
            job: 12,
            step: 4,
            nodes,
        };
        assert_eq!(
            sink.path("out-%j.%s-%t-%n-%N.txt", 3),
            "out-12.4-3-1-gpu02.txt"
        );
        assert_eq!(sink.path("%J %% %q", 3), "12.4 % %q");
    }

    #[test]
    fn distributions_and_bindings_are_slurms() {
        assert_eq!(distribution(None).unwrap(), api::Distribution::Block);
        assert_eq!(
            distribution(Some("cyclic:block")).unwrap(),
            api::Distribution::Cyclic
        );
        assert!(distribution(Some("plane=4")).is_err());
    }
}
