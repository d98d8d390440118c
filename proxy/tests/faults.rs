//! Faults end to end: the real `gridlb` binary in front of in-process substations and test
//! doubles that die, stall, lie, replay old reports or restart. What each test shows is
//! listed in docs/reliability.md.

mod common;

use common::{Proxy, entry, with_probe};
use gridlb_test_support::config::{Probe, Upstream};
use gridlb_test_support::http::{Double, Reply, SlowLink, report_header, report_json};
use gridlb_test_support::launch::{Launch, substation};
use gridlb_test_support::prom::sum as metric_sum;
use gridlb_test_support::wait::wait_until;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Generous margin for timing bounds on a loaded two-core machine.
const SLACK: Duration = Duration::from_millis(1500);

/// One request of a steady load: when it started and ended, its status and substation.
#[derive(Debug, Clone)]
struct Outcome {
    started: Instant,
    status: u16,
    substation: Option<String>,
    /// Shown (through `Debug`) when a request fails.
    #[allow(dead_code)]
    body: String,
}

/// `workers` clients sending 1 kW sessions of an hour until `stop` (at most 30 s each).
fn steady_load(
    proxy: Arc<Proxy>,
    workers: usize,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Outcome>> {
    tokio::spawn(async move {
        let mut tasks = Vec::new();
        for w in 0..workers {
            let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop));
            tasks.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(SeqCst) && Instant::now() < deadline {
                    let started = Instant::now();
                    let a = proxy
                        .charge(&format!("w{w}-{}", out.len()), 1.0, 3600.0)
                        .await;
                    out.push(Outcome {
                        started,
                        status: a.status,
                        substation: a.header("x-gridlb-substation").map(str::to_string),
                        body: String::from_utf8_lossy(&a.body).into_owned(),
                    });
                    // Paces the load: a steady stream, not a flood.
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                out
            }));
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.expect("worker"));
        }
        all
    })
}

