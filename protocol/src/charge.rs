//! Charge requests (`POST /charge`) and their answers.

use serde::{Deserialize, Serialize};

/// The charger powers (kW) of a typical fleet and the share of sessions at each (the shares
/// add up to 1): home and street AC chargers dominate, DC fast chargers are rarer but draw
/// far more. The demand generators (`gridlb demo`, `ev-demand`) draw from it.
pub const CHARGER_MIX: [(f64, f64); 6] = [
    (3.7, 0.15),
    (7.4, 0.25),
    (11.0, 0.30),
    (22.0, 0.15),
    (50.0, 0.10),
    (150.0, 0.05),
];

/// A request to charge one vehicle: `{"vehicle_id": "ev-1", "power_kw": 11.0, "duration_s": 1800}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChargeRequest {
    pub vehicle_id: String,
    pub power_kw: f64,
    pub duration_s: f64,
}

/// What [`ChargeRequest::peek`] found in a body.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Peek {
    pub power_kw: Option<f64>,
    pub duration_s: Option<f64>,
}

/// Why a charge request was refused as bad input. [`ChargeError::field`] names the field so
/// that the `400` answer can say which one.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChargeError {
    #[error("body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("body is not a charge request: {message}")]
    Shape {
        field: Option<String>,
        message: String,
    },
    #[error("{field} must be a finite number greater than zero, got {value}")]
    NotPositive { field: &'static str, value: String },
    #[error("vehicle_id must be 1 to 128 characters")]
    BadVehicleId,
    #[error("power_kw {power_kw} is larger than the capacity {capacity_kw} kW")]
    OverCapacity { power_kw: f64, capacity_kw: f64 },
    #[error("{field} {value} is over the limit of {max}")]
    OverLimit {
        field: &'static str,
        value: f64,
        max: f64,
    },
}

/// The longest session any party accepts: one week, in (simulated) seconds. A session that
/// asks for longer would hold its power for ever in all but name.
pub const MAX_DURATION_S: f64 = 7.0 * 86_400.0;
/// The most power one session may ask for: 10⁹ kW, what a `Power` can hold.
pub const MAX_SESSION_KW: f64 = crate::Power::MAX_KW;

impl ChargeError {
    /// The field at fault, when there is one.
    pub fn field(&self) -> Option<&str> {
        match self {
            ChargeError::TooLarge { .. } => None,
            ChargeError::Shape { field, .. } => field.as_deref(),
            ChargeError::NotPositive { field, .. } => Some(field),
            ChargeError::BadVehicleId => Some("vehicle_id"),
            ChargeError::OverCapacity { .. } => Some("power_kw"),
            ChargeError::OverLimit { field, .. } => Some(field),
        }
    }

    /// The JSON error body for this error.
    pub fn body(&self) -> ErrorBody {
        ErrorBody::new(self.to_string(), self.field().map(str::to_string))
    }
}

impl ChargeRequest {
    /// Parse and validate a `/charge` body. Power and duration must be finite and positive;
    /// the capacity check belongs to the substation ([`ChargeRequest::check_capacity`]).
    pub fn parse(body: &[u8]) -> Result<Self, ChargeError> {
        if body.len() > crate::MAX_CHARGE_BODY {
            return Err(ChargeError::TooLarge {
                limit: crate::MAX_CHARGE_BODY,
            });
        }
        let request: ChargeRequest = from_json(body)?;
        if request.vehicle_id.is_empty() || request.vehicle_id.chars().count() > 128 {
            return Err(ChargeError::BadVehicleId);
        }
        positive("power_kw", request.power_kw)?;
        positive("duration_s", request.duration_s)?;
        request.check_limits(MAX_SESSION_KW, MAX_DURATION_S)?;
        Ok(request)
    }

    /// Check the request against limits on its power and duration (at most the protocol's
    /// [`MAX_SESSION_KW`] and [`MAX_DURATION_S`], which [`ChargeRequest::parse`] applies).
    pub fn check_limits(&self, max_kw: f64, max_duration_s: f64) -> Result<(), ChargeError> {
        over_limit("power_kw", self.power_kw, max_kw)?;
        over_limit("duration_s", self.duration_s, max_duration_s)
    }

