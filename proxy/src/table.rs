//! The load table: what the proxy believes about each substation.
//!
//! Per substation it keeps the newest load report (greatest `(epoch, seq)`, whichever way it
//! arrived: a `GET /load` probe or the `x-substation-load` header of an answer) and the power
//! of the requests the proxy has sent there and not yet seen answered ("in flight").
//!
//! Utilisation = (reported load − power of the sessions this proxy routed that have ended since
//! the report was received, never below zero, + in-flight power) / reported capacity. The ended
//! power comes from [`crate::sessions`] (the substation's `201` states each session's end); the
//! next report corrects any error. Why the in-flight part corrects
//! exactly for what was sent since the report: a request stops being in flight when its answer
//! arrives, and that answer carries a report that already includes the request; because the
//! table only ever moves to newer reports, the report held from then on includes it too. A
//! request still in flight may already be counted by a probe report, so the estimate errs on
//! the side of caution (it never under-counts what was sent).
//!
//! Admission is a reservation: [`SubstationState::try_reserve`] adds the request's power to
//! the in-flight sum with a compare-and-swap, only if the result stays within
//! `max_utilization`, so two concurrent requests cannot both take the last room. The returned
//! [`Reservation`] is an RAII guard (as in tower's `pending_requests`): however the request
//! ends, dropping it releases the power.
//!
//! Every report, whichever way it came, goes through one door: [`Table::ingest`] (in
//! [`snapshot`]), which parses nothing itself, keeps the newer version and counts what it drops.
//! Health (the probe's verdict, computed by Pingora's health registry and mirrored here on
//! every flip) and drain (by config, by an operator, or by removal) are read from here and
//! nowhere else: [`SubstationState::is_eligible`].
//!
//! Time is tokio's clock, so tests can pause and advance it.
//!
//! Every change that can move a substation's score (a report, a reservation or its release,
//! health, drain, configuration, an ejection, a session recorded) is told to its watchers
//! ([`watch`]): selection's least-load index, which stays current without scanning.
//!
//! Hot-path state is atomics and an `ArcSwap`; nothing here takes a lock on the request path
//! (a watcher may take its own, briefly).

use crate::sessions::Sessions;
use arc_swap::{ArcSwap, ArcSwapOption};
use gridlb_protocol::Power;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

mod flags;
mod outlier;
mod report;
mod snapshot;
mod watch;

pub use outlier::{MAX_EJECTION, SLOW_FACTOR, SLOW_FLOOR};
pub use report::Report;
pub use snapshot::{Change, Snapshot, Substation, Table};
pub use watch::{Entry, Planned, Watcher};

/// The slack of the one "fits" rule ([`fits`]): an exact fit (500 of 500 kW) must not be
/// refused for floating-point rounding.
const TOLERANCE_KW: f64 = 1e-6;

/// Whether `load_kw` plus `in_flight_w` (which includes the request being considered) stays
/// within `max_utilization` of `capacity_kw`. The only capacity rule in the proxy: selection
/// and reservation both ask it.
fn fits(known: &Known, in_flight: Power, max_utilization: f64) -> bool {
    known.load_kw + in_flight.as_kw() <= known.capacity_kw * max_utilization + TOLERANCE_KW
}

/// What the proxy may plan with: a report young enough to count, and the usable capacity
/// (the reported one, never above the configured one).
struct Known {
    load_kw: f64,
    capacity_kw: f64,
}

/// The power reserved for a request of `kw` (rounded up to a whole watt, so the estimate never
/// under-counts); `None` for a value no substation could take (NaN, negative, absurdly large).
fn reserved(kw: f64) -> Option<Power> {
    Power::from_kw(kw).ok()
}

/// Where a report came from: the `source` label of the report counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A `GET /load` probe's body.
    Probe,
    /// The `x-substation-load` header of an answer.
    Header,
}

impl Source {
    pub fn label(self) -> &'static str {
        match self {
            Source::Probe => "probe",
            Source::Header => "header",
        }
    }
}

/// What happened to an offered report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Offer {
    /// Newer than what the table held: it replaced it.
    Accepted,
    /// The same version the table holds (a probe after no change of load): nothing to do.
    Duplicate,
    /// Older than what the table holds: dropped.
    Stale,
    /// Invalid (the reason is the `reason` label of the rejection counter): dropped.
    Rejected(&'static str),
}

