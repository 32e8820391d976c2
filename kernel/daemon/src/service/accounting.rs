//! The history calls: `Accounting` (sacct), `Usage` (sreport) and `Snapshot`. Jobs in
//! memory are read under the controller's lock a page at a time; jobs a snapshot forgot
//! are read from the accounting table on a connection of their own, outside the lock.

use std::collections::HashMap;
use std::sync::Arc;

use gantry_api as api;
use gantry_kernel::job::Job;
use tonic::{Request, Response, Status};

use super::{named, page_full, unix_now, PageStream, Shared, PAGES_AHEAD, PAGE_JOBS};
use crate::controller::{Caller, Controller};
use crate::store::{AccountingFilter, AccountingRow, Compacted};

/// The most values one list of an accounting query may hold.
pub const MAX_FILTER_ITEMS: usize = 1024;

pub type AccountingStream = PageStream<api::AccountingReply>;

pub async fn accounting(
    shared: Arc<Shared>,
    req: Request<api::AccountingRequest>,
) -> Result<Response<AccountingStream>, Status> {
    let now = unix_now();
    let who = shared.caller("Accounting", &req, now)?;
    let r = req.into_inner();
    for (what, n) in [
        ("job ids", r.job_ids.len()),
        ("names", r.names.len()),
        ("states", r.states.len()),
        ("accounts", r.accounts.len()),
        ("partitions", r.partitions.len()),
        ("users", r.users.len()),
    ] {
        if n > MAX_FILTER_ITEMS {
            return Err(Status::invalid_argument(format!(
                "at most {MAX_FILTER_ITEMS} {what} in one query ({n} given)"
            )));
        }
    }
    let (tx, rx) = tokio::sync::mpsc::channel(PAGES_AHEAD);
    tokio::spawn(async move {
        if let Some(filter) = table_filter(&who, &r) {
            if let Err(e) = send_forgotten(&shared, filter, &tx).await {
                let _ = tx.send(Err(e)).await;
                return;
            }
        }
        let mut at = Some(0);
        while let Some(from) = at {
            let mut page = Vec::new();
            let mut bytes = 0;
            at = in_memory(&shared.lock(), &who, &r, now, from, &mut page, &mut bytes);
            let reply = api::AccountingReply { records: page };
            if tx.send(Ok(reply)).await.is_err() {
                return; // the reader went away
            }
        }
    });
    Ok(Response::new(Box::pin(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    )))
}

/// What of the accounting table `who` asks for and may see: `None` when nothing.
fn table_filter(who: &Caller, r: &api::AccountingRequest) -> Option<AccountingFilter> {
    // None: any user.
    let mut users: Option<Vec<String>> = (!r.users.is_empty()).then(|| r.users.clone());
    let mut narrow = |u: &str| {
        users = Some(match users.take() {
            None => vec![u.to_string()],
            Some(list) => list.into_iter().filter(|x| x == u).collect(),
        });
    };
    if !r.user.is_empty() {
        narrow(&r.user);
    }
    if !who.admin {
        narrow(&who.user);
    }
    if users.as_ref().is_some_and(|u| u.is_empty()) {
        return None;
    }
    Some(AccountingFilter {
        since: r.since,
        window_start: r.window_start,
        window_end: r.window_end,
        jobs: r.job_ids.clone(),
        users: users.unwrap_or_default(),
        accounts: r.accounts.clone(),
        partitions: r.partitions.clone(),
        states: r.states.clone(),
        names: r.names.clone(),
        after_job: 0,
        limit: PAGE_JOBS as i64,
    })
}

type Sender = tokio::sync::mpsc::Sender<Result<api::AccountingReply, Status>>;

