//! Policy: which commands an identity may run on a target, and what happens to the others.
//!
//! Rules come from `ward.yaml`. Each rule matches on who (identity globs, groups), where
//! (target names/globs or `label=value`), which protocol, and what the command does (its
//! kinds, the tables it reads or writes, the functions it calls, flags such as an UPDATE
//! without WHERE). Adapters describe each command as [`CommandInfo`] — the PostgreSQL
//! adapter derives it from PostgreSQL's own grammar — and ask [`Policy::decide`].
//!
//! Precedence is fixed and documented: **deny > review > allow**. `log` rules never change
//! the decision; they are only named in the audit. When no deny/review/allow rule matches,
//! the target's default action applies (`allow` unless configured). Procedural code (DO,
//! CALL, CREATE FUNCTION/PROCEDURE/TRIGGER/RULE, COPY … PROGRAM, fast-path function calls)
//! cannot be seen through, so it is denied unless an allow rule names it. Input the parser
//! rejects is denied unless `policy.unparseable: allow`.

use crate::approvals::OnTimeout;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::time::Duration;

/// What a rule does when it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Record the rule's name in the audit; no effect on the decision.
    Log,
    Allow,
    /// Hold the command until enough approvers approve it.
    Review,
    Deny,
}

/// Flags a command can carry, for rules to match.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flag {
    /// An UPDATE or DELETE without a WHERE clause.
    NoWhere,
    /// Procedural code whose effects ward cannot see (DO, CALL, function bodies, COPY PROGRAM).
    Procedural,
    /// A COPY that runs a program on the database server.
    CopyProgram,
}

/// One rule as written in ward.yaml.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    /// Identity name globs (`ci-*`); any identity when absent.
    #[serde(default)]
    pub identities: Vec<String>,
    /// Groups; the rule matches identities in any of them. Any groups when absent.
    #[serde(default)]
    pub groups: Vec<String>,
    /// Target name globs or `label=value` selectors; any target when absent.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Protocols (`postgres`, later `ssh`, `mysql`, …); any when absent.
    #[serde(default)]
    pub protocols: Vec<String>,
    /// Statement kinds: select, insert, update, delete, merge, create, alter, drop,
    /// truncate, grant, revoke, copy, call, do, set, transaction, explain, prepare,
    /// execute, function_call, other. Any when absent.
    #[serde(default)]
    pub statements: Vec<String>,
    /// Schema-qualified table globs (`public.orders`, `*.users`, `audit.*`); the rule
    /// matches commands touching any of them (see `access`). Any when absent.
    #[serde(default)]
    pub tables: Vec<String>,
    /// With `tables`: `read`, `write` or `any` (default) access to them.
    #[serde(default)]
    pub access: Access,
    /// Function name globs (`pg_terminate_backend`, `dblink*`).
    #[serde(default)]
    pub functions: Vec<String>,
    /// Flags the command must all carry (e.g. `[no_where]`).
    #[serde(default)]
    pub flags: Vec<Flag>,
    /// SSH exec command lines: `re:REGEX` (searched in the whole line), a glob with `*` or
    /// `?` or a space (`rm *`, matched against the whole line and each part between shell
    /// operators), or a bare program name (`rm`, matched against each part's first word and
    /// its basename). Commands without a command line (SQL, shells) never match. See
    /// [`CommandPattern`].
    #[serde(default)]
    pub commands: Vec<String>,
    /// File paths of SFTP operations: `re:REGEX`, or a glob where `*` and `?` stay within
    /// one path component and `**` crosses `/` (`/etc/**` is everything under /etc, `/etc/*`
    /// its direct entries), or an exact path. Paths are absolute and normalised by the
    /// adapter. Commands without paths (SQL, exec, shells) never match. See [`PathPattern`].
    #[serde(default)]
    pub paths: Vec<String>,
    pub action: Action,
    /// Shown to the client when the rule denies.
    pub message: Option<String>,
    /// For `review`: who may approve (identity names or `group:NAME`).
    #[serde(default)]
    pub approvers: Vec<String>,
    /// For `review`: how many distinct approvals are needed (default 1).
    #[serde(default = "one")]
    pub approvals: u32,
    /// For `review`: how long to wait (default 5m).
    #[serde(default = "default_review_timeout", with = "duration_text")]
    pub timeout: Duration,
    /// For `review`: what a timeout means (default deny).
    #[serde(default)]
    pub on_timeout: OnTimeout,
    /// Result rows kept in the audit for statements this rule matches, overriding
    /// `audit.capture.rows` (0 switches capture off for them).
    #[serde(default)]
    pub capture_rows: Option<usize>,
    /// Bytes of result values kept for statements this rule matches, overriding
    /// `audit.capture.bytes`.
    #[serde(default)]
    pub capture_bytes: Option<usize>,
}

fn one() -> u32 {
    1
}

fn default_review_timeout() -> Duration {
    Duration::from_secs(300)
}

/// Which access to `tables` a rule is about.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    #[default]
    Any,
    Read,
    Write,
}

/// Policy-wide settings (`policy:` in ward.yaml).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// What happens when no allow/deny/review rule matches (per-target override:
    /// `targets.NAME.default_action`). Default `allow`.
    #[serde(default = "default_allow")]
    pub default_action: Action,
    /// Input the parser rejects: `deny` (default) or `allow` (the server will reject it too).
    #[serde(default = "default_deny")]
    pub unparseable: Action,
    /// Procedural commands not allowed by a rule: `deny` (default) or `allow`.
    #[serde(default = "default_deny")]
    pub procedural: Action,
}

