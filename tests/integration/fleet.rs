//! Fleet scale end to end, in process: several accounts (through STS
//! AssumeRole) and regions, discovery, the per-scope request budget,
//! sharding, all with the real SDK clients against the simulator on
//! loopback, checked through `/metrics` and the simulator's request log.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use dke_simulator::{Fault, Listing, Service, TableSpec};

use crate::support::*;

const DEFAULT_ACCOUNT: &str = "123456789012";
const MEMBER: &str = "222222222222";
const SUCCESS: &str = "dynamodb_kinesis_table_poll_success";
const DISCOVERED: &str = "dynamodb_kinesis_discovery_tables";
const RATE: &str = "dynamodb_kinesis_scope_request_rate_limit";

fn success(page: &str, account: &str, region: &str, table: &str) -> Option<f64> {
    value(
        page,
        SUCCESS,
        &[
            ("table", table),
            ("region", region),
            ("account_id", account),
        ],
    )
}

/// The (account, region, table) keys that have a poll-success series.
fn polled(page: &str) -> BTreeSet<(String, String, String)> {
    family(page, SUCCESS)
        .keys()
        .map(|series| {
            (
                label(series, "account_id").unwrap(),
                label(series, "region").unwrap(),
                label(series, "table").unwrap(),
            )
        })
        .collect()
}

/// Scenario YAML for tables with one ACTIVE destination each, as items of
/// the top-level `tables:` list.
fn tables(names: &[&str]) -> String {
    tables_at(2, names)
}

/// The same, indented for a list `indent` columns deep (a scope's tables).
fn tables_at(indent: usize, names: &[&str]) -> String {
    let pad = " ".repeat(indent);
    names
        .iter()
        .map(|n| {
            format!(
                "{pad}- name: {n}\n{pad}  destinations:\n{pad}    - stream_arn: arn:aws:kinesis:us-east-1:{DEFAULT_ACCOUNT}:stream/{n}\n{pad}      status: ACTIVE\n"
            )
        })
        .collect()
}