    /// Refuse a request larger than the whole capacity: it can never fit.
    pub fn check_capacity(&self, capacity_kw: f64) -> Result<(), ChargeError> {
        if self.power_kw > capacity_kw {
            return Err(ChargeError::OverCapacity {
                power_kw: self.power_kw,
                capacity_kw,
            });
        }
        Ok(())
    }

    /// What a receiver that must not reject what the substation would accept (the proxy)
    /// reads of a body, in one pass: `power_kw` when it is a number greater than zero, and
    /// `duration_s` when it is a number; each independently of the other and of the rest of
    /// the body, which only the substation judges.
    pub fn peek(body: &[u8]) -> Peek {
        #[derive(Deserialize)]
        struct Fields {
            power_kw: Option<serde_json::Value>,
            duration_s: Option<serde_json::Value>,
        }
        let Ok(fields) = serde_json::from_slice::<Fields>(body) else {
            return Peek::default();
        };
        Peek {
            power_kw: fields
                .power_kw
                .and_then(|v| v.as_f64())
                .filter(|kw| positive("power_kw", *kw).is_ok()),
            duration_s: fields.duration_s.and_then(|v| v.as_f64()),
        }
    }
}

fn over_limit(field: &'static str, value: f64, max: f64) -> Result<(), ChargeError> {
    if value > max {
        return Err(ChargeError::OverLimit { field, value, max });
    }
    Ok(())
}

/// Parse the `x-charge-kw` header value.
pub fn parse_charge_kw(value: &str) -> Result<f64, ChargeError> {
    let kw: f64 = value.trim().parse().map_err(|_| ChargeError::NotPositive {
        field: "x-charge-kw",
        value: value.to_string(),
    })?;
    positive("x-charge-kw", kw)?;
    Ok(kw)
}

fn positive(field: &'static str, value: f64) -> Result<(), ChargeError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ChargeError::NotPositive {
            field,
            value: value.to_string(),
        })
    }
}

/// Deserialize, naming the field at fault where there is one (also for a wrong type, which
/// serde's own message does not name).
fn from_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ChargeError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let message = e.inner().to_string();
        let path = e.path().to_string();
        // A top-level key; not "." (the whole body), "?" (unknown) or "[0]" (not an object).
        let is_key =
            !path.is_empty() && path.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        let field = if is_key {
            Some(path)
        } else {
            // "missing field `x`" and "unknown field `x`" name it in the message.
            message
                .split_once("field `")
                .and_then(|(_, rest)| rest.split('`').next())
                .map(str::to_string)
        };
        ChargeError::Shape { field, message }
    })
}

/// The `201` answer to an accepted charge request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeAccepted {
    pub session_id: String,
    pub substation: String,
    pub power_kw: f64,
    pub load_kw: f64,
    pub capacity_kw: f64,
    /// When the session ends, unix seconds (wall clock of the substation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<f64>,
    /// Real seconds from this answer until the session ends: `duration_s` divided by a
    /// simulator's time scale, so a receiver needs neither the scale nor a synchronised
    /// clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining_s: Option<f64>,
}

/// The JSON body of every error answer: `{"error": "...", "field": "power_kw"}`; the
/// proxy's own answers also name the request (`"request_id": "..."`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

impl ErrorBody {
    pub fn new(error: impl Into<String>, field: Option<String>) -> Self {
        ErrorBody {
            error: error.into(),
            field,
            request_id: None,
        }
    }

