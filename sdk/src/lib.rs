//! # gantry-sdk
//!
//! What a Gantry policy author depends on. Write a type that implements one of the policy
//! traits ([`Priority`], [`Fairshare`], [`Preemption`], [`Placement`], each with
//! [`Policy`]), test it natively with the [`harness`], and export it as a WebAssembly
//! component with one line:
//!
//! ```ignore
//! #[derive(Default)]
//! struct Oldest;
//! impl gantry_sdk::Policy for Oldest { /* info, init */ }
//! impl gantry_sdk::Priority for Oldest { /* prioritize */ }
//! gantry_sdk::export_priority!(Oldest);
//! ```
//!
//! `gantry policy new KIND DIR` makes a project with this crate copied in that builds
//! as it is: `cargo build --release --target wasm32-unknown-unknown`, linked by the
//! toolchain's `wasm-component-ld` (set as the target's linker in the project's
//! `.cargo/config.toml`), with the SDK feature of the world it exports (`priority`,
//! `fairshare`, `preemption` or `placement`); the crate must be a `cdylib`. See
//! `examples/xfactor-priority` for a complete policy, and docs/POLICIES.md for the
//! tutorial and the reference of every input.
//!
//! ## What it must not depend on
//!
//! `core`, `alloc`, the ABI and, on wasm32 only, the binding generator and an allocator.
//! No `std`, no WASI: a policy imports nothing but the host's logging.

#![cfg_attr(not(all(feature = "replay", not(target_arch = "wasm32"))), no_std)]

extern crate alloc;
// Lets generated bindings name this crate by the path user crates use.
extern crate self as gantry_sdk;

pub use gantry_abi::*;

pub mod harness;

#[cfg(all(feature = "replay", not(target_arch = "wasm32")))]
pub mod replay;

#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

/// Log levels for [`log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// The `key = value` lines of a policy's configuration text: `#` starts a comment,
/// blank lines are skipped, key and value are trimmed. Each item is `(line number, key,
/// value)`, or the message for a line without `=` (`line N: expected key = value`); a
/// policy matches the keys it knows and names the line in its own messages.
pub fn config_lines(
    config: &str,
) -> impl Iterator<Item = Result<(usize, &str, &str), alloc::string::String>> + '_ {
    config.lines().enumerate().filter_map(|(i, line)| {
        let line = line.split('#').next().unwrap_or("").trim();
        let n = i + 1;
        (!line.is_empty()).then(|| match line.split_once('=') {
            Some((key, value)) => Ok((n, key.trim(), value.trim())),
            None => Err(alloc::format!("line {n}: expected key = value")),
        })
    })
}

/// Writes a line to the controller's log (inside a component), or nowhere (natively).
pub fn log(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    wasm::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    let _ = (level, message);
}

/// Exports a [`Priority`] policy as the component's `explained-priority` world (the
/// `priority` world and [`Priority::explain`], for `sprio`).
/// The type must implement `Default`; the host calls `init` before any decision.
#[macro_export]
macro_rules! export_priority {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::wasm::priority as __w;
            static __STATE: $crate::wasm::State<$ty> = $crate::wasm::State::new();
            struct __GantryExport;
            impl __w::Guest for __GantryExport {
                fn info() -> __w::gantry::policy::types::PolicyInfo {
                    __w::info(&__STATE)
                }
                fn init(
                    config: $crate::wasm::String,
                ) -> ::core::result::Result<(), $crate::wasm::String> {
                    __w::init(&__STATE, config)
                }
                fn fields() -> __w::gantry::policy::types::PriorityFields {
                    __w::fields(&__STATE)
                }
                fn prioritize(
                    now: i64,
                    jobs: __w::gantry::policy::types::PriorityBatch,
                ) -> $crate::wasm::Vec<i64> {
                    __w::prioritize(&__STATE, now, jobs)
                }
                fn explain(
                    now: i64,
                    jobs: __w::gantry::policy::types::PriorityBatch,
                ) -> $crate::wasm::Vec<__w::gantry::policy::types::PriorityFactor> {
                    __w::explain(&__STATE, now, jobs)
                }
            }
    __w::__export_priority_world!(__GantryExport with_types_in $crate::wasm::priority);
        };
    };
}

/// Exports a [`Fairshare`] policy as the component's `fairshare` world.
#[macro_export]
macro_rules! export_fairshare {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::wasm::fairshare as __w;
            static __STATE: $crate::wasm::State<$ty> = $crate::wasm::State::new();
            struct __GantryExport;
            impl __w::Guest for __GantryExport {
                fn info() -> __w::gantry::policy::types::PolicyInfo {
                    __w::info(&__STATE)
                }
                fn init(
                    config: $crate::wasm::String,
                ) -> ::core::result::Result<(), $crate::wasm::String> {
                    __w::init(&__STATE, config)
                }
                fn factors(
                    now: i64,
                    tree: __w::gantry::policy::types::ShareTree,
                ) -> $crate::wasm::Vec<f64> {
                    __w::factors(&__STATE, now, tree)
                }
            }
    __w::__export_fairshare_world!(__GantryExport with_types_in $crate::wasm::fairshare);
        };
    };
}

/// Exports a [`Preemption`] policy as the component's `preemption` world.
#[macro_export]
macro_rules! export_preemption {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::wasm::preemption as __w;
            static __STATE: $crate::wasm::State<$ty> = $crate::wasm::State::new();
            struct __GantryExport;
            impl __w::Guest for __GantryExport {
                fn info() -> __w::gantry::policy::types::PolicyInfo {
                    __w::info(&__STATE)
                }
                fn init(
                    config: $crate::wasm::String,
                ) -> ::core::result::Result<(), $crate::wasm::String> {
                    __w::init(&__STATE, config)
                }
                fn select(
                    now: i64,
                    batch: $crate::wasm::Vec<__w::gantry::policy::types::PreemptionQuery>,
                ) -> $crate::wasm::Vec<$crate::wasm::Vec<__w::gantry::policy::types::Victim>>
                {
                    __w::select(&__STATE, now, batch)
                }
            }
    __w::__export_preemption_world!(__GantryExport with_types_in $crate::wasm::preemption);
        };
    };
}

/// Exports a [`Placement`] policy as the component's `placement` world.
#[macro_export]
macro_rules! export_placement {
    ($ty:ty) => {
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::wasm::placement as __w;
            static __STATE: $crate::wasm::State<$ty> = $crate::wasm::State::new();
            struct __GantryExport;
            impl __w::Guest for __GantryExport {
                fn info() -> __w::gantry::policy::types::PolicyInfo {
                    __w::info(&__STATE)
                }
                fn init(
                    config: $crate::wasm::String,
                ) -> ::core::result::Result<(), $crate::wasm::String> {
                    __w::init(&__STATE, config)
                }
                fn rank(
                    batch: __w::gantry::policy::types::PlacementBatch,
                ) -> __w::gantry::policy::types::PlacementRanking {
                    __w::rank(&__STATE, batch)
                }
            }
    __w::__export_placement_world!(__GantryExport with_types_in $crate::wasm::placement);
        };
    };
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    #[test]
    fn config_lines_skip_comments_and_blanks_and_number_every_line() {
        let text = "# header\n\n  a = 1  # one\nb=two\nbroken\n";
        let lines: Vec<_> = super::config_lines(text).collect();
        assert_eq!(
            lines,
            [
                Ok((3, "a", "1")),
                Ok((4, "b", "two")),
                Err("line 5: expected key = value".into())
            ]
        );
    }
}
