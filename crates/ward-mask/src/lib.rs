//! Content-aware masking engine for values flowing back through the gateway.
//!
//! Column-level policies cannot see PII smuggled inside free-text or JSON
//! columns (`notes`, `payload`, log lines). This crate scans individual
//! values for sensitive *content* (emails, card numbers, keys, …) and
//! rewrites only the matched spans, so it can later sit on the result-set
//! data path without knowing the schema.
//!
//! Design goals, in order:
//! 1. **Low false positives** — every detector validates its candidate
//!    (Luhn, mod-97, SSN ranges, octet ranges, JWT header decode, …) because
//!    masking order ids or timestamps breaks applications.
//! 2. **Cheap clean path** — most values contain nothing sensitive. A value
//!    is first run through one Aho-Corasick prefilter over trigger strings
//!    (`@`, `-----BEGIN`, `AKIA`, `ASIA`, `eyJ`, `:`) plus a SWAR byte scan
//!    for digit runs; validators only run at those candidates, and a clean
//!    value returns [`MaskResult::Unchanged`] without allocating.
//! 3. **No double masking** — overlapping matches are resolved before any
//!    rewrite: the earliest match wins, ties go to the longest.
//!
//! # Buffer-writing API
//! The data path masks millions of values per result set, so besides
//! [`Masker::mask`] every entry point has an `*_into` form that appends to a
//! caller-owned buffer and reports an [`Outcome`]: one reused buffer per
//! connection instead of one allocation per masked value. Structured values
//! get their own walkers so masking keeps them well-formed: [`mask_json_into`]
//! (JSON text, per-key rules), [`mask_bytea_hex_into`] /
//! [`mask_encoded_into`] (hex/base64-wrapped text) and
//! [`mask_copy_line_into`] (`COPY … TO STDOUT` rows).
//!
//! # Non-UTF-8 input
//! Values are scanned as raw bytes; no UTF-8 validation is performed. All
//! built-in detectors match ASCII-only spans and all replacements are ASCII,
//! so valid UTF-8 input always stays valid UTF-8, and binary/other-encoding
//! input is still scanned for ASCII-shaped secrets. Custom detectors use
//! `regex::bytes`, so they also scan non-UTF-8 input (Unicode classes in a
//! custom pattern simply won't match invalid sequences).
//!
//! # Known limitations
//! * Phone: international numbers need their `+` (`+14155552671`,
//!   `+44 20 7946 0958`), national ones the North-American grouping; bare
//!   `5551234567` is not recognised (too ambiguous with ids without context).
//! * Payment cards must start with a major-network digit (2–6).
//! * IBANs are recognised for the countries in the built-in length table.
//! * Values are masked one at a time; a secret split across two values (or
//!   two protocol chunks) is not detected.

pub mod copy;
mod detect;
pub mod encoded;
pub mod json;
mod strategy;

use std::cmp::Reverse;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};
use regex::bytes::Regex;

pub use copy::mask_copy_line_into;
pub use detect::{luhn_valid, mod97_valid};
pub use encoded::{mask_bytea_hex_into, mask_encoded_into, mask_encoded_whole_into};
pub use json::{JsonKeys, mask_json_into};

/// Errors building a [`Masker`].
#[derive(Debug, thiserror::Error)]
pub enum MaskError {
    /// A custom detector's regex did not compile.
    #[error("custom detector `{name}`: invalid pattern: {source}")]
    InvalidPattern {
        name: String,
        #[source]
        source: regex::Error,
    },
    /// `tokenize` was requested but no (non-empty) key was configured;
    /// tokens without a secret key would be reversible by dictionary attack.
    #[error("strategy `tokenize` requires a non-empty token_key")]
    MissingTokenKey,
    /// The same detector was configured twice; which strategy applies would
    /// be ambiguous.
    #[error("detector `{0}` configured more than once")]
    DuplicateDetector(String),
    /// Failed to build the prefilter automaton.
    #[error("prefilter build failed: {0}")]
    Prefilter(#[from] aho_corasick::BuildError),
}

/// Post-match validation for custom detectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Validator {
    /// Accept every regex match.
    #[default]
    None,
    /// Luhn checksum over the digits of the match.
    Luhn,
    /// ISO 13616 mod-97 over the alphanumerics of the match.
    Mod97,
}

