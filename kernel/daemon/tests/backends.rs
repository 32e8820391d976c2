//! The two backends behind one journal, and the PostgreSQL one against a real server
//! (Debian's, started by the test in a temporary directory on a loopback port): the same
//! log as SQLite's, group commit, environments kept once, the schema version, the
//! lease's fencing, and snapshots with the accounting table.

use std::sync::OnceLock;
use std::time::Duration;

use gantry_daemon::store::postgres::Lease;
use gantry_daemon::store::{
    AccountingFilter, AccountingRow, Entry, History, Journal, Launch, Location, Snapshot, Store,
    StoreError,
};
use gantry_kernel::job::JobSpec;
use gantry_kernel::{JobId, ResourceRequest};

/// One server for the whole binary; each test has a database of its own.
fn server() -> &'static gantry_test_postgres::Server {
    static SERVER: OnceLock<gantry_test_postgres::Server> = OnceLock::new();
    SERVER.get_or_init(|| gantry_test_postgres::Server::start().unwrap())
}

fn database(name: &str) -> String {
    server().database(name).unwrap()
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

fn environment(n: usize) -> Vec<(String, String)> {
    (0..n)
        .map(|i| (format!("VAR_{i}"), format!("value {i}")))
        .collect()
}

/// Takes the lease of a fresh database: its epoch.
fn lead(url: &str, who: &str) -> (Lease, i64) {
    let lease = Lease::connect(url).unwrap();
    let epoch = lease
        .try_acquire(who, "http://127.0.0.1:1", Duration::from_secs(30))
        .unwrap()
        .expect("a fresh database's lease is free");
    (lease, epoch)
}

/// Through the journal, on either backend: eight threads' entries committed in groups,
/// each ticket the entry's own sequence number; a component takes no place in the log;
/// submissions from one shell keep one environment and each reads back with it.
/// `reopen` opens the same state again afterwards.
fn the_journal_keeps_order_and_environments(store: Store, reopen: impl Fn() -> Store) {
    let reader = store.reader().unwrap();
    let journal = Journal::start(store).unwrap();
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let j = journal.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let job = JobId(t * 1000 + i);
                        let ticket = j.queue(t as i64, &[Entry::Cancelled { job }]).unwrap();
                        j.wait(ticket).unwrap();
                        (ticket, job)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let mut all: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    all.sort();
    assert_eq!(all.first().unwrap().0, 1);
    assert_eq!(all.last().unwrap().0, 320);
    for (ticket, job) in &all {
        assert_eq!(
            reader.entry(*ticket as i64).unwrap(),
            Some(Entry::Cancelled { job: *job })
        );
    }
    let mut last = 0;
    for i in 0..100 {
        let env = if i == 50 {
            environment(3)
        } else {
            environment(40)
        };
        last = journal.queue(i, &[submitted(i as u64 + 1, env)]).unwrap();
    }
    journal.wait(last).unwrap();
    let component = journal.queue_component("abc", b"bytes").unwrap();
    assert_eq!(component, 420, "a component takes no place in the log");
    let end = journal
        .queue(9, &[Entry::Resumed { job: JobId(1) }])
        .unwrap();
    assert_eq!(end, 421);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(journal.durable(end)).unwrap();
    assert_eq!(
        reader.entry(371).unwrap(),
        Some(submitted(51, environment(3)))
    );
    // A cycle's launches read together: numbers repeated (an array's tasks), one past
    // the end, each with its environment.
    let together = reader.entries_at(&[371, 330, 371, 9_999, 1]).unwrap();
    assert_eq!(together.len(), 3);
    assert_eq!(together[&371], submitted(51, environment(3)));
    assert_eq!(together[&330], submitted(10, environment(40)));
    assert_eq!(together[&1], reader.entry(1).unwrap().unwrap());
    drop(journal);

    let mut s = reopen();
    let entries = s.entries().unwrap();
    assert_eq!(entries.len(), 421);
    assert_eq!(entries[320].2, submitted(1, environment(40)));
    assert_eq!(entries[370].2, submitted(51, environment(3)));
    assert_eq!(entries[419].2, submitted(100, environment(40)));
    assert_eq!(s.component("abc").unwrap().as_deref(), Some(&b"bytes"[..]));
}

#[test]
fn the_sqlite_journal_commits_concurrent_entries_in_groups_with_sequence_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    the_journal_keeps_order_and_environments(Store::open(&path).unwrap(), || {
        Store::open(&path).unwrap()
    });
}

