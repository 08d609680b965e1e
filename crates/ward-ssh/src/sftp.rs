//! SFTP (version 3, draft-ietf-secsh-filexfer-02, as OpenSSH speaks it) seen by the gateway:
//! framing of both directions of an `sftp` subsystem channel, decoding of the requests that
//! name files, and the bookkeeping that turns requests and replies into file operations.
//!
//! Hand-written rather than built on `russh-sftp`: that crate's types come with its own
//! client and server loops and decode every packet into owned values; the relay only needs
//! the header of most packets, must frame data arriving in arbitrary chunks with a bounded
//! buffer, and must forward packets byte for byte. Each packet is assembled once in the
//! framer's buffer (one copy, as the opaque relay already made of client input) and then
//! forwarded as a cheap `Bytes` slice.
//!
//! Nothing here talks to the network or the policy: [`Tracker`] says which requests need a
//! decision and which replies complete an operation; `session.rs` does the rest.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use std::collections::HashMap;

/// The largest packet accepted (OpenSSH's limit is 256 KiB of payload; a little header room).
pub const MAX_PACKET: usize = 256 * 1024 + 1024;

const INIT: u8 = 1;
const OPEN: u8 = 3;
const CLOSE: u8 = 4;
const READ: u8 = 5;
const WRITE: u8 = 6;
const LSTAT: u8 = 7;
const SETSTAT: u8 = 9;
const FSETSTAT: u8 = 10;
const OPENDIR: u8 = 11;
const REMOVE: u8 = 13;
const MKDIR: u8 = 14;
const RMDIR: u8 = 15;
const REALPATH: u8 = 16;
const STAT: u8 = 17;
const RENAME: u8 = 18;
const READLINK: u8 = 19;
const SYMLINK: u8 = 20;
const EXTENDED: u8 = 200;
const STATUS: u8 = 101;
const HANDLE: u8 = 102;
const DATA: u8 = 103;
const NAME: u8 = 104;

/// pflags of OPEN.
pub const FXF_READ: u32 = 0x01;
pub const FXF_WRITE: u32 = 0x02;
pub const FXF_APPEND: u32 = 0x04;
pub const FXF_CREAT: u32 = 0x08;
pub const FXF_TRUNC: u32 = 0x10;

/// SSH_FX_PERMISSION_DENIED, the status ward answers refused requests with.
pub const FX_PERMISSION_DENIED: u32 = 3;

/// The request id ward uses for its own REALPATH(".") (the reply is not forwarded).
pub const WARD_REQUEST_ID: u32 = 0xffff_fff0;

/// Bad SFTP data: the channel is closed with this message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtocolError {
    #[error("SFTP packet of {0} bytes is larger than the {MAX_PACKET} bytes ward accepts")]
    TooLarge(usize),
    #[error("empty SFTP packet")]
    Empty,
    #[error("malformed SFTP packet of type {0}")]
    Malformed(u8),
}

/// Cuts a byte stream into whole SFTP packets (length prefix included).
#[derive(Default)]
pub struct Framer {
    buf: BytesMut,
}

impl Framer {
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next whole packet, if one has arrived.
    pub fn next_packet(&mut self) -> Result<Option<Bytes>, ProtocolError> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if len == 0 {
            return Err(ProtocolError::Empty);
        }
        if len > MAX_PACKET {
            return Err(ProtocolError::TooLarge(len));
        }
        if self.buf.len() < 4 + len {
            self.buf.reserve(4 + len - self.buf.len());
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(4 + len).freeze()))
    }
}

/// Reads the fields of one packet body.
struct Fields<'a> {
    data: &'a [u8],
    kind: u8,
}

impl<'a> Fields<'a> {
    fn u32(&mut self) -> Result<u32, ProtocolError> {
        if self.data.len() < 4 {
            return Err(ProtocolError::Malformed(self.kind));
        }
        Ok(self.data.get_u32())
    }

