//! Bad input and faults on the PostgreSQL gateway: after each, ward keeps serving.
//!
//! Every test opens a session before the fault and checks afterwards that ward is still
//! running, logged no panic, accepts a fresh psql session and still serves the session
//! opened before. Raw sockets (`pgwire`) send what real clients cannot; every read has a
//! timeout, so a hang fails the test instead of hanging it.

mod harness;

use harness::rt;
mod pgwire;

use harness::{AuthMethod, PgTarget, Postgres, Target, Ward, WardOptions};
use pgwire::{Ending, IO_TIMEOUT, Message};
use serde_json::Value;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

// ---- helpers ----

/// A ward with one target `db` (a fresh database) and a token for `ci`, plus a tokio-postgres
/// session opened before any fault.
struct Fixture {
    rt: tokio::runtime::Runtime,
    ward: Ward,
    db: PgTarget,
    before: tokio_postgres::Client,
}

impl Fixture {
    fn start(name: &str, extra_yaml: &str) -> Fixture {
        Fixture::with(name, |options| {
            if extra_yaml.is_empty() {
                options
            } else {
                options.extra_yaml(extra_yaml)
            }
        })
    }

    /// Like [`Fixture::start`], with more options (targets, tokens) added by `more`.
    fn with(name: &str, more: impl FnOnce(WardOptions) -> WardOptions) -> Fixture {
        let db = Postgres::get().create_target(name, AuthMethod::ScramSha256);
        let options = WardOptions::new()
            .target(Target::postgres("db", &db))
            .token("ci");
        let ward = Ward::start(more(options));
        let rt = rt();
        let (before, _conn) = rt.block_on(ward.client("ci", "db"));
        assert_eq!(rt.block_on(query_int(&before, 1)), Ok(1));
        Fixture {
            rt,
            ward,
            db,
            before,
        }
    }

    fn token(&self) -> String {
        self.ward.token("ci")
    }

    /// Runs `f` (given ward's PostgreSQL address and the token) on the runtime.
    fn run<F, Fut, T>(&self, f: F) -> T
    where
        F: FnOnce(std::net::SocketAddr, String) -> Fut,
        Fut: std::future::Future<Output = T>,
    {
        self.rt.block_on(f(self.ward.pg_addr(), self.token()))
    }

    /// The gateway survived: process alive, no panic logged, a fresh psql session works and
    /// the session opened before the fault still answers.
    fn assert_still_serving(&mut self) {
        assert!(self.ward.is_running(), "ward exited:\n{}", self.ward.log());
        let log = self.ward.log();
        assert!(!log.contains("panicked"), "ward logged a panic:\n{log}");
        assert_eq!(self.ward.psql_ok("ci", "db", "select 6 * 7"), "42");
        assert_eq!(
            self.rt.block_on(query_int(&self.before, 7)),
            Ok(7),
            "the session opened before the fault"
        );
    }

    /// End reasons of the ended audited sessions, once `count` have ended.
    fn end_reasons(&self, count: usize) -> Vec<String> {
        end_reasons(&self.ward, "ci", count)
    }
}

async fn query_int(client: &tokio_postgres::Client, v: i32) -> Result<i32, String> {
    tokio::time::timeout(IO_TIMEOUT, client.query_one("select $1::int", &[&v]))
        .await
        .map_err(|_| "query timed out".to_string())?
        .map(|row| row.get(0))
        .map_err(|e| e.to_string())
}

/// End reasons of `identity`'s ended sessions in the audit, waiting until `count` have ended.
fn end_reasons(ward: &Ward, identity: &str, count: usize) -> Vec<String> {
    ended_sessions(ward, identity, count)
        .into_iter()
        .map(|(_, reason)| reason)
        .collect()
}

/// `(client program, end reason)` of `identity`'s ended sessions, once `count` have ended.
fn ended_sessions(ward: &Ward, identity: &str, count: usize) -> Vec<(String, String)> {
    harness::wait_until(
        || {
            let (status, body) = ward.api(
                "GET",
                &format!("/api/v1/sessions?identity={identity}&limit=1000"),
                None,
            );
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("sessions JSON");
            let reasons: Vec<(String, String)> = v["sessions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| {
                    let reason = s["end_reason"].as_str()?.to_string();
                    let program = s["client_program"].as_str().unwrap_or_default();
                    Some((program.to_string(), reason))
                })
                .collect();
            (reasons.len() >= count).then_some(reasons)
        },
        &format!("{count} ended sessions of {identity} in the audit"),
    )
}

