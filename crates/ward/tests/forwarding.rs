//! SIEM forwarding end to end: statements run through a real `ward serve` reach a file sink
//! and an HTTP sink (a receiver in this test), `GET /metrics` shows the sinks, and a receiver
//! that is down neither blocks the client nor loses the event.

mod harness;

use harness::{AuthMethod, Postgres, Target, Ward, WardOptions, wait_for, wait_until};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One POST: its authorization header, body and the status it was answered with.
type Posted = (Option<String>, String, u16);

/// A minimal HTTP/1.1 receiver: records (authorization header, body, status) of each POST
/// and answers with the current status.
struct Receiver {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    requests: Arc<Mutex<Vec<Posted>>>,
}

impl Receiver {
    fn start(status: u16) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let r = Receiver {
            addr: listener.local_addr().unwrap(),
            status: Arc::new(AtomicU16::new(status)),
            requests: Arc::default(),
        };
        let (status, requests) = (r.status.clone(), r.requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (status, requests) = (status.clone(), requests.clone());
                std::thread::spawn(move || serve(stream, &status, &requests));
            }
        });
        r
    }

    /// Envelopes of the accepted (2xx) batches.
    fn accepted(&self) -> Vec<serde_json::Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, _, s)| *s == 200)
            .flat_map(|(_, body, _)| serde_json::from_str::<Vec<serde_json::Value>>(body).unwrap())
            .collect()
    }
}

fn serve(stream: TcpStream, status: &AtomicU16, requests: &Mutex<Vec<Posted>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (mut len, mut auth) = (0usize, None);
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => len = v.trim().parse().unwrap_or(0),
                    "authorization" => auth = Some(v.trim().to_string()),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        requests
            .lock()
            .unwrap()
            .push((auth, String::from_utf8_lossy(&body).into_owned(), code));
        if writer
            .write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes())
            .is_err()
        {
            return;
        }
    }
}

