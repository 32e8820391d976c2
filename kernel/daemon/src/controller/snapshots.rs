//! Snapshots: forgetting finished jobs (their records move to the accounting table) and
//! compacting the log behind them, so memory, restart and takeover grow with live work.
//!
//! Under the controller's lock a snapshot only decides: which finished jobs to forget
//! (ended at least `finished_retention_s` ago, as Slurm's MinJobAge), their accounting
//! rows, and what a restore needs besides the kept entries. The database work — waiting
//! for the log to be durable up to the snapshot, writing it, deleting the entries it no
//! longer needs — runs outside the lock ([`SnapshotWork::write`]). Until it is written,
//! `sacct` shows the forgotten jobs from the rows held here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use gantry_api as api;
use gantry_kernel::job::Job;
use gantry_kernel::{JobId, Time};

use super::{Controller, Refusal};
use crate::store::{AccountingRow, Compacted, Journal, Snapshot, Store, StoreError};

/// What the snapshot side of the controller holds.
pub(super) struct Archive {
    /// A connection that writes snapshots and accounting rows (beside the journal's).
    writer: Arc<Mutex<Store>>,
    /// A connection for `sacct` and `sreport` queries, used outside the controller's lock.
    reader: Arc<Mutex<Store>>,
    /// Set while a snapshot is being written: one at a time.
    writing: Arc<AtomicBool>,
    /// The rows of jobs forgotten by a snapshot not yet written.
    in_flight: Arc<Mutex<Vec<AccountingRow>>>,
}

impl Archive {
    pub(super) fn open(store: &Store) -> Result<Self, StoreError> {
        Ok(Self {
            writer: Arc::new(Mutex::new(store.writer()?)),
            reader: Arc::new(Mutex::new(store.another()?)),
            writing: Arc::default(),
            in_flight: Arc::default(),
        })
    }
}

/// A snapshot decided under the lock, to be written outside it.
pub struct SnapshotWork {
    snapshot: Snapshot,
    rows: Vec<AccountingRow>,
    journal: Journal,
    writer: Arc<Mutex<Store>>,
    writing: Arc<AtomicBool>,
    in_flight: Arc<Mutex<Vec<AccountingRow>>>,
}

impl SnapshotWork {
    /// How many jobs it forgot.
    pub fn forgotten(&self) -> usize {
        self.rows.len()
    }

    /// Waits for the log to be durable up to the snapshot, writes it with the forgotten
    /// jobs' accounting rows, and deletes the entries it no longer needs. Blocks: call
    /// it off the async runtime. An error before the snapshot is written leaves the log
    /// as it was (a restart restores the forgotten jobs as finished jobs).
    pub fn write(mut self) -> Result<Compacted, StoreError> {
        self.journal.wait(self.snapshot.upto as u64)?;
        let rows = std::mem::take(&mut self.rows);
        let mut store = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        store.compact(&self.snapshot, rows)
    }
}

impl Drop for SnapshotWork {
    fn drop(&mut self) {
        self.in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.writing.store(false, Ordering::Release);
    }
}

/// The longest a snapshot's accounting rows may take to build under the lock is set by
/// how many jobs finished since the last one; this many at most are forgotten at once
/// (the rest at the next snapshot).
const MAX_FORGOTTEN_PER_SNAPSHOT: usize = 200_000;

