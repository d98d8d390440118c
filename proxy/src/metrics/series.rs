//! The per-substation series that are not recomputed at every scrape: created with the value
//! 0 for every configured substation, and removed when it leaves the config.

use super::{Metrics, PROBE_FAILURE_REASONS, REPORT_REJECT_REASONS, REPORT_SOURCES};
use prometheus::core::Collector;
use std::collections::HashMap;

impl Metrics {
    /// Every family, for registration.
    pub(super) fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.load.clone()),
            Box::new(self.capacity.clone()),
            Box::new(self.utilization.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.report_age.clone()),
            Box::new(self.healthy.clone()),
            Box::new(self.draining.clone()),
            Box::new(self.probe_duration.clone()),
            Box::new(self.probe_failures.clone()),
            Box::new(self.reports_stale.clone()),
            Box::new(self.reports_rejected.clone()),
            Box::new(self.report_resets.clone()),
            Box::new(self.orphans.clone()),
            Box::new(self.ejections.clone()),
            Box::new(self.admissions_refused.clone()),
            Box::new(self.substation_refusals.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.last_reload.clone()),
            Box::new(self.last_reload_ok.clone()),
            Box::new(self.access_log_dropped.clone()),
        ]
    }

    /// Create the zero-valued counters of a configured substation.
    pub(super) fn touch(&self, substation: &str) {
        for reason in PROBE_FAILURE_REASONS {
            self.probe_failures.with_label_values(&[substation, reason]);
        }
        for source in REPORT_SOURCES {
            self.reports_stale.with_label_values(&[substation, source]);
            for reason in REPORT_REJECT_REASONS {
                self.reports_rejected
                    .with_label_values(&[substation, source, reason]);
            }
        }
        self.substation_refusals.with_label_values(&[substation]);
        self.report_resets.with_label_values(&[substation]);
        for reason in ["refused_with_room", "slow"] {
            self.ejections.with_label_values(&[substation, reason]);
        }
    }

    /// The families with a `substation` label that are not recomputed at every scrape.
    pub(super) fn per_substation(&self) -> [&dyn Retain; 8] {
        [
            &self.ejections,
            &self.report_resets,
            &self.requests,
            &self.probe_failures,
            &self.reports_stale,
            &self.reports_rejected,
            &self.substation_refusals,
            &self.probe_duration,
        ]
    }

    /// Remove every series of a substation that left the config.
    pub fn forget(&self, substation: &str) {
        for family in self.per_substation() {
            family.retain(&|s| s != substation);
        }
    }
}

/// Removal of the series whose `substation` label fails a test, in a family of any labels.
pub(super) trait Retain {
    fn retain(&self, keep: &dyn Fn(&str) -> bool);
}

impl<T: prometheus::core::MetricVecBuilder> Retain for prometheus::core::MetricVec<T> {
    fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        for family in self.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if labels.get("substation").is_some_and(|s| !keep(s)) {
                    let _ = self.remove(&labels);
                }
            }
        }
    }
}
