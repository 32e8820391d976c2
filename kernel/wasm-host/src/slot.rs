//! A policy slot: the loaded versions of one decision point, the active one, fallback
//! when it misbehaves, shadow runs, swaps, rollback and their history.

use std::borrow::Borrow;
use std::sync::{Arc, Mutex};

use gantry_abi as abi;
use gantry_kernel::policy::{
    FairsharePolicy, PlacementPolicy, PolicyError, PreemptionPolicy, PriorityPolicy,
};
use gantry_kernel::Time;
use wasmtime::component::Linker;
use wasmtime::{Store, StoreLimitsBuilder, Trap};

use crate::world::{
    self, FairshareWorld, HostState, PlacementWorld, PolicyWorld, PreemptionWorld, PriorityWorld,
};
use crate::{hex, LoadError, PolicyHost};

/// Earlier versions kept instantiated, ready to take over without a delay.
const LIVE_FALLBACKS: usize = 2;

/// A loaded version's number within its slot (1, 2, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct VersionId(pub u32);

impl std::fmt::Display for VersionId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{}", self.0)
    }
}

/// A version as `gantry policy list` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedVersion {
    pub id: VersionId,
    pub name: String,
    pub version: String,
    pub sha256: String,
    pub active: bool,
    /// False once it trapped, timed out or answered wrongly; it is not used again unless
    /// an admin activates it explicitly.
    pub healthy: bool,
}

/// One entry of the swap history.
#[derive(Debug, Clone, PartialEq)]
pub struct SwapRecord {
    pub at: Time,
    pub who: String,
    /// `activate`, `rollback`, or `fallback` (done by the host after a failure).
    pub action: &'static str,
    pub from: Option<VersionId>,
    pub to: Option<VersionId>,
    pub sha256: Option<String>,
}

/// A failed policy call.
#[derive(Debug, Clone, PartialEq)]
pub struct CallFailure {
    pub at: Time,
    pub version: VersionId,
    pub reason: String,
}

/// What a candidate version would change on the last batch the slot served.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShadowReport {
    pub batch: usize,
    /// Entries whose decision differs (queue positions, factors, victim sets, first choices).
    pub changed: usize,
    /// The largest differences, for people: `(job or node id, before, after)`.
    pub examples: Vec<(u64, String, String)>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SlotError {
    #[error("no version {0} in this slot")]
    UnknownVersion(VersionId),
    #[error("nothing to roll back to")]
    NothingToRollBack,
    #[error("no batch recorded yet: turn on batch recording and let one cycle run")]
    NoBatchYet,
    #[error("{0}")]
    Failed(String),
}

/// A world's decision call and how to check and compare its answers.
pub trait Decision: PolicyWorld {
    /// What one call decides on: the jobs, the share tree, the queries of a cycle.
    type Batch: ?Sized + ToOwned<Owned: Send>;
    type Answer: Clone + PartialEq + Send;
    /// What a version declares it reads (the priority world's columns), asked once
    /// after `init`.
    type Needs: Copy + Send;
    fn needs(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<Self::Needs>;
    fn call(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        now: Time,
        batch: &Self::Batch,
        needs: Self::Needs,
    ) -> wasmtime::Result<Self::Answer>;
    fn check(batch: &Self::Batch, answer: &Self::Answer) -> Result<(), String>;
    fn compare(
        batch: &Self::Batch,
        current: &Self::Answer,
        candidate: &Self::Answer,
    ) -> ShadowReport;
}

/// A live instance: its store and bindings.
type Live<W> = (Store<HostState>, <W as PolicyWorld>::Bindings);

struct Version<W: Decision> {
    id: VersionId,
    info: abi::PolicyInfo,
    sha: [u8; 32],
    config: String,
    needs: W::Needs,
    pre: W::Pre,
    /// `None` after a failure: the next use starts a fresh instance.
    instance: Option<Live<W>>,
    healthy: bool,
}

/// The versions of one decision point.
pub struct PolicySlot<W: Decision> {
    host: Arc<PolicyHost>,
    linker: Linker<HostState>,
    versions: Vec<Version<W>>,
    active: Option<usize>,
    /// Versions active before the current one, oldest first.
    earlier: Vec<usize>,
    history: Vec<SwapRecord>,
    failures: Vec<CallFailure>,
    native_answers: u64,
    record: bool,
    last_batch: Option<(Time, <W::Batch as ToOwned>::Owned)>,
}

/// One line for logs and reports: the trap, or the innermost cause, without backtraces.
fn short(e: &wasmtime::Error, timeout_ms: u128) -> String {
    let text = match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return format!("timed out after {timeout_ms} ms"),
        Some(t) => t.to_string(),
        None => e.root_cause().to_string(),
    };
    text.lines().next().unwrap_or("unknown error").to_string()
}

