//! Retention (`audit.retention`): sessions that ended long enough ago are deleted, whole.
//!
//! A session goes with everything that belongs to it: its statements, its tamper-evident
//! log (`event_log`) and checkpoint signatures, and the approval and control rows recorded
//! for it. Deleting whole chains keeps every remaining chain verifiable. Sessions still open
//! are never touched, however old. The gateway chain (locks, pauses) is kept whole: its
//! events chain from one genesis, so deleting its oldest part would make everything after
//! it unverifiable.

use crate::{SqliteStore, StoreError};
use rusqlite::params_from_iter;

/// Sessions deleted per transaction, so that the writer (and strict-mode statements waiting
/// for it) never waits long behind a large purge.
const BATCH: usize = 200;

/// What one retention pass deleted.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RetentionCounts {
    pub sessions: u64,
    pub statements: u64,
    pub events: u64,
    pub signatures: u64,
    pub approval_events: u64,
    pub control_events: u64,
}

impl SqliteStore {
    /// Deletes the sessions that ended before `cutoff` (Unix micros), with their statements,
    /// session log, signatures, and approval and control rows. Open sessions and the gateway
    /// chain are kept. Works in short transactions of [`BATCH`] sessions.
    pub fn apply_retention(&mut self, cutoff: i64) -> Result<RetentionCounts, StoreError> {
        let write = |source| StoreError::Write { source };
        let mut counts = RetentionCounts::default();
        loop {
            let tx = self.conn.transaction().map_err(write)?;
            // A session that ended before the cutoff started before it: the range on
            // sessions_by_start keeps this from scanning the whole table.
            let ids: Vec<String> = {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT id FROM sessions
                         WHERE started_at < ?1 AND ended_at IS NOT NULL AND ended_at < ?1
                         ORDER BY started_at LIMIT ?2",
                    )
                    .map_err(write)?;
                stmt.query_map(rusqlite::params![cutoff, BATCH as i64], |row| row.get(0))
                    .map_err(write)?
                    .collect::<Result<_, _>>()
                    .map_err(write)?
            };
            if ids.is_empty() {
                break;
            }
            let marks = vec!["?"; ids.len()].join(", ");
            let delete = |sql: &str| -> Result<u64, StoreError> {
                let n = tx
                    .execute(&sql.replace("{ids}", &marks), params_from_iter(&ids))
                    .map_err(write)?;
                Ok(n as u64)
            };
            counts.statements += delete("DELETE FROM statements WHERE session_id IN ({ids})")?;
            counts.events += delete("DELETE FROM event_log WHERE session_id IN ({ids})")?;
            counts.signatures +=
                delete("DELETE FROM chain_signatures WHERE session_id IN ({ids})")?;
            // Their approvals and controls happened before they ended, so before the cutoff:
            // the `at` bound lets SQLite use the tables' time index.
            let at_bound = format!("at < {cutoff} AND");
            counts.approval_events += delete(&format!(
                "DELETE FROM approval_events WHERE {at_bound} session_id IN ({{ids}})"
            ))?;
            counts.control_events += delete(&format!(
                "DELETE FROM control_events WHERE {at_bound} session_id IN ({{ids}})"
            ))?;
            counts.sessions += delete("DELETE FROM sessions WHERE id IN ({ids})")?;
            tx.commit().map_err(write)?;
            if ids.len() < BATCH {
                break;
            }
        }
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {
    use crate::SqliteStore;
    use crate::chain::{GATEWAY_LOG, LogSigner};
    use ward_core::AuditEvent;

    fn event(json: serde_json::Value) -> AuditEvent {
        serde_json::from_value(json).unwrap()
    }

    fn start(id: &str, at: i64) -> AuditEvent {
        event(serde_json::json!({
            "type": "session_start", "session_id": id, "identity": "alice",
            "target": "orders-db", "protocol": "postgres", "client_addr": "10.0.0.7:5000",
            "tls_version": "TLSv1.3", "client_program": null, "started_at": at,
        }))
    }

    fn statement(id: &str, seq: u64, at: i64) -> AuditEvent {
        event(serde_json::json!({
            "type": "statement", "session_id": id, "seq": seq, "origin": "simple",
            "text": "select 1", "params": null, "started_at": at, "duration_us": 5,
            "rows": 1, "command": "SELECT", "sqlstate": null, "error": null,
        }))
    }

    fn end(id: &str, at: i64) -> AuditEvent {
        event(serde_json::json!({
            "type": "session_end", "session_id": id, "ended_at": at, "reason": "client closed",
        }))
    }

    fn control(session: Option<&str>, at: i64) -> AuditEvent {
        event(serde_json::json!({
            "type": "control", "action": if session.is_some() { "kill" } else { "lock" },
            "identity": "alice", "session_id": session, "reason": "test", "by": "admin",
            "until": null, "at": at, "sessions_ended": 0,
        }))
    }

    fn count(store: &SqliteStore, sql: &str) -> i64 {
        store.conn.query_row(sql, [], |r| r.get(0)).unwrap()
    }

    #[test]
    fn old_ended_sessions_go_whole_and_the_rest_still_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let signer = LogSigner::from_seed([4; 32]);
        let key = signer.public_key();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store.set_signer(signer);
        // old: ended long ago; open: started long ago and still open; recent: ended lately.
        let (old, open, recent) = ("session-old", "session-open", "session-recent");
        store
            .write_batch(&[
                start(old, 100),
                statement(old, 1, 110),
                control(Some(old), 150),
                end(old, 200),
                start(open, 100),
                statement(open, 1, 120),
                control(None, 130),
                start(recent, 900),
                statement(recent, 1, 910),
                end(recent, 1_000),
            ])
            .unwrap();
        let before = count(&store, "SELECT COUNT(*) FROM event_log");
        let counts = store.apply_retention(500).unwrap();
        assert_eq!(counts.sessions, 1);
        assert_eq!(counts.statements, 1);
        assert_eq!(counts.events, 4, "start, statement, kill, end");
        assert_eq!(counts.signatures, 1, "the signed end");
        assert_eq!(
            counts.control_events, 1,
            "the kill; the lock is the gateway's"
        );
        assert_eq!(count(&store, "SELECT COUNT(*) FROM event_log"), before - 4);
        assert!(store.session_detail(old).unwrap().is_none());
        assert!(
            store.session_detail(open).unwrap().is_some(),
            "open sessions stay"
        );
        assert_eq!(
            store.logged_sessions().unwrap(),
            [open, GATEWAY_LOG, recent],
            "the gateway chain is kept"
        );
        for id in [open, recent, GATEWAY_LOG] {
            let v = store.verify_session(id, &key).unwrap();
            assert_eq!(v.problem, None, "{id}");
        }
        // Idempotent; a later cutoff takes the recent one, never the open one.
        assert_eq!(store.apply_retention(500).unwrap().sessions, 0);
        let counts = store.apply_retention(i64::MAX).unwrap();
        assert_eq!(counts.sessions, 1);
        assert!(store.session_detail(open).unwrap().is_some());
        assert!(
            store
                .verify_session(GATEWAY_LOG, &key)
                .unwrap()
                .problem
                .is_none()
        );
    }

    #[test]
    fn large_purges_go_in_batches() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        let mut events = Vec::new();
        let n = super::BATCH * 2 + 7;
        for i in 0..n {
            let id = format!("s-{i:04}");
            events.push(start(&id, i as i64));
            events.push(end(&id, i as i64 + 1));
        }
        store.write_batch(&events).unwrap();
        let counts = store.apply_retention(i64::MAX).unwrap();
        assert_eq!(counts.sessions, n as u64);
        assert_eq!(counts.events, 2 * n as u64);
        assert_eq!(count(&store, "SELECT COUNT(*) FROM sessions"), 0);
    }
}
