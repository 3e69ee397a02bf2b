use serde_json::{json, Value};

use super::*;
use crate::mcp::jwt_testkit::{b64url, jwks, Signer};

const ISSUER: &str = "https://issuer.example";
const AUDIENCE: &str = "https://mcp.example/mcp";
const NOW: u64 = 1_800_000_000;

fn rules() -> Rules {
    Rules {
        issuer: ISSUER.into(),
        audience: AUDIENCE.into(),
        leeway_secs: DEFAULT_LEEWAY_SECS,
    }
}

fn claims() -> Value {
    json!({"iss": ISSUER, "aud": AUDIENCE, "sub": "alice", "exp": NOW + 300, "nbf": NOW - 10})
}

fn with(changes: Value) -> Value {
    let mut claims = claims();
    for (name, value) in changes.as_object().unwrap() {
        if value.is_null() {
            claims.as_object_mut().unwrap().remove(name);
        } else {
            claims[name] = value.clone();
        }
    }
    claims
}

fn keys_of(signers: &[&Signer]) -> KeySet {
    KeySet::parse(jwks(signers).as_bytes()).unwrap().0
}

#[test]
fn a_valid_token_of_each_algorithm_passes() {
    for signer in [
        Signer::es256("a"),
        Signer::eddsa("b"),
        Signer::rs256("c"),
        Signer::ps256("d"),
    ] {
        let keys = keys_of(&[&signer]);
        let token = signer.mint(&claims());
        assert_eq!(
            validate(&token, &keys, &rules(), NOW),
            Ok(Validated {
                subject: "alice".into(),
                valid_until: NOW + 300 + DEFAULT_LEEWAY_SECS
            }),
            "{}",
            signer.alg()
        );
    }
}

#[test]
fn each_claim_rule_refuses_its_token() {
    let signer = Signer::es256("k");
    let keys = keys_of(&[&signer]);
    let leeway = DEFAULT_LEEWAY_SECS;
    let cases = [
        (json!({"exp": NOW - leeway}), Rejection::Expired),
        (json!({"exp": NOW - 3600}), Rejection::Expired),
        (json!({"nbf": NOW + leeway + 1}), Rejection::NotYetValid),
        (
            json!({"iss": "https://other.example"}),
            Rejection::WrongIssuer,
        ),
        (json!({"iss": null}), Rejection::WrongIssuer),
        (
            json!({"aud": "https://mcp.example/other"}),
            Rejection::WrongAudience,
        ),
        (json!({"aud": ["a", "b"]}), Rejection::WrongAudience),
        (json!({"aud": null}), Rejection::WrongAudience),
        (
            json!({"exp": null}),
            Rejection::Malformed("the token has no exp"),
        ),
        (
            json!({"exp": "soon"}),
            Rejection::Malformed("the token's exp is not a time"),
        ),
        (
            json!({"sub": null}),
            Rejection::Malformed("the token has no sub"),
        ),
        (
            json!({"sub": ""}),
            Rejection::Malformed("the token has no sub"),
        ),
    ];
    for (changes, expected) in cases {
        let token = signer.mint(&with(changes.clone()));
        assert_eq!(
            validate(&token, &keys, &rules(), NOW),
            Err(expected),
            "{changes}"
        );
    }
    // Within the leeway, and an audience among several, a fractional exp.
    for changes in [
        json!({"exp": NOW - leeway + 1}),
        json!({"nbf": NOW + leeway}),
        json!({"aud": ["x", AUDIENCE]}),
        json!({"exp": (NOW + 10) as f64 + 0.5}),
        json!({"nbf": null}),
    ] {
        let token = signer.mint(&with(changes.clone()));
        assert!(validate(&token, &keys, &rules(), NOW).is_ok(), "{changes}");
    }
}

