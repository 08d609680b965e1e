//! Statement attribution: which SQL text each result belongs to.
//!
//! The client side of the relay notes every request as it passes (Query, Parse, Bind,
//! Execute, Describe, Close, Sync, FunctionCall) and the server side consumes those notes as
//! responses arrive, in order. PostgreSQL answers requests strictly in order, so a queue is
//! enough to pair them even when clients pipeline. The server side turns completions into
//! [`StatementEvent`]s; named statements and portals are followed from Parse to Bind to
//! Execute so an Execute is attributed to its SQL text and bound parameters.

use crate::codec::{read_i16, read_i32};
use crate::messages::{self, oid, parse_command_tag, parse_error_fields};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use ward_core::event::{ResultSample, SessionId, StatementEvent, StatementOrigin};
use ward_core::time::now_micros;

/// Named portals kept before the oldest are forgotten. PostgreSQL drops portals at the end
/// of each transaction; ward does not track transactions on the client side, so it bounds
/// the map instead of trusting clients to Close.
const MAX_TRACKED_PORTALS: usize = 4096;
/// Named prepared statements kept per session (a runaway client cannot grow ward's memory
/// without bound; an Execute of a forgotten statement is recorded with a placeholder text).
const MAX_TRACKED_STATEMENTS: usize = 16384;

/// How the policy judged a statement, carried to its audit event. Statements that were
/// simply allowed carry none.
#[derive(Debug, PartialEq, Eq)]
pub struct Decided {
    /// `denied`, `approved`, `review_denied`, `review_timed_out`, `allowed` (with a rule).
    pub decision: &'static str,
    pub rule: Option<String>,
}

impl Decided {
    /// True for the decisions whose statement ward refused (the target ran ward's
    /// replacement instead).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self.decision,
            "denied" | "review_denied" | "review_timed_out" | "token_expired"
        )
    }
}

/// A shared [`Decided`]; `None` = allowed without any rule involved.
pub type Note = Option<Arc<Decided>>;

/// How much of a statement's result its audit event keeps (`audit.capture`, or the caps of
/// the rules it matched). The default captures nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Capture {
    /// Rows kept; 0 = no capture (the one check DataRows pay when capture is off).
    rows: usize,
    /// Bytes of values kept.
    bytes: usize,
}

impl Capture {
    /// Capture of at most `rows` rows and `bytes` bytes of values (off when either is 0).
    pub fn new(rows: usize, bytes: usize) -> Capture {
        if rows == 0 || bytes == 0 {
            Capture::default()
        } else {
            Capture { rows, bytes }
        }
    }

    pub fn is_on(&self) -> bool {
        self.rows > 0
    }
}

/// A result sample being collected for one statement.
#[derive(Debug)]
struct Sampling {
    sample: ResultSample,
    /// Per column: type OID and the format the RowDescription gives.
    fields: Vec<(u32, i16)>,
    /// Result formats of the Bind, when they override the description's.
    formats: Option<Arc<[i16]>>,
    bytes: usize,
    /// A cap was reached: nothing more is looked at.
    done: bool,
}

impl Sampling {
    fn new(desc: Option<&RowDesc>, bound_formats: Option<&Arc<[i16]>>) -> Sampling {
        let mut columns = Vec::new();
        let mut fields = Vec::new();
        let formats = match desc {
            Some(desc) => {
                for f in crate::mask::row_description_fields(&desc.desc).unwrap_or_default() {
                    columns.push(String::from_utf8_lossy(f.name).into_owned());
                    fields.push((f.type_oid, f.format));
                }
                desc.formats.clone()
            }
            None => bound_formats.cloned(),
        };
        Sampling {
            sample: ResultSample {
                columns,
                rows: Vec::new(),
                truncated: false,
            },
            fields,
            formats,
            bytes: 0,
            done: false,
        }
    }

    /// Type OID (0 = unknown) and format of column `i`.
    fn kind(&self, i: usize) -> (u32, i16) {
        let (type_oid, own) = self.fields.get(i).copied().unwrap_or((0, 0));
        let format = match self.formats.as_deref() {
            None => own,
            Some([]) => 0,
            Some([one]) => *one,
            Some(many) => many.get(i).copied().unwrap_or(0),
        };
        (type_oid, format)
    }

    /// Keeps one DataRow (the bytes the client was sent) unless a cap was reached.
    fn row(&mut self, cap: Capture, body: &[u8]) {
        if self.done {
            return;
        }
        if self.sample.rows.len() >= cap.rows || self.bytes >= cap.bytes {
            self.sample.truncated = true;
            self.done = true;
            return;
        }
        let Some((n, mut rest)) = read_i16(body) else {
            return;
        };
        let mut values = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
        for i in 0..usize::try_from(n).unwrap_or(0) {
            let Some((len, tail)) = read_i32(rest) else {
                break;
            };
            let Ok(len) = usize::try_from(len) else {
                values.push(None);
                rest = tail;
                continue;
            };
            let Some(value) = tail.get(..len) else {
                break;
            };
            rest = &tail[len..];
            let (type_oid, format) = self.kind(i);
            let room = cap.bytes.saturating_sub(self.bytes);
            let (text, cut) = render_value(value, type_oid, format, room);
            self.bytes += text.len();
            if cut {
                self.sample.truncated = true;
                self.done = true;
            }
            values.push(Some(text));
        }
        self.sample.rows.push(values);
    }
}

/// A result value as the sample shows it, cut to `room` bytes (true when cut).
fn render_value(value: &[u8], type_oid: u32, format: i16, room: usize) -> (String, bool) {
    if format != 1 {
        return cut_text(value, room);
    }
    match type_oid {
        oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::CHAR
        | oid::UNKNOWN
        | oid::JSON
        | oid::XML => cut_text(value, room),
        oid::JSONB if value.first() == Some(&1) => cut_text(&value[1..], room),
        _ => {
            let mut out = String::new();
            if type_oid == oid::BYTEA || type_oid == 0 {
                let shown = value.len().min(room.saturating_sub(2) / 2 + 1);
                out.push_str("\\x");
                out.push_str(&hex::encode(&value[..shown]));
                let (text, cut) = cut_text(out.as_bytes(), room);
                return (text, cut || shown < value.len());
            }
            messages::render_binary(&mut out, value, type_oid, room);
            // Dates, timestamps and uuids are quoted as parameters are; a sample value is not.
            let unquoted = out
                .strip_prefix('\'')
                .and_then(|v| v.strip_suffix('\''))
                .unwrap_or(&out);
            cut_text(unquoted.as_bytes(), room)
        }
    }
}

