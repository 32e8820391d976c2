//! `sprio`: the priorities of waiting jobs and the factors the priority policy weighs,
//! in Slurm's layout. The factors are the policy's own (`explain` in the WIT): Slurm's
//! (AGE, FAIRSHARE, JOBSIZE, PARTITION, QOS) have Slurm's format letters, and a site
//! policy's other factors appear as columns of the default layout.

use anyhow::{bail, Result};
use clap::Args;
use gantry_api as api;

use crate::client::{client, comma_list, print_json, refused, Conn, JobRefs};
use crate::format::{printable, render};

#[derive(Args, Debug)]
#[command(disable_help_flag = true)]
pub struct SprioArgs {
    /// Only these jobs (comma-separated ids; 12_3 for an array task).
    #[arg(short = 'j', long = "jobs")]
    pub jobs: Option<String>,
    /// Only these users' jobs (comma-separated names or uids).
    #[arg(short = 'u', long = "user", visible_alias = "users")]
    pub users: Option<String>,
    /// Only jobs in these partitions (comma-separated).
    #[arg(short = 'p', long = "partition")]
    pub partitions: Option<String>,
    /// Also the user, account, QOS name and nice of each job.
    #[arg(short = 'l', long = "long")]
    pub long: bool,
    /// Factors as the policy computes them (usually in [0, 1]) rather than weighted.
    #[arg(short = 'n', long = "norm")]
    pub norm: bool,
    /// The weight of each factor, and no jobs.
    #[arg(short = 'w', long = "weights")]
    pub weights: bool,
    /// Fields as `%[.][width]x` (Slurm's letters: i r u o n N Y y, and A F J P Q S B T
    /// for weighted factors, lower case for their values); or $SPRIO_FORMAT.
    #[arg(short = 'o', long = "format", env = "SPRIO_FORMAT")]
    pub format: Option<String>,
    /// Order by these fields (format letters, comma-separated; `-` before one for
    /// descending). Default: job id.
    #[arg(short = 'S', long = "sort", allow_hyphen_values = true)]
    pub sort: Option<String>,
    /// No header.
    #[arg(short = 'h', long = "noheader")]
    pub noheader: bool,
    /// As JSON: Slurm's field names, each factor with its weight and value.
    #[arg(long)]
    pub json: bool,
    /// Only this cluster's jobs (Gantry is one cluster): accepted and ignored.
    #[arg(long = "local")]
    pub local: bool,
    /// More detail: accepted and ignored.
    #[arg(short = 'v', long = "verbose", action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Print help (-h is --noheader, as in Slurm).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
}

/// Slurm's factors: name, format letter of the weighted value (the lower case one is
/// the value itself).
const SLURM_FACTORS: [(&str, char); 8] = [
    ("AGE", 'A'),
    ("ASSOC", 'B'),
    ("FAIRSHARE", 'F'),
    ("JOBSIZE", 'J'),
    ("PARTITION", 'P'),
    ("QOS", 'Q'),
    ("SITE", 'S'),
    ("TRES", 'T'),
];

/// A factor the policy named that Slurm has no letter for goes in the default layout
/// as a private-use character, which `render` handles like any letter: weighted from
/// U+E000, values from U+E100.
const CUSTOM_WEIGHTED: u32 = 0xE000;
const CUSTOM_VALUE: u32 = 0xE100;

/// What a format letter shows of factor `k` (`weighted` or its value), if it names one.
fn factor_of(c: char, factors: &[api::PriorityFactor]) -> Option<(Option<usize>, bool)> {
    let code = c as u32;
    if (CUSTOM_WEIGHTED..CUSTOM_WEIGHTED + 0x100).contains(&code) {
        return Some((Some((code - CUSTOM_WEIGHTED) as usize), true));
    }
    if (CUSTOM_VALUE..CUSTOM_VALUE + 0x100).contains(&code) {
        return Some((Some((code - CUSTOM_VALUE) as usize), false));
    }
    let (name, _) = SLURM_FACTORS
        .iter()
        .find(|(_, l)| *l == c || l.to_ascii_lowercase() == c)?;
    let at = factors.iter().position(|f| f.name == *name);
    Some((at, c.is_ascii_uppercase()))
}

/// The letter that shows factor `k` of the reply.
fn letter_of(k: usize, f: &api::PriorityFactor, weighted: bool) -> char {
    match SLURM_FACTORS.iter().find(|(n, _)| *n == f.name) {
        Some(&(_, l)) if weighted => l,
        Some(&(_, l)) => l.to_ascii_lowercase(),
        None => {
            let base = if weighted {
                CUSTOM_WEIGHTED
            } else {
                CUSTOM_VALUE
            };
            char::from_u32(base + k as u32).unwrap_or('?')
        }
    }
}

