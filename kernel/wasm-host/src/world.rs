//! The four worlds as Rust types: generated bindings, the host's `log` import, and the
//! conversions between generated records and the ABI's.

use gantry_abi as abi;
use wasmtime::component::{
    ComponentType, HasSelf, Instance, InstancePre, Lift, Linker, Lower, TypedFunc,
};
use wasmtime::{Store, StoreLimits};

/// Per-instance host state: its memory limiter, the name logs are tagged with, what it
/// is doing (which decides where its log lines go), and its last error line (a Rust
/// guest's panic message and location, which the trap itself does not carry).
pub struct HostState {
    pub(crate) limits: StoreLimits,
    pub(crate) policy: String,
    pub(crate) phase: Phase,
    pub(crate) last_error: Option<String>,
}

/// What an instance is doing, for its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Loading (`init`), a trial before activation, or a shadow run: an admin is
    /// watching, so its lines go to the `gantry_policy::load` target, shown at `info`
    /// by default in both gantryd and the CLI.
    Setup,
    /// A scheduling cycle: `gantry_policy::cycle`, shown at `info` by gantryd only.
    Cycle,
}

/// The longest log line a policy may write; longer ones are cut (at a character
/// boundary) before they reach the host's log.
pub const MAX_LOG_LINE: usize = 1024;

