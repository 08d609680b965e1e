//! `ward sessions list` and `ward sessions show`: the audit, read through the admin API.

use super::api::{ApiClient, path_segment};
use super::output::{Table, clean, print_stdout, time_millis, time_secs};
use super::{ApiArgs, ConfigLocation, SessionsCommand};
use clap::{Args, ValueEnum};
use ward_api::model::{SessionDetailView, SessionList, SessionView, StatementView};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text for people.
    Table,
    /// The API's JSON, pretty-printed, for scripts.
    Json,
}

/// The session filters `ward sessions list` and `ward export` share.
#[derive(Debug, Args)]
pub struct SessionFilterArgs {
    /// Only sessions of this identity.
    #[arg(long, value_name = "NAME")]
    pub identity: Option<String>,

    /// Only sessions to this target.
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,

    /// Only sessions that started at or after WHEN: a duration ago (1h, 30m, 7d) or a time
    /// (2026-01-02, 2026-01-02T15:04:05Z).
    #[arg(long, value_name = "WHEN")]
    pub since: Option<String>,

    /// Only sessions that started at or before WHEN (same forms as --since).
    #[arg(long, value_name = "WHEN")]
    pub until: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub filter: SessionFilterArgs,

    /// Only sessions with a statement whose SQL contains TEXT (case-insensitive).
    #[arg(long, value_name = "TEXT")]
    pub command_contains: Option<String>,

    /// Only sessions with a statement that was denied (by a rule, or in review), held for
    /// review, or allowed. With --command-contains, the same statement must match both.
    #[arg(long, value_parser = ["denied", "review", "allowed"], value_name = "DECISION")]
    pub decision: Option<String>,

    /// At most this many sessions (the newest), 1 to 10000.
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub limit: usize,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The session id, or a unique prefix of it (at least 8 characters).
    #[arg(value_name = "ID")]
    pub id: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn run(
    config: &ConfigLocation,
    api: &ApiArgs,
    command: &SessionsCommand,
) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, api)?;
    match command {
        SessionsCommand::List(args) => list(&client, args),
        SessionsCommand::Show(args) => show(&client, args),
    }
}

fn list(client: &ApiClient, args: &ListArgs) -> anyhow::Result<()> {
    let mut query = vec![("limit", args.limit.to_string())];
    for (name, value) in [
        ("identity", &args.filter.identity),
        ("target", &args.filter.target),
        ("since", &args.filter.since),
        ("until", &args.filter.until),
        ("command_contains", &args.command_contains),
        ("decision", &args.decision),
    ] {
        if let Some(value) = value {
            query.push((name, value.clone()));
        }
    }
    let list: SessionList = client.get("/api/v1/sessions", &query, None)?;
    match args.format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&list)?)),
        Format::Table => {
            print_stdout(&render_list(&list.sessions))?;
            if !list.sessions.is_empty() && list.sessions.len() == args.limit {
                eprintln!(
                    "(the newest {} sessions; narrow with --since/--until or raise --limit to see more)",
                    args.limit
                );
            }
            Ok(())
        }
    }
}

fn show(client: &ApiClient, args: &ShowArgs) -> anyhow::Result<()> {
    let path = format!("/api/v1/sessions/{}", path_segment(args.id.trim()));
    let not_found = format!(
        "no session matches {:?}; find session ids with `ward sessions list`",
        args.id.trim()
    );
    let detail: SessionDetailView = client.get(&path, &[], Some(not_found))?;
    match args.format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&detail)?)),
        Format::Table => print_stdout(&render_detail(&detail)),
    }
}

fn client_cell(s: &SessionView) -> String {
    match &s.client_program {
        Some(program) if !program.is_empty() => format!("{} ({program})", s.client_addr),
        _ => s.client_addr.clone(),
    }
}

fn ended_cell(s: &SessionView) -> String {
    match (s.active, s.ended_at_us) {
        (true, _) => "live".to_string(),
        (false, Some(at)) => time_secs(at),
        (false, None) => "-".to_string(),
    }
}

fn render_list(sessions: &[SessionView]) -> String {
    if sessions.is_empty() {
        return "No sessions match.\n".to_string();
    }
    let mut table = Table::new(vec![
        "ID",
        "IDENTITY",
        "TARGET",
        "CLIENT",
        "STARTED (UTC)",
        "ENDED (UTC)",
        "STATEMENTS",
    ]);
    for s in sessions {
        table.row(vec![
            s.id.clone(),
            s.identity.clone(),
            s.target.clone(),
            client_cell(s),
            time_secs(s.started_at_us),
            ended_cell(s),
            s.statement_count.to_string(),
        ]);
    }
    table.render()
}

fn render_detail(detail: &SessionDetailView) -> String {
    let s = &detail.session;
    let one = |text: &str| clean(text, false).into_owned();
    let ended = match (s.active, s.ended_at_us) {
        (true, _) => "live".to_string(),
        (false, Some(at)) => format!(
            "{} UTC ({})",
            time_millis(at),
            one(s.end_reason.as_deref().unwrap_or("no reason recorded"))
        ),
        (false, None) => "-".to_string(),
    };
    let mut out = String::new();
    let mut field = |name: &str, value: String| out.push_str(&format!("{name:<12}{value}\n"));
    field("Session", one(&s.id));
    field("Identity", one(&s.identity));
    field(
        "Target",
        format!("{} ({})", one(&s.target), one(&s.protocol)),
    );
    // SSH sessions record "ssh" here: the SSH transport, not TLS, protects them.
    let transport = match s.tls_version.as_str() {
        "ssh" => "encrypted by SSH".to_string(),
        tls => format!("TLS {}", one(tls)),
    };
    field(
        "Client",
        format!(
            "{}, program {}, {transport}",
            one(&s.client_addr),
            one(s.client_program.as_deref().unwrap_or("-")),
        ),
    );
    field("Started", format!("{} UTC", time_millis(s.started_at_us)));
    field("Ended", ended);
    field("Statements", detail.statements.len().to_string());
    for statement in &detail.statements {
        out.push('\n');
        out.push_str(&render_statement(statement));
    }
    for command in &detail.unanswered {
        out.push('\n');
        out.push_str(&format!(
            "#-  {} UTC  SENT, NO RESULT RECORDED  [{}]\n",
            time_millis(command.sent_at_us),
            clean(&command.origin, false)
        ));
        for line in clean(&command.text.replace("\r\n", "\n"), true).lines() {
            out.push_str("    ");
            out.push_str(line);
            out.push('\n');
        }
        if let Some(params) = &command.params {
            out.push_str(&format!("    params: {}\n", clean(params, false)));
        }
    }
    out
}

