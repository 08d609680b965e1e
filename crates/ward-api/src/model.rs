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
    /// The policy decision when a rule was involved (`denied`, `approved`, …).
    #[serde(default)]
    pub decision: Option<String>,
    /// The rule behind `decision`.
    #[serde(default)]
    pub rule: Option<String>,
    /// The first rows of the result, when result capture was on (`audit.capture`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_sample: Option<ward_core::event::ResultSample>,
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
            decision: s.decision,
            rule: s.rule,
            result_sample: s.result_sample,
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
    /// Commands sent to the target after the last recorded result, with no result of their
    /// own (ward stopped or the session ended first); strict audit mode only.
    #[serde(default)]
    pub unanswered: Vec<UnansweredView>,
}

/// A command that was sent but whose result was never recorded.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnansweredView {
    /// `simple`, `execute` or `function_call`.
    pub origin: String,
    pub text: String,
    pub params: Option<String>,
    /// When ward recorded it, just before sending it.
    pub sent_at: String,
    pub sent_at_us: i64,
    pub decision: Option<String>,
    pub rule: Option<String>,
}

impl From<SessionDetail> for SessionDetailView {
    fn from(d: SessionDetail) -> Self {
        SessionDetailView {
            session: d.session.into(),
            statements: d.statements.into_iter().map(Into::into).collect(),
            unanswered: d
                .unanswered
                .into_iter()
                .map(|c| UnansweredView {
                    origin: c.origin.as_str().to_string(),
                    text: c.text.to_string(),
                    params: c.params,
                    sent_at: format_micros(c.at),
                    sent_at_us: c.at,
                    decision: c.decision,
                    rule: c.rule,
                })
                .collect(),
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

// Containment: kill, lock, unlock, pause, resume (see the crate docs for the endpoints).

/// Body of `POST /api/v1/identities/{name}/lock`; every field is optional and an empty body
/// is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockRequest {
    /// Why; shown to clients that are refused and recorded in the audit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How long the lock lasts, e.g. `2h`, `30m`, `7d`; absent means until unlocked.
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// Body of kill, unlock, pause and resume; optional, and an empty body is allowed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReasonRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A lock in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    pub identity: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    pub at_us: i64,
    /// When the lock lapses; `None` = until unlocked.
    pub until: Option<String>,
    pub until_us: Option<i64>,
}

impl From<ward_core::control::LockInfo> for LockView {
    fn from(l: ward_core::control::LockInfo) -> Self {
        LockView {
            at: format_micros(l.at),
            at_us: l.at,
            until: l.until.map(format_micros),
            until_us: l.until,
            identity: l.identity,
            reason: l.reason,
            by: l.by,
        }
    }
}

/// A pause in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseView {
    pub identity: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    pub at_us: i64,
    /// Statements waiting for `resume` right now.
    pub held_statements: u64,
    /// Live sessions of the identity (connected, their statements held).
    pub live_sessions: u64,
}

impl PauseView {
    pub fn new(p: ward_core::control::PauseInfo, held_statements: u64, live_sessions: u64) -> Self {
        PauseView {
            at: format_micros(p.at),
            at_us: p.at,
            identity: p.identity,
            reason: p.reason,
            by: p.by,
            held_statements,
            live_sessions,
        }
    }
}

/// `GET /api/v1/controls`: everything in force.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlsView {
    pub locks: Vec<LockView>,
    pub pauses: Vec<PauseView>,
}

/// `POST /api/v1/sessions/{id}/kill`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillResult {
    pub session_id: String,
    pub identity: String,
    pub target: String,
    pub reason: String,
    pub by: String,
    pub at: String,
    pub at_us: i64,
}

/// `POST /api/v1/identities/{name}/lock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockResult {
    pub lock: LockView,
    /// How many live sessions of the identity were ended.
    pub sessions_ended: u64,
    pub ended_sessions: Vec<String>,
    /// The lock this one replaced, if the identity was already locked.
    pub replaced: Option<LockView>,
}

/// `DELETE /api/v1/identities/{name}/lock` and `POST …/unlock`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnlockResult {
    pub identity: String,
    /// Whether a lock was in force (false: nothing to do, or it had already lapsed).
    pub was_locked: bool,
    /// The lock that was lifted, if there was one.
    pub lock: Option<LockView>,
}

/// `POST /api/v1/identities/{name}/pause`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PauseResult {
    /// The pause in force (the earlier one when the identity was already paused).
    pub pause: PauseView,
    pub already_paused: bool,
}

/// `POST /api/v1/identities/{name}/resume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeResult {
    pub identity: String,
    pub was_paused: bool,
    /// Held statements that were released.
    pub released_statements: u64,
    /// The pause that was lifted, if there was one.
    pub pause: Option<PauseView>,
}

/// One recorded containment action.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEventView {
    pub id: i64,
    /// `lock`, `unlock`, `pause`, `resume` or `kill`.
    pub action: String,
    pub identity: String,
    pub session_id: Option<String>,
    pub reason: String,
    pub by: String,
    pub at: String,
    pub at_us: i64,
    pub until: Option<String>,
    pub until_us: Option<i64>,
    pub sessions_ended: u64,
}

impl From<ward_store::ControlEventRecord> for ControlEventView {
    fn from(e: ward_store::ControlEventRecord) -> Self {
        ControlEventView {
            at: format_micros(e.at),
            at_us: e.at,
            until: e.until.map(format_micros),
            until_us: e.until,
            id: e.id,
            action: e.action,
            identity: e.identity,
            session_id: e.session_id,
            reason: e.reason,
            by: e.by,
            sessions_ended: e.sessions_ended,
        }
    }
}

/// `GET /api/v1/controls/events`, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEventList {
    pub events: Vec<ControlEventView>,
}

/// One refused login (`GET /api/v1/auth/refusals`), from the gateway chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusalView {
    /// The event's position in the session log (recording order).
    pub id: i64,
    /// Its position in the gateway chain.
    pub seq: i64,
    pub at: String,
    pub at_us: i64,
    pub protocol: String,
    pub target: String,
    /// The user name the client sent (not used as the identity for IdP tokens).
    pub claimed_user: String,
    /// The identity a verified credential proved, when the refusal came after that.
    pub identity: Option<String>,
    /// The client's `ip:port`.
    pub peer: String,
    /// `token` or `jwt`.
    pub source: String,
    /// Stable short code, e.g. `bad_token`, `expired`, `bad_signature`, `locked`.
    pub code: String,
    pub reason: String,
}

impl From<ward_store::AuthRefusedRecord> for AuthRefusalView {
    fn from(r: ward_store::AuthRefusedRecord) -> Self {
        let e = r.event;
        AuthRefusalView {
            id: r.id,
            seq: r.seq,
            at: format_micros(e.at),
            at_us: e.at,
            protocol: e.protocol,
            target: e.target,
            claimed_user: e.claimed_user,
            identity: e.identity,
            peer: e.peer,
            source: e.source,
            code: e.code,
            reason: e.reason,
        }
    }
}

/// `GET /api/v1/auth/refusals`: refused logins, newest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusalList {
    pub refusals: Vec<AuthRefusalView>,
}
