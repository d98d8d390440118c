//! Every Prometheus family gridlb exports, registered once, in one place.
//!
//! Names follow the design: prefix `gridlb_`, base units (`_seconds`, `_kw`), counters end in
//! `_total`. Per-substation gauges (load, capacity, utilisation, in-flight power, health) are
//! computed from the load table at scrape time ([`Metrics::refresh`]), so they can never
//! disagree with `/status`; counters are recorded where things happen (the proxy's logging
//! phase, the probe, reloads).
//!
//! Every series whose label values are known in advance exists from the start with the value
//! 0 (the refusal and retry reasons, reload results, and per configured substation the probe
//! failure reasons, report sources and rejection reasons), so `rate()` and alerts have data
//! before the first event. When a substation leaves the config all of its series go:
//! [`Metrics::forget`] at the reload, and every scrape prunes whatever a request still in
//! flight recorded for it afterwards.
//!
//! In the binary the families live in Prometheus' default registry, the one Pingora's own
//! metrics use (both on `prometheus` 0.14), so one `/metrics` page shows both.

use gridlb_protocol::unix_now;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};
use std::collections::HashSet;
use std::time::Duration;

/// Request duration buckets, 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// `reason` of `gridlb_probe_failures_total`.
pub const PROBE_FAILURE_REASONS: [&str; 4] = ["connect", "timeout", "status", "invalid_report"];
/// `source` of `gridlb_reports_stale_total` and `gridlb_reports_rejected_total`.
pub const REPORT_SOURCES: [&str; 2] = ["probe", "header"];
/// `reason` of `gridlb_reports_rejected_total` (`ReportError::reason`).
pub const REPORT_REJECT_REASONS: [&str; 5] = [
    "malformed",
    "too_large",
    "bad_load",
    "bad_capacity",
    "wrong_substation",
];
/// `reason` of `gridlb_admissions_refused_total`: no healthy substation had room, every
/// candidate refused, or too many requests were in progress (`limits`).
pub const REFUSAL_REASONS: [&str; 3] = ["grid_full", "all_refused", "busy"];
/// `result` of `gridlb_orphans_total`.
pub const ORPHAN_RESULTS: [&str; 3] = ["cancelled", "not_booked", "unresolved"];
/// `reason` of `gridlb_retries_total`.
pub const RETRY_REASONS: [&str; 3] = ["connect", "refused", "stale_connection"];
/// The `substation` label of answers the proxy gave itself.
pub const NO_SUBSTATION: &str = "none";

/// One substation's gauges at scrape time, as the load table computes them.
#[derive(Debug, Clone, PartialEq)]
pub struct SubstationGauges<'a> {
    pub name: &'a str,
    /// From the newest report; `None` before the first.
    pub load_kw: Option<f64>,
    pub capacity_kw: Option<f64>,
    pub utilization: Option<f64>,
    pub report_age_s: Option<f64>,
    pub in_flight_kw: f64,
    pub healthy: bool,
    pub draining: bool,
}

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    load: GaugeVec,
    capacity: GaugeVec,
    utilization: GaugeVec,
    in_flight: GaugeVec,
    report_age: GaugeVec,
    healthy: GaugeVec,
    draining: GaugeVec,
    probe_duration: HistogramVec,
    probe_failures: IntCounterVec,
    reports_stale: IntCounterVec,
    reports_rejected: IntCounterVec,
    report_resets: IntCounterVec,
    orphans: IntCounterVec,
    ejections: IntCounterVec,
    admissions_refused: IntCounterVec,
    substation_refusals: IntCounterVec,
    retries: IntCounterVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
    last_reload_ok: Gauge,
    access_log_dropped: IntCounter,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("metric options are static and valid")
}

fn gauge(name: &str, help: &str) -> GaugeVec {
    GaugeVec::new(Opts::new(name, help), &["substation"])
        .expect("metric options are static and valid")
}

fn histogram(name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    HistogramVec::new(
        HistogramOpts::new(name, help).buckets(LATENCY_BUCKETS.to_vec()),
        labels,
    )
    .expect("metric options are static and valid")
}

