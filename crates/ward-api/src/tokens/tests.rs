//! Minting, listing and revoking ward tokens, and `ward login`'s endpoints when login is not
//! configured, through the router with a real audit writer (tokens exist only once their
//! event is durable).

use crate::login::LoginSettings;
use crate::{ApiState, admin_token_digest, router};
use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use serde_json::{Value, json};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;
use ward_auth::{Authenticator, TokenRequest, WardTokenError, WardTokens};
use ward_core::control::{Controls, LockInfo};
use ward_core::{AuditSink, Config, SessionRegistry, TokenBook};
use ward_store::StoreReader;

const ADMIN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";

struct Fixture {
    _dir: tempfile::TempDir,
    app: Router,
    auth: Arc<Authenticator>,
    controls: Arc<Controls>,
    /// alice's `ward login` token (groups dba, dev), bob's (dev).
    alice: String,
    bob: String,
}

fn login_token(tokens: &WardTokens, who: &str, groups: &[&str]) -> String {
    let issued = WardTokens::issue(
        TokenRequest {
            identity: who.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            attributes: vec![("subject".into(), who.into())],
            targets: None,
            kind: "login",
            issued_by: who.into(),
            ttl: Duration::from_secs(8 * 3600),
        },
        chrono::Utc::now(),
    );
    tokens.insert(issued.event);
    issued.secret
}

fn fixture(identity_yaml: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    ward_store::SqliteStore::open(&path).unwrap();
    let config = Config::from_yaml(
        &format!(
            "identity:\n  oidc:\n    - {{ issuer: \"https://idp.example.com\", audiences: [ward] }}\n{identity_yaml}"
        ),
        Path::new("."),
    )
    .unwrap();
    let (audit, rx) = AuditSink::channel(64);
    ward_store::spawn_writer_with(path.clone(), rx, ward_store::WriterOptions::default()).unwrap();
    let controls = Arc::new(Controls::new());
    let tokens = Arc::new(WardTokens::new());
    let alice = login_token(&tokens, "oidc:alice", &["dba", "dev"]);
    let bob = login_token(&tokens, "oidc:bob", &["dev"]);
    let auth = Arc::new(Authenticator::new(
        TokenBook::new(Vec::new()),
        Arc::new(ward_oidc::Verifier::new(&config.identity.oidc, &[])),
        tokens,
        controls.clone(),
        audit.clone(),
    ));
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(ADMIN),
    )
    .with_controls(controls.clone())
    .with_auth(auth.clone())
    .with_audit(audit, Duration::from_secs(5))
    .with_login(
        LoginSettings::new(&config.identity, ["orders-db".into(), "hr-db".into()]).unwrap(),
    );
    Fixture {
        _dir: dir,
        app: router(state),
        auth,
        controls,
        alice,
        bob,
    }
}

const MINT: &str = "  mint: { groups: [dba], max_ttl: 1h }\n";

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = match body {
        Some(b) => {
            request = request.header("content-type", "application/json");
            Body::from(b.to_string())
        }
        None => Body::empty(),
    };
    let response = app
        .clone()
        .oneshot(request.body(body).unwrap())
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

