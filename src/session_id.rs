//! Session ids: 128 bits from the operating system's CSPRNG, written as 32
//! lowercase hex digits, which are visible ASCII as the MCP transport requires.

use std::fmt::Write;

/// Bytes of randomness in a session id.
pub const SESSION_ID_BYTES: usize = 16;

/// A fresh session id, or an error when the OS has no randomness to give.
pub fn new_session_id() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    getrandom::getrandom(&mut bytes)?;
    let mut id = String::with_capacity(SESSION_ID_BYTES * 2);
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    Ok(id)
}

/// True when `text` could be a session id we minted; anything else is unknown
/// without a table lookup, and cannot smuggle odd bytes into logs.
#[cfg(test)]
pub fn is_well_formed(text: &str) -> bool {
    text.len() == SESSION_ID_BYTES * 2 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_visible_ascii_and_distinct() {
        let first = new_session_id().unwrap();
        let second = new_session_id().unwrap();
        assert_ne!(first, second);
        assert!(is_well_formed(&first));
        assert!(first.bytes().all(|byte| (0x21..=0x7e).contains(&byte)));
        assert!(!is_well_formed("short"));
        assert!(!is_well_formed(&"g".repeat(32)));
    }
}