/// The default layout (Slurm's, with only the factors the policy weighs).
fn default_format(a: &SprioArgs, factors: &[api::PriorityFactor]) -> String {
    let mut f = String::from("%.15i %9r ");
    if a.long || a.users.is_some() {
        f.push_str("%.8u ");
    }
    if a.long {
        f.push_str("%.8o ");
    }
    f.push_str(if a.norm { "%.10y " } else { "%.10Y " });
    let mut qos_name = a.long;
    for (k, factor) in factors.iter().enumerate() {
        if factor.weight == 0.0 {
            continue;
        }
        if qos_name && factor.name == "QOS" {
            f.push_str("%.10n ");
            qos_name = false;
        }
        let width = factor.name.chars().count().max(10);
        f.push_str(&format!("%.{width}{} ", letter_of(k, factor, !a.norm)));
    }
    if qos_name {
        f.push_str("%.10n ");
    }
    if a.long {
        f.push_str("%.11N ");
    }
    f.trim_end().to_string()
}

/// A field's column name; an error for a letter sprio does not know, so that a bad
/// format is refused even when there are no jobs to show.
fn header(c: char, factors: &[api::PriorityFactor]) -> Result<String> {
    if let Some((at, _)) = factor_of(c, factors) {
        let code = c as u32;
        if code >= CUSTOM_WEIGHTED {
            return Ok(at
                .and_then(|k| factors.get(k))
                .map_or("?".into(), |f| f.name.clone()));
        }
        return Ok(SLURM_FACTORS
            .iter()
            .find(|(_, l)| l.eq_ignore_ascii_case(&c))
            .map_or("?", |(n, _)| *n)
            .to_string());
    }
    Ok(match c {
        'i' => "JOBID",
        'r' => "PARTITION",
        'u' => "USER",
        'o' => "ACCOUNT",
        'n' => "QOSNAME",
        'N' => "NICE",
        'Y' | 'y' => "PRIORITY",
        'c' => "CLUSTER",
        _ => bail!("'%{c}' is not a field sprio knows (see sprio --help)"),
    }
    .to_string())
}

/// Slurm's normalized priority: the priority over the largest 32-bit one.
fn normalized(priority: i64) -> f64 {
    priority as f64 / f64::from(u32::MAX)
}

fn weighted(f: &api::PriorityFactor, value: f64) -> f64 {
    f.weight * value
}

fn field(c: char, j: &api::JobPriority, factors: &[api::PriorityFactor]) -> Result<String> {
    if let Some((at, weighted_value)) = factor_of(c, factors) {
        let value = at.and_then(|k| Some((factors.get(k)?, *j.factors.get(k)?)));
        return Ok(match (value, weighted_value) {
            (Some((f, v)), true) => format!("{:.0}", weighted(f, v)),
            (Some((_, v)), false) => format!("{v:.7}"),
            (None, true) => "0".into(),
            (None, false) => format!("{:.7}", 0.0),
        });
    }
    Ok(match c {
        'i' => job_id(j),
        'r' => printable(&j.partition).into_owned(),
        'u' => printable(&j.user).into_owned(),
        'o' => printable(&j.account).into_owned(),
        'n' => printable(&j.qos).into_owned(),
        'N' => j.nice.to_string(),
        'Y' => j.priority.to_string(),
        'y' => format!("{:.8}", normalized(j.priority)),
        'c' => String::new(),
        _ => bail!("'%{c}' is not a field sprio knows (see sprio --help)"),
    })
}

fn job_id(j: &api::JobPriority) -> String {
    if j.array_job_id != 0 {
        format!("{}_{}", j.array_job_id, j.array_task_id)
    } else {
        j.job_id.to_string()
    }
}

/// The weights row of `-w`: "Weights" under JOBID and each factor's weight.
fn weight_field(c: char, factors: &[api::PriorityFactor]) -> String {
    if c == 'i' {
        return "Weights".into();
    }
    match factor_of(c, factors) {
        Some((Some(k), true)) => factors
            .get(k)
            .map_or(String::new(), |f| format!("{:.0}", f.weight)),
        Some((Some(k), false)) => factors
            .get(k)
            .map_or(String::new(), |f| f.weight.to_string()),
        _ => String::new(),
    }
}

/// A sort key: one of the format letters.
enum Key {
    Number(f64),
    Text(String),
}

