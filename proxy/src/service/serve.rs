//! A client connection's requests, one after another, on Pingora's HTTP/1 session: read a
//! request's header, answer it ([`GridProxy::respond`]), log it, and keep the connection for
//! the next one when both sides can.
//!
//! Why not pingora-proxy's `HttpProxy`, which gridlb ran before: gridlb never reaches its
//! upstream phases (every request is answered in what was its `request_filter`), yet each
//! request paid for them. `HttpProxy` serves each request in a future that holds every phase
//! of a proxied request, about 9 KiB, moved onto the heap per request, and wraps the session
//! for its modules and cache. For a service that answers requests itself that is some 10,000
//! instructions and a third more CPU per request (bench/RESULTS.md: "Pingora answering
//! itself", with and without pingora-proxy). Here a connection's requests run one after
//! another in the connection's own task: no future per request goes to the heap.
//!
//! What `HttpProxy` did around the requests is kept: a header Pingora cannot parse gets `400`
//! and the connection closes; `CONNECT` gets `405` and the connection closes (its framing is
//! not a proxied request's); keep-alive is off once the service is shutting down; and when
//! the listener has stopped (`cleanup`), connections waiting for their next request close.

use super::request::respond_json;
use super::{GridProxy, RequestCtx, Session};
use async_trait::async_trait;
use gridlb_protocol::ErrorBody;
use pingora_core::apps::{HttpPersistentSettings, ReusedHttpStream, ServerApp};
use pingora_core::protocols::Stream;
use pingora_core::server::ShutdownWatch;
use pingora_error::{Error, ErrorSource, ErrorType};
use std::sync::Arc;

/// How long a new client connection may sit idle before its first request, and kept-alive
/// ones between requests unless the request said otherwise (Pingora's default).
const KEEPALIVE_SECS: u64 = 60;

#[async_trait]
impl ServerApp for GridProxy {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut closing = self.closing.subscribe();
        let mut session = Session::new_http1(stream);
        session.set_keepalive((!*shutdown.borrow()).then_some(KEEPALIVE_SECS));
        loop {
            let read = tokio::select! {
                // A request already buffered is served, not dropped.
                biased;
                read = session.read_request() => read,
                _ = closing.wait_for(|closing| *closing) => return None,
            };
            match read {
                Ok(true) => {}
                // The client closed (or sent nothing) before a request.
                Ok(false) => return None,
                Err(e) => {
                    if e.etype() == &ErrorType::InvalidHTTPHeader {
                        log::debug!("bad request header: {e}");
                        let _ = session.respond_error(400).await;
                    } else {
                        log::debug!("client connection ended before a request: {e}");
                    }
                    session.shutdown().await;
                    return None;
                }
            }
            if session.req_header().method == http::Method::CONNECT {
                let _ = session.respond_error(405).await;
                session.shutdown().await;
                return None;
            }
            if *shutdown.borrow() {
                // Shutting down: this request is answered, then the connection closes.
                session.set_keepalive(None);
            }
            let mut ctx = self.new_ctx();
            let answered = self.serve_one(&mut session, &mut ctx).await;
            self.log_request(&session, &ctx);
            // The request is over: its place under the concurrent-request cap is given back
            // now, not after the answer's last bytes are flushed.
            drop(ctx);
            if !answered {
                return None;
            }
            let settings = HttpPersistentSettings::for_session(&session);
            let reusable = session.finish().await.ok().flatten()?;
            let (stream, settings) =
                ReusedHttpStream::from_reusable_stream(reusable, settings).consume();
            session = Session::new_http1(stream);
            if let Some(settings) = settings {
                settings.apply_to_session(&mut session);
            }
        }
    }

    async fn cleanup(&self) {
        self.closing.send_replace(true);
    }
}

impl GridProxy {
    /// Answer one request; whether its connection may carry another.
    async fn serve_one(&self, session: &mut Session, ctx: &mut RequestCtx) -> bool {
        let e = match self.respond(session, ctx).await {
            Ok(true) => return true,
            Ok(false) => Error::explain(ErrorType::InternalError, "a request was left unanswered"),
            Err(e) => e,
        };
        self.answer_error(session, ctx, &e).await;
        false
    }

    /// A request that ended in an error: a `500` when nothing was written yet (a client
    /// that went away gets nothing), the error logged. The connection is not reused.
    async fn answer_error(&self, session: &mut Session, ctx: &RequestCtx, e: &Error) {
        let status = match e.esource() {
            ErrorSource::Downstream => None,
            _ if session.response_written().is_some() => None,
            _ => {
                let body = ErrorBody::new("internal error", None).to_json();
                respond_json(session, ctx, 500, &[], body)
                    .await
                    .ok()
                    .map(|()| 500)
            }
        };
        // A client that went away is not an error of the proxy's.
        if *e.esource() == ErrorSource::Downstream {
            log::debug!("client went away: {e}");
        } else {
            log::error!(
                "request failed: {e}, answered {}, {}",
                status.map_or("nothing".to_string(), |s| s.to_string()),
                session.request_summary()
            );
        }
    }
}
