//! Accepting SSH clients: public-key authentication, target selection, session start.
//!
//! The SSH user name names the target (`web-1`), optionally with the identity in front
//! (`alice+web-1`); the client's public key alone proves the identity (`identity.ssh_keys`).
//! Keys, targets and identity parts are checked before the client is asked to sign, so an
//! unknown key costs no signature. Refusals all look the same to the client ("Permission
//! denied (publickey)"), so it cannot learn which targets exist; the reason goes to the log
//! and, once per refused connection, to the audit as an `auth_refused` event.
//!
//! Once a key is proven, ward connects to the target (pinned host key, ward's own key) and
//! only then registers the session. What cannot be done at that point (a locked identity,
//! an unreachable target, a host key mismatch) is told to the client as the reason of an
//! SSH disconnect, which OpenSSH prints ("Received disconnect from …: ward: …").

use crate::SshGateway;
use crate::forward;
use crate::session::{self, ChannelLink, SessionCtx};
use crate::upstream::UpstreamHandler;
use russh::keys::ssh_key::public::KeyData;
use russh::server::{self, Auth, Msg, PublicKeyOffer, Session, VerifiedPublicKey};
use russh::{Channel, ChannelId, Disconnect, Pty, Sig};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use ward_core::config::OnExpiry;
use ward_core::event::{AuthRefusedEvent, CredentialInfo, SessionEnd, SessionStart};
use ward_core::registry::{LiveSession, Registration};
use ward_core::{AuditEvent, Identity, SessionId};

/// How long a killed session's connection gets to close after the disconnect is sent.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// How long ward waits for the channels of an ended connection to record their results.
const CHANNELS_GRACE: Duration = Duration::from_secs(5);

/// Accepts connections until `shutdown` fires; each runs in its own task.
pub async fn serve(listener: TcpListener, gateway: Arc<SshGateway>, shutdown: CancellationToken) {
    ward_core::accept::accept_until(listener, shutdown, "ssh", |tcp, peer| {
        handle(gateway.clone(), tcp, peer)
    })
    .await;
}

/// What a connection's handler and its supervising task share.
struct Conn {
    /// Set once the session is registered: the supervisor watches its stop token.
    live: watch::Sender<Option<Arc<LiveSession>>>,
    /// The registry entry, dropped when the connection is over.
    registration: Mutex<Option<Registration>>,
    /// Why the session ended, if ward knows better than "client closed" (first one wins).
    end_reason: Mutex<Option<String>>,
    /// The last refused authentication attempt and how many there were, recorded once when
    /// a connection ends without a session.
    refusal: Mutex<Option<(AuthRefusedEvent, u32)>>,
    /// Channel tasks hold a clone; the supervisor waits until all are dropped.
    channels_done: Mutex<Option<mpsc::Sender<()>>>,
}

impl Conn {
    fn note_end(&self, reason: impl Into<String>) {
        let mut slot = self.end_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.into());
        }
    }
}