fn error(body: &Value) -> &str {
    body["error"].as_str().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_endpoints_say_when_login_is_not_configured() {
    let f = fixture(MINT);
    let (status, body) = call(&f.app, "GET", "/api/v1/auth/config", None, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(error(&body).contains("identity.login"), "{body}");
    let (status, body) = call(&f.app, "POST", "/api/v1/auth/login", Some("a.b.c"), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_of_the_mint_groups_mints_a_scoped_token_for_a_bot() {
    let f = fixture(MINT);
    let (status, body) = call(
        &f.app,
        "POST",
        "/api/v1/tokens",
        Some(&f.alice),
        Some(
            json!({"ttl": "15m", "label": "nightly", "targets": ["orders-db"], "groups": ["dba"]}),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["identity"], "oidc:alice/nightly");
    assert_eq!(body["groups"], json!(["dba"]));
    let secret = body["token"].as_str().unwrap();
    let now = chrono::Utc::now();
    let (identity, _) = f
        .auth
        .ward_tokens()
        .authenticate(secret, Some("orders-db"), now)
        .unwrap();
    assert!(
        identity
            .attributes
            .contains(&("minted_by".into(), "oidc:alice".into()))
    );
    assert!(matches!(
        f.auth
            .ward_tokens()
            .authenticate(secret, Some("hr-db"), now),
        Err(WardTokenError::TargetNotAllowed(..))
    ));
    let expires = chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!((expires - now.timestamp() - 900).abs() <= 2, "{body}");

    // Listed for alice and the admin, not for bob; never with the secret.
    let id = body["token_id"].as_str().unwrap().to_string();
    let (status, mine) = call(&f.app, "GET", "/api/v1/tokens", Some(&f.alice), None).await;
    assert_eq!(status, StatusCode::OK, "{mine}");
    let ids: Vec<&str> = mine["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["token_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [id.as_str()], "{mine}");
    assert_eq!(mine["tokens"][0]["label"], "nightly");
    assert!(!mine.to_string().contains(secret));
    let (_, bobs) = call(&f.app, "GET", "/api/v1/tokens", Some(&f.bob), None).await;
    assert_eq!(bobs["tokens"], json!([]), "{bobs}");
    let (_, all) = call(
        &f.app,
        "GET",
        "/api/v1/tokens?identity=oidc:alice/nightly",
        Some(ADMIN),
        None,
    )
    .await;
    assert_eq!(all["tokens"].as_array().unwrap().len(), 1, "{all}");

    // Revoked by its minter (bob is told it does not exist), then refused.
    let path = format!("/api/v1/tokens/{id}");
    let (status, _) = call(&f.app, "DELETE", &path, Some(&f.bob), None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(
        &f.app,
        "DELETE",
        &path,
        Some(&f.alice),
        Some(json!({"reason": "bot retired"})),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["reason"], "bot retired");
    assert!(matches!(
        f.auth
            .ward_tokens()
            .authenticate(secret, Some("orders-db"), now),
        Err(WardTokenError::Revoked(_))
    ));
    let (status, body) = call(&f.app, "DELETE", &path, Some(ADMIN), None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert!(error(&body).contains("already revoked"), "{body}");
    let (_, all) = call(&f.app, "GET", "/api/v1/tokens?all=true", Some(ADMIN), None).await;
    let revoked = &all["tokens"].as_array().unwrap()[0];
    assert_eq!(revoked["revoke_reason"], "bot retired", "{all}");
    assert_eq!(revoked["revoked_by"], "oidc:alice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_is_refused_with_a_reason() {
    let f = fixture(MINT);
    let mint = |token: String, body: Value| {
        let app = f.app.clone();
        async move { call(&app, "POST", "/api/v1/tokens", Some(&token), Some(body)).await }
    };
    let ok = json!({"ttl": "15m", "label": "nightly"});

    let (status, body) = mint(f.bob.clone(), ok.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        error(&body).contains("only members of dba") && error(&body).contains("oidc:bob"),
        "{body}"
    );
    let (status, body) = mint(ADMIN.into(), ok.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("admin token cannot mint"), "{body}");
    let (status, body) = mint(f.alice.clone(), json!({"ttl": "2h", "label": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("at most 1h"), "{body}");
    let (status, body) = mint(f.alice.clone(), json!({"label": "x"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("ttl is required"), "{body}");
    let (status, body) = mint(f.alice.clone(), json!({"ttl": "15m"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("label is required"), "{body}");
    let (status, body) = mint(f.alice.clone(), json!({"ttl": "15m", "label": "a/b"})).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = mint(
        f.alice.clone(),
        json!({"ttl": "15m", "label": "x", "targets": ["nope"]}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("unknown target \"nope\""), "{body}");
    let (status, body) = mint(
        f.alice.clone(),
        json!({"ttl": "15m", "label": "x", "groups": ["admins"]}),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("groups you are in"), "{body}");
    let (status, body) = mint(
        f.alice.clone(),
        json!({"ttl": "15m", "label": "x", "tll": 1}),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(error(&body).contains("tll"), "{body}");
    let (status, body) = call(&f.app, "POST", "/api/v1/tokens", None, Some(ok.clone())).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(error(&body).contains("missing credential"), "{body}");
    let (status, _) = mint("ward_st_nope".into(), ok.clone()).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // A minted token cannot mint.
    let (_, minted) = mint(f.alice.clone(), ok.clone()).await;
    let (status, body) = mint(minted["token"].as_str().unwrap().into(), ok.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("cannot mint further"), "{body}");

    // A locked person cannot.
    f.controls.set_lock(LockInfo {
        identity: "oidc:alice".into(),
        reason: "incident 7".into(),
        until: None,
        by: "admin".into(),
        at: 0,
    });
    let (status, body) = mint(f.alice.clone(), ok.clone()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("locked: incident 7"), "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minting_is_off_without_mint_groups() {
    let f = fixture("");
    let (status, body) = call(
        &f.app,
        "POST",
        "/api/v1/tokens",
        Some(&f.alice),
        Some(json!({"ttl": "15m", "label": "nightly"})),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(error(&body).contains("minting is off"), "{body}");
}
