//! The per-statement audit: what ward records about sessions and statements, checked
//! against what real clients actually ran on a real PostgreSQL.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, wait_until, write_file};
use serde_json::Value;

/// The one session `identity` has in the audit, once it has ended.
fn ended_session(ward: &Ward, identity: &str) -> Value {
    let id = wait_until(
        || {
            let list = ward.sessions_json();
            list["sessions"]
                .as_array()?
                .iter()
                .find(|s| s["identity"] == identity && s["active"] == false)
                .map(|s| s["id"].as_str().unwrap().to_string())
        },
        &format!("an ended session of {identity} in the audit"),
    );
    ward.session_json(&id)
}

/// (origin, text, params, rows, sqlstate) of a recorded statement.
type Recorded = (String, String, Option<String>, Option<u64>, Option<String>);

/// (text, rows, sqlstate) of each recorded statement, in order.
fn statements(detail: &Value) -> Vec<(String, Option<u64>, Option<String>)> {
    detail["statements"]
        .as_array()
        .expect("statements array")
        .iter()
        .map(|s| {
            (
                s["text"].as_str().unwrap().to_string(),
                s["rows"].as_u64(),
                s["sqlstate"].as_str().map(str::to_string),
            )
        })
        .collect()
}

fn row(
    text: &str,
    rows: Option<u64>,
    sqlstate: Option<&str>,
) -> (String, Option<u64>, Option<String>) {
    (text.to_string(), rows, sqlstate.map(str::to_string))
}

