//! The simulator's scenario: which (account, region) scopes exist, which
//! tables each holds, their tags and Kinesis streaming destinations, how
//! statuses move over time (and how long an Enable's or a Disable's
//! transition takes), which faults and latency a table injects, and
//! which IAM roles STS lets callers assume. Owns the YAML format (read with
//! `dke_yaml`, the project's one YAML reader: every problem at once, each
//! with its line and field, unknown keys refused), its validation (the same
//! rules for scenarios built in code), and the pure timeline evaluation the
//! service modules call on every request.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dke_yaml::{describe, Checker, Field, Map, Problem, Value};

/// Account used for table ARNs when a scenario does not name one.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";
/// Region used when a scenario does not name one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// How many tags one `ListTagsOfResource` page holds unless a scenario says
/// otherwise: small, so that every client's paging is exercised.
pub const DEFAULT_TAGS_PAGE_SIZE: usize = 2;

/// Everything the simulated endpoint knows about.
///
/// `account_id`, `region` and `tables` form the default scope: requests
/// signed with keys STS did not issue belong to `account_id`, and the
/// control methods without an `_in` suffix act on this scope.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Twelve-digit account id, used in table ARNs and error messages.
    pub account_id: String,
    /// Region of the default scope.
    pub region: String,
    pub tables: Vec<TableSpec>,
    /// Further (account, region) scopes. A request's region is the one its
    /// SigV4 credential scope names; its account is that of the role whose
    /// STS credentials signed it, else `account_id`.
    pub scopes: Vec<ScopeSpec>,
    /// Roles STS lets callers assume; `None` allows any well-formed role ARN.
    pub roles: Option<Vec<RoleSpec>>,
    /// Lifetime of credentials STS issues, overriding `DurationSeconds`
    /// (so tests can watch a refresh).
    pub credential_lifetime: Option<Duration>,
    /// Tags per `ListTagsOfResource` page.
    pub tags_page_size: usize,
    /// Kinesis streams; each lives in the scope its ARN names. A stream a
    /// destination names but no entry declares exists as
    /// [`StreamSpec::new`] describes it.
    pub streams: Vec<StreamSpec>,
    /// Listings whose pagination tokens go round in a cycle instead of
    /// ending (see [`Listing`]).
    pub repeating_tokens: BTreeSet<Listing>,
    /// How long the transitions that `EnableKinesisStreamingDestination` and
    /// `DisableKinesisStreamingDestination` start take.
    pub transitions: TransitionTimes,
}

/// How long a destination stays in the transitional status an Enable or a
/// Disable puts it in. AWS was measured at 2-7 s ENABLING and about 2 s
/// DISABLING; the defaults sit inside that, and tests shorten them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionTimes {
    /// ENABLING, before ACTIVE (or ENABLE_FAILED, for a stream that is not there).
    pub enabling: Duration,
    /// DISABLING, before DISABLED.
    pub disabling: Duration,
}

impl Default for TransitionTimes {
    fn default() -> Self {
        TransitionTimes {
            enabling: DEFAULT_ENABLING_TIME,
            disabling: DEFAULT_DISABLING_TIME,
        }
    }
}

/// ENABLING lasts this long after an Enable unless a scenario says otherwise.
pub const DEFAULT_ENABLING_TIME: Duration = Duration::from_secs(5);
/// DISABLING lasts this long after a Disable unless a scenario says otherwise.
pub const DEFAULT_DISABLING_TIME: Duration = Duration::from_secs(2);

/// A paginated operation. In [`Scenario::repeating_tokens`], the page that
/// would end the listing names a token instead: the one that starts after
/// the first item, or, when that one was just asked for, the one after the
/// second (`ListTables`: the first and second table names; the others
/// count items, "1" and "2"; `GetMetricData` answers every page alike). So
/// a walk goes round: ..., token A, token B, token A... A client that only
/// compares a token with the one before never ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Listing {
    ListTables,
    ListTagsOfResource,
    ListMetrics,
    GetMetricData,
}

impl Listing {
    /// Every listing, by the name a scenario gives it.
    pub const NAMES: [(&'static str, Listing); 4] = [
        ("ListTables", Listing::ListTables),
        ("ListTagsOfResource", Listing::ListTagsOfResource),
        ("ListMetrics", Listing::ListMetrics),
        ("GetMetricData", Listing::GetMetricData),
    ];
}

/// One Kinesis data stream, as `DescribeStreamSummary` reports it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamSpec {
    /// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME`.
    pub arn: String,
    /// `StreamStatus` steps (CREATING, ACTIVE, UPDATING, DELETING, or any
    /// string); descriptions are ignored.
    pub timeline: Vec<Step>,
    pub repeat: bool,
    pub open_shards: u32,
    /// `PROVISIONED` or `ON_DEMAND`.
    pub mode: String,
    /// `NONE` or `KMS`.
    pub encryption: String,
    /// Sent as `KeyId` when `encryption` is `KMS`.
    pub key_id: Option<String>,
    pub retention_hours: u32,
    pub consumer_count: u32,
    pub fault: Option<Fault>,
}

/// The CloudWatch metrics DynamoDB publishes for a table's Kinesis
/// streaming, as timelines of values.
#[derive(Debug, Clone, PartialEq)]
pub struct CdcMetricsSpec {
    /// The `DelegatedOperation` dimension value.
    pub delegated_operation: String,
    /// Timelines by metric name; an empty map lists every name in
    /// [`CDC_METRIC_NAMES`] with no data.
    pub series: BTreeMap<String, Vec<MetricStep>>,
    /// Loop every timeline instead of holding its last step.
    pub repeat: bool,
    /// The timelines started this long before the table was installed, so
    /// a fresh simulator already has history to query.
    pub started_ago: Duration,
}

/// One step of a metric timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct MetricStep {
    /// `None`: no datapoint while this step lasts.
    pub value: Option<f64>,
    /// `None` holds for good (last step only).
    pub duration: Option<Duration>,
}

/// The Kinesis streaming metrics of `AWS/DynamoDB` the simulator knows.
pub const CDC_METRIC_NAMES: [&str; 4] = [
    "AgeOfOldestUnreplicatedRecord",
    "ConsumedChangeDataCaptureUnits",
    "FailedToReplicateRecordCount",
    "ThrottledPutRecordCount",
];

/// `DelegatedOperation` when a scenario names none.
pub const DEFAULT_DELEGATED_OPERATION: &str = "PutRecords";

/// One (account, region) scope besides the default one.
#[derive(Debug, Clone, PartialEq)]
pub struct ScopeSpec {
    pub account_id: String,
    pub region: String,
    pub tables: Vec<TableSpec>,
    /// Streams declared with this scope; their ARNs may name any scope.
    pub streams: Vec<StreamSpec>,
}

/// An IAM role STS lets callers assume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSpec {
    /// `arn:aws:iam::ACCOUNT:role/NAME`; credentials issued for it act in ACCOUNT.
    pub arn: String,
    /// When set, `AssumeRole` must pass exactly this `ExternalId`.
    pub external_id: Option<String>,
}

/// One table and what requests naming it get back.
#[derive(Debug, Clone, PartialEq)]
pub struct TableSpec {
    pub name: String,
    pub destinations: Vec<DestinationSpec>,
    /// Replaces the normal answer for requests naming this table.
    pub fault: Option<Fault>,
    /// Added before answering (or before applying the fault).
    pub latency: Option<Duration>,
    /// Resource tags in order, as `ListTagsOfResource` pages them.
    pub tags: Vec<(String, String)>,
    /// Replaces the answer of `ListTagsOfResource` only (the table is
    /// still listed and described): `not_found` is a table deleted between
    /// `ListTables` and the tag read, `access_denied` a policy without
    /// `dynamodb:ListTagsOfResource` on the table.
    pub tag_fault: Option<Fault>,
    /// CloudWatch metrics of the table's Kinesis streaming, if published.
    pub cdc_metrics: Option<CdcMetricsSpec>,
}

/// One Kinesis streaming destination of a table.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationSpec {
    pub stream_arn: String,
    /// `ApproximateCreationDateTimePrecision`; omitted from answers when `None`.
    pub precision: Option<String>,
    /// Status steps in order; a fixed status is a one-step timeline.
    pub timeline: Vec<Step>,
    /// Loop the timeline instead of holding its last step.
    pub repeat: bool,
}

/// One step of a destination's status timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// Any string, so tests can return values newer than the SDK knows.
    pub status: String,
    /// `DestinationStatusDescription`; omitted from answers when `None`.
    pub description: Option<String>,
    /// How long the step lasts; `None` holds it for good (last step only).
    pub duration: Option<Duration>,
}

/// A failure a table injects instead of its normal answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// 400 `ThrottlingException`.
    Throttle,
    /// 500 `InternalServerError`.
    InternalError,
    /// Never answer, until the client gives up or the simulator stops.
    Hang,
    /// Close the connection without an answer.
    Reset,
    /// 200 with a body that is not valid JSON.
    Malformed,
    /// 400 `ResourceNotFoundException`, as if the table did not exist.
    NotFound,
    /// 400 `AccessDeniedException`.
    AccessDenied,
    /// 400 with [`UNKNOWN_ERROR_CODE`], a code no client knows.
    UnknownCode,
}

