//! Client connections served by the thread that waits for their sockets.
//!
//! gridlb runs one tokio runtime per worker thread (`server.rs`). Pingora 0.9.1 accepts every
//! connection of a listener on one of them and spawns the connection's task on a runtime
//! picked at random (`run_endpoint` in pingora-core's `services/listening.rs`). The socket
//! stays registered with the reactor of the runtime that accepted it. So, with two threads,
//! half the connections were served by one thread while their readiness arrived at the
//! other: every request and every answer written meant that thread waking this one (an
//! `eventfd` write, 0.64 per request in the profile before this module), and noticing the
//! readiness at all only when it next polled its reactor (when idle, or between batches of
//! tasks).
//!
//! [`Homed`] wraps a listener's app. A TCP connection whose task runs on another thread than
//! the one that accepted it is handed on as a [`Local`], which moves it once it is kept
//! alive: the first time a read waits after the second answer went out (the client's next
//! request is not there yet), the socket is duplicated (`dup`), the duplicate registered with
//! this thread's runtime, and the accepted stream dropped (deregistered from the accepting
//! runtime and closed). That is four or five system calls once per kept-alive connection, for
//! none per request after it; a connection that carries one or two requests and closes is
//! never moved and pays nothing. The thread that accepts is known from Pingora's connection
//! filter ([`Accepted`]), which runs in the accept loop: its connections are left as they are.
//!
//! A moved connection is the socket behind a small write buffer (an answer's head and body
//! leave in one write, as they do through Pingora's own stream, `server.rs`), with the
//! accepted stream's addresses and accept time. Nothing else of the accepted stream is lost:
//! gridlb's listeners have no read buffer, no TLS and no PROXY protocol, and the move waits
//! for its write buffer to be empty.

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::listeners::ConnectionFilter;
use pingora_core::protocols::l4::stream::Stream as TcpConnection;
use pingora_core::protocols::raw_connect::ProxyDigest;
use pingora_core::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use pingora_core::server::ShutdownWatch;
use std::cell::Cell;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio::runtime::{Handle, RuntimeFlavor};

/// The write buffer of a moved connection: Pingora's own for a client stream (1,460 bytes).
const WRITE_BUFFER: usize = pingora_core::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE;

thread_local! {
    /// Whether this thread runs an accept loop (of any listener: they all run on one thread).
    static ACCEPTS_HERE: Cell<bool> = const { Cell::new(false) };
}

/// Pingora's connection filter on gridlb's listeners: accepts every connection, and marks
/// the thread it runs on as the one that accepts.
#[derive(Debug, Default)]
pub struct Accepted;

#[async_trait]
impl ConnectionFilter for Accepted {
    async fn should_accept(&self, _addr: Option<&std::net::SocketAddr>) -> bool {
        ACCEPTS_HERE.set(true);
        true
    }
}

/// A listener's app whose kept-alive connections are moved to the runtime of their task (see
/// the module documentation). The listener must have [`Accepted`] as its connection filter.
pub struct Homed<A> {
    inner: Arc<A>,
}

impl<A> Homed<A> {
    pub fn new(inner: A) -> Homed<A> {
        Homed {
            inner: Arc::new(inner),
        }
    }
}

#[async_trait]
impl<A> ServerApp for Homed<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let stream = match must_move() {
            true => Local::wrap(stream),
            false => stream,
        };
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// Whether a connection newly given to this thread was accepted by another runtime's reactor:
/// only with one runtime per thread, on a thread that does not accept.
fn must_move() -> bool {
    !ACCEPTS_HERE.get()
        && Handle::try_current().is_ok_and(|h| h.runtime_flavor() == RuntimeFlavor::CurrentThread)
}

/// A client connection accepted by another thread's runtime, moved to this thread's once it
/// is kept alive.
#[derive(Debug)]
pub struct Local {
    socket: Socket,
    /// Answers begun (writes that follow a read); from [`KEPT_ALIVE`] on, a read that waits
    /// waits for another request on a connection that is kept alive.
    answers: u8,
    /// The last thing done was a write.
    writing: bool,
}

/// Answers after which a connection counts as kept alive. Not one: a client that sends one
/// request and closes without saying so (no `Connection: close`) looks kept alive until its
/// close arrives, and a move would cost it more than it saves.
const KEPT_ALIVE: u8 = 2;

#[derive(Debug)]
enum Socket {
    /// As Pingora accepted it (a TCP connection), registered with the accepting runtime.
    Accepted(Stream),
    /// Registered with this thread's runtime.
    Moved {
        socket: BufWriter<TcpStream>,
        digest: Arc<SocketDigest>,
        accepted_at: SystemTime,
    },
}

impl Local {
    /// `stream` as a [`Local`] when it is a TCP connection as Pingora accepted it; else as it
    /// is (Pingora's stream type also carries Unix sockets; gridlb listens on TCP only).
    fn wrap(stream: Stream) -> Stream {
        let tcp = stream
            .as_any()
            .downcast_ref::<TcpConnection>()
            .and_then(|s| s.get_socket_digest())
            .is_some_and(|d| d.peer_addr().is_some_and(|a| a.as_inet().is_some()));
        match tcp {
            true => Box::new(Local {
                socket: Socket::Accepted(stream),
                answers: 0,
                writing: false,
            }),
            false => stream,
        }
    }

    /// Whether the connection has been moved to this thread's runtime.
    pub fn moved(&self) -> bool {
        matches!(self.socket, Socket::Moved { .. })
    }

