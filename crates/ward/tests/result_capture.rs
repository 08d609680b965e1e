//! Result capture: the first rows of each result kept in the statement's audit event
//! (`audit.capture`, per-rule `capture_rows` / `capture_bytes`), as the client received them
//! — masked where masking applies — through a real `ward serve` and a real PostgreSQL.

mod harness;

use harness::{AuthMethod, PgTarget, Postgres, Target, Ward, WardOptions, wait_until};
use serde_json::{Value, json};

const ID: &str = "ci";
const TARGET: &str = "shop";

/// A target with `items` (10 rows) and `secrets` (3 rows), owned by the target's user.
fn create_db(name: &str) -> PgTarget {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "create table items (id int primary key, name text, created date, active bool);
             insert into items select g, 'item ' || g, date '2026-01-01' + g, g % 2 = 0
               from generate_series(1, 10) g;
             create table secrets (id int, value text);
             insert into secrets values (1, 'alpha'), (2, 'beta'), (3, 'gamma');
             create table customers (id int, email text);
             insert into customers values (1, 'alice.secret@example.com'), (2, 'bob.hidden@example.org');
             alter table items owner to {user};
             alter table secrets owner to {user};
             alter table customers owner to {user}",
            user = db.user
        ),
    );
    db
}

fn start(name: &str, yaml: &str) -> Ward {
    let db = create_db(name);
    Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(ID)
            .extra_yaml(yaml),
    )
}

/// Every statement event in the session log, in order.
fn statement_events(ward: &Ward) -> Vec<Value> {
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    let mut stmt = db
        .prepare("SELECT body FROM event_log WHERE kind = 'statement' ORDER BY id")
        .unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .map(|body| serde_json::from_str(&body.unwrap()).unwrap())
        .collect()
}

/// The statement event whose text is `text`, once it is in the log.
fn event_for(ward: &Ward, text: &str) -> Value {
    wait_until(
        || {
            statement_events(ward)
                .into_iter()
                .find(|e| e["text"] == text)
        },
        &format!("the event of {text:?}"),
    )
}

fn psql_ok(ward: &Ward, sql: &str) -> String {
    ward.psql_ok(ID, TARGET, sql)
}

fn rows(sample: &Value) -> Vec<Vec<Option<String>>> {
    serde_json::from_value(sample["rows"].clone()).expect("rows of values or nulls")
}

fn row(values: &[&str]) -> Vec<Option<String>> {
    values.iter().map(|v| Some(v.to_string())).collect()
}

#[test]
fn capture_is_off_by_default() {
    let ward = start("capture_default", "");
    let out = psql_ok(&ward, "select id, name from items order by id");
    assert!(out.contains("item 10"), "{out}");
    let event = event_for(&ward, "select id, name from items order by id");
    assert_eq!(event["rows"], 10);
    assert!(
        event.get("result_sample").is_none(),
        "no sample unless configured: {event}"
    );
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).unwrap();
    let with_samples: i64 = db
        .query_row(
            "SELECT count(*) FROM event_log WHERE instr(body, 'result_sample') > 0",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(with_samples, 0);
}

