//! `ward keys show`, `ward export` and `ward verify`: ward's signing key, evidence bundles
//! and the integrity of its session logs.
//!
//! They read the data directory and the store directly (not through the admin API), so an
//! auditor can export from or check a copy of the store on another machine, against a
//! public key obtained separately (`--public-key`), without a running gateway. Verifying a
//! bundle needs no config at all.

use super::ConfigLocation;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use ward_store::chain::{GATEWAY_LOG, LogSigner, Verdict, key_id};
use ward_store::evidence::{self, KeySource, Selection};

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Print the public half of ward's session-log signing key, and the fingerprint of
    /// ward's SSH host key when it has one.
    Show,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Sessions to verify (ids or unique prefixes), or evidence bundles (files, e.g.
    /// evidence.tar); every logged session and the gateway chain when none is given.
    #[arg(value_name = "SESSION|BUNDLE")]
    pub sessions: Vec<String>,

    /// The public key to verify against, as `ward keys show` printed it (hex) [default: for
    /// the store, derived from <data_dir>/signing.key; for a bundle, the key inside it].
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Sessions to export: ids or unique prefixes (at least 8 characters); `gateway` names
    /// the gateway chain. Without any, the filters select (no filter: every session).
    #[arg(value_name = "SESSION")]
    pub sessions: Vec<String>,

    #[command(flatten)]
    pub filter: super::sessions::SessionFilterArgs,

    /// Also export the gateway chain (locks, pauses and their lifting), whole.
    #[arg(long)]
    pub include_gateway: bool,

    /// Where to write the bundle (a tar file); `-` for standard output.
    #[arg(long, short = 'o', value_name = "PATH")]
    pub output: String,

    /// The public key to record in the bundle (hex) [default: derived from
    /// <data_dir>/signing.key].
    #[arg(long, value_name = "HEX")]
    pub public_key: Option<String>,

    /// Write one SSH session's terminal recording as asciicast v2 (`asciinema play
    /// out.cast`) instead of an evidence bundle.
    #[arg(long)]
    pub asciicast: bool,

    /// With --asciicast: the session's channel to write [default: the first recorded].
    #[arg(long, value_name = "N", requires = "asciicast")]
    pub channel: Option<u32>,
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
    // What SSH clients see on first connect (`ssh` prints the same SHA256 fingerprint).
    let ssh = config.ssh_host_key_path();
    if ssh.exists() {
        let (public, fingerprint) =
            ward_ssh::host_key::describe(&ssh).map_err(|e| anyhow::anyhow!(e))?;
        println!();
        println!("SSH host key");
        println!("fingerprint {fingerprint}");
        println!("public key  {public}");
        println!("file        {}", ssh.display());
    }
    Ok(())
}

fn parse_key(text: &str) -> anyhow::Result<[u8; 32]> {
    evidence::parse_public_key(text)
        .context("--public-key must be the 64 hex digits `ward keys show` prints")
}

/// The public key from --public-key, else from the signing key in the data directory.
fn local_public_key(config: &ward_core::Config, given: Option<&str>) -> anyhow::Result<[u8; 32]> {
    if let Some(text) = given {
        return parse_key(text);
    }
    let path = config.signing_key_path();
    if !path.exists() {
        bail!("no signing key at {}; pass --public-key", path.display());
    }
    Ok(LogSigner::load_or_generate(&path)
        .map_err(|e| anyhow::anyhow!(e))?
        .public_key())
}

fn open_store(config: &ward_core::Config) -> anyhow::Result<ward_store::SqliteStore> {
    let sqlite = config.sqlite_path();
    if !sqlite.exists() {
        bail!("no audit store at {}", sqlite.display());
    }
    ward_store::SqliteStore::open(&sqlite)
        .with_context(|| format!("cannot open the audit store {}", sqlite.display()))
}

/// `ward export SESSION --asciicast -o out.cast`.
fn export_asciicast(config: &ward_core::Config, args: &ExportArgs) -> anyhow::Result<()> {
    let [id] = args.sessions.as_slice() else {
        bail!("--asciicast writes one session: name exactly one session id (or unique prefix)");
    };
    let store = open_store(config)?;
    let detail = store.session_detail(id)?.with_context(|| {
        format!("no session matches {id:?}; find session ids with `ward sessions list`")
    })?;
    let events = store.terminal_events(&detail.session.id)?;
    let channel = super::terminal::pick_channel(&events, args.channel)?;
    let title = format!(
        "ward session {} · {} on {}",
        detail.session.id, detail.session.identity, detail.session.target
    );
    if args.output == "-" {
        let mut out = std::io::stdout().lock();
        return super::terminal::write_asciicast(&events, channel, &title, &mut out);
    }
    let path = PathBuf::from(&args.output);
    let mut file = std::io::BufWriter::new(
        create_private(&path).with_context(|| format!("cannot create {}", path.display()))?,
    );
    super::terminal::write_asciicast(&events, channel, &title, &mut file)?;
    eprintln!(
        "wrote channel {channel} of session {} to {} (play it with `asciinema play {}`)",
        detail.session.id,
        path.display(),
        path.display()
    );
    Ok(())
}

