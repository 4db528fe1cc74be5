//! The one metrics page every scraper shares.
//!
//! A [`Snapshot`] holds the per-table families of every table, rendered
//! from the store's state once: per family, the sample text in chunks of
//! [`CHUNK_ITEMS`] tables (or streams, or scopes), shared by both
//! formats (the text format 0.0.4 and OpenMetrics differ only in their
//! `# HELP`/`# TYPE` lines and the final `# EOF`), and, built the first time
//! a scraper asks for it, the gzip form of each format. Concurrent scrapers
//! get `Arc`s of the same snapshot and send its `Bytes` without copying, so
//! neither the cost of a scrape nor the memory grows with the number of
//! scrapers.
//!
//! A snapshot is rebuilt only when the store's generation moved (some table
//! changed) and the snapshot is at least [`MAX_AGE`] old, on the request
//! that finds it so; concurrent scrapers of a stale snapshot wait for that
//! one rebuild, which runs on the blocking pool so it never stalls the
//! threads answering `/healthz`.
//!
//! A rebuild renders every chunk again but keeps the previous snapshot's
//! `Bytes` wherever the text came out the same, so two snapshots share all
//! but the chunks that changed: while scrapers still send the old page, the
//! new one costs only what moved (a few megabytes a second at 10,000 tables
//! polled every minute), not a second copy of the page.
//!
//! A stale snapshot is worth nothing once its successor is built (the next
//! request rebuilds it anyway), so [`Page::release_unneeded`], run every
//! [`MAX_AGE`] by [`Page::keep_fresh`], drops it when nobody scrapes. It
//! also lets go of a fresh snapshot no request has asked for in
//! [`UNUSED_FOR`]: scrapers come every 15 s or more, and by then a fleet's
//! polls have changed some table anyway. At 10,000 tables the page is tens
//! of megabytes; between scrapes the exporter holds none of it, and during
//! one it holds one page plus what responses still in flight hold of the
//! last. The price is one rendering per scrape after a quiet spell.
//!
//! The process-wide families (poll durations, build info, reload status,
//! `process_*`) are a few kilobytes encoded per scrape and appended as a
//! tail: in the gzip form as a stored (uncompressed) deflate block after
//! the snapshot's sync-flushed deflate stream, with the CRC combined, so
//! every response is one ordinary gzip member.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use flate2::{Compress, Compression, Crc, FlushCompress};
use tokio::sync::OnceCell;

use crate::exposition::metrics::{
    self, Kind, Telemetry, SCOPE_FAMILIES, STREAM_FAMILIES, TABLE_FAMILIES,
};
use crate::exposition::openmetrics;
use crate::state::store::Store;
pub use dke_web::negotiate::Format;

/// How old a snapshot may get before a change in the store rebuilds it.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// How long a snapshot no request asked for is kept.
pub const UNUSED_FOR: Duration = Duration::from_secs(5);

/// Tables (or streams, or scopes) per chunk of a family's text. Smaller
/// chunks share more between snapshots when a few tables change; larger
/// ones mean fewer `Bytes` per response, and so fewer writes: at 64 the
/// plain scrape of 10,000 tables was 0.81x nginx, against 0.88x with one
/// block per family (`bench/serving.sh`). At 1,024 a chunk is 150 KB to
/// 1.1 MB, and the families that change at every poll (the success times,
/// under a tenth of the page) are the ones copied anew; the rest is shared.
pub const CHUNK_ITEMS: usize = 1024;

/// The rendered table families at one store generation.
pub struct Snapshot {
    generation: u64,
    built: Instant,
    /// When a request last asked for it, in milliseconds after `built`.
    used: AtomicU64,
    /// Per family (see [`families`]): every table's, stream's or scope's
    /// samples of it, in chunks.
    blocks: Vec<Vec<Bytes>>,
    /// Per format: the gzip header and the sync-flushed deflate stream of
    /// the headers and blocks, with their CRC.
    gzip: [OnceCell<Arc<Deflated>>; 2],
}