fn default_allow() -> Action {
    Action::Allow
}

fn default_deny() -> Action {
    Action::Deny
}

impl Default for PolicyConfig {
    fn default() -> Self {
        PolicyConfig {
            default_action: Action::Allow,
            unparseable: Action::Deny,
            procedural: Action::Deny,
        }
    }
}

/// What one command does, as the adapter understood it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandInfo {
    /// Every kind the command has: the top-level one first, then nested ones (a DELETE in a
    /// CTE, the statement inside EXPLAIN ANALYZE or PREPARE).
    pub kinds: Vec<&'static str>,
    /// Tables read, as written (`orders` or `public.orders`).
    pub tables_read: Vec<String>,
    /// Tables written (DML targets, DDL objects).
    pub tables_written: Vec<String>,
    pub functions: Vec<String>,
    pub flags: Vec<Flag>,
    /// Column names referenced where results are computed (select lists, RETURNING), and
    /// `*` for a whole-row reference (`row_to_json(t)`). Masking uses them to protect
    /// computed values derived from a masked column (`reverse(email)`), which carry no
    /// table of origin in the result.
    pub output_columns: Vec<String>,
    /// For a plain top-level SELECT without `*`, the references of each select-list entry in
    /// order (result column i is computed from `select_list[i]`), so a computed column that
    /// uses no masked column is left alone; `None` when columns cannot be told apart.
    pub select_list: Option<Vec<Vec<String>>>,
    /// References in select lists below the top level (CTEs, subqueries), through which an
    /// alias can carry a masked column into a top-level expression.
    pub nested_columns: Vec<String>,
    /// The command line of an SSH exec request, for `commands` rules; `None` for everything
    /// else.
    pub command_line: Option<String>,
    /// The absolute, normalised paths of an SFTP file operation (both for a rename), for
    /// `paths` rules; empty for everything else.
    pub paths: Vec<String>,
}

impl CommandInfo {
    pub fn is_procedural(&self) -> bool {
        self.flags.contains(&Flag::Procedural)
    }
}

/// Who is asking, and where.
#[derive(Clone, Copy, Debug)]
pub struct Subject<'a> {
    pub identity: &'a str,
    pub groups: &'a [String],
    pub target: &'a str,
    pub target_labels: &'a BTreeMap<String, String>,
    pub protocol: &'a str,
}

/// The decision about a command (or a whole message of several).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Allow,
    Deny { rule: String, message: String },
    Review(Review),
}

/// A `review` decision: what the approval request needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Review {
    pub rule: String,
    pub approvers: Vec<String>,
    pub approvals: u32,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

/// A decision plus the names of every rule that matched (for the audit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    pub matched: Vec<String>,
    /// Result capture caps set by the matched rules (of any action, `log` included).
    pub capture: CaptureOverride,
}

/// Result capture caps that matched rules set for a command (`capture_rows`,
/// `capture_bytes`). When several matched rules set one, the smallest wins, so a rule that
/// switches capture off (`capture_rows: 0`) cannot be overridden by a broader rule.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CaptureOverride {
    pub rows: Option<usize>,
    pub bytes: Option<usize>,
}

impl CaptureOverride {
    fn merge(&mut self, rows: Option<usize>, bytes: Option<usize>) {
        fn smallest(a: Option<usize>, b: Option<usize>) -> Option<usize> {
            match (a, b) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        }
        self.rows = smallest(self.rows, rows);
        self.bytes = smallest(self.bytes, bytes);
    }
}

impl Verdict {
    fn allow() -> Self {
        Verdict {
            decision: Decision::Allow,
            matched: Vec::new(),
            capture: CaptureOverride::default(),
        }
    }

    /// `allowed`, `denied` or `review`, for the audit.
    pub fn label(&self) -> &'static str {
        match self.decision {
            Decision::Allow => "allowed",
            Decision::Deny { .. } => "denied",
            Decision::Review(_) => "review",
        }
    }

    /// The rule that decided, if a rule did.
    pub fn rule(&self) -> Option<&str> {
        match &self.decision {
            Decision::Allow => None,
            Decision::Deny { rule, .. } => Some(rule),
            Decision::Review(r) => Some(&r.rule),
        }
    }

    fn rank(&self) -> u8 {
        match self.decision {
            Decision::Allow => 0,
            Decision::Review(_) => 1,
            Decision::Deny { .. } => 2,
        }
    }
}

/// The compiled rule set.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    rules: Vec<RuleConfig>,
    settings: PolicyConfig,
    /// Per-target default actions.
    target_defaults: BTreeMap<String, Action>,
    /// Whether any rule sets `capture_rows` or `capture_bytes`.
    captures: bool,
    /// Each rule's compiled `commands`, by rule index.
    command_patterns: Vec<Vec<CommandPattern>>,
    /// Each rule's compiled `paths`, by rule index.
    path_patterns: Vec<Vec<PathPattern>>,
}

/// One entry of a rule's `paths`, compiled.
///
/// Paths are compared as text: ward sees the path the client named (made absolute against
/// the session's working directory and with `.`/`..` removed), not what it resolves to on
/// the host, so a symbolic link there is not seen through.
#[derive(Clone, Debug)]
pub enum PathPattern {
    /// `re:…`, searched anywhere in the path.
    Regex(regex::Regex),
    /// A glob: `*` and `?` within one component, `**` across components.
    Glob(String),
}

