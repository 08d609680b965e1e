//! Approval endpoints: list held statements, and approve or deny them.
//!
//! - `GET /api/v1/approvals`: pending requests (oldest first), then recently decided ones.
//! - `GET /api/v1/approvals/{id}`: one request and its recorded steps (`history`, from the
//!   audit store; it lags the live state by the audit writer's batching, a few
//!   milliseconds). Requests older than what ward keeps in memory return only `history`.
//! - `POST /api/v1/approvals/{id}/approve`, body `{"reason": "..."}` (optional).
//! - `POST /api/v1/approvals/{id}/deny`, body `{"reason": "..."}` (required).
//!
//! Authentication differs from the rest of the API, because who approves matters: a rule
//! that names approvers (`approvers: [group:sre, alice]`) can only be satisfied by those
//! identities, each proving itself as itself: with its own service token as
//! `Authorization: Bearer <identity>:<service token>` (checked against `identity.tokens`, in
//! constant time, whatever targets the token is limited to), or, where the gateway's
//! authenticator is wired in, with an IdP token or a ward token (`ward login`). The admin
//! token (`Bearer <admin token>`) acts as approver `admin`, which may approve only requests
//! whose rule names no approvers. An identity sees the requests it may decide and its own;
//! an identity with API role approver (or admin, through `api.roles`) and the admin token
//! see all. Roles never widen who may decide: that is the rule's `approvers` alone.
//!
//! Status codes: 401 no or wrong credential; 403 a locked identity, self-approval or not an
//! allowed approver; 404 unknown id; 409 already decided (or already approved by the same
//! approver); 400 a malformed body or a denial without a reason; 503 approvals not wired in
//! this process.

use crate::{ApiError, ApiState, admin_token_digest, bearer_token};
use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use ward_core::approvals::{
    ApprovalError, ApprovalInfo, ApprovalState, Approvals, Approver, OnTimeout,
};
use ward_core::identity::{TokenBook, secrets_equal};
use ward_core::time::format_micros;
use ward_store::{ApprovalEventFilter, ApprovalEventRecord};

/// What the approval endpoints need: the instance the adapters submit to, and the tokens
/// approvers authenticate with.
#[derive(Clone)]
pub struct ApprovalAccess {
    pub approvals: Arc<Approvals>,
    pub tokens: TokenBook,
}

impl std::fmt::Debug for ApprovalAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApprovalAccess")
            .field("approvals", &self.approvals)
            .field("tokens", &self.tokens.entries().len())
            .finish()
    }
}

/// One approval request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalView {
    pub id: String,
    /// `pending`, `approved`, `denied`, `timed_out` or `withdrawn`.
    pub state: String,
    pub session_id: String,
    pub identity: String,
    pub target: String,
    pub protocol: String,
    pub command: String,
    pub rule: String,
    /// Who may approve (identity names, `group:NAME`); empty means the admin.
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    pub approved_by: Vec<String>,
    /// Approvals still needed while pending.
    pub remaining_approvals: u32,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// `deny` or `allow`: what happens at `expires_at` without a decision.
    pub on_timeout: String,
    pub requested_at: String,
    pub requested_at_us: i64,
    pub expires_at: String,
    pub expires_at_us: i64,
    pub decided_at: Option<String>,
    pub decided_at_us: Option<i64>,
    /// The CLI command that approves it.
    pub approve_command: String,
}

impl From<ApprovalInfo> for ApprovalView {
    fn from(i: ApprovalInfo) -> Self {
        let have = u32::try_from(i.approved_by.len()).unwrap_or(u32::MAX);
        let remaining_approvals = if i.state == ApprovalState::Pending {
            i.approvals_required.saturating_sub(have)
        } else {
            0
        };
        ApprovalView {
            approve_command: format!("ward approve {}", i.id),
            state: i.state.as_str().to_string(),
            requested_at: format_micros(i.requested_at),
            requested_at_us: i.requested_at,
            expires_at: format_micros(i.expires_at),
            expires_at_us: i.expires_at,
            decided_at: i.decided_at.map(format_micros),
            decided_at_us: i.decided_at,
            on_timeout: match i.on_timeout {
                OnTimeout::Deny => "deny".into(),
                OnTimeout::Allow => "allow".into(),
            },
            remaining_approvals,
            id: i.id,
            session_id: i.session_id,
            identity: i.identity,
            target: i.target,
            protocol: i.protocol,
            command: i.command,
            rule: i.rule,
            approvers: i.approvers,
            approvals_required: i.approvals_required,
            approved_by: i.approved_by,
            decided_by: i.decided_by,
            reason: i.reason,
        }
    }
}

