//! The SSH gateway through a real `ward serve`, a real OpenSSH sshd as the target and the
//! real OpenSSH `ssh` and `scp` as clients.
//!
//! Each test starts its own sshd (harness::sshd) and ward; the client key of identity
//! `alice` (group `ops`) is listed in `identity.ssh_keys`, the target `web-1` pins the
//! sshd's host key and ward logs in as `sshtest` with its own key.

mod harness;

use harness::sshd::{self, KeyPair, SshOptions, SshTargetSpec, Sshd};
use harness::{Ward, WardOptions, fresh_dir, wait_until};
use serde_json::Value;
use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

const TARGET: &str = "web-1";

struct Setup {
    sshd: Sshd,
    ward: Ward,
    alice: KeyPair,
    /// Where client-side files live.
    dir: PathBuf,
}

impl Setup {
    fn start(rules: &str) -> Setup {
        Setup::start_with(rules, |t| t)
    }

    fn start_with(rules: &str, target: impl FnOnce(SshTargetSpec) -> SshTargetSpec) -> Setup {
        let sshd = Sshd::start();
        let dir = fresh_dir("ssh-client");
        let target = target(SshTargetSpec::for_sshd(TARGET, &sshd));
        let (ward, alice) = sshd::ward_for_alice(&dir, target, rules);
        Setup {
            sshd,
            ward,
            alice,
            dir,
        }
    }

    fn ssh(&self, user: &str, args: &[&str]) -> std::process::Output {
        sshd::ssh(self.ward.ssh_port(), user, &self.alice.private, args)
    }

    /// Bodies of the session-log events of `kind` (`command`, `statement`, …), oldest first.
    fn events(&self, kind: &str) -> Vec<Value> {
        sshd::stored_events(&self.ward, kind)
    }

    /// Waits until an event of `kind` satisfies `pred`, and returns it.
    fn wait_event(&self, kind: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            || self.events(kind).into_iter().find(|e| pred(e)),
            &format!("{what} in the store"),
        )
    }
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn exec_prints_its_output_and_the_command_is_recorded() {
    let s = Setup::start("");
    let out = s.ssh(TARGET, &["echo", "hi"]);
    assert_eq!(stdout(&out), "hi\n", "stderr: {}", stderr(&out));
    assert_eq!(out.status.code(), Some(0));

    let command = s.wait_event("command", "the exec's command event", |e| {
        e["text"] == "echo hi"
    });
    assert_eq!(command["origin"], "exec");
    let start = s.wait_event("session_start", "the ssh session start", |e| {
        e["protocol"] == "ssh"
    });
    assert_eq!(start["identity"], "alice");
    assert_eq!(start["groups"], serde_json::json!(["ops"]));
    assert_eq!(start["target"], TARGET);
    assert!(
        start["client_addr"]
            .as_str()
            .unwrap()
            .starts_with("127.0.0.1:"),
        "{start}"
    );
    assert_eq!(start["credential"]["source"], "ssh-key");
    let result = s.wait_event("statement", "the exec's result", |e| e["text"] == "echo hi");
    assert_eq!(result["command"], "EXEC");
    assert!(result["error"].is_null(), "{result}");
    let end = s.wait_event("session_end", "the session end", |_| true);
    assert_eq!(end["reason"], "client closed");
    // The CLI shows and verifies SSH sessions like PostgreSQL ones.
    let id = start["session_id"].as_str().unwrap();
    let shown = s.ward.cli_ok(&["sessions", "show", id]);
    assert!(shown.contains("echo hi"), "{shown}");
    s.ward.cli_ok(&["verify"]);
    let keys = s.ward.cli_ok(&["keys", "show"]);
    assert!(
        keys.contains("SSH host key") && keys.contains("fingerprint SHA256:"),
        "{keys}"
    );

    // identity+target names the same identity the key proves.
    let out = s.ssh(&format!("alice+{TARGET}"), &["id", "-un"]);
    assert_eq!(stdout(&out), "sshtest\n", "stderr: {}", stderr(&out));
}

