//! HTTP/1.1, sans-IO: the request decoder (`request`) and the response
//! encoder (`response`). Bytes in, requests out; responses in, bytes out.

pub mod client;
mod cursor;
pub mod request;
pub mod response;
pub mod url;

/// Elements of every field named `name` (a lowercase name), split on commas,
/// trimmed, empties dropped: how list-valued headers such as `Connection`
/// and `Transfer-Encoding` are read on both sides.
pub(crate) fn list_values<'a>(
    headers: &'a [(String, String)],
    name: &'a str,
) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .iter()
        .filter(move |(n, _)| n == name)
        .flat_map(|(_, v)| v.split(','))
        .map(|item| item.trim_matches([' ', '\t']))
        .filter(|item| !item.is_empty())
}

/// Bytes that would end or corrupt a header line if written into one.
pub(crate) fn is_forbidden_value_byte(b: u8) -> bool {
    matches!(b, b'\r' | b'\n' | b'\0')
}

/// RFC 9110 token: the only legal shape of a field name.
pub(crate) fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}
