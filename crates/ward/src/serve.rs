//! `ward serve`: loads the config, prepares the data directory, and runs every listener.
//!
//! On first start the data directory is created with the embedded SQLite store, a
//! self-signed TLS certificate (unless `tls.cert`/`tls.key` are configured) and an admin
//! token for the CLI (unless `api.admin_token_hash` is configured). Later starts reuse them.

use anyhow::{Context, bail};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use ward_core::identity::{generate_token, parse_token_hash};
use ward_core::{AuditSink, Config, SessionRegistry};

/// How long running sessions get to finish after SIGINT/SIGTERM before ward exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Threads serving PostgreSQL clients: one per core unless `WARD_PG_THREADS` says otherwise.
fn postgres_threads() -> usize {
    std::env::var("WARD_PG_THREADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Runs the gateway until SIGINT/SIGTERM.
pub async fn run(config_path: &Path) -> anyhow::Result<()> {
    let config = Config::load(config_path)?;
    fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let _ = fs::set_permissions(&config.data_dir, fs::Permissions::from_mode(0o700));

    let tls = server_tls(&config)?;
    let admin_token_hash = admin_token_hash(&config)?;

    let sqlite = config.sqlite_path();
    let (audit, audit_rx) = AuditSink::channel(config.audit.queue);
    // Session logs are hash-chained and their heads signed with ward's own key, generated
    // on first start (`ward keys show` prints its public half).
    let signer = ward_store::chain::LogSigner::load_or_generate(&config.signing_key_path())
        .map_err(|e| anyhow::anyhow!(e))?;
    tracing::info!(key_id = %signer.key_id(), "session logs are signed");
    let strict = config.audit.mode == ward_core::config::AuditMode::Strict;
    let writer = ward_store::spawn_writer_with(
        sqlite.clone(),
        audit_rx,
        ward_store::WriterOptions {
            batch: config.audit.batch,
            signer: Some(signer),
            strict,
            fsync: config.audit.fsync,
            journal: config.audit.journal.then(|| ward_store::JournalOptions {
                path: config.journal_path(),
                size: config.audit.journal_size,
            }),
            ..Default::default()
        },
    )
    .context("cannot start the audit writer")?;
    // Locks and pauses outlive restarts: restore them before any listener accepts a client
    // (read once the writer has recovered what a previous run left in the journal).
    let store = ward_store::SqliteStore::open(&sqlite)
        .with_context(|| format!("cannot open the audit store {}", sqlite.display()))?;
    let persisted_controls = store.controls().with_context(|| {
        format!(
            "cannot read the locks and pauses in force from the audit store {}",
            sqlite.display()
        )
    })?;
    // Ward tokens (`ward login`, `ward token mint`) too.
    let ward_tokens = Arc::new(ward_auth::WardTokens::new());
    ward_tokens.load(
        store
            .active_ward_tokens(ward_core::time::now_micros())
            .with_context(|| {
                format!(
                    "cannot read the ward tokens in force from the audit store {}",
                    sqlite.display()
                )
            })?
            .into_iter()
            .map(|t| t.issued),
    );
    drop(store);
    tracing::info!(
        mode = if strict { "strict" } else { "buffered" },
        "audit: {}",
        if strict && config.audit.fsync && config.audit.journal {
            "statements are forwarded only once their event is on disk (journal fsync; reads overlap it)"
        } else if strict && config.audit.fsync {
            "statements are forwarded only once their event is on disk (store fsync; reads overlap it)"
        } else if strict {
            "statements are forwarded only once their event is committed (no fsync: survives a crash of ward, not of the machine)"
        } else {
            "events are written in batches (a crash can lose the last moments)"
        }
    );
    // SIEM forwarding (`forward:`): a thread per sink reads the session log after the sink's
    // cursor on a connection of its own, so a slow or dead receiver never slows sessions.
    let forwarders = ward_forward::start(&config.forward, &sqlite)
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", config_path.display()))?;
    // Time-based checkpoints: the writer signs heads left unsigned for a while.
    let ticker = {
        let audit = audit.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                every.tick().await;
                audit.tick();
            }
        })
    };
    // Retention (audit.retention): sessions that ended long ago are deleted, at start and
    // hourly, on a connection of its own.
    if config.audit.retention == Some(Duration::ZERO) {
        bail!(
            "audit.retention: 0 would delete every ended session; remove it (or set null) to keep everything"
        );
    }
    let retention = config
        .audit
        .retention
        .map(|keep| spawn_retention(sqlite.clone(), keep));

    let registry = SessionRegistry::new();
    let controls = Arc::new(ward_core::control::Controls::new());
    controls.load(persisted_controls);
    let restored = controls.snapshot();
    if !restored.locks.is_empty() || !restored.pauses.is_empty() {
        tracing::warn!(
            locked = ?restored.locks.iter().map(|l| l.identity.as_str()).collect::<Vec<_>>(),
            paused = ?restored.pauses.iter().map(|p| p.identity.as_str()).collect::<Vec<_>>(),
            "containment in force from before the restart (see `ward controls`)"
        );
    }
    let mut approvals = ward_core::approvals::Approvals::new(audit.clone());
    if let Some(webhook) = &config.approvals.webhook {
        let notifier = ward_api::webhook::WebhookNotifier::new(webhook)
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", config_path.display()))?;
        tracing::info!(webhook = ?webhook.url, format = ?webhook.format, "approval requests are announced by webhook");
        approvals = approvals.with_notifier(Arc::new(notifier));
    }
    let approvals = Arc::new(approvals);
    // IdP and CI tokens (identity.oidc, identity.workload): one verifier for the process, so
    // every adapter shares its key caches. Keys are fetched in the background now, so the
    // first client need not wait; an issuer that cannot be reached is retried on use.
    let verifier = Arc::new(ward_oidc::Verifier::new(
        &config.identity.oidc,
        &config.identity.workload,
    ));
    if !verifier.is_empty() {
        let verifier = verifier.clone();
        tokio::spawn(async move {
            for (issuer, why) in verifier.prefetch(chrono::Utc::now()).await {
                tracing::warn!(%issuer, error = %why, "cannot fetch the signing keys of a token issuer; its tokens are refused until they can be fetched (retried on use)");
            }
        });
    }
    let shared = ward_pg::Shared {
        registry: registry.clone(),
        audit: audit.clone(),
        controls: controls.clone(),
        approvals: approvals.clone(),
        auth: Arc::new(ward_auth::Authenticator::new(
            config.token_book(),
            verifier,
            ward_tokens.clone(),
            controls.clone(),
            audit.clone(),
        )),
    };
    let gateway = ward_pg::PgGateway::from_config(&config, Some(tls), shared.clone())
        .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", config_path.display()))?;
    let gateway = Arc::new(gateway);

    let shards = postgres_threads();
    let pg_listeners = ward_pg::listener::bind_shared(config.listen.postgres, shards)
        .with_context(|| {
            format!(
                "cannot listen for PostgreSQL clients on {} (listen.postgres)",
                config.listen.postgres
            )
        })?;
    let api_listener = tokio::net::TcpListener::bind(config.listen.api)
        .await
        .with_context(|| {
            format!(
                "cannot listen for the admin API on {} (listen.api)",
                config.listen.api
            )
        })?;

    let shutdown = CancellationToken::new();
    // SSH (listen.ssh), sharing the registry, audit, controls and rules.
    let ssh = crate::serve_ssh::start(&config, gateway.clone(), &shared, shutdown.clone()).await?;
    let reloader = tokio::spawn(crate::reload::watch(
        config_path.to_path_buf(),
        gateway.clone(),
        shutdown.clone(),
    ));
    let api_state = ward_api::ApiState::new(
        ward_store::StoreReader::new(sqlite.clone()),
        registry.clone(),
        admin_token_hash,
    )
    .with_controls(controls.clone())
    .with_auth(shared.auth.clone())
    .with_login(
        ward_api::login::LoginSettings::new(&config.identity, config.targets.keys().cloned())
            .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", config_path.display()))?,
    )
    .with_approvals(approvals.clone(), config.token_book())
    .with_audit(audit.clone(), config.audit.durable_timeout)
    .with_roles(config.api.roles.clone())
    .with_metrics({
        let metrics = forwarders.metrics();
        move || metrics.render()
    });
    let api_shutdown = shutdown.clone();
    let api = tokio::spawn(ward_api::serve(api_listener, api_state, async move {
        api_shutdown.cancelled().await
    }));
    // One accept loop per core, each on its own single-threaded runtime: a session lives on
    // one thread from accept to end, so the relay never pays for cross-thread wake-ups or
    // work stealing, and the kernel (SO_REUSEPORT) spreads new connections over the loops.
    let drained = CancellationToken::new();
    let mut pg_threads = Vec::new();
    for (i, listener) in pg_listeners.into_iter().enumerate() {
        let gateway = gateway.clone();
        let shutdown = shutdown.clone();
        let drained = drained.clone();
        // Only I/O and timers: these runtimes never handle signals or child processes, and
        // leaving those drivers out keeps their bookkeeping off every loop turn.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build()
            .context("cannot start a PostgreSQL listener thread")?;
        let thread = std::thread::Builder::new()
            .name(format!("ward-pg-{i}"))
            .spawn(move || {
                runtime.block_on(async move {
                    match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => ward_pg::serve(listener, gateway, shutdown).await,
                        Err(e) => {
                            tracing::error!(error = %e, "cannot register the PostgreSQL listener")
                        }
                    }
                    drained.cancelled().await;
                })
            })
            .context("cannot start a PostgreSQL listener thread")?;
        pg_threads.push(thread);
    }

    tracing::info!(
        postgres = %config.listen.postgres,
        api = %config.listen.api,
        store = %sqlite.display(),
        targets = gateway.targets.len(),
        "ward is ready"
    );

    wait_for_signal().await;
    tracing::info!("shutting down: no new connections; ending live sessions");
    shutdown.cancel();
    for session in registry.list() {
        session.end("ward is shutting down");
    }
    let deadline = tokio::time::Instant::now() + SHUTDOWN_GRACE;
    while !registry.is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drained.cancel();
    let _ = tokio::task::spawn_blocking(move || {
        for thread in pg_threads {
            let _ = thread.join();
        }
    })
    .await;
    let _ = api.await;
    if let Some(ssh) = ssh {
        let _ = ssh.await;
    }
    // Everything that holds an audit sink goes, so the writer sees the queue close.
    reloader.abort();
    let _ = reloader.await;
    drop(gateway);
    drop(approvals);
    ticker.abort();
    if let Some(retention) = retention {
        retention.abort();
    }
    let _ = ticker.await;
    drop(audit);
    // The writer drains what is queued, then exits once every sink is gone.
    let joined = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || writer.join()),
    )
    .await;
    if joined.is_err() {
        tracing::warn!(
            "audit writer did not finish in time; some sessions may still hold its queue"
        );
    }
    // Forwarders finish the delivery in progress; the rest waits in the log for the next
    // start.
    forwarders.request_stop();
    let _ = tokio::time::timeout(
        SHUTDOWN_GRACE,
        tokio::task::spawn_blocking(move || forwarders.stop()),
    )
    .await;
    tracing::info!("stopped");
    Ok(())
}

