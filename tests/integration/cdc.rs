//! Catching a silent CDC stop, in process against the simulator: the stream
//! cross-check (a stream deleted behind an ACTIVE destination, an access
//! denied that must not read as "gone") and the CloudWatch replication
//! metrics (values, no datapoint, batching, the shared budget).

use std::time::Duration;

use dke_simulator::{Fault, Service};

use crate::support::*;

const ACCOUNT: &str = "123456789012";
const STREAM_STATUS: &str = "dynamodb_kinesis_stream_status";
const LAG: &str = "dynamodb_kinesis_cdc_age_of_oldest_unreplicated_record_seconds";
const FAILED: &str = "dynamodb_kinesis_cdc_failed_to_replicate_records";

fn stream(name: &str) -> String {
    format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
}

fn stream_status(page: &str, arn: &str, status: &str) -> Option<f64> {
    value(
        page,
        STREAM_STATUS,
        &[
            ("account_id", ACCOUNT),
            ("region", "us-east-1"),
            ("stream_arn", arn),
            ("status", status),
        ],
    )
}

fn cdc(page: &str, name: &str, table: &str) -> Option<f64> {
    value(
        page,
        name,
        &[
            ("table", table),
            ("region", "us-east-1"),
            ("account_id", ACCOUNT),
            ("delegated_operation", "PutRecords"),
        ],
    )
}

const CONFIG: &str = "poll_interval: 300ms\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [orders]\n";

#[tokio::test]
async fn a_stream_deleted_behind_an_active_destination_is_not_found() {
    let arn = stream("orders-cdc");
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {arn}\n        status: ACTIVE\n"
    ))
    .await;
    let exp = exporter(CONFIG, &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        stream_status(p, &arn, "ACTIVE") == Some(1.0)
    })
    .await;
    sim.delete_stream(&arn);
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        stream_status(p, &arn, "NOT_FOUND") == Some(1.0)
    })
    .await;
    // The destination still says ACTIVE: only the cross-check shows it.
    assert_eq!(
        value(
            &page,
            "dynamodb_kinesis_destination_status",
            &[
                ("table", "orders"),
                ("region", "us-east-1"),
                ("account_id", ACCOUNT),
                ("stream_arn", &arn),
                ("status", "ACTIVE")
            ]
        ),
        Some(1.0)
    );
    assert_eq!(stream_status(&page, &arn, "ACTIVE"), Some(0.0));
    assert!(
        !page.contains("dynamodb_kinesis_stream_info{"),
        "a gone stream has no info"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn access_denied_on_the_stream_is_its_own_error_not_a_missing_stream() {
    let arn = stream("orders-cdc");
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {arn}\n        status: ACTIVE\n"
    ))
    .await;
    let exp = exporter(CONFIG, &sim).await;
    scrape_until(exp.addr, Duration::from_secs(10), |p| {
        stream_status(p, &arn, "ACTIVE") == Some(1.0)
    })
    .await;
    sim.set_stream_fault(&arn, Some(Fault::AccessDenied));
    let errors = [
        ("account_id", ACCOUNT),
        ("region", "us-east-1"),
        ("stream_arn", arn.as_str()),
        ("code", "AccessDeniedException"),
    ];
    let page = scrape_until(exp.addr, Duration::from_secs(10), |p| {
        value(p, "dynamodb_kinesis_stream_api_errors_total", &errors).is_some_and(|n| n >= 2.0)
    })
    .await;
    assert_eq!(
        stream_status(&page, &arn, "NOT_FOUND"),
        Some(0.0),
        "never read as gone"
    );
    assert_eq!(
        stream_status(&page, &arn, "ACTIVE"),
        Some(1.0),
        "last known status"
    );
    let poll = [
        ("account_id", ACCOUNT),
        ("region", "us-east-1"),
        ("stream_arn", arn.as_str()),
    ];
    assert_eq!(
        value(&page, "dynamodb_kinesis_stream_poll_success", &poll),
        Some(0.0)
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn replication_metrics_come_from_cloudwatch_and_no_datapoint_is_not_zero() {
    let scenario = format!(
        "tables:\n\
         \x20 - name: orders\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{{value: 1500}}]\n      FailedToReplicateRecordCount: [{{value: 0}}]\n      ThrottledPutRecordCount: [{{value: 4}}]\n      ConsumedChangeDataCaptureUnits: [{{value: 12}}]\n\
         \x20 - name: quiet\n    destinations:\n      - stream_arn: {}\n        status: ACTIVE\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{{value: none}}]\n      FailedToReplicateRecordCount: [{{value: none}}]\n",
        stream("orders-cdc"),
        stream("quiet-cdc"),
    );
    let sim = simulator(&scenario).await;
    let exp = exporter(
        "poll_interval: 1s\nmax_attempts: 1\nmax_requests_per_second: 100\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [orders, quiet]\n    cdc_metrics: {interval: 1s}\n",
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(15), |p| {
        cdc(p, LAG, "orders").is_some()
    })
    .await;
    assert_eq!(
        cdc(&page, LAG, "orders"),
        Some(1.5),
        "milliseconds become seconds"
    );
    assert_eq!(
        cdc(&page, FAILED, "orders"),
        Some(0.0),
        "a real zero is exported"
    );
    assert_eq!(
        cdc(
            &page,
            "dynamodb_kinesis_cdc_throttled_put_records",
            "orders"
        ),
        Some(4.0)
    );
    assert_eq!(
        cdc(&page, "dynamodb_kinesis_cdc_consumed_units", "orders"),
        Some(12.0)
    );
    // No datapoint: no series at all, not a zero.
    assert_eq!(cdc(&page, LAG, "quiet"), None);
    assert_eq!(cdc(&page, FAILED, "quiet"), None);
    let stamp = value(
        &page,
        "dynamodb_kinesis_cdc_datapoint_timestamp_seconds",
        &[
            ("table", "orders"),
            ("region", "us-east-1"),
            ("account_id", ACCOUNT),
            ("delegated_operation", "PutRecords"),
            ("metric", "AgeOfOldestUnreplicatedRecord"),
        ],
    )
    .expect("the datapoint's own timestamp");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        now - stamp < 20.0 * 60.0 && stamp <= now,
        "{stamp} vs {now}"
    );
    exp.stop().await;
    sim.shutdown().await;
}

