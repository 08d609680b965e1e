//! Containment in the store: the audit of control actions (`control_events`) and the locks
//! and pauses in force (`controls`), which `ward serve` loads at start.

use crate::{MAX_LIST_LIMIT, StoreError};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use ward_core::control::{ControlState, LockInfo, PauseInfo};
use ward_core::event::{ControlAction, ControlEvent};

/// Control events returned by a listing when the filter does not say (`limit: 0`).
pub const DEFAULT_CONTROL_EVENTS: usize = 100;

/// One recorded control action, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEventRecord {
    /// Insertion order; later actions have larger ids.
    pub id: i64,
    /// `lock`, `unlock`, `pause`, `resume` or `kill` (kept as text so that rows written by a
    /// newer ward still read).
    pub action: String,
    pub identity: String,
    pub session_id: Option<String>,
    pub reason: String,
    pub by: String,
    /// Unix micros; for a lock, when it lapses (`None`: until unlocked).
    pub until: Option<i64>,
    /// Unix micros.
    pub at: i64,
    pub sessions_ended: u64,
}

/// Which control events a listing returns (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlEventFilter {
    /// Only actions on this identity (exact match).
    pub identity: Option<String>,
    /// Most events to return; 0 means [`DEFAULT_CONTROL_EVENTS`], and anything above
    /// [`MAX_LIST_LIMIT`] is capped.
    pub limit: usize,
}

fn sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Records `event` and applies it to the state in force; the caller provides the
/// transaction, so both happen or neither does.
pub(crate) fn write_control(conn: &Connection, c: &ControlEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO control_events (action, identity, session_id, reason, actor, until, at,
                                     sessions_ended)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
    )?
    .execute(params![
        c.action.as_str(),
        c.identity,
        c.session_id.as_ref().map(|s| s.as_str()),
        c.reason,
        c.by,
        c.until,
        c.at,
        sql_int(c.sessions_ended),
    ])?;
    let (kind, set) = match c.action {
        ControlAction::Lock => ("lock", true),
        ControlAction::Unlock => ("lock", false),
        ControlAction::Pause => ("pause", true),
        ControlAction::Resume => ("pause", false),
        ControlAction::Kill => return Ok(()),
    };
    if set {
        conn.prepare_cached(
            "INSERT OR REPLACE INTO controls (identity, kind, reason, actor, at, until)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![c.identity, kind, c.reason, c.by, c.at, c.until])?;
    } else {
        conn.prepare_cached("DELETE FROM controls WHERE identity = ?1 AND kind = ?2")?
            .execute(params![c.identity, kind])?;
    }
    Ok(())
}

/// The locks and pauses recorded as in force (expired locks included: the caller decides).
pub(crate) fn load_controls(conn: &Connection) -> Result<ControlState, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let mut stmt = conn
        .prepare_cached(
            "SELECT identity, kind, reason, actor, at, until FROM controls
             ORDER BY identity, kind",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, String>(1)?,
                row.get::<_, String>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, i64>(4)?,
                row.get::<_, Option<i64>>(5)?,
            ))
        })
        .map_err(query_err)?;
    let mut state = ControlState::default();
    for row in rows {
        let (identity, kind, reason, by, at, until) = row.map_err(query_err)?;
        match kind.as_str() {
            "lock" => state.locks.push(LockInfo {
                identity,
                reason,
                until,
                by,
                at,
            }),
            "pause" => state.pauses.push(PauseInfo {
                identity,
                reason,
                by,
                at,
            }),
            // The table's CHECK makes this unreachable; a row from a newer ward is skipped.
            other => {
                tracing::warn!(kind = other, %identity, "unknown control kind in the store; ignored")
            }
        }
    }
    Ok(state)
}

