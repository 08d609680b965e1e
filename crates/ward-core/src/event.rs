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
    /// The identity's groups when the session started (from its token or IdP claims).
    #[serde(default)]
    pub groups: Vec<String>,
    pub target: String,
    /// `postgres` today; `ssh`, `mysql`, `kubernetes` later.
    pub protocol: String,
    pub client_addr: String,
    /// e.g. `TLSv1.3`, or `none` when the config allowed plaintext.
    pub tls_version: String,
    /// What the client called itself (PostgreSQL `application_name`), if anything.
    pub client_program: Option<String>,
    pub started_at: i64,
    /// What proved the identity (absent in events recorded before ward recorded it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialInfo>,
}

/// The credential behind a session, for the audit: which kind, from whom, until when, and
/// the facts it carried (never the credential itself).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialInfo {
    /// `token` (a ward service token), `oidc` or `workload` (an IdP or CI token).
    pub source: String,
    /// The token's `iss`, for IdP and CI tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    /// The token's `sub`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<String>,
    /// The token's `jti`, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_id: Option<String>,
    /// When the credential expires (Unix micros); `None`: never.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// The identity's attributes: a workload token's listed claims (`ref`, `run_id`, …), and
    /// for IdP and CI tokens `pg_user`, the PostgreSQL user name the client sent (which is
    /// not used as the identity).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
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
    /// SSH: a command run with `ssh host CMD` (an exec request).
    Exec,
    /// SSH: an interactive shell.
    Shell,
    /// SSH: a subsystem such as sftp.
    Subsystem,
    /// SSH: a line typed into an interactive shell, as ward could tell it from the
    /// keystrokes (best effort; see docs/ssh.md).
    ShellLine,
    /// SSH: a port forward (`ssh -L`/`-R`) or agent forward; the text says which and where.
    Forward,
    /// SSH: one file operation inside an sftp subsystem (`rows` is its byte count).
    Sftp,
}

impl StatementOrigin {
    pub fn as_str(self) -> &'static str {
        match self {
            StatementOrigin::Simple => "simple",
            StatementOrigin::Execute => "execute",
            StatementOrigin::Prepare => "prepare",
            StatementOrigin::FunctionCall => "function_call",
            StatementOrigin::Exec => "exec",
            StatementOrigin::Shell => "shell",
            StatementOrigin::Subsystem => "subsystem",
            StatementOrigin::ShellLine => "shell_line",
            StatementOrigin::Forward => "forward",
            StatementOrigin::Sftp => "sftp",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "simple" => StatementOrigin::Simple,
            "execute" => StatementOrigin::Execute,
            "prepare" => StatementOrigin::Prepare,
            "function_call" => StatementOrigin::FunctionCall,
            "exec" => StatementOrigin::Exec,
            "shell" => StatementOrigin::Shell,
            "subsystem" => StatementOrigin::Subsystem,
            "shell_line" => StatementOrigin::ShellLine,
            "forward" => StatementOrigin::Forward,
            "sftp" => StatementOrigin::Sftp,
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
    /// The policy decision when a rule was involved (`denied`, `approved`, …); `None` for a
    /// statement allowed with no rule involved.
    #[serde(default)]
    pub decision: Option<String>,
    /// The rule behind `decision`.
    #[serde(default)]
    pub rule: Option<String>,
    /// The first rows of the result as the client received them (masked where masking
    /// applies), when result capture is on for the statement (`audit.capture`, or a rule's
    /// `capture_rows`); `None` otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_sample: Option<ResultSample>,
}

/// The first rows of a statement's result, kept as evidence (see `audit.capture`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSample {
    /// Column names, from the result's RowDescription (empty when ward never saw it).
    pub columns: Vec<String>,
    /// Values as the client received them: text-format values as text, binary-format values
    /// rendered like bound parameters (or as `\x` hex); `None` is SQL NULL.
    pub rows: Vec<Vec<Option<String>>>,
    /// More rows (or longer values) came than the row and byte caps kept.
    pub truncated: bool,
}

/// A command about to be forwarded to the target, recorded (in strict audit mode) before
/// any of it reaches the target. The [`StatementEvent`]s that follow report what the target
/// did with it; a `command` with no statement after it was sent but never answered (the
/// gateway or the session stopped first).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandEvent {
    pub session_id: SessionId,
    pub origin: StatementOrigin,
    /// The command as sent: a Query's whole text, a prepared statement's text for an
    /// Execute, `<function call oid=N>` for a FunctionCall. Masked like statement text.
    pub text: Arc<str>,
    /// Bound parameters, rendered and capped as for statements.
    pub params: Option<String>,
    /// The policy decision when a rule was involved (`allowed`, `approved`).
    #[serde(default)]
    pub decision: Option<String>,
    #[serde(default)]
    pub rule: Option<String>,
    /// Unix micros.
    pub at: i64,
}

