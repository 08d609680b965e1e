//! Approvals end to end: a statement a `review` rule holds waits on the wire, the client is
//! told how to get it approved, and it runs after approval or fails with a clear error after
//! a denial or a timeout. Approvers act through the real CLI; the webhook announces each
//! request to a receiver in the test.

mod harness;

use harness::{
    AuthMethod, PgTarget, Postgres, Target, TokenSpec, Ward, WardOptions, describe, wait_until,
};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Command, Output};
use std::sync::mpsc;
use std::time::Duration;

const RULES: &str = "
rules:
  - { name: approve-deletes, statements: [delete], action: review, approvers: [group:sre], timeout: 30s }
  - { name: two-for-truncate, statements: [truncate], action: review, approvers: [group:sre], approvals: 2, timeout: 30s }
  - { name: admin-approves-inserts, statements: [insert], action: review, timeout: 30s }
  - { name: quick-updates, statements: [update], action: review, approvers: [group:sre], timeout: 1s }
  - { name: quick-allowed-selects, statements: [select], tables: [public.audit_me], action: review, timeout: 1s, on_timeout: allow }
";

struct Env {
    db: PgTarget,
    ward: Ward,
    /// What the webhook receiver got: one JSON body per request.
    hooks: mpsc::Receiver<serde_json::Value>,
}

/// A webhook receiver on 127.0.0.1 that answers 200 to everything; returns its URL.
fn webhook_receiver() -> (String, mpsc::Receiver<serde_json::Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/approvals", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut length = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let line = line.trim_end();
                if line.is_empty() {
                    break;
                }
                if let Some((name, value)) = line.split_once(':')
                    && name.eq_ignore_ascii_case("content-length")
                {
                    length = value.trim().parse().unwrap_or(0);
                }
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            if let Ok(json) = serde_json::from_slice(&body) {
                let _ = tx.send(json);
            }
        }
    });
    (url, rx)
}

/// A target with tables `orders` (10 rows) and `audit_me`, behind a ward with the rules
/// above; alice (group dev) runs statements, bob and carol (group sre) approve.
fn start(name: &str) -> Env {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "create table orders (id int primary key, note text);
             insert into orders select g, 'n' || g from generate_series(1, 10) g;
             create table audit_me (id int);
             alter table orders owner to {user};
             alter table audit_me owner to {user}",
            user = db.user
        ),
    );
    let (url, hooks) = webhook_receiver();
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token_spec(TokenSpec::new("alice").groups(&["dev"]))
            .token_spec(TokenSpec::new("bob").groups(&["sre"]))
            .token_spec(TokenSpec::new("carol").groups(&["sre"]))
            .extra_yaml(RULES)
            .extra_yaml(&format!(
                "approvals: {{ webhook: {{ url: \"{url}\", format: json, timeout: 2s }} }}"
            )),
    );
    Env { db, ward, hooks }
}

impl Env {
    fn rows(&self) -> i64 {
        Postgres::get()
            .admin_sql(&self.db.database, "select count(*) from orders")
            .parse()
            .unwrap()
    }

    /// `ward ARGS…`, acting as `identity` with its token in WARD_TOKEN when given.
    fn cli_as(&self, identity: Option<&str>, args: &[&str]) -> Output {
        let mut cmd = Command::new(harness::ward_bin());
        cmd.arg("--config")
            .arg(self.ward.config_path())
            .args(args)
            .current_dir(self.ward.dir())
            .env_remove("WARD_TOKEN")
            .env_remove("WARD_ADMIN_TOKEN");
        if let Some(identity) = identity {
            cmd.args(["--as", identity])
                .env("WARD_TOKEN", self.ward.token(identity));
        }
        harness::run_with_timeout(&mut cmd, Duration::from_secs(60))
    }

    /// Waits for a pending request of `rule` and returns its id.
    fn pending(&self, rule: &str) -> String {
        wait_until(
            || {
                let out = self.cli_as(None, &["approvals", "list", "--format", "json"]);
                let list: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
                list["approvals"]
                    .as_array()?
                    .iter()
                    .find(|a| a["rule"] == rule && a["state"] == "pending")
                    .and_then(|a| a["id"].as_str().map(str::to_string))
            },
            &format!("a pending approval request of rule {rule}"),
        )
    }