/// Control events matching `filter`, newest first.
pub(crate) fn control_events(
    conn: &Connection,
    filter: &ControlEventFilter,
) -> Result<Vec<ControlEventRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let limit = match filter.limit {
        0 => DEFAULT_CONTROL_EVENTS,
        n => n.min(MAX_LIST_LIMIT),
    } as i64;
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, action, identity, session_id, reason, actor, until, at, sessions_ended
             FROM control_events WHERE ?1 IS NULL OR identity = ?1
             ORDER BY id DESC LIMIT ?2",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map(params![filter.identity, limit], |row| {
            Ok(ControlEventRecord {
                id: row.get(0)?,
                action: row.get(1)?,
                identity: row.get(2)?,
                session_id: row.get(3)?,
                reason: row.get(4)?,
                by: row.get(5)?,
                until: row.get(6)?,
                at: row.get(7)?,
                sessions_ended: u64::try_from(row.get::<_, i64>(8)?).unwrap_or(0),
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SCHEMA_VERSION, SqliteStore, StoreReader};
    use ward_core::AuditEvent;
    use ward_core::event::{SessionId, SessionStart};

    fn event(action: ControlAction, identity: &str, at: i64) -> ControlEvent {
        ControlEvent {
            action,
            identity: identity.into(),
            session_id: None,
            reason: format!("{} {identity}", action.as_str()),
            by: "admin".into(),
            until: None,
            at,
            sessions_ended: 0,
        }
    }

    #[test]
    fn version_1_stores_are_migrated_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        {
            // A store exactly as ward with schema version 1 left it, with a session in it.
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(crate::schema::V1).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO sessions (id, identity, target, protocol, client_addr, tls_version,
                                       started_at)
                 VALUES ('s1', 'ci', 'db', 'postgres', '127.0.0.1:1', 'TLSv1.3', 10)",
                [],
            )
            .unwrap();
        }
        let mut store = SqliteStore::open(&path).unwrap();
        let version: i64 = store
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(
            store.list_sessions(&Default::default()).unwrap()[0].id,
            "s1"
        );
        assert_eq!(store.controls().unwrap(), ControlState::default());
        store
            .write_batch(&[AuditEvent::Control(event(ControlAction::Lock, "ci", 20))])
            .unwrap();
        assert_eq!(store.controls().unwrap().locks.len(), 1);
        // Opening again is a no-op.
        drop(store);
        let store = SqliteStore::open(&path).unwrap();
        assert_eq!(store.controls().unwrap().locks[0].identity, "ci");
    }

    #[test]
    fn controls_in_force_follow_the_events_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let mut store = SqliteStore::open(&path).unwrap();
        let mut lock = event(ControlAction::Lock, "ci", 100);
        lock.until = Some(9_000);
        lock.sessions_ended = 3;
        let mut relock = event(ControlAction::Lock, "ci", 150);
        relock.reason = "longer".into();
        let mut kill = event(ControlAction::Kill, "alice", 300);
        kill.session_id = Some(SessionId("0190a1b2-0000".into()));
        kill.sessions_ended = 1;
        store
            .write_batch(&[
                AuditEvent::SessionStart(SessionStart {
                    session_id: SessionId("0190a1b2-0000".into()),
                    identity: "alice".into(),
                    groups: Vec::new(),
                    target: "db".into(),
                    protocol: "postgres".into(),
                    client_addr: "127.0.0.1:1".into(),
                    tls_version: "TLSv1.3".into(),
                    client_program: None,
                    started_at: 50,
                    credential: None,
                }),
                AuditEvent::Control(lock),
                AuditEvent::Control(event(ControlAction::Pause, "bot", 110)),
                AuditEvent::Control(event(ControlAction::Lock, "x", 120)),
                AuditEvent::Control(relock),
                AuditEvent::Control(event(ControlAction::Unlock, "x", 200)),
                AuditEvent::Control(event(ControlAction::Pause, "alice", 210)),
                AuditEvent::Control(event(ControlAction::Resume, "alice", 220)),
                AuditEvent::Control(kill),
            ])
            .unwrap();
        drop(store);

        let store = SqliteStore::open(&path).unwrap();
        let state = store.controls().unwrap();
        assert_eq!(
            state.locks,
            vec![LockInfo {
                identity: "ci".into(),
                reason: "longer".into(),
                until: None,
                by: "admin".into(),
                at: 150,
            }]
        );
        assert_eq!(
            state.pauses,
            vec![PauseInfo {
                identity: "bot".into(),
                reason: "pause bot".into(),
                by: "admin".into(),
                at: 110,
            }]
        );

        let all = store
            .control_events(&ControlEventFilter::default())
            .unwrap();
        let actions: Vec<&str> = all.iter().map(|e| e.action.as_str()).collect();
        assert_eq!(
            actions,
            [
                "kill", "resume", "pause", "unlock", "lock", "lock", "pause", "lock"
            ]
        );
        assert_eq!(all[0].session_id.as_deref(), Some("0190a1b2-0000"));
        assert_eq!(all[0].sessions_ended, 1);
        assert_eq!(all[7].until, Some(9_000));
        assert_eq!(all[7].sessions_ended, 3);
        let ci = store
            .control_events(&ControlEventFilter {
                identity: Some("ci".into()),
                limit: 1,
            })
            .unwrap();
        assert_eq!(ci.len(), 1);
        assert_eq!(ci[0].reason, "longer");
    }

    #[tokio::test]
    async fn the_api_handle_records_controls_durably() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let reader = StoreReader::open(&path).unwrap();
        reader
            .record_control(event(ControlAction::Lock, "ci", 1))
            .await
            .unwrap();
        reader
            .record_control(event(ControlAction::Pause, "ci", 2))
            .await
            .unwrap();
        let events = reader
            .control_events(ControlEventFilter::default())
            .await
            .unwrap();
        assert_eq!(events.len(), 2);
        let state = SqliteStore::open(&path).unwrap().controls().unwrap();
        assert_eq!((state.locks.len(), state.pauses.len()), (1, 1));

        // A store deleted under ward is reported, not silently recreated empty.
        let gone = StoreReader::new(dir.path().join("missing.db"));
        assert!(matches!(
            gone.record_control(event(ControlAction::Lock, "ci", 3))
                .await
                .unwrap_err(),
            StoreError::Open { .. }
        ));
    }
}
