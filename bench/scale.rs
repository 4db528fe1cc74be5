//! Scale benchmark: N tables with two destinations each, polled through the
//! real SDK client from the simulator on loopback, then scraped repeatedly.
//! Prints the time of the first full poll round, scrape latency, page size
//! and the process's resident memory (simulator included, and the figure
//! before the exporter started for comparison).
//!
//!   cargo run --release --example scale -- [TABLES] [SCRAPES]
//!
//! Defaults: 2000 tables, 50 scrapes. Loopback only, bounded in count and
//! time (gives up after 10 minutes).

use std::time::{Duration, Instant};

use dke_simulator::{DestinationSpec, Scenario, Simulator, TableSpec};

mod common;

use common::{get, rss_kib, Running};

const LIMIT: Duration = Duration::from_secs(600);

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let scrapes: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(50);

    let mut scenario = Scenario::default();
    let names: Vec<String> = (0..tables).map(|i| format!("table-{i:05}")).collect();
    for name in &names {
        let arn = |s: &str| format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}-{s}");
        scenario.tables.push(
            TableSpec::new(name)
                .with_destination(
                    DestinationSpec::fixed(&arn("cdc"), "ACTIVE").with_precision("MILLISECOND"),
                )
                .with_destination(
                    DestinationSpec::fixed(&arn("audit"), "ENABLE_FAILED")
                        .with_description("KMS key is disabled"),
                ),
        );
    }
    let sim = Simulator::start(scenario).await.expect("simulator");
    let rss_simulator_only = rss_kib();

    // Every table once (an hour's interval), as fast as the simulator
    // allows: the request budget is set far above what it can serve.
    let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
    let text = format!(
        "poll_interval: 1h\nrequest_timeout: 10s\nconcurrency: 32\nmax_attempts: 1\nmax_requests_per_second: 10000\n\
         targets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables:\n{list}",
        sim.endpoint_url()
    );
    let exporter = Running::start(&text, true).await;
    let store = std::sync::Arc::clone(&exporter.store);
    let addr = exporter.addr;

    let started = Instant::now();
    while store.readiness().0 < tables {
        assert!(
            started.elapsed() < LIMIT,
            "first poll round did not finish in {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let first_round = started.elapsed();

    let mut latencies = Vec::with_capacity(scrapes);
    let mut size = 0;
    for _ in 0..scrapes {
        let t = Instant::now();
        let (status, body) = get(addr, "/metrics").await;
        latencies.push(t.elapsed());
        assert_eq!(status, 200);
        size = body.len();
    }
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p).round() as usize];

    println!("tables: {tables} (2 destinations each), concurrency 32, SDK client on loopback");
    println!(
        "first poll round: {:.2} s ({:.0} polls/s)",
        first_round.as_secs_f64(),
        tables as f64 / first_round.as_secs_f64()
    );
    println!("scrape page: {size} bytes");
    println!(
        "scrape latency over {scrapes} scrapes: p50 {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        pct(0.5).as_secs_f64() * 1e3,
        pct(0.9).as_secs_f64() * 1e3,
        latencies.last().unwrap().as_secs_f64() * 1e3
    );
    println!(
        "RSS: {} KiB with simulator only, {} KiB with exporter after the scrapes (difference {} KiB)",
        rss_simulator_only,
        rss_kib(),
        rss_kib().saturating_sub(rss_simulator_only)
    );

    exporter.stop().await;
    sim.shutdown().await;
}
