//! Idempotency-Key affinity: a retried request goes to the substation that has its key.
//!
//! Substations honour `Idempotency-Key` (a repeated key books nothing twice), but only their
//! own keys. If a client times out and retries, least-load may well pick another substation,
//! which would book the session a second time. So the proxy remembers, for a while, which
//! substation it sent each key to, and sends a request with a known key there first. If that
//! substation refuses or is gone, the usual candidates follow (then the first attempt booked
//! nothing, so nothing is booked twice).
//!
//! Bounded: at most `capacity` keys, each kept for `ttl`, the oldest dropped first when full.
//! Keys are queued in the order they were remembered, so expiry and eviction take amortised
//! constant time: a client sending many distinct keys cannot make the table slow. Only
//! requests that carry a key touch it. Time is tokio's clock (tests pause it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;
use tokio::time::Instant;

pub struct Affinity {
    table: Mutex<Table>,
    capacity: usize,
    ttl: Duration,
}

#[derive(Default)]
struct Table {
    routes: HashMap<String, (String, Instant)>,
    /// Keys in the order they were remembered; an entry whose time no longer matches the
    /// map's (the key was remembered again since) is skipped.
    order: VecDeque<(String, Instant)>,
}

impl Table {
    /// Drop the front of the queue while it is expired or the table is over `capacity`.
    fn trim(&mut self, capacity: usize, ttl: Duration) {
        while let Some((key, at)) = self.order.front() {
            let current = self.routes.get(key).map(|(_, t)| *t) == Some(*at);
            if current && at.elapsed() < ttl && self.routes.len() < capacity {
                break;
            }
            if current {
                self.routes.remove(key);
            }
            self.order.pop_front();
        }
    }
}

impl Affinity {
    /// Keys are kept for `ttl` (a client's retry window), at most `capacity` of them.
    pub fn new(capacity: usize, ttl: Duration) -> Affinity {
        Affinity {
            table: Mutex::new(Table::default()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The substation a key was sent to, if it was and not too long ago.
    pub fn get(&self, key: &str) -> Option<String> {
        let table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        table
            .routes
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(name, _)| name.clone())
    }

    /// Remember where `key` went. A key already going to the same substation keeps its
    /// place (and its time), so one key repeated for ever cannot grow the queue.
    pub fn remember(&self, key: &str, substation: &str) {
        let mut table = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if table
            .routes
            .get(key)
            .is_some_and(|(name, at)| name == substation && at.elapsed() < self.ttl)
        {
            return;
        }
        let now = Instant::now();
        table.routes.remove(key);
        table.trim(self.capacity, self.ttl);
        if table.order.len() > 2 * self.capacity {
            // Mostly superseded entries: rebuild the queue from the map, oldest first.
            let mut order: Vec<(String, Instant)> = table
                .routes
                .iter()
                .map(|(k, (_, at))| (k.clone(), *at))
                .collect();
            order.sort_by_key(|(_, at)| *at);
            table.order = order.into();
        }
        table
            .routes
            .insert(key.to_string(), (substation.to_string(), now));
        table.order.push_back((key.to_string(), now));
    }

    pub fn len(&self) -> usize {
        self.table
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .routes
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn remembered_key_routes_back_until_it_expires() {
        let a = Affinity::new(10, Duration::from_millis(50));
        a.remember("k", "s2");
        assert_eq!(a.get("k").as_deref(), Some("s2"));
        assert_eq!(a.get("other"), None);
        tokio::time::advance(Duration::from_millis(49)).await;
        assert_eq!(a.get("k").as_deref(), Some("s2"), "not yet expired");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(a.get("k"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_table_drops_the_oldest_key() {
        let a = Affinity::new(2, Duration::from_secs(60));
        a.remember("a", "s1");
        tokio::time::advance(Duration::from_millis(2)).await;
        a.remember("b", "s1");
        a.remember("c", "s1");
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("a"), None);
        assert!(a.get("c").is_some());
    }

    #[test]
    fn a_key_remembered_again_moves_to_the_back_of_the_queue() {
        let a = Affinity::new(2, Duration::from_secs(60));
        a.remember("a", "s1");
        a.remember("b", "s1");
        a.remember("a", "s2");
        a.remember("c", "s1");
        assert_eq!(a.get("a").as_deref(), Some("s2"));
        assert_eq!(a.get("b"), None, "b was the oldest");
        assert_eq!(a.len(), 2);
    }
}
