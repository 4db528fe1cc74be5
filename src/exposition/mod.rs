//! Layer 4, exposition: what `/metrics` and the status page on `/` say.
//! Every metric family (name, help, type, labels and the function that
//! turns state into samples) is declared in [`metrics`]; [`openmetrics`]
//! turns those families' headers into OpenMetrics; [`page`] keeps the one
//! rendered snapshot of the whole page, and its gzip form, that every
//! scraper shares. [`status`] renders the same state as an HTML table for
//! people: one row per table, problems first.
//!
//! Uses the layers below it (config, aws, state); knows nothing of polling
//! or of HTTP.

pub mod metrics;
pub mod openmetrics;
pub mod page;
pub mod status;
