//! The exporter's configuration file: its format, defaults, ranges and validation.
//!
//! [`parse`] reads the text once with `dke_yaml` into a tree whose every node knows its line (a
//! YAML syntax error is the only thing that stops early), then checks it into a [`Config`]
//! (`check`): each part of the file has a `check_*` function that reports *every* problem it
//! finds, each naming the file, line and field (`config/exporter.yaml:7:
//! targets[0].poll_interval: "5 parsecs" is not a duration`), and unknown keys are reported
//! with their line. Table and role ARNs and AWS's naming rules are checked here too (`names`),
//! and discovery's regular expressions are compiled here ([`Pattern`]), so a running exporter
//! never meets a bad one.
//!
//! Every number has a range, and the ranges are chosen so that nothing downstream can overflow
//! or panic: the scheduler divides a scope's tables by its rate and spreads them with
//! `Duration::from_secs_f64`, the budget spaces calls by `1.04 / rate` (down to 1/64 of the
//! configured rate after throttling), timers add durations to `Instant`s, and a call's attempts
//! together last up to `request_timeout`. With a rate of at least [`MIN_REQUESTS_PER_SECOND`]
//! and durations of at most [`MAX_DURATION`], the longest of these is a few months of seconds,
//! far inside what `Duration` and `Instant` hold.
//!
//! A target names one or more regions and, optionally, an IAM role to assume. Everything the
//! exporter budgets (calls in flight, requests per second) is per *scope*, an (account, region)
//! pair: the role's account, or the default credentials' for a target without a role.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use dke_yaml::{format_duration, parse_duration, Problem};
pub use names::{parse_role_arn, parse_table_arn, ArnError, RoleArn, TableArn};

mod check;
mod names;

/// An identity string (an account ID, region, table name or stream ARN),
/// shared by every structure that names the same thing: the config, the
/// store, the scheduler's slots and queue, the fleet's jobs. Cloning one
/// bumps a count instead of copying the text, which at 10,000 tables is
/// most of the exporter's memory between scrapes. Defined here, the lowest
/// layer, and re-exported by `state`.
pub type Name = std::sync::Arc<str>;

/// How often each table is polled unless the file says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on one API call, retries included, unless the file says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// API calls in flight per (account, region) scope unless the file says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;
/// DynamoDB request rate per (account, region) scope unless the file or the target says
/// otherwise. DynamoDB's control plane throttles an account at 2,500 requests a second per
/// Region, so this is 1 % of it: enough to poll 1,000 tables within the default 60 s interval
/// (at 10, such a scope needed 100 s a cycle), far from crowding anyone else in the account.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 25.0;
/// Kinesis request rate (stream checks) per scope unless the file or the target says otherwise:
/// a quarter of `DescribeStreamSummary`'s quota of 20 calls a second per account.
pub const DEFAULT_KINESIS_MAX_REQUESTS_PER_SECOND: f64 = 5.0;
/// CloudWatch request rate (CDC metrics) per scope unless the file or the target says
/// otherwise: a tenth of `GetMetricData`'s default quota of 50 calls a second per Region.
pub const DEFAULT_CLOUDWATCH_MAX_REQUESTS_PER_SECOND: f64 = 5.0;
/// Highest accepted rate (`max_requests_per_second` and its Kinesis and CloudWatch siblings): far above what DynamoDB's control plane grants,
/// so anything larger is a typo.
pub const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;
/// Lowest accepted `max_requests_per_second`: one call every 100 s. The budget's spacing after
/// throttling (64 times longer) is then at most about 2 hours; a rate near zero would make it
/// overflow a `Duration`.
pub const MIN_REQUESTS_PER_SECOND: f64 = 0.01;
/// How often discovery lists and re-tags tables unless the target says otherwise.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How often CDC metrics are fetched unless the target says otherwise.
pub const DEFAULT_CDC_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest accepted `cdc_metrics.interval`.
pub const MIN_CDC_INTERVAL: Duration = Duration::from_secs(1);
/// Shortest accepted `poll_interval`: timers that fire faster only spin (the tests poll every
/// 200 ms).
pub const MIN_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest accepted `request_timeout`: no AWS call answers sooner.
pub const MIN_REQUEST_TIMEOUT: Duration = Duration::from_millis(100);
/// Shortest accepted `discovery.refresh_interval`: a listing of every table more often than
/// each second is never useful.
pub const MIN_REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often a target's table tags are read (`tags_refresh_interval`) unless it says otherwise.
pub const DEFAULT_TAGS_REFRESH_INTERVAL: Duration = Duration::from_secs(60 * 60);
/// Shortest accepted `tags_refresh_interval`: tags change with deployments, not by the second,
/// and every read is a `ListTagsOfResource` call per table.
pub const MIN_TAGS_REFRESH_INTERVAL: Duration = Duration::from_secs(60);
/// Most `export_tags` keys per target: each is a label on every table's tags series, and a
/// label per tag of a table is the cardinality an allowlist exists to prevent.
pub const MAX_EXPORT_TAGS: usize = 10;
/// SDK attempts per poll unless the file says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Longest accepted duration, for every duration of the file. Timer arithmetic on far-future
/// instants can overflow, and polling less than daily is not monitoring. A call's attempts
/// together last at most this long.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Highest accepted `concurrency`: a semaphore of absurd size is a typo, not a plan (and tokio's
/// semaphore panics above `usize::MAX >> 3`).
pub const MAX_CONCURRENCY: usize = 1000;
/// Highest accepted `max_attempts`: more retries than this only hide an outage.
pub const MAX_ATTEMPTS: u32 = 10;

/// A validated exporter configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Default time between two polls of a table.
    pub poll_interval: Duration,
    /// Default bound on one API call, retries included.
    pub request_timeout: Duration,
    /// Maximum API calls in flight per (account, region) scope.
    pub concurrency: usize,
    /// SDK attempts per poll (1 = no retries).
    pub max_attempts: u32,
    /// Default DynamoDB request rate per (account, region) scope; targets may override it.
    pub max_requests_per_second: f64,
    /// Default Kinesis request rate per scope; targets may override it.
    pub kinesis_max_requests_per_second: f64,
    /// Default CloudWatch request rate per scope; targets may override it.
    pub cloudwatch_max_requests_per_second: f64,
    /// Never empty once validated.
    pub targets: Vec<Target>,
}

/// One or more regions (or an endpoint), the credentials to use there, and the tables polled.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    /// Never empty once validated, without duplicates, in the order written (from `region` or
    /// `regions`).
    pub regions: Vec<String>,
    /// Overrides the SDK's endpoint, e.g. a local simulator.
    pub endpoint_url: Option<String>,
    /// The role to assume; `None` uses the default credentials.
    pub role: Option<Role>,
    /// The target's override if it has one, else the global value. Applies to each of the
    /// target's (account, region) scopes, and budgets its DynamoDB calls (polls, listings, tag
    /// reads).
    pub max_requests_per_second: f64,
    /// Like `max_requests_per_second`, for Kinesis calls (stream checks).
    pub kinesis_max_requests_per_second: f64,
    /// Like `max_requests_per_second`, for CloudWatch calls (CDC metrics).
    pub cloudwatch_max_requests_per_second: f64,
    /// Which tables must stream; `None` when no table is expected to by the target as a whole
    /// (per-table `expect_streaming` still applies). See [`Target::expected`].
    pub expect: Option<Expect>,
    /// Tag keys exported as labels of the tables' tags series, in the order written.
    pub export_tags: Vec<ExportTag>,
    /// Time between two reads of a table's tags (when [`Target::reads_tags`]).
    pub tags_refresh_interval: Duration,
    /// Tables found by listing, in addition to `tables`.
    pub discovery: Option<Discovery>,
    /// `Some` only when enabled.
    pub cdc_metrics: Option<CdcMetrics>,
    /// The target's override if it has one, else the global value.
    pub poll_interval: Duration,
    /// The target's override if it has one, else the global value.
    pub request_timeout: Duration,
    /// Tables listed explicitly; empty only when `discovery` is set. See [`Target::tables_in`]
    /// for the region each applies in.
    pub tables: Vec<TableRef>,
}

/// An IAM role assumed for a target's calls.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    /// As written; a valid role ARN.
    pub arn: String,
    /// From the ARN: the account whose scopes the target's calls count against.
    pub account_id: String,
    pub external_id: Option<String>,
    /// `None` leaves the session name to the exporter.
    pub session_name: Option<String>,
}

/// Which tables a target finds by listing them.
#[derive(Debug, Clone, PartialEq)]
pub struct Discovery {
    /// A table is a candidate if any of these matches its name; all tables if empty.
    pub include: Vec<Pattern>,
    /// A candidate is dropped if any of these matches its name.
    pub exclude: Vec<Pattern>,
    /// Every tag listed must be present on the table with a matching value, in the order
    /// written.
    pub tags: Vec<(String, TagMatch)>,
    /// Time between two listings.
    pub refresh_interval: Duration,
}

/// A target's `expect` block: which of its tables must have a working CDC destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Expect {
    /// Every table of the target, explicit and discovered, must stream. Never `true` together
    /// with `tag`.
    pub streaming: bool,
    /// Tables whose tag of this key says `true` (any case, trimmed) must stream.
    pub tag: Option<String>,
    /// The stream *name* of an expected table's working destination must match this
    /// (unanchored) regex.
    pub stream: Option<Pattern>,
}

/// One tag key exported as a label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportTag {
    /// The tag key as written (and as AWS spells it: keys are case-sensitive).
    pub key: String,
    /// `tag_` and the key with every character outside `[a-zA-Z0-9_]` replaced by `_`
    /// ([`tag_label`]).
    pub label: String,
}

/// The label name of an exported tag key: `tag_` and the key with every character outside
/// `[a-zA-Z0-9_]` replaced by `_`, as kube-state-metrics does with `label_` (so `cost-center`
/// is `tag_cost_center` and `team:name` is `tag_team_name`).
pub fn tag_label(key: &str) -> String {
    let sanitised: String = (key.chars())
        .map(|c| match c.is_ascii_alphanumeric() || c == '_' {
            true => c,
            false => '_',
        })
        .collect();
    format!("tag_{sanitised}")
}

