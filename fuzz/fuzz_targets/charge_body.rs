//! Fuzz the `POST /charge` body: `ChargeRequest::parse` (the substation's full validation),
//! `ChargeRequest::peek` (what the proxy reads to choose a substation) and
//! `parse_charge_kw` (the `x-charge-kw` header). Never a panic; an accepted request has a
//! finite, positive power and duration; and the proxy's peek agrees with the substation's
//! parse whenever the latter accepts (else the proxy would reserve the wrong power).
#![no_main]

use gridlb_protocol::{ChargeRequest, MAX_CHARGE_BODY, parse_charge_kw};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let parsed = ChargeRequest::parse(data);
    let peeked = ChargeRequest::peek(data).power_kw;
    match &parsed {
        Ok(r) => {
            assert!(data.len() <= MAX_CHARGE_BODY);
            assert!(r.power_kw.is_finite() && r.power_kw > 0.0);
            assert!(r.duration_s.is_finite() && r.duration_s > 0.0);
            let chars = r.vehicle_id.chars().count();
            assert!((1..=128).contains(&chars));
            assert_eq!(peeked, Some(r.power_kw), "peek disagrees with parse");
        }
        Err(e) => {
            let body = e.body().to_json();
            assert!(!body.is_empty());
        }
    }
    if let Some(kw) = peeked {
        assert!(kw.is_finite() && kw > 0.0);
    }
    let header = std::str::from_utf8(data).ok();
    if let Some(kw) = header.and_then(|text| parse_charge_kw(text).ok()) {
        assert!(kw.is_finite() && kw > 0.0);
    }
});