/// Everything the proxy tracks for one configured substation. Shared (`Arc`) between the
/// selector, the probe, the proxy and the admin API, and kept across config reloads while
/// the substation's name and address stay the same.
#[derive(Debug)]
pub struct SubstationState {
    pub name: String,
    pub addr: SocketAddr,
    report: ArcSwapOption<Report>,
    /// Power sent and not yet answered, in whole watts ([`Power`]) so it fits an atomic.
    in_flight_w: AtomicU64,
    /// Pingora's health verdict, mirrored by the probe on every flip; starts healthy as
    /// Pingora's does. The one place selection reads health from.
    healthy: AtomicBool,
    /// Draining because the config says `drain: true`.
    drain_config: AtomicBool,
    /// Draining because an operator said so on the admin API (survives reloads).
    drain_admin: AtomicBool,
    /// Left the config: no new requests while its in-flight ones finish.
    removed: AtomicBool,
    /// Probes that have completed, good or bad.
    probes: AtomicU64,
    /// The configured capacity in watts (`substations[].capacity_kw`); 0: none.
    capacity_cap_w: AtomicU64,
    /// `probe.max_report_age`, in ms.
    max_report_age_ms: AtomicU64,
    /// Probe reports in a row that contradict the held report (see [`Table::ingest`]).
    contradictions: AtomicU32,
    /// Outlier ejection: out of the choice until this many ns after `born` (0: not ejected).
    ejected_until_ns: AtomicU64,
    /// Ejections since the last accepted session: the back-off doubles with each.
    ejections: AtomicU32,
    /// Moving averages (µs) of `/charge` answers' and of probes' latency; 0: none yet.
    charge_latency_us: AtomicU64,
    probe_latency_us: AtomicU64,
    /// `/charge` answers in the average so far (a judgement waits for [`outlier::SAMPLES`]).
    charge_samples: AtomicU32,
    born: Instant,
    /// Sessions this proxy routed here that the substation accepted.
    pub routed: AtomicU64,
    /// Those of them not yet ended, by end time.
    sessions: Sessions,
    /// Who to tell when the score may have changed ([`watch`]).
    watchers: ArcSwap<Vec<watch::Link>>,
}

impl SubstationState {
    pub fn new(name: &str, addr: SocketAddr) -> Arc<SubstationState> {
        Arc::new(SubstationState {
            name: name.to_string(),
            addr,
            report: ArcSwapOption::empty(),
            in_flight_w: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            drain_config: AtomicBool::new(false),
            drain_admin: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            probes: AtomicU64::new(0),
            capacity_cap_w: AtomicU64::new(0),
            max_report_age_ms: AtomicU64::new(u64::MAX),
            contradictions: AtomicU32::new(0),
            ejected_until_ns: AtomicU64::new(0),
            ejections: AtomicU32::new(0),
            charge_latency_us: AtomicU64::new(0),
            probe_latency_us: AtomicU64::new(0),
            charge_samples: AtomicU32::new(0),
            born: Instant::now(),
            routed: AtomicU64::new(0),
            sessions: Sessions::default(),
            watchers: ArcSwap::new(watch::none()),
        })
    }

    /// Apply a substation's config: drain, the configured capacity and the report age limit.
    pub fn configure(&self, drain: bool, capacity_kw: Option<f64>, max_report_age: Duration) {
        self.set_config_drain(drain);
        let cap = capacity_kw.and_then(|kw| Power::from_kw(kw).ok());
        self.capacity_cap_w
            .store(cap.map_or(0, Power::as_watts), Relaxed);
        let ms = u64::try_from(max_report_age.as_millis()).unwrap_or(u64::MAX);
        self.max_report_age_ms.store(ms, Relaxed);
        self.changed();
    }

    /// The capacity the proxy plans with: the reported one, at most the configured one.
    pub fn usable_capacity_kw(&self, reported_kw: f64) -> f64 {
        match self.capacity_cap_w.load(Relaxed) {
            0 => reported_kw,
            cap => reported_kw.min(Power::from_watts(cap).as_kw()),
        }
    }

    /// The held report, if it is young enough to plan with at `now`.
    fn known(&self, now: Instant) -> Option<Known> {
        let guard = self.report.load();
        let report = guard.as_ref()?;
        let age = now.saturating_duration_since(report.received_at);
        if age.as_millis() > u128::from(self.max_report_age_ms.load(Relaxed)) {
            return None;
        }
        Some(Known {
            load_kw: self.load_now_kw(report, now),
            capacity_kw: self.usable_capacity_kw(report.capacity_kw),
        })
    }

    /// Replace the held report whatever its version (the reset of [`Table::ingest`]).
    fn replace(&self, report: Report) {
        self.report.store(Some(Arc::new(report)));
        self.changed();
    }

