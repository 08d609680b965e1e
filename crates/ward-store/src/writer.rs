//! The batched writer: turns audit events into rows, on its own OS thread.

use crate::{SqliteStore, StoreError};
use rusqlite::{Connection, params};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;
use ward_core::audit::DurableAck;
use ward_core::{AuditEvent, AuditReceiver, Queued};

/// First pause after a failed batch; doubled after each further failure.
const INITIAL_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between attempts (also bounds how often the failure is logged).
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// After this many failed attempts in a row the writer reopens its connection, in case the
/// connection itself is what went bad (e.g. the file was replaced).
const REOPEN_EVERY: u32 = 5;
/// Pause after a batch that did not fill up, so that the next batch gathers the events of
/// many sessions. Without it a busy gateway commits once per statement and wakes this thread
/// for every event; with it commits and wake-ups are bounded (~40/s) while events still
/// reach the store within a few milliseconds.
const LINGER: Duration = Duration::from_millis(25);

/// The end reason given to sessions a previous run left open.
pub const ORPHAN_END_REASON: &str = "unknown: ward stopped before the session ended";

/// How the writer commits.
#[derive(Clone, Debug)]
pub struct WriterOptions {
    /// Most events written in one transaction.
    pub batch: usize,
    /// Signs session logs at session ends and checkpoints (see [`crate::chain`]).
    pub signer: Option<crate::chain::LogSigner>,
    /// Strict audit: every commit is fsync'd and made at once (no lingering), and events
    /// recorded with an acknowledgement are acknowledged only after their commit. Buffered:
    /// commits wait briefly to gather more events and are not fsync'd one by one.
    pub strict: bool,
    /// With `strict`: fsync every commit. Without, a commit is acknowledged once it is in
    /// the operating system's cache (survives a crash of ward, not of the machine).
    pub fsync: bool,
    /// Chain heads left unsigned this long are signed on the next tick.
    pub checkpoint_interval: Duration,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch: 2048,
            signer: None,
            strict: false,
            fsync: true,
            checkpoint_interval: crate::chain::CHECKPOINT_INTERVAL,
        }
    }
}

/// Starts the audit writer: a dedicated OS thread that drains `rx` into the store at `path`.
///
/// The store is opened (and created or migrated) before the thread starts, so a store that
/// cannot be opened is reported here, while `ward serve` can still refuse to start. Sessions
/// left open by a previous run are closed at the same time (see
/// [`SqliteStore::close_orphaned_sessions`]).
///
/// The thread waits for one event, takes whatever else is already queued up to `batch`
/// events, and writes them in one transaction. A failed batch is logged and retried with
/// backoff until it succeeds; meanwhile the bounded channel fills and the sessions feeding
/// it wait, so nothing is lost and nothing runs unaudited for long. Events waiting for an
/// acknowledgement (strict mode's commands) are not retried: their senders are told at
/// once, and refuse the command rather than forward it unrecorded. Only events that can
/// never be written (a duplicate session or statement key, i.e. an adapter bug) are set
/// aside, each logged at error level. The thread returns once every sender is gone and the
/// channel is drained, so joining it after dropping the sinks guarantees a complete audit.
pub fn spawn_writer(
    path: PathBuf,
    rx: AuditReceiver,
    batch: usize,
) -> Result<JoinHandle<()>, StoreError> {
    spawn_writer_with(
        path,
        rx,
        WriterOptions {
            batch,
            ..WriterOptions::default()
        },
    )
}

/// [`spawn_writer`] with every option.
pub fn spawn_writer_with(
    path: PathBuf,
    rx: AuditReceiver,
    options: WriterOptions,
) -> Result<JoinHandle<()>, StoreError> {
    let mut store = SqliteStore::open(&path)?;
    if let Some(signer) = options.signer.clone() {
        store.set_signer(signer);
    }
    if options.strict && options.fsync {
        store.set_durable_commits()?;
    }
    let closed = store.close_orphaned_sessions(ORPHAN_END_REASON)?;
    if closed > 0 {
        tracing::warn!(
            sessions = closed,
            "marked sessions left open by a previous run as ended"
        );
    }
    std::thread::Builder::new()
        .name("ward-audit-writer".into())
        .spawn(move || run(store, rx, options))
        .map_err(StoreError::Spawn)
}

