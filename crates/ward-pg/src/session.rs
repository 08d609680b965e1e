//! The relay loop of one PostgreSQL session.
//!
//! Two directions run concurrently inside one task (a `select!` over both, so neither can
//! block the other and no extra task is spawned per session). Each reads whatever bytes are
//! available, walks the message boundaries, lets the [`Tracker`] note the messages it needs
//! and forwards the whole chunk with one write: bytes are never decoded and re-encoded, and
//! socket writes are batched per read rather than per message.

use crate::PgGateway;
use crate::codec::{Framer, HEADER_LEN, Scan};
use crate::listener::{login_complete, refuse};
use crate::mask::ResultMasker;
use crate::messages::{self, sqlstate};
use crate::stream::MaybeTls;
use crate::tracker::Tracker;
use crate::upstream::UpstreamConnector;
use bytes::{Buf, BytesMut};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use ward_core::config::OnExpiry;
use ward_core::event::{AuditEvent, SessionEnd, SessionId, SessionStart, StatementEvent};
use ward_core::identity::Identity;
use ward_core::time::now_micros;

/// Initial read buffer per direction. Small, because most sessions are idle most of the
/// time and memory per idle session matters; buffers grow for large messages and shrink
/// back once drained.
pub(crate) const INITIAL_BUFFER: usize = 8 * 1024;
/// A drained buffer larger than this is released, so one big result does not pin memory
/// for the rest of a long session.
const RETAINED_BUFFER: usize = 64 * 1024;
/// How long a killed session waits after closing its client before closing its target
/// connection (see `run`).
const KILL_TARGET_CLOSE_DELAY: std::time::Duration = std::time::Duration::from_millis(50);
/// Read at least this much at a time when the buffer has less room left.
const MIN_READ_ROOM: usize = 4 * 1024;
/// Room kept for reads from the target in a session whose results are masked.
const MASKED_READ_ROOM: usize = 32 * 1024;

/// A client that passed authentication, waiting for its target connection.
pub struct Admitted {
    pub client: MaybeTls,
    pub peer: SocketAddr,
    pub tls_version: String,
    pub identity: Identity,
    /// What proved the identity, for the session's start event.
    pub credential: ward_core::event::CredentialInfo,
    pub connector: UpstreamConnector,
    pub client_params: Vec<(String, String)>,
}

/// How a session ended.
#[derive(Debug)]
pub(crate) enum End {
    ClientTerminated,
    ClientGone(String),
    ClientProtocol(String),
    TargetGone(String),
    /// The target sent a FATAL error (e.g. an administrator terminated its backend).
    TargetEnded(String),
    TargetProtocol(String),
    Killed(String),
    /// `identity.on_expiry: end`: the credential behind the session expired at this time.
    CredentialExpired(chrono::DateTime<chrono::Utc>),
    AuditUnavailable,
    /// Strict audit: a command's event could not be made durable, so the command was not
    /// sent and the session is ended.
    NotRecorded(String),
    /// Strict audit: a read was sent while its event was committed, and the commit failed,
    /// so its results were withheld and the session is ended.
    ResultNotRecorded(String),
}

impl End {
    fn reason(&self) -> String {
        match self {
            End::ClientTerminated => "client closed the session".into(),
            End::ClientGone(why) => format!("client disconnected: {why}"),
            End::ClientProtocol(why) => format!("client protocol error: {why}"),
            End::TargetGone(why) => format!("target closed the connection: {why}"),
            End::TargetEnded(why) => format!("target ended the session: {why}"),
            End::TargetProtocol(why) => format!("target protocol error: {why}"),
            End::Killed(why) => format!("killed: {why}"),
            End::CredentialExpired(at) => ward_core::expiry::end_reason("token", *at),
            End::AuditUnavailable => "audit writer unavailable".into(),
            End::NotRecorded(why) => format!("a command could not be recorded: {why}"),
            End::ResultNotRecorded(why) => {
                format!("a read could not be recorded, its result was withheld: {why}")
            }
        }
    }
}

