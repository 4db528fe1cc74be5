//! The background work of one (account, region) scope. A scope runner owns
//! the queue of the scope's due work, of every kind it has:
//!
//! - table polls (`DescribeKinesisStreamingDestination`), each table every
//!   `poll_interval`;
//! - tag reads (`ListTagsOfResource`) of the tables whose target exports
//!   tags or expects tables by a tag, every `tags_refresh_interval`
//!   ([`tags`](crate::poll::tags)); they feed the tags and the
//!   expectations into the store;
//! - stream checks (Kinesis `DescribeStreamSummary`) of the streams behind
//!   the tables' working destinations, once a cycle;
//! - discovery refreshes ([`DiscoveryJob`]), every `refresh_interval`; their
//!   outcome goes back to the fleet as a [`ScopeEvent`], and the fleet
//!   hands the runner its new work;
//! - CDC reads from CloudWatch ([`CdcJob`]), every `cdc_metrics.interval`
//!   and at once when their table list changes.
//!
//! Each service has its own budget ([`Budgets`]: DynamoDB for polls, tag
//! reads and refreshes, Kinesis for stream checks, CloudWatch for CDC
//! reads), and the queue one lane per budget, each with up to
//! `concurrency` items in flight: work waiting for one service's tokens
//! never holds up another's. Every kind shares the rest: each item takes
//! its requests from its budget (through [`aws::call`], which counts every
//! attempt with the budget's [`ScopeMeter`]), so a scope never exceeds a
//! service's rate however much work it has (when it cannot do it all within
//! the intervals, the cycle stretches, and the scope warns once, naming the
//! key to raise); every interval is jittered by the one [`jittered`]; and
//! shutdown, panics and aborted work are handled the same way for all.
//!
//! - New tables (at start, after a reload or a discovery refresh) are spread
//!   over their first cycle at the rate the DynamoDB budget has to spare
//!   (all of it at start, so the first cycle takes about tables ÷ rate,
//!   and never a burst above the rate); tables that stay keep their place
//!   in the schedule, and so do the refreshes, reads and tag reads a reload
//!   keeps. A new table's first tag read comes with its first poll.
//! - After a poll, the table is due again one `poll_interval` (±10 %
//!   jitter) after that poll started; the other kinds likewise.
//! - Scopes are independent: a hung or throttled region only slows its own
//!   work.
//!
//! On shutdown the runner starts nothing more and closes its budgets, so
//! work waiting for a token ends at once (it was never started: it is not
//! aborted, and nothing is recorded for it); calls in flight finish (each
//! is bounded by its timeout) unless the grace period runs out first, and
//! the runner returns how many it aborted then.
//!
//! Each item runs as a task of the runner's `JoinSet`. One that panics is
//! logged at error, counted as a restart of its task (`poll` for table
//! polls, tag reads and stream checks, `discovery`, `cdc`), and goes back
//! in the queue one interval on (at most [`MAX_BACKOFF`]); the runner
//! itself is supervised by the fleet ([`crate::poll::supervise`]).

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::budget::{Budget, Meter, GUARD};
use crate::aws::{
    self, CallPolicy, CloudWatchApi, Destination, DynamoDbApi, KinesisApi, PollError, StreamSummary,
};
use crate::config::TableRef;
use crate::exposition::metrics::Telemetry;
use crate::poll::cdc::{CdcJob, CdcReader, Listed};
use crate::poll::discovery::{self, DiscoveryJob, Refresh};
use crate::poll::supervise::{panic_message, MAX_BACKOFF};
use crate::poll::tags::{self, TableRules};
use crate::state::store::Store;
use crate::state::{unix_now, Name, ScopeKey, Service, StreamKey, TableKey};

/// Share of an interval by which each one is randomly stretched or
/// shortened.
const JITTER: f64 = 0.1;

/// The share of what the tables already in a scope leave of the DynamoDB
/// rate at which new ones are spread: the newcomers stay together in the
/// cycles that follow, so together with the others they must fit the
/// budget with room to spare.
const BUSY_FIRST_CYCLE_SHARE: f64 = 0.75;

/// The least share of the DynamoDB rate new tables are spread at, however
/// busy the scope already is.
const MIN_FIRST_CYCLE_SHARE: f64 = 0.1;

/// One table to poll, with the client that polls it.
#[derive(Debug)]
pub struct PollJob<C> {
    pub key: TableKey,
    pub table: TableRef,
    pub client: Arc<C>,
    pub interval: Duration,
    pub policy: CallPolicy,
    /// What the table's target expects of it and which tags it exports.
    pub rules: Arc<TableRules>,
}

/// A scope's tables as the fleet hands them to its runner. Each job is
/// shared between that list and the runner's slot, and with the call in
/// flight, rather than copied into each.
pub type Jobs<C> = Vec<Arc<PollJob<C>>>;

/// Everything a scope does, as the fleet hands it to the scope's runner.
#[derive(Debug)]
pub struct ScopeWork<C> {
    pub tables: Jobs<C>,
    /// One per discovering target of the scope, by key.
    pub discoveries: Vec<Arc<DiscoveryJob<C>>>,
    /// One per target of the scope with `cdc_metrics`, by key.
    pub cdc: Vec<Arc<CdcJob<C>>>,
}

impl<C> Default for ScopeWork<C> {
    fn default() -> Self {
        ScopeWork {
            tables: Vec::new(),
            discoveries: Vec::new(),
            cdc: Vec::new(),
        }
    }
}

impl<C> Clone for ScopeWork<C> {
    fn clone(&self) -> Self {
        ScopeWork {
            tables: self.tables.clone(),
            discoveries: self.discoveries.clone(),
            cdc: self.cdc.clone(),
        }
    }
}

/// A scope's budgets, one per service it calls.
#[derive(Debug, Clone)]
pub struct Budgets {
    /// Polls, tag reads and discovery (`max_requests_per_second`).
    pub dynamodb: Arc<Budget>,
    /// Stream checks (`kinesis_max_requests_per_second`).
    pub kinesis: Arc<Budget>,
    /// CDC reads (`cloudwatch_max_requests_per_second`).
    pub cloudwatch: Arc<Budget>,
}

impl Budgets {
    fn of(&self, lane: Lane) -> &Arc<Budget> {
        match lane {
            Lane::DynamoDb => &self.dynamodb,
            Lane::Kinesis => &self.kinesis,
            Lane::CloudWatch => &self.cloudwatch,
        }
    }

    fn close(&self) {
        for lane in LANES {
            self.of(lane).close();
        }
    }
}

/// Counts every request a scope's budget lets go into the store
/// (`dynamodb_kinesis_aws_requests_total`, and GetMetricData's metrics in
/// `dynamodb_kinesis_cloudwatch_metrics_requested_total`). Once the scope
/// stops it counts nothing more: its series are gone, and counting would
/// bring them back.
pub struct ScopeMeter {
    pub store: Arc<Store>,
    pub scope: ScopeKey,
    pub service: Service,
    pub stopped: CancellationToken,
}

impl Meter for ScopeMeter {
    fn attempt(&self, operation: &'static str, metrics: u64) {
        if self.stopped.is_cancelled() {
            return;
        }
        self.store.update_scope(&self.scope, |scope| {
            scope.count_request(self.service, operation);
            if metrics > 0 {
                scope.count_metrics_requested(metrics);
            }
        });
    }
}

/// What a runner tells the fleet.
#[derive(Debug)]
pub enum ScopeEvent {
    /// A discovery refresh ended (not when shutdown cut it short).
    Discovered {
        scope: ScopeKey,
        key: Name,
        outcome: Result<Refresh, PollError>,
    },
}

/// What a scope runner shares with the rest of the exporter.
pub struct ScopeRunner {
    pub key: ScopeKey,
    pub budgets: Budgets,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// Work items in flight at most, per service.
    pub concurrency: usize,
    /// How long work in flight may take to finish on shutdown.
    pub grace: Duration,
    /// Where discovery outcomes go (the fleet).
    pub events: mpsc::UnboundedSender<ScopeEvent>,
}

struct Slot<C> {
    job: Arc<PollJob<C>>,
    due: Instant,
    last_start: Option<Instant>,
    running: bool,
    /// Streams of this table's working destinations, as of its last poll:
    /// sorted, without duplicates. A `Vec`, not a set: it holds one or two
    /// names, and an empty B-tree node per table costs hundreds of bytes at
    /// 10,000 tables.
    streams: Vec<Name>,
}

/// A table's tag reads, for tables whose target reads tags.
struct TagSlot {
    due: Instant,
    running: bool,
    /// The tags the rules use, from the last successful read.
    kept: Option<Vec<(String, String)>>,
    /// The expectation last given to the store.
    expected: Option<bool>,
}

/// A stream to cross-check, and which tables' destinations name it.
struct StreamSlot {
    due: Instant,
    running: bool,
    /// Usually one (a `Vec` for the reason `Slot::streams` is one).
    tables: Vec<TableKey>,
}

/// A discovery refresh or a CDC read in the schedule.
struct WorkSlot<J> {
    job: Arc<J>,
    due: Instant,
    running: bool,
    /// The job changed while it ran: due again as soon as it ends.
    again: bool,
}

/// A CDC read's slot, with what its rounds keep.
struct CdcSlot<C> {
    work: WorkSlot<CdcJob<C>>,
    listed: Option<Listed>,
    /// Whether its cost was logged (the first round does).
    estimated: bool,
}

/// What is next in the queue.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Table(TableKey),
    Tags(TableKey),
    Stream(Name),
    Discovery(Name),
    Cdc(Name),
}

/// The service (and so the budget and the lane) a work item calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    DynamoDb,
    Kinesis,
    CloudWatch,
}

const LANES: [Lane; 3] = [Lane::DynamoDb, Lane::Kinesis, Lane::CloudWatch];

impl Lane {
    fn index(self) -> usize {
        self as usize
    }

