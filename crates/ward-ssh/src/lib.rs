//! ward's SSH adapter.
//!
//! Same shape as the PostgreSQL adapter: [`listener`] accepts OpenSSH clients, proves who
//! they are by their public key and picks the target from the SSH user name; [`upstream`]
//! logs in to the target's sshd with the key ward holds, after checking the target's pinned
//! host key; [`session`] relays each session channel, asking the core's policy about every
//! exec, shell and subsystem request and recording them through the shared audit sink;
//! [`host_key`] keeps ward's own host key. Identity checks, the session registry, locks,
//! the rules engine and the audit queue all come from `ward-core`: this crate only speaks SSH.
//!
//! ward terminates SSH on both sides (it is a man in the middle the operator chose), so it
//! sees every request in clear; channel data is relayed as opaque bytes.

pub mod forward;
pub mod host_key;
pub mod listener;
pub mod recording;
pub mod session;
pub mod sftp;
pub mod shell_lines;
pub mod upstream;

use russh::keys::ssh_key::public::KeyData;
use russh::keys::{PrivateKey, PublicKey};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use ward_core::config::Config;
use ward_core::control::Controls;
use ward_core::policy::Policy;
use ward_core::{AuditSink, SessionRegistry};

pub use listener::serve;

/// Where the rules in force come from. The gateway does not keep its own copy: `ward serve`
/// hands in the PostgreSQL gateway's (which config reloads replace), so one reload changes
/// the rules for both protocols.
pub type PolicySource = Arc<dyn Fn() -> Arc<Policy> + Send + Sync>;

/// A client key from `identity.ssh_keys`, parsed.
#[derive(Debug, Clone)]
pub struct ClientKey {
    pub identity: Arc<str>,
    pub groups: Vec<String>,
    /// Targets the key may reach; `None`: every SSH target.
    pub targets: Option<Vec<String>>,
    /// `SHA256:…`, for logs and the audit.
    pub fingerprint: String,
}

/// A trusted user CA from `identity.ssh_cas`, parsed.
#[derive(Debug, Clone)]
pub struct TrustedCa {
    /// The CA key's SHA-256 fingerprint, which certificates are validated against.
    pub fingerprint: russh::keys::ssh_key::Fingerprint,
    pub groups: Vec<String>,
    /// Targets its certificates may reach; `None`: every SSH target.
    pub targets: Option<Vec<String>>,
}

/// Everything the SSH listener needs, shared by all its connections.
pub struct SshGateway {
    /// Client keys by key data (the comment is not part of the key).
    pub keys: HashMap<KeyData, ClientKey>,
    /// User CAs whose certificates prove identities (`identity.ssh_cas`).
    pub cas: Vec<TrustedCa>,
    pub targets: BTreeMap<String, Arc<upstream::SshUpstream>>,
    pub server_config: Arc<russh::server::Config>,
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    pub controls: Arc<Controls>,
    /// Checks ward tokens, service tokens and IdP tokens given as the SSH password (or at
    /// the keyboard-interactive prompt); shared with the other adapters.
    pub auth: Arc<ward_auth::Authenticator>,
    /// Requests held by `review` rules (shared with PostgreSQL and the admin API).
    pub approvals: Arc<ward_core::approvals::Approvals>,
    /// Strict audit: exec, shell and subsystem requests reach the target only once their
    /// event is durable.
    pub audit_strict: bool,
    pub durable_timeout: Duration,
    pub connect_timeout: Duration,
    /// Bytes of a command line kept in its audit event.
    pub command_capture_bytes: usize,
    /// What a session does once its credential expires (`identity.on_expiry`).
    pub on_expiry: ward_core::config::OnExpiry,
    /// Record the bytes of shell and exec channels (`audit.terminal`).
    pub record_terminal: bool,
    /// Most bytes recorded per channel and stream (`audit.terminal_limit`; 0: no limit).
    pub terminal_limit: u64,
    policy: PolicySource,
}

