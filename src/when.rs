//! Times as Slurm's commands take them (`sbatch --begin`, `sacct -S/-E`, `scontrol
//! create reservation StartTime=`), in the local time zone, and as they print them.

use anyhow::{anyhow, Result};
use jiff::civil::{Date, DateTime, Time};
use jiff::{tz::TimeZone, Timestamp, ZonedDateTime as Zoned};

/// Parses one of Slurm's time forms, relative to `now`:
/// `now[+|-N[seconds|minutes|hours|days|weeks]]`, `YYYY-MM-DD[THH:MM[:SS]]`,
/// `MM/DD[/YY][-HH:MM[:SS]]` (also with `.`), `MMDD[YY]`, `HH:MM[:SS][AM|PM]` (today, or
/// tomorrow once past), `today`, `tomorrow`, `midnight`, `noon`, `elevenses` (11:00),
/// `fika` (15:00), `teatime` (16:00), or Unix seconds as `@N`. Returns Unix seconds.
pub fn parse(text: &str, now: &Zoned) -> Result<i64> {
    let t = text.trim();
    let bad = || {
        anyhow!(
            "invalid time '{text}': use now[+N{{seconds|minutes|hours|days|weeks}}], YYYY-MM-DD[THH:MM[:SS]], MM/DD[/YY][-HH:MM[:SS]], HH:MM[:SS], today, tomorrow, midnight or noon"
        )
    };
    if t.is_empty() {
        return Err(bad());
    }
    let lower = t.to_ascii_lowercase();
    if let Some(rest) = lower.strip_prefix("now") {
        return relative(rest, now).ok_or_else(bad);
    }
    if let Some(secs) = lower.strip_prefix('@') {
        return secs.parse().map_err(|_| bad());
    }
    let today = now.date();
    let at = |d: Date, h: i8| -> Result<i64> { local(d.at(h, 0, 0, 0), now.time_zone()) };
    let next_at = |h: i8| -> Result<i64> {
        let d = if now.hour() >= h {
            today.tomorrow().map_err(|e| anyhow!("{e}"))?
        } else {
            today
        };
        at(d, h)
    };
    match lower.as_str() {
        "today" => return at(today, 0),
        "tomorrow" => return at(today.tomorrow().map_err(|e| anyhow!("{e}"))?, 0),
        "midnight" => return at(today.tomorrow().map_err(|e| anyhow!("{e}"))?, 0),
        "noon" => return next_at(12),
        "elevenses" => return next_at(11),
        "fika" => return next_at(15),
        "teatime" => return next_at(16),
        _ => {}
    }
    // YYYY-MM-DD[THH:MM[:SS]]
    if t.len() >= 10 && t.as_bytes()[4] == b'-' {
        let (date, time) = match t.split_once('T') {
            Some((d, tm)) => (d, Some(tm)),
            None => (t, None),
        };
        let date: Date = date.parse().map_err(|_| bad())?;
        let time = match time {
            Some(tm) => clock(tm).ok_or_else(bad)?,
            None => Time::midnight(),
        };
        return local(date.to_datetime(time), now.time_zone());
    }
    // MM/DD[/YY][-HH:MM[:SS]], MM.DD[.YY][-...], MMDD[YY][-...]
    let (date_part, time_part) = match t.split_once('-') {
        Some((d, tm)) => (d, Some(tm)),
        None => (t, None),
    };
    let numeric_date = date_part.contains(['/', '.'])
        || (date_part.len() == 4 || date_part.len() == 6)
            && date_part.bytes().all(|b| b.is_ascii_digit());
    if numeric_date && !date_part.contains(':') {
        let fields: Vec<&str> = if date_part.contains(['/', '.']) {
            date_part.split(['/', '.']).collect()
        } else {
            date_part
                .as_bytes()
                .chunks(2)
                .map(|c| std::str::from_utf8(c).unwrap_or(""))
                .collect()
        };
        let num = |s: &str| s.parse::<i16>().map_err(|_| bad());
        let (month, day) = match fields.as_slice() {
            [m, d] | [m, d, _] => (num(m)?, num(d)?),
            _ => return Err(bad()),
        };
        let year = match fields.get(2) {
            Some(y) if y.len() <= 2 => 2000 + num(y)?,
            Some(y) => num(y)?,
            None => today.year(),
        };
        let date = Date::new(year, month as i8, day as i8).map_err(|_| bad())?;
        let time = match time_part {
            Some(tm) => clock(tm).ok_or_else(bad)?,
            None => Time::midnight(),
        };
        return local(date.to_datetime(time), now.time_zone());
    }
    // HH:MM[:SS][AM|PM]: today, or tomorrow if that has passed.
    let time = clock(t).ok_or_else(bad)?;
    let mut when = today.to_datetime(time);
    if when < now.datetime() {
        when = today
            .tomorrow()
            .map_err(|e| anyhow!("{e}"))?
            .to_datetime(time);
    }
    local(when, now.time_zone())
}

