//! The registry of live sessions: the one place that knows who is connected right now.
//!
//! Adapters register a session once it is authenticated and drop the returned guard when it
//! ends. Each entry carries a cancellation token, which is how containment (kill a session,
//! lock an identity) reaches into any adapter's relay loop without knowing its protocol.

use crate::event::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio_util::sync::CancellationToken;

/// What the registry knows about one live session.
#[derive(Debug)]
pub struct LiveSession {
    pub id: SessionId,
    pub identity: Arc<str>,
    pub target: Arc<str>,
    pub protocol: &'static str,
    pub client_addr: String,
    pub started_at: i64,
    /// Cancelled to end the session; the reason is stored first in `end_reason`.
    pub stop: CancellationToken,
    pub end_reason: Mutex<Option<String>>,
}

impl LiveSession {
    /// Asks the session to end, remembering why (the first reason wins).
    pub fn end(&self, reason: impl Into<String>) {
        let mut slot = self.end_reason.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(reason.into());
        }
        drop(slot);
        self.stop.cancel();
    }

    /// The reason given to [`LiveSession::end`], if any.
    pub fn end_reason(&self) -> Option<String> {
        self.end_reason
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Live sessions by id.
#[derive(Debug, Default)]
pub struct SessionRegistry {
    sessions: Mutex<HashMap<SessionId, Arc<LiveSession>>>,
}

/// Removes its session from the registry when dropped, however the session ends.
pub struct Registration {
    registry: Arc<SessionRegistry>,
    pub session: Arc<LiveSession>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.session.id);
    }
}

impl SessionRegistry {
    pub fn new() -> Arc<Self> {
        Arc::new(SessionRegistry::default())
    }

    pub fn register(
        self: &Arc<Self>,
        id: SessionId,
        identity: Arc<str>,
        target: Arc<str>,
        protocol: &'static str,
        client_addr: String,
    ) -> Registration {
        let session = Arc::new(LiveSession {
            id: id.clone(),
            identity,
            target,
            protocol,
            client_addr,
            started_at: crate::time::now_micros(),
            stop: CancellationToken::new(),
            end_reason: Mutex::new(None),
        });
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, session.clone());
        Registration {
            registry: self.clone(),
            session,
        }
    }

    pub fn get(&self, id: &str) -> Option<Arc<LiveSession>> {
        let map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.get(&SessionId(id.into())).cloned()
    }

    /// A snapshot of every live session.
    pub fn list(&self) -> Vec<Arc<LiveSession>> {
        let map = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_lives_as_long_as_its_guard() {
        let reg = SessionRegistry::new();
        let guard = reg.register(
            SessionId::generate(),
            "a".into(),
            "t".into(),
            "postgres",
            "1.2.3.4:5".into(),
        );
        assert_eq!(reg.len(), 1);
        guard.session.end("killed: test");
        guard.session.end("second reason loses");
        assert!(guard.session.stop.is_cancelled());
        assert_eq!(guard.session.end_reason().as_deref(), Some("killed: test"));
        drop(guard);
        assert!(reg.is_empty());
    }
}
