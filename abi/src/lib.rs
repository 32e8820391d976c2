//! # gantry-abi
//!
//! The records of the policy ABI (`wit/policy.wit`, package `gantry:policy@0.3.0`) as plain
//! Rust types, and the four policy traits a policy implements. The kernel uses these
//! records for its decision points; the SDK maps them onto the generated Wasm bindings;
//! a policy written against these traits builds both natively and as a component.
//!
//! ## What it must not depend on
//!
//! Nothing but `core` and `alloc` (and `serde` derives behind a feature): it is compiled
//! into every policy component, where there is no `std`, no I/O and no clock.

#![no_std]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;

/// Seconds on the scheduler's clock.
pub type Time = i64;
/// A job id, unique in one controller's lifetime.
pub type JobId = u64;

/// Who a policy is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyInfo {
    pub name: String,
    pub version: String,
}

/// One waiting job, as the priority policy sees it: one row of `priority-batch` in the WIT.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PriorityInput {
    pub job: JobId,
    pub submit_time: Time,
    pub age: Time,
    pub cores: u64,
    pub nodes: u32,
    pub gpus: u64,
    pub time_limit: Option<Time>,
    pub partition_tier: u32,
    pub qos: u32,
    pub qos_priority: u32,
    /// In `[0, 1]`: 1 under-served, 0 over-served.
    pub fairshare: f64,
    pub user: u32,
    pub account: u32,
}

/// A set of [`PriorityBatch`] columns (see `priority-fields` in the WIT). The job ids
/// are a column like the others: most policies score jobs without them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PriorityFields(u16);

impl PriorityFields {
    pub const NONE: Self = Self(0);
    pub const SUBMIT_TIME: Self = Self(1 << 0);
    pub const AGE: Self = Self(1 << 1);
    pub const CORES: Self = Self(1 << 2);
    pub const NODES: Self = Self(1 << 3);
    pub const GPUS: Self = Self(1 << 4);
    pub const TIME_LIMIT: Self = Self(1 << 5);
    pub const PARTITION_TIER: Self = Self(1 << 6);
    pub const QOS: Self = Self(1 << 7);
    pub const QOS_PRIORITY: Self = Self(1 << 8);
    pub const FAIRSHARE: Self = Self(1 << 9);
    pub const USER: Self = Self(1 << 10);
    pub const ACCOUNT: Self = Self(1 << 11);
    pub const JOB: Self = Self(1 << 12);
    pub const ALL: Self = Self((1 << 13) - 1);

    /// The set with these bits (bit `k` is the `k`-th flag of the WIT); unknown bits are
    /// dropped.
    pub const fn from_bits(bits: u16) -> Self {
        Self(bits & Self::ALL.0)
    }
    pub const fn bits(self) -> u16 {
        self.0
    }
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

impl Default for PriorityFields {
    fn default() -> Self {
        Self::ALL
    }
}

impl core::ops::BitOr for PriorityFields {
    type Output = Self;
    fn bitor(self, other: Self) -> Self {
        self.union(other)
    }
}

/// The waiting jobs of one cycle, column by column (see `priority-batch` in the WIT):
/// entry `i` of every column belongs to the same job.
///
/// Columns rather than a list of [`PriorityInput`] because the kernel builds this batch
/// once per cycle for up to 100,000 jobs and hands it to the policy as it is: into a
/// component it crosses as one copy per column. A batch holds only the columns its
/// policy declared ([`Priority::fields`]); the others are empty, so a policy that reads
/// five of the thirteen columns has only those five built and copied.
///
/// Invariant: every column in [`Self::fields`] has [`Self::len`] entries; every other
/// column is empty. The fields are private so that only [`Self::push`] and
/// [`Self::from_columns`] (which checks) can build one.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityBatch {
    fields: PriorityFields,
    len: usize,
    job: Vec<JobId>,
    submit_time: Vec<Time>,
    age: Vec<Time>,
    cores: Vec<u64>,
    nodes: Vec<u32>,
    gpus: Vec<u64>,
    time_limit: Vec<Time>,
    partition_tier: Vec<u32>,
    qos: Vec<u32>,
    qos_priority: Vec<u32>,
    fairshare: Vec<f64>,
    user: Vec<u32>,
    account: Vec<u32>,
}

impl Default for PriorityBatch {
    fn default() -> Self {
        Self::new()
    }
}

/// The columns of a [`PriorityBatch`], for moving them in and out without copying.
/// `time_limit` is 0 for an unlimited job, as in the WIT.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PriorityColumns {
    /// Jobs in the batch: each column holds this many entries, or none.
    pub len: usize,
    pub job: Vec<JobId>,
    pub submit_time: Vec<Time>,
    pub age: Vec<Time>,
    pub cores: Vec<u64>,
    pub nodes: Vec<u32>,
    pub gpus: Vec<u64>,
    pub time_limit: Vec<Time>,
    pub partition_tier: Vec<u32>,
    pub qos: Vec<u32>,
    pub qos_priority: Vec<u32>,
    pub fairshare: Vec<f64>,
    pub user: Vec<u32>,
    pub account: Vec<u32>,
}