impl PathPattern {
    /// Compiles one `paths` entry.
    pub fn parse(text: &str) -> Result<PathPattern, String> {
        if let Some(re) = text.strip_prefix("re:") {
            return regex::Regex::new(re)
                .map(PathPattern::Regex)
                .map_err(|e| format!("paths: {text:?} is not a valid regular expression: {e}"));
        }
        if !text.starts_with('/') {
            return Err(format!(
                "paths: {text:?} must be an absolute path or glob (starting with /) or re:REGEX"
            ));
        }
        Ok(PathPattern::Glob(text.to_string()))
    }

    /// Whether the path matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Regex(re) => re.is_match(path),
            PathPattern::Glob(g) => path_glob(g.as_bytes(), path.as_bytes()),
        }
    }
}

/// Path globs: `**` matches anything (also `/`), `*` and `?` anything but `/`.
fn path_glob(p: &[u8], t: &[u8]) -> bool {
    match p.first() {
        None => t.is_empty(),
        Some(b'*') if p.get(1) == Some(&b'*') => {
            let rest = &p[2..];
            (0..=t.len()).any(|i| path_glob(rest, &t[i..]))
        }
        Some(b'*') => {
            let rest = &p[1..];
            for i in 0..=t.len() {
                if path_glob(rest, &t[i..]) {
                    return true;
                }
                if t.get(i) == Some(&b'/') {
                    break;
                }
            }
            false
        }
        Some(b'?') => t.first().is_some_and(|c| *c != b'/') && path_glob(&p[1..], &t[1..]),
        Some(c) => t.first() == Some(c) && path_glob(&p[1..], &t[1..]),
    }
}

/// One entry of a rule's `commands`, compiled.
///
/// Matching a shell command line is best effort: ward sees the text the client asked the
/// target's shell to run, not what the shell will make of it (variables, aliases, quoting,
/// scripts). That is why globs and names are also tried on each part between shell
/// operators (`;`, `&`, `|`, newlines, parentheses, backquotes, `$(`), so `true; rm -rf x`
/// still meets a rule on `rm`; for a hard boundary, deny by default and allow what is known.
#[derive(Clone, Debug)]
pub enum CommandPattern {
    /// `re:…`, searched anywhere in the whole command line.
    Regex(regex::Regex),
    /// A glob on the whole line or on one of its parts.
    Glob(String),
    /// A program name: the first word of a part, or that word's basename (`/bin/rm`).
    Program(String),
}

impl CommandPattern {
    /// Compiles one `commands` entry.
    pub fn parse(text: &str) -> Result<CommandPattern, String> {
        if let Some(re) = text.strip_prefix("re:") {
            return regex::Regex::new(re)
                .map(CommandPattern::Regex)
                .map_err(|e| format!("commands: {text:?} is not a valid regular expression: {e}"));
        }
        let text = text.trim();
        if text.is_empty() {
            return Err("commands: an empty pattern would match nothing; remove it".into());
        }
        if text.contains(['*', '?', ' ', '\t']) {
            Ok(CommandPattern::Glob(text.to_string()))
        } else {
            Ok(CommandPattern::Program(text.to_string()))
        }
    }

    /// Whether the command line matches.
    pub fn matches(&self, line: &str) -> bool {
        match self {
            CommandPattern::Regex(re) => re.is_match(line),
            CommandPattern::Glob(g) => {
                glob(g, line.trim()) || command_parts(line).any(|part| glob(g, part))
            }
            CommandPattern::Program(name) => command_parts(line).any(|part| {
                let first = part.split_whitespace().next().unwrap_or("");
                first == name || first.rsplit('/').next() == Some(name.as_str())
            }),
        }
    }
}

/// The parts of a shell command line between control operators, trimmed, without empty
/// ones (`a; b && c | d` → `a`, `b`, `c`, `d`).
fn command_parts(line: &str) -> impl Iterator<Item = &str> {
    line.split([';', '&', '|', '\n', '(', ')', '`'])
        .map(|p| p.trim().trim_start_matches('$').trim())
        .filter(|p| !p.is_empty())
}

/// A rule that cannot work as written.
#[derive(Debug, thiserror::Error)]
#[error("rules[{index}] ({name}): {message}")]
pub struct RuleError {
    pub index: usize,
    pub name: String,
    pub message: String,
}

/// Statement kinds rules may name.
pub const KINDS: &[&str] = &[
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "create",
    "alter",
    "drop",
    "truncate",
    "grant",
    "revoke",
    "copy",
    "call",
    "do",
    "set",
    "show",
    "transaction",
    "explain",
    "prepare",
    "execute",
    "function_call",
    "other",
    // SSH: a command run with `ssh host CMD`, an interactive shell, a subsystem (sftp).
    "exec",
    "shell",
    "subsystem",
    // SSH forwards: `ssh -L` (direct-tcpip), `ssh -R` (tcpip-forward), `ssh -A`. They are
    // refused unless a rule naming the kind in `statements:` allows them (see FORWARD_KINDS).
    "port_forward_local",
    "port_forward_remote",
    "agent_forward",
    // SFTP file operations (with `paths`); `sftp_modify` is every one that changes the host.
    "sftp_read",
    "sftp_write",
    "sftp_remove",
    "sftp_rename",
    "sftp_mkdir",
    "sftp_rmdir",
    "sftp_setstat",
    "sftp_link",
    "sftp_list",
    "sftp_stat",
    "sftp_modify",
];

