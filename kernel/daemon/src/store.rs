//! The controller's durable log: every accepted submission and every decision, in order,
//! in an SQLite database in WAL mode with full synchronous commits. An entry is on disk
//! when [`Store::append`] returns, and only then is it acknowledged or acted on.
//!
//! A restart rebuilds the scheduler by applying the log from the start
//! (`state::Controller::restore`). The log is the truth; memory is a cache of it.

use std::path::Path;

use gantry_kernel::job::{Allocation, JobOutcome, JobSpec};
use gantry_kernel::{JobId, Time};
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

/// What a job needs besides the kernel's view of it: what to run and where its output goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Launch {
    pub script: String,
    pub argv: Vec<String>,
    pub workdir: String,
    pub env: Vec<(String, String)>,
    pub output: String,
    pub error: String,
    pub uid: u32,
    pub gid: u32,
    /// The dependency text as given, for display.
    pub dependency: String,
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
        spec: Box<JobSpec>,
        launch: Box<Launch>,
    },
    Started {
        job: JobId,
        allocation: Allocation,
    },
    Ended {
        job: JobId,
        outcome: JobOutcome,
        usage: Usage,
    },
    Cancelled {
        job: JobId,
    },
    DependencyNeverSatisfied {
        job: JobId,
    },
    Preempted {
        job: JobId,
        mode: gantry_abi::PreemptMode,
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
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state database {path}: {source}")]
    Open {
        path: String,
        source: rusqlite::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("state database entry {seq} is unreadable: {source}")]
    Corrupt { seq: i64, source: serde_json::Error },
    #[error("state database: cannot encode an entry: {0}")]
    Encode(serde_json::Error),
}

pub struct Store {
    conn: Connection,
}

/// One entry read back: its sequence number, the time it happened, what happened.
pub type Logged = (i64, Time, Entry);

impl Store {
    /// Opens (creating if needed) the database at `path`.
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
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS log (
                 seq INTEGER PRIMARY KEY,
                 time INTEGER NOT NULL,
                 entry TEXT NOT NULL
             );
             CREATE TABLE IF NOT EXISTS components (
                 sha256 TEXT PRIMARY KEY,
                 bytes BLOB NOT NULL
             );",
        )
        .map_err(open_err)?;
        Ok(Self { conn })
    }

    /// Appends entries in one transaction; they are on disk when this returns.
    pub fn append(&mut self, time: Time, entries: &[Entry]) -> Result<(), StoreError> {
        if entries.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        {
            let mut insert = tx.prepare_cached("INSERT INTO log (time, entry) VALUES (?1, ?2)")?;
            for e in entries {
                let text = serde_json::to_string(e).map_err(StoreError::Encode)?;
                insert.execute(params![time, text])?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Result<Vec<Logged>, StoreError> {
        let mut q = self
            .conn
            .prepare("SELECT seq, time, entry FROM log ORDER BY seq")?;
        let rows = q.query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, String>(2)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (seq, time, text) = row?;
            let entry = serde_json::from_str(&text)
                .map_err(|source| StoreError::Corrupt { seq, source })?;
            out.push((seq, time, entry));
        }
        Ok(out)
    }

    /// Keeps a component's bytes (once per sha256).
    pub fn put_component(&mut self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO components (sha256, bytes) VALUES (?1, ?2)",
            params![sha256, bytes],
        )?;
        Ok(())
    }

    pub fn component(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .conn
            .query_row(
                "SELECT bytes FROM components WHERE sha256 = ?1",
                params![sha256],
                |r| r.get(0),
            )
            .optional()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gantry_kernel::ResourceRequest;

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
                    spec: Box::new(spec.clone()),
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
                        allocation: allocation.clone(),
                    },
                    Entry::Ended {
                        job: JobId(1),
                        outcome: JobOutcome::Exited(3),
                        usage: Usage::default(),
                    },
                ],
            )
            .unwrap();
            s.append(7, &[Entry::Cancelled { job: JobId(2) }]).unwrap();
            s.put_component("abc", b"bytes").unwrap();
            s.put_component("abc", b"bytes").unwrap();
        }
        let s = Store::open(&path).unwrap();
        let e = s.entries().unwrap();
        assert_eq!(e.len(), 4);
        assert_eq!(e[0].1, 5);
        assert!(matches!(&e[0].2, Entry::Submitted { spec: s, .. } if **s == spec));
        match &e[1].2 {
            Entry::Started { allocation, .. } => {
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
                outcome: JobOutcome::Exited(3),
                ..
            }
        ));
        assert_eq!(e[3].2, Entry::Cancelled { job: JobId(2) });
        assert_eq!(s.component("abc").unwrap().as_deref(), Some(&b"bytes"[..]));
        assert_eq!(s.component("def").unwrap(), None);
    }

    #[test]
    fn an_unreadable_entry_is_an_error_with_its_number() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let s = Store::open(&path).unwrap();
        s.conn
            .execute("INSERT INTO log (time, entry) VALUES (1, 'not json')", [])
            .unwrap();
        let err = s.entries().unwrap_err().to_string();
        assert!(err.contains("entry 1"), "{err}");
    }
}
