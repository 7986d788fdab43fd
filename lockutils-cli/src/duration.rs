//! Durations on the command line: `200ms`, `1.5s`, `2m`, `1h`; a bare
//! number is seconds, as in `flock -w`.

use std::time::Duration;

/// Parses a duration for clap (`value_parser = duration::parse`).
pub fn parse(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let split = t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let not_duration = || format!("{text:?} is not a duration (e.g. 200ms, 1.5s, 2m)");
    if !number.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return Err(not_duration());
    }
    let value: f64 = number.parse().map_err(|_| not_duration())?;
    let scale = match unit {
        "" | "s" | "sec" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "unknown unit {unit:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    Duration::try_from_secs_f64(value * scale).map_err(|_| format!("{text:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::parse;
    use std::time::Duration;

    #[test]
    fn units() {
        assert_eq!(parse("200ms"), Ok(Duration::from_millis(200)));
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_nonsense() {
        for bad in ["", "ms", "-1s", "1x", "abc", "nan", "inf", "1e999s", "+1s"] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
