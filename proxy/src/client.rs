//! A small HTTP/1.1 client on Pingora's connector (keep-alive pooled), for the demo's
//! demand generator and the integration tests. Not on the proxy's request path.

use bytes::{Bytes, BytesMut};
use pingora_core::connectors::http::Connector;
use pingora_core::upstreams::peer::{HttpPeer, Peer};
use pingora_error::{Error, ErrorType, Result};
use pingora_http::RequestHeader;
use std::net::SocketAddr;
use std::time::Duration;

/// An answer, read whole.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

pub struct Client {
    connector: Connector,
    timeout: Duration,
}

impl Client {
    /// A client whose every request (connect, send, answer) is bounded by `timeout`.
    pub fn new(timeout: Duration) -> Self {
        Client {
            connector: Connector::new(None),
            timeout,
        }
    }

    pub async fn request(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        match tokio::time::timeout(
            self.timeout,
            self.exchange(addr, method, path, headers, body),
        )
        .await
        {
            Ok(answer) => answer,
            Err(_) => Error::e_explain(
                ErrorType::ReadTimedout,
                format!("{method} {path} to {addr}"),
            ),
        }
    }

    async fn exchange(
        &self,
        addr: SocketAddr,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Result<Answer> {
        let mut peer = HttpPeer::new(addr, false, String::new());
        peer.options.connection_timeout = Some(self.timeout);
        peer.options.idle_timeout = Some(Duration::from_secs(30));
        let (mut session, _) = self.connector.get_http_session(&peer).await?;
        let mut req = RequestHeader::build(method, path.as_bytes(), None)?;
        req.insert_header("host", addr.to_string())?;
        for (name, value) in headers {
            req.append_header(name.to_string(), *value)?;
        }
        if !body.is_empty() || method == "POST" {
            req.insert_header("content-length", body.len().to_string())?;
        }
        session.write_request_header(Box::new(req)).await?;
        if !body.is_empty() {
            session
                .write_request_body(Bytes::copy_from_slice(body), true)
                .await?;
        }
        session.finish_request_body().await?;
        session.read_response_header().await?;
        let head = session
            .response_header()
            .ok_or_else(|| Error::explain(ErrorType::InvalidHTTPHeader, "no response header"))?;
        let (status, headers) = (head.status.as_u16(), head.headers.clone());
        let mut buf = BytesMut::new();
        while let Some(chunk) = session.read_response_body().await? {
            buf.extend_from_slice(&chunk);
        }
        self.connector
            .release_http_session(session, &peer, peer.idle_timeout())
            .await;
        Ok(Answer {
            status,
            headers,
            body: buf.freeze(),
        })
    }
}
