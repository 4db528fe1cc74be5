//! The exporter's HTTP/1.1 accept loops: accept on every bound listener
//! (plain or TLS), hand each request to a handler, and on shutdown stop
//! accepting and let in-flight requests finish within a grace period.
//!
//! Slow and hostile clients are bounded by [`Limits`]:
//! - A fixed number of connection slots. When every slot is taken, a new
//!   connection takes the slot of the connection that has been idle
//!   longest (no request in progress: still sending its request head,
//!   in its TLS handshake, or kept alive between requests), which is
//!   closed. Only connections with a request in progress keep their slot.
//! - Beyond that, an overflow pool of its own, kept for the health probes:
//!   it answers only the probe paths (and `503` with `Connection: close` to
//!   anything else), with the same eviction, so no number of slow clients
//!   of any kind can keep a probe from being answered. Beyond that too, an
//!   immediate close instead of the kernel's backlog.
//! - Request heads have a size limit and a deadline (which is also the
//!   keep-alive idle timeout). A response write that makes no progress for
//!   the write timeout drops the connection, and so does a response not
//!   finished within the response timeout from its request (a client that
//!   reads a trickle), handler time included.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, Sleep};
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// Response body of every handler in this crate: a list of shared chunks,
/// sent in order without being copied into one buffer (a metrics page is
/// the shared snapshot's blocks plus a small per-request tail).
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining: u64,
    /// Marks the connection idle once the body is sent (or dropped).
    done: Option<Done>,
}

impl Body {
    /// A body of one chunk.
    pub fn new(bytes: Bytes) -> Self {
        Body::from_chunks([bytes])
    }

