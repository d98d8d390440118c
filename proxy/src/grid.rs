//! The grid: gridlb's run-time state, shared by the proxy, the probe, the admin API and the
//! reload machinery.
//!
//! One [`Snapshot`] (the validated config plus the [`SubstationState`] of every configured
//! substation) lives in an `ArcSwap`; a reload builds a new snapshot and swaps it in one
//! step, so a request sees either the old grid or the new one, never a mix. Substation state
//! is keyed by name and address: a substation that keeps both across a reload keeps its
//! report, health and counters, whatever else changes (weight, drain).
//!
//! Pingora's `LoadBalancer` owns membership and health: discovery ([`ConfigDiscovery`])
//! reads the snapshot, and its health registry is keyed by address only, so a change of
//! weight (part of a Pingora `Backend`'s identity) does not reset health.

use crate::config::{Config, ConfigError};
use crate::discovery::ConfigDiscovery;
use crate::metrics::Metrics;
use crate::probe::LoadProbe;
use crate::selection::{GridSelection, Rng, SelectorConfig, request_key};
use crate::table::{Reservation, SubstationState};
use arc_swap::ArcSwap;
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// A configured substation and its live state.
#[derive(Debug, Clone)]
pub struct Substation {
    pub config: crate::config::SubstationConfig,
    pub state: Arc<SubstationState>,
}

/// The config and the substations it names, swapped as one.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub substations: Vec<Substation>,
}

impl Snapshot {
    pub fn find(&self, name: &str) -> Option<&Substation> {
        self.substations.iter().find(|s| s.config.name == name)
    }
}

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

pub struct Grid {
    snapshot: Arc<ArcSwap<Snapshot>>,
    lb: Arc<LoadBalancer<GridSelection>>,
    selector: SelectorConfig,
    pub metrics: Arc<Metrics>,
    config_path: Option<PathBuf>,
    reload: Mutex<ReloadStatus>,
    /// Serialises reloads (file watch, SIGHUP and the admin API may race).
    reload_lock: tokio::sync::Mutex<()>,
    /// Wakes the probe schedule early (a reload added substations).
    probe_now: tokio::sync::Notify,
    /// Becomes true when the first probe round has completed.
    first_round: tokio::sync::watch::Sender<bool>,
    /// Which substation each recent Idempotency-Key went to.
    pub affinity: crate::affinity::Affinity,
    /// Requests in progress, capped by `limits.max_concurrent_requests`.
    pub gate: Arc<crate::gate::Gate>,
    /// Probes on demand, when the grid looks full (see [`Grid::refresh_for`]).
    refresher: LoadProbe,
    /// One refresh at a time; concurrent callers share its result.
    refresh_lock: tokio::sync::Mutex<()>,
}

/// A refusal is never based on a report older than this.
const FRESH: std::time::Duration = std::time::Duration::from_millis(25);

impl Grid {
    /// Build the grid for `config`. `rng` makes selection reproducible in tests.
    pub fn new(
        config: Config,
        config_path: Option<PathBuf>,
        metrics: Arc<Metrics>,
        rng: Rng,
    ) -> Arc<Grid> {
        let selector = SelectorConfig {
            settings: Arc::new(ArcSwap::from_pointee(config.selection.clone())),
            rng: Arc::new(rng),
        };
        let snapshot = Arc::new(ArcSwap::from_pointee(build_snapshot(Arc::new(config), &[])));
        let registry = Arc::new(HealthRegistry::with_equivalence(|b: &Backend| {
            let mut h = DefaultHasher::new();
            b.addr.hash(&mut h);
            h.finish()
        }));
        let mut backends = Backends::new_with_health_registry(
            Box::new(ConfigDiscovery::new(Arc::clone(&snapshot))),
            registry,
        );
        let refresher = LoadProbe::new(Arc::clone(&snapshot), Arc::clone(&metrics));
        backends.set_health_check(Box::new(LoadProbe::new(
            Arc::clone(&snapshot),
            Arc::clone(&metrics),
        )));
        let lb = LoadBalancer::from_backends_with_config(backends, Some(selector.clone()));
        Arc::new(Grid {
            snapshot,
            lb: Arc::new(lb),
            selector,
            metrics,
            config_path,
            reload: Mutex::new(ReloadStatus::default()),
            reload_lock: tokio::sync::Mutex::new(()),
            probe_now: tokio::sync::Notify::new(),
            first_round: tokio::sync::watch::Sender::new(false),
            affinity: crate::affinity::Affinity::new(100_000, std::time::Duration::from_secs(900)),
            gate: Arc::new(crate::gate::Gate::default()),
            refresher,
            refresh_lock: tokio::sync::Mutex::new(()),
        })
    }

