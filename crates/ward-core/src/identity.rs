//! Identities and the service tokens that prove them.
//!
//! A token is a random secret shown once to its owner; ward keeps only its SHA-256 (the
//! token has 192 bits of entropy, so a fast hash is enough and a slow KDF would only cost
//! latency on every connection). Presented tokens are hashed and compared in constant time.
//! Every refusal reason maps to the same client-facing message, so a client cannot learn
//! which identities or targets exist; the reason is kept for logs and the audit.

use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// An authenticated principal: who is behind a session.
#[derive(Clone, Debug)]
pub struct Identity {
    pub name: Arc<str>,
    /// Where the identity came from: `token` (a service token), `oidc` (a person's token from
    /// an OpenID Connect issuer), `workload` (a CI job's or service account's token); later
    /// `ssh-key`.
    pub source: &'static str,
    pub groups: Vec<String>,
    pub expires: Option<DateTime<Utc>>,
    /// Facts about the principal kept for the audit, e.g. a CI job's `ref` and `run_id`
    /// (workload tokens); empty for service tokens.
    pub attributes: Vec<(String, String)>,
}

/// Why authentication failed. Clients only ever see "authentication failed".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("no token matches identity {0:?}")]
    BadToken(String),
    #[error("token for identity {0:?} expired at {1}")]
    Expired(String, DateTime<Utc>),
    #[error("identity {0:?} may not use target {1:?}")]
    TargetNotAllowed(String, String),
    #[error("unknown target {0:?}")]
    UnknownTarget(String),
}

impl AuthError {
    /// A stable short code for audit events (`bad_token`, `expired`, `target_not_allowed`,
    /// `unknown_target`).
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::BadToken(_) => "bad_token",
            AuthError::Expired(..) => "expired",
            AuthError::TargetNotAllowed(..) => "target_not_allowed",
            AuthError::UnknownTarget(_) => "unknown_target",
        }
    }
}

/// One configured token: the identity it proves, its hash and limits.
#[derive(Clone, Debug, Default)]
pub struct TokenEntry {
    pub identity: Arc<str>,
    pub hash: [u8; 32],
    /// `None` only for a `long_lived` token (the config refuses any other without expiry).
    pub expires: Option<DateTime<Utc>>,
    /// Marked `long_lived: true` in the config: deliberately never expires.
    pub long_lived: bool,
    /// The identity responsible for the token (`owner:`, e.g. `oidc:alice`).
    pub owner: Option<String>,
    /// The IdP group the owner must still be in (`owner_group:`); set only with `owner`.
    pub owner_group: Option<String>,
    /// Targets this token may reach; `None` means every target.
    pub targets: Option<Vec<String>>,
    pub groups: Vec<String>,
}

/// The set of configured tokens, checked on every connection.
#[derive(Clone, Debug, Default)]
pub struct TokenBook {
    entries: Vec<TokenEntry>,
}

impl TokenBook {
    pub fn new(entries: Vec<TokenEntry>) -> Self {
        TokenBook { entries }
    }

    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Checks that `presented` is a valid token for identity `user` allowed on `target`.
    ///
    /// Every entry is compared (not just the first of that name) so that the time taken does
    /// not depend on which entry matched; several tokens per identity allow rotation.
    pub fn authenticate(
        &self,
        user: &str,
        presented: &str,
        target: &str,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthError> {
        let entry = self.valid_entry(user, presented, now)?;
        if let Some(allowed) = &entry.targets
            && !allowed.iter().any(|t| t == target)
        {
            return Err(AuthError::TargetNotAllowed(
                user.to_string(),
                target.to_string(),
            ));
        }
        Ok(Identity {
            name: entry.identity.clone(),
            source: "token",
            groups: entry.groups.clone(),
            expires: entry.expires,
            attributes: Vec::new(),
        })
    }
}

impl TokenBook {
    /// Checks that `presented` is a valid, unexpired token for identity `user`, whatever
    /// targets it is limited to. For acting as the identity towards ward itself (approving a
    /// request through the admin API) rather than connecting to a target; who may do what is
    /// then decided by the caller (e.g. a rule's approvers).
    pub fn verify(
        &self,
        user: &str,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<Identity, AuthError> {
        let entry = self.valid_entry(user, presented, now)?;
        Ok(Identity {
            name: entry.identity.clone(),
            source: "token",
            groups: entry.groups.clone(),
            expires: entry.expires,
            attributes: Vec::new(),
        })
    }

    /// The entry `presented` proves for `user`, if it has not expired. Every entry is
    /// compared, so the time taken does not depend on which one matched.
    fn valid_entry(
        &self,
        user: &str,
        presented: &str,
        now: DateTime<Utc>,
    ) -> Result<&TokenEntry, AuthError> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found: Option<&TokenEntry> = None;
        for entry in &self.entries {
            let same_hash: bool = entry.hash.ct_eq(&digest).into();
            if same_hash && entry.identity.as_ref() == user && found.is_none() {
                found = Some(entry);
            }
        }
        let entry = found.ok_or_else(|| AuthError::BadToken(user.to_string()))?;
        if let Some(expires) = entry.expires
            && expires <= now
        {
            return Err(AuthError::Expired(user.to_string(), expires));
        }
        Ok(entry)
    }
}

/// A newly minted token: the secret (shown once) and the line to store.
pub struct NewToken {
    pub token: String,
    pub hash: String,
}

/// Mints a token: `ward_` followed by 48 hex digits (192 random bits).
pub fn generate_token() -> NewToken {
    let mut raw = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    let token = format!("ward_{}", hex::encode(raw));
    let hash = hash_token(&token);
    NewToken { token, hash }
}

/// `sha256:<hex>` of a token, the form stored in ward.yaml.
pub fn hash_token(token: &str) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(token.as_bytes())))
}