fn sort_key(c: char, j: &api::JobPriority, factors: &[api::PriorityFactor]) -> Key {
    if let Some((at, w)) = factor_of(c, factors) {
        let v = at
            .and_then(|k| Some((factors.get(k)?, *j.factors.get(k)?)))
            .map_or(0.0, |(f, v)| if w { weighted(f, v) } else { v });
        return Key::Number(v);
    }
    match c {
        'Y' | 'y' => Key::Number(j.priority as f64),
        'N' => Key::Number(f64::from(j.nice)),
        'r' => Key::Text(j.partition.clone()),
        'u' => Key::Text(j.user.clone()),
        'o' => Key::Text(j.account.clone()),
        'n' => Key::Text(j.qos.clone()),
        // 'i' and anything else: the job id.
        _ => Key::Number(j.job_id as f64),
    }
}

fn sort(rows: &mut [api::JobPriority], spec: &str, factors: &[api::PriorityFactor]) -> Result<()> {
    let mut keys: Vec<(char, bool)> = Vec::new();
    for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (descending, letter) = match item.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, item.strip_prefix('+').unwrap_or(item)),
        };
        let mut chars = letter.chars();
        match (chars.next(), chars.next()) {
            (Some(c), None) => keys.push((c, descending)),
            _ => bail!("'{item}' is not a sort field: give one format letter, as -S -y,i"),
        }
    }
    rows.sort_by(|a, b| {
        for &(c, descending) in &keys {
            let o = match (sort_key(c, a, factors), sort_key(c, b, factors)) {
                (Key::Number(x), Key::Number(y)) => x.total_cmp(&y),
                (Key::Text(x), Key::Text(y)) => x.cmp(&y),
                _ => std::cmp::Ordering::Equal,
            };
            let o = if descending { o.reverse() } else { o };
            if o.is_ne() {
                return o;
            }
        }
        a.job_id.cmp(&b.job_id)
    });
    Ok(())
}

pub async fn sprio(conn: &Conn, a: SprioArgs) -> Result<()> {
    let refs = JobRefs::parse(&a.jobs)?;
    let users = comma_list(&a.users);
    let partitions = comma_list(&a.partitions);
    let mut c = client(conn).await?;
    let reply = c
        .priority_factors(api::PriorityFactorsRequest {})
        .await
        .map_err(refused)?
        .into_inner();
    let factors = reply.factors;
    let mut rows: Vec<api::JobPriority> = reply
        .jobs
        .into_iter()
        .filter(|j| refs.names(j.job_id, j.array_job_id, j.array_task_id))
        .filter(|j| {
            users.is_empty()
                || users
                    .iter()
                    .any(|u| *u == j.user || u.parse::<u32>() == Ok(j.uid))
        })
        .filter(|j| partitions.is_empty() || partitions.contains(&j.partition))
        .collect();
    if !reply.error.is_empty() {
        eprintln!(
            "sprio: warning: the priority policy's breakdown was refused ({}); priorities only",
            printable(&reply.error)
        );
    }
    if let Some(spec) = &a.sort {
        sort(&mut rows, spec, &factors)?;
    }
    if a.json {
        return print_json(&json(&rows, &factors, &reply.error));
    }
    let format = match &a.format {
        Some(f) => f.clone(),
        None => default_format(&a, &factors),
    };
    let head = render(&format, |c| header(c, &factors))?;
    let filtered = a.jobs.is_some() || a.users.is_some() || a.partitions.is_some();
    if rows.is_empty() && filtered && !a.weights {
        println!("Unable to find jobs matching user/id(s) specified");
        return Ok(());
    }
    if !a.noheader {
        println!("{head}");
    }
    if a.weights {
        println!("{}", render(&format, |c| Ok(weight_field(c, &factors)))?);
        return Ok(());
    }
    for j in &rows {
        println!("{}", render(&format, |c| field(c, j, &factors))?);
    }
    Ok(())
}

