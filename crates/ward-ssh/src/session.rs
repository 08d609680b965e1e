//! The relay of one session channel, and what the core decides about it.
//!
//! Each client channel is paired with a channel ward opens on the target. The two
//! directions run apart, so neither can stall the other:
//!
//! - **client → target** runs in the connection's handler (`listener.rs`): data, EOF and
//!   close are forwarded as they come; every request (pty-req, env, exec, shell,
//!   subsystem) is forwarded and answered with the *target's* reply before the next client
//!   message is read, which keeps replies in order and tied to what the client asked.
//!   Exec, shell and subsystem requests are first judged by the policy and, in strict audit
//!   mode, recorded durably (a `command` event) before they are sent. A denied request
//!   never reaches the target: the client gets ward's message on stderr and exit status 126.
//!   A request a `review` rule holds is answered at once and waits in a task of its own
//!   (the client sees "waiting for approval: request r-…" on stderr; its input waits too),
//!   so the connection keeps running; approved, it is recorded and sent, otherwise refused
//!   like a denied one.
//! - **target → client** is a task per channel ([`pump`]): output, stderr, EOF, exit status
//!   and exit signal are forwarded; the target's replies to requests are handed back to the
//!   handler. When the target's channel ends, the program's result is recorded as a
//!   `statement` event (exit status, duration).
//!
//! Flow control. ward writes to a side only within the window that side granted. Client
//! input is not written from the handler itself but queued for a writer task per channel
//! ([`writer`]): russh runs one loop per connection and re-opens the client's window as
//! soon as data arrives, so if the handler waited for the target's window, that loop would
//! also stop reading the client's window adjustments for ward's *output*, and a channel
//! busy in both directions (`ssh host cat < big`) would deadlock through the two loops.
//! Instead the queue is bounded another way: past [`THROTTLE_AT`] queued bytes the
//! connection grants the client only [`THROTTLED_WINDOW`] bytes at a time
//! (`Handler::adjust_window`). That alone does not bound the queue: russh re-opens the
//! window as each packet arrives, so a throttled client still sends as fast as packets
//! make the round trip. Past [`BLOCK_AT`] the handler therefore waits for the queue to
//! drain, but only for [`BLOCK_PATIENCE`] per packet: while it waits, that loop reads
//! nothing else either, and the next thing the client sent may be the window adjustment
//! ward's *output* is waiting for. Output stalled behind that adjustment is what keeps
//! the target's loop (and with it the writer) from moving, so a wait without limit there
//! deadlocks a channel busy both ways (`ssh host cat < big`, seen in the throughput test).
//! Waiting a little per packet slows the client to a crawl instead, and the adjustment
//! gets through. Only past [`HARD_LIMIT`] (a program that has stopped reading its input
//! while the client keeps writing) does the handler wait for good, as the client would
//! wait on a direct connection. Output towards the client waits in russh's per-channel
//! queue. Nothing is buffered whole.

use crate::SshGateway;
use crate::recording::TerminalRecorder;
use crate::sftp;
use crate::upstream::SshUpstream;
use bytes::Bytes;
use russh::{Channel, ChannelMsg, ChannelReadHalf, ChannelWriteHalf, client, server};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use ward_core::approvals::{ApprovalOutcome, ApprovalRequest, waiting_notice};
use ward_core::config::OnExpiry;
use ward_core::event::{CommandEvent, StatementEvent, StatementOrigin, TerminalStream};
use ward_core::policy::{CommandInfo, Decision, Subject};
use ward_core::{AuditEvent, Identity, SessionId};

/// How long a channel request waits for the target's answer before ward answers
/// "failure" itself (the target is stuck).
const REPLY_TIMEOUT: Duration = Duration::from_secs(15);
/// Exit status of a command ward refused (as shells use for "cannot execute").
pub const DENIED_EXIT_STATUS: u32 = 126;
/// Queued client input (bytes, all channels of a connection) past which the client gets a
/// small window.
pub const THROTTLE_AT: usize = 4 << 20;
/// The window a throttled client gets at a time.
pub const THROTTLED_WINDOW: u32 = 16 * 1024;
/// Queued client input (bytes, per channel) past which the handler waits a little for the
/// target with each packet.
pub const BLOCK_AT: usize = 16 << 20;
/// How long the handler waits per packet past [`BLOCK_AT`] (see the module docs for why
/// not longer).
pub const BLOCK_PATIENCE: Duration = Duration::from_millis(10);
/// Queued client input (bytes, per channel) past which the handler waits until the target
/// takes some.
pub const HARD_LIMIT: usize = 64 << 20;