/// A user-defined regex detector.
#[derive(Debug, Clone)]
pub struct CustomDetector {
    /// Name used in errors and reported by [`Masker::find`].
    pub name: String,
    /// `regex` syntax; matched against raw bytes.
    pub pattern: String,
    /// Extra check applied to each regex match.
    pub validator: Validator,
}

/// What to look for.
#[derive(Debug, Clone)]
pub enum Detector {
    Email,
    /// 13–19 digit Luhn-valid card numbers, optionally grouped by spaces/dashes.
    PaymentCard,
    Iban,
    UsSsn,
    /// E.164 (`+` 8–15 digits) and North-American formatted numbers.
    Phone,
    Ipv4,
    Ipv6,
    Jwt,
    AwsAccessKey,
    PemPrivateKey,
    Custom(CustomDetector),
}

impl Detector {
    /// Stable name, used for errors and [`Match::detector`].
    pub fn name(&self) -> &str {
        match self {
            Detector::Email => "email",
            Detector::PaymentCard => "payment_card",
            Detector::Iban => "iban",
            Detector::UsSsn => "us_ssn",
            Detector::Phone => "phone",
            Detector::Ipv4 => "ipv4",
            Detector::Ipv6 => "ipv6",
            Detector::Jwt => "jwt",
            Detector::AwsAccessKey => "aws_access_key",
            Detector::PemPrivateKey => "pem_private_key",
            Detector::Custom(c) => &c.name,
        }
    }

    fn builtin_index(&self) -> Option<usize> {
        Some(match self {
            Detector::Email => B_EMAIL,
            Detector::PaymentCard => B_CARD,
            Detector::Iban => B_IBAN,
            Detector::UsSsn => B_SSN,
            Detector::Phone => B_PHONE,
            Detector::Ipv4 => B_IPV4,
            Detector::Ipv6 => B_IPV6,
            Detector::Jwt => B_JWT,
            Detector::AwsAccessKey => B_AWS,
            Detector::PemPrivateKey => B_PEM,
            Detector::Custom(_) => return None,
        })
    }
}

const B_EMAIL: usize = 0;
const B_CARD: usize = 1;
const B_IBAN: usize = 2;
const B_SSN: usize = 3;
const B_PHONE: usize = 4;
const B_IPV4: usize = 5;
const B_IPV6: usize = 6;
const B_JWT: usize = 7;
const B_AWS: usize = 8;
const B_PEM: usize = 9;
const N_BUILTIN: usize = 10;

/// How a matched span is rewritten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Strategy {
    /// Format-preserving partial mask (cards keep the last 4 digits, emails
    /// keep the first letter and the TLD, everything else keeps punctuation
    /// and length) so masked output still looks plausible to applications.
    Redact,
    /// Deterministic keyed token `tok_` + 16 hex chars of
    /// HMAC-SHA256(key, value): joins and group-bys on masked data still
    /// work, but values can't be recovered without the key.
    Tokenize,
    /// The whole value becomes SQL NULL.
    Null,
    /// Replace the span with a fixed string.
    Fixed(String),
}

/// One enabled detector and the strategy applied to its matches.
#[derive(Debug, Clone)]
pub struct DetectorConfig {
    pub detector: Detector,
    pub strategy: Strategy,
}

impl DetectorConfig {
    pub fn new(detector: Detector, strategy: Strategy) -> Self {
        Self { detector, strategy }
    }
}

/// Full masker configuration.
#[derive(Debug, Clone, Default)]
pub struct MaskerConfig {
    pub detectors: Vec<DetectorConfig>,
    /// Secret for [`Strategy::Tokenize`]; required if any detector uses it.
    pub token_key: Option<Vec<u8>>,
}