#[test]
fn signatures_keys_and_algorithms() {
    let signer = Signer::es256("k1");
    let keys = keys_of(&[&signer]);
    let token = signer.mint(&claims());
    // Another key with the same kid: the signature is not the published key's.
    let impostor = Signer::es256("k1");
    let forged = impostor.mint(&claims());
    assert_eq!(
        validate(&forged, &keys, &rules(), NOW),
        Err(Rejection::BadSignature)
    );
    // Claims swapped under a valid signature.
    let mut parts: Vec<&str> = token.split('.').collect();
    let other = b64url(with(json!({"sub": "mallory"})).to_string().as_bytes());
    parts[1] = &other;
    assert_eq!(
        validate(&parts.join("."), &keys, &rules(), NOW),
        Err(Rejection::BadSignature)
    );
    // A kid the set does not have.
    let rotated = Signer::es256("k2");
    assert_eq!(
        validate(&rotated.mint(&claims()), &keys, &rules(), NOW),
        Err(Rejection::UnknownKey)
    );
    // alg none, HS256, and an unknown crit extension are refused whatever
    // the signature.
    for header in [
        json!({"alg": "none", "kid": "k1"}),
        json!({"alg": "HS256", "kid": "k1"}),
        json!({"kid": "k1"}),
        json!({"alg": "ES256", "kid": "k1", "crit": ["exp"]}),
    ] {
        let token = signer.mint_with_header(&header, &claims());
        assert_eq!(
            validate(&token, &keys, &rules(), NOW),
            Err(Rejection::Algorithm),
            "{header}"
        );
    }
    let unsigned = format!(
        "{}.{}.",
        b64url(br#"{"alg":"none"}"#),
        b64url(claims().to_string().as_bytes())
    );
    assert_eq!(
        validate(&unsigned, &keys, &rules(), NOW),
        Err(Rejection::Algorithm)
    );
}

#[test]
fn claims_are_checked_before_any_key_is_looked_for() {
    // An expired token with an unknown kid is refused as expired, so it
    // cannot make mcphop fetch the key set.
    let keys = keys_of(&[&Signer::es256("k1")]);
    let token = Signer::es256("unknown").mint(&with(json!({"exp": NOW - 3600})));
    assert_eq!(
        validate(&token, &keys, &rules(), NOW),
        Err(Rejection::Expired)
    );
}

#[test]
fn malformed_tokens_are_refused_without_panicking() {
    let keys = keys_of(&[&Signer::es256("k1")]);
    let header = b64url(br#"{"alg":"ES256"}"#);
    let body = b64url(claims().to_string().as_bytes());
    for token in [
        String::new(),
        ".".into(),
        "..".into(),
        "a.b.c.d".into(),
        format!("{header}.{body}"),
        format!("{header}.{body}.!!"),
        format!("{header}.{body}.{body}.x"),
        format!("{}.{body}.AA", b64url(b"[1]")),
        format!("{header}.{}.AA", b64url(b"\"text\"")),
        format!("{header}.{}.AA", b64url(&[0xff, 0xfe])),
        format!("{}.{body}.AA", b64url(br#"{"alg":"ES256","kid":7}"#)),
        "\u{e9}.\u{e9}.\u{e9}".into(),
    ] {
        let result = validate(&token, &keys, &rules(), NOW);
        assert!(
            matches!(
                result,
                Err(Rejection::Malformed(_) | Rejection::BadSignature)
            ),
            "{token:?}: {result:?}"
        );
    }
}

/// Deterministic pseudo-random numbers (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound.max(1) as u64) as usize
    }
}

#[test]
fn no_mutation_of_a_valid_token_is_accepted_and_none_panics() {
    let signers = [Signer::es256("k"), Signer::eddsa("e"), Signer::rs256("r")];
    let refs: Vec<&Signer> = signers.iter().collect();
    let keys = keys_of(&refs);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    const ALPHABET: &[u8] = b"ABCZaz09-_.=+/ \x00\xff";
    for signer in &signers {
        let original = signer.mint(&claims()).into_bytes();
        assert!(validate(
            std::str::from_utf8(&original).unwrap(),
            &keys,
            &rules(),
            NOW
        )
        .is_ok());
        for _ in 0..3000 {
            let mut token = original.clone();
            for _ in 0..=rng.below(3) {
                if token.is_empty() {
                    break;
                }
                let at = rng.below(token.len());
                match rng.below(4) {
                    0 => token[at] = ALPHABET[rng.below(ALPHABET.len())],
                    1 => token.insert(at, ALPHABET[rng.below(ALPHABET.len())]),
                    2 => {
                        token.remove(at);
                    }
                    _ => token.truncate(at),
                }
            }
            if token == original {
                continue;
            }
            let text = String::from_utf8_lossy(&token);
            let result = validate(&text, &keys, &rules(), NOW);
            assert!(result.is_err(), "a mutated token was accepted: {text}");
        }
    }
}
