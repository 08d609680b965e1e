//! `ward.yaml`: the one configuration file.
//!
//! The file is parsed strictly (unknown keys are errors, so a typo cannot silently disable a
//! setting), relative paths are taken relative to the file's directory, and every secret
//! reference is resolved at load time so a missing credential stops `ward serve` at start
//! instead of failing the first client. See docs/configuration.md for the reference.

use crate::identity::{TokenBook, TokenEntry, parse_token_hash};
use crate::secret::{Secret, SecretRef};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// A problem with the configuration, phrased for the person editing the file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

/// The whole configuration, as loaded and validated.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where ward keeps its store, generated TLS certificate and admin token.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub listen: Listen,
    #[serde(default)]
    pub tls: ClientTls,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub audit: AuditConfig,
    #[serde(default)]
    pub identity: IdentityConfig,
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Policy-wide settings (defaults, unparseable and procedural input).
    #[serde(default)]
    pub policy: crate::policy::PolicyConfig,
    /// Guardrail rules, checked for every statement (see docs/policy.md).
    #[serde(default)]
    pub rules: Vec<crate::policy::RuleConfig>,
    /// Held statements (`review` rules): where new requests are announced.
    #[serde(default)]
    pub approvals: crate::approvals::ApprovalsConfig,
    /// Masking of sensitive values in results (see docs/masking.md).
    #[serde(default)]
    pub masking: crate::masking::MaskingConfig,
    /// SIEM forwarding: sinks the session log is copied to (see docs/forwarding.md).
    #[serde(default)]
    pub forward: Vec<crate::forward::ForwardSink>,
    /// Filled in at load: the directory the file was read from.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("ward-data")
}

/// Listening addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// PostgreSQL clients connect here.
    #[serde(default = "default_pg_listen")]
    pub postgres: SocketAddr,
    /// SSH clients connect here; no SSH listener when absent (see docs/ssh.md).
    #[serde(default)]
    pub ssh: Option<SocketAddr>,
    /// The admin HTTP API. Keep it on loopback unless it sits behind something that
    /// authenticates; it also requires the admin token.
    #[serde(default = "default_api_listen")]
    pub api: SocketAddr,
}

fn default_pg_listen() -> SocketAddr {
    "0.0.0.0:15432".parse().expect("valid literal")
}

fn default_api_listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid literal")
}

impl Default for Listen {
    fn default() -> Self {
        Listen {
            postgres: default_pg_listen(),
            ssh: None,
            api: default_api_listen(),
        }
    }
}

/// TLS towards clients.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientTls {
    /// PEM certificate chain; when absent ward generates a self-signed certificate in
    /// `data_dir` on first start and reuses it afterwards.
    pub cert: Option<PathBuf>,
    /// PEM private key for `cert`.
    pub key: Option<PathBuf>,
    /// Accept clients that do not ask for TLS. Off by default: tokens would cross the
    /// network in clear.
    #[serde(default)]
    pub allow_plaintext: bool,
}

/// Where audit events and sessions are stored.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// SQLite database file; default `<data_dir>/ward.db`.
    pub sqlite: Option<PathBuf>,
}

/// The admin HTTP API.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// `sha256:<hex>` of the admin token. When absent, ward generates a token on first start
    /// and writes it to `<data_dir>/admin.token` (mode 0600), where the CLI finds it.
    pub admin_token_hash: Option<String>,
    /// Which IdP groups grant which role on the API to callers that prove an identity
    /// (see docs/identity.md#api-roles). The admin token is always role admin.
    #[serde(default)]
    pub roles: ApiRoles,
}

/// `api.roles`: the groups (as in tokens and IdP claims) that grant each API role. Role
/// admin implies approver and auditor.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiRoles {
    /// Everything, containment (kill, lock, pause) included.
    #[serde(default)]
    pub admin: Vec<String>,
    /// May list every approval request (deciding one still needs the rule to name them).
    #[serde(default)]
    pub approver: Vec<String>,
    /// Read-only: sessions, refusals, controls, identities, metrics.
    #[serde(default)]
    pub auditor: Vec<String>,
}

impl ApiRoles {
    fn validate(&self) -> Result<(), String> {
        for (role, groups) in [
            ("admin", &self.admin),
            ("approver", &self.approver),
            ("auditor", &self.auditor),
        ] {
            for g in groups {
                if g.trim().is_empty() || g.trim() != g {
                    return Err(format!(
                        "api.roles.{role}: {g:?} is not a group name (empty, or spaces around it)"
                    ));
                }
                if let Some(bare) = g.strip_prefix("group:") {
                    return Err(format!(
                        "api.roles.{role}: write the group name alone ({bare:?}, not {g:?}); \
                         every entry here is a group"
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Limits that protect the gateway from hostile or broken clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Largest protocol message accepted from a client or target, in bytes (default 1 GiB,
    /// PostgreSQL's own limit). Larger ones end the session with a protocol error.
    #[serde(default = "default_max_message")]
    pub max_message_bytes: u32,
    /// Bytes of bound parameters kept per statement in the audit (default 1024).
    #[serde(default = "default_param_capture")]
    pub param_capture_bytes: usize,
    /// Bytes of SQL text kept per statement in the audit (default 64 KiB).
    #[serde(default = "default_text_capture")]
    pub statement_capture_bytes: usize,
    /// How long a client may take from connecting to finishing authentication.
    #[serde(default = "default_startup_timeout", with = "humantime_serde_compat")]
    pub startup_timeout: Duration,
    /// How long ward waits for a target to accept a connection and log in.
    #[serde(default = "default_connect_timeout", with = "humantime_serde_compat")]
    pub connect_timeout: Duration,
}

fn default_max_message() -> u32 {
    1 << 30
}
fn default_param_capture() -> usize {
    1024
}
fn default_text_capture() -> usize {
    64 * 1024
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(15)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(10)
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_message_bytes: default_max_message(),
            param_capture_bytes: default_param_capture(),
            statement_capture_bytes: default_text_capture(),
            startup_timeout: default_startup_timeout(),
            connect_timeout: default_connect_timeout(),
        }
    }
}

/// The audit queue between sessions and the store writer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Events that may wait for the writer before sessions are slowed down.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Most events written in one store transaction.
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// `strict` (default): a statement reaches the target only once its event is on disk.
    /// `buffered`: events are queued and written in batches shortly after (faster; a crash
    /// can lose the last few milliseconds of the log).
    #[serde(default)]
    pub mode: AuditMode,
    /// How long a statement waits for its event to become durable in strict mode before
    /// ward refuses it (the store is stuck or full).
    #[serde(default = "default_durable_timeout", with = "humantime_serde_compat")]
    pub durable_timeout: Duration,
    /// Delete sessions that ended longer ago than this (`90d`), with their statements,
    /// session log and signatures; checked at start and hourly. Absent or null (default):
    /// keep everything. Open sessions and the gateway chain are never deleted.
    #[serde(default, with = "humantime_serde_compat::option")]
    pub retention: Option<Duration>,
    /// Strict mode: fsync every commit (default). `false` waits only for the commit to reach
    /// the operating system: the log then survives a crash of ward (SIGKILL, OOM) but not
    /// of the machine, for several times the throughput on slow disks.
    #[serde(default = "default_true")]
    pub fsync: bool,
    /// Strict mode: let a plain read (SELECT/SHOW calling only read-only built-ins) go to
    /// the target while its event is being committed, and hold its results until the commit
    /// (default `true`). Statements that may change anything always wait before being sent.
    /// `false` makes reads wait too.
    #[serde(default = "default_true")]
    pub overlap_reads: bool,
    /// Strict mode with fsync: make events durable in a small preallocated journal
    /// next to the store (`ward.journal` beside `ward.db`) and move them into the store shortly after (default
    /// `true`; several times cheaper per commit than syncing the store). `false` fsyncs the
    /// store on every commit instead.
    #[serde(default = "default_true")]
    pub journal: bool,
    /// Size of the journal in bytes (default 8 MiB, at least 64 KiB). It wraps once the
    /// store holds its events; a store that cannot take them for that long makes strict
    /// statements wait and then be refused.
    #[serde(default = "default_journal_size")]
    pub journal_size: u64,
    /// The first rows of each result kept in its statement event (off by default; rules
    /// may override it with `capture_rows` / `capture_bytes`).
    #[serde(default)]
    pub capture: CaptureConfig,
    /// SSH shell and exec channels: record their bytes (output, stderr, input, terminal
    /// resizes) with timing, for `ward replay` and asciicast export (default `true`).
    #[serde(default = "default_true")]
    pub terminal: bool,
    /// Most bytes of each stream (output, stderr, input) recorded per channel (default 4 MiB,
    /// `0`: no limit). Enough for the screens of an interactive session and the first pages
    /// of a command's output; a bulk transfer through `ssh host cat` would otherwise put all
    /// its bytes in the log, and every session's events wait behind them in the one writer.
    #[serde(default = "default_terminal_limit")]
    pub terminal_limit: u64,
}

fn default_terminal_limit() -> u64 {
    4 << 20
}

/// Result capture (`audit.capture`): how much of each result a statement event keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureConfig {
    /// Rows kept per statement; 0 (default) = no capture unless a rule asks for it.
    #[serde(default)]
    pub rows: usize,
    /// Most bytes of values kept per statement (default 4096).
    #[serde(default = "default_capture_bytes")]
    pub bytes: usize,
}

fn default_capture_bytes() -> usize {
    4096
}

impl Default for CaptureConfig {
    fn default() -> Self {
        CaptureConfig {
            rows: 0,
            bytes: default_capture_bytes(),
        }
    }
}

/// Whether statements wait for their audit event to be durable (see [`AuditConfig::mode`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuditMode {
    #[default]
    Strict,
    Buffered,
}

fn default_true() -> bool {
    true
}

fn default_journal_size() -> u64 {
    8 << 20
}

fn default_durable_timeout() -> Duration {
    Duration::from_secs(5)
}

fn default_queue() -> usize {
    16 * 1024
}
fn default_batch() -> usize {
    2048
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            queue: default_queue(),
            batch: default_batch(),
            mode: AuditMode::default(),
            durable_timeout: default_durable_timeout(),
            retention: None,
            fsync: true,
            overlap_reads: true,
            journal: true,
            journal_size: default_journal_size(),
            capture: CaptureConfig::default(),
            terminal: true,
            terminal_limit: default_terminal_limit(),
        }
    }
}

