//! Session ids: the one place their format lives.
//!
//! A substation names each session it books `<substation name>-<token>`: the name of the
//! substation that holds it (which the proxy uses to route `DELETE`), then 128 bits from the
//! operating system's CSPRNG as 32 lowercase hex digits. An id is a capability: whoever holds
//! it may cancel the session, and knowing one id (or any number of them) tells nothing about
//! another, so ids cannot be guessed or walked. Only this module knows the token's form;
//! everyone else makes ids with [`SessionId::generate`], reads them with [`SessionId::parse`]
//! and finds the owner with [`SessionId::owner`].
//!
//! Names may contain `-`, tokens never do, so an id is split at its last `-`.

use crate::name::{SubstationName, is_valid_substation_name};
use std::fmt;

/// Hex digits of the random token (128 bits).
const TOKEN_HEX: usize = 32;

/// A session id. Build one with [`SessionId::generate`] or [`SessionId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId {
    text: String,
    /// Length of the substation-name prefix in `text`.
    name_len: usize,
}

/// The operating system's random source failed (no session can be named safely).
#[derive(Debug, Clone, thiserror::Error)]
#[error("no randomness for a session id: {0}")]
pub struct RandomnessError(String);

impl SessionId {
    /// A new id for a session held by `name`: its name and 128 fresh random bits.
    pub fn generate(name: &SubstationName) -> Result<SessionId, RandomnessError> {
        Ok(SessionId {
            text: random_hex_after(&[name.as_str(), "-"])?,
            name_len: name.as_str().len(),
        })
    }

    /// `id`, if it has the format of a session id (its substation may not exist).
    pub fn parse(id: &str) -> Option<SessionId> {
        let name = SessionId::owner(id)?;
        Some(SessionId {
            text: id.to_string(),
            name_len: name.len(),
        })
    }

    /// The substation-name prefix of `id`, if `id` has the format of a session id. Cheap:
    /// no allocation, one pass from the right.
    pub fn owner(id: &str) -> Option<&str> {
        let (name, token) = id.rsplit_once('-')?;
        let token_ok = token.len() == TOKEN_HEX
            && token
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        (token_ok && is_valid_substation_name(name)).then_some(name)
    }

    /// The name of the substation that holds the session.
    pub fn substation(&self) -> &str {
        &self.text[..self.name_len]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// 128 bits from a cryptographically secure generator: `rand`'s thread-local ChaCha12,
/// seeded from the operating system's CSPRNG and reseeded from it every 64 KiB of output.
/// Unpredictable like the OS's own bits, without a system call per id (an id is made for
/// every booking and every request that comes without one).
pub fn random_bits() -> Result<[u8; TOKEN_HEX / 2], RandomnessError> {
    use rand::RngCore;
    let mut bits = [0u8; TOKEN_HEX / 2];
    rand::thread_rng()
        .try_fill_bytes(&mut bits)
        .map_err(|e| RandomnessError(e.to_string()))?;
    Ok(bits)
}

/// `prefix` (its parts one after another) and 128 fresh random bits as 32 lowercase hex
/// digits, built in one allocation.
pub(crate) fn random_hex_after(prefix: &[&str]) -> Result<String, RandomnessError> {
    let bits = random_bits()?;
    let len: usize = prefix.iter().map(|p| p.len()).sum();
    let mut text = String::with_capacity(len + TOKEN_HEX);
    prefix.iter().for_each(|p| text.push_str(p));
    push_hex128(&mut text, bits);
    Ok(text)
}

/// 128 bits as 32 lowercase hex digits.
pub(crate) fn hex128(bits: [u8; TOKEN_HEX / 2]) -> String {
    let mut text = String::with_capacity(TOKEN_HEX);
    push_hex128(&mut text, bits);
    text
}

/// Append 128 bits to `text` as 32 lowercase hex digits.
fn push_hex128(text: &mut String, bits: [u8; TOKEN_HEX / 2]) {
    // Into bytes first: pushing `char`s one by one encodes each as UTF-8 again.
    let mut digits = [0u8; TOKEN_HEX];
    for (pair, b) in digits.chunks_exact_mut(2).zip(bits) {
        pair[0] = HEX[usize::from(b >> 4)];
        pair[1] = HEX[usize::from(b & 15)];
    }
    text.push_str(std::str::from_utf8(&digits).unwrap_or_default());
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl AsRef<str> for SessionId {
    fn as_ref(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn name(s: &str) -> SubstationName {
        SubstationName::parse(s).unwrap()
    }

    #[test]
    fn tokens_are_the_bits_in_lowercase_hex() {
        let bits = [
            0x00, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xf0, 0x0f, 0x10, 0x9a, 0xbc,
            0xde, 0xff,
        ];
        assert_eq!(hex128(bits), "000123456789abcdeff00f109abcdeff");
    }

    #[test]
    fn an_id_is_the_name_and_128_random_bits() {
        let id = SessionId::generate(&name("s1")).unwrap();
        let (prefix, token) = id.as_str().split_once('-').unwrap();
        assert_eq!(prefix, "s1");
        assert_eq!(token.len(), 32);
        assert_eq!(id.substation(), "s1");
        assert_eq!(SessionId::parse(id.as_str()), Some(id));
    }

    #[test]
    fn ids_do_not_repeat_and_share_no_pattern() {
        let ids: Vec<SessionId> = (0..2000)
            .map(|_| SessionId::generate(&name("s1")).unwrap())
            .collect();
        let distinct: HashSet<&str> = ids.iter().map(SessionId::as_str).collect();
        assert_eq!(distinct.len(), ids.len());
        // Each of the 128 bits is set in about half of the ids: no counter, no fixed part.
        let bits = |id: &SessionId| u128::from_str_radix(&id.as_str()[3..], 16).unwrap();
        for bit in 0..128 {
            let set = ids.iter().filter(|id| bits(id) >> bit & 1 == 1).count();
            assert!(
                (800..=1200).contains(&set),
                "bit {bit} set in {set} of 2000"
            );
        }
    }

    #[test]
    fn a_name_with_dashes_is_split_from_the_right() {
        let id = SessionId::generate(&name("north-east-1")).unwrap();
        assert_eq!(SessionId::owner(id.as_str()), Some("north-east-1"));
        assert_eq!(
            SessionId::parse(id.as_str()).unwrap().substation(),
            "north-east-1"
        );
    }

    #[test]
    fn strings_that_are_not_ids_have_no_owner() {
        let token = "0123456789abcdef0123456789abcdef";
        for bad in [
            String::new(),
            "s1".into(),
            format!("-{token}"),
            format!("s1-{}", &token[1..]),
            format!("s1-{token}0"),
            format!("s1-{}", token.to_uppercase()),
            format!("s 1-{token}"),
            format!("s1-{token}/x"),
            "s1-7193-42".into(),
        ] {
            assert_eq!(SessionId::owner(&bad), None, "{bad:?}");
            assert_eq!(SessionId::parse(&bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_new_id_parses_back_to_its_owner(n in "[A-Za-z0-9_.-]{1,64}") {
            let id = SessionId::generate(&name(&n)).unwrap();
            let text = id.to_string();
            proptest::prop_assert_eq!(SessionId::owner(id.as_str()), Some(n.as_str()));
            proptest::prop_assert_eq!(SessionId::parse(&text), Some(id));
        }

        #[test]
        fn owner_never_panics(s in "\\PC{0,100}") {
            let _ = SessionId::owner(&s);
        }
    }
}
