//! Fuzz `gridlb::config::Config::parse_with`: any text gives a config or a `ConfigError`
//! naming a path, never a panic; an accepted config satisfies the validated type's invariants.
//!
//! Substation addresses given as `host:port` names go to an offline resolver (an IP literal
//! resolves to itself, a name to a loopback address derived from it, an empty host is an
//! error), so every input reaches the validation code and the target does no network I/O.

#![no_main]

use gridlb::config::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse_with(text, &offline) {
        Ok(config) => check(&config),
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            assert!(!e.path.is_empty(), "an error without a path: {e:?}");
        }
    }
});

/// Resolves without DNS: IP literals as themselves, names to a loopback address that depends
/// on the name (so distinct names usually get distinct addresses).
fn offline(path: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    if let Ok(addr) = s.parse::<SocketAddr>() {
        return Ok(addr);
    }
    let bad = || ConfigError { path: path.to_string(), message: format!("{s:?} is not host:port") };
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    let port: u16 = port.parse().map_err(|_| bad())?;
    if host.is_empty() {
        return Err(bad());
    }
    let h = host.bytes().fold(0u32, |h, b| h.wrapping_mul(31).wrapping_add(u32::from(b)));
    Ok(SocketAddr::from(([127, (h >> 16) as u8, (h >> 8) as u8, h as u8 | 1], port)))
}

/// What `validate` promises about every config it returns.
fn check(c: &Config) {
    assert!(!c.substations.is_empty());
    for (i, s) in c.substations.iter().enumerate() {
        assert!((1..=64).contains(&s.name.len()), "{s:?}");
        assert!((1..=1000).contains(&s.weight), "{s:?}");
        for other in &c.substations[..i] {
            assert_ne!(other.name, s.name, "duplicate name accepted");
            assert_ne!(other.addr, s.addr, "duplicate address accepted");
        }
    }
    assert!(!c.probe.timeout.is_zero() && c.probe.timeout <= c.probe.interval);
    assert!(c.probe.unhealthy_after >= 1 && c.probe.healthy_after >= 1);
    let sel = &c.selection;
    assert!(sel.max_utilization > 0.0 && sel.max_utilization <= 1.0);
    assert!(sel.default_request_kw.is_finite() && sel.default_request_kw > 0.0);
    assert!(c.admin.listen.ip().is_loopback() || c.admin.token.is_some());
    assert_ne!(c.admin.listen, c.listen);
}