/// Result of [`Masker::mask`], borrowing the input when nothing changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaskResult<'a> {
    /// Nothing sensitive found; the input slice is returned as-is and no
    /// allocation happened.
    Unchanged(&'a [u8]),
    /// The value with sensitive spans rewritten.
    Masked(Vec<u8>),
    /// A matched detector uses [`Strategy::Null`]: the value must become NULL.
    Null,
}

impl MaskResult<'_> {
    /// The output bytes, or `None` for [`MaskResult::Null`].
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            MaskResult::Unchanged(b) => Some(b),
            MaskResult::Masked(v) => Some(v),
            MaskResult::Null => None,
        }
    }

    pub fn is_unchanged(&self) -> bool {
        matches!(self, MaskResult::Unchanged(_))
    }
}

/// Result of the `*_into` family ([`Masker::mask_into`],
/// [`Masker::mask_whole_into`], [`mask_json_into`], …).
///
/// These write into a caller-provided buffer instead of returning an owned
/// value so the data path can reuse one buffer for a whole result set; the
/// outcome tells the caller whether to forward the original bytes, the bytes
/// just appended, or a NULL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to hide: nothing was appended, forward the original value.
    Unchanged,
    /// The complete replacement value was appended to `out`.
    Masked,
    /// Nothing was appended; the value must be sent as SQL NULL.
    Null,
}

/// A resolved (non-overlapping) detection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match<'m> {
    pub start: usize,
    pub end: usize,
    /// [`Detector::name`] of the detector that matched.
    pub detector: &'m str,
}

#[derive(Debug, Clone, Copy)]
struct Hit {
    start: usize,
    end: usize,
    det: usize,
}

/// Trigger kinds for the Aho-Corasick prefilter.
#[derive(Debug, Clone, Copy)]
enum Trigger {
    At,
    Pem,
    Aws,
    Jwt,
    Colon,
}

struct Custom {
    det: usize,
    re: Regex,
    validator: Validator,
}

/// Compiled, immutable, thread-safe masker. Build once per policy and share.
///
/// ```
/// use ward_mask::{Detector, DetectorConfig, MaskResult, Masker, MaskerConfig, Strategy};
///
/// let masker = Masker::new(MaskerConfig {
///     detectors: vec![
///         DetectorConfig::new(Detector::Email, Strategy::Redact),
///         DetectorConfig::new(Detector::PaymentCard, Strategy::Redact),
///     ],
///     token_key: None,
/// })?;
/// assert!(masker.mask(b"order 1234 shipped").is_unchanged());
/// assert_eq!(
///     masker.mask(b"john@example.com paid with 4111-1111-1111-1111"),
///     MaskResult::Masked(b"j***@*******.com paid with ****-****-****-1111".to_vec())
/// );
/// # Ok::<(), ward_mask::MaskError>(())
/// ```
pub struct Masker {
    configs: Vec<DetectorConfig>,
    /// Built-in kind → index into `configs`.
    builtin: [Option<usize>; N_BUILTIN],
    prefilter: Option<(AhoCorasick, Vec<Trigger>)>,
    /// The trigger strings, in prefilter pattern order, for the short-value scan.
    triggers: Vec<&'static [u8]>,
    /// Bytes that start some trigger.
    trigger_starts: [bool; 256],
    digits: bool,
    customs: Vec<Custom>,
    hmac: Option<strategy::HmacKey>,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Deliberately omits the token key.
        f.debug_struct("Masker")
            .field(
                "detectors",
                &self
                    .configs
                    .iter()
                    .map(|c| c.detector.name())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Masker {
    /// Compile a configuration. Fails on bad custom regexes, duplicate
    /// detectors, or `tokenize` without a key.
    pub fn new(config: MaskerConfig) -> Result<Self, MaskError> {
        let mut builtin = [None; N_BUILTIN];
        let mut customs = Vec::new();
        let mut names = std::collections::HashSet::new();
        for (i, dc) in config.detectors.iter().enumerate() {
            if !names.insert(dc.detector.name().to_owned()) {
                return Err(MaskError::DuplicateDetector(dc.detector.name().to_owned()));
            }
            if dc.strategy == Strategy::Tokenize
                && config.token_key.as_ref().is_none_or(|k| k.is_empty())
            {
                return Err(MaskError::MissingTokenKey);
            }
            match (&dc.detector, dc.detector.builtin_index()) {
                (_, Some(b)) => builtin[b] = Some(i),
                (Detector::Custom(c), None) => {
                    let re =
                        Regex::new(&c.pattern).map_err(|source| MaskError::InvalidPattern {
                            name: c.name.clone(),
                            source,
                        })?;
                    customs.push(Custom {
                        det: i,
                        re,
                        validator: c.validator,
                    });
                }
                _ => unreachable!("non-custom detectors always have a builtin index"),
            }
        }
        let mut pats: Vec<&str> = Vec::new();
        let mut kinds = Vec::new();
        let mut add = |p: &'static str, t: Trigger| {
            pats.push(p);
            kinds.push(t);
        };
        if builtin[B_EMAIL].is_some() {
            add("@", Trigger::At);
        }
        if builtin[B_PEM].is_some() {
            add("-----BEGIN ", Trigger::Pem);
        }
        if builtin[B_AWS].is_some() {
            add("AKIA", Trigger::Aws);
            add("ASIA", Trigger::Aws);
        }
        if builtin[B_JWT].is_some() {
            add("eyJ", Trigger::Jwt);
        }
        if builtin[B_IPV6].is_some() {
            add(":", Trigger::Colon);
        }
        let triggers: Vec<&'static [u8]> = pats.iter().map(|p| p.as_bytes()).collect();
        let mut trigger_starts = [false; 256];
        for t in &triggers {
            trigger_starts[usize::from(t[0])] = true;
        }
        let prefilter = if pats.is_empty() {
            None
        } else {
            let ac = AhoCorasickBuilder::new()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&pats)?;
            Some((ac, kinds))
        };
        let digits = [B_CARD, B_IBAN, B_SSN, B_PHONE, B_IPV4]
            .iter()
            .any(|&b| builtin[b].is_some());
        let hmac = config
            .token_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .map(strategy::HmacKey::new);
        Ok(Self {
            configs: config.detectors,
            builtin,
            prefilter,
            triggers,
            trigger_starts,
            digits,
            customs,
            hmac,
        })
    }

