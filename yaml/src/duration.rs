//! The one duration syntax of the project's YAML files.

use std::time::Duration;

/// Parses `30s`, `5m`, `1h`, `500ms`, `1d`, or a sum such as `1m30s`: whole numbers, each with a
/// unit, as in Prometheus' own configuration. `None` for anything else, including overflow.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = (rest[digits..].bytes())
            .take_while(u8::is_ascii_alphabetic)
            .count();
        if digits == 0 {
            return None;
        }
        let count: u64 = rest[..digits].parse().ok()?;
        let unit: u64 = match &rest[digits..digits + unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        millis = millis.checked_add(count.checked_mul(unit)?)?;
        rest = &rest[digits + unit_len..];
    }
    Some(Duration::from_millis(millis))
}

/// Formats a duration the way [`parse_duration`] reads it, to the millisecond: `1h30m`, `500ms`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return "0s".to_owned();
    }
    let parts = [
        (ms / 3_600_000, "h"),
        (ms / 60_000 % 60, "m"),
        (ms / 1_000 % 60, "s"),
        (ms % 1_000, "ms"),
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
            ("30s", 30_000),
            ("5m", 300_000),
            ("1h", 3_600_000),
            ("500ms", 500),
            ("1m30s", 90_000),
            ("1d", 86_400_000),
            ("1h1m1s1ms", 3_661_001),
            (" 2s ", 2_000),
            ("0s", 0),
        ];
        for (text, millis) in cases {
            assert_eq!(
                parse_duration(text),
                Some(Duration::from_millis(millis)),
                "{text}"
            );
        }
        for text in [
            "",
            "5",
            "s",
            "5 parsecs",
            "1.5s",
            "-1s",
            "5S",
            "1m 30s",
            "5sec",
            "18446744073709551615d",
        ] {
            assert_eq!(parse_duration(text), None, "{text:?}");
        }
    }

    #[test]
    fn durations_format() {
        assert_eq!(format_duration(Duration::ZERO), "0s");
        assert_eq!(format_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(format_duration(Duration::from_secs(60)), "1m");
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
    }

    proptest! {
        #[test]
        fn durations_round_trip(millis in 0u64..=86_400_000 * 400) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }
    }
}
