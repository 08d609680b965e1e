//! A real `ward serve` process per test.
//!
//! [`Ward::start`] writes a `ward.yaml` into a fresh directory from [`WardOptions`] (target
//! passwords as `file:` secrets next to it), creates each token with the real
//! `ward token create NAME --format json`, picks free ports, starts `ward serve --config …`
//! with its output in `ward.log`, and waits until `GET /readyz` answers 200. The process is
//! killed when the [`Ward`] is dropped; if the test is panicking, the end of ward's log is
//! printed to help the diagnosis.

use super::postgres::PgTarget;
use super::tls::insecure_connector;
use super::{
    clear_libpq_env, conninfo_quote, describe, expect_success, free_port, fresh_dir, http_request,
    keep_dirs, run_with_timeout, ward_bin, write_file,
};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// How long [`Ward::start`] waits for `/readyz`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// How long one `psql` or CLI invocation may take before the test fails.
pub const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How ward secures its connection to a target.
#[derive(Clone, Debug, Default)]
pub enum TargetTls {
    /// `mode: disable` (plain TCP).
    #[default]
    Disable,
    /// `mode: require` (TLS, no certificate check).
    Require,
    /// `mode: verify-full` with this CA bundle and optional `server_name`.
    VerifyFull {
        ca: PathBuf,
        server_name: Option<String>,
    },
}

impl TargetTls {
    /// verify-full against the harness PostgreSQL's CA, with the given server name (`None`:
    /// ward checks the address's host, 127.0.0.1, which is in the certificate too).
    pub fn verify_harness_ca(server_name: Option<&str>) -> TargetTls {
        TargetTls::VerifyFull {
            ca: super::Postgres::get().ca_path().to_path_buf(),
            server_name: server_name.map(str::to_string),
        }
    }
}

/// One entry of `targets:`.
#[derive(Clone, Debug)]
pub struct Target {
    /// The target's name: what clients send as the database name.
    pub name: String,
    /// `host:port`.
    pub address: String,
    /// `database:`; `None` leaves it out (ward then uses the target's name).
    pub database: Option<String>,
    pub user: String,
    /// Written to `<dir>/secrets/<name>.password` and referenced as `file:`; `None` leaves
    /// the password out of the config.
    pub password: Option<String>,
    pub tls: TargetTls,
    /// Extra YAML lines inside this target's mapping (indented by the harness), e.g.
    /// `labels: { env: test }`.
    pub extra_yaml: String,
}

impl Target {
    /// A target named `name` pointing at a database made by
    /// [`super::Postgres::create_target`], plain TCP.
    pub fn postgres(name: &str, db: &PgTarget) -> Target {
        Target {
            name: name.to_string(),
            address: db.address.clone(),
            database: Some(db.database.clone()),
            user: db.user.clone(),
            password: Some(db.password.clone()),
            tls: TargetTls::Disable,
            extra_yaml: String::new(),
        }
    }

    /// Any target: `address` is `host:port`, the password (if any) becomes a `file:` secret.
    pub fn new(
        name: &str,
        address: &str,
        database: Option<&str>,
        user: &str,
        password: Option<&str>,
    ) -> Target {
        Target {
            name: name.to_string(),
            address: address.to_string(),
            database: database.map(str::to_string),
            user: user.to_string(),
            password: password.map(str::to_string),
            tls: TargetTls::Disable,
            extra_yaml: String::new(),
        }
    }

    pub fn tls(mut self, tls: TargetTls) -> Target {
        self.tls = tls;
        self
    }

    pub fn password(mut self, password: Option<&str>) -> Target {
        self.password = password.map(str::to_string);
        self
    }

    pub fn extra_yaml(mut self, yaml: &str) -> Target {
        self.extra_yaml = yaml.to_string();
        self
    }
}

