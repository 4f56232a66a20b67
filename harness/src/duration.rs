//! Durations on the command line, read the way GNU `timeout` 9.x reads them: a number as C's
//! `strtod` takes it (leading blanks, a sign, decimals, exponents like `2.34e+5`, hexadecimal
//! floats like `0x1.8p3`, `inf`), then at most one unit. `timeout`'s units are `s` (the
//! default), `m`, `h` and `d`; `pidring run` adds `ms`, `us`/`µs` and `ns`.
//!
//! As in GNU `timeout`: a value too large for any timer (beyond ~584 billion years, or `inf`)
//! means *forever* ([`FOREVER`]), and a positive value too small for a nanosecond (`1e-10000`)
//! rounds up to 1 ns. Negative values and NaN are errors; `-0` is 0. The arithmetic is exact
//! (decimal or binary digits times the unit, in integer nanoseconds, rounded up), so `0.1`
//! is exactly 100 ms.

use std::time::Duration;

/// A duration that never ends: every deadline computed from it is out of reach
/// (`Instant::checked_add` gives `None`), so its timer never fires.
pub const FOREVER: Duration = Duration::MAX;

/// Which units are accepted after the number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// GNU `timeout`'s: `s`, `m`, `h`, `d`.
    Gnu,
    /// `pidring run`'s: GNU's plus `ms`, `us`, `µs`, `ns`.
    Pidring,
}

/// Parses a duration with `pidring run`'s units. The error says why, for a one-line message.
pub fn parse(text: &str) -> Result<Duration, String> {
    parse_with(text, Units::Pidring)
}

/// Parses a duration with GNU `timeout`'s units.
pub fn parse_gnu(text: &str) -> Result<Duration, String> {
    parse_with(text, Units::Gnu)
}

pub fn parse_with(text: &str, units: Units) -> Result<Duration, String> {
    let (number, rest) = scan_number(text.as_bytes()).ok_or_else(|| {
        if text.trim_start().is_empty() {
            "empty duration".to_string()
        } else {
            "expected a number, optionally followed by a unit".to_string()
        }
    })?;
    let unit = std::str::from_utf8(rest).unwrap_or("?");
    let nanos_per_unit: u128 = match (unit, units) {
        ("" | "s", _) => 1_000_000_000,
        ("m", _) => 60 * 1_000_000_000,
        ("h", _) => 3_600 * 1_000_000_000,
        ("d", _) => 86_400 * 1_000_000_000,
        ("ms", Units::Pidring) => 1_000_000,
        ("us" | "µs", Units::Pidring) => 1_000,
        ("ns", Units::Pidring) => 1,
        _ => {
            return Err(match units {
                Units::Gnu => format!("unknown unit '{unit}' (use s, m, h or d)"),
                Units::Pidring => {
                    format!("unknown unit '{unit}' (use ns, us, ms, s, m, h or d)")
                }
            })
        }
    };
    number.to_duration(nanos_per_unit)
}

/// A number as `strtod` reads it, kept exact: `mantissa × base^exponent` with `base` 10 or 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Number {
    Finite {
        negative: bool,
        /// The leading significant digits (at most [`KEPT_DIGITS`] decimal or
        /// [`KEPT_HEX_DIGITS`] hexadecimal ones).
        mantissa: u128,
        /// Decimal exponent (base 10) or binary exponent (base 2) applied to `mantissa`.
        exponent: i64,
        binary: bool,
        /// A nonzero digit was dropped beyond the kept ones (the value is a bit larger).
        sticky: bool,
    },
    Infinite {
        negative: bool,
    },
    NaN,
}

/// Significant digits kept: 10^24 times the largest unit (a day in ns, < 10^14) fits a u128.
const KEPT_DIGITS: usize = 24;
const KEPT_HEX_DIGITS: usize = 20;
/// Exponents are clamped here: far beyond any value that is neither 0 nor forever.
const EXPONENT_LIMIT: i64 = 1 << 20;

impl Number {
    /// `self` seconds-in-`nanos_per_unit` as a Duration: exact, rounded up to the next
    /// nanosecond, saturating at [`FOREVER`].
    fn to_duration(self, nanos_per_unit: u128) -> Result<Duration, String> {
        let (negative, mantissa, exponent, binary, sticky) = match self {
            Number::NaN => return Err("not a number".into()),
            Number::Infinite { negative: true } => {
                return Err("negative durations are not allowed".into())
            }
            Number::Infinite { negative: false } => return Ok(FOREVER),
            Number::Finite {
                negative,
                mantissa,
                exponent,
                binary,
                sticky,
            } => (negative, mantissa, exponent, binary, sticky),
        };
        let zero = mantissa == 0 && !sticky;
        if zero {
            return Ok(Duration::ZERO); // "-0" included, as `strtod` and GNU take it
        }
        if negative {
            return Err("negative durations are not allowed".into());
        }
        // mantissa × unit fits a u128 (KEPT_DIGITS and KEPT_HEX_DIGITS are sized for it).
        let scaled = mantissa * nanos_per_unit;
        let nanos: u128 = if exponent >= 0 {
            let mut v = scaled;
            for _ in 0..exponent {
                v = match if binary {
                    v.checked_mul(2)
                } else {
                    v.checked_mul(10)
                } {
                    Some(v) => v,
                    None => return Ok(FOREVER),
                };
            }
            v + u128::from(sticky)
        } else {
            let mut v = scaled;
            let mut remainder = sticky;
            for _ in 0..exponent.unsigned_abs() {
                if v == 0 {
                    break;
                }
                let d = if binary { 2 } else { 10 };
                remainder |= !v.is_multiple_of(d);
                v /= d;
            }
            v + u128::from(remainder)
        };
        let secs = nanos / 1_000_000_000;
        match u64::try_from(secs) {
            Ok(secs) => Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32)),
            Err(_) => Ok(FOREVER),
        }
    }
}

