//! Reloading the policy and masking rules while ward runs: on SIGHUP and when the config file changes.
//!
//! A new file is loaded and validated in full first; if anything is wrong the running
//! policy stays in force and the precise error is logged, so a typo never disables the
//! guardrails or takes the gateway down.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;
use ward_core::Config;

/// How often the config file's modification time is checked.
const POLL_EVERY: Duration = Duration::from_secs(1);

/// Watches for SIGHUP and changes of `path` until `shutdown`, applying new rules to `gateway`.
pub async fn watch(path: PathBuf, gateway: Arc<ward_pg::PgGateway>, shutdown: CancellationToken) {
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok();
    let mut seen = modified(&path);
    let mut tick = tokio::time::interval(POLL_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => "SIGHUP",
            _ = tick.tick() => {
                let now = modified(&path);
                if now == seen {
                    continue;
                }
                seen = now;
                "config file changed"
            }
        };
        reload(&path, &gateway, why);
    }
}

fn modified(path: &std::path::Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Loads `path` and puts its rules in force, or keeps the running ones if it is invalid.
pub fn reload(path: &std::path::Path, gateway: &ward_pg::PgGateway, why: &str) {
    let loaded = Config::load(path)
        .map_err(|e| e.to_string())
        .and_then(|config| {
            let invalid = |e: String| format!("invalid config file {}: {e}", path.display());
            let policy = config.policy().map_err(|e| invalid(e.to_string()))?;
            let masking = config.masking().map_err(|e| invalid(e.to_string()))?;
            Ok((policy, masking))
        });
    match loaded {
        Ok((policy, masking)) => {
            gateway.set_policy(policy);
            gateway.set_masking(masking);
            tracing::info!(trigger = why, path = %path.display(), "policy reloaded (guardrail and masking rules)");
        }
        Err(e) => {
            tracing::error!(trigger = why, error = %e, "config reload rejected; the running policy stays in force");
        }
    }
}
