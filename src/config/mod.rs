//! The exporter's configuration file: its format, defaults and validation.
//!
//! [`parse`] turns YAML text into a [`Config`], or into *every* problem it finds, each naming the
//! file, line and field (`config/exporter.yaml:7: targets[0].poll_interval: "5 parsecs" is not a
//! duration`). The text is read as a generic `serde_yaml::Value` first (a YAML syntax error is the
//! only thing that stops early) and then walked by hand: serde's derive stops at the first error
//! and knows no lines for semantic problems.
//!
//! Each mapping is walked through `Fields`: a struct's one validation function asks for its keys
//! by name, and every key it never asked for is reported as unknown, with the keys it did ask for
//! as the choices. Adding a key is one field on the struct and one line in that function.
//!
//! `serde_yaml::Value` keeps no positions, so lines come from a second read of the text by
//! yaml-rust2's event parser (`Positions`), which marks where each key and item starts, in flow
//! style as in block style. That read happens only once there is a problem to place. Table and
//! role ARNs are parsed here too ([`parse_table_arn`], [`parse_role_arn`]), and discovery's
//! regular expressions are compiled here ([`Pattern`]), so a running exporter never meets a bad
//! one.
//!
//! A target names one or more regions and, optionally, an IAM role to assume. Everything the
//! exporter budgets (calls in flight, requests per second) is per *scope*, an (account, region)
//! pair: the role's account, or the default credentials' for a target without a role.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{ScanError, TScalarStyle};

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
/// Request rate per (account, region) scope unless the file or the target says otherwise.
pub const DEFAULT_MAX_REQUESTS_PER_SECOND: f64 = 10.0;
/// Highest accepted `max_requests_per_second`: far above what DynamoDB's control plane grants,
/// so anything larger is a typo.
pub const MAX_REQUESTS_PER_SECOND: f64 = 10_000.0;
/// How often discovery lists and re-tags tables unless the target says otherwise.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(300);
/// How often CDC metrics are fetched unless the target says otherwise.
pub const DEFAULT_CDC_INTERVAL: Duration = Duration::from_secs(300);
/// Shortest accepted `cdc_metrics.interval`.
pub const MIN_CDC_INTERVAL: Duration = Duration::from_secs(1);
/// SDK attempts per poll unless the file says otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Longest accepted duration. Timer arithmetic on far-future instants can overflow, and polling
/// less than daily is not monitoring.
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
    /// Default request rate per (account, region) scope; targets may override it.
    pub max_requests_per_second: f64,
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
    /// target's (account, region) scopes.
    pub max_requests_per_second: f64,
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

/// The parts of a DynamoDB table ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableArn {
    pub partition: String,
    pub region: String,
    pub account_id: String,
    pub table: String,
}

impl fmt::Display for TableArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:dynamodb:{}:{}:table/{}",
            self.partition, self.region, self.account_id, self.table
        )
    }
}

/// Why a string is not a usable DynamoDB table ARN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArnError {
    #[error("{0:?} is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)")]
    Malformed(String),
    /// The ARN is well formed but names a table DynamoDB would not accept.
    #[error("{0:?} {TABLE_NAME_RULE}")]
    TableName(String),
    #[error("{0:?} is not an IAM role ARN (expected arn:PARTITION:iam::ACCOUNT_ID:role/NAME or role/PATH/NAME)")]
    MalformedRole(String),
    /// The role ARN is well formed but names a role IAM would not accept.
    #[error("{0:?} {ROLE_NAME_RULE}")]
    RoleName(String),
}

/// The parts of an IAM role ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleArn {
    pub partition: String,
    pub account_id: String,
    /// `/` unless the role has a path, which then starts and ends with `/`: `/service/`.
    pub path: String,
    pub name: String,
}

impl fmt::Display for RoleArn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "arn:{}:iam::{}:role{}{}",
            self.partition, self.account_id, self.path, self.name
        )
    }
}

const TABLE_NAME_RULE: &str =
    "is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')";
const ROLE_NAME_RULE: &str =
    "is not a valid role name (1 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')";
const EXTERNAL_ID_RULE: &str =
    "is not a valid external ID (2 to 1224 characters: letters, digits, '+', '=', ',', '.', '@', ':', '/', '_', '-')";
const SESSION_NAME_RULE: &str =
    "is not a valid session name (2 to 64 characters: letters, digits, '+', '=', ',', '.', '@', '_', '-')";

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

/// One thing wrong with a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The file name as given.
    pub origin: String,
    /// 1-based; `None` where no line can be told (the document as a whole, a missing top-level
    /// key, a value behind an alias).
    pub line: Option<usize>,
    /// Field path such as `targets[0].tables[1]`; `(document)` for the file as a whole.
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(
                f,
                "{}:{}: {}: {}",
                self.origin, line, self.path, self.message
            ),
            None => write!(f, "{}: {}: {}", self.origin, self.path, self.message),
        }
    }
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
            .map(|t| match (&t.account_id, t.region()) {
                (Some(account), Some(region)) if several => {
                    format!("{} (account {account}, region {region})", t.name)
                }
                (Some(account), _) => format!("{} (account {account})", t.name),
                (None, _) => t.name.to_string(),
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
            "    max_requests_per_second: {}",
            self.max_requests_per_second
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
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|err| ConfigError::Invalid(vec![syntax_problem(origin, text, &err)]))?;
    let mut validator = Validator {
        origin,
        text,
        positions: None,
        problems: Vec::new(),
    };
    let config = validator.config(&doc);
    if validator.problems.is_empty() {
        return Ok(config);
    }
    // Stable: problems at one place keep the order the walk found them in.
    validator.problems.sort_by_key(|(pos, _)| *pos);
    Err(ConfigError::Invalid(
        validator.problems.into_iter().map(|(_, p)| p).collect(),
    ))
}

fn syntax_problem(origin: &str, text: &str, err: &serde_yaml::Error) -> Problem {
    let mut message = err.to_string();
    let line = err.location().map(|location| {
        // The line goes in front already; keep any other position (e.g. of the context).
        for suffix in [
            format!(" at line {} column {}", location.line(), location.column()),
            format!(" at position {}", location.index()),
        ] {
            if let Some(at) = message.find(&suffix) {
                message.replace_range(at..at + suffix.len(), "");
            }
        }
        // libyaml places errors at the end of input one line past an unterminated last line.
        location.line().min(text.split('\n').count())
    });
    Problem {
        origin: origin.to_owned(),
        line,
        path: FieldPath::default().to_string(),
        message,
    }
}

/// Parses a DynamoDB table ARN: `arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME`,
/// nothing after the name (a stream or index ARN is not a table ARN).
pub fn parse_table_arn(s: &str) -> Result<TableArn, ArnError> {
    let malformed = || ArnError::Malformed(s.to_owned());
    let mut parts = s.splitn(6, ':');
    let (
        Some("arn"),
        Some(partition),
        Some("dynamodb"),
        Some(region),
        Some(account_id),
        Some(resource),
    ) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    )
    else {
        return Err(malformed());
    };
    let table = resource
        .strip_prefix("table/")
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(malformed)?;
    let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
    if !is_aws_name(partition) || !is_aws_name(region) || !account_ok {
        return Err(malformed());
    }
    if !is_table_name(table) {
        return Err(ArnError::TableName(table.to_owned()));
    }
    Ok(TableArn {
        partition: partition.to_owned(),
        region: region.to_owned(),
        account_id: account_id.to_owned(),
        table: table.to_owned(),
    })
}

/// Parses an IAM role ARN: `arn:PARTITION:iam::ACCOUNT_ID:role/NAME`, or with a path,
/// `role/PATH/NAME`. IAM is global, so the region field is empty.
///
/// Path segments follow the role-name rule; IAM would accept any printable ASCII there, but a
/// path with `:` or spaces in an exporter's config is far likelier a paste error.
pub fn parse_role_arn(s: &str) -> Result<RoleArn, ArnError> {
    let malformed = || ArnError::MalformedRole(s.to_owned());
    let mut parts = s.splitn(6, ':');
    let (Some("arn"), Some(partition), Some("iam"), Some(""), Some(account_id), Some(resource)) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(malformed());
    };
    let rest = resource.strip_prefix("role/").ok_or_else(malformed)?;
    let (dirs, name) = match rest.rsplit_once('/') {
        Some((dirs, name)) => (Some(dirs), name),
        None => (None, rest),
    };
    let path_ok = dirs.is_none_or(|dirs| {
        dirs.len() <= 510
            && (dirs.split('/')).all(|dir| !dir.is_empty() && dir.bytes().all(is_iam_name_byte))
    });
    let account_ok = account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit());
    if !is_aws_name(partition) || !account_ok || !path_ok || name.is_empty() {
        return Err(malformed());
    }
    if name.len() > 64 || !name.bytes().all(is_iam_name_byte) {
        return Err(ArnError::RoleName(name.to_owned()));
    }
    Ok(RoleArn {
        partition: partition.to_owned(),
        account_id: account_id.to_owned(),
        path: dirs.map_or_else(|| "/".to_owned(), |dirs| format!("/{dirs}/")),
        name: name.to_owned(),
    })
}

/// IAM's `[\w+=,.@-]`, ASCII only: role names, path segments and session names.
fn is_iam_name_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'=' | b',' | b'.' | b'@' | b'_' | b'-')
}

