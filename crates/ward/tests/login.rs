//! `ward login` and ward tokens end to end: the real `ward` binary logs in at the real
//! OpenID Connect provider (harness/oidc.rs, client `ward-cli`), driven headlessly — a
//! cookie-keeping HTTP client plays the browser, through the provider's devInteractions
//! login form, back to the CLI's loopback listener — or with the device flow; then psql and
//! tokio-postgres use the stored session token (`ward token current`) through a real `ward
//! serve` to the harness's real PostgreSQL. Minted tokens: target scope, revocation, the
//! minter's lock, who may mint and for how long, and tokens surviving a restart.

mod harness;

use harness::{output_text, rt, target_with_table};

use harness::oidc::{self, OidcProvider};
use harness::{Target, Ward, WardOptions, wait_until};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

// ---- helpers ----

/// ward with targets `alpha` and `beta`, `ward login` through the provider's `ward-cli`
/// client, and minting for members of `dba` (at most 1h).
fn start_ward(provider: &OidcProvider, prefix: &str) -> Ward {
    let a = target_with_table(&format!("{prefix}_alpha"));
    let b = target_with_table(&format!("{prefix}_beta"));
    Ward::start(
        WardOptions::new()
            .target(Target::postgres("alpha", &a))
            .target(Target::postgres("beta", &b))
            .identity_yaml(&format!(
                "oidc:\n  - issuer: {issuer}\n    audiences: [ward-cli]\n    name_prefix: \"oidc:\"\n\
                 login:\n  issuer: {issuer}\n  client_id: ward-cli\n\
                 mint:\n  groups: [dba]\n  max_ttl: 1h\n",
                issuer = provider.issuer
            )),
    )
}

/// A `ward` command for a person: no config file (run in an empty directory), its session
/// kept in `home`.
fn person(home: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(harness::ward_bin());
    cmd.args(args)
        .current_dir(home)
        .env("WARD_CONFIG_DIR", home.join("config"))
        .env_remove("WARD_CONFIG")
        .env_remove("WARD_API")
        .env_remove("WARD_ADMIN_TOKEN");
    cmd
}

fn run(mut cmd: Command) -> Output {
    cmd.stdin(Stdio::null());
    cmd.output().expect("run ward")
}

/// A browser stand-in: a cookie jar, redirects followed by hand (so the test sees where the
/// provider sends it), forms filled from their hidden inputs.
struct Browser {
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new()
                .redirects(0)
                .timeout(Duration::from_secs(20))
                .build(),
            cookies: BTreeMap::new(),
        }
    }

    /// GET or POST; returns the status, the Location (absolute) and the body.
    fn go(
        &mut self,
        url: &str,
        form: Option<&[(String, String)]>,
    ) -> (u16, Option<String>, String) {
        let cookies = self
            .cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let request = match form {
            None => self.agent.get(url),
            Some(_) => self.agent.post(url),
        }
        .set("Cookie", &cookies);
        let result = match form {
            None => request.call(),
            Some(form) => {
                let pairs: Vec<(&str, &str)> =
                    form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                request.send_form(&pairs)
            }
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(e) => panic!("{url}: {e}"),
        };
        for set in response.all("set-cookie") {
            let pair = set.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        let status = response.status();
        let location = response.header("location").map(|l| absolute(url, l));
        (status, location, response.into_string().unwrap_or_default())
    }
}

fn absolute(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let origin: String = base.splitn(4, '/').take(3).collect::<Vec<_>>().join("/");
    format!("{origin}{location}")
}

/// The first form of `page`: its action and hidden inputs.
fn first_form(page: &str, url: &str) -> Option<(String, Vec<(String, String)>)> {
    let start = page.find("<form")?;
    let form = &page[start
        ..page[start..]
            .find("</form>")
            .map_or(page.len(), |e| start + e)];
    let attr = |tag: &str, name: &str| -> Option<String> {
        let at = tag.find(&format!("{name}=\""))? + name.len() + 2;
        Some(tag[at..].split('"').next()?.to_string())
    };
    let head = &form[..form.find('>').unwrap_or(form.len())];
    let action = attr(head, "action").map_or(url.to_string(), |a| absolute(url, &a));
    let mut fields = Vec::new();
    for input in form.split("<input").skip(1) {
        let tag = &input[..input.find('>').unwrap_or(input.len())];
        if attr(tag, "type").as_deref() == Some("hidden")
            && let (Some(name), Some(value)) = (attr(tag, "name"), attr(tag, "value"))
        {
            fields.push((name, value.replace("&amp;", "&")));
        }
    }
    Some((action, fields))
}

