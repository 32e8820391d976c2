//! The gRPC services: `Controller` for users and admins, `AgentLink` for agents. Each
//! call authenticates, takes the controller's lock for as long as the change takes
//! (including the write to the log), and turns refusals into status codes.
//!
//! What may take long runs outside the lock: a submission waits for the disk without
//! it; a policy component is compiled before the lock is taken (only the swap holds
//! it); listings are built a page at a time, each page under a short hold of the lock,
//! and streamed, so neither their size nor a slow reader holds up anyone else.

use std::cmp::Reverse;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use gantry_api as api;
use gantry_api::agent_link_server::AgentLink;
use gantry_api::controller_server::Controller as ControllerApi;
use gantry_kernel::cluster::NodeId;
use gantry_kernel::job::Job;
use gantry_kernel::policy::{
    ClassicFairshare, FairsharePolicy, FifoPriority, FirstFitPlacement, NoPreemption,
    PlacementPolicy, PreemptionPolicy, PriorityPolicy,
};
use gantry_kernel::JobId;
use gantry_wasm_host::{Answering, PolicyKind, ShadowReport, VersionId, WasmSlots};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::controller::{Caller, Controller, Refusal};
use crate::store::Entry;

mod accounting;
mod replay;
mod steps;
pub use accounting::snapshot;

/// Seconds since the Unix epoch: the controller's clock.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// What the services share with the daemon's loops.
pub struct Shared {
    pub controller: Mutex<Controller>,
    pub auth: Authenticator,
    /// Wakes the cycle loop early (a submission, a job end, a node coming up).
    pub wake: Notify,
    /// Set when the state database failed: the daemon stops.
    pub fatal: Notify,
    /// The largest component `PolicyLoad` accepts, in bytes.
    pub max_component_bytes: usize,
    /// Open `Watch` streams per user.
    pub watches: Mutex<std::collections::HashMap<String, usize>>,
    /// Counters for `sdiag`.
    pub stats: crate::stats::Stats,
    /// The settings `scontrol show config` shows, by name.
    pub config_view: Vec<(String, String)>,
    /// What `Leadership` answers.
    pub leadership: api::LeadershipReply,
    /// The cluster description's text (`ReplayBasis`).
    pub cluster_text: String,
    /// The components read at start, by sha256 (`ReplayBasis`; those loaded later are
    /// in the state database).
    pub start_components: std::collections::HashMap<String, Arc<Vec<u8>>>,
}

/// A component's sha256, as `policy list` shows it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The most cycles one shadow over time may run (a day at one cycle a second).
pub const MAX_SHADOW_CYCLES: u32 = 86_400;

/// The most `Watch` streams one user may hold open at once.
pub const MAX_WATCHES_PER_USER: usize = 64;

/// One open `Watch` stream, counted against its user while it lives.
struct WatchSlot {
    shared: Arc<Shared>,
    user: String,
}