impl Fault {
    /// Every fault, by the name a scenario gives it.
    pub const NAMES: [(&'static str, Fault); 8] = [
        ("throttle", Fault::Throttle),
        ("internal_error", Fault::InternalError),
        ("hang", Fault::Hang),
        ("reset", Fault::Reset),
        ("malformed", Fault::Malformed),
        ("not_found", Fault::NotFound),
        ("access_denied", Fault::AccessDenied),
        ("unknown_code", Fault::UnknownCode),
    ];
}

/// The error code of [`Fault::UnknownCode`]: one AWS has never sent.
pub const UNKNOWN_ERROR_CODE: &str = "SimulatedUnknownException";

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Every problem found, never none: read from YAML, each with its line (and the file, when
    /// loaded from one) and in the order of the text; for a scenario built in code, without.
    #[error("invalid scenario: {}", problem_lines(.0))]
    Invalid(Vec<Problem>),
}

/// Problems on one line: `file:line: field: message`, `line N: field: message` for text that
/// is no file, `field: message` for a scenario built in code.
fn problem_lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = (problems.iter())
        .map(|p| match (p.origin.is_empty(), p.line) {
            (false, _) => p.to_string(),
            (true, Some(line)) => format!("line {line}: {}: {}", p.path, p.message),
            (true, None) => format!("{}: {}", p.path, p.message),
        })
        .collect();
    lines.join("; ")
}

impl Default for Scenario {
    /// The default account and region with no tables.
    fn default() -> Self {
        Scenario {
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            region: DEFAULT_REGION.to_string(),
            tables: Vec::new(),
            scopes: Vec::new(),
            roles: None,
            credential_lifetime: None,
            tags_page_size: DEFAULT_TAGS_PAGE_SIZE,
            streams: Vec::new(),
            repeating_tokens: BTreeSet::new(),
            transitions: TransitionTimes::default(),
        }
    }
}

impl Scenario {
    /// Names of all tables, in scenario order.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Add a table to the default scope (builder style, for tests).
    pub fn with_table(mut self, table: TableSpec) -> Self {
        self.tables.push(table);
        self
    }

    /// Add a further scope (builder style, for tests).
    pub fn with_scope(mut self, scope: ScopeSpec) -> Self {
        self.scopes.push(scope);
        self
    }

    /// Declare a stream (builder style).
    pub fn with_stream(mut self, stream: StreamSpec) -> Self {
        self.streams.push(stream);
        self
    }

    /// Make `listing`'s tokens go round (builder style; see [`Listing`]).
    pub fn with_repeating_token(mut self, listing: Listing) -> Self {
        self.repeating_tokens.insert(listing);
        self
    }

    /// Allow only the roles given so far and `role` (builder style).
    pub fn with_role(mut self, role: RoleSpec) -> Self {
        self.roles.get_or_insert_with(Vec::new).push(role);
        self
    }

    /// Apply the same rules as [`Scenario::from_yaml`] to a scenario built in code.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let problems = self.rule_problems();
        if problems.is_empty() {
            return Ok(());
        }
        let problems = (problems.iter())
            .map(|problem| {
                let (path, message) = problem.split_once(": ").unwrap_or(("", problem));
                Problem {
                    origin: String::new(),
                    line: None,
                    path: path.to_owned(),
                    message: message.to_owned(),
                }
            })
            .collect();
        Err(ScenarioError::Invalid(problems))
    }

    /// What breaks the rules, each as `field.path: message`.
    fn rule_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        check_account_and_region("", &self.account_id, &self.region, &mut problems);
        check_tables("", &self.tables, &mut problems);
        let mut seen: HashMap<(&str, &str), Option<usize>> = HashMap::new();
        seen.insert((&self.account_id, &self.region), None);
        for (i, scope) in self.scopes.iter().enumerate() {
            let at = format!("scopes[{i}]");
            check_account_and_region(
                &format!("{at}."),
                &scope.account_id,
                &scope.region,
                &mut problems,
            );
            match seen.get(&(scope.account_id.as_str(), scope.region.as_str())) {
                Some(first) => problems.push(format!(
                    "{at}: duplicate scope {}/{} (first at {})",
                    scope.account_id,
                    scope.region,
                    first.map_or("the top level".to_string(), |f| format!("scopes[{f}]"))
                )),
                None => {
                    seen.insert((&scope.account_id, &scope.region), Some(i));
                }
            }
            check_tables(&format!("{at}."), &scope.tables, &mut problems);
        }
        for (r, role) in self.roles.iter().flatten().enumerate() {
            if role_account(&role.arn).is_none() {
                problems.push(format!(
                    "roles[{r}].arn: {:?} is not a role ARN like \"arn:aws:iam::123456789012:role/NAME\"",
                    role.arn
                ));
            }
        }
        if self.credential_lifetime.is_some_and(|d| d.is_zero()) {
            problems.push("credential_lifetime: must be greater than zero".to_string());
        }
        let mut stream_seen: HashMap<&str, String> = HashMap::new();
        let declared = self
            .streams
            .iter()
            .enumerate()
            .map(|(i, s)| (format!("streams[{i}]"), s));
        let in_scopes = self.scopes.iter().enumerate().flat_map(|(c, scope)| {
            scope
                .streams
                .iter()
                .enumerate()
                .map(move |(i, s)| (format!("scopes[{c}].streams[{i}]"), s))
        });
        for (at, stream) in declared.chain(in_scopes) {
            check_stream(&at, stream, &mut problems);
            match stream_seen.get(stream.arn.as_str()) {
                Some(first) => problems.push(format!(
                    "{at}.arn: duplicate stream {:?} (first at {first})",
                    stream.arn
                )),
                None => {
                    stream_seen.insert(&stream.arn, at);
                }
            }
        }
        if self.tags_page_size == 0 {
            problems.push("tags_page_size: must be at least 1".to_string());
        }
        for (key, time) in [
            ("enabling", self.transitions.enabling),
            ("disabling", self.transitions.disabling),
        ] {
            if time.is_zero() {
                problems.push(format!("transitions.{key}: must be greater than zero"));
            }
        }
        problems
    }
}

impl TableSpec {
    /// A healthy table with no destinations.
    pub fn new(name: &str) -> Self {
        TableSpec {
            name: name.to_string(),
            destinations: Vec::new(),
            fault: None,
            latency: None,
            tags: Vec::new(),
            tag_fault: None,
            cdc_metrics: None,
        }
    }

    /// Fail `ListTagsOfResource` of this table only (see [`TableSpec::tag_fault`]).
    pub fn with_tag_fault(mut self, fault: Fault) -> Self {
        self.tag_fault = Some(fault);
        self
    }

    pub fn with_cdc_metrics(mut self, metrics: CdcMetricsSpec) -> Self {
        self.cdc_metrics = Some(metrics);
        self
    }

    /// Append a tag.
    pub fn with_tag(mut self, key: &str, value: &str) -> Self {
        self.tags.push((key.to_string(), value.to_string()));
        self
    }

    pub fn with_destination(mut self, destination: DestinationSpec) -> Self {
        self.destinations.push(destination);
        self
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    pub fn with_latency(mut self, latency: Duration) -> Self {
        self.latency = Some(latency);
        self
    }
}

impl DestinationSpec {
    /// A destination whose status never changes.
    pub fn fixed(stream_arn: &str, status: &str) -> Self {
        DestinationSpec::timeline(stream_arn, vec![Step::hold(status)])
    }

    /// A destination moving through `steps` (see [`DestinationSpec::step_at`]).
    pub fn timeline(stream_arn: &str, steps: Vec<Step>) -> Self {
        DestinationSpec {
            stream_arn: stream_arn.to_string(),
            precision: None,
            timeline: steps,
            repeat: false,
        }
    }

    /// Set the description on every step (meant for fixed destinations).
    pub fn with_description(mut self, description: &str) -> Self {
        for step in &mut self.timeline {
            step.description = Some(description.to_string());
        }
        self
    }

    pub fn with_precision(mut self, precision: &str) -> Self {
        self.precision = Some(precision.to_string());
        self
    }

    pub fn repeating(mut self) -> Self {
        self.repeat = true;
        self
    }

    /// The step in force `elapsed` after the timeline started.
    ///
    /// Steps run back to back; the last one holds, or with `repeat` the whole
    /// timeline starts over. A step without a duration holds for good even
    /// mid-timeline, so a hand-built timeline that breaks the validation
    /// rules still answers something. `None` only for an empty timeline.
    pub fn step_at(&self, elapsed: Duration) -> Option<&Step> {
        step_at(&self.timeline, self.repeat, elapsed, |s| s.duration)
    }
}

/// The step of `steps` in force `elapsed` after they started (see
/// [`DestinationSpec::step_at`]); shared by every kind of timeline.
fn step_at<T>(
    steps: &[T],
    repeat: bool,
    elapsed: Duration,
    duration: impl Fn(&T) -> Option<Duration>,
) -> Option<&T> {
    let last = steps.last()?;
    let mut left = elapsed;
    if repeat {
        if let Some(cycle) = cycle_length(steps, &duration) {
            let into_cycle = elapsed.as_nanos() % cycle.as_nanos();
            left = Duration::from_nanos(u64::try_from(into_cycle).unwrap_or(u64::MAX));
        }
    }
    for step in steps {
        match duration(step) {
            Some(length) if left >= length => left -= length,
            _ => return Some(step),
        }
    }
    Some(last)
}

impl StreamSpec {
    /// An ACTIVE provisioned stream with one open shard, no encryption,
    /// 24 hours' retention and no consumers: what a destination's stream is
    /// taken to be unless declared.
    pub fn new(arn: &str) -> Self {
        StreamSpec {
            arn: arn.to_string(),
            timeline: vec![Step::hold("ACTIVE")],
            repeat: false,
            open_shards: 1,
            mode: "PROVISIONED".to_string(),
            encryption: "NONE".to_string(),
            key_id: None,
            retention_hours: 24,
            consumer_count: 0,
            fault: None,
        }
    }

    /// The part of the ARN after `stream/`.
    pub fn name(&self) -> &str {
        self.arn
            .split_once(":stream/")
            .map_or(&self.arn, |(_, name)| name)
    }