/// Runs `$do!(field, FLAG)` for every flagged column.
macro_rules! each_column {
    ($do:ident) => {
        $do!(job, JOB);
        $do!(submit_time, SUBMIT_TIME);
        $do!(age, AGE);
        $do!(cores, CORES);
        $do!(nodes, NODES);
        $do!(gpus, GPUS);
        $do!(time_limit, TIME_LIMIT);
        $do!(partition_tier, PARTITION_TIER);
        $do!(qos, QOS);
        $do!(qos_priority, QOS_PRIORITY);
        $do!(fairshare, FAIRSHARE);
        $do!(user, USER);
        $do!(account, ACCOUNT);
    };
}

macro_rules! column_accessors {
    ($($name:ident: $ty:ty),* $(,)?) => {
        $(
            #[doc = concat!("The `", stringify!($name), "` column (empty when the batch does not hold it).")]
            #[inline]
            pub fn $name(&self) -> &[$ty] {
                &self.$name
            }
        )*
    };
}

impl PriorityBatch {
    /// An empty batch holding every column.
    pub fn new() -> Self {
        Self::with_fields(PriorityFields::ALL)
    }

    /// An empty batch holding `fields`.
    pub fn with_fields(fields: PriorityFields) -> Self {
        Self {
            fields,
            len: 0,
            job: Vec::new(),
            submit_time: Vec::new(),
            age: Vec::new(),
            cores: Vec::new(),
            nodes: Vec::new(),
            gpus: Vec::new(),
            time_limit: Vec::new(),
            partition_tier: Vec::new(),
            qos: Vec::new(),
            qos_priority: Vec::new(),
            fairshare: Vec::new(),
            user: Vec::new(),
            account: Vec::new(),
        }
    }

    /// A batch from columns: each must have `len` entries (it is held) or none (it is
    /// not). `None` otherwise.
    pub fn from_columns(c: PriorityColumns) -> Option<Self> {
        let n = c.len;
        let mut fields = PriorityFields::NONE;
        macro_rules! check {
            ($col:ident, $flag:ident) => {
                if c.$col.len() == n {
                    fields = fields | PriorityFields::$flag;
                } else if !c.$col.is_empty() {
                    return None;
                }
            };
        }
        each_column!(check);
        Some(Self {
            fields,
            len: n,
            job: c.job,
            submit_time: c.submit_time,
            age: c.age,
            cores: c.cores,
            nodes: c.nodes,
            gpus: c.gpus,
            time_limit: c.time_limit,
            partition_tier: c.partition_tier,
            qos: c.qos,
            qos_priority: c.qos_priority,
            fairshare: c.fairshare,
            user: c.user,
            account: c.account,
        })
    }

    /// Gives the columns back (to reuse their buffers, or to lend them to a call).
    pub fn into_columns(self) -> PriorityColumns {
        PriorityColumns {
            len: self.len,
            job: self.job,
            submit_time: self.submit_time,
            age: self.age,
            cores: self.cores,
            nodes: self.nodes,
            gpus: self.gpus,
            time_limit: self.time_limit,
            partition_tier: self.partition_tier,
            qos: self.qos,
            qos_priority: self.qos_priority,
            fairshare: self.fairshare,
            user: self.user,
            account: self.account,
        }
    }

    /// The columns this batch holds.
    #[inline]
    pub fn fields(&self) -> PriorityFields {
        self.fields
    }

    /// Jobs in the batch, whichever columns it holds.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the batch, keeps the buffers, and from now on holds only `fields`.
    pub fn reset(&mut self, fields: PriorityFields) {
        self.fields = fields;
        self.len = 0;
        macro_rules! clear {
            ($col:ident, $flag:ident) => {
                self.$col.clear();
            };
        }
        each_column!(clear);
    }

    /// Appends a job; only the columns the batch holds take its values.
    pub fn push(&mut self, j: PriorityInput) {
        let time_limit = j.time_limit.unwrap_or(0).max(0);
        self.len += 1;
        macro_rules! push {
            ($col:ident, $flag:ident) => {
                if self.fields.contains(PriorityFields::$flag) {
                    self.$col.push(push!(@value $col));
                }
            };
            (@value time_limit) => { time_limit };
            (@value $col:ident) => { j.$col };
        }
        each_column!(push);
    }

    /// Job `i` as a record; fields of columns the batch does not hold are zero (and the
    /// time limit `None`).
    ///
    /// # Panics
    /// When `i >= self.len()`.
    #[inline]
    pub fn get(&self, i: usize) -> PriorityInput {
        assert!(i < self.len, "job {i} of a batch of {}", self.len);
        fn at<T: Copy + Default>(col: &[T], i: usize) -> T {
            col.get(i).copied().unwrap_or_default()
        }
        let t = at(&self.time_limit, i);
        PriorityInput {
            job: at(&self.job, i),
            submit_time: at(&self.submit_time, i),
            age: at(&self.age, i),
            cores: at(&self.cores, i),
            nodes: at(&self.nodes, i),
            gpus: at(&self.gpus, i),
            time_limit: (t > 0).then_some(t),
            partition_tier: at(&self.partition_tier, i),
            qos: at(&self.qos, i),
            qos_priority: at(&self.qos_priority, i),
            fairshare: at(&self.fairshare, i),
            user: at(&self.user, i),
            account: at(&self.account, i),
        }
    }

