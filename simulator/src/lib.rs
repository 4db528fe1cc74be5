//! A local simulator of the AWS APIs the exporter calls, speaking each
//! service's wire protocol closely enough that the real AWS SDK clients can be
//! pointed at it. Tests use it to drive the real wire path, and the
//! exporter's `--demo` mode polls it instead of AWS.
//!
//! One endpoint serves several (account, region) scopes: a request's region
//! is the one its SigV4 credential scope names, its account that of the role
//! whose STS-issued keys signed it (else the scenario's default account).
//!
//! # Layout
//! - `scenario`: what the simulated accounts hold (scopes, tables, tags,
//!   destinations, status timelines, faults, roles) and its YAML format.
//! - `wire`: the front door: tells services apart on the one endpoint, checks
//!   the SigV4 `Authorization` form, resolves the caller's scope, records
//!   request stats and applies scope faults.
//! - `dynamodb`: the DynamoDB JSON 1.0 operations and AWS-shaped errors.
//! - `streaming`: AWS's rules for turning a table's Kinesis streaming on
//!   and off (Enable and Disable), shared by the API and the control methods.
//! - `sts`: STS over the query protocol (`AssumeRole`, `GetCallerIdentity`).
//! - `kinesis`: Kinesis JSON 1.1 (`DescribeStreamSummary`), streams with
//!   status timelines.
//! - `cloudwatch`: CloudWatch over Smithy RPC v2 CBOR (`ListMetrics`,
//!   `GetMetricData`), serving the tables' CDC metric timelines.
//! - `serve`: the accept loop.
//! - this file: the running [`Simulator`] handle, its shared state, the
//!   control API tests use, and stats.
//!
//! The whole crate is a test double: the exporter depends on it only as a
//! dev-dependency and, behind its default-on `demo` feature, for `--demo`.
#![forbid(unsafe_code)]

mod cloudwatch;
mod dynamodb;
mod kinesis;
mod scenario;
mod serve;
mod streaming;
mod sts;
#[cfg(test)]
mod testing;
mod wire;

pub use scenario::{
    parse_stream_arn, role_account, CdcMetricsSpec, DestinationSpec, Fault, Listing, MetricStep,
    RoleSpec, Scenario, ScenarioError, ScopeSpec, Step, StreamSpec, TableSpec, TransitionTimes,
    CDC_METRIC_NAMES, DEFAULT_ACCOUNT_ID, DEFAULT_DELEGATED_OPERATION, DEFAULT_DISABLING_TIME,
    DEFAULT_ENABLING_TIME, DEFAULT_REGION, DEFAULT_TAGS_PAGE_SIZE, UNKNOWN_ERROR_CODE,
};
pub use streaming::{DestinationError, ENABLE_FAILED_DESCRIPTION};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime};

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

/// An (account, region) pair: where a request acts and where tables live.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Scope {
    account_id: String,
    region: String,
}

impl Scope {
    fn new(account_id: &str, region: &str) -> Self {
        Scope {
            account_id: account_id.to_string(),
            region: region.to_string(),
        }
    }
}

/// Which simulated service a request was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Service {
    DynamoDb,
    Sts,
    Kinesis,
    CloudWatch,
}

/// One request as the stats saw it, once its caller and operation were known
/// (requests rejected before that only count in [`Simulator::total_requests`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// When it arrived, on tokio's clock (so paused-time tests can use it).
    pub at: Instant,
    /// The caller's account: its role's for STS-issued keys, else the default.
    pub account_id: String,
    /// The region of the request's SigV4 credential scope.
    pub region: String,
    pub service: Service,
    pub operation: String,
    /// The table named by the request (its name, also when given as an ARN).
    pub table: Option<String>,
    pub access_key_id: String,
}

/// An access key STS issued, as [`Simulator::issued_keys`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedKey {
    pub access_key_id: String,
    pub account_id: String,
    pub role_arn: String,
}

/// State shared between the handle and every request.
struct Shared {
    default_scope: Scope,
    /// `None`: any well-formed role ARN may be assumed.
    roles: Option<Vec<RoleSpec>>,
    credential_lifetime: Option<Duration>,
    world: Mutex<World>,
    stats: Stats,
    /// The simulator's start on both clocks: metric timestamps are wall
    /// time, timelines count on tokio's clock, and this pair maps one onto
    /// the other (so paused-time tests see consistent metrics).
    started: Instant,
    started_wall: SystemTime,
    /// Flips to `true` once; hung and sleeping requests watch it.
    stopping: watch::Sender<bool>,
    request_seq: AtomicU64,
}

