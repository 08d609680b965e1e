//! Masking results on their way to the client: the target-to-client transform.
//!
//! The relay hands every message that can carry row values here — DataRow, CopyData of a
//! COPY TO, ErrorResponse, NoticeResponse, NotificationResponse — and gets back either
//! "unchanged" (the original bytes are forwarded, nothing was allocated) or a re-framed
//! message written into the relay's output arena. Rules come from
//! `ward_core::masking::SessionMasking`; value transforms from `ward-mask`.
//!
//! Per result, a [`Plan`] says what each column needs, from its RowDescription entry: the
//! column rule covering it (resolved through the target's catalog, see `catalog`), the
//! detectors to run on it, its type and its wire format. Plans are cached per
//! RowDescription, so a million-row result costs one plan and a walk over each row.
//!
//! Values by type and format:
//! * text format: every value is text. Textual types are masked in place (lengths change;
//!   messages are re-framed). Numeric types whose text contains a detection (a card number
//!   stored as `bigint`) become NULL, because a masked number would not parse.
//! * binary format: textual types (`text`, `varchar`, `char`, `name`, `json`, `xml`,
//!   `unknown`; `jsonb` after its version byte; `bytea` as raw bytes) are masked like text.
//!   `int8` is checked in its decimal form and becomes NULL when it holds a detection.
//!   Other binary values (arrays, records, …) are scanned as raw bytes and detected spans
//!   are overwritten with `*` in place, which keeps the binary structure valid. A column
//!   rule on a non-textual binary column makes the value NULL: no other masked form is a
//!   valid value of such a type.
//! * JSON (`json`/`jsonb`, and text values that parse as a JSON document): members named
//!   by `json_keys` or by a column rule are masked, and detectors run inside every string.
//! * `bytea` in text format (`\x…` hex) is decoded, scanned and re-encoded; so are text
//!   values that are entirely hex or base64 (`encode(email::bytea, 'base64')`).

use crate::catalog::{Catalog, Entry};
use crate::codec::{HEADER_LEN, put_message, read_cstr, read_i16, read_i32};
use crate::tracker::RowDesc;
use std::sync::Arc;
use ward_core::masking::{ColumnMask, ColumnRef, Origin, SessionMasking};
use ward_mask::{Masker, Outcome, Strategy};

use crate::messages::oid;

/// How a column's values are represented, for choosing a transform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Text of any type whose text form is free (strings, arrays, records, extension types).
    Text,
    /// Text of a number type: a masked value would not parse.
    NumberText,
    /// Text of `int2`/`int4`/`oid`.
    SmallIntText,
    Json,
    ByteaText,
    /// Binary of a textual type: the bytes are the text.
    BinaryText,
    /// Binary json: the bytes are the JSON text.
    BinaryJson,
    /// Binary jsonb: a version byte, then the text.
    BinaryJsonb,
    BinaryInt8,
    /// Any other binary value.
    BinaryOther,
}

fn kind_of(type_oid: u32, binary: bool) -> Kind {
    match (binary, type_oid) {
        (false, oid::JSON | oid::JSONB) => Kind::Json,
        (false, oid::BYTEA) => Kind::ByteaText,
        (false, oid::INT2 | oid::INT4 | oid::OID) => Kind::SmallIntText,
        (false, oid::INT8 | oid::FLOAT4 | oid::FLOAT8 | oid::NUMERIC | oid::MONEY) => {
            Kind::NumberText
        }
        (false, _) => Kind::Text,
        (
            true,
            oid::TEXT
            | oid::VARCHAR
            | oid::BPCHAR
            | oid::NAME
            | oid::CHAR
            | oid::UNKNOWN
            | oid::XML
            | oid::BYTEA,
        ) => Kind::BinaryText,
        (true, oid::JSON) => Kind::BinaryJson,
        (true, oid::JSONB) => Kind::BinaryJsonb,
        (true, oid::INT8) => Kind::BinaryInt8,
        (true, _) => Kind::BinaryOther,
    }
}

/// What one column needs.
#[derive(Debug)]
struct ColumnPlan {
    mask: ColumnMask,
    kind: Kind,
}

/// The per-column plan of one result.
#[derive(Debug)]
struct Plan {
    /// The RowDescription and Bind formats the plan was made for (kept so the cache key's
    /// allocations cannot be reused by another description).
    desc: Arc<[u8]>,
    formats: Option<Arc<[i16]>>,
    refs: crate::tracker::Refs,
    columns: Vec<ColumnPlan>,
    /// Every column passes untouched: rows are forwarded without a walk.
    clear: bool,
}

/// One RowDescription field.
pub(crate) struct Field<'a> {
    pub(crate) name: &'a [u8],
    table_oid: u32,
    attnum: i16,
    pub(crate) type_oid: u32,
    pub(crate) format: i16,
}

/// The fields of a RowDescription body.
pub(crate) fn row_description_fields(body: &[u8]) -> Option<Vec<Field<'_>>> {
    let (n, mut rest) = read_i16(body)?;
    let mut fields = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let (name, tail) = read_cstr(rest)?;
        let (table_oid, tail) = read_i32(tail)?;
        let (attnum, tail) = read_i16(tail)?;
        let (type_oid, tail) = read_i32(tail)?;
        let (_typlen, tail) = read_i16(tail)?;
        let (_typmod, tail) = read_i32(tail)?;
        let (format, tail) = read_i16(tail)?;
        fields.push(Field {
            name,
            table_oid: table_oid as u32,
            attnum,
            type_oid: type_oid as u32,
            format,
        });
        rest = tail;
    }
    Some(fields)
}

/// Who a session's masking rules are chosen for.
pub(crate) fn subject<'a>(
    identity: &'a ward_core::identity::Identity,
    target: &'a ward_core::config::PostgresTarget,
) -> ward_core::masking::MaskSubject<'a> {
    ward_core::masking::MaskSubject {
        identity: &identity.name,
        groups: &identity.groups,
        target: &target.name,
        target_labels: &target.labels,
    }
}

