//! Which policies a command runs with: the Wasm built-ins from the policy directory by
//! default, components and configurations named on the command line, or the built-ins'
//! native builds.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::{anyhow, bail, Context, Result};
use gantry_kernel::policy::{Native, PolicySet};
use gantry_wasm_host::{
    policy_set, ComponentSource, HostLimits, PolicyComponents, PolicyHost, WasmSlots,
};

pub use gantry_wasm_host::PolicyKind as Kind;

/// `KIND=PATH`, as in `--policy priority=my.wasm`.
#[derive(Debug, Clone)]
pub struct KindPath {
    pub kind: Kind,
    pub path: PathBuf,
}

impl FromStr for KindPath {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, p) = s
            .split_once('=')
            .ok_or_else(|| format!("'{s}' must be KIND=PATH, e.g. priority=policy.wasm"))?;
        if p.is_empty() {
            return Err(format!("'{s}' names no file"));
        }
        Ok(Self {
            kind: k.parse()?,
            path: PathBuf::from(p),
        })
    }
}

/// `KIND=deadline_ms=N,memory_mb=N,instances=N`: a slot's own limits (`--policy-limits`).
#[derive(Debug, Clone)]
pub struct KindLimits {
    pub kind: Kind,
    pub limits: HostLimits,
}

impl FromStr for KindLimits {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (k, rest) = s.split_once('=').ok_or_else(|| {
            format!("'{s}' must be KIND=LIMITS, e.g. priority=deadline_ms=2000,memory_mb=512")
        })?;
        let kind: Kind = k.parse()?;
        let limits = slot_limits(rest.split(',').map(|kv| {
            kv.split_once('=')
                .ok_or_else(|| format!("'{kv}' must be NAME=NUMBER"))
                .and_then(|(key, v)| {
                    v.trim()
                        .parse::<u64>()
                        .map(|n| (key.trim().to_string(), n))
                        .map_err(|_| format!("{key}: '{v}' is not a whole number"))
                })
        }))?;
        Ok(Self { kind, limits })
    }
}

/// Limits from `deadline_ms`, `memory_mb` and `instances` (the others stay the
/// defaults), checked.
pub fn slot_limits(
    pairs: impl IntoIterator<Item = Result<(String, u64), String>>,
) -> Result<HostLimits, String> {
    let (mut deadline_ms, mut memory_mb, mut instances) = (None, None, None);
    for pair in pairs {
        let (key, n) = pair?;
        match key.as_str() {
            "deadline_ms" => deadline_ms = Some(n),
            "memory_mb" => memory_mb = Some(n),
            "instances" => instances = Some(n),
            other => {
                return Err(format!(
                    "unknown limit '{other}' (deadline_ms, memory_mb, instances)"
                ))
            }
        }
    }
    HostLimits::with_settings(deadline_ms, memory_mb, instances).map_err(|e| e.to_string())
}

/// Where the built-in components live: `$GANTRY_POLICY_DIR`, else `policies/` beside the
/// binary's directory (`target/policies` for a build tree), else `../lib/gantry/policies`.
pub fn builtin_dir(explicit: Option<&Path>) -> Result<PathBuf> {
    if let Some(d) = explicit {
        return Ok(d.to_path_buf());
    }
    gantry_wasm_host::builtin_dir().map_err(|looked| {
        anyhow!("the built-in policy components were not found (looked in {}); build them with scripts/build-policies.sh, point --policy-dir or GANTRY_POLICY_DIR at them, or use --native-policies", looked.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", "))
    })
}

fn read(path: &Path, what: &str) -> Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

fn config_for(
    kind: Kind,
    configs: &[KindPath],
    default: impl FnOnce() -> Result<String>,
) -> Result<String> {
    match configs.iter().rev().find(|c| c.kind == kind) {
        Some(c) => String::from_utf8(read(&c.path, "policy configuration")?)
            .with_context(|| format!("{} is not UTF-8 text", c.path.display())),
        None => default(),
    }
}

/// Where compiled policy code is kept between runs when no directory is given:
/// `$XDG_CACHE_HOME/gantry/policy-code`, else `~/.cache/gantry/policy-code`.
pub fn default_code_cache() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|d| !d.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("gantry").join("policy-code"))
}

/// The built-ins' native builds, with the same configurations.
pub fn native(dir: Option<&Path>, configs: &[KindPath]) -> Result<PolicySet> {
    let default = |k: Kind| -> Result<String> {
        match dir {
            Some(d) => Ok(
                std::fs::read_to_string(d.join(format!("{}.toml", k.builtin())))
                    .unwrap_or_default(),
            ),
            None => Ok(String::new()),
        }
    };
    let cfg = |k: Kind| config_for(k, configs, || default(k));
    let e =
        |k: Kind| move |e: gantry_kernel::policy::PolicyError| anyhow!("{} policy: {e}", k.name());
    Ok(PolicySet {
        priority: Box::new(
            Native::new(
                gantry_policy_multifactor::Multifactor::default(),
                &cfg(Kind::Priority)?,
            )
            .map_err(e(Kind::Priority))?,
        ),
        fairshare: Box::new(
            Native::new(
                gantry_policy_fairtree::FairTree::default(),
                &cfg(Kind::Fairshare)?,
            )
            .map_err(e(Kind::Fairshare))?,
        ),
        preemption: Box::new(
            Native::new(
                gantry_policy_qos_preemption::QosPreemption::default(),
                &cfg(Kind::Preemption)?,
            )
            .map_err(e(Kind::Preemption))?,
        ),
        placement: Box::new(
            Native::new(
                gantry_policy_topology_placement::TopologyPlacement::default(),
                &cfg(Kind::Placement)?,
            )
            .map_err(e(Kind::Placement))?,
        ),
    })
}

