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
    /// With `strict` and `fsync`: acknowledge events once they are in this journal, and move
    /// them into the store afterwards (see [`crate::journal`]). `None`: every commit to the
    /// store is itself fsync'd.
    pub journal: Option<JournalOptions>,
}

/// Where the strict-mode journal lives and how large it is.
#[derive(Clone, Debug)]
pub struct JournalOptions {
    pub path: PathBuf,
    pub size: u64,
}

impl Default for WriterOptions {
    fn default() -> Self {
        WriterOptions {
            batch: 2048,
            signer: None,
            strict: false,
            fsync: true,
            checkpoint_interval: crate::chain::CHECKPOINT_INTERVAL,
            journal: None,
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
    let journal = match options
        .journal
        .as_ref()
        .filter(|_| options.strict && options.fsync)
    {
        Some(journal) => Some(open_journal(&mut store, journal)?),
        None => {
            if options.strict && options.fsync {
                store.set_durable_commits()?;
            }
            None
        }
    };
    let closed = store.close_orphaned_sessions(ORPHAN_END_REASON)?;
    if closed > 0 {
        tracing::warn!(
            sessions = closed,
            "marked sessions left open by a previous run as ended"
        );
    }
    std::thread::Builder::new()
        .name("ward-audit-writer".into())
        .spawn(move || match journal {
            Some(journal) => run_journaled(store, journal, rx, options),
            None => run(store, rx, options),
        })
        .map_err(StoreError::Spawn)
}

/// Opens the journal and moves the records a previous run left in it into the store, so
/// the store is complete before anything reads it (locks to restore, orphaned sessions).
fn open_journal(
    store: &mut SqliteStore,
    options: &JournalOptions,
) -> Result<crate::journal::Journal, StoreError> {
    let journal_err = |source| StoreError::Journal {
        path: options.path.clone(),
        source,
    };
    let (mut journal, records) =
        crate::journal::Journal::open(&options.path, options.size).map_err(journal_err)?;
    let applied = store.applied_journal_seq()?;
    let mut replayed = 0usize;
    for record in records.iter().filter(|r| r.seq > applied) {
        let events: Vec<AuditEvent> = match serde_json::from_slice(&record.payload) {
            Ok(events) => events,
            Err(e) => {
                // A record passed its checksum, so this is a format this build cannot read
                // (a newer ward's journal): stop rather than skip audit events.
                return Err(journal_err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!("record {} cannot be read: {e}", record.seq),
                )));
            }
        };
        store.write_journaled(&events, record.seq)?;
        replayed += events.len();
    }
    if replayed > 0 {
        tracing::warn!(
            events = replayed,
            "recovered audit events a previous run had journaled but not yet stored"
        );
    }
    store.sync_committed()?;
    journal.restart().map_err(journal_err)?;
    // Journaled events are safe while the store is busy: an attempt to move them that meets
    // another process's lock gives up soon and is retried, rather than stall the journal.
    store.set_busy_timeout(JOURNALED_BUSY_TIMEOUT)?;
    journal.continue_after(applied.max(records.last().map_or(0, |r| r.seq)));
    Ok(journal)
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

/// Adds a queued item to the batch being gathered (a tick only sets `tick`).
fn take(
    queued: Queued,
    events: &mut Vec<AuditEvent>,
    acks: &mut Vec<(usize, DurableAck)>,
    tick: &mut bool,
) {
    match queued {
        Queued::Event { event, ack } => {
            if let Some(ack) = ack {
                acks.push((events.len(), ack));
            }
            events.push(event);
        }
        Queued::Tick => *tick = true,
    }
}

/// How long the journaled writer's store transactions wait for a lock held elsewhere.
const JOURNALED_BUSY_TIMEOUT: Duration = Duration::from_millis(20);

/// Longest pause between attempts to move journaled events into a store that refuses
/// them: attempts are cheap, and sessions resume as soon as one succeeds.
const JOURNALED_MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Longest time journaled events wait before they are moved into the store, so that queries
/// (`ward sessions`, the API) see them within a few milliseconds while busy gateways still
/// move many commits' events in one store transaction.
const APPLY_LINGER: Duration = Duration::from_millis(10);

/// Journaled events not yet in the store.
struct Unapplied {
    events: Vec<AuditEvent>,
    /// The last journal record whose events are all in `events` or in the store.
    seq: u64,
    /// The last record the store has noted as applied.
    applied_seq: u64,
    /// When the oldest of `events` was journaled.
    since: Option<std::time::Instant>,
    /// After a failed attempt: not before this.
    retry_at: Option<std::time::Instant>,
    backoff: Duration,
}

impl Unapplied {
    fn pending(&self) -> bool {
        !self.events.is_empty() || self.seq > self.applied_seq
    }