impl<W: Decision> PolicySlot<W> {
    pub fn new(host: Arc<PolicyHost>) -> Result<Self, LoadError> {
        let mut linker = Linker::new(host.engine());
        W::add_to_linker(&mut linker).map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(Self {
            host,
            linker,
            versions: Vec::new(),
            active: None,
            earlier: Vec::new(),
            history: Vec::new(),
            failures: Vec::new(),
            native_answers: 0,
            record: false,
            last_batch: None,
        })
    }

    fn new_instance(
        &self,
        pre: &W::Pre,
        name: &str,
        config: &str,
    ) -> Result<(Live<W>, W::Needs), LoadError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.host.limits().memory_bytes)
            .instances(8)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            self.host.engine(),
            HostState {
                limits,
                policy: name.to_string(),
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.host.deadline_ticks());
        let ms = self.host.limits().call_timeout.as_millis();
        let bindings =
            W::instantiate(pre, &mut store).map_err(|e| LoadError::Trap(short(&e, ms)))?;
        store.set_epoch_deadline(self.host.deadline_ticks());
        W::init(&bindings, &mut store, config)
            .map_err(|e| LoadError::Trap(short(&e, ms)))?
            .map_err(LoadError::Config)?;
        store.set_epoch_deadline(self.host.deadline_ticks());
        let needs = W::needs(&bindings, &mut store).map_err(|e| LoadError::Trap(short(&e, ms)))?;
        Ok(((store, bindings), needs))
    }

    /// Compiles (once per sha256), checks the world, instantiates and `init`s a version.
    /// The version is loaded, not active.
    pub fn load(&mut self, bytes: &[u8], config: &str) -> Result<VersionId, LoadError> {
        let (component, sha) = self.host.compile(bytes)?;
        let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
            world: W::NAME,
            detail: short(&e, 0),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(wrong)?;
        let pre = W::pre(pre).map_err(wrong)?;
        let ((mut store, bindings), needs) = self.new_instance(&pre, W::NAME, config)?;
        store.set_epoch_deadline(self.host.deadline_ticks());
        let info = W::info(&bindings, &mut store)
            .map_err(|e| LoadError::Trap(short(&e, self.host.limits().call_timeout.as_millis())))?;
        store.data_mut().policy = info.name.clone();
        let id = VersionId(self.versions.len() as u32 + 1);
        tracing::info!(slot = W::NAME, %id, name = %info.name, version = %info.version, sha256 = %hex(&sha), "policy loaded");
        self.versions.push(Version {
            id,
            info,
            sha,
            config: config.to_string(),
            needs,
            pre,
            instance: Some((store, bindings)),
            healthy: true,
        });
        self.trim_instances(Some(self.versions.len() - 1));
        Ok(id)
    }

    fn index(&self, id: VersionId) -> Result<usize, SlotError> {
        self.versions
            .iter()
            .position(|v| v.id == id)
            .ok_or(SlotError::UnknownVersion(id))
    }

    fn switch(&mut self, to: usize, who: &str, at: Time, action: &'static str) {
        let from = self.active.map(|i| self.versions[i].id);
        if let Some(old) = self.active {
            if action != "rollback" {
                self.earlier.push(old);
            }
        }
        self.active = Some(to);
        let v = &self.versions[to];
        tracing::info!(slot = W::NAME, action, from = ?from, to = %v.id, who, "policy swap");
        self.history.push(SwapRecord {
            at,
            who: who.to_string(),
            action,
            from,
            to: Some(v.id),
            sha256: Some(hex(&v.sha)),
        });
        self.trim_instances(None);
    }

    /// Keeps live instances only for the active version, the fallbacks tried first and
    /// `also` (a version just loaded, likely to be shadowed or activated next);
    /// others are re-instantiated if ever needed, so a long-lived slot's memory (and
    /// address space: each instance reserves guard regions) stays bounded.
    fn trim_instances(&mut self, also: Option<usize>) {
        let mut keep: Vec<usize> = self.active.into_iter().chain(also).collect();
        keep.extend(self.earlier.iter().rev().take(LIVE_FALLBACKS));
        for (i, v) in self.versions.iter_mut().enumerate() {
            if !keep.contains(&i) {
                v.instance = None;
            }
        }
    }

    /// Makes a loaded version the active one. Call it between two cycles.
    pub fn activate(&mut self, id: VersionId, who: &str, at: Time) -> Result<(), SlotError> {
        let i = self.index(id)?;
        self.versions[i].healthy = true;
        self.switch(i, who, at, "activate");
        Ok(())
    }

    /// Goes back to the version active before the current one, or to `to`.
    pub fn rollback(
        &mut self,
        to: Option<VersionId>,
        who: &str,
        at: Time,
    ) -> Result<VersionId, SlotError> {
        let i = match to {
            Some(id) => self.index(id)?,
            None => self.earlier.pop().ok_or(SlotError::NothingToRollBack)?,
        };
        self.versions[i].healthy = true;
        self.switch(i, who, at, "rollback");
        Ok(self.versions[i].id)
    }

    /// Keeps a copy of every batch decided, so [`Self::shadow`] can replay the latest.
    /// Off by default: a priority batch can be 100,000 jobs, copied every cycle.
    pub fn record_batches(&mut self, on: bool) {
        self.record = on;
        if !on {
            self.last_batch = None;
        }
    }

    /// [`Self::shadow_on`] the last batch decided (needs [`Self::record_batches`]).
    pub fn shadow(
        &mut self,
        id: VersionId,
        native: impl FnOnce(Time, &W::Batch) -> W::Answer,
    ) -> Result<ShadowReport, SlotError> {
        let (now, batch) = self.last_batch.take().ok_or(SlotError::NoBatchYet)?;
        let report = self.shadow_on(id, now, batch.borrow(), native);
        self.last_batch = Some((now, batch));
        report
    }

    /// Runs version `id` and the active version (or `native`, when none is active) on
    /// `batch` — typically the current queue — and reports what would change. Nothing
    /// is activated.
    pub fn shadow_on(
        &mut self,
        id: VersionId,
        now: Time,
        batch: &W::Batch,
        native: impl FnOnce(Time, &W::Batch) -> W::Answer,
    ) -> Result<ShadowReport, SlotError> {
        let cand = self.index(id)?;
        let current = match self.active {
            Some(a) => self.run(a, now, batch).map_err(SlotError::Failed)?,
            None => native(now, batch),
        };
        let candidate = self.run(cand, now, batch).map_err(SlotError::Failed)?;
        Ok(W::compare(batch, &current, &candidate))
    }

    /// Version `i`, with a live instance (a fresh one after a failure) whose deadline
    /// starts now.
    fn live(&mut self, i: usize) -> Result<&mut Version<W>, String> {
        if self.versions[i].instance.is_none() {
            let v = &self.versions[i];
            let (live, needs) = self
                .new_instance(&v.pre, &v.info.name, &v.config)
                .map_err(|e| e.to_string())?;
            self.versions[i].instance = Some(live);
            self.versions[i].needs = needs;
        }
        let ticks = self.host.deadline_ticks();
        let v = &mut self.versions[i];
        if let Some((store, _)) = v.instance.as_mut() {
            store.set_epoch_deadline(ticks);
        }
        Ok(v)
    }

    fn run(&mut self, i: usize, now: Time, batch: &W::Batch) -> Result<W::Answer, String> {
        let ms = self.host.limits().call_timeout.as_millis();
        let v = self.live(i)?;
        let (store, bindings) = v.instance.as_mut().expect("made live above");
        match W::call(bindings, store, now, batch, v.needs) {
            Ok(answer) => W::check(batch, &answer).map(|()| answer),
            Err(e) => {
                // A trapped instance may hold broken state: never call it again.
                v.instance = None;
                Err(short(&e, ms))
            }
        }
    }

    /// Asks the active version; on failure, each earlier healthy version from the most
    /// recent; `None` when every one failed (the caller then uses its native default).
    pub fn decide(&mut self, now: Time, batch: &W::Batch) -> Option<W::Answer> {
        match &mut self.last_batch {
            _ if !self.record => {}
            Some((t, b)) => {
                *t = now;
                batch.clone_into(b);
            }
            None => self.last_batch = Some((now, batch.to_owned())),
        }
        let mut order: Vec<usize> = self.active.into_iter().collect();
        order.extend(
            self.earlier
                .iter()
                .rev()
                .copied()
                .filter(|&i| Some(i) != self.active),
        );
        for i in order {
            if !self.versions[i].healthy {
                continue;
            }
            match self.run(i, now, batch) {
                Ok(answer) => {
                    if Some(i) != self.active {
                        self.switch(i, "gantry", now, "fallback");
                    }
                    return Some(answer);
                }
                Err(reason) => {
                    let v = &mut self.versions[i];
                    v.healthy = false;
                    tracing::warn!(slot = W::NAME, version = %v.id, name = %v.info.name, %reason, "policy failed; falling back");
                    self.failures.push(CallFailure {
                        at: now,
                        version: v.id,
                        reason,
                    });
                }
            }
        }
        self.native_answers += 1;
        None
    }

    pub fn versions(&self) -> Vec<LoadedVersion> {
        self.versions
            .iter()
            .enumerate()
            .map(|(i, v)| LoadedVersion {
                id: v.id,
                name: v.info.name.clone(),
                version: v.info.version.clone(),
                sha256: hex(&v.sha),
                active: self.active == Some(i),
                healthy: v.healthy,
            })
            .collect()
    }
    pub fn active(&self) -> Option<VersionId> {
        self.active.map(|i| self.versions[i].id)
    }
    pub fn history(&self) -> &[SwapRecord] {
        &self.history
    }
    pub fn failures(&self) -> &[CallFailure] {
        &self.failures
    }
    /// Calls answered by the native safe default because no version could.
    pub fn native_answers(&self) -> u64 {
        self.native_answers
    }
}

