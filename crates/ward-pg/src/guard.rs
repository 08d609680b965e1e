//! The client-to-target direction of the relay, with guardrails.
//!
//! Every Query, Parse and FunctionCall is judged by the policy before it may reach the
//! target. Allowed messages are forwarded untouched, in chunks, as before. For the others:
//!
//! - **Deny.** ward does not forward the statement. Instead it sends the target a tiny
//!   statement that fails with ward's own message (`DO … RAISE EXCEPTION … 42501`), so the
//!   *server* produces the ErrorResponse and ReadyForQuery. That keeps the session exactly
//!   as consistent as a real failed statement would: inside a transaction block the
//!   transaction is aborted (a later COMMIT cannot commit work around the denied statement),
//!   an implicit extended-protocol transaction is rolled back, and responses stay in order
//!   with anything pipelined before. In the extended protocol the denied Parse and
//!   everything after it up to Sync are dropped, as the server itself would discard them
//!   after an error, and the replacement is sent in place of the Sync.
//! - **Review.** ward forwards what came before, tells the client with a NoticeResponse that
//!   the statement waits for approval, and holds this direction of the session until the
//!   request is decided. Approved statements then go through unchanged; refused or timed-out
//!   ones are denied as above. Results of earlier statements keep flowing meanwhile.
//! - **Pause.** While the identity is paused, each statement waits before being judged.

use crate::PgGateway;
use crate::classify::{self, Classified};
use crate::codec::{Framer, Scan, put_cstr, put_message};
use crate::messages;
use crate::session::{End, fill, write_batch};
use crate::stream::MaybeTls;
use crate::tracker::{Capture, Decided, Frontend, Note, Tracker};
use bytes::{Buf, BytesMut};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::UnboundedSender;
use ward_core::approvals::{ApprovalOutcome, ApprovalRequest};
use ward_core::event::{AuditEvent, CommandEvent, SessionId, StatementOrigin};
use ward_core::identity::Identity;
use ward_core::policy::{Decision, Subject, Verdict};

/// Who is speaking and where: what the policy needs besides the statement.
pub(crate) struct SessionContext<'a> {
    pub gateway: &'a PgGateway,
    pub identity: &'a Identity,
    pub target: &'a ward_core::config::PostgresTarget,
    pub session_id: &'a SessionId,
    /// Results wait here for the commit of the reads they answer (strict audit).
    pub barrier: &'a ward_core::ReleaseBarrier,
    /// `identity.on_expiry: refuse` with a credential that expires: statements after the
    /// expiry are refused.
    pub expiry: Option<&'a ExpiryRefusal>,
}

/// When a session's credential expires, for `identity.on_expiry: refuse`, and how many
/// statements were refused since.
pub(crate) struct ExpiryRefusal {
    pub at: chrono::DateTime<chrono::Utc>,
    at_micros: i64,
    refused: std::sync::atomic::AtomicU64,
}

impl ExpiryRefusal {
    pub fn new(at: chrono::DateTime<chrono::Utc>) -> Self {
        ExpiryRefusal {
            at,
            at_micros: at.timestamp_micros(),
            refused: Default::default(),
        }
    }

    /// Statements refused because of the expiry so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn passed(&self) -> bool {
        ward_core::time::now_micros() >= self.at_micros
    }
}

impl SessionContext<'_> {
    /// `text` as the audit and approvers may see it: masked with the session's detectors
    /// when masking rules apply (a held `UPDATE … SET email = 'jane@…'` must not show the
    /// value in approval listings, webhooks or the store).
    fn masked_for_audit(&self, text: &str) -> String {
        if !self.gateway.masking_configured() {
            return text.to_string();
        }
        let Some(session) = self
            .gateway
            .masking()
            .for_session(&crate::mask::subject(self.identity, self.target))
        else {
            return text.to_string();
        };
        match session.everywhere().mask(text.as_bytes()) {
            ward_mask::MaskResult::Unchanged(_) => text.to_string(),
            ward_mask::MaskResult::Masked(v) => String::from_utf8_lossy(&v).into_owned(),
            ward_mask::MaskResult::Null => "(masked by ward)".to_string(),
        }
    }

    /// How much of a statement's result its event keeps: the caps of the rules it matched,
    /// else `audit.capture`.
    fn capture(&self, verdict: &Verdict) -> Capture {
        let global = self.gateway.capture;
        Capture::new(
            verdict.capture.rows.unwrap_or(global.rows),
            verdict.capture.bytes.unwrap_or(global.bytes),
        )
    }

    fn judge(&self, classified: &Classified) -> Verdict {
        let policy = self.gateway.policy();
        let subject = Subject {
            identity: &self.identity.name,
            groups: &self.identity.groups,
            target: &self.target.name,
            target_labels: &self.target.labels,
            protocol: "postgres",
        };
        policy.decide(&subject, classified.as_deref())
    }
}

