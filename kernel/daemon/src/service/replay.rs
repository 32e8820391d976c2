//! `ReplayBasis`: what a replay of this cluster's history needs (`gantry policy
//! whatif`) — the cluster description it started from, its scheduler settings, and
//! each slot's active version with its component. The versions are read under the
//! controller's lock; components loaded after start come from the state database on a
//! connection of its own, outside it.

use std::sync::{Arc, Mutex};

use gantry_api as api;
use gantry_kernel::Backfill;
use gantry_wasm_host::{PolicyKind, PolicySlot, WasmSlots};
use tonic::{Request, Response, Status};

use super::{admin_only, unix_now, Shared};

pub async fn replay_basis(
    shared: Arc<Shared>,
    req: Request<api::ReplayBasisRequest>,
) -> Result<Response<api::ReplayBasisReply>, Status> {
    let now = unix_now();
    let who = shared.caller("ReplayBasis", &req, now)?;
    admin_only(&who, "read the active policies' components")?;
    let (config, mut policies, archive) = {
        let c = shared.lock();
        let config = c.scheduler().config();
        let policies: Vec<api::ActivePolicy> = PolicyKind::ALL
            .into_iter()
            .map(|k| match c.slots() {
                Some(slots) => active(slots, k),
                None => native(k),
            })
            .collect();
        (config, policies, c.archive_reader())
    };
    for p in policies.iter_mut().filter(|p| p.version_id != 0) {
        if let Some(bytes) = shared.start_components.get(&p.sha256) {
            p.component = bytes.as_ref().clone();
            continue;
        }
        let (store, sha) = (archive.clone(), p.sha256.clone());
        let bytes = tokio::task::spawn_blocking(move || {
            store
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .component(&sha)
        })
        .await
        .map_err(|e| Status::internal(format!("reading a component stopped: {e}")))?
        .map_err(|e| Status::unavailable(format!("cannot read the state database: {e}")))?;
        p.component = bytes.ok_or_else(|| {
            Status::internal(format!(
                "the {} policy's component {} is not in the state database",
                p.kind, p.sha256
            ))
        })?;
    }
    let (backfill, reservation_depth) = match config.backfill {
        Backfill::None => ("none", 0),
        Backfill::Easy => ("easy", 0),
        Backfill::Conservative { depth } => ("conservative", depth),
    };
    Ok(Response::new(api::ReplayBasisReply {
        cluster: shared.cluster_text.clone(),
        backfill: backfill.into(),
        reservation_depth: u32::try_from(reservation_depth).unwrap_or(u32::MAX),
        fairshare_interval_s: config.fairshare_interval,
        policies,
    }))
}

/// The native default of `k` (no component).
fn native(k: PolicyKind) -> api::ActivePolicy {
    api::ActivePolicy {
        kind: k.name().into(),
        ..Default::default()
    }
}

/// `k`'s active version, without its component yet.
fn active(slots: &WasmSlots, k: PolicyKind) -> api::ActivePolicy {
    fn one<W: gantry_wasm_host::Decision>(
        k: PolicyKind,
        s: &Mutex<PolicySlot<W>>,
    ) -> api::ActivePolicy {
        let s = s.lock().unwrap_or_else(|e| e.into_inner());
        let Some(id) = s.active() else {
            return native(k);
        };
        let Some(v) = s.versions().into_iter().find(|v| v.id == id) else {
            return native(k);
        };
        let limits = s.limits();
        api::ActivePolicy {
            kind: k.name().into(),
            version_id: id.0,
            name: v.name,
            version: v.version,
            sha256: v.sha256,
            component: Vec::new(),
            config: s.config_of(id).unwrap_or_default().into(),
            deadline_ms: u64::try_from(limits.call_timeout.as_millis()).unwrap_or(u64::MAX),
            memory_mb: (limits.memory_bytes >> 20) as u64,
            instances: limits.instances.into(),
        }
    }
    match k {
        PolicyKind::Priority => one(k, &slots.priority),
        PolicyKind::Fairshare => one(k, &slots.fairshare),
        PolicyKind::Preemption => one(k, &slots.preemption),
        PolicyKind::Placement => one(k, &slots.placement),
    }
}
