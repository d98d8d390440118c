//! The load table: what the proxy believes about each substation.
//!
//! Per substation it keeps the newest load report (greatest `(epoch, seq)`, whichever way it
//! arrived: a `GET /load` probe or the `x-substation-load` header of an answer) and the power
//! of the requests the proxy has sent there and not yet seen answered ("in flight").
//!
//! Utilisation = (reported load + in-flight power) / reported capacity. Why that corrects
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
//! Hot-path state is atomics and an `ArcSwap`; nothing here takes a lock on the request path.

use arc_swap::ArcSwapOption;
use gridlb_protocol::{HeaderReport, LoadReport, ReportVersion};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// In-flight power is kept in milliwatts-of-kW (1/1000 kW) so it fits an atomic integer.
const MILLI: f64 = 1000.0;

/// The report the table holds for one substation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub version: ReportVersion,
    pub load_kw: f64,
    pub capacity_kw: f64,
    /// Known only from probes; the header form does not carry it.
    pub active_sessions: Option<u64>,
    pub received_at: Instant,
}

impl Report {
    pub fn from_probe(r: &LoadReport, now: Instant) -> Report {
        Report {
            version: r.version(),
            load_kw: r.load_kw,
            capacity_kw: r.capacity_kw,
            active_sessions: Some(r.active_sessions),
            received_at: now,
        }
    }

