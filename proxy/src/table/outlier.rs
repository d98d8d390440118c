//! Outlier ejection, as Envoy and HAProxy do it: a substation that misbehaves is taken out of
//! the choice for a back-off period, still probed, and chosen again when the time is up. The
//! back-off starts at one probe interval and doubles with each ejection (at most
//! [`MAX_EJECTION`]); an accepted session resets it.
//!
//! Two reasons (the `reason` label of `gridlb_ejections_total`):
//! - `refused_with_room`: it refused a session while its own answer's report showed room;
//! - `slow`: the moving average of its `/charge` answers' latency is over [`SLOW_FACTOR`]
//!   times the typical latency (the median of its peers' `/charge` averages and its own probes'
//!   average) and over [`SLOW_FLOOR`]. A substation that answers `/load` at once and `/charge`
//!   after seconds, or far slower than the others, is out; a grid that is uniformly slow is not.
//!
//! At most half of the substations are out at once (the caller checks, as Envoy's
//! `max_ejection_percent`): a grid of one substation never ejects it.

use super::{Substation, SubstationState};
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;
use tokio::time::Instant;

/// The longest an outlier stays out of the choice.
pub const MAX_EJECTION: Duration = Duration::from_secs(60);
/// How many times the typical latency a substation's `/charge` average may reach.
pub const SLOW_FACTOR: u64 = 5;
/// Below this average no substation counts as slow.
pub const SLOW_FLOOR: Duration = Duration::from_millis(100);
/// Answers before a substation can be judged slow (one slow start is no pattern).
pub(super) const SAMPLES: u32 = 2;

/// Weight of a new sample in the moving averages (1/8, as TCP's SRTT).
fn ewma(old_us: u64, sample: Duration) -> u64 {
    let sample = u64::try_from(sample.as_micros()).unwrap_or(u64::MAX);
    if old_us == 0 {
        sample
    } else {
        old_us - old_us / 8 + sample / 8
    }
}

impl SubstationState {
    /// Take the substation out of the choice (outlier ejection, as Envoy and HAProxy do):
    /// for `base` after the first ejection, doubling with each further one up to
    /// [`MAX_EJECTION`], until a session is accepted there again ([`Self::accepted`]). It is
    /// still probed; when the time is up it is chosen again. Returns the time out.
    pub fn eject(&self, base: Duration) -> Duration {
        let n = self.ejections.fetch_add(1, Relaxed).min(16);
        let out = base.saturating_mul(1 << n).min(MAX_EJECTION);
        let until = Instant::now().saturating_duration_since(self.born) + out;
        let ns = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.ejected_until_ns.store(ns, Relaxed);
        self.changed();
        out
    }

    /// A session was accepted here: the ejection back-off starts again from its base.
    pub fn accepted(&self) {
        self.ejections.store(0, Relaxed);
    }

    /// How long the substation stays out of the choice, if it is ejected at `now`.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        let until = Duration::from_nanos(self.ejected_until_ns.load(Relaxed));
        let since_birth = now.saturating_duration_since(self.born);
        (until > since_birth).then(|| until - since_birth)
    }

    /// A probe took `latency`.
    pub fn probe_latency(&self, latency: Duration) {
        let old = self.probe_latency_us.load(Relaxed);
        self.probe_latency_us.store(ewma(old, latency), Relaxed);
    }

    /// A `/charge` answer took `latency` (a timeout counts as the time waited). Returns
    /// whether the substation is now slow among `peers` (the configured substations).
    pub fn charge_latency(&self, latency: Duration, peers: &[Substation]) -> bool {
        let old = self.charge_latency_us.load(Relaxed);
        let now = ewma(old, latency);
        self.charge_latency_us.store(now, Relaxed);
        let samples = self.charge_samples.fetch_add(1, Relaxed).saturating_add(1);
        if samples < SAMPLES || Duration::from_micros(now) <= SLOW_FLOOR {
            return false;
        }
        let mut typical: Vec<u64> = peers
            .iter()
            .filter(|p| !std::ptr::eq(p.state.as_ref(), self))
            .map(|p| p.state.charge_latency_us.load(Relaxed))
            .chain([self.probe_latency_us.load(Relaxed)])
            .filter(|&us| us > 0)
            .collect();
        if typical.is_empty() {
            return false;
        }
        typical.sort_unstable();
        let median = typical[typical.len() / 2];
        now > median.saturating_mul(SLOW_FACTOR)
    }
}