    pub fn snapshot(&self) -> arc_swap::Guard<Arc<Snapshot>> {
        self.snapshot.load()
    }

    pub fn config(&self) -> Arc<Config> {
        Arc::clone(&self.snapshot.load().config)
    }

    pub fn load_balancer(&self) -> &Arc<LoadBalancer<GridSelection>> {
        &self.lb
    }

    /// Choose a substation for `kw` and reserve the power there. `tried` are the addresses
    /// this request already used (never the same one twice).
    pub fn select(&self, kw: f64, tried: &[SocketAddr]) -> Option<Reservation> {
        let max_utilization = self.selector.settings.load().max_utilization;
        let reserved = std::cell::RefCell::new(None);
        let max_iterations = self.snapshot.load().substations.len() * 2 + 2;
        self.lb
            .select_with(&request_key(kw), max_iterations, |backend, ready| {
                if !ready || tried.contains(&backend.addr_inet()) {
                    return false;
                }
                let Some(state) = backend.ext.get::<Arc<SubstationState>>() else {
                    return false;
                };
                match state.try_reserve(kw, max_utilization) {
                    Some(r) => {
                        *reserved.borrow_mut() = Some(r);
                        true
                    }
                    None => false,
                }
            });
        reserved.into_inner()
    }

    /// When no substation seems to have room for `kw`, the reports may just be stale (sessions
    /// end between probes). Re-probe, now and in parallel, every eligible substation whose
    /// capacity could take `kw` and whose report is older than [`FRESH`], so that the caller
    /// can select again. Concurrent callers wait for the same round instead of probing again
    /// (and then find the reports fresh); a round takes at most one probe timeout.
    pub async fn refresh_for(&self, kw: f64) {
        let _serial = self.refresh_lock.lock().await;
        let snapshot = self.snapshot.load_full();
        let stale: Vec<&Arc<SubstationState>> = snapshot
            .substations
            .iter()
            .map(|s| &s.state)
            .filter(|s| s.is_healthy() && !s.is_draining())
            .filter(|s| {
                s.report()
                    .is_some_and(|r| r.capacity_kw >= kw && r.received_at.elapsed() > FRESH)
            })
            .collect();
        futures::future::join_all(stale.iter().map(|s| self.refresher.refresh(s))).await;
    }

    /// Ready once every configured substation has been probed at least once.
    pub fn unprobed(&self) -> Vec<String> {
        self.snapshot
            .load()
            .substations
            .iter()
            .filter(|s| s.state.probes() == 0)
            .map(|s| s.config.name.clone())
            .collect()
    }

    /// Whether Pingora considers the substation ready (healthy and enabled).
    pub fn is_ready(&self, sub: &Substation) -> bool {
        self.lb.backends().ready(&backend_for(sub))
    }

