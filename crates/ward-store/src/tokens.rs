//! Ward tokens in the store: `ward login` session tokens and tokens minted for bots. The
//! `ward_tokens` table is the state in force, written in the same transaction as the
//! `token_issued` / `token_revoked` events of the gateway chain, and loaded by `ward serve`
//! at start. Only the secret's hash is ever stored.

use crate::{MAX_LIST_LIMIT, StoreError};
use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use ward_core::event::{TokenIssuedEvent, TokenRevokedEvent};

/// One ward token as stored: how it was issued, and whether it was revoked since.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WardTokenRecord {
    pub issued: TokenIssuedEvent,
    /// Unix micros; `None` while the token stands.
    pub revoked_at: Option<i64>,
    pub revoked_by: Option<String>,
    pub revoke_reason: Option<String>,
}

/// Which tokens a listing returns (newest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WardTokenFilter {
    /// Only tokens of this identity (exact match).
    pub identity: Option<String>,
    /// Also tokens that expired or were revoked before `now` (Unix micros).
    pub include_inactive: bool,
    /// The time "expired" is judged at; 0 means the current time.
    pub now: i64,
    /// Most tokens to return; 0 and anything above [`MAX_LIST_LIMIT`] mean
    /// [`MAX_LIST_LIMIT`].
    pub limit: usize,
}

fn json<T: Serialize>(value: &T) -> String {
    // Vectors of strings and pairs of strings always serialize.
    serde_json::to_string(value).unwrap_or_else(|_| "[]".into())
}

/// Stores an issued token; the caller provides the transaction (the event's own).
pub(crate) fn write_issued(conn: &Connection, t: &TokenIssuedEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO ward_tokens (token_id, hash, identity, groups, attributes,
                                             targets, kind, issued_by, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
    )?
    .execute(params![
        t.token_id,
        t.hash,
        t.identity,
        json(&t.groups),
        json(&t.attributes),
        t.targets.as_ref().map(json),
        t.kind,
        t.issued_by,
        t.issued_at,
        t.expires_at,
    ])?;
    Ok(())
}

/// Marks a token revoked (a token already revoked keeps its first revocation).
pub(crate) fn write_revoked(conn: &Connection, t: &TokenRevokedEvent) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "UPDATE ward_tokens SET revoked_at = ?2, revoked_by = ?3, revoke_reason = ?4
         WHERE token_id = ?1 AND revoked_at IS NULL",
    )?
    .execute(params![t.token_id, t.at, t.by, t.reason])?;
    Ok(())
}

const COLUMNS: &str = "token_id, hash, identity, groups, attributes, targets, kind, issued_by,
                       issued_at, expires_at, revoked_at, revoked_by, revoke_reason";

fn record(row: &rusqlite::Row<'_>) -> rusqlite::Result<WardTokenRecord> {
    let text = |i: usize| -> rusqlite::Result<String> { row.get(i) };
    fn parse<T: serde::de::DeserializeOwned>(i: usize, s: String) -> rusqlite::Result<T> {
        serde_json::from_str(&s).map_err(|e| {
            rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, e.into())
        })
    }
    let targets: Option<String> = row.get(5)?;
    Ok(WardTokenRecord {
        issued: TokenIssuedEvent {
            token_id: text(0)?,
            hash: text(1)?,
            identity: text(2)?,
            groups: parse(3, text(3)?)?,
            attributes: parse(4, text(4)?)?,
            targets: targets.map(|t| parse(5, t)).transpose()?,
            kind: text(6)?,
            issued_by: text(7)?,
            issued_at: row.get(8)?,
            expires_at: row.get(9)?,
        },
        revoked_at: row.get(10)?,
        revoked_by: row.get(11)?,
        revoke_reason: row.get(12)?,
    })
}

/// The tokens still usable at `now` (Unix micros): not expired, not revoked. What `ward
/// serve` loads at start.
pub(crate) fn active_tokens(
    conn: &Connection,
    now: i64,
) -> Result<Vec<WardTokenRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ward_tokens WHERE revoked_at IS NULL AND expires_at > ?1
             ORDER BY issued_at"
        ))
        .map_err(query_err)?;
    let rows = stmt.query_map(params![now], record).map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

