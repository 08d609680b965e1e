//! Who may call which endpoint: the admin token, or an identity whose groups grant a role.
//!
//! A caller proves itself with `Authorization: Bearer …`:
//! - the admin token: role admin, actor `admin` (break-glass; always works);
//! - otherwise an identity, proven by the gateway's [`ward_auth::Authenticator::identify`]:
//!   an IdP or CI token (JWT), a ward token (`ward_st_…`, from `ward login` or `ward token
//!   mint`), or `<identity>:<service token>`.
//!
//! An identity's roles are those of `api.roles` whose groups it is in; role admin implies
//! approver and auditor. What a request needs follows from its method: reading (`GET`,
//! `HEAD`) needs auditor, everything else (kill, lock, unlock, pause, resume, …) admin. So a
//! new write endpoint is admin-only unless it says otherwise.
//!
//! Answers: 401 when the credential is missing or not proven (the reason is logged, never the
//! secret); 403 when the identity is locked, or lacks the role, with a sentence naming the
//! role, the groups that grant it and the caller's own groups. The [`Actor`] extension is
//! the identity's name, so containment events record who acted.

use crate::{Actor, ApiError, ApiState, TOKEN_HINT, admin_token_digest, bearer_token};
use axum::extract::{Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use ward_core::config::ApiRoles;
use ward_core::identity::secrets_equal;

/// A role on the admin API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read-only: sessions, statements, refusals, controls, identities, metrics.
    Auditor,
    /// May list every approval request (deciding still needs the rule to name them).
    Approver,
    /// Everything, containment included.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Auditor => "auditor",
            Role::Approver => "approver",
            Role::Admin => "admin",
        }
    }
}

/// The roles a caller has.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Roles {
    pub admin: bool,
    pub approver: bool,
    pub auditor: bool,
}

impl Roles {
    /// Every role (the admin token).
    pub fn all() -> Roles {
        Roles {
            admin: true,
            approver: true,
            auditor: true,
        }
    }

    /// The roles `groups` grant under `config`; admin implies approver and auditor.
    pub fn of(groups: &[String], config: &ApiRoles) -> Roles {
        let any = |granting: &[String]| granting.iter().any(|g| groups.contains(g));
        let admin = any(&config.admin);
        Roles {
            admin,
            approver: admin || any(&config.approver),
            auditor: admin || any(&config.auditor),
        }
    }

    pub fn has(self, role: Role) -> bool {
        match role {
            Role::Auditor => self.auditor,
            Role::Approver => self.approver,
            Role::Admin => self.admin,
        }
    }
}

/// The groups that grant `role` (directly, or through admin), in config order.
pub fn granting_groups(role: Role, config: &ApiRoles) -> Vec<String> {
    let mut groups: Vec<String> = match role {
        Role::Admin => Vec::new(),
        Role::Approver => config.approver.clone(),
        Role::Auditor => config.auditor.clone(),
    };
    for g in &config.admin {
        if !groups.contains(g) {
            groups.push(g.clone());
        }
    }
    groups
}

/// Who made a request, once proven (an extension next to [`Actor`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// `admin` for the admin token, otherwise the identity's name.
    pub name: String,
    pub groups: Vec<String>,
    pub roles: Roles,
    /// Proven with the admin token rather than as an identity.
    pub admin_token: bool,
}

/// What a request with `method` needs.
pub fn required_role(method: &Method) -> Role {
    if method == Method::GET || method == Method::HEAD {
        Role::Auditor
    } else {
        Role::Admin
    }
}

const IDENTITY_HINT: &str = "or prove an identity whose groups grant a role (api.roles): an \
     IdP token, a ward token from `ward login`, or `<identity>:<service token>`";

