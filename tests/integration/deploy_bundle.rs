//! The deployment bundle under `deploy/` and its runbook, checked as files:
//! every YAML and JSON file parses, the Kubernetes manifests fit together
//! (labels, ports, probes, security context, config mount), the
//! PrometheusRule carries exactly the rule file's groups, every runbook link
//! lands on a heading, the IAM policies grant least privilege (reads on
//! tables, ListTables, and the hub's AssumeRole onto member roles that trust
//! it with an external id), and the dashboard uses its datasource variable
//! everywhere. Every alert rule meets the invariants of [`rule_problems`]
//! (severity, annotations, runbook anchor, `account_id` in joins, a firing
//! promtool case). The real tools run where they are installed: `promtool
//! check rules` / `promtool test rules`, `amtool check-config`,
//! `kubernetes-validate`, `kubectl kustomize`, the `python3` generator and
//! `systemd-analyze verify`. With `CI` set each of them must run (`.ci/run`
//! installs them): a missing tool fails its test. Without `CI` a missing
//! tool skips its checks, loudly.

use crate::support::{expand_grafana_variables, in_ci, required_tool, scratch};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Deserialize as _;
use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

const RUNBOOK_URL: &str =
    "https://github.com/dynamodb-kinesis-exporter/dynamodb-kinesis-exporter/blob/main/docs/runbook.md#";
const JOB: &str = "dynamodb-kinesis-exporter";
const NAME: &str = "dynamodb-kinesis-exporter";
const ALERTS: [&str; 20] = [
    "DynamoDBKinesisTableNoWorkingDestination",
    "DynamoDBKinesisDestinationStaleFailedEntry",
    "DynamoDBKinesisDestinationStuckInTransition",
    "DynamoDBKinesisExpectedTableNotStreaming",
    "DynamoDBKinesisExpectedTableWrongStream",
    "DynamoDBKinesisTableExpectationUnknown",
    "DynamoDBKinesisStreamMissing",
    "DynamoDBKinesisStreamChecksFailing",
    "DynamoDBKinesisReplicationLag",
    "DynamoDBKinesisReplicationLagCritical",
    "DynamoDBKinesisRecordsFailingToReplicate",
    "DynamoDBKinesisThrottledPuts",
    "DynamoDBKinesisCdcMetricsFailing",
    "DynamoDBKinesisExporterPollsFailing",
    "DynamoDBKinesisExporterDataStale",
    "DynamoDBKinesisExporterDiscoveryFailing",
    "DynamoDBKinesisExporterPollCycleStretched",
    "DynamoDBKinesisExporterTaskRestarts",
    "DynamoDBKinesisExporterDown",
    "DynamoDBKinesisExporterAbsent",
];

/// Alerts that page: a table's changes are not reaching its Kinesis stream
/// (a failed or missing destination, or CDC switched off on a table that
/// must stream), or the exporter's own background work panicked (it may
/// stop watching them without a sound). Everything else warns, but for the
/// leftover ENABLE_FAILED entry, which is only `info` (never the pager).
const CRITICAL: [&str; 6] = [
    "DynamoDBKinesisTableNoWorkingDestination",
    "DynamoDBKinesisExpectedTableNotStreaming",
    "DynamoDBKinesisStreamMissing",
    "DynamoDBKinesisReplicationLagCritical",
    "DynamoDBKinesisRecordsFailingToReplicate",
    "DynamoDBKinesisExporterTaskRestarts",
];
const INFO: [&str; 1] = ["DynamoDBKinesisDestinationStaleFailedEntry"];

/// The join that carries a table's exported tags into its alerts, as every
/// table-level rule ends (README "Alerting": edit the label list to match
/// `export_tags`).
const TAGS_JOIN: &str = "* on(job, instance, account_id, region, table) group_left(tag_team, tag_owner)\n  dynamodb_kinesis_table_tags\n";

/// A table-level rule's expression without its tags join: what is inside
/// the parentheses the join multiplies, dedented.
fn without_tags(expr: &str) -> String {
    let inner = expr
        .strip_suffix(TAGS_JOIN)
        .and_then(|e| e.strip_prefix("(\n"))
        .and_then(|e| e.strip_suffix(")\n"))
        .unwrap_or_else(|| panic!("no tags join around:\n{expr}"));
    inner
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    let path = repo().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(rel: &str) -> Yaml {
    serde_yaml::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn json(rel: &str) -> Json {
    serde_json::from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// Walk a YAML value by a dotted path; numeric segments index sequences.
fn at<'a>(v: &'a Yaml, path: &str) -> &'a Yaml {
    let mut cur = v;
    for seg in path.split('.') {
        let next = match seg.parse::<usize>() {
            Ok(i) => cur.get(i),
            Err(_) => cur.get(seg),
        };
        cur = next.unwrap_or_else(|| panic!("missing `{path}` (at `{seg}`) in {v:?}"));
    }
    cur
}

fn s<'a>(v: &'a Yaml, path: &str) -> &'a str {
    at(v, path)
        .as_str()
        .unwrap_or_else(|| panic!("`{path}` is not a string"))
}

fn string_map(v: &Yaml) -> BTreeMap<String, String> {
    v.as_mapping()
        .unwrap_or_else(|| panic!("not a mapping: {v:?}"))
        .iter()
        .map(|(k, v)| {
            let k = k.as_str().expect("string key").to_string();
            let v = match v {
                Yaml::String(s) => s.clone(),
                other => serde_yaml::to_string(other).unwrap().trim().to_string(),
            };
            (k, v)
        })
        .collect()
}

