//! The few PostgreSQL messages ward reads or writes itself, as borrowed views and builders.
//!
//! Everything else crosses the relay as opaque bytes (see `codec`).

use crate::codec::{put_cstr, put_message, read_cstr, read_i16, read_i32};
use std::sync::Arc;

/// Severity of a message ward generates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Fatal,
}

impl Severity {
    fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "ERROR",
            Severity::Fatal => "FATAL",
        }
    }
}

/// SQLSTATE codes ward uses in its own errors.
pub mod sqlstate {
    /// The client broke the protocol (and plaintext refusal).
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    /// Authentication failed.
    pub const INVALID_PASSWORD: &str = "28P01";
    /// The identity may not go on: locked, or its credential expired during the session.
    pub const INVALID_AUTHORIZATION: &str = "28000";
    /// The target could not be reached or refused ward.
    pub const CONNECTION_FAILURE: &str = "08006";
    /// ward could not connect at all.
    pub const CANNOT_CONNECT: &str = "08001";
    /// The session was terminated by an administrator.
    pub const ADMIN_SHUTDOWN: &str = "57P01";
    /// ward cannot record the session and will not continue unaudited.
    pub const SYSTEM_ERROR: &str = "58000";
    /// A protocol feature ward does not support.
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
}

/// Appends an ErrorResponse. Every message ward writes names ward, so a user can tell the
/// gateway's errors from the database's.
pub fn error_response(
    out: &mut Vec<u8>,
    severity: Severity,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    put_message(out, b'E', |b| {
        b.push(b'S');
        put_cstr(b, severity.as_str());
        b.push(b'V');
        put_cstr(b, severity.as_str());
        b.push(b'C');
        put_cstr(b, code);
        b.push(b'M');
        put_cstr(b, message);
        if let Some(hint) = hint {
            b.push(b'H');
            put_cstr(b, hint);
        }
        b.push(0);
    });
}

/// An ErrorResponse as a fresh buffer.
pub fn error_bytes(severity: Severity, code: &str, message: &str, hint: Option<&str>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + message.len());
    error_response(&mut out, severity, code, message, hint);
    out
}

/// Appends a NoticeResponse from ward (severity NOTICE, SQLSTATE 00000).
pub fn notice_response(out: &mut Vec<u8>, message: &str) {
    put_message(out, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', message),
        ] {
            b.push(field);
            put_cstr(b, value);
        }
        b.push(0);
    });
}

pub fn authentication_ok(out: &mut Vec<u8>) {
    put_message(out, b'R', |b| b.extend_from_slice(&0i32.to_be_bytes()));
}

pub fn authentication_cleartext(out: &mut Vec<u8>) {
    put_message(out, b'R', |b| b.extend_from_slice(&3i32.to_be_bytes()));
}

pub fn backend_key_data(out: &mut Vec<u8>, pid: i32, secret: i32) {
    put_message(out, b'K', |b| {
        b.extend_from_slice(&pid.to_be_bytes());
        b.extend_from_slice(&secret.to_be_bytes());
    });
}

pub fn ready_for_query(out: &mut Vec<u8>, status: u8) {
    put_message(out, b'Z', |b| b.push(status));
}

/// NegotiateProtocolVersion: tells a client asking for 3.x (x > 0) that ward speaks 3.0.
pub fn negotiate_protocol_version(out: &mut Vec<u8>, newest_minor: i32, unsupported: &[String]) {
    put_message(out, b'v', |b| {
        b.extend_from_slice(&newest_minor.to_be_bytes());
        b.extend_from_slice(&(unsupported.len() as i32).to_be_bytes());
        for option in unsupported {
            put_cstr(b, option);
        }
    });
}

/// An ErrorResponse rebuilt from `body` without its `W` (context) field.
pub fn without_context(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 5);
    put_message(&mut out, b'E', |b| {
        let mut rest = body;
        while let Some((&kind, tail)) = rest.split_first() {
            if kind == 0 {
                break;
            }
            let Some((value, tail)) = read_cstr(tail) else {
                break;
            };
            if kind != b'W' {
                b.push(kind);
                b.extend_from_slice(value);
                b.push(0);
            }
            rest = tail;
        }
        b.push(0);
    });
    out
}

