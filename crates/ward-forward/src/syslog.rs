//! RFC 5424 syslog over UDP (RFC 5426), TCP (RFC 6587 octet counting) or TLS (RFC 5425).
//!
//! Each event is one message:
//! `<PRI>1 TIMESTAMP HOSTNAME ward - KIND - ENVELOPE`, where PRI is `facility * 8 +
//! severity`, TIMESTAMP the event's time (RFC 3339, microseconds), KIND the event kind as
//! MSGID and ENVELOPE the JSON of docs/events.md. Severity: `warning` for refused statements
//! and commands (denied, review denied or timed out), denied approvals and refused logins
//! (`auth_refused`), `notice` for containment (control) events, `info` otherwise.
//!
//! TCP and TLS keep one connection open across batches and reconnect after any error, or
//! when the receiver closed it (checked before each batch). Syslog has no acknowledgement:
//! a batch counts as delivered once it is written to the connection. UDP has no delivery
//! guarantee at all; a message too large for a datagram is sent without its `event` (see
//! [`crate::envelope::truncated_envelope`]).

use crate::{DeliveryError, Item, Sink, envelope};
use serde::Deserialize;
use std::io::Write;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::Duration;
use ward_core::forward::{Facility, ForwardSink, SyslogTransport, split_host_port};

/// Largest UDP message sent (leaves room under the 65,507-byte IPv4 datagram limit).
pub const MAX_UDP_MESSAGE: usize = 65_000;

/// Severity numbers (RFC 5424).
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// The fields of an event that decide its severity.
#[derive(Deserialize)]
struct Probe {
    decision: Option<String>,
    state: Option<String>,
}

/// The severity of an event of `kind` with stored JSON `body`.
pub fn severity(kind: &str, body: &str) -> u8 {
    match kind {
        "control" => NOTICE,
        // Someone tried to log in with a bad, expired or forged credential.
        "auth_refused" => WARNING,
        "statement" | "command" | "approval" => match serde_json::from_str::<Probe>(body) {
            Ok(p) => {
                let refused = matches!(
                    p.decision.as_deref(),
                    Some("denied" | "review_denied" | "review_timed_out")
                ) || (kind == "approval" && p.state.as_deref() == Some("denied"));
                if refused { WARNING } else { INFO }
            }
            Err(_) => INFO,
        },
        _ => INFO,
    }
}

/// One RFC 5424 message for `item`, its envelope replaced by `body`.
fn message(facility: Facility, hostname: &str, item: &Item<'_>, body: &str) -> String {
    let pri = u16::from(facility.0) * 8 + u16::from(severity(&item.row.kind, &item.row.body));
    format!(
        "<{pri}>1 {} {hostname} ward - {} - {body}",
        envelope::format_at(item.row.at),
        msgid(&item.row.kind)
    )
}

/// A header field: printable US-ASCII without spaces, at most `max` characters, `-` if empty.
fn header_field(text: &str, max: usize) -> String {
    let clean: String = text
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(max)
        .collect();
    if clean.is_empty() { "-".into() } else { clean }
}

fn msgid(kind: &str) -> String {
    header_field(kind, 32)
}

enum Connection {
    Tcp(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Connection {
    fn socket(&self) -> &TcpStream {
        match self {
            Connection::Tcp(s) => s,
            Connection::Tls(s) => s.get_ref(),
        }
    }

    /// Whether the receiver closed the connection (or broke it) since the last batch. A
    /// plain TCP receiver never sends anything, so any data counts as closed too; over TLS,
    /// records the receiver sends (session tickets) are processed, and only a close_notify,
    /// an EOF or an error count.
    fn looks_closed(&mut self) -> bool {
        if self.socket().set_nonblocking(true).is_err() {
            return true;
        }
        let closed = match self {
            Connection::Tcp(socket) => {
                let mut byte = [0u8; 1];
                match socket.peek(&mut byte) {
                    Ok(_) => true,
                    Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
                }
            }
            Connection::Tls(stream) => loop {
                match stream.conn.read_tls(&mut stream.sock) {
                    Ok(0) => break true,
                    Ok(_) => match stream.conn.process_new_packets() {
                        Ok(state) if state.peer_has_closed() => break true,
                        Ok(_) => continue,
                        Err(_) => break true,
                    },
                    Err(e) => break e.kind() != std::io::ErrorKind::WouldBlock,
                }
            },
        };
        self.socket().set_nonblocking(false).is_err() || closed
    }

    fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Connection::Tcp(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
            Connection::Tls(s) => {
                s.write_all(bytes)?;
                s.flush()
            }
        }
    }
}

/// Sends envelopes as syslog messages.
pub struct SyslogSink {
    address: String,
    transport: SyslogTransport,
    facility: Facility,
    hostname: String,
    timeout: Duration,
    tls: Option<(
        Arc<rustls::ClientConfig>,
        rustls::pki_types::ServerName<'static>,
    )>,
    udp: Option<UdpSocket>,
    stream: Option<Connection>,
}

impl std::fmt::Debug for SyslogSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyslogSink")
            .field("address", &self.address)
            .field("transport", &self.transport)
            .finish()
    }
}

