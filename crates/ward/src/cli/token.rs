//! `ward token create`: mints a service token and prints the config entry for it.

use super::ConfigLocation;
use super::output::print_stdout;
use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use serde::Serialize;
use std::time::Duration;
use ward_core::identity::generate_token;

/// Tokens expire after this long unless `--ttl`, `--expires` or `--long-lived` says
/// otherwise: long enough not to be a chore, short enough that a forgotten token dies on its
/// own.
const DEFAULT_TTL: &str = "90d";

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The identity the token proves; clients log in with it as their user name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// How long the token lives from now (90d, 12h, 2w); the printed entry gets
    /// `expires: <now + TTL>`.
    #[arg(
        long,
        value_name = "DURATION",
        default_value = DEFAULT_TTL,
        value_parser = parse_ttl,
        conflicts_with_all = ["expires", "long_lived"],
    )]
    pub ttl: Duration,

    /// When the token stops working, instead of --ttl: a duration from now (30d, 12h, 2w) or
    /// a date or time (2027-01-01, 2027-01-01T00:00:00Z).
    #[arg(long, value_name = "WHEN", conflicts_with = "long_lived")]
    pub expires: Option<String>,

    /// A target the token may reach; repeat for several. Without any, it may reach every
    /// target.
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Never expire: the entry says `long_lived: true` and has no `expires`. Prefer an
    /// expiry: a leaked long-lived token stays useful forever, and one nobody owns any more
    /// is never cleaned up.
    #[arg(long)]
    pub long_lived: bool,

    /// The identity responsible for the token, e.g. oidc:alice (written as `owner:`).
    #[arg(long, value_name = "IDENTITY")]
    pub owner: Option<String>,

    /// The IdP group the owner must still be in, e.g. sre (written as `owner_group:`), so a
    /// token whose owner left that group can be found. Needs --owner.
    #[arg(long, value_name = "GROUP", requires = "owner")]
    pub owner_group: Option<String>,

    /// `text` for people; `json` prints only {"token","hash","expires","long_lived"} (and
    /// "owner", "owner_group" when given) for scripts.
    #[arg(long, value_enum, default_value_t = TokenFormat::Text)]
    pub format: TokenFormat,

    /// Same as --format json.
    #[arg(long, short)]
    pub quiet: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TokenFormat {
    Text,
    Json,
}

/// What `--format json` prints.
#[derive(Serialize)]
struct TokenJson<'a> {
    token: &'a str,
    hash: &'a str,
    expires: Option<String>,
    long_lived: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    owner_group: Option<&'a str>,
}

/// What goes into the printed `identity.tokens` entry besides name and hash.
struct EntryFields<'a> {
    /// `None` means long-lived.
    expires: Option<&'a str>,
    owner: Option<&'a str>,
    owner_group: Option<&'a str>,
    targets: &'a [String],
}

pub fn create(config: &ConfigLocation, args: &CreateArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    for target in &args.targets {
        check_name(target).with_context(|| format!("invalid --target {target:?}"))?;
    }
    if let Some(owner) = &args.owner {
        check_name(owner).context("invalid --owner")?;
    }
    if let Some(group) = &args.owner_group {
        check_name(group).context("invalid --owner-group")?;
    }
    let now = Utc::now();
    let expires = if args.long_lived {
        None
    } else if let Some(when) = &args.expires {
        Some(expiry_from(when, now)?)
    } else {
        Some(expiry_after(args.ttl, now)?)
    };
    warn_about_unknown_targets(config, &args.targets);

    let token = generate_token();
    let expires_text = expires.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    if args.quiet || args.format == TokenFormat::Json {
        let json = serde_json::to_string(&TokenJson {
            token: &token.token,
            hash: &token.hash,
            expires: expires_text,
            long_lived: args.long_lived,
            owner: args.owner.as_deref(),
            owner_group: args.owner_group.as_deref(),
        })?;
        return print_stdout(&format!("{json}\n"));
    }

    let entry = config_entry(
        &args.name,
        &token.hash,
        &EntryFields {
            expires: expires_text.as_deref(),
            owner: args.owner.as_deref(),
            owner_group: args.owner_group.as_deref(),
            targets: &args.targets,
        },
    );
    let mut validity = match &expires_text {
        Some(t) => format!("valid until {t}"),
        None => "long-lived: never expires".to_string(),
    };
    if let Some(owner) = &args.owner {
        validity.push_str(&format!("; owned by {owner}"));
        if let Some(group) = &args.owner_group {
            validity.push_str(&format!(" while in group {group}"));
        }
    }
    let reach = if args.targets.is_empty() {
        "every target".to_string()
    } else {
        args.targets.join(", ")
    };
    print_stdout(&format!(
        "New token for identity {name} ({validity}; may reach {reach}).\n\
         \n\
         Token (shown only this once; ward keeps only its hash, so store it now):\n\
         \n    {token}\n\
         \n\
         Add this entry under `identity.tokens:` in ward.yaml, then restart `ward serve`:\n\
         \n    {entry}\n\
         \n\
         Clients log in with user name {name} and the token as password.\n",
        name = args.name,
        token = token.token,
    ))
}

