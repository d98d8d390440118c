//! A small HTTP/1.1 client for the load generators, the sampler and the tests: plain TCP
//! (tokio's `TcpStream`), one request at a time per connection, keep-alive connections pooled
//! per address. It reads whole answers into memory, which suits the small JSON answers of
//! gridlb and its substations.
//!
//! Algorithm. A request takes the most recently used idle connection to its address, or
//! opens one. The request head is written with `host` and, for a body or a `POST`,
//! `content-length`; the answer head is parsed with `httparse` (1xx answers are skipped) and
//! its body read by `Content-Length`, by chunks (`Transfer-Encoding: chunked`), or to the end
//! of the stream; `HEAD`, 204 and 304 answers have none. A connection goes back to the pool
//! when its answer was read whole and neither side asked to close it (HTTP/1.1 keep-alive).
//!
//! A server may close an idle connection just as a request is sent on it (its keep-alive
//! timeout). So, as hyper does, a request that got no byte of answer on a *reused*
//! connection is sent once more, on a fresh connection; a request that got part of an
//! answer, or failed on a fresh connection, is an error. Every request, retry included, is
//! bounded by the client's timeout.
//!
//! Invariants: at most [`MAX_IDLE_PER_ADDR`] idle connections per address, none idle longer
//! than [`IDLE_TIMEOUT`]; an answer head is at most [`MAX_HEAD`] bytes, a body at most
//! [`MAX_BODY`].