impl SyslogSink {
    pub fn new(config: &ForwardSink) -> Result<SyslogSink, String> {
        let address = config
            .address
            .clone()
            .ok_or_else(|| "a syslog sink needs `address`".to_string())?;
        let (host, _) = split_host_port(&address)
            .ok_or_else(|| format!("address {address:?} must be host:port"))?;
        let transport = config.transport.unwrap_or_default();
        let tls = if transport == SyslogTransport::Tls {
            let client = crate::tls::client_config(config.ca.as_deref())?;
            let name = config
                .server_name
                .clone()
                .unwrap_or_else(|| host.to_string());
            let name = rustls::pki_types::ServerName::try_from(name.clone())
                .map_err(|_| format!("{name:?} is not a valid TLS server name"))?;
            Some((client, name))
        } else {
            None
        };
        let hostname = config.hostname.clone().unwrap_or_else(crate::hostname);
        Ok(SyslogSink {
            address,
            transport,
            facility: config.facility.unwrap_or_default(),
            hostname: header_field(&hostname, 255),
            timeout: config.timeout(),
            tls,
            udp: None,
            stream: None,
        })
    }

    fn resolve(&self) -> Result<Vec<SocketAddr>, DeliveryError> {
        let addrs: Vec<SocketAddr> = self.address.to_socket_addrs()?.collect();
        if addrs.is_empty() {
            return Err(DeliveryError::Transport(format!(
                "{} resolves to no address",
                self.address
            )));
        }
        Ok(addrs)
    }

    fn connect(&self) -> Result<Connection, DeliveryError> {
        let mut last = None;
        let mut socket = None;
        for addr in self.resolve()? {
            match TcpStream::connect_timeout(&addr, self.timeout) {
                Ok(s) => {
                    socket = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let socket = match socket {
            Some(s) => s,
            None => {
                return Err(last
                    .map(DeliveryError::Io)
                    .unwrap_or_else(|| DeliveryError::Transport("no address".into())));
            }
        };
        socket.set_write_timeout(Some(self.timeout))?;
        socket.set_read_timeout(Some(self.timeout))?;
        let _ = socket.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Ok(Connection::Tcp(socket));
        };
        let mut conn = rustls::ClientConnection::new(config.clone(), name.clone())
            .map_err(|e| DeliveryError::Tls(e.to_string()))?;
        let mut socket = socket;
        // Finish the handshake now, so a certificate problem is reported as such.
        while conn.is_handshaking() {
            conn.complete_io(&mut socket).map_err(|e| {
                if e.kind() == std::io::ErrorKind::InvalidData {
                    DeliveryError::Tls(e.to_string())
                } else {
                    DeliveryError::Io(e)
                }
            })?;
        }
        Ok(Connection::Tls(Box::new(rustls::StreamOwned::new(
            conn, socket,
        ))))
    }

    fn send_udp(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        if self.udp.is_none() {
            let addr = self.resolve()?[0];
            let local: SocketAddr = if addr.is_ipv4() {
                "0.0.0.0:0".parse().expect("literal")
            } else {
                "[::]:0".parse().expect("literal")
            };
            let socket = UdpSocket::bind(local)?;
            socket.connect(addr)?;
            self.udp = Some(socket);
        }
        let socket = self
            .udp
            .as_ref()
            .ok_or(std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        for item in items {
            let mut text = message(self.facility, &self.hostname, item, &item.json);
            if text.len() > MAX_UDP_MESSAGE {
                let short = envelope::truncated_envelope(item.row);
                text = message(self.facility, &self.hostname, item, &short);
            }
            if let Err(e) = socket.send(text.as_bytes()) {
                self.udp = None;
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn send_stream(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        if self.stream.as_mut().is_some_and(Connection::looks_closed) {
            self.stream = None;
        }
        if self.stream.is_none() {
            self.stream = Some(self.connect()?);
        }
        let mut frames = Vec::new();
        for item in items {
            let text = message(self.facility, &self.hostname, item, &item.json);
            frames.extend_from_slice(format!("{} ", text.len()).as_bytes());
            frames.extend_from_slice(text.as_bytes());
        }
        let stream = self
            .stream
            .as_mut()
            .ok_or(std::io::Error::from(std::io::ErrorKind::NotConnected))?;
        if let Err(e) = stream.write_all(&frames) {
            self.stream = None;
            return Err(e.into());
        }
        Ok(())
    }
}

impl Sink for SyslogSink {
    fn deliver(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        match self.transport {
            SyslogTransport::Udp => self.send_udp(items),
            SyslogTransport::Tcp | SyslogTransport::Tls => self.send_stream(items),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severity_follows_the_decision() {
        assert_eq!(severity("statement", r#"{"decision":"denied"}"#), WARNING);
        assert_eq!(
            severity("statement", r#"{"decision":"review_timed_out"}"#),
            WARNING
        );
        assert_eq!(severity("statement", r#"{"decision":"approved"}"#), INFO);
        assert_eq!(severity("statement", r#"{"decision":null}"#), INFO);
        assert_eq!(severity("approval", r#"{"state":"denied"}"#), WARNING);
        assert_eq!(severity("control", "{}"), NOTICE);
        assert_eq!(severity("auth_refused", "{}"), WARNING);
        assert_eq!(severity("session_start", "garbage"), INFO);
    }

    #[test]
    fn header_fields_are_clean() {
        assert_eq!(header_field("web 01\n", 255), "web01");
        assert_eq!(header_field("", 255), "-");
        assert_eq!(header_field(&"x".repeat(40), 32).len(), 32);
    }
}