/// Slurm's names for the fields it shares (`job_id`, `user_name`, `partition`,
/// `priority`, `nice`), with a `meta`/`errors` block; each factor by name with its
/// weight, value and weighted value.
fn json(
    rows: &[api::JobPriority],
    factors: &[api::PriorityFactor],
    error: &str,
) -> serde_json::Value {
    let jobs: Vec<serde_json::Value> = rows
        .iter()
        .map(|j| {
            let f: serde_json::Map<String, serde_json::Value> = factors
                .iter()
                .zip(&j.factors)
                .map(|(f, &v)| {
                    (
                        f.name.clone(),
                        serde_json::json!({
                            "weight": f.weight,
                            "value": v,
                            "weighted": weighted(f, v),
                        }),
                    )
                })
                .collect();
            serde_json::json!({
                "job_id": j.job_id,
                "array_job_id": (j.array_job_id != 0).then_some(j.array_job_id),
                "array_task_id": (j.array_job_id != 0).then_some(j.array_task_id),
                "user_name": j.user,
                "user_id": j.uid,
                "account": j.account,
                "partition": j.partition,
                "qos": j.qos,
                "priority": j.priority,
                "nice": j.nice,
                "factors": f,
            })
        })
        .collect();
    let weights: serde_json::Map<String, serde_json::Value> = factors
        .iter()
        .map(|f| (f.name.clone(), serde_json::json!(f.weight)))
        .collect();
    let errors: Vec<serde_json::Value> = if error.is_empty() {
        Vec::new()
    } else {
        vec![serde_json::json!({ "description": error, "source": "priority policy" })]
    };
    serde_json::json!({
        "meta": crate::format::json_meta("sprio"),
        "errors": errors,
        "warnings": [],
        "weights": weights,
        "jobs": jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        a: SprioArgs,
    }

    fn args(v: &[&str]) -> SprioArgs {
        Cli::parse_from(std::iter::once("sprio").chain(v.iter().copied())).a
    }

    fn multifactor() -> Vec<api::PriorityFactor> {
        [
            "AGE",
            "FAIRSHARE",
            "JOBSIZE",
            "PARTITION",
            "QOS",
            "DEADLINE",
        ]
        .iter()
        .zip([1000.0, 10_000.0, 1000.0, 1000.0, 0.0, 500.0])
        .map(|(n, w)| api::PriorityFactor {
            name: n.to_string(),
            weight: w,
        })
        .collect()
    }

    fn job() -> api::JobPriority {
        api::JobPriority {
            job_id: 42,
            user: "alice".into(),
            account: "physics".into(),
            partition: "cpu".into(),
            qos: "normal".into(),
            priority: 6_123,
            nice: 10,
            factors: vec![0.5, 0.5133, 0.9, 1.0, 0.0, 0.25],
            ..Default::default()
        }
    }

    /// The default layout is Slurm's with the factors the policy weighs (QOS has no
    /// weight here), its own factors by name, and each value weighted and rounded.
    #[test]
    fn the_default_layout_shows_the_weighted_factors_of_the_policy() {
        let f = multifactor();
        let format = default_format(&args(&[]), &f);
        let head = render(&format, |c| header(c, &f)).unwrap();
        let names: Vec<&str> = head.split_whitespace().collect();
        assert_eq!(
            names,
            [
                "JOBID",
                "PARTITION",
                "PRIORITY",
                "AGE",
                "FAIRSHARE",
                "JOBSIZE",
                "PARTITION",
                "DEADLINE"
            ]
        );
        let line = render(&format, |c| field(c, &job(), &f)).unwrap();
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(
            cells,
            ["42", "cpu", "6123", "500", "5133", "900", "1000", "125"]
        );
        assert_eq!(head.len(), line.len(), "cells line up under their names");

        let long = default_format(&args(&["-l", "-n"]), &f);
        let head = render(&long, |c| header(c, &f)).unwrap();
        assert!(head.contains("USER") && head.contains("QOSNAME") && head.ends_with("NICE"));
        let line = render(&long, |c| field(c, &job(), &f)).unwrap();
        assert!(
            line.contains("0.5133000") && line.contains("alice"),
            "{line}"
        );

        let w = render(&format, |c| Ok(weight_field(c, &f))).unwrap();
        let cells: Vec<&str> = w.split_whitespace().collect();
        assert_eq!(cells, ["Weights", "1000", "10000", "1000", "1000", "500"]);
    }

    #[test]
    fn slurm_letters_find_factors_and_absent_ones_are_zero() {
        let f = multifactor();
        let j = job();
        let line = render("%i %A %a %Q %S %y %N", |c| field(c, &j, &f)).unwrap();
        assert_eq!(line, "42 500 0.5000000 0 0 0.00000143 10");
        assert!(render("%Z", |c| field(c, &j, &f)).is_err());
    }

    #[test]
    fn sort_fields_order_the_rows() {
        let f = multifactor();
        let mut rows = vec![job(), job(), job()];
        rows[1].job_id = 7;
        rows[1].priority = 9_000;
        rows[2].job_id = 9;
        rows[2].user = "bob".into();
        sort(&mut rows, "-y", &f).unwrap();
        let ids: Vec<u64> = rows.iter().map(|r| r.job_id).collect();
        assert_eq!(ids, [7, 9, 42]);
        sort(&mut rows, "u,-i", &f).unwrap();
        let ids: Vec<u64> = rows.iter().map(|r| r.job_id).collect();
        assert_eq!(ids, [42, 7, 9]);
        assert!(sort(&mut rows, "ab", &f).is_err());
    }
}
