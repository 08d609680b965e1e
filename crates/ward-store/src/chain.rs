//! The tamper-evident session log: every event of a session, hash-chained and signed.
//!
//! Each event is stored as the exact JSON bytes it was recorded as, with the SHA-256 of the
//! previous event's hash followed by those bytes. The first event of a session chains from
//! a genesis value bound to the session id, so events cannot be moved between sessions. The
//! chain head is signed with ward's Ed25519 key at session end and every
//! [`CHECKPOINT_EVERY`] events, so even a gateway killed mid-session leaves a verifiable,
//! signed prefix. Verification recomputes everything from the stored bytes and names the
//! first event that does not fit.

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rusqlite::{Connection, OptionalExtension, params};
use sha2::{Digest, Sha256};
use std::path::Path;

/// A signature is written after this many events of a session (and at its end).
pub const CHECKPOINT_EVERY: u64 = 64;

/// A session's newest events are signed at the latest this long after they were written
/// (when the gateway's checkpoint tick comes), however few they are.
pub const CHECKPOINT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Domain separation for hashes and signatures of this log format.
const DOMAIN: &[u8] = b"ward.session-log.v1\0";

/// The value the first event of `session_id` chains from.
pub fn genesis(session_id: &str) -> [u8; 32] {
    Sha256::new()
        .chain_update(DOMAIN)
        .chain_update(session_id.as_bytes())
        .finalize()
        .into()
}

/// The hash of an event: SHA-256 of the previous hash and the event's bytes.
pub fn link(prev: &[u8; 32], body: &[u8]) -> [u8; 32] {
    Sha256::new()
        .chain_update(prev)
        .chain_update(body)
        .finalize()
        .into()
}

/// What a checkpoint signature covers: the session, the position and the chain head there.
fn signed_message(session_id: &str, seq: u64, hash: &[u8; 32]) -> Vec<u8> {
    let mut m = Vec::with_capacity(DOMAIN.len() + session_id.len() + 41);
    m.extend_from_slice(DOMAIN);
    m.extend_from_slice(session_id.as_bytes());
    m.push(0);
    m.extend_from_slice(&seq.to_be_bytes());
    m.extend_from_slice(hash);
    m
}

/// ward's signing key (Ed25519), kept in the data directory.
#[derive(Clone)]
pub struct LogSigner {
    key: SigningKey,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private key.
        f.debug_struct("LogSigner")
            .field("key_id", &self.key_id())
            .finish()
    }
}

impl LogSigner {
    /// Loads the key from `path` (hex of the 32-byte seed), generating and writing it
    /// (mode 0600) on first use.
    pub fn load_or_generate(path: &Path) -> Result<LogSigner, String> {
        match std::fs::read_to_string(path) {
            Ok(text) => {
                let bytes = hex::decode(text.trim())
                    .map_err(|_| format!("{} is not a ward signing key (hex)", path.display()))?;
                let seed: [u8; 32] = bytes.try_into().map_err(|_| {
                    format!("{} is not a ward signing key (32 bytes)", path.display())
                })?;
                Ok(LogSigner {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut seed = [0u8; 32];
                rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut seed);
                write_private(path, format!("{}\n", hex::encode(seed)).as_bytes())
                    .map_err(|e| format!("cannot write the signing key {}: {e}", path.display()))?;
                tracing::info!(path = %path.display(), "generated the session-log signing key");
                Ok(LogSigner {
                    key: SigningKey::from_bytes(&seed),
                })
            }
            Err(e) => Err(format!(
                "cannot read the signing key {}: {e}",
                path.display()
            )),
        }
    }

    /// A key from a seed (tests).
    pub fn from_seed(seed: [u8; 32]) -> LogSigner {
        LogSigner {
            key: SigningKey::from_bytes(&seed),
        }
    }

    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// A short name of the public key (first 16 hex digits of its SHA-256).
    pub fn key_id(&self) -> String {
        key_id(&self.public_key())
    }

    /// Signs the chain head `hash` of `session_id` at `seq` (what a checkpoint stores).
    pub fn sign(&self, session_id: &str, seq: u64, hash: &[u8; 32]) -> [u8; 64] {
        self.key
            .sign(&signed_message(session_id, seq, hash))
            .to_bytes()
    }
}

/// The short name of a public key.
pub fn key_id(public_key: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public_key)[..8])
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content)?;
    f.sync_all()
}