async fn field(proxy: &Proxy, name: &str, key: &str) -> serde_json::Value {
    entry(&proxy.status().await, name)[key].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_substation_fails_no_request_that_never_reached_it_and_returns_with_a_new_epoch() {
    let probes = with_probe(Probe::every(200, 150).unhealthy_after(2).healthy_after(1));
    let (interval, timeout, unhealthy_after) = (200u64, 150u64, 2u64);
    let mut subs = vec![
        substation("s1", 100_000.0, 1.0).await,
        substation("s2", 100_000.0, 1.0).await,
        substation("s3", 100_000.0, 1.0).await,
    ];
    let addr1 = subs[0].addr;
    let proxy = Arc::new(
        Proxy::start(
            &[("s1", addr1), ("s2", subs[1].addr), ("s3", subs[2].addr)],
            probes,
        )
        .await,
    );
    let old_epoch = subs[0].state.report().epoch;
    let stop = Arc::new(AtomicBool::new(false));
    let workers = 3;
    let load = steady_load(Arc::clone(&proxy), workers, Arc::clone(&stop));
    // Real time under load before the kill, so that requests are in flight at s1.
    tokio::time::sleep(Duration::from_millis(400)).await;

    // Hard kill: the port closes and every connection drops, like a killed process.
    subs.remove(0).abort().await;
    let killed = Instant::now();
    let bound = Duration::from_millis(unhealthy_after * interval + timeout);
    let took = wait_until(bound + SLACK, || async {
        let st = proxy.status().await;
        entry(&st, "s1")["healthy"] == false && entry(&st, "s1")["ready"] == false
    })
    .await
    .unwrap_or_else(|| panic!("s1 not marked unhealthy:\n{}", proxy.log()));
    eprintln!("s1 marked unhealthy {took:?} after the kill (bound {bound:?} + slack)");
    let page = proxy.metrics().await;
    assert_eq!(
        metric_sum(&page, "gridlb_substation_healthy", &[("substation", "s1")]),
        0.0
    );
    assert_eq!(
        metric_sum(&page, "gridlb_substation_healthy", &[("substation", "s2")]),
        1.0
    );
    // Real time under load with s1 down, before it comes back.
    tokio::time::sleep(Duration::from_millis(300)).await;

    // It comes back on the same address: a new process, a new epoch, an empty ledger.
    let s1 = substation::Server::start(substation::Config {
        id: "s1".into(),
        listen: addr1,
        capacity_kw: 100_000.0,
        time_scale: 1.0,
        orca_form: Default::default(),
        max_session_kw: gridlb_protocol::MAX_SESSION_KW,
        max_duration_s: gridlb_protocol::MAX_DURATION_S,
    })
    .await
    .expect("the same port binds again");
    let new_epoch = s1.state.report().epoch;
    assert_ne!(new_epoch, old_epoch);
    let took = wait_until(Duration::from_millis(interval) + SLACK, || async {
        let st = proxy.status().await;
        let e = entry(&st, "s1");
        e["healthy"] == true && e["ready"] == true && e["report"]["epoch"] == new_epoch
    })
    .await
    .unwrap_or_else(|| panic!("s1 not readmitted:\n{}", proxy.log()));
    eprintln!("s1 readmitted {took:?} after its restart");
    assert_eq!(
        metric_sum(
            &proxy.metrics().await,
            "gridlb_substation_healthy",
            &[("substation", "s1")]
        ),
        1.0
    );
    wait_until(Duration::from_millis(400), || async {
        s1.state.report().active_sessions > 0
    })
    .await;
    stop.store(true, SeqCst);
    let outcomes = load.await.expect("load");

    // Only a request that was at s1 when it died may fail; everything sent after the kill
    // was retried elsewhere or went elsewhere.
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.status != 201).collect();
    let late_failures: Vec<&&Outcome> = failed.iter().filter(|o| o.started >= killed).collect();
    assert!(
        late_failures.is_empty(),
        "requests sent after the kill failed: {late_failures:?}"
    );
    assert!(
        failed.len() <= workers,
        "more failures than requests in flight: {failed:?}"
    );
    // s1 was down from the kill to its restart: whatever it took since is the new one's.
    let after_restart = outcomes
        .iter()
        .filter(|o| o.started > killed && o.substation.as_deref() == Some("s1"))
        .count();
    assert!(
        after_restart > 0,
        "the restarted s1 (empty, so the least loaded) took no session"
    );
    eprintln!(
        "{} sessions, {} failed (in flight at s1 when it died), {after_restart} to the new s1",
        outcomes.len(),
        failed.len()
    );

    // The proxy's view is the new process's, from its own reports.
    let truth = s1.state.report();
    let settled = wait_until(Duration::from_millis(interval) + SLACK, || async {
        let r = field(&proxy, "s1", "report").await;
        r["epoch"] == truth.epoch && r["seq"] == truth.seq
    })
    .await;
    assert!(settled.is_some(), "the view of s1 never matched it");
    let r = field(&proxy, "s1", "report").await;
    assert_eq!(r["load_kw"].as_f64(), Some(truth.load_kw));
    // (A header report does not carry the session count; a probe report does.)
    if let Some(n) = r["active_sessions"].as_u64() {
        assert_eq!(n, truth.active_sessions);
    }
    assert_eq!(truth.active_sessions as usize, after_restart);
}