#[test]
fn global_row_cap_keeps_the_first_rows_with_column_names() {
    let ward = start("capture_rows", "audit: { capture: { rows: 3 } }\n");
    psql_ok(
        &ward,
        "select id, name from items order by id; select id, value from secrets where id <= 2 order by id; insert into secrets values (9, 'new'); select null::text as nothing",
    );
    let ten = event_for(&ward, "select id, name from items order by id");
    assert_eq!(ten["rows"], 10, "every row still reached the client");
    let sample = &ten["result_sample"];
    assert_eq!(sample["columns"], json!(["id", "name"]), "{ten}");
    assert_eq!(
        rows(sample),
        vec![
            row(&["1", "item 1"]),
            row(&["2", "item 2"]),
            row(&["3", "item 3"])
        ]
    );
    assert_eq!(sample["truncated"], true);

    let two = event_for(
        &ward,
        "select id, value from secrets where id <= 2 order by id",
    );
    let sample = &two["result_sample"];
    assert_eq!(
        rows(sample),
        vec![row(&["1", "alpha"]), row(&["2", "beta"])]
    );
    assert_eq!(sample["truncated"], false, "the whole result fit");

    let insert = event_for(&ward, "insert into secrets values (9, 'new')");
    assert!(insert.get("result_sample").is_none(), "{insert}");
    let null = event_for(&ward, "select null::text as nothing");
    assert_eq!(null["result_sample"]["rows"], json!([[null]]), "{null}");

    // The admin API, `ward sessions show` and `ward replay --format json` show the samples.
    let id = null["session_id"].as_str().unwrap().to_string();
    let detail = ward.session_json(&id);
    let statements = detail["statements"].as_array().unwrap();
    let api_sample = statements
        .iter()
        .find(|s| s["text"] == "select id, name from items order by id")
        .map(|s| s["result_sample"].clone())
        .unwrap();
    assert_eq!(api_sample, ten["result_sample"], "{detail}");
    let insert_view = statements
        .iter()
        .find(|s| s["text"] == "insert into secrets values (9, 'new')")
        .unwrap();
    assert!(insert_view.get("result_sample").is_none(), "{insert_view}");
    let shown = ward.cli_ok(&["sessions", "show", &id]);
    assert!(
        shown.contains("    result sample (3 rows, truncated): id | name\n      1 | item 1\n"),
        "{shown}"
    );
    let replay: Value =
        serde_json::from_str(&ward.cli_ok(&["replay", &id, "--format", "json"])).unwrap();
    let step = replay
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["statement"] == "select id, name from items order by id")
        .unwrap();
    assert_eq!(step["result_sample"], ten["result_sample"], "{replay}");
}

#[test]
fn byte_cap_truncates_the_sample() {
    let ward = start(
        "capture_bytes",
        "audit: { capture: { rows: 100, bytes: 10 } }\n",
    );
    let sql = "select repeat('x', 6) as x from generate_series(1, 5)";
    psql_ok(&ward, sql);
    let sample = event_for(&ward, sql)["result_sample"].clone();
    assert_eq!(sample["columns"], json!(["x"]));
    assert_eq!(rows(&sample), vec![row(&["xxxxxx"]), row(&["xxxx"])]);
    assert_eq!(sample["truncated"], true);
}

#[test]
fn rules_override_the_global_cap_both_ways() {
    // Global capture on; a rule switches it off for statements reading `secrets`.
    let ward = start(
        "capture_rule_off",
        "audit: { capture: { rows: 5 } }
rules:
  - { name: no-secret-samples, tables: [secrets], action: log, capture_rows: 0 }
",
    );
    psql_ok(&ward, "select value from secrets order by id");
    psql_ok(&ward, "select name from items where id = 1");
    let secret = event_for(&ward, "select value from secrets order by id");
    assert!(secret.get("result_sample").is_none(), "{secret}");
    let item = event_for(&ward, "select name from items where id = 1");
    assert_eq!(rows(&item["result_sample"]), vec![row(&["item 1"])]);
    drop(ward);

    // Global capture off; a rule turns it on (2 rows) for statements reading `items`.
    let ward = start(
        "capture_rule_on",
        "rules:
  - { name: sample-items, tables: [items], action: allow, capture_rows: 2 }
",
    );
    psql_ok(&ward, "select id from items order by id");
    psql_ok(&ward, "select value from secrets order by id");
    let item = event_for(&ward, "select id from items order by id");
    let sample = &item["result_sample"];
    assert_eq!(rows(sample), vec![row(&["1"]), row(&["2"])]);
    assert_eq!(sample["truncated"], true);
    let secret = event_for(&ward, "select value from secrets order by id");
    assert!(secret.get("result_sample").is_none(), "{secret}");
}

