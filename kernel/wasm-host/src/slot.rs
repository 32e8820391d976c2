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

use crate::world::Phase;
use crate::world::{
    self, FairshareWorld, HostState, PlacementWorld, PolicyWorld, PreemptionWorld, PriorityWorld,
};
use crate::{hex, LoadError, PolicyHost};

/// Earlier versions kept instantiated, ready to take over without a delay.
const LIVE_FALLBACKS: usize = 2;

/// A loaded version's number within its slot (1, 2, …).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
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

/// Who answered a slot's last call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answering {
    /// No call yet.
    Nobody,
    Version(VersionId),
    /// Every version failed (or none is active): the kernel's native default answered.
    Native,
}

/// A shadow over time: a candidate version run beside the answering one on every
/// call, for a number of calls, and the running summary of how its answers differ.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ShadowWatch {
    pub version: VersionId,
    /// Calls still to shadow, and shadowed so far.
    pub cycles_left: u32,
    pub cycles: u32,
    /// Calls on which the candidate would have decided differently.
    pub differing: u32,
    /// Entries whose decision differed, summed over the calls, and the most in one.
    pub changed: u64,
    pub most_changed: usize,
    /// The size of the last batch shadowed.
    pub batch: usize,
    /// The last call's largest differences: `(job or node id, before, after)`.
    pub examples: Vec<(u64, String, String)>,
    /// Why the candidate failed (it is then marked unhealthy and the watch ends).
    pub failed: Option<String>,
}

/// A watch and the index of its version.
struct Watch {
    index: usize,
    summary: ShadowWatch,
    cycles_left: u32,
}

/// How a version became the active one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwapAction {
    /// An admin activated it (`policy load`, `policy activate`).
    Activate,
    /// An admin went back to the last fallback (`policy rollback`).
    Rollback,
    /// An admin rolled back to a named version (`policy rollback --to`).
    RollbackTo,
    /// The host, after the active version failed.
    Fallback,
}

