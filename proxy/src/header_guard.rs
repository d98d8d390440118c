//! The client's request header block, bounded in time and size before Pingora parses it.
//!
//! Pingora 0.9 reads a request's header before any gridlb code runs, with a timeout per read
//! (a client that sends one byte a second is never cut) and its own 1 MiB ceiling (answered
//! `400`). [`Guarded`] wraps a listener's Pingora app (any `ServerApp`) and hands it each new
//! connection inside a [`HeaderGuard`], an `IO` that delegates everything and watches reads:
//!
//! - **Header phase** (a new connection, and again after each request is logged): reads are
//!   counted. When Pingora asks for more while it already holds more than
//!   `limits.max_header_bytes` of an unfinished header, the guard answers `431` itself. Each
//!   read is cut to at most one byte beyond the limit, so Pingora's own ceiling is never
//!   reached first. When a read would wait while part of a header has arrived (or on a new
//!   connection at all), a timer is armed: the header must be whole within
//!   `limits.client_header_timeout_ms` of the connection's accept (the first request) or of
//!   its first byte (later requests; the idle time between requests is Pingora's keep-alive
//!   timeout). Past it the guard answers `408` (or, when nothing of the request came,
//!   closes silently).
//! - **Body phase**: from the moment the proxy sees the parsed header ([`header_parsed`],
//!   called by the service's first filter) until the request is logged ([`request_done`]),
//!   reads pass untouched: the body has its own limits.
//!
//! The common case (a header that arrives in one read) costs a relaxed atomic load, an
//! addition and two comparisons per read: no clock, no timer. A timer (one tokio `Sleep`,
//! kept for the connection) is armed only when a header is split across reads.
//!
//! The phase comes from Pingora itself (the header is parsed when the filter runs), not
//! from scanning the bytes, so pipelined requests (a read holding several headers and
//! bodies) and bodies that contain `\r\n\r\n` cannot confuse it. Bytes Pingora read past
//! one request (a pipelined prefix) are not counted for the next: that only makes the guard
//! lenient. The one case where body bytes are read in the header phase is Pingora draining
//! an unread request body after a request is logged on a kept-alive connection; gridlb never keeps such
//! a connection (an answer before the body was read closes it).
//!
//! Cutting: the answer is written to the socket from within the read, the write side is
//! shut down and what the client still sends is read and dropped for at most
//! [`LINGER`] / [`LINGER_BYTES`] (a "lingering close", as nginx does, so the client reads
//! the answer rather than a reset). Then the connection's task is ended by [`Guarded`]
//! (Pingora's read never fails, so nothing is logged as an error: a client's fault is
//! logged at debug level).
//!
//! Shutdown: when a listener stops (a graceful upgrade or SIGTERM), Pingora ends every
//! connection still waiting for a request header, and that includes a connection it accepted
//! a moment before whose client is still sending its first request: that client would see
//! its connection closed unanswered. So [`Guarded`] counts the connections whose first header
//! has not been parsed yet ([`Arrivals`]) and passes the shutdown on to Pingora only once
//! there are none (or after the header timeout). Idle kept-alive connections still close at
//! once after that; a request read meanwhile is answered with `connection: close`.
//!
//! [`header_parsed`]: HeaderGuard::header_parsed
//! [`request_done`]: HeaderGuard::request_done

use async_trait::async_trait;
use gridlb_protocol::ErrorBody;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::tls::SslDigest;
use pingora_core::protocols::{
    ALPN, GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl,
    Stream, TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll, ready};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};

/// How long a cut connection is read and drained after its answer, at most.
pub const LINGER: Duration = Duration::from_secs(2);
/// How much a cut connection may still send before it is closed regardless.
pub const LINGER_BYTES: usize = 2 << 20;
/// Pingora 0.9 refuses a header over 1 MiB (`400`) before reading further; the guard stops
/// this far below it so that bytes Pingora already held (a pipelined prefix) cannot make
/// Pingora's check come first.
pub const CEILING: usize = 1_048_575 - 64 * 1024;
const _: () = assert!(CEILING + 64 * 1024 <= 1_048_575);