    /// Move the accepted socket to this thread's runtime, if its write buffer is empty. When
    /// the socket cannot be duplicated (no file descriptor left) it stays where it is.
    fn move_here(&mut self, cx: &mut Context<'_>) {
        let Socket::Accepted(accepted) = &mut self.socket else {
            return;
        };
        // Pingora flushes every answer, so this is at once and sends nothing.
        if !matches!(Pin::new(&mut *accepted).poll_flush(cx), Poll::Ready(Ok(()))) {
            return;
        }
        let Some(tcp) = accepted.as_any().downcast_ref::<TcpConnection>() else {
            return;
        };
        match moved(tcp) {
            Ok(moved) => self.socket = moved,
            Err(e) => {
                log::debug!("client connection served across threads: {e}");
                // Tried again after two more answers.
                self.answers = 0;
            }
        }
    }

    /// A write: the first after a read begins an answer (counted until the connection moves).
    fn begin_answer(&mut self) {
        if !self.writing && !self.moved() {
            self.answers = self.answers.saturating_add(1);
        }
        self.writing = true;
    }

    fn id_of(&self) -> RawFd {
        match &self.socket {
            Socket::Accepted(s) => s.id(),
            Socket::Moved { socket, .. } => socket.get_ref().as_raw_fd(),
        }
    }
}

/// A duplicate of `accepted`'s socket, registered with this thread's runtime; the caller drops
/// `accepted` (which deregisters it from the other runtime and closes it).
fn moved(accepted: &TcpConnection) -> io::Result<Socket> {
    // SAFETY: the descriptor is open for as long as `accepted` is borrowed.
    let fd = unsafe { BorrowedFd::borrow_raw(accepted.as_raw_fd()) };
    // Non-blocking is a flag of the open socket, which the duplicate shares.
    let socket = TcpStream::from_std(std::net::TcpStream::from(fd.try_clone_to_owned()?))?;
    let digest = SocketDigest::from_raw_fd(socket.as_raw_fd());
    if let Some(old) = accepted.get_socket_digest() {
        // Known since the accept; copied rather than asked of the socket again. The local
        // address is asked of the old descriptor while it is open, for the request whose
        // session still holds the old digest.
        if let Some(peer) = old.peer_addr.get() {
            let _ = digest.peer_addr.set(peer.clone());
        }
        let _ = digest.local_addr.set(old.local_addr().cloned());
    }
    let accepted_at = accepted
        .get_timing_digest()
        .first()
        .and_then(|t| t.as_ref().map(|t| t.established_ts))
        .unwrap_or_else(SystemTime::now);
    Ok(Socket::Moved {
        socket: BufWriter::with_capacity(WRITE_BUFFER, socket),
        digest: Arc::new(digest),
        accepted_at,
    })
}

/// What a connection's reads and writes go to, wherever its socket is registered.
trait ReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}

impl<T: AsyncRead + AsyncWrite + Unpin + Send> ReadWrite for T {}

impl Socket {
    fn io(&mut self) -> Pin<&mut dyn ReadWrite> {
        match self {
            Socket::Accepted(accepted) => Pin::new(accepted),
            Socket::Moved { socket, .. } => Pin::new(socket),
        }
    }

    fn io_ref(&self) -> &dyn ReadWrite {
        match self {
            Socket::Accepted(accepted) => accepted,
            Socket::Moved { socket, .. } => socket,
        }
    }
}

impl AsyncRead for Local {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Socket::Accepted(accepted) = &mut this.socket {
            let read = Pin::new(accepted).poll_read(cx, buf);
            if read.is_ready() || this.answers < KEPT_ALIVE {
                this.writing &= read.is_pending();
                return read;
            }
            // Kept alive and waiting for the next request: from here on, on this thread.
            this.move_here(cx);
        }
        this.socket.io().poll_read(cx, buf)
    }
}

impl AsyncWrite for Local {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.begin_answer();
        this.socket.io().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.begin_answer();
        this.socket.io().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.io_ref().is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().socket.io().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().socket.io().poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Local {
    async fn shutdown(&mut self) {
        match &mut self.socket {
            Socket::Accepted(s) => Shutdown::shutdown(s.as_mut()).await,
            Socket::Moved { socket, .. } => {
                if let Err(e) = AsyncWriteExt::shutdown(socket).await {
                    log::debug!("failed to shut down a client connection: {e}");
                }
            }
        }
    }
}

impl UniqueID for Local {
    fn id(&self) -> UniqueIDType {
        self.id_of()
    }
}

impl Ssl for Local {}

impl GetTimingDigest for Local {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        match &self.socket {
            Socket::Accepted(s) => s.get_timing_digest(),
            Socket::Moved { accepted_at, .. } => vec![Some(TimingDigest {
                established_ts: *accepted_at,
                establishment_duration: None,
                offload_wait_duration: None,
            })],
        }
    }
}

impl GetProxyDigest for Local {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        match &self.socket {
            Socket::Accepted(s) => s.get_proxy_digest(),
            Socket::Moved { .. } => None,
        }
    }
}

impl GetSocketDigest for Local {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        match &self.socket {
            Socket::Accepted(s) => s.get_socket_digest(),
            Socket::Moved { digest, .. } => Some(Arc::clone(digest)),
        }
    }

    fn set_socket_digest(&mut self, new: SocketDigest) {
        match &mut self.socket {
            Socket::Accepted(s) => s.set_socket_digest(new),
            Socket::Moved { digest, .. } => *digest = Arc::new(new),
        }
    }
}

/// No peeking (Pingora peeks only for cleartext HTTP/2, which gridlb does not serve).
impl Peek for Local {}

impl Drop for Local {
    fn drop(&mut self) {
        // Pingora flushes every answer; anything still buffered goes if it can without
        // waiting, as Pingora's own stream does (which flushes itself when dropped).
        if let Socket::Moved { socket, .. } = &mut self.socket {
            use futures::FutureExt;
            let _ = socket.flush().now_or_never();
        }
    }
}

#[cfg(test)]
mod tests;