    /// When the writer should move the events into the store even if nothing else comes.
    fn due(&self) -> std::time::Instant {
        let linger = self.since.unwrap_or_else(std::time::Instant::now) + APPLY_LINGER;
        self.retry_at.map_or(linger, |r| r.max(linger))
    }

    /// Moves the events into the store in one transaction; on failure they stay here (they
    /// are in the journal, so a crash meanwhile loses nothing) and the next attempt waits.
    fn apply(&mut self, store: &mut SqliteStore) -> Result<(), StoreError> {
        if !self.pending() {
            return Ok(());
        }
        let result = match store.write_journaled(&self.events, self.seq) {
            Err(e) if e.is_constraint_violation() => {
                write_isolating(store, &self.events, Some(self.seq))
            }
            other => other,
        };
        match &result {
            Ok(()) => {
                if self.retry_at.take().is_some() {
                    tracing::info!("audit store writable again");
                }
                self.events.clear();
                self.applied_seq = self.seq;
                self.since = None;
                self.backoff = INITIAL_BACKOFF;
            }
            Err(e) => {
                tracing::error!(
                    error = %e,
                    events = self.events.len(),
                    retry_in_ms = self.backoff.as_millis() as u64,
                    "cannot move journaled audit events into the store; they are safe in the journal and will be retried"
                );
                self.retry_at = Some(std::time::Instant::now() + self.backoff);
                self.backoff = (self.backoff * 2).min(JOURNALED_MAX_BACKOFF);
            }
        }
        result
    }
}

/// Refuses the acknowledged events of a batch (their senders refuse the commands) and
/// removes them from it.
fn refuse_acked(events: &mut Vec<AuditEvent>, acks: &mut Vec<(usize, DurableAck)>, why: &str) {
    if acks.is_empty() {
        return;
    }
    for (index, ack) in acks.drain(..).rev() {
        events.remove(index);
        let _ = ack.send(Err(why.to_string()));
    }
    tracing::error!(
        error = why,
        "cannot journal audit events; commands waiting for them were refused"
    );
}

/// The strict writer with a journal: each batch becomes one journal record, synced before
/// its events are acknowledged; the store takes them in shortly after, many records at a
/// time, without an fsync of its own (it is synced before the journal wraps).
fn run_journaled(
    mut store: SqliteStore,
    mut journal: crate::journal::Journal,
    mut rx: AuditReceiver,
    options: WriterOptions,
) {
    // SAFETY: see `run`.
    let _ = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, STRICT_WRITER_NICE) };
    // A timer to wake up for journaled events that are due in the store.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the audit journal's timer; committing to the store directly");
            if let Err(e) = store.set_durable_commits() {
                tracing::error!(error = %e, "cannot make the audit store durable");
            }
            return run(store, rx, options);
        }
    };
    let batch = options.batch.max(1);
    let mut events = Vec::with_capacity(batch.min(4096));
    let mut acks: Vec<(usize, DurableAck)> = Vec::new();
    let applied_seq = journal.next_seq() - 1;
    let mut unapplied = Unapplied {
        events: Vec::new(),
        seq: applied_seq,
        applied_seq,
        since: None,
        retry_at: None,
        backoff: INITIAL_BACKOFF,
    };
    let (mut written, mut commits, mut applies) = (0u64, 0u64, 0u64);
    let mut busy = Duration::ZERO;
    let mut tick = false;
    loop {
        let first = if unapplied.pending() {
            let due = tokio::time::Instant::from_std(unapplied.due());
            // The timer must be created inside the runtime.
            let next =
                runtime.block_on(async { tokio::time::timeout_at(due, rx.recv_queued()).await });
            match next {
                Ok(Some(queued)) => queued,
                Ok(None) => break,
                Err(_) => {
                    if unapplied.apply(&mut store).is_ok() {
                        applies += 1;
                    }
                    continue;
                }
            }
        } else {
            match rx.blocking_recv_queued() {
                Some(queued) => queued,
                None => break,
            }
        };
        take(first, &mut events, &mut acks, &mut tick);
        while events.len() < batch {
            match rx.try_recv_queued() {
                Some(queued) => take(queued, &mut events, &mut acks, &mut tick),
                None => break,
            }
        }
        if !events.is_empty() {
            let began = std::time::Instant::now();
            written += events.len() as u64;
            journal_batch(
                &mut store,
                &mut journal,
                &mut events,
                &mut acks,
                &mut unapplied,
            );
            busy += began.elapsed();
            commits += 1;
            if unapplied.events.len() >= batch
                && unapplied.retry_at.is_none()
                && unapplied.apply(&mut store).is_ok()
            {
                applies += 1;
            }
        }
        if std::mem::take(&mut tick) {
            // Checkpoints sign what the store holds: bring it up to date first.
            if unapplied.apply(&mut store).is_ok() {
                applies += 1;
                if let Err(e) = store.sign_due_heads(options.checkpoint_interval) {
                    tracing::error!(error = %e, "cannot sign session-log checkpoints; will retry on the next tick");
                }
            }
        }
        events.clear();
    }
    // Leave a store that holds everything durably and an empty journal; if the store cannot
    // take the events now, they stay in the journal and the next start recovers them.
    match unapplied
        .apply(&mut store)
        .and_then(|()| store.sync_committed())
    {
        Ok(()) => {
            if let Err(e) = journal.restart() {
                tracing::warn!(error = %e, "cannot reset the audit journal; the next start rereads it");
            }
        }
        Err(e) => tracing::error!(
            error = %e,
            journal = %journal.path().display(),
            "audit events remain in the journal; the next start moves them into the store"
        ),
    }
    tracing::info!(
        events = written,
        commits,
        store_transactions = applies,
        mean_commit_us = busy.as_micros() as u64 / commits.max(1),
        "audit channel closed and drained; audit writer stopped"
    );
}

