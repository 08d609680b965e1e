//! Hand-written, allocation-free detectors for the built-in content kinds.
//!
//! Every detector is invoked at a *candidate position* found by the
//! prefilter (see [`crate::Masker`]) and returns the end offset of a
//! validated match, or `None`. They operate on raw bytes and only ever
//! include ASCII bytes in a match, so replacing a match can never split a
//! multi-byte UTF-8 sequence.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

#[inline]
pub(crate) fn is_alnum(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

#[inline]
fn at(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

/// Number of consecutive ASCII digits starting at `i`.
#[inline]
pub(crate) fn digit_run(b: &[u8], i: usize) -> usize {
    b[i..].iter().take_while(|c| c.is_ascii_digit()).count()
}

/// A match may end at `end` only if it is not glued to more of the same
/// token: no alphanumeric/underscore follows, and no `.`/`-` that continues
/// into another alphanumeric (this is what rejects `1.2.3.4.5` as an IPv4
/// address or the first 16 digits of a UUID-shaped string as a card).
#[inline]
pub(crate) fn end_ok(b: &[u8], end: usize) -> bool {
    match at(b, end) {
        None => true,
        Some(c) if is_alnum(c) || c == b'_' => false,
        Some(b'.' | b'-') => !at(b, end + 1).is_some_and(is_alnum),
        Some(_) => true,
    }
}

/// Luhn checksum over the ASCII digits in `s` (other bytes are skipped).
pub fn luhn_valid(s: &[u8]) -> bool {
    let mut sum = 0u32;
    let mut n = 0usize;
    for &c in s.iter().rev() {
        if !c.is_ascii_digit() {
            continue;
        }
        let mut d = u32::from(c - b'0');
        if n % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
        n += 1;
    }
    n > 0 && sum % 10 == 0
}

/// ISO 13616 mod-97 check over the alphanumerics in `s` (spaces skipped).
/// The first four characters are rotated to the end and letters expand to
/// two digits (A=10 … Z=35); a valid IBAN leaves remainder 1.
pub fn mod97_valid(s: &[u8]) -> bool {
    let chars: Vec<u8> = s
        .iter()
        .copied()
        .filter(|c| is_alnum(*c))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if chars.len() < 5 {
        return false;
    }
    let mut rem = 0u32;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        if c.is_ascii_digit() {
            rem = (rem * 10 + u32::from(c - b'0')) % 97;
        } else {
            let v = u32::from(c - b'A') + 10;
            rem = (rem * 100 + v) % 97;
        }
    }
    rem == 1
}

/// IBAN lengths per country (ISO 13616 registry). Knowing the exact length
/// lets us cut a space-grouped IBAN precisely instead of guessing where it
/// ends, and rejects random `XX00...` strings from unknown "countries".
const IBAN_LENGTHS: &[(&[u8; 2], usize)] = &[
    (b"AD", 24),
    (b"AE", 23),
    (b"AL", 28),
    (b"AT", 20),
    (b"AZ", 28),
    (b"BA", 20),
    (b"BE", 16),
    (b"BG", 22),
    (b"BH", 22),
    (b"BR", 29),
    (b"CH", 21),
    (b"CR", 22),
    (b"CY", 28),
    (b"CZ", 24),
    (b"DE", 22),
    (b"DK", 18),
    (b"DO", 28),
    (b"EE", 20),
    (b"EG", 29),
    (b"ES", 24),
    (b"FI", 18),
    (b"FO", 18),
    (b"FR", 27),
    (b"GB", 22),
    (b"GE", 22),
    (b"GI", 23),
    (b"GL", 18),
    (b"GR", 27),
    (b"GT", 28),
    (b"HR", 21),
    (b"HU", 28),
    (b"IE", 22),
    (b"IL", 23),
    (b"IS", 26),
    (b"IT", 27),
    (b"JO", 30),
    (b"KW", 30),
    (b"KZ", 20),
    (b"LB", 28),
    (b"LC", 32),
    (b"LI", 21),
    (b"LT", 20),
    (b"LU", 20),
    (b"LV", 21),
    (b"MC", 27),
    (b"MD", 24),
    (b"ME", 22),
    (b"MK", 19),
    (b"MR", 27),
    (b"MT", 31),
    (b"MU", 30),
    (b"NL", 18),
    (b"NO", 15),
    (b"PK", 24),
    (b"PL", 28),
    (b"PS", 29),
    (b"PT", 25),
    (b"QA", 29),
    (b"RO", 24),
    (b"RS", 22),
    (b"SA", 24),
    (b"SC", 31),
    (b"SE", 24),
    (b"SI", 19),
    (b"SK", 24),
    (b"SM", 27),
    (b"ST", 25),
    (b"SV", 28),
    (b"TL", 23),
    (b"TN", 24),
    (b"TR", 26),
    (b"UA", 29),
    (b"VA", 22),
    (b"VG", 24),
    (b"XK", 20),
];

/// IBAN starting at `s` (the first country letter). Accepts the compact
/// form and the printed form with single spaces between groups.
pub(crate) fn iban(b: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_alnum(b[s - 1]) {
        return None;
    }
    let cc = [*b.get(s)?, *b.get(s + 1)?];
    let want = IBAN_LENGTHS.iter().find(|(c, _)| **c == cc)?.1;
    let mut i = s;
    let mut n = 0;
    while n < want {
        let c = *b.get(i)?;
        if c.is_ascii_digit() || c.is_ascii_uppercase() {
            n += 1;
            i += 1;
        } else if c == b' ' && n > 0 && at(b, i + 1).is_some_and(|d| d.is_ascii_alphanumeric()) {
            i += 1;
        } else {
            return None;
        }
    }
    if !b[s + 2].is_ascii_digit() || !b[s + 3].is_ascii_digit() {
        return None;
    }
    (end_ok(b, i) && mod97_valid(&b[s..i])).then_some(i)
}

/// Payment card starting at digit `s`: 13–19 digits in groups separated by a
/// single consistent space, dash or dot, Luhn-valid, with a major-network leading
/// digit (2–6). The IIN restriction exists because plain Luhn accepts one
/// in ten random digit strings, which would shred order ids.
pub(crate) fn card(b: &[u8], s: usize, first_run: usize) -> Option<usize> {
    if !(b'2'..=b'6').contains(&b[s]) {
        return None;
    }
    // Fast reject: a short number not followed by a group separator.
    let next = at(b, s + first_run);
    if first_run < 13 && !matches!(next, Some(b' ' | b'-' | b'.')) {
        return None;
    }
    // Collect group end offsets and cumulative digit counts.
    let mut ends = [(0usize, 0usize); 20];
    let mut ng = 0;
    let mut i = s + first_run;
    let mut digits = first_run;
    if digits > 19 {
        return None;
    }
    ends[ng] = (i, digits);
    ng += 1;
    let sep = next.filter(|c| matches!(c, b' ' | b'-' | b'.'));
    if let Some(sep) = sep {
        while at(b, i) == Some(sep) && at(b, i + 1).is_some_and(|c| c.is_ascii_digit()) {
            let r = digit_run(b, i + 1);
            if digits + r > 19 || ng == ends.len() {
                break;
            }
            i += 1 + r;
            digits += r;
            ends[ng] = (i, digits);
            ng += 1;
        }
    }
    // Longest valid prefix of whole groups wins.
    for &(e, d) in ends[..ng].iter().rev() {
        if (13..=19).contains(&d) && end_ok(b, e) && luhn_valid(&b[s..e]) {
            return Some(e);
        }
    }
    None
}

#[inline]
fn digits_at(b: &[u8], i: usize, n: usize) -> bool {
    b.len() >= i + n
        && b[i..i + n].iter().all(u8::is_ascii_digit)
        && !at(b, i + n).is_some_and(|c| c.is_ascii_digit())
}

/// US SSN `AAA-GG-SSSS` at `s`, excluding never-issued ranges (area 000,
/// 666, 900–999; group 00; serial 0000) so that random dashed numbers and
/// documentation placeholders are less likely to trigger.
pub(crate) fn ssn(b: &[u8], s: usize) -> Option<usize> {
    // `123-45-6789`, or `123 45 6789` (one consistent separator).
    let sep = at(b, s + 3).filter(|c| matches!(c, b'-' | b' '));
    if !(digits_at(b, s, 3)
        && sep.is_some()
        && digits_at(b, s + 4, 2)
        && at(b, s + 6) == sep
        && digits_at(b, s + 7, 4))
    {
        return None;
    }
    let area = &b[s..s + 3];
    if area == b"000" || area == b"666" || area[0] == b'9' {
        return None;
    }
    if &b[s + 4..s + 6] == b"00" || &b[s + 7..s + 11] == b"0000" {
        return None;
    }
    end_ok(b, s + 11).then_some(s + 11)
}

/// North-American formatted phone: `555-123-4567`, `555.123.4567`,
/// `555 123 4567` (same separator twice) at digit `s`, or
/// `(555) 123-4567` / `(555)123-4567` when `s` points at `(`.
pub(crate) fn phone_formatted(b: &[u8], s: usize) -> Option<usize> {
    let i = if b[s] == b'(' {
        if !(digits_at(b, s + 1, 3) && at(b, s + 4) == Some(b')')) {
            return None;
        }
        let mut i = s + 5;
        if at(b, i) == Some(b' ') {
            i += 1;
        }
        if !(digits_at(b, i, 3) && matches!(at(b, i + 3), Some(b'-' | b'.' | b' '))) {
            return None;
        }
        i + 4
    } else {
        if !digits_at(b, s, 3) {
            return None;
        }
        let sep = at(b, s + 3)?;
        if !matches!(sep, b'-' | b'.' | b' ')
            || !digits_at(b, s + 4, 3)
            || at(b, s + 7) != Some(sep)
        {
            return None;
        }
        s + 8
    };
    (digits_at(b, i, 4) && end_ok(b, i + 4)).then_some(i + 4)
}

/// E.164 `+` followed by 8–15 digits; `s` points at the `+`.
pub(crate) fn phone_e164(b: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_alnum(b[s - 1]) {
        return None;
    }
    let n = digit_run(b, s + 1);
    if b[s + 1] == b'0' {
        return None;
    }
    if (8..=15).contains(&n) && end_ok(b, s + 1 + n) {
        return Some(s + 1 + n);
    }
    // International numbers as people write them: `+1-415-555-0101`, `+44 20 7946 0958`,
    // `+1 (415) 555-0101`. Groups of digits joined by one space, dash or dot (a group may be
    // parenthesised); 8–15 digits in all, as E.164 allows.
    let mut i = s + 1 + n;
    let mut digits = n;
    let mut groups = 1;
    while digits < 15 {
        if !matches!(at(b, i), Some(b' ' | b'-' | b'.')) {
            break;
        }
        let open = at(b, i + 1) == Some(b'(');
        let start = i + 1 + usize::from(open);
        let r = digit_run(b, start);
        if r == 0 || digits + r > 15 {
            break;
        }
        let mut end = start + r;
        if open {
            if at(b, end) != Some(b')') {
                break;
            }
            end += 1;
        }
        i = end;
        digits += r;
        groups += 1;
    }
    ((8..=15).contains(&digits) && groups > 1 && end_ok(b, i)).then_some(i)
}

/// Dotted-quad IPv4 at digit `s`, each octet ≤ 255 without leading zeros.
pub(crate) fn ipv4(b: &[u8], s: usize) -> Option<usize> {
    let mut i = s;
    for k in 0..4 {
        let n = digit_run(b, i);
        if n == 0 || n > 3 || (n > 1 && b[i] == b'0') {
            return None;
        }
        let v: u32 = b[i..i + n]
            .iter()
            .fold(0, |a, c| a * 10 + u32::from(c - b'0'));
        if v > 255 {
            return None;
        }
        i += n;
        if k < 3 {
            if at(b, i) != Some(b'.') {
                return None;
            }
            i += 1;
        }
    }
    end_ok(b, i).then_some(i)
}

#[inline]
fn is_hex_or_colon(c: u8) -> bool {
    c.is_ascii_hexdigit() || c == b':' || c == b'.'
}

/// IPv6 candidate around the `:` at `c`. Returns `(start, end)` of the
/// candidate extent (so the caller can skip the colons inside it) and
/// whether it parsed as an address. Cheap colon-count checks run before
/// `Ipv6Addr::from_str`, so timestamps like `10:30:00` cost almost nothing.
pub(crate) fn ipv6(b: &[u8], c: usize) -> (usize, usize, bool) {
    let mut s = c;
    while s > 0 && is_hex_or_colon(b[s - 1]) {
        s -= 1;
    }
    let mut e = c + 1;
    while e < b.len() && is_hex_or_colon(b[e]) {
        e += 1;
    }
    // Trailing dots belong to the sentence, not the address.
    while e > c + 1 && b[e - 1] == b'.' {
        e -= 1;
    }
    let cand = &b[s..e];
    let colons = cand.iter().filter(|&&x| x == b':').count();
    let has_dc = cand.windows(2).any(|w| w == b"::");
    let boundary = (s == 0 || !(is_alnum(b[s - 1]) || b[s - 1] == b'_'))
        && !at(b, e).is_some_and(|x| is_alnum(x) || x == b'_');
    if !boundary || cand.len() < 3 || (!has_dc && colons < 6) || cand.len() > 45 {
        return (s, e, false);
    }
    let ok = std::str::from_utf8(cand)
        .ok()
        .and_then(|t| t.parse::<std::net::Ipv6Addr>().ok())
        .is_some()
        && cand.iter().any(|x| x.is_ascii_hexdigit());
    (s, e, ok)
}

/// Email around the `@` at `a`: RFC-5322-ish dot-atom local part and a
/// dotted hostname whose last label is an alphabetic TLD of ≥ 2 letters.
pub(crate) fn email(b: &[u8], a: usize) -> Option<(usize, usize)> {
    let local = |c: u8| is_alnum(c) || matches!(c, b'.' | b'_' | b'%' | b'+' | b'-');
    let mut s = a;
    while s > 0 && local(b[s - 1]) {
        s -= 1;
    }
    while s < a && b[s] == b'.' {
        s += 1;
    }
    if s == a || b[a - 1] == b'.' {
        return None;
    }
    let host = |c: u8| is_alnum(c) || matches!(c, b'.' | b'-');
    let mut e = a + 1;
    while e < b.len() && host(b[e]) {
        e += 1;
    }
    while e > a + 1 && matches!(b[e - 1], b'.' | b'-') {
        e -= 1;
    }
    let dom = &b[a + 1..e];
    let dot = dom.iter().rposition(|&c| c == b'.')?;
    let tld = &dom[dot + 1..];
    if dot == 0
        || tld.len() < 2
        || !tld.iter().all(u8::is_ascii_alphabetic)
        || dom.windows(2).any(|w| w == b"..")
    {
        return None;
    }
    Some((s, e))
}

/// AWS access key id (`AKIA`/`ASIA` + 16 uppercase alphanumerics) at `s`.
pub(crate) fn aws_key(b: &[u8], s: usize) -> Option<usize> {
    if s > 0 && is_alnum(b[s - 1]) {
        return None;
    }
    let e = s + 20;
    if b.len() < e
        || !b[s + 4..e]
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    {
        return None;
    }
    (!at(b, e).is_some_and(is_alnum)).then_some(e)
}

/// JWT at `s` (pointing at `eyJ`): three base64url segments separated by
/// dots whose header decodes to a JSON object containing `"alg"`. The
/// signature segment may be empty (`alg: none` tokens are still secrets).
pub(crate) fn jwt(b: &[u8], s: usize) -> Option<usize> {
    if s > 0 && (is_alnum(b[s - 1]) || matches!(b[s - 1], b'-' | b'_')) {
        return None;
    }
    let seg = |i: usize| {
        b[i..]
            .iter()
            .take_while(|c| is_alnum(**c) || matches!(c, b'-' | b'_'))
            .count()
    };
    let h = seg(s);
    if h < 4 || at(b, s + h) != Some(b'.') {
        return None;
    }
    let p0 = s + h + 1;
    let p = seg(p0);
    if p == 0 || at(b, p0 + p) != Some(b'.') {
        return None;
    }
    let s0 = p0 + p + 1;
    let e = s0 + seg(s0);
    if at(b, e) == Some(b'.') {
        return None;
    }
    let header = URL_SAFE_NO_PAD.decode(&b[s..s + h]).ok()?;
    let t = header.trim_ascii();
    (t.first() == Some(&b'{') && t.windows(5).any(|w| w == b"\"alg\"")).then_some(e)
}

/// PEM private key block starting at `s` (pointing at `-----BEGIN`). The
/// whole armoured block is one match. A block with no END line (truncated
/// value) is masked to the end of the value: leaking half a key is still a
/// leak.
pub(crate) fn pem(b: &[u8], s: usize) -> Option<usize> {
    const BEGIN: &[u8] = b"-----BEGIN ";
    const TAIL: &[u8] = b"PRIVATE KEY-----";
    let rest = b.get(s + BEGIN.len()..)?;
    if !b[s..].starts_with(BEGIN) {
        return None;
    }
    let line_len = rest
        .iter()
        .position(|&c| c == b'\n' || c == b'\r')
        .unwrap_or(rest.len())
        .min(64);
    let label_end = rest[..line_len]
        .windows(TAIL.len())
        .position(|w| w == TAIL)?;
    let label = &rest[..label_end + TAIL.len() - 5]; // e.g. "RSA PRIVATE KEY"
    let body = s + BEGIN.len() + label_end + TAIL.len();
    let mut end_marker = Vec::with_capacity(label.len() + 14);
    end_marker.extend_from_slice(b"-----END ");
    end_marker.extend_from_slice(label);
    end_marker.extend_from_slice(b"-----");
    match b[body..]
        .windows(end_marker.len())
        .position(|w| w == end_marker.as_slice())
    {
        Some(p) => Some(body + p + end_marker.len()),
        None => Some(b.len()),
    }
}
