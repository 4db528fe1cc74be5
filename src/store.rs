//! The state store: one [`TableState`] per table, readiness, and a
//! generation counter that moves on every change. The scheduler is its only
//! writer; the shared page (`page`) renders the metric text from it when a
//! snapshot is rebuilt, [`Store::visit`]ing the tables in batches so a
//! writer never waits for more than one batch. Its lock is never held
//! across an `.await`.
//!
//! The text is not kept per table: the page's snapshot already holds it
//! once, and a second copy would be most of the process's memory at
//! thousands of tables.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};

use crate::aws::{Destination, PollError};
use crate::metrics::{self, Fragments};
use crate::state::{TableKey, TableState};

struct Entry {
    state: TableState,
}

/// Tables rendered per read-lock acquisition in [`Store::visit`].
const VISIT_BATCH: usize = 256;

/// The shared state of all tables.
pub struct Store {
    tables: RwLock<BTreeMap<TableKey, Entry>>,
    polled: AtomicUsize,
    /// Set the first time every table had been polled; readiness does not
    /// drop again when a reload adds tables.
    was_ready: AtomicBool,
    /// Moves on every change of any table's text, so the shared page
    /// (`page`) knows whether its snapshot is out of date.
    generation: AtomicU64,
}

impl Store {
    /// A store with an empty state for each table.
    pub fn new(keys: impl IntoIterator<Item = TableKey>) -> Self {
        let store = Store {
            tables: RwLock::new(BTreeMap::new()),
            polled: AtomicUsize::new(0),
            was_ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
        };
        store.reconcile(keys);
        store
    }

    /// Make the store hold exactly `keys` after a reload: tables no longer
    /// configured go (with their series), new ones start empty, and tables
    /// that stay keep their state, status-change times and counters.
    pub fn reconcile(&self, keys: impl IntoIterator<Item = TableKey>) {
        let wanted: BTreeSet<TableKey> = keys.into_iter().collect();
        let mut tables = self.tables.write().unwrap_or_else(PoisonError::into_inner);
        tables.retain(|key, _| wanted.contains(key));
        for key in wanted {
            tables.entry(key).or_insert_with_key(|key| Entry {
                state: TableState::new(key),
            });
        }
        let polled = tables
            .values()
            .filter(|e| e.state.last_poll_ok.is_some())
            .count();
        self.polled.store(polled, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// Record the outcome of one poll.
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
        self.generation.fetch_add(1, Ordering::Release);
    }

    /// A number that changes whenever any table's text changes.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Call `f` with every table's state, in key order, taking the read
    /// lock for one batch of tables at a time.
    pub fn visit(&self, mut f: impl FnMut(&TableState)) {
        let mut after: Option<TableKey> = None;
        loop {
            let tables = self.tables.read().unwrap_or_else(PoisonError::into_inner);
            let range = match &after {
                None => tables.range::<TableKey, _>(..),
                Some(key) => tables.range::<TableKey, _>((Bound::Excluded(key), Bound::Unbounded)),
            };
            let mut seen = 0;
            let mut last = None;
            for (key, entry) in range.take(VISIT_BATCH) {
                f(&entry.state);
                seen += 1;
                last = Some(key);
            }
            if seen < VISIT_BATCH {
                return;
            }
            after = last.cloned();
        }
    }

    /// The metric text of every table, rendered now, in key order (for
    /// tests and diagnostics; the page renders straight into its blocks).
    pub fn fragments(&self) -> Vec<Fragments> {
        let mut out = Vec::new();
        self.visit(|state| out.push(metrics::render_table(state)));
        out
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
    fn visit_sees_every_table_across_batches_in_order() {
        let keys: Vec<TableKey> = (0..VISIT_BATCH * 2 + 7)
            .map(|i| TableKey {
                region: "us-east-1".into(),
                table: format!("t{i:04}"),
            })
            .collect();
        let store = Store::new(keys.clone());
        let mut seen = Vec::new();
        store.visit(|state| seen.push(state.table.clone()));
        let want: Vec<String> = keys.iter().map(|k| k.table.clone()).collect();
        assert_eq!(seen, want);
    }

    #[test]
    fn record_rerenders_fragments() {
        let store = Store::new([key()]);
        assert!(store.fragments()[0].0.iter().all(String::is_empty));
        store.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 5.0);
        assert_ne!(store.generation(), 0);
        let text = store.fragments()[0].0.concat();
        assert!(text.contains(
            "dynamodb_kinesis_destination_status{table=\"orders\",region=\"us-east-1\",stream_arn=\"s1\",status=\"ACTIVE\"} 1\n"
        ), "{text}");
        assert!(text.contains(
            "dynamodb_kinesis_table_poll_success{table=\"orders\",region=\"us-east-1\"} 1\n"
        ));
    }
}
