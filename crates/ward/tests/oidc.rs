//! IdP and CI tokens as PostgreSQL passwords, end to end: a real `ward serve`, the harness's
//! real PostgreSQL, psql and raw protocol clients, and tokens from a real OpenID Connect
//! provider (`oidc-provider`, see harness/oidc.rs) or minted in the test with the test-only
//! keys of crates/ward-oidc/tests/fixtures (refusal cases, tokens that expire in seconds).

mod harness;

use harness::{output_text, rt, target_with_table};
mod pgwire;

use harness::oidc::{self, MintIssuer};
use harness::{AuthMethod, Postgres, Target, TokenSpec, Ward, WardOptions, wait_until};
use pgwire::Message;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

// ---- helpers ----

/// psql through ward with `password` (an IdP token, or a ward token) as `user`.
fn psql_with(
    ward: &Ward,
    user: &str,
    target: &str,
    password: &str,
    sql: &str,
) -> std::process::Output {
    let conninfo = ward.conninfo_with(user, target, password, "require");
    ward.psql_args(&conninfo, &["-w", "-At", "-c", sql])
}

/// The SQLSTATE and message of a refused raw login, and whether ward closed the connection.
async fn refused_login(ward: &Ward, user: &str, target: &str, password: &str) -> (String, String) {
    let mut s = pgwire::tls_connect(ward.pg_addr()).await;
    let (messages, ending) = pgwire::login(&mut s, user, target, password).await;
    let ending = ending.unwrap_or_else(|| {
        panic!(
            "login as {user} on {target} was accepted\n{}",
            pgwire::show(&messages)
        )
    });
    assert!(ending.closed(), "ward kept the refused connection open");
    let error = messages
        .iter()
        .find(|m| m.is_error())
        .unwrap_or_else(|| panic!("no ErrorResponse: {}", pgwire::show(&messages)));
    assert_eq!(error.fields().get(&'S').map(String::as_str), Some("FATAL"));
    (error.sqlstate(), error.text())
}

/// The newest recorded refusal with `code`, from `GET /api/v1/auth/refusals` (the events are
/// written asynchronously, so this waits for it to land).
fn refusal_event(ward: &Ward, code: &str) -> Value {
    wait_until(
        || {
            let (status, body) =
                ward.api("GET", &format!("/api/v1/auth/refusals?code={code}"), None);
            assert_eq!(status, 200, "list refusals: {body}");
            let v: Value = serde_json::from_str(&body).expect("refusals JSON");
            v["refusals"].as_array().and_then(|a| a.first().cloned())
        },
        &format!("an auth_refused event with code {code}"),
    )
}

/// The audit's sessions of `identity`, newest first.
fn sessions_of(ward: &Ward, identity: &str) -> Vec<Value> {
    let (status, body) = ward.api(
        "GET",
        &format!("/api/v1/sessions?identity={identity}&limit=100"),
        None,
    );
    assert_eq!(status, 200, "list sessions: {body}");
    let v: Value = serde_json::from_str(&body).expect("sessions JSON");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// The end reason of the newest session of `identity`, once it has ended.
fn end_reason(ward: &Ward, identity: &str) -> String {
    wait_until(
        || {
            sessions_of(ward, identity)
                .first()
                .and_then(|s| s["end_reason"].as_str().map(str::to_string))
        },
        &format!("the end of {identity}'s session"),
    )
}

/// The session_start events in the session log (parsed bodies), oldest first.
/// The session starts in the store, once there is at least one (the writer moves
/// journaled events into the store within milliseconds, not at once).
fn session_starts(ward: &Ward) -> Vec<Value> {
    let read = || -> Vec<Value> {
        let db =
            rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
        let mut stmt = db
            .prepare("SELECT body FROM event_log WHERE kind = 'session_start' ORDER BY id")
            .unwrap();
        stmt.query_map([], |r| r.get::<_, String>(0))
            .unwrap()
            .map(|b| serde_json::from_str(&b.unwrap()).unwrap())
            .collect()
    };
    wait_until(
        || Some(read()).filter(|starts| !starts.is_empty()),
        "a session start in the store",
    )
}

fn attribute<'a>(credential: &'a Value, name: &str) -> Option<&'a str> {
    credential["attributes"]
        .as_array()?
        .iter()
        .find(|pair| pair[0] == name)
        .and_then(|pair| pair[1].as_str())
}

