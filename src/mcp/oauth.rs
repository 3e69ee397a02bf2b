//! mcphop as an OAuth 2.1 resource server (the MCP authorization spec,
//! revisions 2025-06-18 and 2025-11-25), sans-IO: which bearer tokens are
//! let in, when the issuer's documents must be fetched, and what is served
//! about it. The reactor runs the fetches (`reactor/key_fetch.rs`) and
//! parks requests while keys they need are on their way; everything it
//! decides is decided here, with the wall clock (seconds since the epoch,
//! for token times) and the loop's `Instant` as inputs.
//!
//! - A token is a JWT checked by `jwt::validate`; one that passed is kept
//!   (`tokens`) until it expires, so a session's calls cost a map lookup,
//!   not a signature check.
//! - The key set is found from the issuer's metadata (RFC 8414, then OpenID
//!   Connect discovery), or given. It is fetched at start-up, and again
//!   when a token names a key it lacks, at most once per `min_refresh`
//!   (after a failed fetch, once per `RETRY_AFTER_FAILURE`). Keys already
//!   held stay in use whatever a later fetch does.
//! - The protected resource metadata (RFC 9728) is served at
//!   `/.well-known/oauth-protected-resource` plus the resource's path (and
//!   at the bare well-known path), and every 401 points to it.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use log::{debug, info, warn};
use serde_json::{json, Value};

use super::auth::{unauthorized, Principal, Refused};
use super::endpoint::Reply;
use super::jwks::KeySet;
use super::jwt::{self, Rejection, Rules};
use crate::http::url::UpstreamUrl;
use crate::jsonrpc;

/// Least time between two fetches of the key set that a token with an
/// unknown key asks for.
pub const DEFAULT_MIN_REFRESH: Duration = Duration::from_secs(60);
/// Least time between a failed fetch and the next.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);
/// Tokens kept once validated; past this, expired ones are dropped, and if
/// none is, all are (they are checked again on their next use).
const MAX_CACHED_TOKENS: usize = 10_000;
/// The well-known path of RFC 9728.
const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// What the operator configured.
#[derive(Debug, Clone, PartialEq)]
pub struct OAuthConfig {
    /// The authorization server's issuer identifier (`--auth-issuer`).
    pub issuer: String,
    /// This resource's canonical URI (`--auth-audience`): what `aud` must
    /// hold and what the metadata names.
    pub audience: String,
    /// The key set's URL (`--auth-jwks-url`); found from the issuer's
    /// metadata when none.
    pub jwks_url: Option<String>,
    /// `--auth-jwks-refresh`.
    pub min_refresh: Duration,
}

impl Default for OAuthConfig {
    /// Nothing configured.
    fn default() -> OAuthConfig {
        OAuthConfig {
            issuer: String::new(),
            audience: String::new(),
            jwks_url: None,
            min_refresh: DEFAULT_MIN_REFRESH,
        }
    }
}

/// What to do with a request's bearer token.
#[derive(Debug)]
pub(crate) enum Verdict {
    Allowed(Principal),
    /// Answer this (401, or 503 when the keys cannot be had).
    Refused(Reply),
    /// The token names a key not held yet and a fetch is on its way (or
    /// due): ask again once it is over.
    AwaitKeys,
}

/// Which document is being fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fetching {
    /// The `n`th of the issuer's metadata URLs.
    Metadata(usize),
    Keys,
}

/// The resource server's state.
#[derive(Debug)]
pub(crate) struct ResourceServer {
    rules: Rules,
    /// The issuer's metadata URLs, tried in order while the key set's URL
    /// is unknown.
    discovery: Vec<String>,
    jwks_url: Option<String>,
    keys: KeySet,
    min_refresh: Duration,
    /// A fetch is wanted and not started yet.
    wanted: bool,
    fetching: Option<Fetching>,
    /// When the last fetch ended, and whether it brought keys.
    last: Option<(Instant, bool)>,
    tokens: HashMap<Box<str>, (Principal, u64)>,
    /// The RFC 9728 document, and where it is published.
    metadata: Vec<u8>,
    metadata_url: String,
    metadata_paths: [String; 2],
}