/// CDC metrics for a target's tables (present only when enabled).
#[derive(Debug, Clone, PartialEq)]
pub struct CdcMetrics {
    pub interval: Duration,
}

/// A compiled regex that compares equal by its source text (so [`Config`] can derive
/// `PartialEq`, which reload uses to tell whether anything changed).
#[derive(Debug, Clone)]
pub struct Pattern(regex::Regex);

/// How a discovery tag's value must look.
#[derive(Debug, Clone, PartialEq)]
pub enum TagMatch {
    /// The value is exactly this string.
    Exact(String),
    /// The regex (written `/.../`) matches the *whole* value: it is compiled as `^(?:...)$`.
    Regex(Pattern),
}

/// A table as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Exactly as written (a name or an ARN); sent as `TableName`, which accepts both, so a table
    /// shared from another account is reachable.
    pub identifier: Name,
    /// The bare table name, used as the `table` label.
    pub name: Name,
    /// The account from the ARN; `None` for plain names.
    pub account_id: Option<String>,
    /// The region from the ARN; `None` for plain names, which apply in each of the target's
    /// regions.
    pub region: Option<String>,
    /// The entry's own `expect_streaming`, which overrides the target's `expect`; `None` when
    /// not written (always, for discovered tables).
    pub expect_streaming: Option<bool>,
}

impl TableRef {
    /// The ARN's region, if the table was given as an ARN.
    pub fn region(&self) -> Option<&str> {
        self.region.as_deref()
    }
}

impl Target {
    /// The explicit tables polled in `region`: an ARN only in its own region, a plain name in
    /// every region of the target.
    pub fn tables_in(&self, region: &str) -> impl Iterator<Item = &TableRef> {
        let region = region.to_owned();
        (self.tables.iter()).filter(move |t| t.region().is_none_or(|r| r == region))
    }

    /// Whether `table` is expected to stream, given its `tags` (`None` while they have not been
    /// read): the entry's own `expect_streaming` if written, else `expect.streaming`, else (with
    /// `expect.tag`) whether that tag says `true`, else not. `None` only when the answer waits
    /// for the tags.
    pub fn expected(&self, table: &TableRef, tags: Option<&[(String, String)]>) -> Option<bool> {
        if let Some(own) = table.expect_streaming {
            return Some(own);
        }
        let Some(expect) = &self.expect else {
            return Some(false);
        };
        let Some(key) = expect.tag.as_deref().filter(|_| !expect.streaming) else {
            return Some(expect.streaming);
        };
        let tags = tags?;
        let value = (tags.iter()).find_map(|(k, v)| (k == key).then_some(v.as_str()));
        Some(value.is_some_and(|v| v.trim().eq_ignore_ascii_case("true")))
    }

    /// Whether the target's tables' tags must be read (with `ListTagsOfResource`, every
    /// `tags_refresh_interval`): to export some, or to tell expected tables by one.
    pub fn reads_tags(&self) -> bool {
        !self.export_tags.is_empty() || self.expect.as_ref().is_some_and(|e| e.tag.is_some())
    }
}

impl Pattern {
    /// Compiles `source` (regex crate syntax), unanchored: it matches anywhere in a name unless
    /// it says `^` or `$`.
    pub fn new(source: &str) -> Result<Pattern, regex::Error> {
        regex::Regex::new(source).map(Pattern)
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    /// The source text compiled (for a [`TagMatch::Regex`], with its anchoring group).
    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Pattern) -> bool {
        self.as_str() == other.as_str()
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Wraps a tag regex so that it must match the whole value.
const WHOLE_PREFIX: &str = "^(?:";
const WHOLE_SUFFIX: &str = ")$";
/// For a regex whose `(?x)` comment runs to its end and would swallow `WHOLE_SUFFIX`; in `x`
/// mode the line break is whitespace, which is ignored.
const WHOLE_SUFFIX_AFTER_COMMENT: &str = "\n)$";

impl TagMatch {
    /// Reads a tag value as written in the file: `/.../` is a regex that must match the whole
    /// value, anything else an exact string.
    pub fn new(written: &str) -> Result<TagMatch, regex::Error> {
        let Some(inner) = (written.len() >= 2)
            .then(|| written.strip_prefix('/')?.strip_suffix('/'))
            .flatten()
        else {
            return Ok(TagMatch::Exact(written.to_owned()));
        };
        // Alone first: wrapped, `a)|(b` would compile and match far more than a whole value.
        regex::Regex::new(inner)?;
        Pattern::new(&format!("{WHOLE_PREFIX}{inner}{WHOLE_SUFFIX}"))
            .or_else(|_| {
                Pattern::new(&format!(
                    "{WHOLE_PREFIX}{inner}{WHOLE_SUFFIX_AFTER_COMMENT}"
                ))
            })
            .map(TagMatch::Regex)
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            TagMatch::Exact(exact) => exact == value,
            TagMatch::Regex(pattern) => pattern.is_match(value),
        }
    }
}

impl fmt::Display for TagMatch {
    /// As written: a quoted string, or `/.../`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TagMatch::Exact(exact) => write!(f, "{exact:?}"),
            TagMatch::Regex(pattern) => {
                let source = pattern.as_str();
                let inner = (source.strip_prefix(WHOLE_PREFIX))
                    .and_then(|s| {
                        (s.strip_suffix(WHOLE_SUFFIX_AFTER_COMMENT))
                            .or_else(|| s.strip_suffix(WHOLE_SUFFIX))
                    })
                    .unwrap_or(source);
                write!(f, "/{inner}/")
            }
        }
    }
}

impl Discovery {
    /// Whether a table of this name is a candidate: some `include` matches (or there is none)
    /// and no `exclude` does.
    pub fn matches_name(&self, table: &str) -> bool {
        (self.include.is_empty() || self.include.iter().any(|p| p.is_match(table)))
            && !self.exclude.iter().any(|p| p.is_match(table))
    }

    /// Whether a table with these tags qualifies: every configured tag is present with a
    /// matching value. Vacuously true when no tags are configured.
    pub fn matches_tags(&self, tags: &[(String, String)]) -> bool {
        self.tags
            .iter()
            .all(|(key, wanted)| (tags.iter()).any(|(k, value)| k == key && wanted.matches(value)))
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read. The I/O error is the `source`, not part of this message, so
    /// that a cause chain (`{:#}`) shows it once.
    #[error("cannot read config file {}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Every problem found, in document order; never empty.
    #[error("{}", lines(.0))]
    Invalid(Vec<Problem>),
}

fn lines(problems: &[Problem]) -> String {
    let lines: Vec<String> = problems.iter().map(Problem::to_string).collect();
    lines.join("\n")
}

impl Config {
    /// Explicitly listed tables, counted once per region they apply in: the (target, region,
    /// table) entries polled before any discovery.
    pub fn table_count(&self) -> usize {
        (self.targets.iter())
            .flat_map(|t| t.regions.iter().map(move |r| t.tables_in(r).count()))
            .sum()
    }

    /// A human-readable account of the effective configuration (defaults and overrides
    /// resolved), for `--config.check`. No trailing newline.
    pub fn summary(&self) -> String {
        let mut out = vec![
            format!("poll_interval: {}", format_duration(self.poll_interval)),
            format!("request_timeout: {}", format_duration(self.request_timeout)),
            format!("concurrency: {}", self.concurrency),
            format!("max_attempts: {}", self.max_attempts),
            format!("max_requests_per_second: {}", self.max_requests_per_second),
            format!(
                "kinesis_max_requests_per_second: {}",
                self.kinesis_max_requests_per_second
            ),
            format!(
                "cloudwatch_max_requests_per_second: {}",
                self.cloudwatch_max_requests_per_second
            ),
            format!(
                "targets: {} ({})",
                self.targets.len(),
                plural(self.table_count(), "table")
            ),
        ];
        for target in &self.targets {
            target.summarise(&mut out);
        }
        out.join("\n")
    }
}

impl Target {
    fn summarise(&self, out: &mut Vec<String>) {
        let several = self.regions.len() > 1;
        let tables: Vec<String> = (self.tables.iter())
            .map(|t| {
                let mut notes = Vec::new();
                if let Some(account) = &t.account_id {
                    notes.push(format!("account {account}"));
                }
                if let Some(region) = t.region().filter(|_| several) {
                    notes.push(format!("region {region}"));
                }
                if let Some(expected) = t.expect_streaming {
                    notes.push(format!("expect_streaming: {expected}"));
                }
                match notes.is_empty() {
                    true => t.name.to_string(),
                    false => format!("{} ({})", t.name, notes.join(", ")),
                }
            })
            .collect();
        if several {
            out.push(format!("  - regions: {}", self.regions.join(", ")));
        } else {
            out.push(format!("  - region: {}", self.regions.join(", ")));
        }
        out.push(format!(
            "    endpoint_url: {}",
            self.endpoint_url.as_deref().unwrap_or("(AWS default)")
        ));
        if let Some(role) = &self.role {
            out.push(format!(
                "    role_arn: {} (account {})",
                role.arn, role.account_id
            ));
            if role.external_id.is_some() {
                // Not a secret, but not the summary's to print either.
                out.push("    external_id: (set)".to_owned());
            }
            if let Some(name) = &role.session_name {
                out.push(format!("    session_name: {name}"));
            }
        }
        out.push(format!(
            "    poll_interval: {}",
            format_duration(self.poll_interval)
        ));
        out.push(format!(
            "    request_timeout: {}",
            format_duration(self.request_timeout)
        ));
        out.push(format!(
            "    max_requests_per_second: {}, kinesis: {}, cloudwatch: {}",
            self.max_requests_per_second,
            self.kinesis_max_requests_per_second,
            self.cloudwatch_max_requests_per_second
        ));
        if let Some(discovery) = &self.discovery {
            let list = |patterns: &[Pattern], none: &str| {
                let all: Vec<&str> = patterns.iter().map(Pattern::as_str).collect();
                if all.is_empty() {
                    none.to_owned()
                } else {
                    all.join(", ")
                }
            };
            let tags: Vec<String> = (discovery.tags.iter())
                .map(|(key, wanted)| format!("{key}={wanted}"))
                .collect();
            out.push("    discovery:".to_owned());
            out.push(format!(
                "      include: {}",
                list(&discovery.include, "(every table)")
            ));
            out.push(format!(
                "      exclude: {}",
                list(&discovery.exclude, "(none)")
            ));
            if !tags.is_empty() {
                out.push(format!("      tags: {}", tags.join(", ")));
            }
            out.push(format!(
                "      refresh_interval: {}",
                format_duration(discovery.refresh_interval)
            ));
        }
        if tables.is_empty() {
            out.push("    tables: (discovered only)".to_owned());
        } else {
            out.push(format!("    tables: {}", tables.join(", ")));
        }
        if let Some(cdc) = &self.cdc_metrics {
            out.push(format!(
                "    cdc_metrics: every {}",
                format_duration(cdc.interval)
            ));
        }
        let overridden = self.tables.iter().any(|t| t.expect_streaming == Some(true));
        let expected = match &self.expect {
            Some(Expect {
                streaming: true, ..
            }) => "every table must stream".to_owned(),
            Some(Expect { tag: Some(tag), .. }) => format!("tables tagged {tag}=true must stream"),
            _ if overridden => "tables with expect_streaming: true must stream".to_owned(),
            _ => "(none)".to_owned(),
        };
        let stream = (self.expect.as_ref())
            .and_then(|e| e.stream.as_ref())
            .map(|p| format!(", to a stream whose name matches {p}"))
            .unwrap_or_default();
        out.push(format!("    expect: {expected}{stream}"));
        if !self.export_tags.is_empty() {
            let tags: Vec<String> = (self.export_tags.iter())
                .map(|t| format!("{} as {}", t.key, t.label))
                .collect();
            out.push(format!("    export_tags: {}", tags.join(", ")));
        }
        if self.reads_tags() {
            out.push(format!(
                "    tags_refresh_interval: {}",
                format_duration(self.tags_refresh_interval)
            ));
        }
    }
}

fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("1 {word}")
    } else {
        format!("{n} {word}s")
    }
}

