//! What a hostile client or a lying substation can no longer do (docs/reliability.md, "Attacks
//! and what gridlb does"): walk session ids, claim a capacity the operator did not give it,
//! forge where a request comes from, smuggle a power the body contradicts, keep an HTTP/1.0
//! connection open, reuse another request's key, learn internal addresses from an error,
//! drop the admin token by a reload, hand a client another substation's session id, hold a
//! connection with a header sent a byte at a time, or get a megabyte header past the limit.

mod common;

use common::{Proxy, with_probe};
use gridlb_test_support::config::{GridlbConfig, Limits, Probe, Upstream};
use gridlb_test_support::http::{
    Double, Reply, raw_charge, raw_request, report_header, report_json,
};
use gridlb_test_support::launch::{Launch, substation};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const BODY: &str = r#"{"vehicle_id":"ev-1","power_kw":1.0,"duration_s":60}"#;

fn probes() -> GridlbConfig {
    with_probe(Probe::every(100, 80))
}

/// A substation double that reports `capacity_kw` and books everything it is sent.
async fn lying(capacity_kw: f64, delay: Duration) -> Double {
    Double::start(move |req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("d", 1, 1, 0.0, capacity_kw));
        }
        Reply::new(
            201,
            r#"{"session_id":"d-0123456789abcdef0123456789abcdef","substation":"d","power_kw":1,"load_kw":0,"capacity_kw":1}"#,
        )
        .header("x-substation-load", report_header(1, 1, 0.0, capacity_kw))
        .after(delay)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_ids_cannot_be_walked_or_guessed() {
    let s = substation("s1", 10_000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    for v in 0..20 {
        let a = proxy.charge(&format!("victim-{v}"), 1.0, 3600.0).await;
        assert_eq!(a.status, 201);
    }
    let own = proxy.charge("attacker", 1.0, 3600.0).await.json()["session_id"]
        .as_str()
        .expect("an id")
        .to_string();
    let (name, token) = own.rsplit_once('-').expect("name-token");
    assert_eq!(name, "s1");
    let token = u128::from_str_radix(token, 16).expect("hex");
    // Neighbours of the attacker's own id, and ids of the old counter form.
    let mut guesses: Vec<String> = (1..=200u128)
        .flat_map(|k| [token.wrapping_add(k), token.wrapping_sub(k)])
        .map(|t| format!("s1-{t:032x}"))
        .collect();
    let epoch = s.state.report().epoch;
    guesses.extend((0..50).map(|n| format!("s1-{epoch}-{n}")));
    let client = common::client();
    for id in &guesses {
        let a = client
            .request(proxy.listen, "DELETE", &format!("/charge/{id}"), &[], b"")
            .await
            .expect("an answer");
        assert_eq!(a.status, 404, "{id} cancelled something");
    }
    assert_eq!(
        s.state.report().active_sessions,
        21,
        "every session is still held"
    );
    let mine = client
        .request(proxy.listen, "DELETE", &format!("/charge/{own}"), &[], b"")
        .await
        .expect("an answer");
    assert_eq!(
        mine.status, 200,
        "the holder of an id can cancel its session"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substation_cannot_claim_more_capacity_than_configured() {
    let d = lying(1e12, Duration::ZERO).await;
    let mut config = probes().substation("d", d.addr);
    config.substations[0].capacity_kw = Some(100.0);
    let proxy = Proxy::start(&[], config).await;
    let big = proxy.charge("big", 150.0, 60.0).await;
    assert_eq!(big.status, 503, "150 kW does not fit 100 kW configured");
    assert!(
        d.requests_to("/charge").is_empty(),
        "nothing was sent upstream"
    );
    assert_eq!(proxy.charge("small", 60.0, 60.0).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_for_is_believed_only_from_a_trusted_proxy() {
    let d = lying(1e6, Duration::ZERO).await;
    let forged = ["x-forwarded-for: 198.51.100.1"];
    let untrusted = Proxy::start(&[("d", d.addr)], probes()).await;
    let a = raw_request(
        untrusted.listen,
        &raw_charge("/charge", "x", &forged, BODY),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.map(|a| a.status), Some(201));
    let trusted = Proxy::start(&[("d", d.addr)], probes().trusted_proxy("127.0.0.0/8")).await;
    let a = raw_request(
        trusted.listen,
        &raw_charge("/charge", "x", &forged, BODY),
        Duration::from_secs(5),
    )
    .await;
    assert_eq!(a.map(|a| a.status), Some(201));
    let seen: Vec<Option<String>> = d
        .requests_to("/charge")
        .iter()
        .map(|r| r.header("x-forwarded-for").map(str::to_string))
        .collect();
    assert_eq!(
        seen,
        vec![
            Some("127.0.0.1".to_string()),
            Some("198.51.100.1, 127.0.0.1".to_string())
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_host_and_a_power_the_body_contradicts_are_refused() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let no_host = format!(
        "POST /charge HTTP/1.1\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let a = raw_request(proxy.listen, no_host.as_bytes(), Duration::from_secs(5)).await;
    assert_eq!(a.map(|a| a.status), Some(400));
    let big = r#"{"vehicle_id":"ev-9","power_kw":150.0,"duration_s":60}"#;
    let lie = raw_charge("/charge", "x", &["x-charge-kw: 1"], big);
    let a = raw_request(proxy.listen, &lie, Duration::from_secs(5))
        .await
        .expect("an answer");
    assert_eq!(a.status, 400);
    assert!(a.text().contains("x-charge-kw"), "{}", a.text());
    let agree = raw_charge("/charge", "x", &["x-charge-kw: 150"], big);
    let a = raw_request(proxy.listen, &agree, Duration::from_secs(5)).await;
    assert_eq!(a.map(|a| a.status), Some(201));
    assert_eq!(
        s.state.report().active_sessions,
        1,
        "only the honest request booked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_without_keep_alive_gets_its_connection_closed() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    for (version, extra, closes) in [
        ("HTTP/1.0", "", true),
        ("HTTP/1.1", "connection: close\r\n", true),
        ("HTTP/1.0", "connection: keep-alive\r\n", false),
        ("HTTP/1.1", "", false),
    ] {
        let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
        let request = format!(
            "POST /charge {version}\r\nhost: x\r\n{extra}content-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        conn.write_all(request.as_bytes()).await.expect("write");
        let answer = gridlb_test_support::http::read_answer(&mut conn)
            .await
            .expect("an answer");
        assert_eq!(answer.status, 201, "{version} {extra:?}");
        let mut rest = [0u8; 1];
        let after = tokio::time::timeout(Duration::from_millis(500), conn.read(&mut rest)).await;
        let closed = matches!(after, Ok(Ok(0)) | Ok(Err(_)));
        assert_eq!(closed, closes, "{version} {extra:?}: closed {closed}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_with_another_body_gets_422_and_leaks_no_session() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let key = [("idempotency-key", "order-1")];
    let first = proxy.charge_with("ev-1", 11.0, 600.0, &key).await;
    assert_eq!(first.status, 201);
    let other = proxy.charge_with("ev-2", 22.0, 600.0, &key).await;
    assert_eq!(other.status, 422);
    let first_id = first.json()["session_id"]
        .as_str()
        .expect("an id")
        .to_string();
    assert!(!String::from_utf8_lossy(&other.body).contains(&first_id));
    assert_eq!(s.state.report().active_sessions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_error_answer_names_no_internal_address() {
    let d = lying(1e6, Duration::from_secs(2)).await;
    let config = probes().upstream(Upstream {
        connect_timeout_ms: None,
        read_timeout_ms: Some(300),
    });
    let proxy = Proxy::start(&[("d", d.addr)], config).await;
    let a = proxy.charge("slow", 1.0, 60.0).await;
    assert_eq!(a.status, 502);
    let body = String::from_utf8_lossy(&a.body).into_owned();
    assert!(body.contains("substation d"), "{body}");
    assert!(
        !body.contains(&d.addr.to_string()) && !body.contains("127.0.0.1"),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_cannot_drop_the_admin_token_and_bearer_is_case_insensitive() {
    let s = substation("s1", 1000.0, 1.0).await;
    let var = format!("GRIDLB_HARDENING_TOKEN_{}", std::process::id());
    let token = "t0k-e9";
    let launch = Launch {
        env: vec![(var.clone(), token.to_string())],
        log_level: None,
    };
    let with_token = probes().admin_token_env(&var);
    let proxy = Proxy::start_with(&[("s1", s.addr)], with_token, &launch).await;
    let lower = format!("bearer {token}");
    let ok = proxy
        .admin_request("POST", "/reload", &[("authorization", lower.as_str())])
        .await;
    assert_eq!(ok.status, 200, "{:?}", ok.json());
    proxy.rewrite(&common::config(&[("s1", s.addr)], &probes()));
    let refused = proxy
        .admin_request("POST", "/reload", &[("authorization", lower.as_str())])
        .await;
    assert_eq!(refused.status, 422);
    assert_eq!(refused.json()["path"], "admin.token_env");
    let anonymous = proxy.admin_post("/substations/s1/drain").await;
    assert_eq!(
        anonymous.status, 401,
        "the token still guards the admin API"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_whose_answer_is_lost_is_cancelled_not_orphaned() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    let bookings = Arc::new(AtomicUsize::new(0));
    let seen_bookings = Arc::clone(&bookings);
    // Books every request; the first answer comes too late for gridlb, the next at once.
    let d = Double::start(move |req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("d", 1, 1, 0.0, 1e6));
        }
        if req.method == "DELETE" {
            return Reply::new(200, r#"{"freed_kw":1,"load_kw":0}"#);
        }
        let n = seen_bookings.fetch_add(1, SeqCst);
        let delay = if n == 0 { Duration::from_secs(2) } else { Duration::ZERO };
        Reply::new(
            201,
            r#"{"session_id":"d-0123456789abcdef0123456789abcdef","substation":"d","power_kw":1,"load_kw":1,"capacity_kw":1000000}"#,
        )
        .header("x-substation-load", report_header(1, 2, 1.0, 1e6))
        .after(delay)
    })
    .await;
    let config = probes().upstream(Upstream {
        connect_timeout_ms: None,
        read_timeout_ms: Some(300),
    });
    let proxy = Proxy::start(&[("d", d.addr)], config).await;
    let a = proxy.charge("lost", 1.0, 60.0).await;
    assert_eq!(a.status, 502, "the client is told its booking failed");
    let settled = gridlb_test_support::wait::wait_until(Duration::from_secs(10), || async {
        !d.requests_to("/charge/d-0123456789abcdef0123456789abcdef")
            .is_empty()
    })
    .await;
    assert!(settled.is_some(), "the lost booking was not cancelled");
    let posts = d.requests_to("/charge");
    assert_eq!(posts.len(), 2, "asked once more, with the same key");
    let keys: Vec<_> = posts.iter().map(|p| p.header("idempotency-key")).collect();
    assert!(
        keys[0].is_some_and(|k| k.starts_with("gridlb-")),
        "{keys:?}"
    );
    assert_eq!(keys[0], keys[1]);
    let page = proxy.metrics().await;
    assert_eq!(
        gridlb_test_support::prom::metric(&page, "gridlb_orphans_total{result=\"cancelled\"}"),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_booking_answered_with_another_substation_s_session_id_is_a_502_and_cancelled() {
    // "d" books, and answers with an id of substation "victim" (or one naming it in Location).
    const FOREIGN: &str = "victim-0123456789abcdef0123456789abcdef";
    const OWN: &str = "d-0123456789abcdef0123456789abcdef";
    let d = Double::start(|req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("d", 1, 1, 0.0, 1e6));
        }
        if req.method == "DELETE" {
            return Reply::new(200, r#"{"freed_kw":1,"load_kw":0}"#);
        }
        let (id, location) = match req.header("x-case") {
            Some("location") => (OWN, format!("/charge/{FOREIGN}")),
            _ => (FOREIGN, format!("/charge/{FOREIGN}")),
        };
        Reply::new(
            201,
            format!(
                r#"{{"session_id":"{id}","substation":"d","power_kw":1,"load_kw":1,"capacity_kw":1000000}}"#
            ),
        )
        .header("location", location)
        .header("x-substation-load", report_header(1, 2, 1.0, 1e6))
    })
    .await;
    let proxy = Proxy::start(&[("d", d.addr)], probes()).await;
    for case in ["body", "location"] {
        let raw = raw_charge("/charge", "gridlb", &[&format!("x-case: {case}")], BODY);
        let a = raw_request(proxy.listen, &raw, Duration::from_secs(5))
            .await
            .expect("an answer");
        assert_eq!(a.status, 502, "{case}: {}", a.text());
        assert!(
            !a.text().contains(FOREIGN),
            "{case}: the id is not passed on"
        );
    }
    // Each booking is cancelled at the substation that made it, under the id it gave.
    let cancelled = gridlb_test_support::wait::wait_until(Duration::from_secs(10), || async {
        let deletes = d.requests_to(&format!("/charge/{FOREIGN}")).len()
            + d.requests_to(&format!("/charge/{OWN}")).len();
        deletes >= 2
    })
    .await;
    assert!(
        cancelled.is_some(),
        "the misnamed bookings were not cancelled"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substation_that_refuses_while_reporting_room_is_taken_out_of_the_choice() {
    // Reports itself empty (so least-load always prefers it) and refuses every session.
    let liar = Double::start(|req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("liar", 1, 1, 0.0, 1e6));
        }
        Reply::new(503, r#"{"error":"no"}"#)
            .header("retry-after", "1")
            .header("x-substation-load", report_header(1, 1, 0.0, 1e6))
    })
    .await;
    let honest = substation("honest", 10_000.0, 1.0).await;
    let proxy = Proxy::start(
        &[("liar", liar.addr), ("honest", honest.addr)],
        with_probe(Probe::every(500, 250)),
    )
    .await;
    for i in 0..30 {
        let a = proxy.charge(&format!("ev-{i}"), 1.0, 600.0).await;
        assert_eq!(a.status, 201);
        assert_eq!(a.header("x-gridlb-substation"), Some("honest"));
    }
    let tried = liar.requests_to("/charge").len();
    assert!(
        tried <= 3,
        "the liar was tried {tried} times for 30 sessions"
    );
    let status = proxy.status().await;
    assert!(
        common::entry(&status, "liar")["ejected_for_s"]
            .as_f64()
            .is_some()
    );
    let page = proxy.metrics().await;
    let ejected = gridlb_test_support::prom::metric(
        &page,
        "gridlb_ejections_total{reason=\"refused_with_room\",substation=\"liar\"}",
    );
    assert!(ejected >= 1.0, "{ejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_all_answered_in_order() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let mut conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let mut burst = Vec::new();
    for i in 0..3 {
        let body = format!(r#"{{"vehicle_id":"pipe-{i}","power_kw":1.0,"duration_s":60}}"#);
        burst.extend(raw_charge("/charge", "x", &[], &body));
    }
    burst.extend_from_slice(b"GET /nowhere HTTP/1.1\r\nhost: x\r\n\r\n");
    conn.write_all(&burst).await.expect("one write");
    // Read until four answers have come (or nothing more does), then list their statuses.
    let mut seen = Vec::new();
    let mut chunk = [0u8; 4096];
    while count(&seen, b"HTTP/1.1 ") < 4 {
        match tokio::time::timeout(Duration::from_secs(5), conn.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&chunk[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&seen);
    let statuses: Vec<u16> = text
        .match_indices("HTTP/1.1 ")
        .filter_map(|(i, _)| text[i + 9..i + 12].parse().ok())
        .collect();
    assert_eq!(statuses, vec![201, 201, 201, 404]);
    assert_eq!(s.state.report().active_sessions, 3);
}

fn count(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .filter(|w| *w == needle)
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substation_slow_to_book_loses_its_share() {
    // Answers /load at once (and looks empty), /charge only after 600 ms.
    let slow = Double::start(|req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("slow", 1, 1, 0.0, 1e6));
        }
        Reply::new(
            201,
            r#"{"session_id":"slow-0123456789abcdef0123456789abcdef","substation":"slow","power_kw":1,"load_kw":0,"capacity_kw":1000000}"#,
        )
        .header("x-substation-load", report_header(1, 1, 0.0, 1e6))
        .after(Duration::from_millis(600))
    })
    .await;
    let honest = substation("honest", 10_000.0, 1.0).await;
    let proxy = Proxy::start(
        &[("slow", slow.addr), ("honest", honest.addr)],
        with_probe(Probe::every(1000, 500)),
    )
    .await;
    for i in 0..20 {
        assert_eq!(
            proxy.charge(&format!("ev-{i}"), 1.0, 600.0).await.status,
            201
        );
    }
    let to_slow = slow.requests_to("/charge").len();
    assert!(
        to_slow <= 3,
        "the slow substation took {to_slow} of 20 sessions"
    );
    let page = proxy.metrics().await;
    let ejected = gridlb_test_support::prom::metric(
        &page,
        "gridlb_ejections_total{reason=\"slow\",substation=\"slow\"}",
    );
    assert!(ejected >= 1.0, "{ejected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_beyond_the_configured_bounds_are_refused_before_anything_is_booked() {
    use gridlb_test_support::config::Limits;
    let s = substation("s1", 1000.0, 1.0).await;
    let config = probes().limits(Limits {
        max_session_kw: Some(200.0),
        max_duration_s: Some(3600.0),
        ..Limits::default()
    });
    let proxy = Proxy::start(&[("s1", s.addr)], config).await;
    for (kw, duration, field) in [
        (1.0, 1e300, "duration_s"),
        (1.0, 7200.0, "duration_s"),
        (300.0, 60.0, "power_kw"),
    ] {
        let a = proxy.charge("ev", kw, duration).await;
        assert_eq!(a.status, 400, "{kw} kW for {duration} s");
        assert_eq!(a.json()["field"], field);
    }
    assert_eq!(proxy.charge("ev", 50.0, 1800.0).await.status, 201);
    assert_eq!(s.state.report().active_sessions, 1);
    // The substation enforces the protocol's own bound whoever asks.
    let direct = common::book_direct_for(s.addr, 1.0, 1e300).await;
    assert_eq!(direct.status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_header_sent_a_byte_at_a_time_is_cut_while_other_clients_are_served() {
    let s = substation("s1", 1000.0, 1.0).await;
    let limits = Limits {
        client_header_timeout_ms: Some(500),
        ..Limits::default()
    };
    let proxy = Proxy::start(&[("s1", s.addr)], probes().limits(limits)).await;
    let started = std::time::Instant::now();
    let conn = TcpStream::connect(proxy.listen).await.expect("connect");
    let (mut from, mut to) = conn.into_split();
    let slow = tokio::spawn(async move {
        let head = format!(
            "POST /charge HTTP/1.1\r\nhost: x\r\nx-pad: {}\r\n",
            "a".repeat(200)
        );
        for b in head.bytes() {
            if to.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Another client is served meanwhile.
    assert_eq!(proxy.charge("quick", 1.0, 60.0).await.status, 201);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), from.read_to_end(&mut answer)).await;
    let took = started.elapsed();
    assert!(read.is_ok(), "the slow connection was not closed");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    // 500 ms, with room for a loaded machine (the header would take 22 s to send).
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    slow.abort();
    assert_eq!(proxy.charge("after", 1.0, 60.0).await.status, 201);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_megabyte_header_gets_431_and_one_just_under_the_limit_is_served() {
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], probes()).await;
    let huge = raw_charge(
        "/charge",
        "x",
        &[&format!("x-pad: {}", "a".repeat(1 << 20))],
        BODY,
    );
    let answer = raw_request(proxy.listen, &huge, Duration::from_secs(20))
        .await
        .expect("an answer to a megabyte header");
    assert_eq!(answer.status, 431, "{}", answer.text());
    assert_eq!(
        answer.json()["error"],
        "request headers are larger than 32768 bytes"
    );
    // 32 KiB is the default limit; this header block is a little under it.
    let under = raw_charge(
        "/charge",
        "x",
        &[&format!("x-pad: {}", "a".repeat(32_000))],
        BODY,
    );
    let answer = raw_request(proxy.listen, &under, Duration::from_secs(10))
        .await
        .expect("an answer");
    assert_eq!(answer.status, 201, "{}", answer.text());
    assert_eq!(s.state.report().active_sessions, 1);
}