use bytes::{Buf, Bytes, BytesMut};
use http::{HeaderMap, HeaderName, HeaderValue};
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Most idle connections kept per address.
pub const MAX_IDLE_PER_ADDR: usize = 512;
/// An idle connection older than this is closed rather than reused.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest answer head (status line and headers) read.
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest answer body read.
pub const MAX_BODY: usize = 16 * 1024 * 1024;
const MAX_HEADERS: usize = 100;

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The first value of header `name`, if it is there and visible ASCII.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as JSON; `Null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// Why a request got no answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("{addr}: {source}")]
    Io { addr: SocketAddr, source: io::Error },
    #[error("{addr} closed the connection before answering")]
    Closed { addr: SocketAddr },
    #[error("{method} {path} to {addr}: no answer within {timeout:?}")]
    Timeout {
        addr: SocketAddr,
        method: String,
        path: String,
        timeout: Duration,
    },
    #[error("not a valid request: {0}")]
    InvalidRequest(String),
    #[error("{addr} sent an invalid answer: {reason}")]
    InvalidAnswer { addr: SocketAddr, reason: String },
}

/// The client; share it (e.g. in an `Arc`) so that connections are reused.
pub struct Client {
    timeout: Duration,
    pool: Mutex<HashMap<SocketAddr, Vec<Conn>>>,
}

/// One connection and the bytes read from it but not yet used.
struct Conn {
    stream: TcpStream,
    buf: BytesMut,
    idle_since: Instant,
}

/// How one attempt on one connection failed.
enum Failure {
    /// Not one byte of answer came: the request may be sent again elsewhere.
    Unanswered(ClientError),
    Failed(ClientError),
}

impl Client {
    /// A client whose every request (connect, send, answer, and a retry) is bounded by
    /// `timeout`. Starts with no connections.
    pub fn new(timeout: Duration) -> Self {
        Client {
            timeout,
            pool: Mutex::new(HashMap::new()),
        }
    }

    /// Send one request and read its answer. `headers` are sent as given; `host` and
    /// `content-length` are added unless given.
    pub async fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer, ClientError> {
        let head = encode_head(addr, method, path, headers, body)?;
        // A request that says `Connection: close` ends its connection (RFC 9112 §9.6).
        let closes = headers.iter().any(|(name, value)| {
            name.eq_ignore_ascii_case("connection")
                && value
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case("close"))
        });
        let exchange = self.exchange(addr, method, &head, body, closes);
        match tokio::time::timeout(self.timeout, exchange).await {
            Ok(answer) => answer,
            Err(_) => Err(ClientError::Timeout {
                addr,
                method: method.to_string(),
                path: path.to_string(),
                timeout: self.timeout,
            }),
        }
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        method: &str,
        head: &[u8],
        body: &[u8],
        closes: bool,
    ) -> Result<Answer, ClientError> {
        let pooled = if closes { None } else { self.take_idle(addr) };
        if let Some(conn) = pooled {
            match attempt(conn, addr, method, head, body).await {
                Ok((answer, reusable)) => {
                    return Ok(self.keep(addr, answer, reusable.filter(|_| !closes)));
                }
                Err(Failure::Failed(e)) => return Err(e),
                Err(Failure::Unanswered(_)) => {} // the server had closed it: once more
            }
        }
        let stream = TcpStream::connect(addr)
            .await
            .map_err(|source| ClientError::Connect { addr, source })?;
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            buf: BytesMut::with_capacity(4096),
            idle_since: Instant::now(),
        };
        match attempt(conn, addr, method, head, body).await {
            Ok((answer, reusable)) => Ok(self.keep(addr, answer, reusable.filter(|_| !closes))),
            Err(Failure::Failed(e) | Failure::Unanswered(e)) => Err(e),
        }
    }

    /// Return a reusable connection to the pool; hand back the answer.
    fn keep(&self, addr: SocketAddr, answer: Answer, reusable: Option<Conn>) -> Answer {
        if let Some(mut conn) = reusable {
            conn.idle_since = Instant::now();
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            let idle = pool.entry(addr).or_default();
            if idle.len() < MAX_IDLE_PER_ADDR {
                idle.push(conn);
            }
        }
        answer
    }

    /// The most recently used idle connection to `addr` that is not too old and that the
    /// server has neither closed nor written to (an unasked answer, such as a `408` sent
    /// before closing, must not be taken for the answer to the next request).
    fn take_idle(&self, addr: SocketAddr) -> Option<Conn> {
        let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        let idle = pool.get_mut(&addr)?;
        // Oldest first: drop those past the idle timeout.
        idle.retain(|c| c.idle_since.elapsed() < IDLE_TIMEOUT);
        while let Some(conn) = idle.pop() {
            let quiet = matches!(
                conn.stream.try_read(&mut [0u8; 1]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock
            );
            if quiet {
                return Some(conn);
            }
        }
        None
    }

    /// Idle connections held for `addr` (for tests and diagnostics).
    pub fn idle(&self, addr: SocketAddr) -> usize {
        let pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
        pool.get(&addr).map_or(0, Vec::len)
    }
}

/// The request line and headers.
fn encode_head(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Vec<u8>, ClientError> {
    let token = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic());
    if !token(method) || !path.starts_with('/') || !token(path) {
        return Err(ClientError::InvalidRequest(format!("{method:?} {path:?}")));
    }
    let mut head = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let given = |name: &str| headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
    if !given("host") {
        head.extend_from_slice(format!("host: {addr}\r\n").as_bytes());
    }
    for (name, value) in headers {
        let ok =
            HeaderName::from_bytes(name.as_bytes()).is_ok() && HeaderValue::from_str(value).is_ok();
        if !ok {
            return Err(ClientError::InvalidRequest(format!(
                "header {name:?}: {value:?}"
            )));
        }
        head.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    if (!body.is_empty() || method == "POST") && !given("content-length") {
        head.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    Ok(head)
}

/// Send the request on `conn` and read the answer; the connection comes back when it can
/// carry another request.
async fn attempt(
    mut conn: Conn,
    addr: SocketAddr,
    method: &str,
    head: &[u8],
    body: &[u8],
) -> Result<(Answer, Option<Conn>), Failure> {
    let io = |source| ClientError::Io { addr, source };
    let sent = async {
        conn.stream.write_all(head).await?;
        conn.stream.write_all(body).await?;
        conn.stream.flush().await
    };
    sent.await.map_err(|e| Failure::Unanswered(io(e)))?;
    let (status, headers, keep_alive) = read_head(&mut conn, addr).await?;
    let no_body = method == "HEAD" || status == 204 || status == 304;
    let chunked = headers
        .get_all(http::header::TRANSFER_ENCODING)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"chunked"));
    let length = content_length(&headers).map_err(|reason| invalid(addr, reason))?;
    let (body, reusable) = if no_body {
        (Bytes::new(), keep_alive)
    } else if chunked {
        (read_chunked(&mut conn, addr).await?, keep_alive)
    } else if let Some(n) = length {
        (read_exact(&mut conn, addr, n).await?, keep_alive)
    } else {
        (read_to_end(&mut conn, addr).await?, false)
    };
    let answer = Answer {
        status,
        headers,
        body,
    };
    let reusable = reusable && conn.buf.is_empty();
    Ok((answer, reusable.then_some(conn)))
}

fn invalid(addr: SocketAddr, reason: impl Into<String>) -> Failure {
    Failure::Failed(ClientError::InvalidAnswer {
        addr,
        reason: reason.into(),
    })
}

/// Read more bytes into the buffer; `Ok(0)` at the end of the stream.
async fn fill(conn: &mut Conn) -> io::Result<usize> {
    conn.buf.reserve(8192);
    conn.stream.read_buf(&mut conn.buf).await
}

/// Read a final (non-1xx) answer head: status, headers, and whether the connection may be
/// kept. Before the first byte, a failure is [`Failure::Unanswered`].
async fn read_head(conn: &mut Conn, addr: SocketAddr) -> Result<(u16, HeaderMap, bool), Failure> {
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            answered = true;
            if let Some((used, parsed)) = parse_head(&conn.buf).map_err(|r| invalid(addr, r))? {
                conn.buf.advance(used);
                let (status, ..) = parsed;
                if (100..200).contains(&status) && status != 101 {
                    continue;
                }
                return Ok(parsed);
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(invalid(addr, format!("head larger than {MAX_HEAD} bytes")));
            }
        }
        let read = fill(conn).await;
        let failed = match read {
            Ok(0) => ClientError::Closed { addr },
            Ok(_) => continue,
            Err(source) => ClientError::Io { addr, source },
        };
        return Err(if answered {
            Failure::Failed(failed)
        } else {
            Failure::Unanswered(failed)
        });
    }
}

type Head = (u16, HeaderMap, bool);

/// Parse a complete head at the start of `buf`: its length and contents, or `None` when
/// more bytes are needed.
fn parse_head(buf: &[u8]) -> Result<Option<(usize, Head)>, String> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut slots);
    let used = match response.parse(buf).map_err(|e| e.to_string())? {
        httparse::Status::Complete(used) => used,
        httparse::Status::Partial => return Ok(None),
    };
    let status = response.code.ok_or("no status code")?;
    let mut headers = HeaderMap::with_capacity(response.headers.len());
    for h in response.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|e| e.to_string())?;
        let value = HeaderValue::from_bytes(h.value).map_err(|e| e.to_string())?;
        headers.append(name, value);
    }
    let connection = |token: &[u8]| {
        headers
            .get_all(http::header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
    };
    let keep_alive = match response.version {
        Some(1) => !connection(b"close"),
        _ => connection(b"keep-alive"),
    };
    Ok(Some((used, (status, headers, keep_alive))))
}

/// The `Content-Length`, if there is one; several that disagree are an error.
fn content_length(headers: &HeaderMap) -> Result<Option<usize>, String> {
    let mut length = None;
    for value in headers.get_all(http::header::CONTENT_LENGTH) {
        let n = std::str::from_utf8(value.as_bytes())
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<usize>().ok())
            .ok_or_else(|| format!("content-length {value:?}"))?;
        if length.is_some_and(|l| l != n) {
            return Err("content-length given twice, differently".to_string());
        }
        length = Some(n);
    }
    if length.is_some_and(|n| n > MAX_BODY) {
        return Err(format!("body larger than {MAX_BODY} bytes"));
    }
    Ok(length)
}

async fn read_exact(conn: &mut Conn, addr: SocketAddr, n: usize) -> Result<Bytes, Failure> {
    while conn.buf.len() < n {
        match fill(conn).await {
            Ok(0) => return Err(Failure::Failed(ClientError::Closed { addr })),
            Ok(_) => {}
            Err(source) => return Err(Failure::Failed(ClientError::Io { addr, source })),
        }
    }
    Ok(conn.buf.split_to(n).freeze())
}

async fn read_to_end(conn: &mut Conn, addr: SocketAddr) -> Result<Bytes, Failure> {
    loop {
        if conn.buf.len() > MAX_BODY {
            return Err(invalid(addr, format!("body larger than {MAX_BODY} bytes")));
        }
        match fill(conn).await {
            Ok(0) => return Ok(conn.buf.split().freeze()),
            Ok(_) => {}
            Err(source) => return Err(Failure::Failed(ClientError::Io { addr, source })),
        }
    }
}

/// One line (without its CRLF), at most [`MAX_HEAD`] bytes.
async fn read_line(conn: &mut Conn, addr: SocketAddr) -> Result<Bytes, Failure> {
    loop {
        if let Some(end) = conn.buf.windows(2).position(|w| w == b"\r\n") {
            let line = conn.buf.split_to(end + 2).freeze();
            return Ok(line.slice(..end));
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(invalid(addr, "chunk line too long"));
        }
        match fill(conn).await {
            Ok(0) => return Err(Failure::Failed(ClientError::Closed { addr })),
            Ok(_) => {}
            Err(source) => return Err(Failure::Failed(ClientError::Io { addr, source })),
        }
    }
}

/// A chunked body: chunks until the zero-size one, then the trailers (ignored).
async fn read_chunked(conn: &mut Conn, addr: SocketAddr) -> Result<Bytes, Failure> {
    let mut body = BytesMut::new();
    loop {
        let mut line = read_line(conn, addr).await?.to_vec();
        line.extend_from_slice(b"\r\n");
        let size = match httparse::parse_chunk_size(&line) {
            Ok(httparse::Status::Complete((_, size))) => size,
            _ => return Err(invalid(addr, "bad chunk size line")),
        };
        if size == 0 {
            while !read_line(conn, addr).await?.is_empty() {}
            return Ok(body.freeze());
        }
        let size = usize::try_from(size)
            .ok()
            .filter(|s| body.len() + s <= MAX_BODY)
            .ok_or_else(|| invalid(addr, format!("body larger than {MAX_BODY} bytes")))?;
        body.extend_from_slice(&read_exact(conn, addr, size).await?);
        if !read_line(conn, addr).await?.is_empty() {
            return Err(invalid(addr, "chunk not followed by CRLF"));
        }
    }
}

#[cfg(test)]
mod tests;
