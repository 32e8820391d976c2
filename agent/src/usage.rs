//! What running jobs and steps use on this node, read from `/proc`: CPU seconds (user
//! and system) and resident memory of every process in their process groups (`sstat`).

use std::collections::HashMap;

/// What one process group uses now.
#[derive(Debug, Default, Clone, Copy, PartialEq)]
pub struct GroupUsage {
    pub cpu_s: f64,
    pub rss_mb: u64,
    pub processes: u32,
}

/// The CPU seconds, resident MiB and process count of each of `groups`' processes,
/// from `/proc/[pid]/stat`. A process that ends while it is read is skipped.
pub fn sample(groups: &[i32]) -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, GroupUsage> = HashMap::new();
    if groups.is_empty() {
        return out;
    }
    // SAFETY: sysconf reads a constant of the running system.
    let (ticks, page) = unsafe {
        (
            libc::sysconf(libc::_SC_CLK_TCK).max(1) as f64,
            libc::sysconf(libc::_SC_PAGESIZE).max(1) as u64,
        )
    };
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((pgrp, g)) = parse_stat(&stat, ticks, page) else {
            continue;
        };
        if groups.contains(&pgrp) {
            let u = out.entry(pgrp).or_default();
            u.cpu_s += g.cpu_s;
            u.rss_mb += g.rss_mb;
            u.processes += 1;
        }
    }
    out
}

/// A `/proc/[pid]/stat` line: its process group, and its CPU seconds and resident
/// memory in MiB.
fn parse_stat(stat: &str, ticks: f64, page: u64) -> Option<(i32, GroupUsage)> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // After the name: state(0) ppid(1) pgrp(2) ... utime(11) stime(12) ... rss(21).
    let pgrp: i32 = f.get(2)?.parse().ok()?;
    let utime: f64 = f.get(11)?.parse().ok()?;
    let stime: f64 = f.get(12)?.parse().ok()?;
    let rss_pages: u64 = f.get(21)?.parse().ok()?;
    Some((
        pgrp,
        GroupUsage {
            cpu_s: (utime + stime) / ticks,
            rss_mb: rss_pages * page / (1024 * 1024),
            processes: 1,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stat_line_is_read_after_the_command_name() {
        let line = "4242 (my (odd) prog) S 1 4240 4240 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 12345 1000000 2560 18446744073709551615";
        let (pgrp, u) = parse_stat(line, 100.0, 4096).unwrap();
        assert_eq!(pgrp, 4240);
        assert!((u.cpu_s - 3.0).abs() < 1e-9, "{u:?}");
        assert_eq!(u.rss_mb, 10, "2560 pages of 4 KiB");
        assert!(parse_stat("garbage", 100.0, 4096).is_none());
    }

    #[test]
    fn this_process_group_is_found() {
        // SAFETY: getpgrp has no preconditions.
        let me = unsafe { libc::getpgrp() };
        let got = sample(&[me]);
        let u = got.get(&me).expect("our own group");
        assert!(u.processes >= 1 && u.rss_mb > 0, "{u:?}");
    }
}
