//! `GET /api/v1/identities?unused_days=30`: every identity ward knows, for review.
//!
//! Three sources are merged into one row per identity name:
//! - the service tokens of `identity.tokens` (from the gateway's authenticator): groups,
//!   expiry or `long_lived`, owner and owner group, targets;
//! - the ward tokens in force (`ward login`, `ward token mint`), from the store;
//! - identities seen in sessions, from the store: how many sessions, when the latest started,
//!   its groups and the credential behind it (IdP and CI identities appear only here).
//!
//! Each row carries flags for what deserves a look: `long_lived` (a service token that never
//! expires), `unused` (no session in `unused_days` days, or never), `expired` (every
//! configured token of the identity has expired and no ward token is in force),
//! `owner_left_group` (a token's owner was last seen without its `owner_group`) and
//! `owner_unknown` (a token names an owner ward has never seen). ward learns an owner's
//! groups only when the owner opens a session or logs in (`ward login`); there is no
//! directory sync, so a person who left a group but has not logged in since still shows
//! the groups of their last login.

use crate::{ApiError, ApiState};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use ward_core::time::{format_micros, now_micros};
use ward_store::{IdentityUsage, WardTokenFilter, WardTokenRecord};

/// `unused_days` when the query does not say.
pub const DEFAULT_UNUSED_DAYS: u64 = 30;
/// Largest accepted `unused_days` (100 years).
const MAX_UNUSED_DAYS: u64 = 36_500;
const DAY_US: i64 = 86_400_000_000;

/// `GET /api/v1/identities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityList {
    /// The `unused` flag's window, in days.
    pub unused_days: u64,
    /// By name.
    pub identities: Vec<IdentityView>,
}

/// One identity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdentityView {
    pub name: String,
    /// Where ward knows it from: `token` (a service token of `identity.tokens`),
    /// `ward_token` (a ward token in force), and the credential of its latest session
    /// (`token`, `oidc`, `workload`, `ward_token`; `session` when not recorded).
    pub sources: Vec<String>,
    /// The groups it has now where ward holds its credential (service tokens, else ward
    /// tokens in force), otherwise those its latest session had.
    pub groups: Vec<String>,
    /// Recorded sessions.
    pub sessions: u64,
    /// When its latest session started; `None`: never.
    pub last_used: Option<String>,
    pub last_used_us: Option<i64>,
    /// The credential of its latest session.
    pub last_credential: Option<String>,
    /// When the last of its credentials ward holds expires; `None` when long-lived, or when
    /// ward holds none (IdP and CI identities: their IdP decides).
    pub expires: Option<String>,
    pub expires_us: Option<i64>,
    /// `long_lived`, `unused`, `expired`, `owner_left_group`, `owner_unknown`, sorted.
    pub flags: Vec<String>,
    /// Its configured service tokens (several during a rotation).
    pub service_tokens: Vec<ServiceTokenView>,
    /// Its ward tokens in force.
    pub ward_tokens: Vec<WardTokenView>,
}

/// A configured service token (never its hash).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceTokenView {
    pub expires: Option<String>,
    pub expires_us: Option<i64>,
    pub long_lived: bool,
    pub expired: bool,
    pub owner: Option<String>,
    pub owner_group: Option<String>,
    /// The owner's groups as last recorded (its latest session or `ward login`); `None`
    /// when ward has never seen the owner.
    pub owner_groups: Option<Vec<String>>,
    /// When those groups were recorded, and how (`session` or `login`).
    pub owner_seen_at: Option<String>,
    pub owner_seen_at_us: Option<i64>,
    pub owner_seen_via: Option<String>,
    /// `None`: every target.
    pub targets: Option<Vec<String>>,
    pub groups: Vec<String>,
}

/// A ward token in force.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WardTokenView {
    pub token_id: String,
    /// `login` or `mint`.
    pub kind: String,
    pub issued_by: String,
    pub issued_at: String,
    pub issued_at_us: i64,
    pub expires: String,
    pub expires_us: i64,
    pub targets: Option<Vec<String>>,
}

