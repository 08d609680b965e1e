//! Masking rules: which result values each session sees redacted, tokenized or nulled.
//!
//! Protocol-agnostic on purpose: an adapter describes a result column (its output name and,
//! where the protocol can tell, the schema, table and attribute it comes from) and asks
//! [`SessionMasking::column`] what to do with its values; the value transforms themselves
//! live in `ward-mask`. Rules are chosen once per session (identity, groups, target) and
//! again whenever the configuration is reloaded, so a data path never matches identities
//! per row.
//!
//! Two kinds of protection combine, because neither is enough alone:
//! * **column rules** (`columns:`) cover a column whatever it holds, including values no
//!   detector could recognise (a free-text `notes`, a password hash);
//! * **content detectors** (`detectors:`) find sensitive values wherever they appear —
//!   inside expressions, casts, aggregates, JSON documents, COPY output and error messages —
//!   which is where column rules are blind (`upper(email)`, `row_to_json(t)`).

use crate::policy::glob;
use crate::secret::SecretRef;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use ward_mask::{
    CustomDetector, Detector, DetectorConfig, JsonKeys, Masker, MaskerConfig, Strategy, Validator,
};

/// The `masking:` section of ward.yaml.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskingConfig {
    /// Secret key for `strategy: tokenize` (`env:NAME` or `file:PATH`). Required when any
    /// rule tokenizes: without a secret, tokens could be reversed by hashing guesses.
    pub token_key: Option<SecretRef>,
    /// User-defined detectors, referenced by name from rules like the built-in ones.
    #[serde(default)]
    pub detectors: Vec<CustomDetectorConfig>,
    #[serde(default)]
    pub rules: Vec<MaskRuleConfig>,
}

/// A regex detector of the user's own (`masking.detectors`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CustomDetectorConfig {
    pub name: String,
    /// Rust `regex` syntax, matched against the raw bytes of each value.
    pub pattern: String,
    /// Extra check on each match, to avoid false positives.
    #[serde(default)]
    pub validator: ValidatorName,
}

/// Checks a custom detector can apply to its matches.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValidatorName {
    #[default]
    None,
    Luhn,
    Mod97,
}

/// How masked values are rewritten.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    /// Format-preserving partial mask (last four card digits, an email's first letter and
    /// top-level domain).
    #[default]
    Redact,
    /// Deterministic keyed token (`tok_…`): equal inputs give equal tokens, so joins and
    /// grouping still work.
    Tokenize,
    /// The value becomes NULL.
    Null,
    /// The value (or matched span) becomes the rule's `fixed` text.
    Fixed,
}

/// `detectors: all` or a list of detector names.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum DetectorSelection {
    Keyword(String),
    List(Vec<String>),
}

/// `scan: all` or a list of column patterns where content detection runs.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ScanScope {
    Keyword(String),
    Columns(Vec<String>),
}

/// One masking rule.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaskRuleConfig {
    pub name: String,
    /// Target names (globs) or `label=value`; every target when empty.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Identity globs the rule applies to; everyone when empty.
    #[serde(default)]
    pub identities: Vec<String>,
    /// The rule applies only to members of one of these groups; no constraint when empty.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Who sees clear values despite the rule: identity globs, or `group:NAME`.
    #[serde(default)]
    pub unmask_for: Vec<String>,
    /// Columns masked whatever they hold: `column`, `table.column` or
    /// `schema.table.column`, each part a glob.
    #[serde(default)]
    pub columns: Vec<String>,
    /// Content detectors: `all`, or names (`email`, `payment_card`, `iban`, `us_ssn`,
    /// `phone`, `ipv4`, `ipv6`, `jwt`, `aws_access_key`, `pem_private_key`, or a custom one).
    pub detectors: Option<DetectorSelection>,
    /// Where the detectors run: `all` (default) or column patterns.
    pub scan: Option<ScanScope>,
    /// JSON member names (globs, case-insensitive) whose values are masked inside JSON
    /// documents. Names of the rule's columns are added automatically, so `row_to_json(t)`
    /// does not reveal a masked column.
    #[serde(default)]
    pub json_keys: Vec<String>,
    #[serde(default)]
    pub strategy: StrategyName,
    /// The replacement text for `strategy: fixed`.
    pub fixed: Option<String>,
}

/// A masking configuration that cannot work, phrased for the person editing the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("masking: {0}")]
pub struct MaskingError(pub String);