/// A guardrail that only the IdP group `dba` passes: everything is denied unless a rule
/// allows it; everyone may read, members of `dba` may delete.
const DBA_RULES: &str = "policy: { default_action: deny }
rules:
  - name: everyone-reads
    statements: [select]
    action: allow
  - name: dba-deletes
    groups: [dba]
    statements: [delete]
    action: allow
";

// ---- the real OpenID Connect provider ----

#[test]
fn an_id_token_from_an_authorization_code_login_opens_a_psql_session_and_its_groups_meet_policy() {
    let Some(provider) = oidc::provider() else {
        return;
    };
    let db = target_with_table("oidc_alice");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .token("bob")
            .identity_yaml(&format!(
                "oidc:\n  - issuer: {}\n    audiences: [{}]\n    name_prefix: \"oidc:\"\n",
                provider.issuer,
                oidc::CLIENT
            ))
            .extra_yaml(DBA_RULES),
    );
    let id_token = provider.id_token("alice");
    let claims = oidc::claims_of(&id_token);
    assert_eq!(claims["groups"], json!(["dba", "dev"]), "{claims}");
    assert_eq!(claims["aud"], oidc::CLIENT, "an ID token is for the client");

    // Any user name will do: the identity comes from the token.
    let out = psql_with(
        &ward,
        "whoever",
        "orders",
        &id_token,
        "select count(*) from t",
    );
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");

    // Her group dba lets her delete; bob's service token has no groups, so he may not.
    let out = psql_with(
        &ward,
        "bob",
        "orders",
        &ward.token("bob"),
        "delete from t where i = 1",
    );
    assert!(!out.status.success(), "bob's delete went through");
    assert!(
        output_text(&out).contains("blocked by ward"),
        "{}",
        output_text(&out)
    );
    let out = psql_with(
        &ward,
        "alice",
        "orders",
        &id_token,
        "delete from t where i = 1",
    );
    assert!(
        out.status.success(),
        "alice's delete: {}",
        output_text(&out)
    );
    assert_eq!(
        Postgres::get().admin_sql(&db.database, "select count(*) from t"),
        "1"
    );

    // The audit names her IdP identity, her groups, and the user name she typed.
    let sessions = sessions_of(&ward, "oidc:alice");
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let starts = session_starts(&ward);
    let alice: Vec<&Value> = starts
        .iter()
        .filter(|s| s["identity"] == "oidc:alice")
        .collect();
    assert_eq!(alice.len(), 2);
    assert_eq!(alice[0]["groups"], json!(["dba", "dev"]));
    let credential = &alice[0]["credential"];
    assert_eq!(credential["source"], "oidc");
    assert_eq!(credential["issuer"], provider.issuer.as_str());
    assert_eq!(credential["subject"], "alice");
    assert_eq!(
        credential["expires_at"].as_i64(),
        claims["exp"].as_i64().map(|s| s * 1_000_000)
    );
    assert_eq!(attribute(credential, "pg_user"), Some("whoever"));
    assert_eq!(attribute(&alice[1]["credential"], "pg_user"), Some("alice"));
    let bob = starts.iter().find(|s| s["identity"] == "bob").unwrap();
    assert_eq!(bob["credential"]["source"], "token");
    assert_eq!(attribute(&bob["credential"], "pg_user"), None);
}

#[test]
fn a_client_credentials_token_is_accepted_as_a_workload_identity() {
    let Some(provider) = oidc::provider() else {
        return;
    };
    let db = target_with_table("oidc_machine");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .identity_yaml(&format!(
                "workload:\n  - issuer: {}\n    audiences: [urn:gateway]\n    \
                 identity: \"oauth:{{client_id}}\"\n    attributes: [jti]\n    groups: [services]\n",
                provider.issuer
            )),
    );
    let access = provider.client_credentials_token();
    let claims = oidc::claims_of(&access);
    assert_eq!(claims["aud"], "urn:gateway", "{claims}");
    let out = psql_with(&ward, "ci", "orders", &access, "select sum(i) from t");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3");
    let starts = session_starts(&ward);
    let start = starts
        .iter()
        .find(|s| s["identity"] == "oauth:gateway")
        .unwrap_or_else(|| panic!("no session of oauth:gateway in {starts:?}"));
    assert_eq!(start["groups"], json!(["services"]));
    let credential = &start["credential"];
    assert_eq!(credential["source"], "workload");
    assert_eq!(attribute(credential, "jti"), claims["jti"].as_str());
    assert_eq!(attribute(credential, "pg_user"), Some("ci"));

    // An ID token (audience: the client) is not for this gateway's workload audience.
    let rt = rt();
    let (code, message) = rt.block_on(refused_login(
        &ward,
        "ci",
        "orders",
        &provider.id_token("alice"),
    ));
    assert_eq!(code, "28P01", "{message}");
    assert!(
        message.contains("token refused") && message.contains("audience"),
        "{message}"
    );
    assert_eq!(refusal_event(&ward, "wrong_audience")["source"], "jwt");
}

