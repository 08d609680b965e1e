//! One configured issuer: its settings and its key cache.
//!
//! The cache is a small state machine under a `std` mutex that is only held to read or
//! update a few fields, never across I/O, so the verification path never waits for the
//! network once keys are cached. Fetches go through a tokio mutex (the gate) and a generation
//! counter: a caller that needs a fetch notes the counter, takes the gate, and fetches only
//! if nobody completed a fetch meanwhile, so concurrent misses share one request.

use crate::claims::Mapping;
use crate::error::{TokenError, clip};
use crate::http;
use crate::keys::KeySet;
use chrono::{DateTime, TimeDelta, Utc};
use jsonwebtoken::Algorithm;
use serde_json::Value;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use ward_core::config::JwtIssuerCommon;

pub(crate) struct Issuer {
    pub common: JwtIssuerCommon,
    /// `common.algorithms` that ward implements (validated config has only those).
    pub algorithms: Vec<Algorithm>,
    pub mapping: Mapping,
    agent: ureq::Agent,
    cache: Mutex<Cache>,
    gate: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Cache {
    keys: Option<Arc<KeySet>>,
    /// Time of the last successful fetch.
    fetched_at: Option<DateTime<Utc>>,
    /// The JWKS response's Cache-Control max-age.
    max_age: Option<Duration>,
    /// Time of the last fetch attempt, successful or not: fetches caused by tokens (first
    /// use, unknown kid, stale keys) are at least `unknown_kid_refresh_interval` apart.
    attempted_at: Option<DateTime<Utc>>,
    /// First failure since the last success.
    failing_since: Option<DateTime<Utc>>,
    last_error: Option<String>,
    /// Completed fetch attempts (the single-flight generation).
    attempts: u64,
    /// A background refresh is running.
    refreshing: bool,
    /// The JWKS URL found by discovery (forgotten after a failed fetch, so the next attempt
    /// rediscovers).
    discovered_jwks: Option<String>,
}

/// What the verifier should do for a token of this issuer.
pub(crate) enum Plan {
    /// Verify with these keys.
    Use(Arc<KeySet>),
    /// Fetch first (the generation seen), then plan again without fetching.
    Fetch(u64),
    Refuse(TokenError),
}

fn delta(d: Duration) -> TimeDelta {
    TimeDelta::from_std(d).unwrap_or(TimeDelta::MAX)
}

/// Whether `since` lies at least `d` before `now` (`None`: never happened, so yes).
fn elapsed(now: DateTime<Utc>, since: Option<DateTime<Utc>>, d: Duration) -> bool {
    since.is_none_or(|t| now.signed_duration_since(t) >= delta(d))
}

impl Issuer {
    pub fn new(common: JwtIssuerCommon, mapping: Mapping, agent: ureq::Agent) -> Issuer {
        let algorithms = common
            .algorithms
            .iter()
            .filter_map(|a| crate::keys::algorithm_named(a))
            .collect();
        Issuer {
            common,
            algorithms,
            mapping,
            agent,
            cache: Mutex::new(Cache::default()),
            gate: tokio::sync::Mutex::new(()),
        }
    }

    fn cache(&self) -> MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Decides how to get a key for (`kid`, `alg`) at `now`. With `may_fetch`, answers
    /// `Fetch` when a fetch is needed and allowed; without, it refuses instead. Starts a
    /// background refresh when the keys are due for one (and a tokio runtime is there).
    pub fn plan(
        self: &Arc<Self>,
        kid: Option<&str>,
        alg: Algorithm,
        now: DateTime<Utc>,
        may_fetch: bool,
    ) -> Plan {
        let floor = self.common.unknown_kid_refresh_interval;
        let mut c = self.cache();
        let may_fetch_now = may_fetch && elapsed(now, c.attempted_at, floor);
        let Some(keys) = c.keys.clone() else {
            if may_fetch_now {
                return Plan::Fetch(c.attempts);
            }
            return Plan::Refuse(self.unavailable(&c, now));
        };
        let fetched_at = c.fetched_at.expect("keys come with their fetch time");
        if now.signed_duration_since(fetched_at) > delta(self.common.jwks_max_stale) {
            if may_fetch_now {
                return Plan::Fetch(c.attempts);
            }
            return Plan::Refuse(self.unavailable(&c, now));
        }
        if !keys.knows(kid, alg) {
            if may_fetch_now {
                return Plan::Fetch(c.attempts);
            }
            return Plan::Refuse(TokenError::UnknownKeyId {
                kid: clip(kid.unwrap_or("(none)")),
                issuer: self.common.issuer.clone(),
            });
        }
        let refresh_after = match c.max_age {
            Some(max_age) => self.common.jwks_refresh.min(max_age.max(floor)),
            None => self.common.jwks_refresh,
        };
        if !c.refreshing
            && elapsed(now, Some(fetched_at), refresh_after)
            && elapsed(now, c.attempted_at, floor)
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            c.refreshing = true;
            let generation = c.attempts;
            let this = Arc::clone(self);
            runtime.spawn(async move {
                this.fetch(generation, now).await;
                this.cache().refreshing = false;
            });
        }
        Plan::Use(keys)
    }