    pub fn with_status(mut self, status: &str) -> Self {
        self.timeline = vec![Step::hold(status)];
        self
    }

    pub fn with_timeline(mut self, steps: Vec<Step>, repeat: bool) -> Self {
        self.timeline = steps;
        self.repeat = repeat;
        self
    }

    pub fn with_open_shards(mut self, shards: u32) -> Self {
        self.open_shards = shards;
        self
    }

    pub fn with_mode(mut self, mode: &str) -> Self {
        self.mode = mode.to_string();
        self
    }

    /// KMS encryption with `key_id`.
    pub fn with_kms(mut self, key_id: &str) -> Self {
        self.encryption = "KMS".to_string();
        self.key_id = Some(key_id.to_string());
        self
    }

    pub fn with_retention_hours(mut self, hours: u32) -> Self {
        self.retention_hours = hours;
        self
    }

    pub fn with_fault(mut self, fault: Fault) -> Self {
        self.fault = Some(fault);
        self
    }

    /// The status step in force `elapsed` after the stream was installed.
    pub fn step_at(&self, elapsed: Duration) -> Option<&Step> {
        step_at(&self.timeline, self.repeat, elapsed, |s| s.duration)
    }
}

impl CdcMetricsSpec {
    /// Metrics for `DelegatedOperation=PutRecords` with no timelines yet.
    pub fn new() -> Self {
        CdcMetricsSpec {
            delegated_operation: DEFAULT_DELEGATED_OPERATION.to_string(),
            series: BTreeMap::new(),
            repeat: false,
            started_ago: Duration::ZERO,
        }
    }

    pub fn with_delegated_operation(mut self, operation: &str) -> Self {
        self.delegated_operation = operation.to_string();
        self
    }

    pub fn started_ago(mut self, ago: Duration) -> Self {
        self.started_ago = ago;
        self
    }

    /// Set the timeline of `metric`.
    pub fn with_series(mut self, metric: &str, steps: Vec<MetricStep>) -> Self {
        self.series.insert(metric.to_string(), steps);
        self
    }

    /// Names ListMetrics lists for the table, sorted.
    pub fn metric_names(&self) -> Vec<&str> {
        if self.series.is_empty() {
            CDC_METRIC_NAMES.to_vec()
        } else {
            self.series.keys().map(String::as_str).collect()
        }
    }

    /// The value of `metric` `elapsed` after the timeline started; `None`
    /// for no datapoint (a `none` step, or no timeline).
    pub fn value_at(&self, metric: &str, elapsed: Duration) -> Option<f64> {
        let steps = self.series.get(metric)?;
        step_at(steps, self.repeat, elapsed, |s| s.duration)?.value
    }
}

impl Default for CdcMetricsSpec {
    fn default() -> Self {
        CdcMetricsSpec::new()
    }
}

impl MetricStep {
    /// `value` for `duration`.
    pub fn lasting(value: f64, duration: Duration) -> Self {
        MetricStep {
            value: Some(value),
            duration: Some(duration),
        }
    }

    /// No datapoint for `duration`.
    pub fn gap(duration: Duration) -> Self {
        MetricStep {
            value: None,
            duration: Some(duration),
        }
    }

    /// `value` for good.
    pub fn hold(value: f64) -> Self {
        MetricStep {
            value: Some(value),
            duration: None,
        }
    }
}

/// `(account, region, name)` of `arn:PARTITION:kinesis:REGION:ACCOUNT:stream/NAME`.
pub fn parse_stream_arn(arn: &str) -> Option<(&str, &str, &str)> {
    let mut parts = arn.splitn(6, ':');
    let ("arn", partition, "kinesis", region, account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ) else {
        return None;
    };
    let name = resource.strip_prefix("stream/")?;
    let ok = !partition.is_empty()
        && !region.is_empty()
        && is_account_id(account)
        && !name.is_empty()
        && !name.contains('/');
    ok.then_some((account, region, name))
}

fn check_stream(at: &str, stream: &StreamSpec, problems: &mut Vec<String>) {
    if parse_stream_arn(&stream.arn).is_none() {
        problems.push(format!(
            "{at}.arn: {:?} is not a stream ARN like \"arn:aws:kinesis:us-east-1:123456789012:stream/NAME\"",
            stream.arn
        ));
    }
    check_timeline(at, &stream.timeline, stream.repeat, problems);
    if !["PROVISIONED", "ON_DEMAND"].contains(&stream.mode.as_str()) {
        problems.push(format!(
            "{at}.mode: {:?} is not PROVISIONED or ON_DEMAND",
            stream.mode
        ));
    }
    if !["NONE", "KMS"].contains(&stream.encryption.as_str()) {
        problems.push(format!(
            "{at}.encryption: {:?} is not NONE or KMS",
            stream.encryption
        ));
    }
}

fn check_metric_steps(at: &str, steps: &[MetricStep], repeat: bool, problems: &mut Vec<String>) {
    if steps.is_empty() {
        problems.push(format!("{at}: must have at least one step"));
    }
    for (s, step) in steps.iter().enumerate() {
        let is_last = s + 1 == steps.len();
        match step.duration {
            None if repeat => problems.push(format!(
                "{at}[{s}].for: missing; with repeat: true every step needs `for`"
            )),
            None if !is_last => problems.push(format!(
                "{at}[{s}].for: missing; every step but the last needs `for`"
            )),
            Some(d) if d.is_zero() => {
                problems.push(format!("{at}[{s}].for: must be greater than zero"))
            }
            _ => {}
        }
    }
}

impl Step {
    /// A step that holds for good (a fixed status, or a timeline's last step).
    pub fn hold(status: &str) -> Self {
        Step {
            status: status.to_string(),
            description: None,
            duration: None,
        }
    }

    /// A step that lasts `duration`.
    pub fn lasting(status: &str, duration: Duration) -> Self {
        Step {
            duration: Some(duration),
            ..Step::hold(status)
        }
    }

    pub fn with_description(mut self, description: &str) -> Self {
        self.description = Some(description.to_string());
        self
    }
}

/// Total length of a timeline whose steps all have a non-zero total duration;
/// `None` if any step holds for good, the total is zero, or it overflows.
fn cycle_length<T>(steps: &[T], duration: impl Fn(&T) -> Option<Duration>) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for step in steps {
        total = total.checked_add(duration(step)?)?;
    }
    (!total.is_zero()).then_some(total)
}

impl ScopeSpec {
    /// An empty scope.
    pub fn new(account_id: &str, region: &str) -> Self {
        ScopeSpec {
            account_id: account_id.to_string(),
            region: region.to_string(),
            tables: Vec::new(),
            streams: Vec::new(),
        }
    }

    pub fn with_table(mut self, table: TableSpec) -> Self {
        self.tables.push(table);
        self
    }

    pub fn with_stream(mut self, stream: StreamSpec) -> Self {
        self.streams.push(stream);
        self
    }
}

impl RoleSpec {
    /// A role anyone may assume.
    pub fn new(arn: &str) -> Self {
        RoleSpec {
            arn: arn.to_string(),
            external_id: None,
        }
    }

    pub fn with_external_id(mut self, external_id: &str) -> Self {
        self.external_id = Some(external_id.to_string());
        self
    }
}

/// The account of a role ARN `arn:PARTITION:iam::ACCOUNT:role/PATH/NAME`;
/// `None` unless it has exactly that form with a 12-digit account.
pub fn role_account(arn: &str) -> Option<&str> {
    let mut parts = arn.splitn(6, ':');
    let ("arn", partition, "iam", "", account, resource) = (
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
        parts.next()?,
    ) else {
        return None;
    };
    let name = resource.strip_prefix("role/")?;
    let ok =
        !partition.is_empty() && is_account_id(account) && !name.is_empty() && !name.ends_with('/');
    ok.then_some(account)
}

fn is_account_id(account_id: &str) -> bool {
    account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit())
}

fn check_tables(prefix: &str, tables: &[TableSpec], problems: &mut Vec<String>) {
    let mut first_seen: HashMap<&str, usize> = HashMap::new();
    for (t, table) in tables.iter().enumerate() {
        check_table_name(prefix, t, &table.name, &mut first_seen, problems);
        for (d, dest) in table.destinations.iter().enumerate() {
            let at = format!("{prefix}tables[{t}].destinations[{d}]");
            if dest.stream_arn.is_empty() {
                problems.push(format!("{at}.stream_arn: must not be empty"));
            }
            check_timeline(&at, &dest.timeline, dest.repeat, problems);
        }
        if let Some(metrics) = &table.cdc_metrics {
            let at = format!("{prefix}tables[{t}].cdc_metrics");
            if metrics.delegated_operation.is_empty() {
                problems.push(format!("{at}.delegated_operation: must not be empty"));
            }
            for (name, steps) in &metrics.series {
                if !CDC_METRIC_NAMES.contains(&name.as_str()) {
                    problems.push(format!(
                        "{at}.{name}: not one of {}",
                        CDC_METRIC_NAMES.join(", ")
                    ));
                }
                check_metric_steps(&format!("{at}.{name}"), steps, metrics.repeat, problems);
            }
        }
        for (k, (key, _)) in table.tags.iter().enumerate() {
            if key.is_empty() {
                problems.push(format!(
                    "{prefix}tables[{t}].tags[{k}]: key must not be empty"
                ));
            }
        }
    }
}

fn check_account_and_region(
    prefix: &str,
    account_id: &str,
    region: &str,
    problems: &mut Vec<String>,
) {
    if !is_account_id(account_id) {
        problems.push(format!(
            "{prefix}account_id: {account_id:?} is not 12 digits"
        ));
    }
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        problems.push(format!(
            "{prefix}region: {region:?} is not a region name like \"us-east-1\""
        ));
    }
}

