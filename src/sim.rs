//! `gantry sim`: file handling, progress and output around `gantry_sim::replay`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{Backfill, ClusterDescription, SchedulerConfig, DEFAULT_FAIRSHARE_INTERVAL};
use gantry_sim::{
    cluster_from_header, read_swf, replay_with, ReplayOptions, Report, SyntheticSpec,
};
use serde::Serialize;

use crate::policies::{self, KindPath};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

#[derive(Clone, Copy, ValueEnum)]
enum BackfillArg {
    /// Strict priority order: nothing starts behind a blocked job.
    None,
    /// One reservation for the top blocked job; others start if they do not delay it.
    Easy,
    /// Reservations for the first --reservation-depth blocked jobs.
    Conservative,
}

#[derive(Args)]
#[command(
    after_help = "EXAMPLES:\n  gantry sim --trace testdata/traces/lublin_256.swf\n  gantry sim --synthetic --nodes 10000 --jobs 100000 --cycles 5\n  gantry sim --trace kth.swf.gz --backfill conservative --json out.json --plot out.svg\n  gantry sim --trace kth.swf.gz --cluster examples/cluster.toml --partition cpu"
)]
pub struct SimArgs {
    /// Workload in the Standard Workload Format, plain or gzip-compressed. Header lines
    /// `; User: N name`, `; Group: N account`, `; Partition: N name` and `; Job: N
    /// nodes=.. tasks=.. cpus_per_task=.. gpus_per_node=.. mem_per_node_mb=..` (as
    /// `sacct --swf` writes them) replay jobs under those names and with those requests.
    #[arg(
        long,
        value_name = "FILE.swf[.gz]",
        required_unless_present = "synthetic"
    )]
    trace: Option<PathBuf>,
    /// Scale mode: instead of replaying a trace, build a seeded synthetic cluster (half
    /// busy) with a long queue and time scheduling cycles on it.
    #[arg(long, conflicts_with_all = ["trace", "cluster", "plot", "swap_at", "skip", "take", "partition"])]
    synthetic: bool,
    #[command(flatten)]
    scale: ScaleArgs,
    /// Cluster description (TOML). Without it, a homogeneous cluster sized by the trace
    /// header's MaxProcs (or MaxNodes) is used.
    #[arg(long, value_name = "FILE.toml")]
    cluster: Option<PathBuf>,
    /// Backfill strategy.
    #[arg(long, value_enum, default_value = "easy")]
    backfill: BackfillArg,
    /// Blocked jobs that get a reservation under conservative backfill.
    #[arg(long, default_value_t = 16, value_name = "N")]
    reservation_depth: usize,
    /// Seconds between two computations of the fairshare factors (Slurm's
    /// PriorityCalcPeriod); 0 computes them every cycle. They are also computed at once
    /// when a new account or user appears, and after a policy swap.
    #[arg(long, default_value_t = DEFAULT_FAIRSHARE_INTERVAL as u32, value_name = "SECONDS")]
    fairshare_interval: u32,
    /// Cores per node of the homogeneous cluster built from the trace header.
    #[arg(long, default_value_t = 1, value_name = "N")]
    cores_per_node: u32,
    /// Partition to submit every job to (default: the cluster's default partition).
    #[arg(long)]
    partition: Option<String>,
    /// Write the report as JSON to this file ('-' for standard output, replacing the table).
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Draw queue length and utilization over time into this SVG file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Run KIND with this component instead of the built-in: KIND=FILE.wasm, KIND one of
    /// priority, fairshare, preemption, placement. Repeatable.
    #[arg(long = "policy", value_name = "KIND=FILE.wasm")]
    policy: Vec<KindPath>,
    /// Configuration text for KIND's policy (TOML for the built-ins): KIND=FILE. Repeatable.
    #[arg(long = "policy-config", value_name = "KIND=FILE")]
    policy_config: Vec<KindPath>,
    /// KIND's slot's own limits, as gantryd's `[policies.KIND]` takes them:
    /// `KIND=deadline_ms=N,memory_mb=N,instances=N` (any of the three; the rest keep
    /// the defaults: 500 ms, 256 MiB, 8). Repeatable.
    #[arg(long = "policy-limits", value_name = "KIND=LIMITS")]
    policy_limits: Vec<policies::KindLimits>,
    /// Start with the built-ins and swap the --policy components in at this time (seconds
    /// on the trace's clock), between two cycles.
    #[arg(long, value_name = "T", requires = "policy")]
    swap_at: Option<i64>,
    /// Directory of the built-in components (default: $GANTRY_POLICY_DIR, else policies/
    /// beside the binary's directory).
    #[arg(long, value_name = "DIR")]
    policy_dir: Option<PathBuf>,
    /// Keep compiled policy code in this directory between runs, so a component seen
    /// before loads without compiling (default: $XDG_CACHE_HOME/gantry/policy-code, else
    /// ~/.cache/gantry/policy-code). Must be writable only by you.
    #[arg(long, value_name = "DIR", env = "GANTRY_CODE_CACHE")]
    code_cache: Option<PathBuf>,
    /// Compile every policy component afresh and keep nothing on disk.
    #[arg(long, conflicts_with = "code_cache")]
    no_code_cache: bool,
    /// Run the built-in policies' native builds instead of their Wasm components.
    #[arg(long, conflicts_with_all = ["policy", "swap_at", "policy_config"])]
    native_policies: bool,
    /// Run the kernel's native safe defaults instead of the built-ins: FIFO priority,
    /// classic fairshare, no preemption, first-fit placement (first come, first served,
    /// as in the published reference schedules).
    #[arg(long, conflicts_with_all = ["policy", "swap_at", "policy_config", "native_policies"])]
    safe_defaults: bool,
    /// Skip this many jobs (in trace order) before replaying: the cluster starts empty
    /// at the first job replayed.
    #[arg(long, default_value_t = 0, value_name = "N")]
    skip: usize,
    /// Replay at most this many jobs (after --skip).
    #[arg(long, value_name = "N")]
    take: Option<usize>,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Exit with status 3 (after printing the report) when any policy call failed, so
    /// a figure computed partly by a fallback or the native default never passes for
    /// the policy's own.
    #[arg(long)]
    strict: bool,
}

