//! Roles through the router, with a real authenticator: service tokens as
//! `<identity>:<token>` bearers and ward tokens carrying their groups (no IdP needed).

use super::*;
use crate::{ApiState, admin_token_digest, router};
use axum::Router;
use axum::body::Body;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use ward_auth::{Authenticator, TokenRequest, WardTokens};
use ward_core::approvals::{ApprovalRequest, Approvals, OnTimeout};
use ward_core::event::{AuditEvent, SessionId, SessionStart};
use ward_core::identity::{TokenBook, TokenEntry, generate_token, parse_token_hash};
use ward_core::{AuditSink, SessionRegistry};
use ward_store::{SqliteStore, StoreReader};

const ADMIN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";
const SESSION: &str = "0190a1b2-0000-7000-8000-00000000000a";

struct Fixture {
    _dir: tempfile::TempDir,
    _audit: ward_core::audit::AuditReceiver,
    app: Router,
    approvals: Arc<Approvals>,
    /// Bearers by identity: `name:<service token>`, or a ward token.
    bearer: std::collections::HashMap<&'static str, String>,
}

fn roles() -> ApiRoles {
    ApiRoles {
        admin: vec!["ward-admins".into()],
        approver: vec!["sre".into()],
        auditor: vec!["auditors".into()],
    }
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .write_batch(&[AuditEvent::SessionStart(SessionStart {
            session_id: SessionId(SESSION.into()),
            identity: "ci-nightly".into(),
            groups: Vec::new(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            client_addr: "10.0.0.7:51234".into(),
            tls_version: "TLSv1.3".into(),
            client_program: None,
            started_at: ward_core::time::now_micros(),
            credential: None,
        })])
        .unwrap();
    drop(store);
    let mut entries = Vec::new();
    let mut bearer = std::collections::HashMap::new();
    for (name, groups) in [
        ("audra", vec!["auditors"]),
        ("nobody", vec!["dev"]),
        ("oidc:carol", vec!["auditors", "dev"]),
        ("sam", vec!["sre"]),
    ] {
        let t = generate_token();
        entries.push(TokenEntry {
            identity: name.into(),
            hash: parse_token_hash(&t.hash).unwrap(),
            long_lived: true,
            targets: Some(vec!["orders-db".into()]),
            groups: groups.into_iter().map(String::from).collect(),
            ..TokenEntry::default()
        });
        bearer.insert(name, format!("{name}:{}", t.token));
    }
    let ward_tokens = Arc::new(WardTokens::new());
    let issued = WardTokens::issue(
        TokenRequest {
            identity: "oidc:dana".into(),
            groups: vec!["ward-admins".into()],
            attributes: Vec::new(),
            targets: Some(vec!["orders-db".into()]),
            kind: "login",
            issued_by: "oidc:dana".into(),
            ttl: Duration::from_secs(900),
        },
        chrono::Utc::now(),
    );
    ward_tokens.insert(issued.event.clone());
    bearer.insert("oidc:dana", issued.secret);
    let (audit, rx) = AuditSink::channel(1024);
    let controls = Arc::new(ward_core::control::Controls::new());
    let auth = Arc::new(Authenticator::new(
        TokenBook::new(entries.clone()),
        Arc::new(ward_oidc::Verifier::new(&[], &[])),
        ward_tokens,
        controls.clone(),
        audit.clone(),
    ));
    let approvals = Arc::new(Approvals::new(audit));
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(ADMIN),
    )
    .with_controls(controls)
    .with_auth(auth)
    .with_roles(roles())
    .with_approvals(approvals.clone(), TokenBook::new(entries))
    .with_metrics(|| "ward_up 1\n".to_string());
    Fixture {
        _dir: dir,
        _audit: rx,
        app: router(state),
        approvals,
        bearer,
    }
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
) -> (StatusCode, serde_json::Value, String) {
    let mut request = axum::http::Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = app
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json, text)
}

