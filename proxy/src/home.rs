//! Client connections served by the thread that waits for their sockets.
//!
//! gridlb runs one tokio runtime per worker thread (`server.rs`). Pingora 0.9.1 accepts every
//! connection of a listener on one of them and spawns the connection's task on a runtime
//! picked at random (`run_endpoint` in pingora-core's `services/listening.rs`). The socket
//! stays registered with the reactor of the runtime that accepted it. So, with two threads,
//! half the connections were served by one thread while their readiness arrived at the
//! other: every request and every answer written meant that thread waking this one (an
//! `eventfd` write, 0.64 per request in bench/results/profile.txt), and noticing the readiness
//! at all only when it next polled its reactor (when idle, or between batches of tasks).
//!
//! [`Homed`] wraps a listener's app. A new TCP connection whose task runs on another thread
//! than the one that accepted it is registered again with the runtime the task runs on: its
//! socket is duplicated (`dup`), the duplicate registered here, and the accepted stream
//! dropped (deregistered from the accepting runtime and closed). That is four or five system
//! calls once per connection, for none per request after it. The thread that accepts is
//! known from Pingora's connection filter ([`Accepted`]), which runs in the accept loop: its
//! connections are left as they are.
//!
//! A moved connection is served as a [`Local`]: the socket behind a small write buffer (an
//! answer's head and body leave in one write, as they do through Pingora's own stream,
//! `server.rs`), with the accepted stream's addresses and accept time. Nothing else of the
//! accepted stream is lost: gridlb's listeners have no read buffer, no TLS and no PROXY
//! protocol, and Pingora had read nothing from the socket yet.

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
use std::os::fd::{AsRawFd, BorrowedFd};
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

/// A listener's app whose connections are moved to the runtime of their task (see the module
/// documentation). The listener must have [`Accepted`] as its connection filter.
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
        let stream = if must_move() {
            move_here(stream)
        } else {
            stream
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

/// `stream` registered with this thread's runtime, when it is a TCP connection as Pingora
/// accepted it (a kept-alive connection coming round again is already a [`Local`]). When the
/// socket cannot be duplicated (no file descriptor left), it is served where it is.
fn move_here(stream: Stream) -> Stream {
    let Some(accepted) = stream.as_any().downcast_ref::<TcpConnection>() else {
        return stream;
    };
    // Pingora's stream type also carries Unix sockets (gridlb listens on TCP only).
    let tcp = accepted
        .get_socket_digest()
        .is_some_and(|d| d.peer_addr().is_some_and(|a| a.as_inet().is_some()));
    if !tcp {
        return stream;
    }
    match Local::from_accepted(accepted) {
        Ok(local) => Box::new(local),
        Err(e) => {
            log::debug!("client connection served across threads: {e}");
            stream
        }
    }
}

/// A client connection registered with the runtime that serves it.
#[derive(Debug)]
pub struct Local {
    socket: BufWriter<TcpStream>,
    digest: Arc<SocketDigest>,
    accepted_at: SystemTime,
}

impl Local {
    /// A duplicate of `accepted`'s socket, registered with this thread's runtime. The caller
    /// drops `accepted` (which deregisters it from the other runtime and closes it).
    fn from_accepted(accepted: &TcpConnection) -> io::Result<Local> {
        // SAFETY: the descriptor is open for as long as `accepted` is borrowed.
        let fd = unsafe { BorrowedFd::borrow_raw(accepted.as_raw_fd()) };
        // Non-blocking is a flag of the open socket, which the duplicate shares.
        let socket = TcpStream::from_std(std::net::TcpStream::from(fd.try_clone_to_owned()?))?;
        let digest = SocketDigest::from_raw_fd(socket.as_raw_fd());
        if let Some(old) = accepted.get_socket_digest() {
            // Known since the accept; copied rather than asked of the socket again.
            if let Some(peer) = old.peer_addr.get() {
                let _ = digest.peer_addr.set(peer.clone());
            }
            if let Some(local) = old.local_addr.get() {
                let _ = digest.local_addr.set(local.clone());
            }
        }
        let accepted_at = accepted
            .get_timing_digest()
            .first()
            .and_then(|t| t.as_ref().map(|t| t.established_ts))
            .unwrap_or_else(SystemTime::now);
        Ok(Local {
            socket: BufWriter::with_capacity(WRITE_BUFFER, socket),
            digest: Arc::new(digest),
            accepted_at,
        })
    }
}

impl AsyncRead for Local {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Local {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Local {
    async fn shutdown(&mut self) {
        if let Err(e) = AsyncWriteExt::shutdown(&mut self.socket).await {
            log::debug!("failed to shut down a client connection: {e}");
        }
    }
}

impl UniqueID for Local {
    fn id(&self) -> UniqueIDType {
        self.socket.get_ref().as_raw_fd()
    }
}

impl Ssl for Local {}

impl GetTimingDigest for Local {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.accepted_at,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for Local {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Local {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::clone(&self.digest))
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.digest = Arc::new(digest);
    }
}

/// No peeking (Pingora peeks only for cleartext HTTP/2, which gridlb does not serve).
impl Peek for Local {}

impl Drop for Local {
    fn drop(&mut self) {
        // Pingora flushes every answer; anything still buffered goes if it can without
        // waiting, as Pingora's own stream does.
        use futures::FutureExt;
        let _ = self.socket.flush().now_or_never();
    }
}

#[cfg(test)]
mod tests;
