//! The controller's durable log: every accepted submission and every decision, in order.
//! An entry is acknowledged or acted on only once its commit has returned.
//!
//! Two backends keep it behind one interface ([`Backend`]): an SQLite file on the
//! controller's machine (WAL mode, full synchronous commits; `sqlite`), or a PostgreSQL
//! database that several controllers share, one of them active under a lease whose
//! epoch fences out the others' writes (`postgres`).
//!
//! While the daemon runs, the log is written through a [`Journal`]: entries are queued in
//! order under the controller's lock and one writer thread commits everything queued
//! so far in one transaction (group commit), so a thousand concurrent submissions cost a
//! few commits, not a thousand. A caller learns its entries are durable by waiting for
//! its ticket; submissions wait outside the controller's lock.
//!
//! A restart rebuilds the scheduler by applying the log from the start
//! (`Controller::open`), or from the latest snapshot: a snapshot compacts the log to
//! what concerns live work (see `snapshot`). The log is the truth; memory is a cache of
//! it.
//!
//! The database records its schema version ([`SCHEMA_VERSION`]): an older database is
//! migrated forward when opened, a newer one is refused with a message that says which
//! gantryd wrote it.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use gantry_kernel::{JobId, Time};

use crate::logged;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

mod journal;
pub mod postgres;
mod snapshot;
mod sqlite;

pub use journal::{Journal, JournalError, Ticket};
pub use snapshot::{AccountingFilter, AccountingRow, Compacted, Snapshot, UsageSum};

/// The schema this build writes and the newest it reads.
///
/// - 0: the `log` and `components` tables; every `submitted` entry holds its
///   environment (builds before versions were recorded).
/// - 1: the `environments` table: a `submitted` entry names its environment by sha256
///   (`launch.env_sha256`), each distinct environment is kept once. Entries of schema 0
///   stay as they are and read the same.
/// - 2: the `snapshots` and `accounting` tables. A log may have gaps where a snapshot
///   deleted the entries of jobs it forgot.
pub const SCHEMA_VERSION: i64 = 2;

/// What a job needs besides the kernel's view of it: what to run and where its output goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Launch {
    pub script: String,
    pub argv: Vec<String>,
    pub workdir: String,
    /// Kept in the log once per distinct value (the `environments` table; see
    /// [`SCHEMA_VERSION`]): absent from a `submitted` entry that names it by sha256.
    #[serde(default)]
    pub env: Vec<(String, String)>,
    pub output: String,
    pub error: String,
    pub uid: u32,
    pub gid: u32,
    /// The dependency text as given, for display.
    pub dependency: String,
    /// The submitter's umask (`None` in entries written before it was carried: 022).
    #[serde(default)]
    pub umask: Option<u32>,
    /// An allocation for `srun`/`salloc` steps, with no batch script of its own.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allocation_only: bool,
    /// `--comment`, `--wckey`: kept and shown.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub comment: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub wckey: String,
    /// `--signal`: a warning before the time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warn_signal: Option<WarnSignal>,
    /// `--open-mode=append`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub append_output: bool,
}

/// A time limit set by `scontrol update`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeLimit {
    Seconds(Time),
    Unlimited,
}

impl TimeLimit {
    /// The kernel's form: `None` is unlimited.
    pub fn seconds(self) -> Option<Time> {
        match self {
            Self::Seconds(s) => Some(s),
            Self::Unlimited => None,
        }
    }
}

/// `--signal=[B:]SIG[@SECONDS]`: `signal`, `seconds` before the time limit, to the job's
/// steps (or its batch script when it has none), or with `batch_only` to the batch
/// script alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WarnSignal {
    pub signal: i32,
    pub seconds: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub batch_only: bool,
}

/// Resource use of a finished job, as its agent measured it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Usage {
    pub user_cpu_s: f64,
    pub system_cpu_s: f64,
    pub max_rss_mb: u64,
}

