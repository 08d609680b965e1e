//! SFTP through ward: real sshd, real OpenSSH `sftp` and `scp`. File operations are parsed
//! out of the sftp subsystem, recorded as `statement` events of origin `sftp`, and judged by
//! `paths` rules.

mod harness;

use harness::sshd::{self, KeyPair, SshTargetSpec, Sshd};
use harness::{Ward, fresh_dir, wait_until};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Stdio;

const TARGET: &str = "web-1";

struct Setup {
    sshd: Sshd,
    ward: Ward,
    alice: KeyPair,
    dir: PathBuf,
}

impl Setup {
    fn start(rules: &str) -> Setup {
        let sshd = Sshd::start();
        let dir = fresh_dir("sftp-client");
        let (ward, alice) =
            sshd::ward_for_alice(&dir, SshTargetSpec::for_sshd(TARGET, &sshd), rules);
        Setup {
            sshd,
            ward,
            alice,
            dir,
        }
    }

    fn sftp(&self, batch: &str) -> std::process::Output {
        let file = self.dir.join("batch");
        std::fs::write(&file, batch).unwrap();
        sshd::sftp(self.ward.ssh_port(), TARGET, &self.alice.private, &file)
    }

    /// The sftp statement events, oldest first.
    fn file_ops(&self) -> Vec<Value> {
        sshd::stored_events(&self.ward, "statement")
            .into_iter()
            .filter(|e| e["origin"] == "sftp")
            .collect()
    }

    fn wait_op(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        wait_until(
            || self.file_ops().into_iter().find(|e| pred(e)),
            &format!("{what} in the store"),
        )
    }
}

