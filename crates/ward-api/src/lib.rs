//! ward's admin HTTP API: what the CLI talks to today and the web console will tomorrow.
//!
//! Endpoints:
//! - `GET /healthz`: the process is up. `GET /readyz`: and the audit store answers. Neither
//!   needs authentication, so load balancers and orchestrators can probe them.
//! - `GET /metrics`: Prometheus text format (SIEM forwarding: queue depth, lag, failures per
//!   sink); needs role auditor (the admin token, which Prometheus sends as a bearer token).
//! - `GET /api/v1/sessions?identity=&target=&since=&until=&limit=`: sessions, newest first.
//! - `GET /api/v1/sessions/{id}`: one session (full id or unique prefix of at least 8
//!   characters) with all its statements.
//! - Containment (bodies are optional JSON, `{"reason": "..."}`; lock also takes
//!   `"for": "2h"`): `POST /api/v1/sessions/{id}/kill` ends one live session;
//!   `POST /api/v1/identities/{name}/lock` refuses the identity's new sessions and ends its
//!   live ones (the answer says how many); `DELETE …/lock` or `POST …/unlock` lifts it;
//!   `POST …/pause` holds its statements until `POST …/resume`; `GET /api/v1/controls` lists
//!   the locks and pauses in force and `GET /api/v1/controls/events?identity=&limit=` the
//!   recorded actions.
//! - `GET /api/v1/identities?unused_days=30`: every identity ward knows (configured service
//!   tokens, ward tokens in force, identities seen in sessions) with its sources, groups,
//!   last use, expiry and review flags (see [`identities`]).
//! - `GET /api/v1/auth/refusals?code=&user=&since=&limit=`: refused logins (bad, expired or
//!   forged credentials, locked identities), newest first, from the gateway chain.
//! - `ward login` and ward tokens (see [`login`], [`tokens`]), which prove their callers
//!   themselves: `GET /api/v1/auth/config` and `POST /api/v1/auth/login` (an IdP ID token in,
//!   a ward session token out) are public; `POST /api/v1/tokens` mints a token for a bot
//!   (a person in `identity.mint.groups`, never the admin token); `GET /api/v1/tokens` and
//!   `DELETE /api/v1/tokens/{id}` take the admin token or the identity's own credential.
//! - Approvals of held statements: `GET /api/v1/approvals`, `GET /api/v1/approvals/{id}`,
//!   `POST /api/v1/approvals/{id}/approve` and `…/deny`; these authenticate approvers
//!   themselves: the admin token, or an identity as for roles (see [`approvals`]).
//!
//! Everything under `/api/v1` (approvals aside) and `/metrics` needs a role (see [`roles`]):
//! reading needs auditor, anything else admin. `Authorization: Bearer <admin token>` has
//! every role; otherwise the bearer proves an identity (an IdP token, a ward token, or
//! `<identity>:<service token>`) whose groups grant roles through `api.roles`. The admin
//! token is checked by hashing it with SHA-256 and comparing the digest in constant time
//! with the configured hash, so the server never holds the token itself and timing does not
//! reveal how much of a guess was right. Errors are JSON `{"error": "..."}` with a sentence that
//! says what to do. JSON shapes and the timestamp scheme are in [`model`].

pub mod approvals;
mod containment;
pub mod identities;
pub mod login;
pub mod model;
mod refusals;
pub mod roles;
pub mod tokens;
pub mod webhook;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use model::{ErrorBody, SessionDetailView, SessionList, Status};
use roles::require_role;
use serde::Deserialize;
use std::future::Future;
use std::sync::Arc;
use ward_core::SessionRegistry;
use ward_core::control::Controls;
use ward_core::identity::{hash_token, parse_token_hash};
use ward_store::{MAX_LIST_LIMIT, SessionFilter, StoreError, StoreReader};

