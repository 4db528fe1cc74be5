//! The DynamoDB simulator for benchmarks that run the exporter binary as its
//! own process: N tables with one ACTIVE destination each, on loopback.
//! Writes an exporter config polling every table to CONFIG and serves until
//! killed, or for at most LIMIT seconds.
//!
//!   cargo run --release --example simulate -- TABLES CONFIG [LIMIT]
//!
//! Defaults: LIMIT 1800 s. The config allows 1,000 requests a second (the
//! simulator is not AWS): at the default 10 a first round of 10,000 tables,
//! spread at half the rate, would take over half an hour.

use std::time::Duration;

use dke_simulator::{DestinationSpec, Scenario, Simulator, TableSpec};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args
        .next()
        .and_then(|a| a.parse().ok())
        .expect("usage: simulate TABLES CONFIG [LIMIT]");
    let config = args.next().expect("usage: simulate TABLES CONFIG [LIMIT]");
    let limit: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(1800);

    let mut scenario = Scenario::default();
    let names: Vec<String> = (0..tables).map(|i| format!("table-{i:05}")).collect();
    for name in &names {
        let arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}-cdc");
        scenario.tables.push(TableSpec::new(name).with_destination(
            DestinationSpec::fixed(&arn, "ACTIVE").with_precision("MILLISECOND"),
        ));
    }
    let sim = Simulator::start(scenario).await.expect("simulator");
    let list: String = names.iter().map(|n| format!("      - {n}\n")).collect();
    std::fs::write(
        &config,
        format!(
            "poll_interval: 60s\nrequest_timeout: 10s\nconcurrency: 32\nmax_attempts: 1\nmax_requests_per_second: 1000\ntargets:\n  - region: us-east-1\n    endpoint_url: {}\n    tables:\n{list}",
            sim.endpoint_url()
        ),
    )
    .expect("write the exporter config");
    println!("{}", sim.endpoint_url());
    tokio::time::sleep(Duration::from_secs(limit)).await;
    sim.shutdown().await;
}
