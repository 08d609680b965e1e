//! `ward login`: log in at the identity provider and trade its ID token for a ward session
//! token, stored for `ward token current` (the PostgreSQL password) and the other verbs.
//!
//! The default is the authorization-code flow with PKCE (S256) and a loopback redirect: the
//! CLI listens on `http://127.0.0.1:<random port>/callback` for the one request the browser
//! makes after the login, checks `state`, exchanges the code, checks the ID token's `nonce`
//! and hands the ID token to ward (`POST /api/v1/auth/login`), which verifies it. `--device`
//! uses the device authorization grant instead, for machines without a browser.

use super::session_file::{self, Session};
use super::{ApiArgs, ConfigLocation, api};
use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use rand::RngCore;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use ward_api::login::{AuthConfigView, IssuedView};

/// How long the CLI waits for the browser to come back (or the device code to be used).
const LOGIN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Debug, Args)]
pub struct LoginArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// Use the device authorization grant: print a code to enter on another device's
    /// browser (for SSH sessions and machines without a browser).
    #[arg(long)]
    pub device: bool,

    /// Do not try to open a browser; only print the URL to open.
    #[arg(long)]
    pub no_browser: bool,

    /// Print only the ward session token on standard output (the rest goes to standard
    /// error), e.g. `export PGPASSWORD=$(ward login --print-token)`.
    #[arg(long)]
    pub print_token: bool,
}

fn random_b64(bytes: usize) -> String {
    let mut raw = vec![0u8; bytes];
    rand::rngs::OsRng.fill_bytes(&mut raw);
    URL_SAFE_NO_PAD.encode(raw)
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay).
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
}

/// Runs `ward login`.
pub fn login(config: &ConfigLocation, args: &LoginArgs) -> anyhow::Result<()> {
    let base = api::ApiClient::base_url(config, &args.api)?;
    let agent = agent();
    let auth = fetch_auth_config(&agent, &base)?;
    let id_token = if args.device {
        device_flow(&agent, &auth)?
    } else {
        code_flow(&agent, &auth, !args.no_browser)?
    };
    let issued = exchange(&agent, &base, &id_token)?;
    let session = Session {
        api: base.clone(),
        token: issued.token.clone(),
        token_id: issued.token_id.clone(),
        identity: issued.identity.clone(),
        groups: issued.groups.clone(),
        expires_at: issued.expires_at.clone(),
    };
    let path = session_file::save(&session)?;
    let host = base
        .trim_start_matches("http://")
        .split([':', '/'])
        .next()
        .unwrap_or("localhost")
        .to_string();
    let left = session
        .expires()
        .map(|e| e - chrono::Utc::now())
        .and_then(|d| d.to_std().ok())
        .map(|d| humantime::format_duration(Duration::from_secs(d.as_secs() / 60 * 60)).to_string())
        .unwrap_or_default();
    let summary = format!(
        "Logged in as {} ({}) until {} ({left}).\n\
         The session token is in {} (readable only by you).\n\n\
         Use it as the PostgreSQL password through ward (any user name works):\n  \
           PGPASSWORD=$(ward token current) psql \"host={host} user=any dbname=<target> sslmode=require\"\n\
         (host and port are those of ward's PostgreSQL listener.) Tokens for bots: ward token mint --help\n",
        issued.identity,
        if issued.groups.is_empty() {
            "no groups".to_string()
        } else {
            format!("groups {}", issued.groups.join(", "))
        },
        issued.expires_at,
        path.display(),
    );
    if args.print_token {
        eprint!("{summary}");
        super::output::print_stdout(&format!("{}\n", issued.token))
    } else {
        super::output::print_stdout(&summary)
    }
}

fn fetch_auth_config(agent: &ureq::Agent, base: &str) -> anyhow::Result<AuthConfigView> {
    let url = format!("{base}/api/v1/auth/config");
    match agent.get(&url).call() {
        Ok(r) => r
            .into_json()
            .with_context(|| format!("unexpected answer from {url}; is {base} ward's admin API?")),
        Err(ureq::Error::Status(code, r)) => bail!(
            "ward at {base} cannot start a login: {} (HTTP {code})",
            error_of(r)
        ),
        Err(ureq::Error::Transport(e)) => bail!(
            "cannot reach ward's API at {base}: {e}; give its address with --api URL (or WARD_API)"
        ),
    }
}