/// Where the API's handlers find what they serve. Cloned per request, which is cheap: the
/// store reader and the registry are behind `Arc`s and the hash is 32 bytes.
#[derive(Clone, Debug)]
pub struct ApiState {
    /// Read access to the audit store (one short-lived connection per query).
    pub store: StoreReader,
    /// Live sessions; used by containment endpoints (kill, lock) as they are added.
    pub registry: Arc<SessionRegistry>,
    /// SHA-256 of the admin token (see [`admin_token_digest`]).
    pub admin_token_hash: [u8; 32],
    /// Identity locks and pauses: must be the instance the adapters consult (see
    /// [`ApiState::with_controls`]).
    pub controls: Arc<Controls>,
    /// Held statements and the tokens approvers prove themselves with; `None` (the
    /// approval endpoints answer 503) until [`ApiState::with_approvals`].
    pub approvals: Option<approvals::ApprovalAccess>,
    /// Where containment actions are recorded: through the audit writer, so that they join
    /// the session log (kills in their session's chain, locks and pauses in the gateway
    /// chain), with a wait for the commit. `None` (tests): written to the store directly.
    pub audit: Option<(ward_core::AuditSink, std::time::Duration)>,
    /// What `GET /metrics` serves (Prometheus text); `None` serves an empty exposition.
    pub metrics: Option<MetricsSource>,
    /// The gateway's authenticator (the adapters' own instance): proves callers that are
    /// identities (IdP tokens, ward tokens) and holds the ward tokens in force. `None`
    /// (tests): only the admin token is accepted.
    pub auth: Option<Arc<ward_auth::Authenticator>>,
    /// `api.roles`: which groups grant which API role to identities (see [`roles`]).
    pub roles: ward_core::config::ApiRoles,
    /// `identity.login` and `identity.mint` (see [`login`], [`tokens`]); off by default.
    pub login: Arc<login::LoginSettings>,
}

/// Renders metrics in the Prometheus text format for `GET /metrics` (the forwarders'
/// registry in `ward serve`).
#[derive(Clone)]
pub struct MetricsSource(pub Arc<dyn Fn() -> String + Send + Sync>);

impl std::fmt::Debug for MetricsSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MetricsSource")
    }
}

impl ApiState {
    /// The state for [`router`] and [`serve`].
    pub fn new(
        store: StoreReader,
        registry: Arc<SessionRegistry>,
        admin_token_hash: [u8; 32],
    ) -> ApiState {
        ApiState {
            store,
            registry,
            admin_token_hash,
            controls: Arc::new(Controls::new()),
            approvals: None,
            audit: None,
            metrics: None,
            auth: None,
            roles: ward_core::config::ApiRoles::default(),
            login: Arc::default(),
        }
    }

    /// Serves `GET /metrics` (admin token required) from `render`.
    pub fn with_metrics(mut self, render: impl Fn() -> String + Send + Sync + 'static) -> ApiState {
        self.metrics = Some(MetricsSource(Arc::new(render)));
        self
    }

    /// Serves the approval endpoints from `approvals`, the instance the adapters submit to;
    /// approvers that are identities authenticate against `tokens` (`identity.tokens`).
    pub fn with_approvals(
        mut self,
        approvals: Arc<ward_core::approvals::Approvals>,
        tokens: ward_core::TokenBook,
    ) -> ApiState {
        self.approvals = Some(approvals::ApprovalAccess { approvals, tokens });
        self
    }

    /// Records containment actions through `audit` (the gateway's writer), waiting up to
    /// `timeout` for each to be committed.
    pub fn with_audit(
        mut self,
        audit: ward_core::AuditSink,
        timeout: std::time::Duration,
    ) -> ApiState {
        self.audit = Some((audit, timeout));
        self
    }

    /// Uses `auth`, the adapters' authenticator, to prove callers that are identities and
    /// to issue ward tokens.
    pub fn with_auth(mut self, auth: Arc<ward_auth::Authenticator>) -> ApiState {
        self.auth = Some(auth);
        self
    }

    /// Serves `ward login` and `ward token mint` as `login` says.
    pub fn with_login(mut self, login: login::LoginSettings) -> ApiState {
        self.login = Arc::new(login);
        self
    }