/// The masking state of one session's target-to-client direction.
pub struct ResultMasker {
    session: Arc<SessionMasking>,
    catalog: Arc<Catalog>,
    plan: Option<Plan>,
    /// A COPY TO is streaming rows in this format.
    copy_out: Option<CopyFormat>,
    /// The columns of the running COPY TO, when column rules or JSON keys need them.
    copy_plan: Option<CopyPlan>,
    /// The description of a COPY statement's source, looked up before its rows arrive:
    /// (statement text, RowDescription or why it could not be had).
    described_copy: Option<(String, Described)>,
    copy_scratch: CopyScratch,
}

/// A COPY source's RowDescription, or why it could not be had.
type Described = Result<Arc<[u8]>, String>;

/// How the fields of a COPY TO's rows are masked.
enum CopyPlan {
    Columns(Plan),
    /// The source could not be described: every field is masked whole (fail closed).
    Opaque,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CopyFormat {
    Text,
    Csv,
    Binary,
}

impl ResultMasker {
    pub fn new(session: Arc<SessionMasking>, catalog: Arc<Catalog>) -> ResultMasker {
        ResultMasker {
            session,
            catalog,
            plan: None,
            copy_out: None,
            copy_plan: None,
            described_copy: None,
            copy_scratch: CopyScratch::default(),
        }
    }

    /// Whether COPY output must be planned per column (column rules or JSON keys apply).
    fn copy_needs_columns(&self) -> bool {
        self.session.has_column_rules() || !self.session.json_keys().is_empty()
    }

    /// For a COPY TO about to stream (its CopyOutResponse is next), the query whose
    /// description names its columns — `None` when no description is needed or it has
    /// been looked up already.
    pub fn copy_source_to_describe(&self, statement: Option<&str>) -> Option<String> {
        if !self.copy_needs_columns() {
            return None;
        }
        let statement = statement?;
        if self
            .described_copy
            .as_ref()
            .is_some_and(|(text, _)| text == statement)
        {
            return None;
        }
        copy_source_query(statement)
    }

    /// Keeps the description of a COPY statement's source for its CopyOutResponse.
    pub fn set_copy_description(
        &mut self,
        statement: String,
        description: Result<Vec<u8>, String>,
    ) {
        if let Err(e) = &description {
            tracing::warn!(error = %e, "cannot name the columns of a COPY TO; masking every field whole");
        }
        self.described_copy = Some((statement, description.map(Arc::from)));
    }

    /// The rules in force.
    pub fn session(&self) -> &Arc<SessionMasking> {
        &self.session
    }

    /// Puts newly reloaded rules in force (plans are rebuilt for the next result).
    pub fn replace_rules(&mut self, session: Arc<SessionMasking>) {
        self.session = session;
        self.plan = None;
    }

    /// Table OIDs of a RowDescription that must be named through the catalog before its
    /// rows can be planned (empty when no column rule needs table names or all are cached).
    pub fn tables_to_resolve(&self, row_description: &[u8]) -> Vec<u32> {
        if !self.session.has_column_rules() {
            return Vec::new();
        }
        let mut oids: Vec<u32> = row_description_fields(row_description)
            .unwrap_or_default()
            .iter()
            .map(|f| f.table_oid)
            .filter(|&o| o != 0 && self.catalog.get(o).is_none())
            .collect();
        oids.sort_unstable();
        oids.dedup();
        oids
    }

    /// The catalog names are looked up in.
    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// Notes a CopyOutResponse; `statement` is the COPY's text, which says whether rows are
    /// CSV (the response itself only says text or binary).
    pub fn copy_out_started(
        &mut self,
        body: &[u8],
        statement: Option<&str>,
        refs: crate::tracker::Refs,
    ) {
        let binary = body.first() == Some(&1);
        self.copy_out = Some(if binary {
            CopyFormat::Binary
        } else if statement.is_some_and(is_csv_copy) {
            CopyFormat::Csv
        } else {
            CopyFormat::Text
        });
        self.copy_plan = None;
        if self.copy_needs_columns() && !binary {
            let described = match (&self.described_copy, statement) {
                (Some((text, Ok(desc))), Some(s)) if text == s => Some(desc.clone()),
                _ => None,
            };
            self.copy_plan = Some(
                match described.and_then(|desc| {
                    self.build_plan(&RowDesc {
                        desc,
                        formats: None,
                        refs: refs.clone(),
                    })
                }) {
                    Some(plan) => CopyPlan::Columns(plan),
                    None => CopyPlan::Opaque,
                },
            );
        }
    }

    /// Notes the end of a COPY TO (CopyDone, or an error / ReadyForQuery).
    pub fn copy_out_ended(&mut self) {
        self.copy_out = None;
        self.copy_plan = None;
    }

    /// Masks one DataRow described by `row` (or, without a description, scans every value
    /// as text with every detector). Writes the re-framed message into `out` and returns
    /// true when anything changed; on false nothing was written.
    pub fn data_row(&mut self, row: Option<&RowDesc>, body: &[u8], out: &mut Vec<u8>) -> bool {
        let plan = match row {
            Some(row) => {
                self.ensure_plan(row);
                self.plan.as_ref()
            }
            None => None,
        };
        let start = out.len();
        out.push(b'D');
        out.extend_from_slice(&[0; 4]);
        let changed = match plan {
            Some(plan) if plan.clear => false,
            Some(plan) => mask_fields(body, out, |i| plan.columns.get(i), &self.session),
            None => {
                let fallback = ColumnPlan {
                    mask: ColumnMask {
                        whole: None,
                        content: Some(self.session.everywhere().clone()),
                    },
                    kind: Kind::Text,
                };
                mask_fields(body, out, |_| Some(&fallback), &self.session)
            }
        };
        finish(out, start, changed)
    }

