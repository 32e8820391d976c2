//! Advance reservations at the command line: `scontrol create reservation`, `scontrol
//! update ReservationName=`, `scontrol delete ReservationName=`, `scontrol show
//! reservation` and `sinfo -T`, in Slurm's syntax and layouts.

use anyhow::{anyhow, bail, Result};
use gantry_api as api;
use gantry_kernel::units::{compress_hostlist, parse_duration};

use crate::client::{client, print_json, refused, Conn};
use crate::format::{self, printable};

/// `KEY=VALUE` words (keys in any case) → the fields of a reservation request.
fn parse_fields(words: &[String]) -> Result<api::ReservationFields> {
    let now = crate::when::now();
    let mut f = api::ReservationFields::default();
    for w in words {
        let (key, value) = w
            .split_once('=')
            .ok_or_else(|| anyhow!("'{w}' is not KEY=VALUE (e.g. StartTime=now+1hour)"))?;
        let time = |v: &str| crate::when::parse(v, &now);
        match key.to_ascii_lowercase().as_str() {
            "reservationname" | "reservation" | "resvname" => f.name = value.to_string(),
            "starttime" => f.start_time = Some(time(value)?),
            "endtime" => f.end_time = Some(time(value)?),
            "duration" => {
                f.duration_s = Some(
                    match parse_duration(value).map_err(|e| anyhow!("Duration: {e}"))? {
                        Some(s) if s > 0 => s,
                        _ => bail!("Duration: give a positive length (e.g. 60, 2:00:00, 1-00:00:00)"),
                    },
                )
            }
            "nodes" | "nodelist" => f.nodes = Some(value.to_string()),
            "nodecnt" | "nodecount" => {
                f.node_count = Some(
                    value
                        .parse()
                        .map_err(|_| anyhow!("NodeCnt: '{value}' is not a number"))?,
                )
            }
            "partitionname" | "partition" => f.partition = Some(value.to_string()),
            "users" | "user" => f.users = Some(value.to_string()),
            "accounts" | "account" => f.accounts = Some(value.to_string()),
            "flags" => f.flags = Some(value.to_string()),
            other => bail!(
                "Unsupported reservation option: {other} (Gantry takes ReservationName, StartTime, EndTime, Duration, Nodes, NodeCnt, PartitionName, Users, Accounts, Flags)"
            ),
        }
    }
    Ok(f)
}

/// `scontrol create reservation ...`: prints `Reservation created: NAME`.
pub async fn create(conn: &Conn, words: &[String]) -> Result<()> {
    let f = parse_fields(words)?;
    let made = change(conn, api::reservation_change::Change::Create(f)).await?;
    let name = made.first().map(|r| r.name.as_str()).unwrap_or_default();
    println!("Reservation created: {}", printable(name));
    Ok(())
}

/// `scontrol update ReservationName=NAME ...`.
pub async fn update(conn: &Conn, words: &[String]) -> Result<()> {
    let f = parse_fields(words)?;
    if f.name.is_empty() {
        bail!("name the reservation: ReservationName=NAME");
    }
    change(conn, api::reservation_change::Change::Update(f)).await?;
    println!("Reservation updated.");
    Ok(())
}

/// `scontrol delete ReservationName=NAME` (or `delete reservation NAME`).
pub async fn delete(conn: &Conn, words: &[String]) -> Result<()> {
    let name = match words {
        [w] => w
            .split_once('=')
            .filter(|(k, _)| k.eq_ignore_ascii_case("reservationname"))
            .map(|(_, v)| v.to_string()),
        [what, name] if what.eq_ignore_ascii_case("reservation") => Some(name.clone()),
        _ => None,
    }
    .ok_or_else(|| anyhow!("give the reservation: scontrol delete ReservationName=NAME"))?;
    change(conn, api::reservation_change::Change::Delete(name)).await?;
    Ok(())
}

async fn change(
    conn: &Conn,
    change: api::reservation_change::Change,
) -> Result<Vec<api::ReservationInfo>> {
    let mut c = client(conn).await?;
    Ok(c.change_reservation(api::ReservationChange {
        change: Some(change),
    })
    .await
    .map_err(refused)?
    .into_inner()
    .reservations)
}

async fn fetch(conn: &Conn, name: Option<&str>) -> Result<Vec<api::ReservationInfo>> {
    let mut c = client(conn).await?;
    Ok(c.reservations(api::ReservationsRequest {
        name: name.unwrap_or_default().to_string(),
    })
    .await
    .map_err(refused)?
    .into_inner()
    .reservations)
}

fn state(r: &api::ReservationInfo) -> &'static str {
    if r.active {
        "ACTIVE"
    } else {
        "INACTIVE"
    }
}

fn or_null(list: &[String]) -> String {
    format::or_null(&printable(&list.join(",")))
}

