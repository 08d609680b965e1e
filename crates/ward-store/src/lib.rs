//! ward's audit store: an embedded SQLite database fed by one batched writer thread.
//!
//! Why SQLite: a gateway should be useful the moment it starts, without a separate database
//! to provision, and the audit of one gateway fits comfortably in one file. WAL mode lets the
//! API read while the writer appends, and batching many events into one transaction keeps
//! the write rate far above what the data path produces.
//!
//! The pieces:
//! - [`SqliteStore`] owns a read-write connection: it creates and migrates the schema,
//!   writes batches of [`AuditEvent`]s and answers queries synchronously.
//! - [`spawn_writer`] runs a [`SqliteStore`] on a dedicated OS thread (rusqlite is
//!   blocking) that drains the bounded audit channel. It never drops events: failed batches
//!   are retried with backoff, and while it retries the channel fills up and slows the
//!   sessions down (see [`ward_core::AuditSink`]).
//! - [`StoreReader`] is the cheap, cloneable, async handle the admin API queries through.
//!
//! Timestamps are microseconds since the Unix epoch everywhere in this crate; rendering them
//! for humans is the API's job.

mod approvals;
mod auth;
pub mod chain;
mod controls;
pub mod evidence;
pub mod forward;
mod identities;
pub mod journal;
mod query;
mod retention;
mod schema;
mod tokens;
mod writer;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use ward_core::AuditEvent;

pub use approvals::{ApprovalEventFilter, ApprovalEventRecord, DEFAULT_APPROVAL_EVENTS};
pub use auth::{AuthRefusedFilter, AuthRefusedRecord, DEFAULT_AUTH_REFUSALS};
pub use controls::{ControlEventFilter, ControlEventRecord, DEFAULT_CONTROL_EVENTS};
pub use forward::{ForwardLog, LogRow};
pub use identities::IdentityUsage;
pub use retention::RetentionCounts;
pub use schema::SCHEMA_VERSION;
pub use tokens::{WardTokenFilter, WardTokenRecord};
pub use writer::{
    JournalOptions, ORPHAN_END_REASON, WriterOptions, spawn_writer, spawn_writer_with,
};

/// How long a connection waits for another connection's lock before failing with "database
/// is locked". The writer holds its lock only for one batch, so this is generous.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Shortest session id prefix accepted by [`SqliteStore::session_detail`]. Ids are UUIDv7,
/// whose first 8 hex digits already encode the start time to about a minute.
pub const MIN_PREFIX_LEN: usize = 8;

/// Most sessions one listing returns, whatever the caller asks for; keeps a careless
/// `limit` from building an enormous response.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// Sessions returned by a listing when the filter does not say (`limit: 0`).
pub const DEFAULT_LIST_LIMIT: usize = 100;

/// What went wrong in the store, phrased so the operator knows what to check.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "cannot create the audit store directory {path}: {source}; check that the parent \
         exists and is writable by ward, or set store.sqlite to another path"
    )]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot create the audit store file {path}: {source}; check that its directory is \
         writable by ward, or set store.sqlite to another path"
    )]
    CreateFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cannot open the audit store {path}: {source}; check that the file and its directory \
         are readable and writable by ward"
    )]
    Open {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "cannot create or upgrade the schema of the audit store {path}: {source}; make sure the \
         file is a ward store and is not corrupted or locked by another program"
    )]
    Schema {
        path: PathBuf,
        source: rusqlite::Error,
    },
    #[error(
        "the audit store {path} has schema version {found}, newer than this ward understands \
         ({supported}); upgrade ward, or point store.sqlite at another file"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error(
        "cannot write audit events to the store: {source}; check free disk space and that the \
         store file is writable"
    )]
    Write { source: rusqlite::Error },
    #[error("cannot read the audit store: {source}")]
    Query { source: rusqlite::Error },
    #[error(
        "session id {prefix:?} is too short: give the full session id or at least \
         {MIN_PREFIX_LEN} characters of it"
    )]
    PrefixTooShort { prefix: String },
    #[error(
        "session id prefix {prefix:?} matches several sessions (e.g. {}); give more characters \
         of the id", examples.join(", ")
    )]
    Ambiguous {
        prefix: String,
        /// A few of the matching ids, to help pick one.
        examples: Vec<String>,
    },
    #[error("cannot start the audit writer thread: {0}")]
    Spawn(std::io::Error),
    #[error("cannot use the audit journal {path}: {source}")]
    Journal {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the audit store query was interrupted: {0}")]
    Task(String),
}

