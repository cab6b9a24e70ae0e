//! Values with units as QA writes them: durations ("250ms", "2m", "1h30m",
//! "30d"), rates ("2000/s", "600/m"), times of day ("15:00"), daily windows
//! ("08:00-18:00") and IANA time zones. Pure functions; each error names the
//! accepted shape so the scenario checker can show it as a hint.

use std::time::Duration;

use jiff::civil::Time;

/// Longest duration a scenario may name (bounds arithmetic and run length).
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);
/// Highest arrival rate a scenario may ask for, per second.
pub const MAX_RATE_PER_S: f64 = 10_000_000.0;

pub const DURATION_HINT: &str = "durations look like '250ms', '30s', '2m', '1h30m' or '30d'";
pub const RATE_HINT: &str = "rates look like '100/s', '600/m' or '50/h'";
pub const TIME_HINT: &str = "times of day look like '15:00' (24-hour clock)";
pub const WINDOW_HINT: &str = "daily windows look like '08:00-18:00' (may cross midnight)";

/// A value that does not parse, with a hint on the expected shape.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnitError {
    pub message: String,
    pub hint: String,
}

fn err(message: String, hint: &str) -> UnitError {
    UnitError {
        message,
        hint: hint.to_string(),
    }
}

/// Splits "12.5ms" into (12.5, "ms"); `None` if there is no leading number.
fn number_prefix(s: &str) -> Option<(f64, &str)> {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    let n: f64 = s[..end].parse().ok()?;
    Some((n, &s[end..]))
}

/// Parses "250ms", "30s", "2m", "1h30m", "1h 30m", "1.5s", "30d".
pub fn parse_duration(text: &str) -> Result<Duration, UnitError> {
    let s = text.trim();
    let bad = || err(format!("`{text}` is not a duration"), DURATION_HINT);
    if s.is_empty() {
        return Err(bad());
    }
    if s.parse::<f64>().is_ok() {
        return Err(err(
            format!("`{text}` has no unit"),
            &format!("add a unit, e.g. '{s}s'; {DURATION_HINT}"),
        ));
    }
    let mut rest = s;
    let mut total_s = 0.0_f64;
    while !rest.is_empty() {
        let (n, after) = number_prefix(rest).ok_or_else(bad)?;
        let unit_len = after
            .char_indices()
            .find(|(_, c)| !c.is_ascii_alphabetic())
            .map_or(after.len(), |(i, _)| i);
        let secs = match &after[..unit_len] {
            "ms" => 0.001,
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            "d" => 86_400.0,
            _ => return Err(bad()),
        };
        total_s += n * secs;
        rest = after[unit_len..].trim_start();
    }
    if !total_s.is_finite() || total_s > MAX_DURATION.as_secs_f64() {
        return Err(err(
            format!("`{text}` is longer than the longest allowed duration (366d)"),
            DURATION_HINT,
        ));
    }
    // Round to whole microseconds: no scenario needs finer, and it keeps
    // "0.1s" exact.
    Ok(Duration::from_micros((total_s * 1e6).round() as u64))
}

/// Parses "2000/s", "0.5/s", "600/m", "600/min", "50/h" into events per second.
pub fn parse_rate(text: &str) -> Result<f64, UnitError> {
    let s = text.trim();
    let bad = || err(format!("`{text}` is not a rate"), RATE_HINT);
    let Some((num, unit)) = s.split_once('/') else {
        if s.parse::<f64>().is_ok() {
            return Err(err(
                format!("`{text}` has no time unit"),
                &format!("did you mean '{s}/s'? {RATE_HINT}"),
            ));
        }
        return Err(bad());
    };
    let n: f64 = num.trim().parse().map_err(|_| bad())?;
    let per = match unit.trim() {
        "s" | "sec" | "second" => 1.0,
        "m" | "min" | "minute" => 60.0,
        "h" | "hour" => 3600.0,
        _ => return Err(bad()),
    };
    let per_s = n / per;
    if !per_s.is_finite() || per_s < 0.0 {
        return Err(bad());
    }
    if per_s > MAX_RATE_PER_S {
        return Err(err(
            format!("`{text}` is above the highest allowed rate (10000000/s)"),
            "split the load across shards with --shard i/n",
        ));
    }
    Ok(per_s)
}