/// Everything requests read and the control API changes, under one lock.
struct World {
    scopes: HashMap<Scope, ScopeState>,
    /// STS-issued credentials by access key id.
    credentials: HashMap<String, IssuedCredential>,
    tags_page_size: usize,
    /// Declared (or created) streams by ARN.
    streams: HashMap<String, InstalledStream>,
    /// Streams deleted since start: no longer implied by destinations.
    deleted_streams: HashSet<String>,
    list_metrics_page_size: usize,
    /// Listings whose tokens go round (see [`Listing`]).
    repeating_tokens: BTreeSet<Listing>,
    /// How long Enable's and Disable's transitions take.
    transitions: TransitionTimes,
}

impl World {
    fn change_streaming(
        &mut self,
        scope: &Scope,
        table: &str,
        shown: &str,
        change: streaming::Change,
    ) -> Result<&'static str, DestinationError> {
        let times = self.transitions;
        let installed = (self.scopes.get_mut(scope))
            .and_then(|s| s.tables.get_mut(table))
            .ok_or_else(|| DestinationError::TableNotFound(shown.to_string()))?;
        installed.change_streaming(change, Instant::now(), times)
    }

    /// Whether `arn` names a stream of `scope` that exists and is not being
    /// deleted: what an Enable needs to end ACTIVE rather than ENABLE_FAILED.
    fn stream_usable(&self, scope: &Scope, arn: &str) -> bool {
        let Some((account_id, region, _)) = parse_stream_arn(arn) else {
            return false;
        };
        if account_id != scope.account_id || region != scope.region {
            return false;
        }
        match self.streams.get(arn) {
            Some(installed) => installed.gone_at.is_none(),
            None => !self.deleted_streams.contains(arn),
        }
    }
}

struct InstalledStream {
    spec: StreamSpec,
    /// Status timelines count from here.
    since: Instant,
    /// `StreamCreationTimestamp`.
    created: SystemTime,
    /// While deleting: when the stream is gone for good.
    gone_at: Option<Instant>,
}

/// A consistent copy of one stream, taken at request time.
struct StreamSnapshot {
    spec: StreamSpec,
    elapsed: Duration,
    created: SystemTime,
}

#[derive(Default)]
struct ScopeState {
    /// Sorted, as `ListTables` answers.
    tables: BTreeMap<String, InstalledTable>,
    /// Applies to every request of the scope, before any table fault.
    fault: Option<Fault>,
}

/// Credentials STS handed out, remembered so later requests signed with
/// them land in the role's account.
#[derive(Debug, Clone)]
struct IssuedCredential {
    account_id: String,
    role_arn: String,
    /// `arn:aws:sts::ACCOUNT:assumed-role/ROLE/SESSION`.
    assumed_role_arn: String,
    /// `AROA…:SESSION`.
    assumed_role_id: String,
    session_token: String,
}

struct InstalledTable {
    spec: TableSpec,
    /// Where each destination's timeline (`spec.destinations`, index for
    /// index) counts from: simulator start, the last (re)install or
    /// [`Simulator::set_destinations_in`], or the Enable or Disable that
    /// last changed that entry.
    destinations_since: Vec<Instant>,
    /// Metric timelines count from here: install, or the last
    /// [`Simulator::set_cdc_metrics_in`].
    metrics_since: Instant,
}

impl InstalledTable {
    fn new(spec: TableSpec, since: Instant) -> Self {
        InstalledTable {
            destinations_since: vec![since; spec.destinations.len()],
            spec,
            metrics_since: since,
        }
    }

    /// Replace every destination; their timelines start at `since`.
    fn set_destinations(&mut self, destinations: Vec<DestinationSpec>, since: Instant) {
        self.destinations_since = vec![since; destinations.len()];
        self.spec.destinations = destinations;
    }
}

/// A consistent copy of one table, taken at request time.
struct TableSnapshot {
    spec: TableSpec,
    /// How far into its timeline each destination is, index for index.
    destinations_elapsed: Vec<Duration>,
}

/// Default `ListMetrics` page size: small, so paging is exercised.
const LIST_METRICS_PAGE_SIZE: usize = 50;

