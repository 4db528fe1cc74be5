//! The domain: what the polls tell about one table. A [`TableState`] folds
//! each poll's outcome in ([`TableState::record_success`],
//! [`TableState::record_failure`]) and keeps the bookkeeping of when each
//! destination's status last changed. The clock is passed in, so the fold is
//! a plain function of its inputs; nothing here knows about metric text or
//! HTTP (that is the `metrics` and `store` modules, layers above this one).
//!
//! Besides the polls, a table's state holds what the configuration expects
//! of it ([`TableState::set_expectation`]: must it stream, and to a stream
//! of which name) and the tags it exports as labels
//! ([`TableState::record_tags`]); a scope's state holds its request
//! counters and per-service budgets ([`ScopeState::count_request`],
//! [`ScopeState::set_budget`]).

pub mod store;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::aws::{Destination, PollError};
use crate::config::Pattern;

/// The status values AWS documents today, in the order they are exported.
pub const KNOWN_STATUSES: [&str; 6] = [
    "ENABLING",
    "ACTIVE",
    "DISABLING",
    "DISABLED",
    "ENABLE_FAILED",
    "UPDATING",
];

/// One CDC reading of a table: (delegated operation, CloudWatch metric
/// name, the latest (value, Unix time) or `None` for no datapoint).
pub type CdcPoint = (String, String, Option<(f64, f64)>);

/// The stream statuses exported as a stateset, plus `NOT_FOUND` for a
/// stream that is gone.
pub const KNOWN_STREAM_STATUSES: [&str; 5] =
    ["CREATING", "DELETING", "ACTIVE", "UPDATING", NOT_FOUND];

/// The stream status of a stream `DescribeStreamSummary` cannot find.
pub const NOT_FOUND: &str = "NOT_FOUND";

/// Destination statuses behind which the stream must exist: their streams
/// are cross-checked.
pub const STREAM_CHECKED: [&str; 3] = ["ACTIVE", "ENABLING", "UPDATING"];

/// Destination statuses under which the table's changes are delivered: a
/// table with a destination in one of them is streaming. UPDATING counts:
/// delivery goes on while a destination is updated.
pub const WORKING: [&str; 2] = ["ACTIVE", "UPDATING"];

/// The account and stream name inside a Kinesis stream ARN
/// (`arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME`); empty strings for
/// the parts that are missing.
pub fn split_stream_arn(arn: &str) -> (&str, &str) {
    let mut parts = arn.splitn(6, ':');
    let account = parts.nth(4).unwrap_or("");
    let name = parts
        .next()
        .and_then(|resource| resource.strip_prefix("stream/"))
        .unwrap_or("");
    (account, name)
}

/// An AWS service the exporter calls: the `service` label of the request
/// counters and of the per-service budgets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Service {
    DynamoDb,
    Kinesis,
    CloudWatch,
    Sts,
}

impl Service {
    /// Every service, in the order the metrics list them.
    pub const ALL: [Service; 4] = [
        Service::DynamoDb,
        Service::Kinesis,
        Service::CloudWatch,
        Service::Sts,
    ];

    /// The `service` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::Kinesis => "kinesis",
            Service::CloudWatch => "cloudwatch",
            Service::Sts => "sts",
        }
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Seconds since the Unix epoch, as a float (0 if the clock is before 1970):
/// the clock callers pass into this module.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

pub use crate::config::Name;

/// An (account, region) pair: the unit of request budgets and of the
/// scope-level metrics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ScopeKey {
    pub account_id: Name,
    pub region: Name,
}

/// Identifies a table in the store and in the metrics (`account_id`,
/// `region`, `table`): same-named tables of two accounts are distinct.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableKey {
    pub account_id: Name,
    pub region: Name,
    pub table: Name,
}

/// A destination as last seen, plus when its current status was first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationState {
    pub stream_arn: Name,
    pub status: String,
    pub description: Option<String>,
    pub precision: Option<String>,
    /// Unix time at which this process first saw `status`.
    pub since: f64,
}

