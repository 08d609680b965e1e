//! The bounded queue between the data path and the store's writer.
//!
//! Sessions hand events to an [`AuditSink`]; a single writer drains them in batches. The
//! queue is bounded: when the writer falls behind, `record` waits, which slows the sessions
//! producing events (backpressure) instead of dropping events or growing memory without
//! limit. If the writer is gone, `record` fails and the adapter ends the session: ward does
//! not carry on unaudited.
//!
//! In strict audit mode an adapter records each command with [`AuditSink::record_durable`]
//! and forwards it only once the writer has committed it to disk. The writer commits
//! whatever is queued at once, so the commands of many sessions share one fsync (group
//! commit).

use crate::event::AuditEvent;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

/// The writer has stopped; nothing more can be recorded.
#[derive(Debug, thiserror::Error)]
#[error("the audit writer has stopped; ward refuses to continue unaudited")]
pub struct AuditClosed;

/// Why an event recorded with [`AuditSink::record_durable`] is not known to be on disk.
#[derive(Debug, thiserror::Error)]
pub enum NotDurable {
    #[error("the audit writer has stopped")]
    Closed,
    #[error("the audit store could not write the event: {0}")]
    WriteFailed(String),
    #[error("the audit store did not confirm the event within {0:?}")]
    TimedOut(Duration),
}

/// Tells the sender of a durable event how its write went.
pub type DurableAck = oneshot::Sender<Result<(), String>>;

/// An event queued with [`AuditSink::record_acked`], not yet known to be on disk.
#[derive(Debug)]
pub struct PendingDurable {
    done: oneshot::Receiver<Result<(), String>>,
    deadline: tokio::time::Instant,
    timeout: Duration,
}

impl PendingDurable {
    /// Waits until the event is committed, or fails once it cannot be (or the deadline
    /// set when it was queued passes).
    pub async fn wait(self) -> Result<(), NotDurable> {
        match tokio::time::timeout_at(self.deadline, self.done).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(NotDurable::WriteFailed(e)),
            Ok(Err(_)) => Err(NotDurable::Closed),
            Err(_) => Err(NotDurable::TimedOut(self.timeout)),
        }
    }
}

/// Holds back what a session sends its client until the commands it answers are durable.
///
/// Strict audit lets a statement that cannot change anything (a plain read) go to the target
/// while its event is still being committed: the commit overlaps the round trip. The read's
/// results are what must not escape unrecorded, so the relay towards the client passes this
/// barrier before each write. A gateway that crashes meanwhile releases nothing; a failed
/// commit ends the session instead of releasing the results.
#[derive(Debug, Default)]
pub struct ReleaseBarrier {
    pending: std::sync::Mutex<Vec<PendingDurable>>,
}

impl ReleaseBarrier {
    /// Adds a commit the next release must wait for.
    pub fn hold(&self, pending: PendingDurable) {
        self.lock().push(pending);
    }

    /// Waits for every commit held so far. `spare` is a buffer kept by the caller so that
    /// steady-state releases allocate nothing; it is left empty.
    pub async fn release(&self, spare: &mut Vec<PendingDurable>) -> Result<(), NotDurable> {
        {
            let mut pending = self.lock();
            if pending.is_empty() {
                return Ok(());
            }
            std::mem::swap(&mut *pending, spare);
        }
        // Every one is awaited (not only the newest): commits are in queue order, but a
        // failed commit may be followed by a successful one once the store recovers.
        for held in spare.drain(..) {
            held.wait().await?;
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<PendingDurable>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One item of the writer's queue.
// Events are stored inline, as before ticks existed: boxing them would cost an allocation
// per event on the data path to save space in a rare variant.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum Queued {
    /// An event; `ack`, when set, is answered once the event is committed (or failed).
    Event {
        event: AuditEvent,
        ack: Option<DurableAck>,
    },
    /// Time passed: the writer signs chain heads that have waited long enough.
    Tick,
}

/// Cloneable handle used by sessions to record events.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<Queued>,
}

/// The writer's end of the queue.
#[derive(Debug)]
pub struct AuditReceiver {
    rx: mpsc::Receiver<Queued>,
}

impl AuditReceiver {
    /// The next item, blocking the thread (the writer runs on its own OS thread).
    pub fn blocking_recv_queued(&mut self) -> Option<Queued> {
        self.rx.blocking_recv()
    }

    /// The next item, awaited (for a writer that also waits on a timer).
    pub async fn recv_queued(&mut self) -> Option<Queued> {
        self.rx.recv().await
    }

    /// The next item if one is queued now.
    pub fn try_recv_queued(&mut self) -> Option<Queued> {
        self.rx.try_recv().ok()
    }

    /// The next event (ticks skipped, acks dropped), for tests and simple consumers.
    pub async fn recv(&mut self) -> Option<AuditEvent> {
        loop {
            if let Queued::Event { event, .. } = self.rx.recv().await? {
                return Some(event);
            }
        }
    }

    /// The next queued event, if any (ticks skipped, acks dropped).
    pub fn try_recv(&mut self) -> Result<AuditEvent, mpsc::error::TryRecvError> {
        loop {
            if let Queued::Event { event, .. } = self.rx.try_recv()? {
                return Ok(event);
            }
        }
    }
}

impl AuditSink {
    /// A sink and the receiver its writer drains. `capacity` bounds events in flight.
    pub fn channel(capacity: usize) -> (AuditSink, AuditReceiver) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (AuditSink { tx }, AuditReceiver { rx })
    }

