//! Accepting PostgreSQL clients: TLS negotiation, startup, authentication, target selection.
//!
//! The database name in the startup packet selects the target. The password is either a
//! ward service token, proving the identity named by the user name, or, when issuers are
//! configured (`identity.oidc`, `identity.workload`) and it has the shape of a JWT, an IdP
//! or CI token: then the identity comes from the token alone and the user name is only
//! recorded (attribute `pg_user`), so any user name works. Refusals of service tokens all
//! give the same message, so a client cannot learn which identities or targets exist; a
//! refused JWT is told why (the reason names nothing the token did not carry). Every
//! refusal is also an `auth_refused` audit event, queued without waiting. Nothing here
//! panics on input: malformed packets end that one connection.

use crate::PgGateway;
use crate::codec::read_cstr;
use crate::messages::{self, Severity, sqlstate};
use crate::session::{self, Admitted};
use crate::stream::MaybeTls;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

const SSL_REQUEST: i32 = 80877103;
const GSSENC_REQUEST: i32 = 80877104;
const CANCEL_REQUEST: i32 = 80877102;
const PROTOCOL_3: i32 = 3 << 16;
/// Startup packets are small (parameters only); PostgreSQL itself caps them at 10000 bytes.
const MAX_STARTUP_PACKET: usize = 10_000;
/// A password message carries a token or a JWT; 16 KiB leaves room for large IdP tokens.
const MAX_PASSWORD_MESSAGE: usize = 16 * 1024;

/// Accepts connections until `shutdown` fires; each runs in its own task.
pub async fn serve(listener: TcpListener, gateway: Arc<PgGateway>, shutdown: CancellationToken) {
    ward_core::accept::accept_until(listener, shutdown, "postgres", |tcp, peer| {
        handle(gateway.clone(), tcp, peer)
    })
    .await;
}

/// Why a connection ended before becoming a session (for the log only).
#[derive(Debug)]
enum Refusal {
    Quiet(String),
    Told(String),
}

async fn handle(gateway: Arc<PgGateway>, tcp: TcpStream, peer: SocketAddr) {
    let timeout = gateway.limits.startup_timeout;
    let admitted = match tokio::time::timeout(timeout, startup(&gateway, tcp, peer)).await {
        Ok(Ok(Some(admitted))) => admitted,
        Ok(Ok(None)) => return,
        Ok(Err(Refusal::Quiet(why))) => {
            tracing::debug!(%peer, why, "connection closed during startup");
            return;
        }
        Ok(Err(Refusal::Told(why))) => {
            tracing::warn!(%peer, why, "connection refused");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, ?timeout, "startup timed out");
            return;
        }
    };
    session::run(gateway, admitted).await;
}

