//! `sshare` (the share tree: shares, usage, fairshare factors) and `sdiag` (scheduler
//! statistics), in Slurm's layouts.

use anyhow::Result;
use clap::Args;
use gantry_api as api;

use crate::client::{client, comma_list, print_json, refused, Conn, TableArgs};
use crate::format::Column;

#[derive(Args, Debug)]
pub struct SharesArgs {
    /// Every user's associations (default: accounts and your own).
    #[arg(short = 'a', long = "all")]
    pub all: bool,
    /// Only these users' associations (comma-separated).
    #[arg(short = 'u', long = "users")]
    pub users: Option<String>,
    /// Only these accounts and their users (comma-separated).
    #[arg(short = 'A', long = "accounts")]
    pub accounts: Option<String>,
    #[command(flatten)]
    pub table: TableArgs,
}

pub async fn shares(conn: &Conn, a: SharesArgs) -> Result<()> {
    let mut c = client(conn).await?;
    let rows = c
        .shares(api::SharesRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .rows;
    let me = c
        .who_am_i(api::WhoAmIRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .user;
    let users = comma_list(&a.users);
    let accounts = comma_list(&a.accounts);
    let rows: Vec<api::ShareRow> = rows
        .into_iter()
        .filter(|r| accounts.is_empty() || accounts.contains(&r.account))
        .filter(|r| {
            r.user.is_empty()
                || if users.is_empty() {
                    a.all || r.user == me
                } else {
                    users.contains(&r.user)
                }
        })
        .collect();
    if a.table.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "account": r.account,
                    "user": (!r.user.is_empty()).then_some(&r.user),
                    "depth": r.depth,
                    "shares": r.raw_shares,
                    "shares_normalized": r.norm_shares,
                    "usage": r.raw_usage,
                    "effective_usage": r.effective_usage,
                    "fairshare": r.fairshare,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "meta": crate::format::json_meta("sshare"),
            "errors": [],
            "warnings": [],
            "shares": v,
        }));
    }
    let fields = |r: &api::ShareRow| -> [String; 7] {
        let indent = " ".repeat(r.depth as usize);
        [
            format!("{indent}{}", crate::format::printable(&r.account)),
            crate::format::printable(&r.user).into_owned(),
            r.raw_shares.to_string(),
            format!("{:.6}", r.norm_shares),
            format!("{:.0}", r.raw_usage),
            format!("{:.6}", r.effective_usage),
            match (r.user.is_empty(), r.fairshare) {
                (false, Some(f)) => format!("{f:.6}"),
                _ => String::new(),
            },
        ]
    };
    const HEAD: [&str; 7] = [
        "Account",
        "User",
        "RawShares",
        "NormShares",
        "RawUsage",
        "EffectvUsage",
        "FairShare",
    ];
    let cells: Vec<Vec<String>> = rows.iter().map(|r| fields(r).to_vec()).collect();
    if a.table.print_delimited(&HEAD, &cells) {
        return Ok(());
    }
    let columns: Vec<Column> = HEAD
        .iter()
        .zip([20usize, 10, 10, 11, 11, 13, 10])
        .enumerate()
        .map(|(i, (h, w))| Column {
            left: i == 0,
            ..Column::right(*h, w)
        })
        .collect();
    crate::format::print_columns(&columns, &cells, !a.table.noheader);
    Ok(())
}

#[derive(Args, Debug)]
pub struct DiagArgs {
    #[arg(long)]
    pub json: bool,
}

