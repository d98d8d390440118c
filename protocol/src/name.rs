//! Substation names: the one rule for the name a substation answers to.
//!
//! A name is 1 to 64 characters out of `A-Z a-z 0-9 _ . -` (ASCII). The rule keeps names
//! safe as Prometheus label values, in URLs and in the `x-gridlb-substation` header, and it
//! is what the proxy's config, the substation's `--id` and session ids all check, here and
//! nowhere else. Names may contain `-`, so a session id is split from the right (see
//! [`crate::SessionId`]).

use std::fmt;

/// The longest substation name.
pub const MAX_NAME_LEN: usize = 64;

/// A valid substation name. Build one with [`SubstationName::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubstationName(String);

/// A string that breaks the name rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("substation name {0:?} must be 1 to 64 characters out of A-Z a-z 0-9 _ . -")]
pub struct NameError(pub String);

/// Whether `name` follows the rule, for callers that only check.
pub fn is_valid_substation_name(name: &str) -> bool {
    (1..=MAX_NAME_LEN).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}

impl SubstationName {
    /// `name`, if it follows the rule.
    pub fn parse(name: &str) -> Result<SubstationName, NameError> {
        if is_valid_substation_name(name) {
            Ok(SubstationName(name.to_string()))
        } else {
            Err(NameError(name.to_string()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SubstationName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for SubstationName {
    type Err = NameError;

    fn from_str(s: &str) -> Result<SubstationName, NameError> {
        SubstationName::parse(s)
    }
}

impl AsRef<str> for SubstationName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_letters_digits_and_punctuation_are_accepted() {
        for good in ["s1", "north-east-1", "a.b_c", "X", &"z".repeat(64)] {
            let name = SubstationName::parse(good).unwrap();
            assert_eq!((name.as_str(), name.to_string().as_str()), (good, good));
        }
    }

    #[test]
    fn empty_long_or_odd_names_are_rejected_with_the_rule() {
        for bad in ["", &"z".repeat(65), "s 1", "s/1", "s1\n", "é", "s:1"] {
            let err = SubstationName::parse(bad).unwrap_err();
            assert!(err.to_string().contains("A-Z a-z 0-9 _ . -"), "{err}");
            assert!(!is_valid_substation_name(bad));
        }
    }

    proptest::proptest! {
        #[test]
        fn parse_agrees_with_the_check(s in "\\PC{0,70}") {
            proptest::prop_assert_eq!(SubstationName::parse(&s).is_ok(), is_valid_substation_name(&s));
        }

        #[test]
        fn every_name_from_the_alphabet_is_valid(s in "[A-Za-z0-9_.-]{1,64}") {
            proptest::prop_assert!(is_valid_substation_name(&s));
        }
    }
}
