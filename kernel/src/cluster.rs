//! The cluster model: nodes and their free resources, partitions, QOS, and the account
//! share tree. Built once from a [`crate::config::ClusterDescription`]; after that only
//! free/used state and node states change, through the allocator and the scheduler.
//!
//! Invariant: every partition's free index holds exactly the nodes of that partition that
//! are up and not drained, keyed by their current free core count.

use std::collections::BTreeSet;

use rustc_hash::FxHashMap as HashMap;
use std::sync::Arc;

use fixedbitset::FixedBitSet;
use serde::{Deserialize, Serialize};

use crate::topology::NodeTopology;
use crate::units::Time;

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident($inner:ty)) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub $inner);
        impl $name {
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }
    };
}

id_type!(
    /// Index of a node in [`Cluster::nodes`].
    NodeId(u32)
);
id_type!(PartitionId(u16));
id_type!(QosId(u16));
id_type!(AccountId(u32));
id_type!(UserId(u32));
id_type!(
    /// A user inside an account: the leaf of the share tree that usage is charged to.
    AssocId(u32)
);
id_type!(
    /// A countable generic resource name (GRES), e.g. `nvme`.
    GresId(u16)
);
id_type!(NodeTypeId(u16));

/// Administrative and health state of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum NodeState {
    Up,
    /// No heartbeat or declared failed: nothing runs or starts here.
    Down,
    /// Admin drain: running jobs finish, nothing new starts.
    Drained,
}

/// One kind of node: every node built from it has the same hardware when idle.
#[derive(Debug, Clone)]
pub struct NodeType {
    pub name: String,
    pub topology: Arc<NodeTopology>,
    pub features: u64,
    /// Count per [`GresId`].
    pub gres: Vec<u64>,
}

/// What is free on a node right now.
#[derive(Debug, Default, PartialEq)]
pub struct NodeFree {
    pub cores: FixedBitSet,
    pub core_count: u32,
    pub memory_mb: u64,
    pub gpus: u64,
    pub gres: Vec<u64>,
}

impl Clone for NodeFree {
    fn clone(&self) -> Self {
        Self {
            cores: self.cores.clone(),
            core_count: self.core_count,
            memory_mb: self.memory_mb,
            gpus: self.gpus,
            gres: self.gres.clone(),
        }
    }

    /// Field by field, so that the bitset and the GRES counts keep their allocations
    /// (the reservation search copies node states into reused slots every cycle).
    fn clone_from(&mut self, source: &Self) {
        self.cores.clone_from(&source.cores);
        self.core_count = source.core_count;
        self.memory_mb = source.memory_mb;
        self.gpus = source.gpus;
        self.gres.clone_from(&source.gres);
    }
}

#[derive(Debug, Clone)]
pub struct Node {
    pub id: NodeId,
    pub name: String,
    /// Where it is reached (Slurm's NodeAddr); its name unless the description says.
    pub addr: String,
    pub node_type: NodeTypeId,
    pub topology: Arc<NodeTopology>,
    pub features: u64,
    pub gres: Vec<u64>,
    pub partitions: Vec<PartitionId>,
    pub state: NodeState,
    pub free: NodeFree,
}

impl Node {
    /// The free state of this node when nothing runs on it.
    pub fn idle_free(&self) -> NodeFree {
        let mut cores = FixedBitSet::with_capacity(self.topology.core_width());
        for d in &self.topology.numa {
            cores.union_with(&d.cores);
        }
        NodeFree {
            core_count: self.topology.core_count(),
            cores,
            memory_mb: self.topology.memory_mb(),
            gpus: self.topology.all_gpus(),
            gres: self.gres.clone(),
        }
    }

    pub fn is_idle(&self) -> bool {
        self.free.core_count == self.topology.core_count()
            && self.free.gpus == self.topology.all_gpus()
            && self.free.memory_mb == self.topology.memory_mb()
    }

    pub fn schedulable(&self) -> bool {
        self.state == NodeState::Up
    }
}

