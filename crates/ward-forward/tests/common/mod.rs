//! Shared pieces of the sink tests: a real store with events, sinks from YAML, receivers on
//! 127.0.0.1 (UDP, TCP and TLS syslog, HTTP/1.1), polling with a deadline.

#![allow(dead_code)]

use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use ward_core::AuditEvent;
use ward_core::event::{SessionEnd, SessionId, SessionStart, StatementEvent, StatementOrigin};
use ward_core::forward::ForwardSink;
use ward_forward::Options;
use ward_store::SqliteStore;

pub const DEADLINE: Duration = Duration::from_secs(20);

/// Retries quickly, so tests of a receiver that is down do not wait 30 s.
pub fn fast() -> Options {
    Options {
        poll_interval: Duration::from_millis(20),
        min_backoff: Duration::from_millis(20),
        max_backoff: Duration::from_millis(100),
    }
}

/// Polls `f` until it is true; fails the test with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The sinks of `forward:` YAML (a list), through the real config loader (validation and
/// paths relative to `base`).
pub fn sinks(yaml: &str, base: &Path) -> Vec<ForwardSink> {
    ward_core::Config::from_yaml(&format!("forward:\n{yaml}"), base)
        .unwrap_or_else(|e| panic!("{e}\n{yaml}"))
        .forward
}

pub struct TestStore {
    pub dir: tempfile::TempDir,
    pub path: PathBuf,
    pub store: SqliteStore,
}

impl TestStore {
    pub fn new() -> TestStore {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ward.db");
        let store = SqliteStore::open(&path).unwrap();
        TestStore { dir, path, store }
    }

    /// Writes a whole session: start, `statements` statements (the second one denied), end.
    /// Returns how many events that was.
    pub fn session(&mut self, id: &str, statements: u64) -> usize {
        let mut events = vec![AuditEvent::SessionStart(SessionStart {
            session_id: SessionId(id.into()),
            identity: "ci-nightly".into(),
            groups: vec!["dev".into()],
            target: "orders-db".into(),
            protocol: "postgres".into(),
            client_addr: "127.0.0.1:5000".into(),
            tls_version: "TLSv1.3".into(),
            client_program: Some("psql".into()),
            started_at: ward_core::time::now_micros(),
            credential: None,
        })];
        for seq in 1..=statements {
            events.push(AuditEvent::Statement(StatementEvent {
                session_id: SessionId(id.into()),
                seq,
                origin: StatementOrigin::Simple,
                text: format!("select {seq} -- \"quoted\" é").into(),
                params: None,
                started_at: ward_core::time::now_micros(),
                duration_us: 10,
                rows: Some(1),
                command: Some("SELECT".into()),
                sqlstate: None,
                error: None,
                decision: (seq == 2).then(|| "denied".into()),
                rule: (seq == 2).then(|| "no-selects".into()),
                result_sample: None,
            }));
        }
        events.push(AuditEvent::SessionEnd(SessionEnd {
            session_id: SessionId(id.into()),
            ended_at: ward_core::time::now_micros(),
            reason: "client closed".into(),
        }));
        self.store.write_batch(&events).unwrap();
        events.len()
    }

    pub fn max_id(&self) -> i64 {
        ward_store::ForwardLog::open(&self.path)
            .unwrap()
            .max_event_id()
            .unwrap()
    }
}

/// Checks a list of envelopes (in delivery order): schema, ids 1..=n without gaps or
/// repeats, and every session's hash chain recomputed from the verbatim `event` text.
pub fn check_envelopes(lines: &[String], expected: usize) {
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            v["id"].as_i64().unwrap()
        })
        .collect();
    assert_eq!(
        ids,
        (1..=expected as i64).collect::<Vec<_>>(),
        "every event once, in order"
    );
    #[derive(serde::Deserialize)]
    struct Raw<'a> {
        schema: u32,
        session_id: String,
        seq: i64,
        kind: String,
        at: String,
        hash: String,
        #[serde(borrow)]
        event: &'a serde_json::value::RawValue,
    }
    let mut heads: std::collections::HashMap<String, (i64, [u8; 32])> = Default::default();
    for line in lines {
        let e: Raw = serde_json::from_str(line).unwrap();
        assert_eq!(e.schema, 1);
        assert!(e.at.ends_with('Z') && e.at.len() == 27, "{}", e.at);
        let event: serde_json::Value = serde_json::from_str(e.event.get()).unwrap();
        assert_eq!(
            event["type"], e.kind,
            "the envelope's kind is the event's type"
        );
        let (prev_seq, prev) = heads.get(&e.session_id).copied().unwrap_or_else(|| {
            let g: [u8; 32] = Sha256::new()
                .chain_update(b"ward.session-log.v1\0")
                .chain_update(e.session_id.as_bytes())
                .finalize()
                .into();
            (0, g)
        });
        assert_eq!(e.seq, prev_seq + 1);
        let hash: [u8; 32] = Sha256::new()
            .chain_update(prev)
            .chain_update(e.event.get().as_bytes())
            .finalize()
            .into();
        assert_eq!(hex::encode(hash), e.hash, "hash chain of {}", e.session_id);
        heads.insert(e.session_id.clone(), (e.seq, hash));
    }
}