/// The synthetic scenario's knobs (`--synthetic`).
#[derive(Args)]
#[command(next_help_heading = "Synthetic scale mode (--synthetic)")]
struct ScaleArgs {
    /// Nodes, all of the same shape.
    #[arg(long, default_value_t = 1000, value_name = "N")]
    nodes: u32,
    /// Pending jobs in the queue when the first timed cycle starts.
    #[arg(long, default_value_t = 10_000, value_name = "M")]
    jobs: u32,
    /// Sockets per node (one NUMA domain each).
    #[arg(long, default_value_t = 2, value_name = "N")]
    sockets: u32,
    /// Cores per node.
    #[arg(long, default_value_t = 128, value_name = "N")]
    cores: u32,
    /// NVLink-connected GPUs per node (0 for CPU-only nodes).
    #[arg(long, default_value_t = 8, value_name = "N")]
    gpus: u32,
    /// Memory per node in GiB.
    #[arg(long, default_value_t = 1024, value_name = "GIB")]
    memory_gb: u64,
    /// Fraction of the cores busy with running jobs before the first timed cycle.
    #[arg(long, default_value_t = 0.5, value_name = "F")]
    busy: f64,
    /// Seed of the generator: the same seed gives the same cluster, running jobs and queue.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Timed cycles to run, one second apart (nothing ends in between).
    #[arg(long, default_value_t = 5, value_name = "K")]
    cycles: u32,
}

