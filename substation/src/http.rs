//! Routing and answers: turns an HTTP request into a call on the [`Substation`] and its
//! result into the answer fixed by the wire contract (design doc, "Wire contract").
//!
//! | route | methods | answers |
//! | --- | --- | --- |
//! | `/charge` | POST | 201, 400, 413, 408, 503 + `Retry-After` |
//! | `/charge/{session_id}` | DELETE | 200, 404 |
//! | `/load`, `/metrics`, `/healthz` | GET, HEAD | 200 |
//!
//! Any other path is `404`, a known path with another method `405` with `Allow`. Error bodies
//! are [`ErrorBody`] JSON. Every `/charge…` answer carries `x-substation-load`, taken from
//! the same lock as the booking or delete it reports on. A `POST /charge` body is refused up
//! front when its `Content-Length` is over [`MAX_CHARGE_BODY`] and is read through
//! `http_body_util::Limited` otherwise, so no more than that is ever buffered.
//!
//! Every `/charge…` answer also carries ORCA's `endpoint-load-metrics` (text form,
//! [`gridlb_protocol::OrcaLoadReport`]). A `201` states when the session ends (`ends_at`,
//! `remaining_s` in the body; `x-session-remaining-s` as a header) and also carries
//! `Location: /charge/{session_id}`; an idempotent replay (same status,
//! same body as the first answer) adds `idempotent-replayed: true`.
//!
//! [`handle`] is generic over the body type so tests can call it without a socket.

use crate::grid::{Booking, Substation};
use bytes::Bytes;
use gridlb_protocol::{
    ChargeError, ChargeRequest, ErrorBody, IDEMPOTENCY_HEADER, IdempotencyKey, LOAD_HEADER,
    LoadReport, MAX_CHARGE_BODY, ORCA_HEADER, REQUEST_ID_HEADER, RequestId,
    SESSION_REMAINING_HEADER,
};
use http::header::{ALLOW, CONTENT_LENGTH, CONTENT_TYPE, LOCATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Body;
use serde::Serialize;
use std::time::Duration;
use tokio::time::Instant;

/// Every answer has a complete, in-memory body.
pub type Answer = Response<Full<Bytes>>;

/// How long a client may take to send a `/charge` body.
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest accepted `Idempotency-Key` (the rule is [`IdempotencyKey::parse`]'s).
pub const MAX_IDEMPOTENCY_KEY: usize = gridlb_protocol::MAX_KEY_LEN;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A `POST /charge` refused before booking: the status and the error body.
type Refusal = (StatusCode, ErrorBody);

/// The `200` answer to `DELETE /charge/{session_id}`.
#[derive(Debug, Serialize)]
struct SessionEnded<'a> {
    session_id: &'a str,
    freed_kw: f64,
    load_kw: f64,
    capacity_kw: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Route<'a> {
    Charge,
    Session(&'a str),
    Load,
    Metrics,
    Healthz,
    Unknown,
}

impl<'a> Route<'a> {
    fn of(path: &'a str) -> Route<'a> {
        match path {
            "/charge" => Route::Charge,
            "/load" => Route::Load,
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            _ => match path.strip_prefix("/charge/") {
                Some(id) if !id.is_empty() && !id.contains('/') => Route::Session(id),
                _ => Route::Unknown,
            },
        }
    }

    /// The `route` label of `substation_requests_total` (bounded: a template, not the path).
    fn label(self) -> &'static str {
        match self {
            Route::Charge => "/charge",
            Route::Session(_) => "/charge/{session_id}",
            Route::Load => "/load",
            Route::Metrics => "/metrics",
            Route::Healthz => "/healthz",
            Route::Unknown => "other",
        }
    }

    fn allow(self) -> &'static str {
        match self {
            Route::Charge => "POST",
            Route::Session(_) => "DELETE",
            _ => "GET, HEAD",
        }
    }
}

/// Answer one request and count it in the metrics.
pub async fn handle<B>(state: &Substation, request: Request<B>) -> Answer
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let started = std::time::Instant::now();
    let path = request.uri().path().to_string();
    let route = Route::of(&path);
    let method = request.method().clone();
    let is_get = method == Method::GET || method == Method::HEAD;
    // A valid x-request-id (gridlb always sends one) is echoed and logged.
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .filter(|v| RequestId::parse(v.as_bytes()).is_ok())
        .cloned();
    let (mut answer, report) = match route {
        Route::Charge if method == Method::POST => post_charge(state, request).await,
        Route::Session(id) if method == Method::DELETE => delete_charge(state, id),
        Route::Load if is_get => (json(StatusCode::OK, &state.report()), None),
        Route::Metrics if is_get => (metrics(state), None),
        Route::Healthz if is_get => (text(StatusCode::OK, "ok"), None),
        Route::Unknown => (not_found(&format!("no route for {path}")), None),
        _ => (method_not_allowed(&method, route), None),
    };
    if matches!(route, Route::Charge | Route::Session(_)) {
        let report = report.unwrap_or_else(|| state.report());
        let header = report.header().to_string();
        let value = HeaderValue::from_str(&header).expect("a header report is plain ASCII");
        answer.headers_mut().insert(LOAD_HEADER, value);
        let orca = state.orca_text(&report, Instant::now());
        let value = HeaderValue::from_str(&orca).expect("an ORCA text report is plain ASCII");
        answer.headers_mut().insert(ORCA_HEADER, value);
    }
    let status = answer.status();
    match request_id {
        Some(id) => {
            log::debug!("{method} {path} -> {} ({id:?})", status.as_u16());
            answer.headers_mut().insert(REQUEST_ID_HEADER, id);
        }
        None => log::debug!("{method} {path} -> {}", status.as_u16()),
    }
    state.metrics().observe_request(
        route.label(),
        status.as_u16(),
        started.elapsed().as_secs_f64(),
    );
    answer
}