/// Kinds that are off unless a rule naming them allows them: a forward opens a network
/// path (or hands over the user's keys) that no command line shows, so neither a target's
/// `default_action: allow` nor a broad rule without `statements:` turns them on.
pub const FORWARD_KINDS: &[&str] = &["port_forward_local", "port_forward_remote", "agent_forward"];

fn is_forward(command: &CommandInfo) -> bool {
    command.kinds.iter().any(|k| FORWARD_KINDS.contains(k))
}

impl Policy {
    /// Checks and compiles the rules.
    pub fn new(
        rules: Vec<RuleConfig>,
        settings: PolicyConfig,
        target_defaults: BTreeMap<String, Action>,
    ) -> Result<Policy, RuleError> {
        let mut seen = std::collections::HashSet::new();
        let mut command_patterns = Vec::with_capacity(rules.len());
        let mut path_patterns = Vec::with_capacity(rules.len());
        for (index, rule) in rules.iter().enumerate() {
            let err = |message: String| RuleError {
                index,
                name: rule.name.clone(),
                message,
            };
            if rule.name.is_empty() {
                return Err(err(
                    "every rule needs a name (it is shown to clients and in the audit)".into(),
                ));
            }
            if !seen.insert(rule.name.clone()) {
                return Err(err("another rule has the same name".into()));
            }
            for kind in &rule.statements {
                if !KINDS.contains(&kind.to_ascii_lowercase().as_str()) {
                    return Err(err(format!(
                        "unknown statement kind {kind:?}; known kinds: {}",
                        KINDS.join(", ")
                    )));
                }
            }
            if rule.action == Action::Review && rule.approvals == 0 {
                return Err(err("approvals must be at least 1".into()));
            }
            if rule.action != Action::Review && !rule.approvers.is_empty() {
                return Err(err("approvers only make sense with action: review".into()));
            }
            command_patterns.push(
                rule.commands
                    .iter()
                    .map(|c| CommandPattern::parse(c))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?,
            );
            path_patterns.push(
                rule.paths
                    .iter()
                    .map(|p| PathPattern::parse(p))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(err)?,
            );
        }
        for action in [settings.unparseable, settings.procedural] {
            if !matches!(action, Action::Allow | Action::Deny) {
                return Err(RuleError {
                    index: 0,
                    name: "policy".into(),
                    message: "policy.unparseable and policy.procedural must be allow or deny"
                        .into(),
                });
            }
        }
        let rules: Vec<RuleConfig> = rules
            .into_iter()
            .map(|mut r| {
                r.statements
                    .iter_mut()
                    .for_each(|k| k.make_ascii_lowercase());
                r
            })
            .collect();
        let captures = rules
            .iter()
            .any(|r| r.capture_rows.is_some() || r.capture_bytes.is_some());
        Ok(Policy {
            rules,
            settings,
            target_defaults,
            captures,
            command_patterns,
            path_patterns,
        })
    }

    /// True when some rule sets result capture caps (`capture_rows`, `capture_bytes`).
    pub fn captures(&self) -> bool {
        self.captures
    }

    /// True when no rule could ever change a decision (lets adapters skip classification).
    pub fn is_permissive(&self) -> bool {
        self.rules.is_empty()
            && self.settings.default_action == Action::Allow
            && self.target_defaults.values().all(|a| *a == Action::Allow)
            && self.settings.procedural == Action::Allow
            && self.settings.unparseable == Action::Allow
    }

    /// Decides one message made of `commands` (the strictest decision wins). `None` means
    /// the parser rejected the message.
    pub fn decide(&self, subject: &Subject<'_>, commands: Option<&[CommandInfo]>) -> Verdict {
        let Some(commands) = commands else {
            return match self.settings.unparseable {
                Action::Allow => Verdict::allow(),
                _ => Verdict {
                    decision: Decision::Deny {
                        rule: "policy.unparseable".into(),
                        message:
                            "ward could not parse this statement, and unparseable input is denied"
                                .into(),
                    },
                    matched: Vec::new(),
                    capture: CaptureOverride::default(),
                },
            };
        };
        let mut worst = Verdict::allow();
        let mut matched = Vec::new();
        let mut capture = CaptureOverride::default();
        for command in commands {
            let verdict = self.decide_one(subject, command);
            for name in &verdict.matched {
                if !matched.contains(name) {
                    matched.push(name.clone());
                }
            }
            capture.merge(verdict.capture.rows, verdict.capture.bytes);
            if verdict.rank() > worst.rank() {
                worst = verdict;
            }
        }
        worst.matched = matched;
        worst.capture = capture;
        worst
    }