/// `value` as text (invalid UTF-8 replaced), cut at `room` bytes on a character boundary.
fn cut_text(value: &[u8], room: usize) -> (String, bool) {
    let head = &value[..value.len().min(room.saturating_add(4))];
    let mut text = String::from_utf8_lossy(head).into_owned();
    let cut = value.len() > room || text.len() > room;
    if text.len() > room {
        let mut at = room;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        text.truncate(at);
    }
    (text, cut)
}

/// Adds a DataRow to the sample of a statement whose capture is on.
fn sample_row(
    cap: Capture,
    slot: &mut Option<Box<Sampling>>,
    desc: Option<&RowDesc>,
    bound_formats: Option<&Arc<[i16]>>,
    body: &[u8],
) {
    slot.get_or_insert_with(|| Box::new(Sampling::new(desc, bound_formats)))
        .row(cap, body);
}

/// The columns of a result as the server described them, kept for masking: the
/// RowDescription body, and the result formats a Bind asked for (which override the
/// RowDescription's when it answered a Describe of a statement, whose formats are unknown).
#[derive(Debug, Clone)]
pub struct RowDesc {
    pub desc: Arc<[u8]>,
    pub formats: Option<Arc<[i16]>>,
    /// Column names the statement's results are computed from (see
    /// `CommandInfo::output_columns`).
    pub refs: Refs,
}

/// Column names a statement's results are computed from (see `CommandInfo`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OutputRefs {
    /// Every name referenced in any select list.
    pub all: Vec<String>,
    /// Per result column, for a plain top-level SELECT.
    pub select_list: Option<Vec<Vec<String>>>,
    /// Names referenced in select lists below the top level.
    pub nested: Vec<String>,
}

/// The output references of a statement, when it was classified.
pub type Refs = Option<Arc<OutputRefs>>;

/// A request whose response has not finished yet.
#[derive(Debug)]
enum Pending {
    /// A simple Query: its statements, completed one CommandComplete at a time.
    Simple {
        statements: Vec<Arc<str>>,
        next: usize,
        step_started: i64,
        rows: u64,
        failed: bool,
        note: Note,
        refs: Refs,
        capture: Capture,
        /// The sample of the statement whose rows arrive now.
        sample: Option<Box<Sampling>>,
    },
    Parse {
        text: Arc<str>,
        note: Note,
    },
    Bind,
    /// A Describe; for a statement, its name and generation, so the ParameterDescription
    /// that answers it can record the parameter types.
    Describe {
        statement: Option<(Box<[u8]>, u64)>,
        /// For a portal, its name (its RowDescription then carries the real formats).
        portal: Option<Box<[u8]>>,
    },
    Close,
    Execute {
        text: Arc<str>,
        params: Option<String>,
        started: i64,
        rows: u64,
        note: Note,
        /// The portal's result columns, when known (for masking its DataRows).
        row: Option<RowDesc>,
        /// Where a description still to come would apply (a pipelined Describe answered
        /// after this Execute was sent).
        bound: Bound,
        capture: Capture,
        sample: Option<Box<Sampling>>,
    },
    FunctionCall {
        oid: i32,
        started: i64,
        note: Note,
    },
    Sync,
}

/// A prepared statement as the client defined it.
#[derive(Debug)]
struct Prepared {
    text: Arc<str>,
    /// Parameter type OIDs (0 = unknown), used to show binary parameters as values.
    types: Option<Arc<[u32]>>,
    /// Distinguishes successive statements of the same name (the unnamed one especially).
    generation: u64,
    note: Note,
    /// The RowDescription that answered a Describe of this statement.
    row: Option<Arc<[u8]>>,
    refs: Refs,
    capture: Capture,
    /// Whether executing it may change anything (strict audit then records it first).
    may_write: bool,
}

#[derive(Debug)]
struct Portal {
    text: Arc<str>,
    params: Option<String>,
    note: Note,
    row: Option<RowDesc>,
    bound: Bound,
    capture: Capture,
    may_write: bool,
}

/// What a portal was bound from: enough to describe its rows once a RowDescription for
/// its statement or for the portal itself arrives.
#[derive(Debug, Clone, Default)]
struct Bound {
    portal: Box<[u8]>,
    /// The prepared statement's name and generation.
    statement: Option<(Box<[u8]>, u64)>,
    formats: Arc<[i16]>,
    refs: Refs,
}

/// Per-session attribution state, shared by the two directions of the relay.
#[derive(Debug)]
pub struct Tracker {
    session_id: SessionId,
    statements: HashMap<Box<[u8]>, Prepared>,
    generation: u64,
    portals: HashMap<Box<[u8]>, Portal>,
    pending: VecDeque<Pending>,
    seq: u64,
    /// An extended-protocol COPY FROM STDIN is running: the server ignores Sync messages
    /// until CopyDone/CopyFail, so none are expected to be answered.
    copy_in: bool,
    /// The message of a FATAL error the target sent: it is ending the session.
    target_fatal: Option<String>,
    /// The policy note for the next Query, Parse or FunctionCall noted.
    next_note: Note,
    param_cap: usize,
    text_cap: usize,
    /// Keep RowDescriptions (only when the session masks results).
    keep_rows: bool,
    /// The RowDescription of the simple-query result being received.
    simple_row: Option<RowDesc>,
    /// Output column references for the next Query or Parse noted.
    next_refs: Refs,
    /// Result capture for the next Query or Parse noted.
    next_capture: Capture,
    /// Whether the next Parse noted may change anything when executed.
    next_may_write: bool,
    /// Whether the last Execute noted may change anything.
    last_may_write: bool,
}

/// What a frontend message means for the relay.
#[derive(Debug, PartialEq, Eq)]
pub enum Frontend {
    /// Forward it.
    Forward,
    /// The client said goodbye (Terminate); forward it and end the session.
    Terminate,
    /// Not a message a client may send; end the session with a protocol error.
    Invalid(String),
}

impl Tracker {
    pub fn new(session_id: SessionId, param_cap: usize, text_cap: usize) -> Self {
        Tracker {
            session_id,
            statements: HashMap::new(),
            generation: 0,
            portals: HashMap::new(),
            pending: VecDeque::new(),
            seq: 0,
            copy_in: false,
            target_fatal: None,
            next_note: None,
            param_cap,
            text_cap,
            keep_rows: false,
            simple_row: None,
            next_refs: None,
            next_capture: Capture::default(),
            next_may_write: true,
            last_may_write: true,
        }
    }

    /// Keeps result descriptions so [`Tracker::current_row`] can describe DataRows.
    pub fn keep_row_descriptions(&mut self) {
        self.keep_rows = true;
    }

