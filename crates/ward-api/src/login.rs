//! `ward login` on the server side: what the CLI needs to run the login at the IdP
//! (`GET /api/v1/auth/config`), and the exchange of the IdP's token for a ward session token
//! (`POST /api/v1/auth/login`). Both are public: the caller is proven by the IdP token it
//! presents, not by the admin token.
//!
//! A ward token exists only once its `token_issued` event is durable: the token is issued,
//! the event recorded (waiting for the commit), and only then is the token put in force and
//! its secret answered. If the record fails, the secret is never shown.

use crate::{ApiError, ApiState, bearer_token};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use ward_auth::{TokenRequest, WardTokens};
use ward_core::config::{IdentityConfig, LoginConfig, MintConfig};
use ward_core::event::TokenIssuedEvent;
use ward_core::secret::Secret;
use ward_core::time::format_micros;

/// How long a fetched discovery document is reused.
const DISCOVERY_TTL: Duration = Duration::from_secs(300);

/// What the login and token endpoints need from the config, fixed at start like the
/// identity config itself.
#[derive(Debug, Default)]
pub struct LoginSettings {
    pub(crate) login: Option<LoginConfig>,
    client_secret: Option<Secret>,
    discovery_url: Option<String>,
    pub(crate) mint: MintConfig,
    /// The targets configured at start (minted tokens may name only these).
    pub(crate) targets: Vec<String>,
    discovery: Mutex<Option<(Instant, Discovery)>>,
}

impl LoginSettings {
    /// From the validated config's `identity` and target names; reads
    /// `identity.login.client_secret` now.
    pub fn new(
        identity: &IdentityConfig,
        targets: impl IntoIterator<Item = String>,
    ) -> Result<LoginSettings, String> {
        let client_secret = match identity
            .login
            .as_ref()
            .and_then(|l| l.client_secret.as_ref())
        {
            Some(r) => Some(
                r.resolve()
                    .map_err(|e| format!("identity.login.client_secret: {e}"))?,
            ),
            None => None,
        };
        let discovery_url = identity.login.as_ref().map(|login| {
            let oidc = identity.oidc.iter().find(|o| o.issuer == login.issuer);
            oidc.and_then(|o| o.discovery_url.clone())
                .unwrap_or_else(|| {
                    format!(
                        "{}/.well-known/openid-configuration",
                        login.issuer.trim_end_matches('/')
                    )
                })
        });
        Ok(LoginSettings {
            login: identity.login.clone(),
            client_secret,
            discovery_url,
            mint: identity.mint.clone().unwrap_or_default(),
            targets: targets.into_iter().collect(),
            discovery: Mutex::new(None),
        })
    }
}

/// The endpoints of the IdP that the CLI uses, from its discovery document.
#[derive(Clone, Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
}

/// `GET /api/v1/auth/config`.
#[derive(Debug, Serialize, Deserialize)]
pub struct AuthConfigView {
    pub issuer: String,
    pub client_id: String,
    /// Only when configured (IdPs that insist on one for native clients); not a secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub scopes: Vec<String>,
    pub authorization_endpoint: String,
    pub token_endpoint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_authorization_endpoint: Option<String>,
}

/// The answer to a login or a mint: the secret, shown this once.
#[derive(Debug, Serialize, Deserialize)]
pub struct IssuedView {
    pub token: String,
    pub token_id: String,
    pub identity: String,
    pub groups: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targets: Option<Vec<String>>,
    /// RFC 3339.
    pub expires_at: String,
    /// Something the caller should know, e.g. that the lifetime was shortened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/auth/config", get(auth_config))
        .route("/auth/login", post(login))
}

const NOT_CONFIGURED: &str = "`ward login` is not configured on this gateway: an \
    administrator sets identity.login (issuer, client_id) in ward.yaml; see \
    docs/identity.md#ward-login";

fn login_config(state: &ApiState) -> Result<&LoginConfig, ApiError> {
    state
        .login
        .login
        .as_ref()
        .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, NOT_CONFIGURED))
}

async fn discovery(state: &ApiState) -> Result<Discovery, ApiError> {
    let settings = &state.login;
    if let Some((at, doc)) = &*settings
        .discovery
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        && at.elapsed() < DISCOVERY_TTL
    {
        return Ok(doc.clone());
    }
    let url = settings.discovery_url.clone().unwrap_or_default();
    let fetched = {
        let url = url.clone();
        tokio::task::spawn_blocking(move || -> Result<Discovery, String> {
            let agent = ureq::AgentBuilder::new()
                .timeout(Duration::from_secs(10))
                .build();
            let response = agent.get(&url).call().map_err(|e| e.to_string())?;
            response
                .into_json::<Discovery>()
                .map_err(|e| format!("not a discovery document ({e})"))
        })
        .await
        .map_err(|e| e.to_string())
        .and_then(|r| r)
    };
    let doc = fetched.map_err(|e| {
        tracing::warn!(%url, error = %e, "cannot read the IdP's discovery document for ward login");
        ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "cannot read the identity provider's discovery document at {url}: {e}; try \
                 again later, or tell the administrator"
            ),
        )
    })?;
    let issuer = login_config(state)?.issuer.clone();
    if doc.issuer != issuer {
        return Err(ApiError::new(
            StatusCode::BAD_GATEWAY,
            format!(
                "the discovery document at {url} names issuer {:?}, not {issuer:?}; the \
                 administrator should check identity.login.issuer",
                doc.issuer
            ),
        ));
    }
    *settings
        .discovery
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), doc.clone()));
    Ok(doc)
}