impl Controller {
    /// Forgets the finished jobs that ended at least `retention` seconds before `now`
    /// and decides a snapshot; [`SnapshotWork::write`] writes it. Refused while another
    /// is being written.
    pub fn take_snapshot(&mut self, now: Time, retention: Time) -> Result<SnapshotWork, Refusal> {
        if self.archive.writing.swap(true, Ordering::AcqRel) {
            return Err(Refusal::Conflict(
                "a snapshot is being written; try again when it is done".into(),
            ));
        }
        let mut ids = self.sched.forgettable(now.saturating_sub(retention));
        ids.truncate(MAX_FORGOTTEN_PER_SNAPSHOT);
        // An array is forgotten whole: do not cut one in two.
        if ids.len() == MAX_FORGOTTEN_PER_SNAPSHOT {
            while let Some(&last) = ids.last() {
                let array = self.sched.job(last).and_then(|j| j.array);
                let whole = array.is_none_or(|a| {
                    self.sched
                        .array_tasks(a.array_job)
                        .is_some_and(|t| t.last() == Some(&last))
                });
                if whole {
                    break;
                }
                ids.pop();
            }
        }
        let mut rows = Vec::with_capacity(ids.len());
        for &id in &ids {
            let Some(job) = self.sched.job(id) else {
                continue;
            };
            let record = self.accounting_record(job, now);
            rows.push(self.accounting_row(job, &record));
        }
        let gone = self.sched.forget(&ids);
        for job in &gone {
            self.forget_job(job.id);
        }
        *self
            .archive
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = rows.clone();
        let snapshot = Snapshot {
            upto: self.journal.queued() as i64,
            time: now,
            next_job: self.sched.next_job_id().0,
            usage: self.sched.usage_by_association(),
            jobs: Snapshot::ranges(self.sched.jobs_from(0).map(|(_, j)| j.id)),
        };
        tracing::info!(
            upto = snapshot.upto,
            forgotten = gone.len(),
            in_memory = self.sched.jobs().len(),
            "snapshot taken"
        );
        Ok(SnapshotWork {
            snapshot,
            rows,
            journal: self.journal.clone(),
            writer: self.archive.writer.clone(),
            writing: self.archive.writing.clone(),
            in_flight: self.archive.in_flight.clone(),
        })
    }

    /// What the controller keeps of a job besides the kernel's record.
    fn forget_job(&mut self, id: JobId) {
        self.submissions.remove(&id);
        self.usage.remove(&id);
        self.end_messages.remove(&id);
        self.unconfirmed.remove(&id);
        self.steps.remove(&id);
        self.with_running_steps.remove(&id);
        self.warnings.remove(&id);
        self.comments.remove(&id);
        self.dependency_texts.remove(&id);
    }

    /// The job as `sacct` shows it.
    pub fn accounting_record(&self, job: &Job, now: Time) -> api::AccountingRecord {
        let usage = self.usage(job.id);
        let ran = match (job.start_time, job.end_time) {
            (Some(s), Some(e)) => (e - s - job.suspended_for).max(0),
            (Some(s), None) => (now - s - job.suspended_for).max(0),
            _ => 0,
        };
        let cores = job.allocation.as_ref().map_or(0, |a| a.core_count());
        api::AccountingRecord {
            job: Some(self.job_info(job)),
            cpu_core_seconds: (cores as i64 * ran) as f64,
            max_rss_mb: usage.max_rss_mb,
            user_cpu_s: usage.user_cpu_s,
            system_cpu_s: usage.system_cpu_s,
        }
    }

    fn accounting_row(&self, job: &Job, record: &api::AccountingRecord) -> AccountingRow {
        let cluster = self.sched.cluster();
        let alloc = job.allocation.as_ref();
        AccountingRow {
            job: job.id.0,
            array_job: job.array.map_or(job.id.0, |a| a.array_job.0),
            user: cluster.users[job.user.index()].clone(),
            account: cluster.accounts[job.account.index()].name.clone(),
            partition: cluster.partition(job.partition).name.clone(),
            name: job.name.clone(),
            state: self.shown_state(job).to_string(),
            submit: job.submit_time,
            start: job.start_time,
            end: job.end_time.unwrap_or(job.submit_time),
            suspended_s: job.suspended_for,
            cores: alloc.map_or(0, |a| a.core_count()) as u32,
            gpus: alloc.map_or(0, |a| a.gpu_count()) as u32,
            record: prost::Message::encode_to_vec(record),
        }
    }

    /// Applies a snapshot met in the log (after the entries it keeps up to its
    /// position): what the forgotten jobs left in the kernel.
    pub(super) fn apply_snapshot(&mut self, s: &Snapshot) {
        if let Err(next) = self.sched.skip_ids_to(JobId(s.next_job)) {
            if next.0 != s.next_job {
                tracing::error!(
                    snapshot = s.upto,
                    next_job = s.next_job,
                    issued_up_to = next.0,
                    "snapshot's next job id is behind the log's; keeping the log's"
                );
            }
        }
        self.sched.restore_usage(&s.usage);
    }

    /// Where `sacct` and `sreport` read forgotten jobs, outside the controller's lock.
    pub fn archive_reader(&self) -> Arc<Mutex<Store>> {
        self.archive.reader.clone()
    }

    /// The rows of jobs forgotten by a snapshot still being written.
    pub fn accounting_in_flight(&self) -> Vec<AccountingRow> {
        self.archive
            .in_flight
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
