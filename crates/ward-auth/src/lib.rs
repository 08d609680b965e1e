//! Who is connecting: one authenticator for every protocol adapter.
//!
//! An adapter collects what its protocol offers — a user name, a secret from the password
//! slot (PostgreSQL password, SSH password or keyboard-interactive answer, HTTP bearer) and
//! the target asked for — and hands it to [`Authenticator::admit`]. The answer is the
//! identity with the facts the audit keeps about its credential, or a [`Refusal`] whose
//! message the adapter sends in its own protocol (SQLSTATE, SSH banner, HTTP status). Every
//! refusal is recorded as an `auth_refused` event here, so no adapter can forget to.
//!
//! Secrets are told apart by shape: a JWT goes to the IdP/CI verifier (`identity.oidc`,
//! `identity.workload`), a `ward_st_…` secret is a ward token ([`ward_tokens`]), anything
//! else is a service token of `identity.tokens`, which must belong to the user name sent.

pub mod ward_tokens;

use chrono::{DateTime, Utc};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use ward_core::control::Controls;
use ward_core::event::{AuthRefusedEvent, CredentialInfo};
use ward_core::identity::{AuthError, Identity};
use ward_core::{AuditEvent, AuditSink, TokenBook};
pub use ward_tokens::{
    IssuedToken, TokenRequest, WARD_TOKEN_PREFIX, WardTokenError, WardTokens, looks_like_ward_token,
};

/// An identity ward let in, and what proved it.
#[derive(Clone, Debug)]
pub struct Admission {
    pub identity: Identity,
    pub credential: CredentialInfo,
}

/// Why a client was refused, worded for the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Refusal {
    pub kind: RefusalKind,
    /// The `auth_refused` code (`bad_token`, `expired`, `locked`, …).
    pub code: String,
    /// The sentence for the client, starting `ward: `. Never the secret; for service
    /// tokens the same for every failure, so names of identities and targets do not leak.
    pub message: String,
    /// What to do about it.
    pub hint: &'static str,
}

/// What kind of refusal, for adapters whose protocol distinguishes them (PostgreSQL:
/// `28P01` for a bad credential, `28000` for a locked identity).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalKind {
    Credential,
    Locked,
}

/// One login attempt, as an adapter saw it.
#[derive(Clone, Copy, Debug)]
pub struct Attempt<'a> {
    /// `postgres`, `ssh`, …
    pub protocol: &'a str,
    /// The user name the client sent (a service token's identity; otherwise only recorded).
    pub user: &'a str,
    pub secret: &'a str,
    pub target: &'a str,
    /// Whether `target` is configured for this protocol.
    pub target_exists: bool,
    /// The client's `ip:port`.
    pub peer: &'a str,
}

/// Checks credentials of every kind; shared by all adapters and the admin API.
pub struct Authenticator {
    tokens: TokenBook,
    verifier: Arc<ward_oidc::Verifier>,
    ward_tokens: Arc<WardTokens>,
    controls: Arc<Controls>,
    audit: AuditSink,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Token hashes are not secrets, but nothing is gained by printing them.
        f.debug_struct("Authenticator")
            .field("service_tokens", &self.tokens.entries().len())
            .field("issuers", &!self.verifier.is_empty())
            .finish_non_exhaustive()
    }
}

const SERVICE_TOKEN_HINT: &str =
    "check the token (ward token create), its expiry, and that it may use this target";
const WARD_TOKEN_HINT: &str =
    "run `ward login` again, or ask whoever minted the token for a new one";
const UNKNOWN_TARGET_HINT: &str =
    "check the target name (for PostgreSQL, the database name you connect to)";

impl Authenticator {
    pub fn new(
        tokens: TokenBook,
        verifier: Arc<ward_oidc::Verifier>,
        ward_tokens: Arc<WardTokens>,
        controls: Arc<Controls>,
        audit: AuditSink,
    ) -> Authenticator {
        Authenticator {
            tokens,
            verifier,
            ward_tokens,
            controls,
            audit,
        }
    }

    /// The service tokens of `identity.tokens`.
    pub fn service_tokens(&self) -> &TokenBook {
        &self.tokens
    }

    /// The IdP and CI token verifier.
    pub fn verifier(&self) -> &Arc<ward_oidc::Verifier> {
        &self.verifier
    }

    /// The ward tokens in force.
    pub fn ward_tokens(&self) -> &Arc<WardTokens> {
        &self.ward_tokens
    }

    /// Admits or refuses a client connecting to a target. Refusals are recorded.
    pub async fn admit(&self, attempt: Attempt<'_>) -> Result<Admission, Refusal> {
        let now = Utc::now();
        let source = self.source_of(attempt.secret);
        let admission = match source {
            "jwt" => self.admit_jwt(&attempt, now).await,
            "ward_token" => self.admit_ward_token(&attempt, now),
            _ => self.admit_service_token(&attempt, now),
        };
        let admission = match admission {
            Ok(a) => a,
            Err((refusal, reason, identity)) => {
                self.record(&attempt, source, &refusal.code, reason, identity);
                return Err(refusal);
            }
        };
        self.check_locks(&attempt, source, &admission)?;
        Ok(admission)
    }

