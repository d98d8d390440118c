//! The HTTP side of a request before anything is sent upstream.
//!
//! The limits (requests in progress, header size, the client's time to send its body), the
//! body (read whole, at most 16 KiB, kept by Pingora for retries), the requested power and the
//! Idempotency-Key; then `crate::admission` chooses the first substation and reserves its
//! power. When nothing has room the proxy answers `503` itself. Also the routing of
//! `DELETE /charge/{id}` and the JSON answers the proxy writes on its own.

use super::{GridProxy, RequestCtx, Route};
use bytes::{Bytes, BytesMut};
use gridlb_protocol::{
    CHARGE_KW_HEADER, ChargeRequest, ErrorBody, IDEMPOTENCY_HEADER, IdempotencyKey,
    MAX_CHARGE_BODY, SessionId, parse_charge_kw,
};
use pingora_error::{ErrorType, Result};
use pingora_http::ResponseHeader;
use pingora_proxy::Session;
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
            return too_large(session).await;
        }
        session.as_mut().enable_retry_buffering();
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
                    respond_json(session, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
                Ok(Err(_)) | Err(_) => {
                    session.set_keepalive(None);
                    let err = ErrorBody::new("the request body did not arrive in time", None);
                    respond_json(session, 408, &[], err.to_json()).await?;
                    return Ok(true);
                }
            };
            if body.len() + chunk.len() > MAX_CHARGE_BODY {
                return too_large(session).await;
            }
            body.extend_from_slice(&chunk);
        }
        ctx.kw = match session.req_header().headers.get(CHARGE_KW_HEADER) {
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
                    respond_json(session, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
            },
            None => ChargeRequest::peek_power(&body)
                .unwrap_or(self.table().config().selection.default_request_kw),
        };
        if let Some(value) = session.req_header().headers.get(IDEMPOTENCY_HEADER) {
            let parsed = value
                .to_str()
                .map_err(|_| "is not ASCII".to_string())
                .and_then(|k| IdempotencyKey::parse(k).map_err(|e| e.to_string()));
            match parsed {
                Ok(key) => ctx.idempotency_key = Some(key.as_str().to_string()),
                Err(why) => {
                    let err = ErrorBody::new(
                        format!("{IDEMPOTENCY_HEADER}: {why}"),
                        Some(IDEMPOTENCY_HEADER.into()),
                    );
                    respond_json(session, 400, &[], err.to_json()).await?;
                    return Ok(true);
                }
            }
        }
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
                respond_json(session, 503, &[("retry-after", retry_after)], err.to_json()).await?;
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
                    503,
                    &[("retry-after", "1".to_string())],
                    err.to_json(),
                )
                .await?;
                return Ok(true);
            }
        }
        let head = session.req_header();
        let header_bytes: usize = head.uri.to_string().len()
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
            respond_json(session, 431, &[], err.to_json()).await?;
            return Ok(true);
        }
        session
            .as_mut()
            .set_read_timeout(Some(limits.client_read_timeout));
        // Without this Pingora waits for a kept-alive connection's next request for ever.
        session.set_keepalive(Some(KEEPALIVE_IDLE_SECS));
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
                respond_json(session, 404, &[], err.to_json()).await?;
                Ok(true)
            }
        }
    }
}

pub(super) async fn respond_json(
    session: &mut Session,
    status: u16,
    headers: &[(&'static str, String)],
    body: Vec<u8>,
) -> Result<()> {
    // An answer before the request body was read leaves it on the connection: say it closes.
    if !session.as_mut().is_body_done() {
        session.set_keepalive(None);
    }
    let mut resp = ResponseHeader::build(status, Some(headers.len() + 2))?;
    resp.insert_header("content-type", "application/json")?;
    resp.insert_header("content-length", body.len().to_string())?;
    for (name, value) in headers {
        resp.insert_header(*name, value.as_str())?;
    }
    session.write_response_header(Box::new(resp), false).await?;
    session
        .write_response_body(Some(Bytes::from(body)), true)
        .await
}

async fn too_large(session: &mut Session) -> Result<bool> {
    let err = ErrorBody::new(format!("body is larger than {MAX_CHARGE_BODY} bytes"), None);
    // The rest of the body is not read: this connection cannot be reused.
    session.set_keepalive(None);
    respond_json(session, 413, &[], err.to_json()).await?;
    Ok(true)
}

pub(super) async fn not_allowed(session: &mut Session, allow: &'static str) -> Result<bool> {
    let err = ErrorBody::new(format!("method not allowed; use {allow}"), None);
    respond_json(session, 405, &[("allow", allow.to_string())], err.to_json()).await?;
    Ok(true)
}
