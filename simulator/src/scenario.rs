//! The simulator's scenario: which tables exist, which Kinesis streaming
//! destinations each one has, how their statuses move over time, and which
//! faults and latency a table injects. Owns the YAML format, its validation,
//! and the pure timeline evaluation the wire layer calls on every request.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Account used for table ARNs when a scenario does not name one.
pub const DEFAULT_ACCOUNT_ID: &str = "123456789012";
/// Region used when a scenario does not name one.
pub const DEFAULT_REGION: &str = "us-east-1";

/// Everything the simulated DynamoDB endpoint knows about.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// Twelve-digit account id, used in table ARNs and error messages.
    pub account_id: String,
    /// Region the endpoint pretends to be in; table ARNs must name it.
    pub region: String,
    pub tables: Vec<TableSpec>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
}

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    #[error("cannot read scenario file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Any other error, tagged with the file it came from.
    #[error("{}: {error}", path.display())]
    InFile {
        path: PathBuf,
        error: Box<ScenarioError>,
    },
    /// Not YAML, wrong types or unknown keys; the message names line and column.
    #[error("scenario does not parse: {0}")]
    Syntax(serde_yaml::Error),
    /// Decoded, but breaks the rules; every problem is listed, each naming its field.
    #[error("invalid scenario: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

impl Default for Scenario {
    /// The default account and region with no tables.
    fn default() -> Self {
        Scenario {
            account_id: DEFAULT_ACCOUNT_ID.to_string(),
            region: DEFAULT_REGION.to_string(),
            tables: Vec::new(),
        }
    }
}

impl Scenario {
    /// Parse and validate a scenario from YAML text.
    pub fn from_yaml(text: &str) -> Result<Scenario, ScenarioError> {
        let raw: RawScenario = serde_yaml::from_str(text).map_err(ScenarioError::Syntax)?;
        raw.into_scenario().map_err(ScenarioError::Invalid)
    }

    /// Read, parse and validate a scenario file; errors name the file.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|error| ScenarioError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        Scenario::from_yaml(&text).map_err(|error| ScenarioError::InFile {
            path: path.to_path_buf(),
            error: Box::new(error),
        })
    }

    /// Names of all tables, in scenario order.
    pub fn table_names(&self) -> Vec<String> {
        self.tables.iter().map(|t| t.name.clone()).collect()
    }

    /// Add a table (builder style, for tests).
    pub fn with_table(mut self, table: TableSpec) -> Self {
        self.tables.push(table);
        self
    }

    /// Apply the same rules as [`Scenario::from_yaml`] to a scenario built in code.
    pub fn validate(&self) -> Result<(), ScenarioError> {
        let mut problems = Vec::new();
        check_account_and_region(&self.account_id, &self.region, &mut problems);
        let mut first_seen: HashMap<&str, usize> = HashMap::new();
        for (t, table) in self.tables.iter().enumerate() {
            check_table_name(t, &table.name, &mut first_seen, &mut problems);
            for (d, dest) in table.destinations.iter().enumerate() {
                let at = format!("tables[{t}].destinations[{d}]");
                if dest.stream_arn.is_empty() {
                    problems.push(format!("{at}.stream_arn: must not be empty"));
                }
                check_timeline(&at, &dest.timeline, dest.repeat, &mut problems);
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ScenarioError::Invalid(problems))
        }
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
        }
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
        let last = self.timeline.last()?;
        let mut left = elapsed;
        if self.repeat {
            if let Some(cycle) = cycle_length(&self.timeline) {
                let into_cycle = elapsed.as_nanos() % cycle.as_nanos();
                left = Duration::from_nanos(u64::try_from(into_cycle).unwrap_or(u64::MAX));
            }
        }
        for step in &self.timeline {
            match step.duration {
                Some(length) if left >= length => left -= length,
                _ => return Some(step),
            }
        }
        Some(last)
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
fn cycle_length(steps: &[Step]) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for step in steps {
        total = total.checked_add(step.duration?)?;
    }
    (!total.is_zero()).then_some(total)
}

fn check_account_and_region(account_id: &str, region: &str, problems: &mut Vec<String>) {
    if account_id.len() != 12 || !account_id.bytes().all(|b| b.is_ascii_digit()) {
        problems.push(format!("account_id: {account_id:?} is not 12 digits"));
    }
    let region_ok = !region.is_empty()
        && region
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !region_ok {
        problems.push(format!(
            "region: {region:?} is not a region name like \"us-east-1\""
        ));
    }
}

