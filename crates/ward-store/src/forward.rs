//! The store side of SIEM forwarding: the session log read as a spool, and each sink's
//! cursor.
//!
//! `event_log` is append-only and already durable before anything is forwarded, so it is
//! the forwarders' on-disk queue: a sink reads the rows after its cursor (the last
//! `event_log.id` it delivered), delivers them, and only then moves its cursor
//! (`forward_cursors`). A crash between the two re-delivers that batch: at least once.
//!
//! A forwarder uses its own connection ([`ForwardLog::open`]), never the writer's, so a slow
//! or dead receiver cannot hold up the data path. Rows are only read in short statements
//! (no long-lived read transaction that would keep the WAL from being checkpointed), and the
//! cursor update is a one-row write committed without fsync (a cursor lost to a power cut
//! means re-delivery, never loss).
//!
//! Ids are assigned in commit order by SQLite's single writer lock, so a reader that sees
//! id N has also seen every committed id below N: reading `id > cursor` never skips a row.

use crate::{BUSY_TIMEOUT, StoreError, query::query_err};
use rusqlite::{Connection, OptionalExtension, params};
use std::path::{Path, PathBuf};

/// One stored event of the session log, as a forwarder reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRow {
    /// `event_log.id`: increasing in commit order, the cursor's unit.
    pub id: i64,
    /// The session, or `gateway` for events that belong to no session.
    pub session_id: String,
    /// Position in the session's chain (1-based).
    pub seq: i64,
    /// `session_start`, `command`, `statement`, `session_end`, `approval` or `control`.
    pub kind: String,
    /// The event's time, Unix micros.
    pub at: i64,
    /// The event's exact JSON text, as hashed.
    pub body: String,
    /// SHA-256 of the previous event's hash and `body` (32 bytes when intact).
    pub hash: Vec<u8>,
}

/// The events of the log with an id above `last_id`, oldest first, at most `limit`.
pub fn events_after(
    conn: &Connection,
    last_id: i64,
    limit: usize,
) -> rusqlite::Result<Vec<LogRow>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare_cached(
        "SELECT id, session_id, seq, kind, at, body, hash FROM event_log
          WHERE id > ?1 ORDER BY id LIMIT ?2",
    )?;
    stmt.query_map(params![last_id, limit], |row| {
        Ok(LogRow {
            id: row.get(0)?,
            session_id: row.get(1)?,
            seq: row.get(2)?,
            kind: row.get(3)?,
            at: row.get(4)?,
            body: row.get(5)?,
            hash: row.get(6)?,
        })
    })?
    .collect()
}

/// The stored cursor of `sink`, or `None` before its first delivery.
pub fn cursor(conn: &Connection, sink: &str) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT last_id FROM forward_cursors WHERE sink = ?1")?
        .query_row([sink], |row| row.get(0))
        .optional()
}

/// Records that `sink` delivered everything up to `last_id` (at `now`, Unix micros).
pub fn set_cursor(conn: &Connection, sink: &str, last_id: i64, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO forward_cursors (sink, last_id, updated_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (sink) DO UPDATE SET last_id = excluded.last_id, updated_at = excluded.updated_at",
    )?
    .execute(params![sink, last_id, now])?;
    Ok(())
}

/// The newest event's id, 0 for an empty log.
pub fn max_event_id(conn: &Connection) -> rusqlite::Result<i64> {
    conn.prepare_cached("SELECT COALESCE(MAX(id), 0) FROM event_log")?
        .query_row([], |row| row.get(0))
}

/// The time (Unix micros) of the oldest event after `last_id`, `None` when there is none.
pub fn oldest_at_after(conn: &Connection, last_id: i64) -> rusqlite::Result<Option<i64>> {
    conn.prepare_cached("SELECT at FROM event_log WHERE id > ?1 ORDER BY id LIMIT 1")?
        .query_row([last_id], |row| row.get(0))
        .optional()
}

/// A forwarder's own connection to the store: reads the log, keeps the cursor.
pub struct ForwardLog {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for ForwardLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardLog")
            .field("path", &self.path)
            .finish()
    }
}

