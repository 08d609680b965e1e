//! Guardrails: statements refused by policy never reach the target, the client gets a clear
//! error in its own protocol, and the session stays usable and consistent.

mod harness;

use harness::{AuthMethod, PgTarget, Postgres, Target, Ward, WardOptions, wait_for};
use std::process::Output;

const RULES: &str = "
rules:
  - { name: no-deletes, statements: [delete], action: deny, message: deletes are not allowed here }
  - { name: no-drops, statements: [drop, truncate], action: deny }
  - { name: no-bulk-updates, statements: [update], flags: [no_where], action: deny }
";

struct Env {
    db: PgTarget,
    ward: Ward,
}

/// A target with a table `orders` of 10 rows, behind a ward with `rules`.
fn start(name: &str, rules: &str) -> Env {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "create table orders (id int primary key, note text);
             insert into orders select g, 'n' || g from generate_series(1, 10) g;
             alter table orders owner to {}",
            db.user
        ),
    );
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci-nightly")
            .extra_yaml(rules),
    );
    Env { db, ward }
}

impl Env {
    fn rows(&self) -> i64 {
        Postgres::get()
            .admin_sql(&self.db.database, "select count(*) from orders")
            .parse()
            .unwrap()
    }

    fn psql(&self, sql: &str) -> Output {
        self.ward.psql("ci-nightly", "shop", sql)
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn assert_blocked(out: &Output, rule: &str) {
    let err = stderr(out);
    assert!(
        !out.status.success(),
        "statement was not refused: {}",
        harness::describe(out)
    );
    assert!(
        err.contains(&format!("blocked by ward rule \"{rule}\"")),
        "expected a refusal by {rule}: {err}"
    );
    assert!(
        err.contains("(session "),
        "the refusal names the session: {err}"
    );
    assert!(
        !err.contains("CONTEXT"),
        "no PL/pgSQL context leaks into the refusal: {err}"
    );
}

#[test]
fn denied_statement_never_reaches_the_target_and_the_session_goes_on() {
    let env = start("guard_simple", RULES);
    let out = env.psql("delete from orders where id = 1");
    assert_blocked(&out, "no-deletes");
    assert!(stderr(&out).contains("deletes are not allowed here"));
    assert_eq!(env.rows(), 10);

    // Same session: refused, then a normal query works.
    let out = env.ward.psql_args(
        &env.ward.conninfo("ci-nightly", "shop"),
        &[
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "delete from orders",
            "-c",
            "select count(*) from orders",
        ],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "10");
    assert!(stderr(&out).contains("no-deletes"));

    // A bulk UPDATE is refused; a targeted one is not.
    assert_blocked(&env.psql("update orders set note = 'x'"), "no-bulk-updates");
    assert_eq!(
        env.ward.psql_ok(
            "ci-nightly",
            "shop",
            "update orders set note = 'x' where id = 2"
        ),
        "UPDATE 1"
    );
}

#[test]
fn a_refusal_inside_a_transaction_aborts_it_as_a_failed_statement_would() {
    let env = start("guard_tx", RULES);
    let script = "begin;\n\
                  insert into orders values (100, 'inside');\n\
                  delete from orders where id = 1;\n\
                  select 'after refusal';\n\
                  commit;\n\
                  select count(*) from orders;\n";
    let out = env.ward.psql_args(
        &env.ward.conninfo("ci-nightly", "shop"),
        &["-At", "-v", "ON_ERROR_STOP=0", "-c", script],
    );
    let err = stderr(&out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // psql -c sends the script as one Query: the refusal covers the whole message, and the
    // insert in it never runs.
    assert!(err.contains("no-deletes"), "{err}");
    assert_eq!(env.rows(), 10, "{stdout}");

    // Statement by statement (psql -f sends each separately): the insert runs, the delete is
    // refused, the transaction is aborted, and COMMIT rolls it back.
    let file = harness::fresh_dir("guard_tx").join("tx.sql");
    harness::write_file(&file, script, 0o644);
    let out = env.ward.psql_args(
        &env.ward.conninfo("ci-nightly", "shop"),
        &["-At", "-v", "ON_ERROR_STOP=0", "-f", file.to_str().unwrap()],
    );
    let err = stderr(&out);
    assert!(err.contains("blocked by ward rule \"no-deletes\""), "{err}");
    assert!(err.contains("current transaction is aborted"), "{err}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("ROLLBACK") || !stdout.contains("after refusal"),
        "{stdout}"
    );
    assert_eq!(
        env.rows(),
        10,
        "the insert before the refusal was rolled back"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_refusals_keep_the_connection_in_step() {
    let env = start("guard_ext", RULES);
    let (mut client, conn) = env.ward.client("ci-nightly", "shop").await;

    // Prepared statement: refused at Parse with 42501; the connection stays usable.
    let err = client
        .prepare("delete from orders where id = $1")
        .await
        .unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "42501");
    assert!(
        db.message().contains("blocked by ward rule \"no-deletes\""),
        "{}",
        db.message()
    );
    let n: i64 = client
        .query_one("select count(*) from orders where id > $1", &[&0i32])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 10);

    // Inside a transaction: the insert before the refusal is rolled back with it.
    let tx = client.transaction().await.unwrap();
    tx.execute("insert into orders values ($1, 'tx')", &[&200i32])
        .await
        .unwrap();
    let err = tx
        .execute("delete from orders where id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let err = tx.query_one("select 1", &[]).await.unwrap_err();
    assert_eq!(err.code().unwrap().code(), "25P02");
    let _ = tx.commit().await;
    assert_eq!(env.rows(), 10);

    // A refused statement in the middle of a pipeline: earlier and later ones are answered
    // in order.
    let a = client.query_one("select 1::int", &[]);
    let b = client.execute("delete from orders where id = $1", &[&3i32]);
    let c = client.query_one("select 3::int", &[]);
    let (a, b, c) = tokio::join!(a, b, c);
    assert_eq!(a.unwrap().get::<_, i32>(0), 1);
    assert_eq!(b.unwrap_err().code().unwrap().code(), "42501");
    assert_eq!(c.unwrap().get::<_, i32>(0), 3);
    assert_eq!(env.rows(), 10);

    // Simple protocol, multi-statement message: the strictest decision covers all of it.
    let err = client
        .simple_query("select 1; delete from orders")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42501");
    let rows = client.simple_query("select 1").await.unwrap();
    assert!(
        rows.iter()
            .any(|m| matches!(m, tokio_postgres::SimpleQueryMessage::Row(_)))
    );
    drop(client);
    conn.await.unwrap().unwrap();
    assert_eq!(env.rows(), 10);
}

#[test]
fn evasions_do_not_slip_past_delete_and_drop_rules() {
    let env = start("guard_evasion", RULES);
    let pg = Postgres::get();
    // A function that deletes, created by the owner outside ward, for the CALL/SELECT cases.
    pg.admin_sql(
        &env.db.database,
        &format!(
            "create procedure purge() language sql as 'delete from orders';
             alter procedure purge() owner to {}",
            env.db.user
        ),
    );
    let attempts: &[(&str, &str)] = &[
        ("DeLeTe /* sneaky */ FROM \"orders\"", "no-deletes"),
        ("-- comment\ndelete\nfrom orders where true", "no-deletes"),
        ("SELECT 1; DELETE FROM orders", "no-deletes"),
        (
            "WITH x AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM x",
            "no-deletes",
        ),
        (
            "PREPARE p AS DELETE FROM orders WHERE id > $1; EXECUTE p(0)",
            "no-deletes",
        ),
        ("EXPLAIN ANALYZE DELETE FROM orders", "no-deletes"),
        (
            "COPY (DELETE FROM orders RETURNING *) TO STDOUT",
            "no-deletes",
        ),
        ("DO $$ BEGIN DELETE FROM orders; END $$", "no-deletes"),
        (
            "DO $x$ BEGIN EXECUTE 'DEL' || 'ETE FROM orders'; END $x$",
            "policy.procedural",
        ),
        (
            "CREATE FUNCTION f() RETURNS void LANGUAGE sql AS 'DELETE FROM orders'",
            "policy.procedural",
        ),
        ("CALL purge()", "policy.procedural"),
        (
            "CREATE RULE r AS ON INSERT TO orders DO ALSO DELETE FROM orders",
            "no-deletes",
        ),
        (
            "CREATE TRIGGER t AFTER INSERT ON orders EXECUTE FUNCTION f()",
            "policy.procedural",
        ),
        ("COPY orders FROM PROGRAM 'true'", "policy.procedural"),
        ("DROP TABLE orders", "no-drops"),
        ("/**/dRoP/**/TABLE/**/orders", "no-drops"),
        ("select 1; truncate orders", "no-drops"),
        (
            "selec 1 from orders; delete from orders",
            "policy.unparseable",
        ),
    ];
    for (sql, rule) in attempts {
        let out = env.psql(sql);
        let err = stderr(&out);
        assert!(
            !out.status.success(),
            "{sql:?} was not refused: {}",
            harness::describe(&out)
        );
        assert!(
            err.contains("blocked by ward rule"),
            "{sql:?} failed for another reason: {err}"
        );
        // DO with a DELETE inside is caught by the delete rule or the procedural default,
        // whichever the classification meets first; both refuse.
        if !sql.starts_with("DO $$") && !sql.starts_with("CREATE RULE") {
            assert!(
                err.contains(&format!("\"{rule}\"")),
                "{sql:?}: expected rule {rule}: {err}"
            );
        }
        assert_eq!(env.rows(), 10, "{sql:?} changed the table");
    }
    assert_eq!(
        pg.admin_sql(
            &env.db.database,
            "select count(*) from pg_proc where proname = 'f'"
        ),
        "0"
    );
    // Reads still work.
    assert_eq!(
        env.ward
            .psql_ok("ci-nightly", "shop", "select count(*) from orders"),
        "10"
    );
}

#[test]
fn policy_reloads_on_sighup_and_a_bad_file_keeps_the_running_rules() {
    let mut env = start("guard_reload", RULES);
    assert_eq!(
        env.ward
            .psql_ok("ci-nightly", "shop", "insert into orders values (50, 'x')"),
        "INSERT 0 1"
    );

    // Add a rule and signal ward.
    let config = std::fs::read_to_string(env.ward.config_path()).unwrap();
    let with_insert_rule = config.replace(
        "rules:\n",
        "rules:\n  - { name: no-inserts, statements: [insert], action: deny }\n",
    );
    assert_ne!(config, with_insert_rule);
    std::fs::write(env.ward.config_path(), &with_insert_rule).unwrap();
    let pid = env.ward.pid().unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(
        || env.ward.log().contains("policy reloaded"),
        "ward to reload the policy",
    );
    assert_blocked(
        &env.psql("insert into orders values (51, 'y')"),
        "no-inserts",
    );

    // A broken file is rejected with a precise error and the rules stay as they were.
    std::fs::write(
        env.ward.config_path(),
        with_insert_rule.replace("statements: [insert]", "statements: [insrt]"),
    )
    .unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGHUP) };
    wait_for(
        || env.ward.log().contains("config reload rejected"),
        "ward to reject the bad file",
    );
    assert!(
        env.ward
            .log()
            .contains("unknown statement kind \\\"insrt\\\"")
            || env.ward.log().contains("unknown statement kind \"insrt\""),
        "{}",
        env.ward.log()
    );
    assert_blocked(
        &env.psql("insert into orders values (52, 'z')"),
        "no-inserts",
    );
    assert_blocked(&env.psql("delete from orders"), "no-deletes");
    assert_eq!(
        env.ward
            .psql_ok("ci-nightly", "shop", "select count(*) from orders"),
        "11"
    );
    assert!(env.ward.is_running());
}

#[test]
fn target_default_deny_allows_only_what_rules_allow() {
    let pg = Postgres::get();
    let db = pg.create_target("guard_default", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("locked", &db).extra_yaml("default_action: deny"))
            .token("reader")
            .extra_yaml("rules:\n  - { name: reads-only, statements: [select], action: allow }\n"),
    );
    assert_eq!(ward.psql_ok("reader", "locked", "select 40 + 2"), "42");
    let out = ward.psql("reader", "locked", "create table t (a int)");
    assert!(
        stderr(&out).contains("blocked by ward rule \"targets.locked.default_action\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn refusals_are_audited_with_their_decision_and_rule() {
    let env = start("guard_audit", RULES);
    let out = env.ward.psql_args(
        &env.ward.conninfo("ci-nightly", "shop"),
        &[
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "select count(*) from orders",
            "-c",
            "delete from orders where id = 4",
        ],
    );
    assert!(stderr(&out).contains("no-deletes"));
    let id = harness::wait_until(
        || {
            let list = env.ward.sessions_json();
            list["sessions"]
                .as_array()?
                .iter()
                .find(|s| s["active"] == false)
                .map(|s| s["id"].as_str().unwrap().to_string())
        },
        "the session in the audit",
    );
    let detail = env.ward.session_json(&id);
    let statements = detail["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{statements:#?}");
    assert_eq!(statements[0]["text"], "select count(*) from orders");
    assert!(statements[0]["decision"].is_null());
    assert_eq!(statements[1]["text"], "delete from orders where id = 4");
    assert_eq!(statements[1]["decision"], "denied");
    assert_eq!(statements[1]["rule"], "no-deletes");
    assert_eq!(statements[1]["sqlstate"], "42501");
    let shown = env.ward.cli_ok(&["sessions", "show", &id]);
    assert!(shown.contains("DENIED by rule no-deletes"), "{shown}");
}

/// A responder finds the sessions that ran a given command or were refused something.
#[test]
fn sessions_are_found_by_command_text_and_decision() {
    let env = start("guard_find_sessions", RULES);
    let denied = env.psql("delete from orders where id = 1");
    assert_blocked(&denied, "no-deletes");
    assert!(
        env.psql("select note from orders where id = 2")
            .status
            .success()
    );
    assert!(env.psql("select count(*) from orders").status.success());
    let ids = |args: &[&str]| -> Vec<String> {
        let mut all = vec!["sessions", "list", "--format", "json"];
        all.extend_from_slice(args);
        let json: serde_json::Value =
            serde_json::from_str(&env.ward.cli_ok(&all)).expect("sessions list json");
        json["sessions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["id"].as_str().unwrap().to_string())
            .collect()
    };
    wait_for(|| ids(&[]).len() == 3, "three sessions in the audit");
    wait_for(
        || ids(&["--decision", "denied"]).len() == 1,
        "the denied statement's session",
    );
    let refused = ids(&["--decision", "denied"]);
    let deleting = ids(&["--command-contains", "DELETE FROM orders"]);
    assert_eq!(refused, deleting, "the same session, found both ways");
    assert_eq!(ids(&["--command-contains", "where id = 2"]).len(), 1);
    assert_eq!(ids(&["--command-contains", "orders"]).len(), 3);
    assert_eq!(ids(&["--decision", "allowed"]).len(), 2);
    assert!(ids(&["--decision", "review"]).is_empty());
    assert!(
        ids(&["--command-contains", "delete", "--decision", "allowed"]).is_empty(),
        "both conditions hold for one statement"
    );
    let bad = env.ward.cli(&["sessions", "list", "--decision", "maybe"]);
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("denied"),
        "{}",
        harness::describe(&bad)
    );
}

/// `ward replay` tells a session's story in order: offsets, decisions, rows, the end.
#[test]
fn replay_shows_the_session_timeline_with_decisions() {
    let env = start("guard_replay", RULES);
    let conninfo = env.ward.conninfo("ci-nightly", "shop");
    let out = env.ward.psql_args(
        &conninfo,
        &[
            "-v",
            "ON_ERROR_STOP=0",
            "-c",
            "select id from orders where id <= 3",
            "-c",
            "select pg_sleep(0.3)",
            "-c",
            "delete from orders where id = 1",
            "-c",
            "select count(*) from orders",
        ],
    );
    assert!(
        stderr(&out).contains("blocked by ward rule"),
        "{}",
        harness::describe(&out)
    );
    let session = harness::wait_until(
        || {
            let json: serde_json::Value =
                serde_json::from_str(&env.ward.cli_ok(&["sessions", "list", "--format", "json"]))
                    .ok()?;
            let s = &json["sessions"][0];
            (s["statement_count"] == 4 && s["active"] == false)
                .then(|| s["id"].as_str().unwrap().to_string())
        },
        "the session to be recorded and ended",
    );
    let json: serde_json::Value =
        serde_json::from_str(
            &env.ward
                .cli_ok(&["replay", &session[..13], "--format", "json"]),
        )
        .expect("replay json");
    let steps = json.as_array().expect("an array of steps");
    assert_eq!(steps.len(), 4);
    let offsets: Vec<f64> = steps
        .iter()
        .map(|s| s["offset_ms"].as_f64().unwrap())
        .collect();
    assert!(offsets.windows(2).all(|w| w[0] <= w[1]), "{offsets:?}");
    assert!(
        offsets[2] - offsets[1] >= 250.0,
        "the sleep shows in the offsets: {offsets:?}"
    );
    assert_eq!(steps[0]["rows"], 3);
    assert_eq!(steps[0]["decision"], "allowed");
    assert_eq!(steps[2]["decision"], "denied");
    assert_eq!(steps[2]["rule"], "no-deletes");
    assert!(
        steps[2]["statement"]
            .as_str()
            .unwrap()
            .contains("delete from orders")
    );
    assert!(steps[1]["duration_ms"].as_f64().unwrap() >= 250.0);
    // The table form, paced much faster than real time.
    let table = env
        .ward
        .cli_ok(&["replay", &session, "--pace", "--speed", "1000"]);
    assert!(table.contains("DENIED"), "{table}");
    assert!(table.contains("rule no-deletes"), "{table}");
    assert!(table.contains("session ended: client closed"), "{table}");
    let lines: Vec<&str> = table.lines().filter(|l| l.starts_with('+')).collect();
    assert_eq!(lines.len(), 5, "four statements and the end: {table}");
    let missing = env.ward.cli(&["replay", "ffffffff-0000"]);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no session matches"));
}

#[test]
fn allowed_statements_name_the_log_and_allow_rules_that_matched() {
    let env = start(
        "guard_log_rules",
        "
rules:
  - { name: watch-orders, tables: [orders], action: log }
  - { name: reads-ok, statements: [select], action: allow }
",
    );
    let out = env.psql("select count(*) from orders; select 1");
    assert!(out.status.success(), "{}", harness::describe(&out));
    let id = harness::wait_until(
        || {
            let json = env.ward.sessions_json();
            let s = &json["sessions"][0];
            (s["active"] == false).then(|| s["id"].as_str().unwrap().to_string())
        },
        "the session to end",
    );
    let detail = env.ward.session_json(&id);
    let statements = detail["statements"].as_array().unwrap();
    assert_eq!(statements.len(), 2, "{detail}");
    for st in statements {
        // One message, judged as a whole: both rules are named on both statements.
        assert_eq!(st["decision"], "allowed", "{detail}");
        assert_eq!(st["rule"], "watch-orders, reads-ok", "{detail}");
    }
}
