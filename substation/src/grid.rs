//! The substation's ledger: active sessions, booking, expiry, idempotency and the load report.
//!
//! Algorithm. One mutex guards the ledger; a booking checks `load + power <= capacity` and
//! books under that same lock, so concurrent requests can never overbook. Powers are kept as
//! [`Power`] (whole watts, rounded up from the request's kW), so sums are exact: a load that
//! rose by 7.4 kW and fell by 7.4 kW is 0 again, and the capacity edge is decided without
//! rounding noise. Session ids come from [`SessionId::new`], the one place their format lives.
//!
//! Sessions are also indexed by end time (a `BTreeMap` keyed by `(end, n)`), which gives both
//! expiry (pop the front while it is due) and `Retry-After` (walk end times in order until
//! enough power would be free) in order of time. Expiry is done lazily before every booking,
//! delete and report, and by one reaper task ([`Substation::expire_sessions`]) that sleeps
//! until the next end time; tokio's clock is used throughout, so `tokio::time::pause` makes
//! tests exact, and the ledger methods take `now` explicitly.
//!
//! Invariants:
//! - `load` is the sum of the active sessions' powers and never exceeds `capacity`;
//! - `seq` rises by exactly one for every booking and every ended session;
//! - an idempotency key is remembered exactly as long as the session it booked is active;
//! - `epoch` is distinct for every `Substation` made in this process and rises from one
//!   process start to the next (it is derived from the wall clock in ms, times 1000).

