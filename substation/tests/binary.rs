//! End-to-end tests of the `substation` binary: start it on port 0, read the address it
//! prints, and talk HTTP to it over real sockets.

mod common;

use common::EV;
use gridlb_protocol::HeaderReport;
use gridlb_test_support::http::{RawAnswer as Reply, send, send_chunked, send_with};
use gridlb_test_support::launch::signal;
use gridlb_test_support::prom::by_series as samples;
use gridlb_test_support::wait::{wait_blocking, wait_every};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `substation` process, killed on drop.
struct Process {
    child: Child,
    addr: SocketAddr,
    /// The line it printed when ready.
    ready: String,
}

impl Process {
    fn start(args: &[&str]) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_substation"))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn substation");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read");
        let addr = line
            .trim()
            .rsplit_once(" listening on ")
            .and_then(|(_, addr)| addr.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        assert!(line.starts_with("substation "), "{line}");
        Process {
            child,
            addr,
            ready: line.trim().to_string(),
        }
    }

    fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let child = &mut self.child;
        let exited = wait_blocking(Duration::from_millis(20), limit, || {
            child.try_wait().expect("try_wait").is_some()
        });
        assert!(exited, "still running after {limit:?}");
        self.child.wait().expect("reaped")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn load_header(reply: &Reply) -> HeaderReport {
    HeaderReport::parse(reply.expect_header("x-substation-load")).expect("a valid load header")
}

fn charge(power_kw: f64, duration_s: f64) -> String {
    gridlb_test_support::http::charge_body("ev", power_kw, duration_s)
}

#[tokio::test]
async fn the_binary_books_refuses_and_frees_over_http() {
    let process = Process::start(&["--id", "s1", "--capacity-kw", "30"]);
    let addr = process.addr;
    assert_eq!(send(addr, "GET", "/healthz", "").await.text(), "ok");

    let first = send(addr, "POST", "/charge", &charge(20.0, 3600.0)).await;
    assert_eq!(first.status, 201, "{}", first.text());
    let session = first.json()["session_id"].as_str().unwrap().to_string();
    assert_eq!(load_header(&first).load_kw, 20.0);

    let refused = send(addr, "POST", "/charge", &charge(11.0, 60.0)).await;
    assert_eq!(refused.status, 503);
    let retry: u64 = refused.expect_header("retry-after").parse().unwrap();
    assert!((3598..=3600).contains(&retry), "{retry}");
    assert_eq!(load_header(&refused).seq, 1);

    let deleted = send(addr, "DELETE", &format!("/charge/{session}"), "").await;
    assert_eq!(
        (deleted.status, deleted.json()["freed_kw"].as_f64()),
        (200, Some(20.0))
    );
    assert_eq!(
        (load_header(&deleted).seq, load_header(&deleted).load_kw),
        (2, 0.0)
    );
    let again = send(addr, "DELETE", &format!("/charge/{session}"), "").await;
    assert_eq!(again.status, 404);
    assert!(again.has_header("x-substation-load"));

    let load = send(addr, "GET", "/load", "").await.json();
    assert_eq!(
        (load["substation"].as_str(), load["seq"].as_u64()),
        (Some("s1"), Some(2))
    );
    assert_eq!(load["epoch"].as_u64(), Some(load_header(&deleted).epoch));
}