/// The `identity.tokens` entry for a token, as one YAML flow mapping.
fn config_entry(name: &str, hash: &str, fields: &EntryFields) -> String {
    let mut entry = format!("- {{ name: {}, hash: \"{hash}\"", yaml_scalar(name));
    match fields.expires {
        Some(expires) => entry.push_str(&format!(", expires: {expires}")),
        None => entry.push_str(", long_lived: true"),
    }
    if let Some(owner) = fields.owner {
        entry.push_str(&format!(", owner: {}", yaml_scalar(owner)));
    }
    if let Some(group) = fields.owner_group {
        entry.push_str(&format!(", owner_group: {}", yaml_scalar(group)));
    }
    if !fields.targets.is_empty() {
        let list: Vec<String> = fields.targets.iter().map(|t| yaml_scalar(t)).collect();
        entry.push_str(&format!(", targets: [{}]", list.join(", ")));
    }
    entry.push_str(" }");
    entry
}

/// A string as a YAML scalar: plain when that is unambiguous (`ci-nightly`), otherwise
/// double-quoted with JSON escapes (JSON strings are valid YAML).
fn yaml_scalar(text: &str) -> String {
    const RESERVED: &[&str] = &["true", "false", "yes", "no", "on", "off", "null", "y", "n"];
    let plain = text.starts_with(|c: char| c.is_ascii_alphabetic())
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && !RESERVED.contains(&text.to_ascii_lowercase().as_str());
    if plain {
        text.to_string()
    } else {
        serde_json::Value::from(text).to_string()
    }
}

/// Names become user names on the wire and keys in ward.yaml; refuse what would be
/// confusing in either (empty, surrounding spaces, control characters).
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("the name must not be empty");
    }
    if name.trim() != name {
        bail!("the name {name:?} must not start or end with spaces");
    }
    if name.chars().any(char::is_control) {
        bail!("the name {name:?} must not contain control characters");
    }
    Ok(())
}

/// `--ttl`: a duration greater than zero.
fn parse_ttl(text: &str) -> Result<Duration, String> {
    let ttl = ward_core::time::parse_duration(text)?;
    if ttl.is_zero() {
        return Err("a token needs a lifetime greater than zero, e.g. 90d".into());
    }
    Ok(ttl)
}

/// `--ttl`: `now` + the duration, in whole seconds.
fn expiry_after(ttl: Duration, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let at = chrono::Duration::from_std(ttl)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .with_context(|| {
            format!(
                "--ttl {} is too far in the future",
                humantime::format_duration(ttl)
            )
        })?;
    // Whole seconds: what is printed is exactly what ward will enforce.
    Ok(DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at))
}

/// `--expires`: a duration from `now` or an absolute date/time; must be in the future.
fn expiry_from(text: &str, now: DateTime<Utc>) -> anyhow::Result<DateTime<Utc>> {
    let at = match ward_core::time::parse_duration(text) {
        Ok(d) => chrono::Duration::from_std(d)
            .ok()
            .and_then(|d| now.checked_add_signed(d))
            .with_context(|| format!("--expires {text:?} is too far in the future"))?,
        Err(_) => ward_core::config::parse_expiry(text.trim()).map_err(|e| {
            anyhow::anyhow!(
                "--expires: {text:?} is neither a duration (30d, 12h, 2w) nor a date or time: {e}"
            )
        })?,
    };
    if at <= now {
        bail!(
            "--expires {text:?} is in the past ({}); give a later time",
            at.to_rfc3339_opts(SecondsFormat::Secs, true)
        );
    }
    // Whole seconds: what is printed is exactly what ward will enforce.
    Ok(DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at))
}

