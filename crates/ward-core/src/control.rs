//! Containment: locks and pauses of identities, the incident responder's controls.
//!
//! Adapters ask [`Controls::check_lock`] before admitting a session and await
//! [`Controls::wait_until_resumed`] before forwarding each command; the admin API changes
//! the state. (Kill of one session goes through the session registry.)

use std::time::Duration;

/// Why an identity may not connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub identity: String,
    pub reason: String,
    /// Microseconds since the epoch; `None` = until unlocked.
    pub until: Option<i64>,
    pub by: String,
}

/// Identity locks and pauses, shared by every adapter and the admin API.
#[derive(Debug, Default)]
pub struct Controls {}

impl Controls {
    pub fn new() -> Self {
        Controls::default()
    }

    /// The lock in force for `identity`, if any (expired locks are not in force).
    pub fn check_lock(&self, identity: &str) -> Option<LockInfo> {
        let _ = identity;
        None
    }

    /// Returns at once unless `identity` is paused; otherwise waits until it is resumed.
    pub async fn wait_until_resumed(&self, identity: &str) {
        let _ = identity;
    }

    /// True when `identity` is paused right now.
    pub fn is_paused(&self, identity: &str) -> bool {
        let _ = identity;
        false
    }

    /// Placeholder so the type has a use for `Duration` in its future API.
    pub fn default_lock_duration() -> Option<Duration> {
        None
    }
}
