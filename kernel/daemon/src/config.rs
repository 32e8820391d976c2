//! `gantryd`'s configuration file (TOML): where it listens and keeps its state, who the
//! admins are, timings, and the cluster description (nodes, partitions, QOS, accounts —
//! the kernel's format, in a file of its own or inline under `[cluster]`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use gantry_kernel::ClusterDescription;

use crate::store::Location;
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DaemonConfig {
    /// TCP address of the API, e.g. `0.0.0.0:6817`. Callers present a token. Off
    /// loopback it needs `tls_cert` and `tls_key` (or `allow_plaintext_tcp`).
    #[serde(default)]
    pub listen: Option<String>,
    /// PEM certificate chain the TCP listener presents (TLS 1.2/1.3 through rustls).
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// Serve plain HTTP/2 on a non-loopback `listen` address: tokens and job scripts
    /// cross the network readable by anyone on it. Only for networks that are already
    /// encrypted (a VPN, WireGuard).
    #[serde(default)]
    pub allow_plaintext_tcp: bool,
    /// Unix socket of the API for local callers (identified by their uid, no token).
    #[serde(default)]
    pub socket: Option<PathBuf>,
    /// Where the state is kept: an SQLite file (created if missing), or a PostgreSQL
    /// database, `postgres://USER@HOST:PORT/DB`, that several controllers may share —
    /// one active, the others standing by (docs/CLUSTER.md).
    pub state: Location,
    /// How clients and agents reach this controller, as they list it
    /// (`https://ctl1.example:6817`): what a standby tells callers about the active one.
    /// Default: `listen` (with `https://` when it has TLS).
    #[serde(default)]
    pub advertise: Option<String>,
    /// With a PostgreSQL state: seconds the active controller's lease lasts. It renews
    /// it every third of that; a standby takes over once it has run out.
    #[serde(default = "defaults::lease_s")]
    pub lease_s: u32,
    /// File with the cluster key (at least 32 bytes) that signs tokens.
    pub key_file: PathBuf,
    /// Users with admin rights besides root.
    #[serde(default)]
    pub admins: Vec<String>,
    /// The cluster's name (Slurm's ClusterName): jobs see it as `SLURM_CLUSTER_NAME`.
    #[serde(default = "defaults::cluster_name")]
    pub cluster_name: String,
    /// Users with no association are put in this account at submission (created if
    /// needed). Without it, such users are refused with a message.
    #[serde(default)]
    pub default_account: Option<String>,
    #[serde(default = "defaults::heartbeat_s")]
    pub heartbeat_s: u32,
    /// A node whose agent is silent this long is DOWN; its jobs fail or requeue.
    #[serde(default = "defaults::node_timeout_s")]
    pub node_timeout_s: u32,
    /// Seconds between SIGTERM and SIGKILL when a job is cancelled or times out.
    #[serde(default = "defaults::kill_grace_s")]
    pub kill_grace_s: u32,
    /// How long a finished job stays in memory (`squeue`, `scontrol show job`) before a
    /// snapshot forgets it; `sacct` shows it from the accounting table after (Slurm's
    /// MinJobAge).
    #[serde(default = "defaults::finished_retention_s")]
    pub finished_retention_s: u32,
    /// Seconds between snapshots (each forgets finished jobs past their retention and
    /// compacts the log behind it); 0: only `gantry admin snapshot` takes one.
    #[serde(default = "defaults::snapshot_interval_s")]
    pub snapshot_interval_s: u32,
    /// Longest wait between scheduling cycles (a submission or a job end runs one at once).
    #[serde(default = "defaults::cycle_interval_ms")]
    pub cycle_interval_ms: u64,
    /// After a cycle that took t, the next waits at least this many times t (never
    /// longer than `cycle_interval_ms`): under a stream of submissions the scheduler
    /// holds the controller at most 1/(1 + factor) of the time, and the API the rest.
    #[serde(default = "defaults::cycle_pause_factor")]
    pub cycle_pause_factor: u32,
    /// Seconds between two computations of the fairshare factors (Slurm's
    /// `PriorityCalcPeriod`); 0 computes them every cycle.
    #[serde(default = "defaults::fairshare_interval_s")]
    pub fairshare_interval_s: u32,
    /// Where the built-in policy components are (default: next to the binary).
    #[serde(default)]
    pub policy_dir: Option<PathBuf>,
    /// Where compiled policy code is kept, so a restart or a re-load of a component seen
    /// before skips the compile (default: `policy-code/` beside the state database, or
    /// beside this file when the state is in PostgreSQL).
    #[serde(default)]
    pub policy_code_cache: Option<PathBuf>,
    /// The largest batch script accepted, in bytes (as Slurm's `max_script_size`); also
    /// the bound on a submission's environment and command line together.
    #[serde(default = "defaults::max_script_bytes")]
    pub max_script_bytes: usize,
    /// The largest policy component `gantry policy load` accepts, in bytes.
    #[serde(default = "defaults::max_component_bytes")]
    pub max_component_bytes: usize,
    /// The most job ids one job's `--dependency` may name.
    #[serde(default = "defaults::max_dependencies")]
    pub max_dependencies: usize,
    /// Run the kernel's native safe defaults instead of the Wasm built-ins.
    #[serde(default)]
    pub native_policies: bool,
    /// Components (and their configurations) to run instead of the built-ins, per
    /// slot: `[policies.priority] component = "x.wasm", config = "x.toml"`.
    #[serde(default)]
    pub policies: std::collections::BTreeMap<String, PolicyFiles>,
    /// The cluster description file, relative to this file.
    #[serde(default)]
    pub cluster_file: Option<PathBuf>,
    /// Or the cluster description inline.
    #[serde(default)]
    pub cluster: Option<toml::Value>,
    /// The cluster description's text, as read (what `gantry policy whatif` replays on).
    #[serde(skip)]
    pub cluster_text: String,
}

