//! Inbound authentication's rules, sans-IO: the static bearer token file's
//! text to a `TokenSet`, a request's `Authorization` header to the
//! `Principal` it proves (compared in constant time), and the 401 a missing
//! or wrong token earns. Tokens never leave this module in a message: logs
//! and errors name a token by its name, or as `token #N` (its place among
//! the file's tokens).

use std::fmt;
use std::sync::Arc;

use serde_json::value::RawValue;

use crate::http::request::Request;
use crate::jsonrpc;
use crate::mcp::endpoint::Reply;

/// Who a request proves to be: a token's name (`name:token` lines), or
/// `token #N` for an unnamed one. A session remembers the principal that
/// created it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Principal(Arc<str>);

impl Principal {
    /// The principal an OAuth access token proves: its subject at its
    /// issuer.
    pub(crate) fn of_subject(subject: &str, issuer: &str) -> Principal {
        Principal(format!("{subject} ({issuer})").into())
    }

    /// The principal's name, for logs.
    pub(crate) fn name(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One accepted token and the principal it proves.
#[derive(Clone)]
struct Entry {
    principal: Principal,
    token: Box<[u8]>,
}

/// The accepted tokens (never printed: `Debug` shows only the names).
#[derive(Clone, Default)]
pub(crate) struct TokenSet {
    entries: Vec<Entry>,
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|entry| entry.principal.name()))
            .finish()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// No `Authorization: Bearer` header.
    Missing,
    /// A bearer token that is not in the set, or a malformed header.
    Invalid,
}

/// RFC 6750's `b64token`: the characters a bearer token may hold.
fn is_token_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~' | b'+' | b'/' | b'=')
}

fn is_name_char(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'@')
}

impl TokenSet {
    /// Parses a token file: one token per line, or `name:token`; blank
    /// lines and lines starting with `#` are skipped. Every error names its
    /// line, never the token.
    pub(crate) fn parse(text: &str) -> Result<TokenSet, String> {
        let mut entries: Vec<Entry> = Vec::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = number + 1;
            let (name, token) = match line.split_once(':') {
                Some((name, token)) => (Some(name.trim()), token.trim()),
                None => (None, line),
            };
            if let Some(name) = name {
                if name.is_empty() || !name.bytes().all(is_name_char) {
                    return Err(format!("line {at}: a name is made of A-Z a-z 0-9 - . _ @"));
                }
                if entries.iter().any(|entry| entry.principal.name() == name) {
                    return Err(format!("line {at}: the name {name:?} is used twice"));
                }
            }
            let trailing = token.trim_end_matches('=');
            if trailing.is_empty() || !token.bytes().all(is_token_char) || trailing.contains('=') {
                return Err(format!(
                    "line {at}: not a bearer token (RFC 6750: A-Z a-z 0-9 - . _ ~ + /, then = padding)"
                ));
            }
            if entries
                .iter()
                .any(|entry| constant_time_eq(&entry.token, token.as_bytes()))
            {
                return Err(format!("line {at}: the same token is listed twice"));
            }
            let principal = match name {
                Some(name) => name.to_string(),
                None => format!("token #{}", entries.len() + 1),
            };
            entries.push(Entry {
                principal: Principal(principal.into()),
                token: token.as_bytes().into(),
            });
        }
        if entries.is_empty() {
            return Err("no token in the file".into());
        }
        Ok(TokenSet { entries })
    }

    /// How many tokens it holds.
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The principal `token` proves. Every token is compared, in constant
    /// time, whichever matches.
    pub(crate) fn check_token(&self, token: &str) -> Result<Principal, Refused> {
        let token = token.as_bytes();
        let mut found = None;
        for entry in &self.entries {
            let equal = constant_time_eq(&entry.token, token);
            if equal && found.is_none() {
                found = Some(&entry.principal);
            }
        }
        found.cloned().ok_or(Refused::Invalid)
    }
}

/// The bearer token of `request`'s one `Authorization` header.
pub(crate) fn bearer(request: &Request) -> Result<&str, Refused> {
    let mut headers = request
        .headers
        .iter()
        .filter(|(name, _)| name == "authorization");
    let header = match (headers.next(), headers.next()) {
        (None, _) => return Err(Refused::Missing),
        (Some(_), Some(_)) => return Err(Refused::Invalid),
        (Some((_, value)), None) => value.trim(),
    };
    let (scheme, token) = header.split_once(' ').ok_or(Refused::Invalid)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Refused::Invalid);
    }
    Ok(token.trim_start())
}

/// Compares two byte strings in time that depends on their lengths only.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

