//! What the polls left behind: one [`TableState`] per configured table,
//! the bookkeeping of when each destination's status last changed, and the
//! table's metric text, re-rendered whenever a poll is recorded.
//!
//! The [`Store`] is the only thing the scheduler writes and the HTTP server
//! reads. Its lock is held for map updates and for cloning `Arc`s, never
//! across an `.await` and never while a scrape copies bytes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::aws::{Destination, PollError};
use crate::metrics::{self, Fragments, KNOWN_STATUSES};

/// Identifies a table in the store and in the metrics (`region`, `table`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TableKey {
    pub region: String,
    pub table: String,
}

/// A destination as last seen, plus when its current status was first seen.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationState {
    pub stream_arn: String,
    pub status: String,
    pub description: Option<String>,
    pub precision: Option<String>,
    /// Unix time at which this process first saw `status`.
    pub since: f64,
}

/// Everything the metrics say about one table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TableState {
    pub table: String,
    pub region: String,
    /// `None` until the first poll finished; then whether the last one worked.
    pub last_poll_ok: Option<bool>,
    /// Unix time of the last successful poll.
    pub last_success: Option<f64>,
    /// Destinations listed by the last successful poll; `None` before one.
    pub destination_count: Option<usize>,
    /// Sorted by stream ARN so the output order is stable.
    pub destinations: Vec<DestinationState>,
    /// Failed polls by error code (a counter: never decreases).
    pub errors: BTreeMap<String, u64>,
    /// The code of the failure in progress, to log only changes at warn.
    pub failing_with: Option<String>,
}

impl TableState {
    fn new(key: &TableKey) -> Self {
        TableState {
            table: key.table.clone(),
            region: key.region.clone(),
            ..TableState::default()
        }
    }

    /// Fold a successful poll in. `now` is unix time in seconds.
    pub fn record_success(&mut self, destinations: &[Destination], now: f64) {
        let mut fresh: Vec<DestinationState> = Vec::with_capacity(destinations.len());
        for d in destinations {
            if fresh.iter().any(|f| f.stream_arn == d.stream_arn) {
                // Two entries for one stream would be duplicate series.
                tracing::warn!(table = %self.table, region = %self.region, stream_arn = %d.stream_arn,
                    "AWS listed the same stream twice; keeping the first entry");
                continue;
            }
            let previous = self
                .destinations
                .iter()
                .find(|p| p.stream_arn == d.stream_arn);
            let since = match previous {
                Some(p) if p.status == d.status => p.since,
                _ => {
                    self.log_status_change(previous.map(|p| p.status.as_str()), d);
                    now
                }
            };
            fresh.push(DestinationState {
                stream_arn: d.stream_arn.clone(),
                status: d.status.clone(),
                description: d.status_description.clone(),
                precision: d.precision.clone(),
                since,
            });
        }
        for gone in &self.destinations {
            if !fresh.iter().any(|f| f.stream_arn == gone.stream_arn) {
                tracing::info!(table = %self.table, region = %self.region, stream_arn = %gone.stream_arn,
                    "destination no longer listed");
            }
        }
        fresh.sort_by(|a, b| a.stream_arn.cmp(&b.stream_arn));
        if let Some(code) = self.failing_with.take() {
            tracing::info!(table = %self.table, region = %self.region, previous_error = %code,
                "poll succeeded again");
        }
        self.destination_count = Some(fresh.len());
        self.destinations = fresh;
        self.last_poll_ok = Some(true);
        self.last_success = Some(now);
    }

    /// Fold a failed poll in. A missing table loses its destination series;
    /// any other failure keeps the last known ones (their age shows in
    /// `last_success`).
    pub fn record_failure(&mut self, err: &PollError) {
        let code = err.code().to_string();
        *self.errors.entry(code.clone()).or_insert(0) += 1;
        if let PollError::NotFound(_) = err {
            self.destinations.clear();
            self.destination_count = Some(0);
        }
        if self.failing_with.as_deref() == Some(code.as_str()) {
            tracing::debug!(table = %self.table, region = %self.region, code = %code, error = %err, "poll failed again");
        } else {
            tracing::warn!(table = %self.table, region = %self.region, code = %code, error = %err, "poll failed");
        }
        self.failing_with = Some(code);
        self.last_poll_ok = Some(false);
    }