    /// Masks one CopyData of a COPY TO; false (nothing written) when unchanged or when no
    /// COPY TO is running (COPY FROM data comes from the client and is not masked).
    pub fn copy_data(&mut self, body: &[u8], out: &mut Vec<u8>) -> bool {
        let Some(format) = self.copy_out else {
            return false;
        };
        let masker = self.session.everywhere().clone();
        let start = out.len();
        out.push(b'd');
        out.extend_from_slice(&[0; 4]);
        let csv = format == CopyFormat::Csv;
        let changed = match (format, &self.copy_plan) {
            (CopyFormat::Text | CopyFormat::Csv, Some(plan)) => mask_copy_fields(
                plan,
                &self.session,
                &masker,
                body,
                csv,
                out,
                &mut self.copy_scratch,
            ),
            (CopyFormat::Text | CopyFormat::Csv, None) => matches!(
                ward_mask::mask_copy_line_into(&masker, body, format == CopyFormat::Csv, out),
                Outcome::Masked
            ),
            (CopyFormat::Binary, _) => {
                out.extend_from_slice(body);
                star_out(&masker, &mut out[start + HEADER_LEN..])
            }
        };
        finish(out, start, changed)
    }

    /// Masks the free-text fields of an ErrorResponse or NoticeResponse (`tag` `E` or `N`).
    /// Besides the detectors, a unique-violation detail `Key (col)=(value)` naming a masked
    /// column hides the value, and a `Failing row contains (…)` detail is withheld when
    /// column rules are in force (it lists every column of the row).
    ///
    /// `refs` are the output references of the statement the error answers: when they name
    /// a masked column, quoted values in the message and detail are hidden too
    /// (`invalid input syntax for type integer: "S3CR3T"` from `select secret::int`).
    pub fn error_or_notice(
        &self,
        tag: u8,
        body: &[u8],
        refs: Option<&crate::tracker::OutputRefs>,
        out: &mut Vec<u8>,
    ) -> bool {
        let masker = self.session.everywhere();
        let hide_quoted = refs.is_some_and(|r| self.session.derived(&r.all).is_some());
        let start = out.len();
        let mut changed = false;
        put_message(out, tag, |b| {
            let mut rest = body;
            while let Some((&kind, tail)) = rest.split_first() {
                if kind == 0 {
                    break;
                }
                let Some((value, tail)) = read_cstr(tail) else {
                    // Malformed: forward the original rather than guess.
                    b.extend_from_slice(rest);
                    return;
                };
                rest = tail;
                b.push(kind);
                let fixed_field =
                    matches!(kind, b'S' | b'V' | b'C' | b'P' | b'p' | b'F' | b'L' | b'R');
                if !fixed_field {
                    if kind == b'D' && self.mask_detail(value, b) {
                        changed = true;
                        b.push(0);
                        continue;
                    }
                    if hide_quoted && matches!(kind, b'M' | b'D') {
                        let mut masked = Vec::new();
                        let base: &[u8] = if mask_text(masker, value, &mut masked) {
                            changed = true;
                            &masked
                        } else {
                            value
                        };
                        changed |= star_quoted(base, b);
                        b.push(0);
                        continue;
                    }
                    if mask_text(masker, value, b) {
                        changed = true;
                        b.push(0);
                        continue;
                    }
                }
                b.extend_from_slice(value);
                b.push(0);
            }
            b.push(0);
        });
        finish_framed(out, start, changed)
    }

    /// `Key (email)=(x@y.com) already exists.` and `Failing row contains (…).`
    fn mask_detail(&self, detail: &[u8], out: &mut Vec<u8>) -> bool {
        if let Some(rest) = detail.strip_prefix(b"Key (")
            && let Some(close) = memchr::memmem::find(rest, b")=(")
        {
            let columns = &rest[..close];
            let values_start = close + 3;
            let Some(values_len) = memchr::memrchr(b')', &rest[values_start..]) else {
                return false;
            };
            let names = String::from_utf8_lossy(columns);
            let covered = names.split(',').map(str::trim).any(|name| {
                self.session
                    .column(&ColumnRef {
                        name: name.trim_matches('"'),
                        attribute: None,
                        origin: Origin::Unresolved,
                    })
                    .whole
                    .is_some()
            });
            if !covered {
                return false;
            }
            out.extend_from_slice(b"Key (");
            out.extend_from_slice(columns);
            out.extend_from_slice(b")=(masked by ward");
            out.extend_from_slice(&rest[values_start + values_len..]);
            return true;
        }
        if detail.starts_with(b"Failing row contains (") && self.session.has_column_rules() {
            out.extend_from_slice(b"Failing row contains (masked by ward).");
            return true;
        }
        false
    }

    /// Masks a NotificationResponse's payload.
    pub fn notification(&self, body: &[u8], out: &mut Vec<u8>) -> bool {
        let Some((pid, rest)) = body.split_at_checked(4) else {
            return false;
        };
        let Some((channel, rest)) = read_cstr(rest) else {
            return false;
        };
        let Some((payload, _)) = read_cstr(rest) else {
            return false;
        };
        let start = out.len();
        let mut changed = false;
        put_message(out, b'A', |b| {
            b.extend_from_slice(pid);
            b.extend_from_slice(channel);
            b.push(0);
            changed = mask_text(self.session.everywhere(), payload, b);
            if !changed {
                b.extend_from_slice(payload);
            }
            b.push(0);
        });
        finish_framed(out, start, changed)
    }

    /// Makes the cached plan the one for `row`, rebuilt when the description changed.
    fn ensure_plan(&mut self, row: &RowDesc) {
        // Compared by content, not identity: a simple query's RowDescription arrives anew
        // each time, and a workload repeating one statement shape should plan it once.
        let cached = self.plan.as_ref().is_some_and(|p| {
            (Arc::ptr_eq(&p.desc, &row.desc) || p.desc == row.desc)
                && match (&p.refs, &row.refs) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
                && match (&p.formats, &row.formats) {
                    (None, None) => true,
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    _ => false,
                }
        });
        if !cached {
            self.plan = self.build_plan(row);
        }
    }

