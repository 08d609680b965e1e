//! Containment: locks and pauses of identities, the incident responder's controls.
//!
//! Adapters ask [`Controls::check_lock`] before admitting a session and await
//! [`Controls::wait_until_resumed`] before forwarding each command; the admin API changes
//! the state. (Kill of one session goes through the session registry.)
//!
//! Both adapter calls sit on hot paths (every connection, every statement), so the common
//! case costs one atomic load: while no identity is locked or paused neither call takes a
//! lock or allocates, and [`Controls::wait_until_resumed`] completes on its first poll.
//!
//! A lock refuses new sessions; [`Controls::lock`] also ends the identity's live sessions
//! through the [`SessionRegistry`]. The lock is put in force *before* the registry is swept,
//! so an adapter that checks the lock again right after registering a session (see
//! [`Controls::check_lock`]) can never slip a session past a lock.
//!
//! A pause keeps sessions connected but holds their next statement. Each paused identity owns
//! a `watch` channel whose sender is dropped on resume: every waiter wakes at once, and the
//! number of waiters (statements held) is the channel's receiver count, for free.
//!
//! This type holds the state in force; persisting it (so that it survives a restart) is the
//! store's job, and [`Controls::load`] puts it back at start.

use crate::event::SessionId;
use crate::registry::SessionRegistry;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{PoisonError, RwLock};
use std::time::Duration;
use tokio::sync::watch;

/// Why an identity may not connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockInfo {
    pub identity: String,
    pub reason: String,
    /// Microseconds since the epoch; `None` = until unlocked.
    pub until: Option<i64>,
    pub by: String,
    /// When the lock was set, microseconds since the epoch.
    pub at: i64,
}

impl LockInfo {
    /// Whether the lock is still in force at `now` (microseconds since the epoch).
    pub fn in_force_at(&self, now: i64) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Why an identity's statements are held.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PauseInfo {
    pub identity: String,
    pub reason: String,
    pub by: String,
    /// When the pause began, microseconds since the epoch.
    pub at: i64,
}

/// The locks and pauses in force: what is persisted and what [`Controls::load`] restores.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ControlState {
    pub locks: Vec<LockInfo>,
    pub pauses: Vec<PauseInfo>,
}

/// What [`Controls::lock`] did.
#[derive(Debug)]
pub struct Locked {
    /// The lock this one replaced (e.g. to change its reason or duration), if any.
    pub previous: Option<LockInfo>,
    /// The live sessions that were asked to end.
    pub ended: Vec<SessionId>,
}

/// What [`Controls::resume`] did.
#[derive(Debug, PartialEq, Eq)]
pub struct Resumed {
    /// The pause that was lifted.
    pub pause: PauseInfo,
    /// How many held statements were released.
    pub released: usize,
}

/// One paused identity: why, and the channel its held statements wait on.
#[derive(Debug)]
struct Pause {
    info: PauseInfo,
    /// Never sent on; dropping it (on resume) wakes every receiver.
    release: watch::Sender<()>,
}

/// Identity locks and pauses, shared by every adapter and the admin API.
#[derive(Debug, Default)]
pub struct Controls {
    locks: RwLock<HashMap<String, LockInfo>>,
    /// Entries in `locks` (expired ones included); zero lets `check_lock` skip the map.
    lock_count: AtomicUsize,
    /// A read lock is enough to wait (subscribing takes `&Sender`), so statements of
    /// different sessions never queue behind each other here.
    pauses: RwLock<HashMap<String, Pause>>,
    /// Whether `pauses` is non-empty; false lets `wait_until_resumed` return at once.
    any_paused: AtomicBool,
}

impl Controls {
    pub fn new() -> Self {
        Controls::default()
    }