struct Deflated {
    bytes: Bytes,
    crc: Crc,
}

/// The shared page: the current snapshot and the family headers.
pub struct Page {
    store: Arc<Store>,
    telemetry: Arc<Telemetry>,
    /// `# HELP`/`# TYPE` lines per format, per family.
    headers: [Vec<Bytes>; 2],
    /// The snapshot, while it is fresh.
    current: RwLock<Option<Arc<Snapshot>>>,
    /// How long a snapshot no request asked for is kept ([`UNUSED_FOR`]).
    unused_for: Duration,
    /// Held while one scraper rebuilds a stale snapshot, so the others wait
    /// for that rebuild instead of each doing their own.
    rebuild: tokio::sync::Mutex<()>,
    level: Compression,
    /// Renders a snapshot ([`build`]; a test swaps in one that fails).
    builder: fn(&Store, Option<&Snapshot>) -> Snapshot,
    /// The process-wide families per format, re-encoded when older than
    /// [`MAX_AGE`] (reading `/proc` for every scrape would cost more than
    /// sending the page).
    tails: std::sync::Mutex<[Option<(Instant, Bytes)>; 2]>,
}

/// One response body's chunks.
pub type Chunks = Vec<Bytes>;

impl Page {
    /// A page over `store`; the first snapshot is built by the first
    /// request.
    pub fn new(store: Arc<Store>, telemetry: Arc<Telemetry>) -> Self {
        let text = families()
            .map(|(name, help, kind)| {
                Bytes::from(format!(
                    "# HELP {name} {help}\n# TYPE {name} {}\n",
                    kind.as_str()
                ))
            })
            .collect();
        let om = families()
            .map(|(name, help, kind)| Bytes::from(openmetrics::header(name, help, kind.as_str())))
            .collect();
        Page {
            store,
            telemetry,
            headers: [text, om],
            current: RwLock::new(None),
            unused_for: UNUSED_FOR,
            rebuild: tokio::sync::Mutex::new(()),
            level: Compression::new(4),
            builder: build,
            tails: std::sync::Mutex::new([None, None]),
        }
    }

    /// The current snapshot, rebuilt first if it is stale or was let go.
    pub async fn snapshot(&self) -> Arc<Snapshot> {
        if let Some(current) = self.fresh() {
            return current;
        }
        // Holding this async mutex across the rebuild is the point: it
        // makes concurrent scrapers wait for one rebuild.
        let _guard = self.rebuild.lock().await;
        if let Some(current) = self.fresh() {
            return current;
        }
        // The stale snapshot, if still held, lends the chunks that did not
        // change.
        let previous = self
            .current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let store = Arc::clone(&self.store);
        let fallback = previous.clone();
        let builder = self.builder;
        let job = move || builder(&store, previous.as_deref());
        let fresh = match tokio::task::spawn_blocking(job).await {
            Ok(snapshot) => Arc::new(snapshot),
            Err(err) => {
                tracing::error!(error = %err, "rebuilding the metrics page failed; serving the last one");
                // The last page if it is still held (its age shows in the
                // success timestamps); else an empty one (the families'
                // headers and the process-wide tail).
                return fallback
                    .unwrap_or_else(|| Arc::new(Snapshot::empty(self.store.generation())));
            }
        };
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(Arc::clone(&fresh));
        fresh
    }