impl SessionContext<'_> {
    /// The event that records a command before it is forwarded (strict audit).
    fn command_event(
        &self,
        origin: StatementOrigin,
        text: &str,
        params: Option<String>,
        note: &Note,
    ) -> AuditEvent {
        AuditEvent::Command(CommandEvent {
            session_id: self.session_id.clone(),
            origin,
            text: Arc::from(self.masked_for_audit(text)),
            params: params.map(|p| self.masked_for_audit(&p)),
            decision: note.as_ref().map(|d| d.decision.to_string()),
            rule: note.as_ref().and_then(|d| d.rule.clone()),
            at: ward_core::time::now_micros(),
        })
    }
}

/// Commands seen in the client's bytes and not yet recorded (strict audit).
#[derive(Default)]
struct Unrecorded {
    events: Vec<AuditEvent>,
    /// Whether any of them may change anything on the target.
    may_write: bool,
}

impl Unrecorded {
    fn push(&mut self, event: AuditEvent, may_write: bool) {
        self.events.push(event);
        self.may_write |= may_write;
    }
}

/// Records `commands` so that none of them can take effect unrecorded. When one may change
/// anything, this waits until the last (and so every one) is durable: nothing of them may
/// reach the target before. Plain reads only need their results held back: their commit is
/// handed to the session's release barrier and overlaps the round trip to the target.
async fn make_durable(commands: &mut Unrecorded, ctx: &SessionContext<'_>) -> Result<(), End> {
    let may_write = std::mem::take(&mut commands.may_write);
    let Some(last) = commands.events.pop() else {
        return Ok(());
    };
    for command in commands.events.drain(..) {
        ctx.gateway
            .audit
            .record(command)
            .await
            .map_err(|_| End::AuditUnavailable)?;
    }
    let audit = &ctx.gateway.audit;
    let timeout = ctx.gateway.durable_timeout;
    let recorded = if may_write || !ctx.gateway.overlap_reads {
        audit.record_durable(last, timeout).await
    } else {
        audit
            .record_acked(last, timeout)
            .await
            .map(|pending| ctx.barrier.hold(pending))
    };
    recorded.map_err(|e| {
        tracing::error!(session = %ctx.session_id, error = %e, "a command could not be recorded; it was not forwarded and the session is ended");
        End::NotRecorded(e.to_string())
    })
}

/// Forwards client bytes once the commands among them are recorded (see [`make_durable`]).
async fn forward_recorded(
    target: &mut WriteHalf<MaybeTls>,
    bytes: &[u8],
    commands: &mut Unrecorded,
    ctx: &SessionContext<'_>,
) -> Result<(), End> {
    if bytes.is_empty() {
        return Ok(());
    }
    make_durable(commands, ctx).await?;
    forward(target, bytes).await
}

/// Most client bytes buffered while a statement is held; past this ward stops reading and
/// the client's own sends block, as they would against a busy server.
const MAX_HELD_INPUT: usize = 1 << 20;

/// A statement ward refused, waiting for the Sync that ends its extended batch.
struct Refusal {
    text: String,
    rule: String,
    message: String,
    decision: &'static str,
    /// The SQLSTATE the client gets: `42501` for policy, `28000` for an expired credential.
    code: &'static str,
    /// Whether `message` is the whole client message (else it is framed as a rule's).
    verbatim: bool,
}

impl Refusal {
    fn policy(text: &str, rule: String, message: String, decision: &'static str) -> Self {
        Refusal {
            text: text.to_string(),
            rule,
            message,
            decision,
            code: "42501",
            verbatim: false,
        }
    }
}

/// One message found in a chunk: its tag and byte range (`streamed`: only its start is here).
struct FrameAt {
    tag: u8,
    start: usize,
    end: usize,
    streamed: bool,
}