/// A policy component file and its configuration file (both optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFiles {
    /// The component; default: the built-in for the slot.
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Its configuration (text for `init`); default: the built-in's `default.toml`.
    #[serde(default)]
    pub config: Option<PathBuf>,
    /// The slot's own limits, for every version loaded into it (an interpreter needs
    /// more than a Rust guest); unset, the defaults: a 500 ms deadline per call, a
    /// 256 MiB memory cap per instance, 8 core instances.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub memory_mb: Option<u64>,
    #[serde(default)]
    pub instances: Option<u32>,
}

impl PolicyFiles {
    /// The slot's limits, if any is set (checked: out of bounds is an error that says
    /// which).
    pub fn limits(&self) -> Result<Option<gantry_wasm_host::HostLimits>, String> {
        if self.deadline_ms.is_none() && self.memory_mb.is_none() && self.instances.is_none() {
            return Ok(None);
        }
        gantry_wasm_host::HostLimits::with_settings(
            self.deadline_ms,
            self.memory_mb,
            self.instances.map(u64::from),
        )
        .map(Some)
        .map_err(|e| e.to_string())
    }
}

mod defaults {
    pub fn lease_s() -> u32 {
        3
    }
    pub fn cluster_name() -> String {
        "gantry".into()
    }
    pub fn heartbeat_s() -> u32 {
        5
    }
    pub fn node_timeout_s() -> u32 {
        30
    }
    pub fn kill_grace_s() -> u32 {
        10
    }
    pub fn finished_retention_s() -> u32 {
        300
    }
    pub fn snapshot_interval_s() -> u32 {
        300
    }
    pub fn cycle_interval_ms() -> u64 {
        1000
    }
    pub fn cycle_pause_factor() -> u32 {
        7
    }
    pub fn max_script_bytes() -> usize {
        4 << 20
    }
    pub fn max_component_bytes() -> usize {
        32 << 20
    }
    pub fn max_dependencies() -> usize {
        1000
    }
    pub fn fairshare_interval_s() -> u32 {
        gantry_kernel::DEFAULT_FAIRSHARE_INTERVAL as u32
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl DaemonConfig {
    /// What a standby tells callers about this controller once it is active.
    pub fn advertised(&self) -> String {
        if let Some(a) = &self.advertise {
            return a.clone();
        }
        let scheme = if self.tls_cert.is_some() {
            "https"
        } else {
            "http"
        };
        match &self.listen {
            Some(l) => format!("{scheme}://{l}"),
            None => self
                .socket
                .as_ref()
                .map(|s| format!("unix:{}", s.display()))
                .unwrap_or_default(),
        }
    }

    /// The PostgreSQL lease's length.
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_s.max(1).into())
    }

    /// The largest request the API decodes: a component or a script at its limit, and
    /// room for the rest of the message.
    pub fn max_request_bytes(&self) -> usize {
        self.max_script_bytes
            .saturating_mul(2)
            .max(self.max_component_bytes)
            .saturating_add(1 << 20)
    }

