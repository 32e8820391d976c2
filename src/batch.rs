//! Batch submissions: `sbatch`'s options, from the command line and from `#SBATCH`
//! directives in the script (the command line wins), turned into a `JobSubmission`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gantry_api as api;
use gantry_kernel::units::{parse_duration, parse_memory_mb};

/// The options `sbatch` and `gantry submit` take (a directive `#SBATCH --x=y` is the
/// same as the option `--x=y`).
#[derive(Args, Debug, Clone, Default)]
pub struct JobOptions {
    /// Job name (default: the script's file name).
    #[arg(short = 'J', long = "job-name")]
    pub job_name: Option<String>,
    /// Number of tasks.
    #[arg(short = 'n', long)]
    pub ntasks: Option<u32>,
    /// CPUs per task.
    #[arg(short = 'c', long = "cpus-per-task")]
    pub cpus_per_task: Option<u32>,
    /// Number of nodes.
    #[arg(short = 'N', long)]
    pub nodes: Option<String>,
    /// Run on exactly these nodes (a host list: gpu[01-04]); the node count is theirs.
    #[arg(short = 'w', long)]
    pub nodelist: Option<String>,
    /// Never run on these nodes (a host list).
    #[arg(short = 'x', long)]
    pub exclude: Option<String>,
    /// Tasks on each node: with -N, N times this many tasks; with -n, as many nodes as
    /// it takes; alone, one node.
    #[arg(long = "ntasks-per-node")]
    pub ntasks_per_node: Option<u32>,
    /// Memory per node (e.g. 4G, 500M); 0: all of each node's memory.
    #[arg(long)]
    pub mem: Option<String>,
    /// Memory per allocated GPU (per node: this times the node's GPUs).
    #[arg(long = "mem-per-gpu")]
    pub mem_per_gpu: Option<String>,
    /// GPUs for each task (with --ntasks-per-node: that many per node; else for the job),
    /// each task of a step seeing only its own.
    #[arg(long = "gpus-per-task")]
    pub gpus_per_task: Option<u32>,
    /// CPUs per allocated GPU (the CPUs per task follow from the GPUs per task).
    #[arg(long = "cpus-per-gpu")]
    pub cpus_per_gpu: Option<u32>,
    /// How steps lay task ids over the nodes: block (default) or cyclic (a `:…` suffix
    /// for sockets and cores is accepted and ignored).
    #[arg(short = 'm', long)]
    pub distribution: Option<String>,
    /// Memory per CPU.
    #[arg(long = "mem-per-cpu")]
    pub mem_per_cpu: Option<String>,
    /// GPUs for the whole job.
    #[arg(short = 'G', long)]
    pub gpus: Option<String>,
    /// GPUs per node.
    #[arg(long = "gpus-per-node")]
    pub gpus_per_node: Option<String>,
    /// Generic resources per node, e.g. gpu:4 or nvme:1.
    #[arg(long)]
    pub gres: Option<String>,
    /// Time limit: minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]], or UNLIMITED.
    #[arg(short = 't', long)]
    pub time: Option<String>,
    #[arg(short = 'p', long)]
    pub partition: Option<String>,
    #[arg(short = 'A', long)]
    pub account: Option<String>,
    #[arg(short = 'q', long)]
    pub qos: Option<String>,
    /// Job array indices, e.g. 0-9%2.
    #[arg(short = 'a', long)]
    pub array: Option<String>,
    /// Dependencies, e.g. afterok:12:13.
    #[arg(short = 'd', long)]
    pub dependency: Option<String>,
    /// Standard output file pattern (%j %x %A %a %u %N).
    #[arg(short = 'o', long)]
    pub output: Option<String>,
    /// Standard error file pattern.
    #[arg(short = 'e', long)]
    pub error: Option<String>,
    /// Whole nodes, shared with no other job.
    #[arg(long)]
    pub exclusive: bool,
    /// Node features that must be present (a&b).
    #[arg(short = 'C', long)]
    pub constraint: Option<String>,
    /// Requeue when a node fails.
    #[arg(long)]
    pub requeue: bool,
    /// Never requeue.
    #[arg(long = "no-requeue")]
    pub no_requeue: bool,
    /// Working directory of the job (default: the current one).
    #[arg(short = 'D', long)]
    pub chdir: Option<String>,
    /// Environment to pass: ALL (default), NONE, or NAME[=value],... (with ALL, added).
    #[arg(long)]
    pub export: Option<String>,
    /// A signal before the time limit: [B:]SIG[@SECONDS] (default 60 s before); to the
    /// job's steps, or with B: to the batch script only.
    #[arg(long)]
    pub signal: Option<String>,
    /// A comment, kept with the job and shown by scontrol and sacct.
    #[arg(long)]
    pub comment: Option<String>,
    /// A workload characterization key, kept and shown by sacct.
    #[arg(long)]
    pub wckey: Option<String>,
    /// Run inside this advance reservation (its nodes, while it is open; ended when it
    /// ends).
    #[arg(long)]
    pub reservation: Option<String>,
    /// Output files: truncate (default) or append.
    #[arg(long = "open-mode", value_parser = ["append", "truncate"])]
    pub open_mode: Option<String>,
    /// Lower the job's priority by this much (default 100; below 0, which raises it, is
    /// for admins).
    #[arg(long, num_args = 0..=1, default_missing_value = "100", allow_negative_numbers = true)]
    pub nice: Option<i32>,
    /// Submit held: the job waits until `scontrol release`.
    #[arg(short = 'H', long)]
    pub hold: bool,
    /// Not before this time (now+1hour, 16:00, 2026-12-24T08:00, tomorrow, ...).
    #[arg(short = 'b', long)]
    pub begin: Option<String>,
    /// Remove the job if it can no longer end by this time (its start + time limit);
    /// Slurm's time forms.
    #[arg(long)]
    pub deadline: Option<String>,
    /// Mail events: accepted and ignored (Gantry sends no mail).
    #[arg(long = "mail-type")]
    pub mail_type: Option<String>,
    /// Mail recipient: accepted and ignored (Gantry sends no mail).
    #[arg(long = "mail-user")]
    pub mail_user: Option<String>,
    /// A shorter acceptable time limit: accepted and ignored (the job runs with --time).
    #[arg(long = "time-min")]
    pub time_min: Option<String>,
}