    /// The jobs as records, in batch order. Convenient; a policy that must be fast over
    /// 100,000 jobs reads the columns it uses instead.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = PriorityInput> + '_ {
        (0..self.len()).map(move |i| self.get(i))
    }

    column_accessors!(
        job: JobId,
        submit_time: Time,
        age: Time,
        cores: u64,
        nodes: u32,
        gpus: u64,
        time_limit: Time,
        partition_tier: u32,
        qos: u32,
        qos_priority: u32,
        fairshare: f64,
        user: u32,
        account: u32,
    );
}

impl FromIterator<PriorityInput> for PriorityBatch {
    fn from_iter<I: IntoIterator<Item = PriorityInput>>(jobs: I) -> Self {
        let mut b = Self::new();
        jobs.into_iter().for_each(|j| b.push(j));
        b
    }
}

impl From<&[PriorityInput]> for PriorityBatch {
    fn from(jobs: &[PriorityInput]) -> Self {
        jobs.iter().copied().collect()
    }
}

/// One node of the share tree: accounts first (0 is the root), then associations; a
/// child always comes after its parent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShareNode {
    /// Stable across cycles: accounts from 0, user associations from [`ASSOCIATION_IDS`].
    pub id: u32,
    /// Index of the parent in the same list.
    pub parent: Option<u32>,
    pub shares: u32,
    /// Undecayed core-seconds of this node and everything below it.
    pub usage: f64,
}

/// First [`ShareNode::id`] of user associations.
pub const ASSOCIATION_IDS: u32 = 1 << 31;

/// The share tree, column by column: entry `i` of every column is node `i`, in the
/// order of [`ShareNode`]. Columns because that is how the tree crosses into a
/// component: the kernel builds it this way, and neither side of a Wasm call transposes.
///
/// Invariant: the four columns have one entry per node. A root is its own parent.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareTree {
    id: Vec<u32>,
    parent: Vec<u32>,
    shares: Vec<u32>,
    usage: Vec<f64>,
}

impl ShareTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Empties the tree, keeping its buffers.
    pub fn clear(&mut self) {
        self.id.clear();
        self.parent.clear();
        self.shares.clear();
        self.usage.clear();
    }

    /// Appends a node; a node without a parent is a root.
    #[inline]
    pub fn push(&mut self, node: ShareNode) {
        let i = self.id.len() as u32;
        self.id.push(node.id);
        self.parent.push(node.parent.unwrap_or(i));
        self.shares.push(node.shares);
        self.usage.push(node.usage);
    }

    /// The tree from its columns (`parent` with roots as their own parents); `None`
    /// unless all four have the same length.
    pub fn from_columns(
        id: Vec<u32>,
        parent: Vec<u32>,
        shares: Vec<u32>,
        usage: Vec<f64>,
    ) -> Option<Self> {
        let n = id.len();
        (parent.len() == n && shares.len() == n && usage.len() == n).then_some(Self {
            id,
            parent,
            shares,
            usage,
        })
    }

    pub fn len(&self) -> usize {
        self.id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.id.is_empty()
    }

    /// [`ShareNode::id`] of every node.
    pub fn id(&self) -> &[u32] {
        &self.id
    }

    /// The parent's index of every node; a root is its own parent.
    pub fn parent(&self) -> &[u32] {
        &self.parent
    }

    pub fn shares(&self) -> &[u32] {
        &self.shares
    }

    /// Undecayed core-seconds of every node and everything below it.
    pub fn usage(&self) -> &[f64] {
        &self.usage
    }

    /// Usage to fill in after the nodes are pushed (the kernel adds running work, then
    /// [`ShareTree::roll_usage_up`]).
    pub fn usage_mut(&mut self) -> &mut [f64] {
        &mut self.usage
    }

    /// Adds every node's usage into its parent's, children first, so that a node's
    /// usage covers everything below it.
    pub fn roll_usage_up(&mut self) {
        roll_up(&self.parent, &mut self.usage);
    }

    /// Adds every node's entry of `values` (one per node) into its parent's, children
    /// first: what [`ShareTree::roll_usage_up`] does to usage, for a policy's own
    /// per-node figures (decayed usage, say).
    pub fn roll_up(&self, values: &mut [f64]) {
        roll_up(&self.parent, values);
    }

    /// Node `i`'s parent, if it has one that comes before it (as the tree's order
    /// promises); `None` for a root.
    pub fn parent_of(&self, i: usize) -> Option<usize> {
        let p = self.parent[i] as usize;
        (p < i).then_some(p)
    }

    /// Node `i` as a record, its parent as [`ShareTree::parent_of`] reads it.
    pub fn node(&self, i: usize) -> ShareNode {
        ShareNode {
            id: self.id[i],
            parent: self.parent_of(i).map(|p| p as u32),
            shares: self.shares[i],
            usage: self.usage[i],
        }
    }

    /// Every node as a record, in order.
    pub fn nodes(&self) -> impl Iterator<Item = ShareNode> + '_ {
        (0..self.len()).map(|i| self.node(i))
    }
}

/// Children come after their parents, so one backward pass carries every value to the
/// root. A parent that does not come before its child is no parent ([`ShareTree::parent_of`]).
fn roll_up(parent: &[u32], values: &mut [f64]) {
    for i in (0..parent.len().min(values.len())).rev() {
        let p = parent[i] as usize;
        if p < i {
            values[p] += values[i];
        }
    }
}

