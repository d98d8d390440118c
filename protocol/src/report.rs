//! Load reports: the JSON body of `GET /load`, the `x-substation-load` header form, their
//! validation and their order.

use serde::{Deserialize, Serialize};
use std::fmt;

/// Why a load report was rejected. The variants double as the `reason` label of the
/// proxy's rejected-report metrics, see [`ReportError::reason`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReportError {
    #[error("report is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("report is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("header field {0:?} is missing")]
    MissingField(&'static str),
    #[error("header field {field:?} has a bad value {value:?}")]
    BadValue { field: &'static str, value: String },
    #[error("load_kw {0} is not a finite, non-negative number")]
    BadLoad(f64),
    #[error("capacity_kw {0} is not a finite, positive number")]
    BadCapacity(f64),
    #[error("report names substation {got:?}, expected {expected:?}")]
    WrongSubstation { expected: String, got: String },
}

impl ReportError {
    /// A short, stable label for metrics (`reason="bad_load"`).
    pub fn reason(&self) -> &'static str {
        match self {
            ReportError::Malformed(_) => "malformed",
            ReportError::TooLarge { .. } => "too_large",
            ReportError::MissingField(_) | ReportError::BadValue { .. } => "malformed",
            ReportError::BadLoad(_) => "bad_load",
            ReportError::BadCapacity(_) => "bad_capacity",
            ReportError::WrongSubstation { .. } => "wrong_substation",
        }
    }
}

/// The position of a report in its substation's history. Ordered by epoch, then seq, so a
/// process restart (new epoch) supersedes everything before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ReportVersion {
    pub epoch: u64,
    pub seq: u64,
}

impl fmt::Display for ReportVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.epoch, self.seq)
    }
}

/// A substation's full load report, the body of `GET /load`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoadReport {
    pub substation: String,
    pub epoch: u64,
    pub seq: u64,
    pub load_kw: f64,
    pub capacity_kw: f64,
    pub active_sessions: u64,
}

impl LoadReport {
    /// Parse and validate a JSON report. `expected` is the substation the receiver asked;
    /// a report that names another one is rejected.
    pub fn from_json(body: &[u8], expected: &str) -> Result<Self, ReportError> {
        let report = LoadReport::parse(body)?;
        if report.substation != expected {
            return Err(ReportError::WrongSubstation {
                expected: expected.to_string(),
                got: report.substation,
            });
        }
        Ok(report)
    }

    /// Parse and validate a JSON report from whichever substation sent it, for a receiver
    /// that knows only the address it asked (a load sampler, an agent check).
    pub fn parse(body: &[u8]) -> Result<Self, ReportError> {
        if body.len() > crate::MAX_REPORT_BODY {
            return Err(ReportError::TooLarge {
                limit: crate::MAX_REPORT_BODY,
            });
        }
        let report: LoadReport =
            serde_json::from_slice(body).map_err(|e| ReportError::Malformed(e.to_string()))?;
        validate_numbers(report.load_kw, report.capacity_kw)?;
        Ok(report)
    }

    /// The share of the capacity that is free, in `[0, 1]` (0 when overloaded).
    pub fn headroom(&self) -> f64 {
        ((self.capacity_kw - self.load_kw) / self.capacity_kw).clamp(0.0, 1.0)
    }

    pub fn version(&self) -> ReportVersion {
        ReportVersion {
            epoch: self.epoch,
            seq: self.seq,
        }
    }

    /// The header form of this report (drops the name and session count).
    pub fn header(&self) -> HeaderReport {
        HeaderReport {
            epoch: self.epoch,
            seq: self.seq,
            load_kw: self.load_kw,
            capacity_kw: self.capacity_kw,
        }
    }
}

/// The `x-substation-load` header form of a report:
/// `epoch=7193;seq=43;load_kw=134.0;capacity_kw=500.0`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeaderReport {
    pub epoch: u64,
    pub seq: u64,
    pub load_kw: f64,
    pub capacity_kw: f64,
}