/// Everything the metrics say about one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    pub table: Name,
    pub region: Name,
    pub account_id: Name,
    /// `None` until the first poll finished; then whether the last one worked.
    pub last_poll_ok: Option<bool>,
    /// Unix time of the last successful poll.
    pub last_success: Option<f64>,
    /// Destinations listed by the last successful poll; `None` before one.
    pub destination_count: Option<usize>,
    /// Sorted by stream ARN so the output order is stable.
    pub destinations: Vec<DestinationState>,
    /// Failed polls by error code (a counter: never decreases).
    pub errors: BTreeMap<String, u64>,
    /// The code of the failure in progress, to log only changes at warn.
    pub failing_with: Option<String>,
    /// CloudWatch's latest CDC datapoints: by `DelegatedOperation`, then
    /// by metric name, (value, Unix time). A metric without a datapoint has
    /// no entry (which is not a zero).
    pub cdc: BTreeMap<String, BTreeMap<String, (f64, f64)>>,
    /// Whether the configuration expects the table to stream; `None` while
    /// that is unknown (an expectation by tag before the table's tags were
    /// read). Set by [`TableState::set_expectation`].
    pub expected: Option<bool>,
    /// The regex a working destination's stream *name* must match
    /// (`expect.stream`); one `Arc` shared by the target's tables, so its
    /// matching caches exist once, not once per table.
    pub stream_pattern: Option<Arc<Pattern>>,
    /// Whether a working (ACTIVE or UPDATING) destination's stream name
    /// matches `stream_pattern`: `Some(true)` if one does, `Some(false)` if
    /// there are working destinations and none does, `None` without a
    /// pattern or without a working destination. Kept up to date whenever
    /// the destinations or the pattern change.
    pub stream_match: Option<bool>,
    /// The exported tags as (label name, value), in the configured order,
    /// an empty value for a tag the table lacks. A table starts with none
    /// (`Some` of no labels: its target exports no tags); a table whose
    /// target exports some has `None` from [`TableState::set_exports_tags`]
    /// until its first tag read finished. A failed first read leaves it
    /// empty, so the tags series, which every table-level alert joins on,
    /// exists for every polled table but while a first read is pending.
    pub tags: Option<Vec<(Name, String)>>,
    /// Unix time of the last successful tag read.
    pub tags_read_at: Option<f64>,
    /// Failed tag reads (`ListTagsOfResource`) by error code (a counter).
    pub tag_errors: BTreeMap<String, u64>,
    /// The code of the tag-read failure in progress, to log only changes.
    pub tags_failing_with: Option<String>,
}

impl TableState {
    /// The streams of the destinations whose status says the stream must
    /// exist (see [`STREAM_CHECKED`]).
    /// Sorted by ARN, without duplicates (as `destinations` is).
    pub fn checked_streams(&self) -> impl Iterator<Item = &Name> {
        self.destinations
            .iter()
            .filter(|d| STREAM_CHECKED.contains(&d.status.as_str()))
            .map(|d| &d.stream_arn)
    }

    /// Set what the configuration expects of the table: whether it must
    /// stream (`None`: not known yet) and the regex its stream's name must
    /// match. The stream match is recomputed at once.
    pub fn set_expectation(&mut self, expected: Option<bool>, stream: Option<Arc<Pattern>>) {
        if self.expected != expected {
            if let (Some(from), Some(to)) = (self.expected, expected) {
                tracing::info!(table = %self.table, region = %self.region, account_id = %self.account_id,
                    from, to, "whether the table is expected to stream changed");
            }
            self.expected = expected;
        }
        self.stream_pattern = stream;
        self.update_stream_match();
    }

    /// The streams of the working destinations (see [`WORKING`]).
    pub fn working_streams(&self) -> impl Iterator<Item = &Name> {
        self.destinations
            .iter()
            .filter(|d| WORKING.contains(&d.status.as_str()))
            .map(|d| &d.stream_arn)
    }

    fn update_stream_match(&mut self) {
        self.stream_match = self.stream_pattern.as_ref().and_then(|pattern| {
            let mut working = self.working_streams().peekable();
            working.peek()?;
            Some(working.any(|arn| pattern.is_match(split_stream_arn(arn).1)))
        });
    }

    /// Fold one tag read in: the exported tags as (label name, value) in
    /// the configured order (an empty value for a missing tag), or the
    /// error. A failure keeps the last known tags, or, before any read
    /// worked, makes them empty so the table's alerts still carry the tags
    /// series (with no team to route to); it counts by code.
    pub fn record_tags(&mut self, outcome: Result<Vec<(Name, String)>, &PollError>, now: f64) {
        match outcome {
            Ok(tags) => {
                if let Some(code) = self.tags_failing_with.take() {
                    tracing::info!(table = %self.table, region = %self.region, account_id = %self.account_id,
                        previous_error = %code, "tag read succeeded again");
                }
                self.tags = Some(tags);
                self.tags_read_at = Some(now);
            }
            Err(err) => {
                let code = err.code().to_string();
                *self.tag_errors.entry(code.clone()).or_insert(0) += 1;
                if self.tags_failing_with.as_deref() != Some(code.as_str()) {
                    tracing::warn!(table = %self.table, region = %self.region, account_id = %self.account_id,
                        code = %code, error = %err, "tag read failed; keeping the last known tags");
                }
                self.tags_failing_with = Some(code);
                self.tags.get_or_insert_with(Vec::new);
            }
        }
    }

    /// Say whether the table's target exports tags. Without, the tags
    /// series carries no tag labels and needs no read. With, a table whose
    /// tags were never read (nor failed to be) has its series held back
    /// until the first read, so its alerts do not first go out without the
    /// team's label; tags read before are kept until the next read.
    pub fn set_exports_tags(&mut self, exports: bool) {
        let attempted = self.tags_read_at.is_some() || !self.tag_errors.is_empty();
        if !exports {
            self.tags = Some(Vec::new());
        } else if !attempted {
            self.tags = None;
        }
    }

    /// Replace the CDC datapoints: `points` holds, per (delegated
    /// operation, metric), the latest datapoint or `None` for none in the
    /// window. Series CloudWatch no longer lists go.
    pub fn record_cdc(&mut self, points: &[CdcPoint]) {
        self.cdc.clear();
        for (operation, metric, point) in points {
            let metrics = self.cdc.entry(operation.clone()).or_default();
            if let Some(point) = point {
                metrics.insert(metric.clone(), *point);
            }
        }
    }