    /// A masker with no detectors, only a token key. Column rules mask a
    /// whole value regardless of its content, so they need a masker (for the
    /// key) even when content detection is disabled.
    pub fn with_key(token_key: Option<Vec<u8>>) -> Masker {
        Masker::new(MaskerConfig {
            detectors: Vec::new(),
            token_key,
        })
        .expect("a config without detectors cannot fail")
    }

    /// No detectors configured: content masking is a no-op, so callers can
    /// skip scanning entirely.
    pub fn is_empty(&self) -> bool {
        self.configs.is_empty()
    }

    /// True when a user-defined (regex) detector is configured, whose matches ward cannot
    /// rule out by a value's type.
    pub fn has_custom(&self) -> bool {
        !self.customs.is_empty()
    }

    /// At least one detector is configured (the negation of [`Self::is_empty`]).
    pub fn has_detectors(&self) -> bool {
        !self.is_empty()
    }

    /// Mask one value. Allocation-free when nothing matches.
    pub fn mask<'a>(&self, value: &'a [u8]) -> MaskResult<'a> {
        let mut out = Vec::new();
        match self.mask_into(value, &mut out) {
            Outcome::Unchanged => MaskResult::Unchanged(value),
            Outcome::Masked => MaskResult::Masked(out),
            Outcome::Null => MaskResult::Null,
        }
    }

    /// Like [`Self::mask`], but appends the masked value to `out` (see
    /// [`Outcome`] for what is appended when). Nothing is allocated or
    /// appended when nothing matches.
    pub fn mask_into(&self, value: &[u8], out: &mut Vec<u8>) -> Outcome {
        let hits = self.scan(value);
        if hits.is_empty() {
            return Outcome::Unchanged;
        }
        if hits
            .iter()
            .any(|h| self.configs[h.det].strategy == Strategy::Null)
        {
            return Outcome::Null;
        }
        out.reserve(value.len() + 16);
        let mut pos = 0;
        for h in &hits {
            out.extend_from_slice(&value[pos..h.start]);
            let span = &value[h.start..h.end];
            match &self.configs[h.det].strategy {
                Strategy::Redact => {
                    let kind = self.configs[h.det].detector.builtin_index();
                    strategy::redact(kind, span, out);
                }
                Strategy::Tokenize => {
                    let key = self.hmac.as_ref().expect("checked in Masker::new");
                    strategy::tokenize(key, span, out);
                }
                Strategy::Fixed(s) => out.extend_from_slice(s.as_bytes()),
                Strategy::Null => unreachable!("handled above"),
            }
            pos = h.end;
        }
        out.extend_from_slice(&value[pos..]);
        Outcome::Masked
    }

    /// Apply `strategy` to the entire value, ignoring its content (column
    /// rules: the whole column is sensitive). Never returns
    /// [`Outcome::Unchanged`].
    ///
    /// `Redact` keeps the familiar shapes where the whole value is an email
    /// or a card number, and otherwise keeps only punctuation and length.
    /// `Tokenize` without a configured key yields [`Outcome::Null`]: failing
    /// closed is safer than leaking the value or emitting a guessable token.
    pub fn mask_whole_into(&self, strategy: &Strategy, value: &[u8], out: &mut Vec<u8>) -> Outcome {
        match strategy {
            Strategy::Null => Outcome::Null,
            Strategy::Fixed(s) => {
                out.extend_from_slice(s.as_bytes());
                Outcome::Masked
            }
            Strategy::Tokenize => match &self.hmac {
                Some(key) => {
                    strategy::tokenize(key, value, out);
                    Outcome::Masked
                }
                None => Outcome::Null,
            },
            Strategy::Redact => {
                strategy::redact_whole(value, out);
                Outcome::Masked
            }
        }
    }

    /// Report the resolved matches without rewriting (for audit/debugging).
    pub fn find(&self, value: &[u8]) -> Vec<Match<'_>> {
        self.scan(value)
            .into_iter()
            .map(|h| Match {
                start: h.start,
                end: h.end,
                detector: self.configs[h.det].detector.name(),
            })
            .collect()
    }

    /// Candidate generation + validation + overlap resolution. Returns an
    /// empty (non-allocated) Vec on the clean path.
    fn scan(&self, b: &[u8]) -> Vec<Hit> {
        let mut hits: Vec<Hit> = Vec::new();
        if let Some((ac, kinds)) = &self.prefilter {
            self.scan_triggers(ac, kinds, b, &mut hits);
        }
        if self.digits {
            self.scan_digits(b, &mut hits);
        }
        for c in &self.customs {
            for m in c.re.find_iter(b) {
                let ok = match c.validator {
                    Validator::None => true,
                    Validator::Luhn => luhn_valid(m.as_bytes()),
                    Validator::Mod97 => mod97_valid(m.as_bytes()),
                };
                if ok && !m.is_empty() {
                    hits.push(Hit {
                        start: m.start(),
                        end: m.end(),
                        det: c.det,
                    });
                }
            }
        }
        if hits.len() > 1 {
            // Earliest start wins; among equal starts the longest wins.
            hits.sort_unstable_by_key(|h| (h.start, Reverse(h.end)));
            let mut last_end = 0;
            hits.retain(|h| {
                let keep = h.start >= last_end;
                if keep {
                    last_end = h.end;
                }
                keep
            });
        }
        hits
    }

    fn scan_triggers(&self, ac: &AhoCorasick, kinds: &[Trigger], b: &[u8], hits: &mut Vec<Hit>) {
        let mut skip_until = 0;
        if b.len() <= SHORT_VALUE {
            // Most result values are short (names, emails, codes), where the automaton's
            // packed searcher falls back to Rabin-Karp; a first-byte table and a prefix
            // compare find the same leftmost, non-overlapping triggers faster.
            let mut i = 0;
            while i < b.len() {
                if self.trigger_starts[usize::from(b[i])]
                    && let Some(p) = self.triggers.iter().position(|t| b[i..].starts_with(t))
                {
                    self.on_trigger(kinds[p], b, i, &mut skip_until, hits);
                    i += self.triggers[p].len();
                    continue;
                }
                i += 1;
            }
            return;
        }
        for m in ac.find_iter(b) {
            self.on_trigger(
                kinds[m.pattern().as_usize()],
                b,
                m.start(),
                &mut skip_until,
                hits,
            );
        }
    }

    /// Validates the candidate a trigger found at `s`.
    fn on_trigger(
        &self,
        trigger: Trigger,
        b: &[u8],
        s: usize,
        skip_until: &mut usize,
        hits: &mut Vec<Hit>,
    ) {
        {
            if s < *skip_until {
                return;
            }
            let found = match trigger {
                Trigger::At => detect::email(b, s).map(|r| (r, B_EMAIL)),
                Trigger::Pem => detect::pem(b, s).map(|e| ((s, e), B_PEM)),
                Trigger::Aws => detect::aws_key(b, s).map(|e| ((s, e), B_AWS)),
                Trigger::Jwt => detect::jwt(b, s).map(|e| ((s, e), B_JWT)),
                Trigger::Colon => {
                    let (cs, ce, ok) = detect::ipv6(b, s);
                    // Don't re-examine the other colons of the same token.
                    *skip_until = ce;
                    ok.then_some(((cs, ce), B_IPV6))
                }
            };
            if let Some(((start, end), kind)) = found {
                let det = self.builtin[kind].expect("trigger only registered when enabled");
                hits.push(Hit { start, end, det });
                *skip_until = (*skip_until).max(end);
            }
        }
    }

    fn scan_digits(&self, b: &[u8], hits: &mut Vec<Hit>) {
        let mut i = 0;
        while let Some(p) = next_digit(b, i) {
            let run = detect::digit_run(b, p);
            let end = self.on_digit_run(b, p, run, hits);
            i = end.unwrap_or(p + run).max(p + run);
        }
    }

    /// Try the digit-anchored detectors at the start of a digit run.
    /// Context before the run decides which ones are plausible so the common
    /// case (a number inside a word, date, version or time) exits early.
    fn on_digit_run(&self, b: &[u8], p: usize, run: usize, hits: &mut Vec<Hit>) -> Option<usize> {
        let mut push = |kind: usize, start: usize, end: usize| {
            let det = self.builtin[kind]?;
            hits.push(Hit { start, end, det });
            Some(end)
        };
        let on = |k: usize| self.builtin[k].is_some();
        let prev = if p > 0 { Some(b[p - 1]) } else { None };
        match prev {
            Some(b'+') if on(B_PHONE) => {
                return detect::phone_e164(b, p - 1).and_then(|e| push(B_PHONE, p - 1, e));
            }
            Some(b'(') if on(B_PHONE) => {
                return detect::phone_formatted(b, p - 1).and_then(|e| push(B_PHONE, p - 1, e));
            }
            Some(c) if c.is_ascii_uppercase() => {
                if on(B_IBAN) && p >= 2 && b[p - 2].is_ascii_uppercase() && run >= 2 {
                    return detect::iban(b, p - 2).and_then(|e| push(B_IBAN, p - 2, e));
                }
                return None;
            }
            Some(c) if detect::is_alnum(c) || matches!(c, b'.' | b'-' | b':' | b'/' | b'_') => {
                return None;
            }
            _ => {}
        }
        let next = b.get(p + run).copied();
        if run <= 3 && next == Some(b'.') && on(B_IPV4) {
            if let Some(e) = detect::ipv4(b, p) {
                return push(B_IPV4, p, e);
            }
        }
        if run == 3 {
            if on(B_SSN) {
                if let Some(e) = detect::ssn(b, p) {
                    return push(B_SSN, p, e);
                }
            }
            if on(B_PHONE) {
                if let Some(e) = detect::phone_formatted(b, p) {
                    return push(B_PHONE, p, e);
                }
            }
        }
        if on(B_CARD) {
            if let Some(e) = detect::card(b, p, run) {
                return push(B_CARD, p, e);
            }
        }
        None
    }
}