/// Connects the admitted client to its target and relays until either side ends.
pub async fn run(gateway: Arc<PgGateway>, admitted: Admitted) {
    let Admitted {
        mut client,
        peer,
        tls_version,
        identity,
        credential,
        connector,
        client_params,
    } = admitted;
    let target_name = connector.target.name.clone();
    let upstream = match connector
        .connect(&client_params, gateway.limits.connect_timeout)
        .await
    {
        Ok(upstream) => upstream,
        Err(e) => {
            tracing::warn!(identity = %identity.name, target = %target_name, error = %e, "cannot open target session");
            let message = if e.is_rejection() {
                format!(
                    "ward: target \"{target_name}\" refused ward's login; an operator should check the target's credential and database in ward.yaml"
                )
            } else {
                format!(
                    "ward: target \"{target_name}\" is unavailable: {}",
                    client_safe(&e)
                )
            };
            refuse(&mut client, sqlstate::CONNECTION_FAILURE, &message, None).await;
            return;
        }
    };

    let session_id = SessionId::generate();
    let registration = gateway.registry.register(
        session_id.clone(),
        identity.name.clone(),
        target_name.as_str().into(),
        "postgres",
        peer.to_string(),
    );
    let live = registration.session.clone();
    // A lock that landed between authentication and registration would have missed this
    // session in its sweep of the registry: look again now that the session is visible.
    if let Some(lock) = gateway.controls.check_lock(&identity.name) {
        live.end(format!("locked: {}", lock.reason));
    }
    let (pid, secret) = gateway
        .cancels
        .register(connector.clone(), upstream.backend_key.unwrap_or((0, 0)));
    let _cancel_guard = CancelGuard {
        gateway: &gateway,
        pid,
    };

    let start = SessionStart {
        session_id: session_id.clone(),
        identity: identity.name.to_string(),
        groups: identity.groups.iter().map(|g| g.to_string()).collect(),
        target: target_name.clone(),
        protocol: "postgres".into(),
        client_addr: peer.to_string(),
        tls_version,
        client_program: client_params
            .iter()
            .find(|(k, _)| k == "application_name")
            .map(|(_, v)| v.clone()),
        started_at: live.started_at,
        credential: Some(credential),
    };
    if gateway
        .audit
        .record(AuditEvent::SessionStart(start))
        .await
        .is_err()
    {
        refuse(
            &mut client,
            sqlstate::SYSTEM_ERROR,
            "ward: the audit log is unavailable; refusing to open an unaudited session",
            None,
        )
        .await;
        return;
    }
    tracing::info!(session = %session_id, identity = %identity.name, target = %target_name, %peer, "session started");

    let hello = login_complete(&upstream.parameter_status, pid, secret);
    let reason = if let Err(e) = write_batch(&mut client, &hello).await {
        End::ClientGone(e.to_string()).reason()
    } else {
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let (mut target_read, mut target_write) = tokio::io::split(upstream.stream);
        let tracker = Mutex::new(Tracker::new(
            session_id.clone(),
            gateway.limits.param_capture_bytes,
            gateway.limits.statement_capture_bytes,
        ));
        let max = gateway.limits.max_message_bytes;
        // Notifications name the sending backend; the client knows this session's backend
        // by ward's process id, so the target's is replaced with it.
        let pid_map = upstream
            .backend_key
            .map(|(target_pid, _)| (target_pid, pid));
        let barrier = ward_core::ReleaseBarrier::default();
        let on_expiry = gateway.on_expiry;
        let refusing = identity
            .expires
            .filter(|_| on_expiry == OnExpiry::Refuse)
            .map(crate::guard::ExpiryRefusal::new);
        let ends_at = identity.expires.filter(|_| on_expiry == OnExpiry::End);
        let ctx = crate::guard::SessionContext {
            gateway: &gateway,
            identity: &identity,
            target: &connector.target,
            session_id: &session_id,
            barrier: &barrier,
            expiry: refusing.as_ref(),
        };
        // Messages ward itself sends the client mid-session (approval notices) go through the
        // target-to-client direction, so they never interleave with a relayed message.
        let (notice_tx, mut notice_rx) = tokio::sync::mpsc::unbounded_channel::<Vec<u8>>();
        let mut masking = SessionMasker::new(&gateway, &identity, &connector.target);
        if let Some(m) = &masking.masker {
            tracing::info!(session = %session_id, rules = ?m.session().rule_names(), "masking results");
        }
        let end = tokio::select! {
            end = crate::guard::client_to_target(&mut client_read, &mut target_write, &tracker, &ctx, &notice_tx, max) => end,
            end = target_to_client(&mut target_read, &mut client_write, &tracker, &gateway, max, pid_map, &mut notice_rx, &mut masking, &barrier) => end,
            _ = live.stop.cancelled() => End::Killed(live.end_reason().unwrap_or_else(|| "by an administrator".into())),
            _ = ward_core::expiry::reached(ends_at) => End::CredentialExpired(ends_at.expect("expiry() never completes for None")),
        };
        let (pending, target_fatal) = {
            let t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            (t.pending_len(), t.target_fatal().map(str::to_string))
        };
        // When the target ends the session with a FATAL error, the client usually hangs up as
        // soon as it reads it; whichever end ward notices first, the target is the cause.
        let end = match (end, target_fatal) {
            (End::ClientGone(_) | End::TargetGone(_), Some(message)) => End::TargetEnded(message),
            (end, _) => end,
        };
        tell_client(&mut client_write, &end, &session_id).await;
        if matches!(end, End::Killed(_)) {
            // Containment ends many sessions at once (a lock sweeps every session of an
            // identity). Close every client first, then the target connections: each closed
            // target connection wakes a database backend that exits, and on a busy host
            // those exits would otherwise compete with closing the remaining clients.
            drop(client_write);
            drop(client_read);
            tokio::time::sleep(KILL_TARGET_CLOSE_DELAY).await;
        }
        if pending > 0
            && !matches!(
                end,
                End::TargetGone(_) | End::TargetEnded(_) | End::TargetProtocol(_)
            )
        {
            // A query may still be running for a client that is gone: stop it.
            if let Some((target_pid, target_secret)) = upstream.backend_key {
                let connector = connector.clone();
                tokio::spawn(async move {
                    let _ = connector.cancel(target_pid, target_secret).await;
                });
            }
        }
        let _ = target_write.shutdown().await;
        let mut reason = end.reason();
        if let Some(r) = &refusing
            && chrono::Utc::now() >= r.at
        {
            // `identity.on_expiry: refuse`: the session outlived its credential.
            let refused = r.refused();
            reason.push_str(&format!(
                "; the token expired at {} during the session and {refused} statement{} refused after it",
                ward_core::expiry::rfc3339(r.at),
                if refused == 1 { " was" } else { "s were" }
            ));
        }
        reason
    };

    tracing::info!(session = %session_id, identity = %identity.name, reason, "session ended");
    let _ = gateway
        .audit
        .record(AuditEvent::SessionEnd(SessionEnd {
            session_id,
            ended_at: now_micros(),
            reason,
        }))
        .await;
    drop(registration);
}