#[test]
fn exit_status_and_stderr_come_back() {
    let s = Setup::start("");
    let out = s.ssh(TARGET, &["echo oops >&2; exit 3"]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    assert_eq!(stderr(&out), "oops\n");
    let result = s.wait_event("statement", "the exec's result", |e| {
        e["text"] == "echo oops >&2; exit 3"
    });
    assert_eq!(result["error"], "exit status 3");
}

#[test]
fn a_denied_exec_never_reaches_the_target() {
    let s = Setup::start(
        r#"rules:
  - { name: no-touch, protocols: [ssh], commands: ["touch *"], action: deny, message: "no touching on web hosts" }
  - { name: no-shell, targets: [web-*], statements: [shell], action: deny }
"#,
    );
    let marker = s.sshd.work().join("marker");
    let command = format!("touch {}", marker.display());
    let out = s.ssh(TARGET, &[&command]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(
        stderr(&out).contains("ward: denied by rule \"no-touch\": no touching on web hosts"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "");
    std::thread::sleep(Duration::from_millis(200));
    assert!(!marker.exists(), "the denied command ran on the target");
    let denied = s.wait_event("statement", "the denied exec", |e| {
        e["text"] == command.as_str()
    });
    assert_eq!(denied["decision"], "denied");
    assert_eq!(denied["rule"], "no-touch");
    assert!(
        s.events("command")
            .iter()
            .all(|e| e["text"] != command.as_str()),
        "a denied command has no command event (it was never sent)"
    );

    // Hidden after a harmless command, it is still seen.
    let out = s.ssh(TARGET, &[&format!("true; {command}")]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(!marker.exists());

    // Other commands still run; an interactive shell is refused by the other rule.
    let out = s.ssh(TARGET, &["echo", "fine"]);
    assert_eq!(stdout(&out), "fine\n", "{out:?}");
    let out = s.ssh(TARGET, &[]);
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(
        stderr(&out).contains("ward: denied by rule \"no-shell\""),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_target_with_another_host_key_is_refused_clearly() {
    let dir = fresh_dir("ssh-other-host");
    let impostor = KeyPair::generate(&dir.join("other_host"), "other");
    let pinned: String = impostor
        .public
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ");
    let s = Setup::start_with("", |t| t.host_key(&pinned));
    let out = s.ssh(TARGET, &["echo", "hi"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let err = stderr(&out);
    assert!(
        err.contains("target web-1's host key does not match the one pinned in ward.yaml"),
        "{err}"
    );
    assert!(err.contains("the host presented SHA256:"), "{err}");
    assert_eq!(stdout(&out), "");
    assert!(
        s.events("session_start").is_empty(),
        "no session is opened against an impostor"
    );
}

#[test]
fn unknown_keys_and_targets_are_refused_and_audited() {
    let s = Setup::start("");
    let stranger = KeyPair::generate(&s.dir.join("stranger"), "stranger");
    let out = sshd::ssh(
        s.ward.ssh_port(),
        TARGET,
        &stranger.private,
        &["echo", "hi"],
    );
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        stderr(&out).contains("Permission denied"),
        "{}",
        stderr(&out)
    );
    let refusal = wait_refusal(&s.ward, "unknown_key");
    assert_eq!(refusal["protocol"], "ssh");
    assert_eq!(refusal["claimed_user"], TARGET);

    let out = s.ssh("db-9", &["echo", "hi"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let refusal = wait_refusal(&s.ward, "unknown_target");
    assert_eq!(refusal["identity"], "alice");

    let out = s.ssh(&format!("bob+{TARGET}"), &["echo", "hi"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    wait_refusal(&s.ward, "identity_mismatch");
    assert!(s.events("session_start").is_empty());
}

/// The newest refusal with `code` from `GET /api/v1/auth/refusals`.
fn wait_refusal(ward: &Ward, code: &str) -> Value {
    wait_until(
        || {
            let (status, body) =
                ward.api("GET", &format!("/api/v1/auth/refusals?code={code}"), None);
            assert_eq!(status, 200, "{body}");
            let v: Value = serde_json::from_str(&body).expect("refusals JSON");
            v["refusals"].as_array().and_then(|a| a.first().cloned())
        },
        &format!("an auth_refused event with code {code}"),
    )
}

#[test]
fn an_interactive_shell_with_a_terminal() {
    let s = Setup::start("");
    let mut child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["-tt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(b"stty -echo; echo out-$((6*7)); tty; exit 4\n")
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let text = stdout(&out);
    assert!(text.contains("out-42"), "{text}");
    assert!(
        text.contains("/dev/pts/"),
        "a real terminal on the target: {text}"
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    let result = s.wait_event("statement", "the shell's result", |e| e["text"] == "shell");
    assert_eq!(result["error"], "exit status 4");
    drop(input);
}

/// The id of the (only) SSH session, once it has ended and its end is recorded.
fn ended_ssh_session(s: &Setup) -> String {
    s.wait_event("session_end", "the ssh session's end", |_| true);
    let list = s.ward.sessions_json();
    list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["protocol"] == "ssh")
        .map(|x| x["id"].as_str().unwrap().to_string())
        .expect("an ssh session")
}

#[test]
fn a_terminal_session_is_recorded_and_replays_what_the_client_saw() {
    let s = Setup::start("");
    let mut child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["-tt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut input = child.stdin.take().unwrap();
    input
        .write_all(b"echo rec-$((6*7)); printf '\\033[1mbold\\033[0m\\n'; exit\n")
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(30));
    assert!(stdout(&out).contains("rec-42"), "{out:?}");
    drop(input);
    let id = ended_ssh_session(&s);

    // Piped, `ward replay` writes the recording at once: the same bytes the client got.
    let replay = s.ward.cli(&["replay", &id]);
    assert!(replay.status.success(), "{}", harness::describe(&replay));
    assert_eq!(
        String::from_utf8_lossy(&replay.stdout),
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(replay.stdout, out.stdout);

    // What was typed, and the terminal's size from the pty request, are in the log too.
    let terminal = s.events("terminal");
    let typed: String = terminal
        .iter()
        .filter(|e| e["stream"] == "input")
        .filter_map(|e| e["text"].as_str())
        .collect();
    assert!(typed.contains("echo rec-$((6*7))"), "{typed:?}");
    assert!(
        terminal
            .iter()
            .any(|e| e["stream"] == "resize" && e["cols"].is_u64()),
        "{terminal:?}"
    );
    // `--timeline` shows the commands, with the line typed into the shell.
    let timeline = s.ward.cli_ok(&["replay", &id, "--timeline"]);
    assert!(timeline.contains("SHELL"), "{timeline}");
    assert!(
        timeline.contains("TYPED") && timeline.contains("echo rec-$((6*7)); printf"),
        "{timeline}"
    );
    let typed_line = s.wait_event("statement", "the typed line", |e| {
        e["origin"] == "shell_line"
    });
    assert!(
        typed_line["text"]
            .as_str()
            .unwrap()
            .starts_with("echo rec-$((6*7));"),
        "{typed_line}"
    );

    // asciicast v2: a header, then timed events whose output is what the client saw.
    let cast = s.dir.join("shell.cast");
    s.ward
        .cli_ok(&["export", &id, "--asciicast", "-o", cast.to_str().unwrap()]);
    let text = std::fs::read_to_string(&cast).unwrap();
    let mut lines = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap());
    let header = lines.next().unwrap();
    assert_eq!(header["version"], 2, "{header}");
    assert!(header["width"].as_u64().unwrap() > 0, "{header}");
    let mut last = 0.0;
    let mut shown = String::new();
    for event in lines {
        let time = event[0].as_f64().unwrap();
        assert!(time >= last, "times go backwards: {text}");
        last = time;
        if event[1] == "o" {
            shown.push_str(event[2].as_str().unwrap());
        }
    }
    assert_eq!(shown, String::from_utf8_lossy(&out.stdout));

    // The recording is part of the session's chain.
    let verify = s.ward.cli(&["verify", &id]);
    assert!(verify.status.success(), "{}", harness::describe(&verify));
}

#[test]
fn an_exec_is_recorded_with_its_output_and_stderr_apart() {
    let s = Setup::start("");
    let out = s.ssh(TARGET, &["printf 'out-%s\\n' 1 2; printf 'err-3\\n' >&2"]);
    assert_eq!(stdout(&out), "out-1\nout-2\n", "{out:?}");
    let id = ended_ssh_session(&s);
    let replay = s.ward.cli(&["replay", &id]);
    assert_eq!(stdout(&replay), "out-1\nout-2\n", "{replay:?}");
    assert_eq!(stderr(&replay), "err-3\n", "{replay:?}");
    let streams: Vec<String> = s
        .events("terminal")
        .iter()
        .map(|e| e["stream"].as_str().unwrap().to_string())
        .collect();
    assert!(streams.contains(&"output".to_string()), "{streams:?}");
    assert!(streams.contains(&"stderr".to_string()), "{streams:?}");
}

fn wait_with_timeout(mut child: std::process::Child, timeout: Duration) -> std::process::Output {
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!("ssh did not finish within {timeout:?}: {out:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn sha256(path: &std::path::Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    stdout(&out).split_whitespace().next().unwrap().to_string()
}

#[test]
fn scp_and_sftp_copy_100_mb_both_ways_unchanged() {
    let s = Setup::start("");
    let local = s.dir.join("payload.bin");
    let mut data = vec![0u8; 100 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&local, &data).unwrap();
    let remote = s.sshd.work().join("uploaded.bin");
    let port = s.ward.ssh_port();
    let key = &s.alice.private;

    // Default scp speaks SFTP (the sftp subsystem); -O is the legacy scp protocol (an exec).
    for (legacy, name) in [(false, "sftp"), (true, "legacy")] {
        let extra: &[&str] = if legacy { &["-O"] } else { &[] };
        let _ = std::fs::remove_file(&remote);
        let out = sshd::scp(
            port,
            key,
            extra,
            &local.display().to_string(),
            &format!("{TARGET}@127.0.0.1:{}", remote.display()),
        );
        assert!(out.status.success(), "upload ({name}): {out:?}");
        assert_eq!(sha256(&remote), sha256(&local), "upload ({name})");
        let back = s.dir.join(format!("back-{name}.bin"));
        let out = sshd::scp(
            port,
            key,
            extra,
            &format!("{TARGET}@127.0.0.1:{}", remote.display()),
            &back.display().to_string(),
        );
        assert!(out.status.success(), "download ({name}): {out:?}");
        assert_eq!(sha256(&back), sha256(&local), "download ({name})");
    }
    // The interactive sftp client, driven by a batch file.
    let _ = std::fs::remove_file(&remote);
    let back = s.dir.join("back-sftp-client.bin");
    let batch = s.dir.join("sftp.batch");
    std::fs::write(
        &batch,
        format!(
            "put {} {}\nget {} {}\n",
            local.display(),
            remote.display(),
            remote.display(),
            back.display()
        ),
    )
    .unwrap();
    let out = sshd::sftp(port, TARGET, key, &batch);
    assert!(out.status.success(), "sftp: {out:?}");
    assert_eq!(sha256(&remote), sha256(&local), "sftp put");
    assert_eq!(sha256(&back), sha256(&local), "sftp get");
    s.wait_event("command", "the sftp subsystem request", |e| {
        e["text"] == "subsystem sftp"
    });
}

#[test]
fn lock_ends_an_active_shell_and_refuses_new_logins() {
    let s = Setup::start("");
    let mut child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["-tt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let input = child.stdin.take().unwrap();
    s.wait_event("command", "the shell request", |e| e["text"] == "shell");
    std::thread::sleep(Duration::from_millis(100));
    let out = s.ward.cli_ok(&["lock", "alice", "--reason", "offboarded"]);
    assert!(out.contains("ended 1 live session"), "{out}");
    let out = wait_with_timeout(child, Duration::from_secs(10));
    // How fast: bench/lock_latency.sh measures it; here only that the lock ended it.
    assert!(
        stderr(&out).contains("ward: session ended: locked: offboarded"),
        "{out:?}"
    );
    let end = s.wait_event("session_end", "the locked session's end", |_| true);
    assert_eq!(end["reason"], "locked: offboarded");
    drop(input);

    let out = s.ssh(TARGET, &["echo", "hi"]);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(
        stderr(&out).contains("identity \"alice\" is locked: offboarded"),
        "{}",
        stderr(&out)
    );
    wait_refusal(&s.ward, "locked");
}

/// The id of the live SSH session (once the audit has it).
fn live_ssh_session(ward: &Ward) -> String {
    wait_until(
        || {
            let list = ward.sessions_json();
            list["sessions"]
                .as_array()?
                .iter()
                .find(|s| s["protocol"] == "ssh" && s["active"] == true)
                .map(|s| s["id"].as_str().unwrap().to_string())
        },
        "the live ssh session in the audit",
    )
}

#[test]
fn kill_ends_one_ssh_session_and_says_why() {
    let s = Setup::start("");
    let mut child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["-tt"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let input = child.stdin.take().unwrap();
    let id = live_ssh_session(&s.ward);
    // Once the shell runs (a kill while the shell request is answered fails that request).
    s.wait_event("command", "the shell request", |e| e["text"] == "shell");
    std::thread::sleep(Duration::from_millis(100));
    s.ward.cli_ok(&["kill", &id, "--reason", "incident 7"]);
    // How fast: bench/lock_latency.sh measures it; here only that the kill ended it.
    let out = wait_with_timeout(child, Duration::from_secs(10));
    let err = stderr(&out);
    assert!(
        err.contains("ward: session ended:") && err.contains("incident 7"),
        "{out:?}"
    );
    assert_eq!(out.status.code(), Some(255));
    let end = s.wait_event("session_end", "the killed session's end", |_| true);
    assert!(
        end["reason"].as_str().unwrap().contains("incident 7"),
        "{end}"
    );
    drop(input);
}

#[test]
fn pause_holds_an_exec_until_resume() {
    let s = Setup::start("");
    s.ward.cli_ok(&["pause", "alice", "--reason", "looking"]);
    let marker = s.sshd.work().join("after-resume");
    let command = format!("touch {}", marker.display());
    let child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &[&command])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    live_ssh_session(&s.ward);
    std::thread::sleep(Duration::from_millis(500));
    assert!(!marker.exists(), "a paused identity's command ran");
    s.ward.cli_ok(&["resume", "alice"]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(marker.exists());
}

#[test]
fn a_token_at_the_password_prompt_logs_in_through_the_shared_authenticator() {
    let sshd = Sshd::start();
    let ward = Ward::start(
        WardOptions::new()
            .token("ci-nightly")
            .ssh(SshOptions::new().target(SshTargetSpec::for_sshd(TARGET, &sshd))),
    );
    let dir = fresh_dir("ssh-askpass");
    let askpass = |secret: &str| Askpass::new(&dir, secret);
    let run = |method: &str, user: &str, askpass: &Askpass| {
        let mut cmd = askpass.ssh(ward.ssh_port(), method, user, &[], &["echo", "hi"]);
        cmd.stdin(Stdio::null());
        harness::run_with_timeout(&mut cmd, sshd::SSH_TIMEOUT)
    };
    let good = askpass(&ward.token("ci-nightly"));
    for method in ["keyboard-interactive", "password"] {
        let out = run(method, &format!("ci-nightly+{TARGET}"), &good);
        assert_eq!(stdout(&out), "hi\n", "{method}: {out:?}");
    }
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).unwrap();
    let start: Value = wait_until(
        || {
            db.query_row(
                "SELECT body FROM event_log WHERE kind = 'session_start' ORDER BY id LIMIT 1",
                [],
                |r| r.get::<_, String>(0),
            )
            .ok()
            .map(|b| serde_json::from_str(&b).unwrap())
        },
        "the token session's start",
    );
    assert_eq!(start["identity"], "ci-nightly");
    assert_eq!(start["credential"]["source"], "token");

    let bad = askpass("not-a-token");
    let out = run("password", &format!("ci-nightly+{TARGET}"), &bad);
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    assert!(stderr(&out).contains("Permission denied"), "{out:?}");
    let refusal = wait_refusal(&ward, "bad_token");
    assert_eq!(refusal["protocol"], "ssh");
}

/// A secret typed at ssh's password prompt by an `SSH_ASKPASS` script.
struct Askpass {
    script: PathBuf,
    /// A key no one knows, so that the password prompt is what logs in.
    unused_key: KeyPair,
}

impl Askpass {
    fn new(dir: &std::path::Path, secret: &str) -> Askpass {
        let suffix = harness::unique_suffix();
        let script = dir.join(format!("askpass-{suffix}"));
        harness::write_file(&script, format!("#!/bin/sh\necho '{secret}'\n"), 0o700);
        let unused_key = KeyPair::generate(&dir.join(format!("unused-{suffix}")), "unused");
        Askpass { script, unused_key }
    }

    /// `ssh` to ward answering the prompt of `method` (`password`, `keyboard-interactive`).
    fn ssh(
        &self,
        port: u16,
        method: &str,
        user: &str,
        options: &[&str],
        args: &[&str],
    ) -> std::process::Command {
        let preferred = format!("PreferredAuthentications={method}");
        let mut all = vec![
            "-o",
            "BatchMode=no",
            "-o",
            "PubkeyAuthentication=no",
            "-o",
            &preferred,
            "-o",
            "NumberOfPasswordPrompts=1",
        ];
        all.extend_from_slice(options);
        let mut cmd = sshd::ssh_command_with(port, user, &self.unused_key.private, &all, args);
        cmd.env("SSH_ASKPASS", &self.script)
            .env("SSH_ASKPASS_REQUIRE", "force")
            .env("DISPLAY", ":0");
        cmd
    }
}

/// A session logged in with an IdP token that expires `secs` from now.
struct Expiring {
    _sshd: Sshd,
    _mint: harness::oidc::MintIssuer,
    ward: Ward,
    askpass: Askpass,
    dir: PathBuf,
    /// The token's expiry as ward shows it (RFC 3339, seconds).
    at: String,
    exp: i64,
}

impl Expiring {
    /// `identity_yaml`: extra lines under `identity:` (`on_expiry: refuse`).
    fn start(identity_yaml: &str, user: &str, secs: i64) -> Expiring {
        let sshd = Sshd::start();
        let mint = harness::oidc::MintIssuer::start();
        let ward = Ward::start(
            WardOptions::new()
                .ssh(SshOptions::new().target(SshTargetSpec::for_sshd(TARGET, &sshd)))
                .identity_yaml(&mint.oidc_yaml("    clock_skew: 1s\n"))
                .identity_yaml(identity_yaml),
        );
        let mut claims = mint.claims(user);
        let exp = chrono::Utc::now().timestamp() + secs;
        claims["exp"] = serde_json::json!(exp);
        let dir = fresh_dir("ssh-expiry");
        let askpass = Askpass::new(&dir, &mint.sign(&claims));
        let at = chrono::DateTime::from_timestamp(exp, 0)
            .unwrap()
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Expiring {
            _sshd: sshd,
            _mint: mint,
            ward,
            askpass,
            dir,
            at,
            exp,
        }
    }

    /// `ssh` with the token at the password prompt.
    fn ssh(&self, options: &[&str], args: &[&str]) -> std::process::Command {
        self.askpass
            .ssh(self.ward.ssh_port(), "password", TARGET, options, args)
    }
}

#[test]
fn on_expiry_end_disconnects_an_ssh_session_when_its_token_expires() {
    let s = Expiring::start("", "erin", 4);
    // The command would take 60 s; the token's expiry ends it first.
    let mut cmd = s.ssh(&[], &["echo started; sleep 60; echo finished"]);
    let out = harness::run_with_timeout(&mut cmd, Duration::from_secs(50));
    assert_eq!(stdout(&out), "started\n", "{out:?}");
    assert_eq!(out.status.code(), Some(255), "{out:?}");
    let at = &s.at;
    assert!(
        stderr(&out).contains(&format!("ward: session ended: token expired at {at}")),
        "{out:?}"
    );
    let end = wait_until(
        || {
            sshd::stored_events(&s.ward, "session_end")
                .into_iter()
                .find(|e| e["reason"].as_str().unwrap().contains("token expired at"))
        },
        "the session end",
    );
    assert_eq!(end["reason"], format!("token expired at {at}"));
}

#[test]
fn on_expiry_refuse_refuses_new_ssh_commands_but_keeps_the_connection() {
    let s = Expiring::start("on_expiry: refuse", "frank", 5);
    // One connection, several commands: an OpenSSH control master carries them.
    let control = s.dir.join("ctl");
    let control_path = format!("ControlPath={}", control.display());
    let mux = ["-o", control_path.as_str()];
    let mut master = s
        .ssh(
            &["-o", "ControlMaster=yes", "-o", control_path.as_str(), "-N"],
            &[],
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until(|| control.exists().then_some(()), "the control socket");
    let run = |args: &[&str]| harness::run_with_timeout(&mut s.ssh(&mux, args), sshd::SSH_TIMEOUT);
    let before = run(&["echo", "before"]);
    assert_eq!(stdout(&before), "before\n", "{before:?}");
    // Wait for the token to expire (the only wait on the clock in this test).
    let left = s.exp as f64 + 0.5 - chrono::Utc::now().timestamp_millis() as f64 / 1000.0;
    if left > 0.0 {
        std::thread::sleep(Duration::from_secs_f64(left));
    }
    let after = run(&["echo", "after"]);
    assert_eq!(stdout(&after), "", "{after:?}");
    assert_eq!(after.status.code(), Some(126), "{after:?}");
    assert!(
        stderr(&after).contains(&format!(
            "expired at {}; reconnect with a fresh token",
            s.at
        )),
        "{after:?}"
    );
    // The connection is still there: the master did not exit.
    assert!(master.try_wait().unwrap().is_none(), "the connection ended");
    let refused = wait_until(
        || {
            sshd::stored_events(&s.ward, "statement")
                .into_iter()
                .find(|e| e["decision"] == "token_expired")
        },
        "the refusal",
    );
    assert_eq!(refused["text"], "echo after");
    assert_eq!(refused["rule"], "identity.on_expiry");
    let _ = master.kill();
    let _ = master.wait();
}

/// Waits for a pending approval request of `rule` and returns its id.
fn pending_request(ward: &Ward, rule: &str) -> String {
    wait_until(
        || {
            let out = ward.cli(&["approvals", "list", "--format", "json"]);
            let list: Value = serde_json::from_slice(&out.stdout).ok()?;
            list["approvals"]
                .as_array()?
                .iter()
                .find(|a| a["rule"] == rule && a["state"] == "pending")
                .and_then(|a| a["id"].as_str().map(str::to_string))
        },
        &format!("a pending approval request of rule {rule}"),
    )
}

#[test]
fn a_reviewed_exec_waits_for_approval_and_runs_only_once_approved() {
    let s = Setup::start(
        "rules:\n  - { name: ask-first, commands: [\"touch *\"], action: review, timeout: 1m }\n",
    );
    let spawn = |marker: &std::path::Path| {
        let command = format!("touch {}", marker.display());
        sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &[&command])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start ssh")
    };
    let approved = s.sshd.work().join("approved");
    let child = spawn(&approved);
    let id = pending_request(&s.ward, "ask-first");
    std::thread::sleep(Duration::from_millis(300));
    assert!(!approved.exists(), "held command ran before approval");
    s.ward.cli_ok(&["approve", &id, "--reason", "fine"]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        stderr(&out).contains(&format!("waiting for approval: request {id}")),
        "{out:?}"
    );
    assert!(approved.exists());
    let command = s.wait_event("command", "the approved exec", |e| {
        e["decision"] == "approved"
    });
    assert!(
        command["rule"]
            .as_str()
            .unwrap()
            .starts_with("ask-first (approved by"),
        "{command}"
    );

    let refused = s.sshd.work().join("refused");
    let child = spawn(&refused);
    let id = pending_request(&s.ward, "ask-first");
    s.ward.cli_ok(&["deny", &id, "--reason", "not now"]);
    let out = wait_with_timeout(child, Duration::from_secs(20));
    assert_eq!(out.status.code(), Some(126), "{out:?}");
    assert!(stderr(&out).contains("was denied by"), "{out:?}");
    assert!(stderr(&out).contains("not now"), "{out:?}");
    assert!(!refused.exists());
}

/// The `ssh` command line rsync and git use (`-e` / `GIT_SSH_COMMAND`).
fn ssh_shell_command(s: &Setup) -> String {
    format!(
        "ssh -F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o IdentitiesOnly=yes -o LogLevel=ERROR -i {} -p {}",
        s.alice.private.display(),
        s.ward.ssh_port()
    )
}

#[test]
fn rsync_and_git_work_over_ward() {
    let s = Setup::start("");
    // rsync: a directory tree, then an incremental run that sends only the change.
    let src = s.dir.join("tree");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("a.txt"), "alpha\n").unwrap();
    std::fs::write(src.join("sub/b.bin"), vec![7u8; 300_000]).unwrap();
    let dest = s.sshd.work().join("tree");
    let rsync = |extra: &str| {
        let out = harness::run_with_timeout(
            std::process::Command::new("rsync")
                .args(["-a", "-e", &ssh_shell_command(&s)])
                .arg(format!("{}/", src.display()))
                .arg(format!("{TARGET}@127.0.0.1:{}/", dest.display()))
                .stdin(Stdio::null()),
            sshd::SSH_TIMEOUT,
        );
        assert!(out.status.success(), "rsync {extra}: {out:?}");
    };
    rsync("first");
    assert_eq!(
        std::fs::read(dest.join("sub/b.bin")).unwrap(),
        vec![7u8; 300_000]
    );
    std::fs::write(src.join("a.txt"), "beta\n").unwrap();
    rsync("second");
    assert_eq!(
        std::fs::read_to_string(dest.join("a.txt")).unwrap(),
        "beta\n"
    );

    // git: clone from and push to a bare repository on the target.
    let bare = s.sshd.work().join("repo.git");
    let init = harness::run_with_timeout(
        std::process::Command::new("runuser")
            .args(["-u", sshd::TEST_USER, "--", "git", "init", "-q", "--bare"])
            .arg(&bare),
        sshd::SSH_TIMEOUT,
    );
    assert!(init.status.success(), "{init:?}");
    let git = |dir: &std::path::Path, args: &[&str]| {
        let out = harness::run_with_timeout(
            std::process::Command::new("git")
                .args(["-c", "user.name=t", "-c", "user.email=t@example.com"])
                .args(["-c", "init.defaultBranch=main"])
                .args(args)
                .current_dir(dir)
                .env("GIT_SSH_COMMAND", ssh_shell_command(&s))
                .stdin(Stdio::null()),
            sshd::SSH_TIMEOUT,
        );
        assert!(out.status.success(), "git {args:?}: {out:?}");
        stdout(&out)
    };
    let url = format!("{TARGET}@127.0.0.1:{}", bare.display());
    git(&s.dir, &["clone", "-q", &url, "clone"]);
    let clone = s.dir.join("clone");
    std::fs::write(clone.join("README"), "hello\n").unwrap();
    git(&clone, &["add", "README"]);
    git(&clone, &["commit", "-q", "-m", "first"]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
    git(&s.dir, &["clone", "-q", "-b", "main", &url, "again"]);
    assert_eq!(
        std::fs::read_to_string(s.dir.join("again/README")).unwrap(),
        "hello\n"
    );
    s.wait_event("command", "git-receive-pack", |e| {
        e["text"].as_str().unwrap().starts_with("git-receive-pack")
    });
}

/// A channel saturated in both directions at once: `ssh host cat < 100MB` echoes every byte
/// back while the client is still sending. This deadlocked once ward's queue of client input
/// passed its blocking limit (session.rs, flow control); each round must finish, with the
/// echo identical to the input.
#[test]
fn saturated_both_ways_echo_completes_intact() {
    let s = Setup::start("");
    let file = s.dir.join("100m.bin");
    let mut data = vec![0u8; 100 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&file, &data).unwrap();
    drop(data);
    let sha256 = |args: &[&std::ffi::OsStr]| {
        let mut cmd = std::process::Command::new("bash");
        cmd.arg("-c")
            .arg(r#"f=$1; shift; "$@" < "$f" | sha256sum"#)
            .arg("bash")
            .arg(&file)
            .args(args);
        let out = harness::run_with_timeout(&mut cmd, Duration::from_secs(120));
        assert!(out.status.success(), "{out:?}");
        String::from_utf8(out.stdout).unwrap()
    };
    let expected = sha256(&["cat".as_ref()]);
    let ssh = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["cat"]);
    let mut args = vec![ssh.get_program()];
    args.extend(ssh.get_args());
    for round in 0..3 {
        assert_eq!(sha256(&args), expected, "round {round}: the echo differs");
    }
}

/// 100 MB through `ssh host cat` via ward and directly; prints the throughput ratio.
/// Not part of the normal run: `cargo test -p ward --test ssh -- --ignored --nocapture throughput`
/// (`ROUNDS=N` for more rounds than 2: a stall shows as a round that never ends).
#[test]
#[ignore]
fn throughput_through_ward_vs_direct() {
    let s = Setup::start("");
    let file = s.dir.join("100m.bin");
    let mut data = vec![0u8; 100 << 20];
    rand::RngCore::fill_bytes(&mut rand::thread_rng(), &mut data);
    std::fs::write(&file, &data).unwrap();
    drop(data);
    // `cat` echoes the file back: 100 MB each way through both of ward's SSH legs.
    let time = |port: u16, user: &str, key: &std::path::Path| {
        eprintln!("run via port {port} as {user}");
        let started = Instant::now();
        let status = sshd::ssh_command(port, user, key, &["cat"])
            .stdin(std::fs::File::open(&file).unwrap())
            .stdout(Stdio::null())
            .status()
            .expect("run ssh");
        assert!(status.success(), "{status:?}");
        started.elapsed()
    };
    let sshd_port: u16 = s
        .sshd
        .address()
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2);
    for round in 0..rounds {
        let direct = time(sshd_port, sshd::TEST_USER, &s.sshd.login_key.private);
        let ward = time(s.ward.ssh_port(), TARGET, &s.alice.private);
        eprintln!(
            "round {round}: direct {:.2}s ({:.0} MB/s), through ward {:.2}s ({:.0} MB/s), ratio {:.2}",
            direct.as_secs_f64(),
            100.0 / direct.as_secs_f64(),
            ward.as_secs_f64(),
            100.0 / ward.as_secs_f64(),
            direct.as_secs_f64() / ward.as_secs_f64()
        );
    }
}
