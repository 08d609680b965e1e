//! Masking inside hex/base64-encoded values.
//!
//! `encode(email::bytea, 'base64')`, bytea columns and hex-dumped payloads
//! carry text the detectors cannot see in encoded form. Decoding every value
//! would be wasteful, so a value is only decoded when *every* byte is in one
//! encoding alphabet; ordinary text exits at its first space or punctuation.
//!
//! Decoding needs a buffer: small values are decoded on the stack and large
//! ones into the spare capacity of the caller's `out` (length restored), so
//! a caller that reuses one output buffer stays allocation-free on the clean
//! path.
//!
//! Known limitation: base64 wrapped into lines (PostgreSQL's `encode(…,
//! 'base64')` breaks lines every 76 characters) is not decoded, because the
//! newlines take it out of the alphabet.

use base64::Engine as _;
use base64::engine::GeneralPurpose;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};

use crate::{Masker, Outcome};

/// Shortest value considered encoded: shorter alphanumeric tokens are far
/// more often words or ids, and decode to too few bytes to hold an email or
/// a card anyway.
const MIN_ENCODED_LEN: usize = 16;

/// How a value was encoded, so a masked result can be re-encoded the same way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    Hex { upper: bool },
    Base64 { url: bool, pad: bool },
}

impl Encoding {
    fn engine(url: bool, pad: bool) -> &'static GeneralPurpose {
        match (url, pad) {
            (false, true) => &STANDARD,
            (false, false) => &STANDARD_NO_PAD,
            (true, true) => &URL_SAFE,
            (true, false) => &URL_SAFE_NO_PAD,
        }
    }
}

const C_HEX: u8 = 1;
const C_STD: u8 = 2;
const C_URL: u8 = 4;

/// Byte → which alphabets contain it, for a one-pass, early-exit check.
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        let c = i as u8;
        t[i] = if c.is_ascii_hexdigit() {
            C_HEX | C_STD | C_URL
        } else if c.is_ascii_alphanumeric() {
            C_STD | C_URL
        } else if c == b'+' || c == b'/' {
            C_STD
        } else if c == b'-' || c == b'_' {
            C_URL
        } else {
            0
        };
        i += 1;
    }
    t
};

/// Value of an ASCII hex digit.
#[inline]
pub(crate) fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// Decide whether the whole value is hex or base64. Hex wins when both fit
/// (hex digits are a subset of base64) since hex dumps are far more common
/// than base64 text that happens to avoid `g`–`z`.
pub(crate) fn classify(value: &[u8]) -> Option<Encoding> {
    if value.len() < MIN_ENCODED_LEN {
        return None;
    }
    // A run of digits is a number (a card, an id), not an encoding, though both alphabets
    // contain it.
    if value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let body = value
        .strip_suffix(b"==")
        .or_else(|| value.strip_suffix(b"="))
        .unwrap_or(value);
    let padded = body.len() != value.len();
    let mut acc = if padded {
        C_STD | C_URL
    } else {
        C_HEX | C_STD | C_URL
    };
    let mut upper = false;
    for &c in body {
        acc &= CLASS[usize::from(c)];
        if acc == 0 {
            return None;
        }
        upper |= c.is_ascii_uppercase();
    }
    if acc & C_HEX != 0 && value.len() % 2 == 0 {
        return Some(Encoding::Hex { upper });
    }
    if acc & (C_STD | C_URL) == 0 {
        return None;
    }
    // Neither `+/` nor `-_` seen: either alphabet decodes it; say standard.
    let url = acc & C_STD == 0;
    let pad = match (padded, value.len() % 4) {
        (true, 0) | (false, 0) => true,
        (true, _) | (false, 1) => return None,
        (false, _) => false,
    };
    Some(Encoding::Base64 { url, pad })
}

/// Decode `payload` into `buf` (at least `payload.len()` bytes), returning
/// the decoded length, or `None` if it does not decode.
fn decode(enc: Encoding, payload: &[u8], buf: &mut [u8]) -> Option<usize> {
    match enc {
        Encoding::Hex { .. } => {
            if payload.len() % 2 != 0 {
                return None;
            }
            for (dst, pair) in buf.iter_mut().zip(payload.chunks_exact(2)) {
                *dst = hex_val(pair[0])? << 4 | hex_val(pair[1])?;
            }
            Some(payload.len() / 2)
        }
        Encoding::Base64 { url, pad } => Encoding::engine(url, pad).decode_slice(payload, buf).ok(),
    }
}

