//! Ward tokens through the API: mint one for a bot (`POST /api/v1/tokens`), list them
//! (`GET /api/v1/tokens`), revoke one (`DELETE /api/v1/tokens/{id}`).
//!
//! Minting is for people: the caller proves itself with its `ward login` token or an IdP
//! token, must be in `identity.mint.groups`, and the token it gets is for
//! `<caller>/<label>`, with at most the caller's groups and at most `identity.mint.max_ttl`,
//! and never outliving the caller's own credential. The admin token cannot mint: it names
//! nobody, and a token minted with it would be an identity made up out of thin air (service
//! tokens in ward.yaml, `ward token create`, are the reviewed way to create those).
//!
//! Listing and revoking take the admin token (every token) or an identity's credential
//! (the tokens it holds or minted).

use crate::login::{IssuedView, authenticator, check_not_locked, issue, rfc3339};
use crate::{ApiError, ApiState, admin_token_digest, bearer_token, given};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use ward_auth::{Admission, TokenRequest};
use ward_core::event::TokenRevokedEvent;
use ward_core::identity::secrets_equal;
use ward_store::{WardTokenFilter, WardTokenRecord};

/// Longest label, in characters.
const MAX_LABEL_CHARS: usize = 64;
/// Shortest lifetime a minted token may have.
const MIN_TTL: Duration = Duration::from_secs(60);

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/tokens", get(list).post(mint))
        .route("/tokens/{id}", delete(revoke))
}

/// Who is calling.
enum Caller {
    Admin,
    Identity(Box<Admission>),
}

impl Caller {
    fn name(&self) -> &str {
        match self {
            Caller::Admin => "admin",
            Caller::Identity(a) => &a.identity.name,
        }
    }
}

const CREDENTIAL_HINT: &str = "send `Authorization: Bearer <token>` with your ward login token \
    (`ward login`, then `ward token …` does it for you), an IdP token, or the admin token";

async fn caller(state: &ApiState, headers: &HeaderMap) -> Result<Caller, ApiError> {
    let Some(bearer) = bearer_token(headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("missing credential: {CREDENTIAL_HINT}"),
        ));
    };
    if secrets_equal(&admin_token_digest(bearer), &state.admin_token_hash) {
        return Ok(Caller::Admin);
    }
    let admission = authenticator(state)?.identify(bearer).await.map_err(|e| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("credential refused: {e}; {CREDENTIAL_HINT}"),
        )
    })?;
    Ok(Caller::Identity(Box::new(admission)))
}

fn attribute<'a>(admission: &'a Admission, name: &str) -> Option<&'a str> {
    admission
        .identity
        .attributes
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct MintRequest {
    ttl: Option<String>,
    label: Option<String>,
    #[serde(default)]
    targets: Option<Vec<String>>,
    #[serde(default)]
    groups: Option<Vec<String>>,
}

fn label(given: Option<String>) -> Result<String, ApiError> {
    let label = given.map(|l| l.trim().to_string()).unwrap_or_default();
    if label.is_empty() {
        return Err(ApiError::bad_request(
            "label is required: it names the bot the token is for (the token's identity is \
             <you>/<label>), e.g. \"nightly\"",
        ));
    }
    if label.chars().count() > MAX_LABEL_CHARS
        || !label
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(ApiError::bad_request(format!(
            "label {label:?}: use letters, digits, '-', '_' and '.', at most {MAX_LABEL_CHARS} \
             characters"
        )));
    }
    Ok(label)
}

