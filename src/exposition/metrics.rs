//! Every metric family the exporter serves, declared in one place.
//!
//! Per-table, per-stream and per-scope families ([`TABLE_FAMILIES`],
//! [`STREAM_FAMILIES`], [`SCOPE_FAMILIES`]) each name the parts of the
//! state they read and the function that turns one entry's state into
//! samples ([`Family::render`]). The shared page (`page`) renders them from
//! the store in chunks of entries, again only where a part a family reads
//! changed. Process-wide metrics (poll duration histogram, build info,
//! `process_*`) live in a `prometheus` registry ([`Telemetry`]) and are
//! encoded at most once a second; they are few and do not grow with the
//! number of tables.
//!
//! Adding a per-table metric: one [`Family`] entry here (name, help, type,
//! the parts it reads and the function producing its samples) and one test.

use std::fmt::Write as _;
use std::time::Duration;

use prometheus::{
    CounterVec, Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry,
    TextEncoder,
};

pub use crate::state::split_stream_arn;
use crate::state::store::Part;
use crate::state::{
    unix_now, ScopeKey, ScopeState, StreamState, TableState, KNOWN_STATUSES, KNOWN_STREAM_STATUSES,
};

/// The Prometheus metric type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    /// The name of the type in `# TYPE` lines of the text format.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One metric family: its identity and how a table's (or a scope's) state
/// becomes samples. The identity labels (`table`, `region`, `account_id`
/// for tables; `account_id`, `region` for scopes) are added by
/// [`Samples::push`]; `samples` only names the extra labels.
pub struct Family<S> {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: Kind,
    /// The parts of the state `samples` reads: the page re-renders the
    /// family for a chunk of entries only when one of these changed.
    pub reads: &'static [Part],
    pub samples: fn(&S, &mut Samples<'_>),
}

impl<S> Family<S> {
    /// Append this family's samples for one entry whose identity labels
    /// are `identity` (see [`Subject::identity`]).
    pub fn render(&self, state: &S, identity: &str, out: &mut String) {
        (self.samples)(
            state,
            &mut Samples {
                out,
                name: self.name,
                identity,
            },
        );
    }
}

/// What has families of its own: a table, a stream, a scope.
pub trait Subject: Sized + 'static {
    /// Its families, in exposition order.
    const FAMILIES: &'static [Family<Self>];

    /// The index in [`Subject::FAMILIES`] of the family whose samples are
    /// exactly the entry's success time (`store::SuccessTime`) under its
    /// identity labels, one sample when it has one: the page rewrites that
    /// family's chunks from the store's index of those times, without
    /// reading the entries (see [`rewrite_success_times`]).
    const SUCCESS_TIME_FAMILY: Option<usize>;

    /// Write its identity labels (`name="value"` pairs, escaped, joined by
    /// commas) into `out`.
    fn identity(&self, out: &mut String);
}

impl Subject for TableState {
    const FAMILIES: &'static [Family<Self>] = &TABLE_FAMILIES;
    const SUCCESS_TIME_FAMILY: Option<usize> = Some(5);

    fn identity(&self, out: &mut String) {
        identity_labels(
            out,
            &[
                ("table", &self.table),
                ("region", &self.region),
                ("account_id", &self.account_id),
            ],
        );
    }
}

impl Subject for StreamState {
    const FAMILIES: &'static [Family<Self>] = &STREAM_FAMILIES;
    const SUCCESS_TIME_FAMILY: Option<usize> = Some(4);

    fn identity(&self, out: &mut String) {
        identity_labels(
            out,
            &[
                ("account_id", &self.account_id),
                ("region", &self.region),
                ("stream_arn", &self.stream_arn),
            ],
        );
    }
}

impl Subject for ScopeState {
    const FAMILIES: &'static [Family<Self>] = &SCOPE_FAMILIES;
    const SUCCESS_TIME_FAMILY: Option<usize> = None;

    fn identity(&self, out: &mut String) {
        identity_labels(
            out,
            &[("account_id", &self.account_id), ("region", &self.region)],
        );
    }
}