/// Parses `sha256:<64 hex digits>`.
pub fn parse_token_hash(text: &str) -> Result<[u8; 32], String> {
    let hex_part = text.strip_prefix("sha256:").ok_or_else(|| {
        format!(
            "token hash {text:?} must look like sha256:<64 hex digits> (from `ward token create`)"
        )
    })?;
    let bytes =
        hex::decode(hex_part).map_err(|_| format!("token hash {text:?} is not valid hex"))?;
    bytes
        .try_into()
        .map_err(|_| format!("token hash {text:?} must have exactly 64 hex digits"))
}

/// Constant-time equality of two secrets of any length (length itself is not hidden).
pub fn secrets_equal(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// A workload identity template such as `ci:github:{repository}:{workflow}`, parsed once at
/// config load so a broken template stops `ward serve` instead of refusing every job.
///
/// `{claim}` names a claim (a dotted path reaches into nested objects); everything else is
/// literal. Braces cannot be escaped: identity names have no use for them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdentityTemplate {
    parts: Vec<TemplatePart>,
}

/// One piece of an [`IdentityTemplate`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TemplatePart {
    Literal(String),
    Claim(String),
}

impl IdentityTemplate {
    /// Parses a template; the error says what is wrong and where.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            return Err("the template is empty; e.g. ci:github:{repository}:{workflow}".into());
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            match rest.find(['{', '}']) {
                None => {
                    parts.push(TemplatePart::Literal(rest.to_string()));
                    break;
                }
                Some(i) if rest.as_bytes()[i] == b'}' => {
                    return Err(format!(
                        "{text:?}: `}}` at byte {} has no `{{`",
                        text.len() - rest.len() + i
                    ));
                }
                Some(i) => {
                    if i > 0 {
                        parts.push(TemplatePart::Literal(rest[..i].to_string()));
                    }
                    let after = &rest[i + 1..];
                    let Some(end) = after
                        .find(['{', '}'])
                        .filter(|&e| after.as_bytes()[e] == b'}')
                    else {
                        return Err(format!("{text:?}: `{{` is not closed by `}}`"));
                    };
                    let claim = after[..end].trim();
                    if claim.is_empty() {
                        return Err(format!("{text:?}: `{{}}` names no claim"));
                    }
                    parts.push(TemplatePart::Claim(claim.to_string()));
                    rest = &after[end + 1..];
                }
            }
        }
        Ok(IdentityTemplate { parts })
    }

    pub fn parts(&self) -> &[TemplatePart] {
        &self.parts
    }

    /// The claims the template reads.
    pub fn claims(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            TemplatePart::Claim(c) => Some(c.as_str()),
            TemplatePart::Literal(_) => None,
        })
    }

    /// Fills the template: `value` gives each claim's text (or the caller's refusal), which
    /// is inserted through [`sanitize_identity_part`].
    pub fn render<E>(&self, mut value: impl FnMut(&str) -> Result<String, E>) -> Result<String, E> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                TemplatePart::Literal(text) => out.push_str(text),
                TemplatePart::Claim(claim) => out.push_str(&sanitize_identity_part(&value(claim)?)),
            }
        }
        Ok(out)
    }
}

