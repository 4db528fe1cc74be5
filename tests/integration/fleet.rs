//! Fleet scale end to end, in process: several accounts (through STS
//! AssumeRole) and regions, discovery, the per-scope request budget,
//! sharding, all with the real SDK clients against the simulator on
//! loopback, checked through `/metrics` and the simulator's request log.

use std::collections::BTreeSet;
use std::time::Duration;

use dke_simulator::{Fault, Service, TableSpec};

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
    let busiest = sim.max_requests_in_window(DEFAULT_ACCOUNT, "us-east-1", Duration::from_secs(1));
    assert!(
        busiest <= 11,
        "{busiest} requests in one second at a budget of 10"
    );
    let total = sim.requests_in(DEFAULT_ACCOUNT, "us-east-1");
    assert!(total >= 40, "the budget is used: {total} requests in 6 s");
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
    let scope = [("account_id", DEFAULT_ACCOUNT), ("region", "us-east-1")];
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
    let text = format!(
        "poll_interval: 3s\nmax_requests_per_second: 100\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables:\n{list}",
        sim.endpoint_url()
    );
    std::fs::write(&path, &text).unwrap();
    let (exp, reload) = exporter_from_file(&path).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        polled(p).len() == 30 && p.contains("dynamodb_kinesis_table_poll_success{")
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    sim.reset_stats();
    for _ in 0..10 {
        reload.send(()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Ten reloads in one second: 30 tables every 3 s is 10 polls a second;
    // a burst would re-poll all 30 on each reload.
    let busiest = sim.max_requests_in_window(DEFAULT_ACCOUNT, "us-east-1", Duration::from_secs(1));
    assert!(
        busiest <= 15,
        "{busiest} requests in one second around the reloads"
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
