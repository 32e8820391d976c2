//! The Standard Workload Format (SWF v2.2) of the Parallel Workloads Archive: `;` header
//! lines, then one job per line with 18 whitespace-separated numeric fields; `-1` means
//! unknown. Gzip input is recognised by its magic bytes.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Read};

use flate2::read::MultiGzDecoder;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum SwfError {
    #[error("line {line}: {reason}")]
    Line { line: usize, reason: String },
    #[error("reading the trace failed: {0}")]
    Io(#[from] std::io::Error),
}

/// The fields of one SWF record that replay uses (`None` where the trace says `-1`).
#[derive(Debug, Clone, PartialEq)]
pub struct SwfJob {
    pub id: u64,
    pub submit: i64,
    /// Wait time the original system recorded.
    pub wait: Option<i64>,
    pub run: Option<i64>,
    pub allocated_procs: Option<i64>,
    pub requested_procs: Option<i64>,
    pub requested_time: Option<i64>,
    pub requested_memory_kb: Option<i64>,
    /// 1 completed, 0 failed, 5 cancelled (others per the format).
    pub status: Option<i64>,
    pub user: Option<i64>,
    pub group: Option<i64>,
    pub queue: Option<i64>,
    pub partition: Option<i64>,
    pub preceding_job: Option<i64>,
}

impl SwfJob {
    /// Processors the job asked for: requested, else allocated.
    pub fn procs(&self) -> Option<i64> {
        self.requested_procs
            .filter(|&p| p > 0)
            .or(self.allocated_procs.filter(|&p| p > 0))
    }
}

/// Header facts replay uses.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SwfHeader {
    pub max_procs: Option<u64>,
    pub max_nodes: Option<u64>,
    pub unix_start_time: Option<i64>,
    pub computer: Option<String>,
    /// Names of the numbers the records use, where the header gives them (`; User: 3
    /// alice`, `; Group: 2 physics`, `; Partition: 1 gpu`, as `sacct --swf` writes
    /// them): replay then submits as those users, to those accounts and partitions.
    pub users: BTreeMap<i64, String>,
    pub groups: BTreeMap<i64, String>,
    pub partitions: BTreeMap<i64, String>,
    /// What a job asked for beyond cores, where a `; Job: N key=value ...` line says it
    /// (`sacct --swf` writes one for each job that ran): replay asks for the same.
    pub requests: HashMap<u64, JobRequest>,
}

/// A job's request beyond its processor count, from a `; Job:` line. Keys: `nodes`,
/// `tasks`, `cpus_per_task`, `gpus_per_node`, `mem_per_node_mb`; others are ignored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobRequest {
    pub nodes: Option<u32>,
    pub tasks: Option<u32>,
    pub cpus_per_task: Option<u32>,
    pub gpus_per_node: Option<u32>,
    pub mem_per_node_mb: Option<u64>,
}

impl JobRequest {
    /// `key=value ...`; a value that is not a whole number is left out.
    fn parse(text: &str) -> Self {
        let mut r = Self::default();
        for (k, v) in text.split_whitespace().filter_map(|kv| kv.split_once('=')) {
            match k {
                "nodes" => r.nodes = v.parse().ok(),
                "tasks" => r.tasks = v.parse().ok(),
                "cpus_per_task" => r.cpus_per_task = v.parse().ok(),
                "gpus_per_node" => r.gpus_per_node = v.parse().ok(),
                "mem_per_node_mb" => r.mem_per_node_mb = v.parse().ok(),
                _ => {}
            }
        }
        r
    }

    /// The `; Job:` line's text after the job number (empty when nothing is known).
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        let mut put = |k: &str, v: Option<u64>| {
            if let Some(v) = v {
                out.push(format!("{k}={v}"));
            }
        };
        put("nodes", self.nodes.map(u64::from));
        put("tasks", self.tasks.map(u64::from));
        put("cpus_per_task", self.cpus_per_task.map(u64::from));
        put("gpus_per_node", self.gpus_per_node.map(u64::from));
        put("mem_per_node_mb", self.mem_per_node_mb);
        out.join(" ")
    }
}

/// The most `; Job:` lines a trace may carry (one per job of a large history).
pub const MAX_JOB_LINES: usize = 10_000_000;

/// The most characters a name from a header keeps (longer names are cut).
pub const MAX_HEADER_NAME: usize = 256;

#[derive(Debug, Clone, Default)]
pub struct SwfTrace {
    pub header: SwfHeader,
    pub jobs: Vec<SwfJob>,
}

