//! Identity providers for the integration tests: the real OpenID Connect provider and an
//! in-test issuer that mints tokens of any shape.
//!
//! * [`OidcProvider`]: `oidc-provider` (Node) from `crates/ward-oidc/tests/oidc/provider.mjs`,
//!   started once per test process on a free port of 127.0.0.1 (it exits when this process
//!   does: its stdin closes, and the harness watchdog kills it too). Tokens are obtained the
//!   way real clients get them: a client_credentials JWT access token for `urn:gateway`, and
//!   an ID token from a headless authorization-code login through the provider's own login
//!   form (alice has groups `dba` and `dev`). Needs node and npm (`npm ci` runs when
//!   node_modules is missing; scripts/install-deps.sh does it too).
//! * [`MintIssuer`]: a tiny HTTP server publishing a JWKS with the test-only RSA key of
//!   `crates/ward-oidc/tests/fixtures`, and helpers that sign tokens with it, with another
//!   key, with `alg: none`, with HS256 keyed by the public key, with any claims: for the
//!   refusal cases and for tokens that expire a few seconds from now.

use super::register_child;
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// The provider's client (client_secret_basic).
pub const CLIENT: &str = "gateway";
const SECRET: &str = "gateway-secret";
/// Where the provider redirects after a login; nothing listens there, the test reads the
/// code from the Location header.
const REDIRECT_URI: &str = "http://127.0.0.1:9/ward-test-callback";

fn ward_oidc_tests() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ward-oidc/tests")
}

/// The real OpenID Connect provider (one per test process).
pub struct OidcProvider {
    /// Kept so the provider's stdin stays open while this process runs.
    _child: Mutex<Child>,
    _registered: super::RegisteredChild,
    pub issuer: String,
    stderr: Arc<Mutex<String>>,
}

/// The provider, started on first use; `None` (with a loud notice) when node is not
/// installed at all, so only the tests that need it skip.
pub fn provider() -> Option<&'static OidcProvider> {
    static PROVIDER: OnceLock<Option<OidcProvider>> = OnceLock::new();
    PROVIDER.get_or_init(start_provider).as_ref()
}

fn start_provider() -> Option<OidcProvider> {
    if Command::new("node").arg("--version").output().is_err() {
        eprintln!(
            "\n!!!!!!!! SKIPPED: node is not installed, so the tests against the real OIDC \
             provider cannot run. Install Node.js and npm (scripts/install-deps.sh does). \
             !!!!!!!!\n"
        );
        return None;
    }
    let dir = ward_oidc_tests().join("oidc");
    if !dir.join("node_modules/oidc-provider/package.json").exists() {
        let status = Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .status()
            .expect("node is installed but npm cannot be run");
        assert!(status.success(), "npm ci in {} failed", dir.display());
    }
    let mut cmd = Command::new("node");
    cmd.arg("provider.mjs")
        .current_dir(&dir)
        .env("PORT", "0")
        .env("REDIRECT_URI", REDIRECT_URI)
        // The provider exits when its stdin closes, so it cannot outlive this process.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().expect("start node provider.mjs");
    let registered = register_child(child.id());
    let stderr = Arc::new(Mutex::new(String::new()));
    let err_pipe = child.stderr.take().expect("piped stderr");
    let sink = Arc::clone(&stderr);
    std::thread::spawn(move || {
        for line in BufReader::new(err_pipe).lines().map_while(Result::ok) {
            let mut s = sink.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    });
    let (tx, rx) = mpsc::channel();
    let out_pipe = child.stdout.take().expect("piped stdout");
    std::thread::spawn(move || {
        // The line with "issuer" is the ready signal; keep reading so the pipe never fills.
        for line in BufReader::new(out_pipe).lines().map_while(Result::ok) {
            if let Ok(v) = serde_json::from_str::<Value>(&line)
                && let Some(issuer) = v.get("issuer").and_then(Value::as_str)
            {
                let _ = tx.send(issuer.to_string());
            }
        }
    });
    let issuer = match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(issuer) => issuer,
        Err(_) => panic!(
            "the OIDC provider did not start within 30s; its stderr:\n{}",
            stderr.lock().unwrap()
        ),
    };
    let discovery = format!("{issuer}/.well-known/openid-configuration");
    let doc: Value = ureq::get(&discovery)
        .call()
        .unwrap_or_else(|e| panic!("{discovery}: {e}\n{}", stderr.lock().unwrap()))
        .into_json()
        .expect("discovery JSON");
    assert_eq!(doc["issuer"], issuer.as_str());
    Some(OidcProvider {
        _child: Mutex::new(child),
        _registered: registered,
        issuer,
        stderr,
    })
}

impl OidcProvider {
    fn post_token(&self, form: &[(&str, &str)]) -> Value {
        let basic = format!("Basic {}", STANDARD.encode(format!("{CLIENT}:{SECRET}")));
        match ureq::post(&format!("{}/token", self.issuer))
            .set("Authorization", &basic)
            .send_form(form)
        {
            Ok(r) => r.into_json().expect("token endpoint JSON"),
            Err(ureq::Error::Status(code, r)) => panic!(
                "POST /token: HTTP {code}: {}\nprovider stderr:\n{}",
                r.into_string().unwrap_or_default(),
                self.stderr.lock().unwrap()
            ),
            Err(e) => panic!("POST /token: {e}"),
        }
    }

    /// A JWT access token for the resource `urn:gateway`, for the client itself (no user,
    /// no groups; `client_id` and `sub` are `gateway`).
    pub fn client_credentials_token(&self) -> String {
        let answer = self.post_token(&[
            ("grant_type", "client_credentials"),
            ("resource", "urn:gateway"),
        ]);
        answer["access_token"]
            .as_str()
            .expect("an access token")
            .to_string()
    }