/// Append `bytes` encoded as `enc` to `out`.
pub(crate) fn encode(enc: Encoding, bytes: &[u8], out: &mut Vec<u8>) {
    match enc {
        Encoding::Hex { upper } => {
            let digits: &[u8; 16] = if upper {
                b"0123456789ABCDEF"
            } else {
                b"0123456789abcdef"
            };
            out.reserve(bytes.len() * 2);
            for &b in bytes {
                out.push(digits[usize::from(b >> 4)]);
                out.push(digits[usize::from(b & 0xf)]);
            }
        }
        Encoding::Base64 { url, pad } => {
            let n = base64::encoded_len(bytes.len(), pad).expect("encoded length overflows usize");
            let start = out.len();
            out.resize(start + n, 0);
            Encoding::engine(url, pad)
                .encode_slice(bytes, &mut out[start..])
                .expect("buffer sized by encoded_len");
        }
    }
}

/// Decode `payload`, content-mask the decoded bytes into `masked`. `None`
/// if it does not decode. `scratch` is only borrowed for large values (see
/// [`crate::with_scratch`]) and left as it was.
pub(crate) fn decode_and_mask(
    masker: &Masker,
    enc: Encoding,
    payload: &[u8],
    scratch: &mut Vec<u8>,
    masked: &mut Vec<u8>,
) -> Option<Outcome> {
    crate::with_scratch(
        payload.len(),
        scratch,
        |buf| decode(enc, payload, buf),
        |decoded| masker.mask_into(decoded, masked),
    )
}

/// Mask PostgreSQL's text output of a `bytea` (`\x` + hex digits): the
/// decoded bytes are content-masked and, if anything matched, re-encoded as
/// `\x` + lowercase hex (what the server itself would send). Values that are
/// not well-formed hex bytea come back [`Outcome::Unchanged`].
pub fn mask_bytea_hex_into(masker: &Masker, value: &[u8], out: &mut Vec<u8>) -> Outcome {
    let Some(hex) = value.strip_prefix(b"\\x") else {
        return Outcome::Unchanged;
    };
    if masker.is_empty() {
        return Outcome::Unchanged;
    }
    let enc = Encoding::Hex { upper: false };
    let mut masked = Vec::new();
    match decode_and_mask(masker, enc, hex, out, &mut masked) {
        Some(Outcome::Masked) => {
            out.extend_from_slice(b"\\x");
            encode(enc, &masked, out);
            Outcome::Masked
        }
        Some(Outcome::Null) => Outcome::Null,
        Some(Outcome::Unchanged) | None => Outcome::Unchanged,
    }
}

/// Mask a value that is entirely hex (even length) or entirely standard /
/// URL-safe base64 (optional `=` padding), at least 16 bytes long, whose
/// decoding contains sensitive content. The masked decoding is re-encoded in
/// the same encoding (hex case, base64 alphabet and padding preserved).
/// Anything else is [`Outcome::Unchanged`]; a value with a byte outside both
/// alphabets is rejected at that byte.
pub fn mask_encoded_into(masker: &Masker, value: &[u8], out: &mut Vec<u8>) -> Outcome {
    if masker.is_empty() {
        return Outcome::Unchanged;
    }
    if let Some(joined) = unwrap_lines(value) {
        let mut masked = Vec::new();
        let outcome = mask_encoded_into(masker, &joined, &mut masked);
        if outcome == Outcome::Masked {
            wrap_lines(&masked, out);
        }
        return outcome;
    }
    let Some(enc) = classify(value) else {
        return Outcome::Unchanged;
    };
    let mut masked = Vec::new();
    match decode_and_mask(masker, enc, value, out, &mut masked) {
        Some(Outcome::Masked) => {
            encode(enc, &masked, out);
            Outcome::Masked
        }
        Some(Outcome::Null) => Outcome::Null,
        Some(Outcome::Unchanged) | None => Outcome::Unchanged,
    }
}

