//! JWT access tokens (RFC 7519, in the RFC 9068 profile the MCP
//! authorization spec points to), sans-IO: a compact JWS checked against the
//! issuer's `KeySet`, and its claims against the resource server's rules
//! (`iss`, `aud` as the resource of RFC 8707, `exp` and `nbf` with a
//! leeway, a `sub`). The time is an input, in seconds since the Unix epoch.
//!
//! The claims are read, and checked, before the signature: a token for
//! another issuer or audience, or an expired one, is refused without
//! looking for its key, so such tokens can never make mcphop fetch the key
//! set again. Nothing of an unverified token is trusted beyond that refusal.

use serde_json::Value;

use super::jwks::{base64url, Alg, KeySet, SignatureCheck};

/// Allowed clock difference with the issuer, for `exp` and `nbf`.
pub(crate) const DEFAULT_LEEWAY_SECS: u64 = 60;

/// What a token must say to be accepted here.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    /// The exact `iss`.
    pub issuer: String,
    /// A value `aud` must be or hold: this resource's canonical URI.
    pub audience: String,
    pub leeway_secs: u64,
}

/// A token that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validated {
    /// Its `sub`.
    pub subject: String,
    /// When it stops being accepted: its `exp` plus the leeway, in
    /// seconds since the epoch.
    pub valid_until: u64,
}

/// Why a token was refused. Never carries the token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Not a compact JWS with a JSON header and claims, or a claim of the
    /// wrong type; the text says what.
    Malformed(&'static str),
    /// `alg` is `none`, an HMAC one, or one mcphop does not know; or the
    /// header has a `crit` extension mcphop does not understand.
    Algorithm,
    /// No key of the set is the token's: the set may need a refresh.
    UnknownKey,
    BadSignature,
    Expired,
    NotYetValid,
    WrongIssuer,
    WrongAudience,
}

impl Rejection {
    /// What the log and the 401's `error_description` say.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Rejection::Malformed(what) => what,
            Rejection::Algorithm => "the token's signature algorithm is not accepted",
            Rejection::UnknownKey => "the token is signed by a key the issuer does not publish",
            Rejection::BadSignature => "the token's signature is not valid",
            Rejection::Expired => "the token has expired",
            Rejection::NotYetValid => "the token is not valid yet",
            Rejection::WrongIssuer => "the token is from another issuer",
            Rejection::WrongAudience => "the token is not for this resource",
        }
    }
}

/// Checks `token` (the bearer value, compact JWS) at `now`.
pub(crate) fn validate(
    token: &str,
    keys: &KeySet,
    rules: &Rules,
    now: u64,
) -> Result<Validated, Rejection> {
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Rejection::Malformed(
            "not a JWT: three base64url parts expected",
        ));
    };
    let header = json_part(header, "not a JWT: the header is not base64url JSON")?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .and_then(Alg::from_name)
        .ok_or(Rejection::Algorithm)?;
    if header.get("crit").is_some() {
        return Err(Rejection::Algorithm);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.as_str()),
        Some(_) => return Err(Rejection::Malformed("the token's kid is not a string")),
    };
    let claims_json = json_part(claims, "not a JWT: the claims are not base64url JSON")?;
    let validated = check_claims(&claims_json, rules, now)?;
    let signature =
        base64url(signature).map_err(|_| Rejection::Malformed("the signature is not base64url"))?;
    let signing_input = token.len() - signature_part_len(token);
    let message = token.as_bytes().get(..signing_input).unwrap_or_default();
    match keys.check(kid, alg, message, &signature) {
        SignatureCheck::Valid => Ok(validated),
        SignatureCheck::Invalid => Err(Rejection::BadSignature),
        SignatureCheck::UnknownKey => Err(Rejection::UnknownKey),
    }
}

/// Length of `.signature` at the end of a three-part token.
fn signature_part_len(token: &str) -> usize {
    token.rfind('.').map_or(0, |dot| token.len() - dot)
}

fn json_part(part: &str, error: &'static str) -> Result<Value, Rejection> {
    let bytes = base64url(part).map_err(|_| Rejection::Malformed(error))?;
    match serde_json::from_slice(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Rejection::Malformed(error)),
    }
}

/// A NumericDate claim, in whole seconds (fractions are allowed by RFC
/// 7519 and dropped: rounding down only ever shortens a token's life).
fn seconds(value: &Value) -> Option<u64> {
    if let Some(whole) = value.as_u64() {
        return Some(whole);
    }
    let float = value.as_f64()?;
    (float.is_finite() && float >= 0.0).then_some(float as u64)
}

fn check_claims(claims: &Value, rules: &Rules, now: u64) -> Result<Validated, Rejection> {
    match claims.get("iss") {
        Some(Value::String(issuer)) if *issuer == rules.issuer => {}
        _ => return Err(Rejection::WrongIssuer),
    }
    let for_us = match claims.get("aud") {
        Some(Value::String(audience)) => *audience == rules.audience,
        Some(Value::Array(audiences)) => audiences
            .iter()
            .any(|audience| audience.as_str() == Some(rules.audience.as_str())),
        _ => false,
    };
    if !for_us {
        return Err(Rejection::WrongAudience);
    }
    let expires = claims
        .get("exp")
        .map(|exp| seconds(exp).ok_or(Rejection::Malformed("the token's exp is not a time")))
        .transpose()?
        .ok_or(Rejection::Malformed("the token has no exp"))?;
    if now >= expires.saturating_add(rules.leeway_secs) {
        return Err(Rejection::Expired);
    }
    if let Some(not_before) = claims.get("nbf") {
        let not_before =
            seconds(not_before).ok_or(Rejection::Malformed("the token's nbf is not a time"))?;
        if now.saturating_add(rules.leeway_secs) < not_before {
            return Err(Rejection::NotYetValid);
        }
    }
    let subject = match claims.get("sub") {
        Some(Value::String(subject)) if !subject.is_empty() => subject.clone(),
        _ => return Err(Rejection::Malformed("the token has no sub")),
    };
    Ok(Validated {
        subject,
        valid_until: expires.saturating_add(rules.leeway_secs),
    })
}

#[cfg(test)]
#[path = "jwt_tests.rs"]
mod tests;
