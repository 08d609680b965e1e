//! Connecting to a PostgreSQL target and logging in with ward's stored credential.
//!
//! The client never takes part: ward speaks the startup protocol itself (optionally over
//! TLS), answers cleartext, MD5 or SCRAM-SHA-256 challenges with the target's credential,
//! and keeps the ParameterStatus messages and BackendKeyData the target sends, so the
//! client can be told the server's parameters and cancel requests can be mapped.

use crate::codec::{put_cstr, put_message, read_cstr, read_i32};
use crate::messages::parse_error_fields;
use crate::stream::MaybeTls;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use ward_core::config::{PostgresTarget, UpstreamTlsMode};

/// Largest message accepted from a target during login (its startup messages are small).
const MAX_STARTUP_MESSAGE: usize = 1 << 20;

/// Why ward could not open a session on a target. Messages are for the operator's log;
/// clients get a shorter message that never includes the credential.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("timed out after {0:?} connecting and logging in")]
    Timeout(Duration),
    #[error("the target does not accept TLS, but its tls.mode requires it")]
    TlsRefused,
    #[error("TLS handshake with the target failed: {0}")]
    Tls(std::io::Error),
    #[error("the target rejected the login (SQLSTATE {code}): {message}")]
    Rejected { code: String, message: String },
    #[error("the target asked for a password but the target has no credential.password")]
    NoPassword,
    #[error("the target asked for an unsupported authentication method ({0})")]
    UnsupportedAuth(String),
    #[error("protocol error while logging in to the target: {0}")]
    Protocol(String),
    #[error("i/o error while logging in to the target: {0}")]
    Io(#[from] std::io::Error),
}

impl UpstreamError {
    /// True when the target itself refused (bad stored credential, missing database), as
    /// opposed to being unreachable.
    pub fn is_rejection(&self) -> bool {
        matches!(
            self,
            UpstreamError::Rejected { .. } | UpstreamError::NoPassword
        )
    }
}

/// A logged-in connection to a target, ready for queries.
pub struct Upstream {
    pub stream: MaybeTls,
    /// ParameterStatus messages, raw, to replay to the client.
    pub parameter_status: Vec<u8>,
    /// The target's BackendKeyData: process id and secret key.
    pub backend_key: Option<(i32, i32)>,
}

/// How to reach one target: its address and a prebuilt TLS configuration.
#[derive(Clone)]
pub struct UpstreamConnector {
    pub target: Arc<PostgresTarget>,
    tls: Option<(Arc<rustls::ClientConfig>, ServerName<'static>)>,
}

impl UpstreamConnector {
    /// Prepares the connector, loading CA certificates now so a bad path fails at start.
    pub fn new(target: Arc<PostgresTarget>) -> Result<Self, String> {
        let tls = match target.tls.mode {
            UpstreamTlsMode::Disable => None,
            mode => {
                let config = client_tls_config(&target, mode)?;
                let host = target
                    .tls
                    .server_name
                    .clone()
                    .unwrap_or_else(|| host_of(&target.address).to_string());
                let name = ServerName::try_from(host.clone()).map_err(|_| {
                    format!(
                        "targets.{}: {host:?} is not a valid TLS server name",
                        target.name
                    )
                })?;
                Some((Arc::new(config), name))
            }
        };
        Ok(UpstreamConnector { target, tls })
    }

    /// Opens a transport (TCP, then TLS when configured) without logging in.
    pub async fn transport(&self) -> Result<MaybeTls, UpstreamError> {
        let tcp = TcpStream::connect(&self.target.address)
            .await
            .map_err(|source| UpstreamError::Connect {
                address: self.target.address.clone(),
                source,
            })?;
        let _ = tcp.set_nodelay(true);
        let Some((config, name)) = &self.tls else {
            return Ok(MaybeTls::Plain(tcp));
        };
        let mut tcp = tcp;
        let mut ssl_request = Vec::with_capacity(8);
        ssl_request.extend_from_slice(&8i32.to_be_bytes());
        ssl_request.extend_from_slice(&80877103i32.to_be_bytes());
        tcp.write_all(&ssl_request).await?;
        let mut answer = [0u8; 1];
        tcp.read_exact(&mut answer).await?;
        if answer[0] != b'S' {
            return Err(UpstreamError::TlsRefused);
        }
        let connector = tokio_rustls::TlsConnector::from(config.clone());
        let tls = connector
            .connect(name.clone(), tcp)
            .await
            .map_err(UpstreamError::Tls)?;
        Ok(MaybeTls::ClientTls(Box::new(tls)))
    }

