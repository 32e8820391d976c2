//! End to end: a real `gantryd` and real `gantry-agent`s on loopback (two CPU nodes and
//! one declared 8-GPU NVLink node), driven only through the `gantry` CLI and its Slurm
//! entry points. Jobs are real processes; the state database is a real SQLite file.
//!
//! Needs the binaries built (`cargo build --workspace --bins`; `scripts/test.sh` does).

mod clients;
mod commands;
mod failover;
mod harness;
mod hostile;
mod snapshots;
mod steps;
mod whatif;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use harness::{Cluster, Options};

const HELLO: &str = r#"#!/bin/bash
#SBATCH --job-name=hello
#SBATCH --ntasks=2
#SBATCH --cpus-per-task=1
#SBATCH --mem=1G
#SBATCH --time=5:00
#SBATCH --output=hello-%x-%j.out
echo "SLURM_JOB_ID=$SLURM_JOB_ID"
echo "SLURM_JOB_NAME=$SLURM_JOB_NAME"
echo "SLURM_NTASKS=$SLURM_NTASKS"
echo "SLURM_CPUS_PER_TASK=$SLURM_CPUS_PER_TASK"
echo "SLURM_JOB_NODELIST=$SLURM_JOB_NODELIST"
echo "SLURM_SUBMIT_DIR=$SLURM_SUBMIT_DIR"
echo "SLURM_MEM_PER_NODE=$SLURM_MEM_PER_NODE"
"#;

fn vars(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn an_sbatch_script_runs_with_slurm_variables_and_its_output_pattern() {
    let c = Cluster::start(Options::default());
    let script = c.write("hello.sh", HELLO);
    let out = c.cli_ok(&["sbatch", "--parsable", script.to_str().unwrap()]);
    let id: u64 = out.trim().parse().expect("--parsable prints the id");
    let job = c.wait_done(id);
    assert_eq!(job["state"], "COMPLETED", "{job}");
    let text = c.read(&format!("hello-hello-{id}.out"));
    let v = vars(&text);
    assert_eq!(v["SLURM_JOB_ID"], id.to_string());
    assert_eq!(v["SLURM_JOB_NAME"], "hello");
    assert_eq!(v["SLURM_NTASKS"], "2");
    assert_eq!(v["SLURM_CPUS_PER_TASK"], "1");
    assert_eq!(v["SLURM_MEM_PER_NODE"], "1024");
    assert!(v["SLURM_JOB_NODELIST"].starts_with("cpu0"), "{text}");
    assert_eq!(v["SLURM_SUBMIT_DIR"], c.work().display().to_string());
    // squeue's format, sacct's parsable output.
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &id.to_string(),
        "-P",
        "-n",
        "-o",
        "JobID,JobName,State,ExitCode",
    ]);
    assert_eq!(
        acct.trim(),
        format!("{id}|hello|COMPLETED|0:0\n{id}.batch|batch|COMPLETED|0:0")
    );
}