    /// The held snapshot if it is not stale.
    fn fresh(&self) -> Option<Arc<Snapshot>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner);
        current
            .as_ref()
            .filter(|snapshot| !self.is_stale(snapshot))
            .map(|snapshot| {
                snapshot.touch();
                Arc::clone(snapshot)
            })
    }

    fn is_stale(&self, snapshot: &Snapshot) -> bool {
        snapshot.generation != self.store.generation() && snapshot.built.elapsed() >= MAX_AGE
    }

    /// Let go of the held snapshot if it is stale or unused for
    /// `self.unused_for`. Returns whether it did.
    pub fn release_unneeded(&self) -> bool {
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        let unneeded = current
            .as_ref()
            .is_some_and(|s| self.is_stale(s) || s.unused() >= self.unused_for);
        if unneeded {
            *current = None;
        }
        unneeded
    }

    /// Every [`MAX_AGE`], let go of a snapshot nobody needs, until
    /// `shutdown`.
    pub async fn keep_fresh(
        self: Arc<Self>,
        shutdown: tokio_util::sync::WaitForCancellationFutureOwned,
    ) {
        let mut tick = tokio::time::interval(MAX_AGE);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {
                    self.release_unneeded();
                }
            }
        }
    }

    /// The whole page in `format`, as chunks to send in order.
    pub async fn plain(&self, format: Format) -> Chunks {
        let snapshot = self.snapshot().await;
        let headers = &self.headers[format.index()];
        let mut chunks = Vec::with_capacity(2 * headers.len() + 1);
        for (header, block) in headers.iter().zip(&snapshot.blocks) {
            chunks.push(header.clone());
            chunks.extend(block.iter().cloned());
        }
        chunks.push(self.tail(format));
        chunks
    }

    /// The whole page in `format`, gzip-encoded, as chunks to send in order.
    pub async fn gzip(&self, format: Format) -> Chunks {
        let snapshot = self.snapshot().await;
        let cell = &snapshot.gzip[format.index()];
        let deflated = cell
            .get_or_init(|| async {
                let headers = self.headers[format.index()].clone();
                let blocks = snapshot.blocks.clone();
                let level = self.level;
                let job = move || deflate_page(&headers, &blocks, level);
                Arc::new(
                    tokio::task::spawn_blocking(job)
                        .await
                        .unwrap_or_else(|err| {
                            tracing::error!(error = %err, "compressing the metrics page failed");
                            // Still a valid (empty) start of a gzip stream.
                            Deflated {
                                bytes: Bytes::from_static(&GZIP_HEADER),
                                crc: Crc::new(),
                            }
                        }),
                )
            })
            .await;
        let tail = self.tail(format);
        // The CRC of the empty string combined with the page's is the
        // page's (`Crc` is not `Clone`).
        let mut crc = Crc::new();
        crc.combine(&deflated.crc);
        let mut tail_crc = Crc::new();
        tail_crc.update(&tail);
        crc.combine(&tail_crc);
        let mut rest = stored_blocks(&tail);
        rest.extend_from_slice(&crc.sum().to_le_bytes());
        rest.extend_from_slice(&crc.amount().to_le_bytes());
        vec![deflated.bytes.clone(), Bytes::from(rest)]
    }

    /// The process-wide families, at most [`MAX_AGE`] old, and `# EOF`
    /// for OpenMetrics.
    fn tail(&self, format: Format) -> Bytes {
        let mut tails = self.tails.lock().unwrap_or_else(PoisonError::into_inner);
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

/// Render every table's, stream's and scope's families, in chunks of
/// [`CHUNK_ITEMS`] per family, reusing `previous`'s chunk wherever the text
/// is the same.
fn build(store: &Store, previous: Option<&Snapshot>) -> Snapshot {
    // Read the generation first: a change racing with the rendering below
    // makes the next request rebuild again rather than be missed.
    let generation = store.generation();
    let mut chunker = Chunker::new(families().count(), previous);
    let streams_at = TABLE_FAMILIES.len();
    let scopes_at = streams_at + STREAM_FAMILIES.len();
    store.visit(|state| chunker.item(0, &metrics::render_table(state)));
    store.visit_streams(|state| chunker.item(streams_at, &metrics::render_stream(state)));
    store.visit_scopes(|state| chunker.item(scopes_at, &metrics::render_scope(state)));
    Snapshot {
        generation,
        built: built_at(generation),
        used: AtomicU64::new(0),
        blocks: chunker.finish(),
        gzip: [OnceCell::new(), OnceCell::new()],
    }
}

/// Cuts each family's text into chunks of [`CHUNK_ITEMS`] items. While a
/// chunk's text matches the previous snapshot's chunk at the same place,
/// nothing is buffered (the match is only followed); a chunk is copied
/// into a buffer only from where it first differs. So a rebuild of a page
/// where little changed holds little besides the two snapshots' shared
/// chunks.
struct Chunker<'a> {
    previous: Option<&'a Snapshot>,
    /// Per family, the chunk being filled.
    open: Vec<Open>,
    done: Vec<Vec<Bytes>>,
}