/// Asserts ward answered with exactly one FATAL ErrorResponse with `code` and then closed.
fn assert_fatal_then_closed(
    messages: &[Message],
    ending: &Ending,
    code: &str,
    text: &str,
    what: &str,
) {
    let errors: Vec<&Message> = messages.iter().filter(|m| m.is_error()).collect();
    assert_eq!(
        errors.len(),
        1,
        "{what}: expected one ErrorResponse, got\n{}",
        pgwire::show(messages)
    );
    let fields = errors[0].fields();
    assert_eq!(
        fields.get(&'S').map(String::as_str),
        Some("FATAL"),
        "{what}: {fields:?}"
    );
    assert_eq!(errors[0].sqlstate(), code, "{what}: {fields:?}");
    assert!(errors[0].text().contains(text), "{what}: {fields:?}");
    assert!(ending.closed(), "{what}: ward kept the connection open");
}

const SLEEP_ACTIVE: &str = "state = 'active' and query like 'select pg_sleep%'";

fn running_sleeps(user: &str) -> u32 {
    Postgres::get()
        .admin_sql(
            "postgres",
            &format!(
                "select count(*) from pg_stat_activity where usename = '{user}' and {SLEEP_ACTIVE}"
            ),
        )
        .parse()
        .expect("a count")
}

// ---- startup phase ----

#[test]
fn garbage_startup_bytes_get_a_clean_refusal_or_close_and_ward_keeps_serving() {
    let mut fx = Fixture::start("garbage_startup", "");
    fx.run(|addr, _| async move {
        // Random bytes, sender half-closed: whatever the first four bytes claim, ward must
        // answer (or not) and close, never wait for more.
        for round in 0..12 {
            let mut tcp = pgwire::connect(addr).await;
            let garbage = pgwire::random_bytes(256);
            pgwire::send(&mut tcp, &garbage).await;
            tcp.shutdown().await.expect("half-close");
            let (_, ending) = pgwire::drain_bytes(&mut tcp, IO_TIMEOUT).await;
            assert!(
                ending.closed(),
                "round {round}: {garbage:02x?} left the connection open"
            );
        }

        // An HTTP request: its first four bytes are an absurd length; closed without waiting.
        let mut tcp = pgwire::connect(addr).await;
        pgwire::send(&mut tcp, b"GET / HTTP/1.1\r\nHost: ward\r\n\r\n").await;
        let (_, ending) = pgwire::drain_bytes(&mut tcp, IO_TIMEOUT).await;
        assert!(ending.closed(), "HTTP request left the connection open");

        // Well-formed length, unknown request code; then protocol 2.0: told and closed.
        for (code, what) in [(0x1234_5678i32, "unknown code"), (2 << 16, "protocol 2.0")] {
            let mut packet = 16i32.to_be_bytes().to_vec();
            packet.extend_from_slice(&code.to_be_bytes());
            packet.extend_from_slice(b"user\0ci\0");
            let mut tcp = pgwire::connect(addr).await;
            pgwire::send(&mut tcp, &packet).await;
            let (messages, ending) = pgwire::read_until_end(&mut tcp, IO_TIMEOUT).await;
            assert_fatal_then_closed(&messages, &ending, "08P01", "protocol", what);
        }

        // Protocol 3.0 with parameters that are not NUL-terminated.
        let mut packet = 17i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&pgwire::PROTOCOL_3.to_be_bytes());
        packet.extend_from_slice(b"user\0ci\0d");
        let mut tcp = pgwire::connect(addr).await;
        pgwire::send(&mut tcp, &packet).await;
        let (messages, ending) = pgwire::read_until_end(&mut tcp, IO_TIMEOUT).await;
        assert_fatal_then_closed(
            &messages,
            &ending,
            "08P01",
            "malformed startup packet",
            "unterminated",
        );
    });
    fx.assert_still_serving();
}

