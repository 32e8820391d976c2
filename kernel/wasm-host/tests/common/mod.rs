//! Loading the components `scripts/build-policies.sh` built, and the bundled traces.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use gantry_wasm_host::{ComponentSource, HostLimits, PolicyComponents, PolicyHost};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The bytes of `target/policies/<name>.wasm`.
pub fn component(name: &str) -> Vec<u8> {
    let path = root().join("target/policies").join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; build the components first with scripts/build-policies.sh",
            path.display()
        )
    })
}

/// The bytes of `testdata/components/<name>.wasm` (components kept as an earlier build
/// made them).
pub fn kept_component(name: &str) -> Vec<u8> {
    let path = root()
        .join("testdata/components")
        .join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A built-in's default configuration file.
pub fn default_config(policy_dir: &str) -> String {
    std::fs::read_to_string(
        root()
            .join("policies")
            .join(policy_dir)
            .join("default.toml"),
    )
    .expect("built-in default config")
}

pub fn builtins() -> PolicyComponents {
    let src = |name: &str, dir: &str| ComponentSource {
        bytes: component(name),
        config: default_config(dir),
    };
    PolicyComponents {
        priority: src("multifactor", "multifactor"),
        fairshare: src("fairtree", "fairtree"),
        preemption: src("qos-preemption", "qos-preemption"),
        placement: src("topology-placement", "topology-placement"),
    }
}

/// One host for the whole test binary: components compile once.
pub fn host() -> Arc<PolicyHost> {
    static HOST: OnceLock<Arc<PolicyHost>> = OnceLock::new();
    HOST.get_or_init(|| {
        PolicyHost::new(HostLimits {
            call_timeout: std::time::Duration::from_millis(300),
            memory_bytes: 64 << 20,
        })
        .expect("host starts")
    })
    .clone()
}

pub fn trace(name: &str) -> gantry_sim::SwfTrace {
    let f = std::fs::File::open(root().join("testdata/traces").join(name)).expect("bundled trace");
    gantry_sim::read_swf(f).expect("trace parses")
}