/// Walks the provider's pages from `url` as `user` would: the login form (devInteractions:
/// any user name, no password), other forms submitted as they are, redirects followed,
/// until a redirect whose target starts with `stop` (returned) or a page without a form
/// (`None`: e.g. the device flow's success page).
fn walk(browser: &mut Browser, url: &str, user: &str, stop: &str) -> Option<String> {
    let mut url = url.to_string();
    let mut form: Option<Vec<(String, String)>> = None;
    for _ in 0..20 {
        let (_, location, page) = browser.go(&url, form.as_deref());
        form = None;
        if let Some(next) = location {
            if next.starts_with(stop) {
                return Some(next);
            }
            url = next;
            continue;
        }
        if page.contains("name=\"prompt\" value=\"login\"") {
            let (action, mut fields) = first_form(&page, &url).expect("the login form");
            fields.retain(|(k, _)| k != "login" && k != "password");
            fields.push(("login".into(), user.into()));
            fields.push(("password".into(), "x".into()));
            url = action;
            form = Some(fields);
            continue;
        }
        match first_form(&page, &url) {
            Some((action, fields)) => {
                url = action;
                form = Some(fields);
            }
            None => return None,
        }
    }
    panic!("the provider's pages did not end after 20 steps (last: {url})");
}

/// A running `ward login`: its stderr lines as they come.
struct Login {
    child: std::process::Child,
    _registered: harness::RegisteredChild,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Login {
    fn start(home: &Path, ward: &Ward, extra: &[&str]) -> Login {
        let api = ward.api_url();
        let mut args = vec!["login", "--no-browser", "--api", api.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = person(home, &args);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("start ward login");
        let registered = harness::register_child(child.id());
        let (tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().expect("piped stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        Login {
            child,
            _registered: registered,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line `pick` accepts (waits up to 30s).
    fn wait_line(&mut self, what: &str, pick: impl Fn(&str) -> Option<String>) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(line) = self.lines.recv_timeout(Duration::from_millis(200)) {
                let found = pick(&line);
                self.seen.push(line);
                if let Some(found) = found {
                    return found;
                }
            }
        }
        panic!("ward login printed no {what}:\n{}", self.seen.join("\n"));
    }

    /// Waits for the command to finish; returns its stdout, failing the test if it failed.
    fn finish(mut self) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for ward login") {
                while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                    self.seen.push(line);
                }
                let mut out = String::new();
                std::io::Read::read_to_string(
                    self.child.stdout.as_mut().expect("piped stdout"),
                    &mut out,
                )
                .expect("read stdout");
                assert!(
                    status.success(),
                    "ward login failed ({status}):\n{out}\n{}",
                    self.seen.join("\n")
                );
                return out;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ward login did not finish:\n{}", self.seen.join("\n"));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// `ward login --no-browser` as `user`, the browser played by [`walk`]; returns its stdout.
fn browser_login(ward: &Ward, home: &Path, user: &str) -> String {
    let mut login = Login::start(home, ward, &[]);
    let url = login.wait_line("authorization URL", |l| {
        l.trim().starts_with("http").then(|| l.trim().to_string())
    });
    assert!(
        url.contains("code_challenge_method=S256") && url.contains("nonce="),
        "{url}"
    );
    let mut browser = Browser::new();
    let redirect_uri = url
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("redirect_uri="))
        .expect("a redirect_uri")
        .replace("%3A", ":")
        .replace("%2F", "/");
    assert!(
        redirect_uri.starts_with("http://127.0.0.1:") && redirect_uri.ends_with("/callback"),
        "{redirect_uri}"
    );
    let callback = walk(&mut browser, &url, user, &redirect_uri)
        .expect("the provider sends the browser back to the CLI");
    assert!(callback.contains("/callback?"), "{callback}");
    // The browser follows the redirect to the CLI's loopback listener.
    let (status, _, page) = browser.go(&callback, None);
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("close this tab"), "{page}");
    login.finish()
}

fn session_of(home: &Path) -> Value {
    let path = home.join("config/session.json");
    let text = std::fs::read_to_string(&path).expect("session.json");
    serde_json::from_str(&text).expect("session JSON")
}

fn current_token(home: &Path) -> String {
    let out = run(person(home, &["token", "current"]));
    assert!(out.status.success(), "{}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn psql(ward: &Ward, target: &str, password: &str, sql: &str) -> Output {
    let conninfo = ward.conninfo_with("any", target, password, "require");
    ward.psql_args(&conninfo, &["-w", "-At", "-c", sql])
}

/// The SQLSTATE and message of a refused login with `password` on `target`.
fn refused(ward: &Ward, target: &str, password: &str) -> (String, String) {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(ward.pg_port())
        .dbname(target)
        .user("any")
        .password(password)
        .ssl_mode(tokio_postgres::config::SslMode::Require)
        .connect_timeout(Duration::from_secs(10));
    let result = rt().block_on(ward.try_client(config));
    let Err(e) = result else {
        panic!("the login on {target} was accepted");
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().code().to_string(), db.message().to_string())
}

/// The session starts in the store (parsed bodies), once one names `identity`.
fn session_start_of(ward: &Ward, identity: &str) -> Value {
    wait_until(
        || {
            let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).ok()?;
            let mut stmt = db
                .prepare("SELECT body FROM event_log WHERE kind = 'session_start' ORDER BY id DESC")
                .ok()?;
            let bodies: Vec<String> = stmt
                .query_map([], |r| r.get::<_, String>(0))
                .ok()?
                .map_while(Result::ok)
                .collect();
            bodies
                .iter()
                .map(|b| serde_json::from_str::<Value>(b).expect("session_start JSON"))
                .find(|s| s["identity"] == identity)
        },
        &format!("a session start of {identity}"),
    )
}

fn refusal_event(ward: &Ward, code: &str) -> Value {
    wait_until(
        || {
            let (status, body) =
                ward.api("GET", &format!("/api/v1/auth/refusals?code={code}"), None);
            assert_eq!(status, 200, "list refusals: {body}");
            let v: Value = serde_json::from_str(&body).expect("refusals JSON");
            v["refusals"].as_array().and_then(|a| a.first().cloned())
        },
        &format!("an auth_refused event with code {code}"),
    )
}

fn temp_home(ward: &Ward, name: &str) -> PathBuf {
    let home = ward.dir().join(format!("home-{name}"));
    std::fs::create_dir_all(&home).expect("create a home directory");
    home
}

// ---- tests ----

#[test]
fn ward_login_in_a_browser_or_with_a_device_code_gives_a_session_token_psql_accepts() {
    let Some(provider) = oidc::provider() else {
        return;
    };
    let ward = start_ward(provider, "login_flows");
    let home = temp_home(&ward, "alice");

    // Nothing stored yet: `ward token current` says what to do.
    let out = run(person(&home, &["token", "current"]));
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("run `ward login`"),
        "{}",
        output_text(&out)
    );

