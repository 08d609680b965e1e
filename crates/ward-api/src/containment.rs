//! The incident responder's endpoints: kill a session, lock/unlock and pause/resume an
//! identity, and list what is in force.
//!
//! Each action takes effect in memory first (through [`ward_core::control::Controls`] and
//! the session registry), because containment is urgent and must not wait on the disk or
//! fail because of it; then it is recorded in the store, and the answer comes only once the
//! record is committed, so a lock the API reported survives a crash a moment later. If the
//! record fails, the action still stands and the error says so.

use crate::model::{
    ControlEventList, ControlsView, KillResult, LockRequest, LockResult, LockView, PauseResult,
    PauseView, ReasonRequest, ResumeResult, UnlockResult,
};
use crate::{Actor, ApiError, ApiState, given};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Extension, Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::sync::Arc;
use ward_core::LiveSession;
use ward_core::control::{LockInfo, PauseInfo};
use ward_core::event::{ControlAction, ControlEvent};
use ward_core::time::{format_micros, now_micros};
use ward_store::{ControlEventFilter, MAX_LIST_LIMIT, MIN_PREFIX_LEN, StoreError};

/// The reason recorded, and shown to clients, when the administrator gave none.
pub const NO_REASON: &str = "no reason given";
/// Longest accepted reason, in characters: it ends up in client error messages and the audit.
const MAX_REASON_CHARS: usize = 500;
/// Longest accepted identity name, in characters.
const MAX_NAME_CHARS: usize = 200;

/// The containment routes, to be nested under `/api/v1` (behind the admin token).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/sessions/{id}/kill", post(kill_session))
        .route(
            "/identities/{name}/lock",
            post(lock_identity).delete(unlock_identity),
        )
        .route("/identities/{name}/unlock", post(unlock_identity))
        .route("/identities/{name}/pause", post(pause_identity))
        .route("/identities/{name}/resume", post(resume_identity))
        .route("/controls", get(list_controls))
        .route("/controls/events", get(list_control_events))
}

/// Parses an optional JSON body: empty means every field absent, so `curl -X POST` works.
fn body<T: DeserializeOwned + Default>(bytes: &Bytes) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid JSON body: {e}; send e.g. {{\"reason\": \"incident 42\"}} (lock also takes \
             \"for\": \"2h\") or no body at all"
        ))
    })
}

/// The reason to record: trimmed, [`NO_REASON`] when absent or blank. Control characters are
/// refused because the reason is sent to clients and printed on operators' terminals.
fn reason(given: Option<String>) -> Result<String, ApiError> {
    let Some(text) = given
        .map(|r| r.trim().to_string())
        .filter(|r| !r.is_empty())
    else {
        return Ok(NO_REASON.to_string());
    };
    if text.chars().count() > MAX_REASON_CHARS {
        return Err(ApiError::bad_request(format!(
            "reason: at most {MAX_REASON_CHARS} characters, please; link to the incident instead"
        )));
    }
    if text.chars().any(char::is_control) {
        return Err(ApiError::bad_request(
            "reason: must be one line without control characters",
        ));
    }
    Ok(text)
}

/// Checks an identity name from the path (identities are free-form names from the config).
fn identity_name(name: &str) -> Result<String, ApiError> {
    if name.trim().is_empty() {
        return Err(ApiError::bad_request("the identity name is empty"));
    }
    if name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control) {
        return Err(ApiError::bad_request(format!(
            "{name:?} is not an identity name (at most {MAX_NAME_CHARS} characters, no control \
             characters)"
        )));
    }
    Ok(name.to_string())
}

/// Records a control action; if that fails, the action (already in force) is reported with
/// the failure, as a 500, so the operator knows it will not survive a restart.
async fn record(state: &ApiState, event: ControlEvent, done: String) -> Result<(), ApiError> {
    let action = event.action.as_str();
    let identity = event.identity.clone();
    let recorded = match &state.audit {
        Some((audit, timeout)) => audit
            .record_durable(ward_core::AuditEvent::Control(event), *timeout)
            .await
            .map_err(|e| e.to_string()),
        None => state
            .store
            .record_control(event)
            .await
            .map_err(|e| e.to_string()),
    };
    match recorded {
        Ok(()) => Ok(()),
        Err(e) => {
            tracing::error!(action, %identity, error = %e, "containment action taken but not recorded in the audit store");
            Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "{done}, but the action could not be recorded in the audit store ({e}); it \
                     is in force now but will not survive a restart of ward, and the audit does \
                     not show it"
                ),
            ))
        }
    }
}

