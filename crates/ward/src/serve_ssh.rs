//! `ward serve`'s SSH listener (`listen.ssh`): ward's host key, the gateway, the accept loop.
//!
//! Kept apart from `serve.rs` so the SSH adapter's start-up is one call there. The gateway
//! shares the registry, audit sink and controls with PostgreSQL, and reads the rules from
//! the PostgreSQL gateway, so a config reload changes them for both.

use anyhow::Context;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use ward_core::Config;

/// Starts the SSH listener when `listen.ssh` is set; `None` when SSH is off.
pub async fn start(
    config: &Config,
    pg: Arc<ward_pg::PgGateway>,
    shared: &ward_pg::Shared,
    shutdown: CancellationToken,
) -> anyhow::Result<Option<tokio::task::JoinHandle<()>>> {
    let Some(addr) = config.listen.ssh else {
        return Ok(None);
    };
    let host_key = ward_ssh::host_key::load_or_generate(&config.ssh_host_key_path())
        .map_err(|e| anyhow::anyhow!(e))?;
    let fingerprint = ward_ssh::fingerprint(host_key.public_key());
    let policy: ward_ssh::PolicySource = Arc::new(move || pg.policy());
    let gateway = ward_ssh::SshGateway::from_config(
        config,
        host_key,
        ward_ssh::Shared {
            registry: shared.registry.clone(),
            audit: shared.audit.clone(),
            controls: shared.controls.clone(),
            auth: shared.auth.clone(),
            approvals: shared.approvals.clone(),
            policy,
        },
    )
    .map_err(|e| anyhow::anyhow!("invalid config: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen for SSH clients on {addr} (listen.ssh)"))?;
    tracing::info!(ssh = %addr, host_key = %fingerprint, targets = gateway.targets.len(), "ssh listener ready");
    Ok(Some(tokio::spawn(ward_ssh::serve(
        listener,
        Arc::new(gateway),
        shutdown,
    ))))
}