/// Relays client messages to the target until either side ends, judging statements.
pub(crate) async fn client_to_target(
    client: &mut ReadHalf<MaybeTls>,
    target: &mut WriteHalf<MaybeTls>,
    tracker: &Mutex<Tracker>,
    ctx: &SessionContext<'_>,
    notices: &UnboundedSender<Vec<u8>>,
    max: u32,
) -> End {
    let mut buf = BytesMut::with_capacity(crate::session::INITIAL_BUFFER);
    let mut framer = Framer::new(max);
    let mut frames: Vec<FrameAt> = Vec::new();
    let mut refusal: Option<Refusal> = None;
    // Client bytes read while a statement was held for approval, not yet processed.
    let mut held_input = BytesMut::new();
    // Strict audit: commands seen in this chunk, recorded durably before it is forwarded.
    let strict = ctx.gateway.audit_strict;
    let mut commands = Unrecorded::default();
    loop {
        if held_input.is_empty() {
            match fill(client, &mut buf).await {
                Ok(0) => return End::ClientGone("connection closed without Terminate".into()),
                Ok(_) => {}
                Err(e) => return End::ClientGone(e.to_string()),
            }
        } else {
            buf.extend_from_slice(&held_input);
            held_input.clear();
        }
        frames.clear();
        let base = buf.as_ptr() as usize;
        let len = buf.len();
        let scanned = framer.scan::<()>(
            &buf,
            |tag| tag == b'd',
            |scan| {
                match scan {
                    Scan::Whole { tag, body } => {
                        let body_at = body.as_ptr() as usize - base;
                        frames.push(FrameAt {
                            tag,
                            start: body_at - crate::codec::HEADER_LEN,
                            end: body_at + body.len(),
                            streamed: false,
                        });
                    }
                    Scan::Streamed { tag } => {
                        let start = frames.last().map_or(0, |f| f.end);
                        frames.push(FrameAt {
                            tag,
                            start,
                            end: len,
                            streamed: true,
                        });
                    }
                }
                Ok(())
            },
        );
        let ready = match scanned {
            Ok(Ok(n)) => n,
            Ok(Err(frame)) => return End::ClientProtocol(frame.to_string()),
            Err(()) => unreachable!("the scan callback never fails"),
        };
        // Bytes of a message streamed from the previous chunk come first; they belong to a
        // discarded batch when a refusal is pending.
        let mut out_from = if refusal.is_some() {
            frames.first().map_or(ready, |f| f.start)
        } else {
            0
        };
        let mut terminate = false;
        for frame in &frames {
            if let Some(refused) = &refusal {
                if frame.tag == b'S' && !frame.streamed {
                    if let Err(end) = send_refusal(target, tracker, ctx, refused).await {
                        return end;
                    }
                    refusal = None;
                }
                out_from = frame.end;
                continue;
            }
            if frame.streamed {
                continue;
            }
            let body = &buf[frame.start + crate::codec::HEADER_LEN..frame.end];
            // A paused identity's next statement waits here, unjudged: a Query, a Parse, a
            // FunctionCall, or the Bind/Execute of a statement prepared before the pause.
            if matches!(frame.tag, b'Q' | b'P' | b'F' | b'B' | b'E')
                && ctx.gateway.controls.is_paused(&ctx.identity.name)
            {
                if let Err(end) =
                    forward_recorded(target, &buf[out_from..frame.start], &mut commands, ctx).await
                {
                    return end;
                }
                out_from = frame.start;
                ctx.gateway
                    .controls
                    .wait_until_resumed(&ctx.identity.name)
                    .await;
            }
            // `identity.on_expiry: refuse`: once the credential has expired, no statement
            // reaches the target; the client is told why with SQLSTATE 28000.
            // A ROLLBACK still goes through, so a transaction open at the expiry can be ended
            // (the refusal aborts it, and an aborted transaction answers nothing else).
            if matches!(frame.tag, b'Q' | b'P' | b'F' | b'B' | b'E')
                && let Some(expiry) = ctx.expiry
                && expiry.passed()
                && !(frame.tag == b'Q'
                    && messages::parse_query(body)
                        .and_then(|q| std::str::from_utf8(q).ok())
                        .is_some_and(is_rollback))
            {
                if let Err(end) =
                    forward_recorded(target, &buf[out_from..frame.start], &mut commands, ctx).await
                {
                    return end;
                }
                out_from = frame.end;
                expiry
                    .refused
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let text = match frame.tag {
                    b'B' | b'E' => "<bind or execute of a prepared statement>".to_string(),
                    tag => statement_of(tag, body).0,
                };
                let refused = Refusal {
                    text,
                    rule: "identity.on_expiry".into(),
                    message: ward_core::expiry::expired_message("token", ctx.session_id, expiry.at),
                    decision: "token_expired",
                    code: crate::messages::sqlstate::INVALID_AUTHORIZATION,
                    verbatim: true,
                };
                if matches!(frame.tag, b'Q' | b'F') {
                    if let Err(end) = send_refusal(target, tracker, ctx, &refused).await {
                        return end;
                    }
                } else {
                    // Extended protocol: drop everything up to the Sync, then refuse.
                    refusal = Some(refused);
                }
                continue;
            }
            if matches!(frame.tag, b'Q' | b'P' | b'F') {
                let (text, classified) = statement_of(frame.tag, body);
                let verdict = ctx.judge(&classified);
                let may_write = frame.tag == b'F' || classify::may_change_data(&classified);
                let capture = ctx.capture(&verdict);
                // An allowed statement names the rules that matched it (`allow` and `log`
                // rules); denials and reviews replace this note below.
                let mut note: Note = (!verdict.matched.is_empty()).then(|| {
                    Arc::new(Decided {
                        decision: "allowed",
                        rule: Some(verdict.matched.join(", ")),
                    })
                });
                let mut denied: Option<Refusal> = None;
                match verdict.decision {
                    Decision::Allow => {}
                    Decision::Deny { rule, message } => {
                        denied = Some(Refusal::policy(&text, rule, message, "denied"));
                    }
                    Decision::Review(review) => {
                        if let Err(end) = forward_recorded(
                            target,
                            &buf[out_from..frame.start],
                            &mut commands,
                            ctx,
                        )
                        .await
                        {
                            return end;
                        }
                        out_from = frame.start;
                        let request = ApprovalRequest {
                            session_id: ctx.session_id.to_string(),
                            identity: ctx.identity.name.to_string(),
                            target: ctx.target.name.clone(),
                            protocol: "postgres".into(),
                            command: ctx.masked_for_audit(&text),
                            rule: review.rule.clone(),
                            approvers: review.approvers.clone(),
                            approvals_required: review.approvals,
                            timeout: review.timeout,
                            on_timeout: review.on_timeout,
                        };
                        let (id, outcome) = ctx.gateway.approvals.submit(request);
                        let mut notice = Vec::new();
                        messages::notice_response(
                            &mut notice,
                            &format!(
                                "waiting for approval: request {id} — approve with: ward approve {id}"
                            ),
                        );
                        let _ = notices.send(notice);
                        // Keep reading the client while the statement is held, so that a
                        // client that goes away withdraws its request at once; whatever it
                        // sends meanwhile is kept, in order, for after the decision.
                        tokio::pin!(outcome);
                        let decided = loop {
                            tokio::select! {
                                decided = &mut outcome => break decided,
                                read = client.read_buf(&mut held_input), if held_input.len() < MAX_HELD_INPUT => {
                                    match read {
                                        Ok(0) => return End::ClientGone("disconnected while a statement awaited approval".into()),
                                        Ok(_) => {}
                                        Err(e) => return End::ClientGone(e.to_string()),
                                    }
                                }
                            }
                        };
                        match decided {
                            ApprovalOutcome::Approved { by } => {
                                note = Some(Arc::new(Decided {
                                    decision: "approved",
                                    rule: Some(format!(
                                        "{} (approved by {})",
                                        review.rule,
                                        by.join(", ")
                                    )),
                                }));
                            }
                            ApprovalOutcome::TimedOut { allowed: true } => {
                                note = Some(Arc::new(Decided {
                                    decision: "approved",
                                    rule: Some(format!("{} (allowed on timeout)", review.rule)),
                                }));
                            }
                            ApprovalOutcome::TimedOut { allowed: false } => {
                                denied = Some(Refusal::policy(
                                    &text,
                                    review.rule.clone(),
                                    format!("approval request {id} timed out"),
                                    "review_timed_out",
                                ));
                            }
                            ApprovalOutcome::Denied { by, reason } => {
                                denied = Some(Refusal::policy(
                                    &text,
                                    review.rule.clone(),
                                    format!("approval request {id} was denied by {by}: {reason}"),
                                    "review_denied",
                                ));
                            }
                        }
                    }
                }
                if let Some(refused) = denied {
                    if let Err(end) =
                        forward_recorded(target, &buf[out_from..frame.start], &mut commands, ctx)
                            .await
                    {
                        return end;
                    }
                    out_from = frame.end;
                    if frame.tag == b'P' {
                        // Extended protocol: drop everything up to the Sync, then refuse.
                        refusal = Some(refused);
                    } else if let Err(end) = send_refusal(target, tracker, ctx, &refused).await {
                        return end;
                    }
                    continue;
                }
                let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                if strict && frame.tag != b'P' {
                    let origin = if frame.tag == b'Q' {
                        StatementOrigin::Simple
                    } else {
                        StatementOrigin::FunctionCall
                    };
                    let capped = t.capped(&text);
                    commands.push(ctx.command_event(origin, &capped, None, &note), may_write);
                }
                if frame.tag == b'P' {
                    t.set_may_write(may_write);
                }
                t.set_note(note);
                t.set_capture(capture);
                if ctx.gateway.masking_configured() {
                    t.set_output_columns(output_columns(&classified));
                }
                if let Frontend::Invalid(why) = t.frontend(frame.tag, body) {
                    return End::ClientProtocol(why);
                }
                continue;
            }
            let (noted, executed) = {
                let mut t = tracker.lock().unwrap_or_else(|p| p.into_inner());
                let noted = t.frontend(frame.tag, body);
                let executed = (strict && frame.tag == b'E' && noted == Frontend::Forward)
                    .then(|| t.last_execute())
                    .flatten();
                (noted, executed)
            };
            if let Some((text, params, note, may_write)) = executed {
                commands.push(
                    ctx.command_event(StatementOrigin::Execute, &text, params, &note),
                    may_write,
                );
            }
            match noted {
                Frontend::Forward => {}
                Frontend::Terminate => terminate = true,
                Frontend::Invalid(why) => return End::ClientProtocol(why),
            }
        }
        if out_from < ready
            && let Err(end) =
                forward_recorded(target, &buf[out_from..ready], &mut commands, ctx).await
        {
            return end;
        }
        buf.advance(ready);
        if terminate {
            return End::ClientTerminated;
        }
    }
}

