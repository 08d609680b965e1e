//! PostgreSQL wire framing: finding message boundaries without decoding messages.
//!
//! Written by hand on purpose: the relay must forward the bytes it does not inspect without
//! decoding and re-encoding them, and must stream messages larger than its buffer (a huge
//! DataRow or CopyData) instead of holding them whole. Codec crates decode every message into
//! an owned value, which is exactly the cost this module exists to avoid. Only the handful of
//! messages ward needs to read are parsed, from borrowed slices (see `messages`).

/// Bytes in a message header: one tag byte and a four-byte big-endian length that counts
/// itself but not the tag.
pub const HEADER_LEN: usize = 5;

/// Why a byte stream is not a valid sequence of PostgreSQL messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("message {tag:?} has an invalid length {len}")]
    BadLength { tag: char, len: u32 },
    #[error("message {tag:?} of {len} bytes exceeds the limit of {max} bytes")]
    TooLong { tag: char, len: u32, max: u32 },
}

/// One step of scanning a buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Scan<'a> {
    /// A complete message: its tag and body (without the header).
    Whole { tag: u8, body: &'a [u8] },
    /// The start of a message that is streamed through without being held whole. Its
    /// remaining bytes will be forwarded as they arrive.
    Streamed { tag: u8 },
}

/// Walks message boundaries across reads, remembering a streamed message's remaining bytes.
///
/// `scan` reports each message found and returns how many bytes of the buffer may be
/// forwarded now; the rest is an incomplete message to be kept until more bytes arrive.
#[derive(Debug)]
pub struct Framer {
    /// Bytes of a streamed message still to come from the peer.
    streaming_remaining: usize,
    max_len: u32,
}

impl Framer {
    pub fn new(max_len: u32) -> Self {
        Framer {
            streaming_remaining: 0,
            max_len,
        }
    }

    /// Scans `buf`, calling `on_message` for each message (whole, or the start of a streamed
    /// one). `stream_ok(tag)` says which message kinds may be streamed rather than held whole
    /// (those the caller never needs to read). Returns the number of leading bytes that are
    /// complete (or streamed) and may be forwarded.
    pub fn scan<E>(
        &mut self,
        buf: &[u8],
        stream_ok: impl Fn(u8) -> bool,
        mut on_message: impl FnMut(Scan<'_>) -> Result<(), E>,
    ) -> Result<Result<usize, FrameError>, E> {
        let mut pos = 0;
        if self.streaming_remaining > 0 {
            let take = self.streaming_remaining.min(buf.len());
            self.streaming_remaining -= take;
            pos = take;
            if self.streaming_remaining > 0 {
                return Ok(Ok(pos));
            }
        }
        while buf.len() - pos >= HEADER_LEN {
            let tag = buf[pos];
            let len = u32::from_be_bytes([buf[pos + 1], buf[pos + 2], buf[pos + 3], buf[pos + 4]]);
            if len < 4 {
                return Ok(Err(FrameError::BadLength {
                    tag: tag as char,
                    len,
                }));
            }
            if len > self.max_len {
                return Ok(Err(FrameError::TooLong {
                    tag: tag as char,
                    len,
                    max: self.max_len,
                }));
            }
            let total = 1 + len as usize;
            let available = buf.len() - pos;
            if available >= total {
                on_message(Scan::Whole {
                    tag,
                    body: &buf[pos + HEADER_LEN..pos + total],
                })?;
                pos += total;
            } else if stream_ok(tag) {
                on_message(Scan::Streamed { tag })?;
                self.streaming_remaining = total - available;
                return Ok(Ok(buf.len()));
            } else {
                break;
            }
        }
        Ok(Ok(pos))
    }

    /// Bytes the buffer must hold to complete the message it starts with, if known.
    pub fn needed(buf: &[u8]) -> Option<usize> {
        (buf.len() >= HEADER_LEN)
            .then(|| 1 + u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize)
    }
}

/// Appends a message with `tag` whose body is written by `body`, fixing up the length.
pub fn put_message(out: &mut Vec<u8>, tag: u8, body: impl FnOnce(&mut Vec<u8>)) {
    out.push(tag);
    let len_at = out.len();
    out.extend_from_slice(&[0, 0, 0, 0]);
    body(out);
    let len = (out.len() - len_at) as u32;
    out[len_at..len_at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends a NUL-terminated string.
pub fn put_cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// Reads a NUL-terminated string from the start of `buf`, returning it and the rest.
pub fn read_cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let end = memchr::memchr(0, buf)?;
    Some((&buf[..end], &buf[end + 1..]))
}

/// Reads a big-endian i32 from the start of `buf`.
pub fn read_i32(buf: &[u8]) -> Option<(i32, &[u8])> {
    let bytes: [u8; 4] = buf.get(..4)?.try_into().ok()?;
    Some((i32::from_be_bytes(bytes), &buf[4..]))
}

/// Reads a big-endian i16 from the start of `buf`.
pub fn read_i16(buf: &[u8]) -> Option<(i16, &[u8])> {
    let bytes: [u8; 2] = buf.get(..2)?.try_into().ok()?;
    Some((i16::from_be_bytes(bytes), &buf[2..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        put_message(&mut v, tag, |o| o.extend_from_slice(body));
        v
    }

    type Seen = Vec<(u8, Option<Vec<u8>>)>;

    fn collect(f: &mut Framer, buf: &[u8], stream: &[u8]) -> (Seen, usize) {
        let mut seen = Vec::new();
        let n = f
            .scan::<()>(
                buf,
                |t| stream.contains(&t),
                |s| {
                    seen.push(match s {
                        Scan::Whole { tag, body } => (tag, Some(body.to_vec())),
                        Scan::Streamed { tag } => (tag, None),
                    });
                    Ok(())
                },
            )
            .unwrap()
            .unwrap();
        (seen, n)
    }

    #[test]
    fn splits_whole_messages_and_keeps_partial_tail() {
        let mut buf = msg(b'Q', b"select 1\0");
        buf.extend(msg(b'S', b""));
        let full = buf.len();
        buf.extend(&msg(b'Q', b"select 2\0")[..7]);
        let mut f = Framer::new(1 << 30);
        let (seen, n) = collect(&mut f, &buf, &[]);
        assert_eq!(n, full);
        assert_eq!(
            seen,
            vec![(b'Q', Some(b"select 1\0".to_vec())), (b'S', Some(vec![]))]
        );
    }

    #[test]
    fn streams_big_uninspected_messages_across_reads() {
        let big = msg(b'D', &[7u8; 100]);
        let mut f = Framer::new(1 << 30);
        let (seen, n) = collect(&mut f, &big[..40], b"D");
        assert_eq!((seen, n), (vec![(b'D', None)], 40));
        let mut rest = big[40..].to_vec();
        rest.extend(msg(b'Z', b"I"));
        let (seen, n) = collect(&mut f, &rest, b"D");
        assert_eq!(n, rest.len());
        assert_eq!(seen, vec![(b'Z', Some(b"I".to_vec()))]);
    }

    #[test]
    fn refuses_bad_and_oversized_lengths() {
        let mut f = Framer::new(1024);
        let bad = [b'Q', 0, 0, 0, 2];
        assert!(matches!(
            f.scan::<()>(&bad, |_| false, |_| Ok(())).unwrap(),
            Err(FrameError::BadLength { .. })
        ));
        let huge = [b'Q', 0x7f, 0, 0, 0];
        assert!(matches!(
            f.scan::<()>(&huge, |_| false, |_| Ok(())).unwrap(),
            Err(FrameError::TooLong { .. })
        ));
    }
}