/// Per-table families, in exposition order.
pub const TABLE_FAMILIES: [Family<TableState>; 16] = [
    Family {
        name: "dynamodb_kinesis_destination_status",
        help: "Status of a Kinesis streaming destination as of the last successful background poll: one series per status, 1 for the current one.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: destination_status,
    },
    Family {
        name: "dynamodb_kinesis_destination_info",
        help: "Descriptive labels of a Kinesis streaming destination from the last successful background poll; always 1.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: destination_info,
    },
    Family {
        name: "dynamodb_kinesis_destination_status_change_timestamp_seconds",
        help: "Unix time at which the exporter's background polls first saw the destination's current status.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: status_change_timestamp,
    },
    Family {
        name: "dynamodb_kinesis_table_destinations",
        help: "Number of Kinesis streaming destinations the last successful background poll listed for the table.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: table_destinations,
    },
    Family {
        name: "dynamodb_kinesis_table_poll_success",
        help: "Whether the last background poll of the table succeeded (1) or failed (0).",
        kind: Kind::Gauge,
        reads: &[Part::Outcome],
        samples: table_poll_success,
    },
    Family {
        name: "dynamodb_kinesis_table_last_success_timestamp_seconds",
        help: "Unix time of the last successful background poll of the table.",
        kind: Kind::Gauge,
        reads: &[Part::LastSuccess],
        samples: table_last_success,
    },
    Family {
        name: "dynamodb_kinesis_api_errors_total",
        help: "Failed background polls of the table by AWS error code, or timeout, dispatch (no answer), credentials (none could be loaded) and response (unparseable answer).",
        kind: Kind::Counter,
        reads: &[Part::Errors],
        samples: api_errors,
    },
    Family {
        name: "dynamodb_kinesis_table_destination_expected",
        help: "Whether the configuration expects the table to stream to Kinesis (expect, expect_streaming): 1 expected, 0 not. No series while that is unknown (expect.tag before the table's tags were read).",
        kind: Kind::Gauge,
        reads: &[Part::Expectation],
        samples: table_destination_expected,
    },
    Family {
        name: "dynamodb_kinesis_table_destination_stream_match",
        help: "Whether a working (ACTIVE or UPDATING) destination of the table streams to a stream whose name matches expect.stream: 1 one does, 0 none does. No series without expect.stream or without a working destination.",
        kind: Kind::Gauge,
        reads: &[Part::Expectation],
        samples: table_stream_match,
    },
    Family {
        name: "dynamodb_kinesis_table_tags",
        help: "The table's tags named in export_tags, as labels tag_<key> (characters outside [a-zA-Z0-9_] replaced by _), empty for a tag the table lacks; always 1. One series for every polled table (with no tag labels when the target exports none; held back only until a table's first tag read), so alerts can join on it.",
        kind: Kind::Gauge,
        reads: &[Part::Tags, Part::Outcome],
        samples: table_tags,
    },
    Family {
        name: "dynamodb_kinesis_table_tag_read_errors_total",
        help: "Failed tag reads (ListTagsOfResource) of the table by error code; the last known tags stay in use.",
        kind: Kind::Counter,
        reads: &[Part::Errors],
        samples: table_tag_read_errors,
    },
    Family {
        name: "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds",
        help: "CloudWatch AgeOfOldestUnreplicatedRecord (Maximum) of the latest datapoint: how far behind the table's change data is in reaching the stream. No series when CloudWatch had no datapoint, which is not zero.",
        kind: Kind::Gauge,
        reads: &[Part::Cdc],
        samples: cdc_age,
    },
    Family {
        name: "dynamodb_kinesis_cdc_failed_to_replicate_records",
        help: "CloudWatch FailedToReplicateRecordCount (Sum) of the latest datapoint's period: change records that could not be written to the stream.",
        kind: Kind::Gauge,
        reads: &[Part::Cdc],
        samples: cdc_failed,
    },
    Family {
        name: "dynamodb_kinesis_cdc_throttled_put_records",
        help: "CloudWatch ThrottledPutRecordCount (Sum) of the latest datapoint's period: change records the stream throttled.",
        kind: Kind::Gauge,
        reads: &[Part::Cdc],
        samples: cdc_throttled,
    },
    Family {
        name: "dynamodb_kinesis_cdc_consumed_units",
        help: "CloudWatch ConsumedChangeDataCaptureUnits (Sum) of the latest datapoint's period.",
        kind: Kind::Gauge,
        reads: &[Part::Cdc],
        samples: cdc_consumed,
    },
    Family {
        name: "dynamodb_kinesis_cdc_datapoint_timestamp_seconds",
        help: "Unix time of the latest CloudWatch datapoint of each CDC metric (metric label: the CloudWatch name).",
        kind: Kind::Gauge,
        reads: &[Part::Cdc],
        samples: cdc_timestamps,
    },
];

/// The CloudWatch CDC metrics, with the statistic read and the factor
/// that turns the value into the exported unit.
pub const CDC_METRICS: [(&str, &str, f64); 4] = [
    ("AgeOfOldestUnreplicatedRecord", "Maximum", 0.001),
    ("FailedToReplicateRecordCount", "Sum", 1.0),
    ("ThrottledPutRecordCount", "Sum", 1.0),
    ("ConsumedChangeDataCaptureUnits", "Sum", 1.0),
];

/// One CDC metric's latest value per delegated operation, in the
/// exported unit.
fn cdc_values(t: &TableState, s: &mut Samples<'_>, index: usize) {
    let (metric, _, factor) = CDC_METRICS[index];
    for (operation, metrics) in &t.cdc {
        if let Some((value, _)) = metrics.get(metric) {
            s.push(&[("delegated_operation", operation)], value * factor);
        }
    }
}

fn cdc_age(t: &TableState, s: &mut Samples<'_>) {
    cdc_values(t, s, 0);
}

fn cdc_failed(t: &TableState, s: &mut Samples<'_>) {
    cdc_values(t, s, 1);
}

fn cdc_throttled(t: &TableState, s: &mut Samples<'_>) {
    cdc_values(t, s, 2);
}

fn cdc_consumed(t: &TableState, s: &mut Samples<'_>) {
    cdc_values(t, s, 3);
}

fn cdc_timestamps(t: &TableState, s: &mut Samples<'_>) {
    for (operation, metrics) in &t.cdc {
        for (metric, (_, at)) in metrics {
            s.push(
                &[("delegated_operation", operation), ("metric", metric)],
                *at,
            );
        }
    }
}

/// Per-stream families, in exposition order; identity labels
/// `account_id`, `region`, `stream_arn`.
pub const STREAM_FAMILIES: [Family<StreamState>; 6] = [
    Family {
        name: "dynamodb_kinesis_stream_status",
        help: "Status of the Kinesis stream behind an ACTIVE, ENABLING or UPDATING destination, from DescribeStreamSummary: one series per status (NOT_FOUND when the stream is gone), 1 for the current one.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: stream_status,
    },
    Family {
        name: "dynamodb_kinesis_stream_open_shards",
        help: "Open shards of the stream.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: stream_open_shards,
    },
    Family {
        name: "dynamodb_kinesis_stream_info",
        help: "Descriptive labels of the stream from the last DescribeStreamSummary; always 1.",
        kind: Kind::Gauge,
        reads: &[Part::Listing],
        samples: stream_info,
    },
    Family {
        name: "dynamodb_kinesis_stream_poll_success",
        help: "Whether the last check of the stream succeeded (1; a stream found missing is a successful check) or failed (0).",
        kind: Kind::Gauge,
        reads: &[Part::Outcome],
        samples: stream_poll_success,
    },
    Family {
        name: "dynamodb_kinesis_stream_last_success_timestamp_seconds",
        help: "Unix time of the last successful check of the stream.",
        kind: Kind::Gauge,
        reads: &[Part::LastSuccess],
        samples: stream_last_success,
    },
    Family {
        name: "dynamodb_kinesis_stream_api_errors_total",
        help: "Failed stream checks by AWS error code (AccessDeniedException: the kinesis:DescribeStreamSummary permission is missing; never read as a missing stream), or timeout, dispatch, credentials, response.",
        kind: Kind::Counter,
        reads: &[Part::Errors],
        samples: stream_errors,
    },
];

fn stream_status(st: &StreamState, s: &mut Samples<'_>) {
    let Some(current) = &st.status else {
        return;
    };
    for known in KNOWN_STREAM_STATUSES {
        s.push(
            &[("status", known)],
            if current == known { 1.0 } else { 0.0 },
        );
    }
    if !KNOWN_STREAM_STATUSES.contains(&current.as_str()) {
        s.push(&[("status", current)], 1.0);
    }
}