/// Live sessions of `identity` right now.
fn live_sessions_of(state: &ApiState, identity: &str) -> u64 {
    state
        .registry
        .list()
        .iter()
        .filter(|s| *s.identity == *identity)
        .count() as u64
}

/// The live session with id `id`, or the only one whose id starts with it (at least
/// [`MIN_PREFIX_LEN`] characters, as for `GET /sessions/{id}`).
fn find_live(state: &ApiState, id: &str) -> Result<Option<Arc<LiveSession>>, ApiError> {
    if let Some(session) = state.registry.get(id) {
        return Ok(Some(session));
    }
    if id.chars().count() < MIN_PREFIX_LEN {
        return Err(StoreError::PrefixTooShort { prefix: id.into() }.into());
    }
    let mut matches: Vec<Arc<LiveSession>> = state
        .registry
        .list()
        .into_iter()
        .filter(|s| s.id.as_str().starts_with(id))
        .collect();
    match matches.len() {
        0 => Ok(None),
        1 => Ok(matches.pop()),
        _ => {
            let mut examples: Vec<String> =
                matches.iter().map(|s| s.id.as_str().to_string()).collect();
            examples.sort();
            examples.truncate(3);
            Err(StoreError::Ambiguous {
                prefix: id.into(),
                examples,
            }
            .into())
        }
    }
}

async fn kill_session(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<KillResult>, ApiError> {
    let request: ReasonRequest = body(&bytes)?;
    let reason = reason(request.reason)?;
    let id = id.trim();
    let Some(live) = find_live(&state, id)? else {
        // Not live: say whether it already ended or never existed.
        return Err(match state.store.session_detail(id).await {
            Ok(Some(detail)) => ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "session {} already ended{}; there is nothing to kill",
                    detail.session.id,
                    match (detail.session.ended_at, &detail.session.end_reason) {
                        (Some(at), Some(why)) => format!(" at {} ({why})", format_micros(at)),
                        _ => String::new(),
                    }
                ),
            ),
            Ok(None) => ApiError::new(
                StatusCode::NOT_FOUND,
                format!(
                    "no live session with id or id prefix {id:?}; list live sessions with GET \
                     /api/v1/sessions"
                ),
            ),
            Err(e) => e.into(),
        });
    };
    if live.stop.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            format!(
                "session {} is already ending ({})",
                live.id,
                live.end_reason().unwrap_or_default()
            ),
        ));
    }
    live.end(reason.clone());
    let at = now_micros();
    tracing::warn!(session = %live.id, identity = %live.identity, %reason, by = %actor.0, "session killed");
    let event = ControlEvent {
        action: ControlAction::Kill,
        identity: live.identity.to_string(),
        session_id: Some(live.id.clone()),
        reason: reason.clone(),
        by: actor.0.clone(),
        until: None,
        at,
        sessions_ended: 1,
    };
    record(&state, event, format!("ended session {}", live.id)).await?;
    Ok(Json(KillResult {
        session_id: live.id.to_string(),
        identity: live.identity.to_string(),
        target: live.target.to_string(),
        reason,
        by: actor.0,
        at: format_micros(at),
        at_us: at,
    }))
}

