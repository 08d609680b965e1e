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