fn is_subset(small: &BTreeMap<String, String>, big: &BTreeMap<String, String>) -> bool {
    small.iter().all(|(k, v)| big.get(k) == Some(v))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn rel(path: &Path) -> String {
    path.strip_prefix(repo())
        .unwrap()
        .to_string_lossy()
        .into_owned()
}

fn run_tool(tool: &Path, args: &[&str], cwd: &Path) -> (bool, String) {
    let out = Command::new(tool)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", tool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

// ---------------------------------------------------------------- all files

#[test]
fn every_yaml_and_json_file_in_the_bundle_parses() {
    let mut files = Vec::new();
    files_under(&repo().join("deploy"), &mut files);
    let mut parsed = BTreeSet::new();
    for path in &files {
        let name = rel(path);
        let text = std::fs::read_to_string(path).unwrap();
        match path.extension().and_then(|e| e.to_str()) {
            Some("yml" | "yaml") => {
                let mut docs = 0;
                for doc in serde_yaml::Deserializer::from_str(&text) {
                    Yaml::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
                    docs += 1;
                }
                assert!(docs >= 1, "{name}: no YAML document");
            }
            Some("json") => {
                serde_json::from_str::<Json>(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            _ => continue,
        }
        parsed.insert(name);
    }
    let expected = [
        "deploy/alertmanager/alertmanager.yml",
        "deploy/grafana/dynamodb-kinesis.json",
        "deploy/iam/cdc-metrics-policy.json",
        "deploy/iam/irsa-trust-policy.json",
        "deploy/iam/member-role-policy.json",
        "deploy/iam/member-role-trust-policy.json",
        "deploy/iam/policy.json",
        "deploy/kubernetes-sharded/configmap.yaml",
        "deploy/kubernetes-sharded/headless-service.yaml",
        "deploy/kubernetes-sharded/kustomization.yaml",
        "deploy/kubernetes-sharded/statefulset.yaml",
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/kustomization.yaml",
        "deploy/kubernetes/prometheusrule.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes/serviceaccount.yaml",
        "deploy/kubernetes/servicemonitor.yaml",
        "deploy/prometheus/alerts.test.yml",
        "deploy/prometheus/alerts.yml",
    ];
    let expected: BTreeSet<String> = expected.iter().map(|s| s.to_string()).collect();
    assert_eq!(parsed, expected);
}

// ------------------------------------------------------------------- alerts

fn alert_rules() -> Vec<Yaml> {
    let doc = yaml("deploy/prometheus/alerts.yml");
    let groups = at(&doc, "groups").as_sequence().expect("groups");
    assert_eq!(groups.len(), 1);
    assert_eq!(s(&groups[0], "name"), "dynamodb-kinesis-exporter");
    at(&groups[0], "rules")
        .as_sequence()
        .expect("rules")
        .clone()
}

fn rule<'a>(rules: &'a [Yaml], alert: &str) -> &'a Yaml {
    rules
        .iter()
        .find(|r| r.get("alert").and_then(Yaml::as_str) == Some(alert))
        .unwrap_or_else(|| panic!("no alert {alert}"))
}

/// The rule file holds the intended alerts, in order, each with the severity
/// intended for it (which alerts page is a decision, so it is listed here),
/// and the annotations name the labels a reader needs. The properties every
/// rule must have are checked by [`rule_problems`] below.
#[test]
fn alert_rules_are_the_intended_ones_with_their_severities_and_labels() {
    let rules = alert_rules();
    let names: Vec<&str> = rules.iter().map(|r| s(r, "alert")).collect();
    assert_eq!(names, ALERTS, "alerts added or removed: update ALERTS");

    for r in &rules {
        let name = s(r, "alert");
        let severity = s(r, "labels.severity");
        let expected = if CRITICAL.contains(&name) {
            "critical"
        } else if INFO.contains(&name) {
            "info"
        } else {
            "warning"
        };
        assert_eq!(severity, expected, "{name}");
        let annotations = string_map(at(r, "annotations"));
        let keys: Vec<&str> = annotations.keys().map(String::as_str).collect();
        assert_eq!(keys, ["description", "runbook_url", "summary"], "{name}");
        assert_eq!(
            annotations["runbook_url"],
            format!("{RUNBOOK_URL}{}", name.to_lowercase()),
            "{name}"
        );
        let text = format!("{} {}", annotations["summary"], annotations["description"]);
        let per_exporter = matches!(
            name,
            "DynamoDBKinesisExporterDown"
                | "DynamoDBKinesisExporterAbsent"
                | "DynamoDBKinesisExporterTaskRestarts"
        );
        let per_scope = matches!(
            name,
            "DynamoDBKinesisExporterDiscoveryFailing"
                | "DynamoDBKinesisExporterPollCycleStretched"
                | "DynamoDBKinesisCdcMetricsFailing"
        );
        // A stream is checked once however many tables stream to it.
        let per_stream = name == "DynamoDBKinesisStreamChecksFailing";
        // Same-named tables in two accounts are two tables: every alert about
        // a table or a scope says which account it is in.
        if !per_exporter {
            for label in ["$labels.account_id", "$labels.region"] {
                assert!(text.contains(label), "{name} does not name {label}");
            }
        }
        if per_stream {
            assert!(text.contains("$labels.stream_arn"), "{name}");
            assert!(text.contains("$labels.code"), "{name}");
        }
        if !per_exporter && !per_scope && !per_stream {
            assert!(
                text.contains("$labels.table"),
                "{name} does not name the table"
            );
            // Every alert about a table carries its tags, so Alertmanager
            // can route it to the owning team.
            assert!(
                s(r, "expr").ends_with(TAGS_JOIN),
                "{name} does not join the tags:\n{}",
                s(r, "expr")
            );
        } else {
            assert!(
                !s(r, "expr").contains("dynamodb_kinesis_table_tags"),
                "{name}"
            );
        }
        let about_a_destination = name.starts_with("DynamoDBKinesisDestination")
            || name == "DynamoDBKinesisTableNoWorkingDestination"
            || name == "DynamoDBKinesisStreamMissing";
        if about_a_destination {
            for label in [
                "$labels.stream_name",
                "$labels.stream_arn",
                "$labels.status_description",
            ] {
                assert!(text.contains(label), "{name} does not name {label}");
            }
            assert!(
                s(r, "expr")
                    .contains("group_left(stream_name, stream_account_id, status_description)"),
                "{name} must join the info metric"
            );
        }
    }

    // ENABLE_FAILED never heals by itself: page at once, but only when the
    // table has no working destination; AWS keeps old ENABLE_FAILED entries
    // listed beside a working one, and those are info.
    let no_working = rule(&rules, "DynamoDBKinesisTableNoWorkingDestination");
    let delay = no_working.get("for").and_then(Yaml::as_str);
    assert!(matches!(delay, None | Some("0m" | "0s")), "for: {delay:?}");
    let working = "dynamodb_kinesis_destination_status{status=~\"ACTIVE|UPDATING\"} == 1";
    let expr = s(no_working, "expr");
    assert!(expr.contains("status=\"ENABLE_FAILED\"} == 1"), "{expr}");
    assert!(
        expr.contains("unless on(job, instance, account_id, table, region)\n"),
        "{expr}"
    );
    assert!(expr.contains(working), "{expr}");
    let stale = s(
        rule(&rules, "DynamoDBKinesisDestinationStaleFailedEntry"),
        "expr",
    );
    assert!(
        stale.contains("and on(job, instance, account_id, table, region)\n"),
        "{stale}"
    );
    assert!(stale.contains(working), "{stale}");
    // A deleted stream behind an ACTIVE destination; one bad poll does not
    // page, and only NOT_FOUND or DELETING count (never an AccessDenied).
    let missing = rule(&rules, "DynamoDBKinesisStreamMissing");
    assert_eq!(s(missing, "for"), "2m");
    let expr = s(missing, "expr");
    assert!(
        expr.contains("dynamodb_kinesis_stream_status{status=~\"NOT_FOUND|DELETING\"} == 1"),
        "{expr}"
    );
    assert!(
        expr.contains("on(job, instance, account_id, region, stream_arn)"),
        "{expr}"
    );
    let checks = s(rule(&rules, "DynamoDBKinesisStreamChecksFailing"), "expr");
    assert!(checks.contains("increase(dynamodb_kinesis_stream_api_errors_total[10m]) > 0"));
    assert!(checks.contains("dynamodb_kinesis_stream_poll_success == 0"));
    // Lag from CloudWatch: warning, then critical. No datapoint is no series,
    // never a zero, so the rules must not invent one (`absent`, `or vector`).
    for (alert, threshold) in [
        ("DynamoDBKinesisReplicationLag", "5 * 60"),
        ("DynamoDBKinesisReplicationLagCritical", "30 * 60"),
    ] {
        let r = rule(&rules, alert);
        assert_eq!(
            without_tags(s(r, "expr")),
            format!("dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds > {threshold}")
        );
        assert_eq!(s(r, "for"), "10m", "{alert}");
    }
    let failing = rule(&rules, "DynamoDBKinesisRecordsFailingToReplicate");
    assert_eq!(
        without_tags(s(failing, "expr")),
        "dynamodb_kinesis_cdc_failed_to_replicate_records > 0"
    );
    assert!(
        failing.get("for").is_none(),
        "failed records are lost: page at once"
    );
    let throttled = rule(&rules, "DynamoDBKinesisThrottledPuts");
    assert_eq!(
        without_tags(s(throttled, "expr")),
        "dynamodb_kinesis_cdc_throttled_put_records > 0"
    );
    assert_eq!(s(throttled, "for"), "15m");
    for r in &rules {
        let expr = s(r, "expr");
        if expr.contains("dynamodb_kinesis_cdc_") {
            assert!(
                !expr.contains("absent(") && !expr.contains("or vector("),
                "{}: {expr}",
                s(r, "alert")
            );
        }
    }
    // CDC switched off or never turned on, on a table that must stream:
    // no working (ACTIVE or UPDATING) destination for 15 minutes, for
    // tables polled successfully (the destinations count exists).
    let expected = rule(&rules, "DynamoDBKinesisExpectedTableNotStreaming");
    assert_eq!(s(expected, "for"), "15m");
    assert_eq!(
        without_tags(s(expected, "expr")),
        "(\n    (dynamodb_kinesis_table_destination_expected == 1)\n  unless on(job, instance, account_id, region, table)\n    (dynamodb_kinesis_destination_status{status=~\"ACTIVE|UPDATING\"} == 1)\n)\nand on(job, instance, account_id, region, table)\n  dynamodb_kinesis_table_destinations"
    );
    let wrong = rule(&rules, "DynamoDBKinesisExpectedTableWrongStream");
    assert_eq!(s(wrong, "for"), "15m");
    let expr = without_tags(s(wrong, "expr"));
    assert!(
        expr.starts_with("(dynamodb_kinesis_table_destination_stream_match == 0)\n"),
        "{expr}"
    );
    assert!(
        expr.contains("(dynamodb_kinesis_table_destination_expected == 1)"),
        "{expr}"
    );
    let unknown = rule(&rules, "DynamoDBKinesisTableExpectationUnknown");
    assert_eq!(s(unknown, "for"), "30m");
    assert_eq!(
        without_tags(s(unknown, "expr")),
        "dynamodb_kinesis_table_destinations\n  unless on(job, instance, account_id, region, table)\ndynamodb_kinesis_table_destination_expected"
    );
    let polls = s(rule(&rules, "DynamoDBKinesisExporterPollsFailing"), "expr");
    assert!(polls.contains("increase(dynamodb_kinesis_api_errors_total[5m])"));
    assert!(polls.contains("dynamodb_kinesis_table_poll_success == 0"));
    let discovery = rule(&rules, "DynamoDBKinesisExporterDiscoveryFailing");
    let expr = s(discovery, "expr");
    assert!(expr.contains("increase(dynamodb_kinesis_discovery_errors_total[15m]) > 0"));
    assert!(expr.contains("time() - dynamodb_kinesis_discovery_last_success_timestamp_seconds"));
    assert_eq!(s(discovery, "for"), "5m");
    let stretched = rule(&rules, "DynamoDBKinesisExporterPollCycleStretched");
    assert_eq!(
        s(stretched, "expr").trim(),
        "dynamodb_kinesis_scope_effective_poll_interval_seconds > 2 * 60"
    );
    assert_eq!(s(stretched, "for"), "15m");
    let restarts = rule(&rules, "DynamoDBKinesisExporterTaskRestarts");
    assert_eq!(
        s(restarts, "expr").trim(),
        "increase(dynamodb_kinesis_exporter_task_restarts_total[15m]) > 0"
    );
    assert!(restarts.get("for").is_none(), "a panic pages at once");
    assert!(s(restarts, "annotations.summary").contains("$labels.task"));
    assert_eq!(
        s(rule(&rules, "DynamoDBKinesisExporterDown"), "expr").trim(),
        format!("up{{job=\"{JOB}\"}} == 0")
    );
    assert_eq!(
        s(rule(&rules, "DynamoDBKinesisExporterAbsent"), "expr").trim(),
        format!("absent(up{{job=\"{JOB}\"}})")
    );
}

/// GitHub's heading anchors: lower case, punctuation other than `-` and `_`
/// dropped, spaces to `-`, repeats suffixed `-1`, `-2`, ... Headings inside
/// fenced code blocks do not count.
fn anchors(markdown: &str) -> BTreeSet<String> {
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in markdown.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let base: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        let n = seen.entry(base.clone()).or_insert(0);
        out.insert(if *n == 0 {
            base.clone()
        } else {
            format!("{base}-{n}")
        });
        *n += 1;
    }
    out
}

#[test]
fn anchor_rules_follow_github() {
    let md =
        "# Title\n## A `code` heading, with: punctuation\n```sh\n# not a heading\n```\n## Title\n";
    let got: Vec<String> = anchors(md).into_iter().collect();
    assert_eq!(got, ["a-code-heading-with-punctuation", "title", "title-1"]);
}

// --------------------------------------------------------- alert invariants

/// The severities the Alertmanager example routes (pager, chat, ticket).
const SEVERITIES: [&str; 3] = ["critical", "warning", "info"];

/// Labels that identify the exporter itself; a join on these alone matches
/// exporter-wide series, which have no account.
const EXPORTER_LABELS: [&str; 2] = ["job", "instance"];

#[derive(Debug, serde::Deserialize)]
struct RuleFile {
    groups: Vec<RuleGroup>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleGroup {
    rules: Vec<AlertRule>,
}

#[derive(Debug, serde::Deserialize)]
struct AlertRule {
    /// `None` for a recording rule.
    alert: Option<String>,
    expr: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleTests {
    tests: Vec<RuleTestCase>,
}

#[derive(Debug, serde::Deserialize)]
struct RuleTestCase {
    #[serde(default)]
    alert_rule_test: Vec<AlertRuleTest>,
}

#[derive(Debug, serde::Deserialize)]
struct AlertRuleTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<Yaml>,
}

/// Every way the alerting rules in `rules` (a Prometheus rule file) break
/// the invariants every alert must meet, one line each:
/// - a `severity` label from [`SEVERITIES`];
/// - `summary` and `description` annotations with text;
/// - a `runbook_url` into the runbook whose anchor is a heading of
///   `runbook` (GitHub's slugs, see [`anchors`]);
/// - `account_id` in every join that matches tables or scopes (see
///   [`join_problems`]);
/// - a case in the promtool unit tests `tests` that fires it (an
///   `exp_alerts` entry for its name with at least one alert).
fn rule_problems(rules: &str, runbook: &str, tests: &str) -> Vec<String> {
    let rules: RuleFile = serde_yaml::from_str(rules).unwrap_or_else(|e| panic!("rules: {e}"));
    let tests: RuleTests = serde_yaml::from_str(tests).unwrap_or_else(|e| panic!("tests: {e}"));
    let headings = anchors(runbook);
    let fired: BTreeSet<&str> = tests
        .tests
        .iter()
        .flat_map(|case| &case.alert_rule_test)
        .filter(|test| !test.exp_alerts.is_empty())
        .map(|test| test.alertname.as_str())
        .collect();
    let mut problems = Vec::new();
    for rule in rules.groups.iter().flat_map(|g| &g.rules) {
        let Some(name) = rule.alert.as_deref() else {
            continue;
        };
        match rule.labels.get("severity") {
            Some(severity) if SEVERITIES.contains(&severity.as_str()) => {}
            Some(severity) => problems.push(format!(
                "{name}: severity {severity:?} is not one of {SEVERITIES:?}"
            )),
            None => problems.push(format!("{name}: no severity label")),
        }
        for annotation in ["summary", "description"] {
            let text = rule.annotations.get(annotation).map(|t| t.trim());
            if text.is_none_or(str::is_empty) {
                problems.push(format!("{name}: no {annotation} annotation"));
            }
        }
        match rule.annotations.get("runbook_url") {
            None => problems.push(format!("{name}: no runbook_url annotation")),
            Some(url) => match url.strip_prefix(RUNBOOK_URL) {
                None => problems.push(format!("{name}: runbook_url {url} is not in the runbook")),
                Some(anchor) if !headings.contains(anchor) => problems.push(format!(
                    "{name}: runbook_url #{anchor} is no heading of docs/runbook.md"
                )),
                Some(_) => {}
            },
        }
        problems.extend(
            join_problems(&rule.expr)
                .into_iter()
                .map(|p| format!("{name}: {p}")),
        );
        if !fired.contains(name) {
            problems.push(format!("{name}: no promtool test case fires it"));
        }
    }
    problems
}

/// PromQL vector matching that could match one account's table or scope to
/// another's: `on(...)` without `account_id` (unless it matches only on
/// [`EXPORTER_LABELS`], the exporter's own series), and `ignoring(...)`,
/// `group_left(...)` or `group_right(...)` with it. Strings, label matchers
/// (`{...}`) and comments are skipped; keywords are case-insensitive, as in
/// PromQL.
fn join_problems(expr: &str) -> Vec<String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut problems = Vec::new();
    let mut braces = 0usize;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '"' | '\'' | '`' => {
                i += 1;
                while i < chars.len() && chars[i] != c {
                    i += if chars[i] == '\\' && c != '`' { 2 } else { 1 };
                }
                i += 1;
            }
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            '{' => {
                braces += 1;
                i += 1;
            }
            '}' => {
                braces = braces.saturating_sub(1);
                i += 1;
            }
            c if c.is_ascii_alphabetic() || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '_' || chars[i] == ':')
                {
                    i += 1;
                }
                let word: String = chars[start..i].iter().collect::<String>().to_lowercase();
                let mut j = i;
                while j < chars.len() && chars[j].is_whitespace() {
                    j += 1;
                }
                let keyword = matches!(
                    word.as_str(),
                    "on" | "ignoring" | "group_left" | "group_right"
                );
                if braces > 0 || !keyword || chars.get(j) != Some(&'(') {
                    continue;
                }
                let Some(close) = chars[j..].iter().position(|&c| c == ')') else {
                    problems.push(format!("{word}( is not closed"));
                    break;
                };
                let inside: String = chars[j + 1..j + close].iter().collect();
                let labels: Vec<&str> = inside
                    .split(',')
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .collect();
                let has_account = labels.contains(&"account_id");
                let exporter_only =
                    !labels.is_empty() && labels.iter().all(|l| EXPORTER_LABELS.contains(l));
                let list = labels.join(", ");
                match word.as_str() {
                    "on" if !has_account && !exporter_only => {
                        problems.push(format!("on({list}) does not match on account_id"))
                    }
                    "ignoring" | "group_left" | "group_right" if has_account => {
                        problems.push(format!("{word}({list}) leaves account_id out of the match"))
                    }
                    _ => {}
                }
                i = j + close + 1;
            }
            _ => i += 1,
        }
    }
    problems
}