/// `POST /charge`; the report is the one right after the booking, when there was one.
async fn post_charge<B>(state: &Substation, request: Request<B>) -> (Answer, Option<LoadReport>)
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let (charge, key) = match read_charge(state, request).await {
        Ok(parsed) => parsed,
        Err((status, body)) => {
            state
                .metrics()
                .sessions
                .with_label_values(&["invalid"])
                .inc();
            return (json(status, &body), None);
        }
    };
    match state.book(&charge, key.as_ref(), Instant::now()) {
        Booking::Accepted { answer, report } => (created(&answer, false), Some(report)),
        Booking::Replay { answer, report } => (created(&answer, true), Some(report)),
        Booking::KeyReused { report } => {
            let message = format!(
                "{IDEMPOTENCY_HEADER} was already used with a different request; use a new key"
            );
            let field = Some(IDEMPOTENCY_HEADER.to_string());
            (
                error(StatusCode::UNPROCESSABLE_ENTITY, message, field),
                Some(report),
            )
        }
        Booking::NoId(why) => (error(StatusCode::INTERNAL_SERVER_ERROR, why, None), None),
        Booking::Refused {
            retry_after_s,
            free,
            report,
        } => {
            let message = format!(
                "substation {} has {free} free of {} kW, {} kW requested; retry in {retry_after_s} s",
                state.id(),
                state.capacity_kw(),
                charge.power_kw
            );
            let mut answer = error(StatusCode::SERVICE_UNAVAILABLE, message, None);
            answer
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(retry_after_s));
            (answer, Some(report))
        }
    }
}

fn created(accepted: &gridlb_protocol::ChargeAccepted, replay: bool) -> Answer {
    let mut answer = json(StatusCode::CREATED, accepted);
    if let Some(left) = accepted.remaining_s {
        let value = HeaderValue::from_str(&format!("{left:.3}"))
            .expect("a formatted number is plain ASCII");
        answer.headers_mut().insert(SESSION_REMAINING_HEADER, value);
    }
    let location = format!("/charge/{}", accepted.session_id);
    if let Ok(location) = HeaderValue::from_str(&location) {
        answer.headers_mut().insert(LOCATION, location);
    }
    if replay {
        answer
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    answer
}

fn delete_charge(state: &Substation, session_id: &str) -> (Answer, Option<LoadReport>) {
    match state.end(session_id, Instant::now()) {
        Some(ended) => {
            let body = SessionEnded {
                session_id,
                freed_kw: ended.freed.as_kw(),
                load_kw: ended.report.load_kw,
                capacity_kw: ended.report.capacity_kw,
            };
            (json(StatusCode::OK, &body), Some(ended.report))
        }
        None => {
            let message = format!("no active session {session_id:?} at {}", state.id());
            (not_found(&message), None)
        }
    }
}

/// The validated charge request and its idempotency key, or why they are refused.
async fn read_charge<B>(
    state: &Substation,
    request: Request<B>,
) -> Result<(ChargeRequest, Option<IdempotencyKey>), Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let key = idempotency_key(request.headers())?;
    let body = read_body(request).await?;
    let charge = parse_charge(state, &body)?;
    Ok((charge, key))
}