#[test]
fn a_truncated_startup_packet_is_dropped_without_a_hang() {
    let mut fx = Fixture::start("truncated_startup", "");
    fx.run(|addr, _| async move {
        let mut packet = 100i32.to_be_bytes().to_vec();
        packet.extend_from_slice(&pgwire::PROTOCOL_3.to_be_bytes());
        packet.extend_from_slice(b"us"); // 10 bytes of the promised 100
        // Sent, then the socket closed outright.
        let mut tcp = pgwire::connect(addr).await;
        pgwire::send(&mut tcp, &packet).await;
        drop(tcp);
        // Sent, then half-closed: ward sees EOF mid-packet and must close its side.
        let mut tcp = pgwire::connect(addr).await;
        pgwire::send(&mut tcp, &packet).await;
        tcp.shutdown().await.expect("half-close");
        let (messages, ending) = pgwire::read_until_end(&mut tcp, IO_TIMEOUT).await;
        assert!(ending.closed(), "truncated packet left the connection open");
        assert!(
            messages.iter().all(Message::is_error),
            "{}",
            pgwire::show(&messages)
        );
        // The same inside TLS.
        let mut tls = pgwire::tls_connect(addr).await;
        pgwire::send(&mut tls, &packet).await;
        tls.shutdown().await.expect("TLS close");
        let (_, ending) = pgwire::read_until_end(&mut tls, IO_TIMEOUT).await;
        assert!(
            ending.closed(),
            "truncated packet over TLS left the connection open"
        );
    });
    fx.assert_still_serving();
}

#[test]
fn absurd_startup_lengths_close_the_connection_at_once() {
    let mut fx = Fixture::start("absurd_length", "");
    fx.run(|addr, _| async move {
        for len in [0xFFFF_FFFFu32, 0x7FFF_FFFF, 10_001, 0, 4, 7] {
            let mut packet = len.to_be_bytes().to_vec();
            packet.extend_from_slice(&pgwire::PROTOCOL_3.to_be_bytes());
            // Not half-closed: ward must decide from the length alone.
            let mut tcp = pgwire::connect(addr).await;
            pgwire::send(&mut tcp, &packet).await;
            let (messages, ending) = pgwire::read_until_end(&mut tcp, IO_TIMEOUT).await;
            assert!(ending.closed(), "length {len:#x} left the connection open");
            assert!(
                messages.iter().all(Message::is_error),
                "{}",
                pgwire::show(&messages)
            );

            let mut tls = pgwire::tls_connect(addr).await;
            pgwire::send(&mut tls, &packet).await;
            let (_, ending) = pgwire::read_until_end(&mut tls, IO_TIMEOUT).await;
            assert!(
                ending.closed(),
                "length {len:#x} over TLS left the connection open"
            );
        }
    });
    fx.assert_still_serving();
}

#[test]
fn a_startup_packet_without_a_user_is_refused_with_08p01() {
    let mut fx = Fixture::start("no_user", "");
    fx.run(|addr, _| async move {
        for params in [
            &[("database", "db")][..],
            &[("user", ""), ("database", "db")][..],
            &[][..],
        ] {
            let mut tls = pgwire::tls_connect(addr).await;
            pgwire::send(&mut tls, &pgwire::startup_packet(params)).await;
            let (messages, ending) = pgwire::read_until_end(&mut tls, IO_TIMEOUT).await;
            assert_fatal_then_closed(
                &messages,
                &ending,
                "08P01",
                "no user name",
                &format!("{params:?}"),
            );
        }
    });
    fx.assert_still_serving();
}

