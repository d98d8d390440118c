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
//!   the next lowest, and so on, each found when asked for (see [`Order`]). The first choice
//!   is read from an index kept current as loads change (`index.rs`: a tournament tree per
//!   capacity, O(log n) per change, O(capacities + log n) per choice); the rest, only when a
//!   retry asks for it, from one pass over the substations, never a sort.
//! - `p2c`: the "power of two random choices" (Mitzenmacher, 2001; tower's `balance::p2c`):
//!   two distinct random candidates, the less utilised first, then the other, then the rest
//!   in least-load order. It looks at two substations, not all of them, so its cost does not
//!   grow with the grid, and it herds less when reports are stale.
//! - `round-robin` and `random`: baselines that ignore load (weighted by `weight`); they only
//!   skip a substation that has no room.
//!
//! Randomness comes from [`Rng`] (the protocol crate's seedable SplitMix64), so tests are exact.

use crate::config::{Algorithm, SelectionConfig};
use crate::table::{SubstationState, Table};
use gridlb_protocol::Power;
use index::Index;
use pingora_load_balancing::Backend;
use pingora_load_balancing::selection::{BackendIter, BackendSelection};
use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use tokio::time::Instant;

/// The selection key for a request of `kw` kilowatts.
pub fn request_key(kw: f64) -> [u8; 8] {
    kw.to_le_bytes()
}

fn key_kw(key: &[u8]) -> f64 {
    key.try_into().map(f64::from_le_bytes).unwrap_or(0.0)
}

/// The selector's random source: the protocol crate's lock-free, seedable SplitMix64.
pub use gridlb_protocol::SharedRng as Rng;
use gridlb_protocol::rng::mix;

/// Where the selector reads its settings (algorithm, `max_utilization`) from.
#[derive(Clone)]
pub enum Settings {
    /// The load table's live config: one source, swapped with the rest of the config on reload.
    Live(Arc<Table>),
    /// Fixed settings (a selector built on its own, by Pingora's `build` or a test).
    Fixed(Algorithm, f64),
}

/// What the selector shares with the rest of the proxy: its settings and the random source.
#[derive(Clone)]
pub struct SelectorConfig {
    pub settings: Settings,
    pub rng: Arc<Rng>,
}

impl SelectorConfig {
    /// Settings read live from `table`.
    pub fn new(table: Arc<Table>, rng: Rng) -> SelectorConfig {
        SelectorConfig {
            settings: Settings::Live(table),
            rng: Arc::new(rng),
        }
    }

    /// The current algorithm and `max_utilization`.
    fn settings(&self) -> (Algorithm, f64) {
        match &self.settings {
            Settings::Live(table) => {
                let snapshot = table.snapshot();
                let s: &SelectionConfig = &snapshot.config.selection;
                (s.algorithm, s.max_utilization)
            }
            Settings::Fixed(algorithm, max_utilization) => (*algorithm, *max_utilization),
        }
    }
}

