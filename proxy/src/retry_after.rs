//! An honest `Retry-After`: when room for the refused power is expected.
//!
//! When no substation has room for `kw`, each eligible one is asked when it will
//! ([`SubstationState::room_in`]): the end of the earliest of its known sessions (those this
//! proxy routed, [`crate::sessions`]) by which enough power has ended. The soonest of them,
//! rounded up to whole seconds, is the answer; when no known session frees enough anywhere, a
//! bounded back-off (`fallback_s`, the probe interval: the soonest the proxy can learn of
//! power it did not route ending). Always within [`MIN_S`]..=[`MAX_S`] (RFC 9110 §10.2.3
//! allows any delay; a client should not be told to wait less than a second or more than an
//! hour). The substations do the same for their own sessions, which they all know; this
//! proxy's estimate covers the case where it answers `503` itself.

use crate::table::Snapshot;
use std::time::Duration;
use tokio::time::Instant;

/// Shortest `Retry-After`, seconds.
pub const MIN_S: u64 = 1;
/// Longest `Retry-After`, seconds.
pub const MAX_S: u64 = 3600;

/// The soonest room for `kw` is expected at any substation of `snapshot`, if known.
pub fn expected(snapshot: &Snapshot, kw: f64, now: Instant) -> Option<Duration> {
    let max_utilization = snapshot.config.selection.max_utilization;
    snapshot
        .substations
        .iter()
        .filter_map(|s| s.state.room_in(kw, max_utilization, now))
        .min()
}

/// Whole seconds for the header: `expected` rounded up, else `fallback_s`; within
/// [`MIN_S`]..=[`MAX_S`].
pub fn seconds(expected: Option<Duration>, fallback_s: u64) -> u64 {
    let s = match expected {
        Some(wait) => wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
        None => fallback_s,
    };
    s.clamp(MIN_S, MAX_S)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_rounded_up_to_whole_seconds_within_bounds() {
        assert_eq!(seconds(Some(Duration::from_millis(1200)), 9), 2);
        assert_eq!(seconds(Some(Duration::ZERO), 9), 1);
        assert_eq!(seconds(Some(Duration::from_secs(7200)), 9), 3600);
        assert_eq!(seconds(None, 9), 9);
        assert_eq!(seconds(None, 0), 1);
    }
}
