//! # gantry-wasm-host
//!
//! Runs policy components (`wit/policy.wit`) under wasmtime's component model, behind the
//! kernel's decision-point traits. A component is compiled once per content hash,
//! pre-instantiated, and every call runs under a deadline (epoch interruption) in an
//! instance with a memory cap. A trap, a timeout, a memory overrun or an answer of the
//! wrong shape falls back to the last good version of the policy, then to the kernel's
//! native safe default — counted, logged and reported; the scheduler never stops.
//!
//! Hot swap: [`PolicySlot::load`] (compile, check the world, `init`) →
//! [`PolicySlot::shadow`] (what would change on the last batch) → [`PolicySlot::activate`]
//! between two cycles → [`PolicySlot::rollback`]. Every swap is recorded with time, who
//! and sha256.
//!
//! Compiled code can be kept on disk ([`PolicyHost::with_code_cache`]): a component seen
//! before loads in milliseconds instead of the hundreds a Cranelift compile takes.
//!
//! ## What it must not depend on
//!
//! The scheduling core's internals: it only implements `gantry_kernel::policy` traits.
//! It owns one background thread (the epoch ticker); its only other I/O is the optional
//! code cache directory.

mod slot;
mod world;

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use sha2::{Digest, Sha256};
use thiserror::Error;
use wasmtime::component::Component;
use wasmtime::{Config, Engine, ProfilingStrategy};

pub use slot::{
    Answering, CallFailure, Decision, LoadedVersion, PolicySlot, ShadowReport, ShadowWatch,
    SharedSlot, SlotError, SwapAction, SwapRecord, VersionId,
};
pub use world::{
    FairshareWorld, HostState, Phase, PlacementWorld, PolicyWorld, PreemptionWorld, PriorityWorld,
    MAX_LOG_LINE,
};

/// Safety limits of every policy call and instance. Validated once by [`PolicyHost::new`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostLimits {
    /// Longest a single call (`init` or a decision) may run.
    pub call_timeout: Duration,
    /// Largest linear memory an instance may grow to, in bytes.
    pub memory_bytes: usize,
    /// Most core instances (and so memories and tables) one component instance may
    /// make: a Rust component makes one or two; an interpreter's may make more.
    pub instances: u32,
}

impl Default for HostLimits {
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_millis(500),
            memory_bytes: 256 << 20,
            instances: 8,
        }
    }
}

impl HostLimits {
    /// The tightest and loosest limits a host or a slot may be given.
    pub const MIN_CALL_TIMEOUT: Duration = Duration::from_millis(2);
    pub const MAX_CALL_TIMEOUT: Duration = Duration::from_secs(60);
    pub const MIN_MEMORY_BYTES: usize = 1 << 20;
    pub const MAX_MEMORY_BYTES: usize = 16 << 30;
    pub const MAX_INSTANCES: u32 = 64;

    /// The defaults with any of a slot's settings in an administrator's units (as
    /// gantryd's `[policies.KIND]` and `gantry sim --policy-limits` take them), checked.
    pub fn with_settings(
        deadline_ms: Option<u64>,
        memory_mb: Option<u64>,
        instances: Option<u64>,
    ) -> Result<Self, LoadError> {
        let mut l = Self::default();
        if let Some(ms) = deadline_ms {
            l.call_timeout = Duration::from_millis(ms);
        }
        if let Some(mb) = memory_mb {
            l.memory_bytes = usize::try_from(mb.saturating_mul(1 << 20)).unwrap_or(usize::MAX);
        }
        if let Some(n) = instances {
            l.instances = u32::try_from(n).unwrap_or(u32::MAX);
        }
        l.check()?;
        Ok(l)
    }

