//! The HTTP side of a request before anything is sent upstream.
//!
//! The limits (requests in progress, header size, the client's time to send its body), the
//! body (read whole, at most 16 KiB, sent with every attempt), the requested power and the
//! Idempotency-Key; then `crate::admission` chooses the first substation and reserves its
//! power. When nothing has room the proxy answers `503` itself. Also the routing of
//! `DELETE /charge/{id}` and the JSON answers the proxy writes on its own.

use super::Session;
use super::{GridProxy, RequestCtx, Route};
use crate::names;
use bytes::{Bytes, BytesMut};
use gridlb_protocol::{
    CHARGE_KW_HEADER, ChargeRequest, ErrorBody, IDEMPOTENCY_HEADER, IdempotencyKey,
    MAX_CHARGE_BODY, SessionId, parse_charge_kw,
};
use pingora_error::{ErrorType, Result};
use pingora_http::ResponseHeader;
use tokio::time::Instant;

/// How long a kept-alive client connection may sit idle between two requests.
const KEEPALIVE_IDLE_SECS: u64 = 60;

impl GridProxy {
    /// `Retry-After` for a refusal: what a substation said, else when known sessions free
    /// enough room (`crate::retry_after`), else one probe interval; within 1..=3600 s.
    pub(super) fn retry_after(&self, ctx: &RequestCtx) -> u64 {
        let probe_s = self.table().config().probe.interval.as_secs_f64().ceil() as u64;
        let expected =
            crate::retry_after::expected(&self.table().snapshot(), ctx.kw, Instant::now());
        ctx.retry_after
            .unwrap_or_else(|| crate::retry_after::seconds(expected, probe_s))
            .clamp(crate::retry_after::MIN_S, crate::retry_after::MAX_S)
    }

