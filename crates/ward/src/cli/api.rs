//! The CLI's client for ward's admin API: where it is, which token to send, and errors that
//! say what to do.

use super::{ApiArgs, ConfigLocation};
use anyhow::{Context, bail};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use ward_api::model::ErrorBody;
use ward_core::Config;

/// The admin API's address when neither flags, environment nor config say.
const DEFAULT_API: &str = "http://127.0.0.1:8080";
/// The data directory when there is no config file (the config's own default, relative to
/// the current directory, where ./ward.yaml would have been).
const DEFAULT_DATA_DIR: &str = "ward-data";
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// A configured connection to the admin API.
pub struct ApiClient {
    base: String,
    token: String,
    /// Where the token came from, for error messages (never the token itself).
    token_source: String,
    agent: ureq::Agent,
    /// Set when acting as an identity (`<identity>:<ward token>`) rather than as the admin.
    identity: Option<String>,
    /// Set when sending the session token `ward login` stored.
    session: bool,
}

impl ApiClient {
    /// Works out the API address and admin token from flags, environment and config, in that
    /// order. The config file is read only if something is still missing.
    ///
    /// Without an admin token (no flag, no variable, no readable admin.token), the session
    /// token `ward login` stored is sent instead, if it is still valid: the API then acts for
    /// that identity, as far as its roles allow.
    pub fn resolve(config: &ConfigLocation, args: &ApiArgs) -> anyhow::Result<ApiClient> {
        let needs_config = args.api.is_none() || args.admin_token.is_none();
        let loaded = if needs_config {
            config.load_optional()?
        } else {
            None
        };
        let mut base = match &args.api {
            Some(url) => normalize_base(url)?,
            None => match &loaded {
                Some(c) => base_from_listen(c.listen.api),
                None => DEFAULT_API.to_string(),
            },
        };
        let mut session = false;
        let (token, token_source) = match &args.admin_token {
            Some(token) => (
                token.trim().to_string(),
                "--admin-token / WARD_ADMIN_TOKEN".to_string(),
            ),
            None => match read_token_file(loaded.as_ref()) {
                Ok(found) => found,
                Err(no_admin_token) => {
                    let Ok(Some(s)) = super::session_file::load() else {
                        return Err(no_admin_token);
                    };
                    if !s.is_current() {
                        return Err(no_admin_token);
                    }
                    // The gateway the session is from, unless told otherwise.
                    if args.api.is_none() && loaded.is_none() {
                        base = s.api.clone();
                    }
                    session = true;
                    (s.token, session_source())
                }
            },
        };
        if token.is_empty() {
            bail!("the admin token from {token_source} is empty");
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            // The admin API never redirects; following one could send the token elsewhere.
            .redirects(0)
            .build();
        Ok(ApiClient {
            base,
            token,
            token_source,
            agent,
            identity: None,
            session,
        })
    }

    /// Where the admin API is (flags, environment, config, default), without a token.
    pub fn base_url(config: &ConfigLocation, args: &ApiArgs) -> anyhow::Result<String> {
        match &args.api {
            Some(url) => normalize_base(url),
            None => Ok(match config.load_optional()? {
                Some(c) => base_from_listen(c.listen.api),
                None => DEFAULT_API.to_string(),
            }),
        }
    }

    /// A client that sends `session`'s token (`ward login`), to the gateway it came from
    /// unless --api / WARD_API say otherwise.
    pub fn for_session(
        _config: &ConfigLocation,
        args: &ApiArgs,
        session: &super::session_file::Session,
    ) -> anyhow::Result<ApiClient> {
        let base = match &args.api {
            Some(url) => normalize_base(url)?,
            None => normalize_base(&session.api)?,
        };
        Ok(ApiClient {
            base,
            token: session.token.clone(),
            token_source: session_source(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(5))
                .timeout(Duration::from_secs(60))
                .redirects(0)
                .build(),
            identity: None,
            session: true,
        })
    }

    /// Like [`ApiClient::resolve`], but authenticates as `identity` with its own ward token
    /// (`Bearer <identity>:<token>`, which the approval endpoints accept) instead of the
    /// admin token, which is then neither needed nor read.
    pub fn resolve_as_identity(
        config: &ConfigLocation,
        args: &ApiArgs,
        identity: &str,
        token: &str,
        token_source: &str,
    ) -> anyhow::Result<ApiClient> {
        let identity = identity.trim();
        let token = token.trim();
        if identity.is_empty() {
            bail!("--as needs an identity name");
        }
        if token.is_empty() {
            bail!("the ward token from {token_source} is empty");
        }
        let base = match &args.api {
            Some(url) => normalize_base(url)?,
            None => match config.load_optional()? {
                Some(c) => base_from_listen(c.listen.api),
                None => DEFAULT_API.to_string(),
            },
        };
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .redirects(0)
            .build();
        Ok(ApiClient {
            base,
            token: format!("{identity}:{token}"),
            token_source: token_source.to_string(),
            agent,
            identity: Some(identity.to_string()),
            session: false,
        })
    }

    /// `GET base + path` with `query`, decoding the JSON answer. `not_found`, when given,
    /// replaces the API's 404 message (which speaks HTTP) with one for the CLI user.
    pub fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
        not_found: Option<String>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let mut request = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Accept", "application/json");
        for (name, value) in query {
            request = request.query(name, value);
        }
        self.answer(&url, request.call(), not_found)
    }

