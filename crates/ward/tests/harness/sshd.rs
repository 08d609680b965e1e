//! A throwaway OpenSSH sshd per test, and the real OpenSSH clients to drive ward with.
//!
//! [`Sshd::start`] makes a directory with its own host key and a key for ward to log in
//! with, makes sure the test user `sshtest` exists and is unlocked (`usermod -p '*'`: a
//! locked account cannot log in with a key under `UsePAM no`), writes an sshd_config on a
//! free 127.0.0.1 port with `AuthorizedKeysFile` pointing into the directory, and starts
//! `sshd -D`. The process is registered with the harness watchdog and killed on drop.
//! `work()` is a directory the test user may write to, so tests can check on the target
//! what a command did (or did not do).
//!
//! [`ssh`], [`scp`] and friends run the real `ssh` client against ward with
//! `-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes
//! -o IdentitiesOnly=yes -i KEY`.

use super::{free_port, fresh_dir, register_child, run_with_timeout};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The login user on the target.
pub const TEST_USER: &str = "sshtest";

/// How long one ssh/scp invocation may take before the test fails.
pub const SSH_TIMEOUT: Duration = Duration::from_secs(60);

/// A key pair made with `ssh-keygen -t ed25519`.
#[derive(Clone, Debug)]
pub struct KeyPair {
    /// The private key file (mode 0600).
    pub private: PathBuf,
    /// The public key line (`ssh-ed25519 AAAA… comment`).
    pub public: String,
}

impl KeyPair {
    /// Generates a key pair at `path` (and `path.pub`).
    pub fn generate(path: &Path, comment: &str) -> KeyPair {
        let out = run_with_timeout(
            Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
                .arg(path),
            SSH_TIMEOUT,
        );
        assert!(out.status.success(), "ssh-keygen failed: {out:?}");
        let public = std::fs::read_to_string(path.with_extension("pub"))
            .expect("read the public key")
            .trim()
            .to_string();
        KeyPair {
            private: path.to_path_buf(),
            public,
        }
    }
}

/// A running sshd.
pub struct Sshd {
    dir: PathBuf,
    port: u16,
    /// The host key line, as ward.yaml pins it.
    pub host_key: String,
    /// The key ward logs in with (authorized for [`TEST_USER`]).
    pub login_key: KeyPair,
    child: Option<Child>,
    _registered: super::RegisteredChild,
}

impl Sshd {
    /// Starts sshd and waits until it accepts connections.
    pub fn start() -> Sshd {
        Sshd::start_inner(false)
    }

    /// Like [`Sshd::start`], but password authentication is on as well, and
    /// [`PASSWORD_USER`] exists with password [`PASSWORD`] (a user of its own, so the
    /// key-only user's password state, reset by every other sshd start, is not raced).
    pub fn start_with_password() -> Sshd {
        ensure_password_user();
        Sshd::start_inner(true)
    }

