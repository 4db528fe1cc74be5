//! The poll loop of one (account, region) scope. A scope runner owns the
//! schedule of its tables: when each is next due, which are in flight. It
//! starts a poll when one is due and fewer than `concurrency` run, and each
//! poll takes its requests from the scope's [`Budget`] (through
//! [`aws::call`]), so the scope never exceeds its rate however many tables
//! it has: when they cannot all be polled within `poll_interval`, the cycle
//! stretches, which the scope's effective-interval gauge shows.
//!
//! - New tables (at start, after a reload or a discovery refresh) are spread
//!   evenly over the first cycle, at no more than half the scope's rate, so
//!   there is no burst; tables that stay keep their place in the schedule.
//! - After a poll, the table is due again one `poll_interval` (±10 %
//!   jitter) after that poll started.
//! - Scopes are independent: a hung or throttled region only slows its own
//!   tables.
//!
//! On shutdown the runner stops starting polls; polls in flight finish
//! (each is bounded by its timeout) unless the grace period runs out first.
//!
//! Each call runs as a task of the runner's `JoinSet`. One that panics is
//! logged at error, counted as a restart of task `poll`, and its table or
//! stream goes back in the queue one interval on, so it is polled again;
//! the runner itself is supervised by the fleet ([`crate::poll::supervise`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{Id, JoinError, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::aws::budget::Budget;
use crate::aws::{
    self, CallPolicy, Destination, DynamoDbApi, KinesisApi, PollError, StreamSummary,
};
use crate::config::TableRef;
use crate::exposition::metrics::Telemetry;
use crate::poll::supervise::panic_message;
use crate::state::store::Store;
use crate::state::{unix_now, Name, ScopeKey, Service, StreamKey, TableKey};

/// Share of the poll interval by which each cycle is randomly stretched or
/// shortened.
const JITTER: f64 = 0.1;

/// Share of the scope's rate that newly added tables may use while they are
/// spread over their first cycle.
const FIRST_CYCLE_SHARE: f64 = 0.5;

/// One table to poll, with the client that polls it.
#[derive(Debug)]
pub struct PollJob<C> {
    pub key: TableKey,
    pub table: TableRef,
    pub client: Arc<C>,
    pub interval: Duration,
    pub policy: CallPolicy,
}

/// A scope's tables as the fleet hands them to its runner. Each job is
/// shared between that list and the runner's slot, and with the call in
/// flight, rather than copied into each.
pub type Jobs<C> = Vec<Arc<PollJob<C>>>;

/// What a scope runner shares with the rest of the exporter.
pub struct ScopeRunner {
    pub key: ScopeKey,
    pub budget: Arc<Budget>,
    pub store: Arc<Store>,
    pub telemetry: Arc<Telemetry>,
    /// Polls in flight at most.
    pub concurrency: usize,
    /// How long polls in flight may take to finish on shutdown.
    pub grace: Duration,
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

/// A stream to cross-check, and which tables' destinations name it.
struct StreamSlot {
    due: Instant,
    running: bool,
    /// Usually one (a `Vec` for the reason `Slot::streams` is one).
    tables: Vec<TableKey>,
}

/// What is next in the queue: a table's poll or a stream's check.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Due {
    Table(TableKey),
    Stream(Name),
}

/// A finished call and when it started.
enum Finished {
    Table(TableKey, Instant, Result<Vec<Destination>, PollError>),
    Stream(Name, Instant, Result<StreamSummary, PollError>),
}

/// The runner's own state while it runs.
struct Running<C> {
    tables: HashMap<TableKey, Slot<C>>,
    streams: HashMap<Name, StreamSlot>,
    queue: BTreeSet<(Instant, Due)>,
    warned_stretch: bool,
    /// The measured cycle (seconds between two polls of one table), which
    /// is longer than the configured one when the budget stretches it.
    effective: Option<f64>,
}