/// Streams the forgotten jobs `filter` matches: those of a snapshot being written, then
/// the accounting table's, a page per query.
async fn send_forgotten(
    shared: &Arc<Shared>,
    mut filter: AccountingFilter,
    tx: &Sender,
) -> Result<(), Status> {
    let (archive, in_flight) = {
        let c = shared.lock();
        (c.archive_reader(), c.accounting_in_flight())
    };
    let pending: Vec<&AccountingRow> = in_flight.iter().filter(|r| filter.matches(r)).collect();
    let skip: std::collections::HashSet<u64> = pending.iter().map(|r| r.job).collect();
    let records: Vec<api::AccountingRecord> = pending
        .iter()
        .filter_map(|r| decode(r.job, &r.record))
        .collect();
    if !records.is_empty() && tx.send(Ok(api::AccountingReply { records })).await.is_err() {
        return Ok(());
    }
    loop {
        let (a, f) = (archive.clone(), filter.clone());
        let rows = tokio::task::spawn_blocking(move || {
            a.lock().unwrap_or_else(|p| p.into_inner()).accounting(&f)
        })
        .await
        .map_err(|e| Status::internal(format!("accounting query stopped: {e}")))?
        .map_err(|e| Status::unavailable(format!("cannot read the accounting table: {e}")))?;
        let Some(last) = rows.last().map(|r| r.0) else {
            return Ok(());
        };
        let full = rows.len() as i64 == filter.limit;
        let records: Vec<api::AccountingRecord> = rows
            .iter()
            .filter(|(job, _)| !skip.contains(job))
            .filter_map(|(job, bytes)| decode(*job, bytes))
            .collect();
        if tx.send(Ok(api::AccountingReply { records })).await.is_err() {
            return Ok(());
        }
        if !full {
            return Ok(());
        }
        filter.after_job = last;
    }
}

fn decode(job: u64, bytes: &[u8]) -> Option<api::AccountingRecord> {
    match prost::Message::decode(bytes) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(job, error = %e, "unreadable accounting row; skipped");
            None
        }
    }
}

/// Adds the jobs in memory from cursor `from` on that `r` asks for and `who` may see;
/// returns where to go on when the page filled.
fn in_memory(
    c: &Controller,
    who: &Caller,
    r: &api::AccountingRequest,
    now: i64,
    from: usize,
    page: &mut Vec<api::AccountingRecord>,
    bytes: &mut usize,
) -> Option<usize> {
    let s = c.scheduler();
    let cluster = s.cluster();
    let any = |list: &[String], value: &str| list.is_empty() || list.iter().any(|v| v == value);
    for (next, j) in s.jobs_from(from) {
        if page_full(page, *bytes) {
            return Some(next - 1);
        }
        let owner = &cluster.users[j.user.index()];
        let in_window = (r.window_end == 0 || j.submit_time <= r.window_end)
            && (r.window_start == 0 || j.end_time.is_none_or(|e| e >= r.window_start));
        if !c.may_see(who, j)
            || j.submit_time < r.since
            || !in_window
            || !named(&r.job_ids, j)
            || (!r.user.is_empty() && *owner != r.user)
            || !any(&r.users, owner)
            || !any(&r.names, &j.name)
            || !any(&r.states, c.shown_state(j))
            || !any(&r.accounts, &cluster.accounts[j.account.index()].name)
            || !any(&r.partitions, &cluster.partition(j.partition).name)
        {
            continue;
        }
        let record = c.accounting_record(j, now);
        *bytes += prost::Message::encoded_len(&record);
        page.push(record);
    }
    None
}