impl ForwardLog {
    /// Opens the store at `path` (creating and migrating it like [`crate::SqliteStore::open`]
    /// when needed) on a connection of its own.
    pub fn open(path: &Path) -> Result<ForwardLog, StoreError> {
        // Creates the directory, file and schema, with the store's permissions.
        drop(crate::SqliteStore::open(path)?);
        let open_err = |source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        };
        let conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        crate::schema::configure_and_migrate(&conn, path)?;
        Ok(ForwardLog {
            conn,
            path: path.to_path_buf(),
        })
    }

    /// The file this connection reads.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// See [`events_after`].
    pub fn events_after(&self, last_id: i64, limit: usize) -> Result<Vec<LogRow>, StoreError> {
        events_after(&self.conn, last_id, limit).map_err(query_err)
    }

    /// See [`cursor`].
    pub fn cursor(&self, sink: &str) -> Result<Option<i64>, StoreError> {
        cursor(&self.conn, sink).map_err(query_err)
    }

    /// See [`set_cursor`]; stamps the current time.
    pub fn set_cursor(&self, sink: &str, last_id: i64) -> Result<(), StoreError> {
        set_cursor(&self.conn, sink, last_id, ward_core::time::now_micros())
            .map_err(|source| StoreError::Write { source })
    }

    /// See [`max_event_id`].
    pub fn max_event_id(&self) -> Result<i64, StoreError> {
        max_event_id(&self.conn).map_err(query_err)
    }

    /// See [`oldest_at_after`].
    pub fn oldest_at_after(&self, last_id: i64) -> Result<Option<i64>, StoreError> {
        oldest_at_after(&self.conn, last_id).map_err(query_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use ward_core::AuditEvent;
    use ward_core::event::{SessionEnd, SessionId, SessionStart, StatementEvent, StatementOrigin};

    fn events(id: &str) -> Vec<AuditEvent> {
        vec![
            AuditEvent::SessionStart(SessionStart {
                session_id: SessionId(id.into()),
                identity: "ci".into(),
                groups: Vec::new(),
                target: "db".into(),
                protocol: "postgres".into(),
                client_addr: "127.0.0.1:1".into(),
                tls_version: "TLSv1.3".into(),
                client_program: None,
                started_at: 1_000,
                credential: None,
            }),
            AuditEvent::Statement(StatementEvent {
                session_id: SessionId(id.into()),
                seq: 1,
                origin: StatementOrigin::Simple,
                text: Arc::from("select 1"),
                params: None,
                started_at: 1_100,
                duration_us: 5,
                rows: Some(1),
                command: Some("SELECT".into()),
                sqlstate: None,
                error: None,
                decision: None,
                rule: None,
                result_sample: None,
            }),
            AuditEvent::SessionEnd(SessionEnd {
                session_id: SessionId(id.into()),
                ended_at: 1_200,
                reason: "client closed".into(),
            }),
        ]
    }

    #[test]
    fn reads_the_log_after_a_cursor_and_keeps_cursors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let mut store = crate::SqliteStore::open(&path).unwrap();
        let log = ForwardLog::open(&path).unwrap();
        assert_eq!(log.max_event_id().unwrap(), 0);
        assert!(log.events_after(0, 10).unwrap().is_empty());
        assert_eq!(log.oldest_at_after(0).unwrap(), None);

        store.write_batch(&events("s1")).unwrap();
        let rows = log.events_after(0, 10).unwrap();
        assert_eq!(
            rows.iter().map(|r| r.kind.as_str()).collect::<Vec<_>>(),
            ["session_start", "statement", "session_end"]
        );
        assert!(rows.windows(2).all(|w| w[0].id < w[1].id));
        assert_eq!(rows[1].seq, 2);
        assert_eq!(rows[1].hash.len(), 32);
        assert!(rows[1].body.contains("\"type\":\"statement\""));
        assert_eq!(log.max_event_id().unwrap(), rows[2].id);
        assert_eq!(log.oldest_at_after(rows[0].id).unwrap(), Some(1_100));

        let after = log.events_after(rows[0].id, 1).unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(after[0], rows[1]);

        assert_eq!(log.cursor("siem").unwrap(), None);
        log.set_cursor("siem", rows[1].id).unwrap();
        log.set_cursor("siem", rows[2].id).unwrap();
        drop(log);
        let log = ForwardLog::open(&path).unwrap();
        assert_eq!(log.cursor("siem").unwrap(), Some(rows[2].id));
        assert_eq!(log.cursor("other").unwrap(), None);
    }
}
