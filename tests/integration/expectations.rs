//! Experiment: paused time with the exporter and the simulator in process.

use std::time::Duration;

use crate::support::*;

#[tokio::test(start_paused = true)]
async fn paused_time_experiment() {
    let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/orders-cdc";
    let sim = simulator(&format!(
        "tables:\n  - name: orders\n    destinations:\n      - stream_arn: {arn}\n        status: ACTIVE\n"
    ))
    .await;
    let exp = exporter(
        "poll_interval: 60s\nmax_attempts: 1\ntargets:\n  - region: us-east-1\n    endpoint_url: {endpoint}\n    tables: [orders]\n",
        &sim,
    )
    .await;
    let started = tokio::time::Instant::now();
    scrape_until(exp.addr, Duration::from_secs(120), |p| {
        p.contains("status=\"ACTIVE\"} 1")
    })
    .await;
    eprintln!("first poll seen after {:?} (paused clock)", started.elapsed());
    let real = std::time::Instant::now();
    sim.set_destinations(
        "orders",
        vec![dke_simulator::DestinationSpec::fixed(arn, "DISABLED")],
    );
    let page = scrape_until(exp.addr, Duration::from_secs(120), |p| {
        p.contains("status=\"DISABLED\"} 1")
    })
    .await;
    eprintln!(
        "DISABLED seen after {:?} paused, {:?} real; requests {}",
        started.elapsed(),
        real.elapsed(),
        sim.requests_for("orders")
    );
    for line in page.lines().filter(|l| l.starts_with("dynamodb_kinesis_api_errors_total") || l.starts_with("dynamodb_kinesis_table_poll_success")) { eprintln!("{line}"); }
    assert!(page.contains("orders"));
    exp.stop().await;
    sim.shutdown().await;
}
