//! The state store: one entry per table, per checked stream and per
//! (account, region) scope, readiness, and a generation counter that moves
//! on every change. The scheduler and the fleet are its writers; the shared
//! page (`exposition::page`) renders the metric text from it, visiting the
//! entries in chunks so a writer never waits for more than one chunk (or,
//! after entries came or went, for the one pass over their ids, change
//! stamps and success times that indexes them again). Its locks are never
//! held across an `.await`.
//!
//! The text is not kept per entry: the page holds it once, and a second
//! copy would be most of the process's memory at thousands of tables.
//! What the store keeps instead is, per entry, an id that never changes
//! while the entry lives and, per [`Part`] of its state, the generation of
//! the last change to that part ([`Tracked`]). From those the page tells,
//! chunk by chunk and family by family, whether its text from an earlier
//! generation still holds: a poll that only moves a table's last success
//! time re-renders only the families that read it. The store also keeps,
//! per chunk of entries, the latest of those stamps and the entries'
//! success times ([`Runs`]), so a chunk where nothing changed, or only the
//! success times did, costs the page no read of its entries.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use crate::aws::{Destination, PollError, StreamSummary};
use crate::config::Pattern;
use crate::state::{
    CdcPoint, Name, ScopeKey, ScopeState, Service, StreamKey, StreamState, TableKey, TableState,
};

/// Entries per read-lock acquisition in [`Store::visit`] and its kin.
const VISIT_BATCH: usize = 256;

/// A part of an entry's state that metric families read apart from the
/// rest, so that a change to it re-renders only the families that read it.
/// Every field a family renders belongs to one part (the diff functions
/// below list each field, so a new field does not compile until it has
/// one); scopes, small and few, count any change as a change of every part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// A table's destinations and their count; a stream's status and
    /// summary.
    Listing,
    /// Whether the last poll worked.
    Outcome,
    /// The time of the last successful poll.
    LastSuccess,
    /// The error counters.
    Errors,
    /// A table's CloudWatch CDC datapoints.
    Cdc,
    /// What the configuration expects of a table, and whether its stream
    /// matches.
    Expectation,
    /// A table's exported tags.
    Tags,
}

const PARTS: usize = 7;

impl Part {
    /// Every part.
    pub const ALL: [Part; PARTS] = [
        Part::Listing,
        Part::Outcome,
        Part::LastSuccess,
        Part::Errors,
        Part::Cdc,
        Part::Expectation,
        Part::Tags,
    ];

    fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// A store entry: the state, the entry's id and when each part of it last
/// changed.
#[derive(Debug, Clone)]
pub struct Tracked<S> {
    id: u64,
    /// Per [`Part`], the store generation of its last change.
    changed: [u64; PARTS],
    /// Its place in its run of the map's index, while the index is fresh.
    slot: u32,
    state: S,
}

impl<S> Tracked<S> {
    fn new(id: u64, generation: u64, state: S) -> Self {
        Tracked {
            id,
            changed: [generation; PARTS],
            slot: 0,
            state,
        }
    }

    /// Unique in the store, and the same for as long as the entry lives:
    /// an entry removed and added again has a new id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The entry's state.
    pub fn state(&self) -> &S {
        &self.state
    }

    /// The store generation of the last change to `part`.
    pub fn changed(&self, part: Part) -> u64 {
        self.changed[part as usize]
    }

    /// Whether any of `parts` changed after store generation `generation`.
    pub fn changed_after(&self, parts: &[Part], generation: u64) -> bool {
        parts.iter().any(|part| self.changed(*part) > generation)
    }