fn check_table_name<'a>(
    prefix: &str,
    index: usize,
    name: &'a str,
    first_seen: &mut HashMap<&'a str, usize>,
    problems: &mut Vec<String>,
) {
    if name.is_empty() {
        problems.push(format!("{prefix}tables[{index}].name: must not be empty"));
    } else if let Some(first) = first_seen.get(name) {
        problems.push(format!(
            "{prefix}tables[{index}].name: duplicate table {name:?} (first at {prefix}tables[{first}])"
        ));
    } else {
        first_seen.insert(name, index);
    }
}

fn check_timeline(at: &str, steps: &[Step], repeat: bool, problems: &mut Vec<String>) {
    if steps.is_empty() {
        problems.push(format!("{at}.timeline: must have at least one step"));
        return;
    }
    for (s, step) in steps.iter().enumerate() {
        let is_last = s + 1 == steps.len();
        if step.status.is_empty() {
            problems.push(format!("{at}.timeline[{s}].status: must not be empty"));
        }
        match step.duration {
            None if repeat => problems.push(format!(
                "{at}.timeline[{s}].for: missing; with repeat: true every step needs `for`"
            )),
            None if !is_last => problems.push(format!(
                "{at}.timeline[{s}].for: missing; every step but the last needs `for`"
            )),
            Some(d) if d.is_zero() => {
                problems.push(format!("{at}.timeline[{s}].for: must be greater than zero"))
            }
            _ => {}
        }
    }
}

// Reading the YAML. The text is read once by `dke_yaml` into a tree whose nodes know their
// lines; each part of the format has a `read_*` function that takes its node, reads every key
// it knows (adding a key is one line there), reports what is wrong through the `Checker` and
// builds its part with defaults in place of what was not valid, so that every item keeps its
// index and the rules of `validate` name the right one. A file is only used when nothing was
// reported.

impl Scenario {
    /// Parse and validate a scenario from YAML text.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        Scenario::parse(text, "")
    }

    /// Read, parse and validate a scenario file; problems name the file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Parse and validate `text`; `origin` (a file name, or empty) names it in problems.
    fn parse(text: &str, origin: &str) -> Result<Scenario, ScenarioError> {
        let doc = dke_yaml::parse(text, origin).map_err(|p| ScenarioError::Invalid(vec![p]))?;
        let mut c = Checker::new(origin);
        let scenario = read_scenario(&mut c, &Field::root(&doc));
        // Then the rules that also apply to scenarios built in code, on the line of the field
        // they name, minus those that only echo a problem of reading (a bad `for` would
        // otherwise also read as missing).
        let read: Vec<String> = c.reported().map(|p| p.path.clone()).collect();
        for problem in scenario.rule_problems() {
            let (path, message) = problem.split_once(": ").unwrap_or(("", &problem));
            if !read.iter().any(|earlier| within(path, earlier)) {
                c.report_at(path, doc.find(path), message);
            }
        }
        c.finish(scenario).map_err(ScenarioError::Invalid)
    }
}

/// Whether field path `inner` is `outer` or lies beneath it.
fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

fn read_scenario(c: &mut Checker, at: &Field) -> Scenario {
    let mut s = Scenario::default();
    let Some(mut m) = mapping(c, at) else {
        return s;
    };
    if let Some(f) = present(&mut m, "account_id") {
        s.account_id = text(c, &f, "an account ID").unwrap_or(s.account_id);
    }
    if let Some(f) = present(&mut m, "region") {
        s.region = text(c, &f, "a region name").unwrap_or(s.region);
    }
    s.tables = items(c, &mut m, "tables", read_table);
    s.scopes = items(c, &mut m, "scopes", read_scope);
    if let Some(f) = present(&mut m, "roles") {
        s.roles = Some(list(c, &f).iter().map(|r| read_role(c, r)).collect());
    }
    if let Some(f) = present(&mut m, "credential_lifetime") {
        s.credential_lifetime = duration(c, &f);
    }
    if let Some(f) = present(&mut m, "tags_page_size") {
        s.tags_page_size = c
            .integer(&f, 0, u32::MAX.into())
            .unwrap_or(s.tags_page_size);
    }
    let scope = (s.account_id.clone(), s.region.clone());
    s.streams = items(c, &mut m, "streams", |c, f| read_stream(c, f, &scope));
    if let Some(f) = present(&mut m, "repeating_tokens") {
        let tokens = list(c, &f).iter().filter_map(|t| listing(c, t)).collect();
        s.repeating_tokens = tokens;
    }
    if let Some(f) = present(&mut m, "transitions") {
        s.transitions = read_transitions(c, &f);
    }
    m.finish(c);
    s
}

/// `transitions: {enabling: 5s, disabling: 2s}`; a key left out keeps its default.
fn read_transitions(c: &mut Checker, at: &Field) -> TransitionTimes {
    let mut times = TransitionTimes::default();
    let Some(mut m) = mapping(c, at) else {
        return times;
    };
    if let Some(f) = present(&mut m, "enabling") {
        times.enabling = duration(c, &f).unwrap_or(times.enabling);
    }
    if let Some(f) = present(&mut m, "disabling") {
        times.disabling = duration(c, &f).unwrap_or(times.disabling);
    }
    m.finish(c);
    times
}

fn read_scope(c: &mut Checker, at: &Field) -> ScopeSpec {
    let mut scope = ScopeSpec::new("", "");
    let Some(mut m) = mapping(c, at) else {
        return scope;
    };
    scope.account_id = required(c, &mut m, "account_id", "an account ID");
    scope.region = required(c, &mut m, "region", "a region name");
    scope.tables = items(c, &mut m, "tables", read_table);
    let here = (scope.account_id.clone(), scope.region.clone());
    scope.streams = items(c, &mut m, "streams", |c, f| read_stream(c, f, &here));
    m.finish(c);
    scope
}

fn read_role(c: &mut Checker, at: &Field) -> RoleSpec {
    let mut role = RoleSpec::new("");
    let Some(mut m) = mapping(c, at) else {
        return role;
    };
    role.arn = required(c, &mut m, "arn", "a role ARN");
    role.external_id = optional(c, &mut m, "external_id", "an external ID");
    m.finish(c);
    role
}

fn read_table(c: &mut Checker, at: &Field) -> TableSpec {
    let mut table = TableSpec::new("");
    let Some(mut m) = mapping(c, at) else {
        return table;
    };
    table.name = required(c, &mut m, "name", "a table name");
    table.latency = present(&mut m, "latency").and_then(|f| duration(c, &f));
    table.fault = present(&mut m, "fault").and_then(|f| fault(c, &f));
    table.tag_fault = present(&mut m, "tag_fault").and_then(|f| fault(c, &f));
    table.destinations = items(c, &mut m, "destinations", read_destination);
    if let Some(f) = present(&mut m, "tags") {
        table.tags = read_tags(c, &f);
    }
    if let Some(f) = present(&mut m, "cdc_metrics") {
        table.cdc_metrics = Some(read_cdc_metrics(c, &f));
    }
    m.finish(c);
    table
}

/// `tags: {cdc: "true"}` or `tags: [{key: cdc, value: "true"}]`; keys and values are scalars
/// taken as text (`true` is "true"). Either way the n-th tag is `tags[n]`.
fn read_tags(c: &mut Checker, at: &Field) -> Vec<(String, String)> {
    let pairs: Vec<(Field, Field)> = match &at.node.value {
        Value::Map(entries) => (entries.iter().enumerate())
            .map(|(k, (key, value))| {
                let place = |node, part| Field {
                    node,
                    path: format!("{}[{k}].{part}", at.path),
                };
                (place(key, "key"), place(value, "value"))
            })
            .collect(),
        Value::Seq(_) => (list(c, at).iter())
            .filter_map(|item| {
                let mut m = mapping(c, item)?;
                let pair = (
                    m.require(c, "key", "is required"),
                    m.require(c, "value", "is required"),
                );
                m.finish(c);
                Some((pair.0?, pair.1?))
            })
            .collect(),
        other => {
            let found = describe(other);
            let message =
                format!("expected a mapping of tag keys to values, or a list of {{key, value}}, found {found}");
            c.report(at, message);
            Vec::new()
        }
    };
    (pairs.iter())
        .map(|(key, value)| {
            let key = text(c, key, "a string").unwrap_or_default();
            (key, text(c, value, "a string").unwrap_or_default())
        })
        .collect()
}

fn read_destination(c: &mut Checker, at: &Field) -> DestinationSpec {
    let mut destination = DestinationSpec::timeline("", Vec::new());
    let Some(mut m) = mapping(c, at) else {
        return destination;
    };
    destination.stream_arn = required(c, &mut m, "stream_arn", "a stream ARN");
    destination.precision = optional(c, &mut m, "precision", "a precision");
    let status = read_status(c, at, &mut m, true);
    destination.repeat = status.repeat;
    destination.timeline = status.timeline.unwrap_or_else(|| {
        c.report(at, "needs `status` or `timeline`");
        Vec::new()
    });
    m.finish(c);
    destination
}

/// A destination's or a stream's status, and whether its timeline repeats.
struct Status {
    /// `None` when neither `status` nor `timeline` is written, which the caller decides about.
    timeline: Option<Vec<Step>>,
    repeat: bool,
}

