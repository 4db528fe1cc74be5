//! The state store: one entry per table, per checked stream and per
//! (account, region) scope, readiness, and a generation counter that moves
//! on every change. The scheduler and the fleet are its writers; the shared
//! page (`page`) renders the metric text from it when a snapshot is rebuilt,
//! visiting the entries in batches so a writer never waits for more than one
//! batch. Its locks are never held across an `.await`.
//!
//! The text is not kept per entry: the page's snapshot already holds it
//! once, and a second copy would be most of the process's memory at
//! thousands of tables.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError, RwLock};

use crate::aws::{Destination, PollError, StreamSummary};
use crate::config::Pattern;
use crate::exposition::metrics::{self, Fragments};
use crate::state::{
    CdcPoint, Name, ScopeKey, ScopeState, Service, StreamKey, StreamState, TableKey, TableState,
};
use std::sync::Arc;

/// Entries rendered per read-lock acquisition in the visits.
const VISIT_BATCH: usize = 256;

/// The shared state of all tables, streams and scopes.
pub struct Store {
    tables: RwLock<BTreeMap<TableKey, TableState>>,
    scopes: RwLock<BTreeMap<ScopeKey, ScopeState>>,
    streams: RwLock<BTreeMap<StreamKey, StreamState>>,
    polled: AtomicUsize,
    /// Work that must finish before the table list is known (account
    /// lookups, first successful discovery refreshes); readiness waits for it.
    pending: AtomicUsize,
    /// What that work is, as `/readyz` says it (empty before the fleet
    /// named it).
    waiting: Mutex<Vec<String>>,
    /// Set the first time every table had been polled; readiness does not
    /// drop again when a reload adds tables.
    was_ready: AtomicBool,
    /// Moves on every change of anything rendered, so the shared page knows
    /// whether its snapshot is out of date.
    generation: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// Call `f` with every value of `map`, in key order, taking the read lock
/// for one batch at a time.
fn visit_batched<K: Ord + Clone, V>(map: &RwLock<BTreeMap<K, V>>, mut f: impl FnMut(&V)) {
    let mut after: Option<K> = None;
    loop {
        let entries = read(map);
        let range = match &after {
            None => entries.range::<K, _>(..),
            Some(key) => entries.range::<K, _>((Bound::Excluded(key), Bound::Unbounded)),
        };
        let mut seen = 0;
        let mut last = None;
        for (key, value) in range.take(VISIT_BATCH) {
            f(value);
            seen += 1;
            last = Some(key);
        }
        if seen < VISIT_BATCH {
            return;
        }
        after = last.cloned();
    }
}

impl Store {
    /// A store with an empty state for each table.
    pub fn new(keys: impl IntoIterator<Item = TableKey>) -> Self {
        let store = Store {
            tables: RwLock::new(BTreeMap::new()),
            scopes: RwLock::new(BTreeMap::new()),
            streams: RwLock::new(BTreeMap::new()),
            polled: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
            was_ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        };
        store.reconcile(keys);
        store
    }