#[test]
fn every_alert_rule_meets_the_invariants() {
    let problems = rule_problems(
        &read("deploy/prometheus/alerts.yml"),
        &read("docs/runbook.md"),
        &read("deploy/prometheus/alerts.test.yml"),
    );
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// The checker finds each kind of problem: one rule that breaks every
/// invariant, and one for each way a join can lose the account.
#[test]
fn the_rule_invariants_catch_bad_rules() {
    let runbook = "# Runbook\n## GoodAlert\n```\n# BadAlert\n```\n";
    let rule = |name: &str, expr: &str, labels: &str, annotations: &str| {
        format!(
            "      - alert: {name}\n        expr: {expr}\n        labels: {labels}\n        annotations: {annotations}\n"
        )
    };
    let good_annotations =
        format!("{{summary: s, description: d, runbook_url: \"{RUNBOOK_URL}goodalert\"}}");
    let mut rules = String::from("groups:\n  - name: g\n    rules:\n");
    rules += &rule(
        "GoodAlert",
        "\"a * on(job, instance, account_id, table) group_left(x) b and on(job, instance) up unless ignoring(code) c\"",
        "{severity: warning}",
        &good_annotations,
    );
    rules += "      - record: job:up:sum\n        expr: sum by (job) (up)\n";
    rules += &rule(
        "BadAlert",
        "\"a * on(job, instance, table) b\"",
        "{severity: page}",
        &format!("{{summary: \"  \", runbook_url: \"{RUNBOOK_URL}badalert\"}}"),
    );
    rules += &rule("NoLabels", "up", "{}", "{}");
    rules += &rule(
        "LostAccounts",
        "\"a * ignoring(account_id) b + ON (table) c / on(job, instance, account_id) group_right(account_id) d\"",
        "{severity: info}",
        &good_annotations,
    );
    rules += &rule(
        "QuotedJoins",
        "'a{label=\"x on(table)\"} * on(account_id, table) b # or on(table)'",
        "{severity: critical}",
        &good_annotations,
    );
    rules += &rule(
        "ElsewhereRunbook",
        "up",
        "{severity: critical}",
        "{summary: s, description: d, runbook_url: \"https://example.invalid/#goodalert\"}",
    );
    let fires = |name: &str| {
        format!("      - alertname: {name}\n        exp_alerts:\n          - exp_labels: {{}}\n")
    };
    let mut tests = String::from("tests:\n  - alert_rule_test:\n");
    for name in [
        "GoodAlert",
        "NoLabels",
        "LostAccounts",
        "QuotedJoins",
        "ElsewhereRunbook",
    ] {
        tests += &fires(name);
    }
    // A case where BadAlert stays silent does not count as firing it.
    tests += "      - alertname: BadAlert\n        exp_alerts: []\n";
    assert_eq!(
        rule_problems(&rules, runbook, &tests),
        [
            "BadAlert: severity \"page\" is not one of [\"critical\", \"warning\", \"info\"]".to_string(),
            "BadAlert: no summary annotation".to_string(),
            "BadAlert: no description annotation".to_string(),
            "BadAlert: runbook_url #badalert is no heading of docs/runbook.md".to_string(),
            "BadAlert: on(job, instance, table) does not match on account_id".to_string(),
            "BadAlert: no promtool test case fires it".to_string(),
            "NoLabels: no severity label".to_string(),
            "NoLabels: no summary annotation".to_string(),
            "NoLabels: no description annotation".to_string(),
            "NoLabels: no runbook_url annotation".to_string(),
            "LostAccounts: ignoring(account_id) leaves account_id out of the match".to_string(),
            "LostAccounts: on(table) does not match on account_id".to_string(),
            "LostAccounts: group_right(account_id) leaves account_id out of the match".to_string(),
            "ElsewhereRunbook: runbook_url https://example.invalid/#goodalert is not in the runbook"
                .to_string(),
        ]
    );
    // An unclosed list is a problem, not a panic.
    assert_eq!(join_problems("a * on(account_id b"), ["on( is not closed"]);
}

#[test]
fn every_runbook_url_and_runbook_link_lands_on_a_heading() {
    let runbook = read("docs/runbook.md");
    let known = anchors(&runbook);
    for r in alert_rules() {
        let url = s(&r, "annotations.runbook_url");
        let anchor = url
            .strip_prefix(RUNBOOK_URL)
            .unwrap_or_else(|| panic!("{url} is not in the runbook"));
        assert!(
            known.contains(anchor),
            "no heading for #{anchor} in docs/runbook.md"
        );
    }
    // Links inside the runbook and the README.
    for (doc, base) in [("docs/runbook.md", "docs"), ("README.md", "")] {
        let text = read(doc);
        for piece in text.split("](").skip(1) {
            let target = &piece[..piece.find(')').expect("closing parenthesis")];
            if target.starts_with("http") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((target, ""));
            let file = if path.is_empty() {
                doc.to_string()
            } else {
                let joined = repo().join(base).join(path);
                assert!(joined.exists(), "{doc}: link to missing {target}");
                // Resolve `..` against the real tree, wherever it lives.
                let root = repo().canonicalize().unwrap();
                let joined = joined.canonicalize().unwrap();
                joined
                    .strip_prefix(&root)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            };
            if !anchor.is_empty() {
                assert!(
                    anchors(&read(&file)).contains(anchor),
                    "{doc}: no heading for {target}"
                );
            }
        }
    }
}

/// Every alert also has a case where it stays silent, and every firing case
/// checks the annotations.
#[test]
fn every_alert_has_a_firing_and_a_silent_promtool_case() {
    let tests = yaml("deploy/prometheus/alerts.test.yml");
    assert_eq!(at(&tests, "rule_files.0").as_str(), Some("alerts.yml"));
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for case in at(&tests, "tests").as_sequence().unwrap() {
        for check in at(case, "alert_rule_test").as_sequence().unwrap() {
            let name = s(check, "alertname").to_string();
            let expected = at(check, "exp_alerts").as_sequence().unwrap();
            for alert in expected {
                assert!(
                    alert.get("exp_annotations").is_some(),
                    "{name}: annotations unchecked"
                );
            }
            if expected.is_empty() {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    let all: BTreeSet<String> = alert_rules()
        .iter()
        .map(|r| s(r, "alert").to_string())
        .collect();
    assert_eq!(firing, all, "alerts with a firing case");
    assert_eq!(silent, all, "alerts with a silent case");
}

#[test]
fn promtool_checks_and_unit_tests_the_rules() {
    let Some(promtool) = required_tool("promtool", "its checks are") else {
        return;
    };
    let dir = repo().join("deploy/prometheus");
    let (ok, out) = run_tool(&promtool, &["check", "rules", "alerts.yml"], &dir);
    assert!(ok, "promtool check rules failed:\n{out}");
    let found = format!("SUCCESS: {} rules found", alert_rules().len());
    assert!(out.contains(&found), "{out}");
    let (ok, out) = run_tool(&promtool, &["test", "rules", "alerts.test.yml"], &dir);
    assert!(ok, "promtool test rules failed:\n{out}");
    assert!(out.contains("SUCCESS"), "{out}");
}

/// The dashboard's queries are valid PromQL: promtool parses them as rules.
#[test]
fn promtool_parses_every_dashboard_query() {
    let Some(promtool) = required_tool("promtool", "its checks are") else {
        return;
    };
    let tmp = scratch(&[]);
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, (_, expr)) in dashboard_queries().iter().enumerate() {
        let expr = serde_json::to_string(&expand_grafana_variables(expr)).unwrap();
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {expr}\n"
        ));
    }
    std::fs::write(tmp.path().join("rules.yml"), rules).unwrap();
    let (ok, out) = run_tool(&promtool, &["check", "rules", "rules.yml"], tmp.path());
    assert!(ok, "dashboard queries do not parse:\n{out}");
}

// --------------------------------------------------------------- kubernetes

const K8S: &str = "deploy/kubernetes";

fn manifest(file: &str) -> Yaml {
    yaml(&format!("{K8S}/{file}"))
}

#[test]
fn kustomization_lists_every_manifest() {
    let k = manifest("kustomization.yaml");
    assert_eq!(s(&k, "apiVersion"), "kustomize.config.k8s.io/v1beta1");
    assert_eq!(s(&k, "kind"), "Kustomization");
    let listed: BTreeSet<String> = at(&k, "resources")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join(K8S)).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            present.insert(name);
        }
    }
    assert_eq!(listed, present);
    assert_eq!(at(&k, "images.0.name").as_str(), Some(NAME));
}

