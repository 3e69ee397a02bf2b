//! An authorization server's signing keys, sans-IO: a JWK Set (RFC 7517)
//! read into the public keys it holds, base64url (RFC 4648 section 5, no
//! padding) decoded, and a JWS signature checked with one of them. The
//! signatures themselves are `ring`'s (already in the binary for rustls).
//!
//! Only asymmetric signature algorithms are accepted: RS256/384/512 and
//! PS256/384/512 (RSA of 2048 to 8192 bits), ES256 and ES384, and EdDSA
//! (Ed25519). `none` and the HMAC algorithms never verify anything here: a
//! resource server that accepted a shared secret could mint tokens itself.

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey};
use serde_json::Value;

/// A JWS signature algorithm mcphop verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Alg {
    Rs256,
    Rs384,
    Rs512,
    Ps256,
    Ps384,
    Ps512,
    Es256,
    Es384,
    EdDsa,
}

impl Alg {
    /// The algorithm a JWS header's `alg` names; none for `none`, the HMAC
    /// ones and anything unknown.
    pub(crate) fn from_name(name: &str) -> Option<Alg> {
        Some(match name {
            "RS256" => Alg::Rs256,
            "RS384" => Alg::Rs384,
            "RS512" => Alg::Rs512,
            "PS256" => Alg::Ps256,
            "PS384" => Alg::Ps384,
            "PS512" => Alg::Ps512,
            "ES256" => Alg::Es256,
            "ES384" => Alg::Es384,
            "EdDSA" => Alg::EdDsa,
            _ => return None,
        })
    }

    fn name(self) -> &'static str {
        match self {
            Alg::Rs256 => "RS256",
            Alg::Rs384 => "RS384",
            Alg::Rs512 => "RS512",
            Alg::Ps256 => "PS256",
            Alg::Ps384 => "PS384",
            Alg::Ps512 => "PS512",
            Alg::Es256 => "ES256",
            Alg::Es384 => "ES384",
            Alg::EdDsa => "EdDSA",
        }
    }
}

/// A public key's material.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Material {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed point (`04 || x || y`).
    P256(Vec<u8>),
    P384(Vec<u8>),
    Ed25519(Vec<u8>),
}

/// One signing key of the set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Jwk {
    kid: Option<String>,
    /// The one algorithm the key is for, if the set says.
    alg: Option<Alg>,
    material: Material,
}

impl Jwk {
    /// True when this key may check a signature made with `alg`.
    fn fits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Alg::Rs256 | Alg::Rs384 | Alg::Rs512 | Alg::Ps256 | Alg::Ps384 | Alg::Ps512
            ) | (Material::P256(_), Alg::Es256)
                | (Material::P384(_), Alg::Es384)
                | (Material::Ed25519(_), Alg::EdDsa)
        )
    }

    /// True when `signature` is this key's, made with `alg`, over `message`.
    fn verifies(&self, alg: Alg, message: &[u8], signature: &[u8]) -> bool {
        if !self.fits(alg) {
            return false;
        }
        let checked = match (&self.material, alg) {
            (Material::Rsa { n, e }, _) => {
                let parameters = match alg {
                    Alg::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Alg::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Alg::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Alg::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Alg::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    _ => &signature::RSA_PSS_2048_8192_SHA512,
                };
                RsaPublicKeyComponents { n, e }.verify(parameters, message, signature)
            }
            (Material::P256(point), _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, signature)
            }
            (Material::P384(point), _) => {
                UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point)
                    .verify(message, signature)
            }
            (Material::Ed25519(key), _) => {
                UnparsedPublicKey::new(&signature::ED25519, key).verify(message, signature)
            }
        };
        checked.is_ok()
    }
}

/// The keys of one JWK Set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct KeySet {
    keys: Vec<Jwk>,
}

/// What checking a signature against the set found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureCheck {
    Valid,
    /// A key that fits was tried, and the signature is not its.
    Invalid,
    /// No key of the set has the token's `kid` (or, without one, fits its
    /// algorithm): the set may be out of date.
    UnknownKey,
}

