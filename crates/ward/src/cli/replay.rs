//! `ward replay`: a recorded session as a timeline, optionally paced as it happened.
//!
//! An investigator wants the session's story in order and at its own rhythm: what ran when
//! relative to the start, what the policy decided, how many rows came back and how long
//! each step took. Terminal sessions of later protocols will replay through this verb too.

use super::api::{ApiClient, path_segment};
use super::output::{clean, print_stdout, time_millis};
use super::sessions::Format;
use super::{ApiArgs, ConfigLocation};
use clap::Args;
use serde::Serialize;
use std::io::Write;
use std::time::Duration;
use ward_api::model::{SessionDetailView, StatementView};

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// The session id, or a unique prefix of it (at least 8 characters).
    #[arg(value_name = "SESSION")]
    pub id: String,

    /// Print each step when it happened, relative to the session start (real time).
    #[arg(long)]
    pub pace: bool,

    /// With --pace, play this many times faster (e.g. 10).
    #[arg(long, default_value_t = 1.0, value_name = "FACTOR")]
    pub speed: f64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// For an SSH session with a terminal recording: show the timeline of commands
    /// instead of playing the terminal back.
    #[arg(long)]
    pub timeline: bool,

    /// The channel to play back (SSH sessions; channels are numbered from 1 in the order
    /// they were opened) [default: the first recorded].
    #[arg(long, value_name = "N")]
    pub channel: Option<u32>,

    /// When playing a terminal back paced, shorten pauses longer than this (seconds).
    #[arg(long, value_name = "SECS")]
    pub max_idle: Option<f64>,
}

/// One step of the timeline, as `--format json` prints it.
#[derive(Debug, Serialize)]
struct Step<'a> {
    offset_ms: f64,
    seq: u64,
    statement: &'a str,
    params: Option<&'a str>,
    /// `allowed` unless a rule decided otherwise (`denied`, `approved`, …).
    decision: &'a str,
    rule: Option<&'a str>,
    command: Option<&'a str>,
    rows: Option<u64>,
    duration_ms: f64,
    sqlstate: Option<&'a str>,
    error: Option<&'a str>,
    /// Sent to the target, but no result was recorded (ward stopped or the session ended
    /// first); `seq` is 0 for these.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    unanswered: bool,
    /// The first rows of the result, when result capture was on (`audit.capture`).
    #[serde(skip_serializing_if = "Option::is_none")]
    result_sample: Option<&'a ward_core::event::ResultSample>,
}

pub fn run(config: &ConfigLocation, args: &ReplayArgs) -> anyhow::Result<()> {
    if !(args.speed.is_finite() && args.speed > 0.0) {
        anyhow::bail!("--speed must be a positive number, e.g. 10 for ten times faster");
    }
    let client = ApiClient::resolve(config, &args.api)?;
    let path = format!("/api/v1/sessions/{}", path_segment(args.id.trim()));
    let not_found = format!(
        "no session matches {:?}; find session ids with `ward sessions list`",
        args.id.trim()
    );
    let detail: SessionDetailView = client.get(&path, &[], Some(not_found.clone()))?;
    if args.format == Format::Table && !args.timeline && detail.session.protocol == "ssh" {
        let path = format!(
            "/api/v1/sessions/{}/terminal",
            path_segment(&detail.session.id)
        );
        let events: Vec<ward_core::event::TerminalEvent> =
            client.get(&path, &[], Some(not_found))?;
        if !events.is_empty() {
            return replay_terminal(args, &events);
        }
    }
    let start = detail.session.started_at_us;
    let mut steps: Vec<Step<'_>> = detail.statements.iter().map(|st| step(st, start)).collect();
    steps.extend(detail.unanswered.iter().map(|c| Step {
        offset_ms: (c.sent_at_us - start) as f64 / 1000.0,
        seq: 0,
        statement: &c.text,
        params: c.params.as_deref(),
        decision: "sent, no result",
        rule: c.rule.as_deref(),
        command: None,
        rows: None,
        duration_ms: 0.0,
        sqlstate: None,
        error: None,
        unanswered: true,
        result_sample: None,
    }));
    match args.format {
        Format::Json if !args.pace => {
            print_stdout(&format!("{}\n", serde_json::to_string_pretty(&steps)?))
        }
        Format::Json => play(&steps, args.speed, |s| {
            Ok(format!("{}\n", serde_json::to_string(s)?))
        }),
        Format::Table => {
            let s = &detail.session;
            print_stdout(&format!(
                "session {} · {} on {} ({}) · started {} UTC · {} statements\n",
                clean(&s.id, false),
                clean(&s.identity, false),
                clean(&s.target, false),
                clean(&s.protocol, false),
                time_millis(start),
                steps.len()
            ))?;
            let shown = if args.pace { args.speed } else { f64::INFINITY };
            play(&steps, shown, |s| Ok(render(s)))?;
            let end = match (s.active, s.ended_at_us) {
                (true, _) => "(still live)\n".to_string(),
                (false, Some(at)) => format!(
                    "+{}  session ended: {}\n",
                    offset(at - start),
                    clean(
                        s.end_reason.as_deref().unwrap_or("no reason recorded"),
                        false
                    )
                ),
                (false, None) => String::new(),
            };
            print_stdout(&end)
        }
    }
}

