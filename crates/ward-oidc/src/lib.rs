//! Verifies OpenID Connect and CI-workload JWTs into ward identities.
//!
//! Clients that log in at an identity provider (people, through OIDC) or that are handed a
//! token by their platform (CI jobs: GitHub Actions, GitLab CI; Kubernetes service accounts)
//! can present that JWT instead of a ward service token. [`Verifier`] checks it against the
//! issuers configured in `identity.oidc` and `identity.workload` and returns the
//! [`Identity`] it proves. This crate does the checking only; which password is a JWT is the
//! adapter's call ([`looks_like_jwt`] helps), and what the identity may do is policy's.
//!
//! # Verification order
//!
//! Each step runs only if the previous ones passed, and nothing from the token is trusted
//! before step 6:
//!
//! 1. The token is split into header, payload and signature (compact JWS; at most 16 KiB;
//!    `crit` headers and 5-part JWE tokens are refused).
//! 2. `alg: none` and every `HS*` are refused outright, for every issuer, before any key is
//!    looked at. HMAC is never legitimate here: ward holds only public keys, and accepting
//!    HS256 is how a token "signed" with an RSA public key as the HMAC secret gets in.
//! 3. The unverified `iss` picks the configured issuer (exact string match); an unknown
//!    issuer is refused. Keys are only ever fetched from configured URLs: `jku`, `x5u` and
//!    `jwk` headers are ignored.
//! 4. The header's `alg` must be in that issuer's `algorithms`.
//! 5. The key is found by `kid` in the issuer's cached JWKS (without `kid`, every key that
//!    fits the algorithm is tried). The key's own `kty`/`crv` and, if it declares one, `alg`
//!    must fit the header's `alg`, so an RSA key cannot be used as anything else.
//! 6. The signature is verified.
//! 7. Claims: `aud` (string or array) must contain one of the issuer's `audiences`; `exp` is
//!    required and must not have passed; `nbf` must have come; `iat` must not be in the
//!    future (all three with `clock_skew`); `sub` is required.
//! 8. The identity is built: for OIDC issuers `name_prefix` + the `username_claim`, groups
//!    from `groups_claim` (a dotted path such as `realm_access.roles`) with `groups_prefix`,
//!    plus `static_groups`; for workload issuers the `identity` template filled from claims
//!    (characters outside `[A-Za-z0-9._/@:+=-]` become `_`), the listed `attributes`, and
//!    `groups`.
//!
//! Refusals are [`TokenError`]s whose messages say what failed and what to do, with a stable
//! [`TokenError::code`] for audit events. No message or log line contains the token.
//!
//! # Key cache
//!
//! Each issuer has its own cache; there is no background task, everything happens on use:
//!
//! - First use fetches the keys (discovery at `{issuer}/.well-known/openid-configuration`
//!   unless `discovery_url` or `jwks_url` says otherwise; the discovery document must name
//!   the same issuer). Callers that arrive meanwhile wait for that one fetch (single
//!   flight).
//! - Keys older than `jwks_refresh` (or the JWKS response's `Cache-Control: max-age`, if
//!   shorter, but never more often than `unknown_kid_refresh_interval`) are refreshed in a
//!   spawned task; the caller verifies with the cached keys at once.
//! - A token whose `kid` is not cached causes one refetch, at most once per
//!   `unknown_kid_refresh_interval` (across all tokens of the issuer); after that it is
//!   refused as an unknown key id. The same limit spaces out retries while an IdP that was
//!   never reached stays down.
//! - When a fetch fails, the cached keys keep serving until `jwks_max_stale` after the last
//!   successful fetch; then the issuer's tokens are refused ("keys of issuer X are stale:
//!   the IdP has been unreachable since ...") until a fetch succeeds. A response without a
//!   usable signing key counts as a failure, so it never replaces working keys.
//!
//! # Not checked
//!
//! `nonce`, `at_hash` and `azp` belong to the client that ran the login, not to a party that
//! is handed the token afterwards, so they are not checked; neither is `typ` (ID tokens and
//! `at+jwt` access tokens are both accepted, told apart by their audience). A token is a
//! bearer credential until its `exp`: `jti` is returned so a caller can refuse replays if it
//! wants to.
//!
//! # Time
//!
//! The `now` given to [`Verifier::verify`] is the clock for everything, claim checks and
//! cache ages alike, so a caller (or a test) with its own clock gets consistent answers.
//! Once keys are cached, verification does no I/O and takes no async lock;
//! [`Verifier::verify_cached`] is that path as a plain function.

mod claims;
mod error;
mod http;
mod issuer;
mod jwt;
mod keys;

pub use error::TokenError;
pub use jwt::looks_like_jwt;
use ward_core::identity::Identity;