    /// `METHOD base + path` with an optional JSON body, decoding the JSON answer; errors as
    /// for [`ApiClient::get`]. For the API's actions (kill, lock, …).
    pub fn send<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
        not_found: Option<String>,
    ) -> anyhow::Result<T> {
        let url = format!("{}{path}", self.base);
        let request = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .set("Accept", "application/json");
        let result = match body {
            Some(body) => request.send_json(body),
            None => request.call(),
        };
        self.answer(&url, result, not_found)
    }

    /// Decodes a successful answer, or turns a failure into a sentence that says what to do.
    fn answer<T: DeserializeOwned>(
        &self,
        url: &str,
        result: Result<ureq::Response, ureq::Error>,
        not_found: Option<String>,
    ) -> anyhow::Result<T> {
        match result {
            Ok(response) => serde_json::from_reader(response.into_reader()).with_context(|| {
                format!(
                    "unexpected answer from {url}; is {} ward's admin API? (set --api or WARD_API)",
                    self.base
                )
            }),
            Err(ureq::Error::Status(401, _)) if self.identity.is_some() => bail!(
                "the ward admin API at {} refused identity {:?} with the token from {}: the \
                 identity is unknown, or the token is wrong or expired (it must be one of that \
                 identity's tokens under identity.tokens)",
                self.base,
                self.identity.as_deref().unwrap_or_default(),
                self.token_source,
            ),
            Err(ureq::Error::Status(401, response)) if self.session => bail!(
                "the ward API at {} refused your ward login session ({}): {}; run `ward login` \
                 again",
                self.base,
                self.token_source,
                error_message(response),
            ),
            Err(ureq::Error::Status(401, _)) => bail!(
                "the ward admin API at {} refused the admin token from {}; pass the right token \
                 with --admin-token or WARD_ADMIN_TOKEN, or let the CLI read admin.token from \
                 the running gateway's data_dir (point --config at its ward.yaml)",
                self.base,
                self.token_source,
            ),
            Err(ureq::Error::Status(code, response)) => match (code, not_found) {
                (404, Some(message)) => bail!("{message}"),
                _ => bail!(
                    "{} (HTTP {code} from {})",
                    error_message(response),
                    self.base
                ),
            },
            Err(ureq::Error::Transport(e)) => bail!(
                "cannot reach the ward admin API at {}: {e} — is `ward serve` running? (set --api \
                 or WARD_API)",
                self.base
            ),
        }
    }
}

/// Where a session token came from, for messages.
fn session_source() -> String {
    match super::session_file::path() {
        Ok(p) => format!("the `ward login` session in {}", p.display()),
        Err(_) => "the `ward login` session".to_string(),
    }
}

/// The `error` sentence of an API error response, or a cleaned excerpt of whatever came back.
fn error_message(response: ureq::Response) -> String {
    let text = response.into_string().unwrap_or_default();
    match serde_json::from_str::<ErrorBody>(&text) {
        Ok(body) => super::output::clean(&body.error, false).into_owned(),
        Err(_) => {
            let excerpt: String = text.trim().chars().take(200).collect();
            if excerpt.is_empty() {
                "no details".to_string()
            } else {
                super::output::clean(&excerpt, false).into_owned()
            }
        }
    }
}

/// Accepts `host:port`, `http://host:port` and a trailing slash; refuses https, which this
/// build does not speak (the admin API is meant for loopback or a tunnel).
fn normalize_base(url: &str) -> anyhow::Result<String> {
    let url = url.trim().trim_end_matches('/');
    if url.is_empty() {
        bail!("--api / WARD_API is empty; give a URL such as {DEFAULT_API}");
    }
    if url.starts_with("https://") {
        bail!(
            "--api {url}: this ward CLI speaks plain HTTP only; keep the admin API on loopback \
             (or reach it through an SSH tunnel) and use an http:// URL"
        );
    }
    if url.starts_with("http://") {
        return Ok(url.to_string());
    }
    if url.contains("://") {
        bail!("--api {url}: only http:// URLs are supported, e.g. {DEFAULT_API}");
    }
    Ok(format!("http://{url}"))
}