impl Metrics {
    /// Create every family and register it in `registry`.
    pub fn new(registry: &Registry) -> prometheus::Result<Metrics> {
        let m = Metrics {
            registry: registry.clone(),
            requests: counter(
                "gridlb_requests_total",
                "Requests answered, by substation (\"none\" when the proxy answered itself) and status.",
                &["substation", "status"],
            ),
            request_duration: histogram(
                "gridlb_request_duration_seconds",
                "Time from request to the end of the answer, by route.",
                &["route"],
            ),
            load: gauge(
                "gridlb_substation_load_kw",
                "Load in the newest report, kW.",
            ),
            capacity: gauge(
                "gridlb_substation_capacity_kw",
                "Capacity in the newest report, kW.",
            ),
            utilization: gauge(
                "gridlb_substation_utilization",
                "(Reported load + in-flight power) / capacity, as the proxy sees it.",
            ),
            in_flight: gauge(
                "gridlb_substation_in_flight_kw",
                "Power of requests sent and not yet answered, kW.",
            ),
            report_age: gauge(
                "gridlb_substation_report_age_seconds",
                "Time since the newest report arrived (absent before the first one).",
            ),
            healthy: gauge(
                "gridlb_substation_healthy",
                "1 when the substation passes its probes and may be chosen.",
            ),
            draining: gauge(
                "gridlb_substation_draining",
                "1 when the substation is draining (takes no new sessions).",
            ),
            probe_duration: histogram(
                "gridlb_probe_duration_seconds",
                "Duration of load probes.",
                &["substation"],
            ),
            probe_failures: counter(
                "gridlb_probe_failures_total",
                "Load probes that failed, by reason.",
                &["substation", "reason"],
            ),
            reports_stale: counter(
                "gridlb_reports_stale_total",
                "Load reports dropped because a newer one was already held, by source (probe or header).",
                &["substation", "source"],
            ),
            reports_rejected: counter(
                "gridlb_reports_rejected_total",
                "Load reports rejected as invalid, by source and reason.",
                &["substation", "source", "reason"],
            ),
            report_resets: counter(
                "gridlb_report_resets_total",
                "Held reports replaced because probes contradicted them (a poisoned or restarted epoch).",
                &["substation"],
            ),
            orphans: counter(
                "gridlb_orphans_total",
                "Bookings whose answer was lost, by how they were settled (cancelled, not_booked, unresolved).",
                &["result"],
            ),
            ejections: counter(
                "gridlb_ejections_total",
                "Times a substation was taken out of the choice as an outlier, by reason.",
                &["substation", "reason"],
            ),
            admissions_refused: counter(
                "gridlb_admissions_refused_total",
                "Charge requests the proxy refused itself, by reason.",
                &["reason"],
            ),
            substation_refusals: counter(
                "gridlb_substation_refusals_total",
                "Charge requests a substation refused for lack of capacity.",
                &["substation"],
            ),
            retries: counter(
                "gridlb_retries_total",
                "Requests tried again on another substation, by reason.",
                &["reason"],
            ),
            reloads: counter(
                "gridlb_config_reloads_total",
                "Config reloads, by result.",
                &["result"],
            ),
            last_reload: Gauge::new(
                "gridlb_config_last_reload_success_timestamp_seconds",
                "Unix time of the last successful config load.",
            )
            .expect("metric options are static and valid"),
            last_reload_ok: Gauge::new(
                "gridlb_config_last_reload_successful",
                "1 when the last config load or reload succeeded, 0 when it failed.",
            )
            .expect("metric options are static and valid"),
            access_log_dropped: IntCounter::new(
                "gridlb_access_log_dropped_total",
                "Access log lines dropped because the writer fell behind (its queue was full).",
            )
            .expect("metric options are static and valid"),
        };
        for c in m.collectors() {
            registry.register(c)?;
        }
        for reason in REFUSAL_REASONS {
            m.admissions_refused.with_label_values(&[reason]);
        }
        for result in ORPHAN_RESULTS {
            m.orphans.with_label_values(&[result]);
        }
        for reason in RETRY_REASONS {
            m.retries.with_label_values(&[reason]);
        }
        for result in ["success", "failure"] {
            m.reloads.with_label_values(&[result]);
        }
        // The config the process started with is the first good load.
        m.last_reload.set(unix_now());
        m.last_reload_ok.set(1.0);
        Ok(m)
    }

