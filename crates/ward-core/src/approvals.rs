//! Approvals: statements held on the wire until a human approves or denies them.
//!
//! An adapter that gets a `review` decision submits an [`ApprovalRequest`] and awaits its
//! [`ApprovalOutcome`]; approvers act through the admin API / CLI; each new request is also
//! announced to an [`ApprovalNotifier`] (the webhook, which lives in `ward-api` because this
//! crate does no HTTP).
//!
//! How a request lives:
//! - [`Approvals::submit`] opens it (state `pending`), records a `requested` audit event,
//!   notifies, and returns its short id and a future. The adapter shows the id to the client
//!   (see [`waiting_notice`]) and awaits the future while holding the statement.
//! - [`Approvals::approve`] counts one approval per distinct approver; when
//!   `approvals_required` is reached the future resolves `Approved`. [`Approvals::deny`]
//!   resolves it `Denied` at once.
//! - The future itself enforces the timeout (so no background task is needed per request)
//!   and resolves `TimedOut`, allowing or denying per `on_timeout`.
//! - Dropping the future before it resolves (the client disconnected, the session was
//!   killed) withdraws the request: a late approval can never release a statement nobody
//!   is waiting for.
//!
//! Every step is an [`AuditEvent::Approval`] naming who acted. Events are queued without
//! waiting ([`AuditSink::try_record`], else a spawned `record`), because `submit`, `approve`
//! and `deny` are synchronous and must never stall the data path or an API handler behind a
//! full audit queue.
//!
//! Who may decide: a request whose rule lists `approvers` (identity names and `group:NAME`)
//! may be approved only by an identity on that list, authenticated with its own ward token;
//! a request whose rule lists none may be approved by the admin (admin token) only. Nobody
//! approves their own request. Deny is open to whoever may approve, and to the requester
//! (cancelling one's own statement only makes things safer).

use crate::audit::AuditSink;
use crate::event::{ApprovalEvent, ApprovalEventState, AuditEvent, SessionId};
use crate::secret::{Secret, SecretRef};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;
use tokio::sync::oneshot;

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

impl ApprovalOutcome {
    /// Whether the held statement may now run.
    pub fn allows_statement(&self) -> bool {
        match self {
            ApprovalOutcome::Approved { .. } => true,
            ApprovalOutcome::Denied { .. } => false,
            ApprovalOutcome::TimedOut { allowed } => *allowed,
        }
    }

    /// The sentence for the client's ErrorResponse when the statement may not run (`None`
    /// when it may). Kept here so every adapter words it the same.
    pub fn refusal_message(&self, request_id: &str) -> Option<String> {
        match self {
            ApprovalOutcome::Approved { .. } | ApprovalOutcome::TimedOut { allowed: true } => None,
            ApprovalOutcome::Denied { by, reason } => Some(format!(
                "ward: approval request {request_id} was denied by {by}: {reason}"
            )),
            ApprovalOutcome::TimedOut { allowed: false } => Some(format!(
                "ward: approval request {request_id} timed out without a decision; the \
                 statement was not run"
            )),
        }
    }
}

/// The NoticeResponse text a client sees while its statement is held.
pub fn waiting_notice(request_id: &str) -> String {
    format!("waiting for approval: request {request_id} — approve with: ward approve {request_id}")
}

/// Where a request stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    TimedOut,
    Withdrawn,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::TimedOut => "timed_out",
            ApprovalState::Withdrawn => "withdrawn",
        }
    }
}

impl fmt::Display for ApprovalState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ApprovalState::TimedOut => "timed out",
            other => other.as_str(),
        })
    }
}

/// Someone acting on a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    /// The identity name, or `admin` for the holder of the admin token.
    pub name: String,
    /// The identity's groups (from its token entry), matched against `group:NAME`.
    pub groups: Vec<String>,
    /// Authenticated with the admin token rather than as an identity.
    pub admin: bool,
}

impl Approver {
    /// The holder of the admin token.
    pub fn admin() -> Approver {
        Approver {
            name: "admin".into(),
            groups: Vec::new(),
            admin: true,
        }
    }

    /// An identity that proved itself with its own ward token.
    pub fn identity(name: impl Into<String>, groups: Vec<String>) -> Approver {
        Approver {
            name: name.into(),
            groups,
            admin: false,
        }
    }