fn log(state: &mut HostState, level: u8, message: &str) {
    let mut end = message.len().min(MAX_LOG_LINE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    let message = message[..end].escape_debug().to_string();
    let policy = state.policy.as_str();
    macro_rules! emit {
        ($target:literal) => {
            match level {
                0 => tracing::debug!(target: $target, policy, "{message}"),
                1 => tracing::info!(target: $target, policy, "{message}"),
                2 => tracing::warn!(target: $target, policy, "{message}"),
                _ => tracing::error!(target: $target, policy, "{message}"),
            }
        };
    }
    match state.phase {
        Phase::Setup => emit!("gantry_policy::load"),
        Phase::Cycle => emit!("gantry_policy::cycle"),
    }
    if level >= 3 {
        state.last_error = Some(message);
    }
}

/// An instance's generated bindings, and its decision export typed for the records the
/// host writes by hand ([`Hot`]).
pub struct Bound<B, H> {
    pub(crate) api: B,
    pub(crate) hot: H,
}

/// A world's decision export, called with records written by hand that borrow the
/// kernel's own columns, so that each crosses into the guest as one copy and nothing is
/// copied on the host side. Looked up and type-checked once per instance: a call that
/// looked it up by name would hash the name and check the types every time, on a path
/// the scheduler takes every cycle. The check also keeps a WIT change honest, since
/// the hand-written records must match the world for an instance to start.
///
/// Typed for borrows that live forever (`'static`); wasmtime's `TypedFunc` is
/// covariant in its parameters, so the same function takes any shorter borrow.
pub(crate) trait Hot: Sized + Send {
    fn find(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self>;
}

/// The preemption world goes through its generated bindings: its queries are rare and
/// short.
impl Hot for () {
    fn find(_: &mut Store<HostState>, _: &Instance) -> wasmtime::Result<Self> {
        Ok(())
    }
}

macro_rules! hot {
    ($name:ident, $export:literal, $params:ty, $ret:ty) => {
        #[doc = concat!("`", $export, "`, typed for [`Hot`].")]
        pub struct $name(TypedFunc<$params, $ret>);
        impl Hot for $name {
            fn find(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self> {
                instance.get_typed_func(store, $export).map(Self)
            }
        }
    };
}

/// `prioritize`, and `explain` when the component exports it (the
/// `explained-priority` world), typed for [`Hot`].
pub struct Prioritize {
    prioritize: TypedFunc<PriorityParams, (Vec<i64>,)>,
    explain: Option<TypedFunc<PriorityParams, (Vec<PriorityFactorOut>,)>>,
}

/// What `prioritize` and `explain` take.
type PriorityParams = (abi::Time, PriorityBatchRef<'static>);

impl Hot for Prioritize {
    fn find(store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Self> {
        Ok(Self {
            prioritize: instance.get_typed_func(&mut *store, "prioritize")?,
            // Optional: a component of the plain `priority` world has no breakdown. One
            // that exports `explain` with another type is refused at load, as any
            // export of the wrong shape.
            explain: match instance.get_export_index(&mut *store, None, "explain") {
                Some(_) => Some(instance.get_typed_func(&mut *store, "explain")?),
                None => None,
            },
        })
    }
}

/// `priority-factor` as the guest returns it.
#[derive(ComponentType, Lift)]
#[component(record)]
pub(crate) struct PriorityFactorOut {
    name: String,
    weight: f64,
    values: Vec<f64>,
}
hot!(
    Factors,
    "factors",
    (abi::Time, ShareTreeRef<'static>),
    (Vec<f64>,)
);
hot!(
    Rank,
    "rank",
    (PlacementBatchRef<'static>,),
    (placement::gantry::policy::types::PlacementRanking,)
);

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
    ($marker:ident, $module:ident, $name:literal, $world:ident, $pre:ident, $hot:ty) => {
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
                log(self, l, &message);
            }
        }
        impl $module::gantry::policy::types::Host for HostState {}

        #[doc = concat!("The `", $name, "` world.")]
        pub struct $marker;

        impl PolicyWorld for $marker {
            const NAME: &'static str = $name;
            type Bindings = Bound<$module::$world, $hot>;
            type Pre = $module::$pre<HostState>;
            fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
                $module::$world::add_to_linker::<_, HasSelf<_>>(linker, |s| s)
            }
            fn pre(pre: InstancePre<HostState>) -> wasmtime::Result<Self::Pre> {
                $module::$pre::new(pre)
            }
            fn instantiate(pre: &Self::Pre, store: &mut Store<HostState>) -> wasmtime::Result<Self::Bindings> {
                let instance = pre.instance_pre().instantiate(&mut *store)?;
                let api = $module::$world::new(&mut *store, &instance)?;
                let hot = <$hot as Hot>::find(&mut *store, &instance)?;
                Ok(Bound { api, hot })
            }
            fn info(b: &Self::Bindings, store: &mut Store<HostState>) -> wasmtime::Result<abi::PolicyInfo> {
                let i = b.api.call_info(store)?;
                Ok(abi::PolicyInfo { name: i.name, version: i.version })
            }
            fn init(b: &Self::Bindings, store: &mut Store<HostState>, config: &str) -> wasmtime::Result<Result<(), String>> {
                b.api.call_init(store, config)
            }
        }
    };
}

world!(
    PriorityWorld,
    priority,
    "priority",
    Priority,
    PriorityPre,
    Prioritize
);
world!(
    FairshareWorld,
    fairshare,
    "fairshare",
    Fairshare,
    FairsharePre,
    Factors
);
world!(
    PreemptionWorld,
    preemption,
    "preemption",
    Preemption,
    PreemptionPre,
    ()
);
world!(
    PlacementWorld,
    placement,
    "placement",
    Placement,
    PlacementPre,
    Rank
);

/// `priority-batch` lowered straight from the kernel's columns: nothing is copied on
/// the host side, and each column crosses into the guest as one memory copy.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct PriorityBatchRef<'a> {
    len: u32,
    job: Option<&'a [u64]>,
    #[component(name = "submit-time")]
    submit_time: Option<&'a [i64]>,
    age: Option<&'a [i64]>,
    cores: Option<&'a [u64]>,
    nodes: Option<&'a [u32]>,
    gpus: Option<&'a [u64]>,
    #[component(name = "time-limit")]
    time_limit: Option<&'a [i64]>,
    #[component(name = "partition-tier")]
    partition_tier: Option<&'a [u32]>,
    qos: Option<&'a [u32]>,
    #[component(name = "qos-priority")]
    qos_priority: Option<&'a [u32]>,
    fairshare: Option<&'a [f64]>,
    user: Option<&'a [u32]>,
    account: Option<&'a [u32]>,
}

impl<'a> PriorityBatchRef<'a> {
    /// The batch as a version that reads `fields` gets it. A batch lacking a column the
    /// version reads is refused before any call: the slot then falls back as for any
    /// other failure.
    fn lowered(b: &'a abi::PriorityBatch, fields: abi::PriorityFields) -> wasmtime::Result<Self> {
        if !b.fields().contains(fields) {
            wasmtime::bail!(
                "the batch lacks columns this version reads (has {:#x}, needs {:#x})",
                b.fields().bits(),
                fields.bits()
            );
        }
        let len = u32::try_from(b.len())
            .map_err(|_| wasmtime::format_err!("{} jobs is more than a batch can hold", b.len()))?;
        Ok(Self::masked(b, fields, len))
    }

    /// The columns in `fields`; the others go as `none`, so a version pays only for
    /// what it reads even when the kernel built more (for the kernel's own ordering, or
    /// for a fallback version that reads other columns).
    fn masked(b: &'a abi::PriorityBatch, fields: abi::PriorityFields, len: u32) -> Self {
        use abi::PriorityFields as F;
        fn pick<T>(col: &[T], fields: F, flag: F) -> Option<&[T]> {
            fields.contains(flag).then_some(col)
        }
        Self {
            len,
            job: pick(b.job(), fields, F::JOB),
            submit_time: pick(b.submit_time(), fields, F::SUBMIT_TIME),
            age: pick(b.age(), fields, F::AGE),
            cores: pick(b.cores(), fields, F::CORES),
            nodes: pick(b.nodes(), fields, F::NODES),
            gpus: pick(b.gpus(), fields, F::GPUS),
            time_limit: pick(b.time_limit(), fields, F::TIME_LIMIT),
            partition_tier: pick(b.partition_tier(), fields, F::PARTITION_TIER),
            qos: pick(b.qos(), fields, F::QOS),
            qos_priority: pick(b.qos_priority(), fields, F::QOS_PRIORITY),
            fairshare: pick(b.fairshare(), fields, F::FAIRSHARE),
            user: pick(b.user(), fields, F::USER),
            account: pick(b.account(), fields, F::ACCOUNT),
        }
    }
}

/// The columns a priority version reads.
pub(crate) fn fields(
    b: &Bound<priority::Priority, Prioritize>,
    store: &mut Store<HostState>,
) -> wasmtime::Result<abi::PriorityFields> {
    Ok(abi::PriorityFields::from_bits(
        // Flag k of the WIT is bit k, as in `abi::PriorityFields`.
        b.api.call_fields(store)?.as_array()[0] as u16,
    ))
}

/// Calls `prioritize` with the batch lowered from [`PriorityBatchRef`].
pub(crate) fn prioritize(
    b: &Bound<priority::Priority, Prioritize>,
    store: &mut Store<HostState>,
    now: abi::Time,
    batch: &abi::PriorityBatch,
    fields: abi::PriorityFields,
) -> wasmtime::Result<Vec<i64>> {
    let (answer,) = b.hot.prioritize.call(
        &mut *store,
        (now, PriorityBatchRef::lowered(batch, fields)?),
    )?;
    Ok(answer)
}

/// Calls `explain` as [`prioritize`] is called; `None` when the component does not
/// export it.
pub(crate) fn explain(
    b: &Bound<priority::Priority, Prioritize>,
    store: &mut Store<HostState>,
    now: abi::Time,
    batch: &abi::PriorityBatch,
    fields: abi::PriorityFields,
) -> wasmtime::Result<Option<Vec<abi::PriorityFactor>>> {
    let Some(explain) = &b.hot.explain else {
        return Ok(None);
    };
    let (answer,) = explain.call(
        &mut *store,
        (now, PriorityBatchRef::lowered(batch, fields)?),
    )?;
    Ok(Some(
        answer
            .into_iter()
            .map(|f| abi::PriorityFactor {
                name: f.name,
                weight: f.weight,
                values: f.values,
            })
            .collect(),
    ))
}

/// `share-tree` lowered straight from the kernel's [`abi::ShareTree`]: as for priority,
/// nothing is copied on the host side.
#[derive(ComponentType, Lower)]
#[component(record)]
struct ShareTreeRef<'a> {
    id: &'a [u32],
    parent: &'a [u32],
    shares: &'a [u32],
    usage: &'a [f64],
}

/// Calls `factors` with the tree lowered from [`ShareTreeRef`].
pub(crate) fn factors(
    b: &Bound<fairshare::Fairshare, Factors>,
    store: &mut Store<HostState>,
    now: abi::Time,
    tree: &abi::ShareTree,
) -> wasmtime::Result<Vec<f64>> {
    let lowered = ShareTreeRef {
        id: tree.id(),
        parent: tree.parent(),
        shares: tree.shares(),
        usage: tree.usage(),
    };
    let (answer,) = b.hot.0.call(&mut *store, (now, lowered))?;
    Ok(answer)
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
                        abi::PreemptMode::Suspend => t::PreemptMode::Suspend,
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
                        t::PreemptMode::Suspend => abi::PreemptMode::Suspend,
                    },
                })
                .collect()
        })
        .collect()
}

