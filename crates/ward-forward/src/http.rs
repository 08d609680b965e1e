//! HTTP batch POST: a JSON array of envelopes, or Splunk HTTP Event Collector events.
//!
//! - `format: json`: the body is `[envelope, envelope, …]`, `Content-Type:
//!   application/json`; with `token`, `Authorization: Bearer <token>`.
//! - `format: splunk_hec`: one `{"time":<secs.micros>,"host":…,"source":"ward",
//!   "sourcetype":"ward:event","event":<envelope>}` object per event, separated by newlines
//!   (HEC takes concatenated objects), `Authorization: Splunk <token>`.
//!
//! Only a 2xx answer counts as delivered; anything else (including redirects, which are not
//! followed) is a failure and the batch is retried. The client is ureq (blocking, rustls
//! with ring). The token is never logged; neither is the URL beyond its origin.

use crate::{DeliveryError, Item, Sink};
use std::io::Read;
use ward_core::approvals::url_origin;
use ward_core::forward::{ForwardSink, HttpFormat};
use ward_core::secret::Secret;

/// Posts batches to an HTTP endpoint.
pub struct HttpSink {
    url: String,
    origin: String,
    format: HttpFormat,
    authorization: Option<Secret>,
    host: String,
    agent: ureq::Agent,
}

impl std::fmt::Debug for HttpSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpSink")
            .field("origin", &self.origin)
            .field("format", &self.format)
            .finish()
    }
}

impl HttpSink {
    /// Resolves the token now (a missing secret stops `ward serve` at start).
    pub fn new(config: &ForwardSink) -> Result<HttpSink, String> {
        let url = config
            .url
            .clone()
            .ok_or_else(|| "an http sink needs `url`".to_string())?;
        let format = config.format.unwrap_or_default();
        let token = match &config.token {
            Some(r) => Some(r.resolve().map_err(|e| format!("token: {e}"))?),
            None => None,
        };
        if format == HttpFormat::SplunkHec && token.is_none() {
            return Err("format splunk_hec needs `token`".into());
        }
        let scheme = match format {
            HttpFormat::Json => "Bearer",
            HttpFormat::SplunkHec => "Splunk",
        };
        let authorization = token.map(|t| Secret::new(format!("{scheme} {}", t.expose().trim())));
        let mut builder = ureq::AgentBuilder::new()
            .timeout(config.timeout())
            .redirects(0)
            .user_agent(concat!("ward/", env!("CARGO_PKG_VERSION")));
        if config.ca.is_some() {
            builder = builder.tls_config(crate::tls::client_config(config.ca.as_deref())?);
        }
        Ok(HttpSink {
            origin: url_origin(&url),
            url,
            format,
            authorization,
            host: config.hostname.clone().unwrap_or_else(crate::hostname),
            agent: builder.build(),
        })
    }

    /// The request body for `items`.
    pub fn body(&self, items: &[Item<'_>]) -> Vec<u8> {
        let mut body = Vec::with_capacity(items.iter().map(|i| i.json.len() + 128).sum());
        match self.format {
            HttpFormat::Json => {
                body.push(b'[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b',');
                    }
                    body.extend_from_slice(item.json.as_bytes());
                }
                body.push(b']');
            }
            HttpFormat::SplunkHec => {
                let host = serde_json::to_string(&self.host).unwrap_or_else(|_| "\"-\"".into());
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        body.push(b'\n');
                    }
                    let at = item.row.at;
                    body.extend_from_slice(
                        format!(
                            "{{\"time\":{}.{:06},\"host\":{host},\"source\":\"ward\",\"sourcetype\":\"ward:event\",\"event\":",
                            at.div_euclid(1_000_000),
                            at.rem_euclid(1_000_000)
                        )
                        .as_bytes(),
                    );
                    body.extend_from_slice(item.json.as_bytes());
                    body.push(b'}');
                }
            }
        }
        body
    }
}

impl Sink for HttpSink {
    fn deliver(&mut self, items: &[Item<'_>]) -> Result<(), DeliveryError> {
        let body = self.body(items);
        let mut request = self
            .agent
            .post(&self.url)
            .set("Content-Type", "application/json");
        if let Some(auth) = &self.authorization {
            request = request.set("Authorization", auth.expose());
        }
        let response = match request.send_bytes(&body) {
            Ok(r) => r,
            Err(ureq::Error::Status(code, response)) => {
                drain(response);
                return Err(DeliveryError::Status(code));
            }
            Err(ureq::Error::Transport(t)) => {
                // Not `t.to_string()`: it names the whole URL.
                let message = match t.message() {
                    Some(m) => format!("{} ({}): {m}", t.kind(), self.origin),
                    None => format!("{} ({})", t.kind(), self.origin),
                };
                return Err(DeliveryError::Transport(message));
            }
        };
        let status = response.status();
        drain(response);
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(DeliveryError::Status(status))
        }
    }
}

/// Reads (a bounded part of) the answer so the connection can be reused; its content is
/// not looked at.
fn drain(response: ureq::Response) {
    let mut sink = Vec::new();
    let _ = response
        .into_reader()
        .take(64 * 1024)
        .read_to_end(&mut sink);
}
