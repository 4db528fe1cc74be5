//! The one duration syntax of the project's YAML files and flags: the exporter's config, the
//! web config and the simulator's scenario.
//!
//! It is Go's `time.ParseDuration` (what exporter-toolkit reads `rate_limit.interval` with, and
//! what Prometheus users write), plus days (`1d`, which the exporter's config has always
//! accepted) and blanks around the text: numbers with an optional fraction, each with a unit,
//! one after the other (`500ms`, `1m30s`, `1.5s`, `100us`, `100µs`), or a bare `0`.

use std::fmt;
use std::time::Duration;

/// Why a text is not a duration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DurationError {
    /// Not in the syntax at all.
    Invalid(String),
    /// Below zero (`-1s`), which nothing that waits can use.
    Negative(String),
    /// Past what a `u64` of nanoseconds holds, about 584 years.
    TooLong(String),
}

impl fmt::Display for DurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DurationError::Invalid(text) => write!(f, "{text:?} is not a duration"),
            DurationError::Negative(text) => write!(f, "{text:?} is negative"),
            DurationError::TooLong(text) => write!(f, "{text:?} is too long"),
        }
    }
}

impl std::error::Error for DurationError {}

/// Nanoseconds per unit, longest names first where one is the start of another.
const UNITS: [(&str, u128); 9] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
    ("d", 86_400_000_000_000),
];

/// Parses `30s`, `5m`, `1h`, `1d`, `500ms`, `100us`, `1.5s`, a sum such as `1m30s`, or `0`
/// (see the module doc). A fraction's digits past the nanosecond are dropped, as Go does.
pub fn parse_duration(text: &str) -> Result<Duration, DurationError> {
    let invalid = || DurationError::Invalid(text.to_owned());
    let trimmed = text.trim();
    let (negative, mut rest) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    if rest == "0" {
        return Ok(Duration::ZERO);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut nanos: u128 = 0;
    while !rest.is_empty() {
        let whole_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let (whole, after) = rest.split_at(whole_len);
        let (fraction, after) = match after.strip_prefix('.') {
            Some(after) => after.split_at(after.bytes().take_while(u8::is_ascii_digit).count()),
            None => ("", after),
        };
        if whole.is_empty() && fraction.is_empty() {
            return Err(invalid());
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit = (UNITS.iter())
            .find(|(name, _)| *name == unit)
            .map(|(_, nanos)| *nanos)
            .ok_or_else(invalid)?;
        // Past 39 digits a u128 overflows; no duration that long is meant.
        let too_long = || DurationError::TooLong(text.to_owned());
        let whole: u128 = match whole {
            "" => 0,
            digits => digits.parse().map_err(|_| too_long())?,
        };
        let mut scale = per_unit;
        let mut part_of_unit = 0;
        for digit in fraction.bytes().take(30) {
            scale /= 10;
            part_of_unit += u128::from(digit - b'0') * scale;
        }
        nanos = (whole.checked_mul(per_unit))
            .and_then(|whole| whole.checked_add(part_of_unit))
            .and_then(|part| nanos.checked_add(part))
            .ok_or_else(too_long)?;
        rest = after;
    }
    if negative && nanos > 0 {
        return Err(DurationError::Negative(text.to_owned()));
    }
    u64::try_from(nanos)
        .map(Duration::from_nanos)
        .map_err(|_| DurationError::TooLong(text.to_owned()))
}

/// Formats a duration the way [`parse_duration`] reads it: `1h30m`, `500ms`, `2s500ms`,
/// `100us`; `0s` for zero.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (ns / 3_600_000_000_000, "h"),
        (ns / 60_000_000_000 % 60, "m"),
        (ns / 1_000_000_000 % 60, "s"),
        (ns / 1_000_000 % 1_000, "ms"),
        (ns / 1_000 % 1_000, "us"),
        (ns % 1_000, "ns"),
    ];
    (parts.iter())
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse() {
        let cases = [
            // What the config and the scenario files have always written.
            ("30s", 30_000_000_000),
            ("5m", 300_000_000_000),
            ("1h", 3_600_000_000_000),
            ("500ms", 500_000_000),
            ("1m30s", 90_000_000_000),
            ("1d", 86_400_000_000_000),
            ("1h1m1s1ms", 3_661_001_000_000),
            (" 2s ", 2_000_000_000),
            ("0s", 0),
            // Go's forms, as exporter-toolkit's web config files use them.
            ("0", 0),
            ("+1s", 1_000_000_000),
            ("-0s", 0),
            ("1.5s", 1_500_000_000),
            (".5s", 500_000_000),
            ("1.s", 1_000_000_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("100μs", 100_000),
            ("7ns", 7),
            ("1.0000000019s", 1_000_000_001),
            ("2h45m0.5s", 9_900_500_000_000),
            ("0.1h", 360_000_000_000),
        ];
        for (text, nanos) in cases {
            assert_eq!(
                parse_duration(text),
                Ok(Duration::from_nanos(nanos)),
                "{text}"
            );
        }
        let invalid = [
            "",
            " ",
            "5",
            "s",
            ".s",
            "5 parsecs",
            "-",
            "+",
            "5S",
            "1m 30s",
            "5sec",
            "1 hour",
            "2min",
            "1.2.3s",
            "1s-",
            "--1s",
            "1,5s",
            "0x10s",
            "1e3s",
            "∞s",
        ];
        for text in invalid {
            let want = DurationError::Invalid(text.to_owned());
            assert_eq!(parse_duration(text), Err(want), "{text:?}");
        }
        assert_eq!(
            parse_duration("-1s"),
            Err(DurationError::Negative("-1s".into()))
        );
        for text in [
            "18446744073709551615d",
            "213504d",
            "99999999999999999999999999999999999999999h",
        ] {
            let want = DurationError::TooLong(text.to_owned());
            assert_eq!(parse_duration(text), Err(want), "{text:?}");
        }
    }

    #[test]
    fn errors_say_what_is_wrong() {
        let message = |text| parse_duration(text).unwrap_err().to_string();
        assert_eq!(message("5 parsecs"), "\"5 parsecs\" is not a duration");
        assert_eq!(message("-1s"), "\"-1s\" is negative");
        assert_eq!(message("213504d"), "\"213504d\" is too long");
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(format_duration(Duration::from_micros(100)), "100us");
        assert_eq!(
            format_duration(Duration::from_nanos(2_500_000_001)),
            "2s500ms1ns"
        );
    }

    proptest! {
        #[test]
        fn durations_round_trip(nanos in any::<u64>()) {
            let d = Duration::from_nanos(nanos);
            prop_assert_eq!(parse_duration(&format_duration(d)), Ok(d));
        }

        #[test]
        fn parsing_never_panics(text in "[-+ 0-9.a-zµμ]{0,24}") {
            let _ = parse_duration(&text);
        }
    }
}
