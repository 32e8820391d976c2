//! Parsers for the quantities users type: durations in Slurm's formats, memory sizes and
//! host lists. Pure functions; the CLI, the cluster loader and `#SBATCH` parsing share them.

use thiserror::Error;

/// Seconds on the scheduler's clock (virtual in the simulator, Unix time in the daemon).
pub type Time = i64;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum UnitError {
    #[error(
        "invalid time '{0}': use minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS or UNLIMITED"
    )]
    Duration(String),
    #[error(
        "invalid memory size '{0}': use a number with an optional K, M, G or T suffix (default M)"
    )]
    Memory(String),
    #[error("invalid host list '{0}': {1}")]
    Hostlist(String, String),
}

/// The longest duration accepted: 100 years, in seconds (anything longer is a typo).
pub const MAX_DURATION: Time = 100 * 365 * 86_400;

/// Parses a Slurm time limit into seconds. `None` means unlimited.
///
/// Accepted: `M`, `M:S`, `H:M:S`, `D-H`, `D-H:M`, `D-H:M:S`, `UNLIMITED`, `infinite`.
pub fn parse_duration(text: &str) -> Result<Option<Time>, UnitError> {
    let t = text.trim();
    let bad = || UnitError::Duration(text.to_string());
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinite") {
        return Ok(None);
    }
    let num = |s: &str| -> Result<i64, UnitError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        s.parse::<i64>().map_err(|_| bad())
    };
    let (days, rest) = match t.split_once('-') {
        Some((d, r)) => (Some(num(d)?), r),
        None => (None, t),
    };
    let parts: Vec<&str> = rest.split(':').collect();
    // (days, hours, minutes, seconds); each part may be as large as the user writes it.
    let (d, h, m, sec) = match (days, parts.as_slice()) {
        (None, [m]) => (0, 0, num(m)?, 0),
        (None, [m, s]) => (0, 0, num(m)?, num(s)?),
        (None, [h, m, s]) => (0, num(h)?, num(m)?, num(s)?),
        (Some(d), [h]) => (d, num(h)?, 0, 0),
        (Some(d), [h, m]) => (d, num(h)?, num(m)?, 0),
        (Some(d), [h, m, s]) => (d, num(h)?, num(m)?, num(s)?),
        _ => return Err(bad()),
    };
    let secs = d
        .checked_mul(86_400)
        .and_then(|x| x.checked_add(h.checked_mul(3600)?))
        .and_then(|x| x.checked_add(m.checked_mul(60)?))
        .and_then(|x| x.checked_add(sec))
        .filter(|&x| x <= MAX_DURATION)
        .ok_or_else(bad)?;
    Ok(Some(secs))
}

/// Formats seconds the way Slurm prints a time limit (`D-HH:MM:SS` or `HH:MM:SS`).
pub fn format_duration(secs: Option<Time>) -> String {
    match secs {
        None => "UNLIMITED".into(),
        Some(s) => {
            let (d, h, m, s) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60, s % 60);
            if d > 0 {
                format!("{d}-{h:02}:{m:02}:{s:02}")
            } else {
                format!("{h:02}:{m:02}:{s:02}")
            }
        }
    }
}

/// Parses a memory size into MiB (`4G` or `4GB` → 4096; a bare number is MiB, as in
/// Slurm).
pub fn parse_memory_mb(text: &str) -> Result<u64, UnitError> {
    let t = text.trim();
    let t = match t.strip_suffix(['B', 'b']) {
        Some(rest) if rest.ends_with(|c: char| "KMGTkmgt".contains(c)) => rest,
        _ => t,
    };
    let bad = || UnitError::Memory(text.to_string());
    let (digits, scale) = match t.chars().last().map(|c| c.to_ascii_uppercase()) {
        Some('K') => (&t[..t.len() - 1], 0),
        Some('M') => (&t[..t.len() - 1], 1),
        Some('G') => (&t[..t.len() - 1], 1024),
        Some('T') => (&t[..t.len() - 1], 1024 * 1024),
        Some(c) if c.is_ascii_digit() => (t, 1),
        _ => return Err(bad()),
    };
    let n: u64 = digits.parse().map_err(|_| bad())?;
    Ok(if scale == 0 {
        n.div_ceil(1024)
    } else {
        n.checked_mul(scale).ok_or_else(bad)?
    })
}

