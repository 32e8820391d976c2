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

/// Column buffers for the priority batch, reused from call to call so a 100,000-job
/// batch costs one pass over the jobs and no fresh allocations.
pub struct PriorityColumns(priority::gantry::policy::types::PriorityBatch);

impl Default for PriorityColumns {
    fn default() -> Self {
        Self(priority::gantry::policy::types::PriorityBatch {
            job: Vec::new(),
            submit_time: Vec::new(),
            age: Vec::new(),
            cores: Vec::new(),
            nodes: Vec::new(),
            gpus: Vec::new(),
            time_limit: Vec::new(),
            partition_tier: Vec::new(),
            qos: Vec::new(),
            qos_priority: Vec::new(),
            fairshare: Vec::new(),
            user: Vec::new(),
            account: Vec::new(),
        })
    }
}

impl PriorityColumns {
    /// Refills the columns from `jobs` (see `priority-batch` in the WIT).
    pub(crate) fn fill(
        &mut self,
        jobs: &[abi::PriorityInput],
    ) -> &priority::gantry::policy::types::PriorityBatch {
        let b = &mut self.0;
        b.job.clear();
        b.submit_time.clear();
        b.age.clear();
        b.cores.clear();
        b.nodes.clear();
        b.gpus.clear();
        b.time_limit.clear();
        b.partition_tier.clear();
        b.qos.clear();
        b.qos_priority.clear();
        b.fairshare.clear();
        b.user.clear();
        b.account.clear();
        for j in jobs {
            b.job.push(j.job);
            b.submit_time.push(j.submit_time);
            b.age.push(j.age);
            b.cores.push(j.cores);
            b.nodes.push(j.nodes);
            b.gpus.push(j.gpus);
            b.time_limit.push(j.time_limit.unwrap_or(0).max(0));
            b.partition_tier.push(j.partition_tier);
            b.qos.push(j.qos);
            b.qos_priority.push(j.qos_priority);
            b.fairshare.push(j.fairshare);
            b.user.push(j.user);
            b.account.push(j.account);
        }
        &self.0
    }
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
