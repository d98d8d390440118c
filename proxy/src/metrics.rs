//! Every Prometheus family gridlb exports, registered once, in one place.
//!
//! Names follow the design: prefix `gridlb_`, base units (`_seconds`, `_kw`), counters end in
//! `_total`. Per-substation gauges (load, capacity, utilisation, in-flight power, health) are
//! computed from the load table at scrape time ([`Metrics::refresh`]), so they can never
//! disagree with `/status`; counters are recorded where things happen (the proxy's logging
//! phase, the probe, reloads). When a substation leaves the config, [`Metrics::forget`]
//! removes all of its series.
//!
//! In the binary the families live in Prometheus' default registry, the one Pingora's own
//! metrics use (both on `prometheus` 0.14), so one `/metrics` page shows both.

use crate::grid::Grid;
use prometheus::{
    Gauge, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, core::Collector,
};
use std::collections::HashMap;
use std::time::Duration;

/// Request duration buckets, 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    load: GaugeVec,
    capacity: GaugeVec,
    utilization: GaugeVec,
    in_flight: GaugeVec,
    healthy: GaugeVec,
    draining: GaugeVec,
    probe_duration: HistogramVec,
    probe_failures: IntCounterVec,
    reports_stale: IntCounterVec,
    reports_rejected: IntCounterVec,
    admissions_refused: IntCounterVec,
    substation_refusals: IntCounterVec,
    retries: IntCounterVec,
    reloads: IntCounterVec,
    last_reload: Gauge,
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
        };
        for c in m.collectors() {
            registry.register(c)?;
        }
        m.last_reload.set(unix_now());
        Ok(m)
    }

    fn collectors(&self) -> Vec<Box<dyn Collector>> {
        vec![
            Box::new(self.requests.clone()),
            Box::new(self.request_duration.clone()),
            Box::new(self.load.clone()),
            Box::new(self.capacity.clone()),
            Box::new(self.utilization.clone()),
            Box::new(self.in_flight.clone()),
            Box::new(self.healthy.clone()),
            Box::new(self.draining.clone()),
            Box::new(self.probe_duration.clone()),
            Box::new(self.probe_failures.clone()),
            Box::new(self.reports_stale.clone()),
            Box::new(self.reports_rejected.clone()),
            Box::new(self.admissions_refused.clone()),
            Box::new(self.substation_refusals.clone()),
            Box::new(self.retries.clone()),
            Box::new(self.reloads.clone()),
            Box::new(self.last_reload.clone()),
        ]
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

    pub fn admission_refused(&self, reason: &str) {
        self.admissions_refused.with_label_values(&[reason]).inc();
    }

    pub fn substation_refused(&self, substation: &str) {
        self.substation_refusals
            .with_label_values(&[substation])
            .inc();
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
    }

    /// Set the per-substation gauges from the load table. Called before every scrape.
    pub fn refresh(&self, grid: &Grid) {
        let gauges = [
            &self.load,
            &self.capacity,
            &self.utilization,
            &self.in_flight,
            &self.healthy,
            &self.draining,
        ];
        for g in gauges {
            g.reset();
        }
        let snapshot = grid.snapshot();
        for sub in &snapshot.substations {
            let name = [sub.config.name.as_str()];
            let state = &sub.state;
            if let Some(report) = state.report() {
                self.load.with_label_values(&name).set(report.load_kw);
                self.capacity
                    .with_label_values(&name)
                    .set(report.capacity_kw);
                self.utilization
                    .with_label_values(&name)
                    .set(state.utilization_with(0.0).unwrap_or(0.0));
            }
            self.in_flight
                .with_label_values(&name)
                .set(state.in_flight_kw());
            self.healthy
                .with_label_values(&name)
                .set(if state.is_healthy() { 1.0 } else { 0.0 });
            self.draining
                .with_label_values(&name)
                .set(if state.is_draining() { 1.0 } else { 0.0 });
        }
    }

    /// Remove every series of a substation that left the config.
    pub fn forget(&self, substation: &str) {
        let families: [&dyn Forget; 6] = [
            &self.requests,
            &self.probe_failures,
            &self.reports_stale,
            &self.reports_rejected,
            &self.substation_refusals,
            &self.probe_duration,
        ];
        for family in families {
            family.forget(substation);
        }
    }

    /// The text exposition of the registry, refreshed from `grid`.
    pub fn render(&self, grid: &Grid) -> String {
        self.refresh(grid);
        let mut out = String::new();
        let encoder = prometheus::TextEncoder::new();
        if let Err(e) = encoder.encode_utf8(&self.registry.gather(), &mut out) {
            log::error!("cannot encode metrics: {e}");
        }
        out
    }
}

/// Removal of every series whose `substation` label matches, in a family of any labels.
trait Forget {
    fn forget(&self, substation: &str);
}

impl<T: prometheus::core::MetricVecBuilder> Forget for prometheus::core::MetricVec<T> {
    fn forget(&self, substation: &str) {
        for family in self.collect() {
            for metric in family.get_metric() {
                let labels: HashMap<&str, &str> = metric
                    .get_label()
                    .iter()
                    .map(|l| (l.name(), l.value()))
                    .collect();
                if labels.get("substation") == Some(&substation) {
                    let _ = self.remove(&labels);
                }
            }
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
