//! Hostile components are rejected at load or contained at run time; the scheduler
//! falls back and keeps scheduling.

mod common;

use common::*;
use gantry_abi::{PriorityBatch, PriorityInput};
use gantry_kernel::policy::{FifoPriority, PolicySet};
use gantry_kernel::{Backfill, SchedulerConfig};
use gantry_sim::{cluster_from_header, replay, ReplayOptions};
use gantry_wasm_host::{HostLimits, LoadError, PolicyHost, PolicySlot, PriorityWorld, SharedSlot};

fn jobs(n: u64) -> PriorityBatch {
    (0..n)
        .map(|i| PriorityInput {
            job: i + 1,
            submit_time: i as i64,
            age: 100 - i as i64,
            cores: 1 + i % 4,
            nodes: 1,
            gpus: 0,
            time_limit: Some(600),
            partition_tier: 0,
            qos: 0,
            qos_priority: 0,
            fairshare: 0.5,
            user: 0,
            account: 0,
        })
        .collect()
}

/// A priority slot with the good multifactor policy active and `hostile` activated on top.
fn slot_with(hostile: &str) -> PolicySlot<PriorityWorld> {
    slot_on(host(), hostile)
}

fn slot_on(host: std::sync::Arc<PolicyHost>, hostile: &str) -> PolicySlot<PriorityWorld> {
    let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
    let good = slot.load(&component("multifactor"), "").unwrap();
    slot.activate(good, "admin", 0).unwrap();
    let bad = slot.load(&component(hostile), "").unwrap();
    slot.activate(bad, "admin", 10).unwrap();
    slot
}

fn contained(hostile: &str, reason: &str) {
    contained_in(slot_with(hostile), hostile, reason);
}

fn contained_in(mut slot: PolicySlot<PriorityWorld>, hostile: &str, reason: &str) {
    let batch = jobs(50);
    let answer = slot
        .decide(20, &batch)
        .expect("the last good version answers");
    assert_eq!(answer.len(), 50);
    assert_eq!(slot.failures().len(), 1);
    let f = &slot.failures()[0];
    assert!(
        f.reason.contains(reason),
        "{hostile}: reason '{}' lacks '{reason}'",
        f.reason
    );
    assert_eq!(slot.active().unwrap().0, 1, "fell back to version 1");
    assert_eq!(slot.history().last().unwrap().action, "fallback");
    assert!(!slot.versions()[1].healthy);
    // The failed version is not tried again; the next cycle is answered straight away.
    assert!(slot.decide(30, &batch).is_some());
    assert_eq!(slot.failures().len(), 1);
}

#[test]
fn an_infinite_loop_is_stopped_by_the_deadline() {
    contained("hostile-infinite-loop", "timed out after 300 ms");
}

#[test]
fn a_memory_bomb_hits_the_cap() {
    // The bomb writes every megabyte it gets. On a loaded machine that can take longer
    // than the shared host's 300 ms deadline, which would then stop it first: this host
    // gives it time to reach the cap.
    let host = PolicyHost::new(HostLimits {
        call_timeout: std::time::Duration::from_secs(60),
        memory_bytes: 64 << 20,
    })
    .unwrap();
    let slot = slot_on(host, "hostile-memory-bomb");
    contained_in(slot, "hostile-memory-bomb", "memory");
}

#[test]
fn a_panic_is_a_contained_trap() {
    contained("hostile-panic", "unreachable");
}

#[test]
fn a_wrong_length_answer_is_rejected() {
    contained("hostile-wrong-length", "answered 49 priorities for 50 jobs");
}

#[test]
fn with_no_good_version_the_native_default_answers() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.activate(bad, "admin", 0).unwrap();
    assert!(slot.decide(1, &jobs(3)).is_none());
    assert_eq!(slot.native_answers(), 1);
}