#[test]
fn psql_script_is_recorded_statement_by_statement_in_order() {
    let pg = Postgres::get();
    let db = pg.create_target("audit", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders-db", &db))
            .token("ci-nightly"),
    );

    // One statement per line (psql sends each as its own Query, with its semicolon), one
    // multi-statement line (split into its statements with PostgreSQL's parser; the audit
    // shows both kinds the same way, without trailing semicolons), an error outside a
    // transaction, and an error inside one.
    let script = ward.dir().join("workload.sql");
    write_file(
        &script,
        "create table orders (id int primary key, email text);\n\
         insert into orders select g, 'user' || g || '@example.com' from generate_series(1, 7) g;\n\
         update orders set email = upper(email) where id <= 3;\n\
         select * from orders order by id;\n\
         select 1/0;\n\
         begin;\n\
         delete from orders where id = 7;\n\
         select no_such_column from orders;\n\
         rollback;\n\
         select count(*) from orders \\; delete from orders where id > 5 \\; select 'a;b' as s;\n",
        0o644,
    );
    let out = ward.psql_args(
        &ward.conninfo("ci-nightly", "orders-db"),
        &[
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            script.to_str().unwrap(),
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("division by zero"), "{stderr}");
    assert!(stderr.contains("no_such_column"), "{stderr}");
    assert_eq!(
        pg.admin_sql(&db.database, "select count(*) from orders"),
        "5"
    );

    let detail = ended_session(&ward, "ci-nightly");
    assert_eq!(
        statements(&detail),
        vec![
            row(
                "create table orders (id int primary key, email text)",
                None,
                None
            ),
            row(
                "insert into orders select g, 'user' || g || '@example.com' from generate_series(1, 7) g",
                Some(7),
                None
            ),
            row(
                "update orders set email = upper(email) where id <= 3",
                Some(3),
                None
            ),
            row("select * from orders order by id", Some(7), None),
            row("select 1/0", None, Some("22012")),
            row("begin", None, None),
            row("delete from orders where id = 7", Some(1), None),
            row("select no_such_column from orders", None, Some("42703")),
            row("rollback", None, None),
            row("select count(*) from orders", Some(1), None),
            row("delete from orders where id > 5", Some(2), None),
            row("select 'a;b' as s", Some(1), None),
        ]
    );
    let seqs: Vec<u64> = detail["statements"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=12).collect::<Vec<_>>());
    let session = &detail["session"];
    assert_eq!(session["identity"], "ci-nightly");
    assert_eq!(session["target"], "orders-db");
    assert_eq!(session["protocol"], "postgres");
    assert_eq!(session["tls_version"], "TLSv1.3");
    // The harness runs psql with PGAPPNAME=ward-test.
    assert_eq!(session["client_program"], "ward-test");
    assert!(
        session["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:")
    );
    assert_eq!(session["end_reason"], "client closed the session");
    assert_eq!(session["statement_count"], 12);
    // Each statement has a start time inside the session and a duration.
    let start = session["started_at_us"].as_i64().unwrap();
    let end = session["ended_at_us"].as_i64().unwrap();
    for s in detail["statements"].as_array().unwrap() {
        let t = s["started_at_us"].as_i64().unwrap();
        assert!(
            t >= start && t <= end,
            "statement time {t} outside session {start}..{end}"
        );
        assert!(s["duration_us"].as_i64().unwrap() >= 0);
        assert_eq!(s["origin"], "simple");
    }
    // The errors carry the server's message.
    let errors: Vec<&str> = detail["statements"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|s| s["error"].as_str())
        .collect();
    assert_eq!(errors.len(), 2);
    assert!(errors[0].contains("division by zero"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_executes_are_recorded_with_text_and_parameters() {
    let pg = Postgres::get();
    let db = pg.create_target("audit_ext", AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "create table items (id int, name text, price numeric); alter table items owner to {}",
            db.user
        ),
    );
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("app-bot")
            .extra_yaml("limits: { param_capture_bytes: 64 }"),
    );
    let (client, conn) = ward.client("app-bot", "shop").await;
    let insert = client
        .prepare("insert into items values ($1, $2, $3::text::numeric)")
        .await
        .unwrap();
    for (id, name) in [(1, "tea"), (2, "o'clock")] {
        client
            .execute(&insert, &[&id, &name, &"2.50"])
            .await
            .unwrap();
    }
    let long = "x".repeat(5000);
    client
        .execute(&insert, &[&3i32, &long.as_str(), &"1"])
        .await
        .unwrap();
    let rows = client
        .query(
            "select id, name from items where id >= $1 order by id",
            &[&2i32],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    let err = client
        .query("select * from no_such_table where id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
    let n = client
        .execute("delete from items where id = $1", &[&1i32])
        .await
        .unwrap();
    assert_eq!(n, 1);
    drop(client);
    conn.await.unwrap().unwrap();

    let detail = tokio::task::spawn_blocking(move || {
        let d = ended_session(&ward, "app-bot");
        drop(ward);
        d
    })
    .await
    .unwrap();
    let stmts = detail["statements"].as_array().unwrap();
    let summary: Vec<Recorded> = stmts
        .iter()
        .map(|s| {
            (
                s["origin"].as_str().unwrap().to_string(),
                s["text"].as_str().unwrap().to_string(),
                s["params"].as_str().map(str::to_string),
                s["rows"].as_u64(),
                s["sqlstate"].as_str().map(str::to_string),
            )
        })
        .collect();
    let insert_sql = "insert into items values ($1, $2, $3::text::numeric)".to_string();
    assert_eq!(
        summary[0],
        (
            "execute".into(),
            insert_sql.clone(),
            Some("$1=1, $2='tea', $3='2.50'".into()),
            Some(1),
            None
        )
    );
    assert_eq!(
        summary[1],
        (
            "execute".into(),
            insert_sql.clone(),
            Some("$1=2, $2='o''clock', $3='2.50'".into()),
            Some(1),
            None
        )
    );
    // The 5000-byte parameter is capped in the audit, and says how much was cut.
    let capped = summary[2].2.as_deref().unwrap();
    assert!(capped.len() < 200, "{capped}");
    assert!(capped.contains("(+"), "{capped}");
    assert_eq!(summary[3].0, "execute");
    assert_eq!(
        summary[3].1,
        "select id, name from items where id >= $1 order by id"
    );
    assert_eq!(summary[3].3, Some(2));
    // A statement the server could not prepare is recorded with its SQLSTATE.
    assert_eq!(summary[4].1, "select * from no_such_table where id = $1");
    assert_eq!(summary[4].4.as_deref(), Some("42P01"));
    assert_eq!(summary[5].1, "delete from items where id = $1");
    assert_eq!(summary[5].3, Some(1));
    assert_eq!(summary.len(), 6, "{summary:#?}");
    assert_eq!(detail["session"]["client_program"], "ward-test");
}

#[test]
fn sessions_are_listed_by_identity_target_and_time() {
    let pg = Postgres::get();
    let a = pg.create_target("audit_a", AuthMethod::ScramSha256);
    let b = pg.create_target("audit_b", AuthMethod::Md5);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("db-a", &a))
            .target(Target::postgres("db-b", &b))
            .token("alice")
            .token("ci-bot"),
    );
    ward.psql_ok("alice", "db-a", "select 1");
    ward.psql_ok("alice", "db-b", "select 2");
    ward.psql_ok("ci-bot", "db-b", "select 3");
    wait_until(
        || {
            (ward.sessions_json()["sessions"]
                .as_array()?
                .iter()
                .filter(|s| s["active"] == false)
                .count()
                == 3)
                .then_some(())
        },
        "three ended sessions",
    );
    let ids = |args: &[&str]| -> Vec<(String, String)> {
        let mut full = vec!["sessions", "list", "--format", "json"];
        full.extend_from_slice(args);
        let v: Value = serde_json::from_str(&ward.cli_ok(&full)).unwrap();
        let mut out: Vec<(String, String)> = v["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                (
                    s["identity"].as_str().unwrap().into(),
                    s["target"].as_str().unwrap().into(),
                )
            })
            .collect();
        out.sort();
        out
    };
    let pair = |i: &str, t: &str| (i.to_string(), t.to_string());
    assert_eq!(
        ids(&["--identity", "alice"]),
        vec![pair("alice", "db-a"), pair("alice", "db-b")]
    );
    assert_eq!(
        ids(&["--target", "db-b"]),
        vec![pair("alice", "db-b"), pair("ci-bot", "db-b")]
    );
    assert_eq!(
        ids(&["--identity", "ci-bot", "--target", "db-b"]),
        vec![pair("ci-bot", "db-b")]
    );
    assert_eq!(ids(&["--since", "1h"]).len(), 3);
    assert_eq!(ids(&["--until", "1h"]).len(), 0);
    assert_eq!(ids(&["--since", "2999-01-01T00:00:00Z"]).len(), 0);

    // The human table names who connected where, from which address and program.
    let table = ward.cli_ok(&["sessions", "list", "--identity", "ci-bot"]);
    assert!(
        table.contains("ci-bot") && table.contains("db-b") && table.contains("127.0.0.1"),
        "{table}"
    );
    assert!(!table.contains("alice"), "{table}");
    let id = ward.sessions_json()["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["identity"] == "ci-bot")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let shown = ward.cli_ok(&["sessions", "show", &id[..13]]);
    assert!(shown.contains("select 3"), "{shown}");
    assert!(shown.contains(&id), "{shown}");

    // A bad time bound is an error that says what is accepted.
    let out = ward.cli(&["sessions", "list", "--since", "yesterday-ish"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("1h"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_audit_queue_slows_sessions_but_loses_nothing() {
    let pg = Postgres::get();
    let db = pg.create_target("audit_bp", AuthMethod::ScramSha256);
    // A queue of one event and batches of one: the writer is always behind, so sessions
    // must wait for it rather than drop events.
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("busy", &db))
            .token("loader")
            .extra_yaml("audit: { queue: 1, batch: 1 }"),
    );
    const CLIENTS: usize = 4;
    const QUERIES: usize = 150;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (client, conn) = ward.client("loader", "busy").await;
        tasks.push(tokio::spawn(async move {
            for q in 0..QUERIES {
                let row = client
                    .query_one("select $1::int * 2", &[&((c * 1000 + q) as i32)])
                    .await
                    .unwrap();
                assert_eq!(row.get::<_, i32>(0), ((c * 1000 + q) * 2) as i32);
            }
            client.simple_query("select 'done'").await.unwrap();
            drop(client);
            conn.await.unwrap().unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let counts = tokio::task::spawn_blocking(move || {
        let ids: Vec<String> = wait_until(
            || {
                let list = ward.sessions_json();
                let ended: Vec<String> = list["sessions"]
                    .as_array()?
                    .iter()
                    .filter(|s| s["active"] == false)
                    .map(|s| s["id"].as_str().unwrap().to_string())
                    .collect();
                (ended.len() == CLIENTS).then_some(ended)
            },
            "all sessions ended in the audit",
        );
        ids.iter()
            .map(|id| {
                let d = ward.session_json(id);
                let stmts = d["statements"].as_array().unwrap().clone();
                let texts_ok = stmts[..QUERIES]
                    .iter()
                    .all(|s| s["text"] == "select $1::int * 2" && s["rows"] == 1);
                (
                    stmts.len(),
                    texts_ok,
                    stmts.last().unwrap()["text"].as_str().unwrap().to_string(),
                )
            })
            .collect::<Vec<_>>()
    })
    .await
    .unwrap();
    for (n, texts_ok, last) in counts {
        assert_eq!(n, QUERIES + 1);
        assert!(texts_ok);
        assert_eq!(last, "select 'done'");
    }
}