    fn decide_one(&self, subject: &Subject<'_>, command: &CommandInfo) -> Verdict {
        let mut matched = Vec::new();
        let mut capture = CaptureOverride::default();
        let mut best: Option<&RuleConfig> = None;
        for (index, rule) in self.rules.iter().enumerate() {
            if !self.matches(index, rule, subject, command) {
                continue;
            }
            matched.push(rule.name.clone());
            capture.merge(rule.capture_rows, rule.capture_bytes);
            if rule.action == Action::Log {
                continue;
            }
            if best.is_none_or(|b| rule.action > b.action) {
                best = Some(rule);
            }
        }
        let decision = match best {
            Some(rule) => rule_decision(rule),
            None if is_forward(command) => Decision::Deny {
                rule: "policy.forwarding".into(),
                message: "port and agent forwarding are off unless a rule with statements: [port_forward_local | port_forward_remote | agent_forward] allows them"
                    .into(),
            },
            None if command.is_procedural() && self.settings.procedural == Action::Deny => Decision::Deny {
                rule: "policy.procedural".into(),
                message: "procedural code (DO, CALL, functions, triggers, rules, COPY PROGRAM) cannot be \
                          inspected and is denied unless a rule allows it"
                    .into(),
            },
            None => match self
                .target_defaults
                .get(subject.target)
                .copied()
                .unwrap_or(self.settings.default_action)
            {
                Action::Deny => Decision::Deny {
                    rule: format!("targets.{}.default_action", subject.target),
                    message: "no rule allows this statement on this target".into(),
                },
                _ => Decision::Allow,
            },
        };
        Verdict {
            decision,
            matched,
            capture,
        }
    }

    fn matches(
        &self,
        index: usize,
        rule: &RuleConfig,
        subject: &Subject<'_>,
        command: &CommandInfo,
    ) -> bool {
        if !rule.identities.is_empty() && !rule.identities.iter().any(|g| glob(g, subject.identity))
        {
            return false;
        }
        if !rule.groups.is_empty() && !rule.groups.iter().any(|g| subject.groups.contains(g)) {
            return false;
        }
        if !rule.targets.is_empty() && !rule.targets.iter().any(|t| target_matches(t, subject)) {
            return false;
        }
        if !rule.protocols.is_empty() && !rule.protocols.iter().any(|p| p == subject.protocol) {
            return false;
        }
        // Forwards are matched only by rules that name their kind.
        if rule.statements.is_empty() && is_forward(command) {
            return false;
        }
        if !rule.statements.is_empty()
            && !command
                .kinds
                .iter()
                .any(|k| rule.statements.iter().any(|s| s == k))
        {
            return false;
        }
        if !rule.tables.is_empty() {
            let candidates: Box<dyn Iterator<Item = &String>> = match rule.access {
                Access::Any => Box::new(command.tables_read.iter().chain(&command.tables_written)),
                Access::Read => Box::new(command.tables_read.iter()),
                Access::Write => Box::new(command.tables_written.iter()),
            };
            let mut candidates = candidates;
            if !candidates.any(|t| rule.tables.iter().any(|p| table_matches(p, t))) {
                return false;
            }
        }
        if !rule.functions.is_empty()
            && !command.functions.iter().any(|f| {
                rule.functions
                    .iter()
                    .any(|p| glob(p, f) || glob(p, f.rsplit('.').next().unwrap_or(f)))
            })
        {
            return false;
        }
        if !rule.commands.is_empty() {
            let Some(line) = &command.command_line else {
                return false;
            };
            let patterns = self
                .command_patterns
                .get(index)
                .map_or(&[][..], Vec::as_slice);
            if !patterns.iter().any(|p| p.matches(line)) {
                return false;
            }
        }
        if !rule.paths.is_empty() {
            let patterns = self.path_patterns.get(index).map_or(&[][..], Vec::as_slice);
            if !command
                .paths
                .iter()
                .any(|path| patterns.iter().any(|p| p.matches(path)))
            {
                return false;
            }
        }
        rule.flags.iter().all(|f| command.flags.contains(f))
    }
}

fn rule_decision(rule: &RuleConfig) -> Decision {
    match rule.action {
        Action::Deny => Decision::Deny {
            rule: rule.name.clone(),
            message: rule
                .message
                .clone()
                .unwrap_or_else(|| "this statement is not allowed".into()),
        },
        Action::Review => Decision::Review(Review {
            rule: rule.name.clone(),
            approvers: rule.approvers.clone(),
            approvals: rule.approvals,
            timeout: rule.timeout,
            on_timeout: rule.on_timeout,
        }),
        Action::Allow | Action::Log => Decision::Allow,
    }
}

fn target_matches(pattern: &str, subject: &Subject<'_>) -> bool {
    match pattern.split_once('=') {
        Some((key, value)) => subject
            .target_labels
            .get(key)
            .is_some_and(|v| glob(value, v)),
        None => glob(pattern, subject.target),
    }
}

/// `schema.table` globs against a table as written. An unqualified table matches on its
/// name alone, whatever the pattern's schema: ward does not know the session's search_path,
/// so it errs towards matching (a deny rule on `public.orders` also stops `orders`).
fn table_matches(pattern: &str, table: &str) -> bool {
    let pattern = pattern.to_ascii_lowercase();
    let table = table.to_ascii_lowercase();
    match (pattern.rsplit_once('.'), table.rsplit_once('.')) {
        (Some((ps, pt)), Some((ts, tt))) => glob(ps, ts) && glob(pt, tt),
        (Some((_, pt)), None) => glob(pt, &table),
        (None, Some((_, tt))) => glob(&pattern, tt),
        (None, None) => glob(&pattern, &table),
    }
}

