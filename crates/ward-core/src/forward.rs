//! SIEM forwarding settings (`forward:` in ward.yaml): where the session log is copied to.
//!
//! Each entry is one sink with a unique `name` (the key of its delivery cursor in the
//! store). The sinks themselves live in the `ward-forward` crate; this is only the config
//! model and its validation. See docs/forwarding.md.

use crate::secret::SecretRef;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Event kinds as stored in the session log (`event_log.kind`, the envelope's `kind`).
pub const EVENT_KINDS: [&str; 7] = [
    "session_start",
    "command",
    "statement",
    "session_end",
    "approval",
    "control",
    "auth_refused",
];

/// One `forward:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardSink {
    /// Unique among the sinks; names the sink in metrics and logs and keys its cursor
    /// (renaming a sink starts a new cursor).
    pub name: String,
    /// `file`, `stdout`, `syslog` or `http`.
    pub kind: SinkKind,
    /// Most events per delivery (default 500).
    #[serde(default = "default_batch")]
    pub batch: usize,
    /// Only these event kinds (default: all of them).
    #[serde(default)]
    pub kinds: Option<Vec<String>>,
    /// Where a sink without a cursor starts: `beginning` of the log (default) or its `end`.
    #[serde(default)]
    pub start: StartAt,

    /// file: the JSON-lines file (`-` for stdout).
    #[serde(default)]
    pub path: Option<PathBuf>,
    /// file: rotate once the file would grow past this many bytes (default: never).
    #[serde(default)]
    pub max_bytes: Option<u64>,
    /// file: rotated files kept (`path.1` newest … `path.N`; default 5).
    #[serde(default)]
    pub keep: Option<usize>,

    /// syslog: `host:port` of the receiver.
    #[serde(default)]
    pub address: Option<String>,
    /// syslog: `udp`, `tcp` (default) or `tls`.
    #[serde(default)]
    pub transport: Option<SyslogTransport>,
    /// syslog: facility name (`local0` default, `user`, `auth`, `daemon`, …) or number 0–23.
    #[serde(default)]
    pub facility: Option<Facility>,
    /// syslog: HOSTNAME field (default: this machine's host name). http `splunk_hec`: `host`.
    #[serde(default)]
    pub hostname: Option<String>,

    /// http: `http://…` or `https://…` to POST batches to.
    #[serde(default)]
    pub url: Option<String>,
    /// http: `json` (default; a JSON array of envelopes) or `splunk_hec`.
    #[serde(default)]
    pub format: Option<HttpFormat>,
    /// http: the token, by reference (`env:NAME` or `file:PATH`); sent as
    /// `Authorization: Splunk <token>` for `splunk_hec`, `Authorization: Bearer <token>`
    /// for `json`. Required for `splunk_hec`.
    #[serde(default)]
    pub token: Option<SecretRef>,

    /// syslog tls and https: PEM CA bundle to verify the receiver (system roots when absent).
    #[serde(default)]
    pub ca: Option<PathBuf>,
    /// syslog tls and https (syslog only): name expected in the receiver's certificate
    /// (default: the host of `address`).
    #[serde(default)]
    pub server_name: Option<String>,
    /// syslog tcp/tls and http: how long connecting and one delivery may take (default 10s).
    #[serde(default, deserialize_with = "duration_option")]
    pub timeout: Option<Duration>,
}

fn default_batch() -> usize {
    500
}

/// Most events a `batch` may ask for.
pub const MAX_BATCH: usize = 10_000;

/// What a sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SinkKind {
    File,
    Stdout,
    Syslog,
    Http,
}

impl SinkKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SinkKind::File => "file",
            SinkKind::Stdout => "stdout",
            SinkKind::Syslog => "syslog",
            SinkKind::Http => "http",
        }
    }
}

/// Where a new sink starts reading the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StartAt {
    /// Every event already in the log is forwarded.
    #[default]
    Beginning,
    /// Only events recorded after the sink first starts.
    End,
}

/// How syslog messages travel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyslogTransport {
    /// One datagram per event (RFC 5426); no delivery guarantee.
    Udp,
    /// Octet-counting framing (RFC 6587).
    #[default]
    Tcp,
    /// TCP with TLS (RFC 5425), the receiver's certificate verified.
    Tls,
}

/// The body of an http delivery.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpFormat {
    /// `[envelope, envelope, …]`
    #[default]
    Json,
    /// Splunk HTTP Event Collector: `{"time":…,"event":envelope}` objects, one per line.
    SplunkHec,
}

/// A syslog facility (0–23).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Facility(pub u8);

impl Default for Facility {
    fn default() -> Self {
        Facility(16) // local0
    }
}

const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];

