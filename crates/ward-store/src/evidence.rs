//! Evidence bundles: a self-contained tar of session logs that anyone can verify, with
//! `ward verify evidence.tar` or by hand (see `README.txt` inside every bundle).
//!
//! A bundle holds:
//!
//! | path | what |
//! |---|---|
//! | `README.txt` | how to verify the bundle without ward |
//! | `public_key.hex` | the Ed25519 public key that signed the logs (hex, one line) |
//! | `sessions/<id>/events.jsonl` | one line per event: `{"seq","kind","at","hash","body"}` |
//! | `sessions/<id>/signatures.jsonl` | one line per signed checkpoint |
//! | `manifest.json` | format, who/when/what was exported, per-session heads, SHA-256 of every other file |
//!
//! `body` is the event's exact stored JSON text, as a JSON string: decoding it gives the bytes
//! that were hashed. Verification ([`verify_bundle`]) runs the same pure chain check as the
//! store ([`chain::verify_events`]), so a bundle is judged exactly like the store it came
//! from; the manifest's file hashes only catch edits that did not bother to fix the manifest,
//! while the hash chain and the signatures catch the ones that did.

use crate::chain::{self, LogEntry, SignatureEntry, Verdict};
use crate::query::query_err;
use crate::{SqliteStore, StoreError};
use rusqlite::types::Value;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Write};

/// `format` of every bundle's manifest.
pub const BUNDLE_FORMAT: &str = "ward-evidence";

/// The bundle layout this build writes and reads.
pub const BUNDLE_VERSION: u64 = 1;

/// The manifest's path in the bundle.
pub const MANIFEST: &str = "manifest.json";

/// The public key's path in the bundle.
pub const PUBLIC_KEY: &str = "public_key.hex";

/// The instructions' path in the bundle.
pub const README: &str = "README.txt";

/// What went wrong exporting or reading a bundle.
#[derive(Debug, thiserror::Error)]
pub enum EvidenceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    Selection(String),
    #[error("cannot write the bundle: {0}")]
    Write(std::io::Error),
    #[error("not a ward evidence bundle: {0}")]
    NotABundle(String),
}

/// Which sessions an export holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selection {
    /// Session ids or unique prefixes, as given (`gateway` names the gateway chain).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sessions: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Sessions that started at or after this time (Unix micros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<i64>,
    /// Sessions that started at or before this time (Unix micros).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
    /// Also the gateway chain (locks, pauses and their lifting), whole.
    #[serde(default)]
    pub include_gateway: bool,
}

impl Selection {
    fn has_filters(&self) -> bool {
        self.identity.is_some()
            || self.target.is_some()
            || self.since.is_some()
            || self.until.is_some()
    }
}

/// `manifest.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u64,
    /// RFC 3339.
    pub created_at: String,
    pub created_at_us: i64,
    pub ward_version: String,
    /// The key the logs were signed with, as the exporter saw it. Verification uses it only
    /// when no key is given, and says so.
    pub key_id: String,
    pub public_key: String,
    pub selection: Selection,
    pub sessions: Vec<ManifestSession>,
    /// SHA-256 (hex) of every file in the bundle but the manifest itself.
    pub files: BTreeMap<String, String>,
}

/// One chain in the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestSession {
    pub id: String,
    /// `session`, or `gateway` for the gateway chain.
    pub kind: String,
    #[serde(default)]
    pub identity: Option<String>,
    #[serde(default)]
    pub target: Option<String>,
    #[serde(default)]
    pub protocol: Option<String>,
    #[serde(default)]
    pub started_at_us: Option<i64>,
    #[serde(default)]
    pub ended_at_us: Option<i64>,
    #[serde(default)]
    pub end_reason: Option<String>,
    pub events: u64,
    pub last_seq: u64,
    /// Hash of the last event (hex).
    pub head_hash: String,
    pub signatures: u64,
    pub signed_through: u64,
}

/// One line of `events.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLine {
    pub seq: u64,
    pub kind: String,
    pub at: i64,
    /// hex
    pub hash: String,
    /// The exact stored JSON of the event.
    pub body: String,
}

/// One line of `signatures.jsonl`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureLine {
    pub seq: u64,
    /// hex: the chain head signed
    pub hash: String,
    /// hex: Ed25519 signature
    pub signature: String,
    pub key_id: String,
    pub signed_at: i64,
}

/// What the exporter adds besides the store's data.
#[derive(Clone, Debug)]
pub struct ExportOptions {
    /// Written into the bundle as the key to verify against.
    pub public_key: [u8; 32],
    pub ward_version: String,
    pub created_at_us: i64,
}

/// What an export wrote.
#[derive(Clone, Debug)]
pub struct ExportSummary {
    pub manifest: Manifest,
    /// Things the reader should know: sessions without a log, chains that already fail
    /// verification in the store (exported as they are).
    pub warnings: Vec<String>,
}

/// The lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

fn events_path(id: &str) -> String {
    format!("sessions/{id}/events.jsonl")
}

fn signatures_path(id: &str) -> String {
    format!("sessions/{id}/signatures.jsonl")
}

/// Session ids become directory names: only plain names.
fn safe_id(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('.')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
}