    /// A body made of `chunks`, in order.
    pub fn from_chunks(chunks: impl IntoIterator<Item = Bytes>) -> Self {
        let chunks: VecDeque<Bytes> = chunks.into_iter().filter(|c| !c.is_empty()).collect();
        let remaining = chunks.iter().map(|c| c.len() as u64).sum();
        Body {
            chunks,
            remaining,
            done: None,
        }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.chunks.pop_front() {
            Some(chunk) => {
                self.remaining -= chunk.len() as u64;
                Poll::Ready(Some(Ok(Frame::data(chunk))))
            }
            None => {
                self.done = None;
                Poll::Ready(None)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

/// What a handler may return instead of a response: the connection is then
/// closed without an answer.
pub type AbortConnection = Box<dyn std::error::Error + Send + Sync>;

/// Limits that keep slow, idle and hostile clients from exhausting the
/// server. Every field has a flag in the binary.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once (`--web.max-connections`).
    pub max_connections: usize,
    /// Connections accepted beyond `max_connections` into the overflow pool
    /// (`--web.max-overflow-connections`): they may only ask for
    /// `overflow_paths` and get `503` with `Connection: close` for anything
    /// else.
    pub max_overflow_connections: usize,
    /// Paths the overflow pool serves (the health probes).
    pub overflow_paths: Vec<String>,
    /// Time from a connection's start, or the end of its previous response,
    /// until its request headers are complete; so also how long an idle
    /// keep-alive connection is kept (`--web.read-header-timeout`).
    pub read_header_timeout: Duration,
    /// A response write (or TLS handshake) that makes no progress for this
    /// long drops the connection (`--web.write-timeout`).
    pub write_timeout: Duration,
    /// A response not completely written this long after its request
    /// arrived drops the connection, however steadily it moves
    /// (`--web.response-timeout`).
    pub response_timeout: Duration,
    /// Largest request head (request line and headers) read; beyond it the
    /// answer is `431` (`--web.max-header-bytes`, at least 8192).
    pub max_header_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_overflow_connections: 64,
            overflow_paths: vec!["/healthz".to_string(), "/readyz".to_string()],
            read_header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            response_timeout: DEFAULT_RESPONSE_TIMEOUT,
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Connections served at once by default.
pub(crate) const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// The default response timeout: a 36 MB page (10,000 tables, no gzip)
/// over a 1 Mbit/s link takes under 5 minutes.
pub(crate) const DEFAULT_RESPONSE_TIMEOUT: Duration = Duration::from_secs(300);
/// Smallest `max_header_bytes` hyper accepts.
pub(crate) const MIN_HEADER_BYTES: usize = 8192;
/// Header timeout of the overflow pool: it serves probes, which send their
/// request at once.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection that finds both pools busy with requests waits
/// for a slot before it is closed.
const OVERFLOW_WAIT: Duration = Duration::from_millis(500);

/// Where TLS settings come from: `None` inside serves plain HTTP. A new
/// value (a reloaded web config) applies to connections accepted after it.
pub type TlsSource = watch::Receiver<Option<Arc<rustls::ServerConfig>>>;

/// Serve every listener until `shutdown` resolves, then wait at most
/// `grace` for in-flight requests. Returns the number of connections still
/// open when the grace period ran out (0 for a clean drain).
pub async fn serve<H, F>(
    listeners: Vec<TcpListener>,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    limits: Limits,
    tls: Option<TlsSource>,
) -> usize
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, AbortConnection>> + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.read_header_timeout)
        .max_buf_size(limits.max_header_bytes.max(MIN_HEADER_BYTES));
    let mut overflow_builder = builder.clone();
    overflow_builder
        .keep_alive(false)
        .header_read_timeout(OVERFLOW_HEADER_TIMEOUT.min(limits.read_header_timeout));
    let graceful = Arc::new(GracefulShutdown::new());
    let freed = Arc::new(Notify::new());
    let shared = Arc::new(Shared {
        handler,
        builder,
        overflow_builder,
        main: Pool::new(limits.max_connections.max(1), Arc::clone(&freed)),
        overflow: Pool::new(limits.max_overflow_connections, Arc::clone(&freed)),
        freed,
        limits,
        tls,
    });
    let stop = CancellationToken::new();
    let loops: Vec<_> = listeners
        .into_iter()
        .map(|listener| {
            let graceful = Arc::clone(&graceful);
            tokio::spawn(accept_loop(
                listener,
                Arc::clone(&shared),
                graceful,
                stop.clone(),
            ))
        })
        .collect();
    shutdown.await;
    stop.cancel();
    for task in loops {
        let _ = task.await;
    }
    drop(shared);
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        // Only the accept loops held it, and they have ended.
        return 0;
    };
    let open = graceful.count();
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}

struct Shared<H> {
    handler: H,
    builder: hyper::server::conn::http1::Builder,
    overflow_builder: hyper::server::conn::http1::Builder,
    main: Arc<Pool>,
    overflow: Arc<Pool>,
    /// Told whenever a slot of either pool is given back.
    freed: Arc<Notify>,
    limits: Limits,
    tls: Option<TlsSource>,
}

/// One connection's state, shared by its task, its I/O, its requests and
/// its pool.
#[derive(Debug)]
struct Conn {
    /// Since when no request is in progress, as [`Clock`] time; 0 while one
    /// is.
    idle_since: AtomicU64,
    /// When the response in progress must be written, as [`Clock`] time; 0
    /// for none.
    deadline: AtomicU64,
    /// The body of the response in progress has been handed to hyper:
    /// idle once it is flushed.
    finishing: AtomicBool,
    /// Cancelled when its slot is given to a new connection.
    evicted: CancellationToken,
    clock: Clock,
}

/// Milliseconds since a pool's start, plus one (so 0 can mean "none"), on
/// tokio's clock (which tests can pause).
#[derive(Debug, Clone, Copy)]
struct Clock(Instant);

impl Clock {
    fn now(self) -> u64 {
        u64::try_from(self.0.elapsed().as_millis()).unwrap_or(u64::MAX - 1) + 1
    }

    fn instant(self, at: u64) -> Instant {
        self.0 + Duration::from_millis(at.saturating_sub(1))
    }
}

impl Conn {
    /// A request arrived: busy, with `timeout` to answer it.
    fn begin_request(&self, timeout: Duration) {
        let now = self.clock.now();
        self.idle_since.store(0, Ordering::Release);
        self.finishing.store(false, Ordering::Release);
        let timeout = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX / 2);
        self.deadline
            .store(now.saturating_add(timeout), Ordering::Release);
    }

    /// Its response body has been handed to hyper (or dropped).
    fn body_done(&self) {
        self.finishing.store(true, Ordering::Release);
    }

    /// A flush completed: if the response's body was done, all of it is now
    /// with the kernel, and the connection is idle again (evictable).
    fn flushed(&self) {
        if self.finishing.swap(false, Ordering::AcqRel) {
            self.idle_since.store(self.clock.now(), Ordering::Release);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        match self.deadline.load(Ordering::Acquire) {
            0 => None,
            at => Some(self.clock.instant(at)),
        }
    }
}

/// Tells its connection when dropped: a response body's end.
#[derive(Debug)]
struct Done(Arc<Conn>);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.body_done();
    }
}

