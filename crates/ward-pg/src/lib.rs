//! ward's PostgreSQL adapter.
//!
//! Same shape as every adapter: [`listener`] accepts, negotiates TLS and authenticates the
//! client; [`upstream`] logs in to the target with the stored credential; [`session`] relays
//! bytes in both directions while [`tracker`] attributes results to statements for the
//! audit; [`codec`] finds message boundaries without decoding what it does not inspect.
//! Identity, the session registry and the audit sink come from `ward-core`.

pub mod cancel;
pub mod catalog;
pub mod classify;
pub mod codec;
pub mod guard;
pub mod listener;
pub mod mask;
pub mod messages;
pub mod session;
pub mod stream;
pub mod tracker;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use ward_core::approvals::Approvals;
use ward_core::config::{Config, Limits};
use ward_core::control::Controls;
use ward_core::masking::Masking;
use ward_core::policy::Policy;
use ward_core::{AuditSink, SessionRegistry};

pub use listener::serve;

/// Everything the PostgreSQL listener needs, shared by all its connections.
pub struct PgGateway {
    /// Checks the password slot's credential (service token, IdP or CI token, ward token)
    /// and records refusals; the same one every adapter and the admin API use.
    pub auth: Arc<ward_auth::Authenticator>,
    /// What a session does once its credential expires (`identity.on_expiry`).
    pub on_expiry: ward_core::config::OnExpiry,
    pub targets: BTreeMap<String, upstream::UpstreamConnector>,
    /// TLS towards clients; `None` only when no certificate could be loaded, in which case
    /// every client is refused unless plaintext is explicitly allowed.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub allow_plaintext: bool,
    pub limits: Limits,
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    /// Strict audit: commands are forwarded only once their event is durable.
    pub audit_strict: bool,
    /// How long a command waits for durability before the session is ended unsent.
    pub durable_timeout: std::time::Duration,
    /// Strict audit: plain reads are sent while their event commits; their results wait.
    pub overlap_reads: bool,
    /// Result capture for statements no rule sets caps for (`audit.capture`).
    pub capture: ward_core::config::CaptureConfig,
    /// Whether some statement may have its result captured: `audit.capture.rows` > 0 or a
    /// rule with capture caps (kept in step with the policy on reload).
    capture_possible: AtomicBool,
    pub cancels: cancel::CancelMap,
    /// Identity locks and pauses (shared with the admin API).
    pub controls: Arc<Controls>,
    /// Statements held for approval (shared with the admin API).
    pub approvals: Arc<Approvals>,
    /// The guardrail rules; replaced as a whole when the config is reloaded.
    policy: RwLock<Arc<Policy>>,
    /// The masking rules; replaced as a whole when the config is reloaded.
    masking: RwLock<Arc<Masking>>,
    /// Bumped on every masking reload, so sessions notice with one atomic load.
    masking_generation: AtomicU64,
    /// Whether any masking rule is configured (statements then carry the column
    /// references masking needs; otherwise that work is skipped).
    masking_configured: AtomicBool,
    /// Table names per target, for masking rules written as `schema.table.column`.
    catalogs: BTreeMap<String, Arc<catalog::Catalog>>,
}

impl PgGateway {
    /// The rules in force now.
    pub fn policy(&self) -> Arc<Policy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new rules in force for every statement judged from now on.
    pub fn set_policy(&self, policy: Policy) {
        self.capture_possible.store(
            self.capture.rows > 0 || policy.captures(),
            Ordering::Release,
        );
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }

    /// The masking rules in force now.
    pub fn masking(&self) -> Arc<Masking> {
        self.masking
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Puts new masking rules in force; sessions apply them from their next result on.
    /// Cached table names are dropped too, so renamed tables are looked up again.
    pub fn set_masking(&self, masking: Masking) {
        self.masking_configured
            .store(!masking.is_empty(), Ordering::Release);
        *self.masking.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(masking);
        self.masking_generation.fetch_add(1, Ordering::AcqRel);
        for catalog in self.catalogs.values() {
            catalog.clear();
        }
    }

    /// Changes whenever the masking rules are replaced.
    pub fn masking_generation(&self) -> u64 {
        self.masking_generation.load(Ordering::Acquire)
    }

    /// Whether any statement's result may be captured into the audit (sessions then hold
    /// DataRows whole and keep result descriptions).
    pub fn capture_possible(&self) -> bool {
        self.capture_possible.load(Ordering::Acquire)
    }

    /// Whether any masking rule is configured.
    pub fn masking_configured(&self) -> bool {
        self.masking_configured.load(Ordering::Acquire)
    }

    /// The catalog cache of a target.
    pub fn catalog(&self, target: &str) -> Option<Arc<catalog::Catalog>> {
        self.catalogs.get(target).cloned()
    }
}

/// The process-wide services a gateway shares with the admin API and other adapters.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    pub controls: Arc<Controls>,
    pub approvals: Arc<Approvals>,
    /// Authentication of every kind of credential (one per process).
    pub auth: Arc<ward_auth::Authenticator>,
}

impl PgGateway {
    /// Builds the gateway from a loaded config, resolving target secrets and TLS settings.
    pub fn from_config(
        config: &Config,
        tls: Option<Arc<rustls::ServerConfig>>,
        shared: Shared,
    ) -> Result<Self, String> {
        let mut targets = BTreeMap::new();
        for (name, target) in config.postgres_targets()? {
            targets.insert(name, upstream::UpstreamConnector::new(Arc::new(target))?);
        }
        let catalogs = targets
            .iter()
            .map(|(name, c)| (name.clone(), Arc::new(catalog::Catalog::new(c.clone()))))
            .collect();
        let masking = config.masking().map_err(|e| e.to_string())?;
        let policy = config.policy().map_err(|e| e.to_string())?;
        let capture = config.audit.capture;
        Ok(PgGateway {
            capture_possible: AtomicBool::new(capture.rows > 0 || policy.captures()),
            capture,
            masking_configured: AtomicBool::new(!masking.is_empty()),
            masking_generation: AtomicU64::new(0),
            masking: RwLock::new(Arc::new(masking)),
            catalogs,
            auth: shared.auth,
            on_expiry: config.identity.on_expiry,
            targets,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            allow_plaintext: config.tls.allow_plaintext,
            limits: config.limits.clone(),
            registry: shared.registry,
            audit: shared.audit,
            audit_strict: config.audit.mode == ward_core::config::AuditMode::Strict,
            durable_timeout: config.audit.durable_timeout,
            overlap_reads: config.audit.overlap_reads,
            cancels: cancel::CancelMap::default(),
            controls: shared.controls,
            approvals: shared.approvals,
            policy: RwLock::new(Arc::new(policy)),
        })
    }
}
