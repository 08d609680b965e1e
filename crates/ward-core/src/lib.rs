//! The protocol-agnostic core of ward.
//!
//! Adapters (PostgreSQL today; SSH, MySQL and Kubernetes later) turn wire traffic into
//! sessions and statements; this crate owns everything they share so that no adapter keeps a
//! second copy of it: the configuration model, identities and token checks, target
//! definitions with their stored credentials, the registry of live sessions, and the audit
//! events with the bounded sink that carries them to the store.

pub mod accept;
pub mod approvals;
pub mod audit;
pub mod config;
pub mod control;
pub mod event;
pub mod expiry;
pub mod forward;
pub mod identity;
pub mod masking;
pub mod policy;
pub mod registry;
pub mod secret;
pub mod ssh_config;
pub mod time;

pub use audit::{
    AuditClosed, AuditReceiver, AuditSink, NotDurable, PendingDurable, Queued, ReleaseBarrier,
};
pub use config::{Config, ConfigError};
pub use event::{AuditEvent, CommandEvent, SessionEnd, SessionId, SessionStart, StatementEvent};
pub use identity::{AuthError, Identity, TokenBook};
pub use registry::{LiveSession, SessionRegistry};
