//! Ward tokens: short-lived secrets ward issues itself, to a person after `ward login` and to
//! a bot through `ward token mint`. Unlike service tokens (configured in ward.yaml, proving
//! the identity their user name names), a ward token carries its identity: the user name a
//! client sends with it is only recorded.
//!
//! The set in force lives in memory, so checking a token costs a hash and a map lookup; it is
//! rebuilt at start from the store, which keeps the issue and revoke events. A token is
//! inserted only after its `token_issued` event is durable (the caller records it first), so
//! a token that works is always in the audit.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use ward_core::event::{CredentialInfo, TokenIssuedEvent};
use ward_core::identity::Identity;

/// What every ward token starts with; service tokens are `ward_` + hex, so the two never
/// collide (hex has no `_`).
pub const WARD_TOKEN_PREFIX: &str = "ward_st_";

/// Whether `secret` has the shape of a ward token (it may still be unknown).
pub fn looks_like_ward_token(secret: &str) -> bool {
    secret.starts_with(WARD_TOKEN_PREFIX)
}

/// What a new token is for: the identity it carries and its limits.
#[derive(Clone, Debug)]
pub struct TokenRequest {
    pub identity: String,
    pub groups: Vec<String>,
    pub attributes: Vec<(String, String)>,
    /// `None`: every target.
    pub targets: Option<Vec<String>>,
    /// `login` or `mint`.
    pub kind: &'static str,
    pub issued_by: String,
    pub ttl: std::time::Duration,
}

/// A token just issued: the secret, shown once to whoever asked, and the event to record
/// before the token may be used.
pub struct IssuedToken {
    pub secret: String,
    pub event: TokenIssuedEvent,
}

/// Why a ward token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WardTokenError {
    #[error("unknown ward token; run `ward login` (or ask for a new token) and reconnect")]
    Unknown,
    #[error("ward token {0} expired at {1}; run `ward login` (or ask for a new token) again")]
    Expired(String, DateTime<Utc>),
    #[error("ward token {0} was revoked")]
    Revoked(String),
    #[error("ward token {0} may not be used for target {1:?}")]
    TargetNotAllowed(String, String),
}

impl WardTokenError {
    /// Stable short code for `auth_refused` events.
    pub fn code(&self) -> &'static str {
        match self {
            WardTokenError::Unknown => "bad_token",
            WardTokenError::Expired(..) => "expired",
            WardTokenError::Revoked(_) => "revoked",
            WardTokenError::TargetNotAllowed(..) => "target_not_allowed",
        }
    }
}

/// One token in force.
#[derive(Debug)]
struct Entry {
    event: TokenIssuedEvent,
    revoked: bool,
}

/// The ward tokens in force, by the SHA-256 of their secret.
///
/// Looked up by hash in a map rather than compared in constant time: what the lookup's
/// timing could reveal is how the presented secret's *hash* relates to stored hashes, which
/// says nothing about any secret (finding a secret from a hash needs a preimage).
#[derive(Debug, Default)]
pub struct WardTokens {
    by_hash: RwLock<HashMap<[u8; 32], Arc<RwLock<Entry>>>>,
    by_id: RwLock<HashMap<String, [u8; 32]>>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

fn parse_hash(text: &str) -> Option<[u8; 32]> {
    ward_core::identity::parse_token_hash(text).ok()
}

impl WardTokens {
    pub fn new() -> WardTokens {
        WardTokens::default()
    }

    /// Creates a token for `request` at `now`. It is not usable until [`WardTokens::insert`]
    /// is called with its event, which the caller does once the event is durable.
    pub fn issue(request: TokenRequest, now: DateTime<Utc>) -> IssuedToken {
        let mut raw = [0u8; 24];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!("{WARD_TOKEN_PREFIX}{}", hex::encode(raw));
        let mut id = [0u8; 8];
        rand::rngs::OsRng.fill_bytes(&mut id);
        let ttl = chrono::Duration::from_std(request.ttl).unwrap_or(chrono::Duration::MAX);
        let expires = now
            .checked_add_signed(ttl)
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        let event = TokenIssuedEvent {
            token_id: format!("wt_{}", hex::encode(id)),
            hash: ward_core::identity::hash_token(&secret),
            identity: request.identity,
            groups: request.groups,
            attributes: request.attributes,
            targets: request.targets,
            kind: request.kind.to_string(),
            issued_by: request.issued_by,
            issued_at: now.timestamp_micros(),
            expires_at: expires.timestamp_micros(),
        };
        IssuedToken { secret, event }
    }

