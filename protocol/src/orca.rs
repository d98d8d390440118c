//! ORCA load reports in their text form, the `endpoint-load-metrics` header.
//!
//! ORCA (Open Request Cost Aggregation, xDS's `xds.data.orca.v3.OrcaLoadReport`) lets a
//! backend tell a load balancer its load on every answer. Envoy (and gRPC) read it from the
//! `endpoint-load-metrics` response header in one of three encodings; the text one is
//! `TEXT key=value, key=value, ...` (gridlb's wire contract) where a key is a field of
//! `OrcaLoadReport` (`application_utilization`, `cpu_utilization`, `rps_fractional`, ...) or
//! `named_metrics.NAME`. Envoy 1.40's parser (`source/common/orca/orca_parser.cc`,
//! `tryParseNativeHttpEncoded`) splits each pair at the first `:` instead and rejects the
//! whole report otherwise; so the colon form ([`TextForm::Colon`]) is there too, for a grid
//! balanced by Envoy (a substation's `--orca-colon`). The parser here reads both. Every substation `/charge` answer carries one beside
//! `x-substation-load`, so peers that speak ORCA (Envoy's `client_side_weighted_round_robin`)
//! can weigh substations by their utilisation.
//!
//! One formatter ([`fmt::Display`]) and one parser ([`OrcaLoadReport::parse`]); the parser
//! accepts what the formatter writes and any other field of the text form, which it ignores
//! (a receiver must not reject a report for a field it does not know).

use std::fmt;

/// How a text report separates keys from values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TextForm {
    /// `key=value`: the contract's form, and the default.
    #[default]
    Equals,
    /// `key:value`: the form Envoy 1.40's parser reads.
    Colon,
}

/// The header that carries an ORCA load report on an answer.
pub const ORCA_HEADER: &str = "endpoint-load-metrics";

/// The fields of `OrcaLoadReport` a substation sends.
#[derive(Debug, Clone, PartialEq)]
pub struct OrcaLoadReport {
    /// load / capacity.
    pub application_utilization: f64,
    /// Sessions accepted per second, over a short sliding window.
    pub rps_fractional: f64,
    /// `named_metrics.NAME=value`, in order.
    pub named_metrics: Vec<(String, f64)>,
}

/// Why an `endpoint-load-metrics` value was not read.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum OrcaError {
    #[error("not the TEXT form of an ORCA report (it must start with \"TEXT \")")]
    NotText,
    #[error("{0:?} is not key:value")]
    NotPair(String),
    #[error("{key} has a value {value:?} that is not a finite number")]
    BadValue { key: String, value: String },
}

impl OrcaLoadReport {
    /// The report of a substation with `load_kw` of `capacity_kw` that accepted
    /// `rps_fractional` sessions per second lately.
    pub fn substation(load_kw: f64, capacity_kw: f64, rps_fractional: f64) -> OrcaLoadReport {
        OrcaLoadReport {
            application_utilization: load_kw / capacity_kw,
            rps_fractional,
            named_metrics: vec![
                ("load_kw".to_string(), load_kw),
                ("capacity_kw".to_string(), capacity_kw),
            ],
        }
    }

    /// A named metric's value.
    pub fn named(&self, name: &str) -> Option<f64> {
        self.named_metrics
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| *v)
    }

    /// Parse the TEXT form. Fields other than the ones this type holds are ignored; a field
    /// missing is 0 (proto3's default), as Envoy reads it.
    pub fn parse(value: &str) -> Result<OrcaLoadReport, OrcaError> {
        let body = value
            .trim()
            .strip_prefix("TEXT ")
            .ok_or(OrcaError::NotText)?;
        let mut report = OrcaLoadReport {
            application_utilization: 0.0,
            rps_fractional: 0.0,
            named_metrics: Vec::new(),
        };
        for pair in body.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (key, value) = pair
                .split_once([':', '='])
                .ok_or_else(|| OrcaError::NotPair(pair.to_string()))?;
            let (key, value) = (key.trim(), value.trim());
            let number: f64 = value
                .parse()
                .ok()
                .filter(|v: &f64| v.is_finite())
                .ok_or_else(|| OrcaError::BadValue {
                    key: key.to_string(),
                    value: value.to_string(),
                })?;
            match key {
                "application_utilization" => report.application_utilization = number,
                "rps_fractional" => report.rps_fractional = number,
                _ => {
                    if let Some(name) = key.strip_prefix("named_metrics.") {
                        report.named_metrics.push((name.to_string(), number));
                    }
                }
            }
        }
        Ok(report)
    }
}

impl fmt::Display for OrcaLoadReport {
    /// The contract's form, `key=value` ([`OrcaLoadReport::text`] writes either).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text(TextForm::Equals))
    }
}

impl OrcaLoadReport {
    /// The `TEXT` form of the report, with keys and values separated as `form` says.
    pub fn text(&self, form: TextForm) -> String {
        let sep = match form {
            TextForm::Equals => '=',
            TextForm::Colon => ':',
        };
        let mut out = format!(
            "TEXT application_utilization{sep}{}, rps_fractional{sep}{}",
            self.application_utilization, self.rps_fractional
        );
        for (name, value) in &self.named_metrics {
            out.push_str(&format!(", named_metrics.{name}{sep}{value}"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substation_report_formats_as_orca_text() {
        let r = OrcaLoadReport::substation(125.0, 500.0, 2.5);
        assert_eq!(
            r.to_string(),
            "TEXT application_utilization=0.25, rps_fractional=2.5, \
             named_metrics.load_kw=125, named_metrics.capacity_kw=500"
        );
        assert_eq!(
            r.text(TextForm::Colon),
            "TEXT application_utilization:0.25, rps_fractional:2.5, \
             named_metrics.load_kw:125, named_metrics.capacity_kw:500"
        );
        for form in [TextForm::Equals, TextForm::Colon] {
            assert_eq!(OrcaLoadReport::parse(&r.text(form)), Ok(r.clone()));
        }
    }

    #[test]
    fn parser_reads_other_fields_and_ignores_them() {
        let r =
            OrcaLoadReport::parse("TEXT cpu_utilization=0.3, application_utilization=0.7").unwrap();
        assert_eq!(r.application_utilization, 0.7);
        assert_eq!(r.rps_fractional, 0.0);
    }

    #[test]
    fn parser_refuses_what_is_not_the_text_form() {
        assert_eq!(OrcaLoadReport::parse("JSON {}"), Err(OrcaError::NotText));
        assert!(matches!(
            OrcaLoadReport::parse("TEXT application_utilization"),
            Err(OrcaError::NotPair(_))
        ));
        assert!(matches!(
            OrcaLoadReport::parse("TEXT rps_fractional=NaN"),
            Err(OrcaError::BadValue { .. })
        ));
    }

    proptest::proptest! {
        #[test]
        fn what_is_formatted_parses_back(load in 0.0f64..1e6, cap in 1.0f64..1e6, rps in 0.0f64..1e4) {
            let r = OrcaLoadReport::substation(load, cap, rps);
            proptest::prop_assert_eq!(OrcaLoadReport::parse(&r.to_string()).unwrap(), r);
        }
    }
}
