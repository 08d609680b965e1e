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
        let (ack, done) = oneshot::channel();
        let wait = async {
            self.tx
                .send(Queued::Event {
                    event,
                    ack: Some(ack),
                })
                .await
                .map_err(|_| NotDurable::Closed)?;
            match done.await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(NotDurable::WriteFailed(e)),
                Err(_) => Err(NotDurable::Closed),
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .unwrap_or(Err(NotDurable::TimedOut(timeout)))
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