/// Oldest request records are dropped past this many, to bound memory in
/// long demo runs.
const MAX_RECORDS: usize = 1 << 20;

#[derive(Default)]
struct Stats {
    total: AtomicU64,
    per_table: Mutex<HashMap<String, u64>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    records: Mutex<VecDeque<RequestRecord>>,
    /// `MetricDataQueries` received in `GetMetricData` calls.
    metric_queries: AtomicU64,
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

    fn record(&self, record: RequestRecord) {
        let mut records = lock(&self.records);
        if records.len() >= MAX_RECORDS {
            records.pop_front();
        }
        records.push_back(record);
    }
}

/// What a fault makes the service layer do; each service shapes the error
/// its own way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultOutcome {
    /// Answer normally but with a truncated body.
    Garble,
    Throttle,
    InternalError,
    NotFound,
    AccessDenied,
    /// 400 with [`UNKNOWN_ERROR_CODE`].
    UnknownCode,
    /// Close the connection without answering.
    Reset,
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

    /// Carry out `fault`: `Hang` waits here until the simulator stops (or the
    /// client gives up, when hyper drops this future), the rest are mapped.
    async fn enact(&self, fault: Fault) -> FaultOutcome {
        match fault {
            Fault::Malformed => FaultOutcome::Garble,
            Fault::Throttle => FaultOutcome::Throttle,
            Fault::InternalError => FaultOutcome::InternalError,
            Fault::NotFound => FaultOutcome::NotFound,
            Fault::AccessDenied => FaultOutcome::AccessDenied,
            Fault::UnknownCode => FaultOutcome::UnknownCode,
            Fault::Reset => FaultOutcome::Reset,
            Fault::Hang => {
                self.stopped().await;
                FaultOutcome::Reset
            }
        }
    }

    /// Sleep `latency`, or return `false` if the simulator stops first.
    async fn delay(&self, latency: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(latency) => true,
            () = self.stopped() => false,
        }
    }

    fn world(&self) -> MutexGuard<'_, World> {
        lock(&self.world)
    }

    fn snapshot(&self, scope: &Scope, table: &str) -> Option<TableSnapshot> {
        let world = self.world();
        let t = world.scopes.get(scope)?.tables.get(table)?;
        let now = Instant::now();
        Some(TableSnapshot {
            spec: t.spec.clone(),
            destinations_elapsed: (t.destinations_since.iter())
                .map(|since| now.saturating_duration_since(*since))
                .collect(),
        })
    }

    /// Sorted table names of `scope`.
    fn table_names(&self, scope: &Scope) -> Vec<String> {
        self.world()
            .scopes
            .get(scope)
            .map(|s| s.tables.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Enable streaming from `table` of `scope` to `stream_arn` (see
    /// [`streaming`]); `shown` names the table in a not-found error.
    fn enable_streaming(
        &self,
        scope: &Scope,
        table: &str,
        shown: &str,
        stream_arn: &str,
        precision: Option<String>,
    ) -> Result<&'static str, DestinationError> {
        let mut world = self.world();
        let stream_usable = world.stream_usable(scope, stream_arn);
        let change = streaming::Change::Enable {
            stream_arn: stream_arn.to_string(),
            precision,
            stream_usable,
        };
        world.change_streaming(scope, table, shown, change)
    }

    /// Disable streaming from `table` of `scope` to `stream_arn`.
    fn disable_streaming(
        &self,
        scope: &Scope,
        table: &str,
        shown: &str,
        stream_arn: &str,
    ) -> Result<&'static str, DestinationError> {
        let change = streaming::Change::Disable {
            stream_arn: stream_arn.to_string(),
        };
        self.world().change_streaming(scope, table, shown, change)
    }

    /// Whether `listing`'s tokens go round.
    fn repeats(&self, listing: Listing) -> bool {
        self.world().repeating_tokens.contains(&listing)
    }

    fn scope_fault(&self, scope: &Scope) -> Option<Fault> {
        self.world().scopes.get(scope).and_then(|s| s.fault)
    }

    fn table_arn(&self, scope: &Scope, table: &str) -> String {
        format!(
            "arn:{}:dynamodb:{}:{}:table/{}",
            partition(&scope.region),
            scope.region,
            scope.account_id,
            table
        )
    }

    /// Wall-clock time of tokio instant `at`.
    fn wall(&self, at: Instant) -> SystemTime {
        match at.checked_duration_since(self.started) {
            Some(after) => self.started_wall + after,
            None => self.started_wall - self.started.duration_since(at),
        }
    }

    /// The stream `arn` as requests see it now: declared or created (unless
    /// its deletion finished), else implied by a destination naming it
    /// (unless deleted); `None` when it does not exist.
    fn stream(&self, arn: &str) -> Option<StreamSnapshot> {
        let now = Instant::now();
        let mut world = self.world();
        if let Some(installed) = world.streams.get(arn) {
            if installed.gone_at.is_some_and(|gone| now >= gone) {
                world.streams.remove(arn);
                world.deleted_streams.insert(arn.to_string());
                return None;
            }
            return Some(StreamSnapshot {
                spec: installed.spec.clone(),
                elapsed: now.saturating_duration_since(installed.since),
                created: installed.created,
            });
        }
        if world.deleted_streams.contains(arn) {
            return None;
        }
        let named = world.scopes.values().any(|scope| {
            scope
                .tables
                .values()
                .any(|t| t.spec.destinations.iter().any(|d| d.stream_arn == arn))
        });
        named.then(|| StreamSnapshot {
            spec: StreamSpec::new(arn),
            elapsed: now.saturating_duration_since(self.started),
            created: self.started_wall,
        })
    }

    /// Tables of `scope` that publish CDC metrics, with when their metric
    /// timelines started (wall clock), sorted by name.
    fn metric_tables(&self, scope: &Scope) -> Vec<(TableSpec, SystemTime)> {
        let world = self.world();
        let Some(state) = world.scopes.get(scope) else {
            return Vec::new();
        };
        state
            .tables
            .values()
            .filter(|t| t.spec.cdc_metrics.is_some())
            .map(|t| {
                let ago = t
                    .spec
                    .cdc_metrics
                    .as_ref()
                    .map_or(Duration::ZERO, |m| m.started_ago);
                (t.spec.clone(), self.wall(t.metrics_since) - ago)
            })
            .collect()
    }

    fn issued(&self, access_key_id: &str) -> Option<IssuedCredential> {
        self.world().credentials.get(access_key_id).cloned()
    }

    /// A fresh id in the style of AWS's (52 upper-case letters and digits);
    /// the sequence number in front keeps ids unique within one simulator.
    fn next_request_id(&self) -> String {
        let seq = self.request_seq.fetch_add(1, Ordering::Relaxed);
        unique_id(seq, 52)
    }
}