/// The 401 for a refused request: `WWW-Authenticate: Bearer` (RFC 6750,
/// with `error="invalid_token"` when a token was presented), pointing to
/// the protected resource metadata (RFC 9728) when there is some, and a
/// JSON-RPC error body. `why` (never the token) becomes the
/// `error_description`.
pub(crate) fn unauthorized(refused: Refused, metadata: Option<&str>, why: Option<&str>) -> Reply {
    let mut challenge = String::from(r#"Bearer realm="mcphop""#);
    if let Some(url) = metadata {
        challenge.push_str(&format!(r#", resource_metadata="{url}""#));
    }
    let text = match refused {
        Refused::Missing => "Unauthorized: an Authorization: Bearer token is required",
        Refused::Invalid => {
            challenge.push_str(r#", error="invalid_token""#);
            if let Some(why) = why {
                // A quoted-string: the texts are mcphop's own, never input.
                challenge.push_str(&format!(r#", error_description="{why}""#));
            }
            "Unauthorized: the bearer token is not valid"
        }
    };
    let text = match (refused, why) {
        (Refused::Invalid, Some(why)) => format!("{text}: {why}"),
        _ => text.to_string(),
    };
    Reply::error(401, RawValue::NULL, jsonrpc::INVALID_REQUEST, &text)
        .with_header("WWW-Authenticate", challenge)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(authorization: &[&str]) -> Request {
        let mut headers = vec![("host".to_string(), "127.0.0.1:8080".to_string())];
        for value in authorization {
            headers.push(("authorization".into(), value.to_string()));
        }
        Request {
            method: "POST".into(),
            target: "/mcp".into(),
            minor_version: 1,
            headers,
            body: Vec::new(),
            keep_alive: true,
        }
    }

    const FILE: &str = "# clients\n\nalice:aaaa-1111\n  bbbb.2222  \nci-bot : cccc~3333==\n";

    #[test]
    fn parses_names_comments_and_blank_lines() {
        let set = TokenSet::parse(FILE).unwrap();
        assert_eq!(set.len(), 3);
        assert_eq!(format!("{set:?}"), r#"["alice", "token #2", "ci-bot"]"#);
    }

    #[test]
    fn broken_files_are_refused_without_naming_the_token() {
        for (text, what) in [
            ("", "no token"),
            ("# only a comment\n", "no token"),
            ("alice:\n", "line 1"),
            (":secret\n", "line 1"),
            ("a b:secret\n", "line 1"),
            ("ok\nsec ret\n", "line 2"),
            ("alice:one\nalice:two\n", "twice"),
            ("one\nbob:one\n", "twice"),
            ("secret=x\n", "line 1"),
        ] {
            let error = TokenSet::parse(text).unwrap_err();
            assert!(error.contains(what), "{text:?}: {error}");
            assert!(!error.contains("secret"), "{error}");
        }
    }

    #[test]
    fn checks_the_bearer_header() {
        let set = TokenSet::parse(FILE).unwrap();
        let name = |headers: &[&str]| {
            let request = request(headers);
            let token = bearer(&request)?;
            set.check_token(token).map(|p| p.to_string())
        };
        assert_eq!(name(&["Bearer aaaa-1111"]), Ok("alice".into()));
        assert_eq!(name(&["bearer   bbbb.2222 "]), Ok("token #2".into()));
        assert_eq!(name(&["BEARER cccc~3333=="]), Ok("ci-bot".into()));
        assert_eq!(name(&[]), Err(Refused::Missing));
        for wrong in [
            &["Bearer aaaa-111"][..],
            &["Bearer aaaa-11111"],
            &["Bearer "],
            &["Bearer"],
            &["Basic aaaa-1111"],
            &["aaaa-1111"],
            &["Bearer alice:aaaa-1111"],
            &["Bearer aaaa-1111", "Bearer aaaa-1111"],
        ] {
            assert_eq!(name(wrong), Err(Refused::Invalid), "{wrong:?}");
        }
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
    }

    #[test]
    fn the_401_challenges_for_a_bearer_token() {
        for refused in [Refused::Missing, Refused::Invalid] {
            let reply = unauthorized(refused, None, None);
            assert_eq!(reply.status, 401);
            let challenge = &reply.headers[0];
            assert_eq!(challenge.0, "WWW-Authenticate");
            assert!(challenge.1.starts_with("Bearer "), "{challenge:?}");
            let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
            assert_eq!(body["error"]["code"], -32600);
        }
        assert!(unauthorized(Refused::Invalid, None, None).headers[0]
            .1
            .contains("invalid_token"));
        let reply = unauthorized(
            Refused::Invalid,
            Some("https://mcp.example/.well-known/oauth-protected-resource/mcp"),
            Some("the token has expired"),
        );
        assert_eq!(
            reply.headers[0].1,
            "Bearer realm=\"mcphop\", \
             resource_metadata=\"https://mcp.example/.well-known/oauth-protected-resource/mcp\", \
             error=\"invalid_token\", error_description=\"the token has expired\""
        );
        let body: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(
            body["error"]["message"],
            "Unauthorized: the bearer token is not valid: the token has expired"
        );
    }
}