#[tokio::test]
async fn discovery_pages_filters_and_follows_churn() {
    // 250 tables: three ListTables pages of at most 100.
    let mut scenario = String::from("tables:\n");
    for i in 0..240 {
        scenario.push_str(&format!("  - name: other-{i:03}\n"));
    }
    scenario.push_str(
        "  - name: orders-eu\n    tags: {cdc: \"true\", team: payments}\n\
         \x20 - name: orders-us\n    tags: {cdc: \"yes\"}\n\
         \x20 - name: orders-test\n    tags: {cdc: \"true\"}\n\
         \x20 - name: orders-off\n    tags: {cdc: \"false\"}\n\
         \x20 - name: orders-untagged\n\
         \x20 - name: payments\n    tags: {cdc: \"true\"}\n\
         \x20 - name: payments-archive\n    tags: {cdc: \"true\"}\n",
    );
    let sim = simulator(&scenario).await;
    let exp = exporter(
        "poll_interval: 500ms\nmax_requests_per_second: 200\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    discovery:\n      include: [\"^orders-\", \"^payments$\"]\n      exclude: [\"-test$\"]\n      tags: {cdc: \"/true|yes/\"}\n      refresh_interval: 1s\n",
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        polled(p).len() == 3 && family(p, SUCCESS).values().all(|v| *v == 1.0)
    })
    .await;
    let names: BTreeSet<String> = polled(&page).into_iter().map(|(_, _, t)| t).collect();
    assert_eq!(
        names,
        ["orders-eu", "orders-us", "payments"]
            .map(String::from)
            .into()
    );
    let scope = [("account_id", DEFAULT_ACCOUNT), ("region", "us-east-1")];
    assert_eq!(value(&page, DISCOVERED, &scope), Some(3.0));
    // Every page was read, and tags only for the name-filter survivors.
    let listings = sim.operation_requests(Service::DynamoDb, "ListTables");
    assert!(listings >= 3, "{listings} ListTables calls");
    let tagged: BTreeSet<String> = sim
        .requests()
        .into_iter()
        .filter(|r| r.operation == "ListTagsOfResource")
        .filter_map(|r| r.table)
        .collect();
    assert!(
        tagged
            .iter()
            .all(|t| t.starts_with("orders-") || t == "payments"),
        "{tagged:?}"
    );
    assert!(!tagged.contains("orders-test"));

    // Churn: a new matching table appears, a polled one is deleted.
    sim.put_table(TableSpec::new("orders-new").with_tag("cdc", "true"));
    sim.remove_table("orders-us");
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "orders-new") == Some(1.0)
            && success(p, DEFAULT_ACCOUNT, "us-east-1", "orders-us").is_none()
    })
    .await;
    assert!(
        !page.contains("table=\"orders-us\""),
        "a deleted table's series go"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_failed_refresh_keeps_the_last_list_and_is_counted() {
    let sim = simulator(&format!("tables:\n{}", tables(&["orders"]))).await;
    let exp = exporter(
        "poll_interval: 300ms\nmax_requests_per_second: 100\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    discovery:\n      refresh_interval: 1s\n",
        &sim,
    )
    .await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "orders") == Some(1.0)
    })
    .await;
    // Every request of the scope fails now: listings and polls.
    sim.set_scope_fault(DEFAULT_ACCOUNT, "us-east-1", Some(Fault::AccessDenied));
    let errors = "dynamodb_kinesis_discovery_errors_total";
    let scope_code = [
        ("account_id", DEFAULT_ACCOUNT),
        ("region", "us-east-1"),
        ("code", "AccessDeniedException"),
    ];
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        value(p, errors, &scope_code).is_some_and(|n| n >= 1.0)
    })
    .await;
    // The table is still polled (and failing), not forgotten.
    assert_eq!(
        success(&page, DEFAULT_ACCOUNT, "us-east-1", "orders"),
        Some(0.0)
    );
    assert_eq!(
        value(
            &page,
            DISCOVERED,
            &[("account_id", DEFAULT_ACCOUNT), ("region", "us-east-1")]
        ),
        Some(1.0)
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn two_regions_and_two_accounts_through_assume_role() {
    let scenario = format!(
        "tables:\n{}scopes:\n  - account_id: \"{DEFAULT_ACCOUNT}\"\n    region: eu-west-1\n    tables:\n{}  - account_id: \"{MEMBER}\"\n    region: us-east-1\n    tables:\n{}",
        tables(&["orders"]),
        tables_at(6, &["orders-eu"]),
        tables_at(6, &["orders"]),
    );
    let sim = simulator(&scenario).await;
    let exp = exporter(
        &format!(
            "poll_interval: 300ms\nmax_requests_per_second: 100\nmax_attempts: 1\ntargets:\n  - regions: [us-east-1, eu-west-1]\n    endpoint_url: {{endpoint}}\n    discovery:\n      refresh_interval: 1m\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    role_arn: arn:aws:iam::{MEMBER}:role/dynamodb-kinesis-exporter\n    external_id: hub-secret\n    tables: [orders]\n"
        ),
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| polled(p).len() == 3).await;
    let expected: BTreeSet<(String, String, String)> = [
        (DEFAULT_ACCOUNT, "us-east-1", "orders"),
        (DEFAULT_ACCOUNT, "eu-west-1", "orders-eu"),
        (MEMBER, "us-east-1", "orders"),
    ]
    .iter()
    .map(|(a, r, t)| (a.to_string(), r.to_string(), t.to_string()))
    .collect();
    assert_eq!(
        polled(&page),
        expected,
        "same-named tables of two accounts are distinct"
    );
    assert!(family(&page, SUCCESS).values().all(|v| *v == 1.0), "{page}");
    // The member account's requests were signed with the keys STS issued
    // for the role, and no other requests reached it.
    let issued: Vec<String> = sim
        .issued_keys()
        .into_iter()
        .filter(|k| k.account_id == MEMBER)
        .map(|k| k.access_key_id)
        .collect();
    assert!(!issued.is_empty(), "the role was assumed");
    let member_requests: Vec<_> = sim
        .requests()
        .into_iter()
        .filter(|r| r.account_id == MEMBER && r.service == Service::DynamoDb)
        .collect();
    assert!(!member_requests.is_empty());
    assert!(member_requests
        .iter()
        .all(|r| issued.contains(&r.access_key_id)));
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn the_budget_holds_measured_at_the_simulator() {
    let names: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let sim = simulator(&format!("tables:\n{}", tables(&refs))).await;
    let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
    // 40 tables every 500 ms would need 80 req/s; the budget is 10.
    let exp = exporter(
        &format!("poll_interval: 500ms\nmax_requests_per_second: 10\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    tables:\n{list}"),
        &sim,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(6)).await;
    let page = scrape(exp.addr).await;
    exp.stop().await;
    // DynamoDB's budget holds, and the stream checks keep to their own
    // (kinesis_max_requests_per_second, 5 by default) instead of taking
    // DynamoDB's tokens. (The budget lets no more than the rate go in any
    // second; at the simulator a request held up between its token and
    // the wire on a loaded machine can bring one more into a second.)
    let busiest = busiest_second(&sim, DEFAULT_ACCOUNT, "us-east-1", Service::DynamoDb);
    assert!(
        busiest <= 11,
        "{busiest} DynamoDB requests in one second at a budget of 10"
    );
    let checks = busiest_second(&sim, DEFAULT_ACCOUNT, "us-east-1", Service::Kinesis);
    assert!(
        (1..=6).contains(&checks),
        "{checks} Kinesis requests in one second at 5"
    );
    // 6 s at 10 a second, less the guard and the start: the polls have
    // DynamoDB's budget to themselves.
    let polls = sim.operation_requests(Service::DynamoDb, "DescribeKinesisStreamingDestination");
    assert!(polls >= 50, "the budget is used: {polls} polls in 6 s");
    let stretched = value(
        &page,
        "dynamodb_kinesis_scope_effective_poll_interval_seconds",
        &[("account_id", DEFAULT_ACCOUNT), ("region", "us-east-1")],
    )
    .unwrap();
    assert!(
        stretched > 1.5,
        "the cycle stretched to ~4 s, saw {stretched}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn a_throttle_storm_cuts_the_rate_and_it_recovers() {
    let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let sim = simulator(&format!("tables:\n{}", tables(&refs))).await;
    let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
    let exp = exporter(
        &format!("poll_interval: 500ms\nmax_requests_per_second: 20\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    tables:\n{list}"),
        &sim,
    )
    .await;
    let scope = [
        ("account_id", DEFAULT_ACCOUNT),
        ("region", "us-east-1"),
        ("service", "dynamodb"),
    ];
    sim.set_scope_fault(DEFAULT_ACCOUNT, "us-east-1", Some(Fault::Throttle));
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        value(p, RATE, &scope).is_some_and(|r| r < 5.0)
    })
    .await;
    assert!(value(&page, "dynamodb_kinesis_scope_throttled_total", &scope).unwrap() >= 2.0);
    sim.set_scope_fault(DEFAULT_ACCOUNT, "us-east-1", None);
    scrape_until(exp.addr, Duration::from_secs(20), |p| {
        value(p, RATE, &scope) == Some(20.0)
    })
    .await;
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_blackholed_region_does_not_slow_another() {
    let eu = tables_at(6, &["orders"]);
    let sim = simulator(&format!(
        "tables:\n{}scopes:\n  - account_id: \"{DEFAULT_ACCOUNT}\"\n    region: eu-west-1\n    tables:\n{eu}",
        tables(&["orders"])
    ))
    .await;
    sim.set_scope_fault(DEFAULT_ACCOUNT, "eu-west-1", Some(Fault::Hang));
    let exp = exporter(
        "poll_interval: 300ms\nrequest_timeout: 2s\nmax_attempts: 1\nconcurrency: 2\nmax_requests_per_second: 50\ntargets:\n  - regions: [us-east-1, eu-west-1]\n    endpoint_url: {endpoint}\n    tables: [orders]\n",
        &sim,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let polls = sim
        .requests()
        .into_iter()
        .filter(|r| r.region == "us-east-1" && r.operation == "DescribeKinesisStreamingDestination")
        .count();
    // 4 s at 300 ms ± 10 %: about 13 polls, unaffected by the hung region.
    assert!(polls >= 10, "{polls} polls of the healthy region");
    let page = scrape(exp.addr).await;
    assert_eq!(
        success(&page, DEFAULT_ACCOUNT, "us-east-1", "orders"),
        Some(1.0)
    );
    assert_eq!(
        success(&page, DEFAULT_ACCOUNT, "eu-west-1", "orders"),
        Some(0.0)
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_reload_causes_no_burst() {
    let names: Vec<String> = (0..30).map(|i| format!("t{i:02}")).collect();
    let refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let sim = simulator(&format!("tables:\n{}", tables(&refs))).await;
    let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
    let dir = scratch(&[]);
    let path = dir.path().join("exporter.yaml");
    // Each reload changes the file (an unchanged one is not reloaded at
    // all), but not the tables.
    let text = |rate: u32| {
        format!(
            "poll_interval: 3s\nmax_requests_per_second: {rate}\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables:\n{list}",
            sim.endpoint_url()
        )
    };
    std::fs::write(&path, text(100)).unwrap();
    let (exp, reload) = exporter_from_file(&path).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        polled(p).len() == 30 && p.contains("dynamodb_kinesis_table_poll_success{")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.reset_stats();
    let started = tokio::time::Instant::now();
    for i in 0..10 {
        std::fs::write(&path, text(101 + i)).unwrap();
        reload.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let window = started.elapsed();
    let page = scrape(exp.addr).await;
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    // Ten reloads in about a second, each a new config: a burst would
    // poll all 30 tables again on each one. Every table keeps its place in
    // the schedule, so within less than one poll interval (3 s ± 10 %)
    // none is polled twice, whatever the waves of the schedule itself.
    assert!(window < Duration::from_millis(2500), "{window:?}");
    let mut polls: std::collections::BTreeMap<String, usize> = Default::default();
    for record in sim.requests() {
        if record.operation == "DescribeKinesisStreamingDestination" {
            *polls.entry(record.table.unwrap_or_default()).or_default() += 1;
        }
    }
    assert!(
        polls.values().all(|n| *n == 1),
        "tables polled more than once around the reloads: {polls:?}"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn three_shards_over_a_thousand_tables_are_disjoint_and_complete() {
    let mut scenario = String::from("tables:\n");
    for i in 0..1000 {
        scenario.push_str(&format!("  - name: table-{i:04}\n"));
    }
    let sim = simulator(&scenario).await;
    let config = "poll_interval: 1h\nmax_requests_per_second: 1000\nconcurrency: 16\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    discovery:\n      refresh_interval: 1h\n";
    let mut shards = Vec::new();
    for index in 0..3 {
        shards.push(
            exporter_with(config, &sim, |settings| {
                settings.shard = dynamodb_kinesis_exporter::state::Shard { index, total: 3 };
            })
            .await,
        );
    }
    let mut all = BTreeSet::new();
    let mut total = 0;
    for exp in &shards {
        let page = scrape_until(exp.addr, Duration::from_secs(30), first_cycle_done).await;
        let mine = polled(&page);
        let share = value(
            &page,
            "dynamodb_kinesis_exporter_shard_tables",
            &[("shard", &exp_shard(&page)), ("total_shards", "3")],
        )
        .unwrap();
        assert_eq!(share as usize, mine.len());
        total += mine.len();
        all.extend(mine);
    }
    assert_eq!(total, 1000, "no table is polled twice");
    assert_eq!(all.len(), 1000, "every table is polled");
    for exp in shards {
        exp.stop().await;
    }
    sim.shutdown().await;
}

/// Whether a shard's first cycle is done: every table it owns polled.
fn first_cycle_done(page: &str) -> bool {
    let share = family(page, "dynamodb_kinesis_exporter_shard_tables");
    let Some(count) = share.values().next() else {
        return false;
    };
    *count > 0.0 && family(page, SUCCESS).len() == *count as usize
}

fn exp_shard(page: &str) -> String {
    let share = family(page, "dynamodb_kinesis_exporter_shard_tables");
    label(share.keys().next().unwrap(), "shard").unwrap()
}

const DISCOVERY_ERRORS: &str = "dynamodb_kinesis_discovery_errors_total";

/// `tables:` items (at `indent`) named `prefix-NN`, tagged `cdc: "true"`.
fn tagged(indent: usize, prefix: &str, count: usize) -> String {
    let pad = " ".repeat(indent);
    (0..count)
        .map(|i| format!("{pad}- name: {prefix}-{i:02}\n{pad}  tags: {{cdc: \"true\"}}\n"))
        .collect()
}

fn discovery_errors(page: &str, region: &str, code: &str) -> f64 {
    value(
        page,
        DISCOVERY_ERRORS,
        &[
            ("account_id", DEFAULT_ACCOUNT),
            ("region", region),
            ("code", code),
        ],
    )
    .unwrap_or(0.0)
}

fn polled_names(page: &str) -> BTreeSet<String> {
    polled(page).into_iter().map(|(_, _, t)| t).collect()
}

const TAG_FILTER: &str = "poll_interval: 500ms\nmax_requests_per_second: 500\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    discovery:\n      tags: {cdc: \"true\"}\n      refresh_interval: 1s\n";

#[tokio::test]
async fn one_table_gone_at_tag_time_and_one_denied_hide_no_other() {
    // 22 tables under a tag filter: one is deleted between ListTables and
    // its tag read, one answers AccessDenied to it.
    let scenario = format!(
        "tables:\n{}  - name: gone\n    tags: {{cdc: \"true\"}}\n    tag_fault: not_found\n  - name: denied\n    tags: {{cdc: \"true\"}}\n    tag_fault: access_denied\n",
        tagged(2, "t", 20)
    );
    let sim = simulator(&scenario).await;
    let exp = exporter(TAG_FILTER, &sim).await;
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        polled(p).len() == 20
            && family(p, SUCCESS).values().all(|v| *v == 1.0)
            && discovery_errors(p, "us-east-1", "AccessDeniedException") >= 1.0
    })
    .await;
    let names = polled_names(&page);
    assert!(
        !names.contains("gone") && !names.contains("denied"),
        "{names:?}"
    );
    let scope = [("account_id", DEFAULT_ACCOUNT), ("region", "us-east-1")];
    assert_eq!(value(&page, DISCOVERED, &scope), Some(20.0));
    // A table gone at tag time is not an error; the denied one is counted.
    assert_eq!(
        discovery_errors(&page, "us-east-1", "ResourceNotFoundException"),
        0.0
    );
    assert!(value(
        &page,
        "dynamodb_kinesis_discovery_last_success_timestamp_seconds",
        &scope
    )
    .is_some());
    let ready = request(exp.addr, "GET", "/readyz").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready: 20 of 20 tables polled\n")
    );

    // A polled table whose tag read starts failing keeps being polled (its
    // last decision); the denied table is polled once its tags can be read.
    sim.set_tag_fault("t-05", Some(Fault::Throttle));
    let before = discovery_errors(&page, "us-east-1", "ThrottlingException");
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        discovery_errors(p, "us-east-1", "ThrottlingException") >= before + 2.0
    })
    .await;
    assert!(
        polled_names(&page).contains("t-05"),
        "t-05 keeps being polled"
    );
    assert_eq!(polled(&page).len(), 20);
    sim.set_tag_fault("denied", None);
    scrape_until(exp.addr, Duration::from_secs(15), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "denied") == Some(1.0)
    })
    .await;
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_unknown_code_on_one_table_s_tags_hides_no_other_table_in_either_region() {
    let mut us = tagged(2, "us", 50);
    us.push_str("  - name: us-odd\n    tags: {cdc: \"true\"}\n    tag_fault: unknown_code\n");
    let mut eu = tagged(6, "eu", 50);
    eu.push_str(
        "      - name: eu-odd\n        tags: {cdc: \"true\"}\n        tag_fault: unknown_code\n",
    );
    let sim = simulator(&format!(
        "tables:\n{us}scopes:\n  - account_id: \"{DEFAULT_ACCOUNT}\"\n    region: eu-west-1\n    tables:\n{eu}"
    ))
    .await;
    let exp = exporter(
        &TAG_FILTER.replace("- region: us-east-1", "- regions: [us-east-1, eu-west-1]"),
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(30), |p| {
        polled(p).len() == 100
            && discovery_errors(p, "us-east-1", "other") >= 1.0
            && discovery_errors(p, "eu-west-1", "other") >= 1.0
    })
    .await;
    for region in ["us-east-1", "eu-west-1"] {
        let in_region = polled(&page)
            .into_iter()
            .filter(|(_, r, _)| r == region)
            .count();
        assert_eq!(in_region, 50, "{region}");
    }
    let names = polled_names(&page);
    assert!(!names.contains("us-odd") && !names.contains("eu-odd"));
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn readiness_waits_for_a_first_successful_refresh_and_names_the_scope() {
    let eu = tables_at(6, &["orders-eu"]);
    let sim = simulator(&format!(
        "tables:\n{}scopes:\n  - account_id: \"{DEFAULT_ACCOUNT}\"\n    region: eu-west-1\n    tables:\n{eu}",
        tables(&["orders"])
    ))
    .await;
    // eu-west-1's ListTables is denied from the start.
    sim.set_scope_fault(DEFAULT_ACCOUNT, "eu-west-1", Some(Fault::AccessDenied));
    let exp = exporter(
        "poll_interval: 500ms\nmax_requests_per_second: 100\nmax_attempts: 1\ntargets:\n  - regions: [us-east-1, eu-west-1]\n    endpoint_url: {endpoint}\n    discovery:\n      refresh_interval: 1s\n",
        &sim,
    )
    .await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "orders") == Some(1.0)
            && discovery_errors(p, "eu-west-1", "AccessDeniedException") >= 2.0
    })
    .await;
    let ready = request(exp.addr, "GET", "/readyz").await;
    assert_eq!(ready.status, 503, "{}", ready.body);
    assert_eq!(
        ready.body,
        format!(
            "not ready: 1 of 1 tables polled\nwaiting for: discovery in {DEFAULT_ACCOUNT}/eu-west-1\n"
        )
    );
    sim.set_scope_fault(DEFAULT_ACCOUNT, "eu-west-1", None);
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        success(p, DEFAULT_ACCOUNT, "eu-west-1", "orders-eu") == Some(1.0)
    })
    .await;
    assert_eq!(polled(&page).len(), 2);
    let ready = request(exp.addr, "GET", "/readyz").await;
    assert_eq!(
        (ready.status, ready.body.as_str()),
        (200, "ready: 2 of 2 tables polled\n")
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn discovery_listings_that_go_round_stop_and_are_counted() {
    let sim = simulator(&format!("tables:\n{}", tagged(2, "t", 3))).await;
    sim.set_repeating_token(Listing::ListTagsOfResource, true);
    let exp = exporter(TAG_FILTER, &sim).await;
    // Every tag read goes round: each table is undecided, none polled.
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        discovery_errors(p, "us-east-1", "pagination") >= 6.0
    })
    .await;
    assert!(polled(&page).is_empty(), "{page}");
    // Three pages per table at most (token 1, token 2, token 1 again).
    let tag_reads = sim.operation_requests(Service::DynamoDb, "ListTagsOfResource");
    let refreshes = sim.operation_requests(Service::DynamoDb, "ListTables");
    assert!(
        tag_reads <= 3 * 3 * refreshes,
        "{tag_reads} tag reads in {refreshes} refreshes"
    );
    sim.set_repeating_token(Listing::ListTagsOfResource, false);
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| polled(p).len() == 3).await;
    // Now ListTables goes round: the refresh fails as a whole, and the
    // tables found before stay polled.
    sim.set_repeating_token(Listing::ListTables, true);
    let before = discovery_errors(&page, "us-east-1", "pagination");
    // A refresh already past its listing when the token started to go
    // round still reads its tags; once one refresh has failed, every later
    // one fails at the listing.
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        discovery_errors(p, "us-east-1", "pagination") > before
    })
    .await;
    sim.reset_stats();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        discovery_errors(p, "us-east-1", "pagination") >= before + 3.0
    })
    .await;
    assert_eq!(polled(&page).len(), 3);
    assert_eq!(
        sim.operation_requests(Service::DynamoDb, "ListTagsOfResource"),
        0,
        "a failed listing reads no tags"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn cloudwatch_listings_that_go_round_stop_and_are_counted() {
    let sim = simulator(
        "tables:\n  - name: orders\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{value: 1500}]\nrepeating_tokens: [ListMetrics]\n",
    )
    .await;
    let exp = exporter(
        "poll_interval: 1s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [orders]\n    cdc_metrics: {interval: 1s}\n",
        &sim,
    )
    .await;
    let cdc_errors = |page: &str| {
        value(
            page,
            "dynamodb_kinesis_cdc_errors_total",
            &[
                ("account_id", DEFAULT_ACCOUNT),
                ("region", "us-east-1"),
                ("code", "pagination"),
            ],
        )
        .unwrap_or(0.0)
    };
    let lag = "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds";
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| cdc_errors(p) >= 2.0).await;
    assert!(family(&page, lag).is_empty());
    // One listing stops at the third page (token 1, 2, then 1 again).
    let rounds = cdc_errors(&page);
    let listings = sim.operation_requests(Service::CloudWatch, "ListMetrics") as f64;
    assert!(
        listings <= 3.0 * (rounds + 1.0),
        "{listings} ListMetrics calls"
    );
    sim.set_repeating_token(Listing::ListMetrics, false);
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        !family(p, lag).is_empty()
    })
    .await;
    sim.set_repeating_token(Listing::GetMetricData, true);
    let before = cdc_errors(&page);
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        cdc_errors(p) >= before + 2.0
    })
    .await;
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_sighup_with_an_unchanged_file_makes_no_call_and_a_changed_one_applies() {
    let sim = simulator(
        "tables:\n  - name: orders\n    tags: {cdc: \"true\"}\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{value: 1500}]\n  - name: payments\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{value: 20}]\n",
    )
    .await;
    let dir = scratch(&[]);
    let path = dir.path().join("exporter.yaml");
    let text = |tables: &str| {
        format!(
            "poll_interval: 10m\nmax_requests_per_second: 100\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables: [{tables}]\n    discovery:\n      tags: {{cdc: \"true\"}}\n      refresh_interval: 10m\n    cdc_metrics: {{interval: 10m}}\n",
            sim.endpoint_url()
        )
    };
    std::fs::write(&path, text("orders")).unwrap();
    let (exp, reload) = exporter_from_file(&path).await;
    let lag = "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds";
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "orders") == Some(1.0) && family(p, lag).len() == 1
    })
    .await;
    // Let the first round (polls, stream checks, listings) settle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.reset_stats();
    reload.send(()).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        sim.operation_counts(),
        std::collections::BTreeMap::new(),
        "an unchanged file: no re-poll, no listing, no CloudWatch round"
    );
    let page = scrape(exp.addr).await;
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_exporter_config_last_reload_successful",
            &[]
        ),
        Some(1.0)
    );
    // A changed file still applies: payments is polled, and read from
    // CloudWatch.
    std::fs::write(&path, text("orders, payments")).unwrap();
    reload.send(()).await.unwrap();
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        success(p, DEFAULT_ACCOUNT, "us-east-1", "payments") == Some(1.0)
            && family(p, lag).len() == 2
    })
    .await;
    exp.stop().await;
    sim.shutdown().await;
}