/// Removes the session's cancel key however the session ends.
struct CancelGuard<'a> {
    gateway: &'a PgGateway,
    pid: i32,
}

impl Drop for CancelGuard<'_> {
    fn drop(&mut self) {
        self.gateway.cancels.unregister(self.pid);
    }
}

/// Upstream errors without addresses or credentials, for the client.
fn client_safe(e: &crate::upstream::UpstreamError) -> String {
    use crate::upstream::UpstreamError as U;
    match e {
        U::Connect { source, .. } => format!("cannot connect ({source})"),
        U::Timeout(t) => format!("no answer within {t:?}"),
        U::TlsRefused => "the target does not accept TLS".into(),
        U::Tls(_) => "TLS handshake with the target failed".into(),
        U::Io(_) => "the connection to the target failed during login".into(),
        other => other.to_string(),
    }
}

/// Sends the client a final error when ward, not the client, ends the session.
async fn tell_client<W: AsyncWrite + Unpin>(client: &mut W, end: &End, session_id: &SessionId) {
    let (code, message) = match end {
        End::ClientTerminated | End::ClientGone(_) => return,
        End::Killed(why) => (
            sqlstate::ADMIN_SHUTDOWN,
            format!("terminating connection: session {session_id} was ended by ward ({why})"),
        ),
        End::CredentialExpired(at) => (
            sqlstate::INVALID_AUTHORIZATION,
            ward_core::expiry::expired_message("token", session_id, *at),
        ),
        End::ClientProtocol(why) => (sqlstate::PROTOCOL_VIOLATION, format!("ward: protocol violation: {why}")),
        End::TargetGone(_) | End::TargetEnded(_) | End::TargetProtocol(_) => (
            sqlstate::CONNECTION_FAILURE,
            "ward: the connection to the target was lost".to_string(),
        ),
        End::AuditUnavailable => (
            sqlstate::SYSTEM_ERROR,
            "ward: the audit log is unavailable; the session was ended rather than continue unaudited".to_string(),
        ),
        End::NotRecorded(why) => (
            sqlstate::SYSTEM_ERROR,
            format!("ward: the statement was not sent to the target because the audit log could not record it ({why}); ward never forwards unrecorded statements, so session {session_id} was ended — retry once the audit store is writable"),
        ),
        End::ResultNotRecorded(why) => (
            sqlstate::SYSTEM_ERROR,
            format!("ward: the result was withheld because the audit log could not record the statement ({why}); ward never releases results of unrecorded statements, so session {session_id} was ended — retry once the audit store is writable"),
        ),
    };
    refuse(client, code, &message, None).await;
}

