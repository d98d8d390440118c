//! `ev-demand` against real servers: in-process substations on port 0, gridlb in-process in
//! front of them, and the real `ev-demand` binary. Everything started here stops at the end.

use async_trait::async_trait;
use gridlb::config::Config;
use gridlb::metrics::Metrics;
use gridlb::server::{self, Options};
use gridlb_bench::client::Client;
use gridlb_test_support::config::{GridlbConfig, Probe};
use gridlb_test_support::ports::free_port;
use gridlb_test_support::wait::wait_every;
use pingora_core::server::{RunArgs, ShutdownSignal, ShutdownSignalWatch};
use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

async fn substation(name: &str, capacity_kw: f64) -> substation::Server {
    gridlb_test_support::launch::substation(name, capacity_kw, 1.0).await
}

/// Run `ev-demand` with `args`; its `--json` summary.
fn ev_demand(args: &[&str]) -> serde_json::Value {
    let out = Command::new(env!("CARGO_BIN_EXE_ev-demand"))
        .args(args)
        .args(["--json", "--quiet", "--timeout", "5s"])
        .output()
        .expect("ev-demand runs");
    assert!(
        out.status.success(),
        "ev-demand failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the summary is JSON")
}

struct Stop(watch::Receiver<bool>);

#[async_trait]
impl ShutdownSignalWatch for Stop {
    async fn recv(&self) -> ShutdownSignal {
        let mut rx = self.0.clone();
        let _ = rx.wait_for(|stop| *stop).await;
        ShutdownSignal::FastShutdown
    }
}

/// gridlb in a thread of this process; stops when the sender says so.
fn gridlb(
    subs: &[(&str, SocketAddr)],
) -> (
    SocketAddr,
    SocketAddr,
    watch::Sender<bool>,
    std::thread::JoinHandle<()>,
) {
    let (listen, admin) = (free_port(), free_port());
    let yaml = GridlbConfig::new()
        .listen(listen)
        .admin(admin)
        .substations(subs)
        .probe(Probe::every(100, 80))
        .to_yaml();
    let config = Config::parse(&yaml).expect("valid config");
    let metrics = Arc::new(Metrics::new(&prometheus::Registry::new()).expect("fresh registry"));
    let (server, _parts) = server::build(
        config,
        None,
        &Options {
            threads: Some(1),
            ..Options::default()
        },
        metrics,
    )
    .expect("literal addresses");
    let (stop, stopped) = watch::channel(false);
    let thread = std::thread::spawn(move || {
        server.run(RunArgs {
            shutdown_signal: Box::new(Stop(stopped)),
        })
    });
    (listen, admin, stop, thread)
}

async fn wait_ready(admin: SocketAddr) {
    let client = Client::new(Duration::from_secs(1));
    let ready = wait_every(
        Duration::from_millis(50),
        Duration::from_secs(20),
        || async {
            let answer = client.request(admin, "GET", "/readyz", &[], b"").await;
            answer.is_ok_and(|a| a.status == 200)
        },
    )
    .await;
    assert!(ready.is_some(), "gridlb was not ready in 20 s");
}

async fn load_kw(addr: SocketAddr) -> f64 {
    let answer = Client::new(Duration::from_secs(2))
        .request(addr, "GET", "/load", &[], b"")
        .await
        .expect("the substation answers");
    answer.json()["load_kw"].as_f64().expect("a load report")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demand_through_gridlb_is_booked_where_the_summary_says() {
    let subs = [
        substation("s1", 200.0).await,
        substation("s2", 500.0).await,
        substation("s3", 1000.0).await,
    ];
    let named: Vec<(&str, SocketAddr)> = vec![
        ("s1", subs[0].addr),
        ("s2", subs[1].addr),
        ("s3", subs[2].addr),
    ];
    let (listen, admin, stop, thread) = gridlb(&named);
    wait_ready(admin).await;

    let url = format!("http://{listen}/charge");
    let summary = tokio::task::spawn_blocking(move || {
        ev_demand(&[
            "--url",
            &url,
            "--rate",
            "100",
            "--count",
            "80",
            "--profile",
            "rush-hour",
            "--seed",
            "5",
        ])
    })
    .await
    .expect("ev-demand thread");

    assert_eq!(summary["sent"], 80);
    assert_eq!(summary["errors"], 0, "{summary:#}");
    let (accepted, refused) = (
        summary["accepted"].as_u64().unwrap(),
        summary["refused"].as_u64().unwrap(),
    );
    assert_eq!(accepted + refused, 80);
    assert!(accepted > 0, "{summary:#}");
    // Sessions last at least 15 minutes at time scale 1: everything accepted is still held,
    // so each substation's load is exactly the power the summary says it took.
    for (sub, (name, _)) in subs.iter().zip(&named) {
        let took = summary["substations"][name]["kw"].as_f64().unwrap_or(0.0);
        assert!(
            (load_kw(sub.addr).await - took).abs() < 1e-6,
            "{name}: {summary:#}"
        );
    }
    assert!(summary["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    stop.send_replace(true);
    tokio::task::spawn_blocking(move || thread.join())
        .await
        .expect("join")
        .expect("gridlb stops cleanly");
    for s in subs {
        s.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_seed_sends_the_same_sessions() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sub = substation("solo", 100_000.0).await;
        let events = std::env::temp_dir().join(format!(
            "ev-demand-test-{}-{}.csv",
            std::process::id(),
            sub.addr.port()
        ));
        let (url, path) = (
            format!("http://{}/charge", sub.addr),
            events.to_string_lossy().into_owned(),
        );
        let summary = tokio::task::spawn_blocking(move || {
            ev_demand(&[
                "--url", &url, "--rate", "200", "--count", "40", "--seed", "9", "--events", &path,
            ])
        })
        .await
        .expect("ev-demand thread");
        assert_eq!(
            (
                summary["accepted"].as_u64(),
                summary["substations"]["solo"]["accepted"].as_u64()
            ),
            (Some(40), Some(40))
        );
        let csv = std::fs::read_to_string(&events).expect("events written");
        let _ = std::fs::remove_file(&events);
        // power_kw and duration_s of each session, in order.
        let sessions: Vec<String> = csv
            .lines()
            .skip(1)
            .map(|l| l.split(',').skip(2).take(2).collect::<Vec<_>>().join(","))
            .collect();
        runs.push((sessions, load_kw(sub.addr).await));
        sub.shutdown().await;
    }
    assert_eq!(runs[0], runs[1]);
}
