use super::*;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use ward_core::AuditSink;
use ward_core::approvals::{ApprovalRequest, Approvals, OnTimeout, WebhookUrl};

/// One request the receiver got: path, content type and body.
struct Received {
    path: String,
    content_type: String,
    body: String,
}

/// A tiny HTTP/1.1 server on 127.0.0.1 answering the given statuses in turn (the last one
/// repeats). Returns the webhook URL and a channel of what it received.
fn receiver(statuses: &[u16]) -> (String, mpsc::Receiver<Received>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://{}/hooks/T000/B000/SECRETPART",
        listener.local_addr().unwrap()
    );
    let statuses = statuses.to_vec();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
            let mut length = 0;
            let mut content_type = String::new();
            loop {
                let mut header = String::new();
                reader.read_line(&mut header).unwrap();
                let header = header.trim_end();
                if header.is_empty() {
                    break;
                }
                let (name, value) = header.split_once(':').unwrap();
                match name.to_ascii_lowercase().as_str() {
                    "content-length" => length = value.trim().parse().unwrap(),
                    "content-type" => content_type = value.trim().to_string(),
                    _ => {}
                }
            }
            let mut body = vec![0; length];
            reader.read_exact(&mut body).unwrap();
            let status = statuses[n.min(statuses.len() - 1)];
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            );
            let _ = tx.send(Received {
                path,
                content_type,
                body: String::from_utf8(body).unwrap(),
            });
        }
    });
    (url, rx)
}

fn config(url: &str, format: WebhookFormat) -> WebhookConfig {
    WebhookConfig {
        url: WebhookUrl::Inline(url.to_string()),
        format,
        timeout: Duration::from_secs(5),
    }
}

fn request() -> ApprovalRequest {
    ApprovalRequest {
        session_id: "0190a1b2-0000-7000-8000-00000000000a".into(),
        identity: "alice".into(),
        target: "orders-db".into(),
        protocol: "postgres".into(),
        command: "DELETE FROM orders WHERE note = '<b>&```'".into(),
        rule: "approve-deletes".into(),
        approvers: vec!["group:sre".into()],
        approvals_required: 2,
        timeout: Duration::from_secs(30),
        on_timeout: OnTimeout::Deny,
    }
}

fn approvals_with(notifier: WebhookNotifier) -> Approvals {
    let (audit, rx) = AuditSink::channel(64);
    // Keep the audit queue open for the test's length.
    std::mem::forget(rx);
    Approvals::new(audit).with_notifier(Arc::new(notifier))
}

const WAIT: Duration = Duration::from_secs(10);

#[tokio::test]
async fn posts_the_json_payload_for_each_new_request() {
    let (url, received) = receiver(&[200]);
    let approvals =
        approvals_with(WebhookNotifier::new(&config(&url, WebhookFormat::Json)).unwrap());
    let (id, _outcome) = approvals.submit(request());
    let got = tokio::task::spawn_blocking(move || received.recv_timeout(WAIT).unwrap())
        .await
        .unwrap();
    assert_eq!(got.path, "/hooks/T000/B000/SECRETPART");
    assert_eq!(got.content_type, "application/json");
    let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    assert_eq!(body["type"], "approval_requested");
    assert_eq!(body["request_id"], id.as_str());
    assert_eq!(body["session_id"], "0190a1b2-0000-7000-8000-00000000000a");
    assert_eq!(body["identity"], "alice");
    assert_eq!(body["target"], "orders-db");
    assert_eq!(body["command"], "DELETE FROM orders WHERE note = '<b>&```'");
    assert_eq!(body["rule"], "approve-deletes");
    assert_eq!(body["approvers"], serde_json::json!(["group:sre"]));
    assert_eq!(body["approvals_required"], 2);
    assert_eq!(body["approve_command"], format!("ward approve {id}"));
    let expires = body["expires_at"].as_str().unwrap();
    assert!(
        chrono::DateTime::parse_from_rfc3339(expires).is_ok(),
        "{expires}"
    );
}

