//! How jobs and nodes print: Slurm's compact state codes, its time formats, and
//! `squeue -o` / `sacct --format` field specifications, so scripts that parse Slurm's
//! output parse ours.

use anyhow::{bail, Result};
use gantry_api as api;

/// `squeue`'s two-letter state.
pub fn state_code(state: &str) -> &'static str {
    match state {
        "PENDING" => "PD",
        "RUNNING" => "R",
        "SUSPENDED" => "S",
        "COMPLETED" => "CD",
        "FAILED" => "F",
        "CANCELLED" => "CA",
        "TIMEOUT" => "TO",
        "NODE_FAIL" => "NF",
        "DEADLINE" => "DL",
        "PREEMPTED" => "PR",
        "REQUEUED" => "PD",
        "COMPLETING" => "CG",
        _ => "?",
    }
}

/// `[D-]HH:MM:SS`, or `M:SS` under an hour, as squeue prints elapsed time.
pub fn elapsed(s: i64) -> String {
    let s = s.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{sec:02}")
    } else if h > 0 {
        format!("{h}:{m:02}:{sec:02}")
    } else {
        format!("{m}:{sec:02}")
    }
}

/// `[D-]HH:MM:SS`, as sacct prints Elapsed and Timelimit and scontrol prints RunTime.
pub fn clock(s: i64) -> String {
    let s = s.max(0);
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if d > 0 {
        format!("{d}-{h:02}:{m:02}:{sec:02}")
    } else {
        format!("{h:02}:{m:02}:{sec:02}")
    }
}

/// A time limit as sacct and scontrol print it: `UNLIMITED` or [`clock`].
pub fn clock_limit(s: i64) -> String {
    if s <= 0 {
        "UNLIMITED".into()
    } else {
        clock(s)
    }
}

/// A time limit as Slurm prints it.
pub fn limit(s: i64) -> String {
    if s <= 0 {
        "UNLIMITED".into()
    } else {
        elapsed(s)
    }
}