    /// Whether this approver is one the rule's `approvers` list names. An empty list means
    /// the admin; a non-empty one means exactly the identities and groups it names (the
    /// admin token does not override a rule that names its approvers).
    pub fn is_listed(&self, approvers: &[String]) -> bool {
        if approvers.is_empty() {
            return self.admin;
        }
        if self.admin {
            return false;
        }
        approvers
            .iter()
            .any(|entry| match entry.strip_prefix("group:") {
                Some(group) => self.groups.iter().any(|g| g == group),
                None => *entry == self.name,
            })
    }
}

/// A snapshot of one request, for the API, the CLI and notifiers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApprovalInfo {
    pub id: String,
    pub session_id: String,
    pub identity: String,
    pub target: String,
    pub protocol: String,
    pub command: String,
    pub rule: String,
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    /// Distinct approvers so far, in order.
    pub approved_by: Vec<String>,
    pub state: ApprovalState,
    /// Who made the final decision (the last approver, the denier); `None` while pending
    /// and for timeouts and withdrawals.
    pub decided_by: Option<String>,
    /// The denial reason, the last approver's comment, or what a timeout did.
    pub reason: Option<String>,
    pub on_timeout: OnTimeout,
    /// Unix micros.
    pub requested_at: i64,
    /// Unix micros; when the request times out.
    pub expires_at: i64,
    /// Unix micros; `None` while pending.
    pub decided_at: Option<i64>,
}

/// Why an approval action was refused. Each message says what to do instead.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error(
        "no approval request {id:?} is pending or recent; list them with `ward approvals list`"
    )]
    NotFound { id: String },
    #[error(
        "an identity cannot approve its own request: {identity} submitted {id}; ask another \
         approver"
    )]
    SelfApproval { id: String, identity: String },
    #[error("{approver} may not decide request {id}: {rule_says}")]
    NotAllowed {
        id: String,
        approver: String,
        /// What the rule allows, phrased for the refused approver.
        rule_says: String,
    },
    #[error("request {id} is already {state}; nothing to do")]
    AlreadyDecided { id: String, state: ApprovalState },
    #[error(
        "{approver} has already approved request {id}; it needs {remaining} more approval(s) \
         from other approvers"
    )]
    AlreadyApproved {
        id: String,
        approver: String,
        remaining: u32,
    },
    #[error("a denial needs a reason: it is shown to the client and kept in the audit")]
    ReasonRequired,
}

/// Told about every new request, e.g. to post it to a chat channel.
///
/// Called synchronously inside [`Approvals::submit`], on the data path: implementations must
/// return at once and do their work (network calls, retries) in the background.
pub trait ApprovalNotifier: Send + Sync {
    fn requested(&self, request: &ApprovalInfo);
}

/// Decided requests kept for `ward approvals list` and `GET /api/v1/approvals/{id}`; older
/// ones are only in the audit store. Bounds memory whatever the request rate.
const MAX_RECENT: usize = 256;

/// Characters of a request id after `r-`: 8 × 5 bits = 40 random bits. Ids only need to be
/// hard to guess among the few requests open at a time (acting on one also needs a token),
/// and short enough to type from a psql notice.
const ID_LEN: usize = 8;
/// Lower-case Crockford base32: no i, l, o or u, so ids read aloud or retyped stay intact.
const ID_ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

struct Entry {
    info: ApprovalInfo,
    /// Resolves the submitter's future; taken when the request is decided.
    tx: Option<oneshot::Sender<ApprovalOutcome>>,
    /// The final outcome, for a timeout that races a decision.
    outcome: Option<ApprovalOutcome>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    /// Ids of decided requests, oldest first, for eviction beyond [`MAX_RECENT`].
    decided: VecDeque<String>,
}

struct Shared {
    inner: Mutex<Inner>,
    audit: AuditSink,
    notifier: OnceLock<Arc<dyn ApprovalNotifier>>,
}

/// Pending approval requests, shared by every adapter and the admin API.
pub struct Approvals {
    shared: Arc<Shared>,
}

impl fmt::Debug for Approvals {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let inner = self.shared.lock();
        f.debug_struct("Approvals")
            .field("requests", &inner.entries.len())
            .field("notifier", &self.shared.notifier.get().is_some())
            .finish()
    }
}