#[tokio::test]
async fn twelve_hundred_tables_take_ten_get_metric_data_calls_and_budgets_hold() {
    let mut scenario = String::from("tables:\n");
    for i in 0..1200 {
        scenario.push_str(&format!(
            "  - name: t{i:04}\n    cdc_metrics:\n      started_ago: 30m\n      AgeOfOldestUnreplicatedRecord: [{{value: 5}}]\n      FailedToReplicateRecordCount: [{{value: 0}}]\n      ThrottledPutRecordCount: [{{value: 0}}]\n      ConsumedChangeDataCaptureUnits: [{{value: 1}}]\n"
        ));
    }
    let sim = simulator(&scenario).await;
    sim.set_list_metrics_page_size(500);
    let rate = 300;
    let exp = exporter(
        &format!("poll_interval: 1h\nconcurrency: 16\nmax_attempts: 1\nmax_requests_per_second: {rate}\ntargets:\n  - region: us-east-1\n    endpoint_url: {{endpoint}}\n    discovery:\n      refresh_interval: 1h\n    cdc_metrics: {{interval: 1h}}\n"),
        &sim,
    )
    .await;
    let page = scrape_until(exp.addr, Duration::from_secs(60), |p| {
        family(p, LAG).len() == 1200
    })
    .await;
    assert!(family(&page, LAG)
        .values()
        .all(|v| (*v - 0.005).abs() < 1e-12));
    assert_eq!(
        sim.operation_requests(Service::CloudWatch, "GetMetricData"),
        10,
        "⌈1200 tables × 4 metrics ÷ 500⌉"
    );
    assert_eq!(sim.metric_data_queries(), 4800);
    // Each service kept to its own budget: DynamoDB's (the listings of
    // discovery) and CloudWatch's (5 a second by default).
    let busiest = busiest_second(&sim, ACCOUNT, "us-east-1", Service::DynamoDb);
    assert!(
        busiest <= rate + 1,
        "{busiest} DynamoDB requests in one second"
    );
    let busiest = busiest_second(&sim, ACCOUNT, "us-east-1", Service::CloudWatch);
    assert!(
        busiest <= 6,
        "{busiest} CloudWatch requests in one second at 5"
    );
    exp.stop().await;
    sim.shutdown().await;
}