#[test]
fn a_component_of_the_wrong_world_is_rejected_at_load() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    match slot.load(&component("fairtree"), "") {
        Err(LoadError::WrongWorld {
            world: "priority",
            detail,
        }) => assert!(!detail.is_empty()),
        other => panic!("expected a wrong-world error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_truncated_file_is_rejected_at_load() {
    let bytes = component("multifactor");
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    assert!(matches!(
        slot.load(&bytes[..bytes.len() / 2], ""),
        Err(LoadError::Compile(_))
    ));
    assert!(matches!(
        slot.load(b"not wasm at all", ""),
        Err(LoadError::Compile(_))
    ));
    assert!(slot.versions().is_empty());
}

#[test]
fn a_refused_configuration_is_an_error_at_load() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    match slot.load(&component("multifactor"), "weight_age = -3") {
        Err(LoadError::Config(msg)) => assert!(msg.contains("not negative"), "{msg}"),
        other => panic!("expected a config error, got {:?}", other.map(|_| ())),
    }
}

#[test]
fn a_replay_completes_with_every_job_scheduled_under_each_hostile_policy() {
    let mut trace = trace("lublin_256.swf");
    trace.jobs.truncate(300);
    for hostile in [
        "hostile-infinite-loop",
        "hostile-memory-bomb",
        "hostile-panic",
        "hostile-wrong-length",
    ] {
        let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
        let id = slot.load(&component(hostile), "").unwrap();
        slot.activate(id, "admin", 0).unwrap();
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
            &trace,
            cluster_from_header(&trace, 1).unwrap(),
            policies,
            &opts,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(report.jobs, 300, "{hostile}: every job ran");
        assert_eq!(report.unfinished, 0);
        let slot = handle.lock().unwrap();
        assert_eq!(
            slot.failures().len(),
            1,
            "{hostile}: failed once, then never called again"
        );
        assert!(
            slot.native_answers() > 0,
            "{hostile}: the native default answered"
        );
    }
}

/// The code cache: the first host compiles and writes the file, the next loads it, and a
/// damaged file is compiled again and replaced; every host answers the same.
#[test]
fn the_code_cache_is_written_reused_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("code");
    let limits = HostLimits::default();
    let answer = |host| {
        let mut slot = PolicySlot::<PriorityWorld>::new(host).unwrap();
        let v = slot
            .load(&component("multifactor"), &default_config("multifactor"))
            .unwrap();
        slot.activate(v, "test", 0).unwrap();
        slot.decide(200, &jobs(40)).unwrap()
    };
    let files = || -> Vec<_> {
        std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    };

    let first = answer(PolicyHost::with_code_cache(limits, cache.clone()).unwrap());
    let written = files();
    assert_eq!(written.len(), 1, "one compiled file: {written:?}");
    assert!(written[0].extension().is_some_and(|e| e == "cwasm"));
    let code = std::fs::read(&written[0]).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode();
        assert_eq!(
            mode & 0o077,
            0,
            "only the owner may use the cache: {mode:o}"
        );
    }

    // Marked old: a rewrite would give it a new modification time.
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(86_400);
    std::fs::File::options()
        .write(true)
        .open(&written[0])
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(
        answer(PolicyHost::with_code_cache(limits, cache.clone()).unwrap()),
        first
    );
    let modified = std::fs::metadata(&written[0]).unwrap().modified().unwrap();
    assert_eq!(modified, old, "reused, not rewritten");

    std::fs::write(&written[0], b"not compiled code").unwrap();
    assert_eq!(
        answer(PolicyHost::with_code_cache(limits, cache.clone()).unwrap()),
        first
    );
    assert_eq!(files(), written, "no stray temporary files");
    assert_eq!(
        std::fs::read(&written[0]).unwrap(),
        code,
        "damaged file replaced"
    );
}

#[test]
fn the_compiled_code_of_a_component_can_be_read_and_garbage_is_refused() {
    let host = host();
    let object = host.compiled_object(&component("multifactor")).unwrap();
    assert_eq!(&object[..4], b"\x7fELF", "an ELF object, for objdump");
    let err = host.compiled_object(b"not a component").unwrap_err();
    assert!(matches!(err, LoadError::Compile(_)), "{err}");
}
