//! `ward keys show` and `ward verify`: ward's signing key and the integrity of its session
//! logs.
//!
//! Both read the data directory and the store directly (not through the admin API), so an
//! auditor can check a copy of the store on another machine, against a public key obtained
//! separately (`--public-key`), without a running gateway.

use super::ConfigLocation;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use ward_store::chain::{LogSigner, key_id};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the public half of ward's session-log signing key.
    Show,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Sessions to verify (ids); every logged session when none is given.
    #[arg(value_name = "SESSION")]
    pub sessions: Vec<String>,

    /// The public key to verify against, as `ward keys show` printed it (hex) [default:
    /// derived from <data_dir>/signing.key].
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
}

fn load(config: &ConfigLocation) -> anyhow::Result<ward_core::Config> {
    config.load_optional()?.context(
        "this verb reads the data directory and store named by the config file: pass --config ward.yaml",
    )
}

pub fn keys(config: &ConfigLocation, command: &KeysCommand) -> anyhow::Result<()> {
    let KeysCommand::Show = command;
    let config = load(config)?;
    let path = config.signing_key_path();
    if !path.exists() {
        bail!(
            "no signing key at {} yet: `ward serve` generates it on first start",
            path.display()
        );
    }
    let signer = LogSigner::load_or_generate(&path).map_err(|e| anyhow::anyhow!(e))?;
    println!("session-log signing key (Ed25519)");
    println!("public key  {}", hex::encode(signer.public_key()));
    println!("key id      {}", signer.key_id());
    println!("file        {}", path.display());
    Ok(())
}

pub fn verify(config: &ConfigLocation, args: &VerifyArgs) -> anyhow::Result<()> {
    let config = load(config)?;
    let public_key: [u8; 32] = match &args.public_key {
        Some(text) => hex::decode(text.trim())
            .ok()
            .and_then(|b| b.try_into().ok())
            .context("--public-key must be the 64 hex digits `ward keys show` prints")?,
        None => {
            let path = config.signing_key_path();
            if !path.exists() {
                bail!("no signing key at {}; pass --public-key", path.display());
            }
            LogSigner::load_or_generate(&path)
                .map_err(|e| anyhow::anyhow!(e))?
                .public_key()
        }
    };
    let sqlite = config.sqlite_path();
    if !sqlite.exists() {
        bail!("no audit store at {}", sqlite.display());
    }
    let store = ward_store::SqliteStore::open(&sqlite)
        .with_context(|| format!("cannot open the audit store {}", sqlite.display()))?;
    let sessions = if args.sessions.is_empty() {
        store.logged_sessions()?
    } else {
        args.sessions.clone()
    };
    let mut bad = 0;
    let (mut events, mut signatures) = (0u64, 0u64);
    for id in &sessions {
        let v = store.verify_session(id, &public_key)?;
        events += v.events;
        signatures += v.signatures;
        match (&v.problem, v.events) {
            (Some(problem), _) => {
                bad += 1;
                println!("TAMPERED  session {id}: {problem}");
            }
            (None, 0) => {
                bad += 1;
                println!("MISSING   session {id}: no events in the log");
            }
            (None, n) if v.signed_through < n => println!(
                "OK        session {id}: {n} events chained; signed through #{} (the rest is unsigned: the session is live or ward stopped before its next checkpoint)",
                v.signed_through
            ),
            (None, n) => println!("OK        session {id}: {n} events, signed"),
        }
    }
    println!(
        "{} of {} sessions intact ({events} events, {signatures} signatures, key {})",
        sessions.len() - bad,
        sessions.len(),
        key_id(&public_key)
    );
    if bad > 0 {
        bail!("{bad} session log(s) failed verification");
    }
    Ok(())
}
