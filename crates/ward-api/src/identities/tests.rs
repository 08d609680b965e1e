use crate::{ApiState, admin_token_digest, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use std::sync::Arc;
use tower::ServiceExt;
use ward_auth::{Authenticator, TokenRequest, WardTokens};
use ward_core::event::{AuditEvent, CredentialInfo, SessionId, SessionStart};
use ward_core::identity::{TokenBook, TokenEntry};
use ward_core::{AuditSink, SessionRegistry};
use ward_store::{SqliteStore, StoreReader};

const ADMIN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";
const DAY: i64 = 86_400_000_000;

fn start(id: &str, identity: &str, groups: &[&str], at: i64, source: &str) -> AuditEvent {
    AuditEvent::SessionStart(SessionStart {
        session_id: SessionId(id.into()),
        identity: identity.into(),
        groups: groups.iter().map(|g| g.to_string()).collect(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        client_addr: "10.0.0.7:5000".into(),
        tls_version: "TLSv1.3".into(),
        client_program: None,
        started_at: at,
        credential: Some(CredentialInfo {
            source: source.into(),
            ..CredentialInfo::default()
        }),
    })
}

fn entry(name: &str, f: impl FnOnce(&mut TokenEntry)) -> TokenEntry {
    let mut e = TokenEntry {
        identity: name.into(),
        hash: [7; 32],
        ..TokenEntry::default()
    };
    f(&mut e);
    e
}

/// alice (IdP) used ward an hour ago in group dev only; erin logged in with group platform
/// (a login token in force); ci-old's only session was 40 days ago; bob was never seen.
fn app() -> (
    tempfile::TempDir,
    ward_core::audit::AuditReceiver,
    axum::Router,
) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let now = chrono::Utc::now();
    let now_us = now.timestamp_micros();
    let erin = WardTokens::issue(
        TokenRequest {
            identity: "oidc:erin".into(),
            groups: vec!["platform".into()],
            attributes: Vec::new(),
            targets: None,
            kind: "login",
            issued_by: "oidc:erin".into(),
            ttl: std::time::Duration::from_secs(3600),
        },
        now,
    );
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .write_batch(&[
            start("s1", "oidc:alice", &["dev"], now_us - DAY / 24, "oidc"),
            start("s2", "ci-old", &[], now_us - 40 * DAY, "token"),
            AuditEvent::TokenIssued(erin.event),
        ])
        .unwrap();
    drop(store);
    let book = TokenBook::new(vec![
        entry("ci-old", |e| e.long_lived = true),
        entry("deploy-bot", |e| {
            e.expires = Some(now + chrono::Duration::days(30));
            e.owner = Some("oidc:alice".into());
            e.owner_group = Some("platform".into());
            e.groups = vec!["deploy".into()];
            e.targets = Some(vec!["orders-db".into()]);
        }),
        entry("backup", |e| {
            e.long_lived = true;
            e.owner = Some("oidc:bob".into());
        }),
        entry("report", |e| {
            e.expires = Some(now - chrono::Duration::days(1));
            e.owner = Some("oidc:erin".into());
            e.owner_group = Some("platform".into());
        }),
    ]);
    let (audit, rx) = AuditSink::channel(16);
    let controls = Arc::new(ward_core::control::Controls::new());
    let auth = Authenticator::new(
        book,
        Arc::new(ward_oidc::Verifier::new(&[], &[])),
        Arc::new(WardTokens::new()),
        controls,
        audit,
    );
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(ADMIN),
    )
    .with_auth(Arc::new(auth));
    (dir, rx, router(state))
}

async fn get(app: &axum::Router, uri: &str) -> (StatusCode, serde_json::Value) {
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri(uri)
                .header("authorization", format!("Bearer {ADMIN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

fn row<'a>(body: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    body["identities"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row for {name}: {body}"))
}

#[tokio::test]
async fn every_identity_once_with_its_flags() {
    let (_dir, _rx, app) = app();
    let (status, body) = get(&app, "/api/v1/identities").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["unused_days"], 30);
    let names: Vec<&str> = body["identities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "backup",
            "ci-old",
            "deploy-bot",
            "oidc:alice",
            "oidc:erin",
            "report"
        ]
    );
    let flags = |name: &str| row(&body, name)["flags"].clone();
    assert_eq!(flags("ci-old"), serde_json::json!(["long_lived", "unused"]));
    assert_eq!(
        flags("deploy-bot"),
        serde_json::json!(["owner_left_group", "unused"])
    );
    assert_eq!(
        flags("backup"),
        serde_json::json!(["long_lived", "owner_unknown", "unused"])
    );
    // erin's login says she is in platform.
    assert_eq!(flags("report"), serde_json::json!(["expired", "unused"]));
    assert_eq!(flags("oidc:alice"), serde_json::json!([]));
    assert_eq!(flags("oidc:erin"), serde_json::json!(["unused"]));

    let bot = row(&body, "deploy-bot");
    assert_eq!(bot["sources"], serde_json::json!(["token"]));
    assert_eq!(bot["groups"], serde_json::json!(["deploy"]));
    assert_eq!(bot["last_used"], serde_json::Value::Null);
    assert!(bot["expires"].as_str().unwrap().ends_with('Z'));
    let token = &bot["service_tokens"][0];
    assert_eq!(token["owner"], "oidc:alice");
    assert_eq!(token["owner_groups"], serde_json::json!(["dev"]));
    assert_eq!(token["owner_seen_via"], "session");
    assert_eq!(token["targets"], serde_json::json!(["orders-db"]));
    assert!(token.get("hash").is_none());
    assert_eq!(
        row(&body, "report")["service_tokens"][0]["owner_seen_via"],
        "login"
    );
    assert_eq!(row(&body, "ci-old")["expires"], serde_json::Value::Null);
    assert_eq!(row(&body, "ci-old")["sessions"], 1);

    let alice = row(&body, "oidc:alice");
    assert_eq!(alice["sources"], serde_json::json!(["oidc"]));
    assert_eq!(alice["groups"], serde_json::json!(["dev"]));
    assert_eq!(alice["last_credential"], "oidc");
    assert!(alice["last_used_us"].is_i64());
    let erin = row(&body, "oidc:erin");
    assert_eq!(erin["sources"], serde_json::json!(["ward_token"]));
    assert_eq!(erin["groups"], serde_json::json!(["platform"]));
    assert_eq!(erin["ward_tokens"][0]["kind"], "login");

    // A wider window: ci-old's session 40 days ago counts as use.
    let (_, body) = get(&app, "/api/v1/identities?unused_days=60").await;
    assert_eq!(
        row(&body, "ci-old")["flags"],
        serde_json::json!(["long_lived"])
    );
}

#[tokio::test]
async fn bad_parameters_are_400() {
    let (_dir, _rx, app) = app();
    for (query, expected) in [
        ("?unused_days=0", "unused_days"),
        ("?unused_days=soon", "unused_days"),
        ("?unused=3", "unused_days"),
    ] {
        let (status, body) = get(&app, &format!("/api/v1/identities{query}")).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        assert!(
            body["error"].as_str().unwrap().contains(expected),
            "{query}: {body}"
        );
    }
}