pub fn run(args: SimArgs) -> Result<()> {
    if args.reservation_depth == 0 {
        bail!("--reservation-depth must be at least 1 (use --backfill none for no reservations)");
    }
    if args.synthetic {
        return run_synthetic(args);
    }
    let Some(trace_path) = args.trace.clone() else {
        bail!("give a trace (--trace FILE.swf) or --synthetic");
    };
    let file = File::open(&trace_path)
        .with_context(|| format!("cannot open trace {}", trace_path.display()))?;
    let mut trace = read_swf(file).with_context(|| format!("trace {}", trace_path.display()))?;
    if args.skip >= trace.jobs.len() {
        bail!(
            "--skip {} leaves nothing: the trace holds {} jobs",
            args.skip,
            trace.jobs.len()
        );
    }
    trace.jobs.drain(..args.skip);
    if let Some(n) = args.take {
        if n == 0 {
            bail!("--take must be at least 1");
        }
        trace.jobs.truncate(n);
    }
    let cluster = match &args.cluster {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read cluster file {}", path.display()))?;
            ClusterDescription::from_toml(&text)
                .and_then(|d| d.build())
                .with_context(|| format!("cluster file {}", path.display()))?
        }
        None => cluster_from_header(&trace, args.cores_per_node)?,
    };
    let opts = ReplayOptions {
        scheduler: scheduler_config(&args),
        partition: args.partition.clone(),
    };

    let bar = ProgressBar::new(0);
    if args.quiet {
        bar.set_draw_target(ProgressDrawTarget::hidden());
    }
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} replaying [{bar:40}] {pos}/{len} jobs, {elapsed} elapsed, eta {eta}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let (set, loaded) = policy_set(&args)?;
    let mut swap_error = None;
    let mut swapped = args.swap_at.is_none();
    let report = replay_with(
        &trace,
        cluster,
        set,
        &opts,
        &mut |p| {
            bar.set_length(p.total as u64);
            bar.set_position(p.finished as u64);
        },
        &mut |now| {
            if let (false, Some(at), Some(l)) = (swapped, args.swap_at, loaded.as_ref()) {
                if now >= at {
                    swapped = true;
                    if let Err(e) = policies::swap(l, now) {
                        swap_error = Some(e);
                    }
                }
            }
        },
    )?;
    if let Some(e) = swap_error {
        return Err(e);
    }
    if !swapped {
        bail!(
            "--swap-at {} is after the last event of the replay; nothing was swapped",
            args.swap_at.unwrap_or_default()
        );
    }
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let name = trace_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some(path) = &args.plot {
        let svg = gantry_sim::plot::render_svg(
            &report.samples,
            report.cluster_cores,
            &format!("{name} — backfill {}", report.backfill),
        );
        std::fs::write(path, svg)
            .with_context(|| format!("cannot write plot {}", path.display()))?;
    }
    let policy_summary = summarize(&args, loaded.as_ref());
    let mut value = serde_json::to_value(&report)?;
    if let Some(obj) = value.as_object_mut() {
        obj.insert("policies".into(), policy_summary.clone());
    }
    let json = serde_json::to_string_pretty(&value)?;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        other => {
            if let Some(path) = other {
                let mut f = File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                writeln!(f, "{json}")?;
            }
            print_table(&name, &report, &policy_summary, elapsed.as_secs_f64());
        }
    }
    if report.unfinished > 0 {
        bail!("{} jobs never finished: the schedule is stuck (this is a bug; please report it with the trace)", report.unfinished);
    }
    if args.strict {
        let failed = policy_failures(&policy_summary);
        if !failed.is_empty() {
            return Err(StrictFailure(failed.join("; ")).into());
        }
    }
    Ok(())
}

/// `--strict` found failed policy calls: the report stands, its figures are not the
/// policy's own.
#[derive(Debug)]
pub struct StrictFailure(String);

impl std::fmt::Display for StrictFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "--strict: a policy failed, so these figures are partly a fallback's or the native default's: {}",
            self.0
        )
    }
}

impl std::error::Error for StrictFailure {}