    let summary = browser_login(&ward, &home, "alice");
    assert!(
        summary.contains("Logged in as oidc:alice (groups dba, dev)")
            && summary.contains("PGPASSWORD=$(ward token current) psql"),
        "{summary}"
    );
    let session = session_of(&home);
    assert_eq!(session["identity"], "oidc:alice");
    assert_eq!(session["api"], ward.api_url().as_str());
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&home.join("config/session.json")), 0o600);
    assert_eq!(mode(&home.join("config")), 0o700);
    let token = current_token(&home);
    assert!(token.starts_with("ward_st_"), "{token}");
    assert_eq!(session["token"], token.as_str());

    let out = psql(&ward, "alpha", &token, "select count(*) from t");
    assert!(out.status.success(), "{}", output_text(&out));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
    let start = session_start_of(&ward, "oidc:alice");
    assert_eq!(start["groups"], serde_json::json!(["dba", "dev"]));
    assert_eq!(start["credential"]["source"], "ward_token");
    assert_eq!(start["credential"]["token_id"], session["token_id"]);

    // The device flow: the code is entered at the provider's /device page.
    let device_home = temp_home(&ward, "device");
    let mut login = Login::start(&device_home, &ward, &["--device"]);
    let verification = login.wait_line("verification URI", |l| {
        l.split_whitespace()
            .skip_while(|w| *w != "open")
            .nth(1)
            .filter(|u| u.starts_with("http"))
            .map(str::to_string)
    });
    let code = login.wait_line("user code", |l| {
        let t = l.trim();
        (t.len() == 9 && t.as_bytes()[4] == b'-').then(|| t.to_string())
    });
    let mut browser = Browser::new();
    let (_, _, page) = browser.go(&verification, None);
    let (action, mut fields) = first_form(&page, &verification).expect("the user-code form");
    fields.push(("user_code".into(), code.clone()));
    let (_, location, page) = browser.go(&action, Some(&fields));
    assert!(location.is_none(), "the code is confirmed on a page");
    let (action, fields) = first_form(&page, &action).expect("the confirmation form");
    let (_, location, _) = browser.go(&action, Some(&fields));
    let login_page = location.expect("confirming the code leads to the login");
    let ended = walk(&mut browser, &login_page, "alice", "http://never/");
    assert!(ended.is_none());
    let summary = login.finish();
    assert!(summary.contains("Logged in as oidc:alice"), "{summary}");
    let token = current_token(&device_home);
    let out = psql(&ward, "beta", &token, "select 1");
    assert!(out.status.success(), "{}", output_text(&out));
}