/// One entry of the log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// A submission accepted as jobs `first ..= first + count - 1`.
    Submitted {
        first: JobId,
        count: u32,
        spec: Box<logged::Spec>,
        launch: Box<Launch>,
    },
    Started {
        job: JobId,
        allocation: logged::Allocation,
    },
    Ended {
        job: JobId,
        outcome: logged::Outcome,
        usage: Usage,
        /// Why it ended, when the agent said (a launch that failed: which file, which
        /// directory), shown as the job's reason.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        message: String,
    },
    Cancelled {
        job: JobId,
    },
    /// The job's run passed its time limit and is being ended (TIMEOUT, COMPLETING
    /// until its processes are gone).
    TimedOut {
        job: JobId,
    },
    /// The processes of a run told to stop are gone: what it held goes back.
    ProcessesGone {
        job: JobId,
        run: u32,
    },
    DependencyNeverSatisfied {
        job: JobId,
    },
    /// A waiting job could no longer end by its `--deadline` (DEADLINE).
    PastDeadline {
        job: JobId,
    },
    Preempted {
        job: JobId,
        mode: logged::PreemptMode,
    },
    Resumed {
        job: JobId,
    },
    NodeFailed {
        node: String,
    },
    /// Drained, resumed (made schedulable again), or marked down.
    NodeState {
        node: String,
        state: String,
        reason: String,
    },
    /// A policy component loaded into a slot (its bytes are in the `components` table).
    PolicyLoaded {
        kind: String,
        sha256: String,
        config: String,
        who: String,
    },
    PolicyActivated {
        kind: String,
        version: u32,
        who: String,
    },
    PolicyRolledBack {
        kind: String,
        to: Option<u32>,
        who: String,
    },
    /// A job step started on `nodes` (by name, in step order).
    StepStarted {
        job: JobId,
        step: u32,
        name: String,
        nodes: Vec<String>,
        tasks: u32,
    },
    StepEnded {
        job: JobId,
        step: u32,
        state: StepState,
        exit_code: i32,
        cpu_s: f64,
    },
    /// Held (`scontrol hold`, by its user or an admin) or released.
    Held {
        job: JobId,
        by: logged::HoldBy,
    },
    Released {
        job: JobId,
        by: logged::HoldBy,
    },
    /// `scontrol suspend` (an admin's): the job stops; no cycle resumes it.
    SuspendedByAdmin {
        job: JobId,
    },
    /// `scontrol resume`: an admin's suspension ended (the job runs again at once if its
    /// cores are free, else when a cycle finds them).
    ResumedByAdmin {
        job: JobId,
    },
    /// `scontrol requeue`: a running job back in the queue (its run told to stop).
    Requeued {
        job: JobId,
    },
    /// `scontrol update`: the fields given changed.
    Updated {
        job: JobId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_limit: Option<TimeLimit>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        comment: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nice: Option<i32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        qos: Option<String>,
        /// The new dependency text (empty: none).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        dependency: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        partition: Option<String>,
        /// The new node count.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        nodes: Option<u32>,
    },
    /// An advance reservation created or changed, as resolved (its nodes chosen).
    ReservationSet(Box<ReservationRecord>),
    /// An advance reservation deleted (by an admin, or because it ended).
    ReservationDeleted {
        name: String,
    },
}

impl Entry {
    /// The job the entry concerns (a submission's first job), if any.
    pub fn job(&self) -> Option<JobId> {
        match self {
            Self::Submitted { first, .. } => Some(*first),
            Self::Started { job, .. }
            | Self::Ended { job, .. }
            | Self::Cancelled { job }
            | Self::TimedOut { job }
            | Self::ProcessesGone { job, .. }
            | Self::DependencyNeverSatisfied { job }
            | Self::PastDeadline { job }
            | Self::Preempted { job, .. }
            | Self::Resumed { job }
            | Self::StepStarted { job, .. }
            | Self::StepEnded { job, .. }
            | Self::Held { job, .. }
            | Self::Released { job, .. }
            | Self::SuspendedByAdmin { job }
            | Self::ResumedByAdmin { job }
            | Self::Requeued { job }
            | Self::Updated { job, .. } => Some(*job),
            Self::NodeFailed { .. }
            | Self::NodeState { .. }
            | Self::PolicyLoaded { .. }
            | Self::PolicyActivated { .. }
            | Self::PolicyRolledBack { .. }
            | Self::ReservationSet(_)
            | Self::ReservationDeleted { .. } => None,
        }
    }
}

/// An advance reservation as the log keeps it: nodes by name, so a record stays valid
/// when the cluster's node order changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub name: String,
    pub start: Time,
    pub end: Time,
    pub nodes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub users: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub accounts: Vec<String>,
    #[serde(default)]
    pub flags: logged::ReservationFlags,
}

