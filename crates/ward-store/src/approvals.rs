//! Approvals in the store: every step of every approval request (`approval_events`), written
//! by the batched writer like the rest of the audit.
//!
//! The table is append-only, one row per event, rather than one row per request updated in
//! place: the events reach the writer through a queue that may reorder an event handed to a
//! spawned task (see `ward_core::approvals`), and an append-only log stays correct whatever
//! the arrival order; readers order by time.

use crate::{MAX_LIST_LIMIT, StoreError};
use rusqlite::{Connection, params};
use serde::{Deserialize, Serialize};
use ward_core::event::ApprovalEvent;

/// Approval events returned by a listing when the filter does not say (`limit: 0`).
pub const DEFAULT_APPROVAL_EVENTS: usize = 100;

/// One recorded step of an approval request, as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEventRecord {
    pub request_id: String,
    /// `requested`, `partially_approved`, `approved`, `denied`, `timed_out` or `withdrawn`
    /// (kept as text so that rows written by a newer ward still read).
    pub state: String,
    pub session_id: String,
    pub identity: String,
    pub target: String,
    pub command: String,
    pub rule: String,
    /// Who decided (`admin` for the admin token); `None` for steps nobody took.
    pub by: Option<String>,
    pub reason: Option<String>,
    /// Unix micros.
    pub at: i64,
}

/// Which approval events a listing returns.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalEventFilter {
    /// Only the steps of this request (exact id); they come oldest first.
    pub request_id: Option<String>,
    /// Only requests of this identity (exact match).
    pub identity: Option<String>,
    /// Most events to return; 0 means [`DEFAULT_APPROVAL_EVENTS`], and anything above
    /// [`MAX_LIST_LIMIT`] is capped. Without `request_id`, the newest are returned, newest
    /// first.
    pub limit: usize,
}

pub(crate) fn write_approval(conn: &Connection, a: &ApprovalEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO approval_events (request_id, state, session_id, identity, target, command,
                                      rule, actor, reason, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        a.request_id,
        a.state.as_str(),
        a.session_id.as_str(),
        a.identity,
        a.target,
        a.command,
        a.rule,
        a.by,
        a.reason,
        a.at,
    ])?;
    Ok(())
}

pub(crate) fn approval_events(
    conn: &Connection,
    filter: &ApprovalEventFilter,
) -> Result<Vec<ApprovalEventRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let limit = match filter.limit {
        0 => DEFAULT_APPROVAL_EVENTS,
        n => n.min(MAX_LIST_LIMIT),
    };
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // One request's steps read in the order they happened; a listing shows the newest.
    let order = if filter.request_id.is_some() {
        "at ASC, id ASC"
    } else {
        "at DESC, id DESC"
    };
    let sql = format!(
        "SELECT request_id, state, session_id, identity, target, command, rule, actor, reason, at
           FROM approval_events
          WHERE (?1 IS NULL OR request_id = ?1) AND (?2 IS NULL OR identity = ?2)
          ORDER BY {order}
          LIMIT ?3"
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(query_err)?;
    let rows = stmt
        .query_map(params![filter.request_id, filter.identity, limit], |row| {
            Ok(ApprovalEventRecord {
                request_id: row.get(0)?,
                state: row.get(1)?,
                session_id: row.get(2)?,
                identity: row.get(3)?,
                target: row.get(4)?,
                command: row.get(5)?,
                rule: row.get(6)?,
                by: row.get(7)?,
                reason: row.get(8)?,
                at: row.get(9)?,
            })
        })
        .map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{SqliteStore, StoreReader};
    use ward_core::AuditEvent;
    use ward_core::event::{ApprovalEventState, SessionId};

    fn ev(id: &str, state: ApprovalEventState, by: Option<&str>, at: i64) -> AuditEvent {
        AuditEvent::Approval(ApprovalEvent {
            request_id: id.into(),
            session_id: SessionId("0190a1b2-0000-7000-8000-00000000000a".into()),
            identity: "alice".into(),
            target: "orders-db".into(),
            command: "DELETE FROM orders WHERE id = 42".into(),
            rule: "approve-deletes".into(),
            state,
            by: by.map(str::to_string),
            reason: (state == ApprovalEventState::Denied).then(|| "not now".to_string()),
            at,
        })
    }

    #[tokio::test]
    async fn approval_events_round_trip_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let mut store = SqliteStore::open(&path).unwrap();
        // Written out of order (as a spawned record could arrive): read back by time.
        store
            .write_batch(&[
                ev(
                    "r-aaaaaaaa",
                    ApprovalEventState::Approved,
                    Some("carol"),
                    300,
                ),
                ev("r-aaaaaaaa", ApprovalEventState::Requested, None, 100),
                ev(
                    "r-aaaaaaaa",
                    ApprovalEventState::PartiallyApproved,
                    Some("bob"),
                    200,
                ),
                ev("r-bbbbbbbb", ApprovalEventState::Requested, None, 400),
                ev("r-bbbbbbbb", ApprovalEventState::Denied, Some("admin"), 500),
            ])
            .unwrap();
        let steps = store
            .approval_events(&ApprovalEventFilter {
                request_id: Some("r-aaaaaaaa".into()),
                ..Default::default()
            })
            .unwrap();
        let seen: Vec<(&str, Option<&str>)> = steps
            .iter()
            .map(|s| (s.state.as_str(), s.by.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("requested", None),
                ("partially_approved", Some("bob")),
                ("approved", Some("carol"))
            ]
        );
        assert_eq!(steps[0].command, "DELETE FROM orders WHERE id = 42");
        assert_eq!(steps[0].session_id, "0190a1b2-0000-7000-8000-00000000000a");

        let reader = StoreReader::open(&path).unwrap();
        let newest = reader
            .approval_events(ApprovalEventFilter {
                limit: 2,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0].state, "denied");
        assert_eq!(newest[0].by.as_deref(), Some("admin"));
        assert_eq!(newest[0].reason.as_deref(), Some("not now"));
        assert_eq!(newest[1].state, "requested");
        let none = reader
            .approval_events(ApprovalEventFilter {
                identity: Some("bob".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        assert!(none.is_empty());
    }
}
