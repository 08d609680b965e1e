//! Ways into the PostgreSQL gateway that must stay shut, and the login paths that must work.
//!
//! Real clients (psql, tokio-postgres) against a real `ward serve` and the harness's real
//! PostgreSQL; raw sockets (`pgwire`) where a real client cannot send the input or where
//! every byte ward sends back matters.

mod harness;

use harness::{output_text, rt};
mod pgwire;

use harness::{AuthMethod, Postgres, Target, TargetTls, TokenSpec, Ward, WardOptions};
use pgwire::Message;
use serde_json::Value;
use std::process::Output;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

// ---- helpers ----

/// psql with a full conninfo and `-At -c SQL`.
fn psql_at(ward: &Ward, conninfo: &str, sql: &str) -> Output {
    // -w: never prompt for a password (an empty one would otherwise make psql ask).
    ward.psql_args(conninfo, &["-w", "-At", "-c", sql])
}

/// A fresh psql session through ward works.
fn assert_good_client_works(ward: &Ward, identity: &str, target: &str) {
    assert_eq!(
        ward.psql_ok(identity, target, "select 40 + 2"),
        "42",
        "a good client after the refusals"
    );
}

/// The audit's sessions of `identity` (newest first), as the admin API returns them.
fn audit_sessions(ward: &Ward, identity: &str) -> Vec<Value> {
    let (status, body) = ward.api(
        "GET",
        &format!("/api/v1/sessions?identity={identity}&limit=1000"),
        None,
    );
    assert_eq!(status, 200, "list sessions: {body}");
    let v: Value = serde_json::from_str(&body).expect("sessions JSON");
    v["sessions"].as_array().cloned().unwrap_or_default()
}

/// The audit's detail of one session (raw JSON text).
fn audit_session_detail(ward: &Ward, id: &str) -> String {
    let (status, body) = ward.api("GET", &format!("/api/v1/sessions/{id}"), None);
    assert_eq!(status, 200, "show session {id}: {body}");
    body
}

/// Severity, SQLSTATE, message, detail and hint of a refused tokio-postgres connection.
async fn refusal(ward: &Ward, config: tokio_postgres::Config) -> [String; 5] {
    let err = match ward.try_client(config).await {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e,
    };
    let db = err
        .as_db_error()
        .unwrap_or_else(|| panic!("not an error from the server: {err:?}"));
    [
        db.severity().to_string(),
        db.code().code().to_string(),
        db.message().to_string(),
        db.detail().unwrap_or_default().to_string(),
        db.hint().unwrap_or_default().to_string(),
    ]
}

fn config_with_password(
    ward: &Ward,
    identity: &str,
    target: &str,
    password: &str,
) -> tokio_postgres::Config {
    // pg_config wants an identity that has a token; user and password are replaced.
    let mut c = ward.pg_config(&ward.tokens()[0].identity, target);
    c.user(identity).password(password);
    c
}

/// A raw login attempt over TLS: every message ward sends and how the connection ended,
/// with `names` replaced by placeholders so attempts with different names compare.
async fn raw_refusal(
    ward: &Ward,
    identity: &str,
    target: &str,
    token: &str,
    names: &[(&str, &str)],
) -> Vec<String> {
    let mut s = pgwire::tls_connect(ward.pg_addr()).await;
    let (messages, ending) = pgwire::login(&mut s, identity, target, token).await;
    let ending = ending.unwrap_or_else(|| {
        panic!(
            "login as {identity} on {target} succeeded\n{}",
            pgwire::show(&messages)
        )
    });
    assert!(ending.closed(), "ward kept the refused connection open");
    let normalise = |s: &str| {
        names
            .iter()
            .fold(s.to_string(), |acc, (name, placeholder)| {
                acc.replace(name, placeholder)
            })
    };
    messages
        .iter()
        .map(|m: &Message| {
            if m.is_error() {
                format!("E {}", normalise(&format!("{:?}", m.fields())))
            } else {
                format!("{} {:?}", m.tag as char, m.body)
            }
        })
        .chain(std::iter::once("closed".to_string()))
        .collect()
}

// ---- upstream authentication ----