/// How a job step ended (or that it runs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    Running,
    Completed,
    Failed,
    Cancelled,
    NodeFail,
}

impl StepState {
    /// Slurm's name for the state.
    pub fn slurm_name(self) -> &'static str {
        match self {
            Self::Running => "RUNNING",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Cancelled => "CANCELLED",
            Self::NodeFail => "NODE_FAIL",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database writer stopped: {0}")]
    Journal(#[from] JournalError),
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database {location}: {source}")]
    Postgres {
        location: String,
        source: ::postgres::Error,
    },
    #[error("state database {location}: {message}")]
    Unusable { location: String, message: String },
    #[error("cannot copy the state: {0}")]
    CopyRefused(String),
    /// Another controller holds the lease: this one's epoch is past.
    #[error(
        "another controller took over (this one's epoch {epoch} is past): its writes are refused"
    )]
    Fenced { epoch: i64 },
    #[error("state database entry {seq} is unreadable: {source}")]
    Corrupt { seq: i64, source: serde_json::Error },
    #[error("state database: cannot encode an entry: {0}")]
    Encode(serde_json::Error),
    #[error(
        "state database entry {seq} names an environment ({sha256}) that is not in the database"
    )]
    MissingEnvironment { seq: i64, sha256: String },
    #[error(
        "state database {path} has schema version {found}, newer than this gantryd {ours} reads (up to {max}): run the gantryd that wrote it or a newer one; nothing was changed"
    )]
    Newer {
        path: String,
        found: i64,
        max: i64,
        ours: &'static str,
    },
}

/// Where the state is kept: `state = "..."` in gantryd's configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(from = "String")]
pub enum Location {
    /// An SQLite database file on this machine (created if missing).
    Sqlite(PathBuf),
    /// A PostgreSQL database, `postgres://USER@HOST:PORT/DB` (or `postgresql://`), which
    /// several controllers may share: one is active at a time.
    Postgres(String),
}

impl From<String> for Location {
    fn from(text: String) -> Self {
        Self::parse(&text)
    }
}

impl Location {
    /// `postgres://…` or `postgresql://…` names a PostgreSQL database; anything else is
    /// a file path.
    pub fn parse(text: &str) -> Self {
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            Self::Postgres(text.to_string())
        } else {
            Self::Sqlite(PathBuf::from(text))
        }
    }

    /// How messages name it: the path, or the URL without its password.
    pub fn display(&self) -> String {
        match self {
            Self::Sqlite(p) => p.display().to_string(),
            Self::Postgres(url) => self::postgres::redacted(url),
        }
    }
}

