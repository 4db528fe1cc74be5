//! The integration tests, linked into one binary so the AWS SDK and the
//! simulator are linked once. Each module is one area:
//! - `exporter`: the library's serve path end to end, in process, with the
//!   real SDK client against the simulator;
//! - `cdc`: the stream cross-check and the CloudWatch replication metrics;
//! - `cli`: the built binary as an operator runs it;
//! - `config_edges`: configs at the edges of every range run without a panic;
//! - `deploy_bundle`: the alert rules, dashboard and manifests under `deploy/`;
//! - `serving`: TLS, basic auth, the web config and hostile clients;
//! - `e2e_alerting`: the binary, a real Prometheus and a real Alertmanager;
//! - `expectations`: tables that must stream, switched off and on by an
//!   operator, never enabled, expected by a tag, on a wrong stream;
//! - `fleet`: accounts, regions, discovery, budgets and shards against the
//!   simulator;
//! - `moto`: discovery and assumed roles against moto's server;
//! - `support`: the one set of helpers they share.

/// Print to the real stderr: libtest captures `eprintln!` of passing tests,
/// and a skipped check must be seen.
macro_rules! loud {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod cdc;
mod cli;
mod config_edges;
mod deploy_bundle;
mod e2e_alerting;
mod expectations;
mod exporter;
mod fleet;
mod moto;
mod serving;
mod support;