const SHARDED: &str = "deploy/kubernetes-sharded";

fn sharded(file: &str) -> Yaml {
    yaml(&format!("{SHARDED}/{file}"))
}

/// The sharded overlay builds on the base, lists every file of its own as a
/// resource or a patch, and deletes the base's Deployment.
#[test]
fn sharded_kustomization_lists_every_manifest_and_replaces_the_deployment() {
    let k = sharded("kustomization.yaml");
    assert_eq!(s(&k, "apiVersion"), "kustomize.config.k8s.io/v1beta1");
    assert_eq!(s(&k, "kind"), "Kustomization");
    assert_eq!(
        s(&k, "namespace"),
        s(&manifest("kustomization.yaml"), "namespace")
    );
    assert_eq!(at(&k, "images.0.name").as_str(), Some(NAME));
    let mut listed = BTreeSet::new();
    for r in at(&k, "resources").as_sequence().unwrap() {
        listed.insert(r.as_str().unwrap().to_string());
    }
    assert!(listed.remove("../kubernetes"), "the base is not a resource");
    let mut deletes_deployment = false;
    for p in at(&k, "patches").as_sequence().unwrap() {
        if let Some(path) = p.get("path") {
            listed.insert(path.as_str().unwrap().to_string());
        } else {
            let patch: Yaml = serde_yaml::from_str(s(p, "patch")).unwrap();
            deletes_deployment |= s(&patch, "$patch") == "delete"
                && s(&patch, "kind") == "Deployment"
                && s(&patch, "metadata.name") == NAME;
        }
    }
    assert!(deletes_deployment, "the base Deployment is not deleted");
    let mut present = BTreeSet::new();
    for entry in std::fs::read_dir(repo().join(SHARDED)).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".yaml") && name != "kustomization.yaml" {
            present.insert(name);
        }
    }
    assert_eq!(listed, present);
}

/// The StatefulSet is the Deployment's pod, unchanged but for the two shard
/// flags, with as many shards as replicas; its headless Service is not
/// scraped (the base Service already is, one target per pod).
#[test]
fn sharded_statefulset_is_the_deployment_split_into_shards() {
    let d = manifest("deployment.yaml");
    let st = sharded("statefulset.yaml");
    assert_eq!(
        (s(&st, "apiVersion"), s(&st, "kind")),
        ("apps/v1", "StatefulSet")
    );
    assert_eq!(s(&st, "metadata.name"), NAME);
    assert_eq!(at(&st, "spec.selector"), at(&d, "spec.selector"));
    let replicas = at(&st, "spec.replicas").as_u64().unwrap();
    assert!(replicas >= 2, "{replicas} shards");

    let mut expected = at(&d, "spec.template").clone();
    let args = expected["spec"]["containers"][0]["args"]
        .as_sequence_mut()
        .unwrap();
    args.push("--shard-from-hostname".into());
    args.push(format!("--total-shards={replicas}").into());
    assert_eq!(at(&st, "spec.template"), &expected);

    let headless = sharded("headless-service.yaml");
    assert_eq!(s(&st, "spec.serviceName"), s(&headless, "metadata.name"));
    assert_eq!(s(&headless, "spec.clusterIP"), "None");
    assert!(is_subset(
        &string_map(at(&headless, "spec.selector")),
        &string_map(at(&st, "spec.template.metadata.labels"))
    ));
    let sm = manifest("servicemonitor.yaml");
    assert!(
        !is_subset(
            &string_map(at(&sm, "spec.selector.matchLabels")),
            &string_map(at(&headless, "metadata.labels"))
        ),
        "the ServiceMonitor would scrape every shard twice"
    );
}

/// The shards share each account's AWS quota, so their config is the base
/// config with the default DynamoDB budget
/// ([`DEFAULT_MAX_REQUESTS_PER_SECOND`](dynamodb_kinesis_exporter::config::DEFAULT_MAX_REQUESTS_PER_SECOND))
/// divided among them, rounding down. (Apart from that line the text is the base's, which the exporter's
/// parser checks in `configmap_holds_a_valid_exporter_config`.)
#[test]
fn sharded_config_divides_the_request_budget_among_the_shards() {
    let replicas = at(&sharded("statefulset.yaml"), "spec.replicas")
        .as_u64()
        .unwrap();
    let text = |m: &Yaml| {
        at(m, "data")
            .get("exporter.yaml")
            .and_then(Yaml::as_str)
            .expect("data.exporter.yaml")
            .to_string()
    };
    let patch = sharded("configmap.yaml");
    assert_eq!(s(&patch, "metadata.name"), NAME);
    let base = text(&manifest("configmap.yaml"));
    let default = dynamodb_kinesis_exporter::config::DEFAULT_MAX_REQUESTS_PER_SECOND as u64;
    let budget = format!("max_requests_per_second: {}", default / replicas);
    let sharded_text = text(&patch);
    assert!(sharded_text.lines().any(|l| l == budget), "{sharded_text}");
    let without: Vec<&str> = sharded_text.lines().filter(|l| *l != budget).collect();
    assert_eq!(without, base.lines().collect::<Vec<_>>());
}

/// `kubectl kustomize` (offline) builds both bundles.
#[test]
fn kustomize_builds_the_base_and_the_sharded_bundle() {
    let Some(kubectl) = required_tool("kubectl", "the kustomize builds are") else {
        return;
    };
    for (dir, workload) in [(K8S, "Deployment"), (SHARDED, "StatefulSet")] {
        let (ok, out) = run_tool(&kubectl, &["kustomize", dir], &repo());
        assert!(ok, "kubectl kustomize {dir}:\n{out}");
        let mut kinds = Vec::new();
        for doc in serde_yaml::Deserializer::from_str(&out) {
            let doc = Yaml::deserialize(doc).unwrap();
            assert_eq!(s(&doc, "metadata.namespace"), "monitoring", "{dir}");
            kinds.push(s(&doc, "kind").to_string());
        }
        kinds.sort();
        let mut expected = vec![
            "ConfigMap",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
            workload,
        ];
        if dir == SHARDED {
            expected.push("Service");
        }
        expected.sort();
        assert_eq!(kinds, expected, "{dir}");
    }
}