/// The most names one host list may expand to.
pub const MAX_HOSTLIST_NAMES: usize = 1_000_000;

/// Expands a host list such as `gpu[01-04,07],login1` into names, in order.
/// Several bracket groups in one name (`r[1-2]n[1-3]`) expand as a product; the whole
/// list may hold at most [`MAX_HOSTLIST_NAMES`] names.
pub fn expand_hostlist(list: &str) -> Result<Vec<String>, UnitError> {
    expand_hostlist_at_most(list, MAX_HOSTLIST_NAMES)
}

/// [`expand_hostlist`], refusing (before building more) a list of more than `max` names.
pub fn expand_hostlist_at_most(list: &str, max: usize) -> Result<Vec<String>, UnitError> {
    let max = max.min(MAX_HOSTLIST_NAMES);
    let err = |why: &str| UnitError::Hostlist(list.to_string(), why.to_string());
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    let bytes = list.as_bytes();
    for i in 0..=bytes.len() {
        let at_end = i == bytes.len();
        if !at_end {
            match bytes[i] {
                b'[' => depth += 1,
                b']' if depth == 0 => return Err(err("']' without '['")),
                b']' => depth -= 1,
                _ => {}
            }
        }
        if at_end || (bytes[i] == b',' && depth == 0) {
            if depth != 0 {
                return Err(err("unclosed '['"));
            }
            let item = list[start..i].trim();
            if item.is_empty() {
                return Err(err("empty host name"));
            }
            expand_one(item, &mut out, max).map_err(|why| err(&why))?;
            start = i + 1;
        }
    }
    Ok(out)
}

/// The Slurm hostlist form of `names`, inverse of [`expand_hostlist`]: names that share
/// a prefix and a zero-padded number of the same width are folded into ranges, in the
/// order first seen (`cpu001,cpu002,cpu004,gpu1` → `cpu[001-002,004],gpu1`).
pub fn compress_hostlist<S: AsRef<str>>(names: &[S]) -> String {
    // (prefix, width) → numbers, in order of first appearance; found through an index,
    // since names that differ before their last digits (`a0b1`, `a1b1`, ...) make one
    // group each, and a linear search over them would be quadratic.
    let mut groups: Vec<((String, usize), Vec<u64>)> = Vec::new();
    let mut group_of: rustc_hash::FxHashMap<(String, usize), usize> = Default::default();
    let mut plain: Vec<(usize, String)> = Vec::new();
    for (order, name) in names.iter().enumerate() {
        let name = name.as_ref();
        let digits = name.len() - name.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        let (prefix, number) = name.split_at(name.len() - digits);
        match number.parse::<u64>() {
            Ok(n) if digits > 0 => {
                let key = (prefix.to_string(), digits);
                match group_of.get(&key) {
                    Some(&g) => groups[g].1.push(n),
                    None => {
                        group_of.insert(key.clone(), groups.len());
                        groups.push((key, vec![n]));
                    }
                }
            }
            _ => plain.push((order, name.to_string())),
        }
    }
    let mut parts: Vec<String> = groups
        .into_iter()
        .map(|((prefix, width), mut ns)| {
            ns.sort_unstable();
            ns.dedup();
            if ns.len() == 1 {
                return format!("{prefix}{:0width$}", ns[0]);
            }
            let mut ranges: Vec<String> = Vec::new();
            let mut i = 0;
            while i < ns.len() {
                let mut j = i;
                while j + 1 < ns.len() && ns[j + 1] == ns[j] + 1 {
                    j += 1;
                }
                ranges.push(if i == j {
                    format!("{:0width$}", ns[i])
                } else {
                    format!("{:0width$}-{:0width$}", ns[i], ns[j])
                });
                i = j + 1;
            }
            format!("{prefix}[{}]", ranges.join(","))
        })
        .collect();
    parts.extend(plain.into_iter().map(|(_, n)| n));
    parts.join(",")
}

