//! Evidence bundles: `ward export` writes a self-contained tar of session logs, `ward verify
//! BUNDLE` checks it, and every way of tampering with it (with the manifest fixed up, as an
//! attacker who knows the format would) is named with the event it hit. Also retention.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, describe, wait_until};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Output;

/// Appends a lock and an unlock of `identity` to the gateway chain, through the store as
/// the audit writer would write them.
///
/// `ward lock` itself records its control event straight into `control_events` (through
/// the admin API's own connection, so that the lock is durable before the API answers),
/// not into the chained log; until it goes through the writer, the test writes the gateway
/// chain's events itself.
fn chain_gateway_events(ward: &Ward, identity: &str) {
    let mut store = ward_store::SqliteStore::open(&ward.data_dir().join("ward.db")).unwrap();
    let now = ward_core::time::now_micros();
    let event = |action: &str, at: i64| -> ward_core::AuditEvent {
        serde_json::from_value(serde_json::json!({
            "type": "control", "action": action, "identity": identity, "session_id": null,
            "reason": "evidence test", "by": "admin", "until": null, "at": at,
            "sessions_ended": 0,
        }))
        .unwrap()
    };
    store
        .write_batch(&[event("lock", now), event("unlock", now + 1)])
        .unwrap();
}

/// A gateway with three finished sessions (alice twice, bob once) and a lock and unlock of
/// carol on the gateway chain. Returns the ward, alice's first session id, and ward's
/// public key.
fn ward_with_sessions(name: &str) -> (Ward, String, String) {
    let db = Postgres::get().create_target(name, AuthMethod::ScramSha256);
    let ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("alice")
            .token("bob")
            .extra_yaml("audit: { retention: 3650d }"),
    );
    ward.psql_ok("alice", "shop", "select 1; select 'secret sauce'; select 3");
    ward.psql_ok("bob", "shop", "select 42");
    ward.psql_ok("alice", "shop", "select 'second'");
    chain_gateway_events(&ward, "carol");
    let first = wait_until(
        || {
            let json = ward.sessions_json();
            let sessions = json["sessions"].as_array()?;
            let ended = sessions.iter().filter(|s| s["active"] == false).count();
            // Newest first: alice's first session is the last one.
            (ended == 3).then(|| sessions[2]["id"].as_str().unwrap().to_string())
        },
        "three ended sessions",
    );
    let keys = ward.cli_ok(&["keys", "show"]);
    let key = keys
        .lines()
        .find_map(|l| l.strip_prefix("public key  "))
        .expect("ward keys show prints the public key")
        .trim()
        .to_string();
    assert!(
        ward.log().contains("audit retention"),
        "retention is announced: {}",
        ward.log()
    );
    (ward, first, key)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reads a tar's files in order.
fn read_tar(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(std::fs::File::open(path).unwrap());
    archive
        .entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            (name, data)
        })
        .collect()
}

fn write_tar(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut builder = tar::Builder::new(std::fs::File::create(path).unwrap());
    for (name, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        builder
            .append_data(&mut header, name, data.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap();
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn file<'a>(files: &'a mut [(String, Vec<u8>)], name: &str) -> &'a mut Vec<u8> {
    &mut files
        .iter_mut()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("{name} in the bundle"))
        .1
}