#[test]
fn minted_tokens_are_scoped_revocable_die_with_their_minter_and_survive_a_restart() {
    let Some(provider) = oidc::provider() else {
        return;
    };
    let mut ward = start_ward(provider, "login_mint");
    let alice = temp_home(&ward, "alice");
    let bob = temp_home(&ward, "bob");
    browser_login(&ward, &alice, "alice");
    browser_login(&ward, &bob, "bob");

    let out = run(person(
        &alice,
        &[
            "token", "mint", "--ttl", "15m", "--target", "alpha", "--label", "nightly",
        ],
    ));
    assert!(out.status.success(), "{}", output_text(&out));
    let minted = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(minted.starts_with("ward_st_"), "{}", output_text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        stderr.contains("oidc:alice/nightly") && stderr.contains("targets alpha"),
        "{stderr}"
    );
    let out = psql(&ward, "alpha", &minted, "select count(*) from t");
    assert!(out.status.success(), "{}", output_text(&out));
    let start = session_start_of(&ward, "oidc:alice/nightly");
    let attrs = start["credential"]["attributes"].to_string();
    assert!(
        attrs.contains("\"minted_by\",\"oidc:alice\"") && attrs.contains("\"label\",\"nightly\""),
        "{attrs}"
    );
    let (code, message) = refused(&ward, "beta", &minted);
    assert_eq!(code, "28P01");
    assert!(message.contains("may not be used for target"), "{message}");

    // Who may mint, and for how long.
    let out = run(person(
        &alice,
        &["token", "mint", "--ttl", "2h", "--label", "long"],
    ));
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("at most 1h"),
        "{}",
        output_text(&out)
    );
    let out = run(person(
        &bob,
        &["token", "mint", "--ttl", "15m", "--label", "x"],
    ));
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("oidc:bob may not mint tokens")
            && output_text(&out).contains("HTTP 403"),
        "{}",
        output_text(&out)
    );

    // Listed for alice through her session (no admin token anywhere near her).
    let out = run(person(&alice, &["token", "list", "--format", "json"]));
    assert!(out.status.success(), "{}", output_text(&out));
    let list: Value = serde_json::from_slice(&out.stdout).expect("token list JSON");
    let nightly = list["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["identity"] == "oidc:alice/nightly")
        .unwrap_or_else(|| panic!("{list}"))
        .clone();
    let id = nightly["token_id"].as_str().unwrap().to_string();

    // A restart reloads the tokens in force from the store.
    ward.restart();
    let login_token = current_token(&alice);
    let out = psql(&ward, "beta", &login_token, "select 1");
    assert!(out.status.success(), "after restart: {}", output_text(&out));
    let out = psql(&ward, "alpha", &minted, "select 1");
    assert!(out.status.success(), "after restart: {}", output_text(&out));

    // Revoked: refused, and the refusal is audited.
    let out = run(person(
        &alice,
        &["token", "revoke", &id, "--reason", "done"],
    ));
    assert!(out.status.success(), "{}", output_text(&out));
    let (code, message) = refused(&ward, "alpha", &minted);
    assert_eq!(code, "28P01");
    assert!(message.contains("was revoked"), "{message}");
    let event = refusal_event(&ward, "revoked");
    assert_eq!(event["source"], "ward_token", "{event}");

    // Locking the minter stops what she minted.
    let out = run(person(
        &alice,
        &["token", "mint", "--ttl", "15m", "--label", "second"],
    ));
    assert!(out.status.success(), "{}", output_text(&out));
    let second = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let out = psql(&ward, "beta", &second, "select 1");
    assert!(out.status.success(), "{}", output_text(&out));
    ward.cli_ok(&["lock", "oidc:alice", "--reason", "offboarding"]);
    let (code, message) = refused(&ward, "beta", &second);
    assert_eq!(code, "28000");
    assert!(
        message.contains("\"oidc:alice\" is locked: offboarding"),
        "{message}"
    );
    let out = run(person(
        &alice,
        &["token", "mint", "--ttl", "15m", "--label", "third"],
    ));
    assert!(!out.status.success());
    assert!(
        output_text(&out).contains("is locked"),
        "{}",
        output_text(&out)
    );
}
