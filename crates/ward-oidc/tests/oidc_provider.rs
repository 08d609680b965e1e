//! ward-oidc against a real OpenID Connect provider: `oidc-provider` (Node) from
//! tests/oidc/provider.mjs, started on a free port of 127.0.0.1. Tokens are obtained the way
//! real clients get them: a client_credentials JWT access token, and an ID token from a
//! headless authorization-code login through the provider's own login form (cookies and
//! redirects followed by hand).
//!
//! Needs node and npm; `npm ci` runs here when tests/oidc/node_modules is missing
//! (scripts/install-deps.sh does it too). Only a machine without node skips, loudly.

use base64::Engine;
use chrono::{Duration, Utc};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use ward_core::Config;
use ward_oidc::{TokenError, Verifier};

const CLIENT: &str = "gateway";
const SECRET: &str = "gateway-secret";
const REDIRECT_URI: &str = "http://127.0.0.1:9/ward-test-callback";
const ROTATE_TOKEN: &str = "rotate-in-test";

struct Provider {
    child: Child,
    issuer: String,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/oidc")
}

/// Starts the provider, or `None` when node is not installed at all.
fn start_provider() -> Option<Provider> {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: node is not installed, so the real OIDC provider test cannot \
             run. Install Node.js and npm (scripts/install-deps.sh does). !!!!!!!!\n"
        );
        return None;
    }
    let dir = provider_dir();
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .expect("node is installed but npm cannot be run");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    let mut child = Command::new("node")
        .arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", "0")
        .env("REDIRECT_URI", REDIRECT_URI)
        .env("ROTATE_TOKEN", ROTATE_TOKEN)
        // The provider exits when its stdin closes, so it cannot outlive this process.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start node provider.mjs");
    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().unwrap();
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let (tx, rx) = mpsc::channel();
    let out_pipe = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        // The provider prints notices too; the line with "issuer" is the ready signal. Keep
        // reading afterwards so the pipe never fills.
        for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(issuer) = v.get("issuer").and_then(Value::as_str)
            {
                let _ = tx.send(issuer.to_string());
            }
        }
    });
    let issuer = match rx.recv_timeout(std::time::Duration::from_secs(30)) {
        Ok(issuer) => issuer,
        Err(_) => panic!(
            "the OIDC provider did not start within 30s; its stderr:\n{}",
            stderr.lock().unwrap()
        ),
    };
    let provider = Provider {
        child,
        issuer,
        stderr,
    };
    // Discovery answers once the provider is up (it prints the line after listening).
    let discovery = format!("{}/.well-known/openid-configuration", provider.issuer);
    let doc: Value = ureq::get(&discovery)
        .call()
        .unwrap_or_else(|e| panic!("{discovery}: {e}\n{}", provider.stderr.lock().unwrap()))
        .into_json()
        .unwrap();
    assert_eq!(doc["issuer"], provider.issuer);
    Some(provider)
}

