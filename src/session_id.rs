//! Session ids: 128 bits from the operating system's CSPRNG, written as 32
//! lowercase hex digits, which are visible ASCII as the MCP transport requires.
//!
//! With `--instance-id ID` every id this instance mints is `ID.` followed by
//! those 32 hex digits (`b.3f2a…`): the tag comes first, up to the first
//! `.`, so a balancer routes a session back to the instance that holds it
//! with one anchored regex (`^([a-z0-9-]+)\.`) on `Mcp-Session-Id` or on a
//! legacy `sessionId` query. Without an instance id, ids are the bare 32 hex
//! digits, as they always were. An id's tag is a routing hint only: it is
//! never trusted to find a session, the session table is.

use std::fmt::Write;

/// Bytes of randomness in a session id.
pub(crate) const SESSION_ID_BYTES: usize = 16;
/// Longest `--instance-id`: the tag is repeated in every session id.
pub(crate) const MAX_INSTANCE_ID_LEN: usize = 16;
/// What separates an instance's tag from the random part of a session id.
pub(crate) const TAG_SEPARATOR: char = '.';

/// Checks an `--instance-id`: 1 to `MAX_INSTANCE_ID_LEN` characters of
/// `[a-z0-9-]`, so that it is URL-safe, header-safe and cannot hold the
/// separator.
pub(crate) fn check_instance_id(text: &str) -> Result<(), String> {
    let allowed = |byte: u8| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-';
    if text.is_empty() || text.len() > MAX_INSTANCE_ID_LEN || !text.bytes().all(allowed) {
        return Err(format!(
            "--instance-id takes 1 to {MAX_INSTANCE_ID_LEN} characters of a-z, 0-9 and '-': {text:?}"
        ));
    }
    Ok(())
}

/// A fresh session id, tagged with `instance` when given, or an error when
/// the OS has no randomness to give.
pub(crate) fn new_session_id(instance: Option<&str>) -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; SESSION_ID_BYTES];
    getrandom::getrandom(&mut bytes)?;
    let tag_len = instance.map_or(0, |tag| tag.len() + 1);
    let mut id = String::with_capacity(tag_len + SESSION_ID_BYTES * 2);
    if let Some(tag) = instance {
        id.push_str(tag);
        id.push(TAG_SEPARATOR);
    }
    for byte in bytes {
        // Writing to a String cannot fail.
        let _ = write!(id, "{byte:02x}");
    }
    Ok(id)
}

/// The instance tag an id carries (the part before the first separator),
/// if it has a well-formed one.
pub(crate) fn tag_of(id: &str) -> Option<&str> {
    let (tag, _) = id.split_once(TAG_SEPARATOR)?;
    check_instance_id(tag).ok().map(|()| tag)
}

/// The tag of an id minted by another instance than `instance` (none for
/// an untagged id, or one of `instance`'s own).
pub(crate) fn foreign_tag<'a>(id: &'a str, instance: Option<&str>) -> Option<&'a str> {
    tag_of(id).filter(|tag| Some(*tag) != instance)
}

/// An unknown session id whose tag names another instance: a balancer sent
/// it here (its instance is gone, or the routing is wrong). It is answered
/// 404 like any unknown id; this says why, at debug level.
pub(crate) fn log_foreign_tag(id: &str, instance: Option<&str>) {
    if let Some(tag) = foreign_tag(id, instance) {
        log::debug!(
            "session {}: tagged for instance {tag:?}, not this one: 404",
            short(id)
        );
    }
}

/// The start of an id, enough to tell sessions apart in logs without
/// writing the full bearer-like id into them: the tag, if any, and 8 hex
/// digits.
pub(crate) fn short(id: &str) -> &str {
    let start = tag_of(id).map_or(0, |tag| tag.len() + 1);
    id.get(..start + 8).unwrap_or(id)
}

/// True when `text` could be a session id we minted; anything else is unknown
/// without a table lookup, and cannot smuggle odd bytes into logs.
#[cfg(test)]
pub(crate) fn is_well_formed(text: &str) -> bool {
    let random = match text.split_once(TAG_SEPARATOR) {
        Some((tag, random)) if check_instance_id(tag).is_ok() => random,
        Some(_) => return false,
        None => text,
    };
    random.len() == SESSION_ID_BYTES * 2 && random.bytes().all(|byte| byte.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_visible_ascii_and_distinct() {
        let first = new_session_id(None).unwrap();
        let second = new_session_id(None).unwrap();
        assert_ne!(first, second);
        assert_eq!(first.len(), 32);
        assert!(is_well_formed(&first));
        assert!(first.bytes().all(|byte| (0x21..=0x7e).contains(&byte)));
        assert!(!is_well_formed("short"));
        assert!(!is_well_formed(&"g".repeat(32)));
        assert_eq!(tag_of(&first), None);
        assert_eq!(short(&first), &first[..8]);
    }

    #[test]
    fn tagged_ids_carry_the_tag_first() {
        let id = new_session_id(Some("eu-1")).unwrap();
        assert!(id.starts_with("eu-1."), "{id}");
        assert_eq!(id.len(), 5 + 32);
        assert!(is_well_formed(&id));
        assert_eq!(tag_of(&id), Some("eu-1"));
        assert_eq!(short(&id), &id[..5 + 8]);
        assert_ne!(id, new_session_id(Some("eu-1")).unwrap());
        // Visible ASCII and URL-safe: fits a header and a query unescaped.
        assert!(id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'));
    }

    #[test]
    fn tags_from_clients_are_checked() {
        assert_eq!(tag_of("A.0123"), None);
        assert_eq!(tag_of(".0123"), None);
        assert_eq!(tag_of("a b.0123"), None);
        assert_eq!(tag_of(&format!("{}.00", "x".repeat(17))), None);
        assert_eq!(tag_of("b.x.y"), Some("b"));
        assert!(!is_well_formed("B.00112233445566778899aabbccddeeff"));
        assert!(is_well_formed("b.00112233445566778899aabbccddeeff"));
        assert_eq!(short("é.abc"), "é.abc");
        assert_eq!(short("ab"), "ab");
    }

    #[test]
    fn instance_ids_are_checked() {
        for good in ["a", "b2", "eu-west-1", &"z".repeat(16)] {
            assert!(check_instance_id(good).is_ok(), "{good}");
        }
        for bad in ["", "A", "a.b", "a_b", "a/b", &"z".repeat(17), "ü"] {
            assert!(check_instance_id(bad).is_err(), "{bad}");
        }
    }
}