    /// Masks what a statement's audit record would otherwise keep in clear: its text,
    /// parameters and error message (the audit holds masked values only). A result sample
    /// was taken from the masked rows; its values are scanned once more with every
    /// detector, as the other fields are (a value a detector recognises never reaches the
    /// audit in clear, whatever the rules' `scan` lists).
    pub fn mask_event(&self, event: &mut ward_core::event::StatementEvent) {
        let masker = self.session.everywhere();
        let mut out = Vec::new();
        if mask_text(masker, event.text.as_bytes(), &mut out) {
            event.text = String::from_utf8_lossy(&out).into();
        }
        let sample_values = event
            .result_sample
            .iter_mut()
            .flat_map(|s| s.rows.iter_mut().flatten().flatten());
        for field in [&mut event.params, &mut event.error]
            .into_iter()
            .flatten()
            .chain(sample_values)
        {
            out.clear();
            if mask_text(masker, field.as_bytes(), &mut out) {
                *field = String::from_utf8_lossy(&out).into_owned();
            }
        }
    }

    fn build_plan(&self, row: &RowDesc) -> Option<Plan> {
        let fields = row_description_fields(&row.desc)?;
        let format_of = |i: usize, own: i16| -> i16 {
            match row.formats.as_deref() {
                None => own,
                Some([]) => 0,
                Some([one]) => *one,
                Some(many) => many.get(i).copied().unwrap_or(0),
            }
        };
        let refs = row.refs.as_deref();
        // The strategy for computed column i, from what the statement's select lists use.
        let derived = |i: usize| -> Option<Strategy> {
            let refs = refs?;
            match &refs.select_list {
                Some(list) if list.len() == fields.len() => {
                    let own = &list[i];
                    // Its own references name a masked column, or it uses a name that may
                    // be an alias of one defined in a CTE or subquery.
                    self.session.derived(own).or_else(|| {
                        if own.is_empty() {
                            None
                        } else {
                            self.session.derived(&refs.nested)
                        }
                    })
                }
                _ => self.session.derived(&refs.all),
            }
        };
        let mut columns = Vec::with_capacity(fields.len());
        for (i, f) in fields.iter().enumerate() {
            let name = String::from_utf8_lossy(f.name);
            let entry = (f.table_oid != 0)
                .then(|| self.catalog.get(f.table_oid))
                .flatten();
            let mask = match &entry {
                Some(Entry::Named(t)) => {
                    let mut mask = self.session.column(&ColumnRef {
                        name: &name,
                        attribute: t.columns.get(&f.attnum).map(String::as_str),
                        origin: Origin::Table {
                            schema: &t.schema,
                            table: &t.table,
                        },
                    });
                    if mask.whole.is_none()
                        && let Some(refs) = t.view_columns.as_ref().and_then(|v| v.get(&f.attnum))
                    {
                        // A view column: masked as what it is computed from.
                        mask.whole = self.session.derived(refs);
                    }
                    mask
                }
                _ => self.session.column(&ColumnRef {
                    name: &name,
                    attribute: None,
                    origin: if f.table_oid == 0 {
                        Origin::Computed
                    } else {
                        Origin::Unresolved
                    },
                }),
            };
            let kind = kind_of(f.type_oid, format_of(i, f.format) == 1);
            let mut mask = mask;
            // attnum 0 is a whole-row reference (`select t from customers t`), which the
            // server reports with the table's OID: it carries every column.
            if (f.table_oid == 0 || f.attnum <= 0)
                && mask.whole.is_none()
                && !matches!(kind, Kind::Json | Kind::BinaryJson | Kind::BinaryJsonb)
            {
                // A computed value of a statement that reads a masked column: masked whole
                // (JSON documents keep key masking instead, which names the columns).
                mask.whole = derived(i);
            }
            columns.push(ColumnPlan { mask, kind });
        }
        let clear = columns.iter().all(|c| c.mask.is_clear());
        Some(Plan {
            desc: row.desc.clone(),
            formats: row.formats.clone(),
            refs: row.refs.clone(),
            columns,
            clear,
        })
    }
}

/// Sets the length of the message written at `start`, or removes it when unchanged.
fn finish(out: &mut Vec<u8>, start: usize, changed: bool) -> bool {
    if !changed {
        out.truncate(start);
        return false;
    }
    let len = (out.len() - start - 1) as u32;
    out[start + 1..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
    true
}

/// As [`finish`] for a message `put_message` already framed.
fn finish_framed(out: &mut Vec<u8>, start: usize, changed: bool) -> bool {
    if !changed {
        out.truncate(start);
    }
    changed
}

/// Walks a DataRow body, writing the masked row body after the header at `out`'s end.
fn mask_fields<'p>(
    body: &[u8],
    out: &mut Vec<u8>,
    plan_of: impl Fn(usize) -> Option<&'p ColumnPlan>,
    session: &SessionMasking,
) -> bool {
    let Some((n, mut rest)) = read_i16(body) else {
        return false;
    };
    out.extend_from_slice(&n.to_be_bytes());
    let mut changed = false;
    for i in 0..n.max(0) as usize {
        let Some((len, tail)) = read_i32(rest) else {
            return false;
        };
        if len < 0 {
            out.extend_from_slice(&len.to_be_bytes());
            rest = tail;
            continue;
        }
        let Some(value) = tail.get(..len as usize) else {
            return false;
        };
        rest = &tail[len as usize..];
        let len_at = out.len();
        out.extend_from_slice(&[0; 4]);
        let outcome = match plan_of(i) {
            Some(plan) if !plan.mask.is_clear() => mask_value(plan, value, out, session),
            _ => Outcome::Unchanged,
        };
        match outcome {
            Outcome::Unchanged => {
                out.extend_from_slice(value);
                out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
            }
            Outcome::Masked => {
                changed = true;
                let new_len = (out.len() - len_at - 4) as i32;
                out[len_at..len_at + 4].copy_from_slice(&new_len.to_be_bytes());
            }
            Outcome::Null => {
                changed = true;
                out.truncate(len_at);
                out.extend_from_slice(&(-1i32).to_be_bytes());
            }
        }
    }
    if !rest.is_empty() {
        // Trailing bytes the server should not send: forward the row as it was.
        return false;
    }
    changed
}

/// Masks one non-NULL value per its column's plan, appending a masked value to `out`.
fn mask_value(
    plan: &ColumnPlan,
    value: &[u8],
    out: &mut Vec<u8>,
    session: &SessionMasking,
) -> Outcome {
    let everywhere = session.everywhere();
    if let Some(strategy) = &plan.mask.whole {
        let masker = plan.mask.content.as_ref().unwrap_or(everywhere);
        return mask_whole(masker, strategy, plan.kind, value, out);
    }
    let Some(masker) = &plan.mask.content else {
        return Outcome::Unchanged;
    };
    match plan.kind {
        Kind::Text => mask_text_outcome(masker, session, value, out),
        Kind::Json | Kind::BinaryJson => json_or_text(masker, session, value, out),
        Kind::ByteaText => ward_mask::mask_bytea_hex_into(masker, value, out),
        // A 2- or 4-byte integer has at most 10 digits: no built-in detector can match it.
        Kind::SmallIntText if !masker.has_custom() => Outcome::Unchanged,
        Kind::NumberText | Kind::SmallIntText | Kind::BinaryInt8 => {
            let mut digits = itoa_buf();
            let text: &[u8] = if plan.kind == Kind::BinaryInt8 {
                match <[u8; 8]>::try_from(value) {
                    Ok(b) => write_i64(&mut digits, i64::from_be_bytes(b)),
                    Err(_) => return Outcome::Unchanged,
                }
            } else {
                value
            };
            if masker.find(text).is_empty() {
                Outcome::Unchanged
            } else {
                Outcome::Null
            }
        }
        Kind::BinaryText => mask_text_outcome(masker, session, value, out),
        Kind::BinaryJsonb => match value.split_first() {
            Some((&1, doc)) => {
                let at = out.len();
                out.push(1);
                match json_or_text(masker, session, doc, out) {
                    Outcome::Unchanged => {
                        out.truncate(at);
                        Outcome::Unchanged
                    }
                    other => other,
                }
            }
            _ => Outcome::Unchanged,
        },
        Kind::BinaryOther => {
            let at = out.len();
            out.extend_from_slice(value);
            if star_out(masker, &mut out[at..]) {
                Outcome::Masked
            } else {
                out.truncate(at);
                Outcome::Unchanged
            }
        }
    }
}

/// A column rule: the whole value, in a form valid for its type and format.
fn mask_whole(
    masker: &Masker,
    strategy: &Strategy,
    kind: Kind,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Outcome {
    match kind {
        Kind::Text | Kind::BinaryText => {
            ward_mask::mask_encoded_whole_into(masker, strategy, value, out)
                .unwrap_or_else(|| redact_whole(masker, strategy, value, out))
        }
        Kind::Json | Kind::BinaryJson | Kind::BinaryJsonb => {
            // A JSON value must stay JSON: the masked text becomes a JSON string.
            let at = out.len();
            if kind == Kind::BinaryJsonb {
                out.push(1);
            }
            let mut inner = Vec::new();
            let source = if kind == Kind::BinaryJsonb {
                value.get(1..).unwrap_or_default()
            } else {
                value
            };
            match masker.mask_whole_into(strategy, source, &mut inner) {
                Outcome::Null => {
                    out.truncate(at);
                    Outcome::Null
                }
                Outcome::Unchanged => {
                    out.truncate(at);
                    Outcome::Null
                }
                Outcome::Masked => {
                    ward_mask::json::write_string(&inner, out);
                    Outcome::Masked
                }
            }
        }
        Kind::ByteaText => ward_mask::mask_encoded_whole_into(masker, strategy, value, out)
            .unwrap_or(Outcome::Null),
        // No masked form is a valid number or binary value of another type.
        Kind::NumberText | Kind::SmallIntText | Kind::BinaryInt8 | Kind::BinaryOther => {
            Outcome::Null
        }
    }
}

/// A column rule on a text value. For `redact`, detected spans keep their detector's
/// format-preserving redaction (`j***@*******.com` inside a longer text, or in
/// `string_agg(email, ',')`) and every other letter and digit becomes `*`; the other
/// strategies replace the value as a whole.
fn redact_whole(masker: &Masker, strategy: &Strategy, value: &[u8], out: &mut Vec<u8>) -> Outcome {
    if *strategy != Strategy::Redact || !masker.has_detectors() {
        return masker.mask_whole_into(strategy, value, out);
    }
    let spans: Vec<(usize, usize)> = masker
        .find(value)
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    if spans.is_empty() || spans == [(0, value.len())] {
        return masker.mask_whole_into(strategy, value, out);
    }
    let mut pos = 0;
    for (start, end) in spans {
        star_alphanumerics(&value[pos..start], out);
        let span = &value[start..end];
        let at = out.len();
        match masker.mask_into(span, out) {
            Outcome::Masked => {}
            Outcome::Unchanged | Outcome::Null => {
                out.truncate(at);
                star_alphanumerics(span, out);
            }
        }
        pos = end;
    }
    star_alphanumerics(&value[pos..], out);
    Outcome::Masked
}

/// Letters and digits become `*`, one per character (a multi-byte UTF-8 character too);
/// punctuation and spaces stay, so the shape of the text survives.
fn star_alphanumerics(text: &[u8], out: &mut Vec<u8>) {
    for &c in text {
        if c.is_ascii_alphanumeric() || (c >= 0xC0) {
            out.push(b'*');
        } else if c >= 0x80 {
            // A UTF-8 continuation byte: its character is already one `*`.
        } else {
            out.push(c);
        }
    }
}

/// Text values: a JSON document gets key masking; hex/base64-encoded content is decoded.
fn mask_text_outcome(
    masker: &Masker,
    session: &SessionMasking,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Outcome {
    if matches!(value.first(), Some(b'{' | b'['))
        && !session.json_keys().is_empty()
        && let Some(outcome) = ward_mask::mask_json_into(masker, session.json_keys(), value, out)
    {
        return outcome;
    }
    if value.starts_with(b"\\x") {
        match ward_mask::mask_bytea_hex_into(masker, value, out) {
            Outcome::Unchanged => {}
            other => return other,
        }
    }
    match masker.mask_into(value, out) {
        Outcome::Unchanged => ward_mask::mask_encoded_into(masker, value, out),
        other => other,
    }
}

fn json_or_text(
    masker: &Masker,
    session: &SessionMasking,
    doc: &[u8],
    out: &mut Vec<u8>,
) -> Outcome {
    match ward_mask::mask_json_into(masker, session.json_keys(), doc, out) {
        Some(outcome) => outcome,
        None => masker.mask_into(doc, out),
    }
}

/// Masks free text (error fields, notification payloads); true when something was written.
fn mask_text(masker: &Masker, value: &[u8], out: &mut Vec<u8>) -> bool {
    let at = out.len();
    match masker.mask_into(value, out) {
        Outcome::Masked => true,
        Outcome::Null => {
            out.truncate(at);
            out.extend_from_slice(b"(masked by ward)");
            true
        }
        Outcome::Unchanged => match ward_mask::mask_encoded_into(masker, value, out) {
            Outcome::Masked => true,
            Outcome::Null => {
                out.truncate(at);
                out.extend_from_slice(b"(masked by ward)");
                true
            }
            Outcome::Unchanged => false,
        },
    }
}

/// Copies `text` with the letters and digits between double quotes starred; true when
/// anything was starred.
fn star_quoted(text: &[u8], out: &mut Vec<u8>) -> bool {
    let mut quoted = false;
    let mut starred = false;
    for &c in text {
        if c == b'"' {
            quoted = !quoted;
            out.push(c);
        } else if quoted && (c.is_ascii_alphanumeric() || c >= 0x80) {
            if !(0x80..0xC0).contains(&c) {
                out.push(b'*');
            }
            starred = true;
        } else {
            out.push(c);
        }
    }
    starred
}

/// Overwrites every detected span with `*`, keeping the length (for binary structures whose
/// layout must not change). True when something was overwritten.
fn star_out(masker: &Masker, bytes: &mut [u8]) -> bool {
    let spans: Vec<(usize, usize)> = masker
        .find(bytes)
        .iter()
        .map(|m| (m.start, m.end))
        .collect();
    for &(s, e) in &spans {
        bytes[s..e].fill(b'*');
    }
    !spans.is_empty()
}

fn itoa_buf() -> [u8; 24] {
    [0; 24]
}

fn write_i64(buf: &mut [u8; 24], v: i64) -> &[u8] {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{v}");
    let n = cursor.position() as usize;
    &buf[..n]
}

/// The query a `COPY … TO` reads: its `(query)`, or `SELECT cols FROM table`.
fn copy_source_query(statement: &str) -> Option<String> {
    use pg_query::NodeEnum;
    let parsed = pg_query::parse(statement).ok()?;
    let NodeEnum::CopyStmt(copy) = crate::classify::first_statement(&parsed)? else {
        return None;
    };
    if copy.is_from {
        return None;
    }
    if let Some(query) = copy.query.as_ref().and_then(|q| q.node.as_ref()) {
        return query.deparse().ok();
    }
    let relation = copy.relation.as_ref()?;
    let quote = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    let table = if relation.schemaname.is_empty() {
        quote(&relation.relname)
    } else {
        format!(
            "{}.{}",
            quote(&relation.schemaname),
            quote(&relation.relname)
        )
    };
    let columns: Vec<String> = copy
        .attlist
        .iter()
        .filter_map(|n| match n.node.as_ref()? {
            NodeEnum::String(s) => Some(quote(&s.sval)),
            _ => None,
        })
        .collect();
    let columns = if columns.is_empty() {
        "*".to_string()
    } else {
        columns.join(", ")
    };
    Some(format!("SELECT {columns} FROM {table}"))
}

/// Masks one COPY row field by field, per the plan; true when anything changed (the
/// masked row is then in `out`, after the header the caller wrote).
fn mask_copy_fields(
    plan: &CopyPlan,
    session: &SessionMasking,
    everywhere: &Arc<Masker>,
    line: &[u8],
    csv: bool,
    out: &mut Vec<u8>,
    scratch: &mut CopyScratch,
) -> bool {
    let (content, newline) = match line.strip_suffix(b"\n") {
        Some(c) => (c, &b"\n"[..]),
        None => (line, &b""[..]),
    };
    let ranges = &mut scratch.ranges;
    ranges.clear();
    if csv {
        split_csv(content, ranges);
    } else {
        let mut start = 0;
        for at in memchr::memchr_iter(b'\t', content) {
            ranges.push((start, at));
            start = at + 1;
        }
        ranges.push((start, content.len()));
    }
    let delimiter = if csv { b',' } else { b'\t' };
    let mismatched = matches!(plan, CopyPlan::Columns(p) if p.columns.len() != ranges.len());
    let mut changed = false;
    for (i, &(from, to)) in ranges.iter().enumerate() {
        let field = &content[from..to];
        if i > 0 {
            out.push(delimiter);
        }
        let is_null = if csv {
            field.is_empty()
        } else {
            field == b"\\N"
        };
        if is_null {
            out.extend_from_slice(field);
            continue;
        }
        let column = match plan {
            CopyPlan::Columns(p) if !mismatched => p.columns.get(i),
            _ => None,
        };
        let whole = match (plan, column) {
            (CopyPlan::Opaque, _) => Some(&Strategy::Redact),
            // Fields do not line up with the described columns (a custom delimiter):
            // column rules cannot be placed, so every field is masked whole.
            _ if mismatched => Some(&Strategy::Redact),
            (_, Some(c)) => c.mask.whole.as_ref(),
            (_, None) => None,
        };
        let content_masker: Option<&Masker> = match column {
            Some(c) => c.mask.content.as_deref(),
            None => Some(everywhere),
        };
        let at = out.len();
        if let Some(strategy) = whole {
            let value = unescape_field(field, csv, &mut scratch.value);
            scratch.masked.clear();
            let kind = column.map_or(Kind::Text, |c| c.kind);
            let masker = content_masker.unwrap_or(everywhere);
            match mask_whole(masker, strategy, kind, value, &mut scratch.masked) {
                Outcome::Null => {
                    if !csv {
                        out.extend_from_slice(b"\\N");
                    }
                }
                _ => escape_field(&scratch.masked, csv, out),
            }
            changed = true;
            continue;
        }
        let Some(masker) = content_masker else {
            out.extend_from_slice(field);
            continue;
        };
        if column.is_some_and(|c| c.kind == Kind::Json) {
            let value = unescape_field(field, csv, &mut scratch.value);
            scratch.masked.clear();
            if let Some(Outcome::Masked) =
                ward_mask::mask_json_into(masker, session.json_keys(), value, &mut scratch.masked)
            {
                escape_field(&scratch.masked, csv, out);
                changed = true;
                continue;
            }
        }
        match ward_mask::mask_copy_line_into(masker, field, csv, out) {
            Outcome::Unchanged => out.extend_from_slice(field),
            Outcome::Masked => changed = true,
            Outcome::Null => {
                out.truncate(at);
                if !csv {
                    out.extend_from_slice(b"\\N");
                }
                changed = true;
            }
        }
    }
    out.extend_from_slice(newline);
    changed
}

/// Buffers reused across COPY rows, so masking a row allocates nothing.
#[derive(Default)]
pub(crate) struct CopyScratch {
    ranges: Vec<(usize, usize)>,
    value: Vec<u8>,
    masked: Vec<u8>,
}

/// A COPY field's value: borrowed when it has no escapes or quotes, else decoded into `buf`.
fn unescape_field<'a>(field: &'a [u8], csv: bool, buf: &'a mut Vec<u8>) -> &'a [u8] {
    if csv {
        if field.first() != Some(&b'"') {
            return field;
        }
        buf.clear();
        ward_mask::copy::unquote_csv_field(field, buf);
    } else {
        if memchr::memchr(b'\\', field).is_none() {
            return field;
        }
        buf.clear();
        ward_mask::copy::unescape_text_field(field, buf);
    }
    buf
}

fn escape_field(value: &[u8], csv: bool, out: &mut Vec<u8>) {
    if csv {
        ward_mask::copy::quote_csv_field(value, out);
    } else {
        ward_mask::copy::escape_text_field(value, out);
    }
}

/// Splits a CSV row at commas outside quotes (PostgreSQL's default CSV format).
fn split_csv(line: &[u8], ranges: &mut Vec<(usize, usize)>) {
    let mut quoted = false;
    let mut start = 0;
    for (i, &c) in line.iter().enumerate() {
        match c {
            b'"' => quoted = !quoted,
            b',' if !quoted => {
                ranges.push((start, i));
                start = i + 1;
            }
            _ => {}
        }
    }
    ranges.push((start, line.len()));
}

/// Whether a COPY statement writes CSV (`FORMAT csv`, or the old `CSV` keyword).
fn is_csv_copy(statement: &str) -> bool {
    statement.to_ascii_lowercase().contains("csv")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masker_for_tests() -> ResultMasker {
        let config: ward_core::masking::MaskingConfig = serde_yaml::from_str(
            "rules:\n  - { name: a, columns: [secret, '*.notes'], detectors: all, json_keys: [password] }",
        )
        .unwrap();
        let masking = Arc::new(ward_core::masking::Masking::with_key(&config, None).unwrap());
        let labels = std::collections::BTreeMap::new();
        let session = masking
            .for_session(&ward_core::masking::MaskSubject {
                identity: "ci",
                groups: &[],
                target: "t",
                target_labels: &labels,
            })
            .unwrap();
        let target = ward_core::config::PostgresTarget {
            name: "t".into(),
            address: "127.0.0.1:1".into(),
            database: "t".into(),
            user: "u".into(),
            password: None,
            tls: Default::default(),
            labels,
        };
        let connector = crate::upstream::UpstreamConnector::new(Arc::new(target)).unwrap();
        ResultMasker::new(session, Arc::new(Catalog::new(connector)))
    }

    fn row_description(columns: &[(&str, u32, i16)]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(columns.len() as i16).to_be_bytes());
        for (name, type_oid, format) in columns {
            b.extend_from_slice(name.as_bytes());
            b.push(0);
            b.extend_from_slice(&0i32.to_be_bytes());
            b.extend_from_slice(&0i16.to_be_bytes());
            b.extend_from_slice(&(*type_oid as i32).to_be_bytes());
            b.extend_from_slice(&(-1i16).to_be_bytes());
            b.extend_from_slice(&(-1i32).to_be_bytes());
            b.extend_from_slice(&format.to_be_bytes());
        }
        b
    }

    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&(values.len() as i16).to_be_bytes());
        for v in values {
            match v {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    /// The masked DataRow's values, parsed back from the re-framed message.
    fn values_of(message: &[u8]) -> Vec<Option<Vec<u8>>> {
        assert_eq!(message[0], b'D');
        let len = u32::from_be_bytes(message[1..5].try_into().unwrap()) as usize;
        assert_eq!(
            len + 1,
            message.len(),
            "length prefix matches the re-framed message"
        );
        let (n, mut rest) = read_i16(&message[5..]).unwrap();
        let mut out = Vec::new();
        for _ in 0..n {
            let (l, tail) = read_i32(rest).unwrap();
            if l < 0 {
                out.push(None);
                rest = tail;
            } else {
                out.push(Some(tail[..l as usize].to_vec()));
                rest = &tail[l as usize..];
            }
        }
        assert!(rest.is_empty());
        out
    }

    #[test]
    fn data_rows_are_reframed_with_masked_values() {
        let mut m = masker_for_tests();
        let desc = RowDesc {
            desc: row_description(&[
                ("id", oid::INT4, 0),
                ("secret", oid::TEXT, 0),
                ("contact", oid::TEXT, 0),
                ("card", oid::INT8, 1),
                ("doc", oid::JSONB, 1),
            ])
            .into(),
            formats: None,
            refs: None,
        };
        let card = 4111111111111111i64.to_be_bytes();
        let body = data_row(&[
            Some(b"7"),
            Some(b"zebra"),
            Some(b"mail ann@example.com"),
            Some(&card),
            Some(b"\x01{\"password\": \"hunter2\", \"x\": 1}"),
        ]);
        let mut out = Vec::new();
        assert!(m.data_row(Some(&desc), &body, &mut out));
        let values = values_of(&out);
        assert_eq!(values[0].as_deref(), Some(&b"7"[..]));
        assert_eq!(values[1].as_deref(), Some(&b"*****"[..]));
        assert_eq!(values[2].as_deref(), Some(&b"mail a**@*******.com"[..]));
        assert_eq!(values[3], None, "a card in a binary bigint becomes NULL");
        let doc = values[4].clone().unwrap();
        assert_eq!(doc[0], 1, "jsonb keeps its version byte");
        assert!(!String::from_utf8_lossy(&doc).contains("hunter2"));
        // A clean row is forwarded as it was: nothing written.
        let clean = data_row(&[Some(b"8"), None, Some(b"nothing here"), None, None]);
        let mut out = Vec::new();
        assert!(!m.data_row(Some(&desc), &clean, &mut out));
        assert!(out.is_empty());
    }

    #[test]
    fn malformed_messages_never_panic_and_are_forwarded_as_they_came() {
        let mut m = masker_for_tests();
        let desc = RowDesc {
            desc: row_description(&[("secret", oid::TEXT, 0), ("x", 1009, 1)]).into(),
            formats: Some(Arc::from(vec![0i16, 1])),
            refs: None,
        };
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let good = data_row(&[Some(b"zebra"), Some(b"ann@example.com")]);
        for _ in 0..20_000 {
            let mut body = good.clone();
            let cut = (next() as usize) % (body.len() + 1);
            body.truncate(cut);
            for _ in 0..(next() % 3) {
                if !body.is_empty() {
                    let i = (next() as usize) % body.len();
                    body[i] = next() as u8;
                }
            }
            let mut out = Vec::new();
            if m.data_row(Some(&desc), &body, &mut out) {
                let _ = values_of(&out);
            }
            let random_desc = RowDesc {
                desc: body.clone().into(),
                formats: None,
                refs: None,
            };
            let mut out = Vec::new();
            let _ = m.data_row(Some(&random_desc), &body, &mut out);
            let _ = m.data_row(None, &body, &mut out);
            let _ = m.error_or_notice(b'E', &body, None, &mut out);
            let _ = m.notification(&body, &mut out);
            m.copy_out_started(&[0], Some("copy t to stdout with csv"), None);
            let _ = m.copy_data(&body, &mut out);
            m.copy_out_ended();
        }
    }

    #[test]
    fn csv_copies_are_recognised() {
        assert!(is_csv_copy("COPY t TO STDOUT (FORMAT csv)"));
        assert!(is_csv_copy("copy t to stdout with csv header"));
        assert!(!is_csv_copy("copy t to stdout"));
    }

    #[test]
    fn copy_sources_are_queries_the_target_can_describe() {
        assert_eq!(
            copy_source_query("copy customers to stdout").as_deref(),
            Some("SELECT * FROM \"customers\"")
        );
        assert_eq!(
            copy_source_query("COPY public.customers (id, email) TO STDOUT WITH (FORMAT csv)")
                .as_deref(),
            Some("SELECT \"id\", \"email\" FROM \"public\".\"customers\"")
        );
        let q = copy_source_query("copy (select upper(email) from customers) to stdout").unwrap();
        assert!(q.to_lowercase().contains("upper(email)"), "{q}");
        assert!(copy_source_query("copy customers from stdin").is_none());
        assert!(copy_source_query("select 1").is_none());
    }

    #[test]
    fn csv_fields_split_outside_quotes() {
        let line = b"1,\"a,b\",,\"x\"\"y\"";
        let mut ranges = Vec::new();
        split_csv(line, &mut ranges);
        let fields: Vec<&[u8]> = ranges.iter().map(|&(a, b)| &line[a..b]).collect();
        assert_eq!(fields, vec![&b"1"[..], b"\"a,b\"", b"", b"\"x\"\"y\""]);
    }

    #[test]
    fn kinds_follow_type_and_format() {
        assert_eq!(kind_of(oid::TEXT, false), Kind::Text);
        assert_eq!(kind_of(oid::INT8, false), Kind::NumberText);
        assert_eq!(kind_of(oid::INT4, false), Kind::SmallIntText);
        assert_eq!(kind_of(oid::INT8, true), Kind::BinaryInt8);
        assert_eq!(kind_of(oid::JSONB, true), Kind::BinaryJsonb);
        assert_eq!(kind_of(oid::BYTEA, false), Kind::ByteaText);
        assert_eq!(kind_of(1009, true), Kind::BinaryOther);
        assert_eq!(kind_of(1009, false), Kind::Text);
    }

    #[test]
    fn i64_renders_in_decimal() {
        let mut b = itoa_buf();
        assert_eq!(write_i64(&mut b, 4111111111111111), b"4111111111111111");
        let mut b = itoa_buf();
        assert_eq!(write_i64(&mut b, i64::MIN), b"-9223372036854775808");
    }
}
