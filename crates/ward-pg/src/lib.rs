//! ward's PostgreSQL adapter.
//!
//! Same shape as every adapter: [`listener`] accepts, negotiates TLS and authenticates the
//! client; [`upstream`] logs in to the target with the stored credential; [`session`] relays
//! bytes in both directions while [`tracker`] attributes results to statements for the
//! audit; [`codec`] finds message boundaries without decoding what it does not inspect.
//! Identity, the session registry and the audit sink come from `ward-core`.

pub mod cancel;
pub mod classify;
pub mod codec;
pub mod guard;
pub mod listener;
pub mod messages;
pub mod session;
pub mod stream;
pub mod tracker;
pub mod upstream;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use ward_core::approvals::Approvals;
use ward_core::config::{Config, Limits};
use ward_core::control::Controls;
use ward_core::policy::Policy;
use ward_core::{AuditSink, SessionRegistry, TokenBook};

pub use listener::serve;

/// Everything the PostgreSQL listener needs, shared by all its connections.
pub struct PgGateway {
    pub tokens: TokenBook,
    pub targets: BTreeMap<String, upstream::UpstreamConnector>,
    /// TLS towards clients; `None` only when no certificate could be loaded, in which case
    /// every client is refused unless plaintext is explicitly allowed.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    pub allow_plaintext: bool,
    pub limits: Limits,
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    pub cancels: cancel::CancelMap,
    /// Identity locks and pauses (shared with the admin API).
    pub controls: Arc<Controls>,
    /// Statements held for approval (shared with the admin API).
    pub approvals: Arc<Approvals>,
    /// The guardrail rules; replaced as a whole when the config is reloaded.
    policy: RwLock<Arc<Policy>>,
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
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

/// The process-wide services a gateway shares with the admin API and other adapters.
#[derive(Clone)]
pub struct Shared {
    pub registry: Arc<SessionRegistry>,
    pub audit: AuditSink,
    pub controls: Arc<Controls>,
    pub approvals: Arc<Approvals>,
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
        Ok(PgGateway {
            tokens: config.token_book(),
            targets,
            tls: tls.map(tokio_rustls::TlsAcceptor::from),
            allow_plaintext: config.tls.allow_plaintext,
            limits: config.limits.clone(),
            registry: shared.registry,
            audit: shared.audit,
            cancels: cancel::CancelMap::default(),
            controls: shared.controls,
            approvals: shared.approvals,
            policy: RwLock::new(Arc::new(config.policy().map_err(|e| e.to_string())?)),
        })
    }
}
