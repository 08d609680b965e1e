//! What every adapter does when a session outlives its credential (`identity.on_expiry`).
//!
//! A token is checked at login; a session can last longer than the token. Each protocol
//! ends the session at the expiry or refuses what follows, in its own way, but with the
//! same wait and the same words, so an audit reads alike whichever protocol it was.

use crate::SessionId;
use chrono::{DateTime, SecondsFormat, Utc};
use std::time::Duration;

/// A time as RFC 3339 to the second, as ward shows expiry times to clients.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What expires, in words, for an identity proven by `source` (`Identity::source`): an SSH
/// user certificate's validity ends, everything else is a token.
pub fn credential_noun(source: &str) -> &'static str {
    if source == "ssh-cert" {
        "certificate"
    } else {
        "token"
    }
}

/// What the client is told when its session outlived its credential (`credential`: see
/// [`credential_noun`]).
pub fn expired_message(credential: &str, session_id: &SessionId, at: DateTime<Utc>) -> String {
    format!(
        "ward: the {credential} behind session {session_id} expired at {}; reconnect with a fresh {credential}",
        rfc3339(at)
    )
}

/// The session end reason recorded when `on_expiry: end` ends a session.
pub fn end_reason(credential: &str, at: DateTime<Utc>) -> String {
    format!("{credential} expired at {}", rfc3339(at))
}

/// Completes once the wall clock reaches `at` (never, for `None`). Sleeps in steps of at
/// most a minute, so a clock that jumps or a machine that was suspended is noticed.
pub async fn reached(at: Option<DateTime<Utc>>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    loop {
        let left = at - Utc::now();
        if left <= chrono::TimeDelta::zero() {
            return;
        }
        let step = left
            .to_std()
            .unwrap_or_default()
            .min(Duration::from_secs(60));
        // Wake a little after `at`, not before: the comparison above decides.
        tokio::time::sleep(step + Duration::from_millis(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_past_expiry_is_reached_at_once_and_none_never() {
        reached(Some(Utc::now() - chrono::TimeDelta::seconds(1))).await;
        let never = tokio::time::timeout(Duration::from_millis(20), reached(None)).await;
        assert!(never.is_err());
    }
}
