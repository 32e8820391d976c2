//! # gantry-abi
//!
//! The records of the policy ABI (`wit/policy.wit`, package `gantry:policy@0.2.0`) as plain
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

/// One waiting job, as the priority policy sees it (see `priority-input` in the WIT).
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

/// A set of [`PriorityBatch`] columns (see `priority-fields` in the WIT). The job id
/// column is always present and has no flag.
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
    pub const ALL: Self = Self((1 << 12) - 1);

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
/// Invariant: the job column and every column in [`Self::fields`] have the same length;
/// every other column is empty. The fields are private so that only [`Self::push`] and
/// [`Self::from_columns`] (which checks) can build one.
#[derive(Debug, Clone, PartialEq)]
pub struct PriorityBatch {
    fields: PriorityFields,
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

    /// An empty batch holding the job column and `fields`.
    pub fn with_fields(fields: PriorityFields) -> Self {
        Self {
            fields,
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

    /// A batch from columns: the job column sets the length, and every other column
    /// must be that long (it is held) or empty (it is not). `None` otherwise.
    pub fn from_columns(c: PriorityColumns) -> Option<Self> {
        let n = c.job.len();
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

    /// The columns this batch holds besides the job ids.
    #[inline]
    pub fn fields(&self) -> PriorityFields {
        self.fields
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.job.len()
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.job.is_empty()
    }

    /// Empties the batch, keeps the buffers, and from now on holds only `fields`.
    pub fn reset(&mut self, fields: PriorityFields) {
        self.fields = fields;
        self.job.clear();
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
        self.job.push(j.job);
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
        fn at<T: Copy + Default>(col: &[T], i: usize) -> T {
            col.get(i).copied().unwrap_or_default()
        }
        let t = at(&self.time_limit, i);
        PriorityInput {
            job: self.job[i],
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

/// A job about to start and its candidate nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementQuery {
    pub job: JobId,
    pub units_needed: u32,
    pub gpus_per_node: u32,
    pub candidates: Vec<Candidate>,
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
}

/// One factor in `[0, 1]` per share-tree node.
pub trait Fairshare: Policy {
    fn factors(&mut self, now: Time, tree: &[ShareNode]) -> Vec<f64>;
}

/// Victims per query; empty means "do not preempt for this job".
pub trait Preemption: Policy {
    fn select(&mut self, now: Time, batch: &[PreemptionQuery]) -> Vec<Vec<Victim>>;
}

/// Candidate indices per query, best first.
pub trait Placement: Policy {
    fn rank(&mut self, batch: &[PlacementQuery]) -> Vec<Vec<u32>>;
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
    fn a_batch_holds_only_its_fields_and_reads_others_as_zero() {
        let mut b = PriorityBatch::with_fields(PriorityFields::AGE | PriorityFields::GPUS);
        b.push(job(1));
        b.push(job(2));
        assert_eq!(b.job(), &[1, 2]);
        assert_eq!(b.age(), &[5, 5]);
        assert_eq!(b.gpus(), &[2, 2]);
        assert!(b.submit_time().is_empty() && b.fairshare().is_empty());
        let j = b.get(1);
        assert_eq!(
            (j.job, j.age, j.gpus, j.cores, j.fairshare),
            (2, 5, 2, 0, 0.0)
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
            job: vec![1, 2],
            age: vec![1, 2],
            ..Default::default()
        };
        let b = PriorityBatch::from_columns(c.clone()).unwrap();
        assert_eq!(b.fields(), PriorityFields::AGE);
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
}