impl WatchSlot {
    fn take(shared: &Arc<Shared>, user: &str) -> Result<Self, Status> {
        let mut open = shared.watches.lock().unwrap_or_else(|p| p.into_inner());
        let n = open.entry(user.to_string()).or_default();
        if *n >= MAX_WATCHES_PER_USER {
            return Err(Status::resource_exhausted(format!(
                "you have {MAX_WATCHES_PER_USER} watches open already; end one first"
            )));
        }
        *n += 1;
        Ok(Self {
            shared: shared.clone(),
            user: user.to_string(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut open = self
            .shared
            .watches
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(n) = open.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// At most this many jobs in one page of a listing.
const PAGE_JOBS: usize = 500;
/// A page stops growing past this many bytes (well under gRPC's 4 MiB default).
const PAGE_BYTES: usize = 1 << 20;
/// Pages built ahead of a slow reader.
const PAGES_AHEAD: usize = 2;

impl Shared {
    /// Who is calling the user-facing RPC `method` (counted for `sdiag`).
    pub fn caller<T>(&self, method: &str, req: &Request<T>, now: i64) -> Result<Caller, Status> {
        self.stats.rpc(method);
        self.auth.caller(req, now)
    }

    pub fn lock(&self) -> MutexGuard<'_, Controller> {
        // A panic while holding the lock would leave state half-changed; the log is the
        // truth, and the daemon restarts from it, so keep serving what memory has.
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn status(&self, r: Refusal) -> Status {
        match r {
            Refusal::Invalid(m) => Status::invalid_argument(m),
            Refusal::NotFound(m) => Status::not_found(m),
            Refusal::Denied(m) => Status::permission_denied(m),
            Refusal::Conflict(m) => Status::failed_precondition(m),
            Refusal::Storage(e) => {
                tracing::error!(error = %e, "state database failed; stopping");
                self.fatal.notify_one();
                Status::unavailable(format!(
                    "the controller cannot write its state ({e}); it is stopping, nothing was acknowledged"
                ))
            }
        }
    }
}

#[derive(Clone)]
pub struct Service(pub Arc<Shared>);

impl Service {
    /// Activates version `v` of `k` and logs it, under the controller's lock (so the
    /// swap lands between two cycles).
    fn activate(
        &self,
        slots: &WasmSlots,
        k: PolicyKind,
        v: VersionId,
        who: &Caller,
        now: i64,
    ) -> Result<(), Status> {
        let mut c = self.0.lock();
        slots
            .activate(k, v, &who.user, now)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let activated = Entry::PolicyActivated {
            kind: k.name().into(),
            version: v.0,
            who: who.user.clone(),
        };
        c.log_policy(now, activated, None)
            .map_err(|e| self.0.status(e))
    }
}

pub(crate) type EventStream = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send>>;
pub(crate) type PageStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Streams a listing a page at a time: `fill` is called under the controller's lock
/// with the position reached and adds what it finds from there to the page, returning
/// the next position (or `None` at the end); the lock is released between pages.
fn paged<T, P>(
    shared: Arc<Shared>,
    mut fill: impl FnMut(&Controller, usize, &mut Vec<T>, &mut usize) -> Option<usize> + Send + 'static,
    wrap: impl Fn(Vec<T>) -> P + Send + 'static,
) -> PageStream<P>
where
    T: Send + 'static,
    P: Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(PAGES_AHEAD);
    tokio::spawn(async move {
        let mut at = Some(0);
        while let Some(from) = at {
            let mut page = Vec::new();
            let mut bytes = 0;
            at = fill(&shared.lock(), from, &mut page, &mut bytes);
            if tx.send(Ok(wrap(page))).await.is_err() {
                return; // the reader went away
            }
        }
    });
    Box::pin(tokio_stream::wrappers::ReceiverStream::new(rx))
}

/// Whether a page is full.
fn page_full<T>(page: &[T], bytes: usize) -> bool {
    page.len() >= PAGE_JOBS || bytes >= PAGE_BYTES
}

/// Whether `job` is one of `ids` (none: every job); an array's id names its tasks.
fn named(ids: &[u64], job: &Job) -> bool {
    ids.is_empty()
        || ids.contains(&job.id.0)
        || job.array.is_some_and(|a| ids.contains(&a.array_job.0))
}
type CommandStream = Pin<Box<dyn Stream<Item = Result<api::AgentCommand, Status>> + Send>>;

fn kind(s: &str) -> Result<PolicyKind, Status> {
    s.parse().map_err(Status::invalid_argument)
}

fn admin_only(who: &Caller, what: &str) -> Result<(), Status> {
    if who.admin {
        Ok(())
    } else {
        tracing::warn!(caller = %who.user, what, "refused: not an admin");
        Err(Status::permission_denied(format!(
            "{} may not {what}: that needs an admin",
            who.user
        )))
    }
}

fn slots(c: &Controller) -> Result<WasmSlots, Status> {
    c.slots().cloned().ok_or_else(|| {
        Status::failed_precondition(
            "this controller runs the native safe-default policies; policy components cannot be loaded",
        )
    })
}

fn slot_info(slots: &WasmSlots, k: PolicyKind) -> api::PolicySlotInfo {
    fn one<W: gantry_wasm_host::Decision>(
        k: PolicyKind,
        s: &Mutex<gantry_wasm_host::PolicySlot<W>>,
    ) -> api::PolicySlotInfo {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        let last = s.failures().last();
        api::PolicySlotInfo {
            answering: match s.answering() {
                Answering::Nobody => String::new(),
                Answering::Version(v) => v.to_string(),
                Answering::Native => "native".into(),
            },
            fallbacks: s.fallbacks().iter().map(|v| v.0).collect(),
            last_failure_version: last.map_or(0, |f| f.version.0),
            last_failure_at: last.map_or(0, |f| f.at),
            last_failure: last.map(|f| f.reason.clone()).unwrap_or_default(),
            shadowing: s.shadow_watch().map(|w| api::ShadowWatch {
                version: w.version.0,
                cycles: w.cycles,
                cycles_left: w.cycles_left,
                differing: w.differing,
                changed: w.changed,
                most_changed: w.most_changed as u64,
                batch: w.batch as u64,
                examples: w
                    .examples
                    .iter()
                    .map(|(id, a, b)| format!("{id}: {a} -> {b}"))
                    .collect(),
                failed: w.failed.unwrap_or_default(),
            }),
            kind: k.name().into(),
            versions: s
                .versions()
                .into_iter()
                .map(|v| api::PolicyVersion {
                    id: v.id.0,
                    name: v.name,
                    version: v.version,
                    sha256: v.sha256,
                    active: v.active,
                    healthy: v.healthy,
                })
                .collect(),
            history: s
                .history()
                .iter()
                .map(|h| api::PolicySwap {
                    at: h.at,
                    who: h.who.clone(),
                    action: h.action.into(),
                    from: h.from.map_or(0, |v| v.0),
                    to: h.to.map_or(0, |v| v.0),
                    sha256: h.sha256.clone().unwrap_or_default(),
                })
                .collect(),
            failures: s.failures().len() as u64,
            native_answers: s.native_answers(),
        }
    }
    match k {
        PolicyKind::Priority => one(k, &slots.priority),
        PolicyKind::Fairshare => one(k, &slots.fairshare),
        PolicyKind::Preemption => one(k, &slots.preemption),
        PolicyKind::Placement => one(k, &slots.placement),
    }
}

fn shadow(slots: &WasmSlots, k: PolicyKind, v: VersionId) -> Result<ShadowReport, String> {
    let r = match k {
        PolicyKind::Priority => slots
            .priority
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shadow(v, |now, b| {
                FifoPriority.prioritize(now, b).unwrap_or_default()
            }),
        PolicyKind::Fairshare => slots
            .fairshare
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shadow(v, |now, b| {
                ClassicFairshare.factors(now, b).unwrap_or_default()
            }),
        PolicyKind::Preemption => slots
            .preemption
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shadow(v, |now, b| NoPreemption.select(now, b).unwrap_or_default()),
        PolicyKind::Placement => slots
            .placement
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shadow(v, |_, b| FirstFitPlacement.rank(b).unwrap_or_default()),
    };
    r.map_err(|e| e.to_string())
}

/// Tries version `v` of `k` on the last cycle's batch before it is made active, off
/// the async runtime and outside the controller's lock (a trial may take the policy's
/// whole deadline). `Ok(false)`: no cycle has decided anything yet. A failure is
/// FAILED_PRECONDITION naming the version that stays active.
async fn trial(slots: &WasmSlots, k: PolicyKind, v: VersionId) -> Result<bool, Status> {
    let trying = slots.clone();
    let tried = tokio::task::spawn_blocking(move || trying.trial(k, v))
        .await
        .map_err(|e| Status::internal(format!("the trial stopped: {e}")))?;
    tried.map_err(|e| {
        let info = slot_info(slots, k);
        let active = info
            .versions
            .iter()
            .find(|x| x.active)
            .map_or_else(|| "the native default".to_string(), |x| format!("v{}", x.id));
        Status::failed_precondition(format!(
            "{} policy {v} failed on the last cycle's batch and is marked unhealthy: {e}; {active} stays active",
            k.name()
        ))
    })
}

#[tonic::async_trait]
impl ControllerApi for Service {
    async fn submit(
        &self,
        req: Request<api::SubmitRequest>,
    ) -> Result<Response<api::SubmitReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("Submit", &req, now)?;
        let job = req
            .into_inner()
            .job
            .ok_or_else(|| Status::invalid_argument("the request carries no job"))?;
        let (ids, ticket, journal) = {
            let mut c = self.0.lock();
            let (ids, ticket) = c.submit(&who, job, now).map_err(|r| self.0.status(r))?;
            (ids, ticket, c.journal())
        };
        // Acknowledged only once on disk; the lock is free meanwhile, so submissions
        // arriving now join the same commit.
        journal
            .durable(ticket)
            .await
            .map_err(|e| self.0.status(Refusal::Storage(e)))?;
        self.0.wake.notify_one();
        Ok(Response::new(api::SubmitReply {
            job_id: ids[0].0,
            job_ids: ids.iter().map(|i| i.0).collect(),
        }))
    }

    async fn cancel(
        &self,
        req: Request<api::CancelRequest>,
    ) -> Result<Response<api::CancelReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("Cancel", &req, now)?;
        let r = req.into_inner();
        let mut c = self.0.lock();
        if !r.steps.is_empty() {
            c.cancel_steps(&who, &r.steps, r.signal)
                .map_err(|e| self.0.status(e))?;
        }
        let done = if r.job_ids.is_empty() && r.array_tasks.is_empty() {
            Ok(Vec::new())
        } else if r.signal != 0 {
            c.signal(&who, &r.job_ids, r.signal, r.signal_target())
        } else {
            c.cancel(&who, &r.job_ids, &r.array_tasks, now)
        }
        .map_err(|e| self.0.status(e))?;
        drop(c);
        self.0.wake.notify_one();
        Ok(Response::new(api::CancelReply {
            cancelled: done.iter().map(|j| j.0).collect(),
        }))
    }

    async fn update_job(
        &self,
        req: Request<api::UpdateJobRequest>,
    ) -> Result<Response<api::UpdateJobReply>, Status> {
        use api::update_job_request::Change;
        let now = unix_now();
        let who = self.0.caller("UpdateJob", &req, now)?;
        let r = req.into_inner();
        let Some(change) = r.change else {
            return Err(Status::invalid_argument("nothing to change"));
        };
        let mut c = self.0.lock();
        let done = match change {
            Change::Hold(_) => c.hold_or_release(&who, &r.job_ids, true, now),
            Change::Release(_) => c.hold_or_release(&who, &r.job_ids, false, now),
            Change::Requeue(hold) => c.requeue(&who, &r.job_ids, hold, now),
            Change::Suspend(_) => c.suspend_or_resume(&who, &r.job_ids, true, now),
            Change::Resume(_) => c.suspend_or_resume(&who, &r.job_ids, false, now),
            Change::Fields(f) => {
                let time_limit = match f.time_limit_s {
                    None => None,
                    Some(api::TIME_UNLIMITED) => Some(crate::store::TimeLimit::Unlimited),
                    Some(s) => Some(crate::store::TimeLimit::Seconds(s)),
                };
                let update = crate::controller::JobUpdate {
                    time_limit,
                    comment: f.comment,
                    nice: f.nice,
                    qos: f.qos,
                    dependency: f.dependency,
                    partition: f.partition,
                    nodes: f.num_nodes,
                };
                c.update_jobs(&who, &r.job_ids, update, now)
            }
        }
        .map_err(|e| self.0.status(e))?;
        drop(c);
        self.0.wake.notify_one();
        Ok(Response::new(api::UpdateJobReply {
            updated: done.iter().map(|j| j.0).collect(),
        }))
    }

    async fn shares(
        &self,
        req: Request<api::SharesRequest>,
    ) -> Result<Response<api::SharesReply>, Status> {
        let now = unix_now();
        self.0.caller("Shares", &req, now)?;
        let rows = self
            .0
            .lock()
            .scheduler()
            .share_rows(now)
            .into_iter()
            .map(|r| api::ShareRow {
                account: r.account,
                user: r.user.unwrap_or_default(),
                depth: r.depth,
                raw_shares: r.raw_shares,
                norm_shares: r.norm_shares,
                raw_usage: r.raw_usage,
                effective_usage: r.effective_usage,
                fairshare: r.fairshare,
            })
            .collect();
        Ok(Response::new(api::SharesReply { rows }))
    }

    async fn diagnostics(
        &self,
        req: Request<api::DiagnosticsRequest>,
    ) -> Result<Response<api::DiagnosticsReply>, Status> {
        let now = unix_now();
        self.0.caller("Diagnostics", &req, now)?;
        let mut reply = {
            let c = self.0.lock();
            let s = c.scheduler();
            let f = s.fallbacks();
            let last = c.last_cycle();
            api::DiagnosticsReply {
                now,
                last_started: last.started,
                last_reservations: last.reservations,
                last_placement_batches: last.placement_batches,
                jobs_waiting: s.waiting().len() as u64,
                jobs_running: s.running().len() as u64,
                jobs_total: s.jobs().len() as u64,
                priority_fallbacks: f.priority,
                fairshare_fallbacks: f.fairshare,
                placement_fallbacks: f.placement,
                preemption_fallbacks: f.preemption,
                ..Default::default()
            }
        };
        self.0.stats.fill(&mut reply);
        Ok(Response::new(reply))
    }

    async fn usage(
        &self,
        req: Request<api::UsageRequest>,
    ) -> Result<Response<api::UsageReply>, Status> {
        accounting::usage(self.0.clone(), req).await
    }

    async fn reservations(
        &self,
        req: Request<api::ReservationsRequest>,
    ) -> Result<Response<api::ReservationsReply>, Status> {
        let now = unix_now();
        self.0.caller("Reservations", &req, now)?;
        let name = req.into_inner().name;
        let reservations = self
            .0
            .lock()
            .reservation_infos(&name, now)
            .map_err(|e| self.0.status(e))?;
        Ok(Response::new(api::ReservationsReply { reservations }))
    }

    async fn change_reservation(
        &self,
        req: Request<api::ReservationChange>,
    ) -> Result<Response<api::ReservationsReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("ChangeReservation", &req, now)?;
        let Some(change) = req.into_inner().change else {
            return Err(Status::invalid_argument("nothing to change"));
        };
        let reservations = self
            .0
            .lock()
            .change_reservation(&who, change, now)
            .map_err(|e| self.0.status(e))?;
        // Jobs may start (a deletion) or stop being startable where they were.
        self.0.wake.notify_one();
        Ok(Response::new(api::ReservationsReply { reservations }))
    }

    async fn leadership(
        &self,
        req: Request<api::LeadershipRequest>,
    ) -> Result<Response<api::LeadershipReply>, Status> {
        self.0.caller("Leadership", &req, unix_now())?;
        Ok(Response::new(self.0.leadership.clone()))
    }

    async fn config(
        &self,
        req: Request<api::ConfigRequest>,
    ) -> Result<Response<api::ConfigReply>, Status> {
        self.0.caller("Config", &req, unix_now())?;
        let mut entries: Vec<api::ConfigEntry> = self
            .0
            .config_view
            .iter()
            .map(|(k, v)| api::ConfigEntry {
                key: k.clone(),
                value: v.clone(),
            })
            .collect();
        let backfill = match self.0.lock().scheduler().config().backfill {
            gantry_kernel::Backfill::None => "none".to_string(),
            gantry_kernel::Backfill::Easy => "easy".to_string(),
            gantry_kernel::Backfill::Conservative { depth } => {
                format!("conservative (depth {depth})")
            }
        };
        entries.push(api::ConfigEntry {
            key: "SchedulerType".into(),
            value: format!("gantry (backfill: {backfill})"),
        });
        entries.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(Response::new(api::ConfigReply { entries }))
    }

    async fn job_stats(
        &self,
        req: Request<api::JobStatsRequest>,
    ) -> Result<Response<api::JobStatsReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("JobStats", &req, now)?;
        let id = gantry_kernel::JobId(req.into_inner().job_id);
        let steps = self
            .0
            .lock()
            .job_stats(&who, id)
            .map_err(|e| self.0.status(e))?;
        Ok(Response::new(api::JobStatsReply { steps }))
    }