#[tokio::test]
async fn posts_slack_text_with_markup_escaped() {
    let (url, received) = receiver(&[200]);
    let approvals =
        approvals_with(WebhookNotifier::new(&config(&url, WebhookFormat::Slack)).unwrap());
    let (id, _outcome) = approvals.submit(request());
    let got = tokio::task::spawn_blocking(move || received.recv_timeout(WAIT).unwrap())
        .await
        .unwrap();
    let body: serde_json::Value = serde_json::from_str(&got.body).unwrap();
    let object = body.as_object().unwrap();
    assert_eq!(
        object.len(),
        1,
        "Slack incoming webhooks take {{\"text\": …}}"
    );
    let text = body["text"].as_str().unwrap();
    assert!(text.contains(&format!("`ward approve {id}`")), "{text}");
    assert!(
        text.contains("*alice*") && text.contains("*orders-db*"),
        "{text}"
    );
    assert!(text.contains("2 approval(s) from group:sre"), "{text}");
    assert!(text.contains("&lt;b&gt;&amp;"), "{text}");
    // The command cannot close the code block early.
    assert_eq!(text.matches("```").count(), 2, "{text}");
}

#[tokio::test]
async fn retries_three_times_then_gives_up() {
    let (url, received) = receiver(&[500, 503, 200]);
    let notifier = WebhookNotifier::new(&config(&url, WebhookFormat::Json))
        .unwrap()
        .with_backoff(Duration::from_millis(10));
    let approvals = approvals_with(notifier);
    let _held = approvals.submit(request());
    let bodies = tokio::task::spawn_blocking(move || {
        let mut bodies = Vec::new();
        for _ in 0..3 {
            bodies.push(received.recv_timeout(WAIT).unwrap().body);
        }
        // Delivered on the third attempt: no fourth.
        assert!(received.recv_timeout(Duration::from_millis(300)).is_err());
        bodies
    })
    .await
    .unwrap();
    assert!(bodies.iter().all(|b| b == &bodies[0]));

    let (url, received) = receiver(&[500]);
    let notifier = WebhookNotifier::new(&config(&url, WebhookFormat::Json))
        .unwrap()
        .with_backoff(Duration::from_millis(10));
    let approvals = approvals_with(notifier);
    let _held = approvals.submit(request());
    tokio::task::spawn_blocking(move || {
        for _ in 0..ATTEMPTS {
            received.recv_timeout(WAIT).unwrap();
        }
        assert!(received.recv_timeout(Duration::from_millis(300)).is_err());
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn an_unreachable_endpoint_never_delays_submit() {
    // A listener that accepts and never answers: every attempt waits for the timeout.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", silent.local_addr().unwrap());
    let mut c = config(&url, WebhookFormat::Json);
    c.timeout = Duration::from_millis(400);
    let notifier = WebhookNotifier::new(&c)
        .unwrap()
        .with_backoff(Duration::from_millis(10));
    let approvals = approvals_with(notifier);
    let started = std::time::Instant::now();
    for _ in 0..5 {
        let _held = approvals.submit(request());
    }
    assert!(started.elapsed() < Duration::from_millis(500));
}

#[test]
fn needs_a_runtime_and_a_resolvable_url() {
    let err =
        WebhookNotifier::new(&config("http://127.0.0.1:1/", WebhookFormat::Json)).unwrap_err();
    assert!(matches!(err, WebhookError::NoRuntime));
    let c = WebhookConfig {
        url: WebhookUrl::Secret(
            ward_core::secret::SecretRef::parse("env:WARD_TEST_NO_SUCH_WEBHOOK").unwrap(),
        ),
        format: WebhookFormat::Json,
        timeout: Duration::from_secs(1),
    };
    let err = WebhookNotifier::new(&c).unwrap_err().to_string();
    assert!(err.contains("WARD_TEST_NO_SUCH_WEBHOOK"), "{err}");
}
