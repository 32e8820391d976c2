//! The TOML cluster description and its translation into a [`Cluster`].
//!
//! Parsing and validation only: the caller reads the file, so this module does no I/O.
//! Every error names the entry it is about, so an admin can find and fix it.

use std::collections::BTreeMap;

use rustc_hash::FxHashSet as HashSet;
use std::sync::Arc;

use serde::Deserialize;
use thiserror::Error;

use crate::cluster::{Cluster, NodeId, NodeType, PreemptMode, Qos, QosId, ROOT_ACCOUNT};
use crate::topology::{
    Gpu, NodeTopology, MAX_CORES_PER_NODE, MAX_GPUS_PER_NODE, MAX_NUMA_DOMAINS_PER_NODE,
};
use crate::units::{expand_hostlist, parse_duration, parse_memory_mb, UnitError};

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("cluster description is not valid TOML: {0}")]
    Toml(#[from] toml::de::Error),
    #[error("node type '{0}': {1}")]
    NodeType(String, String),
    #[error("nodes entry '{0}': {1}")]
    Nodes(String, String),
    #[error("partition '{0}': {1}")]
    Partition(String, String),
    #[error("qos '{0}': {1}")]
    Qos(String, String),
    #[error("account '{0}': {1}")]
    Account(String, String),
    #[error("{0}")]
    Unit(#[from] UnitError),
    #[error("the cluster description defines no nodes")]
    NoNodes,
}

/// The file format. See `examples/cluster.toml` for a commented example.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterDescription {
    #[serde(default)]
    pub node_type: Vec<NodeTypeDesc>,
    #[serde(default)]
    pub nodes: Vec<NodesDesc>,
    #[serde(default)]
    pub partition: Vec<PartitionDesc>,
    #[serde(default)]
    pub qos: Vec<QosDesc>,
    #[serde(default)]
    pub account: Vec<AccountDesc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeTypeDesc {
    pub name: String,
    #[serde(default = "one")]
    pub sockets: u16,
    #[serde(default = "one")]
    pub numa_per_socket: u16,
    pub cores_per_numa: u32,
    /// Memory of the whole node, e.g. `"512G"`; split evenly over NUMA domains.
    pub memory: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub gres: BTreeMap<String, u64>,
    pub gpus: Option<GpusDesc>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GpusDesc {
    #[serde(default)]
    pub model: String,
    /// NUMA domain of each GPU, in GPU index order; its length is the GPU count.
    pub numa: Vec<u16>,
    #[serde(default)]
    pub nvlink: NvlinkDesc,
}

/// How the GPUs of a node type are linked.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum NvlinkDesc {
    /// PCIe only.
    #[default]
    None,
    /// An NVSwitch fabric: every pair has this many links.
    AllToAll(u8),
    /// Bridges: `[gpu_a, gpu_b, links]` per connected pair.
    Pairs(Vec<[u32; 3]>),
    /// The full symmetric link-count matrix.
    Matrix(Vec<Vec<u8>>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesDesc {
    /// A host list, e.g. `"gpu[01-04]"`.
    pub names: String,
    #[serde(rename = "type")]
    pub node_type: String,
    /// Slurm's NodeAddr: where each node is reached, a host list of one address per
    /// name (`"10.0.0.[1-4]"`) or one address for all of them (`"127.0.0.1"`, for
    /// several nodes on one machine). Default: each node's name.
    #[serde(default)]
    pub addrs: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartitionDesc {
    pub name: String,
    /// Host lists; `["ALL"]` takes every node.
    pub nodes: Vec<String>,
    pub max_time: Option<String>,
    pub default_time: Option<String>,
    pub max_nodes: Option<u32>,
    #[serde(default)]
    pub priority_tier: u32,
    pub default_qos: Option<String>,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub requeue_on_node_fail: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QosDesc {
    pub name: String,
    #[serde(default)]
    pub priority: u32,
    pub max_running_per_user: Option<u32>,
    #[serde(default)]
    pub preemptable_by: Vec<String>,
    #[serde(default)]
    pub preempt_mode: PreemptMode,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountDesc {
    pub name: String,
    /// Parent account; the implicit `root` when absent.
    pub parent: Option<String>,
    #[serde(default = "one_u32")]
    pub shares: u32,
    #[serde(default)]
    pub users: Vec<String>,
}

fn one() -> u16 {
    1
}
fn one_u32() -> u32 {
    1
}

impl ClusterDescription {
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        Ok(toml::from_str(text)?)
    }

    /// Validates the description and builds the cluster with every node idle and up.
    pub fn build(&self) -> Result<Cluster, ConfigError> {
        let mut c = Cluster::empty();

        // Features and GRES names are interned in order of first appearance.
        for t in &self.node_type {
            for f in &t.features {
                if !c.feature_names.contains(f) {
                    c.feature_names.push(f.clone());
                }
            }
            for g in t.gres.keys() {
                if !c.gres_names.contains(g) {
                    c.gres_names.push(g.clone());
                }
            }
        }
        if c.feature_names.len() > 64 {
            return Err(ConfigError::NodeType(
                "*".into(),
                "more than 64 distinct features".into(),
            ));
        }
        for t in &self.node_type {
            if c.node_types.iter().any(|x| x.name == t.name) {
                return Err(ConfigError::NodeType(
                    t.name.clone(),
                    "defined twice".into(),
                ));
            }
            let topology =
                build_topology(t).map_err(|why| ConfigError::NodeType(t.name.clone(), why))?;
            let features = t
                .features
                .iter()
                .fold(0u64, |m, f| m | 1u64 << c.feature_id(f).unwrap_or(0));
            let mut gres = vec![0u64; c.gres_names.len()];
            for (name, n) in &t.gres {
                if let Some(g) = c.gres_id(name) {
                    gres[g.index()] = *n;
                }
            }
            c.add_node_type(NodeType {
                name: t.name.clone(),
                topology: Arc::new(topology),
                features,
                gres,
            });
        }

        for n in &self.nodes {
            let err = |why: String| ConfigError::Nodes(n.names.clone(), why);
            let ty = c
                .node_types
                .iter()
                .position(|t| t.name == n.node_type)
                .ok_or_else(|| err(format!("unknown node type '{}'", n.node_type)))?;
            let names = expand_hostlist(&n.names)?;
            let addrs = match &n.addrs {
                None => names.clone(),
                Some(a) => {
                    let addrs = expand_hostlist(a)?;
                    match addrs.len() {
                        1 => vec![addrs[0].clone(); names.len()],
                        k if k == names.len() => addrs,
                        k => {
                            return Err(err(format!(
                                "addrs names {k} addresses for {} nodes: give one per node, or one for all",
                                names.len()
                            )))
                        }
                    }
                }
            };
            for (name, addr) in names.into_iter().zip(addrs) {
                if c.node_by_name(&name).is_some() {
                    return Err(err(format!("node '{name}' is defined twice")));
                }
                let id = c.add_node(name, crate::cluster::NodeTypeId(ty as u16));
                c.nodes[id.index()].addr = addr;
            }
        }
        if c.nodes.is_empty() {
            return Err(ConfigError::NoNodes);
        }

        // QOS: `normal` always exists so partitions have a default.
        let mut qos_descs: Vec<&QosDesc> = self.qos.iter().collect();
        let implicit_normal = QosDesc {
            name: "normal".into(),
            priority: 0,
            max_running_per_user: None,
            preemptable_by: Vec::new(),
            preempt_mode: PreemptMode::Cancel,
        };
        if !qos_descs.iter().any(|q| q.name == "normal") {
            qos_descs.insert(0, &implicit_normal);
        }
        for q in &qos_descs {
            if c.qos_by_name(&q.name).is_some() {
                return Err(ConfigError::Qos(q.name.clone(), "defined twice".into()));
            }
            c.add_qos(Qos {
                id: QosId(0),
                name: q.name.clone(),
                priority: q.priority,
                max_running_per_user: q.max_running_per_user,
                preemptable_by: Vec::new(),
                preempt_mode: q.preempt_mode,
            });
        }
        for q in &qos_descs {
            let id = c.qos_by_name(&q.name).unwrap_or(QosId(0));
            let mut by = Vec::new();
            for p in &q.preemptable_by {
                by.push(c.qos_by_name(p).ok_or_else(|| {
                    ConfigError::Qos(
                        q.name.clone(),
                        format!("preemptable_by names unknown qos '{p}'"),
                    )
                })?);
            }
            c.qos[id.index()].preemptable_by = by;
        }

        if self.partition.is_empty() {
            let all: Vec<NodeId> = (0..c.nodes.len() as u32).map(NodeId).collect();
            let normal = c.qos_by_name("normal").unwrap_or(QosId(0));
            c.add_partition("batch", all, None, None, None, 0, normal, false);
            c.default_partition = Some(crate::cluster::PartitionId(0));
        }
        for p in &self.partition {
            let err = |why: String| ConfigError::Partition(p.name.clone(), why);
            if c.partition_by_name(&p.name).is_some() {
                return Err(err("defined twice".into()));
            }
            let mut nodes = Vec::new();
            let mut seen = HashSet::default();
            for list in &p.nodes {
                let names = if list == "ALL" {
                    c.nodes.iter().map(|n| n.name.clone()).collect()
                } else {
                    expand_hostlist(list)?
                };
                for name in names {
                    let id = c
                        .node_by_name(&name)
                        .ok_or_else(|| err(format!("unknown node '{name}'")))?;
                    if seen.insert(id) {
                        nodes.push(id);
                    }
                }
            }
            if nodes.is_empty() {
                return Err(err("has no nodes".into()));
            }
            let max_time = p
                .max_time
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .flatten();
            let default_time = p
                .default_time
                .as_deref()
                .map(parse_duration)
                .transpose()?
                .flatten();
            let qos_name = p.default_qos.as_deref().unwrap_or("normal");
            let default_qos = c
                .qos_by_name(qos_name)
                .ok_or_else(|| err(format!("default_qos names unknown qos '{qos_name}'")))?;
            let id = c.add_partition(
                &p.name,
                nodes,
                max_time,
                default_time,
                p.max_nodes,
                p.priority_tier,
                default_qos,
                p.requeue_on_node_fail,
            );
            if p.default {
                if c.default_partition.is_some() {
                    return Err(err("a second partition is marked default".into()));
                }
                c.default_partition = Some(id);
            }
        }
        if c.default_partition.is_none() {
            c.default_partition = Some(crate::cluster::PartitionId(0));
        }

        c.open_accounts = self.account.is_empty();
        // Accounts may be listed in any order; resolve parents until nothing changes.
        let mut remaining: Vec<&AccountDesc> = self.account.iter().collect();
        while !remaining.is_empty() {
            let before = remaining.len();
            let mut next = Vec::new();
            for a in remaining {
                if a.name == "root" || c.account_by_name(&a.name).is_some() {
                    return Err(ConfigError::Account(
                        a.name.clone(),
                        "defined twice (root is implicit)".into(),
                    ));
                }
                match c.account_by_name(a.parent.as_deref().unwrap_or("root")) {
                    Some(parent) => {
                        let id = c.add_account(&a.name, parent, a.shares);
                        for u in &a.users {
                            let uid = c.intern_user(u);
                            c.associate(id, uid, 1);
                        }
                    }
                    None => next.push(a),
                }
            }
            if next.len() == before {
                let a = next[0];
                let parent = a.parent.clone().unwrap_or_default();
                let known = self.account.iter().any(|x| x.name == parent);
                let why = if known {
                    format!("parent '{parent}' is part of a cycle")
                } else {
                    format!("unknown parent account '{parent}'")
                };
                return Err(ConfigError::Account(a.name.clone(), why));
            }
            remaining = next;
        }
        debug_assert_eq!(c.accounts[0].id, ROOT_ACCOUNT);
        Ok(c)
    }
}

fn build_topology(t: &NodeTypeDesc) -> Result<NodeTopology, String> {
    if t.sockets == 0 || t.numa_per_socket == 0 || t.cores_per_numa == 0 {
        return Err("sockets, numa_per_socket and cores_per_numa must be at least 1".into());
    }
    let domains = u32::from(t.sockets) * u32::from(t.numa_per_socket);
    if domains as usize > MAX_NUMA_DOMAINS_PER_NODE {
        return Err(format!(
            "{domains} NUMA domains (sockets × numa_per_socket); at most {MAX_NUMA_DOMAINS_PER_NODE} per node are supported"
        ));
    }
    let cores = u64::from(domains) * u64::from(t.cores_per_numa);
    if cores > MAX_CORES_PER_NODE as u64 {
        return Err(format!(
            "{cores} cores (NUMA domains × cores_per_numa); at most {MAX_CORES_PER_NODE} per node are supported"
        ));
    }
    let memory_mb = parse_memory_mb(&t.memory).map_err(|e| e.to_string())?;
    let topo = NodeTopology::uniform(t.sockets, t.numa_per_socket, t.cores_per_numa, memory_mb);
    let Some(g) = &t.gpus else { return Ok(topo) };
    let n = g.numa.len();
    if n > MAX_GPUS_PER_NODE {
        return Err(format!(
            "{n} GPUs; at most {MAX_GPUS_PER_NODE} per node are supported"
        ));
    }
    let domains = topo.numa.len() as u16;
    if let Some(bad) = g.numa.iter().find(|&&d| d >= domains) {
        return Err(format!(
            "a GPU is attached to NUMA domain {bad}, but the node has {domains} (numbered from 0)"
        ));
    }
    let mut m = vec![0u8; n * n];
    match &g.nvlink {
        NvlinkDesc::None => {}
        NvlinkDesc::AllToAll(links) => {
            for a in 0..n {
                for b in 0..n {
                    if a != b {
                        m[a * n + b] = *links;
                    }
                }
            }
        }
        NvlinkDesc::Pairs(pairs) => {
            for &[a, b, links] in pairs {
                let (a, b) = (a as usize, b as usize);
                if a >= n || b >= n || a == b {
                    return Err(format!(
                        "nvlink pair [{a}, {b}] does not name two different GPUs of {n}"
                    ));
                }
                let links = u8::try_from(links).map_err(|_| {
                    format!("nvlink pair [{a}, {b}] has {links} links; at most 255")
                })?;
                m[a * n + b] = links;
                m[b * n + a] = links;
            }
        }
        NvlinkDesc::Matrix(rows) => {
            if rows.len() != n || rows.iter().any(|r| r.len() != n) {
                return Err(format!("nvlink matrix must be {n}×{n}"));
            }
            for a in 0..n {
                for b in 0..n {
                    if rows[a][b] != rows[b][a] || (a == b && rows[a][b] != 0) {
                        return Err("nvlink matrix must be symmetric with a zero diagonal".into());
                    }
                    m[a * n + b] = rows[a][b];
                }
            }
        }
    }
    let gpus = g
        .numa
        .iter()
        .map(|&d| Gpu {
            numa: d,
            model: g.model.clone(),
        })
        .collect();
    Ok(topo.with_gpus(gpus, m))
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../examples/cluster.toml");

    #[test]
    fn example_cluster_loads() {
        let c = ClusterDescription::from_toml(EXAMPLE)
            .unwrap()
            .build()
            .unwrap();
        let dgx = c.node(c.node_by_name("dgx01").unwrap());
        assert_eq!(dgx.topology.gpu_count(), 8);
        assert_eq!(dgx.topology.links(0, 7), 18);
        let bridged = c.node(c.node_by_name("pcie01").unwrap());
        assert_eq!(bridged.topology.links(0, 1), 4);
        assert_eq!(bridged.topology.links(1, 2), 0);
        assert!(c.partition_by_name("gpu").is_some());
        assert!(c.account_by_name("physics").is_some());
    }

    fn err(text: &str) -> String {
        match ClusterDescription::from_toml(text).and_then(|d| d.build()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn bad_descriptions_say_what_is_wrong() {
        let base = "[[node_type]]\nname='c'\ncores_per_numa=4\nmemory='8G'\n";
        assert!(err(&format!("{base}[[nodes]]\nnames='a[1-2]'\ntype='x'\n"))
            .contains("unknown node type 'x'"));
        assert!(
            err(&format!("{base}[[nodes]]\nnames='a1,a1'\ntype='c'\n")).contains("defined twice")
        );
        assert!(err(&format!(
            "{base}[[nodes]]\nnames='a1'\ntype='c'\n[[partition]]\nname='p'\nnodes=['b1']\n"
        ))
        .contains("unknown node 'b1'"));
        assert!(err(&format!(
            "{base}[[nodes]]\nnames='a1'\ntype='c'\n[[account]]\nname='x'\nparent='y'\n"
        ))
        .contains("unknown parent account 'y'"));
        assert!(err(&format!("{base}[[nodes]]\nnames='a1'\ntype='c'\n[[account]]\nname='x'\nparent='y'\n[[account]]\nname='y'\nparent='x'\n")).contains("cycle"));
        assert!(err("[[node_type]]\nname='g'\ncores_per_numa=4\nmemory='8G'\ngpus={numa=[0,3]}\n[[nodes]]\nnames='a'\ntype='g'\n").contains("NUMA domain 3"));
        assert!(err("[[node_type]]\nname='g'\ncores_per_numa=4\nmemory='8G'\ngpus={numa=[0,0],nvlink={matrix=[[0,1],[2,0]]}}\n[[nodes]]\nnames='a'\ntype='g'\n").contains("symmetric"));
        assert!(err("[[node_type]]\nname='w'\nsockets=5\nnuma_per_socket=13\ncores_per_numa=1\nmemory='8G'\n[[nodes]]\nnames='a'\ntype='w'\n").contains("65 NUMA domains"));
        assert!(err("[[node_type]]\nname='w'\nsockets=2\ncores_per_numa=4294967295\nmemory='8G'\n[[nodes]]\nnames='a'\ntype='w'\n").contains("at most 65536 per node"));
        assert!(err("nodez = 1").contains("not valid TOML"));
        assert!(err("").contains("no nodes"));
        assert!(err(&format!(
            "{base}[[nodes]]\nnames='a[1-3]'\ntype='c'\naddrs='10.0.0.[1-2]'\n"
        ))
        .contains("2 addresses for 3 nodes"));
    }

    #[test]
    fn node_addresses_are_their_names_unless_described() {
        let base = "[[node_type]]\nname='c'\ncores_per_numa=4\nmemory='8G'\n";
        let build = |nodes: &str| {
            ClusterDescription::from_toml(&format!("{base}{nodes}"))
                .and_then(|d| d.build())
                .unwrap()
        };
        let addr = |c: &Cluster, n: &str| c.node(c.node_by_name(n).unwrap()).addr.clone();
        let c = build("[[nodes]]\nnames='a[1-2]'\ntype='c'\n");
        assert_eq!(addr(&c, "a2"), "a2");
        let c = build("[[nodes]]\nnames='a[1-2]'\ntype='c'\naddrs='10.0.0.[7-8]'\n");
        assert_eq!(
            (addr(&c, "a1"), addr(&c, "a2")),
            ("10.0.0.7".into(), "10.0.0.8".into())
        );
        let c = build("[[nodes]]\nnames='a[1-2]'\ntype='c'\naddrs='127.0.0.1'\n");
        assert_eq!(addr(&c, "a2"), "127.0.0.1");
    }
}