/// The `service` label of the request counters for a simulator service.
fn service_label(service: Service) -> &'static str {
    match service {
        Service::DynamoDb => "dynamodb",
        Service::Kinesis => "kinesis",
        Service::CloudWatch => "cloudwatch",
        Service::Sts => "sts",
    }
}

#[tokio::test]
async fn request_counters_equal_the_calls_the_simulator_counted() {
    // Every kind of call: polls (one table throttled, every call of it,
    // so retries), stream checks, discovery with tag filters, tag reads,
    // CloudWatch listings and reads, STS; all at intervals long enough
    // that the first round is the only one.
    let scenario = format!(
        "tables:\n  - name: orders\n    tags: {{cdc: \"true\", team: payments}}\n    destinations:\n      - stream_arn: arn:aws:kinesis:us-east-1:{DEFAULT_ACCOUNT}:stream/orders\n        status: ACTIVE\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{{value: 1500}}]\n      FailedToReplicateRecordCount: [{{value: 0}}]\n\
         \x20 - name: payments\n    tags: {{cdc: \"true\"}}\n    fault: throttle\n\
         \x20 - name: other\n    tags: {{cdc: \"false\"}}\n\
         \x20 - name: audit\n    tags: {{team: security}}\n"
    );
    let sim = simulator(&scenario).await;
    sim.set_tags_page_size(1);
    let exp = exporter(
        "poll_interval: 1h\nmax_attempts: 3\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [audit, payments]\n    discovery:\n      tags: {cdc: \"true\"}\n      refresh_interval: 1h\n    export_tags: [team]\n    tags_refresh_interval: 1h\n    cdc_metrics: {interval: 1h}\n",
        &sim,
    )
    .await;
    let lag = "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds";
    scrape_until(exp.addr, Duration::from_secs(15), |p| {
        polled(p).len() == 3
            && !family(p, lag).is_empty()
            && family(p, "dynamodb_kinesis_table_tags").len() == 3
            && !family(p, "dynamodb_kinesis_stream_poll_success").is_empty()
    })
    .await;
    // The throttled table's retries (backoff of a few hundred ms) end.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let page = scrape(exp.addr).await;
    let mut counted: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (series, n) in family(&page, "dynamodb_kinesis_aws_requests_total") {
        let key = (
            label(&series, "service").unwrap(),
            label(&series, "operation").unwrap(),
        );
        *counted.entry(key).or_default() += n;
    }
    let mut seen: BTreeMap<(String, String), f64> = BTreeMap::new();
    for ((service, operation), n) in sim.operation_counts() {
        seen.insert((service_label(service).to_string(), operation), n as f64);
    }
    assert_eq!(counted, seen);
    for operation in [
        "DescribeKinesisStreamingDestination",
        "ListTables",
        "ListTagsOfResource",
    ] {
        assert!(
            seen.contains_key(&("dynamodb".into(), operation.into())),
            "{operation}"
        );
    }
    // payments is throttled: its one poll took three attempts, and each
    // is counted above.
    let attempts = sim
        .requests()
        .into_iter()
        .filter(|r| {
            r.operation == "DescribeKinesisStreamingDestination"
                && r.table.as_deref() == Some("payments")
        })
        .count();
    assert_eq!(attempts, 3);
    let metrics = family(&page, "dynamodb_kinesis_cloudwatch_metrics_requested_total");
    assert_eq!(
        metrics.values().sum::<f64>(),
        sim.metric_data_queries() as f64,
        "the metrics GetMetricData requested, as AWS bills them"
    );
    assert!(sim.metric_data_queries() > 0);
    exp.stop().await;
    sim.shutdown().await;
}