/// The bounds of one connection's request headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderLimits {
    /// The time to send a whole header block (from accept for a connection's first request,
    /// from the first byte for later ones).
    pub timeout: Duration,
    /// The largest header block; a larger one is answered `431`. At most [`CEILING`].
    pub max_bytes: usize,
}

/// A Pingora app whose connections are guarded: see the module documentation. `limits` is
/// asked once per connection, so a reload applies to connections accepted after it.
pub struct Guarded<A, F> {
    inner: Arc<A>,
    limits: F,
    arrivals: Arc<Arrivals>,
}

impl<A, F> Guarded<A, F> {
    pub fn new(inner: A, limits: F) -> Guarded<A, F> {
        Guarded {
            inner: Arc::new(inner),
            limits,
            arrivals: Arc::default(),
        }
    }
}

/// How long a stopped listener's last accepted connections get to reach their app (their
/// tasks may still be queued) before [`Arrivals`] is read.
const SETTLE: Duration = Duration::from_millis(50);

/// The connections of one listener that were accepted but whose first request's header has
/// not been parsed yet (see the module documentation).
#[derive(Default)]
struct Arrivals {
    pending: AtomicUsize,
    none_left: Notify,
}

impl Arrivals {
    fn enter(self: &Arc<Self>) -> Arrival {
        self.pending.fetch_add(1, Relaxed);
        Arrival {
            arrivals: Arc::clone(self),
            done: AtomicBool::new(false),
        }
    }

    /// Resolves once no connection waits for its first header.
    async fn settled(&self) {
        loop {
            let none_left = self.none_left.notified();
            tokio::pin!(none_left);
            // Registered before the count is read, so a last `done` in between still wakes.
            none_left.as_mut().enable();
            if self.pending.load(Relaxed) == 0 {
                return;
            }
            none_left.await;
        }
    }
}

/// One connection counted in [`Arrivals`], until its first header is parsed or it ends.
struct Arrival {
    arrivals: Arc<Arrivals>,
    done: AtomicBool,
}

impl Arrival {
    fn done(&self) {
        if !self.done.load(Relaxed) && !self.done.swap(true, Relaxed) {
            let arrivals = &self.arrivals;
            if arrivals.pending.fetch_sub(1, Relaxed) == 1 {
                arrivals.none_left.notify_waiters();
            }
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.done();
    }
}

#[async_trait]
impl<A, F> ServerApp for Guarded<A, F>
where
    A: ServerApp + Send + Sync + 'static,
    F: Fn() -> HeaderLimits + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let cut = Arc::new(AtomicBool::new(false));
        let mut guard = HeaderGuard::new(stream, (self.limits)(), Arc::clone(&cut));
        guard.arrival = Some(self.arrivals.enter());
        // Costs one relaxed load per wake of the connection's task: the guard sets the flag
        // and wakes the task from within a read, so nothing needs registering here.
        let ended = std::future::poll_fn(|_| match cut.load(Relaxed) {
            true => Poll::Ready(()),
            false => Poll::Pending,
        });
        let back = tokio::select! {
            biased;
            // The guard answered and drained: end the connection (dropping Pingora's task,
            // which is waiting for a header, and the socket with it).
            () = ended => return None,
            back = self.inner.process_new(Box::new(guard), shutdown) => back,
        };
        // An app that hands the connection back gets it unwrapped: the next round guards
        // it again.
        back.map(|s| {
            if s.as_any().is::<HeaderGuard>() {
                match s.into_any().downcast::<HeaderGuard>() {
                    Ok(guard) => guard.inner,
                    Err(_) => unreachable!("checked to be a HeaderGuard"),
                }
            } else {
                s
            }
        })
    }

    async fn cleanup(&self) {
        // The listener has stopped. Pingora's cleanup ends every connection waiting for a
        // header: first let those accepted before the stop deliver their first one.
        let limit = (self.limits)().timeout;
        let _ = tokio::time::timeout(limit, async {
            tokio::time::sleep(SETTLE).await;
            self.arrivals.settled().await;
        })
        .await;
        self.inner.cleanup().await;
    }
}

const HEADER: u8 = 0;
const BODY: u8 = 1;
/// A request was logged: the next read starts a new header phase.
const NEXT: u8 = 2;