impl HeaderReport {
    /// Parse and validate the header value. Fields may come in any order; unknown fields are
    /// ignored so that substations can add to the header without breaking older proxies;
    /// a repeated field is an error. Space around fields and `=` is ASCII whitespace (a header
    /// value has no other).
    pub fn parse(value: &str) -> Result<Self, ReportError> {
        if value.len() > 1024 {
            return Err(ReportError::TooLarge { limit: 1024 });
        }
        let (mut epoch, mut seq, mut load, mut capacity) = (None, None, None, None);
        for part in value
            .split(';')
            .map(str::trim_ascii)
            .filter(|p| !p.is_empty())
        {
            let (key, raw) = part.split_once('=').ok_or_else(|| ReportError::BadValue {
                field: "header",
                value: part.to_string(),
            })?;
            let (key, raw) = (key.trim_ascii(), raw.trim_ascii());
            match key {
                "epoch" => set_once(&mut epoch, "epoch", parse_field::<u64>("epoch", raw)?)?,
                "seq" => set_once(&mut seq, "seq", parse_field::<u64>("seq", raw)?)?,
                "load_kw" => set_once(&mut load, "load_kw", parse_field::<f64>("load_kw", raw)?)?,
                "capacity_kw" => set_once(
                    &mut capacity,
                    "capacity_kw",
                    parse_field::<f64>("capacity_kw", raw)?,
                )?,
                _ => {}
            }
        }
        let report = HeaderReport {
            epoch: epoch.ok_or(ReportError::MissingField("epoch"))?,
            seq: seq.ok_or(ReportError::MissingField("seq"))?,
            load_kw: load.ok_or(ReportError::MissingField("load_kw"))?,
            capacity_kw: capacity.ok_or(ReportError::MissingField("capacity_kw"))?,
        };
        validate_numbers(report.load_kw, report.capacity_kw)?;
        Ok(report)
    }

    pub fn version(&self) -> ReportVersion {
        ReportVersion {
            epoch: self.epoch,
            seq: self.seq,
        }
    }
}

impl fmt::Display for HeaderReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "epoch={};seq={};load_kw={:?};capacity_kw={:?}",
            self.epoch, self.seq, self.load_kw, self.capacity_kw
        )
    }
}

fn validate_numbers(load_kw: f64, capacity_kw: f64) -> Result<(), ReportError> {
    if !load_kw.is_finite() || load_kw < 0.0 {
        return Err(ReportError::BadLoad(load_kw));
    }
    if !capacity_kw.is_finite() || capacity_kw <= 0.0 {
        return Err(ReportError::BadCapacity(capacity_kw));
    }
    Ok(())
}

fn parse_field<T: std::str::FromStr>(field: &'static str, raw: &str) -> Result<T, ReportError> {
    raw.parse().map_err(|_| ReportError::BadValue {
        field,
        value: raw.to_string(),
    })
}

