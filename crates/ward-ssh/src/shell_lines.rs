//! Lines typed into an interactive shell, told from the keystrokes (best effort).
//!
//! The timeline of an SSH shell session should say what was run, not only that a shell
//! was open. ward sees the keystrokes, not the shell's own line editor, so it replays the
//! simple editing keys itself: printable characters, backspace (DEL or ^H), ^U (erase the
//! line), ^W (erase a word), ^C (abandon the line); a carriage return or newline ends a
//! line. Escape sequences (arrow keys, function keys) are dropped, so history recall and
//! cursor movement are not followed, and tab completion's result is unknown (the tab stays
//! in the line). Text typed into programs (an editor, a `sudo` password prompt) reads like
//! lines too: the limits are in docs/ssh.md.

/// Longest line kept (longer lines are cut there).
const MAX_LINE: usize = 4096;

/// The keystroke state of one shell channel.
#[derive(Default)]
pub struct LineTyping {
    line: Vec<u8>,
    escape: Escape,
}

#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Escape {
    #[default]
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [ …` or `ESC O …`, until the final byte.
    Sequence,
}

impl LineTyping {
    /// Feeds typed bytes; returns the lines they completed (trimmed, non-empty).
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<String> {
        let mut lines = Vec::new();
        for &b in bytes {
            match self.escape {
                Escape::Start => {
                    self.escape = if b == b'[' || b == b'O' {
                        Escape::Sequence
                    } else {
                        Escape::None
                    };
                    continue;
                }
                Escape::Sequence => {
                    if (0x40..=0x7e).contains(&b) {
                        self.escape = Escape::None;
                    }
                    continue;
                }
                Escape::None => {}
            }
            match b {
                0x1b => self.escape = Escape::Start,
                b'\r' | b'\n' => {
                    let line = String::from_utf8_lossy(&self.line).trim().to_string();
                    self.line.clear();
                    if !line.is_empty() {
                        lines.push(line);
                    }
                }
                0x7f | 0x08 => {
                    // One character, which may be several UTF-8 bytes.
                    while let Some(last) = self.line.pop() {
                        if last & 0xc0 != 0x80 {
                            break;
                        }
                    }
                }
                0x15 | 0x03 => self.line.clear(),
                0x17 => {
                    while self.line.last().is_some_and(|c| c.is_ascii_whitespace()) {
                        self.line.pop();
                    }
                    while self.line.last().is_some_and(|c| !c.is_ascii_whitespace()) {
                        self.line.pop();
                    }
                }
                b'\t' => self.push(b'\t'),
                b if b < 0x20 => {}
                b => self.push(b),
            }
        }
        lines
    }

    fn push(&mut self, b: u8) {
        if self.line.len() < MAX_LINE {
            self.line.push(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn editing_keys_are_applied_and_lines_end_at_return() {
        let mut t = LineTyping::default();
        assert!(t.feed(b"ecoh").is_empty());
        assert_eq!(t.feed(b"\x7f\x7fho hi\r"), ["echo hi"]);
        assert_eq!(t.feed(b"rm -rf /tmp/x\x15ls -l\r\r"), ["ls -l"]);
        assert_eq!(t.feed(b"cat foo bar\x17baz\n"), ["cat foo baz"]);
        assert_eq!(t.feed(b"sleep 100\x03uptime\r"), ["uptime"]);
    }

    #[test]
    fn escape_sequences_are_dropped_and_utf8_survives() {
        let mut t = LineTyping::default();
        // Up arrow, then a line with a non-ASCII character erased with one backspace.
        assert_eq!(t.feed(b"\x1b[Aecho \xc3\xa9\xc3\xa9\x7f!\r"), ["echo é!"]);
        assert_eq!(t.feed(b"\x1bOBpwd\r"), ["pwd"]);
        let long = vec![b'a'; MAX_LINE + 10];
        let lines = t.feed(&[long.as_slice(), b"\r"].concat());
        assert_eq!(lines[0].len(), MAX_LINE);
    }
}