impl FromIterator<ShareNode> for ShareTree {
    fn from_iter<I: IntoIterator<Item = ShareNode>>(nodes: I) -> Self {
        let mut t = Self::new();
        nodes.into_iter().for_each(|n| t.push(n));
        t
    }
}

impl From<&[ShareNode]> for ShareTree {
    fn from(nodes: &[ShareNode]) -> Self {
        nodes.iter().copied().collect()
    }
}

/// What happens to a preempted job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
pub enum PreemptMode {
    /// End the job as PREEMPTED.
    #[default]
    Cancel,
    /// Put it back in the queue as REQUEUED.
    Requeue,
    /// Stop it as SUSPENDED, keeping its memory; it resumes when its cores and GPUs are
    /// free again.
    Suspend,
}

/// A running job the blocked job may preempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PreemptionCandidate {
    pub job: JobId,
    pub qos_priority: u32,
    pub partition_tier: u32,
    pub start_time: Time,
    pub cores: u64,
    pub gpus: u64,
    pub mode: PreemptMode,
}

/// A blocked job and what it could preempt.
#[derive(Debug, Clone, PartialEq)]
pub struct PreemptionQuery {
    pub job: JobId,
    pub qos_priority: u32,
    pub partition_tier: u32,
    pub cores: u64,
    pub gpus: u64,
    pub candidates: Vec<PreemptionCandidate>,
}

/// A victim chosen by a preemption policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Victim {
    pub job: JobId,
    pub mode: PreemptMode,
}

/// A node that can hold (part of) a job now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub node: u32,
    /// Tasks this node can take (1 for jobs with a fixed node count).
    pub units: u32,
    pub gpu_links: u32,
    pub numa_domains: u32,
    pub free_cores_after: u32,
    pub free_gpus_after: u32,
}

/// A job about to start and its candidate nodes: one job of a [`PlacementBatch`], as a
/// record (to build batches in tests and tools; `PlacementBatch` collects them).
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementQuery {
    pub job: JobId,
    pub units_needed: u32,
    pub gpus_per_node: u32,
    pub candidates: Vec<Candidate>,
}

/// One placement batch as columns (the WIT `placement-batch`): per job `job`,
/// `units_needed` and `gpus_per_node`; per candidate node the [`Candidate`] fields; job
/// `q`'s candidates are entries `first_candidate[q]..first_candidate[q + 1]` of the
/// candidate columns.
///
/// Columns because the kernel builds a batch at every start and a component takes each
/// column as one copy; a policy reads them in place (see [`Self::candidates`]).
///
/// Invariant: the three job columns have one length `n`; `first_candidate` has `n + 1`
/// entries, starts at 0, never decreases and ends at the length shared by the six
/// candidate columns. The fields are private so that only [`Self::push`] and
/// [`Self::from_columns`] (which checks) can build one.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementBatch {
    job: Vec<JobId>,
    units_needed: Vec<u32>,
    gpus_per_node: Vec<u32>,
    first_candidate: Vec<u32>,
    node: Vec<u32>,
    units: Vec<u32>,
    gpu_links: Vec<u32>,
    numa_domains: Vec<u32>,
    free_cores_after: Vec<u32>,
    free_gpus_after: Vec<u32>,
}

/// The columns of a [`PlacementBatch`], for moving them in and out without copying.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PlacementColumns {
    pub job: Vec<JobId>,
    pub units_needed: Vec<u32>,
    pub gpus_per_node: Vec<u32>,
    pub first_candidate: Vec<u32>,
    pub node: Vec<u32>,
    pub units: Vec<u32>,
    pub gpu_links: Vec<u32>,
    pub numa_domains: Vec<u32>,
    pub free_cores_after: Vec<u32>,
    pub free_gpus_after: Vec<u32>,
}

impl Default for PlacementBatch {
    fn default() -> Self {
        Self::new()
    }
}

