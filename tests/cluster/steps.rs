//! Job steps end to end: `srun` inside a batch job launches tasks on every node of the
//! allocation, with Slurm's layout and per-task variables, CPU and GPU binding; its output
//! streams back; exit codes, --kill-on-bad-exit, Ctrl-C, `scancel JOB.STEP` and job
//! cancellation reach every task; steps are in accounting. And `srun` and `salloc`
//! outside a job make their own allocation.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use crate::harness::{Cluster, Options};

/// A batch script that puts the Slurm links on its PATH first.
fn script(c: &Cluster, directives: &str, body: &str) -> String {
    format!(
        "#!/bin/bash\n{directives}\nexport PATH={}:$PATH\n{body}\n",
        c.slurm_bin().display()
    )
}

fn lines_with(text: &str, prefix: &str) -> Vec<Vec<String>> {
    text.lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}

#[test]
fn srun_in_a_batch_job_runs_every_task_on_the_allocations_nodes() {
    let c = Cluster::start(Options::default());
    let body = r#"
srun -l bash -c 'echo TASK $SLURM_PROCID $SLURM_LOCALID $SLURM_NODEID $SLURM_STEP_ID $SLURM_NTASKS $SLURM_STEP_TASKS_PER_NODE $SLURMD_NODENAME $GANTRY_TASK_CPUS $SLURM_STEP_NODELIST'
echo "FIRST=$?"
srun -N1 -n1 bash -c 'exit 3'
echo "SECOND=$?"
srun -n3 --distribution=cyclic bash -c 'echo CYCLIC $SLURM_PROCID $SLURMD_NODENAME'
srun -n1 -o step-%j.%s-%t.out bash -c 'echo to a file'
echo piped | srun -n2 -l cat
"#;
    let path = c.write(
        "steps.sh",
        &script(
            &c,
            "#SBATCH -p cpu -N 2 --ntasks-per-node=2 -o steps.out",
            body,
        ),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    let job = c.wait_done(id);
    let out = c.read("steps.out");
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");

    let tasks = lines_with(&out, "");
    let tasks: Vec<&Vec<String>> = tasks
        .iter()
        .filter(|w| w.get(1).map(String::as_str) == Some("TASK"))
        .collect();
    assert_eq!(tasks.len(), 4, "{out}");
    let mut by_node: HashMap<String, Vec<(u32, u32)>> = HashMap::new();
    let mut cpus: HashMap<String, Vec<String>> = HashMap::new();
    for w in &tasks {
        // "N: TASK procid localid nodeid step ntasks per-node node cpus nodelist"
        let label: u32 = w[0].trim_end_matches(':').parse().unwrap();
        let procid: u32 = w[2].parse().unwrap();
        assert_eq!(label, procid, "-l labels a line with its task: {out}");
        assert_eq!(w[5], "0", "the first step is step 0");
        assert_eq!(w[6], "4");
        assert_eq!(w[7], "2(x2)");
        assert_eq!(w[10], "cpu[01-02]");
        let node = w[8].clone();
        let nodeid: u32 = w[4].parse().unwrap();
        assert_eq!(nodeid, if node == "cpu01" { 0 } else { 1 }, "{out}");
        by_node
            .entry(node.clone())
            .or_default()
            .push((procid, w[3].parse().unwrap()));
        cpus.entry(node).or_default().push(w[9].clone());
    }
    for (node, mut t) in by_node {
        t.sort();
        let want = if node == "cpu01" {
            vec![(0, 0), (1, 1)]
        } else {
            vec![(2, 0), (3, 1)]
        };
        assert_eq!(t, want, "block layout on {node}: {out}");
    }
    for (node, sets) in cpus {
        assert_ne!(
            sets[0], sets[1],
            "each task on {node} has its own cores: {out}"
        );
    }
    assert!(out.contains("FIRST=0"), "{out}");
    assert!(
        out.contains("SECOND=3"),
        "srun exits with the task's code: {out}"
    );
    assert!(
        out.contains("srun: error: cpu01: task 0: Exited with exit code 3"),
        "{out}"
    );
    let cyclic: BTreeSet<(String, String)> = lines_with(&out, "CYCLIC ")
        .into_iter()
        .map(|w| (w[0].clone(), w[1].clone()))
        .collect();
    let want: BTreeSet<(String, String)> = [("0", "cpu01"), ("1", "cpu02"), ("2", "cpu01")]
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(cyclic, want, "{out}");
    assert_eq!(c.read(&format!("step-{id}.3-0.out")), "to a file\n");
    // srun's standard input goes to task 0 only.
    assert!(out.contains("0: piped\n"), "{out}");
    assert!(!out.contains("1: piped"), "{out}");

    // Accounting: the batch step and each srun, with their own states and exit codes.
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &id.to_string(),
        "-P",
        "-n",
        "-o",
        "JobID,State,ExitCode,NNodes,NTasks",
    ]);
    let rows: Vec<&str> = acct.lines().collect();
    assert_eq!(
        rows,
        vec![
            format!("{id}|COMPLETED|0:0|2|4"),
            format!("{id}.batch|COMPLETED|0:0|1|1"),
            format!("{id}.0|COMPLETED|0:0|2|4"),
            format!("{id}.1|FAILED|3:0|1|1"),
            format!("{id}.2|COMPLETED|0:0|2|3"),
            format!("{id}.3|COMPLETED|0:0|1|1"),
            format!("{id}.4|COMPLETED|0:0|2|2"),
        ],
        "{acct}"
    );
    // -j may be repeated; Elapsed is HH:MM:SS, as sacct prints it.
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &id.to_string(),
        "-j",
        "999999",
        "-X",
        "-P",
        "-n",
        "-o",
        "JobID,Elapsed",
    ]);
    let (job, elapsed) = acct.trim().split_once('|').unwrap_or_default();
    assert_eq!(job, id.to_string(), "{acct}");
    assert!(
        elapsed.len() == 8 && elapsed.as_bytes()[2] == b':' && elapsed.as_bytes()[5] == b':',
        "{acct}"
    );
}

