//! What only the substation's tests share: a charge request body. Raw HTTP and the
//! Prometheus parser come from `gridlb_test_support`.

pub const EV: &str = r#"{"vehicle_id":"ev-1","power_kw":11.0,"duration_s":1800}"#;