    /// The longest wait between two cycles (at least 10 ms).
    pub fn cycle_interval(&self) -> Duration {
        Duration::from_millis(self.cycle_interval_ms.max(10))
    }

    /// How long the cycle loop leaves the controller to the API after a cycle that took
    /// `took`: `cycle_pause_factor` times as long, never longer than the interval.
    pub fn pause_after_cycle(&self, took: Duration) -> Duration {
        took.saturating_mul(self.cycle_pause_factor)
            .min(self.cycle_interval())
    }

    /// Reads the file and resolves relative paths against its directory.
    pub fn load(path: &Path) -> Result<(Self, ClusterDescription), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut cfg: DaemonConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Absolute, so paths stay right whatever directory jobs and children run in.
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let base = base.as_path();
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        if let Location::Sqlite(p) = &mut cfg.state {
            resolve(p);
        }
        if cfg.policy_code_cache.is_none() {
            let beside = match &cfg.state {
                Location::Sqlite(p) => p.parent().unwrap_or(base),
                Location::Postgres(_) => base,
            };
            cfg.policy_code_cache = Some(beside.join("policy-code"));
        }
        if cfg.lease_s == 0 {
            return Err(invalid("lease_s must be at least 1".into()));
        }
        resolve(&mut cfg.key_file);
        if let Some(s) = &mut cfg.socket {
            resolve(s);
        }
        for p in [&mut cfg.policy_dir, &mut cfg.tls_cert, &mut cfg.tls_key]
            .into_iter()
            .flatten()
        {
            resolve(p);
        }
        if cfg.native_policies && !cfg.policies.is_empty() {
            return Err(invalid(
                "native_policies = true runs no components: remove it or the [policies] tables"
                    .into(),
            ));
        }
        for (kind, files) in &mut cfg.policies {
            if !["priority", "fairshare", "preemption", "placement"].contains(&kind.as_str()) {
                return Err(invalid(format!(
                    "[policies.{kind}]: unknown slot (use priority, fairshare, preemption or placement)"
                )));
            }
            if let Some(p) = &mut files.component {
                resolve(p);
            }
            if let Some(p) = &mut files.config {
                resolve(p);
            }
        }
        if cfg.listen.is_none() && cfg.socket.is_none() {
            return Err(invalid(
                "set `listen` (TCP), `socket` (Unix), or both".into(),
            ));
        }
        match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(_), None) | (None, Some(_)) => {
                return Err(invalid(
                    "set both tls_cert and tls_key (PEM files), or neither".into(),
                ))
            }
            (Some(_), Some(_)) if cfg.listen.is_none() => {
                return Err(invalid(
                    "tls_cert and tls_key are for the TCP listener: set `listen` too".into(),
                ))
            }
            (None, None) if !cfg.allow_plaintext_tcp => {
                if let Some(addr) = &cfg.listen {
                    if !is_loopback(addr) {
                        return Err(invalid(format!(
                            "listen = \"{addr}\" is reachable from other machines, and without \
                             TLS tokens and job scripts would cross the network in clear: set \
                             tls_cert and tls_key (PEM files), listen on 127.0.0.1, or, on an \
                             already encrypted network only, allow_plaintext_tcp = true"
                        )));
                    }
                }
            }
            _ => {}
        }
        if cfg.node_timeout_s <= cfg.heartbeat_s {
            return Err(invalid(format!(
                "node_timeout_s ({}) must be longer than heartbeat_s ({})",
                cfg.node_timeout_s, cfg.heartbeat_s
            )));
        }
        let cluster = match (&cfg.cluster_file, &cfg.cluster) {
            (Some(f), None) => {
                let f = if f.is_relative() { base.join(f) } else { f.clone() };
                let text = std::fs::read_to_string(&f).map_err(|source| ConfigError::Read {
                    path: f.display().to_string(),
                    source,
                })?;
                let description =
                    ClusterDescription::from_toml(&text).map_err(|e| ConfigError::Invalid {
                        path: f.display().to_string(),
                        message: e.to_string(),
                    })?;
                cfg.cluster_text = text;
                description
            }
            (None, Some(v)) => {
                let text = toml::to_string(v).map_err(|e| invalid(e.to_string()))?;
                let description = ClusterDescription::from_toml(&text)
                    .map_err(|e| invalid(format!("[cluster]: {e}")))?;
                cfg.cluster_text = text;
                description
            }
            _ => {
                return Err(invalid(
                    "give the cluster description as `cluster_file = \"...\"` or an inline `[cluster]` table, not both"
                        .into(),
                ))
            }
        };
        Ok((cfg, cluster))
    }
}

