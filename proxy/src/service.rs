//! The proxy: the charging requests of a client connection. Pingora runs the listeners, the
//! client's HTTP/1 session and the graceful upgrade; gridlb serves a connection's requests
//! one after another (`serve.rs`) and answers each itself in `GridProxy::respond`, doing the
//! exchange with the substation on its own connections (why: `relay.rs`).
//!
//! Request flow:
//! 1. the limits (requests in progress, header size, `Host`, keep-alive), then the route.
//!    `POST /charge` reads the whole body (at most 16 KiB, else `413`), learns the
//!    requested power (`x-charge-kw`, else the body's `power_kw`, else
//!    `selection.default_request_kw`) and reserves it at the best substation (a request with
//!    an `Idempotency-Key` the proxy has seen goes where that key went). When none has
//!    room the proxy answers `503` with `Retry-After` itself and sends nothing upstream.
//!    `DELETE /charge/{id}` goes to the substation named in the session id. Anything else is
//!    `404`/`405`: gridlb is never an open proxy, whatever the Host or URI says. (The
//!    HTTP side is in `request.rs`; the choice of substation is `crate::admission`.)
//! 2. the exchange, attempt by attempt (`relay.rs`, typed attempts in `crate::attempt`): the
//!    answer's load report feeds the table before the attempt's power is released; a `503`
//!    moves on to the next candidate with room; a failed connect too; a booking whose answer
//!    is lost is settled (`crate::orphan`).
//! 3. the answer relayed to the client (or the proxy's own `502`/`503`, `upstream.rs`);
//!    `log_request` records metrics and the access log line (`access.rs`, `crate::access_log`).
//!
//! Every request carries one `x-request-id` (`crate::request_id`): adopted or made first
//! thing in `respond`, sent upstream with the request, put back on every answer.

use crate::access_log::{AccessLog, UpstreamTimer};
use crate::admission::Admission;
use crate::attempt::Attempts;
use crate::call::Caller;
use crate::gate::{Gate, Pass};
use crate::header_guard::HeaderGuard;
use crate::orphan::Orphans;
use crate::request_id;
use crate::table::Table;
use gridlb_protocol::{ErrorBody, RequestId};
use http::Method;
use pingora_error::Result;
use std::sync::Arc;
use tokio::time::Instant;

/// A client's HTTP/1 session (Pingora's): the request read, the answer written.
pub(crate) type Session = pingora_core::protocols::http::ServerSession;

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
mod relay;
mod request;
mod serve;
mod upstream;

use request::{not_allowed, respond_json};

pub struct GridProxy {
    admission: Arc<Admission>,
    /// Keep-alive connections to the substations.
    caller: Arc<Caller>,
    /// Settles bookings whose answer was lost.
    orphans: Arc<Orphans>,
    /// Requests in progress, capped by `limits.max_concurrent_requests`.
    gate: Arc<Gate>,
    access_log: Option<AccessLog>,
    /// Set when the listener has stopped: kept-alive connections waiting for their next
    /// request close (`serve.rs`).
    closing: tokio::sync::watch::Sender<bool>,
}

impl GridProxy {
    pub fn new(admission: Arc<Admission>) -> Self {
        let caller = Arc::new(Caller::default());
        GridProxy {
            admission,
            orphans: Arc::new(Orphans::new(Arc::clone(&caller))),
            caller,
            gate: Arc::new(Gate::default()),
            access_log: None,
            closing: tokio::sync::watch::Sender::new(false),
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

impl GridProxy {
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

    /// Answer one request whose header has been read. `Ok(true)`: answered; an error: nothing
    /// or only part of an answer was written (`answer_error`, `serve.rs`).
    async fn respond(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        if let Some(guard) = HeaderGuard::of(session.stream()) {
            guard.header_parsed();
        }
        ctx.request_id = Some(request_id::adopt(session.req_header()));
        if self.limited(session, ctx).await? {
            return Ok(true);
        }
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (path.as_str(), method) {
            ("/charge", Method::POST) => match self.admit(session, ctx).await? {
                true => Ok(true),
                false => self.forward_charge(session, ctx).await,
            },
            ("/charge", _) => not_allowed(session, ctx, "POST").await,
            (p, Method::DELETE) if p.starts_with("/charge/") => {
                let id = &p["/charge/".len()..];
                match self.route_release(session, ctx, id).await? {
                    true => Ok(true),
                    false => self.forward_release(session, ctx, id).await,
                }
            }
            (p, _) if p.starts_with("/charge/") => not_allowed(session, ctx, "DELETE").await,
            (p, _) => {
                let err = ErrorBody::new(
                    format!(
                        "no route for {p}; gridlb serves POST /charge and DELETE /charge/{{id}}"
                    ),
                    None,
                );
                respond_json(session, ctx, 404, &[], err.to_json()).await?;
                Ok(true)
            }
        }
    }

    /// Metrics and the access log line of a request that is over.
    fn log_request(&self, session: &Session, ctx: &RequestCtx) {
        if let Some(guard) = HeaderGuard::of(session.stream()) {
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
