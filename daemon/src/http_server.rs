//! The one bounded HTTP/1 server of the daemon, used by the API and by every pipeline's
//! router, over TCP or a Unix socket: an accept loop serving an axum `Router` through
//! hyper's HTTP/1 connection builder, with limits that keep hostile or broken clients from
//! exhausting the process's file descriptors or memory.
//!
//! - **Connections**: at most [`ServerLimits::max_connections`] at once. A connection over
//!   the limit is accepted and closed at once (after a `503` written only if the socket
//!   takes it without waiting), so that it holds a descriptor for no longer than that and
//!   the client learns at once; it is counted in
//!   `infadapt_http_connections_refused_total`.
//! - **Header timeout**: a request's head (request line and headers) must arrive within
//!   [`ServerLimits::header_timeout`] of the moment the connection waits for it — its
//!   start, or the end of the previous answer — else the connection is closed. This closes
//!   slow-header clients (slowloris) and idle keep-alive connections alike.
//! - **Idle timeout**: a connection that moves no byte in either direction for
//!   [`ServerLimits::idle_timeout`] is closed, unless a request on it is being answered
//!   (the handler then has its own limits); a request body that stalls for as long fails
//!   the request. This closes stalled bodies and clients that stop reading the answer.
//! - **Sizes**: the head is at most [`MAX_HEADER_BYTES`] with at most [`MAX_HEADERS`]
//!   fields (431 otherwise, from hyper), the URL at most [`MAX_URL_BYTES`] (414 with a JSON
//!   `error`). Bodies are limited by each server's routes.
//! - **Accept errors** (out of descriptors, `EMFILE`): the loop waits
//!   [`ACCEPT_BACKOFF`] and tries again; the error is logged once a minute at most, with
//!   the number of errors since.
//! - **Shutdown**: when the shutdown future completes, the listener closes, idle
//!   connections close, and requests in flight are answered before their connection closes.

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::{Request, Response, StatusCode, header};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Semaphore, watch};
use tracing::{debug, error};

/// Largest request head (request line and header fields), bytes.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most header fields in one request.
pub const MAX_HEADERS: usize = 64;
/// Longest URL (path and query), bytes.
pub const MAX_URL_BYTES: usize = 8 * 1024;
/// How long the accept loop waits after an accept error other than a failed connection.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);
/// At most one log line per this long about accept errors.
const ACCEPT_LOG_EVERY: Duration = Duration::from_secs(60);
/// Buffer of a connection (hyper's `max_buf_size`; at least 8 KiB).
const CONNECTION_BUFFER_BYTES: usize = 64 * 1024;

/// The limits of one server.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ServerLimits {
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Served, open and refused connections of one server (shared with `/metrics`).
#[derive(Debug, Default)]
pub struct ConnectionStats {
    accepted: AtomicU64,
    open: AtomicU64,
    refused: AtomicU64,
}

/// A reading of [`ConnectionStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ConnectionCounts {
    /// Connections served (within the limit) since the server started.
    pub accepted: u64,
    /// Connections open now.
    pub open: u64,
    /// Connections closed at once because the server was at its limit, since it started.
    pub refused: u64,
}

impl ConnectionStats {
    pub fn counts(&self) -> ConnectionCounts {
        ConnectionCounts {
            accepted: self.accepted.load(Ordering::Relaxed),
            open: self.open.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
        }
    }
}

/// Counts a connection open until dropped.
struct Open<'a>(&'a ConnectionStats);

impl<'a> Open<'a> {
    fn enter(stats: &'a ConnectionStats) -> Open<'a> {
        stats.accepted.fetch_add(1, Ordering::Relaxed);
        stats.open.fetch_add(1, Ordering::Relaxed);
        Open(stats)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The connection-count families for `/metrics`: the API's (`server="api"`) and each
/// router's (`server="router"` with its `pipeline`).
pub fn render_connections(
    api: Option<ConnectionCounts>,
    routers: &[(String, ConnectionCounts)],
) -> String {
    use std::fmt::Write as _;
    let mut rows: Vec<(String, ConnectionCounts)> = Vec::new();
    if let Some(api) = api {
        rows.push(("server=\"api\"".to_owned(), api));
    }
    for (pipeline, counts) in routers {
        rows.push((
            format!(
                "server=\"router\",pipeline=\"{}\"",
                crate::service::status::escape(pipeline)
            ),
            *counts,
        ));
    }
    let mut out = String::new();
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ConnectionCounts) -> u64,
    );
    let families: [Family; 3] = [
        (
            "infadapt_http_connections_accepted_total",
            "HTTP connections served (accepted within the connection limit).",
            "counter",
            |c| c.accepted,
        ),
        (
            "infadapt_http_connections_open",
            "HTTP connections open now.",
            "gauge",
            |c| c.open,
        ),
        (
            "infadapt_http_connections_refused_total",
            "HTTP connections closed at once because the server was at its connection limit.",
            "counter",
            |c| c.refused,
        ),
    ];
    for (name, help, kind, value) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, counts) in &rows {
            let _ = writeln!(out, "{name}{{{labels}}} {}", value(counts));
        }
    }
    out
}