impl JobOptions {
    /// Fills options not given on the command line from the script's directives.
    pub fn with_directives(mut self, script: &str, origin: &str) -> Result<Self> {
        let mut args = vec!["sbatch".to_string()];
        for (n, line) in script.lines().enumerate() {
            let line = line.trim();
            if n > 0 && !line.starts_with('#') && !line.is_empty() {
                // Directives end at the first command, as in sbatch.
                break;
            }
            let Some(rest) = line.strip_prefix("#SBATCH") else {
                continue;
            };
            let words = shell_words(rest)
                .with_context(|| format!("{origin}:{}: malformed #SBATCH directive", n + 1))?;
            for w in words {
                if !w.starts_with('-') && args.len() == 1 {
                    bail!("{origin}:{}: '#SBATCH {w}' is not an option", n + 1);
                }
                args.push(w);
            }
        }
        #[derive(clap::Parser)]
        // As sbatch: an option given twice takes its last value.
        #[command(no_binary_name = false, args_override_self = true)]
        struct Directives {
            #[command(flatten)]
            opts: JobOptions,
        }
        let parsed = <Directives as clap::Parser>::try_parse_from(&args).map_err(|e| {
            let text = e.to_string();
            let first = text
                .lines()
                .next()
                .unwrap_or("invalid directive")
                .to_string();
            anyhow!(
                "{origin}: #SBATCH directives: {}",
                first.trim_start_matches("error: ")
            )
        })?;
        let d = parsed.opts;
        macro_rules! fill {
            ($($f:ident),*) => { $( if self.$f.is_none() { self.$f = d.$f; } )* };
        }
        fill!(
            job_name,
            ntasks,
            cpus_per_task,
            nodes,
            nodelist,
            exclude,
            ntasks_per_node,
            mem,
            mem_per_gpu,
            gpus_per_task,
            cpus_per_gpu,
            distribution,
            mem_per_cpu,
            gpus,
            gpus_per_node,
            gres,
            time,
            partition,
            account,
            qos,
            array,
            dependency,
            output,
            error,
            constraint,
            chdir,
            export,
            signal,
            comment,
            wckey,
            open_mode,
            begin,
            nice,
            deadline,
            mail_type,
            mail_user,
            time_min
        );
        self.hold |= d.hold;
        self.exclusive |= d.exclusive;
        if !self.no_requeue {
            self.requeue |= d.requeue;
        }
        self.no_requeue |= d.no_requeue && !self.requeue;
        Ok(self)
    }