    fn changed(&self) {
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever anything rendered changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Make the store hold exactly `keys`: tables no longer polled go (with
    /// their series), new ones start empty, and tables that stay keep their
    /// state, status-change times and counters.
    pub fn reconcile(&self, keys: impl IntoIterator<Item = TableKey>) {
        let wanted: BTreeSet<TableKey> = keys.into_iter().collect();
        let mut tables = write(&self.tables);
        // Built again from the sorted keys rather than edited in place: a
        // map collected from sorted entries has full nodes, where inserting
        // keys in order leaves each node about half empty (at 10,000 tables
        // that is megabytes).
        let mut old = std::mem::take(&mut *tables);
        *tables = wanted
            .into_iter()
            .map(|key| {
                let state = old.remove(&key).unwrap_or_else(|| TableState::new(&key));
                (key, state)
            })
            .collect();
        drop(old);
        let polled = tables
            .values()
            .filter(|state| state.last_poll_ok.is_some())
            .count();
        self.polled.store(polled, Ordering::Relaxed);
        drop(tables);
        self.changed();
    }

    /// Record the outcome of one poll, and return the streams the table's
    /// destinations now name that must exist (see
    /// [`TableState::checked_streams`]), sorted, as the names the store
    /// holds, so the scheduler shares them. Unknown keys are ignored (a
    /// table removed while its poll was in flight).
    pub fn record(
        &self,
        key: &TableKey,
        outcome: &Result<Vec<Destination>, PollError>,
        now: f64,
    ) -> Vec<Name> {
        let mut tables = write(&self.tables);
        let Some(state) = tables.get_mut(key) else {
            return Vec::new();
        };
        if state.last_poll_ok.is_none() {
            self.polled.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(destinations) => state.record_success(destinations, now),
            Err(err) => state.record_failure(err),
        }
        let mut checked: Vec<Name> = state.checked_streams().cloned().collect();
        // Kept by the scheduler for every table: no spare capacity.
        checked.shrink_to_fit();
        drop(tables);
        self.changed();
        checked
    }

    /// Replace a table's CDC datapoints (see [`TableState::record_cdc`]).
    /// Unknown tables are ignored.
    pub fn record_cdc(&self, key: &TableKey, points: &[CdcPoint]) {
        self.update_table(key, |state| state.record_cdc(points));
    }

    /// Change one table's state, if the table is known (a table removed
    /// while its work was in flight is ignored).
    fn update_table(&self, key: &TableKey, change: impl FnOnce(&mut TableState)) {
        if let Some(state) = write(&self.tables).get_mut(key) {
            change(state);
            self.changed();
        }
    }

    /// Set what the configuration expects of a table (see
    /// [`TableState::set_expectation`]): whether it must stream (`None`
    /// while unknown, such as an expectation by tag before the first tag
    /// read) and the regex its stream's name must match. Call it when the
    /// table starts being polled, after a reload, and after every tag read
    /// of a target that expects by tag. Pass one `Arc` per target, shared by
    /// its tables. Unknown tables are ignored.
    pub fn set_expectation(
        &self,
        key: &TableKey,
        expected: Option<bool>,
        stream: Option<Arc<Pattern>>,
    ) {
        self.update_table(key, |state| state.set_expectation(expected, stream));
    }

    /// Record one tag read of a table (see [`TableState::record_tags`]):
    /// the exported tags as (label name, value) in the configured order,
    /// an empty value for a tag the table lacks, or the error. Unknown
    /// tables are ignored.
    pub fn record_tags(
        &self,
        key: &TableKey,
        outcome: Result<Vec<(Name, String)>, &PollError>,
        now: f64,
    ) {
        self.update_table(key, |state| state.record_tags(outcome, now));
    }

    /// Say whether a table's target exports tags (see
    /// [`TableState::set_exports_tags`]). A table starts as exporting none:
    /// from its first poll its tags series (which every table-level alert
    /// joins on) shows, without tag labels. Call this with `true` before
    /// the first poll of a table whose target has `export_tags`, so its
    /// series waits for the first tag read; with `false` when a reload
    /// drops them. Unknown tables are ignored.
    pub fn set_exports_tags(&self, key: &TableKey, exports: bool) {
        self.update_table(key, |state| state.set_exports_tags(exports));
    }

    /// Count one request to `service`'s `operation` in a scope (every
    /// attempt that leaves the process, retries included), creating the
    /// scope's entry if new.
    pub fn count_request(&self, scope: &ScopeKey, service: Service, operation: &str) {
        self.update_scope(scope, |s| s.count_request(service, operation));
    }

    /// Count `n` metrics requested from CloudWatch's GetMetricData in a
    /// scope (the `MetricDataQueries` of one call or page).
    pub fn count_metrics_requested(&self, scope: &ScopeKey, n: u64) {
        self.update_scope(scope, |s| s.count_metrics_requested(n));
    }

    /// Record one service's budget in a scope: its current adaptive rate
    /// and the throttling answers it has seen (the budget's total).
    pub fn set_budget(&self, scope: &ScopeKey, service: Service, rate_limit: f64, throttled: u64) {
        self.update_scope(scope, |s| s.set_budget(service, rate_limit, throttled));
    }

    /// Change one scope's state, creating it if new.
    pub fn update_scope(&self, key: &ScopeKey, change: impl FnOnce(&mut ScopeState)) {
        change(
            write(&self.scopes)
                .entry(key.clone())
                .or_insert_with(|| ScopeState::new(key)),
        );
        self.changed();
    }

    /// Keep only the scopes in `keys`; the others' series go, their
    /// streams' too.
    pub fn retain_scopes(&self, keys: &BTreeSet<ScopeKey>) {
        write(&self.scopes).retain(|key, _| keys.contains(key));
        write(&self.streams).retain(|key, _| keys.contains(&key.scope()));
        self.changed();
    }

    /// Record one check of a stream, creating its entry if new.
    pub fn record_stream(
        &self,
        key: &StreamKey,
        outcome: &Result<StreamSummary, PollError>,
        now: f64,
    ) {
        write(&self.streams)
            .entry(key.clone())
            .or_insert_with(|| StreamState::new(key))
            .record(outcome, now);
        self.changed();
    }

    /// Forget a stream no working destination names any more.
    pub fn remove_stream(&self, key: &StreamKey) {
        write(&self.streams).remove(key);
        self.changed();
    }

    /// Call `f` with every table's state, in key order, a batch per lock.
    pub fn visit(&self, f: impl FnMut(&TableState)) {
        visit_batched(&self.tables, f);
    }

    /// Call `f` with every stream's state, in key order, a batch per lock.
    pub fn visit_streams(&self, f: impl FnMut(&StreamState)) {
        visit_batched(&self.streams, f);
    }

    /// Call `f` with every scope's state, in key order, a batch per lock.
    pub fn visit_scopes(&self, f: impl FnMut(&ScopeState)) {
        visit_batched(&self.scopes, f);
    }

    /// The metric text of every table, rendered now, in key order (for
    /// tests and diagnostics; the page renders straight into its blocks).
    pub fn fragments(&self) -> Vec<Fragments> {
        let mut out = Vec::new();
        self.visit(|state| out.push(metrics::render_table(state)));
        out
    }

    /// The same for every stream.
    pub fn stream_fragments(&self) -> Vec<Fragments> {
        let mut out = Vec::new();
        self.visit_streams(|state| out.push(metrics::render_stream(state)));
        out
    }

    /// The same for every scope.
    pub fn scope_fragments(&self) -> Vec<Fragments> {
        let mut out = Vec::new();
        self.visit_scopes(|state| out.push(metrics::render_scope(state)));
        out
    }

    /// A copy of one table's state (for tests and diagnostics).
    pub fn state(&self, key: &TableKey) -> Option<TableState> {
        read(&self.tables).get(key).cloned()
    }

    /// A copy of one stream's state.
    pub fn stream_state(&self, key: &StreamKey) -> Option<StreamState> {
        read(&self.streams).get(key).cloned()
    }

    /// A copy of one scope's state.
    pub fn scope_state(&self, key: &ScopeKey) -> Option<ScopeState> {
        read(&self.scopes).get(key).cloned()
    }

    /// Set how many start-up steps (account lookups, first discovery
    /// refreshes) are still running.
    pub fn set_pending(&self, pending: usize) {
        self.pending.store(pending, Ordering::Relaxed);
    }

    /// Name the start-up steps still running (one entry each, such as
    /// `discovery in 123456789012/us-east-1`); readiness waits for them.
    pub fn set_waiting(&self, waiting: Vec<String>) {
        let mut current = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
        self.pending.store(waiting.len(), Ordering::Relaxed);
        *current = waiting;
    }

    /// The start-up steps [`Store::set_waiting`] named, while they run.
    pub fn waiting(&self) -> Vec<String> {
        self.waiting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// (tables polled at least once, tables known).
    pub fn readiness(&self) -> (usize, usize) {
        let total = read(&self.tables).len();
        (self.polled.load(Ordering::Relaxed), total)
    }

    /// True once every table has been polled at least once and the start-up
    /// work is done; stays true.
    pub fn is_ready(&self) -> bool {
        if self.was_ready.load(Ordering::Relaxed) {
            return true;
        }
        let (polled, total) = self.readiness();
        let ready = polled >= total && self.pending.load(Ordering::Relaxed) == 0;
        if ready {
            self.was_ready.store(true, Ordering::Relaxed);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn key() -> TableKey {
        TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
        }
    }

    fn dest(arn: &str, status: &str) -> Destination {
        Destination {
            stream_arn: arn.into(),
            status: status.into(),
            status_description: None,
            precision: None,
        }
    }

    fn throttled() -> PollError {
        PollError::Service {
            code: "ThrottlingException".into(),
            message: "slow down".into(),
        }
    }

    #[test]
    fn not_found_drops_the_rendered_destination_series() {
        let store = Store::new([key()]);
        store.record(
            &key(),
            &Ok(vec![dest("s1", "ACTIVE"), dest("s2", "ACTIVE")]),
            1.0,
        );
        store.record(&key(), &Err(PollError::NotFound("gone".into())), 2.0);
        let state = store.state(&key()).unwrap();
        assert!(state.destinations.is_empty());
        assert_eq!(state.destination_count, Some(0));
        assert_eq!(state.errors.get("ResourceNotFoundException"), Some(&1));
        let text = store.fragments()[0].0.concat();
        assert!(!text.contains("stream_arn"), "{text}");
    }

    #[test]
    fn record_returns_the_checked_streams_the_store_holds() {
        let store = Store::new([key()]);
        let first = store.record(
            &key(),
            &Ok(vec![
                dest("s2", "ACTIVE"),
                dest("s1", "DISABLED"),
                dest("s0", "ENABLING"),
            ]),
            1.0,
        );
        let names: Vec<&str> = first.iter().map(|n| &**n).collect();
        assert_eq!(names, ["s0", "s2"]);
        assert_eq!(first.capacity(), first.len());
        // The next poll hands back the very same names (one copy of each
        // ARN, shared with the scheduler); a failure other than a missing
        // table keeps them.
        let again = store.record(
            &key(),
            &Ok(vec![dest("s0", "ENABLING"), dest("s2", "ACTIVE")]),
            2.0,
        );
        assert!(first.iter().zip(&again).all(|(a, b)| Arc::ptr_eq(a, b)));
        assert_eq!(store.record(&key(), &Err(throttled()), 3.0), again);
        assert!(store
            .record(&key(), &Err(PollError::NotFound("gone".into())), 4.0)
            .is_empty());
        let unknown = TableKey {
            table: "unknown".into(),
            ..key()
        };
        assert!(store
            .record(&unknown, &Ok(vec![dest("s9", "ACTIVE")]), 5.0)
            .is_empty());
    }

    #[test]
    fn readiness_counts_each_table_once() {
        let other = TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "payments".into(),
        };
        let store = Store::new([key(), other.clone()]);
        assert_eq!(store.readiness(), (0, 2));
        store.record(&key(), &Err(throttled()), 1.0);
        store.record(&key(), &Ok(vec![]), 2.0);
        assert_eq!(store.readiness(), (1, 2));
        store.record(&other, &Ok(vec![]), 3.0);
        assert_eq!(store.readiness(), (2, 2));
    }

    #[test]
    fn reconcile_keeps_staying_tables_and_readiness_latches() {
        let other = TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "payments".into(),
        };
        let store = Store::new([key(), other.clone()]);
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 10.0);
        store.record(&key(), &Err(throttled()), 20.0);
        store.record(&other, &Ok(vec![]), 10.0);
        assert!(store.is_ready());
        let added = TableKey {
            account_id: "123456789012".into(),
            region: "eu-west-1".into(),
            table: "orders".into(),
        };
        store.reconcile([key(), added.clone()]);
        assert!(store.state(&other).is_none());
        let kept = store.state(&key()).unwrap();
        assert_eq!(kept.destinations[0].since, 10.0);
        assert_eq!(kept.errors.get("ThrottlingException"), Some(&1));
        assert_eq!(store.state(&added).unwrap().last_poll_ok, None);
        assert_eq!(store.readiness(), (1, 2));
        assert!(store.is_ready(), "readiness must not drop after a reload");
        let text: String = store.fragments().iter().map(|f| f.0.concat()).collect();
        assert!(!text.contains("payments"), "{text}");
    }

    #[test]
    fn readiness_names_what_it_waits_for() {
        let store = Store::new([]);
        store.set_waiting(vec!["discovery in 123456789012/us-east-1".into()]);
        assert!(!store.is_ready());
        assert_eq!(store.waiting(), ["discovery in 123456789012/us-east-1"]);
        store.set_waiting(Vec::new());
        assert!(store.is_ready());
        assert!(store.waiting().is_empty());
    }

    #[test]
    fn readiness_waits_for_pending_start_up_work() {
        let store = Store::new([key()]);
        store.set_pending(1);
        store.record(&key(), &Ok(vec![]), 1.0);
        assert!(!store.is_ready());
        store.set_pending(0);
        assert!(store.is_ready());
    }

    #[test]
    fn scopes_render_and_go() {
        let store = Store::new([]);
        let scope = key().scope();
        store.update_scope(&scope, |s| s.tables = 3);
        store.set_budget(&scope, Service::DynamoDb, 2.5, 0);
        let text = store.scope_fragments()[0].0.concat();
        assert!(text.contains("dynamodb_kinesis_scope_tables{account_id=\"123456789012\",region=\"us-east-1\"} 3\n"), "{text}");
        assert!(text.contains("dynamodb_kinesis_scope_request_rate_limit{account_id=\"123456789012\",region=\"us-east-1\",service=\"dynamodb\"} 2.5\n"), "{text}");
        assert_eq!(store.scope_state(&scope).unwrap().tables, 3);
        store.retain_scopes(&BTreeSet::new());
        assert!(store.scope_fragments().is_empty());
    }

    #[test]
    fn expectations_and_stream_match_render_and_follow_the_destinations() {
        let store = Store::new([key()]);
        let arn = |name: &str| format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}");
        let pattern = Arc::new(Pattern::new("^cdc-").unwrap());
        let before = store.generation();
        store.set_expectation(&key(), Some(true), Some(Arc::clone(&pattern)));
        assert_ne!(store.generation(), before);
        let text = store.fragments()[0].0.concat();
        assert!(text.contains("dynamodb_kinesis_table_destination_expected{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 1\n"), "{text}");
        assert!(!text.contains("stream_match"), "{text}");
        store.record(&key(), &Ok(vec![dest(&arn("audit"), "ACTIVE")]), 1.0);
        let text = store.fragments()[0].0.concat();
        assert!(text.contains("dynamodb_kinesis_table_destination_stream_match{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"), "{text}");
        store.record(&key(), &Ok(vec![dest(&arn("cdc-orders"), "ACTIVE")]), 2.0);
        assert_eq!(store.state(&key()).unwrap().stream_match, Some(true));
        store.set_expectation(&key(), Some(false), None);
        let state = store.state(&key()).unwrap();
        assert_eq!((state.expected, state.stream_match), (Some(false), None));
        // Unknown tables are ignored, and change nothing.
        let unknown = TableKey {
            table: "unknown".into(),
            ..key()
        };
        let before = store.generation();
        store.set_expectation(&unknown, Some(true), Some(pattern));
        store.record_tags(&unknown, Ok(Vec::new()), 3.0);
        store.set_exports_tags(&unknown, true);
        assert!(store.state(&unknown).is_none());
        assert_eq!(store.generation(), before);
    }

