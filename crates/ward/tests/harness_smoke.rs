//! Smoke tests of the test harness itself.
//!
//! `postgres_*` and `harness_*` tests check the throwaway PostgreSQL and the helpers,
//! without ward. `ward_*` tests check the parts of the harness that drive the real `ward`
//! binary (token creation, start and readiness, psql and tokio-postgres through ward, the
//! sessions CLI); they need a working `ward serve`.

mod harness;

use harness::{AuthMethod, Postgres, Target, TargetTls, TokenSpec, Ward, WardOptions};

const METHODS: [AuthMethod; 3] = [
    AuthMethod::ScramSha256,
    AuthMethod::Md5,
    AuthMethod::Password,
];

#[test]
fn postgres_starts_with_tls_and_socket_admin() {
    let pg = Postgres::get();
    assert_eq!(pg.admin_sql("postgres", "show ssl"), "on");
    assert_eq!(
        pg.admin_sql("postgres", "show listen_addresses"),
        "127.0.0.1"
    );
    assert_eq!(pg.admin_sql("postgres", "show port"), pg.port().to_string());
    assert!(
        pg.socket_dir()
            .join(format!(".s.PGSQL.{}", pg.port()))
            .exists()
    );
    assert!(pg.ca_path().exists());
    assert!(pg.bin_dir().join("pg_ctl").exists());
    assert!(pg.log_path().exists());
    let err = pg
        .try_admin_sql("postgres", "select * from no_such_table")
        .unwrap_err();
    assert!(err.contains("no_such_table"), "{err}");
    let db = pg.create_database("smoke");
    assert_eq!(pg.admin_sql(&db, "select current_database()"), db);
}

#[test]
fn postgres_users_log_in_over_tcp_with_each_auth_method() {
    let pg = Postgres::get();
    for method in METHODS {
        let t = pg.create_target("login", method);
        let stored = pg.admin_sql(
            "postgres",
            &format!(
                "select left(rolpassword, 6) from pg_authid where rolname = '{}'",
                t.user
            ),
        );
        let expected_prefix = if method == AuthMethod::Md5 {
            "md5"
        } else {
            "SCRAM-"
        };
        assert!(
            stored.starts_with(expected_prefix),
            "{method:?}: stored {stored}"
        );

        let ok = pg.psql_tcp(
            &pg.conninfo(&t.database, &t.user, &t.password, "require"),
            "select current_user || ' ' || current_database()",
        );
        let out = harness::expect_success(ok, &format!("{method:?} login"));
        assert_eq!(out, format!("{} {}", t.user, t.database));

        // The server logs which pg_hba method authenticated the connection.
        let needle = format!("identity=\"{}\" method={}", t.user, method.hba_name());
        harness::wait_for(
            || pg.log().contains(&needle),
            &format!("`{needle}` in the server log"),
        );

        let bad = pg.psql_tcp(
            &pg.conninfo(&t.database, &t.user, "wrong", "require"),
            "select 1",
        );
        assert!(!bad.status.success(), "{method:?}: wrong password accepted");
        let stderr = String::from_utf8_lossy(&bad.stderr);
        assert!(
            stderr.contains("password authentication failed"),
            "{stderr}"
        );
    }
}

#[test]
fn postgres_tls_verifies_against_the_harness_ca() {
    let pg = Postgres::get();
    let t = pg.create_target("tls", AuthMethod::ScramSha256);
    let ssl_sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    let by_ip = pg.conninfo(&t.database, &t.user, &t.password, "verify-full");
    assert_eq!(
        harness::expect_success(pg.psql_tcp(&by_ip, ssl_sql), "verify-full 127.0.0.1"),
        "t"
    );
    let by_name = by_ip.replacen("host=127.0.0.1", "host=localhost", 1);
    assert_eq!(
        harness::expect_success(pg.psql_tcp(&by_name, ssl_sql), "verify-full localhost"),
        "t"
    );
    let plain = pg.conninfo(&t.database, &t.user, &t.password, "disable");
    assert_eq!(
        harness::expect_success(pg.psql_tcp(&plain, ssl_sql), "sslmode=disable"),
        "f"
    );
}