/// A slot shared between the scheduler (which calls it every cycle) and whoever swaps
/// versions (the daemon's admin API, the simulator's `--swap-at`).
pub struct SharedSlot<W: Decision, N> {
    slot: Arc<Mutex<PolicySlot<W>>>,
    native: N,
}

impl<W: Decision, N> SharedSlot<W, N> {
    /// `native` answers whenever no loaded version can.
    pub fn new(slot: PolicySlot<W>, native: N) -> (Self, Arc<Mutex<PolicySlot<W>>>) {
        let slot = Arc::new(Mutex::new(slot));
        (
            Self {
                slot: slot.clone(),
                native,
            },
            slot,
        )
    }
    fn decide(&self, now: Time, batch: &W::Batch) -> Option<W::Answer> {
        self.slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .decide(now, batch)
    }
}

/// An answer must have one entry per batch entry.
fn same_length(got: usize, what: &str, want: usize, of: &str) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("answered {got} {what} for {want} {of}"))
    }
}

fn position_map(order: &[u64]) -> std::collections::HashMap<u64, usize> {
    order.iter().enumerate().map(|(i, &j)| (j, i)).collect()
}

fn queue_order(batch: &abi::PriorityBatch, prios: &[i64]) -> Vec<u64> {
    let mut o: Vec<(i64, Time, u64)> = prios
        .iter()
        .zip(batch.submit_time())
        .zip(batch.job())
        .map(|((&p, &t), &j)| (p, t, j))
        .collect();
    o.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
    o.into_iter().map(|x| x.2).collect()
}

