//! Reload triggers besides `POST /reload`: a change of the config file and SIGHUP.
//!
//! The file is polled (every 250 ms, by content, so `touch` alone does nothing and an editor
//! that writes in several steps, or Kubernetes swapping a ConfigMap's symlink, is seen once it
//! has settled): a reload starts when the content differs from the last one seen and has
//! stayed the same for 300 ms. Polling needs no platform watcher and works the same on every
//! filesystem, including the volume mounts of containers. Every reload goes through
//! [`Grid::reload`], which validates the whole file before anything changes.
//!
//! The same service resolves substation host names again every `dns.refresh_ms`
//! ([`Grid::refresh_addresses`]).

use crate::grid::Grid;
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

const POLL: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_millis(300);

pub struct ReloadService {
    pub grid: Arc<Grid>,
    pub path: PathBuf,
}

/// A digest of the file's content; `None` while it cannot be read (mid-replace).
fn fingerprint(path: &PathBuf) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    Some(h.finish())
}

impl ReloadService {
    async fn reload(&self, trigger: &str) {
        log::info!("config reload ({trigger}): {}", self.path.display());
        // Failures are logged, counted and shown by the grid; nothing else to do here.
        let _ = self.grid.reload().await;
    }

    /// Wait until the file's content has stayed the same for [`SETTLE`].
    async fn settled(&self, mut seen: Option<u64>) -> Option<u64> {
        loop {
            tokio::time::sleep(SETTLE).await;
            let now = fingerprint(&self.path);
            if now == seen {
                return now;
            }
            seen = now;
        }
    }
}

#[async_trait]
impl BackgroundService for ReloadService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut hangup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        {
            Ok(s) => Some(s),
            Err(e) => {
                log::error!("cannot watch SIGHUP, reload by file change or POST /reload only: {e}");
                None
            }
        };
        let mut last = fingerprint(&self.path);
        let mut next_dns = tokio::time::Instant::now() + self.grid.config().dns_refresh;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_dns) => {
                    self.grid.refresh_addresses().await;
                    next_dns = tokio::time::Instant::now() + self.grid.config().dns_refresh;
                }
                Some(()) = async { hangup.as_mut()?.recv().await } => {
                    self.reload("SIGHUP").await;
                    last = fingerprint(&self.path);
                }
                _ = tokio::time::sleep(POLL) => {
                    let now = fingerprint(&self.path);
                    if now.is_some() && now != last {
                        let settled = self.settled(now).await;
                        if settled.is_some() && settled != last {
                            self.reload("file changed").await;
                            last = settled;
                        }
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}
