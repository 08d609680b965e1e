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
    /// The first rows of each result kept in its statement event (off by default; rules
    /// may override it with `capture_rows` / `capture_bytes`).
    #[serde(default)]
    pub capture: CaptureConfig,
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
            capture: CaptureConfig::default(),
        }
    }
}

/// Identity sources.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityConfig {
    #[serde(default)]
    pub tokens: Vec<TokenConfig>,
}

/// One service token, as printed by `ward token create`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// The identity the token proves; clients send it as their user name.
    pub name: String,
    /// `sha256:<hex>` of the token.
    pub hash: String,
    /// When the token stops working: `2027-01-01` or an RFC 3339 timestamp.
    #[serde(default, deserialize_with = "deserialize_expiry")]
    pub expires: Option<DateTime<Utc>>,
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
        for target in self.targets.values_mut() {
            if let Some(p) = &mut target.tls.ca {
                fix(p);
            }
            if let Some(r) = &mut target.credential.password {
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
        if self.limits.max_message_bytes < 1024 {
            return Err("limits.max_message_bytes must be at least 1024".into());
        }
        for (i, token) in self.identity.tokens.iter().enumerate() {
            if token.name.is_empty() {
                return Err(format!("identity.tokens[{i}]: name must not be empty"));
            }
            parse_token_hash(&token.hash)
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
        for (name, target) in &self.targets {
            let Some(address) = &target.postgres else {
                return Err(format!(
                    "targets.{name}: say which protocol it speaks, e.g. `postgres: 10.0.0.5:5432`"
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
}