    /// Refuses limits outside those bounds, saying which.
    pub fn check(&self) -> Result<(), LoadError> {
        let bad = |m: String| Err(LoadError::Limits(m));
        if !(Self::MIN_CALL_TIMEOUT..=Self::MAX_CALL_TIMEOUT).contains(&self.call_timeout) {
            return bad(format!(
                "the call deadline must be between {:?} and {:?}",
                Self::MIN_CALL_TIMEOUT,
                Self::MAX_CALL_TIMEOUT
            ));
        }
        if !(Self::MIN_MEMORY_BYTES..=Self::MAX_MEMORY_BYTES).contains(&self.memory_bytes) {
            return bad("the memory cap must be between 1 MiB and 16 GiB".into());
        }
        if !(1..=Self::MAX_INSTANCES).contains(&self.instances) {
            return bad(format!(
                "the instance count must be between 1 and {}",
                Self::MAX_INSTANCES
            ));
        }
        Ok(())
    }

    /// The epoch ticks of a call's deadline.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.call_timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64
    }
}

/// Names the profiler that the engine tells about compiled policy code: `perfmap` makes
/// it write `/tmp/perf-<pid>.map`, so that `perf report` names a policy's functions.
/// Unset: none. (Wasmtime's `jitdump`, which would also give `perf annotate` the code,
/// is a build feature Gantry does not compile in.)
pub const PROFILER_ENV: &str = "GANTRY_WASM_PROFILER";

fn profiler_from_env() -> ProfilingStrategy {
    let value = std::env::var(PROFILER_ENV).ok();
    profiler(value.as_deref()).unwrap_or_else(|other| {
        // A typo must not stop a controller from starting: say so and run without.
        tracing::warn!("{PROFILER_ENV}={other:?} is not one of perfmap, none; no profiler");
        ProfilingStrategy::None
    })
}

/// The profiler a value of [`PROFILER_ENV`] names; the value back when it names none.
fn profiler(value: Option<&str>) -> Result<ProfilingStrategy, &str> {
    match value {
        None | Some("") | Some("none") => Ok(ProfilingStrategy::None),
        Some("perfmap") => Ok(ProfilingStrategy::PerfMap),
        Some(other) => Err(other),
    }
}

/// The resolution of call deadlines: the epoch ticks this often.
/// What a policy may import: the package's interfaces (`host`, and `types` for the
/// types its worlds use), of any version — a component of another version is refused
/// by its world's check, with the reason.
pub(crate) const POLICY_PACKAGE: &str = "gantry:policy/";

const EPOCH_TICK: Duration = Duration::from_millis(1);

#[derive(Debug, Error)]
pub enum LoadError {
    #[error("invalid host limits: {0}")]
    Limits(String),
    #[error("not a valid policy component: {0}")]
    Compile(String),
    /// A core WebAssembly module, as `cargo build --target wasm32-unknown-unknown` makes
    /// without the component linker.
    #[error(
        "this is a core WebAssembly module, not a component: link it with the Rust \
         toolchain's wasm-component-ld (Cargo setting target.wasm32-unknown-unknown.linker \
         = \"wasm-component-ld\", as the project `gantry policy new` makes has it), or \
         encode it with `wasm-tools component new`"
    )]
    CoreModule,
    /// Imports the host does not offer (WASI, most often).
    #[error(
        "the component imports what Gantry does not offer: {0}. A policy may import only \
         gantry:policy's interfaces (no WASI: no files, clock, environment or randomness); \
         docs/POLICIES.md says how each language does without"
    )]
    ForeignImports(String),
    #[error("component does not implement the '{world}' world of gantry:policy@0.3.0: {detail}")]
    WrongWorld { world: &'static str, detail: String },
    #[error("policy refused its configuration: {0}")]
    Config(String),
    #[error("policy failed while loading: {0}")]
    Trap(String),
    #[error("wasm engine: {0}")]
    Engine(String),
}

/// The shared engine: compiler, epoch ticker, and compiled components by sha256.
pub struct PolicyHost {
    engine: Engine,
    limits: HostLimits,
    compiled: Mutex<HashMap<[u8; 32], Component>>,
    /// Where compiled components are kept between runs, if anywhere.
    code_cache: Option<PathBuf>,
    stop: Arc<AtomicBool>,
    ticker: Option<JoinHandle<()>>,
}