pub async fn usage(
    shared: Arc<Shared>,
    req: Request<api::UsageRequest>,
) -> Result<Response<api::UsageReply>, Status> {
    let now = unix_now();
    shared.caller("Usage", &req, now)?;
    let r = req.into_inner();
    if r.end <= r.start {
        return Err(Status::invalid_argument(
            "the period must end after it starts",
        ));
    }
    let mut per: HashMap<(String, String), api::UsageRow> = HashMap::new();
    let mut reply = api::UsageReply::default();
    {
        let c = shared.lock();
        let cluster = c.scheduler().cluster();
        let cores: u64 = cluster
            .nodes
            .iter()
            .map(|n| n.topology.core_count() as u64)
            .sum();
        let gpus: u64 = cluster
            .nodes
            .iter()
            .map(|n| n.topology.gpu_count() as u64)
            .sum();
        let secs = (r.end - r.start) as f64;
        reply.capacity_core_seconds = cores as f64 * secs;
        reply.capacity_gpu_seconds = gpus as f64 * secs;
        reply.cluster = c.cluster_name().to_string();
    }
    let mut add = |user: String, account: String, core_s: f64, gpu_s: f64, jobs: u64| {
        let row = per
            .entry((user.clone(), account.clone()))
            .or_insert_with(|| api::UsageRow {
                user,
                account,
                ..Default::default()
            });
        row.core_seconds += core_s;
        row.gpu_seconds += gpu_s;
        row.jobs += jobs;
        reply.allocated_core_seconds += core_s;
        reply.allocated_gpu_seconds += gpu_s;
    };
    // Forgotten jobs: summed by the database.
    let archive = shared.lock().archive_reader();
    let (start, end) = (r.start, r.end);
    let sums = tokio::task::spawn_blocking(move || {
        archive
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .accounting_usage(start, end)
    })
    .await
    .map_err(|e| Status::internal(format!("usage query stopped: {e}")))?
    .map_err(|e| Status::unavailable(format!("cannot read the accounting table: {e}")))?;
    for s in sums {
        add(s.user, s.account, s.core_seconds, s.gpu_seconds, s.jobs);
    }
    // Jobs in memory: a chunk per hold of the lock, so other calls go on between.
    const CHUNK: usize = 4096;
    let span = |j: &Job| -> f64 {
        let (Some(from), to) = (j.start_time, j.end_time.unwrap_or(now)) else {
            return 0.0;
        };
        ((to.min(r.end) - from.max(r.start)).max(0) as f64 - j.suspended_for as f64).max(0.0)
    };
    let mut at = Some(0);
    while let Some(from) = at {
        at = None;
        let c = shared.lock();
        let s = c.scheduler();
        let cluster = s.cluster();
        for (n, (next, j)) in s.jobs_from(from).enumerate() {
            if n == CHUNK {
                at = Some(next - 1);
                break;
            }
            let Some(alloc) = j.allocation.as_ref() else {
                continue;
            };
            let secs = span(j);
            if secs <= 0.0 {
                continue;
            }
            add(
                cluster.users[j.user.index()].clone(),
                cluster.accounts[j.account.index()].name.clone(),
                alloc.core_count() as f64 * secs,
                alloc.gpu_count() as f64 * secs,
                1,
            );
        }
    }
    let mut rows: Vec<api::UsageRow> = per.into_values().collect();
    rows.sort_by(|a, b| {
        b.core_seconds
            .total_cmp(&a.core_seconds)
            .then_with(|| a.user.cmp(&b.user))
    });
    reply.rows = rows;
    Ok(Response::new(reply))
}

/// Takes a snapshot and writes it (outside the controller's lock). A write that fails
/// stops the controller, as a failed log write does: the log still holds everything.
pub async fn snapshot(
    shared: &Arc<Shared>,
    retention_s: u32,
) -> Result<(Compacted, usize, std::time::Duration), Status> {
    let now = unix_now();
    let work = {
        let mut c = shared.lock();
        c.take_snapshot(now, retention_s.into())
            .map_err(|e| shared.status(e))?
    };
    let forgotten = work.forgotten();
    let started = std::time::Instant::now();
    let written = tokio::task::spawn_blocking(move || work.write())
        .await
        .map_err(|e| Status::internal(format!("the snapshot writer stopped: {e}")))?;
    match written {
        Ok(done) => {
            let took = started.elapsed();
            tracing::info!(
                upto = done.upto,
                forgotten,
                deleted = done.deleted,
                kept = done.kept,
                took_ms = took.as_millis() as u64,
                "snapshot written"
            );
            Ok((done, forgotten, took))
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot write a snapshot; stopping (the log holds everything)");
            shared.fatal.notify_one();
            Err(Status::unavailable(format!(
                "the controller cannot write its snapshot ({e}); it is stopping"
            )))
        }
    }
}

pub async fn snapshot_call(
    shared: Arc<Shared>,
    req: Request<api::SnapshotRequest>,
) -> Result<Response<api::SnapshotReply>, Status> {
    let who = shared.caller("Snapshot", &req, unix_now())?;
    super::admin_only(&who, "taking a snapshot")?;
    let retention = req
        .into_inner()
        .retention_s
        .unwrap_or(shared.lock().settings().finished_retention_s);
    let (done, forgotten, took) = snapshot(&shared, retention).await?;
    Ok(Response::new(api::SnapshotReply {
        upto: done.upto,
        forgotten: forgotten as u64,
        deleted: done.deleted,
        kept: done.kept,
        in_memory: shared.lock().scheduler().jobs().len() as u64,
        took_ms: took.as_millis() as u64,
    }))
}
