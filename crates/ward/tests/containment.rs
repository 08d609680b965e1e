//! Containment through a real `ward serve` with real clients: `ward kill`, `ward lock` /
//! `ward unlock` and `ward pause` / `ward resume`, what clients see, what the audit records,
//! and that locks and pauses survive a restart.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, describe, wait_until};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

const TARGET: &str = "orders-db";
/// How long a client may take to notice that ward ended its session. Generous: this is not a
/// performance assertion (bench/lock_latency.sh measures that), only "promptly, not never".
const PROMPTLY: Duration = Duration::from_secs(10);

type Connection = JoinHandle<Result<(), tokio_postgres::Error>>;

fn start_ward(db_name: &str) -> Ward {
    let db = Postgres::get().create_target(db_name, AuthMethod::ScramSha256);
    Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token("ci-nightly")
            .token("alice"),
    )
}

/// Runs a CLI verb off the async runtime's threads; returns its output.
async fn cli(ward: &Ward, args: &[&str]) -> std::process::Output {
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let (config, dir) = (ward.config_path().to_path_buf(), ward.dir().to_path_buf());
    tokio::task::spawn_blocking(move || {
        let mut cmd = std::process::Command::new(harness::ward_bin());
        cmd.arg("--config").arg(config).args(&args).current_dir(dir);
        harness::run_with_timeout(&mut cmd, Duration::from_secs(60))
    })
    .await
    .unwrap()
}

/// Like [`cli`]; fails the test unless the command succeeded, and returns its stdout.
async fn cli_ok(ward: &Ward, args: &[&str]) -> String {
    let out = cli(ward, args).await;
    assert!(
        out.status.success(),
        "ward {} failed\n{}",
        args.join(" "),
        describe(&out)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

async fn cli_json(ward: &Ward, args: &[&str]) -> Value {
    let text = cli_ok(ward, args).await;
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}):\n{text}"))
}

/// A client of `identity` whose session shows `program` as its client program.
async fn connect(
    ward: &Ward,
    identity: &str,
    program: &str,
) -> (tokio_postgres::Client, Connection) {
    let mut config = ward.pg_config(identity, TARGET);
    config.application_name(program);
    ward.try_client(config)
        .await
        .unwrap_or_else(|e| panic!("connect as {identity}: {e}"))
}

async fn select_one(client: &tokio_postgres::Client) -> Result<i32, tokio_postgres::Error> {
    Ok(client.query_one("select 1", &[]).await?.get(0))
}

/// The id of the live session whose client program is `program` (once the audit has it).
async fn live_session_id(ward: &Ward, program: &str) -> String {
    let program = program.to_string();
    let (config, dir) = (ward.config_path().to_path_buf(), ward.dir().to_path_buf());
    tokio::task::spawn_blocking(move || {
        wait_until(
            || {
                let mut cmd = std::process::Command::new(harness::ward_bin());
                cmd.arg("--config")
                    .arg(&config)
                    .args(["sessions", "list", "--format", "json"])
                    .current_dir(&dir);
                let out = harness::run_with_timeout(&mut cmd, Duration::from_secs(60));
                let list: Value = serde_json::from_slice(&out.stdout).ok()?;
                list["sessions"]
                    .as_array()?
                    .iter()
                    .find(|s| s["client_program"] == program.as_str() && s["active"] == true)
                    .map(|s| s["id"].as_str().unwrap().to_string())
            },
            &format!("the live session of {program} in the audit"),
        )
    })
    .await
    .unwrap()
}

/// The recorded end reason of session `id`, once it has ended.
async fn end_reason(ward: &Ward, id: &str) -> String {
    let id = id.to_string();
    let (config, dir) = (ward.config_path().to_path_buf(), ward.dir().to_path_buf());
    tokio::task::spawn_blocking(move || {
        wait_until(
            || {
                let mut cmd = std::process::Command::new(harness::ward_bin());
                cmd.arg("--config")
                    .arg(&config)
                    .args(["sessions", "show", &id, "--format", "json"])
                    .current_dir(&dir);
                let out = harness::run_with_timeout(&mut cmd, Duration::from_secs(60));
                let detail: Value = serde_json::from_slice(&out.stdout).ok()?;
                detail["session"]["end_reason"].as_str().map(str::to_string)
            },
            &format!("the end of session {id} in the audit"),
        )
    })
    .await
    .unwrap()
}

