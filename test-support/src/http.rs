//! Raw HTTP/1.1 over tokio's `TcpStream`, for tests that must control the bytes on the wire:
//! requests written by hand ([`raw_request`], [`raw_charge`], [`send`]), answers read off the
//! wire ([`read_answer`], [`read_to_close`]), a misbehaving test substation ([`Double`]) and
//! a slow link ([`SlowLink`]). Header names read off the wire are lower-cased; bodies are
//! delimited by `content-length` or, without one, by the close (chunked answers are not read).
//! Everything listens on a free loopback port and stops when dropped.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// A charge request body as a client sends it. Numbers are written as Rust displays them,
/// so a non-finite one makes a body that is not JSON (as a careless client might send).
pub fn charge_body(vehicle: &str, power_kw: f64, duration_s: f64) -> String {
    format!(r#"{{"vehicle_id":"{vehicle}","power_kw":{power_kw},"duration_s":{duration_s}}}"#)
}

/// An HTTP answer read from a raw TCP connection.
#[derive(Debug, Clone, Default)]
pub struct RawAnswer {
    pub status: u16,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    /// The first value of header `name`; panics when the answer has none.
    pub fn expect_header(&self, name: &str) -> &str {
        self.header(name)
            .unwrap_or_else(|| panic!("no {name} header in {self:?}"))
    }

    pub fn has_header(&self, name: &str) -> bool {
        self.header(name).is_some()
    }

    /// The body as JSON; panics when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {self:?}"))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// The first value of `name` (lower case) among headers read off the wire.
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
}

/// Header lines (after the first line of a head) as lower-cased names and trimmed values.
fn parse_headers<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<(String, String)> {
    lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

async fn read_more(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<()> {
    let mut chunk = [0u8; 8192];
    match conn.read(&mut chunk).await {
        Ok(0) | Err(_) => None,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            Some(())
        }
    }
}

/// Send `request` (raw bytes) on a new connection and read one answer, within `limit`.
/// `None` when the connection closed or nothing complete arrived in time.
pub async fn raw_request(addr: SocketAddr, request: &[u8], limit: Duration) -> Option<RawAnswer> {
    let exchange = async {
        let mut conn = TcpStream::connect(addr).await.ok()?;
        conn.write_all(request).await.ok()?;
        read_answer(&mut conn).await
    };
    tokio::time::timeout(limit, exchange).await.ok().flatten()
}

/// Read one HTTP/1.1 answer (content-length body, or up to the close) from `conn`.
pub async fn read_answer(conn: &mut TcpStream) -> Option<RawAnswer> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = find(&buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, &mut buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let headers = parse_headers(lines);
    let mut body = buf.split_off(head_end);
    let len = find_header(&headers, "content-length").and_then(|v| v.parse::<usize>().ok());
    match len {
        Some(len) => {
            while body.len() < len {
                read_more(conn, &mut body).await?;
            }
            body.truncate(len);
        }
        None => while read_more(conn, &mut body).await.is_some() {},
    }
    Some(RawAnswer {
        status,
        headers,
        body,
    })
}

/// A `POST /charge` written by hand: `extra_headers` are whole lines without CRLF.
pub fn raw_charge(target: &str, host: &str, extra_headers: &[&str], body: &str) -> Vec<u8> {
    let mut head = format!(
        "POST {target} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n",
        body.len()
    );
    for line in extra_headers {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.push_str(body);
    head.into_bytes()
}

/// Send one request with a `Content-Length` body and `Connection: close`; read the answer
/// until the server closes. Panics when there is no answer.
pub async fn send(addr: SocketAddr, method: &str, path: &str, body: &str) -> RawAnswer {
    send_with(addr, method, path, body, &[]).await
}

/// [`send`] with extra headers.
pub async fn send_with(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> RawAnswer {
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    exchange(addr, &[head.as_bytes(), body.as_bytes()].concat()).await
}

/// Send one `POST` whose body is chunked (no `Content-Length`), as [`send`].
pub async fn send_chunked(addr: SocketAddr, path: &str, body: &str) -> RawAnswer {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(1024) {
        raw.push_str(&format!(
            "{:x}\r\n{}\r\n",
            chunk.len(),
            String::from_utf8_lossy(chunk)
        ));
    }
    raw.push_str("0\r\n\r\n");
    exchange(addr, raw.as_bytes()).await
}

/// Write `raw` on a new connection, read the answer until the server closes.
pub async fn exchange(addr: SocketAddr, raw: &[u8]) -> RawAnswer {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer (413) and close before reading everything we send.
    let _ = stream.write_all(raw).await;
    read_to_close(&mut stream).await
}

/// Read an answer until the server closes the connection; the body is cut at its
/// `content-length`. A reset after some of the answer arrived (a server that closed with
/// unread input) ends the read; a reset before any is a panic.
pub async fn read_to_close(stream: &mut TcpStream) -> RawAnswer {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(_) if !buf.is_empty() => break,
            Err(e) => panic!("read: {e}"),
        }
    }
    parse_whole(&buf)
}

fn parse_whole(raw: &[u8]) -> RawAnswer {
    let split = find(raw, b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no header end in {:?}", String::from_utf8_lossy(raw)));
    let head = std::str::from_utf8(&raw[..split]).expect("ASCII head");
    let mut lines = head.split("\r\n");
    let status_line = lines.next().expect("status line");
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let headers = parse_headers(lines);
    let mut body = raw[split + 4..].to_vec();
    if let Some(len) = find_header(&headers, "content-length").and_then(|v| v.parse().ok()) {
        body.truncate(len);
    }
    RawAnswer {
        status,
        headers,
        body,
    }
}

/// A load report as a substation's `GET /load` body.
pub fn report_json(name: &str, epoch: u64, seq: u64, load_kw: f64, capacity_kw: f64) -> String {
    serde_json::json!({
        "substation": name,
        "epoch": epoch,
        "seq": seq,
        "load_kw": load_kw,
        "capacity_kw": capacity_kw,
        "active_sessions": 0,
    })
    .to_string()
}

/// A load report in the `x-substation-load` header form.
pub fn report_header(epoch: u64, seq: u64, load_kw: f64, capacity_kw: f64) -> String {
    format!("epoch={epoch};seq={seq};load_kw={load_kw:?};capacity_kw={capacity_kw:?}")
}

/// A request as a test double received it.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub method: String,
    /// The request target as written (origin or absolute form).
    pub target: String,
    /// Header names in lower case, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }

    pub fn path(&self) -> &str {
        self.target.split('?').next().unwrap_or("")
    }
}

/// What a test double answers. The head is written as given (raw bytes allowed), after
/// `delay`.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, Vec<u8>)>,
    pub body: Vec<u8>,
    pub delay: Duration,
}

impl Reply {
    pub fn new(status: u16, body: impl Into<Vec<u8>>) -> Reply {
        Reply {
            status,
            headers: Vec::new(),
            body: body.into(),
            delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, name: &str, value: impl Into<Vec<u8>>) -> Reply {
        self.headers.push((name.to_string(), value.into()));
        self
    }

    pub fn after(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    fn bytes(&self) -> Vec<u8> {
        let mut out = format!("HTTP/1.1 {} X\r\n", self.status).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(format!("content-length: {}\r\n\r\n", self.body.len()).as_bytes());
        out.extend_from_slice(&self.body);
        out
    }
}

/// A fake substation on a free loopback port: answers every request with `handler` (on
/// kept-alive connections, as Pingora pools them) and records what it received. Stopped on
/// drop.
pub struct Double {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

type Handler = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

impl Double {
    pub async fn start(handler: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> Double {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a double");
        Double::serve(listener, Arc::new(handler))
    }

    fn serve(listener: TcpListener, handler: Handler) -> Double {
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c) = (Arc::clone(&seen), Arc::clone(&connections));
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            while let Ok((conn, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                tasks.spawn(serve_double(conn, Arc::clone(&handler), Arc::clone(&s)));
                while tasks.try_join_next().is_some() {}
            }
        });
        Double {
            addr,
            seen,
            connections,
            task,
        }
    }

    /// The requests received so far whose path is `path`.
    pub fn requests_to(&self, path: &str) -> Vec<Seen> {
        self.seen
            .lock()
            .expect("not poisoned")
            .iter()
            .filter(|s| s.path() == path)
            .cloned()
            .collect()
    }
}

impl Drop for Double {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_double(mut conn: TcpStream, handler: Handler, seen: Arc<Mutex<Vec<Seen>>>) {
    let mut buf = Vec::new();
    loop {
        let Some(request) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        seen.lock().expect("not poisoned").push(request.clone());
        let reply = handler(&request);
        if !reply.delay.is_zero() {
            // The double plays a slow substation: its answer is late by design.
            tokio::time::sleep(reply.delay).await;
        }
        if conn.write_all(&reply.bytes()).await.is_err() {
            return;
        }
    }
}

/// Read one request (content-length or chunked body) from `conn`; `buf` keeps what was read
/// past it. `None` when the connection ends first.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<Seen> {
    let head_end = loop {
        if let Some(i) = find(buf, b"\r\n\r\n") {
            break i + 4;
        }
        read_more(conn, buf).await?;
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let (method, target) = (first.next()?.to_string(), first.next()?.to_string());
    let headers = parse_headers(lines);
    buf.drain(..head_end);
    let body = if find_header(&headers, "transfer-encoding").is_some_and(|v| v.contains("chunked"))
    {
        loop {
            if let Some(i) = find(buf, b"0\r\n\r\n") {
                let body = buf[..i].to_vec();
                buf.drain(..i + 5);
                break body;
            }
            read_more(conn, buf).await?;
        }
    } else {
        let len: usize = find_header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < len {
            read_more(conn, buf).await?;
        }
        buf.drain(..len).collect()
    };
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}

/// A TCP relay on a free loopback port that holds every new connection for `delay` before
/// relaying it to `target`: a slow link (the first request of each connection is late).
pub struct SlowLink {
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl SlowLink {
    pub async fn start(target: SocketAddr, delay: Duration) -> SlowLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind a link");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let mut tasks = JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                tasks.spawn(async move {
                    // The link is slow by design: its delay is what the test measures against.
                    tokio::time::sleep(delay).await;
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while tasks.try_join_next().is_some() {}
            }
        });
        SlowLink { addr, task }
    }
}

impl Drop for SlowLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_double_records_the_request_and_its_reply_is_read_back() {
        let double = Double::start(|seen| {
            Reply::new(201, seen.body.clone()).header("x-substation-load", "epoch=1;seq=2")
        })
        .await;
        let body = charge_body("ev-1", 11.0, 1800.0);
        let request = raw_charge("/charge?x=1", "h", &["idempotency-key: k"], &body);
        let answer = raw_request(double.addr, &request, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(answer.status, 201);
        assert_eq!(answer.header("x-substation-load"), Some("epoch=1;seq=2"));
        assert_eq!(answer.json()["power_kw"], 11.0);
        let seen = double.requests_to("/charge");
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].header("idempotency-key"), Some("k"));
        assert_eq!(seen[0].method, "POST");
    }

    #[tokio::test]
    async fn a_slow_link_relays_to_its_target() {
        let double = Double::start(|_| Reply::new(200, "ok")).await;
        let link = SlowLink::start(double.addr, Duration::from_millis(10)).await;
        let request = b"GET /healthz HTTP/1.1\r\nhost: h\r\n\r\n";
        let answer = raw_request(link.addr, request, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!((answer.status, answer.text().as_str()), (200, "ok"));
        assert_eq!(answer.expect_header("content-length"), "2");
    }

    #[tokio::test]
    async fn send_reads_until_the_server_closes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.expect("accept");
            let mut buf = Vec::new();
            read_request(&mut conn, &mut buf).await.expect("a request");
            let _ = conn
                .write_all(b"HTTP/1.1 413 X\r\ncontent-length: 3\r\n\r\nbig")
                .await;
        });
        let answer = send(addr, "POST", "/charge", "{}").await;
        assert_eq!((answer.status, answer.text().as_str()), (413, "big"));
    }

    #[test]
    fn reports_have_the_wire_forms() {
        let json: serde_json::Value =
            serde_json::from_str(&report_json("s1", 7, 42, 123.0, 500.0)).expect("JSON");
        assert_eq!(json["seq"], 42);
        assert_eq!(json["load_kw"], 123.0);
        assert_eq!(
            report_header(7, 43, 134.0, 500.0),
            "epoch=7;seq=43;load_kw=134.0;capacity_kw=500.0"
        );
    }
}
