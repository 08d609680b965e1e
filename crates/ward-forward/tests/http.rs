//! The http sink against an HTTP/1.1 receiver on 127.0.0.1: JSON arrays with a bearer
//! token, Splunk HEC with its token, retries on 500 with nothing lost, and the cursor after
//! a restart.

mod common;

use common::{HttpReceiver, TestStore, check_envelopes, fast, sinks, wait_until};
use std::sync::atomic::Ordering;

#[test]
fn json_batches_are_retried_on_500_until_accepted() {
    let mut t = TestStore::new();
    let mut total = t.session("0190a1b2-0000-7000-8000-000000000701", 5);
    std::fs::write(t.dir.path().join("token"), "s3cret-json\n").unwrap();
    let receiver = HttpReceiver::start(500);
    let config = sinks(
        &format!(
            "  - {{ name: siem, kind: http, url: '{}', token: 'file:token', batch: 3 }}",
            receiver.url("/ingest?x=1")
        ),
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("several refused attempts", || receiver.count() >= 3);
    let s = m.get("siem").unwrap();
    assert!(s.failures >= 2, "{s:?}");
    assert_eq!((s.delivered, s.queue_depth), (0, total as u64));
    total += t.session("0190a1b2-0000-7000-8000-000000000702", 1);

    receiver.status.store(200, Ordering::SeqCst);
    wait_until("caught up", || {
        m.get("siem")
            .is_some_and(|s| s.queue_depth == 0 && s.cursor == total as i64)
    });
    forwarders.stop();

    let accepted = receiver.accepted();
    let mut envelopes = Vec::new();
    for r in &accepted {
        assert_eq!(r.method, "POST");
        assert_eq!(r.path, "/ingest?x=1");
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret-json"));
        let batch: Vec<serde_json::Value> = serde_json::from_str(&r.body).unwrap();
        assert!(!batch.is_empty() && batch.len() <= 3);
        // The envelopes' exact text, for the hash-chain check.
        let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(&r.body).unwrap();
        envelopes.extend(raw.iter().map(|e| e.get().to_string()));
    }
    check_envelopes(&envelopes, total);
    assert_eq!(m.get("siem").unwrap().delivered, total as u64);
}

#[test]
fn splunk_hec_events_carry_time_host_and_the_token() {
    let mut t = TestStore::new();
    let total = t.session("0190a1b2-0000-7000-8000-000000000801", 2);
    std::fs::write(t.dir.path().join("hec"), "00000000-hec-token").unwrap();
    let receiver = HttpReceiver::start(200);
    let config = sinks(
        &format!(
            "  - {{ name: hec, kind: http, format: splunk_hec, url: '{}', token: 'file:hec', hostname: gw01, timeout: 5s }}",
            receiver.url("/services/collector/event")
        ),
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("delivered", || {
        m.get("hec").is_some_and(|s| s.cursor == total as i64)
    });
    forwarders.stop();
    let mut envelopes = Vec::new();
    for r in receiver.accepted() {
        assert_eq!(r.path, "/services/collector/event");
        assert_eq!(r.header("authorization"), Some("Splunk 00000000-hec-token"));
        for line in r.body.lines() {
            #[derive(serde::Deserialize)]
            struct Hec<'a> {
                time: f64,
                host: String,
                source: String,
                sourcetype: String,
                #[serde(borrow)]
                event: &'a serde_json::value::RawValue,
            }
            let hec: Hec = serde_json::from_str(line).unwrap();
            assert_eq!((hec.host.as_str(), hec.source.as_str()), ("gw01", "ward"));
            assert_eq!(hec.sourcetype, "ward:event");
            let envelope: serde_json::Value = serde_json::from_str(hec.event.get()).unwrap();
            let at =
                chrono::DateTime::parse_from_rfc3339(envelope["at"].as_str().unwrap()).unwrap();
            assert!((hec.time - at.timestamp_micros() as f64 / 1e6).abs() < 1e-3);
            envelopes.push(hec.event.get().to_string());
        }
    }
    check_envelopes(&envelopes, total);
}

#[test]
fn restart_resumes_after_the_last_acknowledged_batch() {
    let mut t = TestStore::new();
    let first = t.session("0190a1b2-0000-7000-8000-000000000901", 2);
    let receiver = HttpReceiver::start(200);
    let yaml = format!(
        "  - {{ name: siem, kind: http, url: '{}' }}",
        receiver.url("/")
    );
    let forwarders =
        ward_forward::start_with(&sinks(&yaml, t.dir.path()), &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("first session", || {
        m.get("siem").is_some_and(|s| s.cursor == first as i64)
    });
    forwarders.stop();
    let second = t.session("0190a1b2-0000-7000-8000-000000000902", 1);
    let forwarders =
        ward_forward::start_with(&sinks(&yaml, t.dir.path()), &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("second session", || {
        m.get("siem")
            .is_some_and(|s| s.cursor == (first + second) as i64)
    });
    forwarders.stop();
    let mut envelopes = Vec::new();
    for r in receiver.accepted() {
        let raw: Vec<&serde_json::value::RawValue> = serde_json::from_str(&r.body).unwrap();
        envelopes.extend(raw.iter().map(|e| e.get().to_string()));
    }
    // Exactly once here: no delivery failed, so nothing was sent twice.
    check_envelopes(&envelopes, first + second);
}

#[test]
fn a_missing_token_stops_start_with_a_clear_error() {
    let t = TestStore::new();
    let config = sinks(
        "  - { name: hec, kind: http, format: splunk_hec, url: 'https://splunk:8088/services/collector', token: 'env:WARD_TEST_SURELY_UNSET_HEC' }",
        t.dir.path(),
    );
    let err = ward_forward::start(&config, &t.path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("hec") && err.contains("WARD_TEST_SURELY_UNSET_HEC"),
        "{err}"
    );
}
