//! Status page benchmark: a store of N tables (two destinations each, their
//! streams checked, every 10th table failing or expected and switched off),
//! then the page on `/` built from it, side by side with a bare visit of the
//! same store (the floor: taking the locks and touching every entry).
//! Prints, per N, the median time of: the bare visit, collecting and
//! sorting the rows, the first page and the last page (collect included,
//! as a request does it), and the first page's size.
//!
//!   cargo run --release --example status_page -- [ROUNDS] [TABLES...]
//!
//! Defaults: 7 rounds; 1,000, 10,000 and 50,000 tables. No network; bounded
//! by the rounds.

use std::time::{Duration, Instant};

use dynamodb_kinesis_exporter::aws::{Destination, PollError, StreamSummary};
use dynamodb_kinesis_exporter::exposition::status::{self, Answer, Header};
use dynamodb_kinesis_exporter::state::store::Store;
use dynamodb_kinesis_exporter::state::{StreamKey, TableKey};

// The binary's allocator, so the copies and frees cost what they cost there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const NOW: f64 = 1_000_000.0;

fn fill(tables: usize) -> Store {
    let key = |i: usize| TableKey {
        account_id: ["111111111111", "222222222222"][i % 2].into(),
        region: ["us-east-1", "eu-west-1"][i / 2 % 2].into(),
        table: format!("table-{i:06}").into(),
    };
    let store = Store::new((0..tables).map(key));
    for i in 0..tables {
        let k = key(i);
        store.update_scope(&k.scope(), |s| s.poll_interval = 60.0);
        let arn = |s: &str| {
            format!(
                "arn:aws:kinesis:{}:{}:stream/table-{i:06}-{s}",
                k.region, k.account_id
            )
        };
        let cdc = if i % 10 == 3 { "DISABLED" } else { "ACTIVE" };
        let destinations = vec![
            Destination {
                stream_arn: arn("cdc"),
                status: cdc.into(),
                status_description: None,
                precision: Some("MILLISECOND".into()),
            },
            Destination {
                stream_arn: arn("audit"),
                status: "ENABLE_FAILED".into(),
                status_description: Some(
                    "The KMS key used to encrypt the stream is disabled.".into(),
                ),
                precision: None,
            },
        ];
        store.record(&k, &Ok(destinations), NOW - 30.0);
        if i % 10 == 3 {
            store.set_expectation(&k, Some(true), None);
        }
        if i % 10 == 7 {
            let err = PollError::Service {
                code: "ThrottlingException".into(),
                message: "slow down".into(),
            };
            store.record(&k, &Err(err), NOW - 5.0);
        }
        let stream = StreamKey {
            account_id: k.account_id.clone(),
            region: k.region.clone(),
            stream_arn: arn("cdc").into(),
        };
        let summary = StreamSummary {
            name: format!("table-{i:06}-cdc"),
            status: "ACTIVE".into(),
            open_shards: 2,
            mode: "ON_DEMAND".into(),
            encryption: "KMS".into(),
            retention_hours: 24,
        };
        store.record_stream(&stream, &Ok(summary), NOW - 20.0);
    }
    store
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time<T>(rounds: usize, mut f: impl FnMut() -> T) -> (Duration, T) {
    let mut samples = Vec::with_capacity(rounds);
    let mut last = None;
    for _ in 0..rounds {
        let start = Instant::now();
        last = Some(f());
        samples.push(start.elapsed());
    }
    (median(samples), last.expect("at least one round"))
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = (args.next().and_then(|a| a.parse().ok()))
        .unwrap_or(7)
        .max(1);
    let mut sizes: Vec<usize> = args.filter_map(|a| a.parse().ok()).collect();
    if sizes.is_empty() {
        sizes = vec![1_000, 10_000, 50_000];
    }
    let header = Header {
        telemetry_path: "/metrics",
    };
    println!("rounds per figure: {rounds} (median)");
    println!(
        "{:>8} {:>12} {:>12} {:>12} {:>12} {:>10} {:>6}",
        "tables", "bare visit", "collect", "first page", "last page", "page KiB", "pages"
    );
    for tables in sizes {
        let store = fill(tables);
        let (visit, _) = time(rounds, || {
            let mut n = 0usize;
            store.visit(|state| n += state.destinations.len());
            n
        });
        let (collect, rows) = time(rounds, || status::collect(&store, NOW));
        let pages = rows.rows.len().div_ceil(status::ROWS_PER_PAGE).max(1);
        let (first, page) = time(rounds, || status::answer(&store, None, &header, NOW));
        let last_query = format!("page={pages}");
        let (last, _) = time(rounds, || {
            status::answer(&store, Some(&last_query), &header, NOW)
        });
        let bytes = match page {
            Answer::Page(html) => html.len(),
            Answer::Refused(err, _) => panic!("page 1 refused: {err}"),
        };
        println!(
            "{tables:>8} {:>12} {:>12} {:>12} {:>12} {:>10.1} {pages:>6}",
            ms(visit),
            ms(collect),
            ms(first),
            ms(last),
            bytes as f64 / 1024.0,
        );
    }
}