/// Slurm's `(null)` for an empty value.
pub fn or_null(s: &str) -> String {
    if s.is_empty() {
        "(null)".into()
    } else {
        s.to_string()
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in the local time zone, or `N/A`.
pub fn timestamp(t: i64) -> String {
    crate::when::format(t).unwrap_or_else(|| "N/A".into())
}

/// The id squeue shows: `123` or, for an array task, `120_3`.
pub fn job_id(j: &api::JobInfo) -> String {
    if j.array_job_id != 0 {
        format!("{}_{}", j.array_job_id, j.array_task_id)
    } else {
        j.job_id.to_string()
    }
}

pub fn used(j: &api::JobInfo, now: i64) -> i64 {
    match (j.start_time, j.end_time) {
        (0, _) => 0,
        (s, 0) => now - s - j.suspended_s,
        (s, e) => e - s - j.suspended_s,
    }
}

/// One `%` field of squeue's `-o`.
fn squeue_field(c: char, j: &api::JobInfo, now: i64) -> Result<String> {
    let pending = j.state == "PENDING" || j.state == "REQUEUED";
    Ok(match c {
        'i' => job_id(j),
        'A' => j.tasks.to_string(),
        'F' => if j.array_job_id != 0 {
            j.array_job_id
        } else {
            j.job_id
        }
        .to_string(),
        'K' => {
            if j.array_job_id != 0 {
                j.array_task_id.to_string()
            } else {
                "N/A".into()
            }
        }
        'j' => j.name.clone(),
        'k' => j.comment.clone(),
        'v' => or_null(&j.reservation),
        'u' => j.user.clone(),
        'a' => j.account.clone(),
        'P' => j.partition.clone(),
        'q' => j.qos.clone(),
        't' => state_code(&j.state).into(),
        'T' => j.state.clone(),
        'M' => elapsed(used(j, now)),
        'l' => limit(j.time_limit_s),
        'L' => {
            if j.time_limit_s <= 0 {
                "UNLIMITED".into()
            } else {
                elapsed(j.time_limit_s - used(j, now))
            }
        }
        'D' => j.nodes.to_string(),
        'C' => j.cores.to_string(),
        'c' => j.cpus_per_task.to_string(),
        'N' => j.node_list.clone(),
        'R' => {
            if pending {
                format!("({})", j.reason)
            } else {
                j.node_list.clone()
            }
        }
        'r' => j.reason.clone(),
        'Q' | 'p' => j.priority.to_string(),
        'V' => timestamp(j.submit_time),
        'S' => timestamp(j.start_time),
        'e' => timestamp(j.end_time),
        'E' => j.dependency.clone(),
        'Z' => j.workdir.clone(),
        'b' => {
            if j.gpus > 0 {
                format!("gpu:{}", j.gpus)
            } else {
                "N/A".into()
            }
        }
        '%' => "%".into(),
        other => bail!("squeue format: %{other} is not supported"),
    })
}

/// `text` with every control character (newline, escape, the C1 controls ...) written as
/// an escape (`\n`, `\x1b`), so that a job name cannot move the cursor, clear the
/// screen or forge lines on the terminal of whoever lists it.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() && (c as u32) < 0x100 => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// A job with every user-supplied text made [`printable`], for tables (JSON escapes
/// control characters itself).
pub fn printable_job(mut j: api::JobInfo) -> api::JobInfo {
    for field in [
        &mut j.name,
        &mut j.user,
        &mut j.account,
        &mut j.partition,
        &mut j.qos,
        &mut j.reason,
        &mut j.workdir,
        &mut j.stdout_path,
        &mut j.stderr_path,
        &mut j.dependency,
        &mut j.node_list,
        &mut j.state,
        &mut j.comment,
        &mut j.wckey,
    ] {
        if let std::borrow::Cow::Owned(clean) = printable(field) {
            *field = clean;
        }
    }
    for s in &mut j.steps {
        if let std::borrow::Cow::Owned(clean) = printable(&s.name) {
            s.name = clean;
        }
    }
    j
}

/// squeue's default format, and `-l`'s.
pub const SQUEUE_DEFAULT: &str = "%.18i %.9P %.8j %.8u %.2t %.10M %.6D %R";
pub const SQUEUE_LONG: &str = "%.18i %.9P %.8j %.8u %.8T %.10M %.9l %.6D %R";

/// `-O Name,Other:12,...` (squeue's and sinfo's named fields, 20 wide unless a width is
/// given) → the matching `-o` format, with `letter` naming each field's letter.
pub fn named_fields_format(
    command: &str,
    spec: &str,
    letter: impl Fn(&str) -> Option<char>,
) -> Result<String> {
    let mut out = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (name, width) = match item.split_once(':') {
            Some((n, w)) => (n, Some(w.trim_start_matches('.'))),
            None => (item, None),
        };
        let Some(letter) = letter(&name.to_ascii_lowercase()) else {
            bail!("{command}: unknown field '{name}' in -O");
        };
        let width = match width {
            Some(w) => w
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("{command}: bad width in '{item}'"))?,
            None => 20,
        };
        out.push(format!("%-{width}{letter}"));
    }
    if out.is_empty() {
        bail!("{command}: -O names no field");
    }
    Ok(out.join(" "))
}

/// squeue's `-O JobID,Name:20,...`.
pub fn squeue_long_format(spec: &str) -> Result<String> {
    named_fields_format("squeue", spec, |name| {
        Some(match name {
            "jobid" | "jobarrayid" => 'i',
            "name" => 'j',
            "username" | "user" => 'u',
            "account" => 'a',
            "partition" => 'P',
            "qos" => 'q',
            "state" => 'T',
            "statecompact" => 't',
            "timeused" => 'M',
            "timelimit" => 'l',
            "timeleft" => 'L',
            "numnodes" => 'D',
            "numcpus" => 'C',
            "numtasks" => 'A',
            "mincpus" => 'c',
            "nodelist" => 'N',
            "reasonlist" => 'R',
            "reason" => 'r',
            "priority" => 'Q',
            "submittime" => 'V',
            "starttime" => 'S',
            "endtime" => 'e',
            "dependency" => 'E',
            "workdir" => 'Z',
            "arrayjobid" => 'F',
            "arraytaskid" => 'K',
            "comment" => 'k',
            "reservation" => 'v',
            _ => return None,
        })
    })
}