/// Fields of an ErrorResponse or NoticeResponse that the audit keeps.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ErrorFields<'a> {
    pub severity: Option<&'a [u8]>,
    pub code: Option<&'a [u8]>,
    pub message: Option<&'a [u8]>,
}

/// Reads an ErrorResponse/NoticeResponse body.
pub fn parse_error_fields(mut body: &[u8]) -> ErrorFields<'_> {
    let mut fields = ErrorFields::default();
    while let Some((&kind, rest)) = body.split_first() {
        if kind == 0 {
            break;
        }
        let Some((value, rest)) = read_cstr(rest) else {
            break;
        };
        match kind {
            b'V' => fields.severity = Some(value),
            b'S' if fields.severity.is_none() => fields.severity = Some(value),
            b'C' => fields.code = Some(value),
            b'M' => fields.message = Some(value),
            _ => {}
        }
        body = rest;
    }
    fields
}

/// The command of a CommandComplete tag and its row count: `SELECT 5` gives (`SELECT`, 5),
/// `INSERT 0 3` gives (`INSERT`, 3), `START TRANSACTION` gives (`START TRANSACTION`, none).
pub fn parse_command_tag(body: &[u8]) -> (String, Option<u64>) {
    let tag = read_cstr(body).map(|(t, _)| t).unwrap_or(body);
    let tag = String::from_utf8_lossy(tag);
    let words: Vec<&str> = tag.split(' ').collect();
    let numbers = words
        .iter()
        .rev()
        .take_while(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
        .count();
    let rows = if numbers > 0 {
        words.last().and_then(|n| n.parse().ok())
    } else {
        None
    };
    (words[..words.len() - numbers].join(" "), rows)
}

/// A Parse message: statement name and SQL text.
pub struct Parse<'a> {
    pub name: &'a [u8],
    pub query: &'a [u8],
}

pub fn parse_parse(body: &[u8]) -> Option<Parse<'_>> {
    let (name, rest) = read_cstr(body)?;
    let (query, _) = read_cstr(rest)?;
    Some(Parse { name, query })
}

/// A Bind message: portal, statement, and the parameter values rendered for the audit.
pub struct Bind<'a> {
    pub portal: &'a [u8],
    pub statement: &'a [u8],
    /// Parameters rendered as `$1='…', $2=NULL`, capped; `None` when there are none.
    pub params: Option<String>,
}

/// Reads a Bind and renders its parameters within `cap` bytes.
///
/// `types_of(statement)` gives the parameter type OIDs known for the prepared statement
/// (from its Parse message or the server's ParameterDescription), so binary values of common
/// types are shown as the value they encode (`42`, `'tea'`, a UUID, a timestamp) rather than
/// as bytes. Text values are quoted; binary values of other types are shown as hex; values
/// past the cap are cut with a marker saying how much was left out.
pub fn parse_bind<'a>(
    body: &'a [u8],
    cap: usize,
    types_of: impl FnOnce(&[u8]) -> Option<Arc<[u32]>>,
) -> Option<Bind<'a>> {
    let (portal, rest) = read_cstr(body)?;
    let (statement, rest) = read_cstr(rest)?;
    let (n_formats, mut rest) = read_i16(rest)?;
    let n_formats = usize::try_from(n_formats).ok()?;
    let formats = rest.get(..n_formats * 2)?;
    rest = &rest[n_formats * 2..];
    let format_of = |i: usize| -> i16 {
        match n_formats {
            0 => 0,
            1 => i16::from_be_bytes([formats[0], formats[1]]),
            _ => formats
                .get(i * 2..i * 2 + 2)
                .map(|f| i16::from_be_bytes([f[0], f[1]]))
                .unwrap_or(0),
        }
    };
    let (n_params, mut rest) = read_i16(rest)?;
    let n_params = usize::try_from(n_params).ok()?;
    if n_params == 0 {
        return Some(Bind {
            portal,
            statement,
            params: None,
        });
    }
    let types = types_of(statement);
    let type_of = |i: usize| types.as_ref().and_then(|t| t.get(i).copied()).unwrap_or(0);
    let mut out = String::new();
    for i in 0..n_params {
        let (len, after) = read_i32(rest)?;
        if i > 0 {
            out.push_str(", ");
        }
        if out.len() >= cap {
            out.push('…');
            // Still walk the message so a malformed Bind is noticed, but render nothing more.
            rest = skip_value(after, len)?;
            continue;
        }
        out.push('$');
        out.push_str(&(i + 1).to_string());
        out.push('=');
        if len < 0 {
            out.push_str("NULL");
            rest = after;
            continue;
        }
        let value = after.get(..len as usize)?;
        rest = &after[len as usize..];
        let room = cap.saturating_sub(out.len());
        if format_of(i) == 0 {
            render_text(&mut out, value, room);
        } else {
            render_binary(&mut out, value, type_of(i), room);
        }
    }
    Some(Bind {
        portal,
        statement,
        params: Some(out),
    })
}