/// A port nothing listens on right now (for "receiver down" tests).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Collected messages of a receiver.
#[derive(Clone, Default)]
pub struct Received(
    pub Arc<Mutex<Vec<String>>>,
    /// Connections accepted (TLS: handshakes completed).
    pub Arc<std::sync::atomic::AtomicUsize>,
);

impl Received {
    pub fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
    pub fn connections(&self) -> usize {
        self.1.load(Ordering::SeqCst)
    }
    fn connected(&self) {
        self.1.fetch_add(1, Ordering::SeqCst);
    }
    pub fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
    fn push(&self, m: String) {
        self.0.lock().unwrap().push(m);
    }
}

/// A UDP syslog receiver: one message per datagram.
pub fn udp_receiver() -> (SocketAddr, Received) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Received::default();
    let r = received.clone();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 70_000];
        while let Ok(n) = socket.recv(&mut buf) {
            r.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
    });
    (addr, received)
}

/// Reads RFC 6587 octet-counted frames until the stream ends.
fn read_frames(stream: impl Read, received: &Received) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut len = Vec::new();
        match reader.read_until(b' ', &mut len) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Ok(n) = String::from_utf8_lossy(&len[..len.len() - 1]).parse::<usize>() else {
            panic!("bad frame length {:?}", String::from_utf8_lossy(&len));
        };
        let mut msg = vec![0u8; n];
        if reader.read_exact(&mut msg).is_err() {
            return;
        }
        received.push(String::from_utf8(msg).expect("UTF-8 message"));
    }
}

/// A TCP syslog receiver (octet counting) on `listener`.
pub fn tcp_receiver(listener: TcpListener) -> Received {
    let received = Received::default();
    let r = received.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let r = r.clone();
            r.connected();
            std::thread::spawn(move || read_frames(stream, &r));
        }
    });
    received
}

/// A test CA and a server certificate for `localhost` / 127.0.0.1 signed by it (PEM).
pub struct Pki {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

pub fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "forward test CA");
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut server = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    server
        .subject_alt_names
        .push(SanType::IpAddress(std::net::Ipv4Addr::LOCALHOST.into()));
    let cert = server.signed_by(&key, &ca_cert, &ca_key).unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

/// A TLS syslog receiver with `pki`'s server certificate. Also counts failed handshakes.
pub fn tls_receiver(pki: &Pki) -> (SocketAddr, Received, Arc<Mutex<u32>>) {
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(pki.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_slice(pki.key_pem.as_bytes()).unwrap();
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap(),
    );
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Received::default();
    let failed = Arc::new(Mutex::new(0u32));
    let (r, f) = (received.clone(), failed.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let (r, f, config) = (r.clone(), f.clone(), config.clone());
            std::thread::spawn(move || {
                let mut conn = rustls::ServerConnection::new(config).unwrap();
                while conn.is_handshaking() {
                    if conn.complete_io(&mut stream).is_err() {
                        *f.lock().unwrap() += 1;
                        return;
                    }
                }
                r.connected();
                read_frames(rustls::StreamOwned::new(conn, stream), &r);
            });
        }
    });
    (addr, received, failed)
}

/// One request an HTTP receiver got.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// Header names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: String,
    /// The status it was answered with.
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A hand-written HTTP/1.1 receiver (keep-alive aware) answering every request with the
/// current `status`.
pub struct HttpReceiver {
    pub addr: SocketAddr,
    pub status: Arc<AtomicU16>,
    pub requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
}

impl HttpReceiver {
    pub fn start(status: u16) -> HttpReceiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let receiver = HttpReceiver {
            addr,
            status: Arc::new(AtomicU16::new(status)),
            requests: Arc::default(),
            stop: Arc::default(),
        };
        let (status, requests) = (receiver.status.clone(), receiver.requests.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let (status, requests) = (status.clone(), requests.clone());
                std::thread::spawn(move || serve_http(stream, &status, &requests));
            }
        });
        receiver
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Request> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| (200..300).contains(&r.status))
            .cloned()
            .collect()
    }

    pub fn count(&self) -> usize {
        self.requests.lock().unwrap().len()
    }
}

impl Drop for HttpReceiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve_http(stream: TcpStream, status: &AtomicU16, requests: &Mutex<Vec<Request>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or_default().to_string();
        let path = parts.next().unwrap_or_default().to_string();
        let mut headers = Vec::new();
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
                headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .expect("the forwarder sends Content-Length");
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let code = status.load(Ordering::SeqCst);
        requests.lock().unwrap().push(Request {
            method,
            path,
            headers,
            body: String::from_utf8(body).expect("UTF-8 body"),
            status: code,
        });
        let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 2\r\n\r\nok");
        if writer.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}
