//! Test harness for ward's integration tests: a real PostgreSQL and real `ward` processes.
//!
//! Use it from a test file in `crates/ward/tests/` with `mod harness;`:
//!
//! ```ignore
//! mod harness;
//! use harness::{AuthMethod, Postgres, Target, Ward, WardOptions};
//!
//! #[test]
//! fn select_through_ward() {
//!     let db = Postgres::get().create_target("orders", AuthMethod::ScramSha256);
//!     let ward = Ward::start(WardOptions::new().target(Target::postgres("orders-db", &db)).token("ci"));
//!     assert_eq!(ward.psql_ok("ci", "orders-db", "select 1"), "1");
//! }
//! ```
//!
//! * [`Postgres`]: one throwaway PostgreSQL per test process (started on first use, stopped by
//!   a watchdog when the process exits), with TLS from a harness CA and users for the
//!   scram-sha-256, md5 and password (cleartext) methods.
//! * [`Ward`]: one `ward serve` per test, built from [`WardOptions`], killed on drop.
//! * [`oidc`]: the real OpenID Connect provider and an in-test token issuer, for tests of
//!   IdP and CI tokens presented as passwords.
//! * [`wait_for`] / [`wait_until`]: poll until something becomes true (for audit rows that land
//!   asynchronously; not a timing assertion).
//!
//! Everything lives under one temporary directory per test process ([`run_root`]) that the
//! watchdog deletes. Set `WARD_TEST_KEEP=1` to keep it (and every ward directory) for
//! debugging; its path is printed on stderr.

#![allow(dead_code, unused_imports)]

pub mod oidc;
mod postgres;
pub mod sshd;
mod tls;
mod ward;

pub use postgres::{AuthMethod, PgTarget, Postgres, quote_ident};
pub use tls::{insecure_client_config, insecure_connector, verifying_connector};
pub use ward::{IssuedToken, Target, TargetTls, TokenSpec, Ward, WardOptions};

use std::future::Future;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long [`wait_for`] and friends poll before failing the test.
pub const WAIT_TIMEOUT: Duration = Duration::from_secs(15);

/// The `ward` binary under test (built by cargo for this test run).
pub fn ward_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_ward"))
}

/// True when the tests run as root (then PostgreSQL runs as user `postgres`).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `WARD_TEST_KEEP` asks to keep temporary directories.
pub fn keep_dirs() -> bool {
    std::env::var_os("WARD_TEST_KEEP").is_some_and(|v| !v.is_empty() && v != "0")
}

struct RunRoot {
    path: PathBuf,
}

static RUN_ROOT: OnceLock<RunRoot> = OnceLock::new();

/// The per-process temporary directory everything else lives in. The first call starts the
/// watchdog: when this test process exits (normally or not), it kills leftover `ward`
/// processes registered in `<run_root>/pids/`, stops PostgreSQL with `pg_ctl stop -m
/// immediate` (via `<run_root>/on-exit.sh`, written by [`Postgres`]) and deletes the directory.
pub fn run_root() -> &'static Path {
    &RUN_ROOT
        .get_or_init(|| {
            let path = std::env::temp_dir().join(format!(
                "ward-test-{}-{}",
                std::process::id(),
                unique_suffix()
            ));
            std::fs::create_dir_all(path.join("pids")).expect("create the harness run directory");
            set_mode(&path, 0o755); // PostgreSQL runs as `postgres` and must traverse it
            start_watchdog(&path);
            if keep_dirs() {
                eprintln!("harness: WARD_TEST_KEEP is set; keeping {}", path.display());
            }
            RunRoot { path }
        })
        .path
}

// The watchdog must outlive this process, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn start_watchdog(root: &Path) {
    // Harness child processes run in their own process groups and are registered in
    // pids/ while they run, so everything a killed test process leaves behind (ward,
    // psql, runuser+initdb, ...) can be killed; the stop script runs twice in case a
    // `pg_ctl start` in flight launched the server just after the first round.
    let script = r#"
