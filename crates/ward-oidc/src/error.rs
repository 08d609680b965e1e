//! Why a token was refused.
//!
//! Messages say what failed and what to do about it, for the operator reading the log or the
//! audit; clients are only ever told that authentication failed. No message contains the
//! token: values taken from an unverified token (issuer, key id, audience) are clipped and
//! quoted, since anyone can put anything there.

use chrono::{DateTime, Utc};

/// A refused token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a compact JWS, or parts of it do not decode.
    #[error("malformed token: {0}")]
    Malformed(String),
    /// `alg: none` or HMAC: never accepted from anyone, whatever the config says.
    #[error(
        "token signed with {0:?}, which is never accepted: unsigned and HMAC tokens can be \
         forged (HMAC with the issuer's public key as the secret is a known attack); the IdP \
         must sign with RS256, ES256 or EdDSA"
    )]
    AlgorithmRefused(String),
    /// A public-key algorithm the issuer is not configured for.
    #[error(
        "token from issuer {issuer:?} is signed with {alg}, which is not in its `algorithms`; \
         add it there if the IdP really signs with it"
    )]
    AlgorithmNotAllowed { alg: String, issuer: String },
    /// The `iss` claim names no configured issuer.
    #[error(
        "token issuer {0:?} is not configured; add it to identity.oidc or identity.workload \
         (the `issuer` must equal `iss` exactly, trailing slash included)"
    )]
    UnknownIssuer(String),
    /// `aud` has none of the issuer's `audiences`.
    #[error(
        "token audience {got} is none of the accepted audiences ({expected}); ask the IdP for \
         a token for one of them, or add its audience to `audiences`"
    )]
    WrongAudience { got: String, expected: String },
    #[error("token expired at {at}; get a new one from the IdP")]
    Expired { at: DateTime<Utc> },
    #[error("token is not valid before {from}; check the clocks of ward and the IdP")]
    NotYetValid { from: DateTime<Utc> },
    /// `iat` lies in the future by more than the allowed clock skew.
    #[error(
        "token says it was issued at {at}, in the future; check the clocks of ward and the IdP"
    )]
    IssuedInFuture { at: DateTime<Utc> },
    /// The `kid` is not among the issuer's keys, even after refetching them (or a refetch
    /// was not allowed yet).
    #[error(
        "unknown key id {kid:?} for issuer {issuer:?}: not in its published keys (refetched \
         at most once per unknown_kid_refresh_interval); the token was not signed by this \
         issuer, or the IdP rotated keys very recently"
    )]
    UnknownKeyId { kid: String, issuer: String },
    /// The key named by `kid` is of a type or algorithm that cannot check the header's `alg`.
    #[error(
        "key {kid:?} of issuer {issuer:?} cannot verify {alg} (the key's type or declared \
         algorithm differs); the token was not made by the IdP"
    )]
    KeyAlgorithmMismatch {
        kid: String,
        alg: String,
        issuer: String,
    },
    #[error("bad signature: the token was altered or not signed by its issuer's published key")]
    BadSignature,
    #[error("token has no {0} claim")]
    MissingClaim(String),
    #[error("token claim {claim} is unusable: {why}")]
    BadClaim { claim: String, why: String },
    /// The issuer's keys cannot be had: never fetched, or stale past `jwks_max_stale`.
    #[error("keys of issuer {issuer:?} {why}")]
    KeysUnavailable { issuer: String, why: String },
}

impl TokenError {
    /// A stable short code for audit events and metrics (the message may be reworded; this
    /// stays).
    pub fn code(&self) -> &'static str {
        match self {
            TokenError::Malformed(_) => "malformed",
            TokenError::AlgorithmRefused(alg) if alg.eq_ignore_ascii_case("none") => "alg_none",
            TokenError::AlgorithmRefused(_) => "alg_hmac",
            TokenError::AlgorithmNotAllowed { .. } => "alg_not_allowed",
            TokenError::UnknownIssuer(_) => "unknown_issuer",
            TokenError::WrongAudience { .. } => "wrong_audience",
            TokenError::Expired { .. } => "expired",
            TokenError::NotYetValid { .. } => "not_yet_valid",
            TokenError::IssuedInFuture { .. } => "issued_in_future",
            TokenError::UnknownKeyId { .. } => "unknown_kid",
            TokenError::KeyAlgorithmMismatch { .. } => "key_alg_mismatch",
            TokenError::BadSignature => "bad_signature",
            TokenError::MissingClaim(_) => "missing_claim",
            TokenError::BadClaim { .. } => "bad_claim",
            TokenError::KeysUnavailable { .. } => "keys_unavailable",
        }
    }
}

/// Text from an unverified token, cut to a length fit for a log line.
pub(crate) fn clip(text: &str) -> String {
    const MAX: usize = 128;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
