//! The log in a PostgreSQL database that several controllers share; one of them, the
//! holder of the lease, writes.
//!
//! - **Lease.** One row (`lease`) names the active controller, where clients reach it,
//!   until when its lease runs (the database's clock, so controllers' clocks do not
//!   matter), and its *epoch*: a number raised by one at every takeover.
//! - **Fencing.** Every log entry carries its writer's epoch, and a trigger refuses an
//!   entry whose epoch is not the lease's (reading the lease row `FOR SHARE`, so a
//!   takeover waits for a commit in flight and a commit after a takeover sees the new
//!   epoch). A controller paused past its lease, or cut off from the database, can never
//!   write again once another has taken over.
//! - **Durability.** A commit returns once PostgreSQL has committed it (with the server's
//!   `synchronous_commit`, which must stay `on` — or `remote_apply` with a standby
//!   server — for an acknowledged entry to survive the server's crash).
//!
//! The client is synchronous (`postgres`, tokio-postgres underneath, with a runtime of
//! its own), so each connection lives on a thread of its own and is handed work through
//! a channel: callers may be on the daemon's async runtime, where blocking on another
//! runtime is not allowed.

use std::sync::mpsc;
use std::time::Duration;

use gantry_kernel::Time;
use postgres::error::SqlState;
use postgres::{Client, NoTls};

use super::sqlite::{accounting_where, SqlValue, ACCOUNTING_INDEXES};
use super::{
    AccountingFilter, AccountingRow, Backend, Record, StoreError, UsageSum, SCHEMA_VERSION,
};

/// The SQLSTATE the fencing trigger raises.
const FENCED: &str = "GF001";

/// Serialises schema migrations between controllers opening the same database.
const MIGRATION_LOCK: i64 = 0x6761_6e74_7279; // "gantry"

/// `url` with its password, if any, replaced by `***`, for messages and logs.
pub fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (authority, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    match authority.rsplit_once('@') {
        Some((userinfo, host)) if userinfo.contains(':') => {
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{scheme}://{user}:***@{host}{tail}")
        }
        _ => url.to_string(),
    }
}

type Work = Box<dyn FnOnce(&mut Client) + Send>;

/// One connection, on a thread of its own (the thread ends when the last handle goes).
#[derive(Clone)]
struct Connection {
    work: mpsc::Sender<Work>,
    location: String,
}

impl Connection {
    fn open(url: &str) -> Result<Self, StoreError> {
        let location = redacted(url);
        let unusable = |message: String| StoreError::Unusable {
            location: location.clone(),
            message,
        };
        let mut config: postgres::Config = url
            .parse()
            .map_err(|e| unusable(format!("not a PostgreSQL URL: {e}")))?;
        // A database that stops answering must show as an error, not a hang: the lease
        // depends on it.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(5));
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(Duration::from_secs(10));
        }
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            // Which process a session belongs to, in `pg_stat_activity`.
            config.application_name(&format!("gantryd {}", std::process::id()));
        }
        let (work, queue) = mpsc::channel::<Work>();
        let (ready, connected) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("gantry-postgres".into())
            .spawn(move || {
                let mut client = match config.connect(NoTls) {
                    Ok(c) => {
                        let _ = ready.send(Ok(()));
                        c
                    }
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                while let Ok(w) = queue.recv() {
                    w(&mut client);
                }
            })
            .map_err(|e| unusable(format!("cannot start a connection thread: {e}")))?;
        match connected.recv() {
            Ok(Ok(())) => Ok(Self { work, location }),
            Ok(Err(source)) => Err(StoreError::Postgres { location, source }),
            Err(_) => Err(unusable("the connection thread stopped".into())),
        }
    }

    /// Runs `f` on the connection's thread and waits for its answer.
    fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (answer, answered) = mpsc::sync_channel(1);
        let gone = || StoreError::Unusable {
            location: self.location.clone(),
            message: "the connection thread stopped".into(),
        };
        self.work
            .send(Box::new(move |c| {
                let _ = answer.send(f(c));
            }))
            .map_err(|_| gone())?;
        answered
            .recv()
            .map_err(|_| gone())?
            .map_err(|source| StoreError::Postgres {
                location: self.location.clone(),
                source,
            })
    }
}