/// Shell-style glob with `*` and `?`, case-sensitive.
pub fn glob(pattern: &str, text: &str) -> bool {
    fn rec(p: &[u8], t: &[u8]) -> bool {
        let (mut pi, mut ti) = (0, 0);
        let (mut star, mut mark) = (None, 0);
        while ti < t.len() {
            if pi < p.len() && (p[pi] == b'?' || p[pi] == t[ti]) {
                pi += 1;
                ti += 1;
            } else if pi < p.len() && p[pi] == b'*' {
                star = Some(pi);
                mark = ti;
                pi += 1;
            } else if let Some(s) = star {
                pi = s + 1;
                mark += 1;
                ti = mark;
            } else {
                return false;
            }
        }
        while pi < p.len() && p[pi] == b'*' {
            pi += 1;
        }
        pi == p.len()
    }
    rec(pattern.as_bytes(), text.as_bytes())
}

/// Durations written like `30s`, `5m`, `2h`.
mod duration_text {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(yaml: &str) -> Policy {
        let rules: Vec<RuleConfig> = serde_yaml::from_str(yaml).unwrap();
        Policy::new(rules, PolicyConfig::default(), BTreeMap::new()).unwrap()
    }

    fn cmd(kinds: &[&'static str]) -> CommandInfo {
        CommandInfo {
            kinds: kinds.to_vec(),
            ..Default::default()
        }
    }

    const NO_LABELS: &BTreeMap<String, String> = &BTreeMap::new();

    fn subject<'a>(identity: &'a str, groups: &'a [String]) -> Subject<'a> {
        Subject {
            identity,
            groups,
            target: "orders-db",
            target_labels: NO_LABELS,
            protocol: "postgres",
        }
    }

    #[test]
    fn deny_beats_review_beats_allow_and_log_only_records() {
        let p = rules(
            "[{name: ok, statements: [delete], action: allow},
              {name: ask, statements: [delete], action: review, approvers: [group:sre]},
              {name: no, statements: [delete], identities: [ci-*], action: deny, message: nope},
              {name: watch, statements: [delete], action: log}]",
        );
        let v = p.decide(&subject("ci-nightly", &[]), Some(&[cmd(&["delete"])]));
        assert_eq!(
            v.decision,
            Decision::Deny {
                rule: "no".into(),
                message: "nope".into()
            }
        );
        assert_eq!(v.matched, ["ok", "ask", "no", "watch"]);
        let v = p.decide(&subject("alice", &[]), Some(&[cmd(&["delete"])]));
        assert!(matches!(v.decision, Decision::Review(ref r) if r.rule == "ask"));
        let v = p.decide(&subject("alice", &[]), Some(&[cmd(&["select"])]));
        assert_eq!(v.decision, Decision::Allow);
    }

    #[test]
    fn strictest_statement_decides_a_multi_statement_message() {
        let p = rules("[{name: no-delete, statements: [delete], action: deny}]");
        let v = p.decide(
            &subject("a", &[]),
            Some(&[cmd(&["select"]), cmd(&["delete"])]),
        );
        assert!(matches!(v.decision, Decision::Deny { ref rule, .. } if rule == "no-delete"));
        // Nested kinds (a DELETE inside a CTE) count.
        let v = p.decide(&subject("a", &[]), Some(&[cmd(&["select", "delete"])]));
        assert!(matches!(v.decision, Decision::Deny { .. }));
    }