/// A listener the server accepts connections on: TCP or a Unix socket.
pub trait Listen: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept_one(&self) -> impl Future<Output = io::Result<Self::Io>> + Send;
    /// Writes `bytes` if the socket takes them now, without waiting (best effort).
    fn try_write_now(io: &Self::Io, bytes: &[u8]);
}

impl Listen for tokio::net::TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept_one(&self) -> io::Result<tokio::net::TcpStream> {
        let (stream, _) = self.accept().await?;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn try_write_now(io: &tokio::net::TcpStream, bytes: &[u8]) {
        let _ = io.try_write(bytes);
    }
}

impl Listen for tokio::net::UnixListener {
    type Io = tokio::net::UnixStream;

    async fn accept_one(&self) -> io::Result<tokio::net::UnixStream> {
        self.accept().await.map(|(stream, _)| stream)
    }

    fn try_write_now(io: &tokio::net::UnixStream, bytes: &[u8]) {
        let _ = io.try_write(bytes);
    }
}

/// What a refused connection is told, if its socket takes it at once.
const REFUSED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
connection: close\r\ncontent-length: 52\r\n\r\n{\"error\":\"too many connections; try again shortly\"}\n";

/// An accept error that concerns one connection only (the next accept may succeed at once).
fn is_connection_error(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

/// Serves `app` on `listener` within `limits` until `shutdown` completes, then lets the
/// requests in flight finish and returns once every connection has closed. `server` names
/// the server in the log (`API`, `router of pipeline x`).
pub async fn serve<L: Listen>(
    listener: L,
    app: axum::Router,
    limits: ServerLimits,
    stats: Arc<ConnectionStats>,
    server: String,
    shutdown: impl Future<Output = ()> + Send,
) {
    let max = limits
        .max_connections
        .clamp(1, Semaphore::MAX_PERMITS.min(u32::MAX as usize));
    let permits = Arc::new(Semaphore::new(max));
    let (closing, closing_seen) = watch::channel(false);
    let mut shutdown = pin!(shutdown);
    let mut accept_errors: u64 = 0;
    let mut last_logged: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept_one() => accepted,
        };
        match accepted {
            Ok(io) => match Arc::clone(&permits).try_acquire_owned() {
                Ok(permit) => {
                    let app = app.clone();
                    let stats = Arc::clone(&stats);
                    let closing = closing_seen.clone();
                    tokio::spawn(async move {
                        connection(io, app, limits, &stats, closing).await;
                        drop(permit);
                    });
                }
                Err(_) => {
                    L::try_write_now(&io, REFUSED);
                    drop(io);
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                }
            },
            Err(e) if is_connection_error(&e) => {}
            Err(e) => {
                // Out of descriptors or memory: log once in a while, back off briefly.
                accept_errors += 1;
                if last_logged.is_none_or(|t| t.elapsed() >= ACCEPT_LOG_EVERY) {
                    error!(
                        %server,
                        error = %e,
                        errors = accept_errors,
                        "cannot accept connections; retrying every {} ms (logged once a minute)",
                        ACCEPT_BACKOFF.as_millis()
                    );
                    last_logged = Some(Instant::now());
                    accept_errors = 0;
                }
                tokio::select! {
                    () = &mut shutdown => break,
                    () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
                }
            }
        }
    }
    drop(listener);
    let _ = closing.send(true);
    // Every connection holds a permit until it has closed.
    let _ = permits.acquire_many(max as u32).await;
    debug!(%server, "stopped serving");
}