fn error_of(response: ureq::Response) -> String {
    let text = response.into_string().unwrap_or_default();
    match serde_json::from_str::<Value>(&text) {
        Ok(v) => {
            let error = v["error"].as_str().unwrap_or_default();
            match v["error_description"].as_str() {
                Some(d) => format!("{error}: {d}"),
                None if !error.is_empty() => error.to_string(),
                None => text.chars().take(200).collect(),
            }
        }
        Err(_) => text.chars().take(200).collect(),
    }
}

/// Form fields that identify the client at the token endpoint.
fn client_form<'a>(auth: &'a AuthConfigView, form: &mut Vec<(&'a str, &'a str)>) {
    form.push(("client_id", &auth.client_id));
    if let Some(secret) = &auth.client_secret {
        form.push(("client_secret", secret));
    }
}

#[derive(Deserialize)]
struct TokenAnswer {
    id_token: Option<String>,
}

fn code_flow(agent: &ureq::Agent, auth: &AuthConfigView, browser: bool) -> anyhow::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .context("cannot listen on 127.0.0.1 for the login's redirect")?;
    let port = listener.local_addr()?.port();
    let redirect_uri = format!("http://127.0.0.1:{port}/callback");
    let verifier = random_b64(32);
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    let state = random_b64(16);
    let nonce = random_b64(16);
    let sep = if auth.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!(
        "{}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
         &code_challenge={challenge}&code_challenge_method=S256",
        auth.authorization_endpoint,
        encode(&auth.client_id),
        encode(&redirect_uri),
        encode(&auth.scopes.join(" ")),
    );
    eprintln!("To log in to ward, open this URL in your browser:\n\n  {url}\n");
    if browser {
        open_browser(&url);
    }
    eprintln!("Waiting for the identity provider to send you back (up to 5 minutes)…");
    let params = wait_for_callback(&listener, &state)?;
    let code = params
        .iter()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.clone())
        .context("the identity provider sent no code back")?;
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", redirect_uri.as_str()),
        ("code_verifier", verifier.as_str()),
    ];
    client_form(auth, &mut form);
    let answer: TokenAnswer = token_request(agent, auth, &form)?.map_err(|(error, why)| {
        anyhow::anyhow!("the identity provider refused to exchange the login code: {error}: {why}")
    })?;
    let id_token = answer
        .id_token
        .context("the identity provider answered without an ID token; is `openid` among identity.login.scopes?")?;
    let claims = unverified_claims(&id_token)?;
    if claims["nonce"].as_str() != Some(nonce.as_str()) {
        bail!(
            "the ID token's nonce does not match this login; it may have been replayed — run \
             `ward login` again"
        );
    }
    Ok(id_token)
}

/// POSTs `form` to the token endpoint: `Ok(Ok(answer))`, `Ok(Err(oauth error))` for an
/// OAuth error answer, `Err` when the endpoint cannot be reached or answers nonsense.
fn token_request<T: serde::de::DeserializeOwned>(
    agent: &ureq::Agent,
    auth: &AuthConfigView,
    form: &[(&str, &str)],
) -> anyhow::Result<Result<T, (String, String)>> {
    let url = &auth.token_endpoint;
    match agent.post(url).send_form(form) {
        Ok(r) => Ok(Ok(r.into_json().with_context(|| {
            format!("unexpected answer from the token endpoint {url}")
        })?)),
        Err(ureq::Error::Status(code, r)) => {
            let text = r.into_string().unwrap_or_default();
            let v: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            let error = v["error"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| format!("HTTP {code}"));
            let description = v["error_description"]
                .as_str()
                .map(str::to_string)
                .unwrap_or_else(|| text.chars().take(200).collect());
            Ok(Err((error, description)))
        }
        Err(ureq::Error::Transport(e)) => {
            bail!("cannot reach the identity provider's token endpoint {url}: {e}")
        }
    }
}

