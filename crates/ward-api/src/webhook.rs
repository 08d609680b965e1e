//! The approval webhook: announces each new approval request to a URL (a chat channel, an
//! incident tool) so approvers learn about it without watching `ward approvals list`.
//!
//! Delivery never touches the data path: [`WebhookNotifier::requested`] only builds the body
//! and hands it to the blocking thread pool of the runtime that built the notifier (the main
//! runtime in `ward serve`, not the PostgreSQL threads). Each delivery makes up to
//! [`ATTEMPTS`] attempts with a growing pause between them; failures are logged and
//! otherwise ignored, because the request itself is already held and audited, and the
//! approvers can still find it through the API and CLI.
//!
//! The client is ureq (blocking, already used by the CLI) with rustls and the ring provider;
//! webhook URLs often carry their credential in the path (Slack's do), so only the URL's
//! origin is ever logged and redirects are not followed.

use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use ward_core::approvals::{
    ApprovalInfo, ApprovalNotifier, WebhookConfig, WebhookFormat, url_origin,
};
use ward_core::secret::Secret;
use ward_core::time::format_micros;

/// Delivery attempts per request.
pub const ATTEMPTS: u32 = 3;
/// Pause after the first failed attempt; doubled after each further failure.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
/// Deliveries waiting or running at once. Beyond this, new announcements are dropped (and
/// logged): a dead endpoint must not pile up blocking threads during a burst of requests.
const MAX_IN_FLIGHT: usize = 32;
/// Most characters of the command put into a Slack message; chat clients truncate or refuse
/// huge messages, and approvers can read the full text with `ward approvals list`.
const SLACK_COMMAND_CHARS: usize = 2500;

/// Why the webhook cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("approvals.webhook.url: {0}")]
    Url(String),
    #[error("the approval webhook must be created inside the tokio runtime")]
    NoRuntime,
}

/// Posts each new approval request to the configured URL, in the background.
pub struct WebhookNotifier {
    url: Arc<Secret>,
    /// `https://host`, the only part of the URL that is logged.
    origin: Arc<str>,
    format: WebhookFormat,
    agent: ureq::Agent,
    runtime: tokio::runtime::Handle,
    in_flight: Arc<AtomicUsize>,
    backoff: Duration,
}

impl std::fmt::Debug for WebhookNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookNotifier")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .finish()
    }
}

impl WebhookNotifier {
    /// Resolves the URL (reading `env:`/`file:` now, so a missing secret stops `ward serve`
    /// at start) and remembers the current runtime for deliveries.
    pub fn new(config: &WebhookConfig) -> Result<WebhookNotifier, WebhookError> {
        let url = config.url.resolve().map_err(WebhookError::Url)?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| WebhookError::NoRuntime)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(config.timeout)
            // A redirect could carry the body (and the URL's secret) elsewhere.
            .redirects(0)
            .user_agent(concat!("ward/", env!("CARGO_PKG_VERSION")))
            .build();
        Ok(WebhookNotifier {
            origin: url_origin(url.expose()).into(),
            url: Arc::new(url),
            format: config.format,
            agent,
            runtime,
            in_flight: Arc::new(AtomicUsize::new(0)),
            backoff: FIRST_BACKOFF,
        })
    }

    /// Shortens the pause between attempts (tests).
    pub fn with_backoff(mut self, backoff: Duration) -> WebhookNotifier {
        self.backoff = backoff;
        self
    }
}

impl ApprovalNotifier for WebhookNotifier {
    fn requested(&self, request: &ApprovalInfo) {
        let body = payload(self.format, request).to_string();
        if self.in_flight.fetch_add(1, Ordering::AcqRel) >= MAX_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            tracing::warn!(
                request = %request.id,
                webhook = %self.origin,
                "approval webhook: too many deliveries pending; this request is not announced"
            );
            return;
        }
        let delivery = Delivery {
            agent: self.agent.clone(),
            url: self.url.clone(),
            origin: self.origin.clone(),
            request_id: request.id.clone(),
            backoff: self.backoff,
        };
        let in_flight = self.in_flight.clone();
        self.runtime.spawn_blocking(move || {
            delivery.run(&body);
            in_flight.fetch_sub(1, Ordering::AcqRel);
        });
    }
}

struct Delivery {
    agent: ureq::Agent,
    url: Arc<Secret>,
    origin: Arc<str>,
    request_id: String,
    backoff: Duration,
}

