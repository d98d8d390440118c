//! Test harness: in-process substations on port 0, the real `gridlb` binary in front of them
//! on free loopback ports, and a client. Everything started here is stopped on drop.
#![allow(dead_code)]

use gridlb_bench::client::{Answer, Client};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub async fn substation(name: &str, capacity_kw: f64, time_scale: f64) -> substation::Server {
    substation::Server::start(substation::Config {
        id: name.to_string(),
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        capacity_kw,
        time_scale,
    })
    .await
    .expect("substation starts on a free port")
}

pub fn free_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

pub fn client() -> Client {
    Client::new(Duration::from_secs(10))
}

/// A running `gridlb` process.
pub struct Proxy {
    child: Child,
    pub listen: SocketAddr,
    pub admin: SocketAddr,
    pub config_path: PathBuf,
    log_path: PathBuf,
    client: Client,
}

/// `substations` lines for a config, one per `(name, address)`.
pub fn substation_lines(subs: &[(&str, SocketAddr)]) -> String {
    subs.iter()
        .map(|(name, addr)| format!("  - {{ name: {name}, address: \"{addr}\" }}\n"))
        .collect()
}

impl Proxy {
    /// Start gridlb over `subs` with `extra` YAML (probe/selection sections) and wait until
    /// it is ready (every substation probed once); see [`Proxy::start_with`].
    pub async fn start(subs: &[(&str, SocketAddr)], extra: &str) -> Proxy {
        Proxy::start_with(subs, extra, &Launch::default()).await
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "gridlb exited with {status} before it was ready:\n{}",
                    self.log()
                );
            }
            if let Ok(a) = self
                .client
                .request(self.admin, "GET", "/readyz", &[], b"")
                .await
            {
                if a.status == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gridlb was not ready in 20 s:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The config text for these listen addresses, `subs` and `extra` YAML.
    pub fn yaml(&self, subs: &[(&str, SocketAddr)], extra: &str) -> String {
        format!(
            "listen: \"{}\"\nadmin: {{ listen: \"{}\" }}\nsubstations:\n{}{extra}\n",
            self.listen,
            self.admin,
            substation_lines(subs)
        )
    }

    /// Replace the config file (atomically, as an editor or Kubernetes would).
    pub fn write_config(&self, text: &str) {
        let tmp = self.config_path.with_extension("tmp");
        std::fs::write(&tmp, text).expect("write config");
        std::fs::rename(&tmp, &self.config_path).expect("replace config");
    }

    pub async fn reload(&self) -> Answer {
        self.admin_post("/reload").await
    }

    pub async fn admin_post(&self, path: &str) -> Answer {
        self.client
            .request(self.admin, "POST", path, &[], b"")
            .await
            .expect("admin answers")
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Send a signal (`"HUP"`, `"QUIT"`, ...) to the process.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Start a second gridlb on the same config with `--upgrade`, to take over this one's
    /// sockets once this one gets SIGQUIT.
    pub fn spawn_upgrade(&self) -> Child {
        Command::new(env!("CARGO_BIN_EXE_gridlb"))
            .arg("--config")
            .arg(&self.config_path)
            .args(["--threads", "2", "--upgrade"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the upgrading gridlb")
    }

    /// Wait for the process to exit (after SIGQUIT, say); false if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// `POST /charge` through the proxy.
    pub async fn charge(&self, vehicle: &str, kw: f64, duration_s: f64) -> Answer {
        let body =
            format!(r#"{{"vehicle_id":"{vehicle}","power_kw":{kw},"duration_s":{duration_s}}}"#);
        self.client
            .request(
                self.listen,
                "POST",
                "/charge",
                &[("content-type", "application/json")],
                body.as_bytes(),
            )
            .await
            .expect("the proxy answers")
    }

    pub async fn admin_get(&self, path: &str) -> Answer {
        self.client
            .request(self.admin, "GET", path, &[], b"")
            .await
            .expect("admin answers")
    }

    pub async fn status(&self) -> serde_json::Value {
        self.admin_get("/status").await.json()
    }

    pub async fn metrics(&self) -> String {
        String::from_utf8_lossy(&self.admin_get("/metrics").await.body).into_owned()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gridlb log ({}) ---\n{}", self.listen, self.log());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.config_path);
        let _ = std::fs::remove_file(&self.log_path);
    }
}

pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// The value of one series in a Prometheus text page (0 when absent).
pub fn metric(page: &str, series: &str) -> f64 {
    page.lines()
        .find_map(|line| {
            line.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// The substation of a substation's `/status` entry.
pub fn entry<'a>(status: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    status["substations"]
        .as_array()
        .and_then(|subs| subs.iter().find(|s| s["name"] == name))
        .unwrap_or_else(|| panic!("{name} not in status {status}"))
}

/// Book a session of an hour directly at a substation, behind the proxy's back.
pub async fn book_direct(addr: SocketAddr, kw: f64) -> Answer {
    book_direct_for(addr, kw, 3600.0).await
}

/// Book a session of `duration_s` directly at a substation, behind the proxy's back.
pub async fn book_direct_for(addr: SocketAddr, kw: f64, duration_s: f64) -> Answer {
    let body = format!(r#"{{"vehicle_id":"direct","power_kw":{kw},"duration_s":{duration_s}}}"#);
    client()
        .request(
            addr,
            "POST",
            "/charge",
            &[("content-type", "application/json")],
            body.as_bytes(),
        )
        .await
        .expect("substation answers")
}

// ---------------------------------------------------------------------------------------
// Reliability and security helpers (faults.rs, security.rs): launch options, restarts, raw
// HTTP over TCP, test-double substations and a slow link.
// ---------------------------------------------------------------------------------------

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

/// How to launch gridlb, beyond the substations and the extra YAML.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// More keys inside `admin: { listen: ..., <here> }`, e.g. `token_env: T`.
    pub admin_extra: String,
    /// Environment variables of the child process.
    pub env: Vec<(String, String)>,
    /// `RUST_LOG` of the child (default `info`).
    pub log_level: Option<String>,
}

impl Proxy {
    /// Like [`Proxy::start`], with launch options; waits until ready. A port that was free
    /// when chosen may be taken (by another test's client connection) before gridlb binds
    /// it: then it is started again on other ports.
    pub async fn start_with(subs: &[(&str, SocketAddr)], extra: &str, launch: &Launch) -> Proxy {
        for _ in 0..3 {
            let mut proxy = Proxy::spawn_with(subs, extra, launch);
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                if !proxy.is_running() {
                    let log = proxy.log();
                    assert!(
                        log.contains("in use"),
                        "gridlb exited before it was ready:\n{log}"
                    );
                    eprintln!("gridlb could not bind a port, starting it again:\n{log}");
                    break;
                }
                let ready = proxy
                    .client
                    .request(proxy.admin, "GET", "/readyz", &[], b"")
                    .await;
                if ready.is_ok_and(|a| a.status == 200) {
                    return proxy;
                }
                assert!(
                    Instant::now() < deadline,
                    "gridlb was not ready in 20 s:\n{}",
                    proxy.log()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("gridlb could not bind its ports three times");
    }

    /// Start gridlb and return at once, without waiting for it to be ready.
    pub fn spawn_with(subs: &[(&str, SocketAddr)], extra: &str, launch: &Launch) -> Proxy {
        let (listen, admin) = (free_port(), free_port());
        let comma = if launch.admin_extra.is_empty() {
            ""
        } else {
            ", "
        };
        let yaml = format!(
            "listen: \"{listen}\"\nadmin: {{ listen: \"{admin}\"{comma}{} }}\nsubstations:\n{}{extra}\n",
            launch.admin_extra,
            substation_lines(subs)
        );
        let stem = format!("gridlb-test-{}-{}", std::process::id(), listen.port());
        let config_path = std::env::temp_dir().join(format!("{stem}.yaml"));
        let log_path = std::env::temp_dir().join(format!("{stem}.log"));
        std::fs::write(&config_path, yaml).expect("write config");
        let child = spawn_gridlb(&config_path, &log_path, launch);
        Proxy {
            child,
            listen,
            admin,
            config_path,
            log_path,
            client: client(),
        }
    }

    /// Wait until `/readyz` answers `200` (panics after 20 s).
    pub async fn wait_until_ready(&mut self) {
        self.wait_ready().await;
    }

    /// Kill the process at once (SIGKILL, like a crash) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start a new process on the same config file (same listen addresses), without waiting
    /// for it to be ready. The old one must be gone (see [`Proxy::kill`]).
    pub fn respawn(&mut self, launch: &Launch) {
        self.child = spawn_gridlb(&self.config_path, &self.log_path, launch);
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Any request to the admin listener, with headers.
    pub async fn admin_request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Answer {
        self.client
            .request(self.admin, method, path, headers, b"")
            .await
            .expect("admin answers")
    }

    /// `POST /charge` through the proxy with extra headers.
    pub async fn charge_with(
        &self,
        vehicle: &str,
        kw: f64,
        duration_s: f64,
        headers: &[(&str, &str)],
    ) -> Answer {
        let body =
            format!(r#"{{"vehicle_id":"{vehicle}","power_kw":{kw},"duration_s":{duration_s}}}"#);
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.client
            .request(self.listen, "POST", "/charge", &all, body.as_bytes())
            .await
            .expect("the proxy answers")
    }
}

fn spawn_gridlb(
    config_path: &std::path::Path,
    log_path: &std::path::Path,
    launch: &Launch,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .expect("open log");
    let mut command = Command::new(env!("CARGO_BIN_EXE_gridlb"));
    command
        .arg("--config")
        .arg(config_path)
        .args(["--threads", "2"])
        .env("RUST_LOG", launch.log_level.as_deref().unwrap_or("info"))
        .stdout(Stdio::null())
        .stderr(log);
    for (name, value) in &launch.env {
        command.env(name, value);
    }
    command.spawn().expect("spawn gridlb")
}

/// Poll `check` every 20 ms until it holds; the time it took, or `None` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The sum of the series of `name` whose labels include every one of `labels`, in any order
/// (0 when there is none).
pub fn metric_sum(page: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (label_text, value) = match rest.strip_prefix('{') {
                Some(inner) => inner.split_once("} ")?,
                None => ("", rest.strip_prefix(' ')?),
            };
            let have: Vec<(&str, &str)> = label_text
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once("=\"")?;
                    Some((k.trim_matches(','), v.trim_end_matches('"')))
                })
                .collect();
            labels
                .iter()
                .all(|want| have.contains(want))
                .then(|| value.trim().parse::<f64>().ok())
                .flatten()
        })
        .sum()
}

/// A load report as a substation's `GET /load` body.
pub fn report_json(name: &str, epoch: u64, seq: u64, load_kw: f64, capacity_kw: f64) -> String {
    format!(
        r#"{{"substation":"{name}","epoch":{epoch},"seq":{seq},"load_kw":{load_kw:?},"capacity_kw":{capacity_kw:?},"active_sessions":0}}"#
    )
}

/// A load report in the `x-substation-load` header form.
pub fn report_header(epoch: u64, seq: u64, load_kw: f64, capacity_kw: f64) -> String {
    format!("epoch={epoch};seq={seq};load_kw={load_kw:?};capacity_kw={capacity_kw:?}")
}

/// An HTTP answer read from a raw TCP connection.
#[derive(Debug, Clone, Default)]
pub struct RawAnswer {
    pub status: u16,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawAnswer {
    pub fn header(&self, name: &str) -> Option<&str> {
        find_header(&self.headers, name)
    }
}

/// The first value of `name` (lower case) among headers read off the wire.
fn find_header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.as_str())
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
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    buf.drain(..head_end);
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    let body = if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            if let Some(i) = find(buf, b"0\r\n\r\n") {
                let body = buf[..i].to_vec();
                buf.drain(..i + 5);
                break body;
            }
            read_more(conn, buf).await?;
        }
    } else {
        let len: usize = get("content-length")
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
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
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let mut body = buf.split_off(head_end);
    let len = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
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
