//! The admin API, on its own listener (loopback by default), as a Pingora `ServeHttp` app.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | `200` while the process serves |
//! | `GET /readyz` | `200` once every configured substation has been probed at least once, else `503` naming the others |
//! | `GET /status` | JSON: each substation's health, last report, in-flight power, utilisation |
//! | `GET /history` | JSON: the last ten minutes, one sample a second: utilisation per substation, refusals per interval (`crate::history`) |
//! | `GET /metrics` | Prometheus text format |
//! | `GET /` | the live status page (one self-contained HTML file, no CDN) |
//! | `POST /reload` | re-read the config file; JSON result, with the error and its key path on failure |
//! | `POST /substations/{name}/drain`, `.../undrain` | stop (resume) new sessions to a substation; it is still probed and shown; holds across reloads |
//!
//! When a token is configured (`admin.token_env`), every mutating route needs
//! `Authorization: Bearer <token>` (the scheme in any case, RFC 9110 §11.1), compared in
//! constant time. A reload cannot remove or change the token.

use crate::header_guard::HeaderGuard;
use crate::history::History;
use crate::pool::Pool;
use crate::reload::{ReloadError, Reloader};
use crate::status::Status;
use async_trait::async_trait;
use http::{Method, Response, StatusCode};
use pingora_core::apps::http_app::ServeHttp;
use pingora_core::protocols::http::ServerSession;
use serde_json::json;
use std::sync::Arc;

const STATUS_PAGE: &str = include_str!("status.html");

pub struct AdminApp {
    pool: Arc<Pool>,
    reloader: Arc<Reloader>,
    history: Arc<History>,
}

impl AdminApp {
    pub fn new(pool: Arc<Pool>, reloader: Arc<Reloader>) -> Self {
        AdminApp {
            pool,
            reloader,
            history: Arc::default(),
        }
    }

    /// Serve `history` on `GET /history` (default: an empty one).
    pub fn with_history(mut self, history: Arc<History>) -> Self {
        self.history = history;
        self
    }

    fn authorized(&self, session: &ServerSession) -> bool {
        let Some(token) = self.pool.table().config().admin.token.clone() else {
            return true;
        };
        let given = session
            .req_header()
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
            .unwrap_or("");
        constant_time_eq(given.as_bytes(), token.as_bytes())
    }

    async fn reload(&self) -> Response<Vec<u8>> {
        match self.reloader.reload().await {
            Ok(config) => json_response(
                StatusCode::OK,
                &json!({"result": "success", "substations": config.substations.len(), "algorithm": config.selection.algorithm.as_str()}),
            ),
            Err(e) => {
                let path = match &e {
                    ReloadError::Invalid(c) => Some(c.path.clone()),
                    ReloadError::NoFile => None,
                };
                json_response(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    &json!({"result": "failure", "error": e.to_string(), "path": path}),
                )
            }
        }
    }

    /// `/substations/{name}/drain` or `/substations/{name}/undrain`.
    async fn drain(&self, path: &str) -> Response<Vec<u8>> {
        let rest = &path["/substations/".len()..];
        let (name, drain) = match rest.rsplit_once('/') {
            Some((name, "drain")) => (name, true),
            Some((name, "undrain")) => (name, false),
            _ => {
                return json_response(
                    StatusCode::NOT_FOUND,
                    &json!({"error": format!("no admin route {path}")}),
                );
            }
        };
        match self.pool.set_admin_drain(name, drain) {
            Some(draining) => json_response(
                StatusCode::OK,
                &json!({"substation": name, "admin_drain": drain, "draining": draining}),
            ),
            None => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no substation {name:?}")}),
            ),
        }
    }

    fn ready(&self) -> Response<Vec<u8>> {
        let waiting = self.pool.unprobed();
        let code = if waiting.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::SERVICE_UNAVAILABLE
        };
        json_response(
            code,
            &json!({"ready": waiting.is_empty(), "not_yet_probed": waiting}),
        )
    }
}

