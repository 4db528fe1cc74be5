//! The web layer: exporter-toolkit for Rust. [`web_config`] reads the
//! exporter-toolkit web config file (TLS, basic auth, headers) and follows
//! its changes; [`tls`] turns its `tls_server_config` into rustls settings;
//! [`negotiate`] picks the exposition format and encoding a scraper asks
//! for; [`serve`] is the HTTP/1.1 accept loop with its graceful drain and
//! client limits.
//!
//! Uses no other layer of this crate: it knows nothing of AWS, of the
//! state or of metric families.

pub mod negotiate;
pub mod serve;
pub mod tls;
pub mod web_config;
