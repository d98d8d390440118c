//! Hot reload end to end: the real `gridlb` binary, its config file rewritten under load.

mod common;

use common::{Proxy, book_direct, config, entry, with_probe};
use gridlb_test_support::config::{GridlbConfig, Probe, Selection, Substation};
use gridlb_test_support::launch::substation;
use gridlb_test_support::ports::free_port;
use gridlb_test_support::prom::metric;
use gridlb_test_support::wait::{wait_every, wait_until};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::{Duration, Instant};

fn probes() -> GridlbConfig {
    with_probe(Probe::every(200, 150).unhealthy_after(1).healthy_after(1))
}

/// Sessions sent through the proxy until `stop`, 4 at a time; returns every non-201 answer.
fn steady_load(
    proxy: Arc<Proxy>,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(u32, Vec<String>)> {
    tokio::spawn(async move {
        let mut workers = Vec::new();
        for w in 0..4 {
            let (proxy, stop) = (Arc::clone(&proxy), Arc::clone(&stop));
            workers.push(tokio::spawn(async move {
                let (mut sent, mut failures) = (0u32, Vec::new());
                // Bounded: at most 30 s or 20,000 requests per worker.
                let deadline = Instant::now() + Duration::from_secs(30);
                while !stop.load(Relaxed) && Instant::now() < deadline && sent < 20_000 {
                    sent += 1;
                    let a = proxy.charge(&format!("w{w}-{sent}"), 1.0, 1.0).await;
                    if a.status != 201 {
                        failures.push(format!("{} {}", a.status, String::from_utf8_lossy(&a.body)));
                    }
                }
                (sent, failures)
            }));
        }
        let mut total = (0, Vec::new());
        for w in workers {
            let (sent, failures) = w.await.expect("worker");
            total.0 += sent;
            total.1.extend(failures);
        }
        total
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dozens_of_reloads_under_load_fail_no_request() {
    // Big substations with short sessions (time scale 1000): the grid never fills.
    let s: Vec<substation::Server> = vec![
        substation("s1", 100_000.0, 1000.0).await,
        substation("s2", 100_000.0, 1000.0).await,
        substation("s3", 100_000.0, 1000.0).await,
        substation("s4", 100_000.0, 1000.0).await,
    ];
    let base = [("s1", s[0].addr), ("s2", s[1].addr), ("s3", s[2].addr)];
    let with4 = [
        ("s1", s[0].addr),
        ("s2", s[1].addr),
        ("s3", s[2].addr),
        ("s4", s[3].addr),
    ];
    let proxy = Arc::new(Proxy::start(&base, probes()).await);
    let p = &proxy;
    let weights = probes()
        .push(Substation::new("s1", s[0].addr).weight(5))
        .substation("s2", s[1].addr)
        .push(Substation::new("s3", s[2].addr).weight(2));
    let mut drained = weights.clone();
    drained.substation_mut("s3").drain = Some(true);
    let valid: Vec<String> = vec![
        p.yaml(&with4, probes()),
        p.yaml(&base, probes()),
        p.config_text(&weights),
        p.yaml(&base, probes().selection(Selection::algorithm("p2c"))),
        p.yaml(
            &base,
            probes().selection(Selection::algorithm("round-robin")),
        ),
        p.yaml(&base, probes().selection(Selection::algorithm("random"))),
        p.config_text(&drained),
        p.yaml(
            &with4,
            probes().selection(Selection::algorithm("least-load").max_utilization(0.9)),
        ),
    ];
    let invalid: Vec<String> = vec![
        "listen: [not closed".to_string(),
        p.yaml(&base, probes()).replace("probe:", "prob:"),
        p.yaml(&base, probes())
            .replace(&s[1].addr.to_string(), "nowhere:port"),
        p.yaml(&base, probes()).replace("name: s2", "name: s1"),
        p.config_text(&GridlbConfig::new()),
        p.yaml(
            &base,
            probes().selection(Selection::default().max_utilization(1.5)),
        ),
    ];

    let stop = Arc::new(AtomicBool::new(false));
    let load = steady_load(Arc::clone(&proxy), Arc::clone(&stop));
    let (mut ok, mut refused) = (0, 0);
    for round in 0..4 {
        for (i, text) in valid.iter().enumerate() {
            proxy.write_config(text);
            let a = proxy.reload().await;
            assert_eq!(
                a.status,
                200,
                "round {round}, valid config {i}: {:?}",
                a.json()
            );
            ok += 1;
            if i % 2 == 0 {
                let bad = &invalid[(round * valid.len() + i) / 2 % invalid.len()];
                proxy.write_config(bad);
                let a = proxy.reload().await;
                assert_eq!(a.status, 422, "invalid config accepted: {bad}");
                assert!(
                    a.json()["path"].is_string(),
                    "the answer names the key: {:?}",
                    a.json()
                );
                refused += 1;
            }
            // Paces the reloads so that the load runs between them.
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
    stop.store(true, Relaxed);
    let (sent, failures) = load.await.expect("load task");
    eprintln!(
        "{sent} sessions through {ok} valid and {refused} invalid reloads, {} failed",
        failures.len()
    );
    assert!(ok + refused >= 48, "dozens of reloads");
    assert!(sent > 100, "the load was steady ({sent} sessions)");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed during {ok} good and {refused} bad reloads: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let page = proxy.metrics().await;
    assert!(metric(&page, "gridlb_config_reloads_total{result=\"success\"}") >= ok as f64);
    assert!(metric(&page, "gridlb_config_reloads_total{result=\"failure\"}") >= refused as f64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn added_substation_takes_sessions_within_two_probe_intervals() {
    let s = [
        substation("s1", 100.0, 1.0).await,
        substation("s2", 100.0, 1.0).await,
    ];
    let probes = with_probe(Probe::every(500, 200));
    let proxy = Proxy::start(&[("s1", s[0].addr)], probes.clone()).await;
    assert_eq!(book_direct(s[0].addr, 50.0).await.status, 201);
    proxy.write_config(&proxy.yaml(&[("s1", s[0].addr), ("s2", s[1].addr)], probes));
    let reloaded = Instant::now();
    assert_eq!(proxy.reload().await.status, 200);
    let limit = Duration::from_secs(1).saturating_sub(reloaded.elapsed());
    let took = wait_until(limit, || async {
        let a = proxy.charge("ev", 1.0, 600.0).await;
        assert_eq!(a.status, 201);
        a.header("x-gridlb-substation") == Some("s2")
    })
    .await;
    assert!(
        took.is_some(),
        "s2 took no session within two probe intervals"
    );
}

async fn routed_to(proxy: &Proxy, n: usize) -> Vec<String> {
    let mut names = Vec::new();
    for i in 0..n {
        let a = proxy.charge(&format!("ev-{i}"), 1.0, 600.0).await;
        assert_eq!(a.status, 201, "{:?}", a.json());
        names.push(a.header("x-gridlb-substation").unwrap_or("?").to_string());
    }
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drained_and_removed_substations_take_no_new_sessions() {
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
    ];
    let both = [("s1", s[0].addr), ("s2", s[1].addr)];
    let proxy = Proxy::start(&both, probes()).await;
    assert!(routed_to(&proxy, 20).await.contains(&"s2".to_string()));

    // Drained on the admin API: still probed and shown, no new sessions; holds across a reload.
    let a = proxy.admin_post("/substations/s2/drain").await;
    assert_eq!(a.status, 200, "{:?}", a.json());
    let probes_before = entry(&proxy.status().await, "s2")["probes"]
        .as_u64()
        .unwrap_or(0);
    assert!(!routed_to(&proxy, 20).await.contains(&"s2".to_string()));
    assert_eq!(proxy.reload().await.status, 200);
    assert!(!routed_to(&proxy, 10).await.contains(&"s2".to_string()));
    let probes_of_s2 = || async {
        entry(&proxy.status().await, "s2")["probes"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until(Duration::from_millis(450), || async {
        probes_of_s2().await > probes_before
    })
    .await;
    let status = proxy.status().await;
    assert_eq!(entry(&status, "s2")["draining"], true);
    assert!(
        entry(&status, "s2")["probes"].as_u64().unwrap_or(0) > probes_before,
        "a drained substation is still probed"
    );
    assert_eq!(
        proxy.admin_post("/substations/s2/undrain").await.status,
        200
    );
    assert!(routed_to(&proxy, 20).await.contains(&"s2".to_string()));
    assert_eq!(
        proxy.admin_post("/substations/nope/drain").await.status,
        404
    );

    // Drained by config.
    let mut drained = config(&both, &probes());
    drained.substation_mut("s2").drain = Some(true);
    proxy.rewrite(&drained);
    assert_eq!(proxy.reload().await.status, 200);
    assert!(!routed_to(&proxy, 20).await.contains(&"s2".to_string()));

    // Removed: gone from /status and from /metrics.
    proxy.write_config(&proxy.yaml(&both[..1], probes()));
    assert_eq!(proxy.reload().await.status, 200);
    assert!(!routed_to(&proxy, 20).await.contains(&"s2".to_string()));
    let status = proxy.status().await;
    assert_eq!(status["substations"].as_array().map(Vec::len), Some(1));
    assert!(
        !proxy.metrics().await.contains("substation=\"s2\""),
        "series of a removed substation remain"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_file_leaves_routing_exactly_as_it_was() {
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
    ];
    let subs = [("s1", s[0].addr), ("s2", s[1].addr)];
    let proxy = Proxy::start(
        &subs,
        probes().selection(Selection::algorithm("round-robin")),
    )
    .await;
    let shape = |status: &serde_json::Value| {
        let subs: Vec<_> = status["substations"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|s| {
                        (
                            s["name"].clone(),
                            s["address"].clone(),
                            s["weight"].clone(),
                            s["draining"].clone(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        (
            status["algorithm"].clone(),
            status["max_utilization"].clone(),
            subs,
        )
    };
    let before = shape(&proxy.status().await);
    let mut broken = config(&subs, &probes());
    broken.substation_mut("s2").address = "x:y".into();
    proxy.rewrite(&broken);
    let a = proxy.reload().await;
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["path"], "substations[1].address");
    let status = proxy.status().await;
    assert_eq!(shape(&status), before, "an invalid file changed the grid");
    assert!(
        status["reload"]["last_error"]
            .as_str()
            .unwrap_or("")
            .contains("substations[1].address")
    );
    // Round-robin still alternates over both.
    let names = routed_to(&proxy, 10).await;
    assert_eq!(names.iter().filter(|n| *n == "s1").count(), 5, "{names:?}");
    assert!(
        proxy.log().contains("substations[1].address"),
        "a log line names the problem"
    );
    assert_eq!(
        metric(
            &proxy.metrics().await,
            "gridlb_config_reloads_total{result=\"failure\"}"
        ),
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weight_change_keeps_health_and_report() {
    let s = [
        substation("s1", 1000.0, 1.0).await,
        substation("s2", 1000.0, 1.0).await,
    ];
    let dead: SocketAddr = free_port();
    let subs = [("s1", s[0].addr), ("s2", s[1].addr), ("down", dead)];
    let slow = with_probe(Probe::every(300, 100).unhealthy_after(1).healthy_after(1));
    let proxy = Proxy::start(&subs, slow.clone()).await;
    wait_until(Duration::from_millis(400), || async {
        entry(&proxy.status().await, "down")["ready"] == false
    })
    .await;
    let before = proxy.status().await;
    assert_eq!(
        entry(&before, "down")["ready"],
        false,
        "a substation nobody listens at is not ready"
    );
    let seq_before = entry(&before, "s1")["report"]["seq"].clone();
    let mut heavier = config(&subs, &slow);
    heavier.substation_mut("down").weight = Some(3);
    proxy.rewrite(&heavier);
    assert_eq!(proxy.reload().await.status, 200);
    let after = proxy.status().await;
    assert_eq!(entry(&after, "down")["weight"], 3);
    assert_eq!(
        entry(&after, "down")["ready"],
        false,
        "a weight change made a dead substation healthy"
    );
    assert_eq!(
        entry(&after, "s1")["report"]["seq"],
        seq_before,
        "the report survived the reload"
    );
    assert_eq!(entry(&after, "s1")["ready"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_change_and_sighup_reload_without_an_api_call() {
    let s = [substation("s1", 1000.0, 1.0).await];
    let proxy = Proxy::start(&[("s1", s[0].addr)], probes()).await;
    proxy.write_config(&proxy.yaml(
        &[("s1", s[0].addr)],
        probes().selection(Selection::algorithm("p2c")),
    ));
    wait_for(&proxy, |st| st["algorithm"] == "p2c").await;

    // SIGHUP: the log says which trigger reloaded.
    proxy.signal("HUP");
    let reloaded = wait_every(
        Duration::from_millis(50),
        Duration::from_secs(5),
        || async { proxy.log().contains("config reload (SIGHUP)") },
    )
    .await;
    assert!(
        reloaded.is_some(),
        "SIGHUP did not reload:\n{}",
        proxy.log()
    );
    assert_eq!(
        proxy.charge("ev", 1.0, 60.0).await.status,
        201,
        "the process survived SIGHUP"
    );
}

async fn wait_for(proxy: &Proxy, done: impl Fn(&serde_json::Value) -> bool) {
    let applied = wait_every(
        Duration::from_millis(50),
        Duration::from_secs(5),
        || async { done(&proxy.status().await) },
    )
    .await;
    assert!(
        applied.is_some(),
        "the file change was not applied:\n{}",
        proxy.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_addresses_cannot_change_at_run_time() {
    let s = [substation("s1", 1000.0, 1.0).await];
    let proxy = Proxy::start(&[("s1", s[0].addr)], probes()).await;
    let moved = proxy
        .with_addresses(&config(&[("s1", s[0].addr)], &probes()))
        .listen(free_port());
    proxy.write_config(&moved.to_yaml());
    let a = proxy.reload().await;
    assert_eq!(a.status, 422);
    assert_eq!(a.json()["path"], "listen");
    assert!(
        a.json()["error"]
            .as_str()
            .unwrap_or("")
            .contains("cannot change"),
        "{:?}",
        a.json()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_upgrade_under_load_fails_no_request() {
    let s = [
        substation("s1", 100_000.0, 1000.0).await,
        substation("s2", 100_000.0, 1000.0).await,
    ];
    let old = Proxy::start(&[("s1", s[0].addr), ("s2", s[1].addr)], probes()).await;
    let listen = old.listen;
    let stop = Arc::new(AtomicBool::new(false));
    // Fresh connections (`Connection: close`): a kept-alive connection to the old process
    // may be closed by it between two requests, which is the client's race, not a failure.
    let load = {
        let stop = Arc::clone(&stop);
        tokio::spawn(async move {
            let client = common::client();
            let (mut sent, mut failures) = (0u32, Vec::new());
            let deadline = Instant::now() + Duration::from_secs(30);
            while !stop.load(Relaxed) && Instant::now() < deadline {
                sent += 1;
                let body = format!(r#"{{"vehicle_id":"up-{sent}","power_kw":1,"duration_s":1}}"#);
                match client
                    .request(
                        listen,
                        "POST",
                        "/charge",
                        &[("connection", "close")],
                        body.as_bytes(),
                    )
                    .await
                {
                    Ok(a) if a.status == 201 => {}
                    Ok(a) => {
                        failures.push(format!("{} {}", a.status, String::from_utf8_lossy(&a.body)))
                    }
                    Err(e) => failures.push(e.to_string()),
                }
            }
            (sent, failures)
        })
    };
    // Real time under load on the old process before the upgrade starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut new = old.spawn_upgrade();
    // The new process gives no sign that it waits for the sockets: give it time to start.
    tokio::time::sleep(Duration::from_millis(500)).await;
    old.signal("QUIT");
    assert!(
        old.wait_exit(Duration::from_secs(15)),
        "the old process did not exit after SIGQUIT"
    );
    // Real time under load on the new process alone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Relaxed);
    let (sent, failures) = load.await.expect("load task");
    let still_running = new.try_wait().map(|s| s.is_none()).unwrap_or(false);
    let _ = new.kill();
    let _ = new.wait();
    eprintln!(
        "{sent} sessions across the upgrade, {} failed",
        failures.len()
    );
    assert!(still_running, "the new process died");
    assert!(sent > 50, "only {sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed across the upgrade: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
}

/// A client that connected just before the proxy began to shut down (the old process of a
/// graceful upgrade stops listening the same way) is still sending its first request: it is
/// answered, not closed. Pingora alone drops every connection still waiting for a header
/// when its listener stops, new ones included.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_accepted_before_shutdown_gets_its_first_request_answered() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = [substation("s1", 1000.0, 1.0).await];
    let proxy = Proxy::start(&[("s1", s[0].addr)], probes()).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.listen)
        .await
        .expect("connect");
    // Accepted, and its task waits for the header.
    tokio::time::sleep(Duration::from_millis(200)).await;
    proxy.signal("TERM");
    // The listener is closed at once; the process lives on for its grace period (1 s).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let body = br#"{"vehicle_id":"late","power_kw":1,"duration_s":1}"#;
    let head = format!(
        "POST /charge HTTP/1.1\r\nhost: grid\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n",
        body.len()
    );
    let closed = "the proxy closed a connection it had accepted before its first request";
    conn.write_all(head.as_bytes()).await.expect(closed);
    conn.write_all(body).await.expect(closed);
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        matches!(read, Ok(Ok(_))) && answer.starts_with("HTTP/1.1 201"),
        "the first request of a connection accepted before the shutdown was not answered: \
         {read:?} {answer:?}\n{}",
        proxy.log()
    );
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "a shutting-down proxy keeps no connection alive: {answer:?}"
    );
    assert!(
        proxy.wait_exit(Duration::from_secs(10)),
        "the proxy did not exit after SIGTERM"
    );
}

/// A kept-alive client connection waiting for its next request is closed once the proxy has
/// stopped listening (about 50 ms after the signal), not held open until the runtime is torn
/// down at the end of the grace period (1 s in these tests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed_at_shutdown() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = [substation("s1", 1000.0, 1.0).await];
    let proxy = Proxy::start(&[("s1", s[0].addr)], probes()).await;
    let mut conn = tokio::net::TcpStream::connect(proxy.listen)
        .await
        .expect("connect");
    let body = br#"{"vehicle_id":"kept","power_kw":1,"duration_s":1}"#;
    let request = format!(
        "POST /charge HTTP/1.1\r\nhost: grid\r\ncontent-type: application/json\r\n\
         content-length: {}\r\n\r\n{}",
        body.len(),
        String::from_utf8_lossy(body)
    );
    conn.write_all(request.as_bytes()).await.expect("send");
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut answer))
        .await
        .expect("an answer within 5 s")
        .expect("read");
    let head = String::from_utf8_lossy(&answer[..n]);
    assert!(head.starts_with("HTTP/1.1 201"), "{head}");
    assert!(
        !head.to_ascii_lowercase().contains("connection: close"),
        "kept alive: {head}"
    );
    let signalled = std::time::Instant::now();
    proxy.signal("TERM");
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest)).await;
    assert!(
        matches!(read, Ok(Ok(0))),
        "closed cleanly: {read:?} {rest:?}"
    );
    let after = signalled.elapsed();
    assert!(
        after < Duration::from_millis(800),
        "the idle connection stayed open {after:?} after SIGTERM\n{}",
        proxy.log()
    );
    assert!(
        proxy.wait_exit(Duration::from_secs(10)),
        "the proxy did not exit after SIGTERM"
    );
}