/// Whether `sql` is only a `ROLLBACK` (or `ABORT`), which ends a transaction without
/// changing anything.
fn is_rollback(sql: &str) -> bool {
    let words: Vec<String> = sql
        .split(|c: char| c.is_whitespace() || c == ';')
        .filter(|w| !w.is_empty())
        .map(str::to_ascii_lowercase)
        .collect();
    matches!(
        words.iter().map(String::as_str).collect::<Vec<_>>()[..],
        ["rollback" | "abort"] | ["rollback" | "abort", "work" | "transaction"]
    )
}

/// Output column references of every statement in a message (masking protects computed
/// values derived from masked columns); `None` when there are none.
fn output_columns(classified: &Classified) -> crate::tracker::Refs {
    let commands = classified.as_deref()?;
    if let [one] = commands {
        if one.output_columns.is_empty() {
            return None;
        }
        return Some(Arc::new(crate::tracker::OutputRefs {
            all: one.output_columns.clone(),
            select_list: one.select_list.clone(),
            nested: one.nested_columns.clone(),
        }));
    }
    // Several statements in one message: their results cannot be told apart here.
    let mut all: Vec<String> = Vec::new();
    for c in commands {
        for n in &c.output_columns {
            if !all.contains(n) {
                all.push(n.clone());
            }
        }
    }
    (!all.is_empty()).then(|| {
        Arc::new(crate::tracker::OutputRefs {
            nested: all.clone(),
            all,
            select_list: None,
        })
    })
}

