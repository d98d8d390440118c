//! A cap on requests in progress at once.
//!
//! Pingora 0.9 has no hook for a connection's end (its `ConnectionFilter` sees only the
//! accept), so gridlb bounds what a flood can make it hold by counting requests instead:
//! [`Gate::enter`] returns a guard while fewer than the limit are in progress; the guard
//! leaves the gate when the request ends, however it ends. Over the limit, the proxy answers
//! `503` at once, before reading a body or touching a substation.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

#[derive(Debug, Default)]
pub struct Gate {
    inside: AtomicUsize,
}

#[derive(Debug)]
pub struct Pass {
    gate: Arc<Gate>,
}

impl Gate {
    /// Enter if fewer than `limit` requests are in progress.
    pub fn enter(self: &Arc<Self>, limit: usize) -> Option<Pass> {
        self.inside
            .fetch_update(Relaxed, Relaxed, |n| (n < limit).then_some(n + 1))
            .ok()?;
        Some(Pass {
            gate: Arc::clone(self),
        })
    }

    pub fn inside(&self) -> usize {
        self.inside.load(Relaxed)
    }
}

impl Drop for Pass {
    fn drop(&mut self) {
        self.gate.inside.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_admits_up_to_the_limit_and_reopens_when_a_pass_drops() {
        let gate = Arc::new(Gate::default());
        let a = gate.enter(2).expect("first");
        let _b = gate.enter(2).expect("second");
        assert!(gate.enter(2).is_none());
        drop(a);
        assert!(gate.enter(2).is_some());
    }
}
