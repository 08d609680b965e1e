//! Terminal output helpers: safe text, aligned tables, times.

use std::borrow::Cow;
use std::io::Write;

/// Writes `text` to stdout. A closed pipe (`ward sessions list | head`) ends the output
/// quietly instead of panicking as `println!` would.
pub fn print_stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

/// Makes client-controlled text (SQL, parameters, program names, error messages) safe to
/// print on a terminal: control characters, which could move the cursor or rewrite what the
/// operator sees, and bidirectional overrides, which could make text read differently than
/// it is, are shown as escapes. Newlines are kept when `keep_newlines` is set.
pub fn clean(text: &str, keep_newlines: bool) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && !(keep_newlines && c == '\n'))
            || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
    };
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' if keep_newlines => out.push('\n'),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if unsafe_char(c) => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Unix micros as `2026-01-02 15:04:05` (UTC).
pub fn time_secs(micros: i64) -> String {
    format_time(micros, "%Y-%m-%d %H:%M:%S")
}

/// Unix micros as `2026-01-02 15:04:05.123` (UTC).
pub fn time_millis(micros: i64) -> String {
    format_time(micros, "%Y-%m-%d %H:%M:%S%.3f")
}

fn format_time(micros: i64, pattern: &str) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.format(pattern).to_string())
        .unwrap_or_else(|| micros.to_string())
}

/// A table whose columns are padded to their widest cell.
pub struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(header: Vec<&'static str>) -> Self {
        Table {
            header,
            rows: Vec::new(),
        }
    }

    /// Adds a row; cells are cleaned for the terminal (see [`clean`]).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(
            cells
                .into_iter()
                .map(|c| clean(&c, false).into_owned())
                .collect(),
        );
    }

    pub fn render(&self) -> String {
        let width = |s: &str| s.chars().count();
        let mut widths: Vec<usize> = self.header.iter().map(|h| width(h)).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let mut out = String::new();
        let header: Vec<String> = self.header.iter().map(|h| h.to_string()).collect();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, cell) in row.iter().enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(cell);
                if i + 1 < row.len() {
                    let pad = widths
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(width(cell));
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_escapes_terminal_controls() {
        assert_eq!(clean("SELECT 1", false), "SELECT 1");
        assert_eq!(clean("a\u{1b}[2Jb", false), "a\\u{1b}[2Jb");
        assert_eq!(clean("a\nb\tc", false), "a\\nb\\tc");
        assert_eq!(clean("a\nb", true), "a\nb");
        assert_eq!(clean("x\u{202E}y", true), "x\\u{202e}y");
    }

    #[test]
    fn table_aligns_columns() {
        let mut t = Table::new(vec!["ID", "NAME"]);
        t.row(vec!["1".into(), "alice".into()]);
        t.row(vec!["1234".into(), "b".into()]);
        assert_eq!(t.render(), "ID    NAME\n1     alice\n1234  b\n");
    }

    #[test]
    fn times_are_utc() {
        assert_eq!(time_secs(1_500_000), "1970-01-01 00:00:01");
        assert_eq!(time_millis(1_500_000), "1970-01-01 00:00:01.500");
    }
}