impl Approvals {
    /// Approvals that record every request and decision through `audit`.
    pub fn new(audit: AuditSink) -> Self {
        Approvals {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                audit,
                notifier: OnceLock::new(),
            }),
        }
    }

    /// Also tells `notifier` about each new request (the webhook). Only the first notifier
    /// set is kept.
    pub fn with_notifier(self, notifier: Arc<dyn ApprovalNotifier>) -> Self {
        if self.shared.notifier.set(notifier).is_err() {
            tracing::warn!("an approval notifier was already set; ignoring another one");
        }
        self
    }

    /// Registers `request` and returns its id (shown to the client) and a future that
    /// resolves when it is decided or times out. Dropping the future withdraws the request.
    ///
    /// Must be called inside a tokio runtime with timers (the future sleeps until the
    /// timeout).
    pub fn submit(
        &self,
        request: ApprovalRequest,
    ) -> (
        String,
        impl std::future::Future<Output = ApprovalOutcome> + Send + 'static,
    ) {
        let now = crate::time::now_micros();
        let timeout_us = i64::try_from(request.timeout.as_micros()).unwrap_or(i64::MAX);
        let timeout = request.timeout;
        let (tx, rx) = oneshot::channel();
        let info = {
            let mut inner = self.shared.lock();
            let id = loop {
                let id = new_id();
                if !inner.entries.contains_key(&id) {
                    break id;
                }
            };
            let info = ApprovalInfo {
                id: id.clone(),
                session_id: request.session_id,
                identity: request.identity,
                target: request.target,
                protocol: request.protocol,
                command: request.command,
                rule: request.rule,
                approvers: request.approvers,
                approvals_required: request.approvals_required.max(1),
                approved_by: Vec::new(),
                state: ApprovalState::Pending,
                decided_by: None,
                reason: None,
                on_timeout: request.on_timeout,
                requested_at: now,
                expires_at: now.saturating_add(timeout_us),
                decided_at: None,
            };
            inner.entries.insert(
                id,
                Entry {
                    info: info.clone(),
                    tx: Some(tx),
                    outcome: None,
                },
            );
            info
        };
        self.shared
            .emit(event(&info, ApprovalEventState::Requested, None, None, now));
        if let Some(notifier) = self.shared.notifier.get() {
            notifier.requested(&info);
        }
        tracing::info!(
            request = %info.id,
            session = %info.session_id,
            identity = %info.identity,
            target = %info.target,
            rule = %info.rule,
            "statement held for approval"
        );

        let id = info.id.clone();
        let mut guard = WithdrawOnDrop {
            shared: self.shared.clone(),
            id: id.clone(),
            armed: true,
        };
        let future = async move {
            let outcome = match tokio::time::timeout(timeout, rx).await {
                Ok(Ok(outcome)) => outcome,
                // The sender is only dropped by a decision, which sends first; fail closed.
                Ok(Err(_)) => ApprovalOutcome::Denied {
                    by: "ward".into(),
                    reason: "the approval request was lost".into(),
                },
                Err(_) => guard.shared.time_out(&guard.id),
            };
            guard.disarm();
            outcome
        };
        (id, future)
    }

    /// Counts `approver`'s approval of request `id`. Returns the request's state afterwards:
    /// `Approved` once enough distinct approvers agreed (the statement is released), else
    /// still `Pending`.
    pub fn approve(
        &self,
        id: &str,
        approver: &Approver,
        reason: Option<&str>,
    ) -> Result<ApprovalState, ApprovalError> {
        let id = normalize_id(id);
        let now = crate::time::now_micros();
        let reason = reason.map(str::trim).filter(|r| !r.is_empty());
        let (state, ev) = {
            let mut inner = self.shared.lock();
            let entry = inner
                .entries
                .get_mut(&id)
                .ok_or_else(|| ApprovalError::NotFound { id: id.clone() })?;
            let info = &entry.info;
            if info.state != ApprovalState::Pending {
                return Err(ApprovalError::AlreadyDecided {
                    id,
                    state: info.state,
                });
            }
            if approver.name == info.identity {
                return Err(ApprovalError::SelfApproval {
                    id,
                    identity: info.identity.clone(),
                });
            }
            if !approver.is_listed(&info.approvers) {
                return Err(not_allowed(info, approver));
            }
            if info.approved_by.contains(&approver.name) {
                return Err(ApprovalError::AlreadyApproved {
                    id,
                    approver: approver.name.clone(),
                    remaining: remaining(info),
                });
            }
            entry.info.approved_by.push(approver.name.clone());
            if remaining(&entry.info) > 0 {
                let ev = event(
                    &entry.info,
                    ApprovalEventState::PartiallyApproved,
                    Some(&approver.name),
                    reason,
                    now,
                );
                (ApprovalState::Pending, ev)
            } else {
                let outcome = ApprovalOutcome::Approved {
                    by: entry.info.approved_by.clone(),
                };
                let ev = event(
                    &entry.info,
                    ApprovalEventState::Approved,
                    Some(&approver.name),
                    reason,
                    now,
                );
                Inner::decide(
                    &mut inner,
                    &id,
                    ApprovalState::Approved,
                    Some(approver.name.clone()),
                    reason.map(str::to_string),
                    outcome,
                    now,
                );
                (ApprovalState::Approved, ev)
            }
        };
        tracing::info!(request = %id, by = %approver.name, state = %state, "approval counted");
        self.shared.emit(ev);
        Ok(state)
    }

    /// Denies request `id`: the statement is refused with `reason` at once.
    pub fn deny(&self, id: &str, approver: &Approver, reason: &str) -> Result<(), ApprovalError> {
        let id = normalize_id(id);
        let now = crate::time::now_micros();
        let reason = reason.trim();
        let ev = {
            let mut inner = self.shared.lock();
            let entry = inner
                .entries
                .get(&id)
                .ok_or_else(|| ApprovalError::NotFound { id: id.clone() })?;
            let info = &entry.info;
            if info.state != ApprovalState::Pending {
                return Err(ApprovalError::AlreadyDecided {
                    id,
                    state: info.state,
                });
            }
            let own = !approver.admin && approver.name == info.identity;
            if !own && !approver.is_listed(&info.approvers) {
                return Err(not_allowed(info, approver));
            }
            if reason.is_empty() {
                return Err(ApprovalError::ReasonRequired);
            }
            let ev = event(
                info,
                ApprovalEventState::Denied,
                Some(&approver.name),
                Some(reason),
                now,
            );
            let outcome = ApprovalOutcome::Denied {
                by: approver.name.clone(),
                reason: reason.to_string(),
            };
            Inner::decide(
                &mut inner,
                &id,
                ApprovalState::Denied,
                Some(approver.name.clone()),
                Some(reason.to_string()),
                outcome,
                now,
            );
            ev
        };
        tracing::info!(request = %id, by = %approver.name, "approval request denied");
        self.shared.emit(ev);
        Ok(())
    }

    /// Pending requests (oldest first, the next to expire on top), then recently decided
    /// ones (newest first).
    pub fn list(&self) -> Vec<ApprovalInfo> {
        let inner = self.shared.lock();
        let mut pending: Vec<ApprovalInfo> = inner
            .entries
            .values()
            .filter(|e| e.info.state == ApprovalState::Pending)
            .map(|e| e.info.clone())
            .collect();
        pending.sort_by(|a, b| (a.requested_at, &a.id).cmp(&(b.requested_at, &b.id)));
        pending.extend(
            inner
                .decided
                .iter()
                .rev()
                .filter_map(|id| inner.entries.get(id))
                .map(|e| e.info.clone()),
        );
        pending
    }

    /// One pending or recently decided request.
    pub fn get(&self, id: &str) -> Option<ApprovalInfo> {
        self.shared
            .lock()
            .entries
            .get(&normalize_id(id))
            .map(|e| e.info.clone())
    }

    /// How many requests are waiting.
    pub fn pending_count(&self) -> usize {
        self.shared
            .lock()
            .entries
            .values()
            .filter(|e| e.info.state == ApprovalState::Pending)
            .count()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every update is a few
        // assignments), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues an audit event without waiting (see the module docs).
    fn emit(&self, ev: ApprovalEvent) {
        let Err(ev) = self.audit.try_record(AuditEvent::Approval(ev)) else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(handle) => {
                let audit = self.audit.clone();
                handle.spawn(async move {
                    if audit.record(*ev).await.is_err() {
                        tracing::error!(
                            "cannot record an approval event: the audit writer has stopped"
                        );
                    }
                });
            }
            Err(_) => tracing::error!(
                "cannot record an approval event: the audit queue is full or closed, and there is \
                 no runtime to wait on"
            ),
        }
    }

    /// The timeout fired: time the request out unless a decision just beat it.
    fn time_out(&self, id: &str) -> ApprovalOutcome {
        let now = crate::time::now_micros();
        let (outcome, ev) = {
            let mut inner = self.lock();
            let Some(entry) = inner.entries.get(id) else {
                return ApprovalOutcome::TimedOut { allowed: false };
            };
            if entry.info.state != ApprovalState::Pending {
                return entry
                    .outcome
                    .clone()
                    .unwrap_or(ApprovalOutcome::TimedOut { allowed: false });
            }
            let allowed = entry.info.on_timeout == OnTimeout::Allow;
            let reason = if allowed {
                "no decision in time; on_timeout: allow let the statement run"
            } else {
                "no decision in time; on_timeout: deny refused the statement"
            };
            let ev = event(
                &entry.info,
                ApprovalEventState::TimedOut,
                None,
                Some(reason),
                now,
            );
            let outcome = ApprovalOutcome::TimedOut { allowed };
            Inner::decide(
                &mut inner,
                id,
                ApprovalState::TimedOut,
                None,
                Some(reason.to_string()),
                outcome.clone(),
                now,
            );
            (outcome, ev)
        };
        tracing::info!(request = %id, outcome = ?outcome, "approval request timed out");
        self.emit(ev);
        outcome
    }

    /// The submitter stopped waiting: withdraw the request if it is still pending.
    fn withdraw(&self, id: &str) {
        let now = crate::time::now_micros();
        let ev = {
            let mut inner = self.lock();
            let Some(entry) = inner.entries.get(id) else {
                return;
            };
            if entry.info.state != ApprovalState::Pending {
                return;
            }
            let reason = "the client stopped waiting (disconnected or the session ended)";
            let ev = event(
                &entry.info,
                ApprovalEventState::Withdrawn,
                None,
                Some(reason),
                now,
            );
            Inner::decide(
                &mut inner,
                id,
                ApprovalState::Withdrawn,
                None,
                Some(reason.to_string()),
                ApprovalOutcome::Denied {
                    by: "ward".into(),
                    reason: reason.into(),
                },
                now,
            );
            ev
        };
        tracing::info!(request = %id, "approval request withdrawn");
        self.emit(ev);
    }
}