/// Walks an `-o` format: text is copied (`\t` is a tab), each `%[.|-][width]x` becomes
/// `field(x)`, right-justified with `.`, padded and truncated to a width, as Slurm does.
pub fn render(format: &str, field: impl Fn(char) -> Result<String>) -> Result<String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            if c == '\\' && chars.peek() == Some(&'t') {
                chars.next();
                out.push('\t');
            } else {
                out.push(c);
            }
            continue;
        }
        let right = chars.peek() == Some(&'.');
        if right || chars.peek() == Some(&'-') {
            chars.next();
        }
        let mut width = String::new();
        while let Some(d) = chars.peek().copied().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let Some(f) = chars.next() else {
            bail!("the format ends in '%'");
        };
        let mut v = field(f)?;
        if let Ok(w) = width.parse::<usize>() {
            v = v.chars().take(w).collect();
            v = if right {
                format!("{v:>w$}")
            } else {
                format!("{v:<w$}")
            };
        }
        out.push_str(&v);
    }
    Ok(out)
}

/// Renders an `-o` format for one job.
#[cfg(test)]
pub fn squeue_line(format: &str, j: &api::JobInfo, now: i64) -> Result<String> {
    render(format, |c| squeue_field(c, j, now))
}

/// One line of squeue: a job, or the pending tasks of an array shown together as Slurm
/// shows them (`12_[3-9%2]`: their indices, and the array's limit).
pub struct QueueLine {
    pub job: api::JobInfo,
    /// `[3-9%2]` for pending tasks shown together.
    pub tasks: Option<String>,
    /// `squeue --start`: the nodes the plan gives it (`%Y`).
    pub sched_nodes: Option<String>,
}

/// Jobs as squeue lists them: each pending array's waiting tasks on one line (where
/// its first waiting task is), unless `one_per_task` (`squeue -r`).
pub fn queue_lines(jobs: Vec<api::JobInfo>, one_per_task: bool) -> Vec<QueueLine> {
    let mut out: Vec<QueueLine> = Vec::new();
    let mut pending_arrays: std::collections::HashMap<u64, (usize, Vec<u32>)> =
        std::collections::HashMap::new();
    for j in jobs {
        let waiting = j.array_job_id != 0 && j.state == "PENDING" && !one_per_task;
        if waiting {
            if let Some((_, indices)) = pending_arrays.get_mut(&j.array_job_id) {
                indices.push(j.array_task_id);
                continue;
            }
            pending_arrays.insert(j.array_job_id, (out.len(), vec![j.array_task_id]));
        }
        out.push(QueueLine {
            job: j,
            tasks: None,
            sched_nodes: None,
        });
    }
    for (at, mut indices) in pending_arrays.into_values() {
        if indices.len() < 2 && out[at].job.array_throttle == 0 {
            continue;
        }
        indices.sort_unstable();
        let list: Vec<u32> = indices;
        let mut text = ranges(&list);
        if out[at].job.array_throttle > 0 {
            text.push_str(&format!("%{}", out[at].job.array_throttle));
        }
        out[at].tasks = Some(format!("[{text}]"));
    }
    out
}

/// Renders an `-o` format for one squeue line.
pub fn queue_line(format: &str, l: &QueueLine, now: i64) -> Result<String> {
    render(format, |c| match (c, &l.tasks) {
        ('i', Some(tasks)) => Ok(format!("{}_{tasks}", l.job.array_job_id)),
        ('K', Some(tasks)) => Ok(tasks.clone()),
        ('Y', _) => Ok(l.sched_nodes.clone().unwrap_or_else(|| "(null)".into())),
        _ => squeue_field(c, &l.job, now),
    })
}

/// `squeue --start`'s format.
pub const SQUEUE_START: &str = "%.18i %.9P %.8j %.8u %.2t %.19S %.6D %20Y %R";

/// `squeue -s`'s default format.
pub const SQUEUE_STEPS_DEFAULT: &str = "%.15i %.8j %.9P %.8u %.9M %N";