    /// Re-read the config file and apply it. Listen addresses cannot change at run time.
    pub async fn reload(&self) -> Result<Arc<Config>, ReloadError> {
        let _serial = self.reload_lock.lock().await;
        let result = self.try_reload().await;
        let mut status = self.reload.lock().unwrap_or_else(|p| p.into_inner());
        match &result {
            Ok(_) => {
                status.last_result = Some("success".into());
                status.last_error = None;
                status.last_success_unix = Some(unix_now());
                self.metrics.reload(true);
            }
            Err(e) => {
                log::error!("config reload failed, the old config keeps serving: {e}");
                status.last_result = Some("failure".into());
                status.last_error = Some(e.to_string());
                self.metrics.reload(false);
            }
        }
        result
    }

    async fn try_reload(&self) -> Result<Arc<Config>, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let new = Config::load(path)?;
        let old = self.config();
        if new.listen != old.listen {
            return Err(ConfigError {
                path: "listen".into(),
                message: format!(
                    "cannot change from {} to {} at run time; restart gridlb or use a graceful upgrade",
                    old.listen, new.listen
                ),
            }
            .into());
        }
        if new.admin.listen != old.admin.listen {
            return Err(ConfigError {
                path: "admin.listen".into(),
                message: format!(
                    "cannot change from {} to {} at run time; restart gridlb or use a graceful upgrade",
                    old.admin.listen, new.admin.listen
                ),
            }
            .into());
        }
        self.apply(new).await;
        Ok(self.config())
    }

    /// Swap in `config` atomically and rebuild the selector. Substations that left the
    /// config are marked draining first so no new request picks them while the selector
    /// is rebuilt; their in-flight requests finish on their own.
    pub async fn apply(&self, config: Config) {
        let old = self.snapshot.load_full();
        let next = build_snapshot(Arc::new(config), &old.substations);
        for gone in old.substations.iter().filter(|o| {
            !next
                .substations
                .iter()
                .any(|n| Arc::ptr_eq(&n.state, &o.state))
        }) {
            gone.state.set_removed();
            self.metrics.forget(&gone.config.name);
        }
        let added = next.substations.iter().any(|n| {
            !old.substations
                .iter()
                .any(|o| Arc::ptr_eq(&n.state, &o.state))
        });
        self.selector
            .settings
            .store(Arc::new(next.config.selection.clone()));
        self.snapshot.store(Arc::new(next));
        self.update_membership().await;
        if added {
            // Probe the newcomers now rather than at the next tick.
            self.probe_now.notify_one();
        }
        log::info!("config applied: {}", describe(&self.snapshot.load()));
    }

    /// Resolve the host names among the substation addresses again, and move a substation
    /// whose name now points elsewhere (a rescheduled pod, say): it is then treated as
    /// removed and added, so it is probed before it is chosen. A name that no longer
    /// resolves keeps its last address (and fails its probes if that is gone). Not counted
    /// as a reload: the file did not change.
    pub async fn refresh_addresses(&self) {
        let _serial = self.reload_lock.lock().await;
        let current = self.config();
        if current
            .substations
            .iter()
            .all(|s| s.address.parse::<SocketAddr>().is_ok())
        {
            return;
        }
        let lookup = Arc::clone(&current);
        let resolved = tokio::task::spawn_blocking(move || {
            lookup
                .substations
                .iter()
                .enumerate()
                .map(|(i, s)| {
                    crate::config::resolve(&format!("substations[{i}].address"), &s.address)
                })
                .collect::<Vec<_>>()
        })
        .await;
        let Ok(resolved) = resolved else { return };
        let mut next = (*current).clone();
        let mut moved = Vec::new();
        for (sub, result) in next.substations.iter_mut().zip(resolved) {
            match result {
                Ok(addr) if addr != sub.addr => {
                    moved.push(format!("{} {} -> {addr}", sub.name, sub.addr));
                    sub.addr = addr;
                }
                Ok(_) => {}
                Err(e) => log::warn!("{e}; keeping {}", sub.addr),
            }
        }
        if moved.is_empty() {
            return;
        }
        let mut addrs: Vec<SocketAddr> = next.substations.iter().map(|s| s.addr).collect();
        addrs.sort();
        addrs.dedup();
        if addrs.len() != next.substations.len() {
            log::error!(
                "after re-resolving, two substations share an address; keeping the old addresses ({})",
                moved.join(", ")
            );
            return;
        }
        log::info!("substation addresses moved: {}", moved.join(", "));
        self.apply(next).await;
    }

    /// Drain (or undrain) a substation by name from the admin API. This holds across
    /// reloads until undone; `drain: true` in the config is a separate, equal reason.
    pub async fn set_admin_drain(&self, name: &str, drain: bool) -> Option<bool> {
        let state = Arc::clone(&self.snapshot.load().find(name)?.state);
        state.set_admin_drain(drain);
        self.update_membership().await;
        log::info!(
            "substation {name}: {} by the admin API",
            if drain { "drained" } else { "undrained" }
        );
        Some(state.is_draining())
    }

    /// Resolves when the probe schedule should run early.
    pub async fn probe_requested(&self) {
        self.probe_now.notified().await
    }

    /// Mark the first probe round done.
    pub fn first_round_done(&self) {
        self.first_round.send_replace(true);
    }

    /// Wait (at most `limit`) for the first probe round, so that a process that has just
    /// started (or taken over in a graceful upgrade) does not refuse a request for want of
    /// reports it is about to have.
    pub async fn wait_first_round(&self, limit: std::time::Duration) -> bool {
        let mut rx = self.first_round.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|done| *done))
            .await
            .is_ok()
    }

    pub fn has_probed(&self) -> bool {
        *self.first_round.borrow()
    }

    /// Run discovery now, logging a failure (Pingora drops it silently otherwise).
    pub async fn update_membership(&self) {
        if let Err(e) = self.lb.update().await {
            log::error!("substation discovery failed: {e}");
        }
    }

    pub fn reload_status(&self) -> ReloadStatus {
        self.reload
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_reload_status(&self, status: ReloadStatus) {
        *self.reload.lock().unwrap_or_else(|p| p.into_inner()) = status;
    }
}