impl Inner {
    /// Records the final state of a pending request, wakes its submitter and keeps it among
    /// the recent ones.
    fn decide(
        inner: &mut Inner,
        id: &str,
        state: ApprovalState,
        by: Option<String>,
        reason: Option<String>,
        outcome: ApprovalOutcome,
        now: i64,
    ) {
        let Some(entry) = inner.entries.get_mut(id) else {
            return;
        };
        entry.info.state = state;
        entry.info.decided_by = by;
        entry.info.reason = reason;
        entry.info.decided_at = Some(now);
        if let Some(tx) = entry.tx.take() {
            // The submitter may be gone (timed out a moment ago); the outcome is kept below.
            let _ = tx.send(outcome.clone());
        }
        entry.outcome = Some(outcome);
        inner.decided.push_back(id.to_string());
        while inner.decided.len() > MAX_RECENT {
            if let Some(old) = inner.decided.pop_front() {
                inner.entries.remove(&old);
            }
        }
    }
}

/// Withdraws its request if the submitter's future is dropped before it resolved.
struct WithdrawOnDrop {
    shared: Arc<Shared>,
    id: String,
    armed: bool,
}

impl WithdrawOnDrop {
    /// The request resolved: nothing to withdraw.
    fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for WithdrawOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.shared.withdraw(&self.id);
        }
    }
}

