//! The status page on `/`: every polled table in one HTML table, for people,
//! the way blackbox_exporter's landing page lists its recent probes.
//!
//! It says what `/metrics` says, from the same [`Store`], and never calls
//! AWS. A request copies what each row needs while it visits the store (a
//! batch of entries per read lock, as the metrics page does), lets go of the
//! locks, then classifies, sorts and renders; no lock is held while HTML is
//! written. Problems come first, in the order of [`Severity`], then rows go
//! by account, region and table. Past [`ROWS_PER_PAGE`] rows the page is
//! split (`/?page=N`).
//!
//! Everything that came from AWS or from the configuration (table names,
//! stream ARNs, status descriptions, error codes, tag values, patterns) goes
//! through [`escape`] and nothing else. The page needs no script and loads
//! nothing: its only style is inline, so it works under a
//! Content-Security-Policy of [`CONTENT_SECURITY_POLICY`].
//!
//! It is exposition, not HTTP: [`answer`] returns the HTML and whether the
//! page asked for exists; the route (`exporter::http`) turns that into a
//! response.

use std::collections::{BTreeMap, HashMap};
use std::fmt::{self, Write as _};
use std::sync::Arc;

use crate::config::Pattern;
use crate::state::store::Store;
use crate::state::{
    split_stream_arn, Name, ScopeKey, StreamKey, StreamState, TableState, NOT_FOUND,
    STREAM_CHECKED, WORKING,
};

/// Rows on one page; more go to the next page.
pub const ROWS_PER_PAGE: usize = 500;

/// A table is stale when its last successful poll is older than this many
/// of its scope's poll intervals.
pub const STALE_AFTER_INTERVALS: f64 = 3.0;

/// What the page needs of a browser's Content-Security-Policy: no script,
/// nothing loaded, inline style only. The route sends it.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// The poll interval assumed for a scope the store has not described yet
/// (the configuration's default).
const DEFAULT_INTERVAL: f64 = crate::config::DEFAULT_POLL_INTERVAL.as_secs() as f64;

/// Text made safe to place in HTML text and in quoted attribute values:
/// `&`, `<`, `>`, `"` and `'` become entities. The one escaping function of
/// the page; every string that did not come from this file goes through it.
pub fn escape(text: &str) -> Escaped<'_> {
    Escaped(text)
}

/// See [`escape`]; it escapes as it is written, without a copy.
pub struct Escaped<'a>(&'a str);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(at) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..at])?;
            f.write_str(match rest.as_bytes()[at] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[at + 1..];
        }
        f.write_str(rest)
    }
}

/// How bad a table's state is; rows are sorted by it, worst first (the
/// order of the variants). A table gets the worst that applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Severity {
    /// Expected to stream, and no ACTIVE or UPDATING destination.
    NotStreaming,
    /// An ENABLE_FAILED destination, and no ACTIVE or UPDATING one.
    EnableFailed,
    /// A destination's stream is NOT_FOUND or DELETING.
    StreamMissing,
    /// No working destination's stream name matches `expect.stream`.
    WrongStream,
    /// The last poll of the table, or the last check of one of its
    /// streams, failed.
    Failing,
    /// No successful poll for [`STALE_AFTER_INTERVALS`] poll intervals.
    Stale,
    /// Waiting for the first poll or check, or a status is changing.
    Changing,
    /// Not streaming, and not expected to (or no expectation is known).
    Off,
    /// Streaming.
    Ok,
}

impl Severity {
    /// Every severity, worst first.
    pub const ALL: [Severity; 9] = [
        Severity::NotStreaming,
        Severity::EnableFailed,
        Severity::StreamMissing,
        Severity::WrongStream,
        Severity::Failing,
        Severity::Stale,
        Severity::Changing,
        Severity::Off,
        Severity::Ok,
    ];

    /// The CSS class that colours it.
    pub fn class(self) -> &'static str {
        match self {
            Severity::NotStreaming => "sev-not-streaming",
            Severity::EnableFailed => "sev-enable-failed",
            Severity::StreamMissing => "sev-stream-missing",
            Severity::WrongStream => "sev-wrong-stream",
            Severity::Failing => "sev-failing",
            Severity::Stale => "sev-stale",
            Severity::Changing => "sev-changing",
            Severity::Off => "sev-off",
            Severity::Ok => "sev-ok",
        }
    }

    /// What the page writes (the colour is never the only signal).
    pub fn label(self) -> &'static str {
        match self {
            Severity::NotStreaming => "NOT STREAMING",
            Severity::EnableFailed => "ENABLE FAILED",
            Severity::StreamMissing => "STREAM MISSING",
            Severity::WrongStream => "WRONG STREAM",
            Severity::Failing => "FAILING",
            Severity::Stale => "STALE",
            Severity::Changing => "CHANGING",
            Severity::Off => "OFF",
            Severity::Ok => "OK",
        }
    }

    /// What it means, for the page's legend.
    pub fn meaning(self) -> &'static str {
        match self {
            Severity::NotStreaming => "expected to stream (expect, expect_streaming), and no ACTIVE or UPDATING destination: none at all, DISABLED, only ENABLE_FAILED, or still ENABLING",
            Severity::EnableFailed => "an ENABLE_FAILED destination and no ACTIVE or UPDATING one: the table's changes reach no stream",
            Severity::StreamMissing => "DescribeStreamSummary finds the stream behind an ACTIVE, ENABLING or UPDATING destination NOT_FOUND or DELETING",
            Severity::WrongStream => "no ACTIVE or UPDATING destination's stream name matches expect.stream",
            Severity::Failing => "the last poll of the table, or the last check of one of its streams, failed: the statuses shown are the last known",
            Severity::Stale => "no successful poll for 3 poll intervals",
            Severity::Changing => "waiting for the first poll or stream check, or a destination or stream is ENABLING, DISABLING, UPDATING or CREATING",
            Severity::Off => "not streaming, and not expected to (or no expectation is configured)",
            Severity::Ok => "streaming: an ACTIVE or UPDATING destination whose stream exists",
        }
    }

    /// Whether it is a problem (a coloured row an SRE should look at).
    pub fn is_problem(self) -> bool {
        self < Severity::Changing
    }
}

/// What the stream check says about one destination's stream.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamCheck {
    /// The destination's status does not have its stream checked (DISABLED,
    /// ENABLE_FAILED, ...).
    NotChecked,
    /// Checked destination, no check recorded yet.
    Pending,
    /// A copy of the stream's state.
    Checked {
        /// The stream's status or `NOT_FOUND`; `None` if no check worked yet.
        status: Option<String>,
        /// The last check failed (the status is the last known).
        failing: bool,
        /// Failed checks by error code.
        errors: BTreeMap<String, u64>,
    },
}

impl StreamCheck {
    fn of(stream: &StreamState) -> StreamCheck {
        StreamCheck::Checked {
            status: stream.status.clone(),
            failing: stream.last_poll_ok == Some(false),
            errors: stream.errors.clone(),
        }
    }

    fn status(&self) -> Option<&str> {
        match self {
            StreamCheck::Checked { status, .. } => status.as_deref(),
            _ => None,
        }
    }