/// Reads the longest prefix of `s` that C's `strtod` would take; returns the number and the
/// rest, or `None` when no number starts `s` (after blanks).
fn scan_number(s: &[u8]) -> Option<(Number, &[u8])> {
    let mut i = 0;
    while i < s.len() && matches!(s[i], b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r') {
        i += 1;
    }
    let mut negative = false;
    if i < s.len() && (s[i] == b'+' || s[i] == b'-') {
        negative = s[i] == b'-';
        i += 1;
    }
    let rest = &s[i..];
    let lower = |n: usize| -> Vec<u8> {
        rest.iter()
            .take(n)
            .map(|b| b.to_ascii_lowercase())
            .collect()
    };
    if lower(8) == b"infinity" {
        return Some((Number::Infinite { negative }, &rest[8..]));
    }
    if lower(3) == b"inf" {
        return Some((Number::Infinite { negative }, &rest[3..]));
    }
    if lower(3) == b"nan" {
        let mut end = 3;
        // "nan(n-char-sequence)"
        if rest.get(3) == Some(&b'(') {
            if let Some(close) = rest[4..].iter().position(|&b| b == b')') {
                if rest[4..4 + close]
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'_')
                {
                    end = 4 + close + 1;
                }
            }
        }
        return Some((Number::NaN, &rest[end..]));
    }
    let hex_start = rest.len() >= 2
        && rest[0] == b'0'
        && (rest[1] == b'x' || rest[1] == b'X')
        && (rest.get(2).is_some_and(u8::is_ascii_hexdigit)
            || (rest.get(2) == Some(&b'.') && rest.get(3).is_some_and(u8::is_ascii_hexdigit)));
    if hex_start {
        let (n, used) = scan_digits(&rest[2..], true, negative);
        return Some((n, &rest[2 + used..]));
    }
    let has_digit = rest.first().is_some_and(u8::is_ascii_digit)
        || (rest.first() == Some(&b'.') && rest.get(1).is_some_and(u8::is_ascii_digit));
    if !has_digit {
        return None;
    }
    let (n, used) = scan_digits(rest, false, negative);
    Some((n, &rest[used..]))
}

