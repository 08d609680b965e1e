//! The command line: argument definitions (clap derive) and the verbs other than `serve`.

mod api;
mod approvals;
mod controls;
mod evidence;
mod identities;
mod login;
mod mask;
mod output;
mod replay;
mod session_file;
mod sessions;
mod terminal;
mod token;
mod ward_tokens;

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
        (a service token, or an IdP or CI token as the password); ward connects them to the target with a credential they \
        never see, and records every session and statement in its audit store.\n\n\
        Verbs:\n  \
          serve      run the gateway and its admin API            ward serve --config ward.yaml\n  \
          login      log in at your IdP; ward session token       ward login\n  \
          token      service tokens; session and minted tokens    ward token create ci-nightly --target orders-db\n  \
          sessions   browse the audit through the admin API       ward sessions list --since 1h\n  \
          kill       end one live session                         ward kill 0190a1b2-7c3d --reason \"incident 42\"\n  \
          lock       refuse an identity and end its sessions      ward lock ci-nightly --for 2h --reason \"token leaked\"\n  \
          unlock     let a locked identity connect again          ward unlock ci-nightly\n  \
          pause      hold an identity's statements                ward pause ci-nightly --reason \"looking\"\n  \
          resume     release a paused identity's statements       ward resume ci-nightly\n  \
          controls   list the locks and pauses in force           ward controls --history\n  \
          identities every identity, last use, stale tokens       ward identities list --unused-days 30\n  \
          approvals  list statements held for approval            ward approvals list\n  \
          approve    approve a held statement                     ward approve r-7k2m9qxa --as bob\n  \
          deny       refuse a held statement                      ward deny r-7k2m9qxa --reason \"not now\"\n  \
          replay     a recorded session as a timeline             ward replay 0190a1b2-7c3d --pace\n  \
          verify     check session logs' hash chains, signatures  ward verify --config ward.yaml\n  \
          export     sessions as a verifiable evidence bundle     ward export --identity ci-nightly --since 7d -o evidence.tar\n  \
          keys       the session-log signing key                  ward keys show\n  \
          mask       try the masking rules on sample values       ward mask --target orders-db 'jane@example.com'\n\n\
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

    /// Log in at your identity provider and get a ward session token.
    #[command(long_about = "Log in at your identity provider (the IdP named by the \
        gateway's identity.login) and get a ward session token, stored for `ward token \
        current` and the other verbs.\n\n\
        By default this prints a URL to log in at (and opens it with xdg-open unless \
        --no-browser); the browser comes back to a one-time listener on \
        http://127.0.0.1:<random port>/callback (authorization code with PKCE). On a machine \
        without a browser, --device prints a code to enter on any other device instead.\n\n\
        The session is written to $WARD_CONFIG_DIR/session.json, else \
        $XDG_CONFIG_HOME/ward/session.json, else ~/.config/ward/session.json (mode 0600). It \
        lasts identity.login.ttl (8h by default); run `ward login` again after that. The \
        gateway comes from --api, else WARD_API, else listen.api of the config file.\n\n\
        Examples:\n  \
          ward login --api http://ward.internal:8080\n  \
          ward login --device\n  \
          PGPASSWORD=$(ward token current) psql \"host=ward.internal port=15432 user=any dbname=orders-db sslmode=require\"")]
    Login(login::LoginArgs),

    /// Service tokens (create) and ward tokens (current, mint, list, revoke).
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

    /// End one live session now; its client is told why.
    #[command(long_about = "End one live session now.\n\n\
        The client gets an error naming ward and the reason (PostgreSQL: FATAL 57P01 \
        \"terminating connection: session <id> was ended by ward (<reason>)\"), the \
        statement running on the target is cancelled, and the audit records the kill with \
        the reason. Other sessions, including the identity's, are not affected: to stop an \
        identity altogether use `ward lock`.\n\n\
        SESSION is a live session's id from `ward sessions list` or a unique prefix of it of \
        at least 8 characters.\n\n\
        Like `ward sessions`, this asks the admin API of the running `ward serve` (see \
        --api and --admin-token).\n\n\
        Examples:\n  \
          ward kill 0190a1b2-7c3d --reason \"incident 42: runaway export\"")]
    Kill(controls::KillArgs),

    /// Lock an identity: refuse its new connections and end its live sessions.
    #[command(
        long_about = "Lock an identity: refuse its new connections and end every \
        live session it has, at once.\n\n\
        Refused clients are told the identity is locked and why (PostgreSQL: FATAL 28000); \
        ended sessions are told they were ended by ward. The lock lasts until `ward unlock`, \
        or for --for; it survives restarts of ward and is recorded in the audit. Locking an \
        identity that is already locked replaces the lock (e.g. to change its reason or \
        duration). Prints how many live sessions were ended.\n\n\
        Examples:\n  \
          ward lock ci-nightly --reason \"token leaked in build log\"\n  \
          ward lock alice --for 2h --reason \"incident 42\""
    )]
    Lock(controls::LockArgs),

    /// Lift an identity's lock so that it may connect again.
    #[command(long_about = "Lift an identity's lock so that it may connect again. \
        Sessions ended by the lock stay ended; clients reconnect on their own.\n\n\
        Example:\n  ward unlock ci-nightly --reason \"token rotated\"")]
    Unlock(controls::IdentityArgs),

    /// Pause an identity: its sessions stay connected, its statements wait.
    #[command(
        long_about = "Pause an identity: its sessions stay connected, but every \
        new statement they send (and those of sessions opened meanwhile) is held by ward, \
        without reaching the target, until `ward resume`. Statements already running finish. \
        Clients simply wait (their own timeouts still apply). The pause survives restarts of \
        ward and is recorded in the audit; `ward controls` shows how many statements are \
        held.\n\n\
        Example:\n  ward pause ci-nightly --reason \"checking what the nightly job is doing\""
    )]
    Pause(controls::IdentityArgs),

    /// Resume a paused identity, releasing its held statements.
    #[command(
        long_about = "Resume a paused identity: its held statements go to the \
        target, in order, and new ones flow again.\n\n\
        Example:\n  ward resume ci-nightly"
    )]
    Resume(controls::IdentityArgs),

    /// List the locks and pauses in force, or (--history) every containment action.
    #[command(
        long_about = "List the locks and pauses in force: who, since when, until \
        when, by whom, why, and for pauses how many statements are held right now.\n\n\
        With --history, list the recorded containment actions instead (lock, unlock, pause, \
        resume, kill), newest first.\n\n\
        Examples:\n  \
          ward controls\n  \
          ward controls --history --identity ci-nightly\n  \
          ward controls --format json"
    )]
    Controls(controls::ControlsArgs),

    /// Every identity ward knows: sources, groups, last use, expiry, review flags.
    #[command(subcommand)]
    Identities(IdentitiesCommand),

    /// Statements held for approval by `review` rules.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),

    /// Approve a held statement; once enough approvers agree, it runs.
    #[command(
        long_about = "Approve a statement that a `review` rule is holding.\n\n\
        The client that sent it was told `waiting for approval: request ID — approve with: \
        ward approve ID`; ID also appears in `ward approvals list`. Once the rule's number of \
        distinct approvals is reached, the statement goes to the target and the client gets \
        its result. Each approval is recorded in the audit with the approver's name.\n\n\
        Who may approve: when the rule lists approvers (identity names, group:NAME), only \
        they may, each as itself: --as NAME with that identity's ward token in WARD_TOKEN (or \
        --token). When the rule lists none, the admin token may (the default credential). \
        Nobody may approve their own statement.\n\n\
        Examples:\n  \
          WARD_TOKEN=$BOB_TOKEN ward approve r-7k2m9qxa --as bob --reason \"checked the WHERE clause\"\n  \
          ward approve r-7k2m9qxa"
    )]
    Approve(approvals::ApproveArgs),

    /// Deny a held statement; its client gets an error with your reason.
    #[command(
        long_about = "Deny a statement that a `review` rule is holding: it is not \
        run, and the client gets an error naming you and your reason. The denial is recorded \
        in the audit.\n\n\
        The same people who may approve may deny (see `ward approve --help`); the identity \
        that sent the statement may also cancel it this way.\n\n\
        Examples:\n  \
          WARD_TOKEN=$BOB_TOKEN ward deny r-7k2m9qxa --as bob --reason \"use the archive job\"\n  \
          ward deny r-7k2m9qxa --reason \"not during the freeze\""
    )]
    Deny(approvals::DenyArgs),

    /// ward's session-log signing key.
    #[command(subcommand)]
    Keys(evidence::KeysCommand),

    /// Verify that session logs are intact: hash chains and signatures.
    #[command(
        long_about = "Verify that the session logs in the audit store are intact.\n\n\
        Every event of a session is stored as its exact bytes in a SHA-256 hash chain, and \
        the chain head is signed with ward's Ed25519 key at the session's end and every 64 \
        events. This recomputes the chains and checks the signatures, and names the first \
        event that was altered, removed, inserted or reordered. It exits non-zero if any \
        session fails.\n\n\
        It reads the store named by the config file directly (no running gateway needed). \
        Without SESSION it checks every logged session and the gateway chain (locks, pauses). \
        By default it verifies against the key in <data_dir>/signing.key; pass the public key \
        obtained separately with --public-key to check a copied store.\n\n\
        Given files (evidence bundles from `ward export`, e.g. evidence.tar), it checks them \
        instead, with no config needed: the manifest's file hashes, then every chain and \
        signature. Pass ward's public key with --public-key: without it the bundle is checked \
        against the key inside it, which proves it is consistent but not that ward signed it.\n\n\
        Examples:\n  \
          ward verify --config ward.yaml\n  \
          ward verify 0190a1b2-7c3d-7e4f-8a9b-0c1d2e3f4a5b --public-key 3b6a27bc…\n  \
          ward verify evidence.tar --public-key 3b6a27bc…"
    )]
    Verify(evidence::VerifyArgs),

    /// Write sessions' logs to a self-contained, verifiable evidence bundle (a tar).
    #[command(
        long_about = "Write the tamper-evident logs of the selected sessions to a \
        self-contained evidence bundle (a tar): every event as its exact recorded bytes with \
        its hash, the signed checkpoints, ward's public key, a manifest with the SHA-256 of \
        every file, and a README explaining how to check it without ward. `ward verify \
        BUNDLE --public-key HEX` checks it anywhere.\n\n\
        Select sessions by id (or a unique prefix of at least 8 characters), or with \
        --identity, --target, --since and --until (the forms of `ward sessions list`); with \
        neither, every session. --include-gateway adds the gateway chain (locks, pauses and \
        their lifting), always whole. A selection that matches nothing is an error.\n\n\
        Like `ward verify` it reads the store named by the config file directly (no running \
        gateway needed; a copy of the store works). The bundle is written readable by its \
        owner only; `-o -` writes it to standard output.\n\n\
        Examples:\n  \
          ward export 0190a1b2-7c3d -o incident-42.tar\n  \
          ward export --identity ci-nightly --since 7d --include-gateway -o evidence.tar\n  \
          ward export --since 2026-01-01 --until 2026-02-01 -o - | gzip > january.tar.gz"
    )]
    Export(evidence::ExportArgs),

    /// Replay a recorded session as a timeline (through the admin API).
    #[command(
        long_about = "Replay a recorded session as a timeline: each statement with its \
        time offset from the session start, the policy decision (and rule), the command, \
        rows and duration, then how the session ended.\n\n\
        --pace prints each step when it happened (--speed 10 plays ten times faster); \
        --format json prints the steps as JSON (one object per line with --pace).\n\n\
        SESSION is a session id from `ward sessions list` or a unique prefix of it of at \
        least 8 characters. Like `ward sessions`, this asks the admin API of the running \
        `ward serve` (see --api and --admin-token).\n\n\
        Examples:\n  \
          ward replay 0190a1b2-7c3d\n  \
          ward replay 0190a1b2-7c3d --pace --speed 20\n  \
          ward replay 0190a1b2-7c3d --format json"
    )]
    Replay(replay::ReplayArgs),

    /// Show what the masking rules do to sample values (no database needed).
    #[command(
        long_about = "Show what the masking rules of the config file do to sample values,         for an identity on a target, without a database or a running gateway.

        Values come from the arguments, else one per line from standard input. With --column         they are treated as that result column (column rules and `scan:` scopes apply);         without it, as free text with every detector in force (as in error messages).         A value masked to NULL prints as (NULL). --explain also names the rules in force and         what each detector found.

        Examples:
            ward mask --config ward.yaml --target orders-db 'mail jane.roe@example.com'
            ward mask --target orders-db --identity ci-nightly --column public.customers.card_number 4111111111111111
            ward mask --target orders-db --identity dana --groups dpo --explain < samples.txt"
    )]
    Mask(mask::MaskArgs),
}

