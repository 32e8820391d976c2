//! Snapshots, compaction and accounting: what keeps restart, takeover and memory
//! proportional to live work rather than history.
//!
//! A snapshot at log position `upto` records what the kernel knows beyond its live jobs
//! (the next job id, fairshare usage of finished work) and which jobs were still in
//! memory ([`Snapshot::jobs`]). The log *is* the rest of the snapshot: the entries up to
//! `upto` that concern a job still in memory, or no job at all (node states, policies,
//! reservations), are kept; those of forgotten jobs are deleted once the snapshot is
//! written. A restore applies the kept entries up to `upto`, then the snapshot, then the
//! tail, through the same path as any entry.
//!
//! Invariants:
//! - A snapshot is written only after every entry up to `upto` is durable, and in one
//!   transaction (PostgreSQL: fenced by the lease's epoch, like every log entry).
//! - Entries are deleted only after the snapshot that forgot their job is written, so a
//!   crash at any point leaves a log that restores the same live state: a restore skips
//!   entries up to `upto` of jobs the snapshot does not keep.
//! - A forgotten job's accounting row is written before its snapshot: `sacct` never loses
//!   a job; one in memory and in the table at once (a crash between the two) is shown
//!   once, from memory.
//! - Sequence numbers are never reused: the next entry follows the larger of the last
//!   entry and the last snapshot's `upto`.

use gantry_kernel::{JobId, Time};
use serde::{Deserialize, Serialize};

use super::{Entry, Store, StoreError};

/// What a restore needs besides the kept entries. Kept as JSON in the `snapshots` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Snapshot {
    /// The log position it was taken at: every entry up to here is reflected.
    pub upto: i64,
    /// When it was taken.
    pub time: Time,
    /// The id the next submission gets.
    pub next_job: u64,
    /// Core-seconds of finished work per (account, user).
    pub usage: Vec<(String, String, f64)>,
    /// The ids of the jobs in memory at `upto`, as inclusive ranges in order.
    pub jobs: Vec<(u64, u64)>,
}

impl Snapshot {
    /// `ids` (in increasing order) as inclusive ranges.
    pub fn ranges(ids: impl IntoIterator<Item = JobId>) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for JobId(id) in ids {
            match out.last_mut() {
                Some((_, last)) if *last + 1 == id => *last = id,
                _ => out.push((id, id)),
            }
        }
        out
    }

    /// Whether job `id` was in memory when the snapshot was taken.
    pub fn keeps(&self, id: JobId) -> bool {
        let i = self.jobs.partition_point(|&(_, last)| last < id.0);
        self.jobs.get(i).is_some_and(|&(first, _)| first <= id.0)
    }

    /// Whether a restore applies `entry` at `seq`: always after the snapshot; up to it,
    /// only an entry of a job it keeps or of no job.
    pub fn applies(&self, seq: i64, entry: &Entry) -> bool {
        seq > self.upto || entry.job().is_none_or(|j| self.keeps(j))
    }
}

/// A finished job as `sacct` and `sreport` read it once the controller has forgotten it:
/// the columns they filter and sum by, and the whole record as the API carries it.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountingRow {
    pub job: u64,
    /// The array's job id for a task, else the job's own.
    pub array_job: u64,
    pub user: String,
    pub account: String,
    pub partition: String,
    pub name: String,
    /// Slurm's long state name.
    pub state: String,
    pub submit: Time,
    pub start: Option<Time>,
    pub end: Time,
    /// Seconds it spent suspended (not counted as use).
    pub suspended_s: Time,
    pub cores: u32,
    pub gpus: u32,
    /// The API's `AccountingRecord`, encoded.
    pub record: Vec<u8>,
}

/// Which accounting rows a query wants (each list: any of; empty: any).
#[derive(Debug, Clone, Default)]
pub struct AccountingFilter {
    /// Submitted at or after (0: any).
    pub since: Time,
    /// Queued or running at some time in `[window_start, window_end]` (0: unbounded).
    pub window_start: Time,
    pub window_end: Time,
    pub jobs: Vec<u64>,
    pub users: Vec<String>,
    pub accounts: Vec<String>,
    pub partitions: Vec<String>,
    pub states: Vec<String>,
    pub names: Vec<String>,
    /// Rows after this job id (paging), in job id order.
    pub after_job: u64,
    pub limit: i64,
}