/// Lazily started rewrite of a container value (JSON document, COPY line)
/// into `out`. Untouched bytes are only copied once the first replacement
/// happens, so a clean container costs no writes; on error the caller
/// truncates back to `base`, keeping the "nothing appended" contract.
pub(crate) struct Splice {
    base: usize,
    copied: usize,
    changed: bool,
}

impl Splice {
    pub(crate) fn new(out: &[u8]) -> Self {
        Self {
            base: out.len(),
            copied: 0,
            changed: false,
        }
    }

    /// Flush `src[copied..start]` and skip `src[start..end]`; the caller then
    /// appends the replacement for that span to `out`.
    pub(crate) fn replace(&mut self, src: &[u8], start: usize, end: usize, out: &mut Vec<u8>) {
        if !self.changed {
            // First change: size for the whole value plus some growth.
            out.reserve(src.len() + 16);
            self.changed = true;
        }
        out.extend_from_slice(&src[self.copied..start]);
        self.copied = end;
    }

    pub(crate) fn finish(self, src: &[u8], out: &mut Vec<u8>) -> Outcome {
        if self.changed {
            out.extend_from_slice(&src[self.copied..]);
            Outcome::Masked
        } else {
            Outcome::Unchanged
        }
    }

    pub(crate) fn abort(self, out: &mut Vec<u8>) {
        out.truncate(self.base);
    }
}

