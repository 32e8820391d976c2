//! Snapshots on a live cluster: `gantry admin snapshot` (admins only) moves finished
//! jobs out of the controller's memory into the accounting table; `squeue` and
//! `scontrol` no longer know them, `sacct` and `sreport` still do (each user seeing only
//! their own), and a restart reads the snapshot and the compacted log with the running
//! job still running and ids going on from where they were.

use serde_json::Value;

use crate::harness::{Cluster, Options};

fn top_usage(c: &Cluster) -> String {
    c.cli_ok(&[
        "sreport",
        "-P",
        "-n",
        "-t",
        "seconds",
        "user",
        "topusage",
        "start=now-1hour",
        "end=now+1hour",
    ])
}

#[test]
fn finished_jobs_move_to_accounting_and_a_restart_reads_the_snapshot() {
    let mut c = Cluster::start(Options {
        extra_config: "snapshot_interval_s = 0\n".into(),
        ..Options::default()
    });
    let ok = c.sbatch(&["-J", "ok", "--wrap", "sleep 1"]);
    let failed = c.sbatch(&["-J", "failed", "--wrap", "sleep 1; exit 3"]);
    let alice = c.token("alice", false);
    let (code, out, err) = c.cli_as(&alice, &["sbatch", "--parsable", "--wrap", "sleep 1"]);
    assert_eq!(code, 0, "{err}");
    let hers: u64 = out.trim().parse().unwrap();
    let long = c.sbatch(&["-J", "long", "--wrap", "sleep 300"]);
    for id in [ok, failed, hers] {
        c.wait_done(id);
    }
    c.wait_state(long, "RUNNING");
    let usage_before = top_usage(&c);

    // Only an admin takes one.
    let (code, _, err) = c.cli_as(&alice, &["admin", "snapshot", "--retention", "0"]);
    assert_ne!(code, 0);
    assert!(err.contains("admin"), "{err}");
    let admin = c.token("root", true);
    let (code, out, err) = c.cli_as(&admin, &["admin", "snapshot", "--retention", "0", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["forgotten"], 3, "{v}");
    assert_eq!(v["in_memory"], 1, "only the running job: {v}");
    assert!(v["deleted"].as_u64().unwrap() >= 6, "{v}");

    let (code, _, err) = c.cli(&["scontrol", "show", "job", &ok.to_string()]);
    assert_ne!(code, 0, "a forgotten job is not in memory");
    assert!(err.contains("Invalid job id"), "{err}");
    let queue = c.cli_ok(&["squeue", "-h", "-o", "%i"]);
    assert_eq!(queue.trim(), long.to_string());

    let accounted = |c: &Cluster| {
        c.cli_ok(&[
            "sacct",
            "-X",
            "-P",
            "-n",
            "-o",
            "JobID,JobName,State,ExitCode",
            "-S",
            "now-1hour",
        ])
    };
    let mine = accounted(&c);
    for line in [
        format!("{ok}|ok|COMPLETED|0:0"),
        format!("{failed}|failed|FAILED|3:0"),
        format!("{long}|long|RUNNING|0:0"),
    ] {
        assert!(mine.contains(&line), "{line} in:\n{mine}");
    }
    let only_failed = c.cli_ok(&[
        "sacct",
        "-X",
        "-P",
        "-n",
        "-o",
        "JobID",
        "-s",
        "F",
        "-S",
        "now-1hour",
    ]);
    assert_eq!(only_failed.trim(), failed.to_string());
    // A query is bounded before it reaches the database.
    let many: Vec<String> = (1..=1025).map(|i| i.to_string()).collect();
    let (code, _, err) = c.cli(&["sacct", "-X", "-j", &many.join(",")]);
    assert_ne!(code, 0);
    assert!(err.contains("at most 1024 job ids"), "{err}");
    // Alice sees her job and nobody else's.
    let (_, theirs, err) = c.cli_as(
        &alice,
        &[
            "sacct",
            "-X",
            "-P",
            "-n",
            "-o",
            "JobID",
            "-a",
            "-S",
            "now-1hour",
        ],
    );
    assert_eq!(theirs.trim(), hers.to_string(), "{err}");
    assert_eq!(top_usage(&c).lines().count(), usage_before.lines().count());
    let jobs = |report: &str, user: &str| -> String {
        report
            .lines()
            .find(|l| l.split('|').nth(1) == Some(user))
            .and_then(|l| l.split('|').nth(4))
            .unwrap_or_default()
            .to_string()
    };
    let after = top_usage(&c);
    for user in ["alice", "root"] {
        assert_eq!(
            jobs(&after, user),
            jobs(&usage_before, user),
            "{user}:\n{usage_before}\n{after}"
        );
    }

    // The same history as an SWF trace, which the simulator replays.
    let swf = c.cli_ok(&["sacct", "--swf", "-S", "now-1hour"]);
    assert!(swf.contains("; MaxProcs: 40\n"), "{swf}");
    let lines: Vec<Vec<i64>> = swf
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.split(' ').map(|f| f.parse().unwrap()).collect())
        .collect();
    assert!(lines.iter().all(|f| f.len() == 18), "{swf}");
    let of = |id: u64| lines.iter().find(|f| f[0] == id as i64).unwrap();
    assert_eq!((of(ok)[10], of(failed)[10]), (1, 0), "statuses: {swf}");
    assert!(of(ok)[3] >= 1, "it ran about a second: {swf}");
    assert!(
        !lines.iter().any(|f| f[0] == long as i64),
        "unfinished jobs are left out"
    );
    let trace = c.write("history.swf", &swf);
    let (program, _) = c.program(&["gantry"]);
    let replay = std::process::Command::new(program)
        .args(["sim", "-q", "--native-policies", "--json", "-", "--trace"])
        .arg(&trace)
        .output()
        .unwrap();
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    let report: Value = serde_json::from_slice(&replay.stdout).unwrap();
    assert_eq!(report["jobs"], lines.len(), "{report}");

    // A restart reads the snapshot and what the log kept.
    c.kill_controller();
    c.restart_controller();
    let log = c.read_log("gantryd.log");
    let restored = log
        .lines()
        .rfind(|l| l.contains("state restored") && l.contains("entries"))
        .unwrap_or_default();
    let plain: String = restored
        .split('\x1b')
        .map(|part| part.split_once('m').map_or(part, |(_, rest)| rest))
        .collect();
    assert!(
        plain.contains("entries=2 jobs=1 running=1"),
        "the running job's submission and start only: {plain}"
    );
    assert_eq!(
        accounted(&c),
        mine,
        "sacct shows the same after the restart"
    );
    let next = c.sbatch(&["--wrap", "true"]);
    assert_eq!(next, long + 1, "ids go on from where they were");
    c.wait_done(next);
    c.cli_ok(&["scancel", &long.to_string()]);
}