/// Tokens matching `filter`, newest first.
pub(crate) fn list_tokens(
    conn: &Connection,
    filter: &WardTokenFilter,
) -> Result<Vec<WardTokenRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    let now = match filter.now {
        0 => ward_core::time::now_micros(),
        n => n,
    };
    let limit = match filter.limit {
        0 => MAX_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM ward_tokens
             WHERE (?1 IS NULL OR identity = ?1)
               AND (?2 OR (revoked_at IS NULL AND expires_at > ?3))
             ORDER BY issued_at DESC LIMIT ?4"
        ))
        .map_err(query_err)?;
    let rows = stmt
        .query_map(
            params![
                filter.identity,
                filter.include_inactive,
                now,
                i64::try_from(limit).unwrap_or(i64::MAX)
            ],
            record,
        )
        .map_err(query_err)?;
    rows.collect::<Result<_, _>>().map_err(query_err)
}

/// One token by its public id.
pub(crate) fn token(
    conn: &Connection,
    token_id: &str,
) -> Result<Option<WardTokenRecord>, StoreError> {
    let query_err = |source| StoreError::Query { source };
    conn.prepare_cached(&format!(
        "SELECT {COLUMNS} FROM ward_tokens WHERE token_id = ?1"
    ))
    .map_err(query_err)?
    .query_row(params![token_id], record)
    .optional()
    .map_err(query_err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SqliteStore;
    use ward_core::AuditEvent;

    fn issued(id: &str, identity: &str, expires_at: i64) -> TokenIssuedEvent {
        TokenIssuedEvent {
            token_id: id.into(),
            hash: format!("sha256:{}", id.repeat(64 / id.len())),
            identity: identity.into(),
            groups: vec!["dba".into()],
            attributes: vec![("minted_by".into(), "oidc:alice".into())],
            targets: Some(vec!["orders-db".into()]),
            kind: "mint".into(),
            issued_by: "oidc:alice".into(),
            issued_at: 100,
            expires_at,
        }
    }

    #[test]
    fn issued_tokens_are_active_until_revoked_or_expired() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store
            .write_batch(&[
                AuditEvent::TokenIssued(issued("aa", "oidc:alice/bot", 1_000)),
                AuditEvent::TokenIssued(issued("bb", "oidc:alice", 5_000)),
                AuditEvent::TokenIssued(issued("cc", "oidc:bob", 5_000)),
                AuditEvent::TokenRevoked(TokenRevokedEvent {
                    token_id: "cc".into(),
                    identity: "oidc:bob".into(),
                    reason: "left the team".into(),
                    by: "admin".into(),
                    at: 200,
                }),
            ])
            .unwrap();
        let active = store.active_ward_tokens(500).unwrap();
        let ids: Vec<_> = active.iter().map(|t| t.issued.token_id.as_str()).collect();
        assert_eq!(ids, ["aa", "bb"]);
        assert_eq!(active[0].issued, issued("aa", "oidc:alice/bot", 1_000));
        let later: Vec<_> = store
            .active_ward_tokens(2_000)
            .unwrap()
            .into_iter()
            .map(|t| t.issued.token_id)
            .collect();
        assert_eq!(later, ["bb"]);

        let all = list_tokens(
            &store.conn,
            &WardTokenFilter {
                include_inactive: true,
                now: 2_000,
                ..WardTokenFilter::default()
            },
        )
        .unwrap();
        assert_eq!(all.len(), 3);
        let bob = token(&store.conn, "cc").unwrap().unwrap();
        assert_eq!(bob.revoked_at, Some(200));
        assert_eq!(bob.revoke_reason.as_deref(), Some("left the team"));
        let alice = list_tokens(
            &store.conn,
            &WardTokenFilter {
                identity: Some("oidc:alice".into()),
                now: 2_000,
                ..WardTokenFilter::default()
            },
        )
        .unwrap();
        assert_eq!(alice.len(), 1);
        assert!(token(&store.conn, "zz").unwrap().is_none());
    }
}
