//! The guard driven the way Pingora drives it: reads until a header is whole, the filter's
//! signals, and a client on the other end of an in-memory pipe. Time is paused.

use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const LIMITS: HeaderLimits = HeaderLimits {
    timeout: Duration::from_millis(500),
    max_bytes: 1024,
};

/// A guard around one end of a pipe, the client's end, and the cut signal.
fn guarded() -> (HeaderGuard, DuplexStream, Arc<AtomicBool>) {
    let (server, client) = tokio::io::duplex(1 << 20);
    let cut = Arc::new(AtomicBool::new(false));
    let guard = HeaderGuard::new(Box::new(server), LIMITS, Arc::clone(&cut));
    (guard, client, cut)
}

/// What a read gives within `limit`: `Some(bytes)` or `None` when it still waits.
async fn read(guard: &mut HeaderGuard, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 64 * 1024];
    match tokio::time::timeout(limit, guard.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(e)) => panic!("the guard never fails a read: {e}"),
        Err(_) => None,
    }
}

/// Everything the client receives until the guard closes its side.
async fn answer_of(client: &mut DuplexStream) -> String {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test(start_paused = true)]
async fn a_header_split_across_reads_in_time_is_passed_whole() {
    let (mut guard, mut client, cut) = guarded();
    let mut got = Vec::new();
    for part in [
        &b"POST /charge HTTP/1.1\r\nhost: x\r"[..],
        b"\n\r",
        b"\ncontent-length: 2\r\n\r\n",
    ] {
        client.write_all(part).await.unwrap();
        got.extend(read(&mut guard, Duration::from_millis(100)).await.unwrap());
    }
    assert!(got.ends_with(b"\r\n\r\n"));
    guard.header_parsed();
    client.write_all(b"{}").await.unwrap();
    assert_eq!(
        read(&mut guard, Duration::from_secs(1)).await.unwrap(),
        b"{}"
    );
    // Well past the header timeout, the guard still waits quietly.
    assert_eq!(read(&mut guard, Duration::from_secs(2)).await, None);
    assert!(!cut.load(Relaxed));
}