    /// The lock in force for `identity`, if any (expired locks are not in force).
    ///
    /// Adapters call it after authentication, to refuse the session, and should call it
    /// once more right after registering the session in the [`SessionRegistry`]: a lock set
    /// between the two calls is then either seen here or its sweep of the registry ends the
    /// new session.
    pub fn check_lock(&self, identity: &str) -> Option<LockInfo> {
        if self.lock_count.load(Ordering::SeqCst) == 0 {
            return None;
        }
        let locks = self.locks.read().unwrap_or_else(PoisonError::into_inner);
        let lock = locks.get(identity)?;
        lock.in_force_at(crate::time::now_micros())
            .then(|| lock.clone())
    }

    /// Returns at once unless `identity` is paused; otherwise waits until it is resumed.
    ///
    /// Cancel-safe: dropping the future (e.g. because the session was killed while its
    /// statement was held) just stops waiting.
    pub async fn wait_until_resumed(&self, identity: &str) {
        if !self.any_paused.load(Ordering::SeqCst) {
            return;
        }
        let mut release = {
            let pauses = self.pauses.read().unwrap_or_else(PoisonError::into_inner);
            match pauses.get(identity) {
                Some(pause) => pause.release.subscribe(),
                None => return,
            }
        };
        // Nothing is ever sent: `changed` fails once `resume` drops the sender.
        while release.changed().await.is_ok() {}
    }

    /// True when `identity` is paused right now.
    pub fn is_paused(&self, identity: &str) -> bool {
        self.any_paused.load(Ordering::SeqCst)
            && self
                .pauses
                .read()
                .unwrap_or_else(PoisonError::into_inner)
                .contains_key(identity)
    }

    /// How long a lock lasts when no duration is given: until it is unlocked.
    pub fn default_lock_duration() -> Option<Duration> {
        None
    }

    /// Puts `lock` in force (replacing any lock of the same identity) without touching live
    /// sessions; returns the lock it replaced. [`Controls::lock`] is the containment action;
    /// this is for restoring state and for tests.
    pub fn set_lock(&self, lock: LockInfo) -> Option<LockInfo> {
        let now = crate::time::now_micros();
        let mut locks = self.locks.write().unwrap_or_else(PoisonError::into_inner);
        // Expired locks are dropped here rather than on the read path, which must not write.
        locks.retain(|_, l| l.in_force_at(now));
        let previous = locks.insert(lock.identity.clone(), lock);
        self.lock_count.store(locks.len(), Ordering::SeqCst);
        previous
    }

    /// Locks an identity: refuses its new sessions and ends every live one, giving
    /// `locked: <reason>` as the end reason.
    ///
    /// The lock is in force before the registry is read, so no session registered after
    /// the sweep can miss it (see [`Controls::check_lock`]).
    pub fn lock(&self, lock: LockInfo, registry: &SessionRegistry) -> Locked {
        let identity = lock.identity.clone();
        let end_reason = format!("locked: {}", lock.reason);
        let previous = self.set_lock(lock);
        let ended = registry
            .list()
            .into_iter()
            .filter(|s| *s.identity == *identity)
            .map(|s| {
                s.end(end_reason.clone());
                s.id.clone()
            })
            .collect();
        Locked { previous, ended }
    }

    /// Lifts the lock of `identity`; returns it (even if it had already expired), or `None`
    /// when there was none.
    pub fn unlock(&self, identity: &str) -> Option<LockInfo> {
        let mut locks = self.locks.write().unwrap_or_else(PoisonError::into_inner);
        let removed = locks.remove(identity);
        self.lock_count.store(locks.len(), Ordering::SeqCst);
        removed
    }

    /// Pauses an identity: from now on its sessions' statements wait in
    /// [`Controls::wait_until_resumed`]. When it is already paused nothing changes and the
    /// pause in force is returned.
    pub fn pause(&self, pause: PauseInfo) -> Option<PauseInfo> {
        let mut pauses = self.pauses.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(existing) = pauses.get(&pause.identity) {
            return Some(existing.info.clone());
        }
        let (release, _) = watch::channel(());
        pauses.insert(
            pause.identity.clone(),
            Pause {
                info: pause,
                release,
            },
        );
        self.any_paused.store(true, Ordering::SeqCst);
        None
    }