impl PolicyHost {
    pub fn new(limits: HostLimits) -> Result<Arc<Self>, LoadError> {
        Self::build(limits, None)
    }

    /// Like [`PolicyHost::new`], keeping compiled components in `dir` (created if
    /// missing) so that the next process loads them without compiling.
    ///
    /// The files there are native code that is run as it is found: `dir` must be
    /// writable only by the user that runs Gantry (it is created with mode 0700).
    /// Each file is named by the component's sha256 and the engine's settings, written
    /// whole before it is renamed into place, and one that does not load (another
    /// wasmtime, a damaged file) is compiled again and replaced. A cache that cannot
    /// be read or written only costs the compile.
    pub fn with_code_cache(limits: HostLimits, dir: PathBuf) -> Result<Arc<Self>, LoadError> {
        Self::build(limits, Some(dir))
    }

    fn build(limits: HostLimits, code_cache: Option<PathBuf>) -> Result<Arc<Self>, LoadError> {
        limits.check()?;
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .epoch_interruption(true)
            .profiler(profiler_from_env());
        let engine = Engine::new(&config).map_err(|e| LoadError::Engine(e.to_string()))?;
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = {
            let (engine, stop) = (engine.clone(), stop.clone());
            std::thread::Builder::new()
                .name("gantry-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(|e| LoadError::Engine(format!("cannot start the epoch ticker: {e}")))?
        };
        Ok(Arc::new(Self {
            engine,
            limits,
            compiled: Mutex::new(HashMap::new()),
            code_cache,
            stop,
            ticker: Some(ticker),
        }))
    }

    pub fn limits(&self) -> HostLimits {
        self.limits
    }

    pub(crate) fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Compiles `bytes`, or returns the component compiled earlier from the same bytes.
    pub(crate) fn compile(&self, bytes: &[u8]) -> Result<(Component, [u8; 32]), LoadError> {
        // The preamble's version field: 1 for a core module, 0x0d (layer 1) a component.
        if bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [1, 0, 0, 0] {
            return Err(LoadError::CoreModule);
        }
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(c) = self
            .compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&sha)
        {
            return Ok((c.clone(), sha));
        }
        let cached = self
            .code_cache
            .as_deref()
            .map(|dir| self.cache_file(dir, &sha));
        let component = match cached.as_deref().and_then(|f| self.load_cached(f)) {
            Some(c) => c,
            None => {
                let code = self.compiled_object(bytes)?;
                if let Some(file) = &cached {
                    store_cached(file, &code);
                }
                // SAFETY: `code` was produced just now by this engine.
                unsafe { Component::deserialize(&self.engine, &code) }
                    .map_err(|e| LoadError::Compile(format!("{e:#}")))?
            }
        };
        self.compiled
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(sha, component.clone());
        Ok((component, sha))
    }
}

impl PolicyHost {
    /// The machine code this host would run for a component: the ELF object wasmtime
    /// compiles it to (what the code cache holds), with one symbol per function. For
    /// reading with `objdump -d`, to see how a policy's hot loop came out of Cranelift
    /// (`examples/policy-code.rs`). Compiles anew and keeps nothing.
    /// Compiles a component into this host's cache (a later load of the same bytes
    /// only instantiates it), so the two costs can be told apart.
    pub fn precompile(&self, bytes: &[u8]) -> Result<(), LoadError> {
        self.compile(bytes).map(|_| ())
    }

    pub fn compiled_object(&self, bytes: &[u8]) -> Result<Vec<u8>, LoadError> {
        self.engine
            .precompile_component(bytes)
            .map_err(|e| LoadError::Compile(format!("{e:#}")))
    }

