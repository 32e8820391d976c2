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

use std::hint::black_box;
use std::time::{Duration, Instant};

use gantry_abi::{Fairshare, Placement, Priority};

/// One pair's timings.
struct Pair {
    name: &'static str,
    native: Vec<Duration>,
    wasm: Vec<Duration>,
}

impl Pair {
    /// Times `native` then `wasm`, `rounds` times; one untimed call of each first.
    fn measure<A, B>(
        name: &'static str,
        rounds: usize,
        mut native: impl FnMut() -> A,
        mut wasm: impl FnMut() -> B,
    ) -> Self {
        black_box(native());
        black_box(wasm());
        let (mut n, mut w) = (Vec::with_capacity(rounds), Vec::with_capacity(rounds));
        for _ in 0..rounds {
            let t = Instant::now();
            black_box(native());
            n.push(t.elapsed());
            let t = Instant::now();
            black_box(wasm());
            w.push(t.elapsed());
        }
        n.sort_unstable();
        w.sort_unstable();
        Self {
            name,
            native: n,
            wasm: w,
        }
    }
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn median(v: &[Duration]) -> Duration {
    v[v.len() / 2]
}

const USAGE: &str = "\
Times three built-in policies natively and as Wasm components, one call of each in turn,
and prints the fastest and median call of each build with their ratios.

usage: cargo bench --bench policy_ratio [-- [--rounds N] [--json]]
  --rounds N  rounds of multifactor over 100k jobs (default 400); fair-tree and
              placement, being shorter, run ten times as many
  --json      a JSON array, one object per pair, instead of the table
environment: GANTRY_POLICY_DIR  the components to load (default target/policies)";

/// `--rounds N` and `--json` from the arguments; cargo's own (`--bench`) are ignored.
fn options() -> (usize, bool) {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        std::process::exit(0);
    }
    let benching = args.iter().any(|a| a == "--bench");
    let json = args.iter().any(|a| a == "--json");
    let rounds = match args.iter().position(|a| a == "--rounds") {
        Some(i) => match args.get(i + 1).and_then(|n| n.parse::<usize>().ok()) {
            Some(n) if n > 0 => n,
            _ => {
                eprintln!("policy_ratio: --rounds takes a positive whole number");
                std::process::exit(2);
            }
        },
        None if benching => 400,
        None => 3,
    };
    (rounds, json)
}

fn main() {
    let (rounds, json) = options();
    let mut pairs = Vec::new();

    let common::PrioritySetup {
        now,
        batch,
        mut native,
        mut slot,
    } = common::priority(100_000);
    pairs.push(Pair::measure(
        "multifactor priority, 100k waiting jobs",
        rounds,
        || native.prioritize(now, &batch),
        || slot.decide(now, &batch).unwrap(),
    ));

    let common::FairshareSetup {
        now,
        trees,
        mut native,
        mut slot,
    } = common::fairshare();
    // Each build alternates between the two trees on its own, so that every call of
    // either ranks anew.
    let (mut turn_native, mut turn_wasm) = (0, 0);
    pairs.push(Pair::measure(
        "fair-tree fairshare, 573-node share tree",
        rounds * 10,
        || {
            turn_native += 1;
            native.factors(now, &trees[turn_native % 2])
        },
        || {
            turn_wasm += 1;
            slot.decide(now, &trees[turn_wasm % 2]).unwrap()
        },
    ));

    let common::PlacementSetup {
        batch,
        mut native,
        mut slot,
    } = common::placement();
    pairs.push(Pair::measure(
        "topology placement, batch of 512 jobs",
        rounds * 10,
        || native.rank(&batch),
        || slot.decide(0, &batch).unwrap(),
    ));

    if json {
        let rows: Vec<_> = pairs
            .iter()
            .map(|p| {
                serde_json::json!({
                    "name": p.name,
                    "calls": p.native.len(),
                    "native_min_us": micros(p.native[0]),
                    "wasm_min_us": micros(p.wasm[0]),
                    "native_median_us": micros(median(&p.native)),
                    "wasm_median_us": micros(median(&p.wasm)),
                    "ratio_of_minima": micros(p.wasm[0]) / micros(p.native[0]),
                    "ratio_of_medians": micros(median(&p.wasm)) / micros(median(&p.native)),
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
        let (nmin, nmed) = (micros(p.native[0]), micros(median(&p.native)));
        let (wmin, wmed) = (micros(p.wasm[0]), micros(median(&p.wasm)));
        println!(
            "{:<42} {:>6} {:>10.1} /{:>9.1} {:>10.1} /{:>9.1} {:>6.2}× {:>6.2}×",
            p.name,
            p.native.len(),
            nmin,
            nmed,
            wmin,
            wmed,
            wmin / nmin,
            wmed / nmed
        );
    }
}
