//! The bounded queue between the data path and the store's writer.
//!
//! Sessions hand events to an [`AuditSink`]; a single writer drains them in batches. The
//! queue is bounded: when the writer falls behind, `record` waits, which slows the sessions
//! producing events (backpressure) instead of dropping events or growing memory without
//! limit. If the writer is gone, `record` fails and the adapter ends the session: ward does
//! not carry on unaudited.

use crate::event::AuditEvent;
use tokio::sync::mpsc;

/// The writer has stopped; nothing more can be recorded.
#[derive(Debug, thiserror::Error)]
#[error("the audit writer has stopped; ward refuses to continue unaudited")]
pub struct AuditClosed;

/// Cloneable handle used by sessions to record events.
#[derive(Clone, Debug)]
pub struct AuditSink {
    tx: mpsc::Sender<AuditEvent>,
}

impl AuditSink {
    /// A sink and the receiver its writer drains. `capacity` bounds events in flight.
    pub fn channel(capacity: usize) -> (AuditSink, mpsc::Receiver<AuditEvent>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (AuditSink { tx }, rx)
    }

    /// Queues one event, waiting while the queue is full.
    pub async fn record(&self, event: AuditEvent) -> Result<(), AuditClosed> {
        self.tx.send(event).await.map_err(|_| AuditClosed)
    }

    /// Queues an event from synchronous code (e.g. a `Drop`), waiting while the queue is
    /// full. Must not be called from inside the async runtime's worker threads.
    pub fn record_blocking(&self, event: AuditEvent) -> Result<(), AuditClosed> {
        self.tx.blocking_send(event).map_err(|_| AuditClosed)
    }

    /// Queues an event if there is room right now, handing it back otherwise.
    pub fn try_record(&self, event: AuditEvent) -> Result<(), Box<AuditEvent>> {
        self.tx.try_send(event).map_err(|e| match e {
            mpsc::error::TrySendError::Full(ev) | mpsc::error::TrySendError::Closed(ev) => {
                Box::new(ev)
            }
        })
    }
}
