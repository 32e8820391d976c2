//! How long `srun` takes to start a step's tasks: a real `gantryd` and eight real
//! `gantry-agent`s on loopback, one allocation of eight nodes, and steps of 64, 128, 256
//! and 512 tasks (8 to 64 per node) started in it through `RunStep`, as `srun` does. A
//! task prints one line as it starts; a step counts as running when every task's line
//! has come back to the caller (so the figure includes the output path back), and as
//! ended when its end has. Each size is run `--rounds` times; the table gives the median
//! and the range, and what each further 64 tasks add.
//!
//! `--compare-slurm` measures against Slurm on the same machine instead: one node (one
//! agent; one `slurmd`), a 128-CPU allocation on each side, and whole `srun` commands
//! timed from start to exit (`srun --jobid J --overlap -n N /bin/echo up`, Gantry's and
//! Slurm's in turn). It needs a running Slurm (`SLURM_CONF`, `sbatch`, `srun` and
//! `scancel` on the PATH) with a node of at least 128 CPUs.
//!
//! `cargo build --release --workspace --bins`, then `cargo bench --bench step_launch
//! [-- --rounds N] [-- --json] [-- --compare-slurm]`. Under `cargo test` it runs one
//! 64-task step: a smoke pass of the whole path.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::submit::{gantryd, start_with, user_client, Client, Daemon};
use gantry_api as api;
use tokio_stream::StreamExt;

const USAGE: &str = "\
Times srun's step launch over eight agents on loopback: from the call to every task's
first line back, and to the step's end.

usage: cargo bench --bench step_launch [-- [--rounds N] [--json] [--compare-slurm]]
  --rounds N       steps of each size (default 7)
  --json           one JSON object per size instead of the table
  --compare-slurm  one node, whole srun commands, Gantry's and a running Slurm's in turn
environment: GANTRYD  the daemon to measure (default: beside this bench)
             SLURM_CONF  the Slurm to compare with (--compare-slurm)";

const NODES: usize = 8;

/// The agents, killed when dropped.
struct Agents(Vec<Child>);

impl Drop for Agents {
    fn drop(&mut self) {
        for a in &mut self.0 {
            let _ = a.kill();
            let _ = a.wait();
        }
    }
}