    fn log_status_change(&self, from: Option<&str>, to: &Destination) {
        let from = from.unwrap_or("(new)");
        let description = to.status_description.as_deref().unwrap_or("");
        if !KNOWN_STATUSES.contains(&to.status.as_str()) {
            tracing::warn!(table = %self.table, region = %self.region, stream_arn = %to.stream_arn,
                status = %to.status, "destination reports a status this exporter does not know; exporting it as its own series");
        }
        if to.status == "ENABLE_FAILED" {
            tracing::warn!(table = %self.table, region = %self.region, stream_arn = %to.stream_arn,
                from, to = %to.status, description, "destination status changed");
        } else {
            tracing::info!(table = %self.table, region = %self.region, stream_arn = %to.stream_arn,
                from, to = %to.status, description, "destination status changed");
        }
    }
}

struct Entry {
    state: TableState,
    fragments: Arc<Fragments>,
}

/// The shared state of all tables.
pub struct Store {
    tables: RwLock<BTreeMap<TableKey, Entry>>,
    polled: AtomicUsize,
    /// Set the first time every table had been polled; readiness does not
    /// drop again when a reload adds tables.
    was_ready: AtomicBool,
}

impl Store {
    /// A store with an empty state for each table.
    pub fn new(keys: impl IntoIterator<Item = TableKey>) -> Self {
        let store = Store {
            tables: RwLock::new(BTreeMap::new()),
            polled: AtomicUsize::new(0),
            was_ready: AtomicBool::new(false),
        };
        store.reconcile(keys);
        store
    }

    /// Make the store hold exactly `keys` after a reload: tables no longer
    /// configured go (with their series), new ones start empty, and tables
    /// that stay keep their state, status-change times and counters.
    pub fn reconcile(&self, keys: impl IntoIterator<Item = TableKey>) {
        let wanted: std::collections::BTreeSet<TableKey> = keys.into_iter().collect();
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        tables.retain(|key, _| wanted.contains(key));
        for key in wanted {
            tables.entry(key).or_insert_with_key(|key| {
                let state = TableState::new(key);
                let fragments = Arc::new(metrics::render_table(&state));
                Entry { state, fragments }
            });
        }
        let polled = tables
            .values()
            .filter(|e| e.state.last_poll_ok.is_some())
            .count();
        self.polled.store(polled, Ordering::Relaxed);
    }

    /// Record the outcome of one poll and re-render the table's metrics.
    /// Unknown keys are ignored (cannot happen with the scheduler's keys).
    pub fn record(&self, key: &TableKey, outcome: &Result<Vec<Destination>, PollError>, now: f64) {
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = tables.get_mut(key) else {
            return;
        };
        if entry.state.last_poll_ok.is_none() {
            self.polled.fetch_add(1, Ordering::Relaxed);
        }
        match outcome {
            Ok(destinations) => entry.state.record_success(destinations, now),
            Err(err) => entry.state.record_failure(err),
        }
        entry.fragments = Arc::new(metrics::render_table(&entry.state));
    }

