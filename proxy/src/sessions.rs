//! The sessions this proxy routed and when they end: power that has left a substation since
//! its last report, known before the next report says so.
//!
//! A substation's report counts every session active when it was made. Between two reports,
//! sessions end; the substation only says so in its next report (a probe, or the header of its
//! next answer). The substation's `201` states when the session ends
//! (`x-session-remaining-s`, real seconds, so a simulator's time scale is covered), and gridlb
//! knows the power it reserved for it; so per substation this ledger keeps the sessions it
//! routed, ordered by end time, and the power of those that have ended since the held report
//! was received ([`Sessions::ended_since_report`]). The table subtracts it from the reported
//! load (never below zero); the next report corrects any error, because marking a report
//! ([`Sessions::mark_report`]) starts the count again from its time of receipt. A `DELETE`
//! answered `200` forgets the session at once ([`Sessions::forget`]): its answer's report
//! already excludes it, and it must not be subtracted again when its end time comes.
//!
//! Algorithm: a `BTreeMap` keyed by `(end, n)` (the timeline) and a map from session id to its
//! key; expiry is lazy: whoever asks first after an end time moves the ended power into a
//! monotone total `ended_w` (an atomic), and a report stores the total at its receipt
//! (`base_w`). The answer is `ended_w - base_w`, read from two atomics. The request path reads
//! the earliest end time from an atomic and takes no lock before it; after it, the lock is
//! only tried: when another thread holds it, that thread is advancing the same timeline, and
//! the last total is used.
//!
//! What a replica cannot know: with several gridlb replicas each knows only the sessions it
//! routed, and subtracts only those. Sessions routed by another replica, or ended early by a
//! `DELETE` through another replica, show up in the next report. The estimate errs low only
//! by the power of known sessions that another replica deleted before their end; otherwise it
//! is never below the truth. The idea is the one behind Envoy's and gRPC's client-side load
//! reports (ORCA): use what the client side knows between the server's reports.

use gridlb_protocol::Power;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;
use tokio::time::Instant;

/// The longest a session is remembered (a day): a longer one is remembered this long, which
/// only makes the estimate err on the side of caution after that.
pub const MAX_REMEMBERED: Duration = Duration::from_secs(24 * 3600);

/// One substation's known sessions by end time.
#[derive(Debug, Default)]
pub struct Sessions {
    inner: Mutex<Timeline>,
    /// The earliest end time in the timeline, as nanoseconds since `origin` (`u64::MAX` when
    /// empty): the request path takes no lock until then.
    next_end_ns: AtomicU64,
    /// The zero of `next_end_ns`: when the first session was recorded.
    origin: OnceLock<Instant>,
    /// Power (W) of every session that has ended so far, as far as the timeline was advanced.
    ended_w: AtomicU64,
    /// `ended_w` when the held report was received.
    base_w: AtomicU64,
}

#[derive(Debug, Default)]
struct Timeline {
    ends: BTreeMap<(Instant, u64), (String, u64)>,
    /// Ids come from substations: `ahash` is randomly keyed like std's SipHash, and cheaper.
    ids: HashMap<String, (Instant, u64), ahash::RandomState>,
    last_n: u64,
}

impl Sessions {
    /// Remember a session of `power` that ends at `ends` (a repeat of a known id replaces it).
    pub fn record(&self, id: &str, power: Power, ends: Instant, now: Instant) {
        let ends = ends.min(now + MAX_REMEMBERED);
        let mut t = self.lock();
        self.origin.get_or_init(|| now);
        if let Some(key) = t.ids.remove(id) {
            t.ends.remove(&key);
        }
        if ends > now {
            t.last_n += 1;
            let key = (ends, t.last_n);
            t.ids.insert(id.to_string(), key);
            t.ends.insert(key, (id.to_string(), power.as_watts()));
        }
        self.publish_next_end(&t);
    }

    /// Forget a session ended by `DELETE` before its time; returns its power if it was known
    /// and had not ended yet.
    pub fn forget(&self, id: &str) -> Option<Power> {
        let mut t = self.lock();
        let key = t.ids.remove(id)?;
        let power = t.ends.remove(&key).map(|(_, w)| Power::from_watts(w));
        self.publish_next_end(&t);
        power
    }

