use super::*;
use axum::body::Body;
use axum::http::Request;
use model::{SessionDetailView, SessionList};
use tower::ServiceExt;
use ward_core::event::{
    AuditEvent, SessionEnd, SessionId, SessionStart, StatementEvent, StatementOrigin,
};
use ward_store::SqliteStore;

const TOKEN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";
const A: &str = "0190a1b2-0000-7000-8000-00000000000a";
const B: &str = "0190a1b2-0000-7000-8000-00000000000b";
const C: &str = "0290ffff-0000-7000-8000-00000000000c";

fn start(id: &str, identity: &str, target: &str, started_at: i64) -> AuditEvent {
    AuditEvent::SessionStart(SessionStart {
        session_id: SessionId(id.into()),
        identity: identity.into(),
        groups: Vec::new(),
        target: target.into(),
        protocol: "postgres".into(),
        client_addr: "10.0.0.7:51234".into(),
        tls_version: "TLSv1.3".into(),
        client_program: None,
        started_at,
        credential: None,
    })
}

/// A store with three sessions: A (ended, two hours ago), B (live, one hour ago) and C
/// (live, just now), and a router over it.
fn app() -> (tempfile::TempDir, Router) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let now = ward_core::time::now_micros();
    let hour = 3_600_000_000;
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .write_batch(&[
            start(A, "ci-nightly", "orders-db", now - 2 * hour),
            AuditEvent::Statement(StatementEvent {
                session_id: SessionId(A.into()),
                seq: 1,
                origin: StatementOrigin::Execute,
                text: "SELECT * FROM orders WHERE id = $1".into(),
                params: Some("$1='42'".into()),
                started_at: now - 2 * hour + 1_000,
                duration_us: 2_500,
                rows: Some(1),
                command: Some("SELECT".into()),
                sqlstate: None,
                error: None,
                decision: None,
                rule: None,
                result_sample: None,
            }),
            AuditEvent::SessionEnd(SessionEnd {
                session_id: SessionId(A.into()),
                ended_at: now - 2 * hour + 10_000,
                reason: "client closed".into(),
            }),
            start(B, "alice", "orders-db", now - hour),
            start(C, "alice", "hr-db", now),
        ])
        .unwrap();
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(TOKEN),
    );
    (dir, router(state))
}

