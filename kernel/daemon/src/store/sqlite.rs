//! The log in an SQLite file on the controller's machine: WAL mode (one writer, readers
//! beside it), `synchronous = FULL` (a commit is fsynced before it returns). The schema
//! version is `PRAGMA user_version`.

use std::path::{Path, PathBuf};

use gantry_kernel::Time;
use rusqlite::{params, Connection, OptionalExtension};

use super::{Backend, Record, StoreError, SCHEMA_VERSION};

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

impl Backend for Sqlite {
    fn schema_version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))?)
    }

    fn last_seq(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT COALESCE(MAX(seq), 0) FROM log", [], |r| r.get(0))?)
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
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO log (time, entry) VALUES (?1, ?2)")?;
            let mut component = tx.prepare_cached(
                "INSERT OR IGNORE INTO components (sha256, bytes) VALUES (?1, ?2)",
            )?;
            let mut environment = tx.prepare_cached(
                "INSERT OR IGNORE INTO environments (sha256, env) VALUES (?1, ?2)",
            )?;
            for r in &records {
                match r {
                    Record::Entry(time, text) => {
                        insert.execute(params![time, text])?;
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
        Ok(Box::new(Self {
            conn,
            path: self.path.clone(),
        }))
    }
}