/// The Pingora backend of a configured substation, carrying its state.
pub fn backend_for(sub: &Substation) -> Backend {
    let mut backend = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(sub.config.addr),
        weight: sub.config.weight,
        ext: Default::default(),
    };
    backend.ext.insert(Arc::clone(&sub.state));
    backend
}

/// The key Pingora uses for a backend's enablement (`DefaultHasher` of the `Backend`).
pub fn backend_key(backend: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    backend.hash(&mut h);
    h.finish()
}

fn build_snapshot(config: Arc<Config>, previous: &[Substation]) -> Snapshot {
    let substations = config
        .substations
        .iter()
        .map(|sc| {
            let state = previous
                .iter()
                .find(|p| p.config.name == sc.name && p.config.addr == sc.addr)
                .map(|p| Arc::clone(&p.state))
                .unwrap_or_else(|| SubstationState::new(&sc.name, sc.addr));
            state.set_config_drain(sc.drain);
            Substation {
                config: sc.clone(),
                state,
            }
        })
        .collect();
    Snapshot {
        config,
        substations,
    }
}

fn describe(snapshot: &Snapshot) -> String {
    let names: Vec<String> = snapshot
        .substations
        .iter()
        .map(|s| {
            format!(
                "{}@{}{}",
                s.config.name,
                s.config.addr,
                if s.config.drain { " (draining)" } else { "" }
            )
        })
        .collect();
    format!(
        "{} substation(s) [{}], algorithm {}",
        names.len(),
        names.join(", "),
        snapshot.config.selection.algorithm.as_str()
    )
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// `Backend.addr` as a std address (gridlb only uses TCP backends).
trait InetAddr {
    fn addr_inet(&self) -> SocketAddr;
}

impl InetAddr for Backend {
    fn addr_inet(&self) -> SocketAddr {
        self.addr
            .as_inet()
            .copied()
            .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)))
    }
}

#[cfg(test)]
mod tests;
