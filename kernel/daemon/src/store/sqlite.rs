//! The log in an SQLite file on the controller's machine: WAL mode (one writer, readers
//! beside it), `synchronous = FULL` (a commit is fsynced before it returns). The schema
//! version is `PRAGMA user_version`.

use std::path::{Path, PathBuf};

use gantry_kernel::Time;
use rusqlite::{params, Connection, OptionalExtension};

use super::{
    AccountingFilter, AccountingRow, Backend, Record, StoreError, UsageSum, SCHEMA_VERSION,
};

/// How long a connection waits for another's write transaction (the journal's, or a
/// compaction's batch) before failing.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

pub(crate) struct Sqlite {
    pub(super) conn: Connection,
    path: PathBuf,
}

impl Sqlite {
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open {
            path: path.display().to_string(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(open_err)?;
        // FULL: a commit is fsynced before it returns; a power cut loses nothing
        // acknowledged.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(open_err)?;
        let found: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(open_err)?;
        if found > SCHEMA_VERSION {
            return Err(StoreError::Newer {
                path: path.display().to_string(),
                found,
                max: SCHEMA_VERSION,
                ours: env!("CARGO_PKG_VERSION"),
            });
        }
        // Every step is idempotent, and all of them commit together with the new
        // version: a migration cut short leaves the old schema, to be migrated again.
        let tx = conn.unchecked_transaction().map_err(open_err)?;
        tx.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS log (
                 seq INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 entry TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS components (
                 sha256 TEXT PRIMARY KEY,
                 bytes BLOB NOT NULL
             );
             CREATE TABLE IF NOT EXISTS environments (
                 sha256 TEXT PRIMARY KEY,
                 env TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS snapshots (
                 upto INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 snapshot TEXT NOT NULL
             );
             {ACCOUNTING_SCHEMA}
             {ACCOUNTING_INDEXES}
             PRAGMA user_version = {SCHEMA_VERSION};"
        ))
        .map_err(open_err)?;
        tx.commit().map_err(open_err)?;
        if found < SCHEMA_VERSION {
            tracing::info!(path = %path.display(), from = found, to = SCHEMA_VERSION, "state database schema migrated");
        }
        Ok(Self {
            conn,
            path: path.to_path_buf(),
        })
    }
}

/// The accounting table (PostgreSQL's has the same columns in its own types).
pub(super) const ACCOUNTING_SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS accounting (
        job INTEGER PRIMARY KEY,
        array_job INTEGER NOT NULL,
        user_name TEXT NOT NULL,
        account TEXT NOT NULL,
        partition TEXT NOT NULL,
        name TEXT NOT NULL,
        state TEXT NOT NULL,
        submit INTEGER NOT NULL,
        start_time INTEGER,
        end_time INTEGER NOT NULL,
        suspended_s INTEGER NOT NULL,
        cores INTEGER NOT NULL,
        gpus INTEGER NOT NULL,
        record BLOB NOT NULL
    );
";

/// The accounting table's indexes, the same in both backends: what `sacct` filters by
/// (end and submit time, user, account, state, array) and `sreport` ranges over.
pub(super) const ACCOUNTING_INDEXES: &str = "
    CREATE INDEX IF NOT EXISTS accounting_end ON accounting (end_time);
    CREATE INDEX IF NOT EXISTS accounting_submit ON accounting (submit);
    CREATE INDEX IF NOT EXISTS accounting_user ON accounting (user_name, end_time);
    CREATE INDEX IF NOT EXISTS accounting_account ON accounting (account, end_time);
    CREATE INDEX IF NOT EXISTS accounting_state ON accounting (state, end_time);
    CREATE INDEX IF NOT EXISTS accounting_array ON accounting (array_job);
";

/// The `WHERE` clause (after `job > ?1`) for `filter`, with `?` placeholders numbered
/// from 2 by `placeholder`, and the values in order. Shared by both backends: only the
/// placeholder syntax differs.
pub(super) fn accounting_where(
    filter: &AccountingFilter,
    placeholder: impl Fn(usize) -> String,
) -> (String, Vec<SqlValue>) {
    let mut sql = String::new();
    let mut values: Vec<SqlValue> = Vec::new();
    let next = |v: SqlValue, values: &mut Vec<SqlValue>| {
        values.push(v);
        placeholder(values.len() + 1)
    };
    if filter.since > 0 {
        let p = next(SqlValue::Int(filter.since), &mut values);
        sql += &format!(" AND submit >= {p}");
    }
    if filter.window_end > 0 {
        let p = next(SqlValue::Int(filter.window_end), &mut values);
        sql += &format!(" AND submit <= {p}");
    }
    if filter.window_start > 0 {
        let p = next(SqlValue::Int(filter.window_start), &mut values);
        sql += &format!(" AND end_time >= {p}");
    }
    for (column, list) in [
        ("user_name", &filter.users),
        ("account", &filter.accounts),
        ("partition", &filter.partitions),
        ("state", &filter.states),
        ("name", &filter.names),
    ] {
        if list.is_empty() {
            continue;
        }
        let ps: Vec<String> = list
            .iter()
            .map(|v| next(SqlValue::Text(v.clone()), &mut values))
            .collect();
        sql += &format!(" AND {column} IN ({})", ps.join(", "));
    }
    if !filter.jobs.is_empty() {
        let ps: Vec<String> = filter
            .jobs
            .iter()
            .map(|&j| next(SqlValue::Int(j as i64), &mut values))
            .collect();
        let ps = ps.join(", ");
        sql += &format!(" AND (job IN ({ps}) OR array_job IN ({ps}))");
    }
    (sql, values)
}

/// A value bound to a query built at run time.
#[derive(Debug, Clone)]
pub(super) enum SqlValue {
    Int(i64),
    Text(String),
}

impl rusqlite::ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        match self {
            Self::Int(i) => i.to_sql(),
            Self::Text(t) => t.to_sql(),
        }
    }
}