/// A connection's stream with its request headers bounded (see the module documentation).
pub struct HeaderGuard {
    inner: Stream,
    limits: HeaderLimits,
    /// [`HEADER`], [`BODY`] or [`NEXT`]; set by the proxy's filters, read by `poll_read`.
    phase: AtomicU8,
    /// Bytes read in this header phase.
    seen: usize,
    /// When the connection was accepted, until its first request's header is parsed.
    accepted: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether `timer` is set for this header phase.
    armed: bool,
    cutting: Option<Cut>,
    /// Set once the cut is done; [`Guarded`] then ends the connection.
    cut: Arc<AtomicBool>,
    /// Counts this connection as arriving until its first header is parsed.
    arrival: Option<Arrival>,
}

/// The steps of ending a connection whose header broke a limit.
#[derive(Debug)]
enum Cut {
    Write { answer: Vec<u8>, at: usize },
    Flush,
    Close,
    Linger { dropped: usize },
    Done,
}

impl HeaderGuard {
    /// The guard around a newly accepted `inner` (the first request's time runs from now);
    /// `cut` is set (and the reading task woken) once the guard has answered and the
    /// connection should end.
    /// `limits.max_bytes` is capped at [`CEILING`].
    pub fn new(inner: Stream, limits: HeaderLimits, cut: Arc<AtomicBool>) -> HeaderGuard {
        HeaderGuard {
            inner,
            limits: HeaderLimits {
                max_bytes: limits.max_bytes.min(CEILING),
                ..limits
            },
            phase: AtomicU8::new(HEADER),
            seen: 0,
            accepted: Some(Instant::now()),
            timer: None,
            armed: false,
            cutting: None,
            cut,
            arrival: None,
        }
    }

    /// The guard around a session's stream, if it has one.
    pub fn of(stream: Option<&Stream>) -> Option<&HeaderGuard> {
        stream?.as_any().downcast_ref::<HeaderGuard>()
    }

    /// Pingora has parsed the request's header: the reads that follow are its body.
    pub fn header_parsed(&self) {
        self.phase.store(BODY, Relaxed);
        if let Some(arrival) = &self.arrival {
            arrival.done();
        }
    }

    /// The request is over (logged): the next bytes read begin the next request's header.
    pub fn request_done(&self) {
        self.phase.store(NEXT, Relaxed);
    }

    /// Begin cutting: the answer for `status`, or none (a silent close).
    fn begin_cut(&mut self, status: Option<u16>) {
        let peer = self
            .inner
            .get_socket_digest()
            .and_then(|d| d.peer_addr().map(|a| a.to_string()))
            .unwrap_or_default();
        self.cutting = Some(match status {
            Some(status) => {
                log::debug!("client {peer}: request header refused with {status}");
                Cut::Write {
                    answer: answer(status, &self.limits),
                    at: 0,
                }
            }
            None => {
                log::debug!("client {peer}: no request within the header timeout, closed");
                Cut::Done
            }
        });
    }

