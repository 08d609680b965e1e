//! Structure-aware masking of JSON text (`json` and `jsonb` text output).
//!
//! Plain content masking of a JSON document works on the raw text, which
//! misses escaped secrets (`"j\u006fhn@example.com"`), cannot null or
//! tokenize "the value of the `ssn` member", and may produce invalid JSON
//! (a card number token replaced by `****` is not a JSON number). This
//! module walks the document with a small validating tokenizer instead and
//! rewrites individual tokens, preserving every other byte (whitespace,
//! member order, number formatting) exactly.
//!
//! No serde: a DOM would allocate for every document, while almost all
//! documents are clean. The walker allocates nothing when nothing changes:
//! escaped strings are unescaped on the stack, or for very long strings in
//! the spare capacity of the caller's `out` (length restored).

use crate::encoded::{self, decode_and_mask};
use crate::{Masker, Outcome, Splice, Strategy, with_scratch};

/// Nesting limit. Deeper documents are rejected (returned as not-JSON)
/// rather than walked, which bounds the recursion of the walker; PostgreSQL
/// itself rejects `jsonb` deeper than a few thousand levels, and real
/// documents rarely exceed a dozen.
pub const MAX_DEPTH: usize = 256;

/// Object member names whose values are sensitive as a whole, with the
/// strategy to apply to them.
///
/// Patterns are ASCII-case-insensitive globs (`*` = any run of bytes,
/// `?` = exactly one byte) matched against the *unescaped* member name, so
/// `"p\u0061ssword"` cannot dodge a `password` rule. The first matching
/// pattern wins, letting a policy list specific names before catch-alls.
#[derive(Debug, Clone, Default)]
pub struct JsonKeys {
    patterns: Vec<(Box<[u8]>, Strategy)>,
}

