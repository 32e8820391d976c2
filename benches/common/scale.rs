//! The seeded synthetic scenarios of `gantry_sim::synthetic` (the ones `gantry sim
//! --synthetic` builds), with the Wasm built-in policies or the native safe defaults.

use std::sync::Arc;

use gantry_kernel::policy::PolicySet;
use gantry_kernel::SchedulerConfig;
use gantry_sim::{SyntheticSpec, SyntheticState};
use gantry_wasm_host::{ComponentSource, HostLimits, PolicyComponents, PolicyHost, PolicyKind};

fn source(kind: PolicyKind) -> ComponentSource {
    let name = kind.builtin();
    ComponentSource {
        bytes: super::component(name),
        config: super::config(name),
        limits: None,
    }
}

/// The Wasm built-ins. The host compiles each component once (its cache is keyed by
/// sha256), so building a fresh set per scenario costs microseconds.
pub struct Builtins {
    host: Arc<PolicyHost>,
    components: PolicyComponents,
}

impl Builtins {
    pub fn new() -> Self {
        Self {
            host: PolicyHost::new(HostLimits::default()).unwrap(),
            components: PolicyComponents {
                priority: source(PolicyKind::Priority),
                fairshare: source(PolicyKind::Fairshare),
                preemption: source(PolicyKind::Preemption),
                placement: source(PolicyKind::Placement),
            },
        }
    }

    pub fn set(&self) -> PolicySet {
        gantry_wasm_host::policy_set(&self.host, &self.components, "bench", 0)
            .unwrap()
            .0
    }
}

/// `nodes` GPU nodes, half busy, and `pending` jobs waiting: ready for a cycle.
pub fn scenario(nodes: u32, pending: u32, policies: PolicySet) -> SyntheticState {
    SyntheticSpec {
        nodes,
        pending,
        ..SyntheticSpec::default()
    }
    .build(policies, SchedulerConfig::default(), &mut |_| {})
    .unwrap()
}
