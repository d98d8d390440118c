//! The exchange with the substation and the answer relayed to the client.
//!
//! gridlb does the upstream exchange itself (`crate::call`): the request is whole in memory
//! by now (`request.rs` read the body to learn its power), so it goes out in one write on a
//! pooled connection, and the answer (a few hundred bytes) comes back whole before anything is
//! written to the client. That is what lets the proxy look at an answer before the client
//! does: a `503` moves on to the next candidate, and a `201` whose session id another
//! substation owns is never passed on.
//!
//! For `POST /charge`, attempt by attempt:
//! - the answer's `x-substation-load` goes to the load table, and only then is the attempt's
//!   power released (the report includes it; see `table.rs`);
//! - `503` (no room there): on to the next candidate with room, reserved first; when none is
//!   left, that `503` goes to the client with the soonest `Retry-After` any of them gave;
//! - `201`: its session is recorded (`crate::sessions`), unless its id does not start with the
//!   answering substation's name: then the client gets `502` and the booking is cancelled;
//! - no connection: on to the next candidate (nothing was sent);
//! - anything else after the request left (no answer in time, a broken or malformed answer):
//!   `502`, and the booking, which may exist, is settled (`crate::orphan`).

use super::Session;
use super::upstream::Failure;
use super::{GridProxy, RequestCtx, forward};
use crate::call::{Answer, CallError, Request};
use crate::table::SubstationState;
use gridlb_protocol::{IDEMPOTENCY_HEADER, REQUEST_ID_HEADER, SUBSTATION_HEADER, SessionId};
use pingora_error::Result;
use pingora_http::ResponseHeader;
use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use tokio::time::Instant;

/// The largest answer body relayed (a charge answer is a few hundred bytes).
const MAX_ANSWER: usize = 64 * 1024;

/// What one answer to a booking leads to.
enum Next {
    /// Another candidate is reserved: send there.
    Retry,
    /// Pass this answer on.
    Relay(Answer),
    Fail(Failure),
}

impl GridProxy {
    /// Send a booking whose first attempt is reserved; answer the client.
    pub(super) async fn forward_charge(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let metrics = Arc::clone(self.table().metrics());
        loop {
            let Some(state) = ctx.attempts.send() else {
                return self.fail(session, ctx, Failure::Exhausted).await;
            };
            if let Some(key) = &ctx.idempotency_key {
                self.admission.remember(key, &state.name);
            }
            let result = self.exchange(session, ctx, &state, "POST").await;
            let next = match result {
                Ok(answer) => self.charge_answered(&state, answer, ctx),
                Err(e) => {
                    ctx.attempts.release();
                    if !e.sent() {
                        // Nothing reached the substation: safe to try the next one.
                        metrics.retry("connect");
                        match self.admission.select(ctx.kw, ctx.attempts.tried()) {
                            Some(next) => {
                                ctx.attempts.reserve(next);
                                Next::Retry
                            }
                            None => Next::Fail(Failure::Exhausted),
                        }
                    } else {
                        if let (CallError::Timeout(_), Some(waited)) =
                            (&e, ctx.attempts.since_sent())
                        {
                            self.observe_latency(&state, waited);
                        }
                        self.settle_orphan(ctx, &state);
                        Next::Fail(Failure::Substation(e))
                    }
                }
            };
            match next {
                Next::Retry => continue,
                Next::Relay(answer) => return self.relay(session, ctx, &state, answer).await,
                Next::Fail(failure) => return self.fail(session, ctx, failure).await,
            }
        }
    }

