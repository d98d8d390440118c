//! Memory given back when client connections end.
//!
//! The allocator (mimalloc, `main.rs`) returns a page to the system once the thread that owns
//! it collects it, which it does while it allocates. A proxy's worker threads do nothing
//! between connections, so after a burst of connections the pages they had used stayed
//! resident until traffic came back: about 15 MiB above idle after bursts of 2,000 idle
//! connections (bench/RESULTS.md, "Idle-connection bursts"), gone at the first requests.
//!
//! [`Relieved`] wraps a service's app: each worker thread collects its own free pages every
//! [`BATCH`] connections it ends, and whichever thread ends the service's last open
//! connection collects at once and also carries out every purge the allocator had put off
//! (it delays them, `main.rs`, and nothing else would run them on an idle proxy). A
//! collection walks one thread's pages (microseconds); under steady load with kept-alive
//! clients connections rarely end, so it costs next to nothing.

use async_trait::async_trait;
use pingora_core::apps::ServerApp;
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// Connections a worker thread ends between two collections of its free pages.
pub const BATCH: u32 = 64;

thread_local! {
    /// Connections this thread ended since it last collected.
    static ENDED: Cell<u32> = const { Cell::new(0) };
}

/// A service's app whose connections give their memory back when they end.
pub struct Relieved<A> {
    inner: Arc<A>,
    /// Connections open now.
    open: AtomicUsize,
}

impl<A> Relieved<A> {
    pub fn new(inner: A) -> Relieved<A> {
        Relieved {
            inner: Arc::new(inner),
            open: AtomicUsize::new(0),
        }
    }
}

#[async_trait]
impl<A> ServerApp for Relieved<A>
where
    A: ServerApp + Send + Sync + 'static,
{
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        // Counted down however the connection ends, its task dropped included.
        let _open = Open::enter(&self.open);
        self.inner.process_new(stream, shutdown).await
    }

    async fn cleanup(&self) {
        self.inner.cleanup().await;
    }
}

/// One open connection of a [`Relieved`] app.
struct Open<'a>(&'a AtomicUsize);

impl<'a> Open<'a> {
    fn enter(open: &'a AtomicUsize) -> Open<'a> {
        open.fetch_add(1, Relaxed);
        Open(open)
    }
}

impl Drop for Open<'_> {
    fn drop(&mut self) {
        let last = self.0.fetch_sub(1, Relaxed) == 1;
        let force = match ended_one(last) {
            Collect::Nothing => return,
            Collect::Batch => false,
            Collect::Everything => true,
        };
        // SAFETY: collects the calling thread's own heap (and, forced, purges what the
        // allocator had put off), which mimalloc allows at any time; memory still in use is
        // left as it is.
        unsafe { libmimalloc_sys::mi_collect(force) };
    }
}

/// What a thread does when it has ended a connection.
#[derive(Debug, PartialEq, Eq)]
enum Collect {
    Nothing,
    /// Its own free pages (purges that are due included).
    Batch,
    /// The last open connection ended: its own free pages, and every purge put off.
    Everything,
}

/// Count a connection this thread ended; what it collects now.
fn ended_one(last_open: bool) -> Collect {
    let ended = ENDED.get() + 1;
    let collect = if last_open {
        Collect::Everything
    } else if ended >= BATCH {
        Collect::Batch
    } else {
        Collect::Nothing
    };
    let counted = if collect == Collect::Nothing {
        ended
    } else {
        0
    };
    ENDED.set(counted);
    collect
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_collects_every_batch_and_when_the_last_connection_ends() {
        ENDED.set(0);
        let due: Vec<Collect> = (0..2 * BATCH).map(|_| ended_one(false)).collect();
        assert_eq!(due.iter().filter(|d| **d != Collect::Nothing).count(), 2);
        assert_eq!(due[BATCH as usize - 1], Collect::Batch);
        assert_eq!(due[2 * BATCH as usize - 1], Collect::Batch);
        assert_eq!(ended_one(false), Collect::Nothing);
        assert_eq!(
            ended_one(true),
            Collect::Everything,
            "the last open connection ended"
        );
        assert_eq!(ended_one(false), Collect::Nothing, "counting starts again");
    }

    #[test]
    fn the_open_count_follows_connections_however_they_end() {
        let open = AtomicUsize::new(0);
        let a = Open::enter(&open);
        let b = Open::enter(&open);
        assert_eq!(open.load(Relaxed), 2);
        drop(a);
        drop(b);
        assert_eq!(open.load(Relaxed), 0);
    }
}