fn remaining(info: &ApprovalInfo) -> u32 {
    let have = u32::try_from(info.approved_by.len()).unwrap_or(u32::MAX);
    info.approvals_required.saturating_sub(have)
}

fn not_allowed(info: &ApprovalInfo, approver: &Approver) -> ApprovalError {
    let rule_says = if info.approvers.is_empty() {
        format!(
            "rule {} names no approvers, so only the admin (admin token) may approve",
            info.rule
        )
    } else if approver.admin {
        format!(
            "rule {} names its approvers ({}); approve as one of them with --as NAME and that \
             identity's ward token",
            info.rule,
            info.approvers.join(", ")
        )
    } else {
        format!(
            "rule {} allows only {}",
            info.rule,
            info.approvers.join(", ")
        )
    };
    ApprovalError::NotAllowed {
        id: info.id.clone(),
        approver: approver.name.clone(),
        rule_says,
    }
}

fn event(
    info: &ApprovalInfo,
    state: ApprovalEventState,
    by: Option<&str>,
    reason: Option<&str>,
    at: i64,
) -> ApprovalEvent {
    ApprovalEvent {
        request_id: info.id.clone(),
        session_id: SessionId(info.session_id.as_str().into()),
        identity: info.identity.clone(),
        target: info.target.clone(),
        command: info.command.clone(),
        rule: info.rule.clone(),
        state,
        by: by.map(str::to_string),
        reason: reason.map(str::to_string),
        at,
    }
}