    /// The submission: these options, the script or command, the caller's environment.
    pub fn submission(
        &self,
        default_name: &str,
        script: String,
        argv: Vec<String>,
    ) -> Result<api::JobSubmission> {
        let cwd = std::env::current_dir().context("cannot read the current directory")?;
        let workdir = match &self.chdir {
            Some(d) if Path::new(d).is_absolute() => d.clone(),
            Some(d) => cwd.join(d).display().to_string(),
            None => cwd.display().to_string(),
        };
        let count = |what: &str, v: &Option<String>| -> Result<u32> {
            match v {
                None => Ok(0),
                Some(s) => {
                    // "2" or "2-4": the lower bound is what the job gets.
                    let n = s.split('-').next().unwrap_or(s);
                    n.trim()
                        .parse()
                        .map_err(|_| anyhow!("--{what}: '{s}' is not a number"))
                }
            }
        };
        // Slurm refuses a zero count of tasks, CPUs or nodes rather than rounding it up.
        let positive = |what: &str, v: Option<u32>| -> Result<u32> {
            match v {
                Some(0) => bail!("--{what}: invalid numeric value \"0\" (at least 1)"),
                Some(n) => Ok(n),
                None => Ok(1),
            }
        };
        let tasks = positive("ntasks", self.ntasks)?;
        let cpus_per_task = positive("cpus-per-task", self.cpus_per_task)?;
        let nodes = count("nodes", &self.nodes)?;
        if self.nodes.is_some() && nodes == 0 {
            bail!("--nodes: invalid node count \"0\" (at least 1)");
        }
        let (tasks, nodes) = match self.ntasks_per_node {
            None => (tasks, nodes),
            Some(0) => bail!("--ntasks-per-node: invalid numeric value \"0\" (at least 1)"),
            // As Slurm: the count per node and the node count make the task count, or
            // the task count and the count per node make the node count.
            Some(k) => match (self.ntasks, nodes) {
                (None, 0) => (k, 1),
                (None, n) => (
                    n.checked_mul(k).ok_or_else(|| {
                        anyhow!("--nodes={n} × --ntasks-per-node={k} is too many tasks")
                    })?,
                    n,
                ),
                (Some(_), 0) => (tasks, tasks.div_ceil(k)),
                (Some(_), n) if u64::from(tasks) > u64::from(n) * u64::from(k) => bail!(
                    "--ntasks={tasks} does not fit --nodes={n} with --ntasks-per-node={k} \
                     (at most {})",
                    u64::from(n) * u64::from(k)
                ),
                (Some(_), n) => (tasks, n),
            },
        };
        let mem = |what: &str, v: &Option<String>| -> Result<u64> {
            v.as_deref()
                .map(parse_memory_mb)
                .transpose()
                .map_err(|e| anyhow!("--{what}: {e}"))
                .map(|m| m.unwrap_or(0))
        };
        let mut gpus_per_node = count("gpus-per-node", &self.gpus_per_node)?;
        let mut gres = Vec::new();
        if let Some(g) = &self.gres {
            for item in g.split(',') {
                let parts: Vec<&str> = item.split(':').collect();
                let (name, n) = match parts[..] {
                    [name] => (name, 1u64),
                    [name, n] | [name, _, n] => (
                        name,
                        n.parse().map_err(|_| {
                            anyhow!("--gres: '{item}' has no count (use name:count)")
                        })?,
                    ),
                    _ => bail!("--gres: '{item}' is not name[:type]:count"),
                };
                if name == "gpu" {
                    gpus_per_node = n as u32;
                } else {
                    gres.push(api::Gres {
                        name: name.into(),
                        count: n,
                    });
                }
            }
        }
        let mut gpus_per_job = count(
            "gpus",
            &self.gpus.as_ref().map(|g| {
                // --gpus=a100:2 names a type; the count is what matters here.
                g.rsplit(':').next().unwrap_or(g).to_string()
            }),
        )?;
        // --gpus-per-task: per node with --ntasks-per-node, else for the whole job.
        if let Some(g) = self.gpus_per_task {
            if g == 0 {
                bail!("--gpus-per-task: invalid numeric value \"0\" (at least 1)");
            }
            if gpus_per_node > 0 || gpus_per_job > 0 {
                bail!("give --gpus-per-task or --gpus/--gpus-per-node, not both");
            }
            let too_many = || anyhow!("--gpus-per-task={g} is too many GPUs for {tasks} tasks");
            match self.ntasks_per_node {
                Some(k) => gpus_per_node = k.checked_mul(g).ok_or_else(too_many)?,
                None => gpus_per_job = tasks.checked_mul(g).ok_or_else(too_many)?,
            }
        }
        let tasks_on_a_node = self
            .ntasks_per_node
            .unwrap_or_else(|| tasks.div_ceil(nodes.max(1)))
            .max(1);
        let gpus_on_a_node = if gpus_per_node > 0 {
            gpus_per_node
        } else {
            gpus_per_job.div_ceil(nodes.max(1))
        };
        let gpus_each_task = match self.gpus_per_task {
            Some(g) => g,
            None => (gpus_on_a_node / tasks_on_a_node).max(u32::from(gpus_on_a_node > 0)),
        };
        let cpus_per_task = match self.cpus_per_gpu {
            None => cpus_per_task,
            Some(_) if self.cpus_per_task.is_some() => {
                bail!("give --cpus-per-task or --cpus-per-gpu, not both")
            }
            Some(0) => bail!("--cpus-per-gpu: invalid numeric value \"0\" (at least 1)"),
            Some(_) if gpus_each_task == 0 => {
                bail!("--cpus-per-gpu needs GPUs (--gpus, --gpus-per-node or --gpus-per-task)")
            }
            Some(c) => c
                .checked_mul(gpus_each_task)
                .ok_or_else(|| anyhow!("--cpus-per-gpu={c} is too many CPUs"))?,
        };
        let mut mem_per_node_mb = mem("mem", &self.mem)?;
        let mem_whole_node = self.mem.is_some() && mem_per_node_mb == 0;
        if let Some(m) = &self.mem_per_gpu {
            if self.mem.is_some() || self.mem_per_cpu.is_some() {
                bail!("give --mem-per-gpu, --mem or --mem-per-cpu, only one");
            }
            if gpus_on_a_node == 0 {
                bail!("--mem-per-gpu needs GPUs (--gpus, --gpus-per-node or --gpus-per-task)");
            }
            let per = parse_memory_mb(m).map_err(|e| anyhow!("--mem-per-gpu: {e}"))?;
            mem_per_node_mb = per.saturating_mul(u64::from(gpus_on_a_node));
        }
        if let Some(d) = &self.distribution {
            distribution(Some(d))?;
        }
        let time_limit_s = match &self.time {
            None => 0,
            Some(t) => match parse_duration(t).map_err(|e| anyhow!("--time: {e}"))? {
                Some(0) => bail!("--time: a time limit of 0 is not allowed"),
                Some(s) => s,
                None => api::TIME_UNLIMITED,
            },
        };
        let mut env = export_env(self.export.as_deref())?;
        // Where the job was submitted from, as Slurm gives every job.
        if let Some(host) = submit_host() {
            env.insert("SLURM_SUBMIT_HOST".into(), host);
        }
        // sbatch's output variables, set only when their option was given.
        if let Some(k) = self.ntasks_per_node {
            env.insert("SLURM_NTASKS_PER_NODE".into(), k.to_string());
        }
        if let Some(g) = &self.gpus_per_node {
            env.insert("SLURM_GPUS_PER_NODE".into(), g.trim().to_string());
        }
        if let Some(g) = self.gpus_per_task {
            env.insert("SLURM_GPUS_PER_TASK".into(), g.to_string());
        }
        if let Some(c) = self.cpus_per_gpu {
            env.insert("SLURM_CPUS_PER_GPU".into(), c.to_string());
        }
        if let Some(m) = &self.mem_per_gpu {
            env.insert("SLURM_MEM_PER_GPU".into(), m.trim().to_string());
        }
        if let Some(d) = &self.distribution {
            env.insert("SLURM_DISTRIBUTION".into(), d.trim().to_string());
        }
        if let Some(m) = &self.mem_per_cpu {
            env.insert(
                "SLURM_MEM_PER_CPU".into(),
                mem("mem-per-cpu", &Some(m.clone()))?.to_string(),
            );
        }
        if self.mem.is_some() && !mem_whole_node {
            env.insert("SLURM_MEM_PER_NODE".into(), mem_per_node_mb.to_string());
        }
        if let Some(t) = &self.time_min {
            parse_duration(t).map_err(|e| anyhow!("--time-min: {e}"))?;
        }
        let warn_signal = self.signal.as_deref().map(warn_signal).transpose()?;
        let deadline = match &self.deadline {
            Some(d) => crate::when::parse(d, &crate::when::now())
                .map_err(|e| anyhow!("--deadline: {e}"))?,
            None => 0,
        };
        let begin_time = match &self.begin {
            Some(b) => {
                crate::when::parse(b, &crate::when::now()).map_err(|e| anyhow!("--begin: {e}"))?
            }
            None => 0,
        };
        Ok(api::JobSubmission {
            name: self
                .job_name
                .clone()
                .unwrap_or_else(|| default_name.to_string()),
            script,
            argv,
            workdir,
            env,
            account: self.account.clone().unwrap_or_default(),
            partition: self.partition.clone().unwrap_or_default(),
            qos: self.qos.clone().unwrap_or_default(),
            tasks,
            cpus_per_task,
            nodes,
            mem_per_node_mb,
            mem_whole_node,
            mem_per_cpu_mb: mem("mem-per-cpu", &self.mem_per_cpu)?,
            gpus_per_node,
            gpus_per_job,
            gres,
            exclusive: self.exclusive,
            features: self
                .constraint
                .as_deref()
                .map(|c| c.split('&').map(|f| f.trim().to_string()).collect())
                .unwrap_or_default(),
            time_limit_s,
            array: self.array.clone().unwrap_or_default(),
            dependency: self.dependency.clone().unwrap_or_default(),
            requeue: if self.requeue {
                Some(true)
            } else if self.no_requeue {
                Some(false)
            } else {
                None
            },
            output: self.output.clone().unwrap_or_default(),
            error: self.error.clone().unwrap_or_default(),
            umask: own_umask(),
            comment: self.comment.clone().unwrap_or_default(),
            wckey: self.wckey.clone().unwrap_or_default(),
            warn_signal,
            append_output: self.open_mode.as_deref() == Some("append"),
            hold: self.hold,
            begin_time,
            nice: self.nice.unwrap_or(0),
            deadline,
            reservation: self.reservation.clone().unwrap_or_default(),
            nodelist: self.nodelist.clone().unwrap_or_default(),
            exclude: self.exclude.clone().unwrap_or_default(),
            allocation_only: false,
        })
    }
}

