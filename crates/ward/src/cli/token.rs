//! `ward token create`: mints a service token and prints the config entry for it.

use super::ConfigLocation;
use super::output::print_stdout;
use anyhow::{Context, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Args, ValueEnum};
use serde::Serialize;
use ward_core::identity::generate_token;

/// Tokens expire after this long unless `--expires` or `--long-lived` says otherwise: long
/// enough not to be a chore, short enough that a forgotten token dies on its own.
const DEFAULT_EXPIRY: &str = "90d";

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The identity the token proves; clients log in with it as their user name.
    #[arg(value_name = "NAME")]
    pub name: String,

    /// When the token stops working: a duration from now (30d, 12h, 2w) or a date or time
    /// (2027-01-01, 2027-01-01T00:00:00Z) [default: 90d].
    #[arg(long, value_name = "WHEN", conflicts_with = "long_lived")]
    pub expires: Option<String>,

    /// A target the token may reach; repeat for several. Without any, it may reach every
    /// target.
    #[arg(long = "target", value_name = "TARGET")]
    pub targets: Vec<String>,

    /// Never expire. Prefer an expiry: a leaked long-lived token stays useful forever.
    #[arg(long)]
    pub long_lived: bool,

    /// `text` for people; `json` prints only {"token","hash","expires"} for scripts.
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
}

pub fn create(config: &ConfigLocation, args: &CreateArgs) -> anyhow::Result<()> {
    check_name(&args.name)?;
    for target in &args.targets {
        check_name(target).with_context(|| format!("invalid --target {target:?}"))?;
    }
    let now = Utc::now();
    let expires = if args.long_lived {
        None
    } else {
        let when = args.expires.as_deref().unwrap_or(DEFAULT_EXPIRY);
        Some(expiry_from(when, now)?)
    };
    warn_about_unknown_targets(config, &args.targets);

    let token = generate_token();
    let expires_text = expires.map(|t| t.to_rfc3339_opts(SecondsFormat::Secs, true));
    if args.quiet || args.format == TokenFormat::Json {
        let json = serde_json::to_string(&TokenJson {
            token: &token.token,
            hash: &token.hash,
            expires: expires_text,
        })?;
        return print_stdout(&format!("{json}\n"));
    }

    let entry = config_entry(
        &args.name,
        &token.hash,
        expires_text.as_deref(),
        &args.targets,
    );
    let validity = match &expires_text {
        Some(t) => format!("valid until {t}"),
        None => "never expires".to_string(),
    };
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
fn config_entry(name: &str, hash: &str, expires: Option<&str>, targets: &[String]) -> String {
    let mut entry = format!("- {{ name: {}, hash: \"{hash}\"", yaml_scalar(name));
    if let Some(expires) = expires {
        entry.push_str(&format!(", expires: {expires}"));
    }
    if !targets.is_empty() {
        let list: Vec<String> = targets.iter().map(|t| yaml_scalar(t)).collect();
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

    #[test]
    fn entry_is_valid_config() {
        let token = generate_token();
        let entry = config_entry(
            "ci-nightly",
            &token.hash,
            Some("2027-01-01T00:00:00Z"),
            &["orders-db".into(), "on".into()],
        );
        assert_eq!(
            entry,
            format!(
                "- {{ name: ci-nightly, hash: \"{}\", expires: 2027-01-01T00:00:00Z, targets: [orders-db, \"on\"] }}",
                token.hash
            )
        );
        // The printed entry is accepted by the real config loader.
        let yaml = format!(
            "identity:\n  tokens:\n    {}\n",
            config_entry("weird: name", &token.hash, None, &[])
        );
        let config = ward_core::Config::from_yaml(&yaml, Path::new(".")).unwrap();
        assert_eq!(config.identity.tokens[0].name, "weird: name");
        assert!(config.identity.tokens[0].expires.is_none());
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

    #[test]
    fn names_are_checked() {
        assert!(check_name("ci-nightly").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name(" x").is_err());
        assert!(check_name("a\u{1b}[31m").is_err());
    }
}