/// One step's line for `squeue -s`: the step as [`AcctLine::view`] shows it, its id
/// `JOB.STEP` for `%i`.
pub fn squeue_step_line(
    format: &str,
    j: &api::JobInfo,
    s: &api::StepInfo,
    now: i64,
) -> Result<String> {
    let v = AcctLine::Step(s).view(j);
    let id = format!("{}.{}", job_id(j), s.step_id);
    render(format, |c| match c {
        'i' => Ok(id.clone()),
        _ => squeue_field(c, &v, now),
    })
}

/// The header line for a format: the field names Slurm prints.
pub fn squeue_header(format: &str) -> Result<String> {
    let names = |c: char| match c {
        'i' => "JOBID",
        'A' => "TASKS",
        'F' => "ARRAY_JOB_ID",
        'K' => "ARRAY_TASK_ID",
        'j' => "NAME",
        'k' => "COMMENT",
        'v' => "RESERVATION",
        'u' => "USER",
        'a' => "ACCOUNT",
        'P' => "PARTITION",
        'q' => "QOS",
        't' => "ST",
        'T' => "STATE",
        'M' => "TIME",
        'l' => "TIME_LIMIT",
        'L' => "TIME_LEFT",
        'D' => "NODES",
        'C' => "CPUS",
        'c' => "MIN_CPUS",
        'N' => "NODELIST",
        'R' => "NODELIST(REASON)",
        'r' => "REASON",
        'Q' | 'p' => "PRIORITY",
        'V' => "SUBMIT_TIME",
        'S' => "START_TIME",
        'Y' => "SCHEDNODES",
        'e' => "END_TIME",
        'E' => "DEPENDENCY",
        'Z' => "WORK_DIR",
        'b' => "TRES_PER_NODE",
        _ => "?",
    };
    render(format, |c| Ok(names(c).to_string()))
}

/// Which line of a job `sacct` prints: the job (the allocation), its batch script, or
/// one of its steps.
#[derive(Debug, Clone, Copy)]
pub enum AcctLine<'a> {
    Job,
    Batch,
    Step(&'a api::StepInfo),
}

impl AcctLine<'_> {
    /// The job as this line shows it: a step's own name, state, times, nodes, tasks
    /// and exit code over the job's other fields.
    pub fn view(&self, j: &api::JobInfo) -> api::JobInfo {
        let mut v = j.clone();
        match self {
            Self::Job => {}
            Self::Batch => {
                v.name = "batch".into();
                v.nodes = 1;
                v.tasks = 1;
                let first = j.allocation.first();
                v.node_list = first.map(|n| n.node.clone()).unwrap_or_default();
                v.cores = first.map_or(j.cores, |n| n.cores.len() as u64);
            }
            Self::Step(s) => {
                v.name = s.name.clone();
                v.state = s.state.clone();
                v.start_time = s.start_time;
                v.end_time = s.end_time;
                v.nodes = s.nodes;
                v.tasks = s.tasks;
                v.node_list = s.node_list.clone();
                v.exit_code = s.exit_code;
                v.suspended_s = 0;
            }
        }
        v
    }

    fn suffix(&self) -> String {
        match self {
            Self::Job => String::new(),
            Self::Batch => ".batch".into(),
            Self::Step(s) => format!(".{}", s.step_id),
        }
    }
}