impl PlacementBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self {
            job: Vec::new(),
            units_needed: Vec::new(),
            gpus_per_node: Vec::new(),
            first_candidate: alloc::vec![0],
            node: Vec::new(),
            units: Vec::new(),
            gpu_links: Vec::new(),
            numa_domains: Vec::new(),
            free_cores_after: Vec::new(),
            free_gpus_after: Vec::new(),
        }
    }

    /// Empties the batch, keeping its buffers.
    pub fn clear(&mut self) {
        let c = &mut self.first_candidate;
        c.clear();
        c.push(0);
        for col in [
            &mut self.units_needed,
            &mut self.gpus_per_node,
            &mut self.node,
            &mut self.units,
            &mut self.gpu_links,
            &mut self.numa_domains,
            &mut self.free_cores_after,
            &mut self.free_gpus_after,
        ] {
            col.clear();
        }
        self.job.clear();
    }

    /// Adds a job and its candidates.
    pub fn push(
        &mut self,
        job: JobId,
        units_needed: u32,
        gpus_per_node: u32,
        candidates: impl IntoIterator<Item = Candidate>,
    ) {
        self.job.push(job);
        self.units_needed.push(units_needed);
        self.gpus_per_node.push(gpus_per_node);
        for c in candidates {
            self.node.push(c.node);
            self.units.push(c.units);
            self.gpu_links.push(c.gpu_links);
            self.numa_domains.push(c.numa_domains);
            self.free_cores_after.push(c.free_cores_after);
            self.free_gpus_after.push(c.free_gpus_after);
        }
        self.first_candidate.push(self.node.len() as u32);
    }

    /// A batch from columns; `None` unless they keep the invariant (see the type).
    pub fn from_columns(c: PlacementColumns) -> Option<Self> {
        let (n, m) = (c.job.len(), c.node.len());
        let per_job = [c.units_needed.len(), c.gpus_per_node.len()];
        let per_candidate = [
            c.units.len(),
            c.gpu_links.len(),
            c.numa_domains.len(),
            c.free_cores_after.len(),
            c.free_gpus_after.len(),
        ];
        if per_job.iter().any(|&l| l != n)
            || per_candidate.iter().any(|&l| l != m)
            || !offsets_split(&c.first_candidate, n, m)
        {
            return None;
        }
        Some(Self {
            job: c.job,
            units_needed: c.units_needed,
            gpus_per_node: c.gpus_per_node,
            first_candidate: c.first_candidate,
            node: c.node,
            units: c.units,
            gpu_links: c.gpu_links,
            numa_domains: c.numa_domains,
            free_cores_after: c.free_cores_after,
            free_gpus_after: c.free_gpus_after,
        })
    }

    /// Gives the columns back (to reuse their buffers, or to lend them to a call).
    pub fn into_columns(self) -> PlacementColumns {
        PlacementColumns {
            job: self.job,
            units_needed: self.units_needed,
            gpus_per_node: self.gpus_per_node,
            first_candidate: self.first_candidate,
            node: self.node,
            units: self.units,
            gpu_links: self.gpu_links,
            numa_domains: self.numa_domains,
            free_cores_after: self.free_cores_after,
            free_gpus_after: self.free_gpus_after,
        }
    }

    /// Jobs in the batch.
    pub fn len(&self) -> usize {
        self.job.len()
    }

    pub fn is_empty(&self) -> bool {
        self.job.is_empty()
    }

    /// Where job `q`'s candidates are in the candidate columns.
    pub fn candidates(&self, q: usize) -> core::ops::Range<usize> {
        self.first_candidate[q] as usize..self.first_candidate[q + 1] as usize
    }

    /// Candidate `i` of the candidate columns (not of one job: see [`Self::candidates`]).
    pub fn candidate(&self, i: usize) -> Candidate {
        Candidate {
            node: self.node[i],
            units: self.units[i],
            gpu_links: self.gpu_links[i],
            numa_domains: self.numa_domains[i],
            free_cores_after: self.free_cores_after[i],
            free_gpus_after: self.free_gpus_after[i],
        }
    }

    column_accessors!(
        job: JobId,
        units_needed: u32,
        gpus_per_node: u32,
        first_candidate: u32,
        node: u32,
        units: u32,
        gpu_links: u32,
        numa_domains: u32,
        free_cores_after: u32,
        free_gpus_after: u32,
    );
}

impl FromIterator<PlacementQuery> for PlacementBatch {
    fn from_iter<I: IntoIterator<Item = PlacementQuery>>(queries: I) -> Self {
        let mut b = Self::new();
        for q in queries {
            b.push(q.job, q.units_needed, q.gpus_per_node, q.candidates);
        }
        b
    }
}

/// Placement's answer (the WIT `placement-ranking`): for each job of the batch, indices
/// into its own candidates (0 is its first), best first; job `q`'s are entries
/// `first[q]..first[q + 1]` of `ranked`.
///
/// A ranking may stop early: the candidates it leaves out are tried after it in the
/// kernel's order (ascending index). So an empty ranking means "the kernel's order", and
/// a policy need only answer the part of its order that differs from the kernel's
/// ([`Self::order`] gives the whole order either way).
///
/// Invariant: `first` starts at 0, never decreases and ends at `ranked.len()`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlacementRanking {
    ranked: Vec<u32>,
    first: Vec<u32>,
}

impl Default for PlacementRanking {
    fn default() -> Self {
        Self::new()
    }
}

impl PlacementRanking {
    /// No rankings yet.
    pub fn new() -> Self {
        Self {
            ranked: Vec::new(),
            first: alloc::vec![0],
        }
    }

    /// Room for `jobs` rankings of `indices` indices in all.
    pub fn with_capacity(jobs: usize, indices: usize) -> Self {
        let mut first = Vec::with_capacity(jobs + 1);
        first.push(0);
        Self {
            ranked: Vec::with_capacity(indices),
            first,
        }
    }

    /// Adds the next job's ranking.
    pub fn push(&mut self, ranking: impl IntoIterator<Item = u32>) {
        self.ranked.extend(ranking);
        self.first.push(self.ranked.len() as u32);
    }

    /// The last job's ranking, to reorder in place after [`Self::push`].
    pub fn last_mut(&mut self) -> &mut [u32] {
        let from = self.first[self.first.len().saturating_sub(2)] as usize;
        &mut self.ranked[from..]
    }