/// Runs the startup phase. `Ok(None)` means the connection was a cancel request.
async fn startup(
    gateway: &Arc<PgGateway>,
    tcp: TcpStream,
    peer: SocketAddr,
) -> Result<Option<Admitted>, Refusal> {
    let mut stream = MaybeTls::Plain(tcp);
    let mut tls_done = false;
    let mut gss_done = false;
    let params = loop {
        let packet = read_startup_packet(&mut stream).await?;
        let Some((code, rest)) = crate::codec::read_i32(&packet) else {
            return Err(Refusal::Quiet("startup packet too short".into()));
        };
        match code {
            SSL_REQUEST if !tls_done => {
                let MaybeTls::Plain(mut tcp) = stream else {
                    return Err(Refusal::Quiet("SSLRequest on a TLS stream".into()));
                };
                let Some(acceptor) = &gateway.tls else {
                    tcp.write_all(b"N").await.map_err(quiet)?;
                    stream = MaybeTls::Plain(tcp);
                    tls_done = true;
                    continue;
                };
                tcp.write_all(b"S").await.map_err(quiet)?;
                let tls = acceptor
                    .accept(tcp)
                    .await
                    .map_err(|e| Refusal::Told(format!("TLS handshake failed: {e}")))?;
                stream = MaybeTls::ServerTls(Box::new(tls));
                tls_done = true;
            }
            GSSENC_REQUEST if !gss_done && !tls_done => {
                // ward does not do GSSAPI encryption; 'N' makes libpq fall back to TLS.
                stream.write_all(b"N").await.map_err(quiet)?;
                gss_done = true;
            }
            CANCEL_REQUEST => {
                let (pid, rest) = crate::codec::read_i32(rest)
                    .ok_or_else(|| Refusal::Quiet("short cancel request".into()))?;
                let (secret, _) = crate::codec::read_i32(rest)
                    .ok_or_else(|| Refusal::Quiet("short cancel request".into()))?;
                gateway.cancels.cancel(pid, secret).await;
                return Ok(None);
            }
            code if code >> 16 == 3 => {
                let params = parse_startup_params(rest)
                    .ok_or_else(|| Refusal::Quiet("malformed startup parameters".into()));
                let params = match params {
                    Ok(p) => p,
                    Err(e) => {
                        refuse(
                            &mut stream,
                            sqlstate::PROTOCOL_VIOLATION,
                            "ward: malformed startup packet",
                            None,
                        )
                        .await;
                        return Err(e);
                    }
                };
                if code != PROTOCOL_3 {
                    // A 3.x client (x > 0): tell it ward speaks 3.0 and carry on.
                    let mut out = Vec::new();
                    messages::negotiate_protocol_version(&mut out, 0, &[]);
                    stream.write_all(&out).await.map_err(quiet)?;
                }
                break params;
            }
            other => {
                let message = format!(
                    "ward: unsupported frontend protocol or request code {other}; ward speaks PostgreSQL protocol 3.0"
                );
                refuse(&mut stream, sqlstate::PROTOCOL_VIOLATION, &message, None).await;
                return Err(Refusal::Told(message));
            }
        }
    };

    let tls_version = stream.tls_version();
    if matches!(stream, MaybeTls::Plain(_)) && !gateway.allow_plaintext {
        refuse(
            &mut stream,
            sqlstate::PROTOCOL_VIOLATION,
            "ward requires TLS: connect with sslmode=require (or verify-ca/verify-full); plaintext connections are refused",
            Some("ward's certificate is self-signed unless tls.cert is configured; sslmode=require accepts it, verify-full needs the CA"),
        )
        .await;
        return Err(Refusal::Told("plaintext connection refused".into()));
    }

    let user = params
        .iter()
        .find(|(k, _)| k == "user")
        .map(|(_, v)| v.clone());
    let Some(user) = user.filter(|u| !u.is_empty()) else {
        refuse(
            &mut stream,
            sqlstate::PROTOCOL_VIOLATION,
            "ward: no user name given; the user name is your ward identity",
            None,
        )
        .await;
        return Err(Refusal::Told("no user in startup packet".into()));
    };
    let database = params
        .iter()
        .find(|(k, _)| k == "database")
        .map(|(_, v)| v.clone())
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| user.clone());

    // Ask for the token.
    let mut out = Vec::new();
    messages::authentication_cleartext(&mut out);
    stream.write_all(&out).await.map_err(quiet)?;
    stream.flush().await.map_err(quiet)?;
    let password = match read_password(&mut stream).await {
        Ok(p) => p,
        Err(Refusal::Told(why)) => {
            refuse(
                &mut stream,
                sqlstate::PROTOCOL_VIOLATION,
                &format!("ward: {why}"),
                None,
            )
            .await;
            return Err(Refusal::Told(why));
        }
        Err(quiet) => return Err(quiet),
    };

    let peer_text = peer.to_string();
    let admitted = gateway
        .auth
        .admit(ward_auth::Attempt {
            protocol: "postgres",
            user: &user,
            secret: &password,
            target: &database,
            target_exists: gateway.targets.contains_key(&database),
            peer: &peer_text,
        })
        .await;
    let ward_auth::Admission {
        identity,
        credential,
    } = match admitted {
        Ok(admission) => admission,
        Err(refusal) => {
            let code = match refusal.kind {
                ward_auth::RefusalKind::Credential => sqlstate::INVALID_PASSWORD,
                ward_auth::RefusalKind::Locked => sqlstate::INVALID_AUTHORIZATION,
            };
            refuse(&mut stream, code, &refusal.message, Some(refusal.hint)).await;
            return Err(Refusal::Told(refusal.message));
        }
    };
    let connector = gateway
        .targets
        .get(&database)
        .expect("checked above")
        .clone();
    let forwarded: Vec<(String, String)> = params
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "user" | "database" | "replication"))
        .collect();
    Ok(Some(Admitted {
        client: stream,
        peer,
        tls_version,
        identity,
        credential,
        connector,
        client_params: forwarded,
    }))
}