/// STS's rule for `ExternalId`.
fn is_external_id(s: &str) -> bool {
    (2..=1224).contains(&s.len())
        && (s.bytes()).all(|b| is_iam_name_byte(b) || matches!(b, b':' | b'/'))
}

/// STS's rule for `RoleSessionName`.
fn is_session_name(s: &str) -> bool {
    (2..=64).contains(&s.len()) && s.bytes().all(is_iam_name_byte)
}

/// Region and partition names: lowercase letters, digits and hyphens, 1 to 32 characters.
/// Deliberately no list of known regions, so new ones work without a release.
fn is_aws_name(s: &str) -> bool {
    (1..=32).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// DynamoDB's rule for table names.
fn is_table_name(s: &str) -> bool {
    (3..=255).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// Accepts what the SDK can use as an endpoint: http or https, a host, an optional numeric port.
fn is_http_url(s: &str) -> bool {
    let Ok(uri) = s.parse::<hyper::Uri>() else {
        return false;
    };
    let (Some(scheme), Some(authority)) = (uri.scheme_str(), uri.authority()) else {
        return false;
    };
    let host = authority.host();
    if !matches!(scheme, "http" | "https") || host.is_empty() || authority.as_str().contains('@') {
        return false;
    }
    // `Uri` takes any text as a port ("x:abc", "x:99999"); the SDK would not.
    match authority.as_str().strip_prefix(host) {
        Some("") => true,
        Some(port) => port.strip_prefix(':').is_some_and(|p| {
            !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) && p.parse::<u16>().is_ok()
        }),
        None => false,
    }
}

/// Parses `30s`, `5m`, `1h`, `500ms`, `1d`, or a sum such as `1m30s`: whole numbers, each with a
/// unit, as in Prometheus' own configuration. `None` for anything else, including overflow.
/// The simulator's scenarios use it too, so there is one duration syntax in the project.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim();
    if rest.is_empty() {
        return None;
    }
    let mut millis: u64 = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        let unit_len = rest[digits..]
            .bytes()
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
fn format_duration(d: Duration) -> String {
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
    parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// A value for messages: scalars as written (strings quoted), collections by kind.
fn describe(value: &Value) -> String {
    match value {
        Value::Null => "an empty value".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("{s:?}"),
        Value::Sequence(_) => "a list".to_owned(),
        Value::Mapping(_) => "a mapping".to_owned(),
        Value::Tagged(t) => format!("a value tagged {}", t.tag),
    }
}

/// A mapping key as it appears in a field path.
fn key_label(key: &Value) -> String {
    match key {
        Value::String(s) => s.clone(),
        Value::Null => "null".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        other => format!("({})", describe(other)),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Seg {
    Key(String),
    Index(usize),
}

/// Where a value sits in the document, e.g. `targets[0].tables[1]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct FieldPath(Vec<Seg>);

impl FieldPath {
    fn key(&self, key: &str) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Key(key.to_owned()));
        FieldPath(segs)
    }

    fn index(&self, index: usize) -> FieldPath {
        let mut segs = self.0.clone();
        segs.push(Seg::Index(index));
        FieldPath(segs)
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return f.write_str("(document)");
        }
        for (i, seg) in self.0.iter().enumerate() {
            match seg {
                Seg::Key(k) if i == 0 => f.write_str(k)?,
                Seg::Key(k) => write!(f, ".{k}")?,
                Seg::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

/// Walks the parsed document, building the config and collecting problems.
struct Validator<'a> {
    origin: &'a str,
    text: &'a str,
    /// Read on the first problem: a valid file, the common case, is parsed only once.
    positions: Option<Positions>,
    /// With the position used to order them: a problem's own, else its nearest located
    /// ancestor's (so a problem inside an alias still sorts near its place), else the end.
    problems: Vec<(Pos, Problem)>,
}

impl<'a> Validator<'a> {
    fn report(&mut self, path: &FieldPath, message: impl Into<String>) {
        self.report_at(path, path, message);
    }

    /// Reports a problem about `path` on the line of `at`: a missing key is reported on the line
    /// of the mapping that lacks it.
    fn report_at(&mut self, path: &FieldPath, at: &FieldPath, message: impl Into<String>) {
        let text = self.text;
        let positions = self.positions.get_or_insert_with(|| Positions::new(text));
        let own = positions.of(&at.0);
        let order = own
            .or_else(|| (0..at.0.len()).rev().find_map(|n| positions.of(&at.0[..n])))
            .unwrap_or(Pos::END);
        let problem = Problem {
            origin: self.origin.to_owned(),
            line: own.map(|pos| pos.line),
            path: path.to_string(),
            message: message.into(),
        };
        self.problems.push((order, problem));
    }

    /// The keys of a mapping, or `None` (reported) for anything else.
    fn mapping<'v>(&mut self, path: &FieldPath, value: &'v Value) -> Option<Fields<'v>> {
        match value {
            Value::Mapping(map) => Some(Fields::new(path.clone(), map)),
            other => {
                let message = format!("expected a mapping, found {}", describe(other));
                self.report(path, message);
                None
            }
        }
    }

    /// The items of a list that must not be empty; an empty slice (reported) otherwise.
    fn list<'v>(&mut self, path: &FieldPath, value: &'v Value, empty: &str) -> &'v [Value] {
        match value {
            Value::Sequence(items) if !items.is_empty() => return items,
            Value::Sequence(_) | Value::Null => self.report(path, empty),
            other => self.report(path, format!("expected a list, found {}", describe(other))),
        }
        &[]
    }

    fn config(&mut self, doc: &Value) -> Config {
        let empty = Mapping::new();
        let root = FieldPath::default();
        let mut m = match doc {
            // An empty file is all defaults, which then lacks targets.
            Value::Null => Fields::new(root, &empty),
            other => match self.mapping(&root, other) {
                Some(m) => m,
                None => return Config::defaults(),
            },
        };
        let mut config = Config {
            poll_interval: m
                .check(self, "poll_interval", Self::duration)
                .unwrap_or(DEFAULT_POLL_INTERVAL),
            request_timeout: m
                .check(self, "request_timeout", Self::duration)
                .unwrap_or(DEFAULT_REQUEST_TIMEOUT),
            concurrency: m
                .check(self, "concurrency", |v, p, x| {
                    v.count(p, x, MAX_CONCURRENCY)
                })
                .unwrap_or(DEFAULT_CONCURRENCY),
            max_attempts: m
                .check(self, "max_attempts", |v, p, x| v.count(p, x, MAX_ATTEMPTS))
                .unwrap_or(DEFAULT_MAX_ATTEMPTS),
            max_requests_per_second: m
                .check(self, "max_requests_per_second", Self::rate)
                .unwrap_or(DEFAULT_MAX_REQUESTS_PER_SECOND),
            targets: Vec::new(),
        };
        // Targets last: they inherit the global values wherever those were written.
        if let Some((path, value)) = m.require(self, "targets", TARGETS_MISSING) {
            config.targets = self.targets(&path, value, &config);
        }
        m.finish(self);
        config
    }

    fn targets(&mut self, path: &FieldPath, value: &Value, globals: &Config) -> Vec<Target> {
        let mut seen = Seen::default();
        let items = self.list(path, value, TARGETS_MISSING);
        (items.iter().enumerate())
            .filter_map(|(i, item)| self.target(&path.index(i), item, globals, &mut seen))
            .collect()
    }

    fn target(
        &mut self,
        path: &FieldPath,
        value: &Value,
        globals: &Config,
        seen: &mut Seen,
    ) -> Option<Target> {
        let mut m = self.mapping(path, value)?;
        // Regions and role first, whatever the key order: table ARNs are checked against the
        // regions, and the role's account tells tables of the same name apart.
        let regions = self.target_regions(&mut m);
        let endpoint_url = m.check(self, "endpoint_url", Self::endpoint);
        let role = self.role(&mut m);
        let max_requests_per_second = m
            .check(self, "max_requests_per_second", Self::rate)
            .unwrap_or(globals.max_requests_per_second);
        let poll_interval = m
            .check(self, "poll_interval", Self::duration)
            .unwrap_or(globals.poll_interval);
        let request_timeout = m
            .check(self, "request_timeout", Self::duration)
            .unwrap_or(globals.request_timeout);
        let discovery_entry = m.take("discovery");
        let discovery = (discovery_entry.as_ref()).and_then(|(p, v)| self.discovery(p, v));
        let scope = TableScope {
            regions: regions.as_deref(),
            role_account: role.as_ref().map(|r| r.account_id.as_str()),
        };
        // With discovery, explicit tables are optional; written, they must still be valid.
        let tables = if discovery_entry.is_some() {
            m.take("tables").and_then(|(path, value)| match value {
                Value::Null => None,
                Value::Sequence(items) if items.is_empty() => None,
                _ => Some(self.tables(&path, value, &scope, seen)),
            })
        } else {
            m.require(self, "tables", TABLES_MISSING)
                .map(|(path, value)| self.tables(&path, value, &scope, seen))
        };
        let cdc_metrics = m.check(self, "cdc_metrics", Self::cdc_metrics).flatten();
        m.finish(self);
        Some(Target {
            regions: regions.unwrap_or_default(),
            endpoint_url,
            role,
            max_requests_per_second,
            discovery,
            cdc_metrics,
            poll_interval,
            request_timeout,
            tables: tables.unwrap_or_default(),
        })
    }

    /// `region` or `regions`, exactly one of them; `None` (reported) unless all are valid.
    fn target_regions(&mut self, m: &mut Fields) -> Option<Vec<String>> {
        let single = m.take("region");
        let several = m.take("regions");
        match (single, several) {
            (Some((path, value)), None) => self.region(&path, value).map(|r| vec![r]),
            (None, Some((path, value))) => self.regions(&path, value),
            (Some((path, value)), Some((several_path, several_value))) => {
                self.region(&path, value);
                self.regions(&several_path, several_value);
                self.report(
                    &several_path,
                    "cannot be combined with region: give one or the other",
                );
                None
            }
            (None, None) => {
                m.missing(self, "region", "is required");
                None
            }
        }
    }

    fn region(&mut self, path: &FieldPath, value: &Value) -> Option<String> {
        match value {
            Value::String(s) if is_aws_name(s) => return Some(s.clone()),
            Value::String(s) if s.is_empty() => self.report(path, "must not be empty"),
            Value::String(s) => self.report(path, format!("{s:?} is not a valid AWS region name")),
            Value::Null => self.report(path, "is required"),
            other => self.report(
                path,
                format!("expected an AWS region name, found {}", describe(other)),
            ),
        }
        None
    }

    fn regions(&mut self, path: &FieldPath, value: &Value) -> Option<Vec<String>> {
        let items = self.list(path, value, "must list at least one region");
        let mut regions: Vec<String> = Vec::new();
        let mut valid = !items.is_empty();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let region = match item {
                Value::Null => {
                    let message = "expected an AWS region name, found an empty value";
                    self.report(&item_path, message);
                    None
                }
                other => self.region(&item_path, other),
            };
            let Some(region) = region else {
                valid = false;
                continue;
            };
            match regions.iter().position(|r| *r == region) {
                Some(first) => {
                    let message =
                        format!("region {region} is already listed at {}", path.index(first));
                    self.report(&item_path, message);
                }
                None => regions.push(region),
            }
        }
        valid.then_some(regions)
    }

    fn endpoint(&mut self, path: &FieldPath, value: &Value) -> Option<String> {
        match value {
            Value::String(s) if is_http_url(s) => return Some(s.clone()),
            Value::String(s) => self.report(path, format!("{s:?} is not an http or https URL")),
            other => self.report(
                path,
                format!("expected an http or https URL, found {}", describe(other)),
            ),
        }
        None
    }

    /// `role_arn` and the settings that only make sense with it.
    fn role(&mut self, m: &mut Fields) -> Option<Role> {
        let arn_entry = m.take("role_arn");
        let arn = (arn_entry.as_ref()).and_then(|(path, value)| {
            let text = self.string(path, value, "an IAM role ARN")?;
            match parse_role_arn(text) {
                Ok(arn) => Some((text.to_owned(), arn)),
                Err(err) => {
                    self.report(path, err.to_string());
                    None
                }
            }
        });
        // An invalid role_arn is reported once; its companions are not "without" it.
        let with_role = arn_entry.is_some();
        let mut option = |v: &mut Self, key, valid: fn(&str) -> bool, rule: &str| {
            m.check(v, key, |v, path, value| {
                if !with_role {
                    v.report(path, "is only used with role_arn, which is not given");
                    return None;
                }
                let text = v.string(path, value, "a string")?;
                if !valid(text) {
                    v.report(path, format!("{text:?} {rule}"));
                    return None;
                }
                Some(text.to_owned())
            })
        };
        let external_id = option(self, "external_id", is_external_id, EXTERNAL_ID_RULE);
        let session_name = option(self, "session_name", is_session_name, SESSION_NAME_RULE);
        arn.map(|(text, arn)| Role {
            arn: text,
            account_id: arn.account_id,
            external_id,
            session_name,
        })
    }

    /// A string, or `None` (reported). A number or boolean where a string belongs gets a hint:
    /// YAML reads `external_id: 12345` as a number.
    fn string<'v>(&mut self, path: &FieldPath, value: &'v Value, what: &str) -> Option<&'v str> {
        let hint = match value {
            Value::String(s) => return Some(s),
            Value::Bool(_) | Value::Number(_) => {
                format!(" (quote it: \"{}\")", describe(value))
            }
            _ => String::new(),
        };
        let message = format!("expected {what}, found {}{hint}", describe(value));
        self.report(path, message);
        None
    }

    /// A rate: a number (integer or not) above zero and at most `MAX_REQUESTS_PER_SECOND`.
    fn rate(&mut self, path: &FieldPath, value: &Value) -> Option<f64> {
        let rate = match value {
            Value::Number(n) => n.as_f64().filter(|r| !r.is_nan()),
            _ => None,
        };
        match rate {
            Some(r) if r > 0.0 && r <= MAX_REQUESTS_PER_SECOND => return Some(r),
            Some(r) if r <= 0.0 => self.report(path, "must be greater than zero"),
            Some(_) => self.report(path, format!("must be at most {MAX_REQUESTS_PER_SECOND}")),
            None => {
                let message = format!("expected a positive number, found {}", describe(value));
                self.report(path, message);
            }
        }
        None
    }

    fn discovery(&mut self, path: &FieldPath, value: &Value) -> Option<Discovery> {
        let mut m = self.mapping(path, value)?;
        let discovery = Discovery {
            include: m.check(self, "include", Self::patterns).unwrap_or_default(),
            exclude: m.check(self, "exclude", Self::patterns).unwrap_or_default(),
            tags: m.check(self, "tags", Self::tags).unwrap_or_default(),
            refresh_interval: m
                .check(self, "refresh_interval", Self::duration)
                .unwrap_or(DEFAULT_REFRESH_INTERVAL),
        };
        m.finish(self);
        Some(discovery)
    }

    /// A list of regexes, possibly empty.
    fn patterns(&mut self, path: &FieldPath, value: &Value) -> Option<Vec<Pattern>> {
        let Value::Sequence(items) = value else {
            let message = format!(
                "expected a list of regular expressions, found {}",
                describe(value)
            );
            self.report(path, message);
            return None;
        };
        let mut patterns = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_path = path.index(i);
            let Some(source) = self.string(&item_path, item, "a regular expression") else {
                continue;
            };
            match Pattern::new(source) {
                Ok(pattern) => patterns.push(pattern),
                Err(err) => self.report(&item_path, regex_problem(source, &err)),
            }
        }
        Some(patterns)
    }

    fn tags(&mut self, path: &FieldPath, value: &Value) -> Option<Vec<(String, TagMatch)>> {
        let Value::Mapping(map) = value else {
            let message = format!(
                "expected a mapping of tag keys to values, found {}",
                describe(value)
            );
            self.report(path, message);
            return None;
        };
        let mut tags = Vec::new();
        for (key, wanted) in map {
            let tag_path = path.key(&key_label(key));
            let Some(key) = self.string(&tag_path, key, "a tag key") else {
                continue;
            };
            let what = "a tag value (a string, or a regular expression written /.../)";
            let Some(written) = self.string(&tag_path, wanted, what) else {
                continue;
            };
            match TagMatch::new(written) {
                Ok(matcher) => tags.push((key.to_owned(), matcher)),
                Err(err) => self.report(&tag_path, regex_problem(written, &err)),
            }
        }
        Some(tags)
    }

    /// `Some` when enabled; `enabled` defaults to true once the block is written.
    fn cdc_metrics(&mut self, path: &FieldPath, value: &Value) -> Option<Option<CdcMetrics>> {
        let mut m = self.mapping(path, value)?;
        let enabled = m.check(self, "enabled", Self::boolean);
        let interval = m
            .check(self, "interval", |v, p, x| {
                let d = v.duration(p, x)?;
                if d < MIN_CDC_INTERVAL {
                    let message = format!("must be at least {}", format_duration(MIN_CDC_INTERVAL));
                    v.report(p, message);
                    return None;
                }
                Some(d)
            })
            .unwrap_or(DEFAULT_CDC_INTERVAL);
        m.finish(self);
        Some(enabled.unwrap_or(true).then_some(CdcMetrics { interval }))
    }

    fn boolean(&mut self, path: &FieldPath, value: &Value) -> Option<bool> {
        if let Value::Bool(b) = value {
            return Some(*b);
        }
        self.report(
            path,
            format!("expected true or false, found {}", describe(value)),
        );
        None
    }

    fn tables(
        &mut self,
        path: &FieldPath,
        value: &Value,
        scope: &TableScope,
        seen: &mut Seen,
    ) -> Vec<TableRef> {
        let mut tables = Vec::new();
        for (i, item) in self.list(path, value, TABLES_MISSING).iter().enumerate() {
            let item_path = path.index(i);
            let Some(table) = self.table(&item_path, item, scope.regions) else {
                continue;
            };
            if let Some(regions) = scope.regions {
                if let Err(message) = seen.insert(&table, regions, scope.role_account, &item_path) {
                    self.report(&item_path, message);
                    continue;
                }
            }
            tables.push(table);
        }
        tables
    }

    /// One entry of `tables`: a table name, or an ARN in one of the target's regions.
    fn table(
        &mut self,
        path: &FieldPath,
        value: &Value,
        regions: Option<&[String]>,
    ) -> Option<TableRef> {
        let Value::String(identifier) = value else {
            let message = format!("expected a table name or ARN, found {}", describe(value));
            self.report(path, message);
            return None;
        };
        if !identifier.starts_with("arn:") {
            if !is_table_name(identifier) {
                self.report(path, format!("{identifier:?} {TABLE_NAME_RULE}"));
                return None;
            }
            let identifier = Name::from(identifier.as_str());
            return Some(TableRef {
                identifier: identifier.clone(),
                name: identifier,
                account_id: None,
                region: None,
            });
        }
        let arn = match parse_table_arn(identifier) {
            Ok(arn) => arn,
            Err(err) => {
                self.report(path, err.to_string());
                return None;
            }
        };
        match regions {
            Some([region]) if *region != arn.region => {
                let message = format!(
                    "ARN region {} does not match the target's region {region}",
                    arn.region
                );
                self.report(path, message);
                return None;
            }
            Some(regions) if !regions.contains(&arn.region) => {
                let message = format!(
                    "ARN region {} is not one of the target's regions ({})",
                    arn.region,
                    regions.join(", ")
                );
                self.report(path, message);
                return None;
            }
            _ => {}
        }
        Some(TableRef {
            identifier: Name::from(identifier.as_str()),
            name: Name::from(arn.table),
            account_id: Some(arn.account_id),
            region: Some(arn.region),
        })
    }

    fn duration(&mut self, path: &FieldPath, value: &Value) -> Option<Duration> {
        let Value::String(text) = value else {
            let message = format!(
                "expected a duration such as \"30s\", found {}",
                describe(value)
            );
            self.report(path, message);
            return None;
        };
        match parse_duration(text) {
            None => self.report(path, format!("{text:?} is not a duration")),
            Some(d) if d.is_zero() => self.report(path, "must be greater than zero"),
            Some(d) if d > MAX_DURATION => {
                let message = format!("must be at most {}", format_duration(MAX_DURATION));
                self.report(path, message);
            }
            Some(d) => return Some(d),
        }
        None
    }

    /// A whole number from 1 to `max`.
    fn count<T>(&mut self, path: &FieldPath, value: &Value, max: T) -> Option<T>
    where
        T: TryFrom<u64> + fmt::Display + Copy,
        u64: TryFrom<T>,
    {
        let number = match value {
            Value::Number(n) => n,
            other => {
                let message = format!("expected a positive integer, found {}", describe(other));
                self.report(path, message);
                return None;
            }
        };
        let limit = u64::try_from(max).unwrap_or(u64::MAX);
        match (number.as_u64(), number.as_i64()) {
            (Some(n), _) if (1..=limit).contains(&n) => return T::try_from(n).ok(),
            (Some(0), _) | (None, Some(_)) => self.report(path, "must be at least 1"),
            (Some(_), _) => self.report(path, format!("must be at most {max}")),
            (None, None) => {
                self.report(path, format!("expected a positive integer, found {number}"))
            }
        }
        None
    }
}