    /// Drive the cut as far as it goes; the read itself never completes.
    fn poll_cut(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        loop {
            let Some(step) = self.cutting.as_mut() else {
                return Poll::Pending;
            };
            let inner = Pin::new(&mut self.inner);
            let next = match step {
                Cut::Write { answer, at } => match ready!(inner.poll_write(cx, &answer[*at..])) {
                    Ok(n) if n > 0 && *at + n < answer.len() => {
                        *at += n;
                        continue;
                    }
                    Ok(n) if n > 0 => Cut::Flush,
                    _ => Cut::Done,
                },
                Cut::Flush => match ready!(inner.poll_flush(cx)) {
                    Ok(()) => Cut::Close,
                    Err(_) => Cut::Done,
                },
                Cut::Close => {
                    let _ = ready!(inner.poll_shutdown(cx));
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(LINGER)));
                    timer.as_mut().reset(Instant::now() + LINGER);
                    Cut::Linger { dropped: 0 }
                }
                Cut::Linger { dropped } => {
                    // Read into the caller's buffer and forget it again.
                    let filled = buf.filled().len();
                    let read = inner.poll_read(cx, buf);
                    let n = buf.filled().len() - filled;
                    buf.set_filled(filled);
                    match read {
                        Poll::Ready(Ok(())) if n > 0 && *dropped + n <= LINGER_BYTES => {
                            *dropped += n;
                            continue;
                        }
                        Poll::Ready(_) => Cut::Done,
                        Poll::Pending => {
                            let lingering = self
                                .timer
                                .as_mut()
                                .is_some_and(|t| t.as_mut().poll(cx).is_pending());
                            if lingering {
                                return Poll::Pending;
                            }
                            Cut::Done
                        }
                    }
                }
                Cut::Done => {
                    // Wake the task once, so that `Guarded` sees the flag and ends it.
                    if !self.cut.swap(true, Relaxed) {
                        cx.waker().wake_by_ref();
                    }
                    return Poll::Pending;
                }
            };
            self.cutting = Some(next);
        }
    }

    /// A read in the header phase.
    fn poll_header(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.seen > self.limits.max_bytes {
            // Pingora asks for more while it holds more than the limit of an unfinished
            // header (a finished one would have reached the proxy's filter first).
            self.begin_cut(Some(431));
            return self.poll_cut(cx, buf);
        }
        let room = self.limits.max_bytes + 1 - self.seen;
        let (read, n) = if buf.remaining() > room {
            // At most one byte past the limit, so that Pingora never holds much more.
            let mut part = ReadBuf::new(buf.initialize_unfilled_to(room));
            let read = Pin::new(&mut self.inner).poll_read(cx, &mut part);
            let n = part.filled().len();
            buf.advance(n);
            (read, n)
        } else {
            let filled = buf.filled().len();
            let read = Pin::new(&mut self.inner).poll_read(cx, buf);
            (read, buf.filled().len() - filled)
        };
        self.seen += n;
        match read {
            Poll::Pending => self.wait(cx, buf),
            ready => ready,
        }
    }

    /// The read would wait: arm the header's timer if a header is under way.
    fn wait(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if !self.armed {
            let start = match self.accepted {
                Some(at) => at,
                None if self.seen > 0 => Instant::now(),
                // Idle between requests: Pingora's keep-alive timeout applies.
                None => return Poll::Pending,
            };
            let deadline = start + self.limits.timeout;
            match self.timer.as_mut() {
                Some(t) => t.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let timer = self.timer.as_mut().expect("armed above");
        if timer.as_mut().poll(cx).is_ready() {
            self.begin_cut((self.seen > 0).then_some(408));
            return self.poll_cut(cx, buf);
        }
        Poll::Pending
    }
}

/// The answer the guard writes itself, in the form of gridlb's other error answers.
fn answer(status: u16, limits: &HeaderLimits) -> Vec<u8> {
    let (reason, message) = match status {
        431 => (
            "Request Header Fields Too Large",
            format!("request headers are larger than {} bytes", limits.max_bytes),
        ),
        _ => (
            "Request Timeout",
            format!(
                "the request header did not arrive within {} ms",
                limits.timeout.as_millis()
            ),
        ),
    };
    let body = ErrorBody::new(message, None).to_json();
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    out.extend_from_slice(&body);
    out
}

impl AsyncRead for HeaderGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.cutting.is_some() {
            return this.poll_cut(cx, buf);
        }
        match this.phase.load(Relaxed) {
            BODY => Pin::new(&mut this.inner).poll_read(cx, buf),
            NEXT => {
                this.phase.store(HEADER, Relaxed);
                this.seen = 0;
                this.armed = false;
                this.accepted = None;
                this.poll_header(cx, buf)
            }
            _ => this.poll_header(cx, buf),
        }
    }
}

impl AsyncWrite for HeaderGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeaderGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeaderGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeaderGuard {
    fn get_ssl(&self) -> Option<&pingora_core::protocols::tls::TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeaderGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeaderGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeaderGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeaderGuard {
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        self.inner.try_peek(buf).await
    }
}

impl std::fmt::Debug for HeaderGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeaderGuard")
            .field("inner", &self.inner)
            .field("phase", &self.phase.load(Relaxed))
            .field("seen", &self.seen)
            .field("cutting", &self.cutting)
            .finish()
    }
}

#[cfg(test)]
mod tests;
