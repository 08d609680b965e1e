//! The file sink against a real store: content, order, hash chains, rotation, cursors that
//! survive a restart, `start: end` and the `kinds` filter.

mod common;

use common::{TestStore, check_envelopes, fast, sinks, wait_until};
use std::path::Path;

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn file_sink_writes_every_event_once_in_order_with_intact_chains() {
    let mut t = TestStore::new();
    let mut total = t.session("0190a1b2-0000-7000-8000-00000000000a", 3);
    total += t.session("0190a1b2-0000-7000-8000-00000000000b", 2);
    let out = t.dir.path().join("out/events.jsonl");
    let config = sinks(
        "  - { name: local, kind: file, path: out/events.jsonl, batch: 3 }",
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    wait_until("every event in the file", || lines(&out).len() >= total);
    total += t.session("0190a1b2-0000-7000-8000-00000000000c", 1);
    wait_until("the new session in the file", || lines(&out).len() >= total);
    let m = forwarders.metrics();
    wait_until("queue depth 0", || {
        m.get("local")
            .is_some_and(|s| s.queue_depth == 0 && s.cursor == total as i64)
    });
    forwarders.stop();
    let got = lines(&out);
    check_envelopes(&got, total);
    let kinds: Vec<String> = got
        .iter()
        .take(5)
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "session_start",
            "statement",
            "statement",
            "statement",
            "session_end"
        ]
    );
    let first: serde_json::Value = serde_json::from_str(&got[1]).unwrap();
    assert_eq!(first["event"]["text"], "select 1 -- \"quoted\" é");
    assert_eq!(first["session_id"], "0190a1b2-0000-7000-8000-00000000000a");
    let s = m.get("local").unwrap();
    assert_eq!(s.delivered, total as u64);
    assert_eq!(s.failures, 0);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&out).unwrap().permissions().mode() & 0o777,
        0o600
    );
}

#[test]
fn file_sink_rotates_by_size_and_keeps_n_files() {
    let mut t = TestStore::new();
    let mut total = 0;
    for i in 0..6 {
        total += t.session(&format!("0190a1b2-0000-7000-8000-0000000001{i:02}"), 4);
    }
    // Every rotated file is kept (keep: 100): together they hold the whole log.
    let config = sinks(
        "  - { name: all, kind: file, path: all.jsonl, max_bytes: 3000, keep: 100, batch: 7 }\n  - { name: few, kind: file, path: few.jsonl, max_bytes: 3000, keep: 2 }",
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("both sinks caught up", || {
        ["all", "few"]
            .iter()
            .all(|n| m.get(n).is_some_and(|s| s.cursor == total as i64))
    });
    forwarders.stop();

    let base = t.dir.path().join("all.jsonl");
    let mut rotated = 0;
    while t
        .dir
        .path()
        .join(format!("all.jsonl.{}", rotated + 1))
        .exists()
    {
        rotated += 1;
    }
    assert!(
        rotated >= 3,
        "the log should have been rotated several times ({rotated})"
    );
    let mut all = Vec::new();
    for n in (1..=rotated).rev() {
        let path = t.dir.path().join(format!("all.jsonl.{n}"));
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size <= 3000, "{} is {size} bytes", path.display());
        all.extend(lines(&path));
    }
    all.extend(lines(&base));
    check_envelopes(&all, total);

    // keep: 2 leaves the file and two rotated ones, holding the newest events.
    assert!(t.dir.path().join("few.jsonl.2").exists());
    assert!(!t.dir.path().join("few.jsonl.3").exists());
    let mut few = lines(&t.dir.path().join("few.jsonl.2"));
    few.extend(lines(&t.dir.path().join("few.jsonl.1")));
    few.extend(lines(&t.dir.path().join("few.jsonl")));
    assert_eq!(few.last(), all.last());
    assert!(few.len() < all.len());
}

#[test]
fn cursor_survives_a_restart_and_start_end_skips_history() {
    let mut t = TestStore::new();
    let first = t.session("0190a1b2-0000-7000-8000-000000000201", 2);
    let out = t.dir.path().join("a.jsonl");
    let config = sinks("  - { name: a, kind: file, path: a.jsonl }", t.dir.path());
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    wait_until("first session delivered", || lines(&out).len() >= first);
    let m = forwarders.metrics();
    wait_until("cursor saved", || {
        m.get("a").is_some_and(|s| s.cursor == first as i64)
    });
    forwarders.stop();

    // While the forwarder is stopped the log grows; after the restart only the new events
    // are written (the acknowledged ones are not delivered again).
    let second = t.session("0190a1b2-0000-7000-8000-000000000202", 3);
    let config = sinks(
        "  - { name: a, kind: file, path: a.jsonl }\n  - { name: late, kind: file, path: late.jsonl, start: end }\n  - { name: ends, kind: file, path: ends.jsonl, kinds: [session_end] }",
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    wait_until("second session delivered", || {
        lines(&out).len() >= first + second
    });
    let third = t.session("0190a1b2-0000-7000-8000-000000000203", 1);
    let total = first + second + third;
    let m = forwarders.metrics();
    wait_until("all sinks caught up", || {
        ["a", "late", "ends"].iter().all(|n| {
            m.get(n)
                .is_some_and(|s| s.cursor == total as i64 && s.queue_depth == 0)
        })
    });
    forwarders.stop();
    check_envelopes(&lines(&out), total);

    // start: end: only the session written after the sink first started.
    let late = lines(&t.dir.path().join("late.jsonl"));
    assert_eq!(late.len(), third);
    let v: serde_json::Value = serde_json::from_str(&late[0]).unwrap();
    assert_eq!(v["id"], (first + second + 1) as i64);

    // kinds: [session_end]: one line per session, the cursor still at the end of the log.
    let ends = lines(&t.dir.path().join("ends.jsonl"));
    assert_eq!(ends.len(), 3);
    assert!(ends.iter().all(|l| l.contains("\"kind\":\"session_end\"")));
}

#[test]
fn a_file_that_cannot_be_written_is_retried_until_it_can() {
    let mut t = TestStore::new();
    let total = t.session("0190a1b2-0000-7000-8000-000000000301", 2);
    // The sink's directory is a file at first: every delivery fails.
    let blocker = t.dir.path().join("logs");
    std::fs::write(&blocker, "not a directory").unwrap();
    let config = sinks(
        "  - { name: f, kind: file, path: logs/e.jsonl }",
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("failures counted", || {
        m.get("f").is_some_and(|s| s.failures >= 2)
    });
    let s = m.get("f").unwrap();
    assert_eq!(s.queue_depth, total as u64);
    assert_eq!(s.delivered, 0);
    std::fs::remove_file(&blocker).unwrap();
    wait_until("caught up", || {
        m.get("f").is_some_and(|s| s.queue_depth == 0)
    });
    forwarders.stop();
    check_envelopes(&lines(&t.dir.path().join("logs/e.jsonl")), total);
}