const FIELD_NAMES: [&str; 18] = [
    "job number",
    "submit time",
    "wait time",
    "run time",
    "allocated processors",
    "average cpu time",
    "used memory",
    "requested processors",
    "requested time",
    "requested memory",
    "status",
    "user id",
    "group id",
    "executable",
    "queue",
    "partition",
    "preceding job",
    "think time",
];

/// Reads a trace, plain or gzip-compressed.
pub fn read_swf(input: impl Read) -> Result<SwfTrace, SwfError> {
    let mut buf = BufReader::new(input);
    let gz = buf.fill_buf()?.starts_with(&[0x1f, 0x8b]);
    if gz {
        parse_swf(BufReader::new(MultiGzDecoder::new(buf)))
    } else {
        parse_swf(buf)
    }
}

/// Parses SWF text. Every malformed line is an error with its line number and reason.
pub fn parse_swf(input: impl BufRead) -> Result<SwfTrace, SwfError> {
    let mut trace = SwfTrace::default();
    for (i, line) in input.lines().enumerate() {
        let line_no = i + 1;
        let line = line.map_err(|e| {
            if e.kind() == std::io::ErrorKind::InvalidData {
                SwfError::Line {
                    line: line_no,
                    reason: "not UTF-8 text (is this an SWF trace?)".into(),
                }
            } else {
                SwfError::Io(e)
            }
        })?;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        if let Some(h) = text.strip_prefix(';') {
            read_header_line(h, &mut trace.header);
            continue;
        }
        trace
            .jobs
            .push(parse_record(text).map_err(|reason| SwfError::Line {
                line: line_no,
                reason,
            })?);
    }
    Ok(trace)
}

fn read_header_line(h: &str, header: &mut SwfHeader) {
    let Some((key, value)) = h.split_once(':') else {
        return;
    };
    let value = value.trim();
    match key.trim() {
        "MaxProcs" => header.max_procs = value.parse().ok(),
        "MaxNodes" => header.max_nodes = value.parse().ok(),
        "UnixStartTime" => header.unix_start_time = value.parse().ok(),
        "Computer" => header.computer = Some(value.to_string()),
        "User" => named(value, &mut header.users),
        "Group" => named(value, &mut header.groups),
        "Partition" => named(value, &mut header.partitions),
        "Job" if header.requests.len() < MAX_JOB_LINES => {
            if let Some((n, rest)) = value.split_once(char::is_whitespace) {
                if let Ok(n) = n.parse::<u64>() {
                    header.requests.insert(n, JobRequest::parse(rest));
                }
            }
        }
        _ => {}
    }
}

/// `N name` into `names` (other forms, such as a free description, are left alone).
fn named(value: &str, names: &mut BTreeMap<i64, String>) {
    let Some((n, name)) = value.split_once(char::is_whitespace) else {
        return;
    };
    let (Ok(n), name) = (n.parse::<i64>(), name.trim()) else {
        return;
    };
    if !name.is_empty() && !name.contains(char::is_whitespace) {
        names.insert(n, name.chars().take(MAX_HEADER_NAME).collect());
    }
}

use gantry_kernel::units::MAX_DURATION;

