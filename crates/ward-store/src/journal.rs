//! The strict-mode audit journal: a small preallocated file in front of SQLite.
//!
//! Strict audit must make a command's event durable before the command is forwarded, and
//! every statement round trip waits for that. An SQLite commit with `synchronous = FULL`
//! touches a dozen pages (the event log, its index, the statements table) and syncs a WAL
//! that keeps growing: on the 2-core machines ward is measured on it costs ~300 µs, most of
//! it CPU on cores the relay needs. Appending the batch's events as one record to a file
//! whose blocks already exist, then `fdatasync`, costs one small write and no metadata
//! update (~60 µs there). The writer acknowledges events once their journal record is
//! synced and moves them into SQLite afterwards, in larger transactions without an fsync of
//! their own.
//!
//! Written by hand because no crate fits: it is a single-writer, fixed-size, append-and-wrap
//! file read back only at start.
//!
//! Format: records back to back from offset 0, each `magic (4) | payload length (4, LE) |
//! sequence number (8, LE) | CRC-32 of the sequence number and payload (4, LE) | payload`.
//! Sequence numbers rise by one from record to record. Reading stops at the first record
//! that is torn, corrupt or out of sequence: that is where the last run stopped writing (a
//! record that was never synced was never acknowledged). The store remembers the last
//! sequence number it applied (`journal_state`), so records it already holds are skipped.
//! The journal wraps to offset 0 only once SQLite has made everything in it durable, so a
//! record from an earlier lap is always older than anything after it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

const MAGIC: [u8; 4] = *b"WJR1";
const HEADER_LEN: usize = 20;
/// Smallest journal accepted (config validation says so too).
pub const MIN_SIZE: u64 = 64 * 1024;
/// Bytes zeroed per write while preallocating.
const FILL_CHUNK: usize = 1 << 20;

/// One record read back at start.
#[derive(Debug, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub payload: Vec<u8>,
}

/// The journal file, open for appending.
#[derive(Debug)]
pub struct Journal {
    path: PathBuf,
    file: File,
    size: u64,
    offset: u64,
    next_seq: u64,
    /// Reused for each record, so appends do not allocate once warm.
    buf: Vec<u8>,
}

/// The journal has no room for a record until the store catches up and it can wrap.
#[derive(Debug, thiserror::Error)]
#[error(
    "the audit journal ({size} bytes) is full: the store has not taken in its events yet \
     (is the store locked or its disk full?); raise audit.journal_size or free the store"
)]
pub struct JournalFull {
    pub size: u64,
}

impl Journal {
    /// Opens (creating and preallocating if needed) the journal at `path` of `size` bytes,
    /// and returns it with the records it holds, oldest first. Appends start after them;
    /// call [`Journal::restart`] once they are safely in the store.
    pub fn open(path: &Path, size: u64) -> io::Result<(Journal, Vec<Record>)> {
        let size = size.max(MIN_SIZE);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        let existing = file.metadata()?.len();
        let records = read_records(&file, existing)?;
        if existing < size {
            preallocate(&file, existing, size)?;
            if let Some(dir) = path.parent() {
                // The file's directory entry must survive a crash too.
                File::open(dir)?.sync_all()?;
            }
        }
        let size = size.max(existing);
        let offset = records
            .iter()
            .map(|r| (HEADER_LEN + r.payload.len()) as u64)
            .sum();
        let next_seq = records.last().map_or(1, |r| r.seq + 1);
        Ok((
            Journal {
                path: path.to_path_buf(),
                file,
                size,
                offset,
                next_seq,
                buf: Vec::new(),
            },
            records,
        ))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The sequence number the next record gets.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Continues numbering after `seq` (the store's last applied record), so numbers keep
    /// rising across runs even when the journal was empty.
    pub fn continue_after(&mut self, seq: u64) {
        self.next_seq = self.next_seq.max(seq + 1);
    }

    /// Whether a record with a payload of `len` bytes fits before the end.
    pub fn fits(&self, len: usize) -> bool {
        self.offset + (HEADER_LEN + len) as u64 <= self.size
    }

    /// Whether a record with a payload of `len` bytes fits in the journal at all.
    pub fn fits_when_empty(&self, len: usize) -> bool {
        (HEADER_LEN + len) as u64 <= self.size
    }

    /// Whether the journal holds no record since the last restart.
    pub fn is_empty(&self) -> bool {
        self.offset == 0
    }

    /// Writes `payload` as the next record (not yet synced) and returns its sequence number.
    pub fn append(&mut self, payload: &[u8]) -> Result<u64, AppendError> {
        if !self.fits(payload.len()) {
            return Err(AppendError::Full(JournalFull { size: self.size }));
        }
        let seq = self.next_seq;
        let len = u32::try_from(payload.len()).map_err(|_| {
            AppendError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                "audit batch too large for one journal record",
            ))
        })?;
        self.buf.clear();
        self.buf.extend_from_slice(&MAGIC);
        self.buf.extend_from_slice(&len.to_le_bytes());
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf
            .extend_from_slice(&checksum(seq, payload).to_le_bytes());
        self.buf.extend_from_slice(payload);
        self.file
            .write_all_at(&self.buf, self.offset)
            .map_err(AppendError::Io)?;
        self.offset += self.buf.len() as u64;
        self.next_seq += 1;
        shrink_if_large(&mut self.buf);
        Ok(seq)
    }