/// Apply `strategy` to the whole decoded content of a `\x` bytea text or an entirely
/// hex/base64 value and re-encode it the same way, so a column rule (or a value derived
/// from a masked column) keeps a valid encoding. `None` when the value is not encoded.
pub fn mask_encoded_whole_into(
    masker: &Masker,
    strategy: &crate::Strategy,
    value: &[u8],
    out: &mut Vec<u8>,
) -> Option<Outcome> {
    if let Some(joined) = unwrap_lines(value) {
        let mut masked = Vec::new();
        let outcome = mask_encoded_whole_into(masker, strategy, &joined, &mut masked)?;
        if outcome == Outcome::Masked {
            wrap_lines(&masked, out);
        }
        return Some(outcome);
    }
    let (prefix, payload, enc): (&[u8], &[u8], Encoding) = match value.strip_prefix(b"\\x") {
        Some(hex) => (b"\\x", hex, Encoding::Hex { upper: false }),
        None => (b"", value, classify(value)?),
    };
    let mut decoded = vec![0u8; payload.len()];
    let n = decode(enc, payload, &mut decoded)?;
    decoded.truncate(n);
    let mut masked = Vec::new();
    match masker.mask_whole_into(strategy, &decoded, &mut masked) {
        Outcome::Null => Some(Outcome::Null),
        _ => {
            out.extend_from_slice(prefix);
            encode(enc, &masked, out);
            Some(Outcome::Masked)
        }
    }
}

/// PostgreSQL's `encode(…, 'base64')` breaks its output into lines of 76 characters. Such
/// a value (every line but the last exactly 76 base64 characters) is returned joined, so it
/// can be decoded like a single line; `None` for anything else (cheap: stops at the first
/// byte that is neither base64 nor a newline).
fn unwrap_lines(value: &[u8]) -> Option<Vec<u8>> {
    // Wrapped output is longer than one line; shorter values need no search.
    if value.len() <= BASE64_LINE {
        return None;
    }
    memchr_newline(value)?;
    let mut joined = Vec::with_capacity(value.len());
    let mut lines = value.split(|&c| c == b'\n').peekable();
    while let Some(line) = lines.next() {
        let last = lines.peek().is_none();
        if (!last && line.len() != BASE64_LINE) || (last && line.len() > BASE64_LINE) {
            return None;
        }
        if !line
            .iter()
            .all(|&c| CLASS[usize::from(c)] & (C_STD | C_URL) != 0 || c == b'=')
        {
            return None;
        }
        joined.extend_from_slice(line);
    }
    Some(joined)
}

/// Line length of PostgreSQL's base64 output.
const BASE64_LINE: usize = 76;

fn memchr_newline(value: &[u8]) -> Option<usize> {
    value.iter().position(|&c| c == b'\n')
}

