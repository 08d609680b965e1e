//! Blocking HTTP GETs for discovery documents and key sets (run on tokio's blocking pool).

use std::io::Read;
use std::time::Duration;

/// Largest discovery or JWKS document read; real ones are a few KiB.
const MAX_BODY: u64 = 1024 * 1024;

/// A fetched document and how long the server says it may be cached.
pub(crate) struct Fetched {
    pub body: String,
    pub max_age: Option<Duration>,
}

/// The agent all fetches share: short timeouts (a hung IdP must not hold a fetch for long;
/// callers keep using cached keys meanwhile) and few redirects.
pub(crate) fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(5))
        .timeout(Duration::from_secs(15))
        .redirects(3)
        .user_agent(concat!("ward-oidc/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// GETs `url` as JSON; errors are one line naming the URL.
pub(crate) fn get(agent: &ureq::Agent, url: &str) -> Result<Fetched, String> {
    let response = agent
        .get(url)
        .set("Accept", "application/json")
        .call()
        .map_err(|e| match e {
            ureq::Error::Status(code, _) => format!("GET {url}: HTTP {code}"),
            ureq::Error::Transport(t) => format!("GET {url}: {t}"),
        })?;
    let max_age = response.header("Cache-Control").and_then(max_age);
    let mut body = String::new();
    response
        .into_reader()
        .take(MAX_BODY + 1)
        .read_to_string(&mut body)
        .map_err(|e| format!("GET {url}: reading the body: {e}"))?;
    if body.len() as u64 > MAX_BODY {
        return Err(format!("GET {url}: the body is larger than 1 MiB"));
    }
    Ok(Fetched { body, max_age })
}

/// `max-age` of a Cache-Control header (`no-cache`/`no-store` count as 0).
fn max_age(header: &str) -> Option<Duration> {
    let mut out = None;
    for directive in header.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if lower == "no-cache" || lower == "no-store" {
            return Some(Duration::ZERO);
        }
        if let Some(secs) = lower.strip_prefix("max-age=") {
            out = secs.trim_matches('"').parse().ok().map(Duration::from_secs);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_max_age() {
        assert_eq!(
            max_age("public, max-age=3600"),
            Some(Duration::from_secs(3600))
        );
        assert_eq!(max_age("Max-Age=\"60\""), Some(Duration::from_secs(60)));
        assert_eq!(max_age("no-store"), Some(Duration::ZERO));
        assert_eq!(max_age("public"), None);
    }
}