    fn start_inner(password_auth: bool) -> Sshd {
        let dir = fresh_dir("sshd");
        set_mode(&dir, 0o755);
        ensure_test_user();
        let host = KeyPair::generate(&dir.join("host_ed25519"), "target-host");
        let login_key = KeyPair::generate(&dir.join("ward_login_ed25519"), "ward");
        let authkeys = dir.join("authkeys");
        std::fs::create_dir_all(&authkeys).expect("mkdir authkeys");
        set_mode(&authkeys, 0o755);
        std::fs::write(authkeys.join(TEST_USER), format!("{}\n", login_key.public))
            .expect("write authorized_keys");
        set_mode(&authkeys.join(TEST_USER), 0o644);
        let work = dir.join("work");
        std::fs::create_dir_all(&work).expect("mkdir work");
        set_mode(&work, 0o777);
        std::fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd");
        let port = free_port();
        let config = dir.join("sshd_config");
        std::fs::write(
            &config,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nPidFile {pid}\n\
                 AuthorizedKeysFile {authkeys}/%u\nPasswordAuthentication {password}\n\
                 KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nUsePAM no\n\
                 StrictModes no\nPermitRootLogin no\nAllowTcpForwarding yes\n\
                 AcceptEnv LANG LC_*\nSubsystem sftp internal-sftp\nLogLevel VERBOSE\n",
                host = host.private.display(),
                pid = dir.join("sshd.pid").display(),
                authkeys = authkeys.display(),
                password = if password_auth { "yes" } else { "no" },
            ),
        )
        .expect("write sshd_config");
        let check = run_with_timeout(
            Command::new("/usr/sbin/sshd")
                .arg("-t")
                .arg("-f")
                .arg(&config),
            SSH_TIMEOUT,
        );
        assert!(
            check.status.success(),
            "sshd -t refused the config: {check:?}"
        );
        let log = std::fs::File::create(dir.join("sshd.log")).expect("create sshd.log");
        let child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-e")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("start sshd (apt-get install openssh-server)");
        let registered = register_child(child.id());
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "sshd did not listen on {port}; log:\n{}",
                std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let host_key = host
            .public
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        Sshd {
            dir,
            port,
            host_key,
            login_key,
            child: Some(child),
            _registered: registered,
        }
    }

    /// `127.0.0.1:PORT`
    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A directory the test user can write to (the target's side of the tests).
    pub fn work(&self) -> PathBuf {
        self.dir.join("work")
    }

    /// What sshd logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- sshd log ---\n{}\n--- end of sshd log ---", self.log());
        }
        if !super::keep_dirs() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn set_mode(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// Creates the test user if missing and unlocks it (no password, so only keys work).
fn ensure_test_user() {
    let exists = Command::new("id")
        .arg(TEST_USER)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !exists {
        // Two test binaries may race here; a user that appeared meanwhile is fine.
        let _ = Command::new("useradd")
            .args(["-m", "-s", "/bin/bash", TEST_USER])
            .status();
    }
    let out = run_with_timeout(
        Command::new("usermod").args(["-p", "*", TEST_USER]),
        SSH_TIMEOUT,
    );
    assert!(out.status.success(), "usermod -p '*' {TEST_USER}: {out:?}");
}

/// The user [`Sshd::start_with_password`] lets in with [`PASSWORD`].
pub const PASSWORD_USER: &str = "sshtestpw";
/// [`PASSWORD_USER`]'s password.
pub const PASSWORD: &str = "ward-test-Pa55word";

fn ensure_password_user() {
    let _ = Command::new("useradd")
        .args(["-m", "-s", "/bin/bash", PASSWORD_USER])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    let mut child = Command::new("chpasswd")
        .stdin(Stdio::piped())
        .spawn()
        .expect("run chpasswd");
    use std::io::Write as _;
    child
        .stdin
        .take()
        .expect("chpasswd stdin")
        .write_all(format!("{PASSWORD_USER}:{PASSWORD}\n").as_bytes())
        .expect("write to chpasswd");
    assert!(child.wait().expect("chpasswd").success(), "chpasswd failed");
}

/// The options every client invocation gets.
fn client_options(key: &Path) -> Vec<String> {
    let mut v: Vec<String> = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "IdentitiesOnly=yes",
        "-o",
        "LogLevel=ERROR",
        "-o",
        "ConnectTimeout=10",
        "-F",
        "/dev/null",
        "-i",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(key.display().to_string());
    v
}

/// `ssh` to ward as `user` (the target, or `identity+target`) with `key`, running `args`.
pub fn ssh_command(port: u16, user: &str, key: &Path, args: &[&str]) -> Command {
    ssh_command_with(port, user, key, &[], args)
}

/// Like [`ssh_command`] with more client options (`-o …`), which override the defaults.
pub fn ssh_command_with(
    port: u16,
    user: &str,
    key: &Path,
    options: &[&str],
    args: &[&str],
) -> Command {
    let mut cmd = Command::new("ssh");
    // ssh takes the first value given for an option, so these go before the defaults.
    cmd.args(options)
        .args(client_options(key))
        .args(["-p", &port.to_string()])
        .arg(format!("{user}@127.0.0.1"))
        .args(args);
    cmd
}

/// Runs `ssh … user@127.0.0.1 ARGS` with stdin from /dev/null.
pub fn ssh(port: u16, user: &str, key: &Path, args: &[&str]) -> Output {
    let mut cmd = ssh_command(port, user, key, args);
    cmd.stdin(Stdio::null());
    run_with_timeout(&mut cmd, SSH_TIMEOUT)
}

/// Runs `scp -P PORT … FROM TO` (remote paths written `user@127.0.0.1:/path`).
pub fn scp(port: u16, key: &Path, extra: &[&str], from: &str, to: &str) -> Output {
    let mut cmd = Command::new("scp");
    cmd.args(client_options(key))
        .args(["-P", &port.to_string(), "-q"])
        .args(extra)
        .args([from, to])
        .stdin(Stdio::null());
    run_with_timeout(&mut cmd, SSH_TIMEOUT)
}

/// Runs `sftp -P PORT -b BATCH user@127.0.0.1` (batch commands one a line; `-` prefixed
/// commands may fail without stopping the batch).
pub fn sftp(port: u16, user: &str, key: &Path, batch: &Path) -> Output {
    let mut cmd = Command::new("sftp");
    cmd.args(client_options(key))
        .args(["-P", &port.to_string(), "-b"])
        .arg(batch)
        .arg(format!("{user}@127.0.0.1"))
        .stdin(Stdio::null());
    run_with_timeout(&mut cmd, SSH_TIMEOUT)
}

/// One SSH target in ward.yaml.
#[derive(Clone, Debug)]
pub struct SshTargetSpec {
    pub name: String,
    /// `host:port` of the sshd.
    pub address: String,
    pub user: String,
    /// ward's private key for the target, referenced as `file:`.
    pub private_key: PathBuf,
    /// When set, ward logs in with the password in this file instead of the key.
    pub password_file: Option<PathBuf>,
    /// The pinned host key line.
    pub host_key: String,
    /// Extra YAML lines inside the target's mapping (e.g. `labels: { env: prod }`).
    pub extra_yaml: String,
}

impl SshTargetSpec {
    /// A target named `name` for `sshd`, logging in as [`TEST_USER`] with the key sshd
    /// authorizes, its real host key pinned.
    pub fn for_sshd(name: &str, sshd: &Sshd) -> SshTargetSpec {
        SshTargetSpec {
            name: name.to_string(),
            address: sshd.address(),
            user: TEST_USER.to_string(),
            private_key: sshd.login_key.private.clone(),
            password_file: None,
            host_key: sshd.host_key.clone(),
            extra_yaml: String::new(),
        }
    }

    /// Log in as `user` with the password in `file` (see [`Sshd::start_with_password`]).
    pub fn password(mut self, user: &str, file: &Path) -> SshTargetSpec {
        self.user = user.to_string();
        self.password_file = Some(file.to_path_buf());
        self
    }

    pub fn host_key(mut self, key: &str) -> SshTargetSpec {
        self.host_key = key.to_string();
        self
    }
}

/// A client key in `identity.ssh_keys`.
#[derive(Clone, Debug)]
pub struct SshKeySpec {
    pub identity: String,
    pub public: String,
    pub groups: Vec<String>,
}

/// What [`super::WardOptions::ssh`] adds to ward.yaml.
#[derive(Clone, Debug, Default)]
pub struct SshOptions {
    pub targets: Vec<SshTargetSpec>,
}

impl SshOptions {
    pub fn new() -> SshOptions {
        SshOptions::default()
    }

    pub fn target(mut self, target: SshTargetSpec) -> SshOptions {
        self.targets.push(target);
        self
    }

    /// The YAML lines of the targets, to go under `targets:`.
    pub(crate) fn render_targets(&self, _dir: &Path) -> String {
        let q = |s: &str| serde_json::to_string(s).expect("string to JSON");
        let mut y = String::new();
        for t in &self.targets {
            y.push_str(&format!(
                "  {}:\n    ssh: {}\n    host_key: {}\n    credential:\n      user: {}\n      {}: {}\n",
                q(&t.name),
                q(&t.address),
                q(&t.host_key),
                q(&t.user),
                if t.password_file.is_some() { "password" } else { "private_key" },
                q(&format!(
                    "file:{}",
                    t.password_file.as_ref().unwrap_or(&t.private_key).display()
                )),
            ));
            for line in t.extra_yaml.lines() {
                y.push_str(&format!("    {line}\n"));
            }
        }
        y
    }
}

impl super::WardOptions {
    /// Turns SSH on (`listen.ssh` on a free port) with these targets.
    pub fn ssh(mut self, ssh: SshOptions) -> super::WardOptions {
        self.ssh = Some(ssh);
        self
    }

    /// Lists client keys under `identity.ssh_keys` (call once).
    pub fn ssh_keys(self, keys: &[SshKeySpec]) -> super::WardOptions {
        let q = |s: &str| serde_json::to_string(s).expect("string to JSON");
        let mut yaml = String::from("ssh_keys:");
        for key in keys {
            let groups: Vec<String> = key.groups.iter().map(|g| q(g)).collect();
            yaml.push_str(&format!(
                "\n  - {{ identity: {}, key: {}, groups: [{}] }}",
                q(&key.identity),
                q(&key.public),
                groups.join(", ")
            ));
        }
        self.identity_yaml(&yaml)
    }
}

/// The client every SSH test logs in as: identity `alice` (group `ops`) with a key
/// generated in `dir`, listed in `identity.ssh_keys` of a ward with `target` and, unless
/// empty, the extra YAML `rules`.
pub fn ward_for_alice(dir: &Path, target: SshTargetSpec, rules: &str) -> (super::Ward, KeyPair) {
    let alice = KeyPair::generate(&dir.join("alice_ed25519"), "alice@laptop");
    let mut options = super::WardOptions::new()
        .ssh(SshOptions::new().target(target))
        .ssh_keys(&[SshKeySpec {
            identity: "alice".into(),
            public: alice.public.clone(),
            groups: vec!["ops".into()],
        }]);
    if !rules.is_empty() {
        options = options.extra_yaml(rules);
    }
    (super::Ward::start(options), alice)
}

/// Bodies of the stored events of `kind` (`command`, `statement`, …), oldest first.
pub fn stored_events(ward: &super::Ward, kind: &str) -> Vec<serde_json::Value> {
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).expect("open the store");
    let mut stmt = db
        .prepare("SELECT body FROM event_log WHERE kind = ?1 ORDER BY id")
        .expect("query");
    stmt.query_map([kind], |row| row.get::<_, String>(0))
        .expect("query")
        .map(|b| serde_json::from_str(&b.expect("row")).expect("event JSON"))
        .collect()
}