/// A set of connection slots.
#[derive(Debug)]
struct Pool {
    capacity: usize,
    conns: Mutex<Vec<(u64, Arc<Conn>)>>,
    next_id: AtomicU64,
    freed: Arc<Notify>,
    clock: Clock,
}

/// A taken slot, given back when dropped.
struct Slot {
    pool: Arc<Pool>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.pool
            .conns
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|(id, _)| *id != self.id);
        self.pool.freed.notify_waiters();
    }
}

impl Pool {
    fn new(capacity: usize, freed: Arc<Notify>) -> Arc<Self> {
        Arc::new(Pool {
            capacity,
            conns: Mutex::new(Vec::with_capacity(capacity)),
            next_id: AtomicU64::new(0),
            freed,
            clock: Clock(Instant::now()),
        })
    }

    /// A slot: a free one, else the one of the connection idle longest
    /// (which is closed); `None` when every connection has a request in
    /// progress.
    fn admit(self: &Arc<Self>) -> Option<Slot> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        if conns.len() >= self.capacity {
            let oldest = conns
                .iter()
                .enumerate()
                .filter_map(|(i, (_, c))| match c.idle_since.load(Ordering::Acquire) {
                    0 => None,
                    since => Some((since, i)),
                })
                .min()?
                .1;
            let (_, victim) = conns.swap_remove(oldest);
            victim.evicted.cancel();
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn {
            idle_since: AtomicU64::new(self.clock.now()),
            deadline: AtomicU64::new(0),
            finishing: AtomicBool::new(false),
            evicted: CancellationToken::new(),
            clock: self.clock,
        });
        conns.push((id, Arc::clone(&conn)));
        Some(Slot {
            pool: Arc::clone(self),
            id,
            conn,
        })
    }
}

impl<H> Shared<H> {
    /// A slot in the main pool, else in the overflow pool; `true` with an
    /// overflow slot.
    fn admit(&self) -> Option<(Slot, bool)> {
        self.main
            .admit()
            .map(|slot| (slot, false))
            .or_else(|| self.overflow.admit().map(|slot| (slot, true)))
    }
}

