//! A connection accepted on one runtime and moved to another, each runtime on its own
//! thread as in gridlb: the moved connection must be served by the runtime it moved to alone
//! (the accepting runtime is never driven again here, so anything still registered there
//! would wait for ever), keep what was known of it at the accept, and write an answer's
//! pieces in one go.

use super::*;
use std::io::{Read, Write};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::runtime::Builder;

fn current_thread() -> tokio::runtime::Runtime {
    Builder::new_current_thread().enable_all().build().unwrap()
}

/// A connection accepted by `runtime` as Pingora's listener gives it, and the client's end.
fn accepted_on(runtime: &tokio::runtime::Runtime) -> (TcpConnection, std::net::TcpStream) {
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
        (accepted, client)
    })
}

#[test]
fn a_moved_connection_is_served_by_its_new_runtime_alone() {
    let accepting = current_thread();
    let (accepted, mut client) = accepted_on(&accepting);
    let peer = client.local_addr().unwrap();
    let accepted_fd = accepted.as_raw_fd();
    let served = std::thread::spawn(move || {
        current_thread().block_on(async move {
            let mut local = Local::from_accepted(&accepted).expect("the socket is duplicated");
            drop(accepted);
            assert_ne!(local.id(), accepted_fd, "a socket of its own");
            let digest = local.get_socket_digest().unwrap();
            // Copied from the accept, not asked of the socket.
            assert_eq!(
                digest
                    .peer_addr
                    .get()
                    .cloned()
                    .flatten()
                    .and_then(|a| a.as_inet().copied()),
                Some(peer)
            );
            let mut request = [0u8; 5];
            tokio::time::timeout(Duration::from_secs(5), local.read_exact(&mut request))
                .await
                .expect("the read completes on this runtime")
                .unwrap();
            assert_eq!(&request, b"hello");
            local.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            local.write_all(b"body").await.unwrap();
            // Held until the flush: the head and the body leave together.
            assert_eq!(local.socket.buffer(), b"HTTP/1.1 200 OK\r\n\r\nbody");
            local.flush().await.unwrap();
            assert!(local.socket.buffer().is_empty());
            Shutdown::shutdown(&mut local).await;
        })
    });
    client.write_all(b"hello").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = Vec::new();
    client.read_to_end(&mut answer).unwrap();
    assert_eq!(answer, b"HTTP/1.1 200 OK\r\n\r\nbody");
    served.join().unwrap();
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