pub(crate) async fn write_batch<W: AsyncWrite + Unpin>(
    w: &mut W,
    bytes: &[u8],
) -> std::io::Result<()> {
    w.write_all(bytes).await?;
    w.flush().await
}

/// Reads more bytes into `buf`, making room for the message it holds the start of.
pub(crate) async fn fill<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut BytesMut,
) -> std::io::Result<usize> {
    if buf.is_empty() && buf.capacity() > RETAINED_BUFFER {
        *buf = BytesMut::with_capacity(INITIAL_BUFFER);
    }
    let wanted = Framer::needed(buf)
        .unwrap_or(0)
        .max(buf.len() + MIN_READ_ROOM);
    if buf.capacity() < wanted {
        buf.reserve(wanted - buf.len());
    }
    r.read_buf(buf).await
}

/// The masking state of a session's results, re-derived when the rules are reloaded.
struct SessionMasker<'a> {
    gateway: &'a PgGateway,
    identity: &'a Identity,
    target: &'a ward_core::config::PostgresTarget,
    /// The rules the current state was derived from, and their generation.
    rules: Arc<ward_core::masking::Masking>,
    generation: u64,
    masker: Option<ResultMasker>,
}

impl<'a> SessionMasker<'a> {
    fn new(
        gateway: &'a PgGateway,
        identity: &'a Identity,
        target: &'a ward_core::config::PostgresTarget,
    ) -> Self {
        let generation = gateway.masking_generation();
        let rules = gateway.masking();
        let mut this = SessionMasker {
            gateway,
            identity,
            target,
            rules: rules.clone(),
            generation,
            masker: None,
        };
        this.derive(rules);
        this
    }

    fn derive(&mut self, rules: Arc<ward_core::masking::Masking>) {
        let session = rules.for_session(&crate::mask::subject(self.identity, self.target));
        self.rules = rules;
        self.masker = match (session, self.masker.take()) {
            (None, _) => None,
            (Some(s), Some(mut m)) => {
                m.replace_rules(s);
                Some(m)
            }
            (Some(s), None) => self
                .gateway
                .catalog(&self.target.name)
                .map(|catalog| ResultMasker::new(s, catalog)),
        };
    }

    /// Picks up reloaded rules (one atomic load when nothing changed).
    fn refresh(&mut self) {
        let generation = self.gateway.masking_generation();
        if generation != self.generation {
            self.generation = generation;
            self.derive(self.gateway.masking());
        }
    }
}

/// Why the scan of a chunk stopped early.
enum Stop {
    /// A RowDescription at this offset names tables the catalog must name first.
    Resolve { at: usize, oids: Vec<u32> },
    /// A CopyOutResponse at this offset starts a COPY TO whose columns must be named first
    /// (by describing `sql`, the COPY's source, on the target).
    DescribeCopy {
        at: usize,
        statement: String,
        sql: String,
    },
}

