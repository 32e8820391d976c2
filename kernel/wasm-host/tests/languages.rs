//! Policies written in other languages than Rust: each example computes what the Rust
//! xfactor example computes, so each gives the KTH trace the same schedule; a component
//! whose runtime imports WASI is refused at load, naming what it imports.

mod common;

use common::*;
use gantry_abi::{PriorityBatch, PriorityInput};
use gantry_sim::Report;
use gantry_wasm_host::{LoadError, PolicySlot, PriorityWorld};

/// The KTH SP2 trace replayed with `component` as the priority policy (configured with
/// `config`), every call answered by it.
fn kth_with(component_name: &str, config: &str) -> Report {
    let trace = trace("KTH-SP2-1996-2.1-cln.swf.gz");
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let v = slot.load(&component(component_name), config).unwrap();
    slot.activate(v, "test", 0).unwrap();
    let (report, handle) = replay_with_priority(&trace, slot);
    let slot = handle.lock().unwrap();
    assert!(
        slot.failures().is_empty(),
        "{component_name}: {:?}",
        slot.failures()
    );
    assert_eq!(
        slot.native_answers(),
        0,
        "{component_name} answered every call"
    );
    report
}

fn same_schedule(language: &str, component_name: &str) {
    for config in [
        "",
        "unlimited_as_s = 3600\nboost_gpu_jobs = 2.5 # unused on KTH",
    ] {
        let rust = kth_with("xfactor-priority", config);
        let other = kth_with(component_name, config);
        assert_eq!(rust.jobs, other.jobs);
        let first_difference = rust
            .schedule
            .iter()
            .zip(&other.schedule)
            .position(|(a, b)| a != b);
        assert_eq!(
            first_difference, None,
            "{language} and Rust xfactor schedules differ (config {config:?})"
        );
        assert_eq!(rust.schedule.len(), other.schedule.len());
        assert_eq!(rust.mean_bounded_slowdown, other.mean_bounded_slowdown);
    }
}

#[test]
fn the_c_xfactor_gives_the_kth_schedule_of_the_rust_one() {
    same_schedule("C", "xfactor-priority-c");
}

/// Answer for answer on jobs the trace has none of (GPUs, no time limit), and the same
/// refusals of a bad configuration.
#[test]
fn the_c_xfactor_answers_and_refuses_as_the_rust_one() {
    let jobs: PriorityBatch = (0..200u64)
        .map(|i| PriorityInput {
            job: i + 1,
            submit_time: i as i64,
            age: [0, 1, 59, 3_600, 86_399, 1 << 30][i as usize % 6] - (i % 4 == 3) as i64 * 5,
            cores: 1,
            nodes: 1,
            gpus: i % 3,
            time_limit: [None, Some(1), Some(600), Some(86_400)][i as usize % 4],
            partition_tier: 0,
            qos: 0,
            qos_priority: 0,
            fairshare: 0.5,
            user: 0,
            account: 0,
        })
        .collect();
    let answer = |name: &str, config: &str| {
        let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
        let v = slot.load(&component(name), config).unwrap();
        slot.activate(v, "test", 0).unwrap();
        slot.decide(1_000, &jobs).unwrap()
    };
    for config in ["", "boost_gpu_jobs = 0.75", "unlimited_as_s = 1"] {
        assert_eq!(
            answer("xfactor-priority", config),
            answer("xfactor-priority-c", config),
            "config {config:?}"
        );
    }
    for bad in [
        "unlimited_as_s = 0",
        "boost_gpu_jobs = -1",
        "speed = 3",
        "nonsense",
    ] {
        let refusal = |name: &str| {
            let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
            match slot.load(&component(name), bad) {
                Err(LoadError::Config(msg)) => msg,
                other => panic!("{name} took {bad:?}: {other:?}"),
            }
        };
        assert_eq!(refusal("xfactor-priority"), refusal("xfactor-priority-c"));
    }
}

#[test]
fn a_component_that_imports_wasi_is_refused_naming_its_imports() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let err = slot.load(&component("hostile-wasi"), "").unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ForeignImports(_)), "{msg}");
    assert!(msg.contains("wasi:cli/stdout"), "{msg}");
    assert!(
        !msg.contains("gantry:policy/"),
        "the package's own are allowed: {msg}"
    );
}
