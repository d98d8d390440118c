//! A connection accepted on one runtime and served from another, each runtime on its own
//! thread as in gridlb. It stays where it was accepted until it is kept alive (two answers
//! went out and a read waits); from then on it must be served by the runtime it moved to alone:
//! the accepting runtime is no longer driven here, so anything still registered there would
//! wait for ever.

use super::*;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::runtime::Builder;

fn current_thread() -> tokio::runtime::Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// A connection accepted by `runtime` as Pingora's listener gives it, and the client's end.
fn accepted_on(runtime: &tokio::runtime::Runtime) -> (Stream, std::net::TcpStream) {
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, peer) = listener.accept().await.unwrap();
        let digest = SocketDigest::from_raw_fd(socket.as_raw_fd());
        digest
            .peer_addr
            .set(Some(pingora_core::protocols::l4::socket::SocketAddr::Inet(
                peer,
            )))
            .unwrap();
        let mut accepted = TcpConnection::from(socket);
        accepted.set_socket_digest(digest);
        (Box::new(accepted) as Stream, client)
    })
}

/// What `local` reads within `limit`, `None` when the read still waits.
async fn read(local: &mut Local, limit: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 64];
    match tokio::time::timeout(limit, local.read(&mut buf)).await {
        Ok(read) => Some(buf[..read.unwrap()].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn a_kept_alive_connection_moves_to_the_runtime_that_serves_it() {
    let accepting = current_thread();
    let (accepted, mut client) = accepted_on(&accepting);
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let peer = client.local_addr().unwrap();
    let accepted_fd = accepted.id();
    // The accepting runtime is driven on its own thread until `stop` is sent.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let driver = std::thread::spawn(move || {
        accepting.block_on(async {
            let _ = stopped.await;
        });
        accepting
    });
    let (to_client, client_may) = mpsc::channel::<&str>();
    let server = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let wrapped = Local::wrap(accepted);
            let mut local = *wrapped
                .into_any()
                .downcast::<Local>()
                .expect("a TCP connection");
            // Waiting for a first request does not move it, nor does waiting after one answer
            // (the client may be closing).
            assert_eq!(read(&mut local, Duration::from_millis(50)).await, None);
            for request in ["one", "two"] {
                assert!(!local.moved());
                to_client.send("send a request").unwrap();
                let got = read(&mut local, Duration::from_secs(5)).await;
                assert_eq!(got.as_deref(), Some(request.as_bytes()));
                local.write_all(b"answer ").await.unwrap();
                local.write_all(request.as_bytes()).await.unwrap();
                local.flush().await.unwrap();
                if request == "one" {
                    assert_eq!(read(&mut local, Duration::from_millis(50)).await, None);
                }
            }
            assert!(
                !local.moved(),
                "a connection that closes now was never moved"
            );
            to_client.send("stop the accepting runtime").unwrap();
            // Kept alive: the first wait for the next request moves it.
            assert_eq!(read(&mut local, Duration::from_millis(50)).await, None);
            assert!(local.moved());
            assert_ne!(local.id(), accepted_fd, "a socket of its own");
            let digest = local.get_socket_digest().unwrap();
            // Copied from the accept, not asked of the socket.
            let known = digest.peer_addr.get().cloned().flatten();
            assert_eq!(known.and_then(|a| a.as_inet().copied()), Some(peer));
            to_client.send("send the third request").unwrap();
            let third = read(&mut local, Duration::from_secs(5)).await;
            assert_eq!(
                third.as_deref(),
                Some(&b"three"[..]),
                "read on this runtime"
            );
            local.write_all(b"answer").await.unwrap();
            local.write_all(b" three").await.unwrap();
            // Held until the flush: an answer's head and body leave together.
            let Socket::Moved { socket, .. } = &local.socket else {
                unreachable!("moved")
            };
            assert_eq!(socket.buffer(), b"answer three");
            local.flush().await.unwrap();
            Shutdown::shutdown(&mut local).await;
        })
    });
    for request in ["one", "two"] {
        assert_eq!(client_may.recv().unwrap(), "send a request");
        client.write_all(request.as_bytes()).unwrap();
        let mut got = vec![0u8; 7 + request.len()];
        client.read_exact(&mut got).unwrap();
        assert_eq!(got, format!("answer {request}").as_bytes());
    }
    assert_eq!(client_may.recv().unwrap(), "stop the accepting runtime");
    stop.send(()).unwrap();
    let accepting = driver.join().unwrap();
    assert_eq!(client_may.recv().unwrap(), "send the third request");
    client.write_all(b"three").unwrap();
    let mut rest = Vec::new();
    client.read_to_end(&mut rest).unwrap();
    assert_eq!(rest, b"answer three");
    server.join().unwrap();
    drop(accepting);
}

#[test]
fn only_threads_that_do_not_accept_move_their_connections() {
    // A thread whose runtime runs the accept loop keeps what it accepted.
    std::thread::spawn(|| {
        current_thread().block_on(async {
            assert!(must_move(), "before any accept, a thread could be either");
            assert!(
                Accepted.should_accept(None).await,
                "every connection is accepted"
            );
            assert!(!must_move());
        })
    })
    .join()
    .unwrap();
    // Another thread with a runtime of its own moves them.
    std::thread::spawn(|| current_thread().block_on(async { assert!(must_move()) }))
        .join()
        .unwrap();
    // One runtime shared by every thread: the socket is registered with it already.
    let shared = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let moves = shared.block_on(async { tokio::spawn(async { must_move() }).await.unwrap() });
    assert!(!moves, "a shared runtime never moves a connection");
}
