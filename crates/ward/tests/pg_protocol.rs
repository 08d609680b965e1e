//! PostgreSQL protocol coverage through a real `ward serve`.
//!
//! Real clients (psql, pgbench, tokio-postgres, and for Flush a minimal hand-written client
//! over TLS) talk through ward to the harness's real PostgreSQL. Every test compares what the
//! client receives with what PostgreSQL really holds or returns, and most also read the
//! audit (`ward sessions show --format json`) to check that each statement was recorded with
//! the right text, row count and SQLSTATE.
//!
//! Sessions are told apart by `application_name` (ward records it as `client_program`).

mod harness;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use harness::{AuthMethod, PgTarget, Postgres, Target, Ward, WardOptions, expect_success};
use serde_json::Value;
use std::future::{Future, poll_fn};
use std::io::{Read, Write};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_postgres::error::SqlState;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::types::Type;
use tokio_postgres::{AsyncMessage, Client, Connection, SimpleQueryMessage, Socket};
use tokio_postgres_rustls::MakeRustlsConnect;

const IDENTITY: &str = "alice";
const TARGET: &str = "app-db";

/// A connection through ward that the test drives itself (to see notices, notifications
/// and parameter changes).
type WardConnection = Connection<Socket, <MakeRustlsConnect as MakeTlsConnect<Socket>>::Stream>;

// ---------------------------------------------------------------------------------------
// Setup and audit helpers
// ---------------------------------------------------------------------------------------

/// A fresh target database and a ward in front of it with a token for [`IDENTITY`].
struct Env {
    db: PgTarget,
    ward: Ward,
}

fn start(name: &str) -> Env {
    let db = Postgres::get().create_target(name, AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres(TARGET, &db))
            .token(IDENTITY)
            // Procedural code and unparseable input are denied by default; these tests
            // exercise the protocol with DO blocks (notices), fast-path function calls
            // (large objects) and the server's own syntax errors.
            .extra_yaml(
                "policy: { unparseable: allow }\nrules:\n  - { name: protocol-tests-run-procedural-code, statements: [do, function_call], action: allow }\n",
            ),
    );
    Env { db, ward }
}

impl Env {
    /// libpq conninfo through ward, with `application_name` set to `app`.
    fn conninfo(&self, app: &str) -> String {
        format!(
            "{} application_name={}",
            self.ward.conninfo(IDENTITY, TARGET),
            harness::conninfo_quote(app)
        )
    }

    /// `psql -X -v ON_ERROR_STOP=1 -d <conninfo> ARGS…` through ward.
    fn psql(&self, app: &str, args: &[&str]) -> Output {
        self.ward.psql_args(&self.conninfo(app), args)
    }

    /// Like [`Env::psql`], failing the test if psql failed; stdout without the last newline.
    fn psql_ok(&self, app: &str, args: &[&str]) -> String {
        expect_success(self.psql(app, args), &format!("psql {args:?}"))
    }

    fn pg_config(&self, app: &str) -> tokio_postgres::Config {
        let mut config = self.ward.pg_config(IDENTITY, TARGET);
        config.application_name(app);
        config
    }

    /// A tokio-postgres client through ward whose connection runs in a spawned task.
    async fn client(
        &self,
        app: &str,
    ) -> (
        Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        self.ward
            .try_client(self.pg_config(app))
            .await
            .unwrap_or_else(|e| panic!("connect through ward as {app}: {e}"))
    }

    /// A tokio-postgres client through ward whose connection the test drives (see [`drive`]).
    async fn driven_client(&self, app: &str) -> (Client, WardConnection) {
        self.pg_config(app)
            .connect(harness::insecure_connector())
            .await
            .unwrap_or_else(|e| panic!("connect through ward as {app}: {e}"))
    }

    /// SQL as superuser directly on the target database (not through ward).
    fn admin(&self, sql: &str) -> String {
        Postgres::get().admin_sql(&self.db.database, sql)
    }

    /// Every session ward recorded (newest first).
    fn sessions(&self) -> Vec<Value> {
        let text = self
            .ward
            .cli_ok(&["sessions", "list", "--format", "json", "--limit", "1000"]);
        let v: Value = serde_json::from_str(&text).expect("sessions list is JSON");
        v["sessions"].as_array().cloned().unwrap_or_default()
    }

    /// The sessions of `app`, once at least `min` of them exist and all have ended (so
    /// every statement event of theirs is in the store).
    fn ended_sessions(&self, app: &str, min: usize) -> Vec<Value> {
        harness::wait_until(
            || {
                let mine: Vec<Value> = self
                    .sessions()
                    .into_iter()
                    .filter(|s| s["client_program"] == app)
                    .collect();
                (mine.len() >= min && mine.iter().all(|s| s["active"] == false)).then_some(mine)
            },
            &format!("{min} ended session(s) of {app} in the audit"),
        )
    }

    /// The recorded statements of the one (ended) session of `app`, in order.
    fn audit(&self, app: &str) -> Vec<Value> {
        let sessions = self.ended_sessions(app, 1);
        assert_eq!(sessions.len(), 1, "one session of {app}: {sessions:#?}");
        self.statements_of(&sessions[0])
    }

    fn statements_of(&self, session: &Value) -> Vec<Value> {
        let id = session["id"].as_str().expect("session id");
        let detail = self.ward.session_json(id);
        let statements = detail["statements"]
            .as_array()
            .cloned()
            .unwrap_or_else(|| panic!("no statements array in {detail}"));
        let seqs: Vec<u64> = statements
            .iter()
            .map(|s| s["seq"].as_u64().unwrap())
            .collect();
        let expected: Vec<u64> = (1..=statements.len() as u64).collect();
        assert_eq!(seqs, expected, "statement seq numbers are 1..n in order");
        statements
    }
}

/// One audited statement, reduced to what the tests compare.
#[derive(Debug, PartialEq, Eq)]
struct Audited {
    origin: String,
    text: String,
    rows: Option<u64>,
    command: Option<String>,
    sqlstate: Option<String>,
}

fn audited(s: &Value) -> Audited {
    let opt = |k: &str| s[k].as_str().map(str::to_string);
    Audited {
        origin: s["origin"].as_str().unwrap_or_default().to_string(),
        text: s["text"].as_str().unwrap_or_default().to_string(),
        rows: s["rows"].as_u64(),
        command: opt("command"),
        sqlstate: opt("sqlstate"),
    }
}

fn ok(origin: &str, text: &str, rows: Option<u64>, command: &str) -> Audited {
    Audited {
        origin: origin.into(),
        text: text.into(),
        rows,
        command: Some(command.into()),
        sqlstate: None,
    }
}

fn failed(origin: &str, text: &str, sqlstate: &str) -> Audited {
    Audited {
        origin: origin.into(),
        text: text.into(),
        rows: None,
        command: None,
        sqlstate: Some(sqlstate.into()),
    }
}

fn all_audited(statements: &[Value]) -> Vec<Audited> {
    statements.iter().map(audited).collect()
}

