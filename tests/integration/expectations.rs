//! Tables that must stream, in process against the simulator with the real
//! SDK: CDC switched off by an operator (`DisableKinesisStreamingDestination`)
//! and on again, never turned on, only failed attempts, expected by a tag
//! that is then set and removed, and a stream of the wrong name.
//!
//! Each check reads the page the way `DynamoDBKinesisExpectedTableNotStreaming`
//! and `DynamoDBKinesisExpectedTableWrongStream` do (their expressions,
//! without the `for`): [`not_streaming`] and [`on_a_wrong_stream`].

use std::time::Duration;

use dke_simulator::{Service, ENABLE_FAILED_DESCRIPTION};

use crate::support::*;

const ACCOUNT: &str = "123456789012";
const EXPECTED: &str = "dynamodb_kinesis_table_destination_expected";
const STREAM_MATCH: &str = "dynamodb_kinesis_table_destination_stream_match";
const STATUS: &str = "dynamodb_kinesis_destination_status";
const TAGS: &str = "dynamodb_kinesis_table_tags";

fn stream(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
}

/// A table's value of a per-table family.
fn of(page: &str, family: &str, table: &str) -> Option<f64> {
    value(
        page,
        family,
        &[
            ("account_id", ACCOUNT),
            ("region", "us-east-1"),
            ("table", table),
        ],
    )
}

/// The statuses whose series is 1, one per destination, as `stream=STATUS`.
fn statuses(page: &str, table: &str) -> Vec<String> {
    (family(page, STATUS).into_iter())
        .filter(|(s, v)| *v == 1.0 && label(s, "table").as_deref() == Some(table))
        .map(|(s, _)| {
            let arn = label(&s, "stream_arn").unwrap_or_default();
            let name = arn.rsplit('/').next().unwrap_or_default().to_string();
            format!("{name}={}", label(&s, "status").unwrap_or_default())
        })
        .collect()
}

/// `DynamoDBKinesisExpectedTableNotStreaming`'s expression for `table`:
/// expected, polled at least once, and no ACTIVE or UPDATING destination.
fn not_streaming(page: &str, table: &str) -> bool {
    let working = statuses(page, table)
        .iter()
        .any(|s| s.ends_with("=ACTIVE") || s.ends_with("=UPDATING"));
    let polled = of(page, "dynamodb_kinesis_table_destinations", table).is_some();
    of(page, EXPECTED, table) == Some(1.0) && polled && !working
}

/// `DynamoDBKinesisExpectedTableWrongStream`'s expression for `table`.
fn on_a_wrong_stream(page: &str, table: &str) -> bool {
    of(page, STREAM_MATCH, table) == Some(0.0) && of(page, EXPECTED, table) == Some(1.0)
}

/// The `tag_team` and `tag_owner` of a table's tags series, if it has one.
fn team_and_owner(page: &str, table: &str) -> Option<(String, String)> {
    let series =
        (family(page, TAGS).into_keys()).find(|s| label(s, "table").as_deref() == Some(table))?;
    Some((label(&series, "tag_team")?, label(&series, "tag_owner")?))
}

/// Fast polls, no retries (every call is one request the simulator counts).
fn config(target: &str) -> String {
    format!(
        "poll_interval: 300ms\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n{target}"
    )
}

