//! The protocol's header names as `http::HeaderName`s, made once. A header map looked up by a
//! `&str` parses the name again on every lookup (some 400 instructions: bench/scripts/
//! instructions); by a `HeaderName` it only hashes it. On the request path every lookup of a
//! protocol header goes through these.

use http::HeaderName;

/// `x-substation-load`: a substation's load report on every answer.
pub static LOAD: HeaderName = HeaderName::from_static(gridlb_protocol::LOAD_HEADER);
/// `x-session-remaining-s`: how long a booked session lasts.
pub static SESSION_REMAINING: HeaderName =
    HeaderName::from_static(gridlb_protocol::SESSION_REMAINING_HEADER);
/// `endpoint-load-metrics`: the substation's load as an ORCA report.
pub static ORCA: HeaderName = HeaderName::from_static(gridlb_protocol::ORCA_HEADER);
/// `x-request-id`.
pub static REQUEST_ID: HeaderName = HeaderName::from_static(gridlb_protocol::REQUEST_ID_HEADER);
/// `x-charge-kw`: the power a booking asks for.
pub static CHARGE_KW: HeaderName = HeaderName::from_static(gridlb_protocol::CHARGE_KW_HEADER);
/// `idempotency-key`.
pub static IDEMPOTENCY: HeaderName = HeaderName::from_static(gridlb_protocol::IDEMPOTENCY_HEADER);

#[cfg(test)]
mod tests {
    #[test]
    fn each_name_is_the_protocol_s() {
        use super::*;
        for (name, text) in [
            (&LOAD, gridlb_protocol::LOAD_HEADER),
            (
                &SESSION_REMAINING,
                gridlb_protocol::SESSION_REMAINING_HEADER,
            ),
            (&ORCA, gridlb_protocol::ORCA_HEADER),
            (&REQUEST_ID, gridlb_protocol::REQUEST_ID_HEADER),
            (&CHARGE_KW, gridlb_protocol::CHARGE_KW_HEADER),
            (&IDEMPOTENCY, gridlb_protocol::IDEMPOTENCY_HEADER),
        ] {
            assert_eq!(name.as_str(), text);
        }
    }
}
