use super::*;
use std::sync::Arc;
use ward_core::event::{SessionEnd, SessionId, SessionStart, StatementEvent, StatementOrigin};

fn start(id: &str, identity: &str, target: &str, started_at: i64) -> AuditEvent {
    AuditEvent::SessionStart(SessionStart {
        session_id: SessionId(id.into()),
        identity: identity.into(),
        groups: Vec::new(),
        target: target.into(),
        protocol: "postgres".into(),
        client_addr: "10.0.0.7:51234".into(),
        tls_version: "TLSv1.3".into(),
        client_program: Some("psql".into()),
        started_at,
        credential: None,
    })
}

fn statement(id: &str, seq: u64, text: &str, started_at: i64) -> AuditEvent {
    AuditEvent::Statement(StatementEvent {
        session_id: SessionId(id.into()),
        seq,
        origin: StatementOrigin::Simple,
        text: Arc::from(text),
        params: (seq == 2).then(|| "$1='42'".to_string()),
        started_at,
        duration_us: 1500,
        rows: Some(seq),
        command: Some("SELECT".into()),
        sqlstate: None,
        error: None,
        decision: None,
        rule: None,
        result_sample: None,
    })
}

fn end(id: &str, ended_at: i64, reason: &str) -> AuditEvent {
    AuditEvent::SessionEnd(SessionEnd {
        session_id: SessionId(id.into()),
        ended_at,
        reason: reason.into(),
    })
}

const A: &str = "0190a1b2-0000-7000-8000-00000000000a";
const B: &str = "0190a1b2-0000-7000-8000-00000000000b";
const C: &str = "0290ffff-0000-7000-8000-00000000000c";

fn sample_store(dir: &Path) -> SqliteStore {
    let mut store = SqliteStore::open(&dir.join("nested/dir/ward.db")).unwrap();
    store
        .write_batch(&[
            start(A, "ci-nightly", "orders-db", 1_000),
            statement(A, 1, "SELECT 1", 1_100),
            statement(A, 2, "SELECT * FROM orders WHERE id = $1", 1_200),
            end(A, 2_000, "client closed"),
            start(B, "alice", "orders-db", 3_000),
            statement(B, 1, "SELECT now()", 3_100),
            start(C, "alice", "hr-db", 5_000),
        ])
        .unwrap();
    store
}

#[test]
fn open_is_idempotent_and_sets_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    drop(SqliteStore::open(&path).unwrap());
    let store = SqliteStore::open(&path).unwrap();
    let version: i64 = store
        .conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
    let mode: String = store
        .conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the audit is private to ward");
    }
}

#[test]
fn refuses_a_store_from_a_newer_ward() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let store = SqliteStore::open(&path).unwrap();
    store
        .conn
        .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
        .unwrap();
    drop(store);
    let err = SqliteStore::open(&path).unwrap_err();
    assert!(matches!(err, StoreError::TooNew { .. }), "{err}");
    assert!(err.to_string().contains("upgrade ward"), "{err}");
}

#[test]
fn batch_reads_back_with_filters() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());

    let all = store.list_sessions(&SessionFilter::default()).unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, [C, B, A], "newest first");

    let a = &all[2];
    assert_eq!(a.identity, "ci-nightly");
    assert_eq!(a.statement_count, 2);
    assert_eq!(a.ended_at, Some(2_000));
    assert_eq!(a.end_reason.as_deref(), Some("client closed"));
    assert!(!a.active);
    assert!(all[0].active && all[1].active);
    assert_eq!(all[1].statement_count, 1);

    let by = |f: SessionFilter| -> Vec<String> {
        store
            .list_sessions(&f)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    assert_eq!(
        by(SessionFilter {
            identity: Some("alice".into()),
            ..Default::default()
        }),
        [C, B]
    );
    assert_eq!(
        by(SessionFilter {
            identity: Some("alice".into()),
            target: Some("orders-db".into()),
            ..Default::default()
        }),
        [B]
    );
    assert_eq!(
        by(SessionFilter {
            since: Some(3_000),
            until: Some(4_000),
            ..Default::default()
        }),
        [B]
    );
    assert_eq!(
        by(SessionFilter {
            limit: 1,
            ..Default::default()
        }),
        [C]
    );
    assert_eq!(
        by(SessionFilter {
            limit: 0,
            ..Default::default()
        })
        .len(),
        3,
        "0 means the default limit"
    );
    assert!(
        by(SessionFilter {
            identity: Some("nobody".into()),
            ..Default::default()
        })
        .is_empty()
    );
}