fn expand_one(item: &str, out: &mut Vec<String>, max: usize) -> Result<(), String> {
    let Some(open) = item.find('[') else {
        if out.len() >= max {
            return Err(format!("more than {max} names"));
        }
        out.push(item.to_string());
        return Ok(());
    };
    let close = item[open..]
        .find(']')
        .map(|c| c + open)
        .ok_or("unclosed '['")?;
    let (prefix, body, suffix) = (&item[..open], &item[open + 1..close], &item[close + 1..]);
    for range in body.split(',') {
        let (lo, hi) = range.split_once('-').unwrap_or((range, range));
        let width = lo.len();
        let lo_n: u64 = lo
            .parse()
            .map_err(|_| format!("'{range}' is not a number or range"))?;
        let hi_n: u64 = hi
            .parse()
            .map_err(|_| format!("'{range}' is not a number or range"))?;
        if hi_n < lo_n {
            return Err(format!("range '{range}' runs backwards"));
        }
        if hi_n - lo_n > 1_000_000 {
            return Err(format!("range '{range}' is too large"));
        }
        for n in lo_n..=hi_n {
            expand_one(&format!("{prefix}{n:0width$}{suffix}"), out, max)?;
        }
    }
    Ok(())
}

/// Per-node counts in Slurm's compressed form: runs of equal values as `N(xM)`, joined
/// by commas (`[2, 2, 1]` → `2(x2),1`), as in `SLURM_TASKS_PER_NODE`.
pub fn compress_counts(values: &[u32]) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut i = 0;
    while i < values.len() {
        let run = values[i..].iter().take_while(|&&v| v == values[i]).count();
        parts.push(if run > 1 {
            format!("{}(x{run})", values[i])
        } else {
            values[i].to_string()
        });
        i += run;
    }
    parts.join(",")
}

/// What a `%` field of a file name pattern stands for.
pub enum PatternField {
    /// Zero-padded to the width given (`%4j`).
    Number(u64),
    Text(String),
}

/// Widest zero padding a pattern may ask for (Slurm's limit).
const MAX_PATTERN_WIDTH: usize = 10;

