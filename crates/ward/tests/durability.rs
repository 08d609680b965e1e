//! Strict audit: ward forwards a statement only once its event is on disk. Killing ward
//! with SIGKILL in the middle of a write workload must never leave a statement the target
//! ran without its event in ward's log, and every session's chain must still verify.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions};
use std::collections::BTreeSet;
use std::time::Duration;

const WRITERS: u64 = 4;
const CRASHES: usize = 4;

/// A target database where every inserted row is also noted, by a trigger, in `executed`:
/// the target's own record of what it ran.
fn target_with_trigger(name: &str) -> harness::PgTarget {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "CREATE TABLE t (n bigint PRIMARY KEY);
             CREATE TABLE executed (n bigint NOT NULL, at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION note_insert() RETURNS trigger LANGUAGE plpgsql AS
               $$BEGIN INSERT INTO executed (n) VALUES (NEW.n); RETURN NEW; END$$;
             CREATE TRIGGER noted AFTER INSERT ON t FOR EACH ROW EXECUTE FUNCTION note_insert();
             GRANT ALL ON t, executed TO {user};",
            user = harness::quote_ident(&db.user)
        ),
    );
    db
}

/// Inserts rows numbered from `base` until ward goes away; half by simple Query (the
/// number in the SQL text), half by a prepared statement (the number as a parameter).
async fn write_until_gone(config: tokio_postgres::Config, base: u64) {
    let Ok((client, connection)) = config.connect(harness::insecure_connector()).await else {
        return;
    };
    let _connection = tokio::spawn(connection);
    let Ok(insert) = client.prepare("INSERT INTO t (n) VALUES ($1)").await else {
        return;
    };
    for i in 0.. {
        let n = (base + i) as i64;
        let done = if i % 2 == 0 {
            client
                .simple_query(&format!("INSERT INTO t (n) VALUES ({n})"))
                .await
                .map(|_| ())
        } else {
            client.execute(&insert, &[&n]).await.map(|_| ())
        };
        if done.is_err() {
            return;
        }
    }
}

/// The row numbers whose insert appears in ward's log (a command or statement event).
fn logged_numbers(ward: &Ward) -> BTreeSet<i64> {
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    let mut stmt = db
        .prepare("SELECT body FROM event_log WHERE kind IN ('command', 'statement')")
        .unwrap();
    let bodies: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let mut found = BTreeSet::new();
    for body in bodies {
        let event: serde_json::Value = serde_json::from_str(&body).unwrap();
        let text = event["text"].as_str().unwrap_or_default();
        if let Some(rest) = text.strip_prefix("INSERT INTO t (n) VALUES (")
            && let Some(n) = rest.strip_suffix(')').and_then(|n| n.parse().ok())
        {
            found.insert(n);
        }
        if let Some(params) = event["params"].as_str()
            && let Some(value) = params.strip_prefix("$1=")
            && let Ok(n) = value.trim_matches('\'').parse()
        {
            found.insert(n);
        }
    }
    found
}