const METHODS: [AuthMethod; 3] = [
    AuthMethod::ScramSha256,
    AuthMethod::Md5,
    AuthMethod::Password,
];

#[test]
fn ward_logs_in_to_scram_md5_and_cleartext_targets_with_the_stored_credential() {
    let pg = Postgres::get();
    let mut options = WardOptions::new().token("ci");
    let mut targets = Vec::new();
    for method in METHODS {
        let t = pg.create_target(&format!("auth_{}", method.hba_name()), method);
        let name = format!("db-{}", method.hba_name());
        options = options.target(Target::postgres(&name, &t));
        targets.push((name, t));
    }
    let ward = Ward::start(options);
    for (name, t) in &targets {
        assert_eq!(
            ward.psql_ok(
                "ci",
                name,
                "select current_user || '@' || current_database()"
            ),
            format!("{}@{}", t.user, t.database),
            "{:?}",
            t.method
        );
        // The target itself says which method authenticated ward's login.
        let needle = format!("identity=\"{}\" method={}", t.user, t.method.hba_name());
        harness::wait_for(
            || pg.log().contains(&needle),
            &format!("`{needle}` in the PostgreSQL log"),
        );
    }
}

#[test]
fn the_target_password_never_reaches_the_client_the_log_or_the_audit() {
    let pg = Postgres::get();
    let mut options = WardOptions::new()
        .token("ci")
        // Debug logging: the more ward says, the more chance a leak shows.
        .env("RUST_LOG", "debug");
    let mut secrets = Vec::new();
    let mut good_targets = Vec::new();
    for method in METHODS {
        let t = pg.create_target(&format!("leak_{}", method.hba_name()), method);
        let name = format!("db-{}", method.hba_name());
        options = options.target(Target::postgres(&name, &t));
        secrets.push(t.password.clone());
        good_targets.push(name);
    }
    // A target whose stored password is wrong: the target rejects ward's login.
    let rejecting = pg.create_target("leak_rejecting", AuthMethod::ScramSha256);
    let wrong_password = format!("WrongStoredSecret{}", harness::random_string(20));
    secrets.push(wrong_password.clone());
    secrets.push(rejecting.password.clone());
    options = options
        .target(Target::postgres("db-rejecting", &rejecting).password(Some(&wrong_password)));
    let ward = Ward::start(options);

    let mut client_saw = String::new();
    for name in &good_targets {
        let conninfo = ward.conninfo("ci", name);
        for args in [
            &["-c", "\\conninfo"][..],
            &["-At", "-c", "show all"][..],
            &[
                "-At",
                "-c",
                "select current_user, session_user, current_setting('application_name')",
            ][..],
        ] {
            let out = ward.psql_args(&conninfo, args);
            assert!(out.status.success(), "{}", harness::describe(&out));
            client_saw.push_str(&output_text(&out));
        }
        // An error inside a session.
        let out = ward.psql_args(&conninfo, &["-At", "-c", "select * from no_such_table"]);
        assert!(!out.status.success(), "{}", harness::describe(&out));
        client_saw.push_str(&output_text(&out));
    }
    let refused = psql_at(&ward, &ward.conninfo("ci", "db-rejecting"), "select 1");
    assert!(!refused.status.success(), "{}", harness::describe(&refused));
    let refused_text = output_text(&refused);
    assert!(
        refused_text.contains("FATAL")
            && refused_text.contains("target \"db-rejecting\" refused ward's login"),
        "{refused_text}"
    );
    client_saw.push_str(&refused_text);

    // Every byte a client receives during login and a query (ParameterStatus included).
    let raw = rt().block_on(async {
        let mut all = Vec::new();
        for name in &good_targets {
            let mut s = pgwire::tls_connect(ward.pg_addr()).await;
            let (messages, ending) = pgwire::login(&mut s, "ci", name, &ward.token("ci")).await;
            assert!(ending.is_none(), "{}", pgwire::show(&messages));
            let q = pgwire::simple_query(&mut s, "select 1").await;
            for m in messages.iter().chain(&q) {
                all.push(m.tag);
                all.extend_from_slice(&m.body);
            }
        }
        let mut s = pgwire::tls_connect(ward.pg_addr()).await;
        let (messages, _) = pgwire::login(&mut s, "ci", "db-rejecting", &ward.token("ci")).await;
        for m in &messages {
            all.extend_from_slice(&m.body);
        }
        all
    });

    let sessions = harness::wait_until(
        || {
            let s = audit_sessions(&ward, "ci");
            // Per good target: four psql sessions and one raw one.
            (s.len() >= 5 * good_targets.len()).then_some(s)
        },
        "the audited sessions",
    );
    let mut audit = serde_json::to_string(&sessions).unwrap();
    for s in &sessions {
        audit.push_str(&audit_session_detail(&ward, s["id"].as_str().unwrap()));
    }
    let log = ward.log();
    assert!(
        log.contains("rejected the login"),
        "the log should say why db-rejecting failed:\n{log}"
    );

    for secret in &secrets {
        assert!(
            !client_saw.contains(secret.as_str()),
            "psql output contains a target password:\n{client_saw}"
        );
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "the bytes sent to a client contain a target password"
        );
        assert!(
            !log.contains(secret.as_str()),
            "ward's log contains a target password"
        );
        assert!(
            !audit.contains(secret.as_str()),
            "the audit contains a target password"
        );
    }
}

