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
//! style as in block style. That read happens only once there is a problem to place. Table ARNs
//! are parsed here too ([`parse_table_arn`]).

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::{Mapping, Value};
use yaml_rust2::parser::{Event, Parser, Tag};
use yaml_rust2::scanner::{ScanError, TScalarStyle};

/// How often each table is polled unless the file says otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// Bound on one API call, retries included, unless the file says otherwise.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// API calls in flight across all targets unless the file says otherwise.
pub const DEFAULT_CONCURRENCY: usize = 8;
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
    /// Maximum API calls in flight overall.
    pub concurrency: usize,
    /// SDK attempts per poll (1 = no retries).
    pub max_attempts: u32,
    /// Never empty once validated.
    pub targets: Vec<Target>,
}

/// One region (or endpoint) and the tables polled there.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub region: String,
    /// Overrides the SDK's endpoint, e.g. a local simulator.
    pub endpoint_url: Option<String>,
    /// The target's override if it has one, else the global value.
    pub poll_interval: Duration,
    /// The target's override if it has one, else the global value.
    pub request_timeout: Duration,
    /// Never empty once validated.
    pub tables: Vec<TableRef>,
}

/// A table as configured.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TableRef {
    /// Exactly as written (a name or an ARN); sent as `TableName`, which accepts both, so a table
    /// shared from another account is reachable.
    pub identifier: String,
    /// The bare table name, used as the `table` label.
    pub name: String,
    /// The account from the ARN; `None` for plain names.
    pub account_id: Option<String>,
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
}

