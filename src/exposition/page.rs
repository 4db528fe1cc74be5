//! The one metrics page every scraper shares.
//!
//! The page is every table's, stream's and scope's families, rendered from
//! the store, then the process-wide families. The first part is kept, per
//! family, in chunks of [`CHUNK_ITEMS`] entries (a snapshot); both
//! formats (the text format 0.0.4 and OpenMetrics) share them, as they
//! differ only in their `# HELP`/`# TYPE` lines and the final `# EOF`.
//! Concurrent scrapers get `Arc`s of the same snapshot and send its `Bytes`
//! without copying, so neither the cost of a scrape nor the memory grows
//! with the number of scrapers.
//!
//! The page is kept in two forms, each built when a request needs it: the
//! text, and the text compressed chunk by chunk (a chunk is a
//! [`Segment`]: sync-flushed deflate blocks with their CRC; see
//! `dke_web::gzip`). A gzip response is the family headers' and the chunks'
//! segments in page order, closed by the process-wide families as a stored
//! block and the combined CRC: one ordinary gzip member.
//!
//! A form is rebuilt only when the store's generation moved (something
//! rendered changed) and it is at least [`MAX_AGE`] old, on the request
//! that finds it so. A rebuild keeps every chunk of the previous one whose
//! entries are the same and did not change, for that family, since it was
//! rendered (the store stamps each part of an entry's state with the
//! generation of its last change, and each family names the parts it
//! reads), and renders, and for the gzip form compresses, only the others.
//! The store's index of its entries in runs ([`Runs`]) tells which chunks
//! hold without reading their entries: a scrape pays for what changed, not
//! for the size of the fleet. In a fleet polled continuously that is the
//! success-time families: of a few chunks while the polls still go round
//! the tables in key order (new tables are spread in order), of every chunk
//! once the jittered intervals have mixed them, and those are rewritten
//! from the index's times and their previous text rather than rendered
//! from the entries. The rest is compressed once. A table added or removed
//! moves the chunks after it, which are then rendered again.
//!
//! The rebuilds run on the blocking pool, so they never stall the threads
//! answering `/healthz`, as jobs the page owns: at most one per form at a
//! time; requests that need it wait for the one in progress, and a request
//! that goes away (hyper drops its future when the client hangs up) leaves
//! it running to the end and stored for the next. A job that panics is
//! logged, its waiters get the last page, and the next request starts a
//! new one. [`Page::keep_fresh`] waits for the jobs at shutdown.
//!
//! The text form is 36 MB at 10,000 tables with their streams, the gzip
//! form about 1 MB, plus 3 MB of the success-time families' text (with
//! their line ends and times) to rewrite them from.
//! [`Page::release_unneeded`], run every [`MAX_AGE`] by
//! [`Page::keep_fresh`], lets go of the text once it is stale, or unused
//! for [`UNUSED_FOR`]: between plain scrapes the exporter holds none of
//! it, at the price of one rendering per plain scrape after a quiet spell.
//! The gzip form is kept: it is what lets a gzip scrape (what Prometheus
//! sends) render and compress only what changed.
//!
//! The process-wide families (poll durations, build info, reload status,
//! `process_*`) are a few kilobytes, encoded at most every [`MAX_AGE`].

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use dke_web::gzip::{Deflater, Member, Segment};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::exposition::metrics::{
    rewrite_success_times, Kind, Subject, Telemetry, PAGE_FORMS, SCOPE_FAMILIES, STREAM_FAMILIES,
    TABLE_FAMILIES,
};
use crate::exposition::openmetrics;
use crate::state::store::{Runs, Store, SuccessTime};
pub use dke_web::negotiate::Format;

/// How old a snapshot may get before a change in the store rebuilds it.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// How long a text snapshot no request asked for is kept.
pub const UNUSED_FOR: Duration = Duration::from_secs(5);

/// Entries (tables, streams or scopes) per chunk of a family's text.
/// Smaller chunks are reused more when a few tables change, but they make
/// more `Bytes` per response (so more writes: at 64 the plain scrape of
/// 10,000 tables was 0.81x nginx, against 0.88x with one block per family,
/// `bench/serving.sh`), and more deflate segments, each of which starts
/// with an empty window. At 1,024 a chunk is 150 KB to 1.1 MB of text.
pub const CHUNK_ITEMS: usize = 1024;

/// The deflate level of a chunk compressed for the first time (at start,
/// or when tables were added or removed before it): most chunks are
/// compressed only then.
const LEVEL_FIRST: u32 = 6;

/// The deflate level of a chunk compressed again because its text
/// changed: those of the families that change at every poll (the success
/// times), at nearly every gzip scrape. On the page of 10,000 tables, level
/// 2 compresses them in 60 % of the time level 4 takes, 3 % larger, and
/// the whole page stays within 1 % of level 6 throughout. (zlib-rs's level
/// 1, a different algorithm, is half again as large.)
const LEVEL_AGAIN: u32 = 2;

/// One chunk of one family: the samples of a run of entries, in one form.
struct Piece<T> {
    /// The store generation read before it was rendered: a change to its
    /// entries stamped later is not in it.
    rendered_at: u64,
    /// The ids of the entries it covers, shared by the section's families.
    members: Arc<[u64]>,
    body: T,
    /// For the success-time family ([`Subject::SUCCESS_TIME_FAMILY`]): its
    /// text, and where each member's line ends in it, from which the next
    /// rebuild rewrites it with the new times.
    lines: Option<Lines>,
}

struct Lines {
    text: Arc<str>,
    /// Per member, where its line ends (where the previous one ends: no
    /// line), and the time it shows.
    ends: Vec<u32>,
    times: Vec<Option<f64>>,
}

/// What a rebuild does with one family's chunk.
enum Plan<'a, T> {
    /// Keep the previous one: same entries, nothing it reads changed.
    Keep(&'a Arc<Piece<T>>),
    /// Rewrite the previous one's success times.
    Rewrite(&'a Lines),
    /// Render it from the entries; whether it replaces a chunk of the
    /// same entries.
    Render(bool),
}

/// Every family's chunks at one store generation, in one form: text
/// (`Bytes`) or compressed ([`Segment`]).
struct Snapshot<T: Form> {
    generation: u64,
    built: Instant,
    /// When a request last asked for it, in milliseconds after `built`.
    used: AtomicU64,
    /// Per family (see [`families`]), its chunks.
    families: Vec<Vec<Arc<Piece<T>>>>,
    /// Per format, the response up to the process-wide tail, assembled by
    /// the first request for it.
    bodies: [OnceLock<T::Body>; 2],
}

/// The two jobs the page runs, at most one of each at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Render the text form.
    Text,
    /// Render what changed and compress it: the gzip form.
    Gzip,
}

impl Job {
    /// Its form's label in the page's own metrics.
    fn form(self) -> &'static str {
        match self {
            Job::Text => PAGE_FORMS[0],
            Job::Gzip => PAGE_FORMS[1],
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Job::Text => "rebuilding the metrics page",
            Job::Gzip => "compressing the metrics page",
        }
    }
}

/// A job in progress and how to wait for it.
struct Flight<T: Form> {
    /// Set to the job's result when it ends (the last page if it failed).
    done: watch::Receiver<Option<Arc<Snapshot<T>>>>,
    task: JoinHandle<()>,
}

/// What the page holds between requests.
struct Held {
    text: Option<Arc<Snapshot<Bytes>>>,
    gzip: Option<Arc<Snapshot<Segment>>>,
    text_job: Option<Flight<Bytes>>,
    gzip_job: Option<Flight<Segment>>,
}