    #[test]
    fn tags_render_with_each_tables_own_label_names() {
        let other = TableKey {
            table: "payments".into(),
            ..key()
        };
        let plain = TableKey {
            table: "scratch".into(),
            ..key()
        };
        let pending = TableKey {
            table: "pending".into(),
            ..key()
        };
        let store = Store::new([key(), other.clone(), plain.clone(), pending.clone()]);
        // Nothing before a table's first poll.
        assert!(!store
            .fragments()
            .iter()
            .any(|f| f.0.concat().contains("table_tags")));
        for table in [key(), other.clone(), plain.clone(), pending.clone()] {
            store.record(&table, &Ok(vec![]), 1.0);
        }
        store.set_exports_tags(&pending, true);
        store.set_exports_tags(&key(), true);
        store.record_tags(
            &key(),
            Ok(vec![
                ("tag_team".into(), "payments".into()),
                ("tag_owner".into(), String::new()),
            ]),
            1.0,
        );
        store.record_tags(
            &other,
            Ok(vec![("tag_cost_center".into(), "42\"x".into())]),
            1.0,
        );
        let denied = PollError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        store.record_tags(&other, Err(&denied), 2.0);
        let text: String = store.fragments().iter().map(|f| f.0.concat()).collect();
        let tags: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("dynamodb_kinesis_table_tag"))
            .collect();
        assert_eq!(
            tags,
            [
                "dynamodb_kinesis_table_tags{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\",tag_team=\"payments\",tag_owner=\"\"} 1",
                "dynamodb_kinesis_table_tags{table=\"payments\",region=\"us-east-1\",account_id=\"123456789012\",tag_cost_center=\"42\\\"x\"} 1",
                "dynamodb_kinesis_table_tag_read_errors_total{table=\"payments\",region=\"us-east-1\",account_id=\"123456789012\",code=\"AccessDeniedException\"} 1",
                "dynamodb_kinesis_table_tags{table=\"scratch\",region=\"us-east-1\",account_id=\"123456789012\"} 1",
            ]
        );
    }