#[tokio::test]
async fn an_expected_table_switched_off_and_on_again() {
    let sim = simulator(&format!(
        "transitions: {{enabling: 400ms, disabling: 400ms}}\ntables:\n\
         \x20 - name: orders\n    destinations: [{{stream_arn: {}, status: ACTIVE}}]\n\
         \x20 - name: scratch\n    destinations: [{{stream_arn: {}, status: ACTIVE}}]\n",
        stream("orders-cdc"),
        stream("scratch-cdc"),
    ))
    .await;
    let exp = exporter(
        &config("    expect: {streaming: true}\n    tables: [orders, {name: scratch, expect_streaming: false}]\n"),
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        statuses(p, "orders") == ["orders-cdc=ACTIVE"]
            && statuses(p, "scratch") == ["scratch-cdc=ACTIVE"]
    })
    .await;
    assert_eq!(of(&page, EXPECTED, "orders"), Some(1.0));
    assert_eq!(of(&page, EXPECTED, "scratch"), Some(0.0));
    assert!(!not_streaming(&page, "orders"));

    // Both switched off, as an operator would.
    let operator = operator_dynamodb(&sim, "us-east-1");
    for table in ["orders", "scratch"] {
        let out = (operator.disable_kinesis_streaming_destination())
            .table_name(table)
            .stream_arn(stream(&format!("{table}-cdc")))
            .send()
            .await
            .unwrap();
        assert_eq!(
            out.destination_status().map(|s| s.as_str()),
            Some("DISABLING")
        );
    }
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        statuses(p, "orders") == ["orders-cdc=DISABLED"]
            && statuses(p, "scratch") == ["scratch-cdc=DISABLED"]
    })
    .await;
    assert!(
        not_streaming(&page, "orders"),
        "the expected table does not stream"
    );
    assert!(!not_streaming(&page, "scratch"), "scratch need not stream");
    assert_eq!(of(&page, EXPECTED, "orders"), Some(1.0));
    assert_eq!(of(&page, EXPECTED, "scratch"), Some(0.0));

    // And on again: ENABLING is not streaming yet, ACTIVE is.
    let out = (operator.enable_kinesis_streaming_destination())
        .table_name("orders")
        .stream_arn(stream("orders-cdc"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        out.destination_status().map(|s| s.as_str()),
        Some("ENABLING")
    );
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        statuses(p, "orders") == ["orders-cdc=ACTIVE"]
    })
    .await;
    assert!(!not_streaming(&page, "orders"));
    assert_eq!(of(&page, EXPECTED, "orders"), Some(1.0));

    // The exporter only reads: the operator's calls are the only changes.
    let counts = sim.operation_counts();
    let count = |op: &str| counts.get(&(Service::DynamoDb, op.to_string())).copied();
    assert_eq!(count("DisableKinesisStreamingDestination"), Some(2));
    assert_eq!(count("EnableKinesisStreamingDestination"), Some(1));
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn an_expected_table_never_enabled_then_failed_then_streaming() {
    let sim = simulator(&format!(
        "transitions: {{enabling: 400ms, disabling: 400ms}}\ntables:\n\
         \x20 - name: fresh\n\
         \x20 - name: sibling\n    destinations: [{{stream_arn: {}, status: ACTIVE}}]\n\
         \x20 - name: unneeded\n",
        stream("sibling-cdc"),
    ))
    .await;
    let exp = exporter(
        &config("    expect: {streaming: true}\n    tables: [fresh, sibling, {name: unneeded, expect_streaming: false}]\n"),
        &sim,
    )
    .await;
    // Never enabled: no destination at all.
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        ["fresh", "sibling", "unneeded"]
            .iter()
            .all(|t| of(p, "dynamodb_kinesis_table_destinations", t).is_some())
    })
    .await;
    assert_eq!(
        of(&page, "dynamodb_kinesis_table_destinations", "fresh"),
        Some(0.0)
    );
    assert!(statuses(&page, "fresh").is_empty());
    assert!(not_streaming(&page, "fresh"));
    assert!(!not_streaming(&page, "sibling"));
    assert!(
        !not_streaming(&page, "unneeded"),
        "not expected, no destination either"
    );

    // Enabled to a stream that is not there: only an ENABLE_FAILED entry.
    let gone = stream("gone");
    sim.delete_stream(&gone);
    let operator = operator_dynamodb(&sim, "us-east-1");
    let enable = |arn: String| {
        (operator.enable_kinesis_streaming_destination())
            .table_name("fresh")
            .stream_arn(arn)
            .send()
    };
    enable(gone.clone()).await.unwrap();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        statuses(p, "fresh") == ["gone=ENABLE_FAILED"]
    })
    .await;
    assert!(not_streaming(&page, "fresh"), "only ENABLE_FAILED entries");
    assert!(
        page.contains(ENABLE_FAILED_DESCRIPTION),
        "AWS's reason is on the info series"
    );

    // Enabled to a working stream: ACTIVE beside the old ENABLE_FAILED
    // entry, which AWS keeps listed. That streams.
    enable(stream("fresh-cdc")).await.unwrap();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        let mut now = statuses(p, "fresh");
        now.sort();
        now == ["fresh-cdc=ACTIVE", "gone=ENABLE_FAILED"]
    })
    .await;
    assert!(!not_streaming(&page, "fresh"));
    exp.stop().await;
    sim.shutdown().await;
}

