//! The client against tiny in-process servers on port 0, each scripted per connection.

use super::*;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use tokio::net::TcpListener;

/// A server on a free loopback port that runs `script` on every connection it accepts (with
/// the connection's number, from 0); also returns how many it accepted.
async fn server<F, Fut>(script: F) -> (SocketAddr, Arc<AtomicUsize>)
where
    F: Fn(usize, TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = count.fetch_add(1, SeqCst);
            tokio::spawn(script(n, stream));
        }
    });
    (addr, accepted)
}

/// Read one request (head and `content-length` body); `None` when the client closed.
async fn read_request(stream: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 1024];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .map_or(0, |v| v.trim().parse().unwrap());
    while buf.len() < head_end + length {
        let mut chunk = [0u8; 1024];
        let n = stream.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(buf)
}

/// A `200` whose body is the request it answers, kept alive.
fn echo(request: &[u8]) -> Vec<u8> {
    let mut answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nx-substation-load: seq=1\r\n\r\n",
        request.len()
    )
    .into_bytes();
    answer.extend_from_slice(request);
    answer
}

/// Answer every request on the connection with [`echo`].
async fn echo_all(_: usize, mut stream: TcpStream) {
    while let Some(request) = read_request(&mut stream).await {
        if stream.write_all(&echo(&request)).await.is_err() {
            return;
        }
    }
}

fn client() -> Client {
    Client::new(Duration::from_secs(5))
}

#[tokio::test]
async fn content_length_answers_come_whole_over_one_kept_connection() {
    let (addr, accepted) = server(echo_all).await;
    let c = client();
    for i in 0..3 {
        let body = format!("{{\"n\":{i}}}");
        let answer = c
            .request(
                addr,
                "POST",
                "/charge",
                &[("x-charge-kw", "11")],
                body.as_bytes(),
            )
            .await
            .unwrap();
        assert_eq!(answer.status, 200);
        assert_eq!(answer.header("x-substation-load"), Some("seq=1"));
        let seen = String::from_utf8(answer.body.to_vec()).unwrap();
        assert!(seen.starts_with("POST /charge HTTP/1.1\r\n"), "{seen}");
        assert!(seen.contains(&format!("host: {addr}\r\n")), "{seen}");
        assert!(seen.contains("content-length: 7\r\n"), "{seen}");
        assert!(seen.contains("x-charge-kw: 11\r\n"), "{seen}");
        assert!(seen.ends_with(&format!("\r\n\r\n{body}")), "{seen}");
    }
    assert_eq!(accepted.load(SeqCst), 1);
    assert_eq!(c.idle(addr), 1);
}

#[tokio::test]
async fn json_bodies_parse_and_others_are_null() {
    let (addr, _) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        let body = br#"{"substation":"s2","load_kw":3.5}"#;
        let head = format!(
            "HTTP/1.1 201 Created\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body).await.unwrap();
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 3\r\n\r\nnot")
            .await
            .unwrap();
    })
    .await;
    let c = client();
    let answer = c.request(addr, "GET", "/load", &[], b"").await.unwrap();
    assert_eq!(
        (answer.status, answer.json()["substation"].as_str()),
        (201, Some("s2"))
    );
    let answer = c.request(addr, "GET", "/load", &[], b"").await.unwrap();
    assert_eq!(answer.json(), serde_json::Value::Null);
}

#[tokio::test]
async fn chunked_answers_are_joined_and_the_connection_kept() {
    let (addr, accepted) = server(|_, mut s: TcpStream| async move {
        while read_request(&mut s).await.is_some() {
            let answer = "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
                          5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n";
            s.write_all(answer.as_bytes()).await.unwrap();
        }
    })
    .await;
    let c = client();
    for _ in 0..2 {
        let answer = c.request(addr, "GET", "/", &[], b"").await.unwrap();
        assert_eq!(&answer.body[..], b"hello world");
    }
    assert_eq!(accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn informational_answers_are_skipped() {
    let (addr, _) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        s.write_all(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\nok",
        )
        .await
        .unwrap();
    })
    .await;
    let answer = client()
        .request(addr, "POST", "/", &[], b"x")
        .await
        .unwrap();
    assert_eq!((answer.status, &answer.body[..]), (201, &b"ok"[..]));
}

#[tokio::test]
async fn an_answer_without_a_length_is_read_to_the_end_and_its_connection_dropped() {
    let (addr, _) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
            .await
            .unwrap();
    })
    .await;
    let c = client();
    let answer = c.request(addr, "GET", "/", &[], b"").await.unwrap();
    assert_eq!(&answer.body[..], b"all of it");
    assert_eq!(c.idle(addr), 0);
}