fn start_agents(d: &Daemon, dir: &Path, nodes: usize) -> Agents {
    let bin = gantryd().with_file_name("gantry");
    let agent = gantryd().with_file_name("gantry-agent");
    let mut agents = Vec::new();
    for i in 1..=nodes {
        let node = format!("n{i}");
        let made = Command::new(&bin)
            .args(["credential", &node, "--key", "key", "--output"])
            .arg(format!("cred-{node}"))
            .current_dir(dir)
            .output()
            .unwrap();
        assert!(
            made.status.success(),
            "{}",
            String::from_utf8_lossy(&made.stderr)
        );
        std::fs::write(
            dir.join(format!("agent-{node}.toml")),
            format!(
                "controller = \"{}\"\nnode = \"{node}\"\ncredential_file = \"cred-{node}\"\n\
                 spool = \"spool/{node}\"\n[topology]\nsockets = 2\nnuma_per_socket = 1\n\
                 cores_per_numa = 64\nmemory_mb = 1048576\n",
                d.addr()
            ),
        )
        .unwrap();
        agents.push(
            Command::new(&agent)
                .args(["--config", &format!("agent-{node}.toml")])
                .current_dir(dir)
                .env("GANTRY_LOG", "warn")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
    }
    Agents(agents)
}

/// Waits until `nodes` nodes are up, then makes an allocation of all of them (`tasks`
/// CPUs) and waits until it runs; its id.
async fn allocation(c: &mut Client, dir: &Path, nodes: usize, tasks: u32) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let listed = c.nodes(api::NodesRequest {}).await.unwrap().into_inner();
        let up = listed
            .nodes
            .iter()
            .filter(|n| n.state == "IDLE" && n.name.len() <= 2)
            .count();
        if up == nodes {
            break;
        }
        assert!(Instant::now() < deadline, "the agents never registered");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let job = api::JobSubmission {
        name: "step-bench".into(),
        workdir: dir.display().to_string(),
        allocation_only: true,
        nodes: nodes as u32,
        tasks,
        cpus_per_task: 1,
        time_limit_s: 3600,
        ..Default::default()
    };
    let id = c
        .submit(api::SubmitRequest { job: Some(job) })
        .await
        .unwrap()
        .into_inner()
        .job_id;
    loop {
        let info = c
            .show_job(api::ShowJobRequest { job_id: id })
            .await
            .unwrap()
            .into_inner();
        if info.state == "RUNNING" {
            return id;
        }
        assert!(
            Instant::now() < deadline,
            "the allocation never ran: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One step of `tasks` tasks: (time to every task's line, time to the step's end).
async fn step(c: &mut Client, job: u64, tasks: u32, dir: &Path) -> (Duration, Duration) {
    let req = api::StepRequest {
        job_id: job,
        argv: vec!["/bin/echo".into(), "up".into()],
        workdir: dir.display().to_string(),
        nodes: Some(NODES as u32),
        tasks: Some(tasks),
        env: [("PATH".to_string(), "/usr/bin:/bin".to_string())].into(),
        ..Default::default()
    };
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(api::StepInput {
        what: Some(api::step_input::What::Start(req)),
    })
    .await
    .unwrap();
    let t = Instant::now();
    let mut events = c
        .run_step(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    let mut lines = 0;
    let mut running = None;
    while let Some(ev) = events.next().await {
        match ev.unwrap().what {
            Some(api::step_event::What::Output(o)) => {
                lines += o.data.iter().filter(|&&b| b == b'\n').count();
                if lines == tasks as usize {
                    running = Some(t.elapsed());
                }
            }
            Some(api::step_event::What::Ended(e)) => {
                assert_eq!(e.state, "COMPLETED", "{e:?}");
                break;
            }
            _ => {}
        }
    }
    drop(tx);
    let ended = t.elapsed();
    (running.expect("every task's line came back"), ended)
}

fn ms(d: &[Duration]) -> Vec<f64> {
    let mut v: Vec<f64> = d.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    v.sort_by(f64::total_cmp);
    v
}

fn median(v: &[f64]) -> f64 {
    v[v.len() / 2]
}

/// Runs `cmd` (an `srun` of `tasks` lines) to its end; how long it took.
fn timed(mut cmd: Command, tasks: usize) -> Duration {
    let t = Instant::now();
    let out = cmd.stderr(Stdio::inherit()).output().unwrap();
    let took = t.elapsed();
    assert!(out.status.success(), "{cmd:?} failed");
    let lines = out.stdout.iter().filter(|&&b| b == b'\n').count();
    assert_eq!(lines, tasks, "{cmd:?}: every task's line");
    took
}

/// `--compare-slurm`: whole `srun` commands on one node, Gantry's and Slurm's in turn.
fn compare_slurm(o: &common::args::Options) {
    let sizes = [16usize, 32, 64, 128];
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(
        &gantryd(),
        dir.path(),
        "native_policies = true\nheartbeat_s = 2\n",
    );
    let _agents = start_agents(&d, dir.path(), 1);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(user_client(&d));
    let ours = rt.block_on(allocation(&mut c, dir.path(), 1, 128));
    let sbatch = Command::new("sbatch")
        .args([
            "--parsable",
            "-N1",
            "-n128",
            "-o",
            "/dev/null",
            "--wrap",
            "sleep 3600",
        ])
        .output()
        .expect("Slurm's sbatch (SLURM_CONF set, a running Slurm)");
    assert!(
        sbatch.status.success(),
        "{}",
        String::from_utf8_lossy(&sbatch.stderr)
    );
    let theirs = String::from_utf8_lossy(&sbatch.stdout).trim().to_string();
    let gantry = gantryd().with_file_name("gantry");
    let ours_cmd = |n: usize| {
        let mut cmd = Command::new(&gantry);
        cmd.args([
            "run",
            "--jobid",
            &ours.to_string(),
            "--overlap",
            "-n",
            &n.to_string(),
        ])
        .args(["/bin/echo", "up"])
        .env("GANTRY_CONTROLLER", d.addr())
        .env("GANTRY_TOKEN", d.token())
        .env_remove("SLURM_JOB_ID")
        .current_dir(dir.path());
        cmd
    };
    let theirs_cmd = |n: usize| {
        let mut cmd = Command::new("srun");
        cmd.args(["--jobid", &theirs, "--overlap", "-n", &n.to_string()])
            .args(["/bin/echo", "up"])
            .current_dir(dir.path());
        cmd
    };
    // Slurm's allocation starts when its scheduler gets to it.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !Command::new("srun")
        .args(["--jobid", &theirs, "--overlap", "-n1", "true"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(Instant::now() < deadline, "Slurm's allocation never ran");
        std::thread::sleep(Duration::from_millis(200));
    }
    timed(ours_cmd(1), 1);
    let mut rows = Vec::new();
    for &n in &sizes {
        let (mut g, mut s) = (Vec::new(), Vec::new());
        for _ in 0..o.rounds {
            g.push(timed(ours_cmd(n), n));
            s.push(timed(theirs_cmd(n), n));
        }
        rows.push((n, ms(&g), ms(&s)));
    }
    let _ = Command::new("scancel").arg(&theirs).status();
    if o.json {
        for (n, g, s) in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "tasks": n, "nodes": 1, "rounds": o.rounds,
                    "gantry_ms": {"median": median(g), "min": g[0], "max": g[g.len() - 1]},
                    "slurm_ms": {"median": median(s), "min": s[0], "max": s[s.len() - 1]},
                    "slurm_over_gantry": median(s) / median(g),
                })
            );
        }
        return;
    }
    println!(
        "srun --jobid J --overlap -n N /bin/echo up, one node, {} rounds in turn\n\
         {:>6}  {:>24}  {:>24}  {:>12}",
        o.rounds, "tasks", "Gantry ms (range)", "Slurm ms (range)", "Slurm/Gantry"
    );
    for (n, g, s) in &rows {
        println!(
            "{n:>6}  {:>8.1} ({:>6.1}-{:>6.1})  {:>8.1} ({:>6.1}-{:>6.1})  {:>12.2}",
            median(g),
            g[0],
            g[g.len() - 1],
            median(s),
            s[0],
            s[s.len() - 1],
            median(s) / median(g)
        );
    }
}

fn main() {
    let o = common::args::options("step_launch", USAGE, 7, 1);
    if std::env::args().any(|a| a == "--compare-slurm") {
        return compare_slurm(&o);
    }
    let sizes: Vec<u32> = if o.benching {
        vec![64, 128, 256, 512]
    } else {
        vec![64]
    };
    let dir = tempfile::tempdir().unwrap();
    let d = start_with(
        &gantryd(),
        dir.path(),
        "native_policies = true\nheartbeat_s = 2\n",
    );
    let _agents = start_agents(&d, dir.path(), NODES);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut c = rt.block_on(user_client(&d));
    let job = rt.block_on(allocation(&mut c, dir.path(), NODES, (NODES * 64) as u32));
    // One step first, so nothing of the first one's connection set-up is timed.
    rt.block_on(step(&mut c, job, 8, dir.path()));
    let mut rows = Vec::new();
    for &size in &sizes {
        let (mut running, mut ended) = (Vec::new(), Vec::new());
        for _ in 0..o.rounds {
            let (r, e) = rt.block_on(step(&mut c, job, size, dir.path()));
            running.push(r);
            ended.push(e);
        }
        rows.push((size, ms(&running), ms(&ended)));
    }
    let base = median(&rows[0].1);
    if o.json {
        for (size, r, e) in &rows {
            println!(
                "{}",
                serde_json::json!({
                    "tasks": size, "nodes": NODES, "rounds": o.rounds,
                    "running_ms": {"median": median(r), "min": r[0], "max": r[r.len() - 1]},
                    "ended_ms": {"median": median(e), "min": e[0], "max": e[e.len() - 1]},
                })
            );
        }
        return;
    }
    println!(
        "step launch over {NODES} agents on loopback, {} rounds per size\n\
         {:>6}  {:>24}  {:>24}  {:>14}",
        o.rounds, "tasks", "all running ms (range)", "ended ms (range)", "+64 tasks ms"
    );
    for (size, r, e) in &rows {
        let per = if *size > 64 {
            format!("{:.1}", (median(r) - base) / ((size - 64) as f64 / 64.0))
        } else {
            "-".into()
        };
        println!(
            "{size:>6}  {:>8.1} ({:>6.1}-{:>6.1})  {:>8.1} ({:>6.1}-{:>6.1})  {per:>14}",
            median(r),
            r[0],
            r[r.len() - 1],
            median(e),
            e[0],
            e[e.len() - 1]
        );
    }
}