/// Creates or migrates the schema, in one transaction under an advisory lock.
fn migrate(c: &Connection) -> Result<(), StoreError> {
    let found = c.call(|c| {
        let mut tx = c.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version bigint NOT NULL)")?;
        let found: i64 = tx
            .query_opt("SELECT version FROM schema_version", &[])?
            .map_or(0, |r| r.get(0));
        if found > SCHEMA_VERSION {
            return Ok(found); // left untouched: the transaction rolls back
        }
        // Every step is idempotent; all commit with the version.
        tx.batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS log (
                 seq bigint PRIMARY KEY,
                 time bigint NOT NULL,
                 entry text NOT NULL,
                 epoch bigint NOT NULL
             );
             CREATE TABLE IF NOT EXISTS components (
                 sha256 text PRIMARY KEY,
                 bytes bytea NOT NULL
             );
             CREATE TABLE IF NOT EXISTS environments (
                 sha256 text PRIMARY KEY,
                 env text NOT NULL
             );
             CREATE TABLE IF NOT EXISTS lease (
                 id integer PRIMARY KEY CHECK (id = 1),
                 epoch bigint NOT NULL,
                 holder text NOT NULL,
                 address text NOT NULL,
                 expires timestamptz NOT NULL
             );
             INSERT INTO lease VALUES (1, 0, '', '', 'epoch') ON CONFLICT DO NOTHING;
             CREATE OR REPLACE FUNCTION gantry_fence() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.epoch IS DISTINCT FROM (SELECT epoch FROM lease WHERE id = 1 FOR SHARE) THEN
                     RAISE EXCEPTION 'log entry of epoch %, but the lease is at another: this controller is no longer the active one', NEW.epoch
                         USING ERRCODE = '{FENCED}';
                 END IF;
                 RETURN NEW;
             END $$;
             DROP TRIGGER IF EXISTS log_fence ON log;
             CREATE TRIGGER log_fence BEFORE INSERT ON log FOR EACH ROW EXECUTE FUNCTION gantry_fence();
             CREATE TABLE IF NOT EXISTS snapshots (
                 upto bigint PRIMARY KEY,
                 time bigint NOT NULL,
                 snapshot text NOT NULL,
                 epoch bigint NOT NULL
             );
             DROP TRIGGER IF EXISTS snapshots_fence ON snapshots;
             CREATE TRIGGER snapshots_fence BEFORE INSERT ON snapshots FOR EACH ROW EXECUTE FUNCTION gantry_fence();
             CREATE TABLE IF NOT EXISTS accounting (
                 job bigint PRIMARY KEY,
                 array_job bigint NOT NULL,
                 user_name text NOT NULL,
                 account text NOT NULL,
                 partition text NOT NULL,
                 name text NOT NULL,
                 state text NOT NULL,
                 submit bigint NOT NULL,
                 start_time bigint,
                 end_time bigint NOT NULL,
                 suspended_s bigint NOT NULL,
                 cores bigint NOT NULL,
                 gpus bigint NOT NULL,
                 record bytea NOT NULL
             );
             {ACCOUNTING_INDEXES}
             DELETE FROM schema_version;
             INSERT INTO schema_version VALUES ({SCHEMA_VERSION});"
        ))?;
        tx.commit()?;
        Ok(found)
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::Newer {
            path: c.location.clone(),
            found,
            max: SCHEMA_VERSION,
            ours: env!("CARGO_PKG_VERSION"),
        });
    }
    if found < SCHEMA_VERSION {
        tracing::info!(database = %c.location, from = found, to = SCHEMA_VERSION, "state database schema created or migrated");
    }
    Ok(())
}

pub(crate) struct Postgres {
    conn: Connection,
    url: String,
    /// The lease epoch this store writes under; `None`: it may only read.
    epoch: Option<i64>,
    /// The sequence number of the next entry (0: to be read from the log).
    next: i64,
}