    /// Connects and logs in, forwarding the client's session parameters.
    pub async fn connect(
        &self,
        client_params: &[(String, String)],
        timeout: Duration,
    ) -> Result<Upstream, UpstreamError> {
        tokio::time::timeout(timeout, self.connect_inner(client_params))
            .await
            .map_err(|_| UpstreamError::Timeout(timeout))?
    }

    async fn connect_inner(
        &self,
        client_params: &[(String, String)],
    ) -> Result<Upstream, UpstreamError> {
        let mut stream = self.transport().await?;
        let target = &self.target;
        let mut startup = Vec::with_capacity(128);
        startup.extend_from_slice(&[0, 0, 0, 0]);
        startup.extend_from_slice(&196608i32.to_be_bytes());
        put_cstr(&mut startup, "user");
        put_cstr(&mut startup, &target.user);
        put_cstr(&mut startup, "database");
        put_cstr(&mut startup, &target.database);
        for (key, value) in client_params {
            put_cstr(&mut startup, key);
            put_cstr(&mut startup, value);
        }
        startup.push(0);
        let len = startup.len() as i32;
        startup[..4].copy_from_slice(&len.to_be_bytes());
        stream.write_all(&startup).await?;

        let mut scram: Option<ScramSha256> = None;
        let mut parameter_status = Vec::new();
        let mut backend_key = None;
        loop {
            let (tag, body) = read_message(&mut stream).await?;
            match tag {
                b'R' => {
                    let (code, rest) =
                        read_i32(&body).ok_or_else(|| protocol("short authentication message"))?;
                    match code {
                        0 => {}
                        3 => {
                            let password = self.password()?;
                            let mut out = Vec::new();
                            put_message(&mut out, b'p', |b| put_cstr(b, password));
                            stream.write_all(&out).await?;
                        }
                        5 => {
                            let salt: [u8; 4] = rest
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| protocol("short MD5 salt"))?;
                            let hashed = postgres_protocol::authentication::md5_hash(
                                target.user.as_bytes(),
                                self.password()?.as_bytes(),
                                salt,
                            );
                            let mut out = Vec::new();
                            put_message(&mut out, b'p', |b| put_cstr(b, &hashed));
                            stream.write_all(&out).await?;
                        }
                        10 => {
                            let mut offered = Vec::new();
                            let mut list = rest;
                            while let Some((name, tail)) = read_cstr(list) {
                                if name.is_empty() {
                                    break;
                                }
                                offered.push(String::from_utf8_lossy(name).into_owned());
                                list = tail;
                            }
                            if !offered.iter().any(|m| m == SCRAM_SHA_256) {
                                return Err(UpstreamError::UnsupportedAuth(format!(
                                    "SASL {}",
                                    offered.join(",")
                                )));
                            }
                            let client = ScramSha256::new(
                                self.password()?.as_bytes(),
                                ChannelBinding::unsupported(),
                            );
                            let mut out = Vec::new();
                            put_message(&mut out, b'p', |b| {
                                put_cstr(b, SCRAM_SHA_256);
                                let msg = client.message();
                                b.extend_from_slice(&(msg.len() as i32).to_be_bytes());
                                b.extend_from_slice(msg);
                            });
                            stream.write_all(&out).await?;
                            scram = Some(client);
                        }
                        11 => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| protocol("SASL continue without SASL start"))?;
                            client
                                .update(rest)
                                .map_err(|e| protocol(&format!("SCRAM: {e}")))?;
                            let mut out = Vec::new();
                            put_message(&mut out, b'p', |b| b.extend_from_slice(client.message()));
                            stream.write_all(&out).await?;
                        }
                        12 => {
                            let client = scram
                                .as_mut()
                                .ok_or_else(|| protocol("SASL final without SASL start"))?;
                            client.finish(rest).map_err(|e| {
                                protocol(&format!("SCRAM server signature check failed: {e}"))
                            })?;
                        }
                        other => {
                            return Err(UpstreamError::UnsupportedAuth(format!(
                                "authentication request {other}"
                            )));
                        }
                    }
                }
                b'S' => put_message(&mut parameter_status, b'S', |b| b.extend_from_slice(&body)),
                b'K' => {
                    let (pid, rest) =
                        read_i32(&body).ok_or_else(|| protocol("short BackendKeyData"))?;
                    let (secret, _) =
                        read_i32(rest).ok_or_else(|| protocol("short BackendKeyData"))?;
                    backend_key = Some((pid, secret));
                }
                b'N' => {}
                b'E' => {
                    let fields = parse_error_fields(&body);
                    return Err(UpstreamError::Rejected {
                        code: fields
                            .code
                            .map(|c| String::from_utf8_lossy(c).into_owned())
                            .unwrap_or_default(),
                        message: fields
                            .message
                            .map(|m| String::from_utf8_lossy(m).into_owned())
                            .unwrap_or_default(),
                    });
                }
                b'Z' => {
                    return Ok(Upstream {
                        stream,
                        parameter_status,
                        backend_key,
                    });
                }
                b'v' => {}
                other => {
                    return Err(protocol(&format!(
                        "unexpected message {:?} during login",
                        other as char
                    )));
                }
            }
        }
    }

    fn password(&self) -> Result<&str, UpstreamError> {
        self.target
            .password
            .as_ref()
            .map(|s| s.expose())
            .ok_or(UpstreamError::NoPassword)
    }

    /// Sends a CancelRequest for the target process `pid`/`secret` over a fresh connection.
    pub async fn cancel(&self, pid: i32, secret: i32) -> Result<(), UpstreamError> {
        let mut stream = self.transport().await?;
        let mut msg = Vec::with_capacity(16);
        msg.extend_from_slice(&16i32.to_be_bytes());
        msg.extend_from_slice(&80877102i32.to_be_bytes());
        msg.extend_from_slice(&pid.to_be_bytes());
        msg.extend_from_slice(&secret.to_be_bytes());
        stream.write_all(&msg).await?;
        stream.flush().await?;
        // The server closes the connection without answering; wait for that briefly so the
        // request is read before we drop the socket.
        let mut sink = [0u8; 16];
        let _ = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut sink)).await;
        Ok(())
    }
}