    pub(super) async fn admit(&self, session: &mut Session, ctx: &mut RequestCtx) -> Result<bool> {
        ctx.route = Route::Charge;
        let declared = session
            .req_header()
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
        if declared.is_some_and(|n| n > MAX_CHARGE_BODY) {
            return too_large(session, ctx).await;
        }
        let mut body = BytesMut::new();
        // The whole body within the limit, not each read: a client that trickles a byte at a
        // time must not hold the request for ever.
        let deadline =
            tokio::time::Instant::now() + self.table().config().limits.client_read_timeout;
        loop {
            let read = tokio::time::timeout_at(deadline, session.read_request_body()).await;
            let chunk = match read {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(Ok(None)) => break,
                Ok(Err(e)) if !matches!(e.etype(), ErrorType::ReadTimedout) => {
                    // A broken body (a bad chunk size, say) is the client's error.
                    session.set_keepalive(None);
                    let err = ErrorBody::new(
                        format!("the request body is malformed: {}", e.etype().as_str()),
                        None,
                    );
                    respond_json(session, ctx, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
                Ok(Err(_)) | Err(_) => {
                    session.set_keepalive(None);
                    let err = ErrorBody::new("the request body did not arrive in time", None);
                    respond_json(session, ctx, 408, &[], err.to_json()).await?;
                    return Ok(true);
                }
            };
            if body.len() + chunk.len() > MAX_CHARGE_BODY {
                return too_large(session, ctx).await;
            }
            body.extend_from_slice(&chunk);
        }
        let peek = ChargeRequest::peek(&body);
        ctx.kw = match session.req_header().headers.get(&names::CHARGE_KW) {
            Some(value) => match value
                .to_str()
                .map_err(|_| ())
                .and_then(|v| parse_charge_kw(v).map_err(|_| ()))
            {
                Ok(kw) => kw,
                Err(()) => {
                    let err = ErrorBody::new(
                        format!(
                            "{CHARGE_KW_HEADER} must be a finite number of kW greater than zero"
                        ),
                        Some(CHARGE_KW_HEADER.into()),
                    );
                    respond_json(session, ctx, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
            },
            None => peek
                .power_kw
                .unwrap_or(self.table().config().selection.default_request_kw),
        };
        let limits = &self.table().config().limits;
        let duration = peek.duration_s.unwrap_or(0.0);
        let over = ChargeRequest {
            vehicle_id: String::new(),
            power_kw: ctx.kw,
            duration_s: duration,
        }
        .check_limits(limits.max_session_kw, limits.max_duration_s);
        if let Err(e) = over {
            respond_json(session, ctx, 400, &[], e.body().to_json()).await?;
            return Ok(true);
        }
        // The header is a promise about the body: gridlb reserves what the header says, the
        // substation books what the body says, so they must agree.
        if let Some(body_kw) = peek.power_kw
            && (body_kw - ctx.kw).abs() > 1e-9 * body_kw.max(1.0)
        {
            let err = ErrorBody::new(
                format!(
                    "{CHARGE_KW_HEADER} ({}) disagrees with the body's power_kw ({body_kw})",
                    ctx.kw
                ),
                Some(CHARGE_KW_HEADER.into()),
            );
            respond_json(session, ctx, 400, &[], err.to_json()).await?;
            return Ok(true);
        }
        if let Some(value) = session.req_header().headers.get(&names::IDEMPOTENCY) {
            let parsed = value
                .to_str()
                .map_err(|_| "is not ASCII".to_string())
                .and_then(|k| IdempotencyKey::parse(k).map_err(|e| e.to_string()));
            match parsed {
                Ok(key) => ctx.idempotency_key = Some(key.into_string()),
                Err(why) => {
                    let err = ErrorBody::new(
                        format!("{IDEMPOTENCY_HEADER}: {why}"),
                        Some(IDEMPOTENCY_HEADER.into()),
                    );
                    respond_json(session, ctx, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
            }
        }
        ctx.upstream_key = match &ctx.idempotency_key {
            Some(key) => Some(key.clone()),
            None => IdempotencyKey::generate()
                .map_err(|e| log::warn!("booking without an idempotency key: {e}"))
                .ok()
                .map(IdempotencyKey::into_string),
        };
        ctx.body = body.freeze();
        let chosen = self
            .admission
            .admit(ctx.kw, ctx.idempotency_key.as_deref())
            .await;
        match chosen {
            Some(reservation) => {
                ctx.attempts.reserve(reservation);
                Ok(false)
            }
            None => {
                self.table().metrics().admission_refused("grid_full");
                let err = ErrorBody::new(
                    format!("no healthy substation has room for {} kW", ctx.kw),
                    None,
                );
                let retry_after = self.retry_after(ctx).to_string();
                respond_json(
                    session,
                    ctx,
                    503,
                    &[("retry-after", retry_after)],
                    err.to_json(),
                )
                .await?;
                Ok(true)
            }
        }
    }

    /// The limits: requests in progress, header size, and the client's time to send its body.
    /// True when the request was answered here.
    pub(super) async fn limited(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> Result<bool> {
        let limits = self.table().config().limits.clone();
        match self.gate.enter(limits.max_concurrent_requests) {
            Some(pass) => ctx._pass = Some(pass),
            None => {
                self.table().metrics().admission_refused("busy");
                let err = ErrorBody::new("too many requests in progress; try again shortly", None);
                respond_json(
                    session,
                    ctx,
                    503,
                    &[("retry-after", "1".to_string())],
                    err.to_json(),
                )
                .await?;
                return Ok(true);
            }
        }
        let head = session.req_header();
        if head.version == http::Version::HTTP_11 && head.headers.get(http::header::HOST).is_none()
        {
            session.set_keepalive(None);
            let err = ErrorBody::new("an HTTP/1.1 request needs a Host header", None);
            respond_json(session, ctx, 400, &[], err.to_json()).await?;
            return Ok(true);
        }
        let head = session.req_header();
        let header_bytes: usize = head.raw_path().len()
            + head
                .headers
                .iter()
                .map(|(name, value)| name.as_str().len() + value.len() + 4)
                .sum::<usize>();
        if header_bytes > limits.max_header_bytes {
            session.set_keepalive(None);
            let err = ErrorBody::new(
                format!(
                    "request headers are larger than {} bytes",
                    limits.max_header_bytes
                ),
                None,
            );
            respond_json(session, ctx, 431, &[], err.to_json()).await?;
            return Ok(true);
        }
        session.set_read_timeout(Some(limits.client_read_timeout));
        // Keep the connection only when the client asked to (HTTP/1.1 unless it said close,
        // HTTP/1.0 only when it said keep-alive), and then not for ever; never once the
        // server is shutting down (`serve.rs` has then turned keep-alive off already).
        // Requests pipelined on one connection are answered one after the other, in order
        // (RFC 9112 §9.3.2), not dropped with the connection.
        session.set_pipelining_enabled(true);
        let keep = wants_keepalive(session.req_header()) && session.get_keepalive().is_some();
        session.set_keepalive(keep.then_some(KEEPALIVE_IDLE_SECS));
        Ok(false)
    }

    /// `DELETE /charge/{id}`: to the substation the session id names (`SessionId::owner`).
    pub(super) async fn route_release(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
        id: &str,
    ) -> Result<bool> {
        ctx.route = Route::Release;
        let owner = SessionId::owner(id);
        let snapshot = self.table().snapshot();
        match owner.and_then(|name| snapshot.find(name)) {
            Some(sub) => {
                // No power to reserve: the attempt only names where it goes.
                ctx.attempts.reserve(sub.state.reserve_nothing());
                Ok(false)
            }
            None => {
                let err = ErrorBody::new(format!("no substation owns session {id:?}"), None);
                respond_json(session, ctx, 404, &[], err.to_json()).await?;
                Ok(true)
            }
        }
    }
}

/// Whether the client asked for its connection to be kept after this request.
fn wants_keepalive(head: &pingora_http::RequestHeader) -> bool {
    let says = |token: &str| {
        head.headers
            .get_all(http::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    };
    match head.version {
        http::Version::HTTP_11 => !says("close"),
        _ => says("keep-alive"),
    }
}

pub(super) async fn respond_json(
    session: &mut Session,
    ctx: &RequestCtx,
    status: u16,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<()> {
    // An answer before the request body was read leaves it on the connection: say it closes.
    if !session.is_body_done() {
        session.set_keepalive(None);
    }
    let id = ctx.request_id.as_ref();
    let body = match id {
        Some(id) => crate::request_id::stamp_error_body(body, id),
        None => body,
    };
    let mut resp = ResponseHeader::build_no_case(status, Some(headers.len() + 3))?;
    if let Some(id) = id {
        crate::request_id::stamp(&mut resp, id);
    }
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp)).await?;
    session.write_response_body(Bytes::from(body), true).await
}

async fn too_large(session: &mut Session, ctx: &RequestCtx) -> Result<bool> {
    let err = ErrorBody::new(format!("body is larger than {MAX_CHARGE_BODY} bytes"), None);
    // The rest of the body is not read: this connection cannot be reused.
    session.set_keepalive(None);
    respond_json(session, ctx, 413, &[], err.to_json()).await?;
    Ok(true)
}

pub(super) async fn not_allowed(
    session: &mut Session,
    ctx: &RequestCtx,
    allow: &'static str,
) -> Result<bool> {
    let err = ErrorBody::new(format!("method not allowed; use {allow}"), None);
    respond_json(
        session,
        ctx,
        405,
        &[("allow", allow.to_string())],
        err.to_json(),
    )
    .await?;
    Ok(true)
}