/// A fake substation that answers quickly until `slow` is set, then after five seconds.
async fn stalling_substation(name: &'static str, slow: Arc<AtomicBool>) -> Double {
    Double::start(move |req| {
        let reply = if req.path() == "/load" {
            Reply::new(200, report_json(name, 1, 1, 0.0, 1_000_000.0))
        } else {
            Reply::new(
                201,
                format!(r#"{{"session_id":"{name}-0123456789abcdef0123456789abcdef","substation":"{name}","power_kw":1,"load_kw":1,"capacity_kw":1000000}}"#),
            )
            .header("x-substation-load", report_header(1, 1, 0.0, 1_000_000.0))
        };
        if slow.load(SeqCst) {
            reply.after(Duration::from_secs(5))
        } else {
            reply
        }
    })
    .await
}

async fn latencies(proxy: &Proxy, n: usize, tag: &str) -> Vec<Duration> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        let a = proxy.charge(&format!("{tag}-{i}"), 1.0, 3600.0).await;
        out.push(t.elapsed());
        assert_eq!(a.status, 201, "{tag} {i}: {:?}", a.body);
        assert_ne!(a.header("x-gridlb-substation"), Some("slow"));
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_substation_is_taken_out_and_does_not_slow_the_others() {
    let (interval, timeout, unhealthy_after) = (600u64, 500u64, 2u64);
    let settings = with_probe(
        Probe::every(interval, timeout)
            .unhealthy_after(unhealthy_after)
            .healthy_after(1),
    )
    .upstream(Upstream {
        connect_timeout_ms: Some(500),
        read_timeout_ms: Some(400),
    });
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
    ];
    let slow = Arc::new(AtomicBool::new(false));
    let double = stalling_substation("slow", Arc::clone(&slow)).await;
    let healthy = [("s1", s[0].addr), ("s2", s[1].addr)];
    let proxy = Proxy::start(&healthy, settings.clone()).await;
    let without = latencies(&proxy, 30, "before").await;

    // Add the fake; once it has reported (empty, so the most attractive), it stalls.
    let all = [healthy[0], healthy[1], ("slow", double.addr)];
    proxy.write_config(&proxy.yaml(&all, settings));
    assert_eq!(proxy.reload().await.status, 200);
    wait_until(Duration::from_secs(3), || async {
        field(&proxy, "slow", "report").await.is_object()
    })
    .await
    .expect("the fake reported");
    slow.store(true, SeqCst);
    let stalled_at = Instant::now();

    // A session sent to it now is cut off by upstream.read_timeout_ms (400 ms), not held
    // for the five seconds the fake takes; it may have been booked, so it is not retried.
    let t = Instant::now();
    let a = proxy.charge("unlucky", 1.0, 60.0).await;
    let took = t.elapsed();
    eprintln!(
        "a session sent to the stalled substation: {} after {took:?}",
        a.status
    );
    if a.header("x-gridlb-substation").is_none() {
        assert!(
            matches!(a.status, 502 | 504),
            "status {} {:?}",
            a.status,
            a.body
        );
        assert!(
            took < Duration::from_millis(400) + SLACK,
            "the read timeout did not cut it off: {took:?}"
        );
    } else {
        // Already out of the rotation: the session went to a healthy one.
        assert_eq!(a.status, 201);
        assert!(
            double.requests_to("/charge").is_empty(),
            "a request sent to the slow substation was replayed on another"
        );
    }

    let bound = Duration::from_millis(unhealthy_after * interval + timeout);
    wait_until(bound + SLACK, || async {
        field(&proxy, "slow", "healthy").await == false
    })
    .await
    .unwrap_or_else(|| panic!("the slow substation stayed healthy:\n{}", proxy.log()));
    eprintln!(
        "slow substation out {:?} after it stalled (bound {bound:?})",
        stalled_at.elapsed()
    );
    let page = proxy.metrics().await;
    assert!(
        metric_sum(
            &page,
            "gridlb_probe_failures_total",
            &[("substation", "slow"), ("reason", "timeout")]
        ) >= unhealthy_after as f64
    );
    assert_eq!(
        metric_sum(
            &page,
            "gridlb_substation_healthy",
            &[("substation", "slow")]
        ),
        0.0
    );

    // Its probes keep timing out in the background; the others answer as before.
    let with = latencies(&proxy, 30, "after").await;
    let (p50_without, p50_with) = (without[without.len() / 2], with[with.len() / 2]);
    let max_with = *with.last().expect("samples");
    eprintln!(
        "latency to healthy substations: p50 {p50_without:?} -> {p50_with:?}, max {:?} -> {max_with:?}",
        without.last().expect("samples")
    );
    // Generous on a loaded machine: most requests well within a probe timeout, and none
    // anywhere near what waiting for the slow substation would cost (its five seconds, or
    // the 400 ms read timeout and an error).
    let p90_with = with[with.len() * 9 / 10];
    assert!(
        p90_with < Duration::from_millis(timeout),
        "p90 {p90_with:?} is longer than a probe timeout: {with:?}"
    );
    assert!(
        max_with < Duration::from_secs(5),
        "a request took {max_with:?}: {with:?}"
    );
    assert!(
        p50_with <= p50_without * 4 + Duration::from_millis(25),
        "median latency went from {p50_without:?} to {p50_with:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_probe_reports_are_rejected_by_reason_and_their_substations_get_nothing() {
    let huge = format!(
        r#"{{"substation":"huge","pad":"{}"}}"#,
        "x".repeat(1024 * 1024)
    );
    let cases: Vec<(&'static str, String, &'static str)> = vec![
        ("notjson", "the load is fine, thanks".into(), "malformed"),
        (
            "missing",
            r#"{"substation":"missing","epoch":1,"seq":1,"load_kw":1.0}"#.into(),
            "malformed",
        ),
        (
            "nan",
            r#"{"substation":"nan","epoch":1,"seq":1,"load_kw":NaN,"capacity_kw":100.0,"active_sessions":0}"#.into(),
            "malformed",
        ),
        ("negative", report_json("negative", 1, 1, -5.0, 100.0), "bad_load"),
        (
            "infinite",
            r#"{"substation":"infinite","epoch":1,"seq":1,"load_kw":1e999,"capacity_kw":100.0,"active_sessions":0}"#.into(),
            "malformed",
        ),
        ("zerocap", report_json("zerocap", 1, 1, 0.0, 0.0), "bad_capacity"),
        // Claims to be the good substation: a report for the wrong name is never trusted.
        ("liar", report_json("good", 1, 1, 0.0, 100.0), "wrong_substation"),
        ("huge", huge, "too_large"),
    ];
    let mut doubles = Vec::new();
    for (name, body, _) in &cases {
        let body = body.clone();
        doubles.push(
            Double::start(move |req| {
                if req.path() == "/load" {
                    Reply::new(200, body.clone())
                } else {
                    Reply::new(500, "a hostile substation must get no session")
                }
            })
            .await,
        );
        let _ = name;
    }
    let broken = Double::start(|_| Reply::new(500, "oops")).await;
    let good = substation("good", 10_000.0, 1.0).await;
    let mut subs: Vec<(&str, SocketAddr)> = cases
        .iter()
        .zip(&doubles)
        .map(|((name, _, _), d)| (*name, d.addr))
        .collect();
    subs.push(("broken", broken.addr));
    subs.push(("good", good.addr));
    let proxy = Proxy::start(
        &subs,
        // Timeouts generous enough for a loaded machine: the liars fail on content alone.
        with_probe(Probe::every(250, 200).unhealthy_after(2).healthy_after(1)),
    )
    .await;
    let probed_twice = |page: &str| {
        cases.iter().all(|(name, _, reason)| {
            let labels = [
                ("substation", *name),
                ("source", "probe"),
                ("reason", *reason),
            ];
            metric_sum(page, "gridlb_reports_rejected_total", &labels) >= 2.0
        }) && metric_sum(
            page,
            "gridlb_probe_failures_total",
            &[("substation", "broken"), ("reason", "status")],
        ) >= 2.0
    };
    wait_until(Duration::from_millis(700), || async {
        probed_twice(&proxy.metrics().await)
    })
    .await;

    for i in 0..20 {
        let a = proxy.charge(&format!("ev-{i}"), 5.0, 3600.0).await;
        assert_eq!(a.status, 201, "{:?}", a.body);
        assert_eq!(a.header("x-gridlb-substation"), Some("good"));
    }
    let page = proxy.metrics().await;
    let status = proxy.status().await;
    for ((name, _, reason), double) in cases.iter().zip(&doubles) {
        let rejected = metric_sum(
            &page,
            "gridlb_reports_rejected_total",
            &[
                ("substation", name),
                ("source", "probe"),
                ("reason", reason),
            ],
        );
        assert!(rejected >= 2.0, "{name}: {rejected} rejected as {reason}");
        let failures = metric_sum(
            &page,
            "gridlb_probe_failures_total",
            &[("substation", name), ("reason", "invalid_report")],
        );
        assert!(
            failures >= 2.0,
            "{name}: {failures} invalid_report failures"
        );
        let e = entry(&status, name);
        assert!(e["report"].is_null(), "{name}'s report was kept: {e}");
        assert_eq!(e["healthy"], false, "{name}");
        assert_eq!(e["eligible"], false, "{name}");
        assert!(
            double.requests_to("/charge").is_empty(),
            "{name} got a session"
        );
    }
    assert!(
        metric_sum(
            &page,
            "gridlb_probe_failures_total",
            &[("substation", "broken"), ("reason", "status")]
        ) >= 2.0
    );
    assert_eq!(entry(&status, "good")["report"]["load_kw"], 100.0);
    assert!(proxy.is_running(), "gridlb died:\n{}", proxy.log());
    assert_eq!(proxy.admin_get("/healthz").await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_header_reports_are_rejected_and_never_replace_the_probed_one() {
    // Each answer carries one bad header report; the probe says epoch 1, seq 5, 10 kW.
    let headers: Vec<(Vec<u8>, &'static str)> = vec![
        (
            b"epoch=1;seq=9;load_kw=NaN;capacity_kw=1000.0".to_vec(),
            "bad_load",
        ),
        (
            b"epoch=1;seq=9;load_kw=-5.0;capacity_kw=1000.0".to_vec(),
            "bad_load",
        ),
        (
            b"epoch=1;seq=9;load_kw=inf;capacity_kw=1000.0".to_vec(),
            "bad_load",
        ),
        (
            b"epoch=1;seq=9;load_kw=5.0;capacity_kw=0".to_vec(),
            "bad_capacity",
        ),
        (b"epoch=1;seq=9;load_kw=5.0".to_vec(), "malformed"),
        (b"this is not a report".to_vec(), "malformed"),
        (
            b"epoch=1;seq=9;load_kw=5\xff;capacity_kw=1000.0".to_vec(),
            "malformed",
        ),
        (
            format!(
                "epoch=1;seq=9;load_kw=5.0;capacity_kw=1000.0;pad={}",
                "x".repeat(2000)
            )
            .into_bytes(),
            "too_large",
        ),
    ];
    let n = headers.len();
    let next = Arc::new(AtomicUsize::new(0));
    let (list, counter) = (headers.clone(), Arc::clone(&next));
    let double = Double::start(move |req| {
        if req.path() == "/load" {
            return Reply::new(200, report_json("h", 1, 5, 10.0, 1000.0));
        }
        let i = counter.fetch_add(1, SeqCst);
        let value = match list.get(i) {
            Some((v, _)) => v.clone(),
            // Then a report older than the probed one (seq 4 < 5).
            None => report_header(1, 4, 999.0, 1000.0).into_bytes(),
        };
        Reply::new(
            201,
            r#"{"session_id":"h-0123456789abcdef0123456789abcdef","substation":"h","power_kw":1,"load_kw":10,"capacity_kw":1000}"#,
        )
        .header("x-substation-load", value)
    })
    .await;
    let proxy = Proxy::start(&[("h", double.addr)], with_probe(Probe::every(200, 180))).await;
    for i in 0..n + 1 {
        let a = proxy.charge(&format!("ev-{i}"), 1.0, 60.0).await;
        assert_eq!(a.status, 201, "answer {i}: {:?}", a.body);
    }
    let page = proxy.metrics().await;
    for reason in ["bad_load", "bad_capacity", "malformed", "too_large"] {
        let want = headers.iter().filter(|(_, r)| *r == reason).count() as f64;
        let got = metric_sum(
            &page,
            "gridlb_reports_rejected_total",
            &[
                ("substation", "h"),
                ("source", "header"),
                ("reason", reason),
            ],
        );
        assert_eq!(got, want, "header reports rejected as {reason}");
    }
    assert_eq!(
        metric_sum(
            &page,
            "gridlb_reports_stale_total",
            &[("substation", "h"), ("source", "header")]
        ),
        1.0
    );
    let report = field(&proxy, "h", "report").await;
    assert_eq!(
        (report["epoch"].as_u64(), report["seq"].as_u64()),
        (Some(1), Some(5))
    );
    assert_eq!(report["load_kw"], 10.0);
    assert!(proxy.is_running(), "gridlb died:\n{}", proxy.log());
}

/// Reports of one epoch in a shuffled order: every seq in 1..=n once, none in order.
fn shuffled(n: u64, step: u64) -> Vec<u64> {
    (0..n).map(|i| (i * step) % n + 1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delayed_and_reordered_reports_never_move_the_view_backwards() {
    // Probes and answers each replay the reports of epoch 1 out of order (load = seq, so a
    // mixed-up report would show); from `switch` on they move to epoch 2, still shuffled, and
    // old epoch-1 reports keep arriving in between.
    let probe_order = shuffled(40, 17);
    let header_order = shuffled(40, 23);
    let switch = Arc::new(AtomicBool::new(false));
    let (probes, answers) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (sw, p, h) = (
        Arc::clone(&switch),
        Arc::clone(&probes),
        Arc::clone(&answers),
    );
    let double = Double::start(move |req| {
        let late_epoch = sw.load(SeqCst);
        let (order, counter) = if req.path() == "/load" {
            (&probe_order, &p)
        } else {
            (&header_order, &h)
        };
        let i = counter.fetch_add(1, SeqCst) as usize;
        let seq = order[i % order.len()];
        // After the switch, every third report is a delayed one from epoch 1.
        let epoch = if late_epoch && i % 3 != 0 { 2 } else { 1 };
        let seq = if epoch == 1 { seq + 1000 } else { seq };
        let load = seq as f64;
        if req.path() == "/load" {
            Reply::new(200, report_json("r", epoch, seq, load, 1e6))
        } else {
            Reply::new(
                201,
                r#"{"session_id":"r-0123456789abcdef0123456789abcdef","substation":"r","power_kw":1,"load_kw":1,"capacity_kw":1000000}"#,
            )
            .header("x-substation-load", report_header(epoch, seq, load, 1e6))
        }
    })
    .await;
    let proxy = Arc::new(
        Proxy::start(
            &[("r", double.addr)],
            // The double replays old versions for ever, so the held report is rarely
            // confirmed: let it count for the whole test (its age is not what is tested here).
            with_probe(
                Probe::every(30, 25)
                    .unhealthy_after(100)
                    .max_report_age_ms(60_000),
            ),
        )
        .await,
    );
    let seen: Arc<Mutex<Vec<(u64, u64, f64)>>> = Arc::default();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (proxy, seen, done) = (Arc::clone(&proxy), Arc::clone(&seen), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(SeqCst) {
                let r = field(&proxy, "r", "report").await;
                if let (Some(e), Some(s), Some(l)) = (
                    r["epoch"].as_u64(),
                    r["seq"].as_u64(),
                    r["load_kw"].as_f64(),
                ) {
                    seen.lock().expect("not poisoned").push((e, s, l));
                }
                // The sampling rate of the view.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let sender = {
        let (proxy, done) = (Arc::clone(&proxy), Arc::clone(&done));
        tokio::spawn(async move {
            let mut i = 0;
            while !done.load(SeqCst) {
                let a = proxy.charge(&format!("ev-{i}"), 1.0, 60.0).await;
                assert_eq!(a.status, 201, "{:?}", a.body);
                i += 1;
            }
        })
    };
    // Two phases of real time, each many rounds of gridlb's probes (another process's timer):
    // the old epoch, then the new one.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    switch.store(true, SeqCst);
    tokio::time::sleep(Duration::from_millis(1200)).await;
    done.store(true, SeqCst);
    watcher.await.expect("watcher");
    sender.await.expect("sender");

    let seen = seen.lock().expect("not poisoned").clone();
    assert!(seen.len() > 10, "only {} views sampled", seen.len());
    for pair in seen.windows(2) {
        assert!(
            (pair[1].0, pair[1].1) >= (pair[0].0, pair[0].1),
            "the view went back from {:?} to {:?}",
            pair[0],
            pair[1]
        );
    }
    for (epoch, seq, load) in &seen {
        assert_eq!(
            *load, *seq as f64,
            "epoch {epoch}: a report's fields got mixed"
        );
    }
    let last = seen.last().expect("samples");
    assert_eq!(last.0, 2, "the new epoch won");
    let page = proxy.metrics().await;
    for source in ["probe", "header"] {
        let stale = metric_sum(
            &page,
            "gridlb_reports_stale_total",
            &[("substation", "r"), ("source", source)],
        );
        assert!(stale >= 1.0, "no stale {source} report counted");
    }
    eprintln!(
        "{} probes and {} answers replayed out of order; view sampled {} times, ended at {last:?}",
        probes.load(SeqCst),
        answers.load(SeqCst),
        seen.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_idempotency_key_books_one_session() {
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
        substation("s3", 1000.0, 1.0).await,
    ];
    let proxy = Proxy::start(
        &[("s1", s[0].addr), ("s2", s[1].addr), ("s3", s[2].addr)],
        with_probe(Probe::every(200, 180)),
    )
    .await;
    let key = [("idempotency-key", "charge-ev-7-attempt")];
    // The client sends, gives up waiting, and sends again with the same key.
    let first = proxy.charge_with("ev-7", 11.0, 3600.0, &key).await;
    let again = proxy.charge_with("ev-7", 11.0, 3600.0, &key).await;
    assert_eq!(first.status, 201, "{:?}", first.body);
    assert_eq!(again.status, 201, "{:?}", again.body);
    let booked: u64 = s.iter().map(|x| x.state.report().active_sessions).sum();
    assert_eq!(
        booked,
        1,
        "one key booked {booked} sessions (first at {:?}, retry at {:?})",
        first.header("x-gridlb-substation"),
        again.header("x-gridlb-substation")
    );
    assert_eq!(first.json()["session_id"], again.json()["session_id"]);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    // Another key is another session.
    let other = proxy
        .charge_with("ev-8", 11.0, 3600.0, &[("idempotency-key", "charge-ev-8")])
        .await;
    assert_eq!(other.status, 201);
    assert_ne!(other.json()["session_id"], first.json()["session_id"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarted_proxy_rebuilds_its_view_from_probes_before_it_is_ready() {
    // Slow links in front of the substations: a new process' first probes take 600 ms, long
    // enough to see it not ready.
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
        substation("s3", 1000.0, 1.0).await,
    ];
    let delay = Duration::from_millis(600);
    let links = [
        SlowLink::start(s[0].addr, delay).await,
        SlowLink::start(s[1].addr, delay).await,
        SlowLink::start(s[2].addr, delay).await,
    ];
    let subs = [
        ("s1", links[0].addr),
        ("s2", links[1].addr),
        ("s3", links[2].addr),
    ];
    let probes = with_probe(Probe::every(2000, 1500));
    let mut proxy = Proxy::start(&subs, probes).await;
    for i in 0..9 {
        assert_eq!(
            proxy.charge(&format!("ev-{i}"), 10.0, 3600.0).await.status,
            201
        );
    }
    let before: Vec<(f64, u64)> = s
        .iter()
        .map(|x| (x.state.report().load_kw, x.state.report().active_sessions))
        .collect();
    assert_eq!(before.iter().map(|b| b.1).sum::<u64>(), 9);

    proxy.kill();
    proxy.respawn(&Launch::default());
    let mut statuses = Vec::new();
    let mut early_charge = None;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        assert!(
            Instant::now() < deadline,
            "not ready again:\n{}",
            proxy.log()
        );
        let probe = common::client()
            .request(proxy.admin, "GET", "/readyz", &[], b"")
            .await;
        if let Ok(a) = probe {
            if statuses.last() != Some(&a.status) {
                statuses.push(a.status);
            }
            if a.status == 503 && early_charge.is_none() {
                // A session that arrives before the first probe round waits for it.
                let proxy_addr = proxy.listen;
                early_charge = Some(tokio::spawn(async move {
                    common::client()
                        .request(
                            proxy_addr,
                            "POST",
                            "/charge",
                            &[],
                            br#"{"vehicle_id":"early","power_kw":10,"duration_s":3600}"#,
                        )
                        .await
                }));
            }
            if a.status == 200 {
                break;
            }
        }
        // Polls readiness, recording each change of answer on the way.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(statuses, vec![503, 200], "readiness after the restart");
    let status = proxy.status().await;
    for (name, (sub, (load, sessions))) in ["s1", "s2", "s3"].iter().zip(s.iter().zip(&before)) {
        let r = &entry(&status, name)["report"];
        assert_eq!(r["load_kw"].as_f64(), Some(*load), "{name}: {status}");
        assert_eq!(r["active_sessions"].as_u64(), Some(*sessions), "{name}");
        assert_eq!(r["epoch"].as_u64(), Some(sub.state.report().epoch));
    }
    let early = early_charge
        .expect("readyz answered 503 at least once")
        .await
        .expect("task");
    match early {
        Ok(a) => assert_eq!(a.status, 201, "{:?}", a.body),
        // The proxy listener may come up a moment after the admin one.
        Err(e) => eprintln!("the early session found no listener yet: {e}"),
    }
    let booked: u64 = s.iter().map(|x| x.state.report().active_sessions).sum();
    assert!(
        booked == 9 || booked == 10,
        "{booked} sessions after the restart"
    );
}

/// A fake substation that reports an empty grid until `jam` is set; then it stops accepting,
/// and once its accept queue is full, connecting to it hangs (SYNs are dropped).
async fn jammable_substation(name: &'static str, jam: Arc<AtomicBool>) -> SocketAddr {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("literal"))
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let body = report_json(name, 1, 1, 0.0, 1_000_000.0);
    tokio::spawn(async move {
        loop {
            if jam.load(SeqCst) {
                // Jammed: accept nothing, look again later.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            let Ok(Ok((mut conn, _))) =
                tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
            else {
                continue;
            };
            let body = body.clone();
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                while let Ok(n) = conn.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let answer = format!(
                        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_substation_costs_one_connect_timeout_and_the_session_goes_elsewhere() {
    let s1 = substation("s1", 1000.0, 1.0).await;
    let jam = Arc::new(AtomicBool::new(false));
    let jammed = jammable_substation("jammed", Arc::clone(&jam)).await;
    let proxy = Proxy::start(
        &[("s1", s1.addr), ("jammed", jammed)],
        with_probe(Probe::every(5000, 1000)).upstream(Upstream {
            connect_timeout_ms: Some(300),
            read_timeout_ms: Some(5000),
        }),
    )
    .await;
    wait_until(Duration::from_secs(3), || async {
        field(&proxy, "jammed", "report").await.is_object()
    })
    .await
    .expect("the fake reported");
    // Stop accepting and fill the accept queue: new connections now hang in the handshake.
    jam.store(true, SeqCst);
    // The accept loop sees `jam` within its 50 ms accept timeout; nothing shows when it has.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(c)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(jammed),
        )
        .await
        {
            fillers.push(c);
        }
    }
    let t = Instant::now();
    let a = proxy.charge("ev", 1.0, 60.0).await;
    let took = t.elapsed();
    eprintln!(
        "a session meant for the unreachable substation: {} from {:?} after {took:?}",
        a.status,
        a.header("x-gridlb-substation")
    );
    assert_eq!(a.status, 201, "{:?}", a.body);
    assert_eq!(a.header("x-gridlb-substation"), Some("s1"));
    // One connect timeout (300 ms) and an ordinary request; generous for a loaded machine,
    // and still well short of the read timeout or a SYN retransmission (1 s, then 3 s).
    assert!(
        took < Duration::from_millis(300) + SLACK * 2,
        "more than one connect timeout: {took:?}"
    );
    let page = proxy.metrics().await;
    assert!(metric_sum(&page, "gridlb_retries_total", &[("reason", "connect")]) >= 1.0);
    drop(fillers);
}
