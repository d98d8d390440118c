//! Request ids: the one syntax of the `x-request-id` header.
//!
//! A request id is 1 to 128 visible ASCII characters, `0x21..=0x7E`: no space, no control
//! character, nothing outside ASCII. That is enough for every common form (UUIDs, W3C trace
//! ids, hex, base64) and keeps an id safe to write into a log line and a JSON body. The proxy
//! keeps a client's id that passes [`RequestId::parse`] and replaces any other with a new
//! one, [`RequestId::from_random`] over 128 random bits (32 lowercase hex digits), so every
//! request that crosses gridlb carries exactly one valid id.

use std::fmt;

/// Header carrying a request's id, from the client (when valid) or made by the proxy; sent
/// upstream and returned on every answer.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The longest request id a client may send.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// A valid request id. Build one with [`RequestId::parse`] or [`RequestId::from_random`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

/// A header value that is not a valid request id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RequestIdError {
    #[error("x-request-id must be 1 to 128 visible ASCII characters (0x21 to 0x7E), got {0} bytes")]
    Length(usize),
    #[error(
        "x-request-id must be 1 to 128 visible ASCII characters (0x21 to 0x7E), byte {at} is not"
    )]
    Character { at: usize },
}

impl RequestId {
    /// A client's id, if it follows the rule.
    pub fn parse(id: &[u8]) -> Result<RequestId, RequestIdError> {
        match crate::token::visible_ascii(id, MAX_REQUEST_ID_LEN) {
            Err(crate::token::Fault::Length(n)) => return Err(RequestIdError::Length(n)),
            Err(crate::token::Fault::Character(at)) => {
                return Err(RequestIdError::Character { at });
            }
            Ok(()) => {}
        }
        let id = std::str::from_utf8(id).expect("visible ASCII is UTF-8");
        Ok(RequestId(id.to_string()))
    }

    /// A new id from 128 random bits (the caller's CSPRNG): 32 lowercase hex digits.
    pub fn from_random(bits: [u8; 16]) -> RequestId {
        RequestId(crate::session::hex128(bits))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for RequestId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_id_forms_are_accepted_as_they_are() {
        let uuid = "0f8fad5b-d9cb-469f-a165-70867728950e";
        for good in [uuid, "a", "trace=1;span=2", &"x".repeat(128)] {
            assert_eq!(RequestId::parse(good.as_bytes()).unwrap().as_str(), good);
        }
    }

    #[test]
    fn empty_long_spaced_and_non_ascii_ids_are_rejected() {
        for bad in ["", &"x".repeat(129), "a b", "a\tb", "é", "a\u{7f}", "a\"\n"] {
            assert!(RequestId::parse(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert_eq!(
            RequestId::parse(b"ab cd"),
            Err(RequestIdError::Character { at: 2 })
        );
    }

    #[test]
    fn a_random_id_is_32_hex_digits_and_itself_valid() {
        let id = RequestId::from_random([0xab; 16]);
        assert_eq!(id.as_str(), "ab".repeat(16));
        assert_eq!(RequestId::parse(id.as_str().as_bytes()), Ok(id));
    }

    proptest::proptest! {
        #[test]
        fn an_id_is_accepted_exactly_when_every_byte_is_visible_ascii(s in "\\PC{0,150}") {
            let rule = (1..=128).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
            proptest::prop_assert_eq!(RequestId::parse(s.as_bytes()).is_ok(), rule);
        }
    }
}
