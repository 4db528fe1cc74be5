//! dynamodb-kinesis-exporter: a Prometheus exporter for the status of
//! DynamoDB's Kinesis streaming destinations.
//!
//! A scheduler polls `DescribeKinesisStreamingDestination` for every
//! configured table and folds each answer into a per-table state; a shared
//! snapshot of the page is rendered from those states at most once a
//! second, and only after a change (or when nobody scraped for a while:
//! the page is not kept between scrapes), and an HTTP server serves it on
//! `/metrics` to every scraper. Scrapes never call AWS.
//!
//! # Layout
//! Layers, lowest first. A module uses only modules listed above it (the
//! utilities `serve` and `shutdown` use none of the others).
//! 1. [`config`]: the YAML config file: decoding, defaults, validation with
//!    file:line messages, table and role ARN parsing. [`tls`]: a web
//!    config's `tls_server_config` section and the rustls settings made from
//!    it; [`web_config`]: the exporter-toolkit web config file (TLS, basic
//!    auth, headers), its checks and reloads.
//! 2. [`budget`]: one (account, region) scope's request budget: an adaptive
//!    token bucket and a concurrency bound.
//! 3. [`aws`]: the seam around AWS: the [`aws::DynamoDbApi`],
//!    [`aws::KinesisApi`] and [`aws::CloudWatchApi`] traits and their SDK
//!    implementations, budgeted calls with retries, assumed roles, STS
//!    account lookups and the classification of SDK errors.
//! 4. [`state`]: the domain: per-table, per-stream and per-scope state,
//!    status-change bookkeeping, shards; folded from outcomes with the clock
//!    passed in.
//! 5. [`metrics`]: every metric family (name, help, type, labels) and the
//!    functions that turn state into exposition text; the process-wide
//!    registry. [`openmetrics`]: the OpenMetrics headers of those families.
//! 6. [`store`]: the state store: each table's, stream's and scope's state,
//!    readiness and a generation counter. [`page`]: the one snapshot of the
//!    whole page (and its gzip form) that every scraper shares.
//! 7. [`scheduler`]: one scope's poll loop: the schedule, spreading, jitter,
//!    concurrency, and the stream cross-check. [`discovery`]: finding tables
//!    by name and tag. [`cdc`]: replication metrics from CloudWatch.
//!    [`http`]: the routes: `/metrics`, `/`, `/healthz`, `/readyz`, with
//!    [`negotiate`] choosing format and encoding, over [`serve`], the
//!    HTTP/1.1 accept loop with its graceful drain and client limits.
//! 8. [`fleet`]: which tables are polled, by which client, in which scope:
//!    accounts, discovery refreshes, sharding, reloads.
//! 9. [`exporter`]: wires config, store, fleet, page and server together
//!    ([`Exporter::bind`], [`Exporter::serve`]). [`demo`] (feature `demo`,
//!    on by default) sets up `--demo`: the `dke-simulator` crate playing a
//!    shipped scenario.
//! 10. `main.rs`: flags, logging, and [`shutdown`]'s signals.
#![forbid(unsafe_code)]

pub mod aws;
pub mod budget;
pub mod cdc;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod discovery;
pub mod exporter;
pub mod fleet;
pub mod http;
pub mod metrics;
pub mod negotiate;
pub mod openmetrics;
pub mod page;
pub mod scheduler;
pub mod serve;
pub mod shutdown;
pub mod state;
pub mod store;
pub mod tls;
pub mod web_config;

pub use exporter::{Exporter, RunError, Settings};

/// The crate version, as reported by `--version` and `build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("DKE_BUILD_REVISION");
/// The rustc version that built the binary.
pub const RUSTC_VERSION: &str = env!("DKE_BUILD_RUSTC_VERSION");