/// Least-load, no cap below capacity, seeded from the clock.
impl Default for SelectorConfig {
    fn default() -> Self {
        SelectorConfig {
            settings: Settings::Fixed(Algorithm::LeastLoad, 1.0),
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
    /// Least-load's first choice, kept current by the substations themselves.
    index: Arc<Index>,
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
            index: Index::new(states.clone()),
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
/// A request usually takes only the first, so the full order is never sorted: least-load's
/// first choice costs one pass over the substations, p2c's costs two looks (the rest is
/// scored only if a retry asks for it).
pub struct Order {
    head: Vec<usize>,
    pos: usize,
    rest: Rest,
}

enum Rest {
    Scored(Vec<Scored>),
    /// Not scored yet: every eligible candidate but `skip`, for a request of `kw`.
    Later {
        kw: f64,
        max_utilization: f64,
        skip: [usize; 2],
    },
}

impl Order {
    fn fixed(head: Vec<usize>) -> Order {
        Order {
            head,
            pos: 0,
            rest: Rest::Scored(Vec::new()),
        }
    }

    /// `first`, then every other eligible candidate by least utilisation, scored when asked.
    fn first_then_least(first: usize, kw: f64, max_utilization: f64) -> Order {
        Order {
            head: vec![first],
            pos: 0,
            rest: Rest::Later {
                kw,
                max_utilization,
                skip: [first, first],
            },
        }
    }

    fn least_first(rest: Vec<Scored>) -> Order {
        Order {
            head: Vec::new(),
            pos: 0,
            rest: Rest::Scored(rest),
        }
    }

    /// The next candidate of `selection` (the one this order was made by).
    pub fn next_index(&mut self, selection: &GridSelection) -> Option<usize> {
        if let Some(&i) = self.head.get(self.pos) {
            self.pos += 1;
            return Some(i);
        }
        if let Rest::Later {
            kw,
            max_utilization,
            skip,
        } = self.rest
        {
            let mut rest = selection.scored(kw, max_utilization);
            rest.retain(|c| !skip.contains(&c.2));
            self.rest = Rest::Scored(rest);
        }
        let Rest::Scored(rest) = &mut self.rest else {
            return None;
        };
        let best = (0..rest.len()).min_by(|&a, &b| cmp(&rest[a], &rest[b]))?;
        Some(rest.swap_remove(best).2)
    }
}

impl GridSelection {
    /// The candidates for a request of `kw`, in order of preference.
    pub fn order(&self, kw: f64) -> Order {
        let (algorithm, max_utilization) = self.config.settings();
        match algorithm {
            Algorithm::LeastLoad => match self.least(kw, max_utilization) {
                Some(first) => Order::first_then_least(first, kw, max_utilization),
                None => Order::least_first(self.scored(kw, max_utilization)),
            },
            Algorithm::P2c => self.p2c(kw, max_utilization),
            Algorithm::RoundRobin => {
                Order::fixed(self.round_robin(&self.scored(kw, max_utilization)))
            }
            Algorithm::Random => {
                Order::fixed(self.weighted_random(&self.scored(kw, max_utilization)))
            }
        }
    }

    /// The first choice for a request of `kw` (what one request costs, usually).
    pub fn choose(&self, kw: f64) -> Option<usize> {
        self.order(kw).next_index(self)
    }

    /// Every candidate for a request of `kw`, in order of preference.
    pub fn rank(&self, kw: f64) -> Vec<usize> {
        let mut order = self.order(kw);
        std::iter::from_fn(|| order.next_index(self)).collect()
    }

    /// Least-load's first choice from the index, confirmed against the substation's live
    /// score; `None` when the index finds no room (or the state moved on meanwhile), and the
    /// caller scores every substation instead.
    fn least(&self, kw: f64, max_utilization: f64) -> Option<usize> {
        let request = Power::from_kw(kw).ok()?;
        let now = Instant::now();
        let rng = &self.config.rng;
        let first = self
            .index
            .first(request, max_utilization, now, |n| rng.below(n))?;
        self.score(first, kw, max_utilization, now).map(|_| first)
    }

    /// Utilisation of candidate `i` after `kw`, if it is healthy, not draining, reported and
    /// has room.
    fn score(&self, i: usize, kw: f64, max_utilization: f64, now: Instant) -> Option<f64> {
        self.states[i].score(kw, max_utilization, now)
    }

    /// Every candidate with a report, healthy, not draining and with room for `kw`. One
    /// random draw per request seeds every candidate's tie-breaker (no shared state per
    /// candidate).
    fn scored(&self, kw: f64, max_utilization: f64) -> Vec<Scored> {
        let seed = self.config.rng.next_u64();
        let now = Instant::now();
        let mut out = Vec::with_capacity(self.states.len());
        for i in 0..self.states.len() {
            if let Some(u) = self.score(i, kw, max_utilization, now) {
                out.push((u, mix(seed ^ i as u64), i));
            }
        }
        out
    }

    /// Two distinct random candidates that can take the request, the less utilised first.
    /// At most eight draws: a grid where few can take it falls back to least-load's scan.
    fn p2c(&self, kw: f64, max_utilization: f64) -> Order {
        let n = self.states.len();
        let seed = self.config.rng.next_u64();
        let now = Instant::now();
        let mut picked: Vec<Scored> = Vec::with_capacity(2);
        for _ in 0..if n > 2 { 8 } else { 0 } {
            let i = self.config.rng.below(n);
            if picked.iter().any(|p| p.2 == i) {
                continue;
            }
            if let Some(u) = self.score(i, kw, max_utilization, now) {
                picked.push((u, mix(seed ^ i as u64), i));
                if picked.len() == 2 {
                    break;
                }
            }
        }
        if let [a, b] = picked[..] {
            let (first, second) = if cmp(&a, &b).is_lt() {
                (a.2, b.2)
            } else {
                (b.2, a.2)
            };
            return Order {
                head: vec![first, second],
                pos: 0,
                rest: Rest::Later {
                    kw,
                    max_utilization,
                    skip: [first, second],
                },
            };
        }
        Order::least_first(self.scored(kw, max_utilization))
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
        let index = self.order.next_index(&self.selection)?;
        self.selection.backends.get(index)
    }
}

mod index;
mod tree;

#[cfg(test)]
mod tests;