/// A group's name, or its number when this machine does not know it.
pub fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: getgrgid_r writes into `grp` and `buf` (of the length given) only, and sets
    // `result` to `grp` or null; the name is read while `buf` lives.
    unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc == 0 && !result.is_null() && !grp.gr_name.is_null() {
            return std::ffi::CStr::from_ptr(grp.gr_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    gid.to_string()
}

/// A user's name from the job, with its id as Slurm shows it: `alice(1000)`.
pub fn user_with_id(j: &api::JobInfo) -> String {
    format!("{}({})", j.user, j.uid)
}

/// `scontrol show job`'s record, in Slurm's layout (`Key=Value` lines; an array task
/// names its array; each node's cores and GPUs follow, as `scontrol -d` shows them).
pub fn scontrol_job(j: &api::JobInfo, now: i64) -> String {
    use std::fmt::Write;
    let or_none = |t: i64| {
        if t > 0 {
            timestamp(t)
        } else {
            "Unknown".into()
        }
    };
    let mut o = String::new();
    let array = if j.array_job_id != 0 {
        format!(
            " ArrayJobId={} ArrayTaskId={}",
            j.array_job_id, j.array_task_id
        )
    } else {
        String::new()
    };
    let _ = writeln!(o, "JobId={}{array} JobName={}", j.job_id, j.name);
    let _ = writeln!(
        o,
        "   UserId={} GroupId={}({}) MCS_label=N/A",
        user_with_id(j),
        group_name(j.gid),
        j.gid
    );
    let _ = writeln!(
        o,
        "   Priority={} Nice={} Account={} QOS={} WCKey={}",
        j.priority.max(0),
        j.nice,
        or_null(&j.account),
        j.qos,
        if j.wckey.is_empty() {
            "*".into()
        } else {
            j.wckey.clone()
        }
    );
    let _ = writeln!(
        o,
        "   JobState={} Reason={} Dependency={}",
        j.state,
        if j.reason.is_empty() {
            "None"
        } else {
            &j.reason
        },
        or_null(&j.dependency)
    );
    let exit = match j.exit_code {
        Some(c) if c > 128 => format!("0:{}", c - 128),
        Some(c) => format!("{c}:0"),
        None => "0:0".into(),
    };
    let _ = writeln!(
        o,
        "   Requeue=1 Restarts={} BatchFlag={} Reboot=0 ExitCode={exit}",
        j.requeue_count,
        u8::from(!j.allocation_only)
    );
    let _ = writeln!(
        o,
        "   RunTime={} TimeLimit={} TimeMin=N/A",
        clock(used(j, now)),
        clock_limit(j.time_limit_s)
    );
    let _ = writeln!(
        o,
        "   SubmitTime={} EligibleTime={}",
        timestamp(j.submit_time),
        timestamp(j.begin_time.max(j.submit_time))
    );
    let _ = writeln!(
        o,
        "   StartTime={} EndTime={} Deadline=N/A",
        or_none(j.start_time),
        or_none(j.end_time)
    );
    let _ = writeln!(o, "   SuspendTime=None SecsPreSuspend={}", j.suspended_s);
    let _ = writeln!(o, "   Partition={}", j.partition);
    if !j.reservation.is_empty() {
        let _ = writeln!(o, "   Reservation={}", printable(&j.reservation));
    }
    let _ = writeln!(o, "   NodeList={}", or_null(&j.node_list));
    let _ = writeln!(
        o,
        "   BatchHost={}",
        j.allocation.first().map_or("(null)", |n| n.node.as_str())
    );
    let _ = writeln!(
        o,
        "   NumNodes={} NumCPUs={} NumTasks={} CPUs/Task={}",
        j.nodes, j.cores, j.tasks, j.cpus_per_task
    );
    let mem: u64 = j.allocation.iter().map(|n| n.memory_mb).sum();
    let mut tres = format!("cpu={},node={}", j.cores, j.nodes);
    if mem > 0 {
        let _ = write!(tres, ",mem={mem}M");
    }
    if j.gpus > 0 {
        let _ = write!(tres, ",gres/gpu={}", j.gpus);
    }
    let _ = writeln!(o, "   TRES={tres}");
    for n in &j.allocation {
        let cores: Vec<u32> = n.cores.clone();
        let gpus: Vec<String> = n.gpus.iter().map(|g| g.to_string()).collect();
        let _ = writeln!(
            o,
            "     Nodes={} CPU_IDs={} Mem={} GRES={}",
            n.node,
            ranges(&cores),
            n.memory_mb,
            if gpus.is_empty() {
                String::new()
            } else {
                format!("gpu:{}(IDX:{})", gpus.len(), ranges(&n.gpus))
            }
        );
    }
    let _ = writeln!(o, "   WorkDir={}", j.workdir);
    let _ = writeln!(o, "   Comment={}", or_null(&j.comment));
    let _ = writeln!(o, "   StdErr={}", j.stderr_path);
    let _ = writeln!(o, "   StdIn=/dev/null");
    let _ = writeln!(o, "   StdOut={}", j.stdout_path);
    o
}

/// `0-3,8,10-11`: ids in runs, as Slurm lists CPU and GPU ids and array indices.
fn ranges(ids: &[u32]) -> String {
    let mut v = ids.to_vec();
    v.sort_unstable();
    v.dedup();
    let mut parts = Vec::new();
    let mut i = 0;
    while i < v.len() {
        let start = v[i];
        let mut end = start;
        while i + 1 < v.len() && v[i + 1] == end + 1 {
            i += 1;
            end = v[i];
        }
        parts.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    parts.join(",")
}

/// The `meta` block of Slurm's `--json` output: which program and version answered.
pub fn json_meta(command: &str) -> serde_json::Value {
    serde_json::json!({
        "plugin": { "type": "gantry", "name": "gantry" },
        "command": [command],
        "Slurm": { "version": { "major": 22, "micro": 0, "minor": 5 }, "release": "22.05 (Gantry)" },
        "gantry": { "version": env!("CARGO_PKG_VERSION") },
    })
}

/// sacct's default columns, `-b`'s and `-l`'s.
pub const SACCT_DEFAULT: &str = "JobID,JobName,Partition,Account,AllocCPUS,State,ExitCode";
pub const SACCT_BRIEF: &str = "JobID,State,ExitCode";
pub const SACCT_LONG: &str = "JobID,JobIDRaw,JobName,Partition,MaxRSS,AveCPU,NTasks,AllocCPUS,Elapsed,State,ExitCode,ReqMem,ReqCPUS,NNodes,NodeList,Start,End,Submit,TotalCPU,UserCPU,SystemCPU,WorkDir";

/// Every field `sacct -o` takes (`sacct -e`).
pub const SACCT_FIELDS: &[&str] = &[
    "Account",
    "AllocCPUS",
    "AllocNodes",
    "AllocTRES",
    "AveCPU",
    "Comment",
    "CPUTime",
    "CPUTimeRAW",
    "DerivedExitCode",
    "Elapsed",
    "ElapsedRaw",
    "Eligible",
    "End",
    "ExitCode",
    "GID",
    "Group",
    "JobID",
    "JobIDRaw",
    "JobName",
    "MaxRSS",
    "NCPUS",
    "NNodes",
    "NodeList",
    "NTasks",
    "Partition",
    "Priority",
    "QOS",
    "Reason",
    "ReqCPUS",
    "ReqMem",
    "ReqNodes",
    "Reservation",
    "Start",
    "State",
    "Submit",
    "Suspended",
    "SystemCPU",
    "Timelimit",
    "TimelimitRaw",
    "TotalCPU",
    "UID",
    "User",
    "UserCPU",
    "WCKey",
    "WorkDir",
];

/// One column of the fixed-width tables of sacct, sshare, sstat and sreport (Slurm's
/// `print_fields`): a name, a width, and which side text sits on.
#[derive(Debug, Clone, PartialEq)]
pub struct Column {
    pub name: String,
    pub width: usize,
    pub left: bool,
}

impl Column {
    /// A right-justified column.
    pub fn right(name: impl Into<String>, width: usize) -> Self {
        Self {
            name: name.into(),
            width,
            left: false,
        }
    }

    /// The text padded to the column; too long a value is cut with a `+` at its end,
    /// as Slurm marks it (a name is only cut).
    pub fn cell(&self, text: &str, value: bool) -> String {
        let w = self.width;
        let count = text.chars().count();
        let text: String = if count > w {
            let cut: String = text
                .chars()
                .take(w.saturating_sub(usize::from(value)))
                .collect();
            if value {
                cut + "+"
            } else {
                cut
            }
        } else {
            text.to_string()
        };
        if self.left {
            format!("{text:<w$}")
        } else {
            format!("{text:>w$}")
        }
    }
}

/// Prints a fixed-width table: names, a rule of dashes, then the rows; each cell
/// followed by a space, as Slurm's tools print them.
pub fn print_columns(columns: &[Column], rows: &[Vec<String>], header: bool) {
    if header {
        let head: String = columns
            .iter()
            .map(|c| c.cell(&c.name, false) + " ")
            .collect();
        println!("{head}");
        let rule: String = columns.iter().map(|c| "-".repeat(c.width) + " ").collect();
        println!("{rule}");
    }
    for r in rows {
        let line: String = r
            .iter()
            .zip(columns)
            .map(|(v, c)| c.cell(v, true) + " ")
            .collect();
        println!("{line}");
    }
}

/// `JobID,State%20,ExitCode` → columns with sacct's default widths (JobID 12, ExitCode
/// 8, NodeList 15, WorkDir 30, the rest 10) unless one is given.
pub fn sacct_columns(format: &str) -> Result<Vec<Column>> {
    let mut out = Vec::new();
    for f in format.split(',').map(str::trim).filter(|f| !f.is_empty()) {
        let (name, width) = match f.split_once('%') {
            Some((n, w)) => (
                n,
                Some(
                    w.parse::<usize>()
                        .ok()
                        .filter(|&w| (1..=4096).contains(&w))
                        .ok_or_else(|| {
                            anyhow::anyhow!("sacct: bad width in '{f}' (use Name%20)")
                        })?,
                ),
            ),
            None => (f, None),
        };
        let known = SACCT_FIELDS.iter().find(|k| k.eq_ignore_ascii_case(name));
        let Some(&canonical) = known else {
            bail!("sacct: unknown field '{name}' (sacct -e lists them)");
        };
        let default = match canonical {
            "JobID" | "JobIDRaw" => 12,
            "ExitCode" => 8,
            "NodeList" => 15,
            "WorkDir" | "Comment" => 30,
            "Start" | "End" | "Submit" | "Eligible" => 19,
            _ => 10,
        };
        out.push(Column {
            name: canonical.to_string(),
            width: width.unwrap_or(default),
            left: matches!(canonical, "JobID" | "JobIDRaw"),
        });
    }
    if out.is_empty() {
        bail!("sacct: no fields to show");
    }
    Ok(out)
}

/// `sacct` fields by name (`--format=JobID,State,ExitCode`), for one line of a job.
pub fn sacct_field(
    name: &str,
    r: &api::AccountingRecord,
    line: AcctLine<'_>,
    now: i64,
) -> Result<String> {
    let Some(j) = &r.job else {
        return Ok(String::new());
    };
    let j = &line.view(j);
    let step_cpu = match line {
        AcctLine::Step(s) => Some(s.cpu_s),
        _ => None,
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "jobid" => format!("{}{}", job_id(j), line.suffix()),
        "jobidraw" => format!("{}{}", j.job_id, line.suffix()),
        "jobname" => j.name.clone(),
        "user" => j.user.clone(),
        "account" => j.account.clone(),
        "partition" => j.partition.clone(),
        "qos" => j.qos.clone(),
        "state" => j.state.clone(),
        "exitcode" => match j.exit_code {
            Some(c) if c > 128 => format!("0:{}", c - 128),
            Some(c) => format!("{c}:0"),
            None => "0:0".into(),
        },
        "elapsed" => clock(used(j, now)),
        "elapsedraw" => used(j, now).to_string(),
        "timelimit" => clock_limit(j.time_limit_s),
        "submit" => timestamp(j.submit_time),
        "start" => timestamp(j.start_time),
        "end" => timestamp(j.end_time),
        "nnodes" => j.nodes.to_string(),
        "ncpus" | "alloccpus" => j.cores.to_string(),
        "ntasks" => j.tasks.to_string(),
        "nodelist" => j.node_list.clone(),
        "maxrss" => format!("{}M", r.max_rss_mb),
        "cputimeraw" => format!("{:.0}", r.cpu_core_seconds),
        "totalcpu" => elapsed(step_cpu.unwrap_or(r.user_cpu_s + r.system_cpu_s).round() as i64),
        "usercpu" => elapsed(r.user_cpu_s.round() as i64),
        "systemcpu" => elapsed(r.system_cpu_s.round() as i64),
        "allocgres" | "alloctres" => format!("cpu={},gres/gpu={}", j.cores, j.gpus),
        "allocnodes" | "reqnodes" => j.nodes.to_string(),
        "reqcpus" => j.cores.to_string(),
        "reqmem" => match j.allocation.first() {
            Some(n) if n.memory_mb > 0 => format!("{}M", n.memory_mb),
            _ => "0".into(),
        },
        "avecpu" => elapsed(
            (step_cpu.unwrap_or(r.user_cpu_s + r.system_cpu_s) / f64::from(j.tasks.max(1))).round()
                as i64,
        ),
        "cputime" => clock(r.cpu_core_seconds.round() as i64),
        "timelimitraw" => match j.time_limit_s {
            s if s > 0 => (s / 60).to_string(),
            _ => "UNLIMITED".into(),
        },
        "eligible" => timestamp(j.begin_time.max(j.submit_time)),
        "suspended" => clock(j.suspended_s),
        "priority" => j.priority.to_string(),
        "reason" => j.reason.clone(),
        "derivedexitcode" => "0:0".into(),
        "comment" => j.comment.clone(),
        "wckey" => j.wckey.clone(),
        "reservation" => j.reservation.clone(),
        "uid" => j.uid.to_string(),
        "gid" => j.gid.to_string(),
        "group" => group_name(j.gid),
        "workdir" => j.workdir.clone(),
        other => bail!("sacct: unknown field '{other}'"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> api::JobInfo {
        api::JobInfo {
            job_id: 42,
            name: "train".into(),
            user: "alice".into(),
            partition: "gpu".into(),
            state: "RUNNING".into(),
            start_time: 1000,
            nodes: 1,
            node_list: "dgx01".into(),
            time_limit_s: 3600,
            ..Default::default()
        }
    }

    #[test]
    fn control_characters_are_shown_as_escapes() {
        assert_eq!(printable("plain name"), "plain name");
        assert_eq!(printable("a\nb"), "a\\nb");
        assert_eq!(
            printable("\x1b[2J\x1b]0;pwned\x07"),
            "\\x1b[2J\\x1b]0;pwned\\x07"
        );
        assert_eq!(printable("\u{9b}31m"), "\\x9b31m");
        assert_eq!(printable("naïve"), "naïve");
        let j = printable_job(api::JobInfo {
            name: "x\x1b[31m".into(),
            stdout_path: "/tmp/a\nb".into(),
            ..job()
        });
        assert_eq!(j.name, "x\\x1b[31m");
        assert_eq!(j.stdout_path, "/tmp/a\\nb");
    }

    proptest::proptest! {
        /// Whatever a user names, what reaches a terminal holds no control character.
        #[test]
        fn printable_text_holds_no_control_character(text in proptest::prelude::any::<String>()) {
            proptest::prop_assert!(!printable(&text).chars().any(char::is_control));
        }
    }

    #[test]
    fn squeue_formats_like_slurm() {
        let j = job();
        assert_eq!(
            squeue_line("%i %t %M %l %R", &j, 1075).unwrap(),
            "42 R 1:15 1:00:00 dgx01"
        );
        assert_eq!(squeue_line("%.5i|%-6j|", &j, 0).unwrap(), "   42|train |");
        let p = api::JobInfo {
            state: "PENDING".into(),
            reason: "Resources".into(),
            array_job_id: 40,
            array_task_id: 2,
            ..job()
        };
        assert_eq!(
            squeue_line("%i %t %R", &p, 0).unwrap(),
            "40_2 PD (Resources)"
        );
        assert!(squeue_line("%y", &p, 0).is_err());
        assert_eq!(squeue_header("%.5i %t").unwrap(), "JOBID ST");
    }

    #[test]
    fn times_print_as_slurm_prints_them() {
        assert_eq!(elapsed(59), "0:59");
        assert_eq!(elapsed(3661), "1:01:01");
        assert_eq!(elapsed(90_061), "1-01:01:01");
        assert_eq!(clock(2), "00:00:02");
        assert_eq!(clock(3661), "01:01:01");
        assert_eq!(clock(90_061), "1-01:01:01");
        assert_eq!(clock_limit(0), "UNLIMITED");
        assert_eq!(limit(0), "UNLIMITED");
        assert_eq!(timestamp(0), "N/A");
        assert_eq!(timestamp(1_700_000_000), "2023-11-14T22:13:20");
    }
}