    pub fn request(&self, substation: &str, status: u16, route: &str, elapsed: Duration) {
        self.requests
            .with_label_values(&[substation, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(elapsed.as_secs_f64());
    }

    pub fn probe_duration(&self, substation: &str, elapsed: Duration) {
        self.probe_duration
            .with_label_values(&[substation])
            .observe(elapsed.as_secs_f64());
    }

    pub fn probe_failed(&self, substation: &str, reason: &str) {
        self.probe_failures
            .with_label_values(&[substation, reason])
            .inc();
    }

    pub fn report_stale(&self, substation: &str, source: &str) {
        self.reports_stale
            .with_label_values(&[substation, source])
            .inc();
    }

    pub fn report_rejected(&self, substation: &str, source: &str, reason: &str) {
        self.reports_rejected
            .with_label_values(&[substation, source, reason])
            .inc();
    }

    pub fn report_reset(&self, substation: &str) {
        self.report_resets.with_label_values(&[substation]).inc();
    }

    pub fn ejection(&self, substation: &str, reason: &str) {
        self.ejections
            .with_label_values(&[substation, reason])
            .inc();
    }

    pub fn orphan(&self, result: &str) {
        self.orphans.with_label_values(&[result]).inc();
    }

    pub fn admission_refused(&self, reason: &str) {
        self.admissions_refused.with_label_values(&[reason]).inc();
    }

    pub fn substation_refused(&self, substation: &str) {
        self.substation_refusals
            .with_label_values(&[substation])
            .inc();
    }

    pub fn access_log_dropped(&self) {
        self.access_log_dropped.inc();
    }

    /// Charge requests the proxy refused so far, all reasons together (the status page's
    /// history counts them per interval).
    pub fn refusals(&self) -> u64 {
        REFUSAL_REASONS
            .iter()
            .map(|r| self.admissions_refused.with_label_values(&[r]).get())
            .sum()
    }

    pub fn retry(&self, reason: &str) {
        self.retries.with_label_values(&[reason]).inc();
    }

    pub fn reload(&self, success: bool) {
        self.reloads
            .with_label_values(&[if success { "success" } else { "failure" }])
            .inc();
        if success {
            self.last_reload.set(unix_now());
        }
        self.last_reload_ok.set(if success { 1.0 } else { 0.0 });
    }

    /// Set the per-substation gauges from the load table, give every configured substation
    /// its zero-valued counters, and drop the series of substations no longer configured.
    /// Called before every scrape.
    pub fn refresh(&self, substations: &[SubstationGauges]) {
        let gauges = [
            &self.load,
            &self.capacity,
            &self.utilization,
            &self.in_flight,
            &self.report_age,
            &self.healthy,
            &self.draining,
        ];
        for g in gauges {
            g.reset();
        }
        let mut configured = HashSet::new();
        for sub in substations {
            let name = [sub.name];
            configured.insert(sub.name);
            self.touch(sub.name);
            let known = [
                (&self.load, sub.load_kw),
                (&self.capacity, sub.capacity_kw),
                (&self.utilization, sub.utilization),
                (&self.report_age, sub.report_age_s),
            ];
            for (gauge, value) in known {
                if let Some(v) = value {
                    gauge.with_label_values(&name).set(v);
                }
            }
            self.in_flight
                .with_label_values(&name)
                .set(sub.in_flight_kw);
            self.healthy
                .with_label_values(&name)
                .set(if sub.healthy { 1.0 } else { 0.0 });
            self.draining
                .with_label_values(&name)
                .set(if sub.draining { 1.0 } else { 0.0 });
        }
        for family in self.per_substation() {
            family.retain(&|s| s == NO_SUBSTATION || configured.contains(s));
        }
    }

    /// The text exposition of the registry, refreshed from the load table's `substations`.
    pub fn render(&self, substations: &[SubstationGauges]) -> String {
        self.refresh(substations);
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

mod series;
#[cfg(test)]
mod tests;
