//! Port and agent forwarding: what the policy says about a forward, the relay, its record.
//!
//! Forwards are off unless a rule naming their kind allows them (`port_forward_local`,
//! `port_forward_remote`, `agent_forward`; see `ward_core::policy::FORWARD_KINDS`).
//!
//! - **`ssh -L`** (direct-tcpip): the client asks ward to connect somewhere from the
//!   target. Judged on `host:port`, then relayed to a direct-tcpip channel ward opens on
//!   the target.
//! - **`ssh -R`** (tcpip-forward): the client asks ward to have the target listen. Judged
//!   on the listen address `host:port`; allowed, ward asks the target to listen and
//!   remembers the port ([`Grants`]). Each connection the target then sends back
//!   (forwarded-tcpip) is judged again (rules may have changed) and relayed to a channel
//!   ward opens on the client. A forwarded connection for a port ward never asked for is
//!   refused: the target cannot open channels on the client on its own.
//! - **`ssh -A`** (auth-agent-req): judged once per request; allowed, ward asks the target
//!   for agent forwarding on the matching channel. Each agent connection the target then
//!   opens (a program on the target using `SSH_AUTH_SOCK`) is relayed to an agent channel
//!   ward opens on the client, and recorded: the forwarded agent can sign with the user's
//!   keys, so every use of it is evidence.
//!
//! Records. A request (`-R` listen, `-A`) and each forwarded connection are `statement`
//! events with origin `forward`: the text says which way and where (`forward local
//! 127.0.0.1:5432`, `forward remote listen 127.0.0.1:8022`, `forward remote 127.0.0.1:8022
//! from 127.0.0.1:40112`, `forward agent request`, `forward agent`); a connection's
//! `params` carries the bytes relayed each way (`bytes_to_target` is what came from the
//! client) and `duration_us` how long it lasted; a refused one has `decision: denied`. In
//! strict audit mode a connection's `command` event is durable before its first byte is
//! relayed (as for exec), so a forward that moved data is never missing from the log.
//!
//! The relay copies both channels as byte streams (`russh::ChannelStream`), which writes
//! only within the window the other side granted and passes EOF on as a shutdown, so
//! neither side is flooded and half-closed connections behave like TCP.

use crate::session::SessionCtx;
use russh::{Channel, ChannelOpenFailure, client, server};
use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use ward_core::AuditEvent;
use ward_core::event::{CommandEvent, StatementEvent, StatementOrigin};
use ward_core::policy::{CommandInfo, Decision};

/// Policy kinds of the three forwards.
pub const LOCAL: &str = "port_forward_local";
pub const REMOTE: &str = "port_forward_remote";
pub const AGENT: &str = "agent_forward";

/// A refused forward: the rule and the message.
pub struct Refusal {
    pub rule: String,
    pub message: String,
}

impl Refusal {
    /// The reason the client is shown.
    pub fn client_message(&self) -> String {
        format!("ward: denied by rule \"{}\": {}", self.rule, self.message)
    }
}

/// Asks the policy about a forward of `kind`; `destination` (`host:port`) is matched by
/// `commands:` patterns (agent forwards have none). `Ok` carries the allowing rule.
pub fn judge(
    ctx: &SessionCtx,
    kind: &'static str,
    destination: Option<&str>,
) -> Result<Option<String>, Refusal> {
    let info = CommandInfo {
        kinds: vec![kind],
        command_line: destination.map(str::to_string),
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

/// What the client let come back from the target: the ports ward had the target listen
/// on (`ssh -R`), and whether agent forwarding was granted (`ssh -A`).
#[derive(Default)]
pub struct Grants {
    listens: Mutex<HashSet<u32>>,
    agent: AtomicBool,
}

impl Grants {
    pub fn add_listen(&self, port: u32) {
        self.listens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(port);
    }

    pub fn remove_listen(&self, port: u32) {
        self.listens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&port);
    }

    fn listens_on(&self, port: u32) -> bool {
        self.listens
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&port)
    }

    pub fn grant_agent(&self) {
        self.agent.store(true, Ordering::Release);
    }

    fn agent_granted(&self) -> bool {
        self.agent.load(Ordering::Acquire)
    }
}

