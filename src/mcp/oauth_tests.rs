use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::mcp::jwt_testkit::{jwks, Signer};

const ISSUER: &str = "https://issuer.example/tenant";
const AUDIENCE: &str = "https://mcp.example/mcp";
const UNIX: u64 = 1_800_000_000;

fn config(jwks_url: Option<&str>) -> OAuthConfig {
    OAuthConfig {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        jwks_url: jwks_url.map(str::to_string),
        min_refresh: DEFAULT_MIN_REFRESH,
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": UNIX + 600})
}

fn ok(body: impl Into<Vec<u8>>) -> Result<(u16, Vec<u8>), String> {
    Ok((200, body.into()))
}

fn metadata(issuer: &str) -> String {
    json!({"issuer": issuer, "jwks_uri": "https://keys.example/jwks.json",
           "authorization_endpoint": "https://issuer.example/authorize"})
    .to_string()
}

fn status(verdict: &Verdict) -> u16 {
    match verdict {
        Verdict::Allowed(_) => 200,
        Verdict::Refused(reply) => reply.status,
        Verdict::AwaitKeys => 0,
    }
}

/// A server that fetched `signers`' keys at `now`.
fn loaded(signers: &[&Signer], now: Instant) -> ResourceServer {
    let mut server = ResourceServer::new(&config(Some("https://keys.example/jwks"))).unwrap();
    assert_eq!(
        server.next_fetch().as_deref(),
        Some("https://keys.example/jwks")
    );
    assert_eq!(server.fetched(ok(jwks(signers)), now), None);
    assert!(!server.busy());
    server
}

#[test]
fn discovery_tries_rfc8414_then_openid_then_fetches_the_key_set() {
    let now = Instant::now();
    let mut server = ResourceServer::new(&config(None)).unwrap();
    assert!(server.busy(), "a fetch is due at start-up");
    assert_eq!(
        server.next_fetch().as_deref(),
        Some("https://issuer.example/.well-known/oauth-authorization-server/tenant")
    );
    assert_eq!(server.next_fetch(), None, "one fetch at a time");
    assert_eq!(
        server.fetched(Ok((404, Vec::new())), now).as_deref(),
        Some("https://issuer.example/tenant/.well-known/openid-configuration")
    );
    assert_eq!(
        server.fetched(ok(metadata(ISSUER)), now).as_deref(),
        Some("https://keys.example/jwks.json")
    );
    let signer = Signer::es256("k1");
    assert_eq!(server.fetched(ok(jwks(&[&signer])), now), None);
    assert!(!server.busy());
    let verdict = server.check(&signer.mint(&claims()), UNIX, now);
    match verdict {
        Verdict::Allowed(principal) => assert_eq!(principal.name(), format!("alice ({ISSUER})")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_timeout_does_not_move_discovery_to_the_next_url() {
    let now = Instant::now();
    let mut server = ResourceServer::new(&config(None)).unwrap();
    server.next_fetch();
    assert_eq!(server.fetched(Err("no answer within 5s".into()), now), None);
    assert!(!server.busy());
    let token = Signer::es256("k").mint(&claims());
    assert_eq!(status(&server.check(&token, UNIX, now)), 503);
    // A second later discovery starts over, from the first URL.
    let retry = now + Duration::from_secs(1);
    assert_eq!(status(&server.check(&token, UNIX, retry)), 0);
    assert_eq!(
        server.next_fetch().as_deref(),
        Some("https://issuer.example/.well-known/oauth-authorization-server/tenant")
    );
}

#[test]
fn metadata_of_another_issuer_is_refused() {
    let now = Instant::now();
    let mut server = ResourceServer::new(&config(None)).unwrap();
    server.next_fetch();
    assert_eq!(
        server.fetched(ok(metadata("https://evil.example")), now),
        None
    );
    assert!(server.jwks_url.is_none());
    let token = Signer::es256("k").mint(&claims());
    // The fetch failed just now: the token cannot be checked, and that is
    // not the token's fault.
    assert_eq!(status(&server.check(&token, UNIX, now)), 503);
}

#[test]
fn an_unknown_key_fetches_the_set_again_at_most_once_per_interval() {
    let start = Instant::now();
    let old = Signer::es256("old");
    let mut server = loaded(&[&old], start);
    let new = Signer::es256("new");
    let token = new.mint(&claims());
    // Within the interval: refused, no fetch.
    let soon = start + Duration::from_secs(5);
    assert_eq!(status(&server.check(&token, UNIX, soon)), 401);
    assert_eq!(server.next_fetch(), None);
    // After it: the request waits for a fetch, which brings the new key.
    let later = start + DEFAULT_MIN_REFRESH;
    assert_eq!(status(&server.check(&token, UNIX, later)), 0);
    assert_eq!(status(&server.check(&token, UNIX, later)), 0, "waits too");
    assert_eq!(
        server.next_fetch().as_deref(),
        Some("https://keys.example/jwks")
    );
    assert_eq!(status(&server.check(&token, UNIX, later)), 0, "in flight");
    server.fetched(ok(jwks(&[&old, &new])), later);
    assert_eq!(status(&server.check(&token, UNIX, later)), 200);
    assert_eq!(
        status(&server.check(&old.mint(&claims()), UNIX, later)),
        200
    );
    // A key nobody publishes, right after: refused without a fetch.
    let stranger = Signer::es256("stranger").mint(&claims());
    assert_eq!(status(&server.check(&stranger, UNIX, later)), 401);
    assert_eq!(server.next_fetch(), None);
}

#[test]
fn a_failed_fetch_keeps_the_keys_and_is_retried_after_a_second() {
    let start = Instant::now();
    let old = Signer::es256("old");
    let mut server = loaded(&[&old], start);
    let new = Signer::es256("new").mint(&claims());
    let later = start + DEFAULT_MIN_REFRESH;
    assert_eq!(status(&server.check(&new, UNIX, later)), 0);
    server.next_fetch();
    server.fetched(Err("connect: refused".into()), later);
    // Keys held still work; the unknown one gets 503 until a retry may go.
    assert_eq!(
        status(&server.check(&old.mint(&claims()), UNIX, later)),
        200
    );
    assert_eq!(status(&server.check(&new, UNIX, later)), 503);
    let retry = later + Duration::from_secs(1);
    assert_eq!(status(&server.check(&new, UNIX, retry)), 0);
    assert!(server.next_fetch().is_some());
    // A broken document is a failure too.
    server.fetched(ok("{\"keys\": 5}"), retry);
    assert_eq!(
        status(&server.check(&old.mint(&claims()), UNIX, retry)),
        200
    );
}

#[test]
fn a_remembered_token_still_expires() {
    let now = Instant::now();
    let signer = Signer::es256("k");
    let mut server = loaded(&[&signer], now);
    let token = signer.mint(&json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "a", "exp": UNIX + 10}));
    assert_eq!(status(&server.check(&token, UNIX, now)), 200);
    assert_eq!(server.tokens.len(), 1);
    // Remembered: it passes even with the key set emptied...
    server.keys = KeySet::default();
    assert_eq!(status(&server.check(&token, UNIX + 5, now)), 200);
    // ...until exp plus the leeway.
    let past = UNIX + 10 + jwt::DEFAULT_LEEWAY_SECS;
    assert_eq!(status(&server.check(&token, past, now)), 401);
    assert!(server.tokens.is_empty());
}

#[test]
fn refusals_name_the_metadata_and_the_reason() {
    let now = Instant::now();
    let signer = Signer::es256("k");
    let mut server = loaded(&[&signer], now);
    let token = signer
        .mint(&json!({"iss": ISSUER, "aud": "https://other/mcp", "sub": "a", "exp": UNIX + 10}));
    let Verdict::Refused(reply) = server.check(&token, UNIX, now) else {
        panic!("refused expected");
    };
    let challenge = &reply.headers[0].1;
    assert!(
        challenge.contains(
            r#"resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp""#
        ),
        "{challenge}"
    );
    assert!(challenge.contains("not for this resource"), "{challenge}");
    let missing = server.challenge(Refused::Missing, None);
    assert!(
        !missing.headers[0].1.contains("error="),
        "{:?}",
        missing.headers
    );
}

#[test]
fn the_protected_resource_metadata_is_served_at_both_well_known_paths() {
    let server = ResourceServer::new(&config(None)).unwrap();
    for path in [
        "/.well-known/oauth-protected-resource",
        "/.well-known/oauth-protected-resource/mcp",
    ] {
        let reply = server.metadata_reply("GET", path).unwrap();
        assert_eq!(reply.status, 200);
        let document: Value = serde_json::from_slice(&reply.body).unwrap();
        assert_eq!(document["resource"], AUDIENCE);
        assert_eq!(document["authorization_servers"], json!([ISSUER]));
    }
    assert_eq!(
        server
            .metadata_reply("POST", "/.well-known/oauth-protected-resource")
            .map(|reply| reply.status),
        Some(405)
    );
    assert_eq!(
        server
            .metadata_reply("HEAD", "/.well-known/oauth-protected-resource/mcp")
            .map(|reply| reply.status),
        Some(405)
    );
    assert!(server.metadata_reply("GET", "/mcp").is_none());
    assert!(server
        .metadata_reply("GET", "/.well-known/oauth-protected-resource/other")
        .is_none());
}

#[test]
fn configuration_errors_name_their_option() {
    for (issuer, audience, jwks_url, flag) in [
        ("issuer.example", AUDIENCE, None, "--auth-issuer"),
        (ISSUER, "mcp", None, "--auth-audience"),
        (ISSUER, AUDIENCE, Some("ftp://x"), "--auth-jwks-url"),
    ] {
        let config = OAuthConfig {
            issuer: issuer.into(),
            audience: audience.into(),
            jwks_url: jwks_url.map(str::to_string),
            min_refresh: DEFAULT_MIN_REFRESH,
        };
        let error = ResourceServer::new(&config).unwrap_err();
        assert!(error.starts_with(flag), "{error}");
    }
}