const TARGETS_MISSING: &str = "must list at least one target";
const TABLES_MISSING: &str = "must list at least one table";

/// A regex compile error on one line: the regex crate's syntax errors span several, with the
/// pattern and a caret above the `error: ...` line that says what is wrong.
fn regex_problem(source: &str, err: &regex::Error) -> String {
    let reason = match err {
        regex::Error::Syntax(text) => (text.lines().rev())
            .find_map(|line| line.trim().strip_prefix("error: "))
            .unwrap_or(text.trim())
            .to_owned(),
        other => other.to_string(),
    };
    format!("{source:?} is not a valid regular expression: {reason}")
}

/// What `tables` needs to know of its target.
struct TableScope<'a> {
    /// `None` when they are not known (missing or invalid): then nothing is checked against them.
    regions: Option<&'a [String]>,
    role_account: Option<&'a str>,
}

/// Which account a listed table is taken to be in, for telling duplicates apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Account {
    /// Known: the table ARN's, or the role's for a plain name.
    Id(String),
    /// A plain name read with the default credentials, whose account is not known here.
    Default,
    /// An ARN read with the default credentials.
    DefaultArn,
}

/// Every table listed so far, by (account, region, name), with where it was first listed and
/// whether that target had a role; such twins would be polled twice and export colliding series.
#[derive(Default)]
struct Seen(HashMap<(Account, String, String), (String, bool)>);