#[test]
fn sessions_are_found_by_command_text_and_decision() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = sample_store(dir.path());
    let decided = |id: &str, seq: u64, text: &str, decision: &str| {
        let AuditEvent::Statement(mut e) = statement(id, seq, text, 6_000 + seq as i64) else {
            unreachable!()
        };
        e.decision = Some(decision.to_string());
        e.rule = Some("r".into());
        AuditEvent::Statement(e)
    };
    store
        .write_batch(&[
            decided(C, 1, "DELETE FROM staff", "denied"),
            decided(C, 2, "UPDATE staff SET pay = 1", "approved"),
        ])
        .unwrap();
    let by = |f: SessionFilter| -> Vec<String> {
        store
            .list_sessions(&f)
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect()
    };
    let contains = |t: &str| SessionFilter {
        command_contains: Some(t.into()),
        ..Default::default()
    };
    assert_eq!(by(contains("from orders")), [A], "case-insensitive");
    assert_eq!(by(contains("select")), [B, A]);
    assert!(by(contains("drop")).is_empty());
    let decision = |d: DecisionFilter| SessionFilter {
        decision: Some(d),
        ..Default::default()
    };
    assert_eq!(by(decision(DecisionFilter::Denied)), [C]);
    assert_eq!(by(decision(DecisionFilter::Review)), [C]);
    assert_eq!(by(decision(DecisionFilter::Allowed)), [C, B, A]);
    // Both on the same statement: C's DELETE was denied, its UPDATE approved.
    assert_eq!(
        by(SessionFilter {
            command_contains: Some("delete".into()),
            decision: Some(DecisionFilter::Denied),
            ..Default::default()
        }),
        [C]
    );
    assert!(
        by(SessionFilter {
            command_contains: Some("update".into()),
            decision: Some(DecisionFilter::Denied),
            ..Default::default()
        })
        .is_empty()
    );
    assert!(
        DecisionFilter::parse("maybe")
            .unwrap_err()
            .contains("denied, review or allowed")
    );
}

#[test]
fn detail_by_id_and_by_unique_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());

    let detail = store.session_detail(A).unwrap().unwrap();
    assert_eq!(detail.session.id, A);
    let seqs: Vec<u64> = detail.statements.iter().map(|s| s.seq).collect();
    assert_eq!(seqs, [1, 2]);
    let second = &detail.statements[1];
    assert_eq!(second.text, "SELECT * FROM orders WHERE id = $1");
    assert_eq!(second.params.as_deref(), Some("$1='42'"));
    assert_eq!(second.origin, "simple");
    assert_eq!(second.rows, Some(2));
    assert_eq!(second.duration_us, 1500);
    assert_eq!(second.command.as_deref(), Some("SELECT"));

    // C is the only id starting with 0290; upper case is accepted as well.
    let by_prefix = store.session_detail("0290ffff").unwrap().unwrap();
    assert_eq!(by_prefix.session.id, C);
    assert!(by_prefix.statements.is_empty());
    assert_eq!(
        store
            .session_detail("0290FFFF-0")
            .unwrap()
            .unwrap()
            .session
            .id,
        C
    );

    assert!(store.session_detail("deadbeef").unwrap().is_none());
}

#[test]
fn ambiguous_and_short_prefixes_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let store = sample_store(dir.path());
    match store.session_detail("0190a1b2") {
        Err(StoreError::Ambiguous { prefix, examples }) => {
            assert_eq!(prefix, "0190a1b2");
            assert_eq!(examples, [A, B]);
        }
        other => panic!("expected ambiguity, got {other:?}"),
    }
    let err = store.session_detail("0190").unwrap_err();
    assert!(matches!(err, StoreError::PrefixTooShort { .. }), "{err}");
}

