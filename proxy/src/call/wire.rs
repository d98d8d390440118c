//! HTTP/1.1 on the wire for [`Caller`](super::Caller): a request written in one buffer, an
//! answer's head parsed (`httparse`) and its body framed (RFC 9112 §6.3).

use super::{CallError, Request};
use bytes::{Bytes, BytesMut};
use std::io::Write;
use std::net::SocketAddr;

/// The most headers an answer may have.
const MAX_HEADERS: usize = 64;

/// Append `request` (request line, headers, `host` when it names none, `content-length`,
/// the body) to `out`.
pub(super) fn write_request(out: &mut Vec<u8>, request: &Request<'_>, addr: SocketAddr) {
    out.extend_from_slice(request.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(request.path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let mut has_host = false;
    for (name, value) in request.headers {
        // The framing is this hop's: gridlb states the length of the body it sends.
        if name.eq_ignore_ascii_case("content-length")
            || name.eq_ignore_ascii_case("transfer-encoding")
        {
            continue;
        }
        has_host |= name.eq_ignore_ascii_case("host");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value);
        out.extend_from_slice(b"\r\n");
    }
    if !has_host {
        let _ = write!(out, "host: {addr}\r\n");
    }
    if !request.body.is_empty() || matches!(request.method, "POST" | "PUT" | "PATCH") {
        let _ = write!(out, "content-length: {}\r\n", request.body.len());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(request.body);
}

/// How an answer's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framing {
    /// No body (`1xx`, `204`, `304`).
    Empty,
    Length(usize),
    Chunked,
    /// Until the substation closes the connection.
    UntilClose,
}

/// A parsed answer head.
#[derive(Debug)]
pub(super) struct Head {
    pub status: u16,
    pub headers: http::HeaderMap,
    /// Bytes of the head, the blank line included.
    pub len: usize,
    pub framing: Framing,
    /// The substation keeps the connection open after this answer.
    pub keep_alive: bool,
}

impl Head {
    /// A `1xx` answer other than `101`: a real one follows.
    pub fn informational(&self) -> bool {
        (100..200).contains(&self.status) && self.status != 101
    }
}

fn malformed(why: &'static str) -> CallError {
    CallError::Malformed(why)
}

/// The protocol's own headers, which every answer carries: static names, they cost no
/// allocation when parsed or passed on (other names not in `http`'s standard set do).
static PROTOCOL_HEADERS: [&http::HeaderName; 4] = [
    &crate::names::LOAD,
    &crate::names::SESSION_REMAINING,
    &crate::names::ORCA,
    &crate::names::REQUEST_ID,
];

fn protocol_header(name: &str) -> Option<http::HeaderName> {
    PROTOCOL_HEADERS
        .iter()
        .find(|known| known.as_str().eq_ignore_ascii_case(name))
        .map(|known| (*known).clone())
}

/// The head at the start of `buf`, `None` when it is not complete yet.
pub(super) fn parse_head(buf: &[u8]) -> Result<Option<Head>, CallError> {
    let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut answer = httparse::Response::new(&mut slots);
    let len = match answer.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(malformed("too many headers")),
        Err(_) => return Err(malformed("not an HTTP/1.x answer head")),
    };
    let status = answer.code.ok_or_else(|| malformed("no status"))?;
    let mut headers = http::HeaderMap::with_capacity(answer.headers.len());
    let mut length: Option<usize> = None;
    let mut chunked = false;
    let mut close = false;
    let mut keep_alive = false;
    for h in answer.headers.iter() {
        let name = match protocol_header(h.name) {
            Some(name) => name,
            None => http::HeaderName::from_bytes(h.name.as_bytes())
                .map_err(|_| malformed("bad header name"))?,
        };
        let value =
            http::HeaderValue::from_bytes(h.value).map_err(|_| malformed("bad header value"))?;
        if name == http::header::CONTENT_LENGTH {
            let n = std::str::from_utf8(h.value)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| malformed("bad content-length"))?;
            if length.is_some_and(|m| m != n) {
                return Err(malformed("conflicting content-length"));
            }
            length = Some(n);
        } else if name == http::header::TRANSFER_ENCODING {
            chunked = tokens(h.value).last().is_some_and(|t| t == "chunked");
        } else if name == http::header::CONNECTION {
            close |= tokens(h.value).any(|t| t == "close");
            keep_alive |= tokens(h.value).any(|t| t == "keep-alive");
        }
        headers.append(name, value);
    }
    let framing = match status {
        100..=199 | 204 | 304 => Framing::Empty,
        _ if chunked => Framing::Chunked,
        _ => length.map_or(Framing::UntilClose, Framing::Length),
    };
    let keep_alive = match answer.version {
        Some(1) => !close,
        _ => keep_alive && !close,
    };
    Ok(Some(Head {
        status,
        headers,
        len,
        framing,
        keep_alive,
    }))
}