    /// Resumes an identity, releasing every held statement; `None` when it was not paused.
    pub fn resume(&self, identity: &str) -> Option<Resumed> {
        let mut pauses = self.pauses.write().unwrap_or_else(PoisonError::into_inner);
        let pause = pauses.remove(identity)?;
        self.any_paused.store(!pauses.is_empty(), Ordering::SeqCst);
        drop(pauses);
        let released = pause.release.receiver_count();
        // Dropping the sender wakes every waiter.
        drop(pause.release);
        Some(Resumed {
            pause: pause.info,
            released,
        })
    }

    /// How many statements of `identity` are held by its pause right now.
    pub fn held(&self, identity: &str) -> usize {
        if !self.any_paused.load(Ordering::SeqCst) {
            return 0;
        }
        self.pauses
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(identity)
            .map_or(0, |p| p.release.receiver_count())
    }

    /// The locks in force, by identity.
    pub fn locks(&self) -> Vec<LockInfo> {
        let now = crate::time::now_micros();
        let locks = self.locks.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<LockInfo> = locks
            .values()
            .filter(|l| l.in_force_at(now))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.identity.cmp(&b.identity));
        list
    }

    /// The pauses in force, by identity.
    pub fn pauses(&self) -> Vec<PauseInfo> {
        let pauses = self.pauses.read().unwrap_or_else(PoisonError::into_inner);
        let mut list: Vec<PauseInfo> = pauses.values().map(|p| p.info.clone()).collect();
        list.sort_by(|a, b| a.identity.cmp(&b.identity));
        list
    }

    /// Everything in force right now.
    pub fn snapshot(&self) -> ControlState {
        ControlState {
            locks: self.locks(),
            pauses: self.pauses(),
        }
    }

    /// Restores persisted state at start, before any listener accepts a connection. Locks
    /// that expired while ward was down are skipped.
    pub fn load(&self, state: ControlState) {
        let now = crate::time::now_micros();
        for lock in state.locks {
            if lock.in_force_at(now) {
                self.set_lock(lock);
            }
        }
        for pause in state.pauses {
            self.pause(pause);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Waker};

    fn lock(identity: &str, until: Option<i64>) -> LockInfo {
        LockInfo {
            identity: identity.into(),
            reason: "incident 42".into(),
            until,
            by: "admin".into(),
            at: crate::time::now_micros(),
        }
    }

    fn pause(identity: &str) -> PauseInfo {
        PauseInfo {
            identity: identity.into(),
            reason: "looking".into(),
            by: "admin".into(),
            at: crate::time::now_micros(),
        }
    }

    /// Whether a future completes on its very first poll (no waiting, no wake-up).
    fn ready_at_once(f: impl Future<Output = ()>) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        pin!(f).poll(&mut cx).is_ready()
    }

    #[test]
    fn locks_are_in_force_until_they_expire_or_are_lifted() {
        let c = Controls::new();
        assert_eq!(c.check_lock("ci"), None);
        let now = crate::time::now_micros();

        c.set_lock(lock("ci", None));
        assert_eq!(c.check_lock("ci").unwrap().reason, "incident 42");
        assert_eq!(c.check_lock("alice"), None);

        c.set_lock(lock("bot", Some(now + 3_600_000_000)));
        assert!(c.check_lock("bot").is_some());
        // Replacing the lock with one that has already lapsed lifts it.
        let previous = c.set_lock(lock("bot", Some(now - 1))).unwrap();
        assert_eq!(previous.until, Some(now + 3_600_000_000));
        assert_eq!(c.check_lock("bot"), None);
        let listed: Vec<String> = c.locks().into_iter().map(|l| l.identity).collect();
        assert_eq!(listed, ["ci"]);

        assert!(c.unlock("ci").is_some());
        assert!(c.unlock("ci").is_none());
        assert_eq!(c.check_lock("ci"), None);
        // Setting a lock prunes expired ones, so the fast path comes back.
        c.set_lock(lock("x", None));
        c.unlock("x");
        assert_eq!(c.lock_count.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn expired_locks_lapse_on_their_own() {
        let c = Controls::new();
        let soon = crate::time::now_micros() + 30_000;
        c.set_lock(lock("ci", Some(soon)));
        assert!(c.check_lock("ci").is_some());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(c.check_lock("ci"), None);
        assert!(c.locks().is_empty());
    }

    #[test]
    fn nothing_waits_while_nothing_is_paused() {
        let c = Controls::new();
        assert!(ready_at_once(c.wait_until_resumed("ci")));
        c.pause(pause("other"));
        assert!(ready_at_once(c.wait_until_resumed("ci")));
        assert!(!ready_at_once(c.wait_until_resumed("other")));
        c.resume("other").unwrap();
        assert!(!c.any_paused.load(Ordering::SeqCst));
        assert!(ready_at_once(c.wait_until_resumed("other")));
    }

    #[tokio::test]
    async fn resume_releases_every_held_statement() {
        let c = Arc::new(Controls::new());
        assert_eq!(c.pause(pause("ci")), None);
        assert!(c.is_paused("ci") && !c.is_paused("alice"));
        // Pausing again changes nothing and says so.
        let mut again = pause("ci");
        again.reason = "other".into();
        assert_eq!(c.pause(again).unwrap().reason, "looking");

        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let c = c.clone();
                tokio::spawn(async move { c.wait_until_resumed("ci").await })
            })
            .collect();
        tokio::time::timeout(Duration::from_secs(5), async {
            while c.held("ci") < 3 {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("three statements held");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(waiters.iter().all(|w| !w.is_finished()));

        let resumed = c.resume("ci").unwrap();
        assert_eq!(resumed.released, 3);
        assert_eq!(resumed.pause.reason, "looking");
        for w in waiters {
            tokio::time::timeout(Duration::from_secs(5), w)
                .await
                .expect("released")
                .unwrap();
        }
        assert!(!c.is_paused("ci"));
        assert_eq!(c.resume("ci"), None);
        assert_eq!(c.held("ci"), 0);
    }

    #[tokio::test]
    async fn a_dropped_wait_is_no_longer_held() {
        let c = Controls::new();
        c.pause(pause("ci"));
        {
            let mut wait = pin!(c.wait_until_resumed("ci"));
            let mut cx = Context::from_waker(Waker::noop());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
            assert_eq!(c.held("ci"), 1);
        }
        assert_eq!(c.held("ci"), 0);
        assert_eq!(c.resume("ci").unwrap().released, 0);
    }

    #[test]
    fn lock_ends_the_identitys_live_sessions_only() {
        let c = Controls::new();
        let registry = SessionRegistry::new();
        let register = |identity: &str| {
            registry.register(
                SessionId::generate(),
                identity.into(),
                "db".into(),
                "postgres",
                "127.0.0.1:1".into(),
            )
        };
        let (a1, a2, b) = (register("ci"), register("ci"), register("alice"));
        let locked = c.lock(lock("ci", None), &registry);
        assert!(locked.previous.is_none());
        assert_eq!(locked.ended.len(), 2);
        for s in [&a1, &a2] {
            assert!(s.session.stop.is_cancelled());
            assert_eq!(
                s.session.end_reason().as_deref(),
                Some("locked: incident 42")
            );
        }
        assert!(!b.session.stop.is_cancelled());
        assert!(c.check_lock("ci").is_some());
    }

    #[test]
    fn load_restores_what_is_still_in_force() {
        let c = Controls::new();
        let now = crate::time::now_micros();
        c.load(ControlState {
            locks: vec![lock("ci", None), lock("old", Some(now - 1))],
            pauses: vec![pause("bot")],
        });
        assert!(c.check_lock("ci").is_some());
        assert!(c.check_lock("old").is_none());
        assert!(c.is_paused("bot"));
        let snapshot = c.snapshot();
        assert_eq!(snapshot.locks.len(), 1);
        assert_eq!(snapshot.pauses.len(), 1);
        assert_eq!(snapshot.pauses[0].identity, "bot");
    }
}