/// `len` upper-case letters and digits: `seq` in base 36 (13 digits, so
/// unique per sequence number), then random ones.
fn unique_id(mut seq: u64, len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut id = Vec::with_capacity(len.max(13));
    for _ in 0..13 {
        id.push(ALPHABET[(seq % 36) as usize]);
        seq /= 36;
    }
    id.reverse();
    while id.len() < len {
        id.push(ALPHABET[fastrand::usize(..ALPHABET.len())]);
    }
    String::from_utf8_lossy(&id).into_owned()
}

/// The token the page that would end a listing names instead when its
/// tokens go round (see [`Listing`]): `first`, or `second` when `first` is
/// the one just asked for.
fn repeated_token(asked: Option<&str>, first: &str, second: &str) -> String {
    if asked == Some(first) {
        second.to_string()
    } else {
        first.to_string()
    }
}

/// The ARN partition a region belongs to.
fn partition(region: &str) -> &'static str {
    scenario::arn_partition(region)
}

/// The most entries of sorted `times` within any window of length `window`
/// (a window starting at `t` holds the times in `[t, t + window)`).
fn max_in_window(times: &[Instant], window: Duration) -> usize {
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end].duration_since(times[start]) >= window {
            start += 1;
        }
        best = best.max(end + 1 - start);
    }
    best
}

