//! A local simulator of the DynamoDB control plane, speaking the JSON 1.0
//! wire protocol closely enough that the real `aws-sdk-dynamodb` client can
//! be pointed at it. Tests use it to drive the real wire path, and the
//! exporter's `--demo` mode polls it instead of AWS.
//!
//! - `scenario`: what the simulated account holds (tables, destinations,
//!   status timelines, faults) and its YAML format.
//! - `wire`: HTTP request handling, authentication checks, operation dispatch
//!   and AWS-shaped errors.
//! - `serve`: the accept loop.
//! - this file: the running [`Simulator`] handle, its shared state and stats.
//!
//! The whole crate is a test double: the exporter depends on it only as a
//! dev-dependency and, behind its default-on `demo` feature, for `--demo`.
#![forbid(unsafe_code)]

mod scenario;
mod serve;
mod wire;

pub use scenario::{
    DestinationSpec, Fault, Scenario, ScenarioError, Step, TableSpec, DEFAULT_ACCOUNT_ID,
    DEFAULT_REGION,
};

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How long [`Simulator::shutdown`] lets connections drain before dropping them.
const SHUTDOWN_GRACE: Duration = Duration::from_millis(250);
/// Upper bound on [`Simulator::shutdown`], after which the server task is aborted.
const SHUTDOWN_LIMIT: Duration = Duration::from_millis(750);

/// Handle to a running simulator. Clones share one server; it stops on
/// [`Simulator::shutdown`] or when the last clone is dropped.
#[derive(Clone)]
pub struct Simulator {
    handle: Arc<Handle>,
}

struct Handle {
    addr: SocketAddr,
    shared: Arc<Shared>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.begin_shutdown();
    }
}

/// State shared between the handle and every request.
struct Shared {
    account_id: String,
    region: String,
    tables: Mutex<HashMap<String, InstalledTable>>,
    stats: Stats,
    /// Flips to `true` once; hung and sleeping requests watch it.
    stopping: watch::Sender<bool>,
    request_seq: AtomicU64,
}

struct InstalledTable {
    spec: TableSpec,
    /// Timelines count from here: simulator start, or the last (re)install.
    since: Instant,
}

/// A consistent copy of one table, taken at request time.
struct TableSnapshot {
    spec: TableSpec,
    elapsed: Duration,
}

#[derive(Default)]
struct Stats {
    total: AtomicU64,
    per_table: Mutex<HashMap<String, u64>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
}

/// Counts one request as in flight until dropped, which also covers requests
/// that hang until the client leaves or whose future is cancelled.
struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A poisoned lock only means another request panicked mid-update of plain
/// data; the data is still usable, and the simulator must keep answering.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Stats {
    fn enter(&self) -> InFlight<'_> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        self.total.fetch_add(1, Ordering::SeqCst);
        InFlight(self)
    }

    fn count_table(&self, table: &str) {
        *lock(&self.per_table).entry(table.to_string()).or_insert(0) += 1;
    }
}