/// What one forward did, for its event. `bytes` is `None` for a request (a listen, an
/// agent request), which moves no data itself.
pub struct Outcome {
    pub text: String,
    pub started_at: i64,
    pub bytes: Option<(u64, u64)>,
    pub decision: Option<String>,
    pub rule: Option<String>,
    pub error: Option<String>,
}

impl Outcome {
    /// A forward the policy refused.
    pub fn denied(text: String, started_at: i64, refusal: Refusal, bytes: bool) -> Outcome {
        Outcome {
            text,
            started_at,
            bytes: bytes.then_some((0, 0)),
            decision: Some("denied".into()),
            rule: Some(refusal.rule),
            error: Some(refusal.message),
        }
    }

    /// A forward the policy allowed (`error` says what went wrong after, if anything).
    pub fn allowed(
        text: String,
        started_at: i64,
        rule: Option<String>,
        bytes: Option<(u64, u64)>,
        error: Option<String>,
    ) -> Outcome {
        Outcome {
            text,
            started_at,
            bytes,
            decision: rule.as_ref().map(|_| "allowed".to_string()),
            rule,
            error,
        }
    }
}

/// Records a forward (a request, a finished connection, or a refused one).
pub async fn record(ctx: &SessionCtx, outcome: Outcome) {
    let now = ward_core::time::now_micros();
    let event = AuditEvent::Statement(StatementEvent {
        session_id: ctx.session_id.clone(),
        seq: ctx.next_seq(),
        origin: StatementOrigin::Forward,
        text: outcome.text.into(),
        params: outcome
            .bytes
            .map(|(up, down)| format!("bytes_to_target={up} bytes_to_client={down}")),
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

/// In strict audit mode, makes an allowed connection's `command` event durable before any
/// byte of it is relayed; `Err` says why it could not be (the forward is then refused).
pub async fn announce(ctx: &SessionCtx, text: &str, rule: &Option<String>) -> Result<(), String> {
    let gateway = &ctx.gateway;
    if !gateway.audit_strict {
        return Ok(());
    }
    let event = AuditEvent::Command(CommandEvent {
        session_id: ctx.session_id.clone(),
        origin: StatementOrigin::Forward,
        text: text.into(),
        params: None,
        decision: rule.as_ref().map(|_| "allowed".to_string()),
        rule: rule.clone(),
        at: ward_core::time::now_micros(),
    });
    gateway
        .audit
        .record_durable(event, gateway.durable_timeout)
        .await
        .map_err(|e| {
            tracing::error!(session = %ctx.session_id, forward = %text, error = %e, "an ssh forward could not be recorded; it was refused");
            format!("ward: the forward could not be recorded ({e}); it was refused")
        })
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
        let (bytes, error) = tokio::select! {
            r = tokio::io::copy_bidirectional(&mut a, &mut b) => match r {
                Ok((up, down)) => ((up, down), None),
                Err(e) => ((0, 0), Some(format!("relay ended: {e}"))),
            },
            () = stop.cancelled() => ((0, 0), Some("session ended".into())),
        };
        tracing::info!(session = %ctx.session_id, forward = %text, to_target = bytes.0, to_client = bytes.1, "ssh forward ended");
        record(
            &ctx,
            Outcome::allowed(text, started_at, rule, Some(bytes), error),
        )
        .await;
        drop(done);
    });
}

/// A channel the target opened towards the client, waiting to be judged and relayed.
pub enum Inbound {
    /// A connection to a port the target listens on for `ssh -R`.
    Tcpip {
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        connected: (String, u32),
        originator: (String, u32),
    },
    /// A program on the target using the forwarded agent.
    Agent {
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
    },
}

/// Handles the channels the target opens towards the client until the target's connection
/// or the session ends. Each is checked against the [`Grants`] and the rules, recorded,
/// opened on the client and relayed; the target's open waits for the client's answer, so
/// nothing flows before both ends are there. `done` gives a guard for each relay (`None`
/// once the connection is ending: the channel is then refused).
pub async fn serve_inbound(
    ctx: Arc<SessionCtx>,
    mut inbound: mpsc::UnboundedReceiver<Inbound>,
    client: server::Handle,
    done: impl Fn() -> Option<mpsc::Sender<()>>,
) {
    loop {
        let next = tokio::select! {
            next = inbound.recv() => next,
            () = ctx.stop.cancelled() => None,
        };
        let Some(next) = next else { break };
        let started_at = ward_core::time::now_micros();
        match next {
            Inbound::Tcpip {
                channel,
                reply,
                connected: (host, port),
                originator: (from_host, from_port),
            } => {
                let text = format!("forward remote {host}:{port} from {from_host}:{from_port}");
                if !ctx.forwards.listens_on(port) {
                    tracing::warn!(session = %ctx.session_id, forward = %text, "the target opened a forwarded connection ward never asked for; refused");
                    reply
                        .reject(ChannelOpenFailure::AdministrativelyProhibited)
                        .await;
                    let refusal = Refusal {
                        rule: "policy.forwarding".into(),
                        message: format!(
                            "the target sent a connection for port {port}, which no ssh -R of this session asked for"
                        ),
                    };
                    record(&ctx, Outcome::denied(text, started_at, refusal, true)).await;
                    continue;
                }
                let destination = format!("{host}:{port}");
                let rule = match judge(&ctx, REMOTE, Some(&destination)) {
                    Ok(rule) => rule,
                    Err(refusal) => {
                        reply
                            .reject(ChannelOpenFailure::AdministrativelyProhibited)
                            .await;
                        record(&ctx, Outcome::denied(text, started_at, refusal, true)).await;
                        continue;
                    }
                };
                let open = client.channel_open_forwarded_tcpip(host, port, from_host, from_port);
                connect_back(&ctx, channel, reply, open, text, rule, started_at, &done).await;
            }
            Inbound::Agent { channel, reply } => {
                let text = "forward agent".to_string();
                let allowed = if ctx.forwards.agent_granted() {
                    judge(&ctx, AGENT, None)
                } else {
                    Err(Refusal {
                        rule: "policy.forwarding".into(),
                        message: "the target opened an agent channel, but agent forwarding was not granted in this session".into(),
                    })
                };
                let rule = match allowed {
                    Ok(rule) => rule,
                    Err(refusal) => {
                        tracing::warn!(session = %ctx.session_id, rule = %refusal.rule, "an agent channel from the target was refused");
                        reply
                            .reject(ChannelOpenFailure::AdministrativelyProhibited)
                            .await;
                        record(&ctx, Outcome::denied(text, started_at, refusal, true)).await;
                        continue;
                    }
                };
                let open = client.channel_open_agent();
                connect_back(&ctx, channel, reply, open, text, rule, started_at, &done).await;
            }
        }
    }
}

/// Opens the client's end of a channel the target opened (after recording it in strict
/// mode), then accepts the target's and relays; refuses the target's when the client's
/// end cannot be had.
#[allow(clippy::too_many_arguments)]
async fn connect_back(
    ctx: &Arc<SessionCtx>,
    channel: Channel<client::Msg>,
    reply: client::ChannelOpenHandle,
    open: impl Future<Output = Result<Channel<server::Msg>, russh::Error>>,
    text: String,
    rule: Option<String>,
    started_at: i64,
    done: &impl Fn() -> Option<mpsc::Sender<()>>,
) {
    let failed = |error: String| {
        Outcome::allowed(
            text.clone(),
            started_at,
            rule.clone(),
            Some((0, 0)),
            Some(error),
        )
    };
    let Some(guard) = done() else {
        reply.reject(ChannelOpenFailure::ConnectFailed).await;
        return;
    };
    if let Err(e) = announce(ctx, &text, &rule).await {
        reply.reject(ChannelOpenFailure::ConnectFailed).await;
        record(ctx, failed(e)).await;
        return;
    }
    match open.await {
        Ok(client_side) => {
            reply.accept().await;
            relay(ctx.clone(), client_side, channel, text, rule, guard);
        }
        Err(e) => {
            reply.reject(ChannelOpenFailure::ConnectFailed).await;
            record(ctx, failed(format!("the client refused the channel: {e}"))).await;
        }
    }
}