impl Delivery {
    fn run(&self, body: &str) {
        let mut pause = self.backoff;
        for attempt in 1..=ATTEMPTS {
            let result = self
                .agent
                .post(self.url.expose())
                .set("Content-Type", "application/json")
                .send_string(body);
            let problem = match result {
                Ok(_) => {
                    tracing::debug!(request = %self.request_id, webhook = %self.origin, attempt, "approval webhook delivered");
                    return;
                }
                Err(ureq::Error::Status(code, _)) => format!("HTTP {code}"),
                // Never the error's Display: it contains the URL.
                Err(ureq::Error::Transport(t)) => match t.message() {
                    Some(m) => format!("{}: {m}", t.kind()),
                    None => t.kind().to_string(),
                },
            };
            if attempt == ATTEMPTS {
                tracing::error!(
                    request = %self.request_id,
                    webhook = %self.origin,
                    attempts = attempt,
                    problem = %problem,
                    "approval webhook failed; approvers must find the request with `ward approvals list`"
                );
                return;
            }
            tracing::warn!(
                request = %self.request_id,
                webhook = %self.origin,
                attempt,
                problem = %problem,
                retry_in_ms = pause.as_millis() as u64,
                "approval webhook attempt failed; retrying"
            );
            std::thread::sleep(pause);
            pause = pause.saturating_mul(2);
        }
    }
}

/// The body posted for `request`.
///
/// `json`: `{"type": "approval_requested", "request_id", "session_id", "identity", "target",
/// "protocol", "command", "rule", "approvers", "approvals_required", "requested_at",
/// "expires_at", "expires_at_us", "approve_command", "deny_command"}` (times RFC 3339 UTC).
/// `slack`: `{"text": "…"}` with the same facts in Slack's markup.
pub fn payload(format: WebhookFormat, request: &ApprovalInfo) -> serde_json::Value {
    let approve = format!("ward approve {}", request.id);
    let deny = format!("ward deny {} --reason \"…\"", request.id);
    match format {
        WebhookFormat::Json => json!({
            "type": "approval_requested",
            "request_id": request.id,
            "session_id": request.session_id,
            "identity": request.identity,
            "target": request.target,
            "protocol": request.protocol,
            "command": request.command,
            "rule": request.rule,
            "approvers": request.approvers,
            "approvals_required": request.approvals_required,
            "requested_at": format_micros(request.requested_at),
            "expires_at": format_micros(request.expires_at),
            "expires_at_us": request.expires_at,
            "approve_command": approve,
            "deny_command": deny,
        }),
        WebhookFormat::Slack => {
            let who = if request.approvers.is_empty() {
                "the admin".to_string()
            } else {
                request.approvers.join(", ")
            };
            let text = format!(
                "*ward: approval needed* for request `{id}`\n\
                 *{identity}* wants to run this on *{target}* (rule `{rule}`; {n} approval(s) \
                 from {who}):\n```{command}```\n\
                 Approve: `{approve}`   Deny: `{deny}`\n\
                 Expires {expires} (then: {on_timeout}).",
                id = slack_escape(&request.id),
                identity = slack_escape(&request.identity),
                target = slack_escape(&request.target),
                rule = slack_escape(&request.rule),
                n = request.approvals_required,
                who = slack_escape(&who),
                command = slack_code(&request.command),
                approve = slack_escape(&approve),
                deny = slack_escape(&deny),
                expires = format_micros(request.expires_at),
                on_timeout = match request.on_timeout {
                    ward_core::approvals::OnTimeout::Deny => "deny",
                    ward_core::approvals::OnTimeout::Allow => "allow",
                },
            );
            json!({ "text": text })
        }
    }
}

/// Slack's three control characters; everything else is shown as written.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Text for inside a ``` block: escaped, capped, and with any ``` broken by zero-width
/// spaces so the command cannot end the block early and format the rest of the message.
fn slack_code(command: &str) -> String {
    let mut shown: String = command.chars().take(SLACK_COMMAND_CHARS).collect();
    let cut = command.chars().count().saturating_sub(SLACK_COMMAND_CHARS);
    if cut > 0 {
        shown.push_str(&format!(
            "\n… ({cut} more characters; see `ward approvals list`)"
        ));
    }
    slack_escape(&shown).replace("```", "`\u{200B}`\u{200B}`")
}

#[cfg(test)]
mod tests;
