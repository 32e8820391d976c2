//! Wasm against native, call by call: the same pairs as `benches/policy.rs` (multifactor
//! over 100,000 jobs, Fair Tree over the KTH-sized tree, topology placement over 512
//! jobs), each timed as a native call then a Wasm call, in turn, many times.
//!
//! On a shared machine, other work slows whichever run happens to overlap it, so two
//! separate benchmark runs can differ by more than the effect being measured. Taking the
//! calls in turn exposes both builds to the same interference; the fastest call of each
//! is the one least disturbed, and their ratio is the steadiest figure (the medians'
//! ratio is printed beside it).
//!
//! `cargo bench --bench policy_ratio [-- --rounds N] [-- --json]`. Under `cargo test` it
//! runs three rounds of each, as a smoke pass. Needs `scripts/build-policies.sh` first;
//! `GANTRY_POLICY_DIR` points it at another build of the components.

mod common;

use common::ratio::Pair;

const USAGE: &str = "\
Times three built-in policies natively and as Wasm components, one call of each in turn,
and prints the fastest and median call of each build with their ratios.

usage: cargo bench --bench policy_ratio [-- [--rounds N] [--json]]
  --rounds N  rounds of multifactor over 100k jobs (default 400); fair-tree and
              placement, being shorter, run ten times as many
  --json      a JSON array, one object per pair, instead of the table
environment: GANTRY_POLICY_DIR  the components to load (default target/policies)";

fn main() {
    let o = common::args::options("policy_ratio", USAGE, 400, 3);
    let (rounds, json) = (o.rounds, o.json);
    let pairs = [
        Pair::measure(
            "multifactor priority, 100k waiting jobs",
            rounds,
            &mut common::priority(100_000),
        ),
        Pair::measure(
            "fair-tree fairshare, 573-node share tree",
            rounds * 10,
            &mut common::fairshare(),
        ),
        Pair::measure(
            "topology placement, batch of 512 jobs",
            rounds * 10,
            &mut common::placement(),
        ),
    ];
    if json {
        let rows: Vec<_> = pairs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "calls": p.calls,
                    "native_min_us": p.native.fastest,
                    "wasm_min_us": p.wasm.fastest,
                    "native_median_us": p.native.median,
                    "wasm_median_us": p.wasm.median,
                    "ratio_of_minima": p.ratio_of_fastest(),
                    "ratio_of_medians": p.ratio_of_medians(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(rows));
        return;
    }
    println!(
        "{:<42} {:>6} {:>21} {:>21} {:>7} {:>7}",
        "Wasm against native, calls in turn",
        "calls",
        "native µs (min/med)",
        "wasm µs (min/med)",
        "min",
        "median"
    );
    for p in &pairs {
        println!(
            "{:<42} {:>6} {:>10.1} /{:>9.1} {:>10.1} /{:>9.1} {:>6.2}× {:>6.2}×",
            p.name,
            p.calls,
            p.native.fastest,
            p.native.median,
            p.wasm.fastest,
            p.wasm.median,
            p.ratio_of_fastest(),
            p.ratio_of_medians()
        );
    }
}