    /// The same body naming the request it answers.
    pub fn with_request_id(mut self, id: &crate::RequestId) -> Self {
        self.request_id = Some(id.as_str().to_string());
        self
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an ErrorBody always serialises")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_body_names_the_request_only_when_it_has_an_id() {
        let plain = ErrorBody::new("no", None);
        assert_eq!(plain.to_json(), br#"{"error":"no"}"#);
        let id = crate::RequestId::parse(b"req-1").unwrap();
        assert_eq!(
            plain.with_request_id(&id).to_json(),
            br#"{"error":"no","request_id":"req-1"}"#
        );
    }

    #[test]
    fn a_session_past_the_protocol_bounds_is_refused_naming_the_field() {
        let long = br#"{"vehicle_id":"ev","power_kw":11,"duration_s":1e300}"#;
        let e = ChargeRequest::parse(long).unwrap_err();
        assert_eq!(e.field(), Some("duration_s"));
        let week = br#"{"vehicle_id":"ev","power_kw":11,"duration_s":604800}"#;
        assert!(
            ChargeRequest::parse(week).is_ok(),
            "one week is the bound itself"
        );
        let huge = br#"{"vehicle_id":"ev","power_kw":1e12,"duration_s":60}"#;
        assert_eq!(
            ChargeRequest::parse(huge).unwrap_err().field(),
            Some("power_kw")
        );
        assert_eq!(ChargeRequest::peek(long).duration_s, Some(1e300));
        assert_eq!(ChargeRequest::peek(b"{}").duration_s, None);
    }

    #[test]
    fn valid_request_parses() {
        let r = ChargeRequest::parse(br#"{"vehicle_id":"ev-1","power_kw":11.0,"duration_s":1800}"#)
            .unwrap();
        assert_eq!(r.power_kw, 11.0);
        assert_eq!(r.duration_s, 1800.0);
    }

    #[test]
    fn bad_requests_name_the_field() {
        let cases: [(&[u8], Option<&str>); 7] = [
            (
                br#"{"vehicle_id":"ev","power_kw":0,"duration_s":1}"#,
                Some("power_kw"),
            ),
            (
                br#"{"vehicle_id":"ev","power_kw":-3,"duration_s":1}"#,
                Some("power_kw"),
            ),
            (
                br#"{"vehicle_id":"ev","power_kw":3,"duration_s":0}"#,
                Some("duration_s"),
            ),
            (
                br#"{"vehicle_id":"ev","power_kw":"3","duration_s":1}"#,
                Some("power_kw"),
            ),
            (br#"{"vehicle_id":"ev","duration_s":1}"#, Some("power_kw")),
            (
                br#"{"vehicle_id":"","power_kw":3,"duration_s":1}"#,
                Some("vehicle_id"),
            ),
            (
                br#"{"vehicle_id":"e","power_kw":3,"duration_s":1,"x":1}"#,
                Some("x"),
            ),
        ];
        for (body, field) in cases {
            let err = ChargeRequest::parse(body).unwrap_err();
            assert_eq!(
                err.field(),
                field,
                "{}: {err}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn oversized_body_and_non_json_are_refused() {
        let big = vec![b'{'; crate::MAX_CHARGE_BODY + 1];
        assert!(matches!(
            ChargeRequest::parse(&big),
            Err(ChargeError::TooLarge { .. })
        ));
        assert!(ChargeRequest::parse(b"not json").is_err());
    }

    #[test]
    fn power_above_capacity_is_refused() {
        let r =
            ChargeRequest::parse(br#"{"vehicle_id":"ev","power_kw":150,"duration_s":9}"#).unwrap();
        assert!(r.check_capacity(100.0).is_err());
        assert!(r.check_capacity(150.0).is_ok());
    }

    #[test]
    fn charge_kw_header_must_be_positive_and_finite() {
        assert_eq!(parse_charge_kw(" 22 ").unwrap(), 22.0);
        for bad in ["0", "-1", "NaN", "inf", "abc", ""] {
            assert!(parse_charge_kw(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn peek_reads_the_power_and_the_duration_each_on_its_own() {
        let peek = ChargeRequest::peek(br#"{"power_kw":7.4,"other":1,"duration_s":60}"#);
        assert_eq!(peek.power_kw, Some(7.4));
        assert_eq!(peek.duration_s, Some(60.0));
        assert_eq!(ChargeRequest::peek(br#"{"power_kw":0}"#).power_kw, None);
        let bad_power = ChargeRequest::peek(br#"{"power_kw":"11","duration_s":60}"#);
        assert_eq!(
            bad_power,
            Peek {
                power_kw: None,
                duration_s: Some(60.0)
            }
        );
        let bad_duration = ChargeRequest::peek(br#"{"power_kw":11,"duration_s":[1]}"#);
        assert_eq!(
            bad_duration,
            Peek {
                power_kw: Some(11.0),
                duration_s: None
            }
        );
        assert_eq!(ChargeRequest::peek(b"[11]"), Peek::default());
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..400)) {
            let _ = ChargeRequest::parse(&bytes);
            let _ = ChargeRequest::peek(&bytes);
        }
    }
}
