//! The typed checks: one `check_*` function per part of the file, each reading its node through
//! the [`Checker`], reporting every problem it finds, and building its part from what was valid.
//! Every number is checked against the range in the constants of [`super`].

use std::collections::HashMap;
use std::time::Duration;

use dke_yaml::{Checker, Field, Map, Value};

use super::names::*;
use super::*;

const TARGETS_MISSING: &str = "must list at least one target";
const TABLES_MISSING: &str = "must list at least one table";

pub(super) fn check_config(c: &mut Checker, doc: &Field) -> Config {
    let mut m = match &doc.node.value {
        // An empty file is all defaults, which then lacks targets.
        Value::Null => Map::empty(doc),
        _ => match c.map(doc) {
            Some(m) => m,
            None => return Config::defaults(),
        },
    };
    let defaults = Config::defaults();
    let mut config = Config {
        poll_interval: duration(c, &mut m, "poll_interval", MIN_POLL_INTERVAL)
            .unwrap_or(defaults.poll_interval),
        request_timeout: duration(c, &mut m, "request_timeout", MIN_REQUEST_TIMEOUT)
            .unwrap_or(defaults.request_timeout),
        concurrency: (m.get("concurrency"))
            .and_then(|f| c.integer(&f, 1, MAX_CONCURRENCY as u64))
            .unwrap_or(defaults.concurrency),
        max_attempts: (m.get("max_attempts"))
            .and_then(|f| c.integer(&f, 1, MAX_ATTEMPTS.into()))
            .unwrap_or(defaults.max_attempts),
        max_requests_per_second: rate(c, &mut m, "max_requests_per_second")
            .unwrap_or(defaults.max_requests_per_second),
        kinesis_max_requests_per_second: rate(c, &mut m, "kinesis_max_requests_per_second")
            .unwrap_or(defaults.kinesis_max_requests_per_second),
        cloudwatch_max_requests_per_second: rate(c, &mut m, "cloudwatch_max_requests_per_second")
            .unwrap_or(defaults.cloudwatch_max_requests_per_second),
        targets: Vec::new(),
    };
    // Targets last: they inherit the global values wherever those were written.
    if let Some(targets) = m.require(c, "targets", TARGETS_MISSING) {
        let mut seen = Seen::default();
        config.targets = (c.list(&targets, TARGETS_MISSING).iter())
            .filter_map(|target| check_target(c, target, &config, &mut seen))
            .collect();
    }
    m.finish(c);
    config
}

/// A duration key of `m` from `min` to [`MAX_DURATION`], if written and valid.
fn duration(c: &mut Checker, m: &mut Map, key: &'static str, min: Duration) -> Option<Duration> {
    m.get(key).and_then(|f| c.duration(&f, min, MAX_DURATION))
}

/// A request rate key of `m`, if written and valid.
fn rate(c: &mut Checker, m: &mut Map, key: &'static str) -> Option<f64> {
    let (min, max) = (MIN_REQUESTS_PER_SECOND, MAX_REQUESTS_PER_SECOND);
    m.get(key).and_then(|f| c.number(&f, min, max))
}

