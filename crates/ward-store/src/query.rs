//! Read queries, shared by [`crate::SqliteStore`] and [`crate::StoreReader`].

use crate::{
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, MIN_PREFIX_LEN, SessionDetail, SessionFilter,
    SessionSummary, StatementRecord, StoreError,
};
use rusqlite::types::Value;
use rusqlite::{Connection, OptionalExtension, Row, params};

const SESSION_COLUMNS: &str = "s.id, s.identity, s.target, s.protocol, s.client_addr, \
     s.tls_version, s.client_program, s.started_at, s.ended_at, s.end_reason, \
     (SELECT COUNT(*) FROM statements st WHERE st.session_id = s.id)";

pub(crate) fn query_err(source: rusqlite::Error) -> StoreError {
    StoreError::Query { source }
}

fn non_negative(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

fn session_from_row(row: &Row<'_>) -> rusqlite::Result<SessionSummary> {
    let ended_at: Option<i64> = row.get(8)?;
    Ok(SessionSummary {
        id: row.get(0)?,
        identity: row.get(1)?,
        target: row.get(2)?,
        protocol: row.get(3)?,
        client_addr: row.get(4)?,
        tls_version: row.get(5)?,
        client_program: row.get(6)?,
        started_at: row.get(7)?,
        ended_at,
        end_reason: row.get(9)?,
        statement_count: non_negative(row.get(10)?),
        active: ended_at.is_none(),
    })
}

fn statement_from_row(row: &Row<'_>) -> rusqlite::Result<StatementRecord> {
    Ok(StatementRecord {
        session_id: row.get(0)?,
        seq: non_negative(row.get(1)?),
        origin: row.get(2)?,
        text: row.get(3)?,
        params: row.get(4)?,
        started_at: row.get(5)?,
        duration_us: row.get(6)?,
        rows: row.get::<_, Option<i64>>(7)?.map(non_negative),
        command: row.get(8)?,
        sqlstate: row.get(9)?,
        error: row.get(10)?,
        decision: row.get(11)?,
        rule: row.get(12)?,
        result_sample: None,
    })
}

pub(crate) fn list_sessions(
    conn: &Connection,
    filter: &SessionFilter,
) -> Result<Vec<SessionSummary>, StoreError> {
    // Only the conditions actually given go into the SQL, so SQLite can pick the matching
    // index (an `(?1 IS NULL OR identity = ?1)` form would defeat it).
    let mut conditions = Vec::new();
    let mut values: Vec<Value> = Vec::new();
    if let Some(identity) = &filter.identity {
        values.push(Value::Text(identity.clone()));
        conditions.push(format!("s.identity = ?{}", values.len()));
    }
    if let Some(target) = &filter.target {
        values.push(Value::Text(target.clone()));
        conditions.push(format!("s.target = ?{}", values.len()));
    }
    if let Some(since) = filter.since {
        values.push(Value::Integer(since));
        conditions.push(format!("s.started_at >= ?{}", values.len()));
    }
    if let Some(until) = filter.until {
        values.push(Value::Integer(until));
        conditions.push(format!("s.started_at <= ?{}", values.len()));
    }
    if filter.command_contains.is_some() || filter.decision.is_some() {
        let mut inner = vec!["st.session_id = s.id".to_string()];
        if let Some(text) = &filter.command_contains {
            values.push(Value::Text(text.to_lowercase()));
            inner.push(format!("instr(lower(st.text), ?{}) > 0", values.len()));
        }
        if let Some(decision) = filter.decision {
            inner.push(decision.condition().to_string());
        }
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM statements st WHERE {})",
            inner.join(" AND ")
        ));
    }
    let limit = match filter.limit {
        0 => DEFAULT_LIST_LIMIT,
        n => n.min(MAX_LIST_LIMIT),
    };
    values.push(Value::Integer(limit as i64));
    let where_clause = if conditions.is_empty() {
        String::new()
    } else {
        format!("WHERE {}", conditions.join(" AND "))
    };
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s {where_clause} \
         ORDER BY s.started_at DESC, s.id DESC LIMIT ?{}",
        values.len()
    );
    let mut stmt = conn.prepare_cached(&sql).map_err(query_err)?;
    let rows = stmt
        .query_map(rusqlite::params_from_iter(values), session_from_row)
        .map_err(query_err)?;
    rows.collect::<Result<Vec<_>, _>>().map_err(query_err)
}

fn session_by_id(conn: &Connection, id: &str) -> Result<Option<SessionSummary>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SESSION_COLUMNS} FROM sessions s WHERE s.id = ?1"
    ))
    .map_err(query_err)?
    .query_row([id], session_from_row)
    .optional()
    .map_err(query_err)
}

/// Ids starting with `prefix`, at most `max` of them. A range scan on the primary key: every
/// id that starts with the prefix sorts between the prefix itself and the prefix followed by
/// the highest code point.
fn ids_with_prefix(conn: &Connection, prefix: &str, max: usize) -> Result<Vec<String>, StoreError> {
    let upper = format!("{prefix}\u{10FFFF}");
    let mut stmt = conn
        .prepare_cached("SELECT id FROM sessions WHERE id >= ?1 AND id < ?2 ORDER BY id LIMIT ?3")
        .map_err(query_err)?;
    let rows = stmt
        .query_map(params![prefix, upper, max as i64], |row| row.get(0))
        .map_err(query_err)?;
    rows.collect::<Result<Vec<String>, _>>().map_err(query_err)
}

