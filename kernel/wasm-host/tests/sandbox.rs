//! Hostile components are rejected at load or contained at run time; the scheduler
//! falls back and keeps scheduling.

mod common;

use common::*;
use gantry_abi::{PriorityBatch, PriorityInput};
use gantry_wasm_host::{Answering, HostLimits, LoadError, PolicyHost, PolicySlot, PriorityWorld};

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
        ..HostLimits::default()
    })
    .unwrap();
    let slot = slot_on(host, "hostile-memory-bomb");
    contained_in(slot, "hostile-memory-bomb", "memory");
}

#[test]
fn a_panic_is_a_contained_trap_with_its_message_and_location() {
    contained("hostile-panic", "unreachable");
    contained("hostile-panic", "panicked at");
    contained("hostile-panic", "hostile policy panics");
    contained("hostile-panic", "src/lib.rs:");
}

/// Every way a version becomes active keeps the versions before it as fallbacks, most
/// recent first: a failing version falls back to the last healthy one, never straight
/// to the native default while a healthy one exists.
#[test]
fn every_activation_path_keeps_the_earlier_versions_as_fallbacks() {
    let batch = jobs(20);
    let answered_by = |slot: &mut PolicySlot<PriorityWorld>, t| {
        let answer = slot.decide(t, &batch);
        assert!(
            answer.is_some(),
            "a healthy version answers, not the native default"
        );
        slot.active().unwrap()
    };
    let fresh = || {
        let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
        let v1 = slot.load(&component("multifactor"), "").unwrap();
        slot.activate(v1, "admin", 0).unwrap();
        (slot, v1)
    };

    // `policy load` (load, then activate) and `policy activate`.
    let (mut slot, v1) = fresh();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.activate(bad, "admin", 1).unwrap();
    assert_eq!(slot.fallbacks(), vec![v1]);
    assert_eq!(answered_by(&mut slot, 2), v1);
    assert_eq!(slot.answering(), Answering::Version(v1));

    // `policy load --no-activate`, then `policy rollback --to`.
    let (mut slot, v1) = fresh();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.rollback(Some(bad), "admin", 1).unwrap();
    assert_eq!(slot.fallbacks(), vec![v1]);
    assert_eq!(answered_by(&mut slot, 2), v1);

    // `policy rollback`: back to the previous one, which keeps its own fallbacks.
    let (mut slot, v1) = fresh();
    let v2 = slot.load(&component("multifactor"), "").unwrap();
    slot.activate(v2, "admin", 1).unwrap();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.activate(bad, "admin", 2).unwrap();
    assert_eq!(slot.fallbacks(), vec![v2, v1]);
    assert_eq!(slot.rollback(None, "admin", 3).unwrap(), v2);
    assert_eq!(
        slot.fallbacks(),
        vec![v1],
        "the version left is no fallback"
    );
    slot.activate(bad, "admin", 4).unwrap();
    assert_eq!(slot.fallbacks(), vec![v2, v1], "each version once");
    assert_eq!(answered_by(&mut slot, 5), v2);

    // Two failing versions in a row: the first healthy one before them answers.
    let (mut slot, v1) = fresh();
    let short = slot.load(&component("hostile-wrong-length"), "").unwrap();
    slot.activate(short, "admin", 1).unwrap();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.activate(bad, "admin", 2).unwrap();
    assert_eq!(answered_by(&mut slot, 3), v1);
    assert_eq!(slot.failures().len(), 2);
    // A rollback skips the failed versions; with none healthy left, it says so.
    let err = slot.rollback(None, "admin", 4).unwrap_err();
    assert_eq!(err, gantry_wasm_host::SlotError::NothingToRollBack);

    // Only when no version is healthy does the native default answer.
    let (mut slot, v1) = fresh();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.activate(bad, "admin", 1).unwrap();
    assert_eq!(answered_by(&mut slot, 2), v1);
    let bad2 = slot.load(&component("hostile-wrong-length"), "").unwrap();
    slot.activate(bad2, "admin", 3).unwrap();
    assert_eq!(answered_by(&mut slot, 4), v1);
}

/// A trial on the batch the slot last decided catches a failing version before it is
/// activated: it is marked unhealthy, its failure kept, and the active version stays.
#[test]
fn a_trial_before_activation_catches_a_failing_version() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let v1 = slot.load(&component("multifactor"), "").unwrap();
    slot.activate(v1, "admin", 0).unwrap();
    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    assert_eq!(
        slot.trial(bad),
        Ok(false),
        "nothing decided yet: nothing to try"
    );
    slot.record_batches(true);
    assert!(slot.decide(1, &jobs(10)).is_some());
    let err = slot.trial(bad).unwrap_err().to_string();
    assert!(err.contains("hostile policy panics"), "{err}");
    assert!(!slot.versions()[1].healthy);
    assert_eq!(slot.active(), Some(v1));
    assert_eq!(slot.trial(v1), Ok(true));
    // A failed shadow marks the candidate unhealthy too.
    let short = slot.load(&component("hostile-wrong-length"), "").unwrap();
    assert!(slot.shadow(short, |_, b| vec![0; b.len()]).is_err());
    assert!(!slot.versions()[2].healthy);
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
        let (report, handle) = replay_with_priority(&trace, slot);
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

