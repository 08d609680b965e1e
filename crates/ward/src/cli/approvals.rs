//! `ward approvals list`, `ward approve` and `ward deny`: deciding on held statements through
//! the admin API.
//!
//! By default they use the admin token, which may approve requests whose rule names no
//! approvers. A rule that names approvers (`approvers: [group:sre]`) needs one of them:
//! `--as NAME` with that identity's own ward token (`--token`, or WARD_TOKEN), so the audit
//! records who approved, and nobody approves their own statement.

use super::api::{ApiClient, path_segment};
use super::output::{Table, clean, print_stdout, time_secs};
use super::{ApiArgs, ConfigLocation};
use clap::{Args, ValueEnum};
use ward_api::approvals::{ApprovalList, ApprovalResult, ApprovalView, DecisionBody};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Sentences and tables for people.
    Text,
    /// The API's JSON answer, pretty-printed, for scripts.
    Json,
}

/// Whom to act as: the admin token (default) or an identity with its own ward token.
#[derive(Debug, Clone, Args)]
pub struct ActAs {
    /// Act as this identity (one the rule names as approver) instead of with the admin
    /// token; needs that identity's ward token from --token or WARD_TOKEN.
    #[arg(
        long = "as",
        value_name = "IDENTITY",
        help_heading = "Acting as an identity"
    )]
    pub identity: Option<String>,

    /// The --as identity's ward token [default: the WARD_TOKEN environment variable].
    ///
    /// Prefer WARD_TOKEN: a value on the command line is visible to other users in the
    /// process list.
    #[arg(long, value_name = "TOKEN", help_heading = "Acting as an identity")]
    pub token: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(flatten)]
    pub act_as: ActAs,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ApproveArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(flatten)]
    pub act_as: ActAs,

    /// The request id, as shown to the client and by `ward approvals list` (e.g. r-7k2m9qxa).
    #[arg(value_name = "ID")]
    pub id: String,

    /// A comment kept in the audit with your approval.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct DenyArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(flatten)]
    pub act_as: ActAs,

    /// The request id, as shown to the client and by `ward approvals list`.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Why; the client's error shows it, and the audit keeps it.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: String,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// The API client for the chosen credentials.
fn client(config: &ConfigLocation, api: &ApiArgs, act_as: &ActAs) -> anyhow::Result<ApiClient> {
    let Some(identity) = &act_as.identity else {
        if act_as.token.is_some() {
            anyhow::bail!(
                "--token is the token of the identity named by --as; add --as IDENTITY (without \
                 --as, the admin token is used)"
            );
        }
        return ApiClient::resolve(config, api);
    };
    let (token, source) = match &act_as.token {
        Some(token) => (token.clone(), "--token"),
        None => match std::env::var("WARD_TOKEN") {
            Ok(token) => (token, "WARD_TOKEN"),
            Err(_) => anyhow::bail!(
                "--as {identity} needs that identity's ward token: set WARD_TOKEN (or pass \
                 --token)"
            ),
        },
    };
    ApiClient::resolve_as_identity(config, api, identity, &token, source)
}

fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    print_stdout(&format!("{}\n", serde_json::to_string_pretty(value)?))
}

pub fn list(config: &ConfigLocation, args: &ListArgs) -> anyhow::Result<()> {
    let client = client(config, &args.api, &args.act_as)?;
    let list: ApprovalList = client.get("/api/v1/approvals", &[], None)?;
    match args.format {
        Format::Json => print_json(&list),
        Format::Text => print_stdout(&render_list(&list.approvals)),
    }
}

pub fn approve(config: &ConfigLocation, args: &ApproveArgs) -> anyhow::Result<()> {
    let client = client(config, &args.api, &args.act_as)?;
    let body = DecisionBody {
        reason: args.reason.clone(),
    };
    let result: ApprovalResult = client.send(
        "POST",
        &format!("/api/v1/approvals/{}/approve", path_segment(args.id.trim())),
        Some(serde_json::to_value(body)?),
        Some(not_found(&args.id)),
    )?;
    match args.format {
        Format::Json => print_json(&result),
        Format::Text => {
            let a = &result.approval;
            let text = if a.state == "approved" {
                format!(
                    "Approved request {} ({} on {}); the statement is released.\n",
                    a.id, a.identity, a.target
                )
            } else {
                format!(
                    "Counted {}'s approval of request {}; it needs {} more from {}.\n",
                    result.by,
                    a.id,
                    a.remaining_approvals,
                    approvers(a)
                )
            };
            print_stdout(&clean(&text, true))
        }
    }
}