    /// A table not polled yet.
    pub fn new(key: &TableKey) -> Self {
        TableState {
            table: key.table.clone(),
            region: key.region.clone(),
            account_id: key.account_id.clone(),
            tags: Some(Vec::new()),
            ..TableState::default()
        }
    }

    /// Fold a successful poll in. `now` is unix time in seconds.
    pub fn record_success(&mut self, destinations: &[Destination], now: f64) {
        let mut fresh: Vec<DestinationState> = Vec::with_capacity(destinations.len());
        // What is left of it at the end is no longer listed.
        let mut old = std::mem::take(&mut self.destinations);
        for d in destinations {
            if fresh.iter().any(|f| *f.stream_arn == *d.stream_arn) {
                // Two entries for one stream would be duplicate series.
                tracing::warn!(table = %self.table, region = %self.region, account_id = %self.account_id, stream_arn = %d.stream_arn,
                    "AWS listed the same stream twice; keeping the first entry");
                continue;
            }
            let previous = old
                .iter()
                .position(|p| *p.stream_arn == *d.stream_arn)
                .map(|i| old.swap_remove(i));
            let since = match &previous {
                Some(p) if p.status == d.status => p.since,
                _ => {
                    self.log_status_change(previous.as_ref().map(|p| p.status.as_str()), d);
                    now
                }
            };
            // A destination seen before keeps its strings where they did
            // not change: its stream ARN is shared with the scheduler and
            // the stream's entry.
            let entry = match previous {
                Some(mut p) => {
                    if p.status != d.status {
                        p.status.clone_from(&d.status);
                    }
                    if p.description != d.status_description {
                        p.description.clone_from(&d.status_description);
                    }
                    if p.precision != d.precision {
                        p.precision.clone_from(&d.precision);
                    }
                    p.since = since;
                    p
                }
                None => DestinationState {
                    stream_arn: Name::from(d.stream_arn.as_str()),
                    status: d.status.clone(),
                    description: d.status_description.clone(),
                    precision: d.precision.clone(),
                    since,
                },
            };
            fresh.push(entry);
        }
        for gone in &old {
            tracing::info!(table = %self.table, region = %self.region, account_id = %self.account_id, stream_arn = %gone.stream_arn,
                "destination no longer listed");
        }
        fresh.sort_by(|a, b| a.stream_arn.cmp(&b.stream_arn));
        if let Some(code) = self.failing_with.take() {
            tracing::info!(table = %self.table, region = %self.region, account_id = %self.account_id, previous_error = %code,
                "poll succeeded again");
        }
        self.destination_count = Some(fresh.len());
        self.destinations = fresh;
        self.update_stream_match();
        self.last_poll_ok = Some(true);
        self.last_success = Some(now);
    }

    /// Fold a failed poll in. A missing table loses its destination series;
    /// any other failure keeps the last known ones (their age shows in
    /// `last_success`).
    pub fn record_failure(&mut self, err: &PollError) {
        let code = err.code().to_string();
        *self.errors.entry(code.clone()).or_insert(0) += 1;
        if let PollError::NotFound(_) = err {
            self.destinations.clear();
            self.destination_count = Some(0);
            self.update_stream_match();
        }
        if self.failing_with.as_deref() == Some(code.as_str()) {
            tracing::debug!(table = %self.table, region = %self.region, account_id = %self.account_id, code = %code, error = %err, "poll failed again");
        } else {
            tracing::warn!(table = %self.table, region = %self.region, account_id = %self.account_id, code = %code, error = %err, "poll failed");
        }
        self.failing_with = Some(code);
        self.last_poll_ok = Some(false);
    }

    fn log_status_change(&self, from: Option<&str>, to: &Destination) {
        let from = from.unwrap_or("(new)");
        let description = to.status_description.as_deref().unwrap_or("");
        if !KNOWN_STATUSES.contains(&to.status.as_str()) {
            tracing::warn!(table = %self.table, region = %self.region, account_id = %self.account_id, stream_arn = %to.stream_arn,
                status = %to.status, "destination reports a status this exporter does not know; exporting it as its own series");
        }
        if to.status == "ENABLE_FAILED" {
            tracing::warn!(table = %self.table, region = %self.region, account_id = %self.account_id, stream_arn = %to.stream_arn,
                from, to = %to.status, description, "destination status changed");
        } else {
            tracing::info!(table = %self.table, region = %self.region, account_id = %self.account_id, stream_arn = %to.stream_arn,
                from, to = %to.status, description, "destination status changed");
        }
    }
}

impl TableKey {
    /// The scope the table belongs to.
    pub fn scope(&self) -> ScopeKey {
        ScopeKey {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
        }
    }
}

/// This replica's part of the tables under `--shard N --total-shards M`:
/// the keys whose stable hash modulo `total` is `index`. The hash (FNV-1a
/// over account, region and table name) is fixed, so every replica, of any
/// version, agrees on who owns a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u32,
    pub total: u32,
}

impl Shard {
    /// No sharding: one replica owns everything.
    pub const ALL: Shard = Shard { index: 0, total: 1 };

