//! Free loopback ports. A port is free when it is chosen, not necessarily when it is used:
//! whoever binds it later must cope with losing it (see [`crate::launch`]).

use std::net::{SocketAddr, TcpListener};

/// A loopback address whose port was free a moment ago.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

/// `N` loopback addresses whose ports were free a moment ago, all different: they are bound at
/// once, so two calls to [`free_port`] in a row cannot hand out the same port twice.
pub fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let held: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
        .collect();
    std::array::from_fn(|i| held[i].local_addr().expect("a bound address"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_ports_are_all_different() {
        let [a, b, c] = free_ports();
        assert!(a != b && b != c && a != c);
    }

    #[test]
    fn a_free_port_is_on_loopback_and_not_zero() {
        let addr = free_port();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }
}
