//! Fuzz `gridlb::config::Config::parse`: any text gives a config or a `ConfigError` naming a
//! path, never a panic; an accepted config satisfies the validated type's invariants.
//!
//! Parsing does no DNS (host names are resolved by gridlb's `discovery`, not here), so every
//! input reaches the validation code and the target does no network I/O.

#![no_main]

use gridlb::config::Config;
use libfuzzer_sys::fuzz_target;
use std::net::SocketAddr;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Config::parse(text) {
        Ok(config) => check(&config),
        Err(e) => {
            assert!(!e.message.is_empty(), "an error without a message: {e:?}");
            assert!(!e.path.is_empty(), "an error without a path: {e:?}");
        }
    }
});

/// What `validate` promises about every config it returns.
fn check(c: &Config) {
    assert!(!c.substations.is_empty());
    for (i, s) in c.substations.iter().enumerate() {
        assert!((1..=64).contains(&s.name.len()), "{s:?}");
        assert!((1..=1000).contains(&s.weight), "{s:?}");
        for other in &c.substations[..i] {
            assert_ne!(other.name, s.name, "duplicate name accepted");
            assert_ne!(other.address, s.address, "duplicate address accepted");
            if let (Ok(a), Ok(b)) = (other.address.parse::<SocketAddr>(), s.address.parse()) {
                assert_ne!(a, b, "duplicate IP address accepted");
            }
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
