//! A raw PostgreSQL wire client for the security and fault tests: for what real clients
//! cannot be made to send (bad lengths, unknown message types, GSSENCRequest, garbage instead
//! of a TLS handshake) and for seeing every byte ward sends back.
//!
//! Every read has a timeout, so a gateway that hangs fails the test instead of hanging it.
//! Use it from a test file with `mod pgwire;` (next to `mod harness;`).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

pub const SSL_REQUEST: i32 = 80877103;
pub const GSSENC_REQUEST: i32 = 80877104;
pub const PROTOCOL_3: i32 = 196608;

/// How long one read may wait before the test fails (or, where the test expects silence,
/// before it concludes that nothing came).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// One backend message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub tag: u8,
    pub body: Vec<u8>,
}

impl Message {
    /// The fields of an ErrorResponse or NoticeResponse, by field code (`C`, `M`, `S`, …).
    pub fn fields(&self) -> BTreeMap<char, String> {
        let mut fields = BTreeMap::new();
        let mut rest = &self.body[..];
        while let Some((&code, tail)) = rest.split_first() {
            if code == 0 {
                break;
            }
            let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
            fields.insert(
                code as char,
                String::from_utf8_lossy(&tail[..end]).into_owned(),
            );
            rest = tail.get(end + 1..).unwrap_or(&[]);
        }
        fields
    }

    /// SQLSTATE of an ErrorResponse (empty if absent).
    pub fn sqlstate(&self) -> String {
        self.fields().get(&'C').cloned().unwrap_or_default()
    }

    /// Message text of an ErrorResponse (empty if absent).
    pub fn text(&self) -> String {
        self.fields().get(&'M').cloned().unwrap_or_default()
    }

    pub fn is_error(&self) -> bool {
        self.tag == b'E'
    }
}

impl std::fmt::Display for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if matches!(self.tag, b'E' | b'N') {
            write!(f, "{} {:?}", self.tag as char, self.fields())
        } else {
            write!(
                f,
                "{} ({} bytes) {:?}",
                self.tag as char,
                self.body.len(),
                String::from_utf8_lossy(&self.body)
            )
        }
    }
}

/// How a connection ended from the client's point of view.
#[derive(Debug, PartialEq, Eq)]
pub enum Ending {
    /// Orderly close (EOF, or TLS close_notify then EOF).
    Eof,
    /// Closed abruptly (reset, or TCP EOF without TLS close_notify).
    Reset(String),
    /// Nothing more arrived within the timeout and the connection stayed open.
    TimedOut,
}

impl Ending {
    /// Whether ward closed the connection (either way).
    pub fn closed(&self) -> bool {
        !matches!(self, Ending::TimedOut)
    }
}

fn closed_kind(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::UnexpectedEof
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
    )
}

/// An 8-byte request packet (SSLRequest, GSSENCRequest): length 8 and the code.
pub fn request_packet(code: i32) -> Vec<u8> {
    let mut p = 8i32.to_be_bytes().to_vec();
    p.extend_from_slice(&code.to_be_bytes());
    p
}

/// A protocol 3.0 StartupMessage with these parameters.
pub fn startup_packet(params: &[(&str, &str)]) -> Vec<u8> {
    let mut p = vec![0, 0, 0, 0];
    p.extend_from_slice(&PROTOCOL_3.to_be_bytes());
    for (k, v) in params {
        p.extend_from_slice(k.as_bytes());
        p.push(0);
        p.extend_from_slice(v.as_bytes());
        p.push(0);
    }
    p.push(0);
    let len = p.len() as i32;
    p[..4].copy_from_slice(&len.to_be_bytes());
    p
}