fn stream_open_shards(st: &StreamState, s: &mut Samples<'_>) {
    if let Some(summary) = &st.summary {
        s.push(&[], summary.open_shards as f64);
    }
}

fn stream_info(st: &StreamState, s: &mut Samples<'_>) {
    if let Some(summary) = &st.summary {
        s.push(
            &[
                ("stream_name", &summary.name),
                ("stream_mode", &summary.mode),
                ("encryption_type", &summary.encryption),
                (
                    "retention_period_hours",
                    &summary.retention_hours.to_string(),
                ),
            ],
            1.0,
        );
    }
}

fn stream_poll_success(st: &StreamState, s: &mut Samples<'_>) {
    if let Some(ok) = st.last_poll_ok {
        s.push(&[], if ok { 1.0 } else { 0.0 });
    }
}

fn stream_last_success(st: &StreamState, s: &mut Samples<'_>) {
    if let Some(at) = st.last_success {
        s.push(&[], at);
    }
}

fn stream_errors(st: &StreamState, s: &mut Samples<'_>) {
    for (code, count) in &st.errors {
        s.push(&[("code", code)], *count as f64);
    }
}

fn destination_status(t: &TableState, s: &mut Samples<'_>) {
    for d in &t.destinations {
        for known in KNOWN_STATUSES {
            let value = if d.status == known { 1.0 } else { 0.0 };
            s.push(&[("stream_arn", &d.stream_arn), ("status", known)], value);
        }
        if !KNOWN_STATUSES.contains(&d.status.as_str()) {
            s.push(&[("stream_arn", &d.stream_arn), ("status", &d.status)], 1.0);
        }
    }
}

fn destination_info(t: &TableState, s: &mut Samples<'_>) {
    for d in &t.destinations {
        let (stream_account_id, stream_name) = split_stream_arn(&d.stream_arn);
        s.push(
            &[
                ("stream_arn", &d.stream_arn),
                ("stream_name", stream_name),
                ("stream_account_id", stream_account_id),
                ("status_description", d.description.as_deref().unwrap_or("")),
                (
                    "creation_date_time_precision",
                    d.precision.as_deref().unwrap_or(""),
                ),
            ],
            1.0,
        );
    }
}

fn status_change_timestamp(t: &TableState, s: &mut Samples<'_>) {
    for d in &t.destinations {
        s.push(&[("stream_arn", &d.stream_arn)], d.since);
    }
}

fn table_destinations(t: &TableState, s: &mut Samples<'_>) {
    if let Some(count) = t.destination_count {
        s.push(&[], count as f64);
    }
}

fn table_poll_success(t: &TableState, s: &mut Samples<'_>) {
    if let Some(ok) = t.last_poll_ok {
        s.push(&[], if ok { 1.0 } else { 0.0 });
    }
}

fn table_last_success(t: &TableState, s: &mut Samples<'_>) {
    if let Some(at) = t.last_success {
        s.push(&[], at);
    }
}

fn api_errors(t: &TableState, s: &mut Samples<'_>) {
    for (code, count) in &t.errors {
        s.push(&[("code", code)], *count as f64);
    }
}

fn table_destination_expected(t: &TableState, s: &mut Samples<'_>) {
    if let Some(expected) = t.expected {
        s.push(&[], if expected { 1.0 } else { 0.0 });
    }
}

fn table_stream_match(t: &TableState, s: &mut Samples<'_>) {
    if let Some(matched) = t.stream_match {
        s.push(&[], if matched { 1.0 } else { 0.0 });
    }
}

/// Label names differ from target to target: each sample names its own.
/// Only for polled tables, as the other per-table families.
fn table_tags(t: &TableState, s: &mut Samples<'_>) {
    if let (Some(tags), Some(_)) = (&t.tags, t.last_poll_ok) {
        let labels: Vec<(&str, &str)> = tags.iter().map(|(k, v)| (&**k, v.as_str())).collect();
        s.push(&labels, 1.0);
    }
}

fn table_tag_read_errors(t: &TableState, s: &mut Samples<'_>) {
    for (code, count) in &t.tag_errors {
        s.push(&[("code", code)], *count as f64);
    }
}

/// Per-scope families, in exposition order; identity labels `account_id`,
/// `region`.
pub const SCOPE_FAMILIES: [Family<ScopeState>; 10] = [
    Family {
        name: "dynamodb_kinesis_scope_tables",
        help: "Tables this exporter polls in the (account, region) scope.",
        kind: Kind::Gauge,
        reads: &Part::ALL,
        samples: scope_tables,
    },
    Family {
        name: "dynamodb_kinesis_scope_effective_poll_interval_seconds",
        help: "Average time between two polls of one table in the scope; above the configured poll_interval when the request budget cannot keep up.",
        kind: Kind::Gauge,
        reads: &Part::ALL,
        samples: scope_effective_interval,
    },
    Family {
        name: "dynamodb_kinesis_scope_request_rate_limit",
        help: "Current adaptive request budget of the scope per service, requests per second: max_requests_per_second (dynamodb), kinesis_max_requests_per_second, cloudwatch_max_requests_per_second, halved on each throttling answer and recovering linearly.",
        kind: Kind::Gauge,
        reads: &Part::ALL,
        samples: scope_rate_limit,
    },
    Family {
        name: "dynamodb_kinesis_scope_throttled_total",
        help: "Throttling answers AWS gave to calls in the scope, by service.",
        kind: Kind::Counter,
        reads: &Part::ALL,
        samples: scope_throttled,
    },
    Family {
        name: "dynamodb_kinesis_aws_requests_total",
        help: "Requests sent to AWS in the scope by service and operation (the AWS operation name): every attempt, retries included.",
        kind: Kind::Counter,
        reads: &Part::ALL,
        samples: aws_requests,
    },
    Family {
        name: "dynamodb_kinesis_cloudwatch_metrics_requested_total",
        help: "Metrics requested from CloudWatch GetMetricData in the scope (the MetricDataQueries of every call and page): what AWS bills, per 1,000 metrics.",
        kind: Kind::Counter,
        reads: &Part::ALL,
        samples: cloudwatch_metrics_requested,
    },
    Family {
        name: "dynamodb_kinesis_discovery_tables",
        help: "Tables of this replica's shard that matched the discovery filters at the last successful refresh.",
        kind: Kind::Gauge,
        reads: &Part::ALL,
        samples: discovery_tables,
    },
    Family {
        name: "dynamodb_kinesis_discovery_last_success_timestamp_seconds",
        help: "Unix time of the last successful table discovery refresh.",
        kind: Kind::Gauge,
        reads: &Part::ALL,
        samples: discovery_last_success,
    },
    Family {
        name: "dynamodb_kinesis_discovery_errors_total",
        help: "Failed discovery calls by error code: refreshes whose ListTables failed (the last known table list stays in use) and single tables whose tags could not be read (each keeps its last decision).",
        kind: Kind::Counter,
        reads: &Part::ALL,
        samples: discovery_errors,
    },
    Family {
        name: "dynamodb_kinesis_cdc_errors_total",
        help: "Failed CloudWatch calls (ListMetrics, GetMetricData) of the CDC metrics by error code; while they fail the cdc gauges keep their last values and their timestamps age.",
        kind: Kind::Counter,
        reads: &Part::ALL,
        samples: cdc_errors,
    },
];