/// The chain position of a session: the last event's number and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Head {
    pub seq: u64,
    pub hash: [u8; 32],
}

/// The stored head of `session_id`, or `None` before its first event.
pub(crate) fn stored_head(conn: &Connection, session_id: &str) -> rusqlite::Result<Option<Head>> {
    conn.prepare_cached(
        "SELECT seq, hash FROM event_log WHERE session_id = ?1 ORDER BY seq DESC LIMIT 1",
    )?
    .query_row([session_id], |row| {
        let seq: i64 = row.get(0)?;
        let hash: Vec<u8> = row.get(1)?;
        Ok(Head {
            seq: seq as u64,
            hash: hash.try_into().unwrap_or([0; 32]),
        })
    })
    .optional()
}

/// One event about to join its session's chain.
pub(crate) struct Link<'a> {
    pub session_id: &'a str,
    pub kind: &'a str,
    pub at: i64,
    /// The event's exact bytes, as stored and hashed.
    pub body: &'a [u8],
    /// The session's last event: its head is signed.
    pub ends_session: bool,
}

/// Appends one event to its session's chain and returns the new head; signs it when it
/// ends the session or reaches a checkpoint.
pub(crate) fn append(
    conn: &Connection,
    event: &Link<'_>,
    previous: Option<Head>,
    signer: Option<&LogSigner>,
) -> rusqlite::Result<Head> {
    let session_id = event.session_id;
    let (seq, prev) = match previous {
        Some(h) => (h.seq + 1, h.hash),
        None => (1, genesis(session_id)),
    };
    let hash = link(&prev, event.body);
    conn.prepare_cached(
        // Rows are appended in rowid order (cheap even with many sessions interleaved);
        // the previous hash is not stored: verification recomputes the chain.
        "INSERT INTO event_log (session_id, seq, kind, at, body, hash)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        session_id,
        seq as i64,
        event.kind,
        event.at,
        std::str::from_utf8(event.body).unwrap_or_default(),
        &hash[..]
    ])?;
    if let Some(signer) = signer
        && (event.ends_session || seq.is_multiple_of(CHECKPOINT_EVERY))
    {
        sign_head(conn, session_id, Head { seq, hash }, signer, event.at)?;
    }
    Ok(Head { seq, hash })
}

pub(crate) fn sign_head(
    conn: &Connection,
    session_id: &str,
    head: Head,
    signer: &LogSigner,
    at: i64,
) -> rusqlite::Result<()> {
    let signature = signer.sign(session_id, head.seq, &head.hash);
    conn.prepare_cached(
        "INSERT OR REPLACE INTO chain_signatures (session_id, seq, hash, signature, key_id, signed_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
        session_id,
        head.seq as i64,
        &head.hash[..],
        &signature[..],
        signer.key_id(),
        at
    ])?;
    Ok(())
}

/// What verifying one session's log found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub session_id: String,
    pub events: u64,
    /// Signatures that verified, and the last position they cover.
    pub signatures: u64,
    pub signed_through: u64,
    /// The first problem, if any, naming the event.
    pub problem: Option<String>,
}

/// One event of a chain as stored: its position, exact bytes and stored hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub seq: u64,
    /// The event's exact JSON text, as hashed.
    pub body: String,
    /// The stored hash (32 bytes when intact; any length is accepted and then fails).
    pub hash: Vec<u8>,
}

/// One stored checkpoint: the signed chain head at `seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureEntry {
    pub seq: u64,
    pub hash: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Verifies one session's stored log against `public_key` (loads it and calls
/// [`verify_events`]).
pub fn verify_session(
    conn: &Connection,
    session_id: &str,
    public_key: &[u8; 32],
) -> rusqlite::Result<Verdict> {
    let entries = load_entries(conn, session_id)?;
    let signatures = load_signatures(conn, session_id)?;
    Ok(verify_events(session_id, &entries, &signatures, public_key))
}

/// The stored events of `session_id`, in chain order.
pub(crate) fn load_entries(conn: &Connection, session_id: &str) -> rusqlite::Result<Vec<LogEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, body, hash FROM event_log WHERE session_id = ?1 ORDER BY seq",
    )?;
    stmt.query_map([session_id], |row| {
        Ok(LogEntry {
            seq: row.get::<_, i64>(0)? as u64,
            body: row.get(1)?,
            hash: row.get(2)?,
        })
    })?
    .collect()
}

