//! Advance reservations: nodes set aside over a time window for some users or accounts
//! (`scontrol create reservation`), for maintenance or for a team's run.
//!
//! Invariants the cycle keeps (see `cycle`): a job outside a reservation never starts on
//! its nodes where its run (start to time limit) would overlap the reservation's window,
//! and backfill plans around the window as around any other reservation; a job inside
//! one (`--reservation`) starts only while the window is open and only on its nodes.
//!
//! What is decided here is pure: [`Scheduler::plan_reservation`] checks a request and
//! picks its nodes without changing anything, so the daemon can log the resolved
//! reservation before it is applied, and a restart applies the same record.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::cluster::{NodeId, PartitionId};
use crate::job::Job;
use crate::scheduler::Scheduler;
use crate::units::Time;

/// An advance reservation: an index into the scheduler's reservations, never reused (a
/// deleted reservation's slot stays empty).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ResvId(pub u32);

impl ResvId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// `Flags=` of a reservation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationFlags {
    /// Maintenance: nodes show as `maint`; may overlap other reservations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maint: bool,
    /// Created over nodes whose running jobs may run into the window.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub ignore_jobs: bool,
    /// May share nodes and time with other reservations.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub overlap: bool,
}

impl ReservationFlags {
    /// Parses Slurm's comma-separated flag list (case-insensitive).
    pub fn parse(text: &str) -> Result<Self, ReservationError> {
        let mut f = Self::default();
        for word in text.split(',').map(str::trim).filter(|w| !w.is_empty()) {
            match word.to_ascii_uppercase().as_str() {
                "MAINT" => f.maint = true,
                "IGNORE_JOBS" => f.ignore_jobs = true,
                "OVERLAP" => f.overlap = true,
                // Slurm sets it whenever nodes are named; it changes nothing here.
                "SPEC_NODES" => {}
                other => {
                    return Err(ReservationError::Invalid(format!(
                        "unsupported reservation flag '{other}' (supported: MAINT, IGNORE_JOBS, OVERLAP)"
                    )))
                }
            }
        }
        Ok(f)
    }

    /// Slurm's display (`MAINT,IGNORE_JOBS`), or `(null)`-free empty string.
    pub fn display(self) -> String {
        let mut v = Vec::new();
        if self.maint {
            v.push("MAINT");
        }
        if self.ignore_jobs {
            v.push("IGNORE_JOBS");
        }
        if self.overlap {
            v.push("OVERLAP");
        }
        v.join(",")
    }
}

/// Which nodes a reservation request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSelection {
    /// `Nodes=a,b`: exactly these.
    Named(Vec<NodeId>),
    /// `Nodes=ALL`: every node (of the partition, when one is given).
    All,
    /// `NodeCnt=N`: any N nodes free over the window (of the partition, when given).
    Count(u32),
}

/// A reservation as asked for, before nodes are chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReservationRequest {
    pub name: String,
    pub start: Time,
    pub end: Time,
    pub nodes: NodeSelection,
    pub partition: Option<PartitionId>,
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub flags: ReservationFlags,
}

/// A reservation: `nodes` are set aside over `[start, end)` for jobs that name it and
/// whose user and account it admits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdvanceReservation {
    pub name: String,
    pub start: Time,
    pub end: Time,
    /// Sorted.
    pub nodes: Vec<NodeId>,
    pub partition: Option<PartitionId>,
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub flags: ReservationFlags,
}

impl AdvanceReservation {
    /// Open at `now`.
    pub fn is_active(&self, now: Time) -> bool {
        self.start <= now && now < self.end
    }

    /// Whether `user` in `account` may run jobs in it: every list given must name them
    /// (Slurm's rule when both users and accounts are given).
    pub fn admits(&self, user: &str, account: &str) -> bool {
        (self.users.is_empty() || self.users.iter().any(|u| u == user))
            && (self.accounts.is_empty() || self.accounts.iter().any(|a| a == account))
    }

    fn overlaps(&self, start: Time, end: Time) -> bool {
        start < self.end && self.start < end
    }
}

/// Why a reservation request was refused; the messages are Slurm's where it has one.
#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum ReservationError {
    #[error("Reservation request invalid: {0}")]
    Invalid(String),
    #[error("Reservation {0} already exists")]
    NameTaken(String),
    #[error("Reservation {0} not found")]
    NotFound(String),
    #[error("Requested nodes are busy: {0}")]
    Busy(String),
}

