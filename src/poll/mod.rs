//! Layer 5, polling: the background work that fills the state store.
//! [`scheduler`] runs one (account, region) scope's queue of table polls
//! and stream checks under its budget; [`discovery`] finds tables by name
//! and tag; [`cdc`] reads the replication metrics from CloudWatch;
//! [`fleet`] decides which tables are polled, by which client, in which
//! scope (accounts, discovery refreshes, sharding, reloads);
//! [`supervise`] restarts any of their long-lived tasks that panics.
//!
//! Uses the layers below it (config, aws, state, exposition's telemetry);
//! knows nothing of HTTP.

pub mod cdc;
pub mod discovery;
pub mod fleet;
pub mod scheduler;
pub mod supervise;