/// The SQL text of a statement-bearing message and its classification.
fn statement_of(tag: u8, body: &[u8]) -> (String, Classified) {
    let raw = match tag {
        b'Q' => messages::parse_query(body),
        b'P' => messages::parse_parse(body).map(|p| p.query),
        _ => {
            let oid = messages::parse_function_call(body).unwrap_or_default();
            return (
                format!("<function call oid={oid}>"),
                Some(Arc::from(vec![classify::function_call()])),
            );
        }
    };
    match raw.map(std::str::from_utf8) {
        Some(Ok(sql)) => (sql.to_string(), classify::classify(sql)),
        // Not UTF-8 or malformed: the parser cannot judge it.
        Some(Err(_)) | None => (
            String::from_utf8_lossy(raw.unwrap_or_default()).into_owned(),
            None,
        ),
    }
}

async fn forward(target: &mut WriteHalf<MaybeTls>, bytes: &[u8]) -> Result<(), End> {
    if bytes.is_empty() {
        return Ok(());
    }
    write_batch(target, bytes)
        .await
        .map_err(|e| End::TargetGone(e.to_string()))
}

/// Sends the target the statement that fails with ward's message, and notes it so the
/// audit records the client's original text with the denial.
async fn send_refusal(
    target: &mut WriteHalf<MaybeTls>,
    tracker: &Mutex<Tracker>,
    ctx: &SessionContext<'_>,
    refused: &Refusal,
) -> Result<(), End> {
    tracing::info!(
        session = %ctx.session_id,
        identity = %ctx.identity.name,
        rule = %refused.rule,
        decision = refused.decision,
        "statement refused"
    );
    let message = if refused.verbatim {
        refused.message.clone()
    } else {
        format!(
            "blocked by ward rule \"{}\": {} (session {})",
            refused.rule, refused.message, ctx.session_id
        )
    };
    let query = refusal_query_with_code(&message, refused.code);
    tracker
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .note_replacement(
            &refused.text,
            Some(Arc::new(Decided {
                decision: refused.decision,
                rule: Some(refused.rule.clone()),
            })),
        );
    forward(target, &query).await
}