// ---- TLS towards targets ----

const SSL_SQL: &str = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";

#[test]
fn target_tls_verify_full_with_the_harness_ca_and_require_both_encrypt_the_backend() {
    let pg = Postgres::get();
    let t = pg.create_target("target_tls", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("by-ip", &t).tls(TargetTls::verify_harness_ca(None)))
            .target(
                Target::postgres("by-name", &t)
                    .tls(TargetTls::verify_harness_ca(Some("localhost"))),
            )
            .target(Target::postgres("encrypt-only", &t).tls(TargetTls::Require))
            .target(Target::postgres("plain", &t))
            .token("ci"),
    );
    for target in ["by-ip", "by-name", "encrypt-only"] {
        assert_eq!(ward.psql_ok("ci", target, SSL_SQL), "t", "{target}");
    }
    // Control: the same check sees an unencrypted backend as such.
    assert_eq!(ward.psql_ok("ci", "plain", SSL_SQL), "f");

    // Seen from the target's side while a verify-full session is open.
    rt().block_on(async {
        let (client, conn) = ward.client("ci", "by-name").await;
        let backend_pid: i32 = client
            .query_one("select pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        let seen = pg.admin_sql(
            "postgres",
            &format!(
                "select s.ssl || ' ' || a.usename from pg_stat_ssl s join pg_stat_activity a using (pid) where pid = {backend_pid}"
            ),
        );
        assert_eq!(seen, format!("true {}", t.user));
        drop(client);
        let _ = conn.await;
    });
}

#[test]
fn target_tls_verify_full_refuses_a_certificate_for_another_name_with_08006() {
    let pg = Postgres::get();
    let t = pg.create_target("target_tls_name", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(
                Target::postgres("wrong-name", &t).tls(TargetTls::verify_harness_ca(Some(
                    "db.not-in-the-cert.example",
                ))),
            )
            .target(Target::postgres("right-name", &t).tls(TargetTls::verify_harness_ca(None)))
            .token("ci"),
    );
    let out = ward.psql("ci", "wrong-name", "select 1");
    assert!(!out.status.success(), "{}", harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL") && stderr.contains("target \"wrong-name\""),
        "{stderr}"
    );
    let [severity, code, message, ..] =
        rt().block_on(refusal(&ward, ward.pg_config("ci", "wrong-name")));
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "08006"),
        "{message}"
    );
    assert!(
        message.starts_with("ward: target \"wrong-name\" is unavailable"),
        "{message}"
    );
    // No session was opened on the target with the unverified certificate.
    assert_eq!(
        pg.admin_sql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where usename = '{}'",
                t.user
            )
        ),
        "0"
    );
    assert_eq!(ward.psql_ok("ci", "right-name", SSL_SQL), "t");
}

// ---- TLS towards clients ----