fn parse_record(text: &str) -> Result<SwfJob, String> {
    let fields: Vec<&str> = text.split_whitespace().collect();
    if fields.len() != 18 {
        return Err(format!("expected 18 fields, found {}", fields.len()));
    }
    let mut v = [0i64; 18];
    for (k, f) in fields.iter().enumerate() {
        v[k] = match f.parse::<i64>() {
            Ok(n) => n,
            // Some archive logs carry fractional values (e.g. average cpu time).
            Err(_) => match f.parse::<f64>() {
                Ok(x) if x.is_finite() => x.round() as i64,
                _ => {
                    return Err(format!(
                        "field {} ({}) is not a number: '{f}'",
                        k + 1,
                        FIELD_NAMES[k]
                    ))
                }
            },
        };
    }
    let known = |x: i64| (x >= 0).then_some(x);
    if v[0] < 0 {
        return Err(format!(
            "field 1 (job number) must be non-negative, found {}",
            v[0]
        ));
    }
    if v[1] < 0 {
        return Err(format!(
            "field 2 (submit time) must be known and non-negative, found {}",
            v[1]
        ));
    }
    // Times beyond a century are typos or corruption, and would overflow the clock
    // arithmetic of a replay (start = submit + wait, end = start + run).
    for k in [1, 2, 3, 8] {
        if v[k] > MAX_DURATION {
            return Err(format!(
                "field {} ({}) is {}: more than a century of seconds",
                k + 1,
                FIELD_NAMES[k],
                v[k]
            ));
        }
    }
    Ok(SwfJob {
        id: v[0] as u64,
        submit: v[1],
        wait: known(v[2]),
        run: known(v[3]),
        allocated_procs: known(v[4]),
        requested_procs: known(v[7]),
        requested_time: known(v[8]),
        requested_memory_kb: known(v[9]),
        status: known(v[10]),
        user: known(v[11]),
        group: known(v[12]),
        queue: known(v[14]),
        partition: known(v[15]),
        preceding_job: known(v[16]),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_header_and_unknown_fields() {
        let t = parse_swf(
            "; MaxProcs: 100\n;Computer: SP2\n1 0 -1 50 4 -1 -1 -1 -1 -1 1 3 -1 -1 -1 -1 -1 -1\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(t.header.max_procs, Some(100));
        assert_eq!(t.header.computer.as_deref(), Some("SP2"));
        let j = &t.jobs[0];
        assert_eq!(
            (j.run, j.procs(), j.requested_time, j.wait, j.user),
            (Some(50), Some(4), None, None, Some(3))
        );
    }

    #[test]
    fn header_names_users_groups_and_partitions() {
        let t = parse_swf(
            "; User: 1 alice\n; Group: 2 physics\n; Partition: 1 gpu\n; Partition: 2 two words\n; User: x bob\n"
                .as_bytes(),
        )
        .unwrap();
        assert_eq!(t.header.users.get(&1).map(String::as_str), Some("alice"));
        assert_eq!(t.header.groups.get(&2).map(String::as_str), Some("physics"));
        assert_eq!(t.header.partitions.get(&1).map(String::as_str), Some("gpu"));
        // A description, not a name; a number that is none.
        assert_eq!(t.header.partitions.len(), 1);
        assert_eq!(t.header.users.len(), 1);
    }

    #[test]
    fn job_lines_carry_requests_beyond_cores() {
        let t = parse_swf(
            "; Job: 7 nodes=2 tasks=4 cpus_per_task=8 gpus_per_node=4 mem_per_node_mb=65536 x=1\n; Job: 8 nodes=lots\n"
                .as_bytes(),
        )
        .unwrap();
        let r = t.header.requests[&7];
        assert_eq!(
            r,
            JobRequest {
                nodes: Some(2),
                tasks: Some(4),
                cpus_per_task: Some(8),
                gpus_per_node: Some(4),
                mem_per_node_mb: Some(65536),
            }
        );
        assert_eq!(
            r.render(),
            "nodes=2 tasks=4 cpus_per_task=8 gpus_per_node=4 mem_per_node_mb=65536"
        );
        assert_eq!(t.header.requests[&8], JobRequest::default());
    }

    #[test]
    fn malformed_lines_name_line_and_reason() {
        let e = parse_swf("; x\n1 0 -1 50 4\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert_eq!(e, "line 2: expected 18 fields, found 5");
        let e = parse_swf("1 0 -1 abc 4 -1 -1 -1 -1 -1 1 3 -1 -1 -1 -1 -1 -1\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("line 1: field 4 (run time) is not a number"),
            "{e}"
        );
        let e = parse_swf("1 -1 -1 5 4 -1 -1 -1 -1 -1 1 3 -1 -1 -1 -1 -1 -1\n".as_bytes())
            .unwrap_err()
            .to_string();
        assert!(e.contains("submit time"), "{e}");
        let e = parse_swf(
            "1 9223372036854775807 -1 5 4 -1 -1 -1 -1 -1 1 3 -1 -1 -1 -1 -1 -1\n".as_bytes(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("field 2 (submit time)") && e.contains("century"),
            "{e}"
        );
    }

    #[test]
    fn reads_gzip_and_plain_alike() {
        use std::io::Write;
        let text = "1 0 -1 50 4 -1 -1 4 60 -1 1 3 -1 -1 -1 -1 -1 -1\n";
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(text.as_bytes()).unwrap();
        let gz = enc.finish().unwrap();
        assert_eq!(
            read_swf(&gz[..]).unwrap().jobs,
            read_swf(text.as_bytes()).unwrap().jobs
        );
        let bad = read_swf(&[0x1f, 0x8b, 0, 1, 2][..]).unwrap_err();
        assert!(matches!(bad, SwfError::Io(_) | SwfError::Line { .. }));
    }
}
