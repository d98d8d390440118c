//! The one rule of the header tokens a client chooses (`Idempotency-Key`, `x-request-id`):
//! 1 to `max` visible ASCII characters (`0x21..=0x7E`): no space, no control character,
//! nothing outside ASCII, so a token is safe in a log line, a JSON body and a header.

/// Why a token breaks the rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Its length in bytes, not in `1..=max`.
    Length(usize),
    /// The index of the first byte that is not visible ASCII.
    Character(usize),
}

/// Check `token` against the rule with at most `max` bytes.
pub(crate) fn visible_ascii(token: &[u8], max: usize) -> Result<(), Fault> {
    if !(1..=max).contains(&token.len()) {
        return Err(Fault::Length(token.len()));
    }
    match token.iter().position(|b| !b.is_ascii_graphic()) {
        Some(at) => Err(Fault::Character(at)),
        None => Ok(()),
    }
}
