//! `gantry policy test FILE.wasm`: the harness's checks on any component, without a
//! controller — it loads (the time it takes to compile, instantiate and `init`), then
//! decides the same large synthetic batch several times: every answer must be
//! well-formed (the host's own checks), the same each time (a policy must be a pure
//! function of its input and state), and within the per-call deadline. It prints the
//! component's size, its load time and what a call costs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use gantry_abi as abi;
use gantry_wasm_host::{
    Decision, FairshareWorld, HostLimits, LoadError, PlacementWorld, PolicyHost, PolicyKind,
    PolicySlot, PreemptionWorld, PriorityWorld,
};

use crate::client::print_json;

#[derive(Args, Debug)]
pub struct TestArgs {
    /// The component (`.wasm`).
    pub file: PathBuf,
    /// Its decision point (default: whichever world it implements).
    #[arg(long, value_parser = ["priority", "fairshare", "preemption", "placement"])]
    pub kind: Option<String>,
    /// Configuration text for its `init` (a file).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Waiting jobs in the priority batch (the other batches scale with it: a tree of a
    /// tenth as many associations, a hundredth as many blocked jobs with 32 candidates
    /// each, a tenth as many starting jobs with 16 candidate nodes each).
    #[arg(long, default_value_t = 100_000, value_name = "N")]
    pub jobs: usize,
    /// Calls on the same batch (at least 2: answers are compared).
    #[arg(long, default_value_t = 5, value_name = "N")]
    pub calls: u32,
    /// The per-call deadline, milliseconds (gantryd's default: 500).
    #[arg(long, default_value_t = 500, value_name = "MS")]
    pub deadline_ms: u64,
    /// One JSON object instead of the report.
    #[arg(long)]
    pub json: bool,
}

/// What the checks found.
#[derive(Debug, serde::Serialize)]
struct Outcome {
    file: String,
    kind: &'static str,
    name: String,
    version: String,
    bytes: u64,
    /// Compiling it (Cranelift), once per sha256.
    compile_ms: f64,
    /// Instantiating it and calling `init` (and `needs`).
    load_ms: f64,
    batch: usize,
    calls: u32,
    call_ms_median: f64,
    call_ms_max: f64,
    well_formed: bool,
    deterministic: bool,
    within_deadline: bool,
    deadline_ms: u64,
    /// Why a check failed.
    failure: Option<String>,
}

