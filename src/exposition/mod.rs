//! Layer 4, exposition: what `/metrics` says. Every metric family (name,
//! help, type, labels and the function that turns state into samples) is
//! declared in [`metrics`]; [`openmetrics`] turns those families' headers
//! into OpenMetrics; [`page`] keeps the one rendered snapshot of the whole
//! page, and its gzip form, that every scraper shares.
//!
//! Uses the layers below it (config, aws, state); knows nothing of polling
//! or of HTTP.

pub mod metrics;
pub mod openmetrics;
pub mod page;