impl JsonKeys {
    pub fn new(rules: Vec<(String, Strategy)>) -> JsonKeys {
        JsonKeys {
            patterns: rules
                .into_iter()
                .map(|(p, s)| (p.into_bytes().to_ascii_lowercase().into_boxed_slice(), s))
                .collect(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// Strategy of the first pattern matching `key` (an unescaped name).
    pub fn strategy_for(&self, key: &[u8]) -> Option<&Strategy> {
        self.patterns
            .iter()
            .find(|(p, _)| glob(p, key))
            .map(|(_, s)| s)
    }
}

/// Iterative glob match with single-star backtracking: linear in practice
/// and no recursion or allocation. `pat` is already lowercase.
fn glob(pat: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < pat.len() && pat[pi] == b'*' {
            star = Some((pi, si));
            pi += 1;
        } else if pi < pat.len() && (pat[pi] == b'?' || pat[pi] == s[si].to_ascii_lowercase()) {
            pi += 1;
            si += 1;
        } else if let Some((sp, ss)) = star {
            pi = sp + 1;
            si = ss + 1;
            star = Some((sp, ss + 1));
        } else {
            return false;
        }
    }
    pat[pi..].iter().all(|&c| c == b'*')
}

/// Mask one JSON document.
///
/// * Members whose name matches `keys` have their whole value replaced via
///   [`Masker::mask_whole_into`]: a string value is masked on its unescaped
///   content and re-emitted as a string; any other value becomes `null`
///   under [`Strategy::Null`] and otherwise a string of its masked raw text
///   (a JSON `null` value is left alone: it reveals nothing).
/// * Every other string value / array element and every number is content
///   masked with [`Masker::mask_into`] (strings on their unescaped content;
///   base64/hex-looking strings are also decoded, see
///   [`crate::mask_encoded_into`]). A masked number becomes a string,
///   since `************1111` is not a number; a content [`Outcome::Null`]
///   becomes JSON `null` for that token only. Member names are not content
///   masked.
///
/// Returns `None` (nothing appended) if `doc` is not exactly one valid JSON
/// value with optional surrounding whitespace, is not UTF-8, or nests deeper
/// than [`MAX_DEPTH`]; the caller decides how to fall back. Otherwise
/// `Some(Unchanged)` (nothing appended) or `Some(Masked)`; never
/// `Some(Null)`.
pub fn mask_json_into(
    masker: &Masker,
    keys: &JsonKeys,
    doc: &[u8],
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if std::str::from_utf8(doc).is_err() {
        return None;
    }
    let mut w = Walker {
        masker,
        keys,
        doc,
        pos: 0,
        splice: Splice::new(out),
        out,
        tmp: Vec::new(),
        content: masker.has_detectors(),
    };
    let ok = w.document();
    let Walker { splice, out, .. } = w;
    match ok {
        Some(()) => Some(splice.finish(doc, out)),
        None => {
            splice.abort(out);
            None
        }
    }
}

struct Walker<'a, 'o> {
    masker: &'a Masker,
    keys: &'a JsonKeys,
    doc: &'a [u8],
    pos: usize,
    splice: Splice,
    out: &'o mut Vec<u8>,
    /// Holds one replacement before it is escaped into `out`; only ever
    /// allocated once something is masked.
    tmp: Vec<u8>,
    /// Content detection enabled (skip the per-token calls otherwise).
    content: bool,
}

/// A scanned string token: `doc[start..end]` including the quotes.
#[derive(Clone, Copy)]
struct Str {
    start: usize,
    end: usize,
    escaped: bool,
}

impl<'a> Walker<'a, '_> {
    fn document(&mut self) -> Option<()> {
        self.ws();
        self.value(0, true)?;
        self.ws();
        (self.pos == self.doc.len()).then_some(())
    }

    #[inline]
    fn peek(&self) -> Option<u8> {
        self.doc.get(self.pos).copied()
    }

    #[inline]
    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> Option<()> {
        (self.peek()? == c).then(|| self.pos += 1)
    }

    /// One value at `pos`. `mask` is false inside a value already replaced
    /// by a key rule, where the walker only validates.
    fn value(&mut self, depth: usize, mask: bool) -> Option<()> {
        match self.peek()? {
            b'{' => self.object(depth + 1, mask),
            b'[' => self.array(depth + 1, mask),
            b'"' => {
                let s = self.string()?;
                if mask && self.content {
                    self.mask_string(s);
                }
                Some(())
            }
            b'-' | b'0'..=b'9' => {
                let start = self.pos;
                self.number()?;
                if mask && self.content {
                    self.mask_number(start, self.pos);
                }
                Some(())
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => None,
        }
    }

    fn literal(&mut self, lit: &[u8]) -> Option<()> {
        self.doc[self.pos..]
            .starts_with(lit)
            .then(|| self.pos += lit.len())
    }

    fn object(&mut self, depth: usize, mask: bool) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.ws();
        if self.eat(b'}').is_some() {
            return Some(());
        }
        loop {
            if self.peek()? != b'"' {
                return None;
            }
            let key = self.string()?;
            self.ws();
            self.eat(b':')?;
            self.ws();
            let rule = if mask && !self.keys.is_empty() {
                self.key_rule(key)
            } else {
                None
            };
            match rule {
                Some(strategy) => self.replace_member_value(depth, strategy)?,
                None => self.value(depth, mask)?,
            }
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b'}' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    fn array(&mut self, depth: usize, mask: bool) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.pos += 1;
        self.ws();
        if self.eat(b']').is_some() {
            return Some(());
        }
        loop {
            self.value(depth, mask)?;
            self.ws();
            match self.peek()? {
                b',' => {
                    self.pos += 1;
                    self.ws();
                }
                b']' => {
                    self.pos += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// Scan and validate a string token starting at the opening quote.
    fn string(&mut self) -> Option<Str> {
        let start = self.pos;
        let mut i = start + 1;
        let mut escaped = false;
        loop {
            let c = *self.doc.get(i)?;
            match c {
                b'"' => break,
                b'\\' => {
                    escaped = true;
                    match *self.doc.get(i + 1)? {
                        b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => i += 2,
                        b'u' => {
                            let h = self.doc.get(i + 2..i + 6)?;
                            if !h.iter().all(u8::is_ascii_hexdigit) {
                                return None;
                            }
                            i += 6;
                        }
                        _ => return None,
                    }
                }
                0..=0x1f => return None,
                _ => i += 1,
            }
        }
        self.pos = i + 1;
        Some(Str {
            start,
            end: i + 1,
            escaped,
        })
    }

    /// Validate `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`.
    fn number(&mut self) -> Option<()> {
        let d = self.doc;
        let digits = |i: usize| d[i..].iter().take_while(|c| c.is_ascii_digit()).count();
        let mut i = self.pos;
        if d[i] == b'-' {
            i += 1;
        }
        match d.get(i)? {
            b'0' => i += 1,
            b'1'..=b'9' => i += digits(i),
            _ => return None,
        }
        if d.get(i) == Some(&b'.') {
            let n = digits(i + 1);
            if n == 0 {
                return None;
            }
            i += 1 + n;
        }
        if matches!(d.get(i), Some(b'e' | b'E')) {
            i += 1;
            if matches!(d.get(i), Some(b'+' | b'-')) {
                i += 1;
            }
            let n = digits(i);
            if n == 0 {
                return None;
            }
            i += n;
        }
        self.pos = i;
        Some(())
    }

    fn key_rule(&mut self, key: Str) -> Option<&'a Strategy> {
        let keys: &'a JsonKeys = self.keys;
        let raw = &self.doc[key.start + 1..key.end - 1];
        if !key.escaped {
            return keys.strategy_for(raw);
        }
        with_scratch(
            raw.len(),
            self.out,
            |b| Some(unescape(raw, b)),
            |k| keys.strategy_for(k),
        )
        .flatten()
    }

    /// Write the outcome of masking `doc[start..end]` (replacement in `tmp`).
    fn emit(&mut self, start: usize, end: usize, r: Outcome) {
        match r {
            Outcome::Unchanged => {}
            Outcome::Masked => {
                self.splice.replace(self.doc, start, end, self.out);
                write_string(&self.tmp, self.out);
            }
            Outcome::Null => {
                self.splice.replace(self.doc, start, end, self.out);
                self.out.extend_from_slice(b"null");
            }
        }
    }

    fn mask_string(&mut self, s: Str) {
        self.tmp.clear();
        let doc = self.doc;
        let raw = &doc[s.start + 1..s.end - 1];
        let r = if s.escaped {
            let (masker, tmp) = (self.masker, &mut self.tmp);
            with_scratch(
                raw.len(),
                self.out,
                |b| Some(unescape(raw, b)),
                |c| masker.mask_into(c, tmp),
            )
            .expect("unescape cannot fail")
        } else {
            match self.masker.mask_into(raw, &mut self.tmp) {
                Outcome::Unchanged => match encoded::classify(raw) {
                    Some(enc) => {
                        let mut decoded = Vec::new();
                        match decode_and_mask(self.masker, enc, raw, self.out, &mut decoded) {
                            Some(Outcome::Masked) => {
                                encoded::encode(enc, &decoded, &mut self.tmp);
                                Outcome::Masked
                            }
                            Some(Outcome::Null) => Outcome::Null,
                            _ => Outcome::Unchanged,
                        }
                    }
                    None => Outcome::Unchanged,
                },
                r => r,
            }
        };
        self.emit(s.start, s.end, r);
    }

    fn mask_number(&mut self, start: usize, end: usize) {
        self.tmp.clear();
        let r = self.masker.mask_into(&self.doc[start..end], &mut self.tmp);
        self.emit(start, end, r);
    }

    /// The value of a member matched by a key rule: replaced as a whole.
    fn replace_member_value(&mut self, depth: usize, strategy: &Strategy) -> Option<()> {
        self.tmp.clear();
        if self.peek()? == b'"' {
            let s = self.string()?;
            let doc = self.doc;
            let raw = &doc[s.start + 1..s.end - 1];
            let r = if s.escaped {
                let (masker, tmp) = (self.masker, &mut self.tmp);
                with_scratch(
                    raw.len(),
                    self.out,
                    |b| Some(unescape(raw, b)),
                    |c| masker.mask_whole_into(strategy, c, tmp),
                )
                .expect("unescape cannot fail")
            } else {
                self.masker.mask_whole_into(strategy, raw, &mut self.tmp)
            };
            self.emit(s.start, s.end, r);
            return Some(());
        }
        let start = self.pos;
        self.value(depth, false)?;
        let raw = &self.doc[start..self.pos];
        if raw == b"null" {
            return Some(());
        }
        let r = match strategy {
            Strategy::Null => Outcome::Null,
            _ => self.masker.mask_whole_into(strategy, raw, &mut self.tmp),
        };
        self.emit(start, self.pos, r);
        Some(())
    }
}

/// Decode the escapes of a (validated) JSON string body into `out` (at
/// least `raw.len()` bytes: every escape is longer than what it encodes)
/// and return the decoded length. Lone surrogates become U+FFFD: the
/// unescaped text is only used for detection and, when masked, for the
/// re-escaped replacement.
fn unescape(raw: &[u8], out: &mut [u8]) -> usize {
    let hex4 = |h: &[u8]| {
        h.iter().fold(0u32, |a, &c| {
            a << 4 | u32::from(encoded::hex_val(c).unwrap_or(0))
        })
    };
    let (mut i, mut o) = (0, 0);
    while i < raw.len() {
        let n = raw[i..]
            .iter()
            .position(|&c| c == b'\\')
            .unwrap_or(raw.len() - i);
        out[o..o + n].copy_from_slice(&raw[i..i + n]);
        i += n;
        o += n;
        if i == raw.len() {
            break;
        }
        let e = raw[i + 1];
        i += 2;
        let c = match e {
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'u' => {
                let mut cp = hex4(&raw[i..i + 4]);
                i += 4;
                if (0xD800..0xDC00).contains(&cp) && raw[i..].starts_with(b"\\u") {
                    let lo = hex4(&raw[i + 2..i + 6]);
                    if (0xDC00..0xE000).contains(&lo) {
                        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                        i += 6;
                    }
                }
                let ch = char::from_u32(cp).unwrap_or('\u{FFFD}');
                o += ch.encode_utf8(&mut out[o..]).len();
                continue;
            }
            other => other, // `"`, `\`, `/`
        };
        out[o] = c;
        o += 1;
    }
    o
}

/// Append `s` as a quoted JSON string.
/// Appends `s` as a JSON string literal.
pub fn write_string(s: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(s.len() + 2);
    out.push(b'"');
    for &c in s {
        match c {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0x08 => out.extend_from_slice(b"\\b"),
            0x0c => out.extend_from_slice(b"\\f"),
            0..=0x1f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(c >> 4)]);
                out.push(HEX[usize::from(c & 0xf)]);
            }
            _ => out.push(c),
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Detector;

    fn masker(strategy: Strategy) -> Masker {
        crate::test_masker(
            &[Detector::Email, Detector::PaymentCard, Detector::UsSsn],
            strategy,
        )
    }

    fn run(m: &Masker, keys: &JsonKeys, doc: &str) -> Option<(Outcome, String)> {
        let mut out = Vec::new();
        let r = mask_json_into(m, keys, doc.as_bytes(), &mut out)?;
        if r == Outcome::Unchanged {
            assert!(out.is_empty());
        }
        let s = String::from_utf8(out).unwrap();
        if r == Outcome::Masked {
            // Output must itself be valid JSON (and still unchanged on a
            // second pass with no detectors).
            let none = Masker::with_key(None);
            assert_eq!(
                mask_json_into(&none, &JsonKeys::default(), s.as_bytes(), &mut Vec::new()),
                Some(Outcome::Unchanged),
                "invalid output {s}"
            );
        }
        Some((r, s))
    }

    fn masked(m: &Masker, keys: &JsonKeys, doc: &str) -> String {
        match run(m, keys, doc) {
            Some((Outcome::Masked, s)) => s,
            other => panic!("expected Masked for {doc}, got {other:?}"),
        }
    }

    fn no_keys() -> JsonKeys {
        JsonKeys::default()
    }

    #[test]
    fn content_in_values_and_numbers() {
        let m = masker(Strategy::Redact);
        assert_eq!(
            masked(
                &m,
                &no_keys(),
                r#"{"email": "john.doe@example.com", "n": 4111111111111111, "note": "x"}"#
            ),
            r#"{"email": "j*******@*******.com", "n": "************1111", "note": "x"}"#
        );
        // Array elements, nested, formatting preserved exactly.
        assert_eq!(
            masked(
                &m,
                &no_keys(),
                "[\n  1,\n  \"a@b.com\" , {\"k\":[\"ssn 123-45-6789\"]}\n]\n"
            ),
            "[\n  1,\n  \"a@*.com\" , {\"k\":[\"ssn ***-**-****\"]}\n]\n"
        );
        // Member names are not content-masked.
        assert_eq!(
            run(&m, &no_keys(), r#"{"a@b.com": 1}"#),
            Some((Outcome::Unchanged, String::new()))
        );
    }

    #[test]
    fn clean_docs_unchanged_without_allocation() {
        let m = masker(Strategy::Redact);
        let keys = JsonKeys::new(vec![("password".into(), Strategy::Null)]);
        for doc in [
            r#"{"order_id":12345678,"items":[{"name":"Chair","qty":2}],"ok":true,"x":null}"#,
            r#"{"a": 1, "b": "x", "c": [1.5e10, -0, 0.25, "\"quoted\" \n"]}"#,
            "  \"just a string\"  ",
            "42",
            "[]",
            "{}",
        ] {
            let mut out = Vec::new();
            assert_eq!(
                mask_json_into(&m, &keys, doc.as_bytes(), &mut out),
                Some(Outcome::Unchanged),
                "{doc}"
            );
            assert_eq!(out.capacity(), 0, "allocated for {doc}");
        }
    }

    #[test]
    fn escapes() {
        let m = masker(Strategy::Redact);
        // `\u006f` = o, `\u0040` = @: detected after unescaping.
        assert_eq!(
            masked(&m, &no_keys(), r#"{"e":"j\u006fhn@example.com"}"#),
            r#"{"e":"j***@*******.com"}"#
        );
        assert_eq!(
            masked(&m, &no_keys(), r#"["mail john\u0040example.com"]"#),
            r#"["mail j***@*******.com"]"#
        );
        // Other escapes survive re-escaping.
        assert_eq!(
            masked(
                &m,
                &no_keys(),
                r#"["say \"hi\"\ta@b.com\\ \u00e9 \ud83d\ude00"]"#
            ),
            "[\"say \\\"hi\\\"\\ta@*.com\\\\ é 😀\"]"
        );
        // A Fixed replacement containing quotes is escaped.
        let f = masker(Strategy::Fixed("<\"x\">".into()));
        assert_eq!(masked(&f, &no_keys(), r#"["a@b.com"]"#), r#"["<\"x\">"]"#);
    }

    #[test]
    fn key_rules() {
        let m = masker(Strategy::Redact);
        let keys = JsonKeys::new(vec![
            ("password".into(), Strategy::Null),
            ("*_token".into(), Strategy::Tokenize),
            ("addr?ss".into(), Strategy::Redact),
            ("secret*".into(), Strategy::Fixed("***".into())),
        ]);
        let doc = r#"{"user": {"Password": "hunter2", "api_token": "abc", "address": {"city": "Berlin", "zip": 10115}},
            "list": [{"secretKey": [1, 2]}, {"PASSWORD": 1234}, {"password": null}],
            "p\u0061ssword": "x", "n": 1}"#;
        let s = masked(&m, &keys, doc);
        assert!(s.contains(r#""Password": null"#), "{s}");
        assert!(s.contains(r#""api_token": "tok_"#), "{s}");
        // Non-string value under a redact rule: its text is redacted, as a string.
        assert!(
            s.contains(r#""address": "{\"****\": \"******\", \"***\": *****}""#),
            "{s}"
        );
        assert!(s.contains(r#""secretKey": "***""#), "{s}");
        assert!(s.contains(r#""PASSWORD": null"#), "{s}");
        assert!(s.contains(r#""password": null"#), "{s}");
        assert!(s.contains(r#""p\u0061ssword": null"#), "{s}");
        assert!(s.ends_with(r#""n": 1}"#), "{s}");

        // Tokenize without a key fails closed to null.
        let unkeyed = Masker::with_key(None);
        let keys = JsonKeys::new(vec![("token".into(), Strategy::Tokenize)]);
        assert_eq!(
            masked(&unkeyed, &keys, r#"{"token": "abc"}"#),
            r#"{"token": null}"#
        );
    }

    #[test]
    fn content_null_and_tokenize() {
        let m = masker(Strategy::Null);
        assert_eq!(
            masked(
                &m,
                &no_keys(),
                r#"{"e": "a@b.com", "n": 4111111111111111, "k": "v"}"#
            ),
            r#"{"e": null, "n": null, "k": "v"}"#
        );
        let m = masker(Strategy::Tokenize);
        let s = masked(&m, &no_keys(), r#"["x a@b.com"]"#);
        assert!(s.starts_with(r#"["x tok_"#) && s.len() == r#"["x tok_"]"#.len() + 16);
    }

    #[test]
    fn base64_string_values() {
        use base64::Engine as _;
        let m = masker(Strategy::Redact);
        let b = base64::engine::general_purpose::STANDARD.encode("john@example.com");
        let s = masked(&m, &no_keys(), &format!(r#"{{"blob": "{b}"}}"#));
        let want = base64::engine::general_purpose::STANDARD.encode("j***@*******.com");
        assert_eq!(s, format!(r#"{{"blob": "{want}"}}"#));
    }

    #[test]
    fn invalid_json_is_none() {
        let m = masker(Strategy::Redact);
        let keys = no_keys();
        for doc in [
            "",
            "   ",
            "{",
            r#"{"a": "john@example.com""#,
            r#"{"a" 1}"#,
            r#"{"a": 1,}"#,
            "[1 2]",
            "[1,]",
            "01",
            "1.",
            "-",
            "1e",
            "tru",
            "nul",
            r#""unterminated"#,
            "\"ctrl \u{1}\"",
            r#""bad \x escape""#,
            r#""bad \u12 escape""#,
            r#"{"a":1} {"b":2}"#,
            r#"{1: 2}"#,
            "'single'",
        ] {
            let mut out = b"pre".to_vec();
            assert_eq!(
                mask_json_into(&m, &keys, doc.as_bytes(), &mut out),
                None,
                "{doc:?}"
            );
            assert_eq!(out, b"pre");
        }
        // Error after a masked value: nothing may be left in `out`.
        let mut out = Vec::new();
        assert_eq!(
            mask_json_into(&m, &keys, br#"["a@b.com", oops]"#, &mut out),
            None
        );
        assert!(out.is_empty());
        // Not UTF-8.
        assert_eq!(mask_json_into(&m, &keys, b"\"\xff\"", &mut out), None);
    }

    #[test]
    fn depth_limit() {
        let m = masker(Strategy::Redact);
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(
            mask_json_into(&m, &no_keys(), ok.as_bytes(), &mut Vec::new()),
            Some(Outcome::Unchanged)
        );
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        assert_eq!(
            mask_json_into(&m, &no_keys(), deep.as_bytes(), &mut Vec::new()),
            None
        );
        // Very deep input must not overflow the stack.
        let huge = "[".repeat(1_000_000);
        assert_eq!(
            mask_json_into(&m, &no_keys(), huge.as_bytes(), &mut Vec::new()),
            None
        );
    }

    #[test]
    fn glob_patterns() {
        let k = JsonKeys::new(vec![
            ("e?ail".into(), Strategy::Null),
            ("*pass*".into(), Strategy::Redact),
            ("a*b*c".into(), Strategy::Tokenize),
        ]);
        assert_eq!(k.strategy_for(b"EMAIL"), Some(&Strategy::Null));
        assert_eq!(k.strategy_for(b"emaill"), None);
        assert_eq!(k.strategy_for(b"user_Passwd"), Some(&Strategy::Redact));
        assert_eq!(k.strategy_for(b"pass"), Some(&Strategy::Redact));
        assert_eq!(k.strategy_for(b"aXbYbZc"), Some(&Strategy::Tokenize));
        assert_eq!(k.strategy_for(b"aXbYbZcd"), None);
        assert_eq!(k.strategy_for(b""), None);
        assert!(!k.is_empty() && JsonKeys::new(vec![]).is_empty());
        assert!(glob(b"*", b"") && glob(b"**", b"x") && !glob(b"?", b""));
    }

    #[test]
    fn random_inputs_never_panic() {
        let m = masker(Strategy::Redact);
        let keys = JsonKeys::new(vec![("k*".into(), Strategy::Redact)]);
        let alphabet = br#"{}[],:"\u0040 k1-.eE+0a@b.com4111 truefalsenull"#;
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for len in 0..300 {
            let v: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    alphabet[(x % alphabet.len() as u64) as usize]
                })
                .collect();
            let mut out = Vec::new();
            match mask_json_into(&m, &keys, &v, &mut out) {
                None | Some(Outcome::Unchanged) => assert!(out.is_empty()),
                Some(Outcome::Masked) => {
                    assert!(mask_json_into(&m, &keys, &out, &mut Vec::new()).is_some())
                }
                Some(Outcome::Null) => panic!("never Null"),
            }
        }
    }
}
