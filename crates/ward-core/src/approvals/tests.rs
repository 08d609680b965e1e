use super::*;
use crate::audit::AuditReceiver as Receiver;

fn request(identity: &str, approvers: &[&str], required: u32) -> ApprovalRequest {
    ApprovalRequest {
        session_id: "0190a1b2-0000-7000-8000-00000000000a".into(),
        identity: identity.into(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        command: "DELETE FROM orders WHERE id = 42".into(),
        rule: "approve-deletes".into(),
        approvers: approvers.iter().map(|a| a.to_string()).collect(),
        approvals_required: required,
        timeout: Duration::from_secs(30),
        on_timeout: OnTimeout::Deny,
    }
}

fn approvals() -> (Approvals, Receiver) {
    let (audit, rx) = AuditSink::channel(64);
    (Approvals::new(audit), rx)
}

/// The approval events queued so far: (state, by).
fn events(rx: &mut Receiver) -> Vec<(ApprovalEventState, Option<String>)> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        match ev {
            AuditEvent::Approval(a) => out.push((a.state, a.by)),
            other => panic!("unexpected event {other:?}"),
        }
    }
    out
}

fn sre(name: &str) -> Approver {
    Approver::identity(name, vec!["sre".into()])
}

#[tokio::test]
async fn an_allowed_approver_releases_the_statement() {
    let (approvals, mut rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &["group:sre"], 1));
    assert!(id.starts_with("r-") && id.len() == 10, "{id}");
    assert_eq!(approvals.get(&id).unwrap().state, ApprovalState::Pending);
    assert_eq!(approvals.pending_count(), 1);

    // Ids are typed by people: case and surrounding space do not matter.
    let state = approvals
        .approve(
            &format!(" {} ", id.to_uppercase()),
            &sre("bob"),
            Some("looks fine"),
        )
        .unwrap();
    assert_eq!(state, ApprovalState::Approved);
    assert_eq!(
        outcome.await,
        ApprovalOutcome::Approved {
            by: vec!["bob".into()]
        }
    );
    let info = approvals.get(&id).unwrap();
    assert_eq!(info.state, ApprovalState::Approved);
    assert_eq!(info.decided_by.as_deref(), Some("bob"));
    assert_eq!(info.reason.as_deref(), Some("looks fine"));
    assert!(info.decided_at.is_some());
    assert_eq!(
        events(&mut rx),
        [
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::Approved, Some("bob".into()))
        ]
    );
    assert!(matches!(
        approvals.approve(&id, &sre("carol"), None),
        Err(ApprovalError::AlreadyDecided {
            state: ApprovalState::Approved,
            ..
        })
    ));
}

#[tokio::test]
async fn an_identity_cannot_approve_its_own_request() {
    let (approvals, mut rx) = approvals();
    let (id, _outcome) = approvals.submit(request("alice", &["group:sre"], 1));
    let err = approvals.approve(&id, &sre("alice"), None).unwrap_err();
    assert!(matches!(err, ApprovalError::SelfApproval { .. }));
    assert!(
        err.to_string()
            .contains("an identity cannot approve its own request"),
        "{err}"
    );
    assert_eq!(approvals.get(&id).unwrap().state, ApprovalState::Pending);
    assert_eq!(events(&mut rx), [(ApprovalEventState::Requested, None)]);
}

#[tokio::test]
async fn only_listed_approvers_or_the_admin_for_unlisted_rules() {
    let (approvals, _rx) = approvals();
    let (id, _o1) = approvals.submit(request("alice", &["group:sre", "dave"], 1));
    // Not in the group, not named.
    let err = approvals
        .approve(
            &id,
            &Approver::identity("mallory", vec!["dev".into()]),
            None,
        )
        .unwrap_err();
    assert!(
        err.to_string().contains("allows only group:sre, dave"),
        "{err}"
    );
    // The admin token does not override a rule that names its approvers.
    let err = approvals
        .approve(&id, &Approver::admin(), None)
        .unwrap_err();
    assert!(matches!(err, ApprovalError::NotAllowed { .. }), "{err}");
    assert!(err.to_string().contains("--as NAME"), "{err}");
    // Named directly.
    assert_eq!(
        approvals
            .approve(&id, &Approver::identity("dave", vec![]), None)
            .unwrap(),
        ApprovalState::Approved
    );

    // No approvers listed: the admin only.
    let (id, o2) = approvals.submit(request("alice", &[], 1));
    let err = approvals.approve(&id, &sre("bob"), None).unwrap_err();
    assert!(err.to_string().contains("only the admin"), "{err}");
    assert_eq!(
        approvals.approve(&id, &Approver::admin(), None).unwrap(),
        ApprovalState::Approved
    );
    assert_eq!(
        o2.await,
        ApprovalOutcome::Approved {
            by: vec!["admin".into()]
        }
    );

    let err = approvals
        .approve("r-nothere", &Approver::admin(), None)
        .unwrap_err();
    assert!(matches!(err, ApprovalError::NotFound { .. }), "{err}");
}

