//! The `/status` document: what the proxy believes about each substation right now.
//! The live status page and the demo's terminal table both render it.

use crate::pool::Pool;
use crate::reload::ReloadStatus;
use serde::Serialize;
use std::sync::atomic::Ordering::Relaxed;

#[derive(Debug, Serialize)]
pub struct Status {
    pub algorithm: &'static str,
    pub max_utilization: f64,
    pub ready: bool,
    pub substations: Vec<SubstationStatus>,
    pub reload: ReloadStatus,
}

#[derive(Debug, Serialize)]
pub struct SubstationStatus {
    pub name: String,
    pub address: String,
    pub weight: usize,
    /// Passes its probes (Pingora's verdict, after its thresholds).
    pub healthy: bool,
    pub draining: bool,
    /// Healthy, not draining and reported: may be chosen when it has room.
    pub eligible: bool,
    /// Healthy and not draining: takes new sessions when it has a report and room.
    pub ready: bool,
    pub probes: u64,
    pub report: Option<ReportStatus>,
    pub in_flight_kw: f64,
    /// (reported load + in-flight power) / capacity; null without a report.
    pub utilization: Option<f64>,
    pub sessions_routed: u64,
    /// Out of the choice as an outlier for this many more seconds (absent when it is not).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_s: Option<f64>,
}

#[derive(Debug, Serialize)]
pub struct ReportStatus {
    pub epoch: u64,
    pub seq: u64,
    pub load_kw: f64,
    pub capacity_kw: f64,
    pub active_sessions: Option<u64>,
    pub age_s: f64,
}

impl Status {
    pub fn of(pool: &Pool, reload: ReloadStatus) -> Status {
        let snapshot = pool.table().snapshot();
        let substations = snapshot
            .substations
            .iter()
            .map(|sub| {
                let state = &sub.state;
                let report = state.report().map(|r| ReportStatus {
                    epoch: r.version.epoch,
                    seq: r.version.seq,
                    load_kw: r.load_kw,
                    capacity_kw: r.capacity_kw,
                    active_sessions: r.active_sessions,
                    age_s: r.received_at.elapsed().as_secs_f64(),
                });
                let healthy = state.is_healthy();
                SubstationStatus {
                    name: sub.config.name.clone(),
                    address: sub.config.address.clone(),
                    weight: sub.config.weight,
                    healthy,
                    draining: state.is_draining(),
                    eligible: healthy && !state.is_draining() && report.is_some(),
                    ready: state.is_eligible(),
                    probes: state.probes(),
                    report,
                    in_flight_kw: state.in_flight_kw(),
                    utilization: state.utilization_with(0.0),
                    sessions_routed: state.routed.load(Relaxed),
                    ejected_for_s: state
                        .ejected_for(tokio::time::Instant::now())
                        .map(|d| d.as_secs_f64()),
                }
            })
            .collect();
        Status {
            algorithm: snapshot.config.selection.algorithm.as_str(),
            max_utilization: snapshot.config.selection.max_utilization,
            ready: pool.unprobed().is_empty(),
            substations,
            reload,
        }
    }
}
