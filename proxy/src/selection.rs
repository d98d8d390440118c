//! Backend selection: which substation takes a charging session.
//!
//! [`GridSelection`] implements Pingora's [`BackendSelection`] and is rebuilt by Pingora's
//! `LoadBalancer` whenever discovery changes the set of substations. Each `Backend` carries
//! its [`SubstationState`] in `Backend.ext`, so the selector reads live loads without a
//! lookup. The selection key is the requested power (`f64` little-endian bytes, see
//! [`request_key`]): the selector ranks substations by what the request would do to them.
//!
//! The iterator yields candidates in order of preference; the caller (`grid.rs`) accepts
//! the first that Pingora reports ready (healthy and not disabled) and that has room, by
//! reserving the power ([`SubstationState::try_reserve`]). Every algorithm skips substations
//! with no report yet (never chosen blind), those draining, and those the probe has marked
//! unhealthy; a substation the request would push past `max_utilization` is never accepted.
//!
//! Algorithms:
//! - `least-load`: lowest utilisation after adding the request, ties broken at random; then
//!   the next lowest, and so on, each found when asked for (see [`Order`]): the first choice
//!   costs one pass over the substations, never a sort.
//! - `p2c`: the "power of two random choices" (Mitzenmacher, 2001; tower's `balance::p2c`):
//!   two distinct random candidates, the less utilised first, then the other, then the rest
//!   in least-load order. It needs no global view, so it herds less when reports are stale.
//! - `round-robin` and `random`: baselines that ignore load (weighted by `weight`); they only
//!   skip a substation that has no room.
//!
//! Randomness comes from [`Rng`], a seedable SplitMix64, so tests are exact.

use crate::config::{Algorithm, SelectionConfig};
use crate::table::SubstationState;
use arc_swap::ArcSwap;
use pingora_load_balancing::Backend;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

/// The selection key for a request of `kw` kilowatts.
pub fn request_key(kw: f64) -> [u8; 8] {
    kw.to_le_bytes()
}

fn key_kw(key: &[u8]) -> f64 {
    key.try_into().map(f64::from_le_bytes).unwrap_or(0.0)
}

/// A lock-free, seedable SplitMix64 generator (Steele, Lea and Flood, 2014).
#[derive(Debug)]
pub struct Rng(AtomicU64);

impl Rng {
    pub fn seeded(seed: u64) -> Rng {
        Rng(AtomicU64::new(seed))
    }

    /// Seeded from the clock and the process id.
    pub fn from_entropy() -> Rng {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng::seeded(nanos ^ (u64::from(std::process::id()) << 32))
    }

    pub fn next_u64(&self) -> u64 {
        let state = self.0.fetch_add(0x9E37_79B9_7F4A_7C15, Relaxed);
        Rng::mix(state.wrapping_add(0x9E37_79B9_7F4A_7C15))
    }

