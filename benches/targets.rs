//! Gantry's speed targets, measured in one run on this machine and printed beside them:
//! one full scheduling cycle at 10,000 nodes × 100,000 pending jobs, the Wasm policies
//! against the same policies built natively, the KTH-SP2 replay, durable submissions to
//! `gantryd` over gRPC, the controller's memory per pending job, and hot swap.
//!
//! `cargo build --release -p gantry-daemon && cargo bench --bench targets [-- --json]`
//! (a few minutes). Under `cargo test` it runs a smoke pass at small sizes, which checks
//! that every measure runs and says nothing about the targets. Needs
//! `scripts/build-policies.sh` first; `GANTRY_POLICY_DIR` points it at another build of
//! the components, `GANTRYD` at another build of the daemon. docs/PERFORMANCE.md has the
//! separate benchmarks each measure comes from, and how to read them.
//!
//! These are measurements, never assertions: a shared machine can miss a target that a
//! quiet one meets, so "met" only reports what this run saw.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::ratio::Pair;
use common::scale::{scenario, Builtins};
use common::submit::{clients, resident_kib, start, submit_all, CLIENTS};
use gantry_wasm_host::{
    Decision, FairshareWorld, HostLimits, PlacementWorld, PolicyHost, PolicyKind, PolicySlot,
    PreemptionWorld, PriorityWorld,
};

const USAGE: &str = "\
Measures Gantry's speed targets in one run and prints each beside its target.

usage: cargo bench --bench targets [-- --json]
  --json  a JSON object instead of the table: `machine` (cores, CPU, load average at
          the start and the end) and `measures`, one object per measure