/// Each slot's failures, as `KIND vN at T: reason` (the first per slot, and how many).
pub(crate) fn policy_failures(summary: &serde_json::Value) -> Vec<String> {
    let Some(slots) = summary.as_object() else {
        return Vec::new();
    };
    slots
        .iter()
        .filter_map(|(kind, slot)| {
            let failures = slot["failures"].as_array()?;
            let first = failures.first()?;
            Some(format!(
                "{kind} v{} at {}: {} ({} failure(s), {} native answers)",
                first["version"],
                first["at"],
                first["reason"].as_str().unwrap_or_default(),
                failures.len(),
                slot["native_answers"]
            ))
        })
        .collect()
}

fn scheduler_config(args: &SimArgs) -> SchedulerConfig {
    let backfill = match args.backfill {
        BackfillArg::None => Backfill::None,
        BackfillArg::Easy => Backfill::Easy,
        BackfillArg::Conservative => Backfill::Conservative {
            depth: args.reservation_depth,
        },
    };
    SchedulerConfig {
        backfill,
        fairshare_interval: args.fairshare_interval.into(),
        ..SchedulerConfig::default()
    }
}

/// The policies the flags ask for; the loaded slots when they are Wasm components.
fn policy_set(args: &SimArgs) -> Result<(PolicySet, Option<policies::Loaded>)> {
    policies::check_unique(&args.policy, "--policy")?;
    policies::check_unique(&args.policy_config, "--policy-config")?;
    Ok(if args.safe_defaults {
        (PolicySet::default(), None)
    } else if args.native_policies {
        let dir = policies::builtin_dir(args.policy_dir.as_deref()).ok();
        (policies::native(dir.as_deref(), &args.policy_config)?, None)
    } else {
        let dir = policies::builtin_dir(args.policy_dir.as_deref())?;
        let code_cache = if args.no_code_cache {
            None
        } else {
            args.code_cache
                .clone()
                .or_else(policies::default_code_cache)
        };
        let mut loaded = policies::wasm(
            &dir,
            code_cache,
            &args.policy,
            &args.policy_config,
            &args.policy_limits,
            args.swap_at.is_some(),
        )?;
        let set = std::mem::take(&mut loaded.set);
        (set, Some(loaded))
    })
}

fn summarize(args: &SimArgs, loaded: Option<&policies::Loaded>) -> serde_json::Value {
    match loaded {
        Some(l) => policies::summary(&l.slots),
        None if args.safe_defaults => serde_json::json!(
            "native safe defaults (FIFO, classic fairshare, no preemption, first fit)"
        ),
        None => serde_json::json!("native built-ins"),
    }
}

/// Resident memory of this process in bytes, where the system tells it.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[derive(Serialize)]
struct TimedCycle {
    at: i64,
    ms: f64,
    pending_before: usize,
    started: usize,
    reservations: usize,
    placement_batches: u32,
}

#[derive(Serialize)]
struct ScaleReport {
    nodes: u32,
    sockets: u32,
    cores_per_node: u32,
    gpus_per_node: u32,
    seed: u64,
    backfill: String,
    fairshare_interval_s: i64,
    policies: serde_json::Value,
    running_before: usize,
    busy_cores_before: u64,
    cluster_cores: u64,
    pending: u32,
    setup_s: f64,
    /// Growth of resident memory while the queue was submitted, per pending job.
    kernel_bytes_per_pending_job: Option<f64>,
    cycles: Vec<TimedCycle>,
    first_cycle_ms: f64,
    /// Median of the cycles after the first (the first when only one ran).
    median_later_cycle_ms: f64,
}

