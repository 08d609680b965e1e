//! The incident responder's verbs: `ward kill`, `ward lock`, `ward unlock`, `ward pause`,
//! `ward resume` and `ward controls`, all clients of the admin API's containment endpoints.
//!
//! Each verb prints one sentence that says what happened and, where it matters, what to do
//! next (e.g. how to undo it); `--format json` prints the API's answer instead, for scripts.

use super::api::{ApiClient, path_segment};
use super::output::{Table, clean, print_stdout, time_secs};
use super::{ApiArgs, ConfigLocation};
use clap::{Args, ValueEnum};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;
use ward_api::model::{
    ControlEventList, ControlEventView, ControlsView, KillResult, LockRequest, LockResult,
    LockView, PauseResult, ReasonRequest, ResumeResult, UnlockResult,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Sentences and tables for people.
    Text,
    /// The API's JSON answer, pretty-printed, for scripts.
    Json,
}

#[derive(Debug, Args)]
pub struct KillArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// The live session: its id from `ward sessions list`, or a unique prefix of it (at
    /// least 8 characters).
    #[arg(value_name = "SESSION")]
    pub session: String,

    /// Why; the client is told, and the audit records it.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct LockArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// The identity (the user name its clients log in with).
    #[arg(value_name = "IDENTITY")]
    pub identity: String,

    /// Why; refused clients are told, and the audit records it.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Lift the lock automatically after this long (90s, 30m, 2h, 7d) [default: until
    /// `ward unlock`].
    #[arg(long = "for", value_name = "DURATION")]
    pub duration: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The arguments of `unlock`, `pause` and `resume`: an identity and an optional reason.
#[derive(Debug, Args)]
pub struct IdentityArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// The identity (the user name its clients log in with).
    #[arg(value_name = "IDENTITY")]
    pub identity: String,

    /// Why; recorded in the audit.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ControlsArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// Show the recorded containment actions (newest first) instead of what is in force.
    #[arg(long)]
    pub history: bool,

    /// With --history: only actions on this identity.
    #[arg(long, value_name = "NAME", requires = "history")]
    pub identity: Option<String>,

    /// With --history: at most this many actions, 1 to 10000.
    #[arg(long, value_name = "N", default_value_t = 50, requires = "history")]
    pub limit: usize,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// Prints the API's answer as JSON, or the sentence for people.
fn report<T: Serialize>(format: Format, answer: &T, text: String) -> anyhow::Result<()> {
    match format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(answer)?)),
        Format::Text => print_stdout(&format!("{text}\n")),
    }
}

fn post<T: DeserializeOwned>(
    client: &ApiClient,
    path: &str,
    body: impl Serialize,
) -> anyhow::Result<T> {
    client.send("POST", path, Some(serde_json::to_value(body)?), None)
}

fn identity_path(identity: &str, action: &str) -> String {
    format!("/api/v1/identities/{}/{action}", path_segment(identity))
}

