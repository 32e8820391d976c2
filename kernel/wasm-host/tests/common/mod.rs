//! Loading the components `scripts/build-policies.sh` built, and the bundled traces.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use gantry_kernel::policy::{FifoPriority, PolicySet};
use gantry_kernel::{Backfill, SchedulerConfig};
use gantry_sim::{cluster_from_header, replay, ReplayOptions, Report};
use gantry_wasm_host::{
    ComponentSource, HostLimits, PolicyComponents, PolicyHost, PolicySlot, PriorityWorld,
    SharedSlot,
};

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
        limits: None,
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
            ..HostLimits::default()
        })
        .expect("host starts")
    })
    .clone()
}

pub fn trace(name: &str) -> gantry_sim::SwfTrace {
    let f = std::fs::File::open(root().join("testdata/traces").join(name)).expect("bundled trace");
    gantry_sim::read_swf(f).expect("trace parses")
}

/// `trace` replayed (EASY backfill, a homogeneous cluster from its header) with `slot`
/// as the priority policy and FIFO behind it; the report, and the slot as it ended.
pub fn replay_with_priority(
    trace: &gantry_sim::SwfTrace,
    slot: PolicySlot<PriorityWorld>,
) -> (Report, Arc<std::sync::Mutex<PolicySlot<PriorityWorld>>>) {
    let (priority, handle) = SharedSlot::new(slot, FifoPriority);
    let policies = PolicySet {
        priority: Box::new(priority),
        ..PolicySet::default()
    };
    let opts = ReplayOptions {
        scheduler: SchedulerConfig {
            backfill: Backfill::Easy,
            ..SchedulerConfig::default()
        },
        partition: None,
    };
    let report = replay(
        trace,
        cluster_from_header(trace, 1).unwrap(),
        policies,
        &opts,
        &mut |_| {},
    )
    .unwrap();
    (report, handle)
}