#[test]
fn a_step_asking_more_than_the_allocation_fails_at_once() {
    let c = Cluster::start(Options::default());
    let body = "srun -N3 true; echo \"NODES=$?\"\nsrun -n9 true; echo \"TASKS=$?\"";
    let path = c.write(
        "too-much.sh",
        &script(&c, "#SBATCH -p cpu -N 2 -n 2 -o too-much.out", body),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    c.wait_done(id);
    let out = c.read("too-much.out");
    assert!(out.contains("NODES=1"), "{out}");
    assert!(out.contains("TASKS=1"), "{out}");
    assert!(
        out.contains("Unable to create step for job")
            && out.contains("Requested node configuration is not available"),
        "{out}"
    );
    assert!(
        out.contains("More processors requested than permitted"),
        "{out}"
    );
}

#[test]
fn srun_and_salloc_outside_a_job_make_their_own_allocation() {
    let c = Cluster::start(Options::default());
    let (code, out, err) = c.cli(&[
        "srun",
        "-p",
        "cpu",
        "-N2",
        "-n4",
        "-l",
        "bash",
        "-c",
        "echo $SLURM_PROCID on $SLURMD_NODENAME of $SLURM_JOB_NODELIST",
    ]);
    assert_eq!(code, 0, "{err}");
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        vec![
            "0: 0 on cpu01 of cpu[01-02]",
            "1: 1 on cpu01 of cpu[01-02]",
            "2: 2 on cpu02 of cpu[01-02]",
            "3: 3 on cpu02 of cpu[01-02]"
        ],
        "{err}"
    );
    let (code, _, _) = c.cli(&["srun", "-p", "cpu", "bash", "-c", "exit 7"]);
    assert_eq!(code, 7);
    let inside = format!(
        "echo ALLOC $SLURM_JOB_NUM_NODES $SLURM_JOB_NODELIST; {}/srun -l bash -c 'echo $SLURMD_NODENAME' | sort",
        c.slurm_bin().display()
    );
    let (code, out, err) = c.cli(&["salloc", "-p", "cpu", "-N2", "bash", "-c", &inside]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("ALLOC 2 cpu[01-02]"), "{out}");
    assert!(
        out.contains("0: cpu01") && out.contains("1: cpu02"),
        "{out}"
    );
    assert!(err.contains("salloc: Granted job allocation"), "{err}");
    // The allocations ended with their commands' codes.
    let acct = c.cli_ok(&["sacct", "-X", "-P", "-n", "-o", "JobID,State,ExitCode"]);
    let states: Vec<&str> = acct
        .lines()
        .map(|l| l.split('|').nth(1).unwrap_or(""))
        .collect();
    assert_eq!(states, vec!["COMPLETED", "FAILED", "COMPLETED"], "{acct}");

    // srun --pty: an interactive shell in a terminal on the allocation's first node.
    let (srun, _) = c.program(&["srun"]);
    let mut shell = std::process::Command::new(srun)
        .args(["-p", "cpu", "--pty", "bash", "--norc", "-i"])
        .current_dir(c.work())
        .env("GANTRY_CONTROLLER", c.socket())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut keys = shell.stdin.take().unwrap();
        keys.write_all(b"tty; test -t 0 && echo IS-A-TERMINAL; echo $((6*7)); exit 3\n")
            .unwrap();
    }
    let out = shell.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("/dev/pts/"), "{text}");
    assert!(text.contains("IS-A-TERMINAL"), "{text}");
    assert!(text.contains("42"), "{text}");
}

