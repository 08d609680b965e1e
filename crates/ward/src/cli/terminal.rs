//! Terminal recordings of SSH sessions: played back (`ward replay`) and written as
//! asciicast v2 (`ward export --asciicast`), which asciinema plays.

use serde_json::json;
use std::io::Write;
use std::time::Duration;
use ward_core::event::{TerminalEvent, TerminalStream};

/// The channel a recording is about: `wanted`, or the first channel that has any.
pub fn pick_channel(events: &[TerminalEvent], wanted: Option<u32>) -> anyhow::Result<u32> {
    let mut channels: Vec<u32> = events.iter().map(|e| e.channel).collect();
    channels.sort_unstable();
    channels.dedup();
    match wanted {
        Some(n) if channels.contains(&n) => Ok(n),
        Some(n) => anyhow::bail!(
            "the session has no terminal recording on channel {n}; recorded channels: {}",
            list(&channels)
        ),
        None => channels.first().copied().ok_or_else(|| {
            anyhow::anyhow!(
                "the session has no terminal recording (SSH shell and exec channels are recorded unless audit.terminal is false)"
            )
        }),
    }
}

fn list(channels: &[u32]) -> String {
    channels
        .iter()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// How to play a recording back.
pub struct Playback {
    /// `None`: write everything at once.
    pub speed: Option<f64>,
    /// The longest pause kept (longer ones are shortened to it), in recorded time.
    pub max_idle: Option<Duration>,
}

/// Writes the channel's output to `out` and its stderr to `err`, as the client saw them,
/// waiting between events as recorded (see [`Playback`]).
pub fn play(
    events: &[TerminalEvent],
    channel: u32,
    playback: &Playback,
    out: &mut impl Write,
    err: &mut impl Write,
) -> std::io::Result<()> {
    let mut last: Option<i64> = None;
    let mut truncated = Vec::new();
    for e in events.iter().filter(|e| e.channel == channel) {
        let target: &mut dyn Write = match e.stream {
            TerminalStream::Output => out,
            TerminalStream::Stderr => err,
            TerminalStream::Input | TerminalStream::Resize => continue,
        };
        if let (Some(speed), Some(prev)) = (playback.speed, last) {
            let mut gap = Duration::from_micros((e.at - prev).max(0) as u64);
            if let Some(max) = playback.max_idle {
                gap = gap.min(max);
            }
            std::thread::sleep(gap.div_f64(speed));
        }
        last = Some(e.at);
        target.write_all(&e.data())?;
        target.flush()?;
        if e.truncated {
            truncated.push(e.stream);
        }
    }
    if !truncated.is_empty() {
        let streams: Vec<String> = truncated
            .iter()
            .map(|s| format!("{s:?}").to_lowercase())
            .collect();
        eprintln!(
            "ward: the recording of this channel's {} stopped at audit.terminal_limit; what followed passed unrecorded",
            streams.join(" and ")
        );
    }
    Ok(())
}

/// Writes the channel's recording as asciicast v2: a header line, then one
/// `[seconds, "o" | "i" | "r", data]` line per event (stderr is shown as output, as the
/// terminal showed it; a resize is `"COLSxROWS"`). Times count from the first event.
pub fn write_asciicast(
    events: &[TerminalEvent],
    channel: u32,
    title: &str,
    out: &mut impl Write,
) -> anyhow::Result<()> {
    let events: Vec<&TerminalEvent> = events.iter().filter(|e| e.channel == channel).collect();
    let first = events.first().map(|e| e.at).unwrap_or(0);
    // The size the terminal had first; 80x24 when the client asked for no terminal or
    // did not know its size (`ssh -tt` without a terminal of its own says 0x0).
    let (width, height) = events
        .iter()
        .find_map(|e| match (e.stream, e.cols, e.rows) {
            (TerminalStream::Resize, Some(c), Some(r)) if c > 0 && r > 0 => Some((c, r)),
            _ => None,
        })
        .unwrap_or((80, 24));
    let header = json!({
        "version": 2,
        "width": width,
        "height": height,
        "timestamp": first / 1_000_000,
        "title": title,
    });
    writeln!(out, "{header}")?;
    for e in events {
        let time = (e.at - first).max(0) as f64 / 1e6;
        let (code, data) = match e.stream {
            TerminalStream::Output | TerminalStream::Stderr => {
                ("o", String::from_utf8_lossy(&e.data()).into_owned())
            }
            TerminalStream::Input => ("i", String::from_utf8_lossy(&e.data()).into_owned()),
            TerminalStream::Resize => match (e.cols, e.rows) {
                (Some(c), Some(r)) => ("r", format!("{c}x{r}")),
                _ => continue,
            },
        };
        writeln!(out, "{}", json!([time, code, data]))?;
    }
    out.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ward_core::SessionId;

    fn event(channel: u32, stream: TerminalStream, data: &[u8], at: i64) -> TerminalEvent {
        TerminalEvent::bytes(SessionId("s".into()), channel, stream, data.to_vec(), at)
    }

    #[test]
    fn playback_writes_each_stream_where_the_client_saw_it() {
        let events = vec![
            event(1, TerminalStream::Input, b"ls\r", 1),
            event(1, TerminalStream::Output, b"a b\r\n", 2),
            event(2, TerminalStream::Output, b"other channel", 3),
            event(1, TerminalStream::Stderr, &[0xff, b'!'], 4),
        ];
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let at_once = Playback {
            speed: None,
            max_idle: None,
        };
        play(&events, 1, &at_once, &mut out, &mut err).unwrap();
        assert_eq!(out, b"a b\r\n");
        assert_eq!(err, [0xff, b'!']);
        assert_eq!(pick_channel(&events, None).unwrap(), 1);
        assert!(pick_channel(&events, Some(3)).is_err());
        assert!(pick_channel(&[], None).is_err());
    }

    #[test]
    fn asciicast_has_a_header_and_timed_events() {
        let mut resize = event(1, TerminalStream::Resize, b"", 1_000_000);
        resize.text = None;
        resize.cols = Some(100);
        resize.rows = Some(30);
        let events = vec![
            resize,
            event(1, TerminalStream::Output, b"$ ", 1_500_000),
            event(1, TerminalStream::Input, b"x", 2_000_000),
        ];
        let mut out = Vec::new();
        write_asciicast(&events, 1, "t", &mut out).unwrap();
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["version"], 2);
        assert_eq!(lines[0]["width"], 100);
        assert_eq!(lines[0]["height"], 30);
        assert_eq!(lines[1], json!([0.0, "r", "100x30"]));
        assert_eq!(lines[2], json!([0.5, "o", "$ "]));
        assert_eq!(lines[3], json!([1.0, "i", "x"]));
    }
}