/// A set of nodes with limits, a priority tier and a default QOS.
#[derive(Debug, Clone)]
pub struct Partition {
    pub id: PartitionId,
    pub name: String,
    pub nodes: Vec<NodeId>,
    /// Longest time limit a job may have here; `None` is unlimited.
    pub max_time: Option<Time>,
    /// Default time limit for jobs that give none; falls back to `max_time`.
    pub default_time: Option<Time>,
    pub max_nodes: Option<u32>,
    /// Jobs in a higher tier are considered first and may preempt lower tiers.
    pub priority_tier: u32,
    pub default_qos: QosId,
    /// Whether jobs here are requeued (rather than failed) when their node fails.
    pub requeue_on_node_fail: bool,
    /// Per node type: how many nodes of it the partition holds and one of them, for
    /// "can this job ever run here" checks without walking every node.
    pub type_counts: Vec<(NodeTypeId, u32, NodeId)>,
    /// Schedulable nodes ordered by (free cores, node id): the allocator's index.
    pub(crate) free_index: BTreeSet<(u32, NodeId)>,
    pub(crate) free_cores: u64,
    pub(crate) free_gpus: u64,
}

impl Partition {
    pub fn free_cores(&self) -> u64 {
        self.free_cores
    }
    pub fn free_gpus(&self) -> u64 {
        self.free_gpus
    }
}

pub use gantry_abi::PreemptMode;

/// Quality of service: a priority, limits, and who may preempt jobs that run under it.
#[derive(Debug, Clone)]
pub struct Qos {
    pub id: QosId,
    pub name: String,
    pub priority: u32,
    pub max_running_per_user: Option<u32>,
    /// QOS whose jobs may preempt jobs of this QOS; empty means protected.
    pub preemptable_by: Vec<QosId>,
    pub preempt_mode: PreemptMode,
}

/// A node of the share tree.
#[derive(Debug, Clone)]
pub struct Account {
    pub id: AccountId,
    pub name: String,
    pub parent: Option<AccountId>,
    pub shares: u32,
}

/// A user's membership in an account, with its own shares among the account's users.
#[derive(Debug, Clone, Copy)]
pub struct Association {
    pub id: AssocId,
    pub account: AccountId,
    pub user: UserId,
    pub shares: u32,
}

/// The whole static model plus the free state of every node.
#[derive(Debug, Clone)]
pub struct Cluster {
    pub node_types: Vec<NodeType>,
    pub nodes: Vec<Node>,
    pub partitions: Vec<Partition>,
    pub default_partition: Option<PartitionId>,
    pub qos: Vec<Qos>,
    pub accounts: Vec<Account>,
    pub users: Vec<String>,
    pub associations: Vec<Association>,
    pub feature_names: Vec<String>,
    pub gres_names: Vec<String>,
    /// No accounts were declared: any user may submit, charged to `root`.
    pub open_accounts: bool,
    node_by_name: HashMap<String, NodeId>,
    partition_by_name: HashMap<String, PartitionId>,
    qos_by_name: HashMap<String, QosId>,
    account_by_name: HashMap<String, AccountId>,
    user_by_name: HashMap<String, UserId>,
    assoc_by_pair: HashMap<(AccountId, UserId), AssocId>,
    default_account: HashMap<UserId, AccountId>,
}

/// The root of every share tree.
pub const ROOT_ACCOUNT: AccountId = AccountId(0);

impl Cluster {
    /// An empty cluster with only the root account; the loader fills it in.
    pub(crate) fn empty() -> Self {
        Self {
            node_types: Vec::new(),
            nodes: Vec::new(),
            partitions: Vec::new(),
            default_partition: None,
            qos: Vec::new(),
            accounts: vec![Account {
                id: ROOT_ACCOUNT,
                name: "root".into(),
                parent: None,
                shares: 1,
            }],
            users: Vec::new(),
            associations: Vec::new(),
            feature_names: Vec::new(),
            gres_names: Vec::new(),
            open_accounts: true,
            node_by_name: HashMap::default(),
            partition_by_name: HashMap::default(),
            qos_by_name: HashMap::default(),
            account_by_name: HashMap::from_iter([("root".to_string(), ROOT_ACCOUNT)]),
            user_by_name: HashMap::default(),
            assoc_by_pair: HashMap::default(),
            default_account: HashMap::default(),
        }
    }