    fn bytes(&mut self) -> Result<&'a [u8], ProtocolError> {
        let len = self.u32()? as usize;
        if self.data.len() < len {
            return Err(ProtocolError::Malformed(self.kind));
        }
        let (s, rest) = self.data.split_at(len);
        self.data = rest;
        Ok(s)
    }

    fn string(&mut self) -> Result<String, ProtocolError> {
        Ok(String::from_utf8_lossy(self.bytes()?).into_owned())
    }
}

/// Splits a packet into its type and a field reader positioned after the type.
fn fields(packet: &[u8]) -> Result<Fields<'_>, ProtocolError> {
    let body = packet.get(4..).unwrap_or_default();
    let (&kind, data) = body.split_first().ok_or(ProtocolError::Empty)?;
    Ok(Fields { data, kind })
}

/// A client request, as far as ward needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    Init,
    Open {
        id: u32,
        path: String,
        pflags: u32,
    },
    Close {
        id: u32,
        handle: Vec<u8>,
    },
    Read {
        id: u32,
        handle: Vec<u8>,
    },
    Write {
        id: u32,
        handle: Vec<u8>,
        len: u64,
    },
    OpenDir {
        id: u32,
        path: String,
    },
    Realpath {
        id: u32,
        path: String,
    },
    /// A request on paths: its operation name (`remove`, `rename`, …) and the paths.
    Paths {
        id: u32,
        op: &'static str,
        paths: Vec<String>,
    },
    /// A request on an open handle that changes it (FSETSTAT).
    HandleSetstat {
        id: u32,
        handle: Vec<u8>,
    },
    /// Anything else (READDIR, FSTAT, unknown extensions, …): forwarded as is.
    Other,
}

/// Decodes a client packet.
pub fn parse_request(packet: &[u8]) -> Result<Request, ProtocolError> {
    let mut f = fields(packet)?;
    let kind = f.kind;
    if kind == INIT {
        return Ok(Request::Init);
    }
    let id = f.u32()?;
    let paths = |op, f: &mut Fields<'_>, n: usize| -> Result<Request, ProtocolError> {
        let mut paths = Vec::with_capacity(n);
        for _ in 0..n {
            paths.push(f.string()?);
        }
        Ok(Request::Paths { id, op, paths })
    };
    Ok(match kind {
        OPEN => {
            let path = f.string()?;
            let pflags = f.u32()?;
            Request::Open { id, path, pflags }
        }
        CLOSE => Request::Close {
            id,
            handle: f.bytes()?.to_vec(),
        },
        READ => Request::Read {
            id,
            handle: f.bytes()?.to_vec(),
        },
        WRITE => {
            let handle = f.bytes()?.to_vec();
            let _offset = (f.u32()?, f.u32()?);
            let len = f.u32()? as u64;
            if (f.data.len() as u64) < len {
                return Err(ProtocolError::Malformed(kind));
            }
            Request::Write { id, handle, len }
        }
        OPENDIR => Request::OpenDir {
            id,
            path: f.string()?,
        },
        REALPATH => Request::Realpath {
            id,
            path: f.string()?,
        },
        REMOVE => paths("remove", &mut f, 1)?,
        MKDIR => paths("mkdir", &mut f, 1)?,
        RMDIR => paths("rmdir", &mut f, 1)?,
        SETSTAT => paths("setstat", &mut f, 1)?,
        RENAME => paths("rename", &mut f, 2)?,
        SYMLINK => paths("symlink", &mut f, 2)?,
        STAT | LSTAT | READLINK => paths("stat", &mut f, 1)?,
        FSETSTAT => Request::HandleSetstat {
            id,
            handle: f.bytes()?.to_vec(),
        },
        EXTENDED => {
            let name = f.string()?;
            match name.as_str() {
                "posix-rename@openssh.com" => paths("rename", &mut f, 2)?,
                "hardlink@openssh.com" => paths("link", &mut f, 2)?,
                "lsetstat@openssh.com" => paths("setstat", &mut f, 1)?,
                "statvfs@openssh.com" | "expand-path@openssh.com" => paths("stat", &mut f, 1)?,
                _ => Request::Other,
            }
        }
        _ => Request::Other,
    })
}

