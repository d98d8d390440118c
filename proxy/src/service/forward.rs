//! What the request carries to the substation: hop-by-hop headers removed (RFC 9110 §7.6.1,
//! including those the client's `Connection` names) and `X-Forwarded-For` set.
//!
//! `X-Forwarded-For` is only believed from a peer listed in `trusted_proxies` (a load
//! balancer in front of gridlb): then the client's address is appended to what it says.
//! From anyone else the header is replaced by the peer's own address, so a client cannot
//! make a substation believe it comes from elsewhere.

use crate::config::Cidr;
use pingora_error::Result;
use pingora_http::RequestHeader;
use std::net::IpAddr;

/// Headers that describe one hop and must not be forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

const FORWARDED_FOR: &str = "x-forwarded-for";

/// Prepare `upstream` (the request as it will be sent) for a client at `peer`.
pub(super) fn prepare(
    upstream: &mut RequestHeader,
    peer: Option<IpAddr>,
    trusted: &[Cidr],
) -> Result<()> {
    let listed: Vec<String> = upstream
        .headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(',').map(|t| t.trim().to_ascii_lowercase()))
        .collect();
    for name in HOP_BY_HOP
        .iter()
        .copied()
        .chain(listed.iter().map(String::as_str))
    {
        upstream.remove_header(name);
    }
    let Some(ip) = peer else {
        upstream.remove_header(FORWARDED_FOR);
        return Ok(());
    };
    let believed = trusted.iter().any(|net| net.contains(ip));
    let prior: Vec<String> = upstream
        .headers
        .get_all(FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .map(str::to_string)
        .collect();
    let forwarded = match prior.join(", ") {
        p if believed && !p.is_empty() => format!("{p}, {ip}"),
        _ => ip.to_string(),
    };
    upstream.insert_header(FORWARDED_FOR, forwarded)?;
    Ok(())
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

    fn xff(r: &RequestHeader) -> Option<&str> {
        r.headers.get(FORWARDED_FOR).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn a_client_cannot_forge_where_it_comes_from() {
        let mut r = request(&[
            ("x-forwarded-for", "10.9.9.9"),
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
        ]);
        prepare(&mut r, Some("192.0.2.7".parse().unwrap()), &[]).unwrap();
        assert_eq!(xff(&r), Some("192.0.2.7"));
        assert!(
            r.headers.get("x-secret").is_none(),
            "named by Connection: hop-by-hop"
        );
        assert!(r.headers.get("connection").is_none());
    }

    #[test]
    fn a_trusted_proxy_s_forwarded_for_is_kept_and_extended() {
        let trusted = ["127.0.0.0/8".parse::<Cidr>().unwrap()];
        let mut r = request(&[("x-forwarded-for", "198.51.100.1")]);
        prepare(&mut r, Some("127.0.0.1".parse().unwrap()), &trusted).unwrap();
        assert_eq!(xff(&r), Some("198.51.100.1, 127.0.0.1"));
        let mut r = request(&[("x-forwarded-for", "198.51.100.1")]);
        prepare(&mut r, Some("192.0.2.7".parse().unwrap()), &trusted).unwrap();
        assert_eq!(xff(&r), Some("192.0.2.7"), "not from the trusted range");
    }
}