/// `2026-11-25T21:00:00Z`: exact to the second and unambiguous (UTC).
fn when(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// "1 live session", "3 live sessions".
fn count(n: u64, what: &str) -> String {
    format!("{n} {what}{}", if n == 1 { "" } else { "s" })
}

pub fn kill(config: &ConfigLocation, args: &KillArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let id = args.session.trim();
    let result: KillResult = client.send(
        "POST",
        &format!("/api/v1/sessions/{}/kill", path_segment(id)),
        Some(serde_json::to_value(ReasonRequest {
            reason: args.reason.clone(),
        })?),
        Some(format!(
            "no live session matches {id:?}; find live sessions with `ward sessions list`"
        )),
    )?;
    let text = format!(
        "killed session {} of {} on {} ({})",
        result.session_id,
        clean(&result.identity, false),
        clean(&result.target, false),
        clean(&result.reason, false)
    );
    report(args.format, &result, text)
}

pub fn lock(config: &ConfigLocation, args: &LockArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let result: LockResult = post(
        &client,
        &identity_path(&args.identity, "lock"),
        LockRequest {
            reason: args.reason.clone(),
            duration: args.duration.clone(),
        },
    )?;
    report(args.format, &result, lock_text(&result))
}

fn lock_text(result: &LockResult) -> String {
    let lock = &result.lock;
    let identity = clean(&lock.identity, false);
    let until = match lock.until_us {
        Some(until) => {
            let secs = u64::try_from((until - lock.at_us) / 1_000_000).unwrap_or(0);
            format!(
                "until {} (for {})",
                when(until),
                humantime::format_duration(Duration::from_secs(secs))
            )
        }
        None => format!("until `ward unlock {identity}`"),
    };
    let mut text = format!(
        "locked {identity} {until}; ended {}",
        count(result.sessions_ended, "live session")
    );
    if let Some(previous) = &result.replaced {
        text.push_str(&format!(
            "\n(this replaces the lock set at {} by {}: {})",
            when(previous.at_us),
            clean(&previous.by, false),
            clean(&previous.reason, false)
        ));
    }
    text
}

pub fn unlock(config: &ConfigLocation, args: &IdentityArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let result: UnlockResult = post(
        &client,
        &identity_path(&args.identity, "unlock"),
        ReasonRequest {
            reason: args.reason.clone(),
        },
    )?;
    let identity = clean(&result.identity, false);
    let text = match (&result.lock, result.was_locked) {
        (Some(_), true) => format!("unlocked {identity}; it may connect again"),
        (Some(lock), false) => format!(
            "{identity}'s lock had already lapsed at {}; removed it",
            lock.until_us.map_or_else(|| "-".to_string(), when)
        ),
        (None, _) => format!("{identity} was not locked; nothing changed"),
    };
    report(args.format, &result, text)
}

pub fn pause(config: &ConfigLocation, args: &IdentityArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let result: PauseResult = post(
        &client,
        &identity_path(&args.identity, "pause"),
        ReasonRequest {
            reason: args.reason.clone(),
        },
    )?;
    let pause = &result.pause;
    let identity = clean(&pause.identity, false);
    let text = if result.already_paused {
        format!(
            "{identity} was already paused (since {} by {}: {}); nothing changed",
            when(pause.at_us),
            clean(&pause.by, false),
            clean(&pause.reason, false)
        )
    } else {
        format!(
            "paused {identity}: the next statement of each of its sessions ({} now, and any new \
             ones) is held until `ward resume {identity}`",
            count(pause.live_sessions, "live session")
        )
    };
    report(args.format, &result, text)
}

pub fn resume(config: &ConfigLocation, args: &IdentityArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let result: ResumeResult = post(
        &client,
        &identity_path(&args.identity, "resume"),
        ReasonRequest {
            reason: args.reason.clone(),
        },
    )?;
    let identity = clean(&result.identity, false);
    let text = if result.was_paused {
        format!(
            "resumed {identity}; released {}",
            count(result.released_statements, "held statement")
        )
    } else {
        format!("{identity} was not paused; nothing changed")
    };
    report(args.format, &result, text)
}

pub fn list(config: &ConfigLocation, args: &ControlsArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    if args.history {
        let mut query = vec![("limit", args.limit.to_string())];
        if let Some(identity) = &args.identity {
            query.push(("identity", identity.clone()));
        }
        let list: ControlEventList = client.get("/api/v1/controls/events", &query, None)?;
        return match args.format {
            Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&list)?)),
            Format::Text => print_stdout(&render_history(&list.events)),
        };
    }
    let view: ControlsView = client.get("/api/v1/controls", &[], None)?;
    match args.format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&view)?)),
        Format::Text => print_stdout(&render_controls(&view)),
    }
}

fn until_cell(lock: &LockView) -> String {
    lock.until_us
        .map_or_else(|| "until unlocked".to_string(), time_secs)
}