    #[test]
    fn procedural_and_unparseable_fail_closed_unless_allowed() {
        let p = rules("[]");
        let mut proc = cmd(&["do"]);
        proc.flags.push(Flag::Procedural);
        assert!(
            matches!(p.decide(&subject("a", &[]), Some(&[proc.clone()])).decision, Decision::Deny { ref rule, .. } if rule == "policy.procedural")
        );
        assert!(
            matches!(p.decide(&subject("a", &[]), None).decision, Decision::Deny { ref rule, .. } if rule == "policy.unparseable")
        );
        let p = rules("[{name: dba-may-do, statements: [do], groups: [dba], action: allow}]");
        let dba = vec!["dba".to_string()];
        assert_eq!(
            p.decide(&subject("a", &dba), Some(&[proc.clone()]))
                .decision,
            Decision::Allow
        );
        assert!(matches!(
            p.decide(&subject("a", &[]), Some(&[proc])).decision,
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn tables_flags_targets_and_defaults() {
        let p = rules(
            "[{name: no-bulk, statements: [update, delete], flags: [no_where], action: deny},
              {name: pii, tables: ['public.customers'], access: read, action: review}]",
        );
        let mut bulk = cmd(&["delete"]);
        assert_eq!(
            p.decide(&subject("a", &[]), Some(&[bulk.clone()])).decision,
            Decision::Allow
        );
        bulk.flags.push(Flag::NoWhere);
        assert!(matches!(
            p.decide(&subject("a", &[]), Some(&[bulk])).decision,
            Decision::Deny { .. }
        ));
        let mut read = cmd(&["select"]);
        read.tables_read.push("customers".into());
        assert!(matches!(
            p.decide(&subject("a", &[]), Some(&[read])).decision,
            Decision::Review(_)
        ));
        let mut write = cmd(&["insert"]);
        write.tables_written.push("public.customers".into());
        assert_eq!(
            p.decide(&subject("a", &[]), Some(&[write])).decision,
            Decision::Allow
        );

        let mut labels = BTreeMap::new();
        labels.insert("env".to_string(), "prod".to_string());
        let rules: Vec<RuleConfig> = serde_yaml::from_str(
            "[{name: prod-ro, targets: [env=prod], statements: [insert], action: deny}]",
        )
        .unwrap();
        let mut defaults = BTreeMap::new();
        defaults.insert("locked-db".to_string(), Action::Deny);
        let p = Policy::new(rules, PolicyConfig::default(), defaults).unwrap();
        let s = Subject {
            identity: "a",
            groups: &[],
            target: "orders-db",
            target_labels: &labels,
            protocol: "postgres",
        };
        assert!(matches!(
            p.decide(&s, Some(&[cmd(&["insert"])])).decision,
            Decision::Deny { .. }
        ));
        let s = Subject {
            target: "locked-db",
            target_labels: NO_LABELS,
            ..s
        };
        assert!(
            matches!(p.decide(&s, Some(&[cmd(&["select"])])).decision, Decision::Deny { ref rule, .. } if rule == "targets.locked-db.default_action")
        );
    }

    #[test]
    fn bad_rules_are_rejected_with_their_position() {
        let rules: Vec<RuleConfig> =
            serde_yaml::from_str("[{name: a, statements: [dleete], action: deny}]").unwrap();
        let err = Policy::new(rules, PolicyConfig::default(), BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("rules[0] (a): unknown statement kind \"dleete\""),
            "{err}"
        );
        assert!(serde_yaml::from_str::<Vec<RuleConfig>>("[{name: a, action: maybe}]").is_err());
    }

    #[test]
    fn capture_caps_come_from_every_matched_rule_and_the_smallest_wins() {
        let p = rules(
            "[{name: sample-orders, tables: [orders], action: log, capture_rows: 5, capture_bytes: 100},
              {name: quiet-pii, tables: [customers], action: allow, capture_rows: 0},
              {name: plain, statements: [delete], action: allow}]",
        );
        assert!(p.captures());
        let mut orders = cmd(&["select"]);
        orders.tables_read.push("orders".into());
        let v = p.decide(&subject("a", &[]), Some(&[orders.clone()]));
        assert_eq!(v.decision, Decision::Allow);
        assert_eq!(
            v.capture,
            CaptureOverride {
                rows: Some(5),
                bytes: Some(100)
            }
        );
        let mut both = orders.clone();
        both.tables_read.push("customers".into());
        let v = p.decide(&subject("a", &[]), Some(&[both]));
        assert_eq!(v.capture.rows, Some(0), "capture_rows: 0 wins");
        assert_eq!(v.capture.bytes, Some(100));
        // Across the statements of one message too.
        let mut pii = cmd(&["select"]);
        pii.tables_read.push("customers".into());
        let v = p.decide(&subject("a", &[]), Some(&[orders, pii]));
        assert_eq!(v.capture.rows, Some(0));
        let v = p.decide(&subject("a", &[]), Some(&[cmd(&["delete"])]));
        assert_eq!(v.capture, CaptureOverride::default());
        assert!(!rules("[{name: plain, statements: [delete], action: deny}]").captures());
    }

    fn exec(line: &str) -> CommandInfo {
        CommandInfo {
            kinds: vec!["exec"],
            command_line: Some(line.into()),
            ..Default::default()
        }
    }

    #[test]
    fn ssh_command_lines_match_globs_programs_and_regexes() {
        let p = rules(
            r#"[{name: no-rm, commands: ["rm *", "re:^sudo\\b"], action: deny},
               {name: no-shutdown, commands: [shutdown], action: deny},
               {name: no-shell, targets: [web-*], statements: [shell], action: deny}]"#,
        );
        let s = |t: &'static str| Subject {
            identity: "alice",
            groups: &[],
            target: t,
            target_labels: NO_LABELS,
            protocol: "ssh",
        };
        let denied = |line: &str| match p.decide(&s("db-1"), Some(&[exec(line)])).decision {
            Decision::Deny { rule, .. } => Some(rule),
            _ => None,
        };
        assert_eq!(denied("rm -rf /tmp/x").as_deref(), Some("no-rm"));
        assert_eq!(denied("true; rm -rf /tmp/x").as_deref(), Some("no-rm"));
        assert_eq!(denied("sudo id").as_deref(), Some("no-rm"));
        assert_eq!(denied("echo sudo"), None, "the regex is anchored");
        assert_eq!(
            denied("/sbin/shutdown -h now").as_deref(),
            Some("no-shutdown")
        );
        assert_eq!(denied("ls && shutdown").as_deref(), Some("no-shutdown"));
        assert_eq!(denied("echo $(shutdown)").as_deref(), Some("no-shutdown"));
        assert_eq!(denied("echo shutdown"), None);
        assert_eq!(denied("echo hi"), None);
        // Shells have no command line; the kind decides, on the named targets only.
        let shell = cmd(&["shell"]);
        assert!(matches!(
            p.decide(&s("web-1"), Some(std::slice::from_ref(&shell))).decision,
            Decision::Deny { ref rule, .. } if rule == "no-shell"
        ));
        assert_eq!(
            p.decide(&s("db-1"), Some(&[shell])).decision,
            Decision::Allow
        );
        // SQL never matches a commands rule.
        assert_eq!(
            p.decide(&subject("a", &[]), Some(&[cmd(&["delete"])]))
                .decision,
            Decision::Allow
        );
        let bad: Vec<RuleConfig> =
            serde_yaml::from_str(r#"[{name: x, commands: ["re:("], action: deny}]"#).unwrap();
        let err = Policy::new(bad, PolicyConfig::default(), BTreeMap::new()).unwrap_err();
        assert!(
            err.to_string().contains("not a valid regular expression"),
            "{err}"
        );
    }