#[derive(Debug, Subcommand)]
pub enum IdentitiesCommand {
    /// List every identity with its sources, groups, last use, expiry and flags.
    #[command(
        long_about = "List every identity ward knows, one row each: the service tokens of \
        identity.tokens, the ward tokens in force (`ward login`, `ward token mint`), and every \
        identity seen in a session (IdP and CI identities appear once they have connected). \
        Each row shows where ward knows it from, its groups, its last session, when its \
        credential expires, the owner of its service token, and flags for review:\n\n  \
          long_lived        a service token that never expires (long_lived: true)\n  \
          unused            no session in the last --unused-days days (or never)\n  \
          expired           every configured token of it has expired\n  \
          owner_left_group  its token's owner was last seen without the token's owner_group\n  \
          owner_unknown     its token names an owner ward has never seen\n\n\
        ward learns an owner's groups only when the owner connects or runs `ward login`; \
        there is no directory sync, so someone who left a group but has not logged in since \
        still shows their old groups.\n\n\
        Like `ward sessions`, this asks the admin API of the running `ward serve` (see --api \
        and --admin-token); role auditor suffices.\n\n\
        Examples:\n  \
          ward identities list\n  \
          ward identities list --unused-days 90 --format json"
    )]
    List(identities::ListArgs),
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// List pending approval requests, then recently decided ones.
    #[command(
        long_about = "List approval requests: statements that `review` rules are \
        holding (pending, the next to expire first), then recently decided ones (approved, \
        denied, timed out, or withdrawn because its session ended), newest first.\n\n\
        With the admin token (the default) every request is listed; with --as NAME (and \
        that identity's ward token in WARD_TOKEN) only the requests NAME may decide, and \
        NAME's own.\n\n\
        Like `ward sessions`, this asks the admin API of the running `ward serve` (see --api \
        and --admin-token).\n\n\
        Examples:\n  \
          ward approvals list\n  \
          WARD_TOKEN=$BOB_TOKEN ward approvals list --as bob\n  \
          ward approvals list --format json"
    )]
    List(approvals::ListArgs),
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a new service token for an identity and print the config entry for it.
    #[command(long_about = "Mint a new service token for an identity.\n\n\
        Prints the token once, and the entry to paste under `identity.tokens:` in ward.yaml \
        (ward keeps only the token's SHA-256, so the token cannot be shown again). Clients \
        then log in with the identity as user name and the token as password.\n\n\
        Every token in ward.yaml needs an expiry or `long_lived: true` (see \
        docs/identity.md#token-expiry). The entry gets `expires:` now + --ttl (default 90d), \
        or the time --expires gives; --long-lived writes `long_lived: true` instead. --owner \
        names the identity responsible for the token and --owner-group the IdP group that \
        person must stay in, so tokens whose owner left can be found.\n\n\
        Examples:\n  \
          ward token create ci-nightly --target orders-db          # expires in 90 days\n  \
          ward token create alice --ttl 7d\n  \
          ward token create deploy-bot --ttl 30d --owner oidc:alice --owner-group sre\n  \
          ward token create release --expires 2027-01-01\n  \
          ward token create backup-job --long-lived --owner oidc:bob --format json")]
    Create(token::CreateArgs),

    /// Print the session token `ward login` stored (the PostgreSQL password).
    #[command(
        long_about = "Print the ward session token `ward login` stored, for use \
        as the password of any client that goes through ward. Fails, saying to run `ward \
        login`, when there is no session or it expired.\n\n\
        Examples:\n  \
          PGPASSWORD=$(ward token current) psql \"host=ward.internal port=15432 user=any dbname=orders-db sslmode=require\"\n  \
          export PGPASSWORD=$(ward token current)"
    )]
    Current(ward_tokens::CurrentArgs),

    /// Mint a short-lived token for a bot, from your `ward login` session.
    #[command(
        long_about = "Mint a short-lived token for a bot or a script, from your \
        `ward login` session. Its identity is <you>/<label> (e.g. oidc:alice/nightly), with \
        minted_by and label kept in the audit; it may reach only the --target targets (all \
        when none is given) and carries only the --group groups (yours; none by default).\n\n\
        Only members of identity.mint.groups may mint, for at most identity.mint.max_ttl \
        (1h by default), and a token never outlives the session that minted it. Locking you \
        (`ward lock oidc:alice`) also stops every token you minted. The token is printed \
        once, on standard output (details on standard error).\n\n\
        Examples:\n  \
          ward token mint --ttl 15m --target orders-db --label nightly\n  \
          BOT_TOKEN=$(ward token mint --ttl 1h --label etl --group dba --target orders-db --target hr-db)\n  \
          ward token mint --ttl 30m --label ci --format json"
    )]
    Mint(ward_tokens::MintArgs),

    /// List ward tokens: yours (session) or every one (admin token).
    #[command(long_about = "List ward tokens (from `ward login` and `ward token \
        mint`), newest first, never their secrets. With the admin token every token is \
        listed; with your `ward login` session, yours and those you minted. --all adds \
        expired and revoked ones.\n\n\
        Examples:\n  \
          ward token list\n  \
          ward token list --identity oidc:alice/nightly --all --format json")]
    List(ward_tokens::ListArgs),

    /// Revoke a ward token at once.
    #[command(
        long_about = "Revoke a ward token: no session can be opened with it any \
        more (clients are told it was revoked). The revocation is recorded in the audit \
        first. The admin token may revoke any token; you may revoke yours and those you \
        minted.\n\n\
        Examples:\n  \
          ward token revoke wt_3f2a9c1d0e4b5a67 --reason \"bot retired\""
    )]
    Revoke(ward_tokens::RevokeArgs),
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
        --command-contains finds sessions with a statement whose SQL contains the text; \
        --decision finds sessions with a statement that was denied, held for review, or \
        allowed (both together: the same statement).\n\n\
        Examples:\n  \
          ward sessions list\n  \
          ward sessions list --identity ci-nightly --since 24h\n  \
          ward sessions list --command-contains \"delete from orders\" --decision denied\n  \
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
        Command::Token(TokenCommand::Current(args)) => ward_tokens::current(&args),
        Command::Token(TokenCommand::Mint(args)) => ward_tokens::mint(&config, &args),
        Command::Token(TokenCommand::List(args)) => ward_tokens::list(&config, &args),
        Command::Token(TokenCommand::Revoke(args)) => ward_tokens::revoke(&config, &args),
        Command::Login(args) => login::login(&config, &args),
        Command::Sessions(args) => sessions::run(&config, &args.api, &args.command),
        Command::Kill(args) => controls::kill(&config, &args),
        Command::Lock(args) => controls::lock(&config, &args),
        Command::Unlock(args) => controls::unlock(&config, &args),
        Command::Pause(args) => controls::pause(&config, &args),
        Command::Resume(args) => controls::resume(&config, &args),
        Command::Controls(args) => controls::list(&config, &args),
        Command::Identities(IdentitiesCommand::List(args)) => identities::list(&config, &args),
        Command::Approvals(ApprovalsCommand::List(args)) => approvals::list(&config, &args),
        Command::Approve(args) => approvals::approve(&config, &args),
        Command::Deny(args) => approvals::deny(&config, &args),
        Command::Mask(args) => mask::run(&config, &args),
        Command::Replay(args) => replay::run(&config, &args),
        Command::Keys(command) => evidence::keys(&config, &command),
        Command::Verify(args) => evidence::verify(&config, &args),
        Command::Export(args) => evidence::export(&config, &args),
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