impl From<&WardTokenRecord> for WardTokenView {
    fn from(r: &WardTokenRecord) -> Self {
        let t = &r.issued;
        WardTokenView {
            token_id: t.token_id.clone(),
            kind: t.kind.clone(),
            issued_by: t.issued_by.clone(),
            issued_at: format_micros(t.issued_at),
            issued_at_us: t.issued_at,
            expires: format_micros(t.expires_at),
            expires_us: t.expires_at,
            targets: t.targets.clone(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ListParams {
    unused_days: Option<String>,
}

pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/identities", get(list))
}

fn unused_days(text: Option<String>) -> Result<u64, ApiError> {
    let Some(text) = crate::given(text) else {
        return Ok(DEFAULT_UNUSED_DAYS);
    };
    match text.trim().parse::<u64>() {
        Ok(n) if (1..=MAX_UNUSED_DAYS).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(format!(
            "unused_days: {text:?} is not a number of days from 1 to {MAX_UNUSED_DAYS}"
        ))),
    }
}

/// An owner's groups as last recorded: `(groups, at, via)`.
type OwnerSeen = (Vec<String>, i64, &'static str);

async fn owner_seen(
    state: &ApiState,
    owner: &str,
    usage: &BTreeMap<String, IdentityUsage>,
) -> Result<Option<OwnerSeen>, ApiError> {
    let from_session = usage.get(owner).and_then(|u| {
        u.last_groups
            .clone()
            .map(|g| (g, u.last_started_at, "session"))
    });
    // Newest first; a login token records the groups the IdP gave at login, even once it
    // has expired or was revoked.
    let logins = state
        .store
        .ward_tokens(WardTokenFilter {
            identity: Some(owner.to_string()),
            include_inactive: true,
            limit: 100,
            ..WardTokenFilter::default()
        })
        .await?;
    let from_login = logins
        .iter()
        .find(|t| t.issued.kind == "login")
        .map(|t| (t.issued.groups.clone(), t.issued.issued_at, "login"));
    Ok(match (from_session, from_login) {
        (Some(s), Some(l)) => Some(if l.1 > s.1 { l } else { s }),
        (s, l) => s.or(l),
    })
}

#[derive(Default)]
struct Row {
    service: Vec<ServiceTokenView>,
    ward: Vec<WardTokenRecord>,
    usage: Option<IdentityUsage>,
}

/// Builds the listing at `now` (Unix micros).
pub(crate) async fn identities(
    state: &ApiState,
    unused_days: u64,
    now: i64,
) -> Result<IdentityList, ApiError> {
    let usage: BTreeMap<String, IdentityUsage> = state
        .store
        .identity_usage()
        .await?
        .into_iter()
        .map(|u| (u.identity.clone(), u))
        .collect();
    let in_force = state
        .store
        .ward_tokens(WardTokenFilter {
            now,
            ..WardTokenFilter::default()
        })
        .await?;
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let entries = state
        .auth
        .as_ref()
        .map(|a| a.service_tokens().entries().to_vec())
        .unwrap_or_default();
    let mut owners: BTreeMap<String, Option<OwnerSeen>> = BTreeMap::new();
    for e in &entries {
        if let Some(owner) = &e.owner
            && !owners.contains_key(owner)
        {
            let seen = owner_seen(state, owner, &usage).await?;
            owners.insert(owner.clone(), seen);
        }
    }
    for e in entries {
        let seen = e
            .owner
            .as_ref()
            .and_then(|o| owners.get(o).cloned().flatten());
        let expires_us = e.expires.map(|t| t.timestamp_micros());
        rows.entry(e.identity.to_string())
            .or_default()
            .service
            .push(ServiceTokenView {
                expires: expires_us.map(format_micros),
                expires_us,
                long_lived: e.long_lived,
                expired: expires_us.is_some_and(|t| t <= now),
                owner: e.owner.clone(),
                owner_group: e.owner_group.clone(),
                owner_groups: seen.as_ref().map(|s| s.0.clone()),
                owner_seen_at: seen.as_ref().map(|s| format_micros(s.1)),
                owner_seen_at_us: seen.as_ref().map(|s| s.1),
                owner_seen_via: seen.as_ref().map(|s| s.2.to_string()),
                targets: e.targets.clone(),
                groups: e.groups.clone(),
            });
    }
    for t in in_force {
        rows.entry(t.issued.identity.clone())
            .or_default()
            .ward
            .push(t);
    }
    for (name, u) in usage {
        rows.entry(name).or_default().usage = Some(u);
    }
    let unused_before = now.saturating_sub(DAY_US.saturating_mul(unused_days as i64));
    let identities = rows
        .into_iter()
        .map(|(name, row)| view(name, row, unused_before))
        .collect();
    Ok(IdentityList {
        unused_days,
        identities,
    })
}

fn union<'a>(lists: impl Iterator<Item = &'a Vec<String>>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for g in lists.flatten() {
        if !out.contains(g) {
            out.push(g.clone());
        }
    }
    out
}

fn view(name: String, row: Row, unused_before: i64) -> IdentityView {
    let mut sources = BTreeSet::new();
    if !row.service.is_empty() {
        sources.insert("token".to_string());
    }
    if !row.ward.is_empty() {
        sources.insert("ward_token".to_string());
    }
    if let Some(u) = &row.usage {
        sources.insert(
            u.last_credential
                .clone()
                .unwrap_or_else(|| "session".into()),
        );
    }
    let groups = if !row.service.is_empty() {
        union(row.service.iter().map(|s| &s.groups))
    } else if !row.ward.is_empty() {
        union(row.ward.iter().map(|t| &t.issued.groups))
    } else {
        row.usage
            .as_ref()
            .and_then(|u| u.last_groups.clone())
            .unwrap_or_default()
    };
    let long_lived = row.service.iter().any(|s| s.long_lived);
    let expires_us = if long_lived {
        None
    } else {
        row.service
            .iter()
            .filter_map(|s| s.expires_us)
            .chain(row.ward.iter().map(|t| t.issued.expires_at))
            .max()
    };
    let last_used_us = row.usage.as_ref().map(|u| u.last_started_at);
    let mut flags = BTreeSet::new();
    if long_lived {
        flags.insert("long_lived");
    }
    if last_used_us.is_none_or(|t| t < unused_before) {
        flags.insert("unused");
    }
    if !row.service.is_empty() && row.service.iter().all(|s| s.expired) && row.ward.is_empty() {
        flags.insert("expired");
    }
    for s in &row.service {
        if s.owner.is_some() && s.owner_groups.is_none() {
            flags.insert("owner_unknown");
        }
        if let (Some(group), Some(seen)) = (&s.owner_group, &s.owner_groups)
            && !seen.contains(group)
        {
            flags.insert("owner_left_group");
        }
    }
    IdentityView {
        name,
        sources: sources.into_iter().collect(),
        groups,
        sessions: row.usage.as_ref().map_or(0, |u| u.sessions),
        last_used: last_used_us.map(format_micros),
        last_used_us,
        last_credential: row.usage.as_ref().and_then(|u| u.last_credential.clone()),
        expires: expires_us.map(format_micros),
        expires_us,
        flags: flags.into_iter().map(str::to_string).collect(),
        service_tokens: row.service,
        ward_tokens: row.ward.iter().map(Into::into).collect(),
    }
}

async fn list(
    State(state): State<ApiState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Json<IdentityList>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; accepted parameters: unused_days",
            e.body_text()
        ))
    })?;
    let days = unused_days(params.unused_days)?;
    Ok(Json(identities(&state, days, now_micros()).await?))
}

#[cfg(test)]
mod tests;