    /// Whether this replica polls `key`.
    pub fn owns(&self, key: &TableKey) -> bool {
        self.total <= 1 || stable_hash(key) % u64::from(self.total) == u64::from(self.index)
    }
}

fn stable_hash(key: &TableKey) -> u64 {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let mut hash = OFFSET;
    for part in [&key.account_id, &key.region, &key.table] {
        for byte in part.bytes().chain(std::iter::once(0)) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(PRIME);
        }
    }
    hash
}

/// Identifies a stream in the store and in the metrics: the (account,
/// region) scope that checked it and its ARN.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct StreamKey {
    pub account_id: Name,
    pub region: Name,
    pub stream_arn: Name,
}

impl StreamKey {
    /// The scope the stream was checked in.
    pub fn scope(&self) -> ScopeKey {
        ScopeKey {
            account_id: self.account_id.clone(),
            region: self.region.clone(),
        }
    }
}

/// What the stream cross-check knows about one stream.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StreamState {
    pub account_id: Name,
    pub region: Name,
    pub stream_arn: Name,
    /// The stream's status, or [`NOT_FOUND`]; `None` before the first
    /// answer. A failed check (access denied, throttled...) keeps it.
    pub status: Option<String>,
    /// The last summary; `None` before one and once the stream is gone.
    pub summary: Option<crate::aws::StreamSummary>,
    /// `None` until the first check finished; then whether the last worked.
    pub last_poll_ok: Option<bool>,
    pub last_success: Option<f64>,
    /// Failed checks by error code (a counter).
    pub errors: BTreeMap<String, u64>,
    failing_with: Option<String>,
}

impl StreamState {
    /// A stream not checked yet.
    pub fn new(key: &StreamKey) -> Self {
        StreamState {
            account_id: key.account_id.clone(),
            region: key.region.clone(),
            stream_arn: key.stream_arn.clone(),
            ..StreamState::default()
        }
    }

    /// Fold one `DescribeStreamSummary` outcome in. A missing stream is a
    /// successful check that found [`NOT_FOUND`]; any other failure (an
    /// access denied above all) keeps the last known status and counts.
    pub fn record(&mut self, outcome: &Result<crate::aws::StreamSummary, PollError>, now: f64) {
        let status = match outcome {
            Ok(summary) => {
                self.summary = Some(summary.clone());
                summary.status.clone()
            }
            Err(PollError::NotFound(_)) => {
                self.summary = None;
                NOT_FOUND.to_string()
            }
            Err(err) => {
                let code = err.code().to_string();
                *self.errors.entry(code.clone()).or_insert(0) += 1;
                if self.failing_with.as_deref() != Some(code.as_str()) {
                    tracing::warn!(stream_arn = %self.stream_arn, account_id = %self.account_id, region = %self.region,
                        code = %code, error = %err, "stream check failed; keeping the last known stream status");
                }
                self.failing_with = Some(code);
                self.last_poll_ok = Some(false);
                return;
            }
        };
        if self.status.as_deref() != Some(status.as_str()) {
            let log = |level_warn: bool| {
                if level_warn {
                    tracing::warn!(stream_arn = %self.stream_arn, account_id = %self.account_id, region = %self.region,
                        from = self.status.as_deref().unwrap_or("(new)"), to = %status, "stream status changed");
                } else {
                    tracing::info!(stream_arn = %self.stream_arn, account_id = %self.account_id, region = %self.region,
                        from = self.status.as_deref().unwrap_or("(new)"), to = %status, "stream status changed");
                }
            };
            log(status == NOT_FOUND || status == "DELETING");
        }
        self.status = Some(status);
        self.failing_with = None;
        self.last_poll_ok = Some(true);
        self.last_success = Some(now);
    }
}

/// What table discovery last found in a scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DiscoveryState {
    /// Tables that matched the filters at the last successful refresh.
    pub tables: Option<usize>,
    /// Unix time of the last successful refresh.
    pub last_success: Option<f64>,
    /// Failed refreshes (`ListTables`) and failed tag reads of single
    /// tables (`ListTagsOfResource`, which leave the table's last decision
    /// in force) by error code (a counter).
    pub errors: BTreeMap<String, u64>,
}

/// One service's request budget in a scope, as last read from it.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct BudgetState {
    /// The budget's current adaptive rate, requests per second.
    pub rate_limit: f64,
    /// Throttling answers the service gave in the scope (a counter).
    pub throttled: u64,
}

/// Everything the metrics say about one (account, region) scope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScopeState {
    pub account_id: Name,
    pub region: Name,
    /// Tables this process polls in the scope.
    pub tables: usize,
    /// The configured poll interval, seconds.
    pub poll_interval: f64,
    /// Average time between two polls of one table, seconds; `None` until a
    /// table has been polled twice.
    pub effective_interval: Option<f64>,
    /// Each budgeted service's budget ([`ScopeState::set_budget`]).
    pub budgets: BTreeMap<Service, BudgetState>,
    /// Requests sent, by service and operation (the AWS name, such as
    /// `DescribeKinesisStreamingDestination`): every attempt, retries
    /// included (a counter).
    pub requests: BTreeMap<Service, BTreeMap<String, u64>>,
    /// Metrics requested from CloudWatch's GetMetricData (the
    /// `MetricDataQueries` of every call and page): what AWS bills.
    pub metrics_requested: u64,
    /// `None` when no target discovers tables in the scope.
    pub discovery: Option<DiscoveryState>,
    /// Failed CloudWatch calls (ListMetrics, GetMetricData) by error code.
    pub cdc_errors: BTreeMap<String, u64>,
}