/// How parameter `$n` is shown in an audited `params` string (`$1=…, $2=…`).
fn param(params: &str, n: usize) -> &str {
    let tag = format!("${n}=");
    let start = if params.starts_with(&tag) {
        tag.len()
    } else {
        params
            .find(&format!(", {tag}"))
            .map(|i| i + 2 + tag.len())
            .unwrap_or_else(|| panic!("no ${n} in the recorded params {params:?}"))
    };
    let rest = &params[start..];
    let end = rest
        .find(&format!(", ${}=", n + 1))
        .or_else(|| rest.find(", …"))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// ward records a binary parameter as hex or, for types it can decode, as the value.
fn assert_binary_param(params: &str, n: usize, bytes: &[u8], value: &str) {
    let shown = param(params, n);
    let as_hex = format!("\\x{}", hex::encode(bytes));
    assert!(
        shown == as_hex || shown == value,
        "${n} recorded as {shown:?}; expected {as_hex:?} or {value:?} (params: {params})"
    );
}

/// MD5 of `data` as lower-case hex, computed by coreutils' `md5sum` (to compare with
/// PostgreSQL's `md5()` computed on the server).
fn md5_hex(data: &[u8]) -> String {
    let mut child = Command::new("md5sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run md5sum");
    // md5sum prints only after reading everything, so writing first cannot deadlock.
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(data)
        .expect("write to md5sum");
    let out = child.wait_with_output().expect("md5sum");
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .expect("md5sum output")
        .to_string()
}

/// Deterministic pseudo-random bytes (xorshift), so big payloads are not trivially regular.
fn pseudo_random(len: usize, mut seed: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len);
    while out.len() < len {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        out.extend_from_slice(&seed.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// Pseudo-random alphanumeric text.
fn pseudo_random_text(len: usize, seed: u64) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    pseudo_random(len, seed)
        .into_iter()
        .map(|b| ALPHABET[b as usize % ALPHABET.len()] as char)
        .collect()
}

/// Runs `fut` (which uses the client of `conn`) while driving `conn`, collecting the
/// notices and notifications that arrive meanwhile into `seen`.
async fn drive<S, T, F>(
    conn: &mut Connection<S, T>,
    seen: &mut Vec<AsyncMessage>,
    fut: F,
) -> F::Output
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
    F: Future,
{
    let deadline = tokio::time::sleep(Duration::from_secs(60));
    tokio::pin!(fut, deadline);
    loop {
        tokio::select! {
            out = &mut fut => return out,
            msg = poll_fn(|cx| conn.poll_message(cx)) => match msg {
                Some(Ok(m)) => seen.push(m),
                Some(Err(e)) => panic!("the connection through ward failed: {e}"),
                None => panic!("the connection through ward closed while a request was running"),
            },
            _ = &mut deadline => panic!("a request through ward did not finish within 60 s"),
        }
    }
}

/// The next notice or notification on an idle driven connection.
async fn next_async_message<S, T>(conn: &mut Connection<S, T>, what: &str) -> AsyncMessage
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    match tokio::time::timeout(harness::WAIT_TIMEOUT, poll_fn(|cx| conn.poll_message(cx))).await {
        Ok(Some(Ok(m))) => m,
        Ok(Some(Err(e))) => panic!("waiting for {what}: connection failed: {e}"),
        Ok(None) => panic!("waiting for {what}: connection closed"),
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

/// Drops the client and runs its connection to the end (Terminate sent, socket closed).
async fn close_driven<S, T>(client: Client, mut conn: Connection<S, T>)
where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(m) = poll_fn(|cx| conn.poll_message(cx)).await {
            m.expect("connection ends cleanly");
        }
    })
    .await
    .expect("the connection closes after the client is dropped");
}

async fn close(client: Client, conn: tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>) {
    drop(client);
    conn.await
        .expect("connection task")
        .expect("connection ends cleanly");
}

fn sqlstate(e: &tokio_postgres::Error) -> Option<&str> {
    e.code().map(SqlState::code)
}

/// The simple-query messages as comparable strings.
fn render(messages: &[SimpleQueryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| match m {
            SimpleQueryMessage::Row(row) => {
                let values: Vec<&str> = (0..row.len())
                    .map(|i| row.get(i).unwrap_or("NULL"))
                    .collect();
                format!("row {}", values.join("|"))
            }
            SimpleQueryMessage::CommandComplete(n) => format!("complete {n}"),
            SimpleQueryMessage::RowDescription(cols) => {
                let names: Vec<&str> = cols.iter().map(|c| c.name()).collect();
                format!("columns {}", names.join(","))
            }
            _ => "other".to_string(),
        })
        .collect()
}

/// Counts pg_sleep calls running on `database` (checked directly on the server).
fn running_sleeps(database: &str) -> u32 {
    Postgres::get()
        .admin_sql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where datname = '{database}' \
                 and state = 'active' and query like 'select pg_sleep%'"
            ),
        )
        .parse()
        .expect("a count")
}

// ---------------------------------------------------------------------------------------
// Simple query
// ---------------------------------------------------------------------------------------

