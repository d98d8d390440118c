//! Fuzz the load report parsers, the proxy's view of what a substation says about itself:
//! `LoadReport::from_json` (the `GET /load` body) and `HeaderReport::parse` (the
//! `x-substation-load` header). Any input is rejected with a reason or accepted as a report
//! with a finite, non-negative load and a finite, positive capacity for the substation
//! asked; accepted reports survive a round trip.
#![no_main]

use gridlb_protocol::{HeaderReport, LoadReport, MAX_REPORT_BODY};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    json(data);
    if let Ok(text) = std::str::from_utf8(data) {
        header(text);
    }
});

fn json(data: &[u8]) {
    match LoadReport::from_json(data, "s1") {
        Ok(r) => {
            assert!(data.len() <= MAX_REPORT_BODY);
            assert_eq!(r.substation, "s1");
            numbers(r.load_kw, r.capacity_kw);
            let again = serde_json::to_vec(&r).expect("a valid report serialises");
            let back = LoadReport::from_json(&again, "s1").expect("a valid report parses again");
            assert_eq!(back.version(), r.version());
            assert_eq!(back.active_sessions, r.active_sessions);
            close(back.load_kw, r.load_kw);
            close(back.capacity_kw, r.capacity_kw);
            let h = r.header();
            assert_eq!(HeaderReport::parse(&h.to_string()), Ok(h));
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
}

fn header(text: &str) {
    match HeaderReport::parse(text) {
        Ok(r) => {
            numbers(r.load_kw, r.capacity_kw);
            // Display writes every float exactly (`{:?}`), so the round trip is exact.
            assert_eq!(HeaderReport::parse(&r.to_string()), Ok(r));
        }
        Err(e) => {
            let _ = (e.reason(), e.to_string());
        }
    }
}

fn numbers(load_kw: f64, capacity_kw: f64) {
    assert!(load_kw.is_finite() && load_kw >= 0.0, "load {load_kw}");
    assert!(
        capacity_kw.is_finite() && capacity_kw > 0.0,
        "capacity {capacity_kw}"
    );
}

/// serde_json parses floats to within an ulp or so without its `float_roundtrip` feature.
fn close(a: f64, b: f64) {
    assert!((a - b).abs() <= a.abs().max(b.abs()) * 1e-15, "{a} != {b}");
}