#[test]
fn plaintext_clients_are_refused_with_08p01_and_told_to_use_sslmode_require() {
    let pg = Postgres::get();
    let t = pg.create_target("plaintext", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    let conninfo = ward.conninfo_with("ci", "db", &ward.token("ci"), "disable");
    let out = psql_at(&ward, &conninfo, "select 1");
    assert!(!out.status.success(), "{}", harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("sslmode=require"), "{stderr}");

    let mut config = ward.pg_config("ci", "db");
    config.ssl_mode(tokio_postgres::config::SslMode::Disable);
    let [severity, code, message, ..] = rt().block_on(refusal(&ward, config));
    assert_eq!((severity.as_str(), code.as_str()), ("FATAL", "08P01"));
    assert!(message.contains("sslmode=require"), "{message}");

    // On the wire: refused right after the StartupMessage, before asking for the token, so
    // a client that would send it never gets the chance to send it in clear.
    let (messages, ending) = rt().block_on(async {
        let mut tcp = pgwire::connect(ward.pg_addr()).await;
        pgwire::send(
            &mut tcp,
            &pgwire::startup_packet(&[("user", "ci"), ("database", "db")]),
        )
        .await;
        pgwire::read_until_end(&mut tcp, pgwire::IO_TIMEOUT).await
    });
    assert!(ending.closed(), "the plaintext connection was left open");
    assert_eq!(messages.len(), 1, "{}", pgwire::show(&messages));
    assert_eq!(messages[0].sqlstate(), "08P01", "{}", messages[0]);

    assert!(audit_sessions(&ward, "ci").is_empty());
    assert_good_client_works(&ward, "ci", "db");
}

#[test]
fn allow_plaintext_accepts_plaintext_clients_and_the_audit_says_so() {
    let pg = Postgres::get();
    let t = pg.create_target("allow_plain", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci")
            .allow_plaintext(true),
    );
    let conninfo = ward.conninfo_with("ci", "db", &ward.token("ci"), "disable");
    let out = harness::expect_success(
        psql_at(&ward, &conninfo, "select 'plain'"),
        "sslmode=disable",
    );
    assert_eq!(out, "plain");
    let sessions = harness::wait_until(
        || {
            let s = audit_sessions(&ward, "ci");
            (!s.is_empty()).then_some(s)
        },
        "the plaintext session in the audit",
    );
    assert_eq!(sessions[0]["tls_version"], "none", "{}", sessions[0]);
}

#[test]
fn psql_verify_full_trusts_wards_generated_certificate_and_the_audit_records_tls13() {
    let pg = Postgres::get();
    let t = pg.create_target("client_verify", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    let cert = ward.data_dir().join("tls").join("cert.pem");
    assert!(cert.exists(), "{} was not generated", cert.display());
    let root = harness::conninfo_quote(&cert.to_string_lossy());
    let base = ward.conninfo_with("ci", "db", &ward.token("ci"), "verify-full");
    for host in ["host=localhost", "host=127.0.0.1"] {
        let conninfo = format!(
            "{} sslrootcert={root}",
            base.replacen("host=127.0.0.1", host, 1)
        );
        let out = psql_at(&ward, &conninfo, "select 'verified'");
        assert_eq!(harness::expect_success(out, host), "verified");
    }
    // Control: verify-full really checks the name (a name not in ward's certificate fails).
    let wrong = format!(
        "{} hostaddr=127.0.0.1 sslrootcert={root}",
        base.replacen("host=127.0.0.1", "host=not-ward.example", 1)
    );
    let out = psql_at(&ward, &wrong, "select 1");
    assert!(!out.status.success(), "{}", harness::describe(&out));

    let sessions = harness::wait_until(
        || {
            let s = audit_sessions(&ward, "ci");
            (s.len() >= 2).then_some(s)
        },
        "both verified sessions in the audit",
    );
    for s in &sessions {
        assert_eq!(s["tls_version"], "TLSv1.3", "{s}");
    }
}

#[test]
fn gssenc_request_is_answered_n_and_tls_negotiation_continues_on_the_same_socket() {
    let pg = Postgres::get();
    let t = pg.create_target("gssenc", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    let token = ward.token("ci");
    rt().block_on(async {
        use tokio::io::AsyncReadExt;
        let mut tcp = pgwire::connect(ward.pg_addr()).await;
        pgwire::send(&mut tcp, &pgwire::request_packet(pgwire::GSSENC_REQUEST)).await;
        assert_eq!(pgwire::read_byte(&mut tcp).await, b'N');
        // Exactly one byte: nothing else follows the 'N'.
        let mut extra = [0u8; 16];
        let more = tokio::time::timeout(Duration::from_millis(300), tcp.read(&mut extra)).await;
        assert!(more.is_err(), "ward sent more than the 'N': {more:?}");
        // SSLRequest on the same socket, then a full login and a query over that TLS.
        let mut tls = pgwire::start_tls(tcp).await;
        let (messages, ending) = pgwire::login(&mut tls, "ci", "db", &token).await;
        assert!(ending.is_none(), "{}", pgwire::show(&messages));
        let rows = pgwire::simple_query(&mut tls, "select 'after gssenc'").await;
        assert_eq!(
            pgwire::first_column(&rows),
            vec![Some("after gssenc".to_string())]
        );
        pgwire::send(&mut tls, &pgwire::terminate()).await;
    });
    let sessions = harness::wait_until(
        || {
            let s = audit_sessions(&ward, "ci");
            (!s.is_empty()).then_some(s)
        },
        "the session in the audit",
    );
    assert_eq!(sessions[0]["tls_version"], "TLSv1.3");
}

#[test]
fn psql_with_gssencmode_prefer_connects() {
    // libpq only sends GSSENCRequest when it finds Kerberos credentials; the raw-socket test
    // above is the one that exercises ward's 'N'. This checks the option does no harm.
    let pg = Postgres::get();
    let t = pg.create_target("gssenc_psql", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    let conninfo = format!("{} gssencmode=prefer", ward.conninfo("ci", "db"));
    let out = psql_at(&ward, &conninfo, "select 'connected'");
    assert_eq!(
        harness::expect_success(out, "gssencmode=prefer"),
        "connected"
    );
}

// ---- client authentication ----

/// Asserts a refusal is the documented 28P01 for `identity` on `target`.
fn assert_auth_failed(refusal: &[String; 5], identity: &str, target: &str) {
    let [severity, code, message, ..] = refusal;
    assert_eq!(
        (severity.as_str(), code.as_str()),
        ("FATAL", "28P01"),
        "{message}"
    );
    assert_eq!(
        message,
        &format!("ward: authentication failed for user \"{identity}\" on target \"{target}\"")
    );
}

#[test]
fn a_wrong_token_is_refused_with_28p01() {
    let pg = Postgres::get();
    let t = pg.create_target("bad_token", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    for wrong in [
        "ward_not_the_token".to_string(),
        String::new(),
        format!("{}x", ward.token("ci")),
        ward.tokens()[0].hash.clone(),
    ] {
        let r = rt().block_on(refusal(
            &ward,
            config_with_password(&ward, "ci", "db", &wrong),
        ));
        assert_auth_failed(&r, "ci", "db");
        let out = psql_at(
            &ward,
            &ward.conninfo_with("ci", "db", &wrong, "require"),
            "select 1",
        );
        assert!(!out.status.success(), "{}", harness::describe(&out));
        assert_good_client_works(&ward, "ci", "db");
    }
    // The audit is written in batches: wait for the four good sessions to land, then check
    // that nothing else did.
    harness::wait_for(
        || audit_sessions(&ward, "ci").len() >= 4,
        "the four good sessions in the audit",
    );
    assert_eq!(
        audit_sessions(&ward, "ci").len(),
        4,
        "only the good sessions are audited"
    );
}

#[test]
fn an_unknown_target_is_indistinguishable_from_a_target_the_token_may_not_use() {
    let pg = Postgres::get();
    let t = pg.create_target("probe", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("allowed-db", &t))
            .target(Target::postgres("forbidden-db", &t))
            .token_spec(TokenSpec::new("alice").targets(&["allowed-db"])),
    );
    let token = ward.token("alice");
    let names = [("forbidden-db", "<target>"), ("missing-db", "<target>")];
    let (forbidden, missing, forbidden_raw, missing_raw) = rt().block_on(async {
        (
            refusal(
                &ward,
                config_with_password(&ward, "alice", "forbidden-db", &token),
            )
            .await,
            refusal(
                &ward,
                config_with_password(&ward, "alice", "missing-db", &token),
            )
            .await,
            raw_refusal(&ward, "alice", "forbidden-db", &token, &names).await,
            raw_refusal(&ward, "alice", "missing-db", &token, &names).await,
        )
    });
    assert_auth_failed(&forbidden, "alice", "forbidden-db");
    assert_auth_failed(&missing, "alice", "missing-db");
    let normalise = |r: &[String; 5]| -> Vec<String> {
        r.iter()
            .map(|f| {
                names
                    .iter()
                    .fold(f.clone(), |acc, (n, p)| acc.replace(n, p))
            })
            .collect()
    };
    assert_eq!(normalise(&forbidden), normalise(&missing));
    // Byte for byte the same exchange (password asked for in both cases), names aside.
    assert_eq!(forbidden_raw, missing_raw);
    assert!(forbidden_raw.len() >= 3, "{forbidden_raw:?}");

    // psql's view of both, names normalised.
    let psql_err = |target: &str| {
        let out = psql_at(&ward, &ward.conninfo("alice", target), "select 1");
        assert!(!out.status.success());
        names.iter().fold(
            String::from_utf8_lossy(&out.stderr).into_owned(),
            |acc, (n, p)| acc.replace(n, p),
        )
    };
    assert_eq!(psql_err("forbidden-db"), psql_err("missing-db"));
    // A wrong token on an existing target looks the same too.
    let wrong = rt().block_on(refusal(
        &ward,
        config_with_password(&ward, "alice", "forbidden-db", "ward_wrong"),
    ));
    assert_eq!(normalise(&wrong), normalise(&forbidden));

    assert_good_client_works(&ward, "alice", "allowed-db");
}

#[test]
fn an_expired_token_is_refused_with_28p01() {
    let pg = Postgres::get();
    let t = pg.create_target("expired", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token_spec(TokenSpec::new("old").expires_at("2020-01-01T00:00:00Z"))
            .token_spec(TokenSpec::new("current").expires_in("1d")),
    );
    let r = rt().block_on(refusal(&ward, ward.pg_config("old", "db")));
    assert_auth_failed(&r, "old", "db");
    let out = ward.psql("old", "db", "select 1");
    assert!(!out.status.success(), "{}", harness::describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));
    assert!(audit_sessions(&ward, "old").is_empty());
    assert_good_client_works(&ward, "current", "db");
}

#[test]
fn a_token_works_only_for_the_identity_it_was_issued_to() {
    let pg = Postgres::get();
    let t = pg.create_target("cross_identity", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("alice")
            .token("bob"),
    );
    let alices = ward.token("alice");
    for user in ["bob", "mallory", "ALICE", "alice "] {
        let r = rt().block_on(refusal(
            &ward,
            config_with_password(&ward, user, "db", &alices),
        ));
        assert_auth_failed(&r, user, "db");
    }
    assert!(audit_sessions(&ward, "bob").is_empty());
    assert_good_client_works(&ward, "alice", "db");
    assert_good_client_works(&ward, "bob", "db");
}

// ---- concurrency ----

#[test]
fn twenty_concurrent_sessions_succeed_while_bad_clients_hammer_the_listener() {
    const SESSIONS: usize = 20;
    let pg = Postgres::get();
    let t = pg.create_target("concurrent", AuthMethod::ScramSha256);
    let mut ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("good")
            .token("other"),
    );
    let stop = AtomicBool::new(false);
    let bad_attempts = AtomicUsize::new(0);
    let barrier = tokio::sync::Barrier::new(SESSIONS);

    let good_session = |i: usize| {
        let (ward, barrier) = (&ward, &barrier);
        async move {
            let connected = ward.try_client(ward.pg_config("good", "db")).await;
            barrier.wait().await; // all sessions are open at the same time
            let (client, conn) = connected.map_err(|e| format!("session {i}: connect: {e}"))?;
            for n in 0..25i64 {
                let v = (i as i64) * 1000 + n;
                let row = client
                    .query_one("select $1::int8 * 2, pg_backend_pid()", &[&v])
                    .await
                    .map_err(|e| format!("session {i} query {n}: {e}"))?;
                if row.get::<_, i64>(0) != v * 2 {
                    return Err(format!("session {i}: wrong answer"));
                }
            }
            let rows = client
                .simple_query("select count(*) from generate_series(1, 5000)")
                .await
                .map_err(|e| format!("session {i} simple query: {e}"))?;
            let count = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            });
            if count.as_deref() != Some("5000") {
                return Err(format!("session {i}: count {count:?}"));
            }
            drop(client);
            let _ = conn.await;
            Ok::<(), String>(())
        }
    };

    let hammer = |k: usize| {
        let (ward, stop, bad_attempts) = (&ward, &stop, &bad_attempts);
        async move {
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                bad_attempts.fetch_add(1, Ordering::Relaxed);
                match (k + n) % 4 {
                    0 => {
                        let r =
                            refusal(ward, config_with_password(ward, "good", "db", "ward_guess"))
                                .await;
                        assert_eq!(r[1], "28P01", "{r:?}");
                    }
                    1 => {
                        // Another identity's valid token under the good identity's name.
                        let r = refusal(
                            ward,
                            config_with_password(ward, "good", "db", &ward.token("other")),
                        )
                        .await;
                        assert_eq!(r[1], "28P01", "{r:?}");
                    }
                    2 => {
                        use tokio::io::AsyncWriteExt;
                        let mut tcp = pgwire::connect(ward.pg_addr()).await;
                        let _ = pgwire::try_send(&mut tcp, &pgwire::random_bytes(200)).await;
                        let _ = tcp.shutdown().await;
                        let (_, ending) = pgwire::drain_bytes(&mut tcp, pgwire::IO_TIMEOUT).await;
                        assert!(ending.closed(), "garbage connection left open");
                    }
                    _ => {
                        let mut tcp = pgwire::connect(ward.pg_addr()).await;
                        pgwire::send(
                            &mut tcp,
                            &pgwire::startup_packet(&[("user", "good"), ("database", "db")]),
                        )
                        .await;
                        let (messages, ending) =
                            pgwire::read_until_end(&mut tcp, pgwire::IO_TIMEOUT).await;
                        assert!(ending.closed(), "plaintext connection left open");
                        assert_eq!(
                            messages.first().map(Message::sqlstate).as_deref(),
                            Some("08P01")
                        );
                    }
                }
            }
        }
    };

    let results = rt().block_on(async {
        let good = async {
            let r = futures_util::future::join_all((0..SESSIONS).map(good_session)).await;
            stop.store(true, Ordering::Relaxed);
            r
        };
        let bad = futures_util::future::join_all((0..4).map(hammer));
        let (results, _) =
            tokio::time::timeout(Duration::from_secs(50), async { tokio::join!(good, bad) })
                .await
                .expect("the concurrent sessions did not finish within 50 s");
        results
    });
    let failures: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    assert!(failures.is_empty(), "good sessions failed: {failures:#?}");
    assert!(
        bad_attempts.load(Ordering::Relaxed) >= 4,
        "the bad clients never ran"
    );

    let sessions = harness::wait_until(
        || {
            let s = audit_sessions(&ward, "good");
            (s.len() == SESSIONS && s.iter().all(|s| !s["active"].as_bool().unwrap_or(true)))
                .then_some(s)
        },
        "20 ended sessions of `good` in the audit",
    );
    for s in &sessions {
        // 25 extended-protocol queries and one simple query, at least.
        assert!(s["statement_count"].as_u64().unwrap_or(0) >= 26, "{s}");
    }
    assert!(audit_sessions(&ward, "other").is_empty());
    assert!(ward.is_running());
    assert!(!ward.log().contains("panicked"));
    assert_good_client_works(&ward, "good", "db");
}

