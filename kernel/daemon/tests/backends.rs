//! The two backends behind one journal, and the PostgreSQL one against a real server
//! (Debian's, started by the test in a temporary directory on a loopback port): the same
//! log as SQLite's, group commit, environments kept once, the schema version, and the
//! lease's fencing.

use std::sync::OnceLock;
use std::time::Duration;

use gantry_daemon::store::postgres::Lease;
use gantry_daemon::store::{Entry, Journal, Launch, Location, Store, StoreError};
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