    pub fn from_header(r: &HeaderReport, now: Instant) -> Report {
        Report {
            version: r.version(),
            load_kw: r.load_kw,
            capacity_kw: r.capacity_kw,
            active_sessions: None,
            received_at: now,
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
}

/// Everything the proxy tracks for one configured substation. Shared (`Arc`) between the
/// selector, the probe, the proxy and the admin API, and kept across config reloads while
/// the substation's name and address stay the same.
#[derive(Debug)]
pub struct SubstationState {
    pub name: String,
    pub addr: SocketAddr,
    report: ArcSwapOption<Report>,
    in_flight_milli_kw: AtomicU64,
    /// Mirrors Pingora's health verdict (set by the probe on every flip); starts healthy as
    /// Pingora's does. Selection still consults Pingora's own readiness.
    healthy: AtomicBool,
    /// Draining because the config says `drain: true`.
    drain_config: AtomicBool,
    /// Draining because an operator said so on the admin API (survives reloads).
    drain_admin: AtomicBool,
    /// Left the config: no new requests while its in-flight ones finish.
    removed: AtomicBool,
    /// Probes that have completed, good or bad.
    probes: AtomicU64,
    /// Sessions this proxy routed here that the substation accepted.
    pub routed: AtomicU64,
}

impl SubstationState {
    pub fn new(name: &str, addr: SocketAddr) -> Arc<SubstationState> {
        Arc::new(SubstationState {
            name: name.to_string(),
            addr,
            report: ArcSwapOption::empty(),
            in_flight_milli_kw: AtomicU64::new(0),
            healthy: AtomicBool::new(true),
            drain_config: AtomicBool::new(false),
            drain_admin: AtomicBool::new(false),
            removed: AtomicBool::new(false),
            probes: AtomicU64::new(0),
            routed: AtomicU64::new(0),
        })
    }

    /// Offer a report; it replaces the held one only if its `(epoch, seq)` is greater.
    pub fn offer(&self, report: Report) -> Offer {
        let version = report.version;
        let new = Arc::new(report);
        let previous = self.report.rcu(|current| match current {
            Some(held) if held.version >= version => Some(Arc::clone(held)),
            _ => Some(Arc::clone(&new)),
        });
        match previous {
            Some(held) if held.version == version => Offer::Duplicate,
            Some(held) if held.version > version => Offer::Stale,
            _ => Offer::Accepted,
        }
    }

    pub fn report(&self) -> Option<Arc<Report>> {
        self.report.load_full()
    }

    pub fn in_flight_kw(&self) -> f64 {
        self.in_flight_milli_kw.load(Relaxed) as f64 / MILLI
    }

    /// Utilisation after adding `extra_kw`, or `None` without a report.
    pub fn utilization_with(&self, extra_kw: f64) -> Option<f64> {
        let guard = self.report.load();
        let report = guard.as_ref()?;
        Some((report.load_kw + self.in_flight_kw() + extra_kw) / report.capacity_kw)
    }

    /// Reserve `kw` if the substation has a report and stays within `max_utilization`.
    pub fn try_reserve(self: &Arc<Self>, kw: f64, max_utilization: f64) -> Option<Reservation> {
        let milli = (kw * MILLI).ceil() as u64;
        let guard = self.report.load();
        let report = guard.as_ref()?;
        let limit = report.capacity_kw * max_utilization - report.load_kw;
        self.in_flight_milli_kw
            .fetch_update(Relaxed, Relaxed, |current| {
                let after = (current + milli) as f64 / MILLI;
                // A tiny tolerance so that an exact fit (e.g. 500 of 500 kW) is not refused
                // for floating-point rounding.
                (after <= limit + 1e-9).then_some(current + milli)
            })
            .ok()?;
        Some(Reservation {
            state: Arc::clone(self),
            milli_kw: milli,
        })
    }

    /// A reservation of no power: for a request that must go here whatever the room (an
    /// Idempotency-Key retry, which the substation answers without booking again).
    pub fn reserve_nothing(self: &Arc<Self>) -> Reservation {
        Reservation {
            state: Arc::clone(self),
            milli_kw: 0,
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Relaxed)
    }

    pub fn set_healthy(&self, healthy: bool) {
        self.healthy.store(healthy, Relaxed)
    }

    /// Takes no new sessions: drained by config or by an operator, or removed.
    pub fn is_draining(&self) -> bool {
        self.drain_config.load(Relaxed)
            || self.drain_admin.load(Relaxed)
            || self.removed.load(Relaxed)
    }

    pub fn set_config_drain(&self, drain: bool) {
        self.drain_config.store(drain, Relaxed)
    }

    pub fn set_admin_drain(&self, drain: bool) {
        self.drain_admin.store(drain, Relaxed)
    }

    pub fn is_admin_drained(&self) -> bool {
        self.drain_admin.load(Relaxed)
    }

    pub fn set_removed(&self) {
        self.removed.store(true, Relaxed)
    }

    pub fn is_removed(&self) -> bool {
        self.removed.load(Relaxed)
    }

    pub fn record_probe(&self) {
        self.probes.fetch_add(1, Relaxed);
    }

    pub fn probes(&self) -> u64 {
        self.probes.load(Relaxed)
    }
}

/// Power reserved at a substation for one request in flight; released on drop.
#[derive(Debug)]
pub struct Reservation {
    state: Arc<SubstationState>,
    milli_kw: u64,
}

impl Reservation {
    pub fn state(&self) -> &Arc<SubstationState> {
        &self.state
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.state
            .in_flight_milli_kw
            .fetch_sub(self.milli_kw, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> Arc<SubstationState> {
        SubstationState::new("s1", "127.0.0.1:1".parse().unwrap())
    }

    fn report(epoch: u64, seq: u64, load: f64) -> Report {
        Report {
            version: ReportVersion { epoch, seq },
            load_kw: load,
            capacity_kw: 100.0,
            active_sessions: None,
            received_at: Instant::now(),
        }
    }

    #[test]
    fn stale_report_does_not_replace_newer_one() {
        let s = state();
        assert_eq!(s.offer(report(1, 5, 50.0)), Offer::Accepted);
        assert_eq!(s.offer(report(1, 4, 10.0)), Offer::Stale);
        assert_eq!(s.offer(report(1, 5, 10.0)), Offer::Duplicate);
        assert_eq!(s.report().unwrap().load_kw, 50.0);
    }

    #[test]
    fn new_epoch_replaces_whatever_its_seq() {
        let s = state();
        s.offer(report(1, 900, 80.0));
        assert_eq!(s.offer(report(2, 0, 0.0)), Offer::Accepted);
        assert_eq!(s.report().unwrap().load_kw, 0.0);
    }

    #[test]
    fn no_report_means_no_reservation() {
        assert!(state().try_reserve(1.0, 1.0).is_none());
        assert_eq!(state().utilization_with(1.0), None);
    }

    #[test]
    fn reservations_never_exceed_the_limit_and_release_on_drop() {
        let s = state();
        s.offer(report(1, 1, 60.0));
        let a = s.try_reserve(30.0, 1.0).expect("90 of 100 fits");
        assert!(
            s.try_reserve(11.0, 1.0).is_none(),
            "101 of 100 must not fit"
        );
        let b = s.try_reserve(10.0, 1.0).expect("exactly 100 fits");
        assert!((s.utilization_with(0.0).unwrap() - 1.0).abs() < 1e-9);
        drop((a, b));
        assert_eq!(s.in_flight_kw(), 0.0);
        assert!(s.try_reserve(10.0, 0.69).is_none(), "70% is past a 69% cap");
    }

    #[test]
    fn concurrent_reservations_cannot_share_the_last_room() {
        let s = state();
        s.offer(report(1, 1, 0.0));
        let held: Vec<_> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    scope.spawn(|| {
                        (0..50)
                            .filter_map(|_| s.try_reserve(1.0, 1.0))
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap())
                .collect()
        });
        assert_eq!(held.len(), 100);
    }

    proptest! {
        /// Whatever order reports arrive in, the table ends with the greatest version.
        #[test]
        fn order_of_arrival_never_matters(mut versions in proptest::collection::vec((0u64..4, 0u64..50), 1..40)) {
            let s = state();
            for &(e, q) in &versions {
                s.offer(report(e, q, (e * 100 + q) as f64));
            }
            versions.sort();
            let (e, q) = *versions.last().unwrap();
            let held = s.report().unwrap();
            prop_assert_eq!(held.version, ReportVersion { epoch: e, seq: q });
            prop_assert_eq!(held.load_kw, (e * 100 + q) as f64);
        }
    }
}