fn check_target(c: &mut Checker, at: &Field, globals: &Config, seen: &mut Seen) -> Option<Target> {
    let mut m = c.map(at)?;
    // Regions and role first, whatever the key order: table ARNs are checked against the
    // regions, and the role's account tells tables of the same name apart.
    let regions = check_regions(c, &mut m);
    let endpoint_url = m.get("endpoint_url").and_then(|f| {
        match &f.node.value {
            Value::String(url) if is_http_url(url) => return Some(url.clone()),
            Value::String(url) => c.report(&f, format!("{url:?} is not an http or https URL")),
            other => {
                let found = dke_yaml::describe(other);
                c.report(&f, format!("expected an http or https URL, found {found}"));
            }
        }
        None
    });
    let role = check_role(c, &mut m);
    let mut rate = |key, global| rate(c, &mut m, key).unwrap_or(global);
    let max_requests_per_second = rate("max_requests_per_second", globals.max_requests_per_second);
    let kinesis_max_requests_per_second = rate(
        "kinesis_max_requests_per_second",
        globals.kinesis_max_requests_per_second,
    );
    let cloudwatch_max_requests_per_second = rate(
        "cloudwatch_max_requests_per_second",
        globals.cloudwatch_max_requests_per_second,
    );
    let poll_interval =
        duration(c, &mut m, "poll_interval", MIN_POLL_INTERVAL).unwrap_or(globals.poll_interval);
    let request_timeout = duration(c, &mut m, "request_timeout", MIN_REQUEST_TIMEOUT)
        .unwrap_or(globals.request_timeout);
    let discovery_field = m.get("discovery");
    let discovery = discovery_field.as_ref().and_then(|f| check_discovery(c, f));
    let scope = TableScope {
        regions: regions.as_deref(),
        role_account: role.as_ref().map(|r| r.account_id.as_str()),
    };
    // With discovery, explicit tables are optional; written, they must still be valid.
    let tables = match (m.get("tables"), &discovery_field) {
        (Some(f), Some(_)) if matches!(&f.node.value, Value::Null) => None,
        (Some(f), Some(_)) if matches!(&f.node.value, Value::Seq(items) if items.is_empty()) => {
            None
        }
        (Some(f), _) => Some(check_tables(c, &f, &scope, seen)),
        (None, Some(_)) => None,
        (None, None) => {
            m.missing(c, "tables", TABLES_MISSING);
            None
        }
    };
    let cdc_metrics = m
        .get("cdc_metrics")
        .and_then(|f| check_cdc_metrics(c, &f))
        .flatten();
    let expect = m.get("expect").and_then(|f| check_expect(c, &f));
    let export_tags = (m.get("export_tags"))
        .map(|f| check_export_tags(c, &f))
        .unwrap_or_default();
    let tags_refresh_interval = duration(
        c,
        &mut m,
        "tags_refresh_interval",
        MIN_TAGS_REFRESH_INTERVAL,
    )
    .unwrap_or(DEFAULT_TAGS_REFRESH_INTERVAL);
    m.finish(c);
    Some(Target {
        regions: regions.unwrap_or_default(),
        endpoint_url,
        role,
        max_requests_per_second,
        kinesis_max_requests_per_second,
        cloudwatch_max_requests_per_second,
        expect,
        export_tags,
        tags_refresh_interval,
        discovery,
        cdc_metrics,
        poll_interval,
        request_timeout,
        tables: tables.unwrap_or_default(),
    })
}

/// `region` or `regions`, exactly one of them; `None` (reported) unless all are valid.
fn check_regions(c: &mut Checker, m: &mut Map) -> Option<Vec<String>> {
    match (m.get("region"), m.get("regions")) {
        (Some(single), None) => check_region(c, &single).map(|r| vec![r]),
        (None, Some(several)) => check_region_list(c, &several),
        (Some(single), Some(several)) => {
            check_region(c, &single);
            check_region_list(c, &several);
            c.report(
                &several,
                "cannot be combined with region: give one or the other",
            );
            None
        }
        (None, None) => {
            m.missing(c, "region", "is required");
            None
        }
    }
}

fn check_region(c: &mut Checker, at: &Field) -> Option<String> {
    match &at.node.value {
        Value::String(s) if is_aws_name(s) => return Some(s.clone()),
        Value::String(s) if s.is_empty() => c.report(at, "must not be empty"),
        Value::String(s) => c.report(at, format!("{s:?} is not a valid AWS region name")),
        Value::Null => c.report(at, "is required"),
        other => {
            let found = dke_yaml::describe(other);
            c.report(at, format!("expected an AWS region name, found {found}"));
        }
    }
    None
}

fn check_region_list(c: &mut Checker, at: &Field) -> Option<Vec<String>> {
    let items = c.list(at, "must list at least one region");
    let mut regions: Vec<String> = Vec::new();
    let mut valid = !items.is_empty();
    for item in &items {
        let region = match item.node.value {
            Value::Null => {
                c.report(item, "expected an AWS region name, found an empty value");
                None
            }
            _ => check_region(c, item),
        };
        let Some(region) = region else {
            valid = false;
            continue;
        };
        match regions.iter().position(|r| *r == region) {
            Some(first) => {
                let message = format!("region {region} is already listed at {}[{first}]", at.path);
                c.report(item, message);
            }
            None => regions.push(region),
        }
    }
    valid.then_some(regions)
}

/// `role_arn` and the settings that only make sense with it.
fn check_role(c: &mut Checker, m: &mut Map) -> Option<Role> {
    let arn_field = m.get("role_arn");
    let arn = arn_field.as_ref().and_then(|f| {
        let text = c.string(f, "an IAM role ARN")?;
        (parse_role_arn(text))
            .map_err(|err| c.report(f, err.to_string()))
            .ok()
            .map(|arn| (text.to_owned(), arn))
    });
    // An invalid role_arn is reported once; its companions are not "without" it.
    let with_role = arn_field.is_some();
    let mut option = |c: &mut Checker, key, valid: fn(&str) -> bool, rule: &str| {
        let f = m.get(key)?;
        if !with_role {
            c.report(&f, "is only used with role_arn, which is not given");
            return None;
        }
        let text = c.string(&f, "a string")?;
        if !valid(text) {
            c.report(&f, format!("{text:?} {rule}"));
            return None;
        }
        Some(text.to_owned())
    };
    let external_id = option(c, "external_id", is_external_id, EXTERNAL_ID_RULE);
    let session_name = option(c, "session_name", is_session_name, SESSION_NAME_RULE);
    arn.map(|(text, arn)| Role {
        arn: text,
        account_id: arn.account_id,
        external_id,
        session_name,
    })
}