impl Seen {
    /// Records `table` in each region it applies in, or says where it is already listed.
    ///
    /// The default credentials' account is unknown, so a plain name read with them is taken to
    /// be the same table as an ARN read with them (as before roles existed), while two ARNs are
    /// the same only with the same account, and tables under roles are told apart by account.
    fn insert(
        &mut self,
        table: &TableRef,
        regions: &[String],
        role_account: Option<&str>,
        at: &FieldPath,
    ) -> Result<(), String> {
        let (probe, store) = match (&table.account_id, role_account) {
            (Some(id), Some(_)) => (vec![Account::Id(id.clone())], vec![Account::Id(id.clone())]),
            (Some(id), None) => (
                vec![Account::Default, Account::Id(id.clone())],
                vec![Account::Id(id.clone()), Account::DefaultArn],
            ),
            (None, Some(id)) => (
                vec![Account::Id(id.to_owned())],
                vec![Account::Id(id.to_owned())],
            ),
            (None, None) => (
                vec![Account::Default, Account::DefaultArn],
                vec![Account::Default],
            ),
        };
        let applies_in: Vec<&String> = match table.region() {
            Some(region) => regions.iter().filter(|r| *r == region).collect(),
            None => regions.iter().collect(),
        };
        for region in &applies_in {
            for account in &probe {
                let key = (account.clone(), (*region).clone(), table.name.to_string());
                let Some((first, first_had_role)) = self.0.get(&key) else {
                    continue;
                };
                let name = &table.name;
                // Accounts are named only where roles make them matter: without roles the
                // message stays what it always was.
                return Err(match account {
                    Account::Id(id) if role_account.is_some() || *first_had_role => format!(
                        "table {name:?} of account {id} in region {region} is already listed at {first}"
                    ),
                    _ => format!("table {name:?} in region {region} is already listed at {first}"),
                });
            }
        }
        for region in applies_in {
            for account in &store {
                let key = (account.clone(), region.clone(), table.name.to_string());
                self.0
                    .entry(key)
                    .or_insert_with(|| (at.to_string(), role_account.is_some()));
            }
        }
        Ok(())
    }
}

impl Config {
    /// What an empty file would give, before its missing targets are reported.
    fn defaults() -> Config {
        Config {
            poll_interval: DEFAULT_POLL_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            max_requests_per_second: DEFAULT_MAX_REQUESTS_PER_SECOND,
            targets: Vec::new(),
        }
    }
}

/// One YAML mapping being validated.
///
/// A validation function asks for each key it knows by name, and whatever it never asked for is
/// an unknown key, offered the keys it did ask for, in that order. So the list of keys a mapping
/// accepts is the validation function itself, and a new key is one more line there.
struct Fields<'v> {
    path: FieldPath,
    map: &'v Mapping,
    asked: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    fn new(path: FieldPath, map: &'v Mapping) -> Fields<'v> {
        Fields {
            path,
            map,
            asked: Vec::new(),
        }
    }

    /// The value written for `key`, with its path. Makes `key` a known key, written or not.
    fn take(&mut self, key: &'static str) -> Option<(FieldPath, &'v Value)> {
        if !self.asked.contains(&key) {
            self.asked.push(key);
        }
        let value = self.map.get(key)?;
        Some((self.path.key(key), value))
    }

    /// The checked value of `key`; `None` when it is not written or `check` rejects it.
    fn check<'a, T>(
        &mut self,
        validator: &mut Validator<'a>,
        key: &'static str,
        check: impl FnOnce(&mut Validator<'a>, &FieldPath, &'v Value) -> Option<T>,
    ) -> Option<T> {
        let (path, value) = self.take(key)?;
        check(validator, &path, value)
    }

    /// Like `take`, but a missing key is reported, on the line of this mapping.
    fn require(
        &mut self,
        validator: &mut Validator,
        key: &'static str,
        missing: &str,
    ) -> Option<(FieldPath, &'v Value)> {
        let found = self.take(key);
        if found.is_none() {
            self.missing(validator, key, missing);
        }
        found
    }

    /// Reports `key` as missing, on the line of this mapping.
    fn missing(&self, validator: &mut Validator, key: &str, message: &str) {
        validator.report_at(&self.path.key(key), &self.path, message);
    }

    /// Reports every key that was not asked for.
    fn finish(self, validator: &mut Validator) {
        let expected = self.asked.join(", ");
        for key in self.map.keys() {
            if !key.as_str().is_some_and(|k| self.asked.contains(&k)) {
                let message = format!("unknown key (expected one of: {expected})");
                validator.report(&self.path.key(&key_label(key)), message);
            }
        }
    }
}

/// Where a key or item starts in the text. Ordered as in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Pos {
    /// 1-based.
    line: usize,
    /// 0-based; only orders problems that share a line (flow style).
    col: usize,
}

impl Pos {
    const END: Pos = Pos {
        line: usize::MAX,
        col: usize::MAX,
    };
}