fn unverified_claims(jwt: &str) -> anyhow::Result<Value> {
    let payload = jwt
        .split('.')
        .nth(1)
        .context("the identity provider's ID token is not a JWT")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .context("the identity provider's ID token is not a JWT")?;
    serde_json::from_slice(&bytes).context("the identity provider's ID token is not a JWT")
}

fn open_browser(url: &str) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    let started = std::process::Command::new(opener)
        .arg(url)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    if started.is_err() {
        eprintln!("(could not start {opener}; open the URL yourself)");
    }
}

/// Serves the loopback redirect until the one request with `state` arrives; other requests
/// (a browser's favicon) get a 404. Answers the browser with a short page.
fn wait_for_callback(listener: &TcpListener, state: &str) -> anyhow::Result<Vec<(String, String)>> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + LOGIN_TIMEOUT;
    loop {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() >= deadline {
                    bail!("no answer from the browser within 5 minutes; run `ward login` again");
                }
                std::thread::sleep(Duration::from_millis(50));
                continue;
            }
            Err(e) => return Err(e).context("waiting for the login's redirect"),
        };
        let mut stream = stream;
        stream.set_nonblocking(false)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let Some(target) = request_target(&mut stream) else {
            continue;
        };
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        if path != "/callback" {
            respond(&mut stream, "404 Not Found", "Not found.");
            continue;
        }
        let params = query_params(query);
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        if get("state") != Some(state) {
            respond(
                &mut stream,
                "400 Bad Request",
                "This answer does not belong to the login ward started. Run `ward login` again.",
            );
            bail!(
                "the login's redirect carried the wrong state (not the login this command \
                 started); run `ward login` again"
            );
        }
        if let Some(error) = get("error") {
            let description = get("error_description").unwrap_or("");
            respond(
                &mut stream,
                "200 OK",
                &format!("Login failed: {error} {description}. See your terminal."),
            );
            bail!(
                "the identity provider refused the login: {error}{}{}",
                if description.is_empty() { "" } else { ": " },
                description
            );
        }
        respond(
            &mut stream,
            "200 OK",
            "You are logged in to ward. You can close this tab and go back to your terminal.",
        );
        return Ok(params);
    }
}

/// The request target of one HTTP request (`/callback?code=…`), or `None` if it is not one.
fn request_target(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut parts = text.lines().next()?.split_whitespace();
    let method = parts.next()?;
    let target = parts.next()?;
    (method == "GET").then(|| target.to_string())
}

fn respond(stream: &mut TcpStream, status: &str, message: &str) {
    let body = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>ward login</title></head>\
         <body style=\"font-family: sans-serif; margin: 3em\"><p>{}</p></body></html>\n",
        message
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\
         Cache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.flush();
}

#[derive(Deserialize)]
struct DeviceAnswer {
    device_code: String,
    user_code: String,
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
}

