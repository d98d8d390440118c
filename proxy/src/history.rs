//! The last minutes of the grid, for the status page: a ring buffer of samples taken once
//! per [`INTERVAL`] by a background service ([`Sampler`]), served as `GET /history`.
//!
//! Each sample holds the time, each substation's utilisation as the proxy saw it (the same
//! figure as `/status` and `gridlb_substation_utilization`; `null` before its first report)
//! and the refusals by the proxy in the interval (the increase of
//! `gridlb_admissions_refused_total`, all reasons). The ring keeps [`SAMPLES`] samples (ten
//! minutes), dropping the oldest, so memory is bounded by the number of substations whatever
//! the uptime. A substation that joins or leaves with a reload appears from (or keeps its
//! series until) the samples it was in; the others hold `null` there.

use crate::table::Table;
use async_trait::async_trait;
use gridlb_protocol::unix_now;
use pingora_core::server::ShutdownWatch;
use pingora_core::services::background::BackgroundService;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Time between two samples.
pub const INTERVAL: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes at one a second.
pub const SAMPLES: usize = 600;

/// One sample.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unix time, seconds.
    pub time: f64,
    /// `(substation, utilisation)` in config order.
    pub utilization: Vec<(String, Option<f64>)>,
    /// Refusals by the proxy since the previous sample.
    pub refusals: u64,
}

/// The `GET /history` document: series over the samples, oldest first.
#[derive(Debug, Serialize, PartialEq)]
pub struct Document {
    pub interval_s: f64,
    pub capacity: usize,
    /// Unix time of each sample.
    pub time: Vec<f64>,
    pub refusals: Vec<u64>,
    pub substations: Vec<Series>,
}

/// One substation's utilisation at each sample (`null` where it had no report or was not in
/// the config).
#[derive(Debug, Serialize, PartialEq)]
pub struct Series {
    pub name: String,
    pub utilization: Vec<Option<f64>>,
}

/// The ring buffer.
#[derive(Debug)]
pub struct History {
    samples: Mutex<VecDeque<Sample>>,
    capacity: usize,
}

impl Default for History {
    fn default() -> Self {
        History::with_capacity(SAMPLES)
    }
}

impl History {
    pub fn with_capacity(capacity: usize) -> History {
        History {
            samples: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity: capacity.max(1),
        }
    }

    /// Add a sample, dropping the oldest when full.
    pub fn push(&self, sample: Sample) {
        let mut samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        if samples.len() == self.capacity {
            samples.pop_front();
        }
        samples.push_back(sample);
    }

    pub fn len(&self) -> usize {
        self.samples.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The samples as series; substations in the order they first appear, newest config
    /// first.
    pub fn document(&self) -> Document {
        let samples = self.samples.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&str> = Vec::new();
        for sample in samples.iter().rev() {
            for (name, _) in &sample.utilization {
                if !names.contains(&name.as_str()) {
                    names.push(name);
                }
            }
        }
        let substations = names
            .iter()
            .map(|name| Series {
                name: name.to_string(),
                utilization: samples
                    .iter()
                    .map(|s| {
                        s.utilization
                            .iter()
                            .find(|(n, _)| n == name)
                            .and_then(|(_, u)| *u)
                    })
                    .collect(),
            })
            .collect();
        Document {
            interval_s: INTERVAL.as_secs_f64(),
            capacity: self.capacity,
            time: samples.iter().map(|s| s.time).collect(),
            refusals: samples.iter().map(|s| s.refusals).collect(),
            substations,
        }
    }
}

/// The background service that samples the table every [`INTERVAL`].
pub struct Sampler {
    pub table: Arc<Table>,
    pub history: Arc<History>,
}

impl Sampler {
    /// One sample now; `refused` is the refusal count at the previous sample.
    fn sample(&self, refused: &mut u64) -> Sample {
        let snapshot = self.table.snapshot();
        let utilization = snapshot
            .gauges()
            .iter()
            .map(|g| (g.name.to_string(), g.utilization))
            .collect();
        let total = self.table.metrics().refusals();
        let refusals = total.saturating_sub(*refused);
        *refused = total;
        Sample {
            time: unix_now(),
            utilization,
            refusals,
        }
    }
}

#[async_trait]
impl BackgroundService for Sampler {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        let mut refused = self.table.metrics().refusals();
        let mut tick = tokio::time::interval(INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let sample = self.sample(&mut refused);
                    self.history.push(sample);
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(time: f64, subs: &[(&str, Option<f64>)], refusals: u64) -> Sample {
        Sample {
            time,
            utilization: subs.iter().map(|(n, u)| (n.to_string(), *u)).collect(),
            refusals,
        }
    }

    #[test]
    fn the_ring_keeps_only_the_newest_samples() {
        let history = History::with_capacity(3);
        for t in 0..10 {
            history.push(sample(t as f64, &[("s1", Some(0.5))], t));
        }
        let doc = history.document();
        assert_eq!(history.len(), 3);
        assert_eq!(doc.time, [7.0, 8.0, 9.0]);
        assert_eq!(doc.refusals, [7, 8, 9]);
        assert_eq!(doc.substations[0].utilization.len(), 3);
    }

    #[test]
    fn substations_that_come_and_go_hold_null_where_absent() {
        let history = History::with_capacity(10);
        history.push(sample(1.0, &[("s1", Some(0.1)), ("old", Some(0.9))], 0));
        history.push(sample(2.0, &[("s1", None), ("new", Some(0.3))], 2));
        let doc = history.document();
        let names: Vec<_> = doc.substations.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["s1", "new", "old"]);
        assert_eq!(doc.substations[0].utilization, [Some(0.1), None]);
        assert_eq!(doc.substations[1].utilization, [None, Some(0.3)]);
        assert_eq!(doc.substations[2].utilization, [Some(0.9), None]);
        assert_eq!(doc.refusals, [0, 2]);
    }

    #[test]
    fn an_empty_history_is_an_empty_document() {
        let doc = History::default().document();
        assert_eq!(doc.capacity, SAMPLES);
        assert!(doc.time.is_empty() && doc.substations.is_empty());
    }
}
