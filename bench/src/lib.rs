//! gridlb's benchmarks: the EV charging demand generator (`ev-demand`) and the small tools
//! the benchmark scripts in `bench/` use around it.
//!
//! - [`demand`]: the demand model (Poisson arrivals shaped by a profile, a mix of charger
//!   powers and session durations), reproducible from a seed;
//! - [`client`]: a small HTTP/1.1 client with a keep-alive pool, on tokio alone;
//! - [`limit`]: the omniscient least-load placement of a demand (the limit row of the tables);
//! - [`run`]: sending a plan to a URL with bounded concurrency;
//! - [`stats`]: counters, per-request records and the end-of-run summary;
//! - [`progress`]: the live progress line;
//! - [`sampler`]: sampling substations' `GET /load` (the spread benchmark's ground truth);
//! - binaries: `ev-demand`, `load-sampler`, `grid-limit` (the limit, simulated), and
//!   `grid-agent` (feeds HAProxy's `agent-check`
//!   with each substation's headroom, so HAProxy is compared at its best).

pub mod client;
pub mod demand;
pub mod limit;
pub mod progress;
pub mod run;
pub mod sampler;
pub mod stats;

use std::time::Duration;

/// Parse a duration: `30s`, `2m`, `500ms`, `1h`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => text.split_at(i),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 2m, 500ms)"))?;
    let seconds = match unit {
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("{text:?}: unknown unit {other:?} (ms, s, m or h)")),
    };
    if !seconds.is_finite() || seconds <= 0.0 {
        return Err(format!("{text:?} must be a positive duration"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_the_usual_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("3 weeks").is_err());
    }
}
