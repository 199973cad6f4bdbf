//! The HTTP API: `/metrics` (Prometheus text), `/v1/status`, `/v1/decisions`, `/healthz`.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use serde_json::json;

use super::status::{Registry, render_metrics};

/// The API's routes over `registry`.
pub fn router(registry: Registry) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/v1/status", get(status))
        .route("/v1/decisions", get(decisions))
        .route("/healthz", get(healthz))
        .with_state(registry)
}

async fn metrics(State(registry): State<Registry>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render_metrics(&registry.snapshot()),
    )
}

async fn status(State(registry): State<Registry>) -> impl IntoResponse {
    Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pipelines": registry.snapshot(),
    }))
}

async fn decisions(
    State(registry): State<Registry>,
    Query(query): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let limit = query
        .get("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(50);
    let pipeline = query.get("pipeline").map(String::as_str);
    Json(json!({ "decisions": registry.decisions(pipeline, limit) }))
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
