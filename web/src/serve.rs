//! The exporter's HTTP/1.1 accept loops: accept on every bound listener
//! (plain or TLS), hand each request to a handler, and on shutdown stop
//! accepting and let in-flight requests finish within a grace period.
//!
//! Slow and hostile clients are bounded by [`Limits`]: a fixed number of
//! connection slots; beyond them a small overflow path that still answers
//! the health probes (and `503` with `Connection: close` to anything else)
//! instead of leaving connections in the kernel's backlog; beyond that an
//! immediate close. Request heads have a size limit and a deadline (which
//! is also the keep-alive idle timeout), and a response write that makes
//! no progress for the write timeout drops the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::time::Sleep;
use tokio_util::either::Either;
use tokio_util::sync::CancellationToken;

/// Response body of every handler in this crate: a list of shared chunks,
/// sent in order without being copied into one buffer (a metrics page is
/// the shared snapshot's blocks plus a small per-request tail).
#[derive(Debug, Default)]
pub struct Body {
    chunks: VecDeque<Bytes>,
    remaining: u64,
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
        Body { chunks, remaining }
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
            None => Poll::Ready(None),
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
    /// Connections accepted beyond `max_connections` into the overflow path
    /// (`--web.max-overflow-connections`): they may only ask for
    /// `overflow_paths` and get `503` with `Connection: close` for anything
    /// else. Beyond this too, a new connection is closed at once rather
    /// than left waiting in the kernel's backlog.
    pub max_overflow_connections: usize,
    /// Paths the overflow path serves (the health probes).
    pub overflow_paths: Vec<String>,
    /// Time from a connection's start, or the end of its previous response,
    /// until its request headers are complete; so also how long an idle
    /// keep-alive connection is kept (`--web.read-header-timeout`).
    pub read_header_timeout: Duration,
    /// A response write (or TLS handshake) that makes no progress for this
    /// long drops the connection (`--web.write-timeout`).
    pub write_timeout: Duration,
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
            max_header_bytes: 16 * 1024,
        }
    }
}

/// Connections served at once by default.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
/// Smallest `max_header_bytes` hyper accepts.
pub const MIN_HEADER_BYTES: usize = 8192;
/// Header timeout of the overflow path: it serves probes, which send their
/// request at once.
const OVERFLOW_HEADER_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a connection beyond the overflow path waits for an overflow
/// slot before it is closed.
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
    let shared = Arc::new(Shared {
        handler,
        builder,
        overflow_builder,
        slots: Arc::new(Semaphore::new(limits.max_connections.max(1))),
        overflow: Arc::new(Semaphore::new(limits.max_overflow_connections)),
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
    slots: Arc<Semaphore>,
    overflow: Arc<Semaphore>,
    limits: Limits,
    tls: Option<TlsSource>,
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
        let (slot, overflow) = match Arc::clone(&shared.slots).try_acquire_owned() {
            Ok(slot) => (slot, false),
            // Overflow connections are short (a probe, or a 503), so one
            // frees up soon: wait a moment for it, holding back further
            // accepts, rather than closing a probe that arrived during a
            // burst.
            Err(_) => match tokio::time::timeout(
                OVERFLOW_WAIT,
                Arc::clone(&shared.overflow).acquire_owned(),
            )
            .await
            {
                Ok(Ok(slot)) => (slot, true),
                _ => {
                    tracing::debug!(%peer, "every connection slot is taken; closing");
                    drop(stream);
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let shared = Arc::clone(&shared);
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            serve_connection(stream, peer, overflow, shared, watcher).await;
            drop(slot);
        });
    }
}

async fn serve_connection<H, F>(
    stream: TcpStream,
    peer: SocketAddr,
    overflow: bool,
    shared: Arc<Shared<H>>,
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
    let io = TokioIo::new(WriteDeadline::new(io, shared.limits.write_timeout));
    let handler = shared.handler.clone();
    let result = if overflow {
        let service = Overflow {
            handler,
            peer,
            paths: shared.limits.overflow_paths.clone(),
        };
        let conn = shared.overflow_builder.serve_connection(io, service);
        graceful.watch(conn).await
    } else {
        let service = service_fn(move |req| handler(req, peer));
        let conn = shared.builder.serve_connection(io, service);
        graceful.watch(conn).await
    };
    if let Err(err) = result {
        tracing::debug!(error = %err, %peer, "connection ended with an error");
    }
}

/// The overflow path's service: the handler for the probe paths, `503`
/// for anything else.
struct Overflow<H> {
    handler: H,
    peer: SocketAddr,
    paths: Vec<String>,
}

type Ready = std::future::Ready<Result<Response<Body>, AbortConnection>>;

impl<H, F> hyper::service::Service<Request<Incoming>> for Overflow<H>
where
    H: Fn(Request<Incoming>, SocketAddr) -> F,
    F: Future<Output = Result<Response<Body>, AbortConnection>>,
{
    type Response = Response<Body>;
    type Error = AbortConnection;
    type Future = Either<F, Ready>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        if self.paths.iter().any(|p| p == req.uri().path()) {
            Either::Left((self.handler)(req, self.peer))
        } else {
            Either::Right(std::future::ready(Ok(busy())))
        }
    }
}

/// The overflow path's answer to anything but a probe.
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
/// `timeout`, so a client that stops reading cannot hold its connection,
/// and the page it pins, for longer.
struct WriteDeadline<S> {
    inner: S,
    timeout: Duration,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
}

impl<S> WriteDeadline<S> {
    fn new(inner: S, timeout: Duration) -> Self {
        WriteDeadline {
            inner,
            timeout,
            sleep: Box::pin(tokio::time::sleep(timeout)),
            armed: false,
        }
    }

    /// Pass a ready result through (progress disarms the timer); on
    /// `Pending`, arm the timer once and fail when it fires.
    fn check<T>(&mut self, cx: &mut Context<'_>, poll: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        match poll {
            Poll::Ready(result) => {
                self.armed = false;
                Poll::Ready(result)
            }
            Poll::Pending => {
                if !self.armed {
                    self.armed = true;
                    let deadline = tokio::time::Instant::now() + self.timeout;
                    self.sleep.as_mut().reset(deadline);
                }
                match self.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "write made no progress within the write timeout",
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
        this.check(cx, poll)
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