/// Digits, an optional point and digits, and an optional exponent (`e`/`E` decimal, `p`/`P`
/// binary for hex), the exponent only if digits follow its sign. Returns the number and the
/// bytes used. At least one digit is known to be there.
fn scan_digits(s: &[u8], hex: bool, negative: bool) -> (Number, usize) {
    let radix: u32 = if hex { 16 } else { 10 };
    let keep = if hex { KEPT_HEX_DIGITS } else { KEPT_DIGITS };
    let mut i = 0;
    let mut mantissa: u128 = 0;
    let mut kept = 0usize;
    let mut sticky = false;
    // Digits dropped before the point (each multiplies the value by the radix) and digits
    // kept after it (each divides it).
    let mut scale: i64 = 0;
    let mut seen_point = false;
    while i < s.len() {
        let b = s[i];
        if b == b'.' && !seen_point {
            seen_point = true;
            i += 1;
            continue;
        }
        let Some(d) = (b as char).to_digit(radix) else {
            break;
        };
        if mantissa == 0 && d == 0 {
            // Leading zeros are not significant; after the point they still scale.
            if seen_point {
                scale -= 1;
            }
        } else if kept < keep {
            mantissa = mantissa * u128::from(radix) + u128::from(d);
            kept += 1;
            if seen_point {
                scale -= 1;
            }
        } else {
            sticky |= d != 0;
            if !seen_point {
                scale += 1;
            }
        }
        i += 1;
    }
    let mut exponent: i64 = 0;
    let marker = if hex { b'p' } else { b'e' };
    if i < s.len() && s[i].to_ascii_lowercase() == marker {
        let mut j = i + 1;
        let mut exp_negative = false;
        if j < s.len() && (s[j] == b'+' || s[j] == b'-') {
            exp_negative = s[j] == b'-';
            j += 1;
        }
        if j < s.len() && s[j].is_ascii_digit() {
            while j < s.len() && s[j].is_ascii_digit() {
                exponent = (exponent * 10 + i64::from(s[j] - b'0')).min(EXPONENT_LIMIT);
                j += 1;
            }
            if exp_negative {
                exponent = -exponent;
            }
            i = j;
        }
    }
    // For hex, each hex digit is 4 binary places.
    let exponent = if hex {
        exponent + 4 * scale
    } else {
        exponent + scale
    };
    (
        Number::Finite {
            negative,
            mantissa,
            exponent: exponent.clamp(-EXPONENT_LIMIT * 8, EXPONENT_LIMIT * 8),
            binary: hex,
            sticky,
        },
        i,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ns(n: u64) -> Duration {
        Duration::from_nanos(n)
    }

    #[test]
    fn accepts_units_and_fractions() {
        assert_eq!(parse("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse("1d"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse("250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("250µs"), Ok(Duration::from_micros(250)));
        assert_eq!(parse("7ns"), Ok(ns(7)));
        assert_eq!(parse("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("0.1"), Ok(Duration::from_millis(100)));
        assert_eq!(parse(".5"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("5."), Ok(Duration::from_secs(5)));
        assert_eq!(parse("0"), Ok(Duration::ZERO));
        assert_eq!(parse("1.5ms"), Ok(Duration::from_micros(1500)));
        assert_eq!(parse("0.1m"), Ok(Duration::from_secs(6)));
        assert_eq!(parse("9.999999999"), Ok(ns(9_999_999_999)));
        assert_eq!(
            parse("00000000000000000000000000000000000000001s"),
            Ok(Duration::from_secs(1))
        );
    }

    #[test]
    fn gnu_forms() {
        // As C's strtod reads numbers, and as GNU timeout 9.x rounds them.
        assert_eq!(
            parse_gnu("2.34e+5d"),
            Ok(Duration::from_secs(234_000 * 86_400))
        );
        assert_eq!(parse_gnu("1e3"), Ok(Duration::from_secs(1000)));
        assert_eq!(parse_gnu("1E-3"), Ok(Duration::from_millis(1)));
        assert_eq!(parse_gnu("10.34"), Ok(ns(10_340_000_000)));
        assert_eq!(parse_gnu("+1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_gnu(" \t1"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_gnu("0x10"), Ok(Duration::from_secs(16)));
        assert_eq!(parse_gnu("0x1.8p1"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_gnu("0X.8"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_gnu("0x1p-1m"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_gnu("-0"), Ok(Duration::ZERO));
        assert_eq!(parse_gnu("-0.0e5"), Ok(Duration::ZERO));
        // Underflow rounds up to a nanosecond; anything positive is at least one.
        assert_eq!(parse_gnu("1e-10000"), Ok(ns(1)));
        assert_eq!(parse_gnu("0.0000000001"), Ok(ns(1)));
        assert_eq!(parse_gnu("0.0000000019"), Ok(ns(2)));
        assert_eq!(parse_gnu("0x1p-100"), Ok(ns(1)));
        // Huge values mean forever.
        for huge in [
            "inf",
            "INF",
            "Infinity",
            "infs",
            "infd",
            "1e400",
            "1.18973e+4932",
            "99999999999999999999999999999999999999999999",
            "18446744073709551616",
            "9223372036854775808d",
            "1e99999999999999999999999",
            "0x1p100000",
            "0xffffffffffffffffffffffffffffffffffffffff",
        ] {
            assert_eq!(parse_gnu(huge), Ok(FOREVER), "{huge}");
        }
        // Ten thousand years is a timer that never fires in practice: accepted as it is.
        assert_eq!(
            parse_gnu("3650000d"),
            Ok(Duration::from_secs(3_650_000 * 86_400))
        );
        // Past any u64 of seconds, but not by much: forever too.
        assert_eq!(
            parse_gnu("18446744073709551615"),
            Ok(Duration::from_secs(u64::MAX))
        );
        assert_eq!(parse_gnu("18446744073709551616"), Ok(FOREVER));
    }

    #[test]
    fn rejects_junk() {
        for bad in [
            "",
            " ",
            "-1",
            "-1s",
            " -0.1",
            " -1e-10000",
            "-inf",
            "nan",
            "NaN",
            "nan(123)",
            "1.2.3",
            ".",
            "s",
            "1 s",
            "1x",
            "1S",
            "1sec",
            "42D",
            "invalid",
            "0x",
            "0xg",
            "1e",
            "1e+",
            "e5",
            "--1",
            "+-1",
            "1s ",
            "x1",
        ] {
            assert!(
                parse_gnu(bad).is_err(),
                "{bad:?} accepted: {:?}",
                parse_gnu(bad)
            );
            assert!(parse(bad).is_err(), "{bad:?} accepted: {:?}", parse(bad));
        }
        // pidring's own units are not GNU's.
        for pidring_only in ["5ms", "5us", "5ns", "5µs"] {
            assert!(parse_gnu(pidring_only).is_err(), "{pidring_only}");
            assert!(parse(pidring_only).is_ok(), "{pidring_only}");
        }
    }
}
