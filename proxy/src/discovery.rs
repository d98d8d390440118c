//! Membership: which substations exist and where they are. Owns DNS, and the seam where a
//! config becomes Pingora backends.
//!
//! - [`resolve_all`] turns a config's `host:port` addresses into socket addresses, at start, at
//!   every reload and every `dns.refresh_ms` ([`moved`]). A name must resolve to exactly one
//!   address (one substation is one address), except a name whose addresses are all loopback
//!   (`localhost`): one host, so its IPv4 address is taken. Two substations may not share an
//!   address.
//! - [`ConfigDiscovery`] is Pingora's `ServiceDiscovery`: one `Backend` per configured
//!   substation, carrying its [`SubstationState`] in `Backend.ext`. Every backend is enabled:
//!   drain lives in the load table (`SubstationState::is_draining`), the one place selection
//!   reads it from.

use crate::config::{Config, ConfigError};
use crate::table::{Snapshot, Substation, SubstationState, Table};
use async_trait::async_trait;
use pingora_load_balancing::Backend;
use pingora_load_balancing::discovery::ServiceDiscovery;
use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;

/// Resolve every substation address of `config` (blocking DNS for host names), in order.
pub fn resolve_all(config: &Config) -> Result<Vec<SocketAddr>, ConfigError> {
    let mut addrs: Vec<SocketAddr> = Vec::with_capacity(config.substations.len());
    for (i, s) in config.substations.iter().enumerate() {
        let path = format!("substations[{i}].address");
        let addr = resolve(&path, &s.address)?;
        if let Some(j) = addrs.iter().position(|a| *a == addr) {
            return Err(ConfigError {
                path,
                message: format!(
                    "{:?} is also the address of {} ({addr})",
                    s.address, config.substations[j].name
                ),
            });
        }
        addrs.push(addr);
    }
    Ok(addrs)
}