fn statements_of(conn: &Connection, id: &str) -> Result<Vec<StatementRecord>, StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT session_id, seq, origin, text, params, started_at, duration_us, rows,
                    command, sqlstate, error, decision, rule
             FROM statements WHERE session_id = ?1 ORDER BY seq",
        )
        .map_err(query_err)?;
    let rows = stmt
        .query_map([id], statement_from_row)
        .map_err(query_err)?;
    let mut statements = rows.collect::<Result<Vec<_>, _>>().map_err(query_err)?;
    attach_result_samples(conn, id, &mut statements)?;
    Ok(statements)
}

/// Result samples live only in the statement events of the session log (the `statements`
/// table has no column for them): fills them in from the events that carry one.
fn attach_result_samples(
    conn: &Connection,
    id: &str,
    statements: &mut [StatementRecord],
) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "SELECT body FROM event_log WHERE session_id = ?1 AND kind = 'statement'
               AND instr(body, '\"result_sample\":') > 0",
        )
        .map_err(query_err)?;
    let bodies = stmt
        .query_map([id], |row| row.get::<_, String>(0))
        .map_err(query_err)?;
    for body in bodies {
        let body = body.map_err(query_err)?;
        let Ok(ward_core::AuditEvent::Statement(event)) = serde_json::from_str(&body) else {
            continue;
        };
        if let Ok(i) = statements.binary_search_by_key(&event.seq, |s| s.seq) {
            statements[i].result_sample = event.result_sample;
        }
    }
    Ok(())
}

/// The full id of the session `id_or_prefix` names: the id itself, or a unique prefix of
/// at least [`MIN_PREFIX_LEN`] characters. `Ok(None)` when nothing matches.
pub(crate) fn resolve_session_id(
    conn: &Connection,
    id_or_prefix: &str,
) -> Result<Option<String>, StoreError> {
    let input = id_or_prefix.trim();
    let exact: Option<String> = conn
        .prepare_cached("SELECT id FROM sessions WHERE id = ?1")
        .map_err(query_err)?
        .query_row([input], |row| row.get(0))
        .optional()
        .map_err(query_err)?;
    if exact.is_some() {
        return Ok(exact);
    }
    if input.chars().count() < MIN_PREFIX_LEN {
        return Err(StoreError::PrefixTooShort {
            prefix: input.to_string(),
        });
    }
    // Ids are lowercase UUIDs; accept a prefix copied in upper case too.
    let needle = if input.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
        input.to_ascii_lowercase()
    } else {
        input.to_string()
    };
    let mut ids = ids_with_prefix(conn, &needle, 4)?;
    match ids.len() {
        0 => Ok(None),
        1 => Ok(ids.pop()),
        _ => {
            ids.truncate(3);
            Err(StoreError::Ambiguous {
                prefix: input.to_string(),
                examples: ids,
            })
        }
    }
}

pub(crate) fn session_detail(
    conn: &Connection,
    id_or_prefix: &str,
) -> Result<Option<SessionDetail>, StoreError> {
    let Some(id) = resolve_session_id(conn, id_or_prefix)? else {
        return Ok(None);
    };
    let Some(session) = session_by_id(conn, &id)? else {
        return Ok(None);
    };
    let statements = statements_of(conn, &session.id)?;
    // Read separately from the count; keep the two consistent if the writer got in between.
    let mut session = session;
    session.statement_count = statements.len() as u64;
    let unanswered = unanswered_commands(conn, &session.id)?;
    Ok(Some(SessionDetail {
        session,
        statements,
        unanswered,
    }))
}

/// The session's terminal recording (`terminal` events), in the order they were logged.
pub fn terminal_events(
    conn: &Connection,
    session_id: &str,
) -> Result<Vec<ward_core::event::TerminalEvent>, StoreError> {
    let sql = "SELECT body FROM event_log WHERE session_id = ?1 AND kind = 'terminal' ORDER BY seq";
    Ok(session_events(conn, sql, session_id)?
        .into_iter()
        .filter_map(|event| match event {
            ward_core::AuditEvent::Terminal(t) => Some(t),
            _ => None,
        })
        .collect())
}

/// The events `sql` selects (one `body` column, `?1` the session id), parsed; bodies this
/// build cannot read are skipped.
fn session_events(
    conn: &Connection,
    sql: &str,
    session_id: &str,
) -> Result<Vec<ward_core::AuditEvent>, StoreError> {
    let query = |source| StoreError::Query { source };
    let mut stmt = conn.prepare_cached(sql).map_err(query)?;
    let bodies = stmt
        .query_map([session_id], |row| row.get::<_, String>(0))
        .map_err(query)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(query)?;
    Ok(bodies
        .iter()
        .filter_map(|body| serde_json::from_str(body).ok())
        .collect())
}

/// The session's command events after its last statement event (see
/// [`SessionDetail::unanswered`]).
fn unanswered_commands(
    conn: &Connection,
    session_id: &str,
) -> Result<Vec<ward_core::CommandEvent>, StoreError> {
    let sql = "SELECT body FROM event_log WHERE session_id = ?1 AND kind = 'command'
                 AND seq > COALESCE((SELECT MAX(seq) FROM event_log
                                     WHERE session_id = ?1 AND kind = 'statement'), 0)
               ORDER BY seq";
    Ok(session_events(conn, sql, session_id)?
        .into_iter()
        .filter_map(|event| match event {
            ward_core::AuditEvent::Command(c) => Some(c),
            _ => None,
        })
        .collect())
}