const BUILTIN_DETECTORS: [&str; 10] = [
    "email",
    "payment_card",
    "iban",
    "us_ssn",
    "phone",
    "ipv4",
    "ipv6",
    "jwt",
    "aws_access_key",
    "pem_private_key",
];

/// A column pattern split into its parts (`schema.table.column`, any prefix optional).
#[derive(Debug, Clone)]
struct ColumnPattern {
    schema: Option<String>,
    table: Option<String>,
    column: String,
}

impl ColumnPattern {
    fn parse(text: &str) -> Result<ColumnPattern, String> {
        let lower = text.to_ascii_lowercase();
        let parts: Vec<&str> = lower.split('.').collect();
        if parts.iter().any(|p| p.is_empty()) || parts.len() > 3 {
            return Err(format!(
                "column pattern {text:?} must be `column`, `table.column` or `schema.table.column`"
            ));
        }
        let (schema, table, column) = match parts.as_slice() {
            [c] => (None, None, *c),
            [t, c] => (None, Some(*t), *c),
            [s, t, c] => (Some(*s), Some(*t), *c),
            _ => unreachable!("length checked"),
        };
        Ok(ColumnPattern {
            schema: schema.filter(|s| *s != "*").map(str::to_string),
            table: table.filter(|t| *t != "*").map(str::to_string),
            column: column.to_string(),
        })
    }

    /// Whether the pattern needs to know the column's table to decide.
    fn needs_table(&self) -> bool {
        self.schema.is_some() || self.table.is_some()
    }

    fn matches(&self, column: &ColumnRef<'_>) -> bool {
        let name_matches = |name: &str| glob(&self.column, &name.to_ascii_lowercase());
        let names = [Some(column.name), column.attribute];
        if !names.into_iter().flatten().any(name_matches) {
            return false;
        }
        if !self.needs_table() {
            return true;
        }
        match column.origin {
            // Computed values have no table; a table-qualified pattern cannot claim them.
            Origin::Computed => false,
            // The table exists but could not be named: err towards masking.
            Origin::Unresolved => true,
            Origin::Table { schema, table } => {
                self.schema
                    .as_deref()
                    .is_none_or(|s| glob(s, &schema.to_ascii_lowercase()))
                    && self
                        .table
                        .as_deref()
                        .is_none_or(|t| glob(t, &table.to_ascii_lowercase()))
            }
        }
    }
}

/// Where a result column's values come from, as far as the adapter can tell.
#[derive(Debug, Clone, Copy)]
pub enum Origin<'a> {
    /// A table column, named through the target's catalog.
    Table { schema: &'a str, table: &'a str },
    /// A table column whose table could not be named (catalog unavailable).
    Unresolved,
    /// An expression, not a stored column.
    Computed,
}

/// A result column as the adapter describes it.
#[derive(Debug, Clone, Copy)]
pub struct ColumnRef<'a> {
    /// The output name (possibly an alias).
    pub name: &'a str,
    /// The stored attribute's own name when known (differs from `name` under an alias).
    pub attribute: Option<&'a str>,
    pub origin: Origin<'a>,
}

/// A rule compiled for matching.
#[derive(Debug)]
struct CompiledRule {
    config: MaskRuleConfig,
    strategy: Strategy,
    columns: Vec<ColumnPattern>,
    detectors: Vec<Detector>,
    scan: Option<Vec<ColumnPattern>>,
}

/// All masking rules, compiled. Cheap to share; replaced whole on reload.
#[derive(Debug, Default)]
pub struct Masking {
    rules: Vec<CompiledRule>,
    token_key: Option<Vec<u8>>,
}

/// Who is asking, for choosing rules.
#[derive(Debug, Clone, Copy)]
pub struct MaskSubject<'a> {
    pub identity: &'a str,
    pub groups: &'a [String],
    pub target: &'a str,
    pub target_labels: &'a BTreeMap<String, String>,
}

impl Masking {
    /// Compiles `config`, reading the token key now so a missing secret stops the start.
    pub fn new(config: &MaskingConfig) -> Result<Masking, MaskingError> {
        let token_key = match &config.token_key {
            Some(r) => Some(
                r.resolve()
                    .map_err(|e| MaskingError(format!("token_key: {e}")))?
                    .expose()
                    .as_bytes()
                    .to_vec(),
            ),
            None => None,
        };
        Self::with_key(config, token_key)
    }