/// Which stream of a terminal channel a [`TerminalEvent`] carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TerminalStream {
    /// What the program wrote (stdout; with a PTY, everything the terminal showed).
    Output,
    /// What the program wrote to stderr (exec channels without a PTY).
    Stderr,
    /// What the client typed or piped in.
    Input,
    /// The client's terminal changed size (`cols`, `rows`).
    Resize,
}

/// A stretch of an SSH shell or exec channel's bytes, as they passed through ward, for
/// replay (`ward replay`) and asciicast export. Bytes that arrive close together are
/// coalesced into one event (its `at` is the time of the first of them), so a bulk transfer
/// makes few events and an interactive session keeps its rhythm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TerminalEvent {
    pub session_id: SessionId,
    /// The channel within the session, numbered from 1 in the order they were opened.
    pub channel: u32,
    pub stream: TerminalStream,
    /// The bytes when they are valid UTF-8 (most terminal traffic), as text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<String>,
    /// The bytes otherwise, base64-encoded (standard alphabet, padded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base64: Option<String>,
    /// For `resize`: the new size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
    /// The stream reached `audit.terminal_limit` with this event: later bytes of it on
    /// this channel passed through ward unrecorded.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
    /// Unix micros.
    pub at: i64,
}

impl TerminalEvent {
    /// An event carrying `bytes` of `stream`, as text when they are UTF-8.
    pub fn bytes(
        session_id: SessionId,
        channel: u32,
        stream: TerminalStream,
        bytes: Vec<u8>,
        at: i64,
    ) -> TerminalEvent {
        use base64::Engine as _;
        let (text, base64) = match String::from_utf8(bytes) {
            Ok(text) => (Some(text), None),
            Err(e) => (
                None,
                Some(base64::engine::general_purpose::STANDARD.encode(e.as_bytes())),
            ),
        };
        TerminalEvent {
            session_id,
            channel,
            stream,
            text,
            base64,
            cols: None,
            rows: None,
            truncated: false,
            at,
        }
    }

    /// The bytes the event carries (empty for a resize, or undecodable base64).
    pub fn data(&self) -> Vec<u8> {
        use base64::Engine as _;
        match (&self.text, &self.base64) {
            (Some(text), _) => text.as_bytes().to_vec(),
            (None, Some(b64)) => base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap_or_default(),
            (None, None) => Vec::new(),
        }
    }
}

/// A session ended.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionEnd {
    pub session_id: SessionId,
    pub ended_at: i64,
    /// e.g. `client closed`, `client disconnected`, `target closed`, `killed: ...`.
    pub reason: String,
}

/// What happened to an approval request (see [`crate::approvals`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalEventState {
    /// A statement was held and an approval request opened.
    Requested,
    /// One approval was counted, but the rule needs more (`by` is that approver).
    PartiallyApproved,
    /// The last needed approval arrived; the statement is released (`by` gave it).
    Approved,
    /// An approver (or the requester) denied it; `reason` says why.
    Denied,
    /// Nobody decided in time; `reason` says whether `on_timeout` allowed or denied it.
    TimedOut,
    /// The client went away (or the session ended) before a decision.
    Withdrawn,
}

impl ApprovalEventState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalEventState::Requested => "requested",
            ApprovalEventState::PartiallyApproved => "partially_approved",
            ApprovalEventState::Approved => "approved",
            ApprovalEventState::Denied => "denied",
            ApprovalEventState::TimedOut => "timed_out",
            ApprovalEventState::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "requested" => ApprovalEventState::Requested,
            "partially_approved" => ApprovalEventState::PartiallyApproved,
            "approved" => ApprovalEventState::Approved,
            "denied" => ApprovalEventState::Denied,
            "timed_out" => ApprovalEventState::TimedOut,
            "withdrawn" => ApprovalEventState::Withdrawn,
            _ => return None,
        })
    }
}

impl fmt::Display for ApprovalEventState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step in the life of an approval request: its opening and every decision, each with
/// who made it, so the audit answers "who let this statement through".
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApprovalEvent {
    /// The request's id (`r-…`), as shown to the client and used by `ward approve`.
    pub request_id: String,
    pub session_id: SessionId,
    /// The identity whose statement is held.
    pub identity: String,
    pub target: String,
    /// The held command as the approver saw it.
    pub command: String,
    /// The policy rule that asked for review.
    pub rule: String,
    pub state: ApprovalEventState,
    /// Who decided: an identity name, or `admin` for the admin token; `None` for
    /// `requested`, `timed_out` and `withdrawn`.
    pub by: Option<String>,
    pub reason: Option<String>,
    /// Unix micros.
    pub at: i64,
}