async fn mint(
    State(state): State<ApiState>,
    headers: HeaderMap,
    bytes: Bytes,
) -> Result<(StatusCode, Json<IssuedView>), ApiError> {
    let caller = caller(&state, &headers).await?;
    let admission = match caller {
        Caller::Admin => {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "the admin token cannot mint tokens: a minted token belongs to the person who \
                 minted it, and the admin token names nobody; log in with `ward login` and \
                 mint as yourself, or create a reviewed service token with `ward token create`",
            ));
        }
        Caller::Identity(a) => a,
    };
    let who = admission.identity.name.to_string();
    let kind = attribute(&admission, "token_kind");
    let person = match admission.identity.source {
        "oidc" => true,
        "ward_token" => kind == Some("login"),
        _ => false,
    };
    if !person {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{who} may not mint tokens: minting is for people logged in at the identity \
                 provider (a `ward login` token or an IdP token){}",
                if kind == Some("mint") {
                    "; a minted token cannot mint further tokens"
                } else {
                    ""
                }
            ),
        ));
    }
    let allowed = &state.login.mint.groups;
    if allowed.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "minting is off on this gateway: identity.mint.groups names no group whose \
             members may mint; ask an administrator",
        ));
    }
    if !admission
        .identity
        .groups
        .iter()
        .any(|g| allowed.contains(g))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "{who} may not mint tokens: only members of {} (identity.mint.groups) may, and \
                 {who} is in {}",
                allowed.join(", "),
                if admission.identity.groups.is_empty() {
                    "no group".to_string()
                } else {
                    admission.identity.groups.join(", ")
                }
            ),
        ));
    }
    check_not_locked(&state, &who, attribute(&admission, "minted_by"))?;

    let request: MintRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        MintRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid JSON body: {e}; send e.g. {{\"ttl\": \"15m\", \"label\": \"nightly\", \
                 \"targets\": [\"orders-db\"], \"groups\": [\"dba\"]}}"
            ))
        })?
    };
    let max = state.login.mint.max_ttl;
    let max_text = humantime::format_duration(max);
    let Some(ttl_text) = given(request.ttl) else {
        return Err(ApiError::bad_request(format!(
            "ttl is required, e.g. \"15m\" (at most {max_text}, identity.mint.max_ttl)"
        )));
    };
    let ttl = ward_core::time::parse_duration(&ttl_text)
        .map_err(|e| ApiError::bad_request(format!("ttl: {e}")))?;
    if ttl > max {
        return Err(ApiError::bad_request(format!(
            "ttl {} is longer than this gateway allows: at most {max_text} \
             (identity.mint.max_ttl); ask for a shorter one",
            humantime::format_duration(ttl)
        )));
    }
    if ttl < MIN_TTL {
        return Err(ApiError::bad_request("ttl: at least 1m"));
    }
    let label = label(request.label)?;
    let targets = match request.targets {
        None => None,
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            for t in list {
                let t = t.trim().to_string();
                if !state.login.targets.contains(&t) {
                    return Err(ApiError::bad_request(format!(
                        "unknown target {t:?}; known targets: {}",
                        if state.login.targets.is_empty() {
                            "(none)".to_string()
                        } else {
                            state.login.targets.join(", ")
                        }
                    )));
                }
                if !out.contains(&t) {
                    out.push(t);
                }
            }
            if out.is_empty() {
                return Err(ApiError::bad_request(
                    "targets: name at least one target, or leave targets out for every target",
                ));
            }
            Some(out)
        }
    };
    let groups = request.groups.unwrap_or_default();
    if let Some(g) = groups
        .iter()
        .find(|g| !admission.identity.groups.contains(g))
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "group {g:?}: a minted token may only carry groups you are in ({})",
                admission.identity.groups.join(", ")
            ),
        ));
    }
    // Never outlive the credential that minted it.
    let now = chrono::Utc::now();
    let mut effective = ttl;
    let mut note = None;
    if let Some(limit) = admission.credential.expires_at {
        let left = Duration::from_micros(
            u64::try_from(limit.saturating_sub(now.timestamp_micros())).unwrap_or(0),
        );
        if left < ttl {
            effective = Duration::from_secs(left.as_secs());
            note = Some(format!(
                "shortened to {} so that it does not outlive your own credential (expires {}); \
                 run `ward login` again for a longer one",
                humantime::format_duration(effective),
                rfc3339(limit)
            ));
        }
    }
    if effective < MIN_TTL {
        return Err(ApiError::bad_request(
            "your own credential expires in less than a minute; run `ward login` again first",
        ));
    }
    let identity = format!("{who}/{label}");
    let request = TokenRequest {
        identity,
        groups,
        attributes: vec![("minted_by".into(), who.clone()), ("label".into(), label)],
        targets,
        kind: "mint",
        issued_by: who,
        ttl: effective,
    };
    let mut issued = issue(&state, request, now).await?;
    issued.note = note;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// One token in a listing (never its secret or hash).
