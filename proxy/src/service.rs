//! The proxy: Pingora's `ProxyHttp` for charging requests.
//!
//! Request flow, phase by phase:
//! 1. `request_filter` first applies the limits (requests in progress, header size, the
//!    client's time to send its body), then routes. `POST /charge` reads the whole body (at most 16 KiB, else
//!    `413`; Pingora keeps it in its retry buffer so a retry can resend it), learns the
//!    requested power (`x-charge-kw`, else the body's `power_kw`, else
//!    `selection.default_request_kw`) and reserves it at the best substation (a request with
//!    an `Idempotency-Key` the proxy has seen goes where that key went). When none has
//!    room the proxy answers `503` with `Retry-After` itself and sends nothing upstream.
//!    `DELETE /charge/{id}` goes to the substation named in the session id. Anything else is
//!    `404`/`405`: gridlb is never an open proxy, whatever the Host or URI says. (The
//!    HTTP side is in `request.rs`; the choice of substation is `crate::admission`.)
//! 2. `upstream_peer` sends the reserved attempt (`crate::attempt`); on a retry it reserves
//!    the next candidate, never one this request already tried.
//! 3. `upstream_response_filter` feeds the `x-substation-load` header to the load table and
//!    only then releases the attempt (see `table.rs` for why that is exact); a `201` records
//!    its session's end and a `DELETE`'s `200` forgets it (`crate::sessions`). A `503` from a
//!    substation (no capacity) becomes the typed error `attempt::REFUSED`, retried when
//!    another candidate has room (reserved there first); when none has, that `503` goes to
//!    the client as it is.
//! 4. `fail_to_connect` / `error_while_proxy` release the attempt and decide retries: a
//!    connect failure or a capacity refusal always; an error on a reused keep-alive
//!    connection (the substation went away between requests) too; nothing that may have been
//!    booked.
//! 5. `fail_to_proxy` writes a JSON error; `logging` records metrics and the access log line
//!    (`access.rs`, `crate::access_log`).
//!
//! Every request carries one `x-request-id` (`crate::request_id`): adopted or made first
//! thing in `request_filter`, sent upstream with the request, put back on every answer
//! (`response_filter` for the substation's, `respond_json` for the proxy's own).

use crate::access_log::{AccessLog, UpstreamTimer};
use crate::admission::Admission;
use crate::attempt::{Attempts, EXHAUSTED, REFUSED, is_capacity_refusal};
use crate::gate::{Gate, Pass};
use crate::header_guard::HeaderGuard;
use crate::orphan::Orphans;
use crate::request_id;
use crate::table::Table;
use async_trait::async_trait;
use gridlb_protocol::{ErrorBody, RequestId, SUBSTATION_HEADER};
use http::Method;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_error::{Error, ErrorSource, ErrorType, Result};
use pingora_http::{RequestHeader, ResponseHeader};
use pingora_proxy::{FailToProxy, ProxyHttp, ProxyWarnLogContext, Session};
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Not yet routed, or answered by the proxy itself.
    None,
    Charge,
    Release,
}

impl Route {
    fn label(self) -> &'static str {
        match self {
            Route::None => "other",
            Route::Charge => "charge",
            Route::Release => "release",
        }
    }
}

/// Per-request state.
pub struct RequestCtx {
    started: Instant,
    route: Route,
    kw: f64,
    /// Reserved, in flight, released; the substations tried.
    attempts: Attempts,
    /// The smallest `Retry-After` a refusing substation gave.
    retry_after: Option<u64>,
    /// The client's Idempotency-Key, if it sent one (affinity follows it).
    idempotency_key: Option<String>,
    /// The key every booking carries upstream: the client's, or one gridlb made.
    upstream_key: Option<String>,
    /// The booking's body (at most 16 KiB), to settle it if its answer is lost.
    body: bytes::Bytes,
    /// Held while the request is in progress (the concurrent-request cap).
    _pass: Option<Pass>,
    request_id: Option<RequestId>,
    upstream_time: UpstreamTimer,
}

mod access;
mod forward;
mod request;
mod upstream;

use request::{not_allowed, respond_json};

pub struct GridProxy {
    admission: Arc<Admission>,
    /// Settles bookings whose answer was lost.
    orphans: Arc<Orphans>,
    /// Requests in progress, capped by `limits.max_concurrent_requests`.
    gate: Arc<Gate>,
    access_log: Option<AccessLog>,
}