impl SwapAction {
    pub fn name(self) -> &'static str {
        match self {
            Self::Activate => "activate",
            Self::Rollback | Self::RollbackTo => "rollback",
            Self::Fallback => "fallback",
        }
    }
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
    /// This slot's deadline, memory cap and instance count (the host's unless set).
    limits: crate::HostLimits,
    linker: Linker<HostState>,
    versions: Vec<Version<W>>,
    active: Option<usize>,
    /// Versions active before the current one, oldest first.
    earlier: Vec<usize>,
    history: Vec<SwapRecord>,
    failures: Vec<CallFailure>,
    native_answers: u64,
    answering: Answering,
    /// A candidate run beside the answering version on every call (`policy shadow
    /// --cycles`), and what it would have changed so far.
    watch: Option<Watch>,
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
            limits: host.limits(),
            host,
            linker,
            versions: Vec::new(),
            active: None,
            earlier: Vec::new(),
            history: Vec::new(),
            failures: Vec::new(),
            native_answers: 0,
            answering: Answering::Nobody,
            watch: None,
            record: false,
            last_batch: None,
        })
    }

    /// Gives this slot limits of its own (an interpreter needs more memory and time
    /// than a Rust guest). Instances made from then on get them.
    pub fn set_limits(&mut self, limits: crate::HostLimits) -> Result<(), LoadError> {
        limits.check()?;
        self.limits = limits;
        Ok(())
    }

    /// This slot's limits.
    pub fn limits(&self) -> crate::HostLimits {
        self.limits
    }

    fn new_instance(
        &self,
        pre: &W::Pre,
        name: &str,
        config: &str,
    ) -> Result<(Live<W>, W::Needs), LoadError> {
        let limits = StoreLimitsBuilder::new()
            .memory_size(self.limits.memory_bytes)
            .instances(self.limits.instances as usize)
            .trap_on_grow_failure(true)
            .build();
        let mut store = Store::new(
            self.host.engine(),
            HostState {
                limits,
                policy: name.to_string(),
                phase: Phase::Setup,
                last_error: None,
            },
        );
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let ms = self.limits.call_timeout.as_millis();
        let bindings =
            W::instantiate(pre, &mut store).map_err(|e| LoadError::Trap(short(&e, ms)))?;
        store.set_epoch_deadline(self.limits.deadline_ticks());
        W::init(&bindings, &mut store, config)
            .map_err(|e| LoadError::Trap(short(&e, ms)))?
            .map_err(LoadError::Config)?;
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let needs = W::needs(&bindings, &mut store).map_err(|e| LoadError::Trap(short(&e, ms)))?;
        Ok(((store, bindings), needs))
    }

    /// Compiles (once per sha256), checks the world, instantiates and `init`s a version.
    /// The version is loaded, not active.
    pub fn load(&mut self, bytes: &[u8], config: &str) -> Result<VersionId, LoadError> {
        let (component, sha) = self.host.compile(bytes)?;
        // Said plainly before the linker's "implementation is missing": WASI (a
        // language runtime's clock, files, environment) is not offered, and how to do
        // without it depends on the language (docs/POLICIES.md, "Other languages").
        let foreign: Vec<String> = component
            .component_type()
            .imports(self.host.engine())
            .map(|(name, _)| name.to_string())
            .filter(|name| !name.starts_with(crate::POLICY_PACKAGE))
            .collect();
        if !foreign.is_empty() {
            // Names the component chose: a few are enough to act on, and bound the message.
            const SHOWN: usize = 12;
            let mut names = foreign[..foreign.len().min(SHOWN)].join(", ");
            if foreign.len() > SHOWN {
                names.push_str(&format!(" and {} more", foreign.len() - SHOWN));
            }
            return Err(LoadError::ForeignImports(names));
        }
        let wrong = |e: wasmtime::Error| LoadError::WrongWorld {
            world: W::NAME,
            detail: short(&e, 0),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(wrong)?;
        let pre = W::pre(pre).map_err(wrong)?;
        let ((mut store, bindings), needs) = self.new_instance(&pre, W::NAME, config)?;
        store.set_epoch_deadline(self.limits.deadline_ticks());
        let info = W::info(&bindings, &mut store)
            .map_err(|e| LoadError::Trap(short(&e, self.limits.call_timeout.as_millis())))?;
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

    /// Makes version `to` the active one. Every way a version becomes active keeps the
    /// fallback order true: the versions active before it, most recent last, each once,
    /// never the active one. An admin's activation (`activate`, or `rollback` to a named
    /// version) keeps the version it replaces as the first fallback; going back
    /// (`rollback` with no version) and the host's own `fallback` drop it, since it is
    /// the one being left.
    fn switch(&mut self, to: usize, who: &str, at: Time, action: SwapAction) {
        let from = self.active.map(|i| self.versions[i].id);
        if let Some(old) = self.active.filter(|&old| old != to) {
            if matches!(action, SwapAction::Activate | SwapAction::RollbackTo) {
                self.earlier.retain(|&e| e != old);
                self.earlier.push(old);
            }
        }
        self.earlier.retain(|&e| e != to);
        self.active = Some(to);
        let v = &self.versions[to];
        tracing::info!(slot = W::NAME, action = action.name(), from = ?from, to = %v.id, who, "policy swap");
        self.history.push(SwapRecord {
            at,
            who: who.to_string(),
            action: action.name(),
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

    /// Makes a loaded version the active one (the one it replaces becomes the first
    /// fallback). Call it between two cycles.
    pub fn activate(&mut self, id: VersionId, who: &str, at: Time) -> Result<(), SlotError> {
        let i = self.index(id)?;
        self.versions[i].healthy = true;
        self.switch(i, who, at, SwapAction::Activate);
        Ok(())
    }

    /// Goes back to the most recent healthy fallback, or makes `to` active as
    /// [`Self::activate`] does (recorded as a rollback).
    pub fn rollback(
        &mut self,
        to: Option<VersionId>,
        who: &str,
        at: Time,
    ) -> Result<VersionId, SlotError> {
        let (i, action) = match to {
            Some(id) => (self.index(id)?, SwapAction::RollbackTo),
            None => {
                let healthy = self
                    .earlier
                    .iter()
                    .rposition(|&e| self.versions[e].healthy)
                    .ok_or(SlotError::NothingToRollBack)?;
                (self.earlier[healthy], SwapAction::Rollback)
            }
        };
        self.versions[i].healthy = true;
        self.switch(i, who, at, action);
        Ok(self.versions[i].id)
    }

    /// The versions a failure of the active one falls back to, the first tried first.
    pub fn fallbacks(&self) -> Vec<VersionId> {
        self.earlier
            .iter()
            .rev()
            .map(|&i| self.versions[i].id)
            .collect()
    }

    /// Runs version `id` on the last batch decided, as a trial before activating it.
    /// `Ok(false)`: no batch was recorded yet (nothing to try it on). A failure marks
    /// the version unhealthy and is recorded, as a failure in a cycle is.
    pub fn trial(&mut self, id: VersionId) -> Result<bool, SlotError> {
        let i = self.index(id)?;
        let Some((now, batch)) = self.last_batch.take() else {
            return Ok(false);
        };
        let result = self.run(i, now, batch.borrow(), Phase::Setup);
        self.last_batch = Some((now, batch));
        match result {
            Ok(_) => Ok(true),
            Err(reason) => {
                self.failed(i, now, reason.clone());
                Err(SlotError::Failed(reason))
            }
        }
    }

    /// Marks version `i` unhealthy after a failure at `now`, and records it.
    fn failed(&mut self, i: usize, now: Time, reason: String) {
        let v = &mut self.versions[i];
        v.healthy = false;
        tracing::warn!(slot = W::NAME, version = %v.id, name = %v.info.name, %reason, "policy failed");
        self.failures.push(CallFailure {
            at: now,
            version: v.id,
            reason,
        });
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
            Some(a) => self
                .run(a, now, batch, Phase::Setup)
                .map_err(SlotError::Failed)?,
            None => native(now, batch),
        };
        let candidate = match self.run(cand, now, batch, Phase::Setup) {
            Ok(c) => c,
            Err(reason) => {
                self.failed(cand, now, reason.clone());
                return Err(SlotError::Failed(reason));
            }
        };
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
        let ticks = self.limits.deadline_ticks();
        let v = &mut self.versions[i];
        if let Some((store, _)) = v.instance.as_mut() {
            store.set_epoch_deadline(ticks);
        }
        Ok(v)
    }

    fn run(
        &mut self,
        i: usize,
        now: Time,
        batch: &W::Batch,
        phase: Phase,
    ) -> Result<W::Answer, String> {
        let ms = self.limits.call_timeout.as_millis();
        let v = self.live(i)?;
        let (store, bindings) = v.instance.as_mut().expect("made live above");
        store.data_mut().phase = phase;
        store.data_mut().last_error = None;
        match W::call(bindings, store, now, batch, v.needs) {
            Ok(answer) => W::check(batch, &answer).map(|()| answer),
            Err(e) => {
                // What the guest said last before it trapped (a Rust guest's panic
                // message and location).
                let said = store.data_mut().last_error.take();
                // A trapped instance may hold broken state: never call it again.
                v.instance = None;
                let reason = short(&e, ms);
                Err(match said {
                    Some(line) => format!("{reason} ({line})"),
                    None => reason,
                })
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
        order.extend(self.earlier.iter().rev().copied());
        for i in order {
            if !self.versions[i].healthy {
                continue;
            }
            match self.run(i, now, batch, Phase::Cycle) {
                Ok(answer) => {
                    if Some(i) != self.active {
                        self.switch(i, "gantry", now, SwapAction::Fallback);
                    }
                    self.answering = Answering::Version(self.versions[i].id);
                    self.shadow_call(i, now, batch, &answer);
                    return Some(answer);
                }
                Err(reason) => self.failed(i, now, reason),
            }
        }
        self.native_answers += 1;
        self.answering = Answering::Native;
        None
    }

    /// Runs the watched candidate (if any, and not the version that answered) on the
    /// batch just decided and adds how its answer differs to the watch's summary.
    fn shadow_call(&mut self, answered_by: usize, now: Time, batch: &W::Batch, answer: &W::Answer) {
        let Some(w) = self.watch.as_ref().filter(|w| w.cycles_left > 0) else {
            return;
        };
        let cand = w.index;
        if cand == answered_by || !self.versions[cand].healthy {
            return;
        }
        let result = self.run(cand, now, batch, Phase::Cycle);
        let failure = match &result {
            Err(reason) => Some(reason.clone()),
            Ok(_) => None,
        };
        if let Some(reason) = &failure {
            self.failed(cand, now, reason.clone());
        }
        let Some(w) = self.watch.as_mut() else { return };
        w.cycles_left -= 1;
        match result {
            Ok(candidate) => {
                let report = W::compare(batch, answer, &candidate);
                let s = &mut w.summary;
                s.cycles += 1;
                s.batch = report.batch;
                if report.changed > 0 {
                    s.differing += 1;
                    s.changed += report.changed as u64;
                    s.most_changed = s.most_changed.max(report.changed);
                    s.examples = report.examples;
                }
            }
            Err(_) => {
                w.summary.failed = failure;
                w.cycles_left = 0;
            }
        }
        w.summary.cycles_left = w.cycles_left;
    }

    /// Starts shadowing version `id` beside the answering one for the next `cycles`
    /// calls (replacing any watch); 0 stops watching.
    pub fn watch_shadow(&mut self, id: VersionId, cycles: u32) -> Result<(), SlotError> {
        let index = self.index(id)?;
        self.watch = (cycles > 0).then(|| Watch {
            index,
            cycles_left: cycles,
            summary: ShadowWatch {
                version: id,
                cycles_left: cycles,
                ..ShadowWatch::default()
            },
        });
        Ok(())
    }

    /// The running (or last) shadow over time.
    pub fn shadow_watch(&self) -> Option<ShadowWatch> {
        self.watch.as_ref().map(|w| w.summary.clone())
    }

    /// Who answered the last call.
    pub fn answering(&self) -> Answering {
        self.answering
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
    /// The configuration text version `id` was loaded with.
    pub fn config_of(&self, id: VersionId) -> Option<&str> {
        self.versions
            .iter()
            .find(|v| v.id == id)
            .map(|v| v.config.as_str())
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
            .chain(
                self.watch
                    .as_ref()
                    .filter(|w| w.cycles_left > 0)
                    .map(|w| w.index),
            )
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
        let ms = self.limits.call_timeout.as_millis();
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