/// What `cargo build --target wasm32-unknown-unknown` makes without the component
/// linker is a core module: loading one says how to make a component of it.
#[test]
fn a_core_module_is_refused_with_how_to_make_a_component() {
    // The smallest valid core module: the preamble alone.
    let module = b"\0asm\x01\0\0\0";
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let err = slot.load(module, "").unwrap_err();
    assert!(matches!(err, LoadError::CoreModule), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("not a component") && msg.contains("wasm-component-ld"),
        "{msg}"
    );
}

/// A slot's own limits bound every version loaded into it; limits out of bounds are
/// refused with the reason.
#[test]
fn a_slots_own_limits_bound_its_versions() {
    use std::time::Duration;
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    slot.set_limits(HostLimits {
        call_timeout: Duration::from_millis(40),
        ..HostLimits::default()
    })
    .unwrap();
    let looping = slot.load(&component("hostile-infinite-loop"), "").unwrap();
    slot.activate(looping, "admin", 0).unwrap();
    assert!(slot.decide(1, &jobs(5)).is_none());
    let reason = &slot.failures()[0].reason;
    assert!(reason.contains("timed out after 40 ms"), "{reason}");

    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    slot.set_limits(HostLimits {
        call_timeout: Duration::from_secs(30),
        memory_bytes: 8 << 20,
        ..HostLimits::default()
    })
    .unwrap();
    let bomb = slot.load(&component("hostile-memory-bomb"), "").unwrap();
    slot.activate(bomb, "admin", 0).unwrap();
    assert!(slot.decide(1, &jobs(5)).is_none());
    let reason = &slot.failures()[0].reason;
    assert!(reason.contains("memory"), "{reason}");

    for bad in [
        HostLimits {
            call_timeout: Duration::from_secs(3600),
            ..HostLimits::default()
        },
        HostLimits {
            memory_bytes: 1024,
            ..HostLimits::default()
        },
        HostLimits {
            instances: 0,
            ..HostLimits::default()
        },
    ] {
        let err = slot.set_limits(bad).unwrap_err().to_string();
        assert!(err.contains("must be between"), "{err}");
    }
}

/// A shadow over time runs the candidate beside the answering version on each call,
/// for as many calls as asked, and sums up how its answers differ; a candidate that
/// fails ends the watch, marked unhealthy, and never disturbs the answers.
#[test]
fn a_shadow_over_time_sums_up_each_calls_differences() {
    let mut slot = PolicySlot::<PriorityWorld>::new(host()).unwrap();
    let v1 = slot.load(&component("multifactor"), "").unwrap();
    slot.activate(v1, "admin", 0).unwrap();
    // FIFO by job id, which orders this batch otherwise than multifactor (sizes and
    // fairshare weigh there).
    let by_id = slot.load(&component("fifo-by-job-id"), "").unwrap();
    slot.watch_shadow(by_id, 3).unwrap();
    let batch = jobs(30);
    let alone = {
        let mut s = PolicySlot::<PriorityWorld>::new(host()).unwrap();
        let v = s.load(&component("multifactor"), "").unwrap();
        s.activate(v, "admin", 0).unwrap();
        s.decide(1, &batch).unwrap()
    };
    for t in 1..=5 {
        assert_eq!(
            slot.decide(t, &batch).unwrap(),
            alone,
            "answers are the active one's"
        );
    }
    let w = slot.shadow_watch().unwrap();
    assert_eq!((w.version, w.cycles, w.cycles_left), (by_id, 3, 0));
    assert_eq!(w.batch, 30);
    assert_eq!(w.differing, 3, "each call ordered differently: {w:?}");
    assert_eq!(w.changed, 3 * w.most_changed as u64);
    assert!(!w.examples.is_empty());
    assert_eq!(w.failed, None);
    assert_eq!(slot.active(), Some(v1));

    let bad = slot.load(&component("hostile-panic"), "").unwrap();
    slot.watch_shadow(bad, 10).unwrap();
    assert_eq!(slot.decide(6, &batch).unwrap(), alone);
    let w = slot.shadow_watch().unwrap();
    assert!(w.failed.unwrap().contains("hostile policy panics"));
    assert_eq!(w.cycles_left, 0);
    assert!(!slot.versions()[2].healthy);
    assert_eq!(slot.active(), Some(v1), "a failing shadow changes nothing");
}
