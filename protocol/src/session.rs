//! Session ids: the one place their format lives.
//!
//! A substation names each session it books `<substation name>-<epoch>-<counter>`: the
//! name of the substation that holds it (which the proxy uses to route `DELETE`), then the
//! substation's report epoch and a counter that rises per booking. Only this module knows
//! the part after the name; everyone else makes ids with [`SessionId::new`], reads them
//! with [`SessionId::parse`] and finds the owner with [`SessionId::owner`]. (The design
//! will replace the part after the name by 128 random bits; callers will not change.)
//!
//! Names may contain `-`, so an id is split from the right: the last two `-`-separated
//! parts are decimal numbers, and everything before them is the name.

use crate::name::{SubstationName, is_valid_substation_name};
use std::fmt;

/// A session id. Build one with [`SessionId::new`] or [`SessionId::parse`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SessionId {
    text: String,
    /// Length of the substation-name prefix in `text`.
    name_len: usize,
}

impl SessionId {
    /// The id of the `counter`-th session booked by `name` in its report epoch `epoch`.
    pub fn new(name: &SubstationName, epoch: u64, counter: u64) -> SessionId {
        SessionId {
            text: format!("{name}-{epoch}-{counter}"),
            name_len: name.as_str().len(),
        }
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
        let mut parts = id.rsplitn(3, '-');
        let (counter, epoch, name) = (parts.next()?, parts.next()?, parts.next()?);
        let number = |s: &str| {
            (1..=20).contains(&s.len())
                && s.bytes().all(|b| b.is_ascii_digit())
                && s.parse::<u64>().is_ok()
        };
        (number(counter) && number(epoch) && is_valid_substation_name(name)).then_some(name)
    }

    /// The name of the substation that holds the session.
    pub fn substation(&self) -> &str {
        &self.text[..self.name_len]
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
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

    fn name(s: &str) -> SubstationName {
        SubstationName::parse(s).unwrap()
    }

    #[test]
    fn an_id_is_the_name_the_epoch_and_the_counter() {
        let id = SessionId::new(&name("s1"), 7193, 42);
        assert_eq!(id.to_string(), "s1-7193-42");
        assert_eq!(id.substation(), "s1");
        assert_eq!(SessionId::parse("s1-7193-42"), Some(id));
    }

    #[test]
    fn a_name_with_dashes_is_split_from_the_right() {
        let id = SessionId::new(&name("north-east-1"), 5, 1);
        assert_eq!(SessionId::owner(id.as_str()), Some("north-east-1"));
        assert_eq!(
            SessionId::parse(id.as_str()).unwrap().substation(),
            "north-east-1"
        );
    }

    #[test]
    fn strings_that_are_not_ids_have_no_owner() {
        for bad in [
            "",
            "s1",
            "s1-7",
            "-1-2",
            "s1-x-2",
            "s1-1-",
            "s1-+1-2",
            "s 1-1-2",
            "s1-1-2/x",
            "s1-1-99999999999999999999",
        ] {
            assert_eq!(SessionId::owner(bad), None, "{bad:?}");
            assert_eq!(SessionId::parse(bad), None, "{bad:?}");
        }
    }

    proptest::proptest! {
        #[test]
        fn every_new_id_parses_back_to_its_owner(
            n in "[A-Za-z0-9_.-]{1,64}", epoch: u64, counter: u64,
        ) {
            let id = SessionId::new(&name(&n), epoch, counter);
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