#[test]
fn a_malformed_password_message_is_refused_with_08p01() {
    let mut fx = Fixture::start("bad_password_message", "");
    fx.run(|addr, token| async move {
        let mut unterminated = pgwire::password(&token);
        unterminated.pop();
        let len = (unterminated.len() - 1) as u32;
        unterminated[1..5].copy_from_slice(&len.to_be_bytes());
        let cases: Vec<(&str, Vec<u8>)> = vec![
            ("a Query instead", pgwire::query("select 1")),
            ("absurd length", vec![b'p', 0xFF, 0xFF, 0xFF, 0xFF]),
            ("over 16 KiB", {
                let mut m = vec![b'p'];
                m.extend_from_slice(&(20_000u32).to_be_bytes());
                m
            }),
            ("not terminated", unterminated),
            ("not UTF-8", pgwire::message(b'p', b"\xff\xfe\0")),
        ];
        for (what, bytes) in cases {
            let mut tls = pgwire::tls_connect(addr).await;
            pgwire::send(
                &mut tls,
                &pgwire::startup_packet(&[("user", "ci"), ("database", "db")]),
            )
            .await;
            let asked = pgwire::read_message(&mut tls, IO_TIMEOUT)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (asked.tag, asked.body.as_slice()),
                (b'R', &3i32.to_be_bytes()[..])
            );
            pgwire::send(&mut tls, &bytes).await;
            let (messages, ending) = pgwire::read_until_end(&mut tls, IO_TIMEOUT).await;
            assert_fatal_then_closed(&messages, &ending, "08P01", "ward:", what);
        }
    });
    assert!(end_reasons_now(&fx.ward).is_empty(), "a session was opened");
    fx.assert_still_serving();
}