    fn sftp(kinds: &[&'static str], paths: &[&str]) -> CommandInfo {
        CommandInfo {
            kinds: kinds.to_vec(),
            paths: paths.iter().map(|p| p.to_string()).collect(),
            ..CommandInfo::default()
        }
    }

    #[test]
    fn sftp_paths_match_globs_regexes_and_exact_paths() {
        let p = rules(
            r#"[{name: no-etc-writes, statements: [sftp_modify], paths: ["/etc/**"], action: deny, message: "read only"},
               {name: no-keys, statements: [sftp_read], paths: ["/home/*/.ssh/id_*", "re:\\.pem$"], action: deny},
               {name: exact, paths: ["/srv/lock"], action: deny}]"#,
        );
        let groups = vec![];
        let s = subject("alice", &groups);
        let denied = |c: CommandInfo| p.decide(&s, Some(&[c])).rule().map(String::from);
        assert_eq!(
            denied(sftp(&["sftp_write", "sftp_modify"], &["/etc/hosts"])).as_deref(),
            Some("no-etc-writes")
        );
        assert_eq!(
            denied(sftp(
                &["sftp_write", "sftp_modify"],
                &["/etc/ssh/sshd_config"]
            ))
            .as_deref(),
            Some("no-etc-writes")
        );
        // A rename checks both paths.
        assert_eq!(
            denied(sftp(&["sftp_rename", "sftp_modify"], &["/tmp/x", "/etc/x"])).as_deref(),
            Some("no-etc-writes")
        );
        // Reading is another kind; /etcetera is not under /etc.
        assert_eq!(denied(sftp(&["sftp_read"], &["/etc/hosts"])), None);
        assert_eq!(
            denied(sftp(&["sftp_write", "sftp_modify"], &["/etcetera"])),
            None
        );
        // `*` stays within one component.
        assert_eq!(
            denied(sftp(&["sftp_read"], &["/home/bob/.ssh/id_ed25519"])).as_deref(),
            Some("no-keys")
        );
        assert_eq!(
            denied(sftp(&["sftp_read"], &["/home/bob/x/.ssh/id_rsa"])),
            None
        );
        assert_eq!(
            denied(sftp(&["sftp_read"], &["/srv/tls/key.pem"])).as_deref(),
            Some("no-keys")
        );
        assert_eq!(
            denied(sftp(&["sftp_stat"], &["/srv/lock"])).as_deref(),
            Some("exact")
        );
        assert_eq!(denied(sftp(&["sftp_stat"], &["/srv/lock2"])), None);
        // Commands without paths never meet a `paths` rule.
        assert_eq!(denied(exec("cat /etc/hosts")), None);
    }

    #[test]
    fn bad_paths_are_rejected() {
        for (yaml, want) in [
            (
                r#"[{name: x, paths: ["etc/*"], action: deny}]"#,
                "must be an absolute path",
            ),
            (
                r#"[{name: x, paths: ["re:("], action: deny}]"#,
                "not a valid regular expression",
            ),
            (
                r#"[{name: x, statements: [sftp_wirte], action: deny}]"#,
                "unknown statement kind",
            ),
        ] {
            let rules: Vec<RuleConfig> = serde_yaml::from_str(yaml).unwrap();
            let e = Policy::new(rules, PolicyConfig::default(), BTreeMap::new()).unwrap_err();
            assert!(e.to_string().contains(want), "{e}");
        }
    }

    #[test]
    fn forwards_are_off_unless_a_rule_names_their_kind() {
        let s = Subject {
            identity: "alice",
            groups: &[],
            target: "web-1",
            target_labels: NO_LABELS,
            protocol: "ssh",
        };
        let fwd = |kind: &'static str| CommandInfo {
            kinds: vec![kind],
            command_line: Some("127.0.0.1:5432".into()),
            ..Default::default()
        };
        let targets = BTreeMap::from([("web-1".to_string(), Action::Allow)]);
        let p = Policy::new(
            serde_yaml::from_str("[{name: everything, action: allow}]").unwrap(),
            PolicyConfig::default(),
            targets.clone(),
        )
        .unwrap();
        assert!(matches!(
            p.decide(&s, Some(&[fwd("port_forward_local")])).decision,
            Decision::Deny { ref rule, .. } if rule == "policy.forwarding"
        ));
        assert_eq!(p.decide(&s, Some(&[exec("id")])).decision, Decision::Allow);
        let p = Policy::new(
            serde_yaml::from_str(
                r#"[{name: tunnels, statements: [port_forward_local], commands: ["127.0.0.1:*"], action: allow}]"#,
            )
            .unwrap(),
            PolicyConfig::default(),
            targets,
        )
        .unwrap();
        assert_eq!(
            p.decide(&s, Some(&[fwd("port_forward_local")])).decision,
            Decision::Allow
        );
        assert!(matches!(
            p.decide(&s, Some(&[fwd("port_forward_remote")])).decision,
            Decision::Deny { .. }
        ));
    }

    #[test]
    fn globs() {
        assert!(glob("ci-*", "ci-nightly"));
        assert!(!glob("ci-*", "alice"));
        assert!(glob("*", ""));
        assert!(glob("a?c*", "abcdef"));
        assert!(table_matches("public.orders", "orders"));
        assert!(table_matches("*.users", "auth.users"));
        assert!(!table_matches("audit.*", "public.orders"));
    }
}