    fn service(self) -> Service {
        match self {
            Lane::DynamoDb => Service::DynamoDb,
            Lane::Kinesis => Service::Kinesis,
            Lane::CloudWatch => Service::CloudWatch,
        }
    }
}

impl Due {
    /// The task a panic of this work is counted under.
    fn task(&self) -> &'static str {
        match self {
            Due::Table(_) | Due::Tags(_) | Due::Stream(_) => "poll",
            Due::Discovery(_) => "discovery",
            Due::Cdc(_) => "cdc",
        }
    }

    fn lane(&self) -> Lane {
        match self {
            Due::Table(_) | Due::Tags(_) | Due::Discovery(_) => Lane::DynamoDb,
            Due::Stream(_) => Lane::Kinesis,
            Due::Cdc(_) => Lane::CloudWatch,
        }
    }
}

/// The scope's due work: one queue in one lane per service budget, each
/// lane ordered by due time and with its own count of items in flight.
#[derive(Default)]
struct Queue {
    lanes: [BTreeSet<(Instant, Due)>; 3],
    busy: [usize; 3],
}

impl Queue {
    fn insert(&mut self, at: Instant, due: Due) {
        self.lanes[due.lane().index()].insert((at, due));
    }

    fn remove(&mut self, at: Instant, due: Due) {
        self.lanes[due.lane().index()].remove(&(at, due));
    }

    /// When the next item may start: the earliest due time of a lane with
    /// fewer than `limit` items in flight.
    fn next(&self, limit: usize) -> Option<Instant> {
        (LANES.iter())
            .filter(|lane| self.busy[lane.index()] < limit)
            .filter_map(|lane| self.lanes[lane.index()].first().map(|(at, _)| *at))
            .min()
    }

    /// Take the earliest item due by `now` of a lane with room.
    fn pop(&mut self, limit: usize, now: Instant) -> Option<Due> {
        let lane = (LANES.iter())
            .filter(|lane| self.busy[lane.index()] < limit)
            .filter_map(|lane| {
                let (at, _) = self.lanes[lane.index()].first()?;
                (*at <= now).then_some((*at, *lane))
            })
            .min_by_key(|(at, _)| *at)?
            .1;
        self.lanes[lane.index()].pop_first().map(|(_, due)| due)
    }
}

/// A finished work item and when it started.
enum Finished {
    Table(TableKey, Instant, Result<Vec<Destination>, PollError>),
    Tags(TableKey, Instant, Result<Vec<(String, String)>, PollError>),
    Stream(Name, Instant, Result<StreamSummary, PollError>),
    Discovery(Name, Instant, Result<Refresh, PollError>),
    Cdc(Name, Instant, Option<Listed>),
}

type Call = Pin<Box<dyn Future<Output = Finished> + Send>>;

/// The runner's own state while it runs.
struct Running<C> {
    tables: HashMap<TableKey, Slot<C>>,
    tags: HashMap<TableKey, TagSlot>,
    streams: HashMap<Name, StreamSlot>,
    discoveries: HashMap<Name, WorkSlot<DiscoveryJob<C>>>,
    cdc: HashMap<Name, CdcSlot<C>>,
    queue: Queue,
    /// The shortest poll interval among `tables`, kept by
    /// [`Running::recompute_cycle`] whenever they change: read at every
    /// poll, too often to walk thousands of tables each time.
    cycle: Duration,
    warned_stretch: bool,
    warned_streams: bool,
    /// Shutting down: work that ends records its outcome, but the scope's
    /// own state is left alone (a scope a reload removed would come back).
    draining: bool,
}

impl<C> Running<C> {
    fn new() -> Self {
        Running {
            tables: HashMap::new(),
            tags: HashMap::new(),
            streams: HashMap::new(),
            discoveries: HashMap::new(),
            cdc: HashMap::new(),
            queue: Queue::default(),
            cycle: Duration::ZERO,
            warned_stretch: false,
            warned_streams: false,
            draining: false,
        }
    }

    /// The scope's cycle: the shortest poll interval among its tables.
    fn scope_interval(&self) -> Duration {
        self.cycle
    }

    /// Work out [`Running::scope_interval`] again, after the tables changed.
    fn recompute_cycle(&mut self) {
        self.cycle = (self.tables.values())
            .map(|s| s.job.interval)
            .min()
            .unwrap_or_default();
    }

    /// How often `due`'s work comes round; `None` once it is gone.
    fn interval(&self, due: &Due) -> Option<Duration> {
        match due {
            Due::Table(key) => self.tables.get(key).map(|s| s.job.interval),
            Due::Tags(key) => (self.tags.get(key))
                .and(self.tables.get(key))
                .map(|s| s.job.rules.target.tags_refresh_interval),
            Due::Stream(arn) => self.streams.get(arn).map(|_| self.scope_interval()),
            Due::Discovery(key) => {
                (self.discoveries.get(key)).map(|s| s.job.filters.refresh_interval)
            }
            Due::Cdc(key) => self.cdc.get(key).map(|s| s.work.job.interval),
        }
    }

    /// Mark `due`'s work as no longer running and put it back in the queue
    /// at `at`. Work that is gone stays gone.
    fn requeue(&mut self, due: Due, at: Instant) {
        let slot = match &due {
            Due::Table(key) => self
                .tables
                .get_mut(key)
                .map(|s| (&mut s.due, &mut s.running)),
            Due::Tags(key) => self.tags.get_mut(key).map(|s| (&mut s.due, &mut s.running)),
            Due::Stream(arn) => self
                .streams
                .get_mut(arn)
                .map(|s| (&mut s.due, &mut s.running)),
            Due::Discovery(key) => {
                (self.discoveries.get_mut(key)).map(|s| (&mut s.due, &mut s.running))
            }
            Due::Cdc(key) => {
                (self.cdc.get_mut(key)).map(|s| (&mut s.work.due, &mut s.work.running))
            }
        };
        if let Some((slot_due, running)) = slot {
            *running = false;
            *slot_due = at;
            self.queue.insert(at, due);
        }
    }
}

