//! The gRPC services: `Controller` for users and admins, `AgentLink` for agents. Each
//! call authenticates, takes the controller's lock for as long as the change takes
//! (including the write to the log), and turns refusals into status codes.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};

use gantry_api as api;
use gantry_api::agent_link_server::AgentLink;
use gantry_api::controller_server::Controller as ControllerApi;
use gantry_kernel::cluster::NodeId;
use gantry_kernel::policy::{
    ClassicFairshare, FairsharePolicy, FifoPriority, FirstFitPlacement, NoPreemption,
    PlacementPolicy, PreemptionPolicy, PriorityPolicy,
};
use gantry_kernel::JobId;
use gantry_wasm_host::{PolicyKind, ShadowReport, VersionId, WasmSlots};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;
use tokio_stream::wrappers::{BroadcastStream, UnboundedReceiverStream};
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use crate::auth::Authenticator;
use crate::controller::{Caller, Controller, Refusal};
use crate::store::Entry;

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
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Controller> {
        // A panic while holding the lock would leave state half-changed; the log is the
        // truth, and the daemon restarts from it, so keep serving what memory has.
        self.controller.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status(&self, r: Refusal) -> Status {
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

type EventStream = Pin<Box<dyn Stream<Item = Result<api::Event, Status>> + Send>>;
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
        api::PolicySlotInfo {
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

#[tonic::async_trait]
impl ControllerApi for Service {
    async fn submit(
        &self,
        req: Request<api::SubmitRequest>,
    ) -> Result<Response<api::SubmitReply>, Status> {
        let now = unix_now();
        let who = self.0.auth.caller(&req, now)?;
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
        let who = self.0.auth.caller(&req, now)?;
        let r = req.into_inner();
        let mut c = self.0.lock();
        let done = if r.signal != 0 {
            c.signal(&who, &r.job_ids, r.signal)
        } else {
            c.cancel(&who, &r.job_ids, now)
        }
        .map_err(|e| self.0.status(e))?;
        drop(c);
        self.0.wake.notify_one();
        Ok(Response::new(api::CancelReply {
            cancelled: done.iter().map(|j| j.0).collect(),
        }))
    }

    async fn queue(
        &self,
        req: Request<api::QueueRequest>,
    ) -> Result<Response<api::QueueReply>, Status> {
        let now = unix_now();
        self.0.auth.caller(&req, now)?;
        let r = req.into_inner();
        let c = self.0.lock();
        let s = c.scheduler();
        // Running and suspended jobs first (by id), then waiting jobs in walk order.
        let mut ids: Vec<JobId> = s.running().iter().chain(s.suspended()).copied().collect();
        ids.sort_unstable();
        let mut waiting: Vec<JobId> = s.waiting().iter().copied().collect();
        waiting.sort_by_key(|&id| {
            let j = s.job(id).expect("waiting jobs exist");
            let tier = s.cluster().partition(j.partition).priority_tier;
            (
                std::cmp::Reverse(tier),
                std::cmp::Reverse(j.priority),
                j.submit_time,
                id,
            )
        });
        ids.extend(waiting);
        let jobs = ids
            .into_iter()
            .filter_map(|id| s.job(id))
            .map(|j| c.job_info(j))
            .filter(|j| r.user.is_empty() || j.user == r.user)
            .filter(|j| {
                r.job_ids.is_empty()
                    || r.job_ids.contains(&j.job_id)
                    || (j.array_job_id != 0 && r.job_ids.contains(&j.array_job_id))
            })
            .filter(|j| {
                r.states.is_empty() || r.states.iter().any(|s| s.eq_ignore_ascii_case(&j.state))
            })
            .filter(|j| r.partition.is_empty() || j.partition == r.partition)
            .collect();
        Ok(Response::new(api::QueueReply { jobs }))
    }

    async fn show_job(
        &self,
        req: Request<api::ShowJobRequest>,
    ) -> Result<Response<api::JobInfo>, Status> {
        let now = unix_now();
        let who = self.0.auth.caller(&req, now)?;
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
        self.0.auth.caller(&req, now)?;
        let c = self.0.lock();
        let nodes = (0..c.scheduler().cluster().nodes.len())
            .map(|i| c.node_info(NodeId(i as u32), now))
            .collect();
        Ok(Response::new(api::NodesReply { nodes }))
    }

    async fn accounting(
        &self,
        req: Request<api::AccountingRequest>,
    ) -> Result<Response<api::AccountingReply>, Status> {
        let now = unix_now();
        let who = self.0.auth.caller(&req, now)?;
        let r = req.into_inner();
        let c = self.0.lock();
        let records = c
            .scheduler()
            .jobs()
            .iter()
            .filter(|j| c.may_see(&who, j))
            .filter(|j| j.submit_time >= r.since)
            .filter(|j| r.job_ids.is_empty() || r.job_ids.contains(&j.id.0))
            .map(|j| {
                let info = c.job_info(j);
                let usage = c.usage(j.id);
                let ran = match (j.start_time, j.end_time) {
                    (Some(s), Some(e)) => (e - s - j.suspended_for).max(0),
                    (Some(s), None) => (now - s - j.suspended_for).max(0),
                    _ => 0,
                };
                let cores = j.allocation.as_ref().map_or(0, |a| a.core_count());
                api::AccountingRecord {
                    job: Some(info),
                    cpu_core_seconds: (cores as i64 * ran) as f64,
                    max_rss_mb: usage.max_rss_mb,
                    user_cpu_s: usage.user_cpu_s,
                    system_cpu_s: usage.system_cpu_s,
                }
            })
            .filter(|rec| r.user.is_empty() || rec.job.as_ref().is_some_and(|j| j.user == r.user))
            .collect();
        Ok(Response::new(api::AccountingReply { records }))
    }

    async fn set_node_state(
        &self,
        req: Request<api::SetNodeStateRequest>,
    ) -> Result<Response<api::NodeInfo>, Status> {
        let now = unix_now();
        let who = self.0.auth.caller(&req, now)?;
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
        self.0.auth.caller(&req, now)?;
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
        let who = self.0.auth.caller(&req, now)?;
        admin_only(&who, "load policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let sha: String = Sha256::digest(&r.component)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        // The lock is held from load to activation: the swap lands between two cycles.
        let mut c = self.0.lock();
        let slots = slots(&c)?;
        let version = slots
            .load(k, &r.component, &r.config)
            .map_err(|e| Status::invalid_argument(format!("{} policy refused: {e}", k.name())))?;
        let loaded = Entry::PolicyLoaded {
            kind: k.name().into(),
            sha256: sha.clone(),
            config: r.config.clone(),
            who: who.user.clone(),
        };
        c.log_policy(now, loaded, Some((&sha, &r.component)))
            .map_err(|e| self.0.status(e))?;
        tracing::info!(kind = k.name(), version = version.0, sha256 = %sha, who = %who.user, "policy loaded");
        if !r.no_activate {
            slots
                .activate(k, version, &who.user, now)
                .map_err(|e| Status::internal(e.to_string()))?;
            let activated = Entry::PolicyActivated {
                kind: k.name().into(),
                version: version.0,
                who: who.user.clone(),
            };
            c.log_policy(now, activated, None)
                .map_err(|e| self.0.status(e))?;
        }
        drop(c);
        self.0.wake.notify_one();
        Ok(Response::new(api::PolicyLoadReply {
            version: version.0,
            sha256: sha,
            activated: !r.no_activate,
        }))
    }

    async fn policy_shadow(
        &self,
        req: Request<api::PolicyShadowRequest>,
    ) -> Result<Response<api::PolicyShadowReply>, Status> {
        let now = unix_now();
        let who = self.0.auth.caller(&req, now)?;
        admin_only(&who, "shadow policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let c = self.0.lock();
        let slots = slots(&c)?;
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
        let who = self.0.auth.caller(&req, now)?;
        admin_only(&who, "roll back policies")?;
        let r = req.into_inner();
        let k = kind(&r.kind)?;
        let to = (r.to != 0).then_some(VersionId(r.to));
        let mut c = self.0.lock();
        let slots = slots(&c)?;
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
        let who = self.0.auth.caller(&req, now)?;
        let only = req.into_inner().job_ids;
        let rx = self.0.lock().subscribe();
        let stream = BroadcastStream::new(rx).filter_map(move |e| {
            let e = e.ok()?;
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

    async fn who_am_i(
        &self,
        req: Request<api::WhoAmIRequest>,
    ) -> Result<Response<api::Identity>, Status> {
        let who = self.0.auth.caller(&req, unix_now())?;
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
        self.0
            .lock()
            .heartbeat(req.get_ref(), now)
            .map_err(|e| self.0.status(e))?;
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
