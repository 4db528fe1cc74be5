//! dynamodb-kinesis-exporter: a Prometheus exporter for the status of
//! DynamoDB's Kinesis streaming destinations.
//!
//! A scheduler polls `DescribeKinesisStreamingDestination` for every
//! configured table and folds each answer into a per-table state; a shared
//! snapshot of the page is rendered from those states at most once a
//! second, and only after a change, and an HTTP server serves it on
//! `/metrics` to every scraper. Scrapes never call AWS.
//!
//! # Layout
//! Layers, lowest first. A module uses only modules listed above it (the
//! utilities `serve` and `shutdown` use none of the others).
//! 1. [`config`]: the YAML config file: decoding, defaults, validation with
//!    file:line messages, table ARN parsing.
//!    [`tls`]: a web config's `tls_server_config` section and the rustls
//!    settings made from it; [`web_config`]: the exporter-toolkit web
//!    config file (TLS, basic auth, headers), its checks and reloads.
//! 2. [`aws`]: the seam around AWS: the [`aws::DestinationSource`] trait, its
//!    aws-sdk-dynamodb implementation and the classification of SDK errors.
//! 3. [`state`]: the domain: per-table state and status-change bookkeeping,
//!    folded from poll outcomes with the clock passed in.
//! 4. [`metrics`]: every metric family (name, help, type, labels) and the
//!    functions that turn table state into exposition text; the process-wide
//!    registry. [`openmetrics`]: the OpenMetrics headers of those families.
//! 5. [`store`]: the state store: each table's state, readiness and a
//!    generation counter. [`page`]: the one snapshot
//!    of the whole page (and its gzip form) that every scraper shares.
//! 6. [`scheduler`]: the poll loop: one task per table, jitter, the
//!    concurrency semaphore, per-call timeouts.
//!    [`http`]: the routes: `/metrics`, `/`, `/healthz`, `/readyz`, with
//!    [`negotiate`] choosing format and encoding, over [`serve`], the
//!    HTTP/1.1 accept loop with its graceful drain.
//! 7. [`exporter`]: wires config, AWS clients, scheduler and server together
//!    ([`Exporter::bind`], [`Exporter::serve`]) and swaps in a reloaded
//!    config. [`demo`] (feature `demo`, on by default) sets up `--demo`: the
//!    `dke-simulator` crate playing a shipped scenario.
//! 8. `main.rs`: flags, logging, and [`shutdown`]'s signals.
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
#[cfg(feature = "demo")]
pub mod demo;
pub mod exporter;
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