impl ScopeRunner {
    /// Do the work `work` holds (and whatever it is changed to), and
    /// cross-check the streams the tables' working destinations name, until
    /// `shutdown` is cancelled or the sender is dropped. Returns the number
    /// of calls aborted at the end.
    pub async fn run<C: DynamoDbApi + KinesisApi + CloudWatchApi>(
        self,
        mut work: watch::Receiver<ScopeWork<C>>,
        shutdown: CancellationToken,
    ) -> usize {
        let mut state = Running::new();
        for task in ["poll", "discovery", "cdc"] {
            self.telemetry.supervise_task(task);
        }
        let limit = self.concurrency.max(1);
        let mut running: JoinSet<Finished> = JoinSet::new();
        // What each item in flight is for: a task that panics says nothing
        // else, and its work must go back in the queue.
        let mut in_flight: HashMap<Id, Due> = HashMap::new();
        let initial = work.borrow_and_update().clone();
        self.merge(initial, &mut state);
        loop {
            let next = state.queue.next(limit);
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    self.joined(joined, &mut in_flight, &mut state);
                }
                changed = work.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let update = work.borrow_and_update().clone();
                    self.merge(update, &mut state);
                }
                () = sleep_until_some(next) => {
                    if let Some((due, call)) = self.start_next(&mut state, limit) {
                        state.queue.busy[due.lane().index()] += 1;
                        in_flight.insert(running.spawn(call).id(), due);
                    }
                }
            }
        }
        // Work waiting for a token ends now, as not made.
        self.budgets.close();
        state.draining = true;
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(joined) = running.join_next_with_id().await {
                self.joined(joined, &mut in_flight, &mut state);
            }
        })
        .await;
        if drained.is_ok() {
            return 0;
        }
        let left = running.len();
        tracing::warn!(account_id = %self.key.account_id, region = %self.key.region, calls = left,
            "calls still running after the grace period; aborting them");
        running.shutdown().await;
        left
    }

    /// Record work that ended: its outcome, or, when it panicked, the
    /// panic (logged, counted as a restart of its task) and its work back
    /// in the queue one interval on (at most [`MAX_BACKOFF`]).
    fn joined<C>(
        &self,
        joined: Result<(Id, Finished), JoinError>,
        in_flight: &mut HashMap<Id, Due>,
        state: &mut Running<C>,
    ) {
        let id = match &joined {
            Ok((id, _)) => *id,
            Err(err) => err.id(),
        };
        let Some(due) = in_flight.remove(&id) else {
            return;
        };
        state.queue.busy[due.lane().index()] -= 1;
        let err = match joined {
            Ok((_, finished)) => {
                self.finish(finished, state);
                return;
            }
            Err(err) => err,
        };
        if err.is_panic() {
            let task = due.task();
            self.telemetry.record_task_restart(task);
            tracing::error!(task, account_id = %self.key.account_id, region = %self.key.region, work = ?due,
                panic = %panic_message(err.into_panic()),
                "background work panicked; it is scheduled again one interval on (dynamodb_kinesis_exporter_task_restarts_total)");
        }
        if let Some(interval) = state.interval(&due) {
            let at = Instant::now() + jittered(interval.min(MAX_BACKOFF), fastrand::f64());
            state.requeue(due, at);
        }
    }

    /// Take the first due item off the queue (of a lane with room) and
    /// start its work.
    fn start_next<C: DynamoDbApi + KinesisApi + CloudWatchApi>(
        &self,
        state: &mut Running<C>,
        limit: usize,
    ) -> Option<(Due, Call)> {
        let due = state.queue.pop(limit, Instant::now())?;
        let budget = Arc::clone(self.budgets.of(due.lane()));
        let what = due.clone();
        let call: Call = match due {
            Due::Table(key) => {
                let slot = state.tables.get_mut(&key)?;
                slot.running = true;
                let job = Arc::clone(&slot.job);
                Box::pin(async move {
                    let started = Instant::now();
                    let outcome =
                        aws::call(&budget, job.policy, aws::DESCRIBE_DESTINATIONS, || {
                            job.client.describe(&job.table)
                        })
                        .await;
                    Finished::Table(job.key.clone(), started, outcome)
                })
            }
            Due::Tags(key) => {
                let job = state.tables.get(&key).map(|s| Arc::clone(&s.job))?;
                let slot = state.tags.get_mut(&key)?;
                slot.running = true;
                Box::pin(async move {
                    let started = Instant::now();
                    let outcome = tags::read(&*job.client, &budget, job.policy, &key).await;
                    Finished::Tags(key, started, outcome)
                })
            }
            Due::Stream(arn) => {
                let slot = state.streams.get_mut(&arn)?;
                // Any table naming the stream lends its client: they share
                // the scope's account and region.
                let job = slot
                    .tables
                    .iter()
                    .find_map(|t| state.tables.get(t))
                    .map(|s| Arc::clone(&s.job))?;
                slot.running = true;
                Box::pin(async move {
                    let started = Instant::now();
                    let outcome = aws::call(&budget, job.policy, aws::DESCRIBE_STREAM, || {
                        job.client.describe_stream(&arn)
                    })
                    .await;
                    Finished::Stream(arn, started, outcome)
                })
            }
            Due::Discovery(key) => {
                let slot = state.discoveries.get_mut(&key)?;
                slot.running = true;
                slot.again = false;
                let job = Arc::clone(&slot.job);
                let scope = self.key.clone();
                Box::pin(async move {
                    let started = Instant::now();
                    let outcome = discovery::discover(
                        &*job.client,
                        &budget,
                        job.policy,
                        &job.filters,
                        &scope,
                        &job.shard,
                    )
                    .await;
                    Finished::Discovery(key, started, outcome)
                })
            }
            Due::Cdc(key) => {
                let slot = state.cdc.get_mut(&key)?;
                slot.work.running = true;
                slot.work.again = false;
                let job = Arc::clone(&slot.work.job);
                let listed = slot.listed.clone();
                let estimate = !std::mem::replace(&mut slot.estimated, true);
                let reader = CdcReader {
                    scope: self.key.clone(),
                    client: Arc::clone(&job.client),
                    budget,
                    policy: job.policy,
                    store: Arc::clone(&self.store),
                    interval: job.interval,
                    refresh: job.refresh,
                };
                Box::pin(async move {
                    let started = Instant::now();
                    let listed = reader.round(&job.tables, listed, estimate).await;
                    Finished::Cdc(key, started, listed)
                })
            }
        };
        Some((what, call))
    }

    /// Make the schedule hold exactly `work`: tables, refreshes and reads
    /// that stay keep their due time, new tables are spread over their
    /// first cycle, new refreshes and reads are due at once.
    fn merge<C>(&self, work: ScopeWork<C>, state: &mut Running<C>) {
        self.merge_tables(work.tables, state);
        let now = Instant::now();
        let wanted: HashSet<Name> = work.discoveries.iter().map(|j| j.key.clone()).collect();
        state.discoveries.retain(|key, slot| {
            let keep = wanted.contains(key);
            if !keep {
                state.queue.remove(slot.due, Due::Discovery(key.clone()));
            }
            keep
        });
        for job in work.discoveries {
            match state.discoveries.get_mut(&job.key) {
                Some(slot) => slot.job = job,
                None => {
                    state.queue.insert(now, Due::Discovery(job.key.clone()));
                    state
                        .discoveries
                        .insert(job.key.clone(), fresh_slot(job, now));
                }
            }
        }
        let wanted: HashSet<Name> = work.cdc.iter().map(|j| j.key.clone()).collect();
        state.cdc.retain(|key, slot| {
            let keep = wanted.contains(key);
            if !keep {
                state.queue.remove(slot.work.due, Due::Cdc(key.clone()));
            }
            keep
        });
        for job in work.cdc {
            let key = job.key.clone();
            let Some(slot) = state.cdc.get_mut(&key) else {
                state.queue.insert(now, Due::Cdc(key.clone()));
                let slot = CdcSlot {
                    work: fresh_slot(job, now),
                    listed: None,
                    estimated: false,
                };
                state.cdc.insert(key, slot);
                continue;
            };
            let changed = slot.work.job.tables != job.tables;
            slot.work.job = job;
            // New tables do not wait a whole interval for their values.
            if changed && slot.work.running {
                slot.work.again = true;
            } else if changed && slot.work.due > now {
                state.queue.remove(slot.work.due, Due::Cdc(key.clone()));
                slot.work.due = now;
                state.queue.insert(now, Due::Cdc(key));
            }
        }
        self.store.update_scope(&self.key, |scope| {
            for lane in LANES {
                let budget = self.budgets.of(lane);
                scope.set_budget(lane.service(), budget.rate(), budget.throttled_total());
            }
        });
    }

    /// The table part of [`ScopeRunner::merge`], tag reads included.
    fn merge_tables<C>(&self, jobs: Jobs<C>, state: &mut Running<C>) {
        let wanted: HashSet<TableKey> = jobs.iter().map(|j| j.key.clone()).collect();
        let gone: Vec<TableKey> = state
            .tables
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(slot) = state.tables.remove(&key) {
                state.queue.remove(slot.due, Due::Table(key.clone()));
                self.set_streams(&key, Vec::new(), slot.streams, state);
            }
            if let Some(slot) = state.tags.remove(&key) {
                state.queue.remove(slot.due, Due::Tags(key));
            }
        }
        let now = Instant::now();
        let mut fresh: Jobs<C> = Vec::new();
        for job in jobs {
            match state.tables.get_mut(&job.key) {
                Some(slot) => {
                    let changed = !Arc::ptr_eq(&slot.job.rules, &job.rules);
                    let due = slot.due;
                    slot.job = Arc::clone(&job);
                    if changed {
                        self.apply_rules(&job, due, state);
                    }
                }
                None => fresh.push(job),
            }
        }
        // New tables are spread at the rate the budget has to spare: all of
        // it at start (so the first cycle takes tables ÷ rate), else part of
        // what the tables already in the schedule leave of it; a first tag
        // read counts as a second call.
        let rate = self.budgets.dynamodb.max_rate();
        let effective = rate / (1.0 + GUARD);
        let load: f64 = (state.tables.values())
            .map(|s| {
                let mut per_second = 1.0 / s.job.interval.as_secs_f64().max(1e-3);
                if s.job.rules.reads_tags() {
                    per_second += 1.0
                        / s.job
                            .rules
                            .target
                            .tags_refresh_interval
                            .as_secs_f64()
                            .max(1e-3);
                }
                per_second
            })
            .sum();
        let spare = match load > 0.0 {
            false => effective,
            true => {
                ((effective - load) * BUSY_FIRST_CYCLE_SHARE).max(effective * MIN_FIRST_CYCLE_SHARE)
            }
        };
        let calls: f64 = (fresh.iter())
            .map(|j| if j.rules.reads_tags() { 2.0 } else { 1.0 })
            .sum();
        let mut offset = 0.0;
        for job in fresh {
            let share = if job.rules.reads_tags() { 2.0 } else { 1.0 };
            let window = job.interval.min(Duration::from_secs_f64(calls / spare));
            let due = now + window.mul_f64(offset / calls);
            offset += share;
            state.queue.insert(due, Due::Table(job.key.clone()));
            state.tables.insert(
                job.key.clone(),
                Slot {
                    job: Arc::clone(&job),
                    due,
                    last_start: None,
                    running: false,
                    streams: Vec::new(),
                },
            );
            self.apply_rules(&job, due, state);
        }
        state.recompute_cycle();
        let tables = state.tables.len();
        let interval = state.scope_interval();
        let cycle = tables as f64 / rate;
        if !state.warned_stretch && cycle > interval.as_secs_f64() && tables > 0 {
            state.warned_stretch = true;
            tracing::warn!(account_id = %self.key.account_id, region = %self.key.region, tables,
                poll_interval = ?interval, max_requests_per_second = rate,
                cycle_seconds = cycle,
                "the DynamoDB request budget cannot poll every table of this scope within poll_interval; each cycle stretches (see dynamodb_kinesis_scope_effective_poll_interval_seconds): raise max_requests_per_second, or poll_interval");
        }
        self.store.update_scope(&self.key, |scope| {
            scope.tables = tables;
            scope.poll_interval = interval.as_secs_f64();
        });
    }

    /// Apply a table's rules (new, or changed by a reload): whether its
    /// tags series waits for a read, its expectation, and its tag reads
    /// (the first due with `due`, its next poll).
    fn apply_rules<C>(&self, job: &PollJob<C>, due: Instant, state: &mut Running<C>) {
        let rules = &job.rules;
        self.store.set_exports_tags(&job.key, rules.exports_tags());
        if !rules.reads_tags() {
            if let Some(slot) = state.tags.remove(&job.key) {
                state.queue.remove(slot.due, Due::Tags(job.key.clone()));
            }
            let expected = rules.expected(&job.table, None);
            self.store
                .set_expectation(&job.key, expected, rules.stream.clone());
            return;
        }
        let slot = state
            .tags
            .entry(job.key.clone())
            .or_insert_with(|| TagSlot {
                due,
                running: false,
                kept: None,
                expected: None,
            });
        // Decided without the tags, or by the last read: else, until the
        // read due now, the last answer stands.
        let expected = rules
            .expected(&job.table, None)
            .or_else(|| {
                rules
                    .expected(&job.table, slot.kept.as_deref())
                    .filter(|_| slot.kept.is_some())
            })
            .or(slot.expected);
        slot.expected = expected;
        if !slot.running && slot.due > due {
            state.queue.remove(slot.due, Due::Tags(job.key.clone()));
            slot.due = due;
        }
        if !slot.running {
            state.queue.insert(slot.due, Due::Tags(job.key.clone()));
        }
        self.store
            .set_expectation(&job.key, expected, rules.stream.clone());
    }

    /// Point `table`'s stream references from `old` to `new`: streams no
    /// table names any more go (with their series), new ones are due now.
    fn set_streams<C>(
        &self,
        table: &TableKey,
        new: Vec<Name>,
        old: Vec<Name>,
        state: &mut Running<C>,
    ) {
        for arn in old.iter().filter(|arn| !new.contains(arn)) {
            let Some(slot) = state.streams.get_mut(arn) else {
                continue;
            };
            slot.tables.retain(|t| t != table);
            if slot.tables.is_empty() {
                state.queue.remove(slot.due, Due::Stream(arn.clone()));
                state.streams.remove(arn);
                self.store.remove_stream(&self.stream_key(arn));
            }
        }
        let now = Instant::now();
        for arn in new.iter().filter(|arn| !old.contains(arn)) {
            let slot = state.streams.entry(arn.clone()).or_insert_with(|| {
                state.queue.insert(now, Due::Stream(arn.clone()));
                StreamSlot {
                    due: now,
                    running: false,
                    // Room for the usual one table, not a growing `Vec`'s four.
                    tables: Vec::with_capacity(1),
                }
            });
            if !slot.tables.contains(table) {
                slot.tables.push(table.clone());
            }
        }
        if let Some(slot) = state.tables.get_mut(table) {
            slot.streams = new;
        }
        let streams = state.streams.len();
        let rate = self.budgets.kinesis.max_rate();
        let interval = state.scope_interval();
        let cycle = streams as f64 / rate;
        if !state.warned_streams && cycle > interval.as_secs_f64() && streams > 0 {
            state.warned_streams = true;
            tracing::warn!(account_id = %self.key.account_id, region = %self.key.region, streams,
                poll_interval = ?interval, kinesis_max_requests_per_second = rate,
                cycle_seconds = cycle,
                "the Kinesis request budget cannot check every stream of this scope within poll_interval; the stream checks' cycle stretches: raise kinesis_max_requests_per_second (DescribeStreamSummary allows 20 a second per account)");
        }
    }

    fn stream_key(&self, arn: &Name) -> StreamKey {
        StreamKey {
            account_id: self.key.account_id.clone(),
            region: self.key.region.clone(),
            stream_arn: arn.clone(),
        }
    }

    /// Record a service's budget in the scope's state (not while draining).
    fn record_budget<C>(&self, lane: Lane, state: &Running<C>) {
        if state.draining {
            return;
        }
        let budget = self.budgets.of(lane);
        self.store.update_scope(&self.key, |scope| {
            scope.set_budget(lane.service(), budget.rate(), budget.throttled_total());
        });
    }

    /// Record finished work and put it back in the queue.
    fn finish<C>(&self, finished: Finished, state: &mut Running<C>) {
        let now = unix_now();
        let (account, region) = (&self.key.account_id, &self.key.region);
        match finished {
            // Shutdown came before the call was made: nothing to record.
            Finished::Table(key, _, Err(PollError::Cancelled)) => {
                state.requeue(Due::Table(key), Instant::now());
            }
            Finished::Tags(key, _, Err(PollError::Cancelled)) => {
                state.requeue(Due::Tags(key), Instant::now());
            }
            Finished::Stream(arn, _, Err(PollError::Cancelled)) => {
                state.requeue(Due::Stream(arn), Instant::now());
            }
            Finished::Discovery(key, _, Err(PollError::Cancelled)) => {
                state.requeue(Due::Discovery(key), Instant::now());
            }
            Finished::Table(key, started, outcome) => {
                if let Err(err) = &outcome {
                    aws::warn_unknown_code(account, region, "table poll", err);
                }
                self.telemetry
                    .observe_poll(&self.key, started.elapsed().as_secs_f64());
                let checked = self.store.record(&key, &outcome, now);
                let streams = match &outcome {
                    // A missing table has no destinations left.
                    Ok(_) | Err(PollError::NotFound(_)) => Some(checked),
                    // Other failures keep the last known destinations.
                    Err(_) => None,
                };
                let mut gap = None;
                if let Some(slot) = state.tables.get_mut(&key) {
                    gap = slot.last_start.map(|last| (started - last).as_secs_f64());
                    slot.last_start = Some(started);
                    let at = started + jittered(slot.job.interval, fastrand::f64());
                    if let Some(new) = streams {
                        let old = std::mem::take(&mut slot.streams);
                        self.set_streams(&key, new, old, state);
                    }
                    state.requeue(Due::Table(key), at);
                }
                let budget = &self.budgets.dynamodb;
                if !state.draining {
                    self.store.update_scope(&self.key, |scope| {
                        if let Some(gap) = gap {
                            scope.record_gap(gap);
                        }
                        scope.set_budget(
                            Service::DynamoDb,
                            budget.rate(),
                            budget.throttled_total(),
                        );
                    });
                }
            }
            Finished::Tags(key, started, outcome) => {
                if let Err(err) = &outcome {
                    aws::warn_unknown_code(account, region, "tag read", err);
                }
                let interval = {
                    let (Some(table), Some(slot)) =
                        (state.tables.get(&key), state.tags.get_mut(&key))
                    else {
                        return;
                    };
                    let rules = &table.job.rules;
                    match outcome {
                        Ok(all) => {
                            let kept = rules.kept(all);
                            self.store.record_tags(&key, Ok(rules.export(&kept)), now);
                            slot.expected = rules.expected(&table.job.table, Some(&kept));
                            slot.kept = Some(kept);
                            self.store
                                .set_expectation(&key, slot.expected, rules.stream.clone());
                        }
                        Err(err) => self.store.record_tags(&key, Err(&err), now),
                    }
                    rules.target.tags_refresh_interval
                };
                state.requeue(
                    Due::Tags(key),
                    started + jittered(interval, fastrand::f64()),
                );
                self.record_budget(Lane::DynamoDb, state);
            }
            Finished::Stream(arn, started, outcome) => {
                if let Err(err) = &outcome {
                    aws::warn_unknown_code(account, region, "stream check", err);
                }
                // Once a cycle, however many tables name the stream. Their
                // own budget paces them: when it cannot check every stream
                // in a cycle, the checks queue and their cycle stretches.
                let interval = state.scope_interval();
                // A stream no table names any more is not recorded again.
                if state.streams.contains_key(&arn) {
                    self.store
                        .record_stream(&self.stream_key(&arn), &outcome, now);
                    state.requeue(
                        Due::Stream(arn),
                        started + jittered(interval, fastrand::f64()),
                    );
                }
                self.record_budget(Lane::Kinesis, state);
            }
            Finished::Discovery(key, started, outcome) => {
                if let Some(slot) = state.discoveries.get(&key) {
                    let interval = slot.job.filters.refresh_interval;
                    let at = if slot.again {
                        Instant::now()
                    } else {
                        started + jittered(interval, fastrand::f64())
                    };
                    state.requeue(Due::Discovery(key.clone()), at);
                }
                self.record_budget(Lane::DynamoDb, state);
                // The fleet may have no use for it any more (a reload); it
                // decides.
                let _ = self.events.send(ScopeEvent::Discovered {
                    scope: self.key.clone(),
                    key,
                    outcome,
                });
            }
            Finished::Cdc(key, started, listed) => {
                if let Some(slot) = state.cdc.get_mut(&key) {
                    slot.listed = listed;
                    let at = if slot.work.again {
                        Instant::now()
                    } else {
                        started + jittered(slot.work.job.interval, fastrand::f64())
                    };
                    state.requeue(Due::Cdc(key), at);
                }
                self.record_budget(Lane::CloudWatch, state);
            }
        }
    }
}