impl StoreError {
    /// Whether this failure is caused by the data itself (a constraint the events violate),
    /// so that retrying the same batch can never succeed.
    pub fn is_constraint_violation(&self) -> bool {
        let source = match self {
            StoreError::Write { source } | StoreError::Query { source } => source,
            _ => return false,
        };
        source.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation)
    }
}

/// Which sessions a listing returns.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionFilter {
    /// Only sessions of this identity (exact match).
    pub identity: Option<String>,
    /// Only sessions to this target (exact match).
    pub target: Option<String>,
    /// Only sessions that started at or after this time (Unix micros).
    pub since: Option<i64>,
    /// Only sessions that started at or before this time (Unix micros).
    pub until: Option<i64>,
    /// Only sessions with a statement whose text contains this (case-insensitive).
    pub command_contains: Option<String>,
    /// Only sessions with a statement of this decision (combined with `command_contains`,
    /// the same statement must match both).
    pub decision: Option<DecisionFilter>,
    /// Most sessions to return, newest first; 0 means [`DEFAULT_LIST_LIMIT`], and anything
    /// above [`MAX_LIST_LIMIT`] is capped.
    pub limit: usize,
}

impl Default for SessionFilter {
    fn default() -> Self {
        SessionFilter {
            identity: None,
            target: None,
            since: None,
            until: None,
            command_contains: None,
            decision: None,
            limit: DEFAULT_LIST_LIMIT,
        }
    }
}

/// Which policy outcome a statement had, for finding sessions by it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DecisionFilter {
    /// Refused: denied by a rule, or denied / timed out in review.
    Denied,
    /// Held for review, whatever came of it.
    Review,
    /// Run: allowed by default or by a rule, or approved.
    Allowed,
}

impl DecisionFilter {
    /// Parses `denied`, `review` or `allowed`.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "denied" => Ok(DecisionFilter::Denied),
            "review" => Ok(DecisionFilter::Review),
            "allowed" => Ok(DecisionFilter::Allowed),
            other => Err(format!(
                "{other:?} is not a decision; use denied, review or allowed"
            )),
        }
    }

    /// The SQL condition on `st.decision` (values written by the adapters).
    pub(crate) fn condition(self) -> &'static str {
        match self {
            DecisionFilter::Denied => {
                "st.decision IN ('denied', 'review_denied', 'review_timed_out')"
            }
            DecisionFilter::Review => {
                "st.decision IN ('approved', 'review_denied', 'review_timed_out')"
            }
            DecisionFilter::Allowed => {
                "(st.decision IS NULL OR st.decision IN ('allowed', 'approved'))"
            }
        }
    }
}

/// One session as stored, with how many statements it ran.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionSummary {
    pub id: String,
    pub identity: String,
    pub target: String,
    pub protocol: String,
    pub client_addr: String,
    pub tls_version: String,
    pub client_program: Option<String>,
    /// Unix micros.
    pub started_at: i64,
    /// Unix micros; `None` while the session is live.
    pub ended_at: Option<i64>,
    pub end_reason: Option<String>,
    pub statement_count: u64,
    /// The session has not ended (no end recorded yet).
    pub active: bool,
}

/// One statement as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatementRecord {
    pub session_id: String,
    pub seq: u64,
    /// `simple`, `execute`, `prepare` or `function_call` (kept as text so that rows written
    /// by a newer ward still read).
    pub origin: String,
    pub text: String,
    pub params: Option<String>,
    /// Unix micros.
    pub started_at: i64,
    pub duration_us: i64,
    pub rows: Option<u64>,
    pub command: Option<String>,
    pub sqlstate: Option<String>,
    pub error: Option<String>,
    /// The policy decision when a rule was involved (`denied`, `approved`, …).
    pub decision: Option<String>,
    /// The rule behind `decision`.
    pub rule: Option<String>,
    /// The first rows of the result, when result capture was on for the statement (read
    /// from the statement's event in the session log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result_sample: Option<ward_core::event::ResultSample>,
}