    async fn plan(
        &self,
        req: Request<api::PlanRequest>,
    ) -> Result<Response<api::PlanReply>, Status> {
        let now = unix_now();
        self.0.caller("Plan", &req, now)?;
        let starts = self.0.lock().plan(now);
        Ok(Response::new(api::PlanReply { starts }))
    }

    async fn replay_basis(
        &self,
        req: Request<api::ReplayBasisRequest>,
    ) -> Result<Response<api::ReplayBasisReply>, Status> {
        replay::replay_basis(self.0.clone(), req).await
    }

    async fn priority_factors(
        &self,
        req: Request<api::PriorityFactorsRequest>,
    ) -> Result<Response<api::PriorityFactorsReply>, Status> {
        let now = unix_now();
        self.0.caller("PriorityFactors", &req, now)?;
        let reply = self.0.lock().priority_factors(now);
        Ok(Response::new(reply))
    }

    async fn test_only(
        &self,
        req: Request<api::SubmitRequest>,
    ) -> Result<Response<api::TestOnlyReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("TestOnly", &req, now)?;
        let Some(job) = req.into_inner().job else {
            return Err(Status::invalid_argument("no job in the request"));
        };
        let reply = self
            .0
            .lock()
            .test_only(&who, job, now)
            .map_err(|e| self.0.status(e))?;
        Ok(Response::new(reply))
    }

    type QueueStream = PageStream<api::QueueReply>;

    async fn queue(
        &self,
        req: Request<api::QueueRequest>,
    ) -> Result<Response<Self::QueueStream>, Status> {
        let now = unix_now();
        let who = self.0.caller("Queue", &req, now)?;
        let r = req.into_inner();
        // The order is taken once, under one hold of the lock; the pages follow it.
        let ids = {
            let c = self.0.lock();
            let s = c.scheduler();
            // Running and suspended jobs first (by id), then waiting jobs in walk order.
            // Ended jobs whose processes are still going (COMPLETING) are listed with
            // the running ones, as squeue does.
            let completing = s
                .completing()
                .keys()
                .map(|&(id, _)| id)
                .filter(|&id| s.job(id).is_some_and(|j| j.state.is_terminal()));
            let mut ids: Vec<JobId> = s
                .running()
                .iter()
                .chain(s.suspended())
                .copied()
                .chain(completing)
                .collect();
            ids.sort_unstable();
            ids.dedup();
            let mut waiting: Vec<_> = s
                .waiting()
                .iter()
                .filter_map(|&id| {
                    let j = s.job(id)?;
                    let tier = s.cluster().partition(j.partition).priority_tier;
                    Some((Reverse(tier), Reverse(j.priority), j.submit_time, id))
                })
                .collect();
            waiting.sort_unstable();
            ids.extend(waiting.into_iter().map(|w| w.3));
            ids
        };
        // Chosen on the kernel's job, so only the jobs listed are built for the wire.
        let keep = move |c: &Controller, j: &Job| {
            let cluster = c.scheduler().cluster();
            (r.user.is_empty() || cluster.users[j.user.index()] == r.user)
                && named(&r.job_ids, j)
                && (r.states.is_empty()
                    || r.states
                        .iter()
                        .any(|s| s.eq_ignore_ascii_case(c.shown_state(j))))
                && (r.partition.is_empty() || cluster.partition(j.partition).name == r.partition)
        };
        let stream = paged(
            self.0.clone(),
            move |c, from, page, bytes| {
                for (i, &id) in ids.iter().enumerate().skip(from) {
                    if page_full(page, *bytes) {
                        return Some(i);
                    }
                    let Some(job) = c.scheduler().job(id).filter(|j| keep(c, j)) else {
                        continue;
                    };
                    let info = c.job_view(&who, job);
                    *bytes += prost::Message::encoded_len(&info);
                    page.push(info);
                }
                None
            },
            |jobs| api::QueueReply { jobs },
        );
        Ok(Response::new(stream))
    }

    async fn show_job(
        &self,
        req: Request<api::ShowJobRequest>,
    ) -> Result<Response<api::JobInfo>, Status> {
        let now = unix_now();
        let who = self.0.caller("ShowJob", &req, now)?;
        let id = req.into_inner().job_id;
        let c = self.0.lock();
        let job = c
            .scheduler()
            .job(JobId(id))
            .ok_or_else(|| Status::not_found(format!("Invalid job id specified: {id}")))?;
        if !c.may_see(&who, job) {
            tracing::warn!(caller = %who.user, job = id, "refused: details of another user's job");
            return Err(Status::permission_denied(format!(
                "Access/permission denied: job {id} belongs to another user"
            )));
        }
        Ok(Response::new(c.job_info(job)))
    }

    async fn nodes(
        &self,
        req: Request<api::NodesRequest>,
    ) -> Result<Response<api::NodesReply>, Status> {
        let now = unix_now();
        self.0.caller("Nodes", &req, now)?;
        let c = self.0.lock();
        let nodes = (0..c.scheduler().cluster().nodes.len())
            .map(|i| c.node_info(NodeId(i as u32), now))
            .collect();
        Ok(Response::new(api::NodesReply {
            nodes,
            partitions: c.partition_infos(),
        }))
    }

    type AccountingStream = accounting::AccountingStream;

    async fn accounting(
        &self,
        req: Request<api::AccountingRequest>,
    ) -> Result<Response<Self::AccountingStream>, Status> {
        accounting::accounting(self.0.clone(), req).await
    }

    async fn snapshot(
        &self,
        req: Request<api::SnapshotRequest>,
    ) -> Result<Response<api::SnapshotReply>, Status> {
        accounting::snapshot_call(self.0.clone(), req).await
    }

    async fn set_node_state(
        &self,
        req: Request<api::SetNodeStateRequest>,
    ) -> Result<Response<api::NodeInfo>, Status> {
        let now = unix_now();
        let who = self.0.caller("SetNodeState", &req, now)?;
        let r = req.into_inner();
        let info = self
            .0
            .lock()
            .set_node_state(&who, &r.node, &r.state, &r.reason, now)
            .map_err(|e| self.0.status(e))?;
        self.0.wake.notify_one();
        Ok(Response::new(info))
    }

    async fn policy_list(
        &self,
        req: Request<api::PolicyListRequest>,
    ) -> Result<Response<api::PolicyListReply>, Status> {
        let now = unix_now();
        self.0.caller("PolicyList", &req, now)?;
        let c = self.0.lock();
        let slots = slots(&c)?;
        Ok(Response::new(api::PolicyListReply {
            slots: PolicyKind::ALL
                .into_iter()
                .map(|k| slot_info(&slots, k))
                .collect(),
        }))
    }

    async fn policy_load(
        &self,
        req: Request<api::PolicyLoadRequest>,
    ) -> Result<Response<api::PolicyLoadReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("PolicyLoad", &req, now)?;
        admin_only(&who, "load policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        if r.component.len() > self.0.max_component_bytes {
            return Err(Status::invalid_argument(format!(
                "the component is {} bytes; this controller takes components of at most {} bytes (max_component_bytes)",
                r.component.len(),
                self.0.max_component_bytes
            )));
        }
        let sha = sha256_hex(&r.component);
        // Compiling takes seconds for a large component: done first, without the
        // controller's lock, into the host's cache, which the load below then hits.
        let slots = slots(&self.0.lock())?;
        let compiling = slots.clone();
        let r = tokio::task::spawn_blocking(move || compiling.compile(&r.component).map(|()| r))
            .await
            .map_err(|e| Status::internal(format!("the compile stopped: {e}")))?
            .map_err(|e| Status::invalid_argument(format!("{} policy refused: {e}", k.name())))?;
        // Loaded and logged under the lock; tried outside it; activated (between two
        // cycles) and logged under it again.
        let version = {
            let mut c = self.0.lock();
            let version = slots.load(k, &r.component, &r.config).map_err(|e| {
                Status::invalid_argument(format!("{} policy refused: {e}", k.name()))
            })?;
            let loaded = Entry::PolicyLoaded {
                kind: k.name().into(),
                sha256: sha.clone(),
                config: r.config.clone(),
                who: who.user.clone(),
            };
            c.log_policy(now, loaded, Some((&sha, &r.component)))
                .map_err(|e| self.0.status(e))?;
            version
        };
        tracing::info!(kind = k.name(), version = version.0, sha256 = %sha, who = %who.user, "policy loaded");
        let mut tried = false;
        if !r.no_activate {
            tried = trial(&slots, k, version).await?;
            self.activate(&slots, k, version, &who, now)?;
        }
        self.0.wake.notify_one();
        Ok(Response::new(api::PolicyLoadReply {
            version: version.0,
            sha256: sha,
            activated: !r.no_activate,
            tried,
        }))
    }

    async fn policy_activate(
        &self,
        req: Request<api::PolicyActivateRequest>,
    ) -> Result<Response<api::PolicyListReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("PolicyActivate", &req, now)?;
        admin_only(&who, "activate policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let version = VersionId(r.version);
        let slots = slots(&self.0.lock())?;
        trial(&slots, k, version).await?;
        self.activate(&slots, k, version, &who, now)?;
        self.0.wake.notify_one();
        Ok(Response::new(api::PolicyListReply {
            slots: vec![slot_info(&slots, k)],
        }))
    }

    async fn policy_shadow(
        &self,
        req: Request<api::PolicyShadowRequest>,
    ) -> Result<Response<api::PolicyShadowReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("PolicyShadow", &req, now)?;
        admin_only(&who, "shadow policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let c = self.0.lock();
        let slots = slots(&c)?;
        if r.cycles > 0 {
            slots
                .watch_shadow(k, VersionId(r.version), r.cycles.min(MAX_SHADOW_CYCLES))
                .map_err(|e| Status::failed_precondition(e.to_string()))?;
            tracing::info!(kind = k.name(), version = r.version, cycles = r.cycles, who = %who.user, "shadow over time started");
            return Ok(Response::new(api::PolicyShadowReply::default()));
        }
        let report =
            shadow(&slots, k, VersionId(r.version)).map_err(Status::failed_precondition)?;
        Ok(Response::new(api::PolicyShadowReply {
            batch: report.batch as u64,
            changed: report.changed as u64,
            examples: report
                .examples
                .into_iter()
                .map(|(id, a, b)| format!("{id}: {a} -> {b}"))
                .collect(),
        }))
    }

    async fn policy_rollback(
        &self,
        req: Request<api::PolicyRollbackRequest>,
    ) -> Result<Response<api::PolicyListReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("PolicyRollback", &req, now)?;
        admin_only(&who, "roll back policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let to = (r.to != 0).then_some(VersionId(r.to));
        let slots = slots(&self.0.lock())?;
        if let Some(v) = to {
            trial(&slots, k, v).await?;
        }
        let mut c = self.0.lock();
        slots
            .rollback(k, to, &who.user, now)
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        let entry = Entry::PolicyRolledBack {
            kind: k.name().into(),
            to: to.map(|v| v.0),
            who: who.user.clone(),
        };
        c.log_policy(now, entry, None)
            .map_err(|e| self.0.status(e))?;
        drop(c);
        self.0.wake.notify_one();
        Ok(Response::new(api::PolicyListReply {
            slots: vec![slot_info(&slots, k)],
        }))
    }

    type WatchStream = EventStream;

    async fn watch(
        &self,
        req: Request<api::WatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let now = unix_now();
        let who = self.0.caller("Watch", &req, now)?;
        let only = req.into_inner().job_ids;
        let slot = WatchSlot::take(&self.0, &who.user)?;
        let rx = self.0.lock().subscribe();
        // Events wait for a slow watcher in the broadcast's bounded ring; one that falls
        // a ring behind is ended with the count it missed, never fed a silent gap.
        let stream = BroadcastStream::new(rx).filter_map(move |e| {
            let _held = &slot;
            let e = match e {
                Ok(e) => e,
                Err(tokio_stream::wrappers::errors::BroadcastStreamRecvError::Lagged(n)) => {
                    return Some(Err(Status::resource_exhausted(format!(
                        "this watch fell {n} events behind and was ended; start it again \
                         (squeue shows where things stand now)"
                    ))))
                }
            };
            let keep = match &e.what {
                Some(api::event::What::Job(j)) => {
                    (who.admin || j.user == who.user)
                        && (only.is_empty()
                            || only.contains(&j.job_id)
                            || only.contains(&j.array_job_id))
                }
                Some(api::event::What::Node(_)) => only.is_empty(),
                None => false,
            };
            keep.then_some(Ok(e))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    type RunStepStream = steps::StepEvents;

    async fn run_step(
        &self,
        req: Request<tonic::Streaming<api::StepInput>>,
    ) -> Result<Response<Self::RunStepStream>, Status> {
        steps::run_step(self.0.clone(), req).await
    }

    async fn release(
        &self,
        req: Request<api::ReleaseRequest>,
    ) -> Result<Response<api::ReleaseReply>, Status> {
        let now = unix_now();
        let who = self.0.caller("Release", &req, now)?;
        let r = req.into_inner();
        self.0
            .lock()
            .release(&who, JobId(r.job_id), r.exit_code, now)
            .map_err(|e| self.0.status(e))?;
        self.0.wake.notify_one();
        Ok(Response::new(api::ReleaseReply {}))
    }

    async fn who_am_i(
        &self,
        req: Request<api::WhoAmIRequest>,
    ) -> Result<Response<api::Identity>, Status> {
        let who = self.0.caller("WhoAmI", &req, unix_now())?;
        Ok(Response::new(api::Identity {
            user: who.user,
            uid: who.uid,
            admin: who.admin,
        }))
    }
}

#[tonic::async_trait]
impl AgentLink for Service {
    async fn register(
        &self,
        req: Request<api::RegisterRequest>,
    ) -> Result<Response<api::RegisterReply>, Status> {
        let now = unix_now();
        self.0.auth.agent(&req, now, &req.get_ref().node)?;
        let heartbeat_s = self
            .0
            .lock()
            .register(req.get_ref(), now)
            .map_err(|e| self.0.status(e))?;
        self.0.wake.notify_one();
        Ok(Response::new(api::RegisterReply { heartbeat_s }))
    }

    async fn heartbeat(
        &self,
        req: Request<api::HeartbeatRequest>,
    ) -> Result<Response<api::HeartbeatReply>, Status> {
        let now = unix_now();
        self.0.auth.agent(&req, now, &req.get_ref().node)?;
        let freed = self
            .0
            .lock()
            .heartbeat(req.get_ref(), now)
            .map_err(|e| self.0.status(e))?;
        if freed {
            self.0.wake.notify_one();
        }
        Ok(Response::new(api::HeartbeatReply {}))
    }

    type CommandsStream = CommandStream;

    async fn commands(
        &self,
        req: Request<api::CommandsRequest>,
    ) -> Result<Response<Self::CommandsStream>, Status> {
        let now = unix_now();
        self.0.auth.agent(&req, now, &req.get_ref().node)?;
        let rx = self
            .0
            .lock()
            .attach(&req.get_ref().node)
            .map_err(|e| self.0.status(e))?;
        Ok(Response::new(Box::pin(
            UnboundedReceiverStream::new(rx).map(Ok),
        )))
    }

    async fn step_io(
        &self,
        req: Request<tonic::Streaming<api::StepIoMessage>>,
    ) -> Result<Response<api::StepIoReply>, Status> {
        steps::step_io(self.0.clone(), req).await
    }

    async fn report_job(
        &self,
        req: Request<api::JobReport>,
    ) -> Result<Response<api::JobReportReply>, Status> {
        let now = unix_now();
        self.0.auth.agent(&req, now, &req.get_ref().node)?;
        self.0
            .lock()
            .report(req.get_ref(), now)
            .map_err(|e| self.0.status(e))?;
        self.0.wake.notify_one();
        Ok(Response::new(api::JobReportReply {}))
    }
}