fn check_discovery(c: &mut Checker, at: &Field) -> Option<Discovery> {
    let mut m = c.map(at)?;
    let discovery = Discovery {
        include: m
            .get("include")
            .and_then(|f| check_patterns(c, &f))
            .unwrap_or_default(),
        exclude: m
            .get("exclude")
            .and_then(|f| check_patterns(c, &f))
            .unwrap_or_default(),
        tags: m
            .get("tags")
            .and_then(|f| check_tags(c, &f))
            .unwrap_or_default(),
        refresh_interval: duration(c, &mut m, "refresh_interval", MIN_REFRESH_INTERVAL)
            .unwrap_or(DEFAULT_REFRESH_INTERVAL),
    };
    m.finish(c);
    Some(discovery)
}

/// A list of regexes, possibly empty.
fn check_patterns(c: &mut Checker, at: &Field) -> Option<Vec<Pattern>> {
    let Value::Seq(items) = &at.node.value else {
        let found = dke_yaml::describe(&at.node.value);
        c.report(
            at,
            format!("expected a list of regular expressions, found {found}"),
        );
        return None;
    };
    let mut patterns = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = at.index(i, item);
        let Some(source) = c.string(&item, "a regular expression") else {
            continue;
        };
        match Pattern::new(source) {
            Ok(pattern) => patterns.push(pattern),
            Err(err) => c.report(&item, regex_problem(source, &err)),
        }
    }
    Some(patterns)
}

fn check_tags(c: &mut Checker, at: &Field) -> Option<Vec<(String, TagMatch)>> {
    let Value::Map(entries) = &at.node.value else {
        let found = dke_yaml::describe(&at.node.value);
        c.report(
            at,
            format!("expected a mapping of tag keys to values, found {found}"),
        );
        return None;
    };
    let mut tags = Vec::new();
    for (key, wanted) in entries {
        let label = match &key.value {
            Value::String(s) => s.clone(),
            other => dke_yaml::describe(other),
        };
        let (key_at, value_at) = (at.key(&label, key), at.key(&label, wanted));
        let Some(key) = c.string(&key_at, "a tag key") else {
            continue;
        };
        let what = "a tag value (a string, or a regular expression written /.../)";
        let Some(written) = c.string(&value_at, what) else {
            continue;
        };
        match TagMatch::new(written) {
            Ok(matcher) => tags.push((key.to_owned(), matcher)),
            Err(err) => c.report(&value_at, regex_problem(written, &err)),
        }
    }
    Some(tags)
}

/// `Some` when enabled; `enabled` defaults to true once the block is written.
fn check_cdc_metrics(c: &mut Checker, at: &Field) -> Option<Option<CdcMetrics>> {
    let mut m = c.map(at)?;
    let enabled = m.get("enabled").and_then(|f| c.boolean(&f));
    let interval =
        duration(c, &mut m, "interval", MIN_CDC_INTERVAL).unwrap_or(DEFAULT_CDC_INTERVAL);
    m.finish(c);
    Some(enabled.unwrap_or(true).then_some(CdcMetrics { interval }))
}

/// `expect`; `None` when it expects nothing of the target as a whole and names no stream.
fn check_expect(c: &mut Checker, at: &Field) -> Option<Expect> {
    let mut m = c.map(at)?;
    let streaming = m.get("streaming").and_then(|f| c.boolean(&f));
    let tag_field = m.get("tag");
    let tag = (tag_field.as_ref()).and_then(|f| tag_key(c, f));
    let stream = m.get("stream").and_then(|f| {
        let source = c.string(&f, "a regular expression")?;
        (Pattern::new(source))
            .map_err(|err| c.report(&f, regex_problem(source, &err)))
            .ok()
    });
    if let (Some(true), Some(f)) = (streaming, &tag_field) {
        let which = tag.map_or("its".to_owned(), |tag| format!("whose {tag}"));
        let message = format!(
            "cannot be combined with streaming: true (keep streaming: true to expect every \
             table, or tag to expect only the tables {which} tag is \"true\")"
        );
        c.report(f, message);
    }
    m.finish(c);
    let streaming = streaming.unwrap_or(false);
    (streaming || tag.is_some() || stream.is_some()).then_some(Expect {
        streaming,
        tag: tag.filter(|_| !streaming).map(str::to_owned),
        stream,
    })
}

/// A tag key as AWS allows them, or `None` (reported).
fn tag_key<'n>(c: &mut Checker, at: &Field<'n>) -> Option<&'n str> {
    let key = c.string(at, "a tag key")?;
    if !is_tag_key(key) {
        c.report(at, format!("{key:?} {TAG_KEY_RULE}"));
        return None;
    }
    Some(key)
}