    /// Apply `change` to the state and stamp the parts `diff` says it
    /// changed with the store's next generation. Returns `change`'s result
    /// and, if anything changed, the generation and the parts' bits.
    fn update<R>(
        &mut self,
        store: &Store,
        diff: fn(&S, &S) -> u8,
        change: impl FnOnce(&mut S) -> R,
    ) -> (R, Option<(u64, u8)>)
    where
        S: Clone,
    {
        let before = self.state.clone();
        let out = change(&mut self.state);
        let bits = diff(&before, &self.state);
        if bits == 0 {
            return (out, None);
        }
        // Taken while the writer holds the lock: a render that read an
        // older generation either sees this change or finds it stamped
        // after what it read.
        let generation = store.bump();
        for part in Part::ALL {
            if bits & part.bit() != 0 {
                self.changed[part as usize] = generation;
            }
        }
        (out, Some((generation, bits)))
    }
}

/// The parts in which two states of a table differ.
fn table_diff(a: &TableState, b: &TableState) -> u8 {
    // Field by field, without `..`: a new field must be given a part here.
    let TableState {
        table,
        region,
        account_id,
        last_poll_ok,
        last_success,
        destination_count,
        destinations,
        errors,
        failing_with: _,
        cdc,
        expected,
        stream_pattern,
        stream_match,
        tags,
        tags_read_at: _,
        tag_errors,
        tags_failing_with: _,
    } = b;
    let mut bits = 0;
    if *table != a.table || *region != a.region || *account_id != a.account_id {
        return u8::MAX;
    }
    if *destination_count != a.destination_count || *destinations != a.destinations {
        bits |= Part::Listing.bit();
    }
    if *last_poll_ok != a.last_poll_ok {
        bits |= Part::Outcome.bit();
    }
    if *last_success != a.last_success {
        bits |= Part::LastSuccess.bit();
    }
    if *errors != a.errors {
        bits |= Part::Errors.bit();
    }
    if *cdc != a.cdc {
        bits |= Part::Cdc.bit();
    }
    if *expected != a.expected
        || *stream_pattern != a.stream_pattern
        || *stream_match != a.stream_match
    {
        bits |= Part::Expectation.bit();
    }
    if *tags != a.tags {
        bits |= Part::Tags.bit();
    }
    if *tag_errors != a.tag_errors {
        bits |= Part::Errors.bit();
    }
    bits
}

/// The parts in which two states of a stream differ.
fn stream_diff(a: &StreamState, b: &StreamState) -> u8 {
    let StreamState {
        account_id,
        region,
        stream_arn,
        status,
        summary,
        last_poll_ok,
        last_success,
        errors,
        failing_with: _,
    } = b;
    let mut bits = 0;
    if *account_id != a.account_id || *region != a.region || *stream_arn != a.stream_arn {
        return u8::MAX;
    }
    if *status != a.status || *summary != a.summary {
        bits |= Part::Listing.bit();
    }
    if *last_poll_ok != a.last_poll_ok {
        bits |= Part::Outcome.bit();
    }
    if *last_success != a.last_success {
        bits |= Part::LastSuccess.bit();
    }
    if *errors != a.errors {
        bits |= Part::Errors.bit();
    }
    bits
}

/// Scopes: any change is a change of every part.
fn scope_diff(a: &ScopeState, b: &ScopeState) -> u8 {
    if a == b {
        0
    } else {
        u8::MAX
    }
}

/// The shared state of all tables, streams and scopes.
pub struct Store {
    tables: RwLock<Entries<TableKey, TableState>>,
    scopes: RwLock<Entries<ScopeKey, ScopeState>>,
    streams: RwLock<Entries<StreamKey, StreamState>>,
    polled: AtomicUsize,
    /// Work that must finish before the table list is known (account
    /// lookups, first discovery refreshes); readiness waits for it.
    pending: AtomicUsize,
    /// What that work is, as `/readyz` says it (empty before the fleet
    /// named it).
    waiting: Mutex<Vec<String>>,
    /// Start-up steps whose attempt failed at least once ([`Store::note_failed_step`]).
    failed_steps: Mutex<BTreeSet<String>>,
    /// Set the first time every table had been polled; readiness does not
    /// drop again when a reload adds tables.
    was_ready: AtomicBool,
    /// Moves on every change of anything rendered, so the shared page knows
    /// whether its snapshot is out of date.
    generation: AtomicU64,
    /// The next entry id.
    ids: AtomicU64,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

/// An entry's success time (its [`Part::LastSuccess`]), which the store's
/// index keeps beside the change stamps.
pub trait SuccessTime {
    fn success_time(&self) -> Option<f64>;
}

impl SuccessTime for TableState {
    fn success_time(&self) -> Option<f64> {
        self.last_success
    }
}

impl SuccessTime for StreamState {
    fn success_time(&self) -> Option<f64> {
        self.last_success
    }
}

impl SuccessTime for ScopeState {
    fn success_time(&self) -> Option<f64> {
        None
    }
}

/// One map of the store: its entries by key, and an index of them in
/// runs for the page.
///
/// The index splits the entries, in key order, into runs of a size the
/// page asks for (its chunks), and keeps per run the entries' ids, per
/// [`Part`] the latest change stamp among them, and their success times.
/// The writers keep it up to date as they stamp entries; an entry added or
/// removed marks it stale, and the next reader that asks builds it again
/// (under the write lock: it gives each entry its slot in its run).
///
/// From it the page tells that a chunk still holds, and rewrites the
/// success times, which change at every poll, without reading the entries:
/// the map's nodes are kilobytes each, scattered over the heap, and when
/// the page walked them all, that walk (cold after a second of polls) was
/// most of a gzip scrape's CPU at 10,000 tables.
struct Entries<K, S> {
    map: BTreeMap<K, Tracked<S>>,
    index: Index<K>,
}

struct Index<K> {
    /// False once an entry was added or removed since it was built.
    fresh: bool,
    /// Entries per run.
    size: usize,
    runs: Vec<RunIndex<K>>,
}

/// One run of an [`Index`].
#[derive(Clone)]
struct RunIndex<K> {
    /// The key of its first entry: the run covers the keys from this one
    /// to the next run's first (the first run, every key before too).
    first: K,
    ids: Arc<[u64]>,
    /// Per part, the latest change stamp among its entries.
    latest: [u64; PARTS],
    /// Per entry, in order, its success time.
    times: Vec<Option<f64>>,
}

impl<K: Ord + Clone, S: Clone + SuccessTime> Entries<K, S> {
    fn new(map: BTreeMap<K, Tracked<S>>) -> Self {
        Entries {
            map,
            index: Index {
                fresh: false,
                size: 0,
                runs: Vec::new(),
            },
        }
    }