fn new_id() -> String {
    let mut rng = rand::thread_rng();
    let mut id = String::with_capacity(2 + ID_LEN);
    id.push_str("r-");
    for _ in 0..ID_LEN {
        id.push(char::from(ID_ALPHABET[rng.gen_range(0..ID_ALPHABET.len())]));
    }
    id
}

/// Ids are typed by people: ignore surrounding space and case.
fn normalize_id(id: &str) -> String {
    id.trim().to_ascii_lowercase()
}

/// `approvals:` in ward.yaml.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsConfig {
    /// Announce each new request to this URL.
    pub webhook: Option<WebhookConfig>,
}

/// An outgoing webhook for new approval requests.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// `https://…` or `http://…`, or `env:NAME` / `file:PATH` when the URL itself is a secret
    /// (a Slack incoming-webhook URL is one).
    pub url: WebhookUrl,
    /// `json` (default) or `slack`.
    #[serde(default)]
    pub format: WebhookFormat,
    /// How long one delivery attempt may take (default 5s).
    #[serde(default = "default_webhook_timeout", with = "duration_text")]
    pub timeout: Duration,
}

fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// The body a webhook sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    /// `{"type": "approval_requested", "request_id": …, …}`
    #[default]
    Json,
    /// `{"text": "…"}`, what Slack (and Mattermost, Rocket.Chat…) incoming webhooks take.
    Slack,
}

/// A webhook URL as written in ward.yaml.
#[derive(Clone, PartialEq, Eq)]
pub enum WebhookUrl {
    Inline(String),
    Secret(SecretRef),
}

impl WebhookUrl {
    /// The URL, read now for `env:`/`file:`. Wrapped in [`Secret`]: webhook URLs often
    /// carry the credential in their path, so they must not reach logs.
    pub fn resolve(&self) -> Result<Secret, String> {
        let url = match self {
            WebhookUrl::Inline(url) => Secret::new(url.clone()),
            WebhookUrl::Secret(r) => {
                let url = r.resolve()?;
                check_url(url.expose().trim()).map_err(|e| format!("{r}: {e}"))?;
                Secret::new(url.expose().trim())
            }
        };
        Ok(url)
    }

    /// Makes a relative `file:` path relative to the config file's directory.
    pub fn rebase(&mut self, base: &Path) {
        if let WebhookUrl::Secret(r) = self {
            r.rebase(base);
        }
    }
}

/// Only the scheme and host, so a stray `{:?}` cannot leak a secret path.
impl fmt::Debug for WebhookUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WebhookUrl::Inline(url) => write!(f, "WebhookUrl({}/…)", url_origin(url)),
            WebhookUrl::Secret(r) => write!(f, "WebhookUrl({r})"),
        }
    }
}

impl<'de> Deserialize<'de> for WebhookUrl {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let text = text.trim();
        if text.starts_with("env:") || text.starts_with("file:") {
            return SecretRef::parse(text)
                .map(WebhookUrl::Secret)
                .map_err(serde::de::Error::custom);
        }
        check_url(text).map_err(serde::de::Error::custom)?;
        Ok(WebhookUrl::Inline(text.to_string()))
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| {
            format!(
                "webhook url {:?} must start with https:// or http:// (or be env:NAME / \
                 file:PATH holding such a URL)",
                url_origin(url)
            )
        })?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("webhook url {:?} has no host", url_origin(url)));
    }
    Ok(())
}

/// `https://hooks.example.com` of a URL: safe to log.
pub fn url_origin(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((s, r)) => (s, r),
        None => return "<not a URL>".into(),
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    // Drop any `user:password@`.
    let host = host.rsplit('@').next().unwrap_or(host);
    format!("{scheme}://{host}")
}

/// Durations written like `5s`, `1m`.
mod duration_text {
    use serde::Deserialize;
    use std::time::Duration;

    pub fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        crate::time::parse_duration(&text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests;
