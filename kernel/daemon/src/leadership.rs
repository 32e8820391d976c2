//! Active and standby controllers over one PostgreSQL state.
//!
//! Every gantryd pointed at the database starts as a standby: it follows the log (a warm
//! copy, so a takeover reads only the tail) and answers every call with UNAVAILABLE,
//! naming the active controller (`gantry-active` metadata), so that clients and agents
//! given a list of controllers go to the right one. When the lease has run out (the
//! active one died, was paused, or lost its database) a standby takes it with the next
//! epoch, and from then on the database refuses the old one's writes
//! ([`crate::store::postgres`]).
//!
//! The active controller renews its lease every third of its length on a connection of
//! its own. If a renewal is refused (another holds the lease) or none has succeeded for
//! a whole lease, it steps down: it stops acting at once, before any standby could have
//! taken over, and starts again as a standby.

use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tonic::body::Body;
use tonic::codegen::http;
use tonic::metadata::{MetadataMap, MetadataValue};
use tonic::server::NamedService;
use tonic::{Code, Status};

use crate::store::postgres::{Holder, Lease};
use crate::store::{History, Store, StoreError};

use gantry_api::client::{ACTIVE_KEY, ROLE_KEY};

/// What a controller not yet serving tells callers: the active controller a standby
/// knows of, or that it is still restoring its own state.
#[derive(Clone, Default)]
pub struct Known(Arc<Mutex<Waiting>>);

#[derive(Clone, Default)]
enum Waiting {
    /// A standby: the active controller, if one holds the lease.
    #[default]
    Standby,
    Behind(Holder),
    /// The only controller (SQLite), restoring its state.
    Restoring,
}

impl Known {
    fn put(&self, w: Waiting) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = w;
    }

    /// A standby behind `h` (or behind nobody).
    pub fn set(&self, h: Option<Holder>) {
        self.put(h.map_or(Waiting::Standby, Waiting::Behind));
    }

    /// The only controller, restoring its state before it serves.
    pub fn restoring(&self) {
        self.put(Waiting::Restoring);
    }

    fn status(&self) -> Status {
        let waiting = self.0.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Waiting::Restoring = waiting {
            return Status::unavailable(
                "the controller is starting (restoring its state from the log); try again in a moment",
            );
        }
        let mut meta = MetadataMap::new();
        meta.insert(ROLE_KEY, MetadataValue::from_static("standby"));
        let holder = match waiting {
            Waiting::Behind(h) => Some(h),
            _ => None,
        };
        let message = match holder {
            Some(h) if h.expires_in_ms > 0 && !h.address.is_empty() => {
                if let Ok(v) = MetadataValue::try_from(h.address.as_str()) {
                    meta.insert(ACTIVE_KEY, v);
                }
                format!(
                    "this controller is a standby; the active one is {} at {} (epoch {})",
                    h.holder, h.address, h.epoch
                )
            }
            _ => "this controller is a standby and no controller is active now (a takeover is under way, or none can reach the database)".to_string(),
        };
        Status::with_metadata(Code::Unavailable, message, meta)
    }
}

/// One gRPC service of the controller whose implementation arrives when it becomes
/// active: until then every call is answered with where the active controller is.
pub struct Switch<S, const AGENT: bool> {
    known: Known,
    active: Arc<std::sync::OnceLock<S>>,
}

impl<S, const AGENT: bool> Clone for Switch<S, AGENT> {
    fn clone(&self) -> Self {
        Self {
            known: self.known.clone(),
            active: self.active.clone(),
        }
    }
}

impl<S, const AGENT: bool> Switch<S, AGENT> {
    pub fn standby(known: Known) -> Self {
        Self {
            known,
            active: Arc::default(),
        }
    }

    /// From now on, calls go to `service`.
    pub fn activate(&self, service: S) {
        let _ = self.active.set(service);
    }
}

impl<S> NamedService for Switch<S, false> {
    const NAME: &'static str = "gantry.v1.Controller";
}

impl<S> NamedService for Switch<S, true> {
    const NAME: &'static str = "gantry.v1.AgentLink";
}

type Answer = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<http::Response<Body>, Infallible>> + Send>,
>;

impl<S, const AGENT: bool> tonic::codegen::Service<http::Request<Body>> for Switch<S, AGENT>
where
    S: tonic::codegen::Service<
            http::Request<Body>,
            Response = http::Response<Body>,
            Error = Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Answer;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Answer {
        match self.active.get() {
            // tonic's generated servers are always ready: `call` needs no `poll_ready`.
            Some(s) => Box::pin(s.clone().call(req)),
            None => Box::pin(std::future::ready(Ok(self.known.status().into_http()))),
        }
    }
}