/// The stored checkpoint signatures of `session_id`, in chain order.
pub(crate) fn load_signatures(
    conn: &Connection,
    session_id: &str,
) -> rusqlite::Result<Vec<SignatureEntry>> {
    let mut stmt = conn.prepare_cached(
        "SELECT seq, hash, signature FROM chain_signatures WHERE session_id = ?1 ORDER BY seq",
    )?;
    stmt.query_map([session_id], |row| {
        Ok(SignatureEntry {
            seq: row.get::<_, i64>(0)? as u64,
            hash: row.get(1)?,
            signature: row.get(2)?,
        })
    })?
    .collect()
}

/// Verifies one session's events and checkpoint signatures, in the order given, against
/// `public_key`: recomputes the chain from the genesis of `session_id` and checks every
/// signature, naming the first event that was altered, removed, inserted or reordered.
///
/// Pure: the store ([`verify_session`]) and evidence bundles ([`crate::evidence`]) both
/// call it, so a bundle is judged exactly as the store it came from.
pub fn verify_events(
    session_id: &str,
    entries: &[LogEntry],
    signatures: &[SignatureEntry],
    public_key: &[u8; 32],
) -> Verdict {
    let mut verdict = Verdict {
        session_id: session_id.to_string(),
        events: entries.len() as u64,
        signatures: 0,
        signed_through: 0,
        problem: None,
    };
    let genesis = genesis(session_id);
    // Every stored hash, and the genesis: the predecessors an intact but moved event could
    // have been chained from.
    let stored: Vec<Option<[u8; 32]>> = entries
        .iter()
        .map(|e| <[u8; 32]>::try_from(e.hash.as_slice()).ok())
        .collect();
    let mut expected_prev = genesis;
    let mut expected_seq = 1u64;
    let mut hashes: std::collections::HashMap<u64, [u8; 32]> = std::collections::HashMap::new();
    for (i, entry) in entries.iter().enumerate() {
        let seq = entry.seq;
        if seq != expected_seq {
            verdict.problem = Some(if seq > expected_seq {
                if entries[i..].iter().any(|e| e.seq == expected_seq) {
                    format!("event #{expected_seq} appears out of order (after event #{seq})")
                } else {
                    format!("event #{expected_seq} was removed (the log jumps to #{seq})")
                }
            } else if entries[..i].iter().any(|e| e.seq == seq) {
                format!(
                    "event #{seq} appears twice (an event was inserted after event #{})",
                    expected_seq - 1
                )
            } else {
                format!("event #{seq} appears out of order")
            });
            break;
        }
        let computed = link(&expected_prev, entry.body.as_bytes());
        if entry.hash[..] != computed[..] {
            verdict.problem = Some(chain_break(entries, &stored, i, &expected_prev, &genesis));
            break;
        }
        hashes.insert(seq, computed);
        expected_prev = computed;
        expected_seq += 1;
    }
    let last_verified = expected_seq - 1;
    let key = VerifyingKey::from_bytes(public_key);
    for sig in signatures {
        let seq = sig.seq;
        let hash: [u8; 32] = sig.hash.as_slice().try_into().unwrap_or([0; 32]);
        let ok = key.as_ref().is_ok_and(|k| {
            <[u8; 64]>::try_from(sig.signature.as_slice())
                .ok()
                .map(|s| Signature::from_bytes(&s))
                .is_some_and(|s| {
                    k.verify(&signed_message(session_id, seq, &hash), &s)
                        .is_ok()
                })
        });
        if !ok {
            verdict.problem.get_or_insert_with(|| {
                format!("the signature at event #{seq} does not verify with this public key")
            });
            continue;
        }
        if hashes.get(&seq) != Some(&hash) {
            verdict.problem.get_or_insert_with(|| {
                if seq > last_verified && last_verified == verdict.events {
                    // The chain is intact but shorter than what was signed: its tail is gone.
                    format!(
                        "event #{} was removed (the log ends at #{last_verified}, but its head at event #{seq} was signed)",
                        last_verified + 1
                    )
                } else {
                    format!("the signed head at event #{seq} does not match the log (events up to #{seq} were changed)")
                }
            });
            continue;
        }
        verdict.signatures += 1;
        verdict.signed_through = verdict.signed_through.max(seq);
    }
    verdict
}

