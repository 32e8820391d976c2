//! `sreport`: what the cluster was used for over a period — `cluster utilization`,
//! `user topusage`, `account topusage` — in CPU or GPU time, in Slurm's layout.

use anyhow::{anyhow, bail, Result};
use clap::Args;
use gantry_api as api;

use crate::client::{client, print_json, refused, Conn, TableArgs};

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// Time unit: minutes (default), hours, seconds, or percent (of the cluster).
    #[arg(short = 't', long = "time", default_value = "minutes")]
    pub unit: String,
    /// What to count: cpu (default) or gres/gpu.
    #[arg(short = 'T', long = "tres", default_value = "cpu")]
    pub tres: String,
    #[command(flatten)]
    pub table: TableArgs,
    /// The report and its options: `cluster utilization`, `user topusage`,
    /// `account topusage`, then `start=TIME end=TIME topcount=N` (Slurm's time forms;
    /// default: yesterday).
    #[arg(required = true, num_args = 1..)]
    pub words: Vec<String>,
}

enum Report {
    Utilization,
    TopUsers,
    TopAccounts,
}

pub async fn report(conn: &Conn, a: ReportArgs) -> Result<()> {
    let mut words = a.words.iter().map(|w| w.as_str());
    let entity = words.next().unwrap_or_default().to_ascii_lowercase();
    let name = words.next().unwrap_or_default().to_ascii_lowercase();
    let report = match (entity.as_str(), name.as_str()) {
        ("cluster", "utilization") => Report::Utilization,
        ("user", "topusage") => Report::TopUsers,
        ("account", "topusage") => Report::TopAccounts,
        _ => bail!(
            "unknown report '{entity} {name}': Gantry's sreport gives cluster utilization, user topusage and account topusage"
        ),
    };
    let here = crate::when::now();
    let today = crate::when::parse("today", &here)?;
    let (mut start, mut end, mut top) = (today - 86_400, today, 10usize);
    for w in words {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| anyhow!("'{w}' is not KEY=VALUE (start=, end=, topcount=)"))?;
        match k.to_ascii_lowercase().as_str() {
            "start" => start = crate::when::parse(v, &here).map_err(|e| anyhow!("start: {e}"))?,
            "end" => end = crate::when::parse(v, &here).map_err(|e| anyhow!("end: {e}"))?,
            "topcount" => {
                top = v
                    .parse()
                    .map_err(|_| anyhow!("topcount: '{v}' is not a number"))?
            }
            other => bail!("unknown option '{other}' (start=, end=, topcount=)"),
        }
    }
    if end <= start {
        bail!("the period must end after it starts");
    }
    let gpu = match a.tres.as_str() {
        "cpu" => false,
        "gres/gpu" | "gpu" => true,
        other => bail!("--tres: '{other}' (use cpu or gres/gpu)"),
    };
    let u = client(conn)
        .await?
        .usage(api::UsageRequest { start, end })
        .await
        .map_err(refused)?
        .into_inner();
    let capacity = if gpu {
        u.capacity_gpu_seconds
    } else {
        u.capacity_core_seconds
    };
    let unit = a.unit.to_ascii_lowercase();
    let show = |secs: f64| -> Result<String> {
        Ok(match unit.as_str() {
            "minutes" | "m" => format!("{:.0}", secs / 60.0),
            "hours" | "h" => format!("{:.0}", secs / 3600.0),
            "seconds" | "s" => format!("{secs:.0}"),
            "percent" | "%" => format!(
                "{:.2}%",
                if capacity > 0.0 {
                    secs * 100.0 / capacity
                } else {
                    0.0
                }
            ),
            other => bail!("--time: '{other}' (minutes, hours, seconds or percent)"),
        })
    };
    let what = if gpu { "GPU" } else { "CPU" };
    let unit_name = match unit.as_str() {
        "hours" | "h" => "Hours",
        "seconds" | "s" => "Seconds",
        "percent" | "%" => "Percentage of Total",
        _ => "Minutes",
    };
    let (title, head, rows): (String, Vec<&str>, Vec<Vec<String>>) = match report {
        Report::Utilization => {
            let used = if gpu {
                u.allocated_gpu_seconds
            } else {
                u.allocated_core_seconds
            };
            (
                "Cluster Utilization".into(),
                vec![
                    "Cluster",
                    "Allocated",
                    "Down",
                    "PLND Down",
                    "Idle",
                    "Reserved",
                    "Reported",
                ],
                vec![vec![
                    u.cluster.clone(),
                    show(used)?,
                    show(0.0)?,
                    show(0.0)?,
                    show((capacity - used).max(0.0))?,
                    show(0.0)?,
                    show(capacity)?,
                ]],
            )
        }
        Report::TopUsers => {
            let mut by: Vec<&api::UsageRow> = u.rows.iter().collect();
            let key = |r: &api::UsageRow| if gpu { r.gpu_seconds } else { r.core_seconds };
            by.sort_by(|x, y| key(y).total_cmp(&key(x)));
            let rows = by
                .into_iter()
                .take(top)
                .map(|r| {
                    Ok(vec![
                        u.cluster.clone(),
                        crate::format::printable(&r.user).into_owned(),
                        crate::format::printable(&r.account).into_owned(),
                        show(key(r))?,
                        r.jobs.to_string(),
                    ])
                })
                .collect::<Result<_>>()?;
            (
                format!("Top {top} Users"),
                vec!["Cluster", "Login", "Account", "Used", "Jobs"],
                rows,
            )
        }
        Report::TopAccounts => {
            let mut sums: std::collections::BTreeMap<&str, (f64, u64)> = Default::default();
            for r in &u.rows {
                let e = sums.entry(r.account.as_str()).or_default();
                e.0 += if gpu { r.gpu_seconds } else { r.core_seconds };
                e.1 += r.jobs;
            }
            let mut by: Vec<(&str, (f64, u64))> = sums.into_iter().collect();
            by.sort_by(|x, y| y.1 .0.total_cmp(&x.1 .0));
            let rows = by
                .into_iter()
                .take(top)
                .map(|(acct, (secs, jobs))| {
                    Ok(vec![
                        u.cluster.clone(),
                        crate::format::printable(acct).into_owned(),
                        show(secs)?,
                        jobs.to_string(),
                    ])
                })
                .collect::<Result<_>>()?;
            (
                format!("Top {top} Accounts"),
                vec!["Cluster", "Account", "Used", "Jobs"],
                rows,
            )
        }
    };
    if a.table.json {
        let v: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::Value::Object(
                    head.iter()
                        .zip(r)
                        .map(|(h, v)| (h.to_ascii_lowercase().replace(' ', "_"), v.clone().into()))
                        .collect(),
                )
            })
            .collect();
        return print_json(&serde_json::json!({
            "meta": crate::format::json_meta("sreport"),
            "errors": [],
            "period": { "start": start, "end": end },
            "unit": unit_name,
            "tres": if gpu { "gres/gpu" } else { "cpu" },
            "rows": v,
        }));
    }
    if a.table.print_delimited(&head, &rows) {
        return Ok(());
    }
    let rule = "-".repeat(80);
    if !a.table.noheader {
        println!("{rule}");
        println!(
            "{title} {} - {} ({} secs)",
            crate::format::timestamp(start),
            crate::format::timestamp(end - 1),
            end - start
        );
        println!("Usage reported in {what} {unit_name}");
        println!("{rule}");
    }
    // Each column as wide as its widest value (at least 9), so nothing is cut.
    let columns: Vec<crate::format::Column> = head
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let width = rows
                .iter()
                .map(|r| r[i].chars().count())
                .chain([h.len(), 9])
                .max()
                .unwrap_or(9);
            crate::format::Column::right(*h, width)
        })
        .collect();
    crate::format::print_columns(&columns, &rows, !a.table.noheader);
    Ok(())
}