impl KeySet {
    /// Reads a JWK Set document. Keys mcphop cannot use (another `kty` or
    /// curve, `use` other than `sig`, a symmetric key, a malformed one) are
    /// skipped and counted in the second value.
    pub(crate) fn parse(body: &[u8]) -> Result<(KeySet, usize), String> {
        let document: Value =
            serde_json::from_slice(body).map_err(|error| format!("not JSON: {error}"))?;
        let keys = document
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("no \"keys\" array")?;
        let mut set = KeySet::default();
        let mut skipped = 0;
        for key in keys {
            match jwk(key) {
                Some(jwk) => set.keys.push(jwk),
                None => skipped += 1,
            }
        }
        Ok((set, skipped))
    }

    /// How many keys it holds.
    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Checks `signature` over `message`: with the key named `kid`, or,
    /// without a `kid`, with every key that fits `alg`.
    pub(crate) fn check(
        &self,
        kid: Option<&str>,
        alg: Alg,
        message: &[u8],
        signature: &[u8],
    ) -> SignatureCheck {
        let mut tried = false;
        for key in &self.keys {
            let named = match kid {
                Some(kid) => key.kid.as_deref() == Some(kid),
                None => true,
            };
            if !named || !key.fits(alg) {
                continue;
            }
            tried = true;
            if key.verifies(alg, message, signature) {
                return SignatureCheck::Valid;
            }
        }
        if tried {
            SignatureCheck::Invalid
        } else {
            SignatureCheck::UnknownKey
        }
    }
}

/// One JWK, if mcphop can verify signatures with it.
fn jwk(key: &Value) -> Option<Jwk> {
    let text = |name: &str| key.get(name).and_then(Value::as_str);
    let bytes = |name: &str| text(name).and_then(|value| base64url(value).ok());
    if text("use").is_some_and(|usage| usage != "sig") {
        return None;
    }
    let alg = match text("alg") {
        Some(name) => Some(Alg::from_name(name)?),
        None => None,
    };
    let material = match (text("kty")?, text("crv")) {
        ("RSA", _) => Material::Rsa {
            n: without_leading_zeros(bytes("n")?),
            e: without_leading_zeros(bytes("e")?),
        },
        ("EC", Some(curve @ ("P-256" | "P-384"))) => {
            let width = if curve == "P-256" { 32 } else { 48 };
            let (x, y) = (bytes("x")?, bytes("y")?);
            if x.len() != width || y.len() != width {
                return None;
            }
            let point = [&[0x04][..], &x, &y].concat();
            if curve == "P-256" {
                Material::P256(point)
            } else {
                Material::P384(point)
            }
        }
        ("OKP", Some("Ed25519")) => {
            let key = bytes("x")?;
            if key.len() != 32 {
                return None;
            }
            Material::Ed25519(key)
        }
        _ => return None,
    };
    let jwk = Jwk {
        kid: text("kid").map(str::to_string),
        alg,
        material,
    };
    // A key whose declared algorithm does not fit its type is malformed.
    if jwk.alg.is_some_and(|alg| !jwk.fits(alg)) {
        log::debug!("JWKS: key {:?} declares {:?}", jwk.kid, alg.map(Alg::name));
        return None;
    }
    Some(jwk)
}

fn without_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&byte| byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Decodes base64url without padding (JOSE's form, RFC 7515 section 2);
/// padding, other alphabets, whitespace and non-zero trailing bits are
/// errors, so one token has one spelling.
pub(crate) fn base64url(text: &str) -> Result<Vec<u8>, &'static str> {
    fn sextet(byte: u8) -> Option<u32> {
        Some(u32::from(match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        }))
    }
    let input = text.as_bytes();
    if input.len() % 4 == 1 {
        return Err("base64url: impossible length");
    }
    let mut out = Vec::with_capacity(input.len() * 3 / 4);
    for chunk in input.chunks(4) {
        let mut bits: u32 = 0;
        for &byte in chunk {
            bits = (bits << 6) | sextet(byte).ok_or("base64url: a byte outside the alphabet")?;
        }
        let decoded = chunk.len() * 6 / 8;
        let spare = chunk.len() * 6 - decoded * 8;
        if bits & ((1 << spare) - 1) != 0 {
            return Err("base64url: non-zero trailing bits");
        }
        bits >>= spare;
        for index in (0..decoded).rev() {
            // Each byte of `bits`, most significant first.
            out.push((bits >> (index * 8)) as u8);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "jwks_tests.rs"]
mod tests;
