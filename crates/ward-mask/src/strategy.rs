//! Replacement strategies for matched spans.

use sha2::{Digest, Sha256};

use crate::{B_CARD, B_EMAIL};

/// HMAC-SHA256 with the key-dependent inner/outer states precomputed once,
/// so tokenizing a span costs two SHA-256 finalizations and no key setup.
/// (Implemented directly on `sha2` 0.10 to avoid a second digest-trait
/// version in the tree; verified against RFC 4231 in the tests.)
#[derive(Clone)]
pub(crate) struct HmacKey {
    inner: Sha256,
    outer: Sha256,
}

impl HmacKey {
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let ipad: [u8; 64] = std::array::from_fn(|i| k[i] ^ 0x36);
        let opad: [u8; 64] = std::array::from_fn(|i| k[i] ^ 0x5c);
        Self {
            inner: Sha256::new().chain_update(ipad),
            outer: Sha256::new().chain_update(opad),
        }
    }

    pub(crate) fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let inner = self.inner.clone().chain_update(msg).finalize();
        self.outer.clone().chain_update(inner).finalize().into()
    }
}

/// `tok_` + first 8 bytes of the HMAC in lowercase hex (64 bits: collisions
/// are negligible at table scale while keeping tokens short).
pub(crate) fn tokenize(key: &HmacKey, span: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mac = key.mac(span);
    out.extend_from_slice(b"tok_");
    for byte in &mac[..8] {
        out.push(HEX[usize::from(byte >> 4)]);
        out.push(HEX[usize::from(byte & 0xf)]);
    }
}

/// Format-preserving redaction. `kind` is the built-in detector index
/// (`None` for custom detectors).
pub(crate) fn redact(kind: Option<usize>, span: &[u8], out: &mut Vec<u8>) {
    match kind {
        Some(B_CARD) => {
            // Keep the last four digits (as printed receipts do) and every
            // separator, so `4111-1111-1111-1111` → `****-****-****-1111`.
            let total = span.iter().filter(|c| c.is_ascii_digit()).count();
            let mut seen = 0;
            let keep_from = total.saturating_sub(4);
            // `extend` over a mapped slice iterator reserves once and writes without a
            // capacity check per byte (this runs for every masked value of a result).
            out.extend(span.iter().map(|&c| {
                if c.is_ascii_digit() {
                    seen += 1;
                    if seen > keep_from { c } else { b'*' }
                } else {
                    c
                }
            }));
        }
        Some(B_EMAIL) => {
            // `john@example.com` → `j***@*******.com`: first letter and TLD
            // survive so support staff can still sanity-check a row.
            let at = span.iter().position(|&c| c == b'@').unwrap_or(span.len());
            let tld = span
                .iter()
                .rposition(|&c| c == b'.')
                .filter(|&d| d > at)
                .unwrap_or(span.len());
            out.extend(span.iter().enumerate().map(|(i, &c)| {
                if i == 0 || i == at || i >= tld {
                    c
                } else {
                    b'*'
                }
            }));
        }
        _ => out.extend(
            span.iter()
                .map(|&c| if c.is_ascii_alphanumeric() { b'*' } else { c }),
        ),
    }
}

/// Redaction of a whole value for column rules, where no detector has
/// vouched for the value's shape. Values that *are* an email or a card keep
/// the same shape content redaction would give them (so masked columns and
/// masked free text look alike); anything else keeps only ASCII punctuation
/// and whitespace, which reveals length/format but no content. Very short
/// values are fully starred because their punctuation alone (`M/F`, `+1`)
/// can be the secret.
pub(crate) fn redact_whole(value: &[u8], out: &mut Vec<u8>) {
    if let Some(at) = value.iter().position(|&c| c == b'@')
        && crate::detect::email(value, at) == Some((0, value.len()))
    {
        return redact(Some(B_EMAIL), value, out);
    }
    if value
        .iter()
        .all(|c| c.is_ascii_digit() || matches!(c, b' ' | b'-'))
        && value.iter().filter(|c| c.is_ascii_digit()).count() >= 12
    {
        return redact(Some(B_CARD), value, out);
    }
    let short = value.len() <= 4;
    if value.is_ascii() {
        out.extend(value.iter().map(|&c| {
            if !short && !c.is_ascii_alphanumeric() {
                c
            } else {
                b'*'
            }
        }));
        return;
    }
    // One `*` per character (not per byte) so multi-byte UTF-8 never leaves
    // a dangling lead/continuation byte; invalid bytes are starred one each.
    for chunk in value.utf8_chunks() {
        for ch in chunk.valid().chars() {
            let keep = !short && ch.is_ascii() && !ch.is_ascii_alphanumeric();
            out.push(if keep { ch as u8 } else { b'*' });
        }
        out.extend(std::iter::repeat_n(b'*', chunk.invalid().len()));
    }
}
