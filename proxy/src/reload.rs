//! Reloads: a new config file validated whole, then applied in one step, and what triggers
//! it. [`Reloader::reload`] is the one path (the admin API's `POST /reload`, SIGHUP and a
//! change of the file all take it): read, validate, refuse a change of a listen address,
//! resolve the substations' addresses (`discovery`), apply (`pool`), and keep the outcome for
//! `/status`, the log and the metrics. An invalid file changes nothing. Reloads are serialised.
//!
//! Triggers besides `POST /reload` ([`ReloadService`]): a change of the config file and SIGHUP.
//!
//! The file is polled (every 250 ms, by content, so `touch` alone does nothing and an editor
//! that writes in several steps, or Kubernetes swapping a ConfigMap's symlink, is seen once it
//! has settled): a reload starts when the content differs from the last one seen and has
//! stayed the same for 300 ms. Polling needs no platform watcher and works the same on every
//! filesystem, including the volume mounts of containers. Every reload goes through
//! [`Reloader::reload`], which validates the whole file before anything changes.
//!
//! The same service resolves substation host names again every `dns.refresh_ms`
//! ([`Reloader::refresh_addresses`], with `discovery::moved`): not counted as a reload, since
//! the file did not change.

use crate::config::{Config, ConfigError};
use crate::discovery;
use crate::pool::Pool;
use async_trait::async_trait;
use gridlb_protocol::unix_now;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The outcome of the last reload, for `/status` and `POST /reload`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReloadStatus {
    pub last_result: Option<String>,
    pub last_error: Option<String>,
    pub last_success_unix: Option<f64>,
}

/// Why a reload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    #[error("no config file to reload (started without --config)")]
    NoFile,
    #[error(transparent)]
    Invalid(#[from] ConfigError),
}

pub struct Reloader {
    pool: Arc<Pool>,
    path: Option<PathBuf>,
    status: Mutex<ReloadStatus>,
    /// Serialises reloads (file watch, SIGHUP, DNS refresh and the admin API may race).
    serial: tokio::sync::Mutex<()>,
}

impl Reloader {
    /// Reloads of the file at `path` (none: `POST /reload` answers that there is no file).
    pub fn new(pool: Arc<Pool>, path: Option<PathBuf>) -> Reloader {
        Reloader {
            pool,
            path,
            status: Mutex::new(ReloadStatus::default()),
            serial: tokio::sync::Mutex::new(()),
        }
    }

    pub fn path(&self) -> Option<&PathBuf> {
        self.path.as_ref()
    }

    /// Re-read the config file and apply it. Listen addresses cannot change at run time.
    pub async fn reload(&self) -> Result<Arc<Config>, ReloadError> {
        let _serial = self.serial.lock().await;
        let result = self.try_reload().await;
        let metrics = self.pool.table().metrics();
        let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                status.last_result = Some("success".into());
                status.last_error = None;
                status.last_success_unix = Some(unix_now());
                metrics.reload(true);
            }
            Err(e) => {
                log::error!("config reload failed, the old config keeps serving: {e}");
                status.last_result = Some("failure".into());
                status.last_error = Some(e.to_string());
                metrics.reload(false);
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<Arc<Config>, ReloadError> {
        let path = self.path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path)?;
        let old = self.pool.table().config();
        for (key, was, now) in [
            ("listen", old.listen, new.listen),
            ("admin.listen", old.admin.listen, new.admin.listen),
        ] {
            if was != now {
                return Err(ConfigError {
                    path: key.into(),
                    message: format!(
                        "cannot change from {was} to {now} at run time; restart gridlb or use a graceful upgrade"
                    ),
                }
                .into());
            }
        }
        if new.admin.token != old.admin.token {
            return Err(ConfigError {
                path: "admin.token_env".into(),
                message: "the admin token cannot be removed or changed by a reload (it guards reloads); restart gridlb to change it".into(),
            }
            .into());
        }
        let lookup = new.clone();
        let addrs = tokio::task::spawn_blocking(move || discovery::resolve_all(&lookup))
            .await
            .map_err(|e| ConfigError {
                path: "substations".into(),
                message: format!("address resolution did not finish: {e}"),
            })??;
        self.pool.apply(new, &addrs).await;
        Ok(self.pool.table().config())
    }

    /// Resolve the substations' host names again and apply the addresses that moved.
    pub async fn refresh_addresses(&self) {
        let _serial = self.serial.lock().await;
        let snapshot = self.pool.table().snapshot_full();
        if let Some(addrs) = discovery::moved(&snapshot).await {
            self.pool.apply((*snapshot.config).clone(), &addrs).await;
        }
    }

    pub fn status(&self) -> ReloadStatus {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

const POLL: Duration = Duration::from_millis(250);
const SETTLE: Duration = Duration::from_millis(300);

pub struct ReloadService {
    pub reloader: Arc<Reloader>,
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
        let _ = self.reloader.reload().await;
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
        let dns_refresh = || self.reloader.pool.table().config().dns_refresh;
        let mut next_dns = tokio::time::Instant::now() + dns_refresh();
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(next_dns) => {
                    self.reloader.refresh_addresses().await;
                    next_dns = tokio::time::Instant::now() + dns_refresh();
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
