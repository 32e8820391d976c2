//! Fuzzing of what the simulator reads from a trace someone hands it: arbitrary bytes
//! (plain or with gzip's magic), and well-formed records and headers whose numbers are
//! anything from -1 to the largest integers. Parsing, sizing the cluster from the
//! header and replaying must answer `Ok` or `Err` — never panic, overflow or allocate
//! without bound. Proptest instead of cargo-fuzz (which needs a nightly compiler);
//! `GANTRY_FUZZ_CASES` sets the cases (default 2,000; a tenth for whole replays).

use gantry_kernel::policy::PolicySet;
use gantry_kernel::SchedulerConfig;
use gantry_sim::{cluster_from_header, read_swf, replay, ReplayOptions};
use proptest::prelude::*;

fn cases() -> u32 {
    std::env::var("GANTRY_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2_000)
}

/// Numbers a trace may carry: SWF's -1 for unknown, zero, ordinary values, extremes.
fn number() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("-1".to_string()),
        Just("0".to_string()),
        (1i64..5_000).prop_map(|n| n.to_string()),
        Just(i64::MAX.to_string()),
        Just(u32::MAX.to_string()),
        Just("1e300".to_string()),
        Just("-9223372036854775808".to_string()),
    ]
}

fn record() -> impl Strategy<Value = String> {
    proptest::collection::vec(number(), 18).prop_map(|f| f.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), max_shrink_iters: 256, ..ProptestConfig::default() })]

    #[test]
    fn any_bytes_parse_or_are_refused(
        gz in any::<bool>(),
        body in proptest::collection::vec(any::<u8>(), 0..256),
    ) {
        let mut bytes = if gz { vec![0x1f, 0x8b] } else { Vec::new() };
        bytes.extend(body);
        let _ = read_swf(bytes.as_slice());
    }

    #[test]
    fn records_of_any_numbers_parse_or_are_refused(line in record()) {
        let _ = read_swf(line.as_bytes());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: (cases() / 10).max(1), max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn a_trace_of_any_numbers_sizes_a_cluster_and_replays_or_is_refused(
        procs in number(),
        lines in proptest::collection::vec(record(), 1..5),
    ) {
        let text = format!("; MaxProcs: {procs}\n{}\n", lines.join("\n"));
        let Ok(trace) = read_swf(text.as_bytes()) else { return Ok(()) };
        let Ok(cluster) = cluster_from_header(&trace, 1) else { return Ok(()) };
        let opts = ReplayOptions { scheduler: SchedulerConfig::default(), partition: None };
        let _ = replay(&trace, cluster, PolicySet::default(), &opts, &mut |_| {});
    }
}

/// Found at 20,000 cases: a trace none of whose jobs could be submitted left the
/// makespan as `Time::MIN - Time::MAX`.
#[test]
fn a_trace_whose_every_job_is_refused_replays_to_an_empty_report() {
    let text = "; MaxProcs: 0\n0 0 -9223372036854775808 0 9 9223372036854775807 -1 4354 -9223372036854775808 0 4294967295 9223372036854775807 4294967295 0 -9223372036854775808 4294967295 1e300 4294967295\n";
    let trace = read_swf(text.as_bytes()).expect("the record parses");
    let cluster = cluster_from_header(&trace, 1).expect("a cluster of no node");
    let opts = ReplayOptions {
        scheduler: SchedulerConfig::default(),
        partition: None,
    };
    if let Ok(report) = replay(&trace, cluster, PolicySet::default(), &opts, &mut |_| {}) {
        assert_eq!(report.makespan_s, 0);
    }
}