/// A session row, for the manifest.
struct SessionRow {
    id: String,
    identity: String,
    target: String,
    protocol: String,
    started_at: i64,
    ended_at: Option<i64>,
    end_reason: Option<String>,
}

fn session_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<SessionRow> {
    Ok(SessionRow {
        id: row.get(0)?,
        identity: row.get(1)?,
        target: row.get(2)?,
        protocol: row.get(3)?,
        started_at: row.get(4)?,
        ended_at: row.get(5)?,
        end_reason: row.get(6)?,
    })
}

const SESSION_ROW: &str =
    "SELECT id, identity, target, protocol, started_at, ended_at, end_reason FROM sessions";

impl SqliteStore {
    /// The full id of a session given by id or unique prefix (as for
    /// [`SqliteStore::session_detail`]); `Ok(None)` when none matches.
    pub fn resolve_session_id(&self, id_or_prefix: &str) -> Result<Option<String>, StoreError> {
        crate::query::resolve_session_id(&self.conn, id_or_prefix)
    }

    /// The chains `selection` names, in the order they will be exported (sessions oldest
    /// first, the gateway chain last): full ids, prefixes resolved. Errors when a named
    /// session does not exist or the selection matches nothing.
    pub fn select_for_export(&self, selection: &Selection) -> Result<Vec<String>, EvidenceError> {
        let conn = &self.conn;
        let mut ids = Vec::new();
        let mut gateway = selection.include_gateway;
        if !selection.sessions.is_empty() && selection.has_filters() {
            return Err(EvidenceError::Selection(
                "name sessions or filter them (--identity, --target, --since, --until), not both"
                    .into(),
            ));
        }
        for given in &selection.sessions {
            if given.trim() == chain::GATEWAY_LOG {
                gateway = true;
                continue;
            }
            match crate::query::resolve_session_id(conn, given)? {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None => {
                    return Err(EvidenceError::Selection(format!(
                        "no session matches {:?}; find session ids with `ward sessions list`",
                        given.trim()
                    )));
                }
            }
        }
        if selection.sessions.is_empty() {
            let mut conditions = Vec::new();
            let mut values: Vec<Value> = Vec::new();
            if let Some(identity) = &selection.identity {
                values.push(Value::Text(identity.clone()));
                conditions.push(format!("identity = ?{}", values.len()));
            }
            if let Some(target) = &selection.target {
                values.push(Value::Text(target.clone()));
                conditions.push(format!("target = ?{}", values.len()));
            }
            if let Some(since) = selection.since {
                values.push(Value::Integer(since));
                conditions.push(format!("started_at >= ?{}", values.len()));
            }
            if let Some(until) = selection.until {
                values.push(Value::Integer(until));
                conditions.push(format!("started_at <= ?{}", values.len()));
            }
            let where_clause = if conditions.is_empty() {
                String::new()
            } else {
                format!("WHERE {}", conditions.join(" AND "))
            };
            let mut stmt = conn
                .prepare(&format!(
                    "SELECT id FROM sessions {where_clause} ORDER BY started_at, id"
                ))
                .map_err(query_err)?;
            let rows = stmt
                .query_map(rusqlite::params_from_iter(values), |row| row.get(0))
                .map_err(query_err)?;
            for id in rows {
                ids.push(id.map_err(query_err)?);
            }
        }
        if gateway {
            let any: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM event_log WHERE session_id = ?1)",
                    [chain::GATEWAY_LOG],
                    |row| row.get(0),
                )
                .map_err(query_err)?;
            if any {
                ids.push(chain::GATEWAY_LOG.to_string());
            }
        }
        if ids.is_empty() {
            return Err(EvidenceError::Selection(if selection.include_gateway {
                "nothing to export: no session matches and the gateway chain has no events".into()
            } else {
                "no session matches the selection; check it with `ward sessions list` (same \
                 --identity, --target, --since, --until)"
                    .into()
            }));
        }
        Ok(ids)
    }

    /// Writes an evidence bundle of the chains `selection` names to `out` (a tar), from one
    /// consistent snapshot of the store.
    pub fn export_evidence<W: Write>(
        &self,
        selection: &Selection,
        options: &ExportOptions,
        out: W,
    ) -> Result<ExportSummary, EvidenceError> {
        // One read transaction: every chain and its signatures as of one moment.
        let tx = self.conn.unchecked_transaction().map_err(query_err)?;
        let ids = self.select_for_export(selection)?;
        let mtime = u64::try_from(options.created_at_us / 1_000_000).unwrap_or(0);
        let mut tar = TarWriter::new(out, mtime);
        let mut files = BTreeMap::new();
        let mut sessions = Vec::new();
        let mut warnings = Vec::new();
        tar.add(README, README_TEXT.as_bytes(), &mut files)?;
        let key_hex = hex::encode(options.public_key);
        tar.add(PUBLIC_KEY, format!("{key_hex}\n").as_bytes(), &mut files)?;
        for id in &ids {
            if !safe_id(id) {
                warnings.push(format!(
                    "session {id:?} skipped: its id is not a plain name"
                ));
                continue;
            }
            let row = if id == chain::GATEWAY_LOG {
                None
            } else {
                tx.prepare_cached(&format!("{SESSION_ROW} WHERE id = ?1"))
                    .map_err(query_err)?
                    .query_row([id], session_row)
                    .map(Some)
                    .map_err(query_err)?
            };
            let mut events = String::new();
            let mut entries = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, kind, at, body, hash FROM event_log WHERE session_id = ?1 ORDER BY seq",
                    )
                    .map_err(query_err)?;
                let rows = stmt
                    .query_map([id], |row| {
                        Ok((
                            row.get::<_, i64>(0)? as u64,
                            row.get::<_, String>(1)?,
                            row.get::<_, i64>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, Vec<u8>>(4)?,
                        ))
                    })
                    .map_err(query_err)?;
                for row in rows {
                    let (seq, kind, at, body, hash) = row.map_err(query_err)?;
                    let line = EventLine {
                        seq,
                        kind,
                        at,
                        hash: hex::encode(&hash),
                        body,
                    };
                    events.push_str(&serde_json::to_string(&line).expect("serializable"));
                    events.push('\n');
                    entries.push(LogEntry {
                        seq,
                        body: line.body,
                        hash,
                    });
                }
            }
            if entries.is_empty() {
                warnings.push(format!(
                    "session {id} skipped: it has no tamper-evident log (recorded before ward kept one)"
                ));
                continue;
            }
            let mut signatures = String::new();
            let mut sig_entries = Vec::new();
            {
                let mut stmt = tx
                    .prepare_cached(
                        "SELECT seq, hash, signature, key_id, signed_at FROM chain_signatures
                         WHERE session_id = ?1 ORDER BY seq",
                    )
                    .map_err(query_err)?;
                let rows = stmt
                    .query_map([id], |row| {
                        Ok((
                            row.get::<_, i64>(0)? as u64,
                            row.get::<_, Vec<u8>>(1)?,
                            row.get::<_, Vec<u8>>(2)?,
                            row.get::<_, String>(3)?,
                            row.get::<_, i64>(4)?,
                        ))
                    })
                    .map_err(query_err)?;
                for row in rows {
                    let (seq, hash, signature, key_id, signed_at) = row.map_err(query_err)?;
                    let line = SignatureLine {
                        seq,
                        hash: hex::encode(&hash),
                        signature: hex::encode(&signature),
                        key_id,
                        signed_at,
                    };
                    signatures.push_str(&serde_json::to_string(&line).expect("serializable"));
                    signatures.push('\n');
                    sig_entries.push(SignatureEntry {
                        seq,
                        hash,
                        signature,
                    });
                }
            }
            let verdict = chain::verify_events(id, &entries, &sig_entries, &options.public_key);
            if let Some(problem) = &verdict.problem {
                warnings.push(format!(
                    "session {id} already fails verification in the store ({problem}); exported as it is"
                ));
            }
            let last = entries.last().expect("not empty");
            sessions.push(ManifestSession {
                id: id.clone(),
                kind: if row.is_some() { "session" } else { "gateway" }.into(),
                identity: row.as_ref().map(|r| r.identity.clone()),
                target: row.as_ref().map(|r| r.target.clone()),
                protocol: row.as_ref().map(|r| r.protocol.clone()),
                started_at_us: row.as_ref().map(|r| r.started_at),
                ended_at_us: row.as_ref().and_then(|r| r.ended_at),
                end_reason: row.as_ref().and_then(|r| r.end_reason.clone()),
                events: entries.len() as u64,
                last_seq: last.seq,
                head_hash: hex::encode(&last.hash),
                signatures: verdict.signatures,
                signed_through: verdict.signed_through,
            });
            debug_assert!(row.as_ref().is_none_or(|r| r.id == *id));
            tar.add(&events_path(id), events.as_bytes(), &mut files)?;
            tar.add(&signatures_path(id), signatures.as_bytes(), &mut files)?;
        }
        drop(tx);
        if sessions.is_empty() {
            return Err(EvidenceError::Selection(format!(
                "nothing to export: {}",
                warnings.join("; ")
            )));
        }
        let manifest = Manifest {
            format: BUNDLE_FORMAT.into(),
            version: BUNDLE_VERSION,
            created_at: ward_core::time::format_micros(options.created_at_us),
            created_at_us: options.created_at_us,
            ward_version: options.ward_version.clone(),
            key_id: chain::key_id(&options.public_key),
            public_key: key_hex,
            selection: selection.clone(),
            sessions,
            files,
        };
        let mut text = serde_json::to_string_pretty(&manifest).expect("serializable");
        text.push('\n');
        tar.add(MANIFEST, text.as_bytes(), &mut BTreeMap::new())?;
        tar.finish()?;
        Ok(ExportSummary { manifest, warnings })
    }
}

