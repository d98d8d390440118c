//! Observability end to end: the real `gridlb` binary in front of in-process substations, and
//! the values of its `/metrics` page after known events (sessions, refusals by the proxy and
//! by a substation, reloads, a substation going away), plus the status page it serves.
//! Prometheus, the alert rules and the dashboard are checked against a live stack by
//! `scripts/check-stack`.

mod common;

use common::{Proxy, book_direct, entry, with_probe};
use gridlb_test_support::config::{GridlbConfig, Probe};
use gridlb_test_support::launch::substation;
use gridlb_test_support::prom::value as series;
use gridlb_test_support::wait::wait_every;
use std::cell::RefCell;
use std::time::Duration;

fn fast_probes() -> GridlbConfig {
    with_probe(Probe::every(100, 80).unhealthy_after(2).healthy_after(1))
}
/// Probes rare enough that a test can act between two of them.
fn slow_probes() -> GridlbConfig {
    with_probe(Probe::every(5000, 1000))
}

fn value(page: &str, name: &str) -> f64 {
    series(page, name).unwrap_or_else(|| panic!("{name} is not on the page:\n{page}"))
}

/// Poll `/metrics` until `done` holds (at most 5 s); returns the last page.
async fn metrics_until(proxy: &Proxy, done: impl Fn(&str) -> bool) -> String {
    let last = RefCell::new(String::new());
    wait_every(
        Duration::from_millis(50),
        Duration::from_secs(5),
        || async {
            let page = proxy.metrics().await;
            let held = done(&page);
            *last.borrow_mut() = page;
            held
        },
    )
    .await;
    last.into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_sessions_and_refusals_by_substation_and_by_the_proxy() {
    let subs = [
        substation("big", 1000.0, 1.0).await,
        substation("small", 100.0, 1.0).await,
    ];
    let proxy = Proxy::start(
        &[("big", subs[0].addr), ("small", subs[1].addr)],
        slow_probes(),
    )
    .await;

    // Behind the proxy's back `big` fills up, so the proxy (which still sees it empty)
    // sends it the next session, `big` refuses, and the proxy retries on `small`.
    assert_eq!(book_direct(subs[0].addr, 995.0).await.status, 201);
    let answer = proxy.charge("ev-1", 50.0, 3600.0).await;
    assert_eq!(answer.status, 201, "{:?}", answer.body);
    assert_eq!(answer.header("x-gridlb-substation"), Some("small"));
    // `small` takes one more 50 kW session; then the grid is full as the proxy sees it.
    assert_eq!(proxy.charge("ev-2", 50.0, 3600.0).await.status, 201);
    let full = proxy.charge("ev-3", 50.0, 3600.0).await;
    assert_eq!(full.status, 503, "{:?}", full.body);

    // A request is counted in its logging phase, just after its answer went out.
    let page = metrics_until(&proxy, |page| {
        series(
            page,
            "gridlb_request_duration_seconds_count{route=\"charge\"}",
        ) == Some(3.0)
    })
    .await;
    let expect = [
        (
            "gridlb_requests_total{status=\"201\",substation=\"small\"}",
            2.0,
        ),
        (
            "gridlb_requests_total{status=\"503\",substation=\"none\"}",
            1.0,
        ),
        ("gridlb_substation_refusals_total{substation=\"big\"}", 1.0),
        (
            "gridlb_substation_refusals_total{substation=\"small\"}",
            0.0,
        ),
        ("gridlb_retries_total{reason=\"refused\"}", 1.0),
        ("gridlb_retries_total{reason=\"connect\"}", 0.0),
        ("gridlb_admissions_refused_total{reason=\"grid_full\"}", 1.0),
        (
            "gridlb_admissions_refused_total{reason=\"all_refused\"}",
            0.0,
        ),
        (
            "gridlb_request_duration_seconds_count{route=\"charge\"}",
            3.0,
        ),
        // The answers' headers told the proxy each substation's load.
        ("gridlb_substation_load_kw{substation=\"big\"}", 995.0),
        ("gridlb_substation_load_kw{substation=\"small\"}", 100.0),
        ("gridlb_substation_capacity_kw{substation=\"big\"}", 1000.0),
        ("gridlb_substation_capacity_kw{substation=\"small\"}", 100.0),
        ("gridlb_substation_utilization{substation=\"small\"}", 1.0),
        ("gridlb_substation_utilization{substation=\"big\"}", 0.995),
        ("gridlb_substation_in_flight_kw{substation=\"small\"}", 0.0),
        ("gridlb_substation_healthy{substation=\"big\"}", 1.0),
        ("gridlb_substation_draining{substation=\"big\"}", 0.0),
        // Known label values exist before anything happened.
        (
            "gridlb_probe_failures_total{reason=\"timeout\",substation=\"small\"}",
            0.0,
        ),
        (
            "gridlb_reports_rejected_total{reason=\"bad_load\",source=\"header\",substation=\"big\"}",
            0.0,
        ),
        ("gridlb_config_reloads_total{result=\"failure\"}", 0.0),
        ("gridlb_config_last_reload_successful", 1.0),
    ];
    for (name, want) in expect {
        let got = value(&page, name);
        assert!((got - want).abs() < 1e-9, "{name} = {got}, expected {want}");
    }
    assert!(
        value(
            &page,
            "gridlb_probe_duration_seconds_count{substation=\"big\"}"
        ) >= 1.0
    );
    assert!(
        value(
            &page,
            "gridlb_substation_report_age_seconds{substation=\"small\"}"
        ) < 5.0
    );
    let status = proxy.status().await;
    assert_eq!(entry(&status, "small")["sessions_routed"], 2);

    // The substations count the same sessions from their side.
    let own = |addr| async move {
        let a = common::client()
            .request(addr, "GET", "/metrics", &[], b"")
            .await
            .expect("substation metrics");
        String::from_utf8_lossy(&a.body).into_owned()
    };
    let big = own(subs[0].addr).await;
    assert_eq!(
        value(&big, "substation_sessions_total{result=\"refused\"}"),
        1.0
    );
    assert_eq!(
        value(&big, "substation_sessions_total{result=\"accepted\"}"),
        1.0
    );
    let small = own(subs[1].addr).await;
    assert_eq!(
        value(&small, "substation_sessions_total{result=\"accepted\"}"),
        2.0
    );
    assert_eq!(value(&small, "substation_utilization"), 1.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reloads_are_counted_and_a_removed_substation_leaves_no_series() {
    let subs = [
        substation("s1", 500.0, 1.0).await,
        substation("s2", 500.0, 1.0).await,
        substation("s3", 500.0, 1.0).await,
    ];
    let all = [
        ("s1", subs[0].addr),
        ("s2", subs[1].addr),
        ("s3", subs[2].addr),
    ];
    let proxy = Proxy::start(&all, fast_probes()).await;
    for i in 0..6 {
        assert_eq!(
            proxy.charge(&format!("ev-{i}"), 11.0, 3600.0).await.status,
            201
        );
    }
    let before = proxy.metrics().await;
    assert!(before.contains("substation=\"s3\""));
    let started_ok = value(
        &before,
        "gridlb_config_last_reload_success_timestamp_seconds",
    );

    proxy.write_config("listen: [this is not a config\n");
    assert_eq!(proxy.admin_post("/reload").await.status, 422);
    let page = proxy.metrics().await;
    // A file watcher may have seen the bad file too: at least the POST counted.
    assert!(value(&page, "gridlb_config_reloads_total{result=\"failure\"}") >= 1.0);
    assert_eq!(value(&page, "gridlb_config_last_reload_successful"), 0.0);
    assert_eq!(
        value(&page, "gridlb_config_last_reload_success_timestamp_seconds"),
        started_ok
    );
    assert!(
        page.contains("substation=\"s3\""),
        "a failed reload changes nothing"
    );

    // The reload timestamp is gridlb's wall clock: let it move past `started_ok`.
    tokio::time::sleep(Duration::from_millis(20)).await;
    proxy.write_config(&proxy.yaml(&all[..2], fast_probes()));
    assert_eq!(proxy.admin_post("/reload").await.status, 200);
    let page = metrics_until(&proxy, |p| !p.contains("substation=\"s3\"")).await;
    assert!(value(&page, "gridlb_config_reloads_total{result=\"success\"}") >= 1.0);
    assert_eq!(value(&page, "gridlb_config_last_reload_successful"), 1.0);
    assert!(value(&page, "gridlb_config_last_reload_success_timestamp_seconds") > started_ok);
    assert!(
        !page.contains("substation=\"s3\""),
        "series of the removed substation remain:\n{page}"
    );
    for name in ["s1", "s2"] {
        let capacity = format!("gridlb_substation_capacity_kw{{substation=\"{name}\"}}");
        assert_eq!(value(&page, &capacity), 500.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_substation_that_stops_answering_is_reported_down_with_the_reason() {
    let [up, down] = [
        substation("up", 100.0, 1.0).await,
        substation("down", 100.0, 1.0).await,
    ];
    let proxy = Proxy::start(&[("up", up.addr), ("down", down.addr)], fast_probes()).await;
    down.shutdown().await;
    let page = metrics_until(&proxy, |p| {
        series(p, "gridlb_substation_healthy{substation=\"down\"}") == Some(0.0)
    })
    .await;
    assert_eq!(
        value(&page, "gridlb_substation_healthy{substation=\"down\"}"),
        0.0
    );
    assert_eq!(
        value(&page, "gridlb_substation_healthy{substation=\"up\"}"),
        1.0
    );
    assert!(
        value(
            &page,
            "gridlb_probe_failures_total{reason=\"connect\",substation=\"down\"}"
        ) >= 2.0,
        "two failed probes take a substation out"
    );
    assert_eq!(
        value(
            &page,
            "gridlb_probe_failures_total{reason=\"connect\",substation=\"up\"}"
        ),
        0.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_status_page_is_one_self_contained_html_page_fed_by_status() {
    let s1 = substation("s1", 100.0, 1.0).await;
    let proxy = Proxy::start(&[("s1", s1.addr)], fast_probes()).await;
    let page = proxy.admin_get("/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("<script>") && html.contains("fetch(\"status\""));
    for external in ["http://", "https://", "src=\"//", "href=\"//", "@import"] {
        assert!(!html.contains(external), "the page loads {external}…");
    }
    // Every field the page reads is in /status.
    let status = proxy.status().await;
    let sub = entry(&status, "s1");
    for field in [
        "name",
        "healthy",
        "draining",
        "utilization",
        "sessions_routed",
    ] {
        assert!(!sub[field].is_null(), "{field} missing in {sub}");
    }
    for field in ["load_kw", "capacity_kw", "age_s"] {
        assert!(sub["report"][field].is_number(), "report.{field} in {sub}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_holds_a_sample_a_second_per_substation_and_counts_refusals() {
    let subs = [
        substation("s1", 100.0, 1.0).await,
        substation("s2", 200.0, 1.0).await,
    ];
    let proxy = Proxy::start(&[("s1", subs[0].addr), ("s2", subs[1].addr)], fast_probes()).await;
    assert_eq!(proxy.charge("ev-1", 50.0, 3600.0).await.status, 201);
    for i in 0..3 {
        let refused = proxy.charge(&format!("big-{i}"), 500.0, 3600.0).await;
        assert_eq!(refused.status, 503);
    }
    let history = RefCell::new(serde_json::Value::Null);
    wait_every(
        Duration::from_millis(200),
        Duration::from_secs(6),
        || async {
            let h = proxy.admin_get("/history").await.json();
            let refusals: u64 = h["refusals"]
                .as_array()
                .map_or(0, |r| r.iter().filter_map(|v| v.as_u64()).sum());
            let done = h["time"].as_array().is_some_and(|t| t.len() >= 2) && refusals >= 3;
            *history.borrow_mut() = h;
            done
        },
    )
    .await;
    let h = history.into_inner();
    let samples = h["time"].as_array().unwrap().len();
    assert!(
        samples >= 2 && samples <= h["capacity"].as_u64().unwrap() as usize,
        "{h}"
    );
    assert_eq!(h["capacity"], 600);
    assert_eq!(h["interval_s"], 1.0);
    let refusals: Vec<u64> = serde_json::from_value(h["refusals"].clone()).unwrap();
    assert_eq!(refusals.len(), samples);
    assert_eq!(refusals.iter().sum::<u64>(), 3, "{h}");
    let names: Vec<&str> = h["substations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["s1", "s2"]);
    for series in h["substations"].as_array().unwrap() {
        let u = series["utilization"].as_array().unwrap();
        assert_eq!(u.len(), samples);
        assert!(u.last().unwrap().is_number(), "{series}");
    }
    // s1 or s2 holds the 50 kW session: some utilisation above zero in the last sample.
    let last: f64 = h["substations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["utilization"]
                .as_array()
                .unwrap()
                .last()
                .unwrap()
                .as_f64()
                .unwrap()
        })
        .sum();
    assert!(last > 0.2, "{h}");
}