#[tokio::test]
async fn head_and_no_content_answers_have_no_body_and_keep_the_connection() {
    let (addr, accepted) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n")
            .await
            .unwrap();
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n")
            .await
            .unwrap();
        echo_all(0, s).await;
    })
    .await;
    let c = client();
    assert!(
        c.request(addr, "HEAD", "/", &[], b"")
            .await
            .unwrap()
            .body
            .is_empty()
    );
    let answer = c
        .request(addr, "DELETE", "/charge/x", &[], b"")
        .await
        .unwrap();
    assert_eq!((answer.status, answer.body.len()), (204, 0));
    assert_eq!(
        c.request(addr, "GET", "/", &[], b"").await.unwrap().status,
        200
    );
    assert_eq!(accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn a_request_unanswered_on_a_reused_connection_is_sent_once_more_on_a_fresh_one() {
    // The first connection answers once, then takes the next request and closes unanswered
    // (an idle timeout racing the request); later connections answer everything.
    let (addr, accepted) = server(|n, mut s: TcpStream| async move {
        if n == 0 {
            let first = read_request(&mut s).await.unwrap();
            s.write_all(&echo(&first)).await.unwrap();
            read_request(&mut s).await;
            return;
        }
        echo_all(n, s).await;
    })
    .await;
    let c = client();
    c.request(addr, "GET", "/one", &[], b"").await.unwrap();
    let answer = c.request(addr, "POST", "/two", &[], b"b").await.unwrap();
    assert!(answer.body.starts_with(b"POST /two "));
    assert_eq!(accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn a_connection_the_server_closed_while_idle_is_not_reused() {
    let (addr, accepted) = server(|_, mut s: TcpStream| async move {
        let request = read_request(&mut s).await.unwrap();
        s.write_all(&echo(&request)).await.unwrap();
    })
    .await;
    let c = client();
    c.request(addr, "GET", "/", &[], b"").await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    c.request(addr, "GET", "/", &[], b"").await.unwrap();
    assert_eq!(accepted.load(SeqCst), 2);
}

#[tokio::test]
async fn a_request_that_got_part_of_an_answer_is_not_sent_again() {
    let (addr, accepted) = server(|n, mut s: TcpStream| async move {
        let first = read_request(&mut s).await.unwrap();
        s.write_all(&echo(&first)).await.unwrap();
        if n == 0 {
            read_request(&mut s).await;
            s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nabc")
                .await
                .unwrap();
        }
    })
    .await;
    let c = client();
    c.request(addr, "GET", "/", &[], b"").await.unwrap();
    let err = c.request(addr, "POST", "/", &[], b"x").await.unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err}");
    assert_eq!(accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn a_fresh_connection_closed_without_an_answer_is_an_error_not_a_retry() {
    let (addr, accepted) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
    })
    .await;
    let err = client()
        .request(addr, "GET", "/", &[], b"")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Closed { .. }), "{err}");
    assert_eq!(accepted.load(SeqCst), 1);
}

#[tokio::test]
async fn a_silent_server_is_cut_off_at_the_timeout() {
    let (addr, _) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let started = Instant::now();
    let c = Client::new(Duration::from_millis(200));
    let err = c.request(addr, "GET", "/load", &[], b"").await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(err.to_string().contains("GET /load"), "{err}");
}

#[tokio::test]
async fn bad_answers_and_bad_requests_are_errors() {
    let (addr, _) = server(|_, mut s: TcpStream| async move {
        read_request(&mut s).await;
        s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n")
            .await
            .unwrap();
    })
    .await;
    let c = client();
    let err = c.request(addr, "GET", "/", &[], b"").await.unwrap_err();
    assert!(matches!(err, ClientError::InvalidAnswer { .. }), "{err}");
    let err = c
        .request(addr, "GET", "/", &[("x-a", "1\r\nx-b: 2")], b"")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
    let err = c
        .request(addr, "GET", "no-slash", &[], b"")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::InvalidRequest(_)), "{err}");
}

#[tokio::test]
async fn nobody_listening_is_a_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = client()
        .request(addr, "GET", "/", &[], b"")
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
}

#[tokio::test]
async fn a_request_that_says_close_neither_takes_nor_returns_a_pooled_connection() {
    let (addr, accepted) = server(echo_all).await;
    let c = client();
    c.request(addr, "GET", "/load", &[], b"").await.unwrap();
    assert_eq!(c.idle(addr), 1);
    let close = [("connection", "close")];
    for _ in 0..2 {
        let answer = c.request(addr, "GET", "/load", &close, b"").await.unwrap();
        assert_eq!(answer.status, 200);
    }
    assert_eq!(
        accepted.load(SeqCst),
        3,
        "each closing request on its own connection"
    );
    assert_eq!(
        c.idle(addr),
        1,
        "the kept connection is still there, and only it"
    );
}
