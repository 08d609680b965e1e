//! SIEM forwarding: ward's session log, delivered at least once to the sinks of `forward:`.
//!
//! The session log (`event_log` in the SQLite store) is durable and append-only before
//! anything reaches a sink, so it is the spool: each sink has a forwarder thread with its own
//! store connection that reads the events after the sink's cursor, delivers them, and only
//! then moves the cursor (`forward_cursors`). Failures are retried with exponential backoff
//! (capped at [`Options::max_backoff`]) while the log keeps growing; nothing is dropped and
//! the data path never waits for a receiver. A crash between a delivery and its cursor
//! update re-delivers that batch.
//!
//! Sinks: JSON lines to a file (size rotation) or stdout ([`file`]), RFC 5424 syslog over
//! UDP, TCP or TLS ([`syslog`]), HTTP batch POST as a JSON array or Splunk HEC ([`http`]).
//! Every event travels in the same versioned [`envelope`] (docs/events.md).
//! [`metrics::Metrics`] counts deliveries and failures and tracks queue depth and lag per
//! sink, rendered in the Prometheus text format for `GET /metrics`.
//!
//! Logs name the sink, counts and errors, never event content (it can hold SQL text).

pub mod envelope;
pub mod file;
pub mod http;
pub mod metrics;
pub mod syslog;
mod tls;

use metrics::{Metrics, SinkMetrics};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;
use ward_core::forward::{ForwardSink, SinkKind, StartAt};
use ward_store::{ForwardLog, LogRow};

/// Why forwarding cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forward sink {sink:?}: {message}")]
    Config { sink: String, message: String },
    #[error("forward sink {sink:?}: {source}")]
    Store {
        sink: String,
        source: ward_store::StoreError,
    },
    #[error("cannot start the forwarder thread of sink {sink:?}: {source}")]
    Spawn {
        sink: String,
        source: std::io::Error,
    },
}

/// Why one delivery failed (it is retried).
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("TLS: {0}")]
    Tls(String),
    #[error("the receiver answered HTTP {0}")]
    Status(u16),
    #[error("{0}")]
    Transport(String),
}

/// One event ready for a sink: the stored row and its envelope (docs/events.md).
#[derive(Debug)]
pub struct Item<'a> {
    pub row: &'a LogRow,
    /// The envelope as compact JSON (one line).
    pub json: String,
}

/// Something events are delivered to. `deliver` returns once the whole batch is handed over
/// (written and fsync'd, sent, or acknowledged with a 2xx); an error means "retry it all".
pub trait Sink: Send {
    fn deliver(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError>;
}

/// Timings of the forwarder loops (defaults for `ward serve`; tests shorten them).
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// How often a caught-up forwarder looks for new events.
    pub poll_interval: Duration,
    /// Pause after the first failed delivery; doubled after each further failure.
    pub min_backoff: Duration,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            poll_interval: Duration::from_millis(200),
            min_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
        }
    }
}

/// A stop flag the forwarder threads sleep on, so stopping never waits out a backoff.
#[derive(Default)]
struct Stop {
    stopped: Mutex<bool>,
    wake: Condvar,
}

impl Stop {
    fn set(&self) {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.wake.notify_all();
    }

