//! The substation side of a request: the Pingora peer it is sent to, the load report its
//! answer carries, and the settling of a booking whose answer was lost.

use super::{GridProxy, RequestCtx, Route, respond_json};
use crate::attempt::is_capacity_refusal;
use crate::orphan::Orphan;
use crate::table::{Report, Snapshot, Source, SubstationState};
use gridlb_protocol::{ErrorBody, LOAD_HEADER};
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

impl GridProxy {
    pub(super) fn peer(&self, addr: SocketAddr) -> Box<HttpPeer> {
        let upstream = &self.table().config().upstream;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(upstream.connect_timeout);
        peer.options.read_timeout = Some(upstream.read_timeout);
        peer.options.write_timeout = Some(upstream.read_timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(60));
        Box::new(peer)
    }

    /// Feed the load header of an answer to the table; the report, if it was valid.
    pub(super) fn learn(&self, state: &SubstationState, header: &ResponseHeader) -> Option<Report> {
        let value = header.headers.get(LOAD_HEADER)?;
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
    /// A booking that reached a substation and whose answer was lost (not a refusal, not a
    /// connection that never opened) may be booked there: settle it (see `crate::orphan`).
    pub(super) fn settle_if_orphaned(&self, e: &Error, ctx: &RequestCtx) {
        let sent = ctx.route == Route::Charge
            && *e.esource() == ErrorSource::Upstream
            && !is_capacity_refusal(e)
            && !matches!(
                e.etype(),
                ErrorType::ConnectTimedout | ErrorType::ConnectRefused | ErrorType::ConnectNoRoute
            );
        let (Some(substation), Some(key)) = (ctx.attempts.target(), &ctx.upstream_key) else {
            return;
        };
        if !sent {
            return;
        }
        let orphan = Orphan {
            substation: Arc::clone(substation),
            key: key.clone(),
            body: ctx.body.clone(),
        };
        let config = self.table().config();
        self.orphans.settle(
            orphan,
            config.upstream.read_timeout * 2,
            Arc::clone(self.table().metrics()),
        );
    }
}

impl GridProxy {
    /// Answer a request whose proxying failed: `503` with `Retry-After` when no substation
    /// could take it, `502` when a substation failed, nothing when the client went away.
    /// Returns the status written (0: none).
    pub(super) async fn answer_failure(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> u16 {
        let (code, headers) = match e.etype() {
            _ if is_capacity_refusal(e) => (
                503,
                vec![("retry-after", self.retry_after(ctx).to_string())],
            ),
            ErrorType::HTTPStatus(code) => (*code, vec![]),
            _ if *e.esource() == ErrorSource::Downstream => (0, vec![]),
            _ if *e.esource() == ErrorSource::Upstream => (502, vec![]),
            _ => (500, vec![]),
        };
        if is_capacity_refusal(e) {
            self.table().metrics().admission_refused("all_refused");
        }
        self.settle_if_orphaned(e, ctx);
        // Pingora closes the client's connection after an error past peer selection: say so.
        session.set_keepalive(None);
        if code > 0 {
            // The log has the whole error; the client is told what failed, not where: no
            // internal address leaves gridlb.
            let substation = ctx.attempts.target().map_or("none", |s| s.name.as_str());
            let message = match code {
                503 => format!("no substation could take {} kW", ctx.kw),
                _ => format!("substation {substation} failed: {}", e.etype().as_str()),
            };
            if let Err(write) = respond_json(
                session,
                code,
                &headers,
                ErrorBody::new(message, None).to_json(),
            )
            .await
            {
                log::debug!("cannot write the error answer: {write}");
            }
        }
        code
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