// ---- refusals, with tokens minted in the test ----

#[test]
fn forged_misdirected_and_expired_tokens_are_refused_with_the_reason_and_audited() {
    let mint = MintIssuer::start();
    let db = target_with_table("oidc_refusals");
    let other = Postgres::get().create_target("oidc_other", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .target(Target::postgres("other", &other))
            .token("ci")
            .token_spec(TokenSpec::new("reports").targets(&["other"]))
            .identity_yaml(&mint.oidc_yaml("    clock_skew: 5s\n")),
    );
    // The issuer works: a good token logs in (else every refusal below would prove nothing).
    let out = psql_with(&ward, "x", "orders", &mint.token("carol"), "select 1");
    assert!(
        out.status.success(),
        "a good minted token: {}",
        output_text(&out)
    );

    let now = chrono::Utc::now().timestamp();
    let mut expired = mint.claims("carol");
    expired["iat"] = json!(now - 7200);
    expired["exp"] = json!(now - 3600);
    let mut early = mint.claims("carol");
    early["nbf"] = json!(now + 3600);
    let mut wrong_issuer = mint.claims("carol");
    wrong_issuer["iss"] = json!("https://idp.example.com/not-configured");
    let mut wrong_audience = mint.claims("carol");
    wrong_audience["aud"] = json!("some-other-app");
    let good = mint.claims("carol");

    // (token, expected code, words the client's message must contain)
    let cases: Vec<(String, &str, &[&str])> = vec![
        (
            oidc::unsigned_token(&good),
            "alg_none",
            &["\"none\"", "never accepted"],
        ),
        (
            oidc::hs256_with_public_key(&good),
            "alg_hmac",
            &["HS256", "never accepted"],
        ),
        (
            mint.sign(&wrong_issuer),
            "unknown_issuer",
            &["not-configured", "not configured"],
        ),
        (
            mint.sign(&wrong_audience),
            "wrong_audience",
            &["some-other-app", "audience"],
        ),
        (mint.sign(&expired), "expired", &["expired at"]),
        (mint.sign(&early), "not_yet_valid", &["not valid before"]),
        (
            mint.sign_with_unknown_kid(&good),
            "unknown_kid",
            &["unknown key id", "no-such-key"],
        ),
        (
            mint.sign_with_other_key(&good),
            "bad_signature",
            &["bad signature"],
        ),
    ];
    let rt = rt();
    for (token, code, words) in &cases {
        let (sqlstate, message) = rt.block_on(refused_login(&ward, "mallory", "orders", token));
        assert_eq!(sqlstate, "28P01", "{code}: {message}");
        assert!(
            message.starts_with("ward: token refused: "),
            "{code}: {message}"
        );
        for word in *words {
            assert!(message.contains(word), "{code}: {message:?} lacks {word:?}");
        }
        assert!(
            !message.contains(token.as_str()),
            "{code}: the message holds the token"
        );
        let event = refusal_event(&ward, code);
        assert_eq!(event["source"], "jwt", "{event}");
        assert_eq!(event["claimed_user"], "mallory");
        assert_eq!(event["target"], "orders");
        assert_eq!(event["protocol"], "postgres");
        assert!(
            event["peer"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{event}"
        );
        assert!(event["identity"].is_null(), "{event}");
        let reason = event["reason"].as_str().unwrap();
        assert!(
            !reason.is_empty() && !reason.contains(token.as_str()),
            "{event}"
        );
        let signature = token.rsplit('.').next().unwrap();
        assert!(
            signature.is_empty() || !reason.contains(signature),
            "{event}"
        );
    }

    // A service token limited to another target: the same generic refusal as before, but the
    // audit says precisely why.
    let (sqlstate, message) = rt.block_on(refused_login(
        &ward,
        "reports",
        "orders",
        &ward.token("reports"),
    ));
    assert_eq!(sqlstate, "28P01");
    assert_eq!(
        message,
        "ward: authentication failed for user \"reports\" on target \"orders\""
    );
    let event = refusal_event(&ward, "target_not_allowed");
    assert_eq!(
        (event["source"].as_str(), event["claimed_user"].as_str()),
        (Some("token"), Some("reports"))
    );

    // A wrong service token.
    let (sqlstate, message) = rt.block_on(refused_login(
        &ward,
        "ci",
        "orders",
        "ward_000000000000000000000000000000000000000000000000",
    ));
    assert_eq!(sqlstate, "28P01");
    assert_eq!(
        message,
        "ward: authentication failed for user \"ci\" on target \"orders\""
    );
    let event = refusal_event(&ward, "bad_token");
    assert_eq!(
        (event["source"].as_str(), event["claimed_user"].as_str()),
        (Some("token"), Some("ci"))
    );

    // A locked IdP identity: its valid token is refused, and the audit names the identity.
    ward.cli_ok(&["lock", "mint:carol", "--reason", "incident 7"]);
    let (sqlstate, message) = rt.block_on(refused_login(
        &ward,
        "anything",
        "orders",
        &mint.token("carol"),
    ));
    assert_eq!(sqlstate, "28000", "{message}");
    assert!(
        message.contains("\"mint:carol\" is locked: incident 7"),
        "{message}"
    );
    let event = refusal_event(&ward, "locked");
    assert_eq!(event["identity"], "mint:carol", "{event}");
    assert_eq!(event["claimed_user"], "anything");
    assert_eq!(event["source"], "jwt");

    // Static tokens keep working; other IdP identities too.
    assert_eq!(ward.psql_ok("ci", "orders", "select 40 + 2"), "42");
    let out = psql_with(&ward, "x", "orders", &mint.token("dave"), "select 1");
    assert!(out.status.success(), "{}", output_text(&out));

    // Every refusal is in the gateway chain, which still verifies.
    let (status, body) = ward.api("GET", "/api/v1/auth/refusals?limit=100", None);
    assert_eq!(status, 200, "{body}");
    let all: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        all["refusals"].as_array().unwrap().len(),
        cases.len() + 3,
        "{all}"
    );
    let verified = ward.cli(&["verify"]);
    assert!(
        verified.status.success(),
        "ward verify: {}",
        output_text(&verified)
    );
    assert!(
        output_text(&verified).contains("gateway"),
        "{}",
        output_text(&verified)
    );
}