fn quiet(e: std::io::Error) -> Refusal {
    Refusal::Quiet(e.to_string())
}

/// Writes a FATAL error and closes politely. Errors writing it are ignored: the client may
/// already be gone.
pub(crate) async fn refuse<S: AsyncWrite + Unpin>(
    stream: &mut S,
    code: &str,
    message: &str,
    hint: Option<&str>,
) {
    let bytes = messages::error_bytes(Severity::Fatal, code, message, hint);
    let _ = stream.write_all(&bytes).await;
    let _ = stream.flush().await;
    let _ = stream.shutdown().await;
}

async fn read_startup_packet<S: AsyncRead + Unpin>(stream: &mut S) -> Result<Vec<u8>, Refusal> {
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).await.map_err(quiet)?;
    let len = u32::from_be_bytes(len) as usize;
    if !(8..=MAX_STARTUP_PACKET).contains(&len) {
        return Err(Refusal::Told(format!(
            "invalid startup packet length {len}"
        )));
    }
    let mut packet = vec![0u8; len - 4];
    stream.read_exact(&mut packet).await.map_err(quiet)?;
    Ok(packet)
}

fn parse_startup_params(mut rest: &[u8]) -> Option<Vec<(String, String)>> {
    let mut params = Vec::new();
    loop {
        let (key, tail) = read_cstr(rest)?;
        if key.is_empty() {
            return Some(params);
        }
        let (value, tail) = read_cstr(tail)?;
        params.push((
            String::from_utf8_lossy(key).into_owned(),
            String::from_utf8_lossy(value).into_owned(),
        ));
        rest = tail;
    }
}

async fn read_password<S: AsyncRead + Unpin>(stream: &mut S) -> Result<String, Refusal> {
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await.map_err(quiet)?;
    if header[0] != b'p' {
        return Err(Refusal::Told(format!(
            "expected a password message, got message type {:?}",
            header[0] as char
        )));
    }
    let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    if !(5..=MAX_PASSWORD_MESSAGE).contains(&len) {
        return Err(Refusal::Told(format!(
            "password message length {len} is out of range"
        )));
    }
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.map_err(quiet)?;
    let (password, _) = read_cstr(&body)
        .ok_or_else(|| Refusal::Told("password message is not terminated".into()))?;
    String::from_utf8(password.to_vec())
        .map_err(|_| Refusal::Told("password is not valid UTF-8".into()))
}

/// Builds the messages that complete the client's login.
pub(crate) fn login_complete(parameter_status: &[u8], pid: i32, secret: i32) -> Vec<u8> {
    let mut out = Vec::with_capacity(parameter_status.len() + 64);
    messages::authentication_ok(&mut out);
    out.extend_from_slice(parameter_status);
    messages::backend_key_data(&mut out, pid, secret);
    messages::ready_for_query(&mut out, b'I');
    out
}

/// Binds `count` listening sockets to the same address with `SO_REUSEPORT`, so that one
/// accept loop per thread can share the port and the kernel spreads connections among them.
///
/// With a port of 0 the first socket picks a free port and the others bind to that port.
pub fn bind_shared(
    addr: std::net::SocketAddr,
    count: usize,
) -> std::io::Result<Vec<std::net::TcpListener>> {
    use socket2::{Domain, Protocol, Socket, Type};
    let mut listeners = Vec::with_capacity(count.max(1));
    let mut addr = addr;
    for _ in 0..count.max(1) {
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_reuse_address(true)?;
        socket.set_reuse_port(true)?;
        socket.set_nonblocking(true)?;
        socket.bind(&addr.into())?;
        socket.listen(1024)?;
        let listener: std::net::TcpListener = socket.into();
        addr = listener.local_addr()?;
        listeners.push(listener);
    }
    Ok(listeners)
}