/// A frontend message: tag, length, body.
pub fn message(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// A simple Query message.
pub fn query(sql: &str) -> Vec<u8> {
    let mut body = sql.as_bytes().to_vec();
    body.push(0);
    message(b'Q', &body)
}

/// A PasswordMessage.
pub fn password(pw: &str) -> Vec<u8> {
    let mut body = pw.as_bytes().to_vec();
    body.push(0);
    message(b'p', &body)
}

/// Terminate.
pub fn terminate() -> Vec<u8> {
    message(b'X', &[])
}

/// A plain TCP connection to `addr`.
pub async fn connect(addr: SocketAddr) -> TcpStream {
    let tcp = tokio::time::timeout(IO_TIMEOUT, TcpStream::connect(addr))
        .await
        .unwrap_or_else(|_| panic!("connecting to {addr} timed out"))
        .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    tcp.set_nodelay(true).expect("TCP_NODELAY");
    tcp
}

/// Reads exactly one byte (e.g. the answer to SSLRequest), failing the test on EOF or timeout.
pub async fn read_byte<S: AsyncRead + Unpin>(s: &mut S) -> u8 {
    let mut b = [0u8; 1];
    tokio::time::timeout(IO_TIMEOUT, s.read_exact(&mut b))
        .await
        .expect("no answer byte within the timeout")
        .expect("reading the answer byte");
    b[0]
}

/// Sends SSLRequest on `tcp`, expects `S` and completes a TLS handshake that accepts ward's
/// (self-signed) certificate.
pub async fn start_tls(mut tcp: TcpStream) -> TlsStream<TcpStream> {
    send(&mut tcp, &request_packet(SSL_REQUEST)).await;
    let answer = read_byte(&mut tcp).await;
    assert_eq!(answer, b'S', "ward's answer to SSLRequest");
    handshake(tcp).await
}

/// A TLS handshake on `tcp` (after the `S`), accepting any server certificate.
pub async fn handshake(tcp: TcpStream) -> TlsStream<TcpStream> {
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(crate::harness::insecure_client_config()));
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    tokio::time::timeout(IO_TIMEOUT, connector.connect(name, tcp))
        .await
        .expect("TLS handshake timed out")
        .expect("TLS handshake with ward")
}

/// A TLS connection to ward, ready for a StartupMessage.
pub async fn tls_connect(addr: SocketAddr) -> TlsStream<TcpStream> {
    start_tls(connect(addr).await).await
}

/// Writes and flushes `bytes`, failing the test on error.
pub async fn send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) {
    try_send(s, bytes)
        .await
        .unwrap_or_else(|e| panic!("sending {} bytes: {e}", bytes.len()));
}

/// Writes and flushes `bytes`.
pub async fn try_send<S: AsyncWrite + Unpin>(s: &mut S, bytes: &[u8]) -> io::Result<()> {
    tokio::time::timeout(IO_TIMEOUT, async {
        s.write_all(bytes).await?;
        s.flush().await
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "write timed out"))?
}

/// Reads one backend message. `Ok(None)`: the connection ended cleanly before a message
/// started. Errors are I/O errors, timeouts (`TimedOut`) and bad lengths (`InvalidData`).
pub async fn read_message<S: AsyncRead + Unpin>(
    s: &mut S,
    timeout: Duration,
) -> io::Result<Option<Message>> {
    tokio::time::timeout(timeout, async {
        let mut tag = [0u8; 1];
        if s.read(&mut tag).await? == 0 {
            return Ok(None);
        }
        let mut len = [0u8; 4];
        s.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if !(4..=1 << 20).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("backend message {:?} with length {len}", tag[0] as char),
            ));
        }
        let mut body = vec![0u8; len - 4];
        s.read_exact(&mut body).await?;
        Ok(Some(Message { tag: tag[0], body }))
    })
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "no message within the timeout"))?
}

/// Reads messages until the connection ends or nothing arrives for `timeout`.
pub async fn read_until_end<S: AsyncRead + Unpin>(
    s: &mut S,
    timeout: Duration,
) -> (Vec<Message>, Ending) {
    let mut messages = Vec::new();
    loop {
        match read_message(s, timeout).await {
            Ok(Some(m)) => messages.push(m),
            Ok(None) => return (messages, Ending::Eof),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => return (messages, Ending::TimedOut),
            Err(e) if closed_kind(&e) => return (messages, Ending::Reset(e.to_string())),
            Err(e) => panic!("reading from ward: {e} (after {messages:?})"),
        }
    }
}