#[test]
fn the_postgresql_journal_commits_concurrent_entries_in_groups_with_sequence_numbers() {
    let url = database("journal");
    let (_lease, epoch) = lead(&url, "a");
    the_journal_keeps_order_and_environments(Store::open_fenced(&url, epoch).unwrap(), || {
        Store::open_location(&Location::Postgres(url.clone())).unwrap()
    });
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let kept: i64 = c
        .query_one("SELECT COUNT(*) FROM environments", &[])
        .unwrap()
        .get(0);
    assert_eq!(kept, 2, "two distinct environments");
    let epochs: Vec<i64> = c
        .query("SELECT DISTINCT epoch FROM log", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        epochs,
        vec![epoch],
        "every entry carries its writer's epoch"
    );
}

/// A controller whose lease ran out and was taken over can write nothing more: the
/// database refuses its entries, the journal stops and says why; the new holder's
/// entries follow the old ones'.
#[test]
fn a_controller_past_its_lease_is_fenced_out() {
    let url = database("fencing");
    let a = Lease::connect(&url).unwrap();
    let old = a
        .try_acquire("a", "http://a", Duration::from_millis(300))
        .unwrap()
        .unwrap();
    let journal = Journal::start(Store::open_fenced(&url, old).unwrap()).unwrap();
    let t = journal
        .queue(1, &[Entry::Cancelled { job: JobId(1) }])
        .unwrap();
    journal.wait(t).unwrap();

    let b = Lease::connect(&url).unwrap();
    assert_eq!(
        b.try_acquire("b", "http://b", Duration::from_secs(30))
            .unwrap(),
        None,
        "a live lease is not taken"
    );
    std::thread::sleep(Duration::from_millis(400));
    let new = b
        .try_acquire("b", "http://b", Duration::from_secs(30))
        .unwrap()
        .expect("a lease that ran out is taken");
    assert_eq!(new, old + 1);
    assert!(
        !a.renew(old, Duration::from_secs(30)).unwrap(),
        "the old holder cannot renew"
    );
    let holder = b.holder().unwrap();
    assert_eq!(
        (
            holder.epoch,
            holder.holder.as_str(),
            holder.address.as_str()
        ),
        (new, "b", "http://b")
    );
    assert!(holder.expires_in_ms > 20_000, "{holder:?}");

    let t = journal
        .queue(2, &[Entry::Cancelled { job: JobId(2) }])
        .unwrap();
    let err = journal.wait(t).unwrap_err();
    assert!(matches!(&err, StoreError::Journal(e) if e.fenced), "{err}");
    assert!(
        err.to_string().contains("another controller took over"),
        "{err}"
    );
    assert!(journal.failure().is_some_and(|f| f.fenced));

    let mut store = Store::open_fenced(&url, new).unwrap();
    store
        .append(3, &[Entry::Cancelled { job: JobId(3) }])
        .unwrap();
    let jobs: Vec<_> = store
        .entries()
        .unwrap()
        .into_iter()
        .map(|(seq, _, e)| (seq, e))
        .collect();
    assert_eq!(
        jobs,
        vec![
            (1, Entry::Cancelled { job: JobId(1) }),
            (2, Entry::Cancelled { job: JobId(3) })
        ]
    );
    // A released lease is free at once.
    b.release(new).unwrap();
    assert_eq!(
        a.try_acquire("a", "http://a", Duration::from_secs(30))
            .unwrap(),
        Some(new + 1)
    );
}

#[test]
fn a_reader_without_the_lease_cannot_write() {
    let url = database("readonly");
    let mut s = Store::open_location(&Location::Postgres(url)).unwrap();
    let err = s
        .append(1, &[Entry::Cancelled { job: JobId(1) }])
        .unwrap_err();
    assert!(err.to_string().contains("holds no lease"), "{err}");
    assert_eq!(s.last_seq().unwrap(), 0);
}

#[test]
fn a_newer_schema_is_refused_untouched() {
    let url = database("newer");
    Store::open_location(&Location::Postgres(url.clone())).unwrap();
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    c.batch_execute("UPDATE schema_version SET version = 7")
        .unwrap();
    let err = Store::open_location(&Location::Postgres(url.clone()))
        .err()
        .expect("refused");
    let text = err.to_string();
    assert!(text.contains("schema version 7"), "{text}");
    let v: i64 = c
        .query_one("SELECT version FROM schema_version", &[])
        .unwrap()
        .get(0);
    assert_eq!(v, 7);
}

