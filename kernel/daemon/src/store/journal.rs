//! The log's group-committing writer: entries are queued in order under the
//! controller's lock, and one writer thread commits everything queued so far in one
//! transaction of the backend (one fsync, or one PostgreSQL commit, for the group).

use gantry_kernel::Time;

use super::{encode, Entry, Record, Store, StoreError};

/// A position in the log: the sequence number of an entry. Entries up to a ticket are
/// durable once it is.
pub type Ticket = u64;

/// Why the writer stopped.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct JournalError {
    pub message: String,
    /// Another controller took over: the database refused this one's write (see
    /// [`StoreError::Fenced`]).
    pub fenced: bool,
}

#[derive(Default)]
struct Queue {
    records: Vec<Record>,
    /// Ticket of the last record queued.
    queued: Ticket,
    /// Everything up to this ticket is committed.
    durable: Ticket,
    failed: Option<JournalError>,
}

struct JournalShared {
    queue: std::sync::Mutex<Queue>,
    work: std::sync::Condvar,
    committed: std::sync::Condvar,
    durable: tokio::sync::watch::Sender<Ticket>,
}

/// The log's group-committing writer. Cloning gives another handle to the same writer.
#[derive(Clone)]
pub struct Journal(std::sync::Arc<JournalShared>);

impl Journal {
    /// Hands `store` to a writer thread. Nothing else may write to it afterwards.
    pub fn start(mut store: Store) -> Result<Self, StoreError> {
        // Tickets continue the log's sequence numbers: the n-th entry queued from here is
        // row `last + n`, since rows are only ever appended.
        let last = store.last_seq()? as Ticket;
        let (durable, _) = tokio::sync::watch::channel(last);
        let shared = std::sync::Arc::new(JournalShared {
            queue: std::sync::Mutex::new(Queue {
                queued: last,
                durable: last,
                ..Queue::default()
            }),
            work: std::sync::Condvar::new(),
            committed: std::sync::Condvar::new(),
            durable,
        });
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("gantry-journal".into())
            .spawn(move || write_loop(store, &writer))
            .map_err(|e| JournalError {
                message: format!("cannot start the writer thread: {e}"),
                fenced: false,
            })?;
        Ok(Self(shared))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.0.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, records: impl IntoIterator<Item = Record>) -> Result<Ticket, StoreError> {
        let mut q = self.lock();
        if let Some(e) = &q.failed {
            return Err(e.clone().into());
        }
        for r in records {
            // Components and environments go to their own tables: they take no place
            // in the log.
            if matches!(r, Record::Entry(..)) {
                q.queued += 1;
            }
            q.records.push(r);
        }
        let ticket = q.queued;
        drop(q);
        self.0.work.notify_one();
        Ok(ticket)
    }

    /// Queues entries (in order, after everything queued before); returns their ticket.
    pub fn queue(&self, time: Time, entries: &[Entry]) -> Result<Ticket, StoreError> {
        self.push(encode(time, entries)?)
    }

    /// Queues a component's bytes (kept once per sha256).
    pub fn queue_component(&self, sha256: &str, bytes: &[u8]) -> Result<Ticket, StoreError> {
        self.push([Record::Component(sha256.to_string(), bytes.to_vec())])
    }

    /// The ticket of the last entry queued: everything queued so far is durable once it
    /// is.
    pub fn queued(&self) -> Ticket {
        self.lock().queued
    }

    /// Blocks until everything up to `ticket` is on disk.
    pub fn wait(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut q = self.lock();
        loop {
            if let Some(e) = &q.failed {
                return Err(e.clone().into());
            }
            if q.durable >= ticket {
                return Ok(());
            }
            q = self.0.committed.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Why the writer stopped, once it has.
    pub fn failure(&self) -> Option<JournalError> {
        self.lock().failed.clone()
    }

    /// Waits, without blocking a thread, until everything up to `ticket` is on disk.
    pub async fn durable(&self, ticket: Ticket) -> Result<(), StoreError> {
        let mut rx = self.0.durable.subscribe();
        let _ = rx.wait_for(|&d| d >= ticket).await;
        match &self.lock().failed {
            Some(e) => Err(e.clone().into()),
            None => Ok(()),
        }
    }
}

fn write_loop(mut store: Store, j: &JournalShared) {
    loop {
        let (records, upto) = {
            let mut q = j.queue.lock().unwrap_or_else(|p| p.into_inner());
            while q.records.is_empty() {
                q = j.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
            (std::mem::take(&mut q.records), q.queued)
        };
        let result = store.backend.commit(records);
        let mut q = j.queue.lock().unwrap_or_else(|p| p.into_inner());
        match result {
            Ok(()) => q.durable = upto,
            Err(e) => {
                tracing::error!(error = %e, "state database write failed");
                q.failed = Some(JournalError {
                    fenced: matches!(e, StoreError::Fenced { .. }),
                    message: e.to_string(),
                });
            }
        }
        let failed = q.failed.is_some();
        drop(q);
        j.committed.notify_all();
        // Failure wakes every async waiter too; they read the error from the queue.
        j.durable
            .send_replace(if failed { Ticket::MAX } else { upto });
        if failed {
            return;
        }
    }
}