pid="$1"; root="$2"; keep="$3"
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
stop_all() {
  for f in "$root"/pids/*; do
    [ -f "$f" ] || continue
    p=$(cat "$f")
    kill -9 "-$p" 2>/dev/null
    kill -9 "$p" 2>/dev/null
  done
  [ -f "$root/on-exit.sh" ] && sh "$root/on-exit.sh" >/dev/null 2>&1
}
stop_all
sleep 1
stop_all
[ "$keep" = 1 ] || rm -rf "$root"
"#;
    let keep = if keep_dirs() { "1" } else { "0" };
    use std::os::unix::process::CommandExt;
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg("ward-test-watchdog")
        .arg(std::process::id().to_string())
        .arg(root)
        .arg(keep)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        // Its own process group: a Ctrl-C aimed at `cargo test` must not kill the cleaner.
        .process_group(0)
        .spawn()
        .expect("spawn the harness watchdog (sh)");
}

/// A number unique within this test process (for database, role and directory names).
pub fn unique_suffix() -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A fresh directory under [`run_root`], removed by the watchdog at the latest.
pub fn fresh_dir(prefix: &str) -> PathBuf {
    let dir = run_root().join(format!("{prefix}-{}", unique_suffix()));
    std::fs::create_dir_all(&dir).expect("create a test directory");
    dir
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bind to port 0, read it, close).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to find a free port")
        .port()
}

/// A random alphanumeric string (passwords, names).
pub fn random_string(len: usize) -> String {
    use rand::Rng;
    rand::thread_rng()
        .sample_iter(&rand::distributions::Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

pub(crate) fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Writes `content` to `path` with permissions `mode` (created fresh).
pub fn write_file(path: &Path, content: impl AsRef<[u8]>, mode: u32) {
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    set_mode(path, mode);
}

/// Polls `cond` until it returns true, failing the test with `what` after [`WAIT_TIMEOUT`].
/// For things that happen asynchronously (audit rows landing, sessions closing); the
/// timeout is generous and is not a performance assertion.
pub fn wait_for(mut cond: impl FnMut() -> bool, what: &str) {
    wait_until(|| cond().then_some(()), what)
}

/// Polls `f` until it returns `Some`, and returns that value; fails like [`wait_for`].
pub fn wait_until<T>(f: impl FnMut() -> Option<T>, what: &str) -> T {
    wait_until_within(WAIT_TIMEOUT, f, what)
}

/// [`wait_until`] with a chosen timeout.
pub fn wait_until_within<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>, what: &str) -> T {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// The async form of [`wait_for`], for conditions that need `.await` (e.g. a query over a
/// tokio-postgres client). Does not block the runtime's thread.
pub async fn wait_for_async<F, Fut>(mut cond: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + WAIT_TIMEOUT;
    let mut pause = Duration::from_millis(20);
    loop {
        if cond().await {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {WAIT_TIMEOUT:?} waiting for {what}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(250));
    }
}

/// A tokio runtime for a test's async client code (two workers, like the machine's cores).
pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A command's stdout followed by its stderr, for assertions on what a user would see.
pub fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A target database with a table `t` (rows 1, 2) owned by the target's user.
pub fn target_with_table(name: &str) -> PgTarget {
    let pg = Postgres::get();
    let db = pg.create_target(name, AuthMethod::ScramSha256);
    pg.admin_sql(
        &db.database,
        &format!(
            "create table t (i int); insert into t values (1), (2); alter table t owner to {}",
            quote_ident(&db.user)
        ),
    );
    db
}

/// Runs `cmd` with stdin closed and stdout/stderr captured, killing it and failing the test
/// if it has not finished after `timeout` (a hung client must not hang the suite).
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> Output {
    use std::os::unix::process::CommandExt;
    let shown = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    let registered = register_child(child.id());
    let mut out = child.stdout.take().expect("piped stdout");
    let mut err = child.stderr.take().expect("piped stderr");
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                drop(registered);
                let _ = child.kill();
                let _ = child.wait();
                let stdout = out_reader.join().unwrap_or_default();
                let stderr = err_reader.join().unwrap_or_default();
                panic!(
                    "{shown} did not finish within {timeout:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                    String::from_utf8_lossy(&stdout),
                    String::from_utf8_lossy(&stderr)
                );
            }
            Err(e) => panic!("waiting for {shown}: {e}"),
        }
    };
    drop(registered);
    Output {
        status,
        stdout: out_reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

/// A child process registered in `<run_root>/pids/` (killed with its process group by the
/// watchdog if the test process dies first); unregistered on drop.
pub struct RegisteredChild {
    path: PathBuf,
}

/// Registers a child process (which should lead its own process group) with the watchdog.
pub fn register_child(pid: u32) -> RegisteredChild {
    let path = run_root().join("pids").join(format!("child-{pid}"));
    let _ = std::fs::write(&path, pid.to_string());
    RegisteredChild { path }
}

impl Drop for RegisteredChild {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Formats a command's output for an assertion message.
pub fn describe(output: &Output) -> String {
    format!(
        "exit: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Stdout of a command that must have succeeded (trailing newline removed).
pub fn expect_success(output: Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed\n{}",
        describe(&output)
    );
    String::from_utf8_lossy(&output.stdout)
        .trim_end_matches('\n')
        .to_string()
}

/// Removes libpq environment variables a developer may have set, so only the arguments
/// given by the harness count.
pub(crate) fn clear_libpq_env(cmd: &mut Command) -> &mut Command {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("PG") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("PGCONNECT_TIMEOUT", "10")
        .env("PGAPPNAME", "ward-test")
        .env("PSQLRC", "/dev/null")
}

/// Quotes a value for a libpq conninfo string.
pub fn conninfo_quote(value: &str) -> String {
    format!("'{}'", value.replace('\\', "\\\\").replace('\'', "\\'"))
}

/// A minimal HTTP/1.1 request over std TCP (no extra dependencies): returns the status code
/// and body. Understands `Content-Length`, chunked bodies and close-delimited bodies.
pub fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<&str>,
) -> std::io::Result<(u16, String)> {
    use std::io::Write;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.set_write_timeout(Some(Duration::from_secs(10)))?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if let Some(token) = bearer {
        req.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    if let Some(body) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    req.push_str("\r\n");
    if let Some(body) = body {
        req.push_str(body);
    }
    stream.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    parse_http_response(&raw).ok_or_else(|| {
        std::io::Error::other(format!(
            "malformed HTTP response: {:?}",
            String::from_utf8_lossy(&raw)
        ))
    })
}

/// Parses a complete HTTP/1.x response (see [`http_request`]).
pub fn parse_http_response(raw: &[u8]) -> Option<(u16, String)> {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&raw[..split]).ok()?;
    let mut body = raw[split + 4..].to_vec();
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
        if name == "transfer-encoding" && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name == "content-length" {
            length = value.parse::<usize>().ok();
        }
    }
    if chunked {
        let mut decoded = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n")?;
            let size_text = std::str::from_utf8(&rest[..eol]).ok()?;
            let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
            rest = &rest[eol + 2..];
            if size == 0 {
                break;
            }
            decoded.extend_from_slice(rest.get(..size)?);
            rest = rest.get(size + 2..)?;
        }
        body = decoded;
    } else if let Some(len) = length {
        body.truncate(len);
    }
    Some((status, String::from_utf8_lossy(&body).into_owned()))
}
