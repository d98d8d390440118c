//! Service discovery from gridlb's own config: Pingora's `ServiceDiscovery` is the seam where
//! a reload becomes new membership.
//!
//! [`ConfigDiscovery`] returns one Pingora `Backend` per configured substation, carrying the
//! substation's [`SubstationState`](crate::table::SubstationState) in `Backend.ext`, and an
//! enablement map that disables draining substations: Pingora then reports them not ready,
//! so they take no new sessions while they are still probed and shown.

use crate::grid::{Snapshot, backend_for, backend_key};
use arc_swap::ArcSwap;
use async_trait::async_trait;
use pingora_load_balancing::Backend;
use pingora_load_balancing::discovery::ServiceDiscovery;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

pub struct ConfigDiscovery {
    snapshot: Arc<ArcSwap<Snapshot>>,
}

impl ConfigDiscovery {
    pub fn new(snapshot: Arc<ArcSwap<Snapshot>>) -> Self {
        ConfigDiscovery { snapshot }
    }
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let snapshot = self.snapshot.load();
        let mut backends = BTreeSet::new();
        let mut enabled = HashMap::new();
        for sub in &snapshot.substations {
            let backend = backend_for(sub);
            enabled.insert(backend_key(&backend), !sub.state.is_draining());
            backends.insert(backend);
        }
        Ok((backends, enabled))
    }
}