    fn missing(&self) -> bool {
        matches!(self.status(), Some(NOT_FOUND | "DELETING"))
    }

    fn failing(&self) -> bool {
        matches!(self, StreamCheck::Checked { failing: true, .. })
    }

    fn changing(&self) -> bool {
        match self {
            StreamCheck::Pending => true,
            StreamCheck::Checked { status, .. } => !matches!(
                status.as_deref(),
                Some("ACTIVE" | NOT_FOUND | "DELETING") | None
            ),
            StreamCheck::NotChecked => false,
        }
    }
}

/// One destination of a row.
#[derive(Debug, Clone, PartialEq)]
pub struct DestinationRow {
    pub stream_arn: Name,
    pub status: String,
    pub description: Option<String>,
    /// Unix time this process first saw `status`.
    pub since: f64,
    pub check: StreamCheck,
}

/// One table, as copied from the store, and how bad it is.
#[derive(Debug, Clone)]
pub struct Row {
    pub account_id: Name,
    pub region: Name,
    pub table: Name,
    pub severity: Severity,
    /// Why it has that severity, in a few words.
    pub reason: &'static str,
    pub destinations: Vec<DestinationRow>,
    /// `None` before the first successful poll (or a missing table).
    pub destination_count: Option<usize>,
    /// `None` until the first poll finished; then whether the last worked.
    pub last_poll_ok: Option<bool>,
    pub last_success: Option<f64>,
    /// The age of the last successful poll past which the row is stale.
    pub stale_after: f64,
    /// The code of the poll failure in progress.
    pub failing_with: Option<String>,
    /// Failed polls by error code (a counter).
    pub errors: BTreeMap<String, u64>,
    pub expected: Option<bool>,
    pub stream_pattern: Option<Arc<Pattern>>,
    pub stream_match: Option<bool>,
    /// The exported tags, (label name, value).
    pub tags: Option<Vec<(Name, String)>>,
    /// The code of the tag-read failure in progress.
    pub tags_failing_with: Option<String>,
}

impl Row {
    /// Copy what the page shows of one table (under the store's read lock:
    /// copies only, no lookups).
    fn copy(state: &TableState) -> Row {
        Row {
            account_id: state.account_id.clone(),
            region: state.region.clone(),
            table: state.table.clone(),
            severity: Severity::Ok,
            reason: "",
            destinations: state
                .destinations
                .iter()
                .map(|d| DestinationRow {
                    stream_arn: d.stream_arn.clone(),
                    status: d.status.clone(),
                    description: d.description.clone(),
                    since: d.since,
                    check: StreamCheck::NotChecked,
                })
                .collect(),
            destination_count: state.destination_count,
            last_poll_ok: state.last_poll_ok,
            last_success: state.last_success,
            stale_after: STALE_AFTER_INTERVALS * DEFAULT_INTERVAL,
            failing_with: state.failing_with.clone(),
            errors: state.errors.clone(),
            expected: state.expected,
            stream_pattern: state.stream_pattern.clone(),
            stream_match: state.stream_match,
            tags: state.tags.clone(),
            tags_failing_with: state.tags_failing_with.clone(),
        }
    }

    fn working(&self) -> bool {
        (self.destinations.iter()).any(|d| WORKING.contains(&d.status.as_str()))
    }

    /// The worst severity that applies, and why.
    fn classify(&self, now: f64) -> (Severity, &'static str) {
        let working = self.working();
        let has = |status: &str| self.destinations.iter().any(|d| d.status == status);
        if self.expected == Some(true) && !working && self.destination_count.is_some() {
            let why = if self.destinations.is_empty() {
                "expected to stream; no destination at all"
            } else if has("ENABLING") {
                "expected to stream; no destination ACTIVE yet"
            } else if has("ENABLE_FAILED") {
                "expected to stream; enabling failed"
            } else {
                "expected to stream; streaming is switched off"
            };
            return (Severity::NotStreaming, why);
        }
        if !working && has("ENABLE_FAILED") {
            return (
                Severity::EnableFailed,
                "ENABLE_FAILED and no ACTIVE or UPDATING destination",
            );
        }
        if self.destinations.iter().any(|d| d.check.missing()) {
            return (
                Severity::StreamMissing,
                "a destination's stream is NOT_FOUND or DELETING",
            );
        }
        // As DynamoDBKinesisExpectedTableWrongStream: only where the table
        // must stream (expect.stream applies to the target's every table).
        if self.stream_match == Some(false) && self.expected == Some(true) {
            return (
                Severity::WrongStream,
                "no working destination's stream matches expect.stream",
            );
        }
        if self.last_poll_ok == Some(false) {
            return (Severity::Failing, "the last poll failed");
        }
        if self.destinations.iter().any(|d| d.check.failing()) {
            return (Severity::Failing, "the last stream check failed");
        }
        if self
            .last_success
            .is_some_and(|t| now - t > self.stale_after)
        {
            return (Severity::Stale, "no successful poll for 3 poll intervals");
        }
        if self.last_poll_ok.is_none() {
            return (Severity::Changing, "waiting for the first poll");
        }
        let settled = ["ACTIVE", "DISABLED", "ENABLE_FAILED"];
        if let Some(d) = (self.destinations.iter()).find(|d| !settled.contains(&d.status.as_str()))
        {
            return (
                Severity::Changing,
                match d.status.as_str() {
                    "ENABLING" | "DISABLING" | "UPDATING" => "a destination is changing status",
                    _ => "a destination reports a status this exporter does not know",
                },
            );
        }
        if let Some(d) = self.destinations.iter().find(|d| d.check.changing()) {
            return (
                Severity::Changing,
                match d.check {
                    StreamCheck::Pending => "waiting for the first stream check",
                    _ => "a stream is changing status",
                },
            );
        }
        if working {
            let why = if has("ENABLE_FAILED") {
                "streaming; an old ENABLE_FAILED entry is listed too"
            } else {
                "streaming"
            };
            return (Severity::Ok, why);
        }
        let why = match self.expected {
            Some(false) => "not streaming; not expected to",
            _ => "not streaming; no expectation configured",
        };
        (Severity::Off, why)
    }
}

/// Every table's row, sorted worst first, and how many there are of each
/// severity.
pub struct Rows {
    pub rows: Vec<Row>,
    pub counts: BTreeMap<Severity, usize>,
}

