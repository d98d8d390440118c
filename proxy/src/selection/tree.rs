//! A tournament tree (a segment tree of minima) over numbered places: each place holds a key
//! or nothing; the root holds the least key and how many places hold it. Setting a place costs
//! O(log n), reading the minimum O(1), and finding the r-th place that holds the minimum
//! (a uniform choice among ties, given a uniform r) O(log n).
//!
//! Keys are finite; an empty place counts as `+∞` with no holders. The tree doubles when a
//! place beyond its width is set.

/// The least key below a node, and how many places hold it.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Min {
    key: f64,
    count: u32,
}

const EMPTY: Min = Min {
    key: f64::INFINITY,
    count: 0,
};

fn combine(a: Min, b: Min) -> Min {
    if a.key < b.key || b.count == 0 {
        a
    } else if b.key < a.key || a.count == 0 {
        b
    } else {
        Min {
            key: a.key,
            count: a.count + b.count,
        }
    }
}

#[derive(Debug)]
pub(super) struct MinTree {
    /// `width` leaves (a power of two) after `width` inner nodes; node 1 is the root.
    nodes: Vec<Min>,
    width: usize,
}

impl Default for MinTree {
    fn default() -> Self {
        MinTree {
            nodes: vec![EMPTY; 2],
            width: 1,
        }
    }
}

impl MinTree {
    /// Put `key` at `place` (`None`: empty it).
    pub(super) fn set(&mut self, place: usize, key: Option<f64>) {
        while place >= self.width {
            self.grow();
        }
        let mut node = self.width + place;
        self.nodes[node] = key.map_or(EMPTY, |key| Min { key, count: 1 });
        while node > 1 {
            node /= 2;
            self.nodes[node] = combine(self.nodes[2 * node], self.nodes[2 * node + 1]);
        }
    }

    /// The least key and how many places hold it; `None` when every place is empty.
    pub(super) fn min(&self) -> Option<(f64, u32)> {
        let root = self.nodes[1];
        (root.count > 0).then_some((root.key, root.count))
    }

    /// The `r`-th place (from 0, in place order) that holds the least key; `r` below its count.
    pub(super) fn nth_min(&self, mut r: u32) -> usize {
        let key = self.nodes[1].key;
        let mut node = 1;
        while node < self.width {
            let left = self.nodes[2 * node];
            if left.count > 0 && left.key == key && r < left.count {
                node *= 2;
            } else {
                if left.count > 0 && left.key == key {
                    r -= left.count;
                }
                node = 2 * node + 1;
            }
        }
        node - self.width
    }

    fn grow(&mut self) {
        let width = self.width * 2;
        let mut nodes = vec![EMPTY; 2 * width];
        nodes[width..width + self.width].copy_from_slice(&self.nodes[self.width..]);
        for node in (1..width).rev() {
            nodes[node] = combine(nodes[2 * node], nodes[2 * node + 1]);
        }
        self.nodes = nodes;
        self.width = width;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn the_root_and_the_rth_minimum_agree_with_a_scan(
            sets in proptest::collection::vec((0usize..40, proptest::option::of(0u8..6)), 1..120),
        ) {
            let mut tree = MinTree::default();
            let mut plain: Vec<Option<f64>> = vec![None; 40];
            for (place, key) in sets {
                let key = key.map(f64::from);
                tree.set(place, key);
                plain[place] = key;
                let least = plain.iter().flatten().copied().fold(f64::INFINITY, f64::min);
                let holders: Vec<usize> =
                    (0..40).filter(|&p| plain[p] == Some(least)).collect();
                match tree.min() {
                    None => prop_assert!(holders.is_empty()),
                    Some((key, count)) => {
                        prop_assert_eq!(key, least);
                        prop_assert_eq!(count as usize, holders.len());
                        for (r, &p) in holders.iter().enumerate() {
                            prop_assert_eq!(tree.nth_min(r as u32), p);
                        }
                    }
                }
            }
        }
    }
}