#[derive(Default, Clone)]
struct Open {
    items: usize,
    /// Bytes of the previous chunk matched so far.
    matched: usize,
    /// Whether the text has left the previous chunk; then it is in `text`.
    diverged: bool,
    /// Reused from chunk to chunk: each finished chunk is copied out at
    /// its exact size.
    text: Vec<u8>,
}

impl<'a> Chunker<'a> {
    fn new(count: usize, previous: Option<&'a Snapshot>) -> Self {
        Chunker {
            previous,
            open: vec![Open::default(); count],
            done: vec![Vec::new(); count],
        }
    }

    /// The previous snapshot's chunk at the place `family`'s open one
    /// fills, or none.
    fn previous_chunk(&self, family: usize) -> Option<&'a Bytes> {
        let at = self.done[family].len();
        self.previous
            .and_then(|p| p.blocks.get(family))
            .and_then(|chunks| chunks.get(at))
    }

    /// One item's fragments, for the families from `offset` on.
    fn item(&mut self, offset: usize, fragments: &metrics::Fragments) {
        for (i, text) in fragments.0.iter().enumerate() {
            let family = offset + i;
            let before = self.previous_chunk(family);
            let open = &mut self.open[family];
            let text = text.as_bytes();
            if !open.diverged {
                let old: &[u8] = before.map_or(&[], |b| &b[..]);
                if old[open.matched..].starts_with(text) {
                    open.matched += text.len();
                } else {
                    open.diverged = true;
                    open.text.clear();
                    open.text.extend_from_slice(&old[..open.matched]);
                    open.text.extend_from_slice(text);
                }
            } else {
                open.text.extend_from_slice(text);
            }
            open.items += 1;
            if open.items == CHUNK_ITEMS {
                self.cut(family);
            }
        }
    }

    /// Close `family`'s open chunk: the previous snapshot's chunk (or the
    /// start of it) where the text is the same, else a copy.
    fn cut(&mut self, family: usize) {
        let before = self.previous_chunk(family);
        let open = &mut self.open[family];
        let chunk = if open.diverged {
            Bytes::copy_from_slice(&open.text)
        } else {
            before.map_or_else(Bytes::new, |b| b.slice(..open.matched))
        };
        open.items = 0;
        open.matched = 0;
        open.diverged = false;
        if !chunk.is_empty() {
            self.done[family].push(chunk);
        }
    }

    fn finish(mut self) -> Vec<Vec<Bytes>> {
        for family in 0..self.open.len() {
            self.cut(family);
        }
        self.done
    }
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

impl Snapshot {
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
    fn empty(generation: u64) -> Self {
        Snapshot {
            generation,
            built: built_at(generation),
            used: AtomicU64::new(0),
            blocks: vec![Vec::new(); families().count()],
            gzip: [OnceCell::new(), OnceCell::new()],
        }
    }
}

/// Every family the snapshot holds, in page order: per table, per stream,
/// per scope.
fn families() -> impl Iterator<Item = (&'static str, &'static str, Kind)> {
    let table = TABLE_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    let stream = STREAM_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    let scope = SCOPE_FAMILIES.iter().map(|f| (f.name, f.help, f.kind));
    table.chain(stream).chain(scope)
}

/// A gzip header: deflate, no name, no time, unknown OS.
const GZIP_HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