/// A server reply, as far as ward needs it.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Status { id: u32, code: u32, message: String },
    Handle { id: u32, handle: Vec<u8> },
    Data { id: u32, len: u64 },
    Name { id: u32, first: Option<String> },
    Other,
}

/// Decodes a server packet.
pub fn parse_reply(packet: &[u8]) -> Result<Reply, ProtocolError> {
    let mut f = fields(packet)?;
    Ok(match f.kind {
        STATUS => {
            let id = f.u32()?;
            let code = f.u32()?;
            // The message is absent in some old servers.
            let message = f.string().unwrap_or_default();
            Reply::Status { id, code, message }
        }
        HANDLE => Reply::Handle {
            id: f.u32()?,
            handle: f.bytes()?.to_vec(),
        },
        DATA => {
            let id = f.u32()?;
            let len = f.u32()? as u64;
            Reply::Data { id, len }
        }
        NAME => {
            let id = f.u32()?;
            let count = f.u32()?;
            let first = if count > 0 { Some(f.string()?) } else { None };
            Reply::Name { id, first }
        }
        _ => Reply::Other,
    })
}

/// A STATUS packet, for requests ward answers itself.
pub fn status_packet(id: u32, code: u32, message: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 1 + 4 + 4 + 4 + message.len() + 4 + 2);
    let len = 1 + 4 + 4 + 4 + message.len() + 4 + 2;
    b.put_u32(len as u32);
    b.put_u8(STATUS);
    b.put_u32(id);
    b.put_u32(code);
    b.put_u32(message.len() as u32);
    b.put_slice(message.as_bytes());
    b.put_u32(2);
    b.put_slice(b"en");
    b.freeze()
}

/// ward's own REALPATH(".") request, sent after the client's INIT so relative paths can be
/// made absolute.
pub fn realpath_request() -> Bytes {
    let mut b = BytesMut::with_capacity(4 + 1 + 4 + 4 + 1);
    b.put_u32(1 + 4 + 4 + 1);
    b.put_u8(REALPATH);
    b.put_u32(WARD_REQUEST_ID);
    b.put_u32(1);
    b.put_u8(b'.');
    b.freeze()
}

/// Makes `path` absolute against `cwd` and removes `.`, `..` and repeated slashes (as text:
/// symbolic links on the host are not seen).
pub fn normalize(cwd: &str, path: &str) -> String {
    let full = if path.starts_with('/') {
        path.to_string()
    } else {
        format!("{cwd}/{path}")
    };
    let mut parts: Vec<&str> = Vec::new();
    for part in full.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// What a request asks of the policy: kinds, absolute paths, and the audit text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    pub id: u32,
    pub kinds: Vec<&'static str>,
    pub paths: Vec<String>,
    /// `write /etc/hosts`, `rename /a /b`.
    pub text: String,
    /// `SFTP WRITE`.
    pub command: String,
}

/// A finished file operation, for the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOp {
    pub text: String,
    pub command: String,
    /// Bytes read plus bytes written (for opened files).
    pub bytes: Option<u64>,
    /// The server's failure, if it refused.
    pub error: Option<String>,
}

/// An open file.
struct OpenFile {
    check: Check,
    read: u64,
    written: u64,
}

/// What a forwarded request waits for.
enum Pending {
    Open(Check),
    Read(Vec<u8>),
    Close(Vec<u8>),
    /// An operation recorded when its status comes.
    Op(Check),
    WardRealpath,
    ClientRealpath,
}

/// Requests in flight and open handles of one sftp channel.
#[derive(Default)]
pub struct Tracker {
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, OpenFile>,
    cwd: Option<String>,
}

