//! SSH features beyond shell/exec/scp, through a real `ward serve` and a real OpenSSH sshd:
//! targets ward logs in to with a password, local and remote port forwarding and agent
//! forwarding (each refused by default, allowed by rule, recorded with its bytes), russh as
//! the client (exec, direct-tcpip, terminal resize, signals), and user certificates signed
//! by a CA in `identity.ssh_cas` (including a session ended by the certificate's expiry).
//!
//! Each test starts its own sshd and ward; the client key of identity `alice` (group `ops`)
//! is listed in `identity.ssh_keys`.

mod harness;

use harness::sshd::{self, KeyPair, SshOptions, SshTargetSpec, Sshd};
use harness::{Ward, WardOptions, fresh_dir, wait_until};
use serde_json::Value;
use std::path::PathBuf;

const TARGET: &str = "web-1";

struct Setup {
    _sshd: Sshd,
    ward: Ward,
    alice: KeyPair,
    _dir: PathBuf,
}

impl Setup {
    fn start(
        sshd: Sshd,
        rules: &str,
        target: impl FnOnce(SshTargetSpec, &std::path::Path) -> SshTargetSpec,
    ) -> Setup {
        let dir = fresh_dir("ssh-forward-client");
        let target = target(SshTargetSpec::for_sshd(TARGET, &sshd), &dir);
        let (ward, alice) = sshd::ward_for_alice(&dir, target, rules);
        Setup {
            _sshd: sshd,
            ward,
            alice,
            _dir: dir,
        }
    }

    fn ssh(&self, args: &[&str]) -> std::process::Output {
        sshd::ssh(self.ward.ssh_port(), TARGET, &self.alice.private, args)
    }

    fn wait_event(&self, kind: &str, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            || {
                sshd::stored_events(&self.ward, kind)
                    .into_iter()
                    .find(|e| pred(e))
            },
            &format!("{what} in the store"),
        )
    }
}

/// A target whose credential is `password: file:…` holding `password`.
fn password_target(
    password: &str,
) -> impl FnOnce(SshTargetSpec, &std::path::Path) -> SshTargetSpec {
    let password = password.to_string();
    move |t, dir| {
        let file = dir.join("target-password");
        std::fs::write(&file, format!("{password}\n")).expect("write the password file");
        t.password(sshd::PASSWORD_USER, &file)
    }
}

#[test]
fn exec_through_a_password_credential_target() {
    let s = Setup::start(
        Sshd::start_with_password(),
        "",
        password_target(sshd::PASSWORD),
    );
    let out = s.ssh(&["id -un; echo via-password"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        stdout,
        format!("{}\nvia-password\n", sshd::PASSWORD_USER),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
    s.wait_event("command", "the exec's command", |e| {
        e["text"] == "id -un; echo via-password"
    });
    // The password is in no log line.
    assert!(
        !s.ward.log().contains(sshd::PASSWORD),
        "ward logged the password"
    );
}

#[test]
fn a_wrong_target_password_is_told_to_the_client() {
    let s = Setup::start(
        Sshd::start_with_password(),
        "",
        password_target("not-the-password"),
    );
    let out = s.ssh(&["echo never"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(!String::from_utf8_lossy(&out.stdout).contains("never"));
    assert!(
        stderr.contains("ward: target web-1 refused ward's password for user sshtestpw"),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-password"), "{stderr}");
    assert!(
        !s.ward.log().contains("not-the-password"),
        "ward logged the password"
    );
}

/// A TCP echo server on 127.0.0.1 (the target's side): returns its port.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the echo server");
    let port = listener.local_addr().expect("echo address").port();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut reader = stream.try_clone().expect("clone the echo stream");
                let _ = std::io::copy(&mut reader, &mut stream);
            });
        }
    });
    port
}

/// A running `ssh -N -L local:127.0.0.1:remote` through ward; killed when dropped.
struct Tunnel(std::process::Child);

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Setup {
    fn tunnel(&self, forward: &str) -> Tunnel {
        let child = sshd::ssh_command_with(
            self.ward.ssh_port(),
            TARGET,
            &self.alice.private,
            &["-N", "-o", "ExitOnForwardFailure=yes", "-L", forward],
            &[],
        )
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ssh -L");
        Tunnel(child)
    }
}