/// Identity sources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
    /// OpenID Connect issuers whose tokens (ID tokens or JWT access tokens) people present
    /// instead of a service token; checked by the `ward-oidc` crate.
    #[serde(default)]
    pub oidc: Vec<OidcIssuerConfig>,
    /// Issuers of workload identity tokens (CI jobs such as GitHub Actions or GitLab CI,
    /// Kubernetes service accounts): the identity is built from claims by a template.
    #[serde(default)]
    pub workload: Vec<WorkloadIssuerConfig>,
    /// What happens when the credential behind a session expires while the session runs (an
    /// IdP token's `exp`, a service token's `expires`): `end` (default) ends the session,
    /// `refuse` keeps it connected but refuses each further statement.
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// `ward login`: which IdP and client the CLI logs people in with; off when absent.
    #[serde(default)]
    pub login: Option<LoginConfig>,
    /// `ward token mint`: who may mint tokens for bots; off when absent.
    #[serde(default)]
    pub mint: Option<MintConfig>,
    /// SSH public keys that prove identities (see `ssh_config` and docs/ssh.md).
    #[serde(default)]
    pub ssh_keys: Vec<crate::ssh_config::SshKeyConfig>,
    /// SSH user CAs whose certificates prove identities (see `ssh_config` and docs/ssh.md).
    #[serde(default)]
    pub ssh_cas: Vec<crate::ssh_config::SshCaConfig>,
}

/// `identity.login`: `ward login`, a person's login at the IdP through ward's CLI, which
/// trades the IdP's ID token for a ward session token (see docs/identity.md#ward-login).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginConfig {
    /// The IdP people log in at; one of `identity.oidc[].issuer`, byte for byte.
    pub issuer: String,
    /// The public (native) client registered at the IdP for ward's CLI; also an accepted
    /// audience of that issuer, since ID tokens are minted for it.
    pub client_id: String,
    /// For IdPs that insist on a secret even for native clients. Every CLI that asks is
    /// given it (`GET /api/v1/auth/config`), so it must not be one that matters.
    pub client_secret: Option<SecretRef>,
    /// What the CLI asks the IdP for; must include `openid`.
    #[serde(default = "default_login_scopes")]
    pub scopes: Vec<String>,
    /// How long a ward session token from `ward login` lives.
    #[serde(default = "default_login_ttl", with = "humantime_serde_compat")]
    pub ttl: Duration,
}

/// `identity.mint`: who may mint short-lived tokens for bots (`ward token mint`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MintConfig {
    /// IdP groups whose members may mint; empty (the default) turns minting off.
    #[serde(default)]
    pub groups: Vec<String>,
    /// The longest lifetime a minted token may be given.
    #[serde(default = "default_mint_max_ttl", with = "humantime_serde_compat")]
    pub max_ttl: Duration,
}

impl Default for MintConfig {
    fn default() -> Self {
        MintConfig {
            groups: Vec::new(),
            max_ttl: default_mint_max_ttl(),
        }
    }
}

fn default_login_scopes() -> Vec<String> {
    ["openid", "profile", "email", "groups"]
        .map(String::from)
        .to_vec()
}
fn default_login_ttl() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn default_mint_max_ttl() -> Duration {
    Duration::from_secs(3600)
}
/// The longest `identity.login.ttl` accepted: ward session tokens are meant to be short.
const MAX_LOGIN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest `identity.mint.max_ttl` accepted.
const MAX_MINT_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// Checks `identity.login` and `identity.mint` (after the issuers).
fn validate_login(identity: &IdentityConfig) -> Result<(), String> {
    if let Some(login) = &identity.login {
        let Some(oidc) = identity.oidc.iter().find(|o| o.issuer == login.issuer) else {
            let known: Vec<&str> = identity.oidc.iter().map(|o| o.issuer.as_str()).collect();
            return Err(format!(
                "identity.login.issuer: {:?} is not one of identity.oidc[].issuer ({}); ward \
                 login verifies the ID token like any IdP token, so the issuer must be configured \
                 there, byte for byte",
                login.issuer,
                if known.is_empty() {
                    "none configured".to_string()
                } else {
                    known.join(", ")
                }
            ));
        };
        if login.client_id.trim().is_empty() {
            return Err(
                "identity.login.client_id: must name the public client registered at the IdP \
                 for ward's CLI, e.g. ward-cli"
                    .into(),
            );
        }
        if !oidc.audiences.contains(&login.client_id) {
            return Err(format!(
                "identity.login.client_id: {:?} is not among the audiences of identity.oidc \
                 entry {:?}; the IdP mints ID tokens for the client, so they would be refused; \
                 add it to its audiences",
                login.client_id, oidc.issuer
            ));
        }
        if !login.scopes.iter().any(|s| s == "openid") {
            return Err(
                "identity.login.scopes: must include openid (without it the IdP gives no ID \
                 token)"
                    .into(),
            );
        }
        if let Some(s) = login
            .scopes
            .iter()
            .find(|s| s.is_empty() || s.contains(char::is_whitespace))
        {
            return Err(format!(
                "identity.login.scopes: {s:?} is not a scope (one word each)"
            ));
        }
        if login.ttl < Duration::from_secs(60) || login.ttl > MAX_LOGIN_TTL {
            return Err(format!(
                "identity.login.ttl: {} is outside 1m..7d; a ward session token is meant to \
                 last a working day or so (default 8h)",
                humantime::format_duration(login.ttl)
            ));
        }
    }
    if let Some(mint) = &identity.mint {
        if mint.groups.iter().any(|g| g.trim().is_empty()) {
            return Err("identity.mint.groups: a group must not be empty".into());
        }
        if mint.max_ttl < Duration::from_secs(60) || mint.max_ttl > MAX_MINT_TTL {
            return Err(format!(
                "identity.mint.max_ttl: {} is outside 1m..30d; minted tokens are for bots that \
                 need a credential for a while (default 1h)",
                humantime::format_duration(mint.max_ttl)
            ));
        }
        if !mint.groups.is_empty() && identity.oidc.is_empty() {
            return Err(
                "identity.mint.groups: minting is for people who logged in at the IdP, but no \
                 identity.oidc issuer is configured"
                    .into(),
            );
        }
    }
    Ok(())
}