use chrono::{DateTime, TimeDelta, Utc};
use error::clip;
use issuer::{Issuer, Plan};
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::sync::Arc;
use ward_core::config::{OidcIssuerConfig, WorkloadIssuerConfig};

/// What a verified token proves.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The ward identity (source `oidc` or `workload`; `expires` is the token's `exp`).
    pub identity: Identity,
    /// The token's `iss` (the configured issuer).
    pub issuer: String,
    /// The token's `sub`, for the audit: names change, subjects should not.
    pub subject: String,
    /// The accepted audience the token was minted for.
    pub audience: String,
    /// The token's `exp`; a session opened with it may want to end then.
    pub expires: DateTime<Utc>,
    /// The token's `jti`, if any, so the audit can tell tokens apart (and a caller could
    /// refuse replays).
    pub token_id: Option<String>,
}

/// Checks JWTs from the configured issuers. Cheap to build (no network until the first
/// token of an issuer arrives); share one per process so its key caches are shared.
pub struct Verifier {
    issuers: HashMap<String, Arc<Issuer>>,
}

/// One pass over a token: either an answer, or a fetch to do first.
enum Step {
    Done(Result<Verified, TokenError>),
    Fetch(Arc<Issuer>, u64),
}

impl Verifier {
    /// A verifier for these issuers. Meant for validated config (`Config::load` checks it);
    /// unknown algorithm names are ignored, and a workload issuer whose identity template does
    /// not parse refuses every token. When an issuer appears twice, the first entry wins.
    pub fn new(oidc: &[OidcIssuerConfig], workload: &[WorkloadIssuerConfig]) -> Verifier {
        let agent = http::agent();
        let mut issuers = HashMap::new();
        let all = oidc
            .iter()
            .map(|c| (c.common(), claims::Mapping::oidc(c)))
            .chain(
                workload
                    .iter()
                    .map(|c| (c.common(), claims::Mapping::workload(c))),
            );
        for (common, mapping) in all {
            issuers
                .entry(common.issuer.clone())
                .or_insert_with(|| Arc::new(Issuer::new(common, mapping, agent.clone())));
        }
        Verifier { issuers }
    }

    /// Whether no issuer is configured (then no password needs to be tried as a JWT).
    pub fn is_empty(&self) -> bool {
        self.issuers.is_empty()
    }

    /// Verifies `token` at time `now`, fetching the issuer's keys first if they are not
    /// cached (or the `kid` is unknown, or they went stale), at most once per call.
    pub async fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Verified, TokenError> {
        match self.step(token, now, true) {
            Step::Done(result) => result,
            Step::Fetch(issuer, generation) => {
                issuer.fetch(generation, now).await;
                match self.step(token, now, false) {
                    Step::Done(result) => result,
                    Step::Fetch(..) => unreachable!("no fetch is planned without may_fetch"),
                }
            }
        }
    }

    /// Verifies `token` from cached keys only, without blocking: `None` when the answer
    /// needs a key fetch first (call [`Verifier::verify`] then). For callers on a hot path
    /// that want to skip the async machinery; a due background refresh is still started when
    /// this runs inside a tokio runtime.
    pub fn verify_cached(
        &self,
        token: &str,
        now: DateTime<Utc>,
    ) -> Option<Result<Verified, TokenError>> {
        match self.step(token, now, true) {
            Step::Done(result) => Some(result),
            Step::Fetch(..) => None,
        }
    }

    /// Fetches every issuer's keys now (e.g. at start, so the first client does not wait),
    /// returning the issuers whose keys could not be had and why. Failures are not fatal:
    /// tokens of such an issuer retry on use.
    pub async fn prefetch(&self, now: DateTime<Utc>) -> Vec<(String, String)> {
        let mut failed = Vec::new();
        for (name, issuer) in &self.issuers {
            if let Err(why) = issuer.prefetch(now).await {
                failed.push((name.clone(), why));
            }
        }
        failed
    }

