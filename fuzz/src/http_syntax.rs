//! HTTP syntax the request and response round trips build from: methods,
//! header names, and the bytes `httparse` takes.

use super::support::Input;

pub(super) const METHODS: [&str; 6] = ["POST", "GET", "DELETE", "HEAD", "PUT", "OPTIONS"];
const HEADER_NAMES: [&str; 10] = [
    "Accept",
    "Content-Type",
    "Mcp-Session-Id",
    "Content-Length",
    "Transfer-Encoding",
    "Connection",
    "Host",
    "X-Filler",
    "Last-Event-ID",
    "Expect",
];

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

pub(super) fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

/// Bytes `httparse` takes in a request-target.
pub(super) fn is_target_byte(b: u8) -> bool {
    (b'!'..=0x7e).contains(&b) || b >= 0x80
}

/// Bytes `httparse` takes in a field value.
pub(super) fn is_value_byte(b: u8) -> bool {
    b == b'\t' || (b' '..=0x7e).contains(&b) || b >= 0x80
}

pub(super) fn strip_forbidden(text: &str) -> String {
    text.chars()
        .filter(|c| !matches!(c, '\r' | '\n' | '\0'))
        .collect()
}

pub(super) fn trim_ows(text: &str) -> &str {
    text.trim_matches([' ', '\t'])
}

/// A name from the pool of headers that matter, or a fuzzer-made one.
pub(super) fn header_name(input: &mut Input<'_>) -> String {
    let pick = usize::from(input.byte());
    match HEADER_NAMES.get(pick % 16) {
        Some(name) => (*name).to_string(),
        None => input.string(12),
    }
}