fn cdc_errors(s: &ScopeState, out: &mut Samples<'_>) {
    for (code, count) in &s.cdc_errors {
        out.push(&[("code", code)], *count as f64);
    }
}

fn scope_tables(s: &ScopeState, out: &mut Samples<'_>) {
    out.push(&[], s.tables as f64);
}

fn scope_effective_interval(s: &ScopeState, out: &mut Samples<'_>) {
    out.push(&[], s.effective_interval.unwrap_or(s.poll_interval));
}

fn scope_rate_limit(s: &ScopeState, out: &mut Samples<'_>) {
    for (service, budget) in &s.budgets {
        out.push(&[("service", service.as_str())], budget.rate_limit);
    }
}

fn scope_throttled(s: &ScopeState, out: &mut Samples<'_>) {
    for (service, budget) in &s.budgets {
        out.push(&[("service", service.as_str())], budget.throttled as f64);
    }
}

fn aws_requests(s: &ScopeState, out: &mut Samples<'_>) {
    for (service, operations) in &s.requests {
        for (operation, count) in operations {
            out.push(
                &[("service", service.as_str()), ("operation", operation)],
                *count as f64,
            );
        }
    }
}

fn cloudwatch_metrics_requested(s: &ScopeState, out: &mut Samples<'_>) {
    out.push(&[], s.metrics_requested as f64);
}

fn discovery_tables(s: &ScopeState, out: &mut Samples<'_>) {
    if let Some(count) = s.discovery.as_ref().and_then(|d| d.tables) {
        out.push(&[], count as f64);
    }
}

fn discovery_last_success(s: &ScopeState, out: &mut Samples<'_>) {
    if let Some(at) = s.discovery.as_ref().and_then(|d| d.last_success) {
        out.push(&[], at);
    }
}

fn discovery_errors(s: &ScopeState, out: &mut Samples<'_>) {
    for (code, count) in s.discovery.iter().flat_map(|d| &d.errors) {
        out.push(&[("code", code)], *count as f64);
    }
}

/// Writes sample lines of one family for one table, with the table's
/// identity labels first.
pub struct Samples<'a> {
    out: &'a mut String,
    name: &'static str,
    identity: &'a str,
}

impl Samples<'_> {
    /// Append `name{identity,extra...} value`.
    pub fn push(&mut self, extra: &[(&str, &str)], value: f64) {
        self.out.push_str(self.name);
        self.out.push('{');
        self.out.push_str(self.identity);
        for (label, val) in extra {
            self.out.push(',');
            self.out.push_str(label);
            self.out.push_str("=\"");
            escape_label_value(self.out, val);
            self.out.push('"');
        }
        self.out.push_str("} ");
        write_value(self.out, value);
        self.out.push('\n');
    }
}

/// Identity labels: `name="value"` pairs joined by commas.
fn identity_labels(out: &mut String, pairs: &[(&str, &str)]) {
    for (i, (name, value)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(name);
        out.push_str("=\"");
        escape_label_value(out, value);
        out.push('"');
    }
}