impl ScopeState {
    /// A scope with nothing recorded yet.
    pub fn new(key: &ScopeKey) -> Self {
        ScopeState {
            account_id: key.account_id.clone(),
            region: key.region.clone(),
            ..ScopeState::default()
        }
    }

    /// Count one request to `service`'s `operation` (an attempt that left
    /// the process: each retry counts again).
    pub fn count_request(&mut self, service: Service, operation: &str) {
        let operations = self.requests.entry(service).or_default();
        match operations.get_mut(operation) {
            Some(count) => *count += 1,
            None => {
                operations.insert(operation.to_string(), 1);
            }
        }
    }

    /// Count `n` metrics requested from GetMetricData (one call's or
    /// page's `MetricDataQueries`).
    pub fn count_metrics_requested(&mut self, n: u64) {
        self.metrics_requested += n;
    }

    /// Record `service`'s budget: its current rate and its throttling
    /// answers so far (the budget's own total, which never decreases).
    pub fn set_budget(&mut self, service: Service, rate_limit: f64, throttled: u64) {
        self.budgets.insert(
            service,
            BudgetState {
                rate_limit,
                throttled,
            },
        );
    }

    /// Fold in the gap between two polls of one table: an exponentially
    /// weighted average that follows a stretched cycle within a few dozen
    /// polls.
    pub fn record_gap(&mut self, seconds: f64) {
        const WEIGHT: f64 = 0.1;
        self.effective_interval = Some(match self.effective_interval {
            Some(average) => average + WEIGHT * (seconds - average),
            None => seconds,
        });
    }

    /// Fold in a discovery refresh: the number of matching tables, or the
    /// error code of a failure (the last known list stays in use).
    pub fn record_discovery(&mut self, outcome: Result<usize, &str>, now: f64) {
        let discovery = self.discovery.get_or_insert_with(DiscoveryState::default);
        match outcome {
            Ok(tables) => {
                discovery.tables = Some(tables);
                discovery.last_success = Some(now);
            }
            Err(code) => *discovery.errors.entry(code.to_string()).or_insert(0) += 1,
        }
    }

    /// Count one table whose tags a refresh could not read (the refresh
    /// itself is recorded with [`ScopeState::record_discovery`]).
    pub fn record_discovery_table_error(&mut self, code: &str) {
        let discovery = self.discovery.get_or_insert_with(DiscoveryState::default);
        *discovery.errors.entry(code.to_string()).or_insert(0) += 1;
    }
}

/// What the unit tests of this layer and the ones above build their
/// states from.
#[cfg(test)]
pub(crate) mod fixtures {
    use crate::aws::{Destination, PollError};

    /// A destination as a poll lists it, without description or precision.
    pub(crate) fn dest(arn: &str, status: &str) -> Destination {
        Destination {
            stream_arn: arn.into(),
            status: status.into(),
            status_description: None,
            precision: None,
        }
    }

