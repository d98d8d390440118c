//! The substation side of a request: the load report its answer carries, what its latency
//! and refusals say about it (`crate::table::outlier`), the settling of a booking whose answer
//! was lost, and the answers the proxy writes when an exchange fails.

use super::Session;
use super::{GridProxy, RequestCtx, respond_json};
use crate::call::CallError;
use crate::orphan::Orphan;
use crate::table::{Report, Snapshot, Source, SubstationState};
use gridlb_protocol::ErrorBody;
use pingora_error::Result;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

/// Why a request got no answer from a substation.
#[derive(Debug)]
pub(super) enum Failure {
    /// No candidate with room was left to try: `503` with `Retry-After`.
    Exhausted,
    /// The exchange with the substation failed: `502`.
    Substation(CallError),
    /// The substation answered a booking with a session id that is not its own: `502`.
    Misnamed,
}

impl GridProxy {
    /// Feed the load header of an answer to the table; the report, if it was valid.
    pub(super) fn learn(
        &self,
        state: &SubstationState,
        headers: &http::HeaderMap,
    ) -> Option<Report> {
        let value = headers.get(&crate::names::LOAD)?;
        let report = Report::from_header_value(value, Instant::now());
        let valid = report.as_ref().ok().cloned();
        self.table().ingest(state, report, Source::Header);
        valid
    }

    /// A `/charge` answer from `state` took `latency` (or never came in that time): take a
    /// substation far slower than is typical out of the choice (see `table::outlier`).
    pub(super) fn observe_latency(&self, state: &SubstationState, latency: Duration) {
        let snapshot = self.table().snapshot();
        if !state.charge_latency(latency, &snapshot.substations) || !may_eject(&snapshot) {
            return;
        }
        let out = state.eject(snapshot.config.probe.interval);
        self.table().metrics().ejection(&state.name, "slow");
        log::warn!(
            "substation {} answers far slower than is typical ({latency:?} now): out of the choice for {out:?}",
            state.name
        );
    }

    /// A refusal whose own report shows room for the request is no race lost to another
    /// client: the substation says one thing and does another. Take it out of the first
    /// choice for a while (see `SubstationState::eject`).
    pub(super) fn refused_with_room(&self, state: &SubstationState, report: &Report, kw: f64) {
        let room = state.usable_capacity_kw(report.capacity_kw) - report.load_kw;
        if room + 1e-6 < kw || !may_eject(&self.table().snapshot()) {
            return;
        }
        let base = self.table().config().probe.interval;
        let out = state.eject(base);
        self.table()
            .metrics()
            .ejection(&state.name, "refused_with_room");
        log::warn!(
            "substation {} refused {kw} kW while reporting {room:.1} kW free: out of the choice for {out:?}",
            state.name
        );
    }
    /// A booking sent to `substation` whose answer was lost may be booked there: settle it
    /// (see `crate::orphan`).
    pub(super) fn settle_orphan(&self, ctx: &RequestCtx, substation: &Arc<SubstationState>) {
        if let Some(orphan) = self.orphan(ctx, substation) {
            let config = self.table().config();
            self.orphans.settle(
                orphan,
                config.upstream.read_timeout * 2,
                Arc::clone(self.table().metrics()),
            );
        }
    }

    /// Cancel the session `id` that `substation` booked under a name not its own.
    pub(super) fn cancel_misnamed(
        &self,
        ctx: &RequestCtx,
        substation: &Arc<SubstationState>,
        id: String,
    ) {
        if let Some(orphan) = self.orphan(ctx, substation) {
            let config = self.table().config();
            self.orphans.cancel(
                orphan,
                id,
                config.upstream.read_timeout * 2,
                Arc::clone(self.table().metrics()),
            );
        }
    }

    fn orphan(&self, ctx: &RequestCtx, substation: &Arc<SubstationState>) -> Option<Orphan> {
        Some(Orphan {
            substation: Arc::clone(substation),
            key: ctx.upstream_key.clone()?,
            body: ctx.body.clone(),
        })
    }

    /// Answer a request that got no answer from a substation: `503` with `Retry-After` when
    /// none could take it, `502` when one failed. The client is told what failed, not where:
    /// no internal address leaves gridlb (the log has the whole error).
    pub(super) async fn fail(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        failure: Failure,
    ) -> Result<bool> {
        let substation = ctx.attempts.target().map_or("none", |s| s.name.as_str());
        let (code, headers, message) = match &failure {
            Failure::Exhausted => {
                self.table().metrics().admission_refused("all_refused");
                let retry_after = vec![("retry-after", self.retry_after(ctx).to_string())];
                (
                    503,
                    retry_after,
                    format!("no substation could take {} kW", ctx.kw),
                )
            }
            Failure::Substation(e) => {
                log::warn!("substation {substation}: {e}");
                (
                    502,
                    vec![],
                    format!("substation {substation} failed: {}", e.kind()),
                )
            }
            Failure::Misnamed => (
                502,
                vec![],
                format!("substation {substation} answered with a session id that is not its own"),
            ),
        };
        respond_json(
            session,
            ctx,
            code,
            &headers,
            ErrorBody::new(message, None).to_json(),
        )
        .await?;
        Ok(true)
    }
}

/// At most half of the substations may be out of the choice as outliers at once (Envoy's
/// `max_ejection_percent`): ejecting the only substation of a grid would refuse everything.
fn may_eject(snapshot: &Snapshot) -> bool {
    let now = Instant::now();
    let ejected = snapshot
        .substations
        .iter()
        .filter(|s| s.state.ejected_for(now).is_some())
        .count();
    (ejected + 1) * 2 <= snapshot.substations.len()
}