/// How steps lay task ids over the nodes (`-m/--distribution`): block or cyclic; a
/// `:…` suffix (sockets, cores) is accepted and ignored.
pub(crate) fn distribution(d: Option<&str>) -> Result<api::Distribution> {
    match d.map(|d| d.split([':', ',']).next().unwrap_or("").trim()) {
        None | Some("") | Some("block") | Some("*") => Ok(api::Distribution::Block),
        Some("cyclic") => Ok(api::Distribution::Cyclic),
        Some(other) => bail!("--distribution: '{other}' is not offered (block or cyclic)"),
    }
}

pub(crate) fn export_env(export: Option<&str>) -> Result<HashMap<String, String>> {
    let mut env = HashMap::new();
    let spec = export.unwrap_or("ALL");
    let mut items = spec
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .peekable();
    match items.peek().map(|s| s.to_ascii_uppercase()).as_deref() {
        Some("ALL") => {
            items.next();
            // A variable whose name or value is not UTF-8 cannot cross the wire: left out.
            env.extend(
                std::env::vars_os()
                    .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?))),
            );
        }
        Some("NONE" | "NIL") => {
            items.next();
        }
        _ => {}
    }
    for item in items {
        match item.split_once('=') {
            Some((k, v)) => {
                env.insert(k.to_string(), v.to_string());
            }
            // A named variable that is not set is left out, as sbatch does.
            None => {
                if let Ok(v) = std::env::var(item) {
                    env.insert(item.to_string(), v);
                }
            }
        }
    }
    Ok(env)
}