    fn is_set(&self) -> bool {
        *self.stopped.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sleeps for `d` or until stopped; true when stopped.
    fn wait(&self, d: Duration) -> bool {
        let guard = self.stopped.lock().unwrap_or_else(|e| e.into_inner());
        let (guard, _) = self
            .wake
            .wait_timeout_while(guard, d, |stopped| !*stopped)
            .unwrap_or_else(|e| e.into_inner());
        *guard
    }
}

/// The running forwarders: one thread per sink.
pub struct Forwarders {
    metrics: Arc<Metrics>,
    stop: Arc<Stop>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for Forwarders {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarders")
            .field("sinks", &self.threads.len())
            .finish()
    }
}

impl Forwarders {
    /// The metrics of every sink (shared with the threads).
    pub fn metrics(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Asks every forwarder to stop (a delivery in progress finishes first).
    pub fn request_stop(&self) {
        self.stop.set();
    }

    /// Stops every forwarder and waits for the threads to end.
    pub fn stop(self) {
        self.stop.set();
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

/// Starts a forwarder per sink of `sinks` on the store at `store` (default timings).
pub fn start(sinks: &[ForwardSink], store: &Path) -> Result<Forwarders, ForwardError> {
    start_with(sinks, store, Options::default())
}

/// Starts a forwarder per sink. Everything that can be checked without the receivers is
/// checked now (secrets, CA files, the store), so a broken sink stops `ward serve` at start;
/// an unreachable receiver does not.
pub fn start_with(
    sinks: &[ForwardSink],
    store: &Path,
    options: Options,
) -> Result<Forwarders, ForwardError> {
    let stop = Arc::new(Stop::default());
    let mut prepared = Vec::new();
    for config in sinks {
        let config_err = |message: String| ForwardError::Config {
            sink: config.name.clone(),
            message,
        };
        let store_err = |source| ForwardError::Store {
            sink: config.name.clone(),
            source,
        };
        let sink = build_sink(config).map_err(config_err)?;
        let log = ForwardLog::open(store).map_err(store_err)?;
        let cursor = match log.cursor(&config.name).map_err(store_err)? {
            Some(c) => c,
            None => {
                let c = match config.start {
                    StartAt::Beginning => 0,
                    StartAt::End => log.max_event_id().map_err(store_err)?,
                };
                log.set_cursor(&config.name, c).map_err(store_err)?;
                c
            }
        };
        prepared.push((config.clone(), sink, log, cursor));
    }
    let metrics = Arc::new(Metrics::new(
        sinks.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
    ));
    let mut threads = Vec::new();
    for (i, (config, sink, log, cursor)) in prepared.into_iter().enumerate() {
        let worker = Worker {
            sink,
            log,
            cursor,
            metrics: metrics.sink(i),
            stop: stop.clone(),
            options,
            config,
        };
        let name = worker.config.name.clone();
        tracing::info!(
            sink = %name,
            kind = worker.config.kind.as_str(),
            cursor = worker.cursor,
            "forwarding the session log"
        );
        match std::thread::Builder::new()
            .name(format!("ward-forward-{name}"))
            .spawn(move || worker.run())
        {
            Ok(t) => threads.push(t),
            Err(source) => {
                stop.set();
                for t in threads {
                    let _ = t.join();
                }
                return Err(ForwardError::Spawn { sink: name, source });
            }
        }
    }
    Ok(Forwarders {
        metrics,
        stop,
        threads,
    })
}

fn build_sink(config: &ForwardSink) -> Result<Box<dyn Sink>, String> {
    Ok(match config.kind {
        SinkKind::Stdout => Box::new(file::StdoutSink),
        SinkKind::File if config.is_stdout() => Box::new(file::StdoutSink),
        SinkKind::File => Box::new(file::FileSink::new(config)?),
        SinkKind::Syslog => Box::new(syslog::SyslogSink::new(config)?),
        SinkKind::Http => Box::new(http::HttpSink::new(config)?),
    })
}

/// This machine's host name (for syslog HOSTNAME and Splunk `host`), `-` when unknown.
pub(crate) fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates on success
    // (and we stop at the buffer's end if it did not).
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "-".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).trim().to_string();
    if name.is_empty() { "-".into() } else { name }
}

/// One sink's loop: read after the cursor, deliver, advance.
struct Worker {
    config: ForwardSink,
    sink: Box<dyn Sink>,
    log: ForwardLog,
    cursor: i64,
    metrics: Arc<SinkMetrics>,
    stop: Arc<Stop>,
    options: Options,
}

impl Worker {
    fn run(mut self) {
        let name = self.config.name.clone();
        let mut backoff = self.options.min_backoff;
        loop {
            if self.stop.is_set() {
                break;
            }
            self.refresh_metrics();
            let rows = match self.log.events_after(self.cursor, self.config.batch) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::warn!(sink = %name, error = %e, "forwarding: cannot read the session log; retrying");
                    if self.stop.wait(backoff) {
                        break;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    continue;
                }
            };
            backoff = self.options.min_backoff;
            let Some(last) = rows.last().map(|r| r.id) else {
                if self.stop.wait(self.options.poll_interval) {
                    break;
                }
                continue;
            };
            let items: Vec<Item<'_>> = rows
                .iter()
                .filter(|r| self.config.wants(&r.kind))
                .map(|row| Item {
                    row,
                    json: envelope::envelope(row),
                })
                .collect();
            if !self.deliver(&items) {
                break;
            }
            let delivered = items.len() as u64;
            drop(items);
            if !self.advance(last) {
                break;
            }
            self.metrics.delivered(delivered);
        }
        tracing::info!(sink = %name, cursor = self.cursor, "forwarder stopped");
    }

    /// Delivers `items` until it works; false when stopped before it did.
    fn deliver(&mut self, items: &[Item<'_>]) -> bool {
        if items.is_empty() {
            return true;
        }
        let mut backoff = self.options.min_backoff;
        let mut failures = 0u64;
        loop {
            match self.sink.deliver(items) {
                Ok(()) => {
                    if failures > 0 {
                        tracing::info!(
                            sink = %self.config.name,
                            events = items.len(),
                            failed_attempts = failures,
                            "forwarding: delivering again"
                        );
                    }
                    return true;
                }
                Err(e) => {
                    failures += 1;
                    self.metrics.failed();
                    tracing::warn!(
                        sink = %self.config.name,
                        events = items.len(),
                        attempt = failures,
                        retry_in_ms = backoff.as_millis() as u64,
                        error = %e,
                        "forwarding: delivery failed; the events stay in the log and will be retried"
                    );
                    if self.stop.wait(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                    self.refresh_metrics();
                }
            }
        }
    }

    /// Persists the cursor at `last`; false when stopped before it could (the batch is then
    /// delivered again next time: at least once).
    fn advance(&mut self, last: i64) -> bool {
        let mut backoff = self.options.min_backoff;
        loop {
            match self.log.set_cursor(&self.config.name, last) {
                Ok(()) => {
                    self.cursor = last;
                    self.refresh_metrics();
                    return true;
                }
                Err(e) => {
                    tracing::warn!(sink = %self.config.name, error = %e, "forwarding: cannot save the cursor; retrying");
                    if self.stop.wait(backoff) {
                        return false;
                    }
                    backoff = (backoff * 2).min(self.options.max_backoff);
                }
            }
        }
    }

    fn refresh_metrics(&mut self) {
        let max = match self.log.max_event_id() {
            Ok(m) => m,
            Err(_) => return,
        };
        if max < self.cursor {
            // The newest events were deleted (retention) and ids will be handed out again
            // from below the cursor: follow the log down so that none is skipped.
            tracing::warn!(
                sink = %self.config.name,
                cursor = self.cursor,
                newest = max,
                "forwarding: the session log is shorter than the cursor; moving the cursor back to its end"
            );
            if self.log.set_cursor(&self.config.name, max).is_ok() {
                self.cursor = max;
            }
        }
        let oldest = self.log.oldest_at_after(self.cursor).ok().flatten();
        self.metrics.observe(self.cursor, max, oldest);
    }
}