/// The comma-separated tokens of a header value, lower case.
fn tokens(value: &[u8]) -> impl Iterator<Item = String> + '_ {
    value
        .split(|b| *b == b',')
        .map(|t| String::from_utf8_lossy(t).trim().to_ascii_lowercase())
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum ChunkError {
    TooLarge,
    Malformed,
}

/// Decode a chunked body at the start of `buf`: the body and the bytes it took, `None` when
/// it is not complete yet. Trailers are read past and dropped.
pub(super) fn dechunk(buf: &[u8], max: usize) -> Result<Option<(Bytes, usize)>, ChunkError> {
    let mut body = BytesMut::new();
    let mut pos = 0;
    loop {
        let (used, size) = match httparse::parse_chunk_size(&buf[pos..]) {
            Ok(httparse::Status::Complete(parsed)) => parsed,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(ChunkError::Malformed),
        };
        pos += used;
        if size == 0 {
            // Trailer lines up to a blank one.
            loop {
                let Some(end) = buf[pos..].windows(2).position(|w| w == b"\r\n") else {
                    return Ok(None);
                };
                pos += end + 2;
                if end == 0 {
                    return Ok(Some((body.freeze(), pos)));
                }
            }
        }
        let size = usize::try_from(size).map_err(|_| ChunkError::TooLarge)?;
        if body.len().saturating_add(size) > max {
            return Err(ChunkError::TooLarge);
        }
        if buf.len() < pos + size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(ChunkError::Malformed);
        }
        pos += size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_request_is_one_buffer_with_host_and_length() {
        let request = Request {
            method: "POST",
            path: "/charge",
            headers: &[
                ("content-length", b"999"),
                ("x-request-id", b"abc"),
                ("transfer-encoding", b"chunked"),
            ],
            body: b"{}",
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            max_body: 10,
        };
        let mut out = Vec::new();
        write_request(&mut out, &request, "127.0.0.1:9".parse().unwrap());
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "POST /charge HTTP/1.1\r\nx-request-id: abc\r\nhost: 127.0.0.1:9\r\ncontent-length: 2\r\n\r\n{}"
        );
    }

    #[test]
    fn heads_are_framed_as_rfc_9112_says() {
        let head = |text: &str| parse_head(text.as_bytes()).unwrap().unwrap();
        let h = head("HTTP/1.1 201 Created\r\ncontent-length: 5\r\nx-a: 1\r\n\r\nhello");
        assert_eq!(
            (h.status, h.framing, h.keep_alive, h.len),
            (201, Framing::Length(5), true, 51)
        );
        assert_eq!(h.headers.get("x-a").unwrap(), "1");
        let h = head("HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        assert_eq!(head("HTTP/1.0 200 OK\r\n\r\n").framing, Framing::UntilClose);
        assert!(!head("HTTP/1.0 200 OK\r\n\r\n").keep_alive);
        assert!(head("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n").keep_alive);
        assert_eq!(
            head("HTTP/1.1 204 No Content\r\n\r\n").framing,
            Framing::Empty
        );
        assert!(head("HTTP/1.1 100 Continue\r\n\r\n").informational());
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\ncontent-le")
                .unwrap()
                .is_none()
        );
        for bad in [
            "HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            "SMTP ready\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn chunked_bodies_are_decoded_whole_or_not_yet() {
        let text = b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nx-trailer: 1\r\n\r\nNEXT";
        let (body, used) = dechunk(text, 100).unwrap().unwrap();
        assert_eq!((&body[..], used), (&b"abcde"[..], text.len() - 4));
        for cut in 0..text.len() - 4 {
            assert_eq!(dechunk(&text[..cut], 100), Ok(None), "cut at {cut}");
        }
        assert_eq!(dechunk(text, 4), Err(ChunkError::TooLarge));
        assert_eq!(dechunk(b"3\r\nabcX\r\n", 100), Err(ChunkError::Malformed));
        assert_eq!(dechunk(b"zz\r\n", 100), Err(ChunkError::Malformed));
    }
}