impl ResourceServer {
    /// Checks the configuration; a fetch of the keys is due at once.
    pub(crate) fn new(config: &OAuthConfig) -> Result<ResourceServer, String> {
        let issuer = UpstreamUrl::parse(&config.issuer)
            .map_err(|error| format!("--auth-issuer: {error}"))?;
        let audience = UpstreamUrl::parse(&config.audience)
            .map_err(|error| format!("--auth-audience: {error}"))?;
        if let Some(url) = &config.jwks_url {
            UpstreamUrl::parse(url).map_err(|error| format!("--auth-jwks-url: {error}"))?;
        }
        let origin = |url: &UpstreamUrl| format!("{}://{}", url.scheme.as_str(), url.authority());
        let path_of = |url: &UpstreamUrl| url.target.trim_end_matches('/').to_string();
        let issuer_path = path_of(&issuer);
        let discovery = vec![
            format!(
                "{}/.well-known/oauth-authorization-server{issuer_path}",
                origin(&issuer)
            ),
            format!(
                "{}{issuer_path}/.well-known/openid-configuration",
                origin(&issuer)
            ),
        ];
        let resource_path = path_of(&audience);
        let metadata = json!({
            "resource": config.audience,
            "authorization_servers": [config.issuer],
            "bearer_methods_supported": ["header"],
            "resource_name": "mcphop",
        });
        Ok(ResourceServer {
            rules: Rules {
                issuer: config.issuer.clone(),
                audience: config.audience.clone(),
                leeway_secs: jwt::DEFAULT_LEEWAY_SECS,
            },
            discovery,
            jwks_url: config.jwks_url.clone(),
            keys: KeySet::default(),
            min_refresh: config.min_refresh,
            wanted: true,
            fetching: None,
            last: None,
            tokens: HashMap::new(),
            metadata: metadata.to_string().into_bytes(),
            metadata_url: format!("{}{METADATA_PATH}{resource_path}", origin(&audience)),
            metadata_paths: [
                METADATA_PATH.to_string(),
                format!("{METADATA_PATH}{resource_path}"),
            ],
        })
    }

    /// The protected resource metadata, if `path` is where it is served.
    pub(crate) fn metadata_reply(&self, method: &str, path: &str) -> Option<Reply> {
        if !self.metadata_paths.iter().any(|served| served == path) {
            return None;
        }
        if method != "GET" {
            return Some(
                Reply::error(
                    405,
                    serde_json::value::RawValue::NULL,
                    jsonrpc::INVALID_REQUEST,
                    "Method Not Allowed: the protected resource metadata is read with GET",
                )
                .with_header("Allow", "GET"),
            );
        }
        Some(Reply {
            status: 200,
            body: self.metadata.clone(),
            headers: vec![("Cache-Control", "max-age=3600".into())],
        })
    }

    /// The 401 for a request with no token or a refused one.
    pub(crate) fn challenge(&self, refused: Refused, why: Option<&str>) -> Reply {
        unauthorized(refused, Some(&self.metadata_url), why)
    }

    /// What to do with `token`, at `unix_now` by the wall clock and `now`
    /// by the loop's.
    pub(crate) fn check(&mut self, token: &str, unix_now: u64, now: Instant) -> Verdict {
        if let Some((principal, valid_until)) = self.tokens.get(token) {
            if unix_now < *valid_until {
                return Verdict::Allowed(principal.clone());
            }
            self.tokens.remove(token);
        }
        let rejection = match jwt::validate(token, &self.keys, &self.rules, unix_now) {
            Ok(valid) => {
                let principal = Principal::of_subject(&valid.subject, &self.rules.issuer);
                self.remember(token, principal.clone(), valid.valid_until, unix_now);
                return Verdict::Allowed(principal);
            }
            Err(rejection) => rejection,
        };
        if rejection != Rejection::UnknownKey {
            debug!("bearer token refused: {}", rejection.describe());
            return Verdict::Refused(self.challenge(Refused::Invalid, Some(rejection.describe())));
        }
        if self.busy() {
            return Verdict::AwaitKeys;
        }
        if self.may_fetch(now) {
            debug!("a token names a key not held: the key set is fetched again");
            self.wanted = true;
            return Verdict::AwaitKeys;
        }
        if self.last.is_some_and(|(_, ok)| !ok) {
            return Verdict::Refused(keys_unavailable());
        }
        Verdict::Refused(self.challenge(Refused::Invalid, Some(rejection.describe())))
    }

    fn remember(&mut self, token: &str, principal: Principal, valid_until: u64, unix_now: u64) {
        if self.tokens.len() >= MAX_CACHED_TOKENS {
            self.tokens.retain(|_, (_, until)| unix_now < *until);
            if self.tokens.len() >= MAX_CACHED_TOKENS {
                self.tokens.clear();
            }
        }
        self.tokens.insert(token.into(), (principal, valid_until));
    }

    /// True when the last fetch ended long enough ago for another (the
    /// caller knows none is in flight or due).
    fn may_fetch(&self, now: Instant) -> bool {
        match self.last {
            None => true,
            Some((at, true)) => now.saturating_duration_since(at) >= self.min_refresh,
            Some((at, false)) => now.saturating_duration_since(at) >= RETRY_AFTER_FAILURE,
        }
    }