/// Appends regular files to a tar, recording their SHA-256.
struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    mtime: u64,
}

impl<W: Write> TarWriter<W> {
    fn new(out: W, mtime: u64) -> Self {
        TarWriter {
            builder: tar::Builder::new(out),
            mtime,
        }
    }

    fn add(
        &mut self,
        path: &str,
        data: &[u8],
        files: &mut BTreeMap<String, String>,
    ) -> Result<(), EvidenceError> {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(self.mtime);
        header.set_entry_type(tar::EntryType::Regular);
        self.builder
            .append_data(&mut header, path, data)
            .map_err(EvidenceError::Write)?;
        files.insert(path.to_string(), sha256_hex(data));
        Ok(())
    }

    fn finish(self) -> Result<(), EvidenceError> {
        let mut out = self.builder.into_inner().map_err(EvidenceError::Write)?;
        out.flush().map_err(EvidenceError::Write)
    }
}

/// A bundle read into memory: its files by path, and its parsed manifest.
#[derive(Clone, Debug)]
pub struct Bundle {
    pub files: BTreeMap<String, Vec<u8>>,
    pub manifest: Manifest,
}

/// Every regular file of a tar, in order. Directories are skipped; links, devices and a
/// path given twice are refused (a second copy of a file would hide behind the first).
pub fn read_tar<R: Read>(input: R) -> Result<Vec<(String, Vec<u8>)>, EvidenceError> {
    let bad = |e: std::io::Error| EvidenceError::NotABundle(format!("not a readable tar ({e})"));
    let mut archive = tar::Archive::new(input);
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let path = entry.path().map_err(bad)?.to_string_lossy().into_owned();
        match entry.header().entry_type() {
            tar::EntryType::Directory => continue,
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            other => {
                return Err(EvidenceError::NotABundle(format!(
                    "{path} is a {other:?} entry, not a regular file"
                )));
            }
        }
        if out.iter().any(|(p, _)| *p == path) {
            return Err(EvidenceError::NotABundle(format!(
                "{path} appears twice in the tar"
            )));
        }
        let mut data = Vec::new();
        entry.read_to_end(&mut data).map_err(bad)?;
        out.push((path, data));
    }
    Ok(out)
}

