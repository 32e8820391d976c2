//! The commands that talk to a running controller: submit, run, queue, cancel, show,
//! nodes, acct, node drain/resume, policy, token — with tables for people and `--json`
//! for programs. Where Slurm has the same command, the flags and the output are Slurm's.

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Subcommand};
use gantry_api as api;
use gantry_api::client::{connect, Trust, WithToken};
use gantry_api::controller_client::ControllerClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::Code;

use crate::batch::JobOptions;
use crate::format;

pub(crate) type Client = ControllerClient<InterceptedService<Channel, WithToken>>;

/// Where the controller is and who we are.
#[derive(Args, Debug, Clone)]
pub struct Conn {
    /// Controller address: unix:/path/to/gantryd.sock, https://host:port (TLS) or
    /// http://host:port (a plain loopback listener); or several, comma-separated (an
    /// active controller and its standbys: the active one is found and followed).
    #[arg(
        long,
        env = "GANTRY_CONTROLLER",
        default_value = "unix:/run/gantry/gantryd.sock",
        global = true
    )]
    pub controller: String,
    /// Identity token (needed over TCP; on the Unix socket your uid identifies you).
    #[arg(long, env = "GANTRY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// PEM file of the authority that signed the controller's TLS certificate (for
    /// https://; default: the system's authorities).
    #[arg(long, env = "GANTRY_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
}

/// A failed call, with the exit code Slurm's tools use for it.
#[derive(Debug)]
pub struct Refused {
    pub message: String,
    pub code: u8,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
impl std::error::Error for Refused {}

pub(crate) fn refused(s: tonic::Status) -> anyhow::Error {
    let message = match s.code() {
        Code::Unavailable => format!("cannot reach the controller: {}", s.message()),
        Code::Unauthenticated => format!("not authenticated: {}", s.message()),
        _ => s.message().to_string(),
    };
    anyhow::Error::new(Refused { message, code: 1 })
}

pub(crate) async fn client(c: &Conn) -> Result<Client> {
    let channel = connect(&c.controller, &Trust::ca_file(c.ca_file.as_deref())).await?;
    Ok(ControllerClient::with_interceptor(
        channel,
        WithToken::new(c.token.as_deref())?,
    ))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

// ----- submit -----------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub opts: JobOptions,
    /// Print only the job id (for scripts).
    #[arg(long)]
    pub parsable: bool,
    /// Do not exit until the job (every task of an array) has ended; exit with its
    /// exit code (an array's highest).
    #[arg(short = 'W', long)]
    pub wait: bool,
    /// Submit nothing: say when and where the job would start, after every waiting job
    /// (the plan `squeue --start` shows).
    #[arg(long = "test-only")]
    pub test_only: bool,
    /// Wrap this command line in a shell script instead of reading a script file.
    #[arg(long)]
    pub wrap: Option<String>,
    /// The batch script (default: read from standard input).
    pub script: Option<PathBuf>,
    /// Arguments passed to the script.
    #[arg(trailing_var_arg = true)]
    pub args: Vec<String>,
    #[arg(long)]
    pub json: bool,
}

pub async fn submit(conn: &Conn, a: SubmitArgs) -> Result<u8> {
    let (script, origin, name) = match (&a.wrap, &a.script) {
        (Some(w), None) => (
            format!("#!/bin/sh\n{w}\n"),
            "--wrap".to_string(),
            "wrap".to_string(),
        ),
        (Some(_), Some(_)) => bail!("give a script or --wrap, not both"),
        (None, Some(p)) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read the batch script {}", p.display()))?;
            let name = p
                .file_name()
                .map_or("sbatch".into(), |n| n.to_string_lossy().into_owned());
            (text, p.display().to_string(), name)
        }
        (None, None) => {
            use std::io::Read;
            let mut text = String::new();
            std::io::stdin()
                .read_to_string(&mut text)
                .context("cannot read the batch script from standard input")?;
            (text, "<stdin>".to_string(), "sbatch".to_string())
        }
    };
    if !script.starts_with("#!") {
        bail!("{origin}: a batch script must start with a #! line (e.g. #!/bin/bash)");
    }
    let script = if a.args.is_empty() {
        script
    } else {
        // Arguments become the script's positional parameters.
        let quoted: Vec<String> = a
            .args
            .iter()
            .map(|x| format!("'{}'", x.replace('\'', "'\\''")))
            .collect();
        format!("#!/bin/bash\nset -- {}\n{}", quoted.join(" "), script)
    };
    let opts = a.opts.with_directives(&script, &origin)?;
    let job = opts.submission(&name, script, Vec::new())?;
    if a.test_only {
        let t = client(conn)
            .await?
            .test_only(api::SubmitRequest { job: Some(job) })
            .await
            .map_err(refused)?
            .into_inner();
        if t.start == 0 {
            bail!("no start time can be given: the job has no time limit, or the nodes it needs are down");
        }
        eprintln!(
            "sbatch: Job to start at {} using {} processors on nodes {} in partition {}",
            format::timestamp(t.start),
            t.cpus,
            t.nodes,
            t.partition
        );
        return Ok(0);
    }
    let reply = client(conn)
        .await?
        .submit(api::SubmitRequest { job: Some(job) })
        .await
        .map_err(refused)?
        .into_inner();
    if a.json {
        print_json(&serde_json::json!({"job_id": reply.job_id, "job_ids": reply.job_ids}))?;
    } else if a.parsable {
        println!("{}", reply.job_id);
    } else {
        println!("Submitted batch job {}", reply.job_id);
    }
    if !a.wait {
        return Ok(0);
    }
    use std::io::Write;
    let _ = std::io::stdout().flush();
    wait_for(conn, reply.job_id).await
}

/// Every unfinished job the controller lists for `request`, all pages read.
pub(crate) async fn queued(
    c: &mut Client,
    request: api::QueueRequest,
) -> Result<Vec<api::JobInfo>> {
    let mut pages = c.queue(request).await.map_err(refused)?.into_inner();
    let mut jobs = Vec::new();
    while let Some(page) = pages.message().await.map_err(refused)? {
        jobs.extend(page.jobs);
    }
    Ok(jobs)
}