/// What one storage engine provides; [`Store`] and the [`Journal`] are written against
/// it, so both engines keep the same log with the same guarantees.
///
/// Invariants every backend keeps:
/// - `commit` is atomic and durable when it returns `Ok`: all of its records or none,
///   on disk (SQLite: fsynced; PostgreSQL: committed with `synchronous_commit` on).
/// - Log entries get consecutive sequence numbers from 1, in the order committed; a
///   number is never reused.
/// - Components and environments are content-addressed by sha256, kept once.
pub(crate) trait Backend: Send {
    /// The schema version the database records.
    fn schema_version(&mut self) -> Result<i64, StoreError>;
    /// The sequence number of the last entry, or of the latest snapshot's position if
    /// that is later (0 when there are neither): the next entry is numbered after it.
    fn last_seq(&mut self) -> Result<i64, StoreError>;
    /// Raw entries after `seq`, oldest first, at most `limit`.
    fn entries_after(
        &mut self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Time, String)>, StoreError>;
    /// One raw entry.
    fn entry(&mut self, seq: i64) -> Result<Option<String>, StoreError>;
    /// The raw entries of `seqs` that are committed (distinct numbers), in any order:
    /// one round trip where the backend can.
    fn entries_at(&mut self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        let mut found = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(text) = self.entry(seq)? {
                found.push((seq, text));
            }
        }
        Ok(found)
    }
    /// An environment's JSON by sha256.
    fn environment(&mut self, sha256: &str) -> Result<Option<String>, StoreError>;
    fn component(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Every environment and every component (to copy the state to another backend).
    fn all_environments(&mut self) -> Result<Vec<(String, String)>, StoreError>;
    fn all_components(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Writes `records` in one transaction.
    fn commit(&mut self, records: Vec<Record>) -> Result<(), StoreError>;
    /// A second connection to the same database, for reads beside the writer.
    fn another(&self) -> Result<Box<dyn Backend>, StoreError>;
    /// A second connection that may write what a compaction writes (under the same
    /// lease epoch, on PostgreSQL).
    fn writer(&self) -> Result<Box<dyn Backend>, StoreError>;
    /// The latest snapshot's position and JSON.
    fn latest_snapshot(&mut self) -> Result<Option<(i64, String)>, StoreError>;
    fn latest_snapshot_upto(&mut self) -> Result<i64, StoreError>;
    /// Writes a snapshot (and drops older ones) in one transaction; PostgreSQL refuses
    /// it from a past epoch.
    fn write_snapshot(&mut self, upto: i64, time: Time, json: String) -> Result<(), StoreError>;
    /// Inserts (or replaces) accounting rows in one transaction.
    fn write_accounting(&mut self, rows: Vec<AccountingRow>) -> Result<(), StoreError>;
    /// Deletes log entries by sequence number, in one transaction.
    fn delete_entries(&mut self, seqs: Vec<i64>) -> Result<(), StoreError>;
    /// Whole accounting rows after job `after`, by job id, at most `limit`.
    fn accounting_rows(&mut self, after: u64, limit: i64)
        -> Result<Vec<AccountingRow>, StoreError>;
    /// Accounting rows (job id, encoded record) as `filter` asks, by job id.
    fn accounting(&mut self, filter: &AccountingFilter) -> Result<Vec<(u64, Vec<u8>)>, StoreError>;
    /// Use of the accounted jobs between `start` and `end`, per (user, account).
    fn accounting_usage(&mut self, start: Time, end: Time) -> Result<Vec<UsageSum>, StoreError>;
}

/// The controller's state: the log and what it names, in one of the backends.
pub struct Store {
    pub(crate) backend: Box<dyn Backend>,
}

/// A second connection to the log, for reading entries back while the journal's writer
/// appends.
pub struct LogReader {
    backend: std::sync::Mutex<Box<dyn Backend>>,
}

impl LogReader {
    /// The entry with sequence number `seq`, if it is committed.
    pub fn entry(&self, seq: i64) -> Result<Option<Entry>, StoreError> {
        let mut b = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        let Some(text) = b.entry(seq)? else {
            return Ok(None);
        };
        let (mut entry, env) = decode(seq, &text)?;
        if let Some(sha) = env {
            set_environment(&mut entry, environment(&mut **b, seq, &sha)?);
        }
        Ok(Some(entry))
    }

    /// The committed entries of `seqs`, by sequence number, read together (a cycle's
    /// launches: an array's tasks share one entry), each environment read once.
    pub fn entries_at(&self, seqs: &[i64]) -> Result<HashMap<i64, Entry>, StoreError> {
        let mut wanted: Vec<i64> = seqs.to_vec();
        wanted.sort_unstable();
        wanted.dedup();
        let mut b = self.backend.lock().unwrap_or_else(|p| p.into_inner());
        let mut envs: HashMap<String, Vec<(String, String)>> = HashMap::new();
        let mut out = HashMap::with_capacity(wanted.len());
        for (seq, text) in b.entries_at(&wanted)? {
            let (mut entry, env) = decode(seq, &text)?;
            if let Some(sha) = env {
                let env = match envs.get(&sha) {
                    Some(e) => e.clone(),
                    None => {
                        let e = environment(&mut **b, seq, &sha)?;
                        envs.insert(sha, e.clone());
                        e
                    }
                };
                set_environment(&mut entry, env);
            }
            out.insert(seq, entry);
        }
        Ok(out)
    }
}

fn environment(
    b: &mut dyn Backend,
    seq: i64,
    sha256: &str,
) -> Result<Vec<(String, String)>, StoreError> {
    let text = b
        .environment(sha256)?
        .ok_or_else(|| StoreError::MissingEnvironment {
            seq,
            sha256: sha256.to_string(),
        })?;
    serde_json::from_str(&text).map_err(|source| StoreError::Corrupt { seq, source })
}

fn set_environment(entry: &mut Entry, env: Vec<(String, String)>) {
    if let Entry::Submitted { launch, .. } = entry {
        launch.env = env;
    }
}

/// What a `submitted` entry names its environment by (schema 1).
#[derive(Deserialize)]
struct EnvironmentRef {
    launch: LaunchEnvironmentRef,
}

#[derive(Deserialize)]
struct LaunchEnvironmentRef {
    env_sha256: Option<String>,
}

/// An entry as stored, and the sha256 of the environment it names, if it names one (its
/// environment is then to be put back from the `environments` table).
fn decode(seq: i64, text: &str) -> Result<(Entry, Option<String>), StoreError> {
    let corrupt = |source| StoreError::Corrupt { seq, source };
    let entry: Entry = serde_json::from_str(text).map_err(corrupt)?;
    if !matches!(entry, Entry::Submitted { .. }) {
        return Ok((entry, None));
    }
    let named: EnvironmentRef = serde_json::from_str(text).map_err(corrupt)?;
    Ok((entry, named.launch.env_sha256))
}

/// How many entries are read at once.
const PAGE: i64 = 10_000;

/// One entry read back: its sequence number, the time it happened, what happened.
pub type Logged = (i64, Time, Entry);

impl Store {
    /// Opens (creating if needed) the SQLite database at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Box::new(sqlite::Sqlite::open(path)?),
        })
    }

    /// Opens the state at `location`. A PostgreSQL state is opened for reading; writing
    /// needs the lease ([`postgres::Lease`]), whose epoch [`Store::fence`] sets.
    pub fn open_location(location: &Location) -> Result<Self, StoreError> {
        match location {
            Location::Sqlite(path) => Self::open(path),
            Location::Postgres(url) => Ok(Self {
                backend: Box::new(postgres::Postgres::open(url, None)?),
            }),
        }
    }

    /// A PostgreSQL state written under lease `epoch`: every entry carries it, and the
    /// database refuses entries of a past epoch.
    pub fn open_fenced(url: &str, epoch: i64) -> Result<Self, StoreError> {
        Ok(Self {
            backend: Box::new(postgres::Postgres::open(url, Some(epoch))?),
        })
    }

    /// The schema version the database records.
    pub fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.backend.schema_version()
    }

    /// Appends entries in one transaction; they are durable when this returns. (A
    /// running daemon writes through a [`Journal`] instead.)
    pub fn append(&mut self, time: Time, entries: &[Entry]) -> Result<(), StoreError> {
        let records = encode(time, entries)?;
        self.backend.commit(records)
    }

    /// A second connection to the same database, for reading.
    pub fn another(&self) -> Result<Store, StoreError> {
        Ok(Store {
            backend: self.backend.another()?,
        })
    }

    /// A second connection that writes snapshots and accounting rows (under the same
    /// lease epoch, on PostgreSQL).
    pub fn writer(&self) -> Result<Store, StoreError> {
        Ok(Store {
            backend: self.backend.writer()?,
        })
    }

    /// A second connection to the same database.
    pub fn reader(&self) -> Result<LogReader, StoreError> {
        Ok(LogReader {
            backend: std::sync::Mutex::new(self.backend.another()?),
        })
    }

    /// The sequence number of the last entry (0 when the log is empty).
    pub fn last_seq(&mut self) -> Result<i64, StoreError> {
        self.backend.last_seq()
    }

    /// Every entry, oldest first.
    pub fn entries(&mut self) -> Result<Vec<Logged>, StoreError> {
        self.entries_after(0)
    }

    /// Hands `each` the raw entries after `seq`, a page at a time, oldest first: the raw
    /// text of a whole log is never held at once.
    fn pages(
        &mut self,
        mut seq: i64,
        mut each: impl FnMut(Vec<(i64, Time, String)>) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        loop {
            let page = self.backend.entries_after(seq, PAGE)?;
            let Some(&(last, _, _)) = page.last() else {
                return Ok(());
            };
            let full = page.len() as i64 == PAGE;
            each(page)?;
            if !full {
                return Ok(());
            }
            seq = last;
        }
    }

    /// The entries after `seq`, oldest first, each submission with its environment.
    pub fn entries_after(&mut self, seq: i64) -> Result<Vec<Logged>, StoreError> {
        let mut out = Vec::new();
        let mut named = Vec::new();
        self.pages(seq, |page| {
            for (seq, time, text) in page {
                let (entry, env) = decode(seq, &text)?;
                if let Some(sha) = env {
                    named.push((out.len(), sha));
                }
                out.push((seq, time, entry));
            }
            Ok(())
        })?;
        // Environments are shared: each is read once.
        let mut known: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (i, sha) in named {
            let env = match known.get(&sha) {
                Some(env) => env.clone(),
                None => {
                    let env = environment(&mut *self.backend, out[i].0, &sha)?;
                    known.insert(sha, env.clone());
                    env
                }
            };
            set_environment(&mut out[i].2, env);
        }
        Ok(out)
    }

    /// The entries after `seq` as a restore needs them: without what each submitted job
    /// runs (its script, arguments and environment), which the controller reads back
    /// from its entry when the job launches.
    pub fn history_after(&mut self, seq: i64) -> Result<Vec<Logged>, StoreError> {
        let mut out = Vec::new();
        self.pages(seq, |page| {
            for (seq, time, text) in page {
                let (mut entry, _) = decode(seq, &text)?;
                if let Entry::Submitted { launch, .. } = &mut entry {
                    launch.script = String::new();
                    launch.argv = Vec::new();
                    launch.env = Vec::new();
                }
                out.push((seq, time, entry));
            }
            Ok(())
        })?;
        Ok(out)
    }

    /// Copies everything `self` holds into `to`, which must be empty and writable: the
    /// environments and components, then the log a page at a time in order, each entry
    /// keeping its sequence number and time, then the accounting rows and the latest
    /// snapshot. `progress` hears how many entries are
    /// copied so far. Returns that count.
    pub fn copy_to(
        &mut self,
        to: &mut Store,
        mut progress: impl FnMut(i64),
    ) -> Result<i64, StoreError> {
        if to.last_seq()? != 0 {
            return Err(StoreError::CopyRefused(
                "the target already holds a log: copy only into an empty state".into(),
            ));
        }
        let mut records: Vec<Record> = self
            .backend
            .all_environments()?
            .into_iter()
            .map(|(sha, env)| Record::Environment(sha, env))
            .collect();
        records.extend(
            self.backend
                .all_components()?
                .into_iter()
                .map(|(sha, bytes)| Record::Component(sha, bytes)),
        );
        to.backend.commit(records)?;
        let mut copied = 0;
        self.pages(0, |page| {
            copied += page.len() as i64;
            to.backend.commit(
                page.into_iter()
                    .map(|(seq, time, text)| Record::EntryAt(seq, time, text))
                    .collect(),
            )?;
            progress(copied);
            Ok(())
        })?;
        let mut after = 0;
        loop {
            let rows = self.backend.accounting_rows(after, PAGE)?;
            let Some(last) = rows.last().map(|r| r.job) else {
                break;
            };
            to.backend.write_accounting(rows)?;
            after = last;
        }
        if let Some((upto, text)) = self.backend.latest_snapshot()? {
            let time = serde_json::from_str::<Snapshot>(&text)
                .map_err(|source| StoreError::Corrupt { seq: upto, source })?
                .time;
            to.backend.write_snapshot(upto, time, text)?;
        }
        Ok(copied)
    }

    /// Keeps a component's bytes (once per sha256).
    pub fn put_component(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.backend
            .commit(vec![Record::Component(sha256.to_string(), bytes.to_vec())])
    }

    pub fn component(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.backend.component(sha256)
    }
}

