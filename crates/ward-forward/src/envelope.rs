//! The wire format of a forwarded event (docs/events.md), schema version [`SCHEMA`]:
//!
//! ```json
//! {"schema":1,"id":42,"session_id":"0190…","seq":3,"kind":"statement",
//!  "at":"2026-01-02T03:04:05.123456Z","hash":"9f…","event":{"type":"statement",…}}
//! ```
//!
//! `event` is the stored event's exact JSON text, copied byte for byte, so its `hash` can be
//! checked against the chain from the envelope alone. Field names are stable: fields are
//! added, never renamed or removed; a breaking change bumps `schema`.

use serde::Serialize;
use serde_json::value::RawValue;
use ward_store::LogRow;

/// The envelope's schema version.
pub const SCHEMA: u32 = 1;

#[derive(Serialize)]
struct Envelope<'a> {
    schema: u32,
    id: i64,
    session_id: &'a str,
    seq: i64,
    kind: &'a str,
    at: String,
    hash: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    event: Option<Body<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    truncated: bool,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Body<'a> {
    /// The stored JSON, verbatim.
    Raw(&'a RawValue),
    /// A stored body that is not JSON (a damaged store): passed on as a string.
    Text(&'a str),
}

/// RFC 3339 UTC with microseconds, e.g. `2026-01-02T03:04:05.123456Z`.
pub fn format_at(micros: i64) -> String {
    chrono::DateTime::from_timestamp_micros(micros)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true))
        .unwrap_or_else(|| micros.to_string())
}

fn build(row: &LogRow, with_event: bool) -> String {
    let event = with_event.then(|| match serde_json::from_str::<&RawValue>(&row.body) {
        Ok(raw) => Body::Raw(raw),
        Err(_) => Body::Text(&row.body),
    });
    let envelope = Envelope {
        schema: SCHEMA,
        id: row.id,
        session_id: &row.session_id,
        seq: row.seq,
        kind: &row.kind,
        at: format_at(row.at),
        hash: hex::encode(&row.hash),
        event,
        truncated: !with_event,
    };
    // Serializing strings, integers and valid raw JSON cannot fail.
    serde_json::to_string(&envelope).unwrap_or_default()
}

/// The envelope of `row`, as one line of compact JSON.
pub fn envelope(row: &LogRow) -> String {
    build(row, true)
}

/// The envelope without `event` and with `"truncated":true`, for transports that cannot
/// carry a large event (syslog over UDP).
pub fn truncated_envelope(row: &LogRow) -> String {
    build(row, false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(body: &str) -> LogRow {
        LogRow {
            id: 7,
            session_id: "s1".into(),
            seq: 2,
            kind: "statement".into(),
            at: 1_700_000_000_123_456,
            body: body.into(),
            hash: vec![0xab; 32],
        }
    }

    #[test]
    fn envelope_fields_and_verbatim_body() {
        let body = r#"{"type":"statement","text":"select 'é' \u0041","rows":1}"#;
        let text = envelope(&row(body));
        assert!(text.contains(&format!(",\"event\":{body}}}")), "{text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["schema"], 1);
        assert_eq!(v["id"], 7);
        assert_eq!(v["session_id"], "s1");
        assert_eq!(v["seq"], 2);
        assert_eq!(v["kind"], "statement");
        assert_eq!(v["at"], "2023-11-14T22:13:20.123456Z");
        assert_eq!(v["hash"], "ab".repeat(32));
        assert_eq!(v["event"]["rows"], 1);
        assert!(v.get("truncated").is_none());
        assert!(!text.contains('\n'));
    }

    #[test]
    fn damaged_bodies_and_truncation() {
        let v: serde_json::Value = serde_json::from_str(&envelope(&row("not json"))).unwrap();
        assert_eq!(v["event"], "not json");
        let v: serde_json::Value =
            serde_json::from_str(&truncated_envelope(&row("{\"type\":\"x\"}"))).unwrap();
        assert!(v.get("event").is_none());
        assert_eq!(v["truncated"], true);
    }
}