/// Whether a `ward verify` argument names a bundle rather than a session.
fn is_bundle(arg: &str) -> bool {
    arg.ends_with(".tar") || Path::new(arg).is_file()
}

/// How a chain is named in the output.
fn label(id: &str) -> String {
    if id == GATEWAY_LOG {
        "gateway chain".to_string()
    } else {
        format!("session {id}")
    }
}

/// Prints one verdict line; returns whether the chain is intact.
fn print_verdict(v: &Verdict) -> bool {
    let name = label(&v.session_id);
    let sigs = match v.signatures {
        1 => "1 signature".to_string(),
        n => format!("{n} signatures"),
    };
    match (&v.problem, v.events) {
        (Some(problem), _) => {
            println!("TAMPERED  {name}: {problem}");
            false
        }
        (None, 0) => {
            println!("MISSING   {name}: no events in the log");
            false
        }
        (None, n) if v.signed_through < n => {
            println!(
                "OK        {name}: {n} events chained; signed through #{} ({sigs}; the rest is unsigned: the session is live or ward stopped before its next checkpoint)",
                v.signed_through
            );
            true
        }
        (None, n) => {
            println!("OK        {name}: {n} events, signed ({sigs}, through #{n})");
            true
        }
    }
}

fn print_total(verdicts: &[Verdict], bad: usize, key: &str) {
    let events: u64 = verdicts.iter().map(|v| v.events).sum();
    let signatures: u64 = verdicts.iter().map(|v| v.signatures).sum();
    println!(
        "{} of {} sessions intact ({events} events, {signatures} signatures, key {key})",
        verdicts.len() - bad,
        verdicts.len(),
    );
}

pub fn verify(config: &ConfigLocation, args: &VerifyArgs) -> anyhow::Result<()> {
    let bundles = args.sessions.iter().filter(|a| is_bundle(a)).count();
    if bundles > 0 {
        if bundles < args.sessions.len() {
            bail!("give either evidence bundles or session ids to verify, not both");
        }
        let key = args.public_key.as_deref().map(parse_key).transpose()?;
        let mut failed = 0;
        for path in &args.sessions {
            if !verify_bundle(Path::new(path), key)? {
                failed += 1;
            }
        }
        if failed > 0 {
            bail!("{failed} evidence bundle(s) failed verification");
        }
        return Ok(());
    }
    let config = load(config)?;
    let public_key = local_public_key(&config, args.public_key.as_deref())?;
    let store = open_store(&config)?;
    let sessions = if args.sessions.is_empty() {
        store.logged_sessions()?
    } else {
        // Prefixes are resolved as elsewhere; what matches no session is verified as given
        // (and reported missing), so a session whose row was deleted is still checked.
        let mut ids = Vec::new();
        for given in &args.sessions {
            let given = given.trim();
            let id = match given {
                GATEWAY_LOG => None,
                _ => store.resolve_session_id(given).ok().flatten(),
            };
            ids.push(id.unwrap_or_else(|| given.to_string()));
        }
        ids
    };
    let mut verdicts = Vec::new();
    let mut bad = 0;
    for id in &sessions {
        let v = store.verify_session(id, &public_key)?;
        if !print_verdict(&v) {
            bad += 1;
        }
        verdicts.push(v);
    }
    print_total(&verdicts, bad, &key_id(&public_key));
    if bad > 0 {
        bail!("{bad} session log(s) failed verification");
    }
    Ok(())
}

