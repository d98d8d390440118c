//! Every Prometheus metric of one substation, registered once in a registry of its own.
//!
//! Several substations share one process in the demo and in tests, so each [`Metrics`] owns a
//! fresh `prometheus::Registry` rather than the default one. Names follow the design: prefix
//! `substation_`, base units, counters end in `_total`. Gauges that describe the load are set
//! by [`crate::grid`] under its lock right after each change, so a scrape never sees a load
//! that disagrees with its `substation_report_seq`.

use prometheus::{
    Counter, Encoder, Gauge, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry,
    TextEncoder,
};

/// Outcomes of `POST /charge`, the `result` label of `substation_sessions_total`.
pub const RESULTS: [&str; 5] = [
    "accepted",
    "refused",
    "invalid",
    "idempotent_replay",
    "key_reused",
];
/// Why a session ended, the `reason` label of `substation_sessions_ended_total`.
pub const END_REASONS: [&str; 2] = ["expired", "deleted"];

/// The metric families of one substation.
pub struct Metrics {
    registry: Registry,
    pub load_kw: Gauge,
    pub capacity_kw: Gauge,
    pub utilization: Gauge,
    pub active_sessions: IntGauge,
    pub report_seq: IntGauge,
    pub epoch: Gauge,
    pub sessions: IntCounterVec,
    pub sessions_ended: IntCounterVec,
    pub energy_delivered_kwh: Counter,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
}

impl Metrics {
    /// Register every family in a new registry and set the constant ones.
    pub fn new(capacity_kw: f64, epoch: u64) -> Metrics {
        let registry = Registry::new();
        let metrics = Metrics {
            load_kw: register(
                &registry,
                gauge("load_kw", "Power booked by active sessions, kW"),
            ),
            capacity_kw: register(&registry, gauge("capacity_kw", "Capacity, kW")),
            utilization: register(&registry, gauge("utilization", "load_kw / capacity_kw")),
            active_sessions: register(
                &registry,
                IntGauge::new("substation_active_sessions", "Active charging sessions")
                    .expect("the metric options are valid"),
            ),
            report_seq: register(
                &registry,
                IntGauge::new("substation_report_seq", "seq of the latest load report")
                    .expect("the metric options are valid"),
            ),
            epoch: register(&registry, gauge("epoch", "epoch of the load reports")),
            sessions: counter_vec(
                &registry,
                "sessions_total",
                "POST /charge answers by result",
                "result",
            ),
            sessions_ended: counter_vec(
                &registry,
                "sessions_ended_total",
                "Sessions that ended, by reason",
                "reason",
            ),
            energy_delivered_kwh: register(
                &registry,
                Counter::new(
                    "substation_energy_delivered_kwh_total",
                    "Simulated energy delivered by ended sessions, kWh",
                )
                .expect("the metric options are valid"),
            ),
            requests: register(
                &registry,
                IntCounterVec::new(
                    Opts::new(
                        "substation_requests_total",
                        "HTTP requests by route and status",
                    ),
                    &["route", "status"],
                )
                .expect("the metric options are valid"),
            ),
            request_duration: register(
                &registry,
                HistogramVec::new(
                    HistogramOpts::new(
                        "substation_request_duration_seconds",
                        "Time to answer an HTTP request, by route",
                    )
                    .buckets(vec![
                        0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0,
                    ]),
                    &["route"],
                )
                .expect("the metric options are valid"),
            ),
            registry,
        };
        metrics.capacity_kw.set(capacity_kw);
        // Epochs stay below 2^53, so the f64 gauge holds them exactly.
        metrics.epoch.set(epoch as f64);
        for result in RESULTS {
            metrics.sessions.with_label_values(&[result]);
        }
        for reason in END_REASONS {
            metrics.sessions_ended.with_label_values(&[reason]);
        }
        metrics
    }