    /// As [`Masking::new`] with the key already read (tests, reload checks).
    pub fn with_key(
        config: &MaskingConfig,
        token_key: Option<Vec<u8>>,
    ) -> Result<Masking, MaskingError> {
        let mut customs: HashMap<&str, &CustomDetectorConfig> = HashMap::new();
        for d in &config.detectors {
            if BUILTIN_DETECTORS.contains(&d.name.as_str()) {
                return Err(MaskingError(format!(
                    "detector name {:?} is a built-in detector's; pick another name",
                    d.name
                )));
            }
            Masker::new(MaskerConfig {
                detectors: vec![DetectorConfig::new(
                    detector_named(&d.name, &HashMap::from([(d.name.as_str(), d)]))
                        .expect("a custom detector names itself"),
                    Strategy::Redact,
                )],
                token_key: None,
            })
            .map_err(|e| MaskingError(format!("detectors.{}: {e}", d.name)))?;
            if customs.insert(&d.name, d).is_some() {
                return Err(MaskingError(format!(
                    "detector {:?} is defined twice",
                    d.name
                )));
            }
        }
        let mut rules = Vec::new();
        let mut names = std::collections::HashSet::new();
        for rule in &config.rules {
            let at = |msg: String| MaskingError(format!("rule {:?}: {msg}", rule.name));
            if rule.name.is_empty() {
                return Err(MaskingError("every rule needs a name".into()));
            }
            if !names.insert(rule.name.clone()) {
                return Err(at("two rules have this name".into()));
            }
            let strategy = match rule.strategy {
                StrategyName::Redact => Strategy::Redact,
                StrategyName::Tokenize => {
                    if token_key.as_ref().is_none_or(|k| k.is_empty()) {
                        return Err(at(
                            "strategy tokenize needs masking.token_key (e.g. token_key: env:WARD_MASK_KEY) so tokens cannot be reversed by guessing".into(),
                        ));
                    }
                    Strategy::Tokenize
                }
                StrategyName::Null => Strategy::Null,
                StrategyName::Fixed => Strategy::Fixed(rule.fixed.clone().ok_or_else(|| {
                    at("strategy fixed needs `fixed:` (the replacement text)".into())
                })?),
            };
            if rule.fixed.is_some() && rule.strategy != StrategyName::Fixed {
                return Err(at("`fixed:` is only used with strategy: fixed".into()));
            }
            let columns = rule
                .columns
                .iter()
                .map(|c| ColumnPattern::parse(c))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let names: Vec<String> = match &rule.detectors {
                None => Vec::new(),
                Some(DetectorSelection::Keyword(k)) if k == "all" => {
                    BUILTIN_DETECTORS.iter().map(|s| s.to_string()).collect()
                }
                Some(DetectorSelection::Keyword(k)) => vec![k.clone()],
                Some(DetectorSelection::List(list)) => list.clone(),
            };
            let mut detectors = Vec::new();
            for name in &names {
                detectors.push(detector_named(name, &customs).ok_or_else(|| {
                    at(format!(
                        "unknown detector {name:?}; built-in: {}, or define it under masking.detectors",
                        BUILTIN_DETECTORS.join(", ")
                    ))
                })?);
            }
            let scan = match &rule.scan {
                None => None,
                Some(ScanScope::Keyword(k)) if k == "all" => None,
                Some(ScanScope::Keyword(k)) => {
                    return Err(at(format!(
                        "scan: {k:?} must be `all` or a list of column patterns"
                    )));
                }
                Some(ScanScope::Columns(list)) => Some(
                    list.iter()
                        .map(|c| ColumnPattern::parse(c))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(at)?,
                ),
            };
            if columns.is_empty() && detectors.is_empty() && rule.json_keys.is_empty() {
                return Err(at(
                    "say what to mask: `columns`, `detectors` and/or `json_keys`".into(),
                ));
            }
            if scan.is_some() && detectors.is_empty() {
                return Err(at(
                    "`scan` limits where detectors run, but the rule has no detectors".into(),
                ));
            }
            rules.push(CompiledRule {
                config: rule.clone(),
                strategy,
                columns,
                detectors,
                scan,
            });
        }
        let masking = Masking { rules, token_key };
        // Build every rule's masker once now, so a bad combination fails at load, not on
        // the first result.
        for i in 0..masking.rules.len() {
            masking.build_masker(&[i]).map_err(MaskingError)?;
        }
        Ok(masking)
    }