impl Shared {
    fn begin_shutdown(&self) {
        self.stopping.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    async fn stopped(&self) {
        let mut stopping = self.stopping.subscribe();
        // An error means the sender is gone, which is also a stop.
        let _ = stopping.wait_for(|stop| *stop).await;
    }

    fn snapshot(&self, table: &str) -> Option<TableSnapshot> {
        lock(&self.tables).get(table).map(|t| TableSnapshot {
            spec: t.spec.clone(),
            elapsed: t.since.elapsed(),
        })
    }

    fn table_arn(&self, table: &str) -> String {
        format!(
            "arn:{}:dynamodb:{}:{}:table/{}",
            partition(&self.region),
            self.region,
            self.account_id,
            table
        )
    }

    /// A fresh id in the style of AWS's (52 upper-case letters and digits);
    /// the sequence number in front keeps ids unique within one simulator.
    fn next_request_id(&self) -> String {
        const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let mut seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        let mut id = Vec::with_capacity(52);
        for _ in 0..13 {
            id.push(ALPHABET[(seq % 36) as usize]);
            seq /= 36;
        }
        id.reverse();
        while id.len() < 52 {
            id.push(ALPHABET[fastrand::usize(..ALPHABET.len())]);
        }
        String::from_utf8_lossy(&id).into_owned()
    }
}

/// The ARN partition a region belongs to.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

impl Simulator {
    /// Start on an ephemeral port of 127.0.0.1.
    pub async fn start(scenario: Scenario) -> std::io::Result<Simulator> {
        Simulator::start_on(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)), scenario).await
    }

    /// Start on `addr`. Fails with `InvalidInput` if the scenario breaks the
    /// rules [`Scenario::validate`] checks.
    pub async fn start_on(addr: SocketAddr, scenario: Scenario) -> std::io::Result<Simulator> {
        scenario
            .validate()
            .map_err(|err| std::io::Error::new(std::io::ErrorKind::InvalidInput, err))?;
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let started = Instant::now();
        let tables = scenario
            .tables
            .into_iter()
            .map(|spec| {
                let name = spec.name.clone();
                let since = started;
                (name, InstalledTable { spec, since })
            })
            .collect();
        let (stopping, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            account_id: scenario.account_id,
            region: scenario.region,
            tables: Mutex::new(tables),
            stats: Stats::default(),
            stopping,
            request_seq: AtomicU64::new(0),
        });

        let for_requests = Arc::clone(&shared);
        let handler = move |request, _peer| wire::handle(Arc::clone(&for_requests), request);
        let for_shutdown = Arc::clone(&shared);
        let shutdown = async move { for_shutdown.stopped().await };
        let server = tokio::spawn(serve::serve(listener, handler, shutdown, SHUTDOWN_GRACE));
        tracing::debug!(%addr, "DynamoDB simulator listening");
        Ok(Simulator {
            handle: Arc::new(Handle {
                addr,
                shared,
                server: Mutex::new(Some(server)),
            }),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr
    }

    /// `http://127.0.0.1:PORT`, for the SDK's `endpoint_url`.
    pub fn endpoint_url(&self) -> String {
        format!("http://{}", self.handle.addr)
    }

    pub fn region(&self) -> String {
        self.handle.shared.region.clone()
    }

    pub fn account_id(&self) -> String {
        self.handle.shared.account_id.clone()
    }

    /// The ARN the simulator accepts in place of `table`'s name.
    pub fn table_arn(&self, table: &str) -> String {
        self.handle.shared.table_arn(table)
    }

    /// Add or replace a table; its timelines restart now.
    pub fn put_table(&self, spec: TableSpec) {
        let since = Instant::now();
        lock(&self.handle.shared.tables).insert(spec.name.clone(), InstalledTable { spec, since });
    }

    /// Remove a table; later requests for it get `ResourceNotFoundException`.
    pub fn remove_table(&self, name: &str) {
        lock(&self.handle.shared.tables).remove(name);
    }

    /// Set or clear a table's fault. Does nothing for an unknown table.
    pub fn set_fault(&self, table: &str, fault: Option<Fault>) {
        self.modify(table, |t| t.spec.fault = fault);
    }

    /// Set or clear a table's added latency. Does nothing for an unknown table.
    pub fn set_latency(&self, table: &str, latency: Option<Duration>) {
        self.modify(table, |t| t.spec.latency = latency);
    }

    /// Replace a table's destinations; their timelines start now. Does
    /// nothing for an unknown table.
    pub fn set_destinations(&self, table: &str, destinations: Vec<DestinationSpec>) {
        self.modify(table, |t| {
            t.spec.destinations = destinations;
            t.since = Instant::now();
        });
    }

    fn modify(&self, table: &str, change: impl FnOnce(&mut InstalledTable)) {
        match lock(&self.handle.shared.tables).get_mut(table) {
            Some(installed) => change(installed),
            None => tracing::warn!(table, "simulator has no such table; change ignored"),
        }
    }

    /// `DescribeKinesisStreamingDestination` requests for `table` (by name,
    /// or by ARN resolved to the name), faulted ones included.
    pub fn requests_for(&self, table: &str) -> u64 {
        lock(&self.handle.shared.stats.per_table)
            .get(table)
            .copied()
            .unwrap_or(0)
    }

    /// Every HTTP request received, rejected ones included.
    pub fn total_requests(&self) -> u64 {
        self.handle.shared.stats.total.load(Ordering::SeqCst)
    }

    /// Requests received and not yet answered, abandoned or aborted.
    pub fn in_flight(&self) -> usize {
        self.handle.shared.stats.in_flight.load(Ordering::SeqCst)
    }

    /// Highest [`Simulator::in_flight`] seen since start or the last reset.
    pub fn max_in_flight(&self) -> usize {
        self.handle
            .shared
            .stats
            .max_in_flight
            .load(Ordering::SeqCst)
    }

    /// Zero the counters. The maximum restarts from the current in-flight
    /// count, since those requests are still in flight.
    pub fn reset_stats(&self) {
        let stats = &self.handle.shared.stats;
        stats.total.store(0, Ordering::SeqCst);
        lock(&stats.per_table).clear();
        stats
            .max_in_flight
            .store(stats.in_flight.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    /// Stop accepting, end hung requests by closing their connections, and
    /// return within `SHUTDOWN_LIMIT`.
    pub async fn shutdown(self) {
        self.handle.shared.begin_shutdown();
        let server = lock(&self.handle.server).take();
        if let Some(mut server) = server {
            if tokio::time::timeout(SHUTDOWN_LIMIT, &mut server)
                .await
                .is_err()
            {
                server.abort();
            }
        }
    }
}
