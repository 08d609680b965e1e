//! JSON lines to a file, with size rotation, or to stdout.
//!
//! Each batch is appended and `fsync`'d before the forwarder moves its cursor. A batch that
//! fails half-way is cut back to where it started (so a retry does not leave half a line).
//! Rotation happens between lines: when the next line would take the file past `max_bytes`,
//! `path.{keep-1}` → `path.{keep}`, …, `path` → `path.1`, and a new `path` is started.

use crate::{DeliveryError, Item, Sink};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use ward_core::forward::{DEFAULT_KEEP, ForwardSink};

/// Appends envelopes to a file.
#[derive(Debug)]
pub struct FileSink {
    path: PathBuf,
    max_bytes: Option<u64>,
    keep: usize,
    file: Option<File>,
    size: u64,
}

impl FileSink {
    pub fn new(config: &ForwardSink) -> Result<FileSink, String> {
        let path = config
            .path
            .clone()
            .ok_or_else(|| "a file sink needs `path`".to_string())?;
        Ok(FileSink {
            path,
            max_bytes: config.max_bytes,
            keep: config.keep.unwrap_or(DEFAULT_KEEP),
            file: None,
            size: 0,
        })
    }

    fn open(&mut self) -> std::io::Result<()> {
        if self.file.is_some() {
            return Ok(());
        }
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        // Events hold SQL text: readable by ward's user only.
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(&self.path)?;
        self.size = file.metadata()?.len();
        self.file = Some(file);
        Ok(())
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut name = self.path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        PathBuf::from(name)
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        if let Some(file) = self.file.take() {
            file.sync_all()?;
        }
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            for n in (1..self.keep).rev() {
                let from = self.rotated(n);
                if from.exists() {
                    std::fs::rename(&from, self.rotated(n + 1))?;
                }
            }
            std::fs::rename(&self.path, self.rotated(1))?;
        }
        sync_dir(&self.path);
        self.open()
    }

    fn write_batch(&mut self, items: &[Item<'_>]) -> std::io::Result<()> {
        self.open()?;
        let mut pending: Vec<u8> = Vec::new();
        for item in items {
            let len = item.json.len() as u64 + 1;
            if let Some(max) = self.max_bytes
                && self.size + pending.len() as u64 > 0
                && self.size + pending.len() as u64 + len > max
            {
                self.flush(&mut pending)?;
                self.rotate()?;
            }
            pending.extend_from_slice(item.json.as_bytes());
            pending.push(b'\n');
        }
        self.flush(&mut pending)?;
        if let Some(file) = &self.file {
            file.sync_data()?;
        }
        Ok(())
    }

    fn flush(&mut self, pending: &mut Vec<u8>) -> std::io::Result<()> {
        if pending.is_empty() {
            return Ok(());
        }
        let file = self.file.as_mut().ok_or(std::io::ErrorKind::NotFound)?;
        file.write_all(pending)?;
        self.size += pending.len() as u64;
        pending.clear();
        Ok(())
    }
}

impl Sink for FileSink {
    fn deliver(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        let start = self.file.as_ref().map(|_| self.size);
        let result = self.write_batch(items);
        if result.is_err() {
            // Cut a partly written batch back (only if no rotation happened meanwhile:
            // the file is then still the one the batch started in) and reopen next time.
            if let (Some(start), Some(file)) = (start, self.file.as_ref())
                && self.size >= start
            {
                let _ = file.set_len(start);
            }
            self.file = None;
        }
        Ok(result?)
    }
}

fn sync_dir(path: &Path) {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Writes envelopes to ward's stdout (its logs go to stderr).
#[derive(Debug)]
pub struct StdoutSink;

impl Sink for StdoutSink {
    fn deliver(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        let mut buf = Vec::new();
        for item in items {
            buf.extend_from_slice(item.json.as_bytes());
            buf.push(b'\n');
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&buf)?;
        out.flush()?;
        Ok(())
    }
}
