//! dynamodb-kinesis-exporter: a Prometheus exporter for the status of
//! DynamoDB's Kinesis streaming destinations.
//!
//! A scheduler polls `DescribeKinesisStreamingDestination` for every
//! configured table, folds each answer into a per-table state whose metric
//! text is rendered once per poll, and an HTTP server serves that text on
//! `/metrics`. Scrapes never call AWS.
//!
//! # Layout
//! - [`config`]: the YAML config file: decoding, defaults, validation with
//!   file:line messages, table ARN parsing.
//! - [`aws`]: the seam around AWS: the [`aws::DestinationSource`] trait, its
//!   aws-sdk-dynamodb implementation and the classification of SDK errors.
//! - [`scheduler`]: the poll loop: one task per table, jitter, the global
//!   concurrency semaphore, per-call timeouts.
//! - [`state`]: what the polls left: per-table state, status-change
//!   bookkeeping and the pre-rendered metric fragments.
//! - [`metrics`]: every metric family (name, help, type, labels) and the
//!   functions that turn table state into exposition text.
//! - [`http`]: the routes: `/metrics`, `/`, `/healthz`, `/readyz`.
//! - [`serve`]: the HTTP/1.1 accept loop with graceful drain, shared by the
//!   server and the simulator.
//! - [`shutdown`]: SIGINT/SIGTERM as one future, SIGHUP as reload requests,
//!   and the watch channel every task observes.
//! - [`exporter`]: wires config, AWS clients, scheduler and server together
//!   ([`Exporter::bind`], [`Exporter::serve`], [`run`]), and swaps in a
//!   reloaded config.
//! - [`simulator`]: an HTTP simulator of the DynamoDB control-plane API used
//!   by the tests and by `--demo`.
//! - [`demo`]: the `--demo` mode: the simulator with a shipped scenario.
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
pub mod demo;
pub mod exporter;
pub mod http;
pub mod metrics;
pub mod scheduler;
pub mod serve;
pub mod shutdown;
pub mod simulator;
pub mod state;

pub use exporter::{run, Exporter, RunError, Settings};

/// The crate version, as reported by `--version` and `build_info`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// The git revision the binary was built from, or `unknown`.
pub const REVISION: &str = env!("DKE_BUILD_REVISION");
/// The rustc version that built the binary.
pub const RUSTC_VERSION: &str = env!("DKE_BUILD_RUSTC_VERSION");