/// `placement-batch` lowered straight from the kernel's [`abi::PlacementBatch`]: as for
/// priority, nothing is copied on the host side.
#[derive(ComponentType, Lower)]
#[component(record)]
pub(crate) struct PlacementBatchRef<'a> {
    job: &'a [u64],
    #[component(name = "units-needed")]
    units_needed: &'a [u32],
    #[component(name = "gpus-per-node")]
    gpus_per_node: &'a [u32],
    #[component(name = "first-candidate")]
    first_candidate: &'a [u32],
    node: &'a [u32],
    units: &'a [u32],
    #[component(name = "gpu-links")]
    gpu_links: &'a [u32],
    #[component(name = "numa-domains")]
    numa_domains: &'a [u32],
    #[component(name = "free-cores-after")]
    free_cores_after: &'a [u32],
    #[component(name = "free-gpus-after")]
    free_gpus_after: &'a [u32],
}

/// Calls `rank` with the batch lowered from [`PlacementBatchRef`]. An answer whose
/// offsets do not split it into one ranking per job is an error.
pub(crate) fn rank(
    b: &Bound<placement::Placement, Rank>,
    store: &mut Store<HostState>,
    batch: &abi::PlacementBatch,
) -> wasmtime::Result<abi::PlacementRanking> {
    let lowered = PlacementBatchRef {
        job: batch.job(),
        units_needed: batch.units_needed(),
        gpus_per_node: batch.gpus_per_node(),
        first_candidate: batch.first_candidate(),
        node: batch.node(),
        units: batch.units(),
        gpu_links: batch.gpu_links(),
        numa_domains: batch.numa_domains(),
        free_cores_after: batch.free_cores_after(),
        free_gpus_after: batch.free_gpus_after(),
    };
    let (answer,) = b.hot.0.call(&mut *store, (lowered,))?;
    abi::PlacementRanking::from_parts(answer.ranked, answer.first, batch.len()).ok_or_else(|| {
        wasmtime::format_err!(
            "the ranking's offsets do not split it into {} rankings",
            batch.len()
        )
    })
}
