//! Component glue, compiled only for wasm32: the allocator, the panic handler, the
//! policy's instance state, the generated bindings of the enabled world, and conversions
//! between generated records and the ABI's.

use core::cell::UnsafeCell;

pub use alloc::string::String;
pub use alloc::vec::Vec;
pub use wit_bindgen;

#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    // Say what panicked and where, as an error line the host keeps with the failure
    // (the trap itself carries neither) — once: a panic while saying it (out of memory)
    // only traps.
    static SAID: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if !SAID.swap(true, core::sync::atomic::Ordering::Relaxed) {
        let mut text = String::new();
        let _ = match info.location() {
            Some(l) => core::fmt::write(
                &mut text,
                format_args!(
                    "panicked at {}:{}:{}: {}",
                    l.file(),
                    l.line(),
                    l.column(),
                    info.message()
                ),
            ),
            None => core::fmt::write(&mut text, format_args!("panicked: {}", info.message())),
        };
        log(crate::Level::Error, &text);
    }
    // A trap: the host sees it, falls back, and never reuses this instance.
    core::arch::wasm32::unreachable()
}

/// The policy value of a component instance, created on first use.
pub struct State<T>(UnsafeCell<Option<T>>);

// SAFETY: a component instance runs on one thread and the host never re-enters it, so
// at most one `&mut T` exists at a time.
unsafe impl<T> Sync for State<T> {}

impl<T: Default> State<T> {
    pub const fn new() -> Self {
        Self(UnsafeCell::new(None))
    }
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: see the `Sync` impl; no call below re-enters the guest.
        let slot = unsafe { &mut *self.0.get() };
        f(slot.get_or_insert_with(T::default))
    }
}

macro_rules! world_common {
    () => {
        use super::State;
        use crate::Policy;
        use alloc::string::String;
        use gantry::policy::types as t;

        pub fn info<T: Policy + Default>(s: &State<T>) -> t::PolicyInfo {
            let i = s.with(|p| p.info());
            t::PolicyInfo {
                name: i.name,
                version: i.version,
            }
        }
        pub fn init<T: Policy + Default>(s: &State<T>, config: String) -> Result<(), String> {
            s.with(|p| p.init(&config))
        }
        pub(crate) fn log(level: crate::Level, message: &str) {
            use gantry::policy::host::{self, Level as L};
            let l = match level {
                crate::Level::Debug => L::Debug,
                crate::Level::Info => L::Info,
                crate::Level::Warn => L::Warn,
                crate::Level::Error => L::Error,
            };
            host::log(l, message);
        }
    };
}

#[cfg(feature = "priority")]
pub mod priority {
    wit_bindgen::generate!({
        world: "explained-priority",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_priority_world",
        default_bindings_module: "gantry_sdk::wasm::priority",
        runtime_path: "gantry_sdk::wasm::wit_bindgen::rt",
    });
    world_common!();
    use alloc::vec::Vec;

    pub fn fields<T: crate::Priority + Default>(s: &State<T>) -> t::PriorityFields {
        t::PriorityFields::from_bits_retain(s.with(|p| p.fields().bits()))
    }

    pub fn prioritize<T: crate::Priority + Default>(
        s: &State<T>,
        now: i64,
        b: t::PriorityBatch,
    ) -> Vec<i64> {
        let columns = columns(b);
        s.with(|p| match crate::PriorityBatch::from_columns(columns) {
            Some(jobs) if jobs.fields().contains(p.fields()) => p.prioritize(now, &jobs),
            // A malformed batch: answering nothing makes the host fall back.
            _ => Vec::new(),
        })
    }

    /// The lists arrive as vectors the guest already owns: moving them is free. A
    /// column the policy did not ask for arrives as `none`, and is empty here.
    fn columns(b: t::PriorityBatch) -> crate::PriorityColumns {
        crate::PriorityColumns {
            len: b.len as usize,
            job: b.job.unwrap_or_default(),
            submit_time: b.submit_time.unwrap_or_default(),
            age: b.age.unwrap_or_default(),
            cores: b.cores.unwrap_or_default(),
            nodes: b.nodes.unwrap_or_default(),
            gpus: b.gpus.unwrap_or_default(),
            time_limit: b.time_limit.unwrap_or_default(),
            partition_tier: b.partition_tier.unwrap_or_default(),
            qos: b.qos.unwrap_or_default(),
            qos_priority: b.qos_priority.unwrap_or_default(),
            fairshare: b.fairshare.unwrap_or_default(),
            user: b.user.unwrap_or_default(),
            account: b.account.unwrap_or_default(),
        }
    }

    pub fn explain<T: crate::Priority + Default>(
        s: &State<T>,
        now: i64,
        b: t::PriorityBatch,
    ) -> Vec<t::PriorityFactor> {
        let columns = columns(b);
        s.with(|p| match crate::PriorityBatch::from_columns(columns) {
            Some(jobs) if jobs.fields().contains(p.fields()) => p
                .explain(now, &jobs)
                .into_iter()
                .map(|f| t::PriorityFactor {
                    name: f.name,
                    weight: f.weight,
                    values: f.values,
                })
                .collect(),
            // A malformed batch: no breakdown.
            _ => Vec::new(),
        })
    }
}