/// Client input on its way to the target, in order.
enum Input {
    Data(Bytes),
    Extended(u32, Bytes),
    Eof,
    Close,
}

/// The session a channel belongs to: who, where, and the audit counters.
pub struct SessionCtx {
    pub gateway: Arc<SshGateway>,
    pub session_id: SessionId,
    pub identity: Identity,
    pub target: Arc<SshUpstream>,
    /// Statement events of the session, numbered from 1.
    pub seq: AtomicU64,
    /// Session channels opened so far (terminal recordings are numbered by it, from 1).
    pub channels: std::sync::atomic::AtomicU32,
    /// The registry's stop token: every wait in the handler (a pause, a full target window,
    /// a reply) gives up when the session is killed, so the disconnect gets through.
    pub stop: tokio_util::sync::CancellationToken,
    /// The `ssh -R` listens and agent forwarding the client was granted.
    pub forwards: crate::forward::Grants,
}

impl SessionCtx {
    /// What the rules in force now say about one request of this session.
    pub(crate) fn decide(&self, info: CommandInfo) -> ward_core::policy::Verdict {
        let target = &self.target.target;
        let subject = Subject {
            identity: &self.identity.name,
            groups: &self.identity.groups,
            target: &target.name,
            target_labels: &target.labels,
            protocol: "ssh",
        };
        self.gateway.policy().decide(&subject, Some(&[info]))
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    fn next_channel(&self) -> u32 {
        self.channels.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// What a client asked a channel to run.
#[derive(Debug, Clone)]
pub enum Program {
    Shell,
    Exec(String),
    Subsystem(String),
}

impl Program {
    fn origin(&self) -> StatementOrigin {
        match self {
            Program::Shell => StatementOrigin::Shell,
            Program::Exec(_) => StatementOrigin::Exec,
            Program::Subsystem(_) => StatementOrigin::Subsystem,
        }
    }

    /// The policy kind (`shell`, `exec`, `subsystem`).
    fn kind(&self) -> &'static str {
        match self {
            Program::Shell => "shell",
            Program::Exec(_) => "exec",
            Program::Subsystem(_) => "subsystem",
        }
    }

    /// The text the audit shows: the command line, `shell` or `subsystem sftp`.
    fn text(&self) -> String {
        match self {
            Program::Shell => "shell".into(),
            Program::Exec(command) => command.clone(),
            Program::Subsystem(name) => format!("subsystem {name}"),
        }
    }
}

/// What happened to a shell, exec or subsystem request.
pub enum Started {
    /// Sent to the target; its reply answers the client.
    Forwarded,
    /// Refused by ward, or held for approval; the client is told on the channel (answer the
    /// request "success").
    Refused,
    /// Could not be sent (the target's channel is gone).
    Failed,
    /// The session must end (the command could not be recorded): the reason.
    EndSession(String),
}

/// A program started on the channel, for its statement event.
struct Running {
    origin: StatementOrigin,
    text: Arc<str>,
    command: &'static str,
    started_at: i64,
    decision: Option<String>,
    rule: Option<String>,
}

/// How the target's program ended.
enum Exit {
    Status(u32),
    Signal(String),
}

/// State both directions of a channel see.
struct ChannelShared {
    running: Mutex<Option<Running>>,
    exit: Mutex<Option<Exit>>,
    /// Set once the statement event is recorded (or the request was refused and recorded).
    recorded: AtomicBool,
    /// Records the channel's bytes once it runs a shell or exec.
    recorder: Arc<TerminalRecorder>,
    /// The client asked for a terminal (a shell on it is interactive).
    interactive: AtomicBool,
    /// Set when the channel runs the sftp subsystem: both directions are then framed.
    sftp: OnceLock<SftpLink>,
}

/// The SFTP state of a channel (see `sftp.rs` and the module docs of `sftp_relay` below).
struct SftpLink {
    tracker: Mutex<sftp::Tracker>,
    /// Client-to-target framing; only the handler uses it.
    framer: Mutex<sftp::Framer>,
    /// `true` once the working directory is known (relative paths wait for it).
    cwd_known: watch::Sender<bool>,
    /// Set when bad data closed the channel: later input is dropped.
    broken: AtomicBool,
}

/// The handler's side of one channel pair.
pub struct ChannelLink {
    /// The channel on the target, for requests (input goes through the writer task).
    pub up: Arc<ChannelWriteHalf<client::Msg>>,
    input: mpsc::UnboundedSender<Input>,
    /// Bytes queued for the writer, counted against the connection's limits.
    pub queued: Arc<Queued>,
    parts: Parts,
    /// Whether the client asked for a terminal (ward's own messages then end in CRLF).
    pub pty: bool,
    /// Records the channel's bytes once it runs a shell or exec.
    pub recorder: Arc<TerminalRecorder>,
}

/// What a held request's task needs of its channel (all shared with the link).
#[derive(Clone)]
struct Parts {
    ctx: Arc<SessionCtx>,
    up: Arc<ChannelWriteHalf<client::Msg>>,
    client: Arc<ChannelWriteHalf<server::Msg>>,
    /// The target's replies, in order; locked by whoever waits for the next one.
    replies: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<bool>>>,
    shared: Arc<ChannelShared>,
    /// `false` while a request waits for approval: client input waits too, so nothing
    /// reaches the target before the program it is meant for.
    open: Arc<watch::Sender<bool>>,
    /// SFTP packets ward answers itself; the pump writes them between the target's packets.
    inject: mpsc::UnboundedSender<Bytes>,
}

/// Pairs a client channel with the target channel opened for it and starts the
/// target-to-client task. `done` is held by that task until it has recorded its result.
pub fn open(
    ctx: Arc<SessionCtx>,
    client: Channel<server::Msg>,
    up: Channel<client::Msg>,
    server: server::Handle,
    done: mpsc::Sender<()>,
) -> ChannelLink {
    // The client channel's read half is not used: the handler's callbacks see every client
    // message first. Dropping it makes russh skip the copy it would queue there.
    let (_, client) = client.split();
    let (up_rx, up_tx) = up.split();
    let client = Arc::new(client);
    let up = Arc::new(up_tx);
    let (reply_tx, replies) = mpsc::unbounded_channel();
    let recorder = TerminalRecorder::new(ctx.clone(), ctx.next_channel());
    let shared = Arc::new(ChannelShared {
        running: Mutex::new(None),
        exit: Mutex::new(None),
        recorded: AtomicBool::new(false),
        recorder: recorder.clone(),
        interactive: AtomicBool::new(false),
        sftp: OnceLock::new(),
    });
    let open = Arc::new(watch::channel(true).0);
    let queued = Arc::new(Queued::default());
    let (input, inputs) = mpsc::unbounded_channel();
    let (inject, injected) = mpsc::unbounded_channel();
    tokio::spawn(writer(
        inputs,
        up.clone(),
        open.clone(),
        queued.clone(),
        ctx.clone(),
    ));
    tokio::spawn(pump(
        up_rx,
        client.clone(),
        server,
        reply_tx,
        shared.clone(),
        ctx.clone(),
        done,
        injected,
    ));
    ChannelLink {
        up: up.clone(),
        input,
        queued,
        parts: Parts {
            ctx,
            up,
            client,
            replies: Arc::new(tokio::sync::Mutex::new(replies)),
            shared,
            open,
            inject,
        },
        pty: false,
        recorder,
    }
}

/// Bytes of client input waiting for the target, and a wake-up for a handler waiting
/// for them to drain.
#[derive(Default)]
pub struct Queued {
    bytes: std::sync::atomic::AtomicUsize,
    drained: tokio::sync::Notify,
}

impl Queued {
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }
}

/// Writes queued client input to the target, within the target's window, in order.
async fn writer(
    mut inputs: mpsc::UnboundedReceiver<Input>,
    up: Arc<ChannelWriteHalf<client::Msg>>,
    open: Arc<watch::Sender<bool>>,
    queued: Arc<Queued>,
    ctx: Arc<SessionCtx>,
) {
    let mut gate = open.subscribe();
    while let Some(input) = inputs.recv().await {
        let ready = async {
            // Held for approval: nothing reaches the target before its program.
            let _ = gate.wait_for(|open| *open).await;
            ctx.gateway
                .controls
                .wait_until_resumed(&ctx.identity.name)
                .await;
        };
        tokio::select! {
            () = ready => {}
            () = ctx.stop.cancelled() => return,
        }
        let (len, sent) = match input {
            Input::Data(data) => (data.len(), up.data_bytes(data).await),
            Input::Extended(code, data) => (data.len(), up.extended_data_bytes(code, data).await),
            Input::Eof => (0, up.eof().await),
            Input::Close => (0, up.close().await),
        };
        queued.bytes.fetch_sub(len, Ordering::AcqRel);
        queued.drained.notify_waiters();
        if sent.is_err() {
            // The target's channel is gone; drain the rest so the counters stay right.
            while let Ok(input) = inputs.try_recv() {
                if let Input::Data(d) | Input::Extended(_, d) = input {
                    queued.bytes.fetch_sub(d.len(), Ordering::AcqRel);
                }
            }
        }
    }
}

impl ChannelLink {
    /// Queues client input (`ext`: stderr-like extended data) for the writer task, which
    /// holds it while the identity is paused or a request waits for approval, and sends it
    /// within the target's window. Waits only when far too much is queued (see the module
    /// docs).
    pub async fn input(&self, data: &[u8], ext: Option<u32>) {
        if ext.is_none()
            && let Some(sftp) = self.parts.shared.sftp.get()
        {
            return self.sftp_input(sftp, data).await;
        }
        self.push(Bytes::copy_from_slice(data), ext).await;
    }

