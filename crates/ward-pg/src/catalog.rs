//! Names of the tables result columns come from, read from the target's own catalog.
//!
//! A RowDescription names each column's table only by OID and attribute number. Column
//! masking rules are written as `schema.table.column`, so ward asks the target's
//! `pg_catalog` — over a side connection of its own, logged in with the target's stored
//! credential, never through a client's session — and caches the answer per target. The
//! attribute's own name matters too: `select email as e` still reports `email`'s table and
//! attribute number, so an alias cannot hide a masked column.
//!
//! Lookups that fail (target unreachable, OID unknown) are remembered as unresolved for a
//! short while; masking then errs towards masking (see `ward_core::masking::Origin`).

use crate::codec::{Framer, Scan, put_cstr, put_message, read_i16, read_i32};
use crate::messages::parse_error_fields;
use crate::session::{fill, write_batch};
use crate::stream::MaybeTls;
use crate::upstream::UpstreamConnector;
use bytes::{Buf, BytesMut};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a failed lookup is remembered before ward asks again.
const RETRY_UNRESOLVED_AFTER: Duration = Duration::from_secs(30);
/// How long one lookup may take; the client's result waits meanwhile.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// Entries kept per target before the cache starts over (tables are few; OIDs of dropped
/// and recreated tables accumulate slowly).
const MAX_ENTRIES: usize = 100_000;

/// One table's names.
#[derive(Debug)]
pub struct TableNames {
    pub schema: String,
    pub table: String,
    /// Attribute number → column name.
    pub columns: HashMap<i16, String>,
    /// For a view (or materialized view): attribute number → the column names that view
    /// column is computed from, read from its definition. A view column carries the view's
    /// own OID in a RowDescription, so without this `create view v as select notes as n`
    /// would hide a masked column behind a new name.
    pub view_columns: Option<HashMap<i16, Vec<String>>>,
}

/// What the cache knows about a table OID.
#[derive(Debug, Clone)]
pub enum Entry {
    Named(Arc<TableNames>),
    /// The lookup failed or found nothing; asked again after a while.
    Unresolved(Instant),
}

/// The per-target cache and its side connection.
pub struct Catalog {
    connector: UpstreamConnector,
    tables: RwLock<HashMap<u32, Entry>>,
    /// One side connection, opened on first use and reopened after a failure. A tokio mutex
    /// because a lookup holds it across awaits; sessions needing the same OIDs queue here
    /// and then find them cached.
    connection: tokio::sync::Mutex<Option<MaybeTls>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("target", &self.connector.target.name)
            .finish()
    }
}

impl Catalog {
    pub fn new(connector: UpstreamConnector) -> Catalog {
        Catalog {
            connector,
            tables: RwLock::new(HashMap::new()),
            connection: tokio::sync::Mutex::new(None),
        }
    }

    /// The cached entry for `oid`, or `None` when it must be looked up (never asked, or a
    /// failure old enough to retry).
    pub fn get(&self, oid: u32) -> Option<Entry> {
        let tables = self.tables.read().unwrap_or_else(|p| p.into_inner());
        match tables.get(&oid)? {
            Entry::Unresolved(at) if at.elapsed() > RETRY_UNRESOLVED_AFTER => None,
            entry => Some(entry.clone()),
        }
    }

    /// Forgets everything (after a configuration reload, or for tests).
    pub fn clear(&self) {
        self.tables
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Looks up `oids` on the target and caches the result; OIDs that cannot be named are
    /// cached as unresolved. Never fails: the caller decides from the cache.
    pub async fn resolve(&self, oids: &[u32]) {
        let mut connection = self.connection.lock().await;
        // Another session may have resolved them while this one waited.
        let missing: Vec<u32> = oids
            .iter()
            .copied()
            .filter(|&o| self.get(o).is_none())
            .collect();
        if missing.is_empty() {
            return;
        }
        let found = match tokio::time::timeout(
            LOOKUP_TIMEOUT,
            self.query(&mut connection, &missing),
        )
        .await
        {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                tracing::warn!(target = %self.connector.target.name, error = %e, "cannot read table names from the target's catalog; masking column rules by column name alone");
                *connection = None;
                HashMap::new()
            }
            Err(_) => {
                tracing::warn!(target = %self.connector.target.name, "reading the target's catalog timed out; masking column rules by column name alone");
                *connection = None;
                HashMap::new()
            }
        };
        let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
        if tables.len() > MAX_ENTRIES {
            tables.clear();
        }
        let now = Instant::now();
        for oid in missing {
            let entry = match found.get(&oid) {
                Some(names) => Entry::Named(names.clone()),
                None => Entry::Unresolved(now),
            };
            tables.insert(oid, entry);
        }
    }

    /// The RowDescription of `sql` as the target's parser sees it (Parse + Describe; the
    /// statement is never executed). Used to name the columns of a `COPY … TO`, whose output
    /// carries no description of its own.
    pub async fn describe(&self, sql: &str) -> Result<Vec<u8>, String> {
        let mut connection = self.connection.lock().await;
        let result = tokio::time::timeout(LOOKUP_TIMEOUT, async {
            let stream = self.connected(&mut connection).await?;
            let mut out = Vec::new();
            put_message(&mut out, b'P', |b| {
                put_cstr(b, "");
                put_cstr(b, sql);
                b.extend_from_slice(&0i16.to_be_bytes());
            });
            put_message(&mut out, b'D', |b| {
                b.push(b'S');
                put_cstr(b, "");
            });
            put_message(&mut out, b'S', |_| {});
            write_batch(stream, &out).await.map_err(|e| e.to_string())?;
            let mut description = None;
            let messages = read_messages(stream, |tag, body| {
                if tag == b'T' {
                    description = Some(body.to_vec());
                }
            })
            .await?;
            if let Some(e) = messages {
                return Err(format!("describing the COPY source failed: {e}"));
            }
            description.ok_or_else(|| "the COPY source returns no rows".to_string())
        })
        .await;
        match result {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => {
                if !e.starts_with("describing") && !e.starts_with("the COPY") {
                    *connection = None;
                }
                Err(e)
            }
            Err(_) => {
                *connection = None;
                Err("describing the COPY source timed out".into())
            }
        }
    }

