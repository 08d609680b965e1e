//! Port forwarding: what the policy says about a forward, the relay, and its record.
//!
//! Forwards are off unless a rule naming their kind allows them (`port_forward_local`,
//! `port_forward_remote`, `agent_forward`; see `ward_core::policy::FORWARD_KINDS`). Each
//! forwarded connection is one `statement` event with origin `forward`: the text says which
//! way and where (`forward local 127.0.0.1:5432`), `params` carries the bytes relayed each
//! way, `duration_us` how long the connection lasted; a refused one has `decision: denied`.
//!
//! The relay copies both channels as byte streams (`russh::ChannelStream`), which writes
//! only within the window the other side granted and passes EOF on as a shutdown, so
//! neither side is flooded and half-closed connections behave like TCP.

use crate::session::SessionCtx;
use russh::{Channel, client, server};
use std::sync::Arc;
use tokio::sync::mpsc;
use ward_core::AuditEvent;
use ward_core::event::{StatementEvent, StatementOrigin};
use ward_core::policy::{CommandInfo, Decision};

/// A refused forward: the rule and the message.
pub struct Refusal {
    pub rule: String,
    pub message: String,
}

/// Asks the policy about a forward of `kind` to `destination` (`host:port`, matched by
/// `commands:` patterns). `Ok` carries the allowing rule.
pub fn judge(
    ctx: &SessionCtx,
    kind: &'static str,
    destination: &str,
) -> Result<Option<String>, Refusal> {
    let info = CommandInfo {
        kinds: vec![kind],
        command_line: Some(destination.to_string()),
        ..CommandInfo::default()
    };
    let verdict = ctx.decide(info);
    let verdict_rule = verdict.matched.first().cloned();
    match verdict.decision {
        Decision::Allow => Ok(verdict_rule),
        Decision::Deny { rule, message } => Err(Refusal { rule, message }),
        // A forwarded connection cannot wait for a person: it is refused instead.
        Decision::Review(review) => Err(Refusal {
            rule: review.rule,
            message: "forwards cannot wait for approval; ask for a rule that allows them".into(),
        }),
    }
}

/// What one forwarded connection did, for its event.
pub struct Outcome {
    pub text: String,
    pub started_at: i64,
    pub to_target: u64,
    pub to_client: u64,
    pub decision: Option<String>,
    pub rule: Option<String>,
    pub error: Option<String>,
}

/// Records a forward (allowed and finished, or refused).
pub async fn record(ctx: &SessionCtx, outcome: Outcome) {
    let now = ward_core::time::now_micros();
    let event = AuditEvent::Statement(StatementEvent {
        session_id: ctx.session_id.clone(),
        seq: ctx.next_seq(),
        origin: StatementOrigin::Forward,
        text: outcome.text.into(),
        params: Some(format!(
            "bytes_to_target={} bytes_to_client={}",
            outcome.to_target, outcome.to_client
        )),
        started_at: outcome.started_at,
        duration_us: (now - outcome.started_at).max(0),
        rows: None,
        command: Some("FORWARD".into()),
        sqlstate: None,
        error: outcome.error,
        decision: outcome.decision,
        rule: outcome.rule,
        result_sample: None,
    });
    let _ = ctx.gateway.audit.record(event).await;
}

/// Relays a client channel and a target channel until both directions ended, then records
/// the forward. `done` keeps the connection's end waiting for the record.
pub fn relay(
    ctx: Arc<SessionCtx>,
    client_side: Channel<server::Msg>,
    target_side: Channel<client::Msg>,
    text: String,
    rule: Option<String>,
    done: mpsc::Sender<()>,
) {
    tokio::spawn(async move {
        let started_at = ward_core::time::now_micros();
        let mut a = client_side.into_stream();
        let mut b = target_side.into_stream();
        let stop = ctx.stop.clone();
        let (to_target, to_client, error) = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
                Ok((up, down)) => (up, down, None),
                Err(e) => (0, 0, Some(format!("relay ended: {e}"))),
            },
            () = stop.cancelled() => (0, 0, Some("session ended".into())),
        };
        tracing::info!(session = %ctx.session_id, forward = %text, to_target, to_client, "ssh forward ended");
        record(
            &ctx,
            Outcome {
                text,
                started_at,
                to_target,
                to_client,
                decision: rule.as_ref().map(|_| "allowed".to_string()),
                rule,
                error,
            },
        )
        .await;
        drop(done);
    });
}