/// `GET /api/v1/approvals`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalList {
    /// Pending first (oldest first), then recently decided (newest first).
    pub approvals: Vec<ApprovalView>,
}

/// One recorded step of a request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalStepView {
    /// `requested`, `partially_approved`, `approved`, `denied`, `timed_out`, `withdrawn`.
    pub state: String,
    pub by: Option<String>,
    pub reason: Option<String>,
    pub at: String,
    pub at_us: i64,
}

impl From<ApprovalEventRecord> for ApprovalStepView {
    fn from(e: ApprovalEventRecord) -> Self {
        ApprovalStepView {
            at: format_micros(e.at),
            at_us: e.at,
            state: e.state,
            by: e.by,
            reason: e.reason,
        }
    }
}

/// `GET /api/v1/approvals/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalDetail {
    /// The request as ward holds it; `None` when it is older than what this process keeps
    /// (decided long ago, or before a restart) and only its `history` remains.
    pub approval: Option<ApprovalView>,
    /// Its recorded steps, oldest first.
    pub history: Vec<ApprovalStepView>,
}

/// `POST /api/v1/approvals/{id}/approve` and `…/deny`: the request after the action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalResult {
    pub approval: ApprovalView,
    /// Who acted (an identity, or `admin`).
    pub by: String,
}

/// Body of approve (optional) and deny (`reason` required).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DecisionBody {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The approval routes, with their own authentication (see the module docs).
pub(crate) fn routes(state: &ApiState) -> Router<ApiState> {
    Router::new()
        .route("/approvals", get(list))
        .route("/approvals/{id}", get(show))
        .route("/approvals/{id}/approve", post(approve))
        .route("/approvals/{id}/deny", post(deny))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_approver,
        ))
}

const APPROVER_HINT: &str = "authenticate as `Authorization: Bearer <identity>:<ward token>` \
     (or with your IdP token or a ward token from `ward login`) to act as an identity named \
     in the rule's approvers (CLI: --as NAME with --token or WARD_TOKEN), or with the admin \
     token for rules that name no approvers";

fn access(state: &ApiState) -> Result<&ApprovalAccess, ApiError> {
    state.approvals.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "approvals are not available in this process",
        )
    })
}

/// Whether the caller may see every request (the admin token, role approver), not only
/// those it may decide and its own.
#[derive(Clone, Copy, Debug)]
struct SeesAll(bool);

/// Authenticates the admin token or an identity and stores the [`Approver`].
async fn require_approver(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let access = access(&state)?;
    let Some(token) = bearer_token(request.headers()) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("missing credentials: {APPROVER_HINT}"),
        ));
    };
    // Always hash and compare the admin token first, so an identity credential costs the
    // same admin check as any other.
    let is_admin = secrets_equal(&admin_token_digest(token), &state.admin_token_hash);
    let (approver, sees_all) = if is_admin {
        (Approver::admin(), true)
    } else if let Some(auth) = &state.auth {
        // IdP tokens, ward tokens and `<identity>:<service token>`.
        match auth.identify(token).await {
            Ok(admission) => {
                let identity = admission.identity;
                crate::roles::check_lock(&state, &identity.name, &identity.attributes)?;
                let roles = crate::roles::Roles::of(&identity.groups, &state.roles);
                (
                    Approver::identity(identity.name.as_ref(), identity.groups),
                    roles.approver,
                )
            }
            Err(reason) => {
                tracing::warn!(%reason, path = %request.uri().path(), "approvals API: identity credential refused");
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!("the credential was refused ({reason}): {APPROVER_HINT}"),
                ));
            }
        }
    } else if let Some((name, secret)) = token.rsplit_once(':') {
        // Ward tokens contain no `:`, so the last one separates the identity.
        match access.tokens.verify(name, secret, chrono::Utc::now()) {
            Ok(identity) => {
                crate::roles::check_lock(&state, &identity.name, &identity.attributes)?;
                let roles = crate::roles::Roles::of(&identity.groups, &state.roles);
                (
                    Approver::identity(identity.name.as_ref(), identity.groups),
                    roles.approver,
                )
            }
            Err(e) => {
                // The reason (unknown identity, wrong or expired token) goes to the log
                // only, as for client logins.
                tracing::warn!(reason = %e, path = %request.uri().path(), "approvals API: identity credential refused");
                return Err(ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    format!(
                        "the identity credential was refused (unknown identity, wrong or \
                         expired token): {APPROVER_HINT}"
                    ),
                ));
            }
        }
    } else {
        tracing::warn!(path = %request.uri().path(), "approvals API: request with a wrong admin token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("wrong admin token: {APPROVER_HINT}"),
        ));
    };
    request.extensions_mut().insert(approver);
    request.extensions_mut().insert(SeesAll(sees_all));
    Ok(next.run(request).await)
}