/// Expected by a tag, which is then set on one table and removed from
/// another: the expectation, and the tags the alert carries, follow at the
/// next tag read (`tags_refresh_interval`, at least a minute: on paused
/// time). A table whose tags cannot be read has no expectation at all.
#[tokio::test(start_paused = true)]
async fn expected_by_tag_as_the_tag_is_set_and_removed() {
    let sim = simulator(&format!(
        "tables:\n\
         \x20 - name: orders\n    tags: {{cdc-required: \"true\", team: payments, owner: ana}}\n    destinations: [{{stream_arn: {}, status: DISABLED}}]\n\
         \x20 - name: staging\n    tags: {{team: search}}\n\
         \x20 - name: locked\n    tag_fault: access_denied\n",
        stream("orders-cdc"),
    ))
    .await;
    let exp = exporter(
        "poll_interval: 5s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    expect: {tag: cdc-required}\n    export_tags: [team, owner]\n    tags_refresh_interval: 1m\n    tables: [orders, staging, locked]\n",
        &sim,
    )
    .await;
    // Paused time passes only while everything waits: generous deadlines
    // cost nothing.
    let limit = Duration::from_secs(600);
    let page = scrape_until(exp.addr, limit, |p| {
        of(p, EXPECTED, "orders").is_some()
            && of(p, EXPECTED, "staging").is_some()
            && of(p, "dynamodb_kinesis_table_destinations", "locked").is_some()
    })
    .await;
    assert_eq!(of(&page, EXPECTED, "orders"), Some(1.0));
    assert_eq!(of(&page, EXPECTED, "staging"), Some(0.0));
    assert!(not_streaming(&page, "orders"));
    assert_eq!(
        team_and_owner(&page, "orders"),
        Some(("payments".into(), "ana".into()))
    );
    // Tags unreadable: expectation unknown (no series), the read errors
    // counted, which DynamoDBKinesisTableExpectationUnknown alerts on.
    assert_eq!(of(&page, EXPECTED, "locked"), None);
    let denied = [
        ("account_id", ACCOUNT),
        ("region", "us-east-1"),
        ("table", "locked"),
        ("code", "AccessDeniedException"),
    ];
    assert!(value(
        &page,
        "dynamodb_kinesis_table_tag_read_errors_total",
        &denied
    )
    .is_some_and(|n| n >= 1.0));

    // The tag moves from orders to staging, whose team changes too.
    sim.set_tags(
        "orders",
        vec![
            ("team".into(), "payments".into()),
            ("owner".into(), "ana".into()),
        ],
    );
    sim.set_tags(
        "staging",
        vec![
            ("team".into(), "platform".into()),
            ("owner".into(), "kim".into()),
            ("cdc-required".into(), "TRUE".into()),
        ],
    );
    let page = scrape_until(exp.addr, limit, |p| {
        of(p, EXPECTED, "orders") == Some(0.0) && of(p, EXPECTED, "staging") == Some(1.0)
    })
    .await;
    assert!(
        !not_streaming(&page, "orders"),
        "the tag removed: need not stream"
    );
    assert!(
        not_streaming(&page, "staging"),
        "the tag set: must, and has no destination"
    );
    assert_eq!(
        team_and_owner(&page, "staging"),
        Some(("platform".into(), "kim".into()))
    );
    // One series a table; locked's, whose tags could never be read, with
    // no tag labels, so its alerts still go out (to no team).
    assert_eq!(family(&page, TAGS).len(), 3);
    assert_eq!(team_and_owner(&page, "locked"), None);

    // Once readable, locked's tags are read at the next refresh.
    sim.set_tag_fault("locked", None);
    let page = scrape_until(exp.addr, limit, |p| of(p, EXPECTED, "locked").is_some()).await;
    assert_eq!(of(&page, EXPECTED, "locked"), Some(0.0));
    // Read: the exported tags it lacks are empty, no longer absent.
    assert_eq!(
        team_and_owner(&page, "locked"),
        Some((String::new(), String::new()))
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn a_wrong_stream_until_the_destination_is_repointed() {
    let sim = simulator(&format!(
        "transitions: {{enabling: 400ms, disabling: 400ms}}\ntables:\n\
         \x20 - name: orders\n    destinations: [{{stream_arn: {}, status: ACTIVE}}]\n\
         \x20 - name: ledger\n    destinations: [{{stream_arn: {}, status: ACTIVE}}]\n\
         \x20 - name: payments\n    destinations: [{{stream_arn: {}, status: DISABLED}}]\n",
        stream("cdc-orders"),
        stream("ledger-archive"),
        stream("payments-archive"),
    ))
    .await;
    let exp = exporter(
        &config("    expect: {streaming: true, stream: \"^cdc-\"}\n    tables: [orders, ledger, payments]\n"),
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        of(p, STREAM_MATCH, "orders").is_some()
            && of(p, STREAM_MATCH, "ledger").is_some()
            && of(p, EXPECTED, "payments").is_some()
    })
    .await;
    assert_eq!(of(&page, STREAM_MATCH, "orders"), Some(1.0));
    assert!(!on_a_wrong_stream(&page, "orders"));
    assert!(on_a_wrong_stream(&page, "ledger"));
    assert!(
        !not_streaming(&page, "ledger"),
        "it streams, to the wrong place"
    );
    // No working destination: nothing to match, so only the not-streaming
    // alert speaks for it, never both.
    assert_eq!(of(&page, STREAM_MATCH, "payments"), None);
    assert!(not_streaming(&page, "payments"));

    // Repointed: Disable the archive stream, then Enable the right one.
    let operator = operator_dynamodb(&sim, "us-east-1");
    (operator.disable_kinesis_streaming_destination())
        .table_name("ledger")
        .stream_arn(stream("ledger-archive"))
        .send()
        .await
        .unwrap();
    // One stream at a time: no Enable while the old one is DISABLING.
    let refused = (operator.enable_kinesis_streaming_destination())
        .table_name("ledger")
        .stream_arn(stream("cdc-ledger"))
        .send()
        .await
        .unwrap_err()
        .into_service_error();
    assert_eq!(
        aws_sdk_dynamodb::error::ProvideErrorMetadata::code(&refused),
        Some("ValidationException")
    );
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        statuses(p, "ledger") == ["ledger-archive=DISABLED"]
    })
    .await;
    assert_eq!(
        of(&page, STREAM_MATCH, "ledger"),
        None,
        "no working destination"
    );
    (operator.enable_kinesis_streaming_destination())
        .table_name("ledger")
        .stream_arn(stream("cdc-ledger"))
        .send()
        .await
        .unwrap();
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        of(p, STREAM_MATCH, "ledger") == Some(1.0)
    })
    .await;
    let mut now = statuses(&page, "ledger");
    now.sort();
    assert_eq!(now, ["cdc-ledger=ACTIVE", "ledger-archive=DISABLED"]);
    assert!(!on_a_wrong_stream(&page, "ledger"));
    assert!(!not_streaming(&page, "ledger"));
    exp.stop().await;
    sim.shutdown().await;
}
