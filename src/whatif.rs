//! `gantry policy whatif`: the workload the live cluster saw, replayed through the
//! simulator twice — with the policies active now and with a candidate in one slot —
//! and compared. The workload is exactly what `sacct --swf` exports for the same
//! window (finished jobs; their requests, users, accounts, partitions, run times and
//! limits), replayed on the cluster description the controller started from, with its
//! scheduler settings: so an offline `gantry sim --trace` of that export with each
//! policy gives the same figures. Everything runs here, none of it on the controller.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use clap::Args;
use gantry_api as api;
use gantry_kernel::policy::PolicySet;
use gantry_kernel::{Backfill, ClusterDescription, SchedulerConfig, Time};
use gantry_sim::{parse_swf, replay, ReplayOptions, Report, RunJob, SwfTrace};
use gantry_wasm_host::{policy_set, ComponentSource, HostLimits, PolicyComponents, PolicyHost};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;

use crate::client::{client, refused, Conn};
use crate::policies::{self, Kind};

/// The largest reply `ReplayBasis` may be: four components at gantryd's largest
/// (`max_component_bytes`, 32 MiB by default) and the cluster description.
const MAX_BASIS_BYTES: usize = 160 << 20;

#[derive(Args, Debug)]
#[command(
    after_help = "EXAMPLES:\n  gantry policy whatif priority xfactor.wasm\n  gantry policy whatif priority mine.wasm --config mine.toml --since 30d --json\n\nThe same history for offline study: sacct --swf -a -S now-7days > week.swf"
)]
pub struct WhatifArgs {
    /// The slot the candidate would fill: priority, fairshare, preemption or placement.
    kind: Kind,
    /// The candidate component (.wasm).
    candidate: PathBuf,
    /// The candidate's configuration text (a file; default: none).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// How far back: jobs queued or running since then — a span back from now (7d,
    /// 12h, 90m, 3600s) or a time as `sacct -S` takes it (now-2weeks, 2026-12-01).
    #[arg(long, default_value = "7d", value_name = "WHEN")]
    since: String,
    /// The candidate slot's limits: deadline_ms=N,memory_mb=N,instances=N (default:
    /// the active version's).
    #[arg(long, value_name = "LIMITS")]
    limits: Option<String>,
    /// A job whose start moves by at least this many seconds is listed as starting much
    /// earlier or later.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    moved: i64,
    /// How many of those to list each way (the largest moves).
    #[arg(long, default_value_t = 10, value_name = "N")]
    top: usize,
    /// The comparison as JSON.
    #[arg(long)]
    json: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
}

/// Unix seconds of `--since`: `7d`/`12h`/`90m`/`3600s` back from `now`, else a time.
fn since(text: &str, now: i64) -> Result<i64> {
    let t = text.trim();
    let span = t.char_indices().last().and_then(|(i, unit)| {
        let n: i64 = t[..i].parse().ok().filter(|&n| n >= 0)?;
        let secs = match unit {
            'd' => 86_400,
            'h' => 3_600,
            'm' => 60,
            's' => 1,
            'w' => 7 * 86_400,
            _ => return None,
        };
        n.checked_mul(secs)
    });
    match span {
        Some(back) => Ok(now.saturating_sub(back)),
        None => crate::when::parse(t, &crate::when::now())
            .map_err(|e| anyhow!("--since: {e} (or a span: 7d, 12h, 90m)")),
    }
}

/// What one side of the comparison ran in the candidate's slot.
#[derive(Serialize, Clone)]
struct Side {
    name: String,
    version: String,
    sha256: String,
    /// The controller's version number (active side), or the candidate's file.
    #[serde(skip_serializing_if = "Option::is_none")]
    version_id: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
}

#[derive(Serialize)]
struct Run {
    policy: Side,
    #[serde(flatten)]
    report: Report,
    /// Policy calls that failed in this replay (a fallback or the native default
    /// answered them), per slot: `KIND vN at T: reason`.
    failures: Vec<String>,
}

#[derive(Serialize)]
struct AccountRow {
    account: String,
    jobs: usize,
    active_mean_wait_s: f64,
    candidate_mean_wait_s: f64,
    /// Share of the core-seconds used while jobs were waiting: who had the cluster
    /// when it was contended.
    active_share: f64,
    candidate_share: f64,
}

#[derive(Serialize)]
struct Moved {
    job: u64,
    user: String,
    account: String,
    active_wait_s: Time,
    candidate_wait_s: Time,
    /// Candidate start minus active start.
    change_s: Time,
}