/// Connects to the tunnel's local port once ssh listens on it.
fn connect_local(port: u16) -> std::net::TcpStream {
    let stream = wait_until(
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
        "ssh listening on the forwarded port",
    );
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(20)))
        .expect("read timeout");
    stream
}

#[test]
fn a_local_port_forward_is_refused_by_default_and_recorded() {
    let s = Setup::start(Sshd::start(), "", |t, _| t);
    let echo = echo_server();
    let local = harness::free_port();
    let _tunnel = s.tunnel(&format!("{local}:127.0.0.1:{echo}"));
    let mut stream = connect_local(local);
    use std::io::{Read, Write};
    let _ = stream.write_all(b"hello");
    let mut buf = [0u8; 16];
    // The client closes the local connection once ward refuses the channel.
    let n = stream.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "data came back through a refused forward");
    let event = s.wait_event("statement", "the refused forward", |e| {
        e["origin"] == "forward"
    });
    assert_eq!(event["text"], format!("forward local 127.0.0.1:{echo}"));
    assert_eq!(event["decision"], "denied");
    assert_eq!(event["rule"], "policy.forwarding");
}

#[test]
fn a_local_port_forward_allowed_by_rule_relays_and_records_bytes() {
    let rules = r#"rules:
  - { name: everything, protocols: [ssh], action: allow }
  - { name: tunnels, statements: [port_forward_local], commands: ["127.0.0.1:*"], action: allow }
"#;
    let s = Setup::start(Sshd::start(), rules, |t, _| t);
    let echo = echo_server();
    let local = harness::free_port();
    let tunnel = s.tunnel(&format!("{local}:127.0.0.1:{echo}"));
    let mut stream = connect_local(local);
    use std::io::{Read, Write};
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut writer = stream.try_clone().expect("clone");
    let sent = payload.clone();
    let writing = std::thread::spawn(move || {
        writer.write_all(&sent).expect("write through the tunnel");
        writer
            .shutdown(std::net::Shutdown::Write)
            .expect("shut down writing");
    });
    let mut back = Vec::new();
    stream.read_to_end(&mut back).expect("read the echo");
    writing.join().expect("writer");
    assert!(
        back == payload,
        "the echo came back different ({} bytes)",
        back.len()
    );
    drop(stream);
    let event = s.wait_event("statement", "the forward's record", |e| {
        e["origin"] == "forward"
    });
    drop(tunnel);
    assert_eq!(event["text"], format!("forward local 127.0.0.1:{echo}"));
    assert_eq!(event["decision"], "allowed");
    assert_eq!(event["rule"], "tunnels");
    assert_eq!(
        event["params"],
        "bytes_to_target=200000 bytes_to_client=200000"
    );
}

