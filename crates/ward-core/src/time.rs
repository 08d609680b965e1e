//! Time helpers shared by the config, the events and the CLI.
//!
//! Events carry wall-clock timestamps as microseconds since the Unix epoch: cheap to take on
//! the hot path, totally ordered, and stored as a plain integer.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch, now.
pub fn now_micros() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Parses a human duration such as `90s`, `15m`, `1h`, `30d` or `2w`.
///
/// `humantime` already understands days and weeks; this wrapper only trims the input and
/// turns its error into a message that says what is accepted.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text.trim()).map_err(|e| {
        format!("invalid duration {text:?} ({e}); use forms like 90s, 15m, 1h, 30d or 2w")
    })
}

/// Formats microseconds since the epoch as RFC 3339 (UTC, millisecond precision).
pub fn format_micros(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let nanos = (micros.rem_euclid(1_000_000) * 1000) as u32;
    chrono::DateTime::from_timestamp(secs, nanos)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| micros.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_accept_days_and_reject_garbage() {
        assert_eq!(
            parse_duration("30d").unwrap(),
            Duration::from_secs(30 * 86400)
        );
        assert_eq!(parse_duration(" 1h ").unwrap(), Duration::from_secs(3600));
        assert!(parse_duration("soon").unwrap_err().contains("30d"));
    }

    #[test]
    fn formats_epoch_micros_as_rfc3339() {
        assert_eq!(format_micros(1_500), "1970-01-01T00:00:00.001Z");
    }
}
