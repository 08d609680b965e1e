use super::*;
use crate::{admin_token_digest, router};
use axum::body::Body;
use axum::http::Request;
use std::time::Duration;
use tower::ServiceExt;
use ward_core::approvals::{ApprovalOutcome, ApprovalRequest};
use ward_core::identity::{TokenEntry, generate_token, parse_token_hash};
use ward_core::{AuditSink, SessionRegistry};
use ward_store::StoreReader;

const ADMIN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    approvals: Arc<Approvals>,
    /// `identity:token` credentials by identity.
    creds: std::collections::HashMap<&'static str, String>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let (audit, rx) = AuditSink::channel(256);
    ward_store::spawn_writer(path.clone(), rx, 64).unwrap();
    let approvals = Arc::new(Approvals::new(audit));
    let mut entries = Vec::new();
    let mut creds = std::collections::HashMap::new();
    for (name, groups) in [
        ("alice", vec!["dev"]),
        ("bob", vec!["sre"]),
        ("carol", vec!["sre"]),
        ("mallory", vec!["dev"]),
    ] {
        let t = generate_token();
        entries.push(TokenEntry {
            identity: name.into(),
            hash: parse_token_hash(&t.hash).unwrap(),
            expires: None,
            long_lived: true,
            // Limited to a target: approving is not connecting, so it still works.
            targets: Some(vec!["other-db".into()]),
            groups: groups.into_iter().map(String::from).collect(),
            ..TokenEntry::default()
        });
        creds.insert(name, format!("{name}:{}", t.token));
    }
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(ADMIN),
    )
    .with_approvals(approvals.clone(), TokenBook::new(entries));
    Fixture {
        _dir: dir,
        app: router(state),
        approvals,
        creds,
    }
}