fn wrap_lines(encoded: &[u8], out: &mut Vec<u8>) {
    for (i, chunk) in encoded.chunks(BASE64_LINE).enumerate() {
        if i > 0 {
            out.push(b'\n');
        }
        out.extend_from_slice(chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Detector, Strategy};

    fn masker(strategy: Strategy) -> Masker {
        crate::test_masker(&[Detector::Email, Detector::PaymentCard], strategy)
    }

    fn hex(s: &[u8]) -> String {
        s.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn multi_line_base64_from_postgres_is_decoded_and_rewrapped() {
        let m = masker(Strategy::Redact);
        let text = "contacts: ".to_string() + &"jane.roe@example.com, ".repeat(8);
        let encoded = STANDARD.encode(text.as_bytes());
        let wrapped: Vec<u8> = encoded
            .as_bytes()
            .chunks(76)
            .collect::<Vec<_>>()
            .join(&b'\n');
        let mut out = Vec::new();
        assert_eq!(mask_encoded_into(&m, &wrapped, &mut out), Outcome::Masked);
        assert!(out.split(|&c| c == b'\n').all(|l| l.len() <= 76));
        let joined: Vec<u8> = out.iter().copied().filter(|&c| c != b'\n').collect();
        let decoded = STANDARD.decode(&joined).unwrap();
        let decoded = String::from_utf8(decoded).unwrap();
        assert!(!decoded.contains("jane.roe@example.com"), "{decoded}");
        assert!(decoded.contains("j*******@*******.com"), "{decoded}");
        assert!(unwrap_lines(b"two\nlines of text").is_none());
    }

    #[test]
    fn whole_masking_keeps_the_encoding() {
        let m = Masker::with_key(None);
        let mut out = Vec::new();
        let value = b"\\x6a6f686e";
        assert_eq!(
            mask_encoded_whole_into(&m, &Strategy::Redact, value, &mut out),
            Some(Outcome::Masked)
        );
        assert_eq!(out, b"\\x2a2a2a2a");
        assert!(
            mask_encoded_whole_into(&m, &Strategy::Redact, b"plain text", &mut Vec::new())
                .is_none()
        );
    }

    #[test]
    fn bytea_hex_round_trip() {
        let m = masker(Strategy::Redact);
        let v = format!("\\x{}", hex(b"mail john@example.com now"));
        let mut out = b"prefix".to_vec();
        assert_eq!(
            mask_bytea_hex_into(&m, v.as_bytes(), &mut out),
            Outcome::Masked
        );
        let want = format!("prefix\\x{}", hex(b"mail j***@*******.com now"));
        assert_eq!(out, want.as_bytes());
    }

    #[test]
    fn bytea_clean_invalid_and_null() {
        let m = masker(Strategy::Redact);
        let mut out = Vec::new();
        for v in [
            format!("\\x{}", hex(b"nothing to see here")),
            "\\x".to_owned(),
            "\\x0".to_owned(),
            "\\xzz".to_owned(),
            "plain text a@b.com".to_owned(),
        ] {
            assert_eq!(
                mask_bytea_hex_into(&m, v.as_bytes(), &mut out),
                Outcome::Unchanged,
                "{v}"
            );
            assert!(out.is_empty());
        }
        let m = masker(Strategy::Null);
        let v = format!("\\x{}", hex(b"john@example.com"));
        assert_eq!(
            mask_bytea_hex_into(&m, v.as_bytes(), &mut out),
            Outcome::Null
        );
        assert!(out.is_empty());
    }

    #[test]
    fn base64_of_email() {
        let m = masker(Strategy::Redact);
        let mut out = Vec::new();
        let v = STANDARD.encode("john.doe@example.com");
        assert_eq!(
            mask_encoded_into(&m, v.as_bytes(), &mut out),
            Outcome::Masked
        );
        assert_eq!(
            STANDARD.decode(&out).unwrap(),
            b"j*******@*******.com".to_vec()
        );
        // URL-safe, unpadded, with `-`/`_` in the text.
        let raw: &[u8] = b"\xfb\xff card 4111111111111111!";
        let v = URL_SAFE_NO_PAD.encode(raw);
        assert!(v.contains(['-', '_']) && !v.ends_with('='), "{v}");
        out.clear();
        assert_eq!(
            mask_encoded_into(&m, v.as_bytes(), &mut out),
            Outcome::Masked
        );
        assert_eq!(
            URL_SAFE_NO_PAD.decode(&out).unwrap(),
            b"\xfb\xff card ************1111!".to_vec()
        );
    }

    #[test]
    fn hex_of_email_keeps_case() {
        let m = masker(Strategy::Redact);
        let mut out = Vec::new();
        let v = hex(b"a john@example.com").to_uppercase();
        assert_eq!(
            mask_encoded_into(&m, v.as_bytes(), &mut out),
            Outcome::Masked
        );
        assert_eq!(out, hex(b"a j***@*******.com").to_uppercase().as_bytes());
    }

    #[test]
    fn encoded_clean_paths() {
        let m = masker(Strategy::Redact);
        let mut out = Vec::new();
        for v in [
            "short",
            "hello world, this is plain text",
            "internationalization", // valid base64 alphabet, decodes to junk
            "550e8400e29b41d4a716446655440000", // hex uuid
            "am9obkBleGFtcGxlLmNvbQ=x", // `=` in the middle
            "abc+def_ghijklmnop",   // mixed alphabets
            "abcdefghijklmnopq",    // 17 chars: len % 4 == 1
        ] {
            assert_eq!(
                mask_encoded_into(&m, v.as_bytes(), &mut out),
                Outcome::Unchanged,
                "{v}"
            );
            assert!(out.is_empty(), "{v}");
        }
        // Capacity used as scratch must not leak into the length.
        assert_eq!(
            mask_encoded_into(
                &m,
                STANDARD.encode("nothing here at all").as_bytes(),
                &mut out
            ),
            Outcome::Unchanged
        );
        assert!(out.is_empty());
    }

    #[test]
    fn classify_rules() {
        assert_eq!(
            classify(b"00112233445566778899aabb"),
            Some(Encoding::Hex { upper: false })
        );
        assert_eq!(
            classify(b"aGVsbG8gd29ybGQhIQ=="),
            Some(Encoding::Base64 {
                url: false,
                pad: true
            })
        );
        assert_eq!(classify(b"aGVsbG8gd29ybGQhIQ="), None);
        assert_eq!(
            classify(b"aGVsbG8gd29ybGQhIQ"),
            Some(Encoding::Base64 {
                url: false,
                pad: false
            })
        );
        assert_eq!(classify(b"aGVsbG8gd29y bGQhIQ"), None);
    }
}
