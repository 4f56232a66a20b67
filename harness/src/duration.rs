//! Durations on the command line: `1.5s`, `500ms`, `250us`, `2m`, `1h`, `1d`, or a bare
//! number of seconds (`10`, `0.25`). Whitespace around the number is not allowed; the unit is
//! case-sensitive as in GNU `timeout` (`s`, `m`, `h`, `d`) plus `ms`, `us`/`µs` and `ns`.

use std::time::Duration;

/// Parses a duration. The error says why, for a one-line message.
pub fn parse(text: &str) -> Result<Duration, String> {
    if text.is_empty() {
        return Err("empty duration".into());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        if text.starts_with('-') {
            return Err("negative durations are not allowed".into());
        }
        return Err(
            "expected a number, optionally followed by a unit (ns, us, ms, s, m, h, d)".into(),
        );
    }
    // Only plain decimal numbers: no sign, exponent, inf or NaN (f64::from_str takes those).
    if number.matches('.').count() > 1 || number == "." {
        return Err(format!("'{number}' is not a number"));
    }
    let nanos_per_unit: u128 = match unit {
        "ns" => 1,
        "us" | "µs" => 1_000,
        "ms" => 1_000_000,
        "" | "s" => 1_000_000_000,
        "m" => 60 * 1_000_000_000,
        "h" => 3_600 * 1_000_000_000,
        "d" => 86_400 * 1_000_000_000,
        _ => {
            return Err(format!(
                "unknown unit '{unit}' (use ns, us, ms, s, m, h or d)"
            ))
        }
    };
    // Exact decimal arithmetic in nanoseconds: no float rounding, no NaN, overflow detected.
    let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
    let too_long = || "duration is too long".to_string();
    let int: u128 = if int_part.is_empty() {
        0
    } else {
        int_part.parse::<u128>().map_err(|_| too_long())?
    };
    let mut nanos = int.checked_mul(nanos_per_unit).ok_or_else(too_long)?;
    // The fractional digits, scaled by the unit; digits beyond nanosecond precision are dropped.
    let mut scale = nanos_per_unit;
    for d in frac_part.bytes() {
        scale /= 10;
        if scale == 0 {
            break;
        }
        nanos = nanos
            .checked_add(u128::from(d - b'0') * scale)
            .ok_or_else(too_long)?;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| too_long())?;
    // Far beyond any deadline a timer can hold; reject rather than wrap in Instant + Duration.
    if secs > 100 * 365 * 86_400 {
        return Err(too_long());
    }
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_units_and_fractions() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(Duration::from_nanos(7)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5."), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse("0.0000000019"), Ok(Duration::from_nanos(1)));
        assert_eq!(parse("0.1m"), Ok(Duration::from_secs(6)));
        assert_eq!(
            parse("00000000000000000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            "-1",
            "-1s",
            "+1",
            "nan",
            "NaN",
            "inf",
            "1e3",
            "1.2.3",
            ".",
            "s",
            "1 s",
            " 1",
            "1x",
            "1S",
            "1sec",
            "99999999999999999999999999999999999999999999",
            "1e400",
            "18446744073709551616",
            "3650000d",
            "0x10",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted: {:?}", parse(bad));
        }
    }
}