#[test]
fn failed_batches_leave_nothing_behind_and_duplicates_are_constraint_errors() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = sample_store(dir.path());
    let err = store
        .write_batch(&[
            start(
                "0390aaaa-0000-7000-8000-000000000001",
                "bob",
                "orders-db",
                9_000,
            ),
            start(A, "again", "orders-db", 9_000),
        ])
        .unwrap_err();
    assert!(err.is_constraint_violation(), "{err}");
    assert_eq!(
        store
            .list_sessions(&SessionFilter::default())
            .unwrap()
            .len(),
        3,
        "the batch is all or nothing"
    );
}

#[test]
fn first_end_wins_and_orphans_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut store = sample_store(dir.path());
    store.write_batch(&[end(A, 9_999, "later")]).unwrap();
    let a = store.session_detail(A).unwrap().unwrap().session;
    assert_eq!(
        (a.ended_at, a.end_reason.as_deref()),
        (Some(2_000), Some("client closed"))
    );

    assert_eq!(store.close_orphaned_sessions("crashed").unwrap(), 2);
    let b = store.session_detail(B).unwrap().unwrap().session;
    // B's last statement started at 3_100 and took 1_500us.
    assert_eq!(b.ended_at, Some(4_600));
    assert_eq!(b.end_reason.as_deref(), Some("crashed"));
    assert!(!b.active);
    let c = store.session_detail(C).unwrap().unwrap().session;
    assert_eq!(c.ended_at, Some(5_000));
}

#[test]
fn writer_thread_drains_the_channel_and_exits_when_it_closes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let (sink, rx) = ward_core::AuditSink::channel(8);
    let handle = spawn_writer(path.clone(), rx, 3).unwrap();
    let id = "0490aaaa-0000-7000-8000-000000000001";
    sink.record_blocking(start(id, "ci", "orders-db", 10))
        .unwrap();
    for seq in 1..=20 {
        sink.record_blocking(statement(id, seq, "SELECT 1", 10 + seq as i64))
            .unwrap();
    }
    sink.record_blocking(end(id, 100, "client closed")).unwrap();
    drop(sink);
    handle.join().unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let detail = store.session_detail(id).unwrap().unwrap();
    assert_eq!(detail.statements.len(), 20);
    assert_eq!(detail.session.statement_count, 20);
    assert_eq!(detail.session.ended_at, Some(100));
}

#[test]
fn writer_sets_aside_duplicates_but_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let (sink, rx) = ward_core::AuditSink::channel(16);
    let id = "0590aaaa-0000-7000-8000-000000000001";
    // Queue everything before the writer starts, so it all lands in one batch.
    sink.try_record(start(id, "ci", "orders-db", 10)).unwrap();
    sink.try_record(statement(id, 1, "SELECT 1", 11)).unwrap();
    sink.try_record(statement(id, 1, "SELECT duplicate", 12))
        .unwrap();
    sink.try_record(statement(id, 2, "SELECT 2", 13)).unwrap();
    drop(sink);
    spawn_writer(path.clone(), rx, 100).unwrap().join().unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let detail = store.session_detail(id).unwrap().unwrap();
    let texts: Vec<&str> = detail.statements.iter().map(|s| s.text.as_str()).collect();
    assert_eq!(texts, ["SELECT 1", "SELECT 2"]);
}

#[tokio::test]
async fn reader_queries_from_async_code() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let reader = StoreReader::open(&path).unwrap();
    assert!(
        reader
            .list_sessions(SessionFilter::default())
            .await
            .unwrap()
            .is_empty()
    );
    let mut store = SqliteStore::open(&path).unwrap();
    store
        .write_batch(&[
            start(A, "ci", "orders-db", 1),
            statement(A, 1, "SELECT 1", 2),
        ])
        .unwrap();
    let list = reader
        .list_sessions(SessionFilter::default())
        .await
        .unwrap();
    assert_eq!(list.len(), 1);
    let detail = reader.session_detail(&A[..13]).await.unwrap().unwrap();
    assert_eq!(detail.statements.len(), 1);
    // A reader never creates a store that has gone away.
    std::fs::remove_file(&path).unwrap();
    let _ = std::fs::remove_file(dir.path().join("ward.db-wal"));
    let _ = std::fs::remove_file(dir.path().join("ward.db-shm"));
    drop(store);
    assert!(matches!(
        reader.list_sessions(SessionFilter::default()).await,
        Err(StoreError::Open { .. })
    ));
}