/// A form the page is kept in.
trait Form: Send + Sync + Sized + 'static {
    const JOB: Job;

    /// The form's slots in what the page holds.
    fn slots(held: &mut Held) -> (&mut Option<Arc<Snapshot<Self>>>, &mut Option<Flight<Self>>);

    /// What turns rendered text into this form.
    type Maker;

    fn maker() -> Self::Maker;

    /// Turn one chunk's rendered text into this form; `again` when it
    /// replaces the same entries' chunk of an earlier rendering.
    fn make(maker: &mut Self::Maker, text: &str, again: bool) -> Self;

    /// The length of text it stands for (a capacity hint for rendering the
    /// chunk again).
    fn text_len(&self) -> usize;

    /// A response in this form up to the process-wide tail.
    type Body: Send + Sync;

    fn body(headers: &Headers, snapshot: &Snapshot<Self>, format: Format) -> Self::Body;
}

/// `# HELP`/`# TYPE` lines per format, per family, as text and as
/// compressed segments.
struct Headers {
    text: [Vec<Bytes>; 2],
    gzip: [Vec<Segment>; 2],
}

impl Form for Bytes {
    const JOB: Job = Job::Text;

    fn slots(held: &mut Held) -> (&mut Option<Arc<Snapshot<Self>>>, &mut Option<Flight<Self>>) {
        (&mut held.text, &mut held.text_job)
    }

    type Maker = ();

    fn maker() {}

    fn make((): &mut (), text: &str, _again: bool) -> Self {
        // Kept until the chunk changes, at its exact size.
        Bytes::copy_from_slice(text.as_bytes())
    }

    fn text_len(&self) -> usize {
        self.len()
    }

    /// The headers and the chunks, in order.
    type Body = Vec<Bytes>;

    fn body(headers: &Headers, snapshot: &Snapshot<Self>, format: Format) -> Vec<Bytes> {
        let headers = &headers.text[format.index()];
        let pieces: usize = snapshot.families.iter().map(Vec::len).sum();
        let mut chunks = Vec::with_capacity(headers.len() + pieces + 1);
        for (header, family) in headers.iter().zip(&snapshot.families) {
            chunks.push(header.clone());
            chunks.extend(
                family
                    .iter()
                    .filter(|p| !p.body.is_empty())
                    .map(|p| p.body.clone()),
            );
        }
        chunks
    }
}

impl Form for Segment {
    const JOB: Job = Job::Gzip;

    fn slots(held: &mut Held) -> (&mut Option<Arc<Snapshot<Self>>>, &mut Option<Flight<Self>>) {
        (&mut held.gzip, &mut held.gzip_job)
    }

    /// For a first compression, and for another; each made when first
    /// needed (a rebuild under steady polls needs only the second).
    type Maker = [Option<Deflater>; 2];

    fn maker() -> [Option<Deflater>; 2] {
        [None, None]
    }

    fn make(deflaters: &mut [Option<Deflater>; 2], text: &str, again: bool) -> Self {
        let level = if again { LEVEL_AGAIN } else { LEVEL_FIRST };
        deflaters[usize::from(again)]
            .get_or_insert_with(|| Deflater::new(level))
            .segment(text.as_bytes())
    }

    fn text_len(&self) -> usize {
        usize::try_from(Segment::text_len(self)).unwrap_or(0)
    }

    /// The gzip member, open: its header, the headers' and chunks'
    /// segments, and their combined CRC.
    type Body = Member;

    fn body(headers: &Headers, snapshot: &Snapshot<Self>, format: Format) -> Member {
        let headers = &headers.gzip[format.index()];
        let pieces: usize = snapshot.families.iter().map(Vec::len).sum();
        let mut member = Member::with_capacity(headers.len() + pieces);
        for (header, family) in headers.iter().zip(&snapshot.families) {
            member.push(header);
            family.iter().for_each(|p| member.push(&p.body));
        }
        member
    }
}

/// The shared page.
pub struct Page {
    inner: Arc<Inner>,
}

/// The page's state, shared with its jobs.
struct Inner {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    headers: Headers,
    /// How long a text snapshot no request asked for is kept
    /// ([`UNUSED_FOR`]).
    unused_for: Duration,
    /// [`CHUNK_ITEMS`]; smaller in tests.
    chunk_items: usize,
    held: Mutex<Held>,
    /// The process-wide families per format, re-encoded when older than
    /// [`MAX_AGE`] (reading `/proc` for every scrape would cost more than
    /// sending the page).
    tails: Mutex<[Option<(Instant, Bytes)>; 2]>,
    #[cfg(test)]
    probe: tests::Probe,
}

/// One response body's chunks.
pub type Chunks = Vec<Bytes>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Page {
    /// A page over `store`; each form is built by the first request that
    /// needs it.
    pub fn new(store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        let text: Vec<Bytes> = families()
            .map(|(name, help, kind)| {
                Bytes::from(format!(
                    "# HELP {name} {help}\n# TYPE {name} {}\n",
                    kind.as_str()
                ))
            })
            .collect();
        let om: Vec<Bytes> = families()
            .map(|(name, help, kind)| Bytes::from(openmetrics::header(name, help, kind.as_str())))
            .collect();
        let mut deflater = Deflater::new(9);
        let mut zip = |headers: &[Bytes]| -> Vec<Segment> {
            headers.iter().map(|h| deflater.segment(h)).collect()
        };
        let gzip = [zip(&text), zip(&om)];
        Page {
            inner: Arc::new(Inner {
                store,
                telemetry,
                headers: Headers {
                    text: [text, om],
                    gzip,
                },
                unused_for: UNUSED_FOR,
                chunk_items: CHUNK_ITEMS,
                held: Mutex::new(Held {
                    text: None,
                    gzip: None,
                    text_job: None,
                    gzip_job: None,
                }),
                tails: Mutex::new([None, None]),
                #[cfg(test)]
                probe: tests::Probe::default(),
            }),
        }
    }

    /// The current snapshot in form `T`: the one held if it is fresh, else
    /// the result of the job in progress, or of one started now.
    async fn current<T: Form>(&self) -> Arc<Snapshot<T>> {
        let inner = &self.inner;
        let (mut done, previous) = {
            let mut held = lock(&inner.held);
            let (kept, job) = T::slots(&mut held);
            if let Some(snapshot) = kept.as_ref().filter(|s| !inner.is_stale(s)) {
                snapshot.touch();
                return Arc::clone(snapshot);
            }
            let previous = kept.clone();
            let done = match job {
                // In progress until it has answered (a job that has may
                // still be returning, with nothing left to do).
                Some(flight) if flight.done.borrow().is_none() => flight.done.clone(),
                _ => {
                    let flight = Inner::start(inner, previous.clone());
                    let done = flight.done.clone();
                    *job = Some(flight);
                    done
                }
            };
            (done, previous)
        };
        let result = done
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|r| r.clone());
        match result {
            Some(snapshot) => {
                snapshot.touch();
                snapshot
            }
            // The job was dropped without an answer (the runtime is
            // shutting down): the last page if there is one.
            None => previous
                .unwrap_or_else(|| Arc::new(Snapshot::empty(&inner.store, families().count()))),
        }
    }

    /// Let go of the text snapshot if it is stale or unused for
    /// `unused_for`. Returns whether it did. (The gzip form, a thirtieth
    /// of the text, is kept.)
    pub fn release_unneeded(&self) -> bool {
        let inner = &self.inner;
        let mut held = lock(&inner.held);
        let unneeded = held
            .text
            .as_ref()
            .is_some_and(|s| inner.is_stale(s) || s.unused() >= inner.unused_for);
        if unneeded {
            held.text = None;
        }
        // A finished job's channel still holds what it built.
        if held.text_job.as_ref().is_some_and(|f| f.task.is_finished()) {
            held.text_job = None;
        }
        if held.gzip_job.as_ref().is_some_and(|f| f.task.is_finished()) {
            held.gzip_job = None;
        }
        unneeded
    }

    /// Every [`MAX_AGE`], let go of a snapshot nobody needs, until
    /// `shutdown`; then wait for the jobs in progress.
    pub async fn keep_fresh(
        self: Arc<Self>,
        shutdown: tokio_util::sync::WaitForCancellationFutureOwned,
    ) {
        let mut tick = tokio::time::interval(MAX_AGE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tick.tick() => {
                    self.release_unneeded();
                }
            }
        }
        let jobs = {
            let mut held = lock(&self.inner.held);
            let text = held.text_job.take().map(|f| f.task);
            let gzip = held.gzip_job.take().map(|f| f.task);
            [text, gzip]
        };
        for task in jobs.into_iter().flatten() {
            if let Err(err) = task.await {
                tracing::error!(error = %err, "a metrics page job did not finish");
            }
        }
    }

    /// The whole page in `format`, as chunks to send in order.
    pub async fn plain(&self, format: Format) -> Chunks {
        let snapshot = self.current::<Bytes>().await;
        self.inner.plain_of(&snapshot, format)
    }

    /// The whole page in `format`, gzip-encoded, as chunks to send in order.
    pub async fn gzip(&self, format: Format) -> Chunks {
        let snapshot = self.current::<Segment>().await;
        self.inner.gzip_of(&snapshot, format)
    }
}