/// A proven identity: who, and its groups. `Err` is the answer to send (401).
async fn identify(state: &ApiState, bearer: &str, path: &str) -> Result<Caller, ApiError> {
    let Some(auth) = &state.auth else {
        // The token itself is never logged.
        tracing::warn!(%path, "admin API: request with a wrong admin token");
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            format!("wrong admin token: {TOKEN_HINT}"),
        ));
    };
    match auth.identify(bearer).await {
        Ok(admission) => {
            let identity = admission.identity;
            let caller = Caller {
                name: identity.name.to_string(),
                roles: Roles::of(&identity.groups, &state.roles),
                groups: identity.groups,
                admin_token: false,
            };
            check_lock(state, &caller.name, &identity.attributes)?;
            Ok(caller)
        }
        Err(reason) => {
            // The reason names what the caller sent (an identity name, a token's claims),
            // never the secret.
            tracing::warn!(%path, %reason, "admin API: credential refused");
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                format!(
                    "wrong admin token, and not a valid identity credential ({reason}): \
                     {TOKEN_HINT}; {IDENTITY_HINT}"
                ),
            ))
        }
    }
}

/// Refuses a locked identity, or a minted ward token whose minter is locked (as logins do).
pub(crate) fn check_lock(
    state: &ApiState,
    name: &str,
    attributes: &[(String, String)],
) -> Result<(), ApiError> {
    let minter = attributes
        .iter()
        .find(|(k, _)| k == "minted_by")
        .map(|(_, v)| v.as_str());
    let locked = state
        .controls
        .check_lock(name)
        .map(|l| (name.to_string(), l))
        .or_else(|| minter.and_then(|m| state.controls.check_lock(m).map(|l| (m.to_string(), l))));
    match locked {
        None => Ok(()),
        Some((who, lock)) => {
            tracing::warn!(identity = %name, locked = %who, "admin API: locked identity refused");
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "identity {who:?} is locked: {}; an administrator can lift it with `ward \
                     unlock {who}`",
                    lock.reason
                ),
            ))
        }
    }
}

/// Proves the caller with `bearer` (the request's bearer token, if any) asking for `path`:
/// the admin token, or an identity (see the module docs).
pub(crate) async fn prove(
    state: &ApiState,
    bearer: Option<&str>,
    path: &str,
) -> Result<Caller, ApiError> {
    let Some(token) = bearer else {
        let message = if state.auth.is_some() {
            format!("missing credentials: {TOKEN_HINT}; {IDENTITY_HINT}")
        } else {
            format!("missing admin token: {TOKEN_HINT}")
        };
        return Err(ApiError::new(StatusCode::UNAUTHORIZED, message));
    };
    // Always hash and compare the admin token first, so any credential costs the same check.
    if secrets_equal(&admin_token_digest(token), &state.admin_token_hash) {
        return Ok(Caller {
            name: "admin".into(),
            groups: Vec::new(),
            roles: Roles::all(),
            admin_token: true,
        });
    }
    identify(state, token, path).await
}

/// The sentence of a 403 for a caller without `role`.
pub(crate) fn missing_role(role: Role, caller: &Caller, config: &ApiRoles) -> String {
    let granting = granting_groups(role, config);
    let needs = if granting.is_empty() {
        format!(
            "this needs role {} (no group grants it: set api.roles.{}), or the admin token",
            role.as_str(),
            role.as_str()
        )
    } else {
        format!(
            "this needs role {} (groups: {})",
            role.as_str(),
            granting.join(", ")
        )
    };
    format!(
        "{needs}; you are {} in [{}]",
        caller.name,
        caller.groups.join(", ")
    )
}

/// The middleware in front of everything under `/api/v1` (but approvals) and `/metrics`.
pub(crate) async fn require_role(
    State(state): State<ApiState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    // Owned, so that no borrow of the request (whose body is not `Sync`) is held across
    // the await.
    let bearer = bearer_token(request.headers()).map(str::to_string);
    let path = request.uri().path().to_string();
    let caller = prove(&state, bearer.as_deref(), &path).await?;
    let role = required_role(request.method());
    if !caller.roles.has(role) {
        tracing::info!(identity = %caller.name, role = role.as_str(), path = %request.uri().path(), "admin API: role missing");
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            missing_role(role, &caller, &state.roles),
        ));
    }
    request.extensions_mut().insert(Actor(caller.name.clone()));
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

#[cfg(test)]
mod tests;
