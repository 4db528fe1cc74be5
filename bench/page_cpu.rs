//! CPU per gzip scrape of a page that keeps changing, in process, with no
//! polling beside it to blur the figure (bench/live_page.sh measures the
//! same over HTTP against a live exporter, where the polls' own CPU makes
//! the difference noisy). Side by side in one run:
//!
//! - the exporter's page: a store of TABLES tables, each with an ACTIVE
//!   destination to its own checked stream; before each scrape, what
//!   INTERVAL seconds of polls change at a 60 s poll interval (a tenth of
//!   the tables' success times when INTERVAL is 6 s, and the stream checks
//!   the default Kinesis budget of 5 a second allows), then one gzip scrape
//!   of the page;
//! - a whole-page gzip of the same text each time (flate2 with zlib-rs),
//!   what an exporter with no cache does per scrape, at zlib-rs's levels 1
//!   and 2. zlib-rs (as zlib-ng) gives level 1 its own quick strategy,
//!   several times faster than classic zlib's level 1 for a larger output;
//!   its level 2 is the algorithm and settings of classic zlib's level 1,
//!   what nginx runs for `gzip_comp_level 1`. bench/live_page.sh compares
//!   with nginx itself.
//!
//! Prints the CPU per scrape of each (the process's own CPU clock, over all
//! rounds; nothing else runs meanwhile), their
//! ratio, the exporter's p50/p99 scrape time and both compressed sizes.
//!
//!   cargo run --release --example page_cpu -- [TABLES] [ROUNDS] [INTERVAL]
//!
//! Defaults: 10,000 tables, 20 rounds, 3 s. A page form is rebuilt at most
//! once a second, so each round waits 1.1 s (idle) before its scrape. No
//! network; bounded by the rounds.

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dynamodb_kinesis_exporter::aws::{Destination, StreamSummary};
use dynamodb_kinesis_exporter::exposition::metrics::Telemetry;
use dynamodb_kinesis_exporter::exposition::page::{Format, Page};
use dynamodb_kinesis_exporter::state::store::Store;
use dynamodb_kinesis_exporter::state::{Service, StreamKey, TableKey};