#[test]
fn writer_retries_a_failing_batch_until_it_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let (sink, rx) = ward_core::AuditSink::channel(4);
    let handle = spawn_writer(path.clone(), rx, 10).unwrap();
    // Break the store: statements cannot be written until the table is back.
    let saboteur = rusqlite::Connection::open(&path).unwrap();
    saboteur
        .execute_batch("ALTER TABLE statements RENAME TO statements_away")
        .unwrap();
    let id = "0690aaaa-0000-7000-8000-000000000001";
    sink.record_blocking(start(id, "ci", "orders-db", 10))
        .unwrap();
    sink.record_blocking(statement(id, 1, "SELECT 1", 11))
        .unwrap();
    drop(sink);
    std::thread::sleep(Duration::from_millis(300));
    assert!(!handle.is_finished(), "the writer keeps retrying");
    saboteur
        .execute_batch("ALTER TABLE statements_away RENAME TO statements")
        .unwrap();
    handle.join().unwrap();

    let store = SqliteStore::open(&path).unwrap();
    let detail = store.session_detail(id).unwrap().unwrap();
    assert_eq!(detail.statements.len(), 1);
}

mod session_log {
    use super::*;
    use crate::chain::{CHECKPOINT_EVERY, LogSigner};

    fn signed_store(dir: &Path) -> (SqliteStore, LogSigner) {
        let signer = LogSigner::from_seed([7; 32]);
        let mut store = SqliteStore::open(&dir.join("ward.db")).unwrap();
        store.set_signer(signer.clone());
        store
            .write_batch(&[
                start(A, "ci-nightly", "orders-db", 1_000),
                statement(A, 1, "SELECT 1", 1_100),
                statement(A, 2, "SELECT * FROM orders WHERE id = $1", 1_200),
            ])
            .unwrap();
        // A second batch continues the chain from the heads in memory; a reopened store
        // continues it from the log itself.
        store
            .write_batch(&[statement(A, 3, "SELECT 3", 1_300)])
            .unwrap();
        let mut store = SqliteStore::open(&dir.join("ward.db")).unwrap();
        store.set_signer(signer.clone());
        store
            .write_batch(&[
                statement(A, 4, "SELECT 4", 1_400),
                end(A, 2_000, "client closed"),
            ])
            .unwrap();
        (store, signer)
    }

    fn problem(store: &SqliteStore, key: &[u8; 32]) -> Option<String> {
        store.verify_session(A, key).unwrap().problem
    }