/// A session with all its statements, in the order it ran them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionDetail {
    pub session: SessionSummary,
    pub statements: Vec<StatementRecord>,
    /// Commands recorded (strict audit) after the session's last statement result: sent to
    /// the target, but no result was recorded (ward stopped, or the session ended first).
    #[serde(default)]
    pub unanswered: Vec<ward_core::CommandEvent>,
}

/// The read-write handle on the SQLite store.
///
/// It is a plain blocking object: the writer thread owns one, and tests and tools use it
/// directly. Async code should query through a [`StoreReader`] instead.
pub struct SqliteStore {
    conn: Connection,
    path: PathBuf,
    /// Chain heads of sessions written since the store was opened (others are read back
    /// from the log when their next event comes).
    heads: std::collections::HashMap<String, chain::Head>,
    /// Signs chain heads; `None` writes an unsigned (still hash-chained) log.
    signer: Option<chain::LogSigner>,
    /// Per session with unsigned events: the position last signed and when (for
    /// time-based checkpoints).
    last_signed: std::collections::HashMap<String, (u64, std::time::Instant)>,
    /// Every commit is fsync'd (strict audit).
    durable: bool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore")
            .field("path", &self.path)
            .finish()
    }
}

impl SqliteStore {
    /// Opens the store at `path`, creating its directory, the file and the schema if they do
    /// not exist yet and upgrading an older schema. Safe to call on every start.
    pub fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })?;
        }
        create_private(path).map_err(|source| StoreError::CreateFile {
            path: path.to_path_buf(),
            source,
        })?;
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // Enough room for the writer's few statements and the queries.
        conn.set_prepared_statement_cache_capacity(32);
        schema::configure_and_migrate(&conn, path)?;
        Ok(SqliteStore {
            conn,
            path: path.to_path_buf(),
            heads: std::collections::HashMap::new(),
            signer: None,
            last_signed: std::collections::HashMap::new(),
            durable: false,
        })
    }

    /// The file this store lives in.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `events` in one transaction: all of them or none.
    ///
    /// `SessionStart` inserts the session, `Statement` inserts a statement and `SessionEnd`
    /// records when and why the session ended (the first end recorded wins).
    pub fn write_batch(&mut self, events: &[AuditEvent]) -> Result<(), StoreError> {
        self.write_events(events, None)
    }

    /// [`SqliteStore::write_batch`] for events taken from the strict-mode journal: also notes
    /// `journal_seq` as applied, in the same transaction, so no record is applied twice.
    pub fn write_journaled(
        &mut self,
        events: &[AuditEvent],
        journal_seq: u64,
    ) -> Result<(), StoreError> {
        self.write_events(events, Some(journal_seq))
    }

    fn write_events(
        &mut self,
        events: &[AuditEvent],
        journal_seq: Option<u64>,
    ) -> Result<(), StoreError> {
        let write = |source| StoreError::Write { source };
        let tx = self.conn.transaction().map_err(write)?;
        let mut pending = chain::Pending::new();
        for event in events {
            writer::write_event(&tx, event).map_err(write)?;
            chain::record(&tx, event, &self.heads, &mut pending, self.signer.as_ref())
                .map_err(write)?;
        }
        if let Some(seq) = journal_seq {
            note_journal_applied(&tx, seq).map_err(write)?;
        }
        tx.commit().map_err(write)?;
        self.commit_heads(pending, events);
        Ok(())
    }

    /// How long a write waits for another process's lock before failing (default 5 s).
    pub fn set_busy_timeout(&mut self, timeout: Duration) -> Result<(), StoreError> {
        self.conn
            .busy_timeout(timeout)
            .map_err(|source| StoreError::Write { source })
    }

    /// The sequence number of the last journal record this store holds (0: none).
    pub fn applied_journal_seq(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row(
                "SELECT applied_seq FROM journal_state WHERE id = 1",
                [],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n.max(0) as u64)
            .map_err(query::query_err)
    }

    /// Makes every transaction committed so far durable, whatever the sync mode: one
    /// commit with `synchronous = FULL` fsyncs the WAL, which holds all earlier ones.
    pub fn sync_committed(&mut self) -> Result<(), StoreError> {
        let write = |source| StoreError::Write { source };
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(write)?;
        let synced = self
            .conn
            .execute(
                "UPDATE journal_state SET applied_seq = applied_seq WHERE id = 1",
                [],
            )
            .map(|_| ());
        let restored = self.conn.pragma_update(
            None,
            "synchronous",
            if self.durable { "FULL" } else { "NORMAL" },
        );
        synced.and(restored).map_err(write)
    }

    /// Makes every commit durable before it returns (`PRAGMA synchronous = FULL`: the WAL is
    /// fsync'd at each commit). Strict audit mode needs it: a command is forwarded only once
    /// its event survives a crash of ward or of the machine.
    pub fn set_durable_commits(&mut self) -> Result<(), StoreError> {
        self.conn
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|source| StoreError::Write { source })?;
        self.durable = true;
        Ok(())
    }

    /// Whether commits are fsync'd (see [`SqliteStore::set_durable_commits`]).
    pub fn durable_commits(&self) -> bool {
        self.durable
    }

    /// Signs the head of every session whose newest events have gone unsigned for
    /// `interval` (time-based checkpoints: a gateway killed during a quiet, long session
    /// still leaves a recently signed prefix).
    pub fn sign_due_heads(&mut self, interval: std::time::Duration) -> Result<usize, StoreError> {
        let Some(signer) = self.signer.as_ref() else {
            return Ok(0);
        };
        let now = std::time::Instant::now();
        let at = ward_core::time::now_micros();
        let mut signed = 0;
        for (session, head) in &self.heads {
            let (seq, when) = *self.last_signed.entry(session.clone()).or_insert((0, now));
            if head.seq > seq && now.duration_since(when) >= interval {
                chain::sign_head(&self.conn, session, *head, signer, at)
                    .map_err(|source| StoreError::Write { source })?;
                self.last_signed.insert(session.clone(), (head.seq, now));
                signed += 1;
            }
        }
        self.last_signed.retain(|s, _| self.heads.contains_key(s));
        Ok(signed)
    }

    /// Signs chain heads from now on (ward serve passes its key; without one the log is
    /// hash-chained but unsigned).
    pub fn set_signer(&mut self, signer: chain::LogSigner) {
        self.signer = Some(signer);
    }

    /// Takes the signer (to move it to a reopened store).
    pub fn take_signer(&mut self) -> Option<chain::LogSigner> {
        self.signer.take()
    }

    /// Remembers the heads of a committed transaction; ended sessions are forgotten.
    pub(crate) fn commit_heads(&mut self, pending: chain::Pending, events: &[AuditEvent]) {
        self.heads.extend(pending);
        for event in events {
            if let AuditEvent::SessionEnd(e) = event {
                self.heads.remove(e.session_id.as_str());
            }
        }
    }

    /// Verifies the stored log of `session_id` (see [`chain::verify_session`]).
    pub fn verify_session(
        &self,
        session_id: &str,
        public_key: &[u8; 32],
    ) -> Result<chain::Verdict, StoreError> {
        chain::verify_session(&self.conn, session_id, public_key).map_err(query::query_err)
    }

    /// Every session id in the log, oldest first.
    pub fn logged_sessions(&self) -> Result<Vec<String>, StoreError> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT session_id FROM event_log GROUP BY session_id ORDER BY MIN(at), session_id",
            )
            .map_err(query::query_err)?;
        let ids = stmt
            .query_map([], |row| row.get(0))
            .map_err(query::query_err)?;
        ids.collect::<Result<Vec<String>, _>>()
            .map_err(query::query_err)
    }

    /// Marks sessions left open by a previous run as ended.
    ///
    /// Only one ward process writes a store, so when its writer starts no session recorded
    /// earlier can still be live; without this, sessions cut off by a crash or a kill would
    /// show as live forever. Their end time is the last moment the audit knows about (the end
    /// of their last statement, else their start). Returns how many sessions were closed.
    pub fn close_orphaned_sessions(&mut self, reason: &str) -> Result<usize, StoreError> {
        self.conn
            .execute(
                "UPDATE sessions SET
                    ended_at = MAX(started_at, COALESCE(
                        (SELECT MAX(st.started_at + st.duration_us) FROM statements st
                          WHERE st.session_id = sessions.id), started_at)),
                    end_reason = ?1
                 WHERE ended_at IS NULL",
                [reason],
            )
            .map_err(|source| StoreError::Write { source })
    }

    /// Sessions matching `filter`, newest first.
    pub fn list_sessions(&self, filter: &SessionFilter) -> Result<Vec<SessionSummary>, StoreError> {
        query::list_sessions(&self.conn, filter)
    }

    /// A session and its statements, by full id or by a unique prefix of at least
    /// [`MIN_PREFIX_LEN`] characters. `Ok(None)` when nothing matches.
    /// The terminal recording of the session `session_id` (its full id), oldest first.
    pub fn terminal_events(
        &self,
        session_id: &str,
    ) -> Result<Vec<ward_core::event::TerminalEvent>, StoreError> {
        query::terminal_events(&self.conn, session_id)
    }

    pub fn session_detail(&self, id_or_prefix: &str) -> Result<Option<SessionDetail>, StoreError> {
        query::session_detail(&self.conn, id_or_prefix)
    }

    /// The locks and pauses recorded as in force, for [`ward_core::control::Controls::load`]
    /// at start (locks that have expired are included; `load` skips them).
    pub fn controls(&self) -> Result<ward_core::control::ControlState, StoreError> {
        controls::load_controls(&self.conn)
    }

    /// Recorded approval steps matching `filter` (one request's oldest first, otherwise
    /// newest first).
    pub fn approval_events(
        &self,
        filter: &ApprovalEventFilter,
    ) -> Result<Vec<ApprovalEventRecord>, StoreError> {
        approvals::approval_events(&self.conn, filter)
    }

    /// Recorded control actions matching `filter`, newest first.
    pub fn control_events(
        &self,
        filter: &ControlEventFilter,
    ) -> Result<Vec<ControlEventRecord>, StoreError> {
        controls::control_events(&self.conn, filter)
    }

    /// The ward tokens usable at `now` (Unix micros), for `ward serve` to load at start.
    pub fn active_ward_tokens(&self, now: i64) -> Result<Vec<WardTokenRecord>, StoreError> {
        tokens::active_tokens(&self.conn, now)
    }

    /// Every identity with a recorded session: count, latest start, its groups and
    /// credential (see [`IdentityUsage`]).
    pub fn identity_usage(&self) -> Result<Vec<IdentityUsage>, StoreError> {
        identities::identity_usage(&self.conn)
    }
}

