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