/// Reads raw bytes until the connection ends or nothing arrives for `timeout` (for streams
/// that are not PostgreSQL messages, e.g. after a failed TLS handshake).
pub async fn drain_bytes<S: AsyncRead + Unpin>(s: &mut S, timeout: Duration) -> (usize, Ending) {
    let mut total = 0;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(timeout, s.read(&mut buf)).await {
            Err(_) => return (total, Ending::TimedOut),
            Ok(Ok(0)) => return (total, Ending::Eof),
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => return (total, Ending::Reset(e.to_string())),
        }
    }
}

/// Sends a StartupMessage for `identity`/`target`, answers the password request with
/// `token` and returns every message up to ReadyForQuery or the end of the connection.
pub async fn login<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    identity: &str,
    target: &str,
    token: &str,
) -> (Vec<Message>, Option<Ending>) {
    send(
        s,
        &startup_packet(&[
            ("user", identity),
            ("database", target),
            ("application_name", "ward-raw-test"),
        ]),
    )
    .await;
    let mut messages = Vec::new();
    loop {
        match read_message(s, IO_TIMEOUT).await {
            Ok(Some(m)) => {
                let (tag, body) = (m.tag, m.body.clone());
                messages.push(m);
                if tag == b'R' && body == 3i32.to_be_bytes() {
                    send(s, &password(token)).await;
                } else if tag == b'Z' {
                    return (messages, None);
                }
            }
            Ok(None) => return (messages, Some(Ending::Eof)),
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {
                return (messages, Some(Ending::TimedOut));
            }
            Err(e) if closed_kind(&e) => return (messages, Some(Ending::Reset(e.to_string()))),
            Err(e) => panic!("reading from ward during login: {e} (after {messages:?})"),
        }
    }
}

/// A TLS connection to ward, logged in as `identity` on `target` and ready for queries.
pub async fn logged_in(
    addr: SocketAddr,
    identity: &str,
    target: &str,
    token: &str,
) -> TlsStream<TcpStream> {
    let mut s = tls_connect(addr).await;
    let (messages, ending) = login(&mut s, identity, target, token).await;
    assert!(
        ending.is_none()
            && messages
                .iter()
                .any(|m| m.tag == b'R' && m.body == [0, 0, 0, 0]),
        "raw login as {identity} on {target} failed: {ending:?}\n{}",
        show(&messages)
    );
    s
}

/// Runs a simple query and returns the messages up to ReadyForQuery.
pub async fn simple_query<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S, sql: &str) -> Vec<Message> {
    send(s, &query(sql)).await;
    let mut messages = Vec::new();
    loop {
        let m = read_message(s, IO_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("query {sql:?}: {e} (after {})", show(&messages)))
            .unwrap_or_else(|| {
                panic!(
                    "query {sql:?}: connection closed (after {})",
                    show(&messages)
                )
            });
        let done = m.tag == b'Z';
        messages.push(m);
        if done {
            return messages;
        }
    }
}

/// The values of the first column of the DataRows in `messages`, as text.
pub fn first_column(messages: &[Message]) -> Vec<Option<String>> {
    messages
        .iter()
        .filter(|m| m.tag == b'D')
        .map(|m| {
            let body = &m.body;
            let len = i32::from_be_bytes([body[2], body[3], body[4], body[5]]);
            (len >= 0).then(|| String::from_utf8_lossy(&body[6..6 + len as usize]).into_owned())
        })
        .collect()
}

/// Messages one per line, for assertion messages.
pub fn show(messages: &[Message]) -> String {
    messages
        .iter()
        .map(|m| m.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Random bytes.
pub fn random_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut v = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut v);
    v
}
