//! `gantry admin`: the controllers themselves — which of them is active, and
//! snapshots of the active one's state.

use anyhow::Result;
use clap::{Args, Subcommand};
use gantry_api as api;
use gantry_api::client::{probe, Probe, Trust, WithToken};
use gantry_api::controller_client::ControllerClient;

use crate::client::{print_json, Conn};
use crate::format::{print_columns, printable, Column};

#[derive(Subcommand, Debug)]
pub enum AdminAction {
    /// Each controller of --controller/GANTRY_CONTROLLER (a comma-separated list): the
    /// active one (its state's backend, its lease's epoch), standbys (and whom they name
    /// as active), and those that do not answer. Exits 1 when none is active.
    Controllers(ControllersArgs),
    /// Takes a snapshot now (admins): finished jobs that ended at least the retention
    /// ago leave the controller's memory for the accounting table (sacct and sreport
    /// still show them), and the log behind the snapshot keeps only what concerns jobs
    /// in memory, so a restart or takeover reads live work, not history. The
    /// controller also takes one every `snapshot_interval_s`.
    Snapshot(SnapshotArgs),
}

#[derive(Args, Debug)]
pub struct SnapshotArgs {
    /// Forget finished jobs that ended at least this many seconds ago (default: the
    /// controller's `finished_retention_s`; 0 forgets every finished job).
    #[arg(long, value_name = "SECONDS")]
    pub retention: Option<u32>,
    /// One JSON object (upto, forgotten, deleted, kept, in_memory, took_ms).
    #[arg(long)]
    pub json: bool,
}

#[derive(Args, Debug)]
pub struct ControllersArgs {
    /// One JSON object (`controllers`: controller, role, backend, epoch, name,
    /// address, lease_s, active, note) instead of the table.
    #[arg(long)]
    pub json: bool,
}

pub async fn admin(conn: &Conn, a: AdminAction) -> Result<u8> {
    match a {
        AdminAction::Controllers(a) => controllers(conn, a).await,
        AdminAction::Snapshot(a) => snapshot(conn, a).await,
    }
}

async fn snapshot(conn: &Conn, a: SnapshotArgs) -> Result<u8> {
    let mut c = crate::client::client(conn).await?;
    let r = c
        .snapshot(api::SnapshotRequest {
            retention_s: a.retention,
        })
        .await
        .map_err(crate::client::refused)?
        .into_inner();
    if a.json {
        print_json(&serde_json::json!({
            "upto": r.upto, "forgotten": r.forgotten, "deleted": r.deleted,
            "kept": r.kept, "in_memory": r.in_memory, "took_ms": r.took_ms,
        }))?;
    } else {
        println!(
            "snapshot at log entry {}: {} finished jobs moved to accounting, {} log entries deleted, {} kept; {} jobs in memory ({} ms)",
            r.upto, r.forgotten, r.deleted, r.kept, r.in_memory, r.took_ms
        );
    }
    Ok(0)
}

async fn controllers(conn: &Conn, a: ControllersArgs) -> Result<u8> {
    let trust = Trust::ca_file(conn.ca_file.as_deref());
    let mut rows = Vec::new();
    for target in conn
        .controller
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
    {
        let row = match probe(target, &trust).await? {
            Probe::Active(channel) => {
                let mut c = ControllerClient::with_interceptor(
                    channel,
                    WithToken::new(conn.token.as_deref())?,
                );
                match c.leadership(api::LeadershipRequest {}).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        serde_json::json!({
                            "controller": target, "role": "active", "backend": r.backend,
                            "epoch": r.epoch, "name": r.name, "address": r.address,
                            "lease_s": r.lease_s,
                        })
                    }
                    Err(s) => serde_json::json!({
                        "controller": target, "role": "active", "note": s.message(),
                    }),
                }
            }
            Probe::Standby(active, message) => serde_json::json!({
                "controller": target, "role": "standby", "active": active, "note": message,
            }),
            Probe::Unreachable(why) => serde_json::json!({
                "controller": target, "role": "unreachable", "note": why,
            }),
        };
        rows.push(row);
    }
    let any_active = rows.iter().any(|r| r["role"] == "active");
    if a.json {
        print_json(&serde_json::json!({ "controllers": rows }))?;
    } else {
        let text = |r: &serde_json::Value, k: &str| match &r[k] {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => String::new(),
        };
        let names = ["CONTROLLER", "ROLE", "BACKEND", "EPOCH", "NAME", "NOTE"];
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let note = match (r["role"].as_str(), r["active"].as_str()) {
                    (Some("standby"), Some(active)) => format!("active: {active}"),
                    _ => text(r, "note"),
                };
                [
                    text(r, "controller"),
                    text(r, "role"),
                    text(r, "backend"),
                    text(r, "epoch"),
                    text(r, "name"),
                    note,
                ]
                .iter()
                .map(|v| printable(v).into_owned())
                .collect()
            })
            .collect();
        let columns: Vec<Column> = names
            .iter()
            .enumerate()
            .map(|(i, name)| Column {
                name: name.to_string(),
                width: table
                    .iter()
                    .map(|r| r[i].chars().count())
                    .chain([name.len()])
                    .max()
                    .unwrap_or(0),
                left: *name != "EPOCH",
            })
            .collect();
        print_columns(&columns, &table, true);
    }
    Ok(if any_active { 0 } else { 1 })
}