    /// Send `DELETE /charge/{id}` to the substation reserved (by name) for it.
    pub(super) async fn forward_release(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<bool> {
        let Some(state) = ctx.attempts.send() else {
            return self.fail(session, ctx, Failure::Exhausted).await;
        };
        let result = self.exchange(session, ctx, &state, "DELETE").await;
        ctx.attempts.release();
        match result {
            Ok(answer) => {
                self.learn(&state, &answer.headers);
                if answer.status == 200 {
                    state.forget_session(id);
                }
                self.relay(session, ctx, &state, answer).await
            }
            Err(e) => self.fail(session, ctx, Failure::Substation(e)).await,
        }
    }

    /// One exchange with `state` carrying the client's request (its headers made fit for the
    /// hop, the body read whole), timed for the access log.
    async fn exchange(
        &self,
        session: &Session,
        ctx: &mut RequestCtx,
        state: &SubstationState,
        method: &str,
    ) -> std::result::Result<Answer, CallError> {
        let config = self.table().config();
        let client = session.req_header();
        let peer = session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip());
        let (mut headers, forwarded_for) = forward::headers(client, peer, &config.trusted_proxies);
        if let Some(xff) = &forwarded_for {
            headers.push((forward::FORWARDED_FOR, xff.as_bytes()));
        }
        if let Some(id) = &ctx.request_id {
            headers.push((REQUEST_ID_HEADER, id.as_str().as_bytes()));
        }
        if let Some(key) = &ctx.upstream_key {
            headers.retain(|(name, _)| *name != IDEMPOTENCY_HEADER);
            headers.push((IDEMPOTENCY_HEADER, key.as_bytes()));
        }
        let path = client.uri.path_and_query().map_or("/", |p| p.as_str());
        let request = Request {
            method,
            path,
            headers: &headers,
            body: &ctx.body,
            connect_timeout: config.upstream.connect_timeout,
            timeout: config.upstream.read_timeout,
            max_body: MAX_ANSWER,
        };
        ctx.upstream_time.sent();
        let answer = self.caller.call(state.addr, &request).await?;
        ctx.upstream_time.answered();
        if answer.reconnected {
            self.table().metrics().retry("stale_connection");
        }
        Ok(answer)
    }

    /// What a booking's answer from `state` leads to.
    fn charge_answered(
        &self,
        state: &Arc<SubstationState>,
        mut answer: Answer,
        ctx: &mut RequestCtx,
    ) -> Next {
        let learned = self.learn(state, &answer.headers);
        if let Some(latency) = ctx.attempts.since_sent() {
            self.observe_latency(state, latency);
        }
        // Released only now: the report just learnt (or a newer one) includes this request.
        ctx.attempts.release();
        let metrics = self.table().metrics();
        match answer.status {
            503 => {
                metrics.substation_refused(&state.name);
                if let Some(report) = &learned {
                    self.refused_with_room(state, report, ctx.kw);
                }
                let advised = answer
                    .headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
                ctx.retry_after = match (ctx.retry_after, advised) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                };
                if let Some(next) = self.admission.select(ctx.kw, ctx.attempts.tried()) {
                    ctx.attempts.reserve(next);
                    metrics.retry("refused");
                    return Next::Retry;
                }
                // Every candidate refused: this refusal goes to the client, with the soonest
                // Retry-After any of them gave.
                metrics.admission_refused("all_refused");
                let retry_after = self.retry_after(ctx).to_string();
                if let Ok(value) = http::HeaderValue::from_str(&retry_after) {
                    answer.headers.insert(http::header::RETRY_AFTER, value);
                }
                Next::Relay(answer)
            }
            201 => match booked_session(&answer, &state.name) {
                Ok(id) => {
                    state.routed.fetch_add(1, Relaxed);
                    state.accepted();
                    if let Some((_, ends)) =
                        crate::sessions::accepted(&answer.headers, Instant::now())
                    {
                        let power = gridlb_protocol::Power::from_kw(ctx.kw)
                            .unwrap_or(gridlb_protocol::Power::ZERO);
                        state.record_session(&id, power, ends, Instant::now());
                    }
                    Next::Relay(answer)
                }
                Err(id) => {
                    log::warn!(
                        "substation {} answered a booking with session id {id:?}, which is not its own: not passed on, cancelled",
                        state.name
                    );
                    if let Some(id) = id {
                        self.cancel_misnamed(ctx, state, id.into_owned());
                    }
                    Next::Fail(Failure::Misnamed)
                }
            },
            _ => Next::Relay(answer),
        }
    }

    /// Write `answer` to the client: its headers but this hop's, the substation's name, the
    /// request id.
    async fn relay(
        &self,
        session: &mut Session,
        ctx: &RequestCtx,
        state: &SubstationState,
        answer: Answer,
    ) -> Result<bool> {
        let head = client_head(answer.status, answer.headers, answer.body.len(), state, ctx)?;
        if !session.is_body_done() {
            // The client's body was not read (a release with one): the connection cannot
            // carry another request.
            session.set_keepalive(None);
        }
        let empty = answer.body.is_empty();
        session.write_response_header(Box::new(head)).await?;
        if !empty {
            session.write_response_body(answer.body, true).await?;
        }
        Ok(true)
    }
}

