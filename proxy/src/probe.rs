//! The load probe: a Pingora `HealthCheck` that reads each substation's load report.
//!
//! Pingora's built-in checks never read a response body, so [`LoadProbe`] does the request
//! itself on gridlb's own keep-alive pool (`crate::call`): `GET {probe.path}`, the whole exchange bounded by
//! `probe.timeout`, the body bounded by [`MAX_REPORT_BODY`]. A probe passes only when the
//! answer is `200` with a valid report for the substation asked; the report is offered to
//! the load table (where only a newer `(epoch, seq)` wins). A failed or invalid probe counts
//! towards `probe.unhealthy_after`, a good one towards `probe.healthy_after`, read from the
//! live config on every call so that a reload changes them at once.
//!
//! Its verdict (after Pingora's thresholds) is mirrored into the load table on every flip
//! ([`HealthCheck::health_status_change`]), where selection reads it. Probes of all
//! substations run in parallel; the schedule is `pool::ProbeSchedule`.

use crate::call::{CallError, Caller, Request};
use crate::table::{Report, Source, SubstationState, Table};
use async_trait::async_trait;
use gridlb_protocol::{LoadReport, MAX_REPORT_BODY, ReportError};
use pingora_error::{Error, ErrorType, Result};
use pingora_load_balancing::Backend;
use pingora_load_balancing::health_check::HealthCheck;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a probe failed, as the `reason` label of `gridlb_probe_failures_total`.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("request failed: {0}")]
    Transport(CallError),
    #[error("answered status {0}")]
    Status(u16),
    #[error("invalid report: {0}")]
    Invalid(ReportError),
}

impl ProbeError {
    fn reason(&self) -> &'static str {
        match self {
            ProbeError::Timeout(_) => "timeout",
            ProbeError::Transport(_) => "connect",
            ProbeError::Status(_) => "status",
            ProbeError::Invalid(_) => "invalid_report",
        }
    }
}

pub struct LoadProbe {
    table: Arc<Table>,
    caller: Caller,
}

impl LoadProbe {
    /// A probe reading its settings from the table's live config on every check; it reuses
    /// connections to each substation between probes.
    pub fn new(table: Arc<Table>) -> Self {
        LoadProbe {
            table,
            caller: Caller::default(),
        }
    }

    async fn fetch(
        &self,
        state: &SubstationState,
        path: &str,
        timeout: Duration,
    ) -> std::result::Result<LoadReport, ProbeError> {
        let request = Request {
            method: "GET",
            path,
            headers: &[],
            body: b"",
            connect_timeout: timeout,
            timeout,
            max_body: MAX_REPORT_BODY,
        };
        let answer = self
            .caller
            .call(state.addr, &request)
            .await
            .map_err(|e| match e {
                CallError::TooLarge { limit } => {
                    ProbeError::Invalid(ReportError::TooLarge { limit })
                }
                CallError::Timeout(after) => ProbeError::Timeout(after),
                e => ProbeError::Transport(e),
            })?;
        if answer.status != 200 {
            return Err(ProbeError::Status(answer.status));
        }
        LoadReport::from_json(&answer.body, &state.name).map_err(ProbeError::Invalid)
    }

    fn record(
        &self,
        state: &SubstationState,
        result: &std::result::Result<LoadReport, ProbeError>,
    ) {
        state.record_probe();
        let metrics = self.table.metrics();
        match result {
            Ok(report) => {
                let report = Report::from_probe(report, Instant::now());
                self.table.ingest(state, Ok(report), Source::Probe);
            }
            Err(e) => {
                if let ProbeError::Invalid(invalid) = e {
                    self.table
                        .ingest(state, Err(invalid.clone()), Source::Probe);
                }
                metrics.probe_failed(&state.name, e.reason());
            }
        }
    }
}

impl LoadProbe {
    /// One probe, bounded by the probe timeout, recorded in the table and the metrics.
    async fn probe(&self, state: &SubstationState) -> std::result::Result<LoadReport, ProbeError> {
        let probe = self.table.config().probe.clone();
        let started = Instant::now();
        let fetched =
            tokio::time::timeout(probe.timeout, self.fetch(state, &probe.path, probe.timeout))
                .await;
        let result = fetched.unwrap_or(Err(ProbeError::Timeout(probe.timeout)));
        self.table
            .metrics()
            .probe_duration(&state.name, started.elapsed());
        self.record(state, &result);
        if result.is_ok() {
            state.probe_latency(started.elapsed());
        }
        result
    }

    /// Probe one substation now, outside the schedule (and outside Pingora's health
    /// counting): true when it brought a newer report.
    pub async fn refresh(&self, state: &SubstationState) -> bool {
        let before = state.report().map(|r| r.version);
        let _ = self.probe(state).await;
        state.report().map(|r| r.version) != before
    }
}

#[async_trait]
impl HealthCheck for LoadProbe {
    async fn check(&self, target: &Backend) -> Result<()> {
        let Some(state) = target.ext.get::<Arc<SubstationState>>() else {
            return Error::e_explain(ErrorType::InternalError, "backend without substation state");
        };
        let result = self.probe(state).await;
        result.map(|_| ()).or_else(|e| {
            log::debug!("probe of {} failed: {e}", state.name);
            Error::e_explain(ErrorType::CustomCode("probe failed", 1), e.to_string())
        })
    }

    async fn health_status_change(&self, target: &Backend, healthy: bool) {
        if let Some(state) = target.ext.get::<Arc<SubstationState>>() {
            state.set_healthy(healthy);
            if healthy {
                log::info!("substation {} ({}) is healthy", state.name, state.addr);
            } else {
                log::warn!("substation {} ({}) is unhealthy", state.name, state.addr);
            }
        }
    }

    fn backend_summary(&self, target: &Backend) -> String {
        match target.ext.get::<Arc<SubstationState>>() {
            Some(state) => format!("substation {} ({})", state.name, state.addr),
            None => format!("{target:?}"),
        }
    }

    fn health_threshold(&self, success: bool) -> usize {
        let probe = &self.table.config().probe;
        if success {
            probe.healthy_after
        } else {
            probe.unhealthy_after
        }
    }
}