#[tokio::test]
async fn two_approvals_need_two_distinct_approvers() {
    let (approvals, mut rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &["group:sre"], 2));
    assert_eq!(
        approvals.approve(&id, &sre("bob"), None).unwrap(),
        ApprovalState::Pending
    );
    let err = approvals.approve(&id, &sre("bob"), None).unwrap_err();
    assert_eq!(
        err,
        ApprovalError::AlreadyApproved {
            id: id.clone(),
            approver: "bob".into(),
            remaining: 1
        }
    );
    assert_eq!(approvals.get(&id).unwrap().approved_by, ["bob"]);
    assert_eq!(
        approvals.approve(&id, &sre("carol"), None).unwrap(),
        ApprovalState::Approved
    );
    assert_eq!(
        outcome.await,
        ApprovalOutcome::Approved {
            by: vec!["bob".into(), "carol".into()]
        }
    );
    assert_eq!(
        events(&mut rx),
        [
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::PartiallyApproved, Some("bob".into())),
            (ApprovalEventState::Approved, Some("carol".into()))
        ]
    );
}

#[tokio::test]
async fn a_denial_refuses_the_statement_with_its_reason() {
    let (approvals, mut rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &["group:sre"], 2));
    assert_eq!(
        approvals.approve(&id, &sre("bob"), None).unwrap(),
        ApprovalState::Pending
    );
    assert_eq!(
        approvals.deny(&id, &sre("carol"), "  "),
        Err(ApprovalError::ReasonRequired)
    );
    assert!(matches!(
        approvals.deny(&id, &Approver::identity("mallory", vec![]), "no"),
        Err(ApprovalError::NotAllowed { .. })
    ));
    approvals
        .deny(&id, &sre("carol"), "not during the freeze")
        .unwrap();
    let outcome = outcome.await;
    assert_eq!(
        outcome,
        ApprovalOutcome::Denied {
            by: "carol".into(),
            reason: "not during the freeze".into()
        }
    );
    assert!(!outcome.allows_statement());
    assert_eq!(
        outcome.refusal_message(&id).unwrap(),
        format!("ward: approval request {id} was denied by carol: not during the freeze")
    );
    assert_eq!(approvals.get(&id).unwrap().state, ApprovalState::Denied);
    assert_eq!(
        events(&mut rx),
        [
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::PartiallyApproved, Some("bob".into())),
            (ApprovalEventState::Denied, Some("carol".into()))
        ]
    );
    assert!(matches!(
        approvals.deny(&id, &sre("bob"), "again"),
        Err(ApprovalError::AlreadyDecided { .. })
    ));
}

#[tokio::test]
async fn the_requester_may_cancel_its_own_request() {
    let (approvals, _rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &["group:sre"], 1));
    approvals
        .deny(&id, &Approver::identity("alice", vec![]), "wrong table")
        .unwrap();
    assert!(matches!(outcome.await, ApprovalOutcome::Denied { by, .. } if by == "alice"));
}

#[tokio::test]
async fn timeouts_deny_or_allow_as_configured() {
    let (approvals, mut rx) = approvals();
    let mut deny = request("alice", &["group:sre"], 1);
    deny.timeout = Duration::from_millis(30);
    let (id, outcome) = approvals.submit(deny);
    let outcome = outcome.await;
    assert_eq!(outcome, ApprovalOutcome::TimedOut { allowed: false });
    assert!(outcome.refusal_message(&id).unwrap().contains("timed out"));
    let info = approvals.get(&id).unwrap();
    assert_eq!(info.state, ApprovalState::TimedOut);
    assert!(info.reason.unwrap().contains("on_timeout: deny"));
    assert!(matches!(
        approvals.approve(&id, &sre("bob"), None),
        Err(ApprovalError::AlreadyDecided {
            state: ApprovalState::TimedOut,
            ..
        })
    ));

    let mut allow = request("alice", &["group:sre"], 1);
    allow.timeout = Duration::from_millis(30);
    allow.on_timeout = OnTimeout::Allow;
    let (id, outcome) = approvals.submit(allow);
    let outcome = outcome.await;
    assert_eq!(outcome, ApprovalOutcome::TimedOut { allowed: true });
    assert!(outcome.allows_statement() && outcome.refusal_message(&id).is_none());
    assert_eq!(
        events(&mut rx),
        [
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::TimedOut, None),
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::TimedOut, None)
        ]
    );
}

