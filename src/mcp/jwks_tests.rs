use super::*;
use crate::mcp::jwt_testkit::{b64url, jwks, Signer};

fn parse(document: &str) -> (KeySet, usize) {
    KeySet::parse(document.as_bytes()).unwrap()
}

#[test]
fn base64url_round_trips_every_length_and_refuses_other_spellings() {
    let bytes: Vec<u8> = (0..=255).collect();
    for len in 0..40 {
        let slice = &bytes[200 - len..200];
        assert_eq!(base64url(&b64url(slice)).unwrap(), slice, "length {len}");
    }
    assert_eq!(base64url("").unwrap(), b"");
    assert_eq!(base64url("-_8").unwrap(), [0xfb, 0xff]);
    for bad in ["A", "AAAAA", "ab+/", "ab==", "a b", "QR", "QUJ"] {
        assert!(base64url(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn every_supported_key_type_verifies_its_own_signatures_only() {
    let signers = [
        Signer::es256("ec"),
        Signer::eddsa("ed"),
        Signer::rs256("rs"),
        Signer::ps256("ps"),
    ];
    let refs: Vec<&Signer> = signers.iter().collect();
    let (set, skipped) = parse(&jwks(&refs));
    assert_eq!((set.len(), skipped), (4, 0));
    for signer in &signers {
        let token = signer.mint(&serde_json::json!({"sub": "x"}));
        let (input, signature) = token.rsplit_once('.').unwrap();
        let signature = base64url(signature).unwrap();
        let alg = Alg::from_name(signer.alg()).unwrap();
        let kid = Some(signer.kid.as_str());
        assert_eq!(
            set.check(kid, alg, input.as_bytes(), &signature),
            SignatureCheck::Valid
        );
        // Without a kid, every key that fits the algorithm is tried.
        assert_eq!(
            set.check(None, alg, input.as_bytes(), &signature),
            SignatureCheck::Valid
        );
        let mut tampered = input.as_bytes().to_vec();
        tampered[3] ^= 1;
        assert_eq!(
            set.check(kid, alg, &tampered, &signature),
            SignatureCheck::Invalid
        );
        assert_eq!(
            set.check(Some("other"), alg, input.as_bytes(), &signature),
            SignatureCheck::UnknownKey
        );
    }
}

#[test]
fn a_key_is_used_only_for_the_algorithm_it_fits() {
    let ec = Signer::es256("k1");
    let (set, _) = parse(&jwks(&[&ec]));
    // An EC key named by the token's kid but asked to check RS256: no key
    // fits, so the set cannot vouch for it.
    assert_eq!(
        set.check(Some("k1"), Alg::Rs256, b"x", b"y"),
        SignatureCheck::UnknownKey
    );
    let rsa = Signer::rs256("r");
    let (set, _) = parse(&jwks(&[&rsa]));
    // The RSA JWK says "alg": "RS256": a PS256 signature is not for it.
    assert_eq!(
        set.check(Some("r"), Alg::Ps256, b"x", b"y"),
        SignatureCheck::UnknownKey
    );
}

#[test]
fn unusable_keys_are_skipped_and_counted() {
    let ec = Signer::es256("good");
    let document = serde_json::json!({"keys": [
        ec.jwk(),
        {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
        {"kty": "EC", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"},
        {"kty": "RSA", "n": "not base64!", "e": "AQAB"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "use": "enc"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "HS256"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "alg": "ES256"},
        {"kty": "OKP", "crv": "Ed25519", "x": "AAAA"},
        "not an object",
    ]});
    let (set, skipped) = parse(&document.to_string());
    assert_eq!((set.len(), skipped), (1, 9));
    assert_eq!(set.keys[0].kid.as_deref(), Some("good"));
}

#[test]
fn documents_that_are_not_key_sets_are_errors() {
    for bad in ["", "[]", "{}", r#"{"keys": {}}"#, "not json"] {
        assert!(KeySet::parse(bad.as_bytes()).is_err(), "{bad:?}");
    }
    assert_eq!(parse(r#"{"keys": []}"#).0.len(), 0);
}

#[test]
fn none_and_hmac_are_never_algorithms() {
    for name in ["none", "HS256", "HS512", "rs256", "", "ES512"] {
        assert_eq!(Alg::from_name(name), None, "{name}");
    }
    for name in [
        "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
    ] {
        assert_eq!(Alg::from_name(name).map(Alg::name), Some(name));
    }
}