/// The answer's head as the client gets it: the answer's own header map, in its order, less
/// the hop-by-hop headers, with the answering substation's name, the body's length and the
/// request id set. The map is handed on as it is, no copy: only an answer that carries a
/// hop-by-hop header other than `content-length` (which is replaced in place) is rebuilt
/// without it. No case map: names go out as the substation's parse made them (lowercase, or
/// titled for the standard ones).
fn client_head(
    status: u16,
    mut headers: http::HeaderMap,
    body_len: usize,
    state: &SubstationState,
    ctx: &RequestCtx,
) -> Result<ResponseHeader> {
    use http::header::{CONTENT_LENGTH, HeaderName, HeaderValue};
    const SUBSTATION: HeaderName = HeaderName::from_static(SUBSTATION_HEADER);
    if headers
        .keys()
        .any(|name| name != CONTENT_LENGTH && is_hop_by_hop(name))
    {
        headers = without_hop_by_hop(headers);
    }
    let invalid = |what: &str| {
        pingora_error::Error::explain(
            pingora_error::ErrorType::InternalError,
            format!("{what} is not a valid header value"),
        )
    };
    let name = HeaderValue::from_str(&state.name).map_err(|_| invalid("the substation's name"))?;
    headers.insert(SUBSTATION, name);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(body_len));
    if let Some(id) = &ctx.request_id {
        crate::request_id::stamp_headers(&mut headers, id);
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = http::StatusCode::from_u16(status).map_err(|_| invalid("the status"))?;
    parts.headers = headers;
    Ok(ResponseHeader::from(parts))
}

/// `headers` in their order, less the hop-by-hop ones.
fn without_hop_by_hop(headers: http::HeaderMap) -> http::HeaderMap {
    let mut kept = http::HeaderMap::with_capacity(headers.len());
    let mut name = None;
    for (next, value) in headers {
        // A `None` name: another value of the header named last.
        if next.is_some() {
            name = next;
        }
        if let Some(name) = name.as_ref().filter(|n| !is_hop_by_hop(n)) {
            kept.append(name.clone(), value);
        }
    }
    kept
}

/// The id of the session a `201` booked, when the answering substation `name` owns it (and
/// `Location`, when given, names the same); else what it gave (`None`: no id at all).
fn booked_session<'a>(
    answer: &'a Answer,
    name: &str,
) -> std::result::Result<Cow<'a, str>, Option<Cow<'a, str>>> {
    #[derive(serde::Deserialize)]
    struct Booked<'a> {
        // Borrowed from the body unless it has escapes.
        #[serde(borrow)]
        session_id: Cow<'a, str>,
    }
    let id = serde_json::from_slice::<Booked>(&answer.body)
        .map_err(|_| None)?
        .session_id;
    let located = answer
        .headers
        .get(http::header::LOCATION)
        .map(|v| v.to_str().ok().and_then(|l| l.strip_prefix("/charge/")));
    let agrees = match located {
        None => true,
        Some(location) => location == Some(&*id),
    };
    if agrees && SessionId::owner(&id) == Some(name) {
        Ok(id)
    } else {
        Err(Some(id))
    }
}

/// Headers of the substation's answer that describe its hop, not the answer.
fn is_hop_by_hop(name: &http::HeaderName) -> bool {
    use http::header::*;
    [
        CONNECTION,
        TRANSFER_ENCODING,
        CONTENT_LENGTH,
        TE,
        TRAILER,
        UPGRADE,
        PROXY_AUTHENTICATE,
    ]
    .contains(name)
        || name.as_str() == "keep-alive"
}
