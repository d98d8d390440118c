//! Security end to end: the admin token, the admin address, no open proxy, limits on what a
//! client may send, and hop-by-hop headers. The real `gridlb` binary, in front of in-process
//! substations and recording test doubles.

mod common;

use common::{Proxy, with_probe};
use gridlb_test_support::config::{Admin, GridlbConfig, Limits, Probe};
use gridlb_test_support::http::{
    Double, Reply, raw_charge, raw_request, read_answer, report_header, report_json,
};
use gridlb_test_support::launch::{Launch, binary, substation};
use gridlb_test_support::ports::free_port;
use gridlb_test_support::wait::{wait_blocking, wait_until};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The random part of a well-formed session id (the part after the substation's name).
const TOKEN: &str = "0123456789abcdef0123456789abcdef";

fn probes() -> GridlbConfig {
    with_probe(Probe::every(200, 180))
}
const BODY: &str = r#"{"vehicle_id":"ev-1","power_kw":1.0,"duration_s":60}"#;

/// A substation double that records what it receives and books everything; `/charge`
/// answers come after `delay`.
async fn recorder(name: &'static str, delay: Duration) -> Double {
    Double::start(move |req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json(name, 1, 1, 0.0, 1e6));
        }
        Reply::new(
            201,
            format!(r#"{{"session_id":"{name}-0123456789abcdef0123456789abcdef","substation":"{name}","power_kw":1,"load_kw":0,"capacity_kw":1000000}}"#),
        )
        .header("x-substation-load", report_header(1, 1, 0.0, 1e6))
        .after(delay)
    })
    .await
}

/// Config sections with the admin token in a variable, and a launch that sets it.
fn token_launch(token: &str) -> (GridlbConfig, Launch) {
    let var = format!("GRIDLB_TEST_TOKEN_{}", std::process::id());
    let config = probes().admin_token_env(&var);
    let launch = Launch {
        env: vec![(var, token.to_string())],
        log_level: Some("debug".into()),
    };
    (config, launch)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutating_admin_routes_need_the_token_and_it_is_never_shown() {
    let s = substation("s1", 1000.0, 1.0).await;
    let token = format!("tok-{}-x9Qz", std::process::id());
    let (config, launch) = token_launch(&token);
    let proxy = Proxy::start_with(&[("s1", s.addr)], config, &launch).await;
    let bearer = format!("Bearer {token}");
    let wrong = format!("Bearer {token}x");
    let mut shown = Vec::new();
    for path in [
        "/reload",
        "/substations/s1/drain",
        "/substations/s1/undrain",
    ] {
        for headers in [
            vec![],
            vec![("authorization", wrong.as_str())],
            vec![("authorization", token.as_str())],
            vec![("authorization", "Bearer ")],
        ] {
            let a = proxy.admin_request("POST", path, &headers).await;
            assert_eq!(a.status, 401, "POST {path} with {headers:?}");
            assert_eq!(a.header("www-authenticate"), Some("Bearer"));
            shown.push(a.body);
        }
        let a = proxy
            .admin_request("POST", path, &[("authorization", bearer.as_str())])
            .await;
        assert_eq!(a.status, 200, "POST {path} with the token: {:?}", a.json());
        shown.push(a.body);
    }
    for path in ["/status", "/metrics", "/", "/healthz", "/readyz"] {
        let a = proxy.admin_request("GET", path, &[]).await;
        assert_eq!(a.status, 200, "GET {path} needs no token");
        shown.push(a.body);
    }
    assert_eq!(proxy.charge("ev", 1.0, 60.0).await.status, 201);
    for body in &shown {
        assert!(
            !String::from_utf8_lossy(body).contains(&token),
            "the token was shown: {}",
            String::from_utf8_lossy(body)
        );
    }
    let log = proxy.log();
    assert!(log.contains("reload"), "the debug log is empty:\n{log}");
    assert!(!log.contains(&token), "the token is in the log:\n{log}");
}

fn write_config(admin: Admin) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "gridlb-sec-{}-{}.yaml",
        std::process::id(),
        free_port().port()
    ));
    let mut config = GridlbConfig::new()
        .listen(free_port())
        .substation("s1", free_port());
    config.admin = Some(admin);
    std::fs::write(&path, config.to_yaml()).expect("write config");
    path
}