    /// The side connection, opened (with the target's credential) when there is none.
    async fn connected<'c>(
        &self,
        connection: &'c mut Option<MaybeTls>,
    ) -> Result<&'c mut MaybeTls, String> {
        if connection.is_none() {
            let upstream = self
                .connector
                .connect(
                    &[("application_name".into(), "ward-catalog".into())],
                    LOOKUP_TIMEOUT,
                )
                .await
                .map_err(|e| e.to_string())?;
            *connection = Some(upstream.stream);
        }
        Ok(connection.as_mut().expect("just connected"))
    }

    async fn query(
        &self,
        connection: &mut Option<MaybeTls>,
        oids: &[u32],
    ) -> Result<HashMap<u32, Arc<TableNames>>, String> {
        let stream = self.connected(connection).await?;
        // OIDs are integers printed by ward itself, so the text cannot inject anything.
        let list = oids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let sql = format!(
            "SELECT c.oid, n.nspname, c.relname, a.attnum, a.attname, \
             CASE WHEN c.relkind IN ('v', 'm') THEN pg_catalog.pg_get_viewdef(c.oid) END \
             FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid \
             WHERE c.oid IN ({list}) AND a.attnum > 0 AND NOT a.attisdropped"
        );
        let mut out = Vec::new();
        put_message(&mut out, b'Q', |b| put_cstr(b, &sql));
        write_batch(stream, &out).await.map_err(|e| e.to_string())?;
        let rows = read_rows(stream).await?;
        let mut building: HashMap<u32, TableNames> = HashMap::new();
        for row in rows {
            let [oid, schema, table, attnum, attname, viewdef] = row.as_slice() else {
                return Err("unexpected catalog row shape".into());
            };
            let (Ok(oid), Ok(attnum)) = (oid.parse::<u32>(), attnum.parse::<i16>()) else {
                return Err("unexpected catalog values".into());
            };
            building
                .entry(oid)
                .or_insert_with(|| TableNames {
                    schema: schema.clone(),
                    table: table.clone(),
                    columns: HashMap::new(),
                    view_columns: (!viewdef.is_empty()).then(|| {
                        crate::classify::view_column_references(viewdef)
                            .unwrap_or_default()
                            .into_iter()
                            .enumerate()
                            .map(|(i, refs)| (i as i16 + 1, refs))
                            .collect()
                    }),
                })
                .columns
                .insert(attnum, attname.clone());
        }
        Ok(building
            .into_iter()
            .map(|(k, v)| (k, Arc::new(v)))
            .collect())
    }
}

/// Reads a simple query's text-format rows up to ReadyForQuery.
async fn read_rows(stream: &mut MaybeTls) -> Result<Vec<Vec<String>>, String> {
    let mut rows = Vec::new();
    let mut malformed = false;
    let error = read_messages(stream, |tag, body| {
        if tag == b'D' {
            match data_row_text(body) {
                Some(row) => rows.push(row),
                None => malformed = true,
            }
        }
    })
    .await?;
    if malformed {
        return Err("malformed DataRow".into());
    }
    match error {
        Some(e) => Err(format!("catalog query failed: {e}")),
        None => Ok(rows),
    }
}

/// Reads messages up to ReadyForQuery, handing each to `on_message`; returns the message
/// of an ErrorResponse if one came.
async fn read_messages(
    stream: &mut MaybeTls,
    mut on_message: impl FnMut(u8, &[u8]),
) -> Result<Option<String>, String> {
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let mut framer = Framer::new(64 << 20);
    let mut error = None;
    loop {
        let n = fill(stream, &mut buf).await.map_err(|e| e.to_string())?;
        if n == 0 {
            return Err("the target closed the catalog connection".into());
        }
        let mut done = false;
        let ready = framer
            .scan::<String>(
                &buf,
                |_| false,
                |scan| {
                    let Scan::Whole { tag, body } = scan else {
                        return Ok(());
                    };
                    on_message(tag, body);
                    match tag {
                        b'E' => {
                            let f = parse_error_fields(body);
                            error = Some(
                                f.message
                                    .map(|m| String::from_utf8_lossy(m).into_owned())
                                    .unwrap_or_default(),
                            );
                        }
                        b'Z' => done = true,
                        _ => {}
                    }
                    Ok(())
                },
            )?
            .map_err(|e| e.to_string())?;
        buf.advance(ready);
        if done {
            return Ok(error);
        }
    }
}

fn data_row_text(body: &[u8]) -> Option<Vec<String>> {
    let (n, mut rest) = read_i16(body)?;
    let mut out = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let (len, tail) = read_i32(rest)?;
        if len < 0 {
            out.push(String::new());
            rest = tail;
            continue;
        }
        let value = tail.get(..len as usize)?;
        out.push(String::from_utf8_lossy(value).into_owned());
        rest = &tail[len as usize..];
    }
    Some(out)
}