    fn get(&self, key: &K) -> Option<&Tracked<S>> {
        self.map.get(key)
    }

    /// Apply `change` to `key`'s entry (see [`Tracked::update`]), if it
    /// exists, and carry its stamp (and success time) to the index.
    fn update<R>(
        &mut self,
        key: &K,
        store: &Store,
        diff: fn(&S, &S) -> u8,
        change: impl FnOnce(&mut S) -> R,
    ) -> Option<R> {
        let entry = self.map.get_mut(key)?;
        let (out, stamp) = entry.update(store, diff, change);
        let index = &mut self.index;
        if let (Some((generation, bits)), true) = (stamp, index.fresh) {
            let at = index.runs.partition_point(|run| run.first <= *key);
            if let Some(run) = index.runs.get_mut(at.saturating_sub(1)) {
                for part in Part::ALL {
                    if bits & part.bit() != 0 {
                        run.latest[part as usize] = generation;
                    }
                }
                if bits & Part::LastSuccess.bit() != 0 {
                    if let Some(time) = run.times.get_mut(entry.slot as usize) {
                        *time = entry.state.success_time();
                    }
                }
            }
        }
        Some(out)
    }

    /// Add `key`'s entry, made by `make`, unless it exists.
    fn ensure(&mut self, key: &K, make: impl FnOnce() -> Tracked<S>) {
        if !self.map.contains_key(key) {
            self.map.insert(key.clone(), make());
            self.index.fresh = false;
        }
    }

    /// Remove `key`'s entry; returns whether it existed.
    fn remove(&mut self, key: &K) -> bool {
        let removed = self.map.remove(key).is_some();
        if removed {
            self.index.fresh = false;
        }
        removed
    }

    /// Keep only the entries whose key `keep` accepts.
    fn retain(&mut self, mut keep: impl FnMut(&K) -> bool) {
        let before = self.map.len();
        self.map.retain(|key, _| keep(key));
        if self.map.len() != before {
            self.index.fresh = false;
        }
    }

    /// Replace every entry.
    fn replace(&mut self, map: BTreeMap<K, Tracked<S>>) {
        self.index.fresh = false;
        self.map = map;
    }

    /// The index in runs of `size` entries, if fresh and of that size.
    fn runs(&self, size: usize) -> Option<Vec<RunIndex<K>>> {
        let index = &self.index;
        (index.fresh && index.size == size).then(|| index.runs.clone())
    }

    /// Build the index again in runs of `size` entries. The ids of a run
    /// whose entries are those of the same run before are the same
    /// allocation as before.
    fn reindex(&mut self, size: usize) -> Vec<RunIndex<K>> {
        let size = size.max(1);
        let old = std::mem::take(&mut self.index.runs);
        let mut runs: Vec<RunIndex<K>> = Vec::with_capacity(self.map.len().div_ceil(size));
        let mut entries = self.map.iter_mut().peekable();
        while let Some((first, _)) = entries.peek() {
            let first = (*first).clone();
            let (mut ids, mut times) = (Vec::with_capacity(size), Vec::with_capacity(size));
            let mut latest = [0; PARTS];
            for (slot, (_, entry)) in entries.by_ref().take(size).enumerate() {
                entry.slot = slot as u32;
                ids.push(entry.id);
                times.push(entry.state.success_time());
                for (last, stamp) in latest.iter_mut().zip(entry.changed) {
                    *last = stamp.max(*last);
                }
            }
            let ids = match old.get(runs.len()) {
                Some(before) if *before.ids == *ids => Arc::clone(&before.ids),
                _ => ids.into(),
            };
            runs.push(RunIndex {
                first,
                ids,
                latest,
                times,
            });
        }
        self.index = Index {
            fresh: true,
            size,
            runs: runs.clone(),
        };
        runs
    }
}

/// The entries of one map in runs of a given size, in key order, as of
/// when they were asked for (see [`Entries`]): per run, the entries' ids
/// and when each part of them last changed, without reading the entries;
/// and the entries themselves on request.
pub struct Runs<'a, K, S> {
    entries: &'a RwLock<Entries<K, S>>,
    runs: Vec<RunIndex<K>>,
}

impl<K: Ord + Clone, S> Runs<'_, K, S> {
    /// How many runs there are.
    pub fn len(&self) -> usize {
        self.runs.len()
    }

