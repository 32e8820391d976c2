//! `gantry sim`: file handling, progress and output around `gantry_sim::replay`.

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{Backfill, ClusterDescription, SchedulerConfig};
use gantry_sim::{cluster_from_header, read_swf, replay, ReplayOptions, Report};
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
    after_help = "EXAMPLES:\n  gantry sim --trace testdata/traces/lublin_256.swf\n  gantry sim --trace kth.swf.gz --backfill conservative --json out.json --plot out.svg\n  gantry sim --trace kth.swf.gz --cluster examples/cluster.toml --partition cpu"
)]
pub struct SimArgs {
    /// Workload in the Standard Workload Format, plain or gzip-compressed.
    #[arg(long, value_name = "FILE.swf[.gz]")]
    trace: PathBuf,
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
}

pub fn run(args: SimArgs) -> Result<()> {
    if args.reservation_depth == 0 {
        bail!("--reservation-depth must be at least 1 (use --backfill none for no reservations)");
    }
    let file = File::open(&args.trace)
        .with_context(|| format!("cannot open trace {}", args.trace.display()))?;
    let mut trace = read_swf(file).with_context(|| format!("trace {}", args.trace.display()))?;
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
    let backfill = match args.backfill {
        BackfillArg::None => Backfill::None,
        BackfillArg::Easy => Backfill::Easy,
        BackfillArg::Conservative => Backfill::Conservative {
            depth: args.reservation_depth,
        },
    };
    let opts = ReplayOptions {
        scheduler: SchedulerConfig {
            backfill,
            ..SchedulerConfig::default()
        },
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
    let report = replay(&trace, cluster, PolicySet::default(), &opts, &mut |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.finished as u64);
    })?;
    bar.finish_and_clear();
    let elapsed = started.elapsed();

    let name = args
        .trace
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
    let json = serde_json::to_string_pretty(&report)?;
    match args.json.as_deref() {
        Some(p) if p.as_os_str() == "-" => println!("{json}"),
        other => {
            if let Some(path) = other {
                let mut f = File::create(path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                writeln!(f, "{json}")?;
            }
            print_table(&name, &report, elapsed.as_secs_f64());
        }
    }
    if report.unfinished > 0 {
        bail!("{} jobs never finished: the schedule is stuck (this is a bug; please report it with the trace)", report.unfinished);
    }
    Ok(())
}

fn print_table(name: &str, r: &Report, secs: f64) {
    let rows: Vec<(&str, String)> = vec![
        ("trace", name.to_string()),
        ("backfill", r.backfill.clone()),
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
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    for (k, v) in rows {
        println!("{k:<width$}  {v}");
    }
}
