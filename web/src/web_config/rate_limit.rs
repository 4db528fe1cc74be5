//! exporter-toolkit's `rate_limit`: one token bucket for the whole server,
//! as Go's `rate.NewLimiter(rate.Every(interval), burst)` makes it. The
//! bucket holds `burst` tokens and starts full; a token comes back every
//! `interval`; a request that finds no token is answered `429 Too Many
//! Requests`. `interval: 0` (or no `rate_limit`) turns the limit off.
//!
//! `interval` is a Go duration (`500ms`, `1m30s`, `1.5s`), as the toolkit
//! reads it, in the project's one duration syntax (`dke_yaml::parse_duration`,
//! Go's with days), or a number of nanoseconds. Unlike the toolkit, `burst:
//! 0` with an interval is refused: it admits no request at all.

use std::time::Duration;

use tokio::time::Instant;

use super::Problem;

/// `rate_limit`, as exporter-toolkit names its keys (read from the file by `file`).
#[derive(Debug, Default)]
pub(super) struct RateLimitFile {
    pub(super) interval: Option<GoDuration>,
    pub(super) burst: u32,
}

/// A Go duration as YAML may give it: text (`1s`), or a number of
/// nanoseconds.
#[derive(Debug)]
pub(super) enum GoDuration {
    Nanos(i64),
    Text(String),
}

/// A checked rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RateLimit {
    pub(crate) interval: Duration,
    pub(crate) burst: u32,
}

impl RateLimit {
    /// The limit a file asks for; `None` when it is off.
    pub(crate) fn from_file(file: &RateLimitFile) -> Result<Option<RateLimit>, Vec<Problem>> {
        let interval = match &file.interval {
            None => Duration::ZERO,
            Some(GoDuration::Nanos(n)) => u64::try_from(*n)
                .map(Duration::from_nanos)
                .map_err(|_| vec![Problem::new("interval", format!("{n} is negative"))])?,
            Some(GoDuration::Text(text)) => dke_yaml::parse_duration(text)
                .map_err(|err| vec![Problem::new("interval", err.to_string())])?,
        };
        if interval.is_zero() {
            return Ok(None);
        }
        if file.burst == 0 {
            return Err(vec![Problem::new(
                "burst",
                "0 admits no request at all; give at least 1 (or interval 0 to turn the limit off)",
            )]);
        }
        Ok(Some(RateLimit {
            interval,
            burst: file.burst,
        }))
    }
}

/// The token bucket of a [`RateLimit`].
#[derive(Debug)]
pub(crate) struct Bucket {
    limit: RateLimit,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    /// A full bucket.
    pub(crate) fn new(limit: RateLimit) -> Self {
        Bucket {
            limit,
            tokens: f64::from(limit.burst),
            refilled: Instant::now(),
        }
    }

    pub(crate) fn limit(&self) -> RateLimit {
        self.limit
    }

    /// Take a token if there is one; otherwise how long until there is.
    pub(crate) fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let interval = self.limit.interval.as_secs_f64();
        let earned = now.duration_since(self.refilled).as_secs_f64() / interval;
        self.tokens = (self.tokens + earned).min(f64::from(self.limit.burst));
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(self.limit.interval.mul_f64(1.0 - self.tokens))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The limit of a web config whose `rate_limit` block is `yaml`, or its problems.
    fn file(yaml: &str) -> Result<Option<RateLimit>, Vec<String>> {
        let indented: String = yaml.lines().map(|l| format!("  {l}\n")).collect();
        let text = format!("rate_limit:\n{indented}");
        (super::super::parse(&text, std::path::Path::new("w.yml")))
            .map(|config| config.rate_limit)
            .map_err(|err| err.lines())
    }

    #[test]
    fn the_file_turns_the_limit_on_and_off() {
        assert_eq!(
            file("interval: 1s\nburst: 5\n"),
            Ok(Some(RateLimit {
                interval: Duration::from_secs(1),
                burst: 5
            }))
        );
        assert_eq!(
            file("interval: 1000000\nburst: 1\n")
                .unwrap()
                .unwrap()
                .interval,
            Duration::from_millis(1)
        );
        assert_eq!(file("interval: 0\nburst: 5\n"), Ok(None));
        assert_eq!(file("burst: 5\n"), Ok(None));
        assert_eq!(file("interval:\nburst: 5\n"), Ok(None));
        // Go's forms of durations.
        for (text, nanos) in [
            ("1.5s", 1_500_000_000),
            ("100us", 100_000),
            ("100µs", 100_000),
            ("1m30s", 90_000_000_000),
        ] {
            let limit = file(&format!("interval: {text}\nburst: 1\n"))
                .unwrap()
                .unwrap();
            assert_eq!(limit.interval, Duration::from_nanos(nanos), "{text}");
        }
        assert_eq!(
            file("interval: 1 sec\nburst: 1\n"),
            Err(vec![
                "w.yml:2: rate_limit.interval: \"1 sec\" is not a duration".to_owned()
            ])
        );
        assert_eq!(
            file("interval: 1s\n"),
            Err(vec!["w.yml:1: rate_limit.burst: 0 admits no request at all; give at least 1 (or interval 0 to turn the limit off)".to_owned()])
        );
        assert_eq!(
            file("interval: -5\nburst: 1\n"),
            Err(vec![
                "w.yml:2: rate_limit.interval: -5 is negative".to_owned()
            ])
        );
        assert_eq!(
            file("burst: -1\n"),
            Err(vec!["w.yml:2: rate_limit.burst: invalid value: -1, expected a whole number from 0 to 4294967295".to_owned()])
        );
        assert_eq!(
            file("every: 1s\ninterval: [1s]\nburst: 1.5\n"),
            Err(vec![
                "w.yml:2: rate_limit.every: unknown field `every`, expected one of `interval`, `burst`".to_owned(),
                "w.yml:3: rate_limit.interval: invalid type: a list, expected a duration such as 1s".to_owned(),
                "w.yml:4: rate_limit.burst: invalid type: 1.5, expected a whole number".to_owned(),
            ])
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_bucket_starts_full_and_refills_one_token_per_interval() {
        let mut bucket = Bucket::new(RateLimit {
            interval: Duration::from_secs(1),
            burst: 3,
        });
        for _ in 0..3 {
            assert_eq!(bucket.take(), Ok(()));
        }
        assert_eq!(bucket.take(), Err(Duration::from_secs(1)));
        tokio::time::advance(Duration::from_millis(400)).await;
        let wait = bucket.take().unwrap_err();
        assert!(
            wait.abs_diff(Duration::from_millis(600)) < Duration::from_millis(1),
            "{wait:?}"
        );
        tokio::time::advance(Duration::from_millis(600)).await;
        assert_eq!(bucket.take(), Ok(()));
        assert!(bucket.take().is_err());
        // A long pause refills to `burst`, no more.
        tokio::time::advance(Duration::from_secs(3600)).await;
        for _ in 0..3 {
            assert_eq!(bucket.take(), Ok(()));
        }
        assert!(bucket.take().is_err());
    }
}