/// `identity.on_expiry`: what a session does once its credential has expired.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    /// End the session at the expiry (the client is told why).
    #[default]
    End,
    /// Keep the connection; refuse every further statement (SQLSTATE 28000) without sending
    /// it, so the client can finish up and reconnect with a fresh token.
    Refuse,
}

/// JWT signature algorithms an issuer may be configured to use. HMAC (`HS*`) and `none` are
/// absent on purpose: ward only verifies with public keys it fetched from the issuer.
pub const JWT_ALGORITHMS: &[&str] = &[
    "RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA",
];

/// An OpenID Connect issuer (`identity.oidc[]`): people log in at the IdP and present the
/// token; the identity is `name_prefix` + the `username_claim`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcIssuerConfig {
    /// The issuer URL, compared byte for byte with the token's `iss` (a trailing slash
    /// matters).
    pub issuer: String,
    /// Where the discovery document is; default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// The JWKS URL; when set, discovery is skipped.
    pub jwks_url: Option<String>,
    /// Accepted audiences: the token's `aud` (string or array) must contain one of them.
    /// Required, because a token minted for another application must not open ward.
    pub audiences: Vec<String>,
    /// The claim that names the user (a dotted path may reach into nested claims).
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// The claim holding the user's groups: an array of strings or a string, possibly
    /// nested (`realm_access.roles`). A token without it simply has no groups from the IdP.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// Signature algorithms accepted from this issuer (default RS256, ES256, EdDSA).
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerance for clocks that disagree when checking `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_skew", with = "humantime_serde_compat")]
    pub clock_skew: Duration,
    /// How often the issuer's keys are refetched (in the background, on use).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde_compat")]
    pub jwks_refresh: Duration,
    /// How long cached keys keep serving while the IdP cannot be reached; after that its
    /// tokens are refused until it answers again.
    #[serde(default = "default_jwks_max_stale", with = "humantime_serde_compat")]
    pub jwks_max_stale: Duration,
    /// Least time between two fetches caused by tokens with a key id ward does not know (so
    /// junk tokens cannot turn ward into a load generator against the IdP).
    #[serde(
        default = "default_unknown_kid_refresh_interval",
        with = "humantime_serde_compat"
    )]
    pub unknown_kid_refresh_interval: Duration,
    /// Put before the user name to form the identity name (e.g. `oidc:`), so that IdP users
    /// cannot take the name of a service token identity.
    pub name_prefix: Option<String>,
    /// Put before every group from the token (e.g. `idp:`).
    pub groups_prefix: Option<String>,
    /// Groups every identity from this issuer gets (not prefixed).
    #[serde(default)]
    pub static_groups: Vec<String>,
}

/// A workload identity issuer (`identity.workload[]`): tokens minted for machines (CI jobs,
/// service accounts), whose identity is built from claims by the `identity` template.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadIssuerConfig {
    /// The issuer URL, compared byte for byte with the token's `iss`.
    pub issuer: String,
    /// Where the discovery document is; default `{issuer}/.well-known/openid-configuration`.
    pub discovery_url: Option<String>,
    /// The JWKS URL; when set, discovery is skipped.
    pub jwks_url: Option<String>,
    /// Accepted audiences: the token's `aud` must contain one of them.
    pub audiences: Vec<String>,
    /// The identity name, e.g. `ci:github:{repository}:{workflow}`: each `{claim}` (dotted
    /// paths allowed) is filled from the token, with characters outside
    /// `[A-Za-z0-9._/@:+=-]` replaced by `_`. A missing claim refuses the token.
    pub identity: String,
    /// Claims kept with the identity for the audit (e.g. `ref`, `run_id`, `sha`, `actor`).
    #[serde(default)]
    pub attributes: Vec<String>,
    /// Groups every identity from this issuer gets.
    #[serde(default)]
    pub groups: Vec<String>,
    /// A claim with further groups (array of strings or a string), if any.
    pub groups_claim: Option<String>,
    /// Signature algorithms accepted from this issuer (default RS256, ES256, EdDSA).
    #[serde(default = "default_jwt_algorithms")]
    pub algorithms: Vec<String>,
    /// Tolerance for clocks that disagree when checking `exp`, `nbf` and `iat`.
    #[serde(default = "default_clock_skew", with = "humantime_serde_compat")]
    pub clock_skew: Duration,
    /// How often the issuer's keys are refetched (in the background, on use).
    #[serde(default = "default_jwks_refresh", with = "humantime_serde_compat")]
    pub jwks_refresh: Duration,
    /// How long cached keys keep serving while the IdP cannot be reached.
    #[serde(default = "default_jwks_max_stale", with = "humantime_serde_compat")]
    pub jwks_max_stale: Duration,
    /// Least time between two fetches caused by unknown key ids.
    #[serde(
        default = "default_unknown_kid_refresh_interval",
        with = "humantime_serde_compat"
    )]
    pub unknown_kid_refresh_interval: Duration,
}

/// What OIDC and workload issuers share: where the keys are and how tokens are checked.
/// Both config shapes lower to it, so the verifier has one code path for both.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIssuerCommon {
    pub issuer: String,
    /// The discovery document's URL (the configured one or the default), unless
    /// `jwks_url` is set.
    pub discovery_url: Option<String>,
    pub jwks_url: Option<String>,
    pub audiences: Vec<String>,
    pub algorithms: Vec<String>,
    pub clock_skew: Duration,
    pub jwks_refresh: Duration,
    pub jwks_max_stale: Duration,
    pub unknown_kid_refresh_interval: Duration,
}

impl OidcIssuerConfig {
    /// The settings shared with workload issuers.
    pub fn common(&self) -> JwtIssuerCommon {
        JwtIssuerCommon::new(
            &self.issuer,
            self.discovery_url.as_deref(),
            self.jwks_url.as_deref(),
            &self.audiences,
            &self.algorithms,
            [
                self.clock_skew,
                self.jwks_refresh,
                self.jwks_max_stale,
                self.unknown_kid_refresh_interval,
            ],
        )
    }
}

impl WorkloadIssuerConfig {
    /// The settings shared with OIDC issuers.
    pub fn common(&self) -> JwtIssuerCommon {
        JwtIssuerCommon::new(
            &self.issuer,
            self.discovery_url.as_deref(),
            self.jwks_url.as_deref(),
            &self.audiences,
            &self.algorithms,
            [
                self.clock_skew,
                self.jwks_refresh,
                self.jwks_max_stale,
                self.unknown_kid_refresh_interval,
            ],
        )
    }
}

impl JwtIssuerCommon {
    fn new(
        issuer: &str,
        discovery_url: Option<&str>,
        jwks_url: Option<&str>,
        audiences: &[String],
        algorithms: &[String],
        [
            clock_skew,
            jwks_refresh,
            jwks_max_stale,
            unknown_kid_refresh_interval,
        ]: [Duration; 4],
    ) -> Self {
        let discovery_url = match (jwks_url, discovery_url) {
            (Some(_), _) => None,
            (None, Some(url)) => Some(url.to_string()),
            // OpenID Connect Discovery §4: strip a trailing slash before appending the path.
            (None, None) => Some(format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            )),
        };
        JwtIssuerCommon {
            issuer: issuer.to_string(),
            discovery_url,
            jwks_url: jwks_url.map(str::to_string),
            audiences: audiences.to_vec(),
            algorithms: algorithms.to_vec(),
            clock_skew,
            jwks_refresh,
            jwks_max_stale,
            unknown_kid_refresh_interval,
        }
    }
}

fn default_username_claim() -> String {
    "preferred_username".into()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_jwt_algorithms() -> Vec<String> {
    vec!["RS256".into(), "ES256".into(), "EdDSA".into()]
}
fn default_clock_skew() -> Duration {
    Duration::from_secs(60)
}
fn default_jwks_refresh() -> Duration {
    Duration::from_secs(5 * 60)
}
fn default_jwks_max_stale() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn default_unknown_kid_refresh_interval() -> Duration {
    Duration::from_secs(30)
}

/// One service token, as printed by `ward token create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The identity the token proves; clients send it as their user name.
    pub name: String,
    /// `sha256:<hex>` of the token.
    pub hash: String,
    /// When the token stops working: `2027-01-01` or an RFC 3339 timestamp. Required unless
    /// `long_lived` is true.
    #[serde(default, deserialize_with = "deserialize_expiry")]
    pub expires: Option<DateTime<Utc>>,
    /// The token deliberately never expires (kept so listings can point it out). Excludes
    /// `expires`.
    #[serde(default)]
    pub long_lived: bool,
    /// The identity responsible for the token (e.g. `oidc:alice`).
    pub owner: Option<String>,
    /// The IdP group the owner must still be in for the token to be considered looked
    /// after; needs `owner`.
    pub owner_group: Option<String>,
    /// Targets the token may reach; all targets when absent.
    pub targets: Option<Vec<String>>,
    /// Groups the identity belongs to (used by policy rules).
    #[serde(default)]
    pub groups: Vec<String>,
}