    /// Which kind of secret this is: `jwt`, `ward_token` or `token`.
    fn source_of(&self, secret: &str) -> &'static str {
        if looks_like_ward_token(secret) {
            "ward_token"
        } else if !self.verifier.is_empty() && ward_oidc::looks_like_jwt(secret) {
            "jwt"
        } else {
            "token"
        }
    }

    async fn admit_jwt(
        &self,
        attempt: &Attempt<'_>,
        now: DateTime<Utc>,
    ) -> Result<Admission, (Refusal, String, Option<String>)> {
        // The identity comes from the token, whatever user name the client sent (kept as an
        // attribute). Once the issuer's keys are cached this does no I/O.
        let verified = self
            .verifier
            .verify(attempt.secret, now)
            .await
            .map_err(|e| {
                (
                    Refusal {
                        kind: RefusalKind::Credential,
                        code: e.code().to_string(),
                        message: format!("ward: token refused: {e}"),
                        hint: jwt_hint(&e),
                    },
                    e.to_string(),
                    None,
                )
            })?;
        if !attempt.target_exists {
            return Err(unknown_target(attempt, Some(&verified.identity.name)));
        }
        let mut identity = verified.identity;
        identity
            .attributes
            .push((user_attribute(attempt.protocol), attempt.user.to_string()));
        let credential = CredentialInfo {
            source: identity.source.into(),
            issuer: Some(verified.issuer),
            subject: Some(verified.subject),
            token_id: verified.token_id,
            expires_at: Some(verified.expires.timestamp_micros()),
            attributes: identity.attributes.clone(),
        };
        Ok(Admission {
            identity,
            credential,
        })
    }

    fn admit_ward_token(
        &self,
        attempt: &Attempt<'_>,
        now: DateTime<Utc>,
    ) -> Result<Admission, (Refusal, String, Option<String>)> {
        let (mut identity, mut credential) = self
            .ward_tokens
            .authenticate(attempt.secret, Some(attempt.target), now)
            .map_err(|e| {
                (
                    Refusal {
                        kind: RefusalKind::Credential,
                        code: e.code().to_string(),
                        message: format!("ward: token refused: {e}"),
                        hint: WARD_TOKEN_HINT,
                    },
                    e.to_string(),
                    None,
                )
            })?;
        if !attempt.target_exists {
            return Err(unknown_target(attempt, Some(&identity.name)));
        }
        let user = (user_attribute(attempt.protocol), attempt.user.to_string());
        identity.attributes.push(user.clone());
        credential.attributes.push(user);
        Ok(Admission {
            identity,
            credential,
        })
    }

    fn admit_service_token(
        &self,
        attempt: &Attempt<'_>,
        now: DateTime<Utc>,
    ) -> Result<Admission, (Refusal, String, Option<String>)> {
        let authenticated = if attempt.target_exists {
            self.tokens
                .authenticate(attempt.user, attempt.secret, attempt.target, now)
        } else {
            Err(AuthError::UnknownTarget(attempt.target.to_string()))
        };
        match authenticated {
            Ok(identity) => {
                let credential = CredentialInfo {
                    source: identity.source.into(),
                    expires_at: identity.expires.map(|e| e.timestamp_micros()),
                    attributes: identity.attributes.clone(),
                    ..CredentialInfo::default()
                };
                Ok(Admission {
                    identity,
                    credential,
                })
            }
            Err(reason) => Err((
                Refusal {
                    kind: RefusalKind::Credential,
                    code: reason.code().to_string(),
                    message: generic_failure(attempt),
                    hint: SERVICE_TOKEN_HINT,
                },
                reason.to_string(),
                None,
            )),
        }
    }

    /// Refuses a locked identity, or a ward token whose minter is locked (locking a person
    /// also stops the bots they minted tokens for).
    fn check_locks(
        &self,
        attempt: &Attempt<'_>,
        source: &str,
        admission: &Admission,
    ) -> Result<(), Refusal> {
        let name = &*admission.identity.name;
        let minter = admission
            .identity
            .attributes
            .iter()
            .find(|(k, _)| k == "minted_by")
            .map(|(_, v)| v.as_str());
        let locked = self
            .controls
            .check_lock(name)
            .map(|lock| (name.to_string(), lock))
            .or_else(|| {
                minter.and_then(|m| self.controls.check_lock(m).map(|l| (m.to_string(), l)))
            });
        let Some((who, lock)) = locked else {
            return Ok(());
        };
        let refusal = Refusal {
            kind: RefusalKind::Locked,
            code: "locked".into(),
            message: format!("ward: identity \"{who}\" is locked: {}", lock.reason),
            hint: "an administrator can lift it with `ward unlock`",
        };
        self.record(
            attempt,
            source,
            "locked",
            format!("identity {who:?} is locked: {}", lock.reason),
            Some(name.to_string()),
        );
        Err(refusal)
    }

    /// Proves who is calling ward itself (the admin API) with a bearer secret: an IdP
    /// token, a ward token (target limits do not apply), or `<identity>:<service token>`.
    /// Refusals are not recorded here: the API answers 401 and logs it.
    pub async fn identify(&self, bearer: &str) -> Result<Admission, String> {
        let now = Utc::now();
        match self.source_of(bearer) {
            "ward_token" => self
                .ward_tokens
                .authenticate(bearer, None, now)
                .map(|(identity, credential)| Admission {
                    identity,
                    credential,
                })
                .map_err(|e| e.to_string()),
            "jwt" => {
                let verified = self
                    .verifier
                    .verify(bearer, now)
                    .await
                    .map_err(|e| e.to_string())?;
                let credential = CredentialInfo {
                    source: verified.identity.source.into(),
                    issuer: Some(verified.issuer),
                    subject: Some(verified.subject),
                    token_id: verified.token_id,
                    expires_at: Some(verified.expires.timestamp_micros()),
                    attributes: verified.identity.attributes.clone(),
                };
                Ok(Admission {
                    identity: verified.identity,
                    credential,
                })
            }
            _ => {
                // Service tokens have no `:`, identity names may (`oidc:alice`).
                let (user, token) = bearer.rsplit_once(':').ok_or_else(|| {
                    "not an IdP token, a ward token or <identity>:<service token>".to_string()
                })?;
                let identity = self
                    .tokens
                    .verify(user, token, now)
                    .map_err(|e| e.to_string())?;
                let credential = CredentialInfo {
                    source: identity.source.into(),
                    expires_at: identity.expires.map(|e| e.timestamp_micros()),
                    ..CredentialInfo::default()
                };
                Ok(Admission {
                    identity,
                    credential,
                })
            }
        }
    }

    fn record(
        &self,
        attempt: &Attempt<'_>,
        source: &str,
        code: &str,
        reason: String,
        identity: Option<String>,
    ) {
        record_refusal(
            &self.audit,
            AuthRefusedEvent {
                protocol: attempt.protocol.to_string(),
                target: attempt.target.to_string(),
                claimed_user: attempt.user.to_string(),
                identity,
                peer: attempt.peer.to_string(),
                source: source.to_string(),
                code: code.to_string(),
                reason,
                at: ward_core::time::now_micros(),
            },
        );
    }
}