/// Where each field path of a document starts: for a mapping key the key, for a sequence item
/// the item's node.
///
/// `serde_yaml::Value` keeps no positions, so the text is read a second time by yaml-rust2's
/// event parser, whose events carry marks, in flow style as in block style. Paths it cannot
/// place have none: the document itself, anything below a key that is not a plain or quoted
/// scalar (a collection, alias or tagged key), anything behind an alias, and empty items (`-`
/// alone) but the first. Should
/// the event parser reject text that serde_yaml accepted, nothing is placed rather than
/// something misplaced.
struct Positions(HashMap<Vec<Seg>, Pos>);

/// An open collection while walking the events. A `None` path is a collection nothing inside
/// of which can be placed.
enum Open {
    Seq {
        path: Option<Vec<Seg>>,
        next: usize,
        /// Where the first dash is.
        start: Pos,
    },
    /// `key` is `None` while a key is expected, then the key's segment (`None` inside if the key
    /// cannot be placed) until its value has started.
    Map {
        path: Option<Vec<Seg>>,
        key: Option<Option<Seg>>,
    },
}

impl Positions {
    fn new(text: &str) -> Positions {
        let mut found = HashMap::new();
        // serde_yaml skips a byte order mark; yaml-rust2 would make it part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        match Positions::walk(text, &mut found) {
            Ok(()) => Positions(found),
            Err(_) => Positions(HashMap::new()),
        }
    }

    fn of(&self, path: &[Seg]) -> Option<Pos> {
        self.0.get(path).copied()
    }

    /// One pass over the events of the first document (serde_yaml accepts no more), with the
    /// open collections on a stack.
    fn walk(text: &str, found: &mut HashMap<Vec<Seg>, Pos>) -> Result<(), ScanError> {
        let mut parser = Parser::new_from_str(text);
        let mut open: Vec<Open> = Vec::new();
        loop {
            let (event, mark) = parser.next_token()?;
            let pos = Pos {
                line: mark.line(),
                col: mark.col(),
            };
            // What the node is called if it is a mapping key.
            let label = match &event {
                Event::SequenceStart(..) | Event::MappingStart(..) | Event::Alias(_) => None,
                Event::Scalar(value, style, _, tag) => scalar_key(value, *style, tag),
                Event::SequenceEnd | Event::MappingEnd => {
                    open.pop();
                    continue;
                }
                Event::DocumentEnd | Event::StreamEnd => return Ok(()),
                _ => continue,
            };
            let empty =
                matches!(&event, Event::Scalar(v, TScalarStyle::Plain, _, None) if v.is_empty());
            let path = match open.last_mut() {
                // The document itself has no line: its problems concern the whole file.
                None => Some(Vec::new()),
                Some(Open::Seq { path, next, start }) => {
                    let item = path.clone().map(|mut p| {
                        p.push(Seg::Index(*next));
                        p
                    });
                    // An empty item's event is marked where the parser noticed it, often on the
                    // next item's line; only the first one's place, the sequence's, is known.
                    let at = if !empty {
                        Some(pos)
                    } else if *next == 0 {
                        Some(*start)
                    } else {
                        None
                    };
                    *next += 1;
                    if let (Some(item), Some(at)) = (item.as_ref(), at) {
                        found.insert(item.clone(), at);
                    }
                    item
                }
                Some(Open::Map {
                    path,
                    key: expected @ None,
                }) => {
                    if let (Some(map), Some(seg)) = (path.as_ref(), &label) {
                        // A block mapping's start is marked after its first key, not at it.
                        if let Some(start) = found.get_mut(map) {
                            *start = (*start).min(pos);
                        }
                        let mut p = map.clone();
                        p.push(seg.clone());
                        found.insert(p, pos);
                    }
                    *expected = Some(label);
                    // Nothing inside a key is a field path.
                    None
                }
                Some(Open::Map { path, key }) => {
                    let seg = key.take().flatten();
                    path.clone().zip(seg).map(|(mut p, seg)| {
                        p.push(seg);
                        p
                    })
                }
            };
            match event {
                Event::SequenceStart(..) => open.push(Open::Seq {
                    path,
                    next: 0,
                    start: pos,
                }),
                Event::MappingStart(..) => open.push(Open::Map { path, key: None }),
                _ => {}
            }
        }
    }
}

/// The path segment of a scalar key, labelled as `key_label` labels serde_yaml's key for it.
fn scalar_key(value: &str, style: TScalarStyle, tag: &Option<Tag>) -> Option<Seg> {
    if tag.is_some() {
        return None;
    }
    if style != TScalarStyle::Plain {
        return Some(Seg::Key(value.to_owned()));
    }
    // A plain key is resolved as serde_yaml resolved it: `~` is `null`, `1.50` is `1.5`.
    let label = match serde_yaml::from_str::<Value>(value) {
        Ok(resolved @ (Value::Null | Value::Bool(_) | Value::Number(_))) => key_label(&resolved),
        _ => value.to_owned(),
    };
    Some(Seg::Key(label))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashSet;

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
        }
    }

    fn path(segs: &[&str]) -> Vec<Seg> {
        segs.iter()
            .map(|s| match s.parse() {
                Ok(n) => Seg::Index(n),
                Err(_) => Seg::Key((*s).to_owned()),
            })
            .collect()
    }

    #[test]
    fn shipped_config_is_valid() {
        let config = ok(SHIPPED);
        assert_eq!(config.poll_interval, Duration::from_secs(60));
        assert_eq!(config.request_timeout, Duration::from_secs(10));
        assert_eq!(config.concurrency, 8);
        assert_eq!(config.max_attempts, 3);
        assert_eq!(config.max_requests_per_second, 10.0);
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
                targets: vec![Target {
                    regions: vec!["eu-west-1".to_owned()],
                    endpoint_url: None,
                    role: None,
                    max_requests_per_second: 10.0,
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
            "concurrency: 1000\nmax_attempts: 10\npoll_interval: 24h\nrequest_timeout: 1ms\n{}",
            target_with("")
        ));
        assert_eq!(config.concurrency, 1000);
        assert_eq!(config.max_attempts, 10);
        assert_eq!(config.poll_interval, MAX_DURATION);
        assert_eq!(config.request_timeout, Duration::from_millis(1));
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
");
        assert_eq!(
            config.summary(),
            "\
poll_interval: 1m30s
request_timeout: 10s
concurrency: 8
max_attempts: 3
max_requests_per_second: 10
targets: 2 (3 tables)
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    poll_interval: 1m30s
    request_timeout: 2s500ms
    max_requests_per_second: 10
    tables: orders, payments (account 123456789012)
  - region: eu-west-1
    endpoint_url: (AWS default)
    poll_interval: 1m30s
    request_timeout: 10s
    max_requests_per_second: 10
    tables: audit"
        );
    }

    #[test]
    fn summary_counts_one_table_in_the_singular() {
        let summary = ok(&target_with("")).summary();
        assert!(summary.contains("\ntargets: 1 (1 table)\n"), "{summary}");
    }

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
        assert_eq!(format_duration(MAX_DURATION), "24h");
    }

    #[test]
    fn duration_problems() {
        let text = "\
# Exporter settings.
poll_interval: 30s

targets:
  - region: us-east-1
    # faster here
    poll_interval: 5 parsecs
    tables: [orders]
";
        assert_eq!(
            problems(text),
            ["exporter.yaml:7: targets[0].poll_interval: \"5 parsecs\" is not a duration"]
        );
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
            // Only the first empty item has a known line; the other sorts by `targets`.
            [
                "exporter.yaml: targets[1]: expected a mapping, found an empty value",
                "exporter.yaml:2: targets[0]: expected a mapping, found an empty value",
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
    fn table_entry_problems() {
        let text = "\
targets:
  - region: us-east-1
    tables:
      - ab
      - 5
      - has space
      - arn:aws:dynamodb:us-east-1:123:table
      - arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000
      - arn:aws:dynamodb:us-east-1:123456789012:table/x
      - arn:aws:dynamodb:eu-west-1:123456789012:table/payments
      - fine
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:4: targets[0].tables[0]: \"ab\" is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')",
                "exporter.yaml:5: targets[0].tables[1]: expected a table name or ARN, found 5",
                "exporter.yaml:6: targets[0].tables[2]: \"has space\" is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')",
                "exporter.yaml:7: targets[0].tables[3]: \"arn:aws:dynamodb:us-east-1:123:table\" is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)",
                "exporter.yaml:8: targets[0].tables[4]: \"arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024-01-01T00:00:00.000\" is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)",
                "exporter.yaml:9: targets[0].tables[5]: \"x\" is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')",
                "exporter.yaml:10: targets[0].tables[6]: ARN region eu-west-1 does not match the target's region us-east-1",
            ]
        );
    }

    #[test]
    fn table_names_follow_dynamodb_rules() {
        assert!(is_table_name("abc"));
        assert!(is_table_name("Orders_v2.prod-1"));
        assert!(is_table_name(&"a".repeat(255)));
        assert!(!is_table_name(&"a".repeat(256)));
        assert!(!is_table_name("ab"));
        assert!(!is_table_name("tä ble"));
        assert!(!is_table_name("a:b:c"));
    }

    #[test]
    fn duplicate_tables_are_reported_where_repeated() {
        let text = "\
targets:
  - region: us-east-1
    tables:
      - orders
      - arn:aws:dynamodb:us-east-1:123456789012:table/orders
  - region: eu-west-1
    tables: [orders]
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    tables:
      - payments
      - orders
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:5: targets[0].tables[1]: table \"orders\" in region us-east-1 is already listed at targets[0].tables[0]",
                "exporter.yaml:12: targets[2].tables[1]: table \"orders\" in region us-east-1 is already listed at targets[0].tables[0]",
            ]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let text = "\
pol_interval: 30s
targets:
  - region: us-east-1
    regoin: us-east-2
    tables: [orders]