#[derive(Serialize)]
struct MovedList {
    count: usize,
    jobs: Vec<Moved>,
}

#[derive(Serialize)]
struct Comparison {
    kind: String,
    since: i64,
    /// Finished jobs in the window (the export's records).
    jobs_in_history: usize,
    backfill: String,
    fairshare_interval_s: i64,
    active: Run,
    candidate: Run,
    accounts: Vec<AccountRow>,
    earlier: MovedList,
    later: MovedList,
}

pub async fn run(conn: &Conn, a: WhatifArgs) -> Result<u8> {
    let candidate = std::fs::read(&a.candidate)
        .with_context(|| format!("cannot read {}", a.candidate.display()))?;
    let candidate_config = match &a.config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let candidate_limits = a
        .limits
        .as_deref()
        .map(|l| format!("{}={l}", a.kind.name()).parse::<policies::KindLimits>())
        .transpose()
        .map_err(|e| anyhow!("--limits: {e}"))?
        .map(|l| l.limits);
    let from = since(&a.since, crate::when::now().timestamp().as_second())?;

    let mut c = client(conn)
        .await?
        .max_decoding_message_size(MAX_BASIS_BYTES);
    let basis = c
        .replay_basis(api::ReplayBasisRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let mut pages = c
        .accounting(api::AccountingRequest {
            window_start: from,
            ..Default::default()
        })
        .await
        .map_err(refused)?
        .into_inner();
    let mut records = Vec::new();
    while let Some(page) = pages.message().await.map_err(refused)? {
        records.extend(page.records);
    }
    let nodes = c
        .nodes(api::NodesRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .nodes;
    let swf = crate::swf_export::render(&records, &nodes);
    let trace = parse_swf(swf.as_bytes()).context("the exported history")?;
    if trace.jobs.is_empty() {
        bail!(
            "no job finished in the window (since {}): nothing to replay",
            crate::when::format(from).unwrap_or_else(|| from.to_string())
        );
    }

    let cluster_of = || -> Result<gantry_kernel::Cluster> {
        ClusterDescription::from_toml(&basis.cluster)
            .and_then(|d| d.build())
            .context("the controller's cluster description")
    };
    let scheduler = SchedulerConfig {
        backfill: match basis.backfill.as_str() {
            "none" => Backfill::None,
            "conservative" => Backfill::Conservative {
                depth: basis.reservation_depth as usize,
            },
            _ => Backfill::Easy,
        },
        fairshare_interval: basis.fairshare_interval_s,
        ..SchedulerConfig::default()
    };
    let opts = ReplayOptions {
        scheduler,
        partition: None,
    };

    // The two policy sets: the active components, and the same with the candidate in
    // its slot.
    let active_of = |k: Kind| -> Result<&api::ActivePolicy> {
        basis
            .policies
            .iter()
            .find(|p| p.kind == k.name())
            .ok_or_else(|| anyhow!("the controller named no {} policy", k.name()))
    };
    let slot = active_of(a.kind)?;
    if basis.policies.iter().any(|p| p.version_id == 0) {
        bail!(
            "the controller runs a native default in {} (native_policies = true, or no version active): whatif compares Wasm policies; activate one in every slot first",
            basis
                .policies
                .iter()
                .filter(|p| p.version_id == 0)
                .map(|p| p.kind.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let limits = |p: &api::ActivePolicy| -> Result<HostLimits> {
        HostLimits::with_settings(Some(p.deadline_ms), Some(p.memory_mb), Some(p.instances))
            .map_err(|e| anyhow!("the {} slot's limits: {e}", p.kind))
    };
    // The active components, with `candidate` in KIND's slot when given.
    let components = |candidate: Option<&ComponentSource>| -> Result<PolicyComponents> {
        let pick = |k: Kind| -> Result<ComponentSource> {
            if let (true, Some(c)) = (k == a.kind, candidate) {
                return Ok(c.clone());
            }
            let p = active_of(k)?;
            Ok(ComponentSource {
                bytes: p.component.clone(),
                config: p.config.clone(),
                limits: Some(limits(p)?),
            })
        };
        Ok(PolicyComponents {
            priority: pick(Kind::Priority)?,
            fairshare: pick(Kind::Fairshare)?,
            preemption: pick(Kind::Preemption)?,
            placement: pick(Kind::Placement)?,
        })
    };
    let host = match policies::default_code_cache() {
        Some(cache) => PolicyHost::with_code_cache(HostLimits::default(), cache)?,
        None => PolicyHost::new(HostLimits::default())?,
    };
    let (active_set, active_slots) =
        policy_set(&host, &components(None)?, "whatif", 0).context("the active policies")?;
    let candidate_source = ComponentSource {
        bytes: candidate,
        config: candidate_config,
        limits: Some(candidate_limits.map_or_else(|| limits(slot), Ok)?),
    };
    let (candidate_set, candidate_slots) =
        policy_set(&host, &components(Some(&candidate_source))?, "whatif", 0).with_context(
            || {
                format!(
                    "the candidate {} policy {}",
                    a.kind.name(),
                    a.candidate.display()
                )
            },
        )?;
    let candidate_info = {
        let s = policies::summary(&candidate_slots);
        let v = &s[a.kind.name()]["versions"][0];
        Side {
            name: v["name"].as_str().unwrap_or_default().into(),
            version: v["version"].as_str().unwrap_or_default().into(),
            sha256: v["sha256"].as_str().unwrap_or_default().into(),
            version_id: None,
            file: Some(a.candidate.display().to_string()),
        }
    };
    let active_info = Side {
        name: slot.name.clone(),
        version: slot.version.clone(),
        sha256: slot.sha256.clone(),
        version_id: Some(slot.version_id),
        file: None,
    };

    // Both replays at once, each on a thread of its own.
    let bars = MultiProgress::new();
    if a.quiet || a.json {
        bars.set_draw_target(ProgressDrawTarget::hidden());
    }
    let bar = |label: &str| {
        let b = bars.add(ProgressBar::new(0));
        b.set_style(
            ProgressStyle::with_template(&format!(
                "{{spinner}} {label:<9} [{{bar:40}}] {{pos}}/{{len}} jobs, {{elapsed}}"
            ))
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        b
    };
    let (bar_a, bar_c) = (bar("active"), bar("candidate"));
    let run = |set: PolicySet, b: ProgressBar| -> Result<Report> {
        let report = replay(&trace, cluster_of()?, set, &opts, &mut |p| {
            b.set_length(p.total as u64);
            b.set_position(p.finished as u64);
        })?;
        b.finish_and_clear();
        Ok(report)
    };
    let (active_report, candidate_report) = std::thread::scope(|s| {
        let other = s.spawn(|| run(candidate_set, bar_c));
        let mine = run(active_set, bar_a);
        let other = other
            .join()
            .unwrap_or_else(|_| Err(anyhow!("the candidate's replay stopped")));
        (mine, other)
    });
    let (active_report, candidate_report) = (active_report?, candidate_report?);
    let active_failures = crate::sim::policy_failures(&policies::summary(&active_slots));
    let candidate_failures = crate::sim::policy_failures(&policies::summary(&candidate_slots));

    let names = JobNames::of(&trace);
    let comparison = Comparison {
        kind: a.kind.name().into(),
        since: from,
        jobs_in_history: trace.jobs.len(),
        backfill: active_report.backfill.clone(),
        fairshare_interval_s: active_report.fairshare_interval_s,
        accounts: accounts(&names, &active_report, &candidate_report),
        earlier: moved(
            &names,
            &active_report.jobs_run,
            &candidate_report.jobs_run,
            a.moved,
            a.top,
            true,
        ),
        later: moved(
            &names,
            &active_report.jobs_run,
            &candidate_report.jobs_run,
            a.moved,
            a.top,
            false,
        ),
        active: Run {
            policy: active_info,
            report: active_report,
            failures: active_failures,
        },
        candidate: Run {
            policy: candidate_info,
            report: candidate_report,
            failures: candidate_failures,
        },
    };
    if a.json {
        println!("{}", serde_json::to_string_pretty(&comparison)?);
    } else {
        print_comparison(&comparison, a.moved);
    }
    if !comparison.candidate.failures.is_empty() {
        eprintln!(
            "gantry: error: the candidate failed in the replay, so its figures are partly a fallback's: {}",
            comparison.candidate.failures.join("; ")
        );
        return Ok(3);
    }
    Ok(0)
}

/// Who each trace job belongs to, by the names the export's header gives.
struct JobNames {
    by_job: HashMap<u64, (String, String)>,
}

impl JobNames {
    fn of(trace: &SwfTrace) -> Self {
        let name = |map: &BTreeMap<i64, String>, n: Option<i64>, prefix: &str| {
            n.and_then(|n| map.get(&n).cloned())
                .unwrap_or_else(|| format!("{prefix}{}", n.unwrap_or(0)))
        };
        Self {
            by_job: trace
                .jobs
                .iter()
                .map(|j| {
                    (
                        j.id,
                        (
                            name(&trace.header.users, j.user, "u"),
                            name(&trace.header.groups, j.group, "g"),
                        ),
                    )
                })
                .collect(),
        }
    }

    fn account(&self, job: u64) -> &str {
        self.by_job.get(&job).map_or("", |(_, a)| a.as_str())
    }
}

/// The stretches of a replay during which jobs were waiting (after each cycle with a
/// non-empty queue, until the next cycle), in time order.
fn contended(report: &Report) -> Vec<(Time, Time)> {
    let mut spans: Vec<(Time, Time)> = Vec::new();
    for w in report.samples.windows(2) {
        if w[0].queued == 0 || w[1].time <= w[0].time {
            continue;
        }
        match spans.last_mut() {
            Some(last) if last.1 == w[0].time => last.1 = w[1].time,
            _ => spans.push((w[0].time, w[1].time)),
        }
    }
    spans
}

/// Seconds of `[start, end)` that fall in `spans`.
fn overlap(spans: &[(Time, Time)], start: Time, end: Time) -> Time {
    let first = spans.partition_point(|&(_, e)| e <= start);
    spans[first..]
        .iter()
        .take_while(|&&(s, _)| s < end)
        .map(|&(s, e)| (e.min(end) - s.max(start)).max(0))
        .sum()
}

fn accounts(names: &JobNames, active: &Report, candidate: &Report) -> Vec<AccountRow> {
    #[derive(Default)]
    struct Sums {
        jobs: usize,
        wait: [f64; 2],
        used: [f64; 2],
    }
    let mut by: BTreeMap<&str, Sums> = BTreeMap::new();
    let mut total = [0f64; 2];
    for (side, report) in [active, candidate].into_iter().enumerate() {
        let spans = contended(report);
        for j in &report.jobs_run {
            let s = by.entry(names.account(j.trace_id)).or_default();
            if side == 0 {
                s.jobs += 1;
            }
            s.wait[side] += (j.start - j.submit) as f64;
            let used = overlap(&spans, j.start, j.end) as f64 * j.cores as f64;
            s.used[side] += used;
            total[side] += used;
        }
    }
    let share = |x: f64, t: f64| if t > 0.0 { x / t } else { 0.0 };
    by.into_iter()
        .map(|(account, s)| AccountRow {
            account: account.to_string(),
            jobs: s.jobs,
            active_mean_wait_s: s.wait[0] / s.jobs.max(1) as f64,
            candidate_mean_wait_s: s.wait[1] / s.jobs.max(1) as f64,
            active_share: share(s.used[0], total[0]),
            candidate_share: share(s.used[1], total[1]),
        })
        .collect()
}

/// The jobs whose start moved by at least `threshold` seconds, earlier (`earlier`) or
/// later, largest move first.
fn moved(
    names: &JobNames,
    active: &[RunJob],
    candidate: &[RunJob],
    threshold: i64,
    top: usize,
    earlier: bool,
) -> MovedList {
    let before: HashMap<u64, &RunJob> = active.iter().map(|j| (j.trace_id, j)).collect();
    let mut list: Vec<Moved> = candidate
        .iter()
        .filter_map(|c| {
            let a = before.get(&c.trace_id)?;
            let change = c.start - a.start;
            let far = if earlier {
                change <= -threshold.max(1)
            } else {
                change >= threshold.max(1)
            };
            far.then(|| {
                let (user, account) = names.by_job.get(&c.trace_id).cloned().unwrap_or_default();
                Moved {
                    job: c.trace_id,
                    user,
                    account,
                    active_wait_s: a.start - a.submit,
                    candidate_wait_s: c.start - c.submit,
                    change_s: change,
                }
            })
        })
        .collect();
    list.sort_by_key(|m| (std::cmp::Reverse(m.change_s.abs()), m.job));
    let count = list.len();
    list.truncate(top);
    MovedList { count, jobs: list }
}

fn print_comparison(c: &Comparison, threshold: i64) {
    let (a, b) = (&c.active.report, &c.candidate.report);
    let label = |s: &Side| {
        let mut t = format!("{} {}", s.name, s.version);
        if let Some(v) = s.version_id {
            t.push_str(&format!(" (v{v})"));
        }
        t
    };
    println!(
        "What if {} used {} instead of {}: {} finished jobs since {}, backfill {}.",
        c.kind,
        label(&c.candidate.policy),
        label(&c.active.policy),
        c.jobs_in_history,
        crate::when::format(c.since).unwrap_or_else(|| c.since.to_string()),
        c.backfill
    );
    println!();
    let change = |x: f64, y: f64| {
        if x.abs() < f64::EPSILON {
            "-".to_string()
        } else {
            format!("{:+.1} %", 100.0 * (y - x) / x)
        }
    };
    let rows: Vec<[String; 4]> = vec![
        [
            "jobs replayed".into(),
            a.jobs.to_string(),
            b.jobs.to_string(),
            String::new(),
        ],
        [
            "mean wait".into(),
            format!("{:.0} s", a.mean_wait_s),
            format!("{:.0} s", b.mean_wait_s),
            change(a.mean_wait_s, b.mean_wait_s),
        ],
        [
            "p95 wait".into(),
            format!("{:.0} s", a.p95_wait_s),
            format!("{:.0} s", b.p95_wait_s),
            change(a.p95_wait_s, b.p95_wait_s),
        ],
        [
            "mean bounded slowdown".into(),
            format!("{:.2}", a.mean_bounded_slowdown),
            format!("{:.2}", b.mean_bounded_slowdown),
            change(a.mean_bounded_slowdown, b.mean_bounded_slowdown),
        ],
        [
            "utilization".into(),
            format!("{:.1} %", 100.0 * a.utilization),
            format!("{:.1} %", 100.0 * b.utilization),
            change(a.utilization, b.utilization),
        ],
        [
            "makespan".into(),
            format!("{} s", a.makespan_s),
            format!("{} s", b.makespan_s),
            change(a.makespan_s as f64, b.makespan_s as f64),
        ],
    ];
    print_table(&["", "active", "candidate", "change"], &rows);
    println!();
    let rows: Vec<[String; 4]> = c
        .accounts
        .iter()
        .map(|r| {
            [
                crate::format::printable(&r.account).into_owned(),
                r.jobs.to_string(),
                format!(
                    "{:.0} s -> {:.0} s",
                    r.active_mean_wait_s, r.candidate_mean_wait_s
                ),
                format!(
                    "{:.1} % -> {:.1} %",
                    100.0 * r.active_share,
                    100.0 * r.candidate_share
                ),
            ]
        })
        .collect();
    print_table(&["account", "jobs", "mean wait", "share of use"], &rows);
    for (what, list) in [("earlier", &c.earlier), ("later", &c.later)] {
        println!();
        println!(
            "{} jobs would start at least {threshold} s {what}{}",
            list.count,
            if list.jobs.is_empty() { "." } else { ":" }
        );
        for m in &list.jobs {
            println!(
                "  job {} ({}, {}): waited {} s, would wait {} s",
                m.job,
                crate::format::printable(&m.user),
                crate::format::printable(&m.account),
                m.active_wait_s,
                m.candidate_wait_s
            );
        }
    }
    for (who, run) in [("active", &c.active), ("candidate", &c.candidate)] {
        if !run.failures.is_empty() {
            println!();
            println!(
                "warning: the {who} policies failed in the replay (a fallback or the native default answered): {}",
                run.failures.join("; ")
            );
        }
    }
}

/// Columns aligned: the first left, the rest right.
fn print_table(head: &[&str; 4], rows: &[[String; 4]]) {
    let mut width = head.map(str::len);
    for r in rows {
        for (w, cell) in width.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 4]| {
        let mut out = format!("{:<w$}", cells[0], w = width[0]);
        for (cell, w) in cells.iter().zip(width).skip(1) {
            out.push_str(&format!("  {cell:>w$}"));
        }
        println!("{}", out.trim_end());
    };
    line(*head);
    for r in rows {
        line([&r[0], &r[1], &r[2], &r[3]]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_counts_only_contended_seconds() {
        let spans = [(10, 20), (30, 40)];
        assert_eq!(overlap(&spans, 0, 100), 20);
        assert_eq!(overlap(&spans, 15, 35), 10);
        assert_eq!(overlap(&spans, 20, 30), 0);
        assert_eq!(overlap(&spans, 39, 50), 1);
        assert_eq!(overlap(&[], 0, 10), 0);
    }

    #[test]
    fn since_takes_spans_and_times() {
        assert_eq!(since("7d", 1_000_000).unwrap(), 1_000_000 - 7 * 86_400);
        assert_eq!(since("90m", 10_000).unwrap(), 10_000 - 5_400);
        assert_eq!(since("@12345", 0).unwrap(), 12_345);
        assert!(since("7x", 0).is_err());
        assert!(since("-3d", 0).is_err());
    }
}