/// `admin: { listen: <listen>, token_env: <token_env> }`.
fn admin(listen: String, token_env: Option<&str>) -> Admin {
    Admin {
        listen: Some(listen),
        token_env: token_env.map(str::to_string),
    }
}

/// Run `gridlb [args] --config path` to its end (at most 10 s); exit success and output.
fn run_gridlb(args: &[&str], path: &std::path::Path, env: &[(&str, &str)]) -> (bool, String) {
    let mut command = Command::new(binary("gridlb"));
    command
        .args(args)
        .arg("--config")
        .arg(path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    let mut child = command.spawn().expect("spawn gridlb");
    let ended = wait_blocking(Duration::from_millis(20), Duration::from_secs(10), || {
        child.try_wait().expect("wait").is_some()
    });
    if !ended {
        let _ = child.kill();
        let _ = child.wait();
        panic!("gridlb kept running with {}", path.display());
    }
    let out = child.wait_with_output().expect("output");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn a_public_admin_address_without_a_token_is_refused_at_start() {
    let var = format!("GRIDLB_TEST_EMPTY_{}", std::process::id());
    let port = free_port().port();
    for admin in [
        admin(format!("0.0.0.0:{port}"), None),
        admin(format!("0.0.0.0:{port}"), Some(&var)),
    ] {
        let path = write_config(admin.clone());
        for args in [&[][..], &["check"][..]] {
            // The variable is set but empty: no token either.
            let (ok, out) = run_gridlb(args, &path, &[(var.as_str(), "")]);
            assert!(!ok, "gridlb {args:?} accepted admin {admin:?}:\n{out}");
            assert!(
                out.contains("admin.listen"),
                "the message names admin.listen:\n{out}"
            );
        }
        let _ = std::fs::remove_file(&path);
    }
    // With a token it is allowed (checked only: nothing binds a public address here).
    let path = write_config(admin(format!("0.0.0.0:{port}"), Some(&var)));
    let (ok, out) = run_gridlb(&["check"], &path, &[(var.as_str(), "s3cret")]);
    assert!(ok, "{out}");
    assert!(!out.contains("s3cret"), "check printed the token:\n{out}");
    let _ = std::fs::remove_file(&path);
    // And the default admin address is loopback.
    let path = write_config(Admin::default());
    let (ok, out) = run_gridlb(&["check"], &path, &[]);
    assert!(ok && out.contains("admin 127.0.0.1:9100"), "{out}");
    let _ = std::fs::remove_file(&path);
}

/// A listener that counts connections: nothing may ever reach it through the proxy.
async fn victim() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, SeqCst);
            let _ = conn
                .write_all(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}")
                .await;
        }
    });
    (addr, hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn neither_host_nor_absolute_uri_sends_a_request_anywhere_else() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let (v, hits) = victim().await;
    let host = v.to_string();
    let requests: Vec<(String, Vec<u8>)> = vec![
        (
            "absolute-form POST".into(),
            raw_charge(&format!("http://{v}/charge"), &host, &[], BODY),
        ),
        (
            "Host header".into(),
            raw_charge("/charge", &host, &[], BODY),
        ),
        (
            "forwarding headers".into(),
            raw_charge(
                "/charge",
                &host,
                &[
                    &format!("x-forwarded-host: {v}"),
                    &format!("forwarded: host={v}"),
                    &format!("x-original-url: http://{v}/charge"),
                ],
                BODY,
            ),
        ),
        (
            "absolute-form GET".into(),
            format!("GET http://{v}/load HTTP/1.1\r\nhost: {v}\r\n\r\n").into_bytes(),
        ),
        (
            "CONNECT".into(),
            format!("CONNECT {v} HTTP/1.1\r\nhost: {v}\r\n\r\n").into_bytes(),
        ),
        (
            "absolute-form DELETE".into(),
            format!("DELETE http://{v}/charge/s1-{TOKEN} HTTP/1.1\r\nhost: {v}\r\n\r\n")
                .into_bytes(),
        ),
        (
            "session id naming an address".into(),
            format!("DELETE /charge/{v}-{TOKEN} HTTP/1.1\r\nhost: {v}\r\n\r\n").into_bytes(),
        ),
        (
            "scheme-relative path".into(),
            raw_charge(&format!("//{v}/charge"), &host, &[], BODY),
        ),
    ];
    let before = s.state.report().active_sessions;
    let mut to_s1 = 0;
    for (what, bytes) in &requests {
        let a = raw_request(proxy.listen, bytes, Duration::from_secs(5)).await;
        let a = a.unwrap_or_default();
        eprintln!("{what}: {} {:?}", a.status, a.header("x-gridlb-substation"));
        if a.status == 201 {
            assert_eq!(a.header("x-gridlb-substation"), Some("s1"), "{what}");
            to_s1 += 1;
        } else {
            assert!(a.status == 0 || a.status >= 400, "{what}: {}", a.status);
        }
    }
    // A stray request to the victim would arrive within this time; its absence cannot be polled.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(hits.load(SeqCst), 0, "the victim was reached");
    assert_eq!(s.state.report().active_sessions, before + to_s1);
    assert!(
        to_s1 >= 3,
        "the /charge requests went to the configured substation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn charge_bodies_over_16_kib_get_413_and_reach_no_substation() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(&[("rec", rec.addr)], probes()).await;
    let limit = 16 * 1024;
    // Exactly at the limit is fine (JSON padded with spaces).
    let at_limit = format!("{BODY:<limit$}");
    let a = raw_request(
        proxy.listen,
        &raw_charge("/charge", "x", &[], &at_limit),
        Duration::from_secs(5),
    )
    .await
    .expect("answer");
    assert_eq!(a.status, 201);
    assert_eq!(rec.requests_to("/charge").len(), 1);
    // One byte over, declared.
    let over = format!("{BODY:<0$}", limit + 1);
    let a = raw_request(
        proxy.listen,
        &raw_charge("/charge", "x", &[], &over),
        Duration::from_secs(5),
    )
    .await
    .expect("answer");
    assert_eq!(a.status, 413);
    // Over, chunked (no length declared up front).
    let mut chunked =
        b"POST /charge HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..5 {
        chunked.extend_from_slice(format!("1000\r\n{}\r\n", " ".repeat(4096)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let a = raw_request(proxy.listen, &chunked, Duration::from_secs(5))
        .await
        .expect("answer");
    assert_eq!(a.status, 413);
    assert_eq!(
        rec.requests_to("/charge").len(),
        1,
        "an oversized body was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_over_the_limit_get_431() {
    let rec = recorder("rec", Duration::ZERO).await;
    // Default limit: 32 KiB.
    let proxy = Proxy::start(&[("rec", rec.addr)], probes()).await;
    let send = |size: usize| {
        let pad = format!("x-pad: {}", "a".repeat(size));
        raw_charge("/charge", "x", &[pad.as_str()], BODY)
    };
    let small = raw_request(proxy.listen, &send(8 * 1024), Duration::from_secs(5)).await;
    assert_eq!(small.map(|a| a.status), Some(201));
    let big = raw_request(proxy.listen, &send(40 * 1024), Duration::from_secs(5)).await;
    assert_eq!(
        big.map(|a| a.status),
        Some(431),
        "40 KiB of headers over a 32 KiB limit"
    );
    drop(proxy);
    // Configured: 4 KiB.
    let proxy = Proxy::start(
        &[("rec", rec.addr)],
        probes().limits(Limits {
            max_header_bytes: Some(4096),
            ..Limits::default()
        }),
    )
    .await;
    let small = raw_request(proxy.listen, &send(2 * 1024), Duration::from_secs(5)).await;
    assert_eq!(small.map(|a| a.status), Some(201));
    let big = raw_request(proxy.listen, &send(5 * 1024), Duration::from_secs(5)).await;
    assert_eq!(
        big.map(|a| a.status),
        Some(431),
        "5 KiB of headers over a 4 KiB limit"
    );
    assert_eq!(
        rec.requests_to("/charge").len(),
        2,
        "an oversized request was forwarded"
    );
}

/// Write `head` and `part` of the body, then stall; how long until the proxy answers or
/// closes the connection (`None` if it still holds it after `limit`), and what it answered.
async fn stall(addr: SocketAddr, bytes: &[u8], limit: Duration) -> (Option<Duration>, Option<u16>) {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    conn.write_all(bytes).await.expect("write");
    let started = Instant::now();
    let mut peek = [0u8; 1];
    match tokio::time::timeout(limit, conn.peek(&mut peek)).await {
        Err(_) => (None, None),
        Ok(Ok(0)) | Ok(Err(_)) => (Some(started.elapsed()), None),
        Ok(Ok(_)) => {
            let took = started.elapsed();
            let status = read_answer(&mut conn).await.map(|a| a.status);
            (Some(took), status)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_senders_are_cut_off_after_the_client_read_timeout() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(
        &[("rec", rec.addr)],
        probes().limits(Limits {
            client_read_timeout_ms: Some(500),
            ..Limits::default()
        }),
    )
    .await;
    // Half a body, then nothing.
    let mut half = format!(
        "POST /charge HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    )
    .into_bytes();
    half.extend_from_slice(&BODY.as_bytes()[..BODY.len() / 2]);
    let (took, status) = stall(proxy.listen, &half, Duration::from_secs(4)).await;
    eprintln!("half a body: cut off after {took:?}, answer {status:?}");
    let took = took.expect("a client that sent half a body and stalled was not cut off in 4 s");
    assert!(
        took >= Duration::from_millis(400),
        "cut off too early: {took:?}"
    );
    assert!(matches!(status, None | Some(408) | Some(400)), "{status:?}");
    assert!(
        rec.requests_to("/charge").is_empty(),
        "an unfinished request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_after_the_client_read_timeout() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(
        &[("rec", rec.addr)],
        probes().limits(Limits {
            client_read_timeout_ms: Some(500),
            ..Limits::default()
        }),
    )
    .await;
    // A byte every 200 ms: no single read waits 500 ms, but the whole body has to arrive
    // within the limit ("a client must send its whole body within this time").
    let trickle = tokio::spawn(trickle_body(proxy.listen, Duration::from_millis(200)));
    let took = tokio::time::timeout(Duration::from_secs(4), trickle).await;
    eprintln!("a trickled body: cut off after {took:?}");
    assert!(
        took.is_ok(),
        "a client that trickled its body a byte at a time was not cut off in 4 s"
    );
    assert!(
        rec.requests_to("/charge").is_empty(),
        "an unfinished request was forwarded"
    );
}

/// Send a `/charge` body a byte at a time, `every` apart; how long until the proxy closed
/// the connection or answered.
async fn trickle_body(addr: SocketAddr, every: Duration) -> Duration {
    let mut conn = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /charge HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        BODY.len()
    );
    conn.write_all(head.as_bytes()).await.expect("write");
    let started = Instant::now();
    let mut peek = [0u8; 1];
    for byte in BODY.as_bytes() {
        if conn.write_all(&[*byte]).await.is_err() {
            break;
        }
        if let Ok(Ok(_)) = tokio::time::timeout(every, conn.peek(&mut peek)).await {
            break;
        }
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_the_concurrency_cap_get_503_at_once() {
    let rec = recorder("rec", Duration::from_millis(1500)).await;
    let proxy = Arc::new(
        Proxy::start(
            &[("rec", rec.addr)],
            probes().limits(Limits {
                max_concurrent_requests: Some(2),
                ..Limits::default()
            }),
        )
        .await,
    );
    let held: Vec<_> = (0..2)
        .map(|i| {
            let proxy = Arc::clone(&proxy);
            tokio::spawn(async move { proxy.charge(&format!("held-{i}"), 1.0, 60.0).await })
        })
        .collect();
    let busy = wait_until(Duration::from_secs(2), || async {
        rec.requests_to("/charge").len() == 2
    })
    .await;
    assert!(
        busy.is_some(),
        "the two requests did not reach the substation"
    );
    let t = Instant::now();
    let a = proxy.charge("third", 1.0, 60.0).await;
    let took = t.elapsed();
    assert_eq!(a.status, 503, "{:?}", a.body);
    assert!(
        took < Duration::from_millis(1000),
        "the refusal waited {took:?}"
    );
    for h in held {
        assert_eq!(h.await.expect("task").status, 201);
    }
    assert_eq!(proxy.charge("fourth", 1.0, 60.0).await.status, 201);
    assert_eq!(
        rec.requests_to("/charge").len(),
        3,
        "the refused request was forwarded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_stripped_and_the_client_is_named() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(&[("rec", rec.addr)], probes()).await;
    let request = raw_charge(
        "/charge",
        "x",
        &[
            "connection: keep-alive, x-secret-hop",
            "x-secret-hop: 1",
            "keep-alive: timeout=5",
            "te: trailers",
            "trailer: x-checksum",
            "proxy-authorization: Basic Zm9vOmJhcg==",
            "proxy-connection: keep-alive",
            "x-forwarded-for: 203.0.113.7",
            "idempotency-key: k-1",
            "x-end-to-end: kept",
        ],
        BODY,
    );
    let a = raw_request(proxy.listen, &request, Duration::from_secs(5)).await;
    assert_eq!(a.map(|a| a.status), Some(201));
    let upgrade = raw_charge(
        "/charge",
        "x",
        &["connection: upgrade", "upgrade: websocket", "x-second: 1"],
        BODY,
    );
    let b = raw_request(proxy.listen, &upgrade, Duration::from_secs(5)).await;
    eprintln!("upgrade request: {:?}", b.map(|b| b.status));
    let seen = rec.requests_to("/charge");
    assert!(!seen.is_empty());
    for req in &seen {
        for name in [
            "x-secret-hop",
            "keep-alive",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
            "proxy-connection",
        ] {
            assert!(
                req.header(name).is_none(),
                "{name} was forwarded: {:?}",
                req.headers
            );
        }
        if let Some(c) = req.header("connection") {
            let c = c.to_ascii_lowercase();
            assert!(
                !c.contains("x-secret-hop") && !c.contains("upgrade"),
                "connection: {c}"
            );
        }
    }
    let first = &seen[0];
    // The client is not a trusted proxy: its X-Forwarded-For is replaced, not extended.
    assert_eq!(first.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(first.header("idempotency-key"), Some("k-1"));
    assert_eq!(first.header("x-end-to-end"), Some("kept"));
    if let Some(second) = seen.get(1) {
        assert_eq!(second.header("x-forwarded-for"), Some("127.0.0.1"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_s_headers_reach_the_client_in_order_but_its_hop_by_hop_ones() {
    let double = Double::start(|req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("d", 1, 1, 0.0, 1e6));
        }
        Reply::new(
            201,
            format!(r#"{{"session_id":"d-{TOKEN}","substation":"d","power_kw":1,"load_kw":0,"capacity_kw":1000000}}"#),
        )
        .header("X-Note", "first")
        .header("x-substation-load", report_header(1, 1, 0.0, 1e6))
        .header("x-note", "second")
        .header("keep-alive", "timeout=5")
        .header("set-cookie", "a=1")
        .header("set-cookie", "b=2")
        .header("x-single", "only")
    })
    .await;
    let proxy = Proxy::start(&[("d", double.addr)], probes()).await;
    let answer = raw_request(
        proxy.listen,
        &raw_charge("/charge", "x", &[], BODY),
        Duration::from_secs(5),
    )
    .await
    .expect("an answer");
    assert_eq!(answer.status, 201, "{answer:?}");
    let values = |name: &str| -> Vec<&str> {
        answer
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    };
    assert_eq!(values("x-note"), ["first", "second"], "{answer:?}");
    assert_eq!(values("set-cookie"), ["a=1", "b=2"], "{answer:?}");
    assert_eq!(values("x-single"), ["only"]);
    assert_eq!(values("x-substation-load").len(), 1);
    assert!(values("keep-alive").is_empty(), "{answer:?}");
    assert_eq!(answer.header("x-gridlb-substation"), Some("d"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_on_the_wire_never_takes_the_proxy_down() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let inputs: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n".to_vec(),
        b"POST /charge HTTP/1.1\r\ncontent-length: -1\r\n\r\n".to_vec(),
        b"POST /charge HTTP/1.1\r\ncontent-length: 5\r\ncontent-length: 7\r\n\r\nabcde".to_vec(),
        b"POST /charge HTTP/9.9\r\n\r\n".to_vec(),
        b"POST /charge HTTP/1.1\r\nx-charge-kw: NaN\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        b"POST /charge HTTP/1.1\r\nx-charge-kw: 1e309\r\ncontent-length: 2\r\n\r\n{}".to_vec(),
        b"POST /charge HTTP/1.1\r\ncontent-length: 14\r\n\r\n{\"power_kw\":[]".to_vec(),
        format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(70_000)).into_bytes(),
        b"DELETE /charge/---- HTTP/1.1\r\n\r\n".to_vec(),
        b"DELETE /charge/%00%ff-0123456789abcdef0123456789abcdef HTTP/1.1\r\n\r\n".to_vec(),
    ];
    for (i, input) in inputs.iter().enumerate() {
        let a = raw_request(proxy.listen, input, Duration::from_secs(3)).await;
        let status = a.map(|a| a.status).unwrap_or(0);
        assert!(
            status == 0 || (400..500).contains(&status),
            "input {i} got {status}"
        );
        assert!(
            proxy.is_running(),
            "input {i} killed gridlb:\n{}",
            proxy.log()
        );
    }
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(&[b'x'; 100_000]).await.ok();
    let mut sink = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), conn.read_to_end(&mut sink)).await;
    assert!(proxy.is_running());
    assert_eq!(proxy.charge("ev", 1.0, 60.0).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunked_bodies_are_client_errors() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(&[("rec", rec.addr)], probes()).await;
    let cases: [(&str, &[u8]); 2] = [
        (
            "bad chunk size",
            b"POST /charge HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        ),
        (
            "chunk size overflows",
            b"POST /charge HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
        ),
    ];
    for (what, input) in cases {
        let a = raw_request(proxy.listen, input, Duration::from_secs(3)).await;
        let status = a.map(|a| a.status).unwrap_or(0);
        assert!(
            status == 0 || (400..500).contains(&status),
            "{what}: the client's error was answered {status}"
        );
    }
    assert!(rec.requests_to("/charge").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_smuggled_request_never_reaches_a_substation() {
    let rec = recorder("rec", Duration::ZERO).await;
    let proxy = Proxy::start(&[("rec", rec.addr)], probes()).await;
    let smuggled = "GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n";
    // Both framings: transfer-encoding wins (RFC 9112, 6.3), so what follows the last chunk
    // is a second request to the proxy, never part of the first one's body.
    let body = format!("{:x}\r\n{BODY}\r\n0\r\n\r\n{smuggled}", BODY.len());
    let request = format!(
        "POST /charge HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\ntransfer-encoding: chunked\r\n\r\n{body}"
    );
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    conn.write_all(request.as_bytes()).await.expect("write");
    let first = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut conn))
        .await
        .ok()
        .flatten();
    eprintln!("smuggling attempt answered {:?}", first.map(|a| a.status));
    // A smuggled request would arrive within this time; its absence cannot be polled.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = rec.seen.lock().expect("not poisoned").clone();
    for req in &seen {
        assert!(
            req.path() == "/load" || req.path() == "/charge",
            "{} {} reached the substation",
            req.method,
            req.target
        );
        assert!(
            req.header("content-length").is_none() || req.header("transfer-encoding").is_none(),
            "forwarded with both framings: {:?}",
            req.headers
        );
        assert!(
            !String::from_utf8_lossy(&req.body).contains("GET /metrics"),
            "the smuggled request rode in a body"
        );
    }
}
