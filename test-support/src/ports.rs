//! Free loopback ports. A port is free when it is chosen, not necessarily when it is used:
//! whoever binds it later must cope with losing it (see [`crate::launch`]).

use std::net::{SocketAddr, TcpListener};

/// A loopback address whose port was free a moment ago.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_is_on_loopback_and_not_zero() {
        let addr = free_port();
        assert!(addr.ip().is_loopback());
        assert_ne!(addr.port(), 0);
    }
}