fn render_controls(view: &ControlsView) -> String {
    if view.locks.is_empty() && view.pauses.is_empty() {
        return "No identity is locked or paused.\n".to_string();
    }
    let mut out = String::new();
    if !view.locks.is_empty() {
        let mut table = Table::new(vec!["LOCKED", "SINCE (UTC)", "UNTIL (UTC)", "BY", "REASON"]);
        for lock in &view.locks {
            table.row(vec![
                lock.identity.clone(),
                time_secs(lock.at_us),
                until_cell(lock),
                lock.by.clone(),
                lock.reason.clone(),
            ]);
        }
        out.push_str(&table.render());
    }
    if !view.pauses.is_empty() {
        if !out.is_empty() {
            out.push('\n');
        }
        let mut table = Table::new(vec![
            "PAUSED",
            "SINCE (UTC)",
            "LIVE SESSIONS",
            "HELD STATEMENTS",
            "BY",
            "REASON",
        ]);
        for pause in &view.pauses {
            table.row(vec![
                pause.identity.clone(),
                time_secs(pause.at_us),
                pause.live_sessions.to_string(),
                pause.held_statements.to_string(),
                pause.by.clone(),
                pause.reason.clone(),
            ]);
        }
        out.push_str(&table.render());
    }
    out
}

fn render_history(events: &[ControlEventView]) -> String {
    if events.is_empty() {
        return "No containment actions recorded.\n".to_string();
    }
    let mut table = Table::new(vec![
        "AT (UTC)",
        "ACTION",
        "IDENTITY",
        "SESSION",
        "ENDED",
        "UNTIL (UTC)",
        "BY",
        "REASON",
    ]);
    for e in events {
        table.row(vec![
            time_secs(e.at_us),
            e.action.clone(),
            e.identity.clone(),
            e.session_id.clone().unwrap_or_else(|| "-".into()),
            e.sessions_ended.to_string(),
            e.until_us.map_or_else(|| "-".to_string(), time_secs),
            e.by.clone(),
            e.reason.clone(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lock_view(until_us: Option<i64>) -> LockView {
        LockView {
            identity: "ci-nightly".into(),
            reason: "token leaked".into(),
            by: "admin".into(),
            at: String::new(),
            at_us: 1_795_633_200_000_000,
            until: None,
            until_us,
        }
    }

    #[test]
    fn lock_sentences() {
        let result = LockResult {
            lock: lock_view(Some(1_795_633_200_000_000 + 7_200_000_000)),
            sessions_ended: 3,
            ended_sessions: vec![],
            replaced: None,
        };
        assert_eq!(
            lock_text(&result),
            "locked ci-nightly until 2026-11-25T21:00:00Z (for 2h); ended 3 live sessions"
        );
        let result = LockResult {
            lock: lock_view(None),
            sessions_ended: 1,
            ended_sessions: vec![],
            replaced: Some(lock_view(None)),
        };
        assert_eq!(
            lock_text(&result),
            "locked ci-nightly until `ward unlock ci-nightly`; ended 1 live session\n\
             (this replaces the lock set at 2026-11-25T19:00:00Z by admin: token leaked)"
        );
    }

    #[test]
    fn controls_tables() {
        assert_eq!(
            render_controls(&ControlsView::default()),
            "No identity is locked or paused.\n"
        );
        let view = ControlsView {
            locks: vec![lock_view(None)],
            pauses: vec![ward_api::model::PauseView {
                identity: "bot".into(),
                reason: "a\u{1b}[2Jb".into(),
                by: "admin".into(),
                at: String::new(),
                at_us: 0,
                held_statements: 2,
                live_sessions: 1,
            }],
        };
        let text = render_controls(&view);
        assert!(
            text.starts_with(
                "LOCKED      SINCE (UTC)          UNTIL (UTC)     BY     REASON\n\
                 ci-nightly  2026-11-25 19:00:00  until unlocked  admin  token leaked\n\nPAUSED"
            ),
            "{text}"
        );
        assert!(
            text.contains("bot     1970-01-01 00:00:00  1              2"),
            "{text}"
        );
        assert!(text.contains("a\\u{1b}[2Jb"), "{text}");
    }
}
