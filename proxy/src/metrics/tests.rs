//! Unit tests of [`super::Metrics`]: names, zero-valued series, reloads, removal.

use super::*;
use gridlb_test_support::prom::value;

fn text(m: &Metrics) -> String {
    let mut out = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&m.registry.gather(), &mut out)
        .expect("encodes");
    out
}

fn fresh() -> Metrics {
    Metrics::new(&Registry::new()).expect("a fresh registry takes every family")
}

#[test]
fn families_follow_the_naming_rules() {
    let m = fresh();
    m.request("s1", 201, "charge", Duration::from_millis(2));
    m.probe_duration("s1", Duration::from_millis(1));
    for family in m.registry.gather() {
        let name = family.name();
        assert!(name.starts_with("gridlb_"), "{name}");
        assert!(!family.help().is_empty(), "{name} has no HELP");
        match family.get_field_type() {
            prometheus::proto::MetricType::COUNTER => {
                assert!(name.ends_with("_total"), "{name}")
            }
            prometheus::proto::MetricType::HISTOGRAM => {
                assert!(name.ends_with("_seconds"), "{name}")
            }
            _ => assert!(!name.ends_with("_total"), "{name}"),
        }
    }
}

#[test]
fn series_with_known_labels_exist_before_the_first_event() {
    let page = text(&fresh());
    for reason in REFUSAL_REASONS {
        let series = format!("gridlb_admissions_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&page, &series), Some(0.0), "{series}");
    }
    for reason in RETRY_REASONS {
        let series = format!("gridlb_retries_total{{reason=\"{reason}\"}}");
        assert_eq!(value(&page, &series), Some(0.0), "{series}");
    }
    for result in ["success", "failure"] {
        let series = format!("gridlb_config_reloads_total{{result=\"{result}\"}}");
        assert_eq!(value(&page, &series), Some(0.0), "{series}");
    }
    assert_eq!(
        value(&page, "gridlb_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(value(&page, "gridlb_config_last_reload_success_timestamp_seconds").unwrap() > 1e9);
}

#[test]
fn a_failed_reload_is_counted_and_keeps_the_time_of_the_last_good_one() {
    let m = fresh();
    m.last_reload.set(1000.0);
    m.reload(false);
    let page = text(&m);
    assert_eq!(
        value(&page, "gridlb_config_reloads_total{result=\"failure\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&page, "gridlb_config_last_reload_successful"),
        Some(0.0)
    );
    assert_eq!(
        value(&page, "gridlb_config_last_reload_success_timestamp_seconds"),
        Some(1000.0)
    );
    m.reload(true);
    let page = text(&m);
    assert_eq!(
        value(&page, "gridlb_config_reloads_total{result=\"success\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&page, "gridlb_config_last_reload_successful"),
        Some(1.0)
    );
    assert!(value(&page, "gridlb_config_last_reload_success_timestamp_seconds").unwrap() > 1e9);
}

#[test]
fn forget_removes_every_series_of_a_substation_and_only_those() {
    let m = fresh();
    for s in ["s1", "s2"] {
        m.touch(s);
        m.request(s, 201, "charge", Duration::from_millis(3));
        m.probe_duration(s, Duration::from_millis(1));
        m.probe_failed(s, "timeout");
        m.report_stale(s, "header");
        m.report_rejected(s, "probe", "bad_load");
        m.substation_refused(s);
    }
    m.request(NO_SUBSTATION, 503, "charge", Duration::from_millis(1));
    m.forget("s2");
    let page = text(&m);
    assert!(!page.contains("substation=\"s2\""), "{page}");
    assert_eq!(
        value(
            &page,
            "gridlb_probe_failures_total{reason=\"timeout\",substation=\"s1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &page,
            "gridlb_reports_rejected_total{reason=\"bad_load\",source=\"probe\",substation=\"s1\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &page,
            "gridlb_requests_total{status=\"503\",substation=\"none\"}"
        ),
        Some(1.0)
    );
}

#[test]
fn request_latency_buckets_span_100_microseconds_to_10_seconds() {
    assert_eq!(LATENCY_BUCKETS.first(), Some(&0.0001));
    assert_eq!(LATENCY_BUCKETS.last(), Some(&10.0));
    assert!(LATENCY_BUCKETS.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn every_report_error_has_a_listed_reason() {
    use gridlb_protocol::ReportError as E;
    let errors = [
        E::Malformed(String::new()),
        E::TooLarge { limit: 1 },
        E::MissingField("seq"),
        E::BadValue {
            field: "seq",
            value: String::new(),
        },
        E::BadLoad(f64::NAN),
        E::BadCapacity(0.0),
        E::WrongSubstation {
            expected: "a".into(),
            got: "b".into(),
        },
    ];
    for e in errors {
        assert!(REPORT_REJECT_REASONS.contains(&e.reason()), "{e}");
    }
}