    /// Grants API roles to identities by group, as `api.roles` says.
    pub fn with_roles(mut self, roles: ward_core::config::ApiRoles) -> ApiState {
        self.roles = roles;
        self
    }

    /// Uses `controls`, the instance shared with the adapters, for the containment endpoints.
    /// (Without it the API has a private one, which is only right in tests.)
    pub fn with_controls(mut self, controls: Arc<Controls>) -> ApiState {
        self.controls = controls;
        self
    }
}

/// Who made an authenticated request, for the audit of what it did: `admin` for the admin
/// token, otherwise the proven identity's name. Set by the authentication middleware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Actor(pub String);

/// The SHA-256 digest of an admin token, in the form [`ApiState::admin_token_hash`] wants.
///
/// `ward serve` uses it for a token it generated; a configured `api.admin_token_hash`
/// (`sha256:<hex>`) is turned into the same bytes by
/// [`ward_core::identity::parse_token_hash`].
pub fn admin_token_digest(token: &str) -> [u8; 32] {
    // `hash_token` always yields `sha256:` and 64 hex digits, which always parses.
    parse_token_hash(&hash_token(token)).unwrap_or([0; 32])
}

/// The API's routes, ready to serve or to call directly in tests.
pub fn router(state: ApiState) -> Router {
    let v1 = Router::new()
        .route("/sessions", get(list_sessions))
        .route("/sessions/{id}", get(show_session))
        .route("/sessions/{id}/terminal", get(session_terminal))
        .merge(identities::routes())
        .merge(containment::routes())
        .merge(refusals::routes())
        .fallback(not_found)
        // `layer`, not `route_layer`: unknown paths under /api/v1 also need the token, so
        // the API's shape is not visible without it.
        .layer(middleware::from_fn_with_state(state.clone(), require_role))
        // After the admin layer: approvals authenticate approvers themselves.
        .merge(approvals::routes(&state))
        // Also outside the role layer: `ward login` and ward tokens prove their callers
        // themselves (IdP and ward tokens; the admin token where it is allowed).
        .merge(login::routes())
        .merge(tokens::routes());
    // Prometheus scrapes with a bearer token (`authorization: { credentials_file: … }`):
    // forwarding metrics name sinks and show activity, so they are not public.
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_role));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(metrics)
        .nest("/api/v1", v1)
        .fallback(not_found)
        .with_state(state)
}

/// Serves the API on `listener` until `shutdown` completes, then lets requests in flight
/// finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: ApiState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await
}

/// An error response: a status and a sentence for the person or program that asked.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }

    fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (
            self.status,
            Json(ErrorBody {
                error: self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"ward admin API\""),
            );
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Ambiguous { .. } => ApiError::new(StatusCode::CONFLICT, e.to_string()),
            StoreError::PrefixTooShort { .. } => ApiError::bad_request(e.to_string()),
            other => {
                tracing::error!(error = %other, "admin API: audit store query failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string())
            }
        }
    }
}

const TOKEN_HINT: &str = "pass the admin token as `Authorization: Bearer <token>`; ward serve \
     writes it to <data_dir>/admin.token on first start (the CLI reads that file, or takes \
     --admin-token / WARD_ADMIN_TOKEN)";

/// The bearer token of a request, if it has one.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

async fn healthz() -> Json<Status> {
    Json(Status {
        status: "ok".into(),
    })
}

/// Ready when the audit store answers a query; the details of a failure go to the log, not
/// to this unauthenticated endpoint.
async fn readyz(State(state): State<ApiState>) -> Response {
    let probe = SessionFilter {
        limit: 1,
        ..SessionFilter::default()
    };
    match state.store.list_sessions(probe).await {
        Ok(_) => Json(Status {
            status: "ok".into(),
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "readyz: the audit store does not answer");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(Status {
                    status: "audit store unavailable".into(),
                }),
            )
                .into_response()
        }
    }
}