/// `sbatch --wait`: polls until the job (every task of an array) has ended; its exit
/// code, or an array's highest; 1 for a job that ended without one (cancelled before
/// it ran, or lost with its node).
async fn wait_for(conn: &Conn, id: u64) -> Result<u8> {
    let mut c = client(conn).await?;
    let mut pause = std::time::Duration::from_millis(250);
    loop {
        let left = queued(
            &mut c,
            api::QueueRequest {
                job_ids: vec![id],
                ..Default::default()
            },
        )
        .await?;
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
    let mut pages = c
        .accounting(api::AccountingRequest {
            job_ids: vec![id],
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut code = 0u8;
    while let Some(page) = pages.message().await.map_err(refused)? {
        for r in page.records {
            let Some(j) = r.job else { continue };
            let this = match (j.exit_code, j.state.as_str()) {
                (Some(c), _) => c.clamp(0, 255) as u8,
                (None, "COMPLETED") => 0,
                (None, _) => 1,
            };
            code = code.max(this);
        }
    }
    Ok(code)
}

// ----- queue -------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct QueueArgs {
    /// Print help (-h is --noheader, as in Slurm).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,

    /// Only these users' jobs (comma-separated).
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Only your own jobs.
    #[arg(long)]
    pub me: bool,
    /// Only these jobs (comma-separated ids).
    #[arg(short = 'j', long = "jobs", visible_alias = "job")]
    pub jobs: Option<String>,
    /// Only jobs with these names (comma-separated).
    #[arg(short = 'n', long = "name")]
    pub name: Option<String>,
    /// Only jobs of these accounts (comma-separated).
    #[arg(short = 'A', long = "account")]
    pub account: Option<String>,
    /// Only jobs on these nodes (a host list).
    #[arg(short = 'w', long = "nodelist")]
    pub nodelist: Option<String>,
    /// Only jobs in these states (PD,R,... or PENDING,RUNNING,...).
    #[arg(short = 't', long = "states")]
    pub states: Option<String>,
    #[arg(short = 'p', long)]
    pub partition: Option<String>,
    /// No header line.
    #[arg(short = 'h', long = "noheader")]
    pub noheader: bool,
    /// Output format (%i %j %u %t %T %M %l %D %R %P %C %Q ...), as squeue's -o.
    #[arg(short = 'o', long = "format")]
    pub format: Option<String>,
    /// Running job steps instead of jobs (%i is JOB.STEP).
    #[arg(short = 's', long = "steps")]
    pub steps: bool,
    /// One line per array task (pending tasks are otherwise shown together:
    /// `12_[3-9%2]`).
    #[arg(short = 'r', long = "array")]
    pub array: bool,
    /// More columns (state, time limit), after the time of the listing.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Fields by name with optional widths (JobID,Name:20,State,...), as squeue's -O.
    #[arg(short = 'O', long = "Format")]
    pub format_long: Option<String>,
    /// Print again every N seconds until interrupted.
    #[arg(short = 'i', long = "iterate")]
    pub iterate: Option<u64>,
    /// Pending jobs with when and where they are expected to start (START_TIME,
    /// SCHEDNODES): every waiting job planned in priority order, running jobs ending at
    /// their limits.
    #[arg(long = "start")]
    pub start: bool,
    #[arg(long)]
    pub json: bool,
}

/// Jobs named on a command line: plain ids (an array's id stands for the whole array),
/// array tasks (`12_3`, `12_[1-3,7]`) and steps (`12.0`; `12.batch` is the job).
#[derive(Debug, Default, PartialEq)]
pub(crate) struct JobRefs {
    ids: Vec<u64>,
    tasks: Vec<ArrayTasks>,
    steps: Vec<(u64, u32)>,
}

/// Some tasks of one array, as named and as indices.
#[derive(Debug, PartialEq)]
struct ArrayTasks {
    array: u64,
    /// The indices in `--array` syntax, as the controller takes them.
    text: String,
    /// The same, expanded and sorted.
    indices: Vec<u32>,
}

impl JobRefs {
    pub(crate) fn parse(list: &Option<String>) -> Result<Self> {
        let mut refs = Self::default();
        let Some(list) = list else {
            return Ok(refs);
        };
        // Commas separate jobs, except inside a task list's brackets.
        let mut items = Vec::new();
        let (mut depth, mut start) = (0, 0);
        for (i, c) in list.char_indices() {
            match c {
                '[' => depth += 1,
                ']' => depth -= 1,
                ',' if depth == 0 => {
                    items.push(&list[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        items.push(&list[start..]);
        for item in items.into_iter().map(str::trim).filter(|s| !s.is_empty()) {
            let bad = || anyhow!("'{item}' is not a job id (use 12, 12_3, 12_[1-3] or 12.0)");
            if let Some((job, step)) = item.split_once('.') {
                let job: u64 = job.parse().map_err(|_| bad())?;
                match step {
                    "batch" => refs.ids.push(job),
                    _ => refs.steps.push((job, step.parse().map_err(|_| bad())?)),
                }
                continue;
            }
            match item.split_once('_') {
                None => refs.ids.push(item.parse().map_err(|_| bad())?),
                Some((array, tasks)) => {
                    let array: u64 = array.parse().map_err(|_| bad())?;
                    let tasks = tasks
                        .strip_prefix('[')
                        .and_then(|t| t.strip_suffix(']'))
                        .unwrap_or(tasks);
                    let spec = gantry_kernel::job::ArraySpec::parse(tasks)
                        .map_err(|e| anyhow!("'{item}': {e}"))?;
                    refs.tasks.push(ArrayTasks {
                        array,
                        text: tasks.to_string(),
                        indices: spec.indices,
                    });
                }
            }
        }
        Ok(refs)
    }

    /// The ids to ask the controller for: plain ids and the arrays of named tasks.
    fn wanted(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self
            .ids
            .iter()
            .copied()
            .chain(self.tasks.iter().map(|t| t.array))
            .chain(self.steps.iter().map(|&(job, _)| job))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }

    /// Whether a listed job is one of those named (the controller answered whole arrays).
    fn matches(&self, j: &api::JobInfo) -> bool {
        self.names(j.job_id, j.array_job_id, j.array_task_id)
    }

    /// Whether job `id` (task `task` of array `array`, or `array` 0) is one of those
    /// named; every job is when none are.
    pub(crate) fn names(&self, id: u64, array: u64, task: u32) -> bool {
        if self.ids.is_empty() && self.tasks.is_empty() && self.steps.is_empty() {
            return true;
        }
        if self.ids.contains(&id)
            || self.steps.iter().any(|&(job, _)| job == id)
            || (array != 0 && self.ids.contains(&array))
        {
            return true;
        }
        array != 0
            && self
                .tasks
                .iter()
                .any(|t| t.array == array && t.indices.binary_search(&task).is_ok())
    }
}

fn long_state(s: &str) -> String {
    match s.to_ascii_uppercase().as_str() {
        "PD" => "PENDING".into(),
        "R" => "RUNNING".into(),
        "S" => "SUSPENDED".into(),
        "CD" => "COMPLETED".into(),
        "CA" => "CANCELLED".into(),
        "F" => "FAILED".into(),
        "TO" => "TIMEOUT".into(),
        "NF" => "NODE_FAIL".into(),
        "DL" => "DEADLINE".into(),
        "PR" => "PREEMPTED".into(),
        "CG" => "COMPLETING".into(),
        other => other.to_string(),
    }
}

pub async fn queue(conn: &Conn, a: QueueArgs) -> Result<()> {
    let Some(every) = a.iterate else {
        return queue_once(conn, &a).await;
    };
    if every == 0 {
        bail!("--iterate: give a number of seconds, at least 1");
    }
    loop {
        queue_once(conn, &a).await?;
        println!();
        tokio::time::sleep(std::time::Duration::from_secs(every)).await;
    }
}

async fn queue_once(conn: &Conn, a: &QueueArgs) -> Result<()> {
    let mut c = client(conn).await?;
    let user = if a.me {
        c.who_am_i(api::WhoAmIRequest {})
            .await
            .map_err(refused)?
            .into_inner()
            .user
    } else {
        a.user.clone().unwrap_or_default()
    };
    let states: Vec<String> = a
        .states
        .as_deref()
        .map(|s| s.split(',').map(long_state).collect())
        .unwrap_or_default();
    let refs = JobRefs::parse(&a.jobs)?;
    let mut jobs = Vec::new();
    for u in user.split(',') {
        let request = api::QueueRequest {
            user: u.to_string(),
            job_ids: refs.wanted(),
            states: states.clone(),
            partition: a.partition.clone().unwrap_or_default(),
        };
        jobs.extend(
            queued(&mut c, request)
                .await?
                .into_iter()
                .filter(|j| refs.matches(j)),
        );
    }
    let filter = JobFilter::new(&a.name, &a.account, &a.nodelist)?;
    jobs.retain(|j| filter.keeps(j));
    // As squeue: a job named by id that does not exist is an error, exit code 1 (a
    // finished one is merely not listed).
    if jobs.is_empty() {
        for &job_id in &refs.ids {
            if let Err(s) = c.show_job(api::ShowJobRequest { job_id }).await {
                if s.code() == Code::NotFound {
                    return Err(anyhow::Error::new(Refused {
                        message: "slurm_load_jobs error: Invalid job id specified".into(),
                        code: 1,
                    }));
                }
            }
        }
    }
    if a.json {
        return print_json(&jobs_json("squeue", jobs.iter().map(job_json).collect()));
    }
    let t = now();
    if a.steps {
        let fmt = a.format.as_deref().unwrap_or(format::SQUEUE_STEPS_DEFAULT);
        if !a.noheader {
            println!(
                "{}",
                format::squeue_header(fmt)?.replacen("JOBID", "STEPID", 1)
            );
        }
        for j in jobs {
            let j = format::printable_job(j);
            for s in j.steps.iter().filter(|s| s.state == "RUNNING") {
                println!("{}", format::squeue_step_line(fmt, &j, s, t)?);
            }
        }
        return Ok(());
    }
    let fmt = match (&a.format, &a.format_long, a.long, a.start) {
        (Some(f), ..) => f.clone(),
        (None, Some(f), ..) => format::squeue_long_format(f)?,
        (None, None, _, true) => format::SQUEUE_START.to_string(),
        (None, None, true, false) => format::SQUEUE_LONG.to_string(),
        (None, None, false, false) => format::SQUEUE_DEFAULT.to_string(),
    };
    let mut jobs: Vec<api::JobInfo> = jobs.into_iter().map(format::printable_job).collect();
    let mut planned = std::collections::HashMap::new();
    if a.start {
        jobs.retain(|j| j.state == "PENDING" || j.state == "REQUEUED");
        for p in c
            .plan(api::PlanRequest {})
            .await
            .map_err(refused)?
            .into_inner()
            .starts
        {
            planned.insert(p.job_id, (p.start, p.nodes));
        }
        for j in &mut jobs {
            j.start_time = planned.get(&j.job_id).map_or(0, |p| p.0);
        }
    }
    let mut lines = format::queue_lines(jobs, a.array || a.start);
    for l in &mut lines {
        l.sched_nodes = planned.get(&l.job.job_id).map(|p| p.1.clone());
    }
    let mut out = String::new();
    if a.long {
        out.push_str(&format!(
            "{}\n",
            crate::when::now().strftime("%a %b %d %H:%M:%S %Y")
        ));
    }
    if !a.noheader {
        out.push_str(&format::squeue_header(&fmt)?);
        out.push('\n');
    }
    for l in &lines {
        out.push_str(&format::queue_line(&fmt, l, t)?);
        out.push('\n');
    }
    print!("{out}");
    Ok(())
}

/// A job as JSON: Slurm's field names (squeue/sacct `--json`) where they mean the same
/// (`job_id`, `job_state`, `user_name`, `time_limit` in minutes, `nodes` as a host
/// list, `node_count`, ...), Gantry's own beside them (`state`, `time_limit_s`,
/// `allocation`, `steps`, ...).
fn job_json(j: &api::JobInfo) -> serde_json::Value {
    let some = |t: i64| (t > 0).then_some(t);
    serde_json::json!({
        "job_id": j.job_id,
        "array_job_id": (j.array_job_id != 0).then_some(j.array_job_id),
        "array_task_id": (j.array_job_id != 0).then_some(j.array_task_id),
        "name": j.name,
        "user_name": j.user,
        "user_id": j.uid,
        "group_id": j.gid,
        "user": j.user,
        "account": j.account,
        "partition": j.partition,
        "qos": j.qos,
        "job_state": j.state,
        "state": j.state,
        "state_reason": j.reason,
        "reason": j.reason,
        "priority": j.priority,
        "submit_time": j.submit_time,
        "eligible_time": j.begin_time.max(j.submit_time),
        "start_time": some(j.start_time),
        "end_time": some(j.end_time),
        "time_limit": some(j.time_limit_s).map(|s| s / 60),
        "time_limit_s": some(j.time_limit_s),
        "tasks": j.tasks,
        "cpus_per_task": j.cpus_per_task,
        "cpus": j.cores,
        "node_count": j.nodes,
        "nodes": j.node_list,
        "node_list": j.node_list,
        "batch_host": j.allocation.first().map(|n| n.node.clone()),
        "cores": j.cores,
        "gpus": j.gpus,
        "allocation": j.allocation.iter().map(|n| serde_json::json!({
            "node": n.node, "tasks": n.tasks, "cores": n.cores, "memory_mb": n.memory_mb, "gpus": n.gpus,
        })).collect::<Vec<_>>(),
        "exit_code": j.exit_code,
        "current_working_directory": j.workdir,
        "workdir": j.workdir,
        "standard_output": j.stdout_path,
        "standard_error": j.stderr_path,
        "stdout": j.stdout_path,
        "stderr": j.stderr_path,
        "dependency": j.dependency,
        "comment": j.comment,
        "wckey": j.wckey,
        "restart_cnt": j.requeue_count,
        "requeue_count": j.requeue_count,
        "suspended_s": j.suspended_s,
        "steps": j.steps.iter().map(|s| step_json(j, s)).collect::<Vec<_>>(),
    })
}

/// The envelope of Slurm's `--json` listings: `meta`, `errors`, `warnings`, and `jobs`.
fn jobs_json(command: &str, jobs: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "meta": format::json_meta(command),
        "errors": [],
        "warnings": [],
        "jobs": jobs,
    })
}

fn step_json(j: &api::JobInfo, s: &api::StepInfo) -> serde_json::Value {
    serde_json::json!({
        "step_id": format!("{}.{}", format::job_id(j), s.step_id),
        "name": s.name,
        "state": s.state,
        "start_time": s.start_time,
        "end_time": (s.end_time > 0).then_some(s.end_time),
        "node_list": s.node_list,
        "nodes": s.nodes,
        "tasks": s.tasks,
        "exit_code": s.exit_code,
        "cpu_s": s.cpu_s,
    })
}

/// `scontrol show step`'s record of one step.
fn print_step(j: &api::JobInfo, s: &api::StepInfo, now: i64) {
    let ran = match (s.start_time, s.end_time) {
        (0, _) => 0,
        (start, 0) => now - start,
        (start, end) => end - start,
    };
    println!(
        "StepId={}.{} UserId={} StepName={}",
        format::job_id(j),
        s.step_id,
        j.user,
        s.name
    );
    println!(
        "   State={} Partition={} NodeList={} Nodes={} Tasks={} ExitCode={}",
        s.state,
        j.partition,
        s.node_list,
        s.nodes,
        s.tasks,
        s.exit_code.map_or("-".into(), |c| match c {
            c if c > 128 => format!("0:{}", c - 128),
            c => format!("{c}:0"),
        })
    );
    println!(
        "   StartTime={} RunTime={} TimeLimit={} TotalCPU={:.0}s",
        format::timestamp(s.start_time),
        format::clock(ran),
        format::clock_limit(j.time_limit_s),
        s.cpu_s
    );
}

// ----- cancel ------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct CancelArgs {
    /// Job ids (an array's id cancels every task); with filters, only those that match.
    pub jobs: Vec<String>,
    /// Only jobs of these users (comma-separated).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Only your own jobs.
    #[arg(long)]
    pub me: bool,
    /// Only jobs with this name.
    #[arg(short = 'n', long = "name", visible_alias = "jobname")]
    pub name: Option<String>,
    /// Only jobs in this state (PENDING, RUNNING, SUSPENDED, or PD, R, S).
    #[arg(short = 't', long = "state")]
    pub state: Option<String>,
    /// Only jobs of this partition.
    #[arg(short = 'p', long = "partition")]
    pub partition: Option<String>,
    /// Only jobs of this account.
    #[arg(short = 'A', long = "account")]
    pub account: Option<String>,
    /// Only jobs on these nodes (a host list).
    #[arg(short = 'w', long = "nodelist")]
    pub nodelist: Option<String>,
    /// Say what is being cancelled.
    #[arg(short = 'v', long = "verbose")]
    pub verbose: bool,
    /// Send this signal (number or name, e.g. USR1) instead of cancelling: to the
    /// job's steps (a job without running steps: its batch script).
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    /// Signal the batch script only, not the steps.
    #[arg(short = 'b', long)]
    pub batch: bool,
    /// Signal the batch script and every step.
    #[arg(short = 'f', long)]
    pub full: bool,
}

/// A signal by number or name (`USR1`, `SIGUSR1`, `10`).
pub fn signal_number(s: &str) -> Result<i32> {
    if let Ok(n) = s.trim().parse::<i32>() {
        if !(1..=64).contains(&n) {
            bail!("{n} is not a signal number (1-64)");
        }
        return Ok(n);
    }
    let upper = s.trim().to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "ABRT" => libc::SIGABRT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "ALRM" => libc::SIGALRM,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "TSTP" => libc::SIGTSTP,
        "URG" => libc::SIGURG,
        "XCPU" => libc::SIGXCPU,
        "WINCH" => libc::SIGWINCH,
        _ => bail!("unknown signal '{s}' (use a number or a name such as USR1, TERM, INT)"),
    })
}

/// The jobs scancel's filters (`-u -n -t -p -A -w --me`) select, among those named if
/// any: the caller's own (an admin's: anyone's), unfinished.
async fn filtered_jobs(c: &mut Client, a: &CancelArgs, refs: &JobRefs) -> Result<Vec<u64>> {
    let me = c
        .who_am_i(api::WhoAmIRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let users: Vec<String> = match (&a.user, a.me || !me.admin) {
        (Some(u), _) if !a.me => comma_list(&Some(u.clone())),
        _ => vec![me.user.clone()],
    };
    let users = if me.admin || users.iter().all(|u| *u == me.user) {
        users
    } else {
        bail!("Access/permission denied: only an administrator may cancel other users' jobs");
    };
    let states: Vec<String> = comma_list(&a.state).iter().map(|s| long_state(s)).collect();
    let filter = JobFilter::new(&a.name, &a.account, &a.nodelist)?;
    let mut ids = Vec::new();
    for u in &users {
        let request = api::QueueRequest {
            user: u.clone(),
            job_ids: refs.wanted(),
            states: states.clone(),
            partition: a.partition.clone().unwrap_or_default(),
        };
        {
            let jobs = queued(c, request).await?;
            ids.extend(
                jobs.iter()
                    .filter(|j| refs.ids.is_empty() && refs.tasks.is_empty() || refs.matches(j))
                    .filter(|j| filter.keeps(j))
                    .map(|j| j.job_id),
            );
        }
    }
    Ok(ids)
}

pub async fn cancel(conn: &Conn, a: CancelArgs) -> Result<()> {
    let filtered = a.user.is_some()
        || a.me
        || a.name.is_some()
        || a.state.is_some()
        || a.partition.is_some()
        || a.account.is_some()
        || a.nodelist.is_some();
    if a.jobs.is_empty() && !filtered {
        bail!("No job identification provided (give job ids, or filters such as -u, -n, -t)");
    }
    let refs = JobRefs::parse(&(!a.jobs.is_empty()).then(|| a.jobs.join(",")))?;
    let signal = a
        .signal
        .as_deref()
        .map(signal_number)
        .transpose()?
        .unwrap_or(0);
    if (a.batch || a.full) && signal == 0 {
        bail!("--batch and --full choose who gets a signal: give one with --signal");
    }
    let signal_target = match (a.batch, a.full) {
        (true, true) => bail!("give --batch or --full, not both"),
        (true, false) => api::SignalTarget::Batch,
        (false, true) => api::SignalTarget::Full,
        (false, false) => api::SignalTarget::Steps,
    } as i32;
    let mut c = client(conn).await?;
    if filtered {
        let ids = filtered_jobs(&mut c, &a, &refs).await?;
        if a.verbose {
            eprintln!("scancel: {} job(s) match", ids.len());
        }
        // What matched, one call per thousand jobs.
        for chunk in ids.chunks(1000) {
            if a.verbose {
                for id in chunk {
                    eprintln!(
                        "scancel: {} job {id}",
                        if signal == 0 {
                            "Terminating"
                        } else {
                            "Signalling"
                        }
                    );
                }
            }
            c.cancel(api::CancelRequest {
                job_ids: chunk.to_vec(),
                signal,
                signal_target,
                ..Default::default()
            })
            .await
            .map_err(refused)?;
        }
        return Ok(());
    }
    let mut failed = None;
    // One call per job, so one bad id does not stop the others (as scancel does).
    let requests = refs
        .ids
        .iter()
        .map(|&id| {
            (
                id.to_string(),
                api::CancelRequest {
                    job_ids: vec![id],
                    signal,
                    signal_target,
                    ..Default::default()
                },
            )
        })
        .chain(refs.steps.iter().map(|&(job, step)| {
            (
                format!("{job}.{step}"),
                api::CancelRequest {
                    signal,
                    steps: vec![api::StepRef {
                        job_id: job,
                        step_id: step,
                    }],
                    ..Default::default()
                },
            )
        }))
        .chain(refs.tasks.iter().map(|t| {
            (
                format!("{}_{}", t.array, t.text),
                api::CancelRequest {
                    signal,
                    array_tasks: vec![api::ArrayTasks {
                        array_job_id: t.array,
                        tasks: t.text.clone(),
                    }],
                    ..Default::default()
                },
            )
        }));
    for (id, request) in requests {
        if a.verbose {
            eprintln!(
                "scancel: {} job {id}",
                if signal == 0 {
                    "Terminating"
                } else {
                    "Signalling"
                }
            );
        }
        if let Err(s) = c.cancel(request).await {
            let msg = match s.code() {
                Code::NotFound => format!(
                    "scancel: error: Kill job error on job id {id}: Invalid job id specified"
                ),
                _ => format!(
                    "scancel: error: Kill job error on job id {id}: {}",
                    s.message()
                ),
            };
            eprintln!("{msg}");
            failed = Some(refused(s));
        }
    }
    match failed {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

// ----- show --------------------------------------------------------------------------------

#[derive(Subcommand, Debug)]
pub enum ShowWhat {
    /// One job in full.
    Job { id: String },
    /// One node, or all.
    Node { name: Option<String> },
    /// Job steps: JOB.STEP, all of a JOB's, or (without an id) every running step you
    /// may see.
    Step { id: Option<String> },
    /// A host list (default: $SLURM_JOB_NODELIST) as one name per line, as Slurm's
    /// `scontrol show hostnames` (how job scripts find MASTER_ADDR).
    Hostnames { list: Option<String> },
    /// Names (a host list, or names separated by commas or spaces) compressed into one
    /// host list, as Slurm's `scontrol show hostlist`.
    Hostlist { names: Vec<String> },
    /// One partition, or all.
    Partition { name: Option<String> },
    /// One advance reservation, or all.
    #[command(visible_alias = "res", alias = "reservations")]
    Reservation { name: Option<String> },
    /// The controller's settings.
    Config,
}

/// `scontrol show hostnames|hostlist`: text only, no controller needed. `Ok(None)` for
/// any other `show`.
fn show_hosts(what: &ShowWhat) -> Result<Option<Vec<String>>> {
    use gantry_kernel::units::{compress_hostlist, expand_hostlist};
    match what {
        ShowWhat::Hostnames { list } => {
            let list = match list {
                Some(l) => l.clone(),
                None => std::env::var("SLURM_JOB_NODELIST").map_err(|_| {
                    anyhow!("give a host list, or run inside a job (SLURM_JOB_NODELIST is not set)")
                })?,
            };
            Ok(Some(expand_hostlist(&list)?))
        }
        ShowWhat::Hostlist { names } => {
            let mut all = Vec::new();
            for part in names.iter().flat_map(|n| n.split([',', ' ', '\n'])) {
                if !part.trim().is_empty() {
                    all.extend(expand_hostlist(part.trim())?);
                }
            }
            if all.is_empty() {
                bail!("give the host names to compress");
            }
            Ok(Some(vec![compress_hostlist(&all)]))
        }
        _ => Ok(None),
    }
}

#[derive(Args, Debug)]
pub struct ShowArgs {
    #[command(subcommand)]
    pub what: ShowWhat,
    #[arg(long, global = true)]
    pub json: bool,
}

pub async fn show(conn: &Conn, a: ShowArgs) -> Result<()> {
    if let Some(lines) = show_hosts(&a.what)? {
        if a.json {
            return print_json(&lines);
        }
        for l in lines {
            println!("{}", format::printable(&l));
        }
        return Ok(());
    }
    let mut c = client(conn).await?;
    match a.what {
        ShowWhat::Job { id } => {
            let raw = JobRefs::parse(&Some(id.clone()))?;
            let Some(&job_id) = raw.ids.first() else {
                bail!("scontrol show job takes one job's own id ('{id}')");
            };
            let j = match c.show_job(api::ShowJobRequest { job_id }).await {
                Ok(r) => r.into_inner(),
                Err(s) if s.code() == Code::NotFound => {
                    return Err(anyhow::Error::new(Refused {
                        message: "Invalid job id specified".into(),
                        code: 1,
                    }))
                }
                Err(s) => return Err(refused(s)),
            };
            if a.json {
                return print_json(&job_json(&j));
            }
            print!("{}", format::scontrol_job(&format::printable_job(j), now()));
            Ok(())
        }
        ShowWhat::Config => {
            let entries = c
                .config(api::ConfigRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .entries;
            if a.json {
                let m: serde_json::Map<String, serde_json::Value> = entries
                    .into_iter()
                    .map(|e| (e.key, e.value.into()))
                    .collect();
                return print_json(&m);
            }
            println!("Configuration data as of {}", format::timestamp(now()));
            for e in entries {
                println!("{:<24}= {}", e.key, format::printable(&e.value));
            }
            Ok(())
        }
        ShowWhat::Partition { name } => {
            drop(c);
            crate::sinfo::show_partition(conn, name.as_deref(), a.json).await
        }
        ShowWhat::Reservation { name } => {
            drop(c);
            crate::reservations::show(conn, name.as_deref(), a.json).await
        }
        // Answered without the controller, above.
        ShowWhat::Hostnames { .. } | ShowWhat::Hostlist { .. } => Ok(()),
        ShowWhat::Step { id } => {
            let (jobs, only) = match id.as_deref() {
                Some(id) => {
                    let (job, step) = match id.split_once('.') {
                        Some((j, s)) => (j, Some(s)),
                        None => (id, None),
                    };
                    let bad = || {
                        anyhow!("'{id}' is not a step id (use 12.0, or 12 for all of its steps)")
                    };
                    let job_id: u64 = job.parse().map_err(|_| bad())?;
                    let step: Option<u32> =
                        step.map(|s| s.parse().map_err(|_| bad())).transpose()?;
                    let j = c
                        .show_job(api::ShowJobRequest { job_id })
                        .await
                        .map_err(refused)?
                        .into_inner();
                    (vec![j], step)
                }
                None => {
                    let request = api::QueueRequest {
                        states: vec!["RUNNING".into()],
                        ..Default::default()
                    };
                    (queued(&mut c, request).await?, None)
                }
            };
            let all = id.is_some();
            let chosen: Vec<(api::JobInfo, api::StepInfo)> = jobs
                .into_iter()
                .map(format::printable_job)
                .flat_map(|j| {
                    j.steps
                        .clone()
                        .into_iter()
                        .filter(|s| only.is_none_or(|o| o == s.step_id))
                        .filter(|s| all || s.state == "RUNNING")
                        .map(move |s| (j.clone(), s))
                })
                .collect();
            if let (Some(id), true) = (&id, chosen.is_empty() && only.is_some()) {
                return Err(anyhow::Error::new(Refused {
                    message: format!("Invalid job step id specified: {id}"),
                    code: 1,
                }));
            }
            if a.json {
                let v: Vec<_> = chosen.iter().map(|(j, s)| step_json(j, s)).collect();
                return print_json(&v);
            }
            if chosen.is_empty() {
                println!("No steps in the system");
            }
            let t = now();
            for (j, s) in &chosen {
                print_step(j, s, t);
            }
            Ok(())
        }
        ShowWhat::Node { name } => {
            let nodes = c
                .nodes(api::NodesRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .nodes;
            let nodes: Vec<_> = match &name {
                Some(n) => {
                    let found: Vec<_> = nodes.into_iter().filter(|x| &x.name == n).collect();
                    if found.is_empty() {
                        bail!("Node {n} not found");
                    }
                    found
                }
                None => nodes,
            };
            if a.json {
                return print_json(&nodes.iter().map(node_json).collect::<Vec<_>>());
            }
            for n in nodes {
                println!(
                    "NodeName={} NodeAddr={} State={} Reason={}",
                    n.name,
                    format::printable(&n.addr),
                    n.state,
                    if n.reason.is_empty() {
                        "(null)"
                    } else {
                        &n.reason
                    }
                );
                println!("   CPUAlloc={} CPUTot={} RealMemory={} AllocMem={} Gres=gpu:{} GresUsed=gpu:{}", n.cores_allocated, n.cores, n.memory_mb, n.memory_allocated_mb, n.gpus, n.gpus_allocated);
                println!(
                    "   Partitions={} AvailableFeatures={}",
                    n.partitions.join(","),
                    n.features.join(",")
                );
            }
            Ok(())
        }
    }
}

// ----- nodes -------------------------------------------------------------------------------

fn node_json(n: &api::NodeInfo) -> serde_json::Value {
    serde_json::json!({
        "name": n.name, "addr": n.addr, "state": n.state, "reason": n.reason,
        "cores": n.cores, "cores_allocated": n.cores_allocated,
        "memory_mb": n.memory_mb, "memory_allocated_mb": n.memory_allocated_mb,
        "gpus": n.gpus, "gpus_allocated": n.gpus_allocated,
        "partitions": n.partitions, "features": n.features,
        "last_heartbeat_age_s": (n.last_heartbeat_age_s >= 0).then_some(n.last_heartbeat_age_s),
    })
}

#[derive(Subcommand, Debug)]
pub enum NodeAction {
    /// Let running jobs finish and start nothing new here (admin).
    Drain {
        name: String,
        #[arg(long, required = true)]
        reason: String,
    },
    /// Make a drained node schedulable again (admin).
    Resume { name: String },
}

pub async fn node(conn: &Conn, a: NodeAction) -> Result<()> {
    let (node, state, reason) = match a {
        NodeAction::Drain { name, reason } => (name, "drain", reason),
        NodeAction::Resume { name } => (name, "resume", String::new()),
    };
    let n = client(conn)
        .await?
        .set_node_state(api::SetNodeStateRequest {
            node,
            state: state.into(),
            reason,
        })
        .await
        .map_err(refused)?
        .into_inner();
    println!("{} {}", n.name, n.state);
    Ok(())
}

// ----- acct --------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct AcctArgs {
    /// Only these jobs (comma-separated; -j may be given again).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Vec<String>,
    /// Only these users' jobs (comma-separated; admins see everyone's, others their own).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Every user's jobs you may see (the default for admins).
    #[arg(short = 'a', long = "allusers")]
    pub all_users: bool,
    /// Only jobs of these accounts (comma-separated).
    #[arg(short = 'A', long = "accounts")]
    pub accounts: Option<String>,
    /// Only jobs with these names (comma-separated).
    #[arg(long = "name")]
    pub name: Option<String>,
    /// Only jobs in these states (comma-separated: CD,F,CA,TO,R,PD or COMPLETED,...).
    #[arg(short = 's', long = "state")]
    pub state: Option<String>,
    /// Only jobs of these partitions (comma-separated).
    #[arg(short = 'r', long = "partition")]
    pub partition: Option<String>,
    /// Jobs queued or running at or after this time (now-1hour, 2026-12-01, 08:00,
    /// midnight, ...). Default: today's midnight, unless jobs are named with -j.
    #[arg(short = 'S', long = "starttime")]
    pub starttime: Option<String>,
    /// Jobs queued or running at or before this time (default: now).
    #[arg(short = 'E', long = "endtime")]
    pub endtime: Option<String>,
    /// Fields (JobID,JobName,State,ExitCode,Elapsed,NNodes,NCPUS,NodeList,MaxRSS,...),
    /// each with an optional width (State%20); -e lists them.
    #[arg(short = 'o', long = "format")]
    pub format: Option<String>,
    /// Only JobID, State and ExitCode.
    #[arg(short = 'b', long = "brief")]
    pub brief: bool,
    /// The finished jobs selected as an SWF trace (Standard Workload Format 2.2), for
    /// `gantry sim --trace` (unfinished jobs are left out); users, accounts and
    /// partitions are numbered and named in the header, and `; Job:` lines give each
    /// job's nodes, tasks, GPUs and memory.
    #[arg(long, conflicts_with_all = ["format", "brief", "long"])]
    pub swf: bool,
    /// Many fields.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// List the fields -o takes.
    #[arg(short = 'e', long = "helpformat")]
    pub helpformat: bool,
    #[command(flatten)]
    pub table: TableArgs,
    /// Jobs only: no lines for their batch scripts and steps.
    #[arg(short = 'X', long = "allocations")]
    pub allocations: bool,
}

/// How a table is printed (sacct, sshare, sreport): `-n` without the header, `-P`
/// '|'-separated, `-p` the same with a trailing '|', `--json`.
#[derive(Args, Debug, Clone, Copy)]
pub struct TableArgs {
    /// No header.
    #[arg(short = 'n', long = "noheader")]
    pub noheader: bool,
    /// '|'-separated, no padding, no trailing '|'.
    #[arg(short = 'P', long = "parsable2")]
    pub parsable2: bool,
    /// '|'-separated with a trailing '|'.
    #[arg(short = 'p', long = "parsable")]
    pub parsable: bool,
    #[arg(long)]
    pub json: bool,
}

impl TableArgs {
    /// Prints `head` and `rows` '|'-separated if `-P` or `-p` asked for it; returns
    /// whether it did.
    pub fn print_delimited<S: AsRef<str>>(&self, head: &[S], rows: &[Vec<String>]) -> bool {
        if !(self.parsable || self.parsable2) {
            return false;
        }
        let end = if self.parsable { "|" } else { "" };
        if !self.noheader {
            let names: Vec<&str> = head.iter().map(AsRef::as_ref).collect();
            println!("{}{end}", names.join("|"));
        }
        for r in rows {
            println!("{}{end}", r.join("|"));
        }
        true
    }
}

/// squeue's and scancel's filters on what a listing returns: job names and accounts
/// (comma-separated), and nodes (a host list); each empty keeps every job.
struct JobFilter {
    names: Vec<String>,
    accounts: Vec<String>,
    nodes: Vec<String>,
}

impl JobFilter {
    fn new(
        names: &Option<String>,
        accounts: &Option<String>,
        nodes: &Option<String>,
    ) -> Result<Self> {
        let nodes = match nodes {
            Some(l) => {
                gantry_kernel::units::expand_hostlist(l).map_err(|e| anyhow!("--nodelist: {e}"))?
            }
            None => Vec::new(),
        };
        Ok(Self {
            names: comma_list(names),
            accounts: comma_list(accounts),
            nodes,
        })
    }

    fn keeps(&self, j: &api::JobInfo) -> bool {
        (self.names.is_empty() || self.names.contains(&j.name))
            && (self.accounts.is_empty() || self.accounts.contains(&j.account))
            && (self.nodes.is_empty() || j.allocation.iter().any(|n| self.nodes.contains(&n.node)))
    }
}

pub(crate) fn comma_list(v: &Option<String>) -> Vec<String> {
    v.as_deref()
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|x| !x.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default()
}

pub async fn acct(conn: &Conn, a: AcctArgs) -> Result<()> {
    if a.helpformat {
        for chunk in format::SACCT_FIELDS.chunks(4) {
            let line: Vec<String> = chunk.iter().map(|f| format!("{f:<20}")).collect();
            println!("{}", line.join("").trim_end());
        }
        return Ok(());
    }
    let refs = JobRefs::parse(&(!a.jobs.is_empty()).then(|| a.jobs.join(",")))?;
    let here = crate::when::now();
    let window_start = match &a.starttime {
        Some(t) => crate::when::parse(t, &here).map_err(|e| anyhow!("--starttime: {e}"))?,
        // As sacct: today's jobs, unless jobs or states are named.
        None if a.jobs.is_empty() && a.state.is_none() => crate::when::parse("today", &here)?,
        None => 0,
    };
    let window_end = match &a.endtime {
        Some(t) => crate::when::parse(t, &here).map_err(|e| anyhow!("--endtime: {e}"))?,
        None => 0,
    };
    let mut pages = client(conn)
        .await?
        .accounting(api::AccountingRequest {
            job_ids: refs.wanted(),
            users: comma_list(&a.user),
            accounts: comma_list(&a.accounts),
            names: comma_list(&a.name),
            states: comma_list(&a.state).iter().map(|s| long_state(s)).collect(),
            partitions: comma_list(&a.partition),
            window_start,
            window_end,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut records = Vec::new();
    while let Some(page) = pages.message().await.map_err(refused)? {
        records.extend(
            page.records
                .into_iter()
                .filter(|r| r.job.as_ref().is_some_and(|j| refs.matches(j))),
        );
    }
    if a.swf {
        let nodes = client(conn)
            .await?
            .nodes(api::NodesRequest {})
            .await
            .map_err(refused)?
            .into_inner()
            .nodes;
        print!("{}", crate::swf_export::render(&records, &nodes));
        return Ok(());
    }
    if a.table.json {
        let v: Vec<_> = records
            .iter()
            .map(|r| {
                let mut j = r.job.as_ref().map(job_json).unwrap_or_default();
                j["cpu_core_seconds"] = r.cpu_core_seconds.into();
                j["max_rss_mb"] = r.max_rss_mb.into();
                j["user_cpu_s"] = r.user_cpu_s.into();
                j["system_cpu_s"] = r.system_cpu_s.into();
                j
            })
            .collect();
        return print_json(&jobs_json("sacct", v));
    }
    let format = match (&a.format, a.brief, a.long) {
        (Some(f), _, _) => f.as_str(),
        (None, true, _) => format::SACCT_BRIEF,
        (None, false, true) => format::SACCT_LONG,
        (None, false, false) => format::SACCT_DEFAULT,
    };
    let fields = format::sacct_columns(format)?;
    let t = now();
    let mut rows: Vec<Vec<String>> = Vec::new();
    for mut r in records {
        r.job = r.job.map(format::printable_job);
        let Some(j) = r.job.clone() else { continue };
        let mut lines = vec![format::AcctLine::Job];
        if !a.allocations {
            // The batch script is step `batch` of a job that started one.
            if j.start_time > 0 && !j.allocation_only {
                lines.push(format::AcctLine::Batch);
            }
            lines.extend(j.steps.iter().map(format::AcctLine::Step));
        }
        for line in lines {
            rows.push(
                fields
                    .iter()
                    .map(|f| format::sacct_field(&f.name, &r, line, t))
                    .collect::<Result<_>>()?,
            );
        }
    }
    let names: Vec<&str> = fields.iter().map(|f| f.name.as_str()).collect();
    if a.table.print_delimited(&names, &rows) {
        return Ok(());
    }
    format::print_columns(&fields, &rows, !a.table.noheader);
    Ok(())
}

// ----- watch -------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct WatchArgs {
    /// Only these jobs (an array's id: all its tasks); default: every job you may see,
    /// and nodes.
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<String>,
    /// Exit once every job given with --jobs has finished.
    #[arg(long, requires = "jobs")]
    pub until_done: bool,
    /// One JSON object per line.
    #[arg(long)]
    pub json: bool,
}

/// Prints job and node events as they happen.
pub async fn watch(conn: &Conn, a: WatchArgs) -> Result<()> {
    let refs = JobRefs::parse(&a.jobs)?;
    if !refs.tasks.is_empty() {
        bail!("watch --jobs takes job ids (an array's id for the whole array), not array tasks");
    }
    let job_ids = refs.ids;
    let mut c = client(conn).await?;
    let mut stream = c
        .watch(api::WatchRequest {
            job_ids: job_ids.clone(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut open: std::collections::HashSet<u64> = job_ids.iter().copied().collect();
    let finished = |s: &str| !matches!(s, "PENDING" | "RUNNING" | "SUSPENDED" | "REQUEUED");
    // Jobs that finished before the watch began.
    if a.until_done {
        for &id in &job_ids {
            if let Ok(j) = c.show_job(api::ShowJobRequest { job_id: id }).await {
                let j = j.into_inner();
                if finished(&j.state) {
                    open.remove(&id);
                }
            }
        }
        if open.is_empty() {
            return Ok(());
        }
    }
    while let Some(e) = stream.message().await.map_err(refused)? {
        use api::event::What;
        match &e.what {
            Some(What::Job(j)) => {
                if a.json {
                    let mut v = job_json(j);
                    v["event_time"] = e.time.into();
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!(
                        "{} job {} {} {}{}",
                        format::timestamp(e.time),
                        format::job_id(j),
                        format::printable(&j.name),
                        j.state,
                        if j.node_list.is_empty() {
                            String::new()
                        } else {
                            format!(" on {}", j.node_list)
                        }
                    );
                }
                if finished(&j.state) {
                    open.remove(&j.job_id);
                    if j.array_job_id != 0 && job_ids.contains(&j.array_job_id) {
                        // An array is done when the controller says each task is.
                        let mut pages = c
                            .queue(api::QueueRequest {
                                job_ids: vec![j.array_job_id],
                                ..Default::default()
                            })
                            .await
                            .map_err(refused)?
                            .into_inner();
                        let mut unfinished = 0;
                        while let Some(page) = pages.message().await.map_err(refused)? {
                            unfinished += page.jobs.len();
                        }
                        if unfinished == 0 {
                            open.remove(&j.array_job_id);
                        }
                    }
                }
            }
            Some(What::Node(n)) => {
                if a.json {
                    let mut v = node_json(n);
                    v["event_time"] = e.time.into();
                    println!("{}", serde_json::to_string(&v)?);
                } else {
                    println!("{} node {} {}", format::timestamp(e.time), n.name, n.state);
                }
            }
            None => {}
        }
        use std::io::Write;
        std::io::stdout().flush()?;
        if a.until_done && open.is_empty() {
            return Ok(());
        }
    }
    Ok(())
}

// ----- token -------------------------------------------------------------------------------

#[derive(Args, Debug)]
pub struct TokenArgs {
    /// The user the token speaks for.
    #[arg(long)]
    pub user: String,
    /// Their uid (jobs run as this uid when the agent runs as root).
    #[arg(long)]
    pub uid: u32,
    /// An admin token.
    #[arg(long)]
    pub admin: bool,
    /// The cluster key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Lifetime: days (30d) or a Slurm duration (12:00:00, 2-00:00:00); UNLIMITED for a
    /// token that never expires. Default: 7 days.
    #[arg(long)]
    pub expires_in: Option<String>,
}

/// Parses `--expires-in`: the token's expiry time (0: never).
fn expiry(text: Option<&str>, now: i64) -> Result<i64> {
    let Some(t) = text.map(str::trim) else {
        return Ok(now + gantry_api::auth::DEFAULT_TOKEN_TTL);
    };
    let secs = match t.strip_suffix('d') {
        Some(d) => d
            .parse::<i64>()
            .ok()
            .filter(|&d| d > 0)
            .and_then(|d| d.checked_mul(86_400))
            .filter(|&s| s <= gantry_kernel::units::MAX_DURATION)
            .ok_or_else(|| anyhow!("--expires-in: '{t}' is not a number of days"))?,
        None => match gantry_kernel::units::parse_duration(t)
            .map_err(|e| anyhow!("--expires-in: {e}"))?
        {
            None => return Ok(0),
            Some(0) => bail!("--expires-in: a token must live longer than 0 seconds"),
            Some(s) => s,
        },
    };
    Ok(now + secs)
}

#[derive(Args, Debug)]
pub struct CredentialArgs {
    /// The node, as named in the cluster description.
    pub node: String,
    /// The cluster key file.
    #[arg(long)]
    pub key: PathBuf,
    /// Where to write the credential (created with mode 0600; it must not exist yet).
    #[arg(long, short)]
    pub output: PathBuf,
}

/// `gantry credential NODE`: the node's own key, for its agent's `credential_file`.
pub fn credential(a: CredentialArgs) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = std::fs::read(&a.key).with_context(|| format!("cannot read {}", a.key.display()))?;
    let node_key = gantry_api::auth::node_key(&key, &a.node)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&a.output)
        .with_context(|| format!("cannot create {}", a.output.display()))?;
    f.write_all(&node_key)
        .with_context(|| format!("cannot write {}", a.output.display()))?;
    println!(
        "wrote the credential of node {} to {}",
        a.node,
        a.output.display()
    );
    Ok(())
}

pub fn token(a: TokenArgs) -> Result<()> {
    use gantry_api::auth::{mint, Claims, Role};
    let key = std::fs::read(&a.key).with_context(|| format!("cannot read {}", a.key.display()))?;
    let expires = expiry(a.expires_in.as_deref(), now())?;
    let t = mint(
        &key,
        &Claims {
            user: a.user,
            uid: a.uid,
            role: if a.admin { Role::Admin } else { Role::User },
            expires,
        },
    )?;
    println!("{t}");
    Ok(())
}

/// `gantry install-links DIR`: the Slurm names as links to this binary.
pub fn install_links(dir: &std::path::Path) -> Result<()> {
    let exe = std::env::current_exe().context("cannot locate the gantry binary")?;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    for name in crate::SLURM_NAMES {
        let link = dir.join(name);
        if link.symlink_metadata().is_ok() {
            std::fs::remove_file(&link)
                .with_context(|| format!("cannot replace {}", link.display()))?;
        }
        std::os::unix::fs::symlink(&exe, &link)
            .with_context(|| format!("cannot link {}", link.display()))?;
        println!("{} -> {}", link.display(), exe.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_lists_name_jobs_and_array_tasks_and_commas_inside_brackets_stay() {
        let refs = JobRefs::parse(&Some("12, 13_[1-3,7],14_2".into())).unwrap();
        assert_eq!(refs.ids, vec![12]);
        let named: Vec<(u64, &str, &[u32])> = refs
            .tasks
            .iter()
            .map(|t| (t.array, t.text.as_str(), t.indices.as_slice()))
            .collect();
        assert_eq!(
            named,
            vec![(13, "1-3,7", &[1, 2, 3, 7][..]), (14, "2", &[2][..])]
        );
        assert_eq!(refs.wanted(), vec![12, 13, 14]);
        let task = |array_job_id, array_task_id| api::JobInfo {
            job_id: 100 + array_task_id as u64,
            array_job_id,
            array_task_id,
            ..Default::default()
        };
        assert!(refs.matches(&task(13, 7)));
        assert!(!refs.matches(&task(13, 4)));
        assert!(refs.matches(&task(12, 9)), "an array's id names every task");
        assert!(JobRefs::parse(&Some("12_x".into())).is_err());
        assert!(JobRefs::parse(&Some("twelve".into())).is_err());
    }
}