fn device_flow(agent: &ureq::Agent, auth: &AuthConfigView) -> anyhow::Result<String> {
    let Some(endpoint) = &auth.device_authorization_endpoint else {
        bail!(
            "the identity provider ({}) offers no device authorization endpoint; run `ward \
             login` without --device",
            auth.issuer
        );
    };
    let scope = auth.scopes.join(" ");
    let mut form = vec![("scope", scope.as_str())];
    client_form(auth, &mut form);
    let answer: DeviceAnswer = match agent.post(endpoint).send_form(&form) {
        Ok(r) => r
            .into_json()
            .with_context(|| format!("unexpected answer from {endpoint}"))?,
        Err(ureq::Error::Status(code, r)) => bail!(
            "the identity provider refused to start a device login: {} (HTTP {code})",
            error_of(r)
        ),
        Err(ureq::Error::Transport(e)) => {
            bail!("cannot reach the identity provider at {endpoint}: {e}")
        }
    };
    eprintln!(
        "To log in to ward, open {} on any device and enter the code\n\n  {}\n",
        answer.verification_uri, answer.user_code
    );
    if let Some(complete) = &answer.verification_uri_complete {
        eprintln!("(or open {complete}, which has the code in it)\n");
    }
    let expires = Duration::from_secs(answer.expires_in.unwrap_or(600));
    let deadline = Instant::now() + expires.min(Duration::from_secs(1800));
    let mut interval = Duration::from_secs(answer.interval.unwrap_or(5).clamp(1, 60));
    eprintln!("Waiting for you to log in there…");
    loop {
        std::thread::sleep(interval);
        if Instant::now() >= deadline {
            bail!(
                "the code {} expired; run `ward login --device` again",
                answer.user_code
            );
        }
        let mut form = vec![
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", answer.device_code.as_str()),
        ];
        client_form(auth, &mut form);
        match token_request::<TokenAnswer>(agent, auth, &form)? {
            Ok(t) => {
                return t.id_token.context(
                    "the identity provider answered without an ID token; is `openid` among \
                     identity.login.scopes?",
                );
            }
            Err((error, description)) => match error.as_str() {
                "authorization_pending" => {}
                "slow_down" => interval += Duration::from_secs(5),
                "expired_token" => bail!(
                    "the code {} expired before the login finished; run `ward login --device` again",
                    answer.user_code
                ),
                "access_denied" => bail!("the login was denied at the identity provider"),
                _ => {
                    bail!("the identity provider refused the device login: {error}: {description}")
                }
            },
        }
    }
}

/// Trades the IdP's ID token for a ward session token.
fn exchange(agent: &ureq::Agent, base: &str, id_token: &str) -> anyhow::Result<IssuedView> {
    let url = format!("{base}/api/v1/auth/login");
    match agent
        .post(&url)
        .set("Authorization", &format!("Bearer {id_token}"))
        .call()
    {
        Ok(r) => r
            .into_json()
            .with_context(|| format!("unexpected answer from {url}")),
        Err(ureq::Error::Status(code, r)) => {
            bail!("ward refused the login: {} (HTTP {code})", error_of(r))
        }
        Err(ureq::Error::Transport(e)) => bail!("cannot reach ward's API at {base}: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_strings_round_trip() {
        let value = "a b&c=d/é";
        let params = query_params(&format!("x={}&code=abc&empty=", encode(value)));
        assert_eq!(params[0], ("x".into(), value.into()));
        assert_eq!(params[1], ("code".into(), "abc".into()));
        assert_eq!(params[2], ("empty".into(), String::new()));
        assert_eq!(decode("100%"), "100%");
        assert_eq!(decode("%zz"), "%zz");
        assert_eq!(decode("a+b"), "a b");
    }

    #[test]
    fn the_callback_checks_state_and_reports_idp_errors() {
        fn get(addr: std::net::SocketAddr, path: &str) -> String {
            let mut s = TcpStream::connect(addr).unwrap();
            write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
            let mut answer = String::new();
            let _ = s.read_to_string(&mut answer);
            answer
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Each round: the CLI's listener in a thread, the browser's requests one by one.
        let round = |listener: TcpListener, paths: &[&str]| {
            let server = std::thread::spawn(move || {
                let result = wait_for_callback(&listener, "s1").map_err(|e| e.to_string());
                (listener, result)
            });
            let answers: Vec<String> = paths.iter().map(|p| get(addr, p)).collect();
            let (listener, result) = server.join().unwrap();
            (listener, result, answers)
        };
        let (listener, result, answers) =
            round(listener, &["/favicon.ico", "/callback?code=c1&state=s1"]);
        assert!(result.unwrap().contains(&("code".into(), "c1".into())));
        assert!(answers[0].contains("404"));
        assert!(answers[1].contains("close this tab"));

        let (listener, result, _) = round(listener, &["/callback?code=c1&state=other"]);
        assert!(result.unwrap_err().contains("wrong state"));
        let (_, result, answers) = round(
            listener,
            &["/callback?error=access_denied&error_description=no%20way&state=s1"],
        );
        let err = result.unwrap_err();
        assert!(err.contains("access_denied: no way"), "{err}");
        assert!(answers[0].contains("Login failed"));
    }
}