    /// Offer a report; it replaces the held one only if its `(epoch, seq)` is greater. Callers
    /// go through [`Table::ingest`], which also counts what is dropped.
    ///
    /// The same version again (nothing changed since) confirms the held report: its age
    /// starts again, so a quiet substation's report keeps counting.
    pub fn offer(&self, report: Report) -> Offer {
        let version = report.version;
        let received_at = report.received_at;
        let new = Arc::new(report);
        let previous = self.report.rcu(|current| match current {
            Some(held) if held.version > version => Some(Arc::clone(held)),
            Some(held) if held.version == version => Some(Arc::new(Report {
                received_at: new.received_at.max(held.received_at),
                active_sessions: new.active_sessions.or(held.active_sessions),
                ..(**held).clone()
            })),
            _ => Some(Arc::clone(&new)),
        });
        let offer = match previous {
            Some(held) if held.version == version => Offer::Duplicate,
            Some(held) if held.version > version => Offer::Stale,
            _ => {
                self.sessions.mark_report(received_at);
                Offer::Accepted
            }
        };
        if offer != Offer::Stale {
            self.changed();
        }
        offer
    }

    /// The held report's load less the power of known sessions that have ended since it was
    /// received, never below zero.
    fn load_now_kw(&self, report: &Report, now: Instant) -> f64 {
        let ended = self.sessions.ended_since_report(now);
        (report.load_kw - ended.as_kw()).max(0.0)
    }

    pub fn report(&self) -> Option<Arc<Report>> {
        self.report.load_full()
    }

    pub fn in_flight(&self) -> Power {
        Power::from_watts(self.in_flight_w.load(Relaxed))
    }

    pub fn in_flight_kw(&self) -> f64 {
        self.in_flight().as_kw()
    }

    /// Utilisation after adding `extra_kw`, or `None` without a report.
    pub fn utilization_with(&self, extra_kw: f64) -> Option<f64> {
        let guard = self.report.load();
        let report = guard.as_ref()?;
        let capacity = self.usable_capacity_kw(report.capacity_kw);
        let load_kw = self.load_now_kw(report, Instant::now());
        Some((load_kw + self.in_flight_kw() + extra_kw) / capacity)
    }

    /// Utilisation after adding `kw`, if the substation may be chosen at `now` (eligible,
    /// with a report young enough) and the request [`fits`] within `max_utilization`; else
    /// `None`. What selection ranks by.
    pub fn score(&self, kw: f64, max_utilization: f64, now: Instant) -> Option<f64> {
        if !self.is_eligible() || self.ejected_for(now).is_some() {
            return None;
        }
        let known = self.known(now)?;
        let in_flight = self.in_flight().saturating_add(reserved(kw)?);
        fits(&known, in_flight, max_utilization)
            .then(|| (known.load_kw + in_flight.as_kw()) / known.capacity_kw)
    }

    /// How long until a request of `kw` is expected to fit, from the held report and the
    /// sessions known to end: zero if it fits now; `None` if it cannot be told (not eligible,
    /// no report, or the known sessions do not free enough).
    pub fn room_in(&self, kw: f64, max_utilization: f64, now: Instant) -> Option<Duration> {
        if !self.is_eligible() {
            return None;
        }
        let known = self.known(now)?;
        let in_flight = self.in_flight().saturating_add(reserved(kw)?);
        let excess_kw = known.load_kw + in_flight.as_kw() - known.capacity_kw * max_utilization;
        if excess_kw <= TOLERANCE_KW {
            return Some(Duration::ZERO);
        }
        self.sessions.room_in(reserved(excess_kw)?, now)
    }

    /// Reserve `kw` if the substation has a report and the request [`fits`] within
    /// `max_utilization`, atomically: two requests cannot both take the last room.
    pub fn try_reserve(self: &Arc<Self>, kw: f64, max_utilization: f64) -> Option<Reservation> {
        let w = reserved(kw)?.as_watts();
        let known = self.known(Instant::now())?;
        self.in_flight_w
            .fetch_update(Relaxed, Relaxed, |current| {
                let after = current.saturating_add(w);
                fits(&known, Power::from_watts(after), max_utilization).then_some(after)
            })
            .ok()?;
        self.changed();
        Some(Reservation {
            state: Arc::clone(self),
            w,
        })
    }

    /// A reservation of no power: for a request that must go here whatever the room (an
    /// Idempotency-Key retry, which the substation answers without booking again).
    pub fn reserve_nothing(self: &Arc<Self>) -> Reservation {
        Reservation {
            state: Arc::clone(self),
            w: 0,
        }
    }
}

/// Power reserved at a substation for one request in flight; released on drop.
#[derive(Debug)]
pub struct Reservation {
    state: Arc<SubstationState>,
    w: u64,
}

impl Reservation {
    pub fn state(&self) -> &Arc<SubstationState> {
        &self.state
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.state.in_flight_w.fetch_sub(self.w, Relaxed);
        if self.w > 0 {
            self.state.changed();
        }
    }
}

#[cfg(test)]
mod tests;
