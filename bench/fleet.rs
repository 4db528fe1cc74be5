//! Fleet benchmark: tables across 2 accounts × 2 regions (one through an
//! assumed role), every request answered by the simulator after a fixed
//! latency, polled by the exporter in process under per-scope budgets (one
//! per service). Prints, per scope: the first full cycle against the ideal
//! the DynamoDB budget sets (tables ÷ rate), the highest request count the
//! simulator saw in any one-second window for each service against its
//! budget, and the process's RSS.
//!
//!   cargo run --release --example fleet -- [TABLES] [RATE] [LATENCY_MS] [KINESIS_RATE]
//!
//! Defaults: 10000 tables (2,500 per scope), 100 DynamoDB requests/s per
//! scope, 20 ms, 5 Kinesis requests/s per scope (the config's default).
//! The poll interval is set short (10 s), so the budget, not the interval,
//! sets the pace. Loopback only; gives up after 15 minutes.

use std::collections::HashMap;
use std::time::Duration;

use dke_simulator::{Scenario, ScopeSpec, Service, Simulator, TableSpec};
use tokio::time::Instant;

mod common;

use common::{rss_kib, Running};

const LIMIT: Duration = Duration::from_secs(900);
const HUB: &str = "123456789012";
const MEMBER: &str = "222222222222";
const REGIONS: [&str; 2] = ["us-east-1", "eu-west-1"];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(100.0);
    let latency_ms: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let kinesis_rate: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(5.0);
    let per_scope = tables / 4;
    let latency = Duration::from_millis(latency_ms);

    let scope_tables = |account: &str, region: &str| -> Vec<TableSpec> {
        (0..per_scope)
            .map(|i| {
                let name = format!("table-{i:05}");
                let arn = format!("arn:aws:kinesis:{region}:{account}:stream/{name}");
                TableSpec::new(&name)
                    .with_latency(latency)
                    .with_destination(dke_simulator::DestinationSpec::fixed(&arn, "ACTIVE"))
            })
            .collect()
    };
    let mut scenario = Scenario {
        tables: scope_tables(HUB, REGIONS[0]),
        ..Scenario::default()
    };
    for (account, region) in [
        (HUB, REGIONS[1]),
        (MEMBER, REGIONS[0]),
        (MEMBER, REGIONS[1]),
    ] {
        scenario.scopes.push(ScopeSpec {
            account_id: account.to_string(),
            region: region.to_string(),
            tables: scope_tables(account, region),
            streams: Vec::new(),
        });
    }
    let sim = Simulator::start(scenario).await.expect("simulator");
    let rss_simulator_only = rss_kib();

    let text = format!(
        "poll_interval: 10s\nrequest_timeout: 10s\nconcurrency: 16\nmax_attempts: 1\nmax_requests_per_second: {rate}\nkinesis_max_requests_per_second: {kinesis_rate}\n\
         targets:\n  - regions: [us-east-1, eu-west-1]\n    endpoint_url: {url}\n    discovery:\n      refresh_interval: 1h\n\
         \x20 - regions: [us-east-1, eu-west-1]\n    endpoint_url: {url}\n    role_arn: arn:aws:iam::{MEMBER}:role/dynamodb-kinesis-exporter\n    discovery:\n      refresh_interval: 1h\n",
        url = sim.endpoint_url()
    );
    let exporter = Running::start(&text, false).await;
    let store = std::sync::Arc::clone(&exporter.store);

    let started = Instant::now();
    let mut peak_rss = 0;
    loop {
        peak_rss = peak_rss.max(rss_kib());
        let (polled, total) = store.readiness();
        if total == tables && polled >= total {
            break;
        }
        assert!(
            started.elapsed() < LIMIT,
            "the first cycle did not finish within {LIMIT:?} ({polled} of {total})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let whole = started.elapsed();
    // Let the second cycle run a while under the budget too.
    tokio::time::sleep(Duration::from_secs(10)).await;
    peak_rss = peak_rss.max(rss_kib());

    let records = sim.requests();
    println!(
        "{tables} tables in 4 scopes (2 accounts x 2 regions, one through AssumeRole), {latency_ms} ms per request, budgets per scope: DynamoDB {rate} req/s, Kinesis {kinesis_rate} req/s; concurrency 16"
    );
    println!("all scopes' first cycle: {:.1} s", whole.as_secs_f64());
    for account in [HUB, MEMBER] {
        for region in REGIONS {
            let polls: Vec<Instant> = records
                .iter()
                .filter(|r| {
                    r.account_id == account
                        && r.region == region
                        && r.service == Service::DynamoDb
                        && r.operation == "DescribeKinesisStreamingDestination"
                })
                .map(|r| r.at)
                .collect();
            let mut first: HashMap<Option<String>, Instant> = HashMap::new();
            for r in records.iter().filter(|r| {
                r.account_id == account
                    && r.region == region
                    && r.operation == "DescribeKinesisStreamingDestination"
            }) {
                first.entry(r.table.clone()).or_insert(r.at);
            }
            let begin = polls.iter().min().copied().unwrap_or(started);
            let end = first.values().max().copied().unwrap_or(begin);
            let cycle = end.duration_since(begin).as_secs_f64();
            let ideal = per_scope as f64 / rate;
            let busiest = |service: Service| {
                let mut times: Vec<Instant> = records
                    .iter()
                    .filter(|r| {
                        r.account_id == account && r.region == region && r.service == service
                    })
                    .map(|r| r.at)
                    .collect();
                times.sort();
                (0..times.len())
                    .map(|i| {
                        let end = times[i] + Duration::from_secs(1);
                        times[i..].iter().take_while(|t| **t < end).count()
                    })
                    .max()
                    .unwrap_or(0)
            };
            let all = sim.requests_in(account, region);
            println!(
                "  {account} {region}: first cycle {cycle:.1} s, ideal {ideal:.1} s ({:.2}x); busiest second: DynamoDB {} requests (budget {rate}), Kinesis {} (budget {kinesis_rate}); {all} requests in all",
                cycle / ideal,
                busiest(Service::DynamoDb),
                busiest(Service::Kinesis),
            );
        }
    }
    let by_op = sim.operation_counts();
    let calls: Vec<String> = by_op
        .iter()
        .map(|((service, op), n)| format!("{service:?} {op}: {n}"))
        .collect();
    println!("calls by operation: {}", calls.join(", "));
    println!(
        "RSS: {rss_simulator_only} KiB with the simulator only, peak {peak_rss} KiB with the exporter (difference {} KiB)",
        peak_rss.saturating_sub(rss_simulator_only)
    );
    exporter.stop().await;
    sim.shutdown().await;
}