#[test]
fn manifests_have_the_expected_kinds_and_names() {
    let expected = [
        ("serviceaccount.yaml", "v1", "ServiceAccount"),
        ("configmap.yaml", "v1", "ConfigMap"),
        ("deployment.yaml", "apps/v1", "Deployment"),
        ("service.yaml", "v1", "Service"),
        (
            "servicemonitor.yaml",
            "monitoring.coreos.com/v1",
            "ServiceMonitor",
        ),
        (
            "prometheusrule.yaml",
            "monitoring.coreos.com/v1",
            "PrometheusRule",
        ),
    ];
    for (file, api, kind) in expected {
        let m = manifest(file);
        assert_eq!((s(&m, "apiVersion"), s(&m, "kind")), (api, kind), "{file}");
        assert_eq!(s(&m, "metadata.name"), NAME, "{file}");
        assert_eq!(
            string_map(at(&m, "metadata.labels"))["app.kubernetes.io/name"],
            NAME,
            "{file}"
        );
    }
}

#[test]
fn service_account_carries_an_irsa_role() {
    let sa = manifest("serviceaccount.yaml");
    let annotations = string_map(at(&sa, "metadata.annotations"));
    let role = &annotations["eks.amazonaws.com/role-arn"];
    assert!(
        role.starts_with("arn:aws:iam::ACCOUNT_ID:role/"),
        "role ARN example: {role}"
    );
}

#[test]
fn deployment_is_locked_down_probed_and_mounts_the_config() {
    let d = manifest("deployment.yaml");
    let pod = at(&d, "spec.template.spec");
    let template_labels = string_map(at(&d, "spec.template.metadata.labels"));
    assert!(is_subset(
        &string_map(at(&d, "spec.selector.matchLabels")),
        &template_labels
    ));
    assert_eq!(s(pod, "serviceAccountName"), NAME);

    assert_eq!(
        at(pod, "securityContext.runAsNonRoot").as_bool(),
        Some(true)
    );
    assert_eq!(
        s(pod, "securityContext.seccompProfile.type"),
        "RuntimeDefault"
    );

    let containers = at(pod, "containers").as_sequence().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = at(c, "securityContext");
    assert_eq!(at(sc, "readOnlyRootFilesystem").as_bool(), Some(true));
    assert_eq!(at(sc, "allowPrivilegeEscalation").as_bool(), Some(false));
    assert_eq!(at(sc, "runAsNonRoot").as_bool(), Some(true));
    let dropped: Vec<&str> = at(sc, "capabilities.drop")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(dropped, ["ALL"]);
    assert!(sc.get("capabilities").unwrap().get("add").is_none());

    assert_eq!(s(c, "ports.0.name"), "http-metrics");
    assert_eq!(at(c, "ports.0.containerPort").as_u64(), Some(9863));
    assert_eq!(s(c, "livenessProbe.httpGet.path"), "/healthz");
    assert_eq!(s(c, "livenessProbe.httpGet.port"), "http-metrics");
    assert_eq!(s(c, "readinessProbe.httpGet.path"), "/readyz");
    assert_eq!(s(c, "readinessProbe.httpGet.port"), "http-metrics");

    assert_eq!(s(c, "resources.requests.cpu"), "10m");
    assert_eq!(s(c, "resources.requests.memory"), "32Mi");
    assert_eq!(s(c, "resources.limits.memory"), "128Mi");

    // The config file named on the command line is the ConfigMap's key.
    let args: Vec<&str> = at(c, "args")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    let config_file = args
        .iter()
        .find_map(|a| a.strip_prefix("--config.file="))
        .expect("--config.file argument");
    let (dir, key) = config_file.rsplit_once('/').unwrap();
    assert_eq!(dir, "/etc/dynamodb-kinesis-exporter");
    assert!(args.contains(&"--web.listen-address=:9863"), "{args:?}");
    let mount = at(c, "volumeMounts")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|m| s(m, "mountPath") == dir)
        .expect("a volume mounted at the config directory");
    assert_eq!(at(mount, "readOnly").as_bool(), Some(true));
    let volume = at(pod, "volumes")
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| s(v, "name") == s(mount, "name"))
        .expect("the mounted volume");
    let cm = manifest("configmap.yaml");
    assert_eq!(s(volume, "configMap.name"), s(&cm, "metadata.name"));
    assert!(at(&cm, "data").get(key).is_some(), "ConfigMap has no {key}");
}

#[test]
fn service_and_service_monitor_select_the_exporter() {
    let d = manifest("deployment.yaml");
    let svc = manifest("service.yaml");
    let sm = manifest("servicemonitor.yaml");
    let pod_labels = string_map(at(&d, "spec.template.metadata.labels"));
    assert!(is_subset(
        &string_map(at(&svc, "spec.selector")),
        &pod_labels
    ));
    assert_eq!(s(&svc, "spec.ports.0.name"), "http-metrics");
    assert_eq!(at(&svc, "spec.ports.0.port").as_u64(), Some(9863));
    assert_eq!(s(&svc, "spec.ports.0.targetPort"), "http-metrics");
    // The Prometheus Operator names the job after the Service.
    assert_eq!(s(&svc, "metadata.name"), JOB);

    assert!(is_subset(
        &string_map(at(&sm, "spec.selector.matchLabels")),
        &string_map(at(&svc, "metadata.labels"))
    ));
    assert_eq!(
        s(&sm, "spec.endpoints.0.port"),
        s(&svc, "spec.ports.0.name")
    );
    assert_eq!(s(&sm, "spec.endpoints.0.path"), "/metrics");
    assert!(at(&sm, "spec").get("jobLabel").is_none());
}

#[test]
fn configmap_holds_a_valid_exporter_config() {
    let cm = manifest("configmap.yaml");
    let text = at(&cm, "data")
        .get("exporter.yaml")
        .and_then(Yaml::as_str)
        .expect("data.exporter.yaml");
    let config = dynamodb_kinesis_exporter::config::parse(text, "configmap.yaml:exporter.yaml")
        .unwrap_or_else(|e| panic!("{e}"));
    let tables: Vec<(String, String)> = config
        .targets
        .iter()
        .flat_map(|t| {
            t.regions.iter().flat_map(move |region| {
                t.tables_in(region)
                    .map(move |table| (region.clone(), table.name.to_string()))
            })
        })
        .collect();
    assert_eq!(
        tables,
        [
            ("us-east-1".to_string(), "orders".to_string()),
            ("us-east-1".to_string(), "payments".to_string()),
            ("eu-west-1".to_string(), "invoices".to_string()),
        ]
    );
    assert_eq!(config.poll_interval, std::time::Duration::from_secs(60));

    // Every configured table is in the IAM policy, or its polls would fail.
    let resources = policy_resources();
    for (_, table) in &tables {
        let arn = format!("arn:aws:dynamodb:*:ACCOUNT_ID:table/{table}");
        assert!(
            resources.contains(&arn),
            "{arn} missing from the IAM policy"
        );
    }
}

#[test]
fn prometheus_rule_carries_the_rule_file_groups_verbatim() {
    let rule = manifest("prometheusrule.yaml");
    let alerts = yaml("deploy/prometheus/alerts.yml");
    assert_eq!(at(&rule, "spec.groups"), at(&alerts, "groups"));
    assert_eq!(
        at(&rule, "spec").as_mapping().unwrap().len(),
        1,
        "spec holds only groups"
    );
}

/// The generator, run on a copy of the tree, reproduces the groups.
#[test]
fn prometheus_rule_generator_reproduces_the_rule_file() {
    let Some(python) = required_tool("python3", "the generator check is") else {
        return;
    };
    let tmp = scratch(&[]);
    std::fs::create_dir_all(tmp.path().join("prometheus")).unwrap();
    std::fs::create_dir_all(tmp.path().join("kubernetes")).unwrap();
    std::fs::copy(
        repo().join("deploy/prometheus/alerts.yml"),
        tmp.path().join("prometheus/alerts.yml"),
    )
    .unwrap();
    let script = tmp.path().join("kubernetes/generate-prometheusrule.py");
    std::fs::copy(repo().join(K8S).join("generate-prometheusrule.py"), &script).unwrap();
    let (ok, out) = run_tool(&python, &[script.to_str().unwrap()], tmp.path());
    assert!(ok, "{out}");
    let generated =
        std::fs::read_to_string(tmp.path().join("kubernetes/prometheusrule.yaml")).unwrap();
    let generated: Yaml = serde_yaml::from_str(&generated).unwrap();
    assert_eq!(generated, manifest("prometheusrule.yaml"));
}

// ---------------------------------------------------------------------- IAM

/// (actions, resources) of every statement of an IAM policy, after checking
/// the shape every statement must have: Allow, no `Not*`, no principal, and
/// no wildcard in an action.
fn policy_statements(rel: &str) -> Vec<(Vec<String>, Vec<String>)> {
    fn strings(v: &Json, what: &str) -> Vec<String> {
        match v {
            Json::String(s) => vec![s.clone()],
            Json::Array(list) => list
                .iter()
                .map(|s| s.as_str().unwrap().to_string())
                .collect(),
            other => panic!("{what}: {other}"),
        }
    }
    let policy = json(rel);
    assert_eq!(policy["Version"], "2012-10-17", "{rel}");
    let mut out = Vec::new();
    for st in policy["Statement"].as_array().unwrap() {
        assert_eq!(st["Effect"], "Allow", "{rel}");
        for key in ["NotAction", "NotResource", "Principal"] {
            assert!(st.get(key).is_none(), "{rel}: {key} in the policy");
        }
        let actions = strings(&st["Action"], "Action");
        for a in &actions {
            assert!(!a.contains(['*', '?']), "{rel}: wildcard action {a}");
        }
        out.push((actions, strings(&st["Resource"], "Resource")));
    }
    out
}

