//! HTTP/1.1 exchanges with substations on gridlb's own keep-alive pool. Charging requests,
//! releases, the load probe and the settling of orphaned bookings all go through [`Caller`].
//!
//! The pool is kept per thread. gridlb runs one runtime per worker thread, and a socket
//! reports readiness to the runtime that opened it: a connection used from another thread
//! makes that thread's runtime wake this one (a system call) on every answer, and waits for
//! it to be free to do so. Kept on the thread that opened it, a connection's wakeups stay
//! there, and taking one from the pool touches no lock another thread holds.
//!
//! Why not Pingora's connector and proxy path: everything gridlb sends a substation is small
//! and whole in memory before it is sent (the proxy needs a booking's power to choose where
//! it goes), and every answer is a few hundred bytes. So one exchange is one write (request
//! line, headers and body together) and reads until the answer is complete; the connection
//! then goes back on its substation's stack. No task per request or per idle connection, no
//! second write for the body, no `getpeername` on reuse (bench/RESULTS.md measures the
//! difference).
//!
//! Every exchange is bounded: the connect by `connect_timeout`, the write and the whole answer
//! together by `timeout`, the answer's head by [`MAX_HEAD`] and its body by `max_body`. A
//! pooled connection the substation closed while it sat idle shows as a failed write or an
//! end of stream before the first byte of an answer; the request then goes once more on a new
//! connection ([`Answer::reconnected`]). That is safe: the substation did not answer it, and
//! every booking carries an `Idempotency-Key`.

mod wire;

use bytes::{Bytes, BytesMut};
use std::cell::{RefCell, RefMut};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use thread_local::ThreadLocal;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use wire::{Framing, Head};

/// The largest answer head (status line and headers) accepted.
pub const MAX_HEAD: usize = 16 * 1024;
/// Idle connections kept per substation and thread; more are closed when they come back.
const MAX_IDLE_PER_SUBSTATION: usize = 256;
/// An idle connection older than this is closed rather than reused (the substation may have
/// given up on it).
const MAX_IDLE_TIME: Duration = Duration::from_secs(30);
/// Every this many returns to a thread's pool, its connections past [`MAX_IDLE_TIME`] are
/// closed for every substation (also those no longer in the config).
const SWEEP_EVERY: u32 = 4096;

/// One request, as [`Caller::call`] sends it. `host` and `content-length` are added.
pub struct Request<'a> {
    pub method: &'a str,
    /// The request target (path and query).
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a [u8])],
    pub body: &'a [u8],
    pub connect_timeout: Duration,
    /// The write and the whole answer.
    pub timeout: Duration,
    /// The largest answer body accepted.
    pub max_body: usize,
}

/// A whole answer.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
    /// A pooled connection had been closed by the substation: sent again on a new one.
    pub reconnected: bool,
}

/// Why an exchange gave no answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    #[error("cannot connect: {0}")]
    Connect(String),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("the connection broke: {0}")]
    Broken(String),
    #[error("malformed answer: {0}")]
    Malformed(&'static str),
    #[error("the answer's body is over {limit} bytes")]
    TooLarge { limit: usize },
}

impl CallError {
    /// Whether the request may have reached the substation (anything but a failed connect).
    pub fn sent(&self) -> bool {
        !matches!(self, CallError::Connect(_))
    }

    /// A short name for logs, metrics and error bodies.
    pub fn kind(&self) -> &'static str {
        match self {
            CallError::Connect(_) => "connect",
            CallError::Timeout(_) => "timeout",
            CallError::Broken(_) => "broken",
            CallError::Malformed(_) => "malformed",
            CallError::TooLarge { .. } => "too_large",
        }
    }
}

/// How one exchange on one connection ended badly.
enum Failure {
    /// Nothing came back, not even the start of an answer: on a pooled connection, the
    /// substation had closed it.
    Unanswered(std::io::Error),
    Failed(CallError),
}

struct Conn {
    stream: TcpStream,
    /// Reused between exchanges: the request is built here, the answer read there.
    out: Vec<u8>,
    input: BytesMut,
    idle_since: Instant,
    /// The substation's address (the `host` of requests that name none).
    addr: SocketAddr,
}

/// A pool of keep-alive connections per substation address, one per thread.
#[derive(Default)]
pub struct Caller {
    idle: ThreadLocal<RefCell<Idle>>,
}

/// One thread's idle connections.
#[derive(Default)]
struct Idle {
    /// Keyed by configured addresses, not by anything a client sends: hashed with `ahash`
    /// (randomly keyed too), a fraction of the cost of std's SipHash on every request.
    stacks: HashMap<SocketAddr, Vec<Conn>, ahash::RandomState>,
    returns: u32,
}

impl Caller {
    /// Send `request` to `addr` and read the whole answer.
    pub async fn call(&self, addr: SocketAddr, request: &Request<'_>) -> Result<Answer, CallError> {
        let mut reconnected = false;
        if let Some(mut conn) = self.checkout(addr) {
            match exchange(&mut conn, request).await {
                Ok((answer, reusable)) => {
                    if reusable {
                        self.checkin(addr, conn);
                    }
                    return Ok(answer);
                }
                Err(Failure::Failed(e)) => return Err(e),
                Err(Failure::Unanswered(_)) => reconnected = true,
            }
        }
        let mut conn = connect(addr, request.connect_timeout).await?;
        match exchange(&mut conn, request).await {
            Ok((mut answer, reusable)) => {
                if reusable {
                    self.checkin(addr, conn);
                }
                answer.reconnected = reconnected;
                Ok(answer)
            }
            Err(Failure::Failed(e)) => Err(e),
            Err(Failure::Unanswered(e)) => {
                Err(CallError::Broken(format!("closed without answering ({e})")))
            }
        }
    }