/// A target ward can connect clients to. The protocol is given by which address key is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// `host:port` of a PostgreSQL server.
    pub postgres: Option<String>,
    /// `host:port` of an SSH server (port 22 when left out); see `ssh_config`.
    pub ssh: Option<String>,
    /// SSH targets: the host key the target must present (`ssh-ed25519 AAAA…`); required.
    pub host_key: Option<String>,
    /// Database to open on the target (default: the target's name).
    pub database: Option<String>,
    pub credential: CredentialConfig,
    #[serde(default)]
    pub tls: UpstreamTls,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// What happens to statements no rule decides (overrides `policy.default_action`).
    pub default_action: Option<crate::policy::Action>,
}

/// The credential ward logs in to a target with. Clients never see it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialConfig {
    pub user: String,
    /// `env:NAME` or `file:PATH`.
    pub password: Option<SecretRef>,
    /// SSH targets: the private key ward logs in with, `file:PATH` or `env:NAME`.
    pub private_key: Option<SecretRef>,
}

/// TLS from ward to a target.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default)]
    pub mode: UpstreamTlsMode,
    /// PEM CA bundle used to verify the target (system roots when absent).
    pub ca: Option<PathBuf>,
    /// Name expected in the target's certificate (default: the host of the address).
    pub server_name: Option<String>,
}

/// How ward secures its connection to a target.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTlsMode {
    /// Plain TCP (fine on loopback or a private link).
    #[default]
    Disable,
    /// TLS without certificate verification (encrypts, does not authenticate the target).
    Require,
    /// TLS with the certificate verified against `ca` and `server_name`.
    VerifyFull,
}

/// A resolved PostgreSQL target, ready for the adapter.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    pub name: String,
    pub address: String,
    pub database: String,
    pub user: String,
    pub password: Option<Secret>,
    pub tls: UpstreamTls,
    pub labels: BTreeMap<String, String>,
}

impl Config {
    /// Reads, parses, validates and resolves a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let base = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::from_yaml(&text, &base).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_path_buf(),
                message,
            },
            ConfigError::Invalid { message, .. } => ConfigError::Invalid {
                path: path.to_path_buf(),
                message,
            },
            other => other,
        })
    }

    /// Parses config text whose relative paths are relative to `base`.
    pub fn from_yaml(text: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = if text.trim().is_empty() {
            serde_yaml::from_str("{}")
        } else {
            serde_yaml::from_str(text)
        }
        .map_err(|e| ConfigError::Parse {
            path: PathBuf::new(),
            message: e.to_string(),
        })?;
        config.base_dir = base.to_path_buf();
        config.rebase_paths();
        config.validate().map_err(|message| ConfigError::Invalid {
            path: PathBuf::new(),
            message,
        })?;
        Ok(config)
    }

    fn rebase_paths(&mut self) {
        let base = self.base_dir.clone();
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(p) = &mut self.tls.cert {
            fix(p);
        }
        if let Some(p) = &mut self.tls.key {
            fix(p);
        }
        if let Some(p) = &mut self.store.sqlite {
            fix(p);
        }
        if let Some(webhook) = &mut self.approvals.webhook {
            webhook.url.rebase(&base);
        }
        for sink in &mut self.forward {
            sink.rebase(&base);
        }
        if let Some(r) = &mut self.masking.token_key {
            r.rebase(&base);
        }
        if let Some(r) = self
            .identity
            .login
            .as_mut()
            .and_then(|l| l.client_secret.as_mut())
        {
            r.rebase(&base);
        }
        for target in self.targets.values_mut() {
            if let Some(p) = &mut target.tls.ca {
                fix(p);
            }
            if let Some(r) = &mut target.credential.password {
                r.rebase(&base);
            }
            if let Some(r) = &mut target.credential.private_key {
                r.rebase(&base);
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            return Err("tls.cert and tls.key must be given together".into());
        }
        if let Some(hash) = &self.api.admin_token_hash {
            parse_token_hash(hash).map_err(|e| format!("api.admin_token_hash: {e}"))?;
        }
        self.api.roles.validate()?;
        if self.limits.max_message_bytes < 1024 {
            return Err("limits.max_message_bytes must be at least 1024".into());
        }
        if self.audit.journal_size < 64 * 1024 {
            return Err(format!(
                "audit.journal_size must be at least 65536 bytes (64 KiB), not {}",
                self.audit.journal_size
            ));
        }
        for (i, token) in self.identity.tokens.iter().enumerate() {
            if token.name.is_empty() {
                return Err(format!("identity.tokens[{i}]: name must not be empty"));
            }
            parse_token_hash(&token.hash)
                .map_err(|e| format!("identity.tokens[{i}] ({}): {e}", token.name))?;
            validate_token_lifetime(token)
                .map_err(|e| format!("identity.tokens[{i}] ({}): {e}", token.name))?;
            for t in token.targets.iter().flatten() {
                if !self.targets.contains_key(t) {
                    return Err(format!(
                        "identity.tokens[{i}] ({}): unknown target {t:?}; known targets: {}",
                        token.name,
                        self.target_names()
                    ));
                }
            }
        }
        validate_jwt_issuers(&self.identity)?;
        validate_login(&self.identity)?;
        self.policy().map_err(|e| e.to_string())?;
        crate::forward::validate(&self.forward)?;
        // The key itself is read when the gateway starts (like target credentials); here a
        // placeholder stands in so the rules are checked whether or not it is set yet.
        crate::masking::Masking::with_key(
            &self.masking,
            self.masking
                .token_key
                .as_ref()
                .map(|_| b"placeholder".to_vec()),
        )
        .map_err(|e| e.to_string())?;
        crate::ssh_config::validate(self)?;
        for (name, target) in &self.targets {
            if target.ssh.is_some() {
                crate::ssh_config::validate_target(name, target)?;
                continue;
            }
            let Some(address) = &target.postgres else {
                return Err(format!(
                    "targets.{name}: say which protocol it speaks, e.g. `postgres: 10.0.0.5:5432` or `ssh: 10.0.0.7:22`"
                ));
            };
            if !address.contains(':') {
                return Err(format!(
                    "targets.{name}.postgres: {address:?} must be host:port, e.g. 10.0.0.5:5432"
                ));
            }
            if target.tls.mode == UpstreamTlsMode::Disable && target.tls.ca.is_some() {
                return Err(format!(
                    "targets.{name}.tls: a CA is given but mode is disable; set mode: verify-full"
                ));
            }
        }
        Ok(())
    }

    fn target_names(&self) -> String {
        if self.targets.is_empty() {
            "(none)".into()
        } else {
            self.targets.keys().cloned().collect::<Vec<_>>().join(", ")
        }
    }

    /// The compiled guardrail rules.
    pub fn policy(&self) -> Result<crate::policy::Policy, crate::policy::RuleError> {
        let defaults = self
            .targets
            .iter()
            .filter_map(|(name, t)| t.default_action.map(|a| (name.clone(), a)))
            .collect();
        crate::policy::Policy::new(self.rules.clone(), self.policy.clone(), defaults)
    }

    /// The compiled masking rules, with the tokenize key read from its reference.
    pub fn masking(&self) -> Result<crate::masking::Masking, crate::masking::MaskingError> {
        crate::masking::Masking::new(&self.masking)
    }

    /// ward's Ed25519 key for signing session logs (generated on first start).
    pub fn signing_key_path(&self) -> PathBuf {
        self.data_dir.join("signing.key")
    }

    /// The strict-mode audit journal, next to the store.
    pub fn journal_path(&self) -> PathBuf {
        let store = self.sqlite_path();
        store.with_file_name(format!(
            "{}.journal",
            store.file_stem().and_then(|s| s.to_str()).unwrap_or("ward")
        ))
    }

    /// The SQLite file of the store.
    pub fn sqlite_path(&self) -> PathBuf {
        self.store
            .sqlite
            .clone()
            .unwrap_or_else(|| self.data_dir.join("ward.db"))
    }

    /// The token book built from `identity.tokens`.
    pub fn token_book(&self) -> TokenBook {
        TokenBook::new(
            self.identity
                .tokens
                .iter()
                .map(|t| TokenEntry {
                    identity: t.name.as_str().into(),
                    hash: parse_token_hash(&t.hash).expect("validated at load"),
                    expires: t.expires,
                    long_lived: t.long_lived,
                    owner: t.owner.clone(),
                    owner_group: t.owner_group.clone(),
                    targets: t.targets.clone(),
                    groups: t.groups.clone(),
                })
                .collect(),
        )
    }

    /// Resolves every PostgreSQL target, reading its secret now.
    pub fn postgres_targets(&self) -> Result<BTreeMap<String, PostgresTarget>, String> {
        let mut out = BTreeMap::new();
        for (name, t) in &self.targets {
            let Some(address) = &t.postgres else { continue };
            let password = match &t.credential.password {
                Some(r) => Some(
                    r.resolve()
                        .map_err(|e| format!("targets.{name}.credential.password: {e}"))?,
                ),
                None => None,
            };
            out.insert(
                name.clone(),
                PostgresTarget {
                    name: name.clone(),
                    address: address.clone(),
                    database: t.database.clone().unwrap_or_else(|| name.clone()),
                    user: t.credential.user.clone(),
                    password,
                    tls: t.tls.clone(),
                    labels: t.labels.clone(),
                },
            );
        }
        Ok(out)
    }
}

