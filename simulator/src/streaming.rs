//! Turning a table's Kinesis streaming on and off, as
//! `EnableKinesisStreamingDestination` and `DisableKinesisStreamingDestination`
//! do on AWS: which changes AWS admits, the entry each one writes, and the
//! transition it starts. The DynamoDB operations and the control methods
//! tests use both come here, so an operator's click and a test's shortcut
//! follow the same rules.
//!
//! The rules, as AWS was observed to apply them:
//! - A table streams to one stream at a time: at most one of its entries is
//!   ENABLING, ACTIVE, UPDATING or DISABLING. DISABLED and ENABLE_FAILED
//!   entries stay listed; no API deletes them.
//! - Enable is admitted only while every entry is DISABLED or ENABLE_FAILED
//!   (or there is none), whichever stream it names. It turns the stream's own
//!   entry back to ENABLING, or lists a new entry first. The stream is not
//!   checked then: one that does not exist, or lies in another account or
//!   region, goes from ENABLING to ENABLE_FAILED with AWS's (misleading)
//!   permission description.
//! - Disable needs the stream's entry to be ACTIVE, and sends no
//!   configuration; the entry goes DISABLING, then DISABLED.
//! - Every refusal is a `ValidationException` whose message starts "Table is
//!   not in a valid state to enable Kinesis Streaming Destination", the
//!   Disable one too. AWS's model also lists `ResourceInUseException` for
//!   both operations, but AWS answers these cases with the validation error;
//!   a missing table is `ResourceNotFoundException`.

use tokio::time::Instant;

use crate::scenario::{DestinationSpec, Step, TransitionTimes};
use crate::InstalledTable;

/// What AWS writes into an entry whose stream it could not use.
pub const ENABLE_FAILED_DESCRIPTION: &str = "User does not have a permission to use kinesis stream";

/// Why an Enable or a Disable was refused, with AWS's code ([`DestinationError::code`])
/// and message (`Display`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DestinationError {
    /// The table (as the request named it) does not exist.
    #[error("Requested resource not found: Table: {0} not found")]
    TableNotFound(String),
    /// Enable while some entry is ENABLING, ACTIVE, UPDATING or DISABLING.
    #[error(
        "Table is not in a valid state to enable Kinesis Streaming Destination: \
         EnableKinesisStreamingDestination must be DISABLED or ENABLE_FAILED to perform \
         ENABLE operation."
    )]
    NotDisabled,
    /// Disable of a stream whose entry is not ACTIVE, or that has none.
    #[error(
        "Table is not in a valid state to enable Kinesis Streaming Destination: \
         KinesisStreamingDestination must be ACTIVE to perform DISABLE operation."
    )]
    NotActive,
    /// Disable with an `EnableKinesisStreamingConfiguration`.
    #[error("Stream cannot be disabled using EnableKinesisStreamingConfiguration parameters")]
    ConfigurationOnDisable,
}

impl DestinationError {
    /// The AWS error code.
    pub fn code(&self) -> &'static str {
        match self {
            DestinationError::TableNotFound(_) => "ResourceNotFoundException",
            _ => "ValidationException",
        }
    }
}

/// One change to a table's streaming.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Enable {
        stream_arn: String,
        /// `ApproximateCreationDateTimePrecision`; `None` leaves it out of
        /// the entry, as AWS does for an Enable without one.
        precision: Option<String>,
        /// Whether the stream exists in the table's own account and region;
        /// if not, ENABLING ends in ENABLE_FAILED.
        stream_usable: bool,
    },
    Disable {
        stream_arn: String,
    },
}

/// The statuses that make a table's streaming busy: no Enable while one of
/// its entries is in one of them.
const LIVE: [&str; 4] = ["ENABLING", "ACTIVE", "UPDATING", "DISABLING"];

impl InstalledTable {
    /// The status each entry shows at `now`, index for index.
    fn statuses_at(&self, now: Instant) -> Vec<Option<&str>> {
        (self.spec.destinations.iter())
            .zip(&self.destinations_since)
            .map(|(d, since)| {
                let step = d.step_at(now.saturating_duration_since(*since));
                step.map(|s| s.status.as_str())
            })
            .collect()
    }