/// `+N[unit]` / `-N[unit]` after `now`.
fn relative(rest: &str, now: &Zoned) -> Option<i64> {
    let base = now.timestamp().as_second();
    if rest.is_empty() {
        return Some(base);
    }
    let (sign, rest) = match rest.as_bytes()[0] {
        b'+' => (1, &rest[1..]),
        b'-' => (-1, &rest[1..]),
        _ => return None,
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let count: i64 = rest[..digits].parse().ok()?;
    let unit = &rest[digits..];
    let scale = match unit {
        "" | "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    };
    base.checked_add(sign * count.checked_mul(scale)?)
}

/// `HH:MM[:SS]` with an optional `AM`/`PM`.
fn clock(text: &str) -> Option<Time> {
    let lower = text.trim().to_ascii_lowercase();
    let (text, half) = if let Some(t) = lower.strip_suffix("am") {
        (t.trim(), Some(false))
    } else if let Some(t) = lower.strip_suffix("pm") {
        (t.trim(), Some(true))
    } else {
        (lower.as_str(), None)
    };
    let mut parts = text.split(':');
    let h: i8 = parts.next()?.parse().ok()?;
    let m: i8 = parts.next()?.parse().ok()?;
    let s: i8 = match parts.next() {
        Some(s) => s.parse().ok()?,
        None => 0,
    };
    if parts.next().is_some() {
        return None;
    }
    let h = match half {
        Some(pm) if (1..=12).contains(&h) => h % 12 + if pm { 12 } else { 0 },
        Some(_) => return None,
        None => h,
    };
    Time::new(h, m, s, 0).ok()
}

fn local(when: DateTime, tz: &TimeZone) -> Result<i64> {
    let z = when
        .to_zoned_datetime(tz.clone())
        .map_err(|e| anyhow!("{when} is not a time in this time zone: {e}"))?;
    Ok(z.timestamp().as_second())
}

/// The current time in the local zone (`TZ`, else the system's).
pub fn now() -> Zoned {
    Zoned::now()
}

/// `YYYY-MM-DDTHH:MM:SS` in the local zone, as Slurm prints times; `None` for none.
pub fn format(t: i64) -> Option<String> {
    if t <= 0 {
        return None;
    }
    let ts = Timestamp::from_second(t).ok()?;
    Some(
        ts.to_zoned_datetime(TimeZone::system())
            .strftime("%Y-%m-%dT%H:%M:%S")
            .to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Zoned {
        format!("{text}[UTC]").parse().unwrap()
    }

    fn utc(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    #[test]
    fn slurm_time_forms_parse_as_slurm_reads_them() {
        let now = at("2026-12-04T10:30:00");
        let n = now.timestamp().as_second();
        assert_eq!(parse("now", &now).unwrap(), n);
        assert_eq!(parse("now+60", &now).unwrap(), n + 60);
        assert_eq!(parse("now+1hour", &now).unwrap(), n + 3600);
        assert_eq!(parse("now-2days", &now).unwrap(), n - 2 * 86_400);
        assert_eq!(parse("now+5minutes", &now).unwrap(), n + 300);
        assert_eq!(
            parse("2026-12-25T08:15", &now).unwrap(),
            utc("2026-12-25T08:15:00Z")
        );
        assert_eq!(
            parse("2026-12-25", &now).unwrap(),
            utc("2026-12-25T00:00:00Z")
        );
        assert_eq!(
            parse("12/25-08:00:30", &now).unwrap(),
            utc("2026-12-25T08:00:30Z")
        );
        assert_eq!(
            parse("12/25/27", &now).unwrap(),
            utc("2027-12-25T00:00:00Z")
        );
        assert_eq!(parse("122527", &now).unwrap(), utc("2027-12-25T00:00:00Z"));
        assert_eq!(parse("16:00", &now).unwrap(), utc("2026-12-04T16:00:00Z"));
        assert_eq!(
            parse("9:00", &now).unwrap(),
            utc("2026-12-05T09:00:00Z"),
            "a time of day that has passed is tomorrow's"
        );
        assert_eq!(parse("4:00PM", &now).unwrap(), utc("2026-12-04T16:00:00Z"));
        assert_eq!(parse("teatime", &now).unwrap(), utc("2026-12-04T16:00:00Z"));
        assert_eq!(
            parse("midnight", &now).unwrap(),
            utc("2026-12-05T00:00:00Z")
        );
        assert_eq!(parse("today", &now).unwrap(), utc("2026-12-04T00:00:00Z"));
        for bad in [
            "",
            "yesterday",
            "now+",
            "now*2",
            "13/45",
            "25:00",
            "2026-13-01",
        ] {
            assert!(parse(bad, &now).is_err(), "{bad:?} is refused");
        }
    }
}