/// The gzip header and a deflate stream of `headers[i] + blocks[i]` for
/// every family, sync-flushed so more deflate blocks can follow.
fn deflate_page(headers: &[Bytes], blocks: &[Vec<Bytes>], level: Compression) -> Deflated {
    let total: usize = blocks.iter().flatten().map(Bytes::len).sum();
    let mut out = Vec::with_capacity(total / 10 + 4096);
    out.extend_from_slice(&GZIP_HEADER);
    let mut compress = Compress::new(level, false);
    let mut crc = Crc::new();
    for (header, block) in headers.iter().zip(blocks) {
        for part in std::iter::once(header).chain(block) {
            crc.update(part);
            deflate_into(&mut compress, part, &mut out, FlushCompress::None);
        }
    }
    deflate_into(&mut compress, &[], &mut out, FlushCompress::Sync);
    // Sized for a poorly compressible page; give the slack back.
    out.shrink_to_fit();
    Deflated {
        bytes: Bytes::from(out),
        crc,
    }
}

fn deflate_into(compress: &mut Compress, input: &[u8], out: &mut Vec<u8>, flush: FlushCompress) {
    let start = compress.total_in();
    loop {
        if out.capacity() - out.len() < 64 * 1024 {
            out.reserve(256 * 1024);
        }
        let done = (compress.total_in() - start) as usize;
        if compress.compress_vec(&input[done..], out, flush).is_err() {
            // Cannot happen with in-memory buffers; stop rather than spin.
            tracing::error!("deflate failed");
            return;
        }
        let consumed = (compress.total_in() - start) as usize;
        // Finished when all input is in and the output had room to spare,
        // which for a sync flush means the flush is complete.
        if consumed == input.len() && out.len() < out.capacity() {
            return;
        }
    }
}