/// Creates the store file readable by its owner only, if it does not exist yet. The audit
/// holds SQL text and parameters, which can be sensitive; SQLite gives its `-wal` and `-shm`
/// files the same permissions as the database file.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// The admin API's handle on the store: cheap to clone, safe to use from async code.
///
/// Each query opens its own short-lived, query-only connection inside
/// [`tokio::task::spawn_blocking`]. This was chosen over a shared `Mutex<Connection>`
/// because:
/// - in WAL mode SQLite readers never block the writer or each other, and separate
///   connections keep it that way; a shared connection would serialize every API request
///   behind the slowest one (e.g. a session with many statements);
/// - the blocking SQLite calls stay off the async worker threads that relay client traffic;
/// - opening a connection costs well under a millisecond, which is nothing for an admin API
///   that serves people and scripts, not the data path;
/// - there is no connection state to go stale or be poisoned by a panic.
#[derive(Clone, Debug)]
pub struct StoreReader {
    path: Arc<PathBuf>,
}

impl StoreReader {
    /// A reader for the store at `path`, creating the store (and its schema) if needed, so
    /// that the API can start before the first event is written.
    pub fn open(path: &Path) -> Result<StoreReader, StoreError> {
        drop(SqliteStore::open(path)?);
        Ok(StoreReader {
            path: Arc::new(path.to_path_buf()),
        })
    }