environment: GANTRY_POLICY_DIR  the components to load (default target/policies)
             GANTRYD            the daemon to submit to (default: beside this build's gantry)
Build the daemon first: cargo build --release -p gantry-daemon";

/// How much of each measure to run: the targets' scale under `cargo bench`, a smoke pass
/// under `cargo test`.
struct Sizes {
    full: bool,
    cycle_nodes: u32,
    cycle_pending: u32,
    cycles: usize,
    ratio_rounds: usize,
    replays: usize,
    submissions: u64,
    swaps: usize,
}

impl Sizes {
    fn full() -> Self {
        Self {
            full: true,
            cycle_nodes: 10_000,
            cycle_pending: 100_000,
            cycles: 5,
            ratio_rounds: 200,
            replays: 3,
            submissions: 50_000,
            swaps: 20,
        }
    }

    fn smoke() -> Self {
        Self {
            full: false,
            cycle_nodes: 100,
            cycle_pending: 1_000,
            cycles: 2,
            ratio_rounds: 3,
            replays: 1,
            submissions: 500,
            swaps: 2,
        }
    }
}

/// One target of the table: how it reads, and the bound a measured value is held to.
#[derive(Clone, Copy)]
struct Target {
    text: &'static str,
    bound: Bound,
}

#[derive(Clone, Copy)]
enum Bound {
    AtMost(f64),
    AtLeast(f64),
}

impl Target {
    const fn at_most(text: &'static str, bound: f64) -> Self {
        Self {
            text,
            bound: Bound::AtMost(bound),
        }
    }
    const fn at_least(text: &'static str, bound: f64) -> Self {
        Self {
            text,
            bound: Bound::AtLeast(bound),
        }
    }
    fn met_by(&self, value: f64) -> bool {
        match self.bound {
            Bound::AtMost(b) => value <= b,
            Bound::AtLeast(b) => value >= b,
        }
    }
}

const CYCLE: Target = Target::at_most("≤ 100 ms", 100.0);
const WASM_RATIO: Target = Target::at_most("≤ 1.5×", 1.5);
const KTH_REPLAY: Target = Target::at_most("≤ 1 s", 1.0);
const SUBMISSIONS: Target = Target::at_least("≥ 10,000/s", 10_000.0);
const MEMORY_PER_JOB: Target = Target::at_most("≤ 2 KiB", 2048.0);
const HOT_SWAP: Target = Target::at_most("≤ 100 ms", 100.0);

/// One measure against its target.
struct Row {
    measure: String,
    target: Target,
    /// In the target's unit.
    value: f64,
    unit: &'static str,
    /// How the value was taken, and what else the run saw.
    detail: String,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return;
    }
    let json = args.iter().any(|a| a == "--json");
    // `cargo bench` passes --bench; `cargo test` does not.
    let sizes = if args.iter().any(|a| a == "--bench") {
        Sizes::full()
    } else {
        Sizes::smoke()
    };
    if let Err(missing) = preflight() {
        eprintln!("targets: {missing}");
        std::process::exit(2);
    }
    let start = Machine::now();
    let mut rows = Vec::new();
    rows.push(full_cycle(&sizes));
    rows.extend(policy_ratios(&sizes));
    rows.push(kth_replay(&sizes));
    rows.extend(submissions(&sizes));
    rows.push(hot_swap(&sizes));
    let load_at_end = Machine::now().load;
    // A smoke pass's sizes are not the targets': it says nothing about them.
    let met = |r: &Row| sizes.full.then(|| r.target.met_by(r.value));
    if json {
        let measures: Vec<_> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "measure": r.measure,
                    "target": r.target.text,
                    "value": r.value,
                    "unit": r.unit,
                    "detail": r.detail,
                    "met": met(r),
                    "smoke_pass": !sizes.full,
                })
            })
            .collect();
        let out = serde_json::json!({
            "machine": {
                "cores": start.cores,
                "cpu": start.cpu,
                "load_at_start": start.load,
                "load_at_end": load_at_end,
            },
            "measures": measures,
        });
        println!("{out}");
        return;
    }
    if !sizes.full {
        println!("smoke pass (small sizes): the figures below say nothing about the targets");
    }
    let load = |l: Option<f64>| l.map_or("unknown".to_string(), |l| format!("{l:.2}"));
    println!(
        "machine: {} cores, {}; load average {} at the start, {} at the end",
        start.cores,
        start.cpu.as_deref().unwrap_or("CPU unknown"),
        load(start.load),
        load(load_at_end)
    );
    println!("{:<66} {:>11} {:>14}  met", "measure", "target", "measured");
    for r in &rows {
        let met = match met(r) {
            Some(true) => "yes",
            Some(false) => "NO",
            None => "—",
        };
        let value = match r.unit {
            "jobs/s" | "bytes" => format!("{:.0} {}", r.value, r.unit),
            "ms" => format!("{:.1} {}", r.value, r.unit),
            _ => format!("{:.2} {}", r.value, r.unit),
        };
        println!(
            "{:<66} {:>11} {:>14}  {met}",
            r.measure, r.target.text, value
        );
        println!("    {}", r.detail);
    }
}

/// What the run needs before it starts, so that a missing piece is said at once rather
/// than minutes in: the four built-in components and the daemon.
fn preflight() -> Result<(), String> {
    for kind in PolicyKind::ALL {
        let path = common::component_path(kind.builtin());
        if !path.is_file() {
            return Err(format!(
                "{} is missing: run scripts/build-policies.sh, or point GANTRY_POLICY_DIR at the components",
                path.display()
            ));
        }
    }
    let daemon = common::submit::gantryd_path();
    if !daemon.is_file() {
        return Err(format!(
            "{} is missing: run cargo build --release -p gantry-daemon, or point GANTRYD at a daemon",
            daemon.display()
        ));
    }
    Ok(())
}

/// What the figures depend on besides the code: a shared machine's load moves them.
struct Machine {
    cores: usize,
    /// The CPU's model name (`/proc/cpuinfo`), where the system says.
    cpu: Option<String>,
    /// The one-minute load average (`/proc/loadavg`), where the system says.
    load: Option<f64>,
}

impl Machine {
    fn now() -> Self {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name")?.split_once(':'))
            .map(|(_, name)| name.trim().to_string());
        let load = std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|l| l.split_whitespace().next()?.parse().ok());
        Self {
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu,
            load,
        }
    }
}

fn progress(what: &str) {
    eprintln!("targets: measuring {what}");
}

