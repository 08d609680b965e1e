//! Recording a shell or exec channel's bytes with timing (`audit.terminal`).
//!
//! An investigator replays what the person at the terminal saw and typed (`ward replay`,
//! asciicast export), so every byte in both directions goes into the session's
//! tamper-evident log as [`TerminalEvent`]s, through the same recorder as every other
//! event. Bytes that arrive close together are coalesced: an event is written when the
//! stream changes (output after input, say), when [`MAX_EVENT_BYTES`] have gathered, or
//! when the oldest gathered byte is [`MAX_AGE`] old (a background tick). So a 100 MB
//! transfer makes a few thousand events and an interactive session keeps its rhythm to
//! within [`MAX_AGE`].
//!
//! Each stream (output, stderr, input) of a channel is recorded up to `audit.terminal_limit`
//! bytes (default 4 MiB); the event that reaches it is marked `truncated`, and the rest
//! passes unrecorded, so a bulk transfer (`ssh host cat < big`) cannot fill the log or
//! hold every other session's events behind its own in the one writer.
//!
//! What is not recorded: SFTP channels (file transfers are not terminal sessions) and
//! anything before the shell or exec request was allowed. Bytes are recorded as they
//! pass, not durably one by one: the program has already produced its output, and the
//! command that started it was recorded (durably, in strict mode) before it ran.

use crate::session::SessionCtx;
use crate::shell_lines::LineTyping;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use ward_core::AuditEvent;
use ward_core::event::{StatementEvent, StatementOrigin, TerminalEvent, TerminalStream};
use ward_core::time::now_micros;

/// Most bytes in one event.
pub const MAX_EVENT_BYTES: usize = 64 * 1024;
/// How long bytes may wait to be written as an event.
pub const MAX_AGE: Duration = Duration::from_millis(50);

/// Bytes gathered for the next event.
struct Gathered {
    stream: TerminalStream,
    bytes: Vec<u8>,
    /// When the first of them passed (Unix micros).
    since: i64,
    /// The stream reached its limit with these bytes.
    truncated: bool,
}

/// Bytes recorded so far of each stream that has a limit (output, stderr, input).
#[derive(Default)]
struct Recorded {
    output: u64,
    stderr: u64,
    input: u64,
}

impl Recorded {
    fn of(&mut self, stream: TerminalStream) -> Option<&mut u64> {
        match stream {
            TerminalStream::Output => Some(&mut self.output),
            TerminalStream::Stderr => Some(&mut self.stderr),
            TerminalStream::Input => Some(&mut self.input),
            TerminalStream::Resize => None,
        }
    }
}

/// The recorder of one channel, shared by its two directions.
pub struct TerminalRecorder {
    ctx: Arc<SessionCtx>,
    channel: u32,
    /// `None` until the channel runs a shell or exec (and when `audit.terminal` is off).
    gathered: Mutex<Option<Gathered>>,
    /// Counted against `audit.terminal_limit`.
    recorded: Mutex<Recorded>,
    enabled: std::sync::atomic::AtomicBool,
    /// The terminal size the client asked for, recorded once the program starts.
    size: Mutex<Option<(u32, u32)>>,
    /// For an interactive shell: the lines typed, told from the keystrokes.
    typing: Mutex<Option<LineTyping>>,
}

impl TerminalRecorder {
    /// A recorder for channel number `channel` of the session; it records nothing until
    /// [`TerminalRecorder::start`].
    pub fn new(ctx: Arc<SessionCtx>, channel: u32) -> Arc<TerminalRecorder> {
        let recorder = Arc::new(TerminalRecorder {
            ctx,
            channel,
            gathered: Mutex::new(None),
            recorded: Mutex::new(Recorded::default()),
            enabled: std::sync::atomic::AtomicBool::new(false),
            size: Mutex::new(None),
            typing: Mutex::new(None),
        });
        tokio::spawn(tick(Arc::downgrade(&recorder)));
        recorder
    }