    /// Queues one event, waiting while the queue is full.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditClosed> {
        self.tx
            .send(Queued::Event { event, ack: None })
            .await
            .map_err(|_| AuditClosed)
    }

    /// Queues `event` and waits until the writer has committed it to disk (or `timeout`
    /// passes). Events are committed in queue order, so a session that waits for its last
    /// event knows every earlier one of its events is durable too.
    pub async fn record_durable(
        &self,
        event: AuditEvent,
        timeout: Duration,
    ) -> Result<(), NotDurable> {
        self.record_acked(event, timeout).await?.wait().await
    }

    /// Queues `event` and returns at once with a handle that resolves when the writer has
    /// committed it, within `timeout` of now. For work that may overlap the commit but must
    /// not complete before it (a read's results are held until its command is durable).
    pub async fn record_acked(
        &self,
        event: AuditEvent,
        timeout: Duration,
    ) -> Result<PendingDurable, NotDurable> {
        let deadline = tokio::time::Instant::now() + timeout;
        let (ack, done) = oneshot::channel();
        let queued = Queued::Event {
            event,
            ack: Some(ack),
        };
        match tokio::time::timeout_at(deadline, self.tx.send(queued)).await {
            Ok(Ok(())) => Ok(PendingDurable {
                done,
                deadline,
                timeout,
            }),
            Ok(Err(_)) => Err(NotDurable::Closed),
            Err(_) => Err(NotDurable::TimedOut(timeout)),
        }
    }

    /// Asks the writer to sign chain heads that are due (time-based checkpoints). Skipped
    /// when the queue is full: the writer is busy and will get the next tick.
    pub fn tick(&self) {
        let _ = self.tx.try_send(Queued::Tick);
    }

    /// Queues an event from synchronous code (e.g. a `Drop`), waiting while the queue is
    /// full. Must not be called from inside the async runtime's worker threads.
    pub fn record_blocking(&self, event: AuditEvent) -> Result<(), AuditClosed> {
        self.tx
            .blocking_send(Queued::Event { event, ack: None })
            .map_err(|_| AuditClosed)
    }

    /// Queues an event if there is room right now, handing it back otherwise.
    pub fn try_record(&self, event: AuditEvent) -> Result<(), Box<AuditEvent>> {
        self.tx
            .try_send(Queued::Event { event, ack: None })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(q) | mpsc::error::TrySendError::Closed(q) => {
                    match q {
                        Queued::Event { event, .. } => Box::new(event),
                        Queued::Tick => unreachable!("only events are sent here"),
                    }
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{SessionEnd, SessionId};

    fn event() -> AuditEvent {
        AuditEvent::SessionEnd(SessionEnd {
            session_id: SessionId::generate(),
            ended_at: 0,
            reason: "test".into(),
        })
    }

    /// The writer's side: answers each acked event in turn with `outcome`.
    fn answer(rx: &mut AuditReceiver, outcome: Result<(), String>) {
        match rx.try_recv_queued() {
            Some(Queued::Event { ack: Some(ack), .. }) => {
                let _ = ack.send(outcome);
            }
            other => panic!("expected an acked event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn release_waits_for_every_held_commit() {
        let (sink, mut rx) = AuditSink::channel(8);
        let barrier = ReleaseBarrier::default();
        let mut spare = Vec::new();
        assert!(barrier.release(&mut spare).await.is_ok(), "nothing held");
        for _ in 0..2 {
            let pending = sink.record_acked(event(), Duration::from_secs(5)).await;
            barrier.hold(pending.unwrap());
        }
        let release = barrier.release(&mut spare);
        tokio::pin!(release);
        assert!(
            futures_poll_once(&mut release).await.is_none(),
            "held until committed"
        );
        answer(&mut rx, Ok(()));
        assert!(futures_poll_once(&mut release).await.is_none(), "one left");
        answer(&mut rx, Ok(()));
        assert!(release.await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_commit_fails_the_release_even_if_a_later_one_succeeds() {
        let (sink, mut rx) = AuditSink::channel(8);
        let barrier = ReleaseBarrier::default();
        for _ in 0..2 {
            let pending = sink.record_acked(event(), Duration::from_secs(5)).await;
            barrier.hold(pending.unwrap());
        }
        answer(&mut rx, Err("disk full".into()));
        answer(&mut rx, Ok(()));
        let mut spare = Vec::new();
        assert!(matches!(
            barrier.release(&mut spare).await,
            Err(NotDurable::WriteFailed(e)) if e == "disk full"
        ));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unanswered_commit_times_out() {
        let (sink, _rx) = AuditSink::channel(8);
        let pending = sink.record_acked(event(), Duration::from_secs(2)).await;
        assert!(matches!(
            pending.unwrap().wait().await,
            Err(NotDurable::TimedOut(_))
        ));
    }

    /// Polls `f` once: `Some` if it completed.
    async fn futures_poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
        tokio::select! {
            biased;
            out = f => Some(out),
            _ = tokio::task::yield_now() => None,
        }
    }
}