/// Journals one batch and acknowledges its events (or refuses the acknowledged ones when
/// the journal cannot take them); the events then wait in `unapplied` for the store.
fn journal_batch(
    store: &mut SqliteStore,
    journal: &mut crate::journal::Journal,
    events: &mut Vec<AuditEvent>,
    acks: &mut Vec<(usize, DurableAck)>,
    unapplied: &mut Unapplied,
) {
    let payload = match serde_json::to_vec(&*events) {
        Ok(p) => p,
        Err(e) => {
            // Cannot happen with ward's event types; fail closed if it ever does.
            refuse_acked(events, acks, &format!("cannot encode audit events: {e}"));
            unapplied.events.append(events);
            return;
        }
    };
    if !journal.fits_when_empty(payload.len()) {
        // Larger than the whole journal: straight into the store, synced, like the
        // journal-less writer.
        unapplied.events.append(events);
        let mut backoff = INITIAL_BACKOFF;
        loop {
            match unapplied.apply(store).and_then(|()| store.sync_committed()) {
                Ok(()) => break,
                Err(e) => {
                    refuse_acked(&mut unapplied.events, acks, &e.to_string());
                    std::thread::sleep(backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        for (_, ack) in acks.drain(..) {
            let _ = ack.send(Ok(()));
        }
        return;
    }
    if !journal.fits(payload.len()) {
        make_room(store, journal, events, acks, unapplied);
    }
    match journal.append(&payload) {
        Ok(seq) => {
            if !acks.is_empty()
                && let Err(e) = journal.sync()
            {
                // The record may or may not be on disk: once the store takes what is left
                // of it, it counts as applied and is never replayed.
                refuse_acked(events, acks, &format!("cannot sync the audit journal: {e}"));
            }
            for (_, ack) in acks.drain(..) {
                let _ = ack.send(Ok(()));
            }
            unapplied.seq = seq;
        }
        Err(e) => refuse_acked(events, acks, &e.to_string()),
    }
    unapplied.since.get_or_insert_with(std::time::Instant::now);
    unapplied.events.append(events);
}

/// Waits until the journal can start over: everything in it moved into the store and
/// synced. Meanwhile the queue fills and sessions wait; commands of this batch that wait
/// for their event are refused at the first failure rather than held.
fn make_room(
    store: &mut SqliteStore,
    journal: &mut crate::journal::Journal,
    events: &mut Vec<AuditEvent>,
    acks: &mut Vec<(usize, DurableAck)>,
    unapplied: &mut Unapplied,
) {
    loop {
        let made = unapplied
            .apply(store)
            .and_then(|()| store.sync_committed())
            .map_err(|e| e.to_string())
            .and_then(|()| journal.restart().map_err(|e| e.to_string()));
        match made {
            Ok(()) => return,
            Err(why) => {
                refuse_acked(
                    events,
                    acks,
                    &format!(
                        "the audit journal is full and the store cannot take its events: {why}"
                    ),
                );
                std::thread::sleep(unapplied.backoff);
            }
        }
    }
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
            Err(e) if e.is_constraint_violation() => write_isolating(store, events, None),
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
/// so the one bad event is set aside (and logged) and the rest are still written. With
/// `journal_seq`, notes that journal record as applied in the same transaction.
fn write_isolating(
    store: &mut SqliteStore,
    events: &[AuditEvent],
    journal_seq: Option<u64>,
) -> Result<(), StoreError> {
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
    if let Some(seq) = journal_seq {
        crate::note_journal_applied(&tx, seq).map_err(write)?;
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
        AuditEvent::Terminal(t) => format!("terminal bytes of session {}", t.session_id),
        AuditEvent::SessionEnd(s) => format!("session_end of session {}", s.session_id),
        AuditEvent::Control(c) => {
            format!("control {} of identity {}", c.action.as_str(), c.identity)
        }
        AuditEvent::Approval(a) => {
            format!("approval {} of request {}", a.state.as_str(), a.request_id)
        }
        AuditEvent::AuthRefused(a) => format!("auth_refused ({}) from {}", a.code, a.peer),
        AuditEvent::TokenIssued(t) => format!("token_issued {} to {}", t.token_id, t.identity),
        AuditEvent::TokenRevoked(t) => format!("token_revoked {} of {}", t.token_id, t.identity),
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
        AuditEvent::Command(_) | AuditEvent::Terminal(_) => {}
        AuditEvent::Control(c) => crate::controls::write_control(conn, c)?,
        AuditEvent::Approval(a) => crate::approvals::write_approval(conn, a)?,
        // Refused logins live only in the session log (the gateway chain).
        AuditEvent::AuthRefused(_) => {}
        AuditEvent::TokenIssued(t) => crate::tokens::write_issued(conn, t)?,
        AuditEvent::TokenRevoked(t) => crate::tokens::write_revoked(conn, t)?,
    }
    Ok(())
}