/// `export_tags`: at most [`MAX_EXPORT_TAGS`] keys, each once, no two with the same label.
fn check_export_tags(c: &mut Checker, at: &Field) -> Vec<ExportTag> {
    let Value::Seq(items) = &at.node.value else {
        let found = dke_yaml::describe(&at.node.value);
        c.report(at, format!("expected a list of tag keys, found {found}"));
        return Vec::new();
    };
    if items.len() > MAX_EXPORT_TAGS {
        let message = format!(
            "lists {} tag keys; at most {MAX_EXPORT_TAGS} (each is a label on every table's series)",
            items.len()
        );
        c.report(at, message);
    }
    let mut tags: Vec<(ExportTag, String)> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item = at.index(i, item);
        let Some(key) = tag_key(c, &item) else {
            continue;
        };
        let label = tag_label(key);
        let clash = (tags.iter()).find(|(t, _)| t.key == key || t.label == label);
        match clash {
            Some((first, path)) if first.key == key => {
                c.report(&item, format!("tag {key:?} is already listed at {path}"));
            }
            Some((first, path)) => {
                let message = format!(
                    "tag {key:?} and tag {:?} (at {path}) would both be the label {label}",
                    first.key
                );
                c.report(&item, message);
            }
            None => tags.push((
                ExportTag {
                    key: key.to_owned(),
                    label,
                },
                item.path.clone(),
            )),
        }
    }
    tags.into_iter().map(|(tag, _)| tag).collect()
}

fn check_tables(c: &mut Checker, at: &Field, scope: &TableScope, seen: &mut Seen) -> Vec<TableRef> {
    let mut tables = Vec::new();
    for item in c.list(at, TABLES_MISSING) {
        let Some(table) = check_table(c, &item, scope.regions) else {
            continue;
        };
        if let Some(regions) = scope.regions {
            if let Err(message) = seen.insert(&table, regions, scope.role_account, &item.path) {
                c.report(&item, message);
                continue;
            }
        }
        tables.push(table);
    }
    tables
}

/// One entry of `tables`: a table name or an ARN in one of the target's regions, alone or as
/// the `name` of a mapping that may also say `expect_streaming`.
fn check_table(c: &mut Checker, at: &Field, regions: Option<&[String]>) -> Option<TableRef> {
    let Value::Map(_) = &at.node.value else {
        return check_table_name(c, at, regions);
    };
    let mut m = c.map(at)?;
    let name = m.require(c, "name", "is required (the table's name or ARN)");
    let table = name.and_then(|f| check_table_name(c, &f, regions));
    let expect_streaming = m.get("expect_streaming").and_then(|f| c.boolean(&f));
    m.finish(c);
    Some(TableRef {
        expect_streaming,
        ..table?
    })
}

/// A table name, or an ARN in one of the target's regions.
fn check_table_name(c: &mut Checker, at: &Field, regions: Option<&[String]>) -> Option<TableRef> {
    let Value::String(identifier) = &at.node.value else {
        let found = dke_yaml::describe(&at.node.value);
        c.report(at, format!("expected a table name or ARN, found {found}"));
        return None;
    };
    if !identifier.starts_with("arn:") {
        if !is_table_name(identifier) {
            c.report(at, format!("{identifier:?} {TABLE_NAME_RULE}"));
            return None;
        }
        let identifier = Name::from(identifier.as_str());
        return Some(TableRef {
            identifier: identifier.clone(),
            name: identifier,
            account_id: None,
            region: None,
            expect_streaming: None,
        });
    }
    let arn = parse_table_arn(identifier)
        .map_err(|err| c.report(at, err.to_string()))
        .ok()?;
    let message = match regions {
        Some([region]) if *region != arn.region => Some(format!(
            "ARN region {} does not match the target's region {region}",
            arn.region
        )),
        Some(regions) if !regions.contains(&arn.region) => Some(format!(
            "ARN region {} is not one of the target's regions ({})",
            arn.region,
            regions.join(", ")
        )),
        _ => None,
    };
    if let Some(message) = message {
        c.report(at, message);
        return None;
    }
    Some(TableRef {
        identifier: Name::from(identifier.as_str()),
        name: Name::from(arn.table),
        account_id: Some(arn.account_id),
        region: Some(arn.region),
        expect_streaming: None,
    })
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
        at: &str,
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
                (self.0.entry(key)).or_insert_with(|| (at.to_owned(), role_account.is_some()));
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
            kinesis_max_requests_per_second: DEFAULT_KINESIS_MAX_REQUESTS_PER_SECOND,
            cloudwatch_max_requests_per_second: DEFAULT_CLOUDWATCH_MAX_REQUESTS_PER_SECOND,
            targets: Vec::new(),
        }
    }
}