/// A status given as `status` (with `description` if `described`) or as `timeline` steps, with
/// `repeat`.
fn read_status(c: &mut Checker, at: &Field, m: &mut Map, described: bool) -> Status {
    let status = optional(c, m, "status", "a status");
    let description = described.then(|| present(m, "description")).flatten();
    let timeline = present(m, "timeline");
    let repeat_at = present(m, "repeat");
    let mut repeat = (repeat_at.as_ref())
        .and_then(|f| c.boolean(f))
        .unwrap_or(false);
    let timeline = match (status, timeline) {
        (Some(_), Some(_)) => {
            c.report(at, "has both `status` and `timeline`; use one");
            Some(Vec::new())
        }
        (None, None) => None,
        (Some(status), None) => {
            if let Some(f) = repeat_at.filter(|_| repeat) {
                c.report(&f, "only applies to a `timeline`");
                // Reported; keep the rules from reporting it again.
                repeat = false;
            }
            let description = description.and_then(|f| text(c, &f, "a description"));
            Some(vec![Step {
                description,
                ..Step::hold(&status)
            }])
        }
        (None, Some(steps)) => {
            if let Some(f) = description {
                c.report(&f, "goes on a timeline step, not beside `timeline`");
            }
            Some(list(c, &steps).iter().map(|s| read_step(c, s)).collect())
        }
    };
    Status { timeline, repeat }
}

fn read_step(c: &mut Checker, at: &Field) -> Step {
    let mut step = Step::hold("");
    let Some(mut m) = mapping(c, at) else {
        return step;
    };
    step.status = required(c, &mut m, "status", "a status");
    step.description = optional(c, &mut m, "description", "a description");
    step.duration = present(&mut m, "for").and_then(|f| duration(c, &f));
    m.finish(c);
    step
}

/// A stream of the scope `(account_id, region)`; a `name` becomes an ARN there.
fn read_stream(c: &mut Checker, at: &Field, (account_id, region): &(String, String)) -> StreamSpec {
    let mut stream = StreamSpec::new("");
    let Some(mut m) = mapping(c, at) else {
        return stream;
    };
    let arn = optional(c, &mut m, "arn", "a stream ARN");
    let name = optional(c, &mut m, "name", "a stream name");
    stream.arn = match (arn, name) {
        (Some(arn), None) => arn,
        (None, Some(name)) => format!(
            "arn:{}:kinesis:{region}:{account_id}:stream/{name}",
            arn_partition(region)
        ),
        (Some(arn), Some(_)) => {
            c.report(at, "has both `arn` and `name`; use one");
            arn
        }
        (None, None) => {
            c.report(at, "needs `arn` or `name`");
            String::new()
        }
    };
    let status = read_status(c, at, &mut m, false);
    stream.repeat = status.repeat;
    stream.timeline = status.timeline.unwrap_or(stream.timeline);
    let count = |c: &mut Checker, m: &mut Map, key, default| {
        (present(m, key).and_then(|f| c.integer(&f, 0, u32::MAX.into()))).unwrap_or(default)
    };
    stream.open_shards = count(c, &mut m, "open_shards", stream.open_shards);
    stream.mode = optional(c, &mut m, "mode", "a stream mode").unwrap_or(stream.mode);
    stream.encryption =
        optional(c, &mut m, "encryption", "NONE or KMS").unwrap_or(stream.encryption);
    stream.key_id = optional(c, &mut m, "key_id", "a KMS key ID");
    stream.retention_hours = count(c, &mut m, "retention_hours", stream.retention_hours);
    stream.consumer_count = count(c, &mut m, "consumers", stream.consumer_count);
    stream.fault = present(&mut m, "fault").and_then(|f| fault(c, &f));
    m.finish(c);
    stream
}

fn read_cdc_metrics(c: &mut Checker, at: &Field) -> CdcMetricsSpec {
    let mut metrics = CdcMetricsSpec::new();
    let Some(mut m) = mapping(c, at) else {
        return metrics;
    };
    metrics.delegated_operation = optional(c, &mut m, "delegated_operation", "an operation")
        .unwrap_or(metrics.delegated_operation);
    metrics.repeat = present(&mut m, "repeat").and_then(|f| c.boolean(&f)) == Some(true);
    if let Some(f) = present(&mut m, "started_ago") {
        metrics.started_ago = duration(c, &f).unwrap_or_default();
    }
    for name in CDC_METRIC_NAMES {
        let Some(f) = m.get(name) else { continue };
        let steps = list(c, &f).iter().map(|s| read_metric_step(c, s)).collect();
        metrics.series.insert(name.to_string(), steps);
    }
    m.finish(c);
    metrics
}

fn read_metric_step(c: &mut Checker, at: &Field) -> MetricStep {
    let mut step = MetricStep {
        value: None,
        duration: None,
    };
    let Some(mut m) = mapping(c, at) else {
        return step;
    };
    let value = m.require(
        c,
        "value",
        "is required: a number, or none for no datapoint",
    );
    step.value = value.and_then(|f| match &f.node.value {
        Value::Number(n, _) => Some(*n),
        Value::Null => None,
        Value::String(text) if text == "none" => None,
        other => {
            c.report(&f, format!("{} is not a number or `none`", describe(other)));
            None
        }
    });
    step.duration = present(&mut m, "for").and_then(|f| duration(c, &f));
    m.finish(c);
    step
}

// The readers of single values.

/// The keys of a mapping; an empty value has none.
fn mapping<'n>(c: &mut Checker, at: &Field<'n>) -> Option<Map<'n>> {
    match &at.node.value {
        Value::Null => Some(Map::empty(at)),
        _ => c.map(at),
    }
}

/// The value of `key`, unless it is missing or empty (then the default applies).
fn present<'n>(m: &mut Map<'n>, key: &'static str) -> Option<Field<'n>> {
    m.get(key).filter(|f| !matches!(f.node.value, Value::Null))
}

/// The items of a list, possibly none; an empty value is an empty list.
fn list<'n>(c: &mut Checker, at: &Field<'n>) -> Vec<Field<'n>> {
    match &at.node.value {
        Value::Seq(items) => (items.iter().enumerate())
            .map(|(i, n)| at.index(i, n))
            .collect(),
        Value::Null => Vec::new(),
        other => {
            c.report(at, format!("expected a list, found {}", describe(other)));
            Vec::new()
        }
    }
}

/// Every item of the list at `key`, read by `read` (none if the key is missing).
fn items<T>(
    c: &mut Checker,
    m: &mut Map,
    key: &'static str,
    mut read: impl FnMut(&mut Checker, &Field) -> T,
) -> Vec<T> {
    let Some(f) = m.get(key) else {
        return Vec::new();
    };
    list(c, &f).iter().map(|item| read(c, item)).collect()
}

/// A scalar as text: plain `012345678901` keeps its digits, `true` is "true".
fn text(c: &mut Checker, at: &Field, what: &str) -> Option<String> {
    match &at.node.value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_, written) => Some(written.clone()),
        Value::Bool(b) => Some(b.to_string()),
        other => {
            c.report(at, format!("expected {what}, found {}", describe(other)));
            None
        }
    }
}

/// The text at `key`, reported when missing; empty when not valid.
fn required(c: &mut Checker, m: &mut Map, key: &'static str, what: &str) -> String {
    let found = m.require(c, key, "is required");
    found.and_then(|f| text(c, &f, what)).unwrap_or_default()
}

fn optional(c: &mut Checker, m: &mut Map, key: &'static str, what: &str) -> Option<String> {
    present(m, key).and_then(|f| text(c, &f, what))
}

/// A duration in the project's one syntax (`dke_yaml::parse_duration`), zero included.
fn duration(c: &mut Checker, at: &Field) -> Option<Duration> {
    let Value::String(written) = &at.node.value else {
        let found = describe(&at.node.value);
        c.report(
            at,
            format!("expected a duration such as \"30s\", found {found}"),
        );
        return None;
    };
    (dke_yaml::parse_duration(written))
        .map_err(|err| c.report(at, err.to_string()))
        .ok()
}

fn fault(c: &mut Checker, at: &Field) -> Option<Fault> {
    named(c, at, "a fault", &Fault::NAMES)
}

fn listing(c: &mut Checker, at: &Field) -> Option<Listing> {
    named(c, at, "a listing", &Listing::NAMES)
}

/// One of `names`, by name.
fn named<T: Copy>(c: &mut Checker, at: &Field, what: &str, names: &[(&str, T)]) -> Option<T> {
    let written = text(c, at, what)?;
    let found = names.iter().find(|(name, _)| *name == written);
    if found.is_none() {
        let all: Vec<&str> = names.iter().map(|(name, _)| *name).collect();
        c.report(
            at,
            format!("{written:?} is not {what} (one of: {})", all.join(", ")),
        );
    }
    found.map(|(_, value)| *value)
}