/// A Python program for the target: connects to 127.0.0.1:PORT, sends `size` patterned
/// bytes while reading the reply, and prints how many bytes came back and whether they were
/// the same.
fn remote_echo_client(port: u16, size: usize) -> String {
    format!(
        "python3 -c '
import socket, threading
data = bytes(i % 251 for i in range({size}))
s = socket.create_connection((\"127.0.0.1\", {port}), timeout=20)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
t = threading.Thread(target=send)
t.start()
back = bytearray()
while True:
    chunk = s.recv(65536)
    if not chunk:
        break
    back += chunk
t.join()
print(len(back), back == data)
'"
    )
}

#[test]
fn a_remote_port_forward_is_refused_by_default_and_recorded() {
    let s = Setup::start(Sshd::start(), "", |t, _| t);
    let echo = echo_server();
    let remote = harness::free_port();
    let spec = format!("127.0.0.1:{remote}:127.0.0.1:{echo}");
    let mut cmd = sshd::ssh_command_with(
        s.ward.ssh_port(),
        TARGET,
        &s.alice.private,
        &["-o", "ExitOnForwardFailure=yes", "-R", &spec],
        &["echo should-not-run"],
    );
    cmd.stdin(std::process::Stdio::null());
    let out = harness::run_with_timeout(&mut cmd, sshd::SSH_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(255), "stderr: {stderr}");
    assert!(
        stderr.contains(&format!(
            "remote port forwarding failed for listen port {remote}"
        )),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should-not-run"));
    let event = s.wait_event("statement", "the refused remote forward", |e| {
        e["origin"] == "forward"
    });
    assert_eq!(
        event["text"],
        format!("forward remote listen 127.0.0.1:{remote}")
    );
    assert_eq!(event["decision"], "denied");
    assert_eq!(event["rule"], "policy.forwarding");
    // The target was never asked to listen.
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", remote)).is_err(),
        "something listens on the refused port"
    );
}

#[test]
fn a_remote_port_forward_allowed_by_rule_relays_and_records_bytes() {
    let rules = r#"rules:
  - { name: everything, protocols: [ssh], action: allow }
  - { name: reverse, statements: [port_forward_remote], commands: ["127.0.0.1:*"], action: allow }
"#;
    let s = Setup::start(Sshd::start(), rules, |t, _| t);
    let echo = echo_server();
    let remote = harness::free_port();
    let spec = format!("127.0.0.1:{remote}:127.0.0.1:{echo}");
    let program = remote_echo_client(remote, 300_000);
    let mut cmd = sshd::ssh_command_with(
        s.ward.ssh_port(),
        TARGET,
        &s.alice.private,
        &["-o", "ExitOnForwardFailure=yes", "-R", &spec],
        &[&program],
    );
    cmd.stdin(std::process::Stdio::null());
    let out = harness::run_with_timeout(&mut cmd, sshd::SSH_TIMEOUT);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "300000 True\n",
        "stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(0), "stderr: {stderr}");
    let listen = s.wait_event("statement", "the remote listen", |e| {
        e["origin"] == "forward"
            && e["text"]
                .as_str()
                .is_some_and(|t| t.starts_with("forward remote listen"))
    });
    assert_eq!(
        listen["text"],
        format!("forward remote listen 127.0.0.1:{remote}")
    );
    assert_eq!(listen["decision"], "allowed");
    assert_eq!(listen["rule"], "reverse");
    let prefix = format!("forward remote 127.0.0.1:{remote} from 127.0.0.1:");
    let connection = s.wait_event("statement", "the forwarded connection", |e| {
        e["text"].as_str().is_some_and(|t| t.starts_with(&prefix))
    });
    assert_eq!(connection["decision"], "allowed");
    assert_eq!(connection["rule"], "reverse");
    assert_eq!(
        connection["params"],
        "bytes_to_target=300000 bytes_to_client=300000"
    );
    // In strict mode (the default) the connection was on disk before its first byte.
    let announced = s.wait_event("command", "the forwarded connection's command", |e| {
        e["origin"] == "forward" && e["text"].as_str().is_some_and(|t| t.starts_with(&prefix))
    });
    assert!(
        announced["at"].as_i64() <= connection["started_at"].as_i64(),
        "command {announced} after the connection {connection}"
    );
}

/// A running `ssh-agent -D -a SOCKET` holding one key; killed when dropped.
struct Agent {
    child: std::process::Child,
    socket: PathBuf,
    key: KeyPair,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn start(dir: &std::path::Path) -> Agent {
        let socket = dir.join("agent.sock");
        let child = std::process::Command::new("ssh-agent")
            .arg("-D")
            .arg("-a")
            .arg(&socket)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start ssh-agent");
        let mut agent = Agent {
            child,
            socket,
            key: KeyPair::generate(&dir.join("agent-key"), "agent-key@test"),
        };
        wait_until(|| agent.socket.exists().then_some(()), "ssh-agent's socket");
        let added = harness::run_with_timeout(
            std::process::Command::new("ssh-add")
                .arg(&agent.key.private)
                .env("SSH_AUTH_SOCK", &agent.socket),
            sshd::SSH_TIMEOUT,
        );
        assert!(added.status.success(), "ssh-add failed: {added:?}");
        agent.child.try_wait().expect("ssh-agent still runs");
        agent
    }

    /// `ssh -A … ARGS` with this agent as the client's agent.
    fn ssh_a(&self, s: &Setup, args: &[&str]) -> std::process::Output {
        let mut cmd =
            sshd::ssh_command_with(s.ward.ssh_port(), TARGET, &s.alice.private, &["-A"], args);
        cmd.env("SSH_AUTH_SOCK", &self.socket)
            .stdin(std::process::Stdio::null());
        harness::run_with_timeout(&mut cmd, sshd::SSH_TIMEOUT)
    }
}

#[test]
fn agent_forwarding_is_refused_by_default_and_recorded() {
    let s = Setup::start(Sshd::start(), "", |t, _| t);
    let agent = Agent::start(&s._dir);
    let out = agent.ssh_a(&s, &["ssh-add -l; echo agent-exit=$?"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // No agent on the target: ssh-add says so (exit 2).
    assert!(
        stdout.contains("agent-exit=2"),
        "{stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!stdout.contains("agent-key@test"), "{stdout}");
    let event = s.wait_event("statement", "the refused agent request", |e| {
        e["origin"] == "forward"
    });
    assert_eq!(event["text"], "forward agent request");
    assert_eq!(event["decision"], "denied");
    assert_eq!(event["rule"], "policy.forwarding");
}

#[test]
fn agent_forwarding_allowed_by_rule_relays_and_records_each_use() {
    let rules = r#"rules:
  - { name: everything, protocols: [ssh], action: allow }
  - { name: agent, statements: [agent_forward], identities: [alice], action: allow }
"#;
    let s = Setup::start(Sshd::start(), rules, |t, _| t);
    let agent = Agent::start(&s._dir);
    let out = agent.ssh_a(&s, &["ssh-add -l"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The target lists the key held by the client's agent.
    assert!(stdout.contains("agent-key@test (ED25519)"), "{stdout}");
    let request = s.wait_event("statement", "the agent request", |e| {
        e["text"] == "forward agent request"
    });
    assert_eq!(request["decision"], "allowed");
    assert_eq!(request["rule"], "agent");
    let used = s.wait_event("statement", "the agent's use", |e| {
        e["text"] == "forward agent"
    });
    assert_eq!(used["decision"], "allowed");
    let params = used["params"].as_str().expect("bytes of the agent channel");
    assert!(
        !params.contains("bytes_to_target=0") && !params.contains("bytes_to_client=0"),
        "{params}"
    );
}

/// A russh client that accepts any host key (the test checks ward, not its host key).
struct AnyHost;

impl russh::client::Handler for AnyHost {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &russh::keys::PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

/// Logs in to ward's SSH port as alice with russh, for target web-1.
async fn russh_login(port: u16, key_path: &std::path::Path) -> russh::client::Handle<AnyHost> {
    let key = russh::keys::load_secret_key(key_path, None).expect("load alice's key");
    let config = std::sync::Arc::new(russh::client::Config::default());
    let mut handle = russh::client::connect(config, ("127.0.0.1", port), AnyHost)
        .await
        .expect("connect to ward");
    let auth = handle
        .authenticate_publickey(
            TARGET,
            russh::keys::PrivateKeyWithHashAlg::new(std::sync::Arc::new(key), None),
        )
        .await
        .expect("authenticate");
    assert!(auth.success(), "ward refused alice's key: {auth:?}");
    handle
}

/// Reads a channel's output until it contains `wanted` (or fails after 20 s).
async fn read_until(
    channel: &mut russh::Channel<russh::client::Msg>,
    seen: &mut Vec<u8>,
    wanted: &str,
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while !String::from_utf8_lossy(seen).contains(wanted) {
        match tokio::time::timeout_at(deadline, channel.wait()).await {
            Ok(Some(russh::ChannelMsg::Data { data })) => seen.extend_from_slice(&data),
            Ok(Some(_)) => {}
            Ok(None) => panic!(
                "the channel ended before {wanted:?}: {}",
                String::from_utf8_lossy(seen)
            ),
            Err(_) => panic!(
                "no {wanted:?} within 20 s: {}",
                String::from_utf8_lossy(seen)
            ),
        }
    }
}

#[test]
fn russh_as_the_client_resizes_the_terminal_and_signals_a_command() {
    let s = Setup::start(Sshd::start(), "", |t, _| t);
    let port = s.ward.ssh_port();
    let key_path = s.alice.private.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        use russh::{ChannelMsg, Sig};
        let handle = russh_login(port, &key_path).await;
        // A shell with an 80x24 terminal, resized to 100x40: the host's tty follows.
        let mut shell = handle.channel_open_session().await.expect("session");
        shell
            .request_pty(true, "xterm", 80, 24, 0, 0, &[])
            .await
            .expect("pty");
        shell.request_shell(true).await.expect("shell");
        let mut seen = Vec::new();
        shell.data(&b"stty size\n"[..]).await.expect("type");
        read_until(&mut shell, &mut seen, "24 80").await;
        shell.window_change(100, 40, 0, 0).await.expect("resize");
        shell.data(&b"stty size\n"[..]).await.expect("type");
        read_until(&mut shell, &mut seen, "40 100").await;
        shell.data(&b"exit 0\n"[..]).await.expect("type");
        drop(shell);

        // A signal reaches the command: `sleep 30` killed by TERM reports exit-signal TERM.
        let mut exec = handle.channel_open_session().await.expect("session");
        exec.exec(true, "sleep 30").await.expect("exec");
        // The reply to exec means the command runs.
        loop {
            match exec.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) | None => panic!("the exec was refused"),
                Some(_) => {}
            }
        }
        exec.signal(Sig::TERM).await.expect("signal");
        let mut signal = None;
        let waited = tokio::time::timeout(std::time::Duration::from_secs(20), async {
            while let Some(msg) = exec.wait().await {
                if let ChannelMsg::ExitSignal { signal_name, .. } = msg {
                    signal = Some(signal_name);
                }
            }
        })
        .await;
        assert!(waited.is_ok(), "sleep 30 outlived the TERM signal");
        assert!(matches!(signal, Some(Sig::TERM)), "{signal:?}");
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    });
    let event = s.wait_event("statement", "the signalled exec", |e| {
        e["text"] == "sleep 30"
    });
    assert!(
        event["error"]
            .as_str()
            .is_some_and(|e| e.contains("signal") && e.contains("TERM")),
        "{event}"
    );
}

#[test]
fn russh_as_the_client_execs_and_forwards() {
    let rules = r#"rules:
  - { name: tunnels, statements: [port_forward_local], action: allow }
"#;
    let s = Setup::start(Sshd::start(), rules, |t, _| t);
    let echo = echo_server();
    let port = s.ward.ssh_port();
    let key_path = s.alice.private.clone();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async move {
        use russh::ChannelMsg;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let handle = russh_login(port, &key_path).await;
        let mut channel = handle
            .channel_open_session()
            .await
            .expect("session channel");
        channel
            .exec(true, "echo from-russh; exit 3")
            .await
            .expect("exec");
        let mut out = Vec::new();
        let mut status = None;
        while let Some(msg) = channel.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => status = Some(exit_status),
                _ => {}
            }
        }
        assert_eq!(String::from_utf8_lossy(&out), "from-russh\n");
        assert_eq!(status, Some(3));

        let tunnel = handle
            .channel_open_direct_tcpip("127.0.0.1", echo.into(), "127.0.0.1", 40000)
            .await
            .expect("direct-tcpip through ward");
        let mut stream = tunnel.into_stream();
        stream.write_all(b"ping through ward").await.expect("write");
        stream.shutdown().await.expect("eof");
        let mut back = Vec::new();
        stream.read_to_end(&mut back).await.expect("read");
        assert_eq!(back, b"ping through ward");
        let _ = handle
            .disconnect(russh::Disconnect::ByApplication, "", "en")
            .await;
    });
    let event = s.wait_event("statement", "the russh forward", |e| {
        e["origin"] == "forward"
    });
    assert_eq!(event["decision"], "allowed");
    assert_eq!(event["params"], "bytes_to_target=17 bytes_to_client=17");
    s.wait_event("statement", "the russh exec", |e| {
        e["text"] == "echo from-russh; exit 3"
    });
}

/// `ssh-keygen -s ca -I id -n principals -V validity user.pub`: writes user-cert.pub.
fn sign(ca: &KeyPair, user: &KeyPair, id: &str, principals: &str, validity: &str) {
    let public = user.private.with_extension("pub");
    std::fs::write(&public, format!("{}\n", user.public)).expect("write the .pub");
    let out = std::process::Command::new("ssh-keygen")
        .arg("-q")
        .arg("-s")
        .arg(&ca.private)
        .args(["-I", id, "-n", principals, "-V", validity])
        .arg(&public)
        .output()
        .expect("run ssh-keygen -s");
    assert!(out.status.success(), "ssh-keygen -s: {out:?}");
}

#[test]
fn user_certificates_signed_by_a_listed_ca_log_in() {
    let sshd = Sshd::start();
    let dir = fresh_dir("ssh-cert-client");
    let ca = KeyPair::generate(&dir.join("ca"), "ward-test-ca");
    let other_ca = KeyPair::generate(&dir.join("other_ca"), "other-ca");
    let ward = Ward::start(
        WardOptions::new()
            .ssh(SshOptions::new().target(SshTargetSpec::for_sshd(TARGET, &sshd)))
            .identity_yaml(&format!(
                "ssh_cas:\n  - {{ key: {}, groups: [ops] }}",
                serde_json::to_string(&ca.public).unwrap()
            )),
    );
    let login = |key: &KeyPair| {
        let cert = key.private.with_file_name(format!(
            "{}-cert.pub",
            key.private.file_name().unwrap().to_string_lossy()
        ));
        sshd::ssh_command_with(
            ward.ssh_port(),
            TARGET,
            &key.private,
            &["-o", &format!("CertificateFile={}", cert.display())],
            &["echo cert-ok"],
        )
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ssh")
    };

    let alice = KeyPair::generate(&dir.join("alice"), "alice@laptop");
    sign(&ca, &alice, "alice", "alice", "+1h");
    let out = login(&alice);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "cert-ok\n",
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let start = wait_until(
        || {
            sshd::stored_events(&ward, "session_start")
                .into_iter()
                .find(|e| e["protocol"] == "ssh")
        },
        "the certificate session's start",
    );
    assert_eq!(start["identity"], "alice");
    assert_eq!(start["groups"], serde_json::json!(["ops"]));
    assert_eq!(start["credential"]["source"], "ssh-cert");

    let refused = |key: &KeyPair, code: &str| {
        let out = login(key);
        assert_ne!(out.status.code(), Some(0), "{out:?}");
        assert!(!String::from_utf8_lossy(&out.stdout).contains("cert-ok"));
        wait_until(
            || {
                sshd::stored_events(&ward, "auth_refused")
                    .into_iter()
                    .find(|e| e["code"] == code)
            },
            &format!("an auth_refused event with code {code}"),
        )
    };
    let expired = KeyPair::generate(&dir.join("expired"), "bob@laptop");
    sign(&ca, &expired, "bob", "bob", "-2h:-1h");
    // russh refuses an expired certificate before ward sees it; the client then offers the
    // bare key, which is what the audit shows.
    let event = refused(&expired, "unknown_key");
    assert!(event["identity"].is_null(), "{event}");
    let stranger = KeyPair::generate(&dir.join("stranger"), "carol@laptop");
    sign(&other_ca, &stranger, "carol", "carol", "+1h");
    refused(&stranger, "unknown_ca");
    let unprincipled = KeyPair::generate(&dir.join("unprincipled"), "dave@laptop");
    sign(&ca, &unprincipled, "dave", "root", "+1h");
    refused(&unprincipled, "certificate_principal");
}

#[test]
fn a_certificate_session_ends_when_the_certificate_does() {
    let sshd = Sshd::start();
    let dir = fresh_dir("ssh-cert-expiry");
    let ca = KeyPair::generate(&dir.join("ca"), "ward-test-ca");
    let ward = Ward::start(
        WardOptions::new()
            .ssh(SshOptions::new().target(SshTargetSpec::for_sshd(TARGET, &sshd)))
            .identity_yaml(&format!(
                "ssh_cas:\n  - {{ key: {}, groups: [ops] }}",
                serde_json::to_string(&ca.public).unwrap()
            )),
    );
    let alice = KeyPair::generate(&dir.join("alice"), "alice@laptop");
    // Valid from a minute ago until 5 seconds from now (ssh-keygen's relative times).
    sign(&ca, &alice, "alice", "alice", "-1m:+5s");
    let cert = dir.join("alice-cert.pub");
    let mut cmd = sshd::ssh_command_with(
        ward.ssh_port(),
        TARGET,
        &alice.private,
        &["-o", &format!("CertificateFile={}", cert.display())],
        &["echo started; sleep 60; echo finished"],
    );
    cmd.stdin(std::process::Stdio::null());
    let out = harness::run_with_timeout(&mut cmd, std::time::Duration::from_secs(50));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "started\n",
        "{stderr}"
    );
    assert_eq!(out.status.code(), Some(255), "{stderr}");
    assert!(
        stderr.contains("ward: session ended: certificate expired at "),
        "{stderr}"
    );
    let end = wait_until(
        || {
            sshd::stored_events(&ward, "session_end")
                .into_iter()
                .find(|e| e["reason"] != serde_json::Value::Null)
        },
        "the session end",
    );
    assert!(
        end["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("certificate expired at ")),
        "{end}"
    );
}