    /// Apply `change` at `now`, or say why AWS would refuse it. On success,
    /// the status the answer reports (ENABLING or DISABLING).
    pub(crate) fn change_streaming(
        &mut self,
        change: Change,
        now: Instant,
        times: TransitionTimes,
    ) -> Result<&'static str, DestinationError> {
        let statuses = self.statuses_at(now);
        let entry_of =
            |arn: &str| (self.spec.destinations.iter()).position(|d| d.stream_arn == arn);
        match change {
            Change::Enable {
                stream_arn,
                precision,
                stream_usable,
            } => {
                if statuses.iter().flatten().any(|s| LIVE.contains(s)) {
                    return Err(DestinationError::NotDisabled);
                }
                let end = if stream_usable {
                    Step::hold("ACTIVE")
                } else {
                    Step::hold("ENABLE_FAILED").with_description(ENABLE_FAILED_DESCRIPTION)
                };
                let mut entry = DestinationSpec::timeline(
                    &stream_arn,
                    vec![Step::lasting("ENABLING", times.enabling), end],
                );
                entry.precision = precision;
                match entry_of(&stream_arn) {
                    Some(at) => {
                        self.spec.destinations[at] = entry;
                        self.destinations_since[at] = now;
                    }
                    None => {
                        self.spec.destinations.insert(0, entry);
                        self.destinations_since.insert(0, now);
                    }
                }
                Ok("ENABLING")
            }
            Change::Disable { stream_arn } => {
                let at = entry_of(&stream_arn)
                    .filter(|at| statuses[*at] == Some("ACTIVE"))
                    .ok_or(DestinationError::NotActive)?;
                let entry = &mut self.spec.destinations[at];
                entry.timeline = vec![
                    Step::lasting("DISABLING", times.disabling),
                    Step::hold("DISABLED"),
                ];
                entry.repeat = false;
                self.destinations_since[at] = now;
                Ok("DISABLING")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::TableSpec;

    const A: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/a";
    const B: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/b";

    fn times() -> TransitionTimes {
        TransitionTimes {
            enabling: Duration::from_secs(6),
            disabling: Duration::from_secs(2),
        }
    }

    fn table(destinations: Vec<DestinationSpec>, at: Instant) -> InstalledTable {
        let spec = TableSpec {
            destinations,
            ..TableSpec::new("t")
        };
        InstalledTable::new(spec, at)
    }

    fn enable(arn: &str, usable: bool) -> Change {
        Change::Enable {
            stream_arn: arn.to_string(),
            precision: None,
            stream_usable: usable,
        }
    }

    fn disable(arn: &str) -> Change {
        Change::Disable {
            stream_arn: arn.to_string(),
        }
    }

    /// `arn-tail=STATUS` per entry at `at`.
    fn listed(t: &InstalledTable, at: Instant) -> Vec<String> {
        (t.spec.destinations.iter())
            .zip(t.statuses_at(at))
            .map(|(d, s)| format!("{}={}", &d.stream_arn[d.stream_arn.len() - 1..], s.unwrap()))
            .collect()
    }

    #[test]
    fn enable_then_disable_walks_every_status() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut t = table(vec![], t0);
        assert_eq!(
            t.change_streaming(enable(A, true), t0, times()),
            Ok("ENABLING")
        );
        assert_eq!(listed(&t, secs(5)), ["a=ENABLING"]);
        assert_eq!(listed(&t, secs(6)), ["a=ACTIVE"]);
        assert_eq!(t.spec.destinations[0].precision, None);
        // Not ACTIVE yet: no Disable.
        assert_eq!(
            t.change_streaming(disable(A), secs(1), times()),
            Err(DestinationError::NotActive)
        );
        assert_eq!(
            t.change_streaming(disable(A), secs(10), times()),
            Ok("DISABLING")
        );
        assert_eq!(listed(&t, secs(11)), ["a=DISABLING"]);
        assert_eq!(listed(&t, secs(12)), ["a=DISABLED"]);
        assert_eq!(listed(&t, secs(100_000)), ["a=DISABLED"], "stays listed");
        // DISABLED: a second Disable is refused, a re-Enable flips the entry.
        assert_eq!(
            t.change_streaming(disable(A), secs(20), times()),
            Err(DestinationError::NotActive)
        );
        let again = Change::Enable {
            stream_arn: A.to_string(),
            precision: Some("MICROSECOND".into()),
            stream_usable: true,
        };
        assert_eq!(t.change_streaming(again, secs(30), times()), Ok("ENABLING"));
        assert_eq!(listed(&t, secs(36)), ["a=ACTIVE"]);
        assert_eq!(t.spec.destinations.len(), 1);
        assert_eq!(
            t.spec.destinations[0].precision.as_deref(),
            Some("MICROSECOND")
        );
    }

    #[test]
    fn one_stream_at_a_time() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        for busy in ["ENABLING", "ACTIVE", "UPDATING", "DISABLING"] {
            let mut t = table(vec![DestinationSpec::fixed(A, busy)], t0);
            for arn in [A, B] {
                assert_eq!(
                    t.change_streaming(enable(arn, true), secs(1), times()),
                    Err(DestinationError::NotDisabled),
                    "{busy}, enable {arn}"
                );
            }
            assert_eq!(listed(&t, secs(1)), [format!("a={busy}")]);
        }
        // A second stream is fine once the first is off; the new entry is
        // listed first, the old one stays.
        let mut t = table(vec![DestinationSpec::fixed(A, "DISABLED")], t0);
        assert_eq!(
            t.change_streaming(enable(B, true), secs(1), times()),
            Ok("ENABLING")
        );
        assert_eq!(listed(&t, secs(7)), ["b=ACTIVE", "a=DISABLED"]);
        assert_eq!(
            t.change_streaming(enable(A, true), secs(8), times()),
            Err(DestinationError::NotDisabled)
        );
    }