// ---- cancel requests ----

/// Sends a CancelRequest for `pid`/`secret` on a new connection (in clear, as libpq does, or
/// inside TLS) and checks that ward closes that connection without answering.
async fn send_cancel(addr: std::net::SocketAddr, pid: i32, secret: i32, tls: bool) {
    let mut packet = 16i32.to_be_bytes().to_vec();
    packet.extend_from_slice(&80877102i32.to_be_bytes());
    packet.extend_from_slice(&pid.to_be_bytes());
    packet.extend_from_slice(&secret.to_be_bytes());
    let (messages, ending) = if tls {
        let mut s = pgwire::tls_connect(addr).await;
        pgwire::send(&mut s, &packet).await;
        pgwire::read_until_end(&mut s, pgwire::IO_TIMEOUT).await
    } else {
        let mut s = pgwire::connect(addr).await;
        pgwire::send(&mut s, &packet).await;
        pgwire::read_until_end(&mut s, pgwire::IO_TIMEOUT).await
    };
    assert!(ending.closed(), "the cancel connection was left open");
    assert!(messages.is_empty(), "{}", pgwire::show(&messages));
}

#[test]
fn cancel_requests_need_the_ward_minted_key_and_never_see_the_targets() {
    let pg = Postgres::get();
    let t = pg.create_target("cancel", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db", &t))
            .token("ci"),
    );
    let token = ward.token("ci");
    rt().block_on(async {
        let addr = ward.pg_addr();
        let mut s = pgwire::tls_connect(addr).await;
        let (login, ending) = pgwire::login(&mut s, "ci", "db", &token).await;
        assert!(ending.is_none(), "{}", pgwire::show(&login));
        let key = login
            .iter()
            .find(|m| m.tag == b'K')
            .unwrap_or_else(|| panic!("no BackendKeyData\n{}", pgwire::show(&login)));
        let pid = i32::from_be_bytes(key.body[0..4].try_into().unwrap());
        let secret = i32::from_be_bytes(key.body[4..8].try_into().unwrap());
        let backend = pgwire::simple_query(&mut s, "select pg_backend_pid()").await;
        let backend_pid: i32 = pgwire::first_column(&backend)[0]
            .as_deref()
            .unwrap()
            .parse()
            .unwrap();
        assert_ne!(
            pid, backend_pid,
            "the client was given the target's process id"
        );

        // Wrong secrets (in clear and inside TLS) and a wrong pid cancel nothing.
        pgwire::send(&mut s, &pgwire::query("select pg_sleep(2)")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_cancel(addr, pid, secret ^ 1, false).await;
        send_cancel(addr, pid, secret.wrapping_add(1 << 16), true).await;
        send_cancel(addr, pid ^ 1, secret, false).await;
        send_cancel(addr, backend_pid, secret, false).await;
        let mut done = Vec::new();
        loop {
            let m = pgwire::read_message(&mut s, pgwire::IO_TIMEOUT)
                .await
                .expect("the sleep's result")
                .expect("connection open");
            let last = m.tag == b'Z';
            done.push(m);
            if last {
                break;
            }
        }
        assert!(
            !done.iter().any(Message::is_error),
            "a cancel with a wrong key cancelled the query\n{}",
            pgwire::show(&done)
        );

        // The right key cancels.
        pgwire::send(&mut s, &pgwire::query("select pg_sleep(30)")).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        send_cancel(addr, pid, secret, false).await;
        let mut cancelled = Vec::new();
        loop {
            let m = pgwire::read_message(&mut s, pgwire::IO_TIMEOUT)
                .await
                .expect("the cancelled query's answer")
                .expect("connection open");
            let last = m.tag == b'Z';
            cancelled.push(m);
            if last {
                break;
            }
        }
        let error = cancelled
            .iter()
            .find(|m| m.is_error())
            .unwrap_or_else(|| panic!("not cancelled\n{}", pgwire::show(&cancelled)));
        assert_eq!(error.sqlstate(), "57014", "{error}");
        // The session goes on.
        let rows = pgwire::simple_query(&mut s, "select 'still here'").await;
        assert_eq!(
            pgwire::first_column(&rows),
            vec![Some("still here".to_string())]
        );
    });
}