/// The Wasm built-ins from `dir`, with `replace` components (and `configs`) loaded in
/// their place from the start — or, with `defer`, only loaded, to activate later.
pub struct Loaded {
    pub set: PolicySet,
    pub slots: WasmSlots,
    /// Versions loaded but not active (for a later swap), per kind.
    pub deferred: Vec<(Kind, gantry_wasm_host::VersionId)>,
}

pub fn wasm(
    dir: &Path,
    code_cache: Option<PathBuf>,
    replace: &[KindPath],
    configs: &[KindPath],
    limits: &[KindLimits],
    defer: bool,
) -> Result<Loaded> {
    let limits_of = |k: Kind| limits.iter().rev().find(|l| l.kind == k).map(|l| l.limits);
    let host = match code_cache {
        Some(cache) => PolicyHost::with_code_cache(HostLimits::default(), cache)?,
        None => PolicyHost::new(HostLimits::default())?,
    };
    let builtin = |k: Kind| -> Result<ComponentSource> {
        let wasm = dir.join(format!("{}.wasm", k.builtin()));
        let bytes = read(&wasm, "built-in policy")?;
        let toml = dir.join(format!("{}.toml", k.builtin()));
        // With a deferred swap, --policy-config belongs to the incoming component.
        let own = if defer { &[][..] } else { configs };
        let config = config_for(k, own, || {
            Ok(std::fs::read_to_string(&toml).unwrap_or_default())
        })?;
        Ok(ComponentSource {
            bytes,
            config,
            limits: limits_of(k),
        })
    };
    let pick = |k: Kind| -> Result<ComponentSource> {
        match replace.iter().rev().find(|r| r.kind == k) {
            Some(r) if !defer => Ok(ComponentSource {
                bytes: read(&r.path, "policy component")?,
                config: config_for(k, configs, || Ok(String::new()))?,
                limits: limits_of(k),
            }),
            _ => builtin(k),
        }
    };
    let components = PolicyComponents {
        priority: pick(Kind::Priority)?,
        fairshare: pick(Kind::Fairshare)?,
        preemption: pick(Kind::Preemption)?,
        placement: pick(Kind::Placement)?,
    };
    let (set, slots) = policy_set(&host, &components, "gantry", 0)?;
    let mut deferred = Vec::new();
    if defer {
        for r in replace {
            let bytes = read(&r.path, "policy component")?;
            let config = config_for(r.kind, configs, || Ok(String::new()))?;
            let ctx = || format!("{} policy {}", r.kind.name(), r.path.display());
            let id = slots.load(r.kind, &bytes, &config).with_context(ctx)?;
            deferred.push((r.kind, id));
        }
    }
    Ok(Loaded {
        set,
        slots,
        deferred,
    })
}

/// Activates the deferred versions (between two cycles).
pub fn swap(loaded: &Loaded, at: gantry_kernel::Time) -> Result<()> {
    for &(kind, id) in &loaded.deferred {
        loaded
            .slots
            .activate(kind, id, "gantry sim --swap-at", at)
            .map_err(|e| anyhow!("{} swap: {e}", kind.name()))?;
    }
    Ok(())
}

/// What each slot ran: versions, swaps, failures and native answers, for reports.
pub fn summary(slots: &WasmSlots) -> serde_json::Value {
    fn one<W: gantry_wasm_host::Decision>(
        s: &std::sync::Mutex<gantry_wasm_host::PolicySlot<W>>,
    ) -> serde_json::Value {
        let s = s.lock().unwrap_or_else(|p| p.into_inner());
        serde_json::json!({
            "versions": s.versions().iter().map(|v| serde_json::json!({"id": v.id.0, "name": v.name, "version": v.version, "sha256": v.sha256, "active": v.active, "healthy": v.healthy})).collect::<Vec<_>>(),
            "swaps": s.history().iter().map(|h| serde_json::json!({"at": h.at, "who": h.who, "action": h.action, "from": h.from.map(|v| v.0), "to": h.to.map(|v| v.0), "sha256": h.sha256})).collect::<Vec<_>>(),
            "failures": s.failures().iter().map(|f| serde_json::json!({"at": f.at, "version": f.version.0, "reason": f.reason})).collect::<Vec<_>>(),
            "native_answers": s.native_answers(),
        })
    }
    serde_json::json!({
        "priority": one(&slots.priority),
        "fairshare": one(&slots.fairshare),
        "preemption": one(&slots.preemption),
        "placement": one(&slots.placement),
    })
}

/// Fails early on `--policy` given twice for one kind.
pub fn check_unique(list: &[KindPath], flag: &str) -> Result<()> {
    for (i, a) in list.iter().enumerate() {
        if list[..i].iter().any(|b| b.kind == a.kind) {
            bail!("{flag} names {} twice", a.kind.name());
        }
    }
    Ok(())
}