    /// A reader for an existing store at `path`, without touching the file now. Use it when
    /// the store was already opened (e.g. by [`spawn_writer`]); queries fail with
    /// [`StoreError::Open`] if the file does not exist.
    pub fn new(path: PathBuf) -> StoreReader {
        StoreReader {
            path: Arc::new(path),
        }
    }

    /// The file this reader queries.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Sessions matching `filter`, newest first (see [`SqliteStore::list_sessions`]).
    pub async fn list_sessions(
        &self,
        filter: SessionFilter,
    ) -> Result<Vec<SessionSummary>, StoreError> {
        self.run(move |conn| query::list_sessions(conn, &filter))
            .await
    }

    /// A session and its statements (see [`SqliteStore::session_detail`]).
    pub async fn session_detail(
        &self,
        id_or_prefix: &str,
    ) -> Result<Option<SessionDetail>, StoreError> {
        let id = id_or_prefix.to_string();
        self.run(move |conn| query::session_detail(conn, &id)).await
    }

    /// The terminal recording of the session `session_id` (its full id), oldest first.
    pub async fn terminal_events(
        &self,
        session_id: &str,
    ) -> Result<Vec<ward_core::event::TerminalEvent>, StoreError> {
        let id = session_id.to_string();
        self.run(move |conn| query::terminal_events(conn, &id))
            .await
    }