/// A refresh or read slot, due at `now`.
fn fresh_slot<J>(job: Arc<J>, now: Instant) -> WorkSlot<J> {
    WorkSlot {
        job,
        due: now,
        running: false,
        again: false,
    }
}

/// Sleep until `at`, or forever for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `interval` scaled by a factor in [1 - 10 %, 1 + 10 %), from a uniform
/// `unit` in [0, 1): the one jitter of every schedule.
pub fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::budget::tests::max_in_window;
    use crate::aws::cloudwatch::{CdcSeries, Latest, Query};
    use crate::aws::Page;
    use crate::state::Shard;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A client backed by a map: per-table delay and failure, and counters.
    #[derive(Default)]
    struct FakeClient {
        delays: HashMap<String, Duration>,
        throttle: Mutex<bool>,
        /// Streams that are gone; every other stream is ACTIVE.
        deleted: Mutex<BTreeSet<String>>,
        /// Destinations by table; a table without an entry has one ACTIVE
        /// destination on a stream named after it.
        destinations: Mutex<HashMap<String, Vec<Destination>>>,
        stream_calls: Mutex<HashMap<String, Vec<Instant>>>,
        calls: Mutex<HashMap<String, Vec<Instant>>>,
        in_flight: AtomicUsize,
        max_in_flight: AtomicUsize,
        /// Tables whose next poll panics (once each).
        panic_once: Mutex<BTreeSet<String>>,
        /// The tables ListTables names (discovery) and ListMetrics has
        /// series of (CDC reads).
        listed: Mutex<Vec<String>>,
        /// Discovery's and CDC reads' calls, by operation.
        other_calls: Mutex<Vec<(&'static str, Instant)>>,
        /// Operations whose next call panics (once each).
        panic_next: Mutex<BTreeSet<&'static str>>,
        /// Tags by table (one a page); a table without an entry has none.
        tags: Mutex<HashMap<String, Vec<(String, String)>>>,
        /// Tables whose tag reads fail.
        tag_faults: Mutex<HashMap<String, PollError>>,
        /// Each table's tag reads (pages).
        tag_calls: Mutex<HashMap<String, Vec<Instant>>>,
    }

    impl FakeClient {
        fn calls(&self, table: &str) -> Vec<Instant> {
            self.calls
                .lock()
                .unwrap()
                .get(table)
                .cloned()
                .unwrap_or_default()
        }

        /// Table polls only, in order.
        fn table_calls(&self) -> Vec<Instant> {
            let mut all: Vec<Instant> = self
                .calls
                .lock()
                .unwrap()
                .values()
                .flatten()
                .copied()
                .collect();
            all.sort();
            all
        }

        /// Every call, table polls and stream checks alike, in order.
        fn all_calls(&self) -> Vec<Instant> {
            let mut all: Vec<Instant> = self
                .calls
                .lock()
                .unwrap()
                .values()
                .chain(self.stream_calls.lock().unwrap().values())
                .flatten()
                .copied()
                .collect();
            all.extend(self.other_calls.lock().unwrap().iter().map(|(_, at)| *at));
            all.sort();
            all
        }

        /// When each call of `operation` (discovery's, CDC reads') was made.
        fn calls_of(&self, operation: &str) -> Vec<Instant> {
            let calls = self.other_calls.lock().unwrap();
            calls
                .iter()
                .filter(|(op, _)| *op == operation)
                .map(|(_, at)| *at)
                .collect()
        }

        /// When each tag read (each page) of `table` was made.
        fn tag_reads(&self, table: &str) -> Vec<Instant> {
            let reads = self.tag_calls.lock().unwrap();
            reads.get(table).cloned().unwrap_or_default()
        }

        /// Log a call of `operation`, panicking if it was told to.
        fn other_call(&self, operation: &'static str) {
            self.other_calls
                .lock()
                .unwrap()
                .push((operation, Instant::now()));
            if self.panic_next.lock().unwrap().remove(operation) {
                panic!("a bug in the handling of {operation}");
            }
        }
    }

    fn active(stream_arn: &str) -> Destination {
        Destination {
            stream_arn: stream_arn.into(),
            status: "ACTIVE".into(),
            status_description: None,
            precision: None,
        }
    }

    impl KinesisApi for FakeClient {
        async fn describe_stream(&self, stream_arn: &str) -> Result<StreamSummary, PollError> {
            self.stream_calls
                .lock()
                .unwrap()
                .entry(stream_arn.to_string())
                .or_default()
                .push(Instant::now());
            if self.deleted.lock().unwrap().contains(stream_arn) {
                return Err(PollError::NotFound("gone".into()));
            }
            Ok(StreamSummary {
                name: stream_arn.rsplit('/').next().unwrap_or_default().into(),
                status: "ACTIVE".into(),
                open_shards: 1,
                mode: "PROVISIONED".into(),
                encryption: "NONE".into(),
                retention_hours: 24,
            })
        }
    }

    impl DynamoDbApi for FakeClient {
        async fn describe(&self, table: &TableRef) -> Result<Vec<Destination>, PollError> {
            self.calls
                .lock()
                .unwrap()
                .entry(table.name.to_string())
                .or_default()
                .push(Instant::now());
            if self.panic_once.lock().unwrap().remove(&*table.name) {
                panic!("a bug in the poll of {}", table.name);
            }
            let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_in_flight.fetch_max(now, Ordering::SeqCst);
            if let Some(delay) = self.delays.get(&*table.name) {
                tokio::time::sleep(*delay).await;
            }
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            if *self.throttle.lock().unwrap() {
                return Err(PollError::Service {
                    code: "ThrottlingException".into(),
                    message: "slow down".into(),
                });
            }
            if let Some(destinations) = self.destinations.lock().unwrap().get(&*table.name) {
                return Ok(destinations.clone());
            }
            Ok(vec![active(&format!(
                "arn:aws:kinesis:us-east-1:1:stream/{}",
                table.name
            ))])
        }

        async fn list_tables(&self, _start: Option<String>) -> Result<Page<String>, PollError> {
            self.other_call("ListTables");
            Ok(Page {
                items: self.listed.lock().unwrap().clone(),
                next: None,
            })
        }

        async fn list_tags(
            &self,
            arn: &str,
            token: Option<String>,
        ) -> Result<Page<(String, String)>, PollError> {
            let table = arn.rsplit('/').next().unwrap_or_default();
            self.other_call("ListTagsOfResource");
            (self.tag_calls.lock().unwrap())
                .entry(table.to_string())
                .or_default()
                .push(Instant::now());
            if let Some(err) = self.tag_faults.lock().unwrap().get(table) {
                return Err(err.clone());
            }
            let tags = self
                .tags
                .lock()
                .unwrap()
                .get(table)
                .cloned()
                .unwrap_or_default();
            let from: usize = token.map_or(0, |t| t.parse().unwrap());
            Ok(Page {
                items: tags.iter().skip(from).take(1).cloned().collect(),
                next: (from + 1 < tags.len()).then(|| (from + 1).to_string()),
            })
        }
    }

    impl CloudWatchApi for FakeClient {
        async fn list_cdc_series(
            &self,
            metric: &str,
            _token: Option<String>,
        ) -> Result<Page<CdcSeries>, PollError> {
            self.other_call("ListMetrics");
            let items = (self.listed.lock().unwrap().iter())
                .map(|table| CdcSeries {
                    metric: metric.into(),
                    table: table.clone(),
                    delegated_operation: "PutRecords".into(),
                })
                .collect();
            Ok(Page { items, next: None })
        }

        async fn latest_datapoints(
            &self,
            queries: &[Query],
            _start: f64,
            end: f64,
            _token: Option<String>,
        ) -> Result<Page<Latest>, PollError> {
            self.other_call("GetMetricData");
            let items = queries
                .iter()
                .map(|q| Latest {
                    id: q.id.clone(),
                    point: Some((3.0, end - 60.0)),
                })
                .collect();
            Ok(Page { items, next: None })
        }
    }

    const ACCOUNT: &str = "123456789012";

    fn scope() -> ScopeKey {
        ScopeKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
        }
    }

    fn job(
        client: &Arc<FakeClient>,
        name: &str,
        interval: u64,
        timeout: u64,
    ) -> Arc<PollJob<FakeClient>> {
        Arc::new(PollJob {
            key: TableKey {
                account_id: ACCOUNT.into(),
                region: "us-east-1".into(),
                table: name.into(),
            },
            table: TableRef {
                identifier: name.into(),
                name: name.into(),
                account_id: None,
                region: None,
                expect_streaming: None,
            },
            client: Arc::clone(client),
            interval: Duration::from_secs(interval),
            policy: CallPolicy {
                max_attempts: 1,
                timeout: Duration::from_secs(timeout),
            },
            rules: plain_rules(),
        })
    }

    /// The rules of a target that neither expects nor exports anything.
    fn plain_rules() -> Arc<TableRules> {
        rules_of("")
    }

    /// The rules of a target with `yaml` added to it.
    fn rules_of(yaml: &str) -> Arc<TableRules> {
        let text = format!("targets:\n  - region: us-east-1\n    tables: [orders]\n{yaml}");
        let target = crate::config::parse(&text, "t.yaml")
            .unwrap()
            .targets
            .remove(0);
        Arc::new(TableRules::new(Arc::new(target)))
    }

    struct Harness {
        store: Arc<Store>,
        budget: Arc<Budget>,
        telemetry: Arc<Telemetry>,
        work: watch::Sender<ScopeWork<FakeClient>>,
        events: mpsc::UnboundedReceiver<ScopeEvent>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<usize>,
    }

    fn start(jobs: Jobs<FakeClient>, rate: f64, concurrency: usize) -> Harness {
        start_work(
            ScopeWork {
                tables: jobs,
                ..ScopeWork::default()
            },
            rate,
            concurrency,
        )
    }

    fn start_work(work: ScopeWork<FakeClient>, rate: f64, concurrency: usize) -> Harness {
        let budgets = Budgets {
            dynamodb: Budget::new(rate, concurrency),
            kinesis: Budget::new(rate, concurrency),
            cloudwatch: Budget::new(rate, concurrency),
        };
        start_budgets(work, budgets, concurrency)
    }

    fn start_budgets(work: ScopeWork<FakeClient>, budgets: Budgets, concurrency: usize) -> Harness {
        let store = Arc::new(Store::new(work.tables.iter().map(|j| j.key.clone())));
        let budget = Arc::clone(&budgets.dynamodb);
        let telemetry = Arc::new(Telemetry::new(false));
        let (events, inbox) = mpsc::unbounded_channel();
        let runner = ScopeRunner {
            key: scope(),
            budgets,
            store: Arc::clone(&store),
            telemetry: Arc::clone(&telemetry),
            concurrency,
            grace: Duration::from_secs(30),
            events,
        };
        let (tx, rx) = watch::channel(work);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner.run(rx, shutdown.clone()));
        Harness {
            store,
            budget,
            telemetry,
            work: tx,
            events: inbox,
            shutdown,
            task,
        }
    }

    impl Harness {
        async fn stop(self) -> Arc<Store> {
            self.shutdown.cancel();
            assert_eq!(self.task.await.unwrap(), 0, "no poll should need aborting");
            self.store
        }

        /// Replace the tables (only).
        fn send_tables(&self, jobs: Jobs<FakeClient>) {
            self.work.send_modify(|work| work.tables = jobs);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn polls_at_start_then_every_interval_within_jitter() {
        let client = Arc::new(FakeClient::default());
        let start = Instant::now();
        let h = start_one(&client);
        tokio::time::sleep(Duration::from_secs(605)).await;
        h.stop().await;
        let calls = client.calls("orders");
        assert_eq!(calls[0], start, "a lone table is polled at once");
        // 605 s at 60 s ± 10 %: between 9 (gaps of 66 s) and 11 (54 s) more polls.
        assert!(
            (9..=11).contains(&(calls.len() - 1)),
            "{} polls",
            calls.len()
        );
        for pair in calls.windows(2) {
            let gap = pair[1] - pair[0];
            assert!(
                gap >= Duration::from_secs(54) && gap <= Duration::from_secs(66),
                "gap {gap:?}"
            );
        }
    }

    fn start_one(client: &Arc<FakeClient>) -> Harness {
        start(vec![job(client, "orders", 60, 10)], 10.0, 8)
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded_and_every_table_gets_polled() {
        let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        let mut fake = FakeClient::default();
        for name in &names {
            fake.delays.insert(name.clone(), Duration::from_secs(2));
        }
        let client = Arc::new(fake);
        let jobs = names.iter().map(|n| job(&client, n, 60, 10)).collect();
        let h = start(jobs, 1000.0, 3);
        tokio::time::sleep(Duration::from_secs(30)).await;
        let store = h.stop().await;
        assert_eq!(client.max_in_flight.load(Ordering::SeqCst), 3);
        assert_eq!(store.readiness(), (20, 20));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hanging_table_times_out_and_delays_no_other_table() {
        let mut fake = FakeClient::default();
        fake.delays
            .insert("stuck".into(), Duration::from_secs(3600));
        let client = Arc::new(fake);
        let h = start(
            vec![job(&client, "stuck", 10, 5), job(&client, "fine", 10, 5)],
            10.0,
            2,
        );
        tokio::time::sleep(Duration::from_secs(61)).await;
        let store = h.stop().await;
        // "fine" keeps its cadence: ~6 polls in 61 s at 10 s ± 10 %.
        assert!(
            client.calls("fine").len() >= 6,
            "{}",
            client.calls("fine").len()
        );
        let stuck = store
            .state(&TableKey {
                account_id: ACCOUNT.into(),
                region: "us-east-1".into(),
                table: "stuck".into(),
            })
            .unwrap();
        assert_eq!(stuck.last_poll_ok, Some(false));
        assert!(stuck.errors["timeout"] >= 3, "{:?}", stuck.errors);
    }

    fn budgets(dynamodb: f64, kinesis: f64, cloudwatch: f64) -> Budgets {
        Budgets {
            dynamodb: Budget::new(dynamodb, 8),
            kinesis: Budget::new(kinesis, 8),
            cloudwatch: Budget::new(cloudwatch, 8),
        }
    }

    /// The stream checks' start times.
    fn stream_checks(client: &FakeClient) -> Vec<Instant> {
        let calls = client.stream_calls.lock().unwrap();
        let mut all: Vec<Instant> = calls.values().flatten().copied().collect();
        all.sort();
        all
    }

    #[tokio::test(start_paused = true)]
    async fn each_service_keeps_to_its_own_budget_and_the_cycle_stretches() {
        // 40 tables every 4 s want 10 polls a second, and their 40 streams
        // 10 checks; DynamoDB's budget is 10, Kinesis's 5.
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..40).map(|i| format!("t{i:02}")).collect();
        let work = ScopeWork {
            tables: names.iter().map(|n| job(&client, n, 4, 5)).collect(),
            ..ScopeWork::default()
        };
        let h = start_budgets(work, budgets(10.0, 5.0, 5.0), 8);
        tokio::time::sleep(Duration::from_secs(120)).await;
        let store = h.stop().await;
        let (polls, checks) = (client.table_calls(), stream_checks(&client));
        assert!(max_in_window(&polls, Duration::from_secs(1)) <= 10);
        assert!(max_in_window(&checks, Duration::from_secs(1)) <= 5);
        // The polls have DynamoDB's budget to themselves (when the stream
        // checks drew on it too they got 5.8 a second): 10 a second less
        // the guard, about 1,150 in 120 s.
        assert!(polls.len() >= 1100, "{} polls", polls.len());
        assert!(checks.len() >= 550, "{} stream checks", checks.len());
        let scope = store.scope_state(&scope()).unwrap();
        let effective = scope.effective_interval.expect("tables were polled twice");
        assert!((4.0..=4.5).contains(&effective), "cycle: {effective} s");
        let rates: Vec<(Service, f64)> = (scope.budgets.iter())
            .map(|(service, budget)| (*service, budget.rate_limit))
            .collect();
        assert_eq!(
            rates,
            [
                (Service::DynamoDb, 10.0),
                (Service::Kinesis, 5.0),
                (Service::CloudWatch, 5.0)
            ]
        );
        assert_eq!(scope.tables, 40);
    }

    #[tokio::test(start_paused = true)]
    async fn the_cycle_stretches_when_the_budget_is_short_and_checks_follow_their_own() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
        let jobs = names.iter().map(|n| job(&client, n, 10, 5)).collect();
        // 100 tables every 10 s would need 10 req/s; the budget gives 2.
        let h = start(jobs, 2.0, 8);
        tokio::time::sleep(Duration::from_secs(400)).await;
        let store = h.stop().await;
        let polls = client.table_calls();
        assert!(max_in_window(&polls, Duration::from_secs(1)) <= 2);
        // 400 s at 2 req/s, less the budget's guard: about 770 polls.
        assert!(polls.len() >= 700, "{} polls", polls.len());
        let scope = store.scope_state(&scope()).unwrap();
        let effective = scope.effective_interval.expect("tables were polled twice");
        assert!(
            (45.0..=60.0).contains(&effective),
            "stretched cycle: {effective} s"
        );
        // The checks, at their own 2 a second, keep up with the polls:
        // each stream about once a cycle.
        let checks = stream_checks(&client);
        assert!(max_in_window(&checks, Duration::from_secs(1)) <= 2);
        assert!(
            (600..=polls.len() + 100).contains(&checks.len()),
            "{} checks",
            checks.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn new_tables_are_spread_over_the_first_cycle_at_the_rate_to_spare() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..600).map(|i| format!("t{i:03}")).collect();
        let start_at = Instant::now();
        // At start the whole budget is to spare: 600 tables at 100 req/s
        // take about 6 s (the ideal, plus the guard), not a 60 s interval
        // or twice the ideal.
        let h = start(
            names.iter().map(|n| job(&client, n, 60, 5)).collect(),
            100.0,
            8,
        );
        tokio::time::sleep(Duration::from_secs(40)).await;
        let calls = client.table_calls();
        assert_eq!(calls.len(), 600, "each table once in the first cycle");
        assert!(max_in_window(&calls, Duration::from_secs(1)) <= 100);
        let first_cycle = *calls.last().unwrap() - start_at;
        assert!(
            first_cycle >= Duration::from_secs(6) && first_cycle <= Duration::from_millis(6_700),
            "{first_cycle:?}"
        );
        // A reload with the same tables and one more: no burst, the old
        // ones keep their place, the new one is polled.
        let mut jobs: Vec<_> = names.iter().map(|n| job(&client, n, 60, 5)).collect();
        jobs.push(job(&client, "added", 60, 5));
        h.send_tables(jobs);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(client.calls("added").len(), 1);
        assert_eq!(
            client.table_calls().len(),
            601,
            "no table polled again early"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn tables_added_to_a_busy_scope_leave_the_others_their_cadence() {
        // 40 tables every 10 s take 4 of a budget of 10 a second (9.6 with
        // the guard); 40 more are spread at three quarters of what is left
        // (4.2 a second: about 9.5 s), so the first 40 keep their cycle
        // instead of queueing behind them, now and in the cycles after.
        fastrand::seed(16);
        let client = Arc::new(FakeClient::default());
        let old: Vec<String> = (0..40).map(|i| format!("old{i:02}")).collect();
        let new: Vec<String> = (0..40).map(|i| format!("new{i:02}")).collect();
        let h = start_budgets(ScopeWork::default(), budgets(10.0, 100.0, 100.0), 8);
        // The first 40 come one at a time over a cycle, so their polls are
        // spread evenly over it.
        for i in 1..=old.len() {
            h.send_tables(old[..i].iter().map(|n| job(&client, n, 10, 5)).collect());
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        tokio::time::sleep(Duration::from_secs(25)).await;
        let added = Instant::now();
        let jobs = old
            .iter()
            .chain(&new)
            .map(|n| job(&client, n, 10, 5))
            .collect();
        h.send_tables(jobs);
        tokio::time::sleep(Duration::from_secs(30)).await;
        for name in &old {
            let calls = client.calls(name);
            for pair in calls.windows(2).filter(|p| p[1] > added) {
                let gap = pair[1] - pair[0];
                // 10 s + 10 % jitter and a little queueing, where all 40
                // newcomers due at once would put 4 s of queue before them.
                assert!(gap <= Duration::from_secs(13), "{name}: {gap:?}");
            }
        }
        let firsts: Vec<Instant> = new.iter().map(|n| client.calls(n)[0]).collect();
        let last = *firsts.iter().max().unwrap() - added;
        assert!(
            last >= Duration::from_secs(8) && last <= Duration::from_millis(10_500),
            "{last:?}"
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_slows_the_scope_and_it_recovers() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..50).map(|i| format!("t{i:02}")).collect();
        let jobs = names.iter().map(|n| job(&client, n, 5, 5)).collect();
        *client.throttle.lock().unwrap() = true;
        let h = start(jobs, 10.0, 8);
        tokio::time::sleep(Duration::from_secs(20)).await;
        // Halved on every throttle, recovering 1 req/s per second: the storm
        // keeps the scope far below its 10 req/s.
        let storm_calls = client.all_calls().len();
        assert!(
            storm_calls <= 60,
            "{storm_calls} calls in 20 s of storm; 200 at the full rate"
        );
        assert!(h.budget.rate() < 5.0, "{}", h.budget.rate());
        *client.throttle.lock().unwrap() = false;
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert_eq!(h.budget.rate(), 10.0, "recovered to the configured rate");
        let before = client.all_calls().len();
        tokio::time::sleep(Duration::from_secs(10)).await;
        let after = client.all_calls().len() - before;
        assert!(after >= 95, "{after} calls in 10 s after recovery");
        let store = h.stop().await;
        assert!(store.scope_state(&scope()).unwrap().budgets[&Service::DynamoDb].throttled > 0);
    }

    #[tokio::test(start_paused = true)]
    async fn removed_tables_stop_being_polled() {
        let client = Arc::new(FakeClient::default());
        let h = start(
            vec![job(&client, "stays", 10, 5), job(&client, "goes", 10, 5)],
            10.0,
            2,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        h.send_tables(vec![job(&client, "stays", 10, 5)]);
        let before = client.calls("goes").len();
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(client.calls("goes").len(), before);
        assert!(client.calls("stays").len() >= 6);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shared_streams_are_checked_once_a_cycle_and_go_with_their_tables() {
        let client = Arc::new(FakeClient::default());
        let shared = "arn:aws:kinesis:us-east-1:1:stream/shared";
        {
            let mut destinations = client.destinations.lock().unwrap();
            for table in ["a", "b"] {
                destinations.insert(table.into(), vec![active(shared)]);
            }
            let failed = Destination {
                status: "ENABLE_FAILED".into(),
                ..active("arn:aws:kinesis:us-east-1:1:stream/broken")
            };
            destinations.insert("c".into(), vec![failed]);
        }
        let h = start(
            vec![
                job(&client, "a", 10, 5),
                job(&client, "b", 10, 5),
                job(&client, "c", 10, 5),
            ],
            100.0,
            4,
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        let checks = client.stream_calls.lock().unwrap().clone();
        // Three cycles of 10 s ± 10 % in 35 s: one check each, not one per table.
        assert!(
            (3..=4).contains(&checks[shared].len()),
            "{:?}",
            checks[shared].len()
        );
        assert!(
            !checks.contains_key("arn:aws:kinesis:us-east-1:1:stream/broken"),
            "an ENABLE_FAILED destination's stream is not checked"
        );
        let key = StreamKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            stream_arn: shared.into(),
        };
        assert_eq!(
            h.store.stream_state(&key).unwrap().status.as_deref(),
            Some("ACTIVE")
        );
        // The stream is deleted behind the ACTIVE destinations.
        client.deleted.lock().unwrap().insert(shared.into());
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(
            h.store.stream_state(&key).unwrap().status.as_deref(),
            Some(crate::state::NOT_FOUND)
        );
        // Once no table names it, its series go.
        h.send_tables(vec![job(&client, "c", 10, 5)]);
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.store.stream_state(&key).is_none());
        h.stop().await;
    }

    /// Stream checks follow the scope's cycle, the shortest poll interval of
    /// its tables, as a reload changes it.
    #[tokio::test(start_paused = true)]
    async fn stream_checks_follow_a_poll_interval_changed_by_a_reload() {
        let client = Arc::new(FakeClient::default());
        let stream = "arn:aws:kinesis:us-east-1:1:stream/s";
        (client.destinations.lock().unwrap()).insert("a".into(), vec![active(stream)]);
        let h = start(vec![job(&client, "a", 10, 5)], 100.0, 4);
        tokio::time::sleep(Duration::from_secs(25)).await;
        let checks = || client.stream_calls.lock().unwrap()[stream].len();
        let before = checks();
        assert!((2..=3).contains(&before), "{before}");
        // Polled every 2 s from now on: checked every 2 s too, after the
        // check already due on the old 10 s cycle (up to 11 s after the
        // last one, with the jitter): at least 6 in 20 s, against 2 if the
        // cycle stayed at 10 s.
        h.send_tables(vec![job(&client, "a", 2, 1)]);
        tokio::time::sleep(Duration::from_secs(20)).await;
        let after = checks() - before;
        assert!((5..=12).contains(&after), "{after} checks in 20 s");
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_poll_that_panics_is_counted_and_its_table_polled_again() {
        let client = Arc::new(FakeClient::default());
        client.panic_once.lock().unwrap().insert("boom".into());
        let start_at = Instant::now();
        let h = start(
            vec![job(&client, "boom", 10, 5), job(&client, "fine", 10, 5)],
            10.0,
            2,
        );
        tokio::time::sleep(Duration::from_secs(35)).await;
        assert_eq!(h.telemetry.task_restarts("poll"), 1);
        // The first poll (at once) panicked; the table came back one
        // interval (±10 %) later and kept its cadence.
        let boom = client.calls("boom");
        assert_eq!(boom[0], start_at);
        assert!((3..=4).contains(&boom.len()), "{boom:?}");
        let gap = boom[1] - boom[0];
        assert!(
            gap >= Duration::from_secs(9) && gap <= Duration::from_secs(11),
            "{gap:?}"
        );
        assert!(client.calls("fine").len() >= 3);
        let store = h.stop().await;
        let state = store
            .state(&TableKey {
                account_id: ACCOUNT.into(),
                region: "us-east-1".into(),
                table: "boom".into(),
            })
            .unwrap();
        assert_eq!(state.last_poll_ok, Some(true));
    }

    fn discovery_job(client: &Arc<FakeClient>, refresh: &str) -> Arc<DiscoveryJob<FakeClient>> {
        let text = format!(
            "targets:\n  - region: us-east-1\n    discovery:\n      refresh_interval: {refresh}\n"
        );
        let filters = crate::config::parse(&text, "t.yaml").unwrap().targets[0]
            .discovery
            .clone()
            .unwrap();
        Arc::new(DiscoveryJob {
            key: "discovery".into(),
            client: Arc::clone(client),
            filters,
            shard: Shard::ALL,
            policy: CallPolicy {
                max_attempts: 1,
                timeout: Duration::from_secs(5),
            },
        })
    }

    fn cdc_job(
        client: &Arc<FakeClient>,
        interval: u64,
        tables: &[&str],
    ) -> Arc<CdcJob<FakeClient>> {
        Arc::new(CdcJob {
            key: "cdc".into(),
            client: Arc::clone(client),
            policy: CallPolicy {
                max_attempts: 1,
                timeout: Duration::from_secs(5),
            },
            interval: Duration::from_secs(interval),
            refresh: Duration::from_secs(3600),
            tables: tables.iter().map(|t| Name::from(*t)).collect(),
        })
    }

    fn key(table: &str) -> TableKey {
        TableKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            table: table.into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_and_cdc_reads_share_the_queue_and_the_budget() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        *client.listed.lock().unwrap() = names.clone();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let start_at = Instant::now();
        let mut h = start_work(
            ScopeWork {
                tables: names.iter().map(|n| job(&client, n, 10, 5)).collect(),
                discoveries: vec![discovery_job(&client, "10s")],
                cdc: vec![cdc_job(&client, 5, &refs)],
            },
            5.0,
            4,
        );
        tokio::time::sleep(Duration::from_secs(61)).await;
        // A refresh at once, then every 10 s ± 10 %; each outcome goes to
        // the fleet.
        let refreshes = client.calls_of("ListTables");
        // Due at once, it waits only for its token behind the first poll.
        assert!(
            refreshes[0] - start_at <= Duration::from_millis(500),
            "{:?}",
            refreshes[0] - start_at
        );
        assert!((6..=7).contains(&refreshes.len()), "{refreshes:?}");
        for pair in refreshes.windows(2) {
            let gap = pair[1] - pair[0];
            // 10 s ± 10 % from one start to the next, give or take the
            // wait for a token in a busy budget.
            assert!(
                gap >= Duration::from_secs(8) && gap <= Duration::from_secs(12),
                "{gap:?}"
            );
        }
        let mut outcomes = 0;
        while let Ok(ScopeEvent::Discovered {
            scope: s,
            key,
            outcome,
        }) = h.events.try_recv()
        {
            assert_eq!((s, &*key), (scope(), "discovery"));
            assert_eq!(outcome.unwrap().matched.len(), 20);
            outcomes += 1;
        }
        assert_eq!(outcomes, refreshes.len());
        // CDC: the four series listed once, the values read every 5 s ± 10 %.
        assert_eq!(client.calls_of("ListMetrics").len(), 4);
        let reads = client.calls_of("GetMetricData");
        assert!((11..=14).contains(&reads.len()), "{} reads", reads.len());
        let reads = reads.clone();
        let state = h.store.state(&key("t07")).unwrap();
        assert_eq!(state.cdc["PutRecords"].len(), 4);
        // Polls and refreshes together stayed within DynamoDB's budget, and
        // checks and reads within their own.
        let mut dynamodb = client.table_calls();
        dynamodb.extend(client.calls_of("ListTables"));
        dynamodb.sort();
        let mut cloudwatch = client.calls_of("ListMetrics");
        cloudwatch.extend(reads);
        cloudwatch.sort();
        for calls in [dynamodb, stream_checks(&client), cloudwatch] {
            assert!(max_in_window(&calls, Duration::from_secs(1)) <= 5);
        }
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_refresh_or_cdc_read_that_panics_is_counted_and_done_again() {
        let client = Arc::new(FakeClient::default());
        *client.listed.lock().unwrap() = vec!["orders".into()];
        client
            .panic_next
            .lock()
            .unwrap()
            .extend(["ListTables", "GetMetricData"]);
        let mut h = start_work(
            ScopeWork {
                tables: vec![job(&client, "orders", 600, 5)],
                discoveries: vec![discovery_job(&client, "10m")],
                cdc: vec![cdc_job(&client, 600, &["orders"])],
            },
            10.0,
            4,
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(h.telemetry.task_restarts("discovery"), 1);
        assert_eq!(h.telemetry.task_restarts("cdc"), 1);
        assert_eq!(h.telemetry.task_restarts("poll"), 0);
        assert!(
            h.events.try_recv().is_err(),
            "a panicked refresh reports nothing"
        );
        // Again within a minute (± 10 %), not one 10-minute interval on.
        tokio::time::sleep(Duration::from_secs(66)).await;
        assert_eq!(client.calls_of("ListTables").len(), 2);
        assert_eq!(client.calls_of("GetMetricData").len(), 2);
        let Ok(ScopeEvent::Discovered { outcome, .. }) = h.events.try_recv() else {
            panic!("the second refresh reports");
        };
        assert_eq!(outcome.unwrap().matched, [Name::from("orders")]);
        assert_eq!(
            h.store.state(&key("orders")).unwrap().cdc["PutRecords"].len(),
            4
        );
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_cdc_read_comes_at_once_when_its_tables_change_and_a_kept_one_keeps_its_time() {
        let client = Arc::new(FakeClient::default());
        *client.listed.lock().unwrap() = vec!["a".into(), "b".into()];
        let h = start_work(
            ScopeWork {
                tables: vec![job(&client, "a", 600, 5), job(&client, "b", 600, 5)],
                discoveries: vec![discovery_job(&client, "10m")],
                cdc: vec![cdc_job(&client, 600, &["a"])],
            },
            10.0,
            4,
        );
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(client.calls_of("GetMetricData").len(), 1);
        assert_eq!(client.calls_of("ListTables").len(), 1);
        // The same jobs again (a reload that keeps them): nothing is done early.
        h.work.send_modify(|work| {
            work.discoveries = vec![discovery_job(&client, "10m")];
            work.cdc = vec![cdc_job(&client, 600, &["a"])];
        });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(client.calls_of("GetMetricData").len(), 1);
        assert_eq!(client.calls_of("ListTables").len(), 1);
        // A second table: read at once, from the listing already made.
        let changed = Instant::now();
        h.work
            .send_modify(|work| work.cdc = vec![cdc_job(&client, 600, &["a", "b"])]);
        tokio::time::sleep(Duration::from_secs(1)).await;
        let reads = client.calls_of("GetMetricData");
        assert_eq!(reads.len(), 2);
        assert!(
            reads[1] - changed < Duration::from_millis(200),
            "{:?}",
            reads[1] - changed
        );
        assert_eq!(client.calls_of("ListMetrics").len(), 4);
        assert_eq!(h.store.state(&key("b")).unwrap().cdc["PutRecords"].len(), 4);
        // Work that goes stops.
        h.work.send_modify(|work| {
            work.discoveries.clear();
            work.cdc.clear();
        });
        tokio::time::sleep(Duration::from_secs(1800)).await;
        assert_eq!(client.calls_of("GetMetricData").len(), 2);
        assert_eq!(client.calls_of("ListTables").len(), 1);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_ends_token_waits_at_once_and_lets_calls_in_flight_finish() {
        // One request every 100 s: "a" goes at once and takes 50 s; "b"
        // and "c" (due at 20 s and 40 s) wait for tokens.
        let mut fake = FakeClient::default();
        fake.delays.insert("a".into(), Duration::from_secs(50));
        let client = Arc::new(fake);
        let h = start(
            vec![
                job(&client, "a", 60, 60),
                job(&client, "b", 60, 60),
                job(&client, "c", 60, 60),
            ],
            0.01,
            4,
        );
        tokio::time::sleep(Duration::from_secs(45)).await;
        let stopping = Instant::now();
        h.shutdown.cancel();
        assert_eq!(h.task.await.unwrap(), 0, "nothing aborted");
        // Back when "a" answered, not after the 30 s grace or a token.
        assert_eq!(stopping.elapsed(), Duration::from_secs(5));
        assert_eq!(client.table_calls().len(), 1, "b and c were never made");
        assert_eq!(h.store.state(&key("a")).unwrap().last_poll_ok, Some(true));
        for table in ["b", "c"] {
            let state = h.store.state(&key(table)).unwrap();
            assert_eq!(state.last_poll_ok, None, "nothing recorded for {table}");
            assert!(state.errors.is_empty(), "{:?}", state.errors);
        }
        assert!(
            client.stream_calls.lock().unwrap().is_empty(),
            "a's stream check was never made"
        );
    }

    fn tagged_job(
        client: &Arc<FakeClient>,
        name: &str,
        rules: &Arc<TableRules>,
    ) -> Arc<PollJob<FakeClient>> {
        let plain = job(client, name, 10, 5);
        Arc::new(PollJob {
            key: plain.key.clone(),
            table: plain.table.clone(),
            client: Arc::clone(client),
            interval: plain.interval,
            policy: plain.policy,
            rules: Arc::clone(rules),
        })
    }

    fn tags_of(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        (pairs.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// (label, value) pairs of a table's exported tags in the store.
    fn stored_tags(store: &Store, table: &str) -> Option<Vec<(String, String)>> {
        let state = store.state(&key(table)).unwrap();
        (state.tags).map(|t| t.into_iter().map(|(k, v)| (k.to_string(), v)).collect())
    }

    #[tokio::test(start_paused = true)]
    async fn tags_are_read_with_the_first_polls_then_every_refresh_interval() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..20).map(|i| format!("t{i:02}")).collect();
        {
            let mut tags = client.tags.lock().unwrap();
            for (i, name) in names.iter().enumerate() {
                let required = if i % 2 == 0 { "true" } else { "false" };
                tags.insert(
                    name.clone(),
                    tags_of(&[
                        ("team", "payments"),
                        ("cdc-required", required),
                        ("other", "x"),
                    ]),
                );
            }
        }
        client.tag_faults.lock().unwrap().insert(
            "t19".into(),
            PollError::Service {
                code: "AccessDeniedException".into(),
                message: "no".into(),
            },
        );
        let rules = rules_of(
            "    export_tags: [team, owner]\n    expect: {tag: cdc-required}\n    tags_refresh_interval: 1m\n",
        );
        let start_at = Instant::now();
        let work = ScopeWork {
            tables: names
                .iter()
                .map(|n| tagged_job(&client, n, &rules))
                .collect(),
            ..ScopeWork::default()
        };
        let h = start_budgets(work, budgets(10.0, 10.0, 10.0), 8);
        // Before its first read, a table's tags series is held back and
        // whether it must stream is unknown.
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(stored_tags(&h.store, "t10"), None);
        assert_eq!(h.store.state(&key("t10")).unwrap().expected, None);
        // 20 polls and 20 tag reads of three pages: 80 calls at 10 a
        // second, the reads coming with the polls in the first cycle.
        tokio::time::sleep(Duration::from_secs(10)).await;
        for name in &names[..19] {
            let reads = client.tag_reads(name);
            assert_eq!(reads.len(), 3, "{name}: every page");
            assert!(reads[0] - start_at <= Duration::from_secs(9), "{name}");
        }
        assert_eq!(
            stored_tags(&h.store, "t04").unwrap(),
            tags_of(&[("tag_team", "payments"), ("tag_owner", "")])
        );
        assert_eq!(h.store.state(&key("t04")).unwrap().expected, Some(true));
        assert_eq!(h.store.state(&key("t05")).unwrap().expected, Some(false));
        // A table whose tags cannot be read: counted, its tags series
        // empty, whether it must stream still unknown.
        let denied = h.store.state(&key("t19")).unwrap();
        assert_eq!(denied.tag_errors["AccessDeniedException"], 1);
        assert_eq!(denied.tags, Some(Vec::new()));
        assert_eq!(denied.expected, None);
        // A tag change shows after the next read, a minute (± 10 %) on.
        client.tags.lock().unwrap().insert(
            "t04".into(),
            tags_of(&[
                ("team", "search"),
                ("owner", "ana"),
                ("cdc-required", "False"),
            ]),
        );
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(
            stored_tags(&h.store, "t04").unwrap(),
            tags_of(&[("tag_team", "search"), ("tag_owner", "ana")])
        );
        assert_eq!(h.store.state(&key("t04")).unwrap().expected, Some(false));
        tokio::time::sleep(Duration::from_secs(130)).await;
        // 200 s: reads at about 0, 60, 120 and 180 s, three pages each.
        let reads = client.tag_reads("t07");
        assert!((10..=12).contains(&reads.len()), "{} pages", reads.len());
        // Polls and tag reads together kept to DynamoDB's budget.
        let mut dynamodb = client.table_calls();
        dynamodb.extend(client.calls_of("ListTagsOfResource"));
        dynamodb.sort();
        assert!(max_in_window(&dynamodb, Duration::from_secs(1)) <= 10);
        h.stop().await;
    }

    #[tokio::test(start_paused = true)]
    async fn tables_expected_as_a_whole_or_not_at_all_are_decided_without_a_read() {
        let client = Arc::new(FakeClient::default());
        let every = rules_of("    expect: {streaming: true, stream: \"^cdc-\"}\n");
        let plain = plain_rules();
        let work = ScopeWork {
            tables: vec![
                tagged_job(&client, "orders", &every),
                tagged_job(&client, "scratch", &plain),
            ],
            ..ScopeWork::default()
        };
        let h = start_work(work, 10.0, 4);
        tokio::time::sleep(Duration::from_secs(30)).await;
        assert!(client.calls_of("ListTagsOfResource").is_empty());
        let orders = h.store.state(&key("orders")).unwrap();
        assert_eq!(orders.expected, Some(true));
        // Its destination's stream is named after the table, not cdc-*.
        assert_eq!(orders.stream_match, Some(false));
        assert_eq!(
            orders.tags,
            Some(Vec::new()),
            "a tags series without labels"
        );
        assert_eq!(
            h.store.state(&key("scratch")).unwrap().expected,
            Some(false)
        );
        // A reload that starts expecting by tag reads the tags soon.
        let by_tag = rules_of("    expect: {tag: cdc}\n");
        client
            .tags
            .lock()
            .unwrap()
            .insert("orders".into(), tags_of(&[("cdc", "TRUE")]));
        h.send_tables(vec![
            tagged_job(&client, "orders", &by_tag),
            tagged_job(&client, "scratch", &plain),
        ]);
        tokio::time::sleep(Duration::from_secs(12)).await;
        assert_eq!(client.tag_reads("orders").len(), 1);
        let orders = h.store.state(&key("orders")).unwrap();
        assert_eq!((orders.expected, orders.stream_match), (Some(true), None));
        h.stop().await;
    }

    #[test]
    fn jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(54));
        assert_eq!(jittered(i, 0.5), Duration::from_secs(60));
        assert!(jittered(i, 0.999_999) < Duration::from_secs(66));
        assert_eq!(jittered(i, 7.0), Duration::from_secs(66));
    }
}