/// A token to create with `ward token create` and list under `identity.tokens`.
#[derive(Clone, Debug, Default)]
pub struct TokenSpec {
    pub identity: String,
    /// Passed as `--expires` to `ward token create` (e.g. `30d`); the printed expiry goes
    /// into the config.
    pub expires_in: Option<String>,
    /// Written verbatim as `expires:` in the config, overriding the above (e.g. a date in the
    /// past to test expired tokens).
    pub expires_at: Option<String>,
    /// Passed as `--long-lived` and written as `long_lived: true` with no `expires`. Without
    /// it (and without the above) the token expires in 90 days, `ward token create`'s
    /// default.
    pub long_lived: bool,
    /// Passed as `--target` and written as `targets:`; `None` means every target.
    pub targets: Option<Vec<String>>,
    /// Written as `groups:`.
    pub groups: Vec<String>,
    /// Written as `owner:` and `owner_group:`.
    pub owner: Option<String>,
    pub owner_group: Option<String>,
}

impl TokenSpec {
    pub fn new(identity: &str) -> TokenSpec {
        TokenSpec {
            identity: identity.to_string(),
            ..TokenSpec::default()
        }
    }

    pub fn expires_in(mut self, d: &str) -> TokenSpec {
        self.expires_in = Some(d.to_string());
        self
    }

    pub fn expires_at(mut self, t: &str) -> TokenSpec {
        self.expires_at = Some(t.to_string());
        self
    }

    /// A token that never expires (`long_lived: true`).
    pub fn long_lived(mut self) -> TokenSpec {
        self.long_lived = true;
        self
    }

    pub fn targets(mut self, targets: &[&str]) -> TokenSpec {
        self.targets = Some(targets.iter().map(|t| t.to_string()).collect());
        self
    }

    pub fn groups(mut self, groups: &[&str]) -> TokenSpec {
        self.groups = groups.iter().map(|g| g.to_string()).collect();
        self
    }

    /// The identity responsible for the token and, optionally, the group it must stay in.
    pub fn owner(mut self, owner: &str, group: Option<&str>) -> TokenSpec {
        self.owner = Some(owner.to_string());
        self.owner_group = group.map(str::to_string);
        self
    }
}

/// What to put in the generated ward.yaml.
#[derive(Clone, Debug, Default)]
pub struct WardOptions {
    pub targets: Vec<Target>,
    pub tokens: Vec<TokenSpec>,
    /// `tls: { allow_plaintext: true }`.
    pub allow_plaintext: bool,
    /// Raw YAML appended to the file (top-level keys the harness does not write itself:
    /// `limits`, `audit`, `store`, `api`; `tls` only when `allow_plaintext` is false).
    pub extra_yaml: String,
    /// Environment variables for `ward serve` (e.g. for `env:` secrets or `RUST_LOG`).
    pub env: Vec<(String, String)>,
    /// Raw YAML lines inside `identity:` besides `tokens` (indented by the harness), e.g.
    /// `oidc:` issuers or `on_expiry: refuse`.
    pub identity_yaml: String,
    /// SSH: `listen.ssh` on a free port, SSH targets and client keys (see
    /// [`super::sshd::SshOptions`]); `None` leaves SSH off.
    pub ssh: Option<super::sshd::SshOptions>,
}

impl WardOptions {
    pub fn new() -> WardOptions {
        WardOptions::default()
    }

    pub fn target(mut self, target: Target) -> WardOptions {
        self.targets.push(target);
        self
    }

    /// A token for `identity`, valid for every target, expiring in 90 days (the default of
    /// `ward token create`; every token in ward.yaml needs an expiry or `long_lived: true`).
    pub fn token(self, identity: &str) -> WardOptions {
        self.token_spec(TokenSpec::new(identity))
    }

    pub fn token_spec(mut self, spec: TokenSpec) -> WardOptions {
        self.tokens.push(spec);
        self
    }

    pub fn allow_plaintext(mut self, yes: bool) -> WardOptions {
        self.allow_plaintext = yes;
        self
    }

    pub fn extra_yaml(mut self, yaml: &str) -> WardOptions {
        self.extra_yaml.push_str(yaml);
        if !self.extra_yaml.ends_with('\n') {
            self.extra_yaml.push('\n');
        }
        self
    }