    /// `user`'s ID token (audience: the client, [`CLIENT`]) from an authorization-code login
    /// through the provider's login form.
    pub fn id_token(&self, user: &str) -> String {
        let answer = self.login(user);
        answer["id_token"]
            .as_str()
            .expect("an id_token")
            .to_string()
    }

    /// The authorization-code login of `user` through devInteractions (cookies and
    /// redirects followed by hand); returns the token endpoint's answer.
    fn login(&self, user: &str) -> Value {
        let issuer = &self.issuer;
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
            // The interaction page: its form says which prompt it answers (login, consent).
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
        self.post_token(&[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT_URI),
        ])
    }
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

/// The claims of a token (not verified).
pub fn claims_of(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT has a payload");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).expect("base64url payload"))
        .expect("JSON claims")
}

/// The key id the in-test issuer publishes.
pub const MINT_KID: &str = "mint-main";
/// The audience the in-test issuer's tokens are for by default.
pub const MINT_AUDIENCE: &str = "ward-test";

/// An in-test token issuer: its JWKS (the fixture RSA key, kid [`MINT_KID`]) is served at
/// `{issuer}/jwks` by a thread that lives as long as the test process.
pub struct MintIssuer {
    pub issuer: String,
    pub jwks_url: String,
}

fn fixture(name: &str) -> Vec<u8> {
    let path = ward_oidc_tests().join("fixtures").join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

impl MintIssuer {
    /// Starts the JWKS server on a free port of 127.0.0.1.
    pub fn start() -> MintIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the JWKS server");
        let addr = listener.local_addr().expect("JWKS server address");
        let issuer = format!("http://{addr}/mint");
        let mut jwk: Value =
            serde_json::from_slice(&fixture("rsa.jwk.json")).expect("rsa.jwk.json");
        jwk["kid"] = json!(MINT_KID);
        jwk["alg"] = json!("RS256");
        jwk["use"] = json!("sig");
        let jwks = json!({ "keys": [jwk] }).to_string();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let jwks = jwks.clone();
                std::thread::spawn(move || {
                    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        match stream.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let line = String::from_utf8_lossy(&head);
                    let path = line.split_whitespace().nth(1).unwrap_or("");
                    let (status, body) = if path == "/mint/jwks" {
                        ("200 OK", jwks.as_str())
                    } else {
                        ("404 Not Found", "{}")
                    };
                    let _ = write!(
                        stream,
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                });
            }
        });
        MintIssuer {
            jwks_url: format!("{issuer}/jwks"),
            issuer,
        }
    }

    /// `identity.oidc` lines for this issuer: audience [`MINT_AUDIENCE`], identities
    /// `mint:<preferred_username>`, groups from `groups`. `extra` is added to the entry
    /// (lines indented by four spaces, e.g. `    clock_skew: 1s`).
    pub fn oidc_yaml(&self, extra: &str) -> String {
        format!(
            "oidc:\n  - issuer: {}\n    jwks_url: {}\n    audiences: [{MINT_AUDIENCE}]\n    name_prefix: \"mint:\"\n{extra}",
            self.issuer, self.jwks_url
        )
    }

    /// Claims for `user` valid for an hour from now, for [`MINT_AUDIENCE`].
    pub fn claims(&self, user: &str) -> Value {
        let now = chrono::Utc::now().timestamp();
        json!({
            "iss": self.issuer,
            "aud": MINT_AUDIENCE,
            "sub": format!("sub-{user}"),
            "preferred_username": user,
            "iat": now,
            "exp": now + 3600,
        })
    }

    /// `claims` signed by the issuer's key (RS256, kid [`MINT_KID`]).
    pub fn sign(&self, claims: &Value) -> String {
        sign_rs256(claims, "rsa.key.pem", Some(MINT_KID))
    }

    /// A token for `user` valid for an hour, signed by the issuer.
    pub fn token(&self, user: &str) -> String {
        self.sign(&self.claims(user))
    }

    /// `claims` signed by another RSA key, but naming the issuer's key id.
    pub fn sign_with_other_key(&self, claims: &Value) -> String {
        sign_rs256(claims, "rsa-other.key.pem", Some(MINT_KID))
    }

    /// `claims` signed by the issuer's key under a key id it does not publish.
    pub fn sign_with_unknown_kid(&self, claims: &Value) -> String {
        sign_rs256(claims, "rsa.key.pem", Some("no-such-key"))
    }
}

fn sign_rs256(claims: &Value, key_file: &str, kid: Option<&str>) -> String {
    let header = Header {
        kid: kid.map(str::to_string),
        ..Header::new(Algorithm::RS256)
    };
    let key = EncodingKey::from_rsa_pem(&fixture(key_file)).expect("fixture RSA key");
    jsonwebtoken::encode(&header, claims, &key).expect("sign the test token")
}

/// An unsigned token (`alg: none`, empty signature).
pub fn unsigned_token(claims: &Value) -> String {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{payload}.")
}

/// A token "signed" with HS256 keyed by the issuer's RSA public key in PEM, the classic key
/// confusion attack against verifiers that let the token pick the algorithm.
pub fn hs256_with_public_key(claims: &Value) -> String {
    let header = Header {
        kid: Some(MINT_KID.to_string()),
        ..Header::new(Algorithm::HS256)
    };
    let key = EncodingKey::from_secret(&fixture("rsa.pub.pem"));
    jsonwebtoken::encode(&header, claims, &key).expect("sign the HS256 token")
}