fn request(approvers: &[&str], required: u32) -> ApprovalRequest {
    ApprovalRequest {
        session_id: "0190a1b2-0000-7000-8000-00000000000a".into(),
        identity: "alice".into(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        command: "DELETE FROM orders WHERE id = 42".into(),
        rule: "approve-deletes".into(),
        approvers: approvers.iter().map(|a| a.to_string()).collect(),
        approvals_required: required,
        timeout: Duration::from_secs(60),
        on_timeout: OnTimeout::Deny,
    }
}

/// Submits and keeps the future running, as the adapter would.
fn submit(
    f: &Fixture,
    approvers: &[&str],
    required: u32,
) -> (String, tokio::task::JoinHandle<ApprovalOutcome>) {
    let (id, outcome) = f.approvals.submit(request(approvers, required));
    (id, tokio::spawn(outcome))
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = bearer {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(|b| Body::from(b.to_string())).unwrap_or_default();
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
    (status, json)
}

fn error(body: &serde_json::Value) -> &str {
    body["error"].as_str().unwrap_or("")
}

#[tokio::test]
async fn an_approver_identity_approves_and_the_statement_is_released() {
    let f = fixture();
    let (id, outcome) = submit(&f, &["group:sre"], 1);
    let bob = f.creds["bob"].clone();

    let (status, body) = call(&f.app, "GET", "/api/v1/approvals", Some(&bob), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approvals"][0]["id"], id.as_str());
    assert_eq!(body["approvals"][0]["state"], "pending");
    assert_eq!(body["approvals"][0]["remaining_approvals"], 1);
    assert_eq!(
        body["approvals"][0]["approve_command"],
        format!("ward approve {id}")
    );

    let uri = format!("/api/v1/approvals/{id}/approve");
    let (status, body) = call(&f.app, "POST", &uri, Some(&bob), Some(r#"{"reason":"ok"}"#)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["by"], "bob");
    assert_eq!(body["approval"]["state"], "approved");
    assert_eq!(body["approval"]["approved_by"], serde_json::json!(["bob"]));
    assert_eq!(
        outcome.await.unwrap(),
        ApprovalOutcome::Approved {
            by: vec!["bob".into()]
        }
    );

    // Deciding again conflicts.
    let carol = f.creds["carol"].clone();
    let (status, body) = call(&f.app, "POST", &uri, Some(&carol), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).contains("already approved"), "{body}");

    // The detail carries the audited steps once the writer has committed them.
    let detail_uri = format!("/api/v1/approvals/{id}");
    let mut history = serde_json::Value::Null;
    for _ in 0..100 {
        let (status, body) = call(&f.app, "GET", &detail_uri, Some(ADMIN), None).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        if body["history"].as_array().is_some_and(|h| h.len() == 2) {
            history = body["history"].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(history[0]["state"], "requested", "{history}");
    assert_eq!(history[1]["state"], "approved");
    assert_eq!(history[1]["by"], "bob");
    assert_eq!(history[1]["reason"], "ok");
}

#[tokio::test]
async fn self_approval_and_unlisted_approvers_are_forbidden() {
    let f = fixture();
    let (id, _outcome) = submit(&f, &["group:sre"], 1);
    let uri = format!("/api/v1/approvals/{id}/approve");

    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["alice"]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(
        error(&body).contains("an identity cannot approve its own request"),
        "{body}"
    );

    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["mallory"]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("allows only group:sre"), "{body}");

    // The admin token does not replace the rule's approvers.
    let (status, body) = call(&f.app, "POST", &uri, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("--as NAME"), "{body}");

    assert_eq!(f.approvals.get(&id).unwrap().state, ApprovalState::Pending);
}

#[tokio::test]
async fn the_admin_approves_rules_without_approvers() {
    let f = fixture();
    let (id, outcome) = submit(&f, &[], 1);
    let uri = format!("/api/v1/approvals/{id}/approve");
    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["bob"]), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(error(&body).contains("only the admin"), "{body}");
    let (status, body) = call(&f.app, "POST", &uri, Some(ADMIN), Some("")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["by"], "admin");
    assert!(outcome.await.unwrap().allows_statement());
}

#[tokio::test]
async fn two_approvals_and_denials() {
    let f = fixture();
    let (id, outcome) = submit(&f, &["group:sre"], 2);
    let uri = format!("/api/v1/approvals/{id}/approve");
    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["bob"]), None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "pending");
    assert_eq!(body["approval"]["remaining_approvals"], 1);
    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["bob"]), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).contains("1 more approval"), "{body}");

    let deny = format!("/api/v1/approvals/{id}/deny");
    let (status, body) = call(&f.app, "POST", &deny, Some(&f.creds["carol"]), None).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("needs a reason"), "{body}");
    let (status, body) = call(
        &f.app,
        "POST",
        &deny,
        Some(&f.creds["carol"]),
        Some(r#"{"reason": 7}"#),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(error(&body).contains("invalid JSON body"), "{body}");
    let (status, body) = call(
        &f.app,
        "POST",
        &deny,
        Some(&f.creds["carol"]),
        Some(r#"{"reason": "not during the freeze"}"#),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["approval"]["state"], "denied");
    assert_eq!(body["approval"]["decided_by"], "carol");
    assert_eq!(
        outcome.await.unwrap(),
        ApprovalOutcome::Denied {
            by: "carol".into(),
            reason: "not during the freeze".into()
        }
    );
    let (status, body) = call(&f.app, "POST", &uri, Some(&f.creds["carol"]), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).contains("already denied"), "{body}");
}

#[tokio::test]
async fn unknown_ids_and_what_identities_may_see() {
    let f = fixture();
    let (id, _outcome) = submit(&f, &["group:sre"], 1);

    let (status, body) = call(
        &f.app,
        "POST",
        "/api/v1/approvals/r-00000000/approve",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert!(error(&body).contains("ward approvals list"), "{body}");

    // mallory may not decide it and did not submit it: invisible.
    let mallory = f.creds["mallory"].clone();
    let (_, body) = call(&f.app, "GET", "/api/v1/approvals", Some(&mallory), None).await;
    assert_eq!(body["approvals"], serde_json::json!([]));
    let (status, _) = call(
        &f.app,
        "GET",
        &format!("/api/v1/approvals/{id}"),
        Some(&mallory),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    // The requester sees its own request, the admin sees everything.
    for who in [f.creds["alice"].as_str(), ADMIN] {
        let (_, body) = call(&f.app, "GET", "/api/v1/approvals", Some(who), None).await;
        assert_eq!(body["approvals"][0]["id"], id.as_str());
    }
    let (status, body) = call(
        &f.app,
        "GET",
        &format!("/api/v1/approvals/{}", id.to_uppercase()),
        Some(&f.creds["bob"]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body["approval"]["command"],
        "DELETE FROM orders WHERE id = 42"
    );
}

#[tokio::test]
async fn credentials_are_checked() {
    let f = fixture();
    let (status, body) = call(&f.app, "GET", "/api/v1/approvals", None, None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).contains("<identity>:<ward token>"), "{body}");
    for bad in [
        "ward_wrong",
        "bob:ward_wrong",
        "nobody:ward_wrong",
        &f.creds["bob"].replace("bob:", "carol:"),
    ] {
        let (status, body) = call(&f.app, "GET", "/api/v1/approvals", Some(bad), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{bad}: {body}");
    }
    // An identity token is not an admin token for the rest of the API.
    let (status, _) = call(
        &f.app,
        "GET",
        "/api/v1/sessions",
        Some(&f.creds["bob"]),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Without approvals wired in, the endpoints say so.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    ward_store::SqliteStore::open(&path).unwrap();
    let bare = router(ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(ADMIN),
    ));
    let (status, _) = call(&bare, "GET", "/api/v1/approvals", Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn decided_requests_forgotten_in_memory_still_show_their_history() {
    let f = fixture();
    let (id, outcome) = submit(&f, &[], 1);
    f.approvals.deny(&id, &Approver::admin(), "no").unwrap();
    outcome.await.unwrap();
    // Push it out of the in-memory window.
    for _ in 0..300 {
        let (other, o) = submit(&f, &[], 1);
        f.approvals.deny(&other, &Approver::admin(), "no").unwrap();
        o.await.unwrap();
    }
    assert!(f.approvals.get(&id).is_none());
    let uri = format!("/api/v1/approvals/{id}");
    let mut found = false;
    for _ in 0..200 {
        let (status, body) = call(&f.app, "GET", &uri, Some(ADMIN), None).await;
        // Both steps may land in different batches of the writer.
        if status == StatusCode::OK && body["history"].as_array().is_some_and(|h| h.len() == 2) {
            assert!(body["approval"].is_null(), "{body}");
            assert_eq!(body["history"][1]["state"], "denied");
            found = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(found, "history of {id} never appeared");
    // Not the requester, not the admin: nothing.
    let (status, _) = call(&f.app, "GET", &uri, Some(&f.creds["bob"]), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&f.app, "GET", &uri, Some(&f.creds["alice"]), None).await;
    assert_eq!(status, StatusCode::OK);
}