impl Inner {
    /// `snapshot` in `format`, with the process-wide tail.
    fn plain_of(&self, snapshot: &Snapshot<Bytes>, format: Format) -> Chunks {
        let mut chunks = snapshot.body(&self.headers, format).clone();
        chunks.push(self.tail(format));
        chunks
    }

    /// `snapshot` in `format` as one gzip member: the compressed headers
    /// and chunks, then the process-wide tail as a stored block.
    fn gzip_of(&self, snapshot: &Snapshot<Segment>, format: Format) -> Chunks {
        let member = snapshot.body(&self.headers, format).clone();
        member.finish(&self.tail(format))
    }

    fn is_stale<T: Form>(&self, snapshot: &Snapshot<T>) -> bool {
        snapshot.generation != self.store.generation() && snapshot.built.elapsed() >= MAX_AGE
    }

    /// Start the job that builds form `T` from `previous`, on the blocking
    /// pool; the page owns it through the returned flight.
    fn start<T: Form>(inner: &Arc<Inner>, previous: Option<Arc<Snapshot<T>>>) -> Flight<T> {
        let (tx, done) = watch::channel(None);
        let inner = Arc::clone(inner);
        let task = tokio::task::spawn_blocking(move || {
            // The job runs on this thread from start to end: its CPU time
            // is the rebuild's.
            let cpu = thread_cpu();
            let built = catch_unwind(AssertUnwindSafe(|| {
                #[cfg(test)]
                inner.probe.enter(T::JOB);
                build(&inner.store, previous.as_deref(), inner.chunk_items)
            }));
            let cpu = cpu
                .zip(thread_cpu())
                .map(|(start, end)| end.saturating_sub(start));
            inner.telemetry.record_page_build(T::JOB.form(), cpu);
            let snapshot = match built {
                Ok(snapshot) => {
                    let snapshot = Arc::new(snapshot);
                    *T::slots(&mut lock(&inner.held)).0 = Some(Arc::clone(&snapshot));
                    snapshot
                }
                Err(panic) => {
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(panic = %message, "{} failed; serving the last one", T::JOB.as_str());
                    // The last page if it is still held (its age shows in
                    // the success timestamps); else an empty one (the
                    // families' headers and the process-wide tail).
                    previous.unwrap_or_else(|| {
                        Arc::new(Snapshot::empty(&inner.store, families().count()))
                    })
                }
            };
            // Nobody may be waiting any more; the result is stored anyway.
            let _ = tx.send(Some(snapshot));
        });
        Flight { done, task }
    }

    /// The process-wide families, at most [`MAX_AGE`] old, and `# EOF`
    /// for OpenMetrics.
    fn tail(&self, format: Format) -> Bytes {
        let mut tails = lock(&self.tails);
        let slot = &mut tails[format.index()];
        if let Some((at, tail)) = slot {
            if at.elapsed() < MAX_AGE {
                return tail.clone();
            }
        }
        let text = self.telemetry.encode();
        let tail = Bytes::from(match format {
            Format::Text => text,
            Format::OpenMetrics => {
                let mut out = openmetrics::from_text(&text);
                out.push_str(openmetrics::EOF);
                out
            }
        });
        *slot = Some((Instant::now(), tail.clone()));
        tail
    }
}

/// Render every table's, stream's and scope's families in chunks of
/// `chunk_items` entries, keeping `previous`'s chunk wherever it still
/// holds, and turn the new text into form `T`.
fn build<T: Form>(
    store: &Store,
    previous: Option<&Snapshot<T>>,
    chunk_items: usize,
) -> Snapshot<T> {
    // Read first: a change racing with the rendering below is stamped
    // after it, so the next rebuild renders its chunk again rather than
    // miss it, and the snapshot counts as stale.
    let generation = store.generation();
    let mut build = Build {
        generation,
        previous,
        families: (0..families().count()).map(|_| Vec::new()).collect(),
        maker: T::maker(),
    };
    let streams = TABLE_FAMILIES.len();
    let scopes = streams + STREAM_FAMILIES.len();
    build.section(0, store.table_runs(chunk_items));
    build.section(streams, store.stream_runs(chunk_items));
    build.section(scopes, store.scope_runs(chunk_items));
    Snapshot {
        generation,
        built: built_at(generation),
        used: AtomicU64::new(0),
        families: build.families,
        bodies: [OnceLock::new(), OnceLock::new()],
    }
}

struct Build<'a, T: Form> {
    generation: u64,
    previous: Option<&'a Snapshot<T>>,
    /// Per family, its chunks so far.
    families: Vec<Vec<Arc<Piece<T>>>>,
    maker: T::Maker,
}