    /// Whether there are none (no entries).
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
    }

    /// The ids of run `at`'s entries, in key order.
    pub fn ids(&self, at: usize) -> &Arc<[u64]> {
        &self.runs[at].ids
    }

    /// The success times of run `at`'s entries, in order (see
    /// [`SuccessTime`]).
    pub fn success_times(&self, at: usize) -> &[Option<f64>] {
        &self.runs[at].times
    }

    /// Whether any of `parts` of any entry of run `at` changed after store
    /// generation `generation`.
    pub fn changed_after(&self, at: usize, parts: &[Part], generation: u64) -> bool {
        let latest = &self.runs[at].latest;
        parts.iter().any(|part| latest[*part as usize] > generation)
    }

    /// Call `f` with the entries now in run `at`'s range of keys, under the
    /// read lock. An entry added or removed since the runs were taken shows
    /// in the run its key falls in, or not: every other entry shows in
    /// exactly one run.
    pub fn visit(&self, at: usize, f: impl FnOnce(&[&Tracked<S>])) {
        let lower = match at {
            0 => Bound::Unbounded,
            _ => Bound::Included(&self.runs[at].first),
        };
        let upper = self
            .runs
            .get(at + 1)
            .map_or(Bound::Unbounded, |next| Bound::Excluded(&next.first));
        let entries = read(self.entries);
        let run: Vec<&Tracked<S>> = entries
            .map
            .range::<K, _>((lower, upper))
            .map(|(_, e)| e)
            .collect();
        f(&run);
    }
}

fn runs<K: Ord + Clone, S: Clone + SuccessTime>(
    entries: &RwLock<Entries<K, S>>,
    size: usize,
) -> Runs<'_, K, S> {
    let size = size.max(1);
    let fresh = read(entries).runs(size);
    let runs = fresh.unwrap_or_else(|| write(entries).reindex(size));
    Runs { entries, runs }
}

/// Call `f` with every state of `entries` in key order, [`VISIT_BATCH`]
/// entries per read-lock acquisition. A batch starts where the previous one
/// ended, so an entry added or removed meanwhile shows or not, and every
/// other entry shows exactly once.
fn visit_batched<K: Ord + Clone, S>(entries: &RwLock<Entries<K, S>>, mut f: impl FnMut(&S)) {
    let mut after: Option<K> = None;
    loop {
        let entries = read(entries);
        let range = match &after {
            None => entries.map.range::<K, _>(..),
            Some(key) => entries
                .map
                .range::<K, _>((Bound::Excluded(key), Bound::Unbounded)),
        };
        let mut seen = 0;
        for (key, entry) in range.take(VISIT_BATCH) {
            f(&entry.state);
            seen += 1;
            if seen == VISIT_BATCH {
                after = Some(key.clone());
            }
        }
        if seen < VISIT_BATCH {
            return;
        }
    }
}

impl Store {
    /// A store with an empty state for each table.
    pub fn new(keys: impl IntoIterator<Item = TableKey>) -> Self {
        let store = Store {
            tables: RwLock::new(Entries::new(BTreeMap::new())),
            scopes: RwLock::new(Entries::new(BTreeMap::new())),
            streams: RwLock::new(Entries::new(BTreeMap::new())),
            polled: AtomicUsize::new(0),
            pending: AtomicUsize::new(0),
            waiting: Mutex::new(Vec::new()),
            failed_steps: Mutex::new(BTreeSet::new()),
            was_ready: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            ids: AtomicU64::new(0),
        };
        store.reconcile(keys);
        store
    }

    /// Move the generation on; returns the new one.
    fn bump(&self) -> u64 {
        self.generation.fetch_add(1, Ordering::AcqRel) + 1
    }

    fn changed(&self) {
        self.bump();
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
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
        let mut old = std::mem::take(&mut tables.map);
        let generation = self.bump();
        let map = wanted
            .into_iter()
            .map(|key| {
                let entry = old.remove(&key).unwrap_or_else(|| {
                    Tracked::new(self.next_id(), generation, TableState::new(&key))
                });
                (key, entry)
            })
            .collect();
        tables.replace(map);
        drop(old);
        let polled = (tables.map)
            .values()
            .filter(|entry| entry.state.last_poll_ok.is_some())
            .count();
        self.polled.store(polled, Ordering::Relaxed);
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
        let recorded = tables.update(key, self, table_diff, |state| {
            let first = state.last_poll_ok.is_none();
            match outcome {
                Ok(destinations) => state.record_success(destinations, now),
                Err(err) => state.record_failure(err),
            }
            let mut checked: Vec<Name> = state.checked_streams().cloned().collect();
            // Kept by the scheduler for every table: no spare capacity.
            checked.shrink_to_fit();
            (first, checked)
        });
        let Some((first, checked)) = recorded else {
            return Vec::new();
        };
        if first {
            self.polled.fetch_add(1, Ordering::Relaxed);
        }
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
        write(&self.tables).update(key, self, table_diff, change);
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
        let mut scopes = write(&self.scopes);
        scopes.ensure(key, || {
            Tracked::new(self.next_id(), self.bump(), ScopeState::new(key))
        });
        scopes.update(key, self, scope_diff, change);
    }