/// `GET /metrics`: the Prometheus text exposition format.
async fn metrics(State(state): State<ApiState>) -> Response {
    let body = state.metrics.map(|m| (m.0)()).unwrap_or_default();
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no such endpoint; see GET /api/v1/sessions and GET /api/v1/sessions/{id}",
    )
}

/// Query parameters of `GET /api/v1/sessions`. Unknown parameters are refused so that a
/// typo (`identiy=`) does not silently list everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    identity: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    command_contains: Option<String>,
    decision: Option<String>,
    limit: Option<String>,
}

/// An empty parameter (`?identity=`) means "not given".
fn given(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.trim().is_empty())
}

async fn list_sessions(
    State(state): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<SessionList>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; accepted parameters: identity, target, since, until, command_contains, decision, limit",
            e.body_text()
        ))
    })?;
    let now = ward_core::time::now_micros();
    let bound = |name: &str, value: Option<String>| -> Result<Option<i64>, ApiError> {
        given(value)
            .map(|v| {
                parse_time_bound(&v, now).map_err(|e| ApiError::bad_request(format!("{name}: {e}")))
            })
            .transpose()
    };
    let since = bound("since", params.since)?;
    let until = bound("until", params.until)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(ApiError::bad_request(
            "since is later than until; swap them or widen the window",
        ));
    }
    let limit = match given(params.limit) {
        None => ward_store::DEFAULT_LIST_LIMIT,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: {text:?} is not a number from 1 to {MAX_LIST_LIMIT}"
                )));
            }
        },
    };
    let decision = given(params.decision)
        .map(|d| {
            ward_store::DecisionFilter::parse(&d)
                .map_err(|e| ApiError::bad_request(format!("decision: {e}")))
        })
        .transpose()?;
    let filter = SessionFilter {
        identity: given(params.identity),
        target: given(params.target),
        since,
        until,
        command_contains: given(params.command_contains),
        decision,
        limit,
    };
    let sessions = state.store.list_sessions(filter).await?;
    Ok(Json(SessionList {
        sessions: sessions.into_iter().map(Into::into).collect(),
    }))
}

async fn show_session(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<SessionDetailView>, ApiError> {
    match state.store.session_detail(&id).await? {
        Some(detail) => Ok(Json(detail.into())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no session with id or id prefix {id:?}; list sessions with GET /api/v1/sessions"
            ),
        )),
    }
}

/// The terminal recording of an SSH session (`audit.terminal`): its `terminal` events,
/// oldest first; empty for sessions without one.
async fn session_terminal(
    State(state): State<ApiState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<ward_core::event::TerminalEvent>>, ApiError> {
    let Some(detail) = state.store.session_detail(&id).await? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!(
                "no session with id or id prefix {id:?}; list sessions with GET /api/v1/sessions"
            ),
        ));
    };
    Ok(Json(state.store.terminal_events(&detail.session.id).await?))
}

/// Parses a time bound for listings: a relative duration such as `30m`, `1h` or `7d`
/// (meaning that long before `now`), an RFC 3339 timestamp, or a date (`2026-01-02`,
/// midnight UTC). Returns Unix microseconds.
pub fn parse_time_bound(text: &str, now_micros: i64) -> Result<i64, String> {
    let text = text.trim();
    if let Ok(ago) = ward_core::time::parse_duration(text) {
        let ago = i64::try_from(ago.as_micros()).unwrap_or(i64::MAX);
        return Ok(now_micros.saturating_sub(ago));
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.timestamp_micros());
    }
    if let Ok(d) = chrono::NaiveDate::parse_from_str(text, "%Y-%m-%d")
        && let Some(midnight) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(midnight.and_utc().timestamp_micros());
    }
    Err(format!(
        "{text:?} is neither a duration nor a time; use a relative duration such as 30m, 1h or \
         7d (meaning that long ago) or an RFC 3339 timestamp such as 2026-01-02T15:04:05Z"
    ))
}

#[cfg(test)]
mod tests;
