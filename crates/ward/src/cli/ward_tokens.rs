//! `ward token current|mint|list|revoke`: the ward session token `ward login` stored, and
//! short-lived tokens minted from it for bots.

use super::api::{ApiClient, path_segment};
use super::controls::Format;
use super::output::{Table, clean, print_stdout};
use super::session_file;
use super::{ApiArgs, ConfigLocation};
use anyhow::bail;
use clap::Args;
use serde_json::json;
use ward_api::login::IssuedView;
use ward_api::tokens::{RevokeResult, TokenList};

#[derive(Debug, Args)]
pub struct CurrentArgs {}

#[derive(Debug, Args)]
pub struct MintArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// How long the token lives (at most identity.mint.max_ttl, default 1h); e.g. 15m, 1h.
    #[arg(long, value_name = "DURATION", default_value = "15m")]
    pub ttl: String,

    /// A target the token may reach (repeat for several) [default: every target].
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,

    /// What the token is for; its identity is <you>/<label>, e.g. oidc:alice/nightly.
    #[arg(long, value_name = "LABEL")]
    pub label: String,

    /// A group of yours the token carries (repeat for several) [default: none].
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,

    /// Output format (json: the API's answer, with the token).
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// Only tokens of this identity.
    #[arg(long, value_name = "IDENTITY")]
    pub identity: Option<String>,

    /// Also tokens that expired or were revoked.
    #[arg(long)]
    pub all: bool,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct RevokeArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// The token's id (wt_…), from `ward token list` or `ward token mint`.
    #[arg(value_name = "ID")]
    pub id: String,

    /// Why; kept in the audit.
    #[arg(long, short, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

/// `ward token current`: the stored session token, for `PGPASSWORD=$(ward token current)`.
pub fn current(_args: &CurrentArgs) -> anyhow::Result<()> {
    let session = session_file::load_current()?;
    print_stdout(&format!("{}\n", session.token))
}

/// `ward token mint`.
pub fn mint(config: &ConfigLocation, args: &MintArgs) -> anyhow::Result<()> {
    let session = session_file::load_current()?;
    let client = ApiClient::for_session(config, &args.api, &session)?;
    let mut body = json!({ "ttl": args.ttl, "label": args.label });
    if !args.targets.is_empty() {
        body["targets"] = json!(args.targets);
    }
    if !args.groups.is_empty() {
        body["groups"] = json!(args.groups);
    }
    let issued: IssuedView = client.send("POST", "/api/v1/tokens", Some(body), None)?;
    if args.format == Format::Json {
        return print_stdout(&format!("{}\n", serde_json::to_string_pretty(&issued)?));
    }
    eprintln!(
        "Minted {} for {}{}, until {}{}.\nThe token is shown only this once:",
        issued.token_id,
        clean(&issued.identity, false),
        match &issued.targets {
            Some(t) => format!(" (targets {})", t.join(", ")),
            None => " (every target)".to_string(),
        },
        issued.expires_at,
        if issued.groups.is_empty() {
            String::new()
        } else {
            format!(", groups {}", issued.groups.join(", "))
        },
    );
    if let Some(note) = &issued.note {
        eprintln!("({note})");
    }
    print_stdout(&format!("{}\n", issued.token))?;
    eprintln!(
        "Revoke it early with: ward token revoke {}",
        issued.token_id
    );
    Ok(())
}

/// `ward token list`.
pub fn list(config: &ConfigLocation, args: &ListArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let mut query = Vec::new();
    if let Some(i) = &args.identity {
        query.push(("identity", i.clone()));
    }
    if args.all {
        query.push(("all", "true".to_string()));
    }
    let list: TokenList = client.get("/api/v1/tokens", &query, None)?;
    if args.format == Format::Json {
        return print_stdout(&format!("{}\n", serde_json::to_string_pretty(&list)?));
    }
    if list.tokens.is_empty() {
        return print_stdout(if args.all {
            "no ward tokens\n"
        } else {
            "no ward tokens in force (--all also lists expired and revoked ones)\n"
        });
    }
    let mut table = Table::new(vec![
        "ID",
        "IDENTITY",
        "KIND",
        "TARGETS",
        "GROUPS",
        "EXPIRES",
        "ISSUED BY",
        "STATE",
    ]);
    let now = chrono::Utc::now();
    for t in &list.tokens {
        let expired = chrono::DateTime::parse_from_rfc3339(&t.expires_at)
            .map(|e| e < now)
            .unwrap_or(false);
        let state = match (&t.revoked_at, expired) {
            (Some(at), _) => format!("revoked {at}"),
            (None, true) => "expired".to_string(),
            (None, false) => "in force".to_string(),
        };
        table.row(vec![
            t.token_id.clone(),
            clean(&t.identity, false).into_owned(),
            t.kind.clone(),
            t.targets
                .as_ref()
                .map_or("(all)".to_string(), |t| t.join(",")),
            t.groups.join(","),
            t.expires_at.clone(),
            clean(&t.issued_by, false).into_owned(),
            state,
        ]);
    }
    print_stdout(&table.render())
}

/// `ward token revoke`.
pub fn revoke(config: &ConfigLocation, args: &RevokeArgs) -> anyhow::Result<()> {
    if args.id.trim().is_empty() {
        bail!("give the token's id (wt_…), from `ward token list`");
    }
    let client = ApiClient::resolve(config, &args.api)?;
    let body = args.reason.as_ref().map(|r| json!({ "reason": r }));
    let result: RevokeResult = client.send(
        "DELETE",
        &format!("/api/v1/tokens/{}", path_segment(args.id.trim())),
        body,
        None,
    )?;
    match args.format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&result)?)),
        Format::Text => print_stdout(&format!(
            "revoked {} of {} ({}); sessions can no longer be opened with it\n",
            result.token_id,
            clean(&result.identity, false),
            clean(&result.reason, false)
        )),
    }
}
