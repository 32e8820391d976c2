//! The agent's configuration (TOML): the controller to talk to, the node it is, the
//! node's credential (its own key, which proves this node and nothing else), its spool
//! directory, and — for test clusters on one machine, or hardware it cannot see — a
//! declared topology instead of discovery.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// `https://host:port` of gantryd (or `http://` for a plain loopback listener).
    #[serde(default)]
    pub controller: Option<String>,
    /// Or several: an active gantryd and its standbys over one PostgreSQL state. The
    /// agent talks to whichever is active, and follows a takeover.
    #[serde(default)]
    pub controllers: Vec<String>,
    /// PEM file of the authority that signed gantryd's TLS certificate (default: the
    /// system's authorities).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// This node's name in the cluster description (default: the host name).
    #[serde(default)]
    pub node: Option<String>,
    /// This node's credential (`gantry credential NODE`): the key the agent signs its own
    /// short-lived tokens with. It proves this node only. Required; empty here only while
    /// the file is read, so that a missing one gets the message below.
    #[serde(default)]
    pub credential_file: PathBuf,
    /// No longer taken: an agent never holds the cluster key.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Where job scripts are written.
    pub spool: PathBuf,
    /// Declared hardware; without it the agent discovers the machine.
    #[serde(default)]
    pub topology: Option<DeclaredTopology>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclaredTopology {
    pub sockets: u32,
    pub numa_per_socket: u32,
    pub cores_per_numa: u32,
    pub memory_mb: u64,
    /// NUMA domain of each GPU; its length is the GPU count.
    #[serde(default)]
    pub gpu_numa: Vec<u32>,
    #[serde(default)]
    pub gpu_model: String,
    /// Every GPU pair has this many NVLink links (an NVSwitch system).
    #[serde(default)]
    pub nvlink_all_to_all: Option<u32>,
    /// Or pairs `[a, b, links]`.
    #[serde(default)]
    pub nvlink_pairs: Vec<[u32; 3]>,
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

impl AgentConfig {
    /// The controllers to try, as `connect` takes them (comma-separated).
    pub fn controller_list(&self) -> String {
        match &self.controller {
            Some(c) => c.clone(),
            None => self.controllers.join(","),
        }
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        let invalid = |message: String| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        };
        let mut cfg: AgentConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        let base = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // Absolute, so paths stay right whatever directory jobs and children run in.
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        let base = base.as_path();
        if cfg.key_file.is_some() {
            return Err(invalid(
                "key_file: an agent no longer holds the cluster key, which would let anyone \
                 with root on this node act as any user. Make this node's credential with \
                 `gantry credential NODE --key CLUSTER_KEY --output FILE` and set \
                 credential_file = \"FILE\""
                    .into(),
            ));
        }
        if cfg.credential_file.as_os_str().is_empty() {
            return Err(invalid(
                "credential_file is missing: make this node's credential with \
                 `gantry credential NODE --key CLUSTER_KEY --output FILE`"
                    .into(),
            ));
        }
        for p in [&mut cfg.credential_file, &mut cfg.spool]
            .into_iter()
            .chain(cfg.ca_file.as_mut())
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
        // Exactly one of the two.
        if cfg.controller.is_some() != cfg.controllers.is_empty() {
            return Err(invalid(
                "set either controller = \"https://HOST:PORT\" or controllers = [\"https://HOST1:PORT\", ...]"
                    .into(),
            ));
        }
        if let Some(bad) = cfg
            .controllers
            .iter()
            .find(|c| c.contains(',') || c.trim().is_empty())
        {
            return Err(invalid(format!(
                "controllers: {bad:?} is not one address (list each controller as its own string)"
            )));
        }
        if let Some(t) = &cfg.topology {
            if t.sockets == 0 || t.numa_per_socket == 0 || t.cores_per_numa == 0 {
                return Err(invalid(
                    "topology: sockets, numa_per_socket and cores_per_numa must be positive".into(),
                ));
            }
            let domains = t.sockets * t.numa_per_socket;
            if let Some(bad) = t.gpu_numa.iter().find(|&&d| d >= domains) {
                return Err(invalid(format!(
                    "topology: a GPU is on NUMA domain {bad}, but there are {domains}"
                )));
            }
            let n = t.gpu_numa.len() as u32;
            if let Some(p) = t.nvlink_pairs.iter().find(|p| p[0] >= n || p[1] >= n) {
                return Err(invalid(format!(
                    "topology: NVLink pair {p:?} names a GPU beyond the {n} declared"
                )));
            }
        }
        Ok(cfg)
    }
}