/// Why the event at `i` does not chain from `expected_prev` (the hash of the event before
/// it). Its own bytes still give its stored hash from *some* predecessor only if the event
/// itself is intact: then what changed is the order before it.
fn chain_break(
    entries: &[LogEntry],
    stored: &[Option<[u8; 32]>],
    i: usize,
    expected_prev: &[u8; 32],
    genesis: &[u8; 32],
) -> String {
    let entry = &entries[i];
    let seq = entry.seq;
    let chains_from =
        |prev: &[u8; 32], e: &LogEntry| link(prev, e.body.as_bytes())[..] == e.hash[..];
    // Intact, but chained from another position: which one tells what happened.
    let from = std::iter::once((0u64, *genesis))
        .chain(
            entries
                .iter()
                .zip(stored)
                .filter_map(|(e, h)| h.map(|h| (e.seq, h))),
        )
        .find(|(_, prev)| chains_from(prev, entry));
    let before = seq.saturating_sub(1);
    match from {
        // Everything up to `before` chained, yet this event's real predecessor is earlier:
        // the events in between were slipped in (with hashes recomputed to fit).
        Some((j, _)) if j + 1 == before => {
            format!("event #{before} was inserted (event #{seq} follows event #{j})")
        }
        Some((j, _)) if j < before => format!(
            "events #{} to #{before} were inserted (event #{seq} follows event #{j})",
            j + 1
        ),
        Some((j, _)) => format!(
            "event #{seq} does not follow event #{before} (an event was removed, inserted or reordered before it: it follows event #{j})"
        ),
        None => {
            // Not an event of this chain at all; if the next one follows the previous one
            // directly, this one was slipped in between, otherwise it was altered.
            match entries.get(i + 1) {
                Some(next) if chains_from(expected_prev, next) => format!(
                    "event #{seq} was inserted (the event after it follows event #{before} directly)"
                ),
                _ => format!("event #{seq} was altered"),
            }
        }
    }
}

/// Where an event goes in the log: its chain (session id, or [`GATEWAY_LOG`]), its kind as
/// stored in `event_log.kind`, its time, and whether it ends its session.
pub fn chain_of(event: &ward_core::AuditEvent) -> (&str, &'static str, i64, bool) {
    use ward_core::AuditEvent as E;
    match event {
        E::SessionStart(s) => (s.session_id.as_str(), "session_start", s.started_at, false),
        E::Statement(s) => (s.session_id.as_str(), "statement", s.started_at, false),
        E::Command(c) => (c.session_id.as_str(), "command", c.at, false),
        E::Terminal(t) => (t.session_id.as_str(), "terminal", t.at, false),
        E::SessionEnd(s) => (s.session_id.as_str(), "session_end", s.ended_at, true),
        E::Approval(a) => (a.session_id.as_str(), "approval", a.at, false),
        E::Control(c) => match &c.session_id {
            Some(id) => (id.as_str(), "control", c.at, false),
            // Locks, pauses and their lifting belong to no session: they form the
            // gateway's own chain.
            None => (GATEWAY_LOG, "control", c.at, false),
        },
        // A refused login opened no session: the gateway's chain holds it.
        E::AuthRefused(a) => (GATEWAY_LOG, "auth_refused", a.at, false),
        E::TokenIssued(t) => (GATEWAY_LOG, "token_issued", t.issued_at, false),
        E::TokenRevoked(t) => (GATEWAY_LOG, "token_revoked", t.at, false),
    }
}

/// Chain heads written in a transaction not yet committed.
pub(crate) type Pending = std::collections::HashMap<String, Head>;

/// The chain of events that belong to no session (locks, unlocks, pauses, resumes, refused
/// logins).
pub const GATEWAY_LOG: &str = "gateway";

/// Appends `event` to its session's chain (events that belong to no session join the
/// [`GATEWAY_LOG`] chain). `committed` are the heads known to be stored; `pending` collects this
/// transaction's, to be merged once it commits.
pub(crate) fn record(
    conn: &Connection,
    event: &ward_core::AuditEvent,
    committed: &std::collections::HashMap<String, Head>,
    pending: &mut Pending,
    signer: Option<&LogSigner>,
) -> rusqlite::Result<()> {
    let (session, kind, at, ends) = chain_of(event);
    let body = serde_json::to_vec(event)
        .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
    let previous = match pending.get(session).or_else(|| committed.get(session)) {
        Some(h) => Some(*h),
        None => stored_head(conn, session)?,
    };
    let entry = Link {
        session_id: session,
        kind,
        at,
        body: &body,
        ends_session: ends,
    };
    let head = append(conn, &entry, previous, signer)?;
    pending.insert(session.to_string(), head);
    Ok(())
}