/// A claim value made safe for an identity name: characters outside `[A-Za-z0-9._/@:+=-]`
/// become `_`, so a token cannot put spaces, control characters or glob characters into
/// names that policy rules match and logs print.
pub fn sanitize_identity_part(value: &str) -> String {
    value
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._/@:+=-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(
        token: &str,
        expires: Option<DateTime<Utc>>,
        targets: Option<Vec<String>>,
    ) -> TokenBook {
        TokenBook::new(vec![TokenEntry {
            identity: "ci-nightly".into(),
            hash: parse_token_hash(&hash_token(token)).unwrap(),
            expires,
            targets,
            ..TokenEntry::default()
        }])
    }

    #[test]
    fn accepts_the_right_token_only_for_its_identity() {
        let t = generate_token();
        let b = book(&t.token, None, None);
        let now = Utc::now();
        assert_eq!(
            &*b.authenticate("ci-nightly", &t.token, "db", now)
                .unwrap()
                .name,
            "ci-nightly"
        );
        assert!(matches!(
            b.authenticate("someone-else", &t.token, "db", now),
            Err(AuthError::BadToken(_))
        ));
        assert!(matches!(
            b.authenticate("ci-nightly", "ward_wrong", "db", now),
            Err(AuthError::BadToken(_))
        ));
    }

    #[test]
    fn refuses_expired_tokens_and_other_targets() {
        let t = generate_token();
        let past = Utc::now() - chrono::Duration::seconds(1);
        let b = book(&t.token, Some(past), None);
        assert!(matches!(
            b.authenticate("ci-nightly", &t.token, "db", Utc::now()),
            Err(AuthError::Expired(..))
        ));
        let b = book(&t.token, None, Some(vec!["orders-db".into()]));
        assert!(
            b.authenticate("ci-nightly", &t.token, "orders-db", Utc::now())
                .is_ok()
        );
        assert!(matches!(
            b.authenticate("ci-nightly", &t.token, "hr-db", Utc::now()),
            Err(AuthError::TargetNotAllowed(..))
        ));
    }

    #[test]
    fn verify_ignores_target_limits_but_not_expiry() {
        let t = generate_token();
        let b = book(&t.token, None, Some(vec!["orders-db".into()]));
        assert_eq!(
            &*b.verify("ci-nightly", &t.token, Utc::now()).unwrap().name,
            "ci-nightly"
        );
        assert!(matches!(
            b.verify("ci-nightly", "ward_wrong", Utc::now()),
            Err(AuthError::BadToken(_))
        ));
        let past = Utc::now() - chrono::Duration::seconds(1);
        let b = book(&t.token, Some(past), None);
        assert!(matches!(
            b.verify("ci-nightly", &t.token, Utc::now()),
            Err(AuthError::Expired(..))
        ));
    }

    #[test]
    fn hash_lines_round_trip_and_bad_ones_explain() {
        let t = generate_token();
        assert!(t.token.starts_with("ward_") && t.token.len() == 53);
        assert!(parse_token_hash(&t.hash).is_ok());
        assert!(parse_token_hash("md5:abc").unwrap_err().contains("sha256:"));
        assert!(parse_token_hash("sha256:abcd").unwrap_err().contains("64"));
    }

    #[test]
    fn templates_parse_render_and_sanitize() {
        let t = IdentityTemplate::parse("ci:github:{repository}:{ job.workflow }").unwrap();
        assert_eq!(
            t.claims().collect::<Vec<_>>(),
            ["repository", "job.workflow"]
        );
        let name = t
            .render(|c| {
                Ok::<_, ()>(match c {
                    "repository" => "acme/api".to_string(),
                    _ => "night ly*\n".to_string(),
                })
            })
            .unwrap();
        assert_eq!(name, "ci:github:acme/api:night_ly__");
        assert_eq!(
            t.render(|c| Err::<String, _>(c.to_string())),
            Err("repository".into())
        );
        assert_eq!(
            IdentityTemplate::parse("fixed").unwrap().parts(),
            [TemplatePart::Literal("fixed".into())]
        );
        assert!(IdentityTemplate::parse("").unwrap_err().contains("empty"));
        assert!(
            IdentityTemplate::parse("a:{b")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            IdentityTemplate::parse("a:{b{c}}")
                .unwrap_err()
                .contains("not closed")
        );
        assert!(
            IdentityTemplate::parse("a}")
                .unwrap_err()
                .contains("has no")
        );
        assert!(
            IdentityTemplate::parse("a:{}")
                .unwrap_err()
                .contains("names no claim")
        );
        assert_eq!(
            sanitize_identity_part("a.b_c/d@e:f+g=h-i"),
            "a.b_c/d@e:f+g=h-i"
        );
        assert_eq!(sanitize_identity_part("é x"), "__x");
    }
}
