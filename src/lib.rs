//! dynamodb-kinesis-exporter: a Prometheus exporter for the status of
//! DynamoDB's Kinesis streaming destinations.
//!
//! A scheduler polls `DescribeKinesisStreamingDestination` for every
//! configured table and folds each answer into a per-table state; a shared
//! snapshot of the page is rendered from those states and served on
//! `/metrics` to every scraper. Scrapes never call AWS.
//!
//! # Layout
//! One folder per layer, lowest first. A layer uses only the layers above
//! it in this list; each folder's `mod.rs` says what it owns.
//! 1. The `dke-web` crate (`web/` in the workspace): exporter-toolkit for
//!    Rust (web config, TLS, basic auth, content negotiation, the accept
//!    loop and its limits). It knows nothing of this crate or of AWS.
//! 2. [`config`]: the YAML config file: decoding, defaults, validation
//!    with file:line messages, table and role ARNs.
//! 3. [`aws`]: the seam around AWS: the API traits and their SDK
//!    implementations, budgeted calls with retries, error classes, the
//!    per-scope request [`aws::budget`].
//! 4. [`state`]: the domain (per-table, per-stream and per-scope state,
//!    folded from outcomes with the clock passed in) and the
//!    [`state::store`] that holds it.
//! 5. [`exposition`]: every metric family, the shared rendered page, and
//!    the status page on `/` (one row per table, problems first).
//! 6. [`poll`]: the background work in one model: a runner per scope whose
//!    queue holds table polls, tag reads, stream checks, discovery
//!    refreshes and CDC reads, and the fleet that decides what is polled
//!    where.
//! 7. [`exporter`]: the wiring of all of the above into a running exporter
//!    (routes, signals, and the binary's start-up: the runtime, shards,
//!    socket activation, `--demo`, `--once`).
//! 8. `main.rs`: flags, logging, signals, run.
// Denied, not forbidden, so that one function may allow it:
// `exporter::runtime::purge_freed_memory_at_once`, a mimalloc option that
// has no safe API.
#![deny(unsafe_code)]

pub mod aws;
pub mod config;
pub mod exporter;
pub mod exposition;
pub mod poll;
pub mod state;

pub use exporter::{Exporter, RunError, Settings};

/// The crate version, as reported by `--version` and `build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("DKE_BUILD_REVISION");
/// The rustc version that built the binary.
pub const RUSTC_VERSION: &str = env!("DKE_BUILD_RUSTC_VERSION");