async fn handle(gateway: Arc<SshGateway>, tcp: TcpStream, peer: SocketAddr) {
    let (live_tx, mut live_rx) = watch::channel(None);
    let (done_tx, mut done_rx) = mpsc::channel::<()>(1);
    let conn = Arc::new(Conn {
        live: live_tx,
        registration: Mutex::new(None),
        end_reason: Mutex::new(None),
        refusal: Mutex::new(None),
        channels_done: Mutex::new(Some(done_tx)),
    });
    let handler = ClientHandler {
        gateway: gateway.clone(),
        peer,
        conn: conn.clone(),
        admitted: None,
        ctx: None,
        upstream: None,
        channels: HashMap::new(),
    };
    let running = match server::run_stream(gateway.server_config.clone(), tcp, handler).await {
        Ok(running) => running,
        Err(e) => {
            tracing::debug!(%peer, error = %e, "ssh connection ended before its handshake");
            return;
        }
    };
    let client = running.handle();
    tokio::pin!(running);
    // A client that has not authenticated by then is sent away (russh limits attempts, not
    // time); the check is dropped once the session is registered.
    let mut auth_deadline =
        Some(tokio::time::Instant::now() + gateway.connect_timeout.max(Duration::from_secs(30)));
    loop {
        tokio::select! {
            result = &mut running => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "ssh connection ended with an error");
                    conn.note_end(format!("connection error: {e}"));
                }
                break;
            }
            live = wait_for_stop(&mut live_rx) => {
                let reason = live.end_reason().unwrap_or_else(|| "ended by ward".into());
                conn.note_end(reason.clone());
                let _ = client
                    .disconnect(Disconnect::ByApplication, format!("ward: session ended: {reason}"), String::new())
                    .await;
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut running).await;
                break;
            }
            _ = tokio::time::sleep_until(auth_deadline.unwrap_or_else(tokio::time::Instant::now)), if auth_deadline.is_some() => {
                if live_rx.borrow().is_some() {
                    auth_deadline = None;
                    continue;
                }
                let _ = client
                    .disconnect(Disconnect::ByApplication, "ward: authentication took too long".into(), String::new())
                    .await;
                let _ = tokio::time::timeout(CLOSE_GRACE, &mut running).await;
                break;
            }
        }
    }
    // Every channel records its command's result before the session's end is recorded.
    conn.channels_done
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    let _ = tokio::time::timeout(CHANNELS_GRACE, done_rx.recv()).await;
    let registration = conn
        .registration
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take();
    if let Some(registration) = registration {
        let reason = conn
            .end_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_else(|| "client closed".into());
        let _ = gateway
            .audit
            .record(AuditEvent::SessionEnd(SessionEnd {
                session_id: registration.session.id.clone(),
                ended_at: ward_core::time::now_micros(),
                reason: reason.clone(),
            }))
            .await;
        tracing::info!(session = %registration.session.id, %peer, reason, "ssh session ended");
        drop(registration);
    } else if let Some((mut event, attempts)) = conn
        .refusal
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .take()
    {
        if attempts > 1 {
            event.reason = format!("{} ({attempts} attempts)", event.reason);
        }
        tracing::warn!(%peer, user = event.claimed_user, code = event.code, reason = event.reason, "ssh login refused");
        record_refusal(&gateway, event);
    }
}

/// Waits until the connection's session is registered and then asked to stop.
async fn wait_for_stop(live: &mut watch::Receiver<Option<Arc<LiveSession>>>) -> Arc<LiveSession> {
    let session = match live.wait_for(|l| l.is_some()).await {
        Ok(l) => l.clone(),
        Err(_) => None,
    };
    match session {
        Some(session) => {
            session.stop.cancelled().await;
            session
        }
        None => std::future::pending().await,
    }
}

/// Records a refused login without waiting (the shared recorder: drops are counted, never
/// waited for).
fn record_refusal(gateway: &SshGateway, event: AuthRefusedEvent) {
    ward_auth::record_refusal(&gateway.audit, event);
}

/// The SSH user name: `target` or `identity+target`.
fn parse_user(user: &str) -> (Option<&str>, &str) {
    match user.split_once('+') {
        Some((identity, target)) => (Some(identity), target),
        None => (None, user),
    }
}