/// Expands a Slurm file name pattern (`slurm-%j.out`, `%x-%A_%a.out`, `out.%4t`):
/// `field` says what each letter stands for (`None`: kept as written); `%%` is a percent
/// sign; a width between `%` and the letter zero-pads numbers.
pub fn expand_file_pattern(pattern: &str, field: impl Fn(char) -> Option<PatternField>) -> String {
    let mut out = String::with_capacity(pattern.len());
    let mut chars = pattern.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut digits = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            digits.push(d);
            chars.next();
        }
        let width = digits.parse::<usize>().unwrap_or(0).min(MAX_PATTERN_WIDTH);
        match chars.next() {
            Some('%') if digits.is_empty() => out.push('%'),
            Some(letter) => match field(letter) {
                Some(PatternField::Number(n)) => out.push_str(&format!("{n:0width$}")),
                Some(PatternField::Text(t)) => out.push_str(&t),
                None => {
                    out.push('%');
                    out.push_str(&digits);
                    out.push(letter);
                }
            },
            None => {
                out.push('%');
                out.push_str(&digits);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_patterns_expand_as_slurm_expands_them() {
        let f = |c: char| match c {
            'j' => Some(PatternField::Number(42)),
            'x' => Some(PatternField::Text("train".into())),
            _ => None,
        };
        assert_eq!(expand_file_pattern("slurm-%j.out", f), "slurm-42.out");
        assert_eq!(expand_file_pattern("%x-%5j.out", f), "train-00042.out");
        assert_eq!(expand_file_pattern("100%%-%q-%", f), "100%-%q-%");
        assert_eq!(expand_file_pattern("%99j", f), "0000000042");
    }

    #[test]
    fn a_million_names_of_a_million_prefixes_compress_in_linear_time() {
        let names = expand_hostlist("a[0-999999]b1").unwrap();
        assert_eq!(names.len(), 1_000_000);
        let folded = compress_hostlist(&names);
        assert!(
            folded.starts_with("a0b1,a1b1,"),
            "one group per prefix: {}",
            &folded[..20]
        );
    }

    #[test]
    fn durations_too_long_to_hold_are_errors_not_overflows() {
        use super::{parse_duration, MAX_DURATION};
        assert!(parse_duration("9223372036854775807-0").is_err());
        assert!(parse_duration("99999999999999999:00:00").is_err());
        assert!(parse_duration("153722867280912930").is_err());
        assert_eq!(parse_duration("36500-0").unwrap(), Some(MAX_DURATION));
        assert!(parse_duration("36500-0:0:1").is_err());
    }

    #[test]
    fn hostlists_compress_back_to_what_expands() {
        assert_eq!(
            compress_hostlist(&["cpu001", "cpu002", "cpu004", "gpu1"]),
            "cpu[001-002,004],gpu1"
        );
        assert_eq!(compress_hostlist(&["node7"]), "node7");
        assert_eq!(
            compress_hostlist(&["login", "a1", "a2", "a3"]),
            "a[1-3],login"
        );
        assert_eq!(compress_hostlist::<&str>(&[]), "");
        let names = ["dgx01", "dgx02", "pcie01", "cpu003", "cpu001", "cpu002"];
        let back = expand_hostlist(&compress_hostlist(&names)).unwrap();
        let mut want: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut got = back.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
    }

    #[test]
    fn durations_in_slurm_formats() {
        assert_eq!(parse_duration("30"), Ok(Some(1800)));
        assert_eq!(parse_duration("1:30"), Ok(Some(90)));
        assert_eq!(parse_duration("01:00:05"), Ok(Some(3605)));
        assert_eq!(parse_duration("2-00:00:00"), Ok(Some(172_800)));
        assert_eq!(parse_duration("1-2"), Ok(Some(93_600)));
        assert_eq!(parse_duration("1-0:30"), Ok(Some(88_200)));
        assert_eq!(parse_duration("UNLIMITED"), Ok(None));
        assert!(parse_duration("1h").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1:2:3:4").is_err());
        assert_eq!(format_duration(Some(172_805)), "2-00:00:05");
    }

    #[test]
    fn memory_sizes() {
        assert_eq!(parse_memory_mb("4G"), Ok(4096));
        assert_eq!(parse_memory_mb("500"), Ok(500));
        assert_eq!(parse_memory_mb("1t"), Ok(1_048_576));
        assert_eq!(parse_memory_mb("2GB"), Ok(2048));
        assert_eq!(parse_memory_mb("512MB"), Ok(512));
        assert!(parse_memory_mb("5B").is_err());
        assert_eq!(parse_memory_mb("2048K"), Ok(2));
        assert!(parse_memory_mb("lots").is_err());
        assert!(parse_memory_mb("G").is_err());
    }

    #[test]
    fn host_lists() {
        assert_eq!(
            expand_hostlist("gpu[01-03,07],login").unwrap(),
            vec!["gpu01", "gpu02", "gpu03", "gpu07", "login"]
        );
        assert_eq!(
            expand_hostlist("r[1-2]n[1-2]").unwrap(),
            vec!["r1n1", "r1n2", "r2n1", "r2n2"]
        );
        assert!(expand_hostlist("gpu[3-1]").is_err());
        assert!(expand_hostlist("gpu[1-2").is_err());
        assert!(expand_hostlist("a,,b").is_err());
    }

    #[test]
    fn per_node_counts_compress_as_slurm_writes_them() {
        assert_eq!(compress_counts(&[8; 8]), "8(x8)");
        assert_eq!(compress_counts(&[2, 2, 1]), "2(x2),1");
        assert_eq!(compress_counts(&[1, 2, 1]), "1,2,1");
        assert_eq!(compress_counts(&[]), "");
    }
}