async fn lock_identity(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<LockResult>, ApiError> {
    let request: LockRequest = body(&bytes)?;
    let identity = identity_name(&name)?;
    let reason = reason(request.reason)?;
    let at = now_micros();
    let until = match given(request.duration) {
        None => None,
        Some(text) => {
            let duration = ward_core::time::parse_duration(&text)
                .map_err(|e| ApiError::bad_request(format!("for: {e}")))?;
            if duration.is_zero() {
                return Err(ApiError::bad_request(
                    "for: must be longer than zero; to lift a lock, unlock the identity",
                ));
            }
            let until = i64::try_from(duration.as_micros())
                .ok()
                .and_then(|d| at.checked_add(d))
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "for: {text:?} is too long; leave it out to lock until unlocked"
                    ))
                })?;
            Some(until)
        }
    };
    let lock = LockInfo {
        identity: identity.clone(),
        reason: reason.clone(),
        until,
        by: actor.0.clone(),
        at,
    };
    let locked = state.controls.lock(lock.clone(), &state.registry);
    let ended = locked.ended.len() as u64;
    tracing::warn!(%identity, %reason, by = %actor.0, until = ?until.map(format_micros), sessions_ended = ended, "identity locked");
    let event = ControlEvent {
        action: ControlAction::Lock,
        identity: identity.clone(),
        session_id: None,
        reason,
        by: actor.0,
        until,
        at,
        sessions_ended: ended,
    };
    record(
        &state,
        event,
        format!("locked {identity} and ended {ended} live sessions"),
    )
    .await?;
    Ok(Json(LockResult {
        lock: lock.into(),
        sessions_ended: ended,
        ended_sessions: locked.ended.iter().map(|s| s.to_string()).collect(),
        replaced: locked.previous.map(LockView::from),
    }))
}

