//! `sinfo` (`gantry nodes`): partitions and nodes in Slurm's formats — the default
//! partition summary, `-N` node lines, `-l`, `-s`, `-R`, `-o` and `-O` — and `scontrol
//! show partition`.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Result};
use clap::Args;
use gantry_api as api;
use gantry_kernel::units::{compress_hostlist, expand_hostlist};

use crate::client::{client, comma_list, print_json, refused, Conn};
use crate::format::{self, render};

#[derive(Args, Debug)]
pub struct NodesArgs {
    /// Print help (-h is --noheader, as in Slurm).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// No header line.
    #[arg(short = 'h', long = "noheader")]
    pub noheader: bool,
    /// One line per node (and partition).
    #[arg(short = 'N', long = "Node")]
    pub per_node: bool,
    /// More columns (CPUs, memory, reasons, ...).
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// One line per partition with node counts allocated/idle/other/total.
    #[arg(short = 's', long = "summarize")]
    pub summarize: bool,
    /// Why nodes are down or drained.
    #[arg(short = 'R', long = "list-reasons")]
    pub reasons: bool,
    /// The advance reservations instead of nodes.
    #[arg(short = 'T', long = "reservation")]
    pub reservations: bool,
    /// Only these partitions (comma-separated).
    #[arg(short = 'p', long = "partition")]
    pub partition: Option<String>,
    /// Only nodes in these states (comma-separated: idle, mix, alloc, drain, down, ...).
    #[arg(short = 't', long = "states")]
    pub states: Option<String>,
    /// Only these nodes (a host list).
    #[arg(short = 'n', long = "nodes")]
    pub nodes: Option<String>,
    /// Output format (%P %a %l %D %t %T %N %c %C %m %G %f %E %R %n %o %z), as sinfo's -o.
    #[arg(short = 'o', long = "format")]
    pub format: Option<String>,
    /// Output fields by name with optional widths (Partition,NodeList:20,StateLong), as
    /// sinfo's -O.
    #[arg(short = 'O', long = "Format")]
    pub format_long: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// sinfo's formats: the default summary, `-l`, `-N`, `-N -l`, `-s`, `-R`.
const DEFAULT: &str = "%#P %.5a %.10l %.6D %.6t %N";
const LONG: &str = "%#P %.5a %.10l %.10s %.4r %.8h %.10g %.6D %.11T %N";
const NODE: &str = "%#N %.6D %#P %6t";
const NODE_LONG: &str = "%#N %.6D %#P %11T %.4c %.8z %.6m %.8d %.6w %.8f %20E";
const SUMMARIZE: &str = "%#P %.5a %.10l %.16F  %N";
const REASONS: &str = "%20E %9u %19H %N";

/// One line of sinfo: a partition's nodes that share a state (or one node).
struct Group<'a> {
    partition: Option<&'a api::PartitionInfo>,
    nodes: Vec<&'a api::NodeInfo>,
}

/// Slurm's compact state name (`idle`, `mix`, `alloc`, `drain`, `drng`, `down`).
fn short_state(state: &str) -> String {
    match state {
        "IDLE" => "idle",
        "MIXED" => "mix",
        "ALLOCATED" => "alloc",
        "DRAINED" => "drain",
        "DRAINING" => "drng",
        "DOWN" => "down",
        "RESERVED" => "resv",
        other => return other.to_ascii_lowercase(),
    }
    .into()
}

/// Slurm's full state name (`idle`, `mixed`, `allocated`, `drained`, `draining`, `down`).
fn long_state(state: &str) -> String {
    state.to_ascii_lowercase()
}

/// sinfo's time limit: `infinite`, `30:00`, `1:00:00`, `2-00:00:00`.
fn limit(s: i64) -> String {
    if s <= 0 {
        "infinite".into()
    } else {
        format::elapsed(s)
    }
}