/// The result-column format codes a Bind asks for (empty: all text; one: all columns).
pub fn parse_bind_result_formats(body: &[u8]) -> Option<Arc<[i16]>> {
    let (_, rest) = read_cstr(body)?;
    let (_, rest) = read_cstr(rest)?;
    let (n_formats, rest) = read_i16(rest)?;
    let mut rest = rest.get(usize::try_from(n_formats).ok()? * 2..)?;
    let (n_params, after) = read_i16(rest)?;
    rest = after;
    for _ in 0..n_params {
        let (len, after) = read_i32(rest)?;
        rest = skip_value(after, len)?;
    }
    let (n_results, mut rest) = read_i16(rest)?;
    let mut formats = Vec::with_capacity(usize::try_from(n_results).ok()?);
    for _ in 0..n_results {
        let (f, tail) = read_i16(rest)?;
        formats.push(f);
        rest = tail;
    }
    Some(formats.into())
}

fn skip_value(after: &[u8], len: i32) -> Option<&[u8]> {
    if len < 0 {
        Some(after)
    } else {
        after.get(len as usize..)
    }
}

fn render_text(out: &mut String, value: &[u8], room: usize) {
    let text = String::from_utf8_lossy(value);
    out.push('\'');
    let mut cut = text.len().min(room.max(8));
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    out.push_str(&text[..cut].replace('\'', "''"));
    out.push('\'');
    if cut < text.len() {
        out.push_str(&format!("…(+{} bytes)", text.len() - cut));
    }
}

/// Type OIDs ward reads values of (the audit's parameter rendering, masking).
pub(crate) mod oid {
    pub const BOOL: u32 = 16;
    pub const BYTEA: u32 = 17;
    pub const CHAR: u32 = 18;
    pub const NAME: u32 = 19;
    pub const INT8: u32 = 20;
    pub const INT2: u32 = 21;
    pub const INT4: u32 = 23;
    pub const TEXT: u32 = 25;
    pub const OID: u32 = 26;
    pub const JSON: u32 = 114;
    pub const XML: u32 = 142;
    pub const FLOAT4: u32 = 700;
    pub const FLOAT8: u32 = 701;
    pub const MONEY: u32 = 790;
    pub const UNKNOWN: u32 = 705;
    pub const BPCHAR: u32 = 1042;
    pub const VARCHAR: u32 = 1043;
    pub const DATE: u32 = 1082;
    pub const NUMERIC: u32 = 1700;
    pub const TIMESTAMP: u32 = 1114;
    pub const TIMESTAMPTZ: u32 = 1184;
    pub const UUID: u32 = 2950;
    pub const JSONB: u32 = 3802;
}

/// Microseconds from the Unix epoch to PostgreSQL's epoch (2000-01-01).
const PG_EPOCH_OFFSET_US: i64 = 946_684_800_000_000;

