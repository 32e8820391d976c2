//! The four worlds as Rust types: generated bindings, the host's `log` import, and the
//! conversions between generated records and the ABI's.

use gantry_abi as abi;
use wasmtime::component::{HasSelf, InstancePre, Linker};
use wasmtime::{Store, StoreLimits};

/// Per-instance host state: its memory limiter and the name logs are tagged with.
pub struct HostState {
    pub(crate) limits: StoreLimits,
    pub(crate) policy: String,
}

fn log(policy: &str, level: u8, message: &str) {
    match level {
        0 => tracing::debug!(policy, "{message}"),
        1 => tracing::info!(policy, "{message}"),
        2 => tracing::warn!(policy, "{message}"),
        _ => tracing::error!(policy, "{message}"),
    }
}

/// A world of `gantry:policy`: how to link, instantiate and identify a component of it.
pub trait PolicyWorld: Send + 'static {
    /// The world's name in the WIT package.
    const NAME: &'static str;
    type Bindings: Send;
    type Pre: Clone + Send;
    fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()>;
    fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate(
        pre: &Self::Pre,
        store: &mut Store<HostState>,
    ) -> wasmtime::Result<Self::Bindings>;
    fn info(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<abi::PolicyInfo>;
    fn init(
        b: &Self::Bindings,
        store: &mut Store<HostState>,
        config: &str,
    ) -> wasmtime::Result<Result<(), String>>;
}

macro_rules! world {
    ($marker:ident, $module:ident, $name:literal, $world:ident, $pre:ident) => {
        pub(crate) mod $module {
            wasmtime::component::bindgen!({ world: $name, path: "../../wit" });
        }

        impl $module::gantry::policy::host::Host for HostState {
            fn log(&mut self, level: $module::gantry::policy::host::Level, message: String) {
                use $module::gantry::policy::host::Level as L;
                let l = match level {
                    L::Debug => 0,
                    L::Info => 1,
                    L::Warn => 2,
                    L::Error => 3,
                };
                log(&self.policy, l, &message);
            }
        }
        impl $module::gantry::policy::types::Host for HostState {}

        #[doc = concat!("The `", $name, "` world.")]
        pub struct $marker;

        impl PolicyWorld for $marker {
            const NAME: &'static str = $name;
            type Bindings = $module::$world;
            type Pre = $module::$pre<HostState>;
            fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
                $module::$world::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
            }
            fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                $module::$pre::new(pre)
            }
            fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings> {
                pre.instantiate(store)
            }
            fn info(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<abi::PolicyInfo> {
                let i = b.call_info(store)?;
                Ok(abi::PolicyInfo { name: i.name, version: i.version })
            }
            fn init(b: &Self::Bindings, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>> {
                b.call_init(store, config)
            }
        }
    };
}

world!(PriorityWorld, priority, "priority", Priority, PriorityPre);
world!(
    FairshareWorld,
    fairshare,
    "fairshare",
    Fairshare,
    FairsharePre
);
world!(
    PreemptionWorld,
    preemption,
    "preemption",
    Preemption,
    PreemptionPre
);
world!(
    PlacementWorld,
    placement,
    "placement",
    Placement,
    PlacementPre
);

pub(crate) fn priority_inputs(
    jobs: &[abi::PriorityInput],
) -> Vec<priority::gantry::policy::types::PriorityInput> {
    jobs.iter()
        .map(|j| priority::gantry::policy::types::PriorityInput {
            job: j.job,
            submit_time: j.submit_time,
            age: j.age,
            cores: j.cores,
            nodes: j.nodes,
            gpus: j.gpus,
            time_limit: j.time_limit,
            partition_tier: j.partition_tier,
            qos: j.qos,
            qos_priority: j.qos_priority,
            fairshare: j.fairshare,
            user: j.user,
            account: j.account,
        })
        .collect()
}

pub(crate) fn share_nodes(
    tree: &[abi::ShareNode],
) -> Vec<fairshare::gantry::policy::types::ShareNode> {
    tree.iter()
        .map(|n| fairshare::gantry::policy::types::ShareNode {
            id: n.id,
            parent: n.parent,
            shares: n.shares,
            usage: n.usage,
        })
        .collect()
}

pub(crate) fn preemption_queries(
    batch: &[abi::PreemptionQuery],
) -> Vec<preemption::gantry::policy::types::PreemptionQuery> {
    use preemption::gantry::policy::types as t;
    batch
        .iter()
        .map(|q| t::PreemptionQuery {
            job: q.job,
            qos_priority: q.qos_priority,
            partition_tier: q.partition_tier,
            cores: q.cores,
            gpus: q.gpus,
            candidates: q
                .candidates
                .iter()
                .map(|c| t::PreemptionCandidate {
                    job: c.job,
                    qos_priority: c.qos_priority,
                    partition_tier: c.partition_tier,
                    start_time: c.start_time,
                    cores: c.cores,
                    gpus: c.gpus,
                    mode: match c.mode {
                        abi::PreemptMode::Cancel => t::PreemptMode::Cancel,
                        abi::PreemptMode::Requeue => t::PreemptMode::Requeue,
                    },
                })
                .collect(),
        })
        .collect()
}

pub(crate) fn victims(
    answer: Vec<Vec<preemption::gantry::policy::types::Victim>>,
) -> Vec<Vec<abi::Victim>> {
    use preemption::gantry::policy::types as t;
    answer
        .into_iter()
        .map(|vs| {
            vs.into_iter()
                .map(|v| abi::Victim {
                    job: v.job,
                    mode: match v.mode {
                        t::PreemptMode::Cancel => abi::PreemptMode::Cancel,
                        t::PreemptMode::Requeue => abi::PreemptMode::Requeue,
                    },
                })
                .collect()
        })
        .collect()
}

pub(crate) fn placement_queries(
    batch: &[abi::PlacementQuery],
) -> Vec<placement::gantry::policy::types::PlacementQuery> {
    use placement::gantry::policy::types as t;
    batch
        .iter()
        .map(|q| t::PlacementQuery {
            job: q.job,
            units_needed: q.units_needed,
            gpus_per_node: q.gpus_per_node,
            candidates: q
                .candidates
                .iter()
                .map(|c| t::Candidate {
                    node: c.node,
                    units: c.units,
                    gpu_links: c.gpu_links,
                    numa_domains: c.numa_domains,
                    free_cores_after: c.free_cores_after,
                    free_gpus_after: c.free_gpus_after,
                })
                .collect(),
        })
        .collect()
}