    fn detail(&self, id: &str) -> serde_json::Value {
        let (status, body) = self
            .ward
            .api("GET", &format!("/api/v1/approvals/{id}"), None);
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
fn an_approver_releases_a_held_delete_and_nobody_approves_their_own() {
    let env = start("approve_delete");
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            env.ward
                .psql("alice", "shop", "delete from orders where id = 1")
        });
        let id = env.pending("approve-deletes");
        assert!(id.starts_with("r-"), "{id}");
        assert_eq!(env.rows(), 10, "the statement is held, not run");
        // Other sessions are unaffected while it is held.
        assert_eq!(
            env.ward
                .psql_ok("bob", "shop", "select count(*) from orders"),
            "10"
        );
        assert_eq!(
            env.ward
                .psql_ok("carol", "shop", "create temp table scratch (a int)"),
            "CREATE TABLE"
        );

        // The webhook announced it.
        let hook = env.hooks.recv_timeout(Duration::from_secs(15)).unwrap();
        assert_eq!(hook["type"], "approval_requested");
        assert_eq!(hook["request_id"], id.as_str());
        assert_eq!(hook["identity"], "alice");
        assert_eq!(hook["target"], "shop");
        assert_eq!(hook["rule"], "approve-deletes");
        assert_eq!(hook["command"], "delete from orders where id = 1");
        assert_eq!(hook["approve_command"], format!("ward approve {id}"));

        // alice cannot approve her own statement; the admin token cannot override the
        // rule's approvers.
        let out = env.cli_as(Some("alice"), &["approve", &id]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            stderr(&out).contains("an identity cannot approve its own request"),
            "{}",
            describe(&out)
        );
        let out = env.cli_as(None, &["approve", &id]);
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(stderr(&out).contains("HTTP 403"), "{}", describe(&out));
        // bob sees it and approves.
        let out = env.cli_as(Some("bob"), &["approvals", "list"]);
        assert!(stdout(&out).contains(&id), "{}", describe(&out));
        let out = env.cli_as(Some("bob"), &["approve", &id, "--reason", "one row, fine"]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(
            stdout(&out).contains("Approved request"),
            "{}",
            describe(&out)
        );

        let out = client.join().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "DELETE 1");
        assert!(
            stderr(&out).contains(&format!(
                "waiting for approval: request {id} — approve with: ward approve {id}"
            )),
            "{}",
            describe(&out)
        );
        assert_eq!(env.rows(), 9);

        // Deciding again is refused.
        let out = env.cli_as(Some("carol"), &["deny", &id, "--reason", "late"]);
        assert!(
            stderr(&out).contains("already approved"),
            "{}",
            describe(&out)
        );

        // The audit holds every step with who took it.
        let history = wait_until(
            || {
                let detail = env.detail(&id);
                let h = detail["history"].as_array()?.clone();
                (h.len() == 2).then_some(h)
            },
            "the approval's audit trail",
        );
        assert_eq!(history[0]["state"], "requested");
        assert_eq!(history[1]["state"], "approved");
        assert_eq!(history[1]["by"], "bob");
        assert_eq!(history[1]["reason"], "one row, fine");
    });
}