/// The log as read so far, for a restore: the latest snapshot, the entries it keeps
/// and those after it as [`Store::history_after`] gives them, and the components their
/// policy loads name. A standby keeps one up to date (following the log), so a takeover
/// reads only the tail.
#[derive(Default)]
pub struct History {
    pub snapshot: Option<Snapshot>,
    pub entries: Vec<Logged>,
    pub components: HashMap<String, Vec<u8>>,
    /// Read up to here.
    position: i64,
}

impl History {
    /// The position read up to.
    pub fn last_seq(&self) -> i64 {
        self.position
    }

    /// Reads what was written since the last call, and the components it names: when a
    /// newer snapshot was taken, everything afresh from it (so a follower's memory, like
    /// the controller's, holds live work, not history). Returns how many entries were
    /// read.
    pub fn follow(&mut self, store: &mut Store) -> Result<usize, StoreError> {
        let latest = store.latest_snapshot_upto()?;
        if latest > self.snapshot.as_ref().map_or(0, |s| s.upto) {
            let snapshot = store.latest_snapshot()?;
            *self = Self {
                snapshot,
                ..Self::default()
            };
        }
        let mut new = store.history_after(self.position)?;
        if let Some(s) = &self.snapshot {
            new.retain(|(seq, _, e)| s.applies(*seq, e));
        }
        for (_, _, e) in &new {
            if let Entry::PolicyLoaded { sha256, .. } = e {
                if !self.components.contains_key(sha256) {
                    if let Some(bytes) = store.component(sha256)? {
                        self.components.insert(sha256.clone(), bytes);
                    }
                }
            }
        }
        let n = new.len();
        if let Some(&(last, _, _)) = new.last() {
            self.position = last;
        }
        self.entries.extend(new);
        Ok(n)
    }
}

