//! Approvals: statements held on the wire until a human approves or denies them.
//!
//! An adapter that gets a `review` decision submits an [`ApprovalRequest`] and awaits its
//! [`ApprovalOutcome`]; approvers act through the admin API / CLI; each new request is also
//! announced by webhook.

use std::time::Duration;

/// What happens when nobody decides in time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    #[default]
    Deny,
    Allow,
}

/// A statement waiting for approval.
#[derive(Clone, Debug)]
pub struct ApprovalRequest {
    pub session_id: String,
    pub identity: String,
    pub target: String,
    pub protocol: String,
    /// The command as the approver should see it (SQL text, shell command line, …).
    pub command: String,
    pub rule: String,
    /// Who may approve: identity names, or `group:NAME`.
    pub approvers: Vec<String>,
    /// How many distinct approvals are needed.
    pub approvals_required: u32,
    pub timeout: Duration,
    pub on_timeout: OnTimeout,
}

/// How a request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ApprovalOutcome {
    Approved { by: Vec<String> },
    Denied { by: String, reason: String },
    TimedOut { allowed: bool },
}

/// Pending approval requests.
#[derive(Debug, Default)]
pub struct Approvals {}

impl Approvals {
    pub fn new() -> Self {
        Approvals::default()
    }

    /// Registers `request` and returns its id (shown to the client) and a future that
    /// resolves when it is decided or times out.
    pub fn submit(
        &self,
        request: ApprovalRequest,
    ) -> (
        String,
        impl std::future::Future<Output = ApprovalOutcome> + Send + 'static,
    ) {
        let _ = request;
        ("unimplemented".to_string(), async {
            ApprovalOutcome::TimedOut { allowed: false }
        })
    }
}
