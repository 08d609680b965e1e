//! Taking a compact JWS apart, before anything is trusted.

use crate::error::{TokenError, clip};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value};

/// Longest token accepted. Real ID and access tokens are a few KiB; the limit keeps junk
/// passwords from costing base64 and JSON work.
pub(crate) const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The parts of a token, decoded but not verified.
pub(crate) struct Parsed<'a> {
    pub alg: String,
    pub kid: Option<String>,
    pub claims: Map<String, Value>,
    /// `header.payload`, the bytes the signature covers.
    pub signing_input: &'a str,
    pub signature: &'a str,
}

/// Whether `s` has the shape of a JWT: three base64url segments (the last may be empty, as in
/// `alg: none` tokens, which must still reach the verifier to be refused) whose first decodes
/// to a JSON object with an `alg`. For routing a presented password to the JWT verifier or
/// the service token book; it proves nothing about the token.
pub fn looks_like_jwt(s: &str) -> bool {
    if s.len() > MAX_TOKEN_BYTES {
        return false;
    }
    let mut segments = s.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return false;
    };
    if header.is_empty()
        || payload.is_empty()
        || ![header, payload, signature].iter().all(|p| is_b64url(p))
    {
        return false;
    }
    URL_SAFE_NO_PAD
        .decode(header)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Map<String, Value>>(&bytes).ok())
        .is_some_and(|h| h.get("alg").is_some_and(Value::is_string))
}

fn is_b64url(s: &str) -> bool {
    s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Splits and decodes a token. Nothing here is trusted yet: the signature is checked later
/// with a key chosen by the (unverified) issuer and key id.
pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    let malformed = |why: &str| TokenError::Malformed(why.to_string());
    if token.len() > MAX_TOKEN_BYTES {
        return Err(malformed("longer than 16 KiB"));
    }
    let (signing_input, signature) = token
        .rsplit_once('.')
        .ok_or_else(|| malformed("not three dot-separated parts"))?;
    let (header, payload) = signing_input
        .split_once('.')
        .ok_or_else(|| malformed("not three dot-separated parts"))?;
    if payload.contains('.') {
        return Err(malformed(
            "more than three dot-separated parts (encrypted JWE tokens are not supported)",
        ));
    }
    if !is_b64url(signature) {
        return Err(malformed("the signature is not base64url"));
    }
    let header: Map<String, Value> = decode_json(header, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) if !alg.is_empty() => alg.clone(),
        _ => return Err(malformed("the header has no alg")),
    };
    if header.contains_key("crit") {
        // RFC 7515 §4.1.11: extensions listed in `crit` must be understood; ward knows none.
        return Err(malformed(
            "the header lists critical extensions (crit), which ward does not implement",
        ));
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("the header's kid is not a string")),
    };
    let claims = decode_json(payload, "payload")?;
    Ok(Parsed {
        alg: clip(&alg),
        kid,
        claims,
        signing_input,
        signature,
    })
}

fn decode_json(segment: &str, what: &str) -> Result<Map<String, Value>, TokenError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not base64url")))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| TokenError::Malformed(format!("the {what} is not a JSON object")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn recognises_jwt_shapes_only() {
        let h = b64(r#"{"alg":"RS256","kid":"k"}"#);
        let p = b64(r#"{"iss":"x"}"#);
        assert!(looks_like_jwt(&format!("{h}.{p}.c2ln")));
        assert!(looks_like_jwt(&format!(
            "{}.{p}.",
            b64(r#"{"alg":"none"}"#)
        )));
        assert!(!looks_like_jwt("ward_0123456789abcdef"));
        assert!(!looks_like_jwt("hunter2"));
        assert!(!looks_like_jwt(&format!("{h}.{p}")));
        assert!(!looks_like_jwt(&format!("{h}.{p}.sig.extra")));
        assert!(!looks_like_jwt(&format!(
            "{}.{p}.sig",
            b64(r#"{"typ":"JWT"}"#)
        )));
        assert!(!looks_like_jwt(&format!("{}.{p}.sig", b64("[1,2]"))));
        assert!(!looks_like_jwt(&format!("{h}.{p}.si+g")));
        assert!(!looks_like_jwt("a.b.c"));
    }

    #[test]
    fn parse_explains_what_is_wrong_without_echoing_the_token() {
        let p = b64(r#"{"iss":"x"}"#);
        let err = |t: &str| match parse(t) {
            Err(TokenError::Malformed(why)) => why,
            other => panic!("{:?}", other.map(|p| p.alg)),
        };
        assert!(err("secret-password").contains("three"));
        assert!(err(&format!("{}.{p}.s", b64(r#"{"kid":"k"}"#))).contains("no alg"));
        assert!(
            err(&format!(
                "{}.{p}.s",
                b64(r#"{"alg":"RS256","crit":["b64"]}"#)
            ))
            .contains("crit")
        );
        assert!(err(&format!("{}.!!.s", b64(r#"{"alg":"RS256"}"#))).contains("payload"));
        assert!(err("a.b.c.d.e").contains("JWE"));
        let long = "a".repeat(MAX_TOKEN_BYTES + 1);
        assert!(!err(&long).contains("aaaa"));
        let token = format!("{}.{p}.c2ln", b64(r#"{"alg":"ES256","kid":"k1"}"#));
        let ok = parse(&token).unwrap();
        assert_eq!((ok.alg.as_str(), ok.kid.as_deref()), ("ES256", Some("k1")));
        assert_eq!(ok.signature, "c2ln");
    }
}