#[tokio::test]
async fn the_binary_refuses_bad_input_with_the_right_status() {
    let process = Process::start(&["--id", "s1", "--capacity-kw", "100"]);
    let addr = process.addr;
    let cases = [
        ("{", None),
        (r#"{"vehicle_id":"ev","duration_s":5}"#, Some("power_kw")),
        (
            r#"{"vehicle_id":"ev","power_kw":-2,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":"NaN","duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":0,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":101,"duration_s":5}"#,
            Some("power_kw"),
        ),
        (
            r#"{"vehicle_id":"ev","power_kw":1,"duration_s":0}"#,
            Some("duration_s"),
        ),
    ];
    for (body, field) in cases {
        let reply = send(addr, "POST", "/charge", body).await;
        assert_eq!(reply.status, 400, "{body}");
        assert_eq!(
            reply.json()["field"].as_str(),
            field,
            "{body}: {}",
            reply.text()
        );
        assert!(reply.has_header("x-substation-load"));
    }
    let big = format!("{}{EV}", " ".repeat(17 * 1024));
    let reply = send(addr, "POST", "/charge", &big).await;
    assert_eq!(reply.status, 413);
    assert!(reply.has_header("x-substation-load"));
    assert_eq!(send_chunked(addr, "/charge", &big).await.status, 413);
    assert_eq!(send_chunked(addr, "/charge", EV).await.status, 201);

    assert_eq!(send(addr, "GET", "/nowhere", "").await.status, 404);
    let wrong = send(addr, "GET", "/charge", "").await;
    assert_eq!((wrong.status, wrong.expect_header("allow")), (405, "POST"));
    assert_eq!(
        send(addr, "POST", "/load", "").await.expect_header("allow"),
        "GET, HEAD"
    );
}

#[tokio::test]
async fn the_binary_replays_an_idempotent_post_and_reports_metrics() {
    let process = Process::start(&["--id", "s7", "--capacity-kw", "500"]);
    let addr = process.addr;
    let key = [("Idempotency-Key", "abc-123")];
    let first = send_with(addr, "POST", "/charge", EV, &key).await;
    let second = send_with(addr, "POST", "/charge", EV, &key).await;
    assert_eq!((first.status, second.status), (201, 201));
    assert_eq!(first.body, second.body);
    assert_eq!(load_header(&second).seq, 1);

    let metrics = send(addr, "GET", "/metrics", "").await;
    assert_eq!(
        metrics.expect_header("content-type"),
        "text/plain; version=0.0.4"
    );
    let samples = samples(&metrics.text());
    let expected = [
        ("substation_load_kw", 11.0),
        ("substation_capacity_kw", 500.0),
        ("substation_utilization", 0.022),
        ("substation_active_sessions", 1.0),
        ("substation_report_seq", 1.0),
        ("substation_sessions_total{result=\"accepted\"}", 1.0),
        (
            "substation_sessions_total{result=\"idempotent_replay\"}",
            1.0,
        ),
        (
            "substation_requests_total{route=\"/charge\",status=\"201\"}",
            2.0,
        ),
    ];
    for (series, value) in expected {
        assert_eq!(samples.get(series), Some(&value), "{series}");
    }
}

#[tokio::test]
async fn sessions_expire_after_duration_over_time_scale_and_the_load_drops() {
    let process = Process::start(&["--id", "s1", "--capacity-kw", "50", "--time-scale", "1000"]);
    let addr = process.addr;
    // 500 simulated seconds at time scale 1000: half a real second.
    let booked = send(addr, "POST", "/charge", &charge(40.0, 500.0)).await;
    assert_eq!(booked.status, 201);
    let started = Instant::now();
    let expired = wait_every(
        Duration::from_millis(50),
        Duration::from_secs(5),
        || async {
            let load = send(addr, "GET", "/load", "").await.json();
            let empty = load["load_kw"].as_f64() == Some(0.0);
            if empty {
                assert_eq!(load["seq"].as_u64(), Some(2));
            }
            empty
        },
    )
    .await;
    assert!(expired.is_some(), "never expired");
    assert!(started.elapsed() >= Duration::from_millis(450));
    let text = send(addr, "GET", "/metrics", "").await.text();
    let samples = samples(&text);
    assert_eq!(
        samples["substation_sessions_ended_total{reason=\"expired\"}"],
        1.0
    );
    let kwh = samples["substation_energy_delivered_kwh_total"];
    assert!((kwh - 40.0 * 500.0 / 3600.0).abs() < 1e-9, "{kwh}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_concurrent_bookings_never_exceed_the_capacity() {
    let process = Process::start(&["--id", "s1", "--capacity-kw", "500"]);
    let addr = process.addr;
    let tasks: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { send(addr, "POST", "/charge", EV).await }))
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let reply = task.await.expect("task");
        match reply.status {
            201 => accepted += 1,
            503 => assert!(reply.has_header("retry-after")),
            other => panic!("unexpected status {other}: {}", reply.text()),
        }
        assert!(load_header(&reply).load_kw <= 500.0);
    }
    assert_eq!(accepted, 45, "45 × 11 kW = 495 kW fit in 500 kW");
    let load = send(addr, "GET", "/load", "").await.json();
    assert_eq!(load["load_kw"].as_f64(), Some(495.0));
}

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly_and_the_port_closes() {
    let mut process = Process::start(&["--id", "s1", "--capacity-kw", "10"]);
    assert_eq!(send(process.addr, "GET", "/healthz", "").await.status, 200);
    process.signal("TERM");
    assert!(process.wait(Duration::from_secs(5)).success());
    assert!(tokio::net::TcpStream::connect(process.addr).await.is_err());

    let mut process = Process::start(&["--id", "s1", "--capacity-kw", "10"]);
    process.signal("INT");
    assert!(process.wait(Duration::from_secs(5)).success());
}

fn run_expecting_failure(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_substation"))
        .args(args)
        .output()
        .expect("run substation");
    assert!(!output.status.success(), "{args:?} succeeded");
    assert!(output.stdout.is_empty());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn bad_configuration_exits_non_zero_naming_the_key() {
    let err = run_expecting_failure(&["--id", "s1", "--listen", "127.0.0.1:0"]);
    assert!(err.contains("capacity_kw is required"), "{err}");
    let err = run_expecting_failure(&[
        "--id",
        "s1",
        "--listen",
        "127.0.0.1:0",
        "--capacity-kw",
        "-5",
    ]);
    assert!(err.contains("capacity_kw: -5 is not valid"), "{err}");
    let err = run_expecting_failure(&[
        "--id",
        "s1",
        "--listen",
        "127.0.0.1:0",
        "--capacity-kw",
        "5",
        "--time-scale",
        "inf",
    ]);
    assert!(err.contains("time_scale: inf is not valid"), "{err}");

    let path = std::env::temp_dir().join(format!("substation-bin-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "id: s1\nlisten: 127.0.0.1:0\ncapacity_kw: 5\ntimescale: 2\n",
    )
    .unwrap();
    let err = run_expecting_failure(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert!(err.contains("unknown field `timescale`"), "{err}");
}

#[test]
fn a_config_file_is_read_and_flags_override_it() {
    let path = std::env::temp_dir().join(format!("substation-ok-{}.yaml", std::process::id()));
    std::fs::write(
        &path,
        "id: from-file\nlisten: 127.0.0.1:1\ncapacity_kw: 5\n",
    )
    .unwrap();
    // Process::start passes --listen 127.0.0.1:0, which wins over the file's port 1.
    let process = Process::start(&["--config", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
    assert_eq!(
        process.ready,
        format!("substation from-file listening on {}", process.addr)
    );
    assert_ne!(process.addr.port(), 1);
}

#[test]
fn help_explains_every_option() {
    let output = Command::new(env!("CARGO_BIN_EXE_substation"))
        .arg("--help")
        .output()
        .expect("run substation --help");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    for option in [
        "--id",
        "--listen",
        "--capacity-kw",
        "--time-scale",
        "--config",
    ] {
        assert!(help.contains(option), "{option} missing from\n{help}");
    }
}