    /// The columns of the DataRows arriving now, when known.
    pub fn current_row(&self) -> Option<&RowDesc> {
        match self.pending.front()? {
            Pending::Execute { row, .. } => row.as_ref(),
            Pending::Simple { .. } => self.simple_row.as_ref(),
            _ => None,
        }
    }

    /// The output column references of the statement whose response arrives now.
    pub fn current_refs(&self) -> Refs {
        match self.pending.front()? {
            Pending::Execute { row, .. } => row.as_ref().and_then(|r| r.refs.clone()),
            Pending::Simple { refs, .. } => refs.clone(),
            _ => None,
        }
    }

    /// The SQL text of the statement whose response arrives now.
    pub fn current_text(&self) -> Option<&str> {
        match self.pending.front()? {
            Pending::Execute { text, .. } => Some(text),
            Pending::Simple {
                statements, next, ..
            } => statements.get(*next).map(|t| &**t),
            _ => None,
        }
    }

    /// Notes one complete client message.
    pub fn frontend(&mut self, tag: u8, body: &[u8]) -> Frontend {
        match tag {
            b'Q' => {
                let Some(query) = messages::parse_query(body) else {
                    return Frontend::Invalid("malformed Query message".into());
                };
                let statements = split_statements(query, self.text_cap);
                let note = self.next_note.take();
                let refs = self.next_refs.take();
                let capture = std::mem::take(&mut self.next_capture);
                self.pending.push_back(Pending::Simple {
                    statements,
                    next: 0,
                    step_started: now_micros(),
                    rows: 0,
                    failed: false,
                    note,
                    refs,
                    capture,
                    sample: None,
                });
            }
            b'P' => {
                let Some(parse) = messages::parse_parse(body) else {
                    return Frontend::Invalid("malformed Parse message".into());
                };
                let text = statement_text(parse.query, self.text_cap);
                if self.statements.len() >= MAX_TRACKED_STATEMENTS && !parse.name.is_empty() {
                    self.statements.clear();
                }
                self.generation += 1;
                let note = self.next_note.take();
                let prepared = Prepared {
                    text: text.clone(),
                    types: messages::parse_param_types(body),
                    generation: self.generation,
                    note: note.clone(),
                    row: None,
                    refs: self.next_refs.take(),
                    capture: std::mem::take(&mut self.next_capture),
                    may_write: std::mem::replace(&mut self.next_may_write, true),
                };
                self.statements.insert(parse.name.into(), prepared);
                self.pending.push_back(Pending::Parse { text, note });
            }
            b'B' => {
                let statements = &self.statements;
                let Some(bind) = messages::parse_bind(body, self.param_cap, |name| {
                    statements.get(name).and_then(|p| p.types.clone())
                }) else {
                    return Frontend::Invalid("malformed Bind message".into());
                };
                let (text, note, desc, refs, generation, capture, may_write) = self
                    .statements
                    .get(bind.statement)
                    .map(|p| {
                        (
                            p.text.clone(),
                            p.note.clone(),
                            p.row.clone(),
                            p.refs.clone(),
                            Some(p.generation),
                            p.capture,
                            p.may_write,
                        )
                    })
                    .unwrap_or_else(|| {
                        (
                            unknown_statement(bind.statement),
                            None,
                            None,
                            None,
                            None,
                            Capture::default(),
                            true,
                        )
                    });
                let bound = Bound {
                    portal: bind.portal.into(),
                    statement: generation.map(|g| (Box::from(bind.statement), g)),
                    formats: messages::parse_bind_result_formats(body).unwrap_or_default(),
                    refs,
                };
                let row = desc.map(|desc| RowDesc {
                    desc,
                    formats: Some(bound.formats.clone()),
                    refs: bound.refs.clone(),
                });
                if self.portals.len() >= MAX_TRACKED_PORTALS && !bind.portal.is_empty() {
                    self.portals.retain(|name, _| name.is_empty());
                }
                self.portals.insert(
                    bind.portal.into(),
                    Portal {
                        text,
                        params: bind.params,
                        note,
                        row,
                        bound,
                        capture,
                        may_write,
                    },
                );
                self.pending.push_back(Pending::Bind);
            }
            b'E' => {
                let Some((portal, _max_rows)) = messages::parse_execute(body) else {
                    return Frontend::Invalid("malformed Execute message".into());
                };
                let (text, params, note, row, bound, capture) = match self.portals.get(portal) {
                    Some(p) => {
                        self.last_may_write = p.may_write;
                        (
                            p.text.clone(),
                            p.params.clone(),
                            p.note.clone(),
                            p.row.clone(),
                            p.bound.clone(),
                            p.capture,
                        )
                    }
                    None => {
                        self.last_may_write = true;
                        (
                            unknown_portal(portal),
                            None,
                            None,
                            None,
                            Bound::default(),
                            Capture::default(),
                        )
                    }
                };
                self.pending.push_back(Pending::Execute {
                    text,
                    params,
                    started: now_micros(),
                    rows: 0,
                    note,
                    row,
                    bound,
                    capture,
                    sample: None,
                });
            }
            b'D' => {
                let Some((kind, name)) = messages::parse_target_kind(body) else {
                    return Frontend::Invalid("malformed Describe message".into());
                };
                let statement = (kind == b'S')
                    .then(|| {
                        self.statements
                            .get(name)
                            .map(|p| (Box::from(name), p.generation))
                    })
                    .flatten();
                let portal = (kind == b'P').then(|| Box::from(name));
                self.pending
                    .push_back(Pending::Describe { statement, portal });
            }
            b'C' => {
                let Some((kind, name)) = messages::parse_target_kind(body) else {
                    return Frontend::Invalid("malformed Close message".into());
                };
                match kind {
                    b'S' => {
                        self.statements.remove(name);
                    }
                    b'P' => {
                        self.portals.remove(name);
                    }
                    _ => return Frontend::Invalid("Close must name S or P".into()),
                }
                self.pending.push_back(Pending::Close);
            }
            // During an extended-protocol COPY FROM STDIN the server ignores Sync.
            b'S' if self.copy_in => {}
            b'S' => self.pending.push_back(Pending::Sync),
            b'c' | b'f' => self.copy_in = false,
            b'F' => {
                let Some(oid) = messages::parse_function_call(body) else {
                    return Frontend::Invalid("malformed FunctionCall message".into());
                };
                let note = self.next_note.take();
                self.next_capture = Capture::default();
                self.pending.push_back(Pending::FunctionCall {
                    oid,
                    started: now_micros(),
                    note,
                });
            }
            b'X' => return Frontend::Terminate,
            // Flush, and COPY data from the client, need no note.
            b'H' | b'd' => {}
            other => {
                return Frontend::Invalid(format!(
                    "unexpected message type {:?} (0x{other:02x}) from the client",
                    other as char
                ));
            }
        }
        Frontend::Forward
    }

