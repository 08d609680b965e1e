//! Identities as the audit has seen them: per identity, how many sessions it opened, when
//! the latest started, and what that session's `session_start` event recorded (its groups
//! and the credential behind it). For `ward identities list`.

use crate::StoreError;
use crate::query::query_err;
use rusqlite::Connection;
use serde::{Deserialize, Serialize};

/// One identity seen in sessions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityUsage {
    pub identity: String,
    /// Sessions recorded for it (those retention has not removed).
    pub sessions: u64,
    /// When its latest session started (Unix micros).
    pub last_started_at: i64,
    pub last_session_id: String,
    /// The groups its latest session had; `None` when that session's `session_start`
    /// event is not in the log (removed by retention).
    pub last_groups: Option<Vec<String>>,
    /// What proved it in its latest session (`token`, `oidc`, `workload`, `ward_token`);
    /// `None` when not recorded (events from before ward recorded it, or removed).
    pub last_credential: Option<String>,
    /// That credential's issuer (IdP and CI tokens).
    pub last_issuer: Option<String>,
}

/// Every identity with at least one recorded session, by name. One row per identity: its
/// latest session (the highest id among sessions that started at the same microsecond).
pub(crate) fn identity_usage(conn: &Connection) -> Result<Vec<IdentityUsage>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT s.identity, agg.n, s.started_at, s.id, e.body
             FROM (SELECT identity, COUNT(*) AS n, MAX(started_at) AS last
                   FROM sessions GROUP BY identity) agg
             JOIN sessions s ON s.identity = agg.identity AND s.started_at = agg.last
             LEFT JOIN event_log e ON e.session_id = s.id AND e.kind = 'session_start'
             ORDER BY s.identity, s.id DESC",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([], |row| {
            Ok((
                row.get::<_, String>(0)?,
                row.get::<_, i64>(1)?,
                row.get::<_, i64>(2)?,
                row.get::<_, String>(3)?,
                row.get::<_, Option<String>>(4)?,
            ))
        })
        .map_err(query_err)?;
    let mut out: Vec<IdentityUsage> = Vec::new();
    for row in rows {
        let (identity, n, started_at, id, body) = row.map_err(query_err)?;
        if out.last().is_some_and(|u| u.identity == identity) {
            // Another session that started at the same microsecond; the first (highest id)
            // stands.
            continue;
        }
        let start = body.and_then(|b| match serde_json::from_str(&b) {
            Ok(ward_core::AuditEvent::SessionStart(s)) => Some(s),
            _ => None,
        });
        let credential = start.as_ref().and_then(|s| s.credential.clone());
        out.push(IdentityUsage {
            identity,
            sessions: u64::try_from(n).unwrap_or(0),
            last_started_at: started_at,
            last_session_id: id,
            last_groups: start.map(|s| s.groups),
            last_credential: credential.as_ref().map(|c| c.source.clone()),
            last_issuer: credential.and_then(|c| c.issuer),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use ward_core::AuditEvent;
    use ward_core::event::{CredentialInfo, SessionEnd, SessionId, SessionStart};

    fn start(id: &str, identity: &str, groups: &[&str], at: i64, source: &str) -> AuditEvent {
        AuditEvent::SessionStart(SessionStart {
            session_id: SessionId(id.into()),
            identity: identity.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            client_addr: "10.0.0.7:5000".into(),
            tls_version: "TLSv1.3".into(),
            client_program: None,
            started_at: at,
            credential: Some(CredentialInfo {
                source: source.into(),
                issuer: (source == "oidc").then(|| "https://idp.example.com".to_string()),
                ..CredentialInfo::default()
            }),
        })
    }

    #[test]
    fn one_row_per_identity_from_its_latest_session() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        assert!(identity_usage(&store.conn).unwrap().is_empty());
        store
            .write_batch(&[
                start("s1", "oidc:alice", &["platform", "dev"], 100, "oidc"),
                AuditEvent::SessionEnd(SessionEnd {
                    session_id: SessionId("s1".into()),
                    ended_at: 150,
                    reason: "client closed".into(),
                }),
                start("s2", "oidc:alice", &["dev"], 300, "oidc"),
                start("s3", "ci-nightly", &[], 200, "token"),
                // Same start time as s3: the higher id is the latest.
                start("s4", "ci-nightly", &["ci"], 200, "token"),
            ])
            .unwrap();
        let usage = identity_usage(&store.conn).unwrap();
        assert_eq!(usage.len(), 2, "{usage:?}");
        let ci = &usage[0];
        assert_eq!(
            (ci.identity.as_str(), ci.sessions, ci.last_started_at),
            ("ci-nightly", 2, 200)
        );
        assert_eq!(ci.last_session_id, "s4");
        assert_eq!(ci.last_groups.as_deref(), Some(&["ci".to_string()][..]));
        assert_eq!(ci.last_credential.as_deref(), Some("token"));
        assert_eq!(ci.last_issuer, None);
        let alice = &usage[1];
        assert_eq!((alice.sessions, alice.last_started_at), (2, 300));
        // Her latest groups, not the union: she has left platform.
        assert_eq!(alice.last_groups.as_deref(), Some(&["dev".to_string()][..]));
        assert_eq!(alice.last_credential.as_deref(), Some("oidc"));
        assert_eq!(
            alice.last_issuer.as_deref(),
            Some("https://idp.example.com")
        );
    }

    #[test]
    fn a_session_without_its_start_event_still_counts() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store
            .write_batch(&[start("s1", "bob", &["dba"], 100, "token")])
            .unwrap();
        store
            .conn
            .execute("DELETE FROM event_log WHERE session_id = 's1'", [])
            .unwrap();
        let usage = identity_usage(&store.conn).unwrap();
        assert_eq!(usage.len(), 1);
        assert_eq!(usage[0].sessions, 1);
        assert_eq!(usage[0].last_groups, None);
        assert_eq!(usage[0].last_credential, None);
    }
}
