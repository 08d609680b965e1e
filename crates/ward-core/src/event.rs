//! Audit events: what every adapter reports about sessions and the statements in them.
//!
//! Events are plain data, built on the data path and written by the store's batched writer.
//! Field names are part of the API and the store schema; add fields, don't rename them.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::Arc;

/// A session's identifier: a UUIDv7, so ids sort by start time and are unguessable enough
/// to be shown to clients in error messages.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SessionId(pub Arc<str>);

impl SessionId {
    pub fn generate() -> Self {
        SessionId(uuid::Uuid::now_v7().to_string().into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A session was authenticated and connected to its target.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionStart {
    pub session_id: SessionId,
    pub identity: String,
    pub target: String,
    /// `postgres` today; `ssh`, `mysql`, `kubernetes` later.
    pub protocol: String,
    pub client_addr: String,
    /// e.g. `TLSv1.3`, or `none` when the config allowed plaintext.
    pub tls_version: String,
    /// What the client called itself (PostgreSQL `application_name`), if anything.
    pub client_program: Option<String>,
    pub started_at: i64,
}

/// How a statement reached the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatementOrigin {
    /// A statement of a simple-protocol Query message (one event per statement).
    Simple,
    /// An Execute of a portal in the extended protocol.
    Execute,
    /// A Parse that failed, so no Execute could follow.
    Prepare,
    /// A FunctionCall message (the legacy fast-path interface).
    FunctionCall,
}

impl StatementOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementOrigin::Simple => "simple",
            StatementOrigin::Execute => "execute",
            StatementOrigin::Prepare => "prepare",
            StatementOrigin::FunctionCall => "function_call",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "simple" => StatementOrigin::Simple,
            "execute" => StatementOrigin::Execute,
            "prepare" => StatementOrigin::Prepare,
            "function_call" => StatementOrigin::FunctionCall,
            _ => return None,
        })
    }
}

/// One statement the target ran (or refused), in the order the session ran them.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatementEvent {
    pub session_id: SessionId,
    /// 1-based position in the session.
    pub seq: u64,
    pub origin: StatementOrigin,
    /// The SQL text (for an Execute, the text its prepared statement was parsed from).
    pub text: Arc<str>,
    /// Bound parameters rendered for humans and capped in size; `None` when there were none.
    pub params: Option<String>,
    pub started_at: i64,
    pub duration_us: i64,
    /// Rows returned or affected, from CommandComplete (or counted DataRows for a suspended
    /// portal).
    pub rows: Option<u64>,
    /// The command tag's verb, e.g. `SELECT`, `INSERT`, `COPY`.
    pub command: Option<String>,
    /// SQLSTATE when the statement failed.
    pub sqlstate: Option<String>,
    pub error: Option<String>,
}

/// A session ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: SessionId,
    pub ended_at: i64,
    /// e.g. `client closed`, `client disconnected`, `target closed`, `killed: ...`.
    pub reason: String,
}

/// Everything the audit log records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    SessionStart(SessionStart),
    Statement(StatementEvent),
    SessionEnd(SessionEnd),
}