5: five
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:1: pol_interval: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, max_requests_per_second, targets)",
                "exporter.yaml:4: targets[0].regoin: unknown key (expected one of: region, regions, endpoint_url, role_arn, external_id, session_name, max_requests_per_second, poll_interval, request_timeout, discovery, tables, cdc_metrics)",
                "exporter.yaml:6: 5: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, max_requests_per_second, targets)",
            ]
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
            ["exporter.yaml:3: (document): did not find expected ',' or '}', while parsing a flow mapping at line 2 column 3"]
        );
        assert_eq!(
            problems("poll_interval: 30s\npoll_interval: 60s\n"),
            ["exporter.yaml:1: (document): duplicate entry with key \"poll_interval\""]
        );
        assert_eq!(
            problems("a: 1\n---\nb: 2\n"),
            ["exporter.yaml: (document): deserializing from YAML containing more than one document is not supported"]
        );
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
    fn problems_behind_aliases_sort_by_the_alias() {
        let text = "\
targets:
  - &first {region: us-east-1, tables: [ab]}
  - *first
x: &r eu-west-1
";
        let rule = TABLE_NAME_RULE;
        assert_eq!(
            problems(text),
            [
                format!("exporter.yaml:2: targets[0].tables[0]: \"ab\" {rule}"),
                format!("exporter.yaml: targets[1].tables[0]: \"ab\" {rule}"),
                "exporter.yaml:4: x: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, max_requests_per_second, targets)".to_owned(),
            ]
        );
    }

    #[test]
    fn a_mapping_accepts_exactly_the_keys_it_asks_for_in_asked_order() {
        let doc: Value = serde_yaml::from_str("b: 1\nzz: 2\na: 3\n").unwrap();
        let Value::Mapping(map) = &doc else {
            unreachable!()
        };
        let mut validator = Validator {
            origin: ORIGIN,
            text: "b: 1\nzz: 2\na: 3\n",
            positions: None,
            problems: Vec::new(),
        };
        let mut fields = Fields::new(FieldPath::default(), map);
        // Asked for but absent keys are offered too; asking twice lists a key once.
        assert!(fields.take("new_key").is_none());
        assert_eq!(
            fields.take("b").map(|(p, v)| (p.to_string(), v.clone())),
            Some(("b".to_owned(), Value::from(1)))
        );
        assert!(fields.take("a").is_some());
        assert!(fields.take("b").is_some());
        fields.finish(&mut validator);
        let reported: Vec<String> = validator
            .problems
            .iter()
            .map(|(_, p)| p.to_string())
            .collect();
        assert_eq!(
            reported,
            ["exporter.yaml:2: zz: unknown key (expected one of: new_key, b, a)"]
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

    #[test]
    fn arns_parse() {
        for (partition, region) in [
            ("aws", "us-east-1"),
            ("aws-cn", "cn-north-1"),
            ("aws-us-gov", "us-gov-west-1"),
        ] {
            let text = format!("arn:{partition}:dynamodb:{region}:123456789012:table/My.Table-1");
            assert_eq!(
                parse_table_arn(&text),
                Ok(TableArn {
                    partition: partition.to_owned(),
                    region: region.to_owned(),
                    account_id: "123456789012".to_owned(),
                    table: "My.Table-1".to_owned(),
                })
            );
        }
    }

    #[test]
    fn malformed_arns_are_rejected() {
        for text in [
            "",
            "orders",
            "arn:aws:dynamodb:us-east-1:123:table",
            "arn:aws:dynamodb:us-east-1:123456789012:table",
            "arn:aws:dynamodb:us-east-1:123456789012:table/",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/stream/2024",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders/index/by-date",
            "arn:aws:dynamodb:us-east-1:123456789012:tables/orders",
            "arn:aws:kinesis:us-east-1:123456789012:table/orders",
            "arn:aws:dynamodb:us-east-1:12345678901a:table/orders",
            "arn:aws:dynamodb:us-east-1:1234567890123:table/orders",
            "arn:aws:dynamodb::123456789012:table/orders",
            "arn:aws:dynamodb:US-EAST-1:123456789012:table/orders",
            "arn::dynamodb:us-east-1:123456789012:table/orders",
            "ARN:aws:dynamodb:us-east-1:123456789012:table/orders",
        ] {
            assert_eq!(
                parse_table_arn(text),
                Err(ArnError::Malformed(text.to_owned())),
                "{text}"
            );
        }
        assert_eq!(
            parse_table_arn("arn:aws:dynamodb:us-east-1:123456789012:table/a:b"),
            Err(ArnError::TableName("a:b".to_owned()))
        );
        assert_eq!(
            ArnError::Malformed("arn:x".to_owned()).to_string(),
            "\"arn:x\" is not a DynamoDB table ARN (expected arn:PARTITION:dynamodb:REGION:ACCOUNT_ID:table/TABLE_NAME)"
        );
    }

    /// The line `Positions` gives the path `segs` in `text`.
    fn line_of(text: &str, segs: &[&str]) -> Option<usize> {
        Positions::new(text).of(&path(segs)).map(|pos| pos.line)
    }

    #[test]
    fn locator_follows_nested_block_yaml() {
        let text = "\
%YAML 1.2
---
# top comment: - not a key
poll_interval: 30s   # trailing: comment

targets:
- region: us-east-1   # indentless sequence under targets
  tables:
    - orders

    # comment between items
    - \"quoted: item\"
  notes: |
    region: inside a block scalar
    - not an item
  \"quoted key\": 1
  'it''s': 2
-
  region: eu-west-1
  tables: [a, b]
- - nested
  - - deeper: x
      other: y
url#frag: 1
";
        let cases: &[(&[&str], Option<usize>)] = &[
            (&["poll_interval"], Some(4)),
            (&["targets"], Some(6)),
            (&["targets", "0"], Some(7)),
            (&["targets", "0", "region"], Some(7)),
            (&["targets", "0", "tables"], Some(8)),
            (&["targets", "0", "tables", "0"], Some(9)),
            (&["targets", "0", "tables", "1"], Some(12)),
            (&["targets", "0", "notes"], Some(13)),
            (&["targets", "0", "quoted key"], Some(16)),
            (&["targets", "0", "it's"], Some(17)),
            // The item's node starts below its dash.
            (&["targets", "1"], Some(19)),
            (&["targets", "1", "region"], Some(19)),
            (&["targets", "1", "tables"], Some(20)),
            (&["targets", "1", "tables", "0"], Some(20)),
            (&["targets", "1", "tables", "1"], Some(20)),
            (&["targets", "2"], Some(21)),
            (&["targets", "2", "0"], Some(21)),
            (&["targets", "2", "1"], Some(22)),
            (&["targets", "2", "1", "0", "other"], Some(23)),
            (&["url#frag"], Some(24)),
            // Inside block scalars, absent, or the document itself.
            (&["targets", "0", "notes", "region"], None),
            (&["targets", "0", "region", "x"], None),
            (&["region"], None),
            (&["targets", "3"], None),
            (&["targets", "0", "tables", "2"], None),
            (&[], None),
        ];
        for (segs, line) in cases {
            assert_eq!(line_of(text, segs), *line, "{segs:?}");
        }
        // The text is valid YAML with that structure.
        let value: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(value["targets"][2][1][0]["other"], Value::from("y"));
        assert_eq!(value["targets"][0]["it's"], Value::from(2));
    }

    #[test]
    fn locator_handles_compact_and_indented_styles() {
        let text = "\u{feff}a:\r\n    b:\r\n        - c: 1\r\n          d: >-\r\n            e: 2\r\n          f: 3\r\n";
        assert_eq!(line_of(text, &["a"]), Some(1));
        assert_eq!(line_of(text, &["a", "b", "0", "c"]), Some(3));
        assert_eq!(line_of(text, &["a", "b", "0", "f"]), Some(6));
        assert_eq!(line_of(text, &["a", "b", "0", "e"]), None);
    }

    #[test]
    fn locator_reads_keys_as_serde_yaml_does() {
        let text = "\
key: v
a:b: c
\"a\\\"b\" : c
'a''b': c
key2: v # a: b
~: null key
1.50: float key
!!str 7: tagged
? [complex]
: value
k:
  - key:value
  - {x: 1}
  -
  - last
e:
  -
  -
";
        let cases: &[(&[&str], Option<usize>)] = &[
            (&["key"], Some(1)),
            (&["a:b"], Some(2)),
            (&["a\"b"], Some(3)),
            (&["a'b"], Some(4)),
            // In a comment, not a key.
            (&["a"], None),
            (&["key2"], Some(5)),
            (&["null"], Some(6)),
            (&["1.5"], Some(7)),
            // Tagged and collection keys have no label to match.
            (&["7"], None),
            (&["k"], Some(11)),
            (&["k", "0"], Some(12)),
            (&["k", "1", "x"], Some(13)),
            // An empty item's event is marked on the next item's line: better no line.
            (&["k", "2"], None),
            (&["e", "0"], Some(17)),
            (&["e", "1"], None),
            (&["k", "3"], Some(15)),
        ];
        for (segs, line) in cases {
            assert_eq!(line_of(text, segs), *line, "{segs:?}");
        }
        let value: Value = serde_yaml::from_str(text).unwrap();
        assert_eq!(value["k"][0], Value::from("key:value"));
        assert_eq!(value[Value::Null], Value::from("null key"));
        assert_eq!(value["k"][1]["x"], Value::from(1));
    }

    #[test]
    fn locator_places_nothing_in_text_it_cannot_parse() {
        assert!(Positions::new("a: [1, 2\nb: 3\n").0.is_empty());
        assert!(Positions::new("").0.is_empty());
    }

    /// A YAML tree for the locator property test.
    #[derive(Debug, Clone)]
    enum Node {
        Scalar(String),
        Map(Vec<(String, Node)>),
        Seq(Vec<Node>),
    }

    fn node() -> impl Strategy<Value = Node> {
        "[a-z0-9]{1,6}"
            .prop_map(Node::Scalar)
            .prop_recursive(4, 40, 4, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 1..4).prop_map(Node::Seq),
                    prop::collection::btree_map("[a-z]{1,6}", inner, 1..4)
                        .prop_map(|m| Node::Map(m.into_iter().collect())),
                ]
            })
    }

    /// Renders YAML, recording the line of every path; `noise` bits add comments and blank
    /// lines, choose indentless sequences, and write some collections in flow style.
    struct Render {
        lines: Vec<String>,
        expected: Vec<(Vec<Seg>, usize)>,
        noise: u64,
    }

    impl Render {
        fn bit(&mut self) -> bool {
            self.noise = self.noise.rotate_right(1);
            self.noise & 1 == 1
        }

        fn push(&mut self, line: String, paths: &[Vec<Seg>]) {
            if self.bit() {
                self.lines.push("  # comment: - x".to_owned());
            }
            if self.bit() {
                self.lines.push(String::new());
            }
            self.lines.push(line);
            for p in paths {
                self.expected.push((p.clone(), self.lines.len()));
            }
        }

        /// `item` holds the paths that start on the first entry's line when the mapping is a
        /// sequence item (written after its dash).
        fn entries(
            &mut self,
            entries: &[(String, Node)],
            col: usize,
            at: &[Seg],
            mut item: Option<Vec<Vec<Seg>>>,
        ) {
            for (key, value) in entries {
                let mut p = at.to_vec();
                p.push(Seg::Key(key.clone()));
                let (lead, mut paths) = match item.take() {
                    Some(mut paths) => {
                        paths.push(p.clone());
                        (format!("{}- ", " ".repeat(col - 2)), paths)
                    }
                    None => (" ".repeat(col), vec![p.clone()]),
                };
                match value {
                    Node::Scalar(s) => self.push(format!("{lead}{key}: {s}"), &paths),
                    _ if self.bit() => {
                        let text = flow(value, &p, &mut paths);
                        self.push(format!("{lead}{key}: {text}"), &paths);
                    }
                    Node::Map(inner) => {
                        self.push(format!("{lead}{key}:"), &paths);
                        self.entries(inner, col + 2, &p, None);
                    }
                    Node::Seq(items) => {
                        self.push(format!("{lead}{key}:"), &paths);
                        let indent = if self.bit() { col } else { col + 2 };
                        self.items(items, indent, &p, Vec::new());
                    }
                }
            }
        }

        /// `pending` holds the paths of enclosing nodes that start where this sequence does,
        /// at its first dash.
        fn items(&mut self, items: &[Node], col: usize, at: &[Seg], mut pending: Vec<Vec<Seg>>) {
            let pad = " ".repeat(col);
            for (i, value) in items.iter().enumerate() {
                let mut p = at.to_vec();
                p.push(Seg::Index(i));
                let mut paths = std::mem::take(&mut pending);
                if let Node::Seq(inner) = value {
                    if !self.bit() {
                        // A dash alone: the item's node starts at its own first dash, below.
                        self.push(format!("{pad}-"), &paths);
                        self.items(inner, col + 2, &p, vec![p.clone()]);
                        continue;
                    }
                }
                paths.push(p.clone());
                match value {
                    Node::Scalar(s) => self.push(format!("{pad}- {s}"), &paths),
                    Node::Map(entries) if !self.bit() => {
                        self.entries(entries, col + 2, &p, Some(paths));
                    }
                    _ => {
                        let text = flow(value, &p, &mut paths);
                        self.push(format!("{pad}- {text}"), &paths);
                    }
                }
            }
        }
    }

    /// Renders `node` in flow style on one line, adding every path inside it to `paths`.
    fn flow(node: &Node, at: &[Seg], paths: &mut Vec<Vec<Seg>>) -> String {
        let mut child = |seg: Seg, node: &Node| {
            let mut p = at.to_vec();
            p.push(seg);
            paths.push(p.clone());
            flow(node, &p, paths)
        };
        match node {
            Node::Scalar(s) => s.clone(),
            Node::Seq(items) => {
                let items: Vec<String> = (items.iter().enumerate())
                    .map(|(i, item)| child(Seg::Index(i), item))
                    .collect();
                format!("[{}]", items.join(", "))
            }
            Node::Map(entries) => {
                let entries: Vec<String> = (entries.iter())
                    .map(|(key, value)| format!("{key}: {}", child(Seg::Key(key.clone()), value)))
                    .collect();
                format!("{{{}}}", entries.join(", "))
            }
        }
    }

    /// Every path below the document in a parsed value, labelled as the validator labels them.
    fn value_paths(value: &Value, at: &mut Vec<Seg>, out: &mut HashSet<Vec<Seg>>) {
        let children: Vec<(Seg, &Value)> = match value {
            Value::Sequence(items) => (items.iter().enumerate())
                .map(|(i, item)| (Seg::Index(i), item))
                .collect(),
            Value::Mapping(map) => (map.iter())
                .map(|(key, value)| (Seg::Key(key_label(key)), value))
                .collect(),
            _ => Vec::new(),
        };
        for (seg, child) in children {
            at.push(seg);
            out.insert(at.clone());
            value_paths(child, at, out);
            at.pop();
        }
    }

    /// A valid config for mutation: block style, comments, both table forms.
    const VALID: &str = "\
# settings
poll_interval: 30s
request_timeout: 5s
concurrency: 4
max_attempts: 2
targets:
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    poll_interval: 10s
    tables:
      - orders
      - arn:aws:dynamodb:us-east-1:123456789012:table/payments
  - region: eu-west-1
    tables: [audit, \"events\"]
";

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
    const FULL: &str = "\
max_requests_per_second: 2.5
targets:
  - regions: [us-east-1, eu-west-1]
    role_arn: arn:aws:iam::222222222222:role/ops/dynamodb-kinesis-exporter
    external_id: \"12345\"
    session_name: dke@prod
    max_requests_per_second: 5
    discovery:
      include: [\"^orders-\"]
      exclude: [\"-test$\"]
      tags: {cdc: \"true\", env: \"/prod|staging/\"}
      refresh_interval: 10m
    tables:
      - legacy-table
      - arn:aws:dynamodb:eu-west-1:333333333333:table/shared
    cdc_metrics: {enabled: true, interval: 1m}
  - region: us-east-1
    discovery: {}
    cdc_metrics:
      enabled: false
";

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
                        },
                    ],
                },
                Target {
                    regions: vec!["us-east-1".to_owned()],
                    endpoint_url: None,
                    role: None,
                    // The global value, not the default.
                    max_requests_per_second: 2.5,
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
targets: 2 (3 tables)
  - regions: us-east-1, eu-west-1
    endpoint_url: (AWS default)
    role_arn: arn:aws:iam::222222222222:role/ops/dynamodb-kinesis-exporter (account 222222222222)
    external_id: (set)
    session_name: dke@prod
    poll_interval: 1m
    request_timeout: 10s
    max_requests_per_second: 5
    discovery:
      include: ^orders-
      exclude: -test$
      tags: cdc=\"true\", env=/prod|staging/
      refresh_interval: 10m
    tables: legacy-table, shared (account 333333333333, region eu-west-1)
    cdc_metrics: every 1m
  - region: us-east-1
    endpoint_url: (AWS default)
    poll_interval: 1m
    request_timeout: 10s
    max_requests_per_second: 2.5
    discovery:
      include: (every table)
      exclude: (none)
      refresh_interval: 5m
    tables: (discovered only)"
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
                    // An empty item has no line of its own; it sorts by its list.
                    "exporter.yaml: targets[0].regions[1]: expected an AWS region name, found an empty value",
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
    fn table_arns_must_be_in_one_of_the_targets_regions() {
        let text = "\
targets:
  - regions: [us-east-1, eu-west-1]
    tables:
      - arn:aws:dynamodb:eu-west-1:123456789012:table/orders
      - arn:aws:dynamodb:ap-south-1:123456789012:table/orders
  - region: us-east-1
    tables:
      - arn:aws:dynamodb:eu-west-1:123456789012:table/payments
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:5: targets[0].tables[1]: ARN region ap-south-1 is not one of the target's regions (us-east-1, eu-west-1)",
                "exporter.yaml:8: targets[1].tables[0]: ARN region eu-west-1 does not match the target's region us-east-1",
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
    fn the_same_name_in_different_accounts_is_not_a_duplicate() {
        let config = ok("\
targets:
  - region: us-east-1
    tables: [orders]
  - region: us-east-1
    role_arn: arn:aws:iam::222222222222:role/exporter
    tables: [orders]
  - region: us-east-1
    role_arn: arn:aws:iam::333333333333:role/exporter
    tables:
      - orders
      - arn:aws:dynamodb:us-east-1:444444444444:table/orders
  - regions: [us-east-1, eu-west-1]
    tables:
      - arn:aws:dynamodb:eu-west-1:555555555555:table/orders
      - arn:aws:dynamodb:eu-west-1:666666666666:table/orders
");
        assert_eq!(config.table_count(), 6);
    }

    #[test]
    fn the_same_table_in_one_account_is_a_duplicate() {
        let text = "\
targets:
  - region: us-east-1
    role_arn: arn:aws:iam::222222222222:role/exporter
    tables: [orders, audit]
  - region: us-east-1
    role_arn: arn:aws:iam::222222222222:role/other
    tables: [orders]
  - region: us-east-1
    tables:
      - arn:aws:dynamodb:us-east-1:222222222222:table/audit
      - arn:aws:dynamodb:us-east-1:777777777777:table/audit
      - arn:aws:dynamodb:us-east-1:777777777777:table/audit
  - regions: [eu-west-1, us-east-1]
    role_arn: arn:aws:iam::333333333333:role/exporter
    tables:
      - arn:aws:dynamodb:us-east-1:333333333333:table/orders
      - orders
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:7: targets[1].tables[0]: table \"orders\" of account 222222222222 in region us-east-1 is already listed at targets[0].tables[0]",
                "exporter.yaml:10: targets[2].tables[0]: table \"audit\" of account 222222222222 in region us-east-1 is already listed at targets[0].tables[1]",
                // Without roles on either side, the message is the one it always was.
                "exporter.yaml:12: targets[2].tables[2]: table \"audit\" in region us-east-1 is already listed at targets[2].tables[1]",
                "exporter.yaml:17: targets[3].tables[1]: table \"orders\" of account 333333333333 in region us-east-1 is already listed at targets[3].tables[0]",
            ]
        );
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
    fn role_arns_parse() {
        assert_eq!(
            parse_role_arn("arn:aws:iam::123456789012:role/exporter"),
            Ok(RoleArn {
                partition: "aws".to_owned(),
                account_id: "123456789012".to_owned(),
                path: "/".to_owned(),
                name: "exporter".to_owned(),
            })
        );
        assert_eq!(
            parse_role_arn("arn:aws-cn:iam::123456789012:role/a/b.c/Role+=,.@_-1"),
            Ok(RoleArn {
                partition: "aws-cn".to_owned(),
                account_id: "123456789012".to_owned(),
                path: "/a/b.c/".to_owned(),
                name: "Role+=,.@_-1".to_owned(),
            })
        );
        for text in [
            "",
            "arn:aws:iam::123456789012:role/",
            "arn:aws:iam::123456789012:role",
            "arn:aws:iam::123456789012:user/exporter",
            "arn:aws:iam:us-east-1:123456789012:role/exporter",
            "arn:aws:sts::123456789012:role/exporter",
            "arn:aws:iam::12345678901:role/exporter",
            "arn:aws:iam::12345678901x:role/exporter",
            "arn:aws:iam::123456789012:role//exporter",
            "arn:aws:iam::123456789012:role/a//exporter",
            "arn:aws:iam::123456789012:role/a b/exporter",
            "arn:aws:iam::123456789012:role/exporter/",
            "arn:AWS:iam::123456789012:role/exporter",
            "arn:aws:dynamodb:us-east-1:123456789012:table/orders",
        ] {
            assert_eq!(
                parse_role_arn(text),
                Err(ArnError::MalformedRole(text.to_owned())),
                "{text}"
            );
        }
        for name in ["a:b", "é", &"r".repeat(65)] {
            let text = format!("arn:aws:iam::123456789012:role/{name}");
            assert_eq!(
                parse_role_arn(&text),
                Err(ArnError::RoleName(name.to_owned()))
            );
        }
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
        let text = "\
targets:
  - region: us-east-1
    discovery:
      include: [\"^ok\", \"(\", 5]
      exclude: \"-test$\"
      tags:
        cdc: true
        env: \"/prod(/\"
        7: x
        team: \"/a)|(b/\"
      refresh_interval: 0s
      refresh: 5m
";
        assert_eq!(
            problems(text),
            [
                "exporter.yaml:4: targets[0].discovery.include[1]: \"(\" is not a valid regular expression: unclosed group",
                "exporter.yaml:4: targets[0].discovery.include[2]: expected a regular expression, found 5 (quote it: \"5\")",
                "exporter.yaml:5: targets[0].discovery.exclude: expected a list of regular expressions, found \"-test$\"",
                "exporter.yaml:7: targets[0].discovery.tags.cdc: expected a tag value (a string, or a regular expression written /.../), found true (quote it: \"true\")",
                "exporter.yaml:8: targets[0].discovery.tags.env: \"/prod(/\" is not a valid regular expression: unclosed group",
                "exporter.yaml:9: targets[0].discovery.tags.7: expected a tag key, found 7 (quote it: \"7\")",
                "exporter.yaml:10: targets[0].discovery.tags.team: \"/a)|(b/\" is not a valid regular expression: unopened group",
                "exporter.yaml:11: targets[0].discovery.refresh_interval: must be greater than zero",
                "exporter.yaml:12: targets[0].discovery.refresh: unknown key (expected one of: include, exclude, tags, refresh_interval)",
            ]
        );
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
    fn regex_problems_are_one_line() {
        for source in ["(", "[z-a]", "a{2,1}", "\\p{Nope}", "(?z)", "\\"] {
            let err = Pattern::new(source).unwrap_err();
            let message = regex_problem(source, &err);
            assert!(!message.contains('\n'), "{message}");
            assert!(message.starts_with(&format!("{source:?} is not a valid regular expression: ")));
            assert!(!message.ends_with(": "), "{message}");
        }
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

        #[test]
        fn arns_round_trip(
            partition in "aws|aws-cn|aws-us-gov|[a-z0-9-]{1,32}",
            region in "[a-z]{2}(-[a-z]{1,9}){1,2}-[0-9]|[a-z0-9-]{1,32}",
            account in "[0-9]{12}",
            table in "[A-Za-z0-9_.-]{3,255}",
        ) {
            let text = format!("arn:{partition}:dynamodb:{region}:{account}:table/{table}");
            let arn = parse_table_arn(&text).unwrap();
            prop_assert_eq!(&arn.partition, &partition);
            prop_assert_eq!(&arn.region, &region);
            prop_assert_eq!(&arn.account_id, &account);
            prop_assert_eq!(&arn.table, &table);
            prop_assert_eq!(arn.to_string(), text);
        }

        #[test]
        fn role_arns_round_trip(
            partition in "aws|aws-cn|aws-us-gov|[a-z0-9-]{1,32}",
            account in "[0-9]{12}",
            dirs in prop::collection::vec("[A-Za-z0-9+=,.@_-]{1,12}", 0..4),
            name in "[A-Za-z0-9+=,.@_-]{1,64}",
        ) {
            let path = if dirs.is_empty() { "/".to_owned() } else { format!("/{}/", dirs.join("/")) };
            let text = format!("arn:{partition}:iam::{account}:role{path}{name}");
            let arn = parse_role_arn(&text).unwrap();
            prop_assert_eq!(&arn.partition, &partition);
            prop_assert_eq!(&arn.account_id, &account);
            prop_assert_eq!(&arn.path, &path);
            prop_assert_eq!(&arn.name, &name);
            prop_assert_eq!(arn.to_string(), text);
        }

        #[test]
        fn role_arn_parsing_never_panics(text in "arn:[a-z]{0,4}:iam:[a-z-]{0,3}:[0-9]{0,13}:role[/a-z@:]{0,12}") {
            if let Ok(arn) = parse_role_arn(&text) {
                prop_assert_eq!(arn.to_string(), text);
            }
        }

        #[test]
        fn durations_round_trip(millis in 0u64..=86_400_000) {
            let d = Duration::from_millis(millis);
            prop_assert_eq!(parse_duration(&format_duration(d)), Some(d));
        }

        #[test]
        fn locator_finds_every_path_of_generated_yaml(
            root in prop::collection::btree_map("[a-z]{1,6}", node(), 1..5),
            noise in any::<u64>(),
        ) {
            let entries: Vec<(String, Node)> = root.into_iter().collect();
            let mut render = Render { lines: Vec::new(), expected: Vec::new(), noise };
            render.entries(&entries, 0, &[], None);
            let text = render.lines.join("\n");
            let value = serde_yaml::from_str::<Value>(&text);
            prop_assert!(value.is_ok(), "invalid YAML:\n{}", text);
            let positions = Positions::new(&text);
            for (p, line) in &render.expected {
                let found = positions.of(p).map(|pos| pos.line);
                prop_assert_eq!(found, Some(*line), "{:?} in\n{}", p, text);
            }
            // The event parser and serde_yaml agree on which paths the text has.
            let mut paths = HashSet::new();
            value_paths(&value.unwrap(), &mut Vec::new(), &mut paths);
            let located: HashSet<Vec<Seg>> = positions.0.keys().cloned().collect();
            prop_assert_eq!(located, paths, "in\n{}", text);
        }
    }
}