/// This process's umask, from `/proc/self/status` (reading it with umask(2) would
/// change it for a moment).
pub(crate) fn own_umask() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("Umask:"))?;
    u32::from_str_radix(line["Umask:".len()..].trim(), 8).ok()
}

/// Splits a directive's text like a shell would for simple quoting.
/// This machine's host name (the job's `SLURM_SUBMIT_HOST`).
fn submit_host() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    std::str::from_utf8(&buf[..end]).ok().map(str::to_string)
}

/// `--signal=[B:]SIG[@SECONDS]`: the signal by number or name, 60 seconds before the
/// limit unless said (Slurm's default), B: for the batch script alone.
fn warn_signal(text: &str) -> Result<api::WarnSignal> {
    let (batch_only, rest) = match text.split_once(':') {
        Some(("B", rest)) => (true, rest),
        Some(("R", _)) => bail!("--signal: R: (reservation ends) is not supported"),
        Some((flag, _)) => bail!("--signal: unknown flag '{flag}:' (B: sends to the batch script)"),
        None => (false, text),
    };
    let (sig, secs) = match rest.split_once('@') {
        Some((sig, secs)) => (
            sig,
            secs.parse::<u32>()
                .ok()
                .filter(|&s| s <= 65_535)
                .ok_or_else(|| {
                    anyhow!("--signal: '{secs}' is not a number of seconds (0-65535)")
                })?,
        ),
        None => (rest, 60),
    };
    let signal = crate::client::signal_number(sig).map_err(|e| anyhow!("--signal: {e}"))?;
    Ok(api::WarnSignal {
        signal,
        seconds: secs,
        batch_only,
    })
}

