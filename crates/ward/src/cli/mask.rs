//! `ward mask`: shows what the masking rules in a config do to a value, without a database.
//!
//! Operators write rules for data they cannot paste into a ticket; this lets them check a
//! rule against sample values (or a file of them) for a given identity, target and column
//! before reloading the gateway.

use super::ConfigLocation;
use anyhow::{Context, bail};
use clap::Args;
use std::io::BufRead;
use std::sync::Arc;
use ward_core::masking::{ColumnRef, MaskSubject, Origin};
use ward_mask::Outcome;

#[derive(Debug, Args)]
pub struct MaskArgs {
    /// Values to mask; one per line from standard input when none is given.
    #[arg(value_name = "VALUE")]
    pub values: Vec<String>,

    /// The identity whose rules apply.
    #[arg(long, default_value = "anyone", value_name = "NAME")]
    pub identity: String,

    /// Groups of that identity (comma-separated), e.g. for `groups:` and `unmask_for`.
    #[arg(long, value_delimiter = ',', value_name = "GROUP,…")]
    pub groups: Vec<String>,

    /// The target [default: the only target in the config].
    #[arg(long, value_name = "TARGET")]
    pub target: Option<String>,

    /// Treat values as this result column: `column`, `table.column` or
    /// `schema.table.column` (column rules and `scan:` scopes then apply). Without it,
    /// values are masked as free text (like error messages), with every detector in force.
    #[arg(long, value_name = "COLUMN")]
    pub column: Option<String>,

    /// Also print the rules in force and what each detector found.
    #[arg(long)]
    pub explain: bool,
}

pub fn run(config: &ConfigLocation, args: &MaskArgs) -> anyhow::Result<()> {
    let Some(config) = config.load_optional()? else {
        bail!("ward mask needs a config file: pass --config ward.yaml (or set WARD_CONFIG)");
    };
    let masking = Arc::new(
        config
            .masking()
            .context("cannot compile the masking rules of the config file")?,
    );
    let target = match &args.target {
        Some(t) => t.clone(),
        None if config.targets.len() == 1 => {
            config.targets.keys().next().cloned().unwrap_or_default()
        }
        None => bail!(
            "say which target's rules to use with --target (targets: {})",
            config
                .targets
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let labels = config
        .targets
        .get(&target)
        .map(|t| t.labels.clone())
        .with_context(|| format!("no target {target:?} in the config file"))?;
    let Some(session) = masking.for_session(&MaskSubject {
        identity: &args.identity,
        groups: &args.groups,
        target: &target,
        target_labels: &labels,
    }) else {
        println!(
            "(no masking rule applies to identity {:?} on target {target:?}: values pass unchanged)",
            args.identity
        );
        return Ok(());
    };
    let (whole, masker) = match &args.column {
        Some(column) => {
            let parts: Vec<&str> = column.split('.').collect();
            let (schema, table, name) = match parts.as_slice() {
                [c] => (None, None, *c),
                [t, c] => (Some("public"), Some(*t), *c),
                [s, t, c] => (Some(*s), Some(*t), *c),
                _ => {
                    bail!("--column {column:?}: write column, table.column or schema.table.column")
                }
            };
            let origin = match (schema, table) {
                (Some(schema), Some(table)) => Origin::Table { schema, table },
                _ => Origin::Computed,
            };
            let mask = session.column(&ColumnRef {
                name,
                attribute: None,
                origin,
            });
            (mask.whole, mask.content)
        }
        None => (None, Some(session.everywhere().clone())),
    };
    if args.explain {
        println!("rules in force: {}", session.rule_names().join(", "));
        match &whole {
            Some(strategy) => println!("column rule: every value masked ({strategy:?})"),
            None if args.column.is_some() => println!("column rule: none"),
            None => {}
        }
        if masker.as_ref().is_none_or(|m| !m.has_detectors()) {
            println!("detectors: none for this column");
        }
    }
    let fallback = session.everywhere().clone();
    let mask_one = |value: &str| -> String {
        let mut out = Vec::new();
        let outcome = match (&whole, &masker) {
            (Some(strategy), m) => m.as_ref().unwrap_or(&fallback).mask_whole_into(
                strategy,
                value.as_bytes(),
                &mut out,
            ),
            (None, Some(m)) => m.mask_into(value.as_bytes(), &mut out),
            (None, None) => Outcome::Unchanged,
        };
        let shown = match outcome {
            Outcome::Unchanged => value.to_string(),
            Outcome::Masked => String::from_utf8_lossy(&out).into_owned(),
            Outcome::Null => "(NULL)".to_string(),
        };
        if args.explain
            && whole.is_none()
            && let Some(m) = &masker
        {
            let found: Vec<String> = m
                .find(value.as_bytes())
                .iter()
                .map(|f| format!("{} at {}..{}", f.detector, f.start, f.end))
                .collect();
            if !found.is_empty() {
                return format!("{shown}    [{}]", found.join(", "));
            }
        }
        shown
    };
    if args.values.is_empty() {
        for line in std::io::stdin().lock().lines() {
            let line = line.context("cannot read standard input")?;
            println!("{}", mask_one(&line));
        }
    } else {
        for value in &args.values {
            println!("{}", mask_one(value));
        }
    }
    Ok(())
}