/// Reads and validates the file at `path`; problems name it as given.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses and validates configuration text; `origin` names it in problems.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    let doc = dke_yaml::parse(text, origin).map_err(|p| ConfigError::Invalid(vec![p]))?;
    let mut checker = dke_yaml::Checker::new(origin);
    let config = check::check_config(&mut checker, &dke_yaml::Field::root(&doc));
    checker.finish(config).map_err(ConfigError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::names::*;
    use super::*;
    use proptest::prelude::*;

    const SHIPPED: &str = include_str!("../../config/exporter.yaml");
    const ORIGIN: &str = "exporter.yaml";

    /// The problems `parse` reports for `text`, as displayed.
    fn problems(text: &str) -> Vec<String> {
        match parse(text, ORIGIN) {
            Ok(config) => panic!("expected problems, got {config:?}"),
            Err(ConfigError::Invalid(problems)) => {
                problems.iter().map(Problem::to_string).collect()
            }
            Err(err) => panic!("expected problems, got {err}"),
        }
    }

    fn ok(text: &str) -> Config {
        match parse(text, ORIGIN) {
            Ok(config) => config,
            Err(err) => panic!("expected a config, got:\n{err}"),
        }
    }

    /// A valid document with `extra` lines added to its only target.
    fn target_with(extra: &str) -> String {
        format!("targets:\n  - region: us-east-1\n{extra}    tables: [orders]\n")
    }

    fn table(name: &str) -> TableRef {
        TableRef {
            identifier: name.into(),
            name: name.into(),
            account_id: None,
            region: None,
            expect_streaming: None,
        }
    }

    #[test]
    fn shipped_config_is_valid() {
        let config = ok(SHIPPED);
        assert_eq!(config.poll_interval, Duration::from_secs(60));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.max_requests_per_second, 25.0);
        assert_eq!(config.kinesis_max_requests_per_second, 5.0);
        assert_eq!(config.cloudwatch_max_requests_per_second, 5.0);
        assert_eq!(config.targets.len(), 1);
        let target = &config.targets[0];
        assert_eq!(target.regions, ["us-east-1"]);
        assert_eq!(target.endpoint_url, None);
        assert_eq!(
            target.tables,
            vec![
                table("orders"),
                table("customers"),
                TableRef {
                    identifier: "arn:aws:dynamodb:us-east-1:123456789012:table/payments".into(),
                    name: "payments".into(),
                    account_id: Some("123456789012".to_owned()),
                    region: Some("us-east-1".to_owned()),
                    expect_streaming: None,
                },
            ]
        );
    }

    /// The shipped file with its commented-out target settings switched on; with `regions`,
    /// in place of the target's `region`.
    fn shipped_with_every_setting(regions: bool) -> String {
        let mut text = String::new();
        for line in SHIPPED.lines() {
            let setting = line.strip_prefix("    # ").filter(|rest| {
                let key = rest.trim_start().split(':').next().unwrap_or_default();
                rest.contains(':')
                    && !key.is_empty()
                    && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
            });
            match setting {
                Some(rest) if rest.starts_with("regions:") && !regions => text.push_str(line),
                Some(rest) => text.push_str(&format!("    {rest}")),
                None if regions && line == "  - region: us-east-1" => text.push_str("  -"),
                None => text.push_str(line),
            }
            text.push('\n');
        }
        text
    }

    #[test]
    fn shipped_config_documents_valid_settings() {
        let config = ok(&shipped_with_every_setting(false));
        let target = &config.targets[0];
        assert_eq!(target.regions, ["us-east-1"]);
        assert_eq!(
            target.endpoint_url.as_deref(),
            Some("http://127.0.0.1:8000")
        );
        assert_eq!(target.poll_interval, Duration::from_secs(30));
        assert_eq!(target.request_timeout, Duration::from_secs(5));
        assert_eq!(target.max_requests_per_second, 5.0);
        assert_eq!(target.kinesis_max_requests_per_second, 2.0);
        assert_eq!(target.cloudwatch_max_requests_per_second, 2.0);
        let expect = target.expect.as_ref().expect("expectations");
        assert!(expect.streaming && expect.tag.is_none());
        assert!(expect
            .stream
            .as_ref()
            .is_some_and(|p| p.is_match("cdc-orders")));
        let labels: Vec<&str> = target
            .export_tags
            .iter()
            .map(|t| t.label.as_str())
            .collect();
        assert_eq!(labels, ["tag_team", "tag_owner"]);
        assert_eq!(target.tags_refresh_interval, DEFAULT_TAGS_REFRESH_INTERVAL);
        let role = target.role.as_ref().expect("a role");
        assert_eq!(role.account_id, "222222222222");
        assert_eq!(role.session_name.as_deref(), Some("dke-exporter"));
        assert!(role.external_id.is_some());
        let discovery = target.discovery.as_ref().expect("discovery");
        assert!(discovery.matches_name("orders-eu") && !discovery.matches_name("orders-eu-test"));
        let tags = [("cdc", "true"), ("env", "staging")].map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert!(discovery.matches_tags(&tags));
        assert_eq!(discovery.refresh_interval, DEFAULT_REFRESH_INTERVAL);
        assert_eq!(
            target.cdc_metrics,
            Some(CdcMetrics {
                interval: DEFAULT_CDC_INTERVAL
            })
        );
        assert_eq!(target.tables, ok(SHIPPED).targets[0].tables);

        let config = ok(&shipped_with_every_setting(true));
        assert_eq!(config.targets[0].regions, ["us-east-1", "eu-west-1"]);
        // orders and customers in both regions, payments only in us-east-1.
        assert_eq!(config.table_count(), 5);
    }

    /// The README's example of every key is a valid file.
    #[test]
    fn the_readme_example_is_valid() {
        let readme = include_str!("../../README.md");
        let section = &readme[readme.find("\n## Configuration\n").unwrap()..];
        let start = section.find("```yaml\n").unwrap() + "```yaml\n".len();
        let example = &section[start..start + section[start..].find("```").unwrap()];
        let config = ok(example);
        assert_eq!(
            config.max_requests_per_second,
            DEFAULT_MAX_REQUESTS_PER_SECOND
        );
        let [first, second] = &config.targets[..] else {
            panic!("two targets")
        };
        assert!(first.expect.as_ref().is_some_and(|e| e.streaming));
        assert_eq!(first.tables[2].expect_streaming, Some(false));
        assert_eq!(first.export_tags[1].label, "tag_owner");
        let tag = second.expect.as_ref().and_then(|e| e.tag.as_deref());
        assert_eq!(tag, Some("cdc-required"));
    }

    #[test]
    fn load_reads_the_shipped_file() {
        let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/config/exporter.yaml"));
        assert_eq!(load(path).unwrap(), ok(SHIPPED));
    }

    #[test]
    fn load_reports_an_unreadable_file_with_its_path() {
        let path = Path::new("tests/fixtures/config/no-such-file.yaml");
        let err = load(path).unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot read config file tests/fixtures/config/no-such-file.yaml"
        );
        let ConfigError::Read { path: got, source } = err else {
            panic!("expected a read error");
        };
        assert_eq!(got, path);
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn load_names_the_file_in_problems() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/config/several_problems.yaml"
        ));
        let Err(ConfigError::Invalid(problems)) = load(path) else {
            panic!("expected problems");
        };
        assert_eq!(problems[0].origin, path.display().to_string());
    }

    #[test]
    fn a_minimal_file_takes_every_default() {
        let config = ok("targets:\n  - region: eu-west-1\n    tables:\n      - orders\n");
        assert_eq!(
            config,
            Config {
                poll_interval: DEFAULT_POLL_INTERVAL,
                request_timeout: DEFAULT_REQUEST_TIMEOUT,
                concurrency: 8,
                max_attempts: 3,
                max_requests_per_second: DEFAULT_MAX_REQUESTS_PER_SECOND,
                kinesis_max_requests_per_second: 5.0,
                cloudwatch_max_requests_per_second: 5.0,
                targets: vec![Target {
                    regions: vec!["eu-west-1".to_owned()],
                    endpoint_url: None,
                    role: None,
                    max_requests_per_second: 25.0,
                    kinesis_max_requests_per_second: 5.0,
                    cloudwatch_max_requests_per_second: 5.0,
                    expect: None,
                    export_tags: Vec::new(),
                    tags_refresh_interval: Duration::from_secs(3600),
                    discovery: None,
                    cdc_metrics: None,
                    poll_interval: Duration::from_secs(60),
                    request_timeout: Duration::from_secs(10),
                    tables: vec![table("orders")],
                }],
            }
        );
    }

    #[test]
    fn targets_inherit_globals_unless_they_override() {
        // Globals written after the targets still apply to them.
        let config = ok("\
targets:
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    poll_interval: 1m30s
    request_timeout: 500ms
    tables: [orders]
  - region: eu-west-1
    tables: [orders]
poll_interval: 2m
request_timeout: 5s
concurrency: 2
max_attempts: 1
");
        assert_eq!(config.poll_interval, Duration::from_secs(120));
        assert_eq!(config.request_timeout, Duration::from_secs(5));
        assert_eq!(config.concurrency, 2);
        assert_eq!(config.max_attempts, 1);
        let first = &config.targets[0];
        assert_eq!(first.endpoint_url.as_deref(), Some("http://127.0.0.1:8000"));
        assert_eq!(first.poll_interval, Duration::from_secs(90));
        assert_eq!(first.request_timeout, Duration::from_millis(500));
        let second = &config.targets[1];
        assert_eq!(second.endpoint_url, None);
        assert_eq!(second.poll_interval, Duration::from_secs(120));
        assert_eq!(second.request_timeout, Duration::from_secs(5));
        assert_eq!(config.table_count(), 2);
    }

    #[test]
    fn limits_are_inclusive() {
        let config = ok(&format!(
            "concurrency: 1000\nmax_attempts: 10\npoll_interval: 24h\nrequest_timeout: 100ms\n{}",
            target_with("    max_requests_per_second: 0.01\n")
        ));
        assert_eq!(config.concurrency, 1000);
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.poll_interval, MAX_DURATION);
        assert_eq!(config.request_timeout, MIN_REQUEST_TIMEOUT);
        assert_eq!(
            config.targets[0].max_requests_per_second,
            MIN_REQUESTS_PER_SECOND
        );
    }

    /// Each number of the file at both ends of its range and just outside, with the message.
    #[test]
    fn every_number_has_a_range() {
        let global = |line: &str| format!("{line}\n{}", target_with(""));
        let target = |line: &str| target_with(&format!("    {line}\n"));
        let discovery = |line: &str| target_with(&format!("    discovery: {{{line}}}\n"));
        let cdc = |line: &str| target_with(&format!("    cdc_metrics: {{{line}}}\n"));
        type Place = fn(&str) -> String;
        let cases: &[(&str, Place, &str, &str, &str, &str)] = &[
            // key, where, lowest, below it, highest, above it
            ("poll_interval", global, "100ms", "99ms", "24h", "24h1ms"),
            ("poll_interval", target, "100ms", "99ms", "24h", "1d1ms"),
            ("request_timeout", global, "100ms", "99ms", "24h", "25h"),
            ("request_timeout", target, "100ms", "99ms", "24h", "25h"),
            ("concurrency", global, "1", "0", "1000", "1001"),
            ("max_attempts", global, "1", "0", "10", "11"),
            (
                "max_requests_per_second",
                global,
                "0.01",
                "0.0099",
                "10000",
                "10000.01",
            ),
            (
                "max_requests_per_second",
                target,
                "1e-2",
                "1e-20",
                "1.0e+4",
                "1e400",
            ),
            (
                "refresh_interval",
                discovery,
                "1s",
                "999ms",
                "24h",
                "24h1ms",
            ),
            ("interval", cdc, "1s", "999ms", "24h", "25h"),
            (
                "kinesis_max_requests_per_second",
                global,
                "0.01",
                "0.0099",
                "10000",
                "10000.01",
            ),
            (
                "kinesis_max_requests_per_second",
                target,
                "0.01",
                "0.0099",
                "10000",
                "10000.01",
            ),
            (
                "cloudwatch_max_requests_per_second",
                global,
                "0.01",
                "0.0099",
                "10000",
                "10000.01",
            ),
            (
                "cloudwatch_max_requests_per_second",
                target,
                "0.01",
                "0.0099",
                "10000",
                "10000.01",
            ),
            (
                "tags_refresh_interval",
                target,
                "1m",
                "59s999ms",
                "24h",
                "24h1ms",
            ),
        ];
        for &(key, place, lowest, below, highest, above) in cases {
            for value in [lowest, highest] {
                let text = place(&format!("{key}: {value}"));
                assert!(parse(&text, ORIGIN).is_ok(), "{text}");
            }
            let prefix = match place(&format!("{key}: x")).starts_with(key) {
                true => String::new(),
                false if place == discovery => "targets[0].discovery.".to_owned(),
                false if place == cdc => "targets[0].cdc_metrics.".to_owned(),
                false => "targets[0].".to_owned(),
            };
            for (value, limit, side) in [(below, lowest, "least"), (above, highest, "most")] {
                let text = place(&format!("{key}: {value}"));
                let limit = match (key, limit) {
                    ("max_requests_per_second", "1e-2") => "0.01",
                    ("max_requests_per_second", "1.0e+4") => "10000",
                    _ => limit,
                };
                let got = problems(&text);
                assert_eq!(got.len(), 1, "{text}");
                let want = format!("{prefix}{key}: must be at {side} {limit}");
                assert!(got[0].ends_with(&want), "{got:?} vs {want}");
            }
        }
    }

    #[test]
    fn expectations_follow_the_rules() {
        let target = |expect: &str| {
            let text = format!(
                "targets:\n  - region: us-east-1\n    expect: {expect}\n    tables: [orders, {{name: scratch, expect_streaming: false}}, {{name: must, expect_streaming: true}}]\n"
            );
            ok(&text).targets.remove(0)
        };
        let tags = |value: &str| vec![("cdc-required".to_owned(), value.to_owned())];
        let (yes, no, untagged) = (tags(" True "), tags("yes"), Vec::new());
        let discovered = table("found");
        let cases: [(&str, [Option<bool>; 4]); 5] = [
            // expect, then for orders, scratch, must and a discovered table without tags read
            ("{}", [Some(false), Some(false), Some(true), Some(false)]),
            (
                "{streaming: false}",
                [Some(false), Some(false), Some(true), Some(false)],
            ),
            (
                "{streaming: true}",
                [Some(true), Some(false), Some(true), Some(true)],
            ),
            ("{tag: cdc-required}", [None, Some(false), Some(true), None]),
            (
                "{streaming: false, tag: cdc-required, stream: x}",
                [None, Some(false), Some(true), None],
            ),
        ];
        for (expect, want) in cases {
            let t = target(expect);
            let got = [
                t.expected(&t.tables[0], None),
                t.expected(&t.tables[1], None),
                t.expected(&t.tables[2], None),
                t.expected(&discovered, None),
            ];
            assert_eq!(got, want, "{expect}");
            // Once tags are read, nothing is unknown.
            let by_tag = t.expect.as_ref().is_some_and(|e| e.tag.is_some());
            for table in [&t.tables[0], &discovered] {
                assert_eq!(
                    t.expected(table, Some(&yes)),
                    Some(by_tag || want[0] == Some(true))
                );
                assert_eq!(t.expected(table, Some(&no)), Some(want[0] == Some(true)));
                assert_eq!(
                    t.expected(table, Some(&untagged)),
                    Some(want[0] == Some(true))
                );
            }
            assert_eq!(
                t.expected(&t.tables[1], Some(&yes)),
                Some(false),
                "{expect}"
            );
            assert_eq!(t.reads_tags(), by_tag, "{expect}");
        }
        // Tag keys are case-sensitive; values are compared trimmed and in any case.
        let t = target("{tag: cdc-required}");
        let other = vec![("CDC-required".to_owned(), "true".to_owned())];
        assert_eq!(t.expected(&t.tables[0], Some(&other)), Some(false));
        for value in ["true", "TRUE", "\ttrue\n"] {
            assert_eq!(
                t.expected(&t.tables[0], Some(&tags(value))),
                Some(true),
                "{value:?}"
            );
        }
        for value in ["", "1", "truee", "t rue"] {
            assert_eq!(
                t.expected(&t.tables[0], Some(&tags(value))),
                Some(false),
                "{value:?}"
            );
        }
        assert_eq!(target("{}").expect, None);
        assert_eq!(target("{streaming: false}").expect, None);
        let stream_only = target("{stream: ^cdc-}").expect.unwrap();
        assert_eq!((stream_only.streaming, stream_only.tag), (false, None));
        assert!(stream_only.stream.unwrap().is_match("cdc-orders"));
    }

    #[test]
    fn tags_are_read_only_to_export_or_expect_by_them() {
        let t = ok(&target_with("    export_tags: [team]\n"))
            .targets
            .remove(0);
        assert!(t.reads_tags());
        assert_eq!(t.tags_refresh_interval, DEFAULT_TAGS_REFRESH_INTERVAL);
        let t = ok(&target_with("    tags_refresh_interval: 5m\n"))
            .targets
            .remove(0);
        assert!(!t.reads_tags());
        assert_eq!(t.tags_refresh_interval, Duration::from_secs(300));
        let t = ok(&target_with("    export_tags: []\n")).targets.remove(0);
        assert_eq!((t.reads_tags(), t.export_tags), (false, Vec::new()));
    }

    #[test]
    fn tag_labels_are_sanitised_as_kube_state_metrics_does() {
        let cases = [
            ("team", "tag_team"),
            ("Team", "tag_Team"),
            ("cost-center", "tag_cost_center"),
            ("cost center", "tag_cost_center"),
            (
                "aws:cloudformation:stack-name",
                "tag_aws_cloudformation_stack_name",
            ),
            ("a.b/c=d+e@f_g", "tag_a_b_c_d_e_f_g"),
            ("équipe", "tag__quipe"),
            ("2fa", "tag_2fa"),
        ];
        for (key, label) in cases {
            assert_eq!(tag_label(key), label, "{key}");
        }
        let t = ok(&target_with("    export_tags: [Team, team, owner]\n"))
            .targets
            .remove(0);
        let labels: Vec<&str> = t.export_tags.iter().map(|t| t.label.as_str()).collect();
        assert_eq!(labels, ["tag_Team", "tag_team", "tag_owner"]);
        let ten: Vec<String> = (0..10).map(|i| format!("k{i}")).collect();
        let t = ok(&target_with(&format!(
            "    export_tags: [{}]\n",
            ten.join(", ")
        )));
        assert_eq!(t.targets[0].export_tags.len(), MAX_EXPORT_TAGS);
    }

    #[test]
    fn rates_per_service_default_and_inherit() {
        let config = ok("targets:\n  - region: us-east-1\n    tables: [orders]\n");
        let t = &config.targets[0];
        let rates = (
            t.max_requests_per_second,
            t.kinesis_max_requests_per_second,
            t.cloudwatch_max_requests_per_second,
        );
        assert_eq!(rates, (25.0, 5.0, 5.0));
        let config = ok(&format!(
            "kinesis_max_requests_per_second: 2\ncloudwatch_max_requests_per_second: 1.5\n{}",
            target_with("    kinesis_max_requests_per_second: 10\n")
        ));
        let t = &config.targets[0];
        assert_eq!(
            (
                t.kinesis_max_requests_per_second,
                t.cloudwatch_max_requests_per_second
            ),
            (10.0, 1.5)
        );
        assert_eq!(config.kinesis_max_requests_per_second, 2.0);
    }

    #[test]
    fn summary_shows_the_effective_values() {
        let config = ok("\
poll_interval: 90s
targets:
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    request_timeout: 2500ms
    tables:
      - orders
      - arn:aws:dynamodb:us-east-1:123456789012:table/payments
  - region: eu-west-1
    tables: [audit]
  - regions: [eu-west-1, eu-central-1]
    kinesis_max_requests_per_second: 2
    expect: {tag: cdc-required, stream: ^cdc-}
    export_tags: [team, cost-center]
    tables:
      - name: arn:aws:dynamodb:eu-west-1:123456789012:table/ledger
        expect_streaming: false
  - region: ap-south-1
    cloudwatch_max_requests_per_second: 0.5
    tables: [{name: events, expect_streaming: true}, logs]
");
        assert_eq!(
            config.summary(),
            "\
poll_interval: 1m30s
request_timeout: 10s
concurrency: 8
max_attempts: 3
max_requests_per_second: 25
kinesis_max_requests_per_second: 5
cloudwatch_max_requests_per_second: 5
targets: 4 (6 tables)
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    poll_interval: 1m30s
    request_timeout: 2s500ms
    max_requests_per_second: 25, kinesis: 5, cloudwatch: 5
    tables: orders, payments (account 123456789012)
    expect: (none)
  - region: eu-west-1
    endpoint_url: (AWS default)
    poll_interval: 1m30s
    request_timeout: 10s
    max_requests_per_second: 25, kinesis: 5, cloudwatch: 5
    tables: audit
    expect: (none)
  - regions: eu-west-1, eu-central-1
    endpoint_url: (AWS default)
    poll_interval: 1m30s
    request_timeout: 10s
    max_requests_per_second: 25, kinesis: 2, cloudwatch: 5
    tables: ledger (account 123456789012, region eu-west-1, expect_streaming: false)
    expect: tables tagged cdc-required=true must stream, to a stream whose name matches ^cdc-
    export_tags: team as tag_team, cost-center as tag_cost_center
    tags_refresh_interval: 1h
  - region: ap-south-1
    endpoint_url: (AWS default)
    poll_interval: 1m30s
    request_timeout: 10s
    max_requests_per_second: 25, kinesis: 5, cloudwatch: 0.5
    tables: events (expect_streaming: true), logs
    expect: tables with expect_streaming: true must stream"
        );
    }

    #[test]
    fn summary_counts_one_table_in_the_singular() {
        let summary = ok(&target_with("")).summary();
        assert!(summary.contains("\ntargets: 1 (1 table)\n"), "{summary}");
    }

    #[test]
    fn duration_problems() {
        assert_eq!(
            problems(&format!("poll_interval: 5\n{}", target_with(""))),
            ["exporter.yaml:1: poll_interval: expected a duration such as \"30s\", found 5"]
        );
        assert_eq!(
            problems(&format!("request_timeout:\n{}", target_with(""))),
            ["exporter.yaml:1: request_timeout: expected a duration such as \"30s\", found an empty value"]
        );
        assert_eq!(
            problems(&format!("request_timeout: 0s\n{}", target_with(""))),
            ["exporter.yaml:1: request_timeout: must be greater than zero"]
        );
        assert_eq!(
            problems(&target_with("    request_timeout: 2d\n")),
            ["exporter.yaml:3: targets[0].request_timeout: must be at most 24h"]
        );
    }

    #[test]
    fn count_problems() {
        let cases = [
            ("concurrency: 0", "concurrency: must be at least 1"),
            ("concurrency: -3", "concurrency: must be at least 1"),
            ("concurrency: 1001", "concurrency: must be at most 1000"),
            (
                "concurrency: eight",
                "concurrency: expected a positive integer, found \"eight\"",
            ),
            (
                "concurrency: 2.5",
                "concurrency: expected a positive integer, found 2.5",
            ),
            (
                "concurrency: \"8\"",
                "concurrency: expected a positive integer, found \"8\"",
            ),
            ("max_attempts: 0", "max_attempts: must be at least 1"),
            ("max_attempts: 11", "max_attempts: must be at most 10"),
            (
                "max_attempts: [3]",
                "max_attempts: expected a positive integer, found a list",
            ),
            (
                "max_attempts: true",
                "max_attempts: expected a positive integer, found true",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                problems(&format!("{line}\n{}", target_with(""))),
                [format!("exporter.yaml:1: {expected}")],
                "{line}"
            );
        }
    }

    #[test]
    fn targets_problems() {
        assert_eq!(
            problems("concurrency: 4\n"),
            ["exporter.yaml: targets: must list at least one target"]
        );
        assert_eq!(
            problems(""),
            ["exporter.yaml: targets: must list at least one target"]
        );
        assert_eq!(
            problems("# nothing yet\n"),
            ["exporter.yaml: targets: must list at least one target"]
        );
        assert_eq!(
            problems("concurrency: 4\ntargets: []\n"),
            ["exporter.yaml:2: targets: must list at least one target"]
        );
        assert_eq!(
            problems("targets:\n"),
            ["exporter.yaml:1: targets: must list at least one target"]
        );
        assert_eq!(
            problems("targets: us-east-1\n"),
            ["exporter.yaml:1: targets: expected a list, found \"us-east-1\""]
        );
        assert_eq!(
            problems("targets:\n  - us-east-1\n"),
            ["exporter.yaml:2: targets[0]: expected a mapping, found \"us-east-1\""]
        );
        assert_eq!(
            problems("targets:\n  -\n  -\n"),
            // An empty item is on the line of its dash.
            [
                "exporter.yaml:2: targets[0]: expected a mapping, found an empty value",
                "exporter.yaml:3: targets[1]: expected a mapping, found an empty value",
            ]
        );
    }

    #[test]
    fn region_problems() {
        assert_eq!(
            problems("targets:\n  - tables: [orders]\n"),
            ["exporter.yaml:2: targets[0].region: is required"]
        );
        assert_eq!(
            problems("targets:\n  - region:\n    tables: [orders]\n"),
            ["exporter.yaml:2: targets[0].region: is required"]
        );
        assert_eq!(
            problems("targets:\n  - region: US East\n    tables: [orders]\n"),
            ["exporter.yaml:2: targets[0].region: \"US East\" is not a valid AWS region name"]
        );
        assert_eq!(
            problems("targets:\n  - region: \"\"\n    tables: [orders]\n"),
            ["exporter.yaml:2: targets[0].region: must not be empty"]
        );
        assert_eq!(
            problems(&format!(
                "targets:\n  - region: {}\n    tables: [orders]\n",
                "a".repeat(33)
            )),
            [format!(
                "exporter.yaml:2: targets[0].region: \"{}\" is not a valid AWS region name",
                "a".repeat(33)
            )]
        );
        assert_eq!(
            problems("targets:\n  - region: 5\n    tables: [orders]\n"),
            ["exporter.yaml:2: targets[0].region: expected an AWS region name, found 5"]
        );
    }

    #[test]
    fn endpoint_problems() {
        for url in [
            "ftp://x",
            "http://",
            "http://:80",
            "http://x:abc",
            "http://x:99999",
            "http://x:+80",
            "http://user@x",
            "127.0.0.1:8000",
            "http://a b",
            "",
        ] {
            assert_eq!(
                problems(&target_with(&format!("    endpoint_url: {url:?}\n"))),
                [format!(
                    "exporter.yaml:3: targets[0].endpoint_url: {url:?} is not an http or https URL"
                )],
                "{url}"
            );
        }
        assert_eq!(
            problems(&target_with("    endpoint_url: 8000\n")),
            ["exporter.yaml:3: targets[0].endpoint_url: expected an http or https URL, found 8000"]
        );
        for url in [
            "http://127.0.0.1:8000",
            "https://dynamodb.us-east-1.example.internal",
            "http://[::1]:8000/",
            "HTTP://localhost",
        ] {
            let config = ok(&target_with(&format!("    endpoint_url: {url}\n")));
            assert_eq!(config.targets[0].endpoint_url.as_deref(), Some(url));
        }
    }

    #[test]
    fn tables_problems() {
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n"),
            ["exporter.yaml:2: targets[0].tables: must list at least one table"]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    tables: []\n"),
            ["exporter.yaml:3: targets[0].tables: must list at least one table"]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    tables:\n"),
            ["exporter.yaml:3: targets[0].tables: must list at least one table"]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    tables: orders\n"),
            ["exporter.yaml:3: targets[0].tables: expected a list, found \"orders\""]
        );
    }

    #[test]
    fn the_document_must_be_a_mapping() {
        assert_eq!(
            problems("- region: us-east-1\n"),
            ["exporter.yaml: (document): expected a mapping, found a list"]
        );
        assert_eq!(
            problems("just text\n"),
            ["exporter.yaml: (document): expected a mapping, found \"just text\""]
        );
    }

    #[test]
    fn yaml_syntax_errors_stop_early_with_their_line() {
        assert_eq!(
            problems("poll_interval: 30s\n  concurrency: 8\ntargets: 5\n"),
            ["exporter.yaml:2: (document): mapping values are not allowed in this context"]
        );
        assert_eq!(
            problems("targets: [\n  {region: us-east-1\nconcurrency: 8\n"),
            ["exporter.yaml:3: (document): while parsing a flow mapping, did not find expected ',' or '}'"]
        );
        assert_eq!(
            problems("poll_interval: 30s\npoll_interval: 60s\n"),
            ["exporter.yaml:2: (document): duplicate key \"poll_interval\" (first at line 1)"]
        );
        assert_eq!(
            problems("a: 1\n---\nb: 2\n"),
            ["exporter.yaml:2: (document): a second document: the file holds one"]
        );
    }

    /// Every bad config under `tests/fixtures/config/bad/` reports exactly the problems in its
    /// `.expected` file, and every good one parses (blackbox_exporter's `testdata` style).
    #[test]
    fn fixtures_report_what_they_expect() {
        let dir = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/config"
        ));
        let files = |sub: &str| {
            let mut paths: Vec<PathBuf> = (std::fs::read_dir(dir.join(sub)).unwrap())
                .map(|entry| entry.unwrap().path())
                .filter(|path| path.extension().is_some_and(|e| e == "yaml"))
                .collect();
            paths.sort();
            paths
        };
        let read = |path: &Path| std::fs::read_to_string(path).unwrap();
        let bad = files("bad");
        assert!(bad.len() >= 8, "{bad:?}");
        for path in bad {
            let name = path.file_name().unwrap().to_str().unwrap();
            let err = parse(&read(&path), name).unwrap_err();
            assert_eq!(
                format!("{err}\n"),
                read(&path.with_extension("expected")),
                "{name}"
            );
        }
        let good = files("good");
        assert!(good.len() >= 3, "{good:?}");
        for path in good {
            let name = path.file_name().unwrap().to_str().unwrap();
            parse(&read(&path), name).unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        let same_names = ok(&read(&dir.join("good/same_name_in_other_accounts.yaml")));
        assert_eq!(same_names.table_count(), 6);
        let expectations = ok(&read(&dir.join("good/expectations.yaml")));
        let [first, second, third] = &expectations.targets[..] else {
            panic!("three targets")
        };
        let overrides: Vec<Option<bool>> =
            first.tables.iter().map(|t| t.expect_streaming).collect();
        assert_eq!(overrides, [None, Some(false), Some(true)]);
        assert_eq!(first.export_tags.len(), 4);
        assert_eq!(
            first.export_tags[3].label,
            "tag_aws_cloudformation_stack_name"
        );
        assert_eq!(second.kinesis_max_requests_per_second, 20.0);
        assert_eq!(second.cloudwatch_max_requests_per_second, 0.5);
        assert_eq!(second.tags_refresh_interval, MIN_TAGS_REFRESH_INTERVAL);
        assert!(second.reads_tags() && !third.reads_tags());
        assert_eq!(third.tables[0].name.as_ref(), "events");
        assert_eq!(third.tags_refresh_interval, MAX_DURATION);
    }

    #[test]
    fn all_problems_are_reported_in_document_order() {
        let text = include_str!("../../tests/fixtures/config/several_problems.yaml");
        let expected = include_str!("../../tests/fixtures/config/several_problems.expected");
        let err = parse(text, "config/exporter.yaml").unwrap_err();
        assert_eq!(format!("{err}\n"), expected);
    }

    #[test]
    fn flow_style_problems_have_their_line() {
        let text = "\
concurrency: 0
targets: [{region: US East, tables: [orders]}]
max_attempts: 0
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:1: concurrency: must be at least 1",
                "exporter.yaml:2: targets[0].region: \"US East\" is not a valid AWS region name",
                "exporter.yaml:3: max_attempts: must be at least 1",
            ]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    tables: [orders, ab]\n"),
            [format!(
                "exporter.yaml:3: targets[0].tables[1]: \"ab\" {TABLE_NAME_RULE}"
            )]
        );
        assert_eq!(
            problems("targets: [{region: \"US East\", tables: [a1b, x]}]\n"),
            [
                "exporter.yaml:1: targets[0].region: \"US East\" is not a valid AWS region name",
                &format!("exporter.yaml:1: targets[0].tables[1]: \"x\" {TABLE_NAME_RULE}"),
            ]
        );
        // On one line, problems keep the order of the text, not the order keys were asked for.
        assert_eq!(
            problems(
                "{concurrency: 0, poll_interval: 0s, targets: [{tables: [], region: us-east-1}]}"
            ),
            [
                "exporter.yaml:1: concurrency: must be at least 1",
                "exporter.yaml:1: poll_interval: must be greater than zero",
                "exporter.yaml:1: targets[0].tables: must list at least one table",
            ]
        );
        // A flow mapping target that lacks a key is reported on the line where the mapping opens.
        assert_eq!(
            problems("targets:\n  - {\n    region: us-east-1\n    }\n"),
            ["exporter.yaml:2: targets[0].tables: must list at least one table"]
        );
    }

    #[test]
    fn problem_display() {
        let mut problem = Problem {
            origin: "a.yaml".to_owned(),
            line: Some(3),
            path: "targets[0]".to_owned(),
            message: "broken".to_owned(),
        };
        assert_eq!(problem.to_string(), "a.yaml:3: targets[0]: broken");
        problem.line = None;
        assert_eq!(problem.to_string(), "a.yaml: targets[0]: broken");
        let err = ConfigError::Invalid(vec![problem.clone(), problem]);
        assert_eq!(
            err.to_string(),
            "a.yaml: targets[0]: broken\na.yaml: targets[0]: broken"
        );
    }

    /// A valid config for mutation: block style, comments, both table forms.
    const VALID: &str = include_str!("../../tests/fixtures/config/good/mutation_base.yaml");

    fn mutated(base: &'static str) -> impl Strategy<Value = String> {
        let op = (
            0usize..4,
            any::<prop::sample::Index>(),
            "[-:#\\[\\]{}'\" \n\ta-z0-9&*!|>.]{0,6}",
        );
        prop::collection::vec(op, 1..6).prop_map(|ops| {
            let mut text = base.to_owned();
            for (kind, at, insert) in ops {
                let mut at = at.index(text.len() + 1);
                while !text.is_char_boundary(at) {
                    at -= 1;
                }
                let end = (at + insert.len() + 1).min(text.len());
                let end = (end..=text.len())
                    .find(|&e| text.is_char_boundary(e))
                    .unwrap_or(text.len());
                match kind {
                    0 => text.insert_str(at, &insert),
                    1 => text.replace_range(at..end, ""),
                    2 => text.replace_range(at..end, &insert),
                    _ => {
                        let start = text[..at].rfind('\n').map_or(0, |i| i + 1);
                        let stop = text[at..].find('\n').map_or(text.len(), |i| at + i + 1);
                        let line = text[start..stop].to_owned();
                        text.insert_str(start, &line);
                    }
                }
            }
            text
        })
    }

    /// What every outcome of `parse` must satisfy, whatever the input.
    fn check_outcome(text: &str) {
        match parse(text, ORIGIN) {
            Ok(config) => {
                assert!(!config.targets.is_empty());
                assert!((1..=MAX_CONCURRENCY).contains(&config.concurrency));
                assert!((1..=MAX_ATTEMPTS).contains(&config.max_attempts));
                for target in &config.targets {
                    assert!(!target.regions.is_empty());
                    assert!(target.regions.iter().all(|r| is_aws_name(r)));
                    assert!(target.discovery.is_some() || !target.tables.is_empty());
                    assert!(target.max_requests_per_second > 0.0);
                    assert!(target.kinesis_max_requests_per_second > 0.0);
                    assert!(target.cloudwatch_max_requests_per_second > 0.0);
                    assert!(target.export_tags.len() <= MAX_EXPORT_TAGS);
                    assert!(target.tags_refresh_interval >= MIN_TAGS_REFRESH_INTERVAL);
                    assert!(!target
                        .expect
                        .as_ref()
                        .is_some_and(|e| e.streaming && e.tag.is_some()));
                    assert!(!target.poll_interval.is_zero());
                    assert!(!target.request_timeout.is_zero());
                    assert!(target.tables.iter().all(|t| is_table_name(&t.name)));
                }
            }
            Err(ConfigError::Invalid(problems)) => {
                assert!(!problems.is_empty());
                let last_line = text.split('\n').count();
                let lines: Vec<usize> = problems.iter().filter_map(|p| p.line).collect();
                assert!(
                    lines.iter().all(|l| (1..=last_line).contains(l)),
                    "{lines:?}"
                );
                assert!(lines.windows(2).all(|w| w[0] <= w[1]), "{lines:?}");
                assert!(problems.iter().all(|p| p.origin == ORIGIN));
            }
            Err(err) => panic!("unexpected {err}"),
        }
    }

    /// Every new key at once, in both styles.
    const FULL: &str = include_str!("../../tests/fixtures/config/good/every_key.yaml");

    fn pattern(source: &str) -> Pattern {
        Pattern::new(source).unwrap()
    }

    #[test]
    fn a_file_with_every_new_key_parses_to_the_expected_config() {
        let config = ok(FULL);
        let expected = Config {
            poll_interval: DEFAULT_POLL_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_requests_per_second: 2.5,
            kinesis_max_requests_per_second: 4.0,
            cloudwatch_max_requests_per_second: 3.0,
            targets: vec![
                Target {
                    regions: vec!["us-east-1".to_owned(), "eu-west-1".to_owned()],
                    endpoint_url: None,
                    role: Some(Role {
                        arn: "arn:aws:iam::222222222222:role/ops/dynamodb-kinesis-exporter"
                            .to_owned(),
                        account_id: "222222222222".to_owned(),
                        external_id: Some("12345".to_owned()),
                        session_name: Some("dke@prod".to_owned()),
                    }),
                    max_requests_per_second: 5.0,
                    kinesis_max_requests_per_second: 2.0,
                    cloudwatch_max_requests_per_second: 1.0,
                    expect: Some(Expect {
                        streaming: true,
                        tag: None,
                        stream: Some(pattern("^cdc-")),
                    }),
                    export_tags: vec![
                        ExportTag {
                            key: "team".to_owned(),
                            label: "tag_team".to_owned(),
                        },
                        ExportTag {
                            key: "cost center".to_owned(),
                            label: "tag_cost_center".to_owned(),
                        },
                    ],
                    tags_refresh_interval: Duration::from_secs(1800),
                    discovery: Some(Discovery {
                        include: vec![pattern("^orders-")],
                        exclude: vec![pattern("-test$")],
                        tags: vec![
                            ("cdc".to_owned(), TagMatch::Exact("true".to_owned())),
                            ("env".to_owned(), TagMatch::new("/prod|staging/").unwrap()),
                        ],
                        refresh_interval: Duration::from_secs(600),
                    }),
                    cdc_metrics: Some(CdcMetrics {
                        interval: Duration::from_secs(60),
                    }),
                    poll_interval: DEFAULT_POLL_INTERVAL,
                    request_timeout: DEFAULT_REQUEST_TIMEOUT,
                    tables: vec![
                        table("legacy-table"),
                        TableRef {
                            identifier: "arn:aws:dynamodb:eu-west-1:333333333333:table/shared"
                                .into(),
                            name: "shared".into(),
                            account_id: Some("333333333333".to_owned()),
                            region: Some("eu-west-1".to_owned()),
                            expect_streaming: Some(false),
                        },
                    ],
                },
                Target {
                    regions: vec!["us-east-1".to_owned()],
                    endpoint_url: None,
                    role: None,
                    // The global value, not the default.
                    max_requests_per_second: 2.5,
                    kinesis_max_requests_per_second: 4.0,
                    cloudwatch_max_requests_per_second: 3.0,
                    expect: Some(Expect {
                        streaming: false,
                        tag: Some("cdc-required".to_owned()),
                        stream: None,
                    }),
                    export_tags: Vec::new(),
                    tags_refresh_interval: DEFAULT_TAGS_REFRESH_INTERVAL,
                    discovery: Some(Discovery {
                        include: Vec::new(),
                        exclude: Vec::new(),
                        tags: Vec::new(),
                        refresh_interval: DEFAULT_REFRESH_INTERVAL,
                    }),
                    cdc_metrics: None,
                    poll_interval: DEFAULT_POLL_INTERVAL,
                    request_timeout: DEFAULT_REQUEST_TIMEOUT,
                    tables: Vec::new(),
                },
            ],
        };
        assert_eq!(config, expected);
        // legacy-table in both regions, shared only in eu-west-1.
        assert_eq!(config.table_count(), 3);
        let names = |region| -> Vec<&str> {
            (config.targets[0].tables_in(region))
                .map(|t| &*t.name)
                .collect()
        };
        assert_eq!(names("us-east-1"), ["legacy-table"]);
        assert_eq!(names("eu-west-1"), ["legacy-table", "shared"]);
        assert_eq!(names("ap-south-1"), ["legacy-table"]);
        assert_eq!(config.targets[0].tables[1].region(), Some("eu-west-1"));
        assert_eq!(config.targets[0].tables[0].region(), None);
    }

    #[test]
    fn summary_shows_the_new_settings() {
        assert_eq!(
            ok(FULL).summary(),
            "\
poll_interval: 1m
request_timeout: 10s
concurrency: 8
max_attempts: 3
max_requests_per_second: 2.5
kinesis_max_requests_per_second: 4
cloudwatch_max_requests_per_second: 3
targets: 2 (3 tables)
  - regions: us-east-1, eu-west-1
    endpoint_url: (AWS default)
    role_arn: arn:aws:iam::222222222222:role/ops/dynamodb-kinesis-exporter (account 222222222222)
    external_id: (set)
    session_name: dke@prod
    poll_interval: 1m
    request_timeout: 10s
    max_requests_per_second: 5, kinesis: 2, cloudwatch: 1
    discovery:
      include: ^orders-
      exclude: -test$
      tags: cdc=\"true\", env=/prod|staging/
      refresh_interval: 10m
    tables: legacy-table, shared (account 333333333333, region eu-west-1, expect_streaming: false)
    cdc_metrics: every 1m
    expect: every table must stream, to a stream whose name matches ^cdc-
    export_tags: team as tag_team, cost center as tag_cost_center
    tags_refresh_interval: 30m
  - region: us-east-1
    endpoint_url: (AWS default)
    poll_interval: 1m
    request_timeout: 10s
    max_requests_per_second: 2.5, kinesis: 4, cloudwatch: 3
    discovery:
      include: (every table)
      exclude: (none)
      refresh_interval: 5m
    tables: (discovered only)
    expect: tables tagged cdc-required=true must stream
    tags_refresh_interval: 1h"
        );
    }

    #[test]
    fn regions_are_read_in_block_and_flow_style() {
        let block = ok("\
targets:
  - regions:
      - us-east-1
      - eu-west-1
    tables: [orders]
");
        let flow = ok("targets: [{regions: [us-east-1, eu-west-1], tables: [orders]}]\n");
        assert_eq!(block, flow);
        assert_eq!(block.targets[0].regions, ["us-east-1", "eu-west-1"]);
        assert_eq!(block.table_count(), 2);
        // One region in a list is a single-region target.
        let one = ok("targets:\n  - regions: [eu-west-1]\n    tables: [orders]\n");
        assert_eq!(
            one,
            ok("targets:\n  - region: eu-west-1\n    tables: [orders]\n")
        );
    }

    #[test]
    fn regions_problems() {
        let cases = [
            (
                "    region: us-east-1\n    regions: [eu-west-1]\n",
                vec!["exporter.yaml:4: targets[0].regions: cannot be combined with region: give one or the other"],
            ),
            (
                "    regions: []\n",
                vec!["exporter.yaml:3: targets[0].regions: must list at least one region"],
            ),
            (
                "    regions:\n",
                vec!["exporter.yaml:3: targets[0].regions: must list at least one region"],
            ),
            (
                "    regions: us-east-1\n",
                vec!["exporter.yaml:3: targets[0].regions: expected a list, found \"us-east-1\""],
            ),
            (
                "    regions: [us-east-1, US East, 5]\n",
                vec![
                    "exporter.yaml:3: targets[0].regions[1]: \"US East\" is not a valid AWS region name",
                    "exporter.yaml:3: targets[0].regions[2]: expected an AWS region name, found 5",
                ],
            ),
            (
                "    regions:\n      - us-east-1\n      -\n      - eu-west-1\n      - us-east-1\n",
                vec![
                    "exporter.yaml:5: targets[0].regions[1]: expected an AWS region name, found an empty value",
                    "exporter.yaml:7: targets[0].regions[3]: region us-east-1 is already listed at targets[0].regions[0]",
                ],
            ),
        ];
        for (lines, expected) in cases {
            let text = format!("targets:\n  - tables: [orders]\n{lines}");
            assert_eq!(problems(&text), expected, "{lines}");
        }
        // Both given, both checked.
        assert_eq!(
            problems("targets:\n  - region: x y\n    regions: [eu-west-1]\n    tables: [orders]\n"),
            [
                "exporter.yaml:2: targets[0].region: \"x y\" is not a valid AWS region name",
                "exporter.yaml:3: targets[0].regions: cannot be combined with region: give one or the other",
            ]
        );
    }

    #[test]
    fn tables_may_be_left_out_only_with_discovery() {
        for tables in ["", "    tables: []\n", "    tables:\n"] {
            let config = ok(&format!(
                "targets:\n  - region: us-east-1\n    discovery: {{include: [x]}}\n{tables}"
            ));
            assert_eq!(config.targets[0].tables, []);
            assert_eq!(config.table_count(), 0);
        }
        // Written, they are still checked.
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    discovery: {}\n    tables: [ab]\n"),
            [format!(
                "exporter.yaml:4: targets[0].tables[0]: \"ab\" {TABLE_NAME_RULE}"
            )]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    discovery: {}\n    tables: orders\n"),
            ["exporter.yaml:4: targets[0].tables: expected a list, found \"orders\""]
        );
        // An invalid discovery still excuses the missing tables: one problem, not two.
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    discovery: yes\n"),
            ["exporter.yaml:3: targets[0].discovery: expected a mapping, found \"yes\""]
        );
    }

    #[test]
    fn the_same_table_in_one_account_is_a_duplicate() {
        // A plain name and an ARN under the default credentials are taken to be one table,
        // whichever comes first (the default account is unknown here).
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    tables:\n      - arn:aws:dynamodb:us-east-1:123456789012:table/orders\n      - orders\n"),
            ["exporter.yaml:5: targets[0].tables[1]: table \"orders\" in region us-east-1 is already listed at targets[0].tables[0]"]
        );
        // A plain name listed in two multi-region targets collides in the region they share.
        assert_eq!(
            problems("targets:\n  - regions: [us-east-1, eu-west-1]\n    tables: [orders]\n  - regions: [ap-south-1, eu-west-1]\n    tables: [orders]\n"),
            ["exporter.yaml:5: targets[1].tables[0]: table \"orders\" in region eu-west-1 is already listed at targets[0].tables[0]"]
        );
    }

    #[test]
    fn role_problems() {
        let cases = [
            (
                "    role_arn: arn:aws:iam::123:role/x\n",
                "targets[0].role_arn: \"arn:aws:iam::123:role/x\" is not an IAM role ARN (expected arn:PARTITION:iam::ACCOUNT_ID:role/NAME or role/PATH/NAME)",
            ),
            (
                "    role_arn: arn:aws:iam::123456789012:role/has space\n",
                "targets[0].role_arn: \"has space\" is not a valid role name (1 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')",
            ),
            (
                "    role_arn: 5\n",
                "targets[0].role_arn: expected an IAM role ARN, found 5 (quote it: \"5\")",
            ),
            (
                "    role_arn:\n",
                "targets[0].role_arn: expected an IAM role ARN, found an empty value",
            ),
            (
                "    external_id: abc\n",
                "targets[0].external_id: is only used with role_arn, which is not given",
            ),
            (
                "    session_name: abc\n",
                "targets[0].session_name: is only used with role_arn, which is not given",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                problems(&target_with(line)),
                [format!("exporter.yaml:3: {expected}")],
                "{line}"
            );
        }
        let role = "    role_arn: arn:aws:iam::123456789012:role/exporter\n";
        let cases = [
            (
                "    external_id: x\n",
                "targets[0].external_id: \"x\" is not a valid external ID (2 to 1224 characters: letters, digits, '+', '=', ',', '.', '@', ':', '/', '_', '-')",
            ),
            (
                "    external_id: 12345\n",
                "targets[0].external_id: expected a string, found 12345 (quote it: \"12345\")",
            ),
            (
                "    session_name: a\n",
                "targets[0].session_name: \"a\" is not a valid session name (2 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')",
            ),
            (
                "    session_name: a/b\n",
                "targets[0].session_name: \"a/b\" is not a valid session name (2 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                problems(&target_with(&format!("{role}{line}"))),
                [format!("exporter.yaml:4: {expected}")],
                "{line}"
            );
        }
        // An invalid role_arn is reported once; its companions are not "without" it.
        assert_eq!(
            problems(&target_with("    role_arn: nope\n    external_id: abc\n")),
            ["exporter.yaml:3: targets[0].role_arn: \"nope\" is not an IAM role ARN (expected arn:PARTITION:iam::ACCOUNT_ID:role/NAME or role/PATH/NAME)"]
        );
        let session = "s".repeat(64);
        let config = ok(&target_with(&format!(
            "{role}    session_name: {session}\n    external_id: a:b/c\n"
        )));
        let role = config.targets[0].role.as_ref().unwrap();
        assert_eq!(role.session_name.as_deref(), Some(session.as_str()));
        assert_eq!(role.external_id.as_deref(), Some("a:b/c"));
        assert_eq!(role.account_id, "123456789012");
        assert_eq!(
            problems(&target_with(&format!(
                "    role_arn: arn:aws:iam::123456789012:role/x\n    session_name: {session}s\n"
            ))),
            [format!(
                "exporter.yaml:4: targets[0].session_name: \"{session}s\" {SESSION_NAME_RULE}"
            )]
        );
    }

    #[test]
    fn rate_problems() {
        let cases = [
            ("0", "must be greater than zero"),
            ("0.0", "must be greater than zero"),
            ("-1", "must be greater than zero"),
            ("-.inf", "must be greater than zero"),
            ("10001", "must be at most 10000"),
            ("10000.5", "must be at most 10000"),
            (".inf", "must be at most 10000"),
            (".nan", "expected a positive number, found .nan"),
            ("ten", "expected a positive number, found \"ten\""),
            ("\"5\"", "expected a positive number, found \"5\""),
            ("true", "expected a positive number, found true"),
            ("", "expected a positive number, found an empty value"),
        ];
        for (value, expected) in cases {
            assert_eq!(
                problems(&format!(
                    "max_requests_per_second: {value}\n{}",
                    target_with("")
                )),
                [format!(
                    "exporter.yaml:1: max_requests_per_second: {expected}"
                )],
                "{value}"
            );
            assert_eq!(
                problems(&target_with(&format!(
                    "    max_requests_per_second: {value}\n"
                ))),
                [format!(
                    "exporter.yaml:3: targets[0].max_requests_per_second: {expected}"
                )],
                "{value}"
            );
        }
        for (value, rate) in [("1", 1.0), ("0.25", 0.25), ("10000", 10_000.0)] {
            let config = ok(&target_with(&format!(
                "    max_requests_per_second: {value}\n"
            )));
            assert_eq!(config.targets[0].max_requests_per_second, rate);
            assert_eq!(
                config.max_requests_per_second,
                DEFAULT_MAX_REQUESTS_PER_SECOND
            );
        }
    }

    #[test]
    fn discovery_problems() {
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    discovery: {tags: [cdc]}\n"),
            ["exporter.yaml:3: targets[0].discovery.tags: expected a mapping of tag keys to values, found a list"]
        );
        assert_eq!(
            problems("targets:\n  - region: us-east-1\n    discovery:\n"),
            ["exporter.yaml:3: targets[0].discovery: expected a mapping, found an empty value"]
        );
    }

    #[test]
    fn cdc_metrics_settings() {
        let cdc = |block: &str| ok(&target_with(block)).targets[0].cdc_metrics.clone();
        assert_eq!(cdc(""), None);
        // Writing the block turns it on.
        assert_eq!(
            cdc("    cdc_metrics: {}\n"),
            Some(CdcMetrics {
                interval: DEFAULT_CDC_INTERVAL
            })
        );
        assert_eq!(
            cdc("    cdc_metrics:\n      interval: 1s\n"),
            Some(CdcMetrics {
                interval: Duration::from_secs(1)
            })
        );
        assert_eq!(
            cdc("    cdc_metrics: {enabled: false, interval: 1m}\n"),
            None
        );
        let cases = [
            (
                "    cdc_metrics: {interval: 999ms}\n",
                "targets[0].cdc_metrics.interval: must be at least 1s",
            ),
            (
                "    cdc_metrics: {interval: 25h}\n",
                "targets[0].cdc_metrics.interval: must be at most 24h",
            ),
            (
                "    cdc_metrics: {enabled: \"yes\"}\n",
                "targets[0].cdc_metrics.enabled: expected true or false, found \"yes\"",
            ),
            (
                "    cdc_metrics: {enable: true}\n",
                "targets[0].cdc_metrics.enable: unknown key (expected one of: enabled, interval)",
            ),
            (
                "    cdc_metrics: true\n",
                "targets[0].cdc_metrics: expected a mapping, found true",
            ),
        ];
        for (line, expected) in cases {
            assert_eq!(
                problems(&target_with(line)),
                [format!("exporter.yaml:3: {expected}")],
                "{line}"
            );
        }
    }

    fn discovery(include: &[&str], exclude: &[&str], tags: &[(&str, &str)]) -> Discovery {
        Discovery {
            include: include.iter().map(|s| pattern(s)).collect(),
            exclude: exclude.iter().map(|s| pattern(s)).collect(),
            tags: (tags.iter())
                .map(|(k, v)| ((*k).to_owned(), TagMatch::new(v).unwrap()))
                .collect(),
            refresh_interval: DEFAULT_REFRESH_INTERVAL,
        }
    }

    #[test]
    fn discovery_matches_names() {
        let all = discovery(&[], &[], &[]);
        assert!(all.matches_name("anything"));
        let d = discovery(&["^orders-", "audit"], &["-test$"], &[]);
        assert!(d.matches_name("orders-eu"));
        // Unanchored patterns match anywhere; anchored ones only where they say.
        assert!(d.matches_name("team-audit-log"));
        assert!(!d.matches_name("old-orders-eu"));
        assert!(!d.matches_name("orders-eu-test"));
        assert!(d.matches_name("orders-test-eu"));
        assert!(!d.matches_name("customers"));
        let only_exclude = discovery(&[], &["tmp"], &[]);
        assert!(only_exclude.matches_name("orders"));
        assert!(!only_exclude.matches_name("orders-tmp"));
    }

    #[test]
    fn discovery_matches_tags() {
        let tags = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            (pairs.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let d = discovery(&[], &[], &[("cdc", "true"), ("env", "/prod|staging/")]);
        assert!(d.matches_tags(&tags(&[("env", "prod"), ("cdc", "true"), ("x", "y")])));
        assert!(d.matches_tags(&tags(&[("cdc", "true"), ("env", "staging")])));
        // Exact values are exact; a /regex/ must match the whole value.
        assert!(!d.matches_tags(&tags(&[("cdc", "True"), ("env", "prod")])));
        assert!(!d.matches_tags(&tags(&[("cdc", "true "), ("env", "prod")])));
        assert!(!d.matches_tags(&tags(&[("cdc", "true"), ("env", "preprod")])));
        assert!(!d.matches_tags(&tags(&[("cdc", "true"), ("env", "production")])));
        // Every listed tag must be present.
        assert!(!d.matches_tags(&tags(&[("cdc", "true")])));
        assert!(!d.matches_tags(&[]));
        // Tag keys are case-sensitive, as in AWS.
        assert!(!d.matches_tags(&tags(&[("CDC", "true"), ("env", "prod")])));
        // No tags configured: every table qualifies.
        assert!(discovery(&[], &[], &[]).matches_tags(&[]));
    }

    #[test]
    fn tag_values_read_as_exact_or_whole_value_regex() {
        assert_eq!(
            TagMatch::new("true").unwrap(),
            TagMatch::Exact("true".to_owned())
        );
        for exact in ["/", "", "/a", "a/"] {
            assert_eq!(
                TagMatch::new(exact).unwrap(),
                TagMatch::Exact(exact.to_owned())
            );
        }
        let empty = TagMatch::new("//").unwrap();
        assert!(empty.matches(""));
        assert!(!empty.matches("x"));
        let alternation = TagMatch::new("/a|b/").unwrap();
        assert!(alternation.matches("a") && alternation.matches("b"));
        assert!(!alternation.matches("ab"));
        // Compiled alone first: wrapped in the anchoring group this would compile, and match
        // anything that starts with "a".
        assert!(TagMatch::new("/a)|(b/").is_err());
        // A (?x) comment running to the end does not swallow the anchoring group.
        let commented = TagMatch::new("/(?x) pro d # the env/").unwrap();
        assert!(commented.matches("prod"));
        assert!(!commented.matches("prods"));
        assert_eq!(commented.to_string(), "/(?x) pro d # the env/");
        assert_eq!(alternation.to_string(), "/a|b/");
        assert_eq!(TagMatch::Exact("x\"y".to_owned()).to_string(), "\"x\\\"y\"");
        // Equal by source text.
        assert_eq!(pattern("a+"), pattern("a+"));
        assert_ne!(pattern("a+"), pattern("a{1,}"));
    }

    #[test]
    fn the_mutation_base_is_valid() {
        assert_eq!(ok(VALID).table_count(), 4);
    }

    proptest! {
        #[test]
        fn parse_never_panics_on_any_text(text in any::<String>()) {
            check_outcome(&text);
        }

        #[test]
        fn parse_never_panics_on_yamlish_text(text in "[-:#\\[\\]{}'\" \n\ta-z0-9&*!|>]{0,200}") {
            check_outcome(&text);
        }

        #[test]
        fn parse_never_panics_on_mutated_configs(text in mutated(VALID)) {
            check_outcome(&text);
        }

        #[test]
        fn parse_never_panics_on_mutated_configs_with_every_key(text in mutated(FULL)) {
            check_outcome(&text);
        }
    }
}