impl<T: Form> Build<'_, T> {
    /// The chunks of the families of `S`, which start at `offset` in the
    /// page, one per run of entries, judged from the store's index of the
    /// run (its ids, change stamps and success times). A family's chunk
    /// whose entries are those of the previous one at its place is kept if
    /// nothing it reads changed since, and for the success-time family
    /// rewritten with the new times; the entries are read, under the
    /// store's read lock, only to render the others. Text is turned into
    /// `T` (compressed) once the lock is let go.
    ///
    /// Entries added or removed after the index was read show in the
    /// chunks rendered from the entries; the chunks kept or rewritten are
    /// as of the index. Either way the snapshot counts as stale (the
    /// generation moved), and the next rebuild finds those chunks' entries
    /// changed.
    fn section<S: Subject + SuccessTime, K: Ord + Clone>(
        &mut self,
        offset: usize,
        runs: Runs<'_, K, S>,
    ) {
        let count = S::FAMILIES.len();
        // Per family, the text of its chunk being written (kept from chunk
        // to chunk); for the success-time family, its line ends, and the
        // times of the entries rendered.
        let mut texts = vec![String::new(); count];
        let mut ends: Vec<u32> = Vec::new();
        let mut times: Vec<Option<f64>> = Vec::new();
        let mut plans: Vec<Plan<'_, T>> = Vec::with_capacity(count);
        let mut identity = String::new();
        let previous = self.previous;
        for at in 0..runs.len() {
            let before = |family: usize| {
                previous
                    .and_then(|p| p.families.get(offset + family))
                    .and_then(|chunks| chunks.get(at))
            };
            let families = &mut self.families[offset..offset + count];
            let ids = runs.ids(at);
            plans.clear();
            plans.extend((0..count).map(|i| {
                let Some(piece) = before(i).filter(|p| same(&p.members, ids)) else {
                    return Plan::Render(false);
                };
                if !runs.changed_after(at, S::FAMILIES[i].reads, piece.rendered_at) {
                    return Plan::Keep(piece);
                }
                // Only the success-time family keeps its lines.
                match &piece.lines {
                    Some(lines) => Plan::Rewrite(lines),
                    None => Plan::Render(true),
                }
            }));
            let mut render = false;
            for (i, plan) in plans.iter_mut().enumerate() {
                match plan {
                    Plan::Keep(piece) => families[i].push(Arc::clone(piece)),
                    Plan::Rewrite(lines) => {
                        texts[i].clear();
                        ends.clear();
                        let times = runs.success_times(at);
                        if rewrite_success_times(
                            &lines.text,
                            &lines.ends,
                            &lines.times,
                            times,
                            &mut texts[i],
                            &mut ends,
                        ) {
                            let made = Made {
                                text: &texts[i],
                                ends: Some((&ends, times)),
                                again: true,
                            };
                            families[i].push(made.piece(self.generation, &mut self.maker, ids));
                        } else {
                            *plan = Plan::Render(true);
                            render = true;
                        }
                    }
                    Plan::Render(_) => render = true,
                }
            }
            if !render {
                continue;
            }
            let mut members: Option<Arc<[u64]>> = None;
            runs.visit(at, |run| {
                let rendered = || {
                    plans
                        .iter()
                        .enumerate()
                        .filter(|(_, p)| matches!(p, Plan::Render(_)))
                };
                for (i, _) in rendered() {
                    texts[i].clear();
                    texts[i].reserve(before(i).map_or(0, |p| p.body.text_len()));
                }
                ends.clear();
                times.clear();
                for entry in run {
                    identity.clear();
                    entry.state().identity(&mut identity);
                    for (i, _) in rendered() {
                        S::FAMILIES[i].render(entry.state(), &identity, &mut texts[i]);
                    }
                    if let Some(i) = S::SUCCESS_TIME_FAMILY {
                        ends.push(u32::try_from(texts[i].len()).unwrap_or(u32::MAX));
                        times.push(entry.state().success_time());
                    }
                }
                // The index's ids when the entries are still those.
                members = Some(if ids.iter().copied().eq(run.iter().map(|e| e.id())) {
                    Arc::clone(ids)
                } else {
                    run.iter().map(|e| e.id()).collect()
                });
            });
            let Some(members) = members else {
                continue;
            };
            for (i, plan) in plans.iter().enumerate() {
                if let Plan::Render(again) = plan {
                    let again = *again && same(&members, ids);
                    let made = Made {
                        text: &texts[i],
                        ends: (S::SUCCESS_TIME_FAMILY == Some(i))
                            .then_some((&ends[..], &times[..])),
                        again,
                    };
                    families[i].push(made.piece(self.generation, &mut self.maker, &members));
                }
            }
        }
    }
}

/// The text of a family's new chunk.
struct Made<'a> {
    text: &'a str,
    /// Its line ends and times, for the success-time family (kept with
    /// it).
    ends: Option<(&'a [u32], &'a [Option<f64>])>,
    /// Whether it replaces a chunk of the same entries.
    again: bool,
}

impl Made<'_> {
    /// The chunk of `members` at store generation `generation`, in form `T`.
    fn piece<T: Form>(
        &self,
        generation: u64,
        maker: &mut T::Maker,
        members: &Arc<[u64]>,
    ) -> Arc<Piece<T>> {
        Arc::new(Piece {
            rendered_at: generation,
            members: Arc::clone(members),
            body: T::make(maker, self.text, self.again),
            lines: self.ends.map(|(ends, times)| Lines {
                text: Arc::from(self.text),
                ends: ends.to_vec(),
                times: times.to_vec(),
            }),
        })
    }
}

/// Whether two chunks cover the same entries.
fn same(a: &Arc<[u64]>, b: &Arc<[u64]>) -> bool {
    Arc::ptr_eq(a, b) || **a == **b
}

/// The CPU time the calling thread has used so far (Linux only).
fn thread_cpu() -> Option<Duration> {
    #[cfg(target_os = "linux")]
    {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
        let nanos = u32::try_from(t.tv_nsec).ok()?;
        Some(Duration::new(u64::try_from(t.tv_sec).ok()?, nanos))
    }
    #[cfg(not(target_os = "linux"))]
    None
}

/// When a snapshot of `generation` counts as built: now, except for a store
/// nobody has polled yet (generation 0), whose first change should show at
/// the next scrape instead of a second later.
fn built_at(generation: u64) -> Instant {
    let now = Instant::now();
    if generation == 0 {
        now.checked_sub(MAX_AGE).unwrap_or(now)
    } else {
        now
    }
}

impl<T: Form> Snapshot<T> {
    /// The response in `format` up to the tail.
    fn body(&self, headers: &Headers, format: Format) -> &T::Body {
        self.bodies[format.index()].get_or_init(|| T::body(headers, self, format))
    }

    fn touch(&self) {
        let ms = u64::try_from(self.built.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.used.fetch_max(ms, Ordering::Relaxed);
    }

    /// How long since a request last asked for it.
    fn unused(&self) -> Duration {
        let used = Duration::from_millis(self.used.load(Ordering::Relaxed));
        self.built.elapsed().saturating_sub(used)
    }

    /// A snapshot with no samples.
    fn empty(store: &Store, families: usize) -> Self {
        let generation = store.generation();
        Snapshot {
            generation,
            built: built_at(generation),
            used: AtomicU64::new(0),
            families: (0..families).map(|_| Vec::new()).collect(),
            bodies: [OnceLock::new(), OnceLock::new()],
        }
    }
}

/// Every family the page renders from the store, in page order: per
/// table, per stream, per scope.
fn families() -> impl Iterator<Item = (&'static str, &'static str, Kind)> {
    let table = TABLE_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    let stream = STREAM_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    let scope = SCOPE_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    table.chain(stream).chain(scope)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::aws::{Destination, PollError, StreamSummary};
    use crate::state::fixtures::dest;
    use crate::state::{ScopeKey, ScopeState, StreamKey, StreamState, TableKey, TableState};
    use std::collections::BTreeSet;
    use std::io::Read as _;
    use std::sync::atomic::AtomicBool;
    use std::sync::Condvar;

    /// What the page's jobs did, and a way to hold them or make them fail.
    #[derive(Default)]
    pub(in crate::exposition::page) struct Probe {
        started: Mutex<Vec<Job>>,
        /// While true, jobs wait before they build.
        held: (Mutex<bool>, Condvar),
        fail: AtomicBool,
    }

    impl Probe {
        pub(in crate::exposition::page) fn enter(&self, job: Job) {
            lock(&self.started).push(job);
            let mut held = lock(&self.held.0);
            while *held {
                held = self
                    .held
                    .1
                    .wait(held)
                    .unwrap_or_else(PoisonError::into_inner);
            }
            drop(held);
            assert!(!self.fail.load(Ordering::Relaxed), "rendering failed");
        }

        /// Hold the jobs until the guard goes (also when the test fails,
        /// or the runtime would wait for the held jobs forever).
        fn hold(&self) -> Hold<'_> {
            *lock(&self.held.0) = true;
            Hold(self)
        }

        fn started(&self) -> Vec<Job> {
            lock(&self.started).clone()
        }

        /// Wait (at most 10 s) until `n` jobs have started.
        async fn wait_started(&self, n: usize) {
            for _ in 0..10_000 {
                if lock(&self.started).len() >= n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            panic!("{n} jobs did not start: {:?}", self.started());
        }
    }

    struct Hold<'a>(&'a Probe);