/// Plays an SSH session's terminal back: paced as recorded (divided by `--speed`) when
/// asked with `--pace` or when standard output is a terminal, otherwise all at once.
fn replay_terminal(
    args: &ReplayArgs,
    events: &[ward_core::event::TerminalEvent],
) -> anyhow::Result<()> {
    use std::io::IsTerminal;
    let channel = super::terminal::pick_channel(events, args.channel)?;
    let max_idle = match args.max_idle {
        Some(secs) if secs.is_finite() && secs > 0.0 => Some(Duration::from_secs_f64(secs)),
        Some(_) => anyhow::bail!("--max-idle must be a positive number of seconds"),
        None => None,
    };
    let paced = args.pace || std::io::stdout().is_terminal();
    let playback = super::terminal::Playback {
        speed: paced.then_some(args.speed),
        max_idle,
    };
    let result = super::terminal::play(
        events,
        channel,
        &playback,
        &mut std::io::stdout().lock(),
        &mut std::io::stderr().lock(),
    );
    match result {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn step(st: &StatementView, start: i64) -> Step<'_> {
    Step {
        offset_ms: (st.started_at_us - start) as f64 / 1000.0,
        seq: st.seq,
        statement: &st.text,
        params: st.params.as_deref(),
        decision: st.decision.as_deref().unwrap_or("allowed"),
        rule: st.rule.as_deref(),
        command: st.command.as_deref(),
        rows: st.rows,
        duration_ms: st.duration_us as f64 / 1000.0,
        sqlstate: st.sqlstate.as_deref(),
        error: st.error.as_deref(),
        unanswered: false,
        result_sample: st.result_sample.as_ref(),
    }
}

/// Prints the steps, waiting between them as recorded divided by `speed` (an infinite
/// speed prints at once).
fn play(
    steps: &[Step<'_>],
    speed: f64,
    line: impl Fn(&Step<'_>) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let began = std::time::Instant::now();
    let mut stdout = std::io::stdout().lock();
    for s in steps {
        if speed.is_finite() {
            let due = Duration::from_secs_f64((s.offset_ms / 1000.0).max(0.0) / speed);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if let Err(e) = stdout
            .write_all(line(s)?.as_bytes())
            .and_then(|_| stdout.flush())
        {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(e.into());
        }
    }
    Ok(())
}

fn offset(micros: i64) -> String {
    let ms = micros.max(0) as f64 / 1000.0;
    if ms < 60_000.0 {
        format!("{:>9.3}s", ms / 1000.0)
    } else {
        let secs = (ms / 1000.0) as u64;
        format!("{:>2}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
    }
}

fn render(s: &Step<'_>) -> String {
    let seq = if s.unanswered {
        "-".to_string()
    } else {
        s.seq.to_string()
    };
    let mut head = format!(
        "+{}  #{:<3} {:<16}",
        offset((s.offset_ms * 1000.0) as i64),
        seq,
        clean(s.decision, false).to_uppercase()
    );
    if let Some(rule) = s.rule {
        head.push_str(&format!(" rule {}", clean(rule, false)));
    }
    head.push_str(&format!("  {}", clean(s.command.unwrap_or("-"), false)));
    if let Some(rows) = s.rows {
        head.push_str(&format!("  rows {rows}"));
    }
    if !s.unanswered {
        head.push_str(&format!("  {:.3} ms", s.duration_ms));
    }
    if let Some(state) = s.sqlstate {
        head.push_str(&format!("  SQLSTATE {}", clean(state, false)));
    }
    let mut out = head;
    out.push('\n');
    for line in clean(&s.statement.replace("\r\n", "\n"), true).lines() {
        out.push_str("      ");
        out.push_str(line);
        out.push('\n');
    }
    if let Some(params) = s.params {
        out.push_str(&format!("      params: {}\n", clean(params, false)));
    }
    if let Some(error) = s.error {
        out.push_str(&format!("      error: {}\n", clean(error, false)));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_read_as_seconds_then_clock_time() {
        assert_eq!(offset(1_234_567), "    1.235s");
        assert_eq!(offset(3_723_000_000), " 1:02:03");
        assert_eq!(offset(-5), "    0.000s");
    }
}
