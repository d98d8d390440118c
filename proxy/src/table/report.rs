//! A load report as the table holds it: the version, the load and capacity, and when it
//! arrived (tokio's clock), from a probe's JSON body or an answer's header alike.

use gridlb_protocol::{HeaderReport, LoadReport, ReportError, ReportVersion};
use tokio::time::Instant;

/// The report the table holds for one substation.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub version: ReportVersion,
    pub load_kw: f64,
    pub capacity_kw: f64,
    /// Known only from probes; the header form does not carry it.
    pub active_sessions: Option<u64>,
    pub received_at: Instant,
}

impl Report {
    pub fn from_probe(r: &LoadReport, now: Instant) -> Report {
        Report {
            version: r.version(),
            load_kw: r.load_kw,
            capacity_kw: r.capacity_kw,
            active_sessions: Some(r.active_sessions),
            received_at: now,
        }
    }

    /// The report in an answer's `x-substation-load` header.
    pub fn from_header_value(
        value: &http::HeaderValue,
        now: Instant,
    ) -> Result<Report, ReportError> {
        let text = value
            .to_str()
            .map_err(|_| ReportError::Malformed("header is not ASCII".into()))?;
        Ok(Report::from_header(&HeaderReport::parse(text)?, now))
    }

    pub fn from_header(r: &HeaderReport, now: Instant) -> Report {
        Report {
            version: r.version(),
            load_kw: r.load_kw,
            capacity_kw: r.capacity_kw,
            active_sessions: None,
            received_at: now,
        }
    }
}