/// Niceness of the writer thread. The audit is written in bursts; a slightly lower priority
/// lets the relay threads' latency-critical work go first when cores are busy, while the
/// bounded queue still guarantees the writer is never starved for long (sessions wait for it).
const WRITER_NICE: libc::c_int = 5;
/// In strict mode every session waits for the writer's next commit, so on busy cores it
/// goes first (when ward may raise priority; otherwise it keeps the default).
const STRICT_WRITER_NICE: libc::c_int = -10;

fn run(mut store: SqliteStore, mut rx: AuditReceiver, options: WriterOptions) {
    // On Linux, PRIO_PROCESS with id 0 changes the calling thread only. Failure (e.g. no
    // permission to raise priority) is harmless.
    let nice = if options.strict {
        STRICT_WRITER_NICE
    } else {
        WRITER_NICE
    };
    // SAFETY: setpriority takes plain integers and touches no memory of ours.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    let batch = options.batch.max(1);
    let mut events = Vec::with_capacity(batch.min(4096));
    let mut acks: Vec<(usize, DurableAck)> = Vec::new();
    let mut written: u64 = 0;
    let mut commits: u64 = 0;
    let mut busy = Duration::ZERO;
    let mut tick = false;
    let take = |queued: Queued,
                events: &mut Vec<AuditEvent>,
                acks: &mut Vec<(usize, DurableAck)>,
                tick: &mut bool| match queued {
        Queued::Event { event, ack } => {
            if let Some(ack) = ack {
                acks.push((events.len(), ack));
            }
            events.push(event);
        }
        Queued::Tick => *tick = true,
    };
    while let Some(first) = rx.blocking_recv_queued() {
        take(first, &mut events, &mut acks, &mut tick);
        while events.len() < batch {
            match rx.try_recv_queued() {
                Some(queued) => take(queued, &mut events, &mut acks, &mut tick),
                None => break,
            }
        }
        if !events.is_empty() {
            let began = std::time::Instant::now();
            write_with_retry(&mut store, &mut events, &mut acks);
            busy += began.elapsed();
            written += events.len() as u64;
            commits += 1;
        }
        if std::mem::take(&mut tick)
            && let Err(e) = store.sign_due_heads(options.checkpoint_interval)
        {
            tracing::error!(error = %e, "cannot sign session-log checkpoints; will retry on the next tick");
        }
        let full = events.len() >= batch;
        events.clear();
        if !full && !options.strict {
            std::thread::sleep(LINGER);
        }
    }
    tracing::info!(
        events = written,
        commits,
        mean_commit_us = busy.as_micros() as u64 / commits.max(1),
        "audit channel closed and drained; audit writer stopped"
    );
}

/// Writes `events`, retrying until it works, and answers `acks` (indexes into `events`).
/// Never gives up on unacknowledged events: giving up would mean either dropping audit
/// records or letting sessions run unaudited. Acknowledged events whose write failed are
/// dropped after telling their senders, who refuse the command they describe.
fn write_with_retry(
    store: &mut SqliteStore,
    events: &mut Vec<AuditEvent>,
    acks: &mut Vec<(usize, DurableAck)>,
) {
    let mut backoff = INITIAL_BACKOFF;
    let mut attempt: u32 = 0;
    loop {
        attempt += 1;
        let result = match store.write_batch(events) {
            Err(e) if e.is_constraint_violation() => write_isolating(store, events),
            other => other,
        };
        let error = match result {
            Ok(()) => {
                if attempt > 1 {
                    tracing::info!(attempts = attempt, "audit store writable again");
                }
                for (_, ack) in acks.drain(..) {
                    let _ = ack.send(Ok(()));
                }
                return;
            }
            Err(error) => error,
        };
        if !acks.is_empty() {
            let message = error.to_string();
            for (index, ack) in acks.drain(..).rev() {
                events.remove(index);
                let _ = ack.send(Err(message.clone()));
            }
            tracing::error!(
                error = %error,
                "cannot write audit events; commands waiting for them were refused"
            );
            if events.is_empty() {
                return;
            }
        }
        tracing::error!(
            error = %error,
            events = events.len(),
            attempt,
            retry_in_ms = backoff.as_millis() as u64,
            "cannot write a batch of audit events; retrying (sessions wait while the audit queue is full)"
        );
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(MAX_BACKOFF);
        if attempt.is_multiple_of(REOPEN_EVERY) {
            match SqliteStore::open(&store.path) {
                Ok(mut fresh) => {
                    if let Some(signer) = store.take_signer() {
                        fresh.set_signer(signer);
                    }
                    if store.durable_commits()
                        && let Err(e) = fresh.set_durable_commits()
                    {
                        tracing::error!(error = %e, "cannot make the reopened audit store durable");
                        continue;
                    }
                    *store = fresh;
                }
                Err(e) => tracing::error!(error = %e, "cannot reopen the audit store"),
            }
        }
    }
}

