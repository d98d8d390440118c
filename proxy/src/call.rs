//! Out-of-band HTTP/1.1 exchanges with a substation, on Pingora's connector (connections
//! pooled per substation): the load probe and the settling of orphaned bookings use it; the
//! request path does not (Pingora's proxy does that exchange).
//!
//! Every exchange is bounded twice: each connect, read and write by `timeout` (Pingora's
//! peer options), and the answer's body by a size limit.

use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::Error;
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::time::Duration;

/// Why an exchange gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("request failed: {0}")]
    Transport(Box<Error>),
    #[error("the answer's body is over {limit} bytes")]
    TooLarge { limit: usize },
}

/// An answer: its status and whole body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

/// One request, as [`Caller::call`] sends it.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: &'a [(&'a str, &'a str)],
    pub body: &'a [u8],
    /// Each connect, read and write.
    pub timeout: Duration,
    /// The largest answer body accepted.
    pub max_body: usize,
}

pub struct Caller {
    connector: Connector,
}

impl Default for Caller {
    fn default() -> Self {
        Caller {
            connector: Connector::new(None),
        }
    }
}

impl Caller {
    /// Send `request` to `addr` and read the whole answer. A connection is returned to the
    /// pool only after a complete exchange.
    pub async fn call(&self, addr: SocketAddr, request: &Request<'_>) -> Result<Answer, CallError> {
        let transport = CallError::Transport;
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(request.timeout);
        peer.options.read_timeout = Some(request.timeout);
        peer.options.write_timeout = Some(request.timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(30));
        let (mut session, _reused) = self
            .connector
            .get_http_session(&peer)
            .await
            .map_err(transport)?;
        let mut head = RequestHeader::build(request.method, request.path.as_bytes(), None)
            .map_err(transport)?;
        head.insert_header("host", addr.to_string())
            .map_err(transport)?;
        for (name, value) in request.headers {
            head.append_header(name.to_string(), *value)
                .map_err(transport)?;
        }
        if !request.body.is_empty() || request.method == "POST" {
            head.insert_header("content-length", request.body.len().to_string())
                .map_err(transport)?;
        }
        session
            .write_request_header(Box::new(head))
            .await
            .map_err(transport)?;
        if !request.body.is_empty() {
            session
                .write_request_body(Bytes::copy_from_slice(request.body), true)
                .await
                .map_err(transport)?;
        }
        session.finish_request_body().await.map_err(transport)?;
        session.read_response_header().await.map_err(transport)?;
        let status = session
            .response_header()
            .map(|h| h.status.as_u16())
            .unwrap_or(0);
        let mut body = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await.map_err(transport)? {
            if body.len() + chunk.len() > request.max_body {
                return Err(CallError::TooLarge {
                    limit: request.max_body,
                });
            }
            body.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &peer, peer.idle_timeout())
            .await;
        Ok(Answer {
            status,
            body: body.freeze(),
        })
    }
}