/// The longest reservation name and the most users or accounts one may list.
pub const MAX_NAME_BYTES: usize = 128;
pub const MAX_LISTED: usize = 256;

impl Scheduler {
    /// The reservation called `name`, if any.
    pub fn reservation_by_name(&self, name: &str) -> Option<ResvId> {
        self.reservations
            .iter()
            .position(|r| r.as_ref().is_some_and(|r| r.name == name))
            .map(|i| ResvId(i as u32))
    }

    pub fn reservation(&self, id: ResvId) -> Option<&AdvanceReservation> {
        self.reservations.get(id.index())?.as_ref()
    }

    /// When a run that would otherwise end at `end` (`None`: never) must end: at the end
    /// of its advance reservation `resv` if that comes first (the run is ended there).
    pub fn end_within_reservation(&self, resv: Option<ResvId>, end: Option<Time>) -> Option<Time> {
        let cap = resv.and_then(|r| self.reservation(r)).map(|r| r.end);
        match (end, cap) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// When running job `job`'s run must end: at its time limit (suspensions added), or
    /// when its advance reservation ends if that comes first; `None`: never.
    pub fn run_end(&self, job: &Job) -> Option<Time> {
        self.end_within_reservation(job.reservation, job.expected_end())
    }

    /// Every reservation, by start time.
    pub fn reservations(&self) -> Vec<(ResvId, &AdvanceReservation)> {
        let mut v: Vec<(ResvId, &AdvanceReservation)> = self
            .reservations
            .iter()
            .enumerate()
            .filter_map(|(i, r)| Some((ResvId(i as u32), r.as_ref()?)))
            .collect();
        v.sort_by(|a, b| (a.1.start, &a.1.name).cmp(&(b.1.start, &b.1.name)));
        v
    }

    /// Checks a request against the cluster and the other reservations and picks its
    /// nodes; changes nothing. `replacing` is the reservation an update changes (its own
    /// window does not count as a conflict).
    pub fn plan_reservation(
        &self,
        req: &ReservationRequest,
        now: Time,
        replacing: Option<ResvId>,
    ) -> Result<AdvanceReservation, ReservationError> {
        let invalid = |m: &str| Err(ReservationError::Invalid(m.to_string()));
        if req.name.is_empty()
            || req.name.len() > MAX_NAME_BYTES
            || !req
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
        {
            return invalid(&format!(
                "a reservation name is 1 to {MAX_NAME_BYTES} letters, digits, '_', '-' or '.'"
            ));
        }
        if let Some(other) = self.reservation_by_name(&req.name) {
            if Some(other) != replacing {
                return Err(ReservationError::NameTaken(req.name.clone()));
            }
        }
        if req.end <= req.start {
            return invalid("the end time must be after the start time");
        }
        if req.end <= now {
            return invalid("the reservation would already have ended");
        }
        if req.end - req.start > crate::units::MAX_DURATION {
            return invalid("a reservation may last at most a century");
        }
        if req.users.is_empty() && req.accounts.is_empty() {
            return invalid("Users or Accounts must be specified");
        }
        if req.users.len() > MAX_LISTED || req.accounts.len() > MAX_LISTED {
            return invalid(&format!(
                "at most {MAX_LISTED} users and {MAX_LISTED} accounts"
            ));
        }
        for a in &req.accounts {
            if self.cluster().account_by_name(a).is_none() {
                return invalid(&format!("unknown account '{a}'"));
            }
        }
        let cluster = self.cluster();
        let pool: Vec<NodeId> = match req.partition {
            Some(p) => cluster.partition(p).nodes.clone(),
            None => cluster.nodes.iter().map(|n| n.id).collect(),
        };
        // Per node: in another reservation over our window (unless one of us may
        // overlap), and running a job that may still run at our start (no limit, or one
        // past it) other than our own. Each computed in one pass, so a request over a
        // large cluster costs nodes + jobs, not their product.
        let mut reserved = vec![false; cluster.nodes.len()];
        if !(req.flags.overlap || req.flags.maint) {
            for (i, r) in self.reservations.iter().enumerate() {
                let Some(r) = r else { continue };
                if Some(ResvId(i as u32)) != replacing
                    && !(r.flags.overlap || r.flags.maint)
                    && r.overlaps(req.start, req.end)
                {
                    for &n in &r.nodes {
                        reserved[n.index()] = true;
                    }
                }
            }
        }
        let mut busy = vec![false; cluster.nodes.len()];
        if !req.flags.ignore_jobs {
            for j in self.running().iter().filter_map(|&j| self.job(j)) {
                if (replacing.is_none() || j.reservation != replacing)
                    && j.expected_end().is_none_or(|e| e > req.start)
                {
                    for a in j.allocation.iter().flat_map(|a| &a.nodes) {
                        busy[a.node.index()] = true;
                    }
                }
            }
        }
        let reserved_elsewhere = |n: NodeId| reserved[n.index()];
        let busy_with_jobs = |n: NodeId| busy[n.index()];
        // Nodes named (or all): every one must be free of both.
        let all_free = |nodes: &[NodeId]| -> Result<(), ReservationError> {
            if let Some(&n) = nodes.iter().find(|&&n| reserved_elsewhere(n)) {
                return Err(ReservationError::Busy(format!(
                    "{} is in another reservation over that time",
                    cluster.node(n).name
                )));
            }
            if let Some(&n) = nodes.iter().find(|&&n| busy_with_jobs(n)) {
                return Err(ReservationError::Busy(format!(
                    "{} runs a job that may run into the reservation (Flags=IGNORE_JOBS to reserve it anyway)",
                    cluster.node(n).name
                )));
            }
            Ok(())
        };
        let mut nodes = match &req.nodes {
            NodeSelection::Named(named) => {
                if named.is_empty() {
                    return invalid("Nodes or NodeCnt must be specified");
                }
                all_free(named)?;
                named.clone()
            }
            NodeSelection::All => {
                all_free(&pool)?;
                pool.clone()
            }
            NodeSelection::Count(count) => {
                let count = *count as usize;
                if count == 0 {
                    return invalid("NodeCnt must be at least 1");
                }
                // Up nodes first; among them, those with no job that could run into it.
                let mut free: Vec<NodeId> = pool
                    .iter()
                    .copied()
                    .filter(|&n| !reserved_elsewhere(n) && !busy_with_jobs(n))
                    .collect();
                free.sort_by_key(|&n| (!cluster.node(n).schedulable(), n));
                if free.len() < count {
                    return Err(ReservationError::Busy(format!(
                        "{count} nodes asked for, {} free over that time",
                        free.len()
                    )));
                }
                free.truncate(count);
                free
            }
        };
        nodes.sort_unstable();
        nodes.dedup();
        Ok(AdvanceReservation {
            name: req.name.clone(),
            start: req.start,
            end: req.end,
            nodes,
            partition: req.partition,
            users: req.users.clone(),
            accounts: req.accounts.clone(),
            flags: req.flags,
        })
    }

    /// Adds `r`, or replaces the reservation of its name. Unchecked: `r` comes from
    /// [`Scheduler::plan_reservation`] or from the log.
    pub fn set_reservation(&mut self, mut r: AdvanceReservation) -> ResvId {
        r.nodes.sort_unstable();
        r.nodes.dedup();
        match self.reservation_by_name(&r.name) {
            Some(id) => {
                self.reservations[id.index()] = Some(r);
                id
            }
            None => {
                self.reservations.push(Some(r));
                ResvId(self.reservations.len() as u32 - 1)
            }
        }
    }

    /// Deletes the reservation `name`. Its waiting jobs stay, with reason
    /// `ReservationDeleted`; its running jobs run on.
    pub fn delete_reservation(&mut self, name: &str) -> Result<(), ReservationError> {
        let id = self
            .reservation_by_name(name)
            .ok_or_else(|| ReservationError::NotFound(name.to_string()))?;
        self.reservations[id.index()] = None;
        Ok(())
    }

    /// Reservations whose end has passed (the daemon deletes them, as Slurm does).
    pub fn ended_reservations(&self, now: Time) -> Vec<String> {
        self.reservations
            .iter()
            .flatten()
            .filter(|r| r.end <= now)
            .map(|r| r.name.clone())
            .collect()
    }

    /// The open reservations on node `n` at `now` (for the node's displayed state).
    pub fn active_reservations_on(
        &self,
        n: NodeId,
        now: Time,
    ) -> impl Iterator<Item = &AdvanceReservation> {
        self.reservations
            .iter()
            .flatten()
            .filter(move |r| r.is_active(now) && r.nodes.binary_search(&n).is_ok())
    }
}