/// A containment action an administrator took.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ControlAction {
    /// Refuse the identity's new sessions and end its live ones.
    Lock,
    Unlock,
    /// Hold the identity's statements; its sessions stay connected.
    Pause,
    Resume,
    /// End one live session.
    Kill,
}

impl ControlAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ControlAction::Lock => "lock",
            ControlAction::Unlock => "unlock",
            ControlAction::Pause => "pause",
            ControlAction::Resume => "resume",
            ControlAction::Kill => "kill",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "lock" => ControlAction::Lock,
            "unlock" => ControlAction::Unlock,
            "pause" => ControlAction::Pause,
            "resume" => ControlAction::Resume,
            "kill" => ControlAction::Kill,
            _ => return None,
        })
    }
}

/// An incident responder's action (lock, unlock, pause, resume, kill): audited like the
/// sessions it affects, and, for locks and pauses, what the store rebuilds the state in
/// force from after a restart.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControlEvent {
    pub action: ControlAction,
    /// The identity acted on; for a kill, the identity of the killed session.
    pub identity: String,
    /// The session a kill ended; `None` for the other actions.
    pub session_id: Option<SessionId>,
    pub reason: String,
    /// Who acted: `admin` when the admin token was used.
    pub by: String,
    /// For a lock: when it lapses (Unix micros); `None` = until unlocked.
    pub until: Option<i64>,
    /// Unix micros.
    pub at: i64,
    /// Live sessions the action ended (a kill: 1; a lock: however many the identity had).
    pub sessions_ended: u64,
}

/// A client that was refused at login: a wrong, expired or forged credential, a target it
/// may not use, a locked identity. Belongs to no session (none was opened), so it joins the
/// gateway chain; recorded without waiting, so a flood of bad logins cannot stall sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusedEvent {
    /// `postgres` today.
    pub protocol: String,
    /// The target the client asked for (the PostgreSQL database name), known or not.
    pub target: String,
    /// The user name the client sent. For a service token it is the identity it claims; for
    /// an IdP token it is not used for identity at all.
    pub claimed_user: String,
    /// The identity a verified credential proved, when the refusal came after that (a
    /// locked identity, a target it may not use); `None` otherwise.
    #[serde(default)]
    pub identity: Option<String>,
    /// The client's `ip:port`.
    pub peer: String,
    /// What the client presented: `token` (a ward service token, or anything that is not a
    /// JWT) or `jwt` (an IdP or CI token).
    pub source: String,
    /// A stable short code: for JWTs the verifier's (`expired`, `alg_none`, `bad_signature`,
    /// `unknown_kid`, `wrong_audience`, …), for service tokens `bad_token`, `expired`,
    /// `target_not_allowed`, `unknown_target`; `locked` for a locked identity.
    pub code: String,
    /// Why, in words (never the credential itself).
    pub reason: String,
    /// Unix micros.
    pub at: i64,
}

/// A ward token was issued: a short-lived session token from `ward login`, or a scoped one
/// minted for a bot with `ward token mint`. Joins the gateway chain, and is what the store
/// rebuilds the tokens in force from after a restart, so a token exists only once this
/// event is durable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenIssuedEvent {
    /// The token's public id (shown by listings, used to revoke it); not the secret.
    pub token_id: String,
    /// `sha256:<hex>` of the secret. The secret has 192 random bits, so its hash reveals
    /// nothing usable, like the hashes of service tokens in ward.yaml.
    pub hash: String,
    /// The identity a session opened with the token has.
    pub identity: String,
    pub groups: Vec<String>,
    /// Facts kept for the audit: the IdP's issuer and subject for a login, `minted_by` and
    /// `label` for a minted token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attributes: Vec<(String, String)>,
    /// Targets the token may reach; `None`: every target.
    #[serde(default)]
    pub targets: Option<Vec<String>>,
    /// `login` or `mint`.
    pub kind: String,
    /// Who asked for it: the identity that logged in or minted it.
    pub issued_by: String,
    /// Unix micros.
    pub issued_at: i64,
    /// Unix micros; every ward token expires.
    pub expires_at: i64,
}

/// A ward token was revoked: sessions can no longer be opened with it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRevokedEvent {
    pub token_id: String,
    /// The identity the token was issued to.
    pub identity: String,
    pub reason: String,
    /// Who revoked it: `admin`, or the identity itself.
    pub by: String,
    /// Unix micros.
    pub at: i64,
}

/// Everything the audit log records.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AuditEvent {
    SessionStart(SessionStart),
    Statement(StatementEvent),
    Command(CommandEvent),
    Terminal(TerminalEvent),
    SessionEnd(SessionEnd),
    Control(ControlEvent),
    Approval(ApprovalEvent),
    AuthRefused(AuthRefusedEvent),
    TokenIssued(TokenIssuedEvent),
    TokenRevoked(TokenRevokedEvent),
}