    /// True when no rule is configured (the data path then skips masking entirely).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rules that apply to one session, or `None` when none does.
    pub fn for_session(self: &Arc<Self>, subject: &MaskSubject<'_>) -> Option<Arc<SessionMasking>> {
        let applicable: Vec<usize> = self
            .rules
            .iter()
            .enumerate()
            .filter(|(_, r)| applies(&r.config, subject))
            .map(|(i, _)| i)
            .collect();
        if applicable.is_empty() {
            return None;
        }
        let mut json_keys = Vec::new();
        for &i in &applicable {
            let rule = &self.rules[i];
            for key in &rule.config.json_keys {
                json_keys.push((key.clone(), rule.strategy.clone()));
            }
            for c in &rule.columns {
                json_keys.push((c.column.clone(), rule.strategy.clone()));
            }
        }
        let content_rules: Vec<usize> = applicable
            .iter()
            .copied()
            .filter(|&i| !self.rules[i].detectors.is_empty())
            .collect();
        let everywhere = self
            .build_masker(&content_rules)
            .expect("every rule's masker was built at load");
        Some(Arc::new(SessionMasking {
            masking: self.clone(),
            names: applicable
                .iter()
                .map(|&i| self.rules[i].config.name.clone())
                .collect(),
            applicable,
            json_keys: Arc::new(JsonKeys::new(json_keys)),
            everywhere: Arc::new(everywhere),
            maskers: Mutex::new(HashMap::new()),
        }))
    }

    /// One masker combining the detectors of `rules` (the first rule naming a detector
    /// gives its strategy).
    fn build_masker(&self, rules: &[usize]) -> Result<Masker, String> {
        let mut seen = std::collections::HashSet::new();
        let mut detectors = Vec::new();
        for &i in rules {
            let rule = &self.rules[i];
            for d in &rule.detectors {
                if seen.insert(d.name().to_string()) {
                    detectors.push(DetectorConfig::new(d.clone(), rule.strategy.clone()));
                }
            }
        }
        Masker::new(MaskerConfig {
            detectors,
            token_key: self.token_key.clone(),
        })
        .map_err(|e| e.to_string())
    }
}

fn detector_named(name: &str, customs: &HashMap<&str, &CustomDetectorConfig>) -> Option<Detector> {
    Some(match name {
        "email" => Detector::Email,
        "payment_card" => Detector::PaymentCard,
        "iban" => Detector::Iban,
        "us_ssn" => Detector::UsSsn,
        "phone" => Detector::Phone,
        "ipv4" => Detector::Ipv4,
        "ipv6" => Detector::Ipv6,
        "jwt" => Detector::Jwt,
        "aws_access_key" => Detector::AwsAccessKey,
        "pem_private_key" => Detector::PemPrivateKey,
        other => {
            let c = customs.get(other)?;
            Detector::Custom(CustomDetector {
                name: c.name.clone(),
                pattern: c.pattern.clone(),
                validator: match c.validator {
                    ValidatorName::None => Validator::None,
                    ValidatorName::Luhn => Validator::Luhn,
                    ValidatorName::Mod97 => Validator::Mod97,
                },
            })
        }
    })
}

fn applies(rule: &MaskRuleConfig, s: &MaskSubject<'_>) -> bool {
    let target_ok = rule.targets.is_empty()
        || rule.targets.iter().any(|t| match t.split_once('=') {
            Some((k, v)) => s.target_labels.get(k).is_some_and(|l| glob(v, l)),
            None => glob(t, s.target),
        });
    let identity_ok =
        rule.identities.is_empty() || rule.identities.iter().any(|g| glob(g, s.identity));
    let group_ok = rule.groups.is_empty() || rule.groups.iter().any(|g| s.groups.contains(g));
    let exempt = rule
        .unmask_for
        .iter()
        .any(|u| match u.strip_prefix("group:") {
            Some(group) => s.groups.iter().any(|g| g == group),
            None => glob(u, s.identity),
        });
    target_ok && identity_ok && group_ok && !exempt
}

/// What to do with one result column's values.
#[derive(Debug, Clone, Default)]
pub struct ColumnMask {
    /// A column rule covers it: every value gets this strategy.
    pub whole: Option<Strategy>,
    /// Content detection to run on its values (`None`: none applies to this column).
    pub content: Option<Arc<Masker>>,
}

