//! Waiting on a condition rather than on the clock: poll until it holds, within a limit.
//!
//! The polling pause runs on tokio's clock, so a test with a paused clock
//! (`tokio::time::pause`) polls on virtual time while its limit is measured in real time;
//! such tests should wait on their own timers instead.

use std::future::Future;
use std::time::{Duration, Instant};

/// How often [`wait_until`] looks again.
pub const POLL: Duration = Duration::from_millis(20);

/// Poll `check` every [`POLL`] until it holds; the time it took, or `None` after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    wait_every(POLL, limit, check).await
}

/// [`wait_until`] with another polling pause.
pub async fn wait_every<F, Fut>(every: Duration, limit: Duration, mut check: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if check().await {
            return Some(started.elapsed());
        }
        if started.elapsed() > limit {
            return None;
        }
        tokio::time::sleep(every).await;
    }
}

/// Poll the blocking `check` every `every` until it holds; false after `limit`. For tests
/// outside a runtime (waiting on a child process, say).
pub fn wait_blocking(every: Duration, limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(every);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn a_condition_that_comes_true_is_seen() {
        let n = AtomicU32::new(0);
        let took = wait_until(Duration::from_secs(5), || async {
            n.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await;
        assert!(took.is_some());
        assert_eq!(n.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_condition_that_never_holds_gives_up_after_the_limit() {
        assert_eq!(
            wait_until(Duration::from_millis(60), || async { false }).await,
            None
        );
    }

    #[test]
    fn the_blocking_wait_gives_up_too() {
        assert!(!wait_blocking(
            Duration::from_millis(5),
            Duration::from_millis(20),
            || false
        ));
        assert!(wait_blocking(
            Duration::from_millis(5),
            Duration::from_millis(20),
            || true
        ));
    }
}
