//! An issuer's published keys (JWKS), reduced to what can verify signatures.

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

/// What kind of public key a JWK holds, which decides the algorithms it can check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
    Ed25519,
}

/// One usable verification key.
pub(crate) struct Key {
    pub kid: Option<String>,
    /// The JWK's own `alg`, when it declares one: then only that algorithm may use the key.
    pub alg: Option<Algorithm>,
    pub kind: KeyKind,
    pub decoding: DecodingKey,
}

impl Key {
    /// Whether this key may check a signature made with `alg`. `jsonwebtoken` would not stop
    /// an RSA key from being used for ECDSA (it would panic), so this check is ours and runs
    /// before every verification.
    pub fn can_verify(&self, alg: Algorithm) -> bool {
        if self.alg.is_some_and(|own| own != alg) {
            return false;
        }
        use Algorithm::*;
        matches!(
            (self.kind, alg),
            (KeyKind::Rsa, RS256 | RS384 | RS512 | PS256 | PS384 | PS512)
                | (KeyKind::EcP256, ES256)
                | (KeyKind::EcP384, ES384)
                | (KeyKind::Ed25519, EdDSA)
        )
    }
}

/// The signing keys of one issuer.
#[derive(Default)]
pub(crate) struct KeySet {
    pub keys: Vec<Key>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|k| (&k.kid, k.kind, k.alg)))
            .finish()
    }
}

impl KeySet {
    /// Parses a JWKS document. Keys ward cannot use for verification (encryption keys,
    /// symmetric keys, unknown curves or algorithms) are skipped rather than failing the whole
    /// set, since IdPs publish such keys beside their signing keys. A set with no usable key
    /// is an error, so a broken answer never replaces working cached keys.
    pub fn parse(body: &str) -> Result<KeySet, String> {
        let doc: Value =
            serde_json::from_str(body).map_err(|e| format!("the JWKS is not JSON: {e}"))?;
        let Some(entries) = doc.get("keys").and_then(Value::as_array) else {
            return Err("the JWKS has no \"keys\" array".into());
        };
        let mut keys = Vec::new();
        let mut skipped = Vec::new();
        for entry in entries {
            match usable_key(entry) {
                Ok(key) => keys.push(key),
                Err(why) => skipped.push(why),
            }
        }
        if !skipped.is_empty() {
            tracing::debug!(skipped = ?skipped, "JWKS keys ward cannot verify with were skipped");
        }
        if keys.is_empty() {
            return Err(format!(
                "the JWKS has no usable signing key ({} keys, skipped: {})",
                entries.len(),
                if skipped.is_empty() {
                    "none".to_string()
                } else {
                    skipped.join("; ")
                }
            ));
        }
        Ok(KeySet { keys })
    }

    /// Keys that may check `alg` for a token with this `kid` (all compatible keys when the
    /// token names none).
    pub fn candidates(&self, kid: Option<&str>) -> impl Iterator<Item = &Key> {
        self.keys
            .iter()
            .filter(move |k| kid.is_none() || k.kid.as_deref() == kid)
    }

    /// Whether the set has a key for this `kid` at all.
    pub fn knows(&self, kid: Option<&str>, alg: Algorithm) -> bool {
        match kid {
            Some(_) => self.candidates(kid).next().is_some(),
            None => self.keys.iter().any(|k| k.can_verify(alg)),
        }
    }
}

