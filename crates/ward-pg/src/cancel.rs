//! Cancel requests: ward's own BackendKeyData, mapped to the target's.
//!
//! Clients get a process id and secret minted by ward, never the target's. A CancelRequest
//! arrives on a new connection; ward checks the secret (in constant time) and sends a
//! CancelRequest with the target's key to the target over a new connection of its own.

use crate::upstream::UpstreamConnector;
use rand::Rng;
use std::collections::HashMap;
use std::sync::Mutex;

struct Entry {
    secret: i32,
    connector: UpstreamConnector,
    target_key: (i32, i32),
}

/// Live cancel keys by ward-issued process id.
#[derive(Default)]
pub struct CancelMap {
    entries: Mutex<HashMap<i32, Entry>>,
}

impl CancelMap {
    /// Mints a key for a session whose target process is `target_key`.
    pub fn register(&self, connector: UpstreamConnector, target_key: (i32, i32)) -> (i32, i32) {
        let mut rng = rand::thread_rng();
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let pid = rng.gen_range(1..i32::MAX);
            if entries.contains_key(&pid) {
                continue;
            }
            let secret = rng.r#gen::<i32>();
            entries.insert(
                pid,
                Entry {
                    secret,
                    connector,
                    target_key,
                },
            );
            return (pid, secret);
        }
    }

    pub fn unregister(&self, pid: i32) {
        self.entries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
    }

    /// Forwards a client's CancelRequest if its key is valid. Invalid keys are ignored
    /// silently, as PostgreSQL does, so they cannot be probed.
    pub async fn cancel(&self, pid: i32, secret: i32) -> bool {
        let found = {
            let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            entries.get(&pid).and_then(|e| {
                ward_core::identity::secrets_equal(&e.secret.to_be_bytes(), &secret.to_be_bytes())
                    .then(|| (e.connector.clone(), e.target_key))
            })
        };
        let Some((connector, (target_pid, target_secret))) = found else {
            tracing::warn!(pid, "cancel request with an unknown or wrong key ignored");
            return false;
        };
        match connector.cancel(target_pid, target_secret).await {
            Ok(()) => {
                tracing::info!(target = %connector.target.name, "cancel request forwarded");
                true
            }
            Err(e) => {
                tracing::warn!(target = %connector.target.name, error = %e, "could not forward cancel request");
                false
            }
        }
    }
}