#[test]
fn an_unreachable_database_is_an_error_that_names_it_without_its_password() {
    let err = Store::open_location(&Location::parse(
        "postgres://gantry:hunter2@127.0.0.1:1/gantry?connect_timeout=2",
    ))
    .err()
    .expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

/// Ten finished jobs with their accounting rows (alice and bob alternately, job 4
/// failed, job `i` submitted at `10 * i` and ended 5 s after its start), and job 11
/// still waiting; a node state between them.
fn history(store: &mut Store) -> Vec<AccountingRow> {
    let mut rows = Vec::new();
    for i in 1..=10u64 {
        store
            .append(10 * i as i64, &[submitted(i, environment(2))])
            .unwrap();
        if i == 5 {
            store
                .append(
                    51,
                    &[Entry::NodeState {
                        node: "n1".into(),
                        state: "drain".into(),
                        reason: "disk".into(),
                    }],
                )
                .unwrap();
        }
        store
            .append(10 * i as i64 + 1, &[Entry::Cancelled { job: JobId(i) }])
            .unwrap();
        let user = if i % 2 == 0 { "alice" } else { "bob" };
        let state = if i == 4 { "FAILED" } else { "COMPLETED" };
        rows.push(AccountingRow {
            job: i,
            array_job: i,
            user: user.into(),
            account: "physics".into(),
            partition: "p".into(),
            name: format!("job{i}"),
            state: state.into(),
            submit: 10 * i as i64,
            start: Some(10 * i as i64),
            end: 10 * i as i64 + 5,
            suspended_s: 0,
            cores: 2,
            gpus: 1,
            record: format!("record {i}").into_bytes(),
        });
    }
    store.append(200, &[submitted(11, environment(2))]).unwrap();
    // The last entries concern forgotten jobs: their numbers must not come back.
    store
        .append(201, &[Entry::Cancelled { job: JobId(10) }])
        .unwrap();
    rows
}

/// A snapshot at `upto` that keeps job 11 alone.
fn keeping_job_11(upto: i64, usage: Vec<(String, String, f64)>) -> Snapshot {
    Snapshot {
        upto,
        time: 300,
        next_job: 12,
        usage,
        jobs: Snapshot::ranges([JobId(11)]),
    }
}

/// On either backend: a snapshot moves finished jobs to the accounting table and
/// deletes their entries, keeps those of live jobs and of no job, never reuses a
/// sequence number, and queries filter the table as [`AccountingFilter::matches`] says.
fn a_snapshot_compacts_the_log(mut store: Store, reopen: impl Fn() -> Store) {
    let rows = history(&mut store);
    let upto = store.last_seq().unwrap();
    // A follower (a standby) that read the whole log before the snapshot.
    let mut follower = History::default();
    follower.follow(&mut reopen()).unwrap();
    assert_eq!(follower.entries.len(), 23);
    let snapshot = keeping_job_11(upto, vec![("physics".into(), "alice".into(), 50.0)]);
    let done = store.compact(&snapshot, rows.clone()).unwrap();
    assert_eq!(
        (done.accounted, done.deleted, done.kept),
        (10, 21, 2),
        "ten submissions and eleven cancellations deleted; the node state and job 11 kept"
    );
    let mut store = reopen();
    assert_eq!(store.latest_snapshot().unwrap(), Some(snapshot.clone()));
    assert_eq!(
        store.last_seq().unwrap(),
        upto,
        "the snapshot holds the position"
    );
    let left: Vec<Option<JobId>> = store
        .entries()
        .unwrap()
        .iter()
        .map(|(_, _, e)| e.job())
        .collect();
    assert_eq!(left, vec![None, Some(JobId(11))]);
    store
        .append(400, &[Entry::Cancelled { job: JobId(11) }])
        .unwrap();
    let entries = store.entries().unwrap();
    assert_eq!(
        entries.last().unwrap().0,
        upto + 1,
        "numbered after the snapshot"
    );

    // A restore's history: the snapshot, then what it keeps and what follows; the
    // follower starts afresh from the snapshot and holds the same.
    let mut h = History::default();
    h.follow(&mut store).unwrap();
    assert_eq!(h.snapshot.as_ref(), Some(&snapshot));
    assert_eq!(h.entries.len(), 3);
    follower.follow(&mut store).unwrap();
    assert_eq!(follower.snapshot.as_ref(), Some(&snapshot));
    let seqs = |h: &History| h.entries.iter().map(|e| e.0).collect::<Vec<_>>();
    assert_eq!(seqs(&follower), seqs(&h));

    let queries = [
        AccountingFilter::default(),
        AccountingFilter {
            users: vec!["alice".into()],
            ..Default::default()
        },
        AccountingFilter {
            states: vec!["FAILED".into()],
            ..Default::default()
        },
        AccountingFilter {
            window_start: 42,
            window_end: 70,
            ..Default::default()
        },
        AccountingFilter {
            since: 60,
            accounts: vec!["physics".into()],
            names: vec!["job7".into(), "job8".into(), "job1".into()],
            ..Default::default()
        },
        AccountingFilter {
            jobs: vec![3, 9],
            partitions: vec!["p".into()],
            ..Default::default()
        },
        AccountingFilter {
            after_job: 6,
            ..Default::default()
        },
    ];
    for q in queries {
        let q = AccountingFilter { limit: 100, ..q };
        let got: Vec<u64> = store.accounting(&q).unwrap().iter().map(|r| r.0).collect();
        let want: Vec<u64> = rows
            .iter()
            .filter(|r| q.matches(r))
            .map(|r| r.job)
            .collect();
        assert_eq!(got, want, "{q:?}");
    }
    let page = store
        .accounting(&AccountingFilter {
            limit: 3,
            after_job: 2,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page[0], (3, b"record 3".to_vec()));
    assert_eq!(page.len(), 3);

    // sreport: jobs 4 and 5 (of alice and bob) overlap [43, 52].
    let mut used = store.accounting_usage(43, 52).unwrap();
    used.sort_by(|a, b| a.user.cmp(&b.user));
    let summary: Vec<(&str, f64, f64, u64)> = used
        .iter()
        .map(|u| (u.user.as_str(), u.core_seconds, u.gpu_seconds, u.jobs))
        .collect();
    assert_eq!(
        summary,
        vec![("alice", 2.0 * 2.0, 2.0, 1), ("bob", 2.0 * 2.0, 2.0, 1)],
        "job 4 ran 40–45 (2 s in the period), job 5 50–55 (2 s)"
    );
}

#[test]
fn a_snapshot_compacts_the_sqlite_log() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    a_snapshot_compacts_the_log(Store::open(&path).unwrap(), || Store::open(&path).unwrap());
}

#[test]
fn a_snapshot_compacts_the_postgresql_log_and_is_fenced() {
    let url = database("snapshot");
    let (lease, epoch) = lead(&url, "a");
    a_snapshot_compacts_the_log(Store::open_fenced(&url, epoch).unwrap(), || {
        Store::open_fenced(&url, epoch).unwrap()
    });
    // A snapshot from a controller whose lease was taken over is refused.
    let mut old = Store::open_fenced(&url, epoch).unwrap();
    lease.release(epoch).unwrap();
    let (_lease, _) = lead(&url, "b");
    let upto = old.last_seq().unwrap();
    let err = old
        .compact(
            &Snapshot {
                upto,
                ..Snapshot::default()
            },
            Vec::new(),
        )
        .unwrap_err();
    assert!(matches!(err, StoreError::Fenced { .. }), "{err}");
}

/// A compacted log (with gaps) copies entry for entry, with its accounting rows and its
/// snapshot, from SQLite into PostgreSQL.
#[test]
fn a_compacted_state_copies_into_postgresql() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut from = Store::open(&path).unwrap();
    let rows = history(&mut from);
    let upto = from.last_seq().unwrap();
    let snapshot = keeping_job_11(upto, Vec::new());
    from.compact(&snapshot, rows).unwrap();
    let url = database("compacted_copy");
    let (_lease, epoch) = lead(&url, "copy");
    let mut to = Store::open_fenced(&url, epoch).unwrap();
    from.copy_to(&mut to, |_| {}).unwrap();
    assert_eq!(to.entries().unwrap(), from.entries().unwrap());
    assert_eq!(to.latest_snapshot().unwrap(), Some(snapshot));
    assert_eq!(to.last_seq().unwrap(), upto);
    let all = AccountingFilter {
        limit: 100,
        ..Default::default()
    };
    assert_eq!(to.accounting(&all).unwrap(), from.accounting(&all).unwrap());
}

/// A snapshot's writes and the journal's commits share SQLite's one write lock: each
/// waits for the other, and neither fails.
#[test]
fn the_sqlite_journal_goes_on_while_snapshots_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let mut store = Store::open(&path).unwrap();
    let rows = history(&mut store);
    let upto = store.last_seq().unwrap();
    let mut writer = store.writer().unwrap();
    let journal = Journal::start(store).unwrap();
    let appending = std::thread::spawn(move || {
        for i in 0..2000 {
            let t = journal
                .queue(
                    i,
                    &[Entry::Cancelled {
                        job: JobId(100 + i as u64),
                    }],
                )
                .unwrap();
            journal.wait(t).unwrap();
        }
    });
    let snapshot = keeping_job_11(upto, Vec::new());
    for _ in 0..50 {
        writer.compact(&snapshot, rows.clone()).unwrap();
    }
    appending.join().unwrap();
    assert_eq!(Store::open(&path).unwrap().last_seq().unwrap(), upto + 2000);
}