pub async fn diag(conn: &Conn, a: DiagArgs) -> Result<()> {
    let d = client(conn)
        .await?
        .diagnostics(api::DiagnosticsRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    if a.json {
        return print_json(&serde_json::json!({
            "meta": crate::format::json_meta("sdiag"),
            "errors": [],
            "statistics": {
                "req_time": d.now,
                "req_time_start": d.since,
                "schedule_cycle_last": d.cycle_us_last,
                "schedule_cycle_max": d.cycle_us_max,
                "schedule_cycle_mean": d.cycle_us_mean,
                "schedule_cycle_total": d.cycles,
                "jobs_pending": d.jobs_waiting,
                "jobs_running": d.jobs_running,
                "jobs_total": d.jobs_total,
                "last_cycle_started": d.last_started,
                "last_cycle_reservations": d.last_reservations,
                "last_cycle_placement_batches": d.last_placement_batches,
                "policy_fallbacks": {
                    "priority": d.priority_fallbacks,
                    "fairshare": d.fairshare_fallbacks,
                    "placement": d.placement_fallbacks,
                    "preemption": d.preemption_fallbacks,
                },
                "rpcs_by_message_type": d.rpcs.iter().map(|r| serde_json::json!({
                    "message_type": r.method, "count": r.count,
                })).collect::<Vec<_>>(),
            },
        }));
    }
    let stars = "*".repeat(55);
    println!("{stars}");
    println!(
        "sdiag output at {} ({})",
        crate::format::timestamp(d.now),
        d.now
    );
    println!(
        "Data since      {} ({})",
        crate::format::timestamp(d.since),
        d.since
    );
    println!("{stars}");
    println!("Jobs pending:   {}", d.jobs_waiting);
    println!("Jobs running:   {}", d.jobs_running);
    println!("Jobs in memory: {}", d.jobs_total);
    println!();
    println!("Main schedule statistics (microseconds):");
    println!("\tLast cycle:   {}", d.cycle_us_last);
    println!("\tMax cycle:    {}", d.cycle_us_max);
    println!("\tTotal cycles: {}", d.cycles);
    println!("\tMean cycle:   {}", d.cycle_us_mean);
    println!();
    println!("Last cycle (backfill is part of every cycle):");
    println!("\tJobs started:       {}", d.last_started);
    println!("\tReservations made:  {}", d.last_reservations);
    println!("\tPlacement batches:  {}", d.last_placement_batches);
    println!();
    println!("Policy answers refused (the native default answered):");
    println!(
        "\tpriority: {}  fairshare: {}  placement: {}  preemption: {}",
        d.priority_fallbacks, d.fairshare_fallbacks, d.placement_fallbacks, d.preemption_fallbacks
    );
    println!();
    println!("Remote Procedure Call statistics by message type");
    let mut rpcs = d.rpcs.clone();
    rpcs.sort_by(|a, b| b.count.cmp(&a.count).then(a.method.cmp(&b.method)));
    for r in rpcs {
        println!("\t{:<24} count:{}", r.method, r.count);
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct StatArgs {
    /// The running job (JOB, or JOB.STEP / JOB.batch for one of its steps).
    #[arg(short = 'j', long = "jobs", required = true)]
    pub job: String,
    /// Fields (JobID,AveCPU,TotalCPU,AveRSS,MaxRSS,MaxRSSNode,NTasks,NNodes).
    #[arg(
        short = 'o',
        long = "format",
        default_value = "JobID,AveCPU,AveRSS,MaxRSS,MaxRSSNode,NTasks"
    )]
    pub format: String,
    /// Every step (the default here: all of the job's running steps are shown).
    #[arg(short = 'a', long = "allsteps")]
    pub all_steps: bool,
    #[command(flatten)]
    pub table: TableArgs,
}

/// `sstat`: CPU and memory of a running job's batch script and steps, as the nodes saw
/// them at their last heartbeat.
pub async fn stat(conn: &Conn, a: StatArgs) -> Result<()> {
    let (job, only) = match a.job.split_once('.') {
        Some((j, s)) => (j, Some(s.to_string())),
        None => (a.job.as_str(), None),
    };
    let job_id: u64 = job
        .parse()
        .map_err(|_| anyhow::anyhow!("'{}' is not a job id (JOB or JOB.STEP)", a.job))?;
    let steps = client(conn)
        .await?
        .job_stats(api::JobStatsRequest { job_id })
        .await
        .map_err(refused)?
        .into_inner()
        .steps;
    let name = |s: &api::StepStats| s.step_id.map_or("batch".to_string(), |i| i.to_string());
    let steps: Vec<&api::StepStats> = steps
        .iter()
        .filter(|s| only.as_ref().is_none_or(|o| *o == name(s)))
        .collect();
    if a.table.json {
        let v: Vec<serde_json::Value> = steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "step_id": format!("{job_id}.{}", name(s)),
                    "cpu_s": s.cpu_s,
                    "max_rss_mb": s.max_rss_mb,
                    "max_rss_node": s.max_rss_node,
                    "total_rss_mb": s.total_rss_mb,
                    "tasks": s.tasks,
                    "nodes": s.nodes,
                })
            })
            .collect();
        return print_json(&serde_json::json!({
            "meta": crate::format::json_meta("sstat"),
            "errors": [],
            "steps": v,
        }));
    }
    let fields: Vec<&str> = a
        .format
        .split(',')
        .map(str::trim)
        .filter(|f| !f.is_empty())
        .collect();
    let value = |f: &str, s: &api::StepStats| -> Result<String> {
        let tasks = u64::from(s.tasks.max(1));
        Ok(match f.to_ascii_lowercase().as_str() {
            "jobid" => format!("{job_id}.{}", name(s)),
            "avecpu" => crate::format::clock((s.cpu_s / tasks as f64).round() as i64),
            "totalcpu" => crate::format::clock(s.cpu_s.round() as i64),
            "averss" => format!("{}M", s.total_rss_mb / tasks),
            "maxrss" => format!("{}M", s.max_rss_mb),
            "maxrssnode" => s.max_rss_node.clone(),
            "ntasks" => s.tasks.to_string(),
            "nnodes" => s.nodes.to_string(),
            other => anyhow::bail!(
                "sstat: unknown field '{other}' (JobID, AveCPU, TotalCPU, AveRSS, MaxRSS, MaxRSSNode, NTasks, NNodes)"
            ),
        })
    };
    let rows: Vec<Vec<String>> = steps
        .iter()
        .map(|s| fields.iter().map(|f| value(f, s)).collect::<Result<_>>())
        .collect::<Result<_>>()?;
    if a.table.print_delimited(&fields, &rows) {
        return Ok(());
    }
    let columns: Vec<Column> = fields
        .iter()
        .map(|f| {
            if f.eq_ignore_ascii_case("jobid") {
                Column {
                    left: true,
                    ..Column::right(*f, 12)
                }
            } else {
                Column::right(*f, 10)
            }
        })
        .collect();
    crate::format::print_columns(&columns, &rows, !a.table.noheader);
    Ok(())
}
