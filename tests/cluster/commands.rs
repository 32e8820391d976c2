//! The Slurm command surface against a live cluster, as Slurm documents it: sbatch's
//! `--signal`, `--hold`, `--begin`, `--comment`, `--wckey`, `--open-mode` and output
//! patterns; `scontrol hold|release|update|show job`; squeue's and sacct's filters,
//! formats and exit codes; scancel's signal targets.

use std::time::{Duration, Instant};

use crate::harness::{Cluster, Options};

fn submit(c: &Cluster, args: &[&str]) -> u64 {
    let mut all = vec!["sbatch", "--parsable"];
    all.extend_from_slice(args);
    c.cli_ok(&all)
        .trim()
        .parse()
        .expect("--parsable prints the id")
}

/// `--signal=B:USR1@N` reaches the batch shell N seconds before the limit, and nothing
/// else; `--signal=USR1@N` reaches the job's steps. Both trap it and end cleanly.
#[test]
fn signal_warns_before_the_time_limit() {
    let c = Cluster::start(Options::default());
    let bin = c.slurm_bin();
    let shell = c.write(
        "shell.sh",
        "#!/bin/bash\n#SBATCH --time=1:00\n#SBATCH --signal=B:USR1@57\n#SBATCH -o shell.out\n\
         trap 'echo shell got USR1 after $SECONDS s; exit 0' USR1\n\
         sleep 50 & wait\necho no warning\n",
    );
    let steps = c.write(
        "steps.sh",
        &format!(
            "#!/bin/bash\n#SBATCH --time=1:00\n#SBATCH --signal=USR2@57\n#SBATCH -o steps.out\n\
             export PATH={}:$PATH\n\
             trap 'echo the shell got USR2' USR2\n\
             srun bash -c \"trap 'echo step got USR2; exit 0' USR2; sleep 50 & wait\"\n",
            bin.display()
        ),
    );
    let a = submit(&c, &[shell.to_str().unwrap()]);
    let b = submit(&c, &[steps.to_str().unwrap()]);
    for id in [a, b] {
        let j = c.wait_done(id);
        assert_eq!(j["state"], "COMPLETED", "{j}");
    }
    let out = c.read("shell.out");
    assert!(out.contains("shell got USR1 after"), "{out}");
    assert!(!out.contains("no warning"), "{out}");
    let out = c.read("steps.out");
    assert!(out.contains("step got USR2"), "{out}");
    assert!(
        !out.contains("the shell got USR2"),
        "without B: the batch shell is not signalled: {out}"
    );
    // A bad spec is refused at submission, with what to write instead.
    let (code, _, err) = c.cli(&["sbatch", "--signal=R:USR1", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("sbatch: error: --signal"), "{err}");
}

/// `-H` holds a job until `scontrol release`; an admin's hold only an admin releases;
/// `scontrol update` lowers a pending job's limit and sets its comment, and only an admin
/// raises a limit; `--begin` waits for its time.
#[test]
fn hold_release_update_and_begin() {
    let c = Cluster::start(Options::default());
    let alice = c.token("alice", false);
    let as_alice = |args: &[&str]| c.cli_as(&alice, args);
    let out = as_alice(&[
        "sbatch",
        "--parsable",
        "-H",
        "--time=5:00",
        "--comment=first try",
        "--wrap=echo ran",
    ]);
    assert_eq!(out.0, 0, "{}", out.2);
    let id: u64 = out.1.trim().parse().unwrap();
    let ids = id.to_string();
    std::thread::sleep(Duration::from_millis(600));
    let j = c.job(id);
    assert_eq!(
        (j["state"].as_str(), j["reason"].as_str()),
        (Some("PENDING"), Some("JobHeldUser")),
        "{j}"
    );
    // Lower the limit and change the comment: the owner may.
    let (code, _, err) = as_alice(&[
        "scontrol",
        "update",
        &format!("JobId={id}"),
        "TimeLimit=2:00",
        "Comment=second try",
    ]);
    assert_eq!(code, 0, "{err}");
    let shown = c.cli_ok(&["scontrol", "show", "job", &ids]);
    assert!(shown.contains("TimeLimit=00:02:00"), "{shown}");
    assert!(shown.contains("Comment=second try"), "{shown}");
    assert!(
        shown.contains("JobState=PENDING Reason=JobHeldUser"),
        "{shown}"
    );
    // Raising it is an admin's.
    let (code, _, err) = as_alice(&[
        "scontrol",
        "update",
        &format!("JobId={id}"),
        "TimeLimit=1:00:00",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("only an administrator may raise"), "{err}");
    // An admin's hold is the admin's to release.
    c.cli_ok(&["scontrol", "hold", &ids]);
    assert_eq!(c.job(id)["reason"], "JobHeldAdmin");
    let (code, _, err) = as_alice(&["scontrol", "release", &ids]);
    assert_eq!(code, 1);
    assert!(err.contains("an administrator holds it"), "{err}");
    c.cli_ok(&["scontrol", "release", &ids]);
    let j = c.wait_done(id);
    assert_eq!(j["state"], "COMPLETED", "{j}");
    let (code, _, err) = as_alice(&["scontrol", "hold", &ids]);
    assert_eq!(code, 1, "a finished job cannot be held");
    assert!(err.contains("no longer pending"), "{err}");
    // --begin: waits for its time, with Slurm's reason.
    let start = Instant::now();
    let later = submit(&c, &["--begin=now+3", "--wrap=true"]);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(c.job(later)["reason"], "BeginTime");
    let j = c.wait_done(later);
    assert_eq!(j["state"], "COMPLETED", "{j}");
    assert!(start.elapsed() >= Duration::from_secs(2), "it waited");
}

/// Output patterns (`%J %s %t %4j` in a batch script's name), `--open-mode=append`, and
/// `--comment`/`--wckey` in sacct; sacct's filters (`--name`, `-s`, `-S`/`-E`, `-A`),
/// widths (`State%20`), `-b`, and squeue's `--name`, `-A`, `-w` and unknown ids.
#[test]
fn patterns_append_and_the_views_filters() {
    let c = Cluster::start(Options::default());
    let one = submit(
        &c,
        &[
            "-J",
            "patterned",
            "-o",
            "p-%J-%s-%t-%n-%4j-%%.out",
            "--comment=note",
            "--wckey=proj",
            "--wrap=echo hi",
        ],
    );
    c.wait_done(one);
    let name = format!("p-{one}-batch-0-0-{one:04}-%.out");
    assert_eq!(c.read(&name), "hi\n");
    for word in ["first", "second"] {
        let id = submit(
            &c,
            &[
                "-J",
                "appender",
                "--open-mode=append",
                "-o",
                "appended.out",
                &format!("--wrap=echo {word}"),
            ],
        );
        c.wait_done(id);
    }
    assert_eq!(c.read("appended.out"), "first\nsecond\n");
    // sacct: by name and state, within a window, with widths and Slurm's padding.
    // (A start time, so a run across midnight still finds today's jobs.)
    let acct = c.cli_ok(&[
        "sacct",
        "-S",
        "now-1day",
        "--name",
        "patterned",
        "-X",
        "-P",
        "-o",
        "JobID,JobName,Comment,WCKey,State",
    ]);
    assert_eq!(
        acct,
        format!("JobID|JobName|Comment|WCKey|State\n{one}|patterned|note|proj|COMPLETED\n")
    );
    let acct = c.cli_ok(&[
        "sacct",
        "--name=appender",
        "-s",
        "CD",
        "-X",
        "-n",
        "-P",
        "-o",
        "JobName",
    ]);
    assert_eq!(acct, "appender\nappender\n");
    let acct = c.cli_ok(&["sacct", "-S", "now+1hour", "-X", "-n", "-P", "-o", "JobID"]);
    assert_eq!(acct, "", "nothing was queued an hour from now");
    let acct = c.cli_ok(&[
        "sacct",
        "-S",
        "now-1hour",
        "-E",
        "now",
        "-X",
        "-n",
        "-P",
        "-o",
        "JobID",
    ]);
    assert_eq!(acct.lines().count(), 3, "{acct}");
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &one.to_string(),
        "-X",
        "-o",
        "JobID,State%20",
    ]);
    let lines: Vec<&str> = acct.lines().collect();
    assert_eq!(lines[0], format!("{:<12} {:>20} ", "JobID", "State"));
    assert_eq!(lines[1], format!("{} {} ", "-".repeat(12), "-".repeat(20)));
    assert_eq!(lines[2], format!("{:<12} {:>20} ", one, "COMPLETED"));
    let brief = c.cli_ok(&["sacct", "-b", "-X", "-j", &one.to_string()]);
    assert!(
        brief.starts_with("JobID             State ExitCode"),
        "{brief}"
    );
    let (code, _, err) = c.cli(&["sacct", "-o", "JobID,Bogus"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown field 'Bogus'"), "{err}");
    // squeue: filters, and an unknown id is Slurm's error and exit code 1.
    let s = c.write("sleepy.sh", "#!/bin/bash\n#SBATCH -J sleepy\nsleep 60\n");
    let sleepy = submit(&c, &[s.to_str().unwrap()]);
    c.wait_state(sleepy, "RUNNING");
    let node = c.job(sleepy)["node_list"].as_str().unwrap().to_string();
    let q = c.cli_ok(&["squeue", "-h", "--name=sleepy", "-o", "%i %j"]);
    assert_eq!(q, format!("{sleepy} sleepy\n"));
    assert_eq!(c.cli_ok(&["squeue", "-h", "--name=other", "-o", "%i"]), "");
    let q = c.cli_ok(&["squeue", "-h", "-w", &node, "-o", "%i"]);
    assert_eq!(q, format!("{sleepy}\n"));
    assert_eq!(c.cli_ok(&["squeue", "-h", "-A", "nobody", "-o", "%i"]), "");
    let (code, _, err) = c.cli(&["squeue", "-j", "999999"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("slurm_load_jobs error: Invalid job id specified"),
        "{err}"
    );
    assert_eq!(
        c.cli(&["squeue", "-j", &one.to_string()]).0,
        0,
        "a finished job is not an error"
    );
    // scancel -b without a signal is refused; with one it reaches the batch script.
    let (code, _, err) = c.cli(&["scancel", "-b", &sleepy.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("give one with --signal"), "{err}");
    c.cli_ok(&["scancel", "-b", "-s", "TERM", &sleepy.to_string()]);
    let j = c.wait_done(sleepy);
    assert_ne!(j["state"], "RUNNING", "{j}");
}

/// sinfo's default partition summary (Slurm's columns, `*` on the default partition, one
/// line per partition and state), `-N`, `-s`, `-o`, `-t`; `scontrol show partition`;
/// each command's `--version`.
#[test]
fn sinfo_and_partitions_as_slurm_shows_them() {
    let c = Cluster::start(Options::default());
    let out = c.cli_ok(&["sinfo"]);
    assert_eq!(
        out,
        "PARTITION AVAIL  TIMELIMIT  NODES  STATE NODELIST\n\
         cpu*         up    1:00:00      2   idle cpu[01-02]\n\
         gpu          up    1:00:00      1   idle gpu01\n"
    );
    let id = submit(&c, &["-N2", "--wrap=sleep 30"]);
    c.wait_state(id, "RUNNING");
    let out = c.cli_ok(&["sinfo", "-h", "-p", "cpu"]);
    assert_eq!(out, "cpu*         up    1:00:00      2    mix cpu[01-02]\n");
    let out = c.cli_ok(&["sinfo", "-N", "-h", "-t", "idle"]);
    assert_eq!(out, "gpu01         1 gpu       idle\n");
    let out = c.cli_ok(&["sinfo", "-s", "-h", "-o", "%R %F %C"]);
    assert_eq!(out, "cpu 2/0/0/2 2/6/0/8\ngpu 0/1/0/1 0/32/0/32\n");
    let out = c.cli_ok(&["scontrol", "show", "partition", "gpu"]);
    assert!(out.starts_with("PartitionName=gpu\n"), "{out}");
    assert!(out.contains("Default=NO"), "{out}");
    assert!(out.contains("MaxTime=01:00:00"), "{out}");
    assert!(out.contains("Nodes=gpu01"), "{out}");
    let (code, _, err) = c.cli(&["scontrol", "show", "partition", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("Partition nope not found"), "{err}");
    let config = c.cli_ok(&["scontrol", "show", "config"]);
    assert!(
        config.contains("\nClusterName             = gantry\n"),
        "{config}"
    );
    assert!(config.contains("SchedulerType"), "{config}");
    for cmd in ["sbatch", "squeue", "sacct", "sinfo", "srun", "scontrol"] {
        let out = c.cli_ok(&[cmd, "--version"]);
        assert!(out.starts_with(&format!("{cmd} (Gantry ")), "{out}");
    }
    c.cli_ok(&["scancel", &id.to_string()]);
}

/// A pending array's waiting tasks are one squeue line (`12_[3-6%2]`), each with `-r`;
/// `-l` and `-O`; every task gets Slurm's array variables, the cluster's name and the
/// submitting host.
#[test]
fn arrays_in_squeue_and_their_environment() {
    let c = Cluster::start(Options::default());
    let id = submit(
        &c,
        &[
            "-a",
            "1-6%2",
            "-o",
            "arr-%a.out",
            "--wrap=echo $SLURM_ARRAY_TASK_COUNT $SLURM_ARRAY_TASK_MIN $SLURM_ARRAY_TASK_MAX $SLURM_ARRAY_TASK_STEP $SLURM_CLUSTER_NAME $SLURM_SUBMIT_HOST; sleep 4",
        ],
    );
    c.wait_state(id, "RUNNING");
    std::thread::sleep(Duration::from_millis(500));
    let q = c.cli_ok(&["squeue", "-h", "-o", "%i %t"]);
    assert_eq!(
        q,
        format!("{id}_1 R\n{id}_2 R\n{id}_[3-6%2] PD\n"),
        "pending tasks together"
    );
    let q = c.cli_ok(&["squeue", "-h", "-r", "-o", "%i"]);
    assert_eq!(q.lines().count(), 6, "{q}");
    let q = c.cli_ok(&["squeue", "-l"]);
    let head = q.lines().nth(1).unwrap_or_default();
    assert!(head.contains("STATE") && head.contains("TIME_LIMI"), "{q}");
    let q = c.cli_ok(&["squeue", "-h", "-O", "JobID:12,State:10"]);
    assert!(
        q.starts_with(&format!("{:<12} {:<10}", format!("{id}_1"), "RUNNING")),
        "{q:?}"
    );
    for j in c.wait_all_done(&[id]) {
        assert_eq!(j["state"], "COMPLETED", "{j}");
    }
    let line = c.read("arr-3.out");
    let f: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(&f[..5], ["6", "1", "6", "1", "gantry"], "{line}");
    assert!(!f[5].is_empty(), "SLURM_SUBMIT_HOST: {line}");
}

/// `sbatch --wait` exits with the job's exit code; `--export=VAR=value,...` passes only
/// those (a named variable that is not set is left out, as sbatch does); `--nice`
/// defaults to 100 and a negative one is an admin's.
#[test]
fn wait_export_and_nice() {
    let c = Cluster::start(Options::default());
    let (code, out, err) = c.cli(&[
        "sbatch",
        "--wait",
        "-o",
        "waited.out",
        "--export=FOO=bar,GANTRY_NOT_SET_ANYWHERE",
        "--wrap=echo ${FOO} ${HOME:-nohome} ${GANTRY_NOT_SET_ANYWHERE:-unset}; exit 3",
    ]);
    assert_eq!(code, 3, "{out}{err}");
    assert!(out.starts_with("Submitted batch job "), "{out}");
    assert_eq!(c.read("waited.out"), "bar nohome unset\n");
    let (code, _, _) = c.cli(&["sbatch", "-W", "-o", "/dev/null", "--wrap=true"]);
    assert_eq!(code, 0);
    let id = submit(&c, &["--nice", "-H", "--wrap=true"]);
    let shown = c.cli_ok(&["scontrol", "show", "job", &id.to_string()]);
    assert!(shown.contains(" Nice=100 "), "{shown}");
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(&alice, &["sbatch", "--nice=-5", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("only an administrator may give a negative"),
        "{err}"
    );
    c.cli_ok(&["scancel", &id.to_string()]);
}

/// `scontrol requeue` ends a running job's run and queues it again (it runs again with
/// `SLURM_RESTART_COUNT`); `requeuehold` leaves it held until released.
#[test]
fn requeue_and_requeuehold() {
    let c = Cluster::start(Options::default());
    let id = submit(
        &c,
        &[
            "--open-mode=append",
            "-o",
            "runs.out",
            "--wrap=echo run ${SLURM_RESTART_COUNT:-0}; sleep 60",
        ],
    );
    let ids = id.to_string();
    c.wait_state(id, "RUNNING");
    // The first run has begun (not only been sent) before it is requeued.
    let since = Instant::now();
    while !c.work().join("runs.out").exists() || c.read("runs.out") != "run 0\n" {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "the first run never wrote"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.cli_ok(&["scontrol", "requeue", &ids]);
    let j = c.wait_until(id, |j| j["requeue_count"] == 1 && j["state"] == "RUNNING");
    assert_eq!(j["restart_cnt"], 1, "{j}");
    let since = Instant::now();
    while c.read("runs.out") != "run 0\nrun 1\n" {
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "{}",
            c.read("runs.out")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    c.cli_ok(&["scontrol", "requeuehold", &ids]);
    let j = c.wait_until(id, |j| j["requeue_count"] == 2);
    assert_eq!(j["reason"], "JobHeldAdmin", "{j}");
    std::thread::sleep(Duration::from_millis(600));
    let j = c.job(id);
    assert!(
        j["state"] == "PENDING" || j["state"] == "REQUEUED",
        "held, it does not run: {j}"
    );
    c.cli_ok(&["scontrol", "release", &ids]);
    c.wait_state(id, "RUNNING");
    let (code, _, err) = c.cli(&["scontrol", "requeue", "999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("Invalid job id"), "{err}");
    c.cli_ok(&["scancel", &ids]);
}

/// `sshare`: the share tree with usage that grows as jobs run and a fairshare factor per
/// user; `sdiag`: cycles counted and RPCs by type.
#[test]
fn sshare_and_sdiag() {
    let c = Cluster::start(Options::default());
    let id = submit(&c, &["-n2", "--wrap=sleep 2"]);
    c.wait_done(id);
    let out = c.cli_ok(&["sshare", "-a", "-P", "-n"]);
    let lines: Vec<&str> = out.lines().collect();
    let root = lines
        .iter()
        .find(|l| l.starts_with("root||"))
        .unwrap_or_else(|| panic!("{out}"));
    let usage: f64 = root.split('|').nth(4).unwrap().parse().unwrap();
    assert!(
        (3.0..=20.0).contains(&usage),
        "two cores for about 2 s: {out}"
    );
    assert!(
        lines.iter().any(|l| {
            let f: Vec<&str> = l.split('|').collect();
            f.len() == 7 && !f[1].is_empty() && f[6].parse::<f64>().is_ok()
        }),
        "a user's line with a factor: {out}"
    );
    let head = c.cli_ok(&["sshare"]);
    assert!(
        head.starts_with("Account                    User  RawShares  NormShares"),
        "{head}"
    );
    let diag = c.cli_ok(&["sdiag"]);
    assert!(
        diag.contains("Main schedule statistics (microseconds):"),
        "{diag}"
    );
    assert!(diag.contains("Submit"), "{diag}");
    let v: serde_json::Value = serde_json::from_str(&c.cli_ok(&["sdiag", "--json"])).unwrap();
    assert!(
        v["statistics"]["schedule_cycle_total"].as_u64().unwrap() > 0,
        "{v}"
    );
}

/// scancel's filters: by name, by state, `--me`, `-v`; another user's jobs are an
/// admin's to cancel by `-u`; no ids and no filter is Slurm's error.
#[test]
fn scancel_filters() {
    let c = Cluster::start(Options::default());
    let a = submit(&c, &["-J", "alpha", "--wrap=sleep 60"]);
    let b = submit(&c, &["-J", "beta", "--wrap=sleep 60"]);
    let held = submit(&c, &["-J", "beta", "-H", "--wrap=sleep 60"]);
    c.wait_state(a, "RUNNING");
    c.wait_state(b, "RUNNING");
    c.cli_ok(&["scancel", "--name=alpha"]);
    assert_eq!(c.wait_done(a)["state"], "CANCELLED");
    assert_eq!(c.job(b)["state"], "RUNNING", "another name is left");
    let (code, _, err) = c.cli(&["scancel", "-v", "-t", "PENDING", "--me"]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains(&format!("Terminating job {held}")), "{err}");
    assert_eq!(c.wait_done(held)["state"], "CANCELLED");
    assert_eq!(c.job(b)["state"], "RUNNING", "a running job is not pending");
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(&alice, &["scancel", "-u", "root"]);
    assert_eq!(code, 1);
    assert!(err.contains("only an administrator"), "{err}");
    let (code, _, err) = c.cli(&["scancel"]);
    assert_eq!(code, 1);
    assert!(err.contains("No job identification provided"), "{err}");
    c.cli_ok(&["scancel", "-u", "root", "-n", "beta"]);
    assert_eq!(c.wait_done(b)["state"], "CANCELLED");
}

/// `sreport`: cluster utilization and top users and accounts over a period, in CPU or
/// GPU time: the cluster's capacity is its cores × seconds, a job counts its cores (or
/// GPUs) × the seconds it ran inside the period.
#[test]
fn sreport_utilization_and_top_usage() {
    let c = Cluster::start(Options::default());
    let cpu = submit(&c, &["-n2", "--wrap=sleep 2"]);
    let gpu = submit(&c, &["-p", "gpu", "--gpus-per-node=2", "--wrap=sleep 2"]);
    c.wait_done(cpu);
    c.wait_done(gpu);
    let period = ["start=now-1hour", "end=now+1hour"];
    let util = c.cli_ok(
        &[
            &[
                "sreport",
                "-P",
                "-n",
                "-t",
                "seconds",
                "cluster",
                "utilization",
            ][..],
            &period[..],
        ]
        .concat(),
    );
    let f: Vec<&str> = util.trim().split('|').collect();
    assert_eq!(f[0], "gantry", "{util}");
    let used: f64 = f[1].parse().unwrap();
    // Two jobs of about 2 s, on 2 and 1 cores.
    assert!((4.0..=30.0).contains(&used), "{util}");
    // 2 × 4 + 32 cores, for two hours.
    assert_eq!(f[6], (40 * 7200).to_string(), "{util}");
    let top = c.cli_ok(
        &[
            &[
                "sreport",
                "-P",
                "-t",
                "seconds",
                "--tres=gres/gpu",
                "user",
                "topusage",
            ][..],
            &period[..],
        ]
        .concat(),
    );
    let lines: Vec<&str> = top.lines().collect();
    assert_eq!(lines[0], "Cluster|Login|Account|Used|Jobs", "{top}");
    let f: Vec<&str> = lines[1].split('|').collect();
    assert_eq!((f[1], f[4]), ("root", "2"), "{top}");
    let gpu_s: f64 = f[3].parse().unwrap();
    assert!((3.0..=20.0).contains(&gpu_s), "2 GPUs for about 2 s: {top}");
    let acct = c.cli_ok(&[&["sreport", "-n", "account", "topusage"][..], &period[..]].concat());
    assert!(acct.contains("root"), "{acct}");
    let (code, _, err) = c.cli(&["sreport", "job", "sizes"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("sreport: error: unknown report"), "{err}");
}

/// `squeue --start` shows each pending job's planned start and nodes; `sbatch
/// --test-only` answers from the same plan and submits nothing.
#[test]
fn squeue_start_and_test_only() {
    let c = Cluster::start(Options::default());
    let wide = submit(&c, &["-N2", "-n8", "-t", "10:00", "--wrap=sleep 60"]);
    c.wait_state(wide, "RUNNING");
    let next = submit(&c, &["-N2", "-n8", "-t", "5:00", "--wrap=sleep 60"]);
    std::thread::sleep(Duration::from_millis(600));
    let out = c.cli_ok(&["squeue", "--start"]);
    let lines: Vec<&str> = out.lines().collect();
    assert!(
        lines[0].contains("START_TIME") && lines[0].contains("SCHEDNODES"),
        "{out}"
    );
    assert_eq!(lines.len(), 2, "only the pending job: {out}");
    let started = c.job(wide)["start_time"].as_i64().unwrap();
    let expected = crate::harness::local_time(started + 600);
    assert!(
        lines[1].contains(&expected),
        "planned when the running job's limit ends ({expected}): {out}"
    );
    assert!(lines[1].contains("cpu[01-02]"), "{out}");
    let (code, out, err) = c.cli(&[
        "sbatch",
        "--test-only",
        "-N1",
        "-n4",
        "-t",
        "1:00",
        "--wrap=true",
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    let later = crate::harness::local_time(started + 600 + 300);
    assert!(
        err.starts_with(&format!(
            "sbatch: Job to start at {later} using 4 processors on nodes cpu0"
        )),
        "after the waiting job: {err}"
    );
    assert_eq!(
        c.cli_ok(&["squeue", "-h", "-o", "%i"]).lines().count(),
        2,
        "nothing submitted"
    );
    c.cli_ok(&["scancel", &wide.to_string(), &next.to_string()]);
}

/// `scontrol suspend` stops a job (its processes stopped, its cores free for others) and
/// only `scontrol resume` brings it back; both are an admin's.
#[test]
fn suspend_and_resume_are_an_admins() {
    let c = Cluster::start(Options::default());
    let id = submit(
        &c,
        &[
            "-w",
            "cpu01",
            "-n4",
            "-o",
            "ticks.out",
            "--wrap=while true; do echo t; sleep 0.1; done",
        ],
    );
    let ids = id.to_string();
    c.wait_state(id, "RUNNING");
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(&alice, &["scontrol", "suspend", &ids]);
    assert_eq!(code, 1);
    assert!(err.contains("only an administrator"), "{err}");
    c.cli_ok(&["scontrol", "suspend", &ids]);
    assert_eq!(c.job(id)["state"], "SUSPENDED");
    std::thread::sleep(Duration::from_millis(500));
    let before = c.read("ticks.out").len();
    // Its cores are free: a job for all of cpu01 runs meanwhile.
    let other = submit(&c, &["-w", "cpu01", "-n4", "--wrap=true"]);
    assert_eq!(c.wait_done(other)["state"], "COMPLETED");
    assert_eq!(c.read("ticks.out").len(), before, "stopped while suspended");
    assert_eq!(c.job(id)["state"], "SUSPENDED", "no cycle resumes it");
    c.cli_ok(&["scontrol", "resume", &ids]);
    c.wait_state(id, "RUNNING");
    let since = Instant::now();
    while c.read("ticks.out").len() == before {
        assert!(since.elapsed() < Duration::from_secs(20), "it runs again");
        std::thread::sleep(Duration::from_millis(100));
    }
    let (code, _, err) = c.cli(&["scontrol", "resume", &ids]);
    assert_eq!(code, 1, "{err}");
    c.cli_ok(&["scancel", &ids]);
}

/// `--deadline`: a waiting job that can no longer end by then (its 5 minutes would
/// overrun a deadline 4 minutes away) is removed as DEADLINE, which sacct shows.
#[test]
fn deadline_removes_a_job_that_cannot_end_in_time() {
    let c = Cluster::start(Options::default());
    let busy = submit(
        &c,
        &["-w", "cpu01", "-n4", "-t", "10:00", "--wrap=sleep 60"],
    );
    c.wait_state(busy, "RUNNING");
    let late = submit(
        &c,
        &[
            "-w",
            "cpu01",
            "-n4",
            "-t",
            "5:00",
            "--deadline=now+4minutes",
            "--wrap=true",
        ],
    );
    let j = c.wait_done(late);
    assert_eq!(j["state"], "DEADLINE", "{j}");
    let acct = c.cli_ok(&[
        "sacct",
        "-j",
        &late.to_string(),
        "-X",
        "-n",
        "-P",
        "-o",
        "State",
    ]);
    assert_eq!(acct, "DEADLINE\n");
    let (code, _, err) = c.cli(&["sbatch", "--deadline=soonish", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(err.contains("--deadline"), "{err}");
    c.cli_ok(&["scancel", &busy.to_string()]);
}

/// `scontrol update` of a pending job's Nice (its owner may only raise it), QOS (an
/// admin's) and Dependency (removed, the job runs).
#[test]
fn update_nice_qos_and_dependency() {
    let c = Cluster::start(Options::default());
    let held = submit(&c, &["-H", "--wrap=true"]);
    let after = submit(
        &c,
        &[&format!("--dependency=afterok:{held}"), "--wrap=true"],
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(c.job(after)["reason"], "Dependency");
    c.cli_ok(&[
        "scontrol",
        "update",
        &format!("JobId={after}"),
        "Dependency=",
    ]);
    assert_eq!(c.wait_done(after)["state"], "COMPLETED");
    let alice = c.token("alice", false);
    let (code, out, err) = c.cli_as(&alice, &["sbatch", "--parsable", "-H", "--wrap=true"]);
    assert_eq!(code, 0, "{err}");
    let mine = out.trim().to_string();
    let job = format!("JobId={mine}");
    let (code, _, err) = c.cli_as(&alice, &["scontrol", "update", &job, "Nice=50"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = c.cli_as(&alice, &["scontrol", "update", &job, "Nice=10"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("only an administrator may lower the nice"),
        "{err}"
    );
    let (code, _, err) = c.cli_as(&alice, &["scontrol", "update", &job, "QOS=normal"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("only an administrator may change a job's QOS"),
        "{err}"
    );
    c.cli_ok(&["scontrol", "update", &job, "Nice=-10", "QOS=normal"]);
    let shown = c.cli_ok(&["scontrol", "show", "job", &mine]);
    assert!(
        shown.contains(" Nice=-10 ") && shown.contains("QOS=normal"),
        "{shown}"
    );
    let (code, _, err) = c.cli(&["scontrol", "update", &job, "QOS=nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown qos"), "{err}");
    let (code, _, err) = c.cli(&["scontrol", "update", &job, "Dependency=afterok:999999"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown job 999999"), "{err}");
    c.cli_ok(&["scancel", &mine, &held.to_string()]);
}

/// `sstat`: a running job's batch script and steps with the CPU and memory their
/// processes use on each node (from the agents' heartbeats); a finished job is sacct's.
#[test]
fn sstat_shows_what_running_steps_use() {
    let c = Cluster::start(Options::default());
    let bin = c.slurm_bin();
    let script = c.write(
        "burn.sh",
        &format!(
            "#!/bin/bash\n#SBATCH -N2 -n2 -o burn.out\nexport PATH={}:$PATH\n\
             srun bash -c 'end=$((SECONDS+8)); while [ $SECONDS -lt $end ]; do :; done'\n",
            bin.display()
        ),
    );
    let id = submit(&c, &[script.to_str().unwrap()]);
    c.wait_state(id, "RUNNING");
    let step = format!("{id}.0");
    let since = Instant::now();
    let row = loop {
        let (_, out, _) = c.cli(&[
            "sstat",
            "-j",
            &step,
            "-P",
            "-n",
            "-o",
            "JobID,TotalCPU,MaxRSS,NTasks,NNodes",
        ]);
        let f: Vec<String> = out.trim().split('|').map(String::from).collect();
        if f.len() == 5 && f[1] != "00:00:00" && f[3] == "2" {
            break f;
        }
        assert!(
            since.elapsed() < Duration::from_secs(30),
            "no usage seen: {out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert_eq!(row[0], step);
    assert_eq!(row[4], "2", "both nodes");
    assert!(row[2].ends_with('M'), "{row:?}");
    let all = c.cli_ok(&["sstat", "-j", &id.to_string()]);
    assert!(
        all.contains(&format!("{id}.batch")) && all.contains(&step),
        "{all}"
    );
    c.wait_done(id);
    let (code, _, err) = c.cli(&["sstat", "-j", &id.to_string()]);
    assert_eq!(code, 1);
    assert!(err.contains("is not running"), "{err}");
}

/// Advance reservations: a maintenance window on both CPU nodes an hour ahead keeps a job
/// that would run into it from starting there while a shorter one runs; a job with
/// `--reservation` runs inside an open reservation, on its nodes only, and is ended when
/// it ends; only admins manage them, only the users they name use them; they survive a
/// controller restart.
#[test]
fn advance_reservations() {
    let mut c = Cluster::start(Options::default());
    let probe = submit(&c, &["--wrap=true"]);
    let me = c.wait_done(probe)["user"].as_str().unwrap().to_string();
    let users = format!("Users={me}");
    let out = c.cli_ok(&[
        "scontrol",
        "create",
        "reservation",
        "ReservationName=maint",
        "StartTime=now+1hour",
        "Duration=1:00:00",
        "Nodes=cpu[01-02]",
        &users,
        "Flags=MAINT",
    ]);
    assert_eq!(out.trim(), "Reservation created: maint");
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(
        &alice,
        &[
            "scontrol",
            "create",
            "res",
            "StartTime=now",
            "Duration=10",
            "NodeCnt=1",
            "Users=alice",
        ],
    );
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("only an administrator"), "{err}");
    let show = c.cli_ok(&["scontrol", "show", "reservation", "maint"]);
    assert!(
        show.starts_with("ReservationName=maint StartTime="),
        "{show}"
    );
    assert!(show.contains("Duration=01:00:00"), "{show}");
    assert!(
        show.contains("Nodes=cpu[01-02] NodeCnt=2 CoreCnt=8")
            && show.contains("Flags=MAINT,SPEC_NODES"),
        "{show}"
    );
    assert!(show.contains("State=INACTIVE"), "{show}");

    // Two hours on cpu01 would run into the window; thirty minutes end before it.
    let long = submit(&c, &["-w", "cpu01", "-t", "2:00:00", "--wrap=sleep 30"]);
    let short = submit(&c, &["-w", "cpu01", "-t", "30:00", "--wrap=sleep 1"]);
    assert_eq!(c.wait_done(short)["state"], "COMPLETED");
    assert_eq!(c.job(long)["state"], "PENDING", "{}", c.job(long));

    // A reservation open now on cpu02, for me: my job runs there, others' do not.
    c.cli_ok(&[
        "scontrol",
        "create",
        "reservation",
        "ReservationName=team",
        "StartTime=now",
        "Duration=30:00",
        "Nodes=cpu02",
        &users,
    ]);
    let inside = submit(
        &c,
        &[
            "--reservation=team",
            "-t",
            "10:00",
            "-o",
            "resv.out",
            "--wrap=echo $SLURM_JOB_RESERVATION; sleep 30",
        ],
    );
    c.wait_state(inside, "RUNNING");
    assert_eq!(c.job(inside)["node_list"], "cpu02");
    let outside = submit(&c, &["-w", "cpu02", "-t", "5:00", "--wrap=true"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(c.job(outside)["state"], "PENDING");
    assert!(c
        .cli_ok(&["scontrol", "show", "job", &inside.to_string()])
        .contains("   Reservation=team\n"));
    assert_eq!(
        c.cli_ok(&["squeue", "-h", "-j", &inside.to_string(), "-o", "%v"])
            .trim(),
        "team"
    );
    let (code, _, err) = c.cli_as(&alice, &["sbatch", "--reservation=team", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(
        err.starts_with("sbatch: error:") && err.contains("Access denied to requested reservation"),
        "{err}"
    );
    let (code, _, err) = c.cli(&["sbatch", "--reservation=nosuch", "--wrap=true"]);
    assert_eq!(code, 1);
    assert!(err.contains("Requested reservation is invalid"), "{err}");
    let table = c.cli_ok(&["sinfo", "-T"]);
    assert!(table.starts_with("RESV_NAME"), "{table}");
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("team") && l.contains("ACTIVE") && l.ends_with("cpu02")),
        "{table}"
    );
    assert!(
        table
            .lines()
            .any(|l| l.starts_with("maint") && l.contains("INACTIVE")),
        "{table}"
    );

    // Changed, then deleted: the job outside starts where the reservation was.
    assert_eq!(
        c.cli_ok(&[
            "scontrol",
            "update",
            "ReservationName=team",
            "Duration=20:00"
        ])
        .trim(),
        "Reservation updated."
    );
    assert!(c
        .cli_ok(&["scontrol", "show", "res", "team"])
        .contains("Duration=00:20:00"));
    c.cli_ok(&["scancel", &inside.to_string()]);
    assert_eq!(c.read("resv.out").trim(), "team");
    c.cli_ok(&["scontrol", "delete", "ReservationName=team"]);
    assert_eq!(c.wait_done(outside)["state"], "COMPLETED");
    let (code, _, err) = c.cli(&["scontrol", "show", "reservation", "team"]);
    assert_eq!(code, 1);
    assert!(err.contains("Reservation team not found"), "{err}");

    // A job in a reservation ends when the reservation does, whatever its limit.
    c.cli_ok(&[
        "scontrol",
        "create",
        "reservation",
        "ReservationName=brief",
        "StartTime=now",
        "Duration=0:00:04",
        "Nodes=cpu02",
        &users,
    ]);
    let cut = submit(
        &c,
        &["--reservation=brief", "-t", "10:00", "--wrap=sleep 60"],
    );
    assert_eq!(c.wait_done(cut)["state"], "TIMEOUT");
    // Shortened while its job runs: the job ends at the new end.
    c.cli_ok(&[
        "scontrol",
        "create",
        "reservation",
        "ReservationName=brief2",
        "StartTime=now",
        "Duration=10:00",
        "Nodes=cpu02",
        &users,
    ]);
    let shortened = submit(
        &c,
        &["--reservation=brief2", "-t", "10:00", "--wrap=sleep 60"],
    );
    c.wait_state(shortened, "RUNNING");
    c.cli_ok(&[
        "scontrol",
        "update",
        "ReservationName=brief2",
        "EndTime=now+3",
    ]);
    let since = Instant::now();
    assert_eq!(c.wait_done(shortened)["state"], "TIMEOUT");
    assert!(
        since.elapsed() < Duration::from_secs(30),
        "{:?}",
        since.elapsed()
    );
    let table = c.cli_ok(&["sinfo", "-T", "-h"]);
    assert!(!table.contains("brief"), "deleted once ended: {table}");

    // Kept across a restart; a job for it waits for it to open.
    c.kill_controller();
    c.restart_controller();
    let show = c.cli_ok(&["scontrol", "show", "reservation"]);
    assert!(
        show.contains("ReservationName=maint") && show.contains("Flags=MAINT"),
        "{show}"
    );
    let early = submit(&c, &["--reservation=maint", "-t", "10:00", "--wrap=true"]);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(c.job(early)["reason"], "Reservation");
    assert_eq!(c.job(long)["state"], "PENDING");
    c.cli_ok(&["scancel", &early.to_string(), &long.to_string()]);
    c.cli_ok(&["scontrol", "delete", "reservation", "maint"]);
    assert!(c
        .cli_ok(&["scontrol", "show", "res"])
        .contains("No reservations in the system"));
}

/// `scontrol update` of a pending job's Partition and NumNodes (refused when the job
/// could never run so), and of a running job's TimeLimit: lowered, its agent ends it
/// there as TIMEOUT; raised by an admin, it runs on.
#[test]
fn update_partition_nodes_and_a_running_limit() {
    let c = Cluster::start(Options::default());
    let held = submit(&c, &["-H", "-n2", "--wrap=hostname"]);
    let job = format!("JobId={held}");
    c.cli_ok(&["scontrol", "update", &job, "NumNodes=2"]);
    let (code, _, err) = c.cli(&["scontrol", "update", &job, "NumNodes=3"]);
    assert_eq!(code, 1);
    assert!(err.contains("between 1 and the job's 2 tasks"), "{err}");
    let (code, _, err) = c.cli(&["scontrol", "update", &job, "Partition=gpu"]);
    assert_eq!(code, 1, "two nodes never fit the one-node gpu partition");
    assert!(err.contains("can never run in partition 'gpu'"), "{err}");
    let (code, _, err) = c.cli(&["scontrol", "update", &job, "Partition=nosuch"]);
    assert_eq!(code, 1);
    assert!(
        err.contains("invalid partition name specified: nosuch"),
        "{err}"
    );
    let shown = c.cli_ok(&["scontrol", "show", "job", &held.to_string()]);
    assert!(
        shown.contains("Partition=cpu") && shown.contains("NumNodes=2 "),
        "{shown}"
    );
    c.cli_ok(&["scontrol", "release", &held.to_string()]);
    let done = c.wait_done(held);
    assert_eq!(
        (done["state"].as_str(), done["node_list"].as_str()),
        (Some("COMPLETED"), Some("cpu[01-02]"))
    );

    let moved = submit(&c, &["-H", "--wrap=hostname"]);
    c.cli_ok(&[
        "scontrol",
        "update",
        &format!("JobId={moved}"),
        "Partition=gpu",
    ]);
    c.cli_ok(&["scontrol", "release", &moved.to_string()]);
    let done = c.wait_done(moved);
    assert_eq!(
        (done["partition"].as_str(), done["node_list"].as_str()),
        (Some("gpu"), Some("gpu01"))
    );

    // Running: lowered to 3 s, it ends as TIMEOUT though its own limit was 10 minutes.
    let short = submit(&c, &["-t", "10:00", "--wrap=sleep 120"]);
    let long = submit(&c, &["-t", "0:05", "--wrap=sleep 8"]);
    c.wait_state(short, "RUNNING");
    c.wait_state(long, "RUNNING");
    let (code, _, err) = c.cli(&["scontrol", "update", &format!("JobId={short}"), "Nice=5"]);
    assert_eq!(code, 1);
    assert!(err.contains("no longer pending"), "{err}");
    c.cli_ok(&[
        "scontrol",
        "update",
        &format!("JobId={short}"),
        "TimeLimit=0:03",
    ]);
    // Raised from 5 s to 30 s by an admin: it finishes its 8 s.
    c.cli_ok(&[
        "scontrol",
        "update",
        &format!("JobId={long}"),
        "TimeLimit=0:30",
    ]);
    assert!(c
        .cli_ok(&["scontrol", "show", "job", &long.to_string()])
        .contains("TimeLimit=00:00:30"));
    assert_eq!(c.wait_done(short)["state"], "TIMEOUT");
    assert_eq!(c.wait_done(long)["state"], "COMPLETED");
}