pub fn deny(config: &ConfigLocation, args: &DenyArgs) -> anyhow::Result<()> {
    if args.reason.trim().is_empty() {
        anyhow::bail!("--reason must say why: the client's error shows it, and the audit keeps it");
    }
    let client = client(config, &args.api, &args.act_as)?;
    let body = DecisionBody {
        reason: Some(args.reason.clone()),
    };
    let result: ApprovalResult = client.send(
        "POST",
        &format!("/api/v1/approvals/{}/deny", path_segment(args.id.trim())),
        Some(serde_json::to_value(body)?),
        Some(not_found(&args.id)),
    )?;
    match args.format {
        Format::Json => print_json(&result),
        Format::Text => {
            let a = &result.approval;
            let text = format!(
                "Denied request {} ({} on {}); the client gets an error with your reason.\n",
                a.id, a.identity, a.target
            );
            print_stdout(&clean(&text, true))
        }
    }
}

fn not_found(id: &str) -> String {
    format!(
        "no approval request {:?} is pending or recent (or it is not one you may see); list \
         them with `ward approvals list`",
        id.trim()
    )
}

fn approvers(a: &ApprovalView) -> String {
    if a.approvers.is_empty() {
        "the admin".to_string()
    } else {
        a.approvers.join(", ")
    }
}

/// At most this many characters of a held command in the table; `--format json` has it all.
const COMMAND_WIDTH: usize = 60;

fn render_list(approvals: &[ApprovalView]) -> String {
    if approvals.is_empty() {
        return "No approval requests are pending or recent.\n".to_string();
    }
    let mut table = Table::new(vec![
        "ID",
        "STATE",
        "IDENTITY",
        "TARGET",
        "RULE",
        "APPROVALS",
        "APPROVERS",
        "EXPIRES/DECIDED (UTC)",
        "COMMAND",
    ]);
    for a in approvals {
        let when = match a.decided_at_us {
            Some(at) => time_secs(at),
            None => time_secs(a.expires_at_us),
        };
        let mut command: String = a.command.chars().take(COMMAND_WIDTH).collect();
        if a.command.chars().count() > COMMAND_WIDTH {
            command.push('…');
        }
        table.row(vec![
            a.id.clone(),
            a.state.clone(),
            a.identity.clone(),
            a.target.clone(),
            a.rule.clone(),
            format!("{}/{}", a.approved_by.len(), a.approvals_required),
            approvers(a),
            when,
            command,
        ]);
    }
    let mut out = table.render();
    if approvals.iter().any(|a| a.state == "pending") {
        out.push_str(
            "\nApprove with `ward approve ID` (add --as NAME when the rule names approvers), \
             deny with `ward deny ID --reason TEXT`.\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(state: &str, command: &str) -> ApprovalView {
        ApprovalView {
            id: "r-7k2m9qxa".into(),
            state: state.into(),
            session_id: "s".into(),
            identity: "alice".into(),
            target: "orders-db".into(),
            protocol: "postgres".into(),
            command: command.into(),
            rule: "approve-deletes".into(),
            approvers: vec!["group:sre".into()],
            approvals_required: 2,
            approved_by: vec!["bob".into()],
            remaining_approvals: 1,
            decided_by: None,
            reason: None,
            on_timeout: "deny".into(),
            requested_at: String::new(),
            requested_at_us: 0,
            expires_at: String::new(),
            expires_at_us: 1_500_000,
            decided_at: None,
            decided_at_us: None,
            approve_command: "ward approve r-7k2m9qxa".into(),
        }
    }

    #[test]
    fn lists_requests_with_a_hint_to_act() {
        let out = render_list(&[view("pending", "DELETE FROM orders\nWHERE id = 1")]);
        assert!(out.contains("r-7k2m9qxa  pending  alice"), "{out}");
        assert!(out.contains("1/2"), "{out}");
        assert!(out.contains("group:sre"), "{out}");
        // Newlines in SQL are shown escaped, not broken across rows.
        assert!(out.contains("DELETE FROM orders\\nWHERE id = 1"), "{out}");
        assert!(out.contains("ward approve ID"), "{out}");
        let long = "x".repeat(100);
        let out = render_list(&[view("denied", &long)]);
        assert!(out.contains(&format!("{}…", "x".repeat(60))), "{out}");
        assert!(!out.contains("ward approve ID"), "{out}");
        assert_eq!(
            render_list(&[]),
            "No approval requests are pending or recent.\n"
        );
    }
}