/// Text-format label value escaping: backslash, double quote, newline.
fn escape_label_value(out: &mut String, value: &str) {
    // Most values (names, regions, ARNs) need no escaping at all.
    if !value.contains(['\\', '"', '\n']) {
        out.push_str(value);
        return;
    }
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// Rewrite the text of a chunk of a success-time family (see
/// [`Subject::SUCCESS_TIME_FAMILY`]) for new times, without the entries:
/// `old` holds a line per entry that had a time, entry `j`'s ending at
/// `ends[j]` (where the previous one ends: no line) and showing
/// `old_times[j]`. Appends the new text to `out` and each entry's end in
/// it to `new_ends`; the lines whose time did not change are copied, in
/// runs. Returns false, with part of it written, when an entry that had no
/// line now has a time (its labels are not in `old`), or the ends do not
/// fit the text: that chunk must be rendered from the entries.
pub fn rewrite_success_times(
    old: &str,
    ends: &[u32],
    old_times: &[Option<f64>],
    times: &[Option<f64>],
    out: &mut String,
    new_ends: &mut Vec<u32>,
) -> bool {
    if ends.len() != times.len() || old_times.len() != times.len() {
        return false;
    }
    let base = out.len();
    // The old lines not copied yet: from `copied` to `from`.
    let (mut copied, mut from) = (0, 0);
    for ((&end, old_time), time) in ends.iter().zip(old_times).zip(times) {
        let end = end as usize;
        let Some(line) = old.get(from..end) else {
            return false;
        };
        // The same bits: a NaN is the same NaN.
        if old_time.map(f64::to_bits) != time.map(f64::to_bits) {
            out.push_str(&old[copied..from]);
            match (line.rfind(' '), time) {
                (Some(space), Some(time)) => {
                    out.push_str(&line[..=space]);
                    write_value(out, *time);
                    out.push('\n');
                }
                (None, Some(_)) => return false,
                (_, None) => {}
            }
            copied = end;
        }
        from = end;
        let Ok(end) = u32::try_from(out.len() - base + (from - copied)) else {
            return false;
        };
        new_ends.push(end);
    }
    out.push_str(&old[copied..from]);
    true
}

fn write_value(out: &mut String, value: f64) {
    if value.is_nan() {
        out.push_str("NaN");
    } else if value.is_infinite() {
        out.push_str(if value > 0.0 { "+Inf" } else { "-Inf" });
    } else {
        // What `Display` prints (the shortest representation that reads
        // back exactly, integral values without a fraction, never an
        // exponent), in a fifth of the time: Ryū gives the same digits,
        // and is used where it writes no exponent.
        let mut buffer = ryu::Buffer::new();
        let digits = buffer.format_finite(value);
        if digits.contains('e') {
            let _ = write!(out, "{value}");
        } else {
            out.push_str(digits.strip_suffix(".0").unwrap_or(digits));
        }
    }
}

/// The page's forms, as [`Telemetry::record_page_build`] labels them.
pub const PAGE_FORMS: [&str; 2] = ["text", "gzip"];

/// Process-wide metrics kept in a `prometheus` registry.
pub struct Telemetry {
    registry: Registry,
    poll_duration: HistogramVec,
    shard_tables: GaugeVec,
    reload_successful: Gauge,
    reload_success_time: Gauge,
    task_restarts: IntCounterVec,
    web_reload_successful: Gauge,
    page_builds: IntCounterVec,
    page_build_cpu: CounterVec,
}

impl Telemetry {
    /// Register the process-wide families. `process` adds the standard
    /// `process_*` collector (Linux only).
    pub fn new(process: bool) -> Self {
        let registry = Registry::new();
        let poll_duration = HistogramVec::new(
            HistogramOpts::new(
                "dynamodb_kinesis_poll_duration_seconds",
                "Wall time of one background poll of a table, SDK retries included.",
            ),
            &["account_id", "region"],
        )
        .expect("static histogram options are valid");
        let build_info = GaugeVec::new(
            Opts::new(
                "dynamodb_kinesis_exporter_build_info",
                "Build information of the running exporter; always 1.",
            ),
            &["version", "revision", "rustc_version"],
        )
        .expect("static gauge options are valid");
        build_info
            .with_label_values(&[crate::VERSION, crate::REVISION, crate::RUSTC_VERSION])
            .set(1.0);
        registry
            .register(Box::new(poll_duration.clone()))
            .expect("first registration of poll_duration");
        registry
            .register(Box::new(build_info))
            .expect("first registration of build_info");
        let reload_successful = Gauge::new(
            "dynamodb_kinesis_exporter_config_last_reload_successful",
            "Whether the last configuration reload (SIGHUP) succeeded; 1 at start.",
        )
        .expect("static gauge options are valid");
        let reload_success_time = Gauge::new(
            "dynamodb_kinesis_exporter_config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful configuration load (start or reload).",
        )
        .expect("static gauge options are valid");
        let shard_tables = GaugeVec::new(
            Opts::new(
                "dynamodb_kinesis_exporter_shard_tables",
                "Tables this replica polls: its share of the tables under --shard N --total-shards M (all of them without sharding).",
            ),
            &["shard", "total_shards"],
        )
        .expect("static gauge options are valid");
        registry
            .register(Box::new(shard_tables.clone()))
            .expect("first registration of shard_tables");
        let task_restarts = IntCounterVec::new(
            Opts::new(
                "dynamodb_kinesis_exporter_task_restarts_total",
                "Background tasks that ended in a panic and were restarted after a backoff, by task: scope (a scope's poll loop), poll (one table poll or stream check), discovery, cdc, account, page_janitor, web_config_watcher.",
            ),
            &["task"],
        )
        .expect("static counter options are valid");
        registry
            .register(Box::new(task_restarts.clone()))
            .expect("first registration of task_restarts");
        let web_reload_successful = Gauge::new(
            "dynamodb_kinesis_exporter_web_config_last_reload_successful",
            "Whether the last reload of the web config file (--web.config.file) was applied; 0 while a changed file is invalid or would turn off TLS or authentication. 1 at start.",
        )
        .expect("static gauge options are valid");
        let page_builds = IntCounterVec::new(
            Opts::new(
                "dynamodb_kinesis_exporter_page_builds_total",
                "Rebuilds of the metrics page, by form: text (the plain page) or gzip (what changed, rendered and compressed). At most one a second each, on a scrape that finds the page changed.",
            ),
            &["form"],
        )
        .expect("static counter options are valid");
        let page_build_cpu = CounterVec::new(
            Opts::new(
                "dynamodb_kinesis_exporter_page_build_cpu_seconds_total",
                "CPU time the rebuilds of the metrics page took, by form (see dynamodb_kinesis_exporter_page_builds_total): the cost of the scrapes beyond sending the bytes. Linux only.",
            ),
            &["form"],
        )
        .expect("static counter options are valid");
        for form in PAGE_FORMS {
            page_builds.with_label_values(&[form]);
            page_build_cpu.with_label_values(&[form]);
        }
        registry
            .register(Box::new(page_builds.clone()))
            .expect("first registration of page_builds");
        registry
            .register(Box::new(page_build_cpu.clone()))
            .expect("first registration of page_build_cpu");
        reload_successful.set(1.0);
        reload_success_time.set(unix_now());
        web_reload_successful.set(1.0);
        for gauge in [
            &reload_successful,
            &reload_success_time,
            &web_reload_successful,
        ] {
            registry
                .register(Box::new(gauge.clone()))
                .expect("first registration of the reload gauges");
        }
        #[cfg(target_os = "linux")]
        if process {
            let collector = prometheus::process_collector::ProcessCollector::for_self();
            if let Err(err) = registry.register(Box::new(collector)) {
                tracing::warn!(error = %err, "process metrics unavailable");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = process;
        Telemetry {
            registry,
            poll_duration,
            shard_tables,
            reload_successful,
            reload_success_time,
            task_restarts,
            web_reload_successful,
            page_builds,
            page_build_cpu,
        }
    }

    /// Count one rebuild of the page's `form` (one of [`PAGE_FORMS`]) and
    /// the CPU time it took, if known.
    pub fn record_page_build(&self, form: &str, cpu: Option<Duration>) {
        self.page_builds.with_label_values(&[form]).inc();
        if let Some(cpu) = cpu {
            self.page_build_cpu
                .with_label_values(&[form])
                .inc_by(cpu.as_secs_f64());
        }
    }

    /// Rebuilds of the page's `form` so far, and their CPU seconds.
    pub fn page_builds(&self, form: &str) -> (u64, f64) {
        (
            self.page_builds.with_label_values(&[form]).get(),
            self.page_build_cpu.with_label_values(&[form]).get(),
        )
    }

    /// Show `task`'s restart counter (at 0 until its first restart), so an
    /// alert on its increase sees the first one.
    pub fn supervise_task(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]);
    }

    /// Count one restart of `task` after a panic.
    pub fn record_task_restart(&self, task: &str) {
        self.task_restarts.with_label_values(&[task]).inc();
    }

    /// Restarts of `task` so far.
    pub fn task_restarts(&self, task: &str) -> u64 {
        self.task_restarts.with_label_values(&[task]).get()
    }

    /// Record the outcome of a configuration reload.
    pub fn record_reload(&self, ok: bool) {
        self.reload_successful.set(if ok { 1.0 } else { 0.0 });
        if ok {
            self.reload_success_time.set(unix_now());
        }
    }

    /// Record the outcome of a web config reload.
    pub fn record_web_reload(&self, ok: bool) {
        self.web_reload_successful.set(if ok { 1.0 } else { 0.0 });
    }

    /// Record the wall time of one poll.
    pub fn observe_poll(&self, scope: &ScopeKey, seconds: f64) {
        self.poll_duration
            .with_label_values(&[&*scope.account_id, &*scope.region])
            .observe(seconds);
    }

    /// Drop the series of a scope no longer polled.
    pub fn remove_scope(&self, scope: &ScopeKey) {
        let _ = self
            .poll_duration
            .remove_label_values(&[&*scope.account_id, &*scope.region]);
    }

    /// Record how many tables this replica polls.
    pub fn set_shard_tables(&self, shard: u32, total_shards: u32, tables: usize) {
        self.shard_tables.reset();
        self.shard_tables
            .with_label_values(&[shard.to_string(), total_shards.to_string()])
            .set(tables as f64);
    }

    /// The registry's families in the text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        if let Err(err) = TextEncoder::new().encode_utf8(&self.registry.gather(), &mut out) {
            tracing::error!(error = %err, "cannot encode process metrics");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::store::SuccessTime;
    use crate::state::DestinationState;
    use std::collections::BTreeMap;

    /// `states` rendered in `S`'s success-time family, with each state's
    /// line end.
    fn success_lines<S: Subject>(states: &[S]) -> (String, Vec<u32>) {
        let family = &S::FAMILIES[S::SUCCESS_TIME_FAMILY.expect("declared")];
        let (mut out, mut ends, mut identity) = (String::new(), Vec::new(), String::new());
        for state in states {
            identity.clear();
            state.identity(&mut identity);
            family.render(state, &identity, &mut out);
            ends.push(out.len() as u32);
        }
        (out, ends)
    }

    /// For the declared family, rewriting the text of `old` with `new`'s
    /// times gives what rendering `new` gives, as long as no state gained
    /// a time; else the rewrite says it cannot.
    fn check_rewrite<S: Subject + SuccessTime>(old: &[S], new: &[S]) {
        let (old_text, old_ends) = success_lines(old);
        let (want, want_ends) = success_lines(new);
        let old_times: Vec<Option<f64>> = old.iter().map(|s| s.success_time()).collect();
        let times: Vec<Option<f64>> = new.iter().map(|s| s.success_time()).collect();
        let (mut out, mut ends) = (String::from("kept "), Vec::new());
        let gained = old
            .iter()
            .zip(new)
            .any(|(a, b)| a.success_time().is_none() && b.success_time().is_some());
        let done = rewrite_success_times(
            &old_text, &old_ends, &old_times, &times, &mut out, &mut ends,
        );
        assert_eq!(done, !gained);
        if done {
            assert_eq!(out, format!("kept {want}"));
            assert_eq!(ends, want_ends);
        }
    }

    #[test]
    fn success_time_families_are_the_success_time_alone_and_rewrite_exactly() {
        assert_eq!(
            TABLE_FAMILIES[TableState::SUCCESS_TIME_FAMILY.unwrap()].reads,
            [Part::LastSuccess]
        );
        assert_eq!(
            STREAM_FAMILIES[StreamState::SUCCESS_TIME_FAMILY.unwrap()].reads,
            [Part::LastSuccess]
        );
        let table = |name: &str, at: Option<f64>| {
            let mut state = sample_state();
            state.table = name.into();
            state.last_success = at;
            state
        };
        let old = [
            table("a", Some(1.5)),
            table("b \"quoted\" name", None),
            table("c", Some(1e21)),
            table("d", Some(2.0)),
        ];
        let (text, _) = success_lines(&old[..1]);
        assert_eq!(
            text,
            "dynamodb_kinesis_table_last_success_timestamp_seconds{table=\"a\",region=\"us-east-1\",account_id=\"123456789012\"} 1.5\n"
        );
        // Times moved, one went: rewritten exactly.
        let new = [
            table("a", Some(1_764_435_181.125)),
            table("b \"quoted\" name", None),
            table("c", Some(f64::NAN)),
            table("d", None),
        ];
        check_rewrite(&old, &new);
        // Some unchanged, copied as they were, between changed ones.
        let mixed = [
            table("a", Some(1.5)),
            table("b \"quoted\" name", None),
            table("c", Some(4.0)),
            table("d", Some(2.0)),
        ];
        check_rewrite(&old, &mixed);
        check_rewrite(&new, &new);
        check_rewrite(&old, &old);
        // One gained a time: its labels are not in the old text.
        let gained = [
            table("a", Some(3.0)),
            table("b \"quoted\" name", Some(3.0)),
            table("c", None),
            table("d", Some(3.0)),
        ];
        check_rewrite(&old, &gained);
        let stream = |arn: &str, at: Option<f64>| {
            let mut state = StreamState::new(&crate::state::StreamKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                stream_arn: arn.into(),
            });
            state.last_success = at;
            state
        };
        check_rewrite(
            &[stream("s1", Some(1.0)), stream("s2", Some(2.0))],
            &[stream("s1", Some(10.25)), stream("s2", None)],
        );
        // Ends that do not fit the text are refused, not a panic.
        let mut out = String::new();
        let one = [Some(1.0)];
        assert!(!rewrite_success_times(
            "x 1\n",
            &[9],
            &one,
            &[Some(2.0)],
            &mut out,
            &mut Vec::new()
        ));
        assert!(!rewrite_success_times(
            "x 1\n",
            &[4, 4],
            &one,
            &one,
            &mut out,
            &mut Vec::new()
        ));
    }

    fn sample_state() -> TableState {
        let mut errors = BTreeMap::new();
        errors.insert("ThrottlingException".to_string(), 3);
        TableState {
            table: "orders".into(),
            region: "us-east-1".into(),
            account_id: "123456789012".into(),
            last_poll_ok: Some(true),
            last_success: Some(1_764_435_181.5),
            destination_count: Some(2),
            destinations: vec![
                DestinationState {
                    stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc".into(),
                    status: "ENABLE_FAILED".into(),
                    description: Some("KMS key \"k\" is disabled\nsee docs".into()),
                    precision: Some("MILLISECOND".into()),
                    since: 1_764_435_100.0,
                },
                DestinationState {
                    stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/audit".into(),
                    status: "PAUSED".into(),
                    description: None,
                    precision: None,
                    since: 1_764_435_000.25,
                },
            ],
            errors,
            expected: Some(true),
            stream_match: Some(false),
            tags: Some(vec![
                ("tag_team".into(), "payments".into()),
                ("tag_cost_center".into(), String::new()),
            ]),
            tag_errors: BTreeMap::from([("AccessDeniedException".to_string(), 1)]),
            ..TableState::default()
        }
    }

    /// Every family's samples for one entry, in order.
    fn render_all<S: Subject>(state: &S) -> Vec<String> {
        let mut identity = String::new();
        state.identity(&mut identity);
        S::FAMILIES
            .iter()
            .map(|family| {
                let mut out = String::new();
                family.render(state, &identity, &mut out);
                out
            })
            .collect()
    }

    #[test]
    fn golden_table_fragments() {
        let text = render_all(&sample_state()).concat();
        let expected = include_str!("../../tests/fixtures/golden/table-fragments.txt");
        assert_eq!(
            text, expected,
            "the table families' output changed:\n{text}"
        );
    }

    /// Each family's text depends only on the parts of the state it says
    /// it reads (the page re-renders a family only when one of those
    /// changed): change one part at a time, as the store tells them apart,
    /// and no other family renders differently.
    #[test]
    fn each_family_reads_only_the_parts_it_declares() {
        type Change<S> = (Part, fn(&mut S));
        fn check<S: Subject + Clone>(base: &S, changes: &[Change<S>]) {
            let before = render_all(base);
            for (part, change) in changes {
                let mut changed = base.clone();
                change(&mut changed);
                let after = render_all(&changed);
                for (i, family) in S::FAMILIES.iter().enumerate() {
                    if !family.reads.contains(part) {
                        assert_eq!(before[i], after[i], "{} changed with {part:?}", family.name);
                    }
                }
                assert_ne!(before, after, "{part:?} changed nothing");
            }
        }
        let mut table = sample_state();
        table.cdc.insert(
            "PutItem".into(),
            [("AgeOfOldestUnreplicatedRecord".to_string(), (4.0, 10.0))].into(),
        );
        check::<TableState>(
            &table,
            &[
                (Part::Listing, |t| {
                    t.destinations[0].status = "ACTIVE".into()
                }),
                (Part::Listing, |t| t.destinations[1].since = 5.0),
                (Part::Listing, |t| t.destination_count = Some(7)),
                (Part::Outcome, |t| t.last_poll_ok = Some(false)),
                (Part::LastSuccess, |t| t.last_success = Some(1.0)),
                (Part::Errors, |t| {
                    t.errors.insert("AccessDeniedException".into(), 1);
                }),
                (Part::Expectation, |t| t.expected = Some(false)),
                (Part::Expectation, |t| t.stream_match = Some(true)),
                (Part::Tags, |t| t.tags = Some(Vec::new())),
                (Part::Outcome, |t| t.last_poll_ok = None),
                (Part::Errors, |t| {
                    t.tag_errors.insert("ThrottlingException".into(), 2);
                }),
                (Part::Cdc, |t| {
                    t.cdc.insert(
                        "PutItem".into(),
                        [("ThrottledPutRecordCount".to_string(), (1.0, 11.0))].into(),
                    );
                }),
            ],
        );
        let mut stream = StreamState::new(&crate::state::StreamKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
        });
        stream.record(
            &Ok(crate::aws::StreamSummary {
                name: "s".into(),
                status: "ACTIVE".into(),
                open_shards: 2,
                mode: "ON_DEMAND".into(),
                encryption: "NONE".into(),
                retention_hours: 24,
            }),
            5.0,
        );
        check::<StreamState>(
            &stream,
            &[
                (Part::Listing, |s| s.status = Some("DELETING".into())),
                (Part::Listing, |s| {
                    if let Some(summary) = &mut s.summary {
                        summary.open_shards = 4;
                    }
                }),
                (Part::Outcome, |s| s.last_poll_ok = Some(false)),
                (Part::LastSuccess, |s| s.last_success = Some(6.0)),
                (Part::Errors, |s| {
                    s.errors.insert("AccessDeniedException".into(), 1);
                }),
            ],
        );
    }

    #[test]
    fn stateset_has_every_known_status_and_one_current() {
        let mut state = sample_state();
        state.destinations.truncate(1);
        for status in KNOWN_STATUSES {
            state.destinations[0].status = status.into();
            let text = &render_all(&state)[0];
            let ones: Vec<&str> = text.lines().filter(|l| l.ends_with(" 1")).collect();
            assert_eq!(text.lines().count(), 6, "{text}");
            assert_eq!(ones.len(), 1, "{text}");
            assert!(ones[0].contains(&format!("status=\"{status}\"")), "{text}");
        }
    }

    #[test]
    fn fresh_table_renders_nothing() {
        let state = TableState {
            table: "t".into(),
            region: "r".into(),
            ..TableState::default()
        };
        assert!(render_all(&state).iter().all(String::is_empty));
    }

    #[test]
    fn label_values_are_escaped() {
        let mut out = String::new();
        escape_label_value(&mut out, "a\\b\"c\nd");
        assert_eq!(out, "a\\\\b\\\"c\\nd");
        let mut identity = String::new();
        identity_labels(&mut identity, &[("table", "t\"x"), ("region", "r")]);
        assert_eq!(identity, "table=\"t\\\"x\",region=\"r\"");
    }

    #[test]
    fn values_format_like_prometheus() {
        let cases = [
            (1.0, "1"),
            (0.0, "0"),
            (1_764_435_181.5, "1764435181.5"),
            (1_764_435_181.123_456_7, "1764435181.1234567"),
            (-0.0, "-0"),
            (1e16, "10000000000000000"),
            (1e-7, "0.0000001"),
            (2.5e-5, "0.000025"),
            (f64::NAN, "NaN"),
            (f64::INFINITY, "+Inf"),
            (f64::NEG_INFINITY, "-Inf"),
        ];
        for (value, text) in cases {
            let mut out = String::new();
            write_value(&mut out, value);
            assert_eq!(out, text);
        }
    }

    #[test]
    fn stream_arn_parts() {
        assert_eq!(
            split_stream_arn("arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc"),
            ("123456789012", "orders-cdc")
        );
        assert_eq!(split_stream_arn("garbage"), ("", ""));
        assert_eq!(
            split_stream_arn("arn:aws:kinesis:us-east-1:123456789012:other/x"),
            ("123456789012", "")
        );
    }

    proptest::proptest! {
        /// Every value prints as `Display` prints it.
        #[test]
        fn values_print_as_display_does(
            value in proptest::prop_oneof![
                proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
                0.0..2e9f64,
                proptest::strategy::Strategy::prop_map(-1e6..1e6f64, f64::round),
            ],
        ) {
            let mut out = String::new();
            write_value(&mut out, value);
            proptest::prop_assert_eq!(out, format!("{value}"));
        }
    }

    /// Tables of different targets export different tags: each sample
    /// names its own labels (the page writes the family's header once).
    #[test]
    fn tag_labels_vary_from_table_to_table() {
        let mut a = sample_state();
        a.tags = Some(vec![("tag_team".into(), "payments".into())]);
        let mut b = sample_state();
        b.table = "scratch".into();
        b.tags = Some(Vec::new());
        let mut c = sample_state();
        c.table = "unread".into();
        c.tags = None;
        c.expected = None;
        c.stream_match = None;
        let family = |name: &str| -> Vec<String> {
            let at = TABLE_FAMILIES.iter().position(|f| f.name == name).unwrap();
            [&a, &b, &c]
                .iter()
                .flat_map(|t| {
                    render_all(*t)[at]
                        .lines()
                        .map(str::to_string)
                        .collect::<Vec<_>>()
                })
                .collect()
        };
        assert_eq!(
            family("dynamodb_kinesis_table_tags"),
            [
                "dynamodb_kinesis_table_tags{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\",tag_team=\"payments\"} 1",
                "dynamodb_kinesis_table_tags{table=\"scratch\",region=\"us-east-1\",account_id=\"123456789012\"} 1",
            ]
        );
        assert_eq!(
            family("dynamodb_kinesis_table_destination_expected"),
            [
                "dynamodb_kinesis_table_destination_expected{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 1",
                "dynamodb_kinesis_table_destination_expected{table=\"scratch\",region=\"us-east-1\",account_id=\"123456789012\"} 1",
            ]
        );
        assert_eq!(
            family("dynamodb_kinesis_table_destination_stream_match").len(),
            2
        );
        // A table not polled yet has no tags series, whatever it knows.
        let mut unpolled = a.clone();
        unpolled.last_poll_ok = None;
        let at = TABLE_FAMILIES
            .iter()
            .position(|f| f.name == "dynamodb_kinesis_table_tags")
            .unwrap();
        assert_eq!(render_all(&unpolled)[at], "");
    }

    #[test]
    fn scope_families_carry_service_and_operation() {
        let scope = ScopeKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
        };
        let mut state = ScopeState::new(&scope);
        let text = render_all(&state).concat();
        // Before anything was counted: only the metrics-requested counter,
        // at 0, so a rate over it sees the first GetMetricData.
        let counters: Vec<&str> = text.lines().collect();
        assert_eq!(
            counters,
            [
                "dynamodb_kinesis_scope_tables{account_id=\"123456789012\",region=\"us-east-1\"} 0",
                "dynamodb_kinesis_scope_effective_poll_interval_seconds{account_id=\"123456789012\",region=\"us-east-1\"} 0",
                "dynamodb_kinesis_cloudwatch_metrics_requested_total{account_id=\"123456789012\",region=\"us-east-1\"} 0",
            ]
        );
        state.set_budget(crate::state::Service::CloudWatch, 5.0, 3);
        state.count_request(crate::state::Service::Kinesis, "DescribeStreamSummary");
        state.count_metrics_requested(8);
        let text = render_all(&state).concat();
        for line in [
            "dynamodb_kinesis_scope_request_rate_limit{account_id=\"123456789012\",region=\"us-east-1\",service=\"cloudwatch\"} 5\n",
            "dynamodb_kinesis_scope_throttled_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"cloudwatch\"} 3\n",
            "dynamodb_kinesis_aws_requests_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"kinesis\",operation=\"DescribeStreamSummary\"} 1\n",
            "dynamodb_kinesis_cloudwatch_metrics_requested_total{account_id=\"123456789012\",region=\"us-east-1\"} 8\n",
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }

    /// Undo text-format label escaping (the test's own reader).
    fn unescape(escaped: &str) -> String {
        let mut out = String::new();
        let mut chars = escaped.chars();
        while let Some(c) = chars.next() {
            if c == '\\' {
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some(other) => out.push(other),
                    None => out.push('\\'),
                }
            } else {
                out.push(c);
            }
        }
        out
    }

    proptest::proptest! {
        /// Whatever AWS puts in a description or ARN, each sample stays on
        /// one line, its quotes balance, and the value reads back intact.
        #[test]
        fn any_label_value_renders_as_one_parseable_line(value in "(?s).*") {
            let mut out = String::new();
            escape_label_value(&mut out, &value);
            proptest::prop_assert!(!out.contains('\n'));
            let unescaped_quotes = out
                .char_indices()
                .filter(|(i, c)| *c == '"' && out[..*i].chars().rev().take_while(|b| *b == '\\').count() % 2 == 0)
                .count();
            proptest::prop_assert_eq!(unescaped_quotes, 0);
            proptest::prop_assert_eq!(unescape(&out), value.clone());

            let mut state = sample_state();
            state.destinations[0].description = Some(value);
            let text = render_all(&state).concat();
            for line in text.lines() {
                proptest::prop_assert!(line.starts_with("dynamodb_kinesis_"), "{}", line);
                let (_, value) = line.rsplit_once("} ").expect("labels then value");
                proptest::prop_assert!(value.parse::<f64>().is_ok(), "{}", line);
            }
            proptest::prop_assert_eq!(text.lines().count(), 25);
        }
    }
}