/// Writes `files` as a tar (tests and tools that repackage a bundle).
pub fn write_tar<W: Write>(files: &[(String, Vec<u8>)], out: W) -> std::io::Result<W> {
    let mut builder = tar::Builder::new(out);
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, data.as_slice())?;
    }
    builder.into_inner()
}

/// Reads a bundle: the tar and its manifest.
pub fn read_bundle<R: Read>(input: R) -> Result<Bundle, EvidenceError> {
    let files: BTreeMap<String, Vec<u8>> = read_tar(input)?.into_iter().collect();
    let Some(text) = files.get(MANIFEST) else {
        return Err(EvidenceError::NotABundle(format!(
            "it has no {MANIFEST} (files: {})",
            files.keys().take(5).cloned().collect::<Vec<_>>().join(", ")
        )));
    };
    let manifest: Manifest = serde_json::from_slice(text)
        .map_err(|e| EvidenceError::NotABundle(format!("{MANIFEST} is not readable: {e}")))?;
    if manifest.format != BUNDLE_FORMAT {
        return Err(EvidenceError::NotABundle(format!(
            "{MANIFEST} says format {:?}, not {BUNDLE_FORMAT:?}",
            manifest.format
        )));
    }
    if manifest.version != BUNDLE_VERSION {
        return Err(EvidenceError::NotABundle(format!(
            "bundle version {} is not {BUNDLE_VERSION}, the version this ward reads; use a ward that matches",
            manifest.version
        )));
    }
    Ok(Bundle { files, manifest })
}

/// Which key a bundle was verified against.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// The key the caller obtained separately (`--public-key`).
    Given,
    /// The key inside the bundle: proves the bundle is consistent, not that ward signed it.
    Bundle,
}

/// What verifying a bundle found.
#[derive(Clone, Debug)]
pub struct BundleReport {
    pub key_source: KeySource,
    /// The key verified against.
    pub key_id: String,
    /// The key the bundle names (manifest).
    pub bundle_key_id: String,
    /// Files that do not match the manifest (edited, missing, unlisted) and other
    /// inconsistencies of the bundle itself.
    pub file_problems: Vec<String>,
    /// Files whose hash matched the manifest.
    pub files_checked: usize,
    /// One verdict per chain the manifest lists, in its order.
    pub sessions: Vec<Verdict>,
}

impl BundleReport {
    /// Nothing is wrong.
    pub fn intact(&self) -> bool {
        self.file_problems.is_empty()
            && self
                .sessions
                .iter()
                .all(|v| v.problem.is_none() && v.events > 0)
    }
}

/// Parses a 64-digit hex public key.
pub fn parse_public_key(text: &str) -> Option<[u8; 32]> {
    hex::decode(text.trim()).ok()?.try_into().ok()
}