fn error(body: &serde_json::Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

#[test]
fn roles_come_from_groups_and_admin_implies_the_others() {
    let r = roles();
    let of = |groups: &[&str]| {
        Roles::of(
            &groups.iter().map(|g| g.to_string()).collect::<Vec<_>>(),
            &r,
        )
    };
    assert_eq!(of(&["dev"]), Roles::default());
    assert_eq!(
        of(&["auditors"]),
        Roles {
            auditor: true,
            ..Roles::default()
        }
    );
    assert_eq!(
        of(&["sre"]),
        Roles {
            approver: true,
            ..Roles::default()
        }
    );
    assert_eq!(of(&["dev", "ward-admins"]), Roles::all());
    assert_eq!(
        granting_groups(Role::Auditor, &r),
        ["auditors", "ward-admins"]
    );
    assert_eq!(granting_groups(Role::Admin, &r), ["ward-admins"]);
    assert_eq!(required_role(&Method::GET), Role::Auditor);
    assert_eq!(required_role(&Method::POST), Role::Admin);
    assert_eq!(required_role(&Method::DELETE), Role::Admin);
    // No group configured: nobody but the admin token has any role.
    assert_eq!(
        Roles::of(&["ward-admins".to_string()], &ApiRoles::default()),
        Roles::default()
    );
}

#[tokio::test]
async fn an_auditor_reads_but_may_not_act() {
    let f = fixture();
    let audra = f.bearer["audra"].clone();
    for uri in [
        "/api/v1/sessions",
        &format!("/api/v1/sessions/{SESSION}"),
        "/api/v1/controls",
        "/api/v1/controls/events",
        "/api/v1/auth/refusals",
        "/api/v1/identities",
        "/metrics",
    ] {
        let (status, _, text) = call(&f.app, "GET", uri, Some(&audra)).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {text}");
    }
    for (method, uri) in [
        ("POST", "/api/v1/identities/ci-nightly/lock"),
        ("DELETE", "/api/v1/identities/ci-nightly/lock"),
        ("POST", "/api/v1/identities/ci-nightly/unlock"),
        ("POST", "/api/v1/identities/ci-nightly/pause"),
        ("POST", "/api/v1/identities/ci-nightly/resume"),
        ("POST", &format!("/api/v1/sessions/{SESSION}/kill")),
    ] {
        let (status, body, _) = call(&f.app, method, uri, Some(&audra)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {uri}: {body}");
        assert_eq!(
            error(&body),
            "this needs role admin (groups: ward-admins); you are audra in [auditors]"
        );
    }
    // Nothing was locked.
    let (_, body, _) = call(&f.app, "GET", "/api/v1/controls", Some(ADMIN)).await;
    assert_eq!(body["locks"], serde_json::json!([]), "{body}");
    // Names with a `:` work as `<identity>:<token>`.
    let carol = f.bearer["oidc:carol"].clone();
    let (status, _, text) = call(&f.app, "GET", "/api/v1/sessions", Some(&carol)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
}

#[tokio::test]
async fn an_admin_by_group_locks_and_the_event_names_them() {
    let f = fixture();
    let dana = f.bearer["oidc:dana"].clone();
    let (status, body, _) = call(
        &f.app,
        "POST",
        "/api/v1/identities/ci-nightly/lock",
        Some(&dana),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["lock"]["by"], "oidc:dana", "{body}");
    let (status, body, _) = call(
        &f.app,
        "GET",
        "/api/v1/controls/events?identity=ci-nightly",
        Some(&dana),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["events"][0]["action"], "lock", "{body}");
    assert_eq!(body["events"][0]["by"], "oidc:dana", "{body}");
    let (status, body, _) = call(
        &f.app,
        "POST",
        "/api/v1/identities/ci-nightly/unlock",
        Some(&dana),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn no_role_is_403_and_a_wrong_secret_401() {
    let f = fixture();
    let (status, body, _) =
        call(&f.app, "GET", "/api/v1/sessions", Some(&f.bearer["nobody"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        error(&body),
        "this needs role auditor (groups: auditors, ward-admins); you are nobody in [dev]"
    );
    // An approver by role is not an auditor.
    let (status, _, _) = call(&f.app, "GET", "/api/v1/sessions", Some(&f.bearer["sam"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let wrong = [
        "audra:ward_00000000000000000000000000000000000000000000dead",
        "ward_00000000000000000000000000000000000000000000dead",
        "ward_st_000000000000000000000000000000000000000000000000",
        "eyJhbGciOiJSUzI1NiJ9.e30.c2ln",
    ];
    for secret in wrong {
        for uri in ["/api/v1/sessions", "/api/v1/nope", "/metrics"] {
            let (status, body, text) = call(&f.app, "GET", uri, Some(secret)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{secret} {uri}: {body}");
            assert!(error(&body).contains("wrong admin token"), "{body}");
            let secret_part = secret.rsplit(':').next().unwrap();
            assert!(!text.contains(secret_part), "the secret is echoed: {text}");
        }
    }
    let (status, body, _) = call(&f.app, "GET", "/api/v1/sessions", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).contains("missing credentials"), "{body}");
}

#[tokio::test]
async fn a_locked_identity_is_refused() {
    let f = fixture();
    let (status, body, _) =
        call(&f.app, "POST", "/api/v1/identities/audra/lock", Some(ADMIN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body, _) = call(&f.app, "GET", "/api/v1/sessions", Some(&f.bearer["audra"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("\"audra\" is locked"), "{body}");
    // Approvals refuse it too.
    let (status, _, _) = call(&f.app, "GET", "/api/v1/approvals", Some(&f.bearer["audra"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    // Others are not affected.
    let (status, _, _) = call(
        &f.app,
        "GET",
        "/api/v1/sessions",
        Some(&f.bearer["oidc:carol"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn the_admin_token_still_works_everywhere() {
    let f = fixture();
    for (method, uri) in [
        ("GET", "/api/v1/sessions"),
        ("GET", "/api/v1/identities"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/approvals"),
        ("POST", "/api/v1/identities/ci-nightly/pause"),
        ("POST", "/api/v1/identities/ci-nightly/resume"),
        ("POST", "/api/v1/identities/ci-nightly/lock"),
        ("POST", "/api/v1/identities/ci-nightly/unlock"),
    ] {
        let (status, body, _) = call(&f.app, method, uri, Some(ADMIN)).await;
        assert_eq!(status, StatusCode::OK, "{method} {uri}: {body}");
    }
    let (_, body, _) = call(&f.app, "GET", "/api/v1/controls/events", Some(ADMIN)).await;
    assert_eq!(body["events"][0]["by"], "admin", "{body}");
}

#[tokio::test]
async fn approvers_by_role_see_every_request_but_decide_only_what_rules_give_them() {
    let f = fixture();
    let (id, outcome) = f.approvals.submit(ApprovalRequest {
        session_id: SESSION.into(),
        identity: "ci-nightly".into(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        command: "DELETE FROM orders".into(),
        rule: "approve-deletes".into(),
        approvers: vec!["group:ward-admins".into()],
        approvals_required: 1,
        timeout: Duration::from_secs(60),
        on_timeout: OnTimeout::Deny,
    });
    let outcome = tokio::spawn(outcome);
    let ids = |body: &serde_json::Value| -> Vec<String> {
        body["approvals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| a["id"].as_str().unwrap().to_string())
            .collect()
    };
    // sam (role approver through sre) sees it; nobody (no role, not named) does not.
    let (status, body, _) = call(&f.app, "GET", "/api/v1/approvals", Some(&f.bearer["sam"])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ids(&body), [id.as_str()]);
    let (_, body, _) = call(
        &f.app,
        "GET",
        "/api/v1/approvals",
        Some(&f.bearer["nobody"]),
    )
    .await;
    assert!(ids(&body).is_empty(), "{body}");
    let (status, _, _) = call(
        &f.app,
        "GET",
        &format!("/api/v1/approvals/{id}"),
        Some(&f.bearer["sam"]),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    // The rule names group:ward-admins, so sam may not decide it...
    let approve = format!("/api/v1/approvals/{id}/approve");
    let (status, body, _) = call(&f.app, "POST", &approve, Some(&f.bearer["sam"])).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    // ...but dana, proven by her ward token and in ward-admins, may.
    let (status, body, _) = call(&f.app, "POST", &approve, Some(&f.bearer["oidc:dana"])).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["by"], "oidc:dana");
    assert_eq!(
        outcome.await.unwrap(),
        ward_core::approvals::ApprovalOutcome::Approved {
            by: vec!["oidc:dana".into()]
        }
    );
}