impl ScopeRunner {
    /// Poll the jobs `jobs` holds (and whatever it is changed to), and
    /// cross-check the streams their working destinations name, until
    /// `shutdown` is cancelled or the sender is dropped. Returns the number
    /// of calls aborted at the end.
    pub async fn run<C: DynamoDbApi + KinesisApi>(
        self,
        mut jobs: watch::Receiver<Jobs<C>>,
        shutdown: CancellationToken,
    ) -> usize {
        let mut state = Running {
            tables: HashMap::new(),
            streams: HashMap::new(),
            queue: BTreeSet::new(),
            warned_stretch: false,
            effective: None,
        };
        self.telemetry.supervise_task("poll");
        let mut running: JoinSet<Finished> = JoinSet::new();
        // What each call in flight is for: a call that panics says nothing
        // else, and its table or stream must go back in the queue.
        let mut in_flight: HashMap<Id, Due> = HashMap::new();
        let initial = jobs.borrow_and_update().clone();
        self.merge(initial, &mut state);
        loop {
            let next = if running.len() < self.concurrency.max(1) {
                state.queue.first().map(|(due, _)| *due)
            } else {
                None
            };
            tokio::select! {
                biased;
                () = shutdown.cancelled() => break,
                Some(joined) = running.join_next_with_id(), if !running.is_empty() => {
                    self.joined(joined, &mut in_flight, &mut state);
                }
                changed = jobs.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let update = jobs.borrow_and_update().clone();
                    self.merge(update, &mut state);
                }
                () = sleep_until_some(next) => {
                    if let Some((due, call)) = self.start_next(&mut state) {
                        in_flight.insert(running.spawn(call).id(), due);
                    }
                }
            }
        }
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
        tracing::warn!(account_id = %self.key.account_id, region = %self.key.region, polls = left,
            "polls still running after the grace period; aborting them");
        running.shutdown().await;
        left
    }

    /// Record a call that ended: its outcome, or, when it panicked, the
    /// panic (logged, counted as a restart of task `poll`) and its table or
    /// stream back in the queue one interval on.
    fn joined<C>(
        &self,
        joined: Result<(Id, Finished), JoinError>,
        in_flight: &mut HashMap<Id, Due>,
        state: &mut Running<C>,
    ) {
        let err = match joined {
            Ok((id, finished)) => {
                in_flight.remove(&id);
                self.finish(finished, state);
                return;
            }
            Err(err) => err,
        };
        let Some(due) = in_flight.remove(&err.id()) else {
            return;
        };
        if err.is_panic() {
            self.telemetry.record_task_restart("poll");
            tracing::error!(task = "poll", account_id = %self.key.account_id, region = %self.key.region, call = ?due,
                panic = %panic_message(err.into_panic()),
                "a poll panicked; it is scheduled again one interval on (dynamodb_kinesis_exporter_task_restarts_total)");
        }
        self.reschedule(due, state);
    }

    /// Put a table or stream whose call ended without an outcome back in
    /// the queue, one (jittered) interval from now.
    fn reschedule<C>(&self, due: Due, state: &mut Running<C>) {
        let now = Instant::now();
        match due {
            Due::Table(key) => {
                if let Some(slot) = state.tables.get_mut(&key) {
                    slot.running = false;
                    slot.due = now + jittered(slot.job.interval, fastrand::f64());
                    state.queue.insert((slot.due, Due::Table(key)));
                }
            }
            Due::Stream(arn) => {
                let interval = scope_interval(state);
                if let Some(slot) = state.streams.get_mut(&arn) {
                    slot.running = false;
                    slot.due = now + jittered(interval, fastrand::f64());
                    state.queue.insert((slot.due, Due::Stream(arn)));
                }
            }
        }
    }

    /// Take the first due entry off the queue and make its call.
    fn start_next<C: DynamoDbApi + KinesisApi>(
        &self,
        state: &mut Running<C>,
    ) -> Option<(
        Due,
        impl std::future::Future<Output = Finished> + Send + 'static,
    )> {
        let (_, due) = state.queue.pop_first()?;
        let budget = Arc::clone(&self.budget);
        let what = due.clone();
        match due {
            Due::Table(key) => {
                let slot = state.tables.get_mut(&key)?;
                slot.running = true;
                let job = Arc::clone(&slot.job);
                Some((
                    what,
                    futures_boxed(async move {
                        let started = Instant::now();
                        let outcome =
                            aws::call(&budget, job.policy, || job.client.describe(&job.table))
                                .await;
                        Finished::Table(job.key.clone(), started, outcome)
                    }),
                ))
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
                Some((
                    what,
                    futures_boxed(async move {
                        let started = Instant::now();
                        let outcome =
                            aws::call(&budget, job.policy, || job.client.describe_stream(&arn))
                                .await;
                        Finished::Stream(arn, started, outcome)
                    }),
                ))
            }
        }
    }

    /// Make the schedule hold exactly `jobs`: tables that stay keep their
    /// due time, new ones are spread over their first cycle.
    fn merge<C>(&self, jobs: Jobs<C>, state: &mut Running<C>) {
        let wanted: std::collections::HashSet<TableKey> =
            jobs.iter().map(|j| j.key.clone()).collect();
        let gone: Vec<TableKey> = state
            .tables
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(slot) = state.tables.remove(&key) {
                state.queue.remove(&(slot.due, Due::Table(key.clone())));
                self.set_streams(&key, Vec::new(), slot.streams, state);
            }
        }
        let now = Instant::now();
        let fresh: Jobs<C> = jobs
            .into_iter()
            .filter_map(|job| match state.tables.get_mut(&job.key) {
                Some(slot) => {
                    slot.job = job;
                    None
                }
                None => Some(job),
            })
            .collect();
        let rate = self.budget.max_rate() * FIRST_CYCLE_SHARE;
        let count = fresh.len();
        for (i, job) in fresh.into_iter().enumerate() {
            let window = job
                .interval
                .min(Duration::from_secs_f64(count as f64 / rate));
            let due = now + window.mul_f64(i as f64 / count as f64);
            state.queue.insert((due, Due::Table(job.key.clone())));
            state.tables.insert(
                job.key.clone(),
                Slot {
                    job,
                    due,
                    last_start: None,
                    running: false,
                    streams: Vec::new(),
                },
            );
        }
        let tables = state.tables.len();
        let interval = scope_interval(state);
        let cycle = tables as f64 / self.budget.max_rate();
        if !state.warned_stretch && cycle > interval.as_secs_f64() && tables > 0 {
            state.warned_stretch = true;
            tracing::warn!(account_id = %self.key.account_id, region = %self.key.region, tables,
                poll_interval = ?interval, max_requests_per_second = self.budget.max_rate(),
                cycle_seconds = cycle,
                "the request budget cannot poll every table of this scope within poll_interval; each cycle stretches (see dynamodb_kinesis_scope_effective_poll_interval_seconds)");
        }
        self.store.update_scope(&self.key, |scope| {
            scope.tables = tables;
            scope.poll_interval = interval.as_secs_f64();
            scope.set_budget(
                Service::DynamoDb,
                self.budget.rate(),
                self.budget.throttled_total(),
            );
        });
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
                state.queue.remove(&(slot.due, Due::Stream(arn.clone())));
                state.streams.remove(arn);
                self.store.remove_stream(&self.stream_key(arn));
            }
        }
        let now = Instant::now();
        for arn in new.iter().filter(|arn| !old.contains(arn)) {
            let slot = state.streams.entry(arn.clone()).or_insert_with(|| {
                state.queue.insert((now, Due::Stream(arn.clone())));
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
    }

    fn stream_key(&self, arn: &Name) -> StreamKey {
        StreamKey {
            account_id: self.key.account_id.clone(),
            region: self.key.region.clone(),
            stream_arn: arn.clone(),
        }
    }

    /// Record a finished call and put its table or stream back in the queue.
    fn finish<C>(&self, finished: Finished, state: &mut Running<C>) {
        let now = unix_now();
        let (account, region) = (&self.key.account_id, &self.key.region);
        match &finished {
            Finished::Table(_, _, Err(err)) => {
                aws::warn_unknown_code(account, region, "table poll", err);
            }
            Finished::Stream(_, _, Err(err)) => {
                aws::warn_unknown_code(account, region, "stream check", err);
            }
            _ => {}
        }
        match finished {
            Finished::Table(key, started, outcome) => {
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
                    slot.running = false;
                    gap = slot.last_start.map(|last| (started - last).as_secs_f64());
                    slot.last_start = Some(started);
                    slot.due = started + jittered(slot.job.interval, fastrand::f64());
                    state.queue.insert((slot.due, Due::Table(key.clone())));
                    if let Some(new) = streams {
                        let old = std::mem::take(&mut slot.streams);
                        self.set_streams(&key, new, old, state);
                    }
                }
                self.store.update_scope(&self.key, |scope| {
                    if let Some(gap) = gap {
                        scope.record_gap(gap);
                    }
                    scope.set_budget(
                        Service::DynamoDb,
                        self.budget.rate(),
                        self.budget.throttled_total(),
                    );
                    state.effective = scope.effective_interval;
                });
            }
            Finished::Stream(arn, started, outcome) => {
                // Once a cycle, however many tables name the stream, and a
                // stretched cycle stretches the checks too, so they never
                // take more than their share of the budget.
                let cycle = state.effective.unwrap_or(0.0);
                let interval = scope_interval(state).max(Duration::from_secs_f64(cycle));
                // A stream no table names any more is not recorded again.
                if let Some(slot) = state.streams.get_mut(&arn) {
                    slot.running = false;
                    slot.due = started + jittered(interval, fastrand::f64());
                    state.queue.insert((slot.due, Due::Stream(arn.clone())));
                    self.store
                        .record_stream(&self.stream_key(&arn), &outcome, now);
                }
            }
        }
    }
}