#[tokio::test(start_paused = true)]
async fn body_reads_are_not_counted_however_large_or_slow() {
    let (mut guard, mut client, cut) = guarded();
    client
        .write_all(b"GET / HTTP/1.1\nhost: x\n\n")
        .await
        .unwrap();
    read(&mut guard, Duration::from_millis(10)).await.unwrap();
    guard.header_parsed();
    for _ in 0..10 {
        client.write_all(&[b'a'; 1000]).await.unwrap();
        assert_eq!(
            read(&mut guard, Duration::from_secs(1))
                .await
                .unwrap()
                .len(),
            1000
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Well past the header timeout, the guard still waits quietly.
    assert_eq!(read(&mut guard, Duration::from_secs(2)).await, None);
    assert!(!cut.load(Relaxed));
}

#[tokio::test(start_paused = true)]
async fn an_unfinished_header_over_the_limit_is_answered_431_and_cut() {
    let (mut guard, mut client, cut) = guarded();
    client
        .write_all(format!("GET / HTTP/1.1\r\nx: {}", "a".repeat(4000)).as_bytes())
        .await
        .unwrap();
    let first = read(&mut guard, Duration::from_millis(10)).await.unwrap();
    assert_eq!(
        first.len(),
        LIMITS.max_bytes + 1,
        "one byte past the limit at most"
    );
    // Pingora asks for more: the header is unfinished and over the limit.
    assert_eq!(read(&mut guard, Duration::from_secs(5)).await, None);
    drop(client.write_all(b"more").await);
    let answer = answer_of(&mut client).await;
    assert!(
        answer.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{answer}"
    );
    assert!(answer.contains("connection: close\r\n"));
    assert!(
        answer.ends_with(r#"{"error":"request headers are larger than 1024 bytes"}"#),
        "{answer}"
    );
    assert!(cut.load(Relaxed), "the connection is ended");
}

#[tokio::test(start_paused = true)]
async fn a_header_one_byte_at_a_time_is_cut_with_408_at_the_timeout() {
    let (mut guard, client, _cut) = guarded();
    let started = Instant::now();
    // Pingora's side: read and read again, as long as it takes.
    let reader = tokio::spawn(async move {
        while read(&mut guard, Duration::from_secs(60)).await.is_some() {}
        guard
    });
    let (mut from, mut to) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        for b in b"GET / HTTP/1.1\r\nhost: x\r\n".iter().cycle().take(30) {
            if to.write_all(&[*b]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let mut answer = Vec::new();
    from.read_to_end(&mut answer).await.unwrap();
    let took = started.elapsed();
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.starts_with("HTTP/1.1 408 Request Timeout\r\n"),
        "{answer}"
    );
    assert!(answer.contains("within 500 ms"), "{answer}");
    assert!(
        took >= Duration::from_millis(500) && took < Duration::from_millis(700),
        "{took:?}"
    );
    reader.abort();
    writer.abort();
}

#[tokio::test(start_paused = true)]
async fn a_new_connection_that_sends_nothing_is_closed_silently_at_the_timeout() {
    let (mut guard, mut client, cut) = guarded();
    assert_eq!(read(&mut guard, Duration::from_millis(400)).await, None);
    assert_eq!(read(&mut guard, Duration::from_millis(200)).await, None);
    assert!(cut.load(Relaxed), "cut at the timeout");
    drop(guard);
    assert_eq!(answer_of(&mut client).await, "");
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_is_left_to_the_keep_alive_timeout() {
    let (mut guard, mut client, cut) = guarded();
    client
        .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    read(&mut guard, Duration::from_millis(10)).await.unwrap();
    guard.header_parsed();
    guard.request_done();
    // Idle for far longer than the header timeout: nothing happens.
    assert_eq!(read(&mut guard, Duration::from_secs(30)).await, None);
    assert!(!cut.load(Relaxed));
    // The next request's header is timed from its first byte, and counted afresh.
    client.write_all(&[b'G'; 1000]).await.unwrap();
    assert_eq!(
        read(&mut guard, Duration::from_millis(10))
            .await
            .unwrap()
            .len(),
        1000
    );
    assert_eq!(read(&mut guard, Duration::from_millis(400)).await, None);
    assert!(!cut.load(Relaxed));
    assert_eq!(read(&mut guard, Duration::from_millis(200)).await, None);
    let answer = answer_of(&mut client).await;
    assert!(
        answer.starts_with("HTTP/1.1 408 "),
        "cut 500 ms after its first byte: {answer}"
    );
}

#[test]
fn the_limit_stays_below_pingoras_own_ceiling() {
    let (server, _client) = tokio::io::duplex(16);
    let limits = HeaderLimits {
        max_bytes: 1 << 20,
        ..LIMITS
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _enter = rt.enter();
    let guard = HeaderGuard::new(Box::new(server), limits, Arc::new(AtomicBool::new(false)));
    assert_eq!(guard.limits.max_bytes, CEILING);
}

#[tokio::test(start_paused = true)]
async fn arrivals_settle_once_every_first_header_is_parsed_or_its_connection_ended() {
    let arrivals = Arc::new(Arrivals::default());
    let (mut parsed, _client_a, _) = guarded();
    parsed.arrival = Some(arrivals.enter());
    let (mut dropped, _client_b, _) = guarded();
    dropped.arrival = Some(arrivals.enter());
    let waits = |arrivals: Arc<Arrivals>| async move {
        tokio::time::timeout(Duration::from_secs(1), arrivals.settled())
            .await
            .is_err()
    };
    assert!(waits(Arc::clone(&arrivals)).await, "two connections wait");
    parsed.header_parsed();
    // The next requests on the connection do not count again.
    parsed.request_done();
    parsed.header_parsed();
    assert!(waits(Arc::clone(&arrivals)).await, "one connection waits");
    drop(dropped);
    assert!(!waits(Arc::clone(&arrivals)).await, "none waits");
    assert_eq!(arrivals.pending.load(Relaxed), 0);
    drop(parsed);
    assert_eq!(arrivals.pending.load(Relaxed), 0, "counted down once each");
}