    /// The refusal when there are no keys to use (never fetched, or stale).
    fn unavailable(&self, c: &Cache, now: DateTime<Utc>) -> TokenError {
        let issuer = self.common.issuer.clone();
        let error = c.last_error.as_deref().unwrap_or("no fetch attempted yet");
        let why = match c.fetched_at {
            None => format!(
                "could not be fetched: {error}; its tokens are refused until the IdP answers \
                 (retried at most every {})",
                humantime::format_duration(self.common.unknown_kid_refresh_interval)
            ),
            Some(fetched_at) => format!(
                "are stale: the IdP has been unreachable since {} (keys last fetched at {}, \
                 more than jwks_max_stale = {} before {}): {error}",
                c.failing_since.unwrap_or(fetched_at).to_rfc3339(),
                fetched_at.to_rfc3339(),
                humantime::format_duration(self.common.jwks_max_stale),
                now.to_rfc3339(),
            ),
        };
        TokenError::KeysUnavailable { issuer, why }
    }

    /// Fetches the keys unless a fetch completed since generation `seen` (single flight).
    pub async fn fetch(self: &Arc<Self>, seen: u64, now: DateTime<Utc>) {
        let _gate = self.gate.lock().await;
        let discovered = {
            let c = self.cache();
            if c.attempts != seen {
                return;
            }
            c.discovered_jwks.clone()
        };
        let this = Arc::clone(self);
        let result = tokio::task::spawn_blocking(move || this.fetch_blocking(discovered))
            .await
            .unwrap_or_else(|e| Err(format!("the fetch task failed: {e}")));
        let mut c = self.cache();
        c.attempts += 1;
        c.attempted_at = Some(now);
        match result {
            Ok((keys, max_age, jwks_url)) => {
                tracing::info!(
                    issuer = %self.common.issuer,
                    keys = keys.keys.len(),
                    "fetched the issuer's signing keys"
                );
                c.keys = Some(Arc::new(keys));
                c.fetched_at = Some(now);
                c.max_age = max_age;
                c.failing_since = None;
                c.last_error = None;
                c.discovered_jwks = jwks_url;
            }
            Err(error) => {
                tracing::warn!(
                    issuer = %self.common.issuer,
                    %error,
                    cached = c.keys.is_some(),
                    "cannot fetch the issuer's signing keys"
                );
                c.failing_since.get_or_insert(now);
                c.last_error = Some(error);
                c.discovered_jwks = None;
            }
        }
    }

    /// Discovery (unless `jwks_url` is configured or already discovered), then the JWKS.
    /// Returns the keys, their max-age and the discovered JWKS URL to remember.
    #[allow(clippy::type_complexity)]
    fn fetch_blocking(
        &self,
        discovered: Option<String>,
    ) -> Result<(KeySet, Option<Duration>, Option<String>), String> {
        let jwks_url = match (&self.common.jwks_url, discovered) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => url,
            (None, None) => self.discover()?,
        };
        let fetched = http::get(&self.agent, &jwks_url)?;
        let keys = KeySet::parse(&fetched.body).map_err(|e| format!("{jwks_url}: {e}"))?;
        let remember = self.common.jwks_url.is_none().then_some(jwks_url);
        Ok((keys, fetched.max_age, remember))
    }

    /// Reads the discovery document and returns its `jwks_uri`. The document must describe
    /// this very issuer (OpenID Connect Discovery §4.3), or a wrong URL could hand ward
    /// another issuer's keys.
    fn discover(&self) -> Result<String, String> {
        let url = self
            .common
            .discovery_url
            .as_deref()
            .ok_or("neither jwks_url nor a discovery URL is configured")?;
        let doc = http::get(&self.agent, url)?;
        let doc: Value = serde_json::from_str(&doc.body)
            .map_err(|e| format!("{url}: the discovery document is not JSON: {e}"))?;
        let issuer = doc.get("issuer").and_then(Value::as_str);
        if issuer != Some(self.common.issuer.as_str()) {
            return Err(format!(
                "{url} describes issuer {:?}, not {:?}; set `issuer` to exactly what the IdP \
                 puts in `iss`",
                issuer.unwrap_or("(none)"),
                self.common.issuer
            ));
        }
        match doc.get("jwks_uri").and_then(Value::as_str) {
            Some(jwks) if jwks.starts_with("https://") || jwks.starts_with("http://") => {
                Ok(jwks.to_string())
            }
            Some(jwks) => Err(format!("{url}: jwks_uri {jwks:?} is not an http(s) URL")),
            None => Err(format!("{url}: the discovery document has no jwks_uri")),
        }
    }
}

impl Issuer {
    /// Fetches the keys now, whatever the cache holds; the error says why they could not be
    /// had.
    pub async fn prefetch(self: &Arc<Self>, now: DateTime<Utc>) -> Result<(), String> {
        let generation = self.cache().attempts;
        self.fetch(generation, now).await;
        let c = self.cache();
        match (&c.keys, &c.last_error) {
            (Some(_), None) => Ok(()),
            (_, Some(e)) => Err(e.clone()),
            (None, None) => Err("no keys".into()),
        }
    }
}