const TABLE_NAME_RULE: &str =
    "is not a valid table name (3 to 255 characters: letters, digits, '_', '-', '.')";

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
    /// Tables across all targets.
    pub fn table_count(&self) -> usize {
        self.targets.iter().map(|t| t.tables.len()).sum()
    }

    /// A human-readable account of the effective configuration (defaults and overrides
    /// resolved), for `--config.check`. No trailing newline.
    pub fn summary(&self) -> String {
        let mut out = vec![
            format!("poll_interval: {}", format_duration(self.poll_interval)),
            format!("request_timeout: {}", format_duration(self.request_timeout)),
            format!("concurrency: {}", self.concurrency),
            format!("max_attempts: {}", self.max_attempts),
            format!(
                "targets: {} ({})",
                self.targets.len(),
                plural(self.table_count(), "table")
            ),
        ];
        for target in &self.targets {
            let tables: Vec<String> = target
                .tables
                .iter()
                .map(|t| match &t.account_id {
                    Some(account) => format!("{} (account {account})", t.name),
                    None => t.name.clone(),
                })
                .collect();
            out.push(format!("  - region: {}", target.region));
            out.push(format!(
                "    endpoint_url: {}",
                target.endpoint_url.as_deref().unwrap_or("(AWS default)")
            ));
            out.push(format!(
                "    poll_interval: {}",
                format_duration(target.poll_interval)
            ));
            out.push(format!(
                "    request_timeout: {}",
                format_duration(target.request_timeout)
            ));
            out.push(format!("    tables: {}", tables.join(", ")));
        }
        out.join("\n")
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
            targets: Vec::new(),
        };
        // Targets last: they inherit the global intervals wherever those were written.
        if let Some((path, value)) = m.require(self, "targets", TARGETS_MISSING) {
            config.targets = self.targets(&path, value, &config);
        }
        m.finish(self);
        config
    }

    fn targets(&mut self, path: &FieldPath, value: &Value, globals: &Config) -> Vec<Target> {
        // (region, table name) -> where first listed: such twins would export colliding series.
        let mut seen = HashMap::new();
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
        seen: &mut HashMap<(String, String), String>,
    ) -> Option<Target> {
        let mut m = self.mapping(path, value)?;
        // The region first, whatever the key order: table ARNs are checked against it.
        let region = m
            .require(self, "region", "is required")
            .and_then(|(path, value)| self.region(&path, value));
        let target = Target {
            region: region.clone().unwrap_or_default(),
            endpoint_url: m.check(self, "endpoint_url", Self::endpoint),
            poll_interval: m
                .check(self, "poll_interval", Self::duration)
                .unwrap_or(globals.poll_interval),
            request_timeout: m
                .check(self, "request_timeout", Self::duration)
                .unwrap_or(globals.request_timeout),
            tables: m
                .require(self, "tables", TABLES_MISSING)
                .map(|(path, value)| self.tables(&path, value, region.as_deref(), seen))
                .unwrap_or_default(),
        };
        m.finish(self);
        Some(target)
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

    fn tables(
        &mut self,
        path: &FieldPath,
        value: &Value,
        region: Option<&str>,
        seen: &mut HashMap<(String, String), String>,
    ) -> Vec<TableRef> {
        let mut tables = Vec::new();
        for (i, item) in self.list(path, value, TABLES_MISSING).iter().enumerate() {
            let item_path = path.index(i);
            let Some(table) = self.table(&item_path, item, region) else {
                continue;
            };
            if let Some(region) = region {
                let key = (region.to_owned(), table.name.clone());
                if let Some(first) = seen.get(&key) {
                    let message = format!(
                        "table {:?} in region {region} is already listed at {first}",
                        table.name
                    );
                    self.report(&item_path, message);
                    continue;
                }
                seen.insert(key, item_path.to_string());
            }
            tables.push(table);
        }
        tables
    }

    /// One entry of `tables`: a table name, or an ARN in the target's region.
    fn table(&mut self, path: &FieldPath, value: &Value, region: Option<&str>) -> Option<TableRef> {
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
            return Some(TableRef {
                identifier: identifier.clone(),
                name: identifier.clone(),
                account_id: None,
            });
        }
        let arn = match parse_table_arn(identifier) {
            Ok(arn) => arn,
            Err(err) => {
                self.report(path, err.to_string());
                return None;
            }
        };
        if let Some(region) = region.filter(|r| *r != arn.region) {
            let message = format!(
                "ARN region {} does not match the target's region {region}",
                arn.region
            );
            self.report(path, message);
            return None;
        }
        Some(TableRef {
            identifier: identifier.clone(),
            name: arn.table,
            account_id: Some(arn.account_id),
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

impl Config {
    /// What an empty file would give, before its missing targets are reported.
    fn defaults() -> Config {
        Config {
            poll_interval: DEFAULT_POLL_INTERVAL,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            concurrency: DEFAULT_CONCURRENCY,
            max_attempts: DEFAULT_MAX_ATTEMPTS,
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
            validator.report_at(&self.path.key(key), &self.path, missing);
        }
        found
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

    const SHIPPED: &str = include_str!("../config/exporter.yaml");
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
            identifier: name.to_owned(),
            name: name.to_owned(),
            account_id: None,
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
        assert_eq!(config.targets.len(), 1);
        let target = &config.targets[0];
        assert_eq!(target.region, "us-east-1");
        assert_eq!(target.endpoint_url, None);
        assert_eq!(
            target.tables,
            vec![
                table("orders"),
                table("customers"),
                TableRef {
                    identifier: "arn:aws:dynamodb:us-east-1:123456789012:table/payments".to_owned(),
                    name: "payments".to_owned(),
                    account_id: Some("123456789012".to_owned()),
                },
            ]
        );
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
                targets: vec![Target {
                    region: "eu-west-1".to_owned(),
                    endpoint_url: None,
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
targets: 2 (3 tables)
  - region: us-east-1
    endpoint_url: http://127.0.0.1:8000
    poll_interval: 1m30s
    request_timeout: 2s500ms
    tables: orders, payments (account 123456789012)
  - region: eu-west-1
    endpoint_url: (AWS default)
    poll_interval: 1m30s
    request_timeout: 10s
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
                "exporter.yaml:1: pol_interval: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, targets)",
                "exporter.yaml:4: targets[0].regoin: unknown key (expected one of: region, endpoint_url, poll_interval, request_timeout, tables)",
                "exporter.yaml:6: 5: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, targets)",
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
        let text = include_str!("../tests/fixtures/config/several_problems.yaml");
        let expected = include_str!("../tests/fixtures/config/several_problems.expected");
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
                "exporter.yaml:4: x: unknown key (expected one of: poll_interval, request_timeout, concurrency, max_attempts, targets)".to_owned(),
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

    fn mutated() -> impl Strategy<Value = String> {
        let op = (
            0usize..4,
            any::<prop::sample::Index>(),
            "[-:#\\[\\]{}'\" \n\ta-z0-9&*!|>.]{0,6}",
        );
        prop::collection::vec(op, 1..6).prop_map(|ops| {
            let mut text = VALID.to_owned();
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
                    assert!(is_aws_name(&target.region));
                    assert!(!target.tables.is_empty());
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
        fn parse_never_panics_on_mutated_configs(text in mutated()) {
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
