//! What the header guard adds to the hot path: one request header read through the guard
//! (and its two phase signals) against the same read from the plain stream, and the guard's
//! cost per connection (a clock read, two allocations).
//!
//! Run with `cargo bench -p gridlb --bench header_guard`.

use criterion::{Criterion, criterion_group, criterion_main};
use gridlb::header_guard::{HeaderGuard, HeaderLimits};
use pingora_core::protocols::Stream;
use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HEAD: &[u8] = b"POST /charge HTTP/1.1\r\nhost: gridlb\r\ncontent-type: application/json\r\nx-request-id: 0123456789abcdef\r\ncontent-length: 52\r\n\r\n";

const LIMITS: HeaderLimits = HeaderLimits {
    timeout: Duration::from_secs(10),
    max_bytes: 32 * 1024,
};

fn header_read(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a runtime");
    let _enter = rt.enter();
    let mut group = c.benchmark_group("header_read");
    let mut buf = vec![0u8; 4096];
    let (server, mut client) = tokio::io::duplex(1 << 16);
    let mut plain: Stream = Box::new(server);
    group.bench_function("plain", |b| {
        b.iter(|| {
            rt.block_on(async {
                client.write_all(HEAD).await.expect("write");
                black_box(plain.read(&mut buf).await.expect("read"));
            })
        })
    });
    let (server, mut client) = tokio::io::duplex(1 << 16);
    let mut guard = HeaderGuard::new(Box::new(server), LIMITS, Arc::new(AtomicBool::new(false)));
    group.bench_function("guarded", |b| {
        b.iter(|| {
            rt.block_on(async {
                client.write_all(HEAD).await.expect("write");
                black_box(guard.read(&mut buf).await.expect("read"));
                guard.header_parsed();
                guard.request_done();
            })
        })
    });
    group.finish();

    let mut group = c.benchmark_group("connection");
    group.bench_function("plain", |b| {
        b.iter(|| {
            let (server, client) = tokio::io::duplex(64);
            let stream: Stream = Box::new(server);
            black_box((stream, client));
        })
    });
    group.bench_function("guarded", |b| {
        b.iter(|| {
            let (server, client) = tokio::io::duplex(64);
            let cut = Arc::new(AtomicBool::new(false));
            let stream: Stream = Box::new(HeaderGuard::new(Box::new(server), LIMITS, cut));
            black_box((stream, client));
        })
    });
    group.finish();
}

criterion_group!(benches, header_read);
criterion_main!(benches);