/// The ARN partition a region belongs to.
pub(crate) fn arn_partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// The problems of `yaml`, each as `LINE: field.path: message`.
    fn problems(yaml: &str) -> Vec<String> {
        match Scenario::from_yaml(yaml) {
            Err(ScenarioError::Invalid(problems)) => (problems.iter())
                .map(|p| format!("{}: {}: {}", p.line.unwrap_or(0), p.path, p.message))
                .collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn parses_the_documented_example() {
        let yaml = r#"
account_id: "210987654321"
region: eu-west-1
tables:
  - name: orders
    latency: 200ms
    fault: throttle
    destinations:
      - stream_arn: arn:aws:kinesis:eu-west-1:210987654321:stream/orders-cdc
        precision: MILLISECOND
        status: ACTIVE
        description: "optional text"
      - stream_arn: arn:aws:kinesis:eu-west-1:210987654321:stream/orders-audit
        timeline:
          - { status: ENABLING, for: 3s }
          - { status: ENABLE_FAILED, for: 40s, description: "KMS key is disabled" }
          - { status: ACTIVE }
        repeat: false
  - name: payments
"#;
        let expected = Scenario {
            account_id: "210987654321".into(),
            region: "eu-west-1".into(),
            tables: vec![
                TableSpec {
                    name: "orders".into(),
                    destinations: vec![
                        DestinationSpec::fixed(
                            "arn:aws:kinesis:eu-west-1:210987654321:stream/orders-cdc",
                            "ACTIVE",
                        )
                        .with_precision("MILLISECOND")
                        .with_description("optional text"),
                        DestinationSpec::timeline(
                            "arn:aws:kinesis:eu-west-1:210987654321:stream/orders-audit",
                            vec![
                                Step::lasting("ENABLING", secs(3)),
                                Step::lasting("ENABLE_FAILED", secs(40))
                                    .with_description("KMS key is disabled"),
                                Step::hold("ACTIVE"),
                            ],
                        ),
                    ],
                    fault: Some(Fault::Throttle),
                    latency: Some(Duration::from_millis(200)),
                    tags: Vec::new(),
                    tag_fault: None,
                    cdc_metrics: None,
                },
                TableSpec::new("payments"),
            ],
            ..Scenario::default()
        };
        assert_eq!(Scenario::from_yaml(yaml).unwrap(), expected);
        assert_eq!(expected.table_names(), vec!["orders", "payments"]);
    }

    #[test]
    fn parses_scopes_tags_and_roles() {
        let yaml = r#"
tables:
  - name: orders
    tags: {cdc: "true", team: payments, tier: 1, on: true}
scopes:
  - account_id: "222222222222"
    region: eu-west-1
    tables:
      - name: eu-orders
        tags: [{key: cdc, value: "false"}]
  - account_id: "222222222222"
    region: us-east-1
roles:
  - arn: arn:aws:iam::222222222222:role/exporter
    external_id: s3cret
  - arn: arn:aws:iam::333333333333:role/path/open
credential_lifetime: 20s
tags_page_size: 3
"#;
        let expected = Scenario::default()
            .with_table(
                TableSpec::new("orders")
                    .with_tag("cdc", "true")
                    .with_tag("team", "payments")
                    .with_tag("tier", "1")
                    .with_tag("on", "true"),
            )
            .with_scope(
                ScopeSpec::new("222222222222", "eu-west-1")
                    .with_table(TableSpec::new("eu-orders").with_tag("cdc", "false")),
            )
            .with_scope(ScopeSpec::new("222222222222", "us-east-1"))
            .with_role(
                RoleSpec::new("arn:aws:iam::222222222222:role/exporter").with_external_id("s3cret"),
            )
            .with_role(RoleSpec::new("arn:aws:iam::333333333333:role/path/open"));
        let expected = Scenario {
            credential_lifetime: Some(secs(20)),
            tags_page_size: 3,
            ..expected
        };
        assert_eq!(Scenario::from_yaml(yaml).unwrap(), expected);
        assert_eq!(Scenario::from_yaml("{}").unwrap().roles, None);
    }

    #[test]
    fn scope_role_and_lifetime_problems_are_reported_together() {
        let yaml = r#"
scopes:
  - {account_id: "123456789012", region: us-east-1}
  - account_id: "22"
    region: eu-west-1
    tables: [{name: a}, {name: a}]
  - {account_id: "222222222222", region: eu-west-1}
  - {account_id: "222222222222", region: eu-west-1}
roles:
  - arn: arn:aws:iam::1:role/x
  - arn: arn:aws:iam::123456789012:user/x
credential_lifetime: soon
tags_page_size: 0
tables:
  - name: t
    tags: {"": x, k: [1]}
"#;
        assert_eq!(
            problems(yaml),
            [
                "3: scopes[0]: duplicate scope 123456789012/us-east-1 (first at the top level)",
                r#"4: scopes[1].account_id: "22" is not 12 digits"#,
                r#"6: scopes[1].tables[1].name: duplicate table "a" (first at scopes[1].tables[0])"#,
                "8: scopes[3]: duplicate scope 222222222222/eu-west-1 (first at scopes[2])",
                r#"10: roles[0].arn: "arn:aws:iam::1:role/x" is not a role ARN like "arn:aws:iam::123456789012:role/NAME""#,
                r#"11: roles[1].arn: "arn:aws:iam::123456789012:user/x" is not a role ARN like "arn:aws:iam::123456789012:role/NAME""#,
                r#"12: credential_lifetime: "soon" is not a duration"#,
                "13: tags_page_size: must be at least 1",
                "16: tables[0].tags[0]: key must not be empty",
                "16: tables[0].tags[1].value: expected a string, found a list",
            ]
        );
    }

    #[test]
    fn parses_streams_and_cdc_metrics() {
        let yaml = r#"
streams:
  - name: orders-cdc
    open_shards: 2
    mode: ON_DEMAND
  - arn: arn:aws:kinesis:eu-west-1:222222222222:stream/other
    timeline: [{status: CREATING, for: 5s}, {status: ACTIVE}]
    encryption: KMS
    retention_hours: 168
    fault: throttle
scopes:
  - account_id: "222222222222"
    region: eu-west-1
    streams: [{name: eu-cdc, status: UPDATING}]
tables:
  - name: orders
    cdc_metrics:
      delegated_operation: PutRecordBatch
      repeat: true
      started_ago: 10m
      AgeOfOldestUnreplicatedRecord:
        - {value: 1200, for: 60s}
        - {value: none, for: 30s}
      ConsumedChangeDataCaptureUnits: [{value: 5, for: 1m}]
"#;
        let scenario = Scenario::from_yaml(yaml).unwrap();
        assert_eq!(
            scenario.streams,
            [
                StreamSpec::new("arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc")
                    .with_open_shards(2)
                    .with_mode("ON_DEMAND"),
                StreamSpec {
                    encryption: "KMS".into(),
                    retention_hours: 168,
                    fault: Some(Fault::Throttle),
                    ..StreamSpec::new("arn:aws:kinesis:eu-west-1:222222222222:stream/other")
                        .with_timeline(
                            vec![Step::lasting("CREATING", secs(5)), Step::hold("ACTIVE")],
                            false
                        )
                },
            ]
        );
        assert_eq!(
            scenario.scopes[0].streams,
            [
                StreamSpec::new("arn:aws:kinesis:eu-west-1:222222222222:stream/eu-cdc")
                    .with_status("UPDATING")
            ]
        );
        let metrics = scenario.tables[0].cdc_metrics.as_ref().unwrap();
        let expected = CdcMetricsSpec {
            repeat: true,
            ..CdcMetricsSpec::new()
                .with_delegated_operation("PutRecordBatch")
                .started_ago(secs(600))
                .with_series(
                    "AgeOfOldestUnreplicatedRecord",
                    vec![
                        MetricStep::lasting(1200.0, secs(60)),
                        MetricStep::gap(secs(30)),
                    ],
                )
                .with_series(
                    "ConsumedChangeDataCaptureUnits",
                    vec![MetricStep::lasting(5.0, secs(60))],
                )
        };
        assert_eq!(metrics, &expected);
        assert_eq!(
            metrics.metric_names(),
            [
                "AgeOfOldestUnreplicatedRecord",
                "ConsumedChangeDataCaptureUnits"
            ]
        );
        // Repeats: 60 s of 1200, 30 s without data, then again.
        let age = "AgeOfOldestUnreplicatedRecord";
        assert_eq!(metrics.value_at(age, secs(59)), Some(1200.0));
        assert_eq!(metrics.value_at(age, secs(60)), None);
        assert_eq!(metrics.value_at(age, secs(95)), Some(1200.0));
        assert_eq!(metrics.value_at("ThrottledPutRecordCount", secs(1)), None);
    }

    #[test]
    fn stream_and_metric_problems_are_reported() {
        let yaml = r#"
streams:
  - {arn: "arn:aws:kinesis:us-east-1:123456789012:stream/a", mode: FAST, encryption: AES}
  - {arn: "arn:aws:kinesis:us-east-1:123456789012:stream/a"}
  - {arn: "arn:aws:sqs:us-east-1:123456789012:q"}
  - {}
tables:
  - name: t
    cdc_metrics:
      AgeOfOldestUnreplicatedRecord: [{value: lots}, {value: 1, for: 0s}]
      ThrottledPutRecordCount: []
"#;
        assert_eq!(
            problems(yaml),
            [
                r#"3: streams[0].mode: "FAST" is not PROVISIONED or ON_DEMAND"#,
                r#"3: streams[0].encryption: "AES" is not NONE or KMS"#,
                r#"4: streams[1].arn: duplicate stream "arn:aws:kinesis:us-east-1:123456789012:stream/a" (first at streams[0])"#,
                r#"5: streams[2].arn: "arn:aws:sqs:us-east-1:123456789012:q" is not a stream ARN like "arn:aws:kinesis:us-east-1:123456789012:stream/NAME""#,
                "6: streams[3]: needs `arn` or `name`",
                "10: tables[0].cdc_metrics.AgeOfOldestUnreplicatedRecord[0].for: missing; every step but the last needs `for`",
                r#"10: tables[0].cdc_metrics.AgeOfOldestUnreplicatedRecord[0].value: "lots" is not a number or `none`"#,
                "10: tables[0].cdc_metrics.AgeOfOldestUnreplicatedRecord[1].for: must be greater than zero",
                "11: tables[0].cdc_metrics.ThrottledPutRecordCount: must have at least one step",
            ]
        );
    }

    #[test]
    fn account_region_and_tables_default() {
        assert_eq!(Scenario::from_yaml("{}").unwrap(), Scenario::default());
        let scenario = Scenario::from_yaml("tables: []").unwrap();
        assert_eq!(scenario.account_id, "123456789012");
        assert_eq!(scenario.region, "us-east-1");
        assert!(scenario.tables.is_empty());
    }

    #[test]
    fn transitions_default_and_can_be_set() {
        assert_eq!(
            Scenario::default().transitions,
            TransitionTimes {
                enabling: secs(5),
                disabling: secs(2),
            }
        );
        let scenario =
            Scenario::from_yaml("transitions: {enabling: 300ms, disabling: 1m}").unwrap();
        assert_eq!(
            scenario.transitions,
            TransitionTimes {
                enabling: Duration::from_millis(300),
                disabling: secs(60),
            }
        );
        let scenario = Scenario::from_yaml("transitions: {disabling: 1s}").unwrap();
        assert_eq!(scenario.transitions.enabling, DEFAULT_ENABLING_TIME);
        assert_eq!(scenario.transitions.disabling, secs(1));
        assert_eq!(
            problems("transitions:\n  enabling: 0s\n  disabling: soon\n  deleting: 1s\n"),
            [
                "2: transitions.enabling: must be greater than zero",
                r#"3: transitions.disabling: "soon" is not a duration"#,
                "4: transitions.deleting: unknown key (expected one of: enabling, disabling)",
            ]
        );
    }

    #[test]
    fn repeating_tokens_name_the_listings() {
        let scenario = Scenario::from_yaml(
            "repeating_tokens: [ListTables, GetMetricData, ListTagsOfResource, ListMetrics]\n",
        )
        .unwrap();
        assert_eq!(
            scenario.repeating_tokens.into_iter().collect::<Vec<_>>(),
            [
                Listing::ListTables,
                Listing::ListTagsOfResource,
                Listing::ListMetrics,
                Listing::GetMetricData
            ]
        );
        assert!(Scenario::from_yaml("tables: []")
            .unwrap()
            .repeating_tokens
            .is_empty());
        assert_eq!(
            problems("repeating_tokens: [ListStreams]\n"),
            ["1: repeating_tokens[0]: \"ListStreams\" is not a listing (one of: ListTables, ListTagsOfResource, ListMetrics, GetMetricData)"]
        );
    }

    #[test]
    fn unquoted_account_id_keeps_its_digits() {
        let scenario = Scenario::from_yaml("account_id: 012345678901\n").unwrap();
        assert_eq!(scenario.account_id, "012345678901");
    }

    #[test]
    fn every_fault_name_parses() {
        let names = [
            ("throttle", Fault::Throttle),
            ("internal_error", Fault::InternalError),
            ("hang", Fault::Hang),
            ("reset", Fault::Reset),
            ("malformed", Fault::Malformed),
            ("not_found", Fault::NotFound),
            ("access_denied", Fault::AccessDenied),
            ("unknown_code", Fault::UnknownCode),
        ];
        for (name, fault) in names {
            let yaml = format!("tables: [{{name: t, fault: {name}}}]");
            let scenario = Scenario::from_yaml(&yaml).unwrap();
            assert_eq!(scenario.tables[0].fault, Some(fault), "{name}");
            let yaml = format!("tables: [{{name: t, tag_fault: {name}}}]");
            let scenario = Scenario::from_yaml(&yaml).unwrap();
            assert_eq!(scenario.tables[0].tag_fault, Some(fault), "{name}");
            assert_eq!(scenario.tables[0].fault, None, "{name}");
        }
        assert_eq!(
            problems("tables: [{name: t, fault: explode}]"),
            ["1: tables[0].fault: \"explode\" is not a fault (one of: throttle, internal_error, hang, reset, malformed, not_found, access_denied, unknown_code)"]
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        assert_eq!(
            problems("tables:\n  - name: t\n    colour: red\n"),
            ["3: tables[0].colour: unknown key (expected one of: name, latency, fault, tag_fault, destinations, tags, cdc_metrics)"]
        );
        assert_eq!(
            problems("regoin: us-east-1\n"),
            ["1: regoin: unknown key (expected one of: account_id, region, tables, scopes, roles, credential_lifetime, tags_page_size, streams, repeating_tokens, transitions)"]
        );
        assert_eq!(
            problems("tables:\n  - name: t\n    destinations:\n      - stream_arn: a\n        timeline: [{status: A, after: 3s}]\n"),
            ["5: tables[0].destinations[0].timeline[0].after: unknown key (expected one of: status, description, for)"]
        );
        // A stream's status has no description, unlike a destination's.
        assert_eq!(
            problems("streams: [{name: s, status: ACTIVE, description: x}]\n"),
            ["1: streams[0].description: unknown key (expected one of: arn, name, status, timeline, repeat, open_shards, mode, encryption, key_id, retention_hours, consumers, fault)"]
        );
    }

    #[test]
    fn wrong_types_are_reported_with_everything_else() {
        let yaml = "\
tables: {name: t}
scopes:
  - account_id: 222222222222
    region: [eu-west-1]
    tables: [{name: t, destinations: [{stream_arn: a, status: ACTIVE, repeat: maybe}]}]
  - 5
  - {region: eu-west-1}
streams:
  - {name: s, open_shards: -1, retention_hours: 2.5, consumers: many}
tags_page_size: \"3\"
credential_lifetime: 20
roles: [{external_id: x}]
";
        assert_eq!(
            problems(yaml),
            [
                "1: tables: expected a list, found a mapping",
                "4: scopes[0].region: expected a region name, found a list",
                "5: scopes[0].tables[0].destinations[0].repeat: expected true or false, found \"maybe\"",
                "6: scopes[1]: expected a mapping, found 5",
                "7: scopes[2].account_id: is required",
                "9: streams[0].open_shards: must be at least 0",
                "9: streams[0].retention_hours: expected a positive integer, found 2.5",
                "9: streams[0].consumers: expected a positive integer, found \"many\"",
                "10: tags_page_size: expected a positive integer, found \"3\"",
                "11: credential_lifetime: expected a duration such as \"30s\", found 20",
                "12: roles[0].arn: is required",
            ]
        );
    }

    #[test]
    fn problems_name_their_line_in_every_style() {
        // The syntax error stops the read: it is the one problem.
        assert_eq!(
            problems("tables:\n  - name: a\n   latency: 1s\n"),
            ["3: (document): while parsing a block collection, did not find expected '-' indicator"]
        );
        assert_eq!(
            problems("tables:\n  - {name: a}\n  - {name: a}\n"),
            ["3: tables[1].name: duplicate table \"a\" (first at tables[0])"]
        );
        // A rule about a field that is not written is placed at its parent.
        assert_eq!(
            problems("tables:\n  - name: a\n    destinations:\n      - stream_arn: s\n        repeat: true\n        timeline:\n          - {status: ENABLING}\n          - {status: ACTIVE, for: 1s}\n"),
            ["7: tables[0].destinations[0].timeline[0].for: missing; with repeat: true every step needs `for`"]
        );
    }

    #[test]
    fn reports_every_validation_problem_at_once() {
        let yaml = r#"
account_id: "12345"
region: US East
tables:
  - name: orders
    latency: 5 parsecs
    destinations:
      - stream_arn: a
        status: ACTIVE
        timeline: [{status: ACTIVE}]
      - stream_arn: b
      - stream_arn: c
        description: loose
        timeline: [{status: ENABLING, for: 1s}, {status: ACTIVE}]
      - stream_arn: d
        status: ACTIVE
        repeat: true
      - stream_arn: e
        timeline: []
  - name: orders
  - name: ""
    destinations:
      - stream_arn: ""
        timeline:
          - { status: ENABLING }
          - { status: "", for: 0s }
          - { status: ACTIVE, for: soon }
          - { status: DISABLED }
      - stream_arn: f
        repeat: true
        timeline: [{status: ENABLING, for: 2s}, {status: ACTIVE}]
"#;
        // In the order of the text, reading and rules alike.
        let expected = [
            r#"2: account_id: "12345" is not 12 digits"#,
            r#"3: region: "US East" is not a region name like "us-east-1""#,
            r#"6: tables[0].latency: "5 parsecs" is not a duration"#,
            "8: tables[0].destinations[0]: has both `status` and `timeline`; use one",
            "11: tables[0].destinations[1]: needs `status` or `timeline`",
            "13: tables[0].destinations[2].description: goes on a timeline step, not beside `timeline`",
            "17: tables[0].destinations[3].repeat: only applies to a `timeline`",
            "19: tables[0].destinations[4].timeline: must have at least one step",
            r#"20: tables[1].name: duplicate table "orders" (first at tables[0])"#,
            "21: tables[2].name: must not be empty",
            "23: tables[2].destinations[0].stream_arn: must not be empty",
            "25: tables[2].destinations[0].timeline[0].for: missing; every step but the last needs `for`",
            "26: tables[2].destinations[0].timeline[1].status: must not be empty",
            "26: tables[2].destinations[0].timeline[1].for: must be greater than zero",
            r#"27: tables[2].destinations[0].timeline[2].for: "soon" is not a duration"#,
            "31: tables[2].destinations[1].timeline[1].for: missing; with repeat: true every step needs `for`",
        ];
        assert_eq!(problems(yaml), expected);
    }

    #[test]
    fn invalid_error_lists_problems_in_its_message() {
        let err = Scenario::from_yaml("tables: [{name: a}, {name: a}]").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid scenario: line 1: tables[1].name: duplicate table "a" (first at tables[0])"#
        );
    }

    #[test]
    fn validate_applies_to_scenarios_built_in_code() {
        let good = Scenario::default().with_table(
            TableSpec::new("t").with_destination(DestinationSpec::fixed("arn:s", "ACTIVE")),
        );
        assert!(good.validate().is_ok());

        let bad = Scenario::default()
            .with_table(TableSpec::new("t"))
            .with_table(
                TableSpec::new("t").with_destination(DestinationSpec::timeline("arn:s", vec![])),
            )
            .with_table(
                TableSpec::new("u").with_destination(
                    DestinationSpec::timeline("arn:s", vec![Step::hold("A"), Step::hold("B")])
                        .repeating(),
                ),
            );
        let err = bad.validate().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid scenario: tables[1].name: "),
            "{err}"
        );
        match err {
            ScenarioError::Invalid(problems) => assert_eq!(
                problems.iter().map(|p| format!("{}: {}", p.path, p.message)).collect::<Vec<_>>(),
                [
                    r#"tables[1].name: duplicate table "t" (first at tables[0])"#,
                    "tables[1].destinations[0].timeline: must have at least one step",
                    "tables[2].destinations[0].timeline[0].for: missing; with repeat: true every step needs `for`",
                    "tables[2].destinations[0].timeline[1].for: missing; with repeat: true every step needs `for`",
                ]
            ),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn load_names_the_file() {
        let dir = std::env::temp_dir().join(format!("simulator-scenario-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();

        let missing = dir.join("missing.yaml");
        let err = Scenario::load(&missing).unwrap_err();
        assert!(matches!(err, ScenarioError::Read { .. }), "{err:?}");
        assert!(
            err.to_string().starts_with(&format!(
                "cannot read scenario file {}: ",
                missing.display()
            )),
            "{err}"
        );

        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "tables: [{name: a, latency: soon}]").unwrap();
        let err = Scenario::load(&bad).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                r#"invalid scenario: {}:1: tables[0].latency: "soon" is not a duration"#,
                bad.display()
            )
        );

        let good = dir.join("good.yaml");
        std::fs::write(&good, "region: eu-central-1\ntables: [{name: a}]").unwrap();
        let scenario = Scenario::load(&good).unwrap();
        assert_eq!(scenario.region, "eu-central-1");
        assert_eq!(scenario.table_names(), vec!["a"]);

        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Every scenario file the project ships or tests with reads as it always has.
    #[test]
    fn shipped_scenario_files_parse() {
        let e2e = include_str!("../../tests/fixtures/e2e/scenario.yaml");
        let scenario = Scenario::from_yaml(e2e).unwrap_or_else(|e| panic!("{e}"));
        assert!(!scenario.tables.is_empty() || !scenario.scopes.is_empty());
        let demo = include_str!("../../config/demo-scenario.yaml");
        Scenario::from_yaml(demo).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn demo_scenario_parses_and_covers_every_status() {
        let demo = Scenario::from_yaml(include_str!("../../config/demo-scenario.yaml")).unwrap();
        assert_eq!(
            demo.table_names(),
            vec![
                "orders",
                "payments",
                "inventory",
                "audit-log",
                "shipments",
                "clickstream",
                "customers",
                "scratch",
                "ledger"
            ]
        );
        let counts: Vec<usize> = demo.tables.iter().map(|t| t.destinations.len()).collect();
        assert_eq!(counts, vec![2, 1, 0, 1, 1, 1, 1, 1, 1]);
        // Tags on every table.
        for table in &demo.tables {
            assert!(
                table.tags.iter().any(|(key, _)| key == "env"),
                "{}",
                table.name
            );
        }
        assert_eq!(
            demo.transitions,
            TransitionTimes {
                enabling: secs(5),
                disabling: secs(2),
            }
        );

        // The status tour loops; the two silent-stop cases hold ACTIVE.
        let destinations: Vec<&DestinationSpec> =
            demo.tables.iter().flat_map(|t| &t.destinations).collect();
        assert!(destinations[..4].iter().all(|d| d.repeat));
        assert!(demo.tables[5].cdc_metrics.is_some());
        let mut statuses: Vec<&str> = destinations
            .iter()
            .flat_map(|d| d.timeline.iter().map(|s| s.status.as_str()))
            .collect();
        statuses.sort_unstable();
        statuses.dedup();
        assert_eq!(
            statuses,
            [
                "ACTIVE",
                "DISABLED",
                "DISABLING",
                "ENABLE_FAILED",
                "ENABLING",
                "UPDATING"
            ]
        );
        let mut precisions: Vec<&str> = destinations
            .iter()
            .filter_map(|d| d.precision.as_deref())
            .collect();
        precisions.sort_unstable();
        precisions.dedup();
        assert_eq!(precisions, ["MICROSECOND", "MILLISECOND"]);
        for destination in &destinations {
            for step in &destination.timeline {
                if step.status == "ENABLE_FAILED" {
                    assert!(step.description.as_deref().is_some_and(|d| d.len() > 20));
                }
            }
        }
    }

    fn orders_audit() -> DestinationSpec {
        DestinationSpec::timeline(
            "arn:s",
            vec![
                Step::lasting("ENABLING", secs(3)),
                Step::lasting("ENABLE_FAILED", secs(40)).with_description("KMS key is disabled"),
                Step::hold("ACTIVE"),
            ],
        )
    }

    fn status_at(destination: &DestinationSpec, elapsed: Duration) -> Option<&str> {
        destination.step_at(elapsed).map(|s| s.status.as_str())
    }

    #[test]
    fn timeline_moves_through_steps_and_holds_the_last() {
        let d = orders_audit();
        let ms = Duration::from_millis;
        assert_eq!(status_at(&d, Duration::ZERO), Some("ENABLING"));
        assert_eq!(status_at(&d, ms(2_999)), Some("ENABLING"));
        assert_eq!(status_at(&d, ms(3_000)), Some("ENABLE_FAILED"));
        assert_eq!(
            d.step_at(ms(42_999)).and_then(|s| s.description.as_deref()),
            Some("KMS key is disabled")
        );
        assert_eq!(status_at(&d, ms(43_000)), Some("ACTIVE"));
        assert_eq!(status_at(&d, secs(86_400 * 365)), Some("ACTIVE"));
    }

    #[test]
    fn a_timed_last_step_still_holds_without_repeat() {
        let d = DestinationSpec::timeline(
            "arn:s",
            vec![
                Step::lasting("ENABLING", secs(1)),
                Step::lasting("ACTIVE", secs(1)),
            ],
        );
        assert_eq!(status_at(&d, secs(5)), Some("ACTIVE"));
    }

    #[test]
    fn repeating_timeline_loops() {
        let d = DestinationSpec::timeline(
            "arn:s",
            vec![
                Step::lasting("ENABLING", secs(3)),
                Step::lasting("ACTIVE", secs(2)),
            ],
        )
        .repeating();
        let ms = Duration::from_millis;
        assert_eq!(status_at(&d, Duration::ZERO), Some("ENABLING"));
        assert_eq!(status_at(&d, ms(2_999)), Some("ENABLING"));
        assert_eq!(status_at(&d, ms(3_000)), Some("ACTIVE"));
        assert_eq!(status_at(&d, ms(4_999)), Some("ACTIVE"));
        assert_eq!(status_at(&d, ms(5_000)), Some("ENABLING"));
        assert_eq!(status_at(&d, ms(8_000)), Some("ACTIVE"));
        assert_eq!(status_at(&d, secs(50_001)), Some("ENABLING"));
        assert_eq!(status_at(&d, secs(50_004)), Some("ACTIVE"));
    }

    #[test]
    fn fixed_empty_and_hand_built_timelines() {
        let fixed = DestinationSpec::fixed("arn:s", "PAUSED").with_description("new status");
        assert_eq!(status_at(&fixed, Duration::ZERO), Some("PAUSED"));
        assert_eq!(
            fixed
                .step_at(secs(1_000))
                .and_then(|s| s.description.as_deref()),
            Some("new status")
        );
        assert_eq!(
            status_at(&DestinationSpec::timeline("arn:s", vec![]), secs(1)),
            None
        );
        // Breaks the rules (untimed middle step, repeat): holds that step.
        let odd = DestinationSpec::timeline(
            "arn:s",
            vec![
                Step::lasting("A", secs(1)),
                Step::hold("B"),
                Step::lasting("C", secs(1)),
            ],
        )
        .repeating();
        assert_eq!(status_at(&odd, Duration::ZERO), Some("A"));
        assert_eq!(status_at(&odd, secs(100)), Some("B"));
    }

    proptest! {
        #[test]
        fn repeat_depends_only_on_time_within_the_cycle(
            lengths in proptest::collection::vec(1u64..10_000, 1..6),
            elapsed_ms in 0u64..10_000_000,
        ) {
            let steps: Vec<Step> = lengths
                .iter()
                .enumerate()
                .map(|(i, ms)| Step::lasting(&format!("S{i}"), Duration::from_millis(*ms)))
                .collect();
            let cycle: u64 = lengths.iter().sum();
            let d = DestinationSpec::timeline("arn:s", steps).repeating();
            let expected = {
                let mut left = elapsed_ms % cycle;
                let mut index = 0;
                while left >= lengths[index] {
                    left -= lengths[index];
                    index += 1;
                }
                format!("S{index}")
            };
            prop_assert_eq!(status_at(&d, Duration::from_millis(elapsed_ms)), Some(expected.as_str()));
        }

        #[test]
        fn non_repeating_timeline_never_goes_back(
            lengths in proptest::collection::vec(1u64..1_000, 1..6),
            a in 0u64..10_000,
            b in 0u64..10_000,
        ) {
            let steps: Vec<Step> = lengths
                .iter()
                .enumerate()
                .map(|(i, ms)| Step::lasting(&format!("{i}"), Duration::from_millis(*ms)))
                .collect();
            let d = DestinationSpec::timeline("arn:s", steps);
            let index = |ms: u64| -> usize {
                status_at(&d, Duration::from_millis(ms)).and_then(|s| s.parse().ok()).unwrap_or(usize::MAX)
            };
            let (early, late) = (a.min(b), a.max(b));
            prop_assert!(index(early) <= index(late));
            prop_assert!(index(late) < lengths.len());
        }

        #[test]
        fn arbitrary_text_gives_a_scenario_or_a_message(text in "\\PC{0,200}") {
            if let Err(err) = Scenario::from_yaml(&text) {
                prop_assert!(!err.to_string().is_empty());
            }
        }
    }
}