/// The sha256 of `bytes`, in lower-case hex.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// What a commit writes.
pub(crate) enum Record {
    /// The next entry.
    Entry(Time, String),
    /// An entry with its sequence number (a copy of another state's log).
    EntryAt(i64, Time, String),
    Component(String, Vec<u8>),
    /// A submission's environment (JSON), by sha256: kept once.
    Environment(String, String),
}

/// Entries as stored: a submission's environment goes to the `environments` table
/// (once per distinct value) and the entry names it by sha256.
fn encode(time: Time, entries: &[Entry]) -> Result<Vec<Record>, StoreError> {
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Entry::Submitted { .. } = e else {
            out.push(Record::Entry(
                time,
                serde_json::to_string(e).map_err(StoreError::Encode)?,
            ));
            continue;
        };
        let mut v = serde_json::to_value(e).map_err(StoreError::Encode)?;
        if let Some(launch) = v.get_mut("launch").and_then(|l| l.as_object_mut()) {
            if let Some(env) = launch.remove("env") {
                let text = env.to_string();
                let sha = sha256_hex(text.as_bytes());
                launch.insert("env_sha256".into(), sha.clone().into());
                out.push(Record::Environment(sha, text));
            }
        }
        out.push(Record::Entry(time, v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_kernel::job::{JobOutcome, JobSpec};
    use gantry_kernel::ResourceRequest;
    use rusqlite::{params, Connection};

    #[test]
    fn entries_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let spec = JobSpec::new("j", "alice", ResourceRequest::default());
        {
            let mut s = Store::open(&path).unwrap();
            s.append(
                5,
                &[Entry::Submitted {
                    first: JobId(1),
                    count: 1,
                    spec: Box::new((&spec).into()),
                    launch: Box::default(),
                }],
            )
            .unwrap();
            let mut cores = fixedbitset::FixedBitSet::with_capacity(8);
            cores.insert(2);
            cores.insert(5);
            let allocation = gantry_kernel::job::Allocation {
                nodes: vec![gantry_kernel::job::NodeAllocation {
                    node: gantry_kernel::cluster::NodeId(3),
                    tasks: 2,
                    cores,
                    memory_mb: 1024,
                    gpus: 0b1010,
                    gres: Vec::new(),
                }],
            };
            s.append(
                6,
                &[
                    Entry::Started {
                        job: JobId(1),
                        allocation: (&allocation).into(),
                    },
                    Entry::Ended {
                        job: JobId(1),
                        outcome: JobOutcome::Exited(3).into(),
                        usage: Usage::default(),
                        message: String::new(),
                    },
                ],
            )
            .unwrap();
            s.append(7, &[Entry::Cancelled { job: JobId(2) }]).unwrap();
            s.put_component("abc", b"bytes").unwrap();
            s.put_component("abc", b"bytes").unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        let e = s.entries().unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].1, 5);
        assert!(
            matches!(&e[0].2, Entry::Submitted { spec: s, .. } if JobSpec::from((**s).clone()) == spec)
        );
        match &e[1].2 {
            Entry::Started { allocation, .. } => {
                let allocation = gantry_kernel::job::Allocation::from(allocation);
                let n = &allocation.nodes[0];
                assert_eq!(n.cores.ones().collect::<Vec<_>>(), vec![2, 5]);
                assert_eq!(n.cores.len(), 8);
                assert_eq!((n.memory_mb, n.gpus), (1024, 0b1010));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(e[1].1, 6);
        assert!(matches!(
            e[2].2,
            Entry::Ended {
                outcome: logged::Outcome::Exited(3),
                ..
            }
        ));
        assert_eq!(e[3].2, Entry::Cancelled { job: JobId(2) });
        assert_eq!(s.component("abc").unwrap().as_deref(), Some(&b"bytes"[..]));
        assert_eq!(s.component("def").unwrap(), None);
    }

    fn environment(n: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|i| (format!("VAR_{i}"), format!("value {i} {}", "x".repeat(40))))
            .collect()
    }

    fn submitted(first: u64, env: Vec<(String, String)>) -> Entry {
        Entry::Submitted {
            first: JobId(first),
            count: 1,
            spec: Box::new((&JobSpec::new("j", "alice", ResourceRequest::default())).into()),
            launch: Box::new(Launch {
                env,
                ..Launch::default()
            }),
        }
    }

    /// A thousand submissions from one shell keep one copy of its environment; each
    /// reads back with it, through the journal and through a reader.
    #[test]
    fn a_submissions_environment_is_kept_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).unwrap();
        let reader = store.reader().unwrap();
        let journal = Journal::start(store).unwrap();
        let (same, other) = (environment(60), environment(3));
        let mut last = 0;
        for i in 0..1000 {
            let env = if i == 500 {
                other.clone()
            } else {
                same.clone()
            };
            last = journal.queue(i, &[submitted(i as u64 + 1, env)]).unwrap();
        }
        journal.wait(last).unwrap();
        assert_eq!(
            reader.entry(501).unwrap(),
            Some(submitted(501, other.clone()))
        );
        drop(journal);
        let mut s = Store::open(&path).unwrap();
        let conn = Connection::open(&path).unwrap();
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM environments", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 2, "two distinct environments");
        let logged: i64 = conn
            .query_row("SELECT SUM(LENGTH(entry)) FROM log", [], |r| r.get(0))
            .unwrap();
        let one_env = serde_json::to_string(&same).unwrap().len() as i64;
        assert!(
            logged < 1000 * one_env / 4,
            "the log holds no environment: {logged} bytes for 1,000 entries ({one_env} per environment)"
        );
        let entries = s.entries().unwrap();
        assert_eq!(entries.len(), 1000);
        assert_eq!(entries[0].2, submitted(1, same.clone()));
        assert_eq!(entries[500].2, submitted(501, other));
        assert_eq!(entries[999].2, submitted(1000, same));
    }

    /// A database of schema 0 (entries with their environment inline, no version) opens
    /// as schema 1 and reads the same; one of a newer schema is refused untouched.
    #[test]
    fn an_older_schema_is_migrated_and_a_newer_one_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let old = submitted(1, environment(2));
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE log (seq INTEGER PRIMARY KEY, time INTEGER NOT NULL, entry TEXT NOT NULL);
                 CREATE TABLE components (sha256 TEXT PRIMARY KEY, bytes BLOB NOT NULL);",
            )
            .unwrap();
            conn.execute(
                "INSERT INTO log (time, entry) VALUES (3, ?1)",
                params![serde_json::to_string(&old).unwrap()],
            )
            .unwrap();
        }
        let mut s = Store::open(&path).unwrap();
        assert_eq!(s.schema_version().unwrap(), SCHEMA_VERSION);
        s.append(4, &[submitted(2, environment(2))]).unwrap();
        let entries = s.entries().unwrap();
        assert_eq!(entries[0].2, old, "the inline environment reads as before");
        assert_eq!(entries[1].2, submitted(2, environment(2)));
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 7)
            .unwrap();
        drop(s);
        let err = Store::open(&path).err().expect("a newer schema is refused");
        let text = err.to_string();
        assert!(
            text.contains("schema version 7") && text.contains(&format!("up to {SCHEMA_VERSION}")),
            "{text}"
        );
        let conn = Connection::open(&path).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, 7, "left as it was");
    }

    #[test]
    fn an_unreadable_entry_is_an_error_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let mut s = Store::open(&path).unwrap();
        Connection::open(&path)
            .unwrap()
            .execute("INSERT INTO log (time, entry) VALUES (1, 'not json')", [])
            .unwrap();
        let err = s.entries().unwrap_err().to_string();
        assert!(err.contains("entry 1"), "{err}");
    }
}
