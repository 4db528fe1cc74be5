//! Warnings about AWS error codes this exporter does not know. Such a code
//! is exported as `code="other"` (so a new code cannot grow the number of
//! series), and the real code is only in the log: it is warned about the
//! first time a scope sees it, then at most once every [`REPEAT_AFTER`]
//! per (scope, code), with the number of failures left unsaid since. A
//! table that fails with a new code every poll no longer floods the log.
//!
//! The callers that know the scope (the scope runner, discovery, the CDC
//! reader) call [`warn_unknown_code`] with every failure they record, and
//! leave the warning about a failure with an unknown code to it.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

use super::PollError;

/// How long a warning about one (scope, code) holds before it is repeated.
pub const REPEAT_AFTER: Duration = Duration::from_secs(60 * 60);

/// Keys remembered at most; beyond this the oldest are forgotten (and may
/// be warned about again), so a stream of made-up codes cannot grow memory.
const MAX_KEYS: usize = 1024;

/// (account, region, code) of one warning.
type Key = (String, String, String);

/// When each (scope, code) was last warned about, and how many failures
/// went unsaid since.
#[derive(Debug, Default)]
pub struct UnknownCodes {
    last: Mutex<HashMap<Key, (Instant, u64)>>,
}

/// What [`UnknownCodes::check`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Warn now; this many failures with the code were not warned about
    /// since the last warning.
    Warn { unsaid: u64 },
    /// Warned recently: say nothing.
    Quiet,
}

impl UnknownCodes {
    /// Whether a failure with `code` in (`account_id`, `region`) at `now`
    /// is warned about.
    pub fn check(&self, account_id: &str, region: &str, code: &str, now: Instant) -> Verdict {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (account_id.to_string(), region.to_string(), code.to_string());
        if let Some((at, unsaid)) = last.get_mut(&key) {
            if now.saturating_duration_since(*at) < REPEAT_AFTER {
                *unsaid += 1;
                return Verdict::Quiet;
            }
            let verdict = Verdict::Warn { unsaid: *unsaid };
            *at = now;
            *unsaid = 0;
            return verdict;
        }
        if last.len() >= MAX_KEYS {
            if let Some(oldest) = last
                .iter()
                .min_by_key(|(_, (at, _))| *at)
                .map(|(k, _)| k.clone())
            {
                last.remove(&oldest);
            }
        }
        last.insert(key, (now, 0));
        Verdict::Warn { unsaid: 0 }
    }
}

/// The process's record of warnings given.
static WARNED: LazyLock<UnknownCodes> = LazyLock::new(UnknownCodes::default);

/// Warn (rate-limited as the module says) when `err` carries an AWS error
/// code this exporter does not know; `during` says what failed (`table
/// poll`, `discovery tag read`...). Returns whether it warned.
pub fn warn_unknown_code(account_id: &str, region: &str, during: &str, err: &PollError) -> bool {
    let Some(code) = err.unknown_code() else {
        return false;
    };
    match WARNED.check(account_id, region, code, Instant::now()) {
        Verdict::Quiet => {
            tracing::debug!(account_id, region, code, during, error = %err, "failed again with an unknown error code");
            false
        }
        Verdict::Warn { unsaid } => {
            tracing::warn!(account_id, region, code, during, error = %err, failures_since_last_warning = unsaid,
                repeat_after = ?REPEAT_AFTER,
                "AWS answered with an error code this exporter does not know; it is counted as code \"other\" (warned once per scope and code, then at most hourly)");
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unknown(code: &str) -> PollError {
        PollError::Service {
            code: code.into(),
            message: "something new".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn once_per_scope_and_code_then_at_most_hourly() {
        let codes = UnknownCodes::default();
        let check =
            |account: &str, code: &str| codes.check(account, "us-east-1", code, Instant::now());
        assert_eq!(
            check("111111111111", "NewException"),
            Verdict::Warn { unsaid: 0 }
        );
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(60)).await;
            assert_eq!(check("111111111111", "NewException"), Verdict::Quiet);
        }
        // Another code, another scope: each warned once of its own.
        assert_eq!(
            check("111111111111", "OtherException"),
            Verdict::Warn { unsaid: 0 }
        );
        assert_eq!(
            check("222222222222", "NewException"),
            Verdict::Warn { unsaid: 0 }
        );
        assert_eq!(
            codes.check("111111111111", "eu-west-1", "NewException", Instant::now()),
            Verdict::Warn { unsaid: 0 }
        );
        // An hour after the first warning (55 minutes after the last
        // failure above, 5 minutes went by in the loop): warned again, with
        // the count of failures left unsaid.
        tokio::time::advance(Duration::from_secs(54 * 60)).await;
        assert_eq!(check("111111111111", "NewException"), Verdict::Quiet);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(
            check("111111111111", "NewException"),
            Verdict::Warn { unsaid: 6 }
        );
        assert_eq!(check("111111111111", "NewException"), Verdict::Quiet);
    }

    #[tokio::test(start_paused = true)]
    async fn only_unknown_codes_are_warned_about() {
        // A scope of its own: the record is process-wide.
        let (account, region) = ("333333333333", "ap-south-2");
        assert!(warn_unknown_code(
            account,
            region,
            "test",
            &unknown("BrandNewException")
        ));
        assert!(!warn_unknown_code(
            account,
            region,
            "test",
            &unknown("BrandNewException")
        ));
        tokio::time::advance(REPEAT_AFTER).await;
        assert!(warn_unknown_code(
            account,
            region,
            "test",
            &unknown("BrandNewException")
        ));
        for known in [
            unknown("ThrottlingException"),
            PollError::NotFound("t".into()),
            PollError::Timeout("t".into()),
        ] {
            assert!(
                !warn_unknown_code(account, region, "test", &known),
                "{known}"
            );
        }
    }

    #[test]
    fn memory_is_bounded() {
        let codes = UnknownCodes::default();
        let now = Instant::now();
        for i in 0..(MAX_KEYS + 10) {
            codes.check("111111111111", "us-east-1", &format!("Code{i}"), now);
        }
        assert_eq!(codes.last.lock().unwrap().len(), MAX_KEYS);
    }
}