impl Postgres {
    pub fn open(url: &str, epoch: Option<i64>) -> Result<Self, StoreError> {
        let conn = Connection::open(url)?;
        migrate(&conn)?;
        Ok(Self {
            conn,
            url: url.to_string(),
            epoch,
            next: 0,
        })
    }
}

impl Backend for Postgres {
    fn schema_version(&mut self) -> Result<i64, StoreError> {
        self.conn.call(|c| {
            Ok(c.query_one("SELECT version FROM schema_version", &[])?
                .get(0))
        })
    }

    fn last_seq(&mut self) -> Result<i64, StoreError> {
        self.conn.call(|c| {
            Ok(c.query_one(
                "SELECT GREATEST((SELECT COALESCE(MAX(seq), 0) FROM log),
                                 (SELECT COALESCE(MAX(upto), 0) FROM snapshots))",
                &[],
            )?
            .get(0))
        })
    }

    fn entries_after(
        &mut self,
        seq: i64,
        limit: i64,
    ) -> Result<Vec<(i64, Time, String)>, StoreError> {
        self.conn.call(move |c| {
            let rows = c.query(
                "SELECT seq, time, entry FROM log WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&seq, &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect())
        })
    }

    fn entry(&mut self, seq: i64) -> Result<Option<String>, StoreError> {
        self.conn.call(move |c| {
            Ok(
                c.query_opt("SELECT entry FROM log WHERE seq = $1", &[&seq])?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn entries_at(&mut self, seqs: &[i64]) -> Result<Vec<(i64, String)>, StoreError> {
        let seqs = seqs.to_vec();
        self.conn.call(move |c| {
            Ok(
                c.query("SELECT seq, entry FROM log WHERE seq = ANY($1)", &[&seqs])?
                    .iter()
                    .map(|r| (r.get(0), r.get(1)))
                    .collect(),
            )
        })
    }

    fn environment(&mut self, sha256: &str) -> Result<Option<String>, StoreError> {
        let sha = sha256.to_string();
        self.conn.call(move |c| {
            Ok(
                c.query_opt("SELECT env FROM environments WHERE sha256 = $1", &[&sha])?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn component(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let sha = sha256.to_string();
        self.conn.call(move |c| {
            Ok(
                c.query_opt("SELECT bytes FROM components WHERE sha256 = $1", &[&sha])?
                    .map(|r| r.get(0)),
            )
        })
    }

    fn all_environments(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        self.conn.call(|c| {
            Ok(c.query("SELECT sha256, env FROM environments", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    fn all_components(&mut self) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.conn.call(|c| {
            Ok(c.query("SELECT sha256, bytes FROM components", &[])?
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect())
        })
    }

    /// One transaction, one round trip per kind of record: the entries go in as arrays.
    fn commit(&mut self, records: Vec<Record>) -> Result<(), StoreError> {
        let entries = records
            .iter()
            .filter(|r| matches!(r, Record::Entry(..) | Record::EntryAt(..)))
            .count() as i64;
        let numbered = records.iter().any(|r| matches!(r, Record::EntryAt(..)));
        let epoch = match self.epoch {
            Some(e) => e,
            None if entries == 0 => 0,
            None => {
                return Err(StoreError::Unusable {
                    location: self.conn.location.clone(),
                    message: "this controller holds no lease: it may not write the log".into(),
                })
            }
        };
        if self.next == 0 && entries > 0 {
            self.next = self.last_seq()? + 1;
        }
        let first = self.next;
        let result = self.conn.call(move |c| {
            let (mut seqs, mut times, mut texts) = (Vec::new(), Vec::new(), Vec::new());
            let (mut env_shas, mut envs) = (Vec::new(), Vec::new());
            let mut components = Vec::new();
            for r in records {
                match r {
                    Record::Entry(time, text) => {
                        seqs.push(first + seqs.len() as i64);
                        times.push(time);
                        texts.push(text);
                    }
                    Record::EntryAt(seq, time, text) => {
                        seqs.push(seq);
                        times.push(time);
                        texts.push(text);
                    }
                    Record::Environment(sha, env) => {
                        if !env_shas.contains(&sha) {
                            env_shas.push(sha);
                            envs.push(env);
                        }
                    }
                    Record::Component(sha, bytes) => components.push((sha, bytes)),
                }
            }
            let mut tx = c.transaction()?;
            if !env_shas.is_empty() {
                tx.execute(
                    "INSERT INTO environments (sha256, env)
                     SELECT * FROM unnest($1::text[], $2::text[]) ON CONFLICT DO NOTHING",
                    &[&env_shas, &envs],
                )?;
            }
            for (sha, bytes) in &components {
                tx.execute(
                    "INSERT INTO components (sha256, bytes) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                    &[sha, bytes],
                )?;
            }
            if !seqs.is_empty() {
                tx.execute(
                    "INSERT INTO log (seq, time, entry, epoch)
                     SELECT s, t, e, $4 FROM unnest($1::bigint[], $2::bigint[], $3::text[]) AS u(s, t, e)",
                    &[&seqs, &times, &texts, &epoch],
                )?;
            }
            tx.commit()
        });
        match result {
            Ok(()) if numbered => {
                self.next = 0; // read the position back next time
                Ok(())
            }
            Ok(()) => {
                self.next += entries;
                Ok(())
            }
            Err(StoreError::Postgres { source, .. })
                if source.code() == Some(&SqlState::from_code(FENCED)) =>
            {
                Err(StoreError::Fenced { epoch })
            }
            Err(e) => {
                // Whether it committed is unknown: read the position back next time.
                self.next = 0;
                Err(e)
            }
        }
    }

    fn another(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(Box::new(Self {
            conn: Connection::open(&self.url)?,
            url: self.url.clone(),
            epoch: None,
            next: 0,
        }))
    }

    fn writer(&self) -> Result<Box<dyn Backend>, StoreError> {
        Ok(Box::new(Self {
            conn: Connection::open(&self.url)?,
            url: self.url.clone(),
            epoch: self.epoch,
            next: 0,
        }))
    }

    fn latest_snapshot(&mut self) -> Result<Option<(i64, String)>, StoreError> {
        self.conn.call(|c| {
            Ok(c.query_opt(
                "SELECT upto, snapshot FROM snapshots ORDER BY upto DESC LIMIT 1",
                &[],
            )?
            .map(|r| (r.get(0), r.get(1))))
        })
    }

    fn latest_snapshot_upto(&mut self) -> Result<i64, StoreError> {
        self.conn.call(|c| {
            Ok(
                c.query_one("SELECT COALESCE(MAX(upto), 0) FROM snapshots", &[])?
                    .get(0),
            )
        })
    }

    fn write_snapshot(&mut self, upto: i64, time: Time, json: String) -> Result<(), StoreError> {
        let Some(epoch) = self.epoch else {
            return Err(StoreError::Unusable {
                location: self.conn.location.clone(),
                message: "this controller holds no lease: it may not write a snapshot".into(),
            });
        };
        let result = self.conn.call(move |c| {
            let mut tx = c.transaction()?;
            tx.execute(
                "INSERT INTO snapshots (upto, time, snapshot, epoch) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (upto) DO UPDATE SET time = EXCLUDED.time, snapshot = EXCLUDED.snapshot",
                &[&upto, &time, &json, &epoch],
            )?;
            tx.execute("DELETE FROM snapshots WHERE upto < $1", &[&upto])?;
            tx.commit()
        });
        match result {
            Err(StoreError::Postgres { source, .. })
                if source.code() == Some(&SqlState::from_code(FENCED)) =>
            {
                Err(StoreError::Fenced { epoch })
            }
            other => other,
        }
    }

    fn write_accounting(&mut self, rows: Vec<AccountingRow>) -> Result<(), StoreError> {
        self.conn.call(move |c| {
            let n = rows.len();
            let (mut jobs, mut arrays) = (Vec::with_capacity(n), Vec::with_capacity(n));
            let (mut users, mut accounts, mut partitions, mut names, mut states) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut submits, mut starts, mut ends, mut suspended) = (
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
                Vec::with_capacity(n),
            );
            let (mut cores, mut gpus, mut records) =
                (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
            for r in rows {
                jobs.push(r.job as i64);
                arrays.push(r.array_job as i64);
                users.push(r.user);
                accounts.push(r.account);
                partitions.push(r.partition);
                names.push(r.name);
                states.push(r.state);
                submits.push(r.submit);
                starts.push(r.start);
                ends.push(r.end);
                suspended.push(r.suspended_s);
                cores.push(i64::from(r.cores));
                gpus.push(i64::from(r.gpus));
                records.push(r.record);
            }
            c.execute(
                "INSERT INTO accounting (job, array_job, user_name, account, partition, name, state,
                                         submit, start_time, end_time, suspended_s, cores, gpus, record)
                 SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::text[], $4::text[], $5::text[],
                                      $6::text[], $7::text[], $8::bigint[], $9::bigint[], $10::bigint[],
                                      $11::bigint[], $12::bigint[], $13::bigint[], $14::bytea[])
                 ON CONFLICT (job) DO UPDATE SET
                     array_job = EXCLUDED.array_job, user_name = EXCLUDED.user_name,
                     account = EXCLUDED.account, partition = EXCLUDED.partition,
                     name = EXCLUDED.name, state = EXCLUDED.state, submit = EXCLUDED.submit,
                     start_time = EXCLUDED.start_time, end_time = EXCLUDED.end_time,
                     suspended_s = EXCLUDED.suspended_s, cores = EXCLUDED.cores,
                     gpus = EXCLUDED.gpus, record = EXCLUDED.record",
                &[
                    &jobs,
                    &arrays,
                    &users,
                    &accounts,
                    &partitions,
                    &names,
                    &states,
                    &submits,
                    &starts,
                    &ends,
                    &suspended,
                    &cores,
                    &gpus,
                    &records,
                ],
            )
            .map(|_| ())
        })
    }

    fn delete_entries(&mut self, seqs: Vec<i64>) -> Result<(), StoreError> {
        self.conn.call(move |c| {
            c.execute("DELETE FROM log WHERE seq = ANY($1)", &[&seqs])
                .map(|_| ())
        })
    }

    fn accounting_rows(
        &mut self,
        after: u64,
        limit: i64,
    ) -> Result<Vec<AccountingRow>, StoreError> {
        self.conn.call(move |c| {
            let rows = c.query(
                "SELECT job, array_job, user_name, account, partition, name, state, submit,
                        start_time, end_time, suspended_s, cores, gpus, record
                 FROM accounting WHERE job > $1 ORDER BY job LIMIT $2",
                &[&(after as i64), &limit],
            )?;
            Ok(rows
                .iter()
                .map(|r| AccountingRow {
                    job: r.get::<_, i64>(0) as u64,
                    array_job: r.get::<_, i64>(1) as u64,
                    user: r.get(2),
                    account: r.get(3),
                    partition: r.get(4),
                    name: r.get(5),
                    state: r.get(6),
                    submit: r.get(7),
                    start: r.get(8),
                    end: r.get(9),
                    suspended_s: r.get(10),
                    cores: r.get::<_, i64>(11) as u32,
                    gpus: r.get::<_, i64>(12) as u32,
                    record: r.get(13),
                })
                .collect())
        })
    }

    fn accounting(&mut self, filter: &AccountingFilter) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let (clause, values) = accounting_where(filter, |i| format!("${i}"));
        let limit_at = values.len() + 2;
        let sql = format!(
            "SELECT job, record FROM accounting WHERE job > $1{clause} ORDER BY job LIMIT ${limit_at}"
        );
        let (after, limit) = (filter.after_job as i64, filter.limit);
        self.conn.call(move |c| {
            let mut bound: Vec<&(dyn postgres::types::ToSql + Sync)> = vec![&after];
            for v in &values {
                bound.push(match v {
                    SqlValue::Int(i) => i,
                    SqlValue::Text(t) => t,
                });
            }
            bound.push(&limit);
            Ok(c.query(&sql, &bound)?
                .iter()
                .map(|r| (r.get::<_, i64>(0) as u64, r.get(1)))
                .collect())
        })
    }

    fn accounting_usage(&mut self, start: Time, end: Time) -> Result<Vec<UsageSum>, StoreError> {
        self.conn.call(move |c| {
            let rows = c.query(
                "SELECT user_name, account, SUM(cores * s)::float8, SUM(gpus * s)::float8, COUNT(*) FROM (
                     SELECT user_name, account, cores, gpus,
                            LEAST(end_time, $2) - GREATEST(start_time, $1) - suspended_s AS s
                     FROM accounting
                     WHERE end_time > $1 AND start_time IS NOT NULL AND start_time < $2
                 ) AS spans WHERE s > 0 GROUP BY user_name, account",
                &[&start, &end],
            )?;
            Ok(rows
                .iter()
                .map(|r| UsageSum {
                    user: r.get(0),
                    account: r.get(1),
                    core_seconds: r.get(2),
                    gpu_seconds: r.get(3),
                    jobs: r.get::<_, i64>(4) as u64,
                })
                .collect())
        })
    }
}

/// Who holds the lease, as the database says.
#[derive(Debug, Clone, PartialEq)]
pub struct Holder {
    pub epoch: i64,
    /// The controller's name (`host:pid`).
    pub holder: String,
    /// Where clients and agents reach it.
    pub address: String,
    /// Milliseconds until the lease runs out (negative: it has).
    pub expires_in_ms: i64,
}

/// The active controller's lease, on a connection of its own (a long commit never
/// delays a renewal).
#[derive(Clone)]
pub struct Lease {
    conn: Connection,
}

impl Lease {
    /// Connects, creating or migrating the schema if needed.
    pub fn connect(url: &str) -> Result<Self, StoreError> {
        let conn = Connection::open(url)?;
        migrate(&conn)?;
        Ok(Self { conn })
    }

    /// Takes the lease for `ttl` if it has run out; the new epoch if taken.
    pub fn try_acquire(
        &self,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Option<i64>, StoreError> {
        let (holder, address, secs) = (holder.to_string(), address.to_string(), ttl.as_secs_f64());
        self.conn.call(move |c| {
            Ok(c.query_opt(
                "UPDATE lease SET epoch = epoch + 1, holder = $1, address = $2,
                        expires = clock_timestamp() + make_interval(secs => $3)
                 WHERE id = 1 AND expires < clock_timestamp()
                 RETURNING epoch",
                &[&holder, &address, &secs],
            )?
            .map(|r| r.get(0)))
        })
    }

    /// Extends the lease held under `epoch` by `ttl` from now; false if another
    /// controller holds it now.
    pub fn renew(&self, epoch: i64, ttl: Duration) -> Result<bool, StoreError> {
        let secs = ttl.as_secs_f64();
        self.conn.call(move |c| {
            Ok(c.execute(
                "UPDATE lease SET expires = clock_timestamp() + make_interval(secs => $2)
                 WHERE id = 1 AND epoch = $1",
                &[&epoch, &secs],
            )? == 1)
        })
    }

    /// Gives the lease up at once (a clean stop): a standby need not wait for it to run
    /// out.
    pub fn release(&self, epoch: i64) -> Result<(), StoreError> {
        self.conn.call(move |c| {
            c.execute(
                "UPDATE lease SET expires = 'epoch' WHERE id = 1 AND epoch = $1",
                &[&epoch],
            )
            .map(|_| ())
        })
    }

    pub fn holder(&self) -> Result<Holder, StoreError> {
        self.conn.call(|c| {
            let r = c.query_one(
                "SELECT epoch, holder, address,
                        (EXTRACT(EPOCH FROM expires - clock_timestamp()) * 1000)::bigint
                 FROM lease WHERE id = 1",
                &[],
            )?;
            Ok(Holder {
                epoch: r.get(0),
                holder: r.get(1),
                address: r.get(2),
                expires_in_ms: r.get(3),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn a_password_never_shows() {
        assert_eq!(
            redacted("postgres://gantry:s3cret@db.example:5432/gantry"),
            "postgres://gantry:***@db.example:5432/gantry"
        );
        assert_eq!(
            redacted("postgresql://gantry@127.0.0.1:5432/gantry"),
            "postgresql://gantry@127.0.0.1:5432/gantry"
        );
        assert_eq!(redacted("state.db"), "state.db");
    }
}