async fn accept_loop<H, F>(
    listener: TcpListener,
    shared: Arc<Shared<H>>,
    graceful: Arc<GracefulShutdown>,
    stop: CancellationToken,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, AbortConnection>> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            biased;
            () = stop.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // Typically EMFILE; back off briefly instead of spinning.
                tracing::warn!(error = %err, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Every connection has a request in progress: those are short in
        // the overflow pool (a probe, or a 503), so one frees up soon. Wait
        // a moment for it, holding back further accepts, rather than close
        // a probe that arrived during a burst.
        let admitted = tokio::time::timeout(OVERFLOW_WAIT, async {
            loop {
                let freed = shared.freed.notified();
                tokio::pin!(freed);
                freed.as_mut().enable();
                if let Some(admitted) = shared.admit() {
                    return admitted;
                }
                freed.await;
            }
        })
        .await;
        let Ok((slot, overflow)) = admitted else {
            tracing::debug!(%peer, "every connection slot is taken; closing");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let conn = Arc::clone(&slot.conn);
            tokio::select! {
                () = serve_connection(stream, peer, overflow, &shared, &conn, watcher) => {}
                () = conn.evicted.cancelled() => {
                    tracing::debug!(%peer, "idle connection closed to make room");
                }
            }
            drop(slot);
        });
    }
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    overflow: bool,
    shared: &Shared<H>,
    conn: &Arc<Conn>,
    graceful: Watcher,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, AbortConnection>> + Send + 'static,
{
    let tls = shared
        .tls
        .as_ref()
        .and_then(|source| source.borrow().clone());
    let io: Box<dyn Io> = match tls {
        None => Box::new(stream),
        Some(config) => {
            let handshake = tokio_rustls::TlsAcceptor::from(config).accept(stream);
            match tokio::time::timeout(shared.limits.read_header_timeout, handshake).await {
                Ok(Ok(stream)) => Box::new(stream),
                Ok(Err(err)) => {
                    tracing::debug!(error = %err, %peer, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            }
        }
    };
    let io = TokioIo::new(WriteDeadline::new(
        io,
        shared.limits.write_timeout,
        Arc::clone(conn),
    ));
    let service = Service {
        handler: shared.handler.clone(),
        peer,
        conn: Arc::clone(conn),
        response_timeout: shared.limits.response_timeout,
        only: overflow.then(|| shared.limits.overflow_paths.clone()),
    };
    let builder = if overflow {
        &shared.overflow_builder
    } else {
        &shared.builder
    };
    let result = graceful.watch(builder.serve_connection(io, service)).await;
    if let Err(err) = result {
        tracing::debug!(error = %err, %peer, "connection ended with an error");
    }
}

/// Hands each request of a connection to the handler, within the response
/// timeout; on an overflow connection, only the probe paths (`503` for
/// anything else).
struct Service<H> {
    handler: H,
    peer: SocketAddr,
    conn: Arc<Conn>,
    response_timeout: Duration,
    /// `Some`: the paths an overflow connection serves.
    only: Option<Vec<String>>,
}

type Answer = Result<Response<Body>, AbortConnection>;

impl<H, F> hyper::service::Service<Request<Incoming>> for Service<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F,
    F: Future<Output = Answer> + Send + 'static,
{
    type Response = Response<Body>;
    type Error = AbortConnection;
    type Future = Either<Pin<Box<dyn Future<Output = Answer> + Send>>, std::future::Ready<Answer>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if let Some(paths) = &self.only {
            if !paths.iter().any(|p| p == req.uri().path()) {
                return Either::Right(std::future::ready(Ok(busy())));
            }
        }
        self.conn.begin_request(self.response_timeout);
        let answer = (self.handler)(req, self.peer);
        let conn = Arc::clone(&self.conn);
        let timeout = self.response_timeout;
        Either::Left(Box::pin(async move {
            match tokio::time::timeout(timeout, answer).await {
                Ok(Ok(mut resp)) => {
                    resp.body_mut().done = Some(Done(conn));
                    Ok(resp)
                }
                Ok(Err(err)) => Err(err),
                Err(_) => Err("no answer within the response timeout".into()),
            }
        }))
    }
}

/// The overflow pool's answer to anything but a probe.
fn busy() -> Response<Body> {
    let mut resp = Response::new(Body::new(Bytes::from_static(
        b"503 too many connections; try again later\n",
    )));
    *resp.status_mut() = hyper::StatusCode::SERVICE_UNAVAILABLE;
    let headers = resp.headers_mut();
    headers.insert(
        hyper::header::CONNECTION,
        hyper::header::HeaderValue::from_static("close"),
    );
    headers.insert(
        hyper::header::RETRY_AFTER,
        hyper::header::HeaderValue::from_static("1"),
    );
    headers.insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// A plain or TLS connection.
trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Fails a write (or flush, or shutdown) that has made no progress for
/// `timeout`, or that comes after the response's deadline, so a client
/// that stops reading, or reads a trickle, cannot hold its connection and
/// the page it pins for longer.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    conn: Arc<Conn>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration, conn: Arc<Conn>) -> Self {
        WriteDeadline {
            inner,
            timeout,
            conn,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Past the response's deadline, fail; otherwise pass a ready result
    /// through (progress disarms the timer), and on `Pending` arm the timer
    /// once and fail when it fires.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let deadline = self.conn.deadline();
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the response was not written within the response timeout",
            )));
        }
        match poll {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let mut at = Instant::now() + self.timeout;
                    if let Some(deadline) = deadline {
                        at = at.min(deadline);
                    }
                    self.sleep.as_mut().reset(at);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write made no progress within the write timeout, or missed the response timeout",
                    ))),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for WriteDeadline<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write(cx, buf);
        this.check(cx, poll)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        this.check(cx, poll)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_flush(cx);
        let poll = this.check(cx, poll);
        if let Poll::Ready(Ok(())) = poll {
            this.conn.flushed();
        }
        poll
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let poll = Pin::new(&mut this.inner).poll_shutdown(cx);
        this.check(cx, poll)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serve a handler that answers `/slow` after `delay`, `/big` with
    /// 64 MiB and anything else at once; returns the address, the shutdown
    /// trigger and the serve task.
    async fn start(
        delay: Duration,
        grace: Duration,
        limits: Limits,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<usize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let trigger = CancellationToken::new();
        let watch = trigger.clone();
        let big = Bytes::from(vec![b'x'; 64 << 20]);
        let handler = move |req: Request<Incoming>, _peer: SocketAddr| {
            let big = big.clone();
            async move {
                match req.uri().path() {
                    "/slow" => {
                        tokio::time::sleep(delay).await;
                        Ok(Response::new(Body::new(Bytes::from_static(b"done"))))
                    }
                    "/big" => Ok(Response::new(Body::new(big))),
                    _ => Ok(Response::new(Body::new(Bytes::from_static(b"done")))),
                }
            }
        };
        let task = tokio::spawn(serve(
            vec![listener],
            handler,
            async move { watch.cancelled().await },
            grace,
            limits,
            None,
        ));
        (addr, trigger, task)
    }

    fn limits(max_connections: usize, overflow: usize) -> Limits {
        Limits {
            max_connections,
            max_overflow_connections: overflow,
            ..Limits::default()
        }
    }

    async fn get(addr: SocketAddr, path: &str) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    /// Bound a test step.
    async fn within<T>(limit: Duration, step: impl Future<Output = T>) -> T {
        tokio::time::timeout(limit, step)
            .await
            .expect("step finished in time")
    }

    #[tokio::test]
    async fn in_flight_requests_finish_after_shutdown() {
        let (addr, trigger, task) = start(
            Duration::from_millis(300),
            Duration::from_secs(5),
            limits(8, 0),
        )
        .await;
        let request = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
        let reply = request.await.unwrap().unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        assert!(reply.ends_with("done"), "{reply}");
        assert_eq!(task.await.unwrap(), 0, "a clean drain");
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "no longer accepting"
        );
    }

    #[tokio::test]
    async fn grace_period_bounds_the_drain() {
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(200),
            limits(8, 0),
        )
        .await;
        let _request = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
        let open = within(Duration::from_secs(5), task).await.unwrap();
        assert_eq!(open, 1);
    }

    #[tokio::test]
    async fn beyond_the_limit_probes_are_answered_and_the_rest_get_503() {
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(100),
            limits(1, 4),
        )
        .await;
        let _held = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let probe = within(Duration::from_secs(2), get(addr, "/healthz"))
            .await
            .unwrap();
        assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
        let other = within(Duration::from_secs(2), get(addr, "/metrics"))
            .await
            .unwrap();
        assert!(other.starts_with("HTTP/1.1 503"), "{other}");
        assert!(
            other.to_ascii_lowercase().contains("connection: close"),
            "{other}"
        );
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn beyond_the_overflow_connections_are_closed_at_once() {
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(100),
            limits(1, 0),
        )
        .await;
        let _held = tokio::spawn(get(addr, "/slow"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        let reply = within(Duration::from_secs(2), get(addr, "/healthz")).await;
        assert!(
            reply.as_deref().map_or(true, str::is_empty),
            "closed without an answer: {reply:?}"
        );
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_client_that_stops_reading_loses_its_slot() {
        let limits = Limits {
            write_timeout: Duration::from_millis(300),
            ..limits(1, 0)
        };
        let (addr, trigger, task) = start(Duration::ZERO, Duration::from_millis(100), limits).await;
        let mut stalled = tokio::net::TcpStream::connect(addr).await.unwrap();
        stalled
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        // The only slot is taken by the stalled download until the write
        // timeout drops it; then a normal request is served.
        let reply = within(Duration::from_secs(5), async {
            loop {
                if let Ok(reply) = get(addr, "/").await {
                    if reply.ends_with("done") {
                        return reply;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
        drop(stalled);
        trigger.cancel();
        let _ = task.await;
    }

    /// Connect and send `bytes`, keeping the connection.
    async fn open(addr: SocketAddr, bytes: &[u8]) -> TcpStream {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(bytes).await.unwrap();
        stream
    }

    /// Whether the server closed `stream` (EOF or reset) within `limit`,
    /// reading and discarding what it sends.
    async fn closed_within(stream: &mut TcpStream, limit: Duration) -> bool {
        let mut buf = vec![0; 64 * 1024];
        tokio::time::timeout(limit, async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await
        .is_ok()
    }

    /// Ask for `/big` on a connection that reads nothing.
    async fn stalled_reader(addr: SocketAddr) -> TcpStream {
        let stream = TcpStream::connect(addr).await.unwrap();
        socket2::SockRef::from(&stream)
            .set_recv_buffer_size(4096)
            .unwrap();
        let mut stream = stream;
        stream
            .write_all(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        stream
    }

    #[tokio::test]
    async fn a_full_server_still_answers_probes_promptly() {
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(100),
            limits(4, 2),
        )
        .await;
        // Every main slot holds a request in progress: two readers that
        // never read, two requests whose handler never answers.
        let mut busy = [
            stalled_reader(addr).await,
            stalled_reader(addr).await,
            open(addr, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await,
            open(addr, b"GET /slow HTTP/1.1\r\nHost: t\r\n\r\n").await,
        ];
        tokio::time::sleep(Duration::from_millis(100)).await;
        // The overflow pool and more: request heads that never end, and a
        // kept-alive connection between requests.
        let mut idle = Vec::new();
        for _ in 0..4 {
            idle.push(open(addr, b"GET /healthz HTTP/1.1\r\nHo").await);
        }
        let mut kept = open(addr, b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let mut answer = [0; 256];
        let n = within(Duration::from_secs(2), kept.read(&mut answer))
            .await
            .unwrap();
        assert!(answer[..n].starts_with(b"HTTP/1.1 200"));
        tokio::time::sleep(Duration::from_millis(100)).await;
        for _ in 0..20 {
            let started = tokio::time::Instant::now();
            let probe = within(Duration::from_secs(1), get(addr, "/readyz"))
                .await
                .unwrap();
            assert!(probe.starts_with("HTTP/1.1 200"), "{probe}");
            assert!(started.elapsed() < Duration::from_millis(500));
        }
        let other = within(Duration::from_secs(1), get(addr, "/metrics"))
            .await
            .unwrap();
        assert!(other.starts_with("HTTP/1.1 503"), "{other}");
        // The idle ones made room (the last one had no need to: the
        // overflow pool's header timeout closes it); the requests in
        // progress kept theirs.
        assert!(closed_within(&mut kept, Duration::from_secs(1)).await);
        for stream in &mut idle[..3] {
            assert!(closed_within(stream, Duration::from_secs(1)).await);
        }
        assert!(closed_within(&mut idle[3], OVERFLOW_HEADER_TIMEOUT * 2).await);
        for stream in &mut busy[2..] {
            assert!(!closed_within(stream, Duration::from_millis(200)).await);
        }
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_new_connection_takes_the_slot_idle_longest() {
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(100),
            limits(2, 0),
        )
        .await;
        let mut oldest = open(addr, b"GET / HTTP/1.1\r\nHo").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut younger = open(addr, b"GET / HTTP/1.1\r\nHo").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let reply = within(Duration::from_secs(2), get(addr, "/"))
            .await
            .unwrap();
        assert!(reply.ends_with("done"), "{reply}");
        assert!(closed_within(&mut oldest, Duration::from_secs(1)).await);
        assert!(!closed_within(&mut younger, Duration::from_millis(200)).await);
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_trickle_reader_is_cut_at_the_response_timeout() {
        let limits = Limits {
            response_timeout: Duration::from_secs(1),
            ..limits(4, 0)
        };
        let (addr, trigger, task) = start(Duration::ZERO, Duration::from_millis(100), limits).await;
        let mut stream = open(addr, b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n").await;
        let started = tokio::time::Instant::now();
        let mut received = 0usize;
        let mut buf = vec![0; 64 * 1024];
        // At most 64 KiB every 10 ms: always progress, but 64 MiB would
        // take 10 s. (What the kernel holds still arrives after the close.)
        let ended = within(Duration::from_secs(10), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => return started.elapsed(),
                    Ok(n) => received += n,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        assert!(ended >= Duration::from_millis(900), "{ended:?}");
        assert!(received < 64 << 20, "{received}");
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn a_handler_that_misses_the_response_timeout_closes_the_connection() {
        let limits = Limits {
            response_timeout: Duration::from_millis(300),
            ..limits(4, 0)
        };
        let (addr, trigger, task) = start(
            Duration::from_secs(3600),
            Duration::from_millis(100),
            limits,
        )
        .await;
        let reply = within(Duration::from_secs(3), get(addr, "/slow")).await;
        assert_eq!(reply.ok().as_deref(), Some(""), "closed without an answer");
        assert!(within(Duration::from_secs(1), get(addr, "/"))
            .await
            .unwrap()
            .ends_with("done"));
        trigger.cancel();
        let _ = task.await;
    }

    #[tokio::test]
    async fn oversized_request_heads_get_431() {
        let (addr, trigger, task) =
            start(Duration::ZERO, Duration::from_millis(100), limits(4, 0)).await;
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let big = "a".repeat(64 * 1024);
        let req = format!("GET / HTTP/1.1\r\nHost: t\r\nX-Big: {big}\r\n\r\n");
        // The server may close before reading everything.
        let _ = stream.write_all(req.as_bytes()).await;
        let mut out = Vec::new();
        let _ = within(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
        let out = String::from_utf8_lossy(&out);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        trigger.cancel();
        let _ = task.await;
    }
}