    /// Queues bytes for the writer task (see [`ChannelLink::input`]).
    async fn push(&self, data: Bytes, ext: Option<u32>) {
        let len = data.len();
        if ext.is_none() {
            self.recorder.push(TerminalStream::Input, &data).await;
        }
        let queued = self.queued.bytes.fetch_add(len, Ordering::AcqRel) + len;
        let input = match ext {
            None => Input::Data(data),
            Some(code) => Input::Extended(code, data),
        };
        if self.input.send(input).is_err() {
            self.queued.bytes.fetch_sub(len, Ordering::AcqRel);
            return;
        }
        if queued > BLOCK_AT {
            let drained = async {
                while self.queued.bytes() > BLOCK_AT / 2 {
                    let notified = self.queued.drained.notified();
                    if self.queued.bytes() <= BLOCK_AT / 2 {
                        break;
                    }
                    notified.await;
                }
            };
            let patience = if queued > HARD_LIMIT {
                Duration::MAX
            } else {
                BLOCK_PATIENCE
            };
            tokio::select! {
                _ = tokio::time::timeout(patience, drained) => {}
                () = self.parts.ctx.stop.cancelled() => {}
            }
        }
    }

    /// Forwards the client's EOF after the input queued before it.
    pub fn eof(&self) {
        let _ = self.input.send(Input::Eof);
    }