/// `data` as deflate stored blocks, the last one final.
fn stored_blocks(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 5 * (data.len() / 65535 + 1));
    let mut chunks = data.chunks(65535).peekable();
    if chunks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
        return out;
    }
    while let Some(chunk) = chunks.next() {
        let last = chunks.peek().is_none();
        out.push(u8::from(last));
        let len = chunk.len() as u16;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::Destination;
    use crate::exposition::metrics::render_exposition;
    use crate::state::TableKey;
    use std::io::Read as _;

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

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn gunzip(bytes: &[u8]) -> String {
        let mut out = String::new();
        flate2::read::GzDecoder::new(bytes)
            .read_to_string(&mut out)
            .expect("valid gzip");
        out
    }

    #[tokio::test]
    async fn text_page_is_the_classic_exposition() {
        let store = store();
        let telemetry = Arc::new(Telemetry::new(false));
        let page = Page::new(Arc::clone(&store), Arc::clone(&telemetry));
        let (tables, streams, scopes) = (
            store.fragments(),
            store.stream_fragments(),
            store.scope_fragments(),
        );
        let classic = render_exposition(
            &crate::exposition::metrics::Sections {
                tables: &tables,
                streams: &streams,
                scopes: &scopes,
            },
            &telemetry,
        );
        let text = String::from_utf8(concat(&page.plain(Format::Text).await)).unwrap();
        assert_eq!(text, classic);
    }

    #[tokio::test]
    async fn gzip_decodes_to_the_plain_page_in_both_formats() {
        let page = Page::new(store(), Arc::new(Telemetry::new(false)));
        for format in [Format::Text, Format::OpenMetrics] {
            let plain = String::from_utf8(concat(&page.plain(format).await)).unwrap();
            let zipped = concat(&page.gzip(format).await);
            assert!(zipped.len() < plain.len(), "{format:?}");
            assert_eq!(gunzip(&zipped), plain, "{format:?}");
        }
    }

    #[tokio::test]
    async fn openmetrics_page_changes_only_headers_and_ends_with_eof() {
        let telemetry = Arc::new(Telemetry::new(false));
        telemetry.observe_poll(
            &crate::state::ScopeKey {
                account_id: "123456789012".into(),
                region: "us-east-1".into(),
            },
            0.25,
        );
        let page = Page::new(store(), telemetry);
        let text = String::from_utf8(concat(&page.plain(Format::Text).await)).unwrap();
        let om = String::from_utf8(concat(&page.plain(Format::OpenMetrics).await)).unwrap();
        let samples = |page: &str| -> Vec<String> {
            page.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&text), samples(&om));
        assert!(om.ends_with("\n# EOF\n"), "{om}");
        assert!(om.contains("# TYPE dynamodb_kinesis_api_errors counter\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_destination info\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_exporter_build info\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_destination_status gauge\n"));
        assert!(om.contains("# TYPE dynamodb_kinesis_poll_duration_seconds histogram\n"));
    }

    #[tokio::test]
    async fn snapshot_is_shared_until_a_change_and_a_second_pass() {
        let store = store();
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        let first = page.snapshot().await;
        assert!(Arc::ptr_eq(&first, &page.snapshot().await));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        // The first snapshot counts as old: a change shows at once.
        let first = page.snapshot().await;
        assert!(Arc::ptr_eq(&first, &page.snapshot().await));
        // A change younger than MAX_AGE keeps the snapshot.
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        assert!(Arc::ptr_eq(&first, &page.snapshot().await));
        // Past MAX_AGE, the change shows.
        tokio::time::sleep(MAX_AGE).await;
        let second = page.snapshot().await;
        assert!(!Arc::ptr_eq(&first, &second));
        let text = String::from_utf8(concat(&page.plain(Format::Text).await)).unwrap();
        assert!(text.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ));
        // Past MAX_AGE without a change, the snapshot stays.
        tokio::time::sleep(MAX_AGE).await;
        assert!(Arc::ptr_eq(&second, &page.snapshot().await));
    }

    #[tokio::test]
    async fn a_stale_snapshot_is_let_go_and_only_a_stale_one() {
        let store = store();
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let weak = Arc::downgrade(&page.snapshot().await);
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
        let text = String::from_utf8(concat(&page.plain(Format::Text).await)).unwrap();
        assert!(text.contains(
            "dynamodb_kinesis_table_destinations{table=\"orders\",region=\"us-east-1\",account_id=\"123456789012\"} 0\n"
        ));
        let weak = Arc::downgrade(&page.snapshot().await);
        tokio::time::sleep(MAX_AGE).await;
        assert!(!page.release_unneeded());
        assert!(weak.upgrade().is_some());
    }

    #[tokio::test]
    async fn a_fresh_snapshot_nobody_asks_for_is_let_go() {
        let store = store();
        let mut page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        page.unused_for = Duration::from_millis(300);
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let weak = Arc::downgrade(&page.snapshot().await);
        // Asked for every 100 ms: kept, however long.
        for _ in 0..6 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(!page.release_unneeded());
            assert!(Arc::ptr_eq(
                &weak.upgrade().unwrap(),
                &page.snapshot().await
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
        let weak = Arc::downgrade(&page.snapshot().await);
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        // Instant is the real clock (std), so wait for real past MAX_AGE,
        // then let the paused tokio clock run the janitor's ticks.
        std::thread::sleep(MAX_AGE);
        tokio::time::sleep(3 * MAX_AGE).await;
        assert!(weak.upgrade().is_none(), "the stale snapshot is still held");
        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_rebuild_serves_the_last_page() {
        let store = store();
        let mut page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        store.record(&key("payments"), &Ok(vec![]), 6.5);
        let good = page.plain(Format::Text).await;
        page.builder = |_, _| panic!("rendering failed");
        store.record(&key("orders"), &Ok(vec![]), 7.0);
        tokio::time::sleep(MAX_AGE).await;
        // Stale and its rebuild panics: the last page, not an empty one.
        let tail_free = |chunks: &Chunks| concat(&chunks[..chunks.len() - 1]);
        assert_eq!(tail_free(&page.plain(Format::Text).await), tail_free(&good));
        // Once that page is let go too, only an empty one is left (the
        // families' headers, no samples), and it still parses.
        assert!(page.release_unneeded());
        let empty = String::from_utf8(concat(&page.plain(Format::Text).await)).unwrap();
        assert!(!empty.contains("table=\"orders\""), "{empty}");
        assert!(empty.contains("# TYPE dynamodb_kinesis_destination_status gauge\n"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_scrapers_of_a_stale_snapshot_share_one_rebuild() {
        let store = store();
        let page = Arc::new(Page::new(
            Arc::clone(&store),
            Arc::new(Telemetry::new(false)),
        ));
        tokio::time::sleep(MAX_AGE).await;
        store.record(&key("orders"), &Ok(vec![]), 8.0);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let page = Arc::clone(&page);
                tokio::spawn(async move { page.snapshot().await })
            })
            .collect();
        let mut snapshots = Vec::new();
        for task in tasks {
            snapshots.push(task.await.unwrap());
        }
        assert!(snapshots.iter().all(|s| Arc::ptr_eq(s, &snapshots[0])));
    }

    #[tokio::test]
    async fn a_rebuild_shares_every_chunk_that_did_not_change() {
        let names: Vec<String> = (0..3 * CHUNK_ITEMS + 5)
            .map(|i| format!("t{i:04}"))
            .collect();
        let store = Arc::new(Store::new(names.iter().map(|n| key(n))));
        for name in &names {
            store.record(&key(name), &Ok(vec![]), 5.0);
        }
        let page = Page::new(Arc::clone(&store), Arc::new(Telemetry::new(false)));
        let first = page.snapshot().await;
        let success = TABLE_FAMILIES
            .iter()
            .position(|f| f.name == "dynamodb_kinesis_table_last_success_timestamp_seconds")
            .unwrap();
        // Four chunks: three full, one of five tables.
        assert_eq!(first.blocks[success].len(), 4);
        // One table in the second chunk changes its success time.
        store.record(&key(&names[CHUNK_ITEMS + 1]), &Ok(vec![]), 9.0);
        tokio::time::sleep(MAX_AGE).await;
        let second = page.snapshot().await;
        assert!(!Arc::ptr_eq(&first, &second));
        let mut shared = 0;
        let mut fresh = Vec::new();
        for (family, (old, new)) in first.blocks.iter().zip(&second.blocks).enumerate() {
            for (at, (a, b)) in old.iter().zip(new).enumerate() {
                if a.as_ptr() == b.as_ptr() {
                    shared += 1;
                } else {
                    fresh.push((family, at));
                }
            }
        }
        // Only the success-time chunk holding that table was copied anew.
        assert_eq!(fresh, [(success, 1)]);
        assert!(shared > 10);
        // And the page is what a rendering from scratch gives.
        let text = concat(&page.plain(Format::Text).await);
        let from_scratch = build(&store, None);
        let mut scratch = Vec::new();
        for (header, block) in page.headers[0].iter().zip(&from_scratch.blocks) {
            scratch.extend_from_slice(header);
            block.iter().for_each(|c| scratch.extend_from_slice(c));
        }
        assert!(text.starts_with(&scratch));
        assert!(String::from_utf8(text).unwrap().contains(&format!(
            "dynamodb_kinesis_table_last_success_timestamp_seconds{{table=\"{}\",region=\"us-east-1\",account_id=\"123456789012\"}} 9\n",
            names[CHUNK_ITEMS + 1]
        )));
    }

    #[test]
    fn stored_blocks_split_at_64_kib() {
        let data = vec![b'x'; 70_000];
        let blocks = stored_blocks(&data);
        assert_eq!(blocks.len(), data.len() + 10);
        assert_eq!(blocks[0], 0, "first block not final");
        assert_eq!(blocks[5 + 65535], 1, "last block final");
        assert_eq!(stored_blocks(b""), [1, 0, 0, 0xff, 0xff]);
    }
}