#[tokio::test]
async fn dropping_the_future_withdraws_the_request() {
    let (approvals, mut rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &["group:sre"], 1));
    // The client went away: the adapter drops what it was awaiting.
    let waiting = tokio::spawn(outcome);
    tokio::task::yield_now().await;
    waiting.abort();
    let _ = waiting.await;
    let info = approvals.get(&id).unwrap();
    assert_eq!(info.state, ApprovalState::Withdrawn);
    assert_eq!(approvals.pending_count(), 0);
    let err = approvals.approve(&id, &sre("bob"), None).unwrap_err();
    assert!(err.to_string().contains("already withdrawn"), "{err}");
    assert_eq!(
        events(&mut rx),
        [
            (ApprovalEventState::Requested, None),
            (ApprovalEventState::Withdrawn, None)
        ]
    );
}

#[tokio::test]
async fn a_resolved_future_does_not_withdraw_on_drop() {
    let (approvals, mut rx) = approvals();
    let (id, outcome) = approvals.submit(request("alice", &[], 1));
    approvals.approve(&id, &Approver::admin(), None).unwrap();
    drop(outcome.await);
    assert_eq!(approvals.get(&id).unwrap().state, ApprovalState::Approved);
    assert_eq!(events(&mut rx).len(), 2);
}

#[tokio::test]
async fn lists_pending_first_then_recent_decisions() {
    let (approvals, _rx) = approvals();
    let (first, _f1) = approvals.submit(request("alice", &[], 1));
    let (second, _f2) = approvals.submit(request("alice", &[], 1));
    let (decided, _f3) = approvals.submit(request("alice", &[], 1));
    approvals.deny(&decided, &Approver::admin(), "no").unwrap();
    let ids: Vec<String> = approvals.list().into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 3);
    assert_eq!(ids[2], decided);
    assert!(ids[..2].contains(&first) && ids[..2].contains(&second));
}

#[tokio::test]
async fn decided_requests_are_kept_only_up_to_a_bound() {
    let (audit, _rx) = AuditSink::channel(1);
    let approvals = Approvals::new(audit);
    for _ in 0..MAX_RECENT + 10 {
        let (id, _o) = approvals.submit(request("alice", &[], 1));
        approvals.deny(&id, &Approver::admin(), "no").unwrap();
    }
    assert_eq!(approvals.list().len(), MAX_RECENT);
    // A full audit queue never blocked submit/deny: the rest were handed to spawned tasks.
}

#[derive(Default)]
struct Recorder(Mutex<Vec<ApprovalInfo>>);

impl ApprovalNotifier for Recorder {
    fn requested(&self, request: &ApprovalInfo) {
        self.0.lock().unwrap().push(request.clone());
    }
}

#[tokio::test]
async fn notifies_each_new_request() {
    let (audit, _rx) = AuditSink::channel(8);
    let recorder = Arc::new(Recorder::default());
    let approvals = Approvals::new(audit).with_notifier(recorder.clone());
    let (id, _o) = approvals.submit(request("alice", &["group:sre"], 2));
    let seen = recorder.0.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].id, id);
    assert_eq!(seen[0].approvals_required, 2);
    assert_eq!(seen[0].expires_at - seen[0].requested_at, 30_000_000);
}

#[test]
fn notice_and_ids() {
    assert_eq!(
        waiting_notice("r-abc"),
        "waiting for approval: request r-abc — approve with: ward approve r-abc"
    );
    let a = new_id();
    assert!(a.starts_with("r-") && a.len() == 10);
    assert!(a[2..].bytes().all(|b| ID_ALPHABET.contains(&b)));
    assert_ne!(a, new_id());
}

#[test]
fn webhook_config_parses_and_hides_its_url() {
    let c: ApprovalsConfig = serde_yaml::from_str(
        "webhook: { url: 'https://hooks.slack.com/services/T0/B0/SECRET', format: slack, timeout: 2s }",
    )
    .unwrap();
    let w = c.webhook.unwrap();
    assert_eq!(w.format, WebhookFormat::Slack);
    assert_eq!(w.timeout, Duration::from_secs(2));
    assert!(!format!("{w:?}").contains("SECRET"), "{w:?}");
    assert_eq!(
        w.url.resolve().unwrap().expose(),
        "https://hooks.slack.com/services/T0/B0/SECRET"
    );

    let c: ApprovalsConfig =
        serde_yaml::from_str("webhook: { url: env:WARD_TEST_NO_SUCH_VAR }").unwrap();
    let w = c.webhook.unwrap();
    assert_eq!(w.format, WebhookFormat::Json);
    assert_eq!(w.timeout, Duration::from_secs(5));
    assert!(
        w.url
            .resolve()
            .unwrap_err()
            .contains("WARD_TEST_NO_SUCH_VAR")
    );

    let err = serde_yaml::from_str::<ApprovalsConfig>("webhook: { url: 'ftp://x' }").unwrap_err();
    assert!(err.to_string().contains("https://"), "{err}");
    let err =
        serde_yaml::from_str::<ApprovalsConfig>("webhook: { url: 'https://x', fromat: json }")
            .unwrap_err();
    assert!(err.to_string().contains("fromat"), "{err}");
    assert_eq!(
        url_origin("https://u:p@h.example:8443/a?b"),
        "https://h.example:8443"
    );
}