#[test]
fn refused_logins_are_answered_at_once_even_when_the_audit_queue_is_full() {
    let mint = MintIssuer::start();
    let db = target_with_table("oidc_flood");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .token("ci")
            .identity_yaml(&mint.oidc_yaml(""))
            // A tiny queue that a stuck writer leaves full.
            .extra_yaml("audit: { mode: buffered, queue: 4 }"),
    );
    // Another process holds the store's write lock: the writer cannot commit, and the
    // queue fills with the first refusals.
    let store =
        rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    store.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let rt = rt();
    let bad = oidc::unsigned_token(&mint.claims("eve"));
    rt.block_on(async {
        let mut attempts = Vec::new();
        for _ in 0..64 {
            let ward = &ward;
            let bad = bad.clone();
            attempts.push(async move { refused_login(ward, "eve", "orders", &bad).await });
        }
        // Each is refused with its reason; none waits for the audit (a wait would leave
        // the connection without an answer until the startup timeout).
        for (code, message) in futures_util::future::join_all(attempts).await {
            assert_eq!(code, "28P01", "{message}");
            assert!(message.contains("never accepted"), "{message}");
        }
    });
    harness::wait_for(
        || ward.log().contains("refused logins are not being recorded"),
        "ward to log that refusals were dropped",
    );
    store.execute_batch("ROLLBACK").unwrap();
    // Once the store is writable again, sessions work and the queued refusals land.
    assert_eq!(ward.psql_ok("ci", "orders", "select count(*) from t"), "2");
    refusal_event(&ward, "alg_none");
}

// ---- token lifetime ----