fn install(tables: Vec<TableSpec>, since: Instant) -> BTreeMap<String, InstalledTable> {
    tables
        .into_iter()
        .map(|spec| (spec.name.clone(), InstalledTable::new(spec, since)))
        .collect()
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
        let started_wall = SystemTime::now();
        let mut streams = HashMap::new();
        let declared = scenario
            .streams
            .into_iter()
            .chain(scenario.scopes.iter().flat_map(|s| s.streams.clone()));
        for spec in declared {
            let stream = InstalledStream {
                spec,
                since: started,
                created: started_wall,
                gone_at: None,
            };
            streams.insert(stream.spec.arn.clone(), stream);
        }
        let default_scope = Scope::new(&scenario.account_id, &scenario.region);
        let mut scopes = HashMap::new();
        scopes.insert(
            default_scope.clone(),
            ScopeState {
                tables: install(scenario.tables, started),
                fault: None,
            },
        );
        for scope in scenario.scopes {
            scopes.insert(
                Scope::new(&scope.account_id, &scope.region),
                ScopeState {
                    tables: install(scope.tables, started),
                    fault: None,
                },
            );
        }
        let (stopping, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            default_scope,
            roles: scenario.roles,
            credential_lifetime: scenario.credential_lifetime,
            world: Mutex::new(World {
                scopes,
                credentials: HashMap::new(),
                tags_page_size: scenario.tags_page_size,
                streams,
                deleted_streams: HashSet::new(),
                list_metrics_page_size: LIST_METRICS_PAGE_SIZE,
                repeating_tokens: scenario.repeating_tokens,
                transitions: scenario.transitions,
            }),
            stats: Stats::default(),
            started,
            started_wall,
            stopping,
            request_seq: AtomicU64::new(0),
        });

        let for_requests = Arc::clone(&shared);
        let handler = move |request, _peer| wire::handle(Arc::clone(&for_requests), request);
        let for_shutdown = Arc::clone(&shared);
        let shutdown = async move { for_shutdown.stopped().await };
        let server = tokio::spawn(serve::serve(listener, handler, shutdown, SHUTDOWN_GRACE));
        tracing::debug!(%addr, "AWS simulator listening");
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

    /// Region of the default scope.
    pub fn region(&self) -> String {
        self.handle.shared.default_scope.region.clone()
    }

    /// Account of the default scope.
    pub fn account_id(&self) -> String {
        self.handle.shared.default_scope.account_id.clone()
    }

    /// The ARN the simulator accepts in place of `table`'s name (default scope).
    pub fn table_arn(&self, table: &str) -> String {
        let shared = &self.handle.shared;
        shared.table_arn(&shared.default_scope, table)
    }

    /// The ARN of `table` in the scope (`account_id`, `region`).
    pub fn table_arn_in(&self, account_id: &str, region: &str, table: &str) -> String {
        self.handle
            .shared
            .table_arn(&Scope::new(account_id, region), table)
    }

    /// Add or replace a table of the default scope; its timelines restart now.
    pub fn put_table(&self, spec: TableSpec) {
        self.put_table_at(self.handle.shared.default_scope.clone(), spec);
    }

    /// Add or replace a table of (`account_id`, `region`), creating the scope
    /// if needed; its timelines restart now.
    pub fn put_table_in(&self, account_id: &str, region: &str, spec: TableSpec) {
        self.put_table_at(Scope::new(account_id, region), spec);
    }

    fn put_table_at(&self, scope: Scope, spec: TableSpec) {
        let since = Instant::now();
        self.handle
            .shared
            .world()
            .scopes
            .entry(scope)
            .or_default()
            .tables
            .insert(spec.name.clone(), InstalledTable::new(spec, since));
    }

    /// Remove a table of the default scope; later requests for it get
    /// `ResourceNotFoundException`.
    pub fn remove_table(&self, name: &str) {
        self.remove_table_at(&self.handle.shared.default_scope.clone(), name);
    }

    /// Remove a table of (`account_id`, `region`).
    pub fn remove_table_in(&self, account_id: &str, region: &str, name: &str) {
        self.remove_table_at(&Scope::new(account_id, region), name);
    }

    fn remove_table_at(&self, scope: &Scope, name: &str) {
        if let Some(state) = self.handle.shared.world().scopes.get_mut(scope) {
            state.tables.remove(name);
        }
    }

    /// Set or clear a table's fault. Does nothing for an unknown table.
    pub fn set_fault(&self, table: &str, fault: Option<Fault>) {
        self.modify(None, table, |t| t.spec.fault = fault);
    }

    /// [`Simulator::set_fault`] for a table of (`account_id`, `region`).
    pub fn set_fault_in(&self, account_id: &str, region: &str, table: &str, fault: Option<Fault>) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.spec.fault = fault
        });
    }

    /// Set or clear the fault of a table's `ListTagsOfResource` alone (see
    /// [`TableSpec::tag_fault`]). Does nothing for an unknown table.
    pub fn set_tag_fault(&self, table: &str, fault: Option<Fault>) {
        self.modify(None, table, |t| t.spec.tag_fault = fault);
    }

    /// [`Simulator::set_tag_fault`] for a table of (`account_id`, `region`).
    pub fn set_tag_fault_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        fault: Option<Fault>,
    ) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.spec.tag_fault = fault
        });
    }

    /// Make `listing`'s tokens go round, or end again (see [`Listing`]).
    pub fn set_repeating_token(&self, listing: Listing, repeating: bool) {
        let mut world = self.handle.shared.world();
        if repeating {
            world.repeating_tokens.insert(listing);
        } else {
            world.repeating_tokens.remove(&listing);
        }
    }

    /// Set or clear a fault for every DynamoDB, Kinesis and CloudWatch
    /// request of the scope (`account_id`, `region`), whatever it names:
    /// `Hang` blackholes the region, `Throttle` is a throttle storm. While
    /// set it replaces table and stream faults and latency. STS is not
    /// affected.
    pub fn set_scope_fault(&self, account_id: &str, region: &str, fault: Option<Fault>) {
        self.handle
            .shared
            .world()
            .scopes
            .entry(Scope::new(account_id, region))
            .or_default()
            .fault = fault;
    }

    /// Set or clear a table's added latency. Does nothing for an unknown table.
    pub fn set_latency(&self, table: &str, latency: Option<Duration>) {
        self.modify(None, table, |t| t.spec.latency = latency);
    }

    /// [`Simulator::set_latency`] for a table of (`account_id`, `region`).
    pub fn set_latency_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        latency: Option<Duration>,
    ) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.spec.latency = latency
        });
    }

    /// Replace a table's destinations; their timelines start now. Does
    /// nothing for an unknown table.
    pub fn set_destinations(&self, table: &str, destinations: Vec<DestinationSpec>) {
        self.modify(None, table, |t| {
            t.set_destinations(destinations, Instant::now())
        });
    }

    /// [`Simulator::set_destinations`] for a table of (`account_id`, `region`).
    pub fn set_destinations_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        destinations: Vec<DestinationSpec>,
    ) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.set_destinations(destinations, Instant::now())
        });
    }

    /// What `EnableKinesisStreamingDestination` does for `table` of the
    /// default scope and `stream_arn`, under the same rules (see
    /// [`DestinationError`]): on success the status the API would answer
    /// (ENABLING), which turns ACTIVE after the scenario's
    /// [`TransitionTimes::enabling`] (or ENABLE_FAILED, for a stream that is
    /// not there). Not counted as a request.
    pub fn enable_destination(
        &self,
        table: &str,
        stream_arn: &str,
    ) -> Result<&'static str, DestinationError> {
        let scope = self.handle.shared.default_scope.clone();
        (self.handle.shared).enable_streaming(&scope, table, table, stream_arn, None)
    }

    /// [`Simulator::enable_destination`] for a table of (`account_id`, `region`).
    pub fn enable_destination_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        stream_arn: &str,
    ) -> Result<&'static str, DestinationError> {
        let scope = Scope::new(account_id, region);
        (self.handle.shared).enable_streaming(&scope, table, table, stream_arn, None)
    }

    /// What `DisableKinesisStreamingDestination` does for `table` of the
    /// default scope and `stream_arn`: DISABLING, then DISABLED after the
    /// scenario's [`TransitionTimes::disabling`]; refused unless the
    /// stream's entry is ACTIVE. Not counted as a request.
    pub fn disable_destination(
        &self,
        table: &str,
        stream_arn: &str,
    ) -> Result<&'static str, DestinationError> {
        let scope = self.handle.shared.default_scope.clone();
        (self.handle.shared).disable_streaming(&scope, table, table, stream_arn)
    }

    /// [`Simulator::disable_destination`] for a table of (`account_id`, `region`).
    pub fn disable_destination_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        stream_arn: &str,
    ) -> Result<&'static str, DestinationError> {
        let scope = Scope::new(account_id, region);
        (self.handle.shared).disable_streaming(&scope, table, table, stream_arn)
    }

    /// How long Enable's and Disable's transitions take from now on
    /// (transitions under way keep their length).
    pub fn set_transition_times(&self, times: TransitionTimes) {
        self.handle.shared.world().transitions = times;
    }

    /// Replace the tags of a table of the default scope, as TagResource and
    /// UntagResource would. Does nothing for an unknown table.
    pub fn set_tags(&self, table: &str, tags: Vec<(String, String)>) {
        self.modify(None, table, |t| t.spec.tags = tags);
    }

    /// Replace a table's tags. Does nothing for an unknown table.
    pub fn set_tags_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        tags: Vec<(String, String)>,
    ) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.spec.tags = tags
        });
    }

    /// Replace a table's CDC metrics; their timelines start now. Does
    /// nothing for an unknown table.
    pub fn set_cdc_metrics_in(
        &self,
        account_id: &str,
        region: &str,
        table: &str,
        metrics: Option<CdcMetricsSpec>,
    ) {
        self.modify(Some(Scope::new(account_id, region)), table, |t| {
            t.spec.cdc_metrics = metrics;
            t.metrics_since = Instant::now();
        });
    }

    /// [`Simulator::set_cdc_metrics_in`] for a table of the default scope.
    pub fn set_cdc_metrics(&self, table: &str, metrics: Option<CdcMetricsSpec>) {
        let scope = self.handle.shared.default_scope.clone();
        self.set_cdc_metrics_in(&scope.account_id, &scope.region, table, metrics);
    }

    /// Metrics per `ListMetrics` page from now on (at least 1; default 50).
    pub fn set_list_metrics_page_size(&self, size: usize) {
        self.handle.shared.world().list_metrics_page_size = size.max(1);
    }

    /// The ARN of stream `name` in the default scope.
    pub fn stream_arn(&self, name: &str) -> String {
        let scope = &self.handle.shared.default_scope;
        format!(
            "arn:{}:kinesis:{}:{}:stream/{name}",
            partition(&scope.region),
            scope.region,
            scope.account_id
        )
    }

    /// Add or replace a stream (in the scope its ARN names); its status
    /// timeline starts now, and so does its creation time.
    pub fn create_stream(&self, spec: StreamSpec) {
        let mut world = self.handle.shared.world();
        world.deleted_streams.remove(&spec.arn);
        let stream = InstalledStream {
            since: Instant::now(),
            created: SystemTime::now(),
            gone_at: None,
            spec,
        };
        world.streams.insert(stream.spec.arn.clone(), stream);
    }

    /// Delete a stream at once: `DescribeStreamSummary` answers
    /// `ResourceNotFoundException` from now on, also for a stream only a
    /// destination implied.
    pub fn delete_stream(&self, arn: &str) {
        let mut world = self.handle.shared.world();
        world.streams.remove(arn);
        world.deleted_streams.insert(arn.to_string());
    }

    /// Delete a stream the way AWS does: `DELETING` for `deleting_for`,
    /// then gone.
    pub fn delete_stream_after(&self, arn: &str, deleting_for: Duration) {
        let now = Instant::now();
        let mut world = self.handle.shared.world();
        let spec = match world.streams.remove(arn) {
            Some(installed) => installed.spec,
            None => StreamSpec::new(arn),
        };
        let stream = InstalledStream {
            spec: spec.with_status("DELETING"),
            since: now,
            created: SystemTime::now(),
            gone_at: Some(now + deleting_for),
        };
        world.streams.insert(arn.to_string(), stream);
    }

    /// Set or clear a stream's fault; a stream only a destination implied
    /// becomes a declared one first. Does nothing for a deleted stream.
    pub fn set_stream_fault(&self, arn: &str, fault: Option<Fault>) {
        let Some(current) = self.handle.shared.stream(arn) else {
            tracing::warn!(arn, "simulator has no such stream; change ignored");
            return;
        };
        let mut world = self.handle.shared.world();
        match world.streams.get_mut(arn) {
            Some(installed) => installed.spec.fault = fault,
            None => {
                let stream = InstalledStream {
                    spec: StreamSpec {
                        fault,
                        ..current.spec
                    },
                    since: self.handle.shared.started,
                    created: current.created,
                    gone_at: None,
                };
                world.streams.insert(arn.to_string(), stream);
            }
        }
    }

    /// Tags per `ListTagsOfResource` page from now on (at least 1).
    pub fn set_tags_page_size(&self, size: usize) {
        self.handle.shared.world().tags_page_size = size.max(1);
    }

    fn modify(&self, scope: Option<Scope>, table: &str, change: impl FnOnce(&mut InstalledTable)) {
        let shared = &self.handle.shared;
        let scope = scope.unwrap_or_else(|| shared.default_scope.clone());
        let mut world = shared.world();
        match world
            .scopes
            .get_mut(&scope)
            .and_then(|s| s.tables.get_mut(table))
        {
            Some(installed) => change(installed),
            None => tracing::warn!(table, "simulator has no such table; change ignored"),
        }
    }

    /// `DescribeKinesisStreamingDestination` requests for `table` of the
    /// default scope (by name, or by ARN resolved to the name), faulted ones
    /// included; a table elsewhere counts under its full ARN.
    pub fn requests_for(&self, table: &str) -> u64 {
        lock(&self.handle.shared.stats.per_table)
            .get(table)
            .copied()
            .unwrap_or(0)
    }

    /// Access keys STS has issued so far, in no particular order.
    pub fn issued_keys(&self) -> Vec<IssuedKey> {
        self.handle
            .shared
            .world()
            .credentials
            .iter()
            .map(|(key, issued)| IssuedKey {
                access_key_id: key.clone(),
                account_id: issued.account_id.clone(),
                role_arn: issued.role_arn.clone(),
            })
            .collect()
    }

    /// Every request whose caller and operation were recognised, oldest first.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.handle.shared.stats.records)
            .iter()
            .cloned()
            .collect()
    }

    /// Recorded requests of the scope (`account_id`, `region`), all services.
    pub fn requests_in(&self, account_id: &str, region: &str) -> u64 {
        lock(&self.handle.shared.stats.records)
            .iter()
            .filter(|r| r.account_id == account_id && r.region == region)
            .count() as u64
    }

    /// The most requests of the scope (`account_id`, `region`) that arrived
    /// within any `window`-long stretch: what a rate budget must bound.
    pub fn max_requests_in_window(
        &self,
        account_id: &str,
        region: &str,
        window: Duration,
    ) -> usize {
        let mut times: Vec<Instant> = lock(&self.handle.shared.stats.records)
            .iter()
            .filter(|r| r.account_id == account_id && r.region == region)
            .map(|r| r.at)
            .collect();
        times.sort_unstable();
        max_in_window(&times, window)
    }

    /// Recorded requests of one operation, all scopes.
    pub fn operation_requests(&self, service: Service, operation: &str) -> u64 {
        lock(&self.handle.shared.stats.records)
            .iter()
            .filter(|r| r.service == service && r.operation == operation)
            .count() as u64
    }

    /// Recorded requests per (service, operation), all scopes.
    pub fn operation_counts(&self) -> BTreeMap<(Service, String), u64> {
        let mut counts = BTreeMap::new();
        for record in lock(&self.handle.shared.stats.records).iter() {
            *counts
                .entry((record.service, record.operation.clone()))
                .or_insert(0) += 1;
        }
        counts
    }

    /// `MetricDataQueries` received in `GetMetricData` calls, over all calls
    /// (the calls themselves: [`Simulator::operation_requests`]).
    pub fn metric_data_queries(&self) -> u64 {
        self.handle
            .shared
            .stats
            .metric_queries
            .load(Ordering::SeqCst)
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

    /// Zero the counters and forget recorded requests. The maximum restarts
    /// from the current in-flight count, since those requests are still in
    /// flight.
    pub fn reset_stats(&self) {
        let stats = &self.handle.shared.stats;
        stats.total.store(0, Ordering::SeqCst);
        lock(&stats.per_table).clear();
        lock(&stats.records).clear();
        stats.metric_queries.store(0, Ordering::SeqCst);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sliding_window_counts_the_busiest_stretch() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = [
            at(0),
            at(100),
            at(900),
            at(1000),
            at(1050),
            at(1999),
            at(3000),
        ];
        let second = Duration::from_secs(1);
        // [100, 1100) holds 100, 900, 1000 and 1050; no second holds five.
        assert_eq!(max_in_window(&times, second), 4);
        assert_eq!(max_in_window(&times, Duration::from_millis(1100)), 5);
        assert_eq!(max_in_window(&times, Duration::from_secs(10)), 7);
        assert_eq!(max_in_window(&times, Duration::from_nanos(1)), 1);
        assert_eq!(max_in_window(&[], second), 0);
    }

    #[test]
    fn unique_ids_have_the_requested_shape() {
        let a = unique_id(0, 52);
        let b = unique_id(1, 52);
        assert_eq!((a.len(), b.len()), (52, 52));
        assert_ne!(a[..13], b[..13]);
        assert_eq!(unique_id(35, 16).len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()));
    }
}
