//! Idempotency keys: the one syntax of the `Idempotency-Key` header.
//!
//! A key is 1 to 255 visible ASCII characters, `0x21..=0x7E`: no space, no tab, no control
//! character, nothing outside ASCII. The proxy (which routes a retried key back to the
//! substation that took it) and the substation (which books a key once) accept exactly the
//! same keys, so a key one of them takes is never refused by the other.

use std::fmt;

/// The longest key.
pub const MAX_KEY_LEN: usize = 255;

/// A valid idempotency key. Build one with [`IdempotencyKey::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IdempotencyKey(String);

/// A header value that is not a valid key. The message states the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error(
        "Idempotency-Key must be 1 to 255 visible ASCII characters (0x21 to 0x7E, no space), got {0} bytes"
    )]
    Length(usize),
    #[error(
        "Idempotency-Key must be 1 to 255 visible ASCII characters (0x21 to 0x7E, no space), byte {at} is not"
    )]
    Character { at: usize },
}

impl IdempotencyKey {
    pub fn parse(key: &str) -> Result<IdempotencyKey, KeyError> {
        match crate::token::visible_ascii(key.as_bytes(), MAX_KEY_LEN) {
            Err(crate::token::Fault::Length(n)) => Err(KeyError::Length(n)),
            Err(crate::token::Fault::Character(at)) => Err(KeyError::Character { at }),
            Ok(()) => Ok(IdempotencyKey(key.to_string())),
        }
    }

    /// A fresh key (`gridlb-` and 128 random bits in hex), for a booking whose client sent
    /// none: the proxy sends one upstream on every booking so that it can ask again safely.
    pub fn generate() -> Result<IdempotencyKey, crate::RandomnessError> {
        crate::session::random_hex_after(&["gridlb-"]).map(IdempotencyKey)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for IdempotencyKey {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_ascii_keys_are_accepted() {
        for good in ["k", "abc-123", "!~", &"x".repeat(255)] {
            assert_eq!(IdempotencyKey::parse(good).unwrap().as_str(), good);
        }
    }

    #[test]
    fn empty_long_spaced_and_non_ascii_keys_are_rejected_with_the_rule() {
        for bad in ["", &"x".repeat(256), "a b", " ", "a\tb", "é", "a\u{7f}"] {
            let err = IdempotencyKey::parse(bad).unwrap_err();
            assert!(err.to_string().contains("0x21 to 0x7E, no space"), "{err}");
        }
        assert_eq!(
            IdempotencyKey::parse("a b"),
            Err(KeyError::Character { at: 1 })
        );
    }

    proptest::proptest! {
        #[test]
        fn a_key_is_accepted_exactly_when_every_byte_is_visible_ascii(s in "\\PC{0,300}") {
            let rule = (1..=255).contains(&s.len()) && s.bytes().all(|b| (0x21..=0x7e).contains(&b));
            proptest::prop_assert_eq!(IdempotencyKey::parse(&s).is_ok(), rule);
        }
    }
}