fn accounting_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<AccountingRow> {
    Ok(AccountingRow {
        job: r.get::<_, i64>(0)? as u64,
        array_job: r.get::<_, i64>(1)? as u64,
        user: r.get(2)?,
        account: r.get(3)?,
        partition: r.get(4)?,
        name: r.get(5)?,
        state: r.get(6)?,
        submit: r.get(7)?,
        start: r.get(8)?,
        end: r.get(9)?,
        suspended_s: r.get(10)?,
        cores: r.get(11)?,
        gpus: r.get(12)?,
        record: r.get(13)?,
    })
}

/// The columns [`accounting_row`] reads, in order.
pub(super) const ACCOUNTING_COLUMNS: &str = "job, array_job, user_name, account, partition, name, state, submit, start_time, end_time, suspended_s, cores, gpus, record";

impl Sqlite {
    /// A transaction that takes the write lock at once (waiting for it up to the busy
    /// timeout): a deferred one that read first would fail at once, without waiting,
    /// when another connection (the journal's, a compaction's) wrote meanwhile.
    fn write_transaction(&mut self) -> rusqlite::Result<rusqlite::Transaction<'_>> {
        self.conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
    }
}

impl Backend for Sqlite {
    fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn last_seq(&mut self) -> Result<i64, StoreError> {
        Ok(self.conn.query_row(
            "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM log),
                        (SELECT COALESCE(MAX(upto), 0) FROM snapshots))",
            [],
            |r| r.get(0),
        )?)
    }

    fn entries_after(
        &mut self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Time, String)>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT seq, time, entry FROM log WHERE seq > ?1 ORDER BY seq LIMIT ?2",
        )?;
        let rows = q.query_map(params![seq, limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn all_environments(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let mut q = self.conn.prepare("SELECT sha256, env FROM environments")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn all_components(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let mut q = self.conn.prepare("SELECT sha256, bytes FROM components")?;
        let rows = q.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn entry(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT entry FROM log WHERE seq = ?1")?
            .query_row(params![seq], |r| r.get(0))
            .optional()?)
    }

    fn environment(&mut self, sha256: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT env FROM environments WHERE sha256 = ?1")?
            .query_row(params![sha256], |r| r.get(0))
            .optional()?)
    }

    fn component(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .prepare_cached("SELECT bytes FROM components WHERE sha256 = ?1")?
            .query_row(params![sha256], |r| r.get(0))
            .optional()?)
    }

    /// One transaction: one fsync for the whole group.
    fn commit(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            // Numbered explicitly: after a compaction deleted the last entries, SQLite's
            // own numbering would reuse theirs.
            let mut next: i64 = tx.query_row(
                "SELECT MAX((SELECT COALESCE(MAX(seq), 0) FROM log),
                            (SELECT COALESCE(MAX(upto), 0) FROM snapshots)) + 1",
                [],
                |r| r.get(0),
            )?;
            let mut insert =
                tx.prepare_cached("INSERT INTO log (seq, time, entry) VALUES (?1, ?2, ?3)")?;
            let mut component = tx.prepare_cached(
                "INSERT OR IGNORE INTO components (sha256, bytes) VALUES (?1, ?2)",
            )?;
            let mut environment = tx.prepare_cached(
                "INSERT OR IGNORE INTO environments (sha256, env) VALUES (?1, ?2)",
            )?;
            for r in &records {
                match r {
                    Record::Entry(time, text) => {
                        insert.execute(params![next, time, text])?;
                        next += 1;
                    }
                    Record::EntryAt(seq, time, text) => {
                        insert.execute(params![seq, time, text])?;
                        next = next.max(seq + 1);
                    }
                    Record::Component(sha, bytes) => {
                        component.execute(params![sha, bytes])?;
                    }
                    Record::Environment(sha, env) => {
                        environment.execute(params![sha, env])?;
                    }
                }
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn another(&self) -> Result<Box<dyn Backend>, StoreError> {
        let conn = Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|source| StoreError::Open {
            path: self.path.display().to_string(),
            source,
        })?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        Ok(Box::new(Self {
            conn,
            path: self.path.clone(),
        }))
    }

    fn writer(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(Box::new(Self::open(&self.path)?))
    }

    fn latest_snapshot(&mut self) -> Result<Option<(i64, String)>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT upto, snapshot FROM snapshots ORDER BY upto DESC LIMIT 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    fn latest_snapshot_upto(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(upto), 0) FROM snapshots", [], |r| {
                r.get(0)
            })?)
    }

    fn write_snapshot(&mut self, upto: i64, time: Time, json: String) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        tx.execute(
            "INSERT OR REPLACE INTO snapshots (upto, time, snapshot) VALUES (?1, ?2, ?3)",
            params![upto, time, json],
        )?;
        tx.execute("DELETE FROM snapshots WHERE upto < ?1", params![upto])?;
        tx.commit()?;
        Ok(())
    }

    fn write_accounting(&mut self, rows: Vec<AccountingRow>) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            let mut insert = tx.prepare_cached(&format!(
                "INSERT OR REPLACE INTO accounting ({ACCOUNTING_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
            ))?;
            for r in &rows {
                insert.execute(params![
                    r.job as i64,
                    r.array_job as i64,
                    r.user,
                    r.account,
                    r.partition,
                    r.name,
                    r.state,
                    r.submit,
                    r.start,
                    r.end,
                    r.suspended_s,
                    r.cores,
                    r.gpus,
                    r.record
                ])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn delete_entries(&mut self, seqs: Vec<i64>) -> Result<(), StoreError> {
        let tx = self.write_transaction()?;
        {
            let mut delete = tx.prepare_cached("DELETE FROM log WHERE seq = ?1")?;
            for s in seqs {
                delete.execute(params![s])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn accounting_rows(
        &mut self,
        after: u64,
        limit: i64,
    ) -> Result<Vec<AccountingRow>, StoreError> {
        let mut q = self.conn.prepare_cached(&format!(
            "SELECT {ACCOUNTING_COLUMNS} FROM accounting WHERE job > ?1 ORDER BY job LIMIT ?2"
        ))?;
        let rows = q.query_map(params![after as i64, limit], accounting_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn accounting(&mut self, filter: &AccountingFilter) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (clause, values) = accounting_where(filter, |i| format!("?{i}"));
        let limit_at = values.len() + 2;
        let sql = format!(
            "SELECT job, record FROM accounting WHERE job > ?1{clause} ORDER BY job LIMIT ?{limit_at}"
        );
        let mut q = self.conn.prepare(&sql)?;
        let mut bound: Vec<&dyn rusqlite::ToSql> = vec![];
        let after = filter.after_job as i64;
        bound.push(&after);
        for v in &values {
            bound.push(v);
        }
        bound.push(&filter.limit);
        let rows = q.query_map(&bound[..], |r| {
            Ok((r.get::<_, i64>(0)? as u64, r.get::<_, Vec<u8>>(1)?))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn accounting_usage(&mut self, start: Time, end: Time) -> Result<Vec<UsageSum>, StoreError> {
        let mut q = self.conn.prepare_cached(
            "SELECT user_name, account, SUM(cores * s), SUM(gpus * s), COUNT(*) FROM (
                 SELECT user_name, account, cores, gpus,
                        MIN(end_time, ?2) - MAX(start_time, ?1) - suspended_s AS s
                 FROM accounting
                 WHERE end_time > ?1 AND start_time IS NOT NULL AND start_time < ?2
             ) WHERE s > 0 GROUP BY user_name, account",
        )?;
        let rows = q.query_map(params![start, end], |r| {
            Ok(UsageSum {
                user: r.get(0)?,
                account: r.get(1)?,
                core_seconds: r.get::<_, i64>(2)? as f64,
                gpu_seconds: r.get::<_, i64>(3)? as f64,
                jobs: r.get::<_, i64>(4)? as u64,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