impl Decision for PriorityWorld {
    type Batch = abi::PriorityBatch;
    type Answer = Vec<i64>;
    type Needs = abi::PriorityFields;
    fn needs(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<Self::Needs> {
        world::fields(b, store)
    }
    fn call(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        now: Time,
        batch: &Self::Batch,
        needs: Self::Needs,
    ) -> wasmtime::Result<Self::Answer> {
        world::prioritize(b, store, now, batch, needs)
    }
    fn check(batch: &Self::Batch, answer: &Self::Answer) -> Result<(), String> {
        same_length(answer.len(), "priorities", batch.len(), "jobs")
    }
    fn compare(
        batch: &Self::Batch,
        current: &Self::Answer,
        candidate: &Self::Answer,
    ) -> ShadowReport {
        let before = queue_order(batch, current);
        let after = queue_order(batch, candidate);
        let pos = position_map(&after);
        let mut moves: Vec<(u64, usize, usize)> = before
            .iter()
            .enumerate()
            .map(|(i, j)| (*j, i, pos[j]))
            .filter(|m| m.1 != m.2)
            .collect();
        let changed = moves.len();
        moves.sort_by_key(|m| std::cmp::Reverse(m.1.abs_diff(m.2)));
        let examples = moves
            .into_iter()
            .take(10)
            .map(|(j, a, b)| {
                (
                    j,
                    format!("position {}", a + 1),
                    format!("position {}", b + 1),
                )
            })
            .collect();
        ShadowReport {
            batch: batch.len(),
            changed,
            examples,
        }
    }
}

impl Decision for FairshareWorld {
    type Batch = abi::ShareTree;
    type Needs = ();
    fn needs(_: &Self::Bindings, _: &mut Store<HostState>) -> wasmtime::Result<()> {
        Ok(())
    }
    type Answer = Vec<f64>;
    fn call(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        now: Time,
        batch: &Self::Batch,
        _: (),
    ) -> wasmtime::Result<Self::Answer> {
        world::factors(b, store, now, batch)
    }
    fn check(batch: &Self::Batch, answer: &Self::Answer) -> Result<(), String> {
        same_length(answer.len(), "factors", batch.len(), "tree nodes")?;
        match answer.iter().position(|f| !(0.0..=1.0).contains(f)) {
            Some(i) => Err(format!(
                "factor {} of tree node {i} is outside [0, 1]",
                answer[i]
            )),
            None => Ok(()),
        }
    }
    fn compare(
        batch: &Self::Batch,
        current: &Self::Answer,
        candidate: &Self::Answer,
    ) -> ShadowReport {
        let diffs: Vec<usize> = (0..batch.len())
            .filter(|&i| (current[i] - candidate[i]).abs() > 1e-9)
            .collect();
        let examples = diffs
            .iter()
            .take(10)
            .map(|&i| {
                (
                    batch.id()[i] as u64,
                    format!("{:.4}", current[i]),
                    format!("{:.4}", candidate[i]),
                )
            })
            .collect();
        ShadowReport {
            batch: batch.len(),
            changed: diffs.len(),
            examples,
        }
    }
}

impl Decision for PreemptionWorld {
    type Batch = [abi::PreemptionQuery];
    type Needs = ();
    fn needs(_: &Self::Bindings, _: &mut Store<HostState>) -> wasmtime::Result<()> {
        Ok(())
    }
    type Answer = Vec<Vec<abi::Victim>>;
    fn call(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        now: Time,
        batch: &Self::Batch,
        _: (),
    ) -> wasmtime::Result<Self::Answer> {
        Ok(world::victims(b.api.call_select(
            store,
            now,
            &world::preemption_queries(batch),
        )?))
    }
    fn check(batch: &Self::Batch, answer: &Self::Answer) -> Result<(), String> {
        same_length(answer.len(), "victim lists", batch.len(), "blocked jobs")
    }
    fn compare(
        batch: &Self::Batch,
        current: &Self::Answer,
        candidate: &Self::Answer,
    ) -> ShadowReport {
        let show = |v: &[abi::Victim]| format!("{:?}", v.iter().map(|x| x.job).collect::<Vec<_>>());
        let diffs: Vec<usize> = (0..batch.len())
            .filter(|&i| current[i] != candidate[i])
            .collect();
        let examples = diffs
            .iter()
            .take(10)
            .map(|&i| (batch[i].job, show(&current[i]), show(&candidate[i])))
            .collect();
        ShadowReport {
            batch: batch.len(),
            changed: diffs.len(),
            examples,
        }
    }
}

impl Decision for PlacementWorld {
    type Batch = abi::PlacementBatch;
    type Needs = ();
    fn needs(_: &Self::Bindings, _: &mut Store<HostState>) -> wasmtime::Result<()> {
        Ok(())
    }
    type Answer = abi::PlacementRanking;
    fn call(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        _now: Time,
        batch: &Self::Batch,
        _: (),
    ) -> wasmtime::Result<Self::Answer> {
        world::rank(b, store, batch)
    }
    fn check(batch: &Self::Batch, answer: &Self::Answer) -> Result<(), String> {
        answer.check(batch)
    }
    fn compare(
        batch: &Self::Batch,
        current: &Self::Answer,
        candidate: &Self::Answer,
    ) -> ShadowReport {
        // An empty or short ranking leaves the rest in the kernel's order, so two
        // answers are compared by the node each job would try first.
        let first =
            |q: usize, r: &abi::PlacementRanking| r.first_choice(q, batch.candidates(q).len());
        let node = |q: usize, i: Option<u32>| {
            i.map_or("none".to_string(), |i| {
                format!(
                    "node {}",
                    batch.node()[batch.candidates(q).start + i as usize]
                )
            })
        };
        let diffs: Vec<usize> = (0..batch.len())
            .filter(|&q| first(q, current) != first(q, candidate))
            .collect();
        let examples = diffs
            .iter()
            .take(10)
            .map(|&q| {
                (
                    batch.job()[q],
                    node(q, first(q, current)),
                    node(q, first(q, candidate)),
                )
            })
            .collect();
        ShadowReport {
            batch: batch.len(),
            changed: diffs.len(),
            examples,
        }
    }
}

impl PolicySlot<PriorityWorld> {
    /// The columns a priority batch must hold for this slot: what the active version
    /// and every healthy fallback read, or all of them while batches are recorded (a
    /// shadow run may be asked of any version).
    pub fn fields(&self) -> abi::PriorityFields {
        if self.record {
            return abi::PriorityFields::ALL;
        }
        self.active
            .into_iter()
            .chain(self.earlier.iter().copied())
            .map(|i| &self.versions[i])
            .filter(|v| v.healthy)
            .fold(abi::PriorityFields::NONE, |f, v| f | v.needs)
    }
}

impl PolicySlot<PriorityWorld> {
    /// The breakdown of `batch`'s priorities by the version that answers them now (the
    /// active one while it is healthy), empty when it has no `explain`; `None` when no
    /// version answers (the native default does). A failure drops the instance,
    /// as a failed decision does, but leaves the version healthy: it is a display, and
    /// the cycle's own calls judge the version.
    pub fn explain(
        &mut self,
        now: Time,
        batch: &abi::PriorityBatch,
    ) -> Option<Result<Vec<abi::PriorityFactor>, String>> {
        let i = self.active.filter(|&i| self.versions[i].healthy)?;
        let ms = self.host.limits().call_timeout.as_millis();
        let v = match self.live(i) {
            Ok(v) => v,
            Err(e) => return Some(Err(e)),
        };
        let (store, bindings) = v.instance.as_mut().expect("made live above");
        match world::explain(bindings, store, now, batch, v.needs) {
            Ok(answer) => Some(Ok(answer.unwrap_or_default())),
            Err(e) => {
                v.instance = None;
                Some(Err(short(&e, ms)))
            }
        }
    }
}

impl<N: PriorityPolicy> PriorityPolicy for SharedSlot<PriorityWorld, N> {
    fn name(&self) -> &str {
        "priority"
    }
    fn fields(&self) -> abi::PriorityFields {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.fields() | self.native.fields()
    }
    fn prioritize(
        &mut self,
        now: Time,
        jobs: &abi::PriorityBatch,
    ) -> Result<Vec<i64>, PolicyError> {
        match self.decide(now, jobs) {
            Some(a) => Ok(a),
            None => self.native.prioritize(now, jobs),
        }
    }
    fn explain(
        &mut self,
        now: Time,
        jobs: &abi::PriorityBatch,
    ) -> Result<Vec<abi::PriorityFactor>, PolicyError> {
        let answer = self
            .slot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .explain(now, jobs);
        match answer {
            Some(a) => a.map_err(PolicyError::Failed),
            None => self.native.explain(now, jobs),
        }
    }
}

impl<N: FairsharePolicy> FairsharePolicy for SharedSlot<FairshareWorld, N> {
    fn name(&self) -> &str {
        "fairshare"
    }
    /// Every activation and rollback is one entry of the slot's history.
    fn revision(&self) -> u64 {
        let slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        slot.history().len() as u64
    }
    fn factors(&mut self, now: Time, tree: &abi::ShareTree) -> Result<Vec<f64>, PolicyError> {
        match self.decide(now, tree) {
            Some(a) => Ok(a),
            None => self.native.factors(now, tree),
        }
    }
}

impl<N: PreemptionPolicy> PreemptionPolicy for SharedSlot<PreemptionWorld, N> {
    fn name(&self) -> &str {
        "preemption"
    }
    fn select(
        &mut self,
        now: Time,
        batch: &[abi::PreemptionQuery],
    ) -> Result<Vec<Vec<abi::Victim>>, PolicyError> {
        match self.decide(now, batch) {
            Some(a) => Ok(a),
            None => self.native.select(now, batch),
        }
    }
}

impl<N: PlacementPolicy> PlacementPolicy for SharedSlot<PlacementWorld, N> {
    fn name(&self) -> &str {
        "placement"
    }
    fn rank(&mut self, batch: &abi::PlacementBatch) -> Result<abi::PlacementRanking, PolicyError> {
        match self.decide(0, batch) {
            Some(a) => Ok(a),
            None => self.native.rank(batch),
        }
    }
}