    #[test]
    fn quiet_sessions_are_signed_on_time_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let signer = LogSigner::from_seed([9; 32]);
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store.set_signer(signer.clone());
        store
            .write_batch(&[
                start(A, "ci-nightly", "orders-db", 1_000),
                statement(A, 1, "SELECT 1", 1_100),
            ])
            .unwrap();
        let signed = |store: &SqliteStore| {
            let v = store.verify_session(A, &signer.public_key()).unwrap();
            assert_eq!(v.problem, None);
            (v.signatures, v.signed_through)
        };
        assert_eq!(
            signed(&store),
            (0, 0),
            "two events: no count checkpoint yet"
        );
        // Not due yet: the interval has not passed since the session was first seen.
        assert_eq!(store.sign_due_heads(Duration::from_secs(3600)).unwrap(), 0);
        assert_eq!(store.sign_due_heads(Duration::ZERO).unwrap(), 1);
        assert_eq!(signed(&store), (1, 2), "the head is signed by time");
        // Nothing new since: nothing to sign again.
        assert_eq!(store.sign_due_heads(Duration::ZERO).unwrap(), 0);
        store
            .write_batch(&[statement(A, 2, "SELECT 2", 1_200)])
            .unwrap();
        assert_eq!(store.sign_due_heads(Duration::ZERO).unwrap(), 1);
        assert_eq!(signed(&store), (2, 3));
        // An ended session is signed at its end and leaves the time checkpoints.
        store
            .write_batch(&[end(A, 2_000, "client closed")])
            .unwrap();
        assert_eq!(store.sign_due_heads(Duration::ZERO).unwrap(), 0);
        assert_eq!(signed(&store), (3, 4));
    }

    #[test]
    fn an_intact_log_verifies_with_its_signed_end() {
        let dir = tempfile::tempdir().unwrap();
        let (store, signer) = signed_store(dir.path());
        let v = store.verify_session(A, &signer.public_key()).unwrap();
        assert_eq!(v.problem, None);
        assert_eq!(v.events, 6);
        assert_eq!(
            (v.signatures, v.signed_through),
            (1, 6),
            "signed at session end"
        );
        assert_eq!(store.logged_sessions().unwrap(), [A]);
    }

    #[test]
    fn alterations_removals_insertions_and_reorderings_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let (store, signer) = signed_store(dir.path());
        let key = signer.public_key();
        let exec = |sql: &str| {
            store.conn.execute_batch(sql).unwrap();
        };
        // Altered: a statement's text changed in place.
        exec("UPDATE event_log SET body = replace(body, 'SELECT 3', 'SELECT 9') WHERE seq = 4");
        assert_eq!(
            problem(&store, &key).as_deref(),
            Some("event #4 was altered")
        );
        exec("UPDATE event_log SET body = replace(body, 'SELECT 9', 'SELECT 3') WHERE seq = 4");
        assert_eq!(problem(&store, &key), None, "restored");
        // Removed.
        exec(
            "CREATE TABLE saved AS SELECT * FROM event_log WHERE seq = 3; DELETE FROM event_log WHERE seq = 3",
        );
        assert!(problem(&store, &key).unwrap().contains("#3 was removed"));
        exec("INSERT INTO event_log SELECT * FROM saved; DROP TABLE saved");
        assert_eq!(problem(&store, &key), None, "restored");
        // Reordered: two events swap places.
        exec(
            "UPDATE event_log SET seq = -1 WHERE seq = 2; UPDATE event_log SET seq = 2 WHERE seq = 3; UPDATE event_log SET seq = 3 WHERE seq = -1",
        );
        assert!(
            problem(&store, &key)
                .unwrap()
                .contains("event #2 does not follow")
        );
        exec(
            "UPDATE event_log SET seq = -1 WHERE seq = 2; UPDATE event_log SET seq = 2 WHERE seq = 3; UPDATE event_log SET seq = 3 WHERE seq = -1",
        );
        assert_eq!(problem(&store, &key), None, "restored");
        // Inserted: a forged event shifted in after #2.
        exec("UPDATE event_log SET seq = seq + 100 WHERE seq > 2; UPDATE event_log SET seq = seq - 99 WHERE seq > 100;
              INSERT INTO event_log (session_id, seq, kind, at, body, hash)
                SELECT session_id, 3, kind, at, replace(body, 'SELECT *', 'SELECT forged'), hash
                FROM event_log WHERE seq = 2");
        let p = problem(&store, &key).unwrap();
        assert!(p.contains("event #3"), "{p}");
        // A log checked against another key is not trusted.
        let dir2 = tempfile::tempdir().unwrap();
        let (store2, _) = signed_store(dir2.path());
        let other = LogSigner::from_seed([8; 32]).public_key();
        assert!(
            problem(&store2, &other)
                .unwrap()
                .contains("does not verify")
        );
    }

    #[test]
    fn long_sessions_are_signed_at_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let signer = LogSigner::from_seed([1; 32]);
        let mut store = SqliteStore::open(&dir.path().join("ward.db")).unwrap();
        store.set_signer(signer.clone());
        let mut events = vec![start(B, "bot", "orders-db", 1)];
        for seq in 1..=(CHECKPOINT_EVERY * 2) {
            events.push(statement(B, seq, "SELECT 1", 10 + seq as i64));
        }
        store.write_batch(&events).unwrap();
        let v = store.verify_session(B, &signer.public_key()).unwrap();
        assert_eq!(v.problem, None);
        assert_eq!(
            v.signatures, 2,
            "a killed gateway still leaves signed prefixes"
        );
        assert_eq!(v.signed_through, CHECKPOINT_EVERY * 2);
    }

    #[test]
    fn the_signing_key_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys/signing.key");
        let first = LogSigner::load_or_generate(&path).unwrap();
        let again = LogSigner::load_or_generate(&path).unwrap();
        assert_eq!(first.public_key(), again.public_key());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let seed = std::fs::read_to_string(&path).unwrap();
        assert!(
            !format!("{first:?}").contains(seed.trim()),
            "Debug never shows the key"
        );
        std::fs::write(&path, "not a key").unwrap();
        assert!(
            LogSigner::load_or_generate(&path)
                .unwrap_err()
                .contains("not a ward signing key")
        );
    }
}

