//! The tamper-evident session log: chained and signed events, `ward keys show`, `ward verify`.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, wait_until};

fn ward_with_a_finished_session(name: &str) -> (Ward, String) {
    let db = Postgres::get().create_target(name, AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci"),
    );
    let out = ward.psql("ci", "shop", "select 1; select 2; select 'three'");
    assert!(out.status.success(), "{}", harness::describe(&out));
    let id = wait_until(
        || {
            let json = ward.sessions_json();
            let s = &json["sessions"][0];
            (s["active"] == false).then(|| s["id"].as_str().unwrap().to_string())
        },
        "the session to end in the audit",
    );
    (ward, id)
}

#[test]
fn sessions_are_logged_chained_and_signed_and_verify() {
    let (ward, id) = ward_with_a_finished_session("log_verify");
    let keys = ward.cli_ok(&["keys", "show"]);
    let public_key = keys
        .lines()
        .find_map(|l| l.strip_prefix("public key  "))
        .expect("ward keys show prints the public key")
        .trim()
        .to_string();
    assert_eq!(public_key.len(), 64, "{keys}");
    let out = ward.cli_ok(&["verify"]);
    assert!(
        out.contains(&format!("OK        session {id}: 6 events, signed")),
        "{out}"
    );
    assert!(out.contains("1 of 1 sessions intact"), "{out}");
    let out = ward.cli_ok(&["verify", &id, "--public-key", &public_key]);
    assert!(out.contains("1 of 1 sessions intact"), "{out}");
    // Another key does not vouch for this log.
    let other = "11".repeat(32);
    let out = ward.cli(&["verify", &id, "--public-key", &other]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("does not verify"),
        "{}",
        harness::describe(&out)
    );
}

#[test]
fn a_tampered_log_is_named_and_fails_verification() {
    let (ward, id) = ward_with_a_finished_session("log_tamper");
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    let changed = db
        .execute(
            "UPDATE event_log SET body = replace(body, 'three', 'four') WHERE session_id = ?1",
            [&id],
        )
        .unwrap();
    // start, the command (recorded before it was sent), three statements, end.
    assert_eq!(changed, 6, "the rewrite touched the log");
    let out = ward.cli(&["verify"]);
    assert!(!out.status.success(), "{}", harness::describe(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("TAMPERED  session {id}: event #2 was altered")),
        "{stdout}"
    );
    // Removing an event is named too.
    db.execute(
        "UPDATE event_log SET body = replace(body, 'four', 'three') WHERE session_id = ?1",
        [&id],
    )
    .unwrap();
    assert!(ward.cli(&["verify"]).status.success(), "restored");
    db.execute(
        "DELETE FROM event_log WHERE session_id = ?1 AND seq = 2",
        [&id],
    )
    .unwrap();
    let out = ward.cli(&["verify", &id]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("event #2 was removed"),
        "{}",
        harness::describe(&out)
    );
}

#[test]
fn containment_actions_join_the_chains() {
    let db = Postgres::get().create_target("log_controls", AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, _conn) = runtime.block_on(ward.client("ci", "shop"));
    runtime.block_on(client.simple_query("select 1")).unwrap();
    let id = wait_until(
        || {
            let json = ward.sessions_json();
            json["sessions"][0]["id"].as_str().map(str::to_string)
        },
        "the live session to be listed",
    );
    ward.cli_ok(&["kill", &id, "--reason", "incident 7"]);
    ward.cli_ok(&["lock", "ci", "--reason", "token leaked"]);
    ward.cli_ok(&["unlock", "ci"]);
    let store = rusqlite::Connection::open(ward.data_dir().join("ward.db")).unwrap();
    let kinds = |session: &str| -> Vec<String> {
        let mut stmt = store
            .prepare("SELECT kind || ':' || body FROM event_log WHERE session_id = ?1 ORDER BY seq")
            .unwrap();
        stmt.query_map([session], |r| r.get(0))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    wait_until(
        || {
            kinds(&id)
                .iter()
                .any(|k| k.starts_with("session_end:"))
                .then_some(())
        },
        "the killed session to end",
    );
    let session = kinds(&id);
    assert!(
        session
            .iter()
            .any(|k| k.starts_with("control:") && k.contains("incident 7")),
        "the kill is in its session's chain: {session:?}"
    );
    let gateway = kinds("gateway");
    assert_eq!(gateway.len(), 2, "{gateway:?}");
    assert!(gateway[0].contains("\"lock\"") && gateway[0].contains("token leaked"));
    assert!(gateway[1].contains("\"unlock\""));
    let out = ward.cli_ok(&["verify"]);
    assert!(out.contains("gateway"), "{out}");
    assert!(!out.contains("TAMPERED"), "{out}");
    // The lock still survives a restart (it is in the controls table too).
    assert_eq!(
        store
            .query_row("SELECT count(*) FROM control_events", [], |r| r
                .get::<_, i64>(0))
            .unwrap(),
        3
    );
}