/// The operation name (`read`, `write`, `read+write`) and kinds of an OPEN.
fn open_kinds(pflags: u32) -> (&'static str, Vec<&'static str>) {
    let writes = pflags & (FXF_WRITE | FXF_APPEND | FXF_CREAT | FXF_TRUNC) != 0;
    let reads = pflags & FXF_READ != 0 || !writes;
    match (reads, writes) {
        (true, true) => ("read+write", vec!["sftp_read", "sftp_write", "sftp_modify"]),
        (false, true) => ("write", vec!["sftp_write", "sftp_modify"]),
        _ => ("read", vec!["sftp_read"]),
    }
}

fn op_kinds(op: &str) -> Vec<&'static str> {
    let kind = match op {
        "remove" => "sftp_remove",
        "rename" => "sftp_rename",
        "mkdir" => "sftp_mkdir",
        "rmdir" => "sftp_rmdir",
        "setstat" => "sftp_setstat",
        "symlink" | "link" => "sftp_link",
        "list" => "sftp_list",
        _ => "sftp_stat",
    };
    if matches!(kind, "sftp_list" | "sftp_stat") {
        vec![kind]
    } else {
        vec![kind, "sftp_modify"]
    }
}

impl Tracker {
    /// The working directory the server named, once known.
    pub fn cwd(&self) -> Option<&str> {
        self.cwd.as_deref()
    }

    /// Whether judging `request` needs the working directory, which is not known yet.
    pub fn needs_cwd(&self, request: &Request) -> bool {
        if self.cwd.is_some() {
            return false;
        }
        let relative = |p: &String| !p.starts_with('/');
        match request {
            Request::Open { path, .. } | Request::OpenDir { path, .. } => relative(path),
            Request::Paths { paths, .. } => paths.iter().any(relative),
            _ => false,
        }
    }

    /// What `request` asks of the policy, if it names files (`None`: forward it unjudged).
    pub fn check(&self, request: &Request) -> Option<Check> {
        let cwd = self.cwd.as_deref().unwrap_or("/");
        let make = |id, op: &str, kinds, paths: Vec<String>| {
            let paths: Vec<String> = paths.iter().map(|p| normalize(cwd, p)).collect();
            Some(Check {
                id,
                kinds,
                text: format!("{op} {}", paths.join(" ")),
                command: format!("SFTP {}", op.to_ascii_uppercase()),
                paths,
            })
        };
        match request {
            Request::Open { id, path, pflags } => {
                let (op, kinds) = open_kinds(*pflags);
                make(*id, op, kinds, vec![path.clone()])
            }
            Request::OpenDir { id, path } => {
                make(*id, "list", op_kinds("list"), vec![path.clone()])
            }
            Request::Paths { id, op, paths } => make(*id, op, op_kinds(op), paths.clone()),
            Request::HandleSetstat { id, handle } => {
                let file = self.handles.get(handle)?;
                make(
                    *id,
                    "setstat",
                    op_kinds("setstat"),
                    file.check.paths.clone(),
                )
            }
            _ => None,
        }
    }

    /// Notes a request being forwarded (with its check, if it had one).
    pub fn forwarded(&mut self, request: &Request, check: Option<Check>) {
        match (request, check) {
            (Request::Open { id, .. }, Some(check)) => {
                self.pending.insert(*id, Pending::Open(check));
            }
            (Request::Read { id, handle }, _) if self.handles.contains_key(handle) => {
                self.pending.insert(*id, Pending::Read(handle.clone()));
            }
            (Request::Write { handle, len, .. }, _) => {
                if let Some(file) = self.handles.get_mut(handle) {
                    file.written += len;
                }
            }
            (Request::Close { id, handle }, _) if self.handles.contains_key(handle) => {
                self.pending.insert(*id, Pending::Close(handle.clone()));
            }
            (Request::Realpath { id, path }, _) if path == "." && self.cwd.is_none() => {
                self.pending.insert(*id, Pending::ClientRealpath);
            }
            // Stat-like requests are judged but not recorded (clients send many).
            (_, Some(check)) if !check.kinds.contains(&"sftp_stat") => {
                self.pending.insert(check.id, Pending::Op(check));
            }
            _ => {}
        }
    }