/// Claims for `user` that expire `secs` seconds from now.
fn short_lived(mint: &MintIssuer, user: &str, secs: i64) -> (Value, i64) {
    let mut claims = mint.claims(user);
    let exp = chrono::Utc::now().timestamp() + secs;
    claims["exp"] = json!(exp);
    (claims, exp)
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn on_expiry_end_ends_the_session_when_its_token_expires() {
    let mint = MintIssuer::start();
    let db = target_with_table("oidc_expiry_end");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .identity_yaml(&mint.oidc_yaml("    clock_skew: 1s\n")),
    );
    let (claims, exp) = short_lived(&mint, "erin", 4);
    let token = mint.sign(&claims);
    let rt = rt();
    let (messages, ended_at) = rt.block_on(async {
        let mut s = pgwire::logged_in(ward.pg_addr(), "erin", "orders", &token).await;
        let answer = pgwire::simple_query(&mut s, "select 1").await;
        assert!(
            answer.iter().all(|m| !m.is_error()),
            "{}",
            pgwire::show(&answer)
        );
        // Nothing is sent from here on: ward ends the session by itself.
        let (messages, ending) = pgwire::read_until_end(&mut s, Duration::from_secs(20)).await;
        assert!(
            ending.closed(),
            "the session was not ended: {}",
            pgwire::show(&messages)
        );
        (messages, unix_now())
    });
    assert!(
        ended_at >= exp as f64,
        "the session ended {:.1}s before the token expired",
        exp as f64 - ended_at
    );
    let error: &Message = messages
        .iter()
        .find(|m| m.is_error())
        .unwrap_or_else(|| panic!("no error before the close: {}", pgwire::show(&messages)));
    assert_eq!(error.sqlstate(), "28000");
    assert_eq!(error.fields().get(&'S').map(String::as_str), Some("FATAL"));
    let text = error.text();
    let at = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        text.starts_with("ward: the token behind session ")
            && text.ends_with(&format!("expired at {at}; reconnect with a fresh token")),
        "{text}"
    );
    assert_eq!(
        end_reason(&ward, "mint:erin"),
        format!("token expired at {at}")
    );
    // The session id in the message is the recorded one.
    let id = sessions_of(&ward, "mint:erin")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(text.contains(&id), "{text} does not name session {id}");
}

/// Parse + Bind + Execute + Sync of `sql` (unnamed statement and portal, no parameters).
fn extended_query(sql: &str) -> Vec<u8> {
    let mut parse = Vec::new();
    parse.push(0);
    parse.extend_from_slice(sql.as_bytes());
    parse.push(0);
    parse.extend_from_slice(&0i16.to_be_bytes());
    let mut bind = vec![0, 0];
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&0i16.to_be_bytes());
    let mut execute = vec![0];
    execute.extend_from_slice(&0i32.to_be_bytes());
    let mut out = pgwire::message(b'P', &parse);
    out.extend(pgwire::message(b'B', &bind));
    out.extend(pgwire::message(b'E', &execute));
    out.extend(pgwire::message(b'S', &[]));
    out
}

/// Reads messages up to ReadyForQuery.
async fn until_ready<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Vec<Message> {
    let mut messages = Vec::new();
    loop {
        let m = pgwire::read_message(s, Duration::from_secs(10))
            .await
            .unwrap_or_else(|e| panic!("{e} after {}", pgwire::show(&messages)))
            .unwrap_or_else(|| panic!("closed after {}", pgwire::show(&messages)));
        let done = m.tag == b'Z';
        messages.push(m);
        if done {
            return messages;
        }
    }
}

