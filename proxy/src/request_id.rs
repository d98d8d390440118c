//! Request ids: every request that crosses gridlb carries exactly one `x-request-id`.
//!
//! A client's id is kept when it follows the protocol's rule ([`RequestId::parse`]: 1 to 128
//! visible ASCII characters); any other (missing, empty, too long, with spaces or control
//! characters) is replaced by a new one, 128 bits from the operating system's CSPRNG as 32 hex
//! digits, so ids are unique without coordination between replicas. [`adopt`] picks the id;
//! the proxy sends it upstream in place of whatever the client sent (`service/forward.rs`),
//! and the answer gets it back ([`stamp`]), including the proxy's own error answers, whose JSON body also names it
//! ([`stamp_error_body`]). The access log writes it on the request's line.

use gridlb_protocol::{ErrorBody, REQUEST_ID_HEADER, RequestId, mix};
use pingora_http::{RequestHeader, ResponseHeader};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// The request's id: the client's when valid, else a new one.
pub fn adopt(request: &RequestHeader) -> RequestId {
    request
        .headers
        .get(&crate::names::REQUEST_ID)
        .and_then(|v| RequestId::parse(v.as_bytes()).ok())
        .unwrap_or_else(generate)
}

/// A new id: 128 bits from a CSPRNG seeded by the OS (`gridlb_protocol::random_bits`).
pub fn generate() -> RequestId {
    let mut bits = [0u8; 16];
    if let Ok(random) = gridlb_protocol::random_bits() {
        bits = random;
    } else {
        // No OS randomness (never seen on Linux): still unique within the process, though
        // guessable.
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        bits[..8].copy_from_slice(&mix(nanos).to_le_bytes());
        bits[8..].copy_from_slice(&mix(COUNTER.fetch_add(1, Relaxed)).to_le_bytes());
    }
    RequestId::from_random(bits)
}

/// Put the id on an answer.
pub fn stamp(response: &mut ResponseHeader, id: &RequestId) {
    if let Err(e) = response.insert_header(REQUEST_ID_HEADER, id.as_str()) {
        log::warn!("cannot set {REQUEST_ID_HEADER}: {e}");
    }
}

/// Put the id on an answer's header map (the relayed answers, `service/relay.rs`).
pub fn stamp_headers(headers: &mut http::HeaderMap, id: &RequestId) {
    const NAME: http::HeaderName = http::HeaderName::from_static(REQUEST_ID_HEADER);
    match http::HeaderValue::from_str(id.as_str()) {
        Ok(value) => {
            headers.insert(NAME, value);
        }
        Err(e) => log::warn!("cannot set {REQUEST_ID_HEADER}: {e}"),
    }
}

/// The proxy's own JSON error body, naming the request; any other body as it is.
pub fn stamp_error_body(body: Vec<u8>, id: &RequestId) -> Vec<u8> {
    match serde_json::from_slice::<ErrorBody>(&body) {
        Ok(error) => error.with_request_id(id).to_json(),
        Err(_) => body,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn request(id: Option<&[u8]>) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/charge", None).unwrap();
        if let Some(id) = id {
            r.insert_header(REQUEST_ID_HEADER, id).unwrap();
        }
        r
    }

    #[test]
    fn a_valid_client_id_is_kept() {
        let r = request(Some(b"client-42"));
        assert_eq!(adopt(&r).as_str(), "client-42");
    }

    #[test]
    fn a_missing_or_invalid_id_is_replaced() {
        let long = [b'x'; 129];
        for id in [None, Some(&b""[..]), Some(&b"a b"[..]), Some(&long[..])] {
            let made = adopt(&request(id));
            assert_eq!(made.as_str().len(), 32, "{id:?}");
            assert!(made.as_str().bytes().all(|b| b.is_ascii_hexdigit()));
        }
    }

    #[test]
    fn generated_ids_are_unique() {
        let ids: HashSet<_> = (0..10_000).map(|_| generate()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn error_bodies_name_the_request_and_other_bodies_pass() {
        let id = RequestId::parse(b"r1").unwrap();
        let body = stamp_error_body(ErrorBody::new("no", None).to_json(), &id);
        assert_eq!(body, br#"{"error":"no","request_id":"r1"}"#);
        assert_eq!(stamp_error_body(b"plain".to_vec(), &id), b"plain");
    }
}
