//! What-if on the cluster's own history: a few hundred short jobs from several users and
//! accounts run on the live cluster; `gantry policy whatif priority xfactor.wasm`
//! replays them with the active multifactor and with xfactor, and its figures are those
//! of an offline `gantry sim` of the `sacct --swf` export with each policy. Reading the
//! active components is an admin's; a candidate that fails in the replay exits 3.

use serde_json::Value;

use crate::harness::{self, Cluster, Options};

/// The schedule figures two reports must share.
const FIGURES: [&str; 7] = [
    "jobs",
    "rejected",
    "mean_wait_s",
    "p95_wait_s",
    "mean_bounded_slowdown",
    "utilization",
    "makespan_s",
];

#[test]
fn whatif_gives_the_figures_of_an_offline_sim_of_the_export() {
    let c = Cluster::start(Options {
        wasm_policies: true,
        extra_cluster: "[[account]]\nname = \"physics\"\nshares = 2\nusers = [\"alice\", \"carol\"]\n\n[[account]]\nname = \"chemistry\"\nusers = [\"bob\"]\n".into(),
        ..Options::default()
    });
    let submit = |user: &str, args: &[&str]| -> u64 {
        let token = c.token(user, false);
        let mut all = vec!["sbatch", "--parsable"];
        all.extend(
            args.iter()
                .map(|a| if *a == "sleep_1" { "sleep 1" } else { a }),
        );
        let (code, out, err) = c.cli_as(&token, &all);
        assert_eq!(code, 0, "{err}");
        out.trim().parse().unwrap()
    };
    // Mostly jobs of no time at all, and a few of a second or two that queue behind
    // one another on the eight cores of partition cpu.
    let args = |list: &'static str| -> Vec<&'static str> { list.split(' ').collect() };
    let arrays = [
        submit(
            "alice",
            &args("-A physics --array=1-60 -c 2 -t 2 --wrap true"),
        ),
        submit(
            "alice",
            &args("-A physics --array=1-12 -c 4 -t 1 --wrap sleep_1"),
        ),
        submit(
            "bob",
            &args("-A chemistry --array=1-64 -c 4 -t 5 --wrap true"),
        ),
        submit(
            "bob",
            &args("-A chemistry --array=1-6 -c 4 -t 1 --wrap sleep_1"),
        ),
        submit(
            "carol",
            &args("-A physics -p gpu --array=1-58 -c 16 --gpus-per-node=2 -t 3 --wrap true"),
        ),
    ];
    let jobs = c.wait_all_done(&arrays);
    assert_eq!(jobs.len(), 200);

    // Reading the active components is an admin's.
    let xfactor = harness::policy_component("xfactor-priority");
    let candidate = xfactor.to_str().unwrap();
    let alice = c.token("alice", false);
    let (code, _, err) = c.cli_as(
        &alice,
        &["policy", "whatif", "priority", candidate, "--since", "1h"],
    );
    assert_ne!(code, 0);
    assert!(err.contains("needs an admin"), "{err}");

    let whatif: Value = serde_json::from_str(&c.cli_ok(&[
        "policy", "whatif", "priority", candidate, "--since", "1h", "--json", "--moved", "1",
    ]))
    .unwrap();
    assert_eq!(whatif["jobs_in_history"], 200, "{whatif}");
    assert_eq!(
        whatif["active"]["policy"]["name"], "multifactor",
        "{whatif}"
    );
    assert_eq!(whatif["candidate"]["policy"]["name"], "xfactor", "{whatif}");
    assert_eq!(whatif["candidate"]["failures"], serde_json::json!([]));
    let accounts: Vec<(&str, u64)> = whatif["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["account"].as_str().unwrap(), a["jobs"].as_u64().unwrap()))
        .collect();
    assert_eq!(accounts, [("chemistry", 70), ("physics", 130)], "{whatif}");

    // The same history exported, replayed offline with each policy.
    let swf = c.cli_ok(&["sacct", "--swf", "-a", "-S", "now-1hour"]);
    assert!(
        swf.contains("; User: 1 alice\n") && swf.contains("; Group: 2 physics\n"),
        "{swf}"
    );
    // What SWF has no field for rides on comment lines: carol's GPUs among them.
    let carol_job = jobs
        .iter()
        .find(|j| j["user"] == "carol")
        .and_then(|j| j["job_id"].as_u64())
        .unwrap();
    let line = format!("; Job: {carol_job} nodes=1 tasks=1 cpus_per_task=16 gpus_per_node=2");
    assert!(swf.lines().any(|l| l.starts_with(&line)), "{swf}");
    let trace = c.write("history.swf", &swf);
    let cluster = c.root().join("cluster.toml");
    let (program, _) = c.program(&["gantry"]);
    let sim = |extra: &[&str]| -> Value {
        let out = std::process::Command::new(&program)
            .args(["sim", "-q", "--json", "-", "--trace"])
            .arg(&trace)
            .arg("--cluster")
            .arg(&cluster)
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let multifactor = sim(&[]);
    let with_xfactor = sim(&["--policy", &format!("priority={candidate}")]);
    for figure in FIGURES {
        assert_eq!(
            whatif["active"][figure], multifactor[figure],
            "{figure}: {whatif}\n{multifactor}"
        );
        assert_eq!(
            whatif["candidate"][figure], with_xfactor[figure],
            "{figure}: {whatif}\n{with_xfactor}"
        );
    }
    assert_eq!(multifactor["jobs"], 200);

    // The table says the same.
    let table = c.cli_ok(&["policy", "whatif", "priority", candidate, "--since", "1h"]);
    assert!(
        table.contains("What if priority used xfactor")
            && table.contains("multifactor")
            && table.contains("200 finished jobs")
            && table.contains("chemistry"),
        "{table}"
    );

    // A candidate that panics: the report stands, the exit status says so.
    let panic = harness::policy_component("hostile-panic");
    let (code, _, err) = c.cli(&[
        "policy",
        "whatif",
        "priority",
        panic.to_str().unwrap(),
        "--since",
        "1h",
    ]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("the candidate failed in the replay"), "{err}");
}
