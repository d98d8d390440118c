//! One request's upstream attempts, as a typed state: power reserved at a substation
//! (`Pending`), then sent (`InFlight`), then released when the answer or an error arrives.
//!
//! ```text
//!   Idle --reserve--> Pending --send--> InFlight --release--> Idle
//!                        ^                                      |
//!                        +------------- reserve (a retry) ------+
//! ```
//!
//! [`Attempts::release`] is the one place a reservation is given back early (dropping the
//! state releases it too, however the request ends). A request stops counting as in flight
//! when its answer arrives because that answer carries a report that already includes it
//! (see `table.rs`). Every substation sent to is remembered, so a retry never goes to the same
//! one twice.

use crate::table::{Reservation, SubstationState};
use std::net::SocketAddr;
use std::sync::Arc;

#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Pending(Reservation),
    /// Held (never read) until released: its drop gives the power back.
    InFlight {
        _held: Reservation,
    },
}

/// The attempts of one request.
#[derive(Debug, Default)]
pub struct Attempts {
    state: State,
    /// The substation of the current (or last) attempt.
    target: Option<Arc<SubstationState>>,
    tried: Vec<SocketAddr>,
    /// When the current (or last) attempt was sent.
    sent_at: Option<tokio::time::Instant>,
}

impl Attempts {
    /// Reserve the next attempt (replacing one reserved and not sent).
    pub fn reserve(&mut self, reservation: Reservation) {
        debug_assert!(
            !matches!(self.state, State::InFlight { .. }),
            "release first"
        );
        self.state = State::Pending(reservation);
    }

    /// Whether an attempt is reserved and not yet sent.
    pub fn is_pending(&self) -> bool {
        matches!(self.state, State::Pending(_))
    }

    /// Send the reserved attempt: its substation, now the target; `None` when nothing was
    /// reserved.
    pub fn send(&mut self) -> Option<Arc<SubstationState>> {
        let State::Pending(reservation) = std::mem::take(&mut self.state) else {
            return None;
        };
        let state = Arc::clone(reservation.state());
        self.tried.push(state.addr);
        self.sent_at = Some(tokio::time::Instant::now());
        self.target = Some(Arc::clone(&state));
        self.state = State::InFlight { _held: reservation };
        Some(state)
    }

    /// The attempt in flight has its answer (or failed): give its power back.
    pub fn release(&mut self) {
        if let State::InFlight { .. } = self.state {
            self.state = State::Idle;
        }
    }

    /// The substation of the current (or last) attempt.
    pub fn target(&self) -> Option<&Arc<SubstationState>> {
        self.target.as_ref()
    }

    /// How long ago the current (or last) attempt was sent.
    pub fn since_sent(&self) -> Option<std::time::Duration> {
        self.sent_at.map(|t| t.elapsed())
    }

    /// The addresses this request was sent to.
    pub fn tried(&self) -> &[SocketAddr] {
        &self.tried
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::Report;
    use gridlb_protocol::ReportVersion;
    use tokio::time::Instant;

    fn reported(name: &str, port: u16) -> Arc<SubstationState> {
        let s = SubstationState::new(name, SocketAddr::from(([127, 0, 0, 1], port)));
        s.offer(Report {
            version: ReportVersion { epoch: 1, seq: 1 },
            load_kw: 0.0,
            capacity_kw: 100.0,
            active_sessions: None,
            received_at: Instant::now(),
        });
        s
    }

    #[test]
    fn power_is_held_from_reserve_until_release_and_each_substation_is_tried_once() {
        let (a, b) = (reported("a", 1), reported("b", 2));
        let mut attempts = Attempts::default();
        assert!(attempts.send().is_none(), "nothing reserved, nothing sent");
        attempts.reserve(a.try_reserve(30.0, 1.0).expect("fits"));
        assert!(attempts.is_pending());
        assert_eq!(a.in_flight_kw(), 30.0);
        assert_eq!(attempts.send().expect("reserved").name, "a");
        assert_eq!(a.in_flight_kw(), 30.0, "held while in flight");
        attempts.release();
        assert_eq!(a.in_flight_kw(), 0.0, "released once answered");
        attempts.reserve(b.try_reserve(10.0, 1.0).expect("fits"));
        attempts.send();
        assert_eq!(attempts.tried().len(), 2);
        assert_eq!(attempts.target().expect("sent").name, "b");
        drop(attempts);
        assert_eq!(b.in_flight_kw(), 0.0, "dropping the attempts releases too");
    }
}