    /// The error a throttled call ends with.
    pub(crate) fn throttled() -> PollError {
        PollError::Service {
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{dest, throttled};
    use super::*;
    use std::sync::Arc;

    fn fresh() -> TableState {
        TableState::new(&TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
        })
    }

    #[test]
    fn status_change_time_moves_only_on_change() {
        let mut state = fresh();
        state.record_success(&[dest("s1", "ENABLING")], 100.0);
        state.record_success(&[dest("s1", "ENABLING")], 160.0);
        assert_eq!(state.destinations[0].since, 100.0);
        state.record_success(&[dest("s1", "ACTIVE")], 220.0);
        assert_eq!(state.destinations[0].since, 220.0);
        assert_eq!(state.destinations[0].status, "ACTIVE");
        assert_eq!(state.last_success, Some(220.0));
    }

    #[test]
    fn transient_failure_keeps_series_and_counts_by_code() {
        let mut state = fresh();
        state.record_success(&[dest("s1", "ACTIVE")], 100.0);
        state.record_failure(&throttled());
        state.record_failure(&throttled());
        state.record_failure(&PollError::Timeout("t".into()));
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(state.destination_count, Some(1));
        assert_eq!(state.last_poll_ok, Some(false));
        assert_eq!(state.last_success, Some(100.0));
        assert_eq!(state.errors.get("ThrottlingException"), Some(&2));
        assert_eq!(state.errors.get("timeout"), Some(&1));
    }

    #[test]
    fn not_found_removes_destinations() {
        let mut state = fresh();
        state.record_success(&[dest("s1", "ACTIVE"), dest("s2", "ACTIVE")], 1.0);
        state.record_failure(&PollError::NotFound("gone".into()));
        assert!(state.destinations.is_empty());
        assert_eq!(state.destination_count, Some(0));
        assert_eq!(state.errors.get("ResourceNotFoundException"), Some(&1));
    }

    #[test]
    fn vanished_destination_is_dropped_and_order_is_stable() {
        let mut state = fresh();
        state.record_success(&[dest("s2", "ACTIVE"), dest("s1", "ACTIVE")], 1.0);
        let arns: Vec<&str> = state.destinations.iter().map(|d| &*d.stream_arn).collect();
        assert_eq!(arns, ["s1", "s2"]);
        state.record_success(&[dest("s2", "ACTIVE")], 2.0);
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(&*state.destinations[0].stream_arn, "s2");
        assert_eq!(state.destinations[0].since, 1.0);
    }

    #[test]
    fn duplicate_stream_entries_are_collapsed() {
        let mut state = fresh();
        state.record_success(&[dest("s1", "ACTIVE"), dest("s1", "DISABLED")], 1.0);
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(state.destinations[0].status, "ACTIVE");
    }

    #[test]
    fn effective_interval_follows_the_gaps() {
        let mut scope = ScopeState::new(&ScopeKey {
            account_id: "1".into(),
            region: "r".into(),
        });
        assert_eq!(scope.effective_interval, None);
        scope.record_gap(60.0);
        assert_eq!(scope.effective_interval, Some(60.0));
        for _ in 0..100 {
            scope.record_gap(120.0);
        }
        assert!((scope.effective_interval.unwrap() - 120.0).abs() < 0.01);
    }

    #[test]
    fn discovery_keeps_the_last_count_through_failures() {
        let mut scope = ScopeState::new(&ScopeKey {
            account_id: "1".into(),
            region: "r".into(),
        });
        scope.record_discovery(Ok(7), 10.0);
        scope.record_discovery(Err("ThrottlingException"), 20.0);
        scope.record_discovery(Err("ThrottlingException"), 30.0);
        let discovery = scope.discovery.unwrap();
        assert_eq!(discovery.tables, Some(7));
        assert_eq!(discovery.last_success, Some(10.0));
        assert_eq!(discovery.errors["ThrottlingException"], 2);
    }

    #[test]
    fn shards_are_disjoint_complete_and_stable() {
        let keys: Vec<TableKey> = (0..1000)
            .map(|i| TableKey {
                account_id: ["111111111111", "222222222222"][i % 2].into(),
                region: "us-east-1".into(),
                table: format!("table-{i}").into(),
            })
            .collect();
        let shards: Vec<Shard> = (0..3).map(|index| Shard { index, total: 3 }).collect();
        let mut sizes = [0; 3];
        for key in &keys {
            let owners: Vec<usize> = (0..3).filter(|&i| shards[i].owns(key)).collect();
            assert_eq!(owners.len(), 1, "{key:?}");
            sizes[owners[0]] += 1;
        }
        assert!(sizes.iter().all(|n| (250..=420).contains(n)), "{sizes:?}");
        assert!(keys.iter().all(|k| Shard::ALL.owns(k)));
        // Pinned: the hash must never change between versions.
        assert_eq!(stable_hash(&keys[0]), stable_hash(&keys[0].clone()));
        assert_eq!(
            stable_hash(&TableKey {
                account_id: "a".into(),
                region: "b".into(),
                table: "c".into()
            }),
            0xcec6_4e15_5111_225d
        );
    }

    fn summary(status: &str) -> crate::aws::StreamSummary {
        crate::aws::StreamSummary {
            name: "s".into(),
            status: status.into(),
            open_shards: 2,
            mode: "ON_DEMAND".into(),
            encryption: "KMS".into(),
            retention_hours: 24,
        }
    }

    #[test]
    fn a_missing_stream_is_not_an_access_denied() {
        let key = StreamKey {
            account_id: "1".into(),
            region: "r".into(),
            stream_arn: "arn".into(),
        };
        let mut stream = StreamState::new(&key);
        stream.record(&Ok(summary("ACTIVE")), 1.0);
        assert_eq!(stream.status.as_deref(), Some("ACTIVE"));
        let denied = PollError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        stream.record(&Err(denied), 2.0);
        assert_eq!(
            stream.status.as_deref(),
            Some("ACTIVE"),
            "kept, not NOT_FOUND"
        );
        assert_eq!(stream.last_poll_ok, Some(false));
        assert_eq!(stream.errors["AccessDeniedException"], 1);
        stream.record(&Err(PollError::NotFound("gone".into())), 3.0);
        assert_eq!(stream.status.as_deref(), Some(NOT_FOUND));
        assert_eq!(stream.summary, None);
        assert_eq!(stream.last_poll_ok, Some(true));
        assert_eq!(stream.last_success, Some(3.0));
    }

    #[test]
    fn only_working_destinations_have_their_stream_checked() {
        let mut state = fresh();
        state.record_success(
            &[
                dest("a", "ACTIVE"),
                dest("b", "ENABLE_FAILED"),
                dest("c", "ENABLING"),
                dest("d", "DISABLED"),
                dest("e", "UPDATING"),
            ],
            1.0,
        );
        let checked: Vec<&str> = state.checked_streams().map(|n| &**n).collect();
        assert_eq!(checked, ["a", "c", "e"]);
    }

    #[test]
    fn a_destination_seen_again_keeps_its_strings() {
        let mut state = fresh();
        state.record_success(&[dest("a", "ENABLING"), dest("b", "ACTIVE")], 1.0);
        let before: Vec<Name> = state.checked_streams().cloned().collect();
        // The same answer, then a status change: the ARNs stay the same
        // allocation (what the scheduler and the stream entries share).
        state.record_success(&[dest("b", "ACTIVE"), dest("a", "ENABLING")], 2.0);
        state.record_success(&[dest("a", "ACTIVE"), dest("b", "ACTIVE")], 3.0);
        let after: Vec<Name> = state.checked_streams().cloned().collect();
        assert_eq!(after, before);
        assert!(before.iter().zip(&after).all(|(x, y)| Arc::ptr_eq(x, y)));
        assert_eq!(state.destinations[0].status, "ACTIVE");
        assert_eq!(state.destinations[0].since, 3.0);
        assert_eq!(state.destinations[1].since, 1.0);
        // A stream no longer listed goes; a new one is a new name.
        state.record_success(&[dest("c", "ACTIVE")], 4.0);
        let checked: Vec<&str> = state.checked_streams().map(|n| &**n).collect();
        assert_eq!(checked, ["c"]);
    }

    #[test]
    fn cdc_points_replace_the_last_ones_and_no_datapoint_is_no_entry() {
        let mut state = fresh();
        let op = "PutRecords".to_string();
        state.record_cdc(&[
            (
                op.clone(),
                "AgeOfOldestUnreplicatedRecord".into(),
                Some((0.0, 10.0)),
            ),
            (op.clone(), "FailedToReplicateRecordCount".into(), None),
        ]);
        let metrics = &state.cdc[&op];
        assert_eq!(
            metrics["AgeOfOldestUnreplicatedRecord"],
            (0.0, 10.0),
            "a zero is kept"
        );
        assert!(!metrics.contains_key("FailedToReplicateRecordCount"));
        state.record_cdc(&[]);
        assert!(state.cdc.is_empty());
    }

    fn cdc_pattern(source: &str) -> Option<Arc<Pattern>> {
        Some(Arc::new(Pattern::new(source).unwrap()))
    }

    fn arn(name: &str) -> String {
        format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}")
    }