/// The field letter's text for a group.
fn field(c: char, g: &Group<'_>) -> Result<String> {
    let first = g.nodes.first();
    let p = g.partition;
    let count = |pred: &dyn Fn(&api::NodeInfo) -> bool| g.nodes.iter().filter(|n| pred(n)).count();
    let names: Vec<&str> = g.nodes.iter().map(|n| n.name.as_str()).collect();
    Ok(match c {
        'P' => p.map_or("n/a".into(), |p| {
            format!("{}{}", p.name, if p.is_default { "*" } else { "" })
        }),
        'R' => p.map_or("n/a".into(), |p| p.name.clone()),
        'a' => "up".into(),
        'l' => p.map_or("n/a".into(), |p| limit(p.max_time_s)),
        'L' => p.map_or("n/a".into(), |p| limit(p.default_time_s)),
        's' => p.map_or("n/a".into(), |p| {
            if p.max_nodes == 0 {
                "1-infinite".into()
            } else {
                format!("1-{}", p.max_nodes)
            }
        }),
        'r' => "no".into(),
        'h' => "NO".into(),
        'g' => "all".into(),
        'D' => g.nodes.len().to_string(),
        't' => first.map_or("n/a".into(), |n| short_state(&n.state)),
        'T' => first.map_or("n/a".into(), |n| long_state(&n.state)),
        'N' => compress_hostlist(&names),
        'n' => names.join(","),
        'o' => g
            .nodes
            .iter()
            .map(|n| {
                if n.addr.is_empty() {
                    n.name.as_str()
                } else {
                    n.addr.as_str()
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        'c' => first.map_or("0".into(), |n| n.cores.to_string()),
        'C' => {
            let (a, t): (u64, u64) = g.nodes.iter().fold((0, 0), |(a, t), n| {
                (a + u64::from(n.cores_allocated), t + u64::from(n.cores))
            });
            let other: u64 = g
                .nodes
                .iter()
                .filter(|n| matches!(n.state.as_str(), "DOWN" | "DRAINED"))
                .map(|n| u64::from(n.cores - n.cores_allocated))
                .sum();
            format!("{a}/{}/{other}/{t}", t - a - other)
        }
        'F' => {
            let alloc = count(&|n| matches!(n.state.as_str(), "ALLOCATED" | "MIXED" | "DRAINING"));
            let idle = count(&|n| n.state == "IDLE");
            let total = g.nodes.len();
            format!("{alloc}/{idle}/{}/{total}", total - alloc - idle)
        }
        'A' => {
            let alloc = count(&|n| matches!(n.state.as_str(), "ALLOCATED" | "MIXED" | "DRAINING"));
            format!("{alloc}/{}", count(&|n| n.state == "IDLE"))
        }
        'm' => first.map_or("0".into(), |n| n.memory_mb.to_string()),
        'd' => "0".into(),
        'w' => "1".into(),
        'z' => "*:*:*".into(),
        'G' => first.map_or("(null)".into(), |n| {
            if n.gpus > 0 {
                format!("gpu:{}", n.gpus)
            } else {
                "(null)".into()
            }
        }),
        'f' => first.map_or("(null)".into(), |n| {
            if n.features.is_empty() {
                "(null)".into()
            } else {
                n.features.join(",")
            }
        }),
        'E' => first.map_or("none".into(), |n| {
            if n.reason.is_empty() {
                "none".into()
            } else {
                n.reason.clone()
            }
        }),
        'u' => "root".into(),
        'H' => "Unknown".into(),
        other => bail!("sinfo: unknown format field '%{other}'"),
    })
}

fn header(c: char) -> &'static str {
    match c {
        'P' | 'R' => "PARTITION",
        'a' => "AVAIL",
        'l' => "TIMELIMIT",
        'L' => "DEFAULTTIME",
        's' => "JOB_SIZE",
        'r' => "ROOT",
        'h' => "OVERSUBS",
        'g' => "GROUPS",
        'D' => "NODES",
        't' | 'T' => "STATE",
        'N' | 'n' => "NODELIST",
        'o' => "NODE_ADDR",
        'c' => "CPUS",
        'C' => "CPUS(A/I/O/T)",
        'F' => "NODES(A/I/O/T)",
        'A' => "NODES(A/I)",
        'm' => "MEMORY",
        'd' => "TMP_DISK",
        'w' => "WEIGHT",
        'z' => "S:C:T",
        'G' => "GRES",
        'f' => "AVAIL_FEATURES",
        'E' => "REASON",
        'u' => "USER",
        'H' => "TIMESTAMP",
        _ => "?",
    }
}

/// `-O Partition,NodeList:20,...` → an `-o` format.
fn long_format(spec: &str) -> Result<String> {
    format::named_fields_format("sinfo", spec, |name| {
        Some(match name {
            "partition" => 'P',
            "partitionname" => 'R',
            "available" => 'a',
            "time" | "timelimit" => 'l',
            "defaulttime" => 'L',
            "nodes" => 'D',
            "statecompact" => 't',
            "statelong" | "state" => 'T',
            "nodelist" => 'N',
            "nodehost" => 'n',
            "nodeaddr" => 'o',
            "cpus" => 'c',
            "cpusstate" => 'C',
            "nodeai" => 'A',
            "nodeaiot" => 'F',
            "memory" => 'm',
            "gres" => 'G',
            "features" | "availablefeatures" => 'f',
            "reason" => 'E',
            _ => return None,
        })
    })
}

/// Every node and partition, as the controller sees them.
async fn nodes_and_partitions(conn: &Conn) -> Result<api::NodesReply> {
    Ok(client(conn)
        .await?
        .nodes(api::NodesRequest {})
        .await
        .map_err(refused)?
        .into_inner())
}

pub async fn nodes(conn: &Conn, a: NodesArgs) -> Result<()> {
    if a.reservations {
        return crate::reservations::sinfo(conn, a.noheader, a.json).await;
    }
    let reply = nodes_and_partitions(conn).await?;
    if a.json {
        return print_json(&sinfo_json(&reply));
    }
    let wanted_parts: Vec<String> = comma_list(&a.partition);
    let wanted_states: Vec<String> = comma_list(&a.states);
    let wanted_nodes = match &a.nodes {
        Some(l) => expand_hostlist(l).map_err(|e| anyhow!("--nodes: {e}"))?,
        None => Vec::new(),
    };
    let keep = |n: &api::NodeInfo| {
        (wanted_states.is_empty()
            || wanted_states.iter().any(|s| {
                let s = s.to_ascii_lowercase();
                s == short_state(&n.state) || s == long_state(&n.state)
            }))
            && (wanted_nodes.is_empty() || wanted_nodes.contains(&n.name))
            && (!a.reasons || matches!(n.state.as_str(), "DOWN" | "DRAINED" | "DRAINING"))
    };
    let by_name: BTreeMap<&str, &api::NodeInfo> =
        reply.nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    let mut groups: Vec<Group<'_>> = Vec::new();
    for p in reply
        .partitions
        .iter()
        .filter(|p| wanted_parts.is_empty() || wanted_parts.contains(&p.name))
    {
        let members: Vec<&api::NodeInfo> = p
            .nodes
            .iter()
            .filter_map(|n| by_name.get(n.as_str()).copied())
            .filter(|n| keep(n))
            .collect();
        if a.per_node {
            groups.extend(members.into_iter().map(|n| Group {
                partition: Some(p),
                nodes: vec![n],
            }));
        } else if a.summarize {
            groups.push(Group {
                partition: Some(p),
                nodes: members,
            });
        } else {
            // One line per state, in the order states first appear.
            let mut by_state: Vec<(String, Vec<&api::NodeInfo>)> = Vec::new();
            for n in members {
                let key = if a.reasons {
                    n.reason.clone()
                } else {
                    n.state.clone()
                };
                match by_state.iter_mut().find(|(s, _)| *s == key) {
                    Some((_, v)) => v.push(n),
                    None => by_state.push((key, vec![n])),
                }
            }
            if by_state.is_empty() && !a.reasons && wanted_states.is_empty() {
                groups.push(Group {
                    partition: Some(p),
                    nodes: Vec::new(),
                });
            }
            groups.extend(by_state.into_iter().map(|(_, nodes)| Group {
                partition: Some(p),
                nodes,
            }));
        }
    }
    let base = match (&a.format, &a.format_long) {
        (Some(f), _) => f.clone(),
        (None, Some(f)) => long_format(f)?,
        (None, None) => match (a.reasons, a.summarize, a.per_node, a.long) {
            (true, _, _, _) => REASONS.into(),
            (_, true, _, _) => SUMMARIZE.into(),
            (_, _, true, true) => NODE_LONG.into(),
            (_, _, true, false) => NODE.into(),
            (_, _, false, true) => LONG.into(),
            _ => DEFAULT.into(),
        },
    };
    // `%#P` and `%#N`: as wide as the widest value (and the header).
    let widest = |c: char, min: usize| {
        groups
            .iter()
            .filter_map(|g| field(c, g).ok())
            .map(|v| v.chars().count())
            .chain([min])
            .max()
            .unwrap_or(min)
    };
    let fmt = base
        .replace("%#P", &format!("%{}P", widest('P', 9)))
        .replace("%#N", &format!("%{}N", widest('N', 8)));
    if !a.noheader {
        println!(
            "{}",
            render(&fmt, |c| Ok(header(c).to_string()))?.trim_end()
        );
    }
    for g in &groups {
        println!("{}", render(&fmt, |c| field(c, g))?.trim_end());
    }
    Ok(())
}

/// sinfo --json: Slurm's field names where they mean the same, with its `meta` and
/// `errors` blocks, and Gantry's own counts beside them.
fn sinfo_json(r: &api::NodesReply) -> serde_json::Value {
    serde_json::json!({
        "meta": format::json_meta("sinfo"),
        "errors": [],
        "warnings": [],
        "nodes": r.nodes.iter().map(|n| serde_json::json!({
            "name": n.name,
            "hostname": n.name,
            "address": n.addr,
            "state": n.state,
            "reason": n.reason,
            "cpus": n.cores,
            "alloc_cpus": n.cores_allocated,
            "alloc_idle_cpus": n.cores - n.cores_allocated,
            "real_memory": n.memory_mb,
            "alloc_memory": n.memory_allocated_mb,
            "gres": if n.gpus > 0 { format!("gpu:{}", n.gpus) } else { String::new() },
            "gpus": n.gpus,
            "gpus_allocated": n.gpus_allocated,
            "partitions": n.partitions,
            "features": n.features,
            "last_heartbeat_age_s": (n.last_heartbeat_age_s >= 0).then_some(n.last_heartbeat_age_s),
        })).collect::<Vec<_>>(),
        "partitions": r.partitions.iter().map(|p| serde_json::json!({
            "name": p.name,
            "nodes": { "configured": compress_hostlist(&p.nodes), "total": p.nodes.len() },
            "default": p.is_default,
            "maximums": { "time": (p.max_time_s > 0).then_some(p.max_time_s / 60), "nodes": (p.max_nodes > 0).then_some(p.max_nodes) },
            "defaults": { "time": (p.default_time_s > 0).then_some(p.default_time_s / 60) },
            "priority": { "tier": p.priority_tier },
            "qos": { "default": p.default_qos },
        })).collect::<Vec<_>>(),
    })
}

/// `scontrol show partition [NAME]`, in Slurm's layout.
pub async fn show_partition(conn: &Conn, name: Option<&str>, json: bool) -> Result<()> {
    let reply = nodes_and_partitions(conn).await?;
    let parts: Vec<&api::PartitionInfo> = reply
        .partitions
        .iter()
        .filter(|p| name.is_none_or(|n| n == p.name))
        .collect();
    if parts.is_empty() {
        return Err(anyhow::Error::new(crate::client::Refused {
            message: format!("Partition {} not found", name.unwrap_or_default()),
            code: 1,
        }));
    }
    if json {
        let mut v = sinfo_json(&reply);
        v["partitions"] = serde_json::Value::Array(
            v["partitions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|p| name.is_none_or(|n| p["name"] == n))
                .collect(),
        );
        v.as_object_mut().map(|o| o.remove("nodes"));
        return print_json(&v);
    }
    let cores: BTreeMap<&str, u32> = reply
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.cores))
        .collect();
    for p in parts {
        let total_cpus: u32 = p.nodes.iter().filter_map(|n| cores.get(n.as_str())).sum();
        let limit = |s: i64| format::clock_limit(s);
        println!("PartitionName={}", p.name);
        println!("   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL");
        println!(
            "   Default={} QoS={} PriorityTier={}",
            if p.is_default { "YES" } else { "NO" },
            p.default_qos,
            p.priority_tier
        );
        println!(
            "   MaxNodes={} MaxTime={} DefaultTime={}",
            if p.max_nodes > 0 {
                p.max_nodes.to_string()
            } else {
                "UNLIMITED".into()
            },
            limit(p.max_time_s),
            limit(p.default_time_s)
        );
        println!("   Nodes={}", compress_hostlist(&p.nodes));
        println!(
            "   Requeue={} State=UP TotalCPUs={total_cpus} TotalNodes={}",
            if p.requeue_on_node_fail { "YES" } else { "NO" },
            p.nodes.len()
        );
        println!();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, state: &str) -> api::NodeInfo {
        api::NodeInfo {
            name: name.into(),
            state: state.into(),
            cores: 4,
            ..Default::default()
        }
    }

    #[test]
    fn fields_print_as_sinfo_prints_them() {
        let p = api::PartitionInfo {
            name: "cpu".into(),
            is_default: true,
            max_time_s: 3600,
            ..Default::default()
        };
        let (a, b) = (node("cpu01", "IDLE"), node("cpu02", "IDLE"));
        let g = Group {
            partition: Some(&p),
            nodes: vec![&a, &b],
        };
        let line = render("%9P %.5a %.10l %.6D %.6t %N", |c| field(c, &g)).unwrap();
        assert_eq!(line, "cpu*         up    1:00:00      2   idle cpu[01-02]");
        assert_eq!(field('F', &g).unwrap(), "0/2/0/2");
        assert_eq!(field('C', &g).unwrap(), "0/8/0/8");
        assert_eq!(limit(0), "infinite");
        assert_eq!(long_format("Partition,NodeList:12").unwrap(), "%-20P %-12N");
        assert!(long_format("Bogus").is_err());
    }
}