/// Verifies one bundle and prints what it found; `Ok(false)` when anything is wrong.
fn verify_bundle(path: &Path, key: Option<[u8; 32]>) -> anyhow::Result<bool> {
    let file = std::fs::File::open(path)
        .with_context(|| format!("cannot open the evidence bundle {}", path.display()))?;
    let bundle = evidence::read_bundle(std::io::BufReader::new(file))
        .with_context(|| format!("cannot read {}", path.display()))?;
    let report = evidence::verify_bundle(&bundle, key)
        .with_context(|| format!("cannot verify {}", path.display()))?;
    let m = &bundle.manifest;
    println!(
        "bundle    {}: {} v{} from ward {}, created {}, {} session(s)",
        path.display(),
        m.format,
        m.version,
        m.ward_version,
        m.created_at,
        m.sessions.len()
    );
    match report.key_source {
        KeySource::Given if report.key_id == report.bundle_key_id => println!(
            "key       verified against the key you gave (key id {})",
            report.key_id
        ),
        KeySource::Given => println!(
            "key       verified against the key you gave (key id {}); the bundle names another key (key id {})",
            report.key_id, report.bundle_key_id
        ),
        KeySource::Bundle => println!(
            "key       verified against the key inside the bundle (key id {}); pass --public-key to check it is ward's",
            report.key_id
        ),
    }
    if report.file_problems.is_empty() {
        println!(
            "files     {} files match the manifest's SHA-256",
            report.files_checked
        );
    }
    for problem in &report.file_problems {
        println!("TAMPERED  file {problem}");
    }
    let mut bad = 0;
    for v in &report.sessions {
        if !print_verdict(v) {
            bad += 1;
        }
    }
    print_total(&report.sessions, bad, &report.key_id);
    Ok(report.intact())
}

pub fn export(config: &ConfigLocation, args: &ExportArgs) -> anyhow::Result<()> {
    let config = load(config)?;
    if args.asciicast {
        return export_asciicast(&config, args);
    }
    let public_key = local_public_key(&config, args.public_key.as_deref())?;
    let now = ward_core::time::now_micros();
    let bound = |name: &str, value: &Option<String>| -> anyhow::Result<Option<i64>> {
        value
            .as_deref()
            .map(|v| {
                ward_api::parse_time_bound(v, now).map_err(|e| anyhow::anyhow!("--{name}: {e}"))
            })
            .transpose()
    };
    let selection = Selection {
        sessions: args.sessions.clone(),
        identity: args.filter.identity.clone(),
        target: args.filter.target.clone(),
        since: bound("since", &args.filter.since)?,
        until: bound("until", &args.filter.until)?,
        include_gateway: args.include_gateway,
    };
    if let (Some(s), Some(u)) = (selection.since, selection.until)
        && s > u
    {
        bail!("--since is later than --until; swap them or widen the window");
    }
    let to_stdout = args.output == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        bail!(
            "refusing to write a tar to the terminal; redirect it (-o - > evidence.tar) or name a file with -o"
        );
    }
    let store = open_store(&config)?;
    let options = evidence::ExportOptions {
        public_key,
        ward_version: env!("CARGO_PKG_VERSION").to_string(),
        created_at_us: now,
    };
    // Resolve first, so that a selection matching nothing leaves no file behind.
    store.select_for_export(&selection)?;
    let summary = if to_stdout {
        let out = std::io::stdout().lock();
        store.export_evidence(&selection, &options, std::io::BufWriter::new(out))?
    } else {
        let path = PathBuf::from(&args.output);
        let partial = partial_path(&path);
        let file = create_private(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        let result = store
            .export_evidence(&selection, &options, std::io::BufWriter::new(&file))
            .map_err(anyhow::Error::from)
            .and_then(|summary| {
                file.sync_all()?;
                std::fs::rename(&partial, &path)
                    .with_context(|| format!("cannot write {}", path.display()))?;
                Ok(summary)
            });
        if result.is_err() {
            let _ = std::fs::remove_file(&partial);
        }
        result?
    };
    // With -o -, stdout carries the tar: the summary goes to stderr.
    let mut report = String::new();
    for warning in &summary.warnings {
        report.push_str(&format!("warning: {warning}\n"));
    }
    let m = &summary.manifest;
    let events: u64 = m.sessions.iter().map(|s| s.events).sum();
    let signatures: u64 = m.sessions.iter().map(|s| s.signatures).sum();
    report.push_str(&format!(
        "exported {} chain(s), {events} events, {signatures} signatures to {} (key id {})\n",
        m.sessions.len(),
        if to_stdout {
            "standard output"
        } else {
            &args.output
        },
        m.key_id
    ));
    for s in &m.sessions {
        let who = match (&s.identity, &s.target) {
            (Some(i), Some(t)) => format!("{i} -> {t}"),
            _ => "locks, pauses".to_string(),
        };
        report.push_str(&format!(
            "  {:<36}  {who}  {} events, signed through #{}\n",
            s.id, s.events, s.signed_through
        ));
    }
    if !to_stdout {
        report.push_str(&format!(
            "check it with: ward verify {} --public-key {}\n",
            args.output, m.public_key
        ));
    }
    if to_stdout {
        eprint!("{report}");
    } else {
        print!("{report}");
        std::io::stdout().flush()?;
    }
    Ok(())
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".partial");
    path.with_file_name(name)
}

/// The bundle holds SQL text and parameters: readable by its owner only.
fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}