    fn enabled(&self) -> bool {
        self.enabled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The channel now runs a shell or exec: record from here on (if `audit.terminal`).
    /// `interactive`: a shell with a terminal, whose typed lines join the timeline.
    pub async fn start(&self, interactive: bool) {
        if !self.ctx.gateway.record_terminal {
            return;
        }
        if interactive {
            *self.typing.lock().unwrap_or_else(|p| p.into_inner()) = Some(LineTyping::default());
        }
        self.enabled
            .store(true, std::sync::atomic::Ordering::Release);
        let size = *self.size.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cols, rows)) = size {
            self.resize(cols, rows).await;
        }
    }

    /// Bytes of `stream` passed through ward.
    pub async fn push(&self, stream: TerminalStream, bytes: &[u8]) {
        if !self.enabled() || bytes.is_empty() {
            return;
        }
        if stream == TerminalStream::Input {
            let lines = match self
                .typing
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_mut()
            {
                Some(typing) => typing.feed(bytes),
                None => Vec::new(),
            };
            for line in lines {
                self.typed(line).await;
            }
        }
        // Within the stream's limit: what fits is recorded, and marked when it fills it.
        let limit = self.ctx.gateway.terminal_limit;
        let (bytes, truncated) = {
            let mut recorded = self.recorded.lock().unwrap_or_else(|p| p.into_inner());
            match recorded.of(stream) {
                Some(count) if limit > 0 => {
                    let room = limit.saturating_sub(*count);
                    if room == 0 {
                        return;
                    }
                    let take = (bytes.len() as u64).min(room) as usize;
                    *count += take as u64;
                    (&bytes[..take], *count >= limit)
                }
                _ => (bytes, false),
            }
        };
        let full = {
            let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
            let now = now_micros();
            let stale = match gathered.as_ref() {
                Some(g) => {
                    g.stream != stream
                        || g.bytes.len() + bytes.len() > MAX_EVENT_BYTES
                        || now - g.since > MAX_AGE.as_micros() as i64
                }
                None => false,
            };
            let full = if stale { gathered.take() } else { None };
            let g = gathered.get_or_insert_with(|| Gathered {
                stream,
                bytes: Vec::with_capacity(bytes.len().max(256)),
                since: now,
                truncated: false,
            });
            g.bytes.extend_from_slice(bytes);
            g.truncated |= truncated;
            full
        };
        if let Some(full) = full {
            self.write(full).await;
        }
    }

    /// The client's terminal is `cols` × `rows` (pty-req before the program starts,
    /// window-change while it runs).
    pub async fn resize(&self, cols: u32, rows: u32) {
        *self.size.lock().unwrap_or_else(|p| p.into_inner()) = Some((cols, rows));
        if !self.enabled() {
            return;
        }
        self.flush().await;
        let mut event = TerminalEvent::bytes(
            self.ctx.session_id.clone(),
            self.channel,
            TerminalStream::Resize,
            Vec::new(),
            now_micros(),
        );
        event.text = None;
        event.cols = Some(cols);
        event.rows = Some(rows);
        let _ = self
            .ctx
            .gateway
            .audit
            .record(AuditEvent::Terminal(event))
            .await;
    }

    /// Writes what is gathered (the channel ends, or a resize must follow it).
    pub async fn flush(&self) {
        let gathered = self
            .gathered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(gathered) = gathered {
            self.write(gathered).await;
        }
    }

    /// Writes what has waited longer than [`MAX_AGE`].
    async fn flush_stale(&self) {
        let stale = {
            let mut gathered = self.gathered.lock().unwrap_or_else(|p| p.into_inner());
            let old = gathered
                .as_ref()
                .is_some_and(|g| now_micros() - g.since >= MAX_AGE.as_micros() as i64);
            if old { gathered.take() } else { None }
        };
        if let Some(stale) = stale {
            self.write(stale).await;
        }
    }

    /// Records a line typed into the shell as a `statement` of origin `shell_line`, so
    /// the timeline and `ward sessions list --command-contains` show it.
    async fn typed(&self, line: String) {
        let ctx = &self.ctx;
        let now = now_micros();
        let event = AuditEvent::Statement(StatementEvent {
            session_id: ctx.session_id.clone(),
            seq: ctx.next_seq(),
            origin: StatementOrigin::ShellLine,
            text: crate::session::truncate(&line, ctx.gateway.command_capture_bytes).into(),
            params: None,
            started_at: now,
            duration_us: 0,
            rows: None,
            command: Some("TYPED".into()),
            sqlstate: None,
            error: None,
            decision: None,
            rule: None,
            result_sample: None,
        });
        let _ = ctx.gateway.audit.record(event).await;
    }

    async fn write(&self, gathered: Gathered) {
        let mut event = TerminalEvent::bytes(
            self.ctx.session_id.clone(),
            self.channel,
            gathered.stream,
            gathered.bytes,
            gathered.since,
        );
        event.truncated = gathered.truncated;
        if self
            .ctx
            .gateway
            .audit
            .record(AuditEvent::Terminal(event))
            .await
            .is_err()
        {
            tracing::warn!(session = %self.ctx.session_id, channel = self.channel, "terminal bytes could not be recorded: the audit log is unavailable");
        }
    }
}

/// Writes a recorder's stale bytes every [`MAX_AGE`] until the recorder is gone.
async fn tick(recorder: Weak<TerminalRecorder>) {
    loop {
        tokio::time::sleep(MAX_AGE).await;
        let Some(recorder) = recorder.upgrade() else {
            return;
        };
        recorder.flush_stale().await;
    }
}