pub(crate) fn render_binary(out: &mut String, value: &[u8], type_oid: u32, room: usize) {
    use std::fmt::Write;
    let fixed = |n: usize| -> Option<&[u8]> { (value.len() == n).then_some(value) };
    match type_oid {
        oid::BOOL if value.len() == 1 => out.push_str(if value[0] != 0 { "true" } else { "false" }),
        oid::INT2 if fixed(2).is_some() => {
            let _ = write!(out, "{}", i16::from_be_bytes([value[0], value[1]]));
        }
        oid::INT4 if fixed(4).is_some() => {
            let _ = write!(
                out,
                "{}",
                i32::from_be_bytes(value.try_into().expect("4 bytes"))
            );
        }
        oid::OID if fixed(4).is_some() => {
            let _ = write!(
                out,
                "{}",
                u32::from_be_bytes(value.try_into().expect("4 bytes"))
            );
        }
        oid::INT8 if fixed(8).is_some() => {
            let _ = write!(
                out,
                "{}",
                i64::from_be_bytes(value.try_into().expect("8 bytes"))
            );
        }
        oid::FLOAT4 if fixed(4).is_some() => {
            let _ = write!(
                out,
                "{}",
                f32::from_be_bytes(value.try_into().expect("4 bytes"))
            );
        }
        oid::FLOAT8 if fixed(8).is_some() => {
            let _ = write!(
                out,
                "{}",
                f64::from_be_bytes(value.try_into().expect("8 bytes"))
            );
        }
        oid::TEXT
        | oid::VARCHAR
        | oid::BPCHAR
        | oid::NAME
        | oid::UNKNOWN
        | oid::JSON
        | oid::XML => render_text(out, value, room),
        oid::JSONB if value.first() == Some(&1) => render_text(out, &value[1..], room),
        oid::UUID if fixed(16).is_some() => {
            let h = hex::encode(value);
            let _ = write!(
                out,
                "'{}-{}-{}-{}-{}'",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            );
        }
        oid::DATE if fixed(4).is_some() => {
            let days = i32::from_be_bytes(value.try_into().expect("4 bytes")) as i64;
            let micros = days * 86_400_000_000 + PG_EPOCH_OFFSET_US;
            let text = ward_core::time::format_micros(micros);
            let _ = write!(out, "'{}'", &text[..text.len().min(10)]);
        }
        oid::TIMESTAMP | oid::TIMESTAMPTZ if fixed(8).is_some() => {
            let micros = i64::from_be_bytes(value.try_into().expect("8 bytes"));
            let _ = write!(
                out,
                "'{}'",
                ward_core::time::format_micros(micros.saturating_add(PG_EPOCH_OFFSET_US))
            );
        }
        _ => {
            let _ = oid::BYTEA;
            let shown = value.len().min(room.max(8) / 2);
            out.push_str("\\x");
            out.push_str(&hex::encode(&value[..shown]));
            if shown < value.len() {
                out.push_str(&format!("…(+{} bytes)", value.len() - shown));
            }
        }
    }
}

/// The parameter type OIDs a Parse message declares (0 = let the server infer).
pub fn parse_param_types(body: &[u8]) -> Option<Arc<[u32]>> {
    let (_, rest) = read_cstr(body)?;
    let (_, rest) = read_cstr(rest)?;
    read_oid_list(rest)
}

/// The type OIDs of a ParameterDescription message.
pub fn parse_parameter_description(body: &[u8]) -> Option<Arc<[u32]>> {
    read_oid_list(body)
}

fn read_oid_list(body: &[u8]) -> Option<Arc<[u32]>> {
    let (n, mut rest) = read_i16(body)?;
    let mut oids = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let (oid, tail) = read_i32(rest)?;
        oids.push(oid as u32);
        rest = tail;
    }
    Some(oids.into())
}

/// An Execute: portal name and row limit (0 = all).
pub fn parse_execute(body: &[u8]) -> Option<(&[u8], i32)> {
    let (portal, rest) = read_cstr(body)?;
    let (max_rows, _) = read_i32(rest)?;
    Some((portal, max_rows))
}

/// A Close or Describe: `S` (statement) or `P` (portal) and the name.
pub fn parse_target_kind(body: &[u8]) -> Option<(u8, &[u8])> {
    let (&kind, rest) = body.split_first()?;
    let (name, _) = read_cstr(rest)?;
    Some((kind, name))
}

/// The SQL text of a Query message.
pub fn parse_query(body: &[u8]) -> Option<&[u8]> {
    read_cstr(body).map(|(q, _)| q)
}