fn sha256(path: &Path) -> String {
    let out = std::process::Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn random_file(path: &Path, mib: usize) {
    let status = std::process::Command::new("head")
        .args(["-c", &format!("{mib}M"), "/dev/urandom"])
        .stdout(std::fs::File::create(path).unwrap())
        .status()
        .unwrap();
    assert!(status.success());
}

const SIZE: u64 = 100 << 20;

#[test]
fn sftp_put_and_get_100mb_with_file_operation_events() {
    let s = Setup::start("");
    let local = s.dir.join("big.bin");
    random_file(&local, 100);
    let remote = s.sshd.work().join("big-up.bin");
    let back = s.dir.join("big-back.bin");
    let out = s.sftp(&format!(
        "put {} {}\nget {} {}\n",
        local.display(),
        remote.display(),
        remote.display(),
        back.display()
    ));
    assert!(out.status.success(), "{out:?}");
    assert_eq!(sha256(&remote), sha256(&local), "upload");
    assert_eq!(sha256(&back), sha256(&local), "download");
    let put = s.wait_op("the write", |e| {
        e["command"] == "SFTP WRITE" && e["text"].as_str().unwrap().contains("big-up.bin")
    });
    assert_eq!(put["rows"], SIZE, "{put}");
    assert!(
        put["text"]
            .as_str()
            .unwrap()
            .starts_with(&format!("write {}", remote.display()))
    );
    let get = s.wait_op("the read", |e| e["command"] == "SFTP READ");
    assert_eq!(get["rows"], SIZE, "{get}");
    assert!(get["error"].is_null(), "{get}");
}

#[test]
fn scp_sftp_and_legacy_100mb_both_ways() {
    let s = Setup::start("");
    let local = s.dir.join("big.bin");
    random_file(&local, 100);
    let remote = s.sshd.work().join("scp-up.bin");
    let port = s.ward.ssh_port();
    for (extra, name) in [(&[][..], "sftp"), (&["-O"][..], "legacy")] {
        let _ = std::fs::remove_file(&remote);
        let out = sshd::scp(
            port,
            &s.alice.private,
            extra,
            &local.display().to_string(),
            &format!("{TARGET}@127.0.0.1:{}", remote.display()),
        );
        assert!(out.status.success(), "upload ({name}): {out:?}");
        assert_eq!(sha256(&remote), sha256(&local), "upload ({name})");
        let back = s.dir.join(format!("back-{name}.bin"));
        let out = sshd::scp(
            port,
            &s.alice.private,
            extra,
            &format!("{TARGET}@127.0.0.1:{}", remote.display()),
            &back.display().to_string(),
        );
        assert!(out.status.success(), "download ({name}): {out:?}");
        assert_eq!(sha256(&back), sha256(&local), "download ({name})");
    }
    let w = s.wait_op("scp's write", |e| e["command"] == "SFTP WRITE");
    assert_eq!(w["rows"], SIZE, "{w}");
}

fn deny_rules(dir: &Path) -> String {
    format!(
        r#"rules:
  - {{ name: locked-dir, protocols: [ssh], statements: [sftp_modify], paths: ["{}/**"], action: deny, message: "read only" }}
"#,
        dir.display()
    )
}

#[test]
fn sftp_write_under_a_denied_dir_is_refused_and_the_rest_works() {
    let sshd_work = {
        // The rule needs the sshd's directory, which exists only once it runs; the rule
        // names a directory under /tmp made for this test instead.
        fresh_dir("sftp-locked")
    };
    std::fs::create_dir_all(sshd_work.join("locked")).unwrap();
    std::fs::write(sshd_work.join("locked/readme"), b"hello").unwrap();
    let _ = std::process::Command::new("chmod")
        .args(["-R", "a+rwX"])
        .arg(&sshd_work)
        .status();
    let locked = sshd_work.join("locked");
    let s = Setup::start(&deny_rules(&locked));
    let local = s.dir.join("small.txt");
    std::fs::write(&local, b"payload").unwrap();
    let free = sshd_work.join("free.txt");
    let got = s.dir.join("readme");
    let out = s.sftp(&format!(
        "-put {local} {locked}/x.txt\nput {local} {free}\nget {locked}/readme {got}\n",
        local = local.display(),
        locked = locked.display(),
        free = free.display(),
        got = got.display(),
    ));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{out:?}");
    assert!(stderr.contains("Permission denied"), "{stderr}");
    assert!(
        !locked.join("x.txt").exists(),
        "the denied file was written"
    );
    assert_eq!(std::fs::read(&free).unwrap(), b"payload");
    assert_eq!(std::fs::read(&got).unwrap(), b"hello");
    let denied = s.wait_op("the denial", |e| e["decision"] == "denied");
    assert_eq!(denied["rule"], "locked-dir", "{denied}");
    assert_eq!(
        denied["text"],
        format!("write {}/x.txt", locked.display()),
        "{denied}"
    );
    assert!(denied["error"].as_str().unwrap().contains("read only"));

    // Rename into the denied dir is refused; mkdir and remove elsewhere are recorded.
    let out = s.sftp(&format!(
        "-rename {free} {locked}/moved\nmkdir {dir}/newdir\nrm {free}\n",
        free = free.display(),
        locked = locked.display(),
        dir = sshd_work.display(),
    ));
    assert!(out.status.success(), "{out:?}");
    assert!(
        !free.exists(),
        "rm removed the file the refused rename left in place"
    );
    assert!(!locked.join("moved").exists());
    assert!(sshd_work.join("newdir").is_dir());
    s.wait_op("the refused rename", |e| {
        e["command"] == "SFTP RENAME" && e["decision"] == "denied"
    });
    s.wait_op("the mkdir", |e| {
        e["command"] == "SFTP MKDIR" && e["error"].is_null()
    });
    s.wait_op("the remove", |e| {
        e["command"] == "SFTP REMOVE"
            && e["text"] == format!("remove {}", free.display())
            && e["error"].is_null()
    });
}

#[test]
fn malformed_sftp_data_closes_the_channel_and_ward_keeps_serving() {
    let s = Setup::start("");
    let mut child = sshd::ssh_command(s.ward.ssh_port(), TARGET, &s.alice.private, &["-s", "sftp"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start ssh");
    let mut stdin = child.stdin.take().unwrap();
    // A length far above the limit.
    stdin.write_all(b"\xff\xff\xff\xffgarbage").unwrap();
    let out = child.wait_with_output().unwrap();
    drop(stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("bad SFTP data"), "{stderr}");
    // Another connection still works.
    let out = s.sftp("pwd\n");
    assert!(out.status.success(), "{out:?}");
}
