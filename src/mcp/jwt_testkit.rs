//! Test-only: a signer that mints JWTs with its own key (ES256, EdDSA, or
//! RS256/PS256 with the committed test RSA key) and publishes that key as a
//! JWK, so tests play the authorization server. Used by the unit tests and,
//! included by path, by the integration tests.
#![allow(dead_code)]

use ring::rand::SystemRandom;
use ring::signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};
use serde_json::{json, Value};

/// A 2048-bit RSA key in PKCS#8, made for these tests only (ring cannot
/// generate RSA keys).
const RSA_TEST_KEY: &[u8] = include_bytes!("../../tests/fixtures/rsa2048-test-key.pk8");

enum Key {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rsa(RsaKeyPair, &'static str),
}

/// One signing key and its `kid`.
pub struct Signer {
    pub kid: String,
    key: Key,
}

impl Signer {
    /// A fresh P-256 key.
    pub fn es256(kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let algorithm = &signature::ECDSA_P256_SHA256_FIXED_SIGNING;
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(algorithm, &rng).expect("generate P-256");
        let pair = EcdsaKeyPair::from_pkcs8(algorithm, pkcs8.as_ref(), &rng).expect("P-256");
        Signer::with(kid, Key::Es256(pair))
    }

    /// A fresh Ed25519 key.
    pub fn eddsa(kid: &str) -> Signer {
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).expect("Ed25519");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("Ed25519");
        Signer::with(kid, Key::EdDsa(pair))
    }

    /// The test RSA key, signing RS256.
    pub fn rs256(kid: &str) -> Signer {
        Signer::with(kid, Key::Rsa(rsa_key(), "RS256"))
    }

    /// The test RSA key, signing PS256.
    pub fn ps256(kid: &str) -> Signer {
        Signer::with(kid, Key::Rsa(rsa_key(), "PS256"))
    }

    fn with(kid: &str, key: Key) -> Signer {
        Signer {
            kid: kid.to_string(),
            key,
        }
    }

    pub fn alg(&self) -> &'static str {
        match &self.key {
            Key::Es256(_) => "ES256",
            Key::EdDsa(_) => "EdDSA",
            Key::Rsa(_, alg) => alg,
        }
    }

    /// The public key as a JWK.
    pub fn jwk(&self) -> Value {
        match &self.key {
            Key::Es256(pair) => {
                let point = pair.public_key().as_ref();
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "use": "sig",
                       "x": b64url(&point[1..33]), "y": b64url(&point[33..65])})
            }
            Key::EdDsa(pair) => json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid,
                                       "x": b64url(pair.public_key().as_ref())}),
            Key::Rsa(pair, alg) => {
                let public = signature::RsaPublicKeyComponents::<Vec<u8>>::from(pair.public());
                json!({"kty": "RSA", "kid": self.kid, "alg": alg,
                       "n": b64url(&public.n), "e": b64url(&public.e)})
            }
        }
    }

    /// A token with header `{"alg", "typ": "at+jwt", "kid"}` and `claims`.
    pub fn mint(&self, claims: &Value) -> String {
        let header = json!({"alg": self.alg(), "typ": "at+jwt", "kid": self.kid});
        self.mint_with_header(&header, claims)
    }

    /// A token with this header and these claims, signed by this key.
    pub fn mint_with_header(&self, header: &Value, claims: &Value) -> String {
        let signing_input = format!(
            "{}.{}",
            b64url(header.to_string().as_bytes()),
            b64url(claims.to_string().as_bytes())
        );
        let signature = self.sign(signing_input.as_bytes());
        format!("{signing_input}.{}", b64url(&signature))
    }

    fn sign(&self, message: &[u8]) -> Vec<u8> {
        let rng = SystemRandom::new();
        match &self.key {
            Key::Es256(pair) => pair.sign(&rng, message).expect("sign").as_ref().to_vec(),
            Key::EdDsa(pair) => pair.sign(message).as_ref().to_vec(),
            Key::Rsa(pair, alg) => {
                let encoding: &dyn signature::RsaEncoding = if *alg == "PS256" {
                    &signature::RSA_PSS_SHA256
                } else {
                    &signature::RSA_PKCS1_SHA256
                };
                let mut out = vec![0; pair.public().modulus_len()];
                pair.sign(encoding, &rng, message, &mut out).expect("sign");
                out
            }
        }
    }
}

fn rsa_key() -> RsaKeyPair {
    RsaKeyPair::from_pkcs8(RSA_TEST_KEY).expect("the test RSA key")
}

/// A JWK Set document of these signers' keys.
pub fn jwks(signers: &[&Signer]) -> String {
    let keys: Vec<Value> = signers.iter().map(|signer| signer.jwk()).collect();
    json!({ "keys": keys }).to_string()
}

/// base64url without padding.
pub fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let mut bits = 0u32;
        for (index, &byte) in chunk.iter().enumerate() {
            bits |= u32::from(byte) << (16 - 8 * index);
        }
        for index in 0..=chunk.len() {
            out.push(char::from(
                ALPHABET[(bits >> (18 - 6 * index)) as usize & 63],
            ));
        }
    }
    out
}
