//! Wall-clock time as the wire and the metrics state it: seconds since the Unix epoch.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in seconds since the Unix epoch; `0.0` if the clock is set before it.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn now_is_after_2020_and_does_not_go_back() {
        let a = unix_now();
        assert!(a > 1_577_836_800.0, "{a}");
        assert!(unix_now() >= a);
    }
}
