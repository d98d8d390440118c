//! Health, drain and removal: whether a substation may take new sessions at all
//! ([`SubstationState::is_eligible`]), the one place selection reads them from. Each change
//! tells the substation's watchers ([`super::watch`]).

use super::SubstationState;
use std::sync::atomic::Ordering::Relaxed;

impl SubstationState {
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    /// May take new sessions: healthy, and neither draining nor removed.
    pub fn is_eligible(&self) -> bool {
        self.is_healthy() && !self.is_draining()
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed);
        self.changed();
    }

    /// Takes no new sessions: drained by config or by an operator, or removed.
    pub fn is_draining(&self) -> bool {
        self.drain_config.load(Relaxed)
            || self.drain_admin.load(Relaxed)
            || self.removed.load(Relaxed)
    }

    pub fn set_config_drain(&self, drain: bool) {
        self.drain_config.store(drain, Relaxed);
        self.changed();
    }

    pub fn set_admin_drain(&self, drain: bool) {
        self.drain_admin.store(drain, Relaxed);
        self.changed();
    }

    pub fn is_admin_drained(&self) -> bool {
        self.drain_admin.load(Relaxed)
    }

    pub fn set_removed(&self) {
        self.removed.store(true, Relaxed);
        self.changed();
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub fn record_probe(&self) {
        self.probes.fetch_add(1, Relaxed);
    }

    pub fn probes(&self) -> u64 {
        self.probes.load(Relaxed)
    }
}