#[cfg(feature = "fairshare")]
pub mod fairshare {
    wit_bindgen::generate!({
        world: "fairshare",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_fairshare_world",
        default_bindings_module: "gantry_sdk::wasm::fairshare",
        runtime_path: "gantry_sdk::wasm::wit_bindgen::rt",
    });
    world_common!();
    use alloc::vec::Vec;

    pub fn factors<T: crate::Fairshare + Default>(
        s: &State<T>,
        now: i64,
        tree: t::ShareTree,
    ) -> Vec<f64> {
        // The lowered lists become the tree's columns as they are.
        match crate::ShareTree::from_columns(tree.id, tree.parent, tree.shares, tree.usage) {
            Some(tree) => s.with(|p| p.factors(now, &tree)),
            // A malformed tree: answering nothing makes the host fall back.
            None => Vec::new(),
        }
    }
}

#[cfg(feature = "preemption")]
pub mod preemption {
    wit_bindgen::generate!({
        world: "preemption",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_preemption_world",
        default_bindings_module: "gantry_sdk::wasm::preemption",
        runtime_path: "gantry_sdk::wasm::wit_bindgen::rt",
    });
    world_common!();
    use alloc::vec::Vec;

    fn mode_in(m: t::PreemptMode) -> crate::PreemptMode {
        match m {
            t::PreemptMode::Cancel => crate::PreemptMode::Cancel,
            t::PreemptMode::Requeue => crate::PreemptMode::Requeue,
            t::PreemptMode::Suspend => crate::PreemptMode::Suspend,
        }
    }

    pub fn select<T: crate::Preemption + Default>(
        s: &State<T>,
        now: i64,
        batch: Vec<t::PreemptionQuery>,
    ) -> Vec<Vec<t::Victim>> {
        let batch: Vec<crate::PreemptionQuery> = batch
            .into_iter()
            .map(|q| crate::PreemptionQuery {
                job: q.job,
                qos_priority: q.qos_priority,
                partition_tier: q.partition_tier,
                cores: q.cores,
                gpus: q.gpus,
                candidates: q
                    .candidates
                    .into_iter()
                    .map(|c| crate::PreemptionCandidate {
                        job: c.job,
                        qos_priority: c.qos_priority,
                        partition_tier: c.partition_tier,
                        start_time: c.start_time,
                        cores: c.cores,
                        gpus: c.gpus,
                        mode: mode_in(c.mode),
                    })
                    .collect(),
            })
            .collect();
        s.with(|p| p.select(now, &batch))
            .into_iter()
            .map(|vs| {
                vs.into_iter()
                    .map(|v| t::Victim {
                        job: v.job,
                        mode: match v.mode {
                            crate::PreemptMode::Cancel => t::PreemptMode::Cancel,
                            crate::PreemptMode::Requeue => t::PreemptMode::Requeue,
                            crate::PreemptMode::Suspend => t::PreemptMode::Suspend,
                        },
                    })
                    .collect()
            })
            .collect()
    }
}

#[cfg(feature = "placement")]
pub mod placement {
    wit_bindgen::generate!({
        world: "placement",
        path: "../wit",
        pub_export_macro: true,
        export_macro_name: "__export_placement_world",
        default_bindings_module: "gantry_sdk::wasm::placement",
        runtime_path: "gantry_sdk::wasm::wit_bindgen::rt",
    });
    world_common!();
    use alloc::vec::Vec;

    pub fn rank<T: crate::Placement + Default>(
        s: &State<T>,
        b: t::PlacementBatch,
    ) -> t::PlacementRanking {
        // The lowered lists become the batch's columns as they are.
        let batch = crate::PlacementBatch::from_columns(crate::PlacementColumns {
            job: b.job,
            units_needed: b.units_needed,
            gpus_per_node: b.gpus_per_node,
            first_candidate: b.first_candidate,
            node: b.node,
            units: b.units,
            gpu_links: b.gpu_links,
            numa_domains: b.numa_domains,
            free_cores_after: b.free_cores_after,
            free_gpus_after: b.free_gpus_after,
        });
        let Some(batch) = batch else {
            // A malformed batch: answering nothing makes the host fall back.
            return t::PlacementRanking {
                ranked: Vec::new(),
                first: Vec::new(),
            };
        };
        let (ranked, first) = s.with(|p| p.rank(&batch)).into_parts();
        t::PlacementRanking { ranked, first }
    }
}

/// Host logging through whichever world this component exports.
pub fn log(level: crate::Level, message: &str) {
    #[cfg(feature = "priority")]
    return priority::log(level, message);
    #[cfg(all(feature = "fairshare", not(feature = "priority")))]
    return fairshare::log(level, message);
    #[cfg(all(
        feature = "preemption",
        not(any(feature = "priority", feature = "fairshare"))
    ))]
    return preemption::log(level, message);
    #[cfg(all(
        feature = "placement",
        not(any(feature = "priority", feature = "fairshare", feature = "preemption"))
    ))]
    return placement::log(level, message);
    #[allow(unreachable_code)]
    {
        let _ = (level, message);
    }
}