    /// Makes a recorded token usable (also what loading from the store does).
    pub fn insert(&self, event: TokenIssuedEvent) {
        let Some(hash) = parse_hash(&event.hash) else {
            tracing::warn!(token = %event.token_id, "ward token with a malformed hash ignored");
            return;
        };
        let id = event.token_id.clone();
        let entry = Arc::new(RwLock::new(Entry {
            event,
            revoked: false,
        }));
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(hash, entry);
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, hash);
    }

    /// Replaces the set in force with `tokens` (at start, from the store).
    pub fn load(&self, tokens: impl IntoIterator<Item = TokenIssuedEvent>) {
        self.by_hash
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        self.by_id
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        for t in tokens {
            self.insert(t);
        }
    }

    /// The issue event of token `token_id`, if it is known (revoked or not).
    pub fn get(&self, token_id: &str) -> Option<TokenIssuedEvent> {
        let hash = *self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token_id)?;
        let map = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let entry = map.get(&hash)?;
        let event = entry
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .event
            .clone();
        Some(event)
    }

    /// Revokes `token_id` (after its `token_revoked` event is durable). Returns whether the
    /// token was known and not yet revoked. The entry stays until it expires, so a client
    /// that presents it is told it was revoked rather than that it is unknown.
    pub fn revoke(&self, token_id: &str) -> bool {
        let Some(hash) = self
            .by_id
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(token_id)
            .copied()
        else {
            return false;
        };
        let map = self.by_hash.read().unwrap_or_else(PoisonError::into_inner);
        let Some(entry) = map.get(&hash) else {
            return false;
        };
        let mut entry = entry.write().unwrap_or_else(PoisonError::into_inner);
        !std::mem::replace(&mut entry.revoked, true)
    }

    /// Drops tokens that expired before `now` (called now and then; expired tokens are
    /// refused either way).
    pub fn prune(&self, now: DateTime<Utc>) {
        let now = now.timestamp_micros();
        let mut map = self.by_hash.write().unwrap_or_else(PoisonError::into_inner);
        let mut ids = self.by_id.write().unwrap_or_else(PoisonError::into_inner);
        map.retain(|_, entry| {
            let entry = entry.read().unwrap_or_else(PoisonError::into_inner);
            let keep = entry.event.expires_at > now;
            if !keep {
                ids.remove(&entry.event.token_id);
            }
            keep
        });
    }

    /// Checks `secret` for `target` (`None`: acting towards ward itself, e.g. the admin API,
    /// where target limits do not apply) and returns the identity it carries.
    pub fn authenticate(
        &self,
        secret: &str,
        target: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(Identity, CredentialInfo), WardTokenError> {
        let hash = digest(secret);
        let entry = self
            .by_hash
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&hash)
            .cloned()
            .ok_or(WardTokenError::Unknown)?;
        let entry = entry.read().unwrap_or_else(PoisonError::into_inner);
        let t = &entry.event;
        if entry.revoked {
            return Err(WardTokenError::Revoked(t.token_id.clone()));
        }
        let expires = DateTime::from_timestamp_micros(t.expires_at).unwrap_or(DateTime::UNIX_EPOCH);
        if expires <= now {
            return Err(WardTokenError::Expired(t.token_id.clone(), expires));
        }
        if let (Some(target), Some(allowed)) = (target, &t.targets)
            && !allowed.iter().any(|a| a == target)
        {
            return Err(WardTokenError::TargetNotAllowed(
                t.token_id.clone(),
                target.to_string(),
            ));
        }
        let mut attributes = t.attributes.clone();
        attributes.push(("token_kind".into(), t.kind.clone()));
        let identity = Identity {
            name: t.identity.as_str().into(),
            source: "ward_token",
            groups: t.groups.clone(),
            expires: Some(expires),
            attributes: attributes.clone(),
        };
        let credential = CredentialInfo {
            source: "ward_token".into(),
            issuer: None,
            subject: Some(t.issued_by.clone()),
            token_id: Some(t.token_id.clone()),
            expires_at: Some(t.expires_at),
            attributes,
        };
        Ok((identity, credential))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn request(targets: Option<Vec<String>>, ttl: Duration) -> TokenRequest {
        TokenRequest {
            identity: "oidc:alice/nightly".into(),
            groups: vec!["dba".into()],
            attributes: vec![("minted_by".into(), "oidc:alice".into())],
            targets,
            kind: "mint",
            issued_by: "oidc:alice".into(),
            ttl,
        }
    }

    #[test]
    fn a_token_works_only_once_inserted_and_carries_its_identity() {
        let tokens = WardTokens::new();
        let now = Utc::now();
        let issued = WardTokens::issue(request(None, Duration::from_secs(900)), now);
        assert!(looks_like_ward_token(&issued.secret));
        assert_eq!(issued.secret.len(), WARD_TOKEN_PREFIX.len() + 48);
        assert!(!issued.event.hash.contains(&issued.secret));
        assert_eq!(
            tokens
                .authenticate(&issued.secret, Some("db"), now)
                .unwrap_err(),
            WardTokenError::Unknown
        );
        tokens.insert(issued.event.clone());
        let (identity, credential) = tokens
            .authenticate(&issued.secret, Some("db"), now)
            .unwrap();
        assert_eq!(&*identity.name, "oidc:alice/nightly");
        assert_eq!(identity.groups, ["dba"]);
        assert_eq!(identity.source, "ward_token");
        assert_eq!(
            credential.token_id.as_deref(),
            Some(issued.event.token_id.as_str())
        );
        assert_eq!(
            identity.expires.unwrap().timestamp_micros(),
            now.timestamp_micros() + 900_000_000
        );
        assert_eq!(
            tokens
                .authenticate("ward_st_000", Some("db"), now)
                .unwrap_err(),
            WardTokenError::Unknown
        );
    }

    #[test]
    fn expired_revoked_and_other_target_tokens_are_refused() {
        let tokens = WardTokens::new();
        let now = Utc::now();
        let scoped = WardTokens::issue(
            request(Some(vec!["orders-db".into()]), Duration::from_secs(60)),
            now,
        );
        tokens.insert(scoped.event.clone());
        assert!(
            tokens
                .authenticate(&scoped.secret, Some("orders-db"), now)
                .is_ok()
        );
        assert!(tokens.authenticate(&scoped.secret, None, now).is_ok());
        assert!(matches!(
            tokens.authenticate(&scoped.secret, Some("hr-db"), now),
            Err(WardTokenError::TargetNotAllowed(..))
        ));
        let later = now + chrono::Duration::seconds(61);
        let err = tokens
            .authenticate(&scoped.secret, Some("orders-db"), later)
            .unwrap_err();
        assert_eq!(err.code(), "expired");

        assert!(tokens.revoke(&scoped.event.token_id));
        assert!(!tokens.revoke(&scoped.event.token_id), "already revoked");
        assert!(!tokens.revoke("wt_unknown"));
        assert_eq!(
            tokens
                .authenticate(&scoped.secret, Some("orders-db"), now)
                .unwrap_err(),
            WardTokenError::Revoked(scoped.event.token_id.clone())
        );
        tokens.prune(later);
        assert!(tokens.get(&scoped.event.token_id).is_none());
        assert_eq!(
            tokens
                .authenticate(&scoped.secret, Some("orders-db"), now)
                .unwrap_err(),
            WardTokenError::Unknown
        );
    }
}