    /// A homogeneous cluster of `nodes` CPU-only nodes in one partition `batch` with a
    /// `normal` QOS: what a trace without a cluster file runs on.
    pub fn homogeneous(nodes: u32, cores_per_node: u32, memory_mb: u64) -> Self {
        let mut c = Self::empty();
        c.add_qos(Qos {
            id: QosId(0),
            name: "normal".into(),
            priority: 0,
            max_running_per_user: None,
            preemptable_by: Vec::new(),
            preempt_mode: PreemptMode::Cancel,
        });
        let ty = c.add_node_type(NodeType {
            name: "node".into(),
            topology: Arc::new(NodeTopology::uniform(1, 1, cores_per_node, memory_mb)),
            features: 0,
            gres: Vec::new(),
        });
        let width = nodes.to_string().len();
        let ids: Vec<NodeId> = (0..nodes)
            .map(|i| c.add_node(format!("n{:0width$}", i + 1), ty))
            .collect();
        c.add_partition("batch", ids, None, None, None, 0, QosId(0), false);
        c.default_partition = Some(PartitionId(0));
        c
    }

    pub(crate) fn add_node_type(&mut self, t: NodeType) -> NodeTypeId {
        self.node_types.push(t);
        NodeTypeId(self.node_types.len() as u16 - 1)
    }

    pub(crate) fn add_node(&mut self, name: String, ty: NodeTypeId) -> NodeId {
        let t = &self.node_types[ty.index()];
        let id = NodeId(self.nodes.len() as u32);
        let mut node = Node {
            id,
            addr: name.clone(),
            name: name.clone(),
            node_type: ty,
            topology: t.topology.clone(),
            features: t.features,
            gres: t.gres.clone(),
            partitions: Vec::new(),
            state: NodeState::Up,
            free: NodeFree {
                cores: FixedBitSet::new(),
                core_count: 0,
                memory_mb: 0,
                gpus: 0,
                gres: Vec::new(),
            },
        };
        node.free = node.idle_free();
        self.nodes.push(node);
        self.node_by_name.insert(name, id);
        id
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn add_partition(
        &mut self,
        name: &str,
        nodes: Vec<NodeId>,
        max_time: Option<Time>,
        default_time: Option<Time>,
        max_nodes: Option<u32>,
        priority_tier: u32,
        default_qos: QosId,
        requeue_on_node_fail: bool,
    ) -> PartitionId {
        let id = PartitionId(self.partitions.len() as u16);
        let mut type_counts: Vec<(NodeTypeId, u32, NodeId)> = Vec::new();
        let mut free_index = BTreeSet::new();
        let (mut free_cores, mut free_gpus) = (0u64, 0u64);
        for &n in &nodes {
            let node = &mut self.nodes[n.index()];
            node.partitions.push(id);
            match type_counts
                .iter_mut()
                .find(|(t, _, _)| *t == node.node_type)
            {
                Some((_, c, _)) => *c += 1,
                None => type_counts.push((node.node_type, 1, n)),
            }
            if node.schedulable() {
                free_index.insert((node.free.core_count, n));
                free_cores += node.free.core_count as u64;
                free_gpus += node.free.gpus.count_ones() as u64;
            }
        }
        self.partitions.push(Partition {
            id,
            name: name.to_string(),
            nodes,
            max_time,
            default_time,
            max_nodes,
            priority_tier,
            default_qos,
            requeue_on_node_fail,
            type_counts,
            free_index,
            free_cores,
            free_gpus,
        });
        self.partition_by_name.insert(name.to_string(), id);
        id
    }

    pub(crate) fn add_qos(&mut self, q: Qos) -> QosId {
        let id = QosId(self.qos.len() as u16);
        self.qos_by_name.insert(q.name.clone(), id);
        self.qos.push(Qos { id, ..q });
        id
    }

    pub(crate) fn add_account(&mut self, name: &str, parent: AccountId, shares: u32) -> AccountId {
        let id = AccountId(self.accounts.len() as u32);
        self.accounts.push(Account {
            id,
            name: name.to_string(),
            parent: Some(parent),
            shares,
        });
        self.account_by_name.insert(name.to_string(), id);
        id
    }

    /// Interns a user name.
    pub fn intern_user(&mut self, name: &str) -> UserId {
        if let Some(&u) = self.user_by_name.get(name) {
            return u;
        }
        let id = UserId(self.users.len() as u32);
        self.users.push(name.to_string());
        self.user_by_name.insert(name.to_string(), id);
        id
    }

    /// Finds or creates the association of `user` in `account`; the first account a user
    /// joins becomes their default.
    pub fn associate(&mut self, account: AccountId, user: UserId, shares: u32) -> AssocId {
        if let Some(&a) = self.assoc_by_pair.get(&(account, user)) {
            return a;
        }
        let id = AssocId(self.associations.len() as u32);
        self.associations.push(Association {
            id,
            account,
            user,
            shares,
        });
        self.assoc_by_pair.insert((account, user), id);
        self.default_account.entry(user).or_insert(account);
        id
    }

    /// Adds an account under root if it does not exist yet (used by trace replay, whose
    /// groups are not declared anywhere).
    pub fn ensure_account(&mut self, name: &str) -> AccountId {
        match self.account_by_name.get(name) {
            Some(&a) => a,
            None => self.add_account(name, ROOT_ACCOUNT, 1),
        }
    }

    pub fn node_by_name(&self, name: &str) -> Option<NodeId> {
        self.node_by_name.get(name).copied()
    }
    pub fn partition_by_name(&self, name: &str) -> Option<PartitionId> {
        self.partition_by_name.get(name).copied()
    }
    pub fn qos_by_name(&self, name: &str) -> Option<QosId> {
        self.qos_by_name.get(name).copied()
    }
    pub fn account_by_name(&self, name: &str) -> Option<AccountId> {
        self.account_by_name.get(name).copied()
    }
    pub fn user_by_name(&self, name: &str) -> Option<UserId> {
        self.user_by_name.get(name).copied()
    }
    pub fn association(&self, account: AccountId, user: UserId) -> Option<AssocId> {
        self.assoc_by_pair.get(&(account, user)).copied()
    }
    pub fn default_account(&self, user: UserId) -> Option<AccountId> {
        self.default_account.get(&user).copied()
    }
    pub fn feature_id(&self, name: &str) -> Option<usize> {
        self.feature_names.iter().position(|f| f == name)
    }
    pub fn gres_id(&self, name: &str) -> Option<GresId> {
        self.gres_names
            .iter()
            .position(|g| g == name)
            .map(|i| GresId(i as u16))
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id.index()]
    }
    pub fn partition(&self, id: PartitionId) -> &Partition {
        &self.partitions[id.index()]
    }