/// The attribute that keeps the user name a client sent with a token that names its own
/// identity: `pg_user` for PostgreSQL (what earlier events recorded), `<protocol>_user`
/// otherwise.
fn user_attribute(protocol: &str) -> String {
    match protocol {
        "postgres" => "pg_user".to_string(),
        other => format!("{other}_user"),
    }
}

fn generic_failure(attempt: &Attempt<'_>) -> String {
    format!(
        "ward: authentication failed for user \"{}\" on target \"{}\"",
        attempt.user, attempt.target
    )
}

fn unknown_target(
    attempt: &Attempt<'_>,
    identity: Option<&str>,
) -> (Refusal, String, Option<String>) {
    let reason = AuthError::UnknownTarget(attempt.target.to_string());
    (
        Refusal {
            kind: RefusalKind::Credential,
            code: reason.code().to_string(),
            message: generic_failure(attempt),
            hint: UNKNOWN_TARGET_HINT,
        },
        reason.to_string(),
        identity.map(str::to_string),
    )
}

fn jwt_hint(e: &ward_oidc::TokenError) -> &'static str {
    match e.code() {
        "expired" => "get a fresh token from your identity provider and reconnect",
        "not_yet_valid" | "issued_in_future" => {
            "the clocks of this machine, ward and the identity provider disagree"
        }
        "wrong_audience" => "ask your identity provider for a token meant for this gateway",
        "keys_unavailable" => "ward cannot reach the identity provider right now; try again later",
        _ => {
            "with an IdP token the user name is not used: the identity comes from the token, which must come from an issuer this gateway trusts"
        }
    }
}

/// Records a refused login without waiting: a flood of bad logins must not hold up the
/// sessions behind them. When the audit queue is full the event is dropped and counted,
/// and the count is logged (at most once a second). Public for refusals an adapter decides
/// itself before any secret reaches [`Authenticator::admit`] (e.g. an SSH public key that
/// maps to no identity).
pub fn record_refusal(audit: &AuditSink, event: AuthRefusedEvent) {
    if audit.try_record(AuditEvent::AuthRefused(event)).is_ok() {
        return;
    }
    static DROPPED: AtomicU64 = AtomicU64::new(0);
    static LOGGED_AT: AtomicI64 = AtomicI64::new(0);
    let dropped = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
    let now = ward_core::time::now_micros();
    let last = LOGGED_AT.load(Ordering::Relaxed);
    if now - last >= 1_000_000
        && LOGGED_AT
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        tracing::warn!(
            dropped_total = dropped,
            "audit queue full (or closed): refused logins are not being recorded; sessions go first"
        );
    }
}