/// Checks `identity.oidc` and `identity.workload`; errors name the field, e.g.
/// `identity.oidc[0].algorithms: ...`.
fn validate_jwt_issuers(identity: &IdentityConfig) -> Result<(), String> {
    let mut seen: BTreeMap<&str, String> = BTreeMap::new();
    for (i, o) in identity.oidc.iter().enumerate() {
        let at = format!("identity.oidc[{i}]");
        validate_jwt_common(&at, &o.common(), o.discovery_url.is_some())?;
        if o.username_claim.trim().is_empty() {
            return Err(format!(
                "{at}.username_claim: must name a claim, e.g. preferred_username, email or sub"
            ));
        }
        if o.groups_claim.trim().is_empty() {
            return Err(format!(
                "{at}.groups_claim: must name a claim (default groups)"
            ));
        }
        if let Some(first) = seen.insert(o.issuer.as_str(), at.clone()) {
            return Err(duplicate_issuer(&at, &o.issuer, &first));
        }
    }
    for (i, w) in identity.workload.iter().enumerate() {
        let at = format!("identity.workload[{i}]");
        validate_jwt_common(&at, &w.common(), w.discovery_url.is_some())?;
        crate::identity::IdentityTemplate::parse(&w.identity)
            .map_err(|e| format!("{at}.identity: {e}"))?;
        for (j, a) in w.attributes.iter().enumerate() {
            if a.trim().is_empty() {
                return Err(format!("{at}.attributes[{j}]: must name a claim, e.g. ref"));
            }
        }
        if let Some(g) = &w.groups_claim
            && g.trim().is_empty()
        {
            return Err(format!(
                "{at}.groups_claim: must name a claim, or be left out"
            ));
        }
        if let Some(first) = seen.insert(w.issuer.as_str(), at.clone()) {
            return Err(duplicate_issuer(&at, &w.issuer, &first));
        }
    }
    Ok(())
}

fn duplicate_issuer(at: &str, issuer: &str, first: &str) -> String {
    format!(
        "{at}.issuer: {issuer:?} is already configured at {first}; a token is matched to its \
         issuer by `iss`, so each issuer may appear once"
    )
}

fn validate_jwt_common(
    at: &str,
    c: &JwtIssuerCommon,
    discovery_configured: bool,
) -> Result<(), String> {
    if c.issuer.trim().is_empty() {
        return Err(format!(
            "{at}.issuer: must not be empty; it is the tokens' `iss`"
        ));
    }
    check_idp_url(&format!("{at}.issuer"), &c.issuer)?;
    if let Some(url) = &c.jwks_url {
        if discovery_configured {
            return Err(format!(
                "{at}: give discovery_url or jwks_url, not both (jwks_url skips discovery)"
            ));
        }
        check_idp_url(&format!("{at}.jwks_url"), url)?;
    }
    if let (Some(url), true) = (&c.discovery_url, discovery_configured) {
        check_idp_url(&format!("{at}.discovery_url"), url)?;
    }
    if c.audiences.is_empty() {
        return Err(format!(
            "{at}.audiences: list at least one audience (the `aud` the IdP puts in tokens for \
             ward, often the client id); without it a token minted for any application of \
             the IdP would be accepted"
        ));
    }
    if c.audiences.iter().any(|a| a.trim().is_empty()) {
        return Err(format!("{at}.audiences: an audience must not be empty"));
    }
    if c.algorithms.is_empty() {
        return Err(format!(
            "{at}.algorithms: list at least one of {}",
            JWT_ALGORITHMS.join(", ")
        ));
    }
    for alg in &c.algorithms {
        if alg.eq_ignore_ascii_case("none") {
            return Err(format!(
                "{at}.algorithms: \"none\" is never accepted: it marks an unsigned token that \
                 anyone can forge"
            ));
        }
        if alg.len() >= 2 && alg[..2].eq_ignore_ascii_case("HS") {
            return Err(format!(
                "{at}.algorithms: {alg:?} (HMAC) is never accepted: ward verifies with the \
                 issuer's public keys, and accepting HMAC would let anyone who has a public key \
                 sign tokens with it; use RS256, ES256 or EdDSA"
            ));
        }
        if !JWT_ALGORITHMS.contains(&alg.as_str()) {
            return Err(format!(
                "{at}.algorithms: {alg:?} is not supported; use some of {}",
                JWT_ALGORITHMS.join(", ")
            ));
        }
    }
    if c.clock_skew > Duration::from_secs(600) {
        return Err(format!(
            "{at}.clock_skew: {} is more than 10m; fix the clocks (NTP) instead of accepting \
             expired tokens",
            humantime::format_duration(c.clock_skew)
        ));
    }
    if c.jwks_refresh < Duration::from_secs(1) {
        return Err(format!("{at}.jwks_refresh: must be at least 1s"));
    }
    if c.unknown_kid_refresh_interval < Duration::from_secs(1) {
        return Err(format!(
            "{at}.unknown_kid_refresh_interval: must be at least 1s, or every token with a \
             made-up key id would cost a request to the IdP"
        ));
    }
    if c.jwks_max_stale < c.jwks_refresh {
        return Err(format!(
            "{at}.jwks_max_stale: {} is shorter than jwks_refresh ({}); the keys would go \
             stale before they are refreshed",
            humantime::format_duration(c.jwks_max_stale),
            humantime::format_duration(c.jwks_refresh)
        ));
    }
    Ok(())
}