fn journaled(dir: &Path) -> WriterOptions {
    WriterOptions {
        signer: Some(signer()),
        strict: true,
        fsync: true,
        journal: Some(crate::JournalOptions {
            path: dir.join("ward.journal"),
            size: crate::journal::MIN_SIZE,
        }),
        ..WriterOptions::default()
    }
}

#[test]
fn a_journaled_writer_acknowledges_and_stores_every_event_across_wraps() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let (sink, rx) = ward_core::AuditSink::channel(64);
    let handle = spawn_writer_with(path.clone(), rx, journaled(dir.path())).unwrap();
    let id = "0690aaaa-0000-7000-8000-000000000001";
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        sink.record_durable(start(id, "ci", "orders-db", 10), Duration::from_secs(5))
            .await
            .unwrap();
        // Far more than the 64 KiB journal holds: it must wrap several times.
        for seq in 1..=2000 {
            let text = format!("SELECT {seq} -- {}", "x".repeat(100));
            sink.record_durable(
                statement(id, seq, &text, 10 + seq as i64),
                Duration::from_secs(5),
            )
            .await
            .unwrap();
        }
    });
    sink.record_blocking(end(id, 5000, "client closed"))
        .unwrap();
    drop(sink);
    handle.join().unwrap();
    let store = SqliteStore::open(&path).unwrap();
    let detail = store.session_detail(id).unwrap().unwrap();
    assert_eq!(detail.statements.len(), 2000);
    assert_eq!(detail.session.ended_at, Some(5000));
    assert!(store.applied_journal_seq().unwrap() > 0);
}

#[test]
fn journal_records_left_by_a_crash_are_stored_once_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ward.db");
    let id = "0790aaaa-0000-7000-8000-000000000001";
    // What a killed writer leaves: records synced (and acknowledged) but not yet stored.
    {
        let (mut journal, _) = crate::journal::Journal::open(
            &dir.path().join("ward.journal"),
            crate::journal::MIN_SIZE,
        )
        .unwrap();
        let first = vec![
            start(id, "ci", "orders-db", 10),
            statement(id, 1, "SELECT 1", 11),
        ];
        let second = vec![statement(id, 2, "SELECT 2", 12)];
        for batch in [first, second] {
            journal
                .append(&serde_json::to_vec(&batch).unwrap())
                .unwrap();
        }
        journal.sync().unwrap();
    }
    for _run in 0..2 {
        let (sink, rx) = ward_core::AuditSink::channel(8);
        let handle = spawn_writer_with(path.clone(), rx, journaled(dir.path())).unwrap();
        drop(sink);
        handle.join().unwrap();
        let store = SqliteStore::open(&path).unwrap();
        let detail = store.session_detail(id).unwrap().unwrap();
        let texts: Vec<&str> = detail.statements.iter().map(|s| s.text.as_str()).collect();
        assert_eq!(texts, ["SELECT 1", "SELECT 2"], "replayed exactly once");
    }
    // The chain over the recovered events is intact (and signed by the recovering writer).
    let store = SqliteStore::open(&path).unwrap();
    let verdict = store.verify_session(id, &signer().public_key()).unwrap();
    assert_eq!(verdict.problem, None);
    assert_eq!(verdict.events, 3);
}

fn signer() -> crate::chain::LogSigner {
    crate::chain::LogSigner::from_seed([7u8; 32])
}