    /// From its two lists; `None` unless they hold `jobs` rankings (see the type).
    pub fn from_parts(ranked: Vec<u32>, first: Vec<u32>, jobs: usize) -> Option<Self> {
        offsets_split(&first, jobs, ranked.len()).then_some(Self { ranked, first })
    }

    /// The two lists, `(ranked, first)`.
    pub fn into_parts(self) -> (Vec<u32>, Vec<u32>) {
        (self.ranked, self.first)
    }

    /// Jobs ranked.
    pub fn len(&self) -> usize {
        self.first.len() - 1
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Job `q`'s ranking.
    pub fn get(&self, q: usize) -> &[u32] {
        &self.ranked[self.first[q] as usize..self.first[q + 1] as usize]
    }

    /// Every job's ranking, in batch order.
    pub fn iter(&self) -> impl Iterator<Item = &[u32]> + '_ {
        (0..self.len()).map(|q| self.get(q))
    }

    /// The order in which job `q`'s `candidates` candidates are tried: its ranking, then
    /// the indices it leaves out in the kernel's order. This is the one place that says
    /// what a short ranking means; the kernel commits in this order. Indices repeated or
    /// out of range in the ranking (which [`Self::check`] would refuse) are kept as they
    /// are. A ranking is short (a few indices), so what it holds is looked up in it.
    pub fn order(&self, q: usize, candidates: usize) -> impl Iterator<Item = u32> + '_ {
        let ranked = self.get(q);
        ranked
            .iter()
            .copied()
            .chain((0..candidates as u32).filter(move |i| !ranked.contains(i)))
    }

    /// The candidate job `q` tries first: the first it ranks, or the kernel's first (0)
    /// when its ranking is empty; `None` when it has no candidates.
    pub fn first_choice(&self, q: usize, candidates: usize) -> Option<u32> {
        self.order(q, candidates).next()
    }

    /// Whether this answers `batch`: one ranking per job, every index within that job's
    /// candidates. The error says what is wrong, for logs and test failures.
    pub fn check(&self, batch: &PlacementBatch) -> Result<(), String> {
        if self.len() != batch.len() {
            return Err(alloc::format!(
                "{} rankings for {} jobs",
                self.len(),
                batch.len()
            ));
        }
        for (q, ranking) in self.iter().enumerate() {
            let n = batch.candidates(q).len();
            // Tested without an early exit (this runs on every placement answer, a few
            // indices per job); the offending index is looked for only on failure.
            if ranking
                .iter()
                .fold(false, |out, &i| out | (i as usize >= n))
            {
                let i = ranking.iter().find(|&&i| i as usize >= n).map_or(0, |&i| i);
                return Err(alloc::format!(
                    "candidate index {i} out of range for job {} ({n} candidates)",
                    batch.job[q]
                ));
            }
        }
        Ok(())
    }
}

/// Whether `first` splits `total` entries into `parts` consecutive pieces.
fn offsets_split(first: &[u32], parts: usize, total: usize) -> bool {
    first.len() == parts + 1
        && first.first() == Some(&0)
        && first.last().map(|&l| l as usize) == Some(total)
        && first.windows(2).all(|w| w[0] <= w[1])
}

/// Every policy: a name, and a configuration it may refuse.
pub trait Policy {
    fn info(&self) -> PolicyInfo;
    /// Takes the configuration text (TOML for the built-ins; empty for defaults).
    fn init(&mut self, config: &str) -> Result<(), String>;
}

/// Orders the queue: one priority per job, higher first.
pub trait Priority: Policy {
    /// The columns [`Self::prioritize`] reads; the others arrive empty. Asked after
    /// each successful `init`, so it may depend on the configuration.
    fn fields(&self) -> PriorityFields {
        PriorityFields::ALL
    }
    fn prioritize(&mut self, now: Time, jobs: &PriorityBatch) -> Vec<i64>;
    /// The priorities of `jobs` broken into weighted factors, for `sprio`: each job's
    /// priority should read as the sum of `weight × value` over the factors. Asked only
    /// on demand, never by the cycle. The default explains nothing (sprio then shows
    /// the priorities alone).
    fn explain(&mut self, now: Time, jobs: &PriorityBatch) -> Vec<PriorityFactor> {
        let _ = (now, jobs);
        Vec::new()
    }
}

/// One factor of the priorities of a batch (see `priority-factor` in the WIT).
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityFactor {
    /// Upper case, as sprio's columns: `AGE`, `FAIRSHARE`, `JOBSIZE`, `PARTITION`,
    /// `QOS` for the factors Slurm has, or the policy's own.
    pub name: String,
    /// What the policy multiplies the factor by.
    pub weight: f64,
    /// The factor of each job of the batch, in the batch's order.
    pub values: Vec<f64>,
}

/// One factor in `[0, 1]` per share-tree node.
pub trait Fairshare: Policy {
    fn factors(&mut self, now: Time, tree: &ShareTree) -> Vec<f64>;
}

/// Victims per query; empty means "do not preempt for this job".
pub trait Preemption: Policy {
    fn select(&mut self, now: Time, batch: &[PreemptionQuery]) -> Vec<Vec<Victim>>;
}