fn render_statement(st: &StatementView) -> String {
    let mut head = vec![
        format!("#{}", st.seq),
        format!("{} UTC", time_millis(st.started_at_us)),
        format!("{:.3} ms", st.duration_us as f64 / 1000.0),
        clean(st.command.as_deref().unwrap_or("-"), false).into_owned(),
    ];
    if let Some(rows) = st.rows {
        head.push(format!("rows {rows}"));
    }
    if let Some(state) = &st.sqlstate {
        head.push(format!("SQLSTATE {}", clean(state, false)));
    }
    head.push(format!("[{}]", clean(&st.origin, false)));
    if let Some(decision) = &st.decision {
        let rule = st
            .rule
            .as_deref()
            .map(|r| format!(" by rule {}", clean(r, false)))
            .unwrap_or_default();
        head.push(format!("{}{rule}", clean(decision, false).to_uppercase()));
    }
    let mut out = head.join("  ");
    out.push('\n');
    for line in clean(&st.text.replace("\r\n", "\n"), true).lines() {
        out.push_str("    ");
        out.push_str(line);
        out.push('\n');
    }
    if let Some(params) = &st.params {
        out.push_str(&format!("    params: {}\n", clean(params, false)));
    }
    if let Some(error) = &st.error {
        out.push_str(&format!("    error: {}\n", clean(error, false)));
    }
    if let Some(sample) = &st.result_sample {
        out.push_str(&render_sample(sample));
    }
    out
}

/// A statement's captured result rows (`audit.capture`), one line per row.
fn render_sample(sample: &ward_core::event::ResultSample) -> String {
    let columns: Vec<String> = sample
        .columns
        .iter()
        .map(|c| clean(c, false).into_owned())
        .collect();
    let mut out = format!(
        "    result sample ({} row{}{}): {}\n",
        sample.rows.len(),
        if sample.rows.len() == 1 { "" } else { "s" },
        if sample.truncated { ", truncated" } else { "" },
        columns.join(" | ")
    );
    for row in &sample.rows {
        let values: Vec<String> = row
            .iter()
            .map(|v| match v {
                Some(v) => clean(v, false).into_owned(),
                None => "NULL".to_string(),
            })
            .collect();
        out.push_str("      ");
        out.push_str(&values.join(" | "));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(active: bool) -> SessionView {
        SessionView {
            id: "0190a1b2-0000-7000-8000-00000000000a".into(),
            identity: "ci-nightly".into(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            client_addr: "10.0.0.7:51234".into(),
            tls_version: "TLSv1.3".into(),
            client_program: Some("psql".into()),
            started_at: String::new(),
            started_at_us: 1_000_000,
            ended_at: None,
            ended_at_us: (!active).then_some(3_000_000),
            end_reason: (!active).then(|| "client closed".into()),
            statement_count: 1,
            active,
        }
    }

    #[test]
    fn list_table() {
        let text = render_list(&[session(true), session(false)]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  "), "{text}");
        assert!(lines[1].contains("10.0.0.7:51234 (psql)") && lines[1].contains("live"));
        assert!(lines[2].contains("1970-01-01 00:00:03"));
        assert_eq!(render_list(&[]), "No sessions match.\n");
    }

    #[test]
    fn detail_text() {
        let detail = SessionDetailView {
            session: session(false),
            statements: vec![StatementView {
                seq: 1,
                origin: "execute".into(),
                text: "SELECT *\nFROM orders -- \u{1b}[2J".into(),
                params: Some("$1='42'".into()),
                started_at: String::new(),
                started_at_us: 1_500_000,
                duration_us: 2_500,
                rows: None,
                command: None,
                sqlstate: Some("42P01".into()),
                error: Some("relation \"orders\" does not exist".into()),
                decision: None,
                rule: None,
                result_sample: Some(ward_core::event::ResultSample {
                    columns: vec!["id".into(), "note".into()],
                    rows: vec![vec![Some("1".into()), None]],
                    truncated: true,
                }),
            }],
            unanswered: vec![],
        };
        let text = render_detail(&detail);
        assert!(
            text.contains("Ended       1970-01-01 00:00:03.000 UTC (client closed)"),
            "{text}"
        );
        assert!(text.contains("program psql, TLS TLSv1.3\n"), "{text}");
        let mut ssh = detail;
        ssh.session.tls_version = "ssh".into();
        let text = render_detail(&ssh);
        assert!(text.contains("program psql, encrypted by SSH\n"), "{text}");
        assert!(
            text.contains("#1  1970-01-01 00:00:01.500 UTC  2.500 ms  -  SQLSTATE 42P01  [execute]\n    SELECT *\n    FROM orders -- \\u{1b}[2J\n    params: $1='42'\n    error: relation"),
            "{text}"
        );
        assert!(
            text.contains("    result sample (1 row, truncated): id | note\n      1 | NULL\n"),
            "{text}"
        );
    }
}