fn lines(data: &[u8]) -> Vec<Value> {
    String::from_utf8_lossy(data)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn unlines(lines: &[Value]) -> Vec<u8> {
    let mut out = String::new();
    for l in lines {
        out.push_str(&serde_json::to_string(l).unwrap());
        out.push('\n');
    }
    out.into_bytes()
}

/// Recomputes the manifest's SHA-256 of every file, so only the chain and the signatures
/// can tell what changed.
fn fix_manifest(files: &mut [(String, Vec<u8>)]) {
    let hashes: Vec<(String, String)> = files
        .iter()
        .filter(|(n, _)| n != "manifest.json")
        .map(|(n, d)| (n.clone(), sha256_hex(d)))
        .collect();
    let manifest = file(files, "manifest.json");
    let mut m: Value = serde_json::from_slice(manifest).unwrap();
    for (name, hash) in hashes {
        m["files"][name] = Value::String(hash);
    }
    *manifest = serde_json::to_vec_pretty(&m).unwrap();
}

/// Tampers with a copy of `bundle`: `edit` gets the events of `session`, then the
/// manifest's hashes are fixed (when `fix`). Returns the new bundle's path.
fn tampered(
    bundle: &Path,
    name: &str,
    session: &str,
    fix: bool,
    edit: impl FnOnce(&mut Vec<Value>),
) -> PathBuf {
    let mut files = read_tar(bundle);
    let events = file(&mut files, &format!("sessions/{session}/events.jsonl"));
    let mut ev = lines(events);
    edit(&mut ev);
    *events = unlines(&ev);
    if fix {
        fix_manifest(&mut files);
    }
    let path = bundle.with_file_name(format!("{name}.tar"));
    write_tar(&path, &files);
    path
}

/// `ward verify BUNDLE [--public-key KEY]`: must fail, and its output must contain `want`.
fn assert_tampered(ward: &Ward, bundle: &Path, key: &str, want: &str) -> String {
    let out = ward.cli(&["verify", bundle.to_str().unwrap(), "--public-key", key]);
    assert!(!out.status.success(), "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.contains(want), "expected {want:?}\n{}", describe(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("failed verification"),
        "{}",
        describe(&out)
    );
    text
}

fn hash_of(event: &Value) -> [u8; 32] {
    let hex = event["hash"].as_str().unwrap();
    let bytes: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    bytes.try_into().unwrap()
}

fn link(prev: &[u8; 32], body: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(prev)
        .chain_update(body.as_bytes())
        .finalize()
        .into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn bundles_export_by_id_and_filters_and_verify_anywhere() {
    let (ward, id, key) = ward_with_sessions("evidence_export");
    let dir = ward.dir().to_path_buf();

    // By a unique prefix of the id.
    let a = dir.join("a.tar");
    let out = ward.cli_ok(&["export", &id[..13], "-o", a.to_str().unwrap()]);
    assert!(out.contains("exported 1 chain(s), 6 events"), "{out}");
    assert!(out.contains(&format!("--public-key {key}")), "{out}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&a).unwrap().permissions().mode() & 0o777,
        0o600,
        "bundles hold SQL text: owner only"
    );
    let files = read_tar(&a);
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    for want in [
        "README.txt",
        "public_key.hex",
        &format!("sessions/{id}/events.jsonl"),
        &format!("sessions/{id}/signatures.jsonl"),
        "manifest.json",
    ] {
        assert!(names.contains(&want), "{want} in {names:?}");
    }
    let manifest: Value = serde_json::from_slice(&files.last().unwrap().1).unwrap();
    assert_eq!(manifest["public_key"], key.as_str());
    assert_eq!(manifest["sessions"][0]["identity"], "alice");
    assert_eq!(manifest["sessions"][0]["events"], 6);
    assert_eq!(manifest["sessions"][0]["signed_through"], 6);
    // The bodies are the exact stored bytes.
    let db = rusqlite::Connection::open(ward.data_dir().join("ward.db")).unwrap();
    let stored: String = db
        .query_row(
            "SELECT body FROM event_log WHERE session_id = ?1 AND seq = 4",
            [&id],
            |r| r.get(0),
        )
        .unwrap();
    let events = lines(&files[2].1);
    assert_eq!(events[3]["body"].as_str().unwrap(), stored);
    assert!(stored.contains("secret sauce"));

    // Verified against the key obtained separately, and against the bundle's own, saying so.
    let out = ward.cli_ok(&["verify", a.to_str().unwrap(), "--public-key", &key]);
    assert!(
        out.contains(&format!("OK        session {id}: 6 events, signed")),
        "{out}"
    );
    assert!(out.contains("verified against the key you gave"), "{out}");
    assert!(out.contains("1 of 1 sessions intact"), "{out}");
    // Anywhere: no config, no store, another directory.
    let elsewhere = harness::fresh_dir("evidence-elsewhere");
    let copy = elsewhere.join("evidence.tar");
    std::fs::copy(&a, &copy).unwrap();
    let mut cmd = std::process::Command::new(harness::ward_bin());
    cmd.args(["verify", "evidence.tar"]).current_dir(&elsewhere);
    let out = harness::run_with_timeout(&mut cmd, std::time::Duration::from_secs(30));
    assert!(out.status.success(), "{}", describe(&out));
    let key_id = &manifest["key_id"].as_str().unwrap();
    assert!(
        stdout(&out).contains(&format!(
            "verified against the key inside the bundle (key id {key_id}); pass --public-key to check it is ward's"
        )),
        "{}",
        describe(&out)
    );

    // By identity and time: both of alice's sessions, not bob's.
    let alice = dir.join("alice.tar");
    ward.cli_ok(&[
        "export",
        "--identity",
        "alice",
        "--since",
        "1h",
        "--until",
        "0s",
        "-o",
        alice.to_str().unwrap(),
    ]);
    let m: Value = serde_json::from_slice(&read_tar(&alice).last().unwrap().1).unwrap();
    let who: Vec<&str> = m["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["identity"].as_str().unwrap())
        .collect();
    assert_eq!(who, ["alice", "alice"]);
    assert_eq!(m["selection"]["identity"], "alice");
    let out = ward.cli_ok(&["verify", alice.to_str().unwrap(), "--public-key", &key]);
    assert!(out.contains("2 of 2 sessions intact"), "{out}");

    // The gateway chain (carol's lock and unlock) on request, also in the store check.
    let bob = dir.join("bob.tar");
    ward.cli_ok(&[
        "export",
        "--identity",
        "bob",
        "--include-gateway",
        "-o",
        bob.to_str().unwrap(),
    ]);
    let out = ward.cli_ok(&["verify", bob.to_str().unwrap(), "--public-key", &key]);
    assert!(out.contains("OK        gateway chain: 2 events"), "{out}");
    assert!(out.contains("2 of 2 sessions intact"), "{out}");
    let out = ward.cli_ok(&["verify"]);
    assert!(out.contains("OK        gateway chain: 2 events"), "{out}");
    assert!(out.contains("4 of 4 sessions intact"), "{out}");

    // To standard output.
    let out = ward.cli(&["export", &id, "-o", "-"]);
    assert!(out.status.success(), "{}", describe(&out));
    let piped = dir.join("piped.tar");
    std::fs::write(&piped, &out.stdout).unwrap();
    assert_eq!(read_tar(&piped).len(), 5);
    assert!(String::from_utf8_lossy(&out.stderr).contains("exported 1 chain(s)"));

    // Nothing selected is an error, and leaves no file behind.
    let none = dir.join("none.tar");
    let out = ward.cli(&[
        "export",
        "--identity",
        "nobody",
        "-o",
        none.to_str().unwrap(),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no session matches"),
        "{}",
        describe(&out)
    );
    assert!(!none.exists());
    let out = ward.cli(&["export", "01234567-dead", "-o", none.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no session matches \"01234567-dead\""),
        "{}",
        describe(&out)
    );
}

#[test]
fn every_kind_of_tampering_is_named_with_its_event() {
    let (ward, id, key) = ward_with_sessions("evidence_tamper");
    let bundle = ward.dir().join("a.tar");
    ward.cli_ok(&["export", &id, "-o", bundle.to_str().unwrap()]);
    // #1 start, #2 the command, #3-#5 the statements, #6 end (signed).
    let events = lines(file(
        &mut read_tar(&bundle),
        &format!("sessions/{id}/events.jsonl"),
    ));
    assert_eq!(events.len(), 6);
    assert!(events[3]["body"].as_str().unwrap().contains("secret sauce"));

    // Altered: the SQL text of #4 changed, the manifest fixed.
    let t = tampered(&bundle, "altered", &id, true, |ev| {
        let body = ev[3]["body"].as_str().unwrap().replace("secret", "public");
        ev[3]["body"] = Value::String(body);
    });
    let out = assert_tampered(&ward, &t, &key, "event #4 was altered");
    assert!(out.contains("files     "), "the manifest was fixed: {out}");
    // The same edit without fixing the manifest: the file hash says so too.
    let t = tampered(&bundle, "altered-unfixed", &id, false, |ev| {
        let body = ev[3]["body"].as_str().unwrap().replace("secret", "public");
        ev[3]["body"] = Value::String(body);
    });
    let out = assert_tampered(
        &ward,
        &t,
        &key,
        &format!("TAMPERED  file sessions/{id}/events.jsonl does not match its SHA-256"),
    );
    assert!(out.contains("event #4 was altered"), "{out}");

    // Altered with the whole chain recomputed to fit: only the signature can tell.
    let t = tampered(&bundle, "rechained", &id, true, |ev| {
        let body = ev[3]["body"].as_str().unwrap().replace("secret", "public");
        ev[3]["body"] = Value::String(body);
        let mut prev = hash_of(&ev[2]);
        for e in ev.iter_mut().skip(3) {
            prev = link(&prev, e["body"].as_str().unwrap());
            e["hash"] = Value::String(hex(&prev));
        }
    });
    assert_tampered(
        &ward,
        &t,
        &key,
        "the signed head at event #6 does not match the log",
    );

    // Removed: #3's line deleted.
    let t = tampered(&bundle, "removed", &id, true, |ev| drop(ev.remove(2)));
    assert_tampered(&ward, &t, &key, "event #3 was removed");
    // The tail cut off (the end's signature kept).
    let t = tampered(&bundle, "truncated", &id, true, |ev| ev.truncate(4));
    assert_tampered(&ward, &t, &key, "event #5 was removed");

    // Inserted: a forged statement after #3, with its hash computed to fit and the
    // following events renumbered.
    let t = tampered(&bundle, "inserted", &id, true, |ev| {
        let mut forged = ev[2].clone();
        let body = forged["body"]
            .as_str()
            .unwrap()
            .replace("select 1", "select 'forged'");
        forged["hash"] = Value::String(hex(&link(&hash_of(&ev[2]), &body)));
        forged["body"] = Value::String(body);
        ev.insert(3, forged);
        for (i, e) in ev.iter_mut().enumerate() {
            e["seq"] = Value::from(i + 1);
        }
    });
    assert_tampered(
        &ward,
        &t,
        &key,
        "event #4 was inserted (event #5 follows event #3)",
    );
    // A forged line slipped in as it is, repeating a number.
    let t = tampered(&bundle, "inserted-copy", &id, true, |ev| {
        let mut forged = ev[2].clone();
        let body = forged["body"].as_str().unwrap().replace("select 1", "drop");
        forged["body"] = Value::String(body);
        ev.insert(3, forged);
    });
    assert_tampered(&ward, &t, &key, "event #3 appears twice");

    // Reordered: two lines swapped, as they are and with their numbers swapped back.
    let t = tampered(&bundle, "swapped", &id, true, |ev| ev.swap(2, 3));
    assert_tampered(&ward, &t, &key, "event #3 appears out of order");
    let t = tampered(&bundle, "swapped-renumbered", &id, true, |ev| {
        ev.swap(2, 3);
        ev[2]["seq"] = Value::from(3);
        ev[3]["seq"] = Value::from(4);
    });
    assert_tampered(&ward, &t, &key, "event #3 does not follow event #2");

    // A signature replaced by one of another session's.
    let mut files = read_tar(&bundle);
    let sigs_name = format!("sessions/{id}/signatures.jsonl");
    let mut sigs = lines(file(&mut files, &sigs_name));
    let mut forged = sigs[0]["signature"].as_str().unwrap().to_string();
    let flipped = if forged.starts_with('0') { "1" } else { "0" };
    forged.replace_range(0..1, flipped);
    sigs[0]["signature"] = Value::String(forged);
    *file(&mut files, &sigs_name) = unlines(&sigs);
    fix_manifest(&mut files);
    let t = ward.dir().join("signature.tar");
    write_tar(&t, &files);
    assert_tampered(
        &ward,
        &t,
        &key,
        "the signature at event #6 does not verify with this public key",
    );

    // The wrong key: the genuine bundle does not verify against it.
    let other = "11".repeat(32);
    let out = assert_tampered(
        &ward,
        &bundle,
        &other,
        "the signature at event #6 does not verify with this public key",
    );
    assert!(out.contains("the bundle names another key"), "{out}");

    // A whole forgery re-signed with another key and that key put in the bundle: consistent
    // with itself (and said to be checked against its own key), caught by ward's key.
    let forger = ward_store::chain::LogSigner::from_seed([42; 32]);
    let mut files = read_tar(&bundle);
    let mut ev = lines(file(&mut files, &format!("sessions/{id}/events.jsonl")));
    let body = ev[3]["body"].as_str().unwrap().replace("secret", "public");
    ev[3]["body"] = Value::String(body);
    let mut prev = hash_of(&ev[2]);
    for e in ev.iter_mut().skip(3) {
        prev = link(&prev, e["body"].as_str().unwrap());
        e["hash"] = Value::String(hex(&prev));
    }
    *file(&mut files, &format!("sessions/{id}/events.jsonl")) = unlines(&ev);
    let mut sigs = lines(file(&mut files, &sigs_name));
    sigs[0]["hash"] = Value::String(hex(&prev));
    sigs[0]["signature"] = Value::String(hex(&forger.sign(&id, 6, &prev)));
    *file(&mut files, &sigs_name) = unlines(&sigs);
    let forger_key = hex(&forger.public_key());
    *file(&mut files, "public_key.hex") = format!("{forger_key}\n").into_bytes();
    let manifest = file(&mut files, "manifest.json");
    let mut m: Value = serde_json::from_slice(manifest).unwrap();
    m["public_key"] = Value::String(forger_key);
    m["key_id"] = Value::String(forger.key_id());
    m["sessions"][0]["head_hash"] = Value::String(hex(&prev));
    *manifest = serde_json::to_vec_pretty(&m).unwrap();
    fix_manifest(&mut files);
    let t = ward.dir().join("forged.tar");
    write_tar(&t, &files);
    let out = ward.cli_ok(&["verify", t.to_str().unwrap()]);
    assert!(
        out.contains(&format!(
            "verified against the key inside the bundle (key id {})",
            forger.key_id()
        )),
        "{out}"
    );
    assert_tampered(
        &ward,
        &t,
        &key,
        "the signature at event #6 does not verify with this public key",
    );
}

#[test]
fn retention_deletes_sessions_that_ended_long_ago_and_keeps_the_rest_verifiable() {
    let db = Postgres::get().create_target("evidence_retention", AuthMethod::ScramSha256);
    let mut ward = Ward::start(
        WardOptions::new()
            .target(Target::postgres("shop", &db))
            .token("alice"),
    );
    ward.psql_ok("alice", "shop", "select 'old'");
    chain_gateway_events(&ward, "carol");
    wait_until(
        || (ward.sessions_json()["sessions"][0]["active"] == false).then_some(()),
        "the session to end",
    );
    // Restart with a short retention: the pass at start deletes the ended session (it
    // ended more than a second ago) and keeps the gateway chain.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let mut yaml = std::fs::read_to_string(ward.config_path()).unwrap();
    yaml.push_str("audit: { retention: 1s }\n");
    std::fs::write(ward.config_path(), yaml).unwrap();
    ward.restart();
    wait_until(
        || {
            ward.sessions_json()["sessions"]
                .as_array()?
                .is_empty()
                .then_some(())
        },
        "retention to delete the old session",
    );
    assert!(
        ward.log().contains("audit retention: deleted sessions"),
        "{}",
        ward.log()
    );
    let out = ward.cli_ok(&["verify"]);
    assert!(out.contains("OK        gateway chain"), "{out}");
    assert!(out.contains("1 of 1 sessions intact"), "{out}");
}