    /// Count one HTTP answer.
    pub fn observe_request(&self, route: &str, status: u16, seconds: f64) {
        self.requests
            .with_label_values(&[route, &status.to_string()])
            .inc();
        self.request_duration
            .with_label_values(&[route])
            .observe(seconds);
    }

    /// The registry in Prometheus text format (version 0.0.4).
    pub fn encode(&self) -> Result<Vec<u8>, prometheus::Error> {
        let mut out = Vec::with_capacity(4096);
        TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(out)
    }
}

fn gauge(name: &str, help: &str) -> Gauge {
    Gauge::new(format!("substation_{name}"), help).expect("the metric options are valid")
}

fn counter_vec(registry: &Registry, name: &str, help: &str, label: &str) -> IntCounterVec {
    let family = IntCounterVec::new(Opts::new(format!("substation_{name}"), help), &[label])
        .expect("the metric options are valid");
    register(registry, family)
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    registry
        .register(Box::new(c.clone()))
        .expect("each family is registered once in a fresh registry");
    c
}

/// Test helper: the samples of a page as `(name{labels}, value)` pairs, read by the shared
/// parser; every comment is `# HELP` or `# TYPE` and every metric is a `substation_` one.
#[cfg(test)]
pub fn parse_text(text: &str) -> std::collections::BTreeMap<String, f64> {
    for line in text.lines().filter(|l| l.starts_with('#')) {
        assert!(
            line.starts_with("# HELP ") || line.starts_with("# TYPE "),
            "{line}"
        );
    }
    gridlb_test_support::prom::samples(text)
        .into_iter()
        .inspect(|s| assert!(s.name.starts_with("substation_"), "{}", s.series))
        .map(|s| (s.series, s.value))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_appears_in_the_text_with_its_value() {
        let metrics = Metrics::new(500.0, 1234);
        metrics.load_kw.set(22.0);
        metrics.utilization.set(0.044);
        metrics.active_sessions.set(2);
        metrics.report_seq.set(3);
        metrics.sessions.with_label_values(&["accepted"]).inc_by(3);
        metrics.sessions_ended.with_label_values(&["deleted"]).inc();
        metrics.energy_delivered_kwh.inc_by(5.5);
        metrics.observe_request("/charge", 201, 0.001);

        let text = String::from_utf8(metrics.encode().unwrap()).unwrap();
        let samples = parse_text(&text);
        let expect = [
            ("substation_load_kw", 22.0),
            ("substation_capacity_kw", 500.0),
            ("substation_utilization", 0.044),
            ("substation_active_sessions", 2.0),
            ("substation_report_seq", 3.0),
            ("substation_epoch", 1234.0),
            ("substation_sessions_total{result=\"accepted\"}", 3.0),
            ("substation_sessions_total{result=\"refused\"}", 0.0),
            (
                "substation_sessions_total{result=\"idempotent_replay\"}",
                0.0,
            ),
            ("substation_sessions_ended_total{reason=\"deleted\"}", 1.0),
            ("substation_sessions_ended_total{reason=\"expired\"}", 0.0),
            ("substation_energy_delivered_kwh_total", 5.5),
            (
                "substation_requests_total{route=\"/charge\",status=\"201\"}",
                1.0,
            ),
            (
                "substation_request_duration_seconds_count{route=\"/charge\"}",
                1.0,
            ),
        ];
        for (series, value) in expect {
            assert_eq!(samples.get(series), Some(&value), "{series} in\n{text}");
        }
        assert!(text.contains("# TYPE substation_sessions_total counter"));
        assert!(text.contains("# TYPE substation_load_kw gauge"));
    }

    #[test]
    fn two_instances_do_not_share_a_registry() {
        let a = Metrics::new(1.0, 1);
        let b = Metrics::new(2.0, 2);
        a.load_kw.set(1.0);
        let text = String::from_utf8(b.encode().unwrap()).unwrap();
        assert_eq!(parse_text(&text)["substation_load_kw"], 0.0);
        assert_eq!(parse_text(&text)["substation_capacity_kw"], 2.0);
    }
}
