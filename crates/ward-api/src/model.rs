//! The JSON shapes of the admin API.
//!
//! They are public and implement both `Serialize` and `Deserialize` so that the CLI parses
//! exactly what the server writes; a field added here shows up in both at once.
//!
//! Timestamp scheme, used everywhere: a field `X` holds the time as an RFC 3339 string (UTC,
//! millisecond precision) for people, and `X_us` holds the same time as integer microseconds
//! since the Unix epoch for programs (exact, sortable, and the unit the store uses).
//! Durations are integer microseconds in fields ending in `_us`.

use serde::{Deserialize, Serialize};
use ward_core::time::format_micros;
use ward_store::{SessionDetail, SessionSummary, StatementRecord};

/// One session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionView {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub protocol: String,
    pub client_addr: String,
    pub tls_version: String,
    pub client_program: Option<String>,
    pub started_at: String,
    pub started_at_us: i64,
    /// `None` while the session is live.
    pub ended_at: Option<String>,
    pub ended_at_us: Option<i64>,
    pub end_reason: Option<String>,
    pub statement_count: u64,
    /// Whether the session is still live (no end recorded).
    pub active: bool,
}

impl From<SessionSummary> for SessionView {
    fn from(s: SessionSummary) -> Self {
        SessionView {
            started_at: format_micros(s.started_at),
            started_at_us: s.started_at,
            ended_at: s.ended_at.map(format_micros),
            ended_at_us: s.ended_at,
            id: s.id,
            identity: s.identity,
            target: s.target,
            protocol: s.protocol,
            client_addr: s.client_addr,
            tls_version: s.tls_version,
            client_program: s.client_program,
            end_reason: s.end_reason,
            statement_count: s.statement_count,
            active: s.active,
        }
    }
}

/// One statement of a session.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementView {
    /// 1-based position in the session.
    pub seq: u64,
    /// `simple`, `execute`, `prepare` or `function_call`.
    pub origin: String,
    pub text: String,
    pub params: Option<String>,
    pub started_at: String,
    pub started_at_us: i64,
    pub duration_us: i64,
    pub rows: Option<u64>,
    pub command: Option<String>,
    pub sqlstate: Option<String>,
    pub error: Option<String>,
}

impl From<StatementRecord> for StatementView {
    fn from(s: StatementRecord) -> Self {
        StatementView {
            seq: s.seq,
            origin: s.origin,
            text: s.text,
            params: s.params,
            started_at: format_micros(s.started_at),
            started_at_us: s.started_at,
            duration_us: s.duration_us,
            rows: s.rows,
            command: s.command,
            sqlstate: s.sqlstate,
            error: s.error,
        }
    }
}

/// `GET /api/v1/sessions`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionList {
    pub sessions: Vec<SessionView>,
}

/// `GET /api/v1/sessions/{id}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetailView {
    pub session: SessionView,
    pub statements: Vec<StatementView>,
}

impl From<SessionDetail> for SessionDetailView {
    fn from(d: SessionDetail) -> Self {
        SessionDetailView {
            session: d.session.into(),
            statements: d.statements.into_iter().map(Into::into).collect(),
        }
    }
}

/// Every error response: a sentence saying what went wrong and what to do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: String,
}

/// `/healthz` and `/readyz`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Status {
    pub status: String,
}