/// Build every row in one visit of the store, then classify and sort them
/// with no lock held. `now` is Unix time in seconds.
pub fn collect(store: &Store, now: f64) -> Rows {
    let mut intervals: HashMap<ScopeKey, f64> = HashMap::new();
    store.visit_scopes(|scope| {
        if scope.poll_interval > 0.0 {
            let key = ScopeKey {
                account_id: scope.account_id.clone(),
                region: scope.region.clone(),
            };
            intervals.insert(key, scope.poll_interval);
        }
    });
    let mut streams: HashMap<StreamKey, StreamCheck> = HashMap::new();
    store.visit_streams(|stream| {
        let key = StreamKey {
            account_id: stream.account_id.clone(),
            region: stream.region.clone(),
            stream_arn: stream.stream_arn.clone(),
        };
        streams.insert(key, StreamCheck::of(stream));
    });
    let mut rows: Vec<Row> = Vec::new();
    store.visit(|state| rows.push(Row::copy(state)));
    let mut counts = BTreeMap::new();
    for row in &mut rows {
        let scope = ScopeKey {
            account_id: row.account_id.clone(),
            region: row.region.clone(),
        };
        if let Some(interval) = intervals.get(&scope) {
            row.stale_after = STALE_AFTER_INTERVALS * interval;
        }
        for d in &mut row.destinations {
            if STREAM_CHECKED.contains(&d.status.as_str()) {
                let key = StreamKey {
                    account_id: row.account_id.clone(),
                    region: row.region.clone(),
                    stream_arn: d.stream_arn.clone(),
                };
                d.check = streams.get(&key).cloned().unwrap_or(StreamCheck::Pending);
            }
        }
        (row.severity, row.reason) = row.classify(now);
        *counts.entry(row.severity).or_insert(0) += 1;
    }
    rows.sort_by(|a, b| {
        (a.severity, &a.account_id, &a.region, &a.table).cmp(&(
            b.severity,
            &b.account_id,
            &b.region,
            &b.table,
        ))
    });
    Rows { rows, counts }
}

/// Why a `page` parameter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    /// Not a whole number from 1 up (as given, raw).
    #[error("{0:?} is not a page number")]
    NotANumber(String),
    /// A page past the last one.
    #[error("Page {page} does not exist")]
    OutOfRange { page: usize, pages: usize },
}

/// The page asked for by a query string (`page=N`, counted from 1; 1
/// without one). Other parameters are ignored; the first `page` counts.
pub fn requested_page(query: Option<&str>) -> Result<usize, PageError> {
    let Some(value) = query
        .into_iter()
        .flat_map(|q| q.split('&'))
        .find_map(|pair| pair.strip_prefix("page="))
    else {
        return Ok(1);
    };
    // Digits only: `parse` alone would take a leading `+`.
    let number = (value.bytes().all(|b| b.is_ascii_digit()))
        .then(|| value.parse::<usize>().ok())
        .flatten()
        .filter(|&n| n >= 1);
    number.ok_or_else(|| PageError::NotANumber(value.chars().take(64).collect()))
}

/// What [`answer`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The page asked for.
    Page(String),
    /// A page explaining why the page asked for cannot be shown.
    Refused(PageError, String),
}

/// The links the page's header carries.
pub struct Header<'a> {
    /// Where the metrics are served (`/metrics` by default).
    pub telemetry_path: &'a str,
}

/// The status page for a query string: the rows of the store at `now`, or
/// why the page asked for cannot be shown.
pub fn answer(store: &Store, query: Option<&str>, header: &Header<'_>, now: f64) -> Answer {
    match requested_page(query) {
        Ok(page) => render(&collect(store, now), page, header, now),
        Err(err) => {
            let total = store.readiness().1;
            let pages = page_count(total);
            let text = format!(
                "{err}. Pages are numbered from 1; there {}.",
                count_pages(pages, total)
            );
            Answer::Refused(err, refusal(header, &text, pages))
        }
    }
}

fn page_count(rows: usize) -> usize {
    rows.div_ceil(ROWS_PER_PAGE).max(1)
}

fn count_pages(pages: usize, rows: usize) -> String {
    format!(
        "{} {pages} page{} of {ROWS_PER_PAGE} rows at most ({rows} table{})",
        if pages == 1 { "is" } else { "are" },
        if pages == 1 { "" } else { "s" },
        if rows == 1 { "" } else { "s" },
    )
}

/// Render page `page` (from 1) of `rows`, or refuse a page past the last.
pub fn render(rows: &Rows, page: usize, header: &Header<'_>, now: f64) -> Answer {
    let total = rows.rows.len();
    let pages = page_count(total);
    if page > pages {
        let err = PageError::OutOfRange { page, pages };
        let text = format!("{err}: there {}.", count_pages(pages, total));
        return Answer::Refused(err, refusal(header, &text, pages));
    }
    let start = (page - 1) * ROWS_PER_PAGE;
    let end = (start + ROWS_PER_PAGE).min(total);
    let mut out = String::with_capacity(4096 + (end - start) * 1024);
    // Writing to a String cannot fail.
    let _ = write_page(&mut out, rows, page, pages, start..end, header, now);
    Answer::Page(out)
}

fn refusal(header: &Header<'_>, text: &str, pages: usize) -> String {
    let mut out = String::new();
    let _ = (|| -> fmt::Result {
        write_head(&mut out, header)?;
        write!(
            out,
            "<main>\n<p class=\"refused\" id=\"refused\">{}</p>\n<p><a href=\"?page=1\">First page</a> · <a href=\"?page={pages}\">last page</a></p>\n</main>\n</body>\n</html>\n",
            escape(text)
        )
    })();
    out
}