async fn call(app: &Router, uri: &str, token: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut request = Request::builder().uri(uri);
    if let Some(token) = token {
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
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{uri}: body is not JSON ({e}): {bytes:?}"));
    (status, json)
}

async fn list(app: &Router, query: &str) -> Vec<String> {
    let (status, body) = call(app, &format!("/api/v1/sessions{query}"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{query}: {body}");
    let list: SessionList = serde_json::from_value(body).unwrap();
    list.sessions.into_iter().map(|s| s.id).collect()
}

#[tokio::test]
async fn health_needs_no_token() {
    let (_dir, app) = app();
    for path in ["/healthz", "/readyz"] {
        let (status, body) = call(&app, path, None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, serde_json::json!({"status": "ok"}));
    }
}

#[tokio::test]
async fn api_requires_the_admin_token() {
    let (_dir, app) = app();
    for (token, word) in [(None, "missing"), (Some("ward_wrong"), "wrong")] {
        for path in [
            "/api/v1/sessions",
            &format!("/api/v1/sessions/{A}"),
            "/api/v1/nope",
        ] {
            let (status, body) = call(&app, path, token).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
            let error = body["error"].as_str().unwrap();
            assert!(
                error.contains(word) && error.contains("admin.token"),
                "{error}"
            );
        }
    }
    // The scheme is case-insensitive, as HTTP says.
    let response = app
        .clone()
        .oneshot(
            Request::builder()
                .uri("/api/v1/sessions")
                .header("authorization", format!("bearer {TOKEN}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn lists_sessions_with_filters() {
    let (_dir, app) = app();
    assert_eq!(list(&app, "").await, [C, B, A]);
    assert_eq!(list(&app, "?identity=alice").await, [C, B]);
    assert_eq!(list(&app, "?identity=alice&target=orders-db").await, [B]);
    assert_eq!(list(&app, "?identity=&target=").await, [C, B, A]);
    assert_eq!(list(&app, "?since=90m").await, [C, B]);
    assert_eq!(list(&app, "?since=3h&until=30m").await, [B, A]);
    assert_eq!(list(&app, "?since=2000-01-01T00:00:00Z").await, [C, B, A]);
    assert_eq!(list(&app, "?until=2000-01-01").await, Vec::<String>::new());
    assert_eq!(list(&app, "?limit=1").await, [C]);

    let (_, body) = call(&app, "/api/v1/sessions?identity=ci-nightly", Some(TOKEN)).await;
    let a = &body["sessions"][0];
    assert_eq!(a["active"], false);
    assert_eq!(a["statement_count"], 1);
    assert_eq!(a["end_reason"], "client closed");
    let started_us = a["started_at_us"].as_i64().unwrap();
    assert_eq!(a["started_at"], ward_core::time::format_micros(started_us));
    assert!(a["ended_at"].as_str().unwrap().ends_with('Z'));
    let (_, body) = call(&app, "/api/v1/sessions?target=hr-db", Some(TOKEN)).await;
    assert_eq!(body["sessions"][0]["active"], true);
    assert_eq!(body["sessions"][0]["ended_at"], serde_json::Value::Null);
}

#[tokio::test]
async fn bad_list_parameters_are_400_with_a_reason() {
    let (_dir, app) = app();
    for (query, expected) in [
        ("?since=soon", "since"),
        ("?until=yesterday", "RFC 3339"),
        ("?since=1h&until=2h", "later than until"),
        ("?limit=0", "limit"),
        ("?limit=many", "limit"),
        ("?identiy=alice", "identiy"),
    ] {
        let (status, body) = call(&app, &format!("/api/v1/sessions{query}"), Some(TOKEN)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}: {body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains(expected), "{query}: {error}");
    }
}

#[tokio::test]
async fn shows_a_session_by_id_or_prefix() {
    let (_dir, app) = app();
    let (status, body) = call(&app, &format!("/api/v1/sessions/{A}"), Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let detail: SessionDetailView = serde_json::from_value(body).unwrap();
    assert_eq!(detail.session.id, A);
    assert_eq!(detail.statements.len(), 1);
    let st = &detail.statements[0];
    assert_eq!(
        (st.seq, st.origin.as_str(), st.rows, st.duration_us),
        (1, "execute", Some(1), 2_500)
    );
    assert_eq!(st.params.as_deref(), Some("$1='42'"));
    assert_eq!(
        st.started_at,
        ward_core::time::format_micros(st.started_at_us)
    );

    let (status, body) = call(&app, "/api/v1/sessions/0290ffff", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["session"]["id"], C);
}

#[tokio::test]
async fn unknown_ambiguous_and_short_ids() {
    let (_dir, app) = app();
    let (status, body) = call(&app, "/api/v1/sessions/deadbeef-0000", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].as_str().unwrap().contains("no session"));
    let (status, body) = call(&app, "/api/v1/sessions/0190a1b2", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(body["error"].as_str().unwrap().contains("more characters"));
    let (status, _) = call(&app, "/api/v1/sessions/0190", Some(TOKEN)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let (status, body) = call(&app, "/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(body["error"].is_string());
}

#[tokio::test]
async fn serves_on_a_socket_and_shuts_down() {
    let (_dir, app) = app();
    drop(app);
    let dir = tempfile::tempdir().unwrap();
    let state = ApiState::new(
        StoreReader::open(&dir.path().join("ward.db")).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(TOKEN),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(serve(listener, state, async {
        let _ = stopped.await;
    }));
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.unwrap();
    assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    assert!(reply.ends_with(r#"{"status":"ok"}"#), "{reply}");
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn time_bounds() {
    let now = 10_000_000_000;
    assert_eq!(parse_time_bound("1h", now), Ok(now - 3_600_000_000));
    assert_eq!(parse_time_bound(" 30m ", now), Ok(now - 1_800_000_000));
    assert_eq!(parse_time_bound("1970-01-01T00:00:01Z", now), Ok(1_000_000));
    assert_eq!(
        parse_time_bound("1970-01-01T01:00:01+01:00", now),
        Ok(1_000_000)
    );
    assert_eq!(parse_time_bound("1970-01-02", now), Ok(86_400_000_000));
    assert!(parse_time_bound("later", now).unwrap_err().contains("7d"));
}

#[tokio::test]
async fn metrics_need_the_admin_token_and_are_prometheus_text() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let state = ApiState::new(
        StoreReader::open(&path).unwrap(),
        SessionRegistry::new(),
        admin_token_digest(TOKEN),
    )
    .with_metrics(|| "ward_forward_queue_depth{sink=\"siem\"} 3\n".to_string());
    let app = router(state);
    let get = |token: Option<&str>| {
        let mut request = Request::builder().uri("/metrics");
        if let Some(token) = token {
            request = request.header("authorization", format!("Bearer {token}"));
        }
        app.clone().oneshot(request.body(Body::empty()).unwrap())
    };
    assert_eq!(get(None).await.unwrap().status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        get(Some("wrong")).await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    let response = get(Some(TOKEN)).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let body = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    assert_eq!(&body[..], b"ward_forward_queue_depth{sink=\"siem\"} 3\n");
}