/// The process-wide services the SSH gateway shares with the rest of ward.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    pub controls: Arc<Controls>,
    pub auth: Arc<ward_auth::Authenticator>,
    pub approvals: Arc<ward_core::approvals::Approvals>,
    pub policy: PolicySource,
}

impl SshGateway {
    /// Builds the gateway: parses client keys and pinned host keys, reads target private
    /// keys, and sets up the server with ward's host key. Errors name the config field.
    pub fn from_config(
        config: &Config,
        host_key: PrivateKey,
        shared: Shared,
    ) -> Result<Self, String> {
        let mut keys = HashMap::new();
        for (i, k) in config.identity.ssh_keys.iter().enumerate() {
            let key =
                parse_public_key(&k.key).map_err(|e| format!("identity.ssh_keys[{i}].key: {e}"))?;
            let fingerprint = key.fingerprint(russh::keys::HashAlg::Sha256).to_string();
            keys.insert(
                key.key_data().clone(),
                ClientKey {
                    identity: k.identity.as_str().into(),
                    groups: k.groups.clone(),
                    targets: k.targets.clone(),
                    fingerprint,
                },
            );
        }
        let mut cas = Vec::new();
        for (i, ca) in config.identity.ssh_cas.iter().enumerate() {
            let key =
                parse_public_key(&ca.key).map_err(|e| format!("identity.ssh_cas[{i}].key: {e}"))?;
            cas.push(TrustedCa {
                fingerprint: key.fingerprint(russh::keys::HashAlg::Sha256),
                groups: ca.groups.clone(),
                targets: ca.targets.clone(),
            });
        }
        let mut targets = BTreeMap::new();
        for (name, target) in config.ssh_targets()? {
            targets.insert(
                name,
                Arc::new(upstream::SshUpstream::new(
                    target,
                    config.limits.connect_timeout,
                )?),
            );
        }
        let server_config = russh::server::Config {
            server_id: russh::SshId::Standard(
                concat!("SSH-2.0-ward_", env!("CARGO_PKG_VERSION")).into(),
            ),
            methods: russh::MethodSet::from(
                &[
                    russh::MethodKind::PublicKey,
                    russh::MethodKind::KeyboardInteractive,
                    russh::MethodKind::Password,
                ][..],
            ),
            // OpenSSH probes with "none" first; answering that at once saves a second per
            // login. Real refusals still take the constant time below.
            auth_rejection_time: Duration::from_millis(300),
            auth_rejection_time_initial: Some(Duration::ZERO),
            keys: vec![host_key],
            // Sessions may sit idle for hours (a shell); keepalives find dead peers instead.
            inactivity_timeout: None,
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        };
        Ok(SshGateway {
            keys,
            cas,
            targets,
            server_config: Arc::new(server_config),
            registry: shared.registry,
            audit: shared.audit,
            controls: shared.controls,
            auth: shared.auth,
            approvals: shared.approvals,
            audit_strict: config.audit.mode == ward_core::config::AuditMode::Strict,
            durable_timeout: config.audit.durable_timeout,
            connect_timeout: config.limits.connect_timeout,
            command_capture_bytes: config.limits.statement_capture_bytes,
            on_expiry: config.identity.on_expiry,
            record_terminal: config.audit.terminal,
            terminal_limit: config.audit.terminal_limit,
            policy: shared.policy,
        })
    }

    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        (self.policy)()
    }
}

/// Parses an `authorized_keys`-style line (`ssh-ed25519 AAAA… comment`).
pub fn parse_public_key(line: &str) -> Result<PublicKey, String> {
    let mut parts = line.split_whitespace();
    let (Some(algorithm), Some(data)) = (parts.next(), parts.next()) else {
        return Err("not an OpenSSH public key line".into());
    };
    PublicKey::from_openssh(&format!("{algorithm} {data}"))
        .map_err(|e| format!("cannot parse the {algorithm} key: {e}"))
}

/// The `SHA256:…` fingerprint of a key, as `ssh-keygen -lf` prints it.
pub fn fingerprint(key: &PublicKey) -> String {
    key.fingerprint(russh::keys::HashAlg::Sha256).to_string()
}