/// Resolve `host:port` given at key `path` (see the module's rules).
pub fn resolve(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    let error = |message: String| ConfigError {
        path: path.to_string(),
        message,
    };
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let mut addrs: Vec<SocketAddr> = s
        .to_socket_addrs()
        .map_err(|e| error(format!("{s:?} does not resolve: {e}")))?
        .collect();
    addrs.sort();
    addrs.dedup();
    // `localhost` often has both 127.0.0.1 and ::1: one host, so one substation.
    if addrs.len() > 1 && addrs.iter().all(|a| a.ip().is_loopback()) {
        addrs.sort_by_key(|a| !a.is_ipv4());
        addrs.truncate(1);
    }
    match addrs.as_slice() {
        [one] => Ok(*one),
        [] => Err(error(format!("{s:?} resolves to no address"))),
        many => Err(error(format!(
            "{s:?} resolves to {} addresses ({}); one substation is one address, list each as its own substation",
            many.len(),
            many.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

/// Resolve the host names of the current snapshot again (off the runtime's threads). Returns
/// the addresses to apply when a name now points elsewhere (a rescheduled pod, say), `None`
/// when nothing moved. A name that no longer resolves keeps its last address (and fails its
/// probes if that is gone); a move that would make two substations share an address is
/// refused. Either is logged.
pub async fn moved(snapshot: &Snapshot) -> Option<Vec<SocketAddr>> {
    let config = Arc::clone(&snapshot.config);
    if config
        .substations
        .iter()
        .all(|s| s.address.parse::<SocketAddr>().is_ok())
    {
        return None;
    }
    let lookup = Arc::clone(&config);
    let resolved = tokio::task::spawn_blocking(move || {
        lookup
            .substations
            .iter()
            .enumerate()
            .map(|(i, s)| resolve(&format!("substations[{i}].address"), &s.address))
            .collect::<Vec<_>>()
    })
    .await
    .ok()?;
    let mut addrs: Vec<SocketAddr> = snapshot.substations.iter().map(Substation::addr).collect();
    let mut moves = Vec::new();
    for ((sub, result), addr) in snapshot.substations.iter().zip(resolved).zip(&mut addrs) {
        match result {
            Ok(new) if new != *addr => {
                moves.push(format!("{} {addr} -> {new}", sub.config.name));
                *addr = new;
            }
            Ok(_) => {}
            Err(e) => log::warn!("{e}; keeping {addr}"),
        }
    }
    if moves.is_empty() {
        return None;
    }
    let mut distinct = addrs.clone();
    distinct.sort();
    distinct.dedup();
    if distinct.len() != addrs.len() {
        log::error!(
            "after re-resolving, two substations share an address; keeping the old addresses ({})",
            moves.join(", ")
        );
        return None;
    }
    log::info!("substation addresses moved: {}", moves.join(", "));
    Some(addrs)
}

/// The Pingora backend of a configured substation, carrying its state.
pub fn backend_for(sub: &Substation) -> Backend {
    let mut backend = Backend {
        addr: pingora_core::protocols::l4::socket::SocketAddr::Inet(sub.addr()),
        weight: sub.config.weight,
        ext: Default::default(),
    };
    backend.ext.insert(Arc::clone(&sub.state));
    backend
}

/// The substation state a backend carries (every backend gridlb makes has one).
pub fn state_of(backend: &Backend) -> Option<&Arc<SubstationState>> {
    backend.ext.get::<Arc<SubstationState>>()
}

/// Health is keyed by address only, so that a change of weight (part of a Pingora
/// `Backend`'s identity) does not reset it: the key of `HealthRegistry::with_equivalence`.
pub fn health_key(backend: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    backend.addr.hash(&mut h);
    h.finish()
}

/// The key Pingora uses for a backend's enablement (`DefaultHasher` of the `Backend`).
fn backend_key(backend: &Backend) -> u64 {
    let mut h = DefaultHasher::new();
    backend.hash(&mut h);
    h.finish()
}

/// Pingora's `ServiceDiscovery` over the load table's current snapshot.
pub struct ConfigDiscovery {
    table: Arc<Table>,
}

impl ConfigDiscovery {
    pub fn new(table: Arc<Table>) -> Self {
        ConfigDiscovery { table }
    }
}

#[async_trait]
impl ServiceDiscovery for ConfigDiscovery {
    async fn discover(&self) -> pingora_error::Result<(BTreeSet<Backend>, HashMap<u64, bool>)> {
        let snapshot = self.table.snapshot();
        let mut backends = BTreeSet::new();
        let mut enabled = HashMap::new();
        for sub in &snapshot.substations {
            let backend = backend_for(sub);
            enabled.insert(backend_key(&backend), true);
            backends.insert(backend);
        }
        Ok((backends, enabled))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gridlb_test_support::config::GridlbConfig;

    fn config(addresses: &[&str]) -> Config {
        let subs: Vec<(String, &str)> = addresses
            .iter()
            .enumerate()
            .map(|(i, a)| (format!("s{i}"), *a))
            .collect();
        let yaml = GridlbConfig::new()
            .listen("127.0.0.1:1")
            .substations(&subs)
            .to_yaml();
        Config::parse(&yaml).expect("a valid config")
    }

    #[test]
    fn localhost_is_one_substation_at_its_ipv4_address() {
        let addrs = resolve_all(&config(&["localhost:9002"])).expect("localhost resolves");
        assert_eq!(addrs, vec!["127.0.0.1:9002".parse().unwrap()]);
    }

    #[test]
    fn name_that_resolves_nowhere_is_reported_with_its_path() {
        let e = resolve_all(&config(&["127.0.0.1:9001", "no-such-host.invalid:9002"]))
            .expect_err("must not resolve");
        assert_eq!(e.path, "substations[1].address");
        assert!(e.message.contains("no-such-host.invalid"), "{e}");
    }

    #[test]
    fn two_names_for_one_address_are_refused() {
        let e = resolve_all(&config(&["127.0.0.1:9001", "localhost:9001"]))
            .expect_err("one address twice");
        assert_eq!(e.path, "substations[1].address");
        assert!(e.message.contains("s0"), "{e}");
    }
}
