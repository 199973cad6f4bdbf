//! The HTTP API: `/metrics` (Prometheus text: the pipelines' families, `infadapt_build_info`
//! and the process metrics; see docs/metrics.md), `/v1/status`, `/v1/decisions`, `/healthz` (503 naming the failed or degraded pipelines), `/livez`,
//! and the write endpoints `POST /v1/pipelines/{name}/pause` and `…/resume`.
//!
//! The `/v1/` routes answer JSON. A request they cannot answer as asked gets an error status
//! with `{"error": "…"}` and the details as fields: an unknown, repeated or malformed query
//! parameter, or a `limit` outside 1..=[`MAX_LIMIT`], is 400 (`parameter`, and `accepted`
//! or `known`); a pipeline the service does not run is 404 (`pipeline`, `known`); a path
//! with no route is 404 (`routes`); a route asked with another method is 405 (`allow`).
//!
//! Hostile clients: the API is served by [`crate::http_server`] (connection limit, header
//! and idle timeouts, head and URL size limits). A request body is at most
//! [`MAX_BODY_BYTES`] (413 beyond); the write endpoints take no fields, so their body is
//! empty or the JSON object `{}`, and anything else (malformed JSON, invalid UTF-8) is 400.
//!
//! The GET routes are open. The write endpoints need `Authorization: Bearer TOKEN` with the
//! token of `[daemon.http] token_file` ([`WriteAccess`]): without it or with another one,
//! 401 (and a `WWW-Authenticate: Bearer` header); with no `token_file` configured, 403 saying
//! how to enable them. Access is checked before anything else, so a refused caller learns
//! nothing about the pipelines.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRef, Path, Query, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};
use tracing::{error, info};

pub mod access;

use crate::http_server::{ConnectionStats, render_connections};
use crate::service::process::ProcessMetrics;
use crate::service::state;
use crate::service::status::render_metrics;
use crate::service::status::{PipelineStatus, Registry};
use access::{Denied, WriteAccess};

/// Decisions `/v1/decisions` returns when no `limit` is given.
pub const DEFAULT_LIMIT: usize = 50;

/// The largest `limit` `/v1/decisions` accepts.
pub const MAX_LIMIT: usize = 10_000;

/// The largest request body the API reads (413 beyond).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// Every route, for the answer to a path with none.
const ROUTES: [&str; 7] = [
    "/metrics",
    "/v1/status",
    "/v1/decisions",
    "/healthz",
    "/livez",
    "POST /v1/pipelines/{name}/pause",
    "POST /v1/pipelines/{name}/resume",
];

/// What the handlers share: the pipelines' status, the write endpoints' access control and
/// the API's connection counts (for `/metrics`).
#[derive(Debug, Clone)]
pub struct ApiState {
    pub registry: Registry,
    pub access: WriteAccess,
    pub connections: Arc<ConnectionStats>,
}

impl FromRef<ApiState> for Registry {
    fn from_ref(state: &ApiState) -> Registry {
        state.registry.clone()
    }
}

/// The API's routes over `registry`, the write endpoints guarded by `access`; `/metrics`
/// reports the connections counted in `connections`.
pub fn router(
    registry: Registry,
    access: WriteAccess,
    connections: Arc<ConnectionStats>,
) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/decisions", get(decisions))
        .route("/healthz", get(healthz))
        .route("/livez", get(livez))
        .route(
            "/v1/pipelines/{name}/pause",
            post(pause).fallback(post_only),
        )
        .route(
            "/v1/pipelines/{name}/resume",
            post(resume).fallback(post_only),
        )
        .fallback(no_route)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(ApiState {
            registry,
            access,
            connections,
        })
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
        let unauthorized = self.status == StatusCode::UNAUTHORIZED;
        let mut response = (self.status, Json(self.body)).into_response();
        if unauthorized {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
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

async fn metrics(State(api): State<ApiState>) -> impl IntoResponse {
    let statuses = api.registry.snapshot();
    let routers: Vec<(String, crate::http_server::ConnectionCounts)> = statuses
        .iter()
        .filter_map(|s| s.router.map(|r| (s.name.clone(), r.connections)))
        .collect();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        // The pipelines' families, the HTTP connections, then the daemon process's own
        // (read from /proc/self now).
        render_metrics(&statuses)
            + &render_connections(Some(api.connections.counts()), &routers)
            + &ProcessMetrics::read().render(),
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
    // Health of the service, not just of the process: a failed or degraded pipeline makes
    // it unhealthy (503, naming them), so a probe or a load balancer sees it. `/livez`
    // answers whether the process serves at all.
    if failing.is_empty() {
        (StatusCode::OK, "ok\n".to_owned())
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("degraded: {}\n", failing.join(", ")),
        )
    }
}

/// Liveness: the process answers (whatever its pipelines do).
async fn livez() -> impl IntoResponse {
    (StatusCode::OK, "ok\n")
}

async fn pause(
    State(api): State<ApiState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&api, &headers, name, query, body, true).await
}