    /// Notes a DataRow (only counted; its content is never looked at here).
    #[inline]
    pub fn data_row(&mut self) {
        match self.pending.front_mut() {
            Some(Pending::Execute { rows, .. }) | Some(Pending::Simple { rows, .. }) => *rows += 1,
            _ => {}
        }
    }

    /// Notes a complete DataRow, as the client is sent it (masked where masking applies):
    /// counted, and kept in the statement's result sample while its capture caps allow.
    #[inline]
    fn whole_data_row(&mut self, body: &[u8]) {
        match self.pending.front_mut() {
            Some(Pending::Execute {
                rows,
                capture,
                sample,
                row,
                bound,
                ..
            }) => {
                *rows += 1;
                if capture.rows > 0 {
                    sample_row(*capture, sample, row.as_ref(), Some(&bound.formats), body);
                }
            }
            Some(Pending::Simple {
                rows,
                capture,
                sample,
                ..
            }) => {
                *rows += 1;
                if capture.rows > 0 {
                    sample_row(*capture, sample, self.simple_row.as_ref(), None, body);
                }
            }
            _ => {}
        }
    }

    /// Notes one complete server message, pushing finished statements to `events`.
    pub fn backend(&mut self, tag: u8, body: &[u8], events: &mut Vec<StatementEvent>) {
        match tag {
            b'D' => self.whole_data_row(body),
            b'1' => self.pop_if(|p| matches!(p, Pending::Parse { .. })),
            b'2' => self.pop_if(|p| matches!(p, Pending::Bind)),
            b'3' => self.pop_if(|p| matches!(p, Pending::Close)),
            b't' => self.parameter_description(body),
            b'G' => self.copy_in_started(),
            b'n' => self.pop_if(|p| matches!(p, Pending::Describe { .. })),
            b'T' => self.row_description(body),
            b'C' => self.command_complete(Some(body), false, events),
            b's' => self.command_complete(None, true, events),
            b'I' => self.empty_query(),
            b'E' => self.error(body, events),
            b'V' => {
                if let Some(Pending::FunctionCall { .. }) = self.pending.front()
                    && let Some(Pending::FunctionCall { oid, started, note }) =
                        self.pending.pop_front()
                {
                    let e = self.event(
                        StatementOrigin::FunctionCall,
                        function_text(oid),
                        None,
                        started,
                        None,
                        None,
                        None,
                    );
                    events.push(noted(e, &note));
                }
            }
            b'Z' => self.ready_for_query(),
            _ => {}
        }
    }

    /// CopyInResponse. For an Execute, the server is now in copy-in mode and ignores the
    /// Syncs the client sent after the Execute (it cannot have seen this response before
    /// sending them), so they will get no ReadyForQuery of their own.
    fn copy_in_started(&mut self) {
        if matches!(self.pending.front(), Some(Pending::Execute { .. })) {
            let mut first = true;
            self.pending
                .retain(|p| std::mem::replace(&mut first, false) || !matches!(p, Pending::Sync));
            self.copy_in = true;
        }
    }

    /// Records the server's parameter types for the statement being described (the Describe
    /// itself stays pending until its RowDescription or NoData).
    fn parameter_description(&mut self, body: &[u8]) {
        let Some(Pending::Describe {
            statement: Some((name, generation)),
            ..
        }) = self.pending.front()
        else {
            return;
        };
        if let Some(prepared) = self.statements.get_mut(name)
            && prepared.generation == *generation
        {
            prepared.types = messages::parse_parameter_description(body);
        }
    }

    /// A RowDescription: the header of a simple query's result, or the answer to a Describe
    /// (kept on the statement or portal for the DataRows of later Executes).
    fn row_description(&mut self, body: &[u8]) {
        if !self.keep_rows {
            self.pop_if(|p| matches!(p, Pending::Describe { .. }));
            return;
        }
        match self.pending.front() {
            Some(Pending::Simple { refs, .. }) => {
                self.simple_row = Some(RowDesc {
                    desc: body.into(),
                    formats: None,
                    refs: refs.clone(),
                });
            }
            Some(Pending::Describe { .. }) => {
                let Some(Pending::Describe { statement, portal }) = self.pending.pop_front() else {
                    unreachable!("front was a Describe")
                };
                let desc: Arc<[u8]> = body.into();
                if let Some(key) = statement {
                    if let Some(prepared) = self.statements.get_mut(&key.0)
                        && prepared.generation == key.1
                    {
                        prepared.row = Some(desc.clone());
                    }
                    // Portals bound, and Executes sent, before this answer arrived.
                    let described = |bound: &Bound| RowDesc {
                        desc: desc.clone(),
                        formats: Some(bound.formats.clone()),
                        refs: bound.refs.clone(),
                    };
                    for p in self.portals.values_mut() {
                        if p.row.is_none() && p.bound.statement.as_ref() == Some(&key) {
                            p.row = Some(described(&p.bound));
                        }
                    }
                    for pending in self.pending.iter_mut() {
                        if let Pending::Execute { row, bound, .. } = pending
                            && row.is_none()
                            && bound.statement.as_ref() == Some(&key)
                        {
                            *row = Some(described(bound));
                        }
                    }
                }
                if let Some(name) = portal {
                    let mut refs = None;
                    if let Some(p) = self.portals.get_mut(&name) {
                        refs = p.bound.refs.clone();
                        p.row = Some(RowDesc {
                            desc: desc.clone(),
                            formats: None,
                            refs: refs.clone(),
                        });
                    }
                    // The Execute this Describe precedes (PostgreSQL answers in order).
                    if let Some(Pending::Execute { row, .. }) = self.pending.iter_mut().find(
                        |p| matches!(p, Pending::Execute { bound, .. } if *bound.portal == *name),
                    ) {
                        *row = Some(RowDesc {
                            desc,
                            formats: None,
                            refs,
                        });
                    }
                }
            }
            _ => {}
        }
    }

    fn pop_if(&mut self, is: impl Fn(&Pending) -> bool) {
        if self.pending.front().is_some_and(is) {
            self.pending.pop_front();
        }
    }