    fn step(&self, token: &str, now: DateTime<Utc>, may_fetch: bool) -> Step {
        let parsed = match jwt::parse(token) {
            Ok(parsed) => parsed,
            Err(e) => return Step::Done(Err(e)),
        };
        // Before anything else, whatever the issuer: these algorithms are never legitimate.
        let alg_name = parsed.alg.as_str();
        if alg_name.eq_ignore_ascii_case("none")
            || alg_name
                .get(..2)
                .is_some_and(|p| p.eq_ignore_ascii_case("HS"))
        {
            return Step::Done(Err(TokenError::AlgorithmRefused(parsed.alg.clone())));
        }
        let iss = match parsed.claims.get("iss") {
            Some(Value::String(iss)) => iss,
            None => return Step::Done(Err(TokenError::MissingClaim("iss".into()))),
            Some(_) => return Step::Done(Err(bad_claim("iss", "it is not a string"))),
        };
        let Some(issuer) = self.issuers.get(iss.as_str()) else {
            return Step::Done(Err(TokenError::UnknownIssuer(clip(iss))));
        };
        let Some(alg) = keys::algorithm_named(alg_name).filter(|a| issuer.algorithms.contains(a))
        else {
            return Step::Done(Err(TokenError::AlgorithmNotAllowed {
                alg: parsed.alg.clone(),
                issuer: issuer.common.issuer.clone(),
            }));
        };
        let kid = parsed.kid.as_deref();
        let keys = match issuer.plan(kid, alg, now, may_fetch) {
            Plan::Use(keys) => keys,
            Plan::Fetch(generation) => return Step::Fetch(Arc::clone(issuer), generation),
            Plan::Refuse(e) => return Step::Done(Err(e)),
        };
        let result = check_signature(&keys, &parsed, alg, &issuer.common.issuer)
            .and_then(|()| check_claims(issuer, &parsed.claims, now));
        Step::Done(result)
    }
}

fn bad_claim(claim: &str, why: &str) -> TokenError {
    TokenError::BadClaim {
        claim: claim.into(),
        why: why.into(),
    }
}

fn check_signature(
    keys: &keys::KeySet,
    parsed: &jwt::Parsed<'_>,
    alg: Algorithm,
    issuer: &str,
) -> Result<(), TokenError> {
    let mut tried = false;
    for key in keys.candidates(parsed.kid.as_deref()) {
        if !key.can_verify(alg) {
            continue;
        }
        tried = true;
        let valid = jsonwebtoken::crypto::verify(
            parsed.signature,
            parsed.signing_input.as_bytes(),
            &key.decoding,
            alg,
        )
        .unwrap_or(false);
        if valid {
            return Ok(());
        }
    }
    match (&parsed.kid, tried) {
        // The kid names a key, but of another type or algorithm (the plan found the kid).
        (Some(kid), false) => Err(TokenError::KeyAlgorithmMismatch {
            kid: clip(kid),
            alg: parsed.alg.clone(),
            issuer: issuer.to_string(),
        }),
        _ => Err(TokenError::BadSignature),
    }
}

fn check_claims(
    issuer: &Issuer,
    claims: &Map<String, Value>,
    now: DateTime<Utc>,
) -> Result<Verified, TokenError> {
    let common = &issuer.common;
    let audiences: Vec<&str> = match claims.get("aud") {
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("aud".into())),
        Some(Value::String(aud)) => vec![aud.as_str()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| bad_claim("aud", "it holds a non-string"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(bad_claim("aud", "it is not a string or an array")),
    };
    let Some(audience) = audiences
        .iter()
        .find(|a| common.audiences.iter().any(|c| c == *a))
    else {
        let got = audiences
            .iter()
            .map(|a| format!("{:?}", clip(a)))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(TokenError::WrongAudience {
            got: if got.is_empty() {
                "(empty)".into()
            } else {
                clip(&got)
            },
            expected: common.audiences.join(", "),
        });
    };
    let skew = TimeDelta::from_std(common.clock_skew).unwrap_or(TimeDelta::zero());
    let expires = numeric_date(claims, "exp")?.ok_or(TokenError::MissingClaim("exp".into()))?;
    if now - skew >= expires {
        return Err(TokenError::Expired { at: expires });
    }
    if let Some(from) = numeric_date(claims, "nbf")?
        && now + skew < from
    {
        return Err(TokenError::NotYetValid { from });
    }
    if let Some(at) = numeric_date(claims, "iat")?
        && at > now + skew
    {
        return Err(TokenError::IssuedInFuture { at });
    }
    let subject = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        None | Some(Value::Null) => return Err(TokenError::MissingClaim("sub".into())),
        Some(_) => return Err(bad_claim("sub", "it is not a non-empty string")),
    };
    let token_id = claims
        .get("jti")
        .and_then(Value::as_str)
        .map(str::to_string);
    let identity = issuer.mapping.identity(claims, expires)?;
    Ok(Verified {
        identity,
        issuer: common.issuer.clone(),
        subject,
        audience: audience.to_string(),
        expires,
        token_id,
    })
}

/// A JWT NumericDate claim (seconds since the epoch, possibly fractional).
fn numeric_date(
    claims: &Map<String, Value>,
    claim: &str,
) -> Result<Option<DateTime<Utc>>, TokenError> {
    let secs = match claims.get(claim) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.floor() as i64)
        }),
        Some(_) => None,
    };
    secs.and_then(|s| DateTime::from_timestamp(s, 0))
        .map(Some)
        .ok_or_else(|| bad_claim(claim, "it is not a date in seconds since 1970"))
}