    impl Drop for Hold<'_> {
        fn drop(&mut self) {
            *lock(&self.0.held.0) = false;
            self.0.held.1.notify_all();
        }
    }

    fn key(table: &str) -> TableKey {
        TableKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            table: table.into(),
        }
    }

    fn store() -> Arc<Store> {
        let store = Arc::new(Store::new([key("orders"), key("payments")]));
        let dest = Destination {
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/s".into(),
            status: "ACTIVE".into(),
            status_description: Some("a \"quoted\" reason".into()),
            precision: None,
        };
        store.record(&key("orders"), &Ok(vec![dest]), 5.0);
        store.record(
            &key("payments"),
            &Err(crate::aws::PollError::Timeout("slow".into())),
            6.0,
        );
        store
    }

    /// A store of `n` tables `t0000`..., each polled once with one ACTIVE
    /// destination.
    fn polled(n: usize) -> (Arc<Store>, Vec<String>) {
        let names: Vec<String> = (0..n).map(|i| format!("t{i:04}")).collect();
        let store = Arc::new(Store::new(names.iter().map(|n| key(n))));
        for name in &names {
            store.record(
                &key(name),
                &Ok(vec![dest(&format!("{name}-s"), "ACTIVE")]),
                5.0,
            );
        }
        (store, names)
    }

    /// A page whose chunks hold `chunk_items` entries.
    fn page_with(store: &Arc<Store>, chunk_items: usize) -> Page {
        let mut page = Page::new(Arc::clone(store), Arc::new(Telemetry::new(false)));
        Arc::get_mut(&mut page.inner)
            .expect("not shared yet")
            .chunk_items = chunk_items;
        page
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn text(chunks: &[Bytes]) -> String {
        String::from_utf8(concat(chunks)).expect("UTF-8")
    }

    fn gunzip(chunks: &[Bytes]) -> String {
        let bytes = concat(chunks);
        let mut decoder = flate2::bufread::GzDecoder::new(&bytes[..]);
        let mut out = String::new();
        decoder.read_to_string(&mut out).expect("valid gzip");
        assert!(decoder.into_inner().is_empty(), "bytes after the member");
        out
    }

    /// The page rendered from scratch, the simplest way: every family's
    /// header, then every entry's samples of it, then the process-wide
    /// families.
    fn reference(store: &Store, telemetry: &Telemetry, format: Format) -> String {
        fn section<S: Subject + Clone>(
            out: &mut String,
            format: Format,
            visit: impl FnOnce(&mut dyn FnMut(&S)),
        ) {
            let mut states = Vec::new();
            visit(&mut |s: &S| states.push(s.clone()));
            for family in S::FAMILIES {
                match format {
                    Format::Text => {
                        out.push_str(&format!(
                            "# HELP {} {}\n# TYPE {} {}\n",
                            family.name,
                            family.help,
                            family.name,
                            family.kind.as_str()
                        ));
                    }
                    Format::OpenMetrics => out.push_str(&openmetrics::header(
                        family.name,
                        family.help,
                        family.kind.as_str(),
                    )),
                }
                for state in &states {
                    let mut identity = String::new();
                    state.identity(&mut identity);
                    family.render(state, &identity, out);
                }
            }
        }
        let mut out = String::new();
        section::<TableState>(&mut out, format, |f| store.visit(f));
        section::<StreamState>(&mut out, format, |f| store.visit_streams(f));
        section::<ScopeState>(&mut out, format, |f| store.visit_scopes(f));
        let tail = telemetry.encode();
        match format {
            Format::Text => out.push_str(&tail),
            Format::OpenMetrics => {
                out.push_str(&openmetrics::from_text(&tail));
                out.push_str(openmetrics::EOF);
            }
        }
        out
    }

    fn plain_of(page: &Page, snapshot: &Snapshot<Bytes>, format: Format) -> String {
        text(&page.inner.plain_of(snapshot, format))
    }

    fn gzip_of(page: &Page, snapshot: &Snapshot<Segment>, format: Format) -> String {
        gunzip(&page.inner.gzip_of(snapshot, format))
    }

    /// Where a snapshot's chunks are shared with an earlier one: per
    /// family, per chunk, whether it is the same piece.
    fn shared<T: Form>(old: &Snapshot<T>, new: &Snapshot<T>) -> Vec<Vec<bool>> {
        new.families
            .iter()
            .enumerate()
            .map(|(f, chunks)| {
                chunks
                    .iter()
                    .enumerate()
                    .map(|(at, piece)| {
                        old.families[f]
                            .get(at)
                            .is_some_and(|old| Arc::ptr_eq(old, piece))
                    })
                    .collect()
            })
            .collect()
    }

    /// The (family, chunk) places that are not shared.
    fn fresh<T: Form>(old: &Snapshot<T>, new: &Snapshot<T>) -> Vec<(usize, usize)> {
        let mut out = Vec::new();
        for (f, chunks) in shared(old, new).iter().enumerate() {
            for (at, kept) in chunks.iter().enumerate() {
                if !kept {
                    out.push((f, at));
                }
            }
        }
        out
    }

    fn family(name: &str) -> usize {
        families()
            .position(|(n, _, _)| n == name)
            .expect("a family of the page")
    }

    #[tokio::test]
    async fn text_page_is_the_classic_exposition() {
        let store = store();
        let telemetry = Arc::new(Telemetry::new(false));
        let page = Page::new(Arc::clone(&store), Arc::clone(&telemetry));
        for format in [Format::Text, Format::OpenMetrics] {
            let page = text(&page.plain(format).await);
            assert_eq!(page, reference(&store, &telemetry, format), "{format:?}");
        }
        let page = text(&page.plain(Format::Text).await);
        assert!(page.contains(
            "dynamodb_kinesis_destination_info{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\",stream_arn=\"arn:aws:kinesis:us-east-1:123456789012:stream/s\",stream_name=\"s\",stream_account_id=\"123456789012\",status_description=\"a \\\"quoted\\\" reason\",creation_date_time_precision=\"\"} 1\n"
        ), "{page}");
        assert!(page.contains(
            "dynamodb_kinesis_api_errors_total{table=\"payments\",region=\"us-east-1\",account_id=\"123456789012\",code=\"timeout\"} 1\n"
        ), "{page}");
    }

    #[tokio::test]
    async fn gzip_decodes_to_the_plain_page_in_both_formats() {
        let page = Page::new(store(), Arc::new(Telemetry::new(false)));
        for format in [Format::Text, Format::OpenMetrics] {
            let plain = text(&page.plain(format).await);
            let zipped = page.gzip(format).await;
            assert!(concat(&zipped).len() < plain.len(), "{format:?}");
            assert_eq!(gunzip(&zipped), plain, "{format:?}");
        }
    }

    #[tokio::test]
    async fn openmetrics_page_changes_only_headers_and_ends_with_eof() {
        let telemetry = Arc::new(Telemetry::new(false));
        telemetry.observe_poll(
            &ScopeKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
            },
            0.25,
        );
        let page = Page::new(store(), telemetry);
        let text_page = text(&page.plain(Format::Text).await);
        let om = text(&page.plain(Format::OpenMetrics).await);
        let samples = |page: &str| -> Vec<String> {
            page.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&text_page), samples(&om));
        assert!(om.ends_with("\n# EOF\n"), "{om}");
        assert!(om.contains("# TYPE dynamodb_kinesis_api_errors counter\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_destination info\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_exporter_build info\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_destination_status gauge\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_poll_duration_seconds histogram\n"));
    }

    #[tokio::test]
    async fn the_page_groups_each_family_across_tables_streams_and_scopes() {
        let store = Arc::new(Store::new([key("orders"), key("payments")]));
        let listing = vec![dest("s1", "ENABLE_FAILED"), dest("s2", "PAUSED")];
        store.record(&key("orders"), &Ok(listing.clone()), 5.0);
        store.record(&key("payments"), &Ok(listing), 5.0);
        let scope = key("orders").scope();
        store.update_scope(&scope, |s| s.tables = 2);
        let telemetry = Arc::new(Telemetry::new(false));
        telemetry.observe_poll(&scope, 0.2);
        let page = text(
            &Page::new(Arc::clone(&store), Arc::clone(&telemetry))
                .plain(Format::Text)
                .await,
        );
        // Each family header appears once, and all its samples follow it
        // before the next header.
        for (name, _, _) in families() {
            assert_eq!(
                page.matches(&format!("# TYPE {name} ")).count(),
                1,
                "{name}"
            );
        }
        let status_lines: Vec<&str> = page
            .lines()
            .skip_while(|l| !l.starts_with("# TYPE dynamodb_kinesis_destination_status "))
            .skip(1)
            .take_while(|l| !l.starts_with('#'))
            .collect();
        // Per table: six known statuses for one stream, seven (one
        // unknown) for the other.
        assert_eq!(status_lines.len(), 2 * (6 + 7));
        assert!(page.contains(
            "dynamodb_kinesis_poll_duration_seconds_count{account_id=\"123456789012\",region=\"us-east-1\"} 1\n"
        ));
        assert!(page.contains(
            "dynamodb_kinesis_scope_tables{account_id=\"123456789012\",region=\"us-east-1\"} 2\n"
        ));
        // A scope without discovery has no discovery series.
        assert!(
            !page.contains("dynamodb_kinesis_discovery_tables{"),
            "{page}"
        );
        telemetry.remove_scope(&scope);
        store.retain_scopes(&BTreeSet::new());
        let page = text(&Page::new(store, telemetry).plain(Format::Text).await);
        assert!(!page.contains("poll_duration_seconds_count{"), "{page}");
        assert!(!page.contains("dynamodb_kinesis_scope_tables{"), "{page}");
        assert!(page.contains(&format!(
            "dynamodb_kinesis_exporter_build_info{{revision=\"{}\",rustc_version=\"{}\",version=\"{}\"}} 1\n",
            crate::REVISION,
            crate::RUSTC_VERSION,
            crate::VERSION
        )));
    }

    #[tokio::test]
    async fn a_poll_shows_and_a_missing_table_loses_its_destination_series() {
        let store = Arc::new(Store::new([key("orders")]));
        let page = page_with(&store, 4);
        let empty = build::<Bytes>(&store, None, 4);
        assert!(!plain_of(&page, &empty, Format::Text).contains("table=\"orders\""));
        store.record(&key("orders"), &Ok(vec![dest("s1", "ACTIVE")]), 5.0);
        let polled = build(&store, Some(&empty), 4);
        let shown = plain_of(&page, &polled, Format::Text);
        assert!(shown.contains(
            "dynamodb_kinesis_destination_status{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\",stream_arn=\"s1\",status=\"ACTIVE\"} 1\n"
        ), "{shown}");
        assert!(shown.contains(
            "dynamodb_kinesis_table_poll_success{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 1\n"
        ));
        store.record(
            &key("orders"),
            &Err(PollError::NotFound("gone".into())),
            6.0,
        );
        let gone = plain_of(&page, &build(&store, Some(&polled), 4), Format::Text);
        assert!(!gone.contains("stream_arn"), "{gone}");
        assert!(gone.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ), "{gone}");
    }

    #[tokio::test]
    async fn snapshot_is_shared_until_a_change_and_a_second_pass() {
        let store = store();
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        let first = page.current::<Bytes>().await;
        assert!(Arc::ptr_eq(&first, &page.current::<Bytes>().await));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        // The first snapshot counts as old: a change shows at once.
        let first = page.current::<Bytes>().await;
        assert!(Arc::ptr_eq(&first, &page.current::<Bytes>().await));
        // A change younger than MAX_AGE keeps the snapshot.
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        assert!(Arc::ptr_eq(&first, &page.current::<Bytes>().await));
        // Past MAX_AGE, the change shows.
        tokio::time::sleep(MAX_AGE).await;
        let second = page.current::<Bytes>().await;
        assert!(!Arc::ptr_eq(&first, &second));
        let page_text = text(&page.plain(Format::Text).await);
        assert!(page_text.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ));
        // Past MAX_AGE without a change, the snapshot stays.
        tokio::time::sleep(MAX_AGE).await;
        assert!(Arc::ptr_eq(&second, &page.current::<Bytes>().await));
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_let_go_and_only_a_stale_one() {
        let store = store();
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let weak = Arc::downgrade(&page.current::<Bytes>().await);
        // A change younger than MAX_AGE: kept.
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        assert!(!page.release_unneeded());
        assert!(weak.upgrade().is_some());
        // Stale: let go, and freed, as nothing else holds it.
        tokio::time::sleep(MAX_AGE).await;
        assert!(page.release_unneeded());
        assert!(
            weak.upgrade().is_none(),
            "the stale snapshot is still alive"
        );
        // The next request renders the change; with no change after it,
        // it stays however old it gets.
        let page_text = text(&page.plain(Format::Text).await);
        assert!(page_text.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ));
        let weak = Arc::downgrade(&page.current::<Bytes>().await);
        tokio::time::sleep(MAX_AGE).await;
        assert!(!page.release_unneeded());
        assert!(weak.upgrade().is_some());
    }

    #[tokio::test]
    async fn a_fresh_snapshot_nobody_asks_for_is_let_go() {
        let store = store();
        let mut page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        Arc::get_mut(&mut page.inner).unwrap().unused_for = Duration::from_millis(300);
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let weak = Arc::downgrade(&page.current::<Bytes>().await);
        // Asked for every 100 ms: kept, however long.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!page.release_unneeded());
            assert!(Arc::ptr_eq(
                &weak.upgrade().unwrap(),
                &page.current::<Bytes>().await
            ));
        }
        // Not asked for in 300 ms: let go, though nothing changed.
        tokio::time::sleep(Duration::from_millis(350)).await;
        assert!(page.release_unneeded());
        assert!(weak.upgrade().is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn keep_fresh_lets_go_of_a_stale_snapshot_without_a_request() {
        let store = store();
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new(false)),
        ));
        let shutdown = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(Arc::clone(&page).keep_fresh(shutdown.clone().cancelled_owned()));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let weak = Arc::downgrade(&page.current::<Bytes>().await);
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        // Instant is the real clock (std), so wait for real past MAX_AGE,
        // then let the paused tokio clock run the janitor's ticks.
        std::thread::sleep(MAX_AGE);
        tokio::time::sleep(3 * MAX_AGE).await;
        assert!(weak.upgrade().is_none(), "the stale snapshot is still held");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn keep_fresh_waits_at_shutdown_for_the_jobs_in_progress() {
        let store = store();
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new(false)),
        ));
        let hold = page.inner.probe.hold();
        let request = tokio::spawn({
            let page = Arc::clone(&page);
            async move { page.gzip(Format::Text).await }
        });
        page.inner.probe.wait_started(1).await;
        let shutdown = tokio_util::sync::CancellationToken::new();
        let janitor =
            tokio::spawn(Arc::clone(&page).keep_fresh(shutdown.clone().cancelled_owned()));
        shutdown.cancel();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!janitor.is_finished(), "did not wait for the job");
        drop(hold);
        tokio::time::timeout(Duration::from_secs(10), janitor)
            .await
            .expect("the janitor ends once the job is done")
            .unwrap();
        assert!(lock(&page.inner.held).gzip.is_some());
        assert!(gunzip(&request.await.unwrap()).contains("table=\"orders\""));
    }

    #[tokio::test]
    async fn a_failed_job_serves_the_last_page_and_the_next_request_tries_again() {
        let store = store();
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let good = page.plain(Format::Text).await;
        let good_gzip = gunzip(&page.gzip(Format::Text).await);
        page.inner.probe.fail.store(true, Ordering::Relaxed);
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        tokio::time::sleep(MAX_AGE).await;
        // Stale and its rebuild panics: the last page, not an empty one.
        let tail_free = |chunks: &Chunks| concat(&chunks[..chunks.len() - 1]);
        assert_eq!(tail_free(&page.plain(Format::Text).await), tail_free(&good));
        // (The page's own build counters moved meanwhile.)
        let builds_free = |text: &str| {
            let lines = text.lines();
            let kept = lines.filter(|l| !l.starts_with("dynamodb_kinesis_exporter_page_build"));
            kept.collect::<Vec<_>>().join("\n")
        };
        assert_eq!(
            builds_free(&gunzip(&page.gzip(Format::Text).await)),
            builds_free(&good_gzip)
        );
        // Each request tries again (one job at a time).
        page.plain(Format::Text).await;
        assert_eq!(
            page.inner.probe.started(),
            [Job::Text, Job::Gzip, Job::Text, Job::Gzip, Job::Text]
        );
        // Once that page is let go too, only an empty one is left (the
        // families' headers, no samples), and it still parses.
        assert!(page.release_unneeded());
        let empty = text(&page.plain(Format::Text).await);
        assert!(!empty.contains("table=\"orders\""), "{empty}");
        assert!(empty.contains("# TYPE dynamodb_kinesis_destination_status gauge\n"));
        // Nothing is wedged: once rendering works, the change shows.
        page.inner.probe.fail.store(false, Ordering::Relaxed);
        let healed = text(&page.plain(Format::Text).await);
        assert!(healed.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ), "{healed}");
        assert!(gunzip(&page.gzip(Format::Text).await).contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_share_one_job_of_each_form() {
        let store = store();
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new(false)),
        ));
        let hold = page.inner.probe.hold();
        let requests: Vec<_> = (0..16)
            .map(|i| {
                let page = Arc::clone(&page);
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        (Some(page.current::<Bytes>().await), None)
                    } else {
                        (None, Some(page.current::<Segment>().await))
                    }
                })
            })
            .collect();
        page.inner.probe.wait_started(2).await;
        // The others wait for those two.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut started = page.inner.probe.started();
        started.sort_by_key(|job| *job as u8);
        assert_eq!(started, [Job::Text, Job::Gzip]);
        drop(hold);
        let mut texts = Vec::new();
        let mut zips = Vec::new();
        for request in requests {
            let (text, zip) = request.await.unwrap();
            texts.extend(text);
            zips.extend(zip);
        }
        assert_eq!((texts.len(), zips.len()), (8, 8));
        assert!(texts.iter().all(|s| Arc::ptr_eq(s, &texts[0])));
        assert!(zips.iter().all(|s| Arc::ptr_eq(s, &zips[0])));
        assert_eq!(page.inner.probe.started().len(), 2);
        // Each counted once, with the CPU its thread spent.
        for form in PAGE_FORMS {
            let (builds, cpu) = page.inner.telemetry.page_builds(form);
            assert_eq!(builds, 1, "{form}");
            assert!(cpu > 0.0 && cpu < 10.0, "{form}: {cpu}");
        }
        let tail = String::from_utf8(page.inner.tail(Format::Text).to_vec()).unwrap();
        assert!(tail.contains("dynamodb_kinesis_exporter_page_builds_total{form=\"gzip\"} 1\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_that_goes_away_leaves_its_job_to_finish_and_be_stored() {
        let store = store();
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new(false)),
        ));
        let hold = page.inner.probe.hold();
        for form in [Job::Gzip, Job::Text] {
            let jobs = page.inner.probe.started().len();
            let request = tokio::spawn({
                let page = Arc::clone(&page);
                async move {
                    match form {
                        Job::Gzip => page.gzip(Format::Text).await,
                        Job::Text => page.plain(Format::Text).await,
                    }
                }
            });
            page.inner.probe.wait_started(jobs + 1).await;
            // The client hangs up: hyper drops the request's future.
            request.abort();
            assert!(request.await.unwrap_err().is_cancelled());
        }
        drop(hold);
        let stored = || {
            let held = lock(&page.inner.held);
            held.gzip.is_some() && held.text.is_some()
        };
        for _ in 0..10_000 {
            if stored() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let (text_form, gzip_form) = {
            let held = lock(&page.inner.held);
            (
                held.text.clone().expect("stored"),
                held.gzip.clone().expect("stored"),
            )
        };
        // The next requests are answered from what the jobs stored.
        assert!(Arc::ptr_eq(&page.current::<Bytes>().await, &text_form));
        assert!(Arc::ptr_eq(&page.current::<Segment>().await, &gzip_form));
        assert!(gunzip(&page.gzip(Format::Text).await).contains("table=\"orders\""));
        assert_eq!(page.inner.probe.started(), [Job::Gzip, Job::Text]);
    }

    #[tokio::test]
    async fn a_rebuild_shares_every_chunk_that_did_not_change() {
        let (store, names) = polled(3 * 4 + 1);
        let page = page_with(&store, 4);
        let first = build::<Bytes>(&store, None, 4);
        let success = family("dynamodb_kinesis_table_last_success_timestamp_seconds");
        // Four chunks: three full, one of one table.
        assert_eq!(first.families[success].len(), 4);
        // One table in the second chunk is polled again: the same answer,
        // so only its success time moved.
        store.record(
            &key(&names[5]),
            &Ok(vec![dest(&format!("{}-s", names[5]), "ACTIVE")]),
            9.0,
        );
        let second = build(&store, Some(&first), 4);
        // Only the success-time chunk holding that table was rendered.
        assert_eq!(fresh(&first, &second), [(success, 1)]);
        let shown = plain_of(&page, &second, Format::Text);
        assert!(shown.contains(&format!(
            "dynamodb_kinesis_table_last_success_timestamp_seconds{{table=\"{}\",region=\"us-east-1\",account_id=\"123456789012\"}} 9\n",
            names[5]
        )));
        assert_eq!(
            shown,
            reference(&store, &page.inner.telemetry, Format::Text)
        );
        // A failure moves the outcome and the error counters, not the
        // success time (the families that read the outcome or the error
        // counters: the tags series exists only for polled tables, the tag
        // read errors are counters too).
        store.record(
            &key(&names[0]),
            &Err(PollError::Timeout("slow".into())),
            10.0,
        );
        let third = build(&store, Some(&second), 4);
        let mut want = vec![
            (family("dynamodb_kinesis_table_poll_success"), 0),
            (family("dynamodb_kinesis_api_errors_total"), 0),
            (family("dynamodb_kinesis_table_tags"), 0),
            (family("dynamodb_kinesis_table_tag_read_errors_total"), 0),
        ];
        want.sort_unstable();
        assert_eq!(fresh(&second, &third), want);
        // Nothing changed: everything is shared.
        let fourth = build(&store, Some(&third), 4);
        assert!(fresh(&third, &fourth).is_empty());
    }

    #[tokio::test]
    async fn compressed_chunks_are_the_same_allocation_while_their_text_holds() {
        let (store, names) = polled(9);
        let page = page_with(&store, 4);
        let first = build::<Segment>(&store, None, 4);
        store.record(&key(&names[8]), &Ok(vec![dest("t0008-s", "ACTIVE")]), 6.0);
        let second = build(&store, Some(&first), 4);
        let success = family("dynamodb_kinesis_table_last_success_timestamp_seconds");
        assert_eq!(fresh(&first, &second), [(success, 2)]);
        for (f, chunks) in second.families.iter().enumerate() {
            for (at, piece) in chunks.iter().enumerate() {
                let same =
                    piece.body.bytes().as_ptr() == first.families[f][at].body.bytes().as_ptr();
                assert_eq!(same, (f, at) != (success, 2), "{f} {at}");
            }
        }
        // A response sends those very bytes.
        let response = page.inner.gzip_of(&second, Format::Text);
        let kept = &second.families[success][0].body;
        assert!(response.iter().any(|b| b.as_ptr() == kept.bytes().as_ptr()));
        assert_eq!(
            gunzip(&response),
            reference(&store, &page.inner.telemetry, Format::Text)
        );
    }

    #[tokio::test]
    async fn tables_added_and_removed_move_only_the_chunks_from_there_on() {
        let (store, names) = polled(12);
        let page = page_with(&store, 4);
        let telemetry = Arc::clone(&page.inner.telemetry);
        let text0 = build::<Bytes>(&store, None, 4);
        let gzip0 = build::<Segment>(&store, None, 4);
        // Added after every other: only the new last chunk is new.
        let mut keys: Vec<TableKey> = names.iter().map(|n| key(n)).collect();
        keys.push(key("zz"));
        store.reconcile(keys.clone());
        let text1 = build(&store, Some(&text0), 4);
        let gzip1 = build(&store, Some(&gzip0), 4);
        assert!(fresh(&text0, &text1).iter().all(|(_, at)| *at == 3));
        assert!(fresh(&gzip0, &gzip1).iter().all(|(_, at)| *at == 3));
        for format in [Format::Text, Format::OpenMetrics] {
            let want = reference(&store, &telemetry, format);
            assert_eq!(plain_of(&page, &text1, format), want);
            assert_eq!(gzip_of(&page, &gzip1, format), want);
        }
        // One removed in the second chunk: the first is kept, the others
        // have moved.
        keys.retain(|k| *k.table != *"t0005");
        store.reconcile(keys);
        let text2 = build(&store, Some(&text1), 4);
        let gzip2 = build(&store, Some(&gzip1), 4);
        let kept: Vec<bool> = shared(&text1, &text2)
            .iter()
            .flat_map(|c| c.iter().copied())
            .collect();
        assert!(kept.iter().any(|k| *k));
        assert!(fresh(&text1, &text2).iter().all(|(_, at)| *at >= 1));
        assert!(fresh(&gzip1, &gzip2).iter().all(|(_, at)| *at >= 1));
        let want = reference(&store, &telemetry, Format::Text);
        assert!(!want.contains("t0005"));
        assert_eq!(plain_of(&page, &text2, Format::Text), want);
        assert_eq!(gzip_of(&page, &gzip2, Format::Text), want);
    }

    /// One change to the store, from the property test's bytes.
    fn apply(store: &Store, (op, index, variant): (u8, u8, u8), now: f64) {
        let table = key(&format!("t{}", index % 10));
        let stream = StreamKey {
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            stream_arn: format!("s{}", index % 6).into(),
        };
        let scope = ScopeKey {
            account_id: "123456789012".into(),
            region: ["us-east-1", "eu-west-1"][usize::from(index % 2)].into(),
        };
        let arn = format!("s{}", variant % 6);
        match op % 10 {
            0 => {
                let listing = match variant % 4 {
                    0 => vec![],
                    1 => vec![dest(&arn, "ACTIVE")],
                    2 => vec![dest(&arn, "PAUSED")],
                    _ => vec![dest(&arn, "ENABLING"), dest("s9", "ENABLE_FAILED")],
                };
                store.record(&table, &Ok(listing), now);
            }
            1 => {
                let err = match variant % 3 {
                    0 => PollError::NotFound("gone".into()),
                    1 => PollError::Timeout("slow".into()),
                    _ => PollError::Service {
                        code: "ThrottlingException".into(),
                        message: "slow down".into(),
                    },
                };
                store.record(&table, &Err(err), now);
            }
            2 => {
                let point = (variant % 3 > 0).then_some((f64::from(variant), now));
                store.record_cdc(
                    &table,
                    &[(
                        "PutItem".into(),
                        "AgeOfOldestUnreplicatedRecord".into(),
                        point,
                    )],
                );
            }
            3 => {
                let outcome = match variant % 3 {
                    0 => Err(PollError::NotFound("gone".into())),
                    1 => Err(PollError::Timeout("slow".into())),
                    _ => Ok(StreamSummary {
                        name: arn.clone(),
                        status: ["ACTIVE", "UPDATING"][usize::from(variant % 2)].into(),
                        open_shards: i64::from(variant % 4),
                        mode: "ON_DEMAND".into(),
                        encryption: "NONE".into(),
                        retention_hours: 24,
                    }),
                };
                store.record_stream(&stream, &outcome, now);
            }
            4 => store.remove_stream(&stream),
            5 => {
                let mask = u16::from(index) << 8 | u16::from(variant);
                store.reconcile(
                    (0..10)
                        .filter(|i| mask & (1 << i) != 0)
                        .map(|i| key(&format!("t{i}"))),
                );
            }
            6 => {
                store.update_scope(&scope, |s| s.tables = usize::from(variant % 5));
                store.set_budget(
                    &scope,
                    crate::state::Service::DynamoDb,
                    f64::from(variant),
                    0,
                );
                store.count_request(
                    &scope,
                    crate::state::Service::Kinesis,
                    "DescribeStreamSummary",
                );
            }
            7 => {
                let expected = [None, Some(true), Some(false)][usize::from(variant % 3)];
                let pattern = (variant % 2 == 0)
                    .then(|| Arc::new(crate::config::Pattern::new("^s[0-2]$").unwrap()));
                store.set_expectation(&table, expected, pattern);
            }
            8 => match variant % 4 {
                0 => store.set_exports_tags(&table, variant % 8 == 0),
                1 => store.record_tags(
                    &table,
                    Err(&PollError::Service {
                        code: "AccessDeniedException".into(),
                        message: "no".into(),
                    }),
                    now,
                ),
                _ => store.record_tags(
                    &table,
                    Ok(vec![("tag_team".into(), format!("team{variant}"))]),
                    now,
                ),
            },
            _ => {
                let kept: BTreeSet<ScopeKey> =
                    (variant % 2 == 0).then_some(scope).into_iter().collect();
                store.retain_scopes(&kept);
            }
        }
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Whatever changes, and however seldom each form is rebuilt, the
        /// page (text, and gzip decoded, in both formats) is what a
        /// rendering from scratch gives.
        #[test]
        fn the_page_always_equals_a_rendering_from_scratch(
            steps in proptest::collection::vec(
                (proptest::prelude::any::<(u8, u8, u8)>(), 0u8..4),
                1..40,
            ),
        ) {
            let store = Arc::new(Store::new((0..7).map(|i| key(&format!("t{i}")))));
            let page = page_with(&store, 3);
            let telemetry = Arc::clone(&page.inner.telemetry);
            let mut text_form: Option<Snapshot<Bytes>> = None;
            let mut gzip_form: Option<Snapshot<Segment>> = None;
            for (i, (change, rebuild)) in steps.into_iter().enumerate() {
                apply(&store, change, i as f64 + 0.5);
                // Rebuild the text form, the gzip form, both or neither.
                if rebuild & 1 != 0 {
                    let built = build(&store, text_form.as_ref(), 3);
                    let want = reference(&store, &telemetry, Format::Text);
                    proptest::prop_assert_eq!(&plain_of(&page, &built, Format::Text), &want);
                    text_form = Some(built);
                }
                if rebuild & 2 != 0 {
                    let built = build(&store, gzip_form.as_ref(), 3);
                    let want = reference(&store, &telemetry, Format::Text);
                    proptest::prop_assert_eq!(&gzip_of(&page, &built, Format::Text), &want);
                    gzip_form = Some(built);
                }
            }
            text_form = Some(build(&store, text_form.as_ref(), 3));
            gzip_form = Some(build(&store, gzip_form.as_ref(), 3));
            for format in [Format::Text, Format::OpenMetrics] {
                let want = reference(&store, &telemetry, format);
                proptest::prop_assert_eq!(
                    &plain_of(&page, text_form.as_ref().unwrap(), format),
                    &want
                );
                proptest::prop_assert_eq!(
                    &gzip_of(&page, gzip_form.as_ref().unwrap(), format),
                    &want
                );
            }
        }
    }
}