fn run_synthetic(args: SimArgs) -> Result<()> {
    let a = &args.scale;
    if a.cycles == 0 {
        bail!("--cycles must be at least 1");
    }
    let spec = SyntheticSpec {
        nodes: a.nodes,
        sockets: a.sockets,
        cores: a.cores,
        gpus: a.gpus,
        memory_gb: a.memory_gb,
        pending: a.jobs,
        busy: a.busy,
        seed: a.seed,
    };
    spec.validate()?;
    let (set, loaded) = policy_set(&args)?;
    let say = |m: &str| {
        if !args.quiet {
            eprintln!("{m}");
        }
    };
    let setup = Instant::now();
    let mut state = spec.start_running(set, scheduler_config(&args), &mut |m: &str| say(m))?;
    say(&format!(
        "{} running jobs on {} cores; queueing {} pending jobs",
        state.running, state.busy_cores, spec.pending
    ));
    let before = resident_bytes();
    spec.queue_pending(&mut state)?;
    let per_job = match (before, resident_bytes()) {
        (Some(b), Some(a)) => Some(a.saturating_sub(b) as f64 / spec.pending as f64),
        _ => None,
    };
    let setup_s = setup.elapsed().as_secs_f64();
    let mut cycles = Vec::new();
    for k in 0..args.scale.cycles {
        let at = state.now + k as i64;
        let pending_before = state.scheduler.waiting().len();
        let t = Instant::now();
        let out = state.scheduler.cycle(at);
        let ms = t.elapsed().as_secs_f64() * 1e3;
        say(&format!(
            "cycle {}: {ms:.1} ms, {} started, {} pending",
            k + 1,
            out.started.len(),
            state.scheduler.waiting().len()
        ));
        cycles.push(TimedCycle {
            at,
            ms,
            pending_before,
            started: out.started.len(),
            reservations: out.reservations.len(),
            placement_batches: out.placement_batches,
        });
    }
    let first_cycle_ms = cycles[0].ms;
    let mut later: Vec<f64> = cycles.iter().skip(1).map(|c| c.ms).collect();
    later.sort_by(f64::total_cmp);
    let median_later_cycle_ms = later
        .get(later.len() / 2)
        .copied()
        .unwrap_or(first_cycle_ms);
    let report = ScaleReport {
        nodes: spec.nodes,
        sockets: spec.sockets,
        cores_per_node: spec.cores,
        gpus_per_node: spec.gpus,
        seed: spec.seed,
        backfill: format!("{:?}", state.scheduler.config().backfill).to_lowercase(),
        fairshare_interval_s: state.scheduler.config().fairshare_interval,
        policies: summarize(&args, loaded.as_ref()),
        running_before: state.running,
        busy_cores_before: state.busy_cores,
        cluster_cores: state.scheduler.cluster().total_cores(),
        pending: spec.pending,
        setup_s,
        kernel_bytes_per_pending_job: per_job,
        cycles,
        first_cycle_ms,
        median_later_cycle_ms,
    };
    let json = serde_json::to_string_pretty(&report)?;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        other => {
            if let Some(path) = other {
                std::fs::write(path, format!("{json}\n"))
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            let mut rows: Vec<(String, String)> = vec![
                (
                    "cluster".into(),
                    format!(
                        "{} nodes × {} sockets, {} cores, {} GPUs ({} cores)",
                        report.nodes,
                        report.sockets,
                        report.cores_per_node,
                        report.gpus_per_node,
                        report.cluster_cores
                    ),
                ),
                (
                    "before the first cycle".into(),
                    format!(
                        "{} running on {} cores, {} pending (seed {})",
                        report.running_before,
                        report.busy_cores_before,
                        report.pending,
                        report.seed
                    ),
                ),
                ("backfill".into(), report.backfill.clone()),
                (
                    "fairshare computed".into(),
                    every(report.fairshare_interval_s),
                ),
            ];
            rows.extend(describe_policies(&report.policies));
            rows.push(("setup".into(), format!("{:.2} s", report.setup_s)));
            if let Some(b) = report.kernel_bytes_per_pending_job {
                rows.push((
                    "kernel memory per pending job".into(),
                    format!("{b:.0} bytes"),
                ));
            }
            for (i, c) in report.cycles.iter().enumerate() {
                rows.push((
                    format!("cycle {}", i + 1),
                    format!(
                        "{:.1} ms: {} pending, {} started, {} placement batches",
                        c.ms, c.pending_before, c.started, c.placement_batches
                    ),
                ));
            }
            rows.push((
                "first cycle".into(),
                format!("{:.1} ms", report.first_cycle_ms),
            ));
            rows.push((
                "median later cycle".into(),
                format!("{:.1} ms", report.median_later_cycle_ms),
            ));
            print_rows(rows);
        }
    }
    Ok(())
}