    /// The URL to fetch now, if a fetch is wanted and may start.
    pub(crate) fn next_fetch(&mut self) -> Option<String> {
        if !self.wanted || self.fetching.is_some() {
            return None;
        }
        self.wanted = false;
        Some(match &self.jwks_url {
            Some(url) => {
                self.fetching = Some(Fetching::Keys);
                url.clone()
            }
            None => {
                self.fetching = Some(Fetching::Metadata(0));
                self.discovery[0].clone()
            }
        })
    }

    /// True while a fetch is in flight or due: requests that wait for keys
    /// go on waiting.
    pub(crate) fn busy(&self) -> bool {
        self.fetching.is_some() || self.wanted
    }

    /// The fetch ended with `outcome` (status and body, or why none). Some
    /// URL when the next document is to be fetched at once (the key set
    /// after the metadata, the next metadata URL after a miss).
    pub(crate) fn fetched(
        &mut self,
        outcome: Result<(u16, Vec<u8>), String>,
        now: Instant,
    ) -> Option<String> {
        let fetching = self.fetching.take()?;
        let url = match fetching {
            Fetching::Metadata(index) => self.discovery[index].clone(),
            Fetching::Keys => self.jwks_url.clone().unwrap_or_default(),
        };
        // Only an answer without the document moves discovery on to the
        // next URL: after a timeout or a refused connection the next one,
        // on the same host, would fare no better.
        let answered = matches!(outcome, Ok((status, _)) if status != 200);
        let result = outcome.and_then(|(status, body)| match status {
            200 => Ok(body),
            other => Err(format!("HTTP {other}")),
        });
        match (fetching, result) {
            (Fetching::Metadata(_), Ok(body)) => match self.jwks_uri_of(&body) {
                Ok(jwks_url) => {
                    info!("OAuth: {url} names the key set {jwks_url}");
                    self.jwks_url = Some(jwks_url.clone());
                    self.fetching = Some(Fetching::Keys);
                    return Some(jwks_url);
                }
                Err(why) => self.failed(&url, &why, now),
            },
            (Fetching::Metadata(index), Err(why))
                if answered && index + 1 < self.discovery.len() =>
            {
                debug!("OAuth: {url}: {why}; trying the next metadata URL");
                self.fetching = Some(Fetching::Metadata(index + 1));
                return Some(self.discovery[index + 1].clone());
            }
            (Fetching::Keys, Ok(body)) => match KeySet::parse(&body) {
                Ok((keys, skipped)) => {
                    info!(
                        "OAuth: {} signing key(s) from {url}{}",
                        keys.len(),
                        if skipped > 0 {
                            format!(" ({skipped} unusable skipped)")
                        } else {
                            String::new()
                        }
                    );
                    if keys.is_empty() {
                        warn!("OAuth: the key set at {url} has no key mcphop can use");
                    }
                    self.keys = keys;
                    self.last = Some((now, true));
                }
                Err(why) => self.failed(&url, &why, now),
            },
            (_, Err(why)) => self.failed(&url, &why, now),
        }
        None
    }

    fn failed(&mut self, url: &str, why: &str, now: Instant) {
        warn!(
            "OAuth: fetching {url} failed: {why}; {} key(s) kept",
            self.keys.len()
        );
        self.last = Some((now, false));
    }

    /// The `jwks_uri` of an authorization server metadata document, whose
    /// `issuer` must be the configured one (RFC 8414 section 3.3).
    fn jwks_uri_of(&self, body: &[u8]) -> Result<String, String> {
        let document: Value = serde_json::from_slice(body)
            .map_err(|error| format!("metadata is not JSON: {error}"))?;
        match document.get("issuer").and_then(Value::as_str) {
            Some(issuer) if issuer == self.rules.issuer => {}
            other => {
                return Err(format!(
                    "the metadata's issuer {other:?} is not {:?}",
                    self.rules.issuer
                ))
            }
        }
        let url = document
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or("the metadata has no jwks_uri")?;
        UpstreamUrl::parse(url)?;
        Ok(url.to_string())
    }
}

/// The answer while the issuer's keys cannot be had: the token may be
/// fine, so it is not refused as invalid.
pub(crate) fn keys_unavailable() -> Reply {
    Reply::error(
        503,
        serde_json::value::RawValue::NULL,
        jsonrpc::INTERNAL_ERROR,
        "Service Unavailable: the authorization server's signing keys cannot be fetched",
    )
    .with_header("Retry-After", "1")
}

#[cfg(test)]
#[path = "oauth_tests.rs"]
mod tests;