/// When the connection last moved a byte, and the requests on it being answered.
#[derive(Debug)]
struct Activity {
    start: Instant,
    /// Milliseconds since `start` of the last byte read or written.
    last_ms: AtomicU64,
    answering: AtomicUsize,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            answering: AtomicUsize::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.start + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// Counts a request being answered until dropped (also when cancelled).
struct Answering(Arc<Activity>);

impl Drop for Answering {
    fn drop(&mut self) {
        self.0.answering.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes each byte moved in [`Activity`].
struct Watched<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A request body that fails when no data comes for the idle timeout.
struct StallLimited {
    inner: Incoming,
    limit: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl StallLimited {
    fn new(inner: Incoming, limit: Duration) -> StallLimited {
        StallLimited {
            inner,
            limit,
            deadline: Box::pin(tokio::time::sleep(limit)),
        }
    }
}

impl hyper::body::Body for StallLimited {
    type Data = Bytes;
    type Error = axum::BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let next = tokio::time::Instant::now() + self.limit;
                self.deadline.as_mut().reset(next);
                Poll::Ready(frame.map(|f| f.map_err(axum::BoxError::from)))
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(format!(
                    "the request body stalled for {:.1} s",
                    self.limit.as_secs_f64()
                )
                .into()))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The answer to a URL over [`MAX_URL_BYTES`].
fn url_too_long(length: usize) -> Response<Body> {
    let body = json!({
        "error": format!("the URL is {length} bytes long; at most {MAX_URL_BYTES} are accepted"),
        "limit_bytes": MAX_URL_BYTES,
    });
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = StatusCode::URI_TOO_LONG;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serves one connection until it ends, times out or the server closes.
async fn connection<I: AsyncRead + AsyncWrite + Unpin + Send + 'static>(
    io: I,
    app: axum::Router,
    limits: ServerLimits,
    stats: &ConnectionStats,
    mut closing: watch::Receiver<bool>,
) {
    let _open = Open::enter(stats);
    let activity = Arc::new(Activity::new());
    let io = TokioIo::new(Watched {
        inner: io,
        activity: Arc::clone(&activity),
    });
    let tower = TowerToHyperService::new(app);
    let idle = limits.idle_timeout;
    let on_request = Arc::clone(&activity);
    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
        on_request.answering.fetch_add(1, Ordering::Relaxed);
        let answering = Answering(Arc::clone(&on_request));
        let length = request
            .uri()
            .path_and_query()
            .map_or(0, |p| p.as_str().len());
        let request = request.map(|body| Body::new(StallLimited::new(body, idle)));
        let answer =
            (length <= MAX_URL_BYTES).then(|| hyper::service::Service::call(&tower, request));
        // Boxed, so that the connection can be polled without shutting it down.
        Box::pin(async move {
            let response = match answer {
                Some(answer) => answer.await?,
                None => url_too_long(length),
            };
            drop(answering);
            Ok::<_, Infallible>(response)
        })
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(CONNECTION_BUFFER_BYTES)
        .max_header_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS);
    let mut conn = builder.serve_connection(io, service);
    let mut shutting_down = false;
    loop {
        let idle_at = tokio::time::Instant::from_std(activity.last() + idle);
        tokio::select! {
            result = std::future::poll_fn(|cx| conn.poll_without_shutdown(cx)) => {
                match result {
                    Ok(()) => break,
                    Err(e) => debug!(error = %e, "connection ended with an error"),
                }
                return;
            }
            _ = closing.wait_for(|c| *c), if !shutting_down => {
                shutting_down = true;
                Pin::new(&mut conn).graceful_shutdown();
            }
            () = tokio::time::sleep_until(idle_at) => {
                let answering = activity.answering.load(Ordering::Relaxed) > 0;
                if !answering && activity.last().elapsed() >= idle {
                    debug!("closing a connection idle for {:.1} s", idle.as_secs_f64());
                    return;
                }
                if answering {
                    // Looked at again once the idle time has passed anew.
                    activity.touch();
                }
            }
        }
    }
    // The connection answered and ended cleanly: close it without losing the answer
    // (not when the server is closing: that is not to wait for clients).
    if !shutting_down {
        linger(conn.into_parts().io.into_inner(), idle).await;
    }
}

/// Longest a closing connection is drained (see [`linger`]).
const LINGER_FOR: Duration = Duration::from_secs(1);
/// Most bytes a closing connection is drained of.
const LINGER_BYTES: usize = 8 << 20;

/// Closes a connection the way that keeps its last answer: sends FIN, then reads and
/// drops what the client still sends (the rest of a body refused with 413, say) until it
/// closes too, for at most [`LINGER_FOR`] (or the idle timeout) and [`LINGER_BYTES`].
/// Closing a socket with unread data sends a reset, and a reset can make the client's
/// system drop the answer before the client has read it.
async fn linger<I: AsyncRead + AsyncWrite + Unpin>(mut io: I, idle: Duration) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    if io.shutdown().await.is_err() {
        return;
    }
    let drain = async {
        let mut buf = [0u8; 16 * 1024];
        let mut drained = 0;
        while drained < LINGER_BYTES {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    };
    let _ = tokio::time::timeout(LINGER_FOR.min(idle), drain).await;
}

/// Whether `limits` leave room under the soft limit on open files: a warning naming the
/// numbers when the servers' connections together with `reserve` descriptors for backend
/// calls, plugins and files do not fit under `max_fds`.
pub fn descriptor_warning(connections: u64, reserve: u64, max_fds: u64) -> Option<String> {
    (connections.saturating_add(reserve) > max_fds).then(|| {
        format!(
            "the HTTP connection limits add up to {connections}, which with {reserve} \
             descriptors kept for backend calls and files exceeds the open-files limit of \
             {max_fds}; lower `max_connections` in [daemon.http] or [pipeline.router], or \
             raise LimitNOFILE"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_whole_response_with_its_length() {
        let text = std::str::from_utf8(REFUSED).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.parse().ok())
            .expect("content-length");
        assert_eq!(length, body.len());
        let error: serde_json::Value = serde_json::from_str(body).expect("JSON");
        assert!(error["error"].is_string());
    }

    #[test]
    fn the_descriptor_warning_names_the_numbers() {
        assert_eq!(descriptor_warning(1152, 256, 65536), None);
        let warning = descriptor_warning(1152, 256, 1024).expect("over");
        assert!(
            warning.contains("1152") && warning.contains("1024") && warning.contains("LimitNOFILE"),
            "{warning}"
        );
    }
}