impl ColumnMask {
    /// True when values pass untouched.
    pub fn is_clear(&self) -> bool {
        self.whole.is_none() && self.content.is_none()
    }
}

/// The masking rules in force for one session.
#[derive(Debug)]
pub struct SessionMasking {
    masking: Arc<Masking>,
    applicable: Vec<usize>,
    names: Vec<String>,
    json_keys: Arc<JsonKeys>,
    /// Every applicable detector, for values not tied to a column (errors, notices,
    /// notifications, COPY rows).
    everywhere: Arc<Masker>,
    /// Maskers per set of content rules (bit i = the i-th applicable rule), built on demand.
    maskers: Mutex<HashMap<u64, Arc<Masker>>>,
}

impl SessionMasking {
    /// Names of the rules in force, for the session's audit record.
    pub fn rule_names(&self) -> &[String] {
        &self.names
    }

    /// True when some rule masks by column, so the adapter should name result columns'
    /// tables (through the target's catalog) before deciding.
    pub fn has_column_rules(&self) -> bool {
        self.applicable
            .iter()
            .any(|&i| !self.masking.rules[i].columns.is_empty())
    }

    /// The masker for values that belong to no column (and for the audit's copy of
    /// statements and errors).
    pub fn everywhere(&self) -> &Arc<Masker> {
        &self.everywhere
    }

    /// Member names masked inside JSON documents.
    pub fn json_keys(&self) -> &Arc<JsonKeys> {
        &self.json_keys
    }

    /// Decides how `column`'s values are masked: the first column rule (in file order) that
    /// names it gives the whole-value strategy; the detectors of every rule whose scan scope
    /// covers it run on its content.
    pub fn column(&self, column: &ColumnRef<'_>) -> ColumnMask {
        let rules = &self.masking.rules;
        let whole = self
            .applicable
            .iter()
            .map(|&i| &rules[i])
            .find(|r| r.columns.iter().any(|p| p.matches(column)))
            .map(|r| r.strategy.clone());
        let mut bits = 0u64;
        for (bit, &i) in self.applicable.iter().enumerate().take(64) {
            let r = &rules[i];
            if !r.detectors.is_empty()
                && r.scan
                    .as_ref()
                    .is_none_or(|scope| scope.iter().any(|p| p.matches(column)))
            {
                bits |= 1 << bit;
            }
        }
        let content = (bits != 0).then(|| self.masker_for(bits));
        ColumnMask { whole, content }
    }

    /// The strategy for a computed result value (one with no table of origin) of a
    /// statement whose results are computed from `refs` (column names, `*` for a whole
    /// row): the first column rule naming one of them, so `reverse(email)` or
    /// `string_agg(notes, ',')` stay masked even where no detector could recognise the
    /// transformed value. Errs towards masking: a computed value of such a statement is
    /// masked even if it does not itself use the masked column.
    pub fn derived(&self, refs: &[String]) -> Option<Strategy> {
        let rules = &self.masking.rules;
        refs.iter().find_map(|name| {
            if name.starts_with('*') && name != "*" {
                // `*t`: names which relation a whole-row reference is; `*` covers it.
                None
            } else if name == "*" {
                self.applicable
                    .iter()
                    .map(|&i| &rules[i])
                    .find(|r| !r.columns.is_empty())
                    .map(|r| r.strategy.clone())
            } else {
                self.column(&ColumnRef {
                    name,
                    attribute: None,
                    origin: Origin::Unresolved,
                })
                .whole
            }
        })
    }

    fn masker_for(&self, bits: u64) -> Arc<Masker> {
        let all = self
            .applicable
            .iter()
            .enumerate()
            .filter(|(_, i)| !self.masking.rules[**i].detectors.is_empty())
            .fold(
                0u64,
                |acc, (bit, _)| if bit < 64 { acc | 1 << bit } else { acc },
            );
        if bits == all {
            return self.everywhere.clone();
        }
        let mut cache = self.maskers.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .entry(bits)
            .or_insert_with(|| {
                let rules: Vec<usize> = self
                    .applicable
                    .iter()
                    .enumerate()
                    .filter(|(bit, _)| *bit < 64 && bits & (1 << bit) != 0)
                    .map(|(_, &i)| i)
                    .collect();
                Arc::new(
                    self.masking
                        .build_masker(&rules)
                        .expect("every rule's masker was built at load"),
                )
            })
            .clone()
    }
}

#[cfg(test)]
mod tests;