    #[test]
    fn stream_match_looks_at_working_destinations_by_name() {
        let mut state = fresh();
        // A pattern before any poll: no destinations, no answer.
        state.set_expectation(Some(true), cdc_pattern("^cdc-"));
        assert_eq!(state.stream_match, None);
        // Only non-working destinations: still no answer, even though one
        // of them names a matching stream.
        state.record_success(
            &[
                dest(&arn("cdc-orders"), "ENABLE_FAILED"),
                dest(&arn("cdc-old"), "DISABLED"),
                dest(&arn("cdc-new"), "ENABLING"),
            ],
            1.0,
        );
        assert_eq!(state.stream_match, None);
        // A working destination to the wrong stream beside a failed one to
        // the right stream: no match.
        state.record_success(
            &[
                dest(&arn("cdc-orders"), "ENABLE_FAILED"),
                dest(&arn("audit"), "ACTIVE"),
            ],
            2.0,
        );
        assert_eq!(state.stream_match, Some(false));
        // Two working destinations, one matching: a match. UPDATING counts.
        state.record_success(
            &[
                dest(&arn("audit"), "ACTIVE"),
                dest(&arn("cdc-orders"), "UPDATING"),
            ],
            3.0,
        );
        assert_eq!(state.stream_match, Some(true));
        // The name is matched, not the ARN: "cdc-" appears in no name here.
        state.record_success(
            &[dest(
                "arn:aws:kinesis:us-east-1:123456789012:stream/x-cdc-y",
                "ACTIVE",
            )],
            4.0,
        );
        assert_eq!(state.stream_match, Some(false));
        state.set_expectation(Some(true), cdc_pattern("cdc"));
        assert_eq!(
            state.stream_match,
            Some(true),
            "recomputed with the pattern"
        );
        // Without a pattern there is nothing to say.
        state.set_expectation(Some(true), None);
        assert_eq!(state.stream_match, None);
        state.set_expectation(Some(true), cdc_pattern("^cdc-"));
        assert_eq!(state.stream_match, Some(false));
        // A missing table has no working destination left.
        state.record_failure(&PollError::NotFound("gone".into()));
        assert_eq!(state.stream_match, None);
        // Other failures keep the last known destinations and their match.
        state.record_success(&[dest(&arn("cdc-orders"), "ACTIVE")], 5.0);
        state.record_failure(&throttled());
        assert_eq!(state.stream_match, Some(true));
    }

    #[test]
    fn expectation_is_kept_as_given() {
        let mut state = fresh();
        assert_eq!(state.expected, None);
        state.set_expectation(Some(false), None);
        assert_eq!(state.expected, Some(false));
        state.set_expectation(Some(true), None);
        assert_eq!(state.expected, Some(true));
        // Unknown again (an expectation by tag whose tags are unknown):
        // the series goes rather than keep a stale answer.
        state.set_expectation(None, None);
        assert_eq!(state.expected, None);
    }

