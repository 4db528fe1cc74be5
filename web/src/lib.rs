//! exporter-toolkit for Rust: what a Prometheus exporter needs to serve its
//! page safely, with nothing about what the page says.
//!
//! - [`web_config`]: the exporter-toolkit web config file
//!   (`--web.config.file`: TLS, basic auth, response headers, a rate
//!   limit), checked with every problem reported at once, and
//!   [`WebState`](web_config::WebState): the running version, which checks
//!   credentials and follows the file as it changes, failing closed.
//! - `tls` (private): its `tls_server_config` section as rustls server
//!   settings.
//! - [`gzip`]: one gzip member out of pieces compressed at different
//!   times (sync-flushed deflate segments, stored blocks, combined CRC), so
//!   a page compresses only the parts that changed.
//! - [`negotiate`]: the exposition format and the encoding a scraper asks
//!   for (`Accept`, `Accept-Encoding`), as client_golang decides them.
//! - [`serve`]: the HTTP/1.1 accept loops over plain or TLS listeners, with
//!   connection limits, capacity kept for the health probes, header, write
//!   and whole-response deadlines and a graceful drain.
//!
//! It depends on no AWS crate and on nothing of the exporter that uses it;
//! see the README next to this crate's `Cargo.toml` for how an exporter
//! wires it.
#![forbid(unsafe_code)]

pub mod gzip;
pub mod negotiate;
pub mod serve;
mod tls;
pub mod web_config;