/// IdP URLs must be https, except on loopback (test and sidecar IdPs): keys fetched over
/// plain http from elsewhere could be replaced by anyone on the path.
fn check_idp_url(field: &str, url: &str) -> Result<(), String> {
    let rest = if let Some(rest) = url.strip_prefix("https://") {
        rest
    } else if let Some(rest) = url.strip_prefix("http://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = match authority.rsplit_once(':') {
            Some((h, port)) if !h.is_empty() && port.chars().all(|c| c.is_ascii_digit()) => h,
            _ => authority,
        };
        if !matches!(host, "127.0.0.1" | "localhost" | "[::1]") {
            return Err(format!(
                "{field}: {url:?} must use https (plain http is accepted only on loopback)"
            ));
        }
        rest
    } else {
        return Err(format!(
            "{field}: {url:?} must be an https:// URL, e.g. https://idp.example.com/realms/main"
        ));
    };
    if rest.split(['/', '?', '#']).next().unwrap_or("").is_empty() {
        return Err(format!("{field}: {url:?} has no host"));
    }
    Ok(())
}

/// Where the docs explain why tokens expire and how to mark one long-lived.
const TOKEN_EXPIRY_DOCS: &str = "docs/identity.md#token-expiry";

/// A service token says how long it lives (`expires`, or deliberately `long_lived`), and who
/// answers for it (`owner`, optionally the `owner_group` they must stay in).
fn validate_token_lifetime(token: &TokenConfig) -> Result<(), String> {
    match (token.expires, token.long_lived) {
        (None, false) => {
            // A date that would work, so the example can be pasted as is.
            let example = (Utc::now() + chrono::Duration::days(90)).format("%Y-%m-%d");
            return Err(format!(
                "a token needs expires (e.g. expires: {example}) or long_lived: true; tokens \
                 without expiry outlive their owners; see {TOKEN_EXPIRY_DOCS}"
            ));
        }
        (Some(_), true) => {
            return Err(format!(
                "expires and long_lived: true contradict each other (long_lived means the token \
                 never expires); keep expires for a token that ends, or remove it to keep the \
                 token long-lived; see {TOKEN_EXPIRY_DOCS}"
            ));
        }
        _ => {}
    }
    if let Some(owner) = &token.owner
        && owner.trim().is_empty()
    {
        return Err(
            "owner must not be empty; name the identity responsible, e.g. oidc:alice".into(),
        );
    }
    match (&token.owner, &token.owner_group) {
        (None, Some(group)) => Err(format!(
            "owner_group {group:?} needs an owner: it is the group the owner must still be in; \
             add owner: <identity>, e.g. owner: oidc:alice"
        )),
        (Some(_), Some(group)) if group.trim().is_empty() => Err(
            "owner_group must not be empty; give the IdP group the owner must still be in, or \
             remove it"
                .into(),
        ),
        _ => Ok(()),
    }
}

fn deserialize_expiry<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<DateTime<Utc>>, D::Error> {
    let Some(text) = Option::<String>::deserialize(d)? else {
        return Ok(None);
    };
    parse_expiry(&text)
        .map(Some)
        .map_err(serde::de::Error::custom)
}

/// Parses `2027-01-01` (midnight UTC) or an RFC 3339 timestamp.
pub fn parse_expiry(text: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc());
    }
    Err(format!(
        "expiry {text:?} must be a date (2027-01-01) or an RFC 3339 timestamp (2027-01-01T00:00:00Z)"
    ))
}

/// Durations in the config are written like `10s` or `2m`.
mod humantime_serde_compat {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_duration(&text).map_err(serde::de::Error::custom)
    }

    /// An optional duration: absent or null is `None`.
    pub mod option {
        use serde::Deserialize;
        use std::time::Duration;

        pub fn deserialize<'de, D: serde::Deserializer<'de>>(
            d: D,
        ) -> Result<Option<Duration>, D::Error> {
            match Option::<String>::deserialize(d)? {
                None => Ok(None),
                Some(text) => crate::time::parse_duration(&text)
                    .map(Some)
                    .map_err(serde::de::Error::custom),
            }
        }
    }
}

#[cfg(test)]
mod roles_tests {
    use super::*;

    #[test]
    fn api_roles_parse_and_are_checked() {
        let c = Config::from_yaml(
            "api: { roles: { admin: [ward-admins], auditor: [auditors, sre] } }",
            Path::new("."),
        )
        .unwrap();
        assert_eq!(c.api.roles.admin, ["ward-admins"]);
        assert_eq!(c.api.roles.auditor, ["auditors", "sre"]);
        assert!(c.api.roles.approver.is_empty());
        let c = Config::from_yaml("", Path::new(".")).unwrap();
        assert_eq!(c.api.roles, ApiRoles::default());
        for (yaml, expected) in [
            ("api: { roles: { admins: [x] } }", "admins"),
            ("api: { roles: { admin: [\"\"] } }", "api.roles.admin"),
            ("api: { roles: { auditor: [' sre'] } }", "api.roles.auditor"),
            ("api: { roles: { approver: ['group:sre'] } }", "alone"),
        ] {
            let err = Config::from_yaml(yaml, Path::new("."))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{yaml}: {err}");
        }
    }