    #[test]
    fn tag_reads_replace_keep_or_default_the_tags() {
        let team: Name = "tag_team".into();
        let owner: Name = "tag_owner".into();
        let mut state = fresh();
        // A new table exports no tags until said otherwise.
        assert_eq!(state.tags, Some(Vec::new()));
        state.set_exports_tags(true);
        assert_eq!(state.tags, None, "held back until the first read");
        // A failed first read: no known tags, but an (empty) series, so
        // the table's alerts are not dropped by the join.
        let denied = PollError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        state.record_tags(Err(&denied), 1.0);
        assert_eq!(state.tags, Some(Vec::new()));
        assert_eq!(state.tags_read_at, None);
        assert_eq!(state.tag_errors["AccessDeniedException"], 1);
        // Said again (a reload): a read was attempted, nothing is held back.
        state.set_exports_tags(true);
        assert_eq!(state.tags, Some(Vec::new()));
        state.record_tags(
            Ok(vec![
                (team.clone(), "payments".into()),
                (owner.clone(), String::new()),
            ]),
            2.0,
        );
        let read = vec![
            (team.clone(), "payments".to_string()),
            (owner.clone(), String::new()),
        ];
        assert_eq!(state.tags.as_ref(), Some(&read));
        assert_eq!(state.tags_read_at, Some(2.0));
        assert_eq!(state.tags_failing_with, None);
        // A later failure keeps the last known tags and counts.
        state.record_tags(Err(&throttled()), 3.0);
        state.record_tags(Err(&throttled()), 4.0);
        assert_eq!(state.tags.as_ref(), Some(&read));
        assert_eq!(state.tags_read_at, Some(2.0));
        assert_eq!(state.tag_errors["ThrottlingException"], 2);
        assert_eq!(state.tag_errors["AccessDeniedException"], 1);
        // A reload that still exports tags keeps them until the next read.
        state.set_exports_tags(true);
        assert_eq!(state.tags.as_ref(), Some(&read));
        // A changed tag replaces the old value.
        state.record_tags(Ok(vec![(team.clone(), "orders".into())]), 5.0);
        assert_eq!(state.tags, Some(vec![(team, "orders".to_string())]));
        // A target that no longer exports tags: a series without tag labels.
        state.set_exports_tags(false);
        assert_eq!(state.tags, Some(Vec::new()));
        // The poll state is untouched by all of this.
        assert_eq!(state.last_poll_ok, None);
        assert!(state.errors.is_empty());
    }

    #[test]
    fn scopes_count_requests_by_service_and_operation() {
        let mut scope = ScopeState::new(&ScopeKey {
            account_id: "1".into(),
            region: "r".into(),
        });
        for _ in 0..3 {
            scope.count_request(Service::DynamoDb, "DescribeKinesisStreamingDestination");
        }
        scope.count_request(Service::DynamoDb, "ListTagsOfResource");
        scope.count_request(Service::Kinesis, "DescribeStreamSummary");
        scope.count_request(Service::CloudWatch, "GetMetricData");
        scope.count_metrics_requested(500);
        scope.count_metrics_requested(12);
        let counts: Vec<(&str, &str, u64)> = scope
            .requests
            .iter()
            .flat_map(|(service, ops)| {
                ops.iter()
                    .map(move |(op, n)| (service.as_str(), op.as_str(), *n))
            })
            .collect();
        assert_eq!(
            counts,
            [
                ("dynamodb", "DescribeKinesisStreamingDestination", 3),
                ("dynamodb", "ListTagsOfResource", 1),
                ("kinesis", "DescribeStreamSummary", 1),
                ("cloudwatch", "GetMetricData", 1),
            ]
        );
        assert_eq!(scope.metrics_requested, 512);
    }

    #[test]
    fn each_service_has_its_own_budget() {
        let mut scope = ScopeState::new(&ScopeKey {
            account_id: "1".into(),
            region: "r".into(),
        });
        scope.set_budget(Service::DynamoDb, 25.0, 0);
        scope.set_budget(Service::Kinesis, 5.0, 0);
        scope.set_budget(Service::Kinesis, 2.5, 1);
        assert_eq!(
            scope.budgets[&Service::DynamoDb],
            BudgetState {
                rate_limit: 25.0,
                throttled: 0
            }
        );
        assert_eq!(
            scope.budgets[&Service::Kinesis],
            BudgetState {
                rate_limit: 2.5,
                throttled: 1
            }
        );
        assert!(!scope.budgets.contains_key(&Service::CloudWatch));
        let labels: Vec<&str> = Service::ALL.iter().map(|s| s.as_str()).collect();
        assert_eq!(labels, ["dynamodb", "kinesis", "cloudwatch", "sts"]);
    }

    /// Seconds (not milliseconds, not zero) since the epoch, read now: the
    /// value lies between two readings of the system clock taken around it.
    #[test]
    fn the_clock_reads_the_present_in_seconds() {
        let read = || {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        };
        let before = read();
        let now = unix_now();
        let after = read();
        assert!(
            before <= now && now <= after,
            "{before} <= {now} <= {after}"
        );
    }
}
