//! Durable submissions to a real `gantryd` over gRPC on loopback TCP, from concurrent
//! clients: each acknowledged job is committed to the state database (group commit).
//! Also reports the controller's resident memory per pending job, and the CPU time the
//! controller and the clients spent per submission.
//!
//! Needs the daemon built with the same profile: `cargo build --release -p
//! gantry-daemon`, then `cargo bench --bench submit` (`GANTRYD=path` measures another
//! build of the daemon). No agents run, so every job stays pending and the controller's
//! cycles walk a growing queue while it accepts more.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gantry_api::auth::{mint, Claims, Role};
use gantry_api::client::{connect, WithToken};
use gantry_api::controller_client::ControllerClient;
use gantry_api::{JobSubmission, SubmitRequest};

const CLIENTS: usize = 32;

struct Daemon {
    child: Child,
    addr: String,
    token: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon built beside this bench, or the one `GANTRYD` names (to compare two builds
/// with the same clients).
fn gantryd() -> PathBuf {
    let path = std::env::var_os("GANTRYD").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_gantry")).with_file_name("gantryd"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "{} is missing: cargo build --release -p gantry-daemon",
        path.display()
    );
    path
}

fn start(dir: &Path) -> Daemon {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let key = [7u8; 32];
    std::fs::write(dir.join("key"), key).unwrap();
    std::fs::write(
        dir.join("cluster.toml"),
        "[[node_type]]\nname='g'\nsockets=2\nnuma_per_socket=1\ncores_per_numa=64\nmemory='1T'\n\
         [[nodes]]\nnames='n[1-64]'\ntype='g'\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("gantryd.toml"),
        format!(
            "listen = \"127.0.0.1:{port}\"\nstate = \"state.db\"\nkey_file = \"key\"\n\
             cluster_file = \"cluster.toml\"\nnative_policies = true\n"
        ),
    )
    .unwrap();
    let child = Command::new(gantryd())
        .args(["--config", "gantryd.toml"])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let addr = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "gantryd did not start listening");
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = mint(
        &key,
        &Claims {
            user: "bench".into(),
            uid: unsafe { libc::getuid() },
            role: Role::User,
            expires: i64::MAX / 2,
        },
    )
    .unwrap();
    Daemon { child, addr, token }
}

/// A job as `sbatch` sends one: a short script and a modest exported environment.
fn job(i: usize) -> JobSubmission {
    let env = (0..20)
        .map(|k| (format!("VAR_{k}"), format!("/opt/site/software/pkg{k}/bin")))
        .collect();
    JobSubmission {
        name: format!("train-{i}"),
        script: "#!/bin/bash\n#SBATCH --gpus-per-node=1\nsrun python train.py --epochs 10\n".into(),
        workdir: "/home/bench".into(),
        env,
        tasks: 1,
        cpus_per_task: 4,
        time_limit_s: 3600,
        ..Default::default()
    }
}

type Client = ControllerClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, WithToken>,
>;

async fn clients(d: &Daemon) -> Vec<Client> {
    let mut out = Vec::new();
    for _ in 0..CLIENTS {
        let ch = connect(&d.addr).await.unwrap();
        out.push(ControllerClient::with_interceptor(
            ch,
            WithToken::new(Some(&d.token)).unwrap(),
        ));
    }
    out
}

/// Submits `n` jobs spread over the clients, all at once; returns the elapsed time.
async fn submit_all(clients: &[Client], n: u64) -> Duration {
    let per = n.div_ceil(clients.len() as u64);
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (c, client) in clients.iter().enumerate() {
        let mut client = client.clone();
        let count = per.min(n.saturating_sub(per * c as u64));
        tasks.spawn(async move {
            for i in 0..count {
                client
                    .submit(SubmitRequest {
                        job: Some(job(i as usize)),
                    })
                    .await
                    .expect("submission acknowledged");
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    t.elapsed()
}

fn resident_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_s(pid: &str) -> f64 {
    let ticks = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            // Fields after the command name, which is in parentheses and may hold spaces.
            let rest = s.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1);
    ticks as f64 / hz as f64
}

fn submissions(c: &mut Criterion) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let daemon = start(dir.path());
    let cl = rt.block_on(clients(&daemon));

    let mut g = c.benchmark_group(format!(
        "durable submissions over gRPC (loopback TCP, {CLIENTS} clients)"
    ));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    g.bench_function("one job per request", |b| {
        b.iter_custom(|iters| rt.block_on(submit_all(&cl, iters)))
    });
    g.finish();

    // Memory: resident growth over 100,000 more pending jobs.
    let pid = daemon.child.id();
    let before = resident_kib(pid);
    let (daemon_cpu, client_cpu) = (cpu_s(&pid.to_string()), cpu_s("self"));
    let n = 100_000;
    let took = rt.block_on(submit_all(&cl, n));
    let after = resident_kib(pid);
    let per_job_us = |cpu: f64| cpu * 1e6 / n as f64;
    println!(
        "controller memory: {:.0} bytes per pending job ({} KiB → {} KiB over {n} jobs, submitted at {:.0} jobs/s)",
        (after.saturating_sub(before) * 1024) as f64 / n as f64,
        before,
        after,
        n as f64 / took.as_secs_f64()
    );
    // CPU time per job does not depend on what else shares the machine the way
    // throughput does: it says where the cores went.
    println!(
        "CPU per submission over those jobs: controller {:.0} µs, the {CLIENTS} clients {:.0} µs",
        per_job_us(cpu_s(&pid.to_string()) - daemon_cpu),
        per_job_us(cpu_s("self") - client_cpu),
    );
}

criterion_group!(benches, submissions);
criterion_main!(benches);