#[test]
fn multi_statement_query_returns_every_result() {
    let env = start("multi_psql");
    let out = env.psql_ok(
        "multi-psql",
        &[
            "-At",
            "-c",
            "select 1 as one; select 'two', 2; select g from generate_series(1, 3) g",
        ],
    );
    // psql 15 shows the result of every statement of the string.
    assert_eq!(out, "1\ntwo|2\n1\n2\n3");

    assert_eq!(
        all_audited(&env.audit("multi-psql")),
        vec![
            ok("simple", "select 1 as one", Some(1), "SELECT"),
            ok("simple", "select 'two', 2", Some(1), "SELECT"),
            ok(
                "simple",
                "select g from generate_series(1, 3) g",
                Some(3),
                "SELECT"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_with_several_statements_matches_postgres_and_audits_each() {
    let env = start("multi_tokio");
    const SCRIPT: &str = "create temp table t (a int, b text); \
        insert into t select i, 'r' || i from generate_series(1, 5) i; \
        update t set b = 'big' where a > 2; \
        select a, b from t order by a; \
        delete from t where a < 3";

    let (client, conn) = env.client("multi-tokio").await;
    let via_ward = render(&client.simple_query(SCRIPT).await.unwrap());
    close(client, conn).await;

    let (direct, direct_conn) = Postgres::get()
        .client(&env.db.database, &env.db.user, &env.db.password)
        .await;
    let from_postgres = render(&direct.simple_query(SCRIPT).await.unwrap());
    close(direct, direct_conn).await;

    assert_eq!(
        via_ward, from_postgres,
        "ward changed the simple-query results"
    );
    assert_eq!(
        via_ward,
        [
            "complete 0",
            "complete 5",
            "complete 3",
            "columns a,b",
            "row 1|r1",
            "row 2|r2",
            "row 3|big",
            "row 4|big",
            "row 5|big",
            "complete 5",
            "complete 2",
        ]
    );

    assert_eq!(
        all_audited(&env.audit("multi-tokio")),
        vec![
            ok(
                "simple",
                "create temp table t (a int, b text)",
                None,
                "CREATE TABLE"
            ),
            ok(
                "simple",
                "insert into t select i, 'r' || i from generate_series(1, 5) i",
                Some(5),
                "INSERT"
            ),
            ok(
                "simple",
                "update t set b = 'big' where a > 2",
                Some(3),
                "UPDATE"
            ),
            ok("simple", "select a, b from t order by a", Some(5), "SELECT"),
            ok("simple", "delete from t where a < 3", Some(2), "DELETE"),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Extended protocol
// ---------------------------------------------------------------------------------------

/// Values for the six parameters of [`TYPED_SQL`].
type TypedCase = (i64, f64, Vec<u8>, Vec<Option<String>>, String, Option<i32>);

const TYPED_SQL: &str = "select $1::int8 as i, $2::float8 as f, $3::bytea as b, \
     $4::text[] as arr, $5::text as s, $6::int4 as n, \
     $1::int8::text as i_text, $2::float8 * 2 as f_twice, md5($3::bytea) as b_md5, \
     length($3::bytea) as b_len, cardinality($4::text[]) as arr_len, \
     array_to_string($4::text[], '|', 'NULL') as arr_text, octet_length($5::text) as s_len, \
     $6::int4 is null as n_null";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_round_trips_binary_parameters_and_results() {
    let env = start("binary");
    let (client, conn) = env.client("binary").await;
    let stmt = client.prepare(TYPED_SQL).await.unwrap();
    // Describe told the client the parameter types the server inferred.
    assert_eq!(
        stmt.params(),
        &[
            Type::INT8,
            Type::FLOAT8,
            Type::BYTEA,
            Type::TEXT_ARRAY,
            Type::TEXT,
            Type::INT4
        ]
    );

    // 3 MB of bytea: the Bind message and the DataRow both cross ward's buffer size.
    let big: Vec<u8> = (0..3 * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    let cases: Vec<TypedCase> = vec![
        (
            i64::MAX,
            0.1 + 0.2,
            big,
            vec![
                Some("a".into()),
                Some(String::new()),
                None,
                Some("with,comma".into()),
                Some("ünï\"cødé 🌍".into()),
            ],
            "héllo wörld 🌍".into(),
            None,
        ),
        (
            i64::MIN,
            -2.5,
            (0..=255).collect(),
            Vec::new(),
            String::new(),
            Some(-7),
        ),
    ];
    for (i, f, b, arr, s, n) in &cases {
        let rows = client.query(&stmt, &[i, f, b, arr, s, n]).await.unwrap();
        assert_eq!(rows.len(), 1);
        let row = &rows[0];
        // The values come back exactly (binary results).
        assert_eq!(row.get::<_, i64>("i"), *i);
        assert_eq!(row.get::<_, f64>("f").to_bits(), f.to_bits());
        assert!(row.get::<_, Vec<u8>>("b") == *b, "bytea changed in transit");
        assert_eq!(row.get::<_, Vec<Option<String>>>("arr"), *arr);
        assert_eq!(row.get::<_, String>("s"), *s);
        assert_eq!(row.get::<_, Option<i32>>("n"), *n);
        // And the server computed with exactly the values sent (binary parameters).
        assert_eq!(row.get::<_, String>("i_text"), i.to_string());
        assert_eq!(row.get::<_, f64>("f_twice").to_bits(), (f * 2.0).to_bits());
        assert_eq!(row.get::<_, String>("b_md5"), md5_hex(b));
        assert_eq!(row.get::<_, i32>("b_len") as usize, b.len());
        assert_eq!(row.get::<_, i32>("arr_len") as usize, arr.len());
        let joined: Vec<&str> = arr.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
        assert_eq!(row.get::<_, String>("arr_text"), joined.join("|"));
        assert_eq!(row.get::<_, i32>("s_len") as usize, s.len());
        assert_eq!(row.get::<_, bool>("n_null"), n.is_none());
    }
    close(client, conn).await;

    let audit = env.audit("binary");
    assert_eq!(
        all_audited(&audit),
        vec![
            ok("execute", TYPED_SQL, Some(1), "SELECT"),
            ok("execute", TYPED_SQL, Some(1), "SELECT"),
        ]
    );
    // Binary parameters are recorded, capped (the 3 MB bytea is cut short).
    let params = audit[0]["params"].as_str().expect("params recorded");
    assert_binary_param(params, 1, &i64::MAX.to_be_bytes(), &i64::MAX.to_string());
    let f = 0.1f64 + 0.2;
    assert_binary_param(params, 2, &f.to_be_bytes(), &f.to_string());
    assert!(param(params, 3).starts_with("\\x00010203"), "{params}");
    assert!(
        params.len() < 4096,
        "params were not capped: {} bytes",
        params.len()
    );
    let params = audit[1]["params"].as_str().expect("params recorded");
    assert_binary_param(params, 1, &i64::MIN.to_be_bytes(), &i64::MIN.to_string());
    assert_binary_param(params, 2, &(-2.5f64).to_be_bytes(), "-2.5");
    assert_binary_param(params, 6, &(-7i32).to_be_bytes(), "-7");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_reports_the_same_types_and_columns_as_postgres() {
    let env = start("describe");
    const SQL: &str = "select $1::int8 + 1 as next, $2::text || '!' as shout, \
         now() as at, null::numeric as nothing, array[$1::int8] as list";
    let (client, conn) = env.client("describe").await;
    let via_ward = client.prepare(SQL).await.unwrap();
    let (direct, direct_conn) = Postgres::get()
        .client(&env.db.database, &env.db.user, &env.db.password)
        .await;
    let from_postgres = direct.prepare(SQL).await.unwrap();

    assert_eq!(via_ward.params(), from_postgres.params());
    assert_eq!(via_ward.params(), &[Type::INT8, Type::TEXT]);
    let columns = |s: &tokio_postgres::Statement| -> Vec<(String, Type)> {
        s.columns()
            .iter()
            .map(|c| (c.name().to_string(), c.type_().clone()))
            .collect()
    };
    assert_eq!(columns(&via_ward), columns(&from_postgres));
    assert_eq!(
        columns(&via_ward),
        vec![
            ("next".to_string(), Type::INT8),
            ("shout".to_string(), Type::TEXT),
            ("at".to_string(), Type::TIMESTAMPTZ),
            ("nothing".to_string(), Type::NUMERIC),
            ("list".to_string(), Type::INT8_ARRAY),
        ]
    );
    // A statement that returns no rows describes as NoData: no columns.
    let no_data = client.prepare("set application_name = 'x'").await.unwrap();
    assert!(no_data.columns().is_empty());
    close(direct, direct_conn).await;
    close(client, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_prepared_statement_closes_it_on_the_target() {
    let env = start("close");
    const KEPT: &str = "select $1::int4 * 3 as tripled";
    let (client, conn) = env.client("close").await;
    let prepared_texts = || async {
        let msgs = client
            .simple_query("select statement from pg_prepared_statements order by prepare_time")
            .await
            .unwrap();
        msgs.iter()
            .filter_map(|m| match m {
                SimpleQueryMessage::Row(r) => r.get(0).map(str::to_string),
                _ => None,
            })
            .collect::<Vec<_>>()
    };

    let kept = client.prepare(KEPT).await.unwrap();
    // Ad-hoc queries prepare a statement and close it again right after.
    for i in 0..5i32 {
        let row = client
            .query_one("select $1::int4 + 100", &[&i])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i + 100);
    }
    assert_eq!(prepared_texts().await, vec![KEPT.to_string()]);
    assert_eq!(
        client
            .query_one(&kept, &[&14i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );

    drop(kept);
    assert_eq!(prepared_texts().await, Vec::<String>::new());

    // A new statement after the Close is attributed to its own text.
    let again = client.prepare("select $1::int4 - 1 as less").await.unwrap();
    assert_eq!(
        client
            .query_one(&again, &[&43i32])
            .await
            .unwrap()
            .get::<_, i32>(0),
        42
    );
    drop(again);
    close(client, conn).await;

    let executes: Vec<Audited> = all_audited(&env.audit("close"))
        .into_iter()
        .filter(|a| a.origin == "execute")
        .collect();
    let mut expected: Vec<Audited> = (0..5)
        .map(|_| ok("execute", "select $1::int4 + 100", Some(1), "SELECT"))
        .collect();
    expected.push(ok("execute", KEPT, Some(1), "SELECT"));
    expected.push(ok(
        "execute",
        "select $1::int4 - 1 as less",
        Some(1),
        "SELECT",
    ));
    assert_eq!(executes, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unnamed_statements_are_audited_with_their_own_text() {
    let env = start("unnamed");
    let (client, conn) = env.client("unnamed").await;
    // query_typed sends Parse/Bind/Describe/Execute/Sync on the unnamed statement.
    let a = client
        .query_typed("select $1::int4 * 2 as doubled", &[(&21i32, Type::INT4)])
        .await
        .unwrap();
    assert_eq!(a[0].get::<_, i32>(0), 42);
    let b = client
        .query_typed(
            "select $1::text || '-' || g as label from generate_series(1, 3) g",
            &[(&"x", Type::TEXT)],
        )
        .await
        .unwrap();
    let labels: Vec<String> = b.iter().map(|r| r.get(0)).collect();
    assert_eq!(labels, ["x-1", "x-2", "x-3"]);
    let c = client.query_typed("select 'no params'", &[]).await.unwrap();
    assert_eq!(c[0].get::<_, String>(0), "no params");
    close(client, conn).await;

    let audit = env.audit("unnamed");
    assert_eq!(
        all_audited(&audit),
        vec![
            ok(
                "execute",
                "select $1::int4 * 2 as doubled",
                Some(1),
                "SELECT"
            ),
            ok(
                "execute",
                "select $1::text || '-' || g as label from generate_series(1, 3) g",
                Some(3),
                "SELECT"
            ),
            ok("execute", "select 'no params'", Some(1), "SELECT"),
        ]
    );
    assert_binary_param(
        audit[0]["params"].as_str().unwrap(),
        1,
        &21i32.to_be_bytes(),
        "21",
    );
    assert_binary_param(audit[1]["params"].as_str().unwrap(), 1, b"x", "'x'");
    assert_eq!(audit[2]["params"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_suspension_with_row_limit_streams_every_row_once() {
    let env = start("portals");
    const FIRST: &str = "select i, md5(i::text) as h from generate_series(1, $1::int4) i";
    const SECOND: &str = "select i from generate_series(1000, $1::int4) i";
    let (mut client, conn) = env.client("portals").await;
    let tx = client.transaction().await.unwrap();
    let first = tx.prepare(FIRST).await.unwrap();
    let second = tx.prepare(SECOND).await.unwrap();
    // Two named portals open at once, fetched alternately with different row limits.
    let p1 = tx.bind(&first, &[&95i32]).await.unwrap();
    let p2 = tx.bind(&second, &[&1052i32]).await.unwrap();
    let (mut got1, mut got2) = (Vec::new(), Vec::new());
    let (mut batches1, mut batches2) = (Vec::new(), Vec::new());
    let (mut done1, mut done2) = (false, false);
    while !(done1 && done2) {
        if !done1 {
            let rows = tx.query_portal(&p1, 10).await.unwrap();
            batches1.push(rows.len());
            done1 = rows.len() < 10;
            for r in rows {
                let i: i32 = r.get(0);
                let h: String = r.get(1);
                got1.push((i, h));
            }
        }
        if !done2 {
            let rows = tx.query_portal(&p2, 7).await.unwrap();
            batches2.push(rows.len());
            done2 = rows.len() < 7;
            got2.extend(rows.iter().map(|r| r.get::<_, i32>(0)));
        }
    }
    tx.commit().await.unwrap();

    assert_eq!(batches1, [10, 10, 10, 10, 10, 10, 10, 10, 10, 5]);
    assert_eq!(batches2, [7, 7, 7, 7, 7, 7, 7, 4]);
    let expected2: Vec<i32> = (1000..=1052).collect();
    assert_eq!(
        got2, expected2,
        "every row of the second portal exactly once, in order"
    );
    let ids: Vec<i32> = got1.iter().map(|(i, _)| *i).collect();
    assert_eq!(ids, (1..=95).collect::<Vec<i32>>());
    // The hashes are what PostgreSQL computes for those rows.
    let direct =
        env.admin("select string_agg(md5(i::text), ',' order by i) from generate_series(1, 95) i");
    let hashes: Vec<&str> = got1.iter().map(|(_, h)| h.as_str()).collect();
    assert_eq!(hashes.join(","), direct);
    close(client, conn).await;

    let audit = all_audited(&env.audit("portals"));
    let of = |text: &str| -> Vec<(Option<u64>, Option<String>)> {
        audit
            .iter()
            .filter(|a| a.text == text && a.origin == "execute")
            .map(|a| {
                assert_eq!(a.sqlstate, None);
                (a.rows, a.command.clone())
            })
            .collect()
    };
    let suspended = |n: u64| (Some(n), Some("SUSPENDED".to_string()));
    let mut expected1 = vec![suspended(10); 9];
    expected1.push((Some(5), Some("SELECT".into())));
    assert_eq!(of(FIRST), expected1);
    let mut expected2 = vec![suspended(7); 7];
    expected2.push((Some(4), Some("SELECT".into())));
    assert_eq!(of(SECOND), expected2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_queries_are_answered_and_audited_in_order() {
    let env = start("pipeline");
    const SQL: &str = "select 1000 / ($1::int4 - 25) as q";
    let (client, conn) = env.client("pipeline").await;
    let stmt = client.prepare(SQL).await.unwrap();
    // tokio-postgres writes each request as soon as its future is first polled and does not
    // wait for earlier answers: 50 Bind/Execute/Sync groups are in flight at once, and the
    // one in the middle fails (division by zero) without disturbing the others.
    let results = futures_util::future::join_all((0..50i32).map(|i| {
        let (client, stmt) = (&client, &stmt);
        async move { client.query_one(stmt, &[&i]).await }
    }))
    .await;
    for (i, r) in (0..50i32).zip(results) {
        if i == 25 {
            assert_eq!(sqlstate(&r.unwrap_err()), Some("22012"));
        } else {
            assert_eq!(r.unwrap().get::<_, i32>(0), 1000 / (i - 25), "query {i}");
        }
    }
    let after = client.query_one(&stmt, &[&26i32]).await.unwrap();
    assert_eq!(after.get::<_, i32>(0), 1000);
    close(client, conn).await;

    let audit = env.audit("pipeline");
    let executes: Vec<&Value> = audit.iter().filter(|s| s["origin"] == "execute").collect();
    assert_eq!(executes.len(), 51);
    for (i, s) in (0..50i32).chain([26]).zip(executes) {
        if i == 25 {
            assert_eq!(audited(s), failed("execute", SQL, "22012"), "event {i}");
        } else {
            assert_eq!(
                audited(s),
                ok("execute", SQL, Some(1), "SELECT"),
                "event {i}"
            );
        }
        let params = s["params"].as_str().expect("params recorded");
        assert_binary_param(params, 1, &i.to_be_bytes(), &i.to_string());
    }
}

/// A minimal PostgreSQL protocol client over TLS, for what no library client sends by
/// itself (Flush between Executes, Describe of a portal).
struct RawClient {
    stream: rustls::StreamOwned<rustls::ClientConnection, std::net::TcpStream>,
    out: Vec<u8>,
}

impl RawClient {
    fn connect(env: &Env, app: &str) -> RawClient {
        let mut tcp = std::net::TcpStream::connect(env.ward.pg_addr()).expect("connect to ward");
        tcp.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        tcp.set_nodelay(true).unwrap();
        // SSLRequest
        tcp.write_all(&[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f])
            .unwrap();
        let mut answer = [0u8];
        tcp.read_exact(&mut answer).unwrap();
        assert_eq!(answer[0], b'S', "ward accepts TLS");
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let tls = rustls::ClientConnection::new(
            std::sync::Arc::new(harness::insecure_client_config()),
            name,
        )
        .unwrap();
        let mut raw = RawClient {
            stream: rustls::StreamOwned::new(tls, tcp),
            out: Vec::new(),
        };
        let mut startup = 196608i32.to_be_bytes().to_vec();
        for (k, v) in [
            ("user", IDENTITY),
            ("database", TARGET),
            ("application_name", app),
        ] {
            cstr(&mut startup, k);
            cstr(&mut startup, v);
        }
        startup.push(0);
        let mut packet = ((startup.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend(startup);
        raw.stream.write_all(&packet).unwrap();
        raw.stream.flush().unwrap();
        let (tag, body) = raw.read();
        assert_eq!(
            (tag, &body[..]),
            (b'R', &3i32.to_be_bytes()[..]),
            "cleartext password asked"
        );
        let mut password = Vec::new();
        cstr(&mut password, &env.ward.token(IDENTITY));
        raw.queue(b'p', &password);
        raw.send();
        loop {
            match raw.read() {
                (b'Z', _) => break,
                (b'E', body) => panic!("login refused: {}", String::from_utf8_lossy(&body)),
                _ => {}
            }
        }
        raw
    }

    fn queue(&mut self, tag: u8, body: &[u8]) {
        self.out.push(tag);
        self.out
            .extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        self.out.extend_from_slice(body);
    }

    fn send(&mut self) {
        let out = std::mem::take(&mut self.out);
        self.stream.write_all(&out).unwrap();
        self.stream.flush().unwrap();
    }

    /// The next message; fails the test if none arrives within 15 s.
    fn read(&mut self) -> (u8, Vec<u8>) {
        let mut head = [0u8; 5];
        self.stream
            .read_exact(&mut head)
            .unwrap_or_else(|e| panic!("no message from ward within 15 s: {e}"));
        let len = i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).unwrap();
        (head[0], body)
    }

    /// The tags of the next `n` messages, with DataRow bodies collected into `rows`.
    fn read_tags(&mut self, n: usize, rows: &mut Vec<Vec<u8>>) -> String {
        (0..n)
            .map(|_| {
                let (tag, body) = self.read();
                if tag == b'D' {
                    rows.push(body);
                }
                tag as char
            })
            .collect()
    }
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

#[test]
fn flush_delivers_portal_results_before_sync() {
    let env = start("flush");
    const SQL: &str = "select i, repeat('x', i) as xs from generate_series(1, $1::int4) i";
    let mut raw = RawClient::connect(&env, "flush");

    let mut parse = Vec::new();
    cstr(&mut parse, "st");
    cstr(&mut parse, SQL);
    parse.extend(0i16.to_be_bytes());
    raw.queue(b'P', &parse);
    let mut bind = Vec::new();
    cstr(&mut bind, "cur");
    cstr(&mut bind, "st");
    bind.extend(0i16.to_be_bytes()); // parameters in text
    bind.extend(1i16.to_be_bytes());
    bind.extend(1i32.to_be_bytes());
    bind.push(b'5');
    bind.extend(0i16.to_be_bytes()); // results in text
    raw.queue(b'B', &bind);
    let mut describe = vec![b'P'];
    cstr(&mut describe, "cur");
    raw.queue(b'D', &describe);
    let mut execute2 = Vec::new();
    cstr(&mut execute2, "cur");
    execute2.extend(2i32.to_be_bytes());
    raw.queue(b'E', &execute2);
    raw.queue(b'H', &[]);
    raw.send();

    // No Sync yet: the server answers because of the Flush, and ward must pass it on.
    let mut rows = Vec::new();
    assert_eq!(raw.read_tags(6, &mut rows), "12TDDs");
    raw.queue(b'E', &execute2);
    raw.queue(b'H', &[]);
    raw.send();
    assert_eq!(raw.read_tags(3, &mut rows), "DDs");

    let mut execute_all = Vec::new();
    cstr(&mut execute_all, "cur");
    execute_all.extend(0i32.to_be_bytes());
    raw.queue(b'E', &execute_all);
    raw.queue(b'S', &[]);
    raw.send();
    let (mut tags, mut complete) = (String::new(), Vec::new());
    loop {
        let (tag, body) = raw.read();
        tags.push(tag as char);
        match tag {
            b'D' => rows.push(body),
            b'C' => complete = body,
            b'Z' => break,
            _ => {}
        }
    }
    assert_eq!(tags, "DCZ");
    assert_eq!(complete, b"SELECT 1\0");
    // Every row once, in order: DataRow = count, then (len, bytes) per column.
    let firsts: Vec<String> = rows
        .iter()
        .map(|r| {
            let len = i32::from_be_bytes(r[2..6].try_into().unwrap()) as usize;
            String::from_utf8(r[6..6 + len].to_vec()).unwrap()
        })
        .collect();
    assert_eq!(firsts, ["1", "2", "3", "4", "5"]);

    // Close the statement; describing it afterwards fails as it does on PostgreSQL.
    let mut close_st = vec![b'S'];
    cstr(&mut close_st, "st");
    raw.queue(b'C', &close_st);
    let mut describe_st = vec![b'S'];
    cstr(&mut describe_st, "st");
    raw.queue(b'D', &describe_st);
    raw.queue(b'S', &[]);
    raw.send();
    let (tag, _) = raw.read();
    assert_eq!(tag, b'3', "CloseComplete");
    let (tag, body) = raw.read();
    assert_eq!(tag, b'E');
    assert!(
        body.windows(6).any(|w| w == b"C26000"),
        "prepared statement does not exist: {}",
        String::from_utf8_lossy(&body)
    );
    assert_eq!(raw.read().0, b'Z');
    raw.queue(b'X', &[]);
    raw.send();

    let audit = env.audit("flush");
    assert_eq!(
        all_audited(&audit),
        vec![
            ok("execute", SQL, Some(2), "SUSPENDED"),
            ok("execute", SQL, Some(2), "SUSPENDED"),
            ok("execute", SQL, Some(1), "SELECT"),
        ]
    );
    for s in &audit {
        assert_eq!(s["params"], "$1='5'");
    }
}

// ---------------------------------------------------------------------------------------
// COPY
// ---------------------------------------------------------------------------------------

#[test]
fn psql_copy_from_and_to_a_file_round_trips_content() {
    let env = start("copy_psql");
    env.admin(&format!(
        "create table items (id int primary key, payload text); alter table items owner to \"{}\"",
        env.db.user
    ));
    let dir = harness::fresh_dir("copy-psql");
    let input = dir.join("in.tsv");
    let output = dir.join("out.tsv");
    let mut data =
        String::from("1\thello world\n2\ttab\\there\n3\tback\\\\slash\n4\t\\N\n5\tünïcödé 😀\n");
    for i in 6..=5000 {
        data.push_str(&format!("{i}\trow {i} {}\n", pseudo_random_text(40, i)));
    }
    harness::write_file(&input, &data, 0o644);

    let copy_in = format!("\\copy items from '{}'", input.display());
    let copy_out = format!(
        "\\copy (select * from items order by id) to '{}'",
        output.display()
    );
    let out = env.psql_ok("copy-psql", &["-c", &copy_in, "-c", &copy_out]);
    assert_eq!(out, "COPY 5000\nCOPY 5000");

    // On the target: every row, with escapes decoded.
    assert_eq!(
        env.admin("select count(*), count(payload) from items"),
        "5000|4999"
    );
    assert_eq!(
        env.admin("select payload = E'tab\\there', payload from items where id = 2"),
        "t|tab\there"
    );
    assert_eq!(
        env.admin("select payload from items where id = 3"),
        "back\\slash"
    );
    assert_eq!(
        env.admin("select payload from items where id = 5"),
        "ünïcödé 😀"
    );
    let written = std::fs::read_to_string(&output).unwrap();
    assert!(
        written == data,
        "\\copy to wrote different content than was copied in"
    );

    let audit = all_audited(&env.audit("copy-psql"));
    assert_eq!(audit.len(), 2, "{audit:#?}");
    let copy_in_text = audit[0].text.clone();
    for a in &audit {
        assert_eq!(
            (
                a.origin.as_str(),
                a.rows,
                a.command.as_deref(),
                a.sqlstate.as_deref()
            ),
            ("simple", Some(5000), Some("COPY"), None)
        );
    }
    assert!(
        audit[0].text.to_lowercase().contains("from stdin"),
        "{audit:#?}"
    );
    assert!(
        audit[1].text.to_lowercase().contains("to stdout"),
        "{audit:#?}"
    );

    // A file with a bad line: the COPY fails as a whole, with PostgreSQL's error, and the
    // audit records it.
    let bad = dir.join("bad.tsv");
    harness::write_file(&bad, "9001\tfine\nnot-a-number\toops\n", 0o644);
    let out = env.psql(
        "copy-psql-bad",
        &["-c", &format!("\\copy items from '{}'", bad.display())],
    );
    assert!(!out.status.success(), "{}", harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("invalid input syntax for type integer: \"not-a-number\""),
        "{stderr}"
    );
    assert_eq!(env.admin("select count(*) from items where id = 9001"), "0");
    assert_eq!(
        all_audited(&env.audit("copy-psql-bad")),
        vec![failed("simple", &copy_in_text, "22P02")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_in_and_copy_out_round_trip_200k_rows() {
    let env = start("copy_big");
    const ROWS: usize = 200_000;
    let mut data = Vec::with_capacity(ROWS * 110);
    for i in 1..=ROWS {
        data.extend_from_slice(format!("{i}\t{}\n", pseudo_random_text(100, i as u64)).as_bytes());
    }
    assert!(data.len() > 20_000_000);

    let (client, conn) = env.client("copy-big").await;
    client
        .batch_execute("create table big (id int not null, payload text not null)")
        .await
        .unwrap();
    const COPY_IN: &str = "copy big (id, payload) from stdin";
    let sink = client.copy_in::<_, Bytes>(COPY_IN).await.unwrap();
    futures_util::pin_mut!(sink);
    // 64 KiB chunks split rows at arbitrary places, as COPY allows.
    for chunk in data.chunks(64 * 1024) {
        sink.send(Bytes::copy_from_slice(chunk)).await.unwrap();
    }
    assert_eq!(sink.as_mut().finish().await.unwrap(), ROWS as u64);
    // COPY OUT runs in a session of its own: the audit of statements that follow a
    // copy_in on the same session is what `statements_after_copy_in_are_audited` checks.
    close(client, conn).await;

    // What the target holds is exactly what was sent.
    assert_eq!(
        env.admin(
            "select count(*), md5(string_agg(id || E'\\t' || payload, E'\\n' order by id) || E'\\n') from big"
        ),
        format!("{ROWS}|{}", md5_hex(&data))
    );

    const COPY_OUT: &str = "copy (select id, payload from big order by id) to stdout";
    let (client, conn) = env.client("copy-big-out").await;
    let stream = client.copy_out(COPY_OUT).await.unwrap();
    futures_util::pin_mut!(stream);
    let mut back = Vec::with_capacity(data.len());
    while let Some(chunk) = stream.next().await {
        back.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(back.len(), data.len());
    assert!(back == data, "COPY TO STDOUT returned different bytes");
    close(client, conn).await;

    assert_eq!(
        all_audited(&env.audit("copy-big")),
        vec![
            ok(
                "simple",
                "create table big (id int not null, payload text not null)",
                None,
                "CREATE TABLE"
            ),
            ok("execute", COPY_IN, Some(ROWS as u64), "COPY"),
        ]
    );
    assert_eq!(
        all_audited(&env.audit("copy-big-out")),
        vec![ok("execute", COPY_OUT, Some(ROWS as u64), "COPY")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_after_copy_in_are_audited() {
    let env = start("after_copy");
    let (client, conn) = env.client("after-copy").await;
    client
        .batch_execute("create table t (a int)")
        .await
        .unwrap();
    let sink = client
        .copy_in::<_, Bytes>("copy t from stdin")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1\n2\n3\n")).await.unwrap();
    assert_eq!(sink.as_mut().finish().await.unwrap(), 3);
    for i in 1..=3i32 {
        let row = client
            .query_one("select $1::int4 * 2", &[&i])
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0), i * 2);
    }
    client.batch_execute("delete from t").await.unwrap();
    assert_eq!(env.admin("select count(*) from t"), "0");
    close(client, conn).await;

    assert_eq!(
        all_audited(&env.audit("after-copy")),
        vec![
            ok("simple", "create table t (a int)", None, "CREATE TABLE"),
            ok("execute", "copy t from stdin", Some(3), "COPY"),
            ok("execute", "select $1::int4 * 2", Some(1), "SELECT"),
            ok("execute", "select $1::int4 * 2", Some(1), "SELECT"),
            ok("execute", "select $1::int4 * 2", Some(1), "SELECT"),
            ok("simple", "delete from t", Some(3), "DELETE"),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Large results
// ---------------------------------------------------------------------------------------

#[test]
fn fifty_one_megabyte_rows_arrive_intact_in_psql() {
    let env = start("large_psql");
    // 50 DataRows of 1,000,000 bytes each (each far larger than ward's read buffer).
    const ROWS: &str =
        "select repeat(md5(i::text), 31250) from generate_series(1, 50) i order by i";
    let out = env.psql("large-psql", &["-At", "-c", ROWS]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), 50 * 1_000_001);
    let server = env.admin(
        "select md5(string_agg(repeat(md5(i::text), 31250), E'\\n' order by i) || E'\\n') \
         from generate_series(1, 50) i",
    );
    assert_eq!(
        md5_hex(&out.stdout),
        server,
        "the result changed in transit"
    );
    assert_eq!(
        all_audited(&env.audit("large-psql")),
        vec![ok("simple", ROWS, Some(50), "SELECT")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_megabyte_result_streams_intact_to_tokio_postgres() {
    let env = start("large_tokio");
    const SQL: &str =
        "select i, repeat(md5(i::text), 31) as v from generate_series(1, $1::int4) i order by i";
    const N: i32 = 50_000;
    let (client, conn) = env.client("large-tokio").await;
    let rows = client.query_raw(SQL, [N]).await.unwrap();
    futures_util::pin_mut!(rows);
    let mut all = Vec::with_capacity(50_000_000);
    let mut expected_i = 1;
    while let Some(row) = rows.next().await {
        let row = row.unwrap();
        assert_eq!(row.get::<_, i32>(0), expected_i, "rows in order, none lost");
        expected_i += 1;
        all.extend_from_slice(row.get::<_, &str>(1).as_bytes());
    }
    assert_eq!(expected_i, N + 1);
    assert_eq!(all.len(), 50_000 * 31 * 32);
    close(client, conn).await;
    let server = env.admin(&format!(
        "select md5(string_agg(repeat(md5(i::text), 31), '' order by i)) from generate_series(1, {N}) i"
    ));
    assert_eq!(md5_hex(&all), server, "the result changed in transit");
    let audit = env.audit("large-tokio");
    assert_eq!(
        all_audited(&audit),
        vec![ok("execute", SQL, Some(N as u64), "SELECT")]
    );
}

// ---------------------------------------------------------------------------------------
// Asynchronous messages: notifications, notices, parameter status
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listen_notify_delivers_channel_and_payload_across_sessions() {
    let env = start("notify");
    let (listener, mut lconn) = env.driven_client("listener").await;
    let mut seen = Vec::new();
    drive(
        &mut lconn,
        &mut seen,
        listener.batch_execute("LISTEN ward_events"),
    )
    .await
    .unwrap();

    let (notifier, nconn) = env.client("notifier").await;
    let notifier_pid: i32 = notifier
        .query_one("select pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    notifier
        .batch_execute("NOTIFY ward_events, 'first'")
        .await
        .unwrap();
    notifier
        .query(
            "select pg_notify('ward_events', $1)",
            &[&"zweite: ünïcode ✓"],
        )
        .await
        .unwrap();
    // Inside a transaction, delivered at COMMIT; other channels are not delivered.
    notifier
        .batch_execute(
            "begin; notify other_channel, 'not for us'; notify ward_events, 'third'; commit",
        )
        .await
        .unwrap();
    close(notifier, nconn).await;

    let mut notifications = Vec::new();
    for m in seen.drain(..) {
        if let AsyncMessage::Notification(n) = m {
            notifications.push(n);
        }
    }
    while notifications.len() < 3 {
        if let AsyncMessage::Notification(n) =
            next_async_message(&mut lconn, "three notifications").await
        {
            notifications.push(n);
        }
    }
    let got: Vec<(&str, &str)> = notifications
        .iter()
        .map(|n| (n.channel(), n.payload()))
        .collect();
    assert_eq!(
        got,
        [
            ("ward_events", "first"),
            ("ward_events", "zweite: ünïcode ✓"),
            ("ward_events", "third")
        ]
    );
    // The sender is named by its backend process id on the target.
    for n in &notifications {
        assert_eq!(n.process_id(), notifier_pid);
    }
    // The listening session still answers queries.
    let row = drive(
        &mut lconn,
        &mut seen,
        listener.query_one("select 'still here'", &[]),
    )
    .await
    .unwrap();
    assert_eq!(row.get::<_, &str>(0), "still here");
    close_driven(listener, lconn).await;

    // psql prints notifications for a channel it listens on.
    let out = env.psql_ok(
        "notify-psql",
        &[
            "-c",
            "listen psql_chan",
            "-c",
            "notify psql_chan, 'hello from psql'",
        ],
    );
    assert!(
        out.contains(
            "Asynchronous notification \"psql_chan\" with payload \"hello from psql\" received"
        ),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_notice_reaches_psql_and_tokio_postgres() {
    let env = start("notice");
    let out = env.psql(
        "notice-psql",
        &[
            "-At",
            "-c",
            "do $$ begin raise notice 'hello %', 42; end $$",
        ],
    );
    assert!(out.status.success(), "{}", harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("NOTICE:  hello 42"), "{stderr}");

    let (client, mut conn) = env.driven_client("notice-tokio").await;
    let mut seen = Vec::new();
    drive(
        &mut conn,
        &mut seen,
        client.batch_execute(
            "do $$ begin raise notice 'hello %', 42; raise warning 'careful: %', 'wet floor'; end $$",
        ),
    )
    .await
    .unwrap();
    // In the extended protocol too.
    drive(
        &mut conn,
        &mut seen,
        client.execute("do $$ begin raise notice 'extended %', 7; end $$", &[]),
    )
    .await
    .unwrap();
    let notices: Vec<(String, String, String)> = seen
        .iter()
        .filter_map(|m| match m {
            AsyncMessage::Notice(n) => Some((
                n.severity().to_string(),
                n.code().code().to_string(),
                n.message().to_string(),
            )),
            _ => None,
        })
        .collect();
    assert_eq!(
        notices,
        [
            (
                "NOTICE".to_string(),
                "00000".to_string(),
                "hello 42".to_string()
            ),
            (
                "WARNING".into(),
                "01000".into(),
                "careful: wet floor".into()
            ),
            ("NOTICE".into(), "00000".into(), "extended 7".into()),
        ]
    );
    close_driven(client, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn parameter_status_changes_reach_the_client() {
    let env = start("params");
    // psql tracks client_encoding from ParameterStatus in its ENCODING variable.
    let out = env.psql_ok(
        "params-psql",
        &[
            "-q",
            "-c",
            "\\echo :ENCODING",
            "-c",
            "set client_encoding = 'LATIN1'",
            "-c",
            "\\echo :ENCODING",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert_ne!(lines[0], "LATIN1");
    assert_eq!(lines[1], "LATIN1");

    let (client, mut conn) = env.driven_client("params-tokio").await;
    assert_eq!(conn.parameter("application_name"), Some("params-tokio"));
    let mut seen = Vec::new();
    drive(
        &mut conn,
        &mut seen,
        client.batch_execute(
            "set application_name = 'renamed-by-set'; set timezone = 'Asia/Kathmandu'",
        ),
    )
    .await
    .unwrap();
    assert_eq!(conn.parameter("application_name"), Some("renamed-by-set"));
    assert_eq!(conn.parameter("TimeZone"), Some("Asia/Kathmandu"));
    // A SET rolled back is reported again with the restored value.
    drive(
        &mut conn,
        &mut seen,
        client.batch_execute("begin; set application_name = 'temporary'; rollback"),
    )
    .await
    .unwrap();
    assert_eq!(conn.parameter("application_name"), Some("renamed-by-set"));
    close_driven(client, conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn login_reports_the_targets_real_parameters_and_server_version() {
    let env = start("version");
    let pg = Postgres::get();
    let out = env.psql_ok(
        "version-psql",
        &[
            "-At",
            "-c",
            "show server_version",
            "-c",
            "\\echo :SERVER_VERSION_NAME",
            "-c",
            "show server_version_num",
            "-c",
            "\\echo :SERVER_VERSION_NUM",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    let real_version = pg.admin_sql("postgres", "show server_version");
    let real_num = pg.admin_sql("postgres", "show server_version_num");
    assert_eq!(
        lines,
        [real_version.as_str(), &real_version, &real_num, &real_num]
    );

    // Every parameter PostgreSQL reports at login arrives unchanged through ward.
    const REPORTED: [&str; 13] = [
        "server_version",
        "server_encoding",
        "client_encoding",
        "application_name",
        "DateStyle",
        "IntervalStyle",
        "TimeZone",
        "integer_datetimes",
        "standard_conforming_strings",
        "is_superuser",
        "session_authorization",
        "default_transaction_read_only",
        "in_hot_standby",
    ];
    let (client, conn) = env.driven_client("same-app").await;
    let mut direct_config = tokio_postgres::Config::new();
    direct_config
        .host(pg.host())
        .port(pg.port())
        .dbname(&env.db.database)
        .user(&env.db.user)
        .password(&env.db.password)
        .application_name("same-app")
        .ssl_mode(tokio_postgres::config::SslMode::Require);
    let (direct, direct_conn) = direct_config
        .connect(harness::verifying_connector(pg.ca_der()))
        .await
        .unwrap();
    for name in REPORTED {
        assert!(
            conn.parameter(name).is_some(),
            "{name} was not reported through ward"
        );
        assert_eq!(conn.parameter(name), direct_conn.parameter(name), "{name}");
    }
    assert_eq!(
        conn.parameter("server_version"),
        Some(real_version.as_str())
    );
    assert_eq!(
        conn.parameter("session_authorization"),
        Some(env.db.user.as_str())
    );
    close_driven(client, conn).await;
    close_driven(direct, direct_conn).await;
}

// ---------------------------------------------------------------------------------------
// FunctionCall (fast path)
// ---------------------------------------------------------------------------------------

#[test]
fn large_object_import_and_export_round_trip_via_function_calls() {
    let env = start("lo");
    let dir = harness::fresh_dir("lo");
    let input = dir.join("in.bin");
    let output = dir.join("out.bin");
    let content = pseudo_random(300_000, 42);
    harness::write_file(&input, &content, 0o644);
    let script = dir.join("lo.sql");
    harness::write_file(
        &script,
        format!(
            "\\lo_import '{}'\n\\lo_export :LASTOID '{}'\nselect :LASTOID;\n",
            input.display(),
            output.display()
        ),
        0o644,
    );
    let oid = env.psql_ok("lo-psql", &["-q", "-At", "-f", &script.to_string_lossy()]);
    assert!(oid.parse::<u32>().is_ok(), "{oid}");
    let exported = std::fs::read(&output).unwrap();
    assert!(
        exported == content,
        "\\lo_export wrote different bytes than were imported"
    );
    assert_eq!(
        env.admin(&format!("select length(lo_get({oid})), md5(lo_get({oid}))")),
        format!("{}|{}", content.len(), md5_hex(&content))
    );

    let fn_oid = |name: &str| {
        env.admin(&format!(
            "select oid from pg_proc where proname = '{name}' and pronamespace = 'pg_catalog'::regnamespace"
        ))
    };
    let (lowrite, loread) = (fn_oid("lowrite"), fn_oid("loread"));
    let audit = all_audited(&env.audit("lo-psql"));
    let calls: Vec<&Audited> = audit
        .iter()
        .filter(|a| a.origin == "function_call")
        .collect();
    for c in &calls {
        assert_eq!(c.sqlstate, None, "{c:?}");
    }
    let count = |oid: &str| {
        let text = format!("<function call oid={oid}>");
        calls.iter().filter(|c| c.text == text).count()
    };
    // libpq moves large objects in 8 KiB pieces (lo_write per chunk, loread until short).
    let chunks = content.len().div_ceil(8192);
    assert!(
        count(&lowrite) >= chunks,
        "lowrite calls: {} < {chunks}\n{audit:#?}",
        count(&lowrite)
    );
    assert!(
        count(&loread) >= chunks,
        "loread calls: {} < {chunks}\n{audit:#?}",
        count(&loread)
    );
    // The statements around them (BEGIN/COMMIT psql sends, the final select) are there too.
    assert_eq!(
        audit.last().unwrap(),
        &ok("simple", &format!("select {oid}"), Some(1), "SELECT")
    );
}

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

#[test]
fn error_inside_a_transaction_aborts_it_until_rollback() {
    let env = start("errors_psql");
    let dir = harness::fresh_dir("errors");
    let script = dir.join("errors.sql");
    harness::write_file(
        &script,
        "select 1/0;\nselect 'after error';\nbegin;\nselect 1/0;\nselect 'ignored';\nrollback;\nselect 'usable';\n",
        0o644,
    );
    let out = env.psql(
        "errors-psql",
        &[
            "-q",
            "-At",
            "-v",
            "ON_ERROR_STOP=0",
            "-f",
            &script.to_string_lossy(),
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        stdout,
        "after error\nusable\n",
        "{}",
        harness::describe(&out)
    );
    assert!(stderr.contains("ERROR:  division by zero"), "{stderr}");
    assert!(
        stderr.contains(
            "ERROR:  current transaction is aborted, commands ignored until end of transaction block"
        ),
        "{stderr}"
    );

    let audit = all_audited(&env.audit("errors-psql"));
    let expected = vec![
        failed("simple", "select 1/0", "22012"),
        ok("simple", "select 'after error'", Some(1), "SELECT"),
        ok("simple", "begin", None, "BEGIN"),
        failed("simple", "select 1/0", "22012"),
        failed("simple", "select 'ignored'", "25P02"),
        ok("simple", "rollback", None, "ROLLBACK"),
        ok("simple", "select 'usable'", Some(1), "SELECT"),
    ];
    // psql -f sends each statement with its terminating semicolon; the audit records the
    // statement without it, as it does for statements split out of one string.
    assert_eq!(audit, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simple_query_error_stops_the_rest_of_the_string_and_session_continues() {
    let env = start("errors_simple");
    let (mut client, conn) = env.client("errors-simple").await;
    let e = client
        .simple_query("select 1; select 1/0; select 3")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("22012"));
    // Inside a transaction: aborted until ROLLBACK.
    client.batch_execute("begin").await.unwrap();
    let e = client
        .simple_query("select * from no_such_table")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("42P01"));
    let e = client.simple_query("select 2").await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("25P02"));
    client.batch_execute("rollback").await.unwrap();
    let tx = client.transaction().await.unwrap();
    tx.batch_execute("create temp table kept (a int); insert into kept values (1), (2)")
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let rows = client
        .simple_query("select count(*) from kept")
        .await
        .unwrap();
    assert_eq!(render(&rows), ["columns count", "row 2", "complete 1"]);
    close(client, conn).await;

    assert_eq!(
        all_audited(&env.audit("errors-simple")),
        vec![
            ok("simple", "select 1", Some(1), "SELECT"),
            failed("simple", "select 1/0", "22012"),
            ok("simple", "begin", None, "BEGIN"),
            failed("simple", "select * from no_such_table", "42P01"),
            failed("simple", "select 2", "25P02"),
            ok("simple", "rollback", None, "ROLLBACK"),
            ok("simple", "START TRANSACTION", None, "START TRANSACTION"),
            ok(
                "simple",
                "create temp table kept (a int)",
                None,
                "CREATE TABLE"
            ),
            ok(
                "simple",
                "insert into kept values (1), (2)",
                Some(2),
                "INSERT"
            ),
            ok("simple", "COMMIT", None, "COMMIT"),
            ok("simple", "select count(*) from kept", Some(1), "SELECT"),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_errors_leave_the_session_usable() {
    let env = start("errors_extended");
    let (mut client, conn) = env.client("errors-extended").await;
    let e = client.query("selec 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("42601"));
    let e = client
        .query("select 1 / $1::int4", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("22012"));
    let row = client
        .query_one("select $1::int4 + 1", &[&41i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 42);

    let tx = client.transaction().await.unwrap();
    let e = tx
        .query("select * from no_such_table", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), Some("42P01"));
    let e = tx.query("select 1", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), Some("25P02"));
    tx.rollback().await.unwrap();
    let row = client
        .query_one("select count(*) from generate_series(1, 10)", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 10);
    close(client, conn).await;

    let audit = env.audit("errors-extended");
    assert_eq!(
        all_audited(&audit),
        vec![
            failed("prepare", "selec 1", "42601"),
            failed("execute", "select 1 / $1::int4", "22012"),
            ok("execute", "select $1::int4 + 1", Some(1), "SELECT"),
            ok("simple", "START TRANSACTION", None, "START TRANSACTION"),
            failed("prepare", "select * from no_such_table", "42P01"),
            failed("prepare", "select 1", "25P02"),
            ok("simple", "ROLLBACK", None, "ROLLBACK"),
            ok(
                "execute",
                "select count(*) from generate_series(1, 10)",
                Some(1),
                "SELECT"
            ),
        ]
    );
    assert_binary_param(
        audit[1]["params"].as_str().unwrap(),
        1,
        &0i32.to_be_bytes(),
        "0",
    );
    assert!(
        audit[1]["error"]
            .as_str()
            .unwrap_or_default()
            .contains("division by zero"),
        "{}",
        audit[1]
    );
}

// ---------------------------------------------------------------------------------------
// Cancel
// ---------------------------------------------------------------------------------------

#[test]
fn ctrl_c_in_psql_cancels_the_running_query() {
    use std::os::unix::process::CommandExt;
    let env = start("cancel_psql");
    let mut cmd = Postgres::get().psql_command();
    cmd.args([
        "-X",
        "-At",
        "-d",
        &env.conninfo("cancel-psql"),
        "-c",
        "select pg_sleep(30)",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .process_group(0);
    let mut child = cmd.spawn().expect("spawn psql");
    let _registered = harness::register_child(child.id());
    harness::wait_for(
        || running_sleeps(&env.db.database) == 1,
        "pg_sleep running on the target",
    );
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: kill(2) on our own child's pid.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGINT);
    }
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("psql was still running 20 s after SIGINT: the query was not cancelled");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(!status.success());
    assert!(
        stderr.contains("canceling statement due to user request"),
        "{stderr}"
    );
    harness::wait_for(
        || running_sleeps(&env.db.database) == 0,
        "no pg_sleep left running on the target",
    );
    assert_eq!(
        all_audited(&env.audit("cancel-psql")),
        vec![failed("simple", "select pg_sleep(30)", "57014")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_token_cancels_a_running_query() {
    let env = start("cancel_tokio");
    let (client, conn) = env.client("cancel-tokio").await;
    let token = client.cancel_token();
    let database = env.db.database.clone();
    let canceller = async move {
        tokio::task::spawn_blocking(move || {
            harness::wait_for(
                || running_sleeps(&database) == 1,
                "pg_sleep running on the target",
            )
        })
        .await
        .unwrap();
        // The cancel request goes to ward (over TLS, as tokio-postgres does with
        // sslmode=require) with ward's key, not the target's.
        token
            .cancel_query(harness::insecure_connector())
            .await
            .expect("send the cancel request");
    };
    let started = Instant::now();
    let (result, ()) = tokio::join!(client.query("select pg_sleep(30)", &[]), canceller);
    let e = result.expect_err("the query was cancelled");
    assert_eq!(sqlstate(&e), Some("57014"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(25));
    // The session is still usable.
    let row = client
        .query_one("select 'after cancel'", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "after cancel");
    close(client, conn).await;

    let audit = all_audited(&env.audit("cancel-tokio"));
    assert_eq!(
        audit,
        vec![
            failed("execute", "select pg_sleep(30)", "57014"),
            ok("execute", "select 'after cancel'", Some(1), "SELECT"),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// pgbench
// ---------------------------------------------------------------------------------------

fn pgbench(env: &Env, app: &str, args: &[&str]) -> String {
    let bin = Postgres::get().bin_dir().join("pgbench");
    let mut cmd = Command::new(if bin.exists() { bin } else { "pgbench".into() });
    harness::clear_libpq_env(&mut cmd);
    cmd.args(args).arg(env.conninfo(app));
    let out = harness::run_with_timeout(&mut cmd, Duration::from_secs(120));
    assert!(
        out.status.success(),
        "pgbench {args:?} failed\n{}",
        harness::describe(&out)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn pgbench_number(report: &str, prefix: &str) -> u64 {
    report
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no `{prefix}` in the pgbench report:\n{report}"))
}

/// `pgbench -i -s 1`, then a select-only and a TPC-B-like run in protocol `mode`.
fn pgbench_runs_cleanly(mode: &str) {
    let env = start(&format!("pgbench_{mode}"));
    pgbench(&env, &format!("init-{mode}"), &["-i", "-s", "1", "-q"]);
    assert_eq!(env.admin("select count(*) from pgbench_accounts"), "100000");

    for (script, extra) in [("select-only", &["-S"][..]), ("tpcb", &[][..])] {
        let app = format!("pgbench-{mode}-{script}");
        let mut args = vec!["-M", mode, "-T", "3", "-c", "4", "-j", "2"];
        args.extend_from_slice(extra);
        let report = pgbench(&env, &app, &args);
        let processed = pgbench_number(&report, "number of transactions actually processed: ");
        let failed = pgbench_number(&report, "number of failed transactions: ");
        assert!(processed > 0, "{report}");
        assert_eq!(failed, 0, "{report}");

        // 4 client sessions (and the one pgbench opens first to check the tables).
        let sessions = env.ended_sessions(&app, 4);
        let recorded: u64 = sessions
            .iter()
            .map(|s| s["statement_count"].as_u64().unwrap_or(0))
            .sum();
        assert!(
            recorded >= processed,
            "{script}/{mode}: {recorded} statements audited for {processed} transactions"
        );
        // A client session's statements carry the protocol's origin and no errors.
        let busiest = sessions
            .iter()
            .max_by_key(|s| s["statement_count"].as_u64().unwrap_or(0))
            .unwrap();
        let statements = env.statements_of(busiest);
        let origin = if mode == "simple" {
            "simple"
        } else {
            "execute"
        };
        let selects = statements
            .iter()
            .filter(|s| {
                s["text"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("SELECT abalance FROM pgbench_accounts WHERE aid =")
            })
            .inspect(|s| {
                assert_eq!(s["origin"], origin, "{s}");
                assert_eq!(s["sqlstate"], Value::Null, "{s}");
                assert_eq!(s["rows"], 1, "{s}");
                if mode != "simple" {
                    assert!(
                        s["params"].as_str().is_some_and(|p| p.starts_with("$1=")),
                        "{s}"
                    );
                }
            })
            .count();
        assert!(selects > 0, "no audited pgbench select in {busiest}");
    }
}

#[test]
fn pgbench_simple_protocol_runs_without_failures() {
    pgbench_runs_cleanly("simple");
}

#[test]
fn pgbench_extended_protocol_runs_without_failures() {
    pgbench_runs_cleanly("extended");
}

#[test]
fn pgbench_prepared_statements_run_without_failures() {
    pgbench_runs_cleanly("prepared");
}

#[test]
fn pgbench_pipeline_mode_statements_are_attributed_in_order() {
    let env = start("pgbench_pipeline");
    pgbench(
        &env,
        "init-pipeline",
        &["-i", "-s", "1", "-q", "-I", "dtgp"],
    );
    // libpq pipeline mode: five Bind/Execute groups, then one Sync, per transaction.
    let dir = harness::fresh_dir("pgbench-pipeline");
    let script = dir.join("pipeline.sql");
    let mut text = String::from("\\set aid random(1, 99990)\n\\startpipeline\n");
    for k in 0..5 {
        text.push_str(&format!(
            "SELECT abalance, {k} AS k FROM pgbench_accounts WHERE aid = :aid + {k};\n"
        ));
    }
    text.push_str("\\endpipeline\n");
    harness::write_file(&script, &text, 0o644);
    let app = "pgbench-pipeline";
    let report = pgbench(
        &env,
        app,
        &[
            "-M",
            "prepared",
            "-f",
            &script.to_string_lossy(),
            "-T",
            "2",
            "-c",
            "2",
            "-j",
            "2",
            "-n",
        ],
    );
    let processed = pgbench_number(&report, "number of transactions actually processed: ");
    assert!(processed > 0, "{report}");
    assert_eq!(
        pgbench_number(&report, "number of failed transactions: "),
        0,
        "{report}"
    );

    let sessions = env.ended_sessions(app, 2);
    let mut executed = 0;
    for session in &sessions {
        let statements = env.statements_of(session);
        let selects: Vec<&Value> = statements
            .iter()
            .filter(|s| {
                s["text"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("SELECT abalance")
            })
            .collect();
        assert_eq!(selects.len() % 5, 0, "whole pipelines only");
        for (n, s) in selects.iter().enumerate() {
            let k = n % 5;
            assert_eq!(
                audited(s),
                ok(
                    "execute",
                    &format!(
                        "SELECT abalance, {k} AS k FROM pgbench_accounts WHERE aid = $1 + {k}"
                    ),
                    Some(1),
                    "SELECT"
                ),
                "statement {n} of session {}",
                session["id"]
            );
        }
        executed += selects.len() as u64;
    }
    assert!(
        executed >= 5 * processed,
        "{executed} selects audited for {processed} transactions of five"
    );
}