/// Resources granted to one action, over all statements.
fn resources_of(statements: &[(Vec<String>, Vec<String>)], action: &str) -> BTreeSet<String> {
    statements
        .iter()
        .filter(|(actions, _)| actions.iter().any(|a| a == action))
        .flat_map(|(_, resources)| resources.iter().cloned())
        .collect()
}

/// The tables the exporter's own (hub) policy lets it describe.
fn policy_resources() -> BTreeSet<String> {
    resources_of(
        &policy_statements("deploy/iam/policy.json"),
        "dynamodb:DescribeKinesisStreamingDestination",
    )
}

const DESCRIBE: &str = "dynamodb:DescribeKinesisStreamingDestination";
const LIST_TAGS: &str = "dynamodb:ListTagsOfResource";
const LIST_TABLES: &str = "dynamodb:ListTables";
const ASSUME_ROLE: &str = "sts:AssumeRole";
/// The stream check, on the streams behind the destinations.
const DESCRIBE_STREAM: &str = "kinesis:DescribeStreamSummary";
/// CloudWatch reads for `cdc_metrics`; they take no resource, and they are
/// granted only by their own file, attached only when `cdc_metrics` is used.
const GET_METRIC_DATA: &str = "cloudwatch:GetMetricData";
const LIST_METRICS: &str = "cloudwatch:ListMetrics";
/// The member roles' name, which the hub policy may assume in any account.
const MEMBER_ROLE: &str = "arn:aws:iam::*:role/dynamodb-kinesis-exporter";

/// Checks shared by the hub and member policies: exactly `expected` actions;
/// ListTables, which takes no resource, is the only action on `*`; every
/// other action is on something narrower.
fn check_least_privilege(rel: &str, expected: &[&str]) -> Vec<(Vec<String>, Vec<String>)> {
    let statements = policy_statements(rel);
    let actions: BTreeSet<&str> = statements
        .iter()
        .flat_map(|(a, _)| a.iter().map(String::as_str))
        .collect();
    assert_eq!(actions, expected.iter().copied().collect(), "{rel}");
    assert_eq!(
        resources_of(&statements, LIST_TABLES),
        BTreeSet::from(["*".to_string()]),
        "{rel}"
    );
    for (actions, resources) in &statements {
        if actions.iter().any(|a| a != LIST_TABLES) {
            assert!(
                resources.iter().all(|r| r != "*"),
                "{rel}: {actions:?} on every resource"
            );
        }
    }
    statements
}

#[test]
fn iam_policy_grants_reads_on_named_tables_discovery_and_member_roles() {
    let rel = "deploy/iam/policy.json";
    let statements = check_least_privilege(
        rel,
        &[
            DESCRIBE,
            LIST_TAGS,
            DESCRIBE_STREAM,
            LIST_TABLES,
            ASSUME_ROLE,
        ],
    );
    for r in &resources_of(&statements, DESCRIBE_STREAM) {
        let stream = r
            .strip_prefix("arn:aws:kinesis:*:ACCOUNT_ID:stream/")
            .unwrap_or_else(|| panic!("{r} is not a stream ARN placeholder"));
        assert!(
            !stream.is_empty() && !stream.contains(['*', '?', '/']),
            "{r} is not one stream"
        );
    }
    for action in [DESCRIBE, LIST_TAGS] {
        let resources = resources_of(&statements, action);
        assert!(!resources.is_empty(), "{action}");
        for r in &resources {
            let table = r
                .strip_prefix("arn:aws:dynamodb:*:ACCOUNT_ID:table/")
                .unwrap_or_else(|| panic!("{action}: {r} is not a table ARN placeholder"));
            assert!(
                !table.is_empty() && !table.contains(['*', '?', '/']),
                "{action}: {r} is not one table"
            );
        }
    }
    assert_eq!(
        resources_of(&statements, ASSUME_ROLE),
        BTreeSet::from([MEMBER_ROLE.to_string()])
    );
}

#[test]
fn member_role_policy_grants_only_reads_in_its_own_account() {
    let rel = "deploy/iam/member-role-policy.json";
    let statements =
        check_least_privilege(rel, &[DESCRIBE, LIST_TAGS, DESCRIBE_STREAM, LIST_TABLES]);
    assert_eq!(
        resources_of(&statements, DESCRIBE_STREAM),
        BTreeSet::from(["arn:aws:kinesis:*:MEMBER_ACCOUNT_ID:stream/*".to_string()])
    );
    for action in [DESCRIBE, LIST_TAGS] {
        let resources = resources_of(&statements, action);
        assert!(!resources.is_empty(), "{action}");
        for r in &resources {
            assert!(
                r.starts_with("arn:aws:dynamodb:*:MEMBER_ACCOUNT_ID:table/"),
                "{action}: {r} is not a table of the member account"
            );
        }
    }
}

/// CloudWatch's GetMetricData and ListMetrics act on no resource, so they
/// are on `*`; that is why they live in their own file, with a Sid, to attach
/// (to the hub role, or the member role of a `role_arn` target) only for
/// targets with `cdc_metrics`. The README says so.
#[test]
fn cdc_metrics_policy_is_separate_and_only_cloudwatch_reads() {
    let rel = "deploy/iam/cdc-metrics-policy.json";
    let statements = policy_statements(rel);
    assert_eq!(statements.len(), 1, "{rel}");
    let (actions, resources) = &statements[0];
    assert_eq!(actions, &[GET_METRIC_DATA, LIST_METRICS]);
    assert_eq!(resources, &["*"]);
    let sid = json(rel)["Statement"][0]["Sid"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(sid.contains("CdcMetrics"), "{sid}");
    for other in [
        "deploy/iam/policy.json",
        "deploy/iam/member-role-policy.json",
    ] {
        for (actions, _) in policy_statements(other) {
            assert!(
                actions.iter().all(|a| !a.starts_with("cloudwatch:")),
                "{other} grants CloudWatch without cdc_metrics"
            );
        }
    }
    let readme = read("README.md");
    for needle in [rel, "cdc_metrics", "kinesis:DescribeStreamSummary"] {
        assert!(
            readme.contains(needle),
            "README.md does not mention {needle}"
        );
    }
}

#[test]
fn member_role_trusts_only_the_hub_role_with_an_external_id() {
    let trust = json("deploy/iam/member-role-trust-policy.json");
    let statements = trust["Statement"].as_array().unwrap();
    assert_eq!(statements.len(), 1);
    let st = &statements[0];
    assert_eq!(st["Effect"], "Allow");
    assert_eq!(st["Action"], ASSUME_ROLE);
    // The hub role is the IRSA role the service account names.
    let sa = manifest("serviceaccount.yaml");
    let hub = string_map(at(&sa, "metadata.annotations"))["eks.amazonaws.com/role-arn"]
        .replace("ACCOUNT_ID", "HUB_ACCOUNT_ID");
    assert_eq!(st["Principal"], serde_json::json!({ "AWS": hub }));
    // The member role has the name the hub policy may assume.
    let name = MEMBER_ROLE.rsplit_once('/').unwrap().1;
    assert!(hub.ends_with(&format!(":role/{name}")), "{hub}");
    let external_id = st["Condition"]["StringEquals"]["sts:ExternalId"]
        .as_str()
        .expect("an sts:ExternalId condition");
    assert!(!external_id.is_empty());
}

#[test]
fn irsa_trust_policy_names_the_service_account() {
    let trust = json("deploy/iam/irsa-trust-policy.json");
    let st = &trust["Statement"][0];
    assert_eq!(st["Action"], "sts:AssumeRoleWithWebIdentity");
    let namespace = s(&manifest("kustomization.yaml"), "namespace").to_string();
    assert_eq!(
        st["Condition"]["StringEquals"]["OIDC_PROVIDER:sub"],
        format!("system:serviceaccount:{namespace}:{NAME}")
    );
    assert_eq!(
        st["Condition"]["StringEquals"]["OIDC_PROVIDER:aud"],
        "sts.amazonaws.com"
    );
}

// ---------------------------------------------------------------- dashboard

const DASHBOARD: &str = "deploy/grafana/dynamodb-kinesis.json";

/// The dashboard's panels but its rows (which only group the panels below
/// them, and have no query).
fn dashboard_panels(d: &Json) -> Vec<&Json> {
    d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["type"] != "row")
        .collect()
}