    /// The cache file of a component: its sha256 and a hash of the engine's settings,
    /// so that code compiled under other settings is never looked at.
    fn cache_file(&self, dir: &Path, sha: &[u8; 32]) -> PathBuf {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        dir.join(format!("{}-{:016x}.cwasm", hex(sha), h.finish()))
    }

    fn load_cached(&self, file: &Path) -> Option<Component> {
        if !file.exists() {
            return None;
        }
        // SAFETY: the cache directory holds only what `store_cached` wrote there with
        // code from `precompile_component` (see `with_code_cache` on who may write it);
        // wasmtime checks the file's format and engine settings before using it.
        match unsafe { Component::deserialize_file(&self.engine, file) } {
            Ok(c) => {
                tracing::debug!(file = %file.display(), "compiled policy loaded from the code cache");
                Some(c)
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), error = %e, "cached policy code unusable; compiling again");
                None
            }
        }
    }
}

/// Writes compiled code into the cache: whole to a temporary name, then renamed, so a
/// reader never sees half a file. Failures are logged and otherwise ignored.
fn store_cached(file: &Path, code: &[u8]) {
    let write = || -> std::io::Result<()> {
        let dir = file.parent().unwrap_or(Path::new("."));
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
        let tmp = file.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, code)?;
        std::fs::rename(&tmp, file).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    };
    if let Err(e) = write() {
        tracing::warn!(file = %file.display(), error = %e, "cannot write the policy code cache");
    }
}

impl Drop for PolicyHost {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.ticker.take() {
            let _ = t.join();
        }
    }
}

/// Lower-case hex of a sha256.
pub fn hex(sha: &[u8; 32]) -> String {
    sha.iter().map(|b| format!("{b:02x}")).collect()
}

/// A component to load and the configuration text for its `init`.
#[derive(Debug, Clone)]
pub struct ComponentSource {
    pub bytes: Vec<u8>,
    pub config: String,
    /// The slot's own limits (default: the host's).
    pub limits: Option<HostLimits>,
}

/// Handles to the slots of a Wasm [`gantry_kernel::policy::PolicySet`], for swaps.
#[derive(Clone)]
pub struct WasmSlots {
    /// The host the slots compile with (its compile cache is theirs).
    pub host: Arc<PolicyHost>,
    pub priority: Arc<Mutex<PolicySlot<PriorityWorld>>>,
    pub fairshare: Arc<Mutex<PolicySlot<FairshareWorld>>>,
    pub preemption: Arc<Mutex<PolicySlot<PreemptionWorld>>>,
    pub placement: Arc<Mutex<PolicySlot<PlacementWorld>>>,
}

/// The four decision points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    Priority,
    Fairshare,
    Preemption,
    Placement,
}

impl PolicyKind {
    pub const ALL: [PolicyKind; 4] = [
        Self::Priority,
        Self::Fairshare,
        Self::Preemption,
        Self::Placement,
    ];

    /// The built-in component that fills this slot by default (`<name>.wasm` and its
    /// configuration `<name>.toml` in the [`builtin_dir`]).
    pub fn builtin(self) -> &'static str {
        match self {
            Self::Priority => "multifactor",
            Self::Fairshare => "fairtree",
            Self::Preemption => "qos-preemption",
            Self::Placement => "topology-placement",
        }
    }

    /// The world's name in the WIT package.
    pub fn name(self) -> &'static str {
        match self {
            Self::Priority => PriorityWorld::NAME,
            Self::Fairshare => FairshareWorld::NAME,
            Self::Preemption => PreemptionWorld::NAME,
            Self::Placement => PlacementWorld::NAME,
        }
    }
}

impl std::str::FromStr for PolicyKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown policy kind '{s}' (use priority, fairshare, preemption or placement)"
                )
            })
    }
}