    /// The rendered fragments of every table, in key order.
    pub fn fragments(&self) -> Vec<Arc<Fragments>> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables.values().map(|e| Arc::clone(&e.fragments)).collect()
    }

    /// A copy of one table's state (for tests and diagnostics).
    pub fn state(&self, key: &TableKey) -> Option<TableState> {
        let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
        tables.get(key).map(|e| e.state.clone())
    }

    /// (tables polled at least once, tables configured).
    pub fn readiness(&self) -> (usize, usize) {
        let total = self
            .tables
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        (self.polled.load(Ordering::Relaxed), total)
    }

    /// True once every table has been polled at least once; stays true.
    pub fn is_ready(&self) -> bool {
        if self.was_ready.load(Ordering::Relaxed) {
            return true;
        }
        let (polled, total) = self.readiness();
        let ready = polled >= total;
        if ready {
            self.was_ready.store(true, Ordering::Relaxed);
        }
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TableKey {
        TableKey {
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
    fn status_change_time_moves_only_on_change() {
        let store = Store::new([key()]);
        store.record(&key(), &Ok(vec![dest("s1", "ENABLING")]), 100.0);
        store.record(&key(), &Ok(vec![dest("s1", "ENABLING")]), 160.0);
        assert_eq!(store.state(&key()).unwrap().destinations[0].since, 100.0);
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 220.0);
        let state = store.state(&key()).unwrap();
        assert_eq!(state.destinations[0].since, 220.0);
        assert_eq!(state.destinations[0].status, "ACTIVE");
        assert_eq!(state.last_success, Some(220.0));
    }

    #[test]
    fn transient_failure_keeps_series_and_counts_by_code() {
        let store = Store::new([key()]);
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 100.0);
        store.record(&key(), &Err(throttled()), 160.0);
        store.record(&key(), &Err(throttled()), 220.0);
        store.record(&key(), &Err(PollError::Timeout("t".into())), 280.0);
        let state = store.state(&key()).unwrap();
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(state.destination_count, Some(1));
        assert_eq!(state.last_poll_ok, Some(false));
        assert_eq!(state.last_success, Some(100.0));
        assert_eq!(state.errors.get("ThrottlingException"), Some(&2));
        assert_eq!(state.errors.get("timeout"), Some(&1));
    }

    #[test]
    fn not_found_removes_destinations() {
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
    fn vanished_destination_is_dropped_and_order_is_stable() {
        let store = Store::new([key()]);
        store.record(
            &key(),
            &Ok(vec![dest("s2", "ACTIVE"), dest("s1", "ACTIVE")]),
            1.0,
        );
        let arns: Vec<String> = store
            .state(&key())
            .unwrap()
            .destinations
            .into_iter()
            .map(|d| d.stream_arn)
            .collect();
        assert_eq!(arns, ["s1", "s2"]);
        store.record(&key(), &Ok(vec![dest("s2", "ACTIVE")]), 2.0);
        let state = store.state(&key()).unwrap();
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(state.destinations[0].stream_arn, "s2");
        assert_eq!(state.destinations[0].since, 1.0);
    }

    #[test]
    fn duplicate_stream_entries_are_collapsed() {
        let store = Store::new([key()]);
        store.record(
            &key(),
            &Ok(vec![dest("s1", "ACTIVE"), dest("s1", "DISABLED")]),
            1.0,
        );
        let state = store.state(&key()).unwrap();
        assert_eq!(state.destinations.len(), 1);
        assert_eq!(state.destinations[0].status, "ACTIVE");
    }

    #[test]
    fn readiness_counts_each_table_once() {
        let other = TableKey {
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
            region: "us-east-1".into(),
            table: "payments".into(),
        };
        let store = Store::new([key(), other.clone()]);
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 10.0);
        store.record(&key(), &Err(throttled()), 20.0);
        store.record(&other, &Ok(vec![]), 10.0);
        assert!(store.is_ready());
        let added = TableKey {
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
    fn record_rerenders_fragments() {
        let store = Store::new([key()]);
        assert!(store.fragments()[0].0.iter().all(String::is_empty));
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 5.0);
        let text = store.fragments()[0].0.concat();
        assert!(text.contains(
            "dynamodb_kinesis_destination_status{table=\"orders\",region=\"us-east-1\",stream_arn=\"s1\",status=\"ACTIVE\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "dynamodb_kinesis_table_poll_success{table=\"orders\",region=\"us-east-1\"} 1\n"
        ));
    }
}