/// Why a key was refused: a stable code, the reason, and the identity the key proves (if
/// it is a known key).
type KeyRefusal = (&'static str, String, Option<String>);

/// A proven credential and the target it may reach.
struct Admitted {
    identity: Identity,
    target: String,
    user: String,
    credential: CredentialInfo,
    /// Set when the credential was good but the identity is locked: the client is told
    /// this (as a disconnect reason, which OpenSSH prints) instead of getting a session.
    locked: Option<String>,
}

/// One connection's SSH server handler: authentication, then the client-to-target half of
/// every channel (each request is judged and answered here, in order).
pub(crate) struct ClientHandler {
    gateway: Arc<SshGateway>,
    peer: SocketAddr,
    conn: Arc<Conn>,
    admitted: Option<Admitted>,
    ctx: Option<Arc<SessionCtx>>,
    upstream: Option<Arc<russh::client::Handle<UpstreamHandler>>>,
    channels: HashMap<ChannelId, ChannelLink>,
}

impl ClientHandler {
    /// Checks a key for a user name; `Err` carries (code, reason, identity) for the audit.
    fn check(&self, user: &str, key: &KeyData) -> Result<(Identity, String, String), KeyRefusal> {
        let (claimed, target) = parse_user(user);
        let Some(entry) = self.gateway.keys.get(key) else {
            let fp = key.fingerprint(russh::keys::HashAlg::Sha256);
            return Err((
                "unknown_key",
                format!("key {fp} is not listed in identity.ssh_keys"),
                None,
            ));
        };
        let identity = Some(entry.identity.to_string());
        if !self.gateway.targets.contains_key(target) {
            return Err((
                "unknown_target",
                format!("unknown SSH target {target:?}"),
                identity,
            ));
        }
        if let Some(claimed) = claimed
            && claimed != &*entry.identity
        {
            return Err((
                "identity_mismatch",
                format!(
                    "user name names identity {claimed:?} but the key proves {:?}",
                    entry.identity
                ),
                identity,
            ));
        }
        if let Some(allowed) = &entry.targets
            && !allowed.iter().any(|t| t == target)
        {
            return Err((
                "target_not_allowed",
                format!(
                    "identity {:?} may not use target {target:?}",
                    entry.identity
                ),
                identity,
            ));
        }
        Ok((
            Identity {
                name: entry.identity.clone(),
                source: "ssh-key",
                groups: entry.groups.clone(),
                expires: None,
                attributes: vec![("ssh_key".into(), entry.fingerprint.clone())],
            },
            target.to_string(),
            entry.fingerprint.clone(),
        ))
    }

    /// Checks an OpenSSH user certificate (its signature over the session is already
    /// verified): signed by a listed CA, valid now, of type user, no critical options ward
    /// cannot enforce, and its key id — the identity — among its principals.
    fn check_certificate(
        &self,
        user: &str,
        cert: &russh::keys::Certificate,
    ) -> Result<Admitted, KeyRefusal> {
        let (claimed, target) = parse_user(user);
        let signer = cert
            .signature_key()
            .fingerprint(russh::keys::HashAlg::Sha256);
        let Some(ca) = self.gateway.cas.iter().find(|ca| ca.fingerprint == signer) else {
            return Err((
                "unknown_ca",
                format!("certificate signed by {signer}, which is not listed in identity.ssh_cas"),
                None,
            ));
        };
        let identity_name = cert.key_id().to_string();
        let identity = Some(identity_name.clone());
        if cert.cert_type() != russh::keys::ssh_key::certificate::CertType::User {
            return Err((
                "not_user_certificate",
                "a host certificate cannot log in".into(),
                identity,
            ));
        }
        if let Err(e) = cert.validate([&ca.fingerprint]) {
            return Err((
                "invalid_certificate",
                format!("certificate {identity_name:?} is not valid now: {e}"),
                identity,
            ));
        }
        if !cert.critical_options().is_empty() {
            return Err((
                "certificate_options",
                "certificates with critical options (force-command, source-address) are not accepted".into(),
                identity,
            ));
        }
        if identity_name.is_empty()
            || identity_name.contains('+')
            || !cert.valid_principals().contains(&identity_name)
        {
            return Err((
                "certificate_principal",
                format!(
                    "the certificate's key id {identity_name:?} must be one of its principals (ssh-keygen -I NAME -n NAME)"
                ),
                identity,
            ));
        }
        if !self.gateway.targets.contains_key(target) {
            return Err((
                "unknown_target",
                format!("unknown SSH target {target:?}"),
                identity,
            ));
        }
        if let Some(claimed) = claimed
            && claimed != identity_name
        {
            return Err((
                "identity_mismatch",
                format!(
                    "user name names identity {claimed:?} but the certificate proves {identity_name:?}"
                ),
                identity,
            ));
        }
        if let Some(allowed) = &ca.targets
            && !allowed.iter().any(|t| t == target)
        {
            return Err((
                "target_not_allowed",
                format!("certificates of this CA may not use target {target:?}"),
                identity,
            ));
        }
        let serial = cert.serial().to_string();
        // A certificate's validity bounds the session like a token's expiry does
        // (`identity.on_expiry`); `forever` (u64::MAX) has none.
        let expires = i64::try_from(cert.valid_before())
            .ok()
            .and_then(|secs| chrono::DateTime::from_timestamp(secs, 0));
        Ok(Admitted {
            identity: Identity {
                name: identity_name.as_str().into(),
                source: "ssh-cert",
                groups: ca.groups.clone(),
                expires,
                attributes: vec![
                    ("ssh_ca".into(), signer.to_string()),
                    ("ssh_cert_serial".into(), serial.clone()),
                ],
            },
            target: target.to_string(),
            user: user.to_string(),
            credential: CredentialInfo {
                source: "ssh-cert".into(),
                subject: Some(identity_name),
                attributes: vec![
                    ("ssh_user".into(), user.to_string()),
                    ("ssh_ca".into(), signer.to_string()),
                    ("ssh_cert_serial".into(), serial),
                ],
                ..CredentialInfo::default()
            },
            locked: None,
        })
    }

    fn note_refusal(&self, user: &str, code: &str, reason: String, identity: Option<String>) {
        tracing::debug!(peer = %self.peer, user, code, reason, "ssh key refused");
        let event = AuthRefusedEvent {
            protocol: "ssh".into(),
            target: parse_user(user).1.to_string(),
            claimed_user: user.to_string(),
            identity,
            peer: self.peer.to_string(),
            source: "ssh_key".into(),
            code: code.into(),
            reason,
            at: ward_core::time::now_micros(),
        };
        let mut slot = self.conn.refusal.lock().unwrap_or_else(|p| p.into_inner());
        let attempts = slot.as_ref().map_or(0, |(_, n)| *n) + 1;
        // "unknown key" says least: a client falling back from a refused certificate to its
        // bare key keeps the certificate's reason on record.
        let keep =
            code == "unknown_key" && slot.as_ref().is_some_and(|(e, _)| e.code != "unknown_key");
        if keep {
            if let Some((_, n)) = slot.as_mut() {
                *n = attempts;
            }
        } else {
            *slot = Some((event, attempts));
        }
    }

    /// Ends the connection with a reason the client prints.
    fn disconnect(&self, session: &mut Session, message: &str) {
        let _ = session.disconnect(Disconnect::ByApplication, &format!("ward: {message}"), "");
    }

    /// Sends a request to the target and answers the client with the target's reply.
    async fn answer_from_target(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), russh::Error> {
        let ok = match self.channels.get_mut(&channel) {
            Some(link) => link.reply().await,
            None => false,
        };
        if ok {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }
}

impl server::Handler for ClientHandler {
    type Error = russh::Error;

    async fn auth_publickey_offered(
        &mut self,
        user: &str,
        offer: PublicKeyOffer<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, offer.public_key.key_data()) {
            Ok(_) => Ok(Auth::Accept),
            // The offer does not say whether a certificate is behind the key: with CAs
            // configured, the signature is asked for and the certificate checked after it
            // (`auth_openssh_certificate`); a plain unknown key is refused then.
            Err(("unknown_key", _, _)) if !self.gateway.cas.is_empty() => Ok(Auth::Accept),
            Err((code, reason, identity)) => {
                self.note_refusal(user, code, reason, identity);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_publickey(
        &mut self,
        user: &str,
        key: VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        match self.check(user, key.public_key.key_data()) {
            Ok((identity, target, fingerprint)) => {
                self.admitted = Some(Admitted {
                    identity,
                    target,
                    user: user.to_string(),
                    credential: CredentialInfo {
                        source: "ssh-key".into(),
                        subject: Some(fingerprint),
                        attributes: vec![("ssh_user".into(), user.to_string())],
                        ..CredentialInfo::default()
                    },
                    locked: None,
                });
                Ok(Auth::Accept)
            }
            Err((code, reason, identity)) => {
                self.note_refusal(user, code, reason, identity);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_openssh_certificate(
        &mut self,
        user: &str,
        certificate: &russh::keys::Certificate,
    ) -> Result<Auth, Self::Error> {
        match self.check_certificate(user, certificate) {
            Ok(admitted) => {
                self.admitted = Some(admitted);
                Ok(Auth::Accept)
            }
            Err((code, reason, identity)) => {
                self.note_refusal(user, code, reason, identity);
                Ok(Auth::reject())
            }
        }
    }

    async fn auth_password(&mut self, user: &str, password: &str) -> Result<Auth, Self::Error> {
        Ok(self.admit_secret(user, password).await)
    }

    async fn auth_keyboard_interactive<'a>(
        &'a mut self,
        user: &str,
        _submethods: &str,
        response: Option<server::Response<'a>>,
    ) -> Result<Auth, Self::Error> {
        let Some(mut response) = response else {
            return Ok(Auth::Partial {
                name: "ward".into(),
                instructions: "Log in with a ward token (ward login), a service token (user name identity+target) or an IdP token.".into(),
                prompts: vec![("ward token: ".into(), false)].into(),
            });
        };
        let secret = response
            .next()
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        Ok(self.admit_secret(user, secret.trim()).await)
    }

    async fn auth_succeeded(&mut self, session: &mut Session) -> Result<(), Self::Error> {
        let Some(admitted) = &self.admitted else {
            self.disconnect(session, "internal error: no proven credential");
            return Ok(());
        };
        if let Some(message) = &admitted.locked {
            // Recorded by the authenticator already.
            let message = format!("{message} (an administrator can lift it with `ward unlock`)");
            self.disconnect(session, &message);
            return Ok(());
        }
        let gateway = self.gateway.clone();
        let identity = admitted.identity.clone();
        let target_name = admitted.target.clone();
        let refused = |code: &str, reason: String| AuthRefusedEvent {
            protocol: "ssh".into(),
            target: target_name.clone(),
            claimed_user: admitted.user.clone(),
            identity: Some(identity.name.to_string()),
            peer: self.peer.to_string(),
            source: "ssh_key".into(),
            code: code.into(),
            reason,
            at: ward_core::time::now_micros(),
        };
        if let Some(lock) = gateway.controls.check_lock(&identity.name) {
            let reason = format!("identity {:?} is locked: {}", identity.name, lock.reason);
            record_refusal(&gateway, refused("locked", reason.clone()));
            tracing::warn!(peer = %self.peer, identity = %identity.name, "ssh login of a locked identity refused");
            self.disconnect(
                session,
                &format!("{reason} (an administrator can lift it with `ward unlock`)"),
            );
            return Ok(());
        }
        let Some(upstream) = gateway.targets.get(&target_name).cloned() else {
            self.disconnect(session, "internal error: target vanished");
            return Ok(());
        };
        let (inbound_tx, inbound_rx) = mpsc::unbounded_channel();
        let handle = match upstream.connect(inbound_tx).await {
            Ok(handle) => handle,
            Err(e) => {
                tracing::warn!(peer = %self.peer, identity = %identity.name, target = %target_name, error = %e, "ssh target connection failed");
                self.disconnect(session, &e.to_string());
                return Ok(());
            }
        };
        let session_id = SessionId::generate();
        let registration = gateway.registry.register(
            session_id.clone(),
            identity.name.clone(),
            target_name.as_str().into(),
            "ssh",
            self.peer.to_string(),
        );
        // A lock set while ward connected to the target: either seen here, or its sweep of
        // the registry ends this session (see Controls::check_lock).
        if let Some(lock) = gateway.controls.check_lock(&identity.name) {
            let reason = format!("identity {:?} is locked: {}", identity.name, lock.reason);
            record_refusal(&gateway, refused("locked", reason.clone()));
            self.disconnect(session, &reason);
            return Ok(());
        }
        let start = AuditEvent::SessionStart(SessionStart {
            session_id: session_id.clone(),
            identity: identity.name.to_string(),
            groups: identity.groups.clone(),
            target: target_name.clone(),
            protocol: "ssh".into(),
            client_addr: self.peer.to_string(),
            tls_version: "ssh".into(),
            client_program: Some(String::from_utf8_lossy(session.remote_sshid()).into_owned()),
            started_at: registration.session.started_at,
            credential: Some(admitted.credential.clone()),
        });
        if gateway.audit.record(start).await.is_err() {
            self.disconnect(
                session,
                "the audit log is unavailable; ward refuses to continue unaudited",
            );
            return Ok(());
        }
        tracing::info!(session = %session_id, peer = %self.peer, identity = %identity.name, target = %target_name, "ssh session started");
        let live = registration.session.clone();
        if gateway.on_expiry == OnExpiry::End
            && let Some(at) = identity.expires
        {
            // `identity.on_expiry: end`: the session ends when its token does, like a kill
            // (the client is disconnected with the reason).
            let live = live.clone();
            let credential = ward_core::expiry::credential_noun(identity.source);
            tokio::spawn(async move {
                tokio::select! {
                    () = ward_core::expiry::reached(Some(at)) => live.end(ward_core::expiry::end_reason(credential, at)),
                    () = live.stop.cancelled() => {}
                }
            });
        }
        *self
            .conn
            .registration
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(registration);
        let ctx = Arc::new(SessionCtx {
            gateway: gateway.clone(),
            session_id,
            identity,
            target: upstream,
            seq: AtomicU64::new(0),
            channels: std::sync::atomic::AtomicU32::new(0),
            stop: live.stop.clone(),
            forwards: forward::Grants::default(),
        });
        let conn = self.conn.clone();
        tokio::spawn(forward::serve_inbound(
            ctx.clone(),
            inbound_rx,
            session.handle(),
            move || {
                conn.channels_done
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .clone()
            },
        ));
        self.ctx = Some(ctx);
        self.upstream = Some(Arc::new(handle));
        let _ = self.conn.live.send(Some(live));
        Ok(())
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: server::ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(ctx), Some(upstream)) = (self.ctx.clone(), self.upstream.clone()) else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let up = match upstream.channel_open_session().await {
            Ok(up) => up,
            Err(e) => {
                reply
                    .reject(russh::ChannelOpenFailure::Other {
                        code: 2,
                        reason: format!(
                            "ward: target {} refused a session channel: {e}",
                            ctx.target.target.name
                        ),
                    })
                    .await;
                return Ok(());
            }
        };
        let done = self
            .conn
            .channels_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(done) = done else {
            return Ok(());
        };
        let id = channel.id();
        let link = session::open(ctx, channel, up, session.handle(), done);
        self.channels.insert(id, link);
        reply.accept().await;
        Ok(())
    }

    async fn data(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.get(&channel) {
            link.input(data, None).await;
        }
        Ok(())
    }

    async fn extended_data(
        &mut self,
        channel: ChannelId,
        code: u32,
        data: &[u8],
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.get(&channel) {
            link.input(data, Some(code)).await;
        }
        Ok(())
    }

    async fn channel_eof(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.get(&channel) {
            link.eof();
        }
        Ok(())
    }

    async fn channel_close(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.remove(&channel) {
            link.close();
        }
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        term: &str,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        modes: &[(Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let sent = match self.channels.get(&channel) {
            Some(link) => link
                .up
                .request_pty(
                    true, term, col_width, row_height, pix_width, pix_height, modes,
                )
                .await
                .is_ok(),
            None => false,
        };
        if !sent {
            session.channel_failure(channel)?;
            return Ok(());
        }
        if let Some(link) = self.channels.get_mut(&channel) {
            link.pty = true;
            link.recorder.resize(col_width, row_height).await;
        }
        self.answer_from_target(channel, session).await
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        variable_name: &str,
        variable_value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        // Only locale and terminal settings pass: variables such as LD_PRELOAD or PATH would
        // change what the target runs behind the policy's back.
        let allowed = variable_name == "LANG"
            || variable_name.starts_with("LC_")
            || variable_name == "TZ"
            || variable_name == "COLORTERM";
        let sent = allowed
            && match self.channels.get(&channel) {
                Some(link) => link
                    .up
                    .set_env(true, variable_name, variable_value)
                    .await
                    .is_ok(),
                None => false,
            };
        if !sent {
            session.channel_failure(channel)?;
            return Ok(());
        }
        self.answer_from_target(channel, session).await
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_program(channel, session, session::Program::Shell)
            .await
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        let command = String::from_utf8_lossy(data).into_owned();
        self.start_program(channel, session, session::Program::Exec(command))
            .await
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        self.start_program(
            channel,
            session,
            session::Program::Subsystem(name.to_string()),
        )
        .await
    }

    async fn window_change_request(
        &mut self,
        channel: ChannelId,
        col_width: u32,
        row_height: u32,
        pix_width: u32,
        pix_height: u32,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.get(&channel) {
            let _ = link
                .up
                .window_change(col_width, row_height, pix_width, pix_height)
                .await;
            link.recorder.resize(col_width, row_height).await;
        }
        Ok(())
    }

    async fn signal(
        &mut self,
        channel: ChannelId,
        signal: Sig,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if let Some(link) = self.channels.get(&channel) {
            let _ = link.up.signal(signal).await;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    /// The client's window, topped up as its data arrives: small while much of its input
    /// waits for the target (see `session`'s flow control), full otherwise.
    fn adjust_window(&mut self, _channel: ChannelId, _current: u32) -> u32 {
        let queued: usize = self.channels.values().map(|l| l.queued.bytes()).sum();
        if queued > session::THROTTLE_AT {
            session::THROTTLED_WINDOW
        } else {
            self.gateway.server_config.window_size
        }
    }

    /// `ssh -L`: judged by the policy (kind `port_forward_local`, destination `host:port`),
    /// then relayed to a direct-tcpip channel ward opens on the target; recorded either way.
    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        originator_address: &str,
        originator_port: u32,
        reply: server::ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        let (Some(ctx), Some(upstream)) = (self.ctx.clone(), self.upstream.clone()) else {
            reply
                .reject(russh::ChannelOpenFailure::AdministrativelyProhibited)
                .await;
            return Ok(());
        };
        let destination = format!("{host_to_connect}:{port_to_connect}");
        let text = format!("forward local {destination}");
        let started_at = ward_core::time::now_micros();
        let rule = match forward::judge(&ctx, forward::LOCAL, Some(&destination)) {
            Ok(rule) => rule,
            Err(refusal) => {
                tracing::info!(session = %ctx.session_id, forward = %text, rule = %refusal.rule, "ssh forward refused");
                reply
                    .reject(russh::ChannelOpenFailure::Other {
                        code: 1,
                        reason: refusal.client_message(),
                    })
                    .await;
                forward::record(
                    &ctx,
                    forward::Outcome::denied(text, started_at, refusal, true),
                )
                .await;
                return Ok(());
            }
        };
        if let Err(reason) = forward::announce(&ctx, &text, &rule).await {
            reply
                .reject(russh::ChannelOpenFailure::Other { code: 2, reason })
                .await;
            return Ok(());
        }
        let up = match upstream
            .channel_open_direct_tcpip(
                host_to_connect,
                port_to_connect,
                originator_address,
                originator_port,
            )
            .await
        {
            Ok(up) => up,
            Err(e) => {
                let reason = format!(
                    "target {} could not open {destination}: {e}",
                    ctx.target.target.name
                );
                reply.reject(russh::ChannelOpenFailure::ConnectFailed).await;
                forward::record(
                    &ctx,
                    forward::Outcome::allowed(text, started_at, rule, Some((0, 0)), Some(reason)),
                )
                .await;
                return Ok(());
            }
        };
        let done = self
            .conn
            .channels_done
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let Some(done) = done else {
            return Ok(());
        };
        reply.accept().await;
        forward::relay(ctx, channel, up, text, rule, done);
        Ok(())
    }

    /// `ssh -R`: judged by the policy (kind `port_forward_remote`, the listen address
    /// `host:port`); allowed, the target is asked to listen and the connections it sends
    /// back are relayed to the client (`forward::serve_inbound`). Recorded either way.
    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let (Some(ctx), Some(upstream)) = (self.ctx.clone(), self.upstream.clone()) else {
            return Ok(false);
        };
        let started_at = ward_core::time::now_micros();
        let requested = format!("{address}:{port}");
        let rule = match forward::judge(&ctx, forward::REMOTE, Some(&requested)) {
            Ok(rule) => rule,
            Err(refusal) => {
                tracing::info!(session = %ctx.session_id, listen = %requested, rule = %refusal.rule, "ssh remote forward refused");
                let text = format!("forward remote listen {requested}");
                forward::record(
                    &ctx,
                    forward::Outcome::denied(text, started_at, refusal, false),
                )
                .await;
                return Ok(false);
            }
        };
        let (ok, text, error) = match upstream.tcpip_forward(address, *port).await {
            Ok(bound) => {
                if *port == 0 {
                    *port = bound;
                }
                ctx.forwards.add_listen(*port);
                (
                    true,
                    format!("forward remote listen {address}:{port}"),
                    None,
                )
            }
            Err(e) => (
                false,
                format!("forward remote listen {requested}"),
                Some(format!(
                    "target {} would not listen on {requested}: {e}",
                    ctx.target.target.name
                )),
            ),
        };
        forward::record(
            &ctx,
            forward::Outcome::allowed(text, started_at, rule, None, error),
        )
        .await;
        Ok(ok)
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let (Some(ctx), Some(upstream)) = (self.ctx.clone(), self.upstream.clone()) else {
            return Ok(false);
        };
        ctx.forwards.remove_listen(port);
        Ok(upstream.cancel_tcpip_forward(address, port).await.is_ok())
    }

    /// `ssh -A`: judged by the policy (kind `agent_forward`); allowed, the target is asked
    /// for agent forwarding on this channel, and each agent connection it opens later is
    /// relayed to the client's agent and recorded (`forward::serve_inbound`).
    async fn agent_request(
        &mut self,
        channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        let Some(ctx) = self.ctx.clone() else {
            return Ok(false);
        };
        let started_at = ward_core::time::now_micros();
        let text = "forward agent request".to_string();
        let rule = match forward::judge(&ctx, forward::AGENT, None) {
            Ok(rule) => rule,
            Err(refusal) => {
                tracing::info!(session = %ctx.session_id, rule = %refusal.rule, "ssh agent forwarding refused");
                forward::record(
                    &ctx,
                    forward::Outcome::denied(text, started_at, refusal, false),
                )
                .await;
                return Ok(false);
            }
        };
        let Some(link) = self.channels.get_mut(&channel) else {
            return Ok(false);
        };
        let ok = link.up.agent_forward(true).await.is_ok() && link.reply().await;
        if ok {
            ctx.forwards.grant_agent();
        }
        let error =
            (!ok).then(|| format!("target {} refused agent forwarding", ctx.target.target.name));
        forward::record(
            &ctx,
            forward::Outcome::allowed(text, started_at, rule, None, error),
        )
        .await;
        Ok(ok)
    }

    // Unix-socket forwards (`ssh -R /path:…`, `-L /path:…`) and X11 keep russh's
    // defaults, which refuse them (docs/ssh.md).
}

impl ClientHandler {
    /// Checks a token given as the SSH password or at the keyboard-interactive prompt,
    /// through the shared authenticator (which records refusals). The user name is the
    /// target, or `identity+target`; service tokens need the identity part, ward tokens and
    /// IdP tokens carry their identity.
    async fn admit_secret(&mut self, user: &str, secret: &str) -> Auth {
        let (claimed, target) = parse_user(user);
        let peer = self.peer.to_string();
        let attempt = ward_auth::Attempt {
            protocol: "ssh",
            user: claimed.unwrap_or(""),
            secret,
            target,
            target_exists: self.gateway.targets.contains_key(target),
            peer: &peer,
        };
        match self.gateway.auth.admit(attempt).await {
            Ok(admission) => {
                let mut credential = admission.credential;
                credential
                    .attributes
                    .push(("ssh_user".into(), user.to_string()));
                if let Some(claimed) = claimed
                    && claimed != &*admission.identity.name
                {
                    self.note_refusal(
                        user,
                        "identity_mismatch",
                        format!(
                            "user name names identity {claimed:?} but the token proves {:?}",
                            admission.identity.name
                        ),
                        Some(admission.identity.name.to_string()),
                    );
                    return Auth::reject();
                }
                self.admitted = Some(Admitted {
                    identity: admission.identity,
                    target: target.to_string(),
                    user: user.to_string(),
                    credential,
                    locked: None,
                });
                Auth::Accept
            }
            Err(refusal) if refusal.kind == ward_auth::RefusalKind::Locked => {
                let message = refusal
                    .message
                    .strip_prefix("ward: ")
                    .unwrap_or(&refusal.message)
                    .to_string();
                self.admitted = Some(Admitted {
                    identity: Identity {
                        name: claimed.unwrap_or("").into(),
                        source: "token",
                        groups: Vec::new(),
                        expires: None,
                        attributes: Vec::new(),
                    },
                    target: target.to_string(),
                    user: user.to_string(),
                    credential: CredentialInfo::default(),
                    locked: Some(message),
                });
                Auth::Accept
            }
            Err(refusal) => {
                tracing::debug!(peer = %self.peer, user, code = refusal.code, "ssh token refused");
                Auth::reject()
            }
        }
    }

    /// Judges and records a shell, exec or subsystem request, then starts it on the target
    /// (or refuses it on the client's channel).
    async fn start_program(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
        program: session::Program,
    ) -> Result<(), russh::Error> {
        let Some(link) = self.channels.get(&channel) else {
            session.channel_failure(channel)?;
            return Ok(());
        };
        match link.start(program).await {
            session::Started::Forwarded => self.answer_from_target(channel, session).await,
            session::Started::Refused => {
                // The client gets a successful reply and then ward's message on stderr and
                // an exit status: tools report that like any failed command.
                session.channel_success(channel)?;
                Ok(())
            }
            session::Started::Failed => {
                session.channel_failure(channel)?;
                Ok(())
            }
            session::Started::EndSession(why) => {
                self.conn.note_end(why.clone());
                self.disconnect(session, &why);
                Ok(())
            }
        }
    }
}

impl Drop for ClientHandler {
    fn drop(&mut self) {
        // Closing the target's connection ends every upstream channel, so the channel tasks
        // finish and record their results.
        self.channels.clear();
        if let Some(upstream) = self.upstream.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                let _ = upstream
                    .disconnect(Disconnect::ByApplication, "", "en")
                    .await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse_user;

    #[test]
    fn user_names_pick_the_target_and_maybe_the_identity() {
        assert_eq!(parse_user("web-1"), (None, "web-1"));
        assert_eq!(parse_user("alice+web-1"), (Some("alice"), "web-1"));
        assert_eq!(parse_user("a+b+c"), (Some("a"), "b+c"));
    }
}