/// Largest decoded/unescaped value kept on the stack.
const STACK_SCRATCH: usize = 512;

/// Run `f` on bytes produced by `fill`, which writes at most `max` bytes
/// into the buffer it is given and returns how many (or `None` if its input
/// is malformed). Every decoder used with this (JSON/COPY unescaping, hex,
/// base64) shrinks its input, so `max` is the input length.
///
/// Small values are decoded on the stack; larger ones borrow the spare
/// capacity of `spill` (the caller's output buffer, length restored
/// afterwards), so the clean path allocates nothing once that buffer has
/// been reused a few times.
pub(crate) fn with_scratch<R>(
    max: usize,
    spill: &mut Vec<u8>,
    fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    f: impl FnOnce(&[u8]) -> R,
) -> Option<R> {
    if max <= STACK_SCRATCH {
        let mut buf = [0u8; STACK_SCRATCH];
        let n = fill(&mut buf[..max])?;
        return Some(f(&buf[..n]));
    }
    let p = spill.len();
    spill.resize(p + max, 0);
    let r = fill(&mut spill[p..]).map(|n| f(&spill[p..p + n]));
    spill.truncate(p);
    r
}

/// Values up to this many bytes are scanned for triggers without the automaton.
const SHORT_VALUE: usize = 64;