/// The value of the sample `name{sink="sink"}` in a Prometheus text exposition.
fn sample(metrics: &str, name: &str, sink: &str) -> Option<f64> {
    let prefix = format!("{name}{{sink=\"{sink}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

fn start_ward(receiver: &Receiver) -> Ward {
    let db = Postgres::get().create_target("fwd", AuthMethod::ScramSha256);
    Ward::start(
        WardOptions::new()
            .target(Target::postgres("orders-db", &db))
            .token("ci")
            .env("WARD_TEST_SIEM_TOKEN", "siem-token-1")
            .extra_yaml(&format!(
                "forward:\n  - {{ name: local, kind: file, path: events.jsonl }}\n  - {{ name: siem, kind: http, url: 'http://{}/ingest', token: 'env:WARD_TEST_SIEM_TOKEN', kinds: [statement, session_start, session_end] }}",
                receiver.addr
            )),
    )
}

fn statement_with(events: &[serde_json::Value], marker: &str) -> Option<serde_json::Value> {
    events
        .iter()
        .find(|e| {
            e["kind"] == "statement"
                && e["event"]["text"]
                    .as_str()
                    .is_some_and(|t| t.contains(marker))
        })
        .cloned()
}

fn file_events(ward: &Ward) -> Vec<serde_json::Value> {
    std::fs::read_to_string(ward.dir().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn statements_reach_a_file_and_an_http_sink_and_metrics_show_them() {
    let receiver = Receiver::start(200);
    let ward = start_ward(&receiver);
    ward.psql_ok("ci", "orders-db", "select 'fwd-marker-1' as x");

    let in_file = wait_until(
        || statement_with(&file_events(&ward), "fwd-marker-1"),
        "the statement in the file sink",
    );
    assert_eq!(in_file["schema"], 1);
    assert_eq!(in_file["event"]["type"], "statement");
    assert_eq!(in_file["event"]["rows"], 1);
    let session = in_file["session_id"].as_str().unwrap().to_string();
    let over_http = wait_until(
        || statement_with(&receiver.accepted(), "fwd-marker-1"),
        "the statement at the HTTP receiver",
    );
    assert_eq!(over_http, in_file, "the same envelope in both sinks");
    // The session's end follows once psql has gone; `command` events are filtered out.
    wait_for(
        || {
            receiver
                .accepted()
                .iter()
                .any(|e| e["kind"] == "session_end" && e["session_id"] == session.as_str())
        },
        "the session end at the HTTP receiver",
    );
    let accepted = receiver.accepted();
    assert!(accepted.iter().all(|e| e["kind"] != "command"));
    assert!(
        receiver
            .requests
            .lock()
            .unwrap()
            .iter()
            .all(|(auth, _, _)| auth.as_deref() == Some("Bearer siem-token-1"))
    );

    let (status, _) =
        harness::http_request(ward.api_addr(), "GET", "/metrics", None, None).unwrap();
    assert_eq!(status, 401, "metrics need the admin token");
    let metrics = wait_until(
        || {
            let (status, body) = ward.api("GET", "/metrics", None);
            assert_eq!(status, 200, "{body}");
            (sample(&body, "ward_forward_queue_depth", "siem") == Some(0.0)
                && sample(&body, "ward_forward_queue_depth", "local") == Some(0.0))
            .then_some(body)
        },
        "both sinks caught up in /metrics",
    );
    assert!(metrics.contains("# TYPE ward_forward_events_total counter"));
    assert!(sample(&metrics, "ward_forward_events_total", "local").unwrap() >= 3.0);
    assert!(sample(&metrics, "ward_forward_events_total", "siem").unwrap() >= 3.0);
    assert_eq!(
        sample(&metrics, "ward_forward_failures_total", "siem"),
        Some(0.0)
    );
    assert_eq!(
        sample(&metrics, "ward_forward_lag_seconds", "siem"),
        Some(0.0)
    );
}

#[test]
fn a_receiver_that_is_down_blocks_nothing_and_loses_nothing() {
    let receiver = Receiver::start(503);
    let ward = start_ward(&receiver);
    let started = Instant::now();
    ward.psql_ok("ci", "orders-db", "select 'fwd-marker-2' as x");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the client must not wait for the SIEM"
    );
    wait_until(
        || statement_with(&file_events(&ward), "fwd-marker-2"),
        "the statement in the file sink while the HTTP receiver is down",
    );
    wait_for(
        || {
            let (_, body) = ward.api("GET", "/metrics", None);
            sample(&body, "ward_forward_failures_total", "siem").is_some_and(|f| f >= 2.0)
                && sample(&body, "ward_forward_queue_depth", "siem").is_some_and(|d| d > 0.0)
                && sample(&body, "ward_forward_lag_seconds", "siem").is_some_and(|l| l > 0.0)
        },
        "failures and a queue in /metrics while the receiver answers 503",
    );
    assert!(statement_with(&receiver.accepted(), "fwd-marker-2").is_none());

    receiver.status.store(200, Ordering::SeqCst);
    wait_until(
        || statement_with(&receiver.accepted(), "fwd-marker-2"),
        "the statement delivered once the receiver is back",
    );
    wait_for(
        || {
            let (_, body) = ward.api("GET", "/metrics", None);
            sample(&body, "ward_forward_queue_depth", "siem") == Some(0.0)
                && sample(&body, "ward_forward_queue_depth", "local") == Some(0.0)
        },
        "the queues drained",
    );
    // Every event of the log, in order, without gaps: ids as the file sink saw them, filtered
    // like the HTTP sink.
    let wanted: Vec<i64> = file_events(&ward)
        .iter()
        .filter(|e| {
            ["statement", "session_start", "session_end"].contains(&e["kind"].as_str().unwrap())
        })
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    let got: Vec<i64> = receiver
        .accepted()
        .iter()
        .map(|e| e["id"].as_i64().unwrap())
        .collect();
    assert_eq!(
        got, wanted,
        "the HTTP sink got every wanted event once, in order"
    );
    assert!(got.len() >= 3);
}