#[test]
fn denials_and_timeouts_reach_the_client_as_errors() {
    let env = start("approve_deny");
    std::thread::scope(|s| {
        let client = s.spawn(|| env.ward.psql("alice", "shop", "delete from orders"));
        let id = env.pending("approve-deletes");
        let out = env.cli_as(
            Some("carol"),
            &["deny", &id, "--reason", "use the archive job"],
        );
        assert!(out.status.success(), "{}", describe(&out));
        let out = client.join().unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        assert!(
            stderr(&out).contains(&format!(
                "approval request {id} was denied by carol: use the archive job"
            )),
            "{}",
            describe(&out)
        );
        assert_eq!(env.rows(), 10);
    });

    // Nobody decides: on_timeout deny refuses, on_timeout allow runs it.
    let out = env
        .ward
        .psql("alice", "shop", "update orders set note = 'x' where id = 2");
    assert!(!out.status.success(), "{}", describe(&out));
    assert!(stderr(&out).contains("timed out"), "{}", describe(&out));
    let out = env
        .ward
        .psql("alice", "shop", "select count(*) from audit_me");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(stdout(&out), "0");

    // The session ends while its statement is held: the request is withdrawn, and a late
    // approval can release nothing.
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            env.ward
                .psql("alice", "shop", "delete from orders where id = 3")
        });
        let id = env.pending("approve-deletes");
        let session = env.detail(&id)["approval"]["session_id"]
            .as_str()
            .unwrap()
            .to_string();
        let out = env.cli_as(None, &["kill", &session, "--reason", "incident"]);
        assert!(out.status.success(), "{}", describe(&out));
        let out = client.join().unwrap();
        assert!(!out.status.success(), "{}", describe(&out));
        assert_eq!(env.detail(&id)["approval"]["state"], "withdrawn");
        let out = env.cli_as(Some("bob"), &["approve", &id]);
        assert!(
            stderr(&out).contains("already withdrawn"),
            "{}",
            describe(&out)
        );
        assert_eq!(env.rows(), 10);
    });

    // The client itself goes away while its statement is held: the request is withdrawn
    // at once, not when it would have timed out.
    let mut psql = std::process::Command::new("psql");
    psql.args([
        "-X",
        "-At",
        "-d",
        &env.ward.conninfo("alice", "shop"),
        "-c",
        "delete from orders where id = 4",
    ]);
    psql.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = psql.spawn().expect("start psql");
    let id = env.pending("approve-deletes");
    child.kill().expect("kill psql");
    let _ = child.wait();
    wait_until(
        || (env.detail(&id)["approval"]["state"] == "withdrawn").then_some(()),
        "the request of a vanished client to be withdrawn",
    );
    assert_eq!(env.rows(), 10);

    let out = env.cli_as(None, &["approvals", "list", "--format", "json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let states: Vec<(&str, &str)> = list["approvals"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["rule"].as_str().unwrap(), a["state"].as_str().unwrap()))
        .collect();
    assert!(
        states.contains(&("approve-deletes", "denied")),
        "{states:?}"
    );
    assert!(
        states.contains(&("quick-updates", "timed_out")),
        "{states:?}"
    );
    assert!(
        states.contains(&("quick-allowed-selects", "timed_out")),
        "{states:?}"
    );
}

#[test]
fn two_approvers_or_the_admin_as_the_rule_says() {
    let env = start("approve_two");
    std::thread::scope(|s| {
        let client = s.spawn(|| env.ward.psql("alice", "shop", "truncate audit_me"));
        let id = env.pending("two-for-truncate");
        let out = env.cli_as(Some("bob"), &["approve", &id]);
        assert!(out.status.success(), "{}", describe(&out));
        assert!(stdout(&out).contains("needs 1 more"), "{}", describe(&out));
        let out = env.cli_as(Some("bob"), &["approve", &id]);
        assert!(
            stderr(&out).contains("bob has already approved"),
            "{}",
            describe(&out)
        );
        let out = env.cli_as(Some("carol"), &["approve", &id]);
        assert!(out.status.success(), "{}", describe(&out));
        let out = client.join().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "TRUNCATE TABLE");
    });

    // A rule without approvers: the admin token approves, identities may not.
    std::thread::scope(|s| {
        let client = s.spawn(|| {
            env.ward
                .psql("alice", "shop", "insert into audit_me values (1)")
        });
        let id = env.pending("admin-approves-inserts");
        let out = env.cli_as(Some("bob"), &["approve", &id]);
        assert!(
            stderr(&out).contains("only the admin"),
            "{}",
            describe(&out)
        );
        let out = env.cli_as(None, &["approve", &id]);
        assert!(out.status.success(), "{}", describe(&out));
        let out = client.join().unwrap();
        assert!(out.status.success(), "{}", describe(&out));
        assert_eq!(stdout(&out), "INSERT 0 1");
    });
}