/// The function OID of a FunctionCall message.
pub fn parse_function_call(body: &[u8]) -> Option<i32> {
    read_i32(body).map(|(oid, _)| oid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_tags_give_verb_and_rows() {
        assert_eq!(parse_command_tag(b"SELECT 5\0"), ("SELECT".into(), Some(5)));
        assert_eq!(
            parse_command_tag(b"INSERT 0 3\0"),
            ("INSERT".into(), Some(3))
        );
        assert_eq!(
            parse_command_tag(b"CREATE TABLE\0"),
            ("CREATE TABLE".into(), None)
        );
        assert_eq!(parse_command_tag(b"BEGIN\0"), ("BEGIN".into(), None));
        assert_eq!(parse_command_tag(b"COPY 10\0"), ("COPY".into(), Some(10)));
        assert_eq!(
            parse_command_tag(b"START TRANSACTION\0"),
            ("START TRANSACTION".into(), None)
        );
    }

    fn bind_body(formats: &[i16], params: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        put_cstr(&mut b, "p1");
        put_cstr(&mut b, "s1");
        b.extend((formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend(f.to_be_bytes());
        }
        b.extend((params.len() as i16).to_be_bytes());
        for p in params {
            match p {
                None => b.extend((-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend((v.len() as i32).to_be_bytes());
                    b.extend(*v);
                }
            }
        }
        b.extend(0i16.to_be_bytes());
        b
    }

    #[test]
    fn bind_params_render_text_binary_and_null() {
        let body = bind_body(&[0, 1, 0], &[Some(b"o'k"), Some(&[0, 0, 0, 42]), None]);
        let bind = parse_bind(&body, 1024, |_| None).unwrap();
        assert_eq!(bind.portal, b"p1");
        assert_eq!(bind.statement, b"s1");
        assert_eq!(
            bind.params.as_deref(),
            Some("$1='o''k', $2=\\x0000002a, $3=NULL")
        );
    }

    #[test]
    fn binary_params_of_known_types_show_their_values() {
        let uuid = [
            0x12u8, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let ts = (86_400_000_000i64).to_be_bytes(); // 2000-01-02 00:00:00
        let body = bind_body(
            &[1],
            &[
                Some(&42i64.to_be_bytes()),
                Some(b"tea"),
                Some(&uuid),
                Some(&ts),
                Some(&[1]),
                Some(&[0xff, 0]),
            ],
        );
        let types: Arc<[u32]> = vec![
            oid::INT8,
            oid::TEXT,
            oid::UUID,
            oid::TIMESTAMPTZ,
            oid::BOOL,
            oid::BYTEA,
        ]
        .into();
        let bind = parse_bind(&body, 1024, |name| {
            assert_eq!(name, b"s1");
            Some(types.clone())
        })
        .unwrap();
        assert_eq!(
            bind.params.as_deref(),
            Some(
                "$1=42, $2='tea', $3='12345678-9abc-def0-0102-030405060708', $4='2000-01-02T00:00:00.000Z', $5=true, $6=\\xff00"
            )
        );
    }

    #[test]
    fn bind_result_formats_follow_the_parameters() {
        let mut body = bind_body(&[0], &[Some(b"x"), None]);
        body.truncate(body.len() - 2);
        body.extend(2i16.to_be_bytes());
        body.extend(1i16.to_be_bytes());
        body.extend(0i16.to_be_bytes());
        assert_eq!(&*parse_bind_result_formats(&body).unwrap(), &[1, 0]);
        assert!(parse_bind_result_formats(&body[..body.len() - 3]).is_none());
    }

    #[test]
    fn bind_params_are_capped() {
        let long = vec![b'a'; 5000];
        let body = bind_body(&[], &[Some(&long), Some(b"x")]);
        let params = parse_bind(&body, 100, |_| None).unwrap().params.unwrap();
        assert!(params.len() < 200, "{params}");
        assert!(params.contains("(+"), "{params}");
    }

    #[test]
    fn truncated_bind_is_rejected_not_panicking() {
        let body = bind_body(&[0], &[Some(b"hello")]);
        for cut in 0..body.len() - 2 {
            let _ = parse_bind(&body[..cut], 64, |_| None);
        }
        assert!(parse_bind(&body[..body.len() - 6], 64, |_| None).is_none());
    }

    #[test]
    fn error_fields_round_trip() {
        let bytes = error_bytes(Severity::Fatal, "28P01", "nope", Some("hint"));
        let f = parse_error_fields(&bytes[5..]);
        assert_eq!(f.code, Some(&b"28P01"[..]));
        assert_eq!(f.message, Some(&b"nope"[..]));
        assert_eq!(f.severity, Some(&b"FATAL"[..]));
    }
}