async fn unlock_identity(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<UnlockResult>, ApiError> {
    let request: ReasonRequest = body(&bytes)?;
    let identity = identity_name(&name)?;
    let reason = reason(request.reason)?;
    let Some(lock) = state.controls.unlock(&identity) else {
        return Ok(Json(UnlockResult {
            identity,
            was_locked: false,
            lock: None,
        }));
    };
    let at = now_micros();
    let was_locked = lock.in_force_at(at);
    tracing::warn!(%identity, by = %actor.0, "identity unlocked");
    let event = ControlEvent {
        action: ControlAction::Unlock,
        identity: identity.clone(),
        session_id: None,
        reason,
        by: actor.0,
        until: None,
        at,
        sessions_ended: 0,
    };
    record(&state, event, format!("unlocked {identity}")).await?;
    Ok(Json(UnlockResult {
        identity,
        was_locked,
        lock: Some(lock.into()),
    }))
}

async fn pause_identity(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<PauseResult>, ApiError> {
    let request: ReasonRequest = body(&bytes)?;
    let identity = identity_name(&name)?;
    let reason = reason(request.reason)?;
    let at = now_micros();
    let pause = PauseInfo {
        identity: identity.clone(),
        reason: reason.clone(),
        by: actor.0.clone(),
        at,
    };
    let live = live_sessions_of(&state, &identity);
    if let Some(existing) = state.controls.pause(pause.clone()) {
        let held = state.controls.held(&identity) as u64;
        return Ok(Json(PauseResult {
            pause: PauseView::new(existing, held, live),
            already_paused: true,
        }));
    }
    tracing::warn!(%identity, %reason, by = %actor.0, live_sessions = live, "identity paused");
    let event = ControlEvent {
        action: ControlAction::Pause,
        identity: identity.clone(),
        session_id: None,
        reason,
        by: actor.0,
        until: None,
        at,
        sessions_ended: 0,
    };
    record(&state, event, format!("paused {identity}")).await?;
    Ok(Json(PauseResult {
        pause: PauseView::new(pause, 0, live),
        already_paused: false,
    }))
}

async fn resume_identity(
    State(state): State<ApiState>,
    Extension(actor): Extension<Actor>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Json<ResumeResult>, ApiError> {
    let request: ReasonRequest = body(&bytes)?;
    let identity = identity_name(&name)?;
    let reason = reason(request.reason)?;
    let Some(resumed) = state.controls.resume(&identity) else {
        return Ok(Json(ResumeResult {
            identity,
            was_paused: false,
            released_statements: 0,
            pause: None,
        }));
    };
    let released = resumed.released as u64;
    tracing::warn!(%identity, by = %actor.0, released_statements = released, "identity resumed");
    let event = ControlEvent {
        action: ControlAction::Resume,
        identity: identity.clone(),
        session_id: None,
        reason,
        by: actor.0,
        until: None,
        at: now_micros(),
        sessions_ended: 0,
    };
    record(&state, event, format!("resumed {identity}")).await?;
    let live = live_sessions_of(&state, &identity);
    Ok(Json(ResumeResult {
        identity,
        was_paused: true,
        released_statements: released,
        pause: Some(PauseView::new(resumed.pause, 0, live)),
    }))
}

async fn list_controls(State(state): State<ApiState>) -> Json<ControlsView> {
    let snapshot = state.controls.snapshot();
    let sessions = state.registry.list();
    let live = |identity: &str| sessions.iter().filter(|s| *s.identity == *identity).count() as u64;
    Json(ControlsView {
        locks: snapshot.locks.into_iter().map(LockView::from).collect(),
        pauses: snapshot
            .pauses
            .into_iter()
            .map(|p| {
                let held = state.controls.held(&p.identity) as u64;
                let live = live(&p.identity);
                PauseView::new(p, held, live)
            })
            .collect(),
    })
}

/// Query parameters of `GET /api/v1/controls/events`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventParams {
    identity: Option<String>,
    limit: Option<String>,
}

async fn list_control_events(
    State(state): State<ApiState>,
    params: Result<Query<EventParams>, QueryRejection>,
) -> Result<Json<ControlEventList>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; accepted parameters: identity, limit",
            e.body_text()
        ))
    })?;
    let limit = match given(params.limit) {
        None => 0,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: {text:?} is not a number from 1 to {MAX_LIST_LIMIT}"
                )));
            }
        },
    };
    let events = state
        .store
        .control_events(ControlEventFilter {
            identity: given(params.identity),
            limit,
        })
        .await?;
    Ok(Json(ControlEventList {
        events: events.into_iter().map(Into::into).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{admin_token_digest, router};
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;
    use ward_core::SessionRegistry;
    use ward_core::control::Controls;
    use ward_core::event::{AuditEvent, SessionEnd, SessionId, SessionStart};
    use ward_core::registry::Registration;
    use ward_store::{SqliteStore, StoreReader};

    const TOKEN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";
    const ENDED: &str = "0190a1b2-0000-7000-8000-0000000000e0";

    struct Fixture {
        dir: tempfile::TempDir,
        app: Router,
        registry: Arc<SessionRegistry>,
        controls: Arc<Controls>,
    }

    impl Fixture {
        fn new() -> Fixture {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("ward.db");
            let mut store = SqliteStore::open(&path).unwrap();
            store
                .write_batch(&[
                    AuditEvent::SessionStart(SessionStart {
                        session_id: SessionId(ENDED.into()),
                        identity: "ci".into(),
                        groups: Vec::new(),
                        target: "db".into(),
                        protocol: "postgres".into(),
                        client_addr: "127.0.0.1:1".into(),
                        tls_version: "TLSv1.3".into(),
                        client_program: None,
                        started_at: 1_000,
                        credential: None,
                    }),
                    AuditEvent::SessionEnd(SessionEnd {
                        session_id: SessionId(ENDED.into()),
                        ended_at: 2_000,
                        reason: "client closed the session".into(),
                    }),
                ])
                .unwrap();
            let registry = SessionRegistry::new();
            let controls = Arc::new(Controls::new());
            let state = ApiState::new(
                StoreReader::open(&path).unwrap(),
                registry.clone(),
                admin_token_digest(TOKEN),
            )
            .with_controls(controls.clone());
            Fixture {
                dir,
                app: router(state),
                registry,
                controls,
            }
        }

        fn session(&self, id: &str, identity: &str) -> Registration {
            self.registry.register(
                SessionId(id.into()),
                identity.into(),
                "orders-db".into(),
                "postgres",
                "127.0.0.1:5".into(),
            )
        }

        async fn call(
            &self,
            method: &str,
            uri: &str,
            body: &str,
        ) -> (StatusCode, serde_json::Value) {
            self.call_as(method, uri, body, Some(TOKEN)).await
        }

        async fn call_as(
            &self,
            method: &str,
            uri: &str,
            body: &str,
            token: Option<&str>,
        ) -> (StatusCode, serde_json::Value) {
            let mut request = Request::builder().method(method).uri(uri);
            if let Some(token) = token {
                request = request.header("authorization", format!("Bearer {token}"));
            }
            let response = self
                .app
                .clone()
                .oneshot(request.body(Body::from(body.to_string())).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let json = serde_json::from_slice(&bytes)
                .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {bytes:?}"));
            (status, json)
        }

        async fn events(&self) -> Vec<serde_json::Value> {
            let (status, body) = self.call("GET", "/api/v1/controls/events", "").await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body["events"].as_array().unwrap().clone()
        }
    }

    #[tokio::test]
    async fn containment_needs_the_admin_token() {
        let f = Fixture::new();
        for (method, uri) in [
            ("POST", "/api/v1/sessions/0190a1b2-0000/kill"),
            ("POST", "/api/v1/identities/ci/lock"),
            ("DELETE", "/api/v1/identities/ci/lock"),
            ("POST", "/api/v1/identities/ci/pause"),
            ("GET", "/api/v1/controls"),
        ] {
            let (status, _) = f.call_as(method, uri, "", None).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{method} {uri}");
        }
        assert!(f.controls.check_lock("ci").is_none());
        assert!(!f.controls.is_paused("ci"));
    }

    #[tokio::test]
    async fn kill_ends_one_live_session_by_id_or_prefix() {
        let f = Fixture::new();
        let a = f.session("0190aaaa-0000-7000-8000-000000000001", "ci");
        let b = f.session("0190bbbb-0000-7000-8000-000000000002", "ci");

        let (status, body) = f
            .call(
                "POST",
                "/api/v1/sessions/0190aaaa-00/kill",
                r#"{"reason": "incident 42"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["session_id"], "0190aaaa-0000-7000-8000-000000000001");
        assert_eq!(body["identity"], "ci");
        assert_eq!(body["target"], "orders-db");
        assert_eq!(body["by"], "admin");
        assert!(a.session.stop.is_cancelled());
        assert_eq!(a.session.end_reason().as_deref(), Some("incident 42"));
        assert!(!b.session.stop.is_cancelled());

        // Killing it again, while it ends, is a conflict rather than a second record.
        let (status, body) = f
            .call(
                "POST",
                "/api/v1/sessions/0190aaaa-0000-7000-8000-000000000001/kill",
                "",
            )
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        let (status, body) = f.call("POST", "/api/v1/sessions/0190/kill", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        let (status, body) = f
            .call("POST", "/api/v1/sessions/0190ffff-ffff/kill", "")
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
        let (status, body) = f
            .call("POST", &format!("/api/v1/sessions/{ENDED}/kill"), "")
            .await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("already ended at 1970-01-01T00:00:00.002Z (client closed the session)"),
            "{body}"
        );
        let (status, body) = f
            .call(
                "POST",
                "/api/v1/sessions/0190aaaa-00/kill",
                r#"{"reason": "two\nlines"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

        // Two live sessions share the prefix 0190: ambiguous once b is the only other one.
        let _c = f.session("0190bbbb-0000-7000-8000-000000000003", "ci");
        let (status, body) = f.call("POST", "/api/v1/sessions/0190bbbb/kill", "").await;
        assert_eq!(status, StatusCode::CONFLICT, "{body}");

        let events = f.events().await;
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["action"], "kill");
        assert_eq!(
            events[0]["session_id"],
            "0190aaaa-0000-7000-8000-000000000001"
        );
        assert_eq!(events[0]["reason"], "incident 42");
        assert_eq!(events[0]["sessions_ended"], 1);
    }

    #[tokio::test]
    async fn lock_ends_sessions_refuses_new_ones_and_persists() {
        let f = Fixture::new();
        let ci1 = f.session("0190aaaa-0000-7000-8000-000000000001", "ci");
        let ci2 = f.session("0190aaaa-0000-7000-8000-000000000002", "ci");
        let alice = f.session("0190aaaa-0000-7000-8000-000000000003", "alice");

        let (status, body) = f
            .call(
                "POST",
                "/api/v1/identities/ci/lock",
                r#"{"reason": "token leaked", "for": "2h"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["sessions_ended"], 2);
        assert_eq!(body["lock"]["reason"], "token leaked");
        assert_eq!(body["lock"]["by"], "admin");
        assert!(body["replaced"].is_null());
        let at = body["lock"]["at_us"].as_i64().unwrap();
        assert_eq!(
            body["lock"]["until_us"].as_i64().unwrap(),
            at + 7_200_000_000
        );
        for s in [&ci1, &ci2] {
            assert_eq!(
                s.session.end_reason().as_deref(),
                Some("locked: token leaked")
            );
        }
        assert!(!alice.session.stop.is_cancelled());
        assert_eq!(f.controls.check_lock("ci").unwrap().reason, "token leaked");

        // Locking again replaces the lock (here: until unlocked, no reason given).
        let (status, body) = f.call("POST", "/api/v1/identities/ci/lock", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["replaced"]["reason"], "token leaked");
        assert_eq!(body["lock"]["reason"], NO_REASON);
        assert!(body["lock"]["until"].is_null());

        let (status, body) = f.call("GET", "/api/v1/controls", "").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["locks"].as_array().unwrap().len(), 1);
        assert_eq!(body["locks"][0]["identity"], "ci");

        // What is in force is on disk before the answer.
        let path = f.dir.path().join("ward.db");
        let saved = SqliteStore::open(&path).unwrap().controls().unwrap();
        assert_eq!(saved.locks.len(), 1);
        assert_eq!(saved.locks[0].reason, NO_REASON);

        let (status, body) = f.call("DELETE", "/api/v1/identities/ci/lock", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["was_locked"], true);
        assert!(f.controls.check_lock("ci").is_none());
        let (status, body) = f.call("POST", "/api/v1/identities/ci/unlock", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["was_locked"], false);
        assert!(
            SqliteStore::open(&path)
                .unwrap()
                .controls()
                .unwrap()
                .locks
                .is_empty()
        );
        let actions: Vec<String> = f
            .events()
            .await
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions, ["unlock", "lock", "lock"]);
    }

    #[tokio::test]
    async fn lock_requests_are_checked() {
        let f = Fixture::new();
        for (body, word) in [
            ("{", "invalid JSON"),
            (r#"{"reason": "x", "until": "2h"}"#, "unknown field"),
            (r#"{"for": "soon"}"#, "for:"),
            (r#"{"for": "0s"}"#, "longer than zero"),
            (r#"{"for": "100000000000d"}"#, "for:"),
            (r#"{"reason": "a\u001b[2Jb"}"#, "control characters"),
        ] {
            let (status, json) = f.call("POST", "/api/v1/identities/ci/lock", body).await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {json}");
            let error = json["error"].as_str().unwrap();
            assert!(error.contains(word), "{body}: {error}");
        }
        let (status, _) = f
            .call("POST", "/api/v1/identities/ci/pause", r#"{"for": "2h"}"#)
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        let (status, _) = f.call("POST", "/api/v1/identities/%20/lock", "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert!(f.controls.check_lock("ci").is_none());
        assert!(f.events().await.is_empty());
    }

    #[tokio::test]
    async fn pause_holds_statements_until_resume() {
        let f = Fixture::new();
        let _s = f.session("0190aaaa-0000-7000-8000-000000000001", "ci");
        let (status, body) = f
            .call(
                "POST",
                "/api/v1/identities/ci/pause",
                r#"{"reason": "looking"}"#,
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["already_paused"], false);
        assert_eq!(body["pause"]["live_sessions"], 1);
        assert!(f.controls.is_paused("ci"));

        let controls = f.controls.clone();
        let held = tokio::spawn(async move { controls.wait_until_resumed("ci").await });
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            while f.controls.held("ci") == 0 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .unwrap();

        let (_, body) = f.call("POST", "/api/v1/identities/ci/pause", "").await;
        assert_eq!(body["already_paused"], true);
        assert_eq!(body["pause"]["reason"], "looking");
        let (_, body) = f.call("GET", "/api/v1/controls", "").await;
        assert_eq!(body["pauses"][0]["identity"], "ci");
        assert_eq!(body["pauses"][0]["held_statements"], 1);
        assert_eq!(
            SqliteStore::open(&f.dir.path().join("ward.db"))
                .unwrap()
                .controls()
                .unwrap()
                .pauses[0]
                .reason,
            "looking"
        );

        let (status, body) = f.call("POST", "/api/v1/identities/ci/resume", "").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["was_paused"], true);
        assert_eq!(body["released_statements"], 1);
        tokio::time::timeout(std::time::Duration::from_secs(5), held)
            .await
            .unwrap()
            .unwrap();
        let (_, body) = f.call("POST", "/api/v1/identities/ci/resume", "").await;
        assert_eq!(body["was_paused"], false);
        let actions: Vec<String> = f
            .events()
            .await
            .iter()
            .map(|e| e["action"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(actions, ["resume", "pause"]);
    }
}
