//! Soak under table churn: discovery over TABLES tables, of which a tenth
//! are replaced by new ones before every refresh, for ROUNDS refreshes.
//! Prints the series count and RSS at the baseline (every table polled
//! once) and after the churn, to show both return to it: the series of
//! deleted tables go, and memory does not grow with the tables that came
//! and went.
//!
//!   cargo run --release --example soak -- [TABLES] [ROUNDS]
//!
//! Defaults: 2000 tables, 20 refreshes. Loopback only; each round is
//! bounded (30 s), the whole run by 15 minutes.

use std::time::{Duration, Instant};

use dke_simulator::{DestinationSpec, Scenario, Simulator, TableSpec};

mod common;

use common::{get, rss_kib, Running};

const ROUND_LIMIT: Duration = Duration::from_secs(30);
const LIMIT: Duration = Duration::from_secs(900);

fn table(name: &str) -> TableSpec {
    let arn = format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}");
    TableSpec::new(name).with_destination(DestinationSpec::fixed(&arn, "ACTIVE"))
}

/// Sample lines on the page, and how many of them are per-table series.
async fn series(addr: std::net::SocketAddr) -> (usize, usize) {
    let (status, body) = get(addr, "/metrics").await;
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body);
    let samples = text.lines().filter(|l| !l.starts_with('#')).count();
    let tables = text
        .lines()
        .filter(|l| l.starts_with("dynamodb_kinesis_table_poll_success{"))
        .count();
    (samples, tables)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let churn = tables / 10;
    let begun = Instant::now();

    let names: Vec<String> = (0..tables).map(|i| format!("t-{i:06}")).collect();
    let scenario = Scenario {
        tables: names.iter().map(|n| table(n)).collect(),
        ..Scenario::default()
    };
    let sim = Simulator::start(scenario).await.expect("simulator");
    let text = format!(
        "poll_interval: 2s\nrequest_timeout: 5s\nconcurrency: 32\nmax_attempts: 1\nmax_requests_per_second: 5000\n\
         targets:\n  - region: us-east-1\n    endpoint_url: {}\n    discovery:\n      refresh_interval: 1s\n",
        sim.endpoint_url()
    );
    let exporter = Running::start(&text, true).await;
    let store = std::sync::Arc::clone(&exporter.store);
    let addr = exporter.addr;

    // Baseline: every table polled once, then a few cycles to settle.
    let settled = |expected: usize| {
        let store = std::sync::Arc::clone(&store);
        async move {
            let deadline = Instant::now() + ROUND_LIMIT;
            loop {
                let (polled, total) = store.readiness();
                if total == expected && polled == total {
                    return;
                }
                assert!(Instant::now() < deadline, "{polled} of {total} polled");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    settled(tables).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    // The simulator shares this process and logs every request; clearing
    // its log each round keeps its memory flat, so RSS speaks for the
    // exporter.
    sim.reset_stats();
    let (base_samples, base_tables) = series(addr).await;
    let base_rss = rss_kib();

    let mut next = tables;
    let mut current = names;
    let mut peak_rss = base_rss;
    for round in 0..rounds {
        assert!(begun.elapsed() < LIMIT, "soak ran past {LIMIT:?}");
        // Replace the oldest tenth with new tables.
        for old in current.drain(..churn) {
            sim.remove_table(&old);
        }
        for _ in 0..churn {
            let name = format!("t-{next:06}");
            next += 1;
            sim.put_table(table(&name));
            current.push(name);
        }
        // Wait until discovery picked up the change and the new tables were polled.
        let newest = current.last().cloned().unwrap();
        let deadline = Instant::now() + ROUND_LIMIT;
        loop {
            let key = dynamodb_kinesis_exporter::state::TableKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                table: newest.as_str().into(),
            };
            let polled = store.state(&key).is_some_and(|s| s.last_poll_ok.is_some());
            let (_, total) = store.readiness();
            if polled && total == tables {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "round {round}: churn not picked up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        settled(tables).await;
        sim.reset_stats();
        peak_rss = peak_rss.max(rss_kib());
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (end_samples, end_tables) = series(addr).await;
    let end_rss = rss_kib();

    println!(
        "{tables} tables, {churn} replaced before each of {rounds} discovery refreshes ({} tables came and went)",
        churn * rounds
    );
    println!(
        "series: {base_samples} samples ({base_tables} tables) at the baseline, {end_samples} samples ({end_tables} tables) after the churn"
    );
    println!(
        "RSS: {base_rss} KiB at the baseline, {end_rss} KiB after the churn ({:+} KiB), peak {peak_rss} KiB",
        end_rss as i64 - base_rss as i64
    );
    println!("took {:.0} s", begun.elapsed().as_secs_f64());
    exporter.stop().await;
    sim.shutdown().await;
}