#[test]
fn on_expiry_refuse_refuses_each_statement_but_keeps_the_connection() {
    let mint = MintIssuer::start();
    let db = target_with_table("oidc_expiry_refuse");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .identity_yaml(&mint.oidc_yaml("    clock_skew: 1s\n"))
            .identity_yaml("on_expiry: refuse"),
    );
    let (claims, exp) = short_lived(&mint, "frank", 4);
    let token = mint.sign(&claims);
    let at = chrono::DateTime::from_timestamp(exp, 0)
        .unwrap()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let rt = rt();
    rt.block_on(async {
        let mut s = pgwire::logged_in(ward.pg_addr(), "frank", "orders", &token).await;
        let answer = pgwire::simple_query(&mut s, "begin; insert into t values (3)").await;
        assert!(
            answer.iter().all(|m| !m.is_error()),
            "{}",
            pgwire::show(&answer)
        );
        // Wait for the token to expire (the only wait on the clock in this test).
        let left = exp as f64 + 0.5 - unix_now();
        if left > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(left)).await;
        }
        let refused = |messages: &[Message], what: &str| {
            let error = messages
                .iter()
                .find(|m| m.is_error())
                .unwrap_or_else(|| panic!("{what} was not refused: {}", pgwire::show(messages)));
            assert_eq!(error.sqlstate(), "28000", "{what}");
            assert_eq!(error.fields().get(&'S').map(String::as_str), Some("ERROR"));
            let text = error.text();
            assert!(
                text.starts_with("ward: the token behind session ")
                    && text.ends_with(&format!("expired at {at}; reconnect with a fresh token")),
                "{what}: {text}"
            );
            assert!(
                !error.fields().contains_key(&'W'),
                "{what}: the PL/pgSQL context leaked: {:?}",
                error.fields()
            );
            // No row, no command tag: the statement never ran.
            assert!(
                messages.iter().all(|m| m.tag != b'D' && m.tag != b'C'),
                "{what}: {}",
                pgwire::show(messages)
            );
            messages.last().unwrap().body.clone()
        };
        // Inside the open transaction: refused, and the transaction is now failed, so a
        // COMMIT cannot commit the insert around the refusal.
        let status = refused(
            &pgwire::simple_query(&mut s, "insert into t values (4)").await,
            "insert",
        );
        assert_eq!(status, b"E", "transaction status after the refusal");
        // ROLLBACK still goes through, so the transaction can be ended.
        let answer = pgwire::simple_query(&mut s, "rollback").await;
        assert!(
            answer.iter().all(|m| !m.is_error()),
            "{}",
            pgwire::show(&answer)
        );
        assert_eq!(answer.last().unwrap().body, b"I");
        pgwire::send(&mut s, &extended_query("select count(*) from t")).await;
        let status = refused(&until_ready(&mut s).await, "an extended-protocol select");
        assert_eq!(status, b"I");
        let status = refused(&pgwire::simple_query(&mut s, "select 1").await, "select");
        assert_eq!(status, b"I");
        pgwire::send(&mut s, &pgwire::terminate()).await;
    });
    // Nothing of the transaction reached the table.
    assert_eq!(
        Postgres::get().admin_sql(&db.database, "select count(*) from t"),
        "2"
    );
    let reason = end_reason(&ward, "mint:frank");
    assert_eq!(
        reason,
        format!(
            "client closed the session; the token expired at {at} during the session and 3 \
             statements were refused after it"
        )
    );
    let id = sessions_of(&ward, "mint:frank")[0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, body) = ward.api("GET", &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(status, 200, "{body}");
    let detail: Value = serde_json::from_str(&body).unwrap();
    let decisions: Vec<&str> = detail["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|st| st["decision"].as_str())
        .collect();
    assert_eq!(decisions, ["token_expired"; 3], "{detail}");
}

#[test]
fn sessions_of_tokens_that_outlive_them_are_left_alone() {
    // A long-lived IdP token and a long-lived service token (no expiry at all): nothing is
    // refused or ended.
    let mint = MintIssuer::start();
    let db = target_with_table("oidc_no_expiry");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders", &db))
            .token_spec(TokenSpec::new("ci").long_lived())
            .identity_yaml(&mint.oidc_yaml(""))
            .identity_yaml("on_expiry: refuse"),
    );
    let rt = rt();
    rt.block_on(async {
        let mut s = pgwire::logged_in(ward.pg_addr(), "x", "orders", &mint.token("gina")).await;
        for _ in 0..3 {
            let answer = pgwire::simple_query(&mut s, "select count(*) from t").await;
            assert!(
                answer.iter().all(|m| !m.is_error()),
                "{}",
                pgwire::show(&answer)
            );
        }
        pgwire::send(&mut s, &pgwire::terminate()).await;
    });
    assert_eq!(end_reason(&ward, "mint:gina"), "client closed the session");
    let started = Instant::now();
    assert_eq!(ward.psql_ok("ci", "orders", "select 1"), "1");
    assert!(started.elapsed() < Duration::from_secs(30));
    assert_eq!(end_reason(&ward, "ci"), "client closed the session");
}