/// How often retention runs after its first pass at start.
const RETENTION_EVERY: Duration = Duration::from_secs(3600);

/// Deletes the sessions that ended more than `keep` ago, now and every
/// [`RETENTION_EVERY`], in a blocking task with its own store connection.
fn spawn_retention(sqlite: PathBuf, keep: Duration) -> tokio::task::JoinHandle<()> {
    tracing::info!(
        retention = %humantime::format_duration(keep),
        "audit retention: sessions that ended longer ago are deleted hourly (the gateway chain is kept)"
    );
    tokio::spawn(async move {
        let mut every = tokio::time::interval(RETENTION_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let path = sqlite.clone();
            let pass = tokio::task::spawn_blocking(move || {
                let keep = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
                let cutoff = ward_core::time::now_micros().saturating_sub(keep);
                ward_store::SqliteStore::open(&path)?.apply_retention(cutoff)
            })
            .await;
            match pass {
                Ok(Ok(c)) if c.sessions > 0 => tracing::info!(
                    sessions = c.sessions,
                    statements = c.statements,
                    events = c.events,
                    signatures = c.signatures,
                    approval_events = c.approval_events,
                    control_events = c.control_events,
                    "audit retention: deleted sessions past the retention period"
                ),
                Ok(Ok(_)) => tracing::debug!("audit retention: nothing to delete"),
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "audit retention pass failed; next try in an hour")
                }
                Err(e) => tracing::warn!(error = %e, "audit retention pass did not finish"),
            }
        }
    })
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(t) => { t.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}

