//! Layer 5, polling: the background work that fills the state store, in
//! one model. [`scheduler`] runs one (account, region) scope's queue of
//! every kind of due work (table polls, stream checks, discovery
//! refreshes, CDC reads) under its budget, with one jitter, one drain on
//! shutdown and one accounting of panicked and aborted work;
//! [`discovery`] is a refresh (find tables by name and tag); [`cdc`] is a
//! read of the replication metrics from CloudWatch; [`fleet`] decides
//! which tables are polled, with which clients (from the
//! [`ClientFactory`](crate::aws::factory::ClientFactory)), in which scope
//! (accounts, discovery outcomes, sharding, reloads), and owns every task;
//! [`supervise`] restarts any long-lived task that panics.
//!
//! Uses the layers below it (config, aws, state, exposition's telemetry);
//! knows nothing of HTTP.

pub mod cdc;
pub mod discovery;
pub mod fleet;
pub mod scheduler;
pub mod supervise;
pub mod tags;