    /// Total cores of all nodes (for utilization).
    pub fn total_cores(&self) -> u64 {
        self.nodes
            .iter()
            .map(|n| n.topology.core_count() as u64)
            .sum()
    }

    /// Changes a node's free resources in place (no copy of its core set) and keeps
    /// every partition index true.
    pub(crate) fn update_free(&mut self, id: NodeId, change: impl FnOnce(&mut NodeFree)) {
        self.unindex(id);
        change(&mut self.nodes[id.index()].free);
        self.index(id);
    }

    /// Changes a node's state and keeps every partition index true.
    pub(crate) fn set_state(&mut self, id: NodeId, state: NodeState) {
        self.unindex(id);
        self.nodes[id.index()].state = state;
        self.index(id);
    }

    fn unindex(&mut self, id: NodeId) {
        let node = &self.nodes[id.index()];
        if !node.schedulable() {
            return;
        }
        for &p in &node.partitions {
            let part = &mut self.partitions[p.index()];
            part.free_index.remove(&(node.free.core_count, id));
            part.free_cores -= node.free.core_count as u64;
            part.free_gpus -= node.free.gpus.count_ones() as u64;
        }
    }

    fn index(&mut self, id: NodeId) {
        let node = &self.nodes[id.index()];
        if !node.schedulable() {
            return;
        }
        for &p in &node.partitions {
            let part = &mut self.partitions[p.index()];
            part.free_index.insert((node.free.core_count, id));
            part.free_cores += node.free.core_count as u64;
            part.free_gpus += node.free.gpus.count_ones() as u64;
        }
    }
}