    /// Lines inside `identity:` (see [`WardOptions::identity_yaml`]), written unindented.
    pub fn identity_yaml(mut self, yaml: &str) -> WardOptions {
        self.identity_yaml.push_str(yaml);
        if !self.identity_yaml.ends_with('\n') {
            self.identity_yaml.push('\n');
        }
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> WardOptions {
        self.env.push((key.to_string(), value.to_string()));
        self
    }
}

/// A token printed by `ward token create --format json`.
#[derive(Clone, Debug)]
pub struct IssuedToken {
    pub identity: String,
    pub token: String,
    pub hash: String,
    /// `expires` as printed (RFC 3339), if any.
    pub expires: Option<String>,
}

/// A running `ward serve`.
pub struct Ward {
    dir: PathBuf,
    config_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    registered: Option<super::RegisteredChild>,
    pg_addr: SocketAddr,
    api_addr: SocketAddr,
    ssh_addr: Option<SocketAddr>,
    tokens: Vec<IssuedToken>,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

impl Ward {
    /// Starts ward and waits until it is ready; fails the test with ward's log otherwise.
    pub fn start(options: WardOptions) -> Ward {
        Ward::try_start(options).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Like [`Ward::start`] but returns why ward did not become ready (including its log),
    /// e.g. to test that a bad config is refused at start.
    pub fn try_start(options: WardOptions) -> Result<Ward, String> {
        let dir = fresh_dir("ward");
        let mut tokens = Vec::new();
        for spec in &options.tokens {
            tokens.push(create_token(&dir, spec)?);
        }
        let mut last = String::new();
        // A port picked as free can be taken again before ward binds it; retry then.
        for _attempt in 0..3 {
            let pg_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let api_addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
            let ssh_addr: Option<SocketAddr> = options
                .ssh
                .as_ref()
                .map(|_| format!("127.0.0.1:{}", free_port()).parse().expect("addr"));
            let config_path = dir.join("ward.yaml");
            let yaml = render_config(&dir, &options, &tokens, pg_addr, api_addr, ssh_addr);
            write_file(&config_path, yaml, 0o600);
            let mut ward = Ward {
                data_dir: dir.join("ward-data"),
                log_path: dir.join("ward.log"),
                registered: None,
                dir: dir.clone(),
                config_path,
                pg_addr,
                api_addr,
                ssh_addr,
                tokens: tokens.clone(),
                env: options.env.clone(),
                child: None,
            };
            match ward.spawn_and_wait() {
                Ok(()) => return Ok(ward),
                Err(e) => {
                    let in_use = e.contains("in use") || e.contains("AddrInUse");
                    last = e;
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last)
    }

    fn spawn_and_wait(&mut self) -> Result<(), String> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| format!("open {}: {e}", self.log_path.display()))?;
        let log_offset = log.metadata().map(|m| m.len()).unwrap_or(0);
        let mut cmd = Command::new(ward_bin());
        cmd.arg("serve")
            .arg("--config")
            .arg(&self.config_path)
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log);
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        // Own process group, registered with the watchdog: killed even if the test process dies.
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", ward_bin().display()))?;
        self.registered = Some(super::register_child(child.id()));
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                self.child = None;
                self.registered = None;
                return Err(format!(
                    "ward serve exited before it was ready ({status})\nconfig {}:\n{}\n--- ward log ---\n{}",
                    self.config_path.display(),
                    std::fs::read_to_string(&self.config_path).unwrap_or_default(),
                    self.log_since(log_offset)
                ));
            }
            if let Ok((200, _)) = http_request(self.api_addr, "GET", "/readyz", None, None) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(format!(
                    "ward serve was not ready (GET http://{}/readyz) within {READY_TIMEOUT:?}\n--- ward log ---\n{}",
                    self.api_addr,
                    self.log_since(log_offset)
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let all = std::fs::read(&self.log_path).unwrap_or_default();
        String::from_utf8_lossy(all.get(offset as usize..).unwrap_or(&all)).into_owned()
    }

    /// Stops ward with SIGTERM (SIGKILL after 10 s) and returns how it exited.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break Some(status),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                _ => {
                    let _ = child.kill();
                    break child.wait().ok();
                }
            }
        };
        self.registered = None;
        status
    }

    /// Stops ward gracefully and starts it again with the same config, ports and data
    /// directory (for persistence tests).
    pub fn restart(&mut self) {
        self.stop();
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    /// Kills ward with SIGKILL (no chance to flush or sign anything) and starts it again
    /// with the same config, ports and data directory (crash tests).
    pub fn crash_and_restart(&mut self) {
        if let Some(child) = &self.child {
            // SAFETY: plain kill(2) on our own child's pid.
            unsafe {
                libc::kill(child.id() as libc::pid_t, libc::SIGKILL);
            }
        }
        self.kill();
        if let Err(e) = self.spawn_and_wait() {
            panic!("{e}");
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.registered = None;
    }

    /// The process id of `ward serve`, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// The port PostgreSQL clients connect to.
    pub fn pg_port(&self) -> u16 {
        self.pg_addr.port()
    }

    pub fn pg_addr(&self) -> SocketAddr {
        self.pg_addr
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The port SSH clients connect to (panics unless the options enabled SSH).
    pub fn ssh_port(&self) -> u16 {
        self.ssh_addr
            .expect("SSH is off: start ward with WardOptions::ssh")
            .port()
    }

    /// `http://127.0.0.1:<port>`
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api_addr)
    }

    /// The directory holding ward.yaml, secrets/, ward-data/ and ward.log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Everything ward has logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The admin token ward generated on first start (`<data_dir>/admin.token`).
    pub fn admin_token(&self) -> String {
        let path = self.data_dir.join("admin.token");
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
            .trim()
            .to_string()
    }

    /// Every token created for this ward.
    pub fn tokens(&self) -> &[IssuedToken] {
        &self.tokens
    }

    /// The (first) token created for `identity`.
    pub fn token(&self, identity: &str) -> String {
        self.tokens
            .iter()
            .find(|t| t.identity == identity)
            .unwrap_or_else(|| panic!("no token was created for identity {identity:?}"))
            .token
            .clone()
    }

    /// libpq conninfo for `identity` on `target` through ward, with its token, sslmode=require.
    pub fn conninfo(&self, identity: &str, target: &str) -> String {
        self.conninfo_with(identity, target, &self.token(identity), "require")
    }

    /// libpq conninfo with any password and sslmode (for negative tests).
    pub fn conninfo_with(
        &self,
        identity: &str,
        target: &str,
        password: &str,
        sslmode: &str,
    ) -> String {
        format!(
            "host=127.0.0.1 port={} dbname={} user={} password={} sslmode={sslmode}",
            self.pg_port(),
            conninfo_quote(target),
            conninfo_quote(identity),
            conninfo_quote(password)
        )
    }

    /// Runs `psql -X -At -v ON_ERROR_STOP=1 -c SQL` as `identity` on `target` through ward.
    pub fn psql(&self, identity: &str, target: &str, sql: &str) -> Output {
        self.psql_args(&self.conninfo(identity, target), &["-At", "-c", sql])
    }

    /// Like [`Ward::psql`]; returns stdout and fails the test if psql failed.
    pub fn psql_ok(&self, identity: &str, target: &str, sql: &str) -> String {
        expect_success(
            self.psql(identity, target, sql),
            &format!("psql as {identity} on {target}: {sql}"),
        )
    }

    /// Runs `psql -X -v ON_ERROR_STOP=1 -d CONNINFO ARGS…` (any conninfo, any arguments).
    pub fn psql_args(&self, conninfo: &str, args: &[&str]) -> Output {
        let mut cmd = super::postgres::psql_command();
        cmd.args(["-X", "-v", "ON_ERROR_STOP=1", "-d", conninfo])
            .args(args);
        run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Runs `ward --config <ward.yaml> ARGS…`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(ward_bin());
        cmd.arg("--config")
            .arg(&self.config_path)
            .args(args)
            .current_dir(&self.dir);
        clear_libpq_env(&mut cmd);
        run_with_timeout(&mut cmd, COMMAND_TIMEOUT)
    }

    /// Like [`Ward::cli`]; returns stdout and fails the test if the command failed.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        expect_success(self.cli(args), &format!("ward {}", args.join(" ")))
    }

    /// `ward sessions list --format json`, parsed.
    pub fn sessions_json(&self) -> serde_json::Value {
        parse_json(
            &self.cli_ok(&["sessions", "list", "--format", "json"]),
            "sessions list",
        )
    }

    /// `ward sessions show ID --format json`, parsed.
    pub fn session_json(&self, id: &str) -> serde_json::Value {
        parse_json(
            &self.cli_ok(&["sessions", "show", id, "--format", "json"]),
            "sessions show",
        )
    }

    /// An HTTP request to the admin API with the admin token; returns status and body.
    pub fn api(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        http_request(self.api_addr, method, path, Some(&self.admin_token()), body)
            .unwrap_or_else(|e| panic!("{method} {}{path}: {e}", self.api_url()))
    }

    /// tokio-postgres configuration for `identity` on `target` through ward (TLS required).
    pub fn pg_config(&self, identity: &str, target: &str) -> tokio_postgres::Config {
        let mut config = tokio_postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(self.pg_port())
            .dbname(target)
            .user(identity)
            .password(self.token(identity))
            .ssl_mode(tokio_postgres::config::SslMode::Require)
            .application_name("ward-test")
            .connect_timeout(Duration::from_secs(10));
        config
    }

    /// A tokio-postgres client through ward over TLS (ward's certificate is not verified).
    /// Call inside a tokio runtime; the connection task is spawned on it and its handle
    /// returned (it ends when the client is dropped or the session is closed).
    pub async fn client(
        &self,
        identity: &str,
        target: &str,
    ) -> (
        tokio_postgres::Client,
        tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
    ) {
        self.try_client(self.pg_config(identity, target))
            .await
            .unwrap_or_else(|e| panic!("connect through ward as {identity} to {target}: {e}"))
    }

    /// Connects with any configuration (e.g. a wrong password) and returns the error.
    pub async fn try_client(
        &self,
        config: tokio_postgres::Config,
    ) -> Result<
        (
            tokio_postgres::Client,
            tokio::task::JoinHandle<Result<(), tokio_postgres::Error>>,
        ),
        tokio_postgres::Error,
    > {
        let (client, connection) = config.connect(insecure_connector()).await?;
        Ok((client, tokio::spawn(connection)))
    }
}