fn set_once<T>(slot: &mut Option<T>, field: &'static str, value: T) -> Result<(), ReportError> {
    if slot.replace(value).is_some() {
        return Err(ReportError::BadValue {
            field,
            value: "given twice".to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(load: &str, cap: &str) -> String {
        format!(
            r#"{{"substation":"s1","epoch":7,"seq":42,"load_kw":{load},"capacity_kw":{cap},"active_sessions":3}}"#
        )
    }

    #[test]
    fn json_report_round_trips() {
        let report = LoadReport::from_json(json("123.5", "500").as_bytes(), "s1").unwrap();
        assert_eq!(report.version(), ReportVersion { epoch: 7, seq: 42 });
        assert_eq!(report.load_kw, 123.5);
        let again = serde_json::to_vec(&report).unwrap();
        assert_eq!(LoadReport::from_json(&again, "s1").unwrap(), report);
    }

    #[test]
    fn json_report_with_bad_numbers_is_rejected_by_reason() {
        let cases = [
            (json("-1", "500"), "bad_load"),
            (json("1e999", "500"), "malformed"),
            (json("1", "0"), "bad_capacity"),
            (json("1", "-5"), "bad_capacity"),
            (json("\"x\"", "500"), "malformed"),
        ];
        for (body, reason) in cases {
            let err = LoadReport::from_json(body.as_bytes(), "s1").unwrap_err();
            assert_eq!(err.reason(), reason, "{body}: {err}");
        }
    }

    #[test]
    fn a_report_from_any_substation_parses_and_states_its_headroom() {
        let report = LoadReport::parse(json("125", "500").as_bytes()).unwrap();
        assert_eq!(report.headroom(), 0.75);
        assert_eq!(
            LoadReport::parse(json("-1", "500").as_bytes())
                .unwrap_err()
                .reason(),
            "bad_load"
        );
        let over = LoadReport::parse(json("600", "500").as_bytes()).unwrap();
        assert_eq!(over.headroom(), 0.0);
    }

    #[test]
    fn json_report_for_another_substation_is_rejected() {
        let err = LoadReport::from_json(json("1", "5").as_bytes(), "s2").unwrap_err();
        assert_eq!(err.reason(), "wrong_substation");
    }

    #[test]
    fn json_report_missing_a_field_or_with_an_extra_one_is_malformed() {
        let missing = r#"{"substation":"s1","epoch":1,"seq":1,"load_kw":1,"capacity_kw":5}"#;
        assert_eq!(
            LoadReport::from_json(missing.as_bytes(), "s1")
                .unwrap_err()
                .reason(),
            "malformed"
        );
        let huge = vec![b' '; crate::MAX_REPORT_BODY + 1];
        assert_eq!(
            LoadReport::from_json(&huge, "s1").unwrap_err().reason(),
            "too_large"
        );
    }

    #[test]
    fn header_report_round_trips_through_display() {
        let header = HeaderReport {
            epoch: 7193,
            seq: 43,
            load_kw: 134.0,
            capacity_kw: 500.0,
        };
        let text = header.to_string();
        assert_eq!(text, "epoch=7193;seq=43;load_kw=134.0;capacity_kw=500.0");
        assert_eq!(HeaderReport::parse(&text).unwrap(), header);
    }

    #[test]
    fn header_report_accepts_any_order_and_ignores_unknown_fields() {
        let parsed =
            HeaderReport::parse(" capacity_kw=10 ; foo=bar;load_kw=2.5;seq=3;epoch=1").unwrap();
        assert_eq!(parsed.version(), ReportVersion { epoch: 1, seq: 3 });
        assert_eq!((parsed.load_kw, parsed.capacity_kw), (2.5, 10.0));
    }

    #[test]
    fn header_report_rejects_missing_repeated_and_bad_fields() {
        for bad in [
            "epoch=1;seq=2;load_kw=3",
            "epoch=1;seq=2;load_kw=3;capacity_kw=4;seq=5",
            "epoch=-1;seq=2;load_kw=3;capacity_kw=4",
            "epoch=1;seq=2;load_kw=NaN;capacity_kw=4",
            "epoch=1;seq=2;load_kw=inf;capacity_kw=4",
            "epoch=1;seq=2;load_kw=3;capacity_kw=0",
            "epoch=1;seq=2;load_kw3;capacity_kw=4",
            "",
        ] {
            assert!(HeaderReport::parse(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn new_epoch_wins_whatever_its_seq() {
        let old = ReportVersion { epoch: 1, seq: 900 };
        let restarted = ReportVersion { epoch: 2, seq: 0 };
        assert!(restarted > old);
        assert!(ReportVersion { epoch: 1, seq: 901 } > old);
    }

    proptest::proptest! {
        #[test]
        fn header_parser_never_panics(s in "\\PC{0,200}") {
            let _ = HeaderReport::parse(&s);
        }

        #[test]
        fn json_parser_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            let _ = LoadReport::from_json(&bytes, "s1");
        }
    }
}
