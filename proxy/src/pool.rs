//! The pool: the substations as Pingora sees them. Owns the `LoadBalancer` (assembled from
//! [`ConfigDiscovery`], the [`LoadProbe`] health check and [`GridSelection`]), membership
//! updates when the config changes, the probe schedule ([`ProbeSchedule`]) and readiness
//! (the first probe round).
//!
//! Pingora's health registry is keyed by address only ([`discovery::health_key`]), so a change
//! of weight keeps a substation's health; its verdict reaches the load table through the
//! probe, and selection reads it there.

use crate::config::Config;
use crate::discovery::{self, ConfigDiscovery};
use crate::probe::LoadProbe;
use crate::selection::{GridSelection, Rng, SelectorConfig, request_key};
use crate::table::{SubstationState, Table};
use async_trait::async_trait;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use pingora_load_balancing::{Backend, Backends, HealthRegistry, LoadBalancer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

pub struct Pool {
    table: Arc<Table>,
    lb: LoadBalancer<GridSelection>,
    /// Wakes the probe schedule early (a reload added substations).
    probe_now: Notify,
    /// Becomes true when the first probe round has completed.
    first_round: watch::Sender<bool>,
}

impl Pool {
    /// The pool over `table`'s substations. `rng` makes selection reproducible in tests.
    pub fn new(table: Arc<Table>, rng: Rng) -> Pool {
        let registry = Arc::new(HealthRegistry::with_equivalence(discovery::health_key));
        let mut backends = Backends::new_with_health_registry(
            Box::new(ConfigDiscovery::new(Arc::clone(&table))),
            registry,
        );
        backends.set_health_check(Box::new(LoadProbe::new(Arc::clone(&table))));
        let selector = SelectorConfig::new(Arc::clone(&table), rng);
        let lb = LoadBalancer::from_backends_with_config(backends, Some(selector));
        Pool {
            table,
            lb,
            probe_now: Notify::new(),
            first_round: watch::Sender::new(false),
        }
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Candidates for a request of `kw`, best first, until `accept` takes one. At most
    /// about two rounds over the grid; never a backend this request already `tried`.
    pub fn select_with<F>(&self, kw: f64, tried: &[SocketAddr], accept: F)
    where
        F: Fn(&Arc<SubstationState>) -> bool,
    {
        let max_iterations = self.table.snapshot().substations.len() * 2 + 2;
        self.lb
            .select_with(&request_key(kw), max_iterations, |backend: &Backend, _| {
                let Some(state) = discovery::state_of(backend) else {
                    return false;
                };
                !tried.contains(&state.addr) && accept(state)
            });
    }

    /// Apply a new config whose substations resolved to `addrs`: swap the table, then update
    /// Pingora's membership; newcomers are probed at once rather than at the next tick.
    pub async fn apply(&self, config: Config, addrs: &[SocketAddr]) {
        let change = self.table.swap(config, addrs);
        self.update_membership().await;
        if change.added {
            self.probe_now.notify_one();
        }
        log::info!("config applied: {}", self.table.snapshot().describe());
    }

    /// Drain (or undrain) a substation by name from the admin API. This holds across
    /// reloads until undone; `drain: true` in the config is a separate, equal reason.
    pub fn set_admin_drain(&self, name: &str, drain: bool) -> Option<bool> {
        let state = Arc::clone(&self.table.snapshot().find(name)?.state);
        state.set_admin_drain(drain);
        log::info!(
            "substation {name}: {} by the admin API",
            if drain { "drained" } else { "undrained" }
        );
        Some(state.is_draining())
    }

    /// Run discovery now, logging a failure (Pingora drops it silently otherwise).
    pub async fn update_membership(&self) {
        if let Err(e) = self.lb.update().await {
            log::error!("substation discovery failed: {e}");
        }
    }

    /// The substations not probed yet (ready once there are none).
    pub fn unprobed(&self) -> Vec<String> {
        self.table
            .snapshot()
            .substations
            .iter()
            .filter(|s| s.state.probes() == 0)
            .map(|s| s.config.name.clone())
            .collect()
    }

    pub fn has_probed(&self) -> bool {
        *self.first_round.borrow()
    }

    /// Wait (at most `limit`) for the first probe round, so that a process that has just
    /// started (or taken over in a graceful upgrade) does not refuse a request for want of
    /// reports it is about to have.
    pub async fn wait_first_round(&self, limit: Duration) -> bool {
        let mut rx = self.first_round.subscribe();
        tokio::time::timeout(limit, rx.wait_for(|done| *done))
            .await
            .is_ok()
    }
}

/// The probe schedule: discovery once at start, then a parallel probe of every substation
/// each `probe.interval` (read live, so a reload changes the pace from the next round), or at
/// once when a reload added substations.
pub struct ProbeSchedule {
    pub pool: Arc<Pool>,
}

#[async_trait]
impl BackgroundService for ProbeSchedule {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let pool = &self.pool;
        pool.update_membership().await;
        loop {
            let round = Instant::now();
            tokio::select! {
                _ = pool.lb.backends().run_health_check(true) => {}
                _ = shutdown.changed() => return,
            }
            pool.first_round.send_replace(true);
            let interval = pool.table.config().probe.interval;
            let rest = interval.saturating_sub(round.elapsed());
            tokio::select! {
                _ = tokio::time::sleep(rest) => {}
                _ = pool.probe_now.notified() => {}
                _ = shutdown.changed() => return,
            }
        }
    }
}