/// Verifies a bundle: the manifest's file hashes, then every chain and its signatures
/// against `public_key` (the key obtained separately), else against the bundle's own key.
pub fn verify_bundle(
    bundle: &Bundle,
    public_key: Option<[u8; 32]>,
) -> Result<BundleReport, EvidenceError> {
    let manifest = &bundle.manifest;
    let mut file_problems = Vec::new();
    let mut files_checked = 0;
    for (path, data) in &bundle.files {
        if path == MANIFEST {
            continue;
        }
        match manifest.files.get(path) {
            None => file_problems.push(format!(
                "{path} is not listed in the manifest (it was added after export)"
            )),
            Some(expected) if !expected.eq_ignore_ascii_case(&sha256_hex(data)) => {
                file_problems.push(format!(
                    "{path} does not match its SHA-256 in the manifest (it was changed after export)"
                ))
            }
            Some(_) => files_checked += 1,
        }
    }
    for path in manifest.files.keys() {
        if !bundle.files.contains_key(path) {
            file_problems.push(format!(
                "{path} is listed in the manifest but missing from the bundle"
            ));
        }
    }
    let bundle_key = parse_public_key(&manifest.public_key);
    match bundle.files.get(PUBLIC_KEY) {
        Some(text) if parse_public_key(&String::from_utf8_lossy(text)) != bundle_key => {
            file_problems.push(format!(
                "{PUBLIC_KEY} and {MANIFEST} name different public keys"
            ));
        }
        _ => {}
    }
    let (key, key_source) = match (public_key, bundle_key) {
        (Some(key), _) => (key, KeySource::Given),
        (None, Some(key)) => (key, KeySource::Bundle),
        (None, None) => {
            return Err(EvidenceError::NotABundle(format!(
                "{MANIFEST} has no valid public key; pass --public-key"
            )));
        }
    };
    let mut listed = std::collections::HashSet::new();
    let mut sessions = Vec::new();
    for session in &manifest.sessions {
        if !listed.insert(session.id.as_str()) {
            file_problems.push(format!(
                "session {} is listed twice in the manifest",
                session.id
            ));
            continue;
        }
        sessions.push(verify_bundled_session(bundle, session, &key));
    }
    // Session files the manifest does not list are not vouched for.
    for path in bundle.files.keys() {
        if let Some(rest) = path.strip_prefix("sessions/")
            && let Some((id, _)) = rest.split_once('/')
            && !listed.contains(id)
        {
            file_problems.push(format!(
                "{path} belongs to session {id}, which the manifest does not list"
            ));
        }
    }
    Ok(BundleReport {
        key_source,
        key_id: chain::key_id(&key),
        bundle_key_id: bundle_key
            .map(|k| chain::key_id(&k))
            .unwrap_or_else(|| manifest.key_id.clone()),
        file_problems,
        files_checked,
        sessions,
    })
}

fn verify_bundled_session(bundle: &Bundle, session: &ManifestSession, key: &[u8; 32]) -> Verdict {
    let id = session.id.as_str();
    let fail = |problem: String| Verdict {
        session_id: id.to_string(),
        events: 0,
        signatures: 0,
        signed_through: 0,
        problem: Some(problem),
    };
    if !safe_id(id) {
        return fail(format!("session id {id:?} is not a plain name"));
    }
    let Some(events) = bundle.files.get(&events_path(id)) else {
        return fail(format!("{} is missing from the bundle", events_path(id)));
    };
    let Ok(events) = std::str::from_utf8(events) else {
        return fail(format!("{} is not UTF-8 text", events_path(id)));
    };
    let mut lines = Vec::new();
    for (n, line) in events.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<EventLine>(line) {
            Ok(l) => lines.push(l),
            Err(e) => {
                return fail(format!(
                    "line {} of {} is not an event ({e}); the event after #{} was altered",
                    n + 1,
                    events_path(id),
                    lines.last().map_or(0, |l: &EventLine| l.seq)
                ));
            }
        }
    }
    let entries: Vec<LogEntry> = lines
        .iter()
        .map(|l| LogEntry {
            seq: l.seq,
            body: l.body.clone(),
            // A hash that is not hex cannot match: any bytes that fail do.
            hash: hex::decode(&l.hash).unwrap_or_default(),
        })
        .collect();
    let mut signatures = Vec::new();
    if let Some(text) = bundle.files.get(&signatures_path(id)) {
        for (n, line) in String::from_utf8_lossy(text).lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str::<SignatureLine>(line) {
                Ok(l) => signatures.push(SignatureEntry {
                    seq: l.seq,
                    hash: hex::decode(&l.hash).unwrap_or_default(),
                    signature: hex::decode(&l.signature).unwrap_or_default(),
                }),
                Err(e) => {
                    return fail(format!(
                        "line {} of {} is not a signature ({e})",
                        n + 1,
                        signatures_path(id)
                    ));
                }
            }
        }
    }
    let mut verdict = chain::verify_events(id, &entries, &signatures, key);
    if verdict.problem.is_some() {
        return verdict;
    }
    // The chain holds: now the readable copies beside each body, and the manifest's claims.
    for line in &lines {
        if let Ok(event) = serde_json::from_str::<ward_core::AuditEvent>(&line.body) {
            let (chain_id, kind, at, _) = chain::chain_of(&event);
            if chain_id != id {
                verdict.problem = Some(format!(
                    "event #{} belongs to session {chain_id}, not {id}",
                    line.seq
                ));
            } else if kind != line.kind || at != line.at {
                verdict.problem = Some(format!(
                    "event #{}: the kind and time beside its body ({} at {}) are not the recorded ones ({kind} at {at}); the line was edited",
                    line.seq, line.kind, line.at
                ));
            }
            if verdict.problem.is_some() {
                return verdict;
            }
        }
    }
    let last = entries.last().map_or(0, |e| e.seq);
    let head = entries
        .last()
        .map(|e| hex::encode(&e.hash))
        .unwrap_or_default();
    verdict.problem = if (verdict.events, last) != (session.events, session.last_seq) {
        Some(if last < session.last_seq {
            format!(
                "event #{} was removed (the manifest lists {} events up to #{}, the log ends at #{last})",
                last + 1,
                session.events,
                session.last_seq
            )
        } else {
            format!(
                "event #{} was added after export (the manifest lists {} events up to #{})",
                session.last_seq + 1,
                session.events,
                session.last_seq
            )
        })
    } else if !head.eq_ignore_ascii_case(&session.head_hash) {
        Some(format!(
            "event #{last} is not the head the manifest lists (hash {})",
            session.head_hash
        ))
    } else {
        None
    };
    verdict
}

