//! API calls per cycle: TABLES tables in one scope, each with an ACTIVE
//! destination on its own stream and CloudWatch CDC metrics, discovered
//! and polled with the stream cross-check and `cdc_metrics` on. After the
//! first full cycle the simulator's counters are reset, and every call of
//! the next CYCLE seconds (one poll interval, one CDC interval) is counted
//! by service and operation, over three cycles, averaged: as the simulator
//! saw them, and as the exporter's own counters
//! (`dynamodb_kinesis_aws_requests_total`,
//! `dynamodb_kinesis_cloudwatch_metrics_requested_total`) say.
//!
//!   cargo run --release --example calls -- [TABLES] [CYCLE_SECONDS]
//!
//! Defaults: 1000 tables, a 30 s cycle. Loopback only; bounded (5 min).

use std::time::Duration;

use dke_simulator::{CdcMetricsSpec, DestinationSpec, MetricStep, Scenario, Simulator, TableSpec};
use std::collections::BTreeMap;

use dynamodb_kinesis_exporter::state::store::Store;
use tokio::time::Instant;

mod common;

use common::Running;

const LIMIT: Duration = Duration::from_secs(300);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let cycle: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(30);

    let mut scenario = Scenario::default();
    for i in 0..tables {
        let name = format!("table-{i:05}");
        let stream = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}");
        let mut metrics = CdcMetricsSpec::new().started_ago(Duration::from_secs(1800));
        for metric in dke_simulator::CDC_METRIC_NAMES {
            metrics = metrics.with_series(metric, vec![MetricStep::hold(1.0)]);
        }
        scenario.tables.push(
            TableSpec::new(&name)
                .with_destination(DestinationSpec::fixed(&stream, "ACTIVE"))
                .with_cdc_metrics(metrics),
        );
    }
    let sim = Simulator::start(scenario).await.expect("simulator");
    let text = format!(
        "poll_interval: {cycle}s\nrequest_timeout: 10s\nconcurrency: 16\nmax_attempts: 1\nmax_requests_per_second: 1000\nkinesis_max_requests_per_second: 1000\ncloudwatch_max_requests_per_second: 1000\n\
         targets:\n  - region: us-east-1\n    endpoint_url: {}\n    discovery:\n      refresh_interval: 1h\n    cdc_metrics: {{interval: {cycle}s}}\n",
        sim.endpoint_url()
    );
    let exporter = Running::start(&text, false).await;
    let store = std::sync::Arc::clone(&exporter.store);
    let started = Instant::now();
    // The first cycle: every table polled, every stream checked, CDC read.
    loop {
        let (polled, total) = store.readiness();
        let cdc_read =
            sim.operation_requests(dke_simulator::Service::CloudWatch, "GetMetricData") > 0;
        let streams =
            sim.operation_requests(dke_simulator::Service::Kinesis, "DescribeStreamSummary");
        if total == tables && polled == total && cdc_read && streams >= tables as u64 {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "no full first cycle ({polled} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "first cycle of {tables} tables: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Three cycles, averaged: each table's next poll moves by ±10 % jitter.
    const CYCLES: u64 = 3;
    let before = counted(&store);
    sim.reset_stats();
    tokio::time::sleep(Duration::from_secs(cycle * CYCLES)).await;
    let after = counted(&store);
    println!("calls per {cycle} s cycle (one poll and one CDC interval), averaged over {CYCLES} cycles, at the simulator (and as the exporter counted them):");
    for ((service, operation), count) in sim.operation_counts() {
        let label = format!("{service:?}").to_lowercase();
        let key = (label, operation.clone());
        let mine =
            after.0.get(&key).copied().unwrap_or(0) - before.0.get(&key).copied().unwrap_or(0);
        println!(
            "  {service:?} {operation}: {:.0} ({:.0})",
            count as f64 / CYCLES as f64,
            mine as f64 / CYCLES as f64
        );
    }
    println!(
        "  GetMetricData queries: {:.0} per cycle (at most 500 a call) ({:.0})",
        sim.metric_data_queries() as f64 / CYCLES as f64,
        (after.1 - before.1) as f64 / CYCLES as f64
    );
    exporter.stop().await;
    sim.shutdown().await;
}

/// The exporter's request counters, summed over its scopes: by (service,
/// operation), and the CloudWatch metrics requested.
fn counted(store: &Store) -> (BTreeMap<(String, String), u64>, u64) {
    let mut requests = BTreeMap::new();
    let mut metrics = 0;
    store.visit_scopes(|scope| {
        for (service, operations) in &scope.requests {
            for (operation, n) in operations {
                *requests
                    .entry((service.as_str().to_string(), operation.clone()))
                    .or_insert(0) += n;
            }
        }
        metrics += scope.metrics_requested;
    });
    (requests, metrics)
}