/// The fastest, median and slowest of some timings.
struct Spread {
    fastest: f64,
    median: f64,
    slowest: f64,
}

impl Spread {
    fn of(mut v: Vec<f64>) -> Self {
        v.sort_by(f64::total_cmp);
        Self {
            fastest: v[0],
            median: v[v.len() / 2],
            slowest: v[v.len() - 1],
        }
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// One full cycle (priority via Wasm, main pass, EASY backfill over every pending job),
/// each on a freshly built half-busy scenario.
fn full_cycle(s: &Sizes) -> Row {
    let (nodes, pending) = (s.cycle_nodes, s.cycle_pending);
    progress(&format!(
        "the full cycle, {} scenarios of {nodes} nodes × {pending} pending",
        s.cycles
    ));
    let builtins = Builtins::new();
    let mut times = Vec::new();
    let mut started = 0;
    for _ in 0..s.cycles {
        let mut state = scenario(nodes, pending, builtins.set());
        let t = Instant::now();
        let out = state.scheduler.cycle(state.now);
        times.push(ms(t.elapsed()));
        started = out.started.len();
    }
    let Spread {
        fastest, median, ..
    } = Spread::of(times);
    Row {
        measure: format!("full cycle, {nodes} nodes × {pending} pending (Wasm, EASY over all)"),
        target: CYCLE,
        value: median,
        unit: "ms",
        detail: format!(
            "median of {} cycles (fastest {fastest:.1} ms), {started} jobs started in each",
            s.cycles
        ),
    }
}

/// The Wasm built-ins against the same policies built natively, calls in turn.
fn policy_ratios(s: &Sizes) -> Vec<Row> {
    let jobs = if s.full { 100_000 } else { 1_000 };
    progress("the Wasm policies against native builds, calls in turn");
    // Each pair with what it runs on.
    let pairs = [
        (
            Pair::measure(
                "multifactor priority",
                s.ratio_rounds,
                &mut common::priority(jobs),
            ),
            format!("{jobs} waiting jobs"),
        ),
        (
            Pair::measure(
                "topology placement",
                s.ratio_rounds * 10,
                &mut common::placement(),
            ),
            "batch of 512 jobs".to_string(),
        ),
        (
            Pair::measure(
                "fair-tree fairshare",
                s.ratio_rounds * 10,
                &mut common::fairshare(),
            ),
            "573-node share tree".to_string(),
        ),
    ];
    pairs
        .into_iter()
        .map(|(p, size)| {
            let value = p.ratio_of_fastest();
            Row {
                measure: format!("Wasm / native, {}, {size}", p.name),
                target: WASM_RATIO,
                value,
                unit: "×",
                detail: format!(
                    "fastest of {} calls each: {:.1} µs Wasm, {:.1} µs native (medians {:.1} / {:.1} µs, {:.2}×)",
                    p.calls,
                    p.wasm.fastest,
                    p.native.fastest,
                    p.wasm.median,
                    p.native.median,
                    p.ratio_of_medians()
                ),
            }
        })
        .collect()
}

/// The KTH-SP2 trace (28,476 jobs) replayed by this build's `gantry sim`, as a user runs
/// it, with the compiled components already in the code cache.
fn kth_replay(s: &Sizes) -> Row {
    progress(&format!("the KTH-SP2 replay (runs: {})", s.replays));
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let policies = common::policy_dir();
    let replay = || {
        let t = Instant::now();
        let status = Command::new(env!("CARGO_BIN_EXE_gantry"))
            .args(["sim", "-q", "--trace"])
            .arg(root.join("testdata/traces/KTH-SP2-1996-2.1-cln.swf.gz"))
            .args(["--json", "/dev/null"])
            .env("GANTRY_POLICY_DIR", &policies)
            .stdout(Stdio::null())
            .status()
            .expect("gantry sim runs");
        assert!(status.success(), "gantry sim failed: {status}");
        t.elapsed().as_secs_f64()
    };
    if s.full {
        replay(); // fills the code cache, as any earlier run would have
    }
    let times: Vec<f64> = (0..s.replays).map(|_| replay()).collect();
    let Spread {
        fastest,
        median,
        slowest,
    } = Spread::of(times);
    Row {
        measure: "KTH-SP2 full replay (28,476 jobs), Wasm built-ins".into(),
        target: KTH_REPLAY,
        value: median,
        unit: "s",
        detail: format!(
            "median of {} run(s) of this build's `gantry sim --trace` (release under `cargo bench`), wall time with process start ({fastest:.2}–{slowest:.2} s)",
            s.replays
        ),
    }
}

/// Durable submissions from concurrent clients to a real `gantryd`, and what the
/// controller's memory grew by per pending job over them.
fn submissions(s: &Sizes) -> Vec<Row> {
    let n = s.submissions;
    progress(&format!(
        "{n} durable submissions over gRPC from {CLIENTS} clients"
    ));
    let rt = tokio::runtime::Runtime::new().expect("a tokio runtime");
    let dir = tempfile::tempdir().expect("a temporary directory");
    let daemon = start(dir.path());
    let cl = rt.block_on(clients(&daemon));
    // Connections warm, tables and caches touched once.
    rt.block_on(submit_all(&cl, (n / 10).max(CLIENTS as u64)));
    let pid = daemon.child.id();
    let before = resident_kib(pid);
    let took = rt.block_on(submit_all(&cl, n));
    let after = resident_kib(pid);
    let rate = n as f64 / took.as_secs_f64();
    let per_job = (after.saturating_sub(before) * 1024) as f64 / n as f64;
    vec![
        Row {
            measure: format!("durable submissions over gRPC, loopback, {CLIENTS} clients"),
            target: SUBMISSIONS,
            value: rate,
            unit: "jobs/s",
            detail: format!(
                "{n} jobs, each acknowledged once committed; clients and gantryd share this machine's cores"
            ),
        },
        Row {
            measure: "controller memory per pending job".into(),
            target: MEMORY_PER_JOB,
            value: per_job,
            unit: "bytes",
            detail: format!("gantryd's resident memory, {before} → {after} KiB over those {n} jobs"),
        },
    ]
}

/// Load request → active, for each built-in (compiled once per sha256, as on a live
/// controller that has seen the component before); the slowest built-in's median.
fn hot_swap(s: &Sizes) -> Row {
    progress("hot swap of each built-in policy");
    let host = PolicyHost::new(HostLimits::default()).expect("a policy host");
    let medians = [
        swap_median::<PriorityWorld>(&host, PolicyKind::Priority.builtin(), s.swaps),
        swap_median::<FairshareWorld>(&host, PolicyKind::Fairshare.builtin(), s.swaps),
        swap_median::<PreemptionWorld>(&host, PolicyKind::Preemption.builtin(), s.swaps),
        swap_median::<PlacementWorld>(&host, PolicyKind::Placement.builtin(), s.swaps),
    ];
    let value = medians.iter().map(|&(_, m)| m).fold(0.0, f64::max);
    let each: Vec<String> = medians
        .iter()
        .map(|(name, m)| format!("{name} {m:.2} ms"))
        .collect();
    Row {
        measure: "hot swap, load → active, slowest built-in".into(),
        target: HOT_SWAP,
        value,
        unit: "ms",
        detail: format!("median of {} swaps each: {}", s.swaps, each.join(", ")),
    }
}

fn swap_median<W: Decision>(
    host: &std::sync::Arc<PolicyHost>,
    name: &'static str,
    swaps: usize,
) -> (&'static str, f64) {
    let (bytes, config) = (common::component(name), common::config(name));
    let mut slot = PolicySlot::<W>::new(host.clone()).expect("a policy slot");
    let mut swap = || {
        let t = Instant::now();
        let id = slot.load(&bytes, &config).expect("the built-in loads");
        slot.activate(id, "targets", 0)
            .expect("the built-in activates");
        ms(t.elapsed())
    };
    swap(); // the first load compiles
    (
        name,
        Spread::of((0..swaps).map(|_| swap()).collect()).median,
    )
}