fn shell_words(text: &str) -> Result<Vec<String>> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut quote: Option<char> = None;
    let mut any = false;
    for c in text.chars() {
        match (quote, c) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), c) => cur.push(c),
            (None, '\'' | '"') => {
                quote = Some(c);
                any = true;
            }
            (None, '#') if !any && cur.is_empty() => break,
            (None, c) if c.is_whitespace() => {
                if any || !cur.is_empty() {
                    words.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            (None, c) => {
                cur.push(c);
                any = true;
            }
        }
    }
    if quote.is_some() {
        bail!("unclosed quote");
    }
    if any || !cur.is_empty() {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directives_fill_what_the_command_line_left_open() {
        let script = "#!/bin/bash\n#SBATCH -J demo\n#SBATCH --ntasks=4 --cpus-per-task=2\n#SBATCH --mem=2G -t 10:00\n#SBATCH --output='out %j.txt'\n#SBATCH --mail-type=END\necho hi\n#SBATCH --ntasks=99\n";
        let cli = JobOptions {
            ntasks: Some(8),
            ..Default::default()
        };
        let o = cli.with_directives(script, "job.sh").unwrap();
        assert_eq!(o.job_name.as_deref(), Some("demo"));
        assert_eq!(o.ntasks, Some(8), "the command line wins");
        assert_eq!(o.cpus_per_task, Some(2));
        assert_eq!(o.mem.as_deref(), Some("2G"));
        assert_eq!(o.output.as_deref(), Some("out %j.txt"));
        let s = o.submission("job.sh", script.into(), vec![]).unwrap();
        assert_eq!(
            (s.tasks, s.cpus_per_task, s.mem_per_node_mb, s.time_limit_s),
            (8, 2, 2048, 600)
        );
    }

    #[test]
    fn ntasks_per_node_makes_the_task_or_node_count_as_slurm_does() {
        let shape = |script: &str| {
            let o = JobOptions::default().with_directives(script, "t.sh")?;
            let s = o.submission("t", script.into(), vec![])?;
            Ok::<_, anyhow::Error>((
                s.tasks,
                s.nodes,
                s.env.get("SLURM_NTASKS_PER_NODE").cloned(),
            ))
        };
        let k8 = Some("8".to_string());
        assert_eq!(
            shape("#SBATCH -N 8 --ntasks-per-node=8\n").unwrap(),
            (64, 8, k8.clone())
        );
        assert_eq!(
            shape("#SBATCH --ntasks-per-node=8\n").unwrap(),
            (8, 1, k8.clone())
        );
        assert_eq!(
            shape("#SBATCH -n 20 --ntasks-per-node=8\n").unwrap(),
            (20, 3, k8)
        );
        assert_eq!(
            shape("#SBATCH -N 2 -n 3 --ntasks-per-node=2\n").unwrap(),
            (3, 2, Some("2".into()))
        );
        let e = shape("#SBATCH -N 2 -n 5 --ntasks-per-node=2\n").unwrap_err();
        assert!(format!("{e:#}").contains("at most 4"), "{e:#}");
        let e = shape("#SBATCH --ntasks-per-node=0\n").unwrap_err();
        assert!(format!("{e:#}").contains("at least 1"), "{e:#}");
        let e = shape("#SBATCH -N 4294967295 --ntasks-per-node=2\n").unwrap_err();
        assert!(format!("{e:#}").contains("too many"), "{e:#}");
        assert_eq!(shape("#SBATCH -n 2\n").unwrap(), (2, 0, None));
        let o = JobOptions::default()
            .with_directives("#SBATCH --gpus-per-node=8\n", "g.sh")
            .unwrap();
        let s = o.submission("g", String::new(), vec![]).unwrap();
        assert_eq!(
            s.env.get("SLURM_GPUS_PER_NODE").map(String::as_str),
            Some("8")
        );
    }

    #[test]
    fn gpu_layout_options_make_the_gpus_cpus_and_memory_as_slurm_does() {
        let sub = |script: &str| {
            let o = JobOptions::default().with_directives(script, "t.sh")?;
            o.submission("t", script.into(), vec![])
        };
        // Per task with --ntasks-per-node: per node.
        let s =
            sub("#SBATCH -N 2 --ntasks-per-node=4 --gpus-per-task=2 --cpus-per-gpu=3\n").unwrap();
        assert_eq!((s.gpus_per_node, s.gpus_per_job), (8, 0));
        assert_eq!(s.cpus_per_task, 6, "3 CPUs for each of a task's 2 GPUs");
        assert_eq!(s.env["SLURM_GPUS_PER_TASK"], "2");
        // Per task without it: for the job.
        let s = sub("#SBATCH -n 3 --gpus-per-task=1\n").unwrap();
        assert_eq!((s.gpus_per_node, s.gpus_per_job), (0, 3));
        // --mem-per-gpu is per node: times the node's GPUs.
        let s = sub("#SBATCH --gpus-per-node=4 --mem-per-gpu=10G\n").unwrap();
        assert_eq!(s.mem_per_node_mb, 40 * 1024);
        // --mem=0 is all of each node's memory.
        let s = sub("#SBATCH --mem=0 --exclusive\n").unwrap();
        assert!(s.mem_whole_node);
        assert_eq!(s.mem_per_node_mb, 0);
        assert!(!sub("#SBATCH --mem=4G\n").unwrap().mem_whole_node);
        let s = sub("#SBATCH -m cyclic:block\n").unwrap();
        assert_eq!(s.env["SLURM_DISTRIBUTION"], "cyclic:block");
        for (bad, why) in [
            ("--gpus-per-task=1 --gpus-per-node=2", "not both"),
            ("--cpus-per-gpu=2", "needs GPUs"),
            ("--gpus-per-node=1 --cpus-per-gpu=2 -c 4", "not both"),
            ("--gpus-per-node=1 --mem-per-gpu=1G --mem=2G", "only one"),
            ("--gpus-per-task=0", "at least 1"),
            ("-m plane=4", "not offered"),
        ] {
            let e = sub(&format!("#SBATCH {bad}\n")).unwrap_err();
            assert!(format!("{e:#}").contains(why), "{bad}: {e:#}");
        }
    }

    #[test]
    fn malformed_directives_name_the_file_and_line() {
        let e = JobOptions::default()
            .with_directives("#!/bin/sh\n#SBATCH --ntasks=\"4\n", "a.sh")
            .unwrap_err();
        assert!(format!("{e:#}").contains("a.sh:2"), "{e:#}");
        let e = JobOptions::default()
            .with_directives("#SBATCH --no-such-option\n", "b.sh")
            .unwrap_err();
        assert!(format!("{e:#}").contains("--no-such-option"), "{e:#}");
        let e = JobOptions::default()
            .with_directives("#SBATCH --ntasks=four\n", "c.sh")
            .unwrap_err();
        assert!(format!("{e:#}").contains("four"), "{e:#}");
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(
            std::env::var("GANTRY_FUZZ_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2_000)
        ))]

        /// Fuzzing the #SBATCH reader and the option conversion: any directive text is
        /// a submission or an error, never a panic.
        #[test]
        fn any_directive_is_read_or_refused(
            line in proptest::prop_oneof![
                proptest::prelude::any::<String>(),
                "(-[a-zA-Z]|--[a-z\\-]{1,16})(=| )?[0-9a-zA-Z:%,\\-\\[\\]'\" ]{0,24}",
            ],
        ) {
            let script = format!("#!/bin/bash\n#SBATCH {line}\necho\n");
            if let Ok(opts) = JobOptions::default().with_directives(&script, "fuzz.sh") {
                let _ = opts.submission("fuzz", script.clone(), Vec::new());
            }
        }
    }

    #[test]
    fn gres_gpu_is_gpus_per_node() {
        let o = JobOptions {
            gres: Some("gpu:4,nvme:1".into()),
            ..Default::default()
        };
        let s = o.submission("x", "echo".into(), vec![]).unwrap();
        assert_eq!(s.gpus_per_node, 4);
        assert_eq!(s.gres.len(), 1);
        assert_eq!((s.gres[0].name.as_str(), s.gres[0].count), ("nvme", 1));
    }
}