#[allow(clippy::too_many_arguments)]
async fn target_to_client(
    target: &mut ReadHalf<MaybeTls>,
    client: &mut WriteHalf<MaybeTls>,
    tracker: &Mutex<Tracker>,
    gateway: &PgGateway,
    max: u32,
    pid_map: Option<(i32, i32)>,
    notices: &mut tokio::sync::mpsc::UnboundedReceiver<Vec<u8>>,
    masking: &mut SessionMasker<'_>,
    barrier: &ward_core::ReleaseBarrier,
) -> End {
    // Commits awaited by the last release (kept so releases do not allocate).
    let mut releasing = Vec::new();
    let mut buf = BytesMut::with_capacity(INITIAL_BUFFER);
    let mut framer = Framer::new(max);
    let mut events: Vec<StatementEvent> = Vec::new();
    let mut own_notifications: Vec<usize> = Vec::new();
    // Messages forwarded in a rewritten form — ErrorResponses answering ward's refusals
    // (without the PL/pgSQL context line the refusal statement adds) and masked results:
    // (start, end) in `buf`, replaced by (start, end) in `arena`. One arena per chunk, so
    // masking a million rows allocates nothing per row.
    let mut rewrites: Vec<(usize, usize, usize, usize)> = Vec::new();
    let mut arena: Vec<u8> = Vec::new();
    let mut out: Vec<u8> = Vec::new();
    // Bytes already buffered must be scanned again before reading more (after a stop).
    let mut rescan = false;
    // Result descriptions are kept once masking or result capture applies to the session
    // (from its start, or from the reload that brought rules for it).
    let mut keeping_rows = false;
    loop {
        if masking.masker.is_some() && buf.capacity() - buf.len() < MASKED_READ_ROOM {
            // Masked results cost CPU per message; larger reads halve the wakeups per row.
            buf.reserve(MASKED_READ_ROOM);
        }
        if !rescan {
            let filled = tokio::select! {
                biased;
                filled = fill(target, &mut buf) => filled,
                Some(notice) = notices.recv() => {
                    if let Err(e) = write_batch(client, &notice).await {
                        return End::ClientGone(e.to_string());
                    }
                    continue;
                }
            };
            match filled {
                Ok(0) => return End::TargetGone("connection closed".into()),
                Ok(_) => {}
                Err(e) => return End::TargetGone(e.to_string()),
            }
        }
        rescan = false;
        masking.refresh();
        let masker = &mut masking.masker;
        let masked = masker.is_some();
        // Result capture reads whole DataRows (as the client is sent them) and needs the
        // result descriptions for column names; without it rows stream as before.
        let capturing = gateway.capture_possible();
        let stream_rows = !masked && !capturing;
        if (masked || capturing) && !keeping_rows {
            tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .keep_row_descriptions();
            keeping_rows = true;
        }
        let scanned = {
            let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
            let start = buf.as_ptr() as usize;
            framer.scan::<Stop>(
                &buf,
                // Masked sessions hold every DataRow and CopyData whole, so values are never
                // split across reads; memory stays bounded by the largest message. So do
                // sessions that may capture results, for DataRows.
                |tag| match tag {
                    b'D' => stream_rows,
                    b'd' => !masked,
                    _ => false,
                },
                |scan| {
                    match scan {
                        Scan::Whole { tag: b'A', body } => {
                            let at = body.as_ptr() as usize - start;
                            let own = pid_map.is_some_and(|(target_pid, _)| {
                                body.get(..4) == Some(&target_pid.to_be_bytes()[..])
                            });
                            let from = arena.len();
                            if let Some(m) = masker.as_ref()
                                && m.notification(body, &mut arena)
                            {
                                if own && let Some((_, ward_pid)) = pid_map {
                                    arena[from + HEADER_LEN..from + HEADER_LEN + 4]
                                        .copy_from_slice(&ward_pid.to_be_bytes());
                                }
                                rewrites.push((
                                    at - HEADER_LEN,
                                    at + body.len(),
                                    from,
                                    arena.len(),
                                ));
                            } else if own {
                                own_notifications.push(at);
                            }
                        }
                        Scan::Whole { tag, body } => {
                            let at = body.as_ptr() as usize - start;
                            let from = arena.len();
                            let mut seen = body;
                            if tag == b'E' && t.answering_refusal() {
                                arena.extend_from_slice(&messages::without_context(body));
                                rewrites.push((
                                    at - HEADER_LEN,
                                    at + body.len(),
                                    from,
                                    arena.len(),
                                ));
                            } else if let Some(m) = masker.as_mut() {
                                let rewritten = match tag {
                                    b'T' => {
                                        let oids = m.tables_to_resolve(body);
                                        if !oids.is_empty() {
                                            return Err(Stop::Resolve {
                                                at: at - HEADER_LEN,
                                                oids,
                                            });
                                        }
                                        false
                                    }
                                    b'D' => m.data_row(t.current_row(), body, &mut arena),
                                    b'd' => m.copy_data(body, &mut arena),
                                    b'E' | b'N' => {
                                        let refs = t.current_refs();
                                        m.error_or_notice(tag, body, refs.as_deref(), &mut arena)
                                    }
                                    b'H' => {
                                        if let Some(sql) =
                                            m.copy_source_to_describe(t.current_text())
                                        {
                                            return Err(Stop::DescribeCopy {
                                                at: at - HEADER_LEN,
                                                statement: t
                                                    .current_text()
                                                    .unwrap_or_default()
                                                    .to_string(),
                                                sql,
                                            });
                                        }
                                        m.copy_out_started(
                                            body,
                                            t.current_text(),
                                            t.current_refs(),
                                        );
                                        false
                                    }
                                    b'c' | b'Z' => {
                                        m.copy_out_ended();
                                        false
                                    }
                                    _ => false,
                                };
                                if rewritten {
                                    rewrites.push((
                                        at - HEADER_LEN,
                                        at + body.len(),
                                        from,
                                        arena.len(),
                                    ));
                                    // The tracker (and so the audit) sees the masked form.
                                    seen = &arena[from + HEADER_LEN..];
                                }
                                if tag == b'E' {
                                    m.copy_out_ended();
                                }
                            }
                            t.backend(tag, seen, &mut events)
                        }
                        Scan::Streamed { tag: b'D' } => t.data_row(),
                        Scan::Streamed { .. } => {}
                    }
                    Ok(())
                },
            )
        };
        let (ready, stop) = match scanned {
            Ok(Ok(n)) => (n, None),
            Ok(Err(frame)) => return End::TargetProtocol(frame.to_string()),
            Err(Stop::Resolve { at, oids }) => (at, Some(Stop::Resolve { at, oids })),
            Err(Stop::DescribeCopy { at, statement, sql }) => {
                (at, Some(Stop::DescribeCopy { at, statement, sql }))
            }
        };
        if let Some((_, ward_pid)) = pid_map {
            for at in own_notifications.drain(..) {
                buf[at..at + 4].copy_from_slice(&ward_pid.to_be_bytes());
            }
        }
        // Events are queued before the results are released to the client, so whatever a
        // client has seen is already on its way to the audit log.
        for mut event in events.drain(..) {
            if let Some(m) = masking.masker.as_ref() {
                m.mask_event(&mut event);
            }
            if gateway
                .audit
                .record(AuditEvent::Statement(event))
                .await
                .is_err()
            {
                return End::AuditUnavailable;
            }
        }
        if !rewrites.is_empty() {
            out.clear();
            out.reserve(ready + arena.len());
            let mut from = 0;
            for (start, end, a, b) in rewrites.drain(..) {
                out.extend_from_slice(&buf[from..start]);
                out.extend_from_slice(&arena[a..b]);
                from = end;
            }
            out.extend_from_slice(&buf[from..ready]);
            arena.clear();
            if let Err(end) = release(barrier, &mut releasing).await {
                return end;
            }
            if let Err(e) = write_batch(client, &out).await {
                return End::ClientGone(e.to_string());
            }
            buf.advance(ready);
            release_if_large(&mut out);
            release_if_large(&mut arena);
        } else if ready > 0 {
            arena.clear();
            if let Err(end) = release(barrier, &mut releasing).await {
                return end;
            }
            if let Err(e) = write_batch(client, &buf[..ready]).await {
                return End::ClientGone(e.to_string());
            }
            buf.advance(ready);
        }
        match (stop, masking.masker.as_mut()) {
            (Some(Stop::Resolve { oids, .. }), Some(m)) => {
                // The RowDescription (now at the front of `buf`) names tables the column
                // rules need: look them up before any of its rows are released.
                m.catalog().resolve(&oids).await;
                rescan = true;
            }
            (Some(Stop::DescribeCopy { statement, sql, .. }), Some(m)) => {
                // COPY output has no RowDescription: describe its source on the target (and
                // name the tables) before the first row is released.
                let catalog = m.catalog().clone();
                let description = catalog.describe(&sql).await;
                if let Ok(desc) = &description {
                    let oids = m.tables_to_resolve(desc);
                    if !oids.is_empty() {
                        catalog.resolve(&oids).await;
                    }
                }
                m.set_copy_description(statement, description);
                rescan = true;
            }
            (Some(_), None) => rescan = true,
            (None, _) => {}
        }
    }
}

/// Drops a scratch buffer that grew for one large result, as `fill` does for reads.
/// Waits until the reads whose results are about to be sent are durable (strict audit).
async fn release(
    barrier: &ward_core::ReleaseBarrier,
    spare: &mut Vec<ward_core::PendingDurable>,
) -> Result<(), End> {
    barrier.release(spare).await.map_err(|e| {
        tracing::error!(error = %e, "a read could not be recorded; its result was withheld and the session is ended");
        End::ResultNotRecorded(e.to_string())
    })
}

fn release_if_large(v: &mut Vec<u8>) {
    if v.capacity() > RETAINED_BUFFER {
        *v = Vec::new();
    }
}
