//! Refused logins (`auth_refused` events): they live only in the session log, in the gateway
//! chain, and are listed from there.

use crate::chain::GATEWAY_LOG;
use crate::{MAX_LIST_LIMIT, StoreError, StoreReader};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use ward_core::AuditEvent;
use ward_core::event::AuthRefusedEvent;

/// Refusals returned by a listing when the filter does not say (`limit: 0`).
pub const DEFAULT_AUTH_REFUSALS: usize = 100;

/// One refused login, as recorded in the gateway chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusedRecord {
    /// The event's `event_log.id` (recording order).
    pub id: i64,
    /// Its position in the gateway chain.
    pub seq: i64,
    pub event: AuthRefusedEvent,
}

/// Which refusals a listing returns (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthRefusedFilter {
    /// Only refusals with this code (e.g. `expired`, `bad_signature`).
    pub code: Option<String>,
    /// Only refusals whose claimed user name or proven identity is this (exact match).
    pub user: Option<String>,
    /// Only refusals at or after this time (Unix micros).
    pub since: Option<i64>,
    /// Most refusals to return; 0 means [`DEFAULT_AUTH_REFUSALS`], and anything above
    /// [`MAX_LIST_LIMIT`] is capped.
    pub limit: usize,
}

/// Refused logins matching `filter`, newest first. Rows whose body does not parse (written
/// by a newer ward) are skipped.
pub(crate) fn auth_refusals(
    conn: &Connection,
    filter: &AuthRefusedFilter,
) -> Result<Vec<AuthRefusedRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let limit = match filter.limit {
        0 => DEFAULT_AUTH_REFUSALS,
        n => n.min(MAX_LIST_LIMIT),
    };
    let mut stmt = conn
        .prepare_cached(
            "SELECT id, seq, body FROM event_log
             WHERE session_id = ?1 AND kind = 'auth_refused' AND (?2 IS NULL OR at >= ?2)
             ORDER BY id DESC",
        )
        .map_err(query_err)?;
    let mut rows = stmt
        .query(params![GATEWAY_LOG, filter.since])
        .map_err(query_err)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(query_err)? {
        let body: String = row.get(2).map_err(query_err)?;
        let Ok(AuditEvent::AuthRefused(event)) = serde_json::from_str(&body) else {
            continue;
        };
        if filter.code.as_ref().is_some_and(|c| *c != event.code) {
            continue;
        }
        if let Some(user) = &filter.user
            && *user != event.claimed_user
            && event.identity.as_ref() != Some(user)
        {
            continue;
        }
        out.push(AuthRefusedRecord {
            id: row.get(0).map_err(query_err)?,
            seq: row.get(1).map_err(query_err)?,
            event,
        });
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

impl crate::SqliteStore {
    /// Refused logins matching `filter`, newest first.
    pub fn auth_refusals(
        &self,
        filter: &AuthRefusedFilter,
    ) -> Result<Vec<AuthRefusedRecord>, StoreError> {
        auth_refusals(&self.conn, filter)
    }
}

impl StoreReader {
    /// Refused logins matching `filter`, newest first.
    pub async fn auth_refusals(
        &self,
        filter: AuthRefusedFilter,
    ) -> Result<Vec<AuthRefusedRecord>, StoreError> {
        self.run(move |conn| auth_refusals(conn, &filter)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use ward_core::event::{ControlAction, ControlEvent};

    fn refused(code: &str, user: &str, at: i64) -> AuditEvent {
        AuditEvent::AuthRefused(AuthRefusedEvent {
            protocol: "postgres".into(),
            target: "orders".into(),
            claimed_user: user.into(),
            identity: None,
            peer: "127.0.0.1:5000".into(),
            source: "jwt".into(),
            code: code.into(),
            reason: format!("refused: {code}"),
            at,
        })
    }

    #[test]
    fn refusals_join_the_gateway_chain_and_list_newest_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        let lock = AuditEvent::Control(ControlEvent {
            action: ControlAction::Lock,
            identity: "ci".into(),
            session_id: None,
            reason: "r".into(),
            by: "admin".into(),
            until: None,
            at: 5,
            sessions_ended: 0,
        });
        store
            .write_batch(&[
                refused("expired", "alice", 10),
                lock,
                refused("bad_token", "ci", 20),
                refused("alg_none", "x", 30),
            ])
            .unwrap();
        let all = store.auth_refusals(&AuthRefusedFilter::default()).unwrap();
        let codes: Vec<&str> = all.iter().map(|r| r.event.code.as_str()).collect();
        assert_eq!(codes, ["alg_none", "bad_token", "expired"]);
        // One chain with the lock in it: seq 1, (lock 2), 3, 4.
        let seqs: Vec<i64> = all.iter().map(|r| r.seq).collect();
        assert_eq!(seqs, [4, 3, 1]);
        let only = store
            .auth_refusals(&AuthRefusedFilter {
                code: Some("bad_token".into()),
                ..Default::default()
            })
            .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].event.claimed_user, "ci");
        let since = store
            .auth_refusals(&AuthRefusedFilter {
                since: Some(20),
                limit: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(since.len(), 1);
        assert_eq!(since[0].event.code, "alg_none");
        // The refusals and the lock form one chain of four events.
        let verdict = store.verify_session(GATEWAY_LOG, &[0u8; 32]).unwrap();
        assert_eq!(verdict.events, 4, "{verdict:?}");
    }
}
