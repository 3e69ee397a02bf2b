//! HTTP/1.1, sans-IO. The server role: the request decoder (`request`) and
//! the response encoder (`response`). The client role (`client`): the
//! request encoder and the response decoder. Both roles' decoders share one
//! framing core (`framing`) over one byte cursor (`cursor`); both encoders
//! share the header-safety predicates here.

pub mod client;
mod cursor;
mod framing;
pub mod request;
pub mod response;
pub mod url;

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