const STYLE: &str = "
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#1f2328;background:#fff}
h1{font-size:1.5em;margin:0 0 .2em}
h2{font-size:1.2em;margin:1em 0 .4em}
.links{list-style:none;padding:0;margin:.4em 0;display:flex;gap:1.2em}
.meta,.muted,.why,.desc,.for,.arn,.tags{color:#59636e}
.why,.desc,.arn,.tags{font-size:12px}
.arn{overflow-wrap:anywhere}
.account,.region,.age,.st,.for,.check{white-space:nowrap}
.desc{max-width:26em}
table{border-collapse:collapse;width:100%}
th,td{border-bottom:1px solid #d1d9e0;padding:4px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa;position:sticky;top:0}
tbody.row:nth-of-type(even){background:#fafbfc}
.badge{display:inline-block;padding:1px 7px;border-radius:10px;font-weight:600;font-size:12px;white-space:nowrap}
.summary{list-style:none;padding:0;display:flex;flex-wrap:wrap;gap:.5em}
.summary .zero{opacity:.45}
.badge.sev-not-streaming,.badge.sev-enable-failed,.badge.sev-stream-missing{background:#cf222e;color:#fff}
.badge.sev-wrong-stream,.badge.sev-failing,.badge.sev-stale{background:#bc4c00;color:#fff}
.badge.sev-changing{background:#f2cc60;color:#1f2328}
.badge.sev-off{background:#d1d9e0;color:#1f2328}
.badge.sev-ok{background:#1a7f37;color:#fff}
tbody.row>tr>td.status{border-left:6px solid #d1d9e0}
tbody.problem>tr>td.status{border-left-color:#cf222e}
tbody.sev-wrong-stream>tr>td.status,tbody.sev-failing>tr>td.status,tbody.sev-stale>tr>td.status{border-left-color:#bc4c00}
tbody.sev-changing>tr>td.status{border-left-color:#f2cc60}
tbody.sev-ok>tr>td.status{border-left-color:#1a7f37}
.st-active,.sc-ok,.exp-yes{color:#1a7f37;font-weight:600}
.st-enable-failed,.sc-missing,.err{color:#cf222e;font-weight:600}
.st-enabling,.st-disabling,.st-updating,.sc-changing,.sc-pending{color:#9a6700;font-weight:600}
.st-disabled,.sc-none,.exp-no,.exp-unknown{color:#59636e}
.st-unknown{color:#8250df;font-weight:600}
.sc-failing{color:#bc4c00;font-weight:600}
.pager{margin:.6em 0;display:flex;gap:1em;align-items:baseline}
.refused{font-size:1.1em;color:#cf222e}
code{font:12px ui-monospace,monospace}
details{margin:.4em 0 .8em}
dt{float:left;clear:left;width:10em}
dd{margin:0 0 .3em 11em}
";

fn write_head(out: &mut String, header: &Header<'_>) -> fmt::Result {
    write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>DynamoDB Kinesis Exporter</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<header>\n<h1>DynamoDB Kinesis Exporter</h1>\n<p class=\"meta\">Version {version} (revision {revision}). Exports the status of DynamoDB Kinesis streaming destinations, polled in the background.</p>\n<ul class=\"links\">\n<li><a href=\"{path}\">Metrics</a></li>\n<li><a href=\"/healthz\">Health</a></li>\n<li><a href=\"/readyz\">Readiness</a></li>\n</ul>\n</header>\n",
        version = escape(crate::VERSION),
        revision = escape(crate::REVISION),
        path = escape(header.telemetry_path),
    )
}

fn write_page(
    out: &mut String,
    rows: &Rows,
    page: usize,
    pages: usize,
    range: std::ops::Range<usize>,
    header: &Header<'_>,
    now: f64,
) -> fmt::Result {
    write_head(out, header)?;
    let total = rows.rows.len();
    let problems: usize = (rows.counts.iter())
        .filter(|(s, _)| s.is_problem())
        .map(|(_, n)| n)
        .sum();
    write!(
        out,
        "<main>\n<h2>Tables</h2>\n<p class=\"meta\" id=\"overview\">{total} table{} polled, {problems} with a problem. Problems come first, then account, region and table. Rendered from the exporter's state, the same as the metrics; this page calls no AWS API.</p>\n<ul class=\"summary\" id=\"summary\">\n",
        if total == 1 { "" } else { "s" },
    )?;
    for severity in Severity::ALL {
        let n = rows.counts.get(&severity).copied().unwrap_or(0);
        writeln!(
            out,
            "<li class=\"badge {}{}\">{} <span class=\"count\">{n}</span></li>",
            severity.class(),
            if n == 0 { " zero" } else { "" },
            severity.label(),
        )?;
    }
    out.push_str(
        "</ul>\n<details>\n<summary>What the statuses mean, worst first</summary>\n<dl>\n",
    );
    for severity in Severity::ALL {
        writeln!(
            out,
            "<dt><span class=\"badge {}\">{}</span></dt><dd>{}</dd>",
            severity.class(),
            severity.label(),
            escape(severity.meaning()),
        )?;
    }
    out.push_str("</dl>\n</details>\n");
    write_pager(out, page, pages, &range, total)?;
    out.push_str("<table id=\"tables\">\n<thead><tr><th>Status</th><th>Account</th><th>Region</th><th>Table</th><th>Destination</th><th>Stream</th><th>Stream check</th><th>Expected</th><th>Last successful poll</th><th>Last error</th></tr></thead>\n");
    for row in &rows.rows[range.clone()] {
        write_row(out, row, now)?;
    }
    out.push_str("</table>\n");
    if total == 0 {
        out.push_str("<p class=\"muted\" id=\"empty\">No table is polled yet.</p>\n");
    }
    write_pager(out, page, pages, &range, total)?;
    out.push_str("</main>\n</body>\n</html>\n");
    Ok(())
}

fn write_pager(
    out: &mut String,
    page: usize,
    pages: usize,
    range: &std::ops::Range<usize>,
    total: usize,
) -> fmt::Result {
    out.push_str("<nav class=\"pager\">");
    if page > 1 {
        write!(
            out,
            "<a rel=\"prev\" href=\"?page={}\">← previous</a>",
            page - 1
        )?;
    }
    if total == 0 {
        out.push_str("<span class=\"range\">rows 0-0 of 0</span>");
    } else {
        write!(
            out,
            "<span class=\"range\">rows {}-{} of {total}</span>",
            range.start + 1,
            range.end
        )?;
    }
    write!(out, "<span class=\"muted\">page {page} of {pages}</span>")?;
    if page < pages {
        write!(
            out,
            "<a rel=\"next\" href=\"?page={}\">next →</a>",
            page + 1
        )?;
    }
    out.push_str("</nav>\n");
    Ok(())
}

/// The CSS class of a destination status; unknown ones share one, so no
/// AWS string ever lands in a class attribute.
fn status_class(status: &str) -> &'static str {
    match status {
        "ACTIVE" => "st-active",
        "UPDATING" => "st-updating",
        "ENABLING" => "st-enabling",
        "DISABLING" => "st-disabling",
        "DISABLED" => "st-disabled",
        "ENABLE_FAILED" => "st-enable-failed",
        _ => "st-unknown",
    }
}

/// A short age: `42s`, `3m 05s`, `2h 07m`, `3d 04h`.
pub fn age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {:02}s", s / 60, s % 60),
        3600..86400 => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d {:02}h", s / 86400, s % 86400 / 3600),
    }
}

fn write_codes(out: &mut String, codes: &BTreeMap<String, u64>) -> fmt::Result {
    for (i, (code, n)) in codes.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        write!(out, "{sep}{} ×{n}", escape(code))?;
    }
    Ok(())
}

fn write_row(out: &mut String, row: &Row, now: f64) -> fmt::Result {
    let span = row.destinations.len().max(1);
    let severity = row.severity;
    write!(
        out,
        "<tbody class=\"row {}{}\">\n<tr>",
        severity.class(),
        if severity.is_problem() {
            " problem"
        } else {
            ""
        }
    )?;
    write!(
        out,
        "<td class=\"status\" rowspan=\"{span}\"><span class=\"badge {}\">{}</span><div class=\"why\">{}</div></td>",
        severity.class(),
        severity.label(),
        escape(row.reason),
    )?;
    write!(
        out,
        "<td class=\"account\" rowspan=\"{span}\">{}</td><td class=\"region\" rowspan=\"{span}\">{}</td><td class=\"table\" rowspan=\"{span}\"><span class=\"name\">{}</span>",
        escape(&row.account_id),
        escape(&row.region),
        escape(&row.table),
    )?;
    if let Some(tags) = row.tags.as_ref().filter(|t| !t.is_empty()) {
        out.push_str("<div class=\"tags\">");
        for (i, (label, value)) in tags.iter().enumerate() {
            let key = label.strip_prefix("tag_").unwrap_or(label);
            let sep = if i == 0 { "" } else { " " };
            write!(
                out,
                "{sep}<span class=\"tag\">{}={}</span>",
                escape(key),
                escape(value)
            )?;
        }
        out.push_str("</div>");
    }
    out.push_str("</td>");
    match row.destinations.first() {
        Some(first) => write_destination(out, first, now)?,
        None => {
            let text = match (row.destination_count, row.last_poll_ok) {
                (Some(_), _) => "no destination",
                (None, None) => "not polled yet",
                (None, Some(_)) => "unknown: no poll has worked yet",
            };
            write!(
                out,
                "<td class=\"dst none muted\" colspan=\"3\">{text}</td>"
            )?;
        }
    }
    // Expected.
    let (class, text) = match row.expected {
        Some(true) => ("exp-yes", "yes"),
        Some(false) => ("exp-no", "no"),
        None => ("exp-unknown", "unknown"),
    };
    write!(
        out,
        "<td class=\"expected {class}\" rowspan=\"{span}\">{text}"
    )?;
    if let Some(pattern) = &row.stream_pattern {
        write!(
            out,
            "<div class=\"why\">stream name matches <code>{}</code>: {}</div>",
            escape(pattern.as_str()),
            match row.stream_match {
                Some(true) => "yes",
                Some(false) => "no",
                None => "no working destination",
            }
        )?;
    }
    out.push_str("</td>");
    // Last successful poll.
    match row.last_success {
        Some(at) => write!(
            out,
            "<td class=\"age{}\" rowspan=\"{span}\">{} ago</td>",
            if severity == Severity::Stale {
                " sc-failing"
            } else {
                ""
            },
            age(now - at)
        )?,
        None => write!(out, "<td class=\"age muted\" rowspan=\"{span}\">never</td>")?,
    }
    // Last error.
    write!(out, "<td class=\"error\" rowspan=\"{span}\">")?;
    match &row.failing_with {
        Some(code) => write!(out, "<span class=\"err code\">{}</span>", escape(code))?,
        None if row.errors.is_empty() => out.push_str("<span class=\"muted\">none</span>"),
        None => {
            out.push_str("<span class=\"muted\">none now</span><div class=\"why\">earlier: ");
            write_codes(out, &row.errors)?;
            out.push_str("</div>");
        }
    }
    if let Some(code) = &row.tags_failing_with {
        write!(
            out,
            "<div class=\"why\">tag read failing: <span class=\"code\">{}</span></div>",
            escape(code)
        )?;
    }
    out.push_str("</td></tr>\n");
    for d in row.destinations.iter().skip(1) {
        out.push_str("<tr>");
        write_destination(out, d, now)?;
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n");
    Ok(())
}

/// A destination's three cells: its status, its stream, the stream check.
fn write_destination(out: &mut String, d: &DestinationRow, now: f64) -> fmt::Result {
    write!(
        out,
        "<td class=\"dst\"><span class=\"st {}\">{}</span> <span class=\"for\">for {}</span>",
        status_class(&d.status),
        escape(&d.status),
        age(now - d.since),
    )?;
    if let Some(description) = &d.description {
        write!(out, "<div class=\"desc\">{}</div>", escape(description))?;
    }
    out.push_str("</td>");
    let name = split_stream_arn(&d.stream_arn).1;
    if name.is_empty() {
        write!(
            out,
            "<td class=\"stream\"><code class=\"arn\">{}</code></td>",
            escape(&d.stream_arn)
        )?;
    } else {
        write!(
            out,
            "<td class=\"stream\"><b class=\"stream-name\">{}</b><div class=\"arn\">{}</div></td>",
            escape(name),
            escape(&d.stream_arn)
        )?;
    }
    match &d.check {
        StreamCheck::NotChecked => {
            out.push_str("<td class=\"check sc-none\">not checked</td>");
        }
        StreamCheck::Pending => {
            out.push_str("<td class=\"check sc-pending\">pending</td>");
        }
        StreamCheck::Checked {
            status,
            failing,
            errors,
        } => {
            let class = if d.check.missing() {
                "sc-missing"
            } else if *failing && status.is_none() {
                "sc-failing"
            } else if d.check.changing() {
                "sc-changing"
            } else {
                "sc-ok"
            };
            let shown = status.as_deref().unwrap_or("unknown");
            write!(
                out,
                "<td class=\"check {class}\"><span class=\"sc\">{}</span>",
                escape(shown)
            )?;
            if *failing {
                out.push_str("<div class=\"err why\">check failing: ");
                write_codes(out, errors)?;
                out.push_str("</div>");
            }
            out.push_str("</td>");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::{Destination, PollError, StreamSummary};
    use crate::state::TableKey;
    use proptest::prelude::*;
    use scraper::{ElementRef, Html, Selector};

    const ACCOUNT: &str = "123456789012";
    const NOW: f64 = 10_000.0;

    fn key(table: &str) -> TableKey {
        TableKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            table: table.into(),
        }
    }

    fn arn(name: &str) -> String {
        format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/{name}")
    }

    fn dest(stream: &str, status: &str) -> Destination {
        Destination {
            stream_arn: arn(stream),
            status: status.into(),
            status_description: None,
            precision: None,
        }
    }

    fn stream_key(stream: &str) -> StreamKey {
        StreamKey {
            account_id: ACCOUNT.into(),
            region: "us-east-1".into(),
            stream_arn: arn(stream).into(),
        }
    }

    fn summary(status: &str) -> StreamSummary {
        StreamSummary {
            name: "s".into(),
            status: status.into(),
            open_shards: 1,
            mode: "ON_DEMAND".into(),
            encryption: "NONE".into(),
            retention_hours: 24,
        }
    }

    fn service_error(code: &str) -> PollError {
        PollError::Service {
            code: code.into(),
            message: "no".into(),
        }
    }

    fn header() -> Header<'static> {
        Header {
            telemetry_path: "/metrics",
        }
    }

    /// One table of every severity (and a few ways to get some), named
    /// after what they should show.
    fn store_of_every_case() -> Store {
        let names = [
            "a-fine",
            "b-failed-beside-active",
            "c-off-disabled",
            "d-enabling",
            "e-pending",
            "f-stale",
            "g-throttled",
            "h-stream-denied",
            "i-wrong-stream",
            "j-stream-gone",
            "k-failed-only",
            "l-expected-disabled",
            "m-expected-none",
            "n-expected-failed-only",
            "o-other-stream-not-expected",
        ];
        let store = Store::new(names.map(key));
        store.update_scope(&key("x").scope(), |s| s.poll_interval = 60.0);
        let ok = |table: &str, destinations: Vec<Destination>| {
            store.record(&key(table), &Ok(destinations), NOW - 5.0);
        };
        ok("a-fine", vec![dest("fine", "ACTIVE")]);
        store.record_stream(&stream_key("fine"), &Ok(summary("ACTIVE")), NOW);
        ok(
            "b-failed-beside-active",
            vec![dest("old", "ENABLE_FAILED"), dest("new", "ACTIVE")],
        );
        store.record_stream(&stream_key("new"), &Ok(summary("ACTIVE")), NOW);
        ok("c-off-disabled", vec![dest("off", "DISABLED")]);
        store.set_expectation(&key("c-off-disabled"), Some(false), None);
        ok("d-enabling", vec![dest("coming", "ENABLING")]);
        store.record_stream(&stream_key("coming"), &Ok(summary("ACTIVE")), NOW);
        store.record(&key("f-stale"), &Ok(vec![]), NOW - 181.0);
        ok("g-throttled", vec![]);
        store.record(
            &key("g-throttled"),
            &Err(service_error("ThrottlingException")),
            NOW,
        );
        ok("h-stream-denied", vec![dest("denied", "ACTIVE")]);
        store.record_stream(
            &stream_key("denied"),
            &Err(service_error("AccessDeniedException")),
            NOW,
        );
        let pattern = Some(Arc::new(Pattern::new("^cdc-").unwrap()));
        store.set_expectation(&key("i-wrong-stream"), Some(true), pattern);
        ok("i-wrong-stream", vec![dest("audit", "ACTIVE")]);
        store.record_stream(&stream_key("audit"), &Ok(summary("ACTIVE")), NOW);
        // A target's expect.stream without a need to stream: no problem.
        let pattern = Some(Arc::new(Pattern::new("^cdc-").unwrap()));
        store.set_expectation(&key("o-other-stream-not-expected"), Some(false), pattern);
        ok("o-other-stream-not-expected", vec![dest("audit", "ACTIVE")]);
        ok("j-stream-gone", vec![dest("gone", "ACTIVE")]);
        store.record_stream(
            &stream_key("gone"),
            &Err(PollError::NotFound("gone".into())),
            NOW,
        );
        ok("k-failed-only", vec![dest("broken", "ENABLE_FAILED")]);
        store.set_expectation(&key("l-expected-disabled"), Some(true), None);
        ok("l-expected-disabled", vec![dest("off2", "DISABLED")]);
        store.set_expectation(&key("m-expected-none"), Some(true), None);
        ok("m-expected-none", vec![]);
        store.set_expectation(&key("n-expected-failed-only"), Some(true), None);
        ok("n-expected-failed-only", vec![dest("x", "ENABLE_FAILED")]);
        store
    }

    fn severities(rows: &Rows) -> Vec<(&str, Severity)> {
        (rows.rows.iter())
            .map(|r| (&*r.table, r.severity))
            .collect()
    }

    #[test]
    fn every_case_gets_its_severity_and_problems_come_first() {
        let rows = collect(&store_of_every_case(), NOW);
        use Severity::*;
        assert_eq!(
            severities(&rows),
            [
                ("l-expected-disabled", NotStreaming),
                ("m-expected-none", NotStreaming),
                ("n-expected-failed-only", NotStreaming),
                ("k-failed-only", EnableFailed),
                ("j-stream-gone", StreamMissing),
                ("i-wrong-stream", WrongStream),
                ("g-throttled", Failing),
                ("h-stream-denied", Failing),
                ("f-stale", Stale),
                ("d-enabling", Changing),
                ("e-pending", Changing),
                ("c-off-disabled", Off),
                ("a-fine", Ok),
                ("b-failed-beside-active", Ok),
                ("o-other-stream-not-expected", Ok),
            ]
        );
        assert_eq!(rows.counts[&NotStreaming], 3);
        assert_eq!(rows.counts[&Changing], 2);
        assert_eq!(rows.counts[&Off], 1);
        let reason = |table: &str| {
            (rows.rows.iter())
                .find(|r| &*r.table == table)
                .unwrap()
                .reason
        };
        assert_eq!(
            reason("b-failed-beside-active"),
            "streaming; an old ENABLE_FAILED entry is listed too"
        );
        assert_eq!(
            reason("m-expected-none"),
            "expected to stream; no destination at all"
        );
        assert_eq!(reason("e-pending"), "waiting for the first poll");
    }

    #[test]
    fn stale_follows_the_scopes_poll_interval() {
        let store = Store::new([key("t")]);
        store.record(&key("t"), &Ok(vec![]), NOW - 100.0);
        // No scope known: the default interval (60 s), stale past 180 s.
        assert_eq!(collect(&store, NOW).rows[0].severity, Severity::Off);
        store.update_scope(&key("t").scope(), |s| s.poll_interval = 30.0);
        assert_eq!(collect(&store, NOW).rows[0].severity, Severity::Stale);
        store.update_scope(&key("t").scope(), |s| s.poll_interval = 40.0);
        assert_eq!(collect(&store, NOW).rows[0].severity, Severity::Off);
    }

    #[test]
    fn a_stream_check_in_progress_or_changing_is_a_transition() {
        let store = Store::new([key("t")]);
        store.record(&key("t"), &Ok(vec![dest("s", "ACTIVE")]), NOW);
        let row = |store: &Store| collect(store, NOW).rows[0].clone();
        assert_eq!(row(&store).severity, Severity::Changing);
        assert_eq!(row(&store).destinations[0].check, StreamCheck::Pending);
        store.record_stream(&stream_key("s"), &Ok(summary("UPDATING")), NOW);
        assert_eq!(row(&store).reason, "a stream is changing status");
        store.record_stream(&stream_key("s"), &Ok(summary("DELETING")), NOW);
        assert_eq!(row(&store).severity, Severity::StreamMissing);
        store.record_stream(&stream_key("s"), &Ok(summary("ACTIVE")), NOW);
        assert_eq!(row(&store).severity, Severity::Ok);
        // A DISABLED destination's stream is not looked up.
        store.record(&key("t"), &Ok(vec![dest("s", "DISABLED")]), NOW);
        assert_eq!(row(&store).destinations[0].check, StreamCheck::NotChecked);
    }

    #[test]
    fn escape_covers_the_five_characters() {
        assert_eq!(
            escape("<a href=\"x\" title='y'>&amp;</a>").to_string(),
            "&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;amp;&lt;/a&gt;"
        );
        assert_eq!(escape("plain ünïcode").to_string(), "plain ünïcode");
        assert_eq!(escape("").to_string(), "");
    }

    proptest! {
        #[test]
        fn escaped_text_has_no_markup_and_decodes_back(text in any::<String>()) {
            let escaped = escape(&text).to_string();
            prop_assert!(!escaped.contains(['<', '>', '"', '\'']));
            let back = escaped
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&#39;", "'")
                .replace("&amp;", "&");
            prop_assert_eq!(back, text);
        }

        #[test]
        fn any_query_gets_a_page_or_a_reason(query in ".{0,40}") {
            let store = Store::new([key("t")]);
            match answer(&store, Some(&query), &header(), NOW) {
                Answer::Page(html) | Answer::Refused(_, html) => {
                    prop_assert!(html.ends_with("</html>\n"));
                    prop_assert_eq!(Html::parse_document(&html).select(&sel("script")).count(), 0);
                }
            }
        }
    }

    fn sel(css: &str) -> Selector {
        Selector::parse(css).unwrap()
    }

    fn text(element: ElementRef<'_>) -> String {
        element.text().collect::<String>().trim().to_string()
    }

    fn page_html(store: &Store, query: Option<&str>) -> Html {
        match answer(store, query, &header(), NOW) {
            Answer::Page(html) => Html::parse_document(&html),
            Answer::Refused(err, _) => panic!("{err}"),
        }
    }

    /// Per table row on the page: (badge text, badge class, table name).
    fn badges(html: &Html) -> Vec<(String, String, String)> {
        html.select(&sel("#tables tbody.row"))
            .map(|row| {
                let badge = row.select(&sel("td.status .badge")).next().unwrap();
                let class = badge.value().classes().find(|c| c.starts_with("sev-"));
                let table = row.select(&sel("td.table .name")).next().unwrap();
                (text(badge), class.unwrap().to_string(), text(table))
            })
            .collect()
    }

    #[test]
    fn the_page_lists_rows_in_order_with_coloured_written_statuses() {
        let html = page_html(&store_of_every_case(), None);
        let rows = badges(&html);
        let want = [
            ("NOT STREAMING", "sev-not-streaming", "l-expected-disabled"),
            ("NOT STREAMING", "sev-not-streaming", "m-expected-none"),
            (
                "NOT STREAMING",
                "sev-not-streaming",
                "n-expected-failed-only",
            ),
            ("ENABLE FAILED", "sev-enable-failed", "k-failed-only"),
            ("STREAM MISSING", "sev-stream-missing", "j-stream-gone"),
            ("WRONG STREAM", "sev-wrong-stream", "i-wrong-stream"),
            ("FAILING", "sev-failing", "g-throttled"),
            ("FAILING", "sev-failing", "h-stream-denied"),
            ("STALE", "sev-stale", "f-stale"),
            ("CHANGING", "sev-changing", "d-enabling"),
            ("CHANGING", "sev-changing", "e-pending"),
            ("OFF", "sev-off", "c-off-disabled"),
            ("OK", "sev-ok", "a-fine"),
            ("OK", "sev-ok", "b-failed-beside-active"),
            ("OK", "sev-ok", "o-other-stream-not-expected"),
        ];
        let want: Vec<(String, String, String)> = want
            .iter()
            .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
            .collect();
        assert_eq!(rows, want);
        // Every severity's badge has a background colour in the inline
        // style; problem rows are marked for their red or orange border.
        let style = text(html.select(&sel("head style")).next().unwrap());
        for severity in Severity::ALL {
            let selector = format!(".badge.{}", severity.class());
            let rule = style.lines().find(|line| {
                line.split('{')
                    .next()
                    .unwrap()
                    .split(',')
                    .any(|s| s == selector)
            });
            assert!(
                rule.is_some_and(|line| line.contains("{background:#")),
                "{severity:?}"
            );
        }
        assert_eq!(html.select(&sel("tbody.row.problem")).count(), 9);
        // The cells of one row with two destinations: one <tr> each, the
        // table's cells spanning both.
        let row = html
            .select(&sel("tbody.row"))
            .find(|r| r.html().contains("b-failed-beside-active"))
            .unwrap();
        let trs: Vec<ElementRef> = row.select(&sel("tr")).collect();
        assert_eq!(trs.len(), 2);
        let first: Vec<String> = trs[0].select(&sel("td")).map(text).collect();
        assert_eq!(
            first,
            [
                "OKstreaming; an old ENABLE_FAILED entry is listed too",
                ACCOUNT,
                "us-east-1",
                "b-failed-beside-active",
                "ACTIVE for 5s",
                &format!("new{}", arn("new")),
                "ACTIVE",
                "unknown",
                "5s ago",
                "none",
            ]
        );
        assert_eq!(
            trs[0].select(&sel("td[rowspan=\"2\"]")).count(),
            7,
            "status, account, region, table, expected, age, error"
        );
        let second: Vec<String> = trs[1].select(&sel("td")).map(text).collect();
        assert_eq!(
            second,
            [
                "ENABLE_FAILED for 5s",
                &format!("old{}", arn("old")),
                "not checked"
            ]
        );
        let classes = |tr: ElementRef, css: &str| {
            let cell = tr.select(&sel(css)).next().unwrap();
            cell.value()
                .classes()
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(classes(trs[0], "td.dst .st"), ["st", "st-active"]);
        assert_eq!(classes(trs[1], "td.dst .st"), ["st", "st-enable-failed"]);
        // The stream check's answers, and the errors.
        let cell = |table: &str, css: &str| {
            let row = html
                .select(&sel("tbody.row"))
                .find(|r| text(r.select(&sel(".name")).next().unwrap()) == table)
                .unwrap();
            let cell = row.select(&sel(css)).next().unwrap();
            let class = cell
                .value()
                .classes()
                .map(str::to_string)
                .collect::<Vec<_>>();
            (text(cell), class.join(" "))
        };
        assert_eq!(
            cell("j-stream-gone", "td.check"),
            ("NOT_FOUND".into(), "check sc-missing".into())
        );
        assert_eq!(
            cell("h-stream-denied", "td.check"),
            (
                "unknowncheck failing: AccessDeniedException ×1".into(),
                "check sc-failing".into()
            )
        );
        assert_eq!(
            cell("g-throttled", "td.error"),
            ("ThrottlingException".into(), "error".into())
        );
        assert_eq!(cell("l-expected-disabled", "td.expected").0, "yes");
        assert_eq!(cell("c-off-disabled", "td.expected").0, "no");
        assert_eq!(
            cell("i-wrong-stream", "td.expected").0,
            "yesstream name matches ^cdc-: no"
        );
        assert_eq!(cell("f-stale", "td.age").0, "3m 01s ago");
        assert_eq!(cell("e-pending", "td.age").0, "never");
        assert_eq!(cell("e-pending", "td.dst").0, "not polled yet");
        assert_eq!(cell("m-expected-none", "td.dst").0, "no destination");
        // The summary counts every severity.
        let summary: Vec<String> = html.select(&sel("#summary li")).map(text).collect();
        assert_eq!(
            summary,
            [
                "NOT STREAMING 3",
                "ENABLE FAILED 1",
                "STREAM MISSING 1",
                "WRONG STREAM 1",
                "FAILING 2",
                "STALE 1",
                "CHANGING 2",
                "OFF 1",
                "OK 3"
            ]
        );
        let overview = text(html.select(&sel("#overview")).next().unwrap());
        assert!(
            overview.starts_with("15 tables polled, 9 with a problem."),
            "{overview}"
        );
        // The header keeps its links and the version.
        let links: Vec<String> = (html.select(&sel("header .links a")))
            .map(|a| a.value().attr("href").unwrap().to_string())
            .collect();
        assert_eq!(links, ["/metrics", "/healthz", "/readyz"]);
        let meta = text(html.select(&sel("header .meta")).next().unwrap());
        assert!(meta.contains(crate::VERSION), "{meta}");
    }

    #[test]
    fn every_aws_string_is_escaped() {
        let evil = "<script>alert('x')</script>&\"";
        let table = format!("t{evil}");
        let key = key(&table);
        let store = Store::new([key.clone()]);
        store.update_scope(&key.scope(), |s| s.poll_interval = 60.0);
        let stream_arn = format!("arn:aws:kinesis:us-east-1:{ACCOUNT}:stream/s{evil}");
        store.record(
            &key,
            &Ok(vec![Destination {
                stream_arn: stream_arn.clone(),
                status: format!("WEIRD{evil}"),
                status_description: Some(format!("d{evil}")),
                precision: None,
            }]),
            NOW,
        );
        store.record(&key, &Err(service_error(evil)), NOW);
        store.set_exports_tags(&key, true);
        store.record_tags(&key, Ok(vec![("tag_team".into(), format!("v{evil}"))]), NOW);
        let pattern = Arc::new(Pattern::new("^<b>\"'&").unwrap());
        store.set_expectation(&key, Some(true), Some(pattern));
        let Answer::Page(raw) = answer(&store, None, &header(), NOW) else {
            panic!("no page");
        };
        assert!(!raw.contains("<script"), "{raw}");
        assert!(!raw.contains("<b>\""), "{raw}");
        let html = Html::parse_document(&raw);
        assert_eq!(html.select(&sel("script")).count(), 0);
        let one = |css: &str| text(html.select(&sel(css)).next().unwrap());
        assert_eq!(one("td.table .name"), table);
        assert_eq!(one("td.table .tags"), format!("team=v{evil}"));
        assert_eq!(one("td.dst .st"), format!("WEIRD{evil}"));
        assert_eq!(one("td.dst .desc"), format!("d{evil}"));
        assert_eq!(one("td.stream .stream-name"), format!("s{evil}"));
        assert_eq!(one("td.stream .arn"), stream_arn);
        assert_eq!(one("td.expected code"), "^<b>\"'&");
        // An unknown code is exported as `other`; the code shown is the
        // one the metrics carry.
        assert_eq!(one("td.error"), "other");
        // An unknown status never reaches a class attribute.
        let dst = html.select(&sel("td.dst .st")).next().unwrap();
        assert_eq!(dst.value().attr("class"), Some("st st-unknown"));
        // The telemetry path is configuration, escaped too.
        let header = Header {
            telemetry_path: "/m\"><script>",
        };
        let Answer::Page(raw) = answer(&store, None, &header, NOW) else {
            panic!("no page");
        };
        let html = Html::parse_document(&raw);
        assert_eq!(html.select(&sel("script")).count(), 0);
        let href = html.select(&sel("header .links a")).next().unwrap();
        assert_eq!(href.value().attr("href"), Some("/m\"><script>"));
    }

    fn many(n: usize) -> Store {
        let store = Store::new((0..n).map(|i| key(&format!("t{i:05}"))));
        for i in (0..n).step_by(7) {
            store.record(&key(&format!("t{i:05}")), &Ok(vec![]), NOW);
        }
        store
    }

    fn range_and_links(html: &Html) -> (String, Vec<(String, String)>) {
        let pager = html.select(&sel("nav.pager")).next().unwrap();
        let range = text(pager.select(&sel(".range")).next().unwrap());
        let links = (pager.select(&sel("a")))
            .map(|a| {
                let rel = a.value().attr("rel").unwrap().to_string();
                (rel, a.value().attr("href").unwrap().to_string())
            })
            .collect();
        (range, links)
    }

    #[test]
    fn past_500_rows_the_page_is_split() {
        let store = many(1234);
        let first = page_html(&store, None);
        assert_eq!(first.select(&sel("tbody.row")).count(), 500);
        assert_eq!(
            range_and_links(&first),
            (
                "rows 1-500 of 1234".to_string(),
                vec![("next".to_string(), "?page=2".to_string())]
            )
        );
        // Changing first (never polled), then off (polled, no destination),
        // each by name.
        let names: Vec<String> = badges(&first).into_iter().map(|b| b.2).collect();
        assert_eq!(names[0], "t00001");
        assert_eq!(names[1], "t00002");
        let second = page_html(&store, Some("page=2"));
        assert_eq!(
            range_and_links(&second),
            (
                "rows 501-1000 of 1234".to_string(),
                vec![
                    ("prev".to_string(), "?page=1".to_string()),
                    ("next".to_string(), "?page=3".to_string())
                ]
            )
        );
        let last = page_html(&store, Some("x=1&page=3&page=1"));
        assert_eq!(last.select(&sel("tbody.row")).count(), 234);
        assert_eq!(
            range_and_links(&last),
            (
                "rows 1001-1234 of 1234".to_string(),
                vec![("prev".to_string(), "?page=2".to_string())]
            )
        );
        let names: Vec<String> = badges(&last).into_iter().map(|b| b.2).collect();
        assert_eq!(names.last().unwrap(), "t01232", "the polled ones last");
        // Every table is on exactly one page.
        let mut all: Vec<String> = [&first, &second, &last]
            .iter()
            .flat_map(|h| badges(h).into_iter().map(|b| b.2))
            .collect();
        all.sort();
        all.dedup();
        assert_eq!(all.len(), 1234);
    }

    #[test]
    fn bad_and_missing_pages_get_a_clear_answer() {
        let store = many(1234);
        for (query, want) in [
            ("page=4", "Page 4 does not exist: there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=abc", "\"abc\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=0", "\"0\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=-1", "\"-1\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=", "\"\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=99999999999999999999999", "\"99999999999999999999999\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
            ("page=<script>", "\"<script>\" is not a page number. Pages are numbered from 1; there are 3 pages of 500 rows at most (1234 tables)."),
        ] {
            let Answer::Refused(_, raw) = answer(&store, Some(query), &header(), NOW) else {
                panic!("{query} was answered");
            };
            let html = Html::parse_document(&raw);
            assert_eq!(html.select(&sel("script")).count(), 0, "{query}");
            assert_eq!(text(html.select(&sel("#refused")).next().unwrap()), want);
            let links: Vec<&str> = (html.select(&sel("main a")))
                .map(|a| a.value().attr("href").unwrap())
                .collect();
            assert_eq!(links, ["?page=1", "?page=3"], "{query}");
        }
        assert_eq!(
            requested_page(Some("page=4")),
            Result::<usize, PageError>::Ok(4)
        );
        assert_eq!(requested_page(None), Result::<usize, PageError>::Ok(1));
        // No table at all: one empty page, and no second.
        let empty = Store::new([]);
        let html = page_html(&empty, Some("page=1"));
        assert_eq!(range_and_links(&html).0, "rows 0-0 of 0");
        assert_eq!(
            text(html.select(&sel("#empty")).next().unwrap()),
            "No table is polled yet."
        );
        assert!(matches!(
            answer(&empty, Some("page=2"), &header(), NOW),
            Answer::Refused(PageError::OutOfRange { page: 2, pages: 1 }, _)
        ));
    }

    #[test]
    fn ages_read_as_people_say_them() {
        let cases = [
            (-3.0, "0s"),
            (f64::NAN, "0s"),
            (59.9, "59s"),
            (60.0, "1m 00s"),
            (3599.0, "59m 59s"),
            (3600.0, "1h 00m"),
            (86_399.0, "23h 59m"),
            (90_000.0, "1d 01h"),
        ];
        for (seconds, want) in cases {
            assert_eq!(age(seconds), want, "{seconds}");
        }
    }
}