    /// Notes ward's own REALPATH(".") being sent.
    pub fn ward_realpath_sent(&mut self) {
        self.pending.insert(WARD_REQUEST_ID, Pending::WardRealpath);
    }

    /// Reads a server reply: the finished operation, if any, and whether the reply is
    /// ward's own (not to be forwarded).
    pub fn reply(&mut self, reply: &Reply) -> (Option<FileOp>, bool) {
        let id = match reply {
            Reply::Status { id, .. }
            | Reply::Handle { id, .. }
            | Reply::Data { id, .. }
            | Reply::Name { id, .. } => *id,
            Reply::Other => return (None, false),
        };
        let Some(pending) = self.pending.remove(&id) else {
            return (None, false);
        };
        let failure = match reply {
            Reply::Status { code, message, .. } if *code != 0 => Some(if message.is_empty() {
                format!("status {code}")
            } else {
                message.clone()
            }),
            _ => None,
        };
        match (pending, reply) {
            (Pending::WardRealpath, Reply::Name { first, .. }) => {
                if let Some(first) = first {
                    self.cwd = Some(normalize("/", first));
                }
                (None, true)
            }
            (Pending::WardRealpath, _) => (None, true),
            (Pending::ClientRealpath, Reply::Name { first: Some(f), .. }) => {
                self.cwd.get_or_insert_with(|| normalize("/", f));
                (None, false)
            }
            (Pending::Open(check), Reply::Handle { handle, .. }) => {
                self.handles.insert(
                    handle.clone(),
                    OpenFile {
                        check,
                        read: 0,
                        written: 0,
                    },
                );
                (None, false)
            }
            (Pending::Read(handle), Reply::Data { len, .. }) => {
                if let Some(file) = self.handles.get_mut(&handle) {
                    file.read += len;
                }
                (None, false)
            }
            (Pending::Close(handle), _) => {
                let Some(file) = self.handles.remove(&handle) else {
                    return (None, false);
                };
                let text = match (file.read, file.written) {
                    (0, 0) => file.check.text.clone(),
                    (r, 0) => format!("{} ({r} bytes read)", file.check.text),
                    (0, w) => format!("{} ({w} bytes written)", file.check.text),
                    (r, w) => format!("{} ({r} bytes read, {w} bytes written)", file.check.text),
                };
                let op = FileOp {
                    text,
                    command: file.check.command,
                    bytes: Some(file.read + file.written),
                    error: failure,
                };
                (Some(op), false)
            }
            (Pending::Open(check) | Pending::Op(check), _) => (
                Some(FileOp {
                    text: check.text,
                    command: check.command,
                    bytes: None,
                    error: failure,
                }),
                false,
            ),
            _ => (None, false),
        }
    }