use crate::metrics::Metrics;
use gridlb_protocol::{
    ChargeAccepted, ChargeRequest, IdempotencyKey, LoadReport, OrcaLoadReport, Power, SessionId,
    SubstationName,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The longest real time a session holds its power (ten years); longer sessions are cut to it.
pub const MAX_HOLD: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// The sliding window (real time) over which ORCA's `rps_fractional` counts accepted sessions.
pub const RPS_WINDOW: Duration = Duration::from_secs(2);

/// The simulated substation: its ledger of sessions, its report version and its metrics.
pub struct Substation {
    name: SubstationName,
    capacity_kw: f64,
    capacity: Power,
    time_scale: f64,
    epoch: u64,
    ledger: Mutex<Ledger>,
    metrics: Metrics,
    /// Wakes the reaper when a booking ends sooner than every other session.
    wake_reaper: Notify,
    /// How the ORCA header's text is written (see `Config::orca_form`).
    orca_colon: std::sync::atomic::AtomicBool,
    /// `Config::max_session_kw` and `Config::max_duration_s` (f64 bits).
    max_session_kw: std::sync::atomic::AtomicU64,
    max_duration_s: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct Ledger {
    sessions: HashMap<String, Session>,
    /// `(end, n)` → session id, in order of end time.
    ends: BTreeMap<(Instant, u64), String>,
    /// Idempotency key → the `201` answer that booked the session.
    /// Each accepted key with the request it came with and the answer it got.
    keys: HashMap<IdempotencyKey, (ChargeRequest, ChargeAccepted)>,
    load: Power,
    seq: u64,
    last_n: u64,
    /// When the sessions of the last [`RPS_WINDOW`] were accepted, oldest first.
    accepted_at: VecDeque<Instant>,
}

struct Session {
    n: u64,
    power: Power,
    started: Instant,
    ends: Instant,
    /// Simulated seconds the session holds its power when it runs to its end.
    planned_s: f64,
    key: Option<IdempotencyKey>,
}

/// The outcome of a booking.
#[derive(Debug, Clone, PartialEq)]
pub enum Booking {
    /// Booked; `report` is the report right after the booking.
    Accepted {
        answer: ChargeAccepted,
        report: LoadReport,
    },
    /// The idempotency key booked `answer` before; nothing was booked now.
    Replay {
        answer: ChargeAccepted,
        report: LoadReport,
    },
    /// The idempotency key booked another request before: nothing was booked now.
    KeyReused { report: LoadReport },
    /// No session id could be made (the OS random source failed): nothing was booked.
    NoId(String),
    /// Does not fit now; enough power is free in `retry_after_s` whole seconds (at least 1).
    Refused {
        retry_after_s: u64,
        free: Power,
        report: LoadReport,
    },
}

/// A session ended by `DELETE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Ended {
    pub freed: Power,
    pub report: LoadReport,
}

#[derive(Clone, Copy, PartialEq)]
enum EndReason {
    Expired,
    Deleted,
}

impl Substation {
    /// A substation with no sessions and a fresh epoch. Spawns nothing: expiry of idle
    /// substations needs [`Substation::expire_sessions`] (the [`crate::Server`] runs it).
    ///
    /// # Panics
    /// If `id` is not a valid substation name, `capacity_kw` is not finite and in `(0, 1e9]`
    /// or `time_scale` not finite and positive: a programming error,
    /// [`crate::Config::validate`] checks user input.
    pub fn new(id: &str, capacity_kw: f64, time_scale: f64) -> Arc<Substation> {
        let name = SubstationName::parse(id).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            capacity_kw.is_finite() && capacity_kw > 0.0 && capacity_kw <= 1e9,
            "capacity_kw must be finite and in (0, 1e9], got {capacity_kw}"
        );
        assert!(
            time_scale.is_finite() && time_scale > 0.0,
            "time_scale must be finite and positive, got {time_scale}"
        );
        let epoch = new_epoch();
        Arc::new(Substation {
            name,
            capacity_kw,
            capacity: Power::from_kw(capacity_kw).expect("capacity_kw was checked just above"),
            time_scale,
            epoch,
            ledger: Mutex::new(Ledger::default()),
            metrics: Metrics::new(capacity_kw, epoch),
            wake_reaper: Notify::new(),
            orca_colon: std::sync::atomic::AtomicBool::new(false),
            max_session_kw: gridlb_protocol::MAX_SESSION_KW.to_bits().into(),
            max_duration_s: gridlb_protocol::MAX_DURATION_S.to_bits().into(),
        })
    }

    /// The substation's name.
    pub fn id(&self) -> &str {
        self.name.as_str()
    }

    /// Capacity in kW, as configured.
    pub fn capacity_kw(&self) -> f64 {
        self.capacity_kw
    }

    /// Capacity in whole watts, the unit of the ledger.
    pub fn capacity(&self) -> Power {
        self.capacity
    }

    /// The epoch of this instance's reports.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The current load report (ends due sessions first).
    pub fn report(&self) -> LoadReport {
        let mut ledger = self.lock();
        self.expire_locked(&mut ledger, Instant::now());
        self.report_locked(&ledger)
    }

    pub(crate) fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Book `request` at `now` if it fits, or replay the answer its idempotency `key` got.
    /// The caller has checked the request against the capacity
    /// ([`ChargeRequest::check_capacity`]).
    pub fn book(
        &self,
        request: &ChargeRequest,
        key: Option<&IdempotencyKey>,
        now: Instant,
    ) -> Booking {
        let mut ledger = self.lock();
        self.expire_locked(&mut ledger, now);
        if let Some((first, answer)) = key.and_then(|k| ledger.keys.get(k)) {
            if first != request {
                self.count("key_reused");
                return Booking::KeyReused {
                    report: self.report_locked(&ledger),
                };
            }
            let answer = answer.clone();
            self.count("idempotent_replay");
            return Booking::Replay {
                answer,
                report: self.report_locked(&ledger),
            };
        }
        let power = booked_power(request.power_kw);
        let free = self.capacity.saturating_sub(ledger.load);
        if power > free {
            self.count("refused");
            return Booking::Refused {
                retry_after_s: self.retry_after_s(&ledger, power, now),
                free,
                report: self.report_locked(&ledger),
            };
        }
        let id = match SessionId::generate(&self.name) {
            Ok(id) => id,
            Err(e) => return Booking::NoId(e.to_string()),
        };
        let answer = self.insert_locked(&mut ledger, id, request, power, key, now);
        ledger.accepted_at.push_back(now);
        self.count("accepted");
        self.publish_locked(&ledger);
        Booking::Accepted {
            answer,
            report: self.report_locked(&ledger),
        }
    }

    /// End the session `session_id` at `now` and free its power; `None` if it is not active.
    pub fn end(&self, session_id: &str, now: Instant) -> Option<Ended> {
        let mut ledger = self.lock();
        self.expire_locked(&mut ledger, now);
        let freed = self.remove_locked(&mut ledger, session_id, EndReason::Deleted, now)?;
        self.publish_locked(&ledger);
        Some(Ended {
            freed,
            report: self.report_locked(&ledger),
        })
    }

    /// End every session whose time is up at `now`; returns how many ended.
    pub fn expire_due(&self, now: Instant) -> usize {
        let mut ledger = self.lock();
        self.expire_locked(&mut ledger, now)
    }

    /// The ORCA form of the current load: utilisation, and sessions accepted per second over
    /// the last [`RPS_WINDOW`].
    /// Write the ORCA header as `key:value` (Envoy's form) instead of `key=value`.
    pub fn set_orca_form(&self, form: gridlb_protocol::OrcaTextForm) {
        let colon = form == gridlb_protocol::OrcaTextForm::Colon;
        self.orca_colon
            .store(colon, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refuse sessions over `max_kw` or longer than `max_duration_s` (within the protocol's
    /// bounds, which hold by default).
    pub fn set_session_bounds(&self, max_kw: f64, max_duration_s: f64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.max_session_kw.store(max_kw.to_bits(), Relaxed);
        self.max_duration_s.store(max_duration_s.to_bits(), Relaxed);
    }

    /// The session bounds: the most kW and the longest duration one session may ask for.
    pub fn session_bounds(&self) -> (f64, f64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            f64::from_bits(self.max_session_kw.load(Relaxed)),
            f64::from_bits(self.max_duration_s.load(Relaxed)),
        )
    }

    /// The ORCA header's text for `report`, in this substation's form.
    pub fn orca_text(&self, report: &LoadReport, now: Instant) -> String {
        let form = if self.orca_colon.load(std::sync::atomic::Ordering::Relaxed) {
            gridlb_protocol::OrcaTextForm::Colon
        } else {
            gridlb_protocol::OrcaTextForm::Equals
        };
        self.orca(report, now).text(form)
    }

    pub fn orca(&self, report: &LoadReport, now: Instant) -> OrcaLoadReport {
        let mut ledger = self.lock();
        while ledger
            .accepted_at
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > RPS_WINDOW)
        {
            ledger.accepted_at.pop_front();
        }
        let rps = ledger.accepted_at.len() as f64 / RPS_WINDOW.as_secs_f64();
        OrcaLoadReport::substation(report.load_kw, report.capacity_kw, rps)
    }

    /// When the next session ends, if any is active.
    pub fn next_end(&self) -> Option<Instant> {
        self.lock().ends.first_key_value().map(|((end, _), _)| *end)
    }

    /// The reaper: ends sessions on time even when no request comes. Runs until aborted.
    pub async fn expire_sessions(self: Arc<Self>) {
        loop {
            match self.next_end() {
                Some(end) => tokio::select! {
                    () = tokio::time::sleep_until(end) => {}
                    () = self.wake_reaper.notified() => {}
                },
                None => self.wake_reaper.notified().await,
            }
            self.expire_due(Instant::now());
        }
    }

    fn lock(&self) -> MutexGuard<'_, Ledger> {
        // A panic while the lock was held cannot leave the ledger half-updated in a way that
        // matters more than stopping the whole substation would, so keep serving.
        self.ledger.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn insert_locked(
        &self,
        ledger: &mut Ledger,
        id: SessionId,
        request: &ChargeRequest,
        power: Power,
        key: Option<&IdempotencyKey>,
        now: Instant,
    ) -> ChargeAccepted {
        ledger.last_n += 1;
        let n = ledger.last_n;
        let session_id = id.to_string();
        let hold_s = (request.duration_s / self.time_scale).min(MAX_HOLD.as_secs_f64());
        let ends = now
            .checked_add(Duration::from_secs_f64(hold_s))
            .unwrap_or(now);
        ledger.load = ledger.load.saturating_add(power);
        ledger.seq += 1;
        let answer = ChargeAccepted {
            session_id: session_id.clone(),
            substation: self.name.to_string(),
            power_kw: request.power_kw,
            load_kw: ledger.load.as_kw(),
            capacity_kw: self.capacity_kw,
            ends_at: Some(gridlb_protocol::unix_now() + hold_s),
            remaining_s: Some(hold_s),
        };
        if let Some(key) = key {
            ledger
                .keys
                .insert(key.clone(), (request.clone(), answer.clone()));
        }
        let session = Session {
            n,
            power,
            started: now,
            ends,
            planned_s: request.duration_s.min(hold_s * self.time_scale),
            key: key.cloned(),
        };
        let soonest = ledger
            .ends
            .first_key_value()
            .is_none_or(|((e, _), _)| ends < *e);
        ledger.ends.insert((ends, n), session_id.clone());
        ledger.sessions.insert(session_id, session);
        if soonest {
            self.wake_reaper.notify_one();
        }
        answer
    }

    /// Remove one session; returns the power it freed.
    fn remove_locked(
        &self,
        ledger: &mut Ledger,
        session_id: &str,
        reason: EndReason,
        now: Instant,
    ) -> Option<Power> {
        let session = ledger.sessions.remove(session_id)?;
        ledger.ends.remove(&(session.ends, session.n));
        if let Some(key) = &session.key {
            ledger.keys.remove(key);
        }
        ledger.load = ledger.load.saturating_sub(session.power);
        ledger.seq += 1;
        let held_s = match reason {
            EndReason::Expired => session.planned_s,
            EndReason::Deleted => {
                let real_s = now.saturating_duration_since(session.started).as_secs_f64();
                (real_s * self.time_scale).min(session.planned_s)
            }
        };
        let label = match reason {
            EndReason::Expired => "expired",
            EndReason::Deleted => "deleted",
        };
        self.metrics
            .sessions_ended
            .with_label_values(&[label])
            .inc();
        self.metrics
            .energy_delivered_kwh
            .inc_by(session.power.as_kw() * held_s / 3600.0);
        Some(session.power)
    }

    fn expire_locked(&self, ledger: &mut Ledger, now: Instant) -> usize {
        let mut ended = 0;
        while let Some(entry) = ledger.ends.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let session_id = entry.remove();
            self.remove_locked(ledger, &session_id, EndReason::Expired, now);
            ended += 1;
        }
        if ended > 0 {
            self.publish_locked(ledger);
        }
        ended
    }

    /// Whole seconds from `now` until `need` fits, walking the end times in order.
    fn retry_after_s(&self, ledger: &Ledger, need: Power, now: Instant) -> u64 {
        let mut load = ledger.load;
        for ((end, _), session_id) in &ledger.ends {
            let power = ledger
                .sessions
                .get(session_id)
                .map_or(Power::ZERO, |s| s.power);
            load = load.saturating_sub(power);
            if load.saturating_add(need) <= self.capacity {
                let wait = end.saturating_duration_since(now);
                let whole = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return whole.max(1);
            }
        }
        1
    }

    fn report_locked(&self, ledger: &Ledger) -> LoadReport {
        LoadReport {
            substation: self.name.to_string(),
            epoch: self.epoch,
            seq: ledger.seq,
            load_kw: ledger.load.as_kw(),
            capacity_kw: self.capacity_kw,
            active_sessions: ledger.sessions.len() as u64,
        }
    }

    /// Set the load gauges from the ledger (called under the lock after each change).
    fn publish_locked(&self, ledger: &Ledger) {
        let load_kw = ledger.load.as_kw();
        self.metrics.load_kw.set(load_kw);
        self.metrics.utilization.set(load_kw / self.capacity_kw);
        self.metrics
            .active_sessions
            .set(i64::try_from(ledger.sessions.len()).unwrap_or(i64::MAX));
        self.metrics
            .report_seq
            .set(i64::try_from(ledger.seq).unwrap_or(i64::MAX));
    }

    fn count(&self, result: &str) {
        self.metrics.sessions.with_label_values(&[result]).inc();
    }
}

/// The power a request books: its kW rounded up to a whole watt, so at least 1 W for any
/// positive power (nothing books for free).
fn booked_power(kw: f64) -> Power {
    // Requests are parsed (finite, positive) and checked against the capacity (≤ 1e9 kW)
    // before they are booked; should one slip through, it books everything rather than
    // nothing.
    Power::from_kw(kw).unwrap_or(Power::MAX)
}

/// A new epoch: wall-clock ms × 1000, raised past the last one handed out in this process
/// so that every instance gets its own. Stays below 2^53 until the year 2255.
fn new_epoch() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| {
            u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 1000)
        });
    let candidate = now_ms.saturating_mul(1000);
    let next = |last: u64| candidate.max(last + 1);
    match LAST.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |last| Some(next(last))) {
        Ok(last) | Err(last) => next(last),
    }
}

#[cfg(test)]
mod tests;