/// Who this controller is, for the lease.
pub struct Candidate {
    pub url: String,
    /// `host:pid`.
    pub name: String,
    /// Where callers reach it (what standbys will tell them).
    pub address: String,
    pub lease: Duration,
}

/// Stands by until the lease is ours, following the log meanwhile. Returns the lease,
/// its epoch, and the history read so far.
pub async fn stand_by(me: &Candidate, known: &Known) -> (Lease, i64, History) {
    let mut history = History::default();
    let poll = (me.lease / 6).max(Duration::from_millis(100));
    let mut announced: Option<i64> = None;
    loop {
        // A connection that failed is not used again: a new one, from where the
        // history stopped.
        let (lease, mut reader) = connect(me).await;
        loop {
            let taken = blocking(|| -> Result<_, StoreError> {
                match lease.try_acquire(&me.name, &me.address, me.lease)? {
                    Some(epoch) => Ok(Ok(epoch)),
                    None => Ok(Err(lease.holder()?)),
                }
            });
            match taken {
                Ok(Ok(epoch)) => {
                    known.set(None);
                    tracing::info!(
                        epoch,
                        "took the lease: this controller is now the active one"
                    );
                    return (lease, epoch, history);
                }
                Ok(Err(holder)) => {
                    if announced != Some(holder.epoch) {
                        tracing::info!(active = %holder.holder, address = %holder.address, epoch = holder.epoch, "standing by");
                        announced = Some(holder.epoch);
                    }
                    known.set(Some(holder));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the lease; connecting again");
                    known.set(None);
                    break;
                }
            }
            // Follow the log: a takeover then reads only what came after.
            if let Err(e) = blocking(|| history.follow(&mut reader)) {
                tracing::warn!(error = %e, "cannot follow the log; connecting again");
                break;
            }
            tokio::time::sleep(poll).await;
        }
        tokio::time::sleep(poll).await;
    }
}

/// Database calls block (on a connection thread of their own): off the async workers.
fn blocking<R>(f: impl FnOnce() -> R) -> R {
    tokio::task::block_in_place(f)
}

/// The lease and a reader of the log, retrying until the database answers (it may come
/// up after us).
async fn connect(me: &Candidate) -> (Lease, Store) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let opened = blocking(|| -> Result<_, StoreError> {
            Ok((
                Lease::connect(&me.url)?,
                Store::open_location(&crate::store::Location::Postgres(me.url.clone()))?,
            ))
        });
        match opened {
            Ok(both) => return both,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?backoff, "cannot reach the state database")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Why the active controller stops being active.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepDown {
    /// Another controller holds the lease now.
    TakenOver,
    /// No renewal succeeded for a whole lease (the database is unreachable, or slow).
    Lapsed,
}

/// Keeps the lease held under `epoch`; resolves when this controller must step down.
pub async fn hold(lease: Lease, epoch: i64, ttl: Duration) -> StepDown {
    let start = Instant::now();
    // When the last successful renewal was sent, in ms since `start`: the lease runs at
    // least `ttl` from then, by the database's clock as by ours.
    let renewed = Arc::new(AtomicU64::new(0));
    let (lost_tx, mut lost) = tokio::sync::watch::channel(false);
    {
        let renewed = renewed.clone();
        let spawned = std::thread::Builder::new()
            .name("gantry-lease".into())
            .spawn(move || loop {
                std::thread::sleep(ttl / 3);
                let sent = start.elapsed().as_millis() as u64;
                match lease.renew(epoch, ttl) {
                    Ok(true) => renewed.store(sent, Ordering::Release),
                    Ok(false) => {
                        let _ = lost_tx.send(true);
                        return;
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot renew the lease"),
                }
                if lost_tx.is_closed() {
                    return;
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the thread that renews the lease");
            return StepDown::Lapsed;
        }
    }
    // Stop acting a little before the lease could run out.
    let margin = (ttl / 10).max(Duration::from_millis(100));
    let mut check = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = lost.changed() => return StepDown::TakenOver,
            _ = check.tick() => {
                let since = start.elapsed().saturating_sub(Duration::from_millis(renewed.load(Ordering::Acquire)));
                if since + margin >= ttl {
                    return StepDown::Lapsed;
                }
            }
        }
    }
}