/// (panel title, expr) of every target.
fn dashboard_queries() -> Vec<(String, String)> {
    let d = json(DASHBOARD);
    let mut out = Vec::new();
    for p in dashboard_panels(&d) {
        for t in p["targets"].as_array().unwrap() {
            out.push((
                p["title"].as_str().unwrap().to_string(),
                t["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

#[test]
fn dashboard_is_importable_and_uses_its_datasource_variable() {
    let d = json(DASHBOARD);
    assert_eq!(d["uid"], "dynamodb-kinesis-destinations");
    assert_eq!(d["title"], "DynamoDB Kinesis streaming destinations");
    assert!(d["schemaVersion"].as_u64().unwrap() >= 39);
    assert!(d["id"].is_null(), "an exported id would clash on import");

    let vars: BTreeMap<&str, &Json> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["name"].as_str().unwrap(), v))
        .collect();
    assert_eq!(
        vars.keys().copied().collect::<Vec<_>>(),
        ["account_id", "datasource", "region", "table"]
    );
    assert_eq!(vars["datasource"]["type"], "datasource");
    assert_eq!(vars["datasource"]["query"], "prometheus");
    for name in ["account_id", "region", "table"] {
        let v = vars[name];
        assert_eq!(v["type"], "query", "{name}");
        assert_eq!(v["multi"], true, "{name}");
        assert_eq!(v["includeAll"], true, "{name}");
        assert_eq!(v["allValue"], ".*", "{name}");
        assert_eq!(v["datasource"]["uid"], "${datasource}", "{name}");
        assert!(
            v["query"].as_str().unwrap().starts_with("label_values("),
            "{name}"
        );
    }

    let mut ids = BTreeSet::new();
    let mut types = BTreeSet::new();
    // Rows, only at the end: a row takes every panel below it, up to the
    // next row.
    let rows: Vec<&str> = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .skip_while(|p| p["type"] != "row")
        .filter(|p| p["type"] == "row")
        .map(|p| p["title"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ["Cost"]);
    for p in d["panels"].as_array().unwrap() {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_u64().unwrap()),
            "duplicate id: {title}"
        );
    }
    for p in dashboard_panels(&d) {
        let title = p["title"].as_str().unwrap();
        types.insert(p["type"].as_str().unwrap().to_string());
        assert_eq!(p["datasource"]["type"], "prometheus", "{title}");
        assert_eq!(p["datasource"]["uid"], "${datasource}", "{title}");
        let x = p["gridPos"]["x"].as_u64().unwrap();
        let w = p["gridPos"]["w"].as_u64().unwrap();
        assert!(x + w <= 24, "{title} is wider than the grid");
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for t in targets {
            assert_eq!(t["datasource"]["uid"], "${datasource}", "{title}");
            let expr = t["expr"].as_str().unwrap();
            if expr.contains("rate(") || expr.contains("increase(") {
                assert!(expr.contains("[$__rate_interval]"), "{title}: {expr}");
            }
            if expr.contains("table=~") {
                assert!(expr.contains("table=~\"$table\""), "{title}: {expr}");
            }
            assert!(expr.contains("region=~\"$region\""), "{title}: {expr}");
            // Same-named tables in two accounts are two tables: every query
            // selects the account, and keeps it when it aggregates or joins.
            assert!(
                expr.contains("account_id=~\"$account_id\""),
                "{title}: {expr}"
            );
            for clause in [" by (", " on("] {
                for rest in expr.split(clause).skip(1) {
                    let labels = &rest[..rest.find(')').unwrap()];
                    assert!(
                        labels == "status" || labels.split(", ").any(|l| l == "account_id"),
                        "{title}: {clause}{labels}) drops account_id"
                    );
                }
            }
        }
    }
    let expected: BTreeSet<String> = ["stat", "table", "state-timeline", "timeseries"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(types, expected);

    let queries = dashboard_queries();
    let find = |needle: &str| {
        queries
            .iter()
            .find(|(_, e)| e.contains(needle))
            .unwrap_or_else(|| panic!("no panel queries {needle}"))
    };
    find("histogram_quantile(0.99, sum by (le, account_id, region) (rate(dynamodb_kinesis_poll_duration_seconds_bucket");
    find("dynamodb_kinesis_scope_effective_poll_interval_seconds");
    find("dynamodb_kinesis_scope_request_rate_limit");
    find("rate(dynamodb_kinesis_scope_throttled_total");
    find("dynamodb_kinesis_discovery_tables");
    find("rate(dynamodb_kinesis_discovery_errors_total");
    find("time() - dynamodb_kinesis_table_last_success_timestamp_seconds");
    find("rate(dynamodb_kinesis_api_errors_total");
    find("dynamodb_kinesis_table_poll_success");
    // The stream cross-check and CloudWatch's replication metrics.
    // Expectations, and what the exporter costs (GetMetricData at $0.01 per
    // 1,000 metrics requested).
    find("(dynamodb_kinesis_table_destination_expected{account_id=~\"$account_id\", region=~\"$region\", table=~\"$table\"} == 1)\n    unless on(job, instance, account_id, region, table)");
    find("dynamodb_kinesis_table_destination_stream_match");
    find("group_left(tag_team, tag_owner)");
    find(
        "sum by (account_id, region, service, operation) (rate(dynamodb_kinesis_aws_requests_total",
    );
    find("sum by (account_id, service, operation) (rate(dynamodb_kinesis_aws_requests_total{account_id=~\"$account_id\", region=~\"$region\"}[$__rate_interval])) * 86400");
    find("rate(dynamodb_kinesis_cloudwatch_metrics_requested_total{account_id=~\"$account_id\", region=~\"$region\"}[$__rate_interval])) * 86400 * 0.01 / 1000");
    for needle in [
        "dynamodb_kinesis_stream_status",
        "dynamodb_kinesis_stream_open_shards",
        "dynamodb_kinesis_stream_info",
        "rate(dynamodb_kinesis_stream_api_errors_total",
        "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds",
        "dynamodb_kinesis_cdc_failed_to_replicate_records",
        "dynamodb_kinesis_cdc_throttled_put_records",
    ] {
        find(needle);
    }
    let panel = |title: &str| {
        dashboard_panels(&d)
            .into_iter()
            .find(|p| p["title"] == title)
            .unwrap_or_else(|| panic!("no panel {title}"))
            .clone()
    };
    assert_eq!(panel("Streams")["type"], "table");
    // The lag panel draws the two alert thresholds (5 and 30 minutes).
    let steps: Vec<Json> = panel("Replication lag per table")["fieldConfig"]["defaults"]
        ["thresholds"]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].clone())
        .collect();
    assert_eq!(steps, [Json::Null, 300.into(), 1800.into()]);
    let (title, _) = find("status!=\"ACTIVE\"");
    let table = d["panels"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["title"] == title.as_str())
        .unwrap();
    assert_eq!(table["type"], "table");
    assert_eq!(table["targets"][0]["instant"], true);
    assert_eq!(table["targets"][0]["format"], "table");
    assert!(table["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .contains("status_description"));
}

/// No datasource anywhere in the dashboard is pinned to one Grafana's uid.
#[test]
fn dashboard_has_no_hard_coded_datasource() {
    fn walk(v: &Json, path: &str) {
        match v {
            Json::Object(map) => {
                if let Some(ds) = map.get("datasource") {
                    let uid = ds["uid"].as_str().unwrap_or_default();
                    assert!(
                        uid == "${datasource}" || uid == "-- Grafana --",
                        "{path}: datasource {ds}"
                    );
                }
                for (k, v) in map {
                    walk(v, &format!("{path}.{k}"));
                }
            }
            Json::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"));
                }
            }
            _ => {}
        }
    }
    walk(&json(DASHBOARD), "$");
}

// ------------------------------------------------------------- alertmanager

#[test]
fn alertmanager_example_routes_by_severity() {
    let am = yaml("deploy/alertmanager/alertmanager.yml");
    let group_by: Vec<&str> = at(&am, "route.group_by")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(group_by, ["alertname", "table", "region"]);
    let routes = at(&am, "route.routes").as_sequence().unwrap();
    let receiver_for = |severity: &str| {
        routes
            .iter()
            .find(|r| {
                at(r, "matchers").as_sequence().unwrap().iter().any(|m| {
                    m.as_str().unwrap().replace(' ', "") == format!("severity=\"{severity}\"")
                })
            })
            .map(|r| s(r, "receiver").to_string())
            .unwrap_or_else(|| panic!("no route for {severity}"))
    };
    assert_eq!(receiver_for("critical"), "pager");
    assert_eq!(receiver_for("warning"), "chat");
    // info (an old ENABLE_FAILED entry AWS cannot delete) never pages.
    assert_eq!(receiver_for("info"), "ticket");
    let receivers: BTreeSet<&str> = at(&am, "receivers")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|r| s(r, "name"))
        .collect();
    assert_eq!(
        receivers,
        BTreeSet::from(["chat", "pager", "payments", "ticket"])
    );
    // The team route comes before the severity routes, takes the alerts of
    // tables tagged team=payments (the `tag_team` label every table alert
    // carries) and keeps them (no `continue`), but info never pages.
    let team = &routes[0];
    let matchers: Vec<String> = at(team, "matchers")
        .as_sequence()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().replace(' ', ""))
        .collect();
    assert!(
        matchers.contains(&"tag_team=\"payments\"".to_string()),
        "{matchers:?}"
    );
    assert_eq!(s(team, "receiver"), "payments");
    assert!(
        team.get("continue")
            .is_none_or(|c| c.as_bool() == Some(false)),
        "the team route keeps its alerts"
    );
    let team_info = at(team, "routes").as_sequence().unwrap();
    assert_eq!(s(&team_info[0], "receiver"), "ticket");
    assert_eq!(
        at(&team_info[0], "matchers.0")
            .as_str()
            .map(|m| m.replace(' ', "")),
        Some("severity=\"info\"".to_string())
    );
    let receiver = |name: &str| {
        at(&am, "receivers")
            .as_sequence()
            .unwrap()
            .iter()
            .find(|r| s(r, "name") == name)
            .unwrap()
            .clone()
    };
    assert!(receiver("ticket").get("pagerduty_configs").is_none());
    // A deleted stream inhibits the lag it causes, for the same table.
    let inhibits = at(&am, "inhibit_rules").as_sequence().unwrap();
    assert!(
        inhibits.iter().any(|rule| {
            let source = serde_yaml::to_string(at(rule, "source_matchers")).unwrap();
            let target = serde_yaml::to_string(at(rule, "target_matchers")).unwrap();
            let equal = serde_yaml::to_string(at(rule, "equal")).unwrap();
            source.contains("DynamoDBKinesisStreamMissing")
                && target.contains("ReplicationLag")
                && equal.contains("account_id")
                && equal.contains("table")
        }),
        "no inhibit rule from StreamMissing to ReplicationLag"
    );

    let Some(amtool) = required_tool("amtool", "its checks are") else {
        return;
    };
    let (ok, out) = run_tool(
        &amtool,
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
        &repo(),
    );
    assert!(ok, "amtool check-config failed:\n{out}");
    // Where Alertmanager itself sends alerts: a payments table's page to the
    // team, its info to the ticket queue; another team's page, and a table
    // without a team, by severity.
    for (labels, receiver) in [
        (
            &[
                "alertname=DynamoDBKinesisExpectedTableNotStreaming",
                "severity=critical",
                "tag_team=payments",
            ][..],
            "payments",
        ),
        (
            &[
                "alertname=DynamoDBKinesisExpectedTableWrongStream",
                "severity=warning",
                "tag_team=payments",
                "tag_owner=alice",
            ],
            "payments",
        ),
        (
            &[
                "alertname=DynamoDBKinesisDestinationStaleFailedEntry",
                "severity=info",
                "tag_team=payments",
            ],
            "ticket",
        ),
        (
            &[
                "alertname=DynamoDBKinesisExpectedTableNotStreaming",
                "severity=critical",
                "tag_team=search",
            ],
            "pager",
        ),
        (
            &[
                "alertname=DynamoDBKinesisExpectedTableWrongStream",
                "severity=warning",
            ],
            "chat",
        ),
    ] {
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=deploy/alertmanager/alertmanager.yml",
        ];
        args.extend(labels);
        let (ok, out) = run_tool(&amtool, &args, &repo());
        assert!(ok, "amtool config routes test failed:\n{out}");
        let got: Vec<&str> = out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with("Warning:"))
            .collect();
        assert_eq!(got, [receiver], "{labels:?}:\n{out}");
    }
}