/// The client-facing TLS configuration: configured files, or a self-signed certificate
/// generated once into `<data_dir>/tls/`.
fn server_tls(config: &Config) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let (cert_path, key_path) = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => (cert.clone(), key.clone()),
        _ => ensure_self_signed(&config.data_dir.join("tls"))?,
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&cert_path)
        .with_context(|| format!("cannot read TLS certificate {}", cert_path.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("invalid PEM in TLS certificate {}", cert_path.display()))?;
    if certs.is_empty() {
        bail!("no certificate found in {}", cert_path.display());
    }
    let key = PrivateKeyDer::from_pem_file(&key_path)
        .with_context(|| format!("cannot read TLS private key {}", key_path.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .with_context(|| {
            format!(
                "TLS certificate {} does not match key {}",
                cert_path.display(),
                key_path.display()
            )
        })?;
    Ok(Arc::new(tls))
}

fn ensure_self_signed(dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let cert_path = dir.join("cert.pem");
    let key_path = dir.join("key.pem");
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut names = vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ];
    if let Ok(host) = fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .context("cannot generate a self-signed certificate")?;
    write_private(&key_path, generated.key_pair.serialize_pem().as_bytes())?;
    fs::write(&cert_path, generated.cert.pem())
        .with_context(|| format!("cannot write {}", cert_path.display()))?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed TLS certificate (set tls.cert and tls.key to use your own)");
    Ok((cert_path, key_path))
}

/// The admin token's hash: configured, or from a token generated once into
/// `<data_dir>/admin.token` (mode 0600), where the CLI reads it.
fn admin_token_hash(config: &Config) -> anyhow::Result<[u8; 32]> {
    if let Some(hash) = &config.api.admin_token_hash {
        return parse_token_hash(hash).map_err(|e| anyhow::anyhow!("api.admin_token_hash: {e}"));
    }
    let path = config.data_dir.join("admin.token");
    let token = match fs::read_to_string(&path) {
        Ok(token) => token.trim().to_string(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let token = generate_token().token;
            write_private(&path, format!("{token}\n").as_bytes())?;
            tracing::info!(path = %path.display(), "generated the admin API token");
            token
        }
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    parse_token_hash(&ward_core::identity::hash_token(&token)).map_err(|e| anyhow::anyhow!(e))
}

fn write_private(path: &Path, content: &[u8]) -> anyhow::Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(content)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