    /// Closes the target's channel after the input queued before it.
    pub fn close(&self) {
        let _ = self.input.send(Input::Close);
    }

    /// The target's reply to the request just forwarded (`false` if none came in time).
    pub async fn reply(&mut self) -> bool {
        self.parts.reply().await
    }

    /// Judges a shell, exec or subsystem request, records it and sends it to the target,
    /// or refuses it, or holds it for approval.
    pub async fn start(&self, program: Program) -> Started {
        let parts = &self.parts;
        let ctx = &parts.ctx;
        let gateway = &ctx.gateway;
        let target = &ctx.target.target;
        let text = truncate(&program.text(), gateway.command_capture_bytes);
        let info = CommandInfo {
            kinds: vec![program.kind()],
            command_line: match &program {
                Program::Exec(command) => Some(command.clone()),
                _ => None,
            },
            ..CommandInfo::default()
        };
        let line_end = if self.pty { "\r\n" } else { "\n" };
        parts.shared.interactive.store(self.pty, Ordering::Release);
        // `identity.on_expiry: refuse`: once the token has expired, nothing new starts; the
        // connection stays, so the client can finish what runs and reconnect.
        if gateway.on_expiry == OnExpiry::Refuse
            && let Some(at) = ctx.identity.expires
            && chrono::Utc::now() >= at
        {
            let message = ward_core::expiry::expired_message(
                ward_core::expiry::credential_noun(ctx.identity.source),
                &ctx.session_id,
                at,
            );
            let rule = "identity.on_expiry".to_string();
            return match parts
                .refuse(&program, text, rule, message, "token_expired", line_end)
                .await
            {
                Ok(()) => Started::Refused,
                Err(started) => started,
            };
        }
        let verdict = ctx.decide(info);
        match verdict.decision {
            Decision::Allow => {
                tokio::select! {
                    () = gateway.controls.wait_until_resumed(&ctx.identity.name) => {}
                    () = ctx.stop.cancelled() => return Started::Failed,
                }
                let rule = verdict.matched.first().cloned();
                let decision = rule.as_ref().map(|_| "allowed".to_string());
                match parts.record_and_send(&program, text, decision, rule).await {
                    Ok(()) => Started::Forwarded,
                    Err(started) => started,
                }
            }
            Decision::Deny { rule, message } => {
                let message = format!("ward: denied by rule \"{rule}\": {message}");
                match parts
                    .refuse(&program, text, rule, message, "denied", line_end)
                    .await
                {
                    Ok(()) => Started::Refused,
                    Err(started) => started,
                }
            }
            Decision::Review(review) => {
                let request = ApprovalRequest {
                    session_id: ctx.session_id.to_string(),
                    identity: ctx.identity.name.to_string(),
                    target: target.name.clone(),
                    protocol: "ssh".into(),
                    command: text.clone(),
                    rule: review.rule.clone(),
                    approvers: review.approvers.clone(),
                    approvals_required: review.approvals,
                    timeout: review.timeout,
                    on_timeout: review.on_timeout,
                };
                let (id, outcome) = gateway.approvals.submit(request);
                tracing::info!(session = %ctx.session_id, request = %id, rule = %review.rule, command = %text, "ssh request held for approval");
                // The request is answered now and held in a task, so the connection keeps
                // running (the notice reaches the client, kill still works); input waits.
                parts.open.send_replace(false);
                let parts = parts.clone();
                let line_end = line_end.to_string();
                tokio::spawn(async move {
                    let notice = format!("ward: {}{line_end}", waiting_notice(&id));
                    let _ = parts
                        .client
                        .extended_data_bytes(1, Bytes::from(notice))
                        .await;
                    let outcome = tokio::select! {
                        outcome = outcome => outcome,
                        // Dropping the future withdraws the request.
                        () = parts.ctx.stop.cancelled() => return,
                    };
                    match outcome.refusal_message(&id) {
                        Some(message) => {
                            let decision = match outcome {
                                ApprovalOutcome::TimedOut { .. } => "review_timed_out",
                                _ => "review_denied",
                            };
                            let _ = parts
                                .refuse(&program, text, review.rule, message, decision, &line_end)
                                .await;
                        }
                        None => {
                            let rule = match &outcome {
                                ApprovalOutcome::Approved { by } => {
                                    format!("{} (approved by {})", review.rule, by.join(", "))
                                }
                                _ => format!("{} (allowed on timeout)", review.rule),
                            };
                            let sent = parts
                                .record_and_send(
                                    &program,
                                    text,
                                    Some("approved".into()),
                                    Some(rule),
                                )
                                .await
                                .is_ok()
                                && parts.reply().await;
                            if !sent {
                                let message = format!(
                                    "ward: target {} refused the approved request{line_end}",
                                    parts.ctx.target.target.name
                                );
                                let _ = parts
                                    .client
                                    .extended_data_bytes(1, Bytes::from(message))
                                    .await;
                                let _ = parts.up.close().await;
                                let _ = parts.client.exit_status(DENIED_EXIT_STATUS).await;
                                let _ = parts.client.close().await;
                            }
                        }
                    }
                    parts.open.send_replace(true);
                });
                Started::Refused
            }
        }
    }
}

impl Parts {
    async fn reply(&self) -> bool {
        let mut replies = self.replies.lock().await;
        tokio::select! {
            reply = tokio::time::timeout(REPLY_TIMEOUT, replies.recv()) => matches!(reply, Ok(Some(true))),
            () = self.ctx.stop.cancelled() => false,
        }
    }