/// Bytes of every file of the store (the database, its WAL and shared memory).
fn store_bytes(ward: &Ward) -> Vec<u8> {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(ward.data_dir()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.starts_with("ward.db") {
            all.extend(std::fs::read(&path).unwrap());
        }
    }
    all
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_columns_are_masked_in_the_sample_and_never_stored_in_clear() {
    let ward = start(
        "capture_masked",
        "audit: { capture: { rows: 10 } }
masking:
  rules:
    - { name: pii, columns: ['*.email'], detectors: all, strategy: redact }
    - { name: vault, columns: ['secrets.value'], strategy: redact }
",
    );
    // A column rule alone (no detector would recognise the value): the sample holds what
    // the client was sent, not the row as the target produced it.
    psql_ok(&ward, "select id, value from secrets where id = 1");
    let vault = event_for(&ward, "select id, value from secrets where id = 1");
    assert_eq!(
        rows(&vault["result_sample"]),
        vec![row(&["1", "*****"])],
        "{vault}"
    );
    // Text format (psql).
    let out = psql_ok(&ward, "select id, email from customers order by id");
    assert!(!out.contains("alice.secret@example.com"), "{out}");
    let event = event_for(&ward, "select id, email from customers order by id");
    let sample = &event["result_sample"];
    assert_eq!(sample["columns"], json!(["id", "email"]));
    let values = rows(sample);
    assert_eq!(values.len(), 2);
    let email = values[0][1].clone().unwrap();
    assert!(
        email.starts_with('a') && email.ends_with("@*******.com") && email.contains('*'),
        "masked in the sample: {email}"
    );
    assert_eq!(values[0][0].as_deref(), Some("1"));

    // Binary format (tokio-postgres, extended protocol), and a value only a detector finds.
    let (client, conn) = ward.client(ID, TARGET).await;
    let got: String = client
        .query_one("select email from customers where id = $1", &[&2i32])
        .await
        .unwrap()
        .get(0);
    assert!(!got.contains("bob.hidden"), "{got}");
    client
        .simple_query("select 'write to carol.clear@example.net' as note")
        .await
        .unwrap();
    drop(client);
    let _ = conn.await;
    let bin = event_for(&ward, "select email from customers where id = $1");
    let values = rows(&bin["result_sample"]);
    assert_eq!(values[0][0].as_deref(), Some(got.as_str()), "{bin}");
    // Its text is masked in the audit too, so it is found by its start.
    let note = wait_until(
        || {
            statement_events(&ward).into_iter().find(|e| {
                e["text"]
                    .as_str()
                    .is_some_and(|t| t.starts_with("select 'write to "))
            })
        },
        "the event of the note",
    );
    let note_value = rows(&note["result_sample"])[0][0].clone().unwrap();
    assert!(
        note_value.starts_with("write to ") && !note_value.contains("carol.clear"),
        "{note_value}"
    );

    // The clear values appear nowhere in the store: not in the sample, not anywhere else.
    // (The statement text with the literal email is masked too.)
    let store = store_bytes(&ward);
    for clear in [
        "alice.secret@example.com",
        "bob.hidden@example.org",
        "carol.clear@example.net",
        "alpha",
    ] {
        assert!(!contains(&store, clear), "{clear} is in the store in clear");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_binary_results_are_captured() {
    let ward = start("capture_binary", "audit: { capture: { rows: 2 } }\n");
    let (client, conn) = ward.client(ID, TARGET).await;
    let stmt = client
        .prepare("select id, name, created, active from items where id <= $1 order by id")
        .await
        .unwrap();
    let got = client.query(&stmt, &[&3i32]).await.unwrap();
    assert_eq!(got.len(), 3);
    let one = client
        .query(&stmt, &[&1i32])
        .await
        .expect("the same statement again");
    assert_eq!(one.len(), 1);
    drop(client);
    let _ = conn.await;

    let events: Vec<Value> = wait_until(
        || {
            let events: Vec<Value> = statement_events(&ward)
                .into_iter()
                .filter(|e| {
                    e["text"]
                        == "select id, name, created, active from items where id <= $1 order by id"
                })
                .collect();
            (events.len() == 2).then_some(events)
        },
        "both executes in the log",
    );
    assert_eq!(events[0]["origin"], "execute");
    let sample = &events[0]["result_sample"];
    assert_eq!(
        sample["columns"],
        json!(["id", "name", "created", "active"]),
        "{}",
        events[0]
    );
    assert_eq!(
        rows(sample),
        vec![
            row(&["1", "item 1", "2026-01-02", "false"]),
            row(&["2", "item 2", "2026-01-03", "true"]),
        ]
    );
    assert_eq!(sample["truncated"], true);
    let sample = &events[1]["result_sample"];
    assert_eq!(
        rows(sample),
        vec![row(&["1", "item 1", "2026-01-02", "false"])]
    );
    assert_eq!(sample["truncated"], false);
}