/// Candidate indices per job, best first.
pub trait Placement: Policy {
    fn rank(&mut self, batch: &PlacementBatch) -> PlacementRanking;
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn job(id: JobId) -> PriorityInput {
        PriorityInput {
            job: id,
            submit_time: 10 * id as i64,
            age: 5,
            cores: 4,
            nodes: 1,
            gpus: 2,
            time_limit: None,
            partition_tier: 1,
            qos: 3,
            qos_priority: 30,
            fairshare: 0.25,
            user: 7,
            account: 8,
        }
    }

    #[test]
    fn share_tree_columns_keep_the_nodes() {
        let nodes = [
            ShareNode {
                id: 0,
                parent: None,
                shares: 1,
                usage: 5.0,
            },
            ShareNode {
                id: 7,
                parent: Some(0),
                shares: 3,
                usage: 5.0,
            },
            ShareNode {
                id: ASSOCIATION_IDS,
                parent: Some(1),
                shares: 1,
                usage: 5.0,
            },
        ];
        let tree = ShareTree::from(&nodes[..]);
        assert_eq!(tree.parent(), &[0, 0, 1], "a root is its own parent");
        assert_eq!(tree.nodes().collect::<Vec<_>>(), nodes);
        assert_eq!(
            (0..3).map(|i| tree.parent_of(i)).collect::<Vec<_>>(),
            vec![None, Some(0), Some(1)]
        );
        let same = ShareTree::from_columns(
            tree.id().to_vec(),
            tree.parent().to_vec(),
            tree.shares().to_vec(),
            tree.usage().to_vec(),
        );
        assert_eq!(same.as_ref(), Some(&tree));
        let mut rolled = tree.clone();
        rolled.roll_usage_up();
        assert_eq!(
            rolled.usage(),
            &[15.0, 10.0, 5.0],
            "each node covers its subtree"
        );
        assert!(ShareTree::from_columns(vec![0], vec![], vec![1], vec![0.0]).is_none());
        // A parent that does not come before its child is no parent, whether asked for
        // the parent or for the node.
        let odd =
            ShareTree::from_columns(vec![0, 1], vec![1, 1], vec![1, 1], vec![0.0; 2]).unwrap();
        assert_eq!(odd.parent_of(0), None);
        assert_eq!(odd.node(0).parent, None);
    }

    #[test]
    fn a_batch_holds_only_its_fields_and_reads_others_as_zero() {
        let mut b = PriorityBatch::with_fields(PriorityFields::AGE | PriorityFields::GPUS);
        b.push(job(1));
        b.push(job(2));
        assert_eq!(b.len(), 2, "the length does not depend on the job column");
        assert!(b.job().is_empty(), "job ids are a column like the others");
        assert_eq!(b.age(), &[5, 5]);
        assert_eq!(b.gpus(), &[2, 2]);
        assert!(b.submit_time().is_empty() && b.fairshare().is_empty());
        let j = b.get(1);
        assert_eq!(
            (j.job, j.age, j.gpus, j.cores, j.fairshare),
            (0, 5, 2, 0, 0.0)
        );

        b.reset(PriorityFields::ALL);
        assert!(b.is_empty());
        b.push(job(3));
        assert_eq!(b.get(0), job(3));
        assert_eq!(b.iter().collect::<Vec<_>>(), vec![job(3)]);
    }

    #[test]
    fn columns_must_be_full_or_empty() {
        let mut c = PriorityColumns {
            len: 2,
            age: vec![1, 2],
            ..Default::default()
        };
        let b = PriorityBatch::from_columns(c.clone()).unwrap();
        assert_eq!((b.len(), b.fields()), (2, PriorityFields::AGE));
        c.job = vec![7, 8];
        let b = PriorityBatch::from_columns(c.clone()).unwrap();
        assert_eq!(b.fields(), PriorityFields::AGE | PriorityFields::JOB);
        assert_eq!(b.get(1).job, 8);
        c.cores = vec![4];
        assert_eq!(PriorityBatch::from_columns(c), None);
        // With no jobs every column is complete.
        let empty = PriorityBatch::from_columns(PriorityColumns::default()).unwrap();
        assert_eq!(empty.fields(), PriorityFields::ALL);
    }

    #[test]
    fn fields_are_a_set() {
        let f = PriorityFields::AGE | PriorityFields::CORES;
        assert!(f.contains(PriorityFields::AGE));
        assert!(!f.contains(PriorityFields::AGE | PriorityFields::QOS));
        assert!(PriorityFields::ALL.contains(f));
        assert_eq!(PriorityFields::from_bits(u16::MAX), PriorityFields::ALL);
        assert_eq!(PriorityFields::default(), PriorityFields::ALL);
    }

    fn cand(node: u32) -> Candidate {
        Candidate {
            node,
            units: 1,
            gpu_links: 0,
            numa_domains: 1,
            free_cores_after: 0,
            free_gpus_after: 0,
        }
    }