/// Waits for a connection task to end and returns the error that ended it.
async fn ended_with(connection: Connection, what: &str) -> tokio_postgres::Error {
    match tokio::time::timeout(PROMPTLY, connection).await {
        Ok(Ok(Err(e))) => e,
        Ok(Ok(Ok(()))) => panic!("{what}: the connection ended without an error"),
        Ok(Err(e)) => panic!("{what}: connection task failed: {e}"),
        Err(_) => panic!("{what}: still connected after {PROMPTLY:?}"),
    }
}

/// (SQLSTATE, message) of a server error.
fn server_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_ends_one_session_and_tells_its_client_why() {
    let ward = start_ward("contain_kill");
    let (victim, victim_conn) = connect(&ward, "ci-nightly", "victim").await;
    let (sibling, _sibling_conn) = connect(&ward, "ci-nightly", "sibling").await;
    let (other, _other_conn) = connect(&ward, "alice", "other").await;
    for c in [&victim, &sibling, &other] {
        assert_eq!(select_one(c).await.unwrap(), 1);
    }
    let id = live_session_id(&ward, "victim").await;

    // A unique prefix of the id is enough, as for `ward sessions show`.
    let out = cli_ok(&ward, &["kill", &id[..13], "--reason", "incident 42"]).await;
    assert_eq!(
        out,
        format!("killed session {id} of ci-nightly on {TARGET} (incident 42)")
    );

    let e = ended_with(victim_conn, "the killed session").await;
    let (code, message) = server_error(&e);
    assert_eq!(code, "57P01", "{message}");
    assert!(
        message.contains(&id) && message.contains("ward") && message.contains("incident 42"),
        "{message}"
    );
    assert!(select_one(&victim).await.is_err());

    // The other sessions, of the same identity and of another, carry on.
    assert_eq!(select_one(&sibling).await.unwrap(), 1);
    assert_eq!(select_one(&other).await.unwrap(), 1);
    assert_eq!(end_reason(&ward, &id).await, "killed: incident 42");

    // The kill is in the audit of containment actions.
    let history = cli_json(&ward, &["controls", "--history", "--format", "json"]).await;
    let kill = &history["events"][0];
    assert_eq!(kill["action"], "kill");
    assert_eq!(kill["session_id"], id.as_str());
    assert_eq!(kill["identity"], "ci-nightly");
    assert_eq!(kill["reason"], "incident 42");
    assert_eq!(kill["by"], "admin");

    // Killing it again, or something that never existed, is an error that says so.
    let out = cli(&ward, &["kill", &id]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("already ended"), "{stderr}");
    let out = cli(&ward, &["kill", "ffffffff-ffff"]).await;
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no live session matches") && stderr.contains("ward sessions list"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_ends_every_session_refuses_new_ones_and_survives_restarts() {
    let mut ward = start_ward("contain_lock");
    let (idle, idle_conn) = connect(&ward, "ci-nightly", "idle").await;
    let (busy, busy_conn) = connect(&ward, "ci-nightly", "busy").await;
    let (other, _other_conn) = connect(&ward, "alice", "other").await;
    assert_eq!(select_one(&idle).await.unwrap(), 1);
    let idle_id = live_session_id(&ward, "idle").await;
    let busy_id = live_session_id(&ward, "busy").await;
    // One session is in the middle of a long statement when the lock comes.
    let running = tokio::spawn(async move { busy.simple_query("select pg_sleep(60)").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let started = Instant::now();
    let out = cli_ok(
        &ward,
        &[
            "lock",
            "ci-nightly",
            "--reason",
            "token leaked",
            "--for",
            "2h",
        ],
    )
    .await;
    assert!(
        out.starts_with("locked ci-nightly until ")
            && out.ends_with("(for 2h); ended 2 live sessions"),
        "{out}"
    );

    let e = ended_with(idle_conn, "the idle session").await;
    let (code, message) = server_error(&e);
    assert_eq!(code, "57P01", "{message}");
    assert!(message.contains("locked: token leaked"), "{message}");
    let e = tokio::time::timeout(PROMPTLY, running)
        .await
        .expect("the running statement ends")
        .unwrap()
        .expect_err("the running statement fails");
    assert!(
        e.as_db_error().is_none_or(|db| db.code().code() == "57P01"),
        "{e:?}"
    );
    let _ = tokio::time::timeout(PROMPTLY, busy_conn)
        .await
        .expect("busy session closed");
    assert!(started.elapsed() < PROMPTLY);
    drop(idle);

    // New sessions of the identity are refused, with the reason; other identities are not.
    let Err(refused) = ward.try_client(ward.pg_config("ci-nightly", TARGET)).await else {
        panic!("a locked identity connected");
    };
    let (code, message) = server_error(&refused);
    assert_eq!(code, "28000", "{message}");
    assert_eq!(
        message,
        "ward: identity \"ci-nightly\" is locked: token leaked"
    );
    assert_eq!(select_one(&other).await.unwrap(), 1);
    let (fresh, _fresh_conn) = connect(&ward, "alice", "fresh").await;
    assert_eq!(select_one(&fresh).await.unwrap(), 1);

    for id in [&idle_id, &busy_id] {
        assert_eq!(end_reason(&ward, id).await, "killed: locked: token leaked");
    }
    let controls = cli_json(&ward, &["controls", "--format", "json"]).await;
    assert_eq!(controls["locks"][0]["identity"], "ci-nightly");
    assert_eq!(controls["locks"][0]["reason"], "token leaked");
    let history = cli_json(&ward, &["controls", "--history", "--format", "json"]).await;
    assert_eq!(history["events"][0]["action"], "lock");
    assert_eq!(history["events"][0]["sessions_ended"], 2);

    // The lock outlives a restart.
    drop((other, fresh));
    tokio::task::block_in_place(|| ward.restart());
    let out = tokio::task::block_in_place(|| ward.psql("ci-nightly", TARGET, "select 1"));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("ward: identity \"ci-nightly\" is locked: token leaked"),
        "{stderr}"
    );
    let text = cli_ok(&ward, &["controls"]).await;
    assert!(
        text.starts_with("LOCKED") && text.contains("token leaked"),
        "{text}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| ward.psql_ok("alice", TARGET, "select 1")),
        "1"
    );

    // Unlocking restores access, and stays unlocked after another restart.
    let out = cli_ok(&ward, &["unlock", "ci-nightly"]).await;
    assert_eq!(out, "unlocked ci-nightly; it may connect again");
    let (back, _back_conn) = connect(&ward, "ci-nightly", "back").await;
    assert_eq!(select_one(&back).await.unwrap(), 1);
    drop(back);
    let out = cli_ok(&ward, &["unlock", "ci-nightly"]).await;
    assert_eq!(out, "ci-nightly was not locked; nothing changed");
    tokio::task::block_in_place(|| ward.restart());
    assert_eq!(
        tokio::task::block_in_place(|| ward.psql_ok("ci-nightly", TARGET, "select 1")),
        "1"
    );
    assert_eq!(
        cli_ok(&ward, &["controls"]).await,
        "No identity is locked or paused."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_holds_statements_until_resume() {
    let mut ward = start_ward("contain_pause");
    let (simple, _simple_conn) = connect(&ward, "ci-nightly", "simple").await;
    let (parsed, _parsed_conn) = connect(&ward, "ci-nightly", "parsed").await;
    let (prepared, _prepared_conn) = connect(&ward, "ci-nightly", "prepared").await;
    let (other, _other_conn) = connect(&ward, "alice", "other").await;
    // Prepared before the pause: executing it later sends only Bind/Execute/Sync.
    let statement = prepared.prepare("select $1::int + 1").await.unwrap();

    let out = cli_ok(&ward, &["pause", "ci-nightly", "--reason", "looking"]).await;
    assert!(
        out.starts_with("paused ci-nightly:") && out.contains("3 live sessions"),
        "{out}"
    );

    // One statement of each kind: a simple Query, an extended-protocol query (Parse, Bind,
    // Execute, Sync) and an Execute of a statement prepared before the pause.
    let held: Vec<(&str, JoinHandle<Result<i32, tokio_postgres::Error>>)> = vec![
        (
            "a simple query",
            tokio::spawn(async move {
                let rows = simple.simple_query("select 42").await?;
                Ok(rows
                    .iter()
                    .find_map(|m| match m {
                        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0)?.parse().ok(),
                        _ => None,
                    })
                    .unwrap_or(0))
            }),
        ),
        (
            "an extended-protocol query",
            tokio::spawn(async move {
                Ok(parsed
                    .query_one("select $1::int * 2", &[&21i32])
                    .await?
                    .get(0))
            }),
        ),
        (
            "an Execute of a prepared statement",
            tokio::spawn(
                async move { Ok(prepared.query_one(&statement, &[&41i32]).await?.get(0)) },
            ),
        ),
    ];
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (what, task) in &held {
        assert!(
            !task.is_finished(),
            "{what} ran while its identity was paused"
        );
    }
    // Other identities are not held; the paused one still connects (its statements wait).
    assert_eq!(select_one(&other).await.unwrap(), 1);
    let (late, _late_conn) = connect(&ward, "ci-nightly", "late").await;
    let late_query = tokio::spawn(async move { select_one(&late).await.map(|_| late) });

    let controls = wait_for_held(&ward, 4).await;
    assert_eq!(controls["pauses"][0]["reason"], "looking");
    assert_eq!(controls["pauses"][0]["live_sessions"], 4);

    let out = cli_ok(&ward, &["resume", "ci-nightly"]).await;
    assert_eq!(out, "resumed ci-nightly; released 4 held statements");
    for (what, task) in held {
        let value = tokio::time::timeout(PROMPTLY, task)
            .await
            .unwrap_or_else(|_| panic!("{what} is released"))
            .unwrap()
            .unwrap_or_else(|e| panic!("{what} failed: {e}"));
        assert_eq!(value, 42, "{what}");
    }
    let late = tokio::time::timeout(PROMPTLY, late_query)
        .await
        .expect("released")
        .unwrap()
        .unwrap();
    assert_eq!(select_one(&late).await.unwrap(), 1);
    drop(late);
    let out = cli_ok(&ward, &["resume", "ci-nightly"]).await;
    assert_eq!(out, "ci-nightly was not paused; nothing changed");

    // A pause outlives a restart too, and a held session can still be killed.
    cli_ok(&ward, &["pause", "ci-nightly"]).await;
    tokio::task::block_in_place(|| ward.restart());
    let (after, after_conn) = connect(&ward, "ci-nightly", "after-restart").await;
    let id = live_session_id(&ward, "after-restart").await;
    let waiting = tokio::spawn(async move { select_one(&after).await });
    wait_for_held(&ward, 1).await;
    assert!(!waiting.is_finished());
    cli_ok(&ward, &["kill", &id, "--reason", "stuck"]).await;
    // The error goes to the statement the client is waiting for.
    let e = tokio::time::timeout(PROMPTLY, waiting)
        .await
        .expect("the held statement ends")
        .unwrap()
        .expect_err("the held statement fails");
    let (code, message) = server_error(&e);
    assert_eq!(code, "57P01", "{message}");
    assert!(message.contains("ended by ward (stuck)"), "{message}");
    let _ = tokio::time::timeout(PROMPTLY, after_conn)
        .await
        .expect("the held session is closed");
    let out = cli_ok(&ward, &["resume", "ci-nightly"]).await;
    assert_eq!(out, "resumed ci-nightly; released 0 held statements");
}

/// `ward controls --format json` once the one pause in force holds `n` statements.
async fn wait_for_held(ward: &Ward, n: u64) -> Value {
    let deadline = Instant::now() + PROMPTLY;
    loop {
        let controls = cli_json(ward, &["controls", "--format", "json"]).await;
        if controls["pauses"][0]["held_statements"] == n {
            return controls;
        }
        assert!(
            Instant::now() < deadline,
            "never {n} statements held: {controls}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