fn check_table_name<'a>(
    index: usize,
    name: &'a str,
    first_seen: &mut HashMap<&'a str, usize>,
    problems: &mut Vec<String>,
) {
    if name.is_empty() {
        problems.push(format!("tables[{index}].name: must not be empty"));
    } else if let Some(first) = first_seen.get(name) {
        problems.push(format!(
            "tables[{index}].name: duplicate table {name:?} (first at tables[{first}])"
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

// The YAML shapes. Durations stay strings here so that a bad one is reported
// with every other problem instead of aborting the decode at the first.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    #[serde(default = "default_account_id")]
    account_id: String,
    #[serde(default = "default_region")]
    region: String,
    #[serde(default)]
    tables: Vec<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    name: String,
    #[serde(default)]
    latency: Option<String>,
    #[serde(default)]
    fault: Option<Fault>,
    #[serde(default)]
    destinations: Vec<RawDestination>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDestination {
    stream_arn: String,
    #[serde(default)]
    precision: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    timeline: Option<Vec<RawStep>>,
    #[serde(default)]
    repeat: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    status: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default, rename = "for")]
    duration: Option<String>,
}

fn default_account_id() -> String {
    DEFAULT_ACCOUNT_ID.to_string()
}

fn default_region() -> String {
    DEFAULT_REGION.to_string()
}

fn parse_duration(at: &str, text: &str, problems: &mut Vec<String>) -> Option<Duration> {
    match humantime::parse_duration(text.trim()) {
        Ok(duration) => Some(duration),
        Err(_) => {
            problems.push(format!(
                "{at}: {text:?} is not a duration (write e.g. \"500ms\", \"3s\", \"2m\")"
            ));
            None
        }
    }
}

impl RawScenario {
    fn into_scenario(self) -> Result<Scenario, Vec<String>> {
        let mut problems = Vec::new();
        let mut tables = Vec::with_capacity(self.tables.len());
        for (t, raw) in self.tables.into_iter().enumerate() {
            let at = format!("tables[{t}]");
            let latency = raw
                .latency
                .and_then(|text| parse_duration(&format!("{at}.latency"), &text, &mut problems));
            let mut destinations = Vec::with_capacity(raw.destinations.len());
            for (d, dest) in raw.destinations.into_iter().enumerate() {
                destinations
                    .push(dest.into_spec(&format!("{at}.destinations[{d}]"), &mut problems));
            }
            tables.push(TableSpec {
                name: raw.name,
                destinations,
                fault: raw.fault,
                latency,
            });
        }
        let scenario = Scenario {
            account_id: self.account_id,
            region: self.region,
            tables,
        };
        // Shape problems found while decoding come first, then the rules that
        // also apply to scenarios built in code, minus those that only echo a
        // decoding problem (a bad `for` would otherwise also read as missing).
        if let Err(ScenarioError::Invalid(more)) = scenario.validate() {
            let decoded = problems.len();
            for problem in more {
                let echoes = problems[..decoded]
                    .iter()
                    .any(|earlier| within(field_of(&problem), field_of(earlier)));
                if !echoes {
                    problems.push(problem);
                }
            }
        }
        if problems.is_empty() {
            Ok(scenario)
        } else {
            Err(problems)
        }
    }
}

/// The field path a problem message starts with.
fn field_of(problem: &str) -> &str {
    problem.split_once(": ").map_or(problem, |(field, _)| field)
}

/// Whether field path `inner` is `outer` or lies beneath it.
fn within(inner: &str, outer: &str) -> bool {
    inner
        .strip_prefix(outer)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(['.', '[']))
}

impl RawDestination {
    fn into_spec(mut self, at: &str, problems: &mut Vec<String>) -> DestinationSpec {
        let timeline = match (self.status, self.timeline) {
            (Some(_), Some(_)) => {
                problems.push(format!("{at}: has both `status` and `timeline`; use one"));
                Vec::new()
            }
            (None, None) => {
                problems.push(format!("{at}: needs `status` or `timeline`"));
                Vec::new()
            }
            (Some(status), None) => {
                if self.repeat {
                    problems.push(format!("{at}.repeat: only applies to a `timeline`"));
                    // Reported; keep the rules below from reporting it again.
                    self.repeat = false;
                }
                vec![Step {
                    status,
                    description: self.description,
                    duration: None,
                }]
            }
            (None, Some(steps)) => {
                if self.description.is_some() {
                    problems.push(format!(
                        "{at}.description: goes on a timeline step, not beside `timeline`"
                    ));
                }
                steps
                    .into_iter()
                    .enumerate()
                    .map(|(s, step)| Step {
                        duration: step.duration.and_then(|text| {
                            parse_duration(&format!("{at}.timeline[{s}].for"), &text, problems)
                        }),
                        status: step.status,
                        description: step.description,
                    })
                    .collect()
            }
        };
        DestinationSpec {
            stream_arn: self.stream_arn,
            precision: self.precision,
            timeline,
            repeat: self.repeat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn problems(yaml: &str) -> Vec<String> {
        match Scenario::from_yaml(yaml) {
            Err(ScenarioError::Invalid(problems)) => problems,
            other => panic!("expected validation problems, got {other:?}"),
        }
    }

    fn syntax_message(yaml: &str) -> String {
        match Scenario::from_yaml(yaml) {
            Err(ScenarioError::Syntax(err)) => err.to_string(),
            other => panic!("expected a syntax error, got {other:?}"),
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
                },
                TableSpec::new("payments"),
            ],
        };
        assert_eq!(Scenario::from_yaml(yaml).unwrap(), expected);
        assert_eq!(expected.table_names(), vec!["orders", "payments"]);
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
        ];
        for (name, fault) in names {
            let yaml = format!("tables: [{{name: t, fault: {name}}}]");
            let scenario = Scenario::from_yaml(&yaml).unwrap();
            assert_eq!(scenario.tables[0].fault, Some(fault), "{name}");
        }
        let message = syntax_message("tables: [{name: t, fault: explode}]");
        assert!(message.contains("unknown variant `explode`"), "{message}");
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_location() {
        assert_eq!(
            syntax_message("tables:\n  - name: t\n    colour: red\n"),
            "tables[0]: unknown field `colour`, expected one of `name`, `latency`, `fault`, \
             `destinations` at line 3 column 5"
        );

        let message = syntax_message("regoin: us-east-1\n");
        assert!(message.contains("unknown field `regoin`"), "{message}");

        let message = syntax_message(
            "tables:\n  - name: t\n    destinations:\n      - stream_arn: a\n        timeline: [{status: A, after: 3s}]\n",
        );
        assert!(message.contains("unknown field `after`"), "{message}");
    }

    #[test]
    fn wrong_types_are_syntax_errors() {
        let message = syntax_message("tables: {name: t}\n");
        assert!(
            message.starts_with("tables: invalid type: map, expected a sequence"),
            "{message}"
        );
        let message =
            syntax_message("tables: [{name: t, destinations: [{stream_arn: a, repeat: maybe}]}]");
        assert!(message.contains("repeat"), "{message}");
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
        let expected = [
            r#"tables[0].latency: "5 parsecs" is not a duration (write e.g. "500ms", "3s", "2m")"#,
            "tables[0].destinations[0]: has both `status` and `timeline`; use one",
            "tables[0].destinations[1]: needs `status` or `timeline`",
            "tables[0].destinations[2].description: goes on a timeline step, not beside `timeline`",
            "tables[0].destinations[3].repeat: only applies to a `timeline`",
            r#"tables[2].destinations[0].timeline[2].for: "soon" is not a duration (write e.g. "500ms", "3s", "2m")"#,
            r#"account_id: "12345" is not 12 digits"#,
            r#"region: "US East" is not a region name like "us-east-1""#,
            "tables[0].destinations[4].timeline: must have at least one step",
            r#"tables[1].name: duplicate table "orders" (first at tables[0])"#,
            "tables[2].name: must not be empty",
            "tables[2].destinations[0].stream_arn: must not be empty",
            "tables[2].destinations[0].timeline[0].for: missing; every step but the last needs `for`",
            "tables[2].destinations[0].timeline[1].status: must not be empty",
            "tables[2].destinations[0].timeline[1].for: must be greater than zero",
            "tables[2].destinations[1].timeline[1].for: missing; with repeat: true every step needs `for`",
        ];
        assert_eq!(problems(yaml), expected);
    }

    #[test]
    fn invalid_error_lists_problems_in_its_message() {
        let err = Scenario::from_yaml("tables: [{name: a}, {name: a}]").unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"invalid scenario: tables[1].name: duplicate table "a" (first at tables[0])"#
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
        match bad.validate() {
            Err(ScenarioError::Invalid(problems)) => assert_eq!(
                problems,
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
                r#"{}: invalid scenario: tables[0].latency: "soon" is not a duration (write e.g. "500ms", "3s", "2m")"#,
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

    #[test]
    fn demo_scenario_parses_and_covers_every_status() {
        let demo = Scenario::from_yaml(include_str!("../../config/demo-scenario.yaml")).unwrap();
        assert_eq!(
            demo.table_names(),
            vec!["orders", "payments", "inventory", "audit-log"]
        );
        let counts: Vec<usize> = demo.tables.iter().map(|t| t.destinations.len()).collect();
        assert_eq!(counts, vec![2, 1, 0, 1]);

        let destinations: Vec<&DestinationSpec> =
            demo.tables.iter().flat_map(|t| &t.destinations).collect();
        assert!(destinations.iter().all(|d| d.repeat));
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