async fn auth_config(State(state): State<ApiState>) -> Result<Json<AuthConfigView>, ApiError> {
    let login = login_config(&state)?.clone();
    let doc = discovery(&state).await?;
    Ok(Json(AuthConfigView {
        issuer: login.issuer,
        client_id: login.client_id,
        client_secret: state
            .login
            .client_secret
            .as_ref()
            .map(|s| s.expose().to_string()),
        scopes: login.scopes,
        authorization_endpoint: doc.authorization_endpoint,
        token_endpoint: doc.token_endpoint,
        device_authorization_endpoint: doc.device_authorization_endpoint,
    }))
}

pub(crate) fn authenticator(state: &ApiState) -> Result<&ward_auth::Authenticator, ApiError> {
    state.auth.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "this API has no authenticator (ward tokens are not available); this is a bug in \
             how ward was started",
        )
    })
}

/// Refuses a locked identity (or one whose minter is locked).
pub(crate) fn check_not_locked(
    state: &ApiState,
    identity: &str,
    minted_by: Option<&str>,
) -> Result<(), ApiError> {
    let locked = std::iter::once(identity)
        .chain(minted_by)
        .find_map(|who| state.controls.check_lock(who).map(|l| (who, l)));
    match locked {
        Some((who, lock)) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "identity {who:?} is locked: {}; an administrator can lift it with `ward unlock {who}`",
                lock.reason
            ),
        )),
        None => Ok(()),
    }
}

async fn login(
    State(state): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<IssuedView>, ApiError> {
    let config = login_config(&state)?.clone();
    let Some(bearer) = bearer_token(&headers) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing IdP token: send the ID token from your identity provider as \
             `Authorization: Bearer <token>` (`ward login` does this for you)",
        ));
    };
    let auth = authenticator(&state)?;
    if !ward_oidc::looks_like_jwt(bearer) {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "POST /api/v1/auth/login takes an ID token (a JWT) from the identity provider, \
             not a ward or admin token; run `ward login`",
        ));
    }
    let now = chrono::Utc::now();
    let verified = auth.verifier().verify(bearer, now).await.map_err(|e| {
        tracing::warn!(code = e.code(), error = %e, "ward login: IdP token refused");
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("token refused: {e}; log in at the identity provider again (`ward login`)"),
        )
    })?;
    if verified.issuer != config.issuer {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            format!(
                "the token is from {:?}, but ward login takes tokens from {:?} \
                 (identity.login.issuer)",
                verified.issuer, config.issuer
            ),
        ));
    }
    let name = verified.identity.name.to_string();
    check_not_locked(&state, &name, None)?;
    let mut attributes = vec![
        ("issuer".to_string(), verified.issuer.clone()),
        ("subject".to_string(), verified.subject.clone()),
    ];
    attributes.extend(
        verified
            .identity
            .attributes
            .iter()
            .filter(|(k, _)| k != "issuer" && k != "subject")
            .cloned(),
    );
    // The ward token lives `ttl` from now whatever the IdP token's own `exp` (often an
    // hour): that is the point of a session token. The IdP's groups are frozen in it for
    // that long; a lock on the identity stops it at once.
    let request = TokenRequest {
        identity: name.clone(),
        groups: verified.identity.groups.clone(),
        attributes,
        targets: None,
        kind: "login",
        issued_by: name,
        ttl: config.ttl,
    };
    let issued = issue(&state, request, now).await?;
    Ok(Json(issued))
}

/// Issues a token: records its event durably, then puts it in force and answers the secret.
pub(crate) async fn issue(
    state: &ApiState,
    request: TokenRequest,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<IssuedView, ApiError> {
    let auth = authenticator(state)?;
    let issued = WardTokens::issue(request, now);
    record_issued(state, &issued.event).await?;
    auth.ward_tokens().insert(issued.event.clone());
    let e = issued.event;
    tracing::info!(token_id = %e.token_id, identity = %e.identity, kind = %e.kind, issued_by = %e.issued_by, "ward token issued");
    Ok(IssuedView {
        token: issued.secret,
        token_id: e.token_id,
        identity: e.identity,
        groups: e.groups,
        targets: e.targets,
        expires_at: rfc3339(e.expires_at),
        note: None,
    })
}

async fn record_issued(state: &ApiState, event: &TokenIssuedEvent) -> Result<(), ApiError> {
    let Some((audit, timeout)) = &state.audit else {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "cannot issue a token: this API has no audit writer to record it in",
        ));
    };
    audit
        .record_durable(
            ward_core::AuditEvent::TokenIssued(event.clone()),
            *timeout,
        )
        .await
        .map_err(|e| {
            tracing::error!(identity = %event.identity, error = %e, "ward token not issued: its event could not be recorded");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "no token was issued: the audit store could not record it ({e}); ward \
                     issues no token the audit does not show; try again shortly"
                ),
            )
        })
}

/// Unix micros as RFC 3339 (seconds), for JSON answers.
pub(crate) fn rfc3339(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_else(|| format_micros(micros))
}