/// The slow path for a batch that violates a constraint: each event in its own savepoint,
/// so the one bad event is set aside (and logged) and the rest are still written.
fn write_isolating(store: &mut SqliteStore, events: &[AuditEvent]) -> Result<(), StoreError> {
    let write = |source| StoreError::Write { source };
    let mut pending = crate::chain::Pending::new();
    let mut tx = store.conn.transaction().map_err(write)?;
    for event in events {
        let sp = tx.savepoint().map_err(write)?;
        let mut chained = pending.clone();
        let written = write_event(&sp, event).and_then(|()| {
            crate::chain::record(
                &sp,
                event,
                &store.heads,
                &mut chained,
                store.signer.as_ref(),
            )
        });
        match written {
            Ok(()) => {
                sp.commit().map_err(write)?;
                pending = chained;
            }
            Err(e) if e.sqlite_error_code() == Some(rusqlite::ErrorCode::ConstraintViolation) => {
                // Rolled back when `sp` drops. Log what identifies the event, never its SQL
                // text or parameters, which may hold secrets.
                tracing::error!(
                    error = %e,
                    event = %describe(event),
                    "audit event conflicts with one already stored (duplicate key, an adapter \
                     bug); it was not written"
                );
            }
            Err(e) => return Err(write(e)),
        }
    }
    tx.commit().map_err(write)?;
    store.commit_heads(pending, events);
    Ok(())
}

fn describe(event: &AuditEvent) -> String {
    match event {
        AuditEvent::SessionStart(s) => format!("session_start of session {}", s.session_id),
        AuditEvent::Statement(s) => format!("statement #{} of session {}", s.seq, s.session_id),
        AuditEvent::Command(c) => format!("command of session {}", c.session_id),
        AuditEvent::SessionEnd(s) => format!("session_end of session {}", s.session_id),
        AuditEvent::Control(c) => {
            format!("control {} of identity {}", c.action.as_str(), c.identity)
        }
        AuditEvent::Approval(a) => {
            format!("approval {} of request {}", a.state.as_str(), a.request_id)
        }
    }
}

/// SQLite integers are signed; counts beyond `i64::MAX` cannot occur in practice and are
/// clamped rather than wrapped.
fn to_sql_int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Writes one event with cached prepared statements.
pub(crate) fn write_event(conn: &Connection, event: &AuditEvent) -> rusqlite::Result<()> {
    match event {
        AuditEvent::SessionStart(s) => {
            conn.prepare_cached(
                "INSERT INTO sessions (id, identity, target, protocol, client_addr, tls_version,
                                       client_program, started_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                s.session_id.as_str(),
                s.identity,
                s.target,
                s.protocol,
                s.client_addr,
                s.tls_version,
                s.client_program,
                s.started_at,
            ])?;
        }
        AuditEvent::Statement(s) => {
            conn.prepare_cached(
                "INSERT INTO statements (session_id, seq, origin, text, params, started_at,
                                         duration_us, rows, command, sqlstate, error,
                                         decision, rule)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )?
            .execute(params![
                s.session_id.as_str(),
                to_sql_int(s.seq),
                s.origin.as_str(),
                &*s.text,
                s.params,
                s.started_at,
                s.duration_us,
                s.rows.map(to_sql_int),
                s.command,
                s.sqlstate,
                s.error,
                s.decision,
                s.rule,
            ])?;
        }
        AuditEvent::SessionEnd(s) => {
            let changed = conn
                .prepare_cached(
                    "UPDATE sessions SET ended_at = ?2, end_reason = ?3
                     WHERE id = ?1 AND ended_at IS NULL",
                )?
                .execute(params![s.session_id.as_str(), s.ended_at, s.reason])?;
            if changed == 0 {
                tracing::warn!(
                    session = %s.session_id,
                    "audit: session end for a session that is unknown or already ended; ignored"
                );
            }
        }
        // Commands live only in the session log (`event_log`).
        AuditEvent::Command(_) => {}
        AuditEvent::Control(c) => crate::controls::write_control(conn, c)?,
        AuditEvent::Approval(a) => crate::approvals::write_approval(conn, a)?,
    }
    Ok(())
}
