//! `sacct --swf`: finished jobs as the Standard Workload Format (SWF v2.2) of the
//! Parallel Workloads Archive, so a cluster's own history replays in `gantry sim
//! --trace` like any public trace. Comment lines other tools skip carry what SWF has no
//! field for, which `gantry sim` reads: user, account and partition names, and each
//! job's nodes, tasks, GPUs and memory (`; Job:` lines). One line per finished job, by submission; times
//! relative to the first submission (`UnixStartTime` in the header); the cluster's
//! size (`MaxProcs`, `MaxNodes`) from the controller's nodes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use gantry_api as api;
use gantry_sim::JobRequest;

/// SWF status: 1 completed, 0 failed (any other end: failure, time limit, node
/// failure, preemption, deadline), 5 cancelled.
fn status(state: &str) -> i64 {
    match state {
        "COMPLETED" => 1,
        "CANCELLED" => 5,
        _ => 0,
    }
}

/// Whether a job has ended (its state will not change).
fn finished(j: &api::JobInfo) -> bool {
    j.end_time > 0
        && !matches!(
            j.state.as_str(),
            "PENDING" | "RUNNING" | "SUSPENDED" | "REQUEUED" | "COMPLETING"
        )
}

/// What a job that ran asked for beyond its cores, as its allocation shows it: its
/// node count, tasks, GPUs and memory per node (the most any of its nodes got).
fn request(j: &api::JobInfo) -> Option<JobRequest> {
    if j.start_time == 0 || j.allocation.is_empty() {
        return None;
    }
    let per_node_gpus = j.allocation.iter().map(|n| n.gpus.len()).max().unwrap_or(0);
    let per_node_mb = j.allocation.iter().map(|n| n.memory_mb).max().unwrap_or(0);
    Some(JobRequest {
        nodes: Some(j.nodes.max(1)),
        tasks: Some(j.tasks.max(1)),
        cpus_per_task: Some(j.cpus_per_task.max(1)),
        gpus_per_node: (per_node_gpus > 0)
            .then(|| u32::try_from(per_node_gpus).unwrap_or(u32::MAX)),
        mem_per_node_mb: (per_node_mb > 0).then_some(per_node_mb),
    })
}

/// The SWF text of `records` (unfinished jobs are left out) for a cluster of `nodes`.
pub fn render(records: &[api::AccountingRecord], nodes: &[api::NodeInfo]) -> String {
    let mut jobs: Vec<(&api::JobInfo, &api::AccountingRecord)> = records
        .iter()
        .filter_map(|r| Some((r.job.as_ref()?, r)))
        .filter(|(j, _)| finished(j))
        .collect();
    jobs.sort_by_key(|(j, _)| (j.submit_time, j.job_id));
    let start = jobs.first().map_or(0, |(j, _)| j.submit_time);
    // Users, accounts (SWF's groups) and partitions numbered 1.. in name order, as the
    // header's User, Group and Partition lines name them: the archive's traces number
    // them so, and `gantry sim` replays under the names.
    let numbered = |name: fn(&api::JobInfo) -> &str| -> BTreeMap<&str, usize> {
        let mut names: Vec<&str> = jobs.iter().map(|(j, _)| name(j)).collect();
        names.sort_unstable();
        names.dedup();
        names
            .into_iter()
            .enumerate()
            .map(|(i, n)| (n, i + 1))
            .collect()
    };
    let users = numbered(|j| j.user.as_str());
    let accounts = numbered(|j| j.account.as_str());
    let partitions = numbered(|j| j.partition.as_str());
    let procs: u64 = nodes.iter().map(|n| u64::from(n.cores)).sum();
    let mut out = String::new();
    let _ = writeln!(out, "; Version: 2.2");
    let _ = writeln!(out, "; Computer: Gantry");
    let _ = writeln!(out, "; Installation: exported by sacct --swf");
    let _ = writeln!(out, "; UnixStartTime: {start}");
    let _ = writeln!(out, "; MaxJobs: {}", jobs.len());
    let _ = writeln!(out, "; MaxRecords: {}", jobs.len());
    let _ = writeln!(out, "; MaxNodes: {}", nodes.len());
    let _ = writeln!(out, "; MaxProcs: {procs}");
    for (key, names) in [
        ("User", &users),
        ("Group", &accounts),
        ("Partition", &partitions),
    ] {
        for (name, n) in names {
            let _ = writeln!(out, "; {key}: {n} {}", crate::format::printable(name));
        }
    }
    let _ = writeln!(
        out,
        "; Note: job numbers are Gantry's job ids; groups are accounts; status 1 completed, 0 failed, 5 cancelled; Job lines: what a job asked for beyond cores"
    );
    for (j, _) in &jobs {
        if let Some(r) = request(j) {
            let _ = writeln!(out, "; Job: {} {}", j.job_id, r.render());
        }
    }
    for (j, r) in jobs {
        let started = j.start_time > 0;
        let wait = if started {
            j.start_time - j.submit_time
        } else {
            -1
        };
        // A job that never started has no run time (-1): a replay skips it.
        let run = if started {
            (j.end_time - j.start_time - j.suspended_s).max(0)
        } else {
            -1
        };
        let cores = j.cores as i64;
        let per_proc = |total: f64| {
            if cores > 0 && total > 0.0 {
                (total / cores as f64).round() as i64
            } else {
                -1
            }
        };
        let requested = i64::from(j.tasks) * i64::from(j.cpus_per_task.max(1));
        let fields: [i64; 18] = [
            j.job_id as i64,
            j.submit_time - start,
            wait,
            run,
            if started { cores } else { -1 },
            per_proc(r.user_cpu_s + r.system_cpu_s),
            per_proc(r.max_rss_mb as f64 * 1024.0),
            if requested > 0 { requested } else { -1 },
            if j.time_limit_s > 0 {
                j.time_limit_s
            } else {
                -1
            },
            -1,
            status(&j.state),
            users.get(j.user.as_str()).map_or(-1, |&n| n as i64),
            accounts.get(j.account.as_str()).map_or(-1, |&n| n as i64),
            -1,
            -1,
            partitions
                .get(j.partition.as_str())
                .map_or(-1, |&n| n as i64),
            -1,
            -1,
        ];
        let line: Vec<String> = fields.iter().map(i64::to_string).collect();
        let _ = writeln!(out, "{}", line.join(" "));
    }
    out
}