/// `multifactor v1 → xfactor v2 (swapped at 1234), 0 failures` for each slot.
fn describe_policies(p: &serde_json::Value) -> Vec<(String, String)> {
    let Some(obj) = p.as_object() else {
        return vec![(
            "policies".into(),
            p.as_str().unwrap_or_default().to_string(),
        )];
    };
    obj.iter()
        .map(|(kind, slot)| {
            let name = |id: &serde_json::Value| {
                slot["versions"]
                    .as_array()
                    .and_then(|vs| vs.iter().find(|v| &v["id"] == id))
                    .map(|v| {
                        format!(
                            "{} {}",
                            v["name"].as_str().unwrap_or("?"),
                            v["version"].as_str().unwrap_or("")
                        )
                    })
                    .unwrap_or_default()
            };
            let swaps = slot["swaps"].as_array().cloned().unwrap_or_default();
            let mut text = swaps
                .iter()
                .map(|s| {
                    if s["action"] == "activate" && s["at"] == 0 {
                        name(&s["to"])
                    } else {
                        format!(
                            "→ {} ({} at {})",
                            name(&s["to"]),
                            s["action"].as_str().unwrap_or(""),
                            s["at"]
                        )
                    }
                })
                .collect::<Vec<_>>()
                .join(" ");
            let failures = slot["failures"].as_array().map_or(0, |f| f.len());
            let native = slot["native_answers"].as_u64().unwrap_or(0);
            if failures > 0 || native > 0 {
                text.push_str(&format!("; {failures} failures, {native} native answers"));
            }
            (format!("{kind} policy"), format!("{text} (wasm)"))
        })
        .collect()
}

/// "every cycle", or "every N s".
fn every(interval_s: i64) -> String {
    if interval_s == 0 {
        "every cycle".into()
    } else {
        format!("every {interval_s} s")
    }
}

fn print_table(name: &str, r: &Report, policies: &serde_json::Value, secs: f64) {
    let mut rows: Vec<(String, String)> = vec![
        ("trace".into(), name.to_string()),
        ("backfill".into(), r.backfill.clone()),
        ("fairshare computed".into(), every(r.fairshare_interval_s)),
    ];
    rows.extend(describe_policies(policies));
    let rest: Vec<(&str, String)> = vec![
        ("cluster cores", r.cluster_cores.to_string()),
        (
            "jobs replayed",
            format!(
                "{} of {} ({} skipped, {} rejected)",
                r.jobs, r.jobs_in_trace, r.skipped, r.rejected
            ),
        ),
        ("killed at time limit", r.timeouts.to_string()),
        ("estimate = run time", r.estimated_from_runtime.to_string()),
        ("utilization", format!("{:.1} %", 100.0 * r.utilization)),
        ("mean wait", format!("{:.0} s", r.mean_wait_s)),
        ("median wait", format!("{:.0} s", r.median_wait_s)),
        ("p95 wait", format!("{:.0} s", r.p95_wait_s)),
        (
            "mean bounded slowdown",
            format!("{:.2}", r.mean_bounded_slowdown),
        ),
        (
            "makespan",
            format!(
                "{} s ({:.1} days)",
                r.makespan_s,
                r.makespan_s as f64 / 86_400.0
            ),
        ),
        ("scheduling cycles", r.cycles.to_string()),
        ("replay time", format!("{secs:.2} s")),
    ];
    rows.extend(rest.into_iter().map(|(k, v)| (k.to_string(), v)));
    print_rows(rows);
}

/// A two-column table: names aligned, then values.
fn print_rows(rows: Vec<(String, String)>) {
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}