    #[test]
    fn requests_metrics_and_budgets_are_counted_per_scope() {
        let store = Store::new([]);
        let scope = key().scope();
        let other = ScopeKey {
            region: "eu-west-1".into(),
            ..scope.clone()
        };
        store.count_request(
            &scope,
            Service::DynamoDb,
            "DescribeKinesisStreamingDestination",
        );
        store.count_request(
            &scope,
            Service::DynamoDb,
            "DescribeKinesisStreamingDestination",
        );
        store.count_request(&scope, Service::CloudWatch, "GetMetricData");
        store.count_metrics_requested(&scope, 40);
        store.count_request(&other, Service::Sts, "GetCallerIdentity");
        store.set_budget(&scope, Service::DynamoDb, 25.0, 2);
        store.set_budget(&scope, Service::Kinesis, 5.0, 0);
        let text: String = store
            .scope_fragments()
            .iter()
            .map(|f| f.0.concat())
            .collect();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| {
                l.starts_with("dynamodb_kinesis_aws_requests_total")
                    || l.starts_with("dynamodb_kinesis_cloudwatch_metrics_requested_total")
                    || l.starts_with("dynamodb_kinesis_scope_request_rate_limit")
                    || l.starts_with("dynamodb_kinesis_scope_throttled_total")
            })
            .collect();
        assert_eq!(
            lines,
            [
                "dynamodb_kinesis_aws_requests_total{account_id=\"123456789012\",region=\"eu-west-1\",service=\"sts\",operation=\"GetCallerIdentity\"} 1",
                "dynamodb_kinesis_cloudwatch_metrics_requested_total{account_id=\"123456789012\",region=\"eu-west-1\"} 0",
                "dynamodb_kinesis_scope_request_rate_limit{account_id=\"123456789012\",region=\"us-east-1\",service=\"dynamodb\"} 25",
                "dynamodb_kinesis_scope_request_rate_limit{account_id=\"123456789012\",region=\"us-east-1\",service=\"kinesis\"} 5",
                "dynamodb_kinesis_scope_throttled_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"dynamodb\"} 2",
                "dynamodb_kinesis_scope_throttled_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"kinesis\"} 0",
                "dynamodb_kinesis_aws_requests_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"dynamodb\",operation=\"DescribeKinesisStreamingDestination\"} 2",
                "dynamodb_kinesis_aws_requests_total{account_id=\"123456789012\",region=\"us-east-1\",service=\"cloudwatch\",operation=\"GetMetricData\"} 1",
                "dynamodb_kinesis_cloudwatch_metrics_requested_total{account_id=\"123456789012\",region=\"us-east-1\"} 40",
            ]
        );
        // A scope removed takes its counters with it.
        store.retain_scopes(&BTreeSet::from([scope.clone()]));
        assert_eq!(store.scope_fragments().len(), 1);
        assert_eq!(
            store.scope_state(&scope).unwrap().requests[&Service::DynamoDb]
                ["DescribeKinesisStreamingDestination"],
            2
        );
    }

    #[test]
    fn visit_sees_every_table_across_batches_in_order() {
        let keys: Vec<TableKey> = (0..VISIT_BATCH * 2 + 7)
            .map(|i| TableKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
                table: format!("t{i:04}").into(),
            })
            .collect();
        let store = Store::new(keys.clone());
        let mut seen = Vec::new();
        store.visit(|state| seen.push(state.table.clone()));
        let want: Vec<Name> = keys.iter().map(|k| k.table.clone()).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn record_rerenders_fragments() {
        let store = Store::new([key()]);
        assert!(store.fragments()[0].0.iter().all(String::is_empty));
        let before = store.generation();
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 5.0);
        assert_ne!(store.generation(), before);
        let text = store.fragments()[0].0.concat();
        assert!(text.contains(
            "dynamodb_kinesis_destination_status{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\",stream_arn=\"s1\",status=\"ACTIVE\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "dynamodb_kinesis_table_poll_success{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 1\n"
        ));
    }
}