    /// Keep only the scopes in `keys`; the others' series go, their
    /// streams' too.
    pub fn retain_scopes(&self, keys: &BTreeSet<ScopeKey>) {
        write(&self.scopes).retain(|key| keys.contains(key));
        write(&self.streams).retain(|key| keys.contains(&key.scope()));
        self.changed();
    }

    /// Record one check of a stream, creating its entry if new.
    pub fn record_stream(
        &self,
        key: &StreamKey,
        outcome: &Result<StreamSummary, PollError>,
        now: f64,
    ) {
        let mut streams = write(&self.streams);
        streams.ensure(key, || {
            Tracked::new(self.next_id(), self.bump(), StreamState::new(key))
        });
        streams.update(key, self, stream_diff, |state| state.record(outcome, now));
    }

    /// Forget a stream no working destination names any more.
    pub fn remove_stream(&self, key: &StreamKey) {
        if write(&self.streams).remove(key) {
            self.changed();
        }
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

    /// The tables in key order, in runs of `size` (see [`Runs`]).
    pub fn table_runs(&self, size: usize) -> Runs<'_, TableKey, TableState> {
        runs(&self.tables, size)
    }

    /// The same for the streams.
    pub fn stream_runs(&self, size: usize) -> Runs<'_, StreamKey, StreamState> {
        runs(&self.streams, size)
    }

    /// The same for the scopes.
    pub fn scope_runs(&self, size: usize) -> Runs<'_, ScopeKey, ScopeState> {
        runs(&self.scopes, size)
    }

    /// A copy of one table's state (for tests and diagnostics).
    pub fn state(&self, key: &TableKey) -> Option<TableState> {
        read(&self.tables).get(key).map(|e| e.state.clone())
    }

    /// A copy of one stream's state.
    pub fn stream_state(&self, key: &StreamKey) -> Option<StreamState> {
        read(&self.streams).get(key).map(|e| e.state.clone())
    }

    /// A copy of one scope's state.
    pub fn scope_state(&self, key: &ScopeKey) -> Option<ScopeState> {
        read(&self.scopes).get(key).map(|e| e.state.clone())
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

    /// Say that an attempt at a start-up step (named as in
    /// [`Store::set_waiting`]) failed; it is retried, and readiness still
    /// waits for it.
    pub fn note_failed_step(&self, step: String) {
        (self.failed_steps.lock())
            .unwrap_or_else(PoisonError::into_inner)
            .insert(step);
    }

    /// True once every table known has been polled at least once (well or
    /// not) and every start-up step still waited for has failed at least
    /// once: all that can be learnt without waiting for a retry is known
    /// (what `--once` waits for).
    pub fn is_settled(&self) -> bool {
        if self.is_ready() {
            return true;
        }
        let (polled, total) = self.readiness();
        let waiting = self.waiting();
        // Steps counted but not named yet: the fleet has not started.
        if self.pending.load(Ordering::Relaxed) != waiting.len() {
            return false;
        }
        let failed = self
            .failed_steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        polled >= total && waiting.iter().all(|step| failed.contains(step))
    }

    /// (tables polled at least once, tables known).
    pub fn readiness(&self) -> (usize, usize) {
        let total = read(&self.tables).map.len();
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
    use crate::state::fixtures::{dest, throttled};
    use std::sync::Arc;

    fn key_of(table: &str) -> TableKey {
        TableKey {
            table: table.into(),
            ..key()
        }
    }

    fn key() -> TableKey {
        TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: "orders".into(),
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
        let mut held = Vec::new();
        store.visit(|state| held.push(format!("{}/{}", state.region, state.table)));
        assert_eq!(held, ["eu-west-1/orders", "us-east-1/orders"]);
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
    fn scopes_change_and_go() {
        let store = Store::new([]);
        let scope = key().scope();
        store.update_scope(&scope, |s| s.tables = 3);
        store.set_budget(&scope, Service::DynamoDb, 2.5, 0);
        let state = store.scope_state(&scope).unwrap();
        assert_eq!(state.tables, 3);
        assert_eq!(state.budgets[&Service::DynamoDb].rate_limit, 2.5);
        // A change that changes nothing does not move the generation.
        let before = store.generation();
        store.set_budget(&scope, Service::DynamoDb, 2.5, 0);
        assert_eq!(store.generation(), before);
        store.retain_scopes(&BTreeSet::new());
        assert_ne!(store.generation(), before);
        let mut left = 0;
        store.visit_scopes(|_| left += 1);
        assert_eq!(left, 0);
        assert!(store.scope_state(&scope).is_none());
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
        // In runs: every entry once, in order, in runs of the size asked,
        // with their ids.
        let mut sizes = Vec::new();
        let mut chunked = Vec::new();
        let runs = store.table_runs(200);
        for at in 0..runs.len() {
            runs.visit(at, |run| {
                sizes.push(run.len());
                chunked.extend(run.iter().map(|e| e.state().table.clone()));
                assert!(runs.ids(at).iter().copied().eq(run.iter().map(|e| e.id())));
            });
        }
        assert_eq!(sizes, [200, 200, 119]);
        assert_eq!(chunked, want);
        // A run cut exactly at the end: no empty run after it.
        assert_eq!(store.table_runs(173).len(), 3);
        assert!(Store::new([]).table_runs(10).is_empty());
    }

    /// The names of the tables each run of `runs` covers now.
    fn run_tables(runs: &Runs<'_, TableKey, TableState>) -> Vec<Vec<String>> {
        (0..runs.len())
            .map(|at| {
                let mut names = Vec::new();
                runs.visit(at, |run| {
                    names.extend(run.iter().map(|e| e.state().table.to_string()));
                });
                names
            })
            .collect()
    }

    #[test]
    fn runs_cover_every_key_once_when_tables_come_and_go_after_they_were_taken() {
        let key = |t: &str| TableKey {
            table: t.into(),
            ..key()
        };
        let store = Store::new(["b", "c", "e", "f", "h"].map(key));
        let runs = store.table_runs(2);
        assert_eq!(
            run_tables(&runs),
            [vec!["b", "c"], vec!["e", "f"], vec!["h"]]
        );
        // Added before the first run, between runs, after the last; one
        // removed: each shows in the run its key falls in.
        store.reconcile(["a", "b", "d", "e", "f", "g", "h", "i"].map(key));
        assert_eq!(
            run_tables(&runs),
            [vec!["a", "b", "d"], vec!["e", "f", "g"], vec!["h", "i"]]
        );
        // Runs taken now are cut again.
        assert_eq!(store.table_runs(2).len(), 4);
    }

    #[test]
    fn the_runs_index_follows_every_change_and_keeps_ids_that_hold() {
        let keys: Vec<TableKey> = (0..7)
            .map(|i| TableKey {
                table: format!("t{i}").into(),
                ..key()
            })
            .collect();
        let store = Store::new(keys.clone());
        let first = store.table_runs(3);
        let at = store.generation();
        let changed = |runs: &Runs<'_, TableKey, TableState>, part: Part| {
            (0..runs.len())
                .map(|i| runs.changed_after(i, &[part], at))
                .collect::<Vec<_>>()
        };
        assert_eq!(changed(&first, Part::LastSuccess), [false; 3]);
        // A change is stamped on its run's index without rebuilding it.
        store.record(&keys[4], &Ok(vec![]), 1.0);
        let runs = store.table_runs(3);
        assert_eq!(changed(&runs, Part::LastSuccess), [false, true, false]);
        assert_eq!(changed(&runs, Part::Cdc), [false, false, false]);
        store.set_exports_tags(&keys[6], true);
        let runs = store.table_runs(3);
        assert_eq!(changed(&runs, Part::Tags), [false, false, true]);
        assert!((0..3).all(|i| Arc::ptr_eq(runs.ids(i), first.ids(i))));
        // A table removed: the index is built again; the runs before it
        // keep their ids' allocation, the others have new ids.
        store.reconcile(keys[..5].iter().cloned().chain(keys[6..].iter().cloned()));
        let after = store.table_runs(3);
        assert_eq!(after.len(), 2);
        assert!(Arc::ptr_eq(after.ids(0), first.ids(0)));
        assert!(!Arc::ptr_eq(after.ids(1), first.ids(1)));
        assert_eq!(changed(&after, Part::LastSuccess), [false, true]);
        // Built again at another size.
        assert_eq!(store.table_runs(4).len(), 2);
        assert_eq!(store.table_runs(6).len(), 1);
        // Streams and scopes: added, changed, removed.
        let scope = keys[0].scope();
        let stream = StreamKey {
            account_id: scope.account_id.clone(),
            region: scope.region.clone(),
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
        };
        store.record_stream(&stream, &Err(throttled()), 1.0);
        let at = store.generation();
        assert!(!store.stream_runs(4).changed_after(0, &Part::ALL, at));
        store.record_stream(&stream, &Err(throttled()), 2.0);
        assert!(store.stream_runs(4).changed_after(0, &[Part::Errors], at));
        store.remove_stream(&stream);
        assert!(store.stream_runs(4).is_empty());
        store.update_scope(&scope, |s| s.tables = 1);
        let at = store.generation();
        assert!(!store.scope_runs(4).changed_after(0, &Part::ALL, at));
        store.count_request(&scope, Service::DynamoDb, "ListTables");
        assert!(store.scope_runs(4).changed_after(0, &[Part::Listing], at));
        store.retain_scopes(&BTreeSet::new());
        assert!(store.scope_runs(4).is_empty());
    }

    /// The parts of `key`'s entry that changed after `generation`.
    fn changed_parts(store: &Store, generation: u64) -> Vec<Part> {
        let mut parts = Vec::new();
        store.table_runs(10).visit(0, |run| {
            parts = Part::ALL
                .into_iter()
                .filter(|p| run[0].changed_after(&[*p], generation))
                .collect();
        });
        parts
    }

    #[test]
    fn each_change_stamps_only_the_parts_it_changed() {
        let store = Store::new([key()]);
        let mut at = store.generation();
        let mut step = |change: &dyn Fn(&Store), want: &[Part]| {
            change(&store);
            assert_eq!(changed_parts(&store, at), want);
            assert_ne!(store.generation(), at);
            at = store.generation();
        };
        use Part::*;
        step(
            &|s| drop(s.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 1.0)),
            &[Listing, Outcome, LastSuccess],
        );
        // The same answer later: only the success time moved.
        step(
            &|s| drop(s.record(&key(), &Ok(vec![dest("s1", "ACTIVE")]), 2.0)),
            &[LastSuccess],
        );
        step(
            &|s| drop(s.record(&key(), &Err(throttled()), 3.0)),
            &[Outcome, Errors],
        );
        step(
            &|s| drop(s.record(&key(), &Err(throttled()), 4.0)),
            &[Errors],
        );
        step(
            &|s| drop(s.record(&key(), &Ok(vec![dest("s1", "PAUSED")]), 5.0)),
            &[Listing, Outcome, LastSuccess],
        );
        step(
            &|s| {
                s.record_cdc(
                    &key(),
                    &[(
                        "PutItem".into(),
                        "AgeOfOldestUnreplicatedRecord".into(),
                        Some((5.0, 6.0)),
                    )],
                )
            },
            &[Cdc],
        );
        // Nothing rendered changed: no stamp, and the generation stays.
        let before = store.generation();
        store.record_cdc(
            &key(),
            &[(
                "PutItem".into(),
                "AgeOfOldestUnreplicatedRecord".into(),
                Some((5.0, 6.0)),
            )],
        );
        assert_eq!(store.generation(), before);
        assert_eq!(changed_parts(&store, before), []);
    }

    #[test]
    fn expectations_tags_and_tag_errors_stamp_their_own_parts() {
        let store = Store::new([key()]);
        let arn = |name: &str| format!("arn:aws:kinesis:us-east-1:123456789012:stream/{name}");
        let pattern = Arc::new(Pattern::new("^cdc-").unwrap());
        let mut at = store.generation();
        let mut step = |change: &dyn Fn(&Store), want: &[Part]| {
            change(&store);
            assert_eq!(changed_parts(&store, at), want);
            at = store.generation();
        };
        use Part::*;
        step(
            &|s| s.set_expectation(&key(), Some(true), Some(Arc::clone(&pattern))),
            &[Expectation],
        );
        // A working destination to a stream that does not match: the
        // listing and the match change together.
        step(
            &|s| drop(s.record(&key(), &Ok(vec![dest(&arn("audit"), "ACTIVE")]), 1.0)),
            &[Listing, Outcome, LastSuccess, Expectation],
        );
        assert_eq!(store.state(&key()).unwrap().stream_match, Some(false));
        step(
            &|s| drop(s.record(&key(), &Ok(vec![dest(&arn("cdc-orders"), "ACTIVE")]), 2.0)),
            &[Listing, LastSuccess, Expectation],
        );
        assert_eq!(store.state(&key()).unwrap().stream_match, Some(true));
        step(&|s| s.set_exports_tags(&key(), true), &[Tags]);
        step(
            &|s| {
                s.record_tags(
                    &key(),
                    Ok(vec![("tag_team".into(), "payments".into())]),
                    3.0,
                )
            },
            &[Tags],
        );
        let denied = PollError::Service {
            code: "AccessDeniedException".into(),
            message: "no".into(),
        };
        // A failed read keeps the tags and counts the error.
        step(&|s| s.record_tags(&key(), Err(&denied), 4.0), &[Errors]);
        let state = store.state(&key()).unwrap();
        assert_eq!(
            state.tags,
            Some(vec![("tag_team".into(), "payments".into())])
        );
        assert_eq!(state.tag_errors.get("AccessDeniedException"), Some(&1));
        step(
            &|s| s.set_expectation(&key(), Some(false), None),
            &[Expectation],
        );
        let state = store.state(&key()).unwrap();
        assert_eq!((state.expected, state.stream_match), (Some(false), None));
        // Unknown tables are ignored, and change nothing.
        let unknown = TableKey {
            table: "unknown".into(),
            ..key()
        };
        let before = store.generation();
        store.set_expectation(&unknown, Some(true), Some(pattern.clone()));
        store.record_tags(&unknown, Ok(Vec::new()), 3.0);
        store.set_exports_tags(&unknown, true);
        assert!(store.state(&unknown).is_none());
        assert_eq!(store.generation(), before);
    }

    #[test]
    fn settled_once_every_waited_step_failed_and_every_table_was_polled() {
        let store = Store::new([key()]);
        // Start-up work counted, not named yet (before the fleet runs).
        store.set_pending(1);
        store.record(&key(), &Ok(vec![]), 0.5);
        assert!(!store.is_settled());
        let step = "discovery in 123456789012/us-east-1".to_string();
        store.set_waiting(vec![step.clone()]);
        assert!(!store.is_settled());
        store.reconcile([key(), key_of("payments")]);
        store.note_failed_step(step.clone());
        assert!(!store.is_settled(), "payments was not polled yet");
        store.record(&key_of("payments"), &Err(throttled()), 1.0);
        assert!(store.is_settled());
        assert!(!store.is_ready());
        // A step that appears later has not failed yet.
        store.set_waiting(vec![
            step,
            "the account of a target in eu-west-1 (STS GetCallerIdentity)".into(),
        ]);
        assert!(!store.is_settled());
        store.set_waiting(Vec::new());
        assert!(store.is_settled() && store.is_ready());
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
    fn requests_metrics_and_budgets_are_counted_per_scope() {
        let store = Store::new([]);
        let scope = key().scope();
        let other = ScopeKey {
            region: "eu-west-1".into(),
            ..scope.clone()
        };
        let describe = "DescribeKinesisStreamingDestination";
        store.count_request(&scope, Service::DynamoDb, describe);
        store.count_request(&scope, Service::DynamoDb, describe);
        store.count_request(&scope, Service::CloudWatch, "GetMetricData");
        store.count_metrics_requested(&scope, 40);
        store.count_request(&other, Service::Sts, "GetCallerIdentity");
        store.set_budget(&scope, Service::DynamoDb, 25.0, 2);
        store.set_budget(&scope, Service::Kinesis, 5.0, 0);
        let state = store.scope_state(&scope).unwrap();
        assert_eq!(state.requests[&Service::DynamoDb][describe], 2);
        assert_eq!(state.requests[&Service::CloudWatch]["GetMetricData"], 1);
        assert_eq!(state.metrics_requested, 40);
        assert_eq!(state.budgets[&Service::DynamoDb].throttled, 2);
        assert_eq!(state.budgets[&Service::Kinesis].rate_limit, 5.0);
        let elsewhere = store.scope_state(&other).unwrap();
        assert_eq!(elsewhere.requests[&Service::Sts]["GetCallerIdentity"], 1);
        assert_eq!(elsewhere.metrics_requested, 0);
        // A scope removed takes its counters with it.
        store.retain_scopes(&BTreeSet::from([scope.clone()]));
        assert!(store.scope_state(&other).is_none());
        assert_eq!(
            store.scope_state(&scope).unwrap().requests[&Service::DynamoDb][describe],
            2
        );
    }

    #[test]
    fn a_stream_check_that_only_moves_the_success_time_stamps_only_that() {
        let store = Store::new([]);
        let stream = StreamKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            stream_arn: "s1".into(),
        };
        let summary = StreamSummary {
            name: "s1".into(),
            status: "ACTIVE".into(),
            open_shards: 2,
            mode: "PROVISIONED".into(),
            encryption: "NONE".into(),
            retention_hours: 24,
        };
        store.record_stream(&stream, &Ok(summary.clone()), 1.0);
        let at = store.generation();
        store.record_stream(&stream, &Ok(summary), 2.0);
        let mut seen = Vec::new();
        store.stream_runs(10).visit(0, |run| {
            seen = Part::ALL
                .into_iter()
                .filter(|p| run[0].changed_after(&[*p], at))
                .collect();
        });
        assert_eq!(seen, [Part::LastSuccess]);
        assert_eq!(store.stream_state(&stream).unwrap().last_success, Some(2.0));
    }

    #[test]
    fn ids_last_as_long_as_the_entry() {
        let other = TableKey {
            table: "payments".into(),
            ..key()
        };
        let ids = |store: &Store| {
            let mut ids = Vec::new();
            store
                .table_runs(10)
                .visit(0, |run| ids.extend(run.iter().map(|e| e.id())));
            ids
        };
        let store = Store::new([key(), other.clone()]);
        let first = ids(&store);
        assert_eq!(first.len(), 2);
        assert_ne!(first[0], first[1]);
        store.record(&key(), &Ok(vec![]), 1.0);
        store.reconcile([key(), other.clone()]);
        assert_eq!(ids(&store), first);
        // Removed, then added again: a new entry with a new id.
        store.reconcile([key()]);
        store.reconcile([key(), other]);
        let again = ids(&store);
        assert_eq!(again[0], first[0]);
        assert!(!first.contains(&again[1]));
    }
}