    fn command_complete(
        &mut self,
        tag: Option<&[u8]>,
        suspended: bool,
        events: &mut Vec<StatementEvent>,
    ) {
        let (command, tag_rows) = match tag {
            Some(body) => {
                let (verb, rows) = parse_command_tag(body);
                (Some(verb), rows)
            }
            None => (None, None),
        };
        match self.pending.front_mut() {
            Some(Pending::Execute { .. }) => {
                let Some(Pending::Execute {
                    text,
                    params,
                    started,
                    rows,
                    note,
                    sample,
                    ..
                }) = self.pending.pop_front()
                else {
                    unreachable!("front was an Execute")
                };
                let rows = tag_rows.or(if suspended || rows > 0 {
                    Some(rows)
                } else {
                    None
                });
                let command = if suspended {
                    Some("SUSPENDED".to_string())
                } else {
                    command
                };
                let mut e = self.event(
                    StatementOrigin::Execute,
                    text,
                    params,
                    started,
                    rows,
                    command,
                    None,
                );
                e.result_sample = sample.map(|s| s.sample);
                events.push(noted(e, &note));
            }
            Some(Pending::Simple {
                statements,
                next,
                step_started,
                rows,
                note,
                sample,
                ..
            }) => {
                let note = note.clone();
                let sample = sample.take();
                let text = statements
                    .get(*next)
                    .cloned()
                    .unwrap_or_else(|| Arc::from("<statement not attributed>"));
                let started = *step_started;
                let counted = *rows;
                *next += 1;
                *rows = 0;
                *step_started = now_micros();
                let rows = tag_rows.or(if counted > 0 { Some(counted) } else { None });
                let mut e = self.event(
                    StatementOrigin::Simple,
                    text,
                    None,
                    started,
                    rows,
                    command,
                    None,
                );
                e.result_sample = sample.map(|s| s.sample);
                events.push(noted(e, &note));
            }
            _ => {}
        }
    }

    fn empty_query(&mut self) {
        match self.pending.front_mut() {
            Some(Pending::Execute { .. }) => {
                self.pending.pop_front();
            }
            Some(Pending::Simple { next, .. }) => *next += 1,
            _ => {}
        }
    }