    /// Makes every record written so far durable (data only: the file's blocks exist, so no
    /// metadata has to be written with them).
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// Starts again at offset 0. Only once the store holds every record durably: what lies
    /// beyond the new records is then an older lap that reading ignores.
    pub fn restart(&mut self) -> io::Result<()> {
        if self.offset == 0 {
            return Ok(());
        }
        // Invalidate the first record so that, should no new one be written over it before
        // a crash, the old lap is not read back as current (it would be skipped as already
        // applied anyway; this keeps start-up from rereading it).
        self.file.write_all_at(&[0u8; HEADER_LEN], 0)?;
        self.file.sync_data()?;
        self.offset = 0;
        Ok(())
    }
}

/// Why a record could not be written.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    #[error(transparent)]
    Full(JournalFull),
    #[error("cannot write the audit journal: {0}")]
    Io(io::Error),
}

fn checksum(seq: u64, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&seq.to_le_bytes());
    h.update(payload);
    h.finalize()
}

/// Writes zeros from `from` to `to`: blocks that exist and hold data are overwritten in place
/// later, which `fdatasync` completes without a metadata update (unlike appending, or
/// `fallocate`'s unwritten extents).
fn preallocate(file: &File, from: u64, to: u64) -> io::Result<()> {
    let zeros = vec![0u8; FILL_CHUNK];
    let mut at = from;
    while at < to {
        let n = ((to - at) as usize).min(FILL_CHUNK);
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    file.sync_all()
}

/// The valid records from the start of the file, in order.
fn read_records(file: &File, len: u64) -> io::Result<Vec<Record>> {
    let mut records: Vec<Record> = Vec::new();
    let mut offset = 0u64;
    let mut header = [0u8; HEADER_LEN];
    while offset + HEADER_LEN as u64 <= len {
        file.read_exact_at(&mut header, offset)?;
        if header[..4] != MAGIC {
            break;
        }
        let payload_len = u32::from_le_bytes(header[4..8].try_into().expect("4 bytes")) as u64;
        let seq = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(header[16..20].try_into().expect("4 bytes"));
        let end = offset + HEADER_LEN as u64 + payload_len;
        if end > len {
            break;
        }
        if let Some(last) = records.last()
            && seq != last.seq + 1
        {
            break;
        }
        let mut payload = vec![0u8; payload_len as usize];
        file.read_exact_at(&mut payload, offset + HEADER_LEN as u64)?;
        if checksum(seq, &payload) != crc {
            break;
        }
        records.push(Record { seq, payload });
        offset = end;
    }
    Ok(records)
}

fn shrink_if_large(buf: &mut Vec<u8>) {
    if buf.capacity() > 1 << 20 {
        *buf = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(path: &Path) -> (Journal, Vec<Record>) {
        Journal::open(path, MIN_SIZE).unwrap()
    }

    #[test]
    fn records_survive_reopening_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let (mut j, found) = open(&path);
        assert!(found.is_empty());
        assert_eq!(std::fs::metadata(&path).unwrap().len(), MIN_SIZE);
        assert_eq!(j.append(b"one").unwrap(), 1);
        assert_eq!(j.append(b"two").unwrap(), 2);
        j.sync().unwrap();
        drop(j);
        let (mut j, found) = open(&path);
        let seqs: Vec<_> = found.iter().map(|r| (r.seq, r.payload.clone())).collect();
        assert_eq!(seqs, [(1, b"one".to_vec()), (2, b"two".to_vec())]);
        assert_eq!(j.append(b"three").unwrap(), 3, "numbering continues");
    }

    #[test]
    fn a_torn_or_corrupt_record_ends_the_journal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let (mut j, _) = open(&path);
        j.append(b"kept").unwrap();
        j.append(b"corrupted").unwrap();
        j.append(b"after").unwrap();
        drop(j);
        // Flip a payload byte of the second record.
        let file = OpenOptions::new().write(true).open(&path).unwrap();
        let second = (HEADER_LEN + 4 + HEADER_LEN) as u64;
        file.write_all_at(b"X", second).unwrap();
        let (_, found) = open(&path);
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].payload, b"kept");
    }

    #[test]
    fn after_a_restart_the_old_lap_is_not_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let (mut j, _) = open(&path);
        for i in 0..5 {
            j.append(format!("old lap {i}").as_bytes()).unwrap();
        }
        j.restart().unwrap();
        let (_, found) = Journal::open(&path, MIN_SIZE).unwrap();
        assert!(found.is_empty(), "{found:?}");
        j.append(b"new lap, longer than the old first record")
            .unwrap();
        j.sync().unwrap();
        let (_, found) = Journal::open(&path, MIN_SIZE).unwrap();
        assert_eq!(
            found.len(),
            1,
            "stale records after the new one are ignored"
        );
        assert_eq!(found[0].seq, 6);
    }

    #[test]
    fn a_full_journal_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("audit.journal");
        let (mut j, _) = open(&path);
        let big = vec![7u8; 40 * 1024];
        j.append(&big).unwrap();
        assert!(!j.fits(big.len()));
        let err = j.append(&big).unwrap_err();
        assert!(err.to_string().contains("audit.journal_size"), "{err}");
        j.restart().unwrap();
        assert!(j.append(&big).is_ok());
    }
}