#[async_trait]
impl ServeHttp for AdminApp {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        // The header is parsed; once the answer is made, the next bytes are the next
        // request's header (`header_guard`). Admin requests have small bodies or none.
        if let Some(guard) = HeaderGuard::of(session.stream()) {
            guard.header_parsed();
        }
        let answer = self.route(session).await;
        if let Some(guard) = HeaderGuard::of(session.stream()) {
            guard.request_done();
        }
        answer
    }
}

impl AdminApp {
    async fn route(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        match (method, path.as_str()) {
            (Method::GET, "/healthz") => text(StatusCode::OK, "text/plain", "ok\n".into()),
            (Method::GET, "/readyz") => self.ready(),
            (Method::GET, "/status") => json_response(
                StatusCode::OK,
                &Status::of(&self.pool, self.reloader.status()),
            ),
            (Method::GET, "/history") => json_response(StatusCode::OK, &self.history.document()),
            (Method::GET, "/metrics") => {
                let table = self.pool.table();
                let page = table.metrics().render(&table.snapshot().gauges());
                text(
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    page.into_bytes(),
                )
            }
            (Method::GET, "/") => text(
                StatusCode::OK,
                "text/html; charset=utf-8",
                STATUS_PAGE.into(),
            ),
            (Method::POST, "/reload") if !self.authorized(session) => unauthorized(),
            (Method::POST, "/reload") => self.reload().await,
            (Method::POST, p) if p.starts_with("/substations/") && !self.authorized(session) => {
                unauthorized()
            }
            (Method::POST, p) if p.starts_with("/substations/") => self.drain(p).await,
            (_, "/healthz" | "/readyz" | "/status" | "/history" | "/metrics" | "/") => {
                json_response(
                    StatusCode::METHOD_NOT_ALLOWED,
                    &json!({"error": "method not allowed; use GET"}),
                )
            }
            (_, "/reload") => json_response(
                StatusCode::METHOD_NOT_ALLOWED,
                &json!({"error": "method not allowed; use POST"}),
            ),
            (_, other) => json_response(
                StatusCode::NOT_FOUND,
                &json!({"error": format!("no admin route {other}")}),
            ),
        }
    }
}

/// The credentials of an `Authorization: Bearer ...` value; the scheme is case-insensitive.
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim_start_matches(' '))
}

fn unauthorized() -> Response<Vec<u8>> {
    let mut resp = json_response(
        StatusCode::UNAUTHORIZED,
        &json!({"error": "missing or wrong bearer token"}),
    );
    resp.headers_mut().insert(
        http::header::WWW_AUTHENTICATE,
        http::HeaderValue::from_static("Bearer"),
    );
    resp
}

fn json_response<T: serde::Serialize>(code: StatusCode, body: &T) -> Response<Vec<u8>> {
    let body = serde_json::to_vec_pretty(body)
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}").into_bytes());
    text(code, "application/json", body)
}

fn text(code: StatusCode, content_type: &'static str, body: Vec<u8>) -> Response<Vec<u8>> {
    let mut resp = Response::new(body);
    *resp.status_mut() = code;
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    headers.insert(
        http::header::CACHE_CONTROL,
        http::HeaderValue::from_static("no-store"),
    );
    let len = resp.body().len();
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, len.into());
    resp
}

/// Compare without an early exit, so timing does not reveal how much of a guess was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0xff));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer, constant_time_eq};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for value in ["Bearer t0k", "bearer t0k", "BEARER t0k", "Bearer  t0k"] {
            assert_eq!(bearer(value), Some("t0k"), "{value}");
        }
        assert_eq!(bearer("Basic t0k"), None);
        assert_eq!(bearer("Bearert0k"), None);
    }

    #[test]
    fn token_comparison_needs_every_byte_and_the_length() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"", b"x"));
        assert!(constant_time_eq(b"", b""));
    }
}
