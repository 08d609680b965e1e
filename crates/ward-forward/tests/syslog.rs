//! The syslog sink against receivers on 127.0.0.1: RFC 5424 format over UDP, octet-counted
//! TCP with the receiver down at first, and TLS with the receiver's certificate verified.

mod common;

use common::{TestStore, check_envelopes, fast, free_port, sinks, wait_until};
use std::net::TcpListener;

/// Splits `<PRI>1 TIMESTAMP HOSTNAME APP PROCID MSGID SD MSG`.
fn parse(message: &str) -> (u16, Vec<&str>, &str) {
    let rest = message.strip_prefix('<').expect("starts with <PRI>");
    let (pri, rest) = rest.split_once('>').unwrap();
    let mut fields = rest.splitn(8, ' ');
    let header: Vec<&str> = fields.by_ref().take(7).collect();
    let msg = fields.next().expect("a MSG part");
    (pri.parse().unwrap(), header, msg)
}

fn envelopes(messages: &[String]) -> Vec<String> {
    messages.iter().map(|m| parse(m).2.to_string()).collect()
}

#[test]
fn udp_messages_are_rfc5424_with_severity_from_the_decision() {
    let mut t = TestStore::new();
    let total = t.session("0190a1b2-0000-7000-8000-000000000401", 3);
    let (addr, received) = common::udp_receiver();
    let config = sinks(
        &format!(
            "  - {{ name: udp, kind: syslog, transport: udp, address: '{addr}', hostname: gw01 }}"
        ),
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    wait_until("every datagram", || received.len() >= total);
    forwarders.stop();
    let messages = received.all();
    check_envelopes(&envelopes(&messages), total);
    for (i, m) in messages.iter().enumerate() {
        let (pri, header, msg) = parse(m);
        assert_eq!(header[0], "1", "VERSION");
        assert!(
            header[1].ends_with('Z') && header[1].contains('T'),
            "TIMESTAMP {}",
            header[1]
        );
        assert_eq!(&header[2..], ["gw01", "ward", "-", header[5], "-"]);
        let v: serde_json::Value = serde_json::from_str(msg).unwrap();
        assert_eq!(header[5], v["kind"], "MSGID is the kind");
        assert_eq!(header[1], v["at"], "TIMESTAMP is the event's time");
        // local0 (16): info 134, the denied statement (the second) warning 132.
        let expected = if i == 2 { 16 * 8 + 4 } else { 16 * 8 + 6 };
        assert_eq!(pri, expected, "{m}");
    }
}

#[test]
fn tcp_receiver_down_then_up_gets_every_event_once() {
    let mut t = TestStore::new();
    let mut total = t.session("0190a1b2-0000-7000-8000-000000000501", 4);
    let port = free_port();
    let config = sinks(
        &format!(
            "  - {{ name: tcp, kind: syslog, transport: tcp, address: '127.0.0.1:{port}', facility: auth, batch: 2 }}"
        ),
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    // Nothing listens: connection refused, retried; the events wait in the log.
    wait_until("failed attempts", || {
        m.get("tcp").is_some_and(|s| s.failures >= 3)
    });
    total += t.session("0190a1b2-0000-7000-8000-000000000502", 1);
    wait_until("queue depth covers the whole log", || {
        m.get("tcp").is_some_and(|s| s.queue_depth == total as u64)
    });
    let s = m.get("tcp").unwrap();
    assert_eq!((s.delivered, s.cursor), (0, 0));
    assert!(
        ward_forward::metrics::Metrics::render(&m).contains(&format!(
            "ward_forward_queue_depth{{sink=\"tcp\"}} {total}\n"
        ))
    );

    let received = common::tcp_receiver(TcpListener::bind(("127.0.0.1", port)).unwrap());
    wait_until("every event after the receiver came up", || {
        received.len() >= total
    });
    wait_until("caught up", || {
        m.get("tcp")
            .is_some_and(|s| s.queue_depth == 0 && s.lag_micros == 0)
    });
    // The connection is kept and reused for later batches.
    total += t.session("0190a1b2-0000-7000-8000-000000000503", 2);
    wait_until("the later session", || received.len() >= total);
    forwarders.stop();
    assert_eq!(received.connections(), 1, "one connection for every batch");
    let messages = received.all();
    check_envelopes(&envelopes(&messages), total);
    // auth (4): info = 38.
    assert_eq!(parse(&messages[0]).0, 4 * 8 + 6);
    let s = m.get("tcp").unwrap();
    assert_eq!(s.delivered, total as u64);
    assert!(s.last_error_micros > 0 && s.last_success_micros >= s.last_error_micros);
}

#[test]
fn tls_delivers_to_a_verified_receiver_and_refuses_a_wrong_name() {
    let mut t = TestStore::new();
    let total = t.session("0190a1b2-0000-7000-8000-000000000601", 2);
    let pki = common::pki();
    let ca = t.dir.path().join("ca.pem");
    std::fs::write(&ca, &pki.ca_pem).unwrap();
    let (addr, received, failed) = common::tls_receiver(&pki);
    let config = sinks(
        &format!(
            "  - {{ name: tls, kind: syslog, transport: tls, address: 'localhost:{}', ca: ca.pem }}\n  - {{ name: wrong, kind: syslog, transport: tls, address: '127.0.0.1:{}', ca: ca.pem, server_name: siem.example.com }}",
            addr.port(),
            addr.port()
        ),
        t.dir.path(),
    );
    let forwarders = ward_forward::start_with(&config, &t.path, fast()).unwrap();
    let m = forwarders.metrics();
    wait_until("every event over TLS", || received.len() >= total);
    // A later batch reuses the connection (the receiver's session tickets do not look like
    // a closed connection).
    wait_until("the first batch acknowledged", || {
        m.get("tls").is_some_and(|s| s.cursor == total as i64)
    });
    let total = total + t.session("0190a1b2-0000-7000-8000-000000000602", 1);
    wait_until("the later session over TLS", || received.len() >= total);
    assert_eq!(
        received.connections(),
        1,
        "one TLS connection for both batches"
    );
    wait_until("the wrong name refused", || {
        m.get("wrong").is_some_and(|s| s.failures >= 2) && *failed.lock().unwrap() >= 1
    });
    wait_until("the wrong sink's queue covers the log", || {
        m.get("wrong")
            .is_some_and(|s| s.queue_depth == total as u64)
    });
    forwarders.stop();
    check_envelopes(&envelopes(&received.all()), total);
    assert_eq!(m.get("wrong").unwrap().delivered, 0);
    assert_eq!(m.get("tls").unwrap().queue_depth, 0);
}
