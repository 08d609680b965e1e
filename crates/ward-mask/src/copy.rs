//! Masking of `COPY … TO STDOUT` data (one `CopyData` payload at a time).
//!
//! `COPY` bypasses the row-description/`DataRow` path entirely, so without
//! this a client could exfiltrate a masked table with `COPY t TO STDOUT`.
//! Fields are masked individually so delimiters, NULL markers and the row
//! terminator survive, and every unchanged field is forwarded byte for byte.
//!
//! Text-format fields are masked on their *unescaped* content when they
//! contain backslash escapes: masking the escaped text could split an
//! escape (`\n` + `john@…`) or hide a secret behind one (`\t` before an
//! email), and a replacement is re-escaped so it cannot inject a delimiter.

use crate::encoded::{self, Encoding, decode_and_mask};
use crate::{Masker, Outcome, Splice, with_scratch};

/// What to write for one field.
enum Field {
    Unchanged,
    Null,
    /// Masked plain text in `tmp`; needs format-specific escaping/quoting.
    Text,
    /// Masked decoded bytes in `tmp`, to be written as `prefix` + `enc`.
    /// Hex and base64 never need COPY escaping or CSV quoting.
    Encoded(Encoding, &'static [u8]),
}

/// Mask one `CopyData` payload of `COPY … TO STDOUT` in text format
/// (`csv = false`: TAB-delimited, `\N` = NULL, backslash escapes) or CSV
/// format (`csv = true`: `,` delimiter, `"` quoting, unquoted empty = NULL).
///
/// Normally the payload is one row ending in `\n`; several rows are also
/// handled. A field whose content is sensitive is rewritten (escaped/quoted
/// as the format requires); a field masked to [`Outcome::Null`] becomes the
/// format's NULL (`\N` / empty unquoted), and the line as a whole is then
/// [`Outcome::Masked`]. Bytea fields (`\\x…` in text, `\x…` in CSV) and
/// wholly hex/base64 fields are decoded, masked and re-encoded.
///
/// Returns [`Outcome::Unchanged`] with nothing appended when no field
/// changed. A CSV payload that does not parse (never produced by
/// PostgreSQL) falls back to content masking of the whole payload, which
/// may return [`Outcome::Null`].
pub fn mask_copy_line_into(masker: &Masker, line: &[u8], csv: bool, out: &mut Vec<u8>) -> Outcome {
    if masker.is_empty() {
        return Outcome::Unchanged;
    }
    let mut splice = Splice::new(out);
    let ok = if csv {
        csv_line(masker, line, &mut splice, out)
    } else {
        text_line(masker, line, &mut splice, out);
        true
    };
    if ok {
        splice.finish(line, out)
    } else {
        splice.abort(out);
        masker.mask_into(line, out)
    }
}

fn text_line(masker: &Masker, line: &[u8], splice: &mut Splice, out: &mut Vec<u8>) {
    let mut tmp = Vec::new();
    let mut start = 0;
    loop {
        let end = line[start..]
            .iter()
            .position(|&c| c == b'\t' || c == b'\n')
            .map_or(line.len(), |p| start + p);
        tmp.clear();
        match text_field(masker, &line[start..end], out, &mut tmp) {
            Field::Unchanged => {}
            Field::Null => {
                splice.replace(line, start, end, out);
                out.extend_from_slice(b"\\N");
            }
            Field::Text => {
                splice.replace(line, start, end, out);
                copy_escape(&tmp, out);
            }
            Field::Encoded(enc, prefix) => {
                splice.replace(line, start, end, out);
                out.extend_from_slice(prefix);
                encoded::encode(enc, &tmp, out);
            }
        }
        if end >= line.len() {
            return;
        }
        start = end + 1;
        if start == line.len() && line[end] == b'\n' {
            return;
        }
    }
}

/// `scratch` is the caller's `out`; large fields borrow its spare capacity
/// for unescaping/decoding (see [`crate::with_scratch`]).
fn text_field(masker: &Masker, field: &[u8], scratch: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Field {
    if field == b"\\N" {
        return Field::Unchanged;
    }
    // Escaped bytea: `\\x` + hex. Decode straight from the field.
    if let Some(hex) = field.strip_prefix(b"\\\\x") {
        let enc = Encoding::Hex { upper: false };
        if let Some(r) = decode_and_mask(masker, enc, hex, scratch, tmp) {
            return match r {
                Outcome::Unchanged => Field::Unchanged,
                Outcome::Masked => Field::Encoded(enc, b"\\\\x"),
                Outcome::Null => Field::Null,
            };
        }
    }
    if !field.contains(&b'\\') {
        return match masker.mask_into(field, tmp) {
            Outcome::Masked => Field::Text,
            Outcome::Null => Field::Null,
            // Hex/base64 never contain a backslash, so only unescaped
            // fields can be wholly encoded.
            Outcome::Unchanged => encoded_field(masker, field, scratch, tmp),
        };
    }
    let r = with_scratch(
        field.len(),
        scratch,
        |b| Some(copy_unescape(field, b)),
        |c| masker.mask_into(c, tmp),
    );
    match r.expect("unescape cannot fail") {
        Outcome::Unchanged => Field::Unchanged,
        Outcome::Masked => Field::Text,
        Outcome::Null => Field::Null,
    }
}

fn encoded_field(masker: &Masker, value: &[u8], scratch: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Field {
    let Some(enc) = encoded::classify(value) else {
        return Field::Unchanged;
    };
    match decode_and_mask(masker, enc, value, scratch, tmp) {
        Some(Outcome::Masked) => Field::Encoded(enc, b""),
        Some(Outcome::Null) => Field::Null,
        _ => Field::Unchanged,
    }
}

/// Decode COPY text escapes (`\b \f \n \r \t \v`, octal `\ooo`, `\xhh`,
/// and `\c` = `c` for anything else), as the server's COPY FROM would.
/// Returns the decoded length; `out` must hold `src.len()` bytes (every
/// escape is at least as long as the byte it encodes).
fn copy_unescape(src: &[u8], out: &mut [u8]) -> usize {
    let (mut i, mut o) = (0, 0);
    while i < src.len() {
        let c = src[i];
        i += 1;
        out[o] = if c != b'\\' || i == src.len() {
            c
        } else {
            let e = src[i];
            i += 1;
            match e {
                b'b' => 0x08,
                b'f' => 0x0c,
                b'n' => b'\n',
                b'r' => b'\r',
                b't' => b'\t',
                b'v' => 0x0b,
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match src.get(i) {
                            Some(&d @ b'0'..=b'7') => {
                                v = v * 8 + u32::from(d - b'0');
                                i += 1;
                            }
                            _ => break,
                        }
                    }
                    (v & 0xff) as u8
                }
                b'x' if src.get(i).is_some_and(u8::is_ascii_hexdigit) => {
                    let mut v = 0u8;
                    for _ in 0..2 {
                        match src.get(i).copied().and_then(encoded::hex_val) {
                            Some(d) => {
                                v = v << 4 | d;
                                i += 1;
                            }
                            None => break,
                        }
                    }
                    v
                }
                other => other,
            }
        };
        o += 1;
    }
    o
}

/// Escape like the server's COPY TO text output: backslash, the delimiter
/// (TAB), newline/CR and the other C-style control escapes.
fn copy_escape(src: &[u8], out: &mut Vec<u8>) {
    out.reserve(src.len());
    for &c in src {
        let e = match c {
            b'\\' => b'\\',
            b'\t' => b't',
            b'\n' => b'n',
            b'\r' => b'r',
            0x08 => b'b',
            0x0c => b'f',
            0x0b => b'v',
            _ => {
                out.push(c);
                continue;
            }
        };
        out.push(b'\\');
        out.push(e);
    }
}

/// CSV rows; `false` if the payload is not well-formed CSV.
/// Decodes one COPY text-format field's escapes, appending to `out` (for callers that
/// mask fields themselves, per column).
pub fn unescape_text_field(field: &[u8], out: &mut Vec<u8>) {
    let at = out.len();
    out.resize(at + field.len(), 0);
    let n = copy_unescape(field, &mut out[at..]);
    out.truncate(at + n);
}

/// Appends `value` as a COPY text-format field (escaped so it cannot break the row).
pub fn escape_text_field(value: &[u8], out: &mut Vec<u8>) {
    copy_escape(value, out);
}

/// Decodes one CSV field (quoted or bare), appending its value to `out`.
pub fn unquote_csv_field(field: &[u8], out: &mut Vec<u8>) {
    let inner = field
        .strip_prefix(b"\"")
        .and_then(|f| f.strip_suffix(b"\""))
        .unwrap_or(field);
    let at = out.len();
    out.resize(at + inner.len(), 0);
    let n = unquote(inner, &mut out[at..]);
    out.truncate(at + n);
}

/// Appends `value` as a CSV field, quoted when it has to be.
pub fn quote_csv_field(value: &[u8], out: &mut Vec<u8>) {
    csv_quote(value, out);
}

fn csv_line(masker: &Masker, line: &[u8], splice: &mut Splice, out: &mut Vec<u8>) -> bool {
    let mut tmp = Vec::new();
    let mut i = 0;
    loop {
        tmp.clear();
        // `[start, end)` is replaced; `term` is the index of the terminator.
        let (start, end, term, field) = if line.get(i) == Some(&b'"') {
            let mut j = i + 1;
            let mut doubled = false;
            loop {
                match line.get(j) {
                    None => return false,
                    Some(b'"') if line.get(j + 1) == Some(&b'"') => {
                        doubled = true;
                        j += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => j += 1,
                }
            }
            let content = &line[i + 1..j];
            let field = if doubled {
                let r = with_scratch(
                    content.len(),
                    out,
                    |b| Some(unquote(content, b)),
                    |c| masker.mask_into(c, &mut tmp),
                );
                match r.expect("unquote cannot fail") {
                    Outcome::Unchanged => Field::Unchanged,
                    Outcome::Masked => Field::Text,
                    Outcome::Null => Field::Null,
                }
            } else {
                csv_value(masker, content, out, &mut tmp)
            };
            (i, j + 1, j + 1, field)
        } else {
            let term = line[i..]
                .iter()
                .position(|&c| c == b',' || c == b'\n')
                .map_or(line.len(), |p| i + p);
            let mut end = term;
            if line.get(term) == Some(&b'\n') && end > i && line[end - 1] == b'\r' {
                end -= 1;
            }
            let field = if end == i {
                Field::Unchanged // unquoted empty: NULL
            } else {
                csv_value(masker, &line[i..end], out, &mut tmp)
            };
            (i, end, term, field)
        };
        match field {
            Field::Unchanged => {}
            Field::Null => splice.replace(line, start, end, out),
            Field::Text => {
                splice.replace(line, start, end, out);
                csv_quote(&tmp, out);
            }
            Field::Encoded(enc, prefix) => {
                splice.replace(line, start, end, out);
                out.extend_from_slice(prefix);
                encoded::encode(enc, &tmp, out);
            }
        }
        i = match line.get(term) {
            None => return true,
            Some(b',') => term + 1,
            Some(b'\n') => term + 1,
            Some(b'\r') if line.get(term + 1) == Some(&b'\n') => term + 2,
            Some(_) => return false, // junk after a closing quote
        };
        if i == line.len() && line[i - 1] == b'\n' {
            return true;
        }
    }
}

fn csv_value(masker: &Masker, value: &[u8], scratch: &mut Vec<u8>, tmp: &mut Vec<u8>) -> Field {
    // bytea is written as `\x` + hex, unescaped, in CSV.
    if let Some(hex) = value.strip_prefix(b"\\x") {
        let enc = Encoding::Hex { upper: false };
        if let Some(r) = decode_and_mask(masker, enc, hex, scratch, tmp) {
            return match r {
                Outcome::Unchanged => Field::Unchanged,
                Outcome::Masked => Field::Encoded(enc, b"\\x"),
                Outcome::Null => Field::Null,
            };
        }
    }
    match masker.mask_into(value, tmp) {
        Outcome::Masked => Field::Text,
        Outcome::Null => Field::Null,
        Outcome::Unchanged => encoded_field(masker, value, scratch, tmp),
    }
}

/// Collapse `""` to `"`; returns the length written to `out`.
fn unquote(content: &[u8], out: &mut [u8]) -> usize {
    let mut o = 0;
    let mut prev_quote = false;
    for &c in content {
        if c == b'"' && prev_quote {
            prev_quote = false;
            continue;
        }
        prev_quote = c == b'"';
        out[o] = c;
        o += 1;
    }
    o
}

/// Quote only when needed, like the server: delimiter, quote, CR/LF, an
/// empty string (bare empty would read back as NULL) or the `\.`
/// end-of-data marker.
fn csv_quote(s: &[u8], out: &mut Vec<u8>) {
    let needs =
        s.is_empty() || s == b"\\." || s.iter().any(|&c| matches!(c, b',' | b'"' | b'\r' | b'\n'));
    if !needs {
        out.extend_from_slice(s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    for &c in s {
        if c == b'"' {
            out.push(b'"');
        }
        out.push(c);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detector, Strategy};

    fn masker(strategy: Strategy) -> Masker {
        crate::test_masker(&[Detector::Email, Detector::PaymentCard], strategy)
    }

    fn run(m: &Masker, line: &str, csv: bool) -> (Outcome, String) {
        let mut out = b">".to_vec();
        let r = mask_copy_line_into(m, line.as_bytes(), csv, &mut out);
        assert_eq!(out[0], b'>');
        let s = String::from_utf8(out[1..].to_vec()).unwrap();
        if r != Outcome::Masked {
            assert!(s.is_empty(), "{r:?} appended {s:?}");
        }
        (r, s)
    }

    fn masked(m: &Masker, line: &str, csv: bool) -> String {
        match run(m, line, csv) {
            (Outcome::Masked, s) => s,
            other => panic!("expected Masked for {line:?}, got {other:?}"),
        }
    }

    fn hex(s: &[u8]) -> String {
        s.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn field_codecs_round_trip() {
        let mut escaped = Vec::new();
        escape_text_field(b"a\tb\\c\n", &mut escaped);
        assert_eq!(escaped, b"a\\tb\\\\c\\n");
        let mut back = Vec::new();
        unescape_text_field(&escaped, &mut back);
        assert_eq!(back, b"a\tb\\c\n");
        let mut quoted = Vec::new();
        quote_csv_field(b"x,\"y\"", &mut quoted);
        assert_eq!(quoted, b"\"x,\"\"y\"\"\"");
        let mut value = Vec::new();
        unquote_csv_field(&quoted, &mut value);
        assert_eq!(value, b"x,\"y\"");
        value.clear();
        unquote_csv_field(b"bare", &mut value);
        assert_eq!(value, b"bare");
    }

    #[test]
    fn text_format() {
        let m = masker(Strategy::Redact);
        assert_eq!(
            masked(&m, "1\tjohn@example.com\t\\N\tnote\n", false),
            "1\tj***@*******.com\t\\N\tnote\n"
        );
        // Several fields and no trailing newline.
        assert_eq!(
            masked(&m, "a@b.com\t4111 1111 1111 1111", false),
            "a@*.com\t**** **** **** 1111"
        );
        // Escapes: the email behind `\n` is found on the unescaped text and
        // the rest of the field is re-escaped.
        assert_eq!(
            masked(&m, "7\tline1\\njohn@example.com\\tend\\\\x\n", false),
            "7\tline1\\nj***@*******.com\\tend\\\\x\n"
        );
        assert_eq!(masked(&m, "\\101@example.com\n", false), "A@*******.com\n");
        // Multi-row payload.
        assert_eq!(
            masked(&m, "1\tx\n2\ta@b.com\n", false),
            "1\tx\n2\ta@*.com\n"
        );
    }

    #[test]
    fn text_replacement_is_escaped() {
        let m = masker(Strategy::Fixed("a\tb\\c\nd".into()));
        assert_eq!(masked(&m, "1\tx@y.com\n", false), "1\ta\\tb\\\\c\\nd\n");
    }

    #[test]
    fn text_null_and_clean() {
        let m = masker(Strategy::Null);
        assert_eq!(
            masked(&m, "1\tjohn@example.com\tok\n", false),
            "1\t\\N\tok\n"
        );
        let m = masker(Strategy::Redact);
        for line in [
            "1\tplain\t\\N\t2024-01-01 10:00:00\n",
            "\n",
            "",
            "x\\ty\t\\\\x00ff\n",
            "\\.\n",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                mask_copy_line_into(&m, line.as_bytes(), false, &mut out),
                Outcome::Unchanged,
                "{line:?}"
            );
            assert_eq!(out.capacity(), 0, "allocated for {line:?}");
        }
        // No detectors: always unchanged.
        let none = Masker::with_key(None);
        assert_eq!(run(&none, "a@b.com\n", false).0, Outcome::Unchanged);
    }

    #[test]
    fn text_bytea_and_base64() {
        let m = masker(Strategy::Redact);
        let line = format!("1\t\\\\x{}\n", hex(b"mail john@example.com now"));
        assert_eq!(
            masked(&m, &line, false),
            format!("1\t\\\\x{}\n", hex(b"mail j***@*******.com now"))
        );
        use base64::Engine as _;
        let b = base64::engine::general_purpose::STANDARD.encode("john@example.com");
        let want = base64::engine::general_purpose::STANDARD.encode("j***@*******.com");
        assert_eq!(
            masked(&m, &format!("{b}\t1\n"), false),
            format!("{want}\t1\n")
        );
        // Bytea with the Null strategy.
        let m = masker(Strategy::Null);
        assert_eq!(masked(&m, &line, false), "1\t\\N\n");
    }

    #[test]
    fn csv_format() {
        let m = masker(Strategy::Redact);
        assert_eq!(
            masked(&m, "1,john@example.com,,\"\"\n", true),
            "1,j***@*******.com,,\"\"\n"
        );
        // Quoted field with a comma: content masked, still quoted.
        assert_eq!(
            masked(&m, "1,\"Doe, John <john@example.com>\",x\n", true),
            "1,\"Doe, John <j***@*******.com>\",x\n"
        );
        // Quoted field with a doubled quote, and CRLF.
        assert_eq!(
            masked(&m, "\"say \"\"a@b.com\"\"\",2\r\n", true),
            "\"say \"\"a@*.com\"\"\",2\r\n"
        );
        // A quoted field that no longer needs quotes is emitted bare.
        assert_eq!(masked(&m, "\"a@b.com\"\n", true), "a@*.com\n");
        // Unquoted last field before CRLF.
        assert_eq!(masked(&m, "x,a@b.com\r\n", true), "x,a@*.com\r\n");
        // Embedded newline inside quotes.
        assert_eq!(
            masked(&m, "\"l1\nl2 a@b.com\",3\n", true),
            "\"l1\nl2 a@*.com\",3\n"
        );
        let line = format!("1,\\x{}\n", hex(b"to john@example.com"));
        assert_eq!(
            masked(&m, &line, true),
            format!("1,\\x{}\n", hex(b"to j***@*******.com"))
        );
    }

    #[test]
    fn csv_quoting_of_replacements() {
        let m = masker(Strategy::Fixed("a,\"b\"".into()));
        assert_eq!(masked(&m, "x@y.com,1\n", true), "\"a,\"\"b\"\"\",1\n");
        let m = masker(Strategy::Fixed(String::new()));
        assert_eq!(masked(&m, "x@y.com,1\n", true), "\"\",1\n");
        let m = masker(Strategy::Null);
        assert_eq!(masked(&m, "1,x@y.com,2\n", true), "1,,2\n");
        assert_eq!(masked(&m, "\"x@y.com\"\n", true), "\n");
    }

    #[test]
    fn csv_clean_and_malformed() {
        let m = masker(Strategy::Redact);
        for line in [
            "1,plain,,\"quoted, with comma\",\"\"\"\"\n",
            ",\n",
            "",
            "a,b,c",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                mask_copy_line_into(&m, line.as_bytes(), true, &mut out),
                Outcome::Unchanged,
                "{line:?}"
            );
            assert_eq!(out.capacity(), 0, "allocated for {line:?}");
        }
        // Unterminated quote / junk after the closing quote: whole-line
        // content masking instead of leaking.
        assert_eq!(masked(&m, "1,\"a@b.com\n", true), "1,\"a@*.com\n");
        assert_eq!(masked(&m, "\"x\"y,a@b.com\n", true), "\"x\"y,a@*.com\n");
        assert_eq!(run(&m, "\"unterminated\n", true).0, Outcome::Unchanged);
    }

    #[test]
    fn random_lines_never_panic() {
        let m = masker(Strategy::Redact);
        let alphabet = b"\t\n\r,\"\\Nx0a@b.com4111 ";
        let mut x: u64 = 0x1234_5678_9abc_def1;
        for len in 0..300 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            for csv in [false, true] {
                let mut out = Vec::new();
                let r = mask_copy_line_into(&m, &v, csv, &mut out);
                if r != Outcome::Masked {
                    assert!(out.is_empty());
                } else if !csv {
                    // Field/row structure is preserved in text format.
                    let count = |s: &[u8]| s.iter().filter(|&&c| c == b'\t' || c == b'\n').count();
                    assert_eq!(count(&v), count(&out), "{v:?} -> {out:?}");
                }
            }
        }
    }
}