#[tokio::test]
async fn postgres_tokio_postgres_client_over_verified_tls() {
    let pg = Postgres::get();
    let t = pg.create_target("tokio", AuthMethod::ScramSha256);
    let (client, conn) = pg.client(&t.database, &t.user, &t.password).await;
    let row = client
        .query_one(
            "select ssl from pg_stat_ssl where pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    drop(client);
    conn.await.unwrap().unwrap();
}

#[test]
fn harness_http_parser_and_wait_helpers() {
    let plain = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
    assert_eq!(
        harness::parse_http_response(plain),
        Some((200, "ok".into()))
    );
    let chunked =
        b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n";
    assert_eq!(
        harness::parse_http_response(chunked),
        Some((503, "abcde".into()))
    );
    let mut n = 0;
    assert_eq!(
        harness::wait_until(
            || {
                n += 1;
                (n == 3).then_some(n)
            },
            "three polls"
        ),
        3
    );
    let panicked = std::panic::catch_unwind(|| {
        harness::wait_until_within(
            std::time::Duration::from_millis(200),
            || None::<()>,
            "never",
        );
    });
    assert!(panicked.is_err());
}

// ---- checks that need a working `ward serve` ----

#[test]
fn ward_token_create_prints_json() {
    let out = std::process::Command::new(harness::ward_bin())
        .args(["token", "create", "smoke", "--format", "json"])
        .output()
        .unwrap();
    let text = harness::expect_success(out, "ward token create");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert!(v["token"].as_str().unwrap().starts_with("ward_"), "{v}");
    assert!(v["hash"].as_str().unwrap().starts_with("sha256:"), "{v}");
}

#[test]
fn ward_starts_and_proxies_each_auth_method() {
    let pg = Postgres::get();
    let mut options = WardOptions::new().token("ci-nightly");
    let mut targets = Vec::new();
    for (i, method) in METHODS.into_iter().enumerate() {
        let t = pg.create_target("via_ward", method);
        let name = format!("db-{i}");
        options = options.target(Target::postgres(&name, &t));
        targets.push((name, t));
    }
    let ward = Ward::start(options);
    assert!(ward.data_dir().join("admin.token").exists());
    assert!(!ward.admin_token().is_empty());
    for (name, t) in &targets {
        let out = ward.psql_ok(
            "ci-nightly",
            name,
            "select current_user || ' ' || current_database()",
        );
        assert_eq!(out, format!("{} {}", t.user, t.database), "{:?}", t.method);
    }
    let bad = ward.psql_args(
        &ward.conninfo_with("ci-nightly", "db-0", "ward_not_the_token", "require"),
        &["-c", "select 1"],
    );
    assert!(!bad.status.success(), "a wrong token was accepted");
}

#[test]
fn ward_verifies_the_target_certificate() {
    let pg = Postgres::get();
    let t = pg.create_target("verify", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(
                Target::postgres("by-name", &t)
                    .tls(TargetTls::verify_harness_ca(Some("localhost"))),
            )
            .target(Target::postgres("by-ip", &t).tls(TargetTls::verify_harness_ca(None)))
            .target(Target::postgres("unverified", &t).tls(TargetTls::Require))
            .target(
                Target::postgres("wrong-name", &t).tls(TargetTls::verify_harness_ca(Some(
                    "not-in-the-cert.example",
                ))),
            )
            .token_spec(TokenSpec::new("ci")),
    );
    let ssl_sql = "select ssl from pg_stat_ssl where pid = pg_backend_pid()";
    for target in ["by-name", "by-ip", "unverified"] {
        assert_eq!(ward.psql_ok("ci", target, ssl_sql), "t", "{target}");
    }
    let refused = ward.psql("ci", "wrong-name", "select 1");
    assert!(
        !refused.status.success(),
        "a certificate without the expected name was accepted\n{}",
        harness::describe(&refused)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ward_tokio_postgres_client_and_sessions_cli() {
    let pg = Postgres::get();
    let t = pg.create_target("sessions", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders-db", &t))
            .token("ci-nightly"),
    );
    let (client, conn) = ward.client("ci-nightly", "orders-db").await;
    let row = client
        .query_one("select $1::int + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);
    drop(client);
    let _ = conn.await;

    let mut bad = ward.pg_config("ci-nightly", "orders-db");
    bad.password("ward_wrong");
    assert!(
        ward.try_client(bad).await.is_err(),
        "a wrong token was accepted"
    );

    let session = harness::wait_until(
        || {
            let list = ward.sessions_json();
            let items = list
                .as_array()
                .or_else(|| list.get("sessions").and_then(|s| s.as_array()))
                .cloned()
                .unwrap_or_default();
            items
                .into_iter()
                .find(|s| s.to_string().contains("ci-nightly"))
        },
        "a session of ci-nightly in `ward sessions list`",
    );
    let id = session["id"]
        .as_str()
        .map(str::to_string)
        .unwrap_or_else(|| session["id"].to_string());
    let shown = ward.session_json(&id);
    assert!(shown.to_string().contains("ci-nightly"), "{shown}");
}