/// `scontrol show reservation` for one reservation, in Slurm's layout.
fn scontrol_text(r: &api::ReservationInfo) -> String {
    let mut flags = r.flags.clone();
    if !flags.is_empty() {
        flags.push(',');
    }
    flags.push_str("SPEC_NODES");
    format!(
        "ReservationName={} StartTime={} EndTime={} Duration={}\n   Nodes={} NodeCnt={} CoreCnt={} Features=(null) PartitionName={} Flags={}\n   TRES=cpu={}\n   Users={} Groups=(null) Accounts={} Licenses=(null) State={} BurstBuffer=(null)\n   MaxStartDelay=(null)\n",
        printable(&r.name),
        format::timestamp(r.start_time),
        format::timestamp(r.end_time),
        format::clock(r.end_time - r.start_time),
        compress_hostlist(&r.nodes),
        r.nodes.len(),
        r.cores,
        format::or_null(&r.partition),
        flags,
        r.cores,
        or_null(&r.users),
        or_null(&r.accounts),
        state(r),
    )
}

/// `scontrol show reservation [NAME]`.
pub async fn show(conn: &Conn, name: Option<&str>, json: bool) -> Result<()> {
    let all = fetch(conn, name).await?;
    if json {
        return print_json(&json_of(&all, "scontrol"));
    }
    if all.is_empty() {
        println!("No reservations in the system");
    }
    for r in &all {
        println!("{}", scontrol_text(r));
    }
    Ok(())
}

/// `sinfo -T`: one line per reservation.
pub async fn sinfo(conn: &Conn, noheader: bool, json: bool) -> Result<()> {
    let all = fetch(conn, None).await?;
    if json {
        return print_json(&json_of(&all, "sinfo"));
    }
    if !noheader {
        println!(
            "{:<14} {:>8}  {:>19}  {:>19}  {:>11}  NODELIST",
            "RESV_NAME", "STATE", "START_TIME", "END_TIME", "DURATION"
        );
    }
    for r in &all {
        println!(
            "{:<14} {:>8}  {:>19}  {:>19}  {:>11}  {}",
            printable(&r.name),
            state(r),
            format::timestamp(r.start_time),
            format::timestamp(r.end_time),
            format::clock(r.end_time - r.start_time),
            compress_hostlist(&r.nodes)
        );
    }
    Ok(())
}

/// Slurm's JSON names for reservations (`scontrol show reservation --json`).
fn json_of(all: &[api::ReservationInfo], command: &str) -> serde_json::Value {
    let list: Vec<serde_json::Value> = all
        .iter()
        .map(|r| {
            serde_json::json!({
                "name": r.name,
                "start_time": r.start_time,
                "end_time": r.end_time,
                "node_list": compress_hostlist(&r.nodes),
                "node_count": r.nodes.len(),
                "core_count": r.cores,
                "partition": r.partition,
                "users": r.users.join(","),
                "accounts": r.accounts.join(","),
                "flags": r.flags.split(',').filter(|f| !f.is_empty()).collect::<Vec<_>>(),
                "active": r.active,
            })
        })
        .collect();
    serde_json::json!({
        "reservations": list,
        "meta": format::json_meta(command),
        "errors": [],
        "warnings": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn reservation_fields_take_slurm_keys_in_any_case() {
        let f = parse_fields(&words(&[
            "ReservationName=maint",
            "starttime=now+1hour",
            "Duration=2:00:00",
            "Nodes=cpu[01-02]",
            "Users=root",
            "Flags=MAINT,IGNORE_JOBS",
        ]))
        .unwrap();
        assert_eq!(f.name, "maint");
        assert_eq!(f.duration_s, Some(7_200));
        assert_eq!(f.nodes.as_deref(), Some("cpu[01-02]"));
        assert_eq!(f.flags.as_deref(), Some("MAINT,IGNORE_JOBS"));
        let start = f.start_time.unwrap();
        let now = crate::when::now().timestamp().as_second();
        assert!((start - now - 3_600).abs() <= 2, "{start} vs {now}");
        assert!(parse_fields(&words(&["Duration=UNLIMITED"])).is_err());
        assert!(parse_fields(&words(&["Licenses=x"])).is_err());
        assert!(parse_fields(&words(&["NodeCnt=two"])).is_err());
    }

    #[test]
    fn show_reservation_is_slurms_layout() {
        let r = api::ReservationInfo {
            name: "maint".into(),
            start_time: 1_800_000_000,
            end_time: 1_800_003_600,
            nodes: vec!["cpu01".into(), "cpu02".into()],
            cores: 16,
            users: vec!["root".into()],
            flags: "MAINT".into(),
            ..Default::default()
        };
        let t = scontrol_text(&r);
        assert!(t.starts_with("ReservationName=maint StartTime="), "{t}");
        assert!(t.contains(" Duration=01:00:00\n"), "{t}");
        assert!(
            t.contains("   Nodes=cpu[01-02] NodeCnt=2 CoreCnt=16 Features=(null) PartitionName=(null) Flags=MAINT,SPEC_NODES\n"),
            "{t}"
        );
        assert!(
            t.contains("Users=root Groups=(null) Accounts=(null)"),
            "{t}"
        );
        assert!(t.contains("State=INACTIVE"), "{t}");
    }
}