    /// Recorded approval steps matching `filter` (one request's oldest first, otherwise
    /// newest first).
    pub async fn approval_events(
        &self,
        filter: ApprovalEventFilter,
    ) -> Result<Vec<ApprovalEventRecord>, StoreError> {
        self.run(move |conn| approvals::approval_events(conn, &filter))
            .await
    }

    /// Recorded control actions matching `filter`, newest first.
    pub async fn control_events(
        &self,
        filter: ControlEventFilter,
    ) -> Result<Vec<ControlEventRecord>, StoreError> {
        self.run(move |conn| controls::control_events(conn, &filter))
            .await
    }

    /// Ward tokens matching `filter`, newest first.
    pub async fn ward_tokens(
        &self,
        filter: WardTokenFilter,
    ) -> Result<Vec<WardTokenRecord>, StoreError> {
        self.run(move |conn| tokens::list_tokens(conn, &filter))
            .await
    }

    /// Every identity with a recorded session (see [`SqliteStore::identity_usage`]).
    pub async fn identity_usage(&self) -> Result<Vec<IdentityUsage>, StoreError> {
        self.run(identities::identity_usage).await
    }

    /// One ward token by its public id.
    pub async fn ward_token(&self, token_id: &str) -> Result<Option<WardTokenRecord>, StoreError> {
        let id = token_id.to_string();
        self.run(move |conn| tokens::token(conn, &id)).await
    }

    /// Records a control action and applies it to the persisted locks and pauses, and
    /// returns once it is committed.
    ///
    /// The one write made through this otherwise read-only handle, on its own short-lived
    /// read-write connection, rather than through the audit queue: when the admin API says
    /// an identity is locked, the lock must already be on disk and survive a crash of ward a
    /// moment later, which the batched writer (which lingers between batches) cannot
    /// promise. SQLite serializes this transaction with the writer's batches (busy timeout).
    pub async fn record_control(
        &self,
        event: ward_core::event::ControlEvent,
    ) -> Result<(), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let write = |source| StoreError::Write { source };
            let mut conn = open_writer(&path)?;
            let tx = conn.transaction().map_err(write)?;
            controls::write_control(&tx, &event).map_err(write)?;
            tx.commit().map_err(write)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }

    async fn run<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || {
            let conn = open_reader(&path)?;
            f(&conn)
        })
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
    }
}

/// A read-write connection on an existing store (see [`StoreReader::record_control`]);
/// like [`open_reader`], it never creates the file.
fn open_writer(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    Ok(conn)
}

/// A query-only connection on an existing store. It is opened read-write (but with
/// `query_only`) because a read-only connection cannot always open a WAL database whose
/// shared-memory file does not exist yet; and without `CREATE`, so a store that was deleted
/// under us is reported instead of silently recreated empty.
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    conn.pragma_update(None, "query_only", true)
        .map_err(open_err)?;
    Ok(conn)
}

/// Notes journal record `seq` as applied (inside the transaction that stored its events).
pub(crate) fn note_journal_applied(conn: &Connection, seq: u64) -> rusqlite::Result<()> {
    conn.prepare_cached("UPDATE journal_state SET applied_seq = ?1 WHERE id = 1")?
        .execute([i64::try_from(seq).unwrap_or(i64::MAX)])
        .map(|_| ())
}

#[cfg(test)]
mod tests;
