//! The command line: argument definitions (clap derive) and the verbs other than `serve`.

mod api;
mod output;
mod sessions;
mod token;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::{Path, PathBuf};
use ward_core::Config;

/// The config file used when neither `--config` nor `WARD_CONFIG` names one.
const DEFAULT_CONFIG: &str = "ward.yaml";

#[derive(Debug, Parser)]
#[command(
    name = "ward",
    version,
    about = "ward: an identity-aware access gateway for databases",
    long_about = "ward: an identity-aware access gateway for databases.\n\n\
        Clients connect to ward instead of the database and log in with their own identity \
        (a service token today); ward connects them to the target with a credential they \
        never see, and records every session and statement in its audit store.\n\n\
        Verbs:\n  \
          serve      run the gateway and its admin API            ward serve --config ward.yaml\n  \
          token      mint a service token for an identity         ward token create ci-nightly --target orders-db\n  \
          sessions   browse the audit through the admin API       ward sessions list --since 1h\n\n\
        Run `ward <verb> --help` for details and examples.",
    propagate_version = true
)]
pub struct Cli {
    /// The configuration file [default: ward.yaml].
    ///
    /// `serve` requires it. The other verbs read it, when it exists, only to find the admin
    /// API address (listen.api) and the data directory holding admin.token; they never
    /// resolve target secrets.
    #[arg(
        long,
        short = 'c',
        global = true,
        env = "WARD_CONFIG",
        value_name = "PATH",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway: the PostgreSQL listener, the audit writer and the admin API.
    #[command(
        long_about = "Run the gateway: the PostgreSQL listener, the audit writer and \
        the admin API, until SIGINT or SIGTERM.\n\n\
        The config file comes from --config, else WARD_CONFIG, else ./ward.yaml. Logs go to \
        stderr; set RUST_LOG to change the level (default: info), e.g. RUST_LOG=ward=debug.\n\n\
        Example:\n  ward serve --config /etc/ward/ward.yaml"
    )]
    Serve,

    /// Manage service tokens.
    #[command(subcommand)]
    Token(TokenCommand),

    /// Browse recorded sessions and their statements (through the admin API).
    #[command(long_about = "Browse recorded sessions and their statements.\n\n\
        These commands ask the admin API of a running `ward serve`. Its address comes from \
        --api, else WARD_API, else listen.api in the config file, else \
        http://127.0.0.1:8080. The admin token comes from --admin-token, else \
        WARD_ADMIN_TOKEN, else <data_dir>/admin.token (data_dir from the config file, \
        default ./ward-data), which ward serve writes on first start.\n\n\
        Examples:\n  \
          ward sessions list --since 1h --identity ci-nightly\n  \
          ward sessions show 0190a1b2-7c3d")]
    Sessions(SessionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a new service token for an identity and print the config entry for it.
    #[command(long_about = "Mint a new service token for an identity.\n\n\
        Prints the token once, and the entry to paste under `identity.tokens:` in ward.yaml \
        (ward keeps only the token's SHA-256, so the token cannot be shown again). Clients \
        then log in with the identity as user name and the token as password. Tokens expire \
        after 90 days unless --expires or --long-lived says otherwise.\n\n\
        Examples:\n  \
          ward token create ci-nightly --target orders-db\n  \
          ward token create alice --expires 7d\n  \
          ward token create backup-job --long-lived --format json")]
    Create(token::CreateArgs),
}

#[derive(Debug, Args)]
pub struct SessionsArgs {
    #[command(flatten)]
    pub api: ApiArgs,

    #[command(subcommand)]
    pub command: SessionsCommand,
}

/// How to reach the admin API; shared by every verb that uses it.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    /// Base URL of ward's admin API, e.g. http://127.0.0.1:8080 [default: listen.api from the
    /// config file, else http://127.0.0.1:8080].
    #[arg(
        long,
        global = true,
        env = "WARD_API",
        value_name = "URL",
        help_heading = "Admin API"
    )]
    pub api: Option<String>,

    /// The admin token [default: read from <data_dir>/admin.token].
    ///
    /// Prefer the WARD_ADMIN_TOKEN variable or the file: a value on the command line is
    /// visible to other users in the process list.
    #[arg(
        long,
        global = true,
        env = "WARD_ADMIN_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN",
        help_heading = "Admin API"
    )]
    pub admin_token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SessionsCommand {
    /// List sessions, newest first.
    #[command(
        long_about = "List sessions, newest first, with who connected to what, from \
        where, when, whether the session is still live, and how many statements it ran.\n\n\
        --since and --until take a relative duration (1h, 30m, 7d: that long ago) or a time \
        (2026-01-02 or 2026-01-02T15:04:05Z) and select sessions that started in that \
        window.\n\n\
        Examples:\n  \
          ward sessions list\n  \
          ward sessions list --identity ci-nightly --since 24h\n  \
          ward sessions list --target orders-db --limit 20 --format json"
    )]
    List(sessions::ListArgs),

    /// Show one session and every statement it ran.
    #[command(
        long_about = "Show one session and every statement it ran, in order: when it \
        started, how long it took, rows, command, SQLSTATE on failure, the SQL text and its \
        parameters.\n\n\
        ID is the session id from `ward sessions list` or any unique prefix of it of at \
        least 8 characters.\n\n\
        Examples:\n  \
          ward sessions show 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b\n  \
          ward sessions show 0190a1b2-7c3d --format json"
    )]
    Show(sessions::ShowArgs),
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let config = ConfigLocation::new(cli.config);
    match cli.command {
        Command::Serve => serve(config.for_serve()),
        Command::Token(TokenCommand::Create(args)) => token::create(&config, &args),
        Command::Sessions(args) => sessions::run(&config, &args.api, &args.command),
    }
}

fn serve(config_path: PathBuf) -> anyhow::Result<()> {
    init_tracing();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("ward-worker")
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(crate::serve::run(&config_path))
}

/// Logs to stderr, filtered by RUST_LOG (default `info`).
fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colours only for a person at a terminal, not in journald or a log file.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

/// Where the config file is, and whether the user asked for that file explicitly.
///
/// An explicitly named file (flag or WARD_CONFIG) must load; the default ./ward.yaml is
/// optional for the client verbs, which can work from flags and defaults alone.
pub struct ConfigLocation {
    explicit: Option<PathBuf>,
}

impl ConfigLocation {
    fn new(explicit: Option<PathBuf>) -> Self {
        ConfigLocation { explicit }
    }

    fn for_serve(&self) -> PathBuf {
        self.explicit
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG))
    }

    /// The config, if one was named or ./ward.yaml exists. Loading does not resolve target
    /// secrets, so the CLI works without the database passwords in its environment.
    pub fn load_optional(&self) -> anyhow::Result<Option<Config>> {
        let (path, explicit) = match &self.explicit {
            Some(path) => (path.as_path(), true),
            None => (Path::new(DEFAULT_CONFIG), false),
        };
        if !explicit && !path.exists() {
            return Ok(None);
        }
        let config = Config::load(path).with_context(|| {
            if explicit {
                "cannot load the config file named by --config or WARD_CONFIG".to_string()
            } else {
                "cannot load ./ward.yaml (name another file with --config or WARD_CONFIG)"
                    .to_string()
            }
        })?;
        Ok(Some(config))
    }
}