/// Position of the next ASCII digit at or after `i`. Processes 8 bytes per
/// step with a SWAR "has byte in range" test (exact for ASCII-range bounds),
/// which keeps the digit prefilter close to memchr speed on text.
#[inline]
fn next_digit(b: &[u8], mut i: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const M: u64 = 0x2F; // exclusive lower bound ('0' - 1)
    const N: u64 = 0x3A; // exclusive upper bound ('9' + 1)
    while i + 8 <= b.len() {
        let x = u64::from_le_bytes(b[i..i + 8].try_into().expect("8-byte slice"));
        let low7 = x & (LO * 127);
        let t = ((LO * (127 + N)).wrapping_sub(low7)) & !x & (low7 + LO * (127 - M)) & HI;
        if t != 0 {
            return Some(i + (t.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b[i..].iter().position(u8::is_ascii_digit).map(|p| i + p)
}

#[cfg(test)]
mod tests;

/// A masker with `detectors`, all using `strategy` (and a test key), for unit tests.
#[cfg(test)]
pub(crate) fn test_masker(detectors: &[Detector], strategy: Strategy) -> Masker {
    Masker::new(MaskerConfig {
        detectors: detectors
            .iter()
            .map(|d| DetectorConfig::new(d.clone(), strategy.clone()))
            .collect(),
        token_key: Some(b"test-key".to_vec()),
    })
    .expect("valid test masker")
}