/// The URL to reach an API listening on `addr`; a wildcard listen address is reached over
/// loopback.
fn base_from_listen(addr: SocketAddr) -> String {
    let mut addr = addr;
    if addr.ip().is_unspecified() {
        let loopback: std::net::IpAddr = if addr.is_ipv4() {
            std::net::Ipv4Addr::LOCALHOST.into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        addr.set_ip(loopback);
    }
    format!("http://{addr}")
}

/// Reads `<data_dir>/admin.token`, explaining what to do when it cannot.
fn read_token_file(config: Option<&Config>) -> anyhow::Result<(String, String)> {
    let path = match config {
        Some(c) => c.data_dir.join(ADMIN_TOKEN_FILE),
        None => PathBuf::from(DEFAULT_DATA_DIR).join(ADMIN_TOKEN_FILE),
    };
    let configured_hash = config.is_some_and(|c| c.api.admin_token_hash.is_some());
    match std::fs::read_to_string(&path) {
        Ok(text) => Ok((text.trim().to_string(), path.display().to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if configured_hash {
                bail!(
                    "no admin token given: the config sets api.admin_token_hash, so ward does not \
                     write {}; pass the token with --admin-token or WARD_ADMIN_TOKEN",
                    path.display()
                )
            }
            bail!(
                "no admin token: {} does not exist; pass it with --admin-token or \
                 WARD_ADMIN_TOKEN, or point --config / WARD_CONFIG at the ward.yaml of the \
                 running gateway (ward serve writes admin.token into its data_dir on first start)",
                path.display()
            )
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => bail!(
            "cannot read the admin token {}: permission denied; it is readable only by the user \
             ward serve runs as: run this command as that user, or pass the token with \
             WARD_ADMIN_TOKEN",
            path.display()
        ),
        Err(e) => Err(e).with_context(|| format!("cannot read the admin token {}", path.display())),
    }
}

/// Percent-encodes one path segment (an id typed by the user may contain anything).
pub fn path_segment(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_urls() {
        assert_eq!(
            normalize_base("127.0.0.1:9000/").unwrap(),
            "http://127.0.0.1:9000"
        );
        assert_eq!(normalize_base("http://h:1").unwrap(), "http://h:1");
        assert!(
            normalize_base("https://h")
                .unwrap_err()
                .to_string()
                .contains("plain HTTP")
        );
        assert!(normalize_base("ftp://h").is_err());
        assert_eq!(
            base_from_listen("0.0.0.0:8080".parse().unwrap()),
            "http://127.0.0.1:8080"
        );
        assert_eq!(
            base_from_listen("[::]:8080".parse().unwrap()),
            "http://[::1]:8080"
        );
        assert_eq!(
            base_from_listen("10.1.2.3:80".parse().unwrap()),
            "http://10.1.2.3:80"
        );
    }

    const TOKEN: &str = "ward_0123456789abcdef0123456789abcdef0123456789abcdef";

    /// Runs the real admin API over an empty store on a background runtime; returns its URL.
    fn spawn_api(dir: &std::path::Path) -> String {
        let state = ward_api::ApiState::new(
            ward_store::StoreReader::open(&dir.join("ward.db")).unwrap(),
            ward_core::SessionRegistry::new(),
            ward_api::admin_token_digest(TOKEN),
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            runtime.block_on(ward_api::serve(listener, state, std::future::pending()))
        });
        url
    }

    fn client(api: &str, token: &str) -> ApiClient {
        let args = ApiArgs {
            api: Some(api.to_string()),
            admin_token: Some(token.to_string()),
        };
        ApiClient::resolve(&ConfigLocation::new(None), &args).unwrap()
    }

    #[test]
    fn talks_to_the_api_and_explains_failures() {
        let dir = tempfile::tempdir().unwrap();
        let url = spawn_api(dir.path());

        let list: ward_api::model::SessionList = client(&url, TOKEN)
            .get("/api/v1/sessions", &[("limit", "5".into())], None)
            .unwrap();
        assert!(list.sessions.is_empty());

        let err = client(&url, "ward_wrong")
            .get::<serde_json::Value>("/api/v1/sessions", &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("refused the admin token") && err.contains("WARD_ADMIN_TOKEN"),
            "{err}"
        );

        let err = client(&url, TOKEN)
            .get::<serde_json::Value>("/api/v1/sessions", &[("since", "soon".into())], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("since") && err.contains("HTTP 400"), "{err}");

        let err = client(&url, TOKEN)
            .get::<serde_json::Value>("/api/v1/sessions/deadbeef", &[], Some("custom".into()))
            .unwrap_err()
            .to_string();
        assert_eq!(err, "custom");

        // A port nobody listens on (bound, then released).
        let free = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let err = client(&free.to_string(), TOKEN)
            .get::<serde_json::Value>("/api/v1/sessions", &[], None)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(&format!("cannot reach the ward admin API at http://{free}"))
                && err.contains("is `ward serve` running? (set --api or WARD_API)"),
            "{err}"
        );
    }

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(path_segment("0190a1b2-7c3d"), "0190a1b2-7c3d");
        assert_eq!(path_segment("a/b?c d"), "a%2Fb%3Fc%20d");
    }
}