impl Facility {
    /// Parses a facility name (`local0`, `auth`, …) or number (`16`).
    pub fn parse(text: &str) -> Result<Facility, String> {
        let t = text.trim().to_ascii_lowercase();
        if let Some(i) = FACILITIES.iter().position(|f| *f == t) {
            return Ok(Facility(i as u8));
        }
        match t.parse::<u8>() {
            Ok(n) if n <= 23 => Ok(Facility(n)),
            _ => Err(format!(
                "syslog facility {text:?} is not known; use local0 … local7, user, auth, \
                 authpriv, daemon, … or a number from 0 to 23"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Facility {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Number(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        Facility::parse(&text).map_err(serde::de::Error::custom)
    }
}

fn duration_option<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(text) => crate::time::parse_duration(&text)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// Default for `timeout`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default for `keep`.
pub const DEFAULT_KEEP: usize = 5;

impl ForwardSink {
    /// `timeout`, or its default.
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Whether the sink writes to stdout (`kind: stdout`, or `kind: file` with `path: -`).
    pub fn is_stdout(&self) -> bool {
        self.kind == SinkKind::Stdout
            || (self.kind == SinkKind::File && self.path.as_deref() == Some(Path::new("-")))
    }

    /// Whether events of `kind` go to this sink.
    pub fn wants(&self, kind: &str) -> bool {
        self.kinds
            .as_ref()
            .is_none_or(|kinds| kinds.iter().any(|k| k == kind))
    }

    /// Makes relative paths relative to `base` (the config file's directory).
    pub fn rebase(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && p.as_path() != Path::new("-") {
                *p = base.join(&*p);
            }
        };
        if let Some(p) = &mut self.path {
            fix(p);
        }
        if let Some(p) = &mut self.ca {
            fix(p);
        }
        if let Some(r) = &mut self.token {
            r.rebase(base);
        }
    }

    /// Checks the entry on its own (which options belong to its kind, required ones).
    fn validate(&self) -> Result<(), String> {
        let kind = self.kind;
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            return Err(format!(
                "name {:?} must be non-empty letters, digits, `-`, `_` or `.`",
                self.name
            ));
        }
        if self.batch == 0 || self.batch > MAX_BATCH {
            return Err(format!("batch must be between 1 and {MAX_BATCH}"));
        }
        for k in self.kinds.iter().flatten() {
            if !EVENT_KINDS.contains(&k.as_str()) {
                return Err(format!(
                    "kinds: {k:?} is not an event kind; use {}",
                    EVENT_KINDS.join(", ")
                ));
            }
        }
        let only = |set: bool, option: &str, kinds: &[SinkKind]| -> Result<(), String> {
            if set && !kinds.contains(&kind) {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                return Err(format!(
                    "`{option}` is for {} sinks, not {}",
                    names.join(" and "),
                    kind.as_str()
                ));
            }
            Ok(())
        };
        use SinkKind::*;
        only(self.path.is_some(), "path", &[File])?;
        only(self.max_bytes.is_some(), "max_bytes", &[File])?;
        only(self.keep.is_some(), "keep", &[File])?;
        only(self.address.is_some(), "address", &[Syslog])?;
        only(self.transport.is_some(), "transport", &[Syslog])?;
        only(self.facility.is_some(), "facility", &[Syslog])?;
        only(self.hostname.is_some(), "hostname", &[Syslog, Http])?;
        only(self.url.is_some(), "url", &[Http])?;
        only(self.format.is_some(), "format", &[Http])?;
        only(self.token.is_some(), "token", &[Http])?;
        only(self.ca.is_some(), "ca", &[Syslog, Http])?;
        only(self.server_name.is_some(), "server_name", &[Syslog])?;
        only(self.timeout.is_some(), "timeout", &[Syslog, Http])?;
        match kind {
            File => {
                if self.path.is_none() {
                    return Err("a file sink needs `path` (or `-` for stdout)".into());
                }
                if self.max_bytes == Some(0) {
                    return Err("max_bytes must be above 0 (leave it out to never rotate)".into());
                }
                if self.is_stdout() && self.max_bytes.is_some() {
                    return Err("stdout cannot be rotated; remove max_bytes".into());
                }
            }
            Stdout => {}
            Syslog => {
                let Some(address) = &self.address else {
                    return Err("a syslog sink needs `address: host:port`".into());
                };
                if split_host_port(address).is_none() {
                    return Err(format!(
                        "address {address:?} must be host:port, e.g. siem.internal:6514"
                    ));
                }
                let tls = self.transport == Some(SyslogTransport::Tls);
                if !tls && (self.ca.is_some() || self.server_name.is_some()) {
                    return Err("`ca` and `server_name` need `transport: tls`".into());
                }
                if self.transport == Some(SyslogTransport::Udp) && self.timeout.is_some() {
                    return Err("`timeout` is for tcp and tls transports".into());
                }
            }
            Http => {
                let Some(url) = &self.url else {
                    return Err("an http sink needs `url`".into());
                };
                let rest = url
                    .strip_prefix("https://")
                    .or_else(|| url.strip_prefix("http://"))
                    .ok_or_else(|| "url must start with https:// or http://".to_string())?;
                if rest.is_empty() || rest.starts_with('/') {
                    return Err("url has no host".into());
                }
                if self.ca.is_some() && !url.starts_with("https://") {
                    return Err("`ca` needs an https:// url".into());
                }
                if self.format == Some(HttpFormat::SplunkHec) && self.token.is_none() {
                    return Err(
                        "format splunk_hec needs `token` (e.g. token: env:HEC_TOKEN)".into(),
                    );
                }
            }
        }
        if self.timeout == Some(Duration::ZERO) {
            return Err("timeout must be above 0".into());
        }
        Ok(())
    }
}

/// `host` and `port` of `host:port` or `[v6]:port`.
pub fn split_host_port(address: &str) -> Option<(&str, u16)> {
    let (host, port) = address.rsplit_once(':')?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let port = port.parse().ok()?;
    (!host.is_empty()).then_some((host, port))
}

/// Checks every `forward:` entry and that names are unique.
pub fn validate(sinks: &[ForwardSink]) -> Result<(), String> {
    for (i, sink) in sinks.iter().enumerate() {
        sink.validate()
            .map_err(|e| format!("forward[{i}] ({}): {e}", sink.name))?;
        if sinks[..i].iter().any(|s| s.name == sink.name) {
            return Err(format!(
                "forward[{i}]: name {:?} is used twice; each sink needs its own name (it keys \
                 the sink's delivery cursor)",
                sink.name
            ));
        }
    }
    if sinks.iter().filter(|s| s.is_stdout()).count() > 1 {
        return Err("forward: only one sink may write to stdout".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<ForwardSink>, String> {
        let sinks: Vec<ForwardSink> = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
        validate(&sinks)?;
        Ok(sinks)
    }

    #[test]
    fn every_kind_parses_with_defaults() {
        let sinks = parse(
            "
- { name: local, kind: file, path: /var/log/ward/events.jsonl, max_bytes: 1000000, keep: 3 }
- { name: out, kind: stdout, kinds: [statement, session_end], start: end }
- { name: siem, kind: syslog, address: 'siem:6514', transport: tls, ca: ca.pem, facility: auth }
- { name: hec, kind: http, url: 'https://splunk:8088/services/collector/event', format: splunk_hec, token: 'env:HEC_TOKEN', timeout: 5s }
",
        )
        .unwrap();
        assert_eq!(sinks[0].batch, 500);
        assert_eq!(sinks[0].start, StartAt::Beginning);
        assert_eq!(sinks[1].start, StartAt::End);
        assert!(sinks[1].wants("statement") && !sinks[1].wants("command"));
        assert!(sinks[0].wants("command"));
        assert_eq!(sinks[2].facility, Some(Facility(4)));
        assert_eq!(sinks[3].timeout(), Duration::from_secs(5));
        assert_eq!(sinks[3].token, Some(SecretRef::Env("HEC_TOKEN".into())));
        assert!(sinks[1].is_stdout());
    }

    #[test]
    fn mistakes_are_named() {
        let err = |yaml: &str| parse(yaml).unwrap_err();
        assert!(err("- { name: a, kind: file }").contains("needs `path`"));
        assert!(err("- { name: a, kind: stdout, url: 'http://x' }").contains("`url` is for http"));
        assert!(
            err("- { name: a, kind: http, url: 'http://x', format: splunk_hec }")
                .contains("needs `token`")
        );
        assert!(err("- { name: a, kind: http, url: 'http://x', token: hunter2 }").contains("env:"));
        assert!(err("- { name: a, kind: syslog, address: nope }").contains("host:port"));
        assert!(
            err("- { name: a, kind: syslog, address: 'h:1', facility: local9 }").contains("local7")
        );
        assert!(err("- { name: a, kind: stdout, kinds: [query] }").contains("not an event kind"));
        assert!(
            err("- { name: a, kind: stdout }\n- { name: a, kind: file, path: x }")
                .contains("used twice")
        );
        assert!(err("- { name: a, kind: stdout, colour: red }").contains("unknown field"));
        assert!(err("- { name: 'a b', kind: stdout }").contains("letters"));
        assert!(err("- { name: a, kind: stdout, batch: 0 }").contains("batch"));
    }

    #[test]
    fn facilities_by_name_or_number() {
        assert_eq!(Facility::parse("local0").unwrap(), Facility(16));
        assert_eq!(Facility::parse("23").unwrap(), Facility(23));
        assert!(Facility::parse("24").is_err());
        let sinks = parse("- { name: a, kind: syslog, address: 'h:514', facility: 3 }").unwrap();
        assert_eq!(sinks[0].facility, Some(Facility(3)));
    }

    #[test]
    fn host_and_port() {
        assert_eq!(split_host_port("siem:514"), Some(("siem", 514)));
        assert_eq!(split_host_port("[::1]:514"), Some(("::1", 514)));
        assert_eq!(split_host_port(":514"), None);
        assert_eq!(split_host_port("siem"), None);
    }
}