/// Parses "15:00" or "07:30" (24-hour clock), optionally with seconds
/// ("15:00:30": a short real-time run can place a check-in inside it).
pub fn parse_time_of_day(text: &str) -> Result<Time, UnitError> {
    let s = text.trim();
    let bad = || err(format!("`{text}` is not a time of day"), TIME_HINT);
    let (h, rest) = s.split_once(':').ok_or_else(bad)?;
    let (m, sec) = match rest.split_once(':') {
        Some((m, sec)) if sec.len() == 2 => (m, sec),
        Some(_) => return Err(bad()),
        None => (rest, "00"),
    };
    if h.is_empty() || h.len() > 2 || m.len() != 2 {
        return Err(bad());
    }
    let num = |t: &str| -> Result<i8, UnitError> {
        if t.bytes().all(|b| b.is_ascii_digit()) {
            t.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    Time::new(num(h)?, num(m)?, num(sec)?, 0).map_err(|_| bad())
}

/// Parses "08:00-18:00" into (start, end); `end <= start` crosses midnight.
pub fn parse_window(text: &str) -> Result<(Time, Time), UnitError> {
    let (a, b) = text
        .split_once('-')
        .ok_or_else(|| err(format!("`{text}` is not a daily window"), WINDOW_HINT))?;
    let start = parse_time_of_day(a).map_err(|e| err(e.message, WINDOW_HINT))?;
    let end = parse_time_of_day(b).map_err(|e| err(e.message, WINDOW_HINT))?;
    Ok((start, end))
}

/// Checks an IANA time zone name against jiff's time zone database.
pub fn check_time_zone(name: &str) -> Result<(), UnitError> {
    match jiff::tz::TimeZone::get(name) {
        Ok(_) => Ok(()),
        Err(_) => Err(err(
            format!("unknown time zone `{name}`"),
            "use an IANA name such as 'Europe/Berlin', 'America/New_York' or 'UTC'",
        )),
    }
}

/// Formats a duration compactly the way scenario files write it ("1h30m").
pub fn format_duration(d: Duration) -> String {
    if d.is_zero() {
        return "0s".to_string();
    }
    if !d.subsec_micros().is_multiple_of(1000) {
        return format!("{}ms", d.as_micros() as f64 / 1000.0);
    }
    let ms = d.as_millis();
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut s = (ms / 1000) as u64;
    let mut out = String::new();
    for (unit, secs) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if s >= secs {
            out.push_str(&format!("{}{unit}", s / secs));
            s %= secs;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "2 minutes", "2x", "m", "-1s", "1e3s", "400d", "1..2s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_duration("120").unwrap_err().hint.contains("'120s'"));
    }

    #[test]
    fn rates() {
        assert_eq!(parse_rate("2000/s"), Ok(2000.0));
        assert_eq!(parse_rate("600/m"), Ok(10.0));
        assert_eq!(parse_rate("600/min"), Ok(10.0));
        assert_eq!(parse_rate("36/h"), Ok(0.01));
        assert_eq!(parse_rate("0/s"), Ok(0.0));
        for bad in ["fast", "10/d", "/s", "x/s", "-5/s", "1e9/s"] {
            assert!(parse_rate(bad).is_err(), "{bad}");
        }
        assert!(parse_rate("100").unwrap_err().hint.contains("'100/s'"));
    }

    #[test]
    fn times_and_windows() {
        assert_eq!(parse_time_of_day("15:00"), Ok(Time::constant(15, 0, 0, 0)));
        assert_eq!(parse_time_of_day("7:05"), Ok(Time::constant(7, 5, 0, 0)));
        assert_eq!(
            parse_time_of_day("15:00:30"),
            Ok(Time::constant(15, 0, 30, 0))
        );
        for bad in [
            "25:00", "15", "15:0", "3pm", "15:60", "15:00:6", "15:00:60", "+1:00",
        ] {
            assert!(parse_time_of_day(bad).is_err(), "{bad}");
        }
        let (a, b) = parse_window("22:00-06:00").unwrap();
        assert!(b < a);
        assert!(parse_window("08:00").is_err());
    }

    #[test]
    fn time_zones() {
        assert!(check_time_zone("Europe/Berlin").is_ok());
        assert!(check_time_zone("UTC").is_ok());
        assert!(check_time_zone("Europe/Berlinn").is_err());
    }

    #[test]
    fn formatting_round_trips() {
        for s in ["250ms", "2m", "1h30m", "30d", "1d2h3m4s", "0.5ms", "0s"] {
            assert_eq!(format_duration(parse_duration(s).unwrap()), s);
        }
    }
}