/// `README.txt` of every bundle.
const README_TEXT: &str = r#"ward evidence bundle
====================

This archive holds tamper-evident session logs exported from ward, an access gateway for
databases. Check it with ward:

    ward verify evidence.tar --public-key <ward's public key, from `ward keys show`>

or by hand, as follows. Obtain ward's public key separately (from its operator, e.g. the
output of `ward keys show`): public_key.hex inside this bundle proves nothing on its own,
since whoever could edit the bundle could replace it too.

Files
-----

manifest.json                    what was exported, when, by which ward; per session the
                                 number of events, the last one and its hash; and the
                                 SHA-256 of every other file in the bundle
public_key.hex                   the Ed25519 public key the exporter says signed the logs
sessions/<id>/events.jsonl       one JSON object per line, in order:
                                 {"seq":N,"kind":..,"at":µs,"hash":"hex","body":"<event JSON>"}
sessions/<id>/signatures.jsonl   signed checkpoints: {"seq":N,"hash":"hex","signature":"hex",..}

1. Files: compare `sha256sum` of each file with "files" in manifest.json:

       sha256sum README.txt public_key.hex sessions/*/*.jsonl

2. Hash chain of a session <id>: "body" is the event's exact recorded JSON, as a JSON
   string; its UTF-8 bytes (after JSON-decoding the string) are what was hashed.

       h0 = SHA-256( "ward.session-log.v1" 0x00  <id as UTF-8> )
       hN = SHA-256( h(N-1) <body N> )

   Event N is intact when its "seq" is N and its "hash" is hN. For example, with Python 3:

       import hashlib, json, sys
       sid = sys.argv[1]
       prev = hashlib.sha256(b"ward.session-log.v1\0" + sid.encode()).digest()
       for n, line in enumerate(open(f"sessions/{sid}/events.jsonl"), 1):
           e = json.loads(line)
           h = hashlib.sha256(prev + e["body"].encode()).digest()
           if e["seq"] != n or h.hex() != e["hash"]:
               sys.exit(f"event #{n} does not verify")
           prev = h
       print("chain intact, head", prev.hex())

3. Signatures: each line of signatures.jsonl is an Ed25519 signature of

       "ward.session-log.v1" 0x00 <id> 0x00 <seq as 8 bytes big-endian> <hash, 32 bytes>

   and its "hash" must equal the hash of event "seq" computed in step 2. For example, with
   the Python `cryptography` package:

       from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
       key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(WARDS_PUBLIC_KEY_HEX))
       for line in open(f"sessions/{sid}/signatures.jsonl"):
           s = json.loads(line)
           msg = (b"ward.session-log.v1\0" + sid.encode() + b"\0"
                  + s["seq"].to_bytes(8, "big") + bytes.fromhex(s["hash"]))
           key.verify(bytes.fromhex(s["signature"]), msg)   # raises if forged

What this proves: every event up to the last signed checkpoint is exactly what ward
recorded, in order, with nothing removed or inserted. Events after the last signature are
chained but unsigned (a session still running, or a gateway that stopped before its next
checkpoint): they cannot have been altered without breaking the chain, but the tail after
the last signature could have been cut off or replaced whole.
"#;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::LogSigner;
    use ward_core::AuditEvent;

    const A: &str = "0190a1b2-0000-7000-8000-00000000000a";
    const B: &str = "0190a1b3-0000-7000-8000-00000000000b";

    fn start(id: &str, identity: &str, at: i64) -> AuditEvent {
        let json = serde_json::json!({
            "type": "session_start", "session_id": id, "identity": identity,
            "target": "orders-db", "protocol": "postgres", "client_addr": "10.0.0.7:5000",
            "tls_version": "TLSv1.3", "client_program": "psql", "started_at": at,
        });
        serde_json::from_value(json).unwrap()
    }

    fn command(id: &str, text: &str, at: i64) -> AuditEvent {
        let json = serde_json::json!({
            "type": "command", "session_id": id, "origin": "simple", "text": text, "at": at,
        });
        serde_json::from_value(json).unwrap()
    }

    fn end(id: &str, at: i64) -> AuditEvent {
        let json = serde_json::json!({
            "type": "session_end", "session_id": id, "ended_at": at, "reason": "client closed",
        });
        serde_json::from_value(json).unwrap()
    }

    fn store(dir: &std::path::Path) -> (SqliteStore, LogSigner) {
        let signer = LogSigner::from_seed([3; 32]);
        let mut store = SqliteStore::open(&dir.join("ward.db")).unwrap();
        store.set_signer(signer.clone());
        let mut events = vec![start(A, "alice", 1_000), start(B, "bob", 2_000)];
        for n in 0..5 {
            events.push(command(A, &format!("select {n}"), 1_100 + n));
        }
        events.push(end(A, 1_900));
        events.push(command(B, "select 'b'", 2_100));
        store.write_batch(&events).unwrap();
        (store, signer)
    }

    fn export(store: &SqliteStore, key: [u8; 32], selection: &Selection) -> Vec<u8> {
        let options = ExportOptions {
            public_key: key,
            ward_version: "test".into(),
            created_at_us: 5_000_000,
        };
        let mut out = Vec::new();
        store
            .export_evidence(selection, &options, &mut out)
            .unwrap();
        out
    }

    fn verdicts(tar: &[u8], key: Option<[u8; 32]>) -> (Vec<String>, Vec<Option<String>>) {
        let bundle = read_bundle(tar).unwrap();
        let report = verify_bundle(&bundle, key).unwrap();
        (
            report.file_problems,
            report.sessions.into_iter().map(|v| v.problem).collect(),
        )
    }

    /// Rewrites one file of the bundle and fixes the manifest's hash of it, as an attacker
    /// who knows the format would.
    fn tamper(tar: &[u8], path: &str, edit: impl FnOnce(&mut Vec<String>)) -> Vec<u8> {
        let mut files = read_tar(tar).unwrap();
        let (_, data) = files.iter_mut().find(|(p, _)| p == path).unwrap();
        let mut lines: Vec<String> = String::from_utf8(data.clone())
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        edit(&mut lines);
        *data = (lines.join("\n") + "\n").into_bytes();
        let new_hash = sha256_hex(data);
        for (p, data) in files.iter_mut() {
            if p == MANIFEST {
                let mut m: Manifest = serde_json::from_slice(data).unwrap();
                m.files.insert(path.to_string(), new_hash.clone());
                *data = serde_json::to_vec_pretty(&m).unwrap();
            }
        }
        write_tar(&files, Vec::new()).unwrap()
    }

    #[test]
    fn a_bundle_round_trips_and_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let (store, signer) = store(dir.path());
        let key = signer.public_key();
        let tar = export(&store, key, &Selection::default());
        let bundle = read_bundle(tar.as_slice()).unwrap();
        let m = &bundle.manifest;
        assert_eq!(m.sessions.len(), 2);
        assert_eq!((m.sessions[0].id.as_str(), m.sessions[0].events), (A, 7));
        assert_eq!(m.sessions[0].identity.as_deref(), Some("alice"));
        assert_eq!(m.sessions[0].signed_through, 7, "signed at its end");
        assert_eq!(m.sessions[1].signed_through, 0, "B is live, not yet signed");
        assert_eq!(m.files.len(), 6, "{:?}", m.files.keys());
        let report = verify_bundle(&bundle, Some(key)).unwrap();
        assert!(report.intact(), "{report:?}");
        assert_eq!(report.key_source, KeySource::Given);
        assert_eq!(report.files_checked, 6);
        let report = verify_bundle(&bundle, None).unwrap();
        assert_eq!(report.key_source, KeySource::Bundle);
        assert_eq!(report.key_id, signer.key_id());
        // Bodies are byte-exact: the store's own verification agrees with the bundle's.
        let line: EventLine = serde_json::from_str(
            std::str::from_utf8(&bundle.files[&events_path(A)])
                .unwrap()
                .lines()
                .nth(1)
                .unwrap(),
        )
        .unwrap();
        let stored: String = store
            .conn
            .query_row(
                "SELECT body FROM event_log WHERE session_id = ?1 AND seq = 2",
                [A],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(line.body, stored);
        // Selection by identity, and by a prefix; nothing matching is an error.
        let only_bob = Selection {
            identity: Some("bob".into()),
            ..Default::default()
        };
        let m = read_bundle(export(&store, key, &only_bob).as_slice())
            .unwrap()
            .manifest;
        assert_eq!(
            m.sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
            [B]
        );
        let by_prefix = Selection {
            sessions: vec![A[..13].to_string()],
            ..Default::default()
        };
        assert_eq!(store.select_for_export(&by_prefix).unwrap(), [A]);
        let nobody = Selection {
            identity: Some("carol".into()),
            ..Default::default()
        };
        let err = store.select_for_export(&nobody).unwrap_err().to_string();
        assert!(err.contains("no session matches"), "{err}");
    }

    #[test]
    fn tampered_bundles_name_the_event() {
        let dir = tempfile::tempdir().unwrap();
        let (store, signer) = store(dir.path());
        let key = signer.public_key();
        let selection = Selection {
            sessions: vec![A.into()],
            ..Default::default()
        };
        let tar = export(&store, key, &selection);
        let path = events_path(A);
        let check = |tar: &[u8], want: &str| {
            let (files, sessions) = verdicts(tar, Some(key));
            assert!(files.is_empty(), "the manifest was fixed: {files:?}");
            let p = sessions[0].clone().expect("tampering is detected");
            assert!(p.contains(want), "{p:?} should contain {want:?}");
        };
        // Altered body (SQL text changed), manifest fixed.
        let t = tamper(&tar, &path, |l| l[3] = l[3].replace("select 2", "select 9"));
        check(&t, "event #4 was altered");
        // A file edited without fixing the manifest is reported as such.
        let mut files = read_tar(tar.as_slice()).unwrap();
        files
            .iter_mut()
            .find(|(p, _)| *p == path)
            .unwrap()
            .1
            .push(b'\n');
        let (problems, _) = verdicts(&write_tar(&files, Vec::new()).unwrap(), Some(key));
        assert!(
            problems[0].contains("does not match its SHA-256"),
            "{problems:?}"
        );
        // Removed line.
        check(
            &tamper(&tar, &path, |l| drop(l.remove(2))),
            "event #3 was removed",
        );
        // Removed tail (the signature at the end remains).
        check(
            &tamper(&tar, &path, |l| l.truncate(5)),
            "event #6 was removed",
        );
        // Inserted forged line.
        let t = tamper(&tar, &path, |l| {
            let forged = l[2].replace("select 1", "drop table orders");
            l.insert(3, forged);
        });
        check(&t, "event #3 appears twice");
        // Two lines swapped.
        check(
            &tamper(&tar, &path, |l| l.swap(2, 3)),
            "event #3 appears out of order",
        );
        // A signature replaced by one made with another key.
        let forger = LogSigner::from_seed([9; 32]);
        let t = tamper(&tar, &signatures_path(A), |l| {
            let mut s: SignatureLine = serde_json::from_str(&l[0]).unwrap();
            let hash: [u8; 32] = hex::decode(&s.hash).unwrap().try_into().unwrap();
            s.signature = hex::encode(forger.sign(A, s.seq, &hash));
            l[0] = serde_json::to_string(&s).unwrap();
        });
        check(&t, "the signature at event #7 does not verify");
        // The wrong key.
        let (_, sessions) = verdicts(&tar, Some(forger.public_key()));
        assert!(
            sessions[0]
                .as_ref()
                .unwrap()
                .contains("event #7 does not verify")
        );
        // A readable copy beside the body edited.
        let t = tamper(&tar, &path, |l| {
            let mut e: EventLine = serde_json::from_str(&l[1]).unwrap();
            e.at += 1;
            l[1] = serde_json::to_string(&e).unwrap();
        });
        check(&t, "event #2: the kind and time");
    }

    #[test]
    fn verify_events_names_reordered_and_inserted_events() {
        let s = "sess";
        let mut prev = chain::genesis(s);
        let mut entries = Vec::new();
        for seq in 1..=5u64 {
            let body = format!("{{\"n\":{seq}}}");
            prev = chain::link(&prev, body.as_bytes());
            entries.push(LogEntry {
                seq,
                body,
                hash: prev.to_vec(),
            });
        }
        let signer = LogSigner::from_seed([5; 32]);
        let key = signer.public_key();
        let sig = SignatureEntry {
            seq: 5,
            hash: prev.to_vec(),
            signature: signer.sign(s, 5, &prev).to_vec(),
        };
        let v = chain::verify_events(s, &entries, std::slice::from_ref(&sig), &key);
        assert_eq!((v.problem, v.signed_through), (None, 5));
        let problem = |entries: &[LogEntry]| {
            chain::verify_events(s, entries, std::slice::from_ref(&sig), &key)
                .problem
                .unwrap()
        };
        // Swapped with their numbers rewritten to look in order.
        let mut t = entries.clone();
        t.swap(1, 2);
        t[1].seq = 2;
        t[2].seq = 3;
        let p = problem(&t);
        assert!(p.starts_with("event #2 does not follow event #1"), "{p}");
        assert!(p.contains("it follows event #3"), "{p}");
        // A forged event with its hash recomputed to fit, the rest renumbered.
        let mut t = entries.clone();
        let forged = chain::link(&t[1].hash.clone().try_into().unwrap(), b"{\"forged\":1}");
        t.insert(
            2,
            LogEntry {
                seq: 3,
                body: "{\"forged\":1}".into(),
                hash: forged.to_vec(),
            },
        );
        for (i, e) in t.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        assert_eq!(
            problem(&t),
            "event #3 was inserted (event #4 follows event #2)"
        );
        // A forged event with a copied hash slipped in.
        let mut t = entries.clone();
        t.insert(
            2,
            LogEntry {
                seq: 3,
                body: "{\"forged\":1}".into(),
                hash: t[2].hash.clone(),
            },
        );
        for (i, e) in t.iter_mut().enumerate() {
            e.seq = i as u64 + 1;
        }
        assert!(
            problem(&t).starts_with("event #3 was inserted"),
            "{}",
            problem(&t)
        );
        // Another session's genesis: the first event does not fit.
        let v = chain::verify_events("other", &entries, &[], &key);
        assert_eq!(v.problem.as_deref(), Some("event #1 was altered"));
    }
}
