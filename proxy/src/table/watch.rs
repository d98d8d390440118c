//! Watching a substation's state for changes that move its score: what an index over the
//! substations (selection's least-load index) needs to stay current without scanning.
//!
//! A [`Watcher`] registers with each [`SubstationState`] it indexes under a slot number
//! ([`SubstationState::watch`]); every change that can move the substation's score calls
//! [`Watcher::changed`] with that slot, after the change is made: an accepted (or confirming)
//! report, a reservation and its release, health, drain and removal, the configuration (capacity
//! cap, report age), an ejection, and a session recorded or forgotten. The watcher then reads
//! the state again ([`SubstationState::planned`]) before it next relies on it, so a late or
//! repeated call is harmless: the last read after the last change sees it.
//!
//! Time also moves a score, without any call: a report ages out, a known session ends (its
//! power is freed), an ejection ends. [`Planned::next_change`] says when the next such change
//! can happen, so the watcher can look again then.
//!
//! The links are weak and swapped (`ArcSwap`), not locked: a watcher that is dropped (a
//! selection of an older discovery generation) is pruned at the next registration.

use super::{Known, SubstationState};
use gridlb_protocol::Power;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::time::Instant;

/// Told when a watched substation's score may have changed.
pub trait Watcher: Send + Sync {
    /// The substation registered under `slot` changed.
    fn changed(&self, slot: usize);
}

/// A watcher and the slot it knows a substation by.
#[derive(Clone)]
pub(super) struct Link {
    watcher: Weak<dyn Watcher>,
    slot: usize,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Link(slot {})", self.slot)
    }
}

/// What a substation's score is made of at one instant, as [`SubstationState::score`] reads it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planned {
    /// `None` when the substation cannot be chosen now (not eligible, ejected, or no report
    /// young enough): load after ended sessions, usable capacity and in-flight power otherwise.
    pub entry: Option<Entry>,
    /// The next instant at which time alone may change `entry`, if any.
    pub next_change: Option<Instant>,
}

/// The parts of a chooseable substation's score.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Entry {
    pub load_kw: f64,
    pub capacity_kw: f64,
    pub in_flight: Power,
}

impl Entry {
    /// Utilisation after `request` if it [`super::fits`] within `max_utilization`: the very
    /// computation of [`SubstationState::score`].
    pub fn score(&self, request: Power, max_utilization: f64) -> Option<f64> {
        let known = Known {
            load_kw: self.load_kw,
            capacity_kw: self.capacity_kw,
        };
        let in_flight = self.in_flight.saturating_add(request);
        super::fits(&known, in_flight, max_utilization)
            .then(|| (known.load_kw + in_flight.as_kw()) / known.capacity_kw)
    }
}

/// How soon to look again when a time-driven change is overdue but could not be applied (the
/// session ledger was busy): soon, never in a loop at the same instant.
const RETRY: Duration = Duration::from_millis(1);

impl SubstationState {
    /// Register `watcher` for this substation under `slot` (and forget dropped watchers).
    pub fn watch(&self, watcher: Weak<dyn Watcher>, slot: usize) {
        self.watchers.rcu(|links| {
            let mut next: Vec<Link> = links
                .iter()
                .filter(|l| l.watcher.strong_count() > 0)
                .cloned()
                .collect();
            next.push(Link {
                watcher: watcher.clone(),
                slot,
            });
            next
        });
    }

    /// Tell every watcher that the score may have changed.
    pub(super) fn changed(&self) {
        let links = self.watchers.load();
        for link in links.iter() {
            if let Some(watcher) = link.watcher.upgrade() {
                watcher.changed(link.slot);
            }
        }
    }

    /// The parts of the score at `now`, and when time alone may change them next.
    pub fn planned(&self, now: Instant) -> Planned {
        let none = |next_change| Planned {
            entry: None,
            next_change,
        };
        if !self.is_eligible() {
            return none(None);
        }
        if let Some(out) = self.ejected_for(now) {
            return none(Some(now + out));
        }
        let Some(known) = self.known(now) else {
            return none(None);
        };
        let entry = Entry {
            load_kw: known.load_kw,
            capacity_kw: known.capacity_kw,
            in_flight: self.in_flight(),
        };
        let ages_out = self.report().and_then(|r| {
            let ms = self.max_report_age_ms.load(Relaxed).checked_add(1)?;
            r.received_at.checked_add(Duration::from_millis(ms))
        });
        let next_change = [ages_out, self.sessions.next_end()]
            .into_iter()
            .flatten()
            .min()
            .map(|at| if at > now { at } else { now + RETRY });
        Planned {
            entry: Some(entry),
            next_change,
        }
    }

    /// Remember a session this proxy routed here (see [`crate::sessions::Sessions::record`]).
    pub fn record_session(&self, id: &str, power: Power, ends: Instant, now: Instant) {
        self.sessions.record(id, power, ends, now);
        self.changed();
    }

    /// Forget a session ended by `DELETE` (see [`crate::sessions::Sessions::forget`]).
    pub fn forget_session(&self, id: &str) -> Option<Power> {
        let power = self.sessions.forget(id);
        self.changed();
        power
    }

    /// Sessions routed here and not yet ended.
    pub fn known_sessions(&self) -> usize {
        self.sessions.known()
    }
}

/// Watchers of none, for a new substation.
pub(super) fn none() -> Arc<Vec<Link>> {
    Arc::new(Vec::new())
}