/// `srun -N2 -n2 bash -c COMMAND` outside a job, in the background, once both its tasks
/// (which `exec -a MARKER`) run.
fn two_sleeping_tasks(c: &Cluster, command: &str, marker: &str) -> std::process::Child {
    let (srun, _) = c.program(&["srun"]);
    let child = std::process::Command::new(srun)
        .args(["-p", "cpu", "-N2", "-n2", "bash", "-c", command])
        .current_dir(c.work())
        .env("GANTRY_CONTROLLER", c.socket())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    wait_for("both tasks run", || pids_with(marker).len() == 2);
    child
}

/// Pids of processes whose command line starts with `marker` (tasks that `exec -a` it;
/// not the srun whose arguments hold it).
fn pids_with(marker: &str) -> Vec<String> {
    let out = std::process::Command::new("pgrep")
        .args(["-f", &format!("^{marker}")])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(String::from)
        .collect()
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let since = Instant::now();
    while !done() {
        assert!(since.elapsed() < Duration::from_secs(30), "never: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn failing_tasks_ctrl_c_and_cancellation_end_a_steps_tasks_on_every_node() {
    let c = Cluster::start(Options::default());
    // --kill-on-bad-exit: task 1 fails, its sibling sleeping on the other node ends.
    let body = "srun -N2 -n2 --kill-on-bad-exit bash -c 'if [ $SLURM_PROCID = 1 ]; then exit 5; fi; sleep 300'\necho \"KILLED=$?\"";
    let path = c.write(
        "kill.sh",
        &script(&c, "#SBATCH -p cpu -N 2 -n 2 -o kill.out", body),
    );
    let started = Instant::now();
    let id = c.sbatch(&[path.to_str().unwrap()]);
    c.wait_done(id);
    let out = c.read("kill.out");
    assert!(
        out.contains("KILLED=143") || out.contains("KILLED=5"),
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{out}");

    // Ctrl-C (SIGINT to srun) stops the step; srun exits with what the tasks did.
    let marker = format!("step-ctrl-c-{}", std::process::id());
    let mut child = two_sleeping_tasks(&c, &format!("exec -a {marker} sleep 300"), &marker);
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "SIGINT ended the tasks");
    wait_for("no task left", || pids_with(&marker).is_empty());

    // Tasks that ignore SIGINT: a second Ctrl-C within a second ends the step.
    let marker = format!("step-ctrl-c-twice-{}", std::process::id());
    let mut child = two_sleeping_tasks(
        &c,
        &format!("trap '' INT; exec -a {marker} sleep 300"),
        &marker,
    );
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(pids_with(&marker).len(), 2, "the tasks ignore one SIGINT");
    // SAFETY: as above.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_ne!(status.code(), Some(0));
    wait_for("no task left", || pids_with(&marker).is_empty());

    // A step ends with its job's time limit, on every node.
    let marker = format!("step-limit-{}", std::process::id());
    let body = format!("srun -N2 -n2 bash -c 'exec -a {marker} sleep 300'");
    let path = c.write(
        "limit.sh",
        &script(&c, "#SBATCH -p cpu -N 2 -n 2 -t 0:03 -o limit.out", &body),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    wait_for("two tasks run", || pids_with(&marker).len() == 2);
    assert_eq!(c.wait_done(id)["state"], "TIMEOUT");
    wait_for("every task gone", || pids_with(&marker).is_empty());

    // scancel of the job ends a running step's tasks on every node.
    let marker = format!("step-cancel-{}", std::process::id());
    let body = format!("srun -N2 -n4 bash -c 'exec -a {marker} sleep 300'");
    let path = c.write(
        "cancel.sh",
        &script(&c, "#SBATCH -p cpu -N 2 -n 4 -o cancel.out", &body),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    wait_for("four tasks run", || pids_with(&marker).len() == 4);
    let queue = c.cli_ok(&["squeue", "-s", "-h", "-o", "%i %j %N"]);
    assert!(
        queue.contains(&format!("{id}.0 bash cpu[01-02]")),
        "squeue -s lists the running step: {queue}"
    );
    let shown = c.cli_ok(&["scontrol", "show", "step", &format!("{id}.0")]);
    for want in [
        format!("StepId={id}.0 "),
        "State=RUNNING".into(),
        "NodeList=cpu[01-02] Nodes=2 Tasks=4".into(),
    ] {
        assert!(shown.contains(&want), "{want}: {shown}");
    }
    let all = c.cli_ok(&["scontrol", "show", "step"]);
    assert!(all.contains(&format!("StepId={id}.0 ")), "{all}");
    let (code, _, err) = c.cli(&["scontrol", "show", "step", &format!("{id}.7")]);
    assert_eq!(code, 1);
    assert!(err.contains("Invalid job step id specified"), "{err}");
    c.cli_ok(&["scancel", &id.to_string()]);
    wait_for("every task gone", || pids_with(&marker).is_empty());
    assert_eq!(c.wait_done(id)["state"], "CANCELLED");

    // scancel JOB.STEP ends the step only; the batch script goes on.
    let marker = format!("step-only-{}", std::process::id());
    let body =
        format!("srun -n2 bash -c 'exec -a {marker} sleep 300'\necho \"STEP=$?\"\necho after");
    let path = c.write(
        "step-cancel.sh",
        &script(&c, "#SBATCH -p cpu -N 2 -n 2 -o step-cancel.out", &body),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    wait_for("two tasks run", || pids_with(&marker).len() == 2);
    c.cli_ok(&["scancel", &format!("{id}.0")]);
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    let out = c.read("step-cancel.out");
    assert!(out.contains("after"), "{out}");
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &id.to_string(),
        "-P",
        "-n",
        "-o",
        "JobID,State",
    ]);
    assert!(acct.contains(&format!("{id}.0|CANCELLED")), "{acct}");
}

/// Node names in /etc/hosts (loopback) while a test needs them to resolve, as a site's
/// DNS makes them; removed when the last test holding them drops its guard. Needs root.
struct HostNames;

/// How many tests of this process hold the entries.
static HOST_NAME_USERS: std::sync::Mutex<u32> = std::sync::Mutex::new(0);

fn hosts_marker() -> String {
    format!("# gantry-test {}", std::process::id())
}

impl HostNames {
    fn add(names: &[String]) -> Option<Self> {
        let mut users = HOST_NAME_USERS.lock().unwrap_or_else(|p| p.into_inner());
        if *users == 0 {
            let resolves = |n: &str| std::net::ToSocketAddrs::to_socket_addrs(&(n, 1)).is_ok();
            if !names.iter().all(|n| resolves(n)) {
                // SAFETY: geteuid has no preconditions.
                if unsafe { libc::geteuid() } != 0 {
                    return None;
                }
                let mut hosts = std::fs::read_to_string("/etc/hosts").ok()?;
                if !hosts.ends_with('\n') {
                    hosts.push('\n');
                }
                hosts.push_str(&format!(
                    "127.0.0.1 {} {}\n",
                    names.join(" "),
                    hosts_marker()
                ));
                std::fs::write("/etc/hosts", hosts).ok()?;
            }
        }
        *users += 1;
        Some(Self)
    }
}

impl Drop for HostNames {
    fn drop(&mut self) {
        let mut users = HOST_NAME_USERS.lock().unwrap_or_else(|p| p.into_inner());
        *users -= 1;
        if *users > 0 {
            return;
        }
        let marker = hosts_marker();
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            if hosts.contains(&marker) {
                let kept: String = hosts
                    .lines()
                    .filter(|l| !l.contains(&marker))
                    .map(|l| format!("{l}\n"))
                    .collect();
                let _ = std::fs::write("/etc/hosts", kept);
            }
        }
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap()
}

#[test]
fn a_pretraining_job_over_eight_gpu_nodes_meets_at_its_first_node() {
    let names: Vec<String> = (1..=8).map(|i| format!("gpu{i:02}")).collect();
    let Some(_hosts) = HostNames::add(&names) else {
        eprintln!("skipped: the node names need /etc/hosts entries, which need root");
        return;
    };
    let c = Cluster::start(Options {
        eight_gpu_nodes: true,
        ..Options::default()
    });
    let program = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/programs/rendezvous.py"
    );
    // The usual multi-node pre-training script.
    let body = format!(
        "export MASTER_ADDR=$(scontrol show hostnames | head -n 1)\n\
         export MASTER_PORT={}\n\
         echo MASTER_ADDR=$MASTER_ADDR\n\
         echo MEM=$SLURM_MEM_PER_NODE\n\
         srun --gpus-per-task=1 python3 {program} --one-gpu",
        free_port()
    );
    let path = c.write(
        "pretrain.sh",
        &script(
            &c,
            "#SBATCH -p gpu -N 8 --ntasks-per-node=8 --gpus-per-node=8 --cpus-per-task=8 --mem=0 --exclusive -t 10:00 -o pretrain.out",
            &body,
        ),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    let job = c.wait_done(id);
    let out = c.read("pretrain.out");
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert!(out.contains("MASTER_ADDR=gpu01"), "{out}");
    assert!(
        out.contains("MEM=262144"),
        "--mem=0: all of the node's memory: {out}"
    );
    assert!(out.contains("NODES 8 TASKS 64"), "{out}");
    assert!(out.contains("RENDEZVOUS OK"), "{out}");

    // The single-node fine-tuning shape: one task, all eight GPUs.
    let body = "srun bash -c 'echo GPUS=$CUDA_VISIBLE_DEVICES TASKS=$SLURM_NTASKS'\n\
                srun -n2 -c 8 --gpu-bind=closest bash -c 'echo CLOSE $CUDA_VISIBLE_DEVICES'";
    let path = c.write(
        "finetune.sh",
        &script(
            &c,
            "#SBATCH -p gpu -N 1 --ntasks-per-node=1 --gpus-per-node=8 --cpus-per-task=16 -o finetune.out",
            body,
        ),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    assert_eq!(c.wait_done(id)["state"], "COMPLETED");
    let out = c.read("finetune.out");
    assert!(out.contains("GPUS=0,1,2,3,4,5,6,7 TASKS=1"), "{out}");
    // --gpu-bind=closest: each task sees the GPUs of its cores' NUMA domain (two here).
    let close: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("CLOSE "))
        .collect();
    assert_eq!(close.len(), 2, "{out}");
    for gpus in close {
        assert!(
            ["0,1", "2,3", "4,5", "6,7"].contains(&gpus),
            "a NUMA domain's pair: {gpus}\n{out}"
        );
    }

    // An array sweep, one GPU each.
    let body = "srun bash -c 'echo SWEEP $SLURM_ARRAY_TASK_ID $CUDA_VISIBLE_DEVICES'";
    let path = c.write(
        "sweep.sh",
        &script(
            &c,
            "#SBATCH -p gpu --array=0-3 --gpus-per-node=1 -o sweep-%a.out",
            body,
        ),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    for job in c.wait_all_done(&[id]) {
        assert_eq!(job["state"], "COMPLETED", "{job}");
    }
    for i in 0..4 {
        let out = c.read(&format!("sweep-{i}.out"));
        assert!(out.starts_with(&format!("SWEEP {i} ")), "{out}");
    }
}

#[test]
fn open_mpi_runs_an_allreduce_over_four_nodes_through_srun() {
    let mpicc = which("mpicc")
        .expect("Open MPI's mpicc (scripts/setup.sh installs openmpi-bin and libopenmpi-dev)");
    let names: Vec<String> = (1..=8).map(|i| format!("gpu{i:02}")).collect();
    let Some(_hosts) = HostNames::add(&names) else {
        eprintln!("skipped: the node names need /etc/hosts entries, which need root");
        return;
    };
    let c = Cluster::start(Options {
        eight_gpu_nodes: true,
        ..Options::default()
    });
    let source = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/cluster/programs/allreduce.c"
    );
    let app = c.work().join("allreduce");
    let built = std::process::Command::new(mpicc)
        .arg(source)
        .arg("-o")
        .arg(&app)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let body = format!(
        // Ranks talk over TCP, as between real nodes: these "nodes" share one machine
        // and one host name, under which Open MPI's shared-memory transport would give
        // the ranks of different nodes the same segment file.
        "export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1\n\
         export OMPI_MCA_btl=tcp,self\n\
         mpirun {}\necho MPIRUN=$?",
        app.display()
    );
    let path = c.write(
        "mpi.sh",
        &script(
            &c,
            "#SBATCH -p gpu -N 4 --ntasks-per-node=2 -t 5:00 -o mpi.out",
            &body,
        ),
    );
    let id = c.sbatch(&[path.to_str().unwrap()]);
    let job = c.wait_done(id);
    let out = c.read("mpi.out");
    assert_eq!(job["state"], "COMPLETED", "{job}\n{out}");
    assert!(out.contains("ALLREDUCE sum=36 ranks=8 OK"), "{out}");
    let mut hosts: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("RANK "))
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    hosts.sort();
    assert_eq!(
        hosts,
        vec!["gpu01", "gpu01", "gpu02", "gpu02", "gpu03", "gpu03", "gpu04", "gpu04"],
        "two ranks on each of the four nodes: {out}"
    );
}

fn which(program: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .ok_or(())
}

#[test]
fn a_restarted_agent_ends_the_step_tasks_its_predecessor_left() {
    let mut c = Cluster::start(Options::default());
    let marker = format!("step-orphan-{}", std::process::id());
    let running = two_sleeping_tasks(&c, &format!("exec -a {marker} sleep 300"), &marker);
    // SIGKILL: the agent cannot end anything on its way out.
    c.kill_agent("cpu02");
    assert_eq!(pids_with(&marker).len(), 2, "the task outlives its agent");
    c.start_agent("cpu02");
    wait_for("the new agent ended its predecessor's task", || {
        pids_with(&marker).len() == 1
    });
    // The step lost a node: it ends once the other task does.
    let id = c.cli_ok(&["squeue", "-h", "-o", "%i"]);
    c.cli_ok(&["scancel", &format!("{}.0", id.trim())]);
    let out = running.wait_with_output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    wait_for("no task left", || pids_with(&marker).is_empty());
}