    /// Files still open when the channel ends, as operations (their bytes so far).
    pub fn unclosed(&mut self) -> Vec<FileOp> {
        self.handles
            .drain()
            .map(|(_, f)| FileOp {
                text: format!(
                    "{} ({} bytes read, {} bytes written)",
                    f.check.text, f.read, f.written
                ),
                command: f.check.command,
                bytes: Some(f.read + f.written),
                error: Some("not closed before the channel ended".into()),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn packet(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut p = ((body.len() + 1) as u32).to_be_bytes().to_vec();
        p.push(kind);
        p.extend_from_slice(body);
        p
    }

    fn s(text: &[u8]) -> Vec<u8> {
        let mut v = (text.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(text);
        v
    }

    fn open(id: u32, path: &str, pflags: u32) -> Vec<u8> {
        let mut b = id.to_be_bytes().to_vec();
        b.extend(s(path.as_bytes()));
        b.extend(pflags.to_be_bytes());
        b.extend(0u32.to_be_bytes());
        packet(OPEN, &b)
    }

    #[test]
    fn framing_survives_any_chunking() {
        let mut stream = open(1, "/etc/hosts", FXF_READ);
        stream.extend(open(2, "b", FXF_WRITE | FXF_CREAT));
        for chunk in [1, 3, 7, stream.len()] {
            let mut f = Framer::default();
            let mut got = Vec::new();
            for c in stream.chunks(chunk) {
                f.push(c);
                while let Some(p) = f.next_packet().unwrap() {
                    got.push(parse_request(&p).unwrap());
                }
            }
            assert_eq!(got.len(), 2);
            assert_eq!(
                got[1],
                Request::Open {
                    id: 2,
                    path: "b".into(),
                    pflags: FXF_WRITE | FXF_CREAT
                }
            );
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut f = Framer::default();
        f.push(&[0xff, 0xff, 0xff, 0xff, 1]);
        assert!(matches!(f.next_packet(), Err(ProtocolError::TooLarge(_))));
        let mut f = Framer::default();
        f.push(&[0, 0, 0, 0]);
        assert_eq!(f.next_packet(), Err(ProtocolError::Empty));
        // A path longer than the packet.
        let bad = packet(OPEN, &[0, 0, 0, 1, 0, 0, 0, 200, b'x']);
        assert_eq!(parse_request(&bad), Err(ProtocolError::Malformed(OPEN)));
        assert_eq!(
            parse_reply(&packet(HANDLE, &[0, 0])),
            Err(ProtocolError::Malformed(HANDLE))
        );
    }

    #[test]
    fn paths_are_made_absolute_and_normalised() {
        assert_eq!(normalize("/home/u", "a/../b/./c"), "/home/u/b/c");
        assert_eq!(normalize("/home/u", "/etc//x/"), "/etc/x");
        assert_eq!(normalize("/", "../../etc"), "/etc");
    }

    #[test]
    fn an_opened_file_is_recorded_at_close_with_its_bytes() {
        let mut t = Tracker::default();
        t.ward_realpath_sent();
        let mut name = WARD_REQUEST_ID.to_be_bytes().to_vec();
        name.extend(1u32.to_be_bytes());
        name.extend(s(b"/home/u"));
        let (op, ours) = t.reply(&parse_reply(&packet(NAME, &name)).unwrap());
        assert!(ours && op.is_none());
        let req = parse_request(&open(5, "up/f", FXF_WRITE | FXF_CREAT | FXF_TRUNC)).unwrap();
        let check = t.check(&req).unwrap();
        assert_eq!(check.paths, ["/home/u/up/f"]);
        assert_eq!(check.kinds, ["sftp_write", "sftp_modify"]);
        t.forwarded(&req, Some(check));
        t.reply(&Reply::Handle {
            id: 5,
            handle: b"h".to_vec(),
        });
        for id in 6..9 {
            t.forwarded(
                &Request::Write {
                    id,
                    handle: b"h".to_vec(),
                    len: 100,
                },
                None,
            );
        }
        let close = Request::Close {
            id: 9,
            handle: b"h".to_vec(),
        };
        t.forwarded(&close, None);
        let (op, _) = t.reply(&Reply::Status {
            id: 9,
            code: 0,
            message: String::new(),
        });
        let op = op.unwrap();
        assert_eq!(op.text, "write /home/u/up/f (300 bytes written)");
        assert_eq!(op.command, "SFTP WRITE");
        assert_eq!(op.bytes, Some(300));
    }

    #[test]
    fn status_packets_parse_back() {
        let p = status_packet(7, FX_PERMISSION_DENIED, "ward: denied");
        assert_eq!(
            parse_reply(&p).unwrap(),
            Reply::Status {
                id: 7,
                code: 3,
                message: "ward: denied".into()
            }
        );
    }
}