#[derive(Debug, Serialize, Deserialize)]
pub struct TokenView {
    pub token_id: String,
    pub identity: String,
    pub kind: String,
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    pub issued_by: String,
    pub issued_at: String,
    pub expires_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_reason: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TokenList {
    pub tokens: Vec<TokenView>,
}

impl From<WardTokenRecord> for TokenView {
    fn from(r: WardTokenRecord) -> Self {
        let t = r.issued;
        TokenView {
            label: t
                .attributes
                .iter()
                .find(|(k, _)| k == "label")
                .map(|(_, v)| v.clone()),
            token_id: t.token_id,
            identity: t.identity,
            kind: t.kind,
            groups: t.groups,
            targets: t.targets,
            issued_by: t.issued_by,
            issued_at: rfc3339(t.issued_at),
            expires_at: rfc3339(t.expires_at),
            revoked_at: r.revoked_at.map(rfc3339),
            revoked_by: r.revoked_by,
            revoke_reason: r.revoke_reason,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    identity: Option<String>,
    /// `true`: also expired and revoked tokens.
    all: Option<String>,
}

async fn list(
    State(state): State<ApiState>,
    headers: HeaderMap,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<TokenList>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; accepted parameters: identity, all",
            e.body_text()
        ))
    })?;
    let include_inactive = match given(params.all).as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "all: {other:?} is not true or false"
            )));
        }
    };
    let identity = given(params.identity);
    let records = match &caller {
        Caller::Admin => {
            state
                .store
                .ward_tokens(WardTokenFilter {
                    identity,
                    include_inactive,
                    ..WardTokenFilter::default()
                })
                .await?
        }
        Caller::Identity(_) => {
            let me = caller.name();
            state
                .store
                .ward_tokens(WardTokenFilter {
                    include_inactive,
                    ..WardTokenFilter::default()
                })
                .await?
                .into_iter()
                .filter(|r| r.issued.identity == me || r.issued.issued_by == me)
                .filter(|r| identity.as_ref().is_none_or(|i| r.issued.identity == *i))
                .collect()
        }
    };
    Ok(Json(TokenList {
        tokens: records.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    reason: Option<String>,
}

/// `DELETE /api/v1/tokens/{id}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct RevokeResult {
    pub token_id: String,
    pub identity: String,
    pub reason: String,
}

async fn revoke(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<RevokeResult>, ApiError> {
    let caller = caller(&state, &headers).await?;
    let auth = authenticator(&state)?;
    let request: RevokeRequest = if bytes.iter().all(u8::is_ascii_whitespace) {
        RevokeRequest::default()
    } else {
        serde_json::from_slice(&bytes).map_err(|e| {
            ApiError::bad_request(format!(
                "invalid JSON body: {e}; send e.g. {{\"reason\": \"bot retired\"}} or no body"
            ))
        })?
    };
    let reason = match given(request.reason) {
        None => crate::containment::NO_REASON.to_string(),
        Some(r) if r.chars().count() > 500 || r.chars().any(char::is_control) => {
            return Err(ApiError::bad_request(
                "reason: one line of at most 500 characters, please",
            ));
        }
        Some(r) => r.trim().to_string(),
    };
    let id = id.trim().to_string();
    let stored = state.store.ward_token(&id).await?;
    let Some(issued) = auth
        .ward_tokens()
        .get(&id)
        .or_else(|| stored.as_ref().map(|r| r.issued.clone()))
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no ward token with id {id:?}; list them with `ward token list`"),
        ));
    };
    let me = caller.name().to_string();
    if !matches!(caller, Caller::Admin) && issued.issued_by != me && issued.identity != me {
        // Do not confirm that someone else's token exists.
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no ward token with id {id:?} of yours; list them with `ward token list`"),
        ));
    }
    if let Some(at) = stored.as_ref().and_then(|r| r.revoked_at) {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!("ward token {id} was already revoked at {}", rfc3339(at)),
        ));
    }
    let event = TokenRevokedEvent {
        token_id: id.clone(),
        identity: issued.identity.clone(),
        reason: reason.clone(),
        by: me,
        at: ward_core::time::now_micros(),
    };
    let Some((audit, timeout)) = &state.audit else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot revoke: this API has no audit writer to record it in",
        ));
    };
    audit
        .record_durable(ward_core::AuditEvent::TokenRevoked(event), *timeout)
        .await
        .map_err(|e| {
            tracing::error!(token_id = %id, error = %e, "ward token not revoked: its event could not be recorded");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "the token was NOT revoked: the audit store could not record it ({e}); try \
                     again, or lock the identity with `ward lock {}`",
                    issued.identity
                ),
            )
        })?;
    auth.ward_tokens().revoke(&id);
    tracing::info!(token_id = %id, identity = %issued.identity, by = caller.name(), "ward token revoked");
    Ok(Json(RevokeResult {
        token_id: id,
        identity: issued.identity,
        reason,
    }))
}

#[cfg(test)]
mod tests;