/// The scope's cycle: the shortest poll interval among its tables.
fn scope_interval<C>(state: &Running<C>) -> Duration {
    state
        .tables
        .values()
        .map(|s| s.job.interval)
        .min()
        .unwrap_or_default()
}

/// The two call futures as one type.
fn futures_boxed(
    call: impl std::future::Future<Output = Finished> + Send + 'static,
) -> std::pin::Pin<Box<dyn std::future::Future<Output = Finished> + Send>> {
    Box::pin(call)
}

/// Sleep until `at`, or forever for `None`.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// `interval` scaled by a factor in [1 - JITTER, 1 + JITTER), from a
/// uniform `unit` in [0, 1).
fn jittered(interval: Duration, unit: f64) -> Duration {
    interval.mul_f64(1.0 - JITTER + 2.0 * JITTER * unit.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::budget::tests::max_in_window;
    use crate::aws::Page;
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
            all.sort();
            all
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
            unreachable!("the scope runner never lists tables")
        }

        async fn list_tags(
            &self,
            _arn: &str,
            _token: Option<String>,
        ) -> Result<Page<(String, String)>, PollError> {
            unreachable!("the scope runner never lists tags")
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
        })
    }

    struct Harness {
        store: Arc<Store>,
        budget: Arc<Budget>,
        telemetry: Arc<Telemetry>,
        jobs: watch::Sender<Jobs<FakeClient>>,
        shutdown: CancellationToken,
        task: tokio::task::JoinHandle<usize>,
    }

    fn start(jobs: Jobs<FakeClient>, rate: f64, concurrency: usize) -> Harness {
        let store = Arc::new(Store::new(jobs.iter().map(|j| j.key.clone())));
        let budget = Budget::new(rate, concurrency);
        let telemetry = Arc::new(Telemetry::new(false));
        let runner = ScopeRunner {
            key: scope(),
            budget: Arc::clone(&budget),
            store: Arc::clone(&store),
            telemetry: Arc::clone(&telemetry),
            concurrency,
            grace: Duration::from_secs(30),
        };
        let (tx, rx) = watch::channel(jobs);
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(runner.run(rx, shutdown.clone()));
        Harness {
            store,
            budget,
            telemetry,
            jobs: tx,
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

    #[tokio::test(start_paused = true)]
    async fn the_budget_holds_and_the_cycle_stretches() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..100).map(|i| format!("t{i:03}")).collect();
        let jobs = names.iter().map(|n| job(&client, n, 10, 5)).collect();
        // 100 tables (and their 100 streams) every 10 s would need 20
        // req/s; the budget gives 2.
        let h = start(jobs, 2.0, 8);
        tokio::time::sleep(Duration::from_secs(400)).await;
        let store = h.stop().await;
        let calls = client.all_calls();
        assert!(
            max_in_window(&calls, Duration::from_secs(1)) <= 2,
            "the budget was exceeded"
        );
        // 400 s at 2 req/s, less the budget's guard: about 770 calls.
        assert!(
            calls.len() >= 700,
            "the budget should be used: {} calls",
            calls.len()
        );
        let scope = store.scope_state(&scope()).unwrap();
        let effective = scope.effective_interval.expect("tables were polled twice");
        // 100 polls and 100 stream checks a cycle at 2 req/s: the cycle
        // stretches from 10 s towards 100 s, and the stream checks follow
        // the stretched cycle instead of crowding out the polls.
        assert!(
            (50.0..=115.0).contains(&effective),
            "stretched cycle: {effective} s"
        );
        let checks: usize = client
            .stream_calls
            .lock()
            .unwrap()
            .values()
            .map(Vec::len)
            .sum();
        assert!(
            checks <= client.table_calls().len(),
            "{checks} stream checks"
        );
        assert_eq!(scope.tables, 100);
    }

    #[tokio::test(start_paused = true)]
    async fn new_tables_are_spread_over_the_first_cycle() {
        let client = Arc::new(FakeClient::default());
        let names: Vec<String> = (0..60).map(|i| format!("t{i:02}")).collect();
        let jobs = names.iter().map(|n| job(&client, n, 60, 5)).collect();
        let start_at = Instant::now();
        let h = start(jobs, 100.0, 8);
        tokio::time::sleep(Duration::from_secs(40)).await;
        let calls = client.table_calls();
        assert_eq!(calls.len(), 60, "each table once in the first cycle");
        // 60 tables over at most 60 s at no more than half of 100 req/s:
        // spread over 1.2 s, never a burst at the full rate.
        assert!(
            max_in_window(&calls, Duration::from_secs(1)) <= 50,
            "{calls:?}"
        );
        assert!(*calls.last().unwrap() - start_at >= Duration::from_secs(1));
        // A reload with the same tables and one more: no burst, the old
        // ones keep their place, the new one is polled.
        let mut jobs: Vec<_> = names.iter().map(|n| job(&client, n, 60, 5)).collect();
        jobs.push(job(&client, "added", 60, 5));
        h.jobs.send(jobs).unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(client.calls("added").len(), 1);
        assert_eq!(
            client.table_calls().len(),
            61,
            "no table polled again early"
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
        h.jobs.send(vec![job(&client, "stays", 10, 5)]).unwrap();
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
        h.jobs.send(vec![job(&client, "c", 10, 5)]).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(h.store.stream_state(&key).is_none());
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

    #[test]
    fn jitter_stays_within_ten_percent() {
        let i = Duration::from_secs(60);
        assert_eq!(jittered(i, 0.0), Duration::from_secs(54));
        assert_eq!(jittered(i, 0.5), Duration::from_secs(60));
        assert!(jittered(i, 0.999_999) < Duration::from_secs(66));
        assert_eq!(jittered(i, 7.0), Duration::from_secs(66));
    }
}