    /// The `api.roles` examples of identity.md and configuration.md parse.
    #[test]
    fn api_roles_doc_examples_parse() {
        let mut seen = 0;
        for doc in [
            include_str!("../../../docs/identity.md"),
            include_str!("../../../docs/configuration.md"),
        ] {
            for block in doc.split("```yaml\n").skip(1) {
                let yaml = block.split("```").next().unwrap_or_default();
                if !yaml.starts_with("api:\n  roles:") {
                    continue;
                }
                let c = Config::from_yaml(yaml, Path::new("."))
                    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                assert_eq!(c.api.roles.admin, ["ward-admins"]);
                seen += 1;
            }
        }
        assert_eq!(seen, 2);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
listen: { postgres: "127.0.0.1:15432", api: "127.0.0.1:18080" }
identity:
  tokens:
    - { name: ci-nightly, hash: "sha256:0000000000000000000000000000000000000000000000000000000000000000", expires: 2027-01-01, targets: [orders-db] }
targets:
  orders-db:
    postgres: 10.0.0.5:5432
    database: orders
    credential: { user: app, password: env:ORDERS_DB_PASSWORD }
"#;

    #[test]
    fn parses_the_documented_shape() {
        let c = Config::from_yaml(EXAMPLE, Path::new("/etc/ward")).unwrap();
        assert_eq!(c.data_dir, PathBuf::from("/etc/ward/ward-data"));
        assert_eq!(
            c.identity.tokens[0].expires.unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert_eq!(c.targets["orders-db"].database.as_deref(), Some("orders"));
        assert_eq!(
            c.sqlite_path(),
            PathBuf::from("/etc/ward/ward-data/ward.db")
        );
    }

    #[test]
    fn rejects_typos_and_dangling_references() {
        let err = Config::from_yaml("listen: { postgress: 1 }", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("postgress"), "{err}");
        let bad = EXAMPLE.replace("targets: [orders-db]", "targets: [nope]");
        let err = Config::from_yaml(&bad, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("unknown target \"nope\""), "{err}");
        let bad = EXAMPLE.replace("env:ORDERS_DB_PASSWORD", "hunter2");
        let err = Config::from_yaml(&bad, Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("by reference"), "{err}");
    }

    /// `identity.tokens` with one entry, `fields` inside its flow mapping after the hash.
    fn with_token(fields: &str) -> String {
        format!(
            "identity:\n  tokens:\n    - {{ name: ok, hash: \"sha256:{zero}\", expires: 2027-01-01 }}\n    \
             - {{ name: ci-nightly, hash: \"sha256:{zero}\"{fields} }}\n",
            zero = "0".repeat(64)
        )
    }

    #[test]
    fn a_token_without_expiry_must_be_marked_long_lived() {
        let err = invalid(&with_token(""));
        assert!(
            err.contains(
                "identity.tokens[1] (ci-nightly): a token needs expires (e.g. expires: 20"
            ),
            "{err}"
        );
        assert!(
            err.contains("or long_lived: true; tokens without expiry outlive their owners"),
            "{err}"
        );
        assert!(err.contains("docs/identity.md#token-expiry"), "{err}");
        // The suggested date is valid config.
        let example = err
            .split("e.g. expires: ")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap();
        let date = parse_expiry(example).unwrap();
        assert!(date > Utc::now(), "{example}");
        // docs/identity.md quotes the message (with the date of the day it was written).
        let message = err.split("(ci-nightly): ").nth(1).unwrap();
        let quoted = message.replace(example, "2027-03-02");
        assert!(
            include_str!("../../../docs/identity.md").contains(&quoted),
            "docs/identity.md#token-expiry should quote {quoted:?}"
        );
        // Saying no explicitly is the same as saying nothing.
        let err = invalid(&with_token(", long_lived: false"));
        assert!(err.contains("(ci-nightly): a token needs expires"), "{err}");
    }

    #[test]
    fn long_lived_tokens_and_expiring_tokens_load() {
        let c = Config::from_yaml(&with_token(", long_lived: true"), Path::new(".")).unwrap();
        let t = &c.identity.tokens[1];
        assert!(t.long_lived && t.expires.is_none());
        let book = c.token_book();
        assert!(book.entries()[1].long_lived);
        assert!(!book.entries()[0].long_lived);

        let c = Config::from_yaml(
            &with_token(", expires: 2027-01-01T12:00:00Z"),
            Path::new("."),
        )
        .unwrap();
        let t = &c.identity.tokens[1];
        assert!(!t.long_lived);
        assert_eq!(t.expires.unwrap().to_rfc3339(), "2027-01-01T12:00:00+00:00");
        // An expiry in the past loads (the token is refused at login, not the config).
        Config::from_yaml(&with_token(", expires: 2020-01-01"), Path::new(".")).unwrap();
    }

    #[test]
    fn long_lived_with_an_expiry_is_refused() {
        let err = invalid(&with_token(", expires: 2027-01-01, long_lived: true"));
        assert!(
            err.contains(
                "identity.tokens[1] (ci-nightly): expires and long_lived: true contradict"
            ),
            "{err}"
        );
    }

    #[test]
    fn owners_are_kept_and_owner_group_needs_an_owner() {
        let c = Config::from_yaml(
            &with_token(", long_lived: true, owner: \"oidc:alice\", owner_group: sre"),
            Path::new("."),
        )
        .unwrap();
        let entry = c.token_book().entries()[1].clone();
        assert_eq!(entry.owner.as_deref(), Some("oidc:alice"));
        assert_eq!(entry.owner_group.as_deref(), Some("sre"));
        let c = Config::from_yaml(
            &with_token(", expires: 2027-01-01, owner: \"oidc:bob\""),
            Path::new("."),
        )
        .unwrap();
        let entry = c.token_book().entries()[1].clone();
        assert_eq!(entry.owner.as_deref(), Some("oidc:bob"));
        assert_eq!(entry.owner_group, None);

        let err = invalid(&with_token(", expires: 2027-01-01, owner_group: sre"));
        assert!(
            err.contains("identity.tokens[1] (ci-nightly): owner_group \"sre\" needs an owner"),
            "{err}"
        );
        let err = invalid(&with_token(", expires: 2027-01-01, owner: \"\""));
        assert!(err.contains("owner must not be empty"), "{err}");
        let err = invalid(&with_token(
            ", expires: 2027-01-01, owner: x, owner_group: \"\"",
        ));
        assert!(err.contains("owner_group must not be empty"), "{err}");
    }

    #[test]
    fn retention_is_optional_and_humane() {
        let c = Config::from_yaml("", Path::new(".")).unwrap();
        assert_eq!(c.audit.retention, None, "keep everything by default");
        let c = Config::from_yaml("audit: { retention: null }", Path::new(".")).unwrap();
        assert_eq!(c.audit.retention, None);
        let c = Config::from_yaml("audit: { retention: 90d }", Path::new(".")).unwrap();
        assert_eq!(c.audit.retention, Some(Duration::from_secs(90 * 86400)));
        let err = Config::from_yaml("audit: { retention: forever }", Path::new(".")).unwrap_err();
        assert!(err.to_string().contains("30d"), "{err}");
    }

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::from_yaml("", Path::new(".")).unwrap();
        assert_eq!(c.listen.postgres.port(), 15432);
        assert!(!c.tls.allow_plaintext);
        assert_eq!(c.limits.max_message_bytes, 1 << 30);
    }

    const OIDC: &str = r#"
identity:
  oidc:
    - issuer: https://idp.example.com/realms/main
      audiences: [ward]
      groups_claim: realm_access.roles
      name_prefix: "oidc:"
  workload:
    - issuer: https://token.actions.githubusercontent.com
      audiences: [https://ward.example.com]
      identity: "ci:github:{repository}:{workflow}"
      attributes: [ref, run_id]
      groups: [ci]
      jwks_url: https://token.actions.githubusercontent.com/.well-known/jwks
      algorithms: [RS256]
      clock_skew: 30s
"#;

    fn invalid(yaml: &str) -> String {
        Config::from_yaml(yaml, Path::new("."))
            .expect_err("config should be refused")
            .to_string()
    }

    #[test]
    fn oidc_and_workload_issuers_parse_with_defaults() {
        let c = Config::from_yaml(OIDC, Path::new(".")).unwrap();
        let o = &c.identity.oidc[0];
        assert_eq!(o.username_claim, "preferred_username");
        assert_eq!(o.groups_claim, "realm_access.roles");
        assert_eq!(o.algorithms, ["RS256", "ES256", "EdDSA"]);
        assert_eq!(o.clock_skew, Duration::from_secs(60));
        assert_eq!(o.jwks_refresh, Duration::from_secs(300));
        assert_eq!(o.jwks_max_stale, Duration::from_secs(86400));
        assert_eq!(o.unknown_kid_refresh_interval, Duration::from_secs(30));
        assert_eq!(o.name_prefix.as_deref(), Some("oidc:"));
        assert!(o.groups_prefix.is_none() && o.static_groups.is_empty());
        let common = o.common();
        assert_eq!(
            common.discovery_url.as_deref(),
            Some("https://idp.example.com/realms/main/.well-known/openid-configuration")
        );
        assert_eq!(common.jwks_url, None);

        let w = &c.identity.workload[0];
        assert_eq!(w.identity, "ci:github:{repository}:{workflow}");
        assert_eq!(w.attributes, ["ref", "run_id"]);
        assert_eq!(w.clock_skew, Duration::from_secs(30));
        let common = w.common();
        assert_eq!(common.discovery_url, None, "jwks_url skips discovery");
        assert_eq!(common.algorithms, ["RS256"]);

        let c = Config::from_yaml("", Path::new(".")).unwrap();
        assert!(c.identity.oidc.is_empty() && c.identity.workload.is_empty());
        assert_eq!(c.identity.on_expiry, OnExpiry::End);
        let c = Config::from_yaml("identity: { on_expiry: refuse }", Path::new(".")).unwrap();
        assert_eq!(c.identity.on_expiry, OnExpiry::Refuse);
        let err = invalid("identity: { on_expiry: ignore }");
        assert!(err.contains("on_expiry") || err.contains("end"), "{err}");
    }

    /// The ward.yaml examples of docs/identity.md and of configuration.md's section on IdP
    /// and CI tokens are valid (the yaml blocks with an `identity:` key), and so is the token
    /// expiry example.
    #[test]
    fn identity_doc_examples_parse() {
        let identity = include_str!("../../../docs/identity.md");
        let configuration = include_str!("../../../docs/configuration.md");
        let section = configuration
            .split("## IdP and CI tokens")
            .nth(1)
            .and_then(|rest| rest.split("\n## ").next())
            .expect("configuration.md has a section on IdP and CI tokens");
        let mut parsed = 0;
        let mut token_examples = 0;
        for doc in [identity, section] {
            for block in doc.split("```yaml\n").skip(1) {
                let yaml = block.split("```").next().unwrap();
                if !yaml.lines().any(|l| l.starts_with("identity:")) {
                    continue;
                }
                let c = Config::from_yaml(yaml, Path::new("."))
                    .unwrap_or_else(|e| panic!("{e}\n{yaml}"));
                if !c.identity.tokens.is_empty() {
                    // The token expiry example: one expiring, owned token, one long-lived.
                    let tokens = &c.identity.tokens;
                    assert!(
                        tokens
                            .iter()
                            .any(|t| t.expires.is_some() && t.owner_group.is_some())
                    );
                    assert!(tokens.iter().any(|t| t.long_lived));
                    token_examples += 1;
                    continue;
                }
                assert!(!c.identity.oidc.is_empty() && !c.identity.workload.is_empty());
                parsed += 1;
            }
        }
        assert_eq!(parsed, 2);
        assert_eq!(
            token_examples, 1,
            "identity.md#token-expiry has one example"
        );
    }

    #[test]
    fn issuer_validation_names_the_field() {
        let err = invalid(&OIDC.replace("algorithms: [RS256]", "algorithms: [RS256, none]"));
        assert!(
            err.contains("identity.workload[0].algorithms: \"none\" is never accepted"),
            "{err}"
        );
        let err = invalid(&OIDC.replace(
            "audiences: [ward]",
            "audiences: [ward]\n      algorithms: [HS256]",
        ));
        assert!(
            err.contains("identity.oidc[0].algorithms: \"HS256\" (HMAC)"),
            "{err}"
        );
        let err = invalid(&OIDC.replace("algorithms: [RS256]", "algorithms: [ES512]"));
        assert!(
            err.contains("\"ES512\" is not supported; use some of RS256"),
            "{err}"
        );
        let err = invalid(&OIDC.replace("audiences: [ward]", "audiences: []"));
        assert!(
            err.contains("identity.oidc[0].audiences: list at least one"),
            "{err}"
        );
        let err = invalid(&OIDC.replace("      audiences: [ward]\n", ""));
        assert!(err.contains("audiences"), "{err}");
        let err = invalid(&OIDC.replace("https://idp.example.com", "http://idp.example.com"));
        assert!(
            err.contains("identity.oidc[0].issuer") && err.contains("https"),
            "{err}"
        );
        let ok = OIDC.replace("https://idp.example.com", "http://127.0.0.1:9090");
        Config::from_yaml(&ok, Path::new(".")).unwrap();
        let err = invalid(&OIDC.replace(
            "https://idp.example.com/realms/main",
            "https://token.actions.githubusercontent.com",
        ));
        assert!(
            err.contains("identity.workload[0].issuer")
                && err.contains("already configured at identity.oidc[0]"),
            "{err}"
        );
        let err = invalid(&OIDC.replace("{workflow}\"", "{workflow\""));
        assert!(
            err.contains("identity.workload[0].identity") && err.contains("not closed"),
            "{err}"
        );
        let err = invalid(&OIDC.replace(
            "clock_skew: 30s",
            "clock_skew: 30s\n      jwks_max_stale: 1m",
        ));
        assert!(
            err.contains("identity.workload[0].jwks_max_stale")
                && err.contains("shorter than jwks_refresh"),
            "{err}"
        );
        let err = invalid(&OIDC.replace("clock_skew: 30s", "clock_skew: soon"));
        assert!(err.contains("30d"), "{err}");
        let err = invalid(&OIDC.replace("clock_skew: 30s", "clock_skew: 1h"));
        assert!(err.contains("identity.workload[0].clock_skew"), "{err}");
        let err = invalid(&OIDC.replace("name_prefix", "name_prefx"));
        assert!(err.contains("name_prefx"), "{err}");
        let err = invalid(&OIDC.replace(
            "jwks_url:",
            "discovery_url: https://token.actions.githubusercontent.com/d\n      jwks_url:",
        ));
        assert!(err.contains("not both"), "{err}");
    }
}

#[cfg(test)]
mod login_tests {
    use super::*;

    fn config(identity: &str) -> Result<Config, String> {
        let yaml = format!(
            "identity:\n  oidc:\n    - {{ issuer: \"https://idp.example.com\", audiences: [ward, ward-cli], name_prefix: \"oidc:\" }}\n{identity}"
        );
        Config::from_yaml(&yaml, Path::new("/etc/ward")).map_err(|e| e.to_string())
    }

    #[test]
    fn login_and_mint_parse_with_defaults() {
        let c = config(
            "  login: { issuer: \"https://idp.example.com\", client_id: ward-cli }\n  mint: { groups: [dba] }\n",
        )
        .unwrap();
        let login = c.identity.login.unwrap();
        assert_eq!(login.scopes, ["openid", "profile", "email", "groups"]);
        assert_eq!(login.ttl, Duration::from_secs(8 * 3600));
        assert!(login.client_secret.is_none());
        let mint = c.identity.mint.unwrap();
        assert_eq!(mint.groups, ["dba"]);
        assert_eq!(mint.max_ttl, Duration::from_secs(3600));

        let c = config(
            "  login: { issuer: \"https://idp.example.com\", client_id: ward-cli, client_secret: file:cli.secret, scopes: [openid], ttl: 2h }\n  mint: { groups: [dba, sre], max_ttl: 15m }\n",
        )
        .unwrap();
        let login = c.identity.login.unwrap();
        assert_eq!(login.ttl, Duration::from_secs(7200));
        assert_eq!(
            login.client_secret,
            Some(SecretRef::File("/etc/ward/cli.secret".into()))
        );
        assert_eq!(c.identity.mint.unwrap().max_ttl, Duration::from_secs(900));
        let c = config("").unwrap();
        assert!(c.identity.login.is_none() && c.identity.mint.is_none());
    }

    #[test]
    fn login_and_mint_mistakes_are_named() {
        let err =
            config("  login: { issuer: \"https://other.example.com\", client_id: ward-cli }\n")
                .unwrap_err();
        assert!(
            err.contains("identity.login.issuer")
                && err.contains("https://idp.example.com")
                && err.contains("not one of identity.oidc[].issuer"),
            "{err}"
        );
        let err = config("  login: { issuer: \"https://idp.example.com\", client_id: gateway }\n")
            .unwrap_err();
        assert!(
            err.contains("identity.login.client_id") && err.contains("audiences"),
            "{err}"
        );
        let err = config(
            "  login: { issuer: \"https://idp.example.com\", client_id: ward-cli, scopes: [email] }\n",
        )
        .unwrap_err();
        assert!(err.contains("must include openid"), "{err}");
        let err = config(
            "  login: { issuer: \"https://idp.example.com\", client_id: ward-cli, ttl: 30d }\n",
        )
        .unwrap_err();
        assert!(err.contains("identity.login.ttl"), "{err}");
        let err = config("  login: { issuer: \"https://idp.example.com\" }\n").unwrap_err();
        assert!(err.contains("client_id"), "{err}");
        let err = config("  mint: { groups: [dba], max_ttl: 90d }\n").unwrap_err();
        assert!(err.contains("identity.mint.max_ttl"), "{err}");
        let err = config("  mint: { groups: [\"\"] }\n").unwrap_err();
        assert!(err.contains("identity.mint.groups"), "{err}");
        let err = config("  mint: { group: [dba] }\n").unwrap_err();
        assert!(err.contains("group"), "{err}");
        let err = Config::from_yaml("identity: { mint: { groups: [dba] } }", Path::new("."))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no identity.oidc issuer"), "{err}");
    }
}
