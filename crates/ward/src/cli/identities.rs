//! `ward identities list`: every identity ward knows, through the admin API.

use super::api::ApiClient;
use super::output::{Table, print_stdout, time_secs};
use super::sessions::Format;
use super::{ApiArgs, ConfigLocation};
use clap::Args;
use ward_api::identities::{IdentityList, IdentityView};

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    /// Flag identities without a session in this many days (1 to 36500).
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub unused_days: u64,

    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

pub fn list(config: &ConfigLocation, args: &ListArgs) -> anyhow::Result<()> {
    let client = ApiClient::resolve(config, &args.api)?;
    let list: IdentityList = client.get(
        "/api/v1/identities",
        &[("unused_days", args.unused_days.to_string())],
        None,
    )?;
    match args.format {
        Format::Json => print_stdout(&format!("{}\n", serde_json::to_string_pretty(&list)?)),
        Format::Table => print_stdout(&render(&list)),
    }
}

fn or_dash(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(",")
    }
}

fn expires_cell(row: &IdentityView) -> String {
    match row.expires_us {
        Some(t) => time_secs(t),
        None if row.flags.iter().any(|f| f == "long_lived") => "never".to_string(),
        None => "-".to_string(),
    }
}

fn owner_cell(row: &IdentityView) -> String {
    let mut owners: Vec<String> = Vec::new();
    for t in &row.service_tokens {
        let Some(owner) = &t.owner else { continue };
        let cell = match &t.owner_group {
            Some(group) => format!("{owner} ({group})"),
            None => owner.clone(),
        };
        if !owners.contains(&cell) {
            owners.push(cell);
        }
    }
    if owners.is_empty() {
        "-".to_string()
    } else {
        owners.join(", ")
    }
}

fn render(list: &IdentityList) -> String {
    if list.identities.is_empty() {
        return "ward knows no identities yet: no service tokens, ward tokens or sessions.\n"
            .to_string();
    }
    let mut table = Table::new(vec![
        "IDENTITY",
        "SOURCE",
        "GROUPS",
        "LAST USE (UTC)",
        "SESSIONS",
        "EXPIRES (UTC)",
        "OWNER",
        "FLAGS",
    ]);
    for row in &list.identities {
        table.row(vec![
            row.name.clone(),
            or_dash(&row.sources),
            or_dash(&row.groups),
            row.last_used_us
                .map_or_else(|| "never".to_string(), time_secs),
            row.sessions.to_string(),
            expires_cell(row),
            owner_cell(row),
            or_dash(&row.flags),
        ]);
    }
    let mut out = table.render();
    if list.identities.iter().any(|r| !r.flags.is_empty()) {
        out.push_str(&format!(
            "\nunused: no session in the last {} days; owner_left_group: the owner was last \
             seen without the token's owner_group; owner_unknown: ward has never seen the \
             owner (groups are learnt at login; see `ward identities list --help`)\n",
            list.unused_days
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_api::identities::ServiceTokenView;

    fn row(name: &str, flags: &[&str]) -> IdentityView {
        IdentityView {
            name: name.into(),
            sources: vec!["token".into()],
            groups: Vec::new(),
            sessions: 0,
            last_used: None,
            last_used_us: None,
            last_credential: None,
            expires: None,
            expires_us: None,
            flags: flags.iter().map(|f| f.to_string()).collect(),
            service_tokens: Vec::new(),
            ward_tokens: Vec::new(),
        }
    }

    #[test]
    fn renders_an_aligned_table_with_never_and_owners() {
        let mut bot = row("deploy-bot", &["owner_left_group", "unused"]);
        bot.groups = vec!["deploy".into(), "ci".into()];
        bot.expires_us = Some(1_800_000_000_000_000);
        bot.service_tokens.push(ServiceTokenView {
            expires: None,
            expires_us: None,
            long_lived: false,
            expired: false,
            owner: Some("oidc:alice".into()),
            owner_group: Some("platform".into()),
            owner_groups: Some(vec!["dev".into()]),
            owner_seen_at: None,
            owner_seen_at_us: None,
            owner_seen_via: Some("session".into()),
            targets: None,
            groups: Vec::new(),
        });
        let mut alice = row("oidc:alice", &[]);
        alice.sources = vec!["oidc".into()];
        alice.last_used_us = Some(1_700_000_000_000_000);
        alice.sessions = 3;
        let list = IdentityList {
            unused_days: 30,
            identities: vec![row("ci-old", &["long_lived", "unused"]), bot, alice],
        };
        let text = render(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IDENTITY    SOURCE  GROUPS"), "{text}");
        assert!(lines[1].contains("never") && lines[1].contains("long_lived,unused"));
        assert!(
            lines[2].contains("deploy,ci")
                && lines[2].contains("2027-01-15 08:00:00")
                && lines[2].contains("oidc:alice (platform)"),
            "{text}"
        );
        assert!(lines[3].contains("2023-11-14 22:13:20") && lines[3].ends_with('-'));
        assert!(text.contains("no session in the last 30 days"));
        let column = lines[0].find("FLAGS").unwrap();
        assert_eq!(lines[1].find("long_lived"), Some(column), "{text}");
        assert!(
            render(&IdentityList {
                unused_days: 30,
                identities: Vec::new()
            })
            .contains("no identities")
        );
    }
}