    #[test]
    fn enable_failed_entries_stay_and_cannot_be_disabled() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        let mut t = table(vec![], t0);
        // A stream that is not there: accepted, then ENABLE_FAILED.
        assert_eq!(
            t.change_streaming(enable(A, false), t0, times()),
            Ok("ENABLING")
        );
        assert_eq!(listed(&t, secs(6)), ["a=ENABLE_FAILED"]);
        let step = t.spec.destinations[0]
            .step_at(Duration::from_secs(6))
            .unwrap();
        assert_eq!(step.description.as_deref(), Some(ENABLE_FAILED_DESCRIPTION));
        assert_eq!(
            t.change_streaming(disable(A), secs(7), times()),
            Err(DestinationError::NotActive)
        );
        // Enabling a working stream beside it leaves the failed entry listed.
        assert_eq!(
            t.change_streaming(enable(B, true), secs(8), times()),
            Ok("ENABLING")
        );
        assert_eq!(listed(&t, secs(20)), ["b=ACTIVE", "a=ENABLE_FAILED"]);
        // A stream never enabled on the table cannot be disabled either.
        let c = "arn:aws:kinesis:us-east-1:123456789012:stream/c";
        assert_eq!(
            t.change_streaming(disable(c), secs(21), times()),
            Err(DestinationError::NotActive)
        );
    }

    #[test]
    fn changes_leave_the_other_entries_timelines_alone() {
        let t0 = Instant::now();
        let secs = |s| t0 + Duration::from_secs(s);
        // B fails for 10 s and then holds DISABLED, on its own clock.
        let b = DestinationSpec::timeline(
            B,
            vec![
                Step::lasting("ENABLE_FAILED", Duration::from_secs(10)),
                Step::hold("DISABLED"),
            ],
        );
        let mut t = table(vec![b, DestinationSpec::fixed(A, "DISABLED")], t0);
        assert_eq!(
            t.change_streaming(enable(A, true), secs(4), times()),
            Ok("ENABLING")
        );
        assert_eq!(listed(&t, secs(9)), ["b=ENABLE_FAILED", "a=ENABLING"]);
        assert_eq!(listed(&t, secs(10)), ["b=DISABLED", "a=ACTIVE"]);
    }

    #[test]
    fn errors_carry_aws_codes_and_messages() {
        assert_eq!(
            DestinationError::TableNotFound("ghost".into()).to_string(),
            "Requested resource not found: Table: ghost not found"
        );
        assert_eq!(
            DestinationError::TableNotFound("ghost".into()).code(),
            "ResourceNotFoundException"
        );
        assert_eq!(
            DestinationError::NotDisabled.to_string(),
            "Table is not in a valid state to enable Kinesis Streaming Destination: \
             EnableKinesisStreamingDestination must be DISABLED or ENABLE_FAILED to perform \
             ENABLE operation."
        );
        assert_eq!(
            DestinationError::NotActive.to_string(),
            "Table is not in a valid state to enable Kinesis Streaming Destination: \
             KinesisStreamingDestination must be ACTIVE to perform DISABLE operation."
        );
        for error in [
            DestinationError::NotDisabled,
            DestinationError::NotActive,
            DestinationError::ConfigurationOnDisable,
        ] {
            assert_eq!(error.code(), "ValidationException");
        }
    }
}