    /// SplitMix64's finaliser: a well-mixed 64-bit value from any input.
    pub fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Uniform in `(0, 1]`.
    pub fn unit(&self) -> f64 {
        ((self.next_u64() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// What the selector shares with the rest of the proxy: the live selection settings
/// (swapped on reload) and the random source.
#[derive(Debug, Clone)]
pub struct SelectorConfig {
    pub settings: Arc<ArcSwap<SelectionConfig>>,
    pub rng: Arc<Rng>,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            settings: Arc::new(ArcSwap::from_pointee(SelectionConfig {
                algorithm: Algorithm::LeastLoad,
                max_utilization: 1.0,
                default_request_kw: 11.0,
            })),
            rng: Arc::new(Rng::from_entropy()),
        }
    }
}

/// The substations of one discovery generation, with their live state.
pub struct GridSelection {
    backends: Vec<Backend>,
    states: Vec<Arc<SubstationState>>,
    /// Indices repeated by weight, for the weighted baselines.
    weighted: Vec<usize>,
    next: AtomicUsize,
    config: SelectorConfig,
}

impl BackendSelection for GridSelection {
    type Iter = GridIter;
    type Config = SelectorConfig;

    fn build(backends: &BTreeSet<Backend>) -> Self {
        Self::build_with_config(backends, &SelectorConfig::default())
    }

    /// Backends without a [`SubstationState`] in `ext` are ignored.
    fn build_with_config(backends: &BTreeSet<Backend>, config: &SelectorConfig) -> Self {
        let (backends, states): (Vec<_>, Vec<_>) = backends
            .iter()
            .filter_map(|b| {
                let state = b.ext.get::<Arc<SubstationState>>()?;
                Some((b.clone(), Arc::clone(state)))
            })
            .unzip();
        let weighted = backends
            .iter()
            .enumerate()
            .flat_map(|(i, b)| std::iter::repeat_n(i, b.weight.max(1)))
            .collect();
        GridSelection {
            backends,
            states,
            weighted,
            next: AtomicUsize::new(0),
            config: config.clone(),
        }
    }

    fn iter(self: &Arc<Self>, key: &[u8]) -> GridIter {
        GridIter {
            selection: Arc::clone(self),
            order: self.order(key_kw(key)),
        }
    }
}

/// A candidate's score: utilisation after the request, a random tie-breaker, its index.
type Scored = (f64, u64, usize);

fn cmp(a: &Scored, b: &Scored) -> std::cmp::Ordering {
    a.0.total_cmp(&b.0).then(a.1.cmp(&b.1))
}

/// The candidates of one request in order of preference: a fixed head (p2c's two, or a
/// baseline's whole order), then the rest by least utilisation, each found when asked for.
/// A request usually takes only the first, so the full order is never sorted: the first
/// choice costs one pass over the candidates.
pub struct Order {
    head: Vec<usize>,
    pos: usize,
    rest: Vec<Scored>,
}

impl Order {
    fn fixed(head: Vec<usize>) -> Order {
        Order {
            head,
            pos: 0,
            rest: Vec::new(),
        }
    }

    fn least_first(rest: Vec<Scored>) -> Order {
        Order {
            head: Vec::new(),
            pos: 0,
            rest,
        }
    }

    pub fn next_index(&mut self) -> Option<usize> {
        if let Some(&i) = self.head.get(self.pos) {
            self.pos += 1;
            return Some(i);
        }
        let best = (0..self.rest.len()).min_by(|&a, &b| cmp(&self.rest[a], &self.rest[b]))?;
        Some(self.rest.swap_remove(best).2)
    }
}

impl GridSelection {
    /// The candidates for a request of `kw`, in order of preference.
    pub fn order(&self, kw: f64) -> Order {
        let settings = self.config.settings.load();
        let eligible = self.scored(kw, settings.max_utilization);
        match settings.algorithm {
            Algorithm::LeastLoad => Order::least_first(eligible),
            Algorithm::P2c => self.p2c(eligible),
            Algorithm::RoundRobin => Order::fixed(self.round_robin(&eligible)),
            Algorithm::Random => Order::fixed(self.weighted_random(&eligible)),
        }
    }

    /// The first choice for a request of `kw` (what one request costs, usually).
    pub fn choose(&self, kw: f64) -> Option<usize> {
        self.order(kw).next_index()
    }

    /// Every candidate for a request of `kw`, in order of preference.
    pub fn rank(&self, kw: f64) -> Vec<usize> {
        let mut order = self.order(kw);
        std::iter::from_fn(|| order.next_index()).collect()
    }

    /// Candidates with a report, healthy, not draining and with room for `kw`. One random
    /// draw per request seeds every candidate's tie-breaker (no shared state per candidate).
    fn scored(&self, kw: f64, max_utilization: f64) -> Vec<Scored> {
        let seed = self.config.rng.next_u64();
        self.states
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_healthy() && !s.is_draining())
            .filter_map(|(i, s)| {
                let u = s.utilization_with(kw)?;
                (u <= max_utilization + 1e-9).then(|| (u, Rng::mix(seed ^ i as u64), i))
            })
            .collect()
    }

    fn p2c(&self, mut eligible: Vec<Scored>) -> Order {
        if eligible.len() <= 2 {
            return Order::least_first(eligible);
        }
        let n = eligible.len();
        let a = self.config.rng.below(n);
        let b = (a + 1 + self.config.rng.below(n - 1)) % n;
        let (first, second) = if cmp(&eligible[a], &eligible[b]).is_lt() {
            (a, b)
        } else {
            (b, a)
        };
        let head = vec![eligible[first].2, eligible[second].2];
        eligible.retain(|c| c.2 != head[0] && c.2 != head[1]);
        Order {
            head,
            pos: 0,
            rest: eligible,
        }
    }

    fn round_robin(&self, eligible: &[Scored]) -> Vec<usize> {
        if self.weighted.is_empty() {
            return Vec::new();
        }
        let mut wanted = vec![false; self.states.len()];
        for c in eligible {
            wanted[c.2] = true;
        }
        let start = self.next.fetch_add(1, Relaxed);
        let len = self.weighted.len();
        let mut order = Vec::with_capacity(eligible.len());
        for step in 0..len {
            let i = self.weighted[(start + step) % len];
            if std::mem::take(&mut wanted[i]) {
                order.push(i);
            }
        }
        order
    }

    /// A weighted random order (Efraimidis and Spirakis: sort by `u^(1/w)`, largest first).
    fn weighted_random(&self, eligible: &[Scored]) -> Vec<usize> {
        let mut keyed: Vec<(f64, usize)> = eligible
            .iter()
            .map(|c| {
                let w = self.backends[c.2].weight.max(1) as f64;
                (self.config.rng.unit().powf(1.0 / w), c.2)
            })
            .collect();
        keyed.sort_by(|a, b| b.0.total_cmp(&a.0));
        keyed.into_iter().map(|(_, i)| i).collect()
    }

    pub fn state(&self, index: usize) -> &Arc<SubstationState> {
        &self.states[index]
    }
}

/// Candidates of one request, best first.
pub struct GridIter {
    selection: Arc<GridSelection>,
    order: Order,
}

impl BackendIter for GridIter {
    fn next(&mut self) -> Option<&Backend> {
        let index = self.order.next_index()?;
        self.selection.backends.get(index)
    }
}

#[cfg(test)]
mod tests;