/// Where the built-in components are: `$GANTRY_POLICY_DIR`, else `policies/` beside the
/// running binary's directory (`target/policies` for a build tree), else
/// `../lib/gantry/policies`. On failure, the places looked in.
pub fn builtin_dir() -> Result<std::path::PathBuf, Vec<std::path::PathBuf>> {
    if let Some(d) = std::env::var_os("GANTRY_POLICY_DIR") {
        return Ok(d.into());
    }
    let bin = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.to_path_buf()))
        .unwrap_or_default();
    let candidates = [bin.join("../policies"), bin.join("../lib/gantry/policies")];
    candidates
        .iter()
        .find(|d| {
            d.join(format!("{}.wasm", PolicyKind::Priority.builtin()))
                .is_file()
        })
        .cloned()
        .ok_or_else(|| candidates.to_vec())
}

fn locked<W: Decision, R>(
    slot: &Mutex<PolicySlot<W>>,
    f: impl FnOnce(&mut PolicySlot<W>) -> R,
) -> R {
    f(&mut slot.lock().unwrap_or_else(|p| p.into_inner()))
}

impl WasmSlots {
    /// [`PolicySlot::load`] on the slot of `kind`.
    pub fn load(
        &self,
        kind: PolicyKind,
        bytes: &[u8],
        config: &str,
    ) -> Result<VersionId, LoadError> {
        match kind {
            PolicyKind::Priority => locked(&self.priority, |s| s.load(bytes, config)),
            PolicyKind::Fairshare => locked(&self.fairshare, |s| s.load(bytes, config)),
            PolicyKind::Preemption => locked(&self.preemption, |s| s.load(bytes, config)),
            PolicyKind::Placement => locked(&self.placement, |s| s.load(bytes, config)),
        }
    }

    /// [`PolicySlot::activate`] on the slot of `kind`.
    pub fn activate(
        &self,
        kind: PolicyKind,
        id: VersionId,
        who: &str,
        at: gantry_kernel::Time,
    ) -> Result<(), SlotError> {
        match kind {
            PolicyKind::Priority => locked(&self.priority, |s| s.activate(id, who, at)),
            PolicyKind::Fairshare => locked(&self.fairshare, |s| s.activate(id, who, at)),
            PolicyKind::Preemption => locked(&self.preemption, |s| s.activate(id, who, at)),
            PolicyKind::Placement => locked(&self.placement, |s| s.activate(id, who, at)),
        }
    }
}

impl WasmSlots {
    /// Compiles a component into the host's cache without taking any slot's lock, so
    /// that a later [`WasmSlots::load`] of the same bytes only instantiates it. The slow
    /// part of a load (Cranelift) thus never holds up a scheduling cycle, nor whoever
    /// holds the caller's own locks.
    pub fn compile(&self, bytes: &[u8]) -> Result<(), LoadError> {
        self.host.compile(bytes).map(|_| ())
    }

    /// [`PolicySlot::record_batches`] on every slot.
    pub fn record_batches(&self, on: bool) {
        locked(&self.priority, |s| s.record_batches(on));
        locked(&self.fairshare, |s| s.record_batches(on));
        locked(&self.preemption, |s| s.record_batches(on));
        locked(&self.placement, |s| s.record_batches(on));
    }

    /// [`PolicySlot::watch_shadow`] on the slot of `kind`.
    pub fn watch_shadow(
        &self,
        kind: PolicyKind,
        id: VersionId,
        cycles: u32,
    ) -> Result<(), SlotError> {
        match kind {
            PolicyKind::Priority => locked(&self.priority, |s| s.watch_shadow(id, cycles)),
            PolicyKind::Fairshare => locked(&self.fairshare, |s| s.watch_shadow(id, cycles)),
            PolicyKind::Preemption => locked(&self.preemption, |s| s.watch_shadow(id, cycles)),
            PolicyKind::Placement => locked(&self.placement, |s| s.watch_shadow(id, cycles)),
        }
    }

    /// [`PolicySlot::trial`] on the slot of `kind`.
    pub fn trial(&self, kind: PolicyKind, id: VersionId) -> Result<bool, SlotError> {
        match kind {
            PolicyKind::Priority => locked(&self.priority, |s| s.trial(id)),
            PolicyKind::Fairshare => locked(&self.fairshare, |s| s.trial(id)),
            PolicyKind::Preemption => locked(&self.preemption, |s| s.trial(id)),
            PolicyKind::Placement => locked(&self.placement, |s| s.trial(id)),
        }
    }

