//! Tests of the library API as gridlb's demo and tests use it: several [`Server`]s in one
//! process, stopped gracefully, aborted, or dropped.

mod common;

use common::EV;
use gridlb_test_support::http::{read_to_close as read_reply, send};
use gridlb_test_support::prom::by_series as samples;
use gridlb_test_support::wait::wait_until;
use std::time::{Duration, Instant};
use substation::{Config, Server};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

fn config(id: &str, capacity_kw: f64) -> Config {
    Config {
        id: id.to_string(),
        listen: "127.0.0.1:0".parse().expect("a literal address"),
        capacity_kw,
        time_scale: 1.0,
        orca_form: Default::default(),
        max_session_kw: gridlb_protocol::MAX_SESSION_KW,
        max_duration_s: gridlb_protocol::MAX_DURATION_S,
    }
}

async fn refuses_connections(addr: std::net::SocketAddr) -> bool {
    TcpStream::connect(addr).await.is_err()
}

/// Send the head of a `POST /charge` and half its body, leaving the request in flight.
async fn half_a_request(addr: std::net::SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let head = format!(
        "POST /charge HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n",
        EV.len()
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    stream.write_all(&EV.as_bytes()[..10]).await.expect("write");
    // Let the server read the head and start waiting for the body (nothing shows when it has).
    tokio::time::sleep(Duration::from_millis(100)).await;
    stream
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_substations_in_one_process_have_their_own_epoch_and_metrics() {
    let a = Server::start(config("a", 100.0)).await.expect("start a");
    let b = Server::start(config("b", 200.0)).await.expect("start b");
    assert_ne!(a.addr, b.addr);
    assert_eq!(send(a.addr, "POST", "/charge", EV).await.status, 201);
    let (load_a, load_b) = (a.state.report(), b.state.report());
    assert_ne!(load_a.epoch, load_b.epoch);
    assert_eq!((load_a.load_kw, load_b.load_kw), (11.0, 0.0));
    assert_eq!(b.state.id(), "b");
    let text = send(b.addr, "GET", "/metrics", "").await.text();
    assert_eq!(samples(&text)["substation_load_kw"], 0.0);
    assert_eq!(samples(&text)["substation_capacity_kw"], 200.0);
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_the_request_in_flight_and_closes_the_port() {
    let server = Server::start(config("s1", 100.0)).await.expect("start");
    let addr = server.addr;
    let mut stream = half_a_request(addr).await;
    let stopping = tokio::spawn(server.shutdown());
    wait_until(Duration::from_millis(100), || refuses_connections(addr)).await;
    assert!(
        refuses_connections(addr).await,
        "still accepting while stopping"
    );
    assert!(!stopping.is_finished());
    stream.write_all(&EV.as_bytes()[10..]).await.expect("write");
    let reply = read_reply(&mut stream).await;
    assert_eq!(reply.status, 201, "{}", reply.text());
    tokio::time::timeout(Duration::from_secs(1), stopping)
        .await
        .expect("shutdown returns once the request is answered")
        .expect("shutdown task");
}

/// On tokio's paused clock: the drain timeout is waited out in virtual time, exactly.
#[tokio::test(start_paused = true)]
async fn shutdown_gives_up_on_a_stalled_client_after_the_drain_timeout() {
    let server = Server::start(config("s1", 100.0)).await.expect("start");
    let _stalled = half_a_request(server.addr).await;
    let started = tokio::time::Instant::now();
    server.shutdown().await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1900), "{took:?}");
    assert!(took < Duration::from_secs(4), "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_and_drop_stop_a_substation_like_a_kill() {
    let server = Server::start(config("s1", 100.0)).await.expect("start");
    let addr = server.addr;
    let mut stalled = half_a_request(addr).await;
    let started = Instant::now();
    server.abort().await;
    assert!(started.elapsed() < Duration::from_millis(500));
    assert!(refuses_connections(addr).await);
    let _ = stalled.write_all(&EV.as_bytes()[10..]).await;
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut stalled, &mut rest).await;
    assert!(
        read.is_err() || rest.is_empty(),
        "the in-flight request was answered"
    );

    let server = Server::start(config("s2", 100.0)).await.expect("start");
    let (addr, state) = (server.addr, server.state.clone());
    drop(server);
    wait_until(Duration::from_millis(100), || refuses_connections(addr)).await;
    assert!(refuses_connections(addr).await);
    // The state outlives the server, for inspection.
    assert_eq!(state.report().substation, "s2");
}

#[tokio::test]
async fn an_invalid_config_is_refused_at_start() {
    for bad in [
        Config {
            capacity_kw: 0.0,
            ..config("s1", 1.0)
        },
        Config {
            time_scale: f64::NAN,
            ..config("s1", 1.0)
        },
        Config {
            id: String::new(),
            ..config("s1", 1.0)
        },
    ] {
        let err = Server::start(bad).await.err().expect("refused");
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    }
}
