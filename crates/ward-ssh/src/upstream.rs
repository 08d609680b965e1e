//! Connecting to an SSH target with the credential ward holds.
//!
//! The target must present exactly the host key pinned in `ward.yaml` (`host_key`): ward
//! holds a private key that opens the target, so talking to an impostor would hand it the
//! session's commands and whatever the user types. A mismatch refuses the connection, and
//! the message names the target, the pinned key's fingerprint and the one that was seen,
//! so the operator can tell a reinstalled host from an attack. Certificates presented as
//! host keys are refused for now (no host CA is configurable yet).
//!
//! Channels the target opens towards the client go to the session (`forward::Inbound`),
//! which relays only the ones its client's forwards asked for; every other kind is refused.

use crate::forward::Inbound;
use russh::client::{self, KeyboardInteractiveAuthResponse};
use russh::keys::{PrivateKey, PrivateKeyWithHashAlg, PublicKey, PublicKeyOrCertificate};
use russh::{Channel, MethodKind};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;
use ward_core::secret::Secret;
use ward_core::ssh_config::{SshCredential, SshTarget};

/// One SSH target, ready to connect to.
pub struct SshUpstream {
    pub target: SshTarget,
    login: Login,
    pinned: PublicKey,
    config: Arc<client::Config>,
    connect_timeout: Duration,
}

/// How ward proves itself to the target (parsed once, at start).
enum Login {
    Key(Arc<PrivateKey>),
    Password(Secret),
}

/// Why ward could not open a session on the target. The text is shown to the client
/// (it names no secret: only the target, addresses and public keys).
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("ward cannot reach target {target} at {address}: {reason}")]
    Unreachable {
        target: String,
        address: String,
        reason: String,
    },
    #[error(
        "target {target}'s host key does not match the one pinned in ward.yaml (targets.{target}.host_key): \
         pinned {pinned}, the host presented {seen}; if the host was reinstalled, update host_key \
         (ssh-keyscan), otherwise someone may be intercepting the connection"
    )]
    HostKeyMismatch {
        target: String,
        pinned: String,
        seen: String,
    },
    #[error(
        "target {target} refused ward's key for user {user}; add ward's public key to that user's authorized_keys"
    )]
    LoginRefused { target: String, user: String },
    #[error(
        "target {target} refused ward's password for user {user}; check the secret behind targets.{target}.credential.password"
    )]
    PasswordRefused { target: String, user: String },
    #[error("the SSH connection to target {target} failed: {reason}")]
    Protocol { target: String, reason: String },
}

/// Checks the target's host key against the pinned one and remembers what was seen; hands
/// the channels the target opens (`ssh -R` connections, agent use) to the session, which
/// judges them (`forward::serve_inbound`). Nothing is accepted here.
pub struct UpstreamHandler {
    pinned: PublicKey,
    seen: Arc<Mutex<Option<String>>>,
    inbound: mpsc::UnboundedSender<Inbound>,
}