impl AccountingFilter {
    /// Whether `row` is one the query asks for (what the backends' `WHERE` says).
    pub fn matches(&self, row: &AccountingRow) -> bool {
        let any = |list: &[String], v: &str| list.is_empty() || list.iter().any(|x| x == v);
        row.job > self.after_job
            && (self.since == 0 || row.submit >= self.since)
            && (self.window_end == 0 || row.submit <= self.window_end)
            && (self.window_start == 0 || row.end >= self.window_start)
            && any(&self.users, &row.user)
            && any(&self.accounts, &row.account)
            && any(&self.partitions, &row.partition)
            && any(&self.states, &row.state)
            && any(&self.names, &row.name)
            && (self.jobs.is_empty()
                || self.jobs.contains(&row.job)
                || self.jobs.contains(&row.array_job))
    }
}

/// What finished jobs used in a period, per (user, account) (`sreport`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct UsageSum {
    pub user: String,
    pub account: String,
    pub core_seconds: f64,
    pub gpu_seconds: f64,
    pub jobs: u64,
}

/// What a compaction did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Compacted {
    pub upto: i64,
    /// Finished jobs moved to the accounting table.
    pub accounted: u64,
    /// Log entries deleted, and left.
    pub deleted: u64,
    pub kept: u64,
}

/// Rows per transaction when writing accounting rows or deleting entries: each holds
/// the database's write lock (SQLite) briefly, so the journal's commits go on between.
const BATCH: usize = 5_000;

impl Store {
    /// The latest snapshot, if one was taken.
    pub fn latest_snapshot(&mut self) -> Result<Option<Snapshot>, StoreError> {
        let Some((upto, text)) = self.backend.latest_snapshot()? else {
            return Ok(None);
        };
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|source| StoreError::Corrupt { seq: upto, source })
    }

    /// The position of the latest snapshot (0: none), without reading it.
    pub fn latest_snapshot_upto(&mut self) -> Result<i64, StoreError> {
        self.backend.latest_snapshot_upto()
    }

    /// Writes `snapshot` (every entry up to its `upto` must be durable) with the
    /// accounting rows of the jobs it forgot, then deletes the entries it no longer
    /// needs. See the module's invariants.
    pub fn compact(
        &mut self,
        snapshot: &Snapshot,
        accounting: Vec<AccountingRow>,
    ) -> Result<Compacted, StoreError> {
        let mut done = Compacted {
            upto: snapshot.upto,
            accounted: accounting.len() as u64,
            ..Compacted::default()
        };
        let mut rows = accounting;
        while !rows.is_empty() {
            let rest = rows.split_off(rows.len().min(BATCH));
            self.backend.write_accounting(rows)?;
            rows = rest;
        }
        let text = serde_json::to_string(snapshot).map_err(StoreError::Encode)?;
        self.backend
            .write_snapshot(snapshot.upto, snapshot.time, text)?;
        // Entries after the snapshot (those written while it was decided and written:
        // few) are read too and left alone.
        let mut doomed = Vec::new();
        let mut kept = 0;
        self.pages(0, |page| {
            for (s, _, text) in page.into_iter().filter(|e| e.0 <= snapshot.upto) {
                match entry_job(s, &text)? {
                    Some(j) if !snapshot.keeps(j) => doomed.push(s),
                    _ => kept += 1,
                }
            }
            Ok(())
        })?;
        done.kept = kept;
        done.deleted = doomed.len() as u64;
        for batch in doomed.chunks(BATCH) {
            self.backend.delete_entries(batch.to_vec())?;
        }
        Ok(done)
    }

    /// Accounting rows as `filter` asks, in job id order.
    pub fn accounting(
        &mut self,
        filter: &AccountingFilter,
    ) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.backend.accounting(filter)
    }

    /// What the jobs in the accounting table used between `start` and `end`.
    pub fn accounting_usage(
        &mut self,
        start: Time,
        end: Time,
    ) -> Result<Vec<UsageSum>, StoreError> {
        self.backend.accounting_usage(start, end)
    }
}

/// The job an entry concerns, read without decoding the whole entry.
fn entry_job(seq: i64, text: &str) -> Result<Option<JobId>, StoreError> {
    #[derive(Deserialize)]
    struct Named {
        job: Option<JobId>,
        first: Option<JobId>,
    }
    let named: Named =
        serde_json::from_str(text).map_err(|source| StoreError::Corrupt { seq, source })?;
    Ok(named.job.or(named.first))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_say_which_jobs_are_kept() {
        let ids = [1, 2, 3, 7, 9, 10].map(JobId);
        let s = Snapshot {
            jobs: Snapshot::ranges(ids),
            ..Snapshot::default()
        };
        assert_eq!(s.jobs, vec![(1, 3), (7, 7), (9, 10)]);
        for id in 0..12 {
            assert_eq!(s.keeps(JobId(id)), ids.contains(&JobId(id)), "{id}");
        }
    }
}
