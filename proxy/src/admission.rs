//! Admission: which substation a charging session goes to, with its power reserved there
//! before anything is sent. HTTP-free; the proxy service asks, and answers the client.
//!
//! [`Admission::admit`] decides a request's first substation:
//! 1. a request whose `Idempotency-Key` the proxy has seen goes where that key went, with the
//!    power reserved if it fits, else without (a replay books nothing; a new booking is refused
//!    by the substation if it does not fit, and the usual candidates follow) — see
//!    [`crate::affinity`];
//! 2. else the best candidate with room ([`Admission::select`]: selection's order, reserved
//!    with a compare-and-swap, never a substation this request already tried);
//! 3. a process that has just started (or taken over in a graceful upgrade) waits for its first
//!    probe round rather than refuse for want of reports it is about to have;
//! 4. when nothing seems to have room, the reports may only be stale (sessions end between
//!    probes): every eligible substation whose capacity could take the request and whose report
//!    is older than [`FRESH`] is probed again, now and in parallel, and selection runs again.
//!    Concurrent requests share one such round. A refusal never rests on an old report.

use crate::affinity::Affinity;
use crate::pool::Pool;
use crate::probe::LoadProbe;
use crate::table::{Reservation, SubstationState, Table};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A refusal is never based on a report older than this.
pub const FRESH: Duration = Duration::from_millis(25);

pub struct Admission {
    pool: Arc<Pool>,
    /// Which substation each recent Idempotency-Key went to.
    affinity: Affinity,
    /// Probes on demand, when the grid looks full (see [`Admission::refresh_for`]).
    refresher: LoadProbe,
    /// One refresh at a time; concurrent callers share its result.
    refresh_lock: tokio::sync::Mutex<()>,
}

impl Admission {
    /// Admission over `pool`; remembers up to 100,000 Idempotency-Keys for 15 minutes.
    pub fn new(pool: Arc<Pool>) -> Admission {
        Admission {
            refresher: LoadProbe::new(Arc::clone(pool.table())),
            pool,
            affinity: Affinity::new(100_000, Duration::from_secs(900)),
            refresh_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub fn pool(&self) -> &Arc<Pool> {
        &self.pool
    }

    pub fn table(&self) -> &Arc<Table> {
        self.pool.table()
    }

    /// The first substation for a request of `kw` (with `key`, its Idempotency-Key), its power
    /// reserved; `None` when no substation has room even on fresh reports.
    pub async fn admit(&self, kw: f64, key: Option<&str>) -> Option<Reservation> {
        if let Some(affine) = key.and_then(|k| self.affine(k, kw)) {
            return Some(affine);
        }
        if let Some(chosen) = self.select(kw, &[]) {
            return Some(chosen);
        }
        if !self.pool.has_probed() {
            let limit = self.table().config().probe.timeout * 2;
            if self.pool.wait_first_round(limit).await
                && let Some(chosen) = self.select(kw, &[])
            {
                return Some(chosen);
            }
        }
        self.refresh_for(kw).await;
        self.select(kw, &[])
    }

    /// Choose a substation for `kw` and reserve the power there. `tried` are the addresses
    /// this request already used (never the same one twice).
    pub fn select(&self, kw: f64, tried: &[SocketAddr]) -> Option<Reservation> {
        let max_utilization = self.table().config().selection.max_utilization;
        let reserved = std::cell::RefCell::new(None);
        self.pool.select_with(kw, tried, |state| {
            let reservation = state.try_reserve(kw, max_utilization);
            let taken = reservation.is_some();
            *reserved.borrow_mut() = reservation;
            taken
        });
        reserved.into_inner()
    }

    /// Remember that a request with `key` went to `substation`.
    pub fn remember(&self, key: &str, substation: &str) {
        self.affinity.remember(key, substation);
    }

    /// Where `key` went before, if it did and that substation is still configured.
    fn affine(&self, key: &str, kw: f64) -> Option<Reservation> {
        let name = self.affinity.get(key)?;
        let snapshot = self.table().snapshot();
        let state = &snapshot.find(&name)?.state;
        if state.is_removed() {
            return None;
        }
        let max_utilization = snapshot.config.selection.max_utilization;
        Some(
            state
                .try_reserve(kw, max_utilization)
                .unwrap_or_else(|| state.reserve_nothing()),
        )
    }

    /// Re-probe, now and in parallel, every eligible substation whose capacity could take
    /// `kw` and whose report is older than [`FRESH`], so that the caller can select again.
    /// Concurrent callers wait for the same round instead of probing again (and then find the
    /// reports fresh); a round takes at most one probe timeout.
    pub async fn refresh_for(&self, kw: f64) {
        let _serial = self.refresh_lock.lock().await;
        let snapshot = self.table().snapshot_full();
        let stale: Vec<&Arc<SubstationState>> = snapshot
            .substations
            .iter()
            .map(|s| &s.state)
            .filter(|s| s.is_eligible())
            .filter(|s| {
                s.report().is_some_and(|r| {
                    s.usable_capacity_kw(r.capacity_kw) >= kw && r.received_at.elapsed() > FRESH
                })
            })
            .collect();
        futures::future::join_all(stale.iter().map(|s| self.refresher.refresh(s))).await;
    }
}