#[test]
fn a_multi_node_job_sees_its_layout_as_slurm_writes_it_and_lists_its_hosts() {
    let c = Cluster::start(Options::default());
    let (scontrol, _) = c.program(&["scontrol"]);
    let script = c.write(
        "layout.sh",
        &format!(
            "#!/bin/bash\n#SBATCH -p cpu -N 2 -n 8 -o layout.out\n\
             for v in SLURM_TASKS_PER_NODE SLURM_JOB_CPUS_PER_NODE SLURM_PROCID SLURM_LOCALID SLURM_NODEID SLURM_GTIDS SLURM_NNODES; do echo \"$v=${{!v}}\"; done\n\
             echo \"MASTER_ADDR=$({} show hostnames | head -n 1)\"\n\
             echo \"HOSTS=$({} show hostnames | paste -sd ' ')\"\n",
            scontrol.display(),
            scontrol.display()
        ),
    );
    let id = c.sbatch(&[script.to_str().unwrap()]);
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    let v = vars(&c.read("layout.out"));
    assert_eq!(v["SLURM_TASKS_PER_NODE"], "4(x2)");
    assert_eq!(v["SLURM_JOB_CPUS_PER_NODE"], "4(x2)");
    for k in [
        "SLURM_PROCID",
        "SLURM_LOCALID",
        "SLURM_NODEID",
        "SLURM_GTIDS",
    ] {
        assert_eq!(v[k], "0", "{k}: the batch step is task 0 on the first node");
    }
    assert_eq!(v["SLURM_NNODES"], "2");
    assert_eq!(v["MASTER_ADDR"], "cpu01");
    assert_eq!(v["HOSTS"], "cpu01 cpu02");
    // --ntasks-per-node, as the usual training script gives it.
    let id = c.sbatch(&[
        "-p",
        "cpu",
        "-N",
        "2",
        "--ntasks-per-node=2",
        "-o",
        "per-node.out",
        "--wrap=echo SLURM_NTASKS=$SLURM_NTASKS; echo SLURM_TASKS_PER_NODE=$SLURM_TASKS_PER_NODE; echo SLURM_NTASKS_PER_NODE=$SLURM_NTASKS_PER_NODE",
    ]);
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    let v = vars(&c.read("per-node.out"));
    assert_eq!(v["SLURM_NTASKS"], "4");
    assert_eq!(v["SLURM_TASKS_PER_NODE"], "2(x2)");
    assert_eq!(v["SLURM_NTASKS_PER_NODE"], "2");
    // -w and -x choose the node.
    for (flag, want) in [("-w", "cpu02"), ("-x", "cpu02")] {
        let list = if flag == "-w" { "cpu02" } else { "cpu01" };
        let id = c.sbatch(&["-p", "cpu", flag, list, "-o", "/dev/null", "--wrap=true"]);
        let job = c.wait_done(id);
        assert_eq!(job["node_list"], want, "{flag} {list}: {job}");
    }
    let (code, _, err) = c.cli(&["sbatch", "-w", "nosuch01", "--wrap=true"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("invalid node name specified: nosuch01"),
        "{err}"
    );
}

#[test]
fn an_array_throttled_to_two_never_runs_more_than_two() {
    let c = Cluster::start(Options::default());
    let script = c.write(
        "array.sh",
        "#!/bin/bash\n#SBATCH --array=0-5%2\n#SBATCH -o arr-%A_%a.out\necho start $(date +%s.%N) > span-$SLURM_ARRAY_TASK_ID\nsleep 1\necho end $(date +%s.%N) >> span-$SLURM_ARRAY_TASK_ID\n",
    );
    let id: u64 = c
        .cli_ok(&["sbatch", "--parsable", script.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let tasks = c.wait_all_done(&[id]);
    assert_eq!(tasks.len(), 6);
    assert!(tasks.iter().all(|t| t["state"] == "COMPLETED"), "{tasks:?}");
    let mut spans = Vec::new();
    for i in 0..6 {
        let text = c.read(&format!("span-{i}"));
        let t: Vec<f64> = text
            .lines()
            .map(|l| l.split(' ').nth(1).unwrap().parse().unwrap())
            .collect();
        spans.push((t[0], t[1]));
    }
    // Most tasks overlapping any instant: check at every start.
    let most = spans
        .iter()
        .map(|&(s, _)| spans.iter().filter(|&&(a, b)| a <= s && s < b).count())
        .max()
        .unwrap();
    assert!(most <= 2, "{most} tasks ran at once: {spans:?}");
}

#[test]
fn afterok_runs_in_order_and_afternotok_is_skipped() {
    let c = Cluster::start(Options::default());
    let first = c.write("a.sh", "#!/bin/bash\nsleep 1\ndate +%s.%N > a.done\n");
    let a: u64 = c
        .cli_ok(&["sbatch", "--parsable", first.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let then = c.write(
        "b.sh",
        "#!/bin/bash\ntest -f a.done && date +%s.%N > b.done\n",
    );
    let b: u64 = c
        .cli_ok(&[
            "sbatch",
            "--parsable",
            &format!("--dependency=afterok:{a}"),
            then.to_str().unwrap(),
        ])
        .trim()
        .parse()
        .unwrap();
    let other = c.write("c.sh", "#!/bin/bash\ntouch c.ran\n");
    let cc: u64 = c
        .cli_ok(&[
            "sbatch",
            "--parsable",
            &format!("--dependency=afternotok:{a}"),
            other.to_str().unwrap(),
        ])
        .trim()
        .parse()
        .unwrap();
    let jobs = c.wait_all_done(&[a, b, cc]);
    let state = |id: u64| jobs.iter().find(|j| j["job_id"] == id).unwrap()["state"].clone();
    assert_eq!(state(a), "COMPLETED");
    assert_eq!(state(b), "COMPLETED");
    assert_eq!(state(cc), "CANCELLED", "the afternotok branch never runs");
    assert!(!c.work().join("c.ran").exists());
    let ta: f64 = c.read("a.done").trim().parse().unwrap();
    let tb: f64 = c.read("b.done").trim().parse().unwrap();
    assert!(tb > ta);
}

#[test]
fn a_four_gpu_job_gets_an_nvlink_quad_and_cpus_next_to_it() {
    let c = Cluster::start(Options::default());
    // Two GPUs busy first, so the choice is not simply 0-3.
    let hold = c.write(
        "hold.sh",
        "#!/bin/bash\n#SBATCH -p gpu --gpus-per-node=1 -c 1\nsleep 30\n",
    );
    let h: u64 = c
        .cli_ok(&["sbatch", "--parsable", hold.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    c.wait_state(h, "RUNNING");
    let s = c.write(
        "gpu.sh",
        "#!/bin/bash\n#SBATCH -p gpu --gpus-per-node=4 -c 4 -o gpu.out\necho \"CUDA_VISIBLE_DEVICES=$CUDA_VISIBLE_DEVICES\"\necho \"GANTRY_JOB_CPUS=$GANTRY_JOB_CPUS\"\n",
    );
    let id: u64 = c
        .cli_ok(&["sbatch", "--parsable", s.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    let v = vars(&c.read("gpu.out"));
    let gpus: Vec<u32> = v["CUDA_VISIBLE_DEVICES"]
        .split(',')
        .map(|g| g.parse().unwrap())
        .collect();
    let cpus: Vec<u32> = v["GANTRY_JOB_CPUS"]
        .split(',')
        .map(|g| g.parse().unwrap())
        .collect();
    assert_eq!(gpus.len(), 4);
    // The declared node: GPUs 0-3 share NVLink (and NUMA 0-1), GPUs 4-7 likewise (NUMA 2-3).
    let quad = |g: u32| g / 4;
    assert!(
        gpus.iter().all(|&g| quad(g) == quad(gpus[0])),
        "GPUs {gpus:?} span both NVLink islands"
    );
    // 8 cores per NUMA domain; the quad's domains are 2q and 2q+1.
    let numa = |cpu: u32| cpu / 8;
    let q = quad(gpus[0]);
    assert!(
        cpus.iter().all(|&cpu| numa(cpu) / 2 == q),
        "CPUs {cpus:?} are not local to GPUs {gpus:?}"
    );
    c.cli_ok(&["scancel", &h.to_string()]);
}

#[test]
fn scancel_and_time_limits_end_jobs_as_cancelled_and_timeout() {
    let c = Cluster::start(Options::default());
    let long = c.write("long.sh", "#!/bin/bash\nsleep 300\n");
    let a: u64 = c
        .cli_ok(&["sbatch", "--parsable", long.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    c.wait_state(a, "RUNNING");
    c.cli_ok(&["scancel", &a.to_string()]);
    assert_eq!(c.wait_done(a)["state"], "CANCELLED");
    let b: u64 = c
        .cli_ok(&[
            "sbatch",
            "--parsable",
            "--time=0:02",
            long.to_str().unwrap(),
        ])
        .trim()
        .parse()
        .unwrap();
    let job = c.wait_done(b);
    assert_eq!(job["state"], "TIMEOUT", "{job}");
    // A job that ignores SIGTERM holds its nodes, COMPLETING, until SIGKILL ends its
    // processes; only then does the next job start there.
    let stubborn = c.write(
        "stubborn.sh",
        // Named, so that a later check cannot mistake a process that reused its pid
        // (pid_max may be 32768 on a busy test machine) for it.
        "#!/bin/bash\ntrap '' TERM\necho $$ > stubborn.pid\nexec -a gantry-stubborn sleep 300\n",
    );
    let whole = ["-p", "cpu", "-N", "2", "-n", "8"];
    let s = c.sbatch(&[&whole[..], &[stubborn.to_str().unwrap()]].concat());
    c.wait_state(s, "RUNNING");
    let after = c.write(
        "after.sh",
        // The first word of the process's command line, read by the shell itself: a
        // `grep` given the name would find it in its own command line if it took the
        // freed pid.
        "#!/bin/bash\npid=$(cat stubborn.pid)\nif IFS= read -r -d '' first < /proc/$pid/cmdline 2>/dev/null && [ \"$first\" = gantry-stubborn ]; then echo overlap; else echo clean; fi > after.out\n",
    );
    let n = c.sbatch(&[&whole[..], &[after.to_str().unwrap()]].concat());
    let since = Instant::now();
    while !c.work().join("stubborn.pid").exists() {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the job never wrote its pid"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.cli_ok(&["scancel", &s.to_string()]);
    let shown = c.cli_ok(&["squeue", "-h", "-o", "%i %t"]);
    assert!(shown.contains(&format!("{s} CG")), "{shown}");
    assert!(shown.contains(&format!("{n} PD")), "{shown}");
    assert!(
        c.cli_ok(&["squeue", "-h", "-t", "CG", "-o", "%i"])
            .contains(&s.to_string()),
        "squeue -t CG lists it"
    );
    assert_eq!(c.wait_done(s)["state"], "CANCELLED");
    assert_eq!(c.wait_done(n)["state"], "COMPLETED");
    assert_eq!(
        c.read("after.out").trim(),
        "clean",
        "the next job started beside the old one's processes; the controller's log:\n{}",
        c.controller_log()
    );
    // At its time limit, the same job shows COMPLETING until SIGKILL ends it, then
    // TIMEOUT.
    // Read from the event stream: COMPLETING lasts the kill grace (1 s here), which
    // polling from a busy machine can miss.
    std::fs::remove_file(c.work().join("stubborn.pid")).unwrap();
    let t = c.sbatch(&["--time=0:04", stubborn.to_str().unwrap()]);
    c.wait_state(t, "RUNNING");
    let watcher = c.spawn_cli(&["watch", "--json", "--until-done", "-j", &t.to_string()]);
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mut seen: Vec<String> = vec!["RUNNING".into()];
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let event: serde_json::Value = serde_json::from_str(line).unwrap();
        let state = event["state"].as_str().unwrap_or_default().to_string();
        if seen.last() != Some(&state) {
            seen.push(state);
        }
    }
    // The watch ends with the job's end (COMPLETING, its processes still there); the
    // job shows TIMEOUT once they are gone.
    assert_eq!(seen, ["RUNNING", "COMPLETING"]);
    assert_eq!(c.wait_done(t)["state"], "TIMEOUT");
    // An unknown id: Slurm's message and a failing exit code.
    let (code, _, err) = c.cli(&["scancel", "999999"]);
    assert_ne!(code, 0);
    assert!(err.contains("Invalid job id specified"), "{err}");
}

/// A state database written before the schema was versioned (testdata/state/README.md)
/// opens in this build: migrated, with every job, step and reservation as it was, and
/// new jobs numbered after the old ones.
#[test]
fn a_state_written_by_the_previous_build_opens_in_this_one() {
    let c = Cluster::start(Options {
        state_from: Some(previous_state()),
        ..Options::default()
    });
    shows_the_previous_state(&c);
}

fn previous_state() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/state/schema-0.db")
}

/// The same state copied into PostgreSQL (`gantryd copy-state`, as a site moving to two
/// controllers does) opens there the same.
#[test]
fn a_state_copied_into_postgresql_opens_there_as_it_was() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("state.db");
    std::fs::copy(previous_state(), &file).unwrap();
    let url = harness::postgres_database("copied");
    let out = std::process::Command::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_gantry")).with_file_name("gantryd"),
    )
    .args(["copy-state", file.to_str().unwrap(), &url])
    .output()
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("copied 27 log entries"), "{said}");
    // Into a state that is not empty: refused.
    let again = std::process::Command::new(
        std::path::Path::new(env!("CARGO_BIN_EXE_gantry")).with_file_name("gantryd"),
    )
    .args(["copy-state", file.to_str().unwrap(), &url])
    .output()
    .unwrap();
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("copy only into an empty state"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let c = Cluster::start(Options {
        postgres: Some(url),
        ..Options::default()
    });
    shows_the_previous_state(&c);
}

fn shows_the_previous_state(c: &Cluster) {
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        "1,2,3,6,7",
        "-o",
        "JobID,JobName,State,ExitCode",
        "-P",
        "-n",
    ]);
    let lines: Vec<&str> = acct.lines().filter(|l| !l.contains(".batch")).collect();
    assert_eq!(
        lines,
        [
            "1|ok|COMPLETED|0:0",
            "2|bad|FAILED|3:0",
            "3_1|arr|COMPLETED|0:0",
            "3_2|arr|COMPLETED|0:0",
            "3_3|arr|COMPLETED|0:0",
            "6|steps|COMPLETED|0:0",
            "6.0|true|COMPLETED|0:0",
            "6.1|false|FAILED|1:0",
            "7|cancelled|CANCELLED|0:0",
        ],
        "{acct}"
    );
    let held = c.job(8);
    assert_eq!(
        (held["state"].as_str(), held["reason"].as_str()),
        (Some("PENDING"), Some("JobHeldUser")),
        "{held}"
    );
    let shown = c.cli_ok(&["scontrol", "show", "job", "8"]);
    assert!(
        shown.contains("Comment=waits") && shown.contains("Nice=5"),
        "{shown}"
    );
    let resv = c.cli_ok(&["scontrol", "show", "reservation", "maint"]);
    assert!(
        resv.contains("Nodes=cpu01") && resv.contains("MAINT"),
        "{resv}"
    );
    let id = c.sbatch(&["-o", "/dev/null", "--wrap=true"]);
    assert_eq!(id, 9, "numbered after the old jobs");
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    c.cli_ok(&["scancel", "8"]);
    assert_eq!(c.wait_done(8)["state"], "CANCELLED");
}

#[test]
fn a_killed_controller_loses_no_acknowledged_job_and_runs_none_twice() {
    let mut c = Cluster::start(Options::default());
    let s = c.write(
        "mark.sh",
        "#!/bin/bash\n#SBATCH -o /dev/null\necho $SLURM_JOB_ID >> runs.log\nsleep 2\n",
    );
    let script = s.to_str().unwrap().to_string();
    let mut acked = Vec::new();
    for _ in 0..4 {
        acked.push(
            c.cli_ok(&["sbatch", "--parsable", &script])
                .trim()
                .parse::<u64>()
                .unwrap(),
        );
    }
    c.wait_state(acked[0], "RUNNING");
    // Submissions keep arriving while the controller dies.
    let submitter = {
        let cli = c.cli_command_line();
        let script = script.clone();
        std::thread::spawn(move || {
            let mut ok = Vec::new();
            for _ in 0..30 {
                if let Some(id) = harness::try_submit(&cli, &script) {
                    ok.push(id);
                }
                std::thread::sleep(Duration::from_millis(30));
            }
            ok
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    c.kill_controller();
    std::thread::sleep(Duration::from_millis(500));
    c.restart_controller();
    acked.extend(submitter.join().unwrap());
    assert!(
        acked.len() > 4,
        "some submissions were acknowledged around the restart"
    );
    let jobs = c.wait_all_done(&acked);
    assert_eq!(jobs.len(), acked.len(), "every acknowledged job is known");
    for j in &jobs {
        assert_eq!(j["state"], "COMPLETED", "{j}");
    }
    let runs = c.read("runs.log");
    let mut count: HashMap<u64, u32> = HashMap::new();
    for l in runs.lines() {
        *count.entry(l.trim().parse().unwrap()).or_default() += 1;
    }
    for id in &acked {
        assert_eq!(
            count.get(id),
            Some(&1),
            "job {id} ran {:?} times",
            count.get(id)
        );
    }
}

#[test]
fn a_killed_agent_takes_its_node_down_and_its_jobs_requeue_or_fail() {
    let mut c = Cluster::start(Options::default());
    let s = c.write("sit.sh", "#!/bin/bash\n#SBATCH -N 1 -c 4\nsleep 300\n");
    let script = s.to_str().unwrap().to_string();
    let fails: u64 = c
        .cli_ok(&["sbatch", "--parsable", "--no-requeue", &script])
        .trim()
        .parse()
        .unwrap();
    let requeues: u64 = c
        .cli_ok(&["sbatch", "--parsable", "--requeue", &script])
        .trim()
        .parse()
        .unwrap();
    let jf = c.wait_state(fails, "RUNNING");
    let jr = c.wait_state(requeues, "RUNNING");
    let (nf, nr) = (
        jf["node_list"].as_str().unwrap().to_string(),
        jr["node_list"].as_str().unwrap().to_string(),
    );
    assert_ne!(nf, nr, "each fills a CPU node");
    c.kill_agent(&nf);
    let j = c.wait_done(fails);
    assert_eq!(j["state"], "NODE_FAIL");
    let node = c.node(&nf);
    assert_eq!(node["state"], "DOWN", "{node}");
    c.kill_agent(&nr);
    let j = c.wait_until(requeues, |j| j["requeue_count"] == 1);
    assert!(
        j["state"] == "PENDING" || j["state"] == "REQUEUED" || j["state"] == "RUNNING",
        "{j}"
    );
    // It comes back when its agent does, and the requeued job runs again.
    c.start_agent(&nf);
    let j = c.wait_state(requeues, "RUNNING");
    assert_eq!(j["node_list"], nf.as_str(), "the only node up");
    assert_ne!(c.node(&nf)["state"], "DOWN");
    c.cli_ok(&["scancel", &requeues.to_string()]);
}

#[test]
fn users_act_only_on_their_own_jobs_and_only_admins_load_policies() {
    let c = Cluster::start(Options::default());
    let alice = c.token("alice", false);
    let bob = c.token("bob", false);
    let s = c.write("sit.sh", "#!/bin/bash\nsleep 300\n");
    let id: u64 = c
        .cli_as(&alice, &["sbatch", "--parsable", s.to_str().unwrap()])
        .1
        .trim()
        .parse()
        .unwrap();
    let (code, _, err) = c.cli_as(&bob, &["scancel", &id.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("permission denied"), "{err}");
    let (code, _, err) = c.cli_as(&bob, &["scontrol", "show", "job", &id.to_string()]);
    assert_ne!(code, 0);
    assert!(err.contains("permission denied"), "{err}");
    let component = harness::policy_component("xfactor-priority");
    let (code, _, err) = c.cli_as(
        &bob,
        &["policy", "load", "priority", component.to_str().unwrap()],
    );
    assert_ne!(code, 0);
    assert!(err.contains("needs an admin"), "{err}");
    let (code, _, err) = c.cli_as(&bob, &["node", "drain", "cpu01", "--reason", "x"]);
    assert_ne!(code, 0);
    assert!(err.contains("needs an admin"), "{err}");
    // A forged token is refused outright.
    let (code, _, err) = c.cli_as("v1.alice.0.admin.0.00", &["squeue"]);
    assert_ne!(code, 0);
    assert!(err.contains("not authenticated"), "{err}");
    let (code, _, _) = c.cli_as(&alice, &["scancel", &id.to_string()]);
    assert_eq!(code, 0);
    assert_eq!(c.wait_done(id)["state"], "CANCELLED");
}

#[test]
fn bad_requests_get_clear_errors() {
    let c = Cluster::start(Options::default());
    let bad = c.write("bad.sh", "#!/bin/bash\n#SBATCH --ntasks=four\necho\n");
    let (code, _, err) = c.cli(&["sbatch", bad.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("bad.sh") && err.contains("four"), "{err}");
    let unknown = c.write("u.sh", "#!/bin/bash\n#SBATCH --frobnicate\necho\n");
    let (code, _, err) = c.cli(&["sbatch", unknown.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("--frobnicate"), "{err}");
    let ok = c.write("ok.sh", "#!/bin/bash\necho\n");
    let (code, _, err) = c.cli(&["sbatch", "-p", "nosuch", ok.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("unknown partition 'nosuch'"), "{err}");
    let (code, _, err) = c.cli(&[
        "sbatch",
        "-p",
        "gpu",
        "--gpus-per-node=16",
        ok.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("can never run"), "{err}");
    let (code, _, err) = c.cli(&[
        "sbatch",
        "--dependency=afterok:424242",
        ok.to_str().unwrap(),
    ]);
    assert_ne!(code, 0);
    assert!(err.contains("424242"), "{err}");
    let noshebang = c.write("n.sh", "echo hi\n");
    let (code, _, err) = c.cli(&["sbatch", noshebang.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("#!"), "{err}");
}

#[test]
fn a_priority_swap_changes_what_starts_next_and_loses_nothing() {
    let mut c = Cluster::start(Options {
        wasm_policies: true,
        ..Options::default()
    });
    // Both CPU nodes blocked; a long job queued, then a short one.
    let block = c.write(
        "block.sh",
        "#!/bin/bash\n#SBATCH -N 1 -c 4 -o /dev/null\nwhile [ ! -f release-$SLURM_JOB_ID ]; do sleep 0.2; done\n",
    );
    let b1: u64 = c
        .cli_ok(&["sbatch", "--parsable", block.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    let b2: u64 = c
        .cli_ok(&["sbatch", "--parsable", block.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    c.wait_state(b1, "RUNNING");
    c.wait_state(b2, "RUNNING");
    let work = c.write(
        "w.sh",
        "#!/bin/bash\n#SBATCH -N 1 -c 4 -o /dev/null\necho $SLURM_JOB_ID >> order.log\nsleep 1\n",
    );
    let w = work.to_str().unwrap();
    let long: u64 = c
        .cli_ok(&["sbatch", "--parsable", "-t", "50:00", w])
        .trim()
        .parse()
        .unwrap();
    let short: u64 = c
        .cli_ok(&["sbatch", "--parsable", "-t", "1:00", w])
        .trim()
        .parse()
        .unwrap();
    // Multifactor weighs age, and both are seconds old: the older, long job leads.
    std::thread::sleep(Duration::from_millis(600));
    let pending = |c: &Cluster| -> Vec<u64> {
        c.cli_ok(&["squeue", "-h", "-t", "PD", "-o", "%i"])
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect()
    };
    assert_eq!(
        pending(&c),
        vec![long, short],
        "queue order before the swap"
    );
    sprio_shows_the_multifactor_breakdown(&c, long, short);
    // The expansion-factor policy prefers the short job once it has waited a little.
    let component = harness::policy_component("xfactor-priority");
    let loaded = c.cli_ok(&["policy", "load", "priority", component.to_str().unwrap()]);
    assert!(loaded.contains("active"), "{loaded}");
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(pending(&c), vec![short, long], "queue order after the swap");
    // xfactor explains itself by factors of its own, which Slurm has no letter for.
    let out = c.cli_ok(&["sprio", "-S", "-y"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        ["JOBID", "PARTITION", "PRIORITY", "XFACTOR", "GPUBOOST"],
        "{out}"
    );
    let ids: Vec<u64> = lines[1..].iter().map(|l| l[0].parse().unwrap()).collect();
    assert_eq!(ids, [short, long], "in the order the queue uses: {out}");
    for l in &lines[1..] {
        let (priority, x): (i64, i64) = (l[2].parse().unwrap(), l[3].parse().unwrap());
        assert!((priority - x).abs() <= 1 && l[4] == "0", "{out}");
    }
    // One node frees: the short job starts next, the blockers were never touched.
    std::fs::write(c.work().join(format!("release-{b1}")), "").unwrap();
    c.wait_state(short, "RUNNING");
    assert_eq!(c.job(long)["state"], "PENDING");
    assert_eq!(c.job(b2)["state"], "RUNNING");
    std::fs::write(c.work().join(format!("release-{b2}")), "").unwrap();
    let jobs = c.wait_all_done(&[b1, b2, long, short]);
    assert!(jobs.iter().all(|j| j["state"] == "COMPLETED"), "{jobs:?}");
    let started: Vec<u64> = c
        .read("order.log")
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(started, vec![short, long], "each ran once, short first");
    // The active version survives a controller crash.
    c.kill_controller();
    c.restart_controller();
    let list: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["policy", "list", "--json"])).unwrap();
    let active: Vec<&str> = list["slots"][0]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["active"] == true)
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(active, vec!["xfactor"], "{list}");
    let back = c.cli_ok(&["policy", "rollback", "priority"]);
    assert!(back.contains("multifactor"), "{back}");
}

/// `sprio` under the multifactor component: each waiting job's priority and the five
/// factors it weighs, which add up to that priority (within rounding).
fn sprio_shows_the_multifactor_breakdown(c: &Cluster, long: u64, short: u64) {
    let out = c.cli_ok(&["sprio"]);
    let lines: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "JOBID",
            "PARTITION",
            "PRIORITY",
            "AGE",
            "FAIRSHARE",
            "JOBSIZE",
            "PARTITION",
            "QOS"
        ],
        "{out}"
    );
    let ids: Vec<u64> = lines[1..].iter().map(|l| l[0].parse().unwrap()).collect();
    assert_eq!(ids, [long, short], "waiting jobs by id: {out}");
    for l in &lines[1..] {
        let priority: f64 = l[2].parse().unwrap();
        let sum: f64 = l[3..].iter().map(|v| v.parse::<f64>().unwrap()).sum();
        assert!((sum - priority).abs() <= 5.0, "the factors add up: {l:?}");
    }
    let v: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["sprio", "--json", "-j", &long.to_string()])).unwrap();
    let job = &v["jobs"][0];
    assert_eq!(job["job_id"], long, "{v}");
    assert_eq!(v["jobs"].as_array().unwrap().len(), 1, "{v}");
    let fairshare = &job["factors"]["FAIRSHARE"];
    assert!(
        (0.0..=1.0).contains(&fairshare["value"].as_f64().unwrap()),
        "{v}"
    );
    assert_eq!(
        v["weights"]["FAIRSHARE"], 10000.0,
        "the default weight: {v}"
    );
    let long_format = c.cli_ok(&["sprio", "-l", "-h", "-j", &short.to_string()]);
    let cells: Vec<&str> = long_format.split_whitespace().collect();
    assert_eq!(cells[0], short.to_string(), "{long_format}");
    assert_eq!(cells.last(), Some(&"0"), "nice, last: {long_format}");
    let weights = c.cli_ok(&["sprio", "-w", "-h"]);
    assert_eq!(
        weights.split_whitespace().collect::<Vec<_>>(),
        ["Weights", "1000", "10000", "1000", "1000", "2000"],
        "{weights}"
    );
    let norm = c.cli_ok(&["sprio", "-n", "-h", "-o", "%i %f"]);
    assert!(
        norm.lines().all(|l| l
            .split_whitespace()
            .nth(1)
            .is_some_and(|f| f.starts_with("0.") || f.starts_with("1."))),
        "{norm}"
    );
    let none = c.cli_ok(&["sprio", "-j", "999999"]);
    assert_eq!(
        none.trim(),
        "Unable to find jobs matching user/id(s) specified"
    );
}

#[test]
fn an_agent_restart_reports_its_lost_jobs_and_ends_their_processes() {
    let mut c = Cluster::start(Options::default());
    let s = c.write(
        "loop.sh",
        "#!/bin/bash\n#SBATCH -p gpu -o /dev/null\nwhile true; do date +%s > alive-$SLURM_JOB_ID; sleep 0.2; done\n",
    );
    let id: u64 = c
        .cli_ok(&["sbatch", "--parsable", "--no-requeue", s.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    c.wait_state(id, "RUNNING");
    // RUNNING is the controller's decision; wait until the job's processes are up.
    let alive = format!("alive-{id}");
    let since = std::time::Instant::now();
    while !c.work().join(&alive).exists() {
        assert!(
            since.elapsed() < Duration::from_secs(60),
            "the job never started"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    c.kill_agent("gpu01");
    c.start_agent("gpu01");
    let j = c.wait_done(id);
    assert_eq!(j["state"], "NODE_FAIL", "{j}");
    // Its processes are gone: the heartbeat file stops changing.
    let before = c.read(&alive);
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        c.read(&alive),
        before,
        "the lost job's processes were killed"
    );
}

#[test]
fn watch_streams_a_jobs_events_until_it_is_done() {
    let c = Cluster::start(Options::default());
    let s = c.write(
        "w.sh",
        "#!/bin/bash\n#SBATCH -o /dev/null\nwhile [ ! -f go ]; do sleep 0.1; done\n",
    );
    let id: u64 = c
        .cli_ok(&["sbatch", "--parsable", s.to_str().unwrap()])
        .trim()
        .parse()
        .unwrap();
    c.wait_state(id, "RUNNING");
    let watcher = c.spawn_cli(&["watch", "--json", "--until-done", "-j", &id.to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    std::fs::write(c.work().join("go"), "").unwrap();
    let out = watcher.wait_with_output().unwrap();
    assert!(out.status.success());
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let last = events.last().expect("at least the end");
    assert_eq!(
        (last["job_id"].as_u64(), last["state"].as_str()),
        (Some(id), Some("COMPLETED")),
        "{events:?}"
    );
}

#[test]
fn configured_policy_files_replace_the_builtins_at_start() {
    let component = harness::policy_component("xfactor-priority");
    let c = Cluster::start(Options {
        wasm_policies: true,
        extra_config: format!(
            "[policies.priority]\ncomponent = \"{}\"\n",
            component.display()
        ),
        ..Options::default()
    });
    let list: serde_json::Value =
        serde_json::from_str(&c.cli_ok(&["policy", "list", "--json"])).unwrap();
    let v = &list["slots"][0]["versions"][0];
    assert_eq!(
        (v["name"].as_str(), v["active"].as_bool()),
        (Some("xfactor"), Some(true)),
        "{list}"
    );
}

#[test]
fn jobs_run_as_the_submitting_user_when_the_agent_is_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: the agents are not root here, so they cannot switch users");
        return;
    }
    let c = Cluster::start(Options::default());
    let nobody = c.token_for("nobody", 65534);
    // The job writes its output as its user: into a directory that user may write.
    let out = c.work().join("nobody");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::chown(&out, Some(65534), Some(65534)).unwrap();
    let s = c.write("id.sh", "#!/bin/bash\n#SBATCH -o nobody/id-%j.out\nid -u\n");
    let (code, out, err) = c.cli_as(&nobody, &["sbatch", "--parsable", s.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    let id: u64 = out.trim().parse().unwrap();
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    assert_eq!(c.read(&format!("nobody/id-{id}.out")).trim(), "65534");
}

/// Activation you can trust on a live controller: a version that fails on the last
/// cycle's batch is refused by `policy load` and `policy activate` (exit non-zero, the
/// active one stays, the failed one marked unhealthy); `policy activate` makes a
/// healthy one active with the one it replaced as its fallback; `policy list` says who
/// answers and what the slot falls back to.
#[test]
fn a_failing_version_is_refused_before_activation_and_fallbacks_follow() {
    let c = Cluster::start(Options {
        wasm_policies: true,
        ..Options::default()
    });
    // A job waiting behind a running one: every cycle decides a priority batch.
    let running = c.sbatch(&["-w", "cpu01", "-c", "4", "--wrap", "sleep 300"]);
    c.wait_state(running, "RUNNING");
    let waiting = c.sbatch(&["-w", "cpu01", "-c", "4", "--wrap", "true"]);
    std::thread::sleep(Duration::from_millis(1500));

    let panic = harness::policy_component("hostile-panic");
    let (code, _, err) = c.cli(&["policy", "load", "priority", panic.to_str().unwrap()]);
    assert_ne!(code, 0, "a version that fails its trial is not activated");
    assert!(
        err.contains("failed on the last cycle's batch")
            && err.contains("hostile policy panics")
            && err.contains("v1 stays active"),
        "{err}"
    );
    let list = |c: &Cluster| -> serde_json::Value {
        serde_json::from_str(&c.cli_ok(&["policy", "list", "--json"])).unwrap()
    };
    let slot = list(&c)["slots"][0].clone();
    assert_eq!(slot["versions"][0]["active"], true, "{slot}");
    assert_eq!(slot["versions"][1]["healthy"], false, "{slot}");
    assert_eq!(slot["last_failure"]["version"], 2, "{slot}");

    // Loaded without activating, then activated: v1 becomes its fallback.
    let xfactor = harness::policy_component("xfactor-priority");
    c.cli_ok(&[
        "policy",
        "load",
        "--no-activate",
        "priority",
        xfactor.to_str().unwrap(),
    ]);
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(&alice, &["policy", "activate", "priority", "3"]);
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    let out = c.cli_ok(&["policy", "activate", "priority", "3"]);
    assert!(out.contains("version 3 (xfactor) active"), "{out}");
    std::thread::sleep(Duration::from_millis(1500));
    let slot = list(&c)["slots"][0].clone();
    assert_eq!(slot["fallbacks"], serde_json::json!([1]), "{slot}");
    assert!(
        slot["answering"]
            .as_str()
            .unwrap()
            .starts_with("v3 xfactor"),
        "{slot}"
    );
    let (code, _, err) = c.cli(&["policy", "activate", "priority", "2"]);
    assert_ne!(code, 0, "still failing: {err}");
    assert!(err.contains("v3 stays active"), "{err}");
    let (code, _, err) = c.cli(&["policy", "rollback", "priority", "--to", "2"]);
    assert_ne!(code, 0, "rollback --to is tried too: {err}");
    // A shadow over time: v1 beside v3 on the next two cycles.
    let out = c.cli_ok(&["policy", "shadow", "priority", "1", "--cycles", "2"]);
    assert!(out.contains("next 2 cycles"), "{out}");
    let since = std::time::Instant::now();
    let shadow = loop {
        let w = list(&c)["slots"][0]["shadowing"].clone();
        if w["cycles"] == 2 || since.elapsed() > Duration::from_secs(20) {
            break w;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(shadow["version"], 1, "{shadow}");
    assert_eq!(
        (shadow["cycles"].as_u64(), shadow["cycles_left"].as_u64()),
        (Some(2), Some(0)),
        "{shadow}"
    );
    let table = c.cli_ok(&["policy", "list"]);
    assert!(
        table.contains("priority: answered by v3 xfactor")
            && table.contains("fallbacks: v1")
            && table.contains("shadowing v1: 2 cycles of 2"),
        "{table}"
    );
    let back = c.cli_ok(&["policy", "rollback", "priority"]);
    assert!(back.contains("version 1 (multifactor) active"), "{back}");

    // A policy written in C loads and answers as any other; one whose runtime imports
    // WASI is refused at load, naming what it imports.
    let in_c = harness::policy_component("xfactor-priority-c");
    let out = c.cli_ok(&["policy", "load", "priority", in_c.to_str().unwrap()]);
    assert!(
        out.contains("version 4 loaded") && out.ends_with("active\n"),
        "{out}"
    );
    let since = std::time::Instant::now();
    while !list(&c)["slots"][0]["answering"]
        .as_str()
        .unwrap()
        .contains("xfactor-c")
    {
        assert!(since.elapsed() < Duration::from_secs(20), "{}", list(&c));
        std::thread::sleep(Duration::from_millis(200));
    }
    let wasi = harness::policy_component("hostile-wasi");
    let (code, _, err) = c.cli(&["policy", "load", "priority", wasi.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains("imports what Gantry does not offer") && err.contains("wasi:"),
        "{err}"
    );
    c.cli_ok(&["scancel", &running.to_string(), &waiting.to_string()]);
}