    /// [`PolicySlot::rollback`] on the slot of `kind`.
    pub fn rollback(
        &self,
        kind: PolicyKind,
        to: Option<VersionId>,
        who: &str,
        at: gantry_kernel::Time,
    ) -> Result<VersionId, SlotError> {
        match kind {
            PolicyKind::Priority => locked(&self.priority, |s| s.rollback(to, who, at)),
            PolicyKind::Fairshare => locked(&self.fairshare, |s| s.rollback(to, who, at)),
            PolicyKind::Preemption => locked(&self.preemption, |s| s.rollback(to, who, at)),
            PolicyKind::Placement => locked(&self.placement, |s| s.rollback(to, who, at)),
        }
    }
}

/// The four components a scheduler runs with.
#[derive(Debug, Clone)]
pub struct PolicyComponents {
    pub priority: ComponentSource,
    pub fairshare: ComponentSource,
    pub preemption: ComponentSource,
    pub placement: ComponentSource,
}

/// Loads and activates the four components as a [`gantry_kernel::policy::PolicySet`]
/// whose every slot falls back to the native safe defaults (FIFO, classic fairshare,
/// no preemption, first fit). `who` and `at` go into each slot's swap history.
pub fn policy_set(
    host: &Arc<PolicyHost>,
    components: &PolicyComponents,
    who: &str,
    at: gantry_kernel::Time,
) -> Result<(gantry_kernel::policy::PolicySet, WasmSlots), LoadError> {
    use gantry_kernel::policy::{
        ClassicFairshare, FifoPriority, FirstFitPlacement, NoPreemption, PolicySet,
    };
    fn slot<W: Decision>(
        host: &Arc<PolicyHost>,
        src: &ComponentSource,
        who: &str,
        at: gantry_kernel::Time,
    ) -> Result<PolicySlot<W>, LoadError> {
        let mut s = PolicySlot::<W>::new(host.clone())?;
        if let Some(limits) = src.limits {
            s.set_limits(limits)?;
        }
        let id = s.load(&src.bytes, &src.config)?;
        s.activate(id, who, at)
            .map_err(|e| LoadError::Engine(e.to_string()))?;
        Ok(s)
    }
    let (priority, p) = SharedSlot::new(
        slot::<PriorityWorld>(host, &components.priority, who, at)?,
        FifoPriority,
    );
    let (fairshare, f) = SharedSlot::new(
        slot::<FairshareWorld>(host, &components.fairshare, who, at)?,
        ClassicFairshare,
    );
    let (preemption, x) = SharedSlot::new(
        slot::<PreemptionWorld>(host, &components.preemption, who, at)?,
        NoPreemption,
    );
    let (placement, l) = SharedSlot::new(
        slot::<PlacementWorld>(host, &components.placement, who, at)?,
        FirstFitPlacement,
    );
    let set = PolicySet {
        priority: Box::new(priority),
        fairshare: Box::new(fairshare),
        preemption: Box::new(preemption),
        placement: Box::new(placement),
    };
    Ok((
        set,
        WasmSlots {
            host: host.clone(),
            priority: p,
            fairshare: f,
            preemption: x,
            placement: l,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiler_names_are_read_and_a_typo_is_handed_back() {
        let named = |v| matches!(profiler(v), Ok(ProfilingStrategy::None));
        assert!(named(None) && named(Some("")) && named(Some("none")));
        assert!(matches!(
            profiler(Some("perfmap")),
            Ok(ProfilingStrategy::PerfMap)
        ));
        assert_eq!(profiler(Some("jitdump")).err(), Some("jitdump"));
        assert_eq!(profiler(Some("perf-map")).err(), Some("perf-map"));
    }
}
