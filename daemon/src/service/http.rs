//! The HTTP API: `/metrics` (Prometheus text: the pipelines' families, `infadapt_build_info`
//! and the process metrics; see docs/metrics.md), `/v1/status`, `/v1/decisions`, `/healthz`.
//!
//! The `/v1/` routes answer JSON. A request they cannot answer as asked gets an error status
//! with `{"error": "…"}` and the details as fields: an unknown, repeated or malformed query
//! parameter, or a `limit` outside 1..=[`MAX_LIMIT`], is 400 (`parameter`, and `accepted`
//! or `known`); a pipeline the service does not run is 404 (`pipeline`, `known`); a path
//! with no route is 404 (`routes`).

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::get;
use serde_json::{Value, json};

use super::process::ProcessMetrics;
use super::status::render_metrics;
use super::status::{PipelineStatus, Registry};

/// Decisions `/v1/decisions` returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest `limit` `/v1/decisions` accepts.
pub const MAX_LIMIT: usize = 10_000;

/// Every route, for the answer to a path with none.
const ROUTES: [&str; 4] = ["/metrics", "/v1/status", "/v1/decisions", "/healthz"];

/// The API's routes over `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/decisions", get(decisions))
        .route("/healthz", get(healthz))
        .fallback(no_route)
        .with_state(registry)
}

/// A request the API refuses: its status and a JSON body with `error` and details.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: Value,
}

impl ApiError {
    fn new(status: StatusCode, message: String, details: Value) -> ApiError {
        let mut body = json!({ "error": message });
        if let (Some(body), Value::Object(details)) = (body.as_object_mut(), details) {
            body.extend(details);
        }
        ApiError { status, body }
    }

    fn bad_parameter(parameter: &str, message: String, details: Value) -> ApiError {
        let mut error = ApiError::new(StatusCode::BAD_REQUEST, message, details);
        if let Some(body) = error.body.as_object_mut() {
            body.insert("parameter".to_owned(), json!(parameter));
        }
        error
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

/// The query parameters of a request, each at most once and each one of `accepted`.
fn parameters(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    accepted: &[&str],
) -> Result<BTreeMap<String, String>, ApiError> {
    let Query(pairs) = query.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed query string: {}", rejection.body_text()),
            json!({}),
        )
    })?;
    let mut parameters = BTreeMap::new();
    for (name, value) in pairs {
        if !accepted.contains(&name.as_str()) {
            let message = if accepted.is_empty() {
                format!("unknown query parameter `{name}`: this route takes none")
            } else {
                format!(
                    "unknown query parameter `{name}`: this route takes {}",
                    accepted
                        .iter()
                        .map(|a| format!("`{a}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            return Err(ApiError::bad_parameter(
                &name,
                message,
                json!({ "known": accepted }),
            ));
        }
        if parameters.contains_key(&name) {
            return Err(ApiError::bad_parameter(
                &name,
                format!("query parameter `{name}` given more than once"),
                json!({}),
            ));
        }
        parameters.insert(name, value);
    }
    Ok(parameters)
}

/// The `limit` parameter: an integer in 1..=[`MAX_LIMIT`], [`DEFAULT_LIMIT`] when absent.
fn limit(value: Option<&str>) -> Result<usize, ApiError> {
    let Some(value) = value else {
        return Ok(DEFAULT_LIMIT);
    };
    match value.parse::<usize>() {
        Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_parameter(
            "limit",
            format!("`limit` must be an integer from 1 to {MAX_LIMIT}, got `{value}`"),
            json!({ "accepted": { "min": 1, "max": MAX_LIMIT } }),
        )),
    }
}

/// The `pipeline` parameter, checked against the pipelines in `statuses`.
fn pipeline<'a>(
    value: Option<&'a str>,
    statuses: &[PipelineStatus],
) -> Result<Option<&'a str>, ApiError> {
    let Some(name) = value else {
        return Ok(None);
    };
    if statuses.iter().any(|s| s.name == name) {
        return Ok(Some(name));
    }
    let known: Vec<&str> = statuses.iter().map(|s| s.name.as_str()).collect();
    let listed = if known.is_empty() {
        "none are running".to_owned()
    } else {
        format!(
            "known: {}",
            known
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        format!("unknown pipeline `{name}`; {listed}"),
        json!({ "pipeline": name, "known": known }),
    ))
}

/// `/v1/status` for `query`: every pipeline, or the one `pipeline` names.
pub fn status_body(
    registry: &Registry,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let statuses = registry.snapshot();
    let only = pipeline(query.get("pipeline").map(String::as_str), &statuses)?;
    let chosen: Vec<&PipelineStatus> = statuses
        .iter()
        .filter(|s| only.is_none_or(|p| p == s.name))
        .collect();
    Ok(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pipelines": chosen,
    }))
}

/// `/v1/decisions` for `query`: the newest `limit` decisions, of one pipeline when
/// `pipeline` names one.
pub fn decisions_body(
    registry: &Registry,
    query: &BTreeMap<String, String>,
) -> Result<Value, ApiError> {
    let limit = limit(query.get("limit").map(String::as_str))?;
    let statuses = registry.snapshot();
    let only = pipeline(query.get("pipeline").map(String::as_str), &statuses)?;
    Ok(json!({ "decisions": registry.decisions(only, limit) }))
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        // The pipelines' families, then the daemon process's own (read from /proc/self now).
        render_metrics(&registry.snapshot()) + &ProcessMetrics::read().render(),
    )
}

async fn status(
    State(registry): State<Registry>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = parameters(query, &["pipeline"])?;
    status_body(&registry, &query).map(Json)
}

async fn decisions(
    State(registry): State<Registry>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let query = parameters(query, &["pipeline", "limit"])?;
    decisions_body(&registry, &query).map(Json)
}

async fn healthz(State(registry): State<Registry>) -> impl IntoResponse {
    let statuses = registry.snapshot();
    let failing: Vec<&str> = statuses
        .iter()
        .filter(|s| s.degraded || s.state == "failed")
        .map(|s| s.name.as_str())
        .collect();
    let body = if failing.is_empty() {
        "ok\n".to_owned()
    } else {
        format!("ok (degraded: {})\n", failing.join(", "))
    };
    (StatusCode::OK, body)
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route `{}`; routes: {}", uri.path(), ROUTES.join(", ")),
        json!({ "routes": ROUTES }),
    )
}

#[cfg(test)]
mod tests;