/// A Query message whose statement fails with SQLSTATE 42501 and `message`.
pub fn refusal_query(message: &str) -> Vec<u8> {
    refusal_query_with_code(message, "42501")
}

/// A Query message whose statement fails with SQLSTATE `code` (five characters of
/// `[0-9A-Z]`; anything else becomes 42501) and `message`.
pub fn refusal_query_with_code(message: &str, code: &str) -> Vec<u8> {
    let code = if code.len() == 5
        && code
            .bytes()
            .all(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
    {
        code
    } else {
        "42501"
    };
    // The message sits in a string literal inside a dollar-quoted body: double the quotes,
    // keep the dollar tag out of it, and drop backslashes and NULs, which a server with
    // standard_conforming_strings off would interpret.
    let literal: String = message
        .replace('\'', "''")
        .replace("$ward$", "$ ward $")
        .chars()
        .filter(|c| *c != '\\' && *c != '\0')
        .collect();
    let sql = format!(
        "DO $ward$BEGIN RAISE EXCEPTION USING ERRCODE = '{code}', MESSAGE = '{literal}'; END$ward$"
    );
    let mut out = Vec::with_capacity(sql.len() + 6);
    put_message(&mut out, b'Q', |b| put_cstr(b, &sql));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_plain_rollback_counts_as_one() {
        for sql in [
            "rollback",
            " ROLLBACK ; ",
            "abort",
            "Rollback Work;",
            "abort transaction",
        ] {
            assert!(is_rollback(sql), "{sql}");
        }
        for sql in [
            "commit",
            "rollback; delete from t",
            "rollback to savepoint a",
            "select 'rollback'",
            "",
        ] {
            assert!(!is_rollback(sql), "{sql}");
        }
    }

    #[test]
    fn refusal_queries_carry_their_code() {
        let q = refusal_query_with_code("expired", "28000");
        let text = std::str::from_utf8(&q[5..q.len() - 1]).unwrap();
        assert!(text.contains("ERRCODE = '28000'"), "{text}");
        let q = refusal_query_with_code("x", "28000'; drop table t; --");
        let text = std::str::from_utf8(&q[5..q.len() - 1]).unwrap();
        assert!(text.contains("ERRCODE = '42501'"), "{text}");
    }

    #[test]
    fn refusal_query_survives_hostile_messages() {
        let q = refusal_query("it's $ward$ a \\ trap\0");
        let text = std::str::from_utf8(&q[5..q.len() - 1]).unwrap();
        assert!(text.contains("it''s $ ward $ a  trap"), "{text}");
        assert_eq!(text.matches("$ward$").count(), 2);
        assert!(pg_query::parse(text).is_ok());
    }
}