/// A token naming a target the config does not define would make `ward serve` refuse the
/// config; say so now rather than at the next start.
fn warn_about_unknown_targets(config: &ConfigLocation, targets: &[String]) {
    if targets.is_empty() {
        return;
    }
    let Ok(Some(config)) = config.load_optional() else {
        return;
    };
    for target in targets {
        if !config.targets.contains_key(target) {
            let known: Vec<&str> = config.targets.keys().map(String::as_str).collect();
            eprintln!(
                "warning: target {target:?} is not defined in the config (known: {}); add it \
                 before adding this token, or ward serve will refuse the config",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fields<'a>(expires: Option<&'a str>, targets: &'a [String]) -> EntryFields<'a> {
        EntryFields {
            expires,
            owner: None,
            owner_group: None,
            targets,
        }
    }

    #[test]
    fn entry_is_valid_config() {
        let token = generate_token();
        let targets = ["orders-db".to_string(), "on".to_string()];
        let entry = config_entry(
            "ci-nightly",
            &token.hash,
            &fields(Some("2027-01-01T00:00:00Z"), &targets),
        );
        assert_eq!(
            entry,
            format!(
                "- {{ name: ci-nightly, hash: \"{}\", expires: 2027-01-01T00:00:00Z, targets: [orders-db, \"on\"] }}",
                token.hash
            )
        );
        // The printed entries are accepted by the real config loader.
        let yaml = format!(
            "identity:\n  tokens:\n    {}\n    {}\n",
            config_entry("weird: name", &token.hash, &fields(None, &[])),
            config_entry(
                "deploy-bot",
                &token.hash,
                &EntryFields {
                    owner: Some("oidc:alice"),
                    owner_group: Some("sre"),
                    ..fields(Some("2027-01-01T00:00:00Z"), &[])
                }
            ),
        );
        assert!(yaml.contains("long_lived: true }"), "{yaml}");
        assert!(
            yaml.contains("owner: \"oidc:alice\", owner_group: sre }"),
            "{yaml}"
        );
        let config = ward_core::Config::from_yaml(&yaml, Path::new(".")).unwrap();
        let long_lived = &config.identity.tokens[0];
        assert_eq!(long_lived.name, "weird: name");
        assert!(long_lived.expires.is_none() && long_lived.long_lived);
        let owned = &config.identity.tokens[1];
        assert_eq!(owned.owner.as_deref(), Some("oidc:alice"));
        assert_eq!(owned.owner_group.as_deref(), Some("sre"));
        assert!(owned.expires.is_some() && !owned.long_lived);
    }

    #[test]
    fn ttl_is_a_positive_duration_from_now() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        let ttl = parse_ttl(DEFAULT_TTL).unwrap();
        assert_eq!(
            expiry_after(ttl, now).unwrap().to_rfc3339(),
            "2026-04-01T12:00:00+00:00"
        );
        assert_eq!(
            expiry_after(parse_ttl("12h").unwrap(), now)
                .unwrap()
                .to_rfc3339(),
            "2026-01-02T00:00:00+00:00"
        );
        assert!(parse_ttl("0s").unwrap_err().contains("greater than zero"));
        assert!(parse_ttl("soon").unwrap_err().contains("30d"));
    }

    #[test]
    fn expiry_accepts_durations_and_dates_in_the_future_only() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T12:00:00.5Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(
            expiry_from("30d", now).unwrap().to_rfc3339(),
            "2026-01-31T12:00:00+00:00"
        );
        assert_eq!(
            expiry_from("2027-01-01", now).unwrap().to_rfc3339(),
            "2027-01-01T00:00:00+00:00"
        );
        assert!(
            expiry_from("2020-01-01", now)
                .unwrap_err()
                .to_string()
                .contains("past")
        );
        assert!(
            expiry_from("soon", now)
                .unwrap_err()
                .to_string()
                .contains("30d")
        );
    }

    fn parse(args: &[&str]) -> Result<CreateArgs, clap::Error> {
        use clap::Parser;
        let argv = ["ward", "token", "create", "ci-nightly"].iter().chain(args);
        match crate::cli::Cli::try_parse_from(argv)?.command {
            crate::cli::Command::Token(crate::cli::TokenCommand::Create(args)) => Ok(args),
            other => panic!("parsed as {other:?}"),
        }
    }

    #[test]
    fn lifetime_flags_exclude_each_other() {
        let a = parse(&[]).unwrap();
        assert_eq!(a.ttl, Duration::from_secs(90 * 86400));
        assert!(!a.long_lived && a.expires.is_none());
        assert_eq!(
            parse(&["--ttl", "2w"]).unwrap().ttl,
            Duration::from_secs(14 * 86400)
        );
        assert_eq!(
            parse(&["--expires", "2027-01-01"])
                .unwrap()
                .expires
                .as_deref(),
            Some("2027-01-01")
        );
        assert!(parse(&["--long-lived"]).unwrap().long_lived);
        for conflict in [
            &["--ttl", "30d", "--long-lived"][..],
            &["--ttl", "30d", "--expires", "30d"],
            &["--expires", "30d", "--long-lived"],
        ] {
            let err = parse(conflict).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{conflict:?}"
            );
        }
        let err = parse(&["--ttl", "0s"]).unwrap_err();
        assert!(err.to_string().contains("greater than zero"), "{err}");
        let a = parse(&["--owner", "oidc:alice", "--owner-group", "sre"]).unwrap();
        assert_eq!(a.owner.as_deref(), Some("oidc:alice"));
        assert_eq!(a.owner_group.as_deref(), Some("sre"));
        let err = parse(&["--owner-group", "sre"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::MissingRequiredArgument);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-nightly").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(" x").is_err());
        assert!(check_name("a\u{1b}[31m").is_err());
    }
}