fn parse_charge(state: &Substation, body: &[u8]) -> Result<ChargeRequest, Refusal> {
    let (max_kw, max_duration_s) = state.session_bounds();
    let checked = ChargeRequest::parse(body)
        .and_then(|charge| charge.check_limits(max_kw, max_duration_s).map(|()| charge))
        .and_then(|charge| charge.check_capacity(state.capacity_kw()).map(|()| charge));
    checked.map_err(|e| {
        let status = match e {
            ChargeError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        (status, e.body())
    })
}

/// The `Idempotency-Key`, if any, checked by the one rule ([`IdempotencyKey::parse`]).
fn idempotency_key(headers: &HeaderMap) -> Result<Option<IdempotencyKey>, Refusal> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    // A value that is not even a string has bytes outside visible ASCII: the rule's error.
    let parsed = std::str::from_utf8(value.as_bytes())
        .map_err(|e| gridlb_protocol::KeyError::Character {
            at: e.valid_up_to(),
        })
        .and_then(IdempotencyKey::parse);
    match parsed {
        Ok(key) => Ok(Some(key)),
        Err(e) => Err((
            StatusCode::BAD_REQUEST,
            ErrorBody::new(e.to_string(), Some(IDEMPOTENCY_HEADER.to_string())),
        )),
    }
}

/// Read at most [`MAX_CHARGE_BODY`] bytes within [`BODY_TIMEOUT`].
async fn read_body<B>(request: Request<B>) -> Result<Bytes, Refusal>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_CHARGE_BODY as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(request.into_body(), MAX_CHARGE_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err((
            StatusCode::BAD_REQUEST,
            ErrorBody::new(format!("cannot read the body: {e}"), None),
        )),
        Err(_) => Err((
            StatusCode::REQUEST_TIMEOUT,
            ErrorBody::new(
                format!("the body did not arrive within {BODY_TIMEOUT:?}"),
                None,
            ),
        )),
    }
}

fn metrics(state: &Substation) -> Answer {
    match state.metrics().encode() {
        Ok(body) => {
            let mut answer = Response::new(Full::new(Bytes::from(body)));
            answer.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            );
            answer
        }
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode metrics: {e}"),
            None,
        ),
    }
}

fn method_not_allowed(method: &Method, route: Route<'_>) -> Answer {
    let message = format!(
        "method {method} is not allowed on {}; use {}",
        route.label(),
        route.allow()
    );
    let mut answer = error(StatusCode::METHOD_NOT_ALLOWED, message, None);
    answer
        .headers_mut()
        .insert(ALLOW, HeaderValue::from_static(route.allow()));
    answer
}

fn too_large() -> Refusal {
    let e = ChargeError::TooLarge {
        limit: MAX_CHARGE_BODY,
    };
    (StatusCode::PAYLOAD_TOO_LARGE, e.body())
}

fn not_found(message: &str) -> Answer {
    error(StatusCode::NOT_FOUND, message.to_string(), None)
}

fn error(status: StatusCode, message: String, field: Option<String>) -> Answer {
    json(status, &ErrorBody::new(message, field))
}

fn json(status: StatusCode, body: &impl Serialize) -> Answer {
    let bytes = serde_json::to_vec(body)
        .expect("answer bodies are plain structs of strings and numbers, which always serialise");
    let mut answer = Response::new(Full::new(Bytes::from(bytes)));
    *answer.status_mut() = status;
    answer
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    answer
}

fn text(status: StatusCode, body: &'static str) -> Answer {
    let mut answer = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *answer.status_mut() = status;
    answer.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    answer
}

#[cfg(test)]
mod tests;
