//! What the request carries to the substation: hop-by-hop headers removed (RFC 9110 §7.6.1,
//! including those the client's `Connection` names), `X-Forwarded-For` set, and the client's
//! `x-request-id` left out (the proxy sends the request's own, `crate::request_id`).
//!
//! `X-Forwarded-For` is only believed from a peer listed in `trusted_proxies` (a load
//! balancer in front of gridlb): then the client's address is appended to what it says.
//! From anyone else the header is replaced by the peer's own address, so a client cannot
//! make a substation believe it comes from elsewhere.

use crate::config::Cidr;
use gridlb_protocol::REQUEST_ID_HEADER;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// Headers that describe one hop and must not be forwarded (`expect` too: gridlb sends the
/// whole body at once). The framing headers (`content-length`, `transfer-encoding`) are not
/// listed: `crate::call` leaves out whatever a request carries and writes its own.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
    "expect",
];

pub(super) const FORWARDED_FOR: &str = "x-forwarded-for";
/// Looked up by name made once (see `crate::names`).
static FORWARDED_FOR_NAME: http::HeaderName = http::HeaderName::from_static(FORWARDED_FOR);

/// The headers of `client` (the request as the client sent it) that go on to the substation,
/// and the `X-Forwarded-For` to add for a client at `peer` (`None`: none is sent).
pub(super) fn headers<'a>(
    client: &'a RequestHeader,
    peer: Option<IpAddr>,
    trusted: &[Cidr],
) -> (Vec<(&'a str, &'a [u8])>, Option<String>) {
    // Usually none: no allocation then.
    let listed: Vec<&str> = client
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let kept = client
        .headers
        .iter()
        .map(|(name, value)| (name.as_str(), value.as_bytes()))
        .filter(|(name, _)| {
            !HOP_BY_HOP.contains(name)
                && *name != FORWARDED_FOR
                && *name != REQUEST_ID_HEADER
                && !listed.iter().any(|t| t.eq_ignore_ascii_case(name))
        })
        .collect();
    let Some(ip) = peer else {
        return (kept, None);
    };
    // What the peer says is read only when the peer is believed.
    let prior = trusted
        .iter()
        .any(|net| net.contains(ip))
        .then(|| {
            let values: Vec<&str> = client
                .headers
                .get_all(&FORWARDED_FOR_NAME)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            values.join(", ")
        })
        .filter(|p| !p.is_empty());
    let forwarded = match prior {
        Some(p) => format!("{p}, {ip}"),
        None => address_text(ip),
    };
    (kept, Some(forwarded))
}

/// `ip` as `Display` writes it; an IPv4 address without the formatting machinery, which
/// costs more than the rest of this module for every request.
fn address_text(ip: IpAddr) -> String {
    let IpAddr::V4(v4) = ip else {
        return ip.to_string();
    };
    let mut text = String::with_capacity(15);
    for (i, octet) in v4.octets().into_iter().enumerate() {
        if i > 0 {
            text.push('.');
        }
        if octet >= 100 {
            text.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            text.push(char::from(b'0' + octet / 10 % 10));
        }
        text.push(char::from(b'0' + octet % 10));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(headers: &[(&str, &str)]) -> RequestHeader {
        let mut r = RequestHeader::build("POST", b"/charge", None).expect("a request");
        for (name, value) in headers {
            r.append_header(name.to_string(), *value).expect("a header");
        }
        r
    }

    fn sent(r: &RequestHeader, peer: &str, trusted: &[Cidr]) -> (Vec<String>, Option<String>) {
        let (kept, xff) = headers(r, Some(peer.parse().unwrap()), trusted);
        (kept.iter().map(|(n, _)| n.to_string()).collect(), xff)
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for octet in 0..=255u8 {
            let ip = IpAddr::from([octet, 255 - octet, octet / 3, 7]);
            assert_eq!(address_text(ip), ip.to_string());
        }
        for ip in [
            "::1",
            "2001:db8::7",
            "::ffff:192.0.2.7",
            "0.0.0.0",
            "10.0.100.9",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(address_text(ip), ip.to_string());
        }
    }

    #[test]
    fn a_client_cannot_forge_where_it_comes_from() {
        let r = request(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("x-request-id", "client-1"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("x-kept", "1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ]);
        let (kept, xff) = sent(&r, "192.0.2.7", &[]);
        assert_eq!(xff.as_deref(), Some("192.0.2.7"));
        assert_eq!(
            kept,
            ["x-kept"],
            "hop-by-hop, named by Connection, or the proxy's own to set: not sent"
        );
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_for_is_kept_and_extended() {
        let trusted = ["127.0.0.0/8".parse::<Cidr>().unwrap()];
        let r = request(&[("x-forwarded-for", "198.51.100.1")]);
        let (_, xff) = sent(&r, "127.0.0.1", &trusted);
        assert_eq!(xff.as_deref(), Some("198.51.100.1, 127.0.0.1"));
        let (_, xff) = sent(&r, "192.0.2.7", &trusted);
        assert_eq!(
            xff.as_deref(),
            Some("192.0.2.7"),
            "not from the trusted range"
        );
    }
}