pub fn run(a: TestArgs) -> Result<u8> {
    if a.calls < 2 {
        bail!("--calls must be at least 2: answers are compared");
    }
    if a.jobs == 0 || a.jobs > 10_000_000 {
        bail!("--jobs must be between 1 and 10,000,000");
    }
    let bytes =
        std::fs::read(&a.file).with_context(|| format!("cannot read {}", a.file.display()))?;
    let config = match &a.config {
        Some(p) => {
            std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?
        }
        None => String::new(),
    };
    let limits = HostLimits {
        call_timeout: Duration::from_millis(a.deadline_ms),
        ..HostLimits::default()
    };
    // No code cache: the load time is what a first load costs.
    let host = PolicyHost::new(limits).map_err(|e| anyhow::anyhow!("{e}"))?;
    let started = Instant::now();
    host.precompile(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is refused: {e}", a.file.display()))?;
    let compile = started.elapsed();
    let kinds: Vec<PolicyKind> = match &a.kind {
        Some(k) => vec![k.parse().map_err(anyhow::Error::msg)?],
        None => PolicyKind::ALL.to_vec(),
    };
    let mut wrong = Vec::new();
    for kind in kinds {
        let tried = match kind {
            PolicyKind::Priority => {
                check::<PriorityWorld>(&host, &bytes, &config, &a, &priority_batch(a.jobs))
            }
            PolicyKind::Fairshare => {
                check::<FairshareWorld>(&host, &bytes, &config, &a, &share_tree(a.jobs / 10))
            }
            PolicyKind::Preemption => check::<PreemptionWorld>(
                &host,
                &bytes,
                &config,
                &a,
                &preemption_batch(a.jobs / 100),
            ),
            PolicyKind::Placement => {
                check::<PlacementWorld>(&host, &bytes, &config, &a, &placement_batch(a.jobs / 10))
            }
        };
        match tried {
            Err(LoadError::WrongWorld { detail, .. }) if a.kind.is_none() => {
                wrong.push(format!("{}: {detail}", kind.name()));
            }
            Err(e) => bail!("{} policy refused: {e}", kind.name()),
            Ok(mut o) => {
                o.kind = kind.name();
                o.file = a.file.display().to_string();
                o.bytes = bytes.len() as u64;
                o.compile_ms = compile.as_secs_f64() * 1e3;
                report(&o, a.json)?;
                let passed = o.well_formed && o.deterministic && o.within_deadline;
                return Ok(if passed { 0 } else { 1 });
            }
        }
    }
    bail!(
        "{} implements none of the four worlds of gantry:policy@0.3.0 ({})",
        a.file.display(),
        wrong.join("; ")
    )
}

fn check<W: Decision>(
    host: &std::sync::Arc<PolicyHost>,
    bytes: &[u8],
    config: &str,
    a: &TestArgs,
    batch: &W::Batch,
) -> Result<Outcome, LoadError> {
    let started = Instant::now();
    let mut slot = PolicySlot::<W>::new(host.clone())?;
    let id = slot.load(bytes, config)?;
    let load = started.elapsed();
    slot.activate(id, "gantry policy test", 0)
        .map_err(|e| LoadError::Engine(e.to_string()))?;
    let (name, version) = slot
        .versions()
        .first()
        .map(|v| (v.name.clone(), v.version.clone()))
        .unwrap_or_default();
    let now = 1_000_000;
    let mut times = Vec::new();
    let mut answers = Vec::new();
    let mut failure = None;
    for _ in 0..a.calls {
        let t = Instant::now();
        let answer = slot.decide(now, batch);
        times.push(t.elapsed());
        match answer {
            Some(x) => answers.push(x),
            None => {
                failure = slot.failures().last().map(|f| f.reason.clone());
                break;
            }
        }
    }
    let timed_out = failure.as_deref().is_some_and(|f| f.contains("timed out"));
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let deterministic = answers.windows(2).all(|w| w[0] == w[1]);
    if failure.is_none() && !deterministic {
        failure = Some("two calls on the same batch answered differently".into());
    }
    Ok(Outcome {
        file: String::new(),
        kind: "",
        name,
        version,
        bytes: 0,
        compile_ms: 0.0,
        load_ms: ms(load),
        batch: batch_len::<W>(a),
        calls: times.len() as u32,
        call_ms_median: times.get(times.len() / 2).map_or(0.0, |d| ms(*d)),
        call_ms_max: times.last().map_or(0.0, |d| ms(*d)),
        well_formed: failure.is_none() || timed_out,
        deterministic: failure.is_none() && deterministic,
        within_deadline: !timed_out,
        deadline_ms: a.deadline_ms,
        failure,
    })
}

/// How many entries the world's batch holds.
fn batch_len<W: Decision>(a: &TestArgs) -> usize {
    match W::NAME {
        "fairshare" => a.jobs / 10,
        "preemption" => a.jobs / 100,
        "placement" => a.jobs / 10,
        _ => a.jobs,
    }
}

fn report(o: &Outcome, json: bool) -> Result<()> {
    if json {
        return print_json(o);
    }
    let yes = |b: bool| if b { "yes" } else { "NO" };
    println!("{} ({} policy {} {})", o.file, o.kind, o.name, o.version);
    println!("  size:            {} bytes", o.bytes);
    println!(
        "  first load:      {:.1} ms (compile {:.1} ms, instantiate and init {:.1} ms)",
        o.compile_ms + o.load_ms,
        o.compile_ms,
        o.load_ms
    );
    println!(
        "  per call:        {:.2} ms median, {:.2} ms max ({} calls on {} entries)",
        o.call_ms_median, o.call_ms_max, o.calls, o.batch
    );
    println!("  well-formed:     {}", yes(o.well_formed));
    println!("  deterministic:   {}", yes(o.deterministic));
    println!(
        "  within deadline: {} ({} ms)",
        yes(o.within_deadline),
        o.deadline_ms
    );
    if let Some(f) = &o.failure {
        println!("  failure:         {}", crate::format::printable(f));
    }
    Ok(())
}

/// A deterministic stream of numbers (the same batch every run).
struct Numbers(u64);

impl Numbers {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n.max(1)
    }
}