    #[test]
    fn a_placement_batch_keeps_each_jobs_candidates_together() {
        let b: PlacementBatch = [
            PlacementQuery {
                job: 7,
                units_needed: 2,
                gpus_per_node: 0,
                candidates: vec![cand(3), cand(4)],
            },
            PlacementQuery {
                job: 8,
                units_needed: 1,
                gpus_per_node: 1,
                candidates: vec![],
            },
            PlacementQuery {
                job: 9,
                units_needed: 1,
                gpus_per_node: 0,
                candidates: vec![cand(5)],
            },
        ]
        .into_iter()
        .collect();
        assert_eq!(b.len(), 3);
        assert_eq!(b.first_candidate(), &[0, 2, 2, 3]);
        assert_eq!(b.candidates(0), 0..2);
        assert!(b.candidates(1).is_empty());
        assert_eq!(b.candidate(b.candidates(2).start), cand(5));
        let again = PlacementBatch::from_columns(b.clone().into_columns()).unwrap();
        assert_eq!(again, b);
        let mut cleared = b;
        cleared.clear();
        assert_eq!(cleared, PlacementBatch::new());
    }

    #[test]
    fn malformed_placement_columns_are_refused() {
        let good = PlacementColumns {
            job: vec![1, 2],
            units_needed: vec![1, 1],
            gpus_per_node: vec![0, 0],
            first_candidate: vec![0, 1, 2],
            node: vec![5, 6],
            units: vec![1, 1],
            gpu_links: vec![0, 0],
            numa_domains: vec![1, 1],
            free_cores_after: vec![0, 0],
            free_gpus_after: vec![0, 0],
        };
        assert!(PlacementBatch::from_columns(good.clone()).is_some());
        let broken = [
            PlacementColumns {
                units_needed: vec![1],
                ..good.clone()
            },
            PlacementColumns {
                gpu_links: vec![0],
                ..good.clone()
            },
            PlacementColumns {
                first_candidate: vec![0, 2, 1],
                ..good.clone()
            },
            PlacementColumns {
                first_candidate: vec![0, 1],
                ..good.clone()
            },
            PlacementColumns {
                first_candidate: vec![1, 1, 2],
                ..good.clone()
            },
            PlacementColumns {
                first_candidate: vec![0, 1, 3],
                ..good
            },
        ];
        for c in broken {
            assert_eq!(PlacementBatch::from_columns(c.clone()), None, "{c:?}");
        }
    }

    #[test]
    fn a_flat_ranking_splits_per_job() {
        let r = PlacementRanking::from_parts(vec![1, 0, 2, 0], vec![0, 3, 3, 4], 3).unwrap();
        assert_eq!(
            r.iter().collect::<Vec<_>>(),
            vec![&[1, 0, 2][..], &[], &[0]]
        );
        let mut built = PlacementRanking::new();
        built.push([2, 0, 1]);
        built
            .last_mut()
            .sort_unstable_by_key(|&i| [1u32, 0, 2][i as usize]);
        built.push([]);
        built.push([0]);
        assert_eq!(built, r);
        assert_eq!(
            PlacementRanking::from_parts(vec![], vec![0], 0),
            Some(PlacementRanking::new())
        );
    }

    #[test]
    fn a_short_ranking_is_followed_by_the_rest_in_the_kernels_order() {
        let r = PlacementRanking::from_parts(vec![3, 1, 2], vec![0, 2, 2, 3], 3).unwrap();
        let order = |q, n| r.order(q, n).collect::<Vec<_>>();
        assert_eq!(order(0, 5), [3, 1, 0, 2, 4]);
        assert_eq!(order(1, 3), [0, 1, 2], "empty: the kernel's order");
        assert_eq!(order(2, 3), [2, 0, 1]);
        assert_eq!(
            (
                r.first_choice(0, 5),
                r.first_choice(1, 3),
                r.first_choice(1, 0)
            ),
            (Some(3), Some(0), None)
        );
    }

    #[test]
    fn a_ranking_fits_its_batch_only_with_one_ranking_per_job_and_indices_in_range() {
        let batch: PlacementBatch = [(7, 2), (8, 0)]
            .into_iter()
            .map(|(job, n)| PlacementQuery {
                job,
                units_needed: 1,
                gpus_per_node: 0,
                candidates: (0..n).map(cand).collect(),
            })
            .collect();
        let ranking = |rs: &[&[u32]]| {
            let mut r = PlacementRanking::new();
            for x in rs {
                r.push(x.iter().copied());
            }
            r
        };
        assert_eq!(ranking(&[&[1, 0], &[]]).check(&batch), Ok(()));
        assert_eq!(
            ranking(&[&[1]]).check(&batch).unwrap_err(),
            "1 rankings for 2 jobs"
        );
        assert!(ranking(&[&[2], &[]])
            .check(&batch)
            .unwrap_err()
            .contains("index 2 out of range for job 7"));
        assert!(ranking(&[&[0], &[0]])
            .check(&batch)
            .unwrap_err()
            .contains("job 8 (0 candidates)"));
    }

    #[test]
    fn offsets_that_do_not_split_the_ranking_are_refused() {
        let ranked = vec![1, 0, 2, 0];
        for first in [
            &[0, 3, 4][..], // one job too few
            &[1, 3, 3, 4],  // does not start at 0
            &[0, 3, 2, 4],  // goes backwards
            &[0, 3, 3, 5],  // runs past the end
            &[0, 3, 3, 3],  // leaves entries over
            &[],            // nothing at all
        ] {
            assert_eq!(
                PlacementRanking::from_parts(ranked.clone(), first.to_vec(), 3),
                None,
                "{first:?}"
            );
        }
    }
}