#[test]
fn every_statement_the_target_ran_survives_sigkill_in_the_log() {
    let db = target_with_trigger("durable_crash");
    let mut ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci"),
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..CRASHES {
        runtime.block_on(async {
            let writers = (0..WRITERS).map(|w| {
                write_until_gone(
                    ward.pg_config("ci", "shop"),
                    (round as u64 * WRITERS + w) * 1_000_000,
                )
            });
            let run = futures_util::future::join_all(writers);
            // Let the writers get going, then pull the plug mid-stream.
            let crash = async {
                tokio::time::sleep(Duration::from_millis(400 + 150 * round as u64)).await;
            };
            tokio::pin!(run);
            tokio::select! {
                _ = &mut run => panic!("the writers stopped before ward was killed"),
                _ = crash => {}
            }
            // SIGKILL and restart while the writers are still sending.
            ward.crash_and_restart();
            let _ = tokio::time::timeout(Duration::from_secs(20), run).await;
        });
    }
    ward.stop();

    let executed: BTreeSet<i64> = Postgres::get()
        .admin_sql(&db.database, "SELECT n FROM executed ORDER BY n")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert!(
        executed.len() > 50 * CRASHES,
        "the workload ran too little to show anything: {} rows",
        executed.len()
    );
    let logged = logged_numbers(&ward);
    let missing: Vec<_> = executed.difference(&logged).take(10).collect();
    assert!(
        missing.is_empty(),
        "the target ran inserts that ward's log does not have (first few: {missing:?}); {} executed, {} logged",
        executed.len(),
        logged.len()
    );

    // Every chain, including those of the sessions the crashes cut short, verifies.
    let out = ward.cli(&["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", harness::describe(&out));
    assert!(!stdout.contains("TAMPERED"), "{stdout}");
}

/// Strict audit with the smallest journal, so that a store that cannot take events soon
/// leaves ward with nowhere to record them.
const SMALL_JOURNAL: &str = "audit: { durable_timeout: 1s, journal_size: 65536";

/// With the store locked by another process, inserts numbered from `from` until ward
/// refuses one: the journal takes events until it is full, then
/// nothing can be recorded. Returns psql's stderr.
fn insert_until_refused(ward: &Ward, from: i64) -> String {
    let script: String = (from..from + 1000)
        .map(|n| format!("INSERT INTO t (n) VALUES ({n});\n"))
        .collect();
    let path = ward.data_dir().join(format!("fill-{from}.sql"));
    std::fs::write(&path, script).unwrap();
    let out = ward.psql_args(
        &ward.conninfo("ci", "shop"),
        &["-At", "-f", path.to_str().unwrap()],
    );
    assert!(
        !out.status.success(),
        "ward kept accepting statements it cannot record: {}",
        harness::describe(&out)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn executed(db: &harness::PgTarget) -> BTreeSet<i64> {
    Postgres::get()
        .admin_sql(&db.database, "SELECT n FROM executed ORDER BY n")
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

#[test]
fn a_statement_that_cannot_be_recorded_is_not_sent() {
    let db = target_with_trigger("durable_refuse");
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci")
            .extra_yaml(&format!("{SMALL_JOURNAL} }}\n")),
    );
    ward.psql_ok("ci", "shop", "INSERT INTO t (n) VALUES (1)");
    // Another process holds the store's write lock: events pile up in the journal.
    let store =
        rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    store.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let stderr = insert_until_refused(&ward, 100);
    assert!(
        stderr.contains("not sent to the target because the audit log could not record it"),
        "{stderr}"
    );
    let ran = executed(&db);
    let accepted: Vec<i64> = ran.iter().copied().filter(|n| *n >= 100).collect();
    assert!(
        !accepted.is_empty(),
        "the journal takes events while the store is locked"
    );
    let refused = accepted.last().unwrap() + 1;
    assert_eq!(
        accepted,
        (100..refused).collect::<Vec<_>>(),
        "statements run in order up to the refused one, which did not run"
    );
    // Long enough for the writer's own attempt to fail too (its busy timeout is 5 s).
    std::thread::sleep(Duration::from_secs(6));
    store.execute_batch("ROLLBACK").unwrap();
    // Everything accepted while the store was locked reaches it from the journal.
    harness::wait_for(
        || ran.is_subset(&logged_numbers(&ward)),
        "the journaled inserts in the store",
    );
    assert!(!logged_numbers(&ward).contains(&refused));
    // Once the store is writable again, sessions work as before.
    ward.psql_ok("ci", "shop", "INSERT INTO t (n) VALUES (3)");
    assert!(executed(&db).contains(&3));
    assert!(
        ward.log().contains("a command could not be recorded"),
        "ward logs the refusal"
    );
}

#[test]
fn a_read_that_cannot_be_recorded_releases_no_result() {
    let db = target_with_trigger("durable_withhold");
    let start = |overlap: bool| {
        Ward::start(
            WardOptions::new()
                .target(Target::postgres("shop", &db))
                .token("ci")
                .extra_yaml(&format!("{SMALL_JOURNAL}, overlap_reads: {overlap} }}\n")),
        )
    };
    for (overlap, from) in [(true, 1000), (false, 2000)] {
        let ward = start(overlap);
        if overlap {
            ward.psql_ok("ci", "shop", "INSERT INTO t (n) VALUES (4242)");
        }
        let store =
            rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
        store.execute_batch("BEGIN EXCLUSIVE").unwrap();
        insert_until_refused(&ward, from);
        let out = ward.psql("ci", "shop", "SELECT n * 10 AS marked FROM t");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(!out.status.success(), "{}", harness::describe(&out));
        assert!(
            !stdout.contains("42420"),
            "no row may escape unrecorded: {stdout}"
        );
        let expected = if overlap {
            // The read went to the target while its event was committed; the commit failed.
            "the result was withheld because the audit log could not record the statement"
        } else {
            "not sent to the target because the audit log could not record it"
        };
        assert!(stderr.contains(expected), "overlap {overlap}: {stderr}");
        std::thread::sleep(Duration::from_secs(6));
        store.execute_batch("ROLLBACK").unwrap();
        harness::wait_for(
            || {
                let out = ward.psql("ci", "shop", "SELECT n * 10 AS marked FROM t");
                out.status.success() && String::from_utf8_lossy(&out.stdout).contains("42420")
            },
            "reads to work again once the store is writable",
        );
    }
}

#[test]
fn a_command_in_flight_when_ward_dies_replays_as_sent_without_result() {
    let db = Postgres::get().create_target("durable_inflight", AuthMethod::ScramSha256);
    let mut ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("ci"),
    );
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (client, _conn) = runtime.block_on(ward.client("ci", "shop"));
    runtime.block_on(client.simple_query("SELECT 1")).unwrap();
    let sleeping = runtime.spawn(async move {
        let _ = client
            .simple_query("SELECT pg_sleep(30) AS in_flight")
            .await;
    });
    // The command is durable before it is sent: once PostgreSQL runs it, kill ward.
    harness::wait_for(
        || {
            Postgres::get()
                .admin_sql(
                    "postgres",
                    "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'",
                )
                .trim()
                == "1"
        },
        "the sleep to run on the target",
    );
    ward.crash_and_restart();
    sleeping.abort();
    let id = harness::wait_until(
        || {
            let json = ward.sessions_json();
            let s = &json["sessions"][0];
            (s["active"] == false).then(|| s["id"].as_str().unwrap().to_string())
        },
        "the cut-short session to be listed as ended",
    );
    let out = ward.cli_ok(&["replay", &id]);
    assert!(out.contains("SENT, NO RESULT"), "{out}");
    assert!(out.contains("SELECT pg_sleep(30) AS in_flight"), "{out}");
    assert!(
        out.contains("ward stopped before the session ended"),
        "{out}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ward.cli_ok(&["replay", &id, "--format", "json"])).unwrap();
    let steps = json.as_array().unwrap();
    assert_eq!(steps.len(), 2, "{json}");
    assert_eq!(steps[1]["unanswered"], true, "{json}");
    assert!(steps[0].get("unanswered").is_none(), "{json}");
    let out = ward.cli(&["verify", &id]);
    assert!(out.status.success(), "{}", harness::describe(&out));
    let _ = Postgres::get().admin_sql(
        "postgres",
        "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(30)%'",
    );
}
