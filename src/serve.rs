//! The exporter's HTTP/1.1 accept loop: accept on a bound listener, hand
//! each request to a handler, bound the connections served at once, and on
//! shutdown stop accepting and let in-flight requests finish within a grace
//! period.

use std::collections::VecDeque;
use std::future::Future;
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
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

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

/// Connections served at once by default. Beyond it, new connections wait
/// in the kernel's accept queue instead of exhausting file descriptors.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;

/// Serve `listener` until `shutdown` resolves, then wait at most `grace` for
/// in-flight requests. At most `max_connections` are served at once. Returns
/// the number of connections still open when the grace period ran out (0 for
/// a clean drain).
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
    max_connections: usize,
) -> usize
where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<Response<Body>, AbortConnection>> + Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = hyper::server::conn::http1::Builder::new();
    // Bound how long a client may take to send its headers, so idle or
    // trickling connections cannot pin resources forever.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(10));
    let slots = Arc::new(Semaphore::new(max_connections.max(1)));
    tokio::pin!(shutdown);
    loop {
        let slot = tokio::select! {
            biased;
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // never closed; stop rather than spin
            },
        };
        tokio::select! {
            biased;
            () = &mut shutdown => break,
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(pair) => pair,
                    Err(err) => {
                        // Typically EMFILE; back off briefly instead of spinning.
                        tracing::warn!(error = %err, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let handler = handler.clone();
                let service = service_fn(move |req| handler(req, peer));
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(err) = conn.await {
                        tracing::debug!(error = %err, %peer, "connection ended with an error");
                    }
                    drop(slot);
                });
            }
        }
    }
    drop(listener);
    let open = graceful.count();
    match tokio::time::timeout(grace, graceful.shutdown()).await {
        Ok(()) => 0,
        Err(_) => open,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_util::sync::CancellationToken;

    /// Serve a handler that answers after `delay`; returns the address, the
    /// shutdown trigger and the serve task.
    async fn start(
        delay: Duration,
        grace: Duration,
        max_connections: usize,
    ) -> (
        SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<usize>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let trigger = CancellationToken::new();
        let watch = trigger.clone();
        let handler = move |_req: Request<Incoming>, _peer: SocketAddr| async move {
            tokio::time::sleep(delay).await;
            Ok(Response::new(Body::new(Bytes::from_static(b"done"))))
        };
        let task = tokio::spawn(serve(
            listener,
            handler,
            async move { watch.cancelled().await },
            grace,
            max_connections,
        ));
        (addr, trigger, task)
    }

    async fn get(addr: SocketAddr) -> std::io::Result<String> {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            .await?;
        let mut out = String::new();
        stream.read_to_string(&mut out).await?;
        Ok(out)
    }

    #[tokio::test]
    async fn in_flight_requests_finish_after_shutdown() {
        let (addr, trigger, task) =
            start(Duration::from_millis(300), Duration::from_secs(5), 8).await;
        let request = tokio::spawn(get(addr));
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
        let (addr, trigger, task) =
            start(Duration::from_secs(3600), Duration::from_millis(200), 8).await;
        let _request = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(100)).await;
        trigger.cancel();
        let open = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve returns once the grace period is over")
            .unwrap();
        assert_eq!(open, 1);
    }

    #[tokio::test]
    async fn connections_beyond_the_limit_wait_for_a_free_slot() {
        let (addr, trigger, task) =
            start(Duration::from_millis(400), Duration::from_secs(5), 1).await;
        let started = tokio::time::Instant::now();
        let first = tokio::spawn(get(addr));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let second = tokio::spawn(get(addr));
        let first = first.await.unwrap().unwrap();
        let first_done = started.elapsed();
        let second = second.await.unwrap().unwrap();
        let second_done = started.elapsed();
        assert!(first.ends_with("done") && second.ends_with("done"));
        // The second connection is served only after the first one closed,
        // so it takes a whole extra handler delay.
        assert!(
            second_done >= first_done + Duration::from_millis(300),
            "{first_done:?} then {second_done:?}"
        );
        trigger.cancel();
        assert_eq!(task.await.unwrap(), 0);
    }
}