fn priority_batch(n: usize) -> abi::PriorityBatch {
    let mut r = Numbers(1);
    let mut b = abi::PriorityBatch::new();
    for i in 0..n as u64 {
        let submit = 1_000_000 - r.below(86_400) as i64;
        b.push(abi::PriorityInput {
            job: i + 1,
            submit_time: submit,
            age: 1_000_000 - submit,
            cores: 1 + r.below(128),
            nodes: 1 + r.below(4) as u32,
            gpus: if r.below(4) == 0 { 1 + r.below(8) } else { 0 },
            time_limit: if r.below(20) == 0 {
                None
            } else {
                Some(60 * (1 + r.below(2880)) as i64)
            },
            partition_tier: r.below(2) as u32,
            qos: r.below(3) as u32,
            qos_priority: r.below(3) as u32 * 100,
            fairshare: r.below(1001) as f64 / 1000.0,
            user: r.below(1000) as u32,
            account: r.below(50) as u32,
        });
    }
    b
}

fn share_tree(associations: usize) -> abi::ShareTree {
    let mut r = Numbers(2);
    let mut t = abi::ShareTree::new();
    let accounts = 1 + associations / 100;
    t.push(abi::ShareNode {
        id: 0,
        parent: None,
        shares: 1,
        usage: 0.0,
    });
    for a in 1..=accounts as u32 {
        t.push(abi::ShareNode {
            id: a,
            parent: Some(0),
            shares: 1 + r.below(10) as u32,
            usage: r.below(1 << 30) as f64,
        });
    }
    for u in 0..associations as u32 {
        t.push(abi::ShareNode {
            id: abi::ASSOCIATION_IDS + u,
            parent: Some(1 + u % accounts as u32),
            shares: 1 + r.below(5) as u32,
            usage: r.below(1 << 24) as f64,
        });
    }
    t
}

fn preemption_batch(queries: usize) -> Vec<abi::PreemptionQuery> {
    let mut r = Numbers(3);
    (0..queries as u64)
        .map(|q| abi::PreemptionQuery {
            job: 1_000_000 + q,
            qos_priority: r.below(3) as u32 * 100,
            partition_tier: r.below(2) as u32,
            cores: 1 + r.below(64),
            gpus: r.below(4),
            candidates: (0..32)
                .map(|c| abi::PreemptionCandidate {
                    job: q * 32 + c + 1,
                    qos_priority: r.below(3) as u32 * 100,
                    partition_tier: r.below(2) as u32,
                    start_time: 1_000_000 - r.below(86_400) as i64,
                    cores: 1 + r.below(64),
                    gpus: r.below(4),
                    mode: match r.below(3) {
                        0 => abi::PreemptMode::Cancel,
                        1 => abi::PreemptMode::Requeue,
                        _ => abi::PreemptMode::Suspend,
                    },
                })
                .collect(),
        })
        .collect()
}

fn placement_batch(jobs: usize) -> abi::PlacementBatch {
    let mut r = Numbers(4);
    let mut b = abi::PlacementBatch::new();
    for j in 0..jobs as u64 {
        let candidates: Vec<abi::Candidate> = (0..16)
            .map(|_| abi::Candidate {
                node: r.below(10_000) as u32,
                units: 1 + r.below(8) as u32,
                gpu_links: r.below(12) as u32,
                numa_domains: 1 + r.below(2) as u32,
                free_cores_after: r.below(128) as u32,
                free_gpus_after: r.below(8) as u32,
            })
            .collect();
        b.push(j + 1, 1 + r.below(4) as u32, r.below(8) as u32, candidates);
    }
    b
}