/// Whether every address `listen` names is a loopback one (an address that does not
/// resolve is not).
fn is_loopback(listen: &str) -> bool {
    use std::net::ToSocketAddrs;
    match listen.to_socket_addrs() {
        Ok(addrs) => {
            let addrs: Vec<_> = addrs.collect();
            !addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback())
        }
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> DaemonConfig {
        toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\nstate = \"s.db\"\nkey_file = \"k\"\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn a_cycle_is_followed_by_a_pause_of_factor_times_its_length_at_most_the_interval() {
        let ms = Duration::from_millis;
        let c = config("");
        assert_eq!(c.cycle_pause_factor, 7, "the documented default");
        assert_eq!(c.pause_after_cycle(ms(10)), ms(70));
        assert_eq!(
            c.pause_after_cycle(Duration::from_micros(30)),
            Duration::from_micros(210)
        );
        assert_eq!(
            c.pause_after_cycle(ms(400)),
            ms(1000),
            "capped at the interval"
        );
        let c = config("cycle_pause_factor = 0\ncycle_interval_ms = 200");
        assert_eq!(c.pause_after_cycle(ms(50)), Duration::ZERO, "0: no pause");
        let c = config("cycle_pause_factor = 3\ncycle_interval_ms = 200");
        assert_eq!(c.pause_after_cycle(ms(50)), ms(150));
        assert_eq!(c.pause_after_cycle(ms(100)), ms(200));
        assert_eq!(c.pause_after_cycle(Duration::MAX), ms(200), "no overflow");
    }

    #[test]
    fn a_policy_slot_takes_limits_of_its_own_within_bounds() {
        let c = config("[policies.priority]\ndeadline_ms = 2000\nmemory_mb = 512\ninstances = 16");
        let l = c.policies["priority"].limits().unwrap().unwrap();
        assert_eq!(l.call_timeout, Duration::from_millis(2000));
        assert_eq!(l.memory_bytes, 512 << 20);
        assert_eq!(l.instances, 16);
        let c = config("[policies.priority]\nconfig = \"x.toml\"");
        assert_eq!(
            c.policies["priority"].limits(),
            Ok(None),
            "none set: the defaults"
        );
        let c = config("[policies.fairshare]\nmemory_mb = 100000");
        let e = c.policies["fairshare"].limits().unwrap_err();
        assert!(e.contains("memory cap must be between"), "{e}");
    }

    fn load(text: &str) -> Result<DaemonConfig, String> {
        let dir = std::env::temp_dir().join(format!("gantry-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("g{}.toml", text.len()));
        std::fs::write(
            &path,
            format!(
                "state = \"s.db\"\nkey_file = \"k\"\n{text}\n[cluster]\n\
                 [[cluster.node_type]]\nname = \"t\"\nsockets = 1\nnuma_per_socket = 1\n\
                 cores_per_numa = 2\nmemory = \"1G\"\n\
                 [[cluster.nodes]]\nnames = \"n1\"\ntype = \"t\"\n\
                 [[cluster.partition]]\nname = \"p\"\nnodes = [\"n1\"]\n"
            ),
        )
        .unwrap();
        let got = DaemonConfig::load(&path)
            .map(|(c, _)| c)
            .map_err(|e| e.to_string());
        let _ = std::fs::remove_file(&path);
        got
    }

    #[test]
    fn plain_tcp_off_loopback_is_refused_unless_tls_or_explicitly_allowed() {
        let e = load("listen = \"0.0.0.0:6817\"").unwrap_err();
        assert!(e.contains("tls_cert and tls_key"), "{e}");
        load("listen = \"127.0.0.1:6817\"").unwrap();
        load("listen = \"[::1]:6817\"").unwrap();
        load("listen = \"0.0.0.0:6817\"\nallow_plaintext_tcp = true").unwrap();
        let c =
            load("listen = \"0.0.0.0:6817\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap();
        assert!(
            c.tls_cert.unwrap().is_absolute(),
            "resolved against the file"
        );
        let e = load("listen = \"0.0.0.0:6817\"\ntls_cert = \"c.pem\"").unwrap_err();
        assert!(e.contains("both"), "{e}");
        let e = load("socket = \"g.sock\"\ntls_cert = \"c.pem\"\ntls_key = \"k.pem\"").unwrap_err();
        assert!(e.contains("set `listen`"), "{e}");
    }
}