fn basic_auth() -> String {
    let raw = format!("{CLIENT}:{SECRET}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

fn post_token(issuer: &str, form: &[(&str, &str)]) -> Value {
    match ureq::post(&format!("{issuer}/token"))
        .set("Authorization", &basic_auth())
        .send_form(form)
    {
        Ok(r) => r.into_json().unwrap(),
        Err(ureq::Error::Status(code, r)) => {
            panic!("POST /token: HTTP {code}: {}", r.into_string().unwrap())
        }
        Err(e) => panic!("POST /token: {e}"),
    }
}

/// A JWT access token for the resource urn:gateway, for the client itself.
fn client_credentials_token(issuer: &str) -> String {
    let answer = post_token(
        issuer,
        &[
            ("grant_type", "client_credentials"),
            ("resource", "urn:gateway"),
        ],
    );
    answer["access_token"]
        .as_str()
        .expect("an access token")
        .to_string()
}

/// A browser stand-in: no automatic redirects, and a cookie jar (cookies are sent to every
/// path, which is enough for one provider on one host).
struct Browser {
    agent: ureq::Agent,
    cookies: BTreeMap<String, String>,
    base: String,
}

impl Browser {
    fn new(base: &str) -> Browser {
        Browser {
            agent: ureq::AgentBuilder::new().redirects(0).build(),
            cookies: BTreeMap::new(),
            base: base.to_string(),
        }
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with("http://") || location.starts_with("https://") {
            location.to_string()
        } else {
            format!("{}{location}", self.base)
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn keep_cookies(&mut self, response: &ureq::Response) {
        for set in response.all("set-cookie") {
            let pair = set.split(';').next().unwrap_or("");
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() {
                    self.cookies.remove(name.trim());
                } else {
                    self.cookies
                        .insert(name.trim().to_string(), value.trim().to_string());
                }
            }
        }
    }

    /// GET or POST (with a form); returns the status, the Location header and the body.
    fn go(&mut self, url: &str, form: Option<&[(&str, &str)]>) -> (u16, Option<String>, String) {
        let request = match form {
            None => self.agent.get(url),
            Some(_) => self.agent.post(url),
        }
        .set("Cookie", &self.cookie_header());
        let result = match form {
            None => request.call(),
            Some(form) => request.send_form(form),
        };
        let response = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(code, r)) => {
                panic!(
                    "{url}: HTTP {code}: {}",
                    r.into_string().unwrap_or_default()
                )
            }
            Err(e) => panic!("{url}: {e}"),
        };
        self.keep_cookies(&response);
        let status = response.status();
        let location = response.header("location").map(|l| self.absolute(l));
        (status, location, response.into_string().unwrap_or_default())
    }
}

/// The authorization-code login of `user` through devInteractions, as
/// shared/recipes/oidc-login.sh does it with curl; returns the token endpoint's answer.
fn login(issuer: &str, user: &str) -> Value {
    let mut browser = Browser::new(issuer);
    let auth = format!(
        "{issuer}/auth?client_id={CLIENT}&response_type=code&scope=openid%20profile%20email%20groups\
         &redirect_uri={}&state=s&nonce=n",
        REDIRECT_URI.replace(':', "%3A").replace('/', "%2F")
    );
    let (_, mut location, _) = browser.go(&auth, None);
    for _ in 0..6 {
        let url = location.clone().expect("the provider redirects");
        if url.starts_with(REDIRECT_URI) {
            break;
        }
        // The interaction page: its form says which prompt it answers (login, or consent).
        let (_, _, page) = browser.go(&url, None);
        let prompt = page
            .split("name=\"prompt\" value=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or_else(|| panic!("no prompt in the interaction page:\n{page}"))
            .to_string();
        let (_, next, _) = browser.go(
            &url,
            Some(&[("prompt", &prompt), ("login", user), ("password", "x")]),
        );
        location = next;
        if let Some(resume) = location.clone()
            && resume.contains("/auth/")
        {
            location = browser.go(&resume, None).1;
        }
    }
    let callback = location.expect("redirected back to the client");
    assert!(callback.starts_with(REDIRECT_URI), "{callback}");
    let code = callback
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("code="))
        .unwrap_or_else(|| panic!("no code in {callback}"))
        .to_string();
    post_token(
        issuer,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ],
    )
}

fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn verifier(yaml: &str) -> Verifier {
    let config = Config::from_yaml(yaml, Path::new(".")).unwrap();
    Verifier::new(&config.identity.oidc, &config.identity.workload)
}