/// Whether `approver` may see `info`: the admin sees everything; an identity sees what it
/// may decide and its own requests (held SQL can be sensitive).
fn visible(approver: &Approver, sees_all: SeesAll, info: &ApprovalInfo) -> bool {
    sees_all.0
        || approver.admin
        || approver.name == info.identity
        || approver.is_listed(&info.approvers)
}

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        let status = match e {
            ApprovalError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApprovalError::SelfApproval { .. } | ApprovalError::NotAllowed { .. } => {
                StatusCode::FORBIDDEN
            }
            ApprovalError::AlreadyDecided { .. } | ApprovalError::AlreadyApproved { .. } => {
                StatusCode::CONFLICT
            }
            ApprovalError::ReasonRequired => StatusCode::BAD_REQUEST,
        };
        ApiError::new(status, e.to_string())
    }
}

fn not_found(id: &str) -> ApiError {
    ApiError::from(ApprovalError::NotFound { id: id.to_string() })
}

async fn list(
    State(state): State<ApiState>,
    Extension(approver): Extension<Approver>,
    Extension(sees_all): Extension<SeesAll>,
) -> Result<Json<ApprovalList>, ApiError> {
    let access = access(&state)?;
    let approvals = access
        .approvals
        .list()
        .into_iter()
        .filter(|i| visible(&approver, sees_all, i))
        .map(Into::into)
        .collect();
    Ok(Json(ApprovalList { approvals }))
}

async fn show(
    State(state): State<ApiState>,
    Extension(approver): Extension<Approver>,
    Extension(sees_all): Extension<SeesAll>,
    Path(id): Path<String>,
) -> Result<Json<ApprovalDetail>, ApiError> {
    let access = access(&state)?;
    let id = id.trim().to_ascii_lowercase();
    let live = access.approvals.get(&id);
    if let Some(info) = &live
        && !visible(&approver, sees_all, info)
    {
        // Same answer as an unknown id: an identity does not learn about others' requests.
        return Err(not_found(&id));
    }
    let history: Vec<ApprovalEventRecord> = state
        .store
        .approval_events(ApprovalEventFilter {
            request_id: Some(id.clone()),
            ..ApprovalEventFilter::default()
        })
        .await?;
    if live.is_none() {
        // Only the audit remains: the admin, approvers by role and the requester may read it.
        let mine = history.first().is_some_and(|e| e.identity == approver.name);
        if history.is_empty() || !(approver.admin || sees_all.0 || mine) {
            return Err(not_found(&id));
        }
    }
    Ok(Json(ApprovalDetail {
        approval: live.map(Into::into),
        history: history.into_iter().map(Into::into).collect(),
    }))
}

/// Parses an optional JSON body: empty means every field absent.
fn decision_body(body: &Bytes) -> Result<DecisionBody, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body ({e}); send {{\"reason\": \"...\"}} or nothing"
        ))
    })
}

/// The request after an action, for the response.
fn result(
    access: &ApprovalAccess,
    id: &str,
    approver: &Approver,
) -> Result<Json<ApprovalResult>, ApiError> {
    let info = access.approvals.get(id).ok_or_else(|| not_found(id))?;
    Ok(Json(ApprovalResult {
        approval: info.into(),
        by: approver.name.clone(),
    }))
}

async fn approve(
    State(state): State<ApiState>,
    Extension(approver): Extension<Approver>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalResult>, ApiError> {
    let access = access(&state)?;
    let body = decision_body(&body)?;
    access
        .approvals
        .approve(&id, &approver, body.reason.as_deref())?;
    result(access, &id.trim().to_ascii_lowercase(), &approver)
}

async fn deny(
    State(state): State<ApiState>,
    Extension(approver): Extension<Approver>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<ApprovalResult>, ApiError> {
    let access = access(&state)?;
    let body = decision_body(&body)?;
    let reason = body.reason.unwrap_or_default();
    access.approvals.deny(&id, &approver, &reason)?;
    result(access, &id.trim().to_ascii_lowercase(), &approver)
}

#[cfg(test)]
mod tests;