/// End reasons of sessions that have ended so far (no waiting).
fn end_reasons_now(ward: &Ward) -> Vec<String> {
    let (_, body) = ward.api("GET", "/api/v1/sessions?limit=1000", None);
    let v: Value = serde_json::from_str(&body).expect("sessions JSON");
    v["sessions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["end_reason"].as_str().map(str::to_string))
        .collect()
}

// ---- after login ----

/// Logs in raw, sends `bytes` and returns what ward answers until it closes.
async fn after_login(
    addr: std::net::SocketAddr,
    token: &str,
    bytes: &[u8],
) -> (Vec<Message>, Ending) {
    let mut s = pgwire::logged_in(addr, "ci", "db", token).await;
    pgwire::send(&mut s, bytes).await;
    pgwire::read_until_end(&mut s, IO_TIMEOUT).await
}

#[test]
fn a_message_over_the_configured_limit_ends_the_session_with_08p01() {
    let mut fx = Fixture::start("configured_limit", "limits: { max_message_bytes: 65536 }");
    fx.run(|addr, token| async move {
        // Under the limit: a 32 KiB query goes through.
        let mut s = pgwire::logged_in(addr, "ci", "db", &token).await;
        let long = "x".repeat(32 * 1024);
        let rows = pgwire::simple_query(&mut s, &format!("select length('{long}')")).await;
        assert_eq!(pgwire::first_column(&rows), vec![Some("32768".to_string())]);
        // Over it: a Query header claiming 1 MiB (only the start of the body follows).
        let mut header = vec![b'Q'];
        header.extend_from_slice(&(1u32 << 20).to_be_bytes());
        header.extend_from_slice(b"select ");
        pgwire::send(&mut s, &header).await;
        let (messages, ending) = pgwire::read_until_end(&mut s, IO_TIMEOUT).await;
        assert_fatal_then_closed(
            &messages,
            &ending,
            "08P01",
            "protocol violation",
            "1 MiB Query",
        );
    });
    let reasons = fx.end_reasons(1);
    assert!(
        reasons.iter().any(|r| r.contains("protocol")),
        "{reasons:?}"
    );
    fx.assert_still_serving();
}

#[test]
fn a_message_over_the_default_limit_of_1_gib_ends_the_session_with_08p01() {
    let mut fx = Fixture::start("default_limit", "");
    fx.run(|addr, token| async move {
        for (tag, len) in [
            (b'Q', 2u32 << 30),
            (b'd', 2 << 30),
            (b'P', u32::MAX),
            (b'Q', 3),
        ] {
            let mut header = vec![tag];
            header.extend_from_slice(&len.to_be_bytes());
            let (messages, ending) = after_login(addr, &token, &header).await;
            assert_fatal_then_closed(
                &messages,
                &ending,
                "08P01",
                "protocol violation",
                &format!("{:?} claiming {len} bytes", tag as char),
            );
        }
    });
    fx.assert_still_serving();
}

#[test]
fn an_unknown_message_type_after_login_ends_the_session_with_08p01() {
    let mut fx = Fixture::start("unknown_type", "");
    fx.run(|addr, token| async move {
        for tag in [b'!', 0u8, b'p'] {
            let (messages, ending) = after_login(addr, &token, &pgwire::message(tag, b"")).await;
            assert_fatal_then_closed(
                &messages,
                &ending,
                "08P01",
                "protocol violation",
                &format!("message type {tag:#04x}"),
            );
        }
    });
    let reasons = fx.end_reasons(3);
    assert!(
        reasons.iter().filter(|r| r.contains("protocol")).count() >= 3,
        "{reasons:?}"
    );
    fx.assert_still_serving();
}

#[test]
fn garbage_instead_of_a_tls_handshake_closes_only_that_connection() {
    let mut fx = Fixture::start("tls_garbage", "");
    fx.run(|addr, _| async move {
        for round in 0..5 {
            let mut tcp = pgwire::connect(addr).await;
            pgwire::send(&mut tcp, &pgwire::request_packet(pgwire::SSL_REQUEST)).await;
            assert_eq!(pgwire::read_byte(&mut tcp).await, b'S');
            // A TLS handshake record of 512 bytes holding one ClientHello of exactly the
            // rest (so no TLS stack may wait for more), whose body is random bytes.
            let mut garbage = vec![0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc];
            garbage.extend(pgwire::random_bytes(508));
            if round % 2 == 1 {
                garbage = pgwire::random_bytes(512);
            }
            let _ = pgwire::try_send(&mut tcp, &garbage).await;
            let (_, ending) = pgwire::drain_bytes(&mut tcp, IO_TIMEOUT).await;
            assert!(
                ending.closed(),
                "round {round}: ward kept the connection open"
            );
        }
        // 'S', then the client goes away before any handshake.
        let mut tcp = pgwire::connect(addr).await;
        pgwire::send(&mut tcp, &pgwire::request_packet(pgwire::SSL_REQUEST)).await;
        assert_eq!(pgwire::read_byte(&mut tcp).await, b'S');
        drop(tcp);
    });
    fx.assert_still_serving();
}

// ---- clients and targets going away ----

#[test]
fn a_killed_psql_clients_running_query_is_cancelled_on_the_target() {
    use std::os::unix::process::CommandExt;
    let mut fx = Fixture::start("vanished_psql", "");
    let user = fx.db.user.clone();
    let mut cmd = Postgres::get().psql_command();
    cmd.args(["-X", "-w", "-At", "-d", &fx.ward.conninfo("ci", "db")])
        .args(["-c", "select pg_sleep(30)"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .process_group(0);
    let mut psql = cmd.spawn().expect("spawn psql");
    let _registered = harness::register_child(psql.id());
    harness::wait_for(
        || running_sleeps(&user) == 1,
        "psql's pg_sleep running on the target",
    );
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(psql.id() as libc::pid_t, libc::SIGKILL);
    }
    psql.wait().expect("reap psql");
    harness::wait_for(
        || running_sleeps(&user) == 0,
        "the vanished client's pg_sleep to be cancelled on the target",
    );
    let reasons = fx.end_reasons(1);
    assert!(
        reasons.iter().any(|r| r.contains("client disconnected")),
        "{reasons:?}"
    );
    fx.assert_still_serving();
}

#[test]
fn a_dropped_tokio_postgres_clients_running_query_is_cancelled_on_the_target() {
    let mut fx = Fixture::start("vanished_tokio", "");
    let user = fx.db.user.clone();
    let (client, conn) = fx.rt.block_on(fx.ward.client("ci", "db"));
    let query = fx
        .rt
        .spawn(async move { client.simple_query("select pg_sleep(30)").await.map(|_| ()) });
    harness::wait_for(
        || running_sleeps(&user) == 1,
        "the client's pg_sleep running on the target",
    );
    // Drop the connection: its socket closes without a Terminate.
    conn.abort();
    let result = fx
        .rt
        .block_on(async { tokio::time::timeout(IO_TIMEOUT, query).await })
        .expect("the query future ended once its connection was dropped")
        .expect("query task");
    assert!(
        result.is_err(),
        "the query finished although its connection was dropped"
    );
    harness::wait_for(
        || running_sleeps(&user) == 0,
        "the vanished client's pg_sleep to be cancelled on the target",
    );
    // The session opened before the fault and this one: only this one has ended.
    let reasons = fx.end_reasons(1);
    assert_eq!(reasons.len(), 1, "{reasons:?}");
    assert!(reasons[0].contains("client disconnected"), "{reasons:?}");
    fx.assert_still_serving();
}

#[test]
fn an_unreachable_target_is_refused_quickly_with_08006_naming_it() {
    // A target nobody listens on (a port that was free a moment ago).
    let down = Target::new(
        "down-db",
        &format!("127.0.0.1:{}", harness::free_port()),
        Some("nothing"),
        "nobody",
        Some("unused-secret"),
    );
    let mut fx = Fixture::with("down_target", |o| o.target(down));

    let started = Instant::now();
    let out = fx.ward.psql("ci", "down-db", "select 1");
    let took = started.elapsed();
    assert!(!out.status.success(), "{}", harness::describe(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("FATAL") && stderr.contains("ward: target \"down-db\" is unavailable"),
        "{stderr}"
    );
    // Not libpq giving up on a silent server (PGCONNECT_TIMEOUT=10 in the harness).
    assert!(!stderr.contains("timeout expired"), "{stderr}");
    eprintln!("psql against the unreachable target finished after {took:?}");

    let err = match fx
        .rt
        .block_on(fx.ward.try_client(fx.ward.pg_config("ci", "down-db")))
    {
        Ok(_) => panic!("a session on an unreachable target was opened"),
        Err(e) => e,
    };
    let db = err.as_db_error().unwrap_or_else(|| panic!("{err:?}"));
    assert_eq!(
        (db.severity(), db.code().code()),
        ("FATAL", "08006"),
        "{db:?}"
    );
    assert!(db.message().contains("\"down-db\""), "{db:?}");
    fx.assert_still_serving();
}

#[test]
fn a_terminated_target_backend_gives_the_client_a_clean_error_not_a_hang() {
    let pg = Postgres::get();
    // The fixture's `db` is the bystander; `victim` is a second target with its own user.
    let victim_db = pg.create_target("terminated_victim", AuthMethod::ScramSha256);
    let mut fx = Fixture::with("terminated_bystander", |o| {
        o.target(Target::postgres("victim", &victim_db))
            .token("victim-user")
    });
    let token = fx.ward.token("victim-user");
    let addr = fx.ward.pg_addr();

    let (victim, _victim_conn) = fx.rt.block_on(fx.ward.client("victim-user", "victim"));
    assert_eq!(fx.rt.block_on(query_int(&victim, 1)), Ok(1));
    let mut raw = fx
        .rt
        .block_on(pgwire::logged_in(addr, "victim-user", "victim", &token));

    let terminated = pg.admin_sql(
        "postgres",
        &format!(
            "select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where usename = '{}') t",
            victim_db.user
        ),
    );
    assert_eq!(terminated, "2", "ward's two backends on the victim target");

    // tokio-postgres: the next query fails promptly with an error.
    let next = fx.rt.block_on(async {
        tokio::time::timeout(IO_TIMEOUT, victim.query_one("select 1", &[])).await
    });
    let err = next
        .expect("the query after the backend was terminated hung")
        .expect_err("a query on a terminated backend succeeded");
    eprintln!("tokio-postgres saw: {err}");

    // On the wire: the target's own FATAL is relayed, then ward's 08006, then close.
    let (messages, ending) = fx.rt.block_on(pgwire::read_until_end(&mut raw, IO_TIMEOUT));
    assert!(
        ending.closed(),
        "ward kept the connection open: {}",
        pgwire::show(&messages)
    );
    let codes: Vec<String> = messages
        .iter()
        .filter(|m| m.is_error())
        .map(Message::sqlstate)
        .collect();
    assert_eq!(
        codes.last().map(String::as_str),
        Some("08006"),
        "{}",
        pgwire::show(&messages)
    );
    assert!(
        messages
            .last()
            .unwrap()
            .text()
            .contains("connection to the target was lost"),
        "{}",
        pgwire::show(&messages)
    );

    // The raw client stayed connected, so ward saw the target go first. (The tokio-postgres
    // client closes its socket as soon as it reads the target's FATAL; the test below checks
    // the audit blames the target then too.)
    let ended = ended_sessions(&fx.ward, "victim-user", 2);
    let raw_reason = ended
        .iter()
        .find(|(program, _)| program == "ward-raw-test")
        .map(|(_, reason)| reason.clone())
        .unwrap_or_else(|| panic!("the raw session's end: {ended:?}"));
    assert!(
        raw_reason.contains("target"),
        "the end reason should name the target: {raw_reason}"
    );
    // A new session on the same target works.
    assert_eq!(
        fx.ward.psql_ok("victim-user", "victim", "select 'again'"),
        "again"
    );
    fx.assert_still_serving();
}

#[test]
fn the_audit_blames_the_target_when_it_terminates_a_session_the_client_then_closes() {
    const SESSIONS: usize = 20;
    let pg = Postgres::get();
    let victim_db = pg.create_target("blame_victim", AuthMethod::ScramSha256);
    let fx = Fixture::with("blame_bystander", |o| {
        o.target(Target::postgres("victim", &victim_db))
            .token("victim-user")
    });
    let clients: Vec<_> = (0..SESSIONS)
        .map(|_| fx.rt.block_on(fx.ward.client("victim-user", "victim")))
        .collect();
    for (client, _) in &clients {
        assert_eq!(fx.rt.block_on(query_int(client, 1)), Ok(1));
    }
    pg.admin_sql(
        "postgres",
        &format!(
            "select pg_terminate_backend(pid) from pg_stat_activity where usename = '{}'",
            victim_db.user
        ),
    );
    let reasons = end_reasons(&fx.ward, "victim-user", SESSIONS);
    let blamed_client: Vec<&String> = reasons.iter().filter(|r| !r.contains("target")).collect();
    assert!(
        blamed_client.is_empty(),
        "{} of {SESSIONS} sessions ended by the target are audited as: {blamed_client:?}",
        blamed_client.len()
    );
}

#[test]
fn a_silent_client_is_disconnected_after_the_startup_timeout() {
    let mut fx = Fixture::start("startup_timeout", "limits: { startup_timeout: 1s }");
    fx.run(|addr, _| async move {
        let generous = Duration::from_secs(10);
        let silent = async {
            let started = Instant::now();
            let mut tcp = pgwire::connect(addr).await;
            let (bytes, ending) = pgwire::drain_bytes(&mut tcp, generous).await;
            (started.elapsed(), bytes, ending, "TCP, nothing sent")
        };
        let after_tls = async {
            let started = Instant::now();
            let mut tls = pgwire::tls_connect(addr).await;
            let (bytes, ending) = pgwire::drain_bytes(&mut tls, generous).await;
            (started.elapsed(), bytes, ending, "TLS, no startup packet")
        };
        let no_password = async {
            let started = Instant::now();
            let mut tls = pgwire::tls_connect(addr).await;
            pgwire::send(
                &mut tls,
                &pgwire::startup_packet(&[("user", "ci"), ("database", "db")]),
            )
            .await;
            let (messages, ending) = pgwire::read_until_end(&mut tls, generous).await;
            assert_eq!(
                messages.first().map(|m| (m.tag, m.body.clone())),
                Some((b'R', 3i32.to_be_bytes().to_vec())),
                "ward should have asked for the token"
            );
            (started.elapsed(), 0, ending, "startup sent, password never")
        };
        let mid_handshake = async {
            let started = Instant::now();
            let mut tcp = pgwire::connect(addr).await;
            pgwire::send(&mut tcp, &pgwire::request_packet(pgwire::SSL_REQUEST)).await;
            assert_eq!(pgwire::read_byte(&mut tcp).await, b'S');
            // No ClientHello follows.
            let (bytes, ending) = pgwire::drain_bytes(&mut tcp, generous).await;
            (
                started.elapsed(),
                bytes,
                ending,
                "SSLRequest answered, no TLS handshake",
            )
        };
        let results = tokio::join!(silent, after_tls, no_password, mid_handshake);
        for (took, bytes, ending, what) in [results.0, results.1, results.2, results.3] {
            assert!(ending.closed(), "{what}: still open after {took:?}");
            assert_eq!(bytes, 0, "{what}: unexpected bytes");
            // Closed by the timeout, not at once.
            assert!(
                took >= Duration::from_millis(900),
                "{what}: closed after only {took:?}"
            );
        }
    });
    // The session opened before the fault outlives the startup timeout.
    fx.assert_still_serving();
}