#[test]
fn tokens_from_a_real_oidc_provider_verify_into_identities() {
    let Some(provider) = start_provider() else {
        return;
    };
    let issuer = provider.issuer.clone();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // (a) client_credentials: an RFC 9068 access token for urn:gateway. It names the client
    // (client_id, and sub = client id) but carries no user name and no groups.
    let access = client_credentials_token(&issuer);
    let c = claims_of(&access);
    assert_eq!(
        (c["aud"].as_str(), c["client_id"].as_str()),
        (Some("urn:gateway"), Some(CLIENT))
    );
    assert!(
        c.get("groups").is_none() && c.get("preferred_username").is_none(),
        "{c}"
    );
    let services = verifier(&format!(
        "identity:\n  oidc:\n    - issuer: {issuer}\n      audiences: [urn:gateway]\n      \
         username_claim: client_id\n      name_prefix: \"svc:\"\n      static_groups: [services]\n"
    ));
    let ok = runtime
        .block_on(services.verify(&access, Utc::now()))
        .unwrap_or_else(|e| panic!("client_credentials token refused: {e}"));
    assert_eq!(&*ok.identity.name, "svc:gateway");
    assert_eq!(ok.identity.groups, ["services"]);
    assert_eq!(
        (ok.subject.as_str(), ok.audience.as_str()),
        (CLIENT, "urn:gateway")
    );
    assert!(ok.token_id.is_some(), "oidc-provider sets jti");

    // The same token through a workload issuer: the identity from a template, jti kept.
    let workload = verifier(&format!(
        "identity:\n  workload:\n    - issuer: {issuer}\n      audiences: [urn:gateway]\n      \
         identity: \"oauth:{{client_id}}\"\n      attributes: [jti, scope]\n"
    ));
    let ok = runtime
        .block_on(workload.verify(&access, Utc::now()))
        .unwrap();
    assert_eq!(&*ok.identity.name, "oauth:gateway");
    assert_eq!(ok.identity.source, "workload");
    let jti = ok.token_id.clone().unwrap();
    assert_eq!(
        ok.identity.attributes,
        [("jti".to_string(), jti)],
        "no scope was asked for, so the token has none and the attribute is left out"
    );

    // (b) alice logs in through the provider's login form; her ID token is for the client.
    let answer = login(&issuer, "alice");
    let id_token = answer["id_token"]
        .as_str()
        .expect("an id_token")
        .to_string();
    let people = verifier(&format!(
        "identity:\n  oidc:\n    - issuer: {issuer}\n      audiences: [{CLIENT}]\n      \
         name_prefix: \"oidc:\"\n"
    ));
    let ok = runtime
        .block_on(people.verify(&id_token, Utc::now()))
        .unwrap_or_else(|e| {
            panic!(
                "alice's id_token refused: {e}; claims {}",
                claims_of(&id_token)
            )
        });
    assert_eq!(&*ok.identity.name, "oidc:alice");
    assert_eq!(ok.identity.source, "oidc");
    assert_eq!(ok.identity.groups, ["dba", "dev"]);
    assert_eq!(
        (ok.subject.as_str(), ok.audience.as_str()),
        ("alice", CLIENT)
    );
    assert!(ok.expires > Utc::now());
    // Cached now: the sync path answers without fetching.
    assert!(matches!(
        people.verify_cached(&id_token, Utc::now()),
        Some(Ok(_))
    ));

    // Tokens meant for one audience do not open the other.
    let err = runtime
        .block_on(services.verify(&id_token, Utc::now()))
        .unwrap_err();
    assert_eq!(err.code(), "wrong_audience", "{err}");
    let err = runtime
        .block_on(people.verify(&access, Utc::now()))
        .unwrap_err();
    assert_eq!(err.code(), "wrong_audience", "{err}");

    // The provider rotates its key. A token signed with the new key is accepted after one
    // refetch (once the unknown-kid interval since the last fetch has passed); the old key
    // is no longer published, so its tokens are refused.
    let rotated: Value = ureq::post(&format!("{issuer}/admin/rotate"))
        .set("x-admin", ROTATE_TOKEN)
        .call()
        .unwrap()
        .into_json()
        .unwrap();
    let new_access = client_credentials_token(&issuer);
    let header = new_access.split('.').next().unwrap();
    let header: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(header)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["kid"], rotated["kid"]);
    let later = Utc::now() + Duration::seconds(31);
    let ok = runtime
        .block_on(services.verify(&new_access, later))
        .unwrap();
    assert_eq!(&*ok.identity.name, "svc:gateway");
    let err = runtime
        .block_on(services.verify(&access, later))
        .unwrap_err();
    assert!(matches!(err, TokenError::UnknownKeyId { .. }), "{err}");
    drop(provider);
}