    /// This thread's idle connections; never held across an `await`.
    fn idle(&self) -> RefMut<'_, Idle> {
        self.idle.get_or_default().borrow_mut()
    }

    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        let mut idle = self.idle();
        let stack = idle.stacks.get_mut(&addr)?;
        // Newest first: the most likely still open. Older ones past their time go.
        while let Some(conn) = stack.pop() {
            if conn.idle_since.elapsed() < MAX_IDLE_TIME {
                return Some(conn);
            }
        }
        None
    }

    fn checkin(&self, addr: SocketAddr, mut conn: Conn) {
        conn.idle_since = Instant::now();
        let mut idle = self.idle();
        idle.returns = idle.returns.wrapping_add(1);
        if idle.returns % SWEEP_EVERY == 0 {
            idle.stacks.retain(|_, stack| {
                stack.retain(|c| c.idle_since.elapsed() < MAX_IDLE_TIME);
                !stack.is_empty()
            });
        }
        let stack = idle.stacks.entry(addr).or_default();
        if stack.len() < MAX_IDLE_PER_SUBSTATION {
            stack.push(conn);
        }
    }
}

async fn connect(addr: SocketAddr, limit: Duration) -> Result<Conn, CallError> {
    let stream = match tokio::time::timeout(limit, TcpStream::connect(addr)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(CallError::Connect(e.to_string())),
        Err(_) => return Err(CallError::Connect(format!("timed out after {limit:?}"))),
    };
    // Each request is one write; waiting to coalesce it with a later one only adds latency.
    stream
        .set_nodelay(true)
        .map_err(|e| CallError::Connect(e.to_string()))?;
    Ok(Conn {
        stream,
        out: Vec::with_capacity(1024),
        input: BytesMut::with_capacity(2048),
        idle_since: Instant::now(),
        addr,
    })
}

/// One request and its whole answer on `conn`; whether the connection can be reused.
async fn exchange(conn: &mut Conn, request: &Request<'_>) -> Result<(Answer, bool), Failure> {
    let limit = request.timeout;
    match tokio::time::timeout(limit, exchange_unbounded(conn, request)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Failed(CallError::Timeout(limit))),
    }
}

async fn exchange_unbounded(
    conn: &mut Conn,
    request: &Request<'_>,
) -> Result<(Answer, bool), Failure> {
    conn.out.clear();
    wire::write_request(&mut conn.out, request, conn.addr);
    conn.stream
        .write_all(&conn.out)
        .await
        .map_err(Failure::Unanswered)?;
    conn.input.clear();
    let head = loop {
        if !conn.input.is_empty()
            && let Some(head) = wire::parse_head(&conn.input).map_err(Failure::Failed)?
        {
            if head.informational() {
                // `100 Continue` and the like: the real answer follows.
                let _ = conn.input.split_to(head.len);
                continue;
            }
            break head;
        }
        if conn.input.len() > MAX_HEAD {
            return Err(Failure::Failed(CallError::Malformed("head too large")));
        }
        let read = conn.stream.read_buf(&mut conn.input).await;
        match read {
            Ok(0) if conn.input.is_empty() => {
                return Err(Failure::Unanswered(
                    std::io::ErrorKind::UnexpectedEof.into(),
                ));
            }
            Ok(0) => return Err(broken("closed in the middle of the answer's head")),
            Ok(_) => {}
            Err(e) if conn.input.is_empty() => return Err(Failure::Unanswered(e)),
            Err(e) => return Err(broken(e)),
        }
    };
    let Head {
        status,
        headers,
        len,
        framing,
        keep_alive,
    } = head;
    let (body, reusable) = read_body(conn, len, framing, request).await?;
    let answer = Answer {
        status,
        headers,
        body,
        reconnected: false,
    };
    Ok((answer, keep_alive && reusable))
}

/// The body after a head of `start` bytes; whether the connection ends clean.
async fn read_body(
    conn: &mut Conn,
    start: usize,
    framing: Framing,
    request: &Request<'_>,
) -> Result<(Bytes, bool), Failure> {
    let too_large = || {
        Failure::Failed(CallError::TooLarge {
            limit: request.max_body,
        })
    };
    match framing {
        Framing::Empty => Ok((Bytes::new(), conn.input.len() == start)),
        Framing::Length(n) => {
            if n > request.max_body {
                return Err(too_large());
            }
            while conn.input.len() < start + n {
                read_more(conn).await?;
            }
            let body = Bytes::copy_from_slice(&conn.input[start..start + n]);
            Ok((body, conn.input.len() == start + n))
        }
        Framing::Chunked => loop {
            match wire::dechunk(&conn.input[start..], request.max_body) {
                Ok(Some((body, used))) => return Ok((body, conn.input.len() == start + used)),
                Ok(None) => read_more(conn).await?,
                Err(wire::ChunkError::TooLarge) => return Err(too_large()),
                Err(wire::ChunkError::Malformed) => {
                    return Err(Failure::Failed(CallError::Malformed("bad chunked body")));
                }
            }
        },
        Framing::UntilClose => loop {
            if conn.input.len() - start > request.max_body {
                return Err(too_large());
            }
            let n = conn
                .stream
                .read_buf(&mut conn.input)
                .await
                .map_err(broken)?;
            if n == 0 {
                return Ok((Bytes::copy_from_slice(&conn.input[start..]), false));
            }
        },
    }
}

async fn read_more(conn: &mut Conn) -> Result<(), Failure> {
    match conn.stream.read_buf(&mut conn.input).await {
        Ok(0) => Err(broken("closed in the middle of the answer's body")),
        Ok(_) => Ok(()),
        Err(e) => Err(broken(e)),
    }
}

fn broken(why: impl std::fmt::Display) -> Failure {
    Failure::Failed(CallError::Broken(why.to_string()))
}