// The binary's allocator, so the copies and frees cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// This process's CPU time so far (all threads, user and system), in
/// milliseconds, to the nanosecond.
fn cpu_ms() -> f64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    t.tv_sec as f64 * 1000.0 + t.tv_nsec as f64 / 1e6
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    let at = ((p / 100.0) * (values.len() - 1) as f64).round() as usize;
    values[at.min(values.len() - 1)]
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let tables: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(20);
    let interval: f64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3.0);

    let key = |i: usize| TableKey {
        account_id: "123456789012".into(),
        region: "us-east-1".into(),
        table: format!("table-{i:05}").into(),
    };
    let arn = |i: usize| format!("arn:aws:kinesis:us-east-1:123456789012:stream/table-{i:05}");
    let store = Arc::new(Store::new((0..tables).map(key)));
    let scope = key(0).scope();
    store.update_scope(&scope, |s| {
        s.tables = tables;
        s.poll_interval = 60.0;
    });
    let poll = |i: usize, now: f64| {
        let destination = Destination {
            stream_arn: arn(i),
            status: "ACTIVE".into(),
            status_description: None,
            precision: Some("MILLISECOND".into()),
        };
        store.record(&key(i), &Ok(vec![destination]), now);
        store.count_request(
            &scope,
            Service::DynamoDb,
            "DescribeKinesisStreamingDestination",
        );
    };
    let check = |i: usize, now: f64| {
        let stream = StreamKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            stream_arn: arn(i).into(),
        };
        let summary = StreamSummary {
            name: format!("table-{i:05}"),
            status: "ACTIVE".into(),
            open_shards: 2,
            mode: "ON_DEMAND".into(),
            encryption: "NONE".into(),
            retention_hours: 24,
        };
        store.record_stream(&stream, &Ok(summary), now);
        store.count_request(&scope, Service::Kinesis, "DescribeStreamSummary");
    };
    let mut now = 1_000_000.0;
    // The tables polled before each scrape: in key order, as in the first
    // cycles (new tables are spread in order), or at random, as after some
    // hours of polls whose intervals are each jittered by up to 10 %
    // (ORDER=key or random; random by default).
    let in_order = std::env::var("ORDER").is_ok_and(|o| o == "key");
    for i in 0..tables {
        poll(i, now);
        check(i, now);
    }
    let telemetry = Arc::new(Telemetry::new(false));
    let page = Page::new(Arc::clone(&store), Arc::clone(&telemetry));
    // The first scrape compresses the whole page: not what is measured.
    let first = page.gzip(Format::Text).await;
    let plain: Vec<u8> = page.plain(Format::Text).await.concat();
    println!(
        "{tables} tables: page {} bytes plain, {} gzip; {rounds} rounds, {interval} s of polls (in {} order) before each scrape",
        plain.len(),
        first.iter().map(|c| c.len()).sum::<usize>(),
        if in_order { "key" } else { "random" },
    );

    // What `interval` seconds of polls change: each table polled once a
    // minute, streams checked at 5 a second.
    let polled = ((tables as f64 * interval / 60.0).round() as usize).max(1);
    let checked = ((5.0 * interval).round() as usize).max(1);
    let pick = |next: &mut usize| {
        let i = if in_order {
            *next % tables
        } else {
            fastrand::usize(..tables)
        };
        *next += 1;
        i
    };
    let (mut next_table, mut next_stream) = (0, 0);
    let mut page_cpu = 0.0;
    let (builds_before, build_cpu_before) = telemetry.page_builds("gzip");
    let mut times = Vec::with_capacity(rounds);
    let mut gzip_bytes = 0;
    for _ in 0..rounds {
        now += interval;
        for _ in 0..polled {
            poll(pick(&mut next_table), now);
        }
        for _ in 0..checked {
            check(pick(&mut next_stream), now);
        }
        tokio::time::sleep(Duration::from_millis(1_100)).await;
        let cpu = cpu_ms();
        let started = Instant::now();
        let body = page.gzip(Format::Text).await;
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        page_cpu += cpu_ms() - cpu;
        gzip_bytes = body.iter().map(|c| c.len()).sum();
    }

    let (builds, build_cpu) = telemetry.page_builds("gzip");
    let per_build =
        (build_cpu - build_cpu_before) * 1000.0 / (builds - builds_before).max(1) as f64;

    // The same text compressed whole each time, at each level.
    let text = page.plain(Format::Text).await.concat();
    let whole = |level: u32| {
        let mut cpu_total = 0.0;
        let mut bytes = 0;
        for _ in 0..rounds {
            let cpu = cpu_ms();
            let mut encoder = flate2::write::GzEncoder::new(
                Vec::with_capacity(2 << 20),
                flate2::Compression::new(level),
            );
            encoder.write_all(&text).unwrap();
            bytes = encoder.finish().unwrap().len();
            cpu_total += cpu_ms() - cpu;
        }
        (cpu_total / rounds as f64, bytes)
    };
    let (quick, quick_bytes) = whole(1);
    let (classic, classic_bytes) = whole(2);

    let per_scrape = page_cpu / rounds as f64;
    println!(
        "exporter page, gzip scrape:      {per_scrape:>6.1} ms CPU per scrape, p50 {:.1} ms, p99 {:.1} ms, {gzip_bytes} bytes",
        percentile(&mut times, 50.0),
        percentile(&mut times, 99.0),
    );
    println!(
        "  of which the rebuild, as the page counts it ({} rebuilds): {per_build:.1} ms",
        builds - builds_before
    );
    println!(
        "whole page, classic level 1 (2): {classic:>6.1} ms CPU per scrape, {classic_bytes} bytes; the exporter's is {:.2}x",
        per_scrape / classic
    );
    println!(
        "whole page, quick level 1:       {quick:>6.1} ms CPU per scrape, {quick_bytes} bytes; the exporter's is {:.2}x",
        per_scrape / quick
    );
}