impl GridProxy {
    pub fn new(admission: Arc<Admission>) -> Self {
        GridProxy {
            admission,
            orphans: Arc::default(),
            gate: Arc::new(Gate::default()),
            access_log: None,
        }
    }

    /// Write an access log line per request through `log` (when the config turns it on).
    pub fn with_access_log(mut self, log: AccessLog) -> Self {
        self.access_log = Some(log);
        self
    }

    fn table(&self) -> &Table {
        self.admission.table()
    }
}

#[async_trait]
impl ProxyHttp for GridProxy {
    type CTX = RequestCtx;

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            route: Route::None,
            kw: 0.0,
            attempts: Attempts::default(),
            retry_after: None,
            upstream_key: None,
            body: bytes::Bytes::new(),
            idempotency_key: None,
            _pass: None,
            request_id: None,
            upstream_time: UpstreamTimer::default(),
        }
    }

    async fn request_filter(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(guard) = HeaderGuard::of(session.as_downstream().stream()) {
            guard.header_parsed();
        }
        ctx.request_id = Some(request_id::adopt(session.req_header_mut()));
        if self.limited(session, ctx).await? {
            return Ok(true);
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (path.as_str(), method) {
            ("/charge", Method::POST) => self.admit(session, ctx).await,
            ("/charge", _) => not_allowed(session, "POST").await,
            (p, Method::DELETE) if p.starts_with("/charge/") => {
                self.route_release(session, ctx, &p["/charge/".len()..])
                    .await
            }
            (p, _) if p.starts_with("/charge/") => not_allowed(session, "DELETE").await,
            (p, _) => {
                let err = ErrorBody::new(
                    format!(
                        "no route for {p}; gridlb serves POST /charge and DELETE /charge/{{id}}"
                    ),
                    None,
                );
                respond_json(session, 404, &[], err.to_json()).await?;
                Ok(true)
            }
        }
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<Box<HttpPeer>> {
        if !ctx.attempts.is_pending() {
            // A retry: the next candidate with room, never one already tried.
            let next = self.admission.select(ctx.kw, ctx.attempts.tried());
            ctx.attempts
                .reserve(next.ok_or_else(|| Error::new(EXHAUSTED))?);
        }
        let state = ctx
            .attempts
            .send()
            .ok_or_else(|| Error::explain(ErrorType::InternalError, "nothing to send"))?;
        if let Some(key) = &ctx.idempotency_key {
            self.admission.remember(key, &state.name);
        }
        ctx.upstream_time.sent();
        Ok(self.peer(state.addr))
    }

    async fn upstream_request_filter(
        &self,
        session: &mut Session,
        upstream: &mut RequestHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        forward::prepare(upstream, peer, &self.table().config().trusted_proxies)?;
        if let Some(key) = &ctx.upstream_key {
            upstream.insert_header(gridlb_protocol::IDEMPOTENCY_HEADER, key.as_str())?;
        }
        Ok(())
    }

    async fn upstream_response_filter(
        &self,
        session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(state) = ctx.attempts.target().cloned() else {
            return Ok(());
        };
        let learned = self.learn(&state, upstream);
        if ctx.route == Route::Charge
            && let Some(latency) = ctx.attempts.since_sent()
        {
            self.observe_latency(&state, latency);
        }
        // Released only now: the report just learnt (or a newer one) includes this request.
        ctx.attempts.release();
        let metrics = self.table().metrics();
        let status = upstream.status.as_u16();
        if ctx.route == Route::Charge && status == 503 {
            metrics.substation_refused(&state.name);
            if let Some(report) = &learned {
                self.refused_with_room(&state, report, ctx.kw);
            }
            let advised = upstream
                .headers
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
            ctx.retry_after = match (ctx.retry_after, advised) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(next) = self.admission.select(ctx.kw, ctx.attempts.tried()) {
                // Another candidate has room: try it (Pingora resends the buffered body).
                ctx.attempts.reserve(next);
                let e = Error::explain(REFUSED, format!("substation {} has no room", state.name));
                return Err(e);
            }
            // Every candidate refused: pass this refusal on as it is, with the soonest
            // Retry-After any of them gave (the connection stays usable for the client).
            metrics.admission_refused("all_refused");
            let retry_after = self.retry_after(ctx).to_string();
            upstream.insert_header(http::header::RETRY_AFTER, retry_after)?;
            upstream.insert_header(SUBSTATION_HEADER, state.name.as_str())?;
            return Ok(());
        }
        if ctx.route == Route::Charge && status == 201 {
            state.routed.fetch_add(1, Relaxed);
            state.accepted();
            if let Some((id, ends)) = crate::sessions::accepted(&upstream.headers, Instant::now()) {
                let power =
                    gridlb_protocol::Power::from_kw(ctx.kw).unwrap_or(gridlb_protocol::Power::ZERO);
                state.sessions.record(&id, power, ends, Instant::now());
            }
        }
        if ctx.route == Route::Release && status == 200 {
            let path = session.req_header().uri.path();
            state.sessions.forget(path.trim_start_matches("/charge/"));
        }
        upstream.insert_header(SUBSTATION_HEADER, state.name.as_str())?;
        Ok(())
    }

    async fn response_filter(
        &self,
        _session: &mut Session,
        upstream: &mut ResponseHeader,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        ctx.upstream_time.answered();
        if let Some(id) = &ctx.request_id {
            request_id::stamp(upstream, id);
        }
        Ok(())
    }

    fn fail_to_connect(
        &self,
        _session: &mut Session,
        _peer: &HttpPeer,
        ctx: &mut RequestCtx,
        mut e: Box<Error>,
    ) -> Box<Error> {
        ctx.attempts.release();
        if ctx.route == Route::Charge {
            // Nothing reached the substation: safe to try the next one.
            e.set_retry(true);
            self.table().metrics().retry("connect");
        }
        e
    }

    fn error_while_proxy(
        &self,
        peer: &HttpPeer,
        session: &mut Session,
        e: Box<Error>,
        ctx: &mut RequestCtx,
        client_reused: bool,
    ) -> Box<Error> {
        ctx.attempts.release();
        if ctx.route == Route::Charge
            && *e.etype() == ErrorType::ReadTimedout
            && let (Some(state), Some(waited)) = (ctx.attempts.target(), ctx.attempts.since_sent())
        {
            self.observe_latency(&Arc::clone(state), waited);
        }
        let mut e = e.more_context(format!("upstream {peer}"));
        let replayable = ctx.route == Route::Charge && !session.as_ref().retry_buffer_truncated();
        let metrics = self.table().metrics();
        if *e.etype() == REFUSED {
            // The next candidate is already reserved (`upstream_response_filter`).
            e.set_retry(replayable);
            if replayable {
                metrics.retry("refused");
            }
        } else if replayable && client_reused {
            // A keep-alive connection the substation had closed: the request was not read.
            e.retry.decide_reuse(client_reused);
            if e.retry() {
                metrics.retry("stale_connection");
            }
        } else {
            e.set_retry(false);
        }
        e
    }

    /// A capacity refusal moving on to the next candidate is normal operation (and counted
    /// in `gridlb_retries_total`), not a warning.
    fn suppress_proxy_warn_log(
        &self,
        _session: &Session,
        ctx: &RequestCtx,
        error: &Error,
        _context: ProxyWarnLogContext,
    ) -> bool {
        ctx.route == Route::Charge && is_capacity_refusal(error)
    }

    /// A grid with no room is not an error of the proxy's, nor is a client that went away
    /// (logged at debug level instead).
    fn suppress_error_log(&self, _session: &Session, ctx: &RequestCtx, error: &Error) -> bool {
        if *error.esource() == ErrorSource::Downstream {
            log::debug!("client went away: {error}");
            return true;
        }
        ctx.route == Route::Charge && is_capacity_refusal(error)
    }

    async fn fail_to_proxy(
        &self,
        session: &mut Session,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = self.answer_failure(session, e, ctx).await;
        FailToProxy {
            error_code: code,
            can_reuse_downstream: false,
        }
    }

    async fn logging(&self, session: &mut Session, _e: Option<&Error>, ctx: &mut RequestCtx) {
        if let Some(guard) = HeaderGuard::of(session.as_downstream().stream()) {
            guard.request_done();
        }
        let status = session
            .response_written()
            .map(|r| r.status.as_u16())
            .unwrap_or(0);
        // A substation removed from the config keeps no series (its requests in flight
        // when it left count under "none").
        let substation = match (ctx.attempts.target(), status) {
            (Some(state), 200..=299 | 400..=499) if !state.is_removed() => state.name.as_str(),
            _ => "none",
        };
        self.table().metrics().request(
            substation,
            status,
            ctx.route.label(),
            ctx.started.elapsed(),
        );
        self.access(session, ctx, status);
    }
}