fn protocol(message: &str) -> UpstreamError {
    UpstreamError::Protocol(message.to_string())
}

/// Reads one whole message during login.
async fn read_message(stream: &mut MaybeTls) -> Result<(u8, Vec<u8>), UpstreamError> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(4..=MAX_STARTUP_MESSAGE).contains(&len) {
        return Err(protocol(&format!(
            "message length {len} out of range during login"
        )));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await?;
    Ok((header[0], body))
}

fn host_of(address: &str) -> &str {
    let host = address.rsplit_once(':').map_or(address, |(h, _)| h);
    host.trim_start_matches('[').trim_end_matches(']')
}

fn client_tls_config(
    target: &PostgresTarget,
    mode: UpstreamTlsMode,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    if mode == UpstreamTlsMode::Require {
        return Ok(builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider)))
            .with_no_client_auth());
    }
    let mut roots = rustls::RootCertStore::empty();
    match &target.tls.ca {
        Some(path) => {
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| {
                    format!(
                        "targets.{}.tls.ca: cannot read {}: {e}",
                        target.name,
                        path.display()
                    )
                })?
                .collect::<Result<_, _>>()
                .map_err(|e| {
                    format!(
                        "targets.{}.tls.ca: bad PEM in {}: {e}",
                        target.name,
                        path.display()
                    )
                })?;
            if certs.is_empty() {
                return Err(format!(
                    "targets.{}.tls.ca: no certificates in {}",
                    target.name,
                    path.display()
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| format!("targets.{}.tls.ca: {e}", target.name))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
        }
    }
    Ok(builder.with_root_certificates(roots).with_no_client_auth())
}

/// `tls.mode: require`: encrypt without authenticating the target, as libpq's
/// `sslmode=require` does. `verify-full` is the mode to use across untrusted networks.
#[derive(Debug)]
struct NoVerification(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_is_taken_from_address() {
        assert_eq!(host_of("db.internal:5432"), "db.internal");
        assert_eq!(host_of("[::1]:5432"), "::1");
    }
}