    fn error(&mut self, body: &[u8], events: &mut Vec<StatementEvent>) {
        let fields = parse_error_fields(body);
        if matches!(fields.severity, Some(b"FATAL" | b"PANIC")) {
            let message = fields
                .message
                .map(String::from_utf8_lossy)
                .unwrap_or_default();
            self.target_fatal = Some(message.into_owned());
        }
        let sqlstate = fields.code.map(|c| String::from_utf8_lossy(c).into_owned());
        let message = fields
            .message
            .map(|m| String::from_utf8_lossy(m).into_owned());
        let failure = Some((sqlstate, message));
        match self.pending.front_mut() {
            Some(Pending::Simple {
                statements,
                next,
                step_started,
                failed,
                note,
                sample,
                ..
            }) => {
                let note = note.clone();
                // Rows the client received before the error stay in the sample.
                let sample = sample.take();
                // The rest of the query string is not executed after an error.
                let text = statements
                    .get(*next)
                    .cloned()
                    .or_else(|| statements.last().cloned())
                    .unwrap_or_else(|| Arc::from(""));
                let started = *step_started;
                *next = statements.len();
                *failed = true;
                let mut e = self.event(
                    StatementOrigin::Simple,
                    text,
                    None,
                    started,
                    None,
                    None,
                    failure,
                );
                e.result_sample = sample.map(|s| s.sample);
                events.push(noted(e, &note));
            }
            Some(Pending::FunctionCall { .. }) => {
                let Some(Pending::FunctionCall { oid, started, note }) = self.pending.pop_front()
                else {
                    unreachable!("front was a FunctionCall")
                };
                let e = self.event(
                    StatementOrigin::FunctionCall,
                    function_text(oid),
                    None,
                    started,
                    None,
                    None,
                    failure,
                );
                events.push(noted(e, &note));
            }
            Some(Pending::Sync) | None => {
                // An error outside any request (e.g. FATAL on shutdown): nothing to attribute.
            }
            Some(_) => {
                // Extended protocol: the server now skips everything up to the next Sync
                // (and leaves copy-in mode if it was in it).
                self.copy_in = false;
                let mut recorded = false;
                let failed_parse = matches!(self.pending.front(), Some(Pending::Parse { .. }));
                while let Some(front) = self.pending.front() {
                    if matches!(front, Pending::Sync) {
                        break;
                    }
                    let item = self.pending.pop_front().expect("front exists");
                    if recorded {
                        continue;
                    }
                    match item {
                        Pending::Execute {
                            text,
                            params,
                            started,
                            note,
                            sample,
                            ..
                        } => {
                            let mut e = self.event(
                                StatementOrigin::Execute,
                                text,
                                params,
                                started,
                                None,
                                None,
                                failure.clone(),
                            );
                            e.result_sample = sample.map(|s| s.sample);
                            events.push(noted(e, &note));
                            recorded = true;
                        }
                        Pending::Parse { text, note } if failed_parse => {
                            let e = self.event(
                                StatementOrigin::Prepare,
                                text,
                                None,
                                now_micros(),
                                None,
                                None,
                                failure.clone(),
                            );
                            events.push(noted(e, &note));
                            recorded = true;
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn ready_for_query(&mut self) {
        // Ends the oldest Sync or simple Query; anything older was skipped by the server.
        while let Some(front) = self.pending.pop_front() {
            if matches!(
                front,
                Pending::Sync | Pending::Simple { .. } | Pending::FunctionCall { .. }
            ) {
                break;
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        origin: StatementOrigin,
        text: Arc<str>,
        params: Option<String>,
        started: i64,
        rows: Option<u64>,
        command: Option<String>,
        failure: Option<(Option<String>, Option<String>)>,
    ) -> StatementEvent {
        self.seq += 1;
        let (sqlstate, error) = failure.unwrap_or((None, None));
        StatementEvent {
            session_id: self.session_id.clone(),
            seq: self.seq,
            origin,
            text,
            params,
            started_at: started,
            duration_us: (now_micros() - started).max(0),
            rows,
            command,
            sqlstate,
            error,
            decision: None,
            rule: None,
            result_sample: None,
        }
    }

    /// The text, parameters and policy note of the Execute just noted (the prepared
    /// statement it runs), for the command event recorded before it is forwarded.
    /// The text, parameters and note of the Execute just noted, and whether it may change
    /// anything.
    pub fn last_execute(&self) -> Option<(Arc<str>, Option<String>, Note, bool)> {
        match self.pending.back()? {
            Pending::Execute {
                text, params, note, ..
            } => Some((
                text.clone(),
                params.clone(),
                note.clone(),
                self.last_may_write,
            )),
            _ => None,
        }
    }

    /// `text` capped as statement texts are.
    pub fn capped(&self, text: &str) -> Arc<str> {
        capped_text(text.as_bytes(), self.text_cap)
    }

    /// True when the next response answers a statement ward sent in place of a refused one.
    pub fn answering_refusal(&self) -> bool {
        matches!(
            self.pending.front(),
            Some(Pending::Simple { note: Some(n), .. }) if n.is_refusal()
        )
    }

    /// Sets the policy note attached to the next Query, Parse or FunctionCall noted.
    pub fn set_note(&mut self, note: Note) {
        self.next_note = note;
    }

    /// Sets the result capture for the next Query or Parse noted.
    pub fn set_capture(&mut self, capture: Capture) {
        self.next_capture = capture;
    }

    /// Says whether the next Parse noted may change anything when executed (its
    /// classification); unset, a statement counts as a write.
    pub fn set_may_write(&mut self, may_write: bool) {
        self.next_may_write = may_write;
    }

    /// Sets the output column references for the next Query or Parse noted.
    pub fn set_output_columns(&mut self, refs: Refs) {
        self.next_refs = refs;
    }

    /// Notes a simple Query that ward sent in place of a denied client message: its events
    /// carry the client's original text and the denial.
    pub fn note_replacement(&mut self, original: &str, note: Note) {
        self.pending.push_back(Pending::Simple {
            statements: vec![statement_text(original.as_bytes(), self.text_cap)],
            next: 0,
            step_started: now_micros(),
            rows: 0,
            failed: false,
            note,
            refs: None,
            capture: Capture::default(),
            sample: None,
        });
    }

    /// The message of the FATAL error with which the target ended the session, if it did.
    pub fn target_fatal(&self) -> Option<&str> {
        self.target_fatal.as_deref()
    }

    /// Requests still waiting for their response (for tests and diagnostics).
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

/// Attaches the policy decision to an event.
fn noted(mut event: StatementEvent, note: &Note) -> StatementEvent {
    if let Some(decided) = note {
        event.decision = Some(decided.decision.to_string());
        event.rule = decided.rule.clone();
    }
    event
}

fn function_text(oid: i32) -> Arc<str> {
    Arc::from(format!("<function call oid={oid}>"))
}

fn unknown_statement(name: &[u8]) -> Arc<str> {
    Arc::from(format!(
        "<unknown prepared statement {:?}>",
        String::from_utf8_lossy(name)
    ))
}

fn unknown_portal(name: &[u8]) -> Arc<str> {
    Arc::from(format!(
        "<unknown portal {:?}>",
        String::from_utf8_lossy(name)
    ))
}

/// A statement's text as the audit keeps it: the client's text without surrounding
/// whitespace and trailing semicolons (so a statement reads the same whether it was sent
/// alone or split out of a multi-statement string), capped at `cap` bytes.
fn statement_text(raw: &[u8], cap: usize) -> Arc<str> {
    let start = raw
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(raw.len());
    let end = raw
        .iter()
        .rposition(|b| !b.is_ascii_whitespace() && *b != b';')
        .map_or(start, |i| i + 1)
        .max(start);
    capped_text(&raw[start..end], cap)
}

/// SQL text for the audit, cut at `cap` bytes on a character boundary.
fn capped_text(raw: &[u8], cap: usize) -> Arc<str> {
    let text = String::from_utf8_lossy(raw);
    if text.len() <= cap {
        return Arc::from(text.as_ref());
    }
    let mut cut = cap;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    Arc::from(format!("{}…[+{} bytes]", &text[..cut], text.len() - cut))
}

/// Splits a simple Query into its statements with PostgreSQL's own parser, so each
/// CommandComplete is paired with the statement that produced it.
///
/// Most queries hold one statement; the cheap check for a `;` before anything but trailing
/// whitespace keeps them off the parser. A string the parser rejects is kept whole: the
/// server rejects it too, as one error.
fn split_statements(query: &[u8], cap: usize) -> Vec<Arc<str>> {
    let trimmed_len = query
        .iter()
        .rposition(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n' | b';'))
        .map_or(0, |i| i + 1);
    if trimmed_len == 0 {
        return Vec::new();
    }
    if memchr::memchr(b';', &query[..trimmed_len]).is_none() {
        return vec![statement_text(query, cap)];
    }
    let Ok(text) = std::str::from_utf8(query) else {
        return vec![capped_text(query, cap)];
    };
    match pg_query::split_with_parser(text) {
        Ok(parts) if !parts.is_empty() => parts
            .into_iter()
            .map(|s| statement_text(s.as_bytes(), cap))
            .collect(),
        _ => vec![capped_text(query, cap)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{put_cstr, put_message};

    fn body(build: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut v = Vec::new();
        put_message(&mut v, b'?', build);
        v[5..].to_vec()
    }

    fn tracker() -> Tracker {
        Tracker::new(SessionId::generate(), 1024, 65536)
    }

    /// Parse, Bind (no parameters), Execute and Sync of `sql` on the unnamed statement and
    /// portal, as a client pipelines them.
    fn unnamed_extended(t: &mut Tracker, sql: &str) {
        t.frontend(
            b'P',
            &body(|b| {
                put_cstr(b, "");
                put_cstr(b, sql);
                b.extend(0i16.to_be_bytes());
            }),
        );
        t.frontend(
            b'B',
            &body(|b| {
                put_cstr(b, "");
                put_cstr(b, "");
                b.extend([0, 0, 0, 0, 0, 0]);
            }),
        );
        execute_unnamed(t);
        t.frontend(b'S', &[]);
    }

    fn complete(t: &mut Tracker, tag: &str, ev: &mut Vec<StatementEvent>) {
        t.backend(b'C', &body(|b| put_cstr(b, tag)), ev);
    }

    /// Bind of `statement` to the unnamed portal, no parameters, binary results.
    fn bind_binary_results(t: &mut Tracker, statement: &str) {
        t.frontend(
            b'B',
            &body(|b| {
                put_cstr(b, "");
                put_cstr(b, statement);
                b.extend([0, 0, 0, 0, 0, 1, 0, 1]);
            }),
        );
    }

    /// Execute of the unnamed portal, no row limit.
    fn execute_unnamed(t: &mut Tracker) {
        t.frontend(
            b'E',
            &body(|b| {
                put_cstr(b, "");
                b.extend(0i32.to_be_bytes());
            }),
        );
    }

    fn describe(t: &mut Tracker, kind: u8) {
        t.frontend(
            b'D',
            &body(|b| {
                b.push(kind);
                put_cstr(b, "");
            }),
        );
    }

    /// Parse, Bind asking for binary results, then `describe_kind` between them or before
    /// Execute, all pipelined; rows must be described once the RowDescription arrives.
    #[test]
    fn pipelined_describes_describe_the_rows_of_executes_already_sent() {
        let row_desc = b"\x00\x01c\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x19\xff\xff\xff\xff\xff\xff\x00\x00";
        let mut ev = Vec::new();
        // Describe of the portal (libpq's PQexecParams, node-postgres, pgbench -M extended).
        let mut t = tracker();
        t.keep_row_descriptions();
        t.frontend(
            b'P',
            &body(|b| {
                put_cstr(b, "");
                put_cstr(b, "select c from t");
                b.extend(0i16.to_be_bytes());
            }),
        );
        bind_binary_results(&mut t, "");
        describe(&mut t, b'P');
        execute_unnamed(&mut t);
        t.frontend(b'S', &[]);
        t.backend(b'1', &[], &mut ev);
        t.backend(b'2', &[], &mut ev);
        t.backend(b'T', row_desc, &mut ev);
        let row = t.current_row().expect("the Execute's rows are described");
        assert_eq!(&*row.desc, &row_desc[..]);
        assert!(
            row.formats.is_none(),
            "a portal's description has the real formats"
        );

        // Describe of the statement, pipelined before Bind (rows in Bind's formats).
        let mut t = tracker();
        t.keep_row_descriptions();
        t.frontend(
            b'P',
            &body(|b| {
                put_cstr(b, "");
                put_cstr(b, "select c from t");
                b.extend(0i16.to_be_bytes());
            }),
        );
        describe(&mut t, b'S');
        bind_binary_results(&mut t, "");
        execute_unnamed(&mut t);
        t.frontend(b'S', &[]);
        t.backend(b'1', &[], &mut ev);
        t.backend(b't', &[0, 0], &mut ev);
        t.backend(b'T', row_desc, &mut ev);
        t.backend(b'2', &[], &mut ev);
        let row = t.current_row().expect("the Execute's rows are described");
        assert_eq!(row.formats.as_deref(), Some(&[1i16][..]));
    }

    #[test]
    fn multi_statement_query_gives_one_event_per_statement() {
        let mut t = tracker();
        let q = body(|b| put_cstr(b, "select 1; insert into t values (1); select 'a;b'"));
        assert_eq!(t.frontend(b'Q', &q), Frontend::Forward);
        let mut ev = Vec::new();
        complete(&mut t, "SELECT 1", &mut ev);
        complete(&mut t, "INSERT 0 1", &mut ev);
        complete(&mut t, "SELECT 1", &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        let texts: Vec<_> = ev.iter().map(|e| e.text.to_string()).collect();
        assert_eq!(
            texts,
            ["select 1", "insert into t values (1)", "select 'a;b'"]
        );
        assert_eq!(ev.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(ev[1].rows, Some(1));
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn execute_is_attributed_through_named_statement_and_portal() {
        let mut t = tracker();
        t.frontend(
            b'P',
            &body(|b| {
                put_cstr(b, "s1");
                put_cstr(b, "select $1::int");
                b.extend(0i16.to_be_bytes());
            }),
        );
        t.frontend(
            b'B',
            &body(|b| {
                put_cstr(b, "p1");
                put_cstr(b, "s1");
                b.extend(0i16.to_be_bytes());
                b.extend(1i16.to_be_bytes());
                b.extend(2i32.to_be_bytes());
                b.extend(b"42");
                b.extend(0i16.to_be_bytes());
            }),
        );
        t.frontend(
            b'E',
            &body(|b| {
                put_cstr(b, "p1");
                b.extend(0i32.to_be_bytes());
            }),
        );
        t.frontend(b'S', &[]);
        let mut ev = Vec::new();
        t.backend(b'1', &[], &mut ev);
        t.backend(b'2', &[], &mut ev);
        t.backend(b'D', &[], &mut ev);
        complete(&mut t, "SELECT 1", &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(&*ev[0].text, "select $1::int");
        assert_eq!(ev[0].params.as_deref(), Some("$1='42'"));
        assert_eq!(ev[0].rows, Some(1));
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn error_in_pipeline_skips_to_sync() {
        let mut t = tracker();
        unnamed_extended(&mut t, "selec 1");
        let mut ev = Vec::new();
        let err = crate::messages::error_bytes(
            crate::messages::Severity::Error,
            "42601",
            "syntax error",
            None,
        );
        t.backend(b'E', &err[5..], &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].origin, StatementOrigin::Prepare);
        assert_eq!(ev[0].sqlstate.as_deref(), Some("42601"));
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn syncs_sent_during_extended_copy_in_expect_no_ready_for_query() {
        let mut t = tracker();
        unnamed_extended(&mut t, "copy t from stdin;");
        let mut ev = Vec::new();
        t.backend(b'1', &[], &mut ev);
        t.backend(b'2', &[], &mut ev);
        t.backend(b'G', &[0, 0, 0], &mut ev);
        t.frontend(b'd', b"1\n");
        t.frontend(b'S', &[]);
        t.frontend(b'c', &[]);
        t.frontend(b'S', &[]);
        complete(&mut t, "COPY 1", &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(t.pending_len(), 0);
        assert_eq!(ev.len(), 1);
        assert_eq!(&*ev[0].text, "copy t from stdin");
        assert_eq!(ev[0].rows, Some(1));
        // The next statement is attributed correctly.
        t.frontend(b'Q', &body(|b| put_cstr(b, "select 1")));
        complete(&mut t, "SELECT 1", &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(&*ev[1].text, "select 1");
        assert_eq!(t.pending_len(), 0);
    }

    /// A RowDescription body: (name, type OID, format) per column.
    fn row_desc(cols: &[(&str, u32, i16)]) -> Vec<u8> {
        body(|b| {
            b.extend((cols.len() as i16).to_be_bytes());
            for (name, type_oid, format) in cols {
                put_cstr(b, name);
                b.extend(0i32.to_be_bytes());
                b.extend(0i16.to_be_bytes());
                b.extend(type_oid.to_be_bytes());
                b.extend((-1i16).to_be_bytes());
                b.extend((-1i32).to_be_bytes());
                b.extend(format.to_be_bytes());
            }
        })
    }

    /// A DataRow body.
    fn data_row(values: &[Option<&[u8]>]) -> Vec<u8> {
        body(|b| {
            b.extend((values.len() as i16).to_be_bytes());
            for v in values {
                match v {
                    Some(v) => {
                        b.extend((v.len() as i32).to_be_bytes());
                        b.extend(*v);
                    }
                    None => b.extend((-1i32).to_be_bytes()),
                }
            }
        })
    }

    fn capturing_tracker(rows: usize, bytes: usize) -> Tracker {
        let mut t = tracker();
        t.keep_row_descriptions();
        t.set_capture(Capture::new(rows, bytes));
        t
    }

    fn sample(e: &StatementEvent) -> &ResultSample {
        e.result_sample.as_ref().expect("a result sample")
    }

    #[test]
    fn capture_keeps_the_first_rows_of_each_statement_and_marks_the_rest() {
        let mut t = capturing_tracker(2, 4096);
        let q = body(|b| put_cstr(b, "select id, name from t; select 1 as one"));
        t.frontend(b'Q', &q);
        let mut ev = Vec::new();
        t.backend(b'T', &row_desc(&[("id", 23, 0), ("name", 25, 0)]), &mut ev);
        for i in 1..=5 {
            let id = i.to_string();
            let name = format!("n{i}");
            let name = (i != 2).then_some(name.as_bytes());
            t.backend(b'D', &data_row(&[Some(id.as_bytes()), name]), &mut ev);
        }
        complete(&mut t, "SELECT 5", &mut ev);
        t.backend(b'T', &row_desc(&[("one", 23, 0)]), &mut ev);
        t.backend(b'D', &data_row(&[Some(b"1")]), &mut ev);
        complete(&mut t, "SELECT 1", &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(ev.len(), 2);
        let first = sample(&ev[0]);
        assert_eq!(first.columns, ["id", "name"]);
        assert_eq!(
            first.rows,
            vec![
                vec![Some("1".to_string()), Some("n1".to_string())],
                vec![Some("2".to_string()), None],
            ]
        );
        assert!(first.truncated);
        assert_eq!(ev[0].rows, Some(5), "every row is still counted");
        let second = sample(&ev[1]);
        assert_eq!(second.columns, ["one"]);
        assert_eq!(second.rows, vec![vec![Some("1".to_string())]]);
        assert!(!second.truncated, "exactly what the result held");

        // A statement whose capture is off (the next Query, with no capture set) has none.
        t.frontend(b'Q', &body(|b| put_cstr(b, "select 2")));
        t.backend(b'T', &row_desc(&[("x", 23, 0)]), &mut ev);
        t.backend(b'D', &data_row(&[Some(b"2")]), &mut ev);
        complete(&mut t, "SELECT 1", &mut ev);
        assert!(ev[2].result_sample.is_none());
    }

    #[test]
    fn capture_stops_at_the_byte_cap_mid_value() {
        let mut t = capturing_tracker(100, 10);
        t.frontend(b'Q', &body(|b| put_cstr(b, "select s from t")));
        let mut ev = Vec::new();
        t.backend(b'T', &row_desc(&[("s", 25, 0)]), &mut ev);
        t.backend(b'D', &data_row(&[Some(b"abcdef")]), &mut ev);
        t.backend(b'D', &data_row(&[Some("ghi€jklmn".as_bytes())]), &mut ev);
        t.backend(b'D', &data_row(&[Some(b"never")]), &mut ev);
        complete(&mut t, "SELECT 3", &mut ev);
        let s = sample(&ev[0]);
        assert_eq!(
            s.rows,
            vec![
                vec![Some("abcdef".to_string())],
                vec![Some("ghi".to_string())]
            ],
            "cut on a character boundary within 10 bytes"
        );
        assert!(s.truncated);
    }

    #[test]
    fn capture_renders_binary_results_of_executes_and_survives_errors() {
        let mut t = capturing_tracker(10, 4096);
        t.frontend(
            b'P',
            &body(|b| {
                put_cstr(b, "s");
                put_cstr(b, "select id, name, at, raw from t");
                b.extend(0i16.to_be_bytes());
            }),
        );
        t.frontend(
            b'D',
            &body(|b| {
                b.push(b'S');
                put_cstr(b, "s");
            }),
        );
        t.frontend(b'S', &[]);
        let mut ev = Vec::new();
        t.backend(b'1', &[], &mut ev);
        t.backend(b't', &[0, 0], &mut ev);
        t.backend(
            b'T',
            &row_desc(&[
                ("id", 23, 0),
                ("name", 25, 0),
                ("at", 1082, 0),
                ("raw", 17, 0),
            ]),
            &mut ev,
        );
        t.backend(b'Z', b"I", &mut ev);
        // Bind asking for binary results, Execute, Sync.
        bind_binary_results(&mut t, "s");
        execute_unnamed(&mut t);
        t.frontend(b'S', &[]);
        t.backend(b'2', &[], &mut ev);
        t.backend(
            b'D',
            &data_row(&[
                Some(&42i32.to_be_bytes()),
                Some(b"alice"),
                Some(&0i32.to_be_bytes()),
                Some(&[0xde, 0xad]),
            ]),
            &mut ev,
        );
        let err = crate::messages::error_bytes(
            crate::messages::Severity::Error,
            "22012",
            "division by zero",
            None,
        );
        t.backend(b'E', &err[5..], &mut ev);
        t.backend(b'Z', b"I", &mut ev);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].sqlstate.as_deref(), Some("22012"));
        let s = sample(&ev[0]);
        assert_eq!(s.columns, ["id", "name", "at", "raw"]);
        assert_eq!(
            s.rows,
            vec![vec![
                Some("42".to_string()),
                Some("alice".to_string()),
                Some("2000-01-01".to_string()),
                Some("\\xdead".to_string()),
            ]]
        );
        assert!(!s.truncated);
        assert_eq!(t.pending_len(), 0);
    }

    #[test]
    fn capture_off_keeps_nothing() {
        let mut t = capturing_tracker(0, 4096);
        assert!(!Capture::new(0, 4096).is_on() && !Capture::new(3, 0).is_on());
        t.frontend(b'Q', &body(|b| put_cstr(b, "select 1")));
        let mut ev = Vec::new();
        t.backend(b'T', &row_desc(&[("x", 23, 0)]), &mut ev);
        t.backend(b'D', &data_row(&[Some(b"1")]), &mut ev);
        complete(&mut t, "SELECT 1", &mut ev);
        assert!(ev[0].result_sample.is_none());
        assert_eq!(ev[0].rows, Some(1));
    }

    #[test]
    fn unknown_client_messages_are_refused() {
        let mut t = tracker();
        assert!(matches!(t.frontend(b'!', &[]), Frontend::Invalid(_)));
        assert!(matches!(
            t.frontend(b'Q', b"no terminator"),
            Frontend::Invalid(_)
        ));
    }
}
