//! Tests of routing and answers, calling [`handle`] without a socket.

use super::*;
use crate::metrics::parse_text;
use gridlb_protocol::{ChargeAccepted, HeaderReport};
use std::sync::Arc;

const EV: &str = r#"{"vehicle_id":"ev-1","power_kw":11.0,"duration_s":1800}"#;

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn error(&self) -> ErrorBody {
        self.json()
    }

    fn header(&self, name: &str) -> &str {
        self.headers.get(name).unwrap().to_str().unwrap()
    }

    fn load(&self) -> HeaderReport {
        HeaderReport::parse(self.header(LOAD_HEADER)).unwrap()
    }
}

async fn send(state: &Substation, method: &str, path: &str, body: &str) -> Reply {
    send_with(state, method, path, body, &[]).await
}

async fn send_with(
    state: &Substation,
    method: &str,
    path: &str,
    body: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut request = Request::builder().method(method).uri(path);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let answer = handle(state, request).await;
    let (parts, body) = answer.into_parts();
    Reply {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

fn charge(power_kw: f64, duration_s: f64) -> String {
    gridlb_test_support::http::charge_body("ev", power_kw, duration_s)
}

#[tokio::test]
async fn an_accepted_charge_is_201_with_the_session_and_the_load_after_booking() {
    let s = Substation::new("s1", 500.0, 1.0);
    let reply = send(&s, "POST", "/charge", EV).await;
    assert_eq!(reply.status, StatusCode::CREATED);
    let accepted: ChargeAccepted = reply.json();
    assert_eq!(accepted.substation, "s1");
    assert_eq!((accepted.power_kw, accepted.load_kw), (11.0, 11.0));
    assert_eq!(accepted.capacity_kw, 500.0);
    assert_eq!(
        gridlb_protocol::SessionId::owner(&accepted.session_id),
        Some("s1")
    );
    let load = reply.load();
    assert_eq!((load.epoch, load.seq, load.load_kw), (s.epoch(), 1, 11.0));
    assert_eq!(
        reply.header("location"),
        format!("/charge/{}", accepted.session_id)
    );
}

#[tokio::test]
async fn an_accepted_charge_states_when_it_ends_in_real_seconds() {
    // 1800 simulated seconds at a time scale of 60: 30 real seconds.
    let s = Substation::new("s1", 500.0, 60.0);
    let reply = send(&s, "POST", "/charge", EV).await;
    let accepted: ChargeAccepted = reply.json();
    let remaining = accepted.remaining_s.unwrap();
    assert!((29.0..=30.0).contains(&remaining), "{remaining}");
    let ends_in = accepted.ends_at.unwrap() - gridlb_protocol::unix_now();
    assert!((28.0..=30.5).contains(&ends_in), "{ends_in}");
    let header: f64 = reply
        .header(gridlb_protocol::SESSION_REMAINING_HEADER)
        .parse()
        .unwrap();
    assert!((header - remaining).abs() < 0.01);
}

#[tokio::test]
async fn every_charge_answer_carries_an_orca_report_that_parses_by_the_rule() {
    let s = Substation::new("s1", 500.0, 1.0);
    send(&s, "POST", "/charge", EV).await;
    let reply = send(&s, "POST", "/charge", EV).await;
    let orca = gridlb_protocol::OrcaLoadReport::parse(reply.header(ORCA_HEADER)).unwrap();
    assert_eq!(orca.application_utilization, 22.0 / 500.0);
    assert_eq!(orca.named("load_kw"), Some(22.0));
    assert_eq!(orca.named("capacity_kw"), Some(500.0));
    assert_eq!(orca.rps_fractional, 2.0 / RPS_WINDOW_S);
    let refused = send(&s, "DELETE", "/charge/s1-unknown", "").await;
    assert!(refused.headers.contains_key(ORCA_HEADER));
}

const RPS_WINDOW_S: f64 = crate::grid::RPS_WINDOW.as_secs_f64();

#[tokio::test(start_paused = true)]
async fn a_charge_that_does_not_fit_is_503_with_retry_after() {
    let s = Substation::new("s1", 30.0, 2.0);
    assert_eq!(
        send(&s, "POST", "/charge", &charge(20.0, 100.0))
            .await
            .status,
        StatusCode::CREATED
    );
    tokio::time::advance(Duration::from_secs(10)).await;
    let reply = send(&s, "POST", "/charge", &charge(11.0, 100.0)).await;
    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    // 100 simulated s at time scale 2 = 50 real s, 10 of which have passed.
    assert_eq!(reply.header("retry-after"), "40");
    assert_eq!(reply.load().load_kw, 20.0);
    assert!(
        reply.error().error.contains("10 kW free"),
        "{}",
        reply.error().error
    );
    tokio::time::advance(Duration::from_secs(40)).await;
    assert_eq!(
        send(&s, "POST", "/charge", &charge(11.0, 100.0))
            .await
            .status,
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_bodies_are_400_naming_the_field() {
    let s = Substation::new("s1", 100.0, 1.0);
    let cases = [
        ("not json", None),
        ("{", None),
        ("[1, 2]", None),
        (r#"{"vehicle_id":"ev","duration_s":5}"#, Some("power_kw")),
        (
            r#"{"vehicle_id":"ev","power_kw":-1,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":0,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":"NaN","duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":1e999,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":5,"duration_s":0}"#,
            Some("duration_s"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":5,"duration_s":-3}"#,
            Some("duration_s"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":100.5,"duration_s":5}"#,
            Some("power_kw"),
        ),
    ];
    for (body, field) in cases {
        let reply = send(&s, "POST", "/charge", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(
            reply.error().field.as_deref(),
            field,
            "{body}: {:?}",
            reply.error()
        );
        assert_eq!(reply.load().seq, 0, "{body}");
    }
    let text = String::from_utf8(s.metrics().encode().unwrap()).unwrap();
    assert_eq!(
        parse_text(&text)["substation_sessions_total{result=\"invalid\"}"],
        cases.len() as f64
    );
}

#[tokio::test]
async fn a_body_over_16_kib_is_413_by_length_header_or_by_reading() {
    let s = Substation::new("s1", 100.0, 1.0);
    let big = format!("{}{}", " ".repeat(17 * 1024), EV);
    let declared = big.len().to_string();
    let reply = send_with(
        &s,
        "POST",
        "/charge",
        &big,
        &[("content-length", &declared)],
    )
    .await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.headers.contains_key(LOAD_HEADER));
    // Without a Content-Length, the Limited reader stops at 16 KiB.
    let reply = send(&s, "POST", "/charge", &big).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(s.report().active_sessions, 0);
}

#[tokio::test]
async fn delete_frees_the_power_and_an_unknown_id_is_404() {
    let s = Substation::new("s1", 100.0, 1.0);
    let accepted: ChargeAccepted = send(&s, "POST", "/charge", EV).await.json();
    let path = format!("/charge/{}", accepted.session_id);
    let reply = send(&s, "DELETE", &path, "").await;
    assert_eq!(reply.status, StatusCode::OK);
    let body: serde_json::Value = reply.json();
    assert_eq!(body["session_id"], accepted.session_id.as_str());
    assert_eq!(
        (body["freed_kw"].as_f64(), body["load_kw"].as_f64()),
        (Some(11.0), Some(0.0))
    );
    assert_eq!((reply.load().seq, reply.load().load_kw), (2, 0.0));
    let again = send(&s, "DELETE", &path, "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND);
    assert_eq!(again.load().seq, 2);
    assert_eq!(
        send(&s, "DELETE", "/charge/nope", "").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn an_idempotent_replay_returns_the_first_answer_and_books_once() {
    let s = Substation::new("s1", 100.0, 1.0);
    let key = [(IDEMPOTENCY_HEADER, "order-77")];
    let first = send_with(&s, "POST", "/charge", EV, &key).await;
    send(&s, "POST", "/charge", EV).await;
    let second = send_with(&s, "POST", "/charge", EV, &key).await;
    assert_eq!(second.status, StatusCode::CREATED);
    assert_eq!(second.body, first.body);
    assert_eq!((first.load().seq, second.load().seq), (1, 2));
    assert_eq!(second.load().load_kw, 22.0);
    assert_eq!(s.report().active_sessions, 2);
    let long_key = "k".repeat(MAX_IDEMPOTENCY_KEY + 1);
    let bad = send_with(
        &s,
        "POST",
        "/charge",
        EV,
        &[(IDEMPOTENCY_HEADER, &long_key)],
    )
    .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
    assert_eq!(bad.error().field.as_deref(), Some(IDEMPOTENCY_HEADER));
}

#[tokio::test]
async fn a_key_with_a_space_is_refused_as_the_proxy_would() {
    let s = Substation::new("s1", 100.0, 1.0);
    let spaced = send_with(
        &s,
        "POST",
        "/charge",
        EV,
        &[(IDEMPOTENCY_HEADER, "order 77")],
    )
    .await;
    assert_eq!(spaced.status, StatusCode::BAD_REQUEST);
    assert!(
        spaced.error().error.contains("no space"),
        "{}",
        spaced.error().error
    );
    assert_eq!(s.report().active_sessions, 0);
}

#[tokio::test]
async fn unknown_paths_are_404_and_wrong_methods_405_with_allow() {
    let s = Substation::new("s1", 100.0, 1.0);
    for path in ["/", "/charges", "/charge/", "/charge/a/b", "/load/x"] {
        let reply = send(&s, "GET", path, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert!(reply.error().error.contains(path));
    }
    let cases = [
        ("GET", "/charge", "POST"),
        ("PUT", "/charge/s1-1-1", "DELETE"),
        ("POST", "/load", "GET, HEAD"),
        ("DELETE", "/metrics", "GET, HEAD"),
        ("POST", "/healthz", "GET, HEAD"),
    ];
    for (method, path, allow) in cases {
        let reply = send(&s, method, path, "").await;
        assert_eq!(
            reply.status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
        assert_eq!(reply.header("allow"), allow);
        assert_eq!(
            reply.headers.contains_key(LOAD_HEADER),
            path.starts_with("/charge")
        );
    }
}

#[tokio::test]
async fn load_healthz_and_metrics_answer_200() {
    let s = Substation::new("s1", 100.0, 1.0);
    send(&s, "POST", "/charge", EV).await;
    let load: LoadReport = send(&s, "GET", "/load", "").await.json();
    assert_eq!(
        (load.substation.as_str(), load.seq, load.load_kw),
        ("s1", 1, 11.0)
    );
    assert_eq!(
        (load.capacity_kw, load.active_sessions, load.epoch),
        (100.0, 1, s.epoch())
    );
    let health = send(&s, "GET", "/healthz", "").await;
    assert_eq!(
        (health.status, &health.body[..]),
        (StatusCode::OK, &b"ok"[..])
    );
    let reply = send(&s, "GET", "/metrics", "").await;
    assert_eq!(reply.header("content-type"), "text/plain; version=0.0.4");
    let samples = parse_text(std::str::from_utf8(&reply.body).unwrap());
    assert_eq!(samples["substation_load_kw"], 11.0);
    assert_eq!(samples["substation_utilization"], 0.11);
    assert_eq!(
        samples["substation_sessions_total{result=\"accepted\"}"],
        1.0
    );
    let series = "substation_requests_total{route=\"/charge\",status=\"201\"}";
    assert_eq!(samples[series], 1.0);
    assert_eq!(
        samples["substation_requests_total{route=\"/load\",status=\"200\"}"],
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn concurrent_bookings_never_exceed_the_capacity() {
    let s = Substation::new("s1", 500.0, 1.0);
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let s = Arc::clone(&s);
            tokio::spawn(async move { send(&s, "POST", "/charge", EV).await.status })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        match task.await.unwrap() {
            StatusCode::CREATED => accepted += 1,
            status => assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE),
        }
    }
    assert_eq!(accepted, 45); // 45 × 11 = 495 ≤ 500 < 46 × 11
    let report = s.report();
    assert_eq!(
        (report.load_kw, report.seq, report.active_sessions),
        (495.0, 45, 45)
    );
}

#[tokio::test]
async fn a_key_reused_with_another_request_gets_422_and_books_nothing() {
    let s = Substation::new("s1", 100.0, 1.0);
    let key = [(IDEMPOTENCY_HEADER, "order-78")];
    let first = send_with(&s, "POST", "/charge", EV, &key).await;
    assert_eq!(first.status, StatusCode::CREATED);
    let other = r#"{"vehicle_id":"ev-2","power_kw":50.0,"duration_s":600}"#;
    let reused = send_with(&s, "POST", "/charge", other, &key).await;
    assert_eq!(reused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reused.error().field.as_deref(), Some(IDEMPOTENCY_HEADER));
    assert!(
        !String::from_utf8_lossy(&reused.body).contains("session_id"),
        "the first client's session id must not leak"
    );
    assert_eq!(s.report().active_sessions, 1);
    assert_eq!(reused.load().load_kw, 11.0);
}

#[tokio::test]
async fn a_valid_request_id_is_echoed_and_an_invalid_one_is_not() {
    let s = Substation::new("s1", 500.0, 1.0);
    let reply = send_with(&s, "POST", "/charge", EV, &[(REQUEST_ID_HEADER, "req-7")]).await;
    assert_eq!(reply.header(REQUEST_ID_HEADER), "req-7");
    let reply = send_with(&s, "GET", "/nope", "", &[(REQUEST_ID_HEADER, "a b")]).await;
    assert!(reply.headers.get(REQUEST_ID_HEADER).is_none());
}

#[tokio::test]
async fn sessions_over_the_configured_bounds_are_400_and_book_nothing() {
    let s = Substation::new("s1", 1000.0, 1.0);
    s.set_session_bounds(50.0, 3600.0);
    for (body, field) in [
        (charge(51.0, 60.0), "power_kw"),
        (charge(11.0, 3601.0), "duration_s"),
    ] {
        let reply = send(&s, "POST", "/charge", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(reply.error().field.as_deref(), Some(field), "{body}");
    }
    let at_the_bounds = send(&s, "POST", "/charge", &charge(50.0, 3600.0)).await;
    assert_eq!(at_the_bounds.status, StatusCode::CREATED);
    assert_eq!(
        at_the_bounds.load().load_kw,
        50.0,
        "only the one within bounds"
    );
}
