//! Idempotency-Key affinity: a retried request goes to the substation that has its key.
//!
//! Substations honour `Idempotency-Key` (a repeated key books nothing twice), but only their
//! own keys. If a client times out and retries, least-load may well pick another substation,
//! which would book the session a second time. So the proxy remembers, for a while, which
//! substation it sent each key to, and sends a request with a known key there first. If that
//! substation refuses or is gone, the usual candidates follow (then the first attempt booked
//! nothing, so nothing is booked twice).
//!
//! Bounded: at most `capacity` keys, each kept for `ttl`; when full, expired keys go first,
//! then the oldest. Only on requests that carry a key, so the cost is a map lookup there.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub struct Affinity {
    routes: Mutex<HashMap<String, (String, Instant)>>,
    capacity: usize,
    ttl: Duration,
}

impl Affinity {
    /// Keys are kept for `ttl` (a client's retry window), at most `capacity` of them.
    pub fn new(capacity: usize, ttl: Duration) -> Affinity {
        Affinity {
            routes: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            ttl,
        }
    }

    /// The substation a key was sent to, if it was and not too long ago.
    pub fn get(&self, key: &str) -> Option<String> {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes
            .get(key)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(name, _)| name.clone())
    }

    pub fn remember(&self, key: &str, substation: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.len() >= self.capacity && !routes.contains_key(key) {
            let ttl = self.ttl;
            routes.retain(|_, (_, at)| at.elapsed() < ttl);
            if routes.len() >= self.capacity {
                if let Some(oldest) = routes.iter().min_by_key(|(_, (_, at))| *at).map(|(k, _)| k.clone()) {
                    routes.remove(&oldest);
                }
            }
        }
        routes.insert(key.to_string(), (substation.to_string(), Instant::now()));
    }

    pub fn len(&self) -> usize {
        self.routes.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A valid key: 1 to 255 visible ASCII characters (as the substations require).
pub fn valid_key(key: &str) -> bool {
    (1..=255).contains(&key.len()) && key.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_key_routes_back_until_it_expires() {
        let a = Affinity::new(10, Duration::from_millis(50));
        a.remember("k", "s2");
        assert_eq!(a.get("k").as_deref(), Some("s2"));
        assert_eq!(a.get("other"), None);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(a.get("k"), None);
    }

    #[test]
    fn a_full_table_drops_the_oldest_key() {
        let a = Affinity::new(2, Duration::from_secs(60));
        a.remember("a", "s1");
        std::thread::sleep(Duration::from_millis(2));
        a.remember("b", "s1");
        a.remember("c", "s1");
        assert_eq!(a.len(), 2);
        assert_eq!(a.get("a"), None);
        assert!(a.get("c").is_some());
    }

    #[test]
    fn keys_must_be_short_visible_ascii() {
        assert!(valid_key("abc-123"));
        assert!(!valid_key(""));
        assert!(!valid_key("has space"));
        assert!(!valid_key(&"x".repeat(256)));
    }
}
