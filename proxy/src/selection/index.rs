//! Least-load's index: the substation of lowest utilisation after a request, found without
//! scoring every substation.
//!
//! Utilisation after a request of `r` kW is `(a + r) / C`, with `a` the planned load (reported
//! load less ended sessions, plus in-flight power) and `C` the usable capacity. Which
//! substation is least utilised depends on `r` when capacities differ (a small substation
//! nearly empty can beat a large one half full for 11 kW and lose to it for 150 kW), so one
//! order by utilisation cannot serve every request. Among substations of the *same* capacity,
//! however, the order by `a` is the order by utilisation for every `r`, and the "fits" rule
//! (`a + r ≤ C · max_utilization`) holds for a prefix of it. So the index groups the chooseable
//! substations by capacity (a bucket per distinct capacity), and keeps in each bucket a
//! tournament tree ([`MinTree`]) over `a`: O(log n) to update, O(1) to read the least `a`
//! and how many share it. A choice evaluates each bucket's least `a` for the request, takes
//! the best (ties between buckets weighted by their holders), and picks one of the tied
//! holders uniformly ([`MinTree::nth_min`]): O(buckets + log n), with one bucket per kind of
//! substation on a real grid.
//!
//! It is kept current where a score changes: every substation tells the index
//! ([`Watcher::changed`]) on each accepted report, reservation and release, flag change and
//! configuration. That only marks the substation stale; the next choice reads each stale
//! substation again ([`SubstationState::planned`]) before it looks at the trees. A request
//! changes its substation three or four times (reserved, report learnt, released), so one
//! read at the next choice replaces several, and it sees the newest state.
//! Changes that time alone makes (a report ageing out, a known session ending, an ejection
//! ending) are due events in a min-heap, applied lazily: a choice first drains the events due
//! by its `now`. Each substation has at most one live event (the earliest it needs); an
//! event made obsolete stays in the heap until it pops and is skipped.
//!
//! One short mutex guards it (reads are a handful of array reads; updates a path of the tree).
//! The index is a hint, never the authority: the caller checks the chosen substation's live
//! score, and the reservation's compare-and-swap decides admission as before.

use super::tree::MinTree;
use crate::table::{Entry, SubstationState, Watcher};
use gridlb_protocol::Power;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use tokio::time::Instant;

/// The index over one selection's substations (slot `i` is `states[i]`).
pub(super) struct Index {
    states: Vec<Arc<SubstationState>>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    leaves: Vec<Leaf>,
    /// Buckets by id; an emptied bucket's id is reused.
    buckets: Vec<Bucket>,
    /// Bucket ids by capacity (`f64` bits) and the ids of non-empty buckets.
    by_capacity: HashMap<u64, usize>,
    live: Vec<usize>,
    free_ids: Vec<usize>,
    /// Slots changed since the last choice, each once (`Leaf::stale`).
    stale: Vec<usize>,
    /// Time-driven changes: `(when, slot)`, earliest first.
    due: BinaryHeap<Reverse<(Instant, usize)>>,
}

#[derive(Default, Clone, Copy)]
struct Leaf {
    /// The bucket and the place in it, while chooseable.
    place: Option<(usize, usize)>,
    /// The live event of this slot (others in the heap are obsolete).
    due: Option<Instant>,
    /// Changed since it was last read: listed in `Inner::stale`.
    stale: bool,
}

/// The substations of one capacity.
#[derive(Default)]
struct Bucket {
    capacity_kw: f64,
    tree: MinTree,
    /// Slot by place; places free for reuse.
    slots: Vec<usize>,
    free: Vec<usize>,
    members: usize,
}

impl Index {
    /// The index over `states`, registered with each of them as a watcher.
    pub(super) fn new(states: Vec<Arc<SubstationState>>) -> Arc<Index> {
        let n = states.len();
        let index = Arc::new(Index {
            states,
            inner: Mutex::new(Inner {
                leaves: vec![Leaf::default(); n],
                ..Inner::default()
            }),
        });
        let weak: Weak<Index> = Arc::downgrade(&index);
        for (slot, state) in index.states.iter().enumerate() {
            state.watch(weak.clone() as Weak<dyn Watcher>, slot);
        }
        let now = Instant::now();
        let mut inner = index.lock();
        for slot in 0..n {
            inner.refresh(slot, &index.states[slot], now);
        }
        drop(inner);
        index
    }

