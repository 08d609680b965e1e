//! The store's schema and its migrations.
//!
//! The schema version lives in SQLite's `PRAGMA user_version`, so a later ward can tell which
//! migrations an existing file still needs: each step below runs once, in order, inside one
//! transaction, and bumps the version. A file from a newer ward is refused rather than
//! misread.

use crate::StoreError;
use rusqlite::{Connection, Transaction, TransactionBehavior};
use std::path::Path;

/// The schema version this build writes and understands.
pub const SCHEMA_VERSION: i64 = 8;

/// Version 1: sessions and their statements.
///
/// Times are Unix microseconds. There is deliberately no foreign key from statements to
/// sessions: the writer must never get stuck on an event whose session row it has not seen
/// (the audit keeps the statement either way). `statements` is a WITHOUT ROWID table: its
/// primary key is the only B-tree, so each recorded statement costs one tree insert instead
/// of two, and a session's statements are stored together in order.
pub(crate) const V1: &str = "
CREATE TABLE IF NOT EXISTS sessions (
    id             TEXT PRIMARY KEY NOT NULL,
    identity       TEXT NOT NULL,
    target         TEXT NOT NULL,
    protocol       TEXT NOT NULL,
    client_addr    TEXT NOT NULL,
    tls_version    TEXT NOT NULL,
    client_program TEXT,
    started_at     INTEGER NOT NULL,
    ended_at       INTEGER,
    end_reason     TEXT
);
CREATE TABLE IF NOT EXISTS statements (
    session_id  TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    origin      TEXT NOT NULL,
    text        TEXT NOT NULL,
    params      TEXT,
    started_at  INTEGER NOT NULL,
    duration_us INTEGER NOT NULL,
    rows        INTEGER,
    command     TEXT,
    sqlstate    TEXT,
    error       TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sessions_by_start ON sessions (started_at);
CREATE INDEX IF NOT EXISTS sessions_by_identity ON sessions (identity, started_at);
CREATE INDEX IF NOT EXISTS sessions_by_target ON sessions (target, started_at);
";

/// Version 2: containment. `control_events` is the audit of every lock, unlock, pause,
/// resume and kill; `controls` holds the locks and pauses in force (one row per identity and
/// kind), kept in step with the events by the same transaction, so that `ward serve` restores
/// them at start without replaying history. Expired locks are left in `controls` and skipped
/// when loaded; the next lock or unlock of that identity replaces or removes the row.
const V2: &str = "
CREATE TABLE IF NOT EXISTS control_events (
    id             INTEGER PRIMARY KEY,
    action         TEXT NOT NULL,
    identity       TEXT NOT NULL,
    session_id     TEXT,
    reason         TEXT NOT NULL,
    actor          TEXT NOT NULL,
    until          INTEGER,
    at             INTEGER NOT NULL,
    sessions_ended INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS control_events_by_at ON control_events (at);
CREATE INDEX IF NOT EXISTS control_events_by_identity ON control_events (identity, at);
CREATE TABLE IF NOT EXISTS controls (
    identity TEXT NOT NULL,
    kind     TEXT NOT NULL CHECK (kind IN ('lock', 'pause')),
    reason   TEXT NOT NULL,
    actor    TEXT NOT NULL,
    at       INTEGER NOT NULL,
    until    INTEGER,
    PRIMARY KEY (identity, kind)
) WITHOUT ROWID;
";

/// Version 3: approvals. `approval_events` is the audit of every approval request: its
/// opening and each decision with who made it (`actor`: an identity or `admin`). Append-only,
/// one row per step, read in time order (see `approvals.rs`).
const V3: &str = "
CREATE TABLE IF NOT EXISTS approval_events (
    id         INTEGER PRIMARY KEY,
    request_id TEXT NOT NULL,
    state      TEXT NOT NULL,
    session_id TEXT NOT NULL,
    identity   TEXT NOT NULL,
    target     TEXT NOT NULL,
    command    TEXT NOT NULL,
    rule       TEXT NOT NULL,
    actor      TEXT,
    reason     TEXT,
    at         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS approval_events_by_request ON approval_events (request_id, at);
CREATE INDEX IF NOT EXISTS approval_events_by_at ON approval_events (at);
CREATE INDEX IF NOT EXISTS approval_events_by_identity ON approval_events (identity, at);
";

/// Version 4: the policy decision behind each statement (`denied`, `approved`, …) and the rule
/// that made it; NULL for statements allowed without any rule involved.
const V4: &str = "
ALTER TABLE statements ADD COLUMN decision TEXT;
ALTER TABLE statements ADD COLUMN rule TEXT;
";

/// Sets the connection's journal and sync modes, then brings the schema up to
/// [`SCHEMA_VERSION`].
/// The tamper-evident session log (see `chain`): every event's exact bytes with its hash
/// chain, and the signed chain heads.
const V5: &str = "
CREATE TABLE IF NOT EXISTS event_log (
    id         INTEGER PRIMARY KEY,
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    at         INTEGER NOT NULL,
    body       TEXT NOT NULL,
    hash       BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS event_log_by_session ON event_log (session_id, seq);
CREATE TABLE IF NOT EXISTS chain_signatures (
    session_id TEXT NOT NULL,
    seq        INTEGER NOT NULL,
    hash       BLOB NOT NULL,
    signature  BLOB NOT NULL,
    key_id     TEXT NOT NULL,
    signed_at  INTEGER NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
";

/// Version 6: SIEM forwarding. Each forward sink's cursor: the last `event_log.id` it
/// delivered (see `forward.rs`); the log itself is the spool.
const V6: &str = "
CREATE TABLE IF NOT EXISTS forward_cursors (
    sink       TEXT PRIMARY KEY NOT NULL,
    last_id    INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;
";

/// Version 7: the strict-mode journal's progress. `applied_seq` is the sequence number of the
/// last journal record whose events are in this store, updated in the same transaction as
/// those events, so that records are applied exactly once (see `journal.rs`).
const V7: &str = "
CREATE TABLE IF NOT EXISTS journal_state (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    applied_seq INTEGER NOT NULL
);
INSERT OR IGNORE INTO journal_state (id, applied_seq) VALUES (1, 0);
";

/// Version 8: ward tokens (`ward login` session tokens and tokens minted for bots), the
/// state rebuilt at start from `token_issued` and `token_revoked` events, which are written
/// in the same transaction. Only the secret's hash is kept.
const V8: &str = "
CREATE TABLE IF NOT EXISTS ward_tokens (
    token_id   TEXT PRIMARY KEY NOT NULL,
    hash       TEXT NOT NULL UNIQUE,
    identity   TEXT NOT NULL,
    groups     TEXT NOT NULL,
    attributes TEXT NOT NULL,
    targets    TEXT,
    kind       TEXT NOT NULL,
    issued_by  TEXT NOT NULL,
    issued_at  INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER,
    revoked_by TEXT,
    revoke_reason TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ward_tokens_identity ON ward_tokens (identity);
";

pub(crate) fn configure_and_migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let schema_err = |source| StoreError::Schema {
        path: path.to_path_buf(),
        source,
    };
    // WAL: readers (the API) and the writer do not block each other. NORMAL sync is safe
    // with WAL (no corruption on power loss; at worst the last transactions are lost) and
    // avoids an fsync per batch.
    let mode: String = conn
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(schema_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(
            path = %path.display(),
            journal_mode = %mode,
            "the audit store could not switch to WAL mode; API reads may wait for writes"
        );
    }
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(schema_err)?;

    let current = user_version(conn).map_err(schema_err)?;
    if current == SCHEMA_VERSION {
        return Ok(());
    }
    check_not_too_new(current, path)?;

    // IMMEDIATE takes the write lock up front, so two processes opening a fresh store at the
    // same time migrate one after the other instead of failing half-way.
    let tx =
        Transaction::new_unchecked(conn, TransactionBehavior::Immediate).map_err(schema_err)?;
    let current = user_version(&tx).map_err(schema_err)?;
    check_not_too_new(current, path)?;
    if current < 1 {
        tx.execute_batch(V1).map_err(schema_err)?;
    }
    if current < 2 {
        tx.execute_batch(V2).map_err(schema_err)?;
    }
    if current < 3 {
        tx.execute_batch(V3).map_err(schema_err)?;
    }
    if current < 4 {
        tx.execute_batch(V4).map_err(schema_err)?;
    }
    if current < 5 {
        tx.execute_batch(V5).map_err(schema_err)?;
    }
    if current < 6 {
        tx.execute_batch(V6).map_err(schema_err)?;
    }
    if current < 7 {
        tx.execute_batch(V7).map_err(schema_err)?;
    }
    if current < 8 {
        tx.execute_batch(V8).map_err(schema_err)?;
    }
    // Later versions: `if current < 4 { tx.execute_batch(V4)?; }` and so on.
    if current != SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(schema_err)?;
        tracing::info!(
            path = %path.display(),
            from = current,
            to = SCHEMA_VERSION,
            "audit store schema created or upgraded"
        );
    }
    tx.commit().map_err(schema_err)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |row| row.get(0))
}

fn check_not_too_new(found: i64, path: &Path) -> Result<(), StoreError> {
    if found > SCHEMA_VERSION {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}