    /// A newer report, received at `received_at`, is now held: count ended power from there.
    pub fn mark_report(&self, received_at: Instant) {
        // No lock unless a known session may have ended by then (most reports).
        if self.may_have_ended(received_at) {
            let mut t = self.lock();
            self.advance(&mut t, received_at);
        }
        self.base_w.store(self.ended_w.load(Relaxed), Relaxed);
    }

    /// Power of the known sessions that have ended between the held report's receipt and
    /// `now`.
    pub fn ended_since_report(&self, now: Instant) -> Power {
        if self.may_have_ended(now) {
            if let Ok(mut t) = self.inner.try_lock() {
                self.advance(&mut t, now);
            }
        }
        let ended = self.ended_w.load(Relaxed);
        Power::from_watts(ended.saturating_sub(self.base_w.load(Relaxed)))
    }

    /// How long from `now` until known sessions of at least `need` have ended: the end time
    /// of the session that brings the freed power to `need`. `None` when the known sessions
    /// do not add up to it.
    pub fn room_in(&self, need: Power, now: Instant) -> Option<Duration> {
        if need == Power::ZERO {
            return Some(Duration::ZERO);
        }
        let mut t = self.lock();
        self.advance(&mut t, now);
        let mut freed = 0u64;
        for ((end, _), (_, w)) in &t.ends {
            freed = freed.saturating_add(*w);
            if freed >= need.as_watts() {
                return Some(end.saturating_duration_since(now));
            }
        }
        None
    }

    /// Sessions known and not yet ended (as far as the timeline was advanced).
    pub fn known(&self) -> usize {
        self.lock().ends.len()
    }

    /// The earliest end of a known session not yet counted as ended, if any: when the
    /// power ended since the report may next change.
    pub fn next_end(&self) -> Option<Instant> {
        let origin = self.origin.get()?;
        match self.next_end_ns.load(Relaxed) {
            u64::MAX => None,
            ns => origin.checked_add(Duration::from_nanos(ns)),
        }
    }

    /// Whether a session may have ended by `now` that the total does not count yet.
    fn may_have_ended(&self, now: Instant) -> bool {
        let Some(origin) = self.origin.get() else {
            return false;
        };
        let since = now.saturating_duration_since(*origin).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX) >= self.next_end_ns.load(Relaxed)
    }

    /// Publish the earliest end time (under the lock, after every change).
    fn publish_next_end(&self, t: &Timeline) {
        let next = match (self.origin.get(), t.ends.first_key_value()) {
            (Some(origin), Some(((end, _), _))) => {
                let ns = end.saturating_duration_since(*origin).as_nanos();
                u64::try_from(ns).unwrap_or(u64::MAX - 1)
            }
            _ => u64::MAX,
        };
        self.next_end_ns.store(next, Relaxed);
    }

    /// Move every session that ended by `now` into the ended total.
    fn advance(&self, t: &mut Timeline, now: Instant) {
        let mut ended = 0u64;
        while let Some(entry) = t.ends.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let (id, w) = entry.remove();
            t.ids.remove(&id);
            ended = ended.saturating_add(w);
        }
        if ended > 0 {
            self.ended_w.fetch_add(ended, Relaxed);
            self.publish_next_end(t);
        }
    }

    fn lock(&self) -> MutexGuard<'_, Timeline> {
        // The timeline is consistent after every statement that a panic could interrupt.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The session a `201` answer booked: its id (from `Location: /charge/{id}`) and when it ends
/// (`x-session-remaining-s` real seconds after `now`). `None` when either is missing.
pub fn accepted(headers: &http::HeaderMap, now: Instant) -> Option<(String, Instant)> {
    let id = headers
        .get(http::header::LOCATION)?
        .to_str()
        .ok()?
        .strip_prefix("/charge/")?;
    let remaining: f64 = headers
        .get(&crate::names::SESSION_REMAINING)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    if !remaining.is_finite() || remaining < 0.0 {
        return None;
    }
    let remaining = Duration::from_secs_f64(remaining.min(MAX_REMEMBERED.as_secs_f64()));
    Some((id.to_string(), now + remaining))
}

#[cfg(test)]
mod tests;
