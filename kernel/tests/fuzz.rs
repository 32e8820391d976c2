//! Fuzzing of every parser that reads what users or admins write: durations, memory
//! sizes, host lists, `--array`, `--dependency` and the cluster description. Each gets
//! arbitrary text and text shaped like its own syntax (so the search reaches past the
//! first character), and must answer `Ok` or `Err` — never panic, overflow, or build
//! something unbounded.
//!
//! These are proptest runs rather than cargo-fuzz targets: cargo-fuzz needs a nightly
//! compiler, which the project's stable toolchain does not have. `GANTRY_FUZZ_CASES`
//! sets the cases per target (default 2,000, a few seconds each in a debug build).

// A test, not the core: it reads its case count from the environment.
#![allow(clippy::disallowed_methods)]

use gantry_kernel::job::{parse_dependencies, ArraySpec, MAX_ARRAY_SIZE};
use gantry_kernel::units::{
    compress_hostlist, expand_hostlist, format_duration, parse_duration, parse_memory_mb,
    MAX_DURATION, MAX_HOSTLIST_NAMES,
};
use gantry_kernel::ClusterDescription;
use proptest::prelude::*;

fn config() -> ProptestConfig {
    let cases = std::env::var("GANTRY_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        // Shrinking a text costs many cases; the first failure is what matters.
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Any text, or text made of `alphabet`.
fn text(alphabet: &'static str) -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..64)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        proptest::string::string_regex(alphabet).expect("a valid pattern"),
    ]
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn durations_parse_within_bounds_and_round_trip(t in text("[0-9:\\- ]{0,30}|unlimited|UNLIMITED|infinite")) {
        if let Ok(Some(secs)) = parse_duration(&t) {
            prop_assert!((0..=MAX_DURATION).contains(&secs), "{t:?} → {secs}");
            prop_assert_eq!(parse_duration(&format_duration(Some(secs))), Ok(Some(secs)));
        }
    }

    #[test]
    fn memory_sizes_never_panic(t in text("[0-9]{0,25}[KMGTkmgt]?")) {
        let _ = parse_memory_mb(&t);
    }

    #[test]
    fn host_lists_stay_bounded_and_compress_back(t in text("[a-z]{0,3}(\\[[0-9,\\-]{0,12}\\])?[a-z0-9]{0,3}(,[a-z]{1,3}[0-9]{0,3}){0,3}")) {
        if let Ok(names) = expand_hostlist(&t) {
            prop_assert!(names.len() <= MAX_HOSTLIST_NAMES);
            if !names.is_empty() && names.iter().all(|n| !n.contains([',', '[', ']'])) {
                let folded = compress_hostlist(&names);
                let mut again = expand_hostlist(&folded).expect("a compressed list expands");
                let mut names = names;
                names.sort();
                names.dedup();
                again.sort();
                again.dedup();
                prop_assert_eq!(again, names, "{} → {}", t, folded);
            }
        }
    }

    #[test]
    fn arrays_are_sorted_unique_and_bounded(t in text("[0-9]{1,10}(-[0-9]{1,10})?(:[0-9]{1,4})?(,[0-9]{1,6}(-[0-9]{1,6})?){0,3}(%[0-9]{1,3})?")) {
        if let Ok(a) = ArraySpec::parse(&t) {
            prop_assert!(a.indices.len() <= MAX_ARRAY_SIZE);
            prop_assert!(a.indices.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn dependencies_never_panic(t in text("(after|afterok|afterany|afternotok|singleton|x)(:[0-9]{1,20}){0,4}(,afterok:[0-9]{1,5})?")) {
        let _ = parse_dependencies(&t);
    }

    #[test]
    fn cluster_descriptions_are_accepted_or_refused(t in text("[a-z_ =\\[\\]\"0-9\\n.,{}]{0,200}")) {
        if let Ok(d) = ClusterDescription::from_toml(&t) {
            let _ = d.build();
        }
    }

    /// The example description with one number replaced: sizes a site might mistype,
    /// from 0 to the largest integers, must be refused or built without exhausting
    /// memory.
    #[test]
    fn a_mistyped_number_in_a_real_description_is_refused_or_built(
        pick in any::<prop::sample::Index>(),
        value in prop_oneof![
            Just(0u64),
            Just(u32::MAX as u64),
            Just(u32::MAX as u64 + 1),
            Just(i64::MAX as u64),
            0u64..100_000,
        ],
    ) {
        let example = include_str!("../../examples/cluster.toml");
        let numbers: Vec<(usize, usize)> = number_spans(example);
        let (start, end) = numbers[pick.index(numbers.len())];
        let text = format!("{}{value}{}", &example[..start], &example[end..]);
        if let Ok(d) = ClusterDescription::from_toml(&text) {
            let _ = d.build();
        }
    }
}

/// Where the bare integers are in `text` (not inside words such as `gpu01`).
fn number_spans(text: &str) -> Vec<(usize, usize)> {
    let bytes = text.as_bytes();
    let mut spans = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() && (i == 0 || !bytes[i - 1].is_ascii_alphanumeric()) {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            if i == bytes.len() || !bytes[i].is_ascii_alphabetic() {
                spans.push((start, i));
            }
        } else {
            i += 1;
        }
    }
    spans
}