impl client::Handler for UpstreamHandler {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        server_public_key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        let (matches, seen) = match server_public_key {
            PublicKeyOrCertificate::PublicKey { key, .. } => {
                (key.key_data() == self.pinned.key_data(), describe_key(key))
            }
            PublicKeyOrCertificate::Certificate(cert) => {
                (false, format!("a host certificate ({})", cert.algorithm()))
            }
        };
        *self.seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(seen);
        Ok(matches)
    }

    async fn server_channel_open_forwarded_tcpip(
        &mut self,
        channel: Channel<client::Msg>,
        connected_address: &str,
        connected_port: u32,
        originator_address: &str,
        originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        // A send fails only once the session is gone; the reply is then dropped (refused).
        let _ = self.inbound.send(Inbound::Tcpip {
            channel,
            reply,
            connected: (connected_address.to_string(), connected_port),
            originator: (originator_address.to_string(), originator_port),
        });
        Ok(())
    }

    async fn server_channel_open_agent_forward(
        &mut self,
        channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        let _ = self.inbound.send(Inbound::Agent { channel, reply });
        Ok(())
    }

    // Every other channel a target might open is refused: russh would accept them by
    // default, and ward asked for none of them (fail closed against a hostile target).

    async fn server_channel_open_session(
        &mut self,
        _channel: Channel<client::Msg>,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_direct_tcpip(
        &mut self,
        _channel: Channel<client::Msg>,
        _host_to_connect: &str,
        _port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_x11(
        &mut self,
        _channel: Channel<client::Msg>,
        _originator_address: &str,
        _originator_port: u32,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_forwarded_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }

    async fn server_channel_open_direct_streamlocal(
        &mut self,
        _channel: Channel<client::Msg>,
        _socket_path: &str,
        reply: client::ChannelOpenHandle,
        _session: &mut client::Session,
    ) -> Result<(), Self::Error> {
        refuse(reply).await
    }
}

/// Refuses a channel the target opened that ward never asked for.
async fn refuse(reply: client::ChannelOpenHandle) -> Result<(), russh::Error> {
    reply
        .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
        .await;
    Ok(())
}

/// `SHA256:… (ssh-ed25519 AAAA…)`: the fingerprint, and the key itself so it can be pasted.
fn describe_key(key: &PublicKey) -> String {
    let line = key
        .to_openssh()
        .unwrap_or_else(|_| key.algorithm().to_string());
    format!("{} ({line})", crate::fingerprint(key))
}

impl SshUpstream {
    pub fn new(target: SshTarget, connect_timeout: Duration) -> Result<Self, String> {
        let name = target.name.clone();
        let login = match &target.credential {
            SshCredential::PrivateKey(secret) => {
                // Secret files lose their trailing newline when read; PEM parsers want it back.
                let mut pem = secret.expose().to_string();
                pem.push('\n');
                let key = russh::keys::decode_secret_key(&pem, None).map_err(|e| {
                    format!(
                        "targets.{name}.credential.private_key ({}): not a usable private key: {e} \
                         (an unencrypted OpenSSH or PKCS#8 key is needed, e.g. from ssh-keygen -t ed25519 -N '')",
                        target.credential_ref
                    )
                })?;
                Login::Key(Arc::new(key))
            }
            SshCredential::Password(secret) => Login::Password(secret.clone()),
        };
        let pinned = crate::parse_public_key(&target.host_key)
            .map_err(|e| format!("targets.{name}.host_key: {e}"))?;
        let config = client::Config {
            client_id: russh::SshId::Standard(
                concat!("SSH-2.0-ward_", env!("CARGO_PKG_VERSION")).into(),
            ),
            // The session's own keepalives (client side) cover idle links; this one notices
            // a target that went away while the client is quiet.
            keepalive_interval: Some(Duration::from_secs(30)),
            keepalive_max: 4,
            nodelay: true,
            ..Default::default()
        };
        Ok(SshUpstream {
            target,
            login,
            pinned,
            config: Arc::new(config),
            connect_timeout,
        })
    }

    /// Connects, checks the host key and logs in, within the connect timeout. Channels the
    /// target opens later are sent to `inbound`.
    pub async fn connect(
        &self,
        inbound: mpsc::UnboundedSender<Inbound>,
    ) -> Result<client::Handle<UpstreamHandler>, UpstreamError> {
        match tokio::time::timeout(self.connect_timeout, self.connect_inner(inbound)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Unreachable {
                target: self.target.name.clone(),
                address: self.target.address.clone(),
                reason: format!(
                    "no SSH session within {:?} (limits.connect_timeout)",
                    self.connect_timeout
                ),
            }),
        }
    }

    async fn connect_inner(
        &self,
        inbound: mpsc::UnboundedSender<Inbound>,
    ) -> Result<client::Handle<UpstreamHandler>, UpstreamError> {
        let target = &self.target;
        let tcp = tokio::net::TcpStream::connect(&target.address)
            .await
            .map_err(|e| UpstreamError::Unreachable {
                target: target.name.clone(),
                address: target.address.clone(),
                reason: e.to_string(),
            })?;
        let _ = tcp.set_nodelay(true);
        let seen = Arc::new(Mutex::new(None));
        let handler = UpstreamHandler {
            pinned: self.pinned.clone(),
            seen: seen.clone(),
            inbound,
        };
        let mut handle = match client::connect_stream(self.config.clone(), tcp, handler).await {
            Ok(handle) => handle,
            Err(russh::Error::UnknownKey) => {
                let seen = seen
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
                    .unwrap_or_else(|| "no key".into());
                return Err(UpstreamError::HostKeyMismatch {
                    target: target.name.clone(),
                    pinned: describe_key(&self.pinned),
                    seen,
                });
            }
            Err(e) => {
                return Err(UpstreamError::Protocol {
                    target: target.name.clone(),
                    reason: e.to_string(),
                });
            }
        };
        let protocol = |e: russh::Error| UpstreamError::Protocol {
            target: target.name.clone(),
            reason: e.to_string(),
        };
        let ok = match &self.login {
            Login::Key(key) => {
                let hash = handle
                    .best_supported_rsa_hash()
                    .await
                    .map_err(protocol)?
                    .flatten();
                let auth = handle
                    .authenticate_publickey(
                        target.user.clone(),
                        PrivateKeyWithHashAlg::new(key.clone(), hash),
                    )
                    .await
                    .map_err(protocol)?;
                if !auth.success() {
                    return Err(UpstreamError::LoginRefused {
                        target: target.name.clone(),
                        user: target.user.clone(),
                    });
                }
                true
            }
            Login::Password(password) => password_login(&mut handle, &target.user, password)
                .await
                .map_err(protocol)?,
        };
        if !ok {
            return Err(UpstreamError::PasswordRefused {
                target: target.name.clone(),
                user: target.user.clone(),
            });
        }
        Ok(handle)
    }
}

/// Password auth, or keyboard-interactive when that is what the target offers instead
/// (many sshd builds disable `PasswordAuthentication` but ask for the same password through
/// PAM): every prompt that does not echo is answered with the password, a bounded number of
/// rounds. Returns whether the target accepted it; the password is never logged.
async fn password_login(
    handle: &mut client::Handle<UpstreamHandler>,
    user: &str,
    password: &Secret,
) -> Result<bool, russh::Error> {
    let remaining = match handle
        .authenticate_password(user.to_string(), password.expose().to_string())
        .await?
    {
        russh::client::AuthResult::Success => return Ok(true),
        russh::client::AuthResult::Failure {
            remaining_methods, ..
        } => remaining_methods,
    };
    if !remaining.contains(&MethodKind::KeyboardInteractive) {
        return Ok(false);
    }
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user.to_string(), None::<String>)
        .await?;
    // One round for the password, a few more for servers that send an empty info request.
    for _ in 0..4 {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure { .. } => return Ok(false),
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let answers = prompts
                    .iter()
                    .map(|p| {
                        if p.echo {
                            String::new()
                        } else {
                            password.expose().to_string()
                        }
                    })
                    .collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await?;
            }
        }
    }
    Ok(false)
}