fn usable_key(entry: &Value) -> Result<Key, String> {
    let kid = entry.get("kid").and_then(Value::as_str).map(str::to_string);
    let name = kid.as_deref().unwrap_or("(no kid)").to_string();
    let jwk: Jwk = serde_json::from_value(entry.clone())
        .map_err(|e| format!("{name}: not a key ward understands ({e})"))?;
    if let Some(u) = &jwk.common.public_key_use
        && *u != PublicKeyUse::Signature
    {
        return Err(format!("{name}: not a signing key"));
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err(format!("{name}: key_ops does not allow verify"));
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(a) => {
            Some(signing_alg(a).ok_or_else(|| format!("{name}: alg {a} is not for signing"))?)
        }
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => KeyKind::Rsa,
        AlgorithmParameters::EllipticCurve(p) => match p.curve {
            EllipticCurve::P256 => KeyKind::EcP256,
            EllipticCurve::P384 => KeyKind::EcP384,
            _ => return Err(format!("{name}: curve {:?} is not supported", p.curve)),
        },
        AlgorithmParameters::OctetKeyPair(p) => match p.curve {
            EllipticCurve::Ed25519 => KeyKind::Ed25519,
            _ => return Err(format!("{name}: curve {:?} is not supported", p.curve)),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err(format!("{name}: symmetric keys are never used"));
        }
    };
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("{name}: {e}"))?;
    Ok(Key {
        kid,
        alg,
        kind,
        decoding,
    })
}

/// The signature algorithm a JWK's `alg` names; `None` for HMAC and encryption algorithms.
fn signing_alg(a: KeyAlgorithm) -> Option<Algorithm> {
    Some(match a {
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// The public-key algorithms ward can be configured for, by their JOSE names.
pub(crate) fn algorithm_named(name: &str) -> Option<Algorithm> {
    Some(match name {
        "RS256" => Algorithm::RS256,
        "RS384" => Algorithm::RS384,
        "RS512" => Algorithm::RS512,
        "PS256" => Algorithm::PS256,
        "ES256" => Algorithm::ES256,
        "ES384" => Algorithm::ES384,
        "EdDSA" => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EC: &str = r#"{"kty":"EC","crv":"P-256","kid":"ec","x":"LB62kg04ugEfekn6PVVrlZyhVqy4AAZJl5jheHUvZm0","y":"fNyDtgh0KHS-q0jWC5UCJo6dPW-JKWHoHLlFmHip4lI"}"#;

    #[test]
    fn skips_keys_it_cannot_verify_with() {
        let body = format!(
            r#"{{"keys":[
                {EC},
                {{"kty":"oct","k":"c2VjcmV0","kid":"hmac"}},
                {{"kty":"EC","crv":"P-256","kid":"enc","use":"enc","x":"LB62kg04ugEfekn6PVVrlZyhVqy4AAZJl5jheHUvZm0","y":"fNyDtgh0KHS-q0jWC5UCJo6dPW-JKWHoHLlFmHip4lI"}},
                {{"kty":"RSA","kid":"oaep","alg":"RSA-OAEP-256","n":"AQAB","e":"AQAB"}},
                {{"kty":"OKP","crv":"X25519","kid":"x","x":"AQAB"}}
            ]}}"#
        );
        let set = KeySet::parse(&body).unwrap();
        assert_eq!(set.keys.len(), 1);
        let key = &set.keys[0];
        assert!(key.can_verify(Algorithm::ES256));
        assert!(!key.can_verify(Algorithm::ES384) && !key.can_verify(Algorithm::RS256));
        assert!(set.knows(Some("ec"), Algorithm::ES256));
        assert!(!set.knows(Some("hmac"), Algorithm::ES256));
        assert!(set.knows(None, Algorithm::ES256) && !set.knows(None, Algorithm::EdDSA));
    }

    #[test]
    fn a_jwk_alg_pins_the_algorithm() {
        let body = r#"{"keys":[{"kty":"RSA","kid":"r","alg":"RS256","n":"AQAB","e":"AQAB"}]}"#;
        let set = KeySet::parse(body).unwrap();
        assert!(set.keys[0].can_verify(Algorithm::RS256));
        assert!(!set.keys[0].can_verify(Algorithm::PS256));
    }

    #[test]
    fn useless_sets_are_errors() {
        assert!(KeySet::parse("<html>").unwrap_err().contains("not JSON"));
        assert!(KeySet::parse("{}").unwrap_err().contains("keys"));
        let err =
            KeySet::parse(r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"h"}]}"#).unwrap_err();
        assert!(
            err.contains("no usable signing key") && err.contains("symmetric"),
            "{err}"
        );
    }
}
