//! End-to-end routing: the real `gridlb` binary in front of in-process substations.

mod common;

use common::{Proxy, book_direct, book_direct_for, entry, with_probe};
use gridlb_test_support::config::{GridlbConfig, Probe};
use gridlb_test_support::launch::substation;
use gridlb_test_support::prom::metric;
use gridlb_test_support::wait::wait_until;
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fast_probes() -> GridlbConfig {
    with_probe(Probe::every(100, 80).unhealthy_after(2).healthy_after(1))
}

fn utilisation(status: &serde_json::Value, name: &str) -> f64 {
    entry(status, name)["utilization"]
        .as_f64()
        .expect("a reported substation has a utilisation")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_spread_by_utilisation_over_unequal_substations() {
    let subs = [
        substation("s1", 100.0, 1.0).await,
        substation("s2", 300.0, 1.0).await,
        substation("s3", 600.0, 1.0).await,
    ];
    let proxy = Proxy::start(
        &[
            ("s1", subs[0].addr),
            ("s2", subs[1].addr),
            ("s3", subs[2].addr),
        ],
        fast_probes(),
    )
    .await;
    let mut taken: BTreeMap<String, u32> = BTreeMap::new();
    for i in 0..80 {
        let answer = proxy.charge(&format!("ev-{i}"), 11.0, 3600.0).await;
        assert_eq!(answer.status, 201, "session {i}: {:?}", answer.body);
        *taken
            .entry(
                answer
                    .header("x-gridlb-substation")
                    .expect("names the substation")
                    .to_string(),
            )
            .or_default() += 1;
    }
    // 880 kW over 1000 kW of capacity: each substation ends near 88%.
    let loads: Vec<f64> = subs
        .iter()
        .map(|s| s.state.report().load_kw / s.state.report().capacity_kw)
        .collect();
    let spread = loads.iter().cloned().fold(f64::MIN, f64::max)
        - loads.iter().cloned().fold(f64::MAX, f64::min);
    assert!(
        spread <= 0.11 + 1e-9,
        "utilisations {loads:?} (sessions {taken:?}) differ by more than one 11 kW session at 100 kW"
    );
    assert!(
        taken["s3"] > taken["s2"] && taken["s2"] > taken["s1"],
        "sessions {taken:?} should follow capacity"
    );
    let status = proxy.status().await;
    assert!(
        (utilisation(&status, "s3") - loads[2]).abs() < 1e-9,
        "the proxy's view matches the substation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substation_loaded_behind_the_proxys_back_is_avoided_after_the_next_probe() {
    let subs = [
        substation("a", 100.0, 1.0).await,
        substation("b", 100.0, 1.0).await,
    ];
    let proxy = Proxy::start(&[("a", subs[0].addr), ("b", subs[1].addr)], fast_probes()).await;
    assert_eq!(book_direct(subs[0].addr, 90.0).await.status, 201);
    wait_until(Duration::from_millis(350), || async {
        utilisation(&proxy.status().await, "a") >= 0.9
    })
    .await;
    assert!(
        utilisation(&proxy.status().await, "a") >= 0.9,
        "a probe has seen the direct booking"
    );
    for i in 0..8 {
        let answer = proxy.charge(&format!("ev-{i}"), 1.0, 3600.0).await;
        assert_eq!(
            answer.header("x-gridlb-substation"),
            Some("b"),
            "session {i} went to the loaded substation"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_grid_gets_503_with_retry_after_from_the_proxy_after_every_fitting_session() {
    let subs = [
        substation("s1", 100.0, 1.0).await,
        substation("s2", 300.0, 1.0).await,
    ];
    let proxy = std::sync::Arc::new(
        Proxy::start(&[("s1", subs[0].addr), ("s2", subs[1].addr)], fast_probes()).await,
    );
    // 20 concurrent requests of 50 kW for 400 kW of capacity: exactly 8 fit.
    let answers = futures_join(20, |i| {
        let proxy = std::sync::Arc::clone(&proxy);
        async move { proxy.charge(&format!("ev-{i}"), 50.0, 3600.0).await }
    })
    .await;
    let accepted = answers.iter().filter(|a| a.status == 201).count();
    let refused: Vec<_> = answers.iter().filter(|a| a.status == 503).collect();
    assert_eq!(accepted, 8, "every session that fits is taken");
    assert_eq!(
        refused.len(),
        12,
        "the rest are refused, none fails otherwise"
    );
    for a in &refused {
        let retry_after: u64 = a
            .header("retry-after")
            .expect("Retry-After")
            .parse()
            .expect("whole seconds");
        assert!(retry_after >= 1);
    }
    assert_eq!(subs[0].state.report().load_kw, 100.0);
    assert_eq!(subs[1].state.report().load_kw, 300.0);

    // Once the proxy knows the grid is full, it answers itself and sends nothing upstream.
    let before = substation_refusals(&subs).await;
    let answer = proxy.charge("late", 1.0, 60.0).await;
    assert_eq!(answer.status, 503);
    assert!(answer.header("retry-after").is_some());
    assert_eq!(
        substation_refusals(&subs).await,
        before,
        "a substation saw the refused request"
    );
    assert!(
        metric(
            &proxy.metrics().await,
            "gridlb_admissions_refused_total{reason=\"grid_full\"}"
        ) >= 1.0
    );
}

async fn substation_refusals(subs: &[substation::Server]) -> f64 {
    let mut total = 0.0;
    for s in subs {
        let page = common::client()
            .request(s.addr, "GET", "/metrics", &[], b"")
            .await
            .expect("metrics");
        total += metric(
            &String::from_utf8_lossy(&page.body),
            "substation_sessions_total{result=\"refused\"}",
        );
    }
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn substation_killed_between_probes_costs_no_client_an_error() {
    let mut subs = vec![
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
        substation("s3", 1000.0, 1.0).await,
    ];
    let lines: Vec<(&str, std::net::SocketAddr)> = vec![
        ("s1", subs[0].addr),
        ("s2", subs[1].addr),
        ("s3", subs[2].addr),
    ];
    // Slow probes: the kill lands between two of them.
    let proxy = Proxy::start(
        &lines,
        with_probe(Probe::every(5000, 500).unhealthy_after(1).healthy_after(1)),
    )
    .await;
    for i in 0..15 {
        assert_eq!(
            proxy.charge(&format!("warm-{i}"), 1.0, 3600.0).await.status,
            201
        );
    }
    subs.remove(0).shutdown().await;
    for i in 0..30 {
        let answer = proxy.charge(&format!("ev-{i}"), 1.0, 3600.0).await;
        assert_eq!(
            answer.status,
            201,
            "session {i} failed after the kill: {:?}\n{}",
            answer.body,
            proxy.log()
        );
        assert_ne!(answer.header("x-gridlb-substation"), Some("s1"));
    }
    let page = proxy.metrics().await;
    assert!(
        metric(&page, "gridlb_retries_total{reason=\"connect\"}")
            + metric(&page, "gridlb_retries_total{reason=\"stale_connection\"}")
            >= 1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_report_with_a_lower_seq_changes_nothing() {
    // A test double: /load says seq 10 and 0 kW; every /charge answer carries seq 5 and 90 kW.
    let fake = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = fake.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = fake.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 4096];
                let Ok(n) = conn.read(&mut buf).await else {
                    return;
                };
                let head = String::from_utf8_lossy(&buf[..n]);
                let answer = if head.starts_with("GET /load") {
                    let body = r#"{"substation":"f","epoch":1,"seq":10,"load_kw":0.0,"capacity_kw":100.0,"active_sessions":0}"#;
                    format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                } else {
                    let body = r#"{"session_id":"f-0123456789abcdef0123456789abcdef","substation":"f","power_kw":1,"load_kw":90,"capacity_kw":100}"#;
                    format!(
                        "HTTP/1.1 201 Created\r\nx-substation-load: epoch=1;seq=5;load_kw=90.0;capacity_kw=100.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    )
                };
                let _ = conn.write_all(answer.as_bytes()).await;
            });
        }
    });
    let proxy = Proxy::start(&[("f", addr)], with_probe(Probe::every(60000, 500))).await;
    assert_eq!(proxy.charge("ev", 1.0, 60.0).await.status, 201);
    let status = proxy.status().await;
    let report = &entry(&status, "f")["report"];
    assert_eq!(
        report["seq"], 10,
        "the late report replaced a newer one: {status}"
    );
    assert_eq!(report["load_kw"], 0.0);
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "gridlb_reports_stale_total{source=\"header\",substation=\"f\"}"
        ),
        1.0
    );
}

/// Run `n` futures concurrently and collect their outputs in order.
async fn futures_join<F, Fut, T>(n: usize, make: F) -> Vec<T>
where
    F: Fn(usize) -> Fut,
    Fut: std::future::Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    let handles: Vec<_> = (0..n).map(|i| tokio::spawn(make(i))).collect();
    let mut out = Vec::with_capacity(n);
    for h in handles {
        out.push(h.await.expect("task finished"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grid_that_looks_full_on_old_reports_is_probed_again_before_refusing() {
    let s = substation("s1", 100.0, 1.0).await;
    // Probes a minute apart: whatever the proxy knows between them comes from answers.
    let proxy = Proxy::start(&[("s1", s.addr)], with_probe(Probe::every(60000, 500))).await;
    // A session booked behind the proxy's back fills the substation for one second; the
    // proxy learns it from the refusal of a request it then sends.
    assert_eq!(book_direct_for(s.addr, 100.0, 1.0).await.status, 201);
    assert_eq!(proxy.charge("early", 50.0, 60.0).await.status, 503);
    assert_eq!(
        entry(&proxy.status().await, "s1")["report"]["load_kw"],
        100.0
    );
    let ended = wait_until(Duration::from_secs(5), || async {
        s.state.report().load_kw == 0.0
    })
    .await;
    assert!(ended.is_some(), "the session of one second never ended");
    // The session has ended; the proxy's last report still says full.
    let answer = proxy.charge("late", 50.0, 60.0).await;
    assert_eq!(
        answer.status,
        201,
        "refused on a stale report: {:?}",
        answer.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kept_alive_connection_is_served_whichever_thread_takes_it() {
    // gridlb runs two threads here. A connection whose task landed on the thread that did not
    // accept it moves to that thread's runtime once it is kept alive, after its second answer
    // (`proxy/src/home.rs`): with 32 connections both kinds are served, those that move and
    // those that stay, the odds against that being 2^31 to one. Each connection carries three
    // bookings (the third after the move) and must stay open after every one.
    let s = substation("s1", 1000.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s.addr)], fast_probes()).await;
    let listen = proxy.listen;
    let conns = futures_join(32, move |i| async move {
        let mut conn = tokio::net::TcpStream::connect(listen)
            .await
            .expect("connect");
        let mut statuses = Vec::new();
        for j in 0..3 {
            let body = format!(r#"{{"vehicle_id":"ka-{i}-{j}","power_kw":1.0,"duration_s":60}}"#);
            let request = gridlb_test_support::http::raw_charge("/charge", "x", &[], &body);
            conn.write_all(&request)
                .await
                .expect("the connection is still open");
            let answer = tokio::time::timeout(
                Duration::from_secs(10),
                gridlb_test_support::http::read_answer(&mut conn),
            )
            .await
            .expect("answered in time")
            .expect("a whole answer");
            let connection = answer.header("connection").map(str::to_ascii_lowercase);
            assert_ne!(connection.as_deref(), Some("close"), "kept open");
            statuses.push(answer.status);
        }
        statuses
    })
    .await;
    assert!(conns.iter().all(|c| c == &[201, 201, 201]), "{conns:?}");
    assert_eq!(s.state.report().active_sessions, 96);
}