    /// Records an allowed request (durably first in strict mode) and sends it to the target.
    /// An sftp subsystem is framed from here on.
    async fn record_and_send(
        &self,
        program: &Program,
        text: String,
        decision: Option<String>,
        rule: Option<String>,
    ) -> Result<(), Started> {
        let ctx = &self.ctx;
        let gateway = &ctx.gateway;
        let now = ward_core::time::now_micros();
        let text: Arc<str> = text.into();
        if gateway.audit_strict {
            let event = AuditEvent::Command(CommandEvent {
                session_id: ctx.session_id.clone(),
                origin: program.origin(),
                text: text.clone(),
                params: None,
                decision: decision.clone(),
                rule: rule.clone(),
                at: now,
            });
            if let Err(e) = gateway
                .audit
                .record_durable(event, gateway.durable_timeout)
                .await
            {
                tracing::error!(session = %ctx.session_id, error = %e, "an ssh request could not be recorded; it was not sent and the session is ended");
                return Err(Started::EndSession(format!(
                    "the request could not be recorded ({e}); it was not sent to the target"
                )));
            }
        }
        *self
            .shared
            .running
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Running {
            origin: program.origin(),
            text,
            command: match program {
                Program::Shell => "SHELL",
                Program::Exec(_) => "EXEC",
                Program::Subsystem(_) => "SUBSYSTEM",
            },
            started_at: now,
            decision,
            rule,
        });
        if !matches!(program, Program::Subsystem(_)) {
            let interactive = self.shared.interactive.load(Ordering::Acquire)
                && matches!(program, Program::Shell);
            self.shared.recorder.start(interactive).await;
        }
        if let Program::Subsystem(name) = program
            && name == "sftp"
        {
            let _ = self.shared.sftp.set(SftpLink {
                tracker: Mutex::default(),
                framer: Mutex::default(),
                cwd_known: watch::channel(false).0,
                broken: AtomicBool::new(false),
            });
        }
        let sent = match program {
            Program::Shell => self.up.request_shell(true).await,
            Program::Exec(command) => self.up.exec(true, command.as_bytes()).await,
            Program::Subsystem(name) => self.up.request_subsystem(true, name.as_str()).await,
        };
        sent.map_err(|_| Started::Failed)
    }

