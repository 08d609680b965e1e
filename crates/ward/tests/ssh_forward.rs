//! SSH features beyond shell/exec/scp, through a real `ward serve` and a real OpenSSH sshd:
//! targets ward logs in to with a password.
//!
//! Each test starts its own sshd and ward; the client key of identity `alice` (group `ops`)
//! is listed in `identity.ssh_keys`.

mod harness;

use harness::sshd::{self, KeyPair, SshKeySpec, SshOptions, SshTargetSpec, Sshd};
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
        let alice = KeyPair::generate(&dir.join("alice_ed25519"), "alice@laptop");
        let mut options = WardOptions::new()
            .ssh(SshOptions::new().target(target(SshTargetSpec::for_sshd(TARGET, &sshd), &dir)))
            .ssh_keys(&[SshKeySpec {
                identity: "alice".into(),
                public: alice.public.clone(),
                groups: vec!["ops".into()],
            }]);
        if !rules.is_empty() {
            options = options.extra_yaml(rules);
        }
        let ward = Ward::start(options);
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