    /// The chooseable substation of least utilisation after `request` at `now`, among those
    /// it fits within `max_utilization`; ties broken uniformly at random (`draw(n)` is
    /// uniform below `n`). `None` when none fits.
    pub(super) fn first(
        &self,
        request: Power,
        max_utilization: f64,
        now: Instant,
        mut draw: impl FnMut(usize) -> usize,
    ) -> Option<usize> {
        let mut inner = self.lock();
        inner.refresh_stale(&self.states, now);
        inner.apply_due(&self.states, now);
        let mut best: Option<(f64, usize, u32)> = None;
        let mut tied = 0u64;
        for &id in &inner.live {
            let bucket = &inner.buckets[id];
            let Some((key, count)) = bucket.tree.min() else {
                continue;
            };
            let planned = Entry {
                load_kw: key,
                capacity_kw: bucket.capacity_kw,
                in_flight: Power::ZERO,
            };
            let Some(u) = planned.score(request, max_utilization) else {
                continue;
            };
            match best {
                Some((b, ..)) if u > b => {}
                Some((b, ..)) if u == b => {
                    // Reservoir choice among tied buckets, weighted by their holders.
                    tied += u64::from(count);
                    if (draw(usize::try_from(tied).unwrap_or(usize::MAX)) as u64) < u64::from(count)
                    {
                        best = Some((u, id, count));
                    }
                }
                _ => {
                    tied = u64::from(count);
                    best = Some((u, id, count));
                }
            }
        }
        let (_, id, count) = best?;
        let bucket = &inner.buckets[id];
        let r = if count > 1 {
            u32::try_from(draw(count as usize)).unwrap_or(0)
        } else {
            0
        };
        Some(bucket.slots[bucket.tree.nth_min(r)])
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every statement leaves the index consistent; a panic elsewhere cannot corrupt it.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Watcher for Index {
    fn changed(&self, slot: usize) {
        let mut inner = self.lock();
        if !inner.leaves[slot].stale {
            inner.leaves[slot].stale = true;
            inner.stale.push(slot);
        }
    }
}

impl Inner {
    /// Read `state` (slot `slot`) again at `now`: move it between buckets, set its key and
    /// its next due event.
    fn refresh(&mut self, slot: usize, state: &SubstationState, now: Instant) {
        let planned = state.planned(now);
        let want = planned
            .entry
            .map(|e| (e.capacity_kw, e.load_kw + e.in_flight.as_kw()));
        let place = match (self.leaves[slot].place, want) {
            (Some((id, place)), Some((capacity, _)))
                if self.buckets[id].capacity_kw.to_bits() == capacity.to_bits() =>
            {
                Some((id, place))
            }
            (old, _) => {
                if let Some((id, place)) = old {
                    self.leave(id, place);
                }
                want.map(|(capacity, _)| self.join(capacity, slot))
            }
        };
        self.leaves[slot].place = place;
        if let (Some((id, place)), Some((_, key))) = (place, want) {
            self.buckets[id].tree.set(place, Some(key));
        }
        if let Some(at) = planned.next_change
            && self.leaves[slot].due.is_none_or(|d| at < d)
        {
            self.leaves[slot].due = Some(at);
            self.due.push(Reverse((at, slot)));
            if self.due.len() > 4 * self.leaves.len() + 64 {
                self.compact_due();
            }
        }
    }

    /// Read every substation changed since the last choice again, at `now`.
    fn refresh_stale(&mut self, states: &[Arc<SubstationState>], now: Instant) {
        while let Some(slot) = self.stale.pop() {
            self.leaves[slot].stale = false;
            self.refresh(slot, &states[slot], now);
        }
    }

    /// Apply every time-driven change due by `now`.
    fn apply_due(&mut self, states: &[Arc<SubstationState>], now: Instant) {
        while let Some(&Reverse((at, slot))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.leaves[slot].due == Some(at) {
                self.leaves[slot].due = None;
                self.refresh(slot, &states[slot], now);
            }
        }
    }

    /// Drop the obsolete events (each slot keeps its live one).
    fn compact_due(&mut self) {
        self.due = self
            .leaves
            .iter()
            .enumerate()
            .filter_map(|(slot, leaf)| leaf.due.map(|at| Reverse((at, slot))))
            .collect();
    }

    /// Put `slot` in the bucket of `capacity` (made if new); returns the bucket and place.
    fn join(&mut self, capacity: f64, slot: usize) -> (usize, usize) {
        let id = match self.by_capacity.get(&capacity.to_bits()) {
            Some(&id) => id,
            None => {
                let id = self.free_ids.pop().unwrap_or_else(|| {
                    self.buckets.push(Bucket::default());
                    self.buckets.len() - 1
                });
                self.buckets[id] = Bucket {
                    capacity_kw: capacity,
                    ..Bucket::default()
                };
                self.by_capacity.insert(capacity.to_bits(), id);
                self.live.push(id);
                id
            }
        };
        let bucket = &mut self.buckets[id];
        bucket.members += 1;
        let place = match bucket.free.pop() {
            Some(place) => {
                bucket.slots[place] = slot;
                place
            }
            None => {
                bucket.slots.push(slot);
                bucket.slots.len() - 1
            }
        };
        (id, place)
    }

    /// Take `place` out of bucket `id`; an emptied bucket is dropped.
    fn leave(&mut self, id: usize, place: usize) {
        let bucket = &mut self.buckets[id];
        bucket.tree.set(place, None);
        bucket.free.push(place);
        bucket.members -= 1;
        if bucket.members == 0 {
            self.by_capacity.remove(&bucket.capacity_kw.to_bits());
            self.live.retain(|&b| b != id);
            self.free_ids.push(id);
        }
    }
}