    /// Records a refused request and tells the client on the channel: `message` on stderr,
    /// exit status 126, close. Nothing reaches the target.
    async fn refuse(
        &self,
        program: &Program,
        text: String,
        rule: String,
        message: String,
        decision: &str,
        line_end: &str,
    ) -> Result<(), Started> {
        let ctx = &self.ctx;
        tracing::info!(session = %ctx.session_id, rule, command = %text, decision, "ssh request refused");
        self.shared.recorded.store(true, Ordering::Release);
        let event = AuditEvent::Statement(StatementEvent {
            session_id: ctx.session_id.clone(),
            seq: ctx.next_seq(),
            origin: program.origin(),
            text: text.into(),
            params: None,
            started_at: ward_core::time::now_micros(),
            duration_us: 0,
            rows: None,
            command: Some(program.kind().to_ascii_uppercase()),
            sqlstate: None,
            error: Some(message.clone()),
            decision: Some(decision.into()),
            rule: Some(rule),
            result_sample: None,
        });
        if ctx.gateway.audit.record(event).await.is_err() {
            return Err(Started::EndSession("the audit log is unavailable".into()));
        }
        let _ = self.up.close().await;
        let client = self.client.clone();
        let message = format!("{message}{line_end}");
        // In a task: when refusing inside the handler, this output must follow the reply the
        // handler sends after returning.
        tokio::spawn(async move {
            let _ = client.extended_data_bytes(1, Bytes::from(message)).await;
            let _ = client.exit_status(DENIED_EXIT_STATUS).await;
            let _ = client.eof().await;
            let _ = client.close().await;
        });
        Ok(())
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
pub(crate) fn truncate(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

/// The target-to-client direction of one channel (see the module docs).
// Each argument is one end this task owns or shares (channels, state, context); bundling
// them would only rename them.
#[allow(clippy::too_many_arguments)]
async fn pump(
    mut up: ChannelReadHalf,
    client: Arc<ChannelWriteHalf<server::Msg>>,
    server: server::Handle,
    replies: mpsc::UnboundedSender<bool>,
    shared: Arc<ChannelShared>,
    ctx: Arc<SessionCtx>,
    done: mpsc::Sender<()>,
    mut injected: mpsc::UnboundedReceiver<Bytes>,
) {
    let id = client.id();
    let recorder = shared.recorder.clone();
    let mut framer = sftp::Framer::default();
    loop {
        let msg = tokio::select! {
            msg = up.wait() => match msg {
                Some(msg) => msg,
                None => break,
            },
            // ward's own SFTP replies: this task writes only whole packets, so they land
            // between the target's.
            Some(packet) = injected.recv() => {
                if client.data_bytes(packet).await.is_err() {
                    break;
                }
                continue;
            }
        };
        let ok = match msg {
            ChannelMsg::Data { data } => match shared.sftp.get() {
                None => {
                    recorder.push(TerminalStream::Output, &data).await;
                    client.data_bytes(data).await.is_ok()
                }
                Some(link) => sftp_replies(link, &mut framer, &data, &client, &ctx).await,
            },
            ChannelMsg::ExtendedData { data, ext } => {
                recorder.push(TerminalStream::Stderr, &data).await;
                client.extended_data_bytes(ext, data).await.is_ok()
            }
            ChannelMsg::Eof => client.eof().await.is_ok(),
            ChannelMsg::Close => break,
            ChannelMsg::ExitStatus { exit_status } => {
                *shared.exit.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Exit::Status(exit_status));
                client.exit_status(exit_status).await.is_ok()
            }
            ChannelMsg::ExitSignal {
                signal_name,
                core_dumped,
                error_message,
                lang_tag,
            } => {
                *shared.exit.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some(Exit::Signal(format!("{signal_name:?}")));
                server
                    .exit_signal_request(id, signal_name, core_dumped, error_message, lang_tag)
                    .await
                    .is_ok()
            }
            ChannelMsg::Success => {
                let _ = replies.send(true);
                true
            }
            ChannelMsg::Failure => {
                let _ = replies.send(false);
                true
            }
            _ => true,
        };
        if !ok {
            // The client's side is gone; the handler closes the target's side.
            break;
        }
    }
    let _ = client.close().await;
    recorder.flush().await;
    if let Some(link) = shared.sftp.get() {
        let unclosed = link
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .unclosed();
        for op in unclosed {
            record_file_op(&ctx, op, None, None).await;
        }
    }
    finish(&ctx, &shared).await;
    drop(done);
}

/// Forwards the target's SFTP packets whole, noting the replies that complete file
/// operations (recorded as `statement` events) and dropping the reply to ward's own
/// REALPATH. `false` ends the pump.
async fn sftp_replies(
    link: &SftpLink,
    framer: &mut sftp::Framer,
    data: &[u8],
    client: &ChannelWriteHalf<server::Msg>,
    ctx: &SessionCtx,
) -> bool {
    framer.push(data);
    loop {
        let packet = match framer.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => return true,
            Err(e) => {
                tracing::warn!(session = %ctx.session_id, error = %e, "the target sent bad sftp data; channel closed");
                let message = format!("ward: the target sent bad SFTP data ({e})\n");
                let _ = client.extended_data_bytes(1, Bytes::from(message)).await;
                return false;
            }
        };
        let (op, ours) = match sftp::parse_reply(&packet) {
            Ok(reply) => {
                let mut tracker = link.tracker.lock().unwrap_or_else(|p| p.into_inner());
                let done = tracker.reply(&reply);
                if tracker.cwd().is_some() {
                    link.cwd_known
                        .send_if_modified(|known| !std::mem::replace(known, true));
                }
                done
            }
            Err(e) => {
                tracing::warn!(session = %ctx.session_id, error = %e, "the target sent a bad sftp reply; channel closed");
                let message = format!("ward: the target sent bad SFTP data ({e})\n");
                let _ = client.extended_data_bytes(1, Bytes::from(message)).await;
                return false;
            }
        };
        if let Some(op) = op {
            record_file_op(ctx, op, None, None).await;
        }
        if !ours && client.data_bytes(packet).await.is_err() {
            return false;
        }
    }
}

/// Records one file operation as a `statement` event of origin `sftp`.
async fn record_file_op(
    ctx: &SessionCtx,
    op: sftp::FileOp,
    decision: Option<String>,
    rule: Option<String>,
) {
    let event = AuditEvent::Statement(StatementEvent {
        session_id: ctx.session_id.clone(),
        seq: ctx.next_seq(),
        origin: StatementOrigin::Sftp,
        text: truncate(&op.text, ctx.gateway.command_capture_bytes).into(),
        params: None,
        started_at: ward_core::time::now_micros(),
        duration_us: 0,
        rows: op.bytes,
        command: Some(op.command),
        sqlstate: None,
        error: op.error,
        decision,
        rule,
        result_sample: None,
    });
    let _ = ctx.gateway.audit.record(event).await;
}

impl ChannelLink {
    /// Client input of an sftp channel: cut into packets, each request that names files
    /// judged by the policy; allowed ones are queued for the target, refused ones answered
    /// by ward with SSH_FX_PERMISSION_DENIED. Bad data closes the channel with a message.
    async fn sftp_input(&self, link: &SftpLink, data: &[u8]) {
        if link.broken.load(Ordering::Acquire) {
            return;
        }
        let mut packets = Vec::new();
        let framed = {
            let mut framer = link.framer.lock().unwrap_or_else(|p| p.into_inner());
            framer.push(data);
            loop {
                match framer.next_packet() {
                    Ok(Some(packet)) => packets.push(packet),
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            }
        };
        for packet in packets {
            let request = match sftp::parse_request(&packet) {
                Ok(request) => request,
                Err(e) => return self.sftp_broken(link, e).await,
            };
            let needs_cwd = |link: &SftpLink| {
                link.tracker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .needs_cwd(&request)
            };
            if needs_cwd(link) {
                // Asked by ward right after INIT; wait (briefly) for the answer.
                let mut known = link.cwd_known.subscribe();
                let _ = tokio::time::timeout(REPLY_TIMEOUT, known.wait_for(|k| *k)).await;
            }
            let cwd_missing = needs_cwd(link);
            let check = link
                .tracker
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .check(&request);
            let refusal = match &check {
                Some(check) => self.sftp_judge(cwd_missing, check).await,
                None => None,
            };
            match refusal {
                Some((id, message)) => {
                    let reply = sftp::status_packet(id, sftp::FX_PERMISSION_DENIED, &message);
                    let _ = self.parts.inject.send(reply);
                }
                None => {
                    let init = request == sftp::Request::Init;
                    link.tracker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .forwarded(&request, check);
                    self.push(packet, None).await;
                    if init {
                        link.tracker
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .ward_realpath_sent();
                        self.push(sftp::realpath_request(), None).await;
                    }
                }
            }
        }
        if let Err(e) = framed {
            self.sftp_broken(link, e).await;
        }
    }

    /// Decides one file operation; `Some((request id, message))` when it is refused (and
    /// recorded).
    async fn sftp_judge(&self, cwd_missing: bool, check: &sftp::Check) -> Option<(u32, String)> {
        let ctx = &self.parts.ctx;
        let info = CommandInfo {
            kinds: check.kinds.clone(),
            paths: check.paths.clone(),
            ..CommandInfo::default()
        };
        let verdict = ctx.decide(info);
        let (rule, message, decision) = match verdict.decision {
            Decision::Allow if cwd_missing => (
                "sftp".to_string(),
                "ward: the working directory is unknown, so relative paths cannot be checked"
                    .to_string(),
                "denied",
            ),
            Decision::Allow => return None,
            Decision::Deny { rule, message } => {
                let message = format!("ward: denied by rule \"{rule}\": {message}");
                (rule, message, "denied")
            }
            Decision::Review(review) => {
                let message = format!(
                    "ward: rule \"{}\" asks for review, which file operations do not support; denied",
                    review.rule
                );
                (review.rule, message, "denied")
            }
        };
        tracing::info!(session = %ctx.session_id, rule, operation = %check.text, "sftp request refused");
        let op = sftp::FileOp {
            text: check.text.clone(),
            command: check.command.clone(),
            bytes: None,
            error: Some(message.clone()),
        };
        record_file_op(ctx, op, Some(decision.into()), Some(rule)).await;
        Some((check.id, message))
    }

    /// Closes an sftp channel whose client sent bad data, telling it why.
    async fn sftp_broken(&self, link: &SftpLink, error: sftp::ProtocolError) {
        if link.broken.swap(true, Ordering::AcqRel) {
            return;
        }
        let ctx = &self.parts.ctx;
        tracing::warn!(session = %ctx.session_id, error = %error, "bad sftp data from the client; channel closed");
        self.close();
        let client = self.parts.client.clone();
        let message = format!("ward: bad SFTP data from the client ({error}); channel closed\n");
        tokio::spawn(async move {
            let _ = client.extended_data_bytes(1, Bytes::from(message)).await;
            let _ = client.exit_status(DENIED_EXIT_STATUS).await;
            let _ = client.eof().await;
            let _ = client.close().await;
        });
    }
}

/// Records the result of the channel's program, once.
async fn finish(ctx: &SessionCtx, shared: &ChannelShared) {
    if shared.recorded.swap(true, Ordering::AcqRel) {
        return;
    }
    let Some(running) = shared
        .running
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    else {
        return;
    };
    let error = match shared.exit.lock().unwrap_or_else(|p| p.into_inner()).take() {
        Some(Exit::Status(0)) => None,
        Some(Exit::Status(n)) => Some(format!("exit status {n}")),
        Some(Exit::Signal(signal)) => Some(format!("killed by signal {signal}")),
        None => Some("ended without an exit status".into()),
    };
    let now = ward_core::time::now_micros();
    let event = AuditEvent::Statement(StatementEvent {
        session_id: ctx.session_id.clone(),
        seq: ctx.next_seq(),
        origin: running.origin,
        text: running.text,
        params: None,
        started_at: running.started_at,
        duration_us: now - running.started_at,
        rows: None,
        command: Some(running.command.into()),
        sqlstate: None,
        error,
        decision: running.decision,
        rule: running.rule,
        result_sample: None,
    });
    let _ = ctx.gateway.audit.record(event).await;
}