// ------------------------------------------------------- kubernetes schema

/// The core manifests against the Kubernetes OpenAPI schemas, strictly
/// (unknown fields are errors), with `kubernetes-validate` from PyPI, which
/// ships the schemas and so works offline. `.ci/run` installs it. The
/// Prometheus Operator kinds have no bundled schema and are checked by the
/// field tests above.
#[test]
fn kubernetes_manifests_match_the_api_schemas() {
    let Some(validator) = required_tool("kubernetes-validate", "its checks are") else {
        return;
    };
    let manifests = [
        "deploy/kubernetes/serviceaccount.yaml",
        "deploy/kubernetes/configmap.yaml",
        "deploy/kubernetes/deployment.yaml",
        "deploy/kubernetes/service.yaml",
        "deploy/kubernetes-sharded/configmap.yaml",
        "deploy/kubernetes-sharded/statefulset.yaml",
        "deploy/kubernetes-sharded/headless-service.yaml",
    ];
    // The oldest Kubernetes version still commonly run, and the newest
    // the tool knows.
    for version in ["1.30.0", "1.37.0"] {
        let mut args = vec!["--strict", "--quiet", "-k", version];
        args.extend(manifests);
        let (ok, out) = run_tool(&validator, &args, &repo());
        assert!(
            ok,
            "kubernetes-validate (Kubernetes {version}) failed:\n{out}"
        );
    }
}

// ------------------------------------------------------------------ systemd

const UNIT: &str = "deploy/systemd/dynamodb-kinesis-exporter.service";

#[test]
fn systemd_unit_is_sandboxed() {
    let unit = read(UNIT);
    let mut settings: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in unit.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with('[') || line.is_empty() {
            continue;
        }
        let (k, v) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("bad line {line:?}"));
        settings
            .entry(k.to_string())
            .or_default()
            .push(v.to_string());
    }
    let one = |k: &str| {
        settings
            .get(k)
            .and_then(|v| v.first())
            .map(String::as_str)
            .unwrap_or_else(|| panic!("{k} is not set"))
    };
    for (k, v) in [
        ("DynamicUser", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("NoNewPrivileges", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
        ("ProtectKernelTunables", "yes"),
        ("ProtectKernelModules", "yes"),
        ("ProtectKernelLogs", "yes"),
        ("ProtectControlGroups", "yes"),
        ("RestrictAddressFamilies", "AF_INET AF_INET6"),
        ("SystemCallFilter", "@system-service"),
        ("CapabilityBoundingSet", ""),
        ("MemoryDenyWriteExecute", "yes"),
        ("LockPersonality", "yes"),
        ("RestrictNamespaces", "yes"),
        ("RestrictRealtime", "yes"),
        ("RestrictSUIDSGID", "yes"),
        ("EnvironmentFile", "-/etc/default/dynamodb-kinesis-exporter"),
    ] {
        assert_eq!(one(k), v, "{k}");
    }
    assert!(one("ExecStart").contains("--config.file=/etc/dynamodb-kinesis-exporter/exporter.yaml"));
    // The env file example sets the variable the unit expands.
    let env = read("deploy/systemd/dynamodb-kinesis-exporter.env");
    assert!(one("ExecStart").contains("$EXPORTER_ARGS"));
    assert!(env.lines().any(|l| l.starts_with("EXPORTER_ARGS=")));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    let Some(analyze) = required_tool("systemd-analyze", "the unit verification is") else {
        return;
    };
    let tmp = scratch(&[]);
    // verify insists that ExecStart exists: point it at the built binary.
    let unit = read(UNIT).replace(
        "/usr/local/bin/dynamodb-kinesis-exporter",
        env!("CARGO_BIN_EXE_dynamodb-kinesis-exporter"),
    );
    let name = "dynamodb-kinesis-exporter.service";
    std::fs::write(tmp.path().join(name), unit).unwrap();
    // A unit known to be fine tells whether verify works in this environment
    // (it may not in a container); only then do its complaints count.
    std::fs::write(
        tmp.path().join("control.service"),
        "[Unit]\nDescription=control\n[Service]\nExecStart=/bin/sh -c true\n",
    )
    .unwrap();
    let (control_ok, control_out) =
        run_tool(&analyze, &["verify", "./control.service"], tmp.path());
    if !control_ok {
        // In CI it must run (`.ci/run` installs systemd's tools), so a
        // verify that cannot is a failure there, never a pass.
        assert!(
            !in_ci(),
            "systemd-analyze verify cannot run here, and CI is set:\n{control_out}"
        );
        loud!("systemd-analyze verify cannot run here: unit verification SKIPPED:\n{control_out}");
        return;
    }
    let (ok, out) = run_tool(&analyze, &["verify", &format!("./{name}")], tmp.path());
    let complaints: Vec<&str> = out.lines().filter(|l| l.contains(name)).collect();
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify:\n{out}"
    );
    // The socket unit, next to the service it activates.
    let socket = "dynamodb-kinesis-exporter.socket";
    std::fs::write(tmp.path().join(socket), read(SOCKET_UNIT)).unwrap();
    let (ok, out) = run_tool(&analyze, &["verify", &format!("./{socket}")], tmp.path());
    let complaints: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("dynamodb-kinesis-exporter"))
        .collect();
    assert!(
        ok && complaints.is_empty(),
        "systemd-analyze verify (socket):\n{out}"
    );
}

const SOCKET_UNIT: &str = "deploy/systemd/dynamodb-kinesis-exporter.socket";

#[test]
fn systemd_socket_unit_listens_like_the_default_address() {
    let unit = read(SOCKET_UNIT);
    let settings: Vec<(&str, &str)> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with('['))
        .map(|l| {
            l.split_once('=')
                .unwrap_or_else(|| panic!("bad line {l:?}"))
        })
        .collect();
    // :9863 on IPv6 and IPv4, as the default --web.listen-address.
    assert!(settings.contains(&("ListenStream", "9863")), "{settings:?}");
    assert!(settings.contains(&("BindIPv6Only", "both")), "{settings:?}");
    assert!(
        settings.contains(&("WantedBy", "sockets.target")),
        "{settings:?}"
    );
    // It says which flag the service then needs.
    assert!(unit.contains("--web.systemd-socket"));
}

/// systemd pairs a socket with the service of the same name: every socket
/// unit in the bundle has its service beside it.
#[test]
fn every_systemd_socket_unit_has_its_service() {
    let dir = repo().join("deploy/systemd");
    let names: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let sockets: Vec<&String> = names.iter().filter(|n| n.ends_with(".socket")).collect();
    assert!(!sockets.is_empty(), "no socket unit in {names:?}");
    for socket in sockets {
        let service = socket.replace(".socket", ".service");
        assert!(names.contains(&service), "{socket} without {service}");
    }
}

// ------------------------------------------------------------------- docker

#[test]
fn dockerfile_builds_in_rust_and_runs_distroless_as_nonroot() {
    let text = read("deploy/docker/Dockerfile");
    let instructions: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with('#') && !l.starts_with("&&") && !l.starts_with("--")
        })
        .collect();
    let froms: Vec<&&str> = instructions
        .iter()
        .filter(|l| l.starts_with("FROM "))
        .collect();
    assert_eq!(
        froms,
        [
            &"FROM rust:1-bookworm AS builder",
            &"FROM gcr.io/distroless/cc-debian12:nonroot"
        ]
    );
    let runtime: Vec<&str> = instructions
        .iter()
        .skip_while(|l| !l.starts_with("FROM gcr.io/distroless"))
        .copied()
        .collect();
    assert!(
        runtime.iter().all(|l| !l.starts_with("RUN")),
        "the runtime stage has no shell to RUN with"
    );
    assert!(runtime.contains(&"USER nonroot:nonroot"));
    assert!(runtime.contains(&"EXPOSE 9863"));
    let entrypoint = runtime
        .iter()
        .find(|l| l.starts_with("ENTRYPOINT "))
        .expect("ENTRYPOINT");
    let exec_form: Vec<String> =
        serde_json::from_str(entrypoint.trim_start_matches("ENTRYPOINT ")).expect("exec form");
    assert_eq!(exec_form, ["/usr/local/bin/dynamodb-kinesis-exporter"]);
    let cmd = runtime.iter().find(|l| l.starts_with("CMD ")).expect("CMD");
    let cmd: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD ")).expect("exec form");
    assert!(cmd.contains(&"--config.file=/etc/dynamodb-kinesis-exporter/exporter.yaml".to_string()));
}

// --------------------------------------------------------------------- docs

/// Every `deploy/...` or `docs/...` path the prose names exists.
#[test]
fn docs_name_only_files_that_exist() {
    let mut named = 0;
    for doc in ["docs/runbook.md", "README.md"] {
        let text = read(doc);
        let words = text.split(|c: char| c.is_whitespace() || "`()[]\"',".contains(c));
        for word in words {
            let path = word.split('#').next().unwrap_or_default();
            let path = path.trim_end_matches(['.', ':']);
            if path.starts_with("deploy/") || path.starts_with("docs/") {
                assert!(repo().join(path).exists(), "{doc} names missing {path}");
                named += 1;
            }
        }
    }
    assert!(named > 20, "only {named} paths found: is the scan broken?");
}
