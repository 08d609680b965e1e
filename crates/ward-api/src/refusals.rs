//! `GET /api/v1/auth/refusals?code=&user=&since=&limit=`: refused logins (wrong, expired or
//! forged credentials, locked identities), newest first, read from the gateway chain.

use crate::model::AuthRefusalList;
use crate::{ApiError, ApiState, given, parse_time_bound};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use ward_store::{AuthRefusedFilter, MAX_LIST_LIMIT};

/// The route, to be nested under `/api/v1` (behind the admin token).
pub(crate) fn routes() -> Router<ApiState> {
    Router::new().route("/auth/refusals", get(list_refusals))
}

/// Query parameters; unknown ones are refused so a typo does not list everything.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefusalParams {
    code: Option<String>,
    user: Option<String>,
    since: Option<String>,
    limit: Option<String>,
}

async fn list_refusals(
    State(state): State<ApiState>,
    params: Result<Query<RefusalParams>, QueryRejection>,
) -> Result<Json<AuthRefusalList>, ApiError> {
    let Query(params) = params.map_err(|e| {
        ApiError::bad_request(format!(
            "{}; accepted parameters: code, user, since, limit",
            e.body_text()
        ))
    })?;
    let since = given(params.since)
        .map(|v| {
            parse_time_bound(&v, ward_core::time::now_micros())
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))
        })
        .transpose()?;
    let limit = match given(params.limit) {
        None => 0,
        Some(text) => match text.trim().parse::<usize>() {
            Ok(n) if (1..=MAX_LIST_LIMIT).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "limit: {text:?} is not a number from 1 to {MAX_LIST_LIMIT}"
                )));
            }
        },
    };
    let refusals = state
        .store
        .auth_refusals(AuthRefusedFilter {
            code: given(params.code),
            user: given(params.user),
            since,
            limit,
        })
        .await?;
    Ok(Json(AuthRefusalList {
        refusals: refusals.into_iter().map(Into::into).collect(),
    }))
}