impl Drop for Ward {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!(
                "--- last {} lines of ward's log ({}) ---\n{}\n--- end of ward's log ---",
                tail.len(),
                self.log_path.display(),
                tail.join("\n")
            );
        }
        if keep_dirs() {
            eprintln!("harness: keeping {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn parse_json(text: &str, what: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}):\n{text}"))
}

fn create_token(dir: &Path, spec: &TokenSpec) -> Result<IssuedToken, String> {
    let mut cmd = Command::new(ward_bin());
    cmd.args(["token", "create", &spec.identity, "--format", "json"])
        .current_dir(dir);
    if let Some(d) = &spec.expires_in {
        cmd.args(["--expires", d]);
    }
    if spec.long_lived {
        cmd.arg("--long-lived");
    }
    for t in spec.targets.iter().flatten() {
        cmd.args(["--target", t]);
    }
    let out = run_with_timeout(&mut cmd, COMMAND_TIMEOUT);
    if !out.status.success() {
        return Err(format!(
            "ward token create {} failed\n{}",
            spec.identity,
            describe(&out)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("ward token create printed no JSON ({e}):\n{text}"))?;
    let field = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    Ok(IssuedToken {
        identity: spec.identity.clone(),
        token: field("token").ok_or_else(|| format!("no \"token\" in {v}"))?,
        hash: field("hash").ok_or_else(|| format!("no \"hash\" in {v}"))?,
        expires: field("expires"),
    })
}

/// A YAML scalar: JSON strings are valid YAML double-quoted scalars.
fn q(s: &str) -> String {
    serde_json::to_string(s).expect("string to JSON")
}

fn render_config(
    dir: &Path,
    options: &WardOptions,
    tokens: &[IssuedToken],
    pg_addr: SocketAddr,
    api_addr: SocketAddr,
    ssh_addr: Option<SocketAddr>,
) -> String {
    let mut y = String::from("# written by the ward test harness\n");
    y.push_str(&format!(
        "data_dir: {}\n",
        q(&dir.join("ward-data").to_string_lossy())
    ));
    y.push_str(&format!(
        "listen: {{ postgres: {}, api: {}{} }}\n",
        q(&pg_addr.to_string()),
        q(&api_addr.to_string()),
        ssh_addr.map_or(String::new(), |a| format!(", ssh: {}", q(&a.to_string())))
    ));
    if options.allow_plaintext {
        y.push_str("tls: { allow_plaintext: true }\n");
    }
    if tokens.is_empty() && options.identity_yaml.is_empty() {
        y.push_str("identity: { tokens: [] }\n");
    } else if tokens.is_empty() {
        y.push_str("identity:\n  tokens: []\n");
    } else {
        y.push_str("identity:\n  tokens:\n");
    }
    for (spec, issued) in options.tokens.iter().zip(tokens) {
        y.push_str(&format!(
            "    - name: {}\n      hash: {}\n",
            q(&spec.identity),
            q(&issued.hash)
        ));
        if let Some(e) = spec.expires_at.as_ref().or(issued.expires.as_ref()) {
            y.push_str(&format!("      expires: {}\n", q(e)));
        } else if spec.long_lived {
            y.push_str("      long_lived: true\n");
        }
        if let Some(targets) = &spec.targets {
            let list: Vec<String> = targets.iter().map(|t| q(t)).collect();
            y.push_str(&format!("      targets: [{}]\n", list.join(", ")));
        }
        if !spec.groups.is_empty() {
            let list: Vec<String> = spec.groups.iter().map(|g| q(g)).collect();
            y.push_str(&format!("      groups: [{}]\n", list.join(", ")));
        }
        if let Some(owner) = &spec.owner {
            y.push_str(&format!("      owner: {}\n", q(owner)));
        }
        if let Some(group) = &spec.owner_group {
            y.push_str(&format!("      owner_group: {}\n", q(group)));
        }
    }
    for line in options.identity_yaml.lines() {
        y.push_str(&format!("  {line}\n"));
    }
    let ssh_targets = options
        .ssh
        .as_ref()
        .map_or(String::new(), |ssh| ssh.render_targets(dir));
    if options.targets.is_empty() && ssh_targets.is_empty() {
        y.push_str("targets: {}\n");
    } else {
        y.push_str("targets:\n");
        let secrets = dir.join("secrets");
        std::fs::create_dir_all(&secrets).expect("mkdir secrets");
        for (i, t) in options.targets.iter().enumerate() {
            y.push_str(&format!(
                "  {}:\n    postgres: {}\n",
                q(&t.name),
                q(&t.address)
            ));
            if let Some(db) = &t.database {
                y.push_str(&format!("    database: {}\n", q(db)));
            }
            y.push_str(&format!("    credential:\n      user: {}\n", q(&t.user)));
            if let Some(pw) = &t.password {
                let path = secrets.join(format!("target-{i}.password"));
                write_file(&path, format!("{pw}\n"), 0o600);
                y.push_str(&format!(
                    "      password: {}\n",
                    q(&format!("file:{}", path.display()))
                ));
            }
            match &t.tls {
                TargetTls::Disable => y.push_str("    tls: { mode: disable }\n"),
                TargetTls::Require => y.push_str("    tls: { mode: require }\n"),
                TargetTls::VerifyFull { ca, server_name } => {
                    y.push_str(&format!(
                        "    tls:\n      mode: verify-full\n      ca: {}\n",
                        q(&ca.to_string_lossy())
                    ));
                    if let Some(name) = server_name {
                        y.push_str(&format!("      server_name: {}\n", q(name)));
                    }
                }
            }
            for line in t.extra_yaml.lines() {
                y.push_str(&format!("    {line}\n"));
            }
        }
    }
    y.push_str(&ssh_targets);
    y.push_str(&options.extra_yaml);
    y
}