async fn resume(
    State(api): State<ApiState>,
    headers: HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    set_paused(&api, &headers, name, query, body, false).await
}

/// The body of a write request: empty or the JSON object `{}` (the endpoints take no
/// fields); over [`MAX_BODY_BYTES`] is 413, anything else 400.
pub fn no_fields(body: Result<Bytes, BytesRejection>) -> Result<(), ApiError> {
    let body = body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
                json!({ "limit_bytes": MAX_BODY_BYTES }),
            )
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                format!("cannot read the request body: {}", rejection.body_text()),
                json!({}),
            )
        }
    })?;
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(());
    }
    match serde_json::from_slice::<Value>(&body) {
        Ok(Value::Object(fields)) if fields.is_empty() => Ok(()),
        Ok(Value::Object(fields)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "this route takes no fields, got {}",
                fields
                    .keys()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            json!({}),
        )),
        Ok(_) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "the request body must be empty or the JSON object `{}`".to_owned(),
            json!({}),
        )),
        Err(e) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("the request body is not JSON: {e}"),
            json!({}),
        )),
    }
}

/// Whether a write request may go ahead: `Err` with the 401 or 403 answer, logged.
pub fn authorize(access: &WriteAccess, headers: &HeaderMap, route: &str) -> Result<(), ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .map(axum::http::HeaderValue::as_bytes);
    let Err(denied) = access.check(given) else {
        return Ok(());
    };
    access.log_denied(denied, route);
    Err(match denied {
        Denied::Disabled => ApiError::new(
            StatusCode::FORBIDDEN,
            "the write endpoints are off: set `token_file = PATH` in [daemon.http] (a file \
             holding the token, readable by the service user only), restart the daemon, and \
             send `Authorization: Bearer TOKEN`"
                .to_owned(),
            json!({ "enable": "[daemon.http] token_file = PATH" }),
        ),
        Denied::Missing => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this route needs `Authorization: Bearer TOKEN` with the token of \
             [daemon.http] token_file"
                .to_owned(),
            json!({}),
        ),
        Denied::Wrong => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "the bearer token is not the one of [daemon.http] token_file".to_owned(),
            json!({}),
        ),
    })
}

/// Pauses (`paused`) or resumes the pipeline the path names, keeps the paused set in the
/// state directory, and answers the pipeline's new state.
async fn set_paused(
    api: &ApiState,
    headers: &HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let verb = if paused { "pause" } else { "resume" };
    authorize(&api.access, headers, verb)?;
    no_fields(body)?;
    let Path(name) = name.map_err(|rejection| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!("malformed pipeline name: {}", rejection.body_text()),
            json!({}),
        )
    })?;
    parameters(query, &[])?;
    let statuses = api.registry.snapshot();
    pipeline(Some(&name), &statuses)?;
    // One change of the paused set at a time, so the file keeps the last one.
    let _writing = api.access.writing.lock().await;
    let Some(was) = api.registry.set_paused(&name, paused) else {
        // Removed by a reload since the check above.
        return Err(pipeline(Some(&name), &api.registry.snapshot())
            .err()
            .unwrap_or_else(|| {
                ApiError::new(
                    StatusCode::NOT_FOUND,
                    format!("unknown pipeline `{name}`"),
                    json!({ "pipeline": name }),
                )
            }));
    };
    if let Some(dir) = api.access.state_dir().map(std::path::Path::to_path_buf) {
        let registry = api.registry.clone();
        let saved = tokio::task::spawn_blocking(move || {
            // Pauses of pipelines not running now (a reload removed them) are kept.
            let mut set = state::load_paused(&dir).unwrap_or_default();
            set.retain(|name| !registry.contains(name));
            set.extend(registry.paused());
            state::save_paused(&dir, &set)
        })
        .await;
        let problem = match saved {
            Ok(Ok(_)) => None,
            Ok(Err(e)) => Some(e.to_string()),
            Err(_) => Some("saving the paused pipelines panicked".to_owned()),
        };
        if let Some(problem) = problem {
            api.registry.set_paused(&name, was);
            error!(pipeline = %name, error = %problem, "cannot keep the {verb}; nothing changed");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot keep the {verb} across restarts, so nothing changed: {problem}"),
                json!({ "pipeline": name }),
            ));
        }
    }
    if was != paused {
        info!(
            pipeline = %name,
            "{} over the API",
            if paused { "paused: decisions are no longer applied" } else { "resumed: decisions are applied again" }
        );
    }
    Ok(Json(json!({
        "pipeline": name,
        "paused": paused,
        "changed": was != paused,
    })))
}

async fn post_only(method: Method, uri: Uri) -> Response {
    let mut response = ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("`{}` takes POST, not {method}", uri.path()),
        json!({ "allow": ["POST"] }),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::ALLOW, axum::http::HeaderValue::from_static("POST"));
    response
}

async fn no_route(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!("no route `{}`; routes: {}", uri.path(), ROUTES.join(", ")),
        json!({ "routes": ROUTES }),
    )
}

#[cfg(test)]
pub(crate) mod tests;
